//! The `Test` builder: a temp dir with a pipeline file, and the real `murphy` binary run in it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Deserialize;
use tempfile::TempDir;

/// One murphy command to run in a temp dir. `run` checks its exit status (0 unless `code`).
pub struct Test {
    tempdir: Rc<TempDir>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    code: i32,
}

impl Test {
    pub fn new() -> Test {
        let tempdir = tempfile::Builder::new()
            .prefix("murphy-test-")
            .tempdir()
            .expect("cannot create a temp dir");
        Test::in_dir(Rc::new(tempdir))
    }

    fn in_dir(tempdir: Rc<TempDir>) -> Test {
        Test {
            tempdir,
            args: Vec::new(),
            env: Vec::new(),
            code: 0,
        }
    }

    /// Writes `pipeline.yml`, unindented, so pipelines can be indented with the test code.
    pub fn pipeline(self, yaml: &str) -> Test {
        self.write("pipeline.yml", &unindent(yaml))
    }

    /// Writes a file under the temp dir, exactly as given.
    pub fn write(self, path: &str, contents: &str) -> Test {
        let path = self.tempdir.path().join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, contents).unwrap();
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Test {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The exit status murphy must end with.
    pub fn code(mut self, code: i32) -> Test {
        self.code = code;
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_murphy"));
        command
            .current_dir(self.tempdir.path())
            .args(&self.args)
            // This suite itself runs inside a murphy stage: nothing of that run may leak in.
            .env_remove("MURPHY_STATE_DIR")
            .env_remove("MURPHY_RUN_ID")
            .env_remove("MURPHY_STAGE")
            .env_remove("MURPHY_LOG")
            .env_remove("MURPHY_CRASH_AT")
            .env_remove("GITHUB_ACTIONS")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs murphy to the end and checks its exit status.
    pub fn run(self) -> Output {
        let output = self.command().output().expect("cannot start murphy");
        Output::check(&self, output)
    }

    /// Runs murphy to the end, which must be death by SIGKILL: a crash point
    /// (`MURPHY_CRASH_AT`) fired.
    pub fn run_killed(self) -> Output {
        let output = self.command().output().expect("cannot start murphy");
        Output::killed(&self, output)
    }

    /// Starts murphy and returns at once, to signal it while it runs.
    pub fn spawn(self) -> Running {
        let child = self.command().spawn().expect("cannot start murphy");
        Running {
            child: Some(child),
            test: self,
        }
    }
}

/// What a finished murphy command printed, and the temp dir it ran in.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    tempdir: Rc<TempDir>,
}

impl Output {
    fn check(test: &Test, output: std::process::Output) -> Output {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(test.code),
            "`murphy {}` ended with {}, expected exit status {}\n--- stdout:\n{stdout}--- stderr:\n{stderr}",
            test.args.join(" "),
            output.status,
            test.code,
        );
        Output {
            stdout,
            stderr,
            tempdir: test.tempdir.clone(),
        }
    }

    /// What a murphy that died by SIGKILL printed.
    fn killed(test: &Test, output: std::process::Output) -> Output {
        use std::os::unix::process::ExitStatusExt;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGKILL),
            "`murphy {}` ended with {}, expected death by SIGKILL\n--- stdout:\n{stdout}--- stderr:\n{stderr}",
            test.args.join(" "),
            output.status,
        );
        Output {
            stdout,
            stderr,
            tempdir: test.tempdir.clone(),
        }
    }

    /// Rewrites `pipeline.yml`, unindented like [`Test::pipeline`].
    pub fn pipeline(&self, yaml: &str) {
        self.write("pipeline.yml", &unindent(yaml));
    }

    /// Writes a file under the temp dir, exactly as given.
    pub fn write(&self, path: &str, contents: &str) {
        let path = self.file(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, contents).unwrap();
    }

    /// The lines in a file, 0 if it does not exist: how often a stage appended to a counter.
    pub fn count(&self, path: &str) -> usize {
        fs::read_to_string(self.file(path)).map_or(0, |text| text.lines().count())
    }

    /// The events of a run's journal, skipping a line torn by a kill.
    pub fn intact_journal(&self, run_id: &str) -> Vec<serde_json::Value> {
        self.read(&format!(".murphy/runs/{run_id}/journal.jsonl"))
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// `murphy runs --json`: every run, newest first.
    pub fn runs(&self) -> Vec<RunView> {
        parse_json(&self.murphy(["runs", "--json"]).run().stdout)
    }

    /// `murphy cache stats --json`.
    pub fn cache_stats(&self) -> CacheStats {
        parse_json(&self.murphy(["cache", "stats", "--json"]).run().stdout)
    }

    /// The temp dir murphy ran in (the pipeline's directory).
    pub fn path(&self) -> &Path {
        self.tempdir.path()
    }

    pub fn file(&self, path: &str) -> PathBuf {
        self.path().join(path)
    }

    pub fn read(&self, path: &str) -> String {
        let path = self.file(path);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// Another murphy command in the same temp dir.
    pub fn murphy<I, S>(&self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Test::in_dir(self.tempdir.clone()).args(args)
    }

    /// `murphy status --json` of the latest run.
    pub fn status(&self) -> RunView {
        parse_json(&self.murphy(["status", "--json"]).run().stdout)
    }

    /// The events of a run's journal, one JSON value per intact line.
    pub fn journal(&self, run_id: &str) -> Vec<serde_json::Value> {
        self.read(&format!(".murphy/runs/{run_id}/journal.jsonl"))
            .lines()
            .map(|line| serde_json::from_str(line).expect("a journal line is JSON"))
            .collect()
    }
}

/// A murphy command still running.
pub struct Running {
    child: Option<Child>,
    test: Test,
}

impl Running {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("murphy was already waited for")
    }

    /// Waits until the stage wrote a pid (a number and a newline) into `file`, and returns it.
    pub fn wait_for_pid(&mut self, file: &str) -> libc::pid_t {
        let path = self.path().join(file);
        let mut pid = None;
        self.wait_until(file, || {
            pid = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.strip_suffix('\n')?.parse().ok());
            pid.is_some()
        });
        pid.unwrap()
    }

    /// Polls until `done`, failing if murphy ends first. Only a guard against a hang: no
    /// test measures time with it.
    pub fn wait_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(30);
        while !done() {
            if let Some(status) = self.child().try_wait().unwrap() {
                panic!("murphy ended ({status}) before {what}");
            }
            assert!(Instant::now() < give_up, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn path(&self) -> &Path {
        self.test.tempdir.path()
    }

    /// The pid of the murphy process.
    pub fn pid(&self) -> libc::pid_t {
        let child = self.child.as_ref().expect("murphy was already waited for");
        libc::pid_t::try_from(child.id()).unwrap()
    }

    /// Another murphy command in the same temp dir, while this one runs.
    pub fn murphy<I, S>(&self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Test::in_dir(self.test.tempdir.clone()).args(args)
    }

    /// Waits for murphy to end, which must be death by SIGKILL.
    pub fn wait_killed(mut self) -> Output {
        let child = self.child.take().expect("murphy was already waited for");
        let output = child.wait_with_output().unwrap();
        Output::killed(&self.test, output)
    }

    pub fn signal(&mut self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child().id()).unwrap();
        // SAFETY: kill only sends a signal, to the murphy this test started.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "cannot signal murphy"
        );
    }

    /// Waits for murphy to end and checks its exit status.
    pub fn wait(mut self) -> Output {
        let child = self.child.take().expect("murphy was already waited for");
        let output = child.wait_with_output().unwrap();
        Output::check(&self.test, output)
    }
}

impl Drop for Running {
    /// A failed test must not leave murphy behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `murphy status --json`: a run replayed from its journal.
#[derive(Debug, Deserialize)]
pub struct RunView {
    pub run_id: String,
    pub pipeline: String,
    pub status: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub stages: Vec<StageView>,
}

impl RunView {
    pub fn stage(&self, name: &str) -> &StageView {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no stage `{name}` in {self:#?}"))
    }

    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }
}

#[derive(Debug, Deserialize)]
pub struct StageView {
    pub name: String,
    pub state: String,
    pub attempts: u32,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    /// Why it ran instead of being restored from a checkpoint.
    #[serde(default)]
    pub why: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub output_digest: Option<String>,
}

impl StageView {
    pub fn started(&self) -> Timestamp {
        self.started_at
            .unwrap_or_else(|| panic!("stage `{}` never started", self.name))
    }

    pub fn finished(&self) -> Timestamp {
        self.finished_at
            .unwrap_or_else(|| panic!("stage `{}` never finished", self.name))
    }

    pub fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or_default()
    }

    pub fn why(&self) -> &str {
        self.why.as_deref().unwrap_or_default()
    }
}

/// `murphy cache stats --json`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct CacheStats {
    pub objects: u64,
    pub bytes: u64,
    pub records: u64,
}

pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not the expected JSON ({e}):\n{text}"))
}

/// Asserts that a process has exited: no `/proc` entry, or a zombie (dead, merely not reaped
/// yet by an init that reaps lazily). A survivor is killed before the test fails.
pub fn assert_gone(pid: libc::pid_t) {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return;
    };
    // `pid (comm) state ...`; comm may hold spaces and parentheses, so split at the last `)`.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?");
    if state != "Z" {
        // SAFETY: kill only sends a signal, to a process this test's pipeline started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("process {pid} outlived murphy (state {state}): {stat}");
    }
}

/// Strips the indentation common to all lines, and the first line if it is empty.
fn unindent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    // The line holding the closing quote.
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}
