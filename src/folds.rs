//! Stage output folded on a CI log (GitHub `::group::`, GitLab sections) while stages run side
//! by side: one stage at a time holds the log and streams into its open fold; the others' output
//! and every other line wait, in order, until that fold closes, so no fold holds a line that is
//! not its stage's and nothing is lost.

use std::collections::{HashMap, VecDeque};

/// The fold syntax of a CI log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Github,
    Gitlab,
}

/// A fold's lines at most; the log file has them all.
const MAX_LINES: usize = 10_000;

pub struct Folds {
    style: Style,
    /// The stage whose fold is open on the log, and that fold's id.
    floor: Option<(String, u64)>,
    /// Folds waiting for the log, by id.
    waiting: HashMap<u64, Fold>,
    /// Each stage's fold of its current attempt, and that attempt.
    current: HashMap<String, (u64, u32)>,
    queue: VecDeque<Item>,
    next_id: u64,
    /// Seconds since the epoch, for GitLab's markers (a parameter so tests can fix it).
    clock: fn() -> u64,
    /// GitHub: the token of `::stop-commands::` around each fold's lines, so a stage's own
    /// output cannot close murphy's group or write workflow commands (`::error`, `::add-mask`).
    guard: Option<String>,
}

struct Fold {
    stage: String,
    attempt: u32,
    lines: Vec<String>,
    dropped: usize,
    /// Its attempt ended: once printed, the fold closes.
    done: bool,
}

enum Item {
    Line(String),
    Fold(u64),
}

impl Folds {
    pub fn new(style: Style, clock: fn() -> u64) -> Folds {
        Folds {
            style,
            floor: None,
            waiting: HashMap::new(),
            current: HashMap::new(),
            queue: VecDeque::new(),
            next_id: 0,
            clock,
            guard: None,
        }
    }

    /// On GitHub, the lines of every fold are stage output, never commands: workflow
    /// commands stop after the group opens and resume (with the secret `token`) before it
    /// closes.
    pub fn guarded(mut self, token: String) -> Folds {
        self.guard = (self.style == Style::Github).then_some(token);
        self
    }

    /// An attempt of `stage` starts: its output goes to a new fold.
    pub fn attempt(&mut self, stage: &str, attempt: u32) {
        let id = self.next_id;
        self.next_id += 1;
        self.current.insert(stage.to_owned(), (id, attempt));
    }

    /// A line that is not stage output: printed now, or after the open fold closes. With no
    /// fold open it goes before what still waits: a failed stage's tail follows its end.
    pub fn line(&mut self, text: String, out: &mut Vec<String>) {
        if self.floor.is_none() {
            out.push(text);
        } else {
            self.queue.push_back(Item::Line(text));
        }
    }

    /// Everything that waits (at the end of a run).
    pub fn flush(&mut self, out: &mut Vec<String>) {
        self.drain(out);
    }

    /// A line of `stage`'s output.
    pub fn output(&mut self, stage: &str, text: String, out: &mut Vec<String>) {
        self.drain(out);
        let (id, attempt) = *self
            .current
            .entry(stage.to_owned())
            .or_insert((u64::MAX, 1));
        if self.floor.as_ref().is_some_and(|(_, open)| *open == id) {
            out.push(text);
            return;
        }
        if self.floor.is_none() && self.queue.is_empty() {
            out.push(self.open(stage, attempt));
            self.floor = Some((stage.to_owned(), id));
            out.push(text);
            return;
        }
        let fold = self.waiting.entry(id).or_insert_with(|| {
            self.queue.push_back(Item::Fold(id));
            Fold {
                stage: stage.to_owned(),
                attempt,
                lines: Vec::new(),
                dropped: 0,
                done: false,
            }
        });
        if fold.lines.len() < MAX_LINES {
            fold.lines.push(text);
        } else {
            fold.dropped += 1;
        }
    }

    /// `stage`'s attempt ended: its fold closes (now, or once printed), before `status`. What
    /// waited comes out at the next event, so lines about this stage (its failure's tail)
    /// still follow it.
    pub fn finished(&mut self, stage: &str, status: String, out: &mut Vec<String>) {
        self.drain(out);
        let Some((id, attempt)) = self.current.remove(stage) else {
            self.line(status, out);
            return;
        };
        if self.floor.as_ref().is_some_and(|(_, open)| *open == id) {
            self.floor = None;
            out.push(self.close(stage, attempt));
            out.push(status);
            return;
        }
        if let Some(fold) = self.waiting.get_mut(&id) {
            fold.done = true;
        }
        self.line(status, out);
    }

    /// What waited, in order, until a fold of a stage still running takes the log.
    fn drain(&mut self, out: &mut Vec<String>) {
        while self.floor.is_none() {
            let Some(item) = self.queue.pop_front() else {
                return;
            };
            let id = match item {
                Item::Line(text) => {
                    out.push(text);
                    continue;
                }
                Item::Fold(id) => id,
            };
            let Some(fold) = self.waiting.remove(&id) else {
                continue;
            };
            out.push(self.open(&fold.stage, fold.attempt));
            out.extend(fold.lines);
            if fold.dropped > 0 {
                out.push(format!(
                    "... {} more lines in the stage's log",
                    fold.dropped
                ));
            }
            if fold.done {
                out.push(self.close(&fold.stage, fold.attempt));
            } else {
                self.floor = Some((fold.stage, id));
            }
        }
    }

    fn open(&self, stage: &str, attempt: u32) -> String {
        let title = match attempt {
            0 | 1 => format!("{stage} output"),
            n => format!("{stage} output (attempt {n})"),
        };
        match (self.style, &self.guard) {
            (Style::Github, Some(token)) => format!("::group::{title}\n::stop-commands::{token}"),
            (Style::Github, None) => format!("::group::{title}"),
            (Style::Gitlab, _) => format!(
                "\x1b[0Ksection_start:{}:{}[collapsed=true]\r\x1b[0K{title}",
                (self.clock)(),
                self.section(stage, attempt)
            ),
        }
    }

    fn close(&self, stage: &str, attempt: u32) -> String {
        match (self.style, &self.guard) {
            (Style::Github, Some(token)) => format!("::{token}::\n::endgroup::"),
            (Style::Github, None) => "::endgroup::".to_owned(),
            (Style::Gitlab, _) => format!(
                "\x1b[0Ksection_end:{}:{}\r\x1b[0K",
                (self.clock)(),
                self.section(stage, attempt)
            ),
        }
    }

    fn section(&self, stage: &str, attempt: u32) -> String {
        format!("murphy_{}_{}", section_name(stage), attempt.max(1))
    }
}

/// A GitLab section name: letters, digits, `_`, `.` and `-` only (`test[py=3.12]` becomes
/// `test_py_3.12_`).
pub fn section_name(stage: &str) -> String {
    stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays `events` (`s STAGE` starts an attempt, `o STAGE TEXT` is output, `f STAGE` ends
    /// the attempt, `l TEXT` another line) and returns what the log shows.
    fn play(style: Style, events: &[&str]) -> Vec<String> {
        let mut folds = Folds::new(style, || 1_700_000_000);
        let mut attempts: HashMap<String, u32> = HashMap::new();
        let mut out = Vec::new();
        for event in events {
            let mut parts = event.splitn(3, ' ');
            let (kind, stage) = (parts.next().unwrap(), parts.next().unwrap());
            match kind {
                "s" => {
                    let n = attempts.entry(stage.into()).or_default();
                    *n += 1;
                    folds.attempt(stage, *n);
                    folds.line(format!("{stage} started"), &mut out);
                }
                "o" => folds.output(stage, parts.next().unwrap().into(), &mut out),
                "f" => folds.finished(stage, format!("{stage} ended"), &mut out),
                _ => folds.line(event[2..].into(), &mut out),
            }
        }
        folds.flush(&mut out);
        out
    }

    #[test]
    fn one_stage_streams_into_its_open_group() {
        assert_eq!(
            play(Style::Github, &["s a", "o a one", "o a two", "f a"]),
            [
                "a started",
                "::group::a output",
                "one",
                "two",
                "::endgroup::",
                "a ended"
            ]
        );
    }

    #[test]
    fn side_by_side_stages_wait_for_the_open_group_and_keep_their_order() {
        let log = play(
            Style::Github,
            &[
                "s a", "o a a1", "s b", "o b b1", "s c", "o a a2", "o b b2", "f b", "l note",
                "o c c1", "f a", "o c c2", "f c",
            ],
        );
        assert_eq!(
            log,
            [
                "a started",
                "::group::a output",
                "a1",
                "a2",
                "::endgroup::",
                "a ended",
                "b started",
                "::group::b output",
                "b1",
                "b2",
                "::endgroup::",
                "c started",
                "b ended",
                "note",
                // `c` still runs: it takes the log and streams on.
                "::group::c output",
                "c1",
                "c2",
                "::endgroup::",
                "c ended",
            ]
        );
    }

    #[test]
    fn a_failed_stage_s_tail_follows_its_end_outside_any_group() {
        let log = play(
            Style::Github,
            &[
                "s a",
                "o a a1",
                "s b",
                "o b b1",
                "f a",
                "l tail of a",
                "o b b2",
                "f b",
                "l tail of b",
            ],
        );
        assert_eq!(
            log,
            [
                "a started",
                "::group::a output",
                "a1",
                "::endgroup::",
                "a ended",
                "tail of a",
                "b started",
                "::group::b output",
                "b1",
                "b2",
                "::endgroup::",
                "b ended",
                "tail of b",
            ]
        );
    }

    #[test]
    fn a_retried_stage_gets_a_fold_per_attempt() {
        let log = play(
            Style::Gitlab,
            &[
                "s t[py=3.12]",
                "o t[py=3.12] x",
                "f t[py=3.12]",
                "s t[py=3.12]",
                "o t[py=3.12] y",
                "f t[py=3.12]",
            ],
        );
        assert_eq!(
            log,
            [
                "t[py=3.12] started",
                "\x1b[0Ksection_start:1700000000:murphy_t_py_3.12__1[collapsed=true]\r\x1b[0Kt[py=3.12] output",
                "x",
                "\x1b[0Ksection_end:1700000000:murphy_t_py_3.12__1\r\x1b[0K",
                "t[py=3.12] ended",
                "t[py=3.12] started",
                "\x1b[0Ksection_start:1700000000:murphy_t_py_3.12__2[collapsed=true]\r\x1b[0Kt[py=3.12] output (attempt 2)",
                "y",
                "\x1b[0Ksection_end:1700000000:murphy_t_py_3.12__2\r\x1b[0K",
                "t[py=3.12] ended",
            ]
        );
    }

    #[test]
    fn a_stage_without_output_has_no_fold() {
        assert_eq!(
            play(Style::Github, &["s a", "f a", "l done"]),
            ["a started", "a ended", "done"]
        );
    }
}
