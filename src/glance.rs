//! A run at a glance: the one object `murphy show --json` prints and `murphy serve`'s
//! `/api/runs/{id}` answers (documented in the README).

use jiff::Timestamp;
use serde::Serialize;

use crate::change::Links;
use crate::ci::CiInfo;
use crate::records::{RunState, RunView, StageView};
use crate::trigger::Trigger;

/// `murphy show --json`: the run at a glance, one object (documented in the README).
#[derive(Serialize)]
pub struct Glance<'a> {
    pub run_id: &'a str,
    pub pipeline: &'a str,
    pub status: RunState,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub description: Option<&'a str>,
    pub trigger: Option<Trigger>,
    pub branch: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub version: Option<&'a str>,
    pub prerelease: Option<bool>,
    pub commit: Option<Commit<'a>>,
    pub links: Links,
    pub ci: Option<&'a CiInfo>,
    pub stages: &'a [StageView],
    /// What the run published, each confirmed by its server.
    pub published: &'a [crate::records::PublishedView],
}

#[derive(Serialize)]
pub struct Commit<'a> {
    pub sha: Option<&'a str>,
    pub branch: Option<&'a str>,
    pub tags: &'a [String],
    /// `None` when the working tree was not compared with HEAD (only tag runs compare it).
    pub dirty: Option<bool>,
    pub shallow: bool,
    pub author: Option<&'a str>,
    pub committed_at: Option<Timestamp>,
    pub subject: Option<&'a str>,
    pub previous_release: Option<&'a str>,
}

pub fn glance(view: &RunView) -> Glance<'_> {
    let change = view.change.as_ref();
    let git = change.and_then(|c| c.git.as_ref());
    let version = change.and_then(|c| c.version.as_ref());
    Glance {
        run_id: &view.run_id,
        pipeline: &view.pipeline,
        status: view.status,
        started_at: view.started_at,
        finished_at: view.finished_at,
        duration_ms: view.duration_ms,
        description: view.description.as_deref(),
        trigger: view.trigger,
        branch: change.and_then(|c| c.branch.as_deref()),
        tag: change.and_then(|c| c.tag.as_deref()),
        version: version.map(|v| v.text.as_str()),
        prerelease: version.map(|v| v.prerelease),
        commit: git.map(|g| Commit {
            sha: g.sha.as_deref(),
            branch: g.branch.as_deref(),
            tags: &g.tags,
            dirty: g.worktree_checked.then_some(g.dirty),
            shallow: g.shallow,
            author: g.author.as_deref(),
            committed_at: g.committed_at,
            subject: g.subject.as_deref(),
            previous_release: g.previous_release.as_deref(),
        }),
        links: change.map(|c| c.links()).unwrap_or_default(),
        ci: change.and_then(|c| c.ci.as_ref()),
        stages: &view.stages,
        published: &view.published,
    }
}
