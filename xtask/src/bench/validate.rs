//! How `murphy validate` scales with the number of stages: the cost per stage of a large
//! pipeline next to that of a small one, measured in the same run. Any work that compares
//! every pair of stages shows as a ratio well above 1.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{Env, Row, Target, TempDir, median, ms, murphy as murphy_cmd, time};

const SMALL: usize = 1_000;
const LARGE: usize = 50_000;
const MEASURED: usize = 5;
/// How much dearer a stage of the large pipeline may be than one of the small.
const TARGET_RATIO: f64 = 1.5;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let tmp = TempDir::new("validate")?;
    let dir = tmp.path();
    let state = dir.join("state");
    let stderr = dir.join("stderr.txt");
    let mut per_stage = Vec::new();
    for stages in [SMALL, LARGE] {
        let file = format!("pipeline-{stages}.yml");
        std::fs::write(dir.join(&file), pipeline(stages))
            .with_context(|| format!("cannot write {file}"))?;
        let mut runs: Vec<Duration> = Vec::new();
        // One run to warm the page cache, then the measured ones.
        for i in 0..=MEASURED {
            let took = time(
                &mut murphy_cmd(env, dir, &state, &["--file", &file, "validate"]),
                &stderr,
            )?;
            if i > 0 {
                runs.push(took);
            }
        }
        per_stage.push(ms(median(runs)) / stages as f64);
    }
    Ok(vec![Row {
        name: format!("validate: per stage, {LARGE} stages in a chain (vs {SMALL} stages)"),
        value: per_stage[1] * 1000.0,
        baseline: Some(per_stage[0] * 1000.0),
        unit: "µs",
        target: Some(Target::RatioAtMost(TARGET_RATIO)),
    }])
}

/// `stages` no-op stages, each needing the one before.
fn pipeline(stages: usize) -> String {
    let mut text = String::from("version: 1\nstages:\n");
    for i in 0..stages {
        let needs = if i == 0 {
            String::new()
        } else {
            format!(", needs: [s{}]", i - 1)
        };
        let _ = writeln!(text, "  s{i}: {{run: 'true'{needs}}}");
    }
    text
}
