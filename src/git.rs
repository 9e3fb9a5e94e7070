//! What a run knows of its commit, read with libgit2 (no `git` process): sha, branch, tags,
//! dirty flag, author, message, the previous release tag, and web links for the hosts people
//! click through to. Every field degrades to "unknown" rather than failing: an empty
//! repository, a detached HEAD, a shallow clone and no repository at all are normal.
//!
//! Reading the commit costs a few milliseconds whatever the size of the tree. Comparing the
//! working tree with HEAD costs a `stat` of every tracked file (and a re-hash of every file
//! touched since the index was written), so it is done only where it is needed: the dirty
//! check of tag runs, and `MURPHY_CHANGED_FILES` once a stage of a local or pre-push run
//! starts a command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use git2::{DiffOptions, Repository};
use globset::GlobMatcher;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The commit a run is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GitInfo {
    /// `None` in a repository with no commit yet.
    pub sha: Option<String>,
    /// `None` on a detached HEAD.
    pub branch: Option<String>,
    /// Tags pointing at HEAD, sorted.
    pub tags: Vec<String>,
    /// Tracked files differ from HEAD (untracked files do not count). Meaningful only when
    /// `worktree_checked`.
    pub dirty: bool,
    /// Whether the working tree was compared with HEAD (tag runs only: it costs a `stat` of
    /// every tracked file). Records from before this field always were.
    #[serde(default = "checked")]
    pub worktree_checked: bool,
    /// The tracked files that differ from HEAD, when `worktree_checked`: for the message that
    /// refuses a dirty release, not the record (it could be the whole tree).
    #[serde(skip)]
    pub modified: Vec<String>,
    pub shallow: bool,
    pub author: Option<String>,
    pub committed_at: Option<Timestamp>,
    pub subject: Option<String>,
    pub body: Option<String>,
    /// The nearest release tag reachable from HEAD, HEAD's own tags excluded.
    pub previous_release: Option<String>,
    /// The remote's URL, without any credentials it held.
    pub remote: Option<String>,
    pub links: Links,
}

/// Web pages for the commit, when the remote is on a host murphy knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// previous release ... this commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
}

fn checked() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("`{}` is not inside a git repository", .0.display())]
    NotARepository(PathBuf),
    #[error("cannot compare the working tree of `{}` with HEAD", path.display())]
    Compare {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
}

/// The repository holding `dir`, if any, looking up no further than `GIT_CEILING_DIRECTORIES`
/// allows, as git does.
pub fn open(dir: &Path) -> Option<Repository> {
    let ceilings: Vec<PathBuf> = std::env::var_os("GIT_CEILING_DIRECTORIES")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    Repository::open_ext(dir, git2::RepositoryOpenFlags::empty(), &ceilings).ok()
}

/// Reads what is known of HEAD. `release` matches release tags (default `v*`). The working
/// tree is not compared with HEAD (see the module doc and [`modified_tracked_files`]).
pub fn read(repo: &Repository, release: &GlobMatcher) -> GitInfo {
    let mut info = GitInfo {
        shallow: repo.is_shallow(),
        ..GitInfo::default()
    };
    let head = repo.head().ok();
    info.branch = head
        .as_ref()
        .filter(|h| h.is_branch())
        .and_then(|h| h.shorthand().ok().map(str::to_owned))
        .or_else(|| unborn_branch(repo));
    let commit = head.and_then(|h| h.peel_to_commit().ok());
    if let Some(commit) = &commit {
        info.sha = Some(commit.id().to_string());
        let author = commit.author();
        info.author = Some(match (author.name().ok(), author.email().ok()) {
            (Some(name), Some(email)) => format!("{name} <{email}>"),
            (Some(name), None) => name.to_owned(),
            (None, email) => email.unwrap_or_default().to_owned(),
        });
        info.committed_at = Timestamp::from_second(commit.time().seconds()).ok();
        info.subject = commit.summary().ok().flatten().map(str::to_owned);
        info.body = commit.body().ok().flatten().map(str::to_owned);
        let tags = tags_by_commit(repo, commit.id(), release);
        info.tags = tags.get(&commit.id()).cloned().unwrap_or_default();
        info.previous_release = previous_release(repo, commit.id(), &tags, release);
    }
    info.remote = remote_url(repo);
    if let (Some(remote), Some(sha)) = (&info.remote, &info.sha) {
        info.links = web_links(remote, sha, info.previous_release.as_deref());
    }
    info
}

/// On an unborn branch (no commit yet) HEAD still names the branch to be.
fn unborn_branch(repo: &Repository) -> Option<String> {
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok()??;
    target.strip_prefix("refs/heads/").map(str::to_owned)
}

/// The commits that HEAD's tags and the release tags name, with those tags, sorted: all a run
/// needs of the tags. One pass over the tag references; an object is read only where the
/// reference alone cannot tell (a release tag with no peeled value in `packed-refs`, or a tag
/// object stored loose, which may name HEAD), since reading one for each of thousands of
/// tags would cost a run tens of milliseconds.
fn tags_by_commit(
    repo: &Repository,
    head: git2::Oid,
    release: &GlobMatcher,
) -> HashMap<git2::Oid, Vec<String>> {
    let mut map: HashMap<git2::Oid, Vec<String>> = HashMap::new();
    let Ok(references) = repo.references_glob("refs/tags/*") else {
        return map;
    };
    let odb = repo.odb().ok();
    let peel = |reference: &git2::Reference| reference.peel_to_commit().ok().map(|c| c.id());
    for reference in references.flatten() {
        let Some(name) = reference
            .name()
            .ok()
            .and_then(|n| n.strip_prefix("refs/tags/"))
            .map(str::to_owned)
        else {
            continue;
        };
        let peeled = reference.target_peel();
        let commit = if peeled.or_else(|| reference.target()) == Some(head) {
            Some(head)
        } else if release.is_match(&name) {
            peeled.or_else(|| peel(&reference))
        } else if peeled.is_none()
            && let (Some(odb), Some(target)) = (&odb, reference.target())
            && odb
                .read_header(target)
                .is_ok_and(|(_, kind)| kind == git2::ObjectType::Tag)
        {
            peel(&reference).filter(|commit| *commit == head)
        } else {
            None
        };
        if let Some(commit) = commit {
            map.entry(commit).or_default().push(name);
        }
    }
    for tags in map.values_mut() {
        tags.sort();
    }
    map
}

/// Walks back from HEAD, newest commit first (a shallow clone simply ends sooner), to the
/// first other commit carrying a release tag. Commits are read as the walk reaches them:
/// libgit2's sorted walks read the whole history before they yield one commit (75 ms for
/// 20,000 commits, on every run). Without any other release tag nothing is walked.
fn previous_release(
    repo: &Repository,
    head: git2::Oid,
    tags: &HashMap<git2::Oid, Vec<String>>,
    release: &GlobMatcher,
) -> Option<String> {
    let release_of = |commit: &git2::Oid| {
        tags.get(commit)?
            .iter()
            .filter(|t| release.is_match(t.as_str()))
            .max_by(|a, b| crate::version::compare_tags(a, b))
            .cloned()
    };
    if !tags
        .keys()
        .any(|commit| *commit != head && release_of(commit).is_some())
    {
        return None;
    }
    // By commit time, newest first; a commit enters only once a child of it was read.
    let mut queue = std::collections::BinaryHeap::new();
    let mut seen = std::collections::HashSet::from([head]);
    let mut next = Some(repo.find_commit(head).ok()?);
    while let Some(commit) = next {
        for parent in commit.parent_ids() {
            if seen.insert(parent)
                && let Ok(parent) = repo.find_commit(parent)
            {
                queue.push((parent.time().seconds(), parent.id()));
            }
        }
        let (_, oid) = queue.pop()?;
        if let Some(tag) = release_of(&oid) {
            return Some(tag);
        }
        next = repo.find_commit(oid).ok();
    }
    None
}

/// The tracked files whose content differs from HEAD (staged or not; untracked files do not
/// count), relative to the repository's root, sorted. What a tag run checks before it
/// releases.
///
/// Costs a `stat` of every tracked file; a file whose stat changed since the index was
/// written (a `touch`, a checkout) is read again, and the index is written back with the new
/// stat data, as `git status` does, so that is paid once, not on every call.
pub(crate) fn modified_tracked_files(root: &Path) -> Result<Vec<String>, GitError> {
    let repo = open(root).ok_or_else(|| GitError::NotARepository(root.to_owned()))?;
    modified_in(&repo).map_err(|source| GitError::Compare {
        path: root.to_owned(),
        source,
    })
}

fn modified_in(repo: &Repository) -> Result<Vec<String>, git2::Error> {
    if repo.is_bare() {
        return Ok(Vec::new());
    }
    // No commit yet: every tracked file is new.
    let head = repo.head().ok().and_then(|h| h.peel_to_tree().ok());
    let diff = |update_index: bool| {
        let mut options = DiffOptions::new();
        options
            .include_untracked(false)
            .ignore_submodules(true)
            .update_index(update_index);
        repo.diff_tree_to_workdir_with_index(head.as_ref(), Some(&mut options))
    };
    // Writing the index back needs its lock; if a git command holds it, compare without.
    let diff = diff(true).or_else(|_| diff(false))?;
    let mut files: Vec<String> = diff
        .deltas()
        .filter_map(|d| d.new_file().path().or(d.old_file().path()))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// `origin`'s URL, else the first remote's, with credentials removed.
fn remote_url(repo: &Repository) -> Option<String> {
    let remote = repo.find_remote("origin").ok().or_else(|| {
        let names = repo.remotes().ok()?;
        let first = names.iter().flatten().flatten().next()?.to_owned();
        repo.find_remote(&first).ok()
    })?;
    remote.url().ok().map(strip_credentials)
}

/// `https://user:token@host/x` becomes `https://host/x`: a token must never reach a record.
pub fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() && !rest.contains('/') {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// A remote URL split into host and repository path, for the https, ssh and scp-like forms.
fn host_and_path(remote: &str) -> Option<(String, String)> {
    let (host, path) = match remote.split_once("://") {
        Some((_, rest)) => {
            let (authority, path) = rest.split_once('/')?;
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = host.split(':').next().unwrap_or(host);
            (host.to_owned(), path.to_owned())
        }
        None => {
            // scp-like: `git@github.com:owner/repo.git`
            let (authority, path) = remote.split_once(':')?;
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            (host.to_owned(), path.to_owned())
        }
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    Some((
        host.to_ascii_lowercase(),
        path.trim_start_matches('/').to_owned(),
    ))
}

/// `https://github.com/owner/repo` for a GitHub remote in any of its forms.
pub fn github_repo(remote: &str) -> Option<String> {
    let (host, path) = host_and_path(remote)?;
    (host == "github.com").then(|| format!("https://github.com/{path}"))
}

/// Commit, compare and tree links for GitHub, GitLab, Bitbucket and Azure DevOps. Other hosts
/// (self-hosted included: murphy cannot know their URL scheme) get none.
pub fn web_links(remote: &str, sha: &str, previous: Option<&str>) -> Links {
    let Some((host, path)) = host_and_path(remote) else {
        return Links::default();
    };
    let compare = |f: &dyn Fn(&str) -> String| previous.map(f);
    match host.as_str() {
        "github.com" => {
            let base = format!("https://github.com/{path}");
            Links {
                commit: Some(format!("{base}/commit/{sha}")),
                compare: compare(&|prev| format!("{base}/compare/{prev}...{sha}")),
                tree: Some(format!("{base}/tree/{sha}")),
            }
        }
        "gitlab.com" => {
            let base = format!("https://gitlab.com/{path}");
            Links {
                commit: Some(format!("{base}/-/commit/{sha}")),
                compare: compare(&|prev| format!("{base}/-/compare/{prev}...{sha}")),
                tree: Some(format!("{base}/-/tree/{sha}")),
            }
        }
        "bitbucket.org" => {
            let base = format!("https://bitbucket.org/{path}");
            Links {
                commit: Some(format!("{base}/commits/{sha}")),
                compare: compare(&|prev| format!("{base}/branches/compare/{sha}%0D{prev}#diff")),
                tree: Some(format!("{base}/src/{sha}")),
            }
        }
        _ => match azure_base(&host, &path) {
            Some(base) => Links {
                commit: Some(format!("{base}/commit/{sha}")),
                compare: compare(&|prev| {
                    format!("{base}/branchCompare?baseVersion=GT{prev}&targetVersion=GC{sha}")
                }),
                tree: Some(format!("{base}?version=GC{sha}")),
            },
            None => Links::default(),
        },
    }
}

/// `https://dev.azure.com/{org}/{project}/_git/{repo}` from any Azure DevOps remote form.
fn azure_base(host: &str, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    let (org, project, repo) = match (host, parts.as_slice()) {
        ("dev.azure.com", [org, project, "_git", repo]) => (*org, *project, *repo),
        ("ssh.dev.azure.com", ["v3", org, project, repo]) => (*org, *project, *repo),
        ("vs-ssh.visualstudio.com", ["v3", org, project, repo]) => (*org, *project, *repo),
        (h, rest) if h.ends_with(".visualstudio.com") => {
            let org = h.strip_suffix(".visualstudio.com")?;
            match rest {
                ["DefaultCollection", project, "_git", repo] | [project, "_git", repo] => {
                    (org, *project, *repo)
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(format!("https://dev.azure.com/{org}/{project}/_git/{repo}"))
}

/// What changed, and against what: for `MURPHY_CHANGED_FILES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFiles {
    /// The commit compared against, or `None` when no base could be found and every tracked
    /// file is listed instead (checking everything is the safe fallback).
    pub base: Option<String>,
    pub files: Vec<PathBuf>,
}

/// Files changed between the merge base of `head_ref` (default: HEAD) with `base_ref` (a sha
/// or a ref such as `origin/main`; default: HEAD's upstream, else `origin/HEAD`) and
/// `head_ref`, plus, when `include_worktree`, changes not yet committed.
/// `tracked_cache` keeps the list of every tracked file between runs (see [`tracked_files`]).
pub fn changed_files(
    repo: &Repository,
    base_ref: Option<&str>,
    head_ref: Option<&str>,
    include_worktree: bool,
    tracked_cache: Option<&Path>,
) -> ChangedFiles {
    let all_tracked = || ChangedFiles {
        base: None,
        files: tracked_files(repo, tracked_cache),
    };
    let head = match head_ref {
        Some(r) => repo
            .revparse_single(r)
            .ok()
            .and_then(|o| o.peel_to_commit().ok()),
        None => repo.head().ok().and_then(|h| h.peel_to_commit().ok()),
    };
    let Some(head) = head else {
        return all_tracked();
    };
    let base = base_ref
        .and_then(|r| repo.revparse_single(r).ok())
        .or_else(|| match head_ref {
            None => upstream(repo),
            // Another branch is being pushed: HEAD's upstream says nothing about it.
            Some(_) => repo.revparse_single("refs/remotes/origin/HEAD").ok(),
        })
        .and_then(|o| o.peel_to_commit().ok())
        .and_then(|c| repo.merge_base(head.id(), c.id()).ok())
        .and_then(|oid| repo.find_commit(oid).ok());
    let Some(base) = base else {
        return all_tracked();
    };
    let diff = match (base.tree(), include_worktree) {
        // The index is written back with fresh stat data (see `modified_tracked_files`), so
        // a touched tree is read again once, not on every run.
        (Ok(tree), true) => {
            let diff = |update_index: bool| {
                let mut options = DiffOptions::new();
                options.update_index(update_index);
                repo.diff_tree_to_workdir_with_index(Some(&tree), Some(&mut options))
            };
            diff(true).or_else(|_| diff(false))
        }
        (Ok(tree), false) => head
            .tree()
            .and_then(|head_tree| repo.diff_tree_to_tree(Some(&tree), Some(&head_tree), None)),
        (Err(e), _) => Err(e),
    };
    let Ok(diff) = diff else {
        return all_tracked();
    };
    let mut files: Vec<PathBuf> = diff
        .deltas()
        .filter_map(|d| {
            d.new_file()
                .path()
                .or(d.old_file().path())
                .map(Path::to_path_buf)
        })
        .collect();
    files.sort();
    files.dedup();
    ChangedFiles {
        base: Some(base.id().to_string()),
        files,
    }
}

/// Every path in the index. Reading a large index is most of what listing changed files
/// costs (20,000 entries: ~15 ms, half of it checking the index's SHA-1), and the list changes
/// only when the index does: `cache`, when given, keeps the last list under the index file's
/// stamp. Git replaces the index by a rename, so a new index has a new inode and ctime.
fn tracked_files(repo: &Repository, cache: Option<&Path>) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let stamp = std::fs::metadata(repo.path().join("index")).ok().map(|m| {
        format!(
            "murphy tracked files v1 {} {} {}.{} {}.{}\n",
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
    });
    let cache = cache.zip(stamp);
    let as_path = |line: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(line));
    if let Some((cache, stamp)) = &cache
        && let Ok(text) = std::fs::read(cache)
        && let Some(list) = text.strip_prefix(stamp.as_bytes())
    {
        return list
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(as_path)
            .collect();
    }
    let files: Vec<PathBuf> = repo
        .index()
        .map(|index| index.iter().map(|e| as_path(&e.path)).collect())
        .unwrap_or_default();
    if let Some((cache, stamp)) = cache {
        let mut text = stamp.into_bytes();
        for file in &files {
            text.extend_from_slice(file.as_os_str().as_bytes());
            text.push(b'\n');
        }
        // Synced: the stamp must never head a torn list.
        if let Err(err) = crate::atomic_file::write(cache, &text) {
            tracing::debug!("cannot keep the list of tracked files: {err}");
        }
    }
    files
}

/// The current branch's upstream, else the remote's default branch (`origin/HEAD`).
fn upstream(repo: &Repository) -> Option<git2::Object<'_>> {
    let head = repo.head().ok()?;
    let name = head.name().ok()?;
    repo.branch_upstream_name(name)
        .ok()
        .and_then(|up| {
            up.as_str()
                .ok()
                .and_then(|up| repo.revparse_single(up).ok())
        })
        .or_else(|| repo.revparse_single("refs/remotes/origin/HEAD").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    /// The real `git`, isolated from the machine's configuration.
    fn git(dir: &Path, args: &[&str]) {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env_remove("GIT_DIR")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_WORK_TREE")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    /// The nearest release behind HEAD by commit time, through either parent of a merge,
    /// HEAD's own tag never counting.
    #[test]
    fn the_previous_release_is_the_newest_tagged_commit_behind_head() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let tree = repo
            .find_tree(repo.index().unwrap().write_tree().unwrap())
            .unwrap();
        let commit = |at: i64, parents: &[git2::Oid]| {
            let sig = git2::Signature::new("t", "t@example.com", &git2::Time::new(at, 0)).unwrap();
            let parents: Vec<_> = parents
                .iter()
                .map(|p| repo.find_commit(*p).unwrap())
                .collect();
            let parents: Vec<_> = parents.iter().collect();
            repo.commit(None, &sig, &sig, "c", &tree, &parents).unwrap()
        };
        let tag = |name: &str, at: git2::Oid| {
            let object = repo.find_object(at, None).unwrap();
            repo.tag_lightweight(name, &object, false).unwrap();
        };
        let root = commit(100, &[]);
        let main = commit(200, &[root]);
        let side = commit(300, &[root]);
        let merge = commit(400, &[main, side]);
        tag("v1.0", root);
        tag("v1.1", side);
        tag("v2.0", merge);
        let release = globset::Glob::new("v*").unwrap().compile_matcher();
        let previous = |head| {
            previous_release(
                &repo,
                head,
                &tags_by_commit(&repo, head, &release),
                &release,
            )
        };
        assert_eq!(previous(merge).as_deref(), Some("v1.1"));
        assert_eq!(previous(main).as_deref(), Some("v1.0"));
        assert_eq!(previous(root), None);

        // HEAD's tags of any name, annotated or not, and the release tags elsewhere; loose,
        // then packed (where an annotated tag's commit is written beside it).
        let sig = git2::Signature::new("t", "t@example.com", &git2::Time::new(500, 0)).unwrap();
        let at_merge = repo.find_object(merge, None).unwrap();
        repo.tag("notes", &at_merge, &sig, "annotated", false)
            .unwrap();
        tag("light", merge);
        let at_side = repo.find_object(side, None).unwrap();
        repo.tag("v1.1.1", &at_side, &sig, "annotated release", false)
            .unwrap();
        tag("elsewhere", main);
        let expected: HashMap<git2::Oid, Vec<String>> = [
            (
                merge,
                vec!["light".to_owned(), "notes".to_owned(), "v2.0".to_owned()],
            ),
            (side, vec!["v1.1".to_owned(), "v1.1.1".to_owned()]),
            (root, vec!["v1.0".to_owned()]),
        ]
        .into();
        assert_eq!(tags_by_commit(&repo, merge, &release), expected);
        git(dir.path(), &["pack-refs", "--all"]);
        let notes = repo.find_reference("refs/tags/notes").unwrap();
        assert_eq!(notes.target_peel(), Some(merge), "packed with its commit");
        assert_eq!(tags_by_commit(&repo, merge, &release), expected);
    }

    #[test]
    fn modified_tracked_files_are_staged_or_not_but_never_untracked_or_touched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |name: &str, text: &str| {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        git(root, &["init", "-q", "-b", "main"]);
        // No commit yet: what is staged is new.
        write("staged.txt", "1\n");
        git(root, &["add", "staged.txt"]);
        assert_eq!(modified_tracked_files(root).unwrap(), ["staged.txt"]);
        for name in ["staged.txt", "changed.txt", "touched.txt", "sub/gone.txt"] {
            write(name, "1\n");
        }
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "one"]);
        assert!(modified_tracked_files(root).unwrap().is_empty());

        write("staged.txt", "2\n");
        git(root, &["add", "staged.txt"]);
        write("changed.txt", "2\n");
        write("touched.txt", "1\n");
        std::fs::remove_file(root.join("sub/gone.txt")).unwrap();
        write("untracked.txt", "1\n");
        assert_eq!(
            modified_tracked_files(root.join("sub").parent().unwrap()).unwrap(),
            ["changed.txt", "staged.txt", "sub/gone.txt"]
        );
        let outside = tempfile::tempdir().unwrap();
        assert!(matches!(
            modified_tracked_files(outside.path()),
            Err(GitError::NotARepository(_))
        ));
    }

    /// The kept list is used only while the index is the one it was made from.
    #[test]
    fn the_kept_list_of_tracked_files_follows_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cache = root.join("tracked-files");
        git(root, &["init", "-q", "-b", "main"]);
        std::fs::write(root.join("a.txt"), "1\n").unwrap();
        git(root, &["add", "a.txt"]);
        let repo = Repository::open(root).unwrap();
        let listed = || tracked_files(&Repository::open(root).unwrap(), Some(&cache));
        assert_eq!(listed(), [PathBuf::from("a.txt")]);
        assert!(cache.exists());
        // Kept: a list the index does not hold is believed while the stamp matches...
        let stamp = std::fs::read_to_string(&cache).unwrap();
        let (head, _) = stamp.split_once('\n').unwrap();
        std::fs::write(&cache, format!("{head}\nkept.txt\n")).unwrap();
        assert_eq!(listed(), [PathBuf::from("kept.txt")]);
        // ...and dropped once git writes a new index.
        std::fs::write(root.join("b.txt"), "1\n").unwrap();
        git(root, &["add", "b.txt"]);
        assert_eq!(listed(), [PathBuf::from("a.txt"), PathBuf::from("b.txt")]);
        assert_eq!(tracked_files(&repo, None).len(), 2);
    }

    #[test]
    fn links_for_each_host_and_form() {
        let cases = [
            (
                "https://github.com/o/r.git",
                "https://github.com/o/r/commit/",
            ),
            ("git@github.com:o/r.git", "https://github.com/o/r/commit/"),
            ("ssh://git@github.com/o/r", "https://github.com/o/r/commit/"),
            (
                "https://tok:x@github.com/o/r",
                "https://github.com/o/r/commit/",
            ),
            (
                "https://gitlab.com/g/sub/r.git",
                "https://gitlab.com/g/sub/r/-/commit/",
            ),
            (
                "git@gitlab.com:g/sub/r.git",
                "https://gitlab.com/g/sub/r/-/commit/",
            ),
            (
                "https://bitbucket.org/o/r.git",
                "https://bitbucket.org/o/r/commits/",
            ),
            (
                "git@bitbucket.org:o/r.git",
                "https://bitbucket.org/o/r/commits/",
            ),
            (
                "https://org@dev.azure.com/org/proj/_git/repo",
                "https://dev.azure.com/org/proj/_git/repo/commit/",
            ),
            (
                "git@ssh.dev.azure.com:v3/org/proj/repo",
                "https://dev.azure.com/org/proj/_git/repo/commit/",
            ),
            (
                "https://org.visualstudio.com/DefaultCollection/proj/_git/repo",
                "https://dev.azure.com/org/proj/_git/repo/commit/",
            ),
        ];
        for (remote, prefix) in cases {
            let links = web_links(remote, SHA, Some("v1.0.0"));
            assert_eq!(links.commit, Some(format!("{prefix}{SHA}")), "{remote}");
            assert!(
                links
                    .compare
                    .as_deref()
                    .is_some_and(|c| c.contains("v1.0.0")),
                "{remote}"
            );
            assert!(links.tree.is_some(), "{remote}");
        }
        assert_eq!(
            web_links("git@github.com:o/r.git", SHA, Some("v1.0.0"))
                .compare
                .as_deref(),
            Some(format!("https://github.com/o/r/compare/v1.0.0...{SHA}").as_str())
        );
        assert_eq!(web_links("https://github.com/o/r", SHA, None).compare, None);
    }

    #[test]
    fn other_hosts_get_no_links_and_no_error() {
        for remote in [
            "https://git.example.org/o/r.git",
            "/srv/git/r.git",
            "file:///tmp/r",
            "",
        ] {
            assert_eq!(web_links(remote, SHA, None), Links::default(), "{remote}");
        }
    }

    #[test]
    fn credentials_never_survive() {
        assert_eq!(
            strip_credentials("https://user:s3cret@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            strip_credentials("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
    }
}
