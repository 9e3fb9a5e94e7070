//! `history`: the dashboard's history reads with 10,000 runs recorded. One real run is made,
//! then copied under 10,000 ids over 2,000 commits; `murphy serve` answers "every run and
//! event of a commit" and the changes page from its SQLite index. The baseline is the same
//! question answered without the index: `murphy runs --json`, which replays every journal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{Env, Row, Target, TempDir, median, ms, murphy, time};

const RUNS: usize = 10_000;
const COMMITS: usize = 2_000;
const SAMPLES: usize = 15;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let dir = TempDir::new("history")?;
    let state = dir.path().join("state");
    std::fs::write(
        dir.path().join("pipeline.yml"),
        "version: 1\nname: history\nstages:\n  build:\n    run: echo built\n  test:\n    needs: [build]\n    run: echo tested\n",
    )?;
    // A repository, so the run records a commit.
    for args in [
        &["init", "-q"][..],
        &["add", "pipeline.yml"],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-qm",
            "bench",
        ],
    ] {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .status()
            .context("cannot run git")?;
        if !status.success() {
            bail!("git {args:?} failed");
        }
    }
    time(
        &mut murphy(env, dir.path(), &state, &["run"]),
        &dir.path().join("run.err"),
    )?;
    let runs = state.join("runs");
    let original = std::fs::read_dir(&runs)?
        .next()
        .context("the run left no record")??
        .path();
    let id = original
        .file_name()
        .and_then(|n| n.to_str())
        .context("a run id that is not UTF-8")?
        .to_owned();
    let meta = std::fs::read_to_string(original.join("meta.json"))?;
    let journal = std::fs::read_to_string(original.join("journal.jsonl"))?;
    let sha = |n: usize| format!("{:040x}", n + 1);
    eprintln!("xtask: recording {RUNS} runs");
    for n in 0..RUNS {
        // Ids sort by time: a day's worth of seconds apart, all after the real one.
        let copy = format!("20990101-{:06}.000-{n:08x}", n);
        let dir = runs.join(&copy);
        std::fs::create_dir_all(dir.join("logs"))?;
        let commit = format!("\"sha\":\"{}\"", sha(n % COMMITS));
        let meta = with_commit(&meta.replace(&id, &copy), &commit);
        std::fs::write(dir.join("meta.json"), meta)?;
        std::fs::write(dir.join("journal.jsonl"), journal.replace(&id, &copy))?;
    }

    let baseline = median(
        (0..3)
            .map(|_| {
                time(
                    &mut murphy(env, dir.path(), &state, &["runs", "--json"]),
                    &dir.path().join("runs.err"),
                )
            })
            .collect::<Result<_>>()?,
    );

    let rebuild = time(
        &mut murphy(env, dir.path(), &state, &["index", "rebuild"]),
        &dir.path().join("rebuild.err"),
    )?;

    let mut server = Server::start(env, dir.path(), &state)?;
    let commit = format!("/api/history?commit={}", sha(COMMITS / 2));
    let answer = server.get(&commit)?;
    let found = answer.matches("\"run_id\"").count();
    if found != RUNS / COMMITS {
        bail!(
            "the index found {found} runs of the commit, not {}",
            RUNS / COMMITS
        );
    }
    let history = server.median(&commit)?;
    let page = server.median("/")?;
    let durations = server.median("/api/history?stage=test")?;
    server.stop();

    Ok(vec![
        Row {
            name: format!("runs of one commit, {RUNS} runs (vs `runs --json`)"),
            value: ms(history),
            baseline: Some(ms(baseline)),
            unit: "ms",
            target: Some(Target::RatioAtMost(0.05)),
        },
        Row {
            name: format!("changes page, {RUNS} runs (vs `runs --json`)"),
            value: ms(page),
            baseline: Some(ms(baseline)),
            unit: "ms",
            target: Some(Target::RatioAtMost(0.5)),
        },
        Row {
            name: "a stage's last 100 durations".into(),
            value: ms(durations),
            baseline: None,
            unit: "ms",
            target: Some(Target::AtMost(100.0)),
        },
        Row {
            name: format!("index rebuild, {RUNS} runs"),
            value: ms(rebuild),
            baseline: Some(ms(baseline)),
            unit: "ms",
            target: None,
        },
    ])
}

/// The meta with its commit's sha replaced (the real run may have none: then one is added).
fn with_commit(meta: &str, commit: &str) -> String {
    if let Some(start) = meta.find("\"sha\":") {
        let end = meta[start + 6..]
            .find([',', '}'])
            .map_or(meta.len(), |e| start + 6 + e);
        format!("{}{commit}{}", &meta[..start], &meta[end..])
    } else {
        meta.to_owned()
    }
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(env: &Env, dir: &Path, state: &Path) -> Result<Server> {
        let mut child = murphy(env, dir, state, &["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start murphy serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("serving http://")
            .and_then(|a| a.strip_suffix('/'))
            .with_context(|| format!("murphy serve said {line:?}"))?
            .to_owned();
        Ok(Server { child, addr })
    }

    /// One GET, its body.
    fn get(&self, path: &str) -> Result<String> {
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        if !text.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {}", text.lines().next().unwrap_or_default());
        }
        Ok(text)
    }

    fn median(&self, path: &str) -> Result<Duration> {
        let mut samples = Vec::new();
        for _ in 0..SAMPLES {
            let start = Instant::now();
            self.get(path)?;
            samples.push(start.elapsed());
        }
        Ok(median(samples))
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
