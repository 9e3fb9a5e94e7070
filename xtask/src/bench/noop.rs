//! A fully cached run that has nothing to do: what a developer waits for when they run
//! murphy again without changing anything.
//!
//! Four stages run `true`, each with `inputs` globs that name a quarter of 20,000 small files,
//! so every run walks and fingerprints all 20,000. After one run has made the checkpoints,
//! every stage is `cached`:
//!
//! - warm: the stat cache knows every file, so each is only `stat`ed, never read. The
//!   baseline is `find -printf` of each file's size and ctime, which also walks the tree and
//!   `stat`s every file, in one process.
//! - cold: `<state>/stat-cache` is deleted first, so every file is read and hashed again
//!   (the checkpoints still hit). The baseline is `find -exec cat`, which reads every file.
//!
//! Every timed run is checked with `murphy status --json` to have had all stages cached,
//! and a warm run must leave the stat cache as it found it (murphy rewrites it only when it
//! hashed a file it could keep).

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::json::{self, Json};
use super::{Env, Row, Target, TempDir, median, ms, murphy, quiet, time};

/// Top-level directories, one per stage.
pub(super) const STAGES: usize = 4;
const DIRS_PER_STAGE: usize = 50;
const FILES_PER_DIR: usize = 100;
pub(super) const FILES: usize = STAGES * DIRS_PER_STAGE * FILES_PER_DIR;
const FILE_BYTES: usize = 300;
/// The stat cache keeps an entry only for a file whose ctime is older than its hashing by
/// 100 ms (2 s where ctimes are whole seconds); wait longer than that before the run that
/// fills it.
pub(super) const SETTLE: Duration = Duration::from_millis(2500);
const WARM_UP: usize = 1;
const MEASURED: usize = 7;
/// A cached run over 20,000 inputs, in milliseconds.
const TARGET_WARM_MS: f64 = 150.0;

/// The four commands timed, in the order the first round runs them.
const WARM: usize = 0;
const COLD: usize = 1;
const STAT_PASS: usize = 2;
const READ_PASS: usize = 3;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let tmp = TempDir::new("noop")?;
    let dir = tmp.path();
    make_files(dir)?;
    let written = Instant::now();
    std::fs::write(dir.join("pipeline.yml"), pipeline()).context("cannot write pipeline.yml")?;
    let state = dir.join("state");
    let stat_cache = state.join("stat-cache");
    let stderr = dir.join("stderr.txt");
    let parts: Vec<String> = (0..STAGES).map(|q| format!("part{q}")).collect();

    // The first run makes the checkpoints and, the files being old enough, a full stat cache.
    std::thread::sleep(SETTLE.saturating_sub(written.elapsed()));
    time(&mut murphy(env, dir, &state, &["run"]), &stderr).context("the first run")?;
    check_states(env, dir, &state, "succeeded")?;
    if !stat_cache.is_file() {
        bail!(
            "the first run left no stat cache at {}",
            stat_cache.display()
        );
    }

    let warm = || -> Result<Duration> {
        let before = stamp(&stat_cache).context("before a warm run")?;
        let took = time(&mut murphy(env, dir, &state, &["run"]), &stderr)?;
        check_states(env, dir, &state, "cached")?;
        if stamp(&stat_cache).context("after a warm run")? != before {
            bail!("a warm run rewrote the stat cache, so it hashed files: it was not warm");
        }
        Ok(took)
    };
    let cold = || -> Result<Duration> {
        if let Err(err) = std::fs::remove_file(&stat_cache)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(err).context("cannot delete the stat cache");
        }
        let took = time(&mut murphy(env, dir, &state, &["run"]), &stderr)?;
        check_states(env, dir, &state, "cached")?;
        Ok(took)
    };
    let stat_pass = || -> Result<Duration> {
        let mut cmd = Command::new("find");
        cmd.args(&parts)
            .args(["-type", "f", "-printf", "%s %C@\\n"]);
        time(quiet(&mut cmd, dir), &stderr)
    };
    let read_pass = || -> Result<Duration> {
        let mut cmd = Command::new("find");
        cmd.args(&parts)
            .args(["-type", "f", "-exec", "cat", "{}", "+"]);
        time(quiet(&mut cmd, dir), &stderr)
    };

    // Interleaved, each round starting with the next command, so all see the same noise.
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for round in 0..WARM_UP + MEASURED {
        for k in 0..4 {
            let which = (round + k) % 4;
            let took = match which {
                WARM => warm().context("warm run")?,
                COLD => cold().context("cold run")?,
                STAT_PASS => stat_pass()?,
                READ_PASS => read_pass()?,
                _ => unreachable!("four commands"),
            };
            if round >= WARM_UP {
                samples[which].push(took);
            }
        }
    }
    let [warm, cold, stat_pass, read_pass] = samples.map(|s| ms(median(s)));

    Ok(vec![
        Row {
            name: format!(
                "noop: cached run, {FILES} inputs, warm stat cache (vs find -printf stat)"
            ),
            value: warm,
            baseline: Some(stat_pass),
            unit: "ms",
            target: Some(Target::AtMost(TARGET_WARM_MS)),
        },
        Row {
            name: format!("noop: cached run, {FILES} inputs, cold stat cache (vs find -exec cat)"),
            value: cold,
            baseline: Some(read_pass),
            unit: "ms",
            target: None,
        },
    ])
}

/// `partQ/dDD/fFF.txt`: 200 directories of 100 files, each a few hundred distinct bytes.
pub(super) fn make_files(dir: &Path) -> Result<()> {
    let mut content = String::with_capacity(FILE_BYTES + 64);
    for q in 0..STAGES {
        for d in 0..DIRS_PER_STAGE {
            let sub = dir.join(format!("part{q}/d{d:02}"));
            std::fs::create_dir_all(&sub)
                .with_context(|| format!("cannot create {}", sub.display()))?;
            for f in 0..FILES_PER_DIR {
                content.clear();
                let _ = writeln!(content, "file {q}/{d}/{f}");
                let mut n = 0usize;
                while content.len() < FILE_BYTES {
                    let _ = write!(content, " {}", (q * 7919 + d * 104_729 + f * 31 + n) % 9973);
                    n += 1;
                }
                content.push('\n');
                let path = sub.join(format!("f{f:02}.txt"));
                std::fs::write(&path, &content)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// One stage per `partQ`, independent of each other, so murphy may fingerprint them at once.
pub(super) fn pipeline() -> String {
    let mut yaml = String::from("version: 1\nstages:\n");
    for q in 0..STAGES {
        let _ = writeln!(
            yaml,
            "  part{q}: {{inputs: [\"part{q}/**/*.txt\"], run: \"true\"}}"
        );
    }
    yaml
}

/// Which file the path is and when it was last written: changes if murphy rewrites it.
pub(super) fn stamp(path: &Path) -> Result<(u64, u64, i64, i64)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("no stat cache at {}", path.display()))?;
    Ok((meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()))
}

/// Fails unless `murphy status --json` shows every stage of the latest run as `want`.
pub(super) fn check_states(env: &Env, dir: &Path, state: &Path, want: &str) -> Result<()> {
    let states = stage_states(env, dir, state)?;
    if states.len() != STAGES || states.iter().any(|(_, s)| s != want) {
        bail!("expected all {STAGES} stages {want}, murphy status says {states:?}");
    }
    Ok(())
}

/// Each stage of the latest run with its state, as `murphy status --json` gives them.
pub(super) fn stage_states(env: &Env, dir: &Path, state: &Path) -> Result<Vec<(String, String)>> {
    let out = murphy(env, dir, state, &["status", "--json"])
        .output()
        .context("cannot run murphy status")?;
    if !out.status.success() {
        bail!(
            "murphy status --json failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let status = json::parse(&text).context("murphy status --json printed bad JSON")?;
    let stages = status
        .get("stages")
        .and_then(Json::as_array)
        .context("murphy status --json has no `stages` array")?;
    Ok(stages
        .iter()
        .map(|s| {
            let field = |key| s.get(key).and_then(Json::as_str).unwrap_or("?").to_owned();
            (field("name"), field("state"))
        })
        .collect())
}
