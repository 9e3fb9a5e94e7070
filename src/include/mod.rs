//! `include:`: one pipeline assembled from the files several teams own.
//!
//! A file includes others by `path:` (a file of this project) or by `git:` (a file of a
//! repository at a branch, tag or commit, pinned in `pipeline.lock`). The files form a tree
//! read depth first; a file met twice is read once, a file that includes itself (through any
//! chain) is an error that prints the chain. Merging goes bottom-up:
//!
//! - stages and templates merge by name; a name two files define is an error naming both,
//!   unless the *including* file says `override: true` on its own, which then replaces the
//!   included one whole (and keeps its place in the order);
//! - top-level `env` merges key by key, the including file winning; `pass_env` and `secrets`
//!   are the union;
//! - `name`, `description`, `release_tags`, `notify` and `ci` describe the project and belong in
//!   its own pipeline file only.

pub mod diff;
pub mod fetch;
pub mod lockfile;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{self, ConfigError, Entries, IncludeDef, Scalar, Source, Spanned, StageDef};
use crate::diagnostic::{Diagnostic, Span};
use fetch::Cache;
use lockfile::{Lockfile, Pin};

/// Index of a file in [`Pipeline::files`].
pub type FileId = usize;

/// A stage or template as one file wrote it.
#[derive(Debug, Clone)]
pub struct Def {
    pub file: FileId,
    pub name: Spanned<String>,
    pub def: Box<StageDef>,
}

/// The pipeline file with its includes read and merged, not yet validated.
#[derive(Debug)]
pub struct Pipeline {
    /// Every file read; the first is the project's own pipeline file. Their `templates` and
    /// `stages` are moved out, into this pipeline's.
    pub files: Vec<Source>,
    pub templates: Vec<Def>,
    pub stages: Vec<Def>,
    /// Each file's top-level `env`, included files first, so a later entry wins.
    pub env: Vec<(FileId, Entries<Scalar>)>,
    pub pass_env: Vec<String>,
    pub secrets: Vec<Spanned<String>>,
    /// The git includes' pins, in the order they were read.
    pub pins: Vec<Pin>,
}

impl Pipeline {
    /// A pipeline file read alone, without following its `include:` (for files murphy writes
    /// itself, and tests).
    pub fn single(mut source: Source) -> Pipeline {
        let own = Merged::own(0, &mut source);
        Pipeline {
            files: vec![source],
            templates: own.templates,
            stages: own.stages,
            env: own.env,
            pass_env: own.pass_env,
            secrets: own.secrets,
            pins: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IncludeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}", crate::diagnostic::List(.0))]
    Invalid(Vec<Diagnostic>),
    #[error(
        "`{}` does not match the git includes of `{}`; run `murphy lock` and commit the lock file:\n  {}",
        lock.display(), file.display(), problems.join("\n  ")
    )]
    Stale {
        lock: PathBuf,
        file: PathBuf,
        problems: Vec<String>,
    },
    #[error(transparent)]
    Lockfile(#[from] lockfile::LockfileError),
}

/// How git includes find their commit.
pub enum Pins<'a> {
    /// From the lock file, and nowhere else: what every command but `lock` does.
    Locked(Option<&'a Lockfile>),
    /// Keep the pins of `old` except those `update` names (all, with `None`), and pin what is
    /// not pinned at its ref's current commit: what `murphy lock` does.
    Refresh {
        old: Option<&'a Lockfile>,
        update: Option<&'a [String]>,
    },
}

/// Reads `path` and every file it includes, fetching git includes through `cache`.
pub fn load(path: &Path, cache: &Cache, pins: Pins) -> Result<Pipeline, IncludeError> {
    let root = config::load(path)?;
    let lock_path = lockfile::path_for(path);
    let mut loader = Loader {
        project: project_dir(path),
        cache,
        pins: &pins,
        files: Vec::new(),
        places: Vec::new(),
        seen: HashMap::new(),
        subtrees: HashMap::new(),
        stack: Vec::new(),
        used: Vec::new(),
        stale: Vec::new(),
        errors: Vec::new(),
    };
    let identity = Place::Local(canonical(path));
    loader.seen.insert(identity.key(), 0);
    loader.files.push(root);
    loader.places.push(identity);
    let merged = loader.visit(0);
    if !loader.errors.is_empty() {
        return Err(IncludeError::Invalid(loader.errors));
    }
    if let Pins::Locked(lock) = &pins {
        let lock_pins = lock.map(|l| l.includes.as_slice()).unwrap_or_default();
        for pin in lock_pins {
            if !loader.used.iter().any(|u| u.same_include(pin)) {
                loader.stale.push(format!(
                    "`{}` pins {}, which no file includes any more",
                    lock_path.display(),
                    pin.describe()
                ));
            }
        }
        if lock.is_none() && !loader.stale.is_empty() {
            loader
                .stale
                .insert(0, format!("there is no `{}` yet", lock_path.display()));
        }
        if !loader.stale.is_empty() {
            return Err(IncludeError::Stale {
                lock: lock_path,
                file: path.to_owned(),
                problems: loader.stale,
            });
        }
    }
    Ok(Pipeline {
        files: loader.files,
        templates: merged.templates,
        stages: merged.stages,
        env: merged.env,
        pass_env: merged.pass_env,
        secrets: merged.secrets,
        pins: loader.used,
    })
}

/// Where a file was read from.
#[derive(Debug, Clone)]
enum Place {
    Local(PathBuf),
    Git {
        url: String,
        name: String,
        reference: String,
        commit: String,
        file: String,
    },
}

impl Place {
    /// What the file is, to tell a file met twice from a new one: one file at one commit is
    /// one file, whatever name or ref led to it.
    fn key(&self) -> String {
        match self {
            Place::Local(path) => format!("path {}", path.display()),
            Place::Git {
                url, commit, file, ..
            } => format!("git {url} {commit} {file}"),
        }
    }

    /// The name diagnostics and `graph` give the file: its path, or `NAME@REF:FILE`.
    fn shown(&self) -> PathBuf {
        match self {
            Place::Local(path) => path.clone(),
            Place::Git {
                name,
                reference,
                file,
                ..
            } => PathBuf::from(format!("{name}@{reference}:{file}")),
        }
    }
}

struct Loader<'a> {
    /// The project's directory: relative `git:` paths start there.
    project: PathBuf,
    cache: &'a Cache,
    pins: &'a Pins<'a>,
    files: Vec<Source>,
    places: Vec<Place>,
    /// Every file read, by [`Place::key`].
    seen: HashMap<String, FileId>,
    /// What each file read whole brings, for the next file that includes it.
    subtrees: HashMap<FileId, Merged>,
    /// The files being read, outermost first: a file met again here is a cycle.
    stack: Vec<FileId>,
    used: Vec<Pin>,
    stale: Vec<String>,
    errors: Vec<Diagnostic>,
}

impl Loader<'_> {
    /// The stages, templates and env of `id` and everything it includes.
    fn visit(&mut self, id: FileId) -> Merged {
        if let Some(done) = self.subtrees.get(&id) {
            return done.clone();
        }
        self.stack.push(id);
        if id != 0 {
            self.check_project_keys(id);
        }
        let mut merged = Merged::default();
        let includes = self.files[id].pipeline.include.clone();
        for entry in &includes {
            if let Some(child) = self.open(id, entry) {
                let sub = self.visit(child);
                merged.add(&self.files, sub, false, &mut self.errors);
            }
        }
        let own = Merged::own(id, &mut self.files[id]);
        merged.add(&self.files, own, true, &mut self.errors);
        self.stack.pop();
        // The root file is on the stack throughout: reached again it is a cycle, never reused.
        if id != 0 {
            self.subtrees.insert(id, merged.clone());
        }
        merged
    }

    /// Settings of the project as a whole, which an included file may not make.
    fn check_project_keys(&mut self, id: FileId) {
        let source = &self.files[id];
        let file = &source.pipeline;
        let given = [
            ("name", file.name.is_some()),
            ("description", file.description.is_some()),
            ("release_tags", file.release_tags.is_some()),
            ("store", file.store.is_some()),
            ("serve", file.serve.is_some()),
            ("notify", !file.notify.is_empty()),
            ("ci", file.ci.is_some()),
        ];
        for (key, present) in given {
            if present {
                let written = format!("{key}:");
                let line = source.text.lines().position(|l| l.starts_with(&written));
                let at = line.map_or(Span::start(), |i| Span::new(i + 1, 1, written.len()));
                self.errors.push(source.error(
                    format!("`{key}` describes the project and belongs in its own pipeline file, not in an included one"),
                    at,
                ));
            }
        }
    }

    /// Reads the file one `include:` entry names, unless it was read already.
    fn open(&mut self, parent: FileId, entry: &Spanned<IncludeDef>) -> Option<FileId> {
        let (place, source) = match self.read(parent, entry) {
            Ok(Some(read)) => read,
            Ok(None) => return None,
            Err(diagnostic) => {
                self.errors.extend(diagnostic);
                return None;
            }
        };
        let key = place.key();
        if let Some(start) = self.stack.iter().position(|&f| self.places[f].key() == key) {
            let mut chain: Vec<String> = self.stack[start..]
                .iter()
                .map(|&f| self.files[f].path.display().to_string())
                .collect();
            chain.push(self.files[self.stack[start]].path.display().to_string());
            let at = self.files[parent].error(
                format!("include cycle: {}", chain.join(" -> ")),
                config::span_of(entry),
            );
            self.errors.push(at);
            return None;
        }
        if let Some(&read) = self.seen.get(&key) {
            return Some(read); // read already, through another include
        }
        self.files.push(source);
        self.places.push(place);
        let id = self.files.len() - 1;
        self.seen.insert(key, id);
        Some(id)
    }

    /// The place and text an entry names. `Ok(None)`: nothing to read (a stale pin, noted).
    fn read(
        &mut self,
        parent: FileId,
        entry: &Spanned<IncludeDef>,
    ) -> Result<Option<(Place, Source)>, Vec<Diagnostic>> {
        let including = &self.files[parent];
        let fail = |message: &str, at: Span| vec![including.error(message, at)];
        let def = &entry.value;
        match (&def.path, &def.git) {
            (Some(path), None) => self.read_path(parent, entry, path).map(Some),
            (None, Some(url)) => self.read_git(parent, entry, url),
            (Some(path), Some(_)) => Err(fail(
                "an include is either `path:` or `git:`, not both",
                config::span_of(path),
            )),
            (None, None) => Err(fail(
                "an include needs `path:` (a file of this project) or `git:` (a repository)",
                config::span_of(entry),
            )),
        }
    }

    /// A `path:` include: a file beside the including one, on disk or in its repository.
    fn read_path(
        &self,
        parent: FileId,
        entry: &Spanned<IncludeDef>,
        path: &Spanned<String>,
    ) -> Result<(Place, Source), Vec<Diagnostic>> {
        let including = &self.files[parent];
        let fail = |message: String, at: Span| vec![including.error(message, at)];
        let def = &entry.value;
        let at = config::span_of(entry);
        for (key, given) in [
            ("ref", def.reference.is_some()),
            ("file", def.file.is_some()),
            ("name", def.name.is_some()),
        ] {
            if given {
                return Err(fail(
                    format!("`{key}` goes with `git:`; a `path:` include names its file alone"),
                    at,
                ));
            }
        }
        match self.places[parent].clone() {
            Place::Local(including_path) => {
                let dir = including_path.parent().unwrap_or(Path::new("/"));
                let shown = crate::plan::normalize(
                    &including
                        .path
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(&path.value),
                );
                let target = canonical(&dir.join(&path.value));
                let bytes = std::fs::read(&target).map_err(|e| {
                    fail(
                        format!("cannot read the included file `{}`: {e}", shown.display()),
                        config::span_of(path),
                    )
                })?;
                let source = parse(&shown, bytes)?;
                Ok((Place::Local(target), source))
            }
            Place::Git {
                url,
                name,
                reference,
                commit,
                file,
            } => {
                let joined = crate::plan::normalize(
                    &Path::new(&file)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(&path.value),
                );
                let joined = joined.to_string_lossy().into_owned();
                if joined == ".." || joined.starts_with("../") || Path::new(&joined).is_absolute() {
                    return Err(fail(
                        format!(
                            "`{}` leaves the repository this file comes from",
                            path.value
                        ),
                        config::span_of(path),
                    ));
                }
                let bytes = self
                    .cache
                    .read(&url, &commit, &joined)
                    .map_err(|e| fail(crate::causes::line(&e), config::span_of(path)))?;
                let place = Place::Git {
                    url,
                    name,
                    reference,
                    commit,
                    file: joined,
                };
                let shown = place.shown();
                Ok((place, parse(&shown, bytes)?))
            }
        }
    }

    /// A `git:` include, at its pinned commit (or, for `murphy lock`, its ref's).
    fn read_git(
        &mut self,
        parent: FileId,
        entry: &Spanned<IncludeDef>,
        url: &Spanned<String>,
    ) -> Result<Option<(Place, Source)>, Vec<Diagnostic>> {
        let including = &self.files[parent];
        let fail = |message: String, at: Span| vec![including.error(message, at)];
        let def = &entry.value;
        let at = config::span_of(entry);
        let (Some(reference), Some(file)) = (&def.reference, &def.file) else {
            return Err(fail(
                "a `git:` include needs `ref:` (a branch, tag or commit) and `file:` (the file in the repository)".into(),
                at,
            ));
        };
        if holds_credentials(&url.value) {
            // Not quoting the line: it holds the secret.
            return Err(vec![Diagnostic::new(
                "a `git:` URL may not hold credentials: they would be committed in the lock file and shown in logs; let git's credential helper (or an ssh key) supply them",
                &including.path,
                "",
                config::span_of(url),
            )]);
        }
        let name = match &def.name {
            Some(name) if name.value.trim().is_empty() => {
                return Err(fail(
                    "an include's `name` is what `murphy lock --update NAME` selects it by: it cannot be empty".into(),
                    config::span_of(name),
                ));
            }
            Some(name) => name.value.clone(),
            None => repository_name(&url.value),
        };
        if let Some(other) = self
            .used
            .iter()
            .find(|p| p.name == name && p.git != url.value)
        {
            return Err(fail(
                format!(
                    "two repositories are named `{name}` (`{}` and `{}`), so `murphy lock --update {name}` could not tell them apart; give one a `name:`",
                    crate::git::strip_credentials(&other.git),
                    crate::git::strip_credentials(&url.value)
                ),
                at,
            ));
        }
        let wanted = Pin {
            name: name.clone(),
            git: url.value.clone(),
            reference: reference.value.clone(),
            file: file.value.clone(),
            commit: String::new(),
            digest: String::new(),
        };
        let fetch_url = repository_url(&self.project, &url.value);
        let fetch_error =
            |e: fetch::FetchError| fail(crate::causes::line(&e), config::span_of(url));
        // Reached before: one include, one commit, one pin.
        let reached = self.used.iter().find(|p| p.same_include(&wanted)).cloned();
        let locked = match self.pins {
            _ if reached.is_some() => reached,
            Pins::Locked(lock) => {
                match lock.and_then(|l| l.includes.iter().find(|p| p.same_include(&wanted))) {
                    Some(pin) => Some(pin.clone()),
                    None => {
                        self.stale.push(format!(
                            "`{}` includes {}, which is not pinned",
                            including.path.display(),
                            wanted.describe()
                        ));
                        return Ok(None);
                    }
                }
            }
            Pins::Refresh { old, update } => {
                let moved = update.is_none_or(|names| names.contains(&name));
                old.and_then(|l| l.includes.iter().find(|p| p.same_include(&wanted)))
                    .filter(|_| !moved)
                    .cloned()
            }
        };
        let commit = match &locked {
            Some(pin) => pin.commit.clone(),
            None => self
                .cache
                .resolve(&fetch_url, &reference.value)
                .map_err(fetch_error)?,
        };
        let bytes = self
            .cache
            .read(&fetch_url, &commit, &file.value)
            .map_err(fetch_error)?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        if let Some(pin) = &locked
            && pin.digest != digest
        {
            return Err(fail(
                format!(
                    "{} at commit {} is not the file `pipeline.lock` pinned (its digest differs): the lock file or the include cache was altered; run `murphy lock --update {name}` to pin it afresh",
                    wanted.describe(),
                    short(&commit)
                ),
                at,
            ));
        }
        let place = Place::Git {
            url: fetch_url,
            name,
            reference: reference.value.clone(),
            commit: commit.clone(),
            file: file.value.clone(),
        };
        if !self.used.iter().any(|p| p.same_include(&wanted)) {
            self.used.push(Pin {
                commit,
                digest,
                ..wanted
            });
        }
        let shown = place.shown();
        Ok(Some((place, parse(&shown, bytes)?)))
    }
}

/// Where to fetch a `git:` URL from: a relative path is relative to the project (`project`,
/// the pipeline file's directory), not to where murphy runs.
pub fn repository_url(project: &Path, url: &str) -> String {
    let is_path = !url.contains("://") && fetch::is_local(url);
    if is_path && Path::new(url).is_relative() {
        // Not canonicalised: the cache must be found by the same key when the repository
        // itself is gone.
        let joined = project.join(url);
        let absolute = std::path::absolute(&joined).unwrap_or(joined);
        crate::plan::normalize(&absolute)
            .to_string_lossy()
            .into_owned()
    } else {
        url.to_owned()
    }
}

/// The directory of a pipeline file.
pub fn project_dir(pipeline_file: &Path) -> PathBuf {
    pipeline_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn parse(shown: &Path, bytes: Vec<u8>) -> Result<Source, Vec<Diagnostic>> {
    let text = config::decode(shown, bytes);
    text.and_then(|text| config::parse(shown, text))
        .map_err(|e| match e {
            ConfigError::Invalid(d) => d,
            ConfigError::Read { path, source } => vec![Diagnostic::new(
                format!("cannot read `{}`: {source}", path.display()),
                shown,
                "",
                Span::start(),
            )],
        })
}

/// Whether a `git:` URL carries a secret: a password, or for http(s) any user part (a token is
/// passed as the user). `ssh://git@host/x` names a user, not a secret.
fn holds_credentials(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((user, _)) => user.contains(':') || scheme.to_ascii_lowercase().starts_with("http"),
        None => false,
    }
}

/// `pipelines` for `https://example.org/core/pipelines.git`.
pub fn repository_name(url: &str) -> String {
    let url = crate::git::strip_credentials(url);
    let last = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(&url);
    last.strip_suffix(".git").unwrap_or(last).to_owned()
}

pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// The path a file is known by, so two spellings of one file are one file.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| crate::plan::normalize(path))
}

/// A subtree's stages, templates and env, merged.
#[derive(Debug, Default, Clone)]
struct Merged {
    templates: Vec<Def>,
    stages: Vec<Def>,
    env: Vec<(FileId, Entries<Scalar>)>,
    pass_env: Vec<String>,
    secrets: Vec<Spanned<String>>,
}

impl Merged {
    /// What file `id` itself defines; its defs move out of `source` (read once: a file reached
    /// again is taken from the subtrees already merged).
    fn own(id: FileId, source: &mut Source) -> Merged {
        let file = &mut source.pipeline;
        let defs = |entries: &mut Entries<Box<StageDef>>| {
            std::mem::take(&mut entries.0)
                .into_iter()
                .map(|(name, def)| Def {
                    file: id,
                    name,
                    def,
                })
                .collect()
        };
        Merged {
            templates: defs(&mut file.templates),
            stages: defs(&mut file.stages),
            env: vec![(id, file.env.clone())],
            pass_env: file.pass_env.clone(),
            secrets: file.secrets.clone(),
        }
    }

    /// Adds what `from` brings: an included subtree, or (`own`) the including file's own
    /// defs, the only ones whose `override: true` counts.
    fn add(&mut self, files: &[Source], from: Merged, own: bool, errors: &mut Vec<Diagnostic>) {
        merge_defs(
            files,
            &mut self.templates,
            from.templates,
            own,
            "template",
            errors,
        );
        merge_defs(files, &mut self.stages, from.stages, own, "stage", errors);
        // A file reached twice (a diamond) counts once, where it was first reached.
        for (file, env) in from.env {
            if !self.env.iter().any(|(f, _)| *f == file) {
                self.env.push((file, env));
            }
        }
        for name in from.pass_env {
            if !self.pass_env.contains(&name) {
                self.pass_env.push(name);
            }
        }
        for secret in from.secrets {
            if !self.secrets.iter().any(|s| s.value == secret.value) {
                self.secrets.push(secret);
            }
        }
    }
}

fn merge_defs(
    files: &[Source],
    into: &mut Vec<Def>,
    from: Vec<Def>,
    own: bool,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) {
    if into.is_empty() {
        // Nothing to merge with: the defs move whole, bar an `override: true` with nothing to
        // replace.
        let mut from = from;
        from.retain(
            |def| match def.def.overrides.as_ref().filter(|o| o.value && own) {
                Some(flag) => {
                    errors.push(no_override_target(files, def, flag, what));
                    false
                }
                None => true,
            },
        );
        *into = from;
        return;
    }
    // By name: a pipeline of 50,000 stages must not compare every pair of names.
    let mut index: HashMap<String, usize> = into
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.value.clone(), i))
        .collect();
    for def in from {
        let overrides = def.def.overrides.as_ref().filter(|o| o.value);
        let existing = index.get(&def.name.value).copied();
        if existing.is_some_and(|i| into[i].file == def.file) {
            continue; // one file reached twice: one definition
        }
        match (existing, overrides.filter(|_| own)) {
            (Some(i), Some(_)) => into[i] = def,
            (None, Some(flag)) => errors.push(no_override_target(files, &def, flag, what)),
            (Some(i), None) => {
                let first = &into[i];
                let hint = if own {
                    format!(
                        "; rename one, or say `override: true` on the one in `{}` to replace the included one",
                        files[def.file].path.display()
                    )
                } else {
                    "; rename one of them".to_owned()
                };
                errors.push(
                    files[def.file]
                        .error(
                            format!("{what} `{}` is defined in two files{hint}", def.name.value),
                            config::span_of(&def.name),
                        )
                        .with_note(format!(
                            "also defined at {}:{}:{}",
                            files[first.file].path.display(),
                            first.name.referenced.line(),
                            first.name.referenced.column()
                        )),
                );
            }
            (None, None) => {
                index.insert(def.name.value.clone(), into.len());
                into.push(def);
            }
        }
    }
}

fn no_override_target(files: &[Source], def: &Def, flag: &Spanned<bool>, what: &str) -> Diagnostic {
    files[def.file].error(
        format!(
            "`override: true`, but no included file defines a {what} `{}` to replace",
            def.name.value
        ),
        config::span_of(flag),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    /// Writes the files, loads `pipeline.yml` with its local includes, and plans it.
    fn plan(files: &[(&str, &str)]) -> Result<Plan, String> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let cache = Cache::new(dir.path().join(".murphy/includes"));
        let root = dir.path().join("pipeline.yml");
        let pipeline = load(&root, &cache, Pins::Locked(None)).map_err(|e| e.to_string())?;
        let plan = Plan::new(pipeline).map_err(|e| e.to_string())?;
        Ok(plan)
    }

    #[test]
    fn an_inherited_key_is_reported_in_the_file_that_wrote_it() {
        let err = plan(&[
            (
                "pipeline.yml",
                "version: 1\ninclude: [{path: ci/common.yml}]\nstages:\n  api: {extends: svc, needs: [nope]}\n",
            ),
            (
                "ci/common.yml",
                "version: 1\ntemplates:\n  svc:\n    run: make test\n    timeout: 10 parsecs\n",
            ),
        ])
        .unwrap_err();
        assert!(
            err.contains("ci/common.yml:5:14: bad duration `10 parsecs`"),
            "{err}"
        );
        assert!(
            err.contains("pipeline.yml:4:31: stage `api` needs `nope`"),
            "{err}"
        );
    }

    #[test]
    fn env_merges_with_the_including_file_winning_and_stages_keep_their_file() {
        let plan = plan(&[
            (
                "pipeline.yml",
                "version: 1\ninclude: [{path: ci/common.yml}]\nenv: {A: mine}\nstages:\n  build: {needs: [lint], run: b}\n",
            ),
            (
                "ci/common.yml",
                "version: 1\nowner: core\nenv: {A: theirs, B: theirs}\nstages:\n  lint: {run: l}\n",
            ),
        ])
        .unwrap();
        assert_eq!(
            plan.env,
            [
                ("A".to_owned(), "mine".to_owned()),
                ("B".to_owned(), "theirs".to_owned())
            ]
        );
        let lint = &plan.stages[plan.stage_id("lint").unwrap()];
        assert_eq!(lint.origin(), "ci/common.yml, owner core");
        let build = &plan.stages[plan.stage_id("build").unwrap()];
        assert_eq!(
            (build.origin().as_str(), build.needs.as_slice()),
            ("pipeline.yml", &[0][..])
        );
    }

    #[test]
    fn a_file_two_files_include_counts_once_where_first_reached() {
        let common = "version: 1\nenv: {LEVEL: common}\nstages:\n  lint: {run: l}\n";
        let plan = plan(&[
            (
                "pipeline.yml",
                "version: 1\ninclude: [{path: ci/a.yml}, {path: ci/b.yml}]\nstages:\n  all: {needs: [a, b], run: x}\n",
            ),
            (
                "ci/a.yml",
                "version: 1\ninclude: [{path: common.yml}]\nenv: {LEVEL: a}\nstages:\n  a: {needs: [lint], run: a}\n",
            ),
            (
                "ci/b.yml",
                "version: 1\ninclude: [{path: common.yml}]\nstages:\n  b: {needs: [lint], run: b}\n",
            ),
            ("ci/common.yml", common),
        ])
        .unwrap();
        let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["lint", "a", "b", "all"]);
        // a.yml includes common.yml, so a.yml's value wins, even though b.yml reaches
        // common.yml again later.
        assert_eq!(plan.env, [("LEVEL".to_owned(), "a".to_owned())]);
    }

    #[test]
    fn a_project_key_in_an_included_file_is_found_where_it_is_written() {
        let err = plan(&[
            ("pipeline.yml", "version: 1\ninclude: [{path: ci/a.yml}]\n"),
            (
                "ci/a.yml",
                "version: 1\n# the stage name: lint\nstages:\n  lint: {run: l}\nname: oops\n",
            ),
        ])
        .unwrap_err();
        assert!(
            err.contains("/ci/a.yml:5:1: `name` describes the project"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_include_name_is_refused_before_anything_is_fetched() {
        let err = plan(&[(
            "pipeline.yml",
            "version: 1\ninclude:\n  - {git: /no/such/repo.git, ref: main, file: a.yml, name: ''}\n",
        )])
        .unwrap_err();
        assert!(
            err.contains("pipeline.yml:3:60: an include's `name`"),
            "{err}"
        );
    }
}
