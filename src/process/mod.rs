//! Runs one command in its own process group and makes sure nothing of it outlives it.
//!
//! A stage's command may start grandchildren (`sleep 300 &`). Killing the child alone leaves
//! them running, and a grandchild holding the output pipe would hang a reader that waits for
//! end of file. So: every command leads its own process group; stopping it means SIGTERM to
//! the group, a grace period, then SIGKILL; output is read line by line and reading stops a
//! short while after the command ended, whoever still holds the pipe.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::shell::Invocation;

mod spawn;

/// How long a process group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long output is still read after the command ended (from processes it left behind).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A line longer than this is cut into pieces, so a stage cannot make murphy buffer without end.
/// Secrets are masked before the cut, so one across it is masked too.
const MAX_LINE: usize = 64 * 1024;

/// Receives each output line (without its newline) besides the log, for `--verbose`.
pub type Echo = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Where a command's output goes: the stage log, and each line to `echo` as well.
///
/// The log file is made when the command first prints, or when [`Output::keep`] says the
/// attempt failed: a stage that succeeds silently costs no file. Making one can cost more
/// than running `true` (0.2 ms on an ext4 without a journal, which steps over recently
/// deleted inodes to find a free one), and most small steps (`mkdir`, `test -f`) print
/// nothing.
pub struct Output {
    log: Mutex<Log>,
    echo: Option<Echo>,
    warned: std::sync::atomic::AtomicBool,
}

/// The log file, or what waits to be written once it exists.
enum Log {
    Unmade { path: PathBuf, held: Vec<u8> },
    Made(std::fs::File),
}

impl Output {
    pub fn new(path: PathBuf, echo: Option<Echo>) -> Output {
        Output {
            log: Mutex::new(Log::Unmade {
                path,
                held: Vec::new(),
            }),
            echo,
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Writes one of murphy's own lines (`$ command`, a retry's header), secrets masked: to
    /// the echo now, to the log when it is made.
    pub fn line(&self, line: &[u8]) {
        self.write(&crate::secrets::redact_bytes(line), false);
    }

    /// Makes the log now, with the lines held for it: the attempt failed, and its log is
    /// what the user reads next.
    pub fn keep(&self) {
        self.write(b"", true);
    }

    /// Writes a line of the command's output, or a piece of a long one, whose secrets are
    /// masked already.
    fn masked(&self, line: &[u8]) {
        self.write(line, true);
    }

    fn write(&self, line: &[u8], make: bool) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let written = match &mut *log {
            Log::Unmade { held, .. } if !make => {
                held.extend_from_slice(line);
                Ok(())
            }
            Log::Unmade { path, held } => match open_log(path) {
                Ok(mut file) => {
                    let written = file.write_all(held).and_then(|()| file.write_all(line));
                    *log = Log::Made(file);
                    written
                }
                Err(err) => Err(io::Error::new(
                    err.kind(),
                    format!("cannot open {}: {err}", path.display()),
                )),
            },
            Log::Made(file) => file.write_all(line),
        };
        // A full disk must not stop the stage; the write error is reported once by tracing.
        if let Err(err) = written
            && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!("cannot write a stage log: {err}");
        }
        drop(log);
        if let Some(echo) = &self.echo
            && !line.is_empty()
        {
            echo(line.strip_suffix(b"\n").unwrap_or(line));
        }
    }
}

fn open_log(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// How a command ended.
#[derive(Debug)]
pub enum Ended {
    Exited(ExitStatus),
    TimedOut,
    Interrupted,
}

/// Runs `invocation` (from [`crate::shell::Shell::command`]) in `cwd` with exactly `env`,
/// until it exits, `deadline` passes, or `cancel` turns true. Output goes to `output` line by
/// line.
pub async fn run(
    invocation: &Invocation,
    cwd: &Path,
    env: &[(String, String)],
    output: Arc<Output>,
    deadline: Option<Instant>,
    cancel: &mut watch::Receiver<bool>,
) -> io::Result<Ended> {
    // One pipe for both streams, as a terminal has: the log keeps the order the command
    // wrote its lines in, and a stage costs one pipe and one reader instead of two.
    let (reader, writer) = std::io::pipe()?;
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())?;
    let mut child = match (
        spawn::spawn(&invocation.argv, cwd, env, &writer),
        &invocation.shell,
    ) {
        // A plain command whose program cannot be started: the shell says why, as it does
        // for any script (`sh: 1: carg: not found`, exit code 127).
        (Err(_), Some(shell)) => spawn::spawn(shell, cwd, env, &writer)?,
        (spawned, _) => spawned?,
    };
    // Until murphy's copy of the write end closes, the reader would never see the end of
    // the output.
    drop(writer);
    let pgid = child.pid();
    let mut reading = tokio::spawn(pump(reader, output));

    let until_deadline = async {
        match deadline {
            Some(at) => sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status?),
        () = until_deadline => {
            terminate(&mut child, pgid).await?;
            Ended::TimedOut
        }
        () = cancelled(cancel) => {
            terminate(&mut child, pgid).await?;
            Ended::Interrupted
        }
    };
    // Whatever the command left running in its group goes with it.
    stop_group(pgid).await;
    if timeout(DRAIN_GRACE, &mut reading).await.is_err() {
        reading.abort();
    }
    Ok(ended)
}

/// The cores murphy may use, read once a process: the standard library reads the cgroup's
/// quota files on every call.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Makes the calling thread (and the threads it starts) yield the cores to murphy's other
/// threads and to the commands it runs: `nice` 10 for this thread alone. It cannot be undone
/// without privileges, so only a thread made for the work calls it.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no failure; setpriority on our own thread id only lowers its priority,
    // and a failure leaves it as it was.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Resolves once `cancel` turns true; never, if its sender is gone without cancelling.
pub async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|&c| c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// SIGTERM to the group; if the child has not exited after the grace period, SIGKILL.
async fn terminate(child: &mut spawn::Child, pgid: libc::pid_t) -> io::Result<()> {
    signal_group(pgid, libc::SIGTERM);
    if timeout(KILL_GRACE, child.wait()).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
        child.wait().await?;
    }
    Ok(())
}

/// Ends every process left in the group: SIGTERM, up to the grace period, then SIGKILL.
async fn stop_group(pgid: libc::pid_t) {
    if !group_alive(pgid) {
        return;
    }
    tracing::debug!("process group {pgid} outlived its command; stopping it");
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + KILL_GRACE;
    while group_alive(pgid) && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    signal_group(pgid, libc::SIGKILL);
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: killpg only sends a signal; ESRCH (group gone) is the expected failure.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// Whether any process of the group still runs. Zombies do not count: they are dead, but
/// `kill(0)` finds them until their new parent (init, which may be slow or never reap) does.
fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 checks for existence only.
    if unsafe { libc::killpg(pgid, 0) } != 0 {
        return false;
    }
    // Without /proc (macOS) a zombie counts as alive: the group is then waited for until
    // the grace period ends, which is slower but never wrong.
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries
        .flatten()
        .filter_map(|entry| proc_stat(&entry.path()))
        .any(|(state, pgrp)| pgrp == pgid && state != 'Z')
}

/// A process's state letter and process group, from `/proc/PID/stat`.
fn proc_stat(dir: &Path) -> Option<(char, libc::pid_t)> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Kills what a dead murphy's stage left running, so it cannot write into the outputs of the
/// stage's next attempt. Such processes are found by the `MURPHY_RUN_ID` and `MURPHY_STAGE`
/// in their environment: a recorded process group id could have been reused since.
pub fn kill_leftovers(run_id: &str, stage: &str) -> usize {
    let run = format!("MURPHY_RUN_ID={run_id}");
    let stage = format!("MURPHY_STAGE={stage}");
    let me = std::process::id() as libc::pid_t;
    let killed: Vec<libc::pid_t> = (processes_with(&run, &stage).into_iter())
        .filter(|&pid| pid != me)
        .inspect(|&pid| {
            // SAFETY: sends a signal to a process we identified by its environment.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        })
        .collect();
    // SIGKILL is not instant: wait (briefly) until none of them can write anything more.
    let deadline = std::time::Instant::now() + KILL_GRACE;
    // Polled finely: a killed process is usually gone within a millisecond, and a resume
    // waits here before its first stage starts.
    while killed.iter().any(|&pid| running(pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    killed.len()
}

/// The processes whose environment holds both `run` and `stage` (`NAME=value`), read from
/// `/proc/PID/environ`.
#[cfg(target_os = "linux")]
fn processes_with(run: &str, stage: &str) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // One buffer for all: a /proc file says it is empty, so reading one whole grows a fresh
    // buffer from nothing, a read per doubling, for each of hundreds of processes.
    let mut environ = Vec::with_capacity(64 << 10);
    entries
        .flatten()
        .filter_map(|entry| {
            use std::io::Read;
            let pid = entry.file_name().to_str()?.parse::<libc::pid_t>().ok()?;
            environ.clear();
            std::fs::File::open(entry.path().join("environ"))
                .and_then(|mut file| file.read_to_end(&mut environ))
                .ok()?;
            let mut vars = environ.split(|&b| b == 0);
            let ours =
                vars.clone().any(|v| v == run.as_bytes()) && vars.any(|v| v == stage.as_bytes());
            ours.then_some(pid)
        })
        .collect()
}

/// Without /proc (macOS): `ps` shows each process's environment after its command (`e`).
/// A value with a space in it cannot be told apart there; run ids and stage names have none
/// that matter, as both words must match whole.
#[cfg(any(not(target_os = "linux"), test))]
fn processes_with_ps(run: &str, stage: &str) -> Vec<libc::pid_t> {
    let Ok(out) = std::process::Command::new("ps")
        .args(["axeww", "-o", "pid=", "-o", "command="])
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let pid = words.next()?.parse::<libc::pid_t>().ok()?;
            let words: Vec<&str> = words.collect();
            (words.contains(&run) && words.contains(&stage)).then_some(pid)
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn processes_with(run: &str, stage: &str) -> Vec<libc::pid_t> {
    processes_with_ps(run, stage)
}

/// Whether a process exists and is not a zombie (without /proc, whether it exists).
fn running(pid: libc::pid_t) -> bool {
    #[cfg(target_os = "linux")]
    return proc_stat(Path::new(&format!("/proc/{pid}"))).is_some_and(|(state, _)| state != 'Z');
    // SAFETY: signal 0 checks for existence only.
    #[cfg(not(target_os = "linux"))]
    return unsafe { libc::kill(pid, 0) } == 0;
}

/// Copies a pipe to `output` line by line until end of file. Masking is done on the stream,
/// before it is cut: a secret across the cut of a long line is masked too.
async fn pump(mut pipe: impl AsyncRead + Unpin, output: Arc<Output>) {
    let mut mask = crate::secrets::StreamMask::default();
    // The current line, masked, as far as it can be passed on.
    let mut line = Vec::with_capacity(8192);
    // On the heap: in the future's state it would be copied as the task is spawned.
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &chunk[..n];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            mask.finish(&rest[..=end], &mut line);
            output.masked(&line);
            line.clear();
            rest = &rest[end + 1..];
        }
        mask.push(rest, &mut line);
        if line.len() >= MAX_LINE {
            output.masked(&line);
            line.clear();
        }
    }
    mask.finish(&[], &mut line);
    if !line.is_empty() {
        line.push(b'\n');
        output.masked(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `ps` way (macOS's) finds what the /proc way (Linux's) finds.
    #[test]
    fn leftovers_are_found_by_their_environment_both_ways() {
        let run = format!("MURPHY_RUN_ID=test-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("MURPHY_RUN_ID", &run["MURPHY_RUN_ID=".len()..])
            .env("MURPHY_STAGE", "build")
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        // Until the child has exec'd `sleep`, its environment is still this process's.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut by_proc = processes_with(&run, "MURPHY_STAGE=build");
        while by_proc.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            by_proc = processes_with(&run, "MURPHY_STAGE=build");
        }
        let by_ps = processes_with_ps(&run, "MURPHY_STAGE=build");
        let other_stage = processes_with_ps(&run, "MURPHY_STAGE=test");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(by_proc, vec![pid]);
        assert_eq!(by_ps, vec![pid]);
        assert!(other_stage.is_empty(), "{other_stage:?}");
    }
}
