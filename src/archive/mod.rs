//! The artifact archive: numbered builds, each a folder with a deterministic zip bundle and a
//! `manifest.json`, kept by retention, checked by `audit`, searched by `trace`.
//!
//! ```text
//! artifacts/.lock                 flock: numbering and pruning, one writer at a time
//! artifacts/.next                 the next build number (numbers are never reused)
//! artifacts/000042/manifest.json
//! artifacts/000042/<name>.zip
//! artifacts/.build.murphy-tmp-...  a build being written (not a build yet), with its
//!                                   writer's lock `.writer.lock` inside
//! artifacts/.deleting-000017      a build being pruned (not a build any more)
//! ```
//!
//! **Invariant:** a build appears whole or not at all: it is written under a temporary name,
//! fsynced, and renamed into place under the lock, which is also when it gets its number, so
//! numbers have no gaps that retention did not make. A prune renames every build it deletes
//! out of the way, and makes those renames durable with one fsync, before deleting any, so
//! a killed prune leaves each build intact or gone.
//!
//! **Invariant:** a temporary build folder is made, with its writer's lock taken, under the
//! archive's lock, and the cleaner runs under it too: so the cleaner sees a folder only with
//! its writer's lock held (live) or released or absent (the writer is gone), never a live
//! writer's folder in between.

pub mod audit;
pub mod bundle;
pub mod manifest;
pub mod retention;
pub mod sizes;

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::atomic_file;
use crate::change::Change;
use crate::inputs;
use manifest::{BuildManifest, Dated, FileEntry, MANIFEST_VERSION, ProvenanceInput, StageEntry};
use retention::{Candidate, Expired, Policy};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot access the archive at `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the archive's `files` {} matched no file; no build was made",
        unmatched_list(.0)
    )]
    Unmatched(Vec<String>),
    #[error(
        "`{}` is a symlink to `{}`, outside the project: the archive takes nothing from outside",
        path.display(),
        target.display()
    )]
    Outside { path: PathBuf, target: PathBuf },
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error("no build {build} in `{}` (see `murphy archive list`)", root.display())]
    NoSuchBuild { build: u64, root: PathBuf },
    #[error("cannot give the build a number")]
    Number(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("build {build}'s manifest is unreadable")]
    BadManifest {
        build: u64,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One build folder as found on disk: its manifest, if it reads.
#[derive(Debug)]
pub struct Build {
    pub number: u64,
    pub dir: PathBuf,
    pub manifest: Result<BuildManifest, String>,
}

#[derive(Debug, Clone)]
pub struct Archive {
    root: PathBuf,
}

/// Holds the archive's lock until dropped.
pub(crate) struct ArchiveLock {
    _file: File,
}

impl Archive {
    pub fn new(root: PathBuf) -> Archive {
        Archive { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn build_dir(&self, number: u64) -> PathBuf {
        self.root.join(format!("{number:06}"))
    }

    /// Waits for the archive's lock: writers and pruners take turns; readers need none, but
    /// see [`Archive::read_lock`].
    fn lock(&self) -> Result<ArchiveLock, ArchiveError> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a descriptor we own; blocks until the other writer is done.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&path)(io::Error::last_os_error()));
        }
        // Under the lock: its temp file must not look like a dead writer's to the cleaner.
        crate::atomic_file::ignore_all(&self.root).map_err(io_err(&self.root))?;
        Ok(ArchiveLock { _file: file })
    }

    /// Waits until no writer or pruner is halfway, and keeps them out until dropped, for a
    /// reader whose several looks at the archive must agree (`audit`). A shared lock, so
    /// readers do not wait for each other; opened read-only, so a read-only archive still
    /// reads. `None` when no writer ever made the lock file: then none is halfway either.
    pub(crate) fn read_lock(&self) -> Result<Option<ArchiveLock>, ArchiveError> {
        let path = self.root.join(".lock");
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        // SAFETY: flock on a descriptor we own; blocks until the writer is done.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) } != 0 {
            return Err(io_err(&path)(io::Error::last_os_error()));
        }
        Ok(Some(ArchiveLock { _file: file }))
    }

    /// Every build folder, oldest first. Temporary and half-deleted folders are not builds.
    pub fn builds(&self) -> Result<Vec<Build>, ArchiveError> {
        Ok((self.build_dirs()?.into_iter())
            .map(|(number, dir)| Build {
                number,
                manifest: read_manifest(&dir),
                dir,
            })
            .collect())
    }

    /// Every build folder's number and path, oldest first, no manifest read. The entry's
    /// type comes with the listing; only a symlink costs a `stat` (to see if it leads to a
    /// folder, as a build named by a link always did).
    fn build_dirs(&self) -> Result<Vec<(u64, PathBuf)>, ArchiveError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.root)(e)),
        };
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&self.root))?;
            let Some(number) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let is_dir = match entry.file_type() {
                Ok(t) if t.is_symlink() => entry.path().is_dir(),
                Ok(t) => t.is_dir(),
                Err(_) => entry.path().is_dir(),
            };
            if is_dir {
                dirs.push((number, entry.path()));
            }
        }
        dirs.sort_unstable_by_key(|(number, _)| *number);
        Ok(dirs)
    }

    pub fn build(&self, number: u64) -> Result<(PathBuf, BuildManifest), ArchiveError> {
        let dir = self.build_dir(number);
        if !dir.is_dir() {
            return Err(ArchiveError::NoSuchBuild {
                build: number,
                root: self.root.clone(),
            });
        }
        let text = fs::read(dir.join("manifest.json")).map_err(io_err(&dir))?;
        let manifest =
            serde_json::from_slice(&text).map_err(|source| ArchiveError::BadManifest {
                build: number,
                source,
            })?;
        Ok((dir, manifest))
    }

    /// Makes a build of `request`'s files, or returns the one this run's stage already made
    /// of the very same files (a resumed run never archives twice; a stage that runs again
    /// on resume because something changed makes a new build).
    pub fn create(&self, request: &Request<'_>) -> Result<Created, ArchiveError> {
        let builds = self.builds()?;
        let files = self.expand(request)?;
        if let Some((path, target)) = inputs::leading_outside(request.project_root, &files) {
            return Err(ArchiveError::Outside { path, target });
        }
        let mut entries = Vec::with_capacity(files.len());
        let mut file_entries = Vec::with_capacity(files.len());
        for relative in &files {
            let name = relative.to_string_lossy().into_owned();
            // Before anything is read: `../outside.txt` is not the project's to archive.
            bundle::check_name(&name)?;
            let source = request.project_root.join(relative);
            let (sha256, size) = bundle::sha256_file(&source).map_err(io_err(&source))?;
            file_entries.push(FileEntry {
                path: name.clone(),
                sha256,
                size,
            });
            entries.push(bundle::Entry { name, source });
        }
        if let Some(existing) = builds.iter().find(|b| {
            b.manifest.as_ref().is_ok_and(|m| {
                m.run_id == request.run_id && m.stage == request.stage && m.files == file_entries
            })
        }) {
            return Ok(Created {
                build: existing.number,
                pruned: self.prune(request.retention, Timestamp::now(), false, false),
            });
        }
        let (tmp, writer) = self.start_build()?;
        let result = self.write_and_commit(&tmp, entries, file_entries, request);
        drop(writer);
        match result {
            Ok(created) => {
                note_repeated_release(&builds, request, created.build);
                Ok(created)
            }
            Err(err) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(err)
            }
        }
    }

    /// Each of the request's `files` patterns expanded (each must match a file), minus
    /// anything inside the archive itself: `files: ["**"]` must not take earlier builds (or
    /// the archive's own bookkeeping) in.
    fn expand(&self, request: &Request<'_>) -> Result<BTreeSet<PathBuf>, ArchiveError> {
        let inside = match (
            std::path::absolute(&self.root),
            std::path::absolute(request.project_root),
        ) {
            (Ok(archive), Ok(project)) => Some((archive, project)),
            _ => None,
        };
        let mut files = BTreeSet::new();
        let mut unmatched = Vec::new();
        for pattern in &request.files {
            let mut matched = inputs::expand(
                request.project_root,
                std::slice::from_ref(pattern),
                request.state_dir,
            )
            .map_err(io_err(request.project_root))?;
            if let Some((archive, project)) = &inside {
                matched.retain(|f| !project.join(f).starts_with(archive));
            }
            if matched.is_empty() {
                unmatched.push(pattern.clone());
            }
            files.extend(matched);
        }
        if unmatched.is_empty() {
            Ok(files)
        } else {
            Err(ArchiveError::Unmatched(unmatched))
        }
    }

    /// Makes a temporary build folder and takes its writer's lock, both under the archive's
    /// lock: a cleaner (which holds that lock) then never finds the folder with its lock file
    /// made but not yet locked, which it would take for a dead writer's. The writer's lock is
    /// held while the build is written, so a cleaner (another host sharing the archive
    /// included) knows the folder is live without trusting a pid.
    fn start_build(&self) -> Result<(PathBuf, File), ArchiveError> {
        let _lock = self.lock()?;
        let tmp = self.root.join(atomic_file::temp_name("build"));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        match lock_file(&tmp.join(WRITER_LOCK), libc::LOCK_EX) {
            Ok(writer) => Ok((tmp, writer)),
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(io_err(&tmp)(e))
            }
        }
    }

    fn write_and_commit(
        &self,
        tmp: &Path,
        entries: Vec<bundle::Entry>,
        files: Vec<FileEntry>,
        request: &Request<'_>,
    ) -> Result<Created, ArchiveError> {
        // The bundle does not depend on the build number, so it is written outside the lock.
        let staged = tmp.join("bundle.zip");
        bundle::write(&staged, entries)?;
        let (bundle_sha256, bundle_size) = bundle::sha256_file(&staged).map_err(io_err(&staged))?;
        let stages = stage_entries(request)?;

        let _lock = self.lock()?;
        self.clean_leftovers();
        let number = match request.number {
            Some(claim) => claim(self.next_number()?).map_err(ArchiveError::Number)?,
            None => self.next_number()?,
        };
        let name = render_name(request, number);
        let bundle_name = format!("{name}.zip");
        fs::rename(&staged, tmp.join(&bundle_name)).map_err(io_err(tmp))?;
        let change = request.change;
        let version = change.version.as_ref();
        let git = change.git.as_ref();
        let finished = Timestamp::now();
        let provenance = manifest::provenance(&ProvenanceInput {
            files: &files,
            stages: &stages,
            pipeline_file: request.pipeline_file,
            stage: request.stage,
            run_id: request.run_id,
            trigger: change.trigger,
            version: version.map(|v| v.text.as_str()),
            commit: git.and_then(|g| g.sha.as_deref()),
            remote: git.and_then(|g| g.remote.as_deref()),
            project: request.project_root,
            started_at: request.started_at,
            finished_at: finished,
        });
        let manifest = BuildManifest {
            v: MANIFEST_VERSION,
            build: number,
            name,
            bundle: bundle_name,
            bundle_sha256,
            bundle_size,
            created_at: finished,
            pipeline: request.pipeline.to_owned(),
            run_id: request.run_id.to_owned(),
            stage: request.stage.to_owned(),
            trigger: change.trigger,
            version: version.map(|v| v.text.clone()),
            prerelease: version.map(|v| v.prerelease),
            commit: git.and_then(|g| g.sha.clone()),
            branch: change.branch.clone(),
            tag: change.tag.clone(),
            links: change.links(),
            description: change
                .description
                .as_deref()
                .map(|d| crate::secrets::redact(d).into_owned()),
            files,
            stages,
            provenance,
        };
        let path = tmp.join("manifest.json");
        let bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| io_err(&path)(io::Error::other(e)))?;
        // An archive is for others (a web server, a release page): its files are not private.
        atomic_file::write_shared(&path, &bytes).map_err(io_err(&path))?;
        atomic_file::sync_dir(tmp).map_err(io_err(tmp))?;
        crate::crash::at("archive-staged", request.stage);
        // Not part of the build; the lock lives on in the open file until we are done.
        fs::remove_file(tmp.join(WRITER_LOCK)).map_err(io_err(tmp))?;
        let dir = self.build_dir(number);
        fs::rename(tmp, &dir).map_err(io_err(&dir))?;
        let next = self.root.join(".next");
        atomic_file::write_shared(&next, (number + 1).to_string().as_bytes())
            .map_err(io_err(&next))?;
        Ok(Created {
            build: number,
            pruned: self.prune_locked(request.retention, Timestamp::now(), false),
        })
    }

    /// The highest build number ever given out, if any (from `.next`).
    pub fn last_given(&self) -> Option<u64> {
        fs::read_to_string(self.root.join(".next"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .and_then(|next| next.checked_sub(1))
            .filter(|n| *n > 0)
    }

    /// One more than any number ever given out (`.next`) or any build present.
    fn next_number(&self) -> Result<u64, ArchiveError> {
        let recorded = fs::read_to_string(self.root.join(".next"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(1);
        let present = self.build_dirs()?.last().map_or(1, |(n, _)| n + 1);
        Ok(recorded.max(present))
    }

    /// Finishes what a killed writer or pruner left: half-deleted builds go, temporary
    /// folders whose writer is gone go, and temp files go (`.next`'s, written only under
    /// this lock, so their writer is gone). Called with the lock held.
    fn clean_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let gone = if name.starts_with(&format!(".build{}", atomic_file::TEMP_MARKER)) {
                writer_gone(&entry.path())
            } else {
                name.starts_with(".deleting-") || atomic_file::is_temp(&entry.file_name())
            };
            if gone {
                crate::store::remove_any(&entry.path());
            }
        }
    }

    /// Deletes the builds retention lets go (see [`retention::expired`]), each atomically.
    pub fn prune(
        &self,
        policy: Policy,
        now: Timestamp,
        include_releases: bool,
        dry_run: bool,
    ) -> Result<Vec<Expired>, ArchiveError> {
        if dry_run {
            return self.expired(policy, now, include_releases);
        }
        let _lock = self.lock()?;
        self.prune_locked(policy, now, include_releases)
    }

    /// [`Archive::prune`] with the lock already held.
    fn prune_locked(
        &self,
        policy: Policy,
        now: Timestamp,
        include_releases: bool,
    ) -> Result<Vec<Expired>, ArchiveError> {
        let expired = self.expired(policy, now, include_releases)?;
        self.clean_leftovers();
        // Every build goes out of the way first, and one fsync of the root makes all those
        // renames durable before anything inside is deleted: a power cut cannot bring back
        // a build half-deleted, and a kill leaves each build whole or renamed away (which the
        // next archive or prune finishes). One fsync for the lot, not one per build.
        let doomed: Vec<(u64, PathBuf)> = (expired.iter())
            .map(|e| (e.build, self.root.join(format!(".deleting-{:06}", e.build))))
            .collect();
        for (build, to) in &doomed {
            let dir = self.build_dir(*build);
            fs::rename(&dir, to).map_err(io_err(&dir))?;
        }
        if !doomed.is_empty() {
            atomic_file::sync_dir(&self.root).map_err(io_err(&self.root))?;
        }
        for (build, dir) in &doomed {
            crate::crash::at("prune-renamed", &build.to_string());
            fs::remove_dir_all(dir).map_err(io_err(dir))?;
        }
        Ok(expired)
    }

    /// The builds retention lets go at `now`. Builds with unreadable manifests are never
    /// deleted: `audit` reports them, and a person decides.
    pub fn expired(
        &self,
        policy: Policy,
        now: Timestamp,
        include_releases: bool,
    ) -> Result<Vec<Expired>, ArchiveError> {
        let dated: Vec<(u64, Dated)> = (self.build_dirs()?.into_iter())
            .filter_map(|(number, dir)| Some((number, read_dated(&dir)?)))
            .collect();
        let readable = (dated.iter()).map(|(n, d)| (*n, d.created_at, d.release()));
        Ok(retention::expired(
            &candidates(readable),
            policy,
            now,
            include_releases,
        ))
    }
}

/// What retention needs of builds with readable manifests (number, date, release), oldest
/// first. Only the first build of a release pins it: a tag run repeated for the same version
/// makes an ordinary build, or each retry would pin one more for good.
pub fn candidates<'m>(
    builds: impl IntoIterator<Item = (u64, Timestamp, Option<manifest::Release<'m>>)>,
) -> Vec<Candidate> {
    let mut builds: Vec<_> = builds.into_iter().collect();
    builds.sort_by_key(|(number, ..)| *number);
    let mut released = HashSet::new();
    builds
        .into_iter()
        .map(|(number, created_at, release)| Candidate {
            build: number,
            created_at,
            release: release.is_some_and(|r| released.insert(r)),
        })
        .collect()
}

/// The lock a writer holds inside its temporary build folder.
const WRITER_LOCK: &str = ".writer.lock";

/// Whether the writer of the temporary build folder `dir` is gone. Called under the archive's
/// lock, under which every such folder was made with its lock file already locked: a lock
/// nobody holds (a kill releases it) or no lock file at all (a kill just before the commit's
/// rename) means the writer is gone.
fn writer_gone(dir: &Path) -> bool {
    match File::open(dir.join(WRITER_LOCK)) {
        // SAFETY: flock on a descriptor we own; dropped right after.
        Ok(f) => unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 },
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// Says so when build `number` is of a release an earlier build already pins: the new build is
/// kept like any other, not pinned (see [`Archive::expired`]).
fn note_repeated_release(builds: &[Build], request: &Request<'_>, number: u64) {
    let change = request.change;
    if change.trigger != crate::trigger::Trigger::Tag {
        return;
    }
    let release = manifest::Release {
        pipeline: request.pipeline,
        stage: request.stage,
        version: change
            .version
            .as_ref()
            .map(|v| v.text.as_str())
            .or(change.tag.as_deref()),
    };
    let first = builds.iter().find(|b| {
        b.manifest
            .as_ref()
            .is_ok_and(|m| m.release() == Some(release))
    });
    if let Some(first) = first {
        tracing::warn!(
            "build {number} repeats release {} of stage `{}`: build {} stays the pinned one, and retention keeps build {number} like any other",
            release.version.unwrap_or("(no version)"),
            request.stage,
            first.number
        );
    }
}

/// `a`, or `entries `a`, `b``: the patterns that matched no file.
fn unmatched_list(patterns: &[String]) -> String {
    let quoted: Vec<String> = patterns.iter().map(|p| format!("`{p}`")).collect();
    match quoted.as_slice() {
        [one] => format!("entry {one}"),
        many => format!("entries {}", many.join(", ")),
    }
}

/// Opens (creating) `path` and takes a `flock` of `kind` on it.
fn lock_file(path: &Path, kind: libc::c_int) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), kind) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// What retention reads of the manifest in `dir`, if it reads whole and is of this version
/// (`None` otherwise, as [`read_manifest`] would have it an error).
fn read_dated(dir: &Path) -> Option<Dated> {
    let bytes = fs::read(dir.join("manifest.json")).ok()?;
    let dated: Dated = serde_json::from_slice(&bytes).ok()?;
    (dated.v == MANIFEST_VERSION).then_some(dated)
}

fn read_manifest(dir: &Path) -> Result<BuildManifest, String> {
    let bytes = fs::read(dir.join("manifest.json")).map_err(|e| e.to_string())?;
    let manifest: BuildManifest = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if manifest.v != MANIFEST_VERSION {
        return Err(format!(
            "manifest version {} is not {MANIFEST_VERSION}",
            manifest.v
        ));
    }
    Ok(manifest)
}

/// What a stage asks to archive, and the run it belongs to.
pub struct Request<'a> {
    pub project_root: &'a Path,
    pub state_dir: &'a Path,
    pub pipeline: &'a str,
    pub pipeline_file: &'a str,
    pub stage: &'a str,
    pub run_id: &'a str,
    pub started_at: Timestamp,
    pub change: &'a Change,
    pub name_template: &'a str,
    pub files: Vec<String>,
    /// The stages that led to this one, with their states in this run and input globs.
    pub chain: Vec<ChainStage>,
    /// Applied as the build is put in place, under the same hold of the lock: no one who
    /// takes the lock ever sees the archive over its limit.
    pub retention: Policy,
    /// Where a new build's number comes from when it is not this archive alone (the shared
    /// store's claim): given the local next number, under the lock, only when a build is made.
    pub number: Option<&'a NumberSource<'a>>,
}

/// Gives a new build its number, given the one the local archive would give (never less).
pub type NumberSource<'a> =
    dyn Fn(u64) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> + 'a;

/// A build made (or found made by this run's stage before), and what retention removed.
pub struct Created {
    pub build: u64,
    /// A failed prune leaves the build safe; the next archive or prune tries again.
    pub pruned: Result<Vec<Expired>, ArchiveError>,
}

pub struct ChainStage {
    pub name: String,
    pub state: String,
    pub needs: Vec<String>,
    pub inputs: Vec<String>,
}

/// The chain's stages with their input files hashed (SHA-256: these digests are for others).
fn stage_entries(request: &Request<'_>) -> Result<Vec<StageEntry>, ArchiveError> {
    let mut out = Vec::with_capacity(request.chain.len());
    for stage in &request.chain {
        let mut inputs = Vec::new();
        // The files its fingerprint covers: what git ignores is no input.
        for relative in
            inputs::expand_inputs(request.project_root, &stage.inputs, request.state_dir, None)
                .map_err(io_err(request.project_root))?
                .files
        {
            let path = request.project_root.join(&relative);
            let (sha256, size) = bundle::sha256_file(&path).map_err(io_err(&path))?;
            inputs.push(FileEntry {
                path: relative.to_string_lossy().into_owned(),
                sha256,
                size,
            });
        }
        out.push(StageEntry {
            name: stage.name.clone(),
            state: stage.state.clone(),
            needs: stage.needs.clone(),
            inputs,
        });
    }
    Ok(out)
}

/// Fills the name template's placeholders; an unknown version renders as `dev`.
fn render_name(request: &Request<'_>, build: u64) -> String {
    let change = request.change;
    let sha = change
        .git
        .as_ref()
        .and_then(|g| g.sha.as_deref())
        .map(|s| s.get(..12).unwrap_or(s).to_owned())
        .unwrap_or_else(|| "nosha".into());
    let name = request
        .name_template
        .replace("{name}", request.pipeline)
        .replace(
            "{version}",
            change.version.as_ref().map_or("dev", |v| v.text.as_str()),
        )
        .replace("{build}", &build.to_string())
        .replace("{sha}", &sha)
        .replace("{date}", &request.started_at.strftime("%Y%m%d").to_string())
        .replace("{trigger}", change.trigger.name());
    // A name is a file name: nothing in it may climb out of the build folder.
    name.replace(['/', '\\', '\0'], "_")
}
