//! What a run shows a person while it happens, on stderr.
//!
//! On a terminal: a spinner line per running stage and an overall bar (indicatif). Anywhere
//! else (CI logs, pipes): one plain line per event, so logs read top to bottom. Colour only
//! on a terminal and never with `NO_COLOR`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a finished stage is described.
pub enum Finish<'a> {
    Succeeded,
    Failed {
        how: &'a str,
    },
    /// A failed attempt that will be tried again: the stage is not over.
    Retrying {
        how: &'a str,
    },
}

pub struct Reporter {
    bars: Option<Bars>,
    /// Under GitHub Actions, failure logs fold into `::group::` sections.
    github: bool,
    /// Width of the longest stage name, to align `--verbose` prefixes.
    width: usize,
    /// `--quiet`: progress lines are dropped, failures still shown.
    quiet: bool,
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    running: Mutex<HashMap<String, ProgressBar>>,
}

/// Whether stderr is a person's terminal rather than a log.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// Decides once for the process whether stdout and stderr get colour, by the conventions
/// most tools share: `NO_COLOR` (non-empty) turns it off, then `CLICOLOR_FORCE` (not `0`)
/// turns it on even in a pipe, then `CLICOLOR=0` turns it off; otherwise a terminal that is
/// not `TERM=dumb` gets colour.
pub fn init_colour() {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let colour = |terminal: bool| {
        colour_wanted(
            var("NO_COLOR").is_some(),
            var("CLICOLOR_FORCE").is_some_and(|v| v != "0"),
            var("CLICOLOR").is_some_and(|v| v == "0"),
            terminal && std::env::var("TERM").map_or(true, |t| t != "dumb"),
        )
    };
    console::set_colors_enabled_stderr(colour(std::io::stderr().is_terminal()));
    console::set_colors_enabled(colour(std::io::stdout().is_terminal()));
}

fn colour_wanted(no_color: bool, force: bool, clicolor_off: bool, capable_terminal: bool) -> bool {
    !no_color && (force || (!clicolor_off && capable_terminal))
}

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`: a run shows only what went wrong (failed stages, their log tails, the failed
/// run's summary), not its progress.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A note on stderr outside a run's progress (`note: ...`), which `--quiet` drops.
pub fn note(line: &str) {
    if !quiet() {
        eprintln!("{}", crate::secrets::redact(line));
    }
}

impl Reporter {
    pub fn new(stage_names: &[&str]) -> Reporter {
        let quiet = quiet();
        let bars = (interactive() && !quiet).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(stage_names.len() as u64));
            overall.set_style(
                ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} stages {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Bars {
                multi,
                overall,
                running: Mutex::new(HashMap::new()),
            }
        });
        Reporter {
            bars,
            github: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            width: stage_names.iter().map(|n| n.len()).max().unwrap_or(0),
            quiet,
        }
    }

    /// A line about how the run goes, which `--quiet` drops.
    fn progress(&self, line: &str) {
        if !self.quiet {
            self.println(line);
        }
    }

    fn println(&self, line: &str) {
        let line = crate::secrets::redact(line);
        match &self.bars {
            Some(bars) => bars.multi.suspend(|| eprintln!("{line}")),
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{line}");
            }
        }
    }

    pub fn run_started(&self, run_id: &str, pipeline: &str, stages: usize, resumed: bool) {
        self.progress(&format!(
            "{} {} run {run_id} of `{pipeline}`: {stages} stage{}",
            style("murphy").bold().for_stderr(),
            if resumed { "resuming" } else { "starting" },
            if stages == 1 { "" } else { "s" }
        ));
    }

    /// A line of news about a stage that is not its start or end.
    pub fn note(&self, line: &str) {
        self.progress(line);
    }

    /// A stage a resumed run does not run again: it succeeded before murphy stopped, and
    /// nothing it depends on changed since.
    pub fn stage_done_before(&self, stage: &str, restored: usize) {
        let detail = match restored {
            0 => String::new(),
            1 => " (restored 1 output)".to_owned(),
            n => format!(" (restored {n} outputs)"),
        };
        let line = format!(
            "{stage} {} before the run was resumed{detail}",
            style("succeeded").green().for_stderr()
        );
        self.end_stage(stage, &line, false);
    }

    /// A stage restored from its checkpoint instead of run.
    pub fn stage_cached(&self, stage: &str, restored: usize) {
        let detail = match restored {
            0 => String::new(),
            1 => " (restored 1 output)".to_owned(),
            n => format!(" (restored {n} outputs)"),
        };
        let line = format!("{stage} {}{detail}", style("cached").cyan().for_stderr());
        self.end_stage(stage, &line, false);
    }

    pub fn stage_started(&self, stage: &str, attempt: u32, attempts: u32) {
        let retry = if attempt > 1 {
            format!(" (attempt {attempt} of {attempts})")
        } else {
            String::new()
        };
        match &self.bars {
            Some(bars) => {
                let bar = bars
                    .multi
                    .insert_before(&bars.overall, ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(format!("{stage}{retry}"));
                bar.enable_steady_tick(Duration::from_millis(100));
                let mut running = bars.running.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(old) = running.insert(stage.to_owned(), bar) {
                    old.finish_and_clear();
                }
            }
            None => self.progress(&format!("{stage} started{retry}")),
        }
    }

    /// A line of a stage's output, for `--verbose`.
    pub fn stage_output(&self, stage: &str, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        self.println(&format!(
            "{} {text}",
            style(format!("{stage:>width$} |", width = self.width))
                .dim()
                .for_stderr()
        ));
    }

    pub fn stage_finished(&self, stage: &str, finish: Finish<'_>, elapsed: Duration) {
        let took = format_duration(elapsed);
        let (line, failed) = match finish {
            Finish::Succeeded => (
                format!(
                    "{stage} {} in {took}",
                    style("succeeded").green().for_stderr()
                ),
                false,
            ),
            Finish::Failed { how } => (
                format!(
                    "{stage} {} after {took}",
                    style(how).red().bold().for_stderr()
                ),
                true,
            ),
            Finish::Retrying { how } => {
                // The spinner stays: the stage goes on after the delay.
                self.progress(&format!(
                    "{stage} {} after {took}",
                    style(how).yellow().for_stderr()
                ));
                return;
            }
        };
        self.end_stage(stage, &line, failed);
    }

    pub fn stage_skipped(&self, stage: &str, reason: &str) {
        let line = format!(
            "{stage} {} {reason}",
            style("skipped").yellow().for_stderr()
        );
        self.end_stage(stage, &line, false);
    }

    fn end_stage(&self, stage: &str, line: &str, failed: bool) {
        if let Some(bars) = &self.bars {
            let bar = bars
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(stage);
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            bars.overall.inc(1);
        }
        if failed {
            self.println(line);
        } else {
            self.progress(line);
        }
    }

    /// The end of a failed stage's log, so the reason is on screen without opening a file.
    pub fn failure_log(&self, stage: &str, log_path: &std::path::Path, tail: &[String]) {
        let mut text = String::new();
        if self.github {
            text.push_str(&format!(
                "::group::{stage} log (last {} lines)\n",
                tail.len()
            ));
        } else {
            text.push_str(&format!(
                "last {} lines of {}:\n",
                tail.len(),
                log_path.display()
            ));
        }
        for line in tail {
            text.push_str(&format!("  {line}\n"));
        }
        if self.github {
            text.push_str("::endgroup::\n");
        }
        self.println(text.trim_end());
    }

    /// The run's last line; `--quiet` shows it only for a run that did not succeed.
    pub fn run_finished(&self, summary: &str, succeeded: bool) {
        if let Some(bars) = &self.bars {
            bars.overall.finish_and_clear();
        }
        if succeeded {
            self.progress(summary);
        } else {
            self.println(summary);
        }
    }
}

/// `0.4s`, `12.3s`, `4m05s`, `1h02m`: short and readable in a log.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, (d.as_secs() % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::{colour_wanted, format_duration};
    use std::time::Duration;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_millis(420)), "0.4s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn colour_follows_no_color_then_clicolor_force_then_clicolor() {
        // (NO_COLOR, CLICOLOR_FORCE, CLICOLOR=0, a capable terminal) -> colour
        let cases = [
            ((false, false, false, true), true),
            ((false, false, false, false), false),
            ((true, true, false, true), false),
            ((false, true, false, false), true),
            ((false, true, true, false), true),
            ((false, false, true, true), false),
        ];
        for ((no_color, force, off, terminal), want) in cases {
            assert_eq!(
                colour_wanted(no_color, force, off, terminal),
                want,
                "NO_COLOR {no_color}, CLICOLOR_FORCE {force}, CLICOLOR=0 {off}, terminal {terminal}"
            );
        }
    }
}
