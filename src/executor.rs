//! Runs a plan: starts each stage once its needs succeeded, at most `jobs` at once, and
//! records every step in the run's journal.
//!
//! The scheduler is one loop that owns all stage states; stage tasks only run processes and
//! report back. Stopping (a failure without `--keep-going`, or a signal) means: start
//! nothing new, let running stages finish (or kill them, for a signal), then record the end.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::journal::{Event, Journal, Outcome, RunStatus};
use crate::plan::{Plan, StageId};
use crate::process::{self, Echo, Ended, Output};
use crate::records::RunDir;
use crate::report::{Finish, Reporter, format_duration};

/// Lines of a failed stage's log shown on the terminal.
const FAILURE_TAIL: usize = 30;

pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
    /// Stream stage output to the terminal as well as to the logs.
    pub verbose: bool,
}

/// What every stage of one run shares.
pub struct Context {
    pub plan: Arc<Plan>,
    pub run: RunDir,
    pub journal: Journal,
    pub reporter: Reporter,
    /// Absolute, so stages can use it from any working directory.
    pub state_dir: PathBuf,
    pub verbose: bool,
    journal_failed: AtomicBool,
}

impl Context {
    pub fn new(
        plan: Arc<Plan>,
        run: RunDir,
        journal: Journal,
        reporter: Reporter,
        state_dir: PathBuf,
        verbose: bool,
    ) -> Context {
        Context {
            plan,
            run,
            journal,
            reporter,
            state_dir,
            verbose,
            journal_failed: AtomicBool::new(false),
        }
    }

    /// Appends to the journal. A failed append stops the run: a run that cannot be
    /// recorded cannot be resumed, so going on would only waste work.
    fn record(&self, event: Event) {
        if let Err(err) = self.journal.append(event) {
            if !self.journal_failed.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    "cannot append to {}: {err}; stopping the run",
                    self.journal.path().display()
                );
            }
        }
    }

    /// The pipeline env, then the stage env, then murphy's own variables.
    fn stage_env(&self, id: StageId) -> Vec<(String, String)> {
        let stage = &self.plan.stages[id];
        let mut env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        env.extend(self.plan.env.iter().cloned());
        env.extend(stage.env.iter().cloned());
        env.insert("MURPHY_RUN_ID".into(), self.run.id.clone());
        env.insert("MURPHY_STAGE".into(), stage.name.clone());
        env.insert(
            "MURPHY_STATE_DIR".into(),
            self.state_dir.to_string_lossy().into_owned(),
        );
        env.into_iter().collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    NotSelected,
    Pending,
    Running,
    Done(Outcome),
    Skipped,
}

/// Runs the selected stages and returns how the run ended. Errors are about the records
/// (the journal could not be written), never about stages: those end up in the journal.
pub async fn execute(
    ctx: Arc<Context>,
    selected: &[StageId],
    options: &Options,
    mut cancel: watch::Receiver<bool>,
) -> io::Result<RunStatus> {
    let plan = ctx.plan.clone();
    let started = Instant::now();
    ctx.journal.append(Event::RunStarted {
        run_id: ctx.run.id.clone(),
        pid: std::process::id(),
        stages: selected
            .iter()
            .map(|&i| plan.stages[i].name.clone())
            .collect(),
    })?;
    ctx.journal.sync()?;
    ctx.reporter
        .run_started(&ctx.run.id, &plan.name, selected.len());

    let mut slots = vec![Slot::NotSelected; plan.stages.len()];
    for &id in selected {
        slots[id] = Slot::Pending;
    }
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut task_stage: HashMap<tokio::task::Id, StageId> = HashMap::new();
    let mut running = 0usize;
    let mut stopped_by: Option<String> = None;
    let mut interrupted = false;

    loop {
        skip_dependents_of_failures(&ctx, &mut slots);
        if stopped_by.is_none() && !interrupted {
            for id in 0..slots.len() {
                if running >= options.jobs.max(1) {
                    break;
                }
                let ready = slots[id] == Slot::Pending
                    && plan.stages[id]
                        .needs
                        .iter()
                        .all(|&n| slots[n] == Slot::Done(Outcome::Succeeded));
                if ready {
                    slots[id] = Slot::Running;
                    running += 1;
                    let ctx = ctx.clone();
                    let cancel = cancel.clone();
                    let task = tasks.spawn(async move { run_stage(&ctx, id, cancel).await });
                    task_stage.insert(task.id(), id);
                }
            }
        }
        if running == 0 {
            break;
        }
        tokio::select! {
            Some(joined) = tasks.join_next_with_id() => {
                running -= 1;
                let (task, outcome) = match joined {
                    Ok(done) => done,
                    Err(err) => {
                        // A panic in a stage task is murphy's bug; the stage counts as failed.
                        tracing::error!("a stage task failed: {err}");
                        (err.id(), Outcome::Failed)
                    }
                };
                let Some(id) = task_stage.remove(&task) else { continue };
                slots[id] = Slot::Done(outcome);
                if outcome != Outcome::Succeeded && !options.keep_going && stopped_by.is_none() {
                    stopped_by = Some(plan.stages[id].name.clone());
                }
            }
            () = process::cancelled(&mut cancel), if !interrupted => {
                interrupted = true;
            }
        }
        if ctx.journal_failed.load(Ordering::SeqCst) && stopped_by.is_none() {
            stopped_by = Some("the journal could not be written".into());
        }
    }

    // Whatever never started is recorded as skipped, with the reason.
    for id in 0..slots.len() {
        if slots[id] == Slot::Pending {
            let reason = if interrupted {
                "because the run was interrupted".to_owned()
            } else {
                let by = stopped_by.as_deref().unwrap_or("a stage");
                format!(
                    "because the run stopped after `{by}` failed (--keep-going runs independent stages)"
                )
            };
            skip(&ctx, &mut slots, id, reason);
        }
    }

    let count = |want: fn(&Slot) -> bool| slots.iter().filter(|s| want(s)).count();
    let succeeded = count(|s| *s == Slot::Done(Outcome::Succeeded));
    let failed = count(
        |s| matches!(s, Slot::Done(o) if *o != Outcome::Succeeded && *o != Outcome::Interrupted),
    );
    let skipped = count(|s| *s == Slot::Skipped);
    let status = if interrupted {
        RunStatus::Interrupted
    } else if failed > 0 || ctx.journal_failed.load(Ordering::SeqCst) {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    ctx.journal.append(Event::RunFinished { status })?;
    ctx.journal.sync()?;
    if ctx.journal_failed.load(Ordering::SeqCst) {
        return Err(io::Error::other(format!(
            "cannot write the journal {}",
            ctx.journal.path().display()
        )));
    }
    let word = match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "was interrupted",
    };
    ctx.reporter.run_finished(&format!(
        "run {} {word} in {}: {succeeded} succeeded, {failed} failed, {skipped} skipped",
        ctx.run.id,
        format_duration(started.elapsed()),
    ));
    Ok(status)
}

/// Marks pending stages whose needs failed or were skipped, until nothing changes.
fn skip_dependents_of_failures(ctx: &Context, slots: &mut [Slot]) {
    loop {
        let next = (0..slots.len()).find_map(|id| {
            if slots[id] != Slot::Pending {
                return None;
            }
            ctx.plan.stages[id]
                .needs
                .iter()
                .find_map(|&n| match slots[n] {
                    Slot::Done(o) if o != Outcome::Succeeded => {
                        Some((id, format!("because `{}` failed", ctx.plan.stages[n].name)))
                    }
                    Slot::Skipped => Some((
                        id,
                        format!("because `{}` was skipped", ctx.plan.stages[n].name),
                    )),
                    _ => None,
                })
        });
        match next {
            Some((id, reason)) => skip(ctx, slots, id, reason),
            None => return,
        }
    }
}

fn skip(ctx: &Context, slots: &mut [Slot], id: StageId, reason: String) {
    slots[id] = Slot::Skipped;
    let name = &ctx.plan.stages[id].name;
    ctx.reporter.stage_skipped(name, &reason);
    ctx.record(Event::StageSkipped {
        stage: name.clone(),
        reason,
    });
}

/// How one attempt ended, in the terms the journal and the terminal use.
struct Attempt {
    outcome: Outcome,
    exit_code: Option<i32>,
    signal: Option<i32>,
    message: Option<String>,
}

impl Attempt {
    fn failed(message: String) -> Attempt {
        Attempt {
            outcome: Outcome::Failed,
            exit_code: None,
            signal: None,
            message: Some(message),
        }
    }

    /// `failed (exit 3)`, `timed out after 20m`, ...: for the terminal.
    fn describe(&self, timeout: Option<Duration>) -> String {
        match (self.outcome, self.exit_code, self.signal, &self.message) {
            (Outcome::TimedOut, ..) => format!(
                "timed out (limit {})",
                timeout.map(format_duration).unwrap_or_default()
            ),
            (Outcome::Interrupted, ..) => "interrupted".into(),
            (_, Some(code), ..) => format!("failed (exit {code})"),
            (_, _, Some(signal), _) => format!("failed (killed by signal {signal})"),
            (_, _, _, Some(message)) => format!("failed ({message})"),
            _ => "failed".into(),
        }
    }
}

async fn run_stage(ctx: &Arc<Context>, id: StageId, mut cancel: watch::Receiver<bool>) -> Outcome {
    let stage = &ctx.plan.stages[id];
    let log_path = ctx.run.log_path(&stage.name);
    let attempts = stage.retry.attempts;
    for attempt in 1..=attempts {
        ctx.record(Event::StageStarted {
            stage: stage.name.clone(),
            attempt,
        });
        ctx.reporter.stage_started(&stage.name, attempt, attempts);
        let started = Instant::now();
        let result = run_attempt(ctx, id, &log_path, attempt, &mut cancel).await;
        let elapsed = started.elapsed();
        ctx.record(Event::StageFinished {
            stage: stage.name.clone(),
            attempt,
            outcome: result.outcome,
            exit_code: result.exit_code,
            signal: result.signal,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            message: result.message.clone(),
        });
        if result.outcome == Outcome::Succeeded {
            ctx.reporter
                .stage_finished(&stage.name, Finish::Succeeded, elapsed);
            return Outcome::Succeeded;
        }
        let mut how = result.describe(stage.timeout);
        let retrying = attempt < attempts && result.outcome != Outcome::Interrupted;
        if retrying {
            how.push_str(&format!(
                "; retrying in {}",
                format_duration(stage.retry.delay)
            ));
        }
        ctx.reporter
            .stage_finished(&stage.name, Finish::Failed { how: &how }, elapsed);
        if !retrying {
            if result.outcome != Outcome::Interrupted {
                ctx.reporter.failure_log(
                    &stage.name,
                    &log_path,
                    &tail_lines(&log_path, FAILURE_TAIL),
                );
            }
            return result.outcome;
        }
        tokio::select! {
            () = tokio::time::sleep(stage.retry.delay) => {}
            () = process::cancelled(&mut cancel) => return Outcome::Interrupted,
        }
    }
    Outcome::Failed
}

async fn run_attempt(
    ctx: &Arc<Context>,
    id: StageId,
    log_path: &Path,
    attempt: u32,
    cancel: &mut watch::Receiver<bool>,
) -> Attempt {
    let stage = &ctx.plan.stages[id];
    let log = match OpenOptions::new().create(true).append(true).open(log_path) {
        Ok(log) => log,
        Err(err) => return Attempt::failed(format!("cannot open {}: {err}", log_path.display())),
    };
    let echo: Option<Echo> = ctx.verbose.then(|| {
        let ctx = ctx.clone();
        Box::new(move |line: &[u8]| ctx.reporter.stage_output(&ctx.plan.stages[id].name, line))
            as Echo
    });
    let output = Arc::new(Output::new(log, echo));
    if attempt > 1 {
        output.line(
            format!(
                "--- murphy: attempt {attempt} of {} ---\n",
                stage.retry.attempts
            )
            .as_bytes(),
        );
    }
    let cwd = ctx.plan.root.join(&stage.workdir);
    if !cwd.is_dir() {
        let message = format!("workdir `{}` does not exist", stage.workdir.display());
        output.line(format!("murphy: {message}\n").as_bytes());
        return Attempt::failed(message);
    }
    let env = ctx.stage_env(id);
    let deadline = stage.timeout.map(|t| Instant::now() + t);
    for command in &stage.commands {
        output.line(format!("$ {command}\n").as_bytes());
        let ended = process::run(command, &cwd, &env, output.clone(), deadline, cancel).await;
        let attempt = match ended {
            Ok(Ended::Exited(status)) if status.success() => continue,
            Ok(Ended::Exited(status)) => {
                use std::os::unix::process::ExitStatusExt;
                Attempt {
                    outcome: Outcome::Failed,
                    exit_code: status.code(),
                    signal: status.signal(),
                    message: None,
                }
            }
            Ok(Ended::TimedOut) => Attempt {
                outcome: Outcome::TimedOut,
                exit_code: None,
                signal: None,
                message: None,
            },
            Ok(Ended::Interrupted) => Attempt {
                outcome: Outcome::Interrupted,
                exit_code: None,
                signal: None,
                message: None,
            },
            Err(err) => Attempt::failed(format!("cannot start `sh`: {err}")),
        };
        if attempt.outcome == Outcome::TimedOut {
            output.line(b"murphy: timed out; the stage's processes were killed\n");
        }
        return attempt;
    }
    Attempt {
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        signal: None,
        message: None,
    }
}

/// The last `n` lines of a file, read from its end so a huge log costs little.
fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    const WINDOW: u64 = 64 * 1024;
    let read = || -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = read().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}
