//! `murphy run`, `murphy resume` and `murphy outbox`: their arguments, turned into a
//! session's inputs, and the exit code of how it ended.

use std::sync::Arc;

use super::{Cli, io_error, load_plan, pipeline_file, state_dir};
use crate::change;
use crate::cli::error::{Error, exit};
use crate::executor::Options;
use crate::journal::RunStatus;
use crate::records::StateDir;
use crate::remote::StoreUrl;
use crate::session::{self, NewRun, Reruns, Resumed, Setup};
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
    /// For a CI job that runs only the named stages: everything they need is restored from the
    /// store (the checkpoint of exactly its fingerprint, made by the job that ran it), never
    /// run; a need without one fails, naming it
    #[arg(long, requires = "stages", conflicts_with = "from")]
    needs_from_store: bool,
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
    /// Say what the run would do with each stage (keep, restore, run, skip) and why, without
    /// running, restoring or recording anything
    #[arg(long, visible_alias = "explain", conflicts_with = "edit")]
    dry_run: bool,
    /// With --dry-run: one JSON array, `[{stage, action, reason, fingerprint}]`
    #[arg(long, requires = "dry_run")]
    json: bool,
    #[command(flatten)]
    reports: Reports,
}

/// What a run writes for CI besides its records.
#[derive(Debug, clap::Args)]
struct Reports {
    /// Write a JUnit XML report to FILE at the end (one testcase per stage, with the stages'
    /// own `reports: {junit}`), whatever the outcome
    #[arg(long, value_name = "FILE")]
    junit: Option<std::path::PathBuf>,
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
    #[command(flatten)]
    reports: Reports,
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
            let mut items = outbox
                .list()
                .map_err(|e| io_error("cannot read the outbox", e))?;
            if let Some(url) = super::store::configured(cli)? {
                let remote = crate::remote::Remote::open(&url, &crate::environment::outer())?;
                let shared =
                    crate::session::runtime()?.block_on(crate::remote::outbox::list(&remote))?;
                items.extend(shared.into_iter().map(Ok));
            }
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
            let store = super::store::url(cli, plan.store.as_ref())?;
            let (delivered, waiting) =
                session::flush_outbox(&plan, &state, &secrets.path(&state), store.as_ref())?;
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
    pub(super) fn path(&self, state: &StateDir) -> std::path::PathBuf {
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
            None => crate::process::cores(),
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
    let new = NewRun {
        file,
        plan,
        selected,
        reruns: Reruns {
            force: args.force.clone(),
            from: args.from.clone(),
            needs_from_store: match args.needs_from_store {
                true => args.stages.clone(),
                false => Vec::new(),
            },
        },
        change: change::Request {
            trigger: args.trigger,
            description: args.description.clone(),
            edit: args.edit,
        },
        allow_dirty: args.allow_dirty,
    };
    let store = super::store::url(cli, new.plan.store.as_ref())?;
    let setup = setup(cli, state, &args.secrets, options, store, &args.reports);
    if args.dry_run {
        let explained = session::explain(&setup, &new)?;
        if args.json {
            super::show::print_json(&explained)?;
        } else {
            print_explained(&explained);
        }
        // As the run itself would end: a stage that would fail before running fails it.
        let fails = explained.iter().any(|e| e.action == session::Action::Fail);
        return Ok(if fails { exit::FAILED } else { exit::SUCCESS });
    }
    Ok(exit_code(session::start(&setup, new)?))
}

/// `murphy run --dry-run`: a line per stage, then the counts.
fn print_explained(explained: &[session::Explained]) {
    let width = explained.iter().map(|e| e.stage.len()).max().unwrap_or(0);
    for e in explained {
        let action = match e.action {
            session::Action::Cached => "cached",
            session::Action::Restore => "restore",
            session::Action::Run => "run",
            session::Action::Depends => "depends",
            session::Action::Skip => "skip",
            session::Action::Fail => "fail",
        };
        println!("{:width$}  {action:<7}  {}", e.stage, e.reason);
    }
    let count = |action| explained.iter().filter(|e| e.action == action).count();
    let depends = match count(session::Action::Depends) {
        0 => String::new(),
        n => format!("; {n} more only if a stage before them changes its outputs"),
    };
    let fail = match count(session::Action::Fail) {
        0 => String::new(),
        n => format!("; {n} would fail before running"),
    };
    println!(
        "would run {}, restore {}, keep {} cached, skip {}{depends}{fail} (nothing was run)",
        count(session::Action::Run),
        count(session::Action::Restore),
        count(session::Action::Cached),
        count(session::Action::Skip),
    );
}

pub(super) fn resume(cli: &Cli, args: &ResumeArgs) -> Result<i32, Error> {
    let file = pipeline_file(cli)?;
    let plan = Arc::new(load_plan(cli, &file)?);
    let options = args.scheduling.options()?;
    let state = state_dir(cli)?;
    let resumed = Resumed {
        file,
        plan,
        run: args.run.clone(),
        allow_dirty: args.allow_dirty,
    };
    let store = super::store::url(cli, resumed.plan.store.as_ref())?;
    let setup = setup(cli, state, &args.secrets, options, store, &args.reports);
    Ok(exit_code(session::resume(&setup, resumed)?))
}

fn setup(
    cli: &Cli,
    state: StateDir,
    secrets: &SecretsFile,
    options: Options,
    store: Option<StoreUrl>,
    reports: &Reports,
) -> Setup {
    Setup {
        store,
        secrets_file: secrets.path(&state),
        state,
        options,
        verbose: cli.verbose > 0,
        junit: reports.junit.clone(),
    }
}

fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Succeeded => exit::SUCCESS,
        RunStatus::Failed => exit::FAILED,
        RunStatus::Interrupted => exit::INTERRUPTED,
    }
}
