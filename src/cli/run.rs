//! `murphy run` and `murphy resume`: take the lock, set up the run's records and runtime,
//! then hand the plan to the executor.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{Cli, io_error, load_plan, pipeline_file, state_dir};
use crate::change::{self, Change};
use crate::cli::error::{Error, exit};
use crate::environment;
use crate::executor::{self, Context, Done, Mode, Options, Start};
use crate::journal::{Journal, RunStatus};
use crate::lock::RunLock;
use crate::plan::{Plan, StageId};
use crate::records::{RunDir, RunParams, RunState, RunView, StateDir};
use crate::report::Reporter;
use crate::store::Store;
use crate::trigger::Trigger;

#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    /// Stages to run, with everything they need [default: all]
    stages: Vec<String>,
    #[command(flatten)]
    scheduling: Scheduling,
    /// Run even if a checkpoint exists: `--force` every stage of the run, `--force=STAGE` only
    /// that one (repeatable). The `=` is required, so `run --force test` forces `test` and its
    /// needs rather than forcing `test` within the whole pipeline
    #[arg(
        long,
        value_name = "STAGE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = ""
    )]
    force: Vec<String>,
    /// Restart at STAGE: every stage before it comes from its checkpoint without running
    #[arg(long, value_name = "STAGE")]
    from: Option<String>,
    /// Why this run happens [default: derived from the CI environment; `local` outside CI]
    #[arg(long, value_enum)]
    trigger: Option<Trigger>,
    /// What this change is, for the run's record
    #[arg(long, value_name = "TEXT", conflicts_with = "edit")]
    description: Option<String>,
    /// Write the description in $VISUAL or $EDITOR (an empty one aborts the run)
    #[arg(long)]
    edit: bool,
    /// Let a tag run release from a working tree whose tracked files differ from HEAD
    #[arg(long)]
    allow_dirty: bool,
    #[command(flatten)]
    secrets: SecretsFile,
}

#[derive(Debug, clap::Args)]
pub(super) struct ResumeArgs {
    /// The run to continue [default: the latest run]
    run: Option<String>,
    /// Let a tag run release from a working tree whose tracked files differ from HEAD
    #[arg(long)]
    allow_dirty: bool,
    #[command(flatten)]
    scheduling: Scheduling,
    #[command(flatten)]
    secrets: SecretsFile,
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum OutboxCommand {
    /// Notifications waiting to be delivered, and why
    List {
        #[arg(long)]
        json: bool,
    },
    /// Try to deliver every waiting notification; exit 1 if any still waits
    Flush {
        #[command(flatten)]
        secrets: SecretsFile,
    },
}

pub(super) fn outbox(cli: &Cli, command: &OutboxCommand) -> Result<i32, Error> {
    let state = state_dir(cli)?;
    let outbox = crate::outbox::Outbox::new(state.root());
    match command {
        OutboxCommand::List { json } => {
            let items = outbox
                .list()
                .map_err(|e| io_error("cannot read the outbox", e))?;
            if *json {
                let messages: Vec<&crate::outbox::Message> =
                    items.iter().filter_map(|i| i.as_ref().ok()).collect();
                super::show::print_json(&messages)?;
            } else if items.is_empty() {
                println!("the outbox is empty");
            } else {
                for item in &items {
                    match item {
                        Ok(m) => println!(
                            "{}  {:?} to notify entry {}  attempts {}{}",
                            m.id,
                            m.event,
                            m.target + 1,
                            m.attempts,
                            m.last_error
                                .as_deref()
                                .map(|e| format!("  last error: {e}"))
                                .unwrap_or_default()
                        ),
                        Err((path, err)) => println!("{}  unreadable: {err}", path.display()),
                    }
                }
            }
            Ok(exit::SUCCESS)
        }
        OutboxCommand::Flush { secrets } => {
            let plan = load_plan(cli, &pipeline_file(cli)?)?;
            let env = environment::outer();
            // Only the secrets the notifications name: a cron job that delivers them must not
            // need the release's tokens.
            let names: Vec<String> = plan
                .notify
                .iter()
                .filter_map(|n| match &n.url {
                    crate::plan::UrlSource::Secret(name) => Some(name.clone()),
                    crate::plan::UrlSource::Literal(_) => None,
                })
                .collect();
            let secrets = crate::secrets::load(&names, &env, &secrets.path(&state))?;
            let client = crate::publish::client(Duration::from_secs(30)).map_err(http_error)?;
            let (delivered, waiting) = runtime()?
                .block_on(outbox.flush(&plan.notify, &secrets, &client, 3))
                .map_err(|e| io_error("cannot read the outbox", e))?;
            println!("delivered {delivered} notification(s)");
            for (id, why) in &waiting {
                println!("still waiting: {id}: {why}");
            }
            Ok(if waiting.is_empty() {
                exit::SUCCESS
            } else {
                exit::FAILED
            })
        }
    }
}

#[derive(Debug, clap::Args)]
pub(super) struct SecretsFile {
    /// The secrets file [default: secrets.yml in the state directory]; mode 600
    // Its own id: an argument with the id `file` would hide the global `--file`/`-f`.
    #[arg(
        id = "secrets_file",
        long = "secrets",
        env = "MURPHY_SECRETS_FILE",
        value_name = "FILE"
    )]
    file: Option<std::path::PathBuf>,
}

impl SecretsFile {
    fn path(&self, state: &StateDir) -> std::path::PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| state.root().join("secrets.yml"))
    }
}

#[derive(Debug, clap::Args)]
struct Scheduling {
    /// Run at most N stages at once [default: the number of cores]
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// After a failure, still run every stage that does not depend on it
    #[arg(long)]
    keep_going: bool,
}

impl Scheduling {
    fn options(&self) -> Result<Options, Error> {
        let jobs = match self.jobs {
            Some(0) => return Err(Error::Usage("`--jobs` must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Options {
            jobs,
            keep_going: self.keep_going,
        })
    }
}

pub(super) fn run(cli: &Cli, args: &RunArgs) -> Result<i32, Error> {
    let file = pipeline_file(cli)?;
    let plan = Arc::new(load_plan(cli, &file)?);
    let selected = plan.select(&args.stages)?;
    let options = args.scheduling.options()?;
    let state = state_dir(cli)?;
    let env = environment::outer();
    let request = change::Request {
        trigger: args.trigger,
        description: args.description.clone(),
        edit: args.edit,
    };
    // Before the lock: an editor may stay open for minutes.
    let change = change::collect(&plan, &env, &request, state.root())?;
    for note in &change.notes {
        eprintln!("note: {note}");
    }
    refuse_dirty_release(change::dirty_release(&change), args.allow_dirty)?;
    // The lock first: it closes the state directory, where the secrets file lives.
    let mut lock = RunLock::acquire(state.root())?;
    let store_key = store_key(&env, &args.secrets.path(&state))?;
    stop_leftovers_of_killed_run(&state);
    let modes = modes(&plan, &selected, args, &store(&state, store_key.as_deref()))?;
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
        origins: match plan.has_origins() {
            true => selected
                .iter()
                .map(|&id| (plan.stages[id].name.clone(), plan.stages[id].origin()))
                .collect(),
            false => Default::default(),
        },
    };
    let skip = skip_when(&plan, &selected, &change);
    let secrets = load_secrets(&plan, &selected, &skip, &env, &args.secrets.path(&state))?;
    if change.trigger == Trigger::Tag {
        preflight(&plan, &selected, &skip, &change, &secrets, &state)?;
    }
    let (run_dir, _meta, journal) = state.create_run(&plan.name, &file, change.clone(), params)?;
    lock.set_run(&run_dir.id)
        .map_err(|e| io_error("cannot write the state directory's lock", e))?;
    let start = Start {
        skip_when: skip,
        ..Start::default()
    };
    let prepared = Prepared {
        plan,
        run_dir,
        journal,
        selected,
        modes,
        start,
        secrets,
        confirmed: Default::default(),
        store_key,
    };
    execute(cli, &state, prepared, &change, &env, &options)
}

/// The secrets the stages that will run need: the pipeline's and theirs.
fn load_secrets(
    plan: &Plan,
    selected: &[StageId],
    skip: &HashMap<StageId, String>,
    env: &BTreeMap<String, String>,
    file: &std::path::Path,
) -> Result<BTreeMap<String, String>, Error> {
    let mut names: Vec<String> = plan.secrets.clone();
    for &id in selected.iter().filter(|id| !skip.contains_key(id)) {
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
) -> Result<(), Error> {
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
                Ok(fine) => eprintln!("preflight: {} {id}: {fine}", stage.name),
                Err(problem) => problems.push(format!("{} {id}: {problem}", stage.name)),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Preflight(problems))
    }
}

/// If the latest run was killed, its stages' processes may still be running (they lead their
/// own process groups): they must not write into the outputs of this run. Call with the lock
/// held.
fn stop_leftovers_of_killed_run(state: &StateDir) {
    let Ok(view) = state
        .find_run(None)
        .and_then(|dir| RunView::load(state, &dir))
    else {
        return;
    };
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
    args: &RunArgs,
    store: &Store,
) -> Result<Vec<Mode>, Error> {
    let mut modes = vec![Mode::Normal; plan.stages.len()];
    for name in &args.force {
        if name.is_empty() {
            modes.fill(Mode::Force);
        } else {
            for id in stage_in(plan, selected, name, "--force=")? {
                modes[id] = Mode::Force;
            }
        }
    }
    if let Some(from) = &args.from {
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
                return Err(Error::Usage(format!(
                    "stage `{name}` has no checkpoint, so the run cannot start at `{from}`: run `murphy run {name}` first"
                )));
            }
            modes[before] = Mode::Checkpoint;
        }
        for id in starts {
            modes[id] = Mode::Force;
        }
    }
    Ok(modes)
}

/// `MURPHY_STORE_KEY`, from the environment or the secrets file, if set.
fn store_key(
    env: &BTreeMap<String, String>,
    secrets_file: &std::path::Path,
) -> Result<Option<String>, Error> {
    let key = crate::secrets::optional("MURPHY_STORE_KEY", env, secrets_file)?;
    if key.as_ref().is_some_and(|k| k.len() < 16) {
        return Err(Error::Usage(
            "MURPHY_STORE_KEY is shorter than 16 bytes: too weak to authenticate checkpoint records"
                .into(),
        ));
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
fn refuse_dirty_release(why: Option<String>, allow_dirty: bool) -> Result<(), Error> {
    let Some(why) = why else {
        return Ok(());
    };
    if !allow_dirty {
        return Err(Error::Usage(format!(
            "a tag run releases what HEAD holds, and {why}; commit or stash them, or pass --allow-dirty"
        )));
    }
    eprintln!("note: releasing from a dirty tree (--allow-dirty): {why}");
    Ok(())
}

/// The stages `name` stands for, all of which must be in the run. `flag` is written as the
/// user wrote it before the name (`--force=`, `--from `).
fn stage_in(
    plan: &Plan,
    selected: &[StageId],
    name: &str,
    flag: &str,
) -> Result<Vec<StageId>, Error> {
    let ids = plan.named(name)?;
    if ids.iter().all(|id| selected.contains(id)) {
        Ok(ids)
    } else {
        Err(Error::Usage(format!(
            "`{flag}{name}` names a stage this run does not include"
        )))
    }
}

pub(super) fn resume(cli: &Cli, args: &ResumeArgs) -> Result<i32, Error> {
    let file = pipeline_file(cli)?;
    let plan = Arc::new(load_plan(cli, &file)?);
    let options = args.scheduling.options()?;
    let state = state_dir(cli)?;
    let mut lock = RunLock::acquire(state.root())?;
    let run_dir = state.find_run(args.run.as_deref())?;
    let view = RunView::load(&state, &run_dir)?;
    if view.status == RunState::Succeeded {
        return Err(Error::Usage(format!(
            "run {} succeeded; there is nothing to resume",
            view.run_id
        )));
    }
    let mut selected = Vec::new();
    let mut done = HashMap::new();
    let mut discard = Vec::new();
    for stage in &view.stages {
        let Some(id) = plan.stage_id(&stage.name) else {
            return Err(Error::Usage(format!(
                "stage `{}` of run {} is no longer in `{}`; start a new run instead",
                stage.name,
                view.run_id,
                file.display()
            )));
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
    refuse_dirty_release(
        change::dirty_release_now(&change, &plan.root),
        args.allow_dirty,
    )?;
    let skip = skip_when(&plan, &selected, &change);
    let env = environment::outer();
    let secrets = load_secrets(&plan, &selected, &skip, &env, &args.secrets.path(&state))?;
    let store_key = store_key(&env, &args.secrets.path(&state))?;
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
    };
    // What `--force` and `--from` asked of the run still holds for what it has left to do.
    let mut modes = vec![Mode::Normal; plan.stages.len()];
    for (names, mode) in [
        (&view.params.force, Mode::Force),
        (&view.params.from_checkpoint, Mode::Checkpoint),
    ] {
        for id in names.iter().filter_map(|n| plan.stage_id(n)) {
            modes[id] = mode;
        }
    }
    let prepared = Prepared {
        plan,
        run_dir,
        journal,
        selected,
        modes,
        start,
        secrets,
        confirmed,
        store_key,
    };
    execute(cli, &state, prepared, &change, &env, &options)
}

/// Everything a run needs besides the command line.
struct Prepared {
    plan: Arc<Plan>,
    run_dir: RunDir,
    journal: Journal,
    selected: Vec<StageId>,
    modes: Vec<Mode>,
    start: Start,
    secrets: BTreeMap<String, String>,
    confirmed: crate::publish::ConfirmedSet,
    /// `MURPHY_STORE_KEY`: with it, checkpoint records are written and read with a MAC.
    store_key: Option<String>,
}

type Vars = Vec<(String, String)>;

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

fn execute(
    cli: &Cli,
    state: &StateDir,
    prepared: Prepared,
    change: &Change,
    env: &BTreeMap<String, String>,
    options: &Options,
) -> Result<i32, Error> {
    let state_abs = std::path::absolute(state.root())
        .map_err(|e| io_error("cannot resolve the state directory", e))?;
    // Under the run lock, every temp file murphy's own state holds is a dead writer's.
    Store::new(state.root()).sweep_temp_files();
    crate::atomic_file::sweep(state.root());
    crate::atomic_file::sweep(&prepared.run_dir.path);
    let (run_env, release_env) = run_variables(change);
    let Prepared {
        plan,
        run_dir,
        journal,
        selected,
        modes,
        start,
        secrets,
        confirmed,
        store_key,
    } = prepared;
    let names: Vec<&str> = selected
        .iter()
        .map(|&i| plan.stages[i].name.as_str())
        .collect();
    let reporter = Reporter::new(&names);
    let client = crate::publish::client(Duration::from_secs(300)).map_err(http_error)?;
    let mut ctx = Context::new(
        plan,
        run_dir,
        journal,
        reporter,
        state_abs,
        env.clone(),
        client,
    );
    ctx.verbose = cli.verbose > 0;
    ctx.run_env = run_env;
    ctx.release_env = release_env;
    ctx.change = Some(change.clone());
    ctx.secrets = secrets;
    ctx.confirmed = confirmed;
    if let Some(key) = store_key.as_deref() {
        ctx.store = Store::new(&ctx.state_dir).keyed(key);
    }
    let ctx = Arc::new(ctx);
    let status = runtime()?.block_on(async {
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        let signals = tokio::spawn(wait_for_signal(cancel_tx));
        let status =
            executor::execute(ctx.clone(), &selected, &modes, start, options, cancel_rx).await;
        signals.abort();
        if status.is_ok() {
            // What the receivers do not take in time waits in the outbox.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(30), notify(&ctx, state)).await;
        }
        status
    });
    match status.map_err(|e| io_error("the run could not be recorded", e))? {
        RunStatus::Succeeded => Ok(exit::SUCCESS),
        RunStatus::Failed => Ok(exit::FAILED),
        RunStatus::Interrupted => Ok(exit::INTERRUPTED),
    }
}

/// Tells the `notify:` targets how the run went. Each message goes to the outbox before it is
/// sent, so one the receiver did not take waits for the next run or `murphy outbox flush`;
/// a notification never changes how the run ended.
async fn notify(ctx: &Context, state: &StateDir) {
    if ctx.plan.notify.is_empty() {
        return;
    }
    let view = match RunView::load(state, &ctx.run) {
        Ok(view) => view,
        Err(err) => {
            tracing::warn!(
                "cannot read the run back to notify: {}",
                crate::causes::line(&err)
            );
            return;
        }
    };
    let outbox = crate::outbox::Outbox::new(state.root());
    for message in crate::outbox::messages(&view, &ctx.plan.notify) {
        if let Err(err) = outbox.put(&message) {
            tracing::warn!(
                "cannot write notification {} to the outbox: {err}",
                message.id
            );
        }
    }
    match outbox
        .flush(&ctx.plan.notify, &ctx.secrets, &ctx.client, 2)
        .await
    {
        Ok((delivered, waiting)) => {
            if delivered > 0 {
                ctx.reporter
                    .note(&format!("sent {delivered} notification(s)"));
            }
            for (id, why) in waiting {
                ctx.reporter.note(&format!(
                    "notification {id} is waiting in the outbox ({why}); `murphy outbox flush` retries it"
                ));
            }
        }
        Err(err) => tracing::warn!("cannot read the outbox: {err}"),
    }
}

/// The runtime for a command's network and process work: one thread is enough, since stages
/// run as processes and hashing goes to the blocking pool.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("cannot start the async runtime", e))
}

fn http_error(err: reqwest::Error) -> Error {
    io_error("cannot make an HTTP client", std::io::Error::other(err))
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
