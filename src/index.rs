//! The history index: SQLite tables over runs, stages, archive builds and webhook events, for
//! the dashboard's history questions (everything about a commit, a pull request or a version;
//! a stage's durations over time) without replaying thousands of journals.
//!
//! **Invariant:** the index is never the source of truth. Everything in it is rebuilt from the
//! run records, the archive's manifests and the event log (`murphy index rebuild`); losing it
//! loses nothing.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::archive::manifest::BuildManifest;
use crate::events::Entry;
use crate::records::{RunState, RunView, StateDir};

/// Bumped when the tables change: an index of another version is rebuilt.
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the history index `{}` failed", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Records(#[from] crate::records::RecordsError),
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
}

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, status TEXT NOT NULL, trigger TEXT,
    started_at TEXT NOT NULL, duration_ms INTEGER, sha TEXT, branch TEXT, tag TEXT,
    version TEXT, pr TEXT, description TEXT, subject TEXT, commit_link TEXT, pr_link TEXT
);
CREATE INDEX IF NOT EXISTS runs_sha ON runs (sha);
CREATE INDEX IF NOT EXISTS runs_pr ON runs (pr);
CREATE INDEX IF NOT EXISTS runs_version ON runs (version);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL, state TEXT NOT NULL,
    started_at TEXT, duration_ms INTEGER, PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS stages_name ON stages (name, started_at);
CREATE TABLE IF NOT EXISTS builds (
    build INTEGER PRIMARY KEY, name TEXT NOT NULL, run_id TEXT NOT NULL, stage TEXT NOT NULL,
    sha TEXT, version TEXT, trigger TEXT NOT NULL, created_at TEXT NOT NULL, size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS builds_sha ON builds (sha);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, provider TEXT NOT NULL, kind TEXT NOT NULL,
    sha TEXT, reference TEXT, pr TEXT, status TEXT, title TEXT, url TEXT
);
CREATE INDEX IF NOT EXISTS events_sha ON events (sha);
CREATE INDEX IF NOT EXISTS events_pr ON events (pr);
";

/// A run as the index keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub status: String,
    pub trigger: Option<String>,
    pub started_at: String,
    pub duration_ms: Option<i64>,
    pub sha: Option<String>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub version: Option<String>,
    pub pr: Option<String>,
    pub description: Option<String>,
    pub subject: Option<String>,
    pub commit_link: Option<String>,
    pub pr_link: Option<String>,
    pub stages: Vec<StageRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageRow {
    pub name: String,
    pub state: String,
    pub duration_ms: Option<i64>,
}

/// An event as the index keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub seq: i64,
    pub at: String,
    pub provider: String,
    pub kind: String,
    pub sha: Option<String>,
    pub reference: Option<String>,
    pub pr: Option<String>,
    pub status: Option<String>,
    pub title: Option<String>,
    pub url: Option<String>,
}

/// One stage's duration in one run, for "durations over time".
#[derive(Debug, Clone, Serialize)]
pub struct Duration {
    pub run_id: String,
    pub started_at: Option<String>,
    pub state: String,
    pub duration_ms: Option<i64>,
}

/// What a commit, a pull request or a version went through.
#[derive(Debug, Default, Serialize)]
pub struct History {
    pub runs: Vec<RunRow>,
    pub events: Vec<EventRow>,
}

pub struct Index {
    path: PathBuf,
    db: Connection,
    /// The runs folder's mtime when its runs were last listed: while it stays, no run was
    /// added, and only the runs still going need reading again.
    listed: Option<std::time::SystemTime>,
    running: Vec<String>,
}

/// The index's file in a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("index.sqlite")
}

impl Index {
    /// Opens (creating) the index; one of another schema version is emptied, to be rebuilt.
    pub fn open(state_dir: &Path) -> Result<Index, IndexError> {
        let path = path(state_dir);
        crate::atomic_file::private_dir(state_dir).map_err(|e| IndexError::Sqlite {
            path: path.clone(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        let db = Connection::open(&path).map_err(|source| IndexError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let index = Index {
            path,
            db,
            listed: None,
            running: Vec::new(),
        };
        index.run(|db| {
            db.busy_timeout(std::time::Duration::from_secs(5))?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version != SCHEMA_VERSION {
                db.execute_batch(
                    "DROP TABLE IF EXISTS runs; DROP TABLE IF EXISTS stages;
                     DROP TABLE IF EXISTS builds; DROP TABLE IF EXISTS events;",
                )?;
                db.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            db.execute_batch(TABLES)
        })?;
        Ok(index)
    }

    fn run<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, IndexError> {
        f(&self.db).map_err(|source| IndexError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Empties the index and fills it again from the records, the builds and the event log.
    pub fn rebuild(
        &mut self,
        state: &StateDir,
        builds: &[BuildManifest],
    ) -> Result<(usize, usize, usize), IndexError> {
        let events = crate::events::read(&crate::events::path(state.root()))?;
        let stamp = std::fs::metadata(state.runs_dir())
            .and_then(|m| m.modified())
            .ok();
        self.running.clear();
        let mut runs = 0;
        self.run(|db| db.execute_batch("BEGIN; DELETE FROM runs; DELETE FROM stages; DELETE FROM builds; DELETE FROM events;"))?;
        for id in state.run_ids()? {
            let Some(dir) = state.recorded_run(&id) else {
                continue;
            };
            match RunView::load(state, &dir) {
                Ok(view) => {
                    self.put_run(&view)?;
                    runs += 1;
                    if view.status == RunState::Running {
                        self.running.push(id.clone());
                    }
                }
                Err(err) => tracing::warn!("skipping run {id}: {}", crate::causes::line(&err)),
            }
        }
        for build in builds {
            self.put_build(build)?;
        }
        for entry in &events {
            self.put_event(entry)?;
        }
        self.run(|db| db.execute_batch("COMMIT"))?;
        self.listed = stamp;
        Ok((runs, builds.len(), events.len()))
    }

    /// Brings the index up to date with the records: runs it does not have, and runs it has
    /// as still running. A finished run's records do not change, and the runs folder is
    /// listed again only when its mtime says a run was added.
    pub fn refresh(&mut self, state: &StateDir) -> Result<usize, IndexError> {
        let stamp = std::fs::metadata(state.runs_dir())
            .and_then(|m| m.modified())
            .ok();
        if stamp.is_some() && stamp == self.listed {
            let mut updated = 0;
            for id in std::mem::take(&mut self.running) {
                let Some(dir) = state.recorded_run(&id) else {
                    continue;
                };
                if let Ok(view) = RunView::load(state, &dir) {
                    self.put_run(&view)?;
                    updated += 1;
                    if view.status == RunState::Running {
                        self.running.push(id);
                    }
                }
            }
            return Ok(updated);
        }
        let updated = self.refresh_all(state)?;
        self.listed = stamp;
        Ok(updated)
    }

    fn refresh_all(&mut self, state: &StateDir) -> Result<usize, IndexError> {
        let known: std::collections::HashMap<String, String> = self.run(|db| {
            let mut q = db.prepare("SELECT run_id, status FROM runs")?;
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })?;
        let mut updated = 0;
        for id in state.run_ids()? {
            if known
                .get(&id)
                .is_some_and(|s| s != RunState::Running.word())
            {
                continue;
            }
            let Some(dir) = state.recorded_run(&id) else {
                continue;
            };
            if let Ok(view) = RunView::load(state, &dir) {
                self.put_run(&view)?;
                updated += 1;
            }
        }
        Ok(updated)
    }

    pub fn put_run(&mut self, view: &RunView) -> Result<(), IndexError> {
        let change = view.change.as_ref();
        let git = change.and_then(|c| c.git.as_ref());
        let links = change.map(|c| c.links()).unwrap_or_default();
        let ci = change.and_then(|c| c.ci.as_ref());
        self.run(|db| {
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
                params![
                    view.run_id,
                    view.pipeline,
                    view.status.word(),
                    view.trigger.map(|t| t.name()),
                    view.started_at.to_string(),
                    view.duration_ms.map(|d| d as i64),
                    git.and_then(|g| g.sha.as_deref()),
                    change.and_then(|c| c.branch.as_deref()),
                    change.and_then(|c| c.tag.as_deref()),
                    change.and_then(|c| c.version.as_ref()).map(|v| v.text.as_str()),
                    ci.and_then(|c| c.pr_number.as_deref()),
                    view.description.as_deref(),
                    git.and_then(|g| g.subject.as_deref()),
                    links.commit,
                    links.pr,
                ],
            )?;
            db.execute("DELETE FROM stages WHERE run_id = ?1", [&view.run_id])?;
            let mut insert = db.prepare("INSERT INTO stages VALUES (?1,?2,?3,?4,?5,?6)")?;
            for (i, stage) in view.stages.iter().enumerate() {
                insert.execute(params![
                    view.run_id,
                    stage.name,
                    i as i64,
                    stage.state.word(),
                    stage.started_at.map(|t| t.to_string()),
                    stage.duration_ms.map(|d| d as i64),
                ])?;
            }
            Ok(())
        })
    }

    pub fn put_build(&mut self, m: &BuildManifest) -> Result<(), IndexError> {
        self.run(|db| {
            db.execute(
                "INSERT OR REPLACE INTO builds VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![
                    m.build as i64,
                    m.name,
                    m.run_id,
                    m.stage,
                    m.commit,
                    m.version,
                    m.trigger.name(),
                    m.created_at.to_string(),
                    m.bundle_size as i64,
                ],
            )
            .map(drop)
        })
    }

    pub fn put_event(&mut self, e: &Entry) -> Result<(), IndexError> {
        let f = &e.fact;
        self.run(|db| {
            db.execute(
                "INSERT OR REPLACE INTO events VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                params![
                    e.seq as i64,
                    e.at.to_string(),
                    f.provider,
                    f.kind,
                    f.commit,
                    f.reference,
                    f.pr,
                    f.status,
                    f.title,
                    f.url,
                ],
            )
            .map(drop)
        })
    }

    /// The commits with the latest activity (a run or an event), newest first.
    pub fn recent_commits(&self, limit: usize) -> Result<Vec<String>, IndexError> {
        self.run(|db| {
            let mut q = db.prepare(
                "SELECT sha, MAX(at) AS last FROM (
                     SELECT sha, started_at AS at FROM runs WHERE sha IS NOT NULL
                     UNION ALL SELECT sha, at FROM events WHERE sha IS NOT NULL)
                 GROUP BY sha ORDER BY last DESC LIMIT ?1",
            )?;
            q.query_map([limit as i64], |r| r.get(0))?.collect()
        })
    }

    /// The latest runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRow>, IndexError> {
        let mut runs = self.runs_where(
            "run_id IN (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT CAST(?1 AS INTEGER))",
            &limit.to_string(),
        )?;
        runs.reverse();
        Ok(runs)
    }

    /// Everything about one commit.
    pub fn commit(&self, sha: &str) -> Result<History, IndexError> {
        self.history("sha = ?1", sha)
    }

    /// Everything about one pull request (by its number).
    pub fn pull_request(&self, pr: &str) -> Result<History, IndexError> {
        self.history("pr = ?1", pr)
    }

    /// Everything about one version: its runs, and the events of the commits they ran on.
    pub fn version(&self, version: &str) -> Result<History, IndexError> {
        let mut history = History {
            runs: self.runs_where("version = ?1", version)?,
            events: Vec::new(),
        };
        let mut shas: Vec<&str> = history
            .runs
            .iter()
            .filter_map(|r| r.sha.as_deref())
            .collect();
        shas.sort_unstable();
        shas.dedup();
        let mut events = Vec::new();
        for sha in shas {
            events.extend(self.events_where("sha = ?1", sha)?);
        }
        history.events = events;
        Ok(history)
    }

    fn history(&self, filter: &str, value: &str) -> Result<History, IndexError> {
        Ok(History {
            runs: self.runs_where(filter, value)?,
            events: self.events_where(filter, value)?,
        })
    }

    fn runs_where(&self, filter: &str, value: &str) -> Result<Vec<RunRow>, IndexError> {
        self.run(|db| {
            let mut q = db.prepare(&format!(
                "SELECT run_id, status, trigger, started_at, duration_ms, sha, branch, tag, version, pr,
                        description, subject, commit_link, pr_link
                 FROM runs WHERE {filter} ORDER BY started_at"
            ))?;
            let mut runs: Vec<RunRow> = q
                .query_map([value], |r| {
                    Ok(RunRow {
                        run_id: r.get(0)?,
                        status: r.get(1)?,
                        trigger: r.get(2)?,
                        started_at: r.get(3)?,
                        duration_ms: r.get(4)?,
                        sha: r.get(5)?,
                        branch: r.get(6)?,
                        tag: r.get(7)?,
                        version: r.get(8)?,
                        pr: r.get(9)?,
                        description: r.get(10)?,
                        subject: r.get(11)?,
                        commit_link: r.get(12)?,
                        pr_link: r.get(13)?,
                        stages: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut stages = db.prepare(
                "SELECT name, state, duration_ms FROM stages WHERE run_id = ?1 ORDER BY position",
            )?;
            for run in &mut runs {
                run.stages = stages
                    .query_map([&run.run_id], |r| {
                        Ok(StageRow {
                            name: r.get(0)?,
                            state: r.get(1)?,
                            duration_ms: r.get(2)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
            }
            Ok(runs)
        })
    }

    fn events_where(&self, filter: &str, value: &str) -> Result<Vec<EventRow>, IndexError> {
        self.run(|db| {
            let mut q = db.prepare(&format!(
                "SELECT seq, at, provider, kind, sha, reference, pr, status, title, url
                 FROM events WHERE {filter} ORDER BY seq"
            ))?;
            q.query_map([value], |r| {
                Ok(EventRow {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    provider: r.get(2)?,
                    kind: r.get(3)?,
                    sha: r.get(4)?,
                    reference: r.get(5)?,
                    pr: r.get(6)?,
                    status: r.get(7)?,
                    title: r.get(8)?,
                    url: r.get(9)?,
                })
            })?
            .collect()
        })
    }

    /// A stage's durations, oldest run first (the last `limit`).
    pub fn durations(&self, stage: &str, limit: usize) -> Result<Vec<Duration>, IndexError> {
        self.run(|db| {
            let mut q = db.prepare(
                "SELECT run_id, started_at, state, duration_ms FROM (
                     SELECT s.run_id, s.started_at, s.state, s.duration_ms, r.started_at AS run_at
                     FROM stages s JOIN runs r ON r.run_id = s.run_id
                     WHERE s.name = ?1 ORDER BY run_at DESC LIMIT ?2)
                 ORDER BY run_at",
            )?;
            q.query_map(params![stage, limit as i64], |r| {
                Ok(Duration {
                    run_id: r.get(0)?,
                    started_at: r.get(1)?,
                    state: r.get(2)?,
                    duration_ms: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// How many runs the index holds.
    pub fn run_count(&self) -> Result<u64, IndexError> {
        self.run(|db| {
            db.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))
                .optional()
                .map(|n| n.unwrap_or(0) as u64)
        })
    }
}
