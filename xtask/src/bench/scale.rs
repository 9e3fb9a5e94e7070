//! How murphy holds up as a project grows, each figure beside a baseline timed in the same
//! run:
//!
//! - the peak memory (RSS) of a forced run of 1,000 stages, against that of `validate` of the
//!   same file (what holding the plan costs);
//! - how soon `murphy resume` after a kill -9 starts the stage that was running, against how
//!   soon a plain `sh` starts the same command;
//! - restoring a 1 GiB output from its checkpoint, against `cp` of the same file, each after
//!   a `sync` so neither pays for the other's writeback, and with what each copies from read
//!   through first so both find it in the page cache: `cp` copies the output murphy has just
//!   written, while the stored object was last read a round before, and this machine's memory
//!   limit had evicted a few MiB of it (`MURPHY_BENCH_RESTORE_MIB=64` for a quicker look).

use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use super::{Env, Row, Target, TempDir, median, ms, murphy, time};

const MEASURED: usize = 3;
const RSS_STAGES: usize = 1_000;
const RESTORE_MIB_DEFAULT: u64 = 1024;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let tmp = TempDir::new("scale")?;
    Ok(vec![
        rss(env, tmp.path())?,
        resume(env, tmp.path())?,
        restore(env, tmp.path())?,
    ])
}

/// `stages` independent stages running `true`.
fn pipeline(stages: usize) -> String {
    let mut text = String::from("version: 1\nstages:\n");
    for i in 0..stages {
        let _ = writeln!(text, "  s{i}: {{run: 'true'}}");
    }
    text
}

/// Runs `command` and returns its peak resident memory in MiB, from `wait4`'s rusage.
fn peak_rss(command: &mut Command) -> Result<f64> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointers are to live locals; the child is ours and not yet waited for
    // (`child` is dropped without `wait`, which never reaps it).
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let exit = std::process::ExitStatus::from_raw(status);
    if !exit.success() {
        bail!("{command:?} failed ({exit})");
    }
    // ru_maxrss is in KiB on Linux.
    Ok(usage.ru_maxrss as f64 / 1024.0)
}

fn rss(env: &Env, dir: &Path) -> Result<Row> {
    let project = dir.join("rss");
    std::fs::create_dir(&project).context("cannot create the rss project")?;
    std::fs::write(project.join("pipeline.yml"), pipeline(RSS_STAGES))
        .context("cannot write pipeline.yml")?;
    let state = dir.join("rss-state");
    let validate = peak_rss(&mut murphy(env, &project, &state, &["validate"]))?;
    let run = peak_rss(&mut murphy(env, &project, &state, &["run", "--force"]))?;
    Ok(Row {
        name: format!("scale: peak RSS of a run of {RSS_STAGES} stages (vs validate)"),
        value: run,
        baseline: Some(validate),
        unit: "MiB",
        target: Some(Target::AtMost(30.0)),
    })
}

/// Nanoseconds since the epoch, as `date +%s%N` writes them.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Waits for `path` to hold a `date +%s%N` time and returns it.
fn wait_for_time(path: &Path, limit: Duration) -> Result<u128> {
    let until = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(ns) = text.trim().parse::<u128>()
        {
            return Ok(ns);
        }
        if Instant::now() > until {
            bail!("{} was not written within {limit:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn resume(env: &Env, dir: &Path) -> Result<Row> {
    let project = dir.join("resume");
    std::fs::create_dir(&project).context("cannot create the resume project")?;
    // The first attempt marks itself and waits to be killed; the resumed one writes when it
    // started and ends.
    let command = "if [ -f killed ]; then date +%s%N > resumed; else touch killed; sleep 60; fi";
    std::fs::write(
        project.join("pipeline.yml"),
        format!(
            "version: 1\nstages:\n  s0: {{run: '{command}'}}\n  s1: {{run: 'true', needs: [s0]}}\n"
        ),
    )
    .context("cannot write pipeline.yml")?;
    let state = dir.join("resume-state");
    let stderr = dir.join("resume.txt");
    let mut latency = Vec::new();
    let mut baseline = Vec::new();
    for _ in 0..MEASURED {
        for name in ["killed", "resumed"] {
            let _ = std::fs::remove_file(project.join(name));
        }
        let mut first = murphy(env, &project, &state, &["run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the run to kill")?;
        let until = Instant::now() + Duration::from_secs(30);
        while !project.join("killed").exists() {
            if Instant::now() > until {
                let _ = first.kill();
                bail!("the stage to kill did not start");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        first.kill().context("cannot kill -9 the run")?;
        first.wait().context("cannot wait for the killed run")?;
        let started = now_ns();
        time(&mut murphy(env, &project, &state, &["resume"]), &stderr).context("murphy resume")?;
        let resumed = wait_for_time(&project.join("resumed"), Duration::from_secs(5))?;
        latency.push(Duration::from_nanos(
            u64::try_from(resumed.saturating_sub(started)).unwrap_or(u64::MAX),
        ));

        let _ = std::fs::remove_file(project.join("resumed"));
        let started = now_ns();
        time(
            Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(&project),
            &stderr,
        )?;
        let resumed = wait_for_time(&project.join("resumed"), Duration::from_secs(5))?;
        baseline.push(Duration::from_nanos(
            u64::try_from(resumed.saturating_sub(started)).unwrap_or(u64::MAX),
        ));
    }
    Ok(Row {
        name: "scale: resume after kill -9 to the stage's start (vs sh starting it)".into(),
        value: ms(median(latency)),
        baseline: Some(ms(median(baseline))),
        unit: "ms",
        target: Some(Target::AtMost(50.0)),
    })
}

fn restore(env: &Env, dir: &Path) -> Result<Row> {
    let mib: u64 = match std::env::var("MURPHY_BENCH_RESTORE_MIB") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("MURPHY_BENCH_RESTORE_MIB={v}: not a number"))?,
        Err(_) => RESTORE_MIB_DEFAULT,
    };
    let project = dir.join("restore");
    std::fs::create_dir(&project).context("cannot create the restore project")?;
    std::fs::write(
        project.join("pipeline.yml"),
        format!(
            "version: 1\nstages:\n  big:\n    run: head -c {} /dev/urandom > big.bin\n    outputs: [big.bin]\n",
            mib << 20
        ),
    )
    .context("cannot write pipeline.yml")?;
    let state = dir.join("restore-state");
    let stderr = dir.join("restore.txt");
    let output = project.join("big.bin");
    time(&mut murphy(env, &project, &state, &["run"]), &stderr).context("the first run")?;
    // Old enough for the stat cache to vouch for the stored object from now on.
    std::thread::sleep(super::noop::SETTLE);
    std::fs::remove_file(&output).context("cannot remove big.bin")?;
    time(&mut murphy(env, &project, &state, &["run"]), &stderr).context("the second run")?;
    let copy = dir.join("restore-copy.bin");
    let object = largest_file(&state.join("store/objects"))?;
    let mut restored = Vec::new();
    let mut copied = Vec::new();
    for _ in 0..MEASURED {
        std::fs::remove_file(&output).context("cannot remove big.bin")?;
        time(&mut Command::new("sync"), &stderr)?;
        read_through(&object)?;
        restored.push(time(&mut murphy(env, &project, &state, &["run"]), &stderr)?);
        if !output.is_file() {
            bail!("the run did not restore big.bin");
        }
        let _ = std::fs::remove_file(&copy);
        time(&mut Command::new("sync"), &stderr)?;
        read_through(&output)?;
        copied.push(time(Command::new("cp").arg(&output).arg(&copy), &stderr)?);
    }
    Ok(Row {
        name: format!("scale: restore a {mib} MiB output (vs cp of it)"),
        value: ms(median(restored)),
        baseline: Some(ms(median(copied))),
        unit: "ms",
        target: Some(Target::RatioAtMost(1.0)),
    })
}

/// The largest file below `dir`: the stored object of the restore project's one output.
fn largest_file(dir: &Path) -> Result<std::path::PathBuf> {
    let mut largest: Option<(u64, std::path::PathBuf)> = None;
    for prefix in
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        for entry in std::fs::read_dir(prefix?.path())? {
            let entry = entry?;
            let len = entry.metadata()?.len();
            if largest.as_ref().is_none_or(|(most, _)| len > *most) {
                largest = Some((len, entry.path()));
            }
        }
    }
    largest
        .map(|(_, path)| path)
        .with_context(|| format!("no stored object in {}", dir.display()))
}

/// Reads `path` to its end, so that its pages are in the page cache.
fn read_through(path: &Path) -> Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    std::io::copy(&mut file, &mut std::io::sink())
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(())
}
