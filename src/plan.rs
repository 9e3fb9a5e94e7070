//! The validated, immutable pipeline: stages as a DAG with resolved needs and parsed values.
//!
//! Everything that can be wrong with a pipeline file is found here, before any process
//! starts, and reported all at once, each error pointing into the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{
    ArchiveDef, Entries, NotifyDef, Scalar, Source, Spanned, StringList, TargetDef, WhenDef,
    span_of,
};
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::extends::Resolved;
use crate::include::{FileId, Pipeline};
use crate::shell::Shell;
use crate::trigger::{Pattern, Trigger, When};

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
    /// Secrets every stage gets.
    pub secrets: Vec<String>,
    pub notify: Vec<Notify>,
    /// In file order; `needs` always point at other entries of this list.
    pub stages: Vec<Stage>,
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
    /// Relative to [`Plan::root`] unless absolute.
    pub workdir: PathBuf,
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
    pub url: UrlSource,
    pub on: Vec<NotifyEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    Webhook,
    Slack,
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
    pub fn new(pipeline: &Pipeline) -> Result<Plan, PlanError> {
        // Unknown keys come first, with whatever else is wrong: one edit fixes them all.
        let unknown_keys: Vec<Diagnostic> = (pipeline.files.iter())
            .flat_map(|f| f.unknown_keys.iter().cloned())
            .collect();
        let with_unknown_keys = |errors: Vec<Diagnostic>| {
            PlanError::Invalid(unknown_keys.iter().cloned().chain(errors).collect())
        };
        let defs = crate::extends::resolve(pipeline).map_err(with_unknown_keys)?;
        let expanded = crate::matrix::expand(&pipeline.files, defs).map_err(with_unknown_keys)?;
        Planner {
            pipeline,
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
        let mut order = Vec::with_capacity(self.stages.len());
        let mut done = vec![false; self.stages.len()];
        while order.len() < self.stages.len() {
            let Some(next) = (0..self.stages.len()).find(|&i| !done[i] && remaining[i] == 0) else {
                break; // unreachable for a validated plan, which has no cycles
            };
            done[next] = true;
            order.push(next);
            for (i, stage) in self.stages.iter().enumerate() {
                remaining[i] -= stage.needs.iter().filter(|&&n| n == next).count();
            }
        }
        order
    }
}

/// Collects every error in the file before giving up, so one edit fixes many.
struct Planner<'a> {
    pipeline: &'a Pipeline,
    /// The file the value being checked was written in: where errors point.
    file: FileId,
    /// The stages as written, with `extends:` applied and matrices expanded.
    defs: &'a [Resolved],
    /// Matrix stages (groups) and their instances; each instance's values.
    groups: &'a HashMap<String, Vec<String>>,
    values: &'a HashMap<String, Vec<(String, String)>>,
    errors: Vec<Diagnostic>,
}

impl Planner<'_> {
    fn plan(mut self) -> Result<Plan, PlanError> {
        let known_before = self.errors.len();
        let pipeline = self.pipeline;
        let file = &pipeline.files[0].pipeline;
        let root = pipeline.files[0]
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let name = file.name.clone().unwrap_or_else(|| {
            std::fs::canonicalize(&root)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "pipeline".to_owned())
        });
        // Each file's env over the env of the files it includes.
        let mut env: Vec<(String, String)> = Vec::new();
        for (id, entries) in &pipeline.env {
            self.file = *id;
            for (key, value) in self.env(entries) {
                match env.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value,
                    None => env.push((key, value)),
                }
            }
        }
        self.file = 0;
        let description_from_commit = match &file.description {
            None => false,
            Some(d) if d.value == "commit" => true,
            Some(d) => {
                self.error(
                    format!(
                        "`description: {}` is not understood: the only value is `commit` (use `murphy run --description` for text)",
                        d.value
                    ),
                    d,
                );
                false
            }
        };
        let notify: Vec<Notify> = file
            .notify
            .iter()
            .map(|n| self.notify(n, &pipeline.secrets))
            .collect();
        let release_tags = match &file.release_tags {
            Some(p) => self
                .pattern(p, &p.value)
                .unwrap_or_else(default_release_tags),
            None => default_release_tags(),
        };

        // Each file's `shell` is the default for the stages it defines; checked once.
        let mut default_shells = Vec::with_capacity(pipeline.files.len());
        for (id, source) in pipeline.files.iter().enumerate() {
            self.file = id;
            default_shells.push(match &source.pipeline.shell {
                Some(shell) => self.shell(shell),
                None => Shell::Sh,
            });
        }

        let stage_defs = self.defs;
        let mut ids: HashMap<&str, StageId> = HashMap::new();
        for (i, Resolved { name, file, .. }) in stage_defs.iter().enumerate() {
            self.file = *file;
            // An instance is named by its matrix stage, which must be a good name itself;
            // checked once per matrix stage, not once per instance.
            let base = name.value.split('[').next().unwrap_or_default();
            let first_of_group = self
                .groups
                .get(base)
                .is_none_or(|instances| instances.first() == Some(&name.value));
            if first_of_group {
                self.check_stage_name(&Spanned {
                    value: base.to_owned(),
                    referenced: name.referenced,
                    defined: name.defined,
                });
            }
            ids.insert(name.value.as_str(), i);
        }

        let mut stages = Vec::with_capacity(stage_defs.len());
        for Resolved {
            file: stage_file,
            name,
            def,
            origins,
        } in stage_defs
        {
            let mut needs = Vec::new();
            let mut needs_optional = Vec::new();
            for (need, optional) in def
                .needs
                .iter()
                .map(|n| (n, false))
                .chain(def.needs_optional.iter().map(|n| (n, true)))
            {
                self.file = if optional {
                    origins.needs_optional
                } else {
                    origins.needs
                };
                // A matrix stage's name stands for all its instances.
                let targets: Vec<StageId> = match self.groups.get(&need.value) {
                    Some(instances) => instances
                        .iter()
                        .filter_map(|i| ids.get(i.as_str()).copied())
                        .collect(),
                    None => ids.get(need.value.as_str()).copied().into_iter().collect(),
                };
                match targets.is_empty() {
                    false => {
                        for id in targets {
                            if !needs.contains(&id) {
                                needs.push(id);
                            }
                            if optional && !needs_optional.contains(&id) {
                                needs_optional.push(id);
                            }
                        }
                    }
                    true => {
                        let mut message = format!(
                            "stage `{}` needs `{}`, which is not a stage",
                            name.value, need.value
                        );
                        if let Some(near) = did_you_mean(
                            &need.value,
                            ids.keys().copied().filter(|k| *k != name.value),
                        ) {
                            message.push_str(&format!(" (did you mean `{near}`?)"));
                        }
                        self.error(message, need);
                    }
                }
            }
            self.file = origins.run;
            let commands = self.commands((name, *stage_file), def.run.as_ref());
            // The stage's own `shell`, else its file's, else `sh`.
            let shell = match &def.shell {
                Some(own) => {
                    self.file = origins.shell;
                    self.shell(own)
                }
                None => default_shells[*stage_file].clone(),
            };
            self.file = origins.retry;
            let retry = match &def.retry {
                None => Retry {
                    attempts: 1,
                    delay: Duration::ZERO,
                },
                Some(r) => {
                    if r.attempts.value == 0 {
                        self.error(
                            "`retry.attempts` counts every attempt and must be at least 1",
                            &r.attempts,
                        );
                    }
                    Retry {
                        attempts: r.attempts.value.max(1),
                        delay: r
                            .delay
                            .as_ref()
                            .and_then(|d| self.duration(d))
                            .unwrap_or(Duration::ZERO),
                    }
                }
            };
            self.file = origins.timeout;
            let timeout = def.timeout.as_ref().and_then(|t| self.duration(t));
            if let (Some(t), Some(d)) = (&def.timeout, timeout)
                && d.is_zero()
            {
                self.error("`timeout` must be longer than zero", t);
            }
            self.file = origins.outputs;
            for output in &def.outputs {
                let clean = normalize_path(&output.value);
                if clean.is_empty() || clean == ".." || clean.starts_with("../") {
                    self.error(
                        format!(
                            "output `{}` is the project itself or outside it: an output must be a path inside the pipeline's directory",
                            output.value
                        ),
                        output,
                    );
                }
            }
            let inputs = def.inputs.iter().map(|p| (p, origins.inputs));
            for (pattern, file) in inputs.chain(def.outputs.iter().map(|p| (p, origins.outputs))) {
                self.file = file;
                if Path::new(&pattern.value).is_absolute() {
                    self.error(
                        format!(
                            "`{}` is an absolute path: inputs and outputs are relative to the pipeline's directory",
                            pattern.value
                        ),
                        pattern,
                    );
                } else if let Err(err) = crate::inputs::compile(&pattern.value) {
                    self.error(
                        format!("bad glob `{}`: {}", pattern.value, err.kind()),
                        pattern,
                    );
                }
            }
            self.file = origins.when;
            let mut when = def.when.as_ref().map(|w| self.when(w));
            if !def.publish.is_empty() && when.is_none() {
                // A release is pushing a tag: publishing happens on tag runs unless told.
                when = Some(When {
                    triggers: Some(vec![Trigger::Tag]),
                    ..When::default()
                });
            }
            self.file = origins.requires;
            let mut requires = Vec::new();
            for required in &def.requires {
                let targets: Vec<StageId> = match self.groups.get(&required.value) {
                    Some(instances) => instances
                        .iter()
                        .filter_map(|i| ids.get(i.as_str()).copied())
                        .collect(),
                    None => ids
                        .get(required.value.as_str())
                        .copied()
                        .into_iter()
                        .collect(),
                };
                match targets.first() {
                    Some(_) => {
                        for id in targets {
                            requires.push(id);
                            if !needs.contains(&id) {
                                needs.push(id);
                            }
                        }
                    }
                    None => {
                        let hint = did_you_mean(&required.value, ids.keys().copied())
                            .map(|n| format!(" (did you mean `{n}`?)"))
                            .unwrap_or_default();
                        self.error(
                            format!(
                                "stage `{}` requires `{}`, which is not a stage{hint}",
                                name.value, required.value
                            ),
                            required,
                        );
                    }
                }
            }
            if !def.requires.is_empty() && def.publish.is_empty() {
                self.error(
                    format!(
                        "`requires` gates publishing, and stage `{}` publishes nothing",
                        name.value
                    ),
                    &def.requires[0],
                );
            }
            self.file = *stage_file;
            if def.cache == Some(true) && (!def.publish.is_empty() || def.archive.is_some()) {
                self.error(
                    format!("stage `{}` archives or publishes, which must happen every run: it cannot be `cache: true`", name.value),
                    name,
                );
            }
            let stage_secrets: Vec<String> = def.secrets.iter().map(|s| s.value.clone()).collect();
            self.file = origins.publish;
            let publish: Vec<Target> = def
                .publish
                .iter()
                .map(|t| self.target(t, &pipeline.secrets, &def.secrets))
                .collect();
            self.file = origins.archive;
            let archive = (def.archive.as_ref()).map(|a| self.archive((name, *stage_file), a));
            self.file = origins.env;
            let stage_env = self.env(&def.env);
            let source = &pipeline.files[*stage_file];
            stages.push(Stage {
                name: name.value.clone(),
                source: source
                    .path
                    .strip_prefix(&root)
                    .unwrap_or(&source.path)
                    .display()
                    .to_string(),
                owner: source.pipeline.owner.clone(),
                needs,
                needs_optional,
                when,
                commands,
                shell,
                inputs: def.inputs.iter().map(|s| s.value.clone()).collect(),
                outputs: def.outputs.iter().map(|s| s.value.clone()).collect(),
                cacheable: def.cache.unwrap_or(
                    def.archive.is_none()
                        && def.publish.is_empty()
                        && (!def.inputs.is_empty() || !def.outputs.is_empty()),
                ),
                publish,
                requires,
                secrets: stage_secrets,
                group: self
                    .values
                    .contains_key(&name.value)
                    .then(|| name.value.split('[').next().unwrap_or_default().to_owned()),
                matrix: self.values.get(&name.value).cloned().unwrap_or_default(),
                archive,
                env: stage_env,
                pass_env: def.pass_env.clone(),
                workdir: def
                    .workdir
                    .as_ref()
                    .map(|w| PathBuf::from(&w.value))
                    .unwrap_or_else(|| PathBuf::from(".")),
                timeout,
                retry,
            });
        }

        // The whole-graph checks need every stage right; unknown keys do not spoil it.
        if self.errors.len() == known_before {
            self.check_cycles(&stages);
            self.check_outputs();
            self.check_retention(&stages);
        }
        if !self.errors.is_empty() {
            return Err(PlanError::Invalid(self.errors));
        }
        Ok(Plan {
            name,
            file: pipeline.files[0].path.clone(),
            root,
            env,
            pass_env: pipeline.pass_env.clone(),
            description_from_commit,
            release_tags,
            secrets: pipeline.secrets.iter().map(|s| s.value.clone()).collect(),
            notify,
            stages,
        })
    }

    fn error<T>(&mut self, message: impl Into<String>, at: &Spanned<T>) {
        self.errors.push(self.source().error(message, span_of(at)));
    }

    /// The file being checked.
    fn source(&self) -> &Source {
        &self.pipeline.files[self.file]
    }

    fn when(&mut self, def: &WhenDef) -> When {
        let triggers = def.trigger.as_ref().map(|list| {
            let mut triggers = Vec::new();
            for name in &list.value.0 {
                match Trigger::parse(name) {
                    Some(t) => triggers.push(t),
                    None => {
                        let names = Trigger::ALL.map(Trigger::name);
                        let hint = did_you_mean(name, names)
                            .map(|n| format!(" (did you mean `{n}`?)"))
                            .unwrap_or_else(|| format!("; triggers are: {}", names.join(", ")));
                        let at = self.source().find_after(span_of(list), name);
                        self.errors.push(
                            self.source()
                                .error(format!("`{name}` is not a trigger{hint}"), at),
                        );
                    }
                }
            }
            triggers
        });
        let mut patterns = |list: &Option<Spanned<StringList>>| {
            list.as_ref().map(|list| {
                list.value
                    .0
                    .iter()
                    .filter_map(|text| self.pattern(list, text))
                    .collect()
            })
        };
        When {
            triggers,
            branches: patterns(&def.branch),
            tags: patterns(&def.tag),
        }
    }

    /// A branch or tag glob: `*` matches `/` too (`release/*` is any release branch).
    fn pattern<T>(&mut self, at: &Spanned<T>, text: &str) -> Option<Pattern> {
        match globset::Glob::new(text) {
            Ok(glob) => Some(Pattern {
                text: text.to_owned(),
                matcher: glob.compile_matcher(),
            }),
            Err(err) => {
                self.error(format!("bad pattern `{text}`: {}", err.kind()), at);
                None
            }
        }
    }

    /// A secret a target or notification names must be declared in a `secrets:` list, so one
    /// place says what a run needs and what must be masked.
    fn declared_secret(&mut self, name: &Spanned<String>, lists: &[&[Spanned<String>]]) {
        if !lists
            .iter()
            .any(|list| list.iter().any(|s| s.value == name.value))
        {
            self.error(
                format!(
                    "`{}` is not declared in `secrets:` (the pipeline's or the stage's)",
                    name.value
                ),
                name,
            );
        }
    }

    fn files(&mut self, files: &[Spanned<String>]) -> Vec<String> {
        for pattern in files {
            if Path::new(&pattern.value).is_absolute() {
                self.error(
                    format!(
                        "`{}` is an absolute path: files are relative to the pipeline's directory",
                        pattern.value
                    ),
                    pattern,
                );
            } else if let Err(err) = crate::inputs::compile(&pattern.value) {
                self.error(
                    format!("bad glob `{}`: {}", pattern.value, err.kind()),
                    pattern,
                );
            }
        }
        files.iter().map(|f| f.value.clone()).collect()
    }

    fn target(
        &mut self,
        def: &TargetDef,
        pipeline_secrets: &[Spanned<String>],
        stage_secrets: &[Spanned<String>],
    ) -> Target {
        match def {
            TargetDef::Pypi(p) => {
                self.declared_secret(&p.password, &[pipeline_secrets, stage_secrets]);
                let repository_url = p
                    .repository_url
                    .clone()
                    .unwrap_or_else(|| PYPI_UPLOAD_URL.into());
                let index_url = p
                    .index_url
                    .clone()
                    .unwrap_or_else(|| default_index(&repository_url));
                Target::Pypi {
                    files: self.files(&p.files),
                    repository_url,
                    index_url,
                    username: p.username.clone().unwrap_or_else(|| "__token__".into()),
                    password_secret: p.password.value.clone(),
                }
            }
            TargetDef::Http(h) => {
                if let Some(token) = &h.token {
                    self.declared_secret(token, &[pipeline_secrets, stage_secrets]);
                }
                if !h.url.value.contains("{file}") && !h.url.value.contains("{path}") {
                    self.error("the `url` must hold `{file}` or `{path}`, or every file would land on one URL", &h.url);
                }
                Target::Http {
                    files: self.files(&h.files),
                    url: h.url.value.clone(),
                    token_secret: h.token.as_ref().map(|t| t.value.clone()),
                }
            }
            TargetDef::GitPages(g) => Target::GitPages {
                dir: g.dir.value.clone(),
                remote: g.remote.value.clone(),
                branch: g.branch.clone().unwrap_or_else(|| "gh-pages".into()),
            },
            TargetDef::Command(c) => Target::Command {
                run: c.run.clone(),
                files: self.files(&c.files),
                check: c.check.clone(),
            },
        }
    }

    fn notify(&mut self, def: &NotifyDef, secrets: &[Spanned<String>]) -> Notify {
        let (kind, hook) = match def {
            NotifyDef::Webhook(h) => (NotifyKind::Webhook, h),
            NotifyDef::Slack(h) => (NotifyKind::Slack, h),
        };
        let url = match (&hook.url, &hook.url_secret) {
            (Some(url), None) => UrlSource::Literal(url.value.clone()),
            (None, Some(secret)) => {
                self.declared_secret(secret, &[secrets]);
                UrlSource::Secret(secret.value.clone())
            }
            (Some(url), Some(_)) => {
                self.error("give `url` or `url_secret`, not both", url);
                UrlSource::Literal(url.value.clone())
            }
            (None, None) => {
                self.errors.push(self.source().error(
                    "a notification needs `url` or `url_secret`",
                    crate::diagnostic::Span::start(),
                ));
                UrlSource::Literal(String::new())
            }
        };
        let mut on = Vec::new();
        for event in &hook.on {
            match event.value.as_str() {
                "success" => on.push(NotifyEvent::Success),
                "failure" => on.push(NotifyEvent::Failure),
                "release" => on.push(NotifyEvent::Release),
                other => self.error(
                    format!("`{other}` is not a notification event: use `success`, `failure` or `release`"),
                    event,
                ),
            }
        }
        if hook.on.is_empty() {
            on = vec![NotifyEvent::Failure, NotifyEvent::Release];
        }
        Notify { kind, url, on }
    }

    /// `stage`: the stage's name and the file that defines it (the archive may come from a
    /// template in another).
    fn archive(&mut self, stage: (&Spanned<String>, FileId), def: &ArchiveDef) -> ArchiveSpec {
        let (stage, stage_file) = stage;
        let name = match &def.name {
            Some(template) => {
                let mut rest = template.value.as_str();
                while let Some(open) = rest.find('{') {
                    let Some(close) = rest[open..].find('}') else {
                        self.error("unclosed `{` in the archive name", template);
                        break;
                    };
                    let key = &rest[open + 1..open + close];
                    if !ARCHIVE_PLACEHOLDERS.contains(&key) {
                        let hint = did_you_mean(key, ARCHIVE_PLACEHOLDERS.iter().copied())
                            .map(|n| format!(" (did you mean `{{{n}}}`?)"))
                            .unwrap_or_else(|| {
                                format!(
                                    "; placeholders are {{{}}}",
                                    ARCHIVE_PLACEHOLDERS.join("} {")
                                )
                            });
                        self.error(
                            format!("unknown placeholder `{{{key}}}` in the archive name{hint}"),
                            template,
                        );
                    }
                    rest = &rest[open + close + 1..];
                }
                if template.value.contains('/') {
                    self.error(
                        "the archive name is a file name: it cannot hold `/`",
                        template,
                    );
                }
                template.value.clone()
            }
            None => "{name}-{build}".to_owned(),
        };
        if def.files.is_empty() {
            let archive_file = std::mem::replace(&mut self.file, stage_file);
            self.error(
                format!(
                    "the `archive` of stage `{}` has no `files` to keep",
                    stage.value
                ),
                stage,
            );
            self.file = archive_file;
        }
        for pattern in &def.files {
            if Path::new(&pattern.value).is_absolute() {
                self.error(
                    format!("`{}` is an absolute path: archive files are relative to the pipeline's directory", pattern.value),
                    pattern,
                );
            } else if let Err(err) = crate::inputs::compile(&pattern.value) {
                self.error(
                    format!("bad glob `{}`: {}", pattern.value, err.kind()),
                    pattern,
                );
            }
        }
        let retention = def.retention.as_ref();
        ArchiveSpec {
            name,
            files: def.files.iter().map(|f| f.value.clone()).collect(),
            keep_last: retention.and_then(|r| r.keep_last).unwrap_or(30),
            keep_days: retention.and_then(|r| r.keep_days).unwrap_or(30),
            root: def
                .root
                .as_ref()
                .map(|r| normalize(Path::new(&r.value)))
                .unwrap_or_else(|| PathBuf::from("artifacts")),
        }
    }

    fn check_stage_name(&mut self, name: &Spanned<String>) {
        let valid = name
            .value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            self.error(
                format!(
                    "stage name `{}` is not allowed: use letters, digits, `_`, `-` and `.`, starting with a letter or digit",
                    name.value
                ),
                name,
            );
        }
    }

    /// `stage`: the stage's name and the file that defines it.
    fn commands(
        &mut self,
        stage: (&Spanned<String>, FileId),
        run: Option<&StringList>,
    ) -> Vec<String> {
        let Some(StringList(commands)) = run else {
            return Vec::new();
        };
        if commands.iter().any(|c| c.trim().is_empty()) {
            // `run` has no place of its own: point at the stage's name, in the stage's file.
            let (name, file) = stage;
            self.file = file;
            self.error(
                format!("stage `{}` has an empty command in `run`", name.value),
                name,
            );
        }
        commands.clone()
    }

    /// A `shell:` value, checked; `sh` after an error (which is recorded).
    fn shell(&mut self, written: &Spanned<String>) -> Shell {
        Shell::parse(&written.value).unwrap_or_else(|message| {
            self.error(message, written);
            Shell::Sh
        })
    }

    fn env(&mut self, entries: &Entries<Scalar>) -> Vec<(String, String)> {
        let mut env = Vec::with_capacity(entries.0.len());
        for (key, Scalar(value)) in &entries.0 {
            if key.value.is_empty() || key.value.contains(['=', '\0']) {
                self.error(
                    format!("`{}` is not a valid environment variable name", key.value),
                    key,
                );
            } else if RESERVED_ENV.contains(&key.value.as_str()) {
                self.error(
                    format!(
                        "`{}` is set by murphy for each stage and cannot be set in `env`",
                        key.value
                    ),
                    key,
                );
            }
            env.push((key.value.clone(), value.clone()));
        }
        env
    }

    fn duration(&mut self, value: &Spanned<Scalar>) -> Option<Duration> {
        // A week is longer than any CI system lets a job run; beyond it is a typo.
        const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);
        match humantime::parse_duration(&value.value.0) {
            Ok(d) if d > LONGEST => {
                self.error(
                    format!(
                        "duration `{}` is longer than a week; murphy allows at most `7d`",
                        value.value.0
                    ),
                    value,
                );
                None
            }
            Ok(d) => Some(d),
            Err(_) => {
                self.error(
                    format!(
                        "bad duration `{}`: expected a number with a unit, like `90s`, `20m` or `1h 30m`",
                        value.value.0
                    ),
                    value,
                );
                None
            }
        }
    }

    /// Finds one cycle, if any, and reports it along the `needs` entry that closes it.
    fn check_cycles(&mut self, stages: &[Stage]) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut marks = vec![Mark::New; stages.len()];
        for start in 0..stages.len() {
            if marks[start] != Mark::New {
                continue;
            }
            // Iterative DFS: (stage, index of the next need to visit).
            let mut path: Vec<(StageId, usize)> = vec![(start, 0)];
            marks[start] = Mark::OnPath;
            while let Some(&mut (node, ref mut next)) = path.last_mut() {
                if let Some(&need) = stages[node].needs.get(*next) {
                    *next += 1;
                    match marks[need] {
                        Mark::New => {
                            marks[need] = Mark::OnPath;
                            path.push((need, 0));
                        }
                        Mark::OnPath => {
                            let from = path.iter().position(|&(n, _)| n == need).unwrap_or(0);
                            let mut names: Vec<&str> = path[from..]
                                .iter()
                                .map(|&(n, _)| stages[n].name.as_str())
                                .collect();
                            names.push(&stages[need].name);
                            self.report_cycle(&names);
                            return;
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[node] = Mark::Done;
                    path.pop();
                }
            }
        }
    }

    fn report_cycle(&mut self, names: &[&str]) {
        let chain = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(" -> ");
        let message = if names.len() == 2 {
            format!("stage `{}` needs itself", names[0])
        } else {
            format!("stages form a cycle: {chain}")
        };
        // Point at the need of the last stage on the path that closes the loop.
        let closing_stage = names[names.len() - 2];
        let closing_need = names[names.len() - 1];
        let defs = self.defs;
        let Some(stage) = defs.iter().find(|r| r.name.value == closing_stage) else {
            return;
        };
        let needs = stage.def.needs.iter().map(|n| (n, stage.origins.needs));
        let optional = (stage.def.needs_optional.iter()).map(|n| (n, stage.origins.needs_optional));
        match needs.chain(optional).find(|(n, _)| n.value == closing_need) {
            Some((need, file)) => {
                self.file = file;
                self.error(message, need)
            }
            None => {
                self.file = stage.file;
                self.error(message, &stage.name)
            }
        }
    }

    /// Stages archiving into one root share its builds, so they must agree on retention.
    fn check_retention(&mut self, stages: &[Stage]) {
        let mut seen: HashMap<&Path, &Stage> = HashMap::new();
        for stage in stages {
            let Some(spec) = &stage.archive else { continue };
            match seen.get(spec.root.as_path()) {
                Some(first) => {
                    let other = first.archive.as_ref().map(|a| (a.keep_last, a.keep_days));
                    if other != Some((spec.keep_last, spec.keep_days)) {
                        let at = self.defs;
                        if let Some(Resolved { name, file, .. }) =
                            at.iter().find(|r| r.name.value == stage.name)
                        {
                            self.file = *file;
                            self.error(
                                format!(
                                    "stages `{}` and `{}` archive into `{}` with different retention; give them the same",
                                    first.name,
                                    stage.name,
                                    spec.root.display()
                                ),
                                name,
                            );
                        }
                    }
                }
                None => {
                    seen.insert(&spec.root, stage);
                }
            }
        }
    }

    fn check_outputs(&mut self) {
        let mut seen: HashMap<String, (&str, &Spanned<String>, FileId)> = HashMap::new();
        let mut duplicates = Vec::new();
        let files = &self.pipeline.files;
        for Resolved {
            name: stage,
            def,
            origins,
            ..
        } in self.defs
        {
            for output in &def.outputs {
                let key = normalize_path(&output.value);
                match seen.get(&key) {
                    Some((first_stage, first, first_file)) => duplicates.push((
                        output,
                        origins.outputs,
                        format!(
                            "stage `{}` declares output `{}`, which stage `{}` already declares",
                            stage.value, output.value, first_stage
                        ),
                        format!(
                            "first declared at {}:{}:{}; each output has exactly one producer",
                            files[*first_file].path.display(),
                            first.referenced.line(),
                            first.referenced.column()
                        ),
                    )),
                    None => {
                        seen.insert(key, (stage.value.as_str(), output, origins.outputs));
                    }
                }
            }
        }
        for (at, file, message, note) in duplicates {
            self.errors
                .push(files[file].error(message, span_of(at)).with_note(note));
        }
    }
}

fn default_release_tags() -> Pattern {
    Pattern {
        text: "v*".into(),
        matcher: globset::Glob::new("v*")
            .map(|g| g.compile_matcher())
            .unwrap_or_else(|_| unreachable!("`v*` is a valid glob")),
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

/// `./target//x/` and `target/x` name the same output.
fn normalize_path(path: &str) -> String {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Loads a pipeline file and its includes (git ones at the commits `pipeline.lock` pins,
/// fetched into `state`'s cache when missing) and plans it: what every command that reads a
/// pipeline wants.
pub fn load(path: &Path, state: &Path) -> Result<Plan, crate::Error> {
    use crate::include::{self, fetch::Cache, lockfile};
    let lock = lockfile::Lockfile::of_pipeline(path).map_err(include::IncludeError::from)?;
    let cache = Cache::of_state_dir(state);
    let pipeline = include::load(path, &cache, include::Pins::Locked(lock.as_ref()))?;
    Ok(Plan::new(&pipeline)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, PlanError> {
        let source = crate::config::parse(Path::new("pipeline.yml"), text.to_owned()).unwrap();
        Plan::new(&Pipeline::single(source))
    }

    fn plan_err(text: &str) -> String {
        plan(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_need_points_at_it_with_a_suggestion() {
        let err =
            plan_err("version: 1\nstages:\n  lint: {run: x}\n  build: {needs: [lnit], run: y}\n");
        assert_eq!(
            err,
            "pipeline.yml:4:19: stage `build` needs `lnit`, which is not a stage (did you mean `lint`?)\n  |\n4 |   build: {needs: [lnit], run: y}\n  |                   ^^^^"
        );
    }

    #[test]
    fn cycle_is_printed_in_order() {
        let err = plan_err(
            "version: 1\nstages:\n  a: {needs: [c]}\n  b: {needs: [a]}\n  c: {needs: [b]}\n",
        );
        assert!(
            err.starts_with("pipeline.yml:4:15: stages form a cycle: `a` -> `c` -> `b` -> `a`"),
            "{err}"
        );
    }

    #[test]
    fn self_need_is_a_cycle() {
        let err = plan_err("version: 1\nstages:\n  a: {needs: [a]}\n");
        assert!(
            err.starts_with("pipeline.yml:3:15: stage `a` needs itself"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_outputs_name_both_places() {
        let err =
            plan_err("version: 1\nstages:\n  a: {outputs: [dist/x]}\n  b: {outputs: [./dist/x]}\n");
        assert!(
            err.starts_with("pipeline.yml:4:17: stage `b` declares output `./dist/x`, which stage `a` already declares"),
            "{err}"
        );
        assert!(err.contains("first declared at pipeline.yml:3:17"), "{err}");
    }

    #[test]
    fn bad_duration_is_reported_where_written() {
        let err = plan_err("version: 1\nstages:\n  a: {run: x, timeout: 20 minutes please}\n");
        assert!(
            err.starts_with("pipeline.yml:3:24: bad duration `20 minutes please`"),
            "{err}"
        );
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let err =
            plan_err("version: 1\nstages:\n  a: {needs: [x], timeout: soon}\n  b: {needs: [y]}\n");
        assert_eq!(err.matches("pipeline.yml:").count(), 3, "{err}");
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
