//! The cache of repositories that pipelines include YAML from: one bare repository per URL in
//! `<state>/includes`, fetched by libgit2 for local paths and `file://` and by the `git`
//! command for everything else (murphy's libgit2 has no https or ssh), read by libgit2.
//!
//! A relative path is taken from the current directory and keyed as written: callers resolve
//! it against the pipeline file first, or two projects' `../shared` would share one entry.
//!
//! **Invariant:** a process works in `<key>.git` only while it holds the `flock` on
//! `<key>.lock`, so a git lock file found inside under that `flock` was left by a killed
//! fetch and is removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use git2::{AutotagOption, ErrorCode, FetchOptions, FetchPrune, ObjectType, Oid, Repository};

use crate::atomic_file::{TEMP_MARKER, sync_dir, temp_name};
use crate::git::strip_credentials;

/// Forced, so that a branch moved by a force-push or a re-pointed tag is seen.
const REFSPECS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

/// Shorter than this, a hex string says too little to be taken for a commit id.
const SHORTEST_ABBREV: usize = 7;

/// Environment that would point the `git` command at another repository than the cache's.
const GIT_REPO_VARS: [&str; 7] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
];

/// The repositories includes come from, fetched into `<state>/includes`.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// Every `url` here has had its credentials stripped.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot use `{}` of the include cache for `{url}`", path.display())]
    Io {
        url: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot use the cached repository of `{url}` at `{}`: {message}; delete it and murphy fetches it again",
        path.display()
    )]
    Cache {
        url: String,
        path: PathBuf,
        message: String,
    },
    #[error("cannot fetch `{url}`: {message}")]
    Fetch { url: String, message: String },
    #[error(
        "cannot fetch `{url}`: the `git` command is not installed or not on `PATH` (murphy fetches URLs other than local paths and `file://` with it)"
    )]
    GitMissing { url: String },
    #[error("cannot fetch `{url}`: `git fetch` failed ({status}): {stderr}")]
    GitFailed {
        url: String,
        status: String,
        stderr: String,
    },
    #[error("cannot fetch `{url}`: a URL starting with `-` would be read as an option of `git`")]
    OptionLike { url: String },
    #[error("ref `{reference}` is neither a tag, a branch nor a commit of `{url}`")]
    UnknownRef { url: String, reference: String },
    #[error(
        "ref `{reference}` is ambiguous in `{url}`: more than one object id starts with it; give more digits"
    )]
    AmbiguousRef { url: String, reference: String },
    #[error("ref `{reference}` of `{url}` points at a {kind}, not a commit")]
    NotACommit {
        url: String,
        reference: String,
        kind: &'static str,
    },
    #[error("`{commit}` is not a full commit id (40 hex digits) of `{url}`")]
    BadCommitId { url: String, commit: String },
    #[error("commit `{commit}` is not in `{url}`, even after a fetch (was it force-pushed away?)")]
    MissingCommit { url: String, commit: String },
    #[error("there is no file `{file}` at commit `{}` of `{url}`", super::short(.commit))]
    MissingFile {
        url: String,
        file: String,
        commit: String,
    },
    #[error("`{file}` at commit `{}` of `{url}` is a {kind}, not a file", super::short(.commit))]
    NotAFile {
        url: String,
        file: String,
        commit: String,
        kind: &'static str,
    },
}

impl Cache {
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    /// The cache of the state directory `state`: `<state>/includes`.
    pub fn of_state_dir(state: &Path) -> Cache {
        Cache::new(state.join("includes"))
    }

    /// Fetches `url` and resolves `reference` (a tag, a branch, or a full or abbreviated commit
    /// id) to a full 40-hex commit id. Always fetches: this is how pins move forward.
    pub fn resolve(&self, url: &str, reference: &str) -> Result<String, FetchError> {
        let shown = strip_credentials(url);
        let (path, lock) = self.prepare(url, &shown)?;
        fetch(url, &shown, &path, &lock)?;
        let repo = open(&path, &shown)?;
        find_commit(&repo, reference, &shown).map(|oid| oid.to_string())
    }

    /// The bytes of `file` (a repository-relative path, `/`-separated) at `commit`. Fetches
    /// only when the commit is not in the cache yet, so a locked pipeline works offline once
    /// fetched.
    pub fn read(&self, url: &str, commit: &str, file: &str) -> Result<Vec<u8>, FetchError> {
        let shown = strip_credentials(url);
        // `Oid::from_str` pads a short id with zeros: only a full one names the pinned commit.
        let oid = Some(commit)
            .filter(|c| c.len() == 40 && is_hex(c))
            .and_then(|c| Oid::from_str(c).ok())
            .ok_or_else(|| FetchError::BadCommitId {
                url: shown.clone(),
                commit: commit.to_owned(),
            })?;
        let (path, lock) = self.prepare(url, &shown)?;
        let mut repo = open(&path, &shown)?;
        if !contains(&repo, oid, &path, &shown)? {
            tracing::debug!(url = %shown, %commit, "commit not cached yet");
            // Reopened after the fetch: the `git` command may have added packs behind its back.
            drop(repo);
            fetch(url, &shown, &path, &lock)?;
            repo = open(&path, &shown)?;
            if !contains(&repo, oid, &path, &shown)? {
                return Err(FetchError::MissingCommit {
                    url: shown,
                    commit: oid.to_string(),
                });
            }
        }
        read_file(&repo, oid, file, &path, &shown)
    }

    /// Locks the repository of `url` and creates it if it is new. The lock must be held for as
    /// long as the returned path is used.
    fn prepare(&self, url: &str, shown: &str) -> Result<(PathBuf, RepoLock), FetchError> {
        let key = key(url);
        fs::create_dir_all(&self.dir).map_err(io_error(&self.dir, shown))?;
        let lock = RepoLock::acquire(&self.dir.join(format!("{key}.lock")), shown)?;
        let path = self.dir.join(format!("{key}.git"));
        remove_abandoned_inits(&self.dir, &format!("{key}.git"));
        if !path.try_exists().map_err(io_error(&path, shown))? {
            init(&self.dir, &path, shown)?;
        }
        Ok((path, lock))
    }
}

/// Names the cache repository of `url`; credentials count, as the URL is taken as given.
fn key(url: &str) -> String {
    let hash = blake3::hash(url.as_bytes()).to_hex();
    hash[..16].to_owned()
}

/// An exclusive `flock` on `<key>.lock`: two murphys must not fetch into one repository at
/// once. The kernel drops it when the file closes, kill -9 included.
struct RepoLock {
    file: File,
}

impl RepoLock {
    fn acquire(path: &Path, shown: &str) -> Result<RepoLock, FetchError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_error(path, shown))?;
        let mut flags = libc::LOCK_EX | libc::LOCK_NB;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), flags) } == 0 {
                return Ok(RepoLock { file });
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) if flags & libc::LOCK_NB != 0 => {
                    tracing::debug!(url = %shown, "waiting for another murphy using its repository");
                    flags = libc::LOCK_EX;
                }
                Some(libc::EINTR) => {}
                _ => return Err(io_error(path, shown)(err)),
            }
        }
    }
}

/// A kill -9 between `init_bare` and the rename leaves only a temp directory, which the next
/// holder of the lock removes. Best effort: a leftover costs disk space, nothing else.
fn remove_abandoned_inits(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_MARKER}");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            tracing::debug!(path = %path.display(), "removing an abandoned cache repository");
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::debug!(path = %path.display(), error = %e, "cannot remove it");
            }
        }
    }
}

/// Initialises beside `path` and renames into place, so `path` is a whole repository or none.
fn init(dir: &Path, path: &Path, shown: &str) -> Result<(), FetchError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(temp_name(&name));
    let result = Repository::init_bare(&tmp)
        .map_err(|e| FetchError::Cache {
            url: shown.to_owned(),
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
        .and_then(|repo| {
            drop(repo);
            fs::rename(&tmp, path).map_err(io_error(path, shown))?;
            sync_dir(dir).map_err(io_error(dir, shown))
        });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn open(path: &Path, shown: &str) -> Result<Repository, FetchError> {
    Repository::open_bare(path).map_err(cache_error(path, shown))
}

/// Fetches every branch and tag of `url` into the repository at `path`, pruning those gone
/// upstream so that a deleted branch no longer resolves.
fn fetch(url: &str, shown: &str, path: &Path, lock: &RepoLock) -> Result<(), FetchError> {
    remove_stale_git_locks(path, shown)?;
    if is_local(url) {
        tracing::debug!(url = %shown, repo = %path.display(), "fetching with libgit2");
        fetch_with_libgit2(url, shown, path)
    } else {
        tracing::debug!(url = %shown, repo = %path.display(), "fetching with the git command");
        fetch_with_git(url, shown, path, lock)
    }
}

/// Removes git's `*.lock` files, which a fetch killed midway leaves and which would make every
/// later fetch fail. Safe only under the `flock`: then no git process is at work in `path`.
/// `objects/` is not walked: it holds no ref or config locks, and can be large.
fn remove_stale_git_locks(path: &Path, shown: &str) -> Result<(), FetchError> {
    let walk = walkdir::WalkDir::new(path)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == "objects"));
    for entry in walk {
        let entry = entry.map_err(|e| {
            let at = e.path().unwrap_or(path).to_owned();
            io_error(&at, shown)(e.into())
        })?;
        if entry.file_type().is_file() && entry.file_name().to_string_lossy().ends_with(".lock") {
            tracing::debug!(path = %entry.path().display(), "removing a stale git lock file");
            fs::remove_file(entry.path()).map_err(io_error(entry.path(), shown))?;
        }
    }
    Ok(())
}

/// Whether libgit2 can fetch `url` itself: a `file://` URL or a path. As git reads URLs, a
/// colon before any slash makes a path the scp-like `host:path`, which is ssh.
pub(super) fn is_local(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme.eq_ignore_ascii_case("file");
    }
    match url.find(':') {
        None => true,
        Some(colon) => url[..colon].contains('/'),
    }
}

fn fetch_with_libgit2(url: &str, shown: &str, path: &Path) -> Result<(), FetchError> {
    // libgit2 takes a path that does not exist for a URL and calls its protocol unsupported.
    if !url.contains("://") && !Path::new(url).exists() {
        return Err(FetchError::Fetch {
            url: shown.to_owned(),
            message: "there is no such directory".to_owned(),
        });
    }
    let repo = open(path, shown)?;
    let failed = |e: git2::Error| FetchError::Fetch {
        url: shown.to_owned(),
        message: redact(e.message(), url),
    };
    let mut remote = repo.remote_anonymous(url).map_err(failed)?;
    let mut options = FetchOptions::new();
    options
        .download_tags(AutotagOption::None)
        .prune(FetchPrune::On)
        .update_fetchhead(false);
    remote
        .fetch(&REFSPECS, Some(&mut options), None)
        .map_err(failed)
}

/// Fetches as cargo's `net.git-fetch-with-cli` does, so the user's credential helpers, ssh
/// agent, proxies and `insteadOf` rules apply. git's stderr goes to a file, not a pipe: an ssh
/// master left running in the background would hold a pipe open and hang the read.
fn fetch_with_git(url: &str, shown: &str, path: &Path, lock: &RepoLock) -> Result<(), FetchError> {
    if url.starts_with('-') {
        return Err(FetchError::OptionLike {
            url: shown.to_owned(),
        });
    }
    let log = path.with_extension("stderr");
    let mut stderr = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&log)
        .map_err(io_error(&log, shown))?;
    let mut git = Command::new("git");
    // `--git-dir` rather than `-C`: `safe.bareRepository=explicit` refuses a discovered bare
    // repository. No automatic gc: it would run on in the background, past our `flock`.
    git.arg(format!("--git-dir={}", path.display()))
        .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"])
        .args(["fetch", "--quiet", "--force", "--prune"])
        .arg(url)
        .args(REFSPECS)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr.try_clone().map_err(io_error(&log, shown))?);
    for var in GIT_REPO_VARS {
        git.env_remove(var);
    }
    // ssh asks for host keys and passphrases on the terminal, not through git's prompt: with
    // no ssh set up by the user, let it fail rather than wait for an answer nobody gives.
    if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
        git.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    // `git` holds the lock too, through an inherited descriptor: if murphy is killed while git
    // fetches, the next murphy waits for git instead of removing its live lock files.
    let fd = lock.file.as_raw_fd();
    // SAFETY: between fork and exec only `fcntl`, which is async-signal-safe, runs.
    unsafe {
        git.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags == -1 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = git.status();
    let mut output = Vec::new();
    let read = stderr
        .seek(SeekFrom::Start(0))
        .and_then(|_| stderr.read_to_end(&mut output));
    drop(stderr);
    let _ = fs::remove_file(&log);
    let status = match status {
        Ok(status) => status,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FetchError::GitMissing {
                url: shown.to_owned(),
            });
        }
        Err(e) => {
            return Err(FetchError::Fetch {
                url: shown.to_owned(),
                message: format!("cannot run `git`: {e}"),
            });
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output);
    let stderr = match (read, text.trim()) {
        (Err(e), _) => format!("its output cannot be read back: {e}"),
        (Ok(_), "") => "git printed nothing".to_owned(),
        (Ok(_), text) => redact(text, url),
    };
    Err(FetchError::GitFailed {
        url: shown.to_owned(),
        status: status.to_string(),
        stderr,
    })
}

/// Removes the credentials of `url` from `text`: git hides them in most messages, not all.
fn redact(text: &str, url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return text.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if !userinfo.is_empty() => text.replace(&format!("{userinfo}@"), ""),
        _ => text.to_owned(),
    }
}

/// Resolves as git does: a full id, then a tag, then a branch, then an abbreviated id.
fn find_commit(repo: &Repository, reference: &str, shown: &str) -> Result<Oid, FetchError> {
    let path = repo.path();
    let not_a_commit = |kind: ObjectType| FetchError::NotACommit {
        url: shown.to_owned(),
        reference: reference.to_owned(),
        kind: kind.str(),
    };
    if reference.len() == 40 && is_hex(reference) {
        let oid = Oid::from_str(reference).map_err(cache_error(path, shown))?;
        return match repo.find_object(oid, None) {
            Ok(object) => match object.kind() {
                Some(ObjectType::Commit) => Ok(oid),
                kind => Err(not_a_commit(kind.unwrap_or(ObjectType::Any))),
            },
            Err(e) if e.code() == ErrorCode::NotFound => Err(FetchError::MissingCommit {
                url: shown.to_owned(),
                commit: oid.to_string(),
            }),
            Err(e) => Err(cache_error(path, shown)(e)),
        };
    }
    for name in [
        format!("refs/tags/{reference}"),
        format!("refs/remotes/origin/{reference}"),
    ] {
        match repo.find_reference(&name) {
            Ok(found) => {
                // An annotated tag is peeled to what it tags.
                let object = found
                    .peel(ObjectType::Any)
                    .map_err(cache_error(path, shown))?;
                return match object.kind() {
                    Some(ObjectType::Commit) => Ok(object.id()),
                    kind => Err(not_a_commit(kind.unwrap_or(ObjectType::Any))),
                };
            }
            // A reference such as `a..b` is no valid ref name, yet may still be a commit.
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => {}
            Err(e) => return Err(cache_error(path, shown)(e)),
        }
    }
    if reference.len() >= SHORTEST_ABBREV && is_hex(reference) {
        match repo.find_commit_by_prefix(reference) {
            Ok(commit) => return Ok(commit.id()),
            Err(e) if e.code() == ErrorCode::Ambiguous => {
                return Err(FetchError::AmbiguousRef {
                    url: shown.to_owned(),
                    reference: reference.to_owned(),
                });
            }
            // Not found, or found but not a commit: either way not a commit of this repository.
            Err(_) => {}
        }
    }
    Err(FetchError::UnknownRef {
        url: shown.to_owned(),
        reference: reference.to_owned(),
    })
}

fn contains(repo: &Repository, oid: Oid, path: &Path, shown: &str) -> Result<bool, FetchError> {
    Ok(repo.odb().map_err(cache_error(path, shown))?.exists(oid))
}

fn read_file(
    repo: &Repository,
    oid: Oid,
    file: &str,
    path: &Path,
    shown: &str,
) -> Result<Vec<u8>, FetchError> {
    let commit = repo.find_commit(oid).map_err(|_| FetchError::NotACommit {
        url: shown.to_owned(),
        reference: oid.to_string(),
        kind: repo
            .find_object(oid, None)
            .ok()
            .and_then(|o| o.kind())
            .map_or("object", |k| k.str()),
    })?;
    let tree = commit.tree().map_err(cache_error(path, shown))?;
    let not_a_file = |kind| FetchError::NotAFile {
        url: shown.to_owned(),
        file: file.to_owned(),
        commit: oid.to_string(),
        kind,
    };
    // A path libgit2 cannot walk (empty, `..`, a leading `/`) names no file either.
    let Ok(entry) = tree.get_path(Path::new(file)) else {
        return Err(FetchError::MissingFile {
            url: shown.to_owned(),
            file: file.to_owned(),
            commit: oid.to_string(),
        });
    };
    match (entry.kind(), entry.filemode()) {
        // The bytes of a symbolic link are its target's name, not a pipeline.
        (Some(ObjectType::Blob), 0o120000) => Err(not_a_file("symbolic link")),
        (Some(ObjectType::Blob), _) => {
            let blob = repo
                .find_blob(entry.id())
                .map_err(cache_error(path, shown))?;
            Ok(blob.content().to_vec())
        }
        (Some(ObjectType::Tree), _) => Err(not_a_file("directory")),
        (Some(ObjectType::Commit), _) => Err(not_a_file("submodule")),
        _ => Err(not_a_file("tree entry")),
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn io_error<'a>(path: &'a Path, shown: &'a str) -> impl Fn(io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        url: shown.to_owned(),
        path: path.to_owned(),
        source,
    }
}

fn cache_error<'a>(path: &'a Path, shown: &'a str) -> impl Fn(git2::Error) -> FetchError + 'a {
    move |e| FetchError::Cache {
        url: shown.to_owned(),
        path: path.to_owned(),
        message: e.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use git2::Signature;
    use tempfile::TempDir;

    /// A repository to include from, with a work tree to commit files from.
    struct Origin {
        dir: TempDir,
        repo: Repository,
    }

    impl Origin {
        fn new() -> Origin {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init(dir.path()).unwrap();
            Origin { dir, repo }
        }

        fn path(&self) -> String {
            self.dir.path().display().to_string()
        }

        fn file_url(&self) -> String {
            format!("file://{}", self.dir.path().display())
        }

        /// Commits `files` on `branch` (on top of it, if it exists) and returns the commit id.
        fn commit(&self, branch: &str, files: &[(&str, &str)]) -> String {
            let mut index = self.repo.index().unwrap();
            for (name, content) in files {
                let path = self.dir.path().join(name);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, content).unwrap();
                index.add_path(Path::new(name)).unwrap();
            }
            index.write().unwrap();
            let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
            let refname = format!("refs/heads/{branch}");
            let parent = self
                .repo
                .find_reference(&refname)
                .ok()
                .map(|r| r.peel_to_commit().unwrap());
            let sig = Signature::now("t", "t@example.com").unwrap();
            let parents: Vec<&git2::Commit> = parent.iter().collect();
            self.repo
                .commit(Some(&refname), &sig, &sig, "change", &tree, &parents)
                .unwrap()
                .to_string()
        }

        fn tag(&self, name: &str, commit: &str, annotated: bool) {
            let object = self
                .repo
                .find_object(Oid::from_str(commit).unwrap(), None)
                .unwrap();
            if annotated {
                let sig = Signature::now("t", "t@example.com").unwrap();
                self.repo.tag(name, &object, &sig, "release", true).unwrap();
            } else {
                self.repo.tag_lightweight(name, &object, true).unwrap();
            }
        }
    }

    fn cache() -> (TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("includes"));
        (dir, cache)
    }

    const FILE: &str = "rust/base.yml";

    #[test]
    fn resolves_a_branch_a_tag_and_full_and_abbreviated_commits() {
        let origin = Origin::new();
        let first = origin.commit("main", &[(FILE, "one")]);
        origin.tag("v1", &first, true);
        let second = origin.commit("main", &[(FILE, "two")]);
        let (_state, cache) = cache();
        let url = origin.file_url();
        assert_eq!(cache.resolve(&url, "main").unwrap(), second);
        assert_eq!(cache.resolve(&url, "v1").unwrap(), first);
        assert_eq!(cache.resolve(&url, &first).unwrap(), first);
        assert_eq!(cache.resolve(&url, &first[..8]).unwrap(), first);
        assert_eq!(
            cache.resolve(&url, &first.to_uppercase()[..10]).unwrap(),
            first
        );

        let hash = blake3::hash(url.as_bytes()).to_hex().to_string();
        let repo = cache.dir.join(format!("{}.git", &hash[..16]));
        assert!(Repository::open_bare(&repo).unwrap().is_bare());
        assert!(cache.dir.join(format!("{}.lock", &hash[..16])).is_file());
    }

    #[test]
    fn a_moved_branch_moves_the_pin_and_old_commits_stay_readable_offline() {
        let origin = Origin::new();
        let old = origin.commit("main", &[(FILE, "one")]);
        let (_state, cache) = cache();
        let url = origin.path();
        assert_eq!(cache.resolve(&url, "main").unwrap(), old);
        let new = origin.commit("main", &[(FILE, "two")]);
        assert_eq!(cache.resolve(&url, "main").unwrap(), new);
        assert_eq!(cache.read(&url, &old, FILE).unwrap(), b"one");
        assert_eq!(cache.read(&url, &new, FILE).unwrap(), b"two");

        drop(origin);
        assert_eq!(cache.read(&url, &old, FILE).unwrap(), b"one");
        assert!(
            cache.resolve(&url, "main").is_err(),
            "resolve always fetches"
        );
    }

    #[test]
    fn read_fetches_a_commit_not_cached_yet() {
        let origin = Origin::new();
        let first = origin.commit("main", &[(FILE, "one")]);
        let (_state, cache) = cache();
        let url = origin.file_url();
        assert_eq!(cache.read(&url, &first, FILE).unwrap(), b"one");
        let second = origin.commit("main", &[(FILE, "two")]);
        assert_eq!(cache.read(&url, &second, FILE).unwrap(), b"two");
    }

    #[test]
    fn a_repointed_tag_is_followed() {
        let origin = Origin::new();
        let first = origin.commit("main", &[(FILE, "one")]);
        origin.tag("v3", &first, false);
        let (_state, cache) = cache();
        let url = origin.file_url();
        assert_eq!(cache.resolve(&url, "v3").unwrap(), first);
        let second = origin.commit("main", &[(FILE, "two")]);
        origin.tag("v3", &second, false);
        assert_eq!(cache.resolve(&url, "v3").unwrap(), second);
    }

    #[test]
    fn a_deleted_branch_no_longer_resolves() {
        let origin = Origin::new();
        origin.commit("main", &[(FILE, "one")]);
        origin.commit("feature", &[(FILE, "two")]);
        let (_state, cache) = cache();
        let url = origin.path();
        cache.resolve(&url, "feature").unwrap();
        origin
            .repo
            .find_reference("refs/heads/feature")
            .unwrap()
            .delete()
            .unwrap();
        let err = cache.resolve(&url, "feature").unwrap_err();
        assert!(matches!(err, FetchError::UnknownRef { .. }), "{err}");
    }

    #[test]
    fn unknown_refs_and_missing_files_are_named() {
        let origin = Origin::new();
        let commit = origin.commit("main", &[(FILE, "one")]);
        let (_state, cache) = cache();
        let url = origin.path();
        assert_eq!(
            cache.resolve(&url, "v9").unwrap_err().to_string(),
            format!("ref `v9` is neither a tag, a branch nor a commit of `{url}`")
        );
        assert_eq!(
            cache.resolve(&url, "").unwrap_err().to_string(),
            format!("ref `` is neither a tag, a branch nor a commit of `{url}`")
        );
        assert_eq!(
            cache
                .read(&url, &commit, "rust/nope.yml")
                .unwrap_err()
                .to_string(),
            format!(
                "there is no file `rust/nope.yml` at commit `{}` of `{url}`",
                &commit[..12]
            )
        );
        assert_eq!(
            cache.read(&url, &commit, "rust").unwrap_err().to_string(),
            format!(
                "`rust` at commit `{}` of `{url}` is a directory, not a file",
                &commit[..12]
            )
        );
        let absent = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            cache.read(&url, absent, FILE).unwrap_err().to_string(),
            format!(
                "commit `{absent}` is not in `{url}`, even after a fetch (was it force-pushed away?)"
            )
        );
        assert!(matches!(
            cache.resolve(&url, absent).unwrap_err(),
            FetchError::MissingCommit { .. }
        ));
        assert_eq!(
            cache
                .read(&url, &commit[..8], FILE)
                .unwrap_err()
                .to_string(),
            format!(
                "`{}` is not a full commit id (40 hex digits) of `{url}`",
                &commit[..8]
            )
        );
    }

    #[test]
    fn a_bad_path_or_url_cannot_be_fetched() {
        let (state, cache) = cache();
        let missing = state.path().join("no-such-repo").display().to_string();
        assert_eq!(
            cache.resolve(&missing, "main").unwrap_err().to_string(),
            format!("cannot fetch `{missing}`: there is no such directory")
        );
        let not_a_repo = state.path().display().to_string();
        let err = cache.resolve(&not_a_repo, "main").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot fetch `{not_a_repo}`: ")),
            "{err}"
        );
        let url = format!("file://{missing}");
        let err = cache.resolve(&url, "main").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot fetch `{url}`: ")),
            "{err}"
        );
        let err = cache.resolve("-oProxyCommand=x:y", "main").unwrap_err();
        assert!(matches!(err, FetchError::OptionLike { .. }), "{err:?}");
    }

    #[test]
    fn stale_git_locks_from_a_killed_fetch_are_removed() {
        let origin = Origin::new();
        origin.commit("main", &[(FILE, "one")]);
        let (_state, cache) = cache();
        let url = origin.file_url();
        cache.resolve(&url, "main").unwrap();
        let repo = cache.dir.join(format!("{}.git", key(&url)));
        let stale = [
            repo.join("packed-refs.lock"),
            repo.join("refs/remotes/origin/main.lock"),
            repo.join("config.lock"),
        ];
        for lock in &stale {
            fs::write(lock, "").unwrap();
        }
        let moved = origin.commit("main", &[(FILE, "two")]);
        assert_eq!(cache.resolve(&url, "main").unwrap(), moved);
        for lock in &stale {
            assert!(!lock.exists(), "{}", lock.display());
        }
    }

    #[test]
    fn an_init_killed_midway_leaves_no_repository_and_is_cleaned_up() {
        let origin = Origin::new();
        let commit = origin.commit("main", &[(FILE, "one")]);
        let (_state, cache) = cache();
        let url = origin.path();
        let name = format!("{}.git", key(&url));
        let abandoned = cache.dir.join(format!(".{name}{TEMP_MARKER}1-0"));
        fs::create_dir_all(abandoned.join("refs")).unwrap();
        assert_eq!(cache.read(&url, &commit, FILE).unwrap(), b"one");
        assert!(!abandoned.exists());
        assert!(cache.dir.join(name).is_dir());
    }

    #[test]
    fn two_users_of_one_repository_take_turns() {
        let origin = Origin::new();
        let commit = origin.commit("main", &[(FILE, "one")]);
        let (_state, cache) = cache();
        let url = origin.file_url();
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| cache.resolve(&url, "main")))
                .collect();
            for run in runs {
                assert_eq!(run.join().unwrap().unwrap(), commit);
            }
        });
    }

    #[test]
    fn network_urls_go_through_the_git_command() {
        let (_state, cache) = cache();
        // Port 1 refuses at once: no network, no waiting.
        let err = cache
            .resolve("https://user:s3cret@127.0.0.1:1/x.git", "main")
            .unwrap_err();
        let message = err.to_string();
        match &err {
            FetchError::GitFailed { stderr, .. } => assert!(stderr.contains("127.0.0.1"), "{err}"),
            FetchError::GitMissing { .. } => {}
            other => panic!("expected the git command to fail, got {other:?}"),
        }
        assert!(
            message.starts_with("cannot fetch `https://127.0.0.1:1/x.git`: "),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn local_and_network_urls_are_told_apart_as_git_does() {
        for local in [
            "/srv/git/r",
            "./a:b",
            "r.git",
            "file:///srv/r",
            "FILE:///srv/r",
        ] {
            assert!(is_local(local), "{local}");
        }
        for network in [
            "https://h/r.git",
            "ssh://git@h/r",
            "git@h:r.git",
            "h:r",
            "git://h/r",
        ] {
            assert!(!is_local(network), "{network}");
        }
    }

    #[test]
    fn credentials_are_redacted_from_git_output() {
        assert_eq!(
            redact(
                "fatal: unable to access 'https://u:tok@h/x/'",
                "https://u:tok@h/x"
            ),
            "fatal: unable to access 'https://h/x/'"
        );
    }
}
