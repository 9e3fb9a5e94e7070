//! A stage's commands run in turn, retried and timed out as it says: its attempts, and how
//! each ended, in the journal and on the terminal.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Context;
use super::stage::Task;
use crate::annotations;
use crate::journal::{Event, Outcome};
use crate::plan::StageId;
use crate::process::{self, Echo, Ended, Output};
use crate::report::{ANNOTATIONS_PER_STAGE, Finish, format_duration};

/// Lines of a failed stage's log shown on the terminal.
const FAILURE_TAIL: usize = 30;

impl Task {
    /// Runs the attempts: `Ok(attempt)` when one succeeded (its success is not recorded yet:
    /// that waits for the checkpoint), `Err(outcome)` when the stage failed for good or was
    /// interrupted.
    pub(super) async fn attempts(
        &mut self,
        why: Option<String>,
        env: Vec<(String, String)>,
    ) -> Result<u32, Outcome> {
        let ctx = self.ctx.clone();
        let stage = &ctx.plan.stages[self.id];
        let log_path = ctx.run.log_path(&stage.name);
        let attempts = stage.retry.attempts;
        if *self.cancel.borrow() {
            ctx.record(Event::StageSkipped {
                stage: stage.name.clone(),
                reason: "because the run was interrupted".into(),
                when: false,
            });
            ctx.reporter
                .stage_skipped(&stage.name, "because the run was interrupted");
            return Err(Outcome::Interrupted);
        }
        for attempt in 1..=attempts {
            ctx.record(Event::StageStarted {
                stage: stage.name.clone(),
                attempt,
                why: if attempt == 1 { why.clone() } else { None },
            });
            ctx.reporter.stage_started(&stage.name, attempt, attempts);
            let started = Instant::now();
            let result =
                run_attempt(&ctx, self.id, &env, &log_path, attempt, &mut self.cancel).await;
            if result.outcome == Outcome::Succeeded {
                return Ok(attempt);
            }
            let elapsed = started.elapsed();
            ctx.record(Event::StageFinished {
                stage: stage.name.clone(),
                attempt,
                outcome: result.outcome,
                exit_code: result.exit_code,
                signal: result.signal,
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                message: result.message.clone(),
                fingerprint: None,
                output_digest: None,
            });
            let mut how = result.describe(stage.timeout);
            let retrying = attempt < attempts && result.outcome != Outcome::Interrupted;
            if retrying {
                how.push_str(&format!(
                    "; retrying in {}",
                    format_duration(stage.retry.delay)
                ));
            }
            let finish = if retrying {
                Finish::Retrying { how: &how }
            } else {
                Finish::Failed { how: &how }
            };
            ctx.reporter.stage_finished(&stage.name, finish, elapsed);
            if !retrying {
                if result.outcome != Outcome::Interrupted {
                    let end = log_end(&log_path);
                    let lines: Vec<&str> = end.lines().collect();
                    let tail: Vec<String> = lines[lines.len().saturating_sub(FAILURE_TAIL)..]
                        .iter()
                        .map(|l| (*l).to_owned())
                        .collect();
                    let errors = match ctx.reporter.annotates() {
                        true => annotations::parse(&end, ANNOTATIONS_PER_STAGE),
                        false => Vec::new(),
                    };
                    let cwd = ctx.plan.root.join(&stage.workdir);
                    ctx.reporter.failure_log(&log_path, &tail, &errors, &cwd);
                }
                return Err(result.outcome);
            }
            tokio::select! {
                () = tokio::time::sleep(stage.retry.delay) => {}
                () = process::cancelled(&mut self.cancel) => {
                    // The last word on the stage must be the interruption, not the failure.
                    ctx.record(Event::StageFinished {
                        stage: stage.name.clone(),
                        attempt,
                        outcome: Outcome::Interrupted,
                        exit_code: None,
                        signal: None,
                        duration_ms: 0,
                        message: Some("interrupted while waiting to retry".into()),
                        fingerprint: None,
                        output_digest: None,
                    });
                    ctx.reporter.stage_finished(
                        &stage.name,
                        Finish::Failed { how: "interrupted" },
                        Duration::ZERO,
                    );
                    return Err(Outcome::Interrupted);
                }
            }
        }
        Err(Outcome::Failed)
    }
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

async fn run_attempt(
    ctx: &Arc<Context>,
    id: StageId,
    env: &[(String, String)],
    log_path: &Path,
    attempt: u32,
    cancel: &mut watch::Receiver<bool>,
) -> Attempt {
    let echo: Option<Echo> = ctx.verbose.then(|| {
        let ctx = ctx.clone();
        Box::new(move |line: &[u8]| ctx.reporter.stage_output(&ctx.plan.stages[id].name, line))
            as Echo
    });
    let output = Arc::new(Output::new(log_path.to_owned(), echo));
    let attempt = run_commands(ctx, id, env, &output, attempt, cancel).await;
    if attempt.outcome != Outcome::Succeeded {
        output.keep();
    }
    attempt
}

/// The stage's commands in turn, until one fails.
async fn run_commands(
    ctx: &Arc<Context>,
    id: StageId,
    env: &[(String, String)],
    output: &Arc<Output>,
    attempt: u32,
    cancel: &mut watch::Receiver<bool>,
) -> Attempt {
    let stage = &ctx.plan.stages[id];
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
    let deadline = stage.timeout.map(|t| Instant::now() + t);
    for command in &stage.commands {
        // A Ctrl-C that came while this stage was hashing or between two commands: start
        // nothing more (a deploy must not begin after the user said stop).
        if *cancel.borrow() {
            return Attempt {
                outcome: Outcome::Interrupted,
                exit_code: None,
                signal: None,
                message: Some("interrupted before the command started".into()),
            };
        }
        output.line(format!("$ {command}\n").as_bytes());
        let ended = match stage.shell.command(command, &ctx.run.path) {
            Ok(invocation) => {
                process::run(&invocation, &cwd, env, output.clone(), deadline, cancel).await
            }
            Err(err) => Err(err),
        };
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
            // Checked only when the spawn failed: a stat per command is a cost on every
            // small stage of a chain.
            Err(_) if !cwd.is_dir() => {
                let message = format!("workdir `{}` does not exist", stage.workdir.display());
                output.line(format!("murphy: {message}\n").as_bytes());
                Attempt::failed(message)
            }
            Err(err) => Attempt::failed(format!(
                "cannot run the command with shell `{}`: {err}",
                stage.shell.text()
            )),
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

/// The end of a log file (its last 256 KiB, from a line start), read from its end so a huge
/// log costs little: enough for the failure's tail and the errors above it.
fn log_end(path: &Path) -> String {
    const WINDOW: u64 = 256 * 1024;
    let read = || -> io::Result<(Vec<u8>, bool)> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok((bytes, len > WINDOW))
    };
    let (bytes, cut) = read().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    match cut {
        // The first line is likely a piece of one.
        true => text
            .split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_owned()),
        false => text.into_owned(),
    }
}
