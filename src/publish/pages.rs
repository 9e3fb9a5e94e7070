//! The `git-pages` target: commit a folder (built docs) onto a branch of a git remote and
//! push it, with libgit2. The commit message carries the version, so a re-run knows the
//! pages of this version are already there; a local cache repository in the state directory
//! holds the fetched branch.
//!
//! libgit2 is built without TLS (murphy uses no OpenSSL), so remotes are local paths and
//! `file://` URLs; pushing to a hosted `gh-pages` goes through a `command` target for now.

use std::fs;
use std::path::{Path, PathBuf};

use git2::{Repository, Signature};

use super::{Confirmed, Failure, Item, Release};
use crate::plan::Target;

/// The line in a pages commit's message that says which version it publishes.
const MARKER: &str = "murphy-pages-version:";

fn fields(target: &Target) -> (&str, &str) {
    match target {
        Target::GitPages { remote, branch, .. } => (remote, branch),
        _ => unreachable!("pages functions are only called for git-pages targets"),
    }
}

/// A remote as libgit2 takes it: URLs as they are, paths made absolute from the project.
fn remote_url(remote: &str, root: &Path) -> String {
    if remote.contains("://") {
        remote.to_owned()
    } else {
        std::path::absolute(root.join(remote))
            .unwrap_or_else(|_| root.join(remote))
            .to_string_lossy()
            .into_owned()
    }
}

/// SHA-256 over a folder's files (paths, modes, bytes): the pages' digest in the journal.
pub fn tree_digest(dir: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let mut hasher = Sha256::new();
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    for path in files {
        let relative = path.strip_prefix(dir).unwrap_or(&path);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        let meta = fs::symlink_metadata(&path)?;
        hasher.update(meta.permissions().mode().to_le_bytes());
        let bytes = if meta.file_type().is_symlink() {
            fs::read_link(&path)?
                .to_string_lossy()
                .into_owned()
                .into_bytes()
        } else {
            fs::read(&path)?
        };
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(crate::fingerprint::hex(&hasher.finalize()))
}

/// Writes `dir` into `repo` as a tree: files (0644, or 0755 if executable), symlinks, folders.
fn write_tree(repo: &Repository, dir: &Path) -> Result<git2::Oid, git2::Error> {
    use std::os::unix::fs::PermissionsExt;
    let mut builder = repo.treebuilder(None)?;
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| git2::Error::from_str(&e.to_string()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let meta =
            fs::symlink_metadata(&path).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|e| git2::Error::from_str(&e.to_string()))?;
            let oid = repo.blob(target.to_string_lossy().as_bytes())?;
            builder.insert(&*name, oid, 0o120000)?;
        } else if meta.is_dir() {
            let oid = write_tree(repo, &path)?;
            builder.insert(&*name, oid, 0o040000)?;
        } else {
            let oid = repo.blob_path(&path)?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o100755
            } else {
                0o100644
            };
            builder.insert(&*name, oid, mode)?;
        }
    }
    builder.write()
}

fn git_err(what: &str) -> impl FnOnce(git2::Error) -> Failure + '_ {
    move |e| Failure::Retry {
        message: format!("{what}: {}", e.message()),
        after: None,
    }
}

/// The tree of the newest commit reachable from `tip` that published `version`.
fn version_commit(repo: &Repository, tip: git2::Oid, version: &str) -> Option<git2::Oid> {
    let marker = format!("{MARKER} {version}");
    let mut walk = repo.revwalk().ok()?;
    walk.push(tip).ok()?;
    walk.flatten().find_map(|oid| {
        let commit = repo.find_commit(oid).ok()?;
        let message = commit.message().unwrap_or_default();
        message
            .lines()
            .any(|l| l.trim() == marker)
            .then(|| commit.tree_id())
    })
}

pub fn publish(target: &Target, item: &Item, release: &Release<'_>) -> Result<Confirmed, Failure> {
    let (remote, branch) = fields(target);
    let url = remote_url(remote, release.root);
    let key =
        crate::fingerprint::hex(blake3::hash(format!("{url}\n{branch}").as_bytes()).as_bytes());
    let cache = release.state_dir.join("pages").join(&key[..16]);
    let repo = match Repository::open_bare(&cache) {
        Ok(repo) => repo,
        Err(_) => Repository::init_bare(&cache).map_err(|e| {
            Failure::fatal(format!("cannot make {}: {}", cache.display(), e.message()))
        })?,
    };
    let mut origin = repo
        .remote_anonymous(&url)
        .map_err(git_err("cannot open the remote"))?;
    let tracking = format!("refs/remotes/pages/{branch}");
    origin
        .fetch(
            &[format!("+refs/heads/{branch}:{tracking}").as_str()],
            None,
            None,
        )
        .map_err(git_err(&format!("cannot fetch `{branch}` from {url}")))?;
    let parent = repo
        .find_reference(&tracking)
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let tree_id = write_tree(&repo, &item.path).map_err(|e| {
        Failure::fatal(format!(
            "cannot read `{}`: {}",
            item.path.display(),
            e.message()
        ))
    })?;
    let version = release.version.unwrap_or("dev");
    if let Some(parent) = &parent {
        if parent.tree_id() == tree_id {
            return Ok(Confirmed::AlreadyPresent);
        }
        // A released version's pages may lie under newer ones: look through the history, so
        // re-running an old release neither republishes nor overwrites. Unversioned (`dev`)
        // pages are simply replaced by newer ones.
        if release.version.is_some()
            && let Some(published) = version_commit(&repo, parent.id(), version)
        {
            return if published == tree_id {
                Ok(Confirmed::AlreadyPresent)
            } else {
                Err(Failure::fatal(format!(
                    "`{branch}` of {url} already has pages for version {version}, with other files; a release never overwrites"
                )))
            };
        }
    }
    let tree = repo
        .find_tree(tree_id)
        .map_err(git_err("cannot read the tree"))?;
    let signature = Signature::now("murphy", "murphy@localhost").map_err(git_err("cannot sign"))?;
    let message = format!(
        "Publish {} {version} pages\n\n{MARKER} {version}\n",
        release.name
    );
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let commit = repo
        .commit(
            Some("refs/heads/murphy-pages"),
            &signature,
            &signature,
            &message,
            &tree,
            &parents,
        )
        .map_err(git_err("cannot commit the pages"))?;
    let mut refused: Option<String> = None;
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.push_update_reference(|_, status| {
        refused = status.map(str::to_owned);
        Ok(())
    });
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks);
    origin
        .push(
            &[format!("refs/heads/murphy-pages:refs/heads/{branch}").as_str()],
            Some(&mut options),
        )
        .map_err(git_err(&format!("cannot push to {url}")))?;
    drop(options);
    match refused {
        // Someone pushed in between: fetch again and build on theirs.
        Some(why) => Err(Failure::Retry {
            message: format!("{url} refused `{branch}` at {commit}: {why}"),
            after: None,
        }),
        None => Ok(Confirmed::Uploaded),
    }
}

pub fn preflight(target: &Target, release: &Release<'_>) -> Result<String, String> {
    let (remote, branch) = fields(target);
    let url = remote_url(remote, release.root);
    let mut origin = git2::Remote::create_detached(url.as_str())
        .map_err(|e| format!("bad remote {url}: {}", e.message()))?;
    origin
        .connect(git2::Direction::Push)
        .map_err(|e| format!("{url} is unreachable: {}", e.message()))?;
    Ok(format!("{url} reachable (branch `{branch}`)"))
}
