//! The planner: checks every stage of a pipeline, value by value, into a [`Plan`], collecting
//! every error (each in the file that wrote the value) before giving up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Notify, Plan, PlanError, RESERVED_ENV, Retry, Stage, StageId, Target};
use crate::config::{Entries, Scalar, Source, Spanned, StringList, WhenDef, span_of};
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::extends::Resolved;
use crate::include::{FileId, Pipeline};
use crate::shell::Shell;
use crate::trigger::{Pattern, Trigger, When};

/// Collects every error in the file before giving up, so one edit fixes many.
pub(super) struct Planner<'a> {
    pub(super) pipeline: &'a Pipeline,
    /// The file the value being checked was written in: where errors point.
    pub(super) file: FileId,
    /// The stages as written, with `extends:` applied and matrices expanded.
    pub(super) defs: &'a [Resolved],
    /// Matrix stages (groups) and their instances; each instance's values.
    pub(super) groups: &'a HashMap<String, Vec<String>>,
    pub(super) values: &'a HashMap<String, Vec<(String, String)>>,
    pub(super) errors: Vec<Diagnostic>,
}

impl Planner<'_> {
    pub(super) fn plan(mut self) -> Result<Plan, PlanError> {
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
        let store =
            file.store
                .as_ref()
                .and_then(|url| match crate::remote::StoreUrl::parse(&url.value) {
                    Ok(url) => Some(url),
                    Err(e) => {
                        self.error(e.to_string(), url);
                        None
                    }
                });
        let ci = self.ci(file.ci.as_ref());
        let hooks = file.serve.as_ref().and_then(|s| s.webhooks.as_ref());
        let webhooks = crate::plan::Webhooks {
            github_secret: hooks
                .and_then(|h| h.github.as_ref())
                .map(|g| g.secret.value.clone()),
            gitlab_token: hooks
                .and_then(|h| h.gitlab.as_ref())
                .map(|g| g.token.value.clone()),
            azure_devops: hooks
                .and_then(|h| h.azure_devops.as_ref())
                .map(|a| (a.username.value.clone(), a.password.value.clone())),
        };
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
            // An output the project holds whole, or that holds it, could make a resume
            // remove the project: said so in its own words, and only once.
            let mut paths: Vec<_> = def.inputs.iter().map(|p| (p, origins.inputs)).collect();
            for output in &def.outputs {
                let why = match crate::inputs::normalize(&output.value) {
                    Ok(path) if path.is_empty() => String::new(),
                    Err(escape @ crate::inputs::Escape::Above) => format!(" ({escape})"),
                    _ => {
                        paths.push((output, origins.outputs));
                        continue;
                    }
                };
                self.error(
                    format!(
                        "output `{}` is the project itself or outside it{why}: an output must be a path inside the pipeline's directory",
                        output.value
                    ),
                    output,
                );
            }
            for (pattern, file) in paths {
                self.file = file;
                self.relative_path(pattern, "inputs and outputs are");
            }
            self.file = origins.workdir;
            let workdir = match &def.workdir {
                Some(w) => self.workdir(w),
                None => PathBuf::new(),
            };
            self.file = origins.reports;
            let junit = def
                .reports
                .as_ref()
                .and_then(|r| r.junit.as_ref())
                .and_then(|path| self.report_path(path));
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
                workdir: if workdir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    workdir
                },
                outside_links: def.outside_links.unwrap_or(false),
                timeout,
                retry,
                junit,
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
            store,
            ci,
            secrets: pipeline.secrets.iter().map(|s| s.value.clone()).collect(),
            notify,
            webhooks,
            stages,
        })
    }

    /// A path or glob the pipeline names: relative, inside the project once its `..` parts
    /// are resolved, and a glob that compiles. `what` says what such paths are, for the
    /// message (`inputs and outputs are`).
    pub(super) fn relative_path(&mut self, pattern: &Spanned<String>, what: &str) {
        if Path::new(&pattern.value).is_absolute() {
            self.error(
                format!(
                    "`{}` is an absolute path: {what} relative to the pipeline's directory",
                    pattern.value
                ),
                pattern,
            );
        } else if let Err(escape) = crate::inputs::normalize(&pattern.value) {
            self.error(
                format!(
                    "`{}` leaves the project ({escape}): {what} paths inside the pipeline's directory",
                    pattern.value
                ),
                pattern,
            );
        } else if let Err(err) = crate::inputs::parse(&pattern.value) {
            self.error(
                format!("bad glob `{}`: {}", pattern.value, err.kind()),
                pattern,
            );
        }
    }

    /// A stage's `workdir`, made lexical: a directory inside the project (`""` is the
    /// project itself). Used as resolved, so a `..` after a symlink cannot lead elsewhere.
    fn workdir(&mut self, workdir: &Spanned<String>) -> PathBuf {
        match crate::inputs::lexical(Path::new(&workdir.value)) {
            Ok(path) => path,
            Err(escape) => {
                self.error(
                    format!(
                        "workdir `{}` leaves the project ({escape}): it is a directory inside the pipeline's directory",
                        workdir.value
                    ),
                    workdir,
                );
                PathBuf::new()
            }
        }
    }

    /// A `reports:` path: a file inside the project, made lexical.
    fn report_path(&mut self, path: &Spanned<String>) -> Option<PathBuf> {
        match crate::inputs::lexical(Path::new(&path.value)) {
            Ok(lexical) if !lexical.as_os_str().is_empty() => Some(lexical),
            Ok(_) => {
                self.error(
                    "a report path names a file inside the pipeline's directory, not the directory itself",
                    path,
                );
                None
            }
            Err(escape) => {
                self.error(
                    format!(
                        "report `{}` leaves the project ({escape}): it is a file inside the pipeline's directory",
                        path.value
                    ),
                    path,
                );
                None
            }
        }
    }

    pub(super) fn error<T>(&mut self, message: impl Into<String>, at: &Spanned<T>) {
        self.errors.push(self.source().error(message, span_of(at)));
    }

    /// The file being checked.
    pub(super) fn source(&self) -> &Source {
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
    pub(super) fn pattern<T>(&mut self, at: &Spanned<T>, text: &str) -> Option<Pattern> {
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

    pub(super) fn duration(&mut self, value: &Spanned<Scalar>) -> Option<Duration> {
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
                let key = crate::inputs::normalize(&output.value)
                    .unwrap_or_else(|_| output.value.clone());
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

impl Planner<'_> {
    /// `ci:` with its defaults; the schedule must be a cron line CI providers take.
    fn ci(&mut self, def: Option<&crate::config::CiDef>) -> super::CiSettings {
        let mut ci = super::CiSettings::default();
        let Some(def) = def else { return ci };
        // An empty `image` is a choice: the runner's own environment (a shell executor).
        if let Some(image) = &def.image {
            ci.image = image.value.trim().to_owned();
        }
        for value in [&def.install, &def.default_branch].into_iter().flatten() {
            if value.value.trim().is_empty() {
                self.error("expected a value, not an empty string", value);
            }
        }
        ci.install = def.install.as_ref().map(|v| v.value.clone());
        if let Some(branch) = &def.default_branch {
            ci.default_branch = branch.value.clone();
        }
        if let Some(schedule) = &def.schedule {
            match check_cron(&schedule.value) {
                Ok(()) => {
                    ci.schedule = schedule
                        .value
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                }
                Err(why) => self.error(
                    format!("`schedule: {}` is not a cron line: {why}", schedule.value),
                    schedule,
                ),
            }
        }
        ci.env = self.env(&def.env);
        if let Some(labels) = &def.runs_on {
            if labels.value.0.is_empty() {
                self.error("`runs_on` needs at least one label", labels);
            } else {
                ci.runs_on = labels.value.0.clone();
            }
        }
        ci
    }
}

/// Checks a 5-field cron line (minute, hour, day of month, month, day of week) of numbers,
/// `*`, ranges, lists and steps: what both GitHub and GitLab schedules accept.
fn check_cron(line: &str) -> Result<(), String> {
    const FIELDS: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 6),
    ];
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    for (field, (what, low, high)) in fields.iter().zip(FIELDS) {
        let bad = |detail: String| format!("the {what} field `{field}` {detail}");
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step
                && !step.parse::<u32>().is_ok_and(|n| n >= 1)
            {
                return Err(bad(format!(
                    "has a step `{step}` that is not a whole number above 0"
                )));
            }
            if range == "*" {
                continue;
            }
            let (from, to) = range.split_once('-').unwrap_or((range, range));
            for number in [from, to] {
                match number.parse::<u32>() {
                    Ok(n) if (low..=high).contains(&n) => {}
                    Ok(n) => return Err(bad(format!("has {n}, outside {low}-{high}"))),
                    Err(_) => {
                        return Err(bad(format!(
                            "has `{number}`, which is not a number from {low} to {high}"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

fn default_release_tags() -> Pattern {
    Pattern {
        text: "v*".into(),
        matcher: globset::Glob::new("v*")
            .map(|g| g.compile_matcher())
            .unwrap_or_else(|_| unreachable!("`v*` is a valid glob")),
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::tests::plan_err;

    /// Checked by parsing alone: a glob that parses compiles.
    #[test]
    fn a_glob_that_does_not_parse_is_named_where_it_is() {
        let err = plan_err("version: 1\nstages:\n  a: {run: x, inputs: [ok/**, 'src/[a']}\n");
        assert!(
            err.starts_with("pipeline.yml:3:31: bad glob `src/[a`: unclosed character class"),
            "{err}"
        );
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
    fn a_schedule_that_is_not_cron_is_pointed_at() {
        let err = plan_err("version: 1\nci: {schedule: \"0 3 * *\"}\nstages: {}\n");
        assert!(
            err.starts_with(
                "pipeline.yml:2:16: `schedule: 0 3 * *` is not a cron line: expected 5 fields"
            ),
            "{err}"
        );
        let err = plan_err("version: 1\nci:\n  schedule: 0 25 * * *\nstages: {}\n");
        assert!(
            err.starts_with("pipeline.yml:3:13: `schedule: 0 25 * * *` is not a cron line: the hour field `25` has 25, outside 0-23"),
            "{err}"
        );
        let ok = crate::plan::tests::plan(
            "version: 1\nci: {schedule: \"*/15 1-5,7 * 1-12/2 0\"}\nstages: {}\n",
        );
        assert_eq!(ok.unwrap().ci.schedule, "*/15 1-5,7 * 1-12/2 0");
    }
}
