//! The state directory: one folder per run holding its metadata, journal and stage logs,
//! and the views of a run that are replayed from its journal.
//!
//! ```text
//! .murphy/
//!   runs/<run-id>/meta.json       written once, atomically, when the run starts (synced with
//!                                 the journal: see `Journal::sync`)
//!   runs/<run-id>/journal.jsonl   append-only events (see `journal`)
//!   runs/<run-id>/logs/<stage>.log   made when the stage first prints or fails
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::change::Change;
use crate::journal::{self, Event, Journal, Outcome, RunStatus};
use crate::lock;
use crate::trigger::Trigger;

/// Format version of `meta.json`.
pub const META_VERSION: u32 = 1;

/// An empty file in the folder of a run brought in from the shared store: made on another
/// machine, so "the latest run" of this one means its own first.
pub const PULLED: &str = "pulled";

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("cannot access `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no runs recorded in `{}` yet", state_dir.display())]
    NoRuns { state_dir: PathBuf },
    #[error("no run `{id}` in `{}` (see `murphy runs`)", state_dir.display())]
    UnknownRun { id: String, state_dir: PathBuf },
    #[error(
        "`{}` is format version {version}; this murphy reads version {}",
        path.display(),
        META_VERSION
    )]
    NewerMeta { path: PathBuf, version: u32 },
    #[error("`{}` is not a murphy run record", path.display())]
    BadMeta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecordsError + '_ {
    move |source| RecordsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What is known of a run before its first stage starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMeta {
    pub v: u32,
    pub run_id: String,
    pub pipeline: String,
    pub file: PathBuf,
    pub started_at: Timestamp,
    pub murphy_version: String,
    /// What the run is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// What the run was asked to do; a resumed run does the same.
    #[serde(default)]
    pub params: RunParams,
}

/// What a run was asked to do, fixed when it starts: the stages (in pipeline order), and
/// those `--force` re-runs and `--from` takes from checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunParams {
    pub stages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub force: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_checkpoint: Vec<String>,
    /// The needs of a CI job, restored from the store and never run (`--needs-from-store`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_store: Vec<String>,
    /// Where each stage came from (file, owner), for pipelines that include other files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub origins: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// The folder of one run.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub id: String,
    pub path: PathBuf,
}

impl RunDir {
    pub fn meta_path(&self) -> PathBuf {
        self.path.join("meta.json")
    }
    pub fn journal_path(&self) -> PathBuf {
        self.path.join("journal.jsonl")
    }
    pub fn log_path(&self, stage: &str) -> PathBuf {
        self.path.join("logs").join(format!("{stage}.log"))
    }
}

impl StateDir {
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Makes a new run folder with a fresh id, writes its metadata and opens its journal.
    pub fn create_run(
        &self,
        pipeline: &str,
        file: &Path,
        change: Change,
        params: RunParams,
    ) -> Result<(RunDir, RunMeta, Journal), RecordsError> {
        let runs = self.runs_dir();
        atomic_file::private_dir(&self.root).map_err(io_err(&self.root))?;
        atomic_file::private_dir(&runs).map_err(io_err(&runs))?;
        // The state dir is murphy's, not the project's: keep it out of `git status`.
        crate::atomic_file::ignore_all(&self.root)
            .map_err(io_err(&self.root.join(".gitignore")))?;
        let started_at = Timestamp::now();
        let (id, path) = loop {
            let id = new_run_id(started_at);
            let path = runs.join(&id);
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => break (id, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path)(e)),
            }
        };
        let dir = RunDir { id, path };
        let logs = dir.path.join("logs");
        DirBuilder::new()
            .mode(0o700)
            .create(&logs)
            .map_err(io_err(&logs))?;
        let meta = RunMeta {
            v: META_VERSION,
            run_id: dir.id.clone(),
            pipeline: pipeline.to_owned(),
            file: file.to_owned(),
            started_at,
            murphy_version: env!("CARGO_PKG_VERSION").to_owned(),
            change: Some(change.redacted()),
            params,
        };
        let meta_path = dir.meta_path();
        let bytes = serde_json::to_vec_pretty(&meta)
            .map_err(io::Error::other)
            .map_err(io_err(&meta_path))?;
        // Not fsynced here: opening the journal starts the sync of the run's folder on a
        // thread, and the journal's first sync (at the run's end or at a confirmed
        // publication, whichever comes first) waits for it (see `Journal::sync`).
        atomic_file::write_unsynced(&meta_path, &bytes).map_err(io_err(&meta_path))?;
        let journal_path = dir.journal_path();
        let journal = Journal::open(&journal_path).map_err(io_err(&journal_path))?;
        Ok((dir, meta, journal))
    }

    /// The folder of run `id`, made (with its `logs`) if absent: where a run another machine
    /// recorded is brought in from the shared store.
    pub fn make_run_dir(&self, id: &str) -> Result<RunDir, RecordsError> {
        let runs = self.runs_dir();
        atomic_file::private_dir(&self.root).map_err(io_err(&self.root))?;
        atomic_file::ignore_all(&self.root).map_err(io_err(&self.root.join(".gitignore")))?;
        atomic_file::private_dir(&runs).map_err(io_err(&runs))?;
        let dir = RunDir {
            path: runs.join(id),
            id: id.to_owned(),
        };
        atomic_file::private_dir(&dir.path).map_err(io_err(&dir.path))?;
        let logs = dir.path.join("logs");
        atomic_file::private_dir(&logs).map_err(io_err(&logs))?;
        Ok(dir)
    }

    /// Run `id`, if it is recorded here.
    pub fn recorded_run(&self, id: &str) -> Option<RunDir> {
        let path = self.runs_dir().join(id);
        path.join("meta.json").is_file().then(|| RunDir {
            path,
            id: id.to_owned(),
        })
    }

    /// Run ids, oldest first. Ids start with their UTC start time, so they sort by it.
    pub fn run_ids(&self) -> Result<Vec<String>, RecordsError> {
        let runs = self.runs_dir();
        let mut ids = self.run_folders()?;
        ids.retain(|id| is_run(&runs.join(id)));
        Ok(ids)
    }

    /// The names in the folder of runs, oldest first, without checking each is a run.
    fn run_folders(&self) -> Result<Vec<String>, RecordsError> {
        let runs = self.runs_dir();
        let entries = match fs::read_dir(&runs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&runs)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&runs))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The named run, or the latest one when `id` is `None`.
    pub fn find_run(&self, id: Option<&str>) -> Result<RunDir, RecordsError> {
        let runs = self.runs_dir();
        let id = match id {
            Some(id) if self.run_ids()?.iter().any(|i| i == id) => id.to_owned(),
            Some(id) => {
                return Err(RecordsError::UnknownRun {
                    id: id.to_owned(),
                    state_dir: self.root.clone(),
                });
            }
            // The latest run made here, before one another machine made. From the newest
            // down: a run starts by finding it, and the runs before it pile up.
            None => {
                let mut newest = None;
                let mut latest_here = None;
                for id in self.run_folders()?.into_iter().rev() {
                    let dir = runs.join(&id);
                    if !is_run(&dir) {
                        continue;
                    }
                    if !dir.join(PULLED).exists() {
                        latest_here = Some(id);
                        break;
                    }
                    newest.get_or_insert(id);
                }
                latest_here.or(newest).ok_or_else(|| RecordsError::NoRuns {
                    state_dir: self.root.clone(),
                })?
            }
        };
        Ok(RunDir {
            path: self.runs_dir().join(&id),
            id,
        })
    }

    /// Every run, newest first.
    pub fn list(&self) -> Result<Vec<RunView>, RecordsError> {
        let mut views = Vec::new();
        for id in self.run_ids()?.into_iter().rev() {
            let dir = RunDir {
                path: self.runs_dir().join(&id),
                id,
            };
            match RunView::load(self, &dir) {
                Ok(view) => views.push(view),
                Err(err) => {
                    tracing::warn!("skipping run {}: {}", dir.id, crate::causes::line(&err))
                }
            }
        }
        Ok(views)
    }
}

/// Whether `dir` holds a run: its `meta.json` is written before anything else of it.
fn is_run(dir: &Path) -> bool {
    dir.join("meta.json").is_file()
}

/// `20261122-041500.123-3fa2c41b`: sorts by start time, unique by a random suffix. Runs of
/// one state directory are serialized by its lock, but machines sharing a store are not: two
/// of them may start a run in the same millisecond, so the suffix is 32 random bits, not 16.
fn new_run_id(at: Timestamp) -> String {
    format!(
        "{}-{}",
        at.strftime("%Y%m%d-%H%M%S%.3f"),
        crate::fingerprint::hex(&crate::random::bytes::<4>())
    )
}

/// Where a run stands, as its journal tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    Interrupted,
    /// No end was recorded and the murphy that ran it is gone: kill -9, a crash, a power cut.
    Killed,
}

impl RunState {
    pub fn word(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Interrupted => "interrupted",
            RunState::Killed => "killed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Interrupted,
    Skipped,
    /// Not run: its `when:` does not hold for this run's trigger, branch or tag.
    SkippedWhen,
    /// Not run: a verified checkpoint for its fingerprint was restored.
    Cached,
}

impl StageState {
    /// Finished well: its outputs are there for the stages after it.
    pub fn is_success(self) -> bool {
        matches!(self, StageState::Succeeded | StageState::Cached)
    }

    pub fn word(self) -> &'static str {
        match self {
            StageState::Pending => "pending",
            StageState::Running => "running",
            StageState::Succeeded => "succeeded",
            StageState::Failed => "failed",
            StageState::TimedOut => "timed out",
            StageState::Interrupted => "interrupted",
            StageState::Skipped => "skipped",
            StageState::SkippedWhen => "skipped (when)",
            StageState::Cached => "cached",
        }
    }
}

impl From<Outcome> for StageState {
    fn from(outcome: Outcome) -> StageState {
        match outcome {
            Outcome::Succeeded => StageState::Succeeded,
            Outcome::Failed => StageState::Failed,
            Outcome::TimedOut => StageState::TimedOut,
            Outcome::Interrupted => StageState::Interrupted,
        }
    }
}

/// A run replayed from its journal: what `murphy runs` and `murphy status` show.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub pipeline: String,
    pub status: RunState,
    pub trigger: Option<Trigger>,
    pub description: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub stages: Vec<StageView>,
    /// Everything known of the change, for `murphy show`.
    #[serde(skip)]
    pub change: Option<Change>,
    /// What the run was asked to do, for `murphy resume`.
    #[serde(skip)]
    pub params: RunParams,
    /// Every publication the servers confirmed.
    pub published: Vec<PublishedView>,
    /// Input and output files the run read again because the stat cache could not vouch
    /// for them (new, changed or touched).
    pub rehashed: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishedView {
    pub stage: String,
    pub target: String,
    pub file: String,
    pub digest: String,
    pub outcome: crate::publish::Confirmed,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    pub name: String,
    pub state: StageState,
    /// Attempts in this run, across every resume.
    pub attempts: u32,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Of its last start (in the last resume) to its end.
    pub duration_ms: Option<u64>,
    /// Time its attempts ran, across every resume (an attempt cut off by kill -9 has no
    /// recorded end and does not count).
    pub active_ms: Option<u64>,
    /// From its first start in the run, before any resume, to its last end: waits between
    /// retries and the time murphy was down included.
    pub wall_ms: Option<u64>,
    #[serde(skip)]
    first_started_at: Option<Timestamp>,
    #[serde(skip)]
    attempt_started_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why it was skipped, or why it failed when no exit code says it.
    pub reason: Option<String>,
    /// Why it ran instead of being restored from a checkpoint.
    pub why: Option<String>,
    pub fingerprint: Option<String>,
    pub output_digest: Option<String>,
    /// The archive build an archiving stage made.
    pub build: Option<u64>,
    /// The file (and owner) the stage came from, in a pipeline that includes other files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl RunView {
    /// Replays the run in `dir` (a folder of `state`'s), asking the lock whether it is live.
    pub fn load(state: &StateDir, dir: &RunDir) -> Result<RunView, RecordsError> {
        let meta_path = dir.meta_path();
        let bytes = fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: RunMeta =
            serde_json::from_slice(&bytes).map_err(|source| RecordsError::BadMeta {
                path: meta_path.clone(),
                source,
            })?;
        if meta.v != META_VERSION {
            return Err(RecordsError::NewerMeta {
                path: meta_path,
                version: meta.v,
            });
        }
        let journal_path = dir.journal_path();
        let records = match journal::read(&journal_path) {
            Ok(records) => records,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&journal_path)(e)),
        };
        let live = lock::holder(&state.root).is_some_and(|h| h.run_id == meta.run_id);
        Ok(RunView::replay(meta, &records, live))
    }

    fn replay(meta: RunMeta, records: &[journal::Record], live: bool) -> RunView {
        let mut view = RunView {
            run_id: meta.run_id,
            pipeline: meta.pipeline,
            status: RunState::Killed,
            params: meta.params.clone(),
            trigger: meta.change.as_ref().map(|c| c.trigger),
            description: meta.change.as_ref().and_then(|c| c.description.clone()),
            change: meta.change,
            started_at: meta.started_at,
            finished_at: None,
            duration_ms: None,
            stages: Vec::new(),
            published: Vec::new(),
            rehashed: None,
        };
        // Stage name to its place in `view.stages`: a run of thousands of stages is replayed
        // without a search per record.
        let mut index = HashMap::new();
        for name in &view.params.stages.clone() {
            view.stage_mut(&mut index, name);
        }
        for record in records {
            match &record.event {
                Event::RunStarted { .. } => {}
                Event::RunResumed { .. } => {
                    view.status = RunState::Killed;
                    view.finished_at = None;
                    view.duration_ms = None;
                }
                Event::StageStarted {
                    stage,
                    attempt,
                    why,
                } => {
                    let s = view.stage_mut(&mut index, stage);
                    if *attempt == 1 {
                        // A resumed run starts the stage afresh.
                        s.started_at = None;
                        s.why = why.clone();
                    }
                    s.state = StageState::Running;
                    s.attempts += 1;
                    s.started_at.get_or_insert(record.at);
                    s.first_started_at.get_or_insert(record.at);
                    s.attempt_started_at = Some(record.at);
                    s.finished_at = None;
                    s.exit_code = None;
                    s.signal = None;
                    s.reason = None;
                }
                Event::StageCached {
                    stage,
                    fingerprint,
                    output_digest,
                    note,
                    ..
                } => {
                    let s = view.stage_mut(&mut index, stage);
                    s.state = StageState::Cached;
                    s.why = None;
                    s.exit_code = None;
                    s.signal = None;
                    s.fingerprint = Some(fingerprint.clone());
                    s.output_digest = Some(output_digest.clone());
                    s.reason = note.clone();
                    s.started_at = Some(record.at);
                    s.finished_at = Some(record.at);
                    s.duration_ms = Some(0);
                    s.active_ms.get_or_insert(0);
                    s.wall_ms.get_or_insert(0);
                }
                Event::StageRechecked {
                    stage,
                    fingerprint,
                    output_digest,
                    ..
                } => {
                    let s = view.stage_mut(&mut index, stage);
                    if !s.state.is_success() {
                        s.state = StageState::Succeeded;
                    }
                    s.fingerprint = Some(fingerprint.clone());
                    s.output_digest = Some(output_digest.clone());
                }
                Event::StageFinished {
                    stage,
                    outcome,
                    exit_code,
                    signal,
                    message,
                    fingerprint,
                    output_digest,
                    ..
                } => {
                    let s = view.stage_mut(&mut index, stage);
                    s.state = (*outcome).into();
                    s.fingerprint = fingerprint.clone();
                    s.output_digest = output_digest.clone();
                    s.finished_at = Some(record.at);
                    s.duration_ms = s.started_at.map(|start| millis_between(start, record.at));
                    if let Some(start) = s.attempt_started_at.take() {
                        *s.active_ms.get_or_insert(0) += millis_between(start, record.at);
                    }
                    s.wall_ms = s
                        .first_started_at
                        .map(|start| millis_between(start, record.at));
                    s.exit_code = *exit_code;
                    s.signal = *signal;
                    s.reason = message.clone();
                }
                Event::Published {
                    stage,
                    target,
                    file,
                    digest,
                    outcome,
                } => view.published.push(PublishedView {
                    stage: stage.clone(),
                    target: target.clone(),
                    file: file.clone(),
                    digest: digest.clone(),
                    outcome: *outcome,
                }),
                Event::Archived { stage, build, .. } => {
                    view.stage_mut(&mut index, stage).build = Some(*build);
                }
                Event::StageSkipped {
                    stage,
                    reason,
                    when,
                } => {
                    let s = view.stage_mut(&mut index, stage);
                    s.state = if *when {
                        StageState::SkippedWhen
                    } else {
                        StageState::Skipped
                    };
                    s.reason = Some(reason.clone());
                }
                Event::RunFinished { status, rehashed } => {
                    view.rehashed = *rehashed;
                    view.status = match status {
                        RunStatus::Succeeded => RunState::Succeeded,
                        RunStatus::Failed => RunState::Failed,
                        RunStatus::Interrupted => RunState::Interrupted,
                    };
                    view.finished_at = Some(record.at);
                    view.duration_ms = Some(millis_between(view.started_at, record.at));
                }
            }
        }
        if view.finished_at.is_none() && live {
            view.status = RunState::Running;
        }
        if view.status == RunState::Killed {
            for stage in view
                .stages
                .iter_mut()
                .filter(|s| s.state == StageState::Running)
            {
                stage.state = StageState::Interrupted;
                stage.reason = Some("murphy stopped while it ran".into());
            }
        }
        view
    }

    fn stage_mut(&mut self, index: &mut HashMap<String, usize>, name: &str) -> &mut StageView {
        let i = match index.get(name) {
            Some(&i) => i,
            None => {
                index.insert(name.to_owned(), self.stages.len());
                self.stages.push(StageView {
                    name: name.to_owned(),
                    state: StageState::Pending,
                    attempts: 0,
                    started_at: None,
                    finished_at: None,
                    duration_ms: None,
                    active_ms: None,
                    wall_ms: None,
                    first_started_at: None,
                    attempt_started_at: None,
                    exit_code: None,
                    signal: None,
                    reason: None,
                    why: None,
                    fingerprint: None,
                    output_digest: None,
                    build: None,
                    from: self.params.origins.get(name).cloned(),
                });
                self.stages.len() - 1
            }
        };
        &mut self.stages[i]
    }
}

fn millis_between(start: Timestamp, end: Timestamp) -> u64 {
    u64::try_from(end.as_millisecond() - start.as_millisecond()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_run_is_the_newest_made_here_and_a_folder_without_meta_is_no_run() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_owned());
        let make = |id: &str, pulled: bool| {
            let run = state.runs_dir().join(id);
            fs::create_dir_all(&run).unwrap();
            fs::write(run.join("meta.json"), "{}").unwrap();
            if pulled {
                fs::write(run.join(PULLED), "").unwrap();
            }
        };
        let latest = || state.find_run(None).map(|run| run.id);
        assert!(matches!(latest(), Err(RecordsError::NoRuns { .. })));

        make("20260101-000000.000-aaaaaaaa", true);
        assert_eq!(latest().unwrap(), "20260101-000000.000-aaaaaaaa");
        make("20260102-000000.000-bbbbbbbb", false);
        make("20260103-000000.000-cccccccc", true);
        // Newer, but pulled from another machine, or not a run (a kill before its meta.json).
        fs::create_dir_all(state.runs_dir().join("20260104-000000.000-dddddddd")).unwrap();
        assert_eq!(latest().unwrap(), "20260102-000000.000-bbbbbbbb");
        assert_eq!(state.run_ids().unwrap().len(), 3);
    }
}
