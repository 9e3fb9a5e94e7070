//! One run of a plan, from the lock to the notifications: what `murphy run` and `murphy resume` do.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::change::{self, Change, ChangeError};
use crate::environment;
use crate::executor::{self, Context, Done, Mode, Options, Start};
use crate::journal::{Journal, RunStatus};
use crate::lock::{LockError, RunLock};
use crate::plan::{Plan, PlanError, StageId};
use crate::records::{RecordsError, RunDir, RunParams, RunState, RunView, StateDir};
use crate::remote::{Remote, StoreUrl};
use crate::report::Reporter;
use crate::secrets::SecretError;
use crate::stat_cache::StatCache;
use crate::store::Store;
use crate::trigger::Trigger;

mod explain;
mod notify;
mod reports;
mod shared;

pub use explain::{Action, Explained, explain};

pub use notify::flush_outbox;
use notify::notify;
use shared::{for_run, lease_ttl, open_store, pull_runs, push_run, refuse_other_commit, share_run};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error(
        "a tag run releases what HEAD holds, and {0}; commit or stash them, or pass --allow-dirty"
    )]
    DirtyRelease(String),
    #[error(
        "stage `{stage}` has no checkpoint, so the run cannot start at `{from}`: run `murphy run {stage}` first"
    )]
    NoCheckpoint { stage: String, from: String },
    /// `flag` is written as the user wrote it before the name (`--force=`, `--from `).
    #[error("`{flag}{name}` names a stage this run does not include")]
    NotInRun { flag: &'static str, name: String },
    #[error(
        "MURPHY_STORE_KEY is shorter than 16 bytes: too weak to authenticate checkpoint records"
    )]
    WeakStoreKey,
    #[error(transparent)]
    Leased(#[from] crate::remote::runs::Leased),
    #[error("MURPHY_STORE_LEASE=`{0}` is not a duration like `90s` of at least 3 s")]
    BadLease(String),
    #[error(
        "lost the lease on run {run} to {holder}: stopping before anything else is published or archived"
    )]
    LostLease { run: String, holder: String },
    #[error(
        "run {run} was made from commit {theirs} on another machine, and this checkout is at {ours}: check out {theirs} to finish it, or start a new run"
    )]
    OtherCommit {
        run: String,
        theirs: String,
        ours: String,
    },
    #[error("run {0} succeeded; there is nothing to resume")]
    NothingToResume(String),
    #[error("stage `{stage}` of run {run} is no longer in `{}`; start a new run instead", file.display())]
    StageGone {
        stage: String,
        run: String,
        file: PathBuf,
    },
    #[error("the release cannot succeed; nothing was run:\n  {}", .0.join("\n  "))]
    Preflight(Vec<String>),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(context: &str, source: std::io::Error) -> SessionError {
    SessionError::Io {
        context: context.to_owned(),
        source,
    }
}

fn http_error(err: reqwest::Error) -> SessionError {
    io_error("cannot make an HTTP client", std::io::Error::other(err))
}

/// What `murphy run` and `murphy resume` share: where the records go and how stages are run.
pub struct Setup {
    pub state: StateDir,
    /// Where secrets not in the environment are read from (and `MURPHY_STORE_KEY`).
    pub secrets_file: PathBuf,
    pub options: Options,
    /// Stage output on the terminal as well as in the logs.
    pub verbose: bool,
    /// The shared store, if there is one.
    pub store: Option<StoreUrl>,
    /// Where the run's JUnit report goes, written at its end whatever its outcome.
    pub junit: Option<PathBuf>,
}

/// Which stages run although a checkpoint exists (`--force`), and where the run starts
/// (`--from`).
pub struct Reruns {
    /// Stage names; an empty name forces every stage of the run.
    pub force: Vec<String>,
    pub from: Option<String>,
    /// `--needs-from-store`: the stages of a CI job, named as on the command line. Everything
    /// they need is restored from the store, never run. Empty: off.
    pub needs_from_store: Vec<String>,
}

/// A new run of `plan`.
pub struct NewRun {
    /// The pipeline file, for the run's records.
    pub file: PathBuf,
    pub plan: Arc<Plan>,
    /// The stages to run, with everything they need.
    pub selected: Vec<StageId>,
    pub reruns: Reruns,
    pub change: change::Request,
    /// Let a tag run release from a working tree whose tracked files differ from HEAD.
    pub allow_dirty: bool,
}

/// The continuation of a recorded run with `plan` as it is now.
pub struct Resumed {
    /// The pipeline file, for errors that name it.
    pub file: PathBuf,
    pub plan: Arc<Plan>,
    /// The run's id [default: the latest run].
    pub run: Option<String>,
    pub allow_dirty: bool,
}

/// Starts a new run: its change, the lock, its secrets and (for a tag run) the preflight of
/// its publish targets, its records, then the stages and the notifications.
pub fn start(setup: &Setup, new: NewRun) -> Result<RunStatus, SessionError> {
    let NewRun {
        file,
        plan,
        selected,
        reruns,
        change: request,
        allow_dirty,
    } = new;
    let state = &setup.state;
    let stat_cache = stat_cache(state);
    let env = environment::outer();
    // Before the lock: an editor may stay open for minutes.
    let change = change::collect(&plan, &env, &request, state.root())?;
    for note in &change.notes {
        crate::report::note(&format!("note: {note}"));
    }
    refuse_dirty_release(change::dirty_release(&change), allow_dirty)?;
    // The lock first: it closes the state directory, where the secrets file lives.
    let mut lock = RunLock::acquire(state.root())?;
    sweep_dead_writers(state, &lock);
    let store_key = store_key(&env, &setup.secrets_file)?;
    let latest = LatestRun::load(state);
    let modes = modes(
        &plan,
        &selected,
        &reruns,
        &store(state, store_key.as_deref()),
    )?;
    let names = |mode: Mode| -> Vec<String> {
        selected
            .iter()
            .filter(|&&id| modes[id] == mode)
            .map(|&id| plan.stages[id].name.clone())
            .collect()
    };
    let params = RunParams {
        stages: selected
            .iter()
            .map(|&id| plan.stages[id].name.clone())
            .collect(),
        force: names(Mode::Force),
        from_checkpoint: names(Mode::Checkpoint),
        from_store: selected
            .iter()
            .filter(|&&id| matches!(modes[id], Mode::FromStore { .. }))
            .map(|&id| plan.stages[id].name.clone())
            .collect(),
        origins: match plan.has_origins() {
            true => selected
                .iter()
                .map(|&id| (plan.stages[id].name.clone(), plan.stages[id].origin()))
                .collect(),
            false => Default::default(),
        },
    };
    let skip = skip_when(&plan, &selected, &change);
    let secrets = load_secrets(&plan, &selected, &skip, &modes, &env, &setup.secrets_file)?;
    if change.trigger == Trigger::Tag {
        preflight(&plan, &selected, &skip, &change, &secrets, state)?;
    }
    let runtime = runtime()?;
    let remote = open_store(setup.store.as_ref(), &env, &runtime)?;
    let lease = lease_ttl(&env)?;
    let (run_dir, _meta, journal) = state.create_run(&plan.name, &file, change.clone(), params)?;
    let remote = remote.map(|r| for_run(r, &change, &env, &run_dir.id).keyed(store_key.as_deref()));
    lock.set_run(&run_dir.id)
        .map_err(|e| io_error("cannot write the state directory's lock", e))?;
    let latest = latest.wait();
    if let Some(latest) = &latest {
        stop_leftovers_of_killed_run(latest);
    }
    let first = ran_in(latest.as_ref(), &plan);
    // A stage the last run ran most likely runs again (an edit-and-run loop), and one that
    // runs whatever the store holds surely does: their commands need not wait for git.
    let likely_runs = selected
        .iter()
        .any(|id| first.contains(id) && !skip.contains_key(id));
    let changed_early = (likely_runs || surely_runs(&plan, &selected, &modes, &skip))
        .then(|| change::list_early(plan.clone(), change.clone(), env.clone(), state.root()))
        .flatten();
    let start = Start {
        skip_when: skip,
        first,
        ..Start::default()
    };
    let prepared = Prepared {
        plan,
        run_dir,
        journal,
        schedule: Schedule {
            selected,
            modes,
            start,
        },
        secrets,
        confirmed: Default::default(),
        store_key,
        remote,
        lease,
        pulled: None,
        stat_cache,
        changed_early,
    };
    let status = execute(setup, prepared, &change, &env, runtime)?;
    release(lock);
    Ok(status)
}

/// The record of the run before this one, read on a thread while the new run is set up: its
/// stages' order and a killed run's leftovers matter only once the stages start.
enum LatestRun {
    Loading(std::thread::JoinHandle<Option<RunView>>),
    Loaded(Box<Option<RunView>>),
}

impl LatestRun {
    /// Must come before the new run's folder exists, or that would be the latest.
    fn load(state: &StateDir) -> LatestRun {
        let Ok(dir) = state.find_run(None) else {
            return LatestRun::Loaded(Box::new(None));
        };
        let (from, run) = (state.clone(), dir.clone());
        match std::thread::Builder::new()
            .name("latest-run".into())
            .spawn(move || RunView::load(&from, &run).ok())
        {
            Ok(thread) => LatestRun::Loading(thread),
            Err(_) => LatestRun::Loaded(Box::new(RunView::load(state, &dir).ok())),
        }
    }

    fn wait(self) -> Option<RunView> {
        match self {
            LatestRun::Loading(thread) => thread.join().ok().flatten(),
            LatestRun::Loaded(view) => *view,
        }
    }
}

/// Under the run lock, every temp file murphy's own state holds is a dead writer's. Swept
/// before anything of this run writes there. The store's folders are read only when the last
/// holder of the lock did not end normally: they grow with every checkpoint, and a writer
/// that ended leaves no temp file. The state directory's own files are always swept: a
/// thread of the last run (the list of tracked files) may have been cut off at its exit.
fn sweep_dead_writers(state: &StateDir, lock: &RunLock) {
    if !lock.left_clean() {
        Store::new(state.root()).sweep_temp_files();
    }
    crate::atomic_file::sweep(state.root());
}

/// Releases the lock after a run that ended (whatever its stages did): every write of the
/// run is done, so the next run need not sweep the store. An error costs that sweep only.
fn release(lock: RunLock) {
    if let Err(err) = lock.release() {
        tracing::debug!("cannot mark the state directory's lock released: {err}");
    }
}

/// Whether a stage will run its commands whatever the store holds (forced, or never cached).
fn surely_runs(
    plan: &Plan,
    selected: &[StageId],
    modes: &[Mode],
    skip: &HashMap<StageId, String>,
) -> bool {
    selected.iter().any(|id| {
        !skip.contains_key(id)
            && match modes[*id] {
                Mode::Force => true,
                Mode::Normal => !plan.stages[*id].cacheable,
                Mode::Checkpoint | Mode::FromStore { .. } => false,
            }
    })
}

/// Continues a recorded run that did not succeed: what it was about and asked for stays, what
/// succeeded is checked again, what was running runs again.
pub fn resume(setup: &Setup, resumed: Resumed) -> Result<RunStatus, SessionError> {
    let Resumed {
        file,
        plan,
        run,
        allow_dirty,
    } = resumed;
    let state = &setup.state;
    let mut lock = RunLock::acquire(state.root())?;
    sweep_dead_writers(state, &lock);
    let stat_cache = stat_cache(state);
    let env = environment::outer();
    let lease = lease_ttl(&env)?;
    let runtime = runtime()?;
    let shared = open_store(setup.store.as_ref(), &env, &runtime)?;
    if let Some(remote) = &shared {
        pull_runs(remote, &env, state, run.as_deref(), &runtime)?;
    }
    let run_dir = state.find_run(run.as_deref())?;
    let view = RunView::load(state, &run_dir)?;
    if view.status == RunState::Succeeded {
        if let Some(remote) = &shared {
            let change = view.change.clone().unwrap_or_else(Change::local);
            push_run(remote, &env, &run_dir, &change, &runtime)?;
        }
        return Err(SessionError::NothingToResume(view.run_id));
    }
    let pulled = run_dir.path.join(crate::records::PULLED);
    let pulled = pulled.exists().then_some(pulled);
    if pulled.is_some() {
        refuse_other_commit(&view, &plan.root)?;
    }
    let mut selected = Vec::new();
    let mut done = HashMap::new();
    let mut discard = Vec::new();
    for stage in &view.stages {
        let Some(id) = plan.stage_id(&stage.name) else {
            return Err(SessionError::StageGone {
                stage: stage.name.clone(),
                run: view.run_id.clone(),
                file,
            });
        };
        selected.push(id);
        match (&stage.output_digest, stage.state.is_success()) {
            (Some(digest), true) => {
                let before = Done {
                    fingerprint: stage.fingerprint.clone(),
                    output_digest: digest.clone(),
                };
                done.insert(id, before);
            }
            _ if stage.attempts > 0 => discard.push(id),
            _ => {}
        }
    }
    // Stages added to the pipeline since, which a selected stage now needs, join the run.
    let names: Vec<String> = selected
        .iter()
        .map(|&i| plan.stages[i].name.clone())
        .collect();
    let selected = plan.select(&names)?;
    lock.set_run(&run_dir.id)
        .map_err(|e| io_error("cannot write the state directory's lock", e))?;
    let journal = Journal::open(&run_dir.journal_path())
        .map_err(|e| io_error("cannot open the run's journal", e))?;
    // The run keeps what it was about: same trigger, same version, same `when:` answers.
    let change = view.change.clone().unwrap_or_else(Change::local);
    refuse_dirty_release(change::dirty_release_now(&change, &plan.root), allow_dirty)?;
    let skip = skip_when(&plan, &selected, &change);
    // What `--force`, `--from` and `--needs-from-store` asked of the run still holds for
    // what it has left to do.
    let mut modes = vec![Mode::Normal; plan.stages.len()];
    for (names, mode) in [
        (&view.params.force, Mode::Force),
        (&view.params.from_checkpoint, Mode::Checkpoint),
    ] {
        for id in names.iter().filter_map(|n| plan.stage_id(n)) {
            modes[id] = mode;
        }
    }
    let from_store: Vec<StageId> = (view.params.from_store.iter())
        .filter_map(|n| plan.stage_id(n))
        .collect();
    mark_from_store(&plan, &selected, &from_store, &mut modes);
    let secrets = load_secrets(&plan, &selected, &skip, &modes, &env, &setup.secrets_file)?;
    let store_key = store_key(&env, &setup.secrets_file)?;
    let remote = shared.map(|r| for_run(r, &change, &env, &run_dir.id).keyed(store_key.as_deref()));
    let confirmed = view
        .published
        .iter()
        .map(|p| {
            (
                p.stage.clone(),
                p.target.clone(),
                p.file.clone(),
                p.digest.clone(),
            )
        })
        .collect();
    let start = Start {
        done,
        discard,
        resumed: true,
        skip_when: skip,
        ..Start::default()
    };
    let prepared = Prepared {
        plan,
        run_dir,
        journal,
        schedule: Schedule {
            selected,
            modes,
            start,
        },
        secrets,
        confirmed,
        store_key,
        remote,
        lease,
        pulled,
        stat_cache,
        changed_early: None,
    };
    let status = execute(setup, prepared, &change, &env, runtime)?;
    release(lock);
    Ok(status)
}

/// The secrets the stages that will run need: the pipeline's and theirs.
fn load_secrets(
    plan: &Plan,
    selected: &[StageId],
    skip: &HashMap<StageId, String>,
    modes: &[Mode],
    env: &BTreeMap<String, String>,
    file: &Path,
) -> Result<BTreeMap<String, String>, SessionError> {
    let mut names: Vec<String> = plan.secrets.clone();
    // A stage taken from the store runs nothing, so it needs no secrets.
    let runs =
        |id: &&StageId| !skip.contains_key(id) && !matches!(modes[**id], Mode::FromStore { .. });
    for &id in selected.iter().filter(runs) {
        names.extend(plan.stages[id].secrets.iter().cloned());
    }
    Ok(crate::secrets::load(&names, env, file)?)
}

/// Before a tag run builds anything, every publish target it will use must be able to work:
/// a release that cannot succeed fails in seconds, not after an hour of building.
fn preflight(
    plan: &Plan,
    selected: &[StageId],
    skip: &HashMap<StageId, String>,
    change: &Change,
    secrets: &BTreeMap<String, String>,
    state: &StateDir,
) -> Result<(), SessionError> {
    let stages: Vec<_> = selected
        .iter()
        .filter(|id| !skip.contains_key(id))
        .map(|&id| &plan.stages[id])
        .filter(|s| !s.publish.is_empty())
        .collect();
    if stages.is_empty() {
        return Ok(());
    }
    let runtime = runtime()?;
    // A preflight answers in seconds or says the endpoint is not there.
    let client = crate::publish::client(Duration::from_secs(20)).map_err(http_error)?;
    let state_abs = std::path::absolute(state.root())
        .map_err(|e| io_error("cannot resolve the state directory", e))?;
    let release = crate::publish::Release {
        root: &plan.root,
        state_dir: &state_abs,
        name: &plan.name,
        version: change.version.as_ref().map(|v| v.text.as_str()),
        secrets,
        client: &client,
    };
    let mut problems = Vec::new();
    for stage in stages {
        let ids = crate::publish::target_ids(&stage.publish);
        for (target, id) in stage.publish.iter().zip(&ids) {
            match runtime.block_on(crate::publish::preflight(target, &release)) {
                Ok(fine) => crate::report::note(&format!("preflight: {} {id}: {fine}", stage.name)),
                Err(problem) => problems.push(format!("{} {id}: {problem}", stage.name)),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SessionError::Preflight(problems))
    }
}

/// If the latest run was killed, its stages' processes may still be running (they lead their
/// own process groups): they must not write into the outputs of this run. Call with the lock
/// held.
fn stop_leftovers_of_killed_run(view: &RunView) {
    if view.status != RunState::Killed {
        return;
    }
    for stage in view
        .stages
        .iter()
        .filter(|s| s.state == crate::records::StageState::Interrupted)
    {
        let killed = crate::process::kill_leftovers(&view.run_id, &stage.name);
        if killed > 0 {
            tracing::info!(
                "killed {killed} processes left running by `{}` of killed run {}",
                stage.name,
                view.run_id
            );
        }
    }
}

/// The stages of `plan` that `run` ran (rather than restored or skipped).
fn ran_in(run: Option<&RunView>, plan: &Plan) -> std::collections::HashSet<StageId> {
    use crate::records::StageState;
    let Some(run) = run else {
        return Default::default();
    };
    let ran: std::collections::HashSet<&str> = run
        .stages
        .iter()
        .filter(|s| {
            matches!(
                s.state,
                StageState::Succeeded
                    | StageState::Failed
                    | StageState::TimedOut
                    | StageState::Interrupted
            )
        })
        .map(|s| s.name.as_str())
        .collect();
    (0..plan.stages.len())
        .filter(|&id| ran.contains(plan.stages[id].name.as_str()))
        .collect()
}

/// The stages whose `when:` does not hold for this run, with the reason.
fn skip_when(plan: &Plan, selected: &[StageId], change: &Change) -> HashMap<StageId, String> {
    let situation = change.situation();
    selected
        .iter()
        .filter_map(|&id| {
            let when = plan.stages[id].when.as_ref()?;
            when.check(&situation).err().map(|reason| (id, reason))
        })
        .collect()
}

/// Each stage's mode from `--force` and `--from`.
fn modes(
    plan: &Plan,
    selected: &[StageId],
    reruns: &Reruns,
    store: &Store,
) -> Result<Vec<Mode>, SessionError> {
    let mut modes = vec![Mode::Normal; plan.stages.len()];
    for name in &reruns.force {
        if name.is_empty() {
            modes.fill(Mode::Force);
        } else {
            for id in stage_in(plan, selected, name, "--force=")? {
                modes[id] = Mode::Force;
            }
        }
    }
    if let Some(from) = &reruns.from {
        let starts = stage_in(plan, selected, from, "--from ")?;
        for before in plan.select(std::slice::from_ref(from))? {
            if starts.contains(&before) {
                continue;
            }
            let name = &plan.stages[before].name;
            // A stage that is never cached has no checkpoint to take: it runs as usual.
            if !plan.stages[before].cacheable {
                continue;
            }
            if !store.has_record(name) {
                return Err(SessionError::NoCheckpoint {
                    stage: name.clone(),
                    from: from.clone(),
                });
            }
            modes[before] = Mode::Checkpoint;
        }
        for id in starts {
            modes[id] = Mode::Force;
        }
    }
    if !reruns.needs_from_store.is_empty() {
        let mut own = Vec::new();
        for name in &reruns.needs_from_store {
            own.extend(plan.named(name)?);
        }
        let needs: Vec<StageId> = selected
            .iter()
            .copied()
            .filter(|id| !own.contains(id))
            .collect();
        mark_from_store(plan, selected, &needs, &mut modes);
    }
    Ok(modes)
}

/// Marks `needs` as taken from the store, each with a stage of the run that needs it.
fn mark_from_store(plan: &Plan, selected: &[StageId], needs: &[StageId], modes: &mut [Mode]) {
    for &id in needs {
        let needed_by = (selected.iter().copied())
            .find(|&d| plan.stages[d].needs.contains(&id))
            .unwrap_or(id);
        modes[id] = Mode::FromStore { needed_by };
    }
}

/// `MURPHY_STORE_KEY`, from the environment or the secrets file, if set.
fn store_key(
    env: &BTreeMap<String, String>,
    secrets_file: &Path,
) -> Result<Option<String>, SessionError> {
    let key = crate::secrets::optional("MURPHY_STORE_KEY", env, secrets_file)?;
    if key.as_ref().is_some_and(|k| k.len() < 16) {
        return Err(SessionError::WeakStoreKey);
    }
    Ok(key)
}

/// The checkpoint store of `state`, its records authenticated when there is a key.
fn store(state: &StateDir, key: Option<&str>) -> Store {
    let store = Store::new(state.root());
    match key {
        Some(key) => store.keyed(key),
        None => store,
    }
}

/// A tag run releases what HEAD holds: with tracked files changed, it goes on only when
/// asked to, and says so.
fn refuse_dirty_release(why: Option<String>, allow_dirty: bool) -> Result<(), SessionError> {
    let Some(why) = why else {
        return Ok(());
    };
    if !allow_dirty {
        return Err(SessionError::DirtyRelease(why));
    }
    crate::report::note(&format!(
        "note: releasing from a dirty tree (--allow-dirty): {why}"
    ));
    Ok(())
}

/// The stages `name` stands for, all of which must be in the run. `flag` is written as the
/// user wrote it before the name (`--force=`, `--from `).
fn stage_in(
    plan: &Plan,
    selected: &[StageId],
    name: &str,
    flag: &'static str,
) -> Result<Vec<StageId>, SessionError> {
    let ids = plan.named(name)?;
    if ids.iter().all(|id| selected.contains(id)) {
        Ok(ids)
    } else {
        Err(SessionError::NotInRun {
            flag,
            name: name.to_owned(),
        })
    }
}

/// What the executor is asked to do: which stages, each one's mode, and where they stand.
struct Schedule {
    selected: Vec<StageId>,
    modes: Vec<Mode>,
    start: Start,
}

/// Everything a run needs besides the command line.
struct Prepared {
    plan: Arc<Plan>,
    run_dir: RunDir,
    journal: Journal,
    schedule: Schedule,
    secrets: BTreeMap<String, String>,
    confirmed: crate::publish::ConfirmedSet,
    /// `MURPHY_STORE_KEY`: with it, checkpoint records are written and read with a MAC.
    store_key: Option<String>,
    /// The shared store, as this run writes to it.
    remote: Option<Remote>,
    /// How long this machine's hold on the run in the shared store lasts unless renewed.
    lease: Duration,
    /// The mark of a run brought from another machine, removed once the run is this
    /// machine's (its lease taken).
    pulled: Option<PathBuf>,
    /// Loading since the run's start began (see `StatCache::load`).
    stat_cache: StatCache,
    /// The changed files, listed since the run's start (see [`change::list_early`]).
    changed_early: Option<change::ListedEarly>,
}

type Vars = Vec<(String, String)>;

/// The stat cache, loading on a thread of its own while the run starts.
fn stat_cache(state: &StateDir) -> StatCache {
    let root = std::path::absolute(state.root()).unwrap_or_else(|_| state.root().to_owned());
    StatCache::load(&root.join("stat-cache"))
}

/// The per-run variables: `MURPHY_TRIGGER`, and the fingerprinted `MURPHY_VERSION` and
/// `MURPHY_PRERELEASE` (`MURPHY_CHANGED_FILES` is the executor's, made on first use).
fn run_variables(change: &Change) -> (Vars, Vars) {
    let run = vec![(
        "MURPHY_TRIGGER".to_owned(),
        change.trigger.name().to_owned(),
    )];
    let release = match &change.version {
        Some(v) => vec![
            ("MURPHY_VERSION".to_owned(), v.text.clone()),
            ("MURPHY_PRERELEASE".to_owned(), v.prerelease.to_string()),
        ],
        None => Vec::new(),
    };
    (run, release)
}

/// Runs the prepared stages under the lock the caller holds, then tells the `notify:`
/// targets how the run went.
fn execute(
    setup: &Setup,
    prepared: Prepared,
    change: &Change,
    env: &BTreeMap<String, String>,
    runtime: tokio::runtime::Runtime,
) -> Result<RunStatus, SessionError> {
    let state = &setup.state;
    // A resumed run's folder may hold a dead writer's temp files too.
    crate::atomic_file::sweep(&prepared.run_dir.path);
    let lease_ttl = prepared.lease;
    let pulled = prepared.pulled.clone();
    let (ctx, schedule) = context(setup, prepared, change, env)?;
    let ctx = Arc::new(ctx);
    let Schedule {
        selected,
        modes,
        start,
    } = schedule;
    let status = runtime.block_on(async {
        // Before the lease: a lease lost mid-run stops the stages like a signal does.
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        let shared = match &ctx.remote {
            Some(remote) => {
                let resumed = start.resumed;
                let cancel = cancel_tx.clone();
                Some(share_run(remote, &ctx.run, lease_ttl, resumed, cancel).await?)
            }
            None => None,
        };
        // Continued here: from now on it is this machine's run too.
        if let Some(mark) = &pulled {
            let _ = std::fs::remove_file(mark);
        }
        let signals = tokio::spawn(wait_for_signal(cancel_tx));
        let status = executor::execute(
            ctx.clone(),
            &selected,
            &modes,
            start,
            &setup.options,
            cancel_rx,
        )
        .await;
        signals.abort();
        if let Some(holder) = match shared {
            Some(shared) => {
                let succeeded = matches!(status, Ok(RunStatus::Succeeded));
                shared.finish(succeeded).await
            }
            None => None,
        } {
            return Err(SessionError::LostLease {
                run: ctx.run.id.clone(),
                holder,
            });
        }
        if status.is_ok() {
            // What the receivers do not take in time waits in the outbox.
            let _ = tokio::time::timeout(Duration::from_secs(30), notify(&ctx, state)).await;
        }
        Ok::<_, SessionError>(status)
    })?;
    let status = status.map_err(|e| io_error("the run could not be recorded", e))?;
    reports::write(setup, &ctx, env);
    Ok(status)
}

/// The executor's `Context` for a prepared run: the one place that decides what every stage
/// of it sees.
fn context(
    setup: &Setup,
    prepared: Prepared,
    change: &Change,
    env: &BTreeMap<String, String>,
) -> Result<(Context, Schedule), SessionError> {
    let state_abs = std::path::absolute(setup.state.root())
        .map_err(|e| io_error("cannot resolve the state directory", e))?;
    let (run_env, release_env) = run_variables(change);
    let Prepared {
        plan,
        run_dir,
        journal,
        schedule,
        secrets,
        confirmed,
        store_key,
        remote,
        lease: _,
        pulled: _,
        stat_cache,
        changed_early,
    } = prepared;
    let names: Vec<&str> = schedule
        .selected
        .iter()
        .map(|&i| plan.stages[i].name.as_str())
        .collect();
    let mut reporter = Reporter::new(&names);
    // Annotations (on GitHub only) name files from the repository's top; GitHub's checkout is
    // there too. Elsewhere the repository is not opened for it.
    if reporter.annotates() {
        let repo_root = crate::git::open(&plan.root)
            .and_then(|repo| repo.workdir().map(Path::to_path_buf))
            .or_else(|| env.get("GITHUB_WORKSPACE").map(PathBuf::from))
            .and_then(|root| std::path::absolute(root).ok());
        reporter = reporter.with_repo_root(repo_root);
    }
    let mut ctx = Context::new(
        plan,
        run_dir,
        journal,
        reporter,
        state_abs,
        env.clone(),
        stat_cache,
    );
    ctx.verbose = setup.verbose;
    ctx.remote = remote;
    ctx.run_env = run_env;
    ctx.release_env = release_env;
    ctx.change = Some(change.clone());
    ctx.secrets = secrets;
    ctx.confirmed = confirmed;
    ctx.changed_early = std::sync::Mutex::new(changed_early);
    if let Some(key) = store_key.as_deref() {
        ctx.store = Store::new(&ctx.state_dir).keyed(key);
    }
    Ok((ctx, schedule))
}

/// The runtime for a command's network and process work: one thread is enough, since stages
/// run as processes and hashing goes to the blocking pool.
pub fn runtime() -> Result<tokio::runtime::Runtime, SessionError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("cannot start the async runtime", e))
}

/// Turns the first SIGINT, SIGTERM or SIGHUP into a cancel; the executor does the rest.
async fn wait_for_signal(cancel: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot listen for signals; Ctrl-C will not stop stages cleanly");
        return;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    };
    tracing::warn!("{name} received: stopping running stages");
    let _ = cancel.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changed files are listed at the start only where a stage will run whatever the
    /// store holds; a run that may restore everything leaves git alone.
    #[test]
    fn only_a_forced_or_never_cached_stage_surely_runs() {
        let text = "version: 1\nstages:\n  cached: {inputs: [a.txt], run: 'true', outputs: [b.txt]}\n  plain: {run: 'true'}\n";
        let source = crate::config::parse(Path::new("pipeline.yml"), text.to_owned()).unwrap();
        let plan = Plan::new(crate::include::Pipeline::single(source)).unwrap();
        let (cached, plain) = (0, 1);
        let none = HashMap::new();
        let normal = [Mode::Normal, Mode::Normal];
        assert!(!surely_runs(&plan, &[cached], &normal, &none));
        assert!(surely_runs(&plan, &[cached, plain], &normal, &none));
        assert!(surely_runs(
            &plan,
            &[cached],
            &[Mode::Force, Mode::Normal],
            &none
        ));
        let from_store = [Mode::FromStore { needed_by: plain }, Mode::Normal];
        assert!(!surely_runs(&plan, &[cached], &from_store, &none));
        let skipped = HashMap::from([(plain, "not this trigger".to_owned())]);
        assert!(!surely_runs(&plan, &[cached, plain], &normal, &skipped));
    }
}
