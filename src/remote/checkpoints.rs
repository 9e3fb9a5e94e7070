//! Checkpoints on the shared store: pushed from the local store after a stage succeeds,
//! pulled into it when a stage's fingerprint has no local record. This machine notes what
//! the store was seen to hold, so a cached stage costs no request for a while.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;

use super::{Remote, RemoteError, join};
use crate::fingerprint::hex;
use crate::store::{self, OutputKind, StageRecord, Store};

/// A record is a few hundred bytes per output; anything this big is not one.
const MAX_RECORD: u64 = 64 * 1024 * 1024;

/// Transfers at once: enough to fill a link with small objects, few enough for a CI runner.
const PARALLEL: usize = 16;

fn object_key(digest: &str) -> String {
    let prefix = digest.get(..2).unwrap_or("00");
    format!("checkpoints/objects/{prefix}/{digest}")
}

fn record_key(fingerprint: &str) -> String {
    format!("checkpoints/records/{fingerprint}.json")
}

fn manifest_key(fingerprint: &str) -> String {
    format!("checkpoints/manifests/{fingerprint}.json")
}

/// The objects a record names, each once. Owned: the transfers run as futures that must
/// not borrow from the record.
fn digests(record: &StageRecord) -> Vec<String> {
    let unique: BTreeSet<&str> = record
        .outputs
        .iter()
        .filter_map(|e| match &e.kind {
            OutputKind::File { digest, .. } => Some(digest.as_str()),
            _ => None,
        })
        .collect();
    unique.into_iter().map(str::to_owned).collect()
}

/// Makes the shared store hold `record` as the local store has it: each object uploaded only
/// if absent, then the manifest, then the record, so no reader ever sees a record without its
/// objects. Returns whether anything was written (`false`: the record was there already).
/// With `heal`, objects are checked even when the record is there: a pull found one damaged.
pub async fn push(
    remote: &Remote,
    store: &Store,
    record: &StageRecord,
    heal: bool,
) -> Result<bool, RemoteError> {
    let fingerprint = &record.fingerprint;
    let note = note_path(store, remote, fingerprint);
    if !heal && fresh(&note) {
        return Ok(false);
    }
    let record_at = remote.own(&record_key(fingerprint));
    let has_record = remote.head(&record_at).await?.is_some();
    if has_record && !heal {
        note_shared(&note);
        return Ok(false);
    }
    futures_util::stream::iter(digests(record))
        .map(|digest: String| async move {
            let key = remote.own(&object_key(&digest));
            // Healing uploads every object: one that is there may be the damaged one.
            if !heal && remote.head(&key).await?.is_some() {
                return Ok(());
            }
            // A pull request's run need not upload what trusted runs already shared.
            if !heal
                && remote.writes_apart()
                && remote
                    .head(&remote.shared(&object_key(&digest)))
                    .await?
                    .is_some()
            {
                return Ok(());
            }
            remote.upload(&store.object_path(&digest), &key).await
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await?;
    // Healing replaces the record too: the stage ran again, and its record names what it made
    // now (a stage need not make the same bytes twice), all of which was just uploaded.
    crate::crash::at("objects-shared", &record.stage);
    let read = |path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|source| RemoteError::Local { path, source })
    };
    if let Ok(manifest) = read(store.manifest_path(fingerprint)) {
        remote
            .put(
                &remote.own(&manifest_key(fingerprint)),
                Bytes::from(manifest),
            )
            .await?;
    }
    let bytes = read(store.record_path(fingerprint))?;
    remote.put(&record_at, Bytes::from(bytes)).await?;
    note_shared(&note);
    Ok(true)
}

/// Brings the record for `fingerprint` into the local store if the shared store has one: a
/// pull request's run looks under its own prefix first, every run under the shared one. Each
/// object is checked against its digest before it is kept; the record itself is verified by
/// the local store when it is looked up. Returns whether a record was brought in.
pub async fn pull(remote: &Remote, store: &Store, fingerprint: &str) -> Result<bool, RemoteError> {
    let mut places = vec![remote.shared("")];
    if remote.writes_apart() {
        places.insert(0, remote.own(""));
    }
    for place in &places {
        let at = |key: &str| join(place, key);
        let key = at(&record_key(fingerprint));
        let Some(bytes) = remote.get_limited(&key, MAX_RECORD).await? else {
            continue;
        };
        // Verified before a single object is fetched: a forged record costs no download.
        let source = format!("{}/{key}", remote.url());
        let Some(record) = store.verify(&bytes, fingerprint, &source) else {
            continue;
        };
        futures_util::stream::iter(digests(&record))
            .map(|digest: String| {
                let places = &places;
                async move { fetch_object(remote, store, places, &digest).await }
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<()>()
            .await?;
        let manifest = remote
            .get_limited(&at(&manifest_key(fingerprint)), MAX_RECORD)
            .await?;
        store
            .import_record(fingerprint, &bytes, manifest.as_deref())
            .map_err(|e| RemoteError::Damaged {
                what: format!("the checkpoint {fingerprint}"),
                problem: crate::causes::line(&e),
            })?;
        // Where this run writes holds it: its push need not ask. A pull request's run may
        // have read it from the shared place, not its own.
        if !remote.writes_apart() {
            note_shared(&note_path(store, remote, fingerprint));
        }
        return Ok(true);
    }
    Ok(false)
}

/// Downloads one object into the local store unless it is there, checking its digest.
async fn fetch_object(
    remote: &Remote,
    store: &Store,
    places: &[Key],
    digest: &str,
) -> Result<(), RemoteError> {
    if store.object_path(digest).exists() {
        return Ok(());
    }
    let damaged = |e: store::StoreError| RemoteError::Damaged {
        what: format!("object {digest}"),
        problem: crate::causes::line(&e),
    };
    let temp = store.object_temp_path(digest).map_err(damaged)?;
    for place in places {
        let got = remote
            .download(&join(place, &object_key(digest)), &temp)
            .await;
        match got {
            Ok(Some(hash)) if hex(hash.as_bytes()) == digest => {
                return store.import_object(digest, &temp).map_err(damaged);
            }
            Ok(Some(_)) => {
                let _ = std::fs::remove_file(&temp);
                // Bytes that do not hash to their name are wrong whoever wrote them: removed,
                // so the next push of that digest puts the right ones back. Not by a pull
                // request's run, outside its own prefix: it deletes nothing trusted runs read.
                if !remote.writes_apart() || *place == remote.own("") {
                    let _ = remote.delete(&join(place, &object_key(digest))).await;
                }
                return Err(RemoteError::Damaged {
                    what: format!("object {digest}"),
                    problem: "its bytes do not hash to its name".into(),
                });
            }
            Ok(None) => continue,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        }
    }
    let _ = std::fs::remove_file(&temp);
    Err(RemoteError::Damaged {
        what: format!("the record naming object {digest}"),
        problem: "the object is not in the shared store".into(),
    })
}

/// How long this machine trusts its note that the store holds a checkpoint: a cached stage
/// then costs no request, and a store emptied behind murphy's back is filled again within
/// this long.
const NOTE_LIFE: Duration = Duration::from_secs(3600);

/// Where this machine notes that the store (at the place this run writes) holds the
/// checkpoint for `fingerprint`: written only once a push or pull showed it there.
fn note_path(store: &Store, remote: &Remote, fingerprint: &str) -> PathBuf {
    store.shared_notes().join(remote.tag()).join(fingerprint)
}

fn fresh(note: &Path) -> bool {
    std::fs::metadata(note)
        .and_then(|m| m.modified())
        .is_ok_and(|at| at.elapsed().is_ok_and(|age| age < NOTE_LIFE))
}

/// A lost note costs one request; an unwritable one is not worth a warning.
fn note_shared(note: &Path) {
    if let Some(dir) = note.parent() {
        let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(note, b""));
    }
}
