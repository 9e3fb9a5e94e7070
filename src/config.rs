//! `pipeline.yml` as written: serde types that keep every value's place in the file.
//!
//! This is the only module that reads YAML. It checks syntax and shape; meaning (do the
//! `needs` exist, is there a cycle, is `20m` a duration) is the planner's job, which is why
//! the values the planner judges are kept as [`Spanned`] strings.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
pub use spanned::{Location, Spanned};

use crate::diagnostic::{Diagnostic, Span, did_you_mean};

#[cfg(test)]
mod fuzz;
mod keys;
mod plain;
mod spanned;
mod unknown_fields;

/// The pipeline format this murphy reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The file name murphy looks for when `--file` is not given.
pub const DEFAULT_FILE: &str = "pipeline.yml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found before the file could be read into its types; never empty.
    #[error("{}", crate::diagnostic::List(.0))]
    Invalid(Vec<Diagnostic>),
}

/// A pipeline file as read: its path and text (for diagnostics) and its parsed content.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    pub pipeline: PipelineFile,
    /// Keys the file gives that no part of a pipeline has: errors the planner reports with
    /// its own, so one run of murphy names every mistake.
    pub unknown_keys: Vec<Diagnostic>,
}

impl Source {
    /// A diagnostic pointing at `at` in this file.
    pub fn error(&self, message: impl Into<String>, at: Span) -> Diagnostic {
        Diagnostic::new(message, &self.path, &self.text, at)
    }

    /// Where `needle` is first written at or after `from`: the place of one entry of a list
    /// whose only recorded place is the list's start.
    pub fn find_after(&self, from: Span, needle: &str) -> Span {
        let line_start: usize = self
            .text
            .split_inclusive('\n')
            .take(from.line.saturating_sub(1))
            .map(str::len)
            .sum();
        let offset = self.text[line_start..]
            .char_indices()
            .nth(from.column.saturating_sub(1))
            .map_or(self.text.len(), |(i, _)| line_start + i);
        let Some(found) = self.text[offset..].find(needle).map(|i| offset + i) else {
            return from;
        };
        let (line, column) = line_and_column(&self.text[..found]);
        Span::new(line, column, needle.chars().count())
    }
}

/// The 1-based line and column (in characters) just after `before`.
fn line_and_column(before: &str) -> (usize, usize) {
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Reads and parses a pipeline file. Syntax, unknown keys, wrong types and the format
/// version are checked here; everything else is checked by the planner.
pub fn load(path: &Path) -> Result<Source, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, decode(path, bytes)?)
}

/// The text of a pipeline file, or an error at the first byte that is not UTF-8.
pub fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|err| {
        let bytes = err.as_bytes();
        let good = err.utf8_error().valid_up_to();
        // The prefix is valid by definition; the lossy text shows the line with U+FFFD for
        // the bad byte, one character, so the caret lands under it.
        let before = String::from_utf8_lossy(&bytes[..good]);
        let (line, column) = line_and_column(&before);
        let text = String::from_utf8_lossy(bytes);
        let message = format!(
            "byte 0x{:02x} is not UTF-8: a pipeline file must be UTF-8 text",
            bytes[good]
        );
        ConfigError::Invalid(vec![Diagnostic::new(
            message,
            path,
            &text,
            Span::new(line, column, 1),
        )])
    })
}

/// The JSON Schema as a value, for the unknown-key walk; made once.
static SCHEMA: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| schema().to_value());

/// Parses pipeline text that claims to come from `path`.
pub fn parse(path: &Path, text: String) -> Result<Source, ConfigError> {
    // The plain reader first, serde-saphyr for what it gives up ([`plain`] says why). Either
    // reads the types in one pass and notes the unknown keys on the way; a file that does not
    // read is read again by the walk, which names every unknown key, those after the error too.
    let found = unknown_fields::Found::default();
    let plain = plain::read(&text, MAX_NODES, |de| {
        unknown_fields::deserialize(de, &found)
    });
    if let Some(pipeline) = plain {
        return noted(path, text, pipeline, found);
    }
    // What the plain reader noted before it gave up is noted again, or not, by serde-saphyr.
    let found = unknown_fields::Found::default();
    let read = serde_saphyr::with_deserializer_from_str_with_options(&text, yaml_options(), |de| {
        unknown_fields::deserialize(de, &found)
    });
    let Ok(pipeline) = read else {
        return parse_with_walk(path, text);
    };
    noted(path, text, pipeline, found)
}

/// A pipeline read in one pass, with the unknown keys `found` on the way.
fn noted(
    path: &Path,
    text: String,
    pipeline: PipelineFile,
    found: unknown_fields::Found,
) -> Result<Source, ConfigError> {
    let errors = (found.into_inner().into_iter())
        .map(|(message, span)| Diagnostic::new(message, path, &text, span))
        .collect();
    checked(path, text, pipeline, errors)
}

/// [`parse`] in two passes: the YAML's shape walked for every unknown key, then the types,
/// whose first error joins them.
fn parse_with_walk(path: &Path, text: String) -> Result<Source, ConfigError> {
    let at = |message: String, span: Span| Diagnostic::new(message, path, &text, span);
    let yaml_error = |err: serde_saphyr::Error| {
        let span = err
            .location()
            .map(|l| Span::new(l.line() as usize, l.column() as usize, 1))
            .unwrap_or_else(Span::start);
        at(yaml_message(&err), span)
    };
    let options = yaml_options();
    let tree: keys::Node = serde_saphyr::from_str_with_options(&text, options.clone())
        .map_err(|err| ConfigError::Invalid(vec![yaml_error(err)]))?;
    let mut errors: Vec<Diagnostic> = keys::unknown(&tree, &SCHEMA)
        .into_iter()
        .map(|(message, span)| at(message, span))
        .collect();
    let pipeline: PipelineFile = match serde_saphyr::from_str_with_options(&text, options) {
        Ok(pipeline) => pipeline,
        Err(err) => {
            errors.push(yaml_error(err));
            return Err(ConfigError::Invalid(errors));
        }
    };
    checked(path, text, pipeline, errors)
}

/// The pipeline read, once its `version` is checked; `errors` are its unknown keys.
fn checked(
    path: &Path,
    text: String,
    pipeline: PipelineFile,
    mut errors: Vec<Diagnostic>,
) -> Result<Source, ConfigError> {
    let at = |message: String, span: Span| Diagnostic::new(message, path, &text, span);
    match &pipeline.version {
        Some(v) if v.value != FORMAT_VERSION => {
            // Another version's keys are not this one's: its unknown keys are no news.
            return Err(ConfigError::Invalid(vec![at(
                format!(
                    "unsupported `version: {}`: this murphy reads version {FORMAT_VERSION}",
                    v.value
                ),
                span_of(v),
            )]));
        }
        Some(_) => {}
        None => {
            let missing = format!("missing `version`: add `version: {FORMAT_VERSION}` at the top");
            errors.insert(0, at(missing, Span::start()));
            return Err(ConfigError::Invalid(errors));
        }
    }
    Ok(Source {
        path: path.to_owned(),
        text,
        pipeline,
        unknown_keys: errors,
    })
}

/// The place of a spanned value, for diagnostics.
pub fn span_of<T>(value: &Spanned<T>) -> Span {
    let at = value.referenced;
    Span::new(
        at.line() as usize,
        at.column() as usize,
        at.width() as usize,
    )
}

/// Turns the YAML crate's message into one in murphy's voice, with "did you mean" for keys.
/// Most YAML nodes a file may hold: room for 200,000 stages, while a file made to exhaust
/// memory (or a billion laughs of aliases, which the crate's other limits stop) is refused.
const MAX_NODES: usize = 2_000_000;

/// How every YAML file murphy reads is parsed. YAML 1.2 booleans only: `run: y` is a
/// command, not `true`.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options!(
        strict_booleans: true,
        with_snippet: false,
        budget: serde_saphyr::budget!(max_nodes: MAX_NODES, max_events: 4 * MAX_NODES),
    )
}

fn yaml_message(err: &serde_saphyr::Error) -> String {
    let raw = err.without_snippet().to_string();
    // The crate appends the position; we print it in front, as `file:line:col`.
    let msg = match raw.rfind(" at line ") {
        Some(i) => &raw[..i],
        None => raw.as_str(),
    };
    // An enum's tag is a key in YAML: `publish: [{comand: ...}]`.
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = expected
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .split(", ")
            .map(|s| s.trim_matches('`'))
            .filter(|s| !s.is_empty())
            .collect();
        let mut out = format!("unknown key `{field}`");
        if let Some(near) = did_you_mean(field, expected.iter().copied()) {
            out.push_str(&format!(" (did you mean `{near}`?)"));
        } else if !expected.is_empty() {
            out.push_str(&format!("; expected one of: {}", expected.join(", ")));
        }
        return out;
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(", set ").next().unwrap_or(rest);
        return format!("duplicate key `{key}`: each key may appear once in a mapping");
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return format!("missing key `{field}`");
    }
    if msg.starts_with("invalid u32") || msg.starts_with("invalid u64") {
        return "expected a whole number".to_owned();
    }
    format!("invalid YAML: {msg}")
}

/// The top level of `pipeline.yml`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(
    title = "murphy pipeline",
    description = "A murphy pipeline (pipeline.yml)"
)]
pub struct PipelineFile {
    /// Format version of this file; must be 1.
    #[schemars(with = "u32", range(min = 1, max = 1))]
    pub version: Option<Spanned<u32>>,
    /// Files whose stages, templates and `env` join this pipeline, in order: `{path: FILE}`
    /// for a file of this project, `{git: URL, ref: REF, file: FILE}` for one pinned in
    /// `pipeline.lock`.
    #[serde(default)]
    #[schemars(with = "Vec<IncludeDef>")]
    pub include: Vec<Spanned<IncludeDef>>,
    /// Who owns this file's stages (a team, a person), shown by `graph` and `status`.
    pub owner: Option<String>,
    /// A name for the pipeline, shown in run listings; defaults to the directory name.
    pub name: Option<String>,
    /// Environment variables for every stage; a stage's own `env` wins over these.
    #[serde(default)]
    pub env: Entries<Scalar>,
    /// Variables of the outer environment every stage may read (besides PATH, HOME, USER,
    /// LANG, TMPDIR, TERM, locale and CI variables, which always pass). Their values are part
    /// of each stage's fingerprint.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// How this file's stages run their commands, unless a stage says otherwise: `sh` (the
    /// default: `sh -e`), `bash` (`bash --noprofile --norc -eo pipefail`), or a command with
    /// `{0}` where the path of a file holding the script goes, like `python3 {0}`.
    #[schemars(with = "Option<String>")]
    pub shell: Option<Spanned<String>>,
    /// `commit` takes each run's change description from the last commit's message.
    #[schemars(with = "Option<String>")]
    pub description: Option<Spanned<String>>,
    /// The shared store that keeps checkpoints, runs, the archive and release confirmations
    /// for every machine: `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`
    /// or `file:///PATH`. Credentials come from each cloud's own variables, never from here.
    /// `--store` and `MURPHY_STORE` override it.
    #[schemars(with = "Option<String>")]
    pub store: Option<Spanned<String>>,
    /// Which tags are releases (for the previous-release link and `MURPHY_VERSION`); `v*`.
    #[schemars(with = "Option<String>")]
    pub release_tags: Option<Spanned<String>>,
    /// Secrets every stage gets, by name: from the environment or the secrets file. Their
    /// values are masked (`***`) in logs, journals, the terminal and notifications.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub secrets: Vec<Spanned<String>>,
    /// Who hears about runs: webhooks called on `success`, `failure` and `release`.
    #[serde(default)]
    pub notify: Vec<NotifyDef>,
    /// How `murphy ci generate` writes the CI provider's file for this pipeline.
    pub ci: Option<CiDef>,
    /// `murphy serve`'s settings: the webhooks it takes from other systems.
    pub serve: Option<ServeDef>,
    /// Stage definitions that are not stages: `extends: NAME` copies one and overrides the
    /// keys it gives.
    #[serde(default)]
    pub templates: Entries<Box<StageDef>>,
    /// The stages, by name. A stage starts once every stage it `needs` succeeded.
    #[serde(default)]
    pub stages: Entries<Box<StageDef>>,
}

/// `ci: {install: "cargo install --locked --git URL murphy", schedule: "0 3 * * *", ...}`: what
/// `murphy ci generate` needs to know that the pipeline does not say.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CiDef {
    /// The command each job runs to put `murphy` on its PATH, like `cargo install --locked
    /// --git URL murphy`; `"true"` when the runner image has it. Not given, each job checks
    /// that murphy is there and fails saying to set this.
    #[schemars(with = "Option<String>")]
    pub install: Option<Spanned<String>>,
    /// When the nightly pipeline runs, as a 5-field cron line in UTC; default `0 3 * * *`.
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Spanned<String>>,
    /// The branch whose pushes run the pipeline (GitHub; GitLab knows its own); default `main`.
    #[schemars(with = "Option<String>")]
    pub default_branch: Option<Spanned<String>>,
    /// GitHub `runs-on` labels; default `ubuntu-latest`.
    #[schemars(with = "Option<StringList>")]
    pub runs_on: Option<Spanned<StringList>>,
    /// The GitLab job image; default `rust:1` (which has cargo for `cargo install`);
    /// `""` for none, on runners with a shell executor.
    #[schemars(with = "Option<String>")]
    pub image: Option<Spanned<String>>,
    /// Plain settings every job gets, like the store's `AWS_REGION` or `AWS_ENDPOINT_URL`
    /// (secrets come from `secrets:`, never from here).
    #[serde(default)]
    pub env: Entries<Scalar>,
}

/// One entry of `include:`: a file of this project, or a file of a git repository.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IncludeDef {
    /// A file of this project, relative to the including file's directory.
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// A repository URL: a path, `file://`, or (through the `git` command) https or ssh.
    #[schemars(with = "Option<String>")]
    pub git: Option<Spanned<String>>,
    /// The branch, tag or commit to take `file` from; `pipeline.lock` pins its commit.
    #[serde(rename = "ref")]
    #[schemars(with = "Option<String>")]
    pub reference: Option<Spanned<String>>,
    /// The file in the repository, relative to its root.
    #[schemars(with = "Option<String>")]
    pub file: Option<Spanned<String>>,
    /// The name `murphy lock --update NAME` knows the include by; default the repository's
    /// name (`pipelines` for `.../pipelines.git`).
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
}

// The parts few stages give are boxed: a stage is copied and moved on its way to the plan,
// and 50,000 of them must not move kilobytes each. (Not a doc comment: it would join the schema.)
/// One stage of the pipeline.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StageDef {
    /// Replace the stage of this name that an included file defines, whole.
    #[serde(rename = "override")]
    #[schemars(with = "Option<bool>")]
    pub overrides: Option<Spanned<bool>>,
    /// Copy this template (or stage) and override the keys given here: each key given
    /// replaces the template's whole value; lists left empty are inherited.
    #[schemars(with = "Option<String>")]
    pub extends: Option<Spanned<String>>,
    /// Stages that must succeed before this one starts.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<Spanned<String>>,
    /// Stages that must succeed first if they run; one skipped by its `when` counts as done.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs_optional: Vec<Spanned<String>>,
    /// Run this stage only for some triggers, branches or tags (all given parts must hold).
    pub when: Option<Box<WhenDef>>,
    /// A script, or a list of them run in order until one fails. Each runs in the stage's
    /// `shell` and fails at its first failing command. A stage without `run` does nothing but
    /// wait for its needs.
    pub run: Option<StringList>,
    /// How `run` (and `publish: command`) is run: `sh` (`sh -e`), `bash` (`bash --noprofile
    /// --norc -eo pipefail`), or a command with `{0}` for the path of a file holding the
    /// script, like `python3 {0}`. Default: the file's top-level `shell`, else `sh`.
    #[schemars(with = "Option<String>")]
    pub shell: Option<Spanned<String>>,
    /// Globs, relative to the pipeline's directory, of the files this stage reads.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
    /// Paths or globs of the files this stage produces.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub outputs: Vec<Spanned<String>>,
    /// Environment variables for this stage only.
    #[serde(default)]
    pub env: Entries<Scalar>,
    /// Variables of the outer environment this stage may read, on top of the pipeline's.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Whether a successful result may be reused while the fingerprint is unchanged. By
    /// default a stage is cached when it declares `inputs` or `outputs`.
    pub cache: Option<bool>,
    /// Directory the commands run in, relative to the pipeline's directory.
    #[schemars(with = "Option<String>")]
    pub workdir: Option<Spanned<String>>,
    /// `true` lets an output be a symlink whose target leaves the project (an absolute
    /// path, or too many `..`). Links are stored as links and never followed either way.
    pub outside_links: Option<bool>,
    /// Longest the stage may run, e.g. `90s`, `20m`, `1h30m`; then its processes are killed.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<Scalar>>,
    /// Run a failed stage again.
    pub retry: Option<Box<RetryDef>>,
    /// Keep this run's artifacts as a numbered build in the archive, after `run` (if any).
    pub archive: Option<Box<ArchiveDef>>,
    /// Publish files after `run` (and `archive`), each exactly once. Runs only on the `tag`
    /// trigger unless `when:` says otherwise.
    #[serde(default)]
    pub publish: Vec<TargetDef>,
    /// Stages that must have succeeded for this commit before this one publishes.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub requires: Vec<Spanned<String>>,
    /// Run the stage once per combination of values: `{dep: ["3006", "3007"], python:
    /// ["3.10", "3.12"]}`, with `exclude:` and `include:` lists of combinations.
    pub matrix: Option<Box<MatrixDef>>,
    /// Secrets this stage gets, on top of the pipeline's.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub secrets: Vec<Spanned<String>>,
    /// Reports the stage writes, for murphy's own: `{junit: PATH}` merges the stage's JUnit
    /// XML test report into the one `murphy run --junit FILE` writes.
    pub reports: Option<Box<ReportsDef>>,
}

/// A stage's reports, paths relative to the pipeline's directory.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReportsDef {
    /// A JUnit XML file the stage writes (pytest's `--junitxml`, cargo-nextest's, ...).
    #[schemars(with = "Option<String>")]
    pub junit: Option<Spanned<String>>,
}

/// One place to publish to.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum TargetDef {
    /// A Python package index, through the upload API twine uses.
    Pypi(PypiDef),
    /// PUT each file to a URL.
    Http(HttpDef),
    /// Commit a folder onto a branch of a git remote and push it.
    GitPages(PagesDef),
    /// Run a command, once or per file.
    Command(CommandDef),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PypiDef {
    #[schemars(with = "Vec<String>")]
    pub files: Vec<Spanned<String>>,
    /// Upload URL; default the public index, `https://upload.pypi.org/legacy/`.
    pub repository_url: Option<String>,
    /// Simple index to check what is there; default derived from `repository_url`.
    pub index_url: Option<String>,
    /// Default `__token__` (an API token as the password).
    pub username: Option<String>,
    /// The name of the secret holding the password or token.
    #[schemars(with = "String")]
    pub password: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HttpDef {
    #[schemars(with = "Vec<String>")]
    pub files: Vec<Spanned<String>>,
    /// Where each file goes; placeholders {name} {version} {file} {path}.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// The name of a secret sent as a bearer token.
    #[schemars(with = "Option<String>")]
    pub token: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PagesDef {
    /// The folder to publish (built docs).
    #[schemars(with = "String")]
    pub dir: Spanned<String>,
    /// A git remote: a path or a `file://` URL.
    #[schemars(with = "String")]
    pub remote: Spanned<String>,
    /// Default `gh-pages`.
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CommandDef {
    /// A command, run in the stage's `shell`; with `files`, run once per file with `{file}`
    /// replaced.
    pub run: String,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub files: Vec<Spanned<String>>,
    /// A command whose success means "already published" (same placeholders), so a re-run
    /// skips it.
    pub check: Option<String>,
}

/// `notify: [{webhook: {url: ..., on: [failure]}}, {slack: {url_secret: SLACK_URL}}]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum NotifyDef {
    /// POST a JSON object describing the run.
    Webhook(HookDef),
    /// POST Slack-compatible `{"text": ...}`.
    Slack(HookDef),
    /// One GitHub or GitLab issue per failing stage: opened on its first failure, commented
    /// on when it fails again, closed when it passes.
    Issue(IssueDef),
}

/// `notify: [{issue: {github: octo/demo, token_secret: GH_TOKEN, triggers: [nightly]}}]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IssueDef {
    /// The GitHub repository, `OWNER/NAME`.
    #[schemars(with = "Option<String>")]
    pub github: Option<Spanned<String>>,
    /// The GitLab project, `GROUP/NAME` (or its numeric id).
    #[schemars(with = "Option<String>")]
    pub gitlab: Option<Spanned<String>>,
    /// The name of the secret holding an API token that may open, comment on and close issues.
    #[schemars(with = "String")]
    pub token_secret: Spanned<String>,
    /// The API's root [default: `https://api.github.com`, `https://gitlab.com/api/v4`].
    #[schemars(with = "Option<String>")]
    pub api: Option<Spanned<String>>,
    /// The triggers whose runs file issues [default: `[nightly]`].
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub triggers: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HookDef {
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// The name of a secret holding the URL (Slack webhook URLs are secrets).
    #[schemars(with = "Option<String>")]
    pub url_secret: Option<Spanned<String>>,
    /// `success`, `failure`, `release`; default `[failure, release]`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub on: Vec<Spanned<String>>,
}

/// `serve: {webhooks: {github: {secret: NAME}}}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ServeDef {
    /// The providers whose webhooks `murphy serve` takes, each checked by its own secret.
    pub webhooks: Option<WebhooksDef>,
}

/// Each provider's webhook, by the names of the secrets that check it (never the values).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WebhooksDef {
    /// `POST /hooks/github`, signed with HMAC-SHA256 (`X-Hub-Signature-256`).
    pub github: Option<GithubHookDef>,
    /// `POST /hooks/gitlab`, with the token in `X-Gitlab-Token`.
    pub gitlab: Option<GitlabHookDef>,
    /// `POST /hooks/azure-devops`, with basic authentication.
    pub azure_devops: Option<AzureHookDef>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GithubHookDef {
    /// The name of the secret holding the webhook's secret.
    #[schemars(with = "String")]
    pub secret: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GitlabHookDef {
    /// The name of the secret holding the webhook's token.
    #[schemars(with = "String")]
    pub token: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AzureHookDef {
    /// The name of the secret holding the basic-auth user name.
    #[schemars(with = "String")]
    pub username: Spanned<String>,
    /// The name of the secret holding the basic-auth password.
    #[schemars(with = "String")]
    pub password: Spanned<String>,
}

/// `archive: {name: "{name}-{version}", files: [...], retention: {...}, root: artifacts}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ArchiveDef {
    /// The bundle's name; placeholders: {name} {version} {build} {sha} {date} {trigger}.
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// Globs of the files to keep, relative to the pipeline's directory.
    #[schemars(with = "Vec<String>")]
    pub files: Vec<Spanned<String>>,
    /// A build is deleted only when it is both older than `keep_days` and not among the
    /// `keep_last` newest. Both default to 30.
    pub retention: Option<RetentionDef>,
    /// Where builds are kept, relative to the pipeline's directory; default `artifacts`.
    #[schemars(with = "Option<String>")]
    pub root: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetentionDef {
    pub keep_last: Option<u64>,
    pub keep_days: Option<u64>,
}

/// `when: {trigger: [pr, push], branch: [main, "release/*"], tag: "v*"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WhenDef {
    /// `local`, `pre-push`, `pr`, `push`, `nightly` or `tag`, or a list of them.
    #[schemars(with = "Option<StringList>")]
    pub trigger: Option<Spanned<StringList>>,
    /// Branch name globs, e.g. `main` or `release/*`.
    #[schemars(with = "Option<StringList>")]
    pub branch: Option<Spanned<StringList>>,
    /// Tag globs, e.g. `v*`.
    #[schemars(with = "Option<StringList>")]
    pub tag: Option<Spanned<StringList>>,
}

/// A stage's `matrix:`: axes of values, and combinations to leave out or add.
#[derive(Debug, Clone, Default)]
pub struct MatrixDef {
    pub axes: Vec<(Spanned<String>, Vec<Spanned<Scalar>>)>,
    pub exclude: Vec<Entries<Scalar>>,
    pub include: Vec<Entries<Scalar>>,
}

impl<'de> Deserialize<'de> for MatrixDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MatrixVisitor;
        impl<'de> Visitor<'de> for MatrixVisitor {
            type Value = MatrixDef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a mapping of names to lists of values, with optional `exclude` and `include`",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MatrixDef, A::Error> {
                let mut matrix = MatrixDef::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.value.as_str() {
                        "exclude" => matrix.exclude = map.next_value()?,
                        "include" => matrix.include = map.next_value()?,
                        _ => {
                            let values: Vec<Spanned<Scalar>> = map.next_value()?;
                            matrix.axes.push((key, values));
                        }
                    }
                }
                Ok(matrix)
            }
        }
        d.deserialize_map(MatrixVisitor)
    }
}

impl JsonSchema for MatrixDef {
    fn schema_name() -> Cow<'static, str> {
        "Matrix".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "properties": {
                "exclude": {"type": "array", "items": {"type": "object"}},
                "include": {"type": "array", "items": {"type": "object"}}
            },
            "additionalProperties": {"type": "array", "items": {"type": ["string", "number", "boolean"]}}
        })
    }
}

/// `retry: {attempts: 2, delay: 2s}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetryDef {
    /// How many attempts in all, the first included (at least 1).
    #[schemars(with = "u32", range(min = 1))]
    pub attempts: Spanned<u32>,
    /// Pause between attempts, e.g. `2s`; none by default.
    #[schemars(with = "Option<String>")]
    pub delay: Option<Spanned<Scalar>>,
}

/// One string or a list of them: `run: cmd` or `run: [cmd1, cmd2]`, `branch: main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StringListVisitor;
        impl<'de> Visitor<'de> for StringListVisitor {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_owned()]))
            }
            // `run: true` is the shell's no-op, not a boolean.
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut commands = Vec::new();
                while let Some(c) = seq.next_element::<String>()? {
                    commands.push(c);
                }
                Ok(StringList(commands))
            }
        }
        d.deserialize_any(StringListVisitor)
    }
}

impl JsonSchema for StringList {
    fn schema_name() -> Cow<'static, str> {
        "StringList".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}}
            ]
        })
    }
}

/// A YAML scalar read as the text written: `RUST_BACKTRACE: 1` is the string `1`, and
/// `PYTHON: 3.10` stays `3.10` (read as a number it would become `3.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
        }
        d.deserialize_str(ScalarVisitor)
    }
}

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "number", "boolean"]})
    }
}

/// A mapping kept in file order, each key with its place in the file.
#[derive(Debug, Clone)]
pub struct Entries<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(EntriesVisitor(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for Entries<V> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": generator.subschema_for::<V>()
        })
    }
}

/// Reads a secrets file: a YAML mapping of names to values.
pub fn load_secrets(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let options = yaml_options();
    let entries: Entries<Scalar> =
        serde_saphyr::from_str_with_options(&text, options).map_err(|err| {
            let span = err
                .location()
                .map(|l| Span::new(l.line() as usize, l.column() as usize, 1))
                .unwrap_or_else(Span::start);
            // The message names the key or position, never a value.
            ConfigError::Invalid(vec![Diagnostic::new(
                "a secrets file is a mapping of names to values",
                path,
                "",
                span,
            )])
        })?;
    Ok(entries.0.into_iter().map(|(k, v)| (k.value, v.0)).collect())
}

/// The templates and stages of a pipeline text as plain values (every other key ignored), to
/// compare two versions of a file; `None` when it does not parse.
pub fn outline(text: &str) -> Option<(Entries<serde_json::Value>, Entries<serde_json::Value>)> {
    #[derive(Deserialize)]
    struct Outline {
        #[serde(default)]
        templates: Entries<serde_json::Value>,
        #[serde(default)]
        stages: Entries<serde_json::Value>,
    }
    let options = yaml_options();
    let outline: Outline = serde_saphyr::from_str_with_options(text, options).ok()?;
    Some((outline.templates, outline.stages))
}

/// The JSON Schema of `pipeline.yml`, for editors (yaml-language-server) and other tools.
pub fn schema() -> Schema {
    schemars::schema_for!(PipelineFile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        match parse(Path::new("pipeline.yml"), text.to_owned()) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reads_the_documented_example() {
        let text = r#"version: 1
name: demo
env: {RUST_LOG: info}
stages:
  lint:  {run: cargo fmt --check, inputs: ["src/**/*.rs"]}
  build: {needs: [lint], run: cargo build --release, outputs: [target/release/demo], timeout: 20m}
  unit:
    needs: [build]
    run: ["cargo test --lib", "cargo test --doc"]
    retry: {attempts: 2, delay: 2s}
    env: {RUST_BACKTRACE: "1"}
    workdir: .
"#;
        let source = parse(Path::new("pipeline.yml"), text.to_owned()).unwrap();
        let stages = &source.pipeline.stages.0;
        let names: Vec<&str> = stages.iter().map(|(k, _)| k.value.as_str()).collect();
        assert_eq!(names, ["lint", "build", "unit"]);
        assert_eq!(
            stages[2].1.run,
            Some(StringList(vec![
                "cargo test --lib".into(),
                "cargo test --doc".into()
            ]))
        );
        assert_eq!(span_of(&stages[1].1.needs[0]), Span::new(6, 19, 4));
    }

    /// The messages and places of a file's unknown keys.
    fn unknown_keys(text: &str) -> Vec<String> {
        let source = parse(Path::new("pipeline.yml"), text.to_owned()).unwrap();
        let keys = source.unknown_keys.iter();
        keys.map(|d| format!("{}: {}", d.location(), d.message))
            .collect()
    }

    #[test]
    fn every_unknown_key_is_found_at_every_depth() {
        let text = "version: 1\nnme: x\nenv: {ANY_NAME: 1}\nstages:\n  a: {run: x, neds: [b], timeot: 1m}\n  b:\n    retry: {attempts: 2, dealy: 1s}\n    matrix: {py: ['3.12'], exclude: [{py: '3.12'}]}\n    publish: [{command: {run: x, chek: y}}, {pypi: {files: [a], password: P, zzz: 1}}]\n";
        assert_eq!(
            unknown_keys(text),
            [
                "pipeline.yml:2:1: unknown key `nme` (did you mean `name`?)",
                "pipeline.yml:5:15: unknown key `neds` (did you mean `needs`?)",
                "pipeline.yml:5:26: unknown key `timeot` (did you mean `timeout`?)",
                "pipeline.yml:7:26: unknown key `dealy` (did you mean `delay`?)",
                "pipeline.yml:9:34: unknown key `chek` (did you mean `check`?)",
                "pipeline.yml:9:78: unknown key `zzz`; expected one of: files, index_url, password, repository_url, username",
            ]
        );
    }

    #[test]
    fn a_wrong_type_is_reported_with_the_unknown_keys() {
        let err = parse_err("version: 1\nstages:\n  a: {neds: [b], retry: {attempts: two}}\n");
        assert!(
            err.starts_with("pipeline.yml:3:7: unknown key `neds` (did you mean `needs`?)"),
            "{err}"
        );
        assert!(
            err.contains("\n\npipeline.yml:3:36: expected a whole number"),
            "{err}"
        );
    }

    #[test]
    fn a_byte_that_is_not_utf8_is_pointed_at() {
        let err = decode(Path::new("p.yml"), b"version: 1\nname: caf\xe9\n".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yml:2:10: byte 0xe9 is not UTF-8: a pipeline file must be UTF-8 text\n  |\n2 | name: caf\u{fffd}\n  |          ^"
        );
    }

    #[test]
    fn version_is_required_and_checked() {
        assert!(parse_err("stages: {}\n").starts_with("pipeline.yml:1:1: missing `version`"));
        assert!(
            parse_err("version: 2\nstages: {}\n")
                .starts_with("pipeline.yml:1:10: unsupported `version: 2`")
        );
    }

    #[test]
    fn numbers_and_booleans_are_text_in_env() {
        let text = "version: 1\nenv: {A: 1, B: true, C: 3.10, D: 0755}\nstages: {}\n";
        let source = parse(Path::new("p.yml"), text.to_owned()).unwrap();
        let values: Vec<&str> = source
            .pipeline
            .env
            .0
            .iter()
            .map(|(_, v)| v.0.as_str())
            .collect();
        assert_eq!(values, ["1", "true", "3.10", "0755"]);
    }
}
