//! The checkpoint store: stage outputs kept once by content, and one record per fingerprint.
//!
//! ```text
//! .murphy/store/objects/ab/ab12...   read-only copies of output files, named by BLAKE3
//! .murphy/store/records/<fp>.json    a checksum line, then the StageRecord as JSON
//! .murphy/store/manifests/<fp>.json  what went into the fingerprint (for "why did it re-run")
//! .murphy/store/latest/<stage>       the fingerprint of the stage's newest record
//! ```
//!
//! **Invariant:** nothing is trusted that was not verified. A record is used only if its
//! checksum matches and every object it names exists with the digest in its name; anything
//! else is treated as absent, so the stage runs again.
//! **Invariant:** objects are written (and synced) before the record that names them.
//! **Invariant:** outputs never escape the project. A symlink is stored as a link and never
//! followed (nor is any symlink above an output); one whose target leaves the project is
//! refused unless the stage says `outside_links: true`. A record naming a path outside the
//! project is damaged; restoring never writes, removes or chmods through a symlink.
//!
//! Objects are copies (`std::fs::copy`, which shares extents on copy-on-write filesystems),
//! not hard links: a later build that rewrites an output in place would otherwise rewrite the
//! stored object through the shared inode.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::fingerprint::{Manifest, hex};
use crate::inputs;
use crate::stat_cache::{StatCache, hash_file};

pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("declared output `{0}` was not produced")]
    MissingOutput(String),
    #[error("cannot store output `{}`", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("output `{pattern}` is not inside the project: {escape}")]
    Outside {
        pattern: String,
        escape: inputs::Escape,
    },
    #[error(
        "output `{}` is below the symlink `{}`: murphy does not follow symlinks in outputs; declare the link itself, or a path that is not below it",
        path.display(), link.display()
    )]
    BelowLink { path: PathBuf, link: PathBuf },
    #[error(
        "output `{path}` is a symlink to `{target}`, outside the project; the stage must say `outside_links: true` to keep such a link"
    )]
    OutsideLink { path: String, target: String },
    #[error(
        "cannot restore `{}`: `{}` is a symlink, and murphy does not write through one",
        path.display(), link.display()
    )]
    ThroughLink { path: PathBuf, link: PathBuf },
    #[error("output `{}` changed while it was being stored", .0.display())]
    Unstable(PathBuf),
    #[error("the checkpoint record is damaged: {0}")]
    DamagedRecord(String),
    #[error("stored object {0} is damaged")]
    Corrupt(String),
    #[error("cannot restore `{}` in the workspace", path.display())]
    Workspace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot access the checkpoint store at `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn workspace_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Workspace {
        path: path.to_owned(),
        source,
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a successful stage left behind, under one fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub v: u32,
    pub stage: String,
    pub fingerprint: String,
    /// Sorted by path, so parents come before what they hold.
    pub outputs: Vec<OutputEntry>,
    pub output_digest: String,
    pub exit_code: i32,
    /// From the stage's start to the end of its commands.
    pub duration_ms: u64,
    pub run_id: String,
    /// When its commands ended: with `duration_ms`, when they ran.
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputEntry {
    /// Relative to the pipeline's directory.
    pub path: String,
    #[serde(flatten)]
    pub kind: OutputKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputKind {
    File {
        digest: String,
        size: u64,
        mode: u32,
    },
    Symlink {
        target: String,
    },
    Dir {
        mode: u32,
    },
}

/// The record in `bytes` (a record file's contents) if it is one for `fingerprint`, its
/// checksum or MAC unchecked.
pub fn parse_unverified(bytes: &[u8], fingerprint: &str) -> Option<StageRecord> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let record: StageRecord = serde_json::from_slice(&bytes[newline + 1..]).ok()?;
    (record.v == RECORD_VERSION && record.fingerprint == fingerprint).then_some(record)
}

/// The digest of a stage's outputs as a whole: what its dependents' fingerprints see.
pub fn outputs_digest(entries: &[OutputEntry]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"murphy-outputs-v1");
    for e in entries {
        let line = serde_json::to_string(e).unwrap_or_default();
        h.update(&(line.len() as u64).to_le_bytes());
        h.update(line.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// With a store key, every record carries a keyed MAC and one without a valid MAC is
    /// treated as absent: a record edited by someone without the key is never trusted.
    key: Option<[u8; 32]>,
    /// The files checkpoints wrote since the last [`Store::sync`]: they are written without
    /// fsyncs and made durable together (see ARCHITECTURE.md, "Crash safety").
    unsynced: Arc<Mutex<Vec<PathBuf>>>,
}

/// Up to this many files written, [`Store::sync`] fsyncs each (and their directories); past
/// it, one `syncfs`. A `syncfs` also waits for every other process's writes to the same file
/// system (a compiler's, on a CI runner), which cost 30 ms at the end of a one-stage run here.
const FSYNC_AT_MOST: usize = 64;

/// Threads [`Store::sync`] syncs files on.
const SYNC_THREADS: usize = 4;

/// What starts a record written with a store key: `mac:` and the keyed BLAKE3 of its body.
const MAC_PREFIX: &[u8] = b"mac:";

/// Counts for `murphy cache stats` and `murphy cache gc`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub objects: u64,
    pub bytes: u64,
    pub records: u64,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            root: state_dir.join("store"),
            key: None,
            unsynced: Arc::default(),
        }
    }

    /// Makes every checkpoint written so far survive a power cut: the files and the
    /// directories that name them, or one `syncfs` for many; nothing to do when none was
    /// written. Called at the end of a run. The files are synced on a few threads at once:
    /// the disk then works on all of them together, and a run's end waits for the largest
    /// alone, not for the sum.
    pub fn sync(&self) -> io::Result<()> {
        let written = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
        if written.len() > FSYNC_AT_MOST {
            return sync_filesystem(&self.root);
        }
        // Up to the store's root: a directory made for an object is new too.
        let dirs: std::collections::BTreeSet<&Path> = written
            .iter()
            .flat_map(|file| {
                file.ancestors()
                    .skip(1)
                    .take_while(|dir| dir.starts_with(&self.root))
            })
            .collect();
        let chunk = written.len().div_ceil(SYNC_THREADS).max(1);
        std::thread::scope(|scope| {
            let files: Vec<_> = written
                .chunks(chunk)
                .map(|files| scope.spawn(move || files.iter().try_for_each(|f| sync_data(f))))
                .collect();
            let dirs = dirs.iter().try_for_each(|dir| atomic_file::sync_dir(dir));
            files
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(io::Error::other("an fsync panicked")))
                })
                .chain([dirs])
                .collect()
        })
    }

    fn written(&self, path: PathBuf) {
        self.unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path);
    }

    /// The store with records authenticated by `key` (`MURPHY_STORE_KEY`).
    pub fn keyed(self, key: &str) -> Store {
        Store {
            key: Some(blake3::derive_key(
                "murphy 2026-11 checkpoint record MAC",
                key.as_bytes(),
            )),
            ..self
        }
    }

    /// The first line of a record: its keyed MAC with a store key, its digest without.
    fn seal(&self, body: &[u8]) -> Vec<u8> {
        match &self.key {
            Some(key) => [
                MAC_PREFIX,
                blake3::keyed_hash(key, body).to_hex().as_bytes(),
            ]
            .concat(),
            None => blake3::hash(body).to_hex().as_bytes().to_vec(),
        }
    }

    /// Where this machine notes which checkpoints the shared store holds.
    pub fn shared_notes(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// Where the object named `digest` is kept.
    pub fn object_path(&self, digest: &str) -> PathBuf {
        let prefix = digest.get(..2).unwrap_or("00");
        self.root.join("objects").join(prefix).join(digest)
    }

    /// Where the record for `fingerprint` is kept: a checksum or MAC line, then JSON.
    pub fn record_path(&self, fingerprint: &str) -> PathBuf {
        self.root
            .join("records")
            .join(format!("{fingerprint}.json"))
    }

    pub fn manifest_path(&self, fingerprint: &str) -> PathBuf {
        self.root
            .join("manifests")
            .join(format!("{fingerprint}.json"))
    }

    fn latest_path(&self, stage: &str) -> PathBuf {
        self.root.join("latest").join(stage)
    }

    /// The verified record for `fingerprint`, or `None` if there is none or it is damaged.
    pub fn lookup(
        &self,
        stage: &str,
        fingerprint: &str,
        stat_cache: &StatCache,
    ) -> Option<StageRecord> {
        let record = self.read_record(fingerprint)?;
        if record.stage != stage {
            return None;
        }
        for entry in &record.outputs {
            if let OutputKind::File { digest, .. } = &entry.kind
                && !self.object_ok(digest, stat_cache)
            {
                tracing::warn!(
                    "checkpoint of `{}` is damaged (object {digest}); running the stage again",
                    record.stage
                );
                return None;
            }
        }
        Some(record)
    }

    /// The stage's newest record, whatever its fingerprint (for `--from` and for "why").
    pub fn latest(&self, stage: &str, stat_cache: &StatCache) -> Option<StageRecord> {
        let fingerprint = fs::read_to_string(self.latest_path(stage)).ok()?;
        self.lookup(stage, fingerprint.trim(), stat_cache)
    }

    /// The stage's newest record, read but not verified: when it last ran, for a warning.
    pub fn latest_unverified(&self, stage: &str) -> Option<StageRecord> {
        let fingerprint = fs::read_to_string(self.latest_path(stage)).ok()?;
        self.read_unverified(fingerprint.trim())
            .map(|(_, record)| record)
    }

    /// Whether the stage has a readable record at all (checked before `--from` starts).
    /// Read, not verified (a hint, for `--from` and `release --dry-run`): what is restored
    /// from it is verified then, with the store key if there is one.
    pub fn has_record(&self, stage: &str) -> bool {
        fs::read_to_string(self.latest_path(stage))
            .is_ok_and(|fp| self.read_unverified(fp.trim()).is_some())
    }

    /// The run that made the record for `fingerprint`, read but not verified: it only says
    /// whose log to show.
    pub fn made_by(&self, fingerprint: &str) -> Option<String> {
        self.read_unverified(fingerprint)
            .map(|(_, record)| record.run_id)
    }

    /// The manifest of the stage's newest record, to say what changed since.
    pub fn latest_manifest(&self, stage: &str) -> Option<Manifest> {
        let fingerprint = fs::read_to_string(self.latest_path(stage)).ok()?;
        self.manifest(fingerprint.trim())
    }

    /// The manifest stored beside the record for `fingerprint`, to say what changed since.
    pub fn manifest(&self, fingerprint: &str) -> Option<Manifest> {
        let bytes = fs::read(self.manifest_path(fingerprint)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The record for `fingerprint` as it reads, and whether it is sealed with a MAC; its
    /// checksum or MAC unchecked: only for what gc keeps, never for what is restored.
    fn read_unverified(&self, fingerprint: &str) -> Option<(bool, StageRecord)> {
        let bytes = fs::read(self.record_path(fingerprint)).ok()?;
        let record = parse_unverified(&bytes, fingerprint)?;
        Some((bytes.starts_with(MAC_PREFIX), record))
    }

    /// Takes in a record read from the shared store, with its manifest, after every object
    /// it names (the caller's duty). It is verified like any other when it is looked up.
    pub fn import_record(
        &self,
        fingerprint: &str,
        record: &[u8],
        manifest: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        for dir in ["records", "manifests"] {
            let dir = self.root.join(dir);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        if let Some(manifest) = manifest {
            let path = self.manifest_path(fingerprint);
            atomic_file::write(&path, manifest).map_err(io_err(&path))?;
        }
        let path = self.record_path(fingerprint);
        atomic_file::write(&path, record).map_err(io_err(&path))
    }

    /// A temp path beside where the object `digest` goes, for a download in progress (swept
    /// like any other temp file if the download is cut short).
    pub fn object_temp_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let path = self.object_path(digest);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(dir.join(atomic_file::temp_name(digest)))
    }

    /// Moves a downloaded object, whose bytes the caller checked against `digest`, into place.
    pub fn import_object(&self, digest: &str, temp: &Path) -> Result<(), StoreError> {
        let path = self.object_path(digest);
        fs::set_permissions(temp, fs::Permissions::from_mode(0o444)).map_err(io_err(temp))?;
        fs::rename(temp, &path).map_err(io_err(&path))
    }

    /// The record for `fingerprint` if its checksum (with a store key, its MAC) holds and it
    /// names only paths inside the project (its objects unchecked).
    fn read_record(&self, fingerprint: &str) -> Option<StageRecord> {
        let path = self.record_path(fingerprint);
        let bytes = fs::read(&path).ok()?;
        self.verify(&bytes, fingerprint, &path.display().to_string())
    }

    /// The record in `bytes` if it is one for `fingerprint` whose checksum (with a store key,
    /// its MAC) holds, naming only paths inside the project and objects by well-formed digests.
    /// `source` names where the bytes came from, for the warning that says why not.
    pub fn verify(&self, bytes: &[u8], fingerprint: &str, source: &str) -> Option<StageRecord> {
        let path = Path::new(source);
        let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
            tracing::warn!("{} is damaged; ignoring it", path.display());
            return None;
        };
        let (check, body) = (&bytes[..newline], &bytes[newline + 1..]);
        let keyed = check.starts_with(MAC_PREFIX);
        let trusted = match (&self.key, keyed) {
            (Some(_), true) | (None, false) => {
                // Compared in constant time: how much of a MAC matched says nothing.
                let expected = self.seal(body);
                expected.len() == check.len()
                    && expected
                        .iter()
                        .zip(check)
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            (Some(_), false) => {
                tracing::warn!(
                    "{} has no MAC, and MURPHY_STORE_KEY is set: ignoring it",
                    path.display()
                );
                return None;
            }
            (None, true) => {
                tracing::warn!(
                    "{} was written with a store key: set MURPHY_STORE_KEY to use it; ignoring it",
                    path.display()
                );
                return None;
            }
        };
        if !trusted {
            let what = if keyed {
                "its MAC does not match MURPHY_STORE_KEY"
            } else {
                "its checksum does not match"
            };
            tracing::warn!(
                "{} is damaged or forged ({what}); ignoring it",
                path.display()
            );
            return None;
        }
        let record: StageRecord = serde_json::from_slice(body).ok()?;
        if record.v != RECORD_VERSION || record.fingerprint != fingerprint {
            return None;
        }
        if let Err(problem) = check_paths(&record.outputs).and_then(|()| check_digests(&record)) {
            tracing::warn!("{} is damaged ({problem}); ignoring it", path.display());
            return None;
        }
        Some(record)
    }

    fn object_ok(&self, digest: &str, stat_cache: &StatCache) -> bool {
        stat_cache
            .digest(&self.object_path(digest))
            .is_ok_and(|(d, _)| hex(&d) == digest)
    }

    /// Collects a stage's declared outputs below `root`: every path must exist and every glob
    /// must match. A directory is taken whole, with its files, symlinks and modes. Symlinks
    /// are taken as links, never followed; one that leads out of the project is refused
    /// unless `outside_links`.
    pub fn collect_outputs(
        &self,
        root: &Path,
        patterns: &[String],
        outside_links: bool,
        stat_cache: &StatCache,
    ) -> Result<Vec<OutputEntry>, StoreError> {
        let state_dir = self.root.parent().unwrap_or(&self.root);
        let mut entries = Vec::new();
        for pattern in patterns {
            let clean = inputs::normalize(pattern).map_err(|escape| StoreError::Outside {
                pattern: pattern.clone(),
                escape,
            })?;
            let prefix = inputs::literal_prefix(&clean);
            if inputs::is_glob(&clean)
                && let Some(link) = inputs::symlink_on_the_way(root, &prefix)
            {
                return Err(StoreError::BelowLink {
                    path: PathBuf::from(pattern),
                    link,
                });
            }
            let matches: Vec<PathBuf> = if inputs::is_glob(&clean) {
                inputs::expand(root, std::slice::from_ref(&clean), state_dir).map_err(|source| {
                    StoreError::Output {
                        path: PathBuf::from(&clean),
                        source,
                    }
                })?
            } else {
                vec![PathBuf::from(&clean)]
            };
            if matches.is_empty() {
                return Err(StoreError::MissingOutput(pattern.clone()));
            }
            for relative in matches {
                if let Some(link) = symlink_above(root, &relative) {
                    return Err(StoreError::BelowLink {
                        path: relative,
                        link,
                    });
                }
                let path = root.join(&relative);
                if fs::symlink_metadata(&path).is_err() {
                    return Err(StoreError::MissingOutput(pattern.clone()));
                }
                // A declared output that is itself a symlink is taken as the link: walkdir
                // would otherwise walk the directory it points to.
                let walk = walkdir::WalkDir::new(&path)
                    .follow_links(false)
                    .follow_root_links(false)
                    .into_iter()
                    .filter_entry(|e| !crate::atomic_file::is_temp(e.file_name()));
                for entry in walk {
                    let entry = entry.map_err(|e| StoreError::Output {
                        path: path.clone(),
                        source: e.into(),
                    })?;
                    let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
                    let described = self.describe(entry.path(), rel, stat_cache)?;
                    if let OutputKind::Symlink { target } = &described.kind
                        && !outside_links
                        && link_leaves(&described.path, target)
                    {
                        return Err(StoreError::OutsideLink {
                            path: described.path,
                            target: target.clone(),
                        });
                    }
                    entries.push(described);
                }
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.dedup_by(|a, b| a.path == b.path);
        Ok(entries)
    }

    fn describe(
        &self,
        path: &Path,
        rel: &Path,
        stat_cache: &StatCache,
    ) -> Result<OutputEntry, StoreError> {
        let fail = |source| StoreError::Output {
            path: rel.to_owned(),
            source,
        };
        let meta = fs::symlink_metadata(path).map_err(fail)?;
        let mode = meta.mode() & 0o7777;
        let kind = if meta.file_type().is_symlink() {
            let target = fs::read_link(path).map_err(fail)?;
            OutputKind::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else if meta.is_dir() {
            OutputKind::Dir { mode }
        } else {
            let (digest, size) = stat_cache.digest(path).map_err(fail)?;
            OutputKind::File {
                digest: hex(&digest),
                size,
                mode,
            }
        };
        Ok(OutputEntry {
            path: rel.to_string_lossy().into_owned(),
            kind,
        })
    }

    /// Stores the outputs' bytes (each once), then the manifest (its JSON,
    /// [`Manifest::to_json`]) and the record naming them.
    pub fn save(
        &self,
        root: &Path,
        record: &StageRecord,
        manifest: &[u8],
        stat_cache: &StatCache,
    ) -> Result<(), StoreError> {
        // Nothing here is fsynced: a kill cannot tear what is renamed into place, and what a
        // power cut may lose or tear (an object, this record) fails its check when read and
        // is treated as absent. The run syncs its checkpoints together (`Store::sync`).
        for entry in &record.outputs {
            if let OutputKind::File { digest, .. } = &entry.kind
                && !self.object_ok(digest, stat_cache)
            {
                self.put_object(&root.join(&entry.path), digest)?;
            }
        }
        crate::crash::at("objects-stored", &record.stage);
        let body = serde_json::to_vec_pretty(record)
            .map_err(|e| io_err(&self.root)(io::Error::other(e)))?;
        let mut bytes = self.seal(&body);
        bytes.push(b'\n');
        bytes.extend_from_slice(&body);
        for dir in ["records", "manifests", "latest"] {
            let dir = self.root.join(dir);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let manifest_path = self.manifest_path(&record.fingerprint);
        atomic_file::write_unsynced(&manifest_path, manifest).map_err(io_err(&manifest_path))?;
        self.written(manifest_path);
        let record_path = self.record_path(&record.fingerprint);
        atomic_file::write_unsynced(&record_path, &bytes).map_err(io_err(&record_path))?;
        self.written(record_path);
        let latest = self.latest_path(&record.stage);
        atomic_file::write_unsynced(&latest, record.fingerprint.as_bytes())
            .map_err(io_err(&latest))?;
        self.written(latest);
        Ok(())
    }

    /// Copies `source` into the store under `digest`, checking the copy's bytes.
    fn put_object(&self, source: &Path, digest: &str) -> Result<(), StoreError> {
        let path = self.object_path(digest);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = dir.join(atomic_file::temp_name(digest));
        let result = (|| {
            fs::copy(source, &tmp).map_err(|e| StoreError::Output {
                path: source.to_owned(),
                source: e,
            })?;
            if hex(&hash_file(&tmp).map_err(io_err(&tmp))?) != digest {
                return Err(StoreError::Unstable(source.to_owned()));
            }
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444)).map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            if let Ok(file) = fs::File::open(&path) {
                start_writeback(&file);
            }
            self.written(path);
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Makes the workspace hold the record's outputs, copying back what is missing or different
    /// and checking each object's bytes on the way; files the record does not name are left
    /// alone. Returns how many entries were restored. Nothing is written, removed or chmod-ed
    /// below a symlink: the record's own parents come first (sorted), so a link where the
    /// record has a directory is replaced by it, and a link above what the record names is
    /// an error.
    pub fn restore(
        &self,
        root: &Path,
        record: &StageRecord,
        outside_links: bool,
        stat_cache: &StatCache,
    ) -> Result<usize, StoreError> {
        check_paths(&record.outputs).map_err(StoreError::DamagedRecord)?;
        if !outside_links
            && let Some((path, target)) = record.outputs.iter().find_map(|e| match &e.kind {
                OutputKind::Symlink { target } if link_leaves(&e.path, target) => {
                    Some((e.path.clone(), target.clone()))
                }
                _ => None,
            })
        {
            return Err(StoreError::OutsideLink { path, target });
        }
        let mut restored = 0;
        for entry in &record.outputs {
            if let Some(link) = symlink_above(root, Path::new(&entry.path)) {
                return Err(StoreError::ThroughLink {
                    path: PathBuf::from(&entry.path),
                    link,
                });
            }
            let path = root.join(&entry.path);
            let current = fs::symlink_metadata(&path).ok();
            match &entry.kind {
                OutputKind::Dir { .. } => {
                    if !current.as_ref().is_some_and(|m| m.is_dir()) {
                        remove_any(&path);
                        fs::create_dir_all(&path).map_err(workspace_err(&path))?;
                        restored += 1;
                    }
                    // Writable while its files are put back; its own mode comes last.
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                        .map_err(workspace_err(&path))?;
                }
                OutputKind::Symlink { target } => {
                    let same = fs::read_link(&path).is_ok_and(|t| t.as_os_str() == target.as_str());
                    if !same {
                        remove_any(&path);
                        ensure_parent(&path)?;
                        std::os::unix::fs::symlink(target, &path).map_err(workspace_err(&path))?;
                        restored += 1;
                    }
                }
                OutputKind::File { digest, mode, .. } => {
                    if !file_intact(&path, current.as_ref(), digest, *mode, stat_cache) {
                        remove_any(&path);
                        ensure_parent(&path)?;
                        self.copy_out(digest, &path, *mode, stat_cache)?;
                        restored += 1;
                    }
                }
            }
        }
        // Deepest first, so a read-only directory is sealed only after what it holds.
        for entry in record.outputs.iter().rev() {
            if let OutputKind::Dir { mode } = entry.kind {
                let path = root.join(&entry.path);
                // Made a directory above; never chmod what a link points to.
                if symlink_above(root, Path::new(&entry.path)).is_none()
                    && fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
                {
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                        .map_err(workspace_err(&path))?;
                }
            }
        }
        Ok(restored)
    }

    /// Copies an object to `dest` through a temp file, which becomes `dest` only once the
    /// object's bytes are known to hash to its name. The copy is the kernel's
    /// (`copy_file_range`, as `cp` does: a reflink where the filesystem shares extents, never
    /// a hard link, so a later write to the workspace copy cannot reach the store). The check
    /// costs nothing when the stat cache vouches for the object (hashed before, its stamp
    /// unchanged since); otherwise the object is hashed on another core while it is copied,
    /// so a restore takes the longer of the two instead of their sum. Both read the one
    /// object, read-only and written only under the state directory's lock, so what was
    /// hashed is what was copied; a mismatch removes the copy and says the object is damaged.
    fn copy_out(
        &self,
        digest: &str,
        dest: &Path,
        mode: u32,
        stat_cache: &StatCache,
    ) -> Result<(), StoreError> {
        let object = self.object_path(digest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let tmp = dest.with_file_name(atomic_file::temp_name(&name));
        let missing = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => StoreError::Corrupt(digest.to_owned()),
            _ => io_err(&object)(e),
        };
        let result = (|| {
            let vouched = stat_cache.vouched(&object).map_err(missing)?;
            let mut from = fs::File::open(&object).map_err(missing)?;
            // `create_new` refuses whatever is there, a symlink included, instead of
            // writing through it.
            remove_any(&tmp);
            let mut to = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(workspace_err(&tmp))?;
            let found = match vouched {
                Some(found) => {
                    io::copy(&mut from, &mut to).map_err(workspace_err(&tmp))?;
                    found
                }
                None => std::thread::scope(|s| {
                    let hashed = s.spawn(|| stat_cache.digest(&object));
                    let copied = io::copy(&mut from, &mut to);
                    let hashed = hashed.join().unwrap_or_else(|_| {
                        Err(io::Error::other("the thread hashing the object panicked"))
                    });
                    copied.map_err(workspace_err(&tmp))?;
                    hashed.map(|(found, _)| found).map_err(missing)
                })?,
            };
            if hex(&found) != digest {
                return Err(StoreError::Corrupt(digest.to_owned()));
            }
            drop(to);
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
                .map_err(workspace_err(&tmp))?;
            fs::rename(&tmp, dest).map_err(workspace_err(dest))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes the temp files a killed writer left (`records/`, `manifests/`, `latest/`, each
    /// object folder) and returns how many went. Every writer to the store holds the state
    /// directory's lock, so called with it held, any temp file here is a dead writer's. Best
    /// effort: what cannot be removed now is tried again next time.
    pub fn sweep_temp_files(&self) -> usize {
        let mut dirs: Vec<PathBuf> = ["records", "manifests", "latest"]
            .iter()
            .map(|d| self.root.join(d))
            .collect();
        if let Ok(prefixes) = fs::read_dir(self.root.join("objects")) {
            dirs.extend(prefixes.flatten().map(|e| e.path()));
        }
        let removed: usize = dirs.iter().map(|dir| atomic_file::sweep(dir)).sum();
        if removed > 0 {
            tracing::debug!(
                "removed {removed} temp file(s) left in {}",
                self.root.display()
            );
        }
        removed
    }

    /// Removes records at least `keep_days` old (if given; 0 removes all), then every object no remaining
    /// record names. Records go first: a kill in between leaves only unreferenced objects,
    /// which the next gc removes. Call with the state directory's lock held.
    pub fn gc(&self, keep_days: Option<u32>, now: Timestamp) -> Result<Stats, StoreError> {
        self.sweep_temp_files();
        let mut removed = Stats::default();
        let mut referenced: HashSet<String> = HashSet::new();
        for fingerprint in self.fingerprints()? {
            // A record sealed with a key this murphy was not given cannot be checked here,
            // but it is still someone's checkpoint: it stays, and its objects with it.
            let record = match self.read_unverified(&fingerprint) {
                Some((true, record)) if self.key.is_none() => Some(record),
                _ => self.read_record(&fingerprint),
            };
            let expired = match (&record, keep_days) {
                (None, _) => true,
                (Some(r), Some(days)) => {
                    now.as_nanosecond() - r.created_at.as_nanosecond()
                        >= i128::from(days) * 86_400 * 1_000_000_000
                }
                (Some(_), None) => false,
            };
            if expired {
                let path = self.record_path(&fingerprint);
                fs::remove_file(&path).map_err(io_err(&path))?;
                let _ = fs::remove_file(self.manifest_path(&fingerprint));
                removed.records += 1;
            } else if let Some(record) = record {
                referenced.extend(record.outputs.into_iter().filter_map(|e| match e.kind {
                    OutputKind::File { digest, .. } => Some(digest),
                    _ => None,
                }));
            }
        }
        for (path, digest, size) in self.objects()? {
            if !referenced.contains(&digest) {
                fs::remove_file(&path).map_err(io_err(&path))?;
                removed.objects += 1;
                removed.bytes += size;
            }
        }
        Ok(removed)
    }

    pub fn stats(&self) -> Result<Stats, StoreError> {
        let objects = self.objects()?;
        Ok(Stats {
            objects: objects.len() as u64,
            bytes: objects.iter().map(|(_, _, size)| size).sum(),
            records: self.fingerprints()?.len() as u64,
        })
    }

    fn fingerprints(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("records");
        let mut out = Vec::new();
        for entry in read_dir_if_any(&dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(fp) = name.strip_suffix(".json") {
                out.push(fp.to_owned());
            }
        }
        Ok(out)
    }

    /// Every object file: (path, digest, size).
    fn objects(&self) -> Result<Vec<(PathBuf, String, u64)>, StoreError> {
        let dir = self.root.join("objects");
        let mut out = Vec::new();
        for prefix in read_dir_if_any(&dir)? {
            for entry in read_dir_if_any(&prefix.path())? {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((
                    entry.path(),
                    entry.file_name().to_string_lossy().into_owned(),
                    size,
                ));
            }
        }
        Ok(out)
    }
}

fn read_dir_if_any(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.collect::<io::Result<Vec<_>>>().map_err(io_err(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Whether every path a record names is a plain relative path inside the project, in order,
/// none below a symlink the record holds: anything else was not written by murphy.
/// Every object a record names must be named by a BLAKE3 digest (64 lowercase hex digits): the
/// name becomes a path in the store.
fn check_digests(record: &StageRecord) -> Result<(), String> {
    for entry in &record.outputs {
        if let OutputKind::File { digest, .. } = &entry.kind
            && !is_digest(digest)
        {
            return Err(format!(
                "`{}` names the object `{digest}`, which is not a digest",
                entry.path
            ));
        }
    }
    Ok(())
}

/// How many of a record's outputs [`Store::restore`] would put back: those missing, or not
/// as the record has them. Reads only.
pub fn outputs_to_restore(root: &Path, record: &StageRecord, stat_cache: &StatCache) -> usize {
    (record.outputs.iter())
        .filter(|entry| {
            let path = root.join(&entry.path);
            let current = fs::symlink_metadata(&path).ok();
            match &entry.kind {
                OutputKind::Dir { .. } => !current.is_some_and(|m| m.is_dir()),
                OutputKind::Symlink { target } => {
                    !fs::read_link(&path).is_ok_and(|t| t.as_os_str() == target.as_str())
                }
                OutputKind::File { digest, mode, .. } => {
                    !file_intact(&path, current.as_ref(), digest, *mode, stat_cache)
                }
            }
        })
        .count()
}

/// Whether the file at `path` (with `current`, its metadata if it exists) is the output a
/// record names: a plain file with its mode and bytes.
fn file_intact(
    path: &Path,
    current: Option<&fs::Metadata>,
    digest: &str,
    mode: u32,
    stat_cache: &StatCache,
) -> bool {
    current.is_some_and(|m| m.is_file() && m.mode() & 0o7777 == mode)
        && stat_cache
            .digest(path)
            .is_ok_and(|(d, _)| hex(&d) == digest)
}

/// Whether `text` is a BLAKE3 digest as murphy writes it.
pub fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_paths(entries: &[OutputEntry]) -> Result<(), String> {
    let mut links: Vec<&Path> = Vec::new();
    let mut previous: Option<&str> = None;
    for entry in entries {
        let path = Path::new(&entry.path);
        match inputs::lexical(path) {
            Ok(clean) if !clean.as_os_str().is_empty() && clean.as_os_str() == path.as_os_str() => {
            }
            Ok(_) => return Err(format!("`{}` is not a plain path", entry.path)),
            Err(escape) => {
                return Err(format!(
                    "`{}` is not inside the project: {escape}",
                    entry.path
                ));
            }
        }
        if previous.is_some_and(|p| p >= entry.path.as_str()) {
            return Err(format!("`{}` is out of order or repeated", entry.path));
        }
        previous = Some(&entry.path);
        if let Some(link) = links.iter().find(|l| path.starts_with(l)) {
            return Err(format!(
                "`{}` is below the symlink `{}`",
                entry.path,
                link.display()
            ));
        }
        if matches!(entry.kind, OutputKind::Symlink { .. }) {
            links.push(path);
        }
    }
    Ok(())
}

/// Whether a symlink at `path` (relative to the project) with `target` points out of the
/// project: an absolute target, or one whose `..` parts climb above the project's root.
/// Decided by the text, as the planner decides paths.
fn link_leaves(path: &str, target: &str) -> bool {
    let parent = Path::new(path).parent().unwrap_or(Path::new(""));
    inputs::lexical(&parent.join(target)).is_err()
}

/// The first directory above `relative` (inside `root`) that is a symlink, if any: what is
/// below it lives wherever the link points.
fn symlink_above(root: &Path, relative: &Path) -> Option<PathBuf> {
    inputs::symlink_on_the_way(root, relative.parent()?)
}

fn ensure_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(workspace_err(parent)),
        None => Ok(()),
    }
}

/// Removes whatever is at `path` (file, link or directory tree); absence is fine.
pub fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// fdatasync of the file at `path`; one gone since it was written has nothing left to keep.
fn sync_data(path: &Path) -> io::Result<()> {
    match fs::File::open(path) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Starts writing `file`'s bytes to disk without waiting: the sync at the run's end, which
/// must wait for them, then finds the work under way or done.
fn start_writeback(file: &fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a hint on a descriptor we own; failure only loses the head start.
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// One `syncfs` makes every object written so far durable, instead of one fsync per file.
#[cfg(target_os = "linux")]
fn sync_filesystem(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(path)?;
    // SAFETY: syncfs only reads the descriptor, which outlives the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Without `syncfs` (macOS), `sync` flushes every file system: more than the store, but the
/// same promise, once per run.
#[cfg(not(target_os = "linux"))]
fn sync_filesystem(_path: &Path) -> io::Result<()> {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: OutputKind) -> OutputEntry {
        OutputEntry {
            path: path.to_owned(),
            kind,
        }
    }

    /// A store holding `bytes` as the object of one output file `out.bin`, and its record.
    fn stored(state: &Path, bytes: &[u8]) -> (Store, StageRecord) {
        let store = Store::new(state);
        let digest = blake3::hash(bytes).to_hex().to_string();
        let object = store.object_path(&digest);
        fs::create_dir_all(object.parent().unwrap()).unwrap();
        fs::write(&object, bytes).unwrap();
        fs::set_permissions(&object, fs::Permissions::from_mode(0o444)).unwrap();
        let outputs = vec![entry(
            "out.bin",
            OutputKind::File {
                digest,
                size: bytes.len() as u64,
                mode: 0o644,
            },
        )];
        let record = StageRecord {
            v: RECORD_VERSION,
            stage: "build".into(),
            fingerprint: "f".repeat(64),
            output_digest: outputs_digest(&outputs),
            outputs,
            exit_code: 0,
            duration_ms: 1,
            run_id: "run".into(),
            created_at: Timestamp::now(),
        };
        (store, record)
    }

    /// Flips a byte of a read-only file in place (its inode kept), as damage would.
    fn damage(path: &Path) {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = fs::read(path).unwrap();
        bytes[0] ^= 1;
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_restore_checks_each_object_itself_vouched_for_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let (project, state) = (dir.path().join("project"), dir.path().join("state"));
        fs::create_dir(&project).unwrap();
        let bytes = vec![7u8; 3 << 20];
        let (store, record) = stored(&state, &bytes);
        let OutputKind::File { digest, .. } = &record.outputs[0].kind else {
            unreachable!()
        };
        let object = store.object_path(digest);
        let cache = StatCache::load(&state.join("stat-cache"));
        let out = project.join("out.bin");
        // Just written, so no cache may vouch for it: hashed while it is copied.
        assert_eq!(store.restore(&project, &record, false, &cache).unwrap(), 1);
        assert_eq!(fs::read(&out).unwrap(), bytes);

        // Past the racy window, a restore's hash vouches for the object from then on.
        std::thread::sleep(std::time::Duration::from_millis(2_100));
        fs::remove_file(&out).unwrap();
        store.restore(&project, &record, false, &cache).unwrap();
        assert!(cache.vouched(&object).unwrap().is_some());

        // Changed in place after it was vouched for: its stamp moved, so it is hashed again
        // and refused, and nothing (no temp file either) is left in the workspace.
        damage(&object);
        fs::remove_file(&out).unwrap();
        let err = store.restore(&project, &record, false, &cache).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert_eq!(fs::read_dir(&project).unwrap().count(), 0);
    }

    #[test]
    fn a_link_leaves_when_its_target_climbs_above_the_project_or_is_absolute() {
        assert!(!link_leaves("out/vd", "../victim"));
        assert!(!link_leaves("out/a/b", "../../c"));
        assert!(link_leaves("out/vd", "../../victim"));
        assert!(link_leaves("out/etcdir", "/etc"));
    }

    #[test]
    fn a_record_holds_plain_paths_in_order_and_nothing_below_its_links() {
        let dir = || OutputKind::Dir { mode: 0o755 };
        let link = || OutputKind::Symlink {
            target: "../victim".into(),
        };
        assert!(check_paths(&[entry("out", dir()), entry("out/vd", link())]).is_ok());
        for bad in [
            vec![entry("../x", dir())],
            vec![entry("/tmp/x", dir())],
            vec![entry("out/./x", dir())],
            vec![entry("", dir())],
            vec![entry("b", dir()), entry("a", dir())],
            vec![entry("out/vd", link()), entry("out/vd/cfg", dir())],
        ] {
            assert!(check_paths(&bad).is_err(), "{bad:?}");
        }
    }
}
