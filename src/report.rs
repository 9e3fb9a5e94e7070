//! What a run shows a person while it happens, on stderr.
//!
//! On a terminal: a spinner line per running stage and an overall bar (indicatif). Anywhere
//! else (CI logs, pipes): one plain line per event, so logs read top to bottom. Colour only
//! on a terminal and never with `NO_COLOR`. Under GitHub Actions and GitLab CI, a stage's
//! streamed output (`--verbose`) folds into a group (`::group::`) or a collapsible section
//! ([`crate::folds`]), a failed stage's log tail stays outside any fold, and on GitHub its
//! compiler errors become `::error` annotations.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::annotations::{self, Annotation};
use crate::folds::{self, Folds};

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

/// The CI log a run writes into, for the folds and annotations it understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiLog {
    Plain,
    /// `GITHUB_ACTIONS=true`: `::group::`/`::endgroup::` and `::error` workflow commands.
    Github,
    /// `GITLAB_CI=true`: `section_start`/`section_end` markers.
    Gitlab,
}

impl CiLog {
    pub fn from_env() -> CiLog {
        let is = |k: &str| std::env::var(k).is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        if is("GITHUB_ACTIONS") {
            CiLog::Github
        } else if is("GITLAB_CI") {
            CiLog::Gitlab
        } else {
            CiLog::Plain
        }
    }
}

/// GitHub shows 10 annotations per step: more from one stage would hide the other stages'.
pub const ANNOTATIONS_PER_STAGE: usize = 10;
const ANNOTATIONS_PER_RUN: usize = 50;

pub struct Reporter {
    bars: Option<Bars>,
    ci: CiLog,
    /// Width of the longest stage name, to align `--verbose` prefixes.
    width: usize,
    /// Under a CI log, every line goes through its folds.
    folds: Option<Mutex<Folds>>,
    /// The repository's top folder: annotations name files relative to it.
    repo_root: Option<PathBuf>,
    annotated: AtomicUsize,
    /// `--quiet`: progress lines are dropped, failures still shown (and nothing folded, as
    /// nothing streams).
    quiet: bool,
    /// The `::stop-commands::` token that keeps stage output on GitHub from being read as
    /// workflow commands (see [`Folds::guarded`]).
    guard: String,
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        let ci = CiLog::from_env();
        let guard = crate::fingerprint::hex(&crate::random::bytes::<16>());
        let style = match ci {
            CiLog::Github => Some(folds::Style::Github),
            CiLog::Gitlab => Some(folds::Style::Gitlab),
            CiLog::Plain => None,
        };
        Reporter {
            folds: style
                .filter(|_| bars.is_none() && !quiet)
                .map(|style| Mutex::new(Folds::new(style, unix_now).guarded(guard.clone()))),
            bars,
            ci,
            width: stage_names.iter().map(|n| n.len()).max().unwrap_or(0),
            repo_root: None,
            annotated: AtomicUsize::new(0),
            quiet,
            guard,
        }
    }

    /// Annotations name their files relative to `root`, the repository's top folder.
    pub fn with_repo_root(mut self, root: Option<PathBuf>) -> Reporter {
        self.repo_root = root;
        self
    }

    /// Whether a failed stage's output is worth reading for annotations.
    pub fn annotates(&self) -> bool {
        self.ci == CiLog::Github
    }

    /// A line about how the run goes, which `--quiet` drops.
    fn progress(&self, line: &str) {
        if !self.quiet {
            self.println(line);
        }
    }

    fn println(&self, line: &str) {
        if let Some(folds) = &self.folds {
            self.fold(folds, |f, out| f.line(line.to_owned(), out));
            return;
        }
        self.print(line);
    }

    /// Plays one event on the CI log's folds and prints what it lets out, under the lock so
    /// the log keeps their order.
    fn fold(&self, folds: &Mutex<Folds>, event: impl FnOnce(&mut Folds, &mut Vec<String>)) {
        let mut folds = folds.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        event(&mut folds, &mut out);
        if !out.is_empty() {
            self.print(&out.join("\n"));
        }
    }

    fn print(&self, line: &str) {
        let line = crate::secrets::redact(line);
        match &self.bars {
            Some(bars) => bars.multi.suspend(|| eprintln!("{line}")),
            None => {
                // One write per line: stderr is unbuffered, and `writeln!` would make two.
                let text = format!("{line}\n");
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
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
        if let Some(folds) = &self.folds {
            self.fold(folds, |f, out| {
                f.attempt(stage, attempt);
                f.line(format!("{stage} started{retry}"), out);
            });
            return;
        }
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
        if let Some(folds) = &self.folds {
            let text = text.trim_end_matches(['\n', '\r']).to_owned();
            self.fold(folds, |f, out| f.output(stage, text, out));
            return;
        }
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
                let line = format!("{stage} {} after {took}", style(how).yellow().for_stderr());
                match &self.folds {
                    Some(folds) => self.fold(folds, |f, out| f.finished(stage, line, out)),
                    None => self.progress(&line),
                }
                return;
            }
        };
        if let Some(folds) = &self.folds {
            self.fold(folds, |f, out| f.finished(stage, line, out));
            return;
        }
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

    /// The end of a failed stage's log, so the reason is on screen without opening a file:
    /// never inside a fold, where it would be hidden. Under GitHub Actions, the errors found
    /// in it (`errors`, paths as the tools wrote them from `cwd`) become annotations.
    pub fn failure_log(&self, log_path: &Path, tail: &[String], errors: &[Annotation], cwd: &Path) {
        let github = self.ci == CiLog::Github;
        let mut text = format!("last {} lines of {}:\n", tail.len(), log_path.display());
        if github {
            text.push_str(&format!("::stop-commands::{}\n", self.guard));
        }
        for line in tail {
            text.push_str(&format!("  {line}\n"));
        }
        if github {
            text.push_str(&format!("::{}::\n", self.guard));
            for error in errors.iter().take(ANNOTATIONS_PER_STAGE) {
                if self.annotated.fetch_add(1, Ordering::Relaxed) >= ANNOTATIONS_PER_RUN {
                    break;
                }
                let cwd = std::path::absolute(cwd).unwrap_or_else(|_| cwd.to_path_buf());
                let file = self
                    .repo_root
                    .as_deref()
                    .and_then(|root| annotations::repo_relative(&error.file, &cwd, root));
                text.push_str(&annotations::github_command(error, file.as_deref()));
                text.push('\n');
            }
        }
        self.println(text.trim_end());
    }

    /// The run's last line; `--quiet` shows it only for a run that did not succeed.
    pub fn run_finished(&self, summary: &str, succeeded: bool) {
        if let Some(bars) = &self.bars {
            bars.overall.finish_and_clear();
        }
        if let Some(folds) = &self.folds {
            self.fold(folds, |f, out| {
                f.flush(out);
                f.line(summary.to_owned(), out);
            });
            return;
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

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_millis(420)), "0.4s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h02m");
    }
}
