//! A cached run in a git repository after every input was touched (a checkout, a `touch`,
//! an archive extracted over the tree): new stat data, the same bytes.
//!
//! The project of the `noop` benchmark (20,000 inputs, four stages), committed to git. Each
//! round times a warm run, touches every input, waits until the files are old enough for
//! the stat cache to keep them, then times the first run (every input is read again) and the
//! run after it (nothing should be: neither murphy's stat cache nor git's index may stay
//! stale), against the warm run in git of the same round. The warm run in git is itself timed
//! against a warm run of a copy of the project outside git: what git costs shows as that
//! ratio. Compared with the copy outside git, the run after a touch would carry git's cost
//! too, and its 10% would be spent on it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};

use super::noop::{FILES, SETTLE, STAGES, check_states, make_files, pipeline, stamp};
use super::{Env, Row, Target, TempDir, median, ms, murphy, time};

const WARM_UP: usize = 1;
/// Nine: the two medians it compares are ~35 ms each, and with five rounds the ratio moved
/// between 1.04 and 1.22 on one commit.
const MEASURED: usize = 9;
/// The run after a touch may be at most this much slower than a warm run.
const TARGET_RATIO: f64 = 1.10;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let tmp = TempDir::new("touched")?;
    // The state directories are outside the repository, so they are no untracked files.
    let [repo, plain] = [tmp.path().join("repo"), tmp.path().join("plain")];
    for dir in [&repo, &plain] {
        std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        make_files(dir)?;
        std::fs::write(dir.join("pipeline.yml"), pipeline())
            .context("cannot write pipeline.yml")?;
    }
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-q", "-m", "20,000 inputs"])?;
    let stderr = tmp.path().join("stderr.txt");
    let project = |dir: &Path, name: &str| Project {
        dir: dir.to_owned(),
        state: tmp.path().join(name),
    };
    let [repo, plain] = [project(&repo, "repo-state"), project(&plain, "plain-state")];

    std::thread::sleep(SETTLE);
    for p in [&repo, &plain] {
        time(&mut murphy(env, &p.dir, &p.state, &["run"]), &stderr).context("the first run")?;
        check_states(env, &p.dir, &p.state, "succeeded")?;
    }

    let mut samples: [Vec<Duration>; 4] = Default::default();
    for round in 0..WARM_UP + MEASURED {
        let took = [
            plain
                .run(env, &stderr, true)
                .context("warm run outside git")?,
            repo.run(env, &stderr, true).context("warm run in git")?,
        ];
        touch_all(&repo.dir)?;
        std::thread::sleep(SETTLE);
        let first = repo
            .run(env, &stderr, false)
            .context("first run after the touch")?;
        let after = repo.run(env, &stderr, true).context("the run after that")?;
        if round >= WARM_UP {
            for (sample, took) in samples.iter_mut().zip([took[0], took[1], first, after]) {
                sample.push(took);
            }
        }
    }
    let [plain_warm, repo_warm, first, after] = samples.map(|s| ms(median(s)));
    Ok(vec![
        Row {
            name: format!("touched: warm run, {FILES} inputs in git (vs outside git)"),
            value: repo_warm,
            baseline: Some(plain_warm),
            unit: "ms",
            target: Some(Target::RatioAtMost(TARGET_RATIO)),
        },
        Row {
            name: "touched: first run after touching every input (vs warm outside git)".into(),
            value: first,
            baseline: Some(plain_warm),
            unit: "ms",
            target: None,
        },
        Row {
            name: format!("touched: the run after it, {STAGES} stages (vs warm in git)"),
            value: after,
            baseline: Some(repo_warm),
            unit: "ms",
            target: Some(Target::RatioAtMost(TARGET_RATIO)),
        },
    ])
}

/// A copy of the project and its state directory.
struct Project {
    dir: PathBuf,
    state: PathBuf,
}

impl Project {
    /// Times a run in which every stage is cached. A warm run must leave the stat cache as
    /// it was (it read no file); the first run after a touch must rewrite it.
    fn run(&self, env: &Env, stderr: &Path, warm: bool) -> Result<Duration> {
        let stat_cache = self.state.join("stat-cache");
        let before = stamp(&stat_cache).context("before a run")?;
        let took = time(&mut murphy(env, &self.dir, &self.state, &["run"]), stderr)?;
        check_states(env, &self.dir, &self.state, "cached")?;
        let rewritten = stamp(&stat_cache).context("after a run")? != before;
        if warm && rewritten {
            bail!("a run that should have been warm rewrote the stat cache, so it hashed files");
        }
        if !warm && !rewritten {
            bail!("the run after a touch did not refresh the stat cache");
        }
        Ok(took)
    }
}

/// New mtime (and so ctime) on every input, the bytes unchanged: what `touch` does.
fn touch_all(dir: &Path) -> Result<()> {
    let now = SystemTime::now();
    for q in 0..STAGES {
        for entry in walk(&dir.join(format!("part{q}")))? {
            File::options()
                .write(true)
                .open(&entry)
                .and_then(|f| f.set_modified(now))
                .with_context(|| format!("cannot touch {}", entry.display()))?;
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// The real `git`, isolated from the machine's configuration.
pub(super) fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .status()
        .with_context(|| format!("cannot run git {args:?}"))?;
    if !status.success() {
        bail!("git {args:?} failed ({status})");
    }
    Ok(())
}
