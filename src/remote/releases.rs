//! Release confirmations on the shared store: which bytes of a file a version published to a
//! target, and which run did it, so no machine publishes that file for that version again.
//!
//! ```text
//! <url>/releases/<pipeline>/<target id>/<version>/<file>.json   one conditional create each
//! ```
//!
//! Each path part is encoded (see [`segment`]) so that a target id holding a URL or a command,
//! or a file path, is one safe object name.

use bytes::Bytes;
use jiff::Timestamp;
use object_store::path::Path as Key;
use serde::{Deserialize, Serialize};

use super::{Remote, RemoteError};

/// What starts a confirmation sealed under `MURPHY_STORE_KEY`.
const MAC_PREFIX: &str = "mac:";

/// The format of a confirmation object.
const VERSION: u32 = 1;

/// Larger than any confirmation murphy writes: a bigger object is refused unread.
const MAX_BYTES: usize = 64 * 1024;

/// A path part longer than this is cut and finished with a digest of the whole text, so a
/// long command or URL still makes a key well below the stores' 1024-byte limit.
const MAX_SEGMENT: usize = 120;

/// One publication: a file of a version to a target.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    /// The pipeline's name: two pipelines sharing a store may both have a `./upload {file}`.
    pub pipeline: &'a str,
    /// The target's id (`publish::target_ids`), like ``command `./upload {file}` ``.
    pub target: &'a str,
    pub version: &'a str,
    /// The file as the journal names it (relative to the pipeline's directory).
    pub file: &'a str,
}

impl Slot<'_> {
    /// Where the slot's confirmation lives, below the store's base or a run's own prefix.
    pub fn key(&self) -> String {
        format!(
            "releases/{}/{}/{}/{}.json",
            segment(self.pipeline),
            segment(self.target),
            segment(self.version),
            segment(self.file)
        )
    }
}

impl Slot<'_> {
    /// The lease held by the one machine that publishes the slot's file right now.
    pub fn claim_key(&self) -> String {
        let key = self.key();
        format!("{}.claim", key.strip_suffix(".json").unwrap_or(&key))
    }
}

/// What a confirmation object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub v: u32,
    pub pipeline: String,
    pub target: String,
    pub version: String,
    pub file: String,
    /// The file's digest as its target computes it (SHA-256 of a file, a git tree for pages).
    pub digest: String,
    pub run_id: String,
    pub stage: String,
    pub confirmed_at: Timestamp,
}

impl Confirmation {
    pub fn new(slot: Slot<'_>, digest: &str, run_id: &str, stage: &str) -> Confirmation {
        Confirmation {
            v: VERSION,
            pipeline: slot.pipeline.to_owned(),
            target: slot.target.to_owned(),
            version: slot.version.to_owned(),
            file: slot.file.to_owned(),
            digest: digest.to_owned(),
            run_id: run_id.to_owned(),
            stage: stage.to_owned(),
            confirmed_at: Timestamp::now(),
        }
    }

    fn slot(&self) -> Slot<'_> {
        Slot {
            pipeline: &self.pipeline,
            target: &self.target,
            version: &self.version,
            file: &self.file,
        }
    }
}

/// The confirmation of `slot`, if any: a pull request's run looks under its own prefix first,
/// every run under the shared one.
pub async fn find(remote: &Remote, slot: Slot<'_>) -> Result<Option<Confirmation>, RemoteError> {
    let key = slot.key();
    let mut places = vec![remote.shared(&key)];
    if remote.writes_apart() {
        places.insert(0, remote.own(&key));
    }
    for place in &places {
        if let Some(bytes) = remote.get_limited(place, MAX_BYTES as u64).await? {
            return parse(remote, &bytes, place, slot).map(Some);
        }
    }
    Ok(None)
}

/// Writes `confirmation` if its slot has none yet (a conditional create, so of two machines
/// exactly one wins). Returns `None` if it was written, else the confirmation that was there.
pub async fn confirm(
    remote: &Remote,
    confirmation: &Confirmation,
) -> Result<Option<Confirmation>, RemoteError> {
    let slot = confirmation.slot();
    let key = remote.own(&slot.key());
    let body = serde_json::to_vec_pretty(confirmation).map_err(|e| RemoteError::Damaged {
        what: format!("the release confirmation `{key}`"),
        problem: e.to_string(),
    })?;
    let body = Bytes::from(match remote.mac(&body) {
        Some(mac) => [format!("{MAC_PREFIX}{mac}\n").into_bytes(), body].concat(),
        None => body,
    });
    // A confirmation deleted between the create and the read leaves the slot free: try again.
    for _ in 0..3 {
        if remote.create(&key, body.clone()).await? {
            return Ok(None);
        }
        if let Some(bytes) = remote.get_limited(&key, MAX_BYTES as u64).await? {
            return parse(remote, &bytes, &key, slot).map(Some);
        }
    }
    Err(RemoteError::Damaged {
        what: format!("the release confirmation `{key}`"),
        problem: "it appeared and vanished three times while being written".into(),
    })
}

/// Reads a confirmation from the store, which is not trusted: its size, format, fields and
/// the slot it names are all checked.
fn parse(
    remote: &Remote,
    bytes: &[u8],
    key: &Key,
    slot: Slot<'_>,
) -> Result<Confirmation, RemoteError> {
    let damaged = |problem: String| RemoteError::Damaged {
        what: format!("the release confirmation `{key}`"),
        problem,
    };
    // Sealed under a store key: a first line of `mac:` and the body's keyed MAC.
    let (mac, bytes) = match bytes.strip_prefix(MAC_PREFIX.as_bytes()) {
        Some(rest) => match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (Some(&rest[..end]), &rest[end + 1..]),
            None => return Err(damaged("its MAC line has no end".into())),
        },
        None => (None, bytes),
    };
    remote
        .check_mac(bytes, mac)
        .map_err(|problem| damaged(problem.to_owned()))?;
    #[derive(Deserialize)]
    struct Versioned {
        v: u32,
    }
    let versioned: Versioned = serde_json::from_slice(bytes)
        .map_err(|e| damaged(format!("it is not a confirmation: {e}")))?;
    if versioned.v != VERSION {
        return Err(damaged(format!(
            "it has format version {}, and this murphy reads {VERSION}",
            versioned.v
        )));
    }
    let confirmation: Confirmation = serde_json::from_slice(bytes)
        .map_err(|e| damaged(format!("it is not a confirmation: {e}")))?;
    let named = confirmation.slot();
    if (named.pipeline, named.target, named.version, named.file)
        != (slot.pipeline, slot.target, slot.version, slot.file)
    {
        return Err(damaged(format!(
            "it confirms `{}` {} to {}, not the file it is stored for",
            printable(named.file),
            printable(named.version),
            printable(named.target)
        )));
    }
    if confirmation.digest.is_empty()
        || confirmation.digest.len() > 128
        || !confirmation.digest.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(damaged(format!(
            "its digest `{}` is not a hex digest",
            printable(&confirmation.digest)
        )));
    }
    for (field, value) in [
        ("run_id", &confirmation.run_id),
        ("stage", &confirmation.stage),
    ] {
        if value.is_empty() || value.len() > 200 || value.chars().any(char::is_control) {
            return Err(damaged(format!(
                "its `{field}` `{}` is empty, too long or holds control characters",
                printable(value)
            )));
        }
    }
    Ok(confirmation)
}

/// Untrusted text, shown short and with control characters escaped.
fn printable(text: &str) -> String {
    let shown: String = text
        .chars()
        .take(100)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > 100 {
        format!("{shown}...")
    } else {
        shown
    }
}

/// `text` as one path part that every store keeps as it is: ASCII letters, digits and `-` stay,
/// `.` stays unless it leads (so no part is `.` or `..`), every other byte becomes `_XX`.
/// Distinct texts give distinct parts: `_` is always followed by two hex digits, so `__`, which
/// starts the digest of a text cut at [`MAX_SEGMENT`], never appears in an uncut part.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, byte) in text.bytes().enumerate() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || (byte == b'.' && i > 0) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("_{byte:02X}"));
        }
    }
    if text.is_empty() {
        out.push('_');
    }
    if out.len() > MAX_SEGMENT {
        let digest = blake3::hash(text.as_bytes()).to_hex();
        out.truncate(MAX_SEGMENT - 34);
        out.push_str("__");
        out.push_str(&digest[..32]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::StoreUrl;
    use std::collections::BTreeMap;

    fn remote(dir: &std::path::Path) -> Remote {
        let url = StoreUrl::parse(&format!("file://{}", dir.display())).unwrap();
        Remote::open(&url, &BTreeMap::new()).unwrap()
    }

    const SLOT: Slot<'static> = Slot {
        pipeline: "demo",
        target: "command `./upload {file}`",
        version: "1.0.0+build.5",
        file: "dist/app 1.tar.gz",
    };

    #[test]
    fn keys_are_safe_and_distinct() {
        assert_eq!(
            SLOT.key(),
            "releases/demo/command_20_60._2Fupload_20_7Bfile_7D_60/1.0.0_2Bbuild.5/dist_2Fapp_201.tar.gz.json"
        );
        assert_eq!(segment(".."), "_2E.");
        assert_eq!(segment(""), "_");
        assert_ne!(segment("a_2F"), segment("a/"));
        let long = format!("command `{}`", "x".repeat(500));
        let cut = segment(&long);
        assert_eq!(cut.len(), MAX_SEGMENT);
        assert!(cut.contains("__"));
        assert_ne!(cut, segment(&format!("command `{}y`", "x".repeat(499))));
        // Every part survives object_store's path rules as it is.
        let key = Key::from(SLOT.key());
        assert_eq!(key.as_ref(), SLOT.key());
    }

    #[tokio::test]
    async fn the_first_confirmation_wins_and_others_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let remote = remote(dir.path());
        assert_eq!(find(&remote, SLOT).await.unwrap(), None);
        let a = Confirmation::new(SLOT, "aa11", "run-a", "release");
        assert_eq!(confirm(&remote, &a).await.unwrap(), None);
        let b = Confirmation::new(SLOT, "bb22", "run-b", "release");
        assert_eq!(confirm(&remote, &b).await.unwrap(), Some(a.clone()));
        assert_eq!(find(&remote, SLOT).await.unwrap(), Some(a));
    }

    #[tokio::test]
    async fn a_pull_request_writes_apart_and_reads_both() {
        let dir = tempfile::tempdir().unwrap();
        let trusted = remote(dir.path()).for_run(false, None, "r1");
        let pr = remote(dir.path()).for_run(true, Some("7"), "r2");
        let ours = Confirmation::new(SLOT, "cc33", "r2", "release");
        assert_eq!(confirm(&pr, &ours).await.unwrap(), None);
        assert!(dir.path().join("pr/7").join(SLOT.key()).exists());
        assert_eq!(find(&trusted, SLOT).await.unwrap(), None);
        assert_eq!(find(&pr, SLOT).await.unwrap(), Some(ours));
        let shared = Confirmation::new(SLOT, "dd44", "r1", "release");
        assert_eq!(confirm(&trusted, &shared).await.unwrap(), None);
        assert_eq!(find(&trusted, SLOT).await.unwrap(), Some(shared));
    }

    #[tokio::test]
    async fn damaged_confirmations_are_errors_that_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let remote = remote(dir.path());
        let path = dir.path().join(SLOT.key());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let good = Confirmation::new(SLOT, "aa11", "run-a", "release");
        let other_slot = Confirmation::new(
            Slot {
                file: "dist/other",
                ..SLOT
            },
            "aa11",
            "run-a",
            "release",
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "is not a confirmation"),
            (
                br#"{"v": 2, "anything": true}"#.to_vec(),
                "format version 2",
            ),
            (vec![b' '; MAX_BYTES + 1], "more than the 65536"),
            (
                serde_json::to_vec(&other_slot).unwrap(),
                "not the file it is stored for",
            ),
            (
                serde_json::to_vec(&Confirmation {
                    digest: "../../x".into(),
                    ..good.clone()
                })
                .unwrap(),
                "is not a hex digest",
            ),
            (
                serde_json::to_vec(&Confirmation {
                    run_id: "a\x1b[2Jb".into(),
                    ..good.clone()
                })
                .unwrap(),
                "control characters",
            ),
        ];
        for (bytes, expected) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let err = find(&remote, SLOT).await.unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains(&SLOT.key()),
                "{expected}: {err}"
            );
            assert!(!err.contains('\x1b'), "{err}");
        }
    }
}
