//! The validated, immutable pipeline: stages as a DAG with resolved needs and parsed values.
//!
//! Everything that can be wrong with a pipeline file is found here, before any process
//! starts, and reported all at once, each error pointing into the file: [`planner`] checks
//! stage by stage, [`cycles`] the graph, [`release`] publishing, notifications and archives.

mod cycles;
mod planner;
mod release;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::include::Pipeline;
use crate::shell::Shell;
use crate::trigger::{Pattern, When};
use planner::Planner;

/// Index of a stage in [`Plan::stages`].
pub type StageId = usize;

/// Variables murphy sets for every stage; a pipeline may not set them itself.
pub const RESERVED_ENV: &[&str] = &[
    "MURPHY_RUN_ID",
    "MURPHY_STAGE",
    "MURPHY_STATE_DIR",
    "MURPHY_TRIGGER",
    "MURPHY_VERSION",
    "MURPHY_PRERELEASE",
    "MURPHY_CHANGED_FILES",
];

#[derive(Debug)]
pub struct Plan {
    pub name: String,
    /// The pipeline file the plan was made from.
    pub file: PathBuf,
    /// The directory commands and paths are relative to: the pipeline file's directory.
    pub root: PathBuf,
    pub env: Vec<(String, String)>,
    pub pass_env: Vec<String>,
    /// Take each run's description from the last commit's message (`description: commit`).
    pub description_from_commit: bool,
    /// Which tags are releases.
    pub release_tags: Pattern,
    /// `store:`, the shared store.
    pub store: Option<crate::remote::StoreUrl>,
    /// Secrets every stage gets.
    pub secrets: Vec<String>,
    pub notify: Vec<Notify>,
    /// `ci:`, with its defaults: what `murphy ci generate` writes.
    pub ci: CiSettings,
    /// `serve: webhooks:`: the secret names that check each provider's webhook.
    pub webhooks: Webhooks,
    /// In file order; `needs` always point at other entries of this list.
    pub stages: Vec<Stage>,
}

/// The secrets (by name) `murphy serve` checks each provider's webhook with; a provider
/// without them is refused.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    pub github_secret: Option<String>,
    pub gitlab_token: Option<String>,
    /// User name and password secrets.
    pub azure_devops: Option<(String, String)>,
}

impl Webhooks {
    /// Every secret name, to load them at once.
    pub fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .github_secret
            .iter()
            .chain(&self.gitlab_token)
            .cloned()
            .collect();
        if let Some((user, password)) = &self.azure_devops {
            names.push(user.clone());
            names.push(password.clone());
        }
        names
    }
}

#[derive(Debug)]
pub struct Stage {
    pub name: String,
    /// The file that defines the stage, relative to [`Plan::root`] (for an included git file,
    /// `NAME@REF:FILE`), and its `owner:`.
    pub source: String,
    pub owner: Option<String>,
    /// Every stage that must come first, `needs_optional` ones included.
    pub needs: Vec<StageId>,
    /// The subset of `needs` that counts as done when skipped by its `when`.
    pub needs_optional: Vec<StageId>,
    pub when: Option<When>,
    pub commands: Vec<String>,
    /// What runs `commands` and `publish: command` targets.
    pub shell: Shell,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub env: Vec<(String, String)>,
    pub pass_env: Vec<String>,
    /// Relative to [`Plan::root`], lexical, inside it (`.` for the root itself).
    pub workdir: PathBuf,
    /// Outputs may be symlinks whose targets leave the project (stored and restored as
    /// links, never followed).
    pub outside_links: bool,
    pub timeout: Option<Duration>,
    pub retry: Retry,
    /// A successful result may be reused while the fingerprint is unchanged. A stage with
    /// neither inputs nor outputs has nothing to key on, so it always runs unless it says
    /// `cache: true`; an archiving stage records a build each run, so it is not cached either.
    pub cacheable: bool,
    pub archive: Option<ArchiveSpec>,
    pub publish: Vec<Target>,
    /// For an instance of a matrix stage: the stage's name, and this instance's values.
    pub group: Option<String>,
    pub matrix: Vec<(String, String)>,
    /// Stages that must have succeeded before this one publishes (also in `needs`).
    pub requires: Vec<StageId>,
    /// Secrets this stage gets besides the pipeline's.
    pub secrets: Vec<String>,
    /// The JUnit report the stage writes, relative to [`Plan::root`], lexical, inside it.
    pub junit: Option<PathBuf>,
}

impl Stage {
    /// `stages/common.yml, owner core-team`: the file that defines the stage, and its owner.
    pub fn origin(&self) -> String {
        match &self.owner {
            Some(owner) => format!("{}, owner {owner}", self.source),
            None => self.source.clone(),
        }
    }
}

/// `ci:`, checked, each value defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiSettings {
    /// `None`: not given, so the jobs expect murphy on the runner ([`CHECK_INSTALLED`]).
    pub install: Option<String>,
    /// A 5-field cron line.
    pub schedule: String,
    pub default_branch: String,
    pub runs_on: Vec<String>,
    /// Empty: no image (the runner's shell).
    pub image: String,
    /// Variables every job gets.
    pub env: Vec<(String, String)>,
}

/// What a job runs when `ci.install` is not given: murphy is not on crates.io, so there is no
/// install command that is right for every project; the job says what to set instead.
pub const CHECK_INSTALLED: &str = "command -v murphy >/dev/null || { echo 'murphy is not on this runner: set `ci: {install: ...}` in pipeline.yml' >&2; exit 1; }";

impl CiSettings {
    /// The command that puts murphy on a job's PATH.
    pub fn install_command(&self) -> &str {
        self.install.as_deref().unwrap_or(CHECK_INSTALLED)
    }
}

impl Default for CiSettings {
    fn default() -> CiSettings {
        CiSettings {
            install: None,
            schedule: "0 3 * * *".into(),
            default_branch: "main".into(),
            runs_on: vec!["ubuntu-latest".into()],
            image: "rust:1".into(),
            env: Vec::new(),
        }
    }
}

/// A checked publish target. Secret fields hold the secret's name, never its value.
#[derive(Debug, Clone)]
pub enum Target {
    Pypi {
        files: Vec<String>,
        repository_url: String,
        index_url: String,
        username: String,
        password_secret: String,
    },
    Http {
        files: Vec<String>,
        url: String,
        token_secret: Option<String>,
    },
    GitPages {
        dir: String,
        remote: String,
        branch: String,
    },
    Command {
        run: String,
        files: Vec<String>,
        check: Option<String>,
    },
}

/// The simple index beside an upload URL: `https://upload.pypi.org/legacy/` reads from
/// `https://pypi.org/simple/`, `https://test.pypi.org/legacy/` from
/// `https://test.pypi.org/simple/`, and a pypiserver at `URL/` from `URL/simple/`.
pub fn default_index(repository_url: &str) -> String {
    let base = repository_url.trim_end_matches('/');
    let base = base.strip_suffix("/legacy").unwrap_or(base);
    let base = base.replace("://upload.pypi.org", "://pypi.org");
    format!("{base}/simple/")
}

/// The public index, where `pypi` publishes unless told otherwise.
pub const PYPI_UPLOAD_URL: &str = "https://upload.pypi.org/legacy/";

impl Target {
    /// The target's name in records and messages: `pypi`, `http`, `git-pages`, `command`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Pypi { .. } => "pypi",
            Target::Http { .. } => "http",
            Target::GitPages { .. } => "git-pages",
            Target::Command { .. } => "command",
        }
    }

    /// The secrets the target reads.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Target::Pypi {
                password_secret, ..
            } => vec![password_secret.as_str()],
            Target::Http { token_secret, .. } => token_secret.iter().map(String::as_str).collect(),
            Target::GitPages { .. } | Target::Command { .. } => Vec::new(),
        }
    }
}

/// A notification target.
#[derive(Debug, Clone)]
pub struct Notify {
    pub kind: NotifyKind,
    /// Where it posts; for an issue filer, the API's root.
    pub url: UrlSource,
    pub on: Vec<NotifyEvent>,
    /// What an `issue` entry files issues in.
    pub issue: Option<IssueTarget>,
}

/// An `issue` notification's place: the provider, the repository, the token's secret and the
/// triggers it watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueTarget {
    pub provider: IssueProvider,
    pub repository: String,
    pub token_secret: String,
    pub triggers: Vec<crate::trigger::Trigger>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueProvider {
    Github,
    Gitlab,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    Webhook,
    Slack,
    Issue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    Literal(String),
    Secret(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Success,
    Failure,
    Release,
}

/// A stage's `archive:` block, checked.
#[derive(Debug, Clone)]
pub struct ArchiveSpec {
    pub name: String,
    pub files: Vec<String>,
    pub keep_last: u64,
    pub keep_days: u64,
    /// Relative to [`Plan::root`].
    pub root: PathBuf,
}

/// Placeholders an archive name may use.
pub const ARCHIVE_PLACEHOLDERS: &[&str] = &["name", "version", "build", "sha", "date", "trigger"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included; at least 1.
    pub attempts: u32,
    pub delay: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{}", crate::diagnostic::List(.0))]
    Invalid(Vec<Diagnostic>),
    #[error("no stage named `{name}` in the pipeline{}", hint_suffix(.suggestion))]
    UnknownStage {
        name: String,
        suggestion: Option<String>,
    },
}

fn hint_suffix(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

impl Plan {
    /// Validates a pipeline, its includes merged, into a plan.
    pub fn new(mut pipeline: Pipeline) -> Result<Plan, PlanError> {
        // Unknown keys come first, with whatever else is wrong: one edit fixes them all.
        let unknown_keys: Vec<Diagnostic> = (pipeline.files.iter())
            .flat_map(|f| f.unknown_keys.iter().cloned())
            .collect();
        let with_unknown_keys = |errors: Vec<Diagnostic>| {
            PlanError::Invalid(unknown_keys.iter().cloned().chain(errors).collect())
        };
        let stages = std::mem::take(&mut pipeline.stages);
        let defs = crate::extends::resolve(&pipeline.files, &pipeline.templates, stages)
            .map_err(with_unknown_keys)?;
        let expanded = crate::matrix::expand(&pipeline.files, defs).map_err(with_unknown_keys)?;
        Planner {
            pipeline: &pipeline,
            file: 0,
            defs: &expanded.defs,
            groups: &expanded.groups,
            values: &expanded.values,
            errors: unknown_keys,
        }
        .plan()
    }

    /// Whether the stages come from more than one file, or a file names its owner: then
    /// `graph` and `status` say where each stage came from.
    pub fn has_origins(&self) -> bool {
        self.stages.first().is_some_and(|first| {
            self.stages
                .iter()
                .any(|s| s.source != first.source || s.owner.is_some())
        })
    }

    pub fn stage_id(&self, name: &str) -> Option<StageId> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// The stages a name stands for: a stage, a matrix stage (all its instances), or a
    /// selector of instances, `integration[dep=3006,*]`.
    pub fn named(&self, name: &str) -> Result<Vec<StageId>, PlanError> {
        if let Some(id) = self.stage_id(name) {
            return Ok(vec![id]);
        }
        let (group, selector) = match name.split_once('[') {
            Some((group, rest)) if rest.ends_with(']') => (group, Some(&rest[..rest.len() - 1])),
            _ => (name, None),
        };
        let found: Vec<StageId> = (0..self.stages.len())
            .filter(|&i| {
                let stage = &self.stages[i];
                stage.group.as_deref() == Some(group)
                    && selector.is_none_or(|s| crate::matrix::matches(&stage.matrix, s))
            })
            .collect();
        if found.is_empty() {
            let candidates = self
                .stages
                .iter()
                .map(|s| s.group.as_deref().unwrap_or(&s.name));
            return Err(PlanError::UnknownStage {
                name: name.to_owned(),
                suggestion: did_you_mean(name, candidates).map(str::to_owned),
            });
        }
        Ok(found)
    }

    /// The named stages (see [`Plan::named`]) and every stage they need, directly or not, in
    /// file order. No names selects the whole pipeline.
    pub fn select(&self, names: &[String]) -> Result<Vec<StageId>, PlanError> {
        if names.is_empty() {
            return Ok((0..self.stages.len()).collect());
        }
        let mut wanted = vec![false; self.stages.len()];
        let mut stack = Vec::new();
        for name in names {
            stack.extend(self.named(name)?);
        }
        while let Some(id) = stack.pop() {
            if !std::mem::replace(&mut wanted[id], true) {
                stack.extend(&self.stages[id].needs);
            }
        }
        Ok((0..self.stages.len()).filter(|&i| wanted[i]).collect())
    }

    /// Stages ordered so that each comes after everything it needs; ties keep file order.
    pub fn topological_order(&self) -> Vec<StageId> {
        let mut remaining: Vec<usize> = self.stages.iter().map(|s| s.needs.len()).collect();
        let mut needed_by: Vec<Vec<StageId>> = vec![Vec::new(); self.stages.len()];
        for (i, stage) in self.stages.iter().enumerate() {
            for &need in &stage.needs {
                needed_by[need].push(i);
            }
        }
        // The ready stage first in the file goes next.
        let mut ready: BinaryHeap<Reverse<StageId>> = (remaining.iter().enumerate())
            .filter(|&(_, &n)| n == 0)
            .map(|(i, _)| Reverse(i))
            .collect();
        let mut order = Vec::with_capacity(self.stages.len());
        // A validated plan has no cycles, so every stage gets ready.
        while let Some(Reverse(next)) = ready.pop() {
            order.push(next);
            for &i in &needed_by[next] {
                remaining[i] -= 1;
                if remaining[i] == 0 {
                    ready.push(Reverse(i));
                }
            }
        }
        order
    }
}

/// A path without `.` parts or doubled slashes, `..` resolved lexically: one spelling of one
/// place.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// Why a pipeline could not be loaded: its files, or what they say.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Include(#[from] crate::include::IncludeError),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Loads a pipeline file and its includes (git ones at the commits `pipeline.lock` pins,
/// fetched into `state`'s cache when missing) and plans it: what every command that reads a
/// pipeline wants.
pub fn load(path: &Path, state: &Path) -> Result<Plan, LoadError> {
    use crate::include::{self, fetch::Cache, lockfile};
    let lock = lockfile::Lockfile::of_pipeline(path).map_err(include::IncludeError::from)?;
    let cache = Cache::of_state_dir(state);
    let pipeline = include::load(path, &cache, include::Pins::Locked(lock.as_ref()))?;
    Ok(Plan::new(pipeline)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn plan(text: &str) -> Result<Plan, PlanError> {
        let source = crate::config::parse(Path::new("pipeline.yml"), text.to_owned()).unwrap();
        Plan::new(Pipeline::single(source))
    }

    pub(super) fn plan_err(text: &str) -> String {
        plan(text).unwrap_err().to_string()
    }

    #[test]
    fn select_takes_the_needs_closure() {
        let p =
            plan("version: 1\nstages:\n  a: {}\n  b: {needs: [a]}\n  c: {needs: [b]}\n  d: {}\n")
                .unwrap();
        assert_eq!(p.select(&["c".into()]).unwrap(), vec![0, 1, 2]);
        assert_eq!(p.select(&[]).unwrap(), vec![0, 1, 2, 3]);
        assert!(matches!(
            p.select(&["cc".into()]),
            Err(PlanError::UnknownStage { suggestion: Some(s), .. }) if s == "c"
        ));
    }

    #[test]
    fn topological_order_puts_needs_first() {
        let p = plan("version: 1\nstages:\n  d: {needs: [b, c]}\n  b: {needs: [a]}\n  c: {needs: [a]}\n  a: {}\n")
            .unwrap();
        let names: Vec<&str> = p
            .topological_order()
            .into_iter()
            .map(|i| p.stages[i].name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }
}
