//! What a run is about, collected once when it starts and kept in its `meta.json`: the change
//! (description, commit, links) and why it runs (trigger, branch, tag, version).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ci::{self, CiInfo};
use crate::git::{self, GitInfo};
use crate::plan::Plan;
use crate::trigger::{Situation, Trigger};
use crate::version::{self, Version, VersionError};

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(
        "a `tag` run needs a tag: push one (CI reads it from the event) or tag HEAD with a tag matching `{0}`"
    )]
    NoTag(String),
    #[error("aborted: the description is empty, so nothing was run")]
    EmptyDescription,
    #[error("cannot run the editor `{editor}` for the description")]
    Editor {
        editor: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub trigger: Trigger,
    pub description: Option<String>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub version: Option<Version>,
    pub git: Option<GitInfo>,
    pub ci: Option<CiInfo>,
    /// What murphy decided about the change that the user should hear (a CI tag that is no
    /// release, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug, Default)]
pub struct Request {
    pub trigger: Option<Trigger>,
    pub description: Option<String>,
    /// Open `$VISUAL`/`$EDITOR` for the description.
    pub edit: bool,
}

impl Change {
    /// The change with secrets masked in its free text (description, commit message), as it
    /// is recorded.
    pub fn redacted(mut self) -> Change {
        let mask = |text: &mut Option<String>| {
            if let Some(t) = text {
                *t = crate::secrets::redact(t).into_owned();
            }
        };
        mask(&mut self.description);
        if let Some(git) = &mut self.git {
            mask(&mut git.subject);
            mask(&mut git.body);
        }
        self
    }

    /// A local run with nothing known: what records from before change tracking stand for.
    pub fn local() -> Change {
        Change {
            trigger: Trigger::Local,
            description: None,
            branch: None,
            tag: None,
            version: None,
            git: None,
            ci: None,
            notes: Vec::new(),
        }
    }

    pub fn situation(&self) -> Situation {
        Situation {
            trigger: self.trigger,
            branch: self.branch.clone(),
            tag: self.tag.clone(),
        }
    }

    /// Every link to the change, in the order a person wants them.
    pub fn links(&self) -> Links {
        let git = self.git.as_ref().map(|g| &g.links);
        Links {
            commit: git.and_then(|l| l.commit.clone()),
            diff: git.and_then(|l| l.compare.clone()),
            tree: git.and_then(|l| l.tree.clone()),
            pr: self.ci.as_ref().and_then(|c| c.pr_url.clone()),
            ci_run: self.ci.as_ref().and_then(|c| c.run_url.clone()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    pub commit: Option<String>,
    /// The previous release ... this commit.
    pub diff: Option<String>,
    pub tree: Option<String>,
    pub pr: Option<String>,
    pub ci_run: Option<String>,
}

/// Why a tag run must not go on from this tree, if it must not: tracked files that differ
/// from HEAD would make a release of bytes no commit holds.
pub fn dirty_release(change: &Change) -> Option<String> {
    let git = change.git.as_ref()?;
    if change.trigger != Trigger::Tag || !git.worktree_checked || !git.dirty {
        return None;
    }
    Some(if git.modified.is_empty() {
        "the working tree could not be compared with HEAD".to_owned()
    } else {
        describe_modified(&git.modified)
    })
}

/// [`dirty_release`] with the tree compared now: for a tag run being resumed (its record says
/// how the tree was when it started) and a tag only imagined (nothing compared it yet). A
/// change outside any repository has no tree to compare.
pub fn dirty_release_now(change: &Change, root: &Path) -> Option<String> {
    if change.trigger != Trigger::Tag || change.git.is_none() {
        return None;
    }
    match git::modified_tracked_files(root) {
        Ok(files) if files.is_empty() => None,
        Ok(files) => Some(describe_modified(&files)),
        Err(err) => Some(format!(
            "the working tree could not be compared with HEAD ({})",
            crate::causes::line(&err)
        )),
    }
}

fn describe_modified(files: &[String]) -> String {
    let shown: Vec<String> = files.iter().take(5).map(|f| format!("`{f}`")).collect();
    let more = match files.len().saturating_sub(5) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "{} tracked file(s) differ from HEAD: {}{more}",
        files.len(),
        shown.join(", ")
    )
}

/// Reads git and the CI environment (`env`) for the run of `plan` that `request` asks for.
pub fn collect(
    plan: &Plan,
    env: &BTreeMap<String, String>,
    request: &Request,
    state_dir: &Path,
) -> Result<Change, ChangeError> {
    let ci = ci::detect(env);
    let mut notes = Vec::new();
    let mut trigger = request
        .trigger
        .or(ci.as_ref().map(|c| c.trigger))
        .unwrap_or(Trigger::Local);
    // A CI build of a tag that is no release (a docs tag, say) is a push of that commit: only
    // `--trigger tag` asked for by hand insists on a release tag.
    if let Some(tag) = ci.as_ref().and_then(|c| c.tag.as_deref())
        && request.trigger.is_none()
        && trigger == Trigger::Tag
        && !plan.release_tags.matcher.is_match(tag)
    {
        trigger = Trigger::Push;
        notes.push(format!(
            "tag `{tag}` does not match `release_tags` (`{}`): running as `push`, which publishes nothing",
            plan.release_tags.text
        ));
    }
    let started = std::time::Instant::now();
    let repo = git::open(&plan.root);
    let mut git = repo
        .as_ref()
        .map(|r| git::read(r, &plan.release_tags.matcher));
    // Whether the tree is clean matters for a release; elsewhere it would cost a `stat` of
    // every tracked file on every run.
    if trigger == Trigger::Tag
        && let Some(git) = &mut git
    {
        git.worktree_checked = true;
        // A tree that cannot be compared counts as dirty: a release must not claim a clean
        // tree it could not see.
        match git::modified_tracked_files(&plan.root) {
            Ok(files) => {
                git.dirty = !files.is_empty();
                git.modified = files;
            }
            Err(err) => {
                tracing::warn!("{}", crate::causes::line(&err));
                git.dirty = true;
            }
        }
    }
    tracing::debug!("read the git metadata in {:?}", started.elapsed());
    let branch = ci
        .as_ref()
        .and_then(|c| c.branch.clone())
        .or_else(|| git.as_ref().and_then(|g| g.branch.clone()));
    let tag = ci.as_ref().and_then(|c| c.tag.clone()).or_else(|| {
        git.as_ref().and_then(|g| {
            g.tags
                .iter()
                .filter(|t| plan.release_tags.matcher.is_match(t.as_str()))
                .max_by(|a, b| version::compare_tags(a, b))
                .cloned()
        })
    });
    let version = match (&tag, trigger) {
        (Some(tag), Trigger::Tag) => {
            Some(version::from_tag(tag, plan.release_tags.literal_prefix())?)
        }
        (Some(tag), _) => version::from_tag(tag, plan.release_tags.literal_prefix()).ok(),
        (None, Trigger::Tag) => return Err(ChangeError::NoTag(plan.release_tags.text.clone())),
        (None, _) => None,
    };
    let subject = git.as_ref().and_then(|g| g.subject.clone());
    let description = if let Some(text) = &request.description {
        Some(text.trim().to_owned()).filter(|t| !t.is_empty())
    } else if request.edit {
        Some(edit_description(subject.as_deref(), env, state_dir)?)
    } else if plan.description_from_commit {
        git.as_ref().and_then(|g| {
            let message = match (&g.subject, &g.body) {
                (Some(s), Some(b)) => format!("{s}\n\n{b}"),
                (Some(s), None) => s.clone(),
                _ => return None,
            };
            Some(message.trim().to_owned())
        })
    } else {
        None
    };
    Ok(Change {
        trigger,
        description,
        branch,
        tag,
        version,
        git,
        ci,
        notes,
    })
}

/// Writes the list of [`changed_files`] into `run_dir` and returns its absolute path for
/// `MURPHY_CHANGED_FILES`, or `None` where the run has no such list. Comparing the tree costs
/// up to a second after a checkout, so the executor asks only when a stage is about to run a
/// command, unless [`list_early`] began at the run's start.
pub fn write_changed_files(
    plan: &Plan,
    change: &Change,
    env: &BTreeMap<String, String>,
    run_dir: &Path,
    state_dir: &Path,
) -> io::Result<Option<PathBuf>> {
    let tracked = state_dir.join(TRACKED_FILES);
    write_list(
        run_dir,
        lines(changed_files(plan, change, env, Some(&tracked))),
    )
}

/// The list of every tracked file (where there is no base to compare with), kept in the state
/// directory between runs.
const TRACKED_FILES: &str = "tracked-files";

/// The list's text: a changed file a line.
fn lines(changed: Option<git::ChangedFiles>) -> Option<String> {
    let changed = changed?;
    let mut text = String::with_capacity(changed.files.len() * 32);
    for file in &changed.files {
        text.push_str(&file.to_string_lossy());
        text.push('\n');
    }
    Some(text)
}

/// Writes the list's `text` (from [`changed_files`]) into `run_dir` as `write_changed_files`
/// does. Not fsynced: a resumed run writes it again rather than trust one a power cut may have
/// torn.
pub fn write_list(run_dir: &Path, text: Option<String>) -> io::Result<Option<PathBuf>> {
    let list = std::path::absolute(run_dir.join("changed-files.txt"))?;
    let Some(text) = text else {
        // One an earlier murphy wrote for this run would be stale.
        let _ = std::fs::remove_file(&list);
        return Ok(None);
    };
    crate::atomic_file::write_unsynced(&list, text.as_bytes())?;
    Ok(Some(list))
}

/// The list of changed files, as [`list_early`]'s thread sends its text.
pub type ListedEarly = tokio::sync::oneshot::Receiver<Option<String>>;

/// [`changed_files`] on a thread of its own, begun while a run is set up when one of its stages
/// will surely or likely run (one the store cannot restore, or one the last run ran): that
/// stage's first command then need not wait for git,
/// nor for the list's lines (20,000 of them where every tracked file counts as changed; made
/// on the run's one async thread, they cost its first command a millisecond). `None` if no
/// thread could be made (the executor then lists them itself).
pub fn list_early(
    plan: Arc<Plan>,
    change: Change,
    env: BTreeMap<String, String>,
    state_dir: &Path,
) -> Option<ListedEarly> {
    let tracked = state_dir.join(TRACKED_FILES);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("changed-files".into())
        .spawn(move || {
            let _ = tx.send(lines(changed_files(&plan, &change, &env, Some(&tracked))));
        })
        .ok()?;
    Some(rx)
}

/// The files a `local`, `pre-push` or `pr` run changes, for `MURPHY_CHANGED_FILES` (relative
/// to the pipeline's directory): against
/// the pull request's base branch (`pr`), the commit being pushed over (`pre-push`: the
/// hook's `MURPHY_PUSH_HEAD` against `MURPHY_PUSH_BASE`) or the branch's upstream; a local run includes uncommitted
/// changes. Other triggers (and runs outside a repository) get none.
pub fn changed_files(
    plan: &Plan,
    change: &Change,
    env: &BTreeMap<String, String>,
    tracked_cache: Option<&Path>,
) -> Option<git::ChangedFiles> {
    let started = std::time::Instant::now();
    let repo = git::open(&plan.root)?;
    let pushed = |name: &str| {
        env.get(name)
            .filter(|sha| !sha.is_empty() && sha.chars().any(|c| c != '0'))
            .cloned()
    };
    let head = match change.trigger {
        Trigger::PrePush => pushed("MURPHY_PUSH_HEAD"),
        _ => None,
    };
    let base = match change.trigger {
        Trigger::Pr => change
            .ci
            .as_ref()
            .and_then(|c| c.base_branch.as_ref())
            .and_then(|b| {
                [format!("refs/remotes/origin/{b}"), b.clone()]
                    .into_iter()
                    .find(|r| repo.revparse_single(r).is_ok())
            }),
        Trigger::PrePush => pushed("MURPHY_PUSH_BASE"),
        Trigger::Local => None,
        Trigger::Push | Trigger::Nightly | Trigger::Tag => return None,
    };
    let mut changed = git::changed_files(
        &repo,
        base.as_deref(),
        head.as_deref(),
        change.trigger == Trigger::Local,
        tracked_cache,
    );
    // Stages run from the pipeline's directory, so the paths are relative to it (a file
    // outside it keeps its absolute path).
    if let (Some(workdir), Ok(root)) = (repo.workdir(), std::fs::canonicalize(&plan.root)) {
        let workdir = std::fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_owned());
        // The list may hold every tracked file: one `strip_prefix` each, no joins, and
        // nothing at all when the pipeline is at the repository's root.
        let sub = root.strip_prefix(&workdir).ok();
        if sub.is_none_or(|sub| !sub.as_os_str().is_empty()) {
            for file in &mut changed.files {
                *file = match sub.and_then(|sub| file.strip_prefix(sub).ok()) {
                    Some(relative) => relative.to_path_buf(),
                    None => workdir.join(&*file),
                };
            }
        }
    }
    tracing::debug!(
        "listed {} changed files in {:?}",
        changed.files.len(),
        started.elapsed()
    );
    Some(changed)
}

const TEMPLATE_HELP: &str = "\
# Describe this change for the run's record: what it is and why.
# Lines starting with '#' are ignored; an empty description aborts the run.";

/// Opens the user's editor on a template holding the commit subject, as `git commit` does.
fn edit_description(
    subject: Option<&str>,
    env: &BTreeMap<String, String>,
    state_dir: &Path,
) -> Result<String, ChangeError> {
    let editor = env
        .get("VISUAL")
        .or_else(|| env.get("EDITOR"))
        .filter(|e| !e.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "vi".to_owned());
    let failed = |source| ChangeError::Editor {
        editor: editor.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(failed)?;
    let path = state_dir.join("DESCRIPTION_EDITMSG");
    std::fs::write(
        &path,
        format!("{}\n\n{TEMPLATE_HELP}\n", subject.unwrap_or("")),
    )
    .map_err(failed)?;
    // Through the shell, so `EDITOR="code --wait"` works as it does for git.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("murphy-editor")
        .arg(&path)
        .status()
        .map_err(failed)?;
    if !status.success() {
        return Err(failed(io::Error::other(format!(
            "the editor exited with {status}"
        ))));
    }
    let text = std::fs::read_to_string(&path).map_err(failed)?;
    let _ = std::fs::remove_file(&path);
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let description = kept.join("\n").trim().to_owned();
    if description.is_empty() {
        return Err(ChangeError::EmptyDescription);
    }
    Ok(description)
}
