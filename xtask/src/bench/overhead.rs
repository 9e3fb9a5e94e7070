//! Per-stage overhead: what murphy adds on top of the commands it runs.
//!
//! A chain of no-op stages (`true`, each needing the one before) makes murphy's own work
//! (planning, spawning, journaling, logging) all there is to measure. The baseline spawns
//! the same `sh -c true` processes one after another from a shell script, so the
//! difference is murphy's cost alone.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{Env, Row, Target, TempDir, median, ms, murphy as murphy_cmd, quiet, time};

const STAGES: usize = 200;
/// Runs of each command before measuring, to warm the page cache and the binary.
const WARM_UP: usize = 1;
const MEASURED: usize = 5;
/// What murphy may add per stage, in milliseconds.
const TARGET_MS_PER_STAGE: f64 = 2.0;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let tmp = TempDir::new("overhead")?;
    let dir = tmp.path();
    std::fs::write(dir.join("pipeline.yml"), pipeline()).context("cannot write pipeline.yml")?;
    std::fs::write(dir.join("script.sh"), "sh -c true\n".repeat(STAGES))
        .context("cannot write script.sh")?;
    let state = dir.join("state");
    let stderr = dir.join("stderr.txt");

    let murphy = || -> Result<Duration> {
        // Every run starts from an empty state dir, so all of them do the same work.
        if state.exists() {
            std::fs::remove_dir_all(&state).context("cannot clear the state dir")?;
        }
        time(&mut murphy_cmd(env, dir, &state, &["run"]), &stderr)
    };
    let baseline = || -> Result<Duration> {
        let mut cmd = Command::new("sh");
        cmd.arg("script.sh");
        time(quiet(&mut cmd, dir), &stderr)
    };

    // Interleaved, and alternating which goes first, so that both see the same noise.
    let mut murphy_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    for i in 0..WARM_UP + MEASURED {
        let (m, b) = if i % 2 == 0 {
            let m = murphy()?;
            (m, baseline()?)
        } else {
            let b = baseline()?;
            (murphy()?, b)
        };
        if i >= WARM_UP {
            murphy_runs.push(m);
            baseline_runs.push(b);
        }
    }

    let murphy_ms = ms(median(murphy_runs));
    let baseline_ms = ms(median(baseline_runs));
    Ok(vec![
        Row {
            name: format!("overhead: {STAGES}-stage chain"),
            value: murphy_ms,
            baseline: Some(baseline_ms),
            unit: "ms",
            target: None,
        },
        Row {
            name: "overhead: per stage".into(),
            value: (murphy_ms - baseline_ms) / STAGES as f64,
            baseline: None,
            unit: "ms",
            target: Some(Target::AtMost(TARGET_MS_PER_STAGE)),
        },
    ])
}

/// `s000 -> s001 -> ...`: a chain, so stages run one at a time like the baseline's.
fn pipeline() -> String {
    let mut yaml = String::from("version: 1\nstages:\n");
    for i in 0..STAGES {
        if i == 0 {
            let _ = writeln!(yaml, "  s000: {{run: \"true\"}}");
        } else {
            let prev = i - 1;
            let _ = writeln!(yaml, "  s{i:03}: {{needs: [s{prev:03}], run: \"true\"}}");
        }
    }
    yaml
}
