//! `murphy release --dry-run`: what a tag run would publish, where, and which gates hold, on
//! any machine, touching no network.

use std::path::Path;

use serde::Serialize;

use crate::change::{self, Change, ChangeError};
use crate::environment;
use crate::plan::{Plan, Target};
use crate::publish;
use crate::records::{RunView, StageState, StateDir};
use crate::store::Store;
use crate::trigger::Trigger;
use crate::version;

/// What a tag run would do; `stops` lists what would stop it (empty: it would go ahead).
#[derive(Debug, Serialize)]
pub struct Preview {
    pub pipeline: String,
    pub tag: Option<String>,
    pub version: Option<String>,
    /// Set when there is no release tag at HEAD and none was given: the tag run shown is
    /// imagined, with version `dev`.
    pub no_tag: Option<String>,
    /// Why the working tree is not clean enough to release from.
    pub dirty: Option<String>,
    /// Every stage with a `publish:` block.
    pub stages: Vec<StagePreview>,
    pub stops: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StagePreview {
    pub stage: String,
    /// Why a tag run would skip it (its `when:`); `None`: it would publish.
    pub skipped: Option<String>,
    pub gates: Vec<Gate>,
    pub secrets: Vec<SecretCheck>,
    pub targets: Vec<TargetPreview>,
}

/// A `requires:` gate and what the records say of it.
#[derive(Debug, Serialize)]
pub struct Gate {
    pub requires: String,
    /// `false` where the gate cannot hold as things are.
    pub can_hold: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct SecretCheck {
    pub name: String,
    pub usable: bool,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TargetPreview {
    pub id: String,
    pub destination: String,
    pub files: Vec<FilePreview>,
    /// Why there are no files yet (the run makes them).
    pub no_files: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FilePreview {
    pub name: String,
    pub sha256: String,
    pub url: Option<String>,
}

/// What a tag run of `plan` would do now, for `tag` or the release tag at HEAD.
pub fn preview(
    plan: &Plan,
    state: &StateDir,
    tag: Option<&str>,
    secrets_file: &Path,
) -> Result<Preview, ChangeError> {
    let env = environment::outer();
    let request = change::Request {
        trigger: Some(Trigger::Tag),
        ..change::Request::default()
    };
    let mut no_tag = None;
    let mut change = match change::collect(plan, &env, &request, state.root()) {
        Ok(change) => change,
        Err(ChangeError::NoTag(pattern)) => {
            if tag.is_none() {
                no_tag = Some(pattern);
            }
            // The tag is imagined; the commit it would be on is HEAD, as it is.
            let here = change::Request {
                trigger: Some(Trigger::Local),
                ..change::Request::default()
            };
            Change {
                trigger: Trigger::Tag,
                version: None,
                ..change::collect(plan, &env, &here, state.root())?
            }
        }
        Err(err) => return Err(err),
    };
    if let Some(tag) = tag {
        change.version = Some(version::from_tag(tag, plan.release_tags.literal_prefix())?);
        change.tag = Some(tag.to_owned());
    }
    let version = change.version.as_ref().map(|v| v.text.clone());
    let situation = change.situation();
    let store = Store::new(state.root());
    let head = change.git.as_ref().and_then(|g| g.sha.clone());
    let runs = state.list().unwrap_or_default();
    let mut stops = Vec::new();
    // Collected for a tag at HEAD; an imagined tag's change was collected as a local one.
    let dirty = if change.git.as_ref().is_some_and(|g| g.worktree_checked) {
        change::dirty_release(&change)
    } else {
        change::dirty_release_now(&change, &plan.root)
    };
    if let Some(why) = &dirty {
        stops.push(format!(
            "{why} (a tag run refuses that without --allow-dirty)"
        ));
    }
    let mut stages = Vec::new();
    for stage in plan.stages.iter().filter(|s| !s.publish.is_empty()) {
        let mut preview = StagePreview {
            stage: stage.name.clone(),
            skipped: None,
            gates: Vec::new(),
            secrets: Vec::new(),
            targets: Vec::new(),
        };
        if let Some(Err(why)) = stage.when.as_ref().map(|w| w.check(&situation)) {
            preview.skipped = Some(why);
            stages.push(preview);
            continue;
        }
        for &required in &stage.requires {
            let required = &plan.stages[required];
            let name = &required.name;
            let last = head
                .as_deref()
                .and_then(|sha| last_result(&runs, name, sha));
            let (can_hold, detail) = match required.when.as_ref().map(|w| w.check(&situation)) {
                Some(Err(why)) => {
                    stops.push(format!(
                        "stage `{}` requires `{name}`, which a tag run skips by its `when`",
                        stage.name
                    ));
                    (
                        false,
                        format!("a tag run skips by its `when` ({why}): the gate cannot hold"),
                    )
                }
                _ => match last {
                    Some((run, false)) => {
                        stops.push(format!(
                            "stage `{}` requires `{name}`, which failed for this commit in run {run}",
                            stage.name
                        ));
                        (
                            false,
                            format!(
                                "failed for this commit in run {run}: the gate holds only if it passes"
                            ),
                        )
                    }
                    Some((run, true)) => (
                        true,
                        format!(
                            "succeeded for this commit in run {run} (it holds if its inputs are unchanged)"
                        ),
                    ),
                    None if store.has_record(name) => (
                        true,
                        "has a checkpoint (it holds if its inputs are unchanged)".to_owned(),
                    ),
                    None => (
                        true,
                        "has no checkpoint yet: the run must make it succeed first".to_owned(),
                    ),
                },
            };
            preview.gates.push(Gate {
                requires: name.clone(),
                can_hold,
                detail,
            });
        }
        for name in plan.secrets.iter().chain(&stage.secrets) {
            let present = crate::secrets::load(std::slice::from_ref(name), &env, secrets_file);
            let error = present.err().map(|err| {
                stops.push(format!("secret `{name}` is not usable"));
                err.to_string()
            });
            preview.secrets.push(SecretCheck {
                name: name.clone(),
                usable: error.is_none(),
                error,
            });
        }
        let ids = publish::target_ids(&stage.publish);
        for (target, id) in stage.publish.iter().zip(ids) {
            let (files, no_files) = files(target, plan, version.as_deref(), state.root());
            preview.targets.push(TargetPreview {
                id,
                destination: destination(target),
                files,
                no_files,
            });
        }
        stages.push(preview);
    }
    let mut seen = std::collections::HashSet::new();
    stops.retain(|stop| seen.insert(stop.clone()));
    Ok(Preview {
        pipeline: plan.name.clone(),
        tag: change.tag.clone(),
        version,
        no_tag,
        dirty,
        stages,
        stops,
    })
}

/// The newest run on commit `sha` in which `stage` succeeded or failed, and whether it
/// succeeded.
fn last_result(runs: &[RunView], stage: &str, sha: &str) -> Option<(String, bool)> {
    let on_commit = |run: &&RunView| {
        run.change
            .as_ref()
            .and_then(|c| c.git.as_ref())
            .and_then(|g| g.sha.as_deref())
            == Some(sha)
    };
    // `runs` is newest first.
    runs.iter().filter(on_commit).find_map(|run| {
        let s = run.stages.iter().find(|s| s.name == stage)?;
        (s.state.is_success() || s.state == StageState::Failed)
            .then(|| (run.run_id.clone(), s.state.is_success()))
    })
}

fn destination(target: &Target) -> String {
    match target {
        Target::Pypi {
            repository_url,
            username,
            password_secret,
            ..
        } => {
            format!("{repository_url} as `{username}` with secret `{password_secret}`")
        }
        Target::Http {
            url, token_secret, ..
        } => match token_secret {
            Some(secret) => format!("PUT {url} with a bearer token from `{secret}`"),
            None => format!("PUT {url}"),
        },
        Target::GitPages {
            remote,
            branch,
            dir,
        } => format!("`{dir}` committed onto `{branch}` of {remote}"),
        Target::Command { run, check, .. } => match check {
            Some(check) => format!("`{run}` (skipped where `{check}` succeeds)"),
            None => format!("`{run}`"),
        },
    }
}

/// The files a target would publish, or why there are none yet.
fn files(
    target: &Target,
    plan: &Plan,
    version: Option<&str>,
    state_dir: &Path,
) -> (Vec<FilePreview>, Option<String>) {
    match publish::items(target, &plan.root, state_dir) {
        Ok(items) => (
            items
                .into_iter()
                .map(|item| FilePreview {
                    url: match target {
                        Target::Http { url, .. } => {
                            Some(publish::fill(url, &plan.name, version, &item))
                        }
                        _ => None,
                    },
                    name: item.name,
                    sha256: item.digest,
                })
                .collect(),
            None,
        ),
        Err(why) => (Vec::new(), Some(why)),
    }
}
