//! The command line: argument parsing and one function per subcommand.

mod archive;
mod ci;
pub(crate) mod error;
mod lock;
mod release;
mod run;
mod serve;
mod show;
mod store;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::cli::error::{Error, exit};
use crate::config;
use crate::graph;
use crate::hooks;
use crate::lock::RunLock;
use crate::plan;
use crate::records::{RunView, StateDir};
use crate::report;
use crate::store::Store;

const AFTER_HELP: &str = "\
Exit codes:
  0    success
  1    a stage failed (or the run could not be recorded)
  2    usage or pipeline file error; nothing was run
  75   another murphy is running in this state directory; nothing was run, try again later
  130  interrupted by Ctrl-C or SIGTERM";

/// murphy runs a project's pipeline.yml, the same way on a laptop and in CI.
#[derive(Debug, Parser)]
#[command(name = "murphy", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// The pipeline file [default: pipeline.yml in this or the nearest parent directory]
    #[arg(long, short = 'f', global = true, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Where runs are recorded (or `MURPHY_STATE_DIR`) [default: .murphy beside the pipeline
    /// file]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The shared store (`s3://BUCKET/PREFIX`, `gs://…`, `az://…`, `file:///PATH`) instead of
    /// the pipeline's `store:`; an empty value uses none
    #[arg(long, global = true, env = "MURPHY_STORE", value_name = "URL")]
    store: Option<String>,
    /// More output: -v streams stage output and murphy's notes, -vv and -vvv murphy's debug
    /// diagnostics (`MURPHY_LOG` sets the filter outright)
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less output: no progress or notes on stderr, only what went wrong (and results on
    /// stdout)
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline: the named stages and everything they need, or all of them
    Run(run::RunArgs),
    /// Continue a failed, interrupted or killed run where it stopped, keeping its id
    Resume(run::ResumeArgs),
    /// The git pre-push hook that runs the pipeline before every push: `install`, `uninstall`
    Hooks {
        #[command(subcommand)]
        command: HooksCommand,
    },
    /// The artifact archive: `list`, `show`, `get`, `prune`, `sizes`
    Archive {
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// Check every archived build against its manifest and retention; exit 1 on any problem
    Audit {
        #[command(flatten)]
        at: archive::Where,
        #[arg(long)]
        json: bool,
    },
    /// The archived builds holding a file (a path, or its sha256) and what they were made from
    Trace {
        #[arg(value_name = "PATH|SHA256")]
        target: String,
        #[command(flatten)]
        at: archive::Where,
        /// One JSON array: `[{build, name, file, created_at, run_id, stage, trigger, version,
        /// commit, links, stages}]`
        #[arg(long)]
        json: bool,
    },
    /// Notifications waiting to be delivered: `list`, `flush`
    Outbox {
        #[command(subcommand)]
        command: run::OutboxCommand,
    },
    /// What a tag run would publish, where, and which gates hold (`--dry-run`)
    Release(release::ReleaseArgs),
    /// The shared store: `check`
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// The checkpoint store: `stats`, `gc`
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// The CI provider's file for this pipeline: `generate github|gitlab`, `check`
    Ci {
        #[command(subcommand)]
        command: ci::CiCommand,
    },
    /// Write a starting pipeline.yml for the project here (never over an existing one)
    Init,
    /// Pin every git include's commit in pipeline.lock (`--update [NAME]...` moves pins
    /// forward and prints what changed, stage by stage)
    Lock(lock::LockArgs),
    /// Check the pipeline file and exit 0 (valid) or 2 (not)
    Validate {
        /// One JSON object: `{file, valid, stages, errors, warnings}`
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of pipeline.yml, for editors
    Schema,
    /// Print the stage graph
    Graph {
        #[arg(long, value_enum, default_value = "text")]
        format: graph::Format,
    },
    /// List recorded runs, newest first
    Runs {
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// A run at a glance: description, trigger, version, commit, links, stages
    /// [default: the latest run]
    Show {
        run: Option<String>,
        /// One JSON object (documented in the README) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show each stage of a run [default: the latest run]
    Status {
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The dashboard, JSON API and webhook receiver over this state directory
    Serve(serve::ServeArgs),
    /// The event log webhooks fill: `list`, `verify`
    Events {
        #[command(subcommand)]
        command: serve::EventsCommand,
    },
    /// The history index `serve` answers from: `rebuild`
    Index {
        #[command(subcommand)]
        command: serve::IndexCommand,
    },
    /// Print a stage's log: `murphy logs [RUN] STAGE`
    Logs {
        #[arg(num_args = 1..=2, value_names = ["RUN", "STAGE"], required = true)]
        args: Vec<String>,
    },
    /// Print a shell completion script: `murphy completions bash > ~/.local/share/bash-completion/completions/murphy`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print murphy's manual page (roff), or write one page per command into a folder
    Man {
        /// Write `murphy.1`, `murphy-run.1`, ... into DIR instead of printing `murphy.1`
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum HooksCommand {
    /// Write .git/hooks/pre-push (or under core.hooksPath) to run `murphy run --trigger pre-push`
    Install {
        /// Replace a hook murphy did not write; it is kept and runs before murphy
        #[arg(long)]
        force: bool,
    },
    /// Remove the hook murphy installed, restoring the one it replaced
    Uninstall,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Objects, bytes and records in the checkpoint store
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Remove records older than D days (if given) and every object no record uses
    Gc {
        #[arg(long, value_name = "D")]
        keep_days: Option<u32>,
    },
}

/// Parses the command line, runs it and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    report::init_colour();
    report::set_quiet(cli.quiet);
    init_tracing(cli.verbose);
    if !matches!(cli.command, Command::Run(_) | Command::Resume(_)) {
        // `murphy runs | head` should end quietly, as other tools do. Not for a run: a closed
        // stderr must never kill murphy between two records.
        // SAFETY: restoring the default disposition of SIGPIPE has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match dispatch(&cli) {
        Ok(code) => code,
        Err(err) => {
            let report = crate::cli::error::Report(&err).to_string();
            eprintln!("{}", crate::secrets::redact(&report));
            err.exit_code()
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MURPHY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("murphy={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::secrets::RedactingStderr)
        .with_ansi(console::colors_enabled_stderr())
        .without_time()
        .with_target(false)
        .try_init();
}

fn dispatch(cli: &Cli) -> Result<i32, Error> {
    match &cli.command {
        Command::Run(args) => run::run(cli, args),
        Command::Resume(args) => run::resume(cli, args),
        Command::Cache { command } => cache(cli, command),
        Command::Store { command } => store::store(cli, command),
        Command::Outbox { command } => run::outbox(cli, command),
        Command::Release(args) => release::release(cli, args),
        Command::Lock(args) => lock::lock(cli, args),
        Command::Archive { command } => archive::archive(cli, command),
        Command::Audit { at, json } => archive::audit(cli, at, *json),
        Command::Trace { target, at, json } => archive::trace(cli, at, target, *json),
        Command::Hooks { command } => hooks(cli, command),
        Command::Ci { command } => ci::ci(cli, command),
        Command::Serve(args) => serve::serve(cli, args),
        Command::Events { command } => serve::events(cli, command),
        Command::Index { command } => serve::index(cli, command),
        Command::Init => {
            let file = cli
                .file
                .clone()
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_FILE));
            let (kind, stages) = crate::init::init(&file)?;
            println!(
                "wrote {} for {}: {stages} stages; see them with `murphy graph`, run them with `murphy run`",
                file.display(),
                kind.describe()
            );
            Ok(exit::SUCCESS)
        }
        Command::Validate { json: true } => validate_json(cli),
        Command::Validate { json: false } => {
            let file = pipeline_file(cli)?;
            let plan = load_plan(cli, &file)?;
            for (source, warning) in unmatched_inputs(&plan, state_dir(cli)?.root()) {
                tracing::warn!("{source}: {warning}");
            }
            println!(
                "{}: valid, {} stage{}",
                file.display(),
                plan.stages.len(),
                if plan.stages.len() == 1 { "" } else { "s" }
            );
            Ok(exit::SUCCESS)
        }
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&config::schema())
                .map_err(|e| io_error("cannot render the schema", std::io::Error::other(e)))?;
            println!("{schema}");
            Ok(exit::SUCCESS)
        }
        Command::Graph { format } => {
            let plan = load_plan(cli, &pipeline_file(cli)?)?;
            print!("{}", graph::render(&plan, *format));
            Ok(exit::SUCCESS)
        }
        Command::Runs { json } => {
            let state = state_dir(cli)?;
            show::pull(cli, &state, None)?;
            let runs = state.list()?;
            if *json {
                show::print_json(&runs)?;
            } else {
                show::print_runs(&runs);
            }
            Ok(exit::SUCCESS)
        }
        Command::Status { run, json } => {
            let state = state_dir(cli)?;
            show::pull(cli, &state, run.as_deref())?;
            let view = RunView::load(&state, &state.find_run(run.as_deref())?)?;
            if *json {
                show::print_json(&view)?;
            } else {
                show::print_status(&view);
            }
            Ok(exit::SUCCESS)
        }
        Command::Show { run, json } => {
            let state = state_dir(cli)?;
            show::pull(cli, &state, run.as_deref())?;
            let view = RunView::load(&state, &state.find_run(run.as_deref())?)?;
            show::show(&view, *json)?;
            Ok(exit::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "murphy", &mut std::io::stdout());
            Ok(exit::SUCCESS)
        }
        Command::Man { dir } => man(dir.as_deref()),
        Command::Logs { args } => {
            let (run, stage) = match args.as_slice() {
                [stage] => (None, stage),
                [run, stage] => (Some(run.as_str()), stage),
                _ => return Err(Error::Usage("usage: murphy logs [RUN] STAGE".into())),
            };
            let state = state_dir(cli)?;
            show::pull(cli, &state, run)?;
            show::logs(&state, run, stage)
        }
    }
}

/// The pipeline file: `--file`, or `pipeline.yml` here or in the nearest parent directory.
fn pipeline_file(cli: &Cli) -> Result<PathBuf, Error> {
    if let Some(file) = &cli.file {
        return Ok(file.clone());
    }
    let cwd =
        std::env::current_dir().map_err(|e| io_error("cannot read the current directory", e))?;
    let mut dir = cwd.as_path();
    loop {
        let candidate = dir.join(config::DEFAULT_FILE);
        if candidate.is_file() {
            return Ok(if dir == cwd {
                PathBuf::from(config::DEFAULT_FILE)
            } else {
                candidate
            });
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => {
                return Err(Error::Usage(format!(
                    "no `{}` in `{}` or any parent directory (use --file, or `murphy init` to write one)",
                    config::DEFAULT_FILE,
                    cwd.display()
                )));
            }
        }
    }
}

/// The plan of `file`, its git includes read from the state directory's cache.
fn load_plan(cli: &Cli, file: &Path) -> Result<plan::Plan, Error> {
    Ok(plan::load(file, state_dir(cli)?.root())?)
}

/// An `inputs` pattern that names no file is a warning, not an error: the file may be
/// made later, or by an earlier stage. Each warning with the file that defines its stage.
fn unmatched_inputs(plan: &crate::plan::Plan, state_dir: &Path) -> Vec<(String, String)> {
    let mut warnings = Vec::new();
    for stage in &plan.stages {
        match crate::inputs::expand_inputs(&plan.root, &stage.inputs, state_dir, None) {
            Ok(found) => warnings.extend(found.unmatched.iter().map(|pattern| {
                (
                    stage.source.to_string(),
                    crate::inputs::unmatched_warning(&stage.name, pattern),
                )
            })),
            Err(err) => warnings.push((
                stage.source.to_string(),
                format!("cannot read the inputs of `{}`: {err}", stage.name),
            )),
        }
    }
    warnings
}

/// `murphy validate --json`: the same verdict and exit code as the text form, every error
/// with its file, line and column.
fn validate_json(cli: &Cli) -> Result<i32, Error> {
    let file = pipeline_file(cli)?;
    let (plan, errors) = match load_plan(cli, &file) {
        Ok(plan) => (Some(plan), Vec::new()),
        Err(err) => {
            let diagnostics = match &err {
                Error::Plan(crate::plan::PlanError::Invalid(list))
                | Error::Config(config::ConfigError::Invalid(list)) => Some(list),
                _ => None,
            };
            let errors = match diagnostics {
                Some(list) => list.iter().map(|d| d.to_json()).collect(),
                None if err.exit_code() == exit::USAGE => {
                    vec![
                        serde_json::json!({"message": crate::cli::error::Report(&err).to_string()}),
                    ]
                }
                // Not a verdict on the file (it could not be read, say): an error as usual.
                None => return Err(err),
            };
            (None, errors)
        }
    };
    let warnings: Vec<serde_json::Value> = match &plan {
        Some(plan) => unmatched_inputs(plan, state_dir(cli)?.root())
            .into_iter()
            .map(|(source, message)| serde_json::json!({"source": source, "message": message}))
            .collect(),
        None => Vec::new(),
    };
    show::print_json(&serde_json::json!({
        "file": file,
        "valid": plan.is_some(),
        "stages": plan.as_ref().map(|p| p.stages.len()),
        "errors": errors,
        "warnings": warnings,
    }))?;
    Ok(if plan.is_some() {
        exit::SUCCESS
    } else {
        exit::USAGE
    })
}

/// `--state-dir`, else `.murphy` beside the pipeline file, else `.murphy` here.
fn state_dir(cli: &Cli) -> Result<StateDir, Error> {
    if let Some(dir) = &cli.state_dir {
        return Ok(StateDir::new(dir.clone()));
    }
    // murphy sets MURPHY_STATE_DIR for its stages; a murphy started by a stage (`MURPHY_RUN_ID`
    // set) must not take the outer run's records for its own.
    if std::env::var_os("MURPHY_RUN_ID").is_none()
        && let Some(dir) = std::env::var_os("MURPHY_STATE_DIR").filter(|d| !d.is_empty())
    {
        return Ok(StateDir::new(PathBuf::from(dir)));
    }
    let root = match pipeline_file(cli) {
        Ok(file) => file.parent().map(Path::to_path_buf).unwrap_or_default(),
        Err(_) => PathBuf::new(),
    };
    Ok(StateDir::new(root.join(".murphy")))
}

/// `murphy man`: the page of `murphy` on stdout, or every command's page into `dir`.
fn man(dir: Option<&Path>) -> Result<i32, Error> {
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .map_err(|e| io_error("cannot render the manual page", e))?;
        std::io::Write::write_all(&mut std::io::stdout(), &page)
            .map_err(|e| io_error("cannot write the manual page", e))?;
        return Ok(exit::SUCCESS);
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| io_error(&format!("cannot create `{}`", dir.display()), e))?;
    let mut written = 0;
    let mut pending = vec![(String::from("murphy"), command)];
    while let Some((name, command)) = pending.pop() {
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            pending.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone().name(name.clone()))
            .render(&mut page)
            .map_err(|e| io_error("cannot render a manual page", e))?;
        let path = dir.join(format!("{name}.1"));
        crate::atomic_file::write_shared(&path, &page)
            .map_err(|e| io_error(&format!("cannot write `{}`", path.display()), e))?;
        written += 1;
    }
    println!("wrote {written} manual pages into {}", dir.display());
    Ok(exit::SUCCESS)
}

fn hooks(cli: &Cli, command: &HooksCommand) -> Result<i32, Error> {
    let cwd =
        std::env::current_dir().map_err(|e| io_error("cannot read the current directory", e))?;
    let done = match command {
        HooksCommand::Install { force } => {
            let murphy = std::env::current_exe()
                .map_err(|e| io_error("cannot find murphy's own path", e))?;
            hooks::install(&cwd, &murphy, &pipeline_file(cli)?, *force)?
        }
        HooksCommand::Uninstall => hooks::uninstall(&cwd)?,
    };
    match done {
        hooks::Done::Installed { hook, chained } => {
            println!("installed the pre-push hook at {}", hook.display());
            if let Some(kept) = chained {
                println!(
                    "the hook it replaced is kept at {} and runs first",
                    kept.display()
                );
            }
        }
        hooks::Done::Updated { hook } => {
            println!("updated the pre-push hook at {}", hook.display())
        }
        hooks::Done::Removed { hook, restored } => {
            println!("removed murphy's pre-push hook at {}", hook.display());
            if restored {
                println!("restored the hook it had replaced");
            }
        }
        hooks::Done::NothingToRemove { hook } => {
            println!("no pre-push hook at {}; nothing to remove", hook.display());
        }
    }
    Ok(exit::SUCCESS)
}

fn cache(cli: &Cli, command: &CacheCommand) -> Result<i32, Error> {
    let state = state_dir(cli)?;
    let store = Store::new(state.root());
    match command {
        CacheCommand::Stats { json } => {
            let stats = store.stats()?;
            if *json {
                show::print_json(&stats)?;
            } else {
                println!(
                    "{} objects, {} bytes, {} records in {}",
                    stats.objects,
                    stats.bytes,
                    stats.records,
                    state.root().join("store").display()
                );
            }
        }
        CacheCommand::Gc { keep_days } => {
            // A live run may be between storing objects and writing the record naming them.
            let mut lock = RunLock::acquire(state.root())?;
            lock.set_run("(cache gc)")
                .map_err(|e| io_error("cannot write the state directory's lock", e))?;
            crate::atomic_file::sweep(state.root());
            let removed = store.gc(*keep_days, jiff::Timestamp::now())?;
            println!(
                "removed {} records and {} objects ({} bytes)",
                removed.records, removed.objects, removed.bytes
            );
        }
    }
    Ok(exit::SUCCESS)
}

pub(crate) fn io_error(context: &str, source: std::io::Error) -> Error {
    Error::Io {
        context: context.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand, at any depth, must see `--file`, `--state-dir` and `-v` as the global
    /// options: an argument of its own with the same id (`file`) silently hides the global one.
    #[test]
    fn every_subcommand_takes_the_global_options() {
        fn check(command: &clap::Command, path: &str) {
            for (id, long) in [
                ("file", "file"),
                ("state_dir", "state-dir"),
                ("verbose", "verbose"),
                ("quiet", "quiet"),
            ] {
                let arg = command
                    .get_arguments()
                    .find(|a| a.get_id() == id)
                    .unwrap_or_else(|| panic!("`{path}` has no `{id}` argument"));
                assert_eq!(arg.get_long(), Some(long), "`{path}`: `{id}` is not global");
            }
            // clap's own `help` subcommands take no options.
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        super::Cli::command().debug_assert();
        let mut command = super::Cli::command();
        command.build();
        check(&command, "murphy");
    }
}
