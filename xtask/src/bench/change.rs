//! One input of one stage edited, nothing else: the edit-and-run loop, and what a CI job
//! after a one-line change pays.
//!
//! The files of the `noop` benchmark (20,000 inputs, four stages), committed to git, but each
//! stage `cat`s its quarter into an output, so the stage that must run does real work. Before
//! each timed run a line is appended to one input of `part0`; the run must run that stage and
//! restore the other three. The baseline is that stage's command alone, in `sh`, after the
//! same kind of edit, in the same rounds.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::noop::{FILES, SETTLE, STAGES, check_states, make_files, stage_states};
use super::touched::git;
use super::{Env, Row, Target, TempDir, median, ms, murphy, quiet, time};

const WARM_UP: usize = 2;
const MEASURED: usize = 9;
/// The run may take at most this many times the stage's command alone (issue 16's W3).
const TARGET_RATIO: f64 = 2.5;
/// The stage whose input is edited, and the input.
const EDITED_STAGE: &str = "part0";
const EDITED_FILE: &str = "part0/d00/f00.txt";

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let tmp = TempDir::new("change")?;
    let dir = tmp.path().join("repo");
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    make_files(&dir)?;
    std::fs::write(dir.join("pipeline.yml"), pipeline()).context("cannot write pipeline.yml")?;
    std::fs::write(dir.join(".gitignore"), "out*.txt\nbase.txt\n")
        .context("cannot write .gitignore")?;
    git(&dir, &["init", "-q", "-b", "main"])?;
    git(&dir, &["add", "-A"])?;
    git(&dir, &["commit", "-q", "-m", "20,000 inputs"])?;
    // The state directory is outside the repository, so it is no untracked file.
    let state = tmp.path().join("state");
    let stderr = tmp.path().join("stderr.txt");

    std::thread::sleep(SETTLE);
    time(&mut murphy(env, &dir, &state, &["run"]), &stderr).context("the first run")?;
    check_states(env, &dir, &state, "succeeded")?;
    let step = command(0).replace("out0.txt", "base.txt");
    let mut samples: [Vec<Duration>; 2] = Default::default();
    for round in 0..WARM_UP + MEASURED {
        edit(&dir)?;
        let run = time(&mut murphy(env, &dir, &state, &["run"]), &stderr)
            .context("the run after an edit")?;
        check_one_ran(env, &dir, &state)?;
        edit(&dir)?;
        let mut sh = Command::new("sh");
        sh.args(["-c", &step]);
        let alone = time(quiet(&mut sh, &dir), &stderr).context("the stage's command alone")?;
        if round >= WARM_UP {
            samples[0].push(run);
            samples[1].push(alone);
        }
    }
    let [run, alone] = samples.map(|s| ms(median(s)));
    Ok(vec![Row {
        name: format!(
            "change: one of {FILES} inputs edited, 1 of {STAGES} stages runs (vs its command alone)"
        ),
        value: run,
        baseline: Some(alone),
        unit: "ms",
        target: Some(Target::RatioAtMost(TARGET_RATIO)),
    }])
}

/// Stage `q`'s command: all 5,000 of its inputs read, as a build step reads its sources.
fn command(q: usize) -> String {
    format!("cat part{q}/*/*.txt > out{q}.txt")
}

fn pipeline() -> String {
    let mut yaml = String::from("version: 1\nstages:\n");
    for q in 0..STAGES {
        let _ = writeln!(
            yaml,
            "  part{q}: {{inputs: [\"part{q}/**/*.txt\"], outputs: [out{q}.txt], run: \"{}\"}}",
            command(q)
        );
    }
    yaml
}

/// Appends a line to the edited input: new bytes, as an editor's save makes.
fn edit(dir: &Path) -> Result<()> {
    let path = dir.join(EDITED_FILE);
    let mut file = std::fs::File::options()
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(file, "edited").with_context(|| format!("cannot append to {}", path.display()))
}

/// Fails unless the latest run ran the edited stage and restored every other one.
fn check_one_ran(env: &Env, dir: &Path, state: &Path) -> Result<()> {
    let states = stage_states(env, dir, state)?;
    let expected = |name: &str| match name == EDITED_STAGE {
        true => "succeeded",
        false => "cached",
    };
    if states.len() != STAGES || states.iter().any(|(name, state)| state != expected(name)) {
        bail!("expected only `{EDITED_STAGE}` to run, murphy status says {states:?}");
    }
    Ok(())
}
