//! The release parts of a stage, checked: publish targets, notifications, the archive and its
//! retention, and the secrets they name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::planner::Planner;
use super::{
    ARCHIVE_PLACEHOLDERS, ArchiveSpec, Notify, NotifyEvent, NotifyKind, PYPI_UPLOAD_URL, Stage,
    Target, UrlSource, default_index, normalize,
};
use crate::config::{ArchiveDef, NotifyDef, Spanned, TargetDef};
use crate::diagnostic::did_you_mean;
use crate::extends::Resolved;
use crate::include::FileId;

impl Planner<'_> {
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
            self.relative_path(pattern, "files are");
        }
        files.iter().map(|f| f.value.clone()).collect()
    }

    pub(super) fn target(
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

    pub(super) fn notify(&mut self, def: &NotifyDef, secrets: &[Spanned<String>]) -> Notify {
        let (kind, hook) = match def {
            NotifyDef::Webhook(h) => (NotifyKind::Webhook, h),
            NotifyDef::Slack(h) => (NotifyKind::Slack, h),
            NotifyDef::Issue(def) => return self.issue(def, secrets),
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
        Notify {
            kind,
            url,
            on,
            issue: None,
        }
    }

    /// An `issue` entry: one repository of one provider, its token's secret declared.
    fn issue(&mut self, def: &crate::config::IssueDef, secrets: &[Spanned<String>]) -> Notify {
        use crate::plan::{IssueProvider, IssueTarget};
        self.declared_secret(&def.token_secret, &[secrets]);
        let (provider, repository, api) = match (&def.github, &def.gitlab) {
            (Some(repo), None) => (IssueProvider::Github, repo, "https://api.github.com"),
            (None, Some(repo)) => (IssueProvider::Gitlab, repo, "https://gitlab.com/api/v4"),
            (Some(repo), Some(_)) => {
                self.error("give `github` or `gitlab`, not both", repo);
                (IssueProvider::Github, repo, "https://api.github.com")
            }
            (None, None) => {
                self.error(
                    "an `issue` notification needs `github: OWNER/NAME` or `gitlab: GROUP/NAME`",
                    &def.token_secret,
                );
                (IssueProvider::Github, &def.token_secret, "")
            }
        };
        if provider == IssueProvider::Github && repository.value.split('/').count() != 2 {
            self.error(
                format!(
                    "`{}` is not a GitHub repository: write `OWNER/NAME`",
                    repository.value
                ),
                repository,
            );
        }
        let mut triggers = Vec::new();
        for t in &def.triggers {
            match crate::trigger::Trigger::parse(&t.value) {
                Some(trigger) => triggers.push(trigger),
                None => self.error(
                    format!(
                        "`{}` is not a trigger: use `local`, `pre-push`, `pr`, `push`, `nightly` or `tag`",
                        t.value
                    ),
                    t,
                ),
            }
        }
        if def.triggers.is_empty() {
            triggers.push(crate::trigger::Trigger::Nightly);
        }
        Notify {
            kind: NotifyKind::Issue,
            url: UrlSource::Literal(
                def.api
                    .as_ref()
                    .map_or(api, |a| a.value.as_str())
                    .trim_end_matches('/')
                    .to_owned(),
            ),
            on: vec![NotifyEvent::Failure, NotifyEvent::Success],
            issue: Some(IssueTarget {
                provider,
                repository: repository.value.clone(),
                token_secret: def.token_secret.value.clone(),
                triggers,
            }),
        }
    }

    /// `stage`: the stage's name and the file that defines it (the archive may come from a
    /// template in another).
    pub(super) fn archive(
        &mut self,
        stage: (&Spanned<String>, FileId),
        def: &ArchiveDef,
    ) -> ArchiveSpec {
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
            self.relative_path(pattern, "archive files are");
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

    /// Stages archiving into one root share its builds, so they must agree on retention.
    pub(super) fn check_retention(&mut self, stages: &[Stage]) {
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
}
