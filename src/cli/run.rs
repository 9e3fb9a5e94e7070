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
    let new = NewRun {
        file,
        plan,
        selected,
        reruns: Reruns {
            force: args.force.clone(),
            from: args.from.clone(),
        },
        change: change::Request {
            trigger: args.trigger,
            description: args.description.clone(),
            edit: args.edit,
        },
        allow_dirty: args.allow_dirty,
    };
    let store = super::store::url(cli, new.plan.store.as_ref())?;
    let setup = setup(cli, state, &args.secrets, options, store);
    Ok(exit_code(session::start(&setup, new)?))
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
    let setup = setup(cli, state, &args.secrets, options, store);
    Ok(exit_code(session::resume(&setup, resumed)?))
}

fn setup(
    cli: &Cli,
    state: StateDir,
    secrets: &SecretsFile,
    options: Options,
    store: Option<StoreUrl>,
) -> Setup {
    Setup {
        store,
        secrets_file: secrets.path(&state),
        state,
        options,
        verbose: cli.verbose > 0,
    }
}

fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Succeeded => exit::SUCCESS,
        RunStatus::Failed => exit::FAILED,
        RunStatus::Interrupted => exit::INTERRUPTED,
    }
}
