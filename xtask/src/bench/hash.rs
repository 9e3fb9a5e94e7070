//! Hashing throughput: how fast murphy fingerprints a big input, next to a standalone hasher.
//!
//! One stage with `inputs: [big.bin]` (1 GiB of pseudo-random bytes) runs `true`; each run
//! has a fresh state dir, so there is no stat cache and no checkpoint and murphy reads and
//! hashes the whole file, which is nearly all the run's time. The baseline hashes the same
//! file with `b3sum --num-threads 1` (the same BLAKE3, on one thread, as murphy hashes one
//! file), or with `sha256sum` where there is no `b3sum`; the speed target applies only
//! against `b3sum`. The file is read once before timing, so both find it in the page cache
//! and the figures are hashing, not the disk. A third row times the same run over a 1-byte
//! input: murphy's cost besides hashing (start-up, journal, spawning `true`), which the
//! throughput includes.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{Env, Row, Target, TempDir, median, ms, murphy, quiet, time};

const SIZE_MIB: usize = 1024;
const BLOCK: usize = 1 << 20;
const MEASURED: usize = 3;
/// murphy's throughput as a share of `b3sum --num-threads 1`'s.
const TARGET_RATIO: f64 = 0.8;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let tmp = TempDir::new("hash")?;
    let dir = tmp.path();
    let big = dir.join("big.bin");
    let result = measure(env, dir, &big);
    // The TempDir goes too, but 1 GiB should not wait for the end of the function.
    let _ = std::fs::remove_file(&big);
    result
}

fn measure(env: &Env, dir: &Path, big: &Path) -> Result<Vec<Row>> {
    write_big_file(big)?;
    read_through(big)?;
    std::fs::write(dir.join("pipeline.yml"), pipeline("big.bin"))
        .context("cannot write pipeline.yml")?;
    std::fs::write(dir.join("tiny.bin"), "x").context("cannot write tiny.bin")?;
    std::fs::write(dir.join("tiny.yml"), pipeline("tiny.bin")).context("cannot write tiny.yml")?;
    let state = dir.join("state");
    let stderr = dir.join("stderr.txt");
    let b3sum = has_b3sum();
    let baseline_name = if b3sum {
        "b3sum --num-threads 1"
    } else {
        "sha256sum"
    };

    // Every murphy run starts from an empty state dir: no stat cache, no checkpoint.
    let murphy_run = |args: &[&str]| -> Result<Duration> {
        if state.exists() {
            std::fs::remove_dir_all(&state).context("cannot clear the state dir")?;
        }
        time(&mut murphy(env, dir, &state, args), &stderr)
    };
    let baseline = || -> Result<Duration> {
        let mut cmd = if b3sum {
            let mut cmd = Command::new("b3sum");
            cmd.args(["--num-threads", "1"]);
            cmd
        } else {
            Command::new("sha256sum")
        };
        cmd.arg("big.bin");
        time(quiet(&mut cmd, dir), &stderr)
    };

    // Interleaved, each round starting with the next command, so all see the same noise.
    // The run over a 1-byte input is what the big run costs besides hashing.
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for round in 0..MEASURED {
        for k in 0..3 {
            let which = (round + k) % 3;
            samples[which].push(match which {
                0 => murphy_run(&["run"])?,
                1 => baseline()?,
                _ => murphy_run(&["--file", "tiny.yml", "run"])?,
            });
        }
    }
    let [big_run, baseline_run, tiny_run] = samples.map(median);
    let mib_per_s = |d: Duration| SIZE_MIB as f64 / d.as_secs_f64();
    let murphy_speed = mib_per_s(big_run);
    let baseline_speed = mib_per_s(baseline_run);

    Ok(vec![
        Row {
            name: format!("hash: 1 GiB input, cold run (vs {baseline_name})"),
            value: murphy_speed,
            baseline: Some(baseline_speed),
            unit: "MiB/s",
            target: None,
        },
        Row {
            name: format!("hash: murphy's speed / {baseline_name}'s"),
            value: murphy_speed / baseline_speed,
            baseline: None,
            unit: "x",
            target: b3sum.then_some(Target::AtLeast(TARGET_RATIO)),
        },
        Row {
            name: "hash: same run over a 1-byte input (murphy's fixed cost)".into(),
            value: ms(tiny_run),
            baseline: None,
            unit: "ms",
            target: None,
        },
    ])
}

/// One stage that hashes `input` and runs `true`.
fn pipeline(input: &str) -> String {
    format!("version: 1\nstages:\n  hash: {{inputs: [{input}], run: \"true\"}}\n")
}

/// 1 GiB of xorshift bytes: one pseudo-random block, its first word changed per copy so no
/// two blocks are alike. Synced, so no writeback runs while the hashing is timed.
fn write_big_file(path: &Path) -> Result<()> {
    let mut block = vec![0u8; BLOCK];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in block.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let mut file =
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    for i in 0..SIZE_MIB as u64 {
        block[..8].copy_from_slice(&i.to_le_bytes());
        file.write_all(&block)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// Reads the whole file once, so that the timed runs find it in the page cache.
fn read_through(path: &Path) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0u8; BLOCK];
    while file
        .read(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?
        > 0
    {}
    Ok(())
}

fn has_b3sum() -> bool {
    Command::new("b3sum")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
