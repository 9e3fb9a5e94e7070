//! The shared store's cost, against a real S3 server (moto's `moto_server`) on loopback.
//!
//! - remote no-op: the `noop` project, fully cached with a warm stat cache, run with
//!   `MURPHY_STORE` set (both caches warm: the local checkpoints answer, so the store is
//!   only probed and asked whether it holds each record) against the same runs with local
//!   state only. Target: at most 10% slower.
//! - cold restore: a stage that writes 1,000 files of 200 KB is run once with the store,
//!   which uploads them; then a new runner (a fresh copy of the project, an empty state
//!   dir) runs it, restoring every file from the store, against `aws s3 sync` (pip `awscli`)
//!   of the same objects into an empty directory. Target: at least as fast.
//!
//! The server and the AWS CLI come from a venv of the bench's own, `target/bench-venv`,
//! made once (a minute or two, needs `python3` and a package index); it is not in the
//! default list of `cargo xtask bench` for that reason.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::noop::{self, SETTLE, check_states, stamp};
use super::{Env, Row, Target, TempDir, median, ms, murphy, quiet, time};

/// What the bench venv holds, pinned: a new pin makes a new venv. moto as the tests have it,
/// and the AWS CLI v1 that resolves beside it from the registry.
const PYTHON_PACKAGES: &[&str] = &["moto[server]==5.2.5", "awscli==1.46.3"];
const NOOP_WARM_UP: usize = 1;
const NOOP_MEASURED: usize = 7;
const RESTORE_WARM_UP: usize = 1;
const RESTORE_MEASURED: usize = 3;
const RESTORE_FILES: usize = 1000;
const RESTORE_FILE_BYTES: usize = 200 * 1024;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let venv = venv()?;
    let moto = Moto::start(&venv)?;
    let noop = remote_noop(env, &moto).context("remote no-op")?;
    let restore = cold_restore(env, &moto, &venv).context("cold restore")?;
    Ok(vec![noop, restore])
}

/// Row 1: warm cached runs with the store set against the same without it.
fn remote_noop(env: &Env, moto: &Moto) -> Result<Row> {
    let store = format!("{}/bench", moto.bucket("noop")?);
    let tmp = TempDir::new("remote-noop")?;
    let dir = tmp.path();
    noop::make_files(dir)?;
    let written = Instant::now();
    std::fs::write(dir.join("pipeline.yml"), noop::pipeline())
        .context("cannot write pipeline.yml")?;
    let state = dir.join("state");
    let stat_cache = state.join("stat-cache");
    let stderr = dir.join("stderr.txt");

    // The first run, with the store, makes the checkpoints, shares them and fills the stat
    // cache (the files being old enough): from then on both caches are warm.
    std::thread::sleep(SETTLE.saturating_sub(written.elapsed()));
    let mut first = murphy(env, dir, &state, &["run"]);
    time(moto.env(&mut first, Some(&store)), &stderr).context("the first run")?;
    check_states(env, dir, &state, "succeeded")?;

    let warm = |with_store: bool| -> Result<Duration> {
        let before = stamp(&stat_cache).context("before a warm run")?;
        let mut cmd = murphy(env, dir, &state, &["run"]);
        let took = time(moto.env(&mut cmd, with_store.then_some(&store)), &stderr)?;
        check_states(env, dir, &state, "cached")?;
        if stamp(&stat_cache).context("after a warm run")? != before {
            bail!("a warm run rewrote the stat cache, so it hashed files: it was not warm");
        }
        Ok(took)
    };
    let mut remote = Vec::new();
    let mut local = Vec::new();
    // Interleaved, each round starting with the other one, so both see the same noise.
    for round in 0..NOOP_WARM_UP + NOOP_MEASURED {
        for k in 0..2 {
            let with_store = (round + k) % 2 == 0;
            let took = warm(with_store).with_context(|| {
                format!(
                    "warm run {}",
                    if with_store {
                        "with the store"
                    } else {
                        "local"
                    }
                )
            })?;
            if round >= NOOP_WARM_UP {
                if with_store { &mut remote } else { &mut local }.push(took);
            }
        }
    }
    Ok(Row {
        name: format!(
            "remote: cached run, {} inputs, warm caches, with MURPHY_STORE (vs local state only)",
            noop::FILES
        ),
        value: ms(median(remote)),
        baseline: Some(ms(median(local))),
        unit: "ms",
        target: Some(Target::RatioAtMost(1.10)),
    })
}

/// Row 2: a new runner restoring 1,000 objects against `aws s3 sync` of the same.
fn cold_restore(env: &Env, moto: &Moto, venv: &Path) -> Result<Row> {
    let bucket = moto.bucket("restore")?;
    let store = format!("{bucket}/bench");
    let tmp = TempDir::new("remote-restore")?;
    let stderr = tmp.path().join("stderr.txt");
    let source = tmp.path().join("source");
    std::fs::create_dir(&source).context("cannot create the project dir")?;
    std::fs::write(source.join("pipeline.yml"), restore_pipeline())
        .context("cannot write pipeline.yml")?;

    // The first runner builds and shares.
    let first = tmp.path().join("first");
    copy_project(&source, &first)?;
    let state = first.join("state");
    let mut cmd = murphy(env, &first, &state, &["run"]);
    time(moto.env(&mut cmd, Some(&store)), &stderr).context("the run that uploads")?;
    if !first.join("ran.marker").is_file() {
        bail!("the first run did not run the stage");
    }
    check_outputs(&first.join("out"))?;
    std::fs::remove_dir_all(&first).context("cannot remove the first runner")?;

    let new_runner = |round: usize| -> Result<Duration> {
        let work = tmp.path().join(format!("runner{round}"));
        copy_project(&source, &work)?;
        let state = work.join("state");
        let mut cmd = murphy(env, &work, &state, &["run"]);
        let took = time(moto.env(&mut cmd, Some(&store)), &stderr)?;
        if work.join("ran.marker").exists() {
            bail!("the new runner ran the stage instead of restoring it");
        }
        check_outputs(&work.join("out"))?;
        let status = murphy(env, &work, &state, &["status", "--json"])
            .output()
            .context("cannot run murphy status")?;
        let text = String::from_utf8_lossy(&status.stdout);
        if !text.contains("\"cached\"") {
            bail!("the new runner's stage is not `cached`: {text}");
        }
        std::fs::remove_dir_all(&work).context("cannot remove a runner")?;
        Ok(took)
    };
    let sync = |round: usize| -> Result<Duration> {
        let into = tmp.path().join(format!("sync{round}"));
        std::fs::create_dir(&into).context("cannot create the sync dir")?;
        let mut cmd = Command::new(venv.join("bin/aws"));
        cmd.args(["s3", "sync", "--only-show-errors", "--endpoint-url"])
            .arg(moto.endpoint())
            .arg(format!("{bucket}/bench/checkpoints/objects"))
            .arg(&into);
        quiet(&mut cmd, tmp.path());
        let took = time(moto.env(&mut cmd, None), &stderr)?;
        let got = count_files(&into)?;
        if got != (RESTORE_FILES, (RESTORE_FILES * RESTORE_FILE_BYTES) as u64) {
            bail!("`aws s3 sync` brought {got:?} (files, bytes), not {RESTORE_FILES} files");
        }
        std::fs::remove_dir_all(&into).context("cannot remove the sync dir")?;
        Ok(took)
    };

    let mut restored = Vec::new();
    let mut synced = Vec::new();
    for round in 0..RESTORE_WARM_UP + RESTORE_MEASURED {
        for k in 0..2 {
            let murphy_first = (round + k) % 2 == 0;
            let took = if murphy_first {
                new_runner(round).context("new runner")?
            } else {
                sync(round).context("aws s3 sync")?
            };
            if round >= RESTORE_WARM_UP {
                if murphy_first {
                    &mut restored
                } else {
                    &mut synced
                }
                .push(took);
            }
        }
    }
    Ok(Row {
        name: format!(
            "remote: new runner restores {RESTORE_FILES} objects of {} KiB (vs aws s3 sync)",
            RESTORE_FILE_BYTES / 1024
        ),
        value: ms(median(restored)),
        baseline: Some(ms(median(synced))),
        unit: "ms",
        target: Some(Target::RatioAtMost(1.0)),
    })
}

/// One stage that writes 1,000 files of random bytes (`split` of one `head`, so making them
/// costs one process) and a marker outside its outputs that shows it ran.
fn restore_pipeline() -> String {
    let total = RESTORE_FILES * RESTORE_FILE_BYTES;
    format!(
        "version: 1\n\
         stages:\n  \
           blobs:\n    \
             outputs: [\"out/**\"]\n    \
             run:\n      \
               - mkdir -p out && echo ran > ran.marker\n      \
               - head -c {total} /dev/urandom | split -b {RESTORE_FILE_BYTES} -a 4 -d - out/f\n"
    )
}

/// A new runner's checkout: the project's files, no state and no outputs.
fn copy_project(source: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir(to).with_context(|| format!("cannot create {}", to.display()))?;
    std::fs::copy(source.join("pipeline.yml"), to.join("pipeline.yml"))
        .with_context(|| format!("cannot copy the project into {}", to.display()))?;
    Ok(())
}

/// Fails unless `out` holds all 1,000 files of 200 KB.
fn check_outputs(out: &Path) -> Result<()> {
    let got = count_files(out)?;
    if got != (RESTORE_FILES, (RESTORE_FILES * RESTORE_FILE_BYTES) as u64) {
        bail!(
            "{} holds {got:?} (files, bytes), not {RESTORE_FILES} files of {RESTORE_FILE_BYTES} bytes",
            out.display()
        );
    }
    Ok(())
}

/// How many regular files are under `dir`, and their bytes together.
fn count_files(dir: &Path) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let kind = entry.file_type().context("cannot stat a file")?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                files += 1;
                bytes += entry.metadata().context("cannot stat a file")?.len();
            }
        }
    }
    Ok((files, bytes))
}

/// `target/bench-venv` with [`PYTHON_PACKAGES`], made once; a venv whose making was cut
/// short has no `bench-ready` marker (written last) and is made again.
fn venv() -> Result<PathBuf> {
    let venv = crate::workspace_root().join("target/bench-venv");
    let ready = venv.join("bench-ready");
    let wanted = PYTHON_PACKAGES.join("\n") + "\n";
    if std::fs::read_to_string(&ready).is_ok_and(|have| have == wanted) {
        return Ok(venv);
    }
    eprintln!(
        "xtask: making {} ({})",
        venv.display(),
        PYTHON_PACKAGES.join(", ")
    );
    match std::fs::remove_dir_all(&venv) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", venv.display())),
    }
    setup_step(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 with its venv module (Debian: apt-get install python3-venv)",
    )?;
    setup_step(
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_PACKAGES),
        "a reachable Python package index",
    )?;
    let mut marker = std::fs::File::create(&ready)
        .with_context(|| format!("cannot create {}", ready.display()))?;
    std::io::Write::write_all(&mut marker, wanted.as_bytes())
        .and_then(|()| marker.sync_all())
        .with_context(|| format!("cannot write {}", ready.display()))?;
    Ok(venv)
}

fn setup_step(command: &mut Command, needs: &str) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {command:?} (the bench needs {needs})"))?;
    if !output.status.success() {
        bail!(
            "{command:?} ended with {} (the bench needs {needs})\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// `moto_server` on a free port of 127.0.0.1, in a process group of its own that is
/// killed when this is dropped.
struct Moto {
    child: Child,
    port: u16,
    venv: PathBuf,
    log: PathBuf,
    /// Where the AWS CLI looks for config and credentials: empty, so that the caller's
    /// `~/.aws` changes nothing.
    home: TempDir,
}

impl Moto {
    fn start(venv: &Path) -> Result<Moto> {
        let home = TempDir::new("moto")?;
        let log = home.path().join("moto.log");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free port on 127.0.0.1")?
            .port();
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("cannot open the moto log")?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .context("cannot start the bench venv's moto_server")?;
        let mut moto = Moto {
            child,
            port,
            venv: venv.to_path_buf(),
            log,
            home,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = moto.child.try_wait().context("cannot wait for moto")? {
                bail!("moto_server ended ({status}):\n{}", moto.log());
            }
            if Instant::now() > deadline {
                bail!("moto_server did not listen within 30 s:\n{}", moto.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(moto)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes a bucket with boto3 from the venv and returns its `s3://` URL.
    fn bucket(&self, name: &str) -> Result<String> {
        let mut cmd = Command::new(self.venv.join("bin/python"));
        cmd.arg("-c")
            .arg(
                "import sys, boto3\n\
                 boto3.client('s3', endpoint_url=sys.argv[1])\
                 .create_bucket(Bucket=sys.argv[2])",
            )
            .arg(self.endpoint())
            .arg(name);
        let stderr = self.home.path().join("bucket.txt");
        time(self.env(&mut cmd, None), &stderr)
            .with_context(|| format!("cannot create bucket {name}:\n{}", self.log()))?;
        Ok(format!("s3://{name}"))
    }

    /// Points `cmd` (murphy, the AWS CLI or boto3) at this server, and sets `MURPHY_STORE`
    /// to `store` or removes it.
    fn env<'a>(&self, cmd: &'a mut Command, store: Option<&String>) -> &'a mut Command {
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_CONFIG_FILE", self.home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.path().join("credentials"),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("MURPHY_STORE_KEY")
            .env_remove("MURPHY_STORE_RETRY_TIMEOUT");
        match store {
            Some(url) => cmd.env("MURPHY_STORE", url),
            None => cmd.env_remove("MURPHY_STORE"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The whole group: the server and anything it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
