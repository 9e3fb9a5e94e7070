//! The archive on the shared store: build numbers claimed by conditional create, so they are
//! unique across machines; builds uploaded with their manifest last; retention over every
//! machine's builds.
//!
//! ```text
//! <url>/archive/<name>/numbers/000042              the claim of number 42
//! <url>/archive/<name>/builds/000042/<name>.zip    uploaded first
//! <url>/archive/<name>/builds/000042/manifest.json uploaded last: without it, no build
//! <url>/pr/<n>/archive/<name>/...                  a pull request's builds
//! ```
//!
//! `<name>` is the archive root's folder name when the root is one plain folder of the
//! project (`artifacts`), else `root-` and a hash of its path.
//!
//! **Invariant:** a build is listed only once its manifest is there, and the manifest goes
//! last up and first down: a reader never sees a build whose files are missing. A build
//! without a manifest (a writer killed mid-upload) is swept by prune after [`GRACE`].

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use object_store::ObjectMeta;
use object_store::path::Path as Key;

use super::{Remote, RemoteError};
use crate::archive::manifest::{BuildManifest, MANIFEST_VERSION};
use crate::archive::retention::{self, Expired, Policy};

/// Claims tried before numbering gives up: each lost race means another machine got a number,
/// so this many in a row means something else is wrong.
const CLAIM_ATTEMPTS: u32 = 100;

/// How long a build may stay without its manifest before prune takes it for a dead writer's:
/// longer than any upload of one build takes.
pub const GRACE: SignedDuration = SignedDuration::from_hours(24);

/// Transfers at once, as for checkpoints.
const PARALLEL: usize = 16;

const MANIFEST: &str = "manifest.json";
/// Far above any manifest murphy writes (a line per file); a bigger one is not read.
const MAX_MANIFEST: u64 = 64 * 1024 * 1024;
/// Beside the manifest under a store key: its keyed MAC.
const MANIFEST_MAC: &str = "manifest.json.mac";

/// The shared store's name for the archive whose root is `root` (relative to the project).
pub fn name(root: &Path) -> String {
    let plain = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let normal = crate::plan::normalize(root);
    match normal.to_str() {
        Some(text) if plain(text) => text.to_owned(),
        _ => {
            let hash = blake3::hash(normal.to_string_lossy().as_bytes());
            format!("root-{}", &hash.to_hex()[..16])
        }
    }
}

/// One build as the shared store holds it: its manifest, if it reads and agrees with the
/// build's place.
#[derive(Debug)]
pub struct SharedBuild {
    pub number: u64,
    pub manifest: Result<BuildManifest, String>,
    /// Every object of the build, its manifest included.
    objects: Vec<Key>,
}

/// What a listing found: the builds, oldest first, and the builds without a manifest.
#[derive(Debug, Default)]
pub struct Listing {
    pub builds: Vec<SharedBuild>,
    /// Each build number without a manifest, its objects and when the newest was written.
    incomplete: Vec<(u64, Vec<Key>, Timestamp)>,
}

/// What a prune deleted.
#[derive(Debug, Default)]
pub struct Pruned {
    pub expired: Vec<Expired>,
    /// Builds without a manifest older than [`GRACE`], whose writer is gone.
    pub swept: Vec<u64>,
}

/// One archive root on the shared store, read and written where the run writes (a pull
/// request's run under its own prefix).
#[derive(Debug, Clone)]
pub struct SharedArchive {
    remote: Remote,
    name: String,
}

impl SharedArchive {
    pub fn new(remote: Remote, name: String) -> SharedArchive {
        SharedArchive { remote, name }
    }

    /// Where the archive is, for messages.
    pub fn location(&self) -> String {
        format!("{}/{}", self.remote.url(), self.remote.own(&self.key("")))
    }

    fn key(&self, rest: &str) -> String {
        format!("archive/{}/{rest}", self.name)
    }

    fn numbers(&self) -> Key {
        self.remote.own(&self.key("numbers"))
    }

    fn builds_key(&self) -> Key {
        self.remote.own(&self.key("builds"))
    }

    fn build_key(&self, number: u64) -> Key {
        self.builds_key().join(format!("{number:06}").as_str())
    }

    /// The highest number claimed below `numbers`, if any.
    async fn highest(&self, numbers: &Key) -> Result<Option<u64>, RemoteError> {
        let listed = self.remote.list(numbers).await?;
        Ok(listed
            .iter()
            .filter_map(|meta| number(meta.location.filename()?))
            .max())
    }

    /// Claims the next build number, at least `floor` (the local archive's next, so the local
    /// build can take the same number): one past the highest claim listed, created only if
    /// absent; a lost race lists again. A pull request's run claims under its own prefix,
    /// past the shared claims too, so its numbers do not repeat the trusted runs' of its time.
    pub async fn claim(&self, floor: u64, run_id: &str, stage: &str) -> Result<u64, RemoteError> {
        let body = serde_json::json!({
            "v": 1,
            "run_id": run_id,
            "stage": stage,
            "claimed_at": Timestamp::now(),
        });
        let body = Bytes::from(body.to_string());
        let shared = self.remote.shared(&self.key("numbers"));
        for _ in 0..CLAIM_ATTEMPTS {
            let mut highest = self.highest(&self.numbers()).await?;
            if self.remote.writes_apart() {
                highest = highest.max(self.highest(&shared).await?);
            }
            let next = highest.map_or(1, |n| n + 1).max(floor);
            let at = self.numbers().join(format!("{next:06}").as_str());
            if self.remote.create(&at, body.clone()).await? {
                return Ok(next);
            }
            tracing::debug!("build number {next} was claimed by another run; listing again");
        }
        Err(RemoteError::Request {
            url: self.remote.url().to_string(),
            what: "claim a build number in",
            key: self.numbers().to_string(),
            problem: format!("{CLAIM_ATTEMPTS} claims in a row were taken by other runs"),
        })
    }

    /// Uploads the local build `number` from `dir`: every file, then the manifest, so the
    /// build is listed only whole. Returns `false` if the store had the build already (a
    /// resumed run).
    pub async fn upload(&self, number: u64, dir: &Path) -> Result<bool, RemoteError> {
        let at = self.build_key(number);
        let manifest_at = at.clone().join(MANIFEST);
        if self.remote.head(&manifest_at).await?.is_some() {
            return Ok(false);
        }
        let local = |source| RemoteError::Local {
            path: dir.to_owned(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(local)? {
            let entry = entry.map_err(local)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != MANIFEST && entry.file_type().map_err(local)?.is_file() {
                files.push(name);
            }
        }
        futures_util::stream::iter(files)
            .map(|file| {
                let key = at.clone().join(file.as_str());
                async move { self.remote.upload(&dir.join(&file), &key).await }
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<()>()
            .await?;
        crate::crash::at("archive-files-shared", &number.to_string());
        // Under a store key the manifest's MAC goes up first: a manifest without one is
        // never trusted, so it must not be there before its MAC.
        let manifest = std::fs::read(dir.join(MANIFEST)).map_err(local)?;
        if let Some(mac) = self.remote.mac(&manifest) {
            let mac_at = at.clone().join(MANIFEST_MAC);
            self.remote.put(&mac_at, Bytes::from(mac)).await?;
        }
        self.remote
            .upload(&dir.join(MANIFEST), &manifest_at)
            .await?;
        Ok(true)
    }

    /// Every build with a manifest, oldest first, and those without one.
    pub async fn list(&self) -> Result<Listing, RemoteError> {
        let prefix = self.builds_key();
        let mut groups: BTreeMap<u64, Vec<ObjectMeta>> = BTreeMap::new();
        for meta in self.remote.list(&prefix).await? {
            let n = meta
                .location
                .prefix_match(&prefix)
                .and_then(|mut rest| number(rest.next()?.as_ref()));
            if let Some(n) = n {
                groups.entry(n).or_default().push(meta);
            }
        }
        let mut listing = Listing::default();
        let mut complete = Vec::new();
        for (n, objects) in groups {
            let manifest_at = self.build_key(n).join(MANIFEST);
            if objects.iter().any(|m| m.location == manifest_at) {
                complete.push((n, objects));
            } else {
                let newest = objects
                    .iter()
                    .map(|m| m.last_modified.timestamp_millis())
                    .max()
                    .and_then(|ms| Timestamp::from_millisecond(ms).ok())
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                let keys = objects.into_iter().map(|m| m.location).collect();
                listing.incomplete.push((n, keys, newest));
            }
        }
        listing.builds = futures_util::stream::iter(complete)
            .map(|(n, objects)| async move {
                let manifest_at = self.build_key(n).join(MANIFEST);
                let mac = match self.remote.sealing() {
                    true => {
                        self.remote
                            .get_limited(&self.build_key(n).join(MANIFEST_MAC), 1024)
                            .await?
                    }
                    false => None,
                };
                let manifest = match self.remote.get_limited(&manifest_at, MAX_MANIFEST).await? {
                    Some(bytes) => self
                        .remote
                        .check_mac(&bytes, mac.as_deref())
                        .map_err(str::to_owned)
                        .and_then(|()| check_manifest(&bytes, n, &objects)),
                    // Pruned since the listing: no longer a build.
                    None => return Ok(None),
                };
                let objects = objects.into_iter().map(|m| m.location).collect();
                Ok::<_, RemoteError>(Some(SharedBuild {
                    number: n,
                    manifest,
                    objects,
                }))
            })
            .buffered(PARALLEL)
            .try_filter_map(|build| async move { Ok(build) })
            .try_collect()
            .await?;
        Ok(listing)
    }

    /// The builds retention lets go at `now`, over every machine's builds. Builds whose
    /// manifest is damaged are never let go, as in the local archive.
    pub async fn expired(
        &self,
        policy: Policy,
        now: Timestamp,
        include_releases: bool,
    ) -> Result<Vec<Expired>, RemoteError> {
        Ok(expired_in(
            &self.list().await?,
            policy,
            now,
            include_releases,
        ))
    }

    /// Deletes what retention lets go of the builds listed now, and builds left without a
    /// manifest for longer than [`GRACE`].
    ///
    /// Two pruners at once are safe without a lock: each deletes only what the rule expires
    /// over its own listing, and a listing older than the store's state only misses builds.
    /// A missing newer build only moves older ones up in rank (fewer expire); a missing older
    /// one (another pruner deleted it, being expired) leaves the ranks of those newer than
    /// it as they were, and those older than it were beyond `keep_last` already. Ages only
    /// grow. So what one pruner deletes, the rule over the present builds expires too.
    pub async fn prune(
        &self,
        policy: Policy,
        now: Timestamp,
        include_releases: bool,
    ) -> Result<Pruned, RemoteError> {
        let listing = self.list().await?;
        let expired = expired_in(&listing, policy, now, include_releases);
        self.delete(&listing, &expired).await?;
        let mut swept = Vec::new();
        for (n, objects, newest) in &listing.incomplete {
            if now.duration_since(*newest) > GRACE {
                for key in objects {
                    self.remote.delete(key).await?;
                }
                swept.push(*n);
            }
        }
        Ok(Pruned { expired, swept })
    }

    /// Deletes the `expired` builds of `listing`: each manifest first, so a half-deleted
    /// build is no longer listed, then its files, then its claim (the newest build is never
    /// expired, so the highest claim, which the next number counts from, stays).
    async fn delete(&self, listing: &Listing, expired: &[Expired]) -> Result<(), RemoteError> {
        for e in expired {
            let Some(build) = listing.builds.iter().find(|b| b.number == e.build) else {
                continue;
            };
            let manifest_at = self.build_key(e.build).join(MANIFEST);
            self.remote.delete(&manifest_at).await?;
            crate::crash::at("shared-prune-unlisted", &e.build.to_string());
            for key in build.objects.iter().filter(|k| **k != manifest_at) {
                self.remote.delete(key).await?;
            }
            let claim = self.numbers().join(format!("{:06}", e.build).as_str());
            self.remote.delete(&claim).await?;
        }
        Ok(())
    }
}

fn expired_in(
    listing: &Listing,
    policy: Policy,
    now: Timestamp,
    include_releases: bool,
) -> Vec<Expired> {
    let readable = listing.builds.iter().filter_map(|b| {
        b.manifest
            .as_ref()
            .ok()
            .map(|m| (b.number, m.created_at, m.release()))
    });
    retention::expired(
        &crate::archive::candidates(readable),
        policy,
        now,
        include_releases,
    )
}

/// A build number as the store names it: digits only.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The manifest of build `n`, if it parses, is of a version this murphy reads, says it is
/// build `n`, and its bundle is among the build's objects.
fn check_manifest(bytes: &[u8], n: u64, objects: &[ObjectMeta]) -> Result<BuildManifest, String> {
    let manifest: BuildManifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if manifest.v != MANIFEST_VERSION {
        return Err(format!(
            "manifest version {} is not {MANIFEST_VERSION}",
            manifest.v
        ));
    }
    if manifest.build != n {
        return Err(format!(
            "the manifest says build {}, but it is stored as build {n}",
            manifest.build
        ));
    }
    let stored = object_store::path::PathPart::from(manifest.bundle.as_str());
    let bundle = objects
        .iter()
        .any(|m| m.location.filename() == Some(stored.as_ref()));
    if !bundle {
        return Err(format!("its bundle `{}` is missing", manifest.bundle));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::StoreUrl;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn archive(dir: &Path) -> SharedArchive {
        let url = StoreUrl::parse(&format!("file://{}", dir.display())).unwrap();
        let remote = Remote::open(&url, &Default::default()).unwrap();
        SharedArchive::new(remote, name(Path::new("artifacts")))
    }

    /// Claims a number and uploads a build with it, as a runner would.
    async fn make_build(archive: &SharedArchive, scratch: &Path) -> u64 {
        let n = archive.claim(1, "run", "pack").await.unwrap();
        let dir = scratch.join(n.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("demo.zip"), b"zip").unwrap();
        let manifest = serde_json::json!({
            "v": MANIFEST_VERSION, "build": n, "name": "demo", "bundle": "demo.zip",
            "bundle_sha256": "00", "bundle_size": 3, "created_at": "2020-01-01T00:00:00Z",
            "pipeline": "demo", "run_id": "run", "stage": "pack", "trigger": "push",
            "version": null, "prerelease": null, "commit": null, "branch": null, "tag": null,
            "links": {}, "description": null, "files": [], "stages": [], "provenance": {},
        });
        std::fs::write(dir.join(MANIFEST), manifest.to_string()).unwrap();
        assert!(archive.upload(n, &dir).await.unwrap());
        n
    }

    async fn listed(archive: &SharedArchive) -> Vec<u64> {
        let listing = archive.list().await.unwrap();
        assert!(listing.builds.iter().all(|b| b.manifest.is_ok()));
        listing.builds.iter().map(|b| b.number).collect()
    }

    const KEEP_5: Policy = Policy {
        keep_last: 5,
        keep_days: 0,
    };

    /// A pruner whose listing went stale (more builds made, another pruner done) deletes
    /// only what the rule over the present builds lets go too, in either order.
    #[test]
    fn a_pruner_with_a_stale_listing_deletes_nothing_the_rule_keeps() {
        for stale_goes_last in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let scratch = tempfile::tempdir().unwrap();
            let (a, b) = (archive(dir.path()), archive(dir.path()));
            runtime().block_on(async {
                for _ in 0..10 {
                    make_build(&a, scratch.path()).await;
                }
                let now = Timestamp::now();
                let stale = a.list().await.unwrap();
                let expired = expired_in(&stale, KEEP_5, now, false);
                assert_eq!(
                    expired.iter().map(|e| e.build).collect::<Vec<_>>(),
                    [1, 2, 3, 4, 5]
                );
                for _ in 0..5 {
                    make_build(&b, scratch.path()).await;
                }
                if stale_goes_last {
                    b.prune(KEEP_5, now, false).await.unwrap();
                    a.delete(&stale, &expired).await.unwrap();
                } else {
                    a.delete(&stale, &expired).await.unwrap();
                    b.prune(KEEP_5, now, false).await.unwrap();
                }
                assert_eq!(listed(&a).await, [11, 12, 13, 14, 15]);
                // The highest claim stays: numbers go on from it.
                assert_eq!(make_build(&a, scratch.path()).await, 16);
            });
        }
    }

    #[test]
    fn a_build_without_its_manifest_is_not_listed_and_swept_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let a = archive(dir.path());
        runtime().block_on(async {
            make_build(&a, scratch.path()).await;
            let two = make_build(&a, scratch.path()).await;
            // A writer killed between the bundle and the manifest.
            a.remote
                .delete(&a.build_key(two).join(MANIFEST))
                .await
                .unwrap();
            assert_eq!(listed(&a).await, [1]);
            let now = Timestamp::now();
            let pruned = a.prune(KEEP_5, now, false).await.unwrap();
            assert!(pruned.swept.is_empty(), "within the grace period");
            let later = now
                .checked_add(GRACE)
                .unwrap()
                .checked_add(SignedDuration::from_secs(1))
                .unwrap();
            let pruned = a.prune(KEEP_5, later, false).await.unwrap();
            assert_eq!(pruned.swept, [two]);
            assert!(a.remote.list(&a.build_key(two)).await.unwrap().is_empty());
            // Its number is not given again.
            assert_eq!(make_build(&a, scratch.path()).await, 3);
        });
    }

    #[test]
    fn a_manifest_that_disagrees_with_its_place_is_listed_as_damaged_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let a = archive(dir.path());
        runtime().block_on(async {
            for _ in 0..7 {
                make_build(&a, scratch.path()).await;
            }
            let at = a.build_key(1).join(MANIFEST);
            let text = String::from_utf8(a.remote.get(&at).await.unwrap().unwrap().to_vec())
                .unwrap()
                .replace("\"build\":1,", "\"build\":99,");
            a.remote.put(&at, Bytes::from(text)).await.unwrap();
            let listing = a.list().await.unwrap();
            let damaged = listing.builds[0].manifest.as_ref().unwrap_err();
            assert!(damaged.contains("says build 99"), "{damaged}");
            let pruned = a.prune(KEEP_5, Timestamp::now(), false).await.unwrap();
            assert_eq!(
                pruned.expired.iter().map(|e| e.build).collect::<Vec<_>>(),
                [2]
            );
            assert_eq!(a.list().await.unwrap().builds.len(), 6);
        });
    }

    #[test]
    fn names_of_roots() {
        assert_eq!(name(Path::new("artifacts")), "artifacts");
        assert_eq!(name(Path::new("./artifacts/")), "artifacts");
        let nested = name(Path::new("out/artifacts"));
        assert!(
            nested.starts_with("root-") && nested.len() == 21,
            "{nested}"
        );
        assert_ne!(nested, name(Path::new("out-artifacts")));
        assert!(name(Path::new(".hidden")).starts_with("root-"));
    }
}
