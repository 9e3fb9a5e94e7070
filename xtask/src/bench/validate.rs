//! `murphy validate` of a large pipeline: its time next to that of starting murphy at all
//! (`murphy --version`), and how it scales, the cost per stage of a large pipeline next to
//! that of a small one, measured in the same run. Any work that compares every pair of
//! stages shows as a ratio well above 1.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{Env, Row, Target, TempDir, median, ms, murphy as murphy_cmd, time};

const SMALL: usize = 1_000;
/// The size the absolute target is for.
const TIMED: usize = 20_000;
const LARGE: usize = 50_000;
const MEASURED: usize = 5;
/// How much dearer a stage of the large pipeline may be than one of the small.
const TARGET_RATIO: f64 = 1.5;
/// Most milliseconds `validate` of [`TIMED`] stages may take.
const TARGET_TIMED_MS: f64 = 300.0;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let tmp = TempDir::new("validate")?;
    let dir = tmp.path();
    let state = dir.join("state");
    let stderr = dir.join("stderr.txt");
    let sizes = [SMALL, TIMED, LARGE];
    for stages in sizes {
        let file = file_name(stages);
        std::fs::write(dir.join(&file), pipeline(stages))
            .with_context(|| format!("cannot write {file}"))?;
    }
    // `murphy --version` first, then each size; interleaved, so all see the same noise. One
    // round to warm the page cache, then the measured ones.
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for round in 0..=MEASURED {
        for (k, runs) in samples.iter_mut().enumerate() {
            let took = match k.checked_sub(1) {
                None => time(&mut murphy_cmd(env, dir, &state, &["--version"]), &stderr)?,
                Some(size) => {
                    let file = file_name(sizes[size]);
                    let args = ["--file", &file, "validate"];
                    time(&mut murphy_cmd(env, dir, &state, &args), &stderr)?
                }
            };
            if round > 0 {
                runs.push(took);
            }
        }
    }
    let [start, small, timed, large] = samples.map(|s| ms(median(s)));
    let per_stage = |total: f64, stages: usize| total / stages as f64 * 1000.0;
    Ok(vec![
        Row {
            name: format!("validate: per stage, {LARGE} stages in a chain (vs {SMALL} stages)"),
            value: per_stage(large, LARGE),
            baseline: Some(per_stage(small, SMALL)),
            unit: "µs",
            target: Some(Target::RatioAtMost(TARGET_RATIO)),
        },
        Row {
            name: format!("validate: {TIMED} stages in a chain (vs `murphy --version`)"),
            value: timed,
            baseline: Some(start),
            unit: "ms",
            target: Some(Target::AtMost(TARGET_TIMED_MS)),
        },
    ])
}

fn file_name(stages: usize) -> String {
    format!("pipeline-{stages}.yml")
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
