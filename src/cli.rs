//! The command line: argument parsing and one function per subcommand.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::config;
use crate::error::{Error, exit};
use crate::executor::{self, Context, Options};
use crate::graph;
use crate::journal::RunStatus;
use crate::plan;
use crate::records::{RunView, StageState, StateDir};
use crate::report::{self, Reporter, format_duration};

const AFTER_HELP: &str = "\
Exit codes:
  0    success
  1    a stage failed (or the run could not be recorded)
  2    usage or pipeline file error; nothing was run
  130  interrupted by Ctrl-C or SIGTERM";

/// murphy runs a project's pipeline.yml, the same way on a laptop and in CI.
#[derive(Debug, Parser)]
#[command(name = "murphy", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// The pipeline file [default: pipeline.yml in this or the nearest parent directory]
    #[arg(long, short = 'f', global = true, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Where runs are recorded [default: .murphy beside the pipeline file]
    #[arg(long, global = true, env = "MURPHY_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// More output: -v streams stage output and murphy's notes, -vv and -vvv murphy's debug
    /// diagnostics (`MURPHY_LOG` sets the filter outright)
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline: the named stages and everything they need, or all of them
    Run(RunArgs),
    /// Check the pipeline file and exit 0 (valid) or 2 (not)
    Validate,
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
    /// Show each stage of a run [default: the latest run]
    Status {
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print a stage's log: `murphy logs [RUN] STAGE`
    Logs {
        #[arg(num_args = 1..=2, value_names = ["RUN", "STAGE"], required = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Stages to run, with everything they need [default: all]
    stages: Vec<String>,
    /// Run at most N stages at once [default: the number of cores]
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// After a failure, still run every stage that does not depend on it
    #[arg(long)]
    keep_going: bool,
}

/// Parses the command line, runs it and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    report::init_colour();
    match dispatch(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", crate::error::Report(&err));
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
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

fn dispatch(cli: &Cli) -> Result<i32, Error> {
    match &cli.command {
        Command::Run(args) => run(cli, args),
        Command::Validate => {
            let file = pipeline_file(cli)?;
            let plan = plan::load(&file)?;
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
            let plan = plan::load(&pipeline_file(cli)?)?;
            print!("{}", graph::render(&plan, *format));
            Ok(exit::SUCCESS)
        }
        Command::Runs { json } => {
            let runs = state_dir(cli)?.list()?;
            if *json {
                print_json(&runs)?;
            } else {
                print_runs(&runs);
            }
            Ok(exit::SUCCESS)
        }
        Command::Status { run, json } => {
            let state = state_dir(cli)?;
            let view = RunView::load(&state.find_run(run.as_deref())?)?;
            if *json {
                print_json(&view)?;
            } else {
                print_status(&view);
            }
            Ok(exit::SUCCESS)
        }
        Command::Logs { args } => {
            let (run, stage) = match args.as_slice() {
                [stage] => (None, stage),
                [run, stage] => (Some(run.as_str()), stage),
                _ => return Err(Error::Usage("usage: murphy logs [RUN] STAGE".into())),
            };
            logs(&state_dir(cli)?, run, stage)
        }
    }
}

fn run(cli: &Cli, args: &RunArgs) -> Result<i32, Error> {
    let file = pipeline_file(cli)?;
    let plan = Arc::new(plan::load(&file)?);
    let selected = plan.select(&args.stages)?;
    let jobs = match args.jobs {
        Some(0) => return Err(Error::Usage("`--jobs` must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let state = state_dir(cli)?;
    let (run_dir, _meta, journal) = state.create_run(&plan.name, &file)?;
    let state_abs = std::path::absolute(state.root())
        .map_err(|e| io_error("cannot resolve the state directory", e))?;
    let names: Vec<&str> = selected
        .iter()
        .map(|&i| plan.stages[i].name.as_str())
        .collect();
    let reporter = Reporter::new(&names);
    let ctx = Arc::new(Context::new(
        plan,
        run_dir,
        journal,
        reporter,
        state_abs,
        cli.verbose > 0,
    ));
    let options = Options {
        jobs,
        keep_going: args.keep_going,
        verbose: cli.verbose > 0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("cannot start the async runtime", e))?;
    let status = runtime.block_on(async {
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        let signals = tokio::spawn(wait_for_signal(cancel_tx));
        let status = executor::execute(ctx, &selected, &options, cancel_rx).await;
        signals.abort();
        status
    });
    match status.map_err(|e| io_error("the run could not be recorded", e))? {
        RunStatus::Succeeded => Ok(exit::SUCCESS),
        RunStatus::Failed => Ok(exit::FAILED),
        RunStatus::Interrupted => Ok(exit::INTERRUPTED),
    }
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
                    "no `{}` in `{}` or any parent directory (use --file, or `murphy init` once it exists)",
                    config::DEFAULT_FILE,
                    cwd.display()
                )));
            }
        }
    }
}

/// `--state-dir`, else `.murphy` beside the pipeline file, else `.murphy` here.
fn state_dir(cli: &Cli) -> Result<StateDir, Error> {
    if let Some(dir) = &cli.state_dir {
        return Ok(StateDir::new(dir.clone()));
    }
    let root = match pipeline_file(cli) {
        Ok(file) => file.parent().map(Path::to_path_buf).unwrap_or_default(),
        Err(_) => PathBuf::new(),
    };
    Ok(StateDir::new(root.join(".murphy")))
}

fn logs(state: &StateDir, run: Option<&str>, stage: &str) -> Result<i32, Error> {
    let dir = state.find_run(run)?;
    let view = RunView::load(&dir)?;
    let Some(entry) = view.stages.iter().find(|s| s.name == stage) else {
        let names = view.stages.iter().map(|s| s.name.as_str());
        let hint = crate::diagnostic::did_you_mean(stage, names)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "run {} has no stage `{stage}`{hint}",
            view.run_id
        )));
    };
    let path = dir.log_path(stage);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
            Ok(exit::SUCCESS)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Usage(format!(
            "stage `{stage}` has no log in run {}: it was {}",
            view.run_id,
            state_word(entry.state)
        ))),
        Err(e) => Err(io_error(&format!("cannot read `{}`", path.display()), e)),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| io_error("cannot render JSON", std::io::Error::other(e)))?;
    println!("{text}");
    Ok(())
}

fn print_runs(runs: &[RunView]) {
    let mut rows = vec![[
        "RUN".to_owned(),
        "STATUS".to_owned(),
        "STARTED".to_owned(),
        "DURATION".to_owned(),
        "STAGES".to_owned(),
        "PIPELINE".to_owned(),
    ]];
    for run in runs {
        let ok = run
            .stages
            .iter()
            .filter(|s| s.state == StageState::Succeeded)
            .count();
        rows.push([
            run.run_id.clone(),
            format!("{:?}", run.status).to_lowercase(),
            local_time(run.started_at, "%Y-%m-%d %H:%M:%S"),
            millis(run.duration_ms),
            format!("{ok}/{} ok", run.stages.len()),
            run.pipeline.clone(),
        ]);
    }
    print_table(&rows);
}

fn print_status(view: &RunView) {
    println!(
        "run {} of `{}`: {}, started {}{}",
        view.run_id,
        view.pipeline,
        format!("{:?}", view.status).to_lowercase(),
        local_time(view.started_at, "%Y-%m-%d %H:%M:%S"),
        view.duration_ms
            .map(|ms| format!(", took {}", millis(Some(ms))))
            .unwrap_or_default()
    );
    let mut rows = vec![[
        "STAGE".to_owned(),
        "STATE".to_owned(),
        "ATTEMPTS".to_owned(),
        "STARTED".to_owned(),
        "DURATION".to_owned(),
        "EXIT".to_owned(),
        "NOTE".to_owned(),
    ]];
    for stage in &view.stages {
        rows.push([
            stage.name.clone(),
            state_word(stage.state).to_owned(),
            stage.attempts.to_string(),
            stage
                .started_at
                .map(|t| local_time(t, "%H:%M:%S%.3f"))
                .unwrap_or_else(|| "-".into()),
            millis(stage.duration_ms),
            match (stage.exit_code, stage.signal) {
                (Some(code), _) => code.to_string(),
                (None, Some(signal)) => format!("signal {signal}"),
                _ => "-".into(),
            },
            stage.reason.clone().unwrap_or_default(),
        ]);
    }
    print_table(&rows);
}

fn state_word(state: StageState) -> &'static str {
    match state {
        StageState::Pending => "pending",
        StageState::Running => "running",
        StageState::Succeeded => "succeeded",
        StageState::Failed => "failed",
        StageState::TimedOut => "timed out",
        StageState::Interrupted => "interrupted",
        StageState::Skipped => "skipped",
    }
}

fn millis(ms: Option<u64>) -> String {
    ms.map(|ms| format_duration(std::time::Duration::from_millis(ms)))
        .unwrap_or_else(|| "-".into())
}

fn local_time(at: Timestamp, format: &str) -> String {
    at.to_zoned(TimeZone::system()).strftime(format).to_string()
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn io_error(context: &str, source: std::io::Error) -> Error {
    Error::Io {
        context: context.to_owned(),
        source,
    }
}
