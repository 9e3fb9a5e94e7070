//! Tag-triggered publishing: a real pypiserver, a small HTTP server that fails on request,
//! kill -9 in the middle of a release, secrets, gates, the outbox and git-pages.
//!
//! Every server listens on 127.0.0.1 only and stops when its test ends.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{Output, Test, answer, git, parse_json, python_venv, read_request, unindent};

const WHEEL: &str = "dist/demo-1.0.0-py3-none-any.whl";
const SDIST: &str = "dist/demo-1.0.0.tar.gz";
const TOKEN: &str = "s3cret-token";

/// The stage every release here needs: it makes a wheel and an sdist, and counts its runs.
const BUILD: &str = "  build:
    run:
      - echo built >> build.count
      - mkdir -p dist
      - echo 'wheel of demo 1.0.0' > dist/demo-1.0.0-py3-none-any.whl
      - echo 'sdist of demo 1.0.0' > dist/demo-1.0.0.tar.gz
    outputs: [dist]
";

/// A pipeline from `yaml`: unindented, `  BUILD` replaced by the build stage, `PORT` by
/// `port`.
fn release_pipeline(yaml: &str, port: u16) -> String {
    unindent(yaml)
        .replace("  BUILD\n", BUILD)
        .replace("PORT", &port.to_string())
}

/// A repository holding `pipeline`, its HEAD tagged `v1.0.0`.
fn tagged(pipeline: &str) -> Test {
    Test::new()
        .git_init()
        .write("pipeline.yml", pipeline)
        .write(".gitignore", "/.murphy/\n/dist/\n/*.count\n")
        .commit("demo 1.0.0")
        .git(["tag", "v1.0.0"])
}

/// Writes `.murphy/secrets.yml` with `mode`.
fn secrets_file(test: Test, text: &str, mode: u32) -> Test {
    let test = test.write(".murphy/secrets.yml", text);
    let path = test.path().join(".murphy/secrets.yml");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    test
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn file_sha256(out: &Output, path: &str) -> String {
    sha256(&fs::read(out.file(path)).unwrap())
}

/// `murphy status --json` of the latest run, as JSON (its `published` list included).
fn status_json(out: &Output) -> Value {
    parse_json(&out.murphy(["status", "--json"]).run().stdout)
}

/// The first line of `text` holding each of `parts`, in this order; the test fails without
/// one. Messages name a target by its kind first (`http`, `pypi`, `git-pages`), then maybe
/// where it publishes: tests look for the parts that matter.
fn line_with<'a>(text: &'a str, parts: &[&str]) -> &'a str {
    text.lines()
        .find(|line| {
            let mut rest = *line;
            parts.iter().all(|part| match rest.find(part) {
                Some(i) => {
                    rest = &rest[i + part.len()..];
                    true
                }
                None => false,
            })
        })
        .unwrap_or_else(|| panic!("no line holds {parts:?} in:\n{text}"))
}

/// The latest run's publications: (target kind, file, outcome), in the order confirmed.
fn published(out: &Output) -> Vec<(String, String, String)> {
    let status = status_json(out);
    status["published"]
        .as_array()
        .unwrap_or_else(|| panic!("no `published` in {status:#}"))
        .iter()
        .map(|p| {
            let field = |k: &str| p[k].as_str().unwrap().to_owned();
            let target = field("target");
            let kind = target.split([' ', ':', '#']).next().unwrap().to_owned();
            (kind, field("file"), field("outcome"))
        })
        .collect()
}

fn triple(target: &str, file: &str, outcome: &str) -> (String, String, String) {
    (target.into(), file.into(), outcome.into())
}

/// A port nobody listens on (bound and released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------
// A small HTTP/1.1 server that stores files and misbehaves on request

/// What the server does wrong. For requests of files (paths not ending in `/`, so never the
/// preflight's HEAD of the base URL): first `unavailable` 503s, then `resets`. Then, for PUTs:
/// refusals, lost answers or held answers.
#[derive(Default)]
struct Faults {
    /// Answer `503` with `Retry-After: 0` to the next N file requests.
    unavailable: usize,
    /// Then close the next N file requests' connections without answering.
    resets: usize,
    /// Store the next N PUTs, then close the connection without answering.
    lost_answers: usize,
    /// Answer `403` to every PUT, quoting the `Authorization` header it got.
    forbid_puts: bool,
    /// Store each PUT, then hold its answer while this stays true.
    hold_puts: bool,
    /// Do not say a stored file's SHA-256 on HEAD (murphy must read it back with GET).
    no_checksum: bool,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Faults>,
    files: Mutex<HashMap<String, Vec<u8>>>,
    /// PUT requests received, per path.
    puts: Mutex<HashMap<String, usize>>,
    /// POST requests received: (path, body).
    posts: Mutex<Vec<(String, String)>>,
    stop: AtomicBool,
}

struct Server {
    port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(faults: Faults) -> Server {
        Server::on(0, faults)
    }

    /// Listens on `port` (0: any free one), one thread per connection.
    fn on(port: u16, faults: Faults) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("cannot listen");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            faults: Mutex::new(faults),
            ..Shared::default()
        });
        let accepting = shared.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let shared = accepting.clone();
                    std::thread::spawn(move || serve(stream, &shared));
                }
            }
        });
        Server {
            port,
            shared,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.shared.faults.lock().unwrap()
    }

    fn puts(&self, path: &str) -> usize {
        self.shared
            .puts
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn total_puts(&self) -> usize {
        self.shared.puts.lock().unwrap().values().sum()
    }

    fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.shared.files.lock().unwrap().get(path).cloned()
    }

    fn put_file(&self, path: &str, bytes: &[u8]) {
        self.shared
            .files
            .lock()
            .unwrap()
            .insert(path.to_owned(), bytes.to_owned());
    }

    fn posts(&self) -> Vec<(String, String)> {
        self.shared.posts.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.faults().hold_puts = false;
        // Wakes the accepting thread, which then sees `stop` and closes the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(request) = read_request(&stream) else {
        return;
    };
    let path = request.path.clone();
    if !path.ends_with('/') && request.method != "POST" {
        let mut faults = shared.faults.lock().unwrap();
        if faults.unavailable > 0 {
            faults.unavailable -= 1;
            drop(faults);
            let retry = [("Retry-After", "0".to_owned())];
            return answer(
                stream,
                "503 Service Unavailable",
                &retry,
                b"busy, come back",
            );
        }
        if faults.resets > 0 {
            faults.resets -= 1;
            return; // the connection closes unanswered
        }
    }
    match request.method.as_str() {
        "HEAD" | "GET" => {
            let Some(bytes) = shared.files.lock().unwrap().get(&path).cloned() else {
                return answer(stream, "404 Not Found", &[], b"no such file");
            };
            let mut headers = vec![("Content-Length", bytes.len().to_string())];
            if !shared.faults.lock().unwrap().no_checksum {
                headers.push(("x-checksum-sha256", sha256(&bytes)));
            }
            let body: &[u8] = if request.method == "GET" { &bytes } else { &[] };
            answer(stream, "200 OK", &headers, body);
        }
        "PUT" => {
            *shared.puts.lock().unwrap().entry(path.clone()).or_default() += 1;
            if shared.faults.lock().unwrap().forbid_puts {
                let why = format!("token lacks write scope ({})", request.authorization);
                return answer(stream, "403 Forbidden", &[], why.as_bytes());
            }
            shared.files.lock().unwrap().insert(path, request.body);
            {
                let mut faults = shared.faults.lock().unwrap();
                if faults.lost_answers > 0 {
                    faults.lost_answers -= 1;
                    return;
                }
            }
            // Held at most ten seconds: the server never outlives its test by much.
            for _ in 0..1000 {
                if !shared.faults.lock().unwrap().hold_puts || shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            answer(stream, "201 Created", &[], b"");
        }
        "POST" => {
            let body = String::from_utf8_lossy(&request.body).into_owned();
            shared.posts.lock().unwrap().push((path.clone(), body));
            if path == "/hook" {
                answer(stream, "200 OK", &[], b"thanks");
            } else {
                answer(stream, "404 Not Found", &[], b"no such hook");
            }
        }
        _ => answer(stream, "405 Method Not Allowed", &[], b""),
    }
}

// ---------------------------------------------------------------------------------------
// A real pypiserver

/// `pypi-server` on a free port, user `alice` with password [`TOKEN`], uploads needing it.
struct PyPi {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PyPi {
    fn start() -> PyPi {
        let dir = tempfile::Builder::new()
            .prefix("murphy-pypi-")
            .tempdir()
            .unwrap();
        let packages = dir.path().join("packages");
        fs::create_dir(&packages).unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let venv = python_venv();
        let made = Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(
                "import sys\nfrom passlib.apache import HtpasswdFile\n\
                 h = HtpasswdFile(sys.argv[1], new=True)\n\
                 h.set_password('alice', sys.argv[2])\nh.save()",
            )
            .arg(&htpasswd)
            .arg(TOKEN)
            .status()
            .expect("cannot run the test venv's python");
        assert!(made.success(), "cannot write the htpasswd file");
        let port = free_port();
        let log = fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(venv.join("bin/pypi-server"))
            .args([
                "run",
                "-v",
                "-p",
                &port.to_string(),
                "-i",
                "127.0.0.1",
                "-P",
            ])
            .arg(&htpasswd)
            .args(["-a", "update"])
            .arg(&packages)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot start the test venv's pypi-server");
        let mut server = PyPi { child, port, dir };
        server.wait_until_ready();
        server
    }

    /// Polls `GET /simple/` until it answers 200 (at most 10 s).
    fn wait_until_ready(&mut self) {
        for _ in 0..500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("pypi-server ended ({status}):\n{}", self.log());
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let request = format!(
                    "GET /simple/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
                    self.port
                );
                let mut head = [0u8; 12];
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_exact(&mut head).is_ok()
                    && head.ends_with(b" 200")
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pypi-server never answered:\n{}", self.log());
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn packages(&self) -> PathBuf {
        self.dir.path().join("packages")
    }

    /// The files the server holds, sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.packages())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// How many times the server logged storing `file`.
    fn stored(&self, file: &str) -> usize {
        self.log().matches(&format!("stored '{file}'")).count()
    }
}

impl Drop for PyPi {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: killpg only sends a signal, to the process group this test started.
        unsafe { libc::killpg(pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

const PYPI_RELEASE: &str = "
    version: 1
    name: demo
    secrets: [PYPI_TOKEN]
    stages:
      BUILD
      release:
        needs: [build]
        publish:
          - pypi:
              files: ['dist/*.whl', 'dist/*.tar.gz']
              repository_url: http://127.0.0.1:PORT/
              username: alice
              password: PYPI_TOKEN
";

// ---------------------------------------------------------------------------------------
// 1. A real pypiserver

#[test]
fn pypi_release_uploads_each_file_once_and_a_rerun_uploads_nothing() {
    let pypi = PyPi::start();
    let test = tagged(&release_pipeline(PYPI_RELEASE, pypi.port));
    let test = secrets_file(test, &format!("PYPI_TOKEN: {TOKEN}\n"), 0o600);
    let out = test.args(["run", "--trigger", "tag"]).run();
    let url = pypi.url();
    line_with(
        &out.stderr,
        &[
            "preflight: release pypi",
            &format!("{url} reachable, credentials accepted"),
        ],
    );
    line_with(
        &out.stderr,
        &["release pypi", &format!("`{WHEEL}` published")],
    );
    line_with(
        &out.stderr,
        &["release pypi", &format!("`{SDIST}` published")],
    );
    assert_eq!(
        pypi.files(),
        ["demo-1.0.0-py3-none-any.whl", "demo-1.0.0.tar.gz"]
    );
    for file in [WHEEL, SDIST] {
        let name = Path::new(file).file_name().unwrap();
        assert_eq!(
            fs::read(pypi.packages().join(name)).unwrap(),
            fs::read(out.file(file)).unwrap(),
            "{file} arrived byte for byte"
        );
    }
    assert_eq!(
        published(&out),
        [
            triple("pypi", WHEEL, "uploaded"),
            triple("pypi", SDIST, "uploaded")
        ]
    );
    let status = status_json(&out);
    assert_eq!(status["published"][0]["digest"], file_sha256(&out, WHEEL));
    assert_eq!(status["published"][1]["digest"], file_sha256(&out, SDIST));

    // The finished release once more: the build is cached, the index has both: no upload.
    let again = out.murphy(["run", "--trigger", "tag"]).run();
    for file in [WHEEL, SDIST] {
        let line = format!("`{file}` already there (same bytes)");
        line_with(&again.stderr, &["release pypi", &line]);
    }
    assert_eq!(out.count("build.count"), 1);
    assert_eq!(
        pypi.files(),
        ["demo-1.0.0-py3-none-any.whl", "demo-1.0.0.tar.gz"]
    );
    assert_eq!(
        (
            pypi.stored("demo-1.0.0-py3-none-any.whl"),
            pypi.stored("demo-1.0.0.tar.gz")
        ),
        (1, 1),
        "each file was stored once:\n{}",
        pypi.log()
    );
    assert_eq!(
        published(&out),
        [
            triple("pypi", WHEEL, "already_present"),
            triple("pypi", SDIST, "already_present")
        ]
    );
}

#[test]
fn show_json_lists_the_publications_of_a_release() {
    let server = Server::start(Faults::default());
    let out = tagged(&release_pipeline(HTTP_RELEASE, server.port))
        .args(["run", "--trigger", "tag"])
        .run();
    let show = out.show();
    let files: Vec<&str> = show["published"]
        .as_array()
        .unwrap_or_else(|| panic!("no `published` in {show:#}"))
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, [WHEEL, SDIST]);
}

// ---------------------------------------------------------------------------------------
// 2. Faults on the way: 503, resets, lost answers

const HTTP_RELEASE: &str = "
    version: 1
    name: demo
    stages:
      BUILD
      release:
        needs: [build]
        retry: {attempts: 6, delay: 10ms}
        publish:
          - http: {files: ['dist/*'], url: 'http://127.0.0.1:PORT/files/{name}/{version}/{file}'}
";

fn at(file: &str) -> String {
    format!(
        "/files/demo/1.0.0/{}",
        Path::new(file).file_name().unwrap().to_string_lossy()
    )
}

#[test]
fn http_release_rides_out_503s_and_resets_with_one_put_per_file() {
    let server = Server::start(Faults {
        unavailable: 2,
        resets: 2,
        ..Faults::default()
    });
    let out = tagged(&release_pipeline(HTTP_RELEASE, server.port))
        .args(["run", "--trigger", "tag"])
        .run();
    let faults = server.faults();
    assert_eq!(
        (faults.unavailable, faults.resets),
        (0, 0),
        "every fault was met"
    );
    drop(faults);
    for file in [WHEEL, SDIST] {
        assert_eq!(server.puts(&at(file)), 1, "{file}");
        assert_eq!(
            server.file(&at(file)).unwrap(),
            fs::read(out.file(file)).unwrap()
        );
    }
    assert_eq!(server.total_puts(), 2);
    assert_eq!(
        published(&out),
        [
            triple("http", WHEEL, "uploaded"),
            triple("http", SDIST, "uploaded")
        ]
    );
}

#[test]
fn an_upload_whose_answer_was_lost_is_confirmed_not_sent_again() {
    let server = Server::start(Faults {
        lost_answers: 1,
        ..Faults::default()
    });
    let out = tagged(&release_pipeline(HTTP_RELEASE, server.port))
        .args(["run", "--trigger", "tag"])
        .run();
    // The wheel landed, its answer did not: the retry's HEAD finds the same bytes.
    assert_eq!((server.puts(&at(WHEEL)), server.puts(&at(SDIST))), (1, 1));
    assert_eq!(
        published(&out),
        [
            triple("http", WHEEL, "already_present"),
            triple("http", SDIST, "uploaded")
        ]
    );
}

#[test]
fn faults_beyond_the_retry_limit_fail_the_release_naming_the_last_answer() {
    let server = Server::start(Faults {
        unavailable: 100,
        ..Faults::default()
    });
    let pipeline =
        release_pipeline(HTTP_RELEASE, server.port).replace("attempts: 6", "attempts: 3");
    let out = tagged(&pipeline)
        .args(["run", "--trigger", "tag"])
        .code(1)
        .run();
    line_with(
        &out.stderr,
        &[
            "release failed (http",
            &format!(
                "`{WHEEL}`: the server answered 503 Service Unavailable (gave up after 3 attempts)"
            ),
        ],
    );
    assert_eq!(
        server.faults().unavailable,
        97,
        "three attempts, one HEAD each"
    );
    assert_eq!(server.total_puts(), 0);
    assert!(published(&out).is_empty());
}

// ---------------------------------------------------------------------------------------
// 3. kill -9 in the middle of a release, then `murphy resume`

#[test]
fn killed_right_after_a_publication_resume_uploads_only_the_rest() {
    let server = Server::start(Faults::default());
    let killed = tagged(&release_pipeline(HTTP_RELEASE, server.port))
        .args(["run", "--trigger", "tag"])
        .env("MURPHY_CRASH_AT", &format!("published:{WHEEL}"))
        .run_killed();
    assert_eq!((server.puts(&at(WHEEL)), server.puts(&at(SDIST))), (1, 0));
    assert_eq!(killed.status().status, "killed");

    let resumed = killed.murphy(["resume"]).run();
    let line = format!("`{WHEEL}` was published before the run was resumed");
    line_with(&resumed.stderr, &["release http", &line]);
    assert_eq!((server.puts(&at(WHEEL)), server.puts(&at(SDIST))), (1, 1));
    assert_eq!(resumed.status().status, "succeeded");
    assert_eq!(
        published(&resumed),
        [
            triple("http", WHEEL, "uploaded"),
            triple("http", SDIST, "uploaded")
        ]
    );
    assert_eq!(resumed.runs().len(), 1, "the resume continued the same run");
}

#[test]
fn killed_from_outside_mid_upload_resume_confirms_instead_of_uploading_again() {
    let server = Server::start(Faults {
        hold_puts: true,
        ..Faults::default()
    });
    let mut murphy = tagged(&release_pipeline(HTTP_RELEASE, server.port))
        .args(["run", "--trigger", "tag"])
        .spawn();
    // The wheel is stored, its answer held: murphy cannot know it landed.
    murphy.wait_until("the wheel is stored", || server.file(&at(WHEEL)).is_some());
    murphy.signal(libc::SIGKILL);
    let killed = murphy.wait_killed();
    server.faults().hold_puts = false;
    assert!(published(&killed).is_empty());

    killed.murphy(["resume"]).run();
    assert_eq!((server.puts(&at(WHEEL)), server.puts(&at(SDIST))), (1, 1));
    assert_eq!(
        published(&killed),
        [
            triple("http", WHEEL, "already_present"),
            triple("http", SDIST, "uploaded")
        ]
    );
}

#[test]
fn killed_right_after_a_pypi_publication_resume_stores_each_file_once() {
    let pypi = PyPi::start();
    // The secret declared by the stage alone: the resumed run must load it again.
    let pipeline = release_pipeline(PYPI_RELEASE, pypi.port)
        .replace("secrets: [PYPI_TOKEN]\n", "")
        .replace(
            "    publish:\n",
            "    secrets: [PYPI_TOKEN]\n    publish:\n",
        );
    let killed = tagged(&pipeline)
        .args(["run", "--trigger", "tag"])
        .env("PYPI_TOKEN", TOKEN)
        .env("MURPHY_CRASH_AT", &format!("published:{WHEEL}"))
        .run_killed();
    assert_eq!(pypi.files(), ["demo-1.0.0-py3-none-any.whl"]);
    killed.murphy(["resume"]).env("PYPI_TOKEN", TOKEN).run();
    assert_eq!(
        pypi.files(),
        ["demo-1.0.0-py3-none-any.whl", "demo-1.0.0.tar.gz"]
    );
    assert_eq!(
        (
            pypi.stored("demo-1.0.0-py3-none-any.whl"),
            pypi.stored("demo-1.0.0.tar.gz")
        ),
        (1, 1),
        "{}",
        pypi.log()
    );
}

// ---------------------------------------------------------------------------------------
// 4. Never twice, never over other bytes

#[test]
fn rerunning_a_finished_http_release_puts_nothing() {
    let server = Server::start(Faults::default());
    let out = tagged(&release_pipeline(HTTP_RELEASE, server.port))
        .args(["run", "--trigger", "tag"])
        .run();
    assert_eq!(server.total_puts(), 2);
    let again = out.murphy(["run", "--trigger", "tag"]).run();
    assert_eq!(server.total_puts(), 2, "no new PUT");
    let line = format!("`{SDIST}` already there (same bytes)");
    line_with(&again.stderr, &["release http", &line]);
    assert_eq!(
        published(&out),
        [
            triple("http", WHEEL, "already_present"),
            triple("http", SDIST, "already_present")
        ]
    );
}

#[test]
fn a_file_published_with_other_bytes_is_an_error_and_never_overwritten() {
    // Without a checksum header, murphy reads the file back to compare.
    let server = Server::start(Faults {
        no_checksum: true,
        ..Faults::default()
    });
    server.put_file(&at(SDIST), b"somebody else's sdist\n");
    let out = tagged(&release_pipeline(HTTP_RELEASE, server.port))
        .args(["run", "--trigger", "tag"])
        .code(1)
        .run();
    let url = server.url(&at(SDIST));
    line_with(
        &out.stderr,
        &[
            "release failed (http",
            &format!("`{SDIST}`: {url} already holds other bytes"),
            "a release never overwrites",
        ],
    );
    assert_eq!(server.puts(&at(SDIST)), 0);
    assert_eq!(server.file(&at(SDIST)).unwrap(), b"somebody else's sdist\n");
    assert_eq!(out.status().stage("release").state, "failed");
    // What did go out is on record; what did not, is not.
    assert_eq!(published(&out), [triple("http", WHEEL, "uploaded")]);
}

#[test]
fn a_file_on_pypi_with_other_bytes_is_an_error_and_never_overwritten() {
    let pypi = PyPi::start();
    fs::write(
        pypi.packages().join("demo-1.0.0.tar.gz"),
        "an older sdist\n",
    )
    .unwrap();
    let out = tagged(&release_pipeline(PYPI_RELEASE, pypi.port))
        .args(["run", "--trigger", "tag"])
        .env("PYPI_TOKEN", TOKEN)
        .code(1)
        .run();
    line_with(
        &out.stderr,
        &[
            "release failed (pypi",
            &format!("`{SDIST}`: `demo-1.0.0.tar.gz` is already on the index with other bytes"),
            "a release never overwrites",
        ],
    );
    assert_eq!(
        fs::read_to_string(pypi.packages().join("demo-1.0.0.tar.gz")).unwrap(),
        "an older sdist\n"
    );
    assert_eq!(pypi.stored("demo-1.0.0.tar.gz"), 0);
}

// ---------------------------------------------------------------------------------------
// 5. Refusals: a 403 while publishing, bad credentials before anything runs

#[test]
fn a_403_names_the_target_the_file_and_the_answer() {
    let server = Server::start(Faults {
        forbid_puts: true,
        ..Faults::default()
    });
    let out = tagged(&release_pipeline(HTTP_RELEASE, server.port))
        .args(["run", "--trigger", "tag"])
        .code(1)
        .run();
    line_with(
        &out.stderr,
        &[
            "release failed (http",
            &format!("`{WHEEL}`: the server answered 403 Forbidden: token lacks write scope ()"),
        ],
    );
    assert_eq!(server.total_puts(), 1, "a refusal is not retried");
    let status = out.status();
    assert_eq!(status.stage("release").state, "failed");
    assert!(status.stage("release").reason().contains("403 Forbidden"));
}

#[test]
fn a_wrong_pypi_password_is_refused_by_the_preflight_before_anything_runs() {
    let pypi = PyPi::start();
    let down = free_port();
    let pipeline = release_pipeline(PYPI_RELEASE, pypi.port)
        + &format!(
            "      - http: {{files: ['dist/*'], url: 'http://127.0.0.1:{down}/files/{{file}}'}}\n"
        );
    let out = tagged(&pipeline)
        .args(["run", "--trigger", "tag"])
        .env("PYPI_TOKEN", "not-the-password")
        .code(1)
        .run();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines[0], "error: the release cannot succeed; nothing was run:",
        "{}",
        out.stderr
    );
    let refused = format!(
        "{} refused the credentials in `PYPI_TOKEN` (403 Forbidden)",
        pypi.url()
    );
    assert_eq!(
        line_with(&out.stderr, &["  release pypi", &refused]),
        lines[1]
    );
    let unreachable = format!("http://127.0.0.1:{down}/files/ is unreachable: ");
    assert_eq!(
        line_with(&out.stderr, &["  release http", &unreachable]),
        lines[2]
    );
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    assert!(!out.stderr.contains("not-the-password"));
    assert!(out.runs().is_empty(), "no run is recorded");
    assert_eq!(out.count("build.count"), 0, "no stage ran");
    assert!(pypi.files().is_empty());
}

// ---------------------------------------------------------------------------------------
// 6. Secrets

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            let bytes = fs::read(e.path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|e| e.into_path())
        .collect()
}

const LEAKY: &str = "
    version: 1
    name: demo
    secrets: [PYPI_TOKEN]
    notify:
      - webhook: {url: 'http://127.0.0.1:PORT/gone', on: [failure]}
    stages:
      build:
        run:
          - echo \"token=$PYPI_TOKEN\"
          - echo \"stderr says token=$PYPI_TOKEN\" >&2
          - test \"${PYPI_TOKEN#s3cret-}\" = token && echo the secret reached the stage
          - mkdir -p dist && echo 'wheel of demo 1.0.0' > dist/demo-1.0.0-py3-none-any.whl
        outputs: [dist]
      release:
        needs: [build]
        publish:
          - http: {files: ['dist/*'], url: 'http://127.0.0.1:PORT/files/{file}', token: PYPI_TOKEN}
";

#[test]
fn a_secret_is_masked_in_every_record_and_on_the_terminal() {
    // The server quotes the token back in its refusal, the notification receiver is gone.
    let server = Server::start(Faults {
        forbid_puts: true,
        ..Faults::default()
    });
    let out = tagged(&release_pipeline(LEAKY, server.port))
        .args(["-v", "run", "--trigger", "tag"])
        .args(["--description", "rotate s3cret-token after the release"])
        .env("PYPI_TOKEN", TOKEN)
        .code(1)
        .run();
    assert!(
        !out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains("token=***"), "{}", out.stderr);
    assert!(out.stderr.contains("stderr says token=***"));
    assert!(
        out.stderr
            .contains("403 Forbidden: token lacks write scope (Bearer ***)")
    );
    // The real value went where it was meant to go.
    assert!(out.stderr.contains("the secret reached the stage"));
    assert_eq!(server.puts("/files/demo-1.0.0-py3-none-any.whl"), 1);

    let state = out.file(".murphy");
    assert_eq!(files_holding(&state, TOKEN), Vec::<PathBuf>::new());
    let run = out.status().run_id;
    let log = out.read(&format!(".murphy/runs/{run}/logs/build.log"));
    assert!(log.contains("token=***\n") && log.contains("stderr says token=***\n"));
    assert!(
        out.read(&format!(".murphy/runs/{run}/journal.jsonl"))
            .contains("(Bearer ***)")
    );
    assert!(
        out.read(&format!(".murphy/runs/{run}/meta.json"))
            .contains("rotate *** after the release")
    );
    let outbox = files_holding(&state.join("outbox"), "rotate *** after the release");
    assert_eq!(outbox.len(), 1, "the failure notification waits, masked");
    let posts = server.posts();
    assert_eq!(posts.len(), 1, "one delivery was tried");
    assert!(posts[0].1.contains("rotate *** after") && !posts[0].1.contains(TOKEN));

    for args in [
        vec!["logs", "build"],
        vec!["status"],
        vec!["show"],
        vec!["outbox", "list"],
    ] {
        let shown = out.murphy(args.clone()).run();
        assert!(!shown.stdout.contains(TOKEN), "murphy {args:?}");
    }
    assert!(
        out.murphy(["logs", "build"])
            .run()
            .stdout
            .contains("token=***")
    );
}

/// Masking the JSON text of a record would miss such a value: JSON writes it `pa\"ss\\word`.
#[test]
fn a_secret_with_quotes_or_backslashes_is_masked_in_json_records() {
    let server = Server::start(Faults {
        forbid_puts: true,
        ..Faults::default()
    });
    let secret = r#"pa"ss\word"#;
    let pipeline = release_pipeline(LEAKY, server.port)
        .replace(r#"test "${PYPI_TOKEN#s3cret-}" = token && "#, "");
    let out = tagged(&pipeline)
        .args(["run", "--trigger", "tag"])
        .args([
            "--description",
            &format!("rotate {secret} after the release"),
        ])
        .env("PYPI_TOKEN", secret)
        .code(1)
        .run();
    assert!(!out.stderr.contains(secret));
    // In JSON the value is written `pa\"ss\\word`; in logs, as it is.
    let escaped = r#"pa\"ss\\word"#;
    for needle in [secret, escaped] {
        assert_eq!(
            files_holding(&out.file(".murphy"), needle),
            Vec::<PathBuf>::new()
        );
    }
    let run = out.status().run_id;
    assert!(
        out.read(&format!(".murphy/runs/{run}/journal.jsonl"))
            .contains("(Bearer ***)")
    );
    // And what the records hold, `murphy status` prints decoded: the secret in clear.
    assert!(!out.murphy(["status"]).run().stdout.contains(secret));
}

#[test]
fn a_secrets_file_others_can_read_is_refused() {
    for mode in [0o640, 0o604] {
        let test = tagged(&release_pipeline(PYPI_RELEASE, free_port()));
        let test = secrets_file(test, &format!("PYPI_TOKEN: {TOKEN}\n"), mode);
        let out = test.args(["run", "--trigger", "tag"]).code(2).run();
        assert_eq!(
            out.stderr,
            format!(
                "error: refusing the secrets file `.murphy/secrets.yml`: it is readable by others (mode {mode:o}); run `chmod 600` on it\n"
            )
        );
        assert!(!out.stderr.contains(TOKEN));
        assert_eq!(out.count("build.count"), 0);
        assert!(out.runs().is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// 7. Gates

const GATED: &str = "
    version: 1
    name: demo
    stages:
      BUILD
      unit: {run: echo unit >> unit.count, when: {trigger: pr}}
      release:
        needs: [build]
        needs_optional: [unit]
        requires: [unit]
        publish:
          - http: {files: ['dist/*'], url: 'http://127.0.0.1:PORT/files/{file}'}
";

#[test]
fn publishing_is_refused_when_a_required_stage_did_not_succeed() {
    let server = Server::start(Faults::default());
    let out = tagged(&release_pipeline(GATED, server.port))
        .args(["run", "--trigger", "tag"])
        .code(1)
        .run();
    assert!(
        out.stderr.contains(
            "release failed (publishing refused: `unit` must succeed for this commit first, and it was skipped (when))"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(server.total_puts(), 0);
    assert_eq!(out.count("unit.count"), 0);
    let status = out.status();
    assert_eq!(status.stage("unit").state, "skipped_when");
    assert_eq!(status.stage("release").state, "failed");
    assert!(published(&out).is_empty());
}

#[test]
fn release_dry_run_shows_the_gate_the_destination_and_the_files() {
    let server = Server::start(Faults::default());
    let out = tagged(&release_pipeline(GATED, server.port))
        .args(["run", "build"])
        .run();
    // `unit` runs only for pull requests, so the gate cannot hold on a tag run: the dry run
    // says so and exits 1, as the tag run would refuse to publish.
    let dry = out.murphy(["release", "--dry-run"]).code(1).run();
    let url = server.url("/files/");
    let wheel = file_sha256(&out, WHEEL);
    let sdist = file_sha256(&out, SDIST);
    let lines: Vec<&str> = dry.stdout.lines().collect();
    assert_eq!(lines.len(), 10, "{}", dry.stdout);
    assert_eq!(
        lines[..4],
        [
            "a tag run of `demo` for v1.0.0 (version 1.0.0):",
            "",
            "stage `release` would publish:",
            "  gate: requires `unit`, which a tag run skips by its `when` (trigger is `tag`, not `pr`): the gate cannot hold",
        ]
    );
    assert_eq!(
        lines[7..],
        [
            "",
            "the release would stop:",
            "  - stage `release` requires `unit`, which a tag run skips by its `when`",
        ]
    );
    // The destination: the target (by kind, then maybe where) and what it does.
    assert!(
        lines[4].starts_with("  http") && lines[4].ends_with(&format!(" -> PUT {url}{{file}}")),
        "{}",
        dry.stdout
    );
    assert_eq!(
        lines[5..7],
        [
            format!(
                "    {WHEEL} (sha256 {}) -> {url}demo-1.0.0-py3-none-any.whl",
                &wheel[..16]
            ),
            format!(
                "    {SDIST} (sha256 {}) -> {url}demo-1.0.0.tar.gz",
                &sdist[..16]
            ),
        ]
    );
    assert_eq!(server.total_puts(), 0, "a dry run touches no server");
    assert_eq!(out.runs().len(), 1, "and records no run");

    // The same, for a machine: same exit code, every line's fact in a field.
    let json: serde_json::Value = parse_json(
        &out.murphy(["release", "--dry-run", "--json"])
            .code(1)
            .run()
            .stdout,
    );
    assert_eq!(json["tag"], "v1.0.0", "{json:#}");
    assert_eq!(json["version"], "1.0.0", "{json:#}");
    let stage = &json["stages"][0];
    assert_eq!(stage["stage"], "release", "{json:#}");
    assert_eq!(stage["gates"][0]["requires"], "unit", "{json:#}");
    assert_eq!(stage["gates"][0]["can_hold"], false, "{json:#}");
    let files: Vec<(&str, &str)> = (stage["targets"][0]["files"].as_array().unwrap().iter())
        .map(|f| (f["name"].as_str().unwrap(), f["sha256"].as_str().unwrap()))
        .collect();
    assert_eq!(files, [(WHEEL, wheel.as_str()), (SDIST, sdist.as_str())]);
    assert_eq!(
        json["stops"],
        serde_json::json!(["stage `release` requires `unit`, which a tag run skips by its `when`"])
    );
}

#[test]
fn release_dry_run_exits_1_on_an_unusable_secret_or_a_gate_that_failed_for_this_commit() {
    let server = Server::start(Faults::default());
    let pipeline = release_pipeline(
        "
    version: 1
    name: demo
    stages:
      BUILD
      unit: {run: test -f passes}
      release:
        needs: [build, unit]
        requires: [unit]
        secrets: [UPLOAD_TOKEN]
        publish:
          - http: {files: ['dist/*'], url: 'http://127.0.0.1:PORT/files/{file}'}
",
        server.port,
    );
    let out = tagged(&pipeline).args(["run", "unit"]).code(1).run();
    let dry = out.murphy(["release", "--dry-run"]).code(1).run().stdout;
    let failed = out.status().run_id;
    assert!(
        dry.contains(&format!(
            "  gate: requires `unit`, which failed for this commit in run {failed}: the gate holds only if it passes\n"
        )),
        "{dry}"
    );
    assert!(
        dry.contains("  secret `UPLOAD_TOKEN`: NOT usable: "),
        "{dry}"
    );
    assert!(
        dry.ends_with(&format!(
            "the release would stop:\n  - stage `release` requires `unit`, which failed for this commit in run {failed}\n  - secret `UPLOAD_TOKEN` is not usable\n"
        )),
        "{dry}"
    );

    // Fixed and given its secret, nothing stops the release.
    out.write("passes", "");
    out.murphy(["run", "unit"]).run();
    let passed = out.status().run_id;
    let dry = out
        .murphy(["release", "--dry-run"])
        .env("UPLOAD_TOKEN", "s3cret-token")
        .run()
        .stdout;
    assert!(
        dry.contains(&format!("  gate: requires `unit`, which succeeded for this commit in run {passed} (it holds if its inputs are unchanged)\n")),
        "{dry}"
    );
    assert!(!dry.contains("would stop"), "{dry}");
    assert_eq!(server.total_puts(), 0, "a dry run touches no server");
}

// ---------------------------------------------------------------------------------------
// 8. The outbox

#[test]
fn a_notification_waits_in_the_outbox_until_the_receiver_is_back() {
    let receiver = Server::start(Faults::default());
    let port = receiver.port;
    drop(receiver);
    let pipeline = unindent(
        "
        version: 1
        name: demo
        notify:
          - webhook: {url: 'http://127.0.0.1:PORT/hook', on: [success]}
        stages:
          build: {run: echo built}
        ",
    )
    .replace("PORT", &port.to_string());
    let out = Test::new().pipeline(&pipeline).args(["run"]).run();
    let run = out.status().run_id;
    let id = format!("{run}-success-0");
    assert!(
        out.stderr
            .contains(&format!("notification {id} is waiting in the outbox")),
        "{}",
        out.stderr
    );
    assert!(out.file(&format!(".murphy/outbox/{id}.json")).is_file());
    let list = out.murphy(["outbox", "list"]).run();
    line_with(
        &list.stdout,
        &[
            &format!("{id}  Success to notify entry 1  attempts "),
            "  last error: ",
        ],
    );

    let receiver = Server::on(port, Faults::default());
    let flushed = out.murphy(["outbox", "flush"]).run();
    assert_eq!(flushed.stdout, "delivered 1 notification(s)\n");
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].0, "/hook");
    let body: Value = parse_json(&posts[0].1);
    assert_eq!(body["run_id"], run.as_str());
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["event"], "success");
    assert_eq!(
        out.murphy(["outbox", "list"]).run().stdout,
        "the outbox is empty\n"
    );
    let messages = fs::read_dir(out.file(".murphy/outbox"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(messages, 0, "no message file is left");

    let again = out.murphy(["outbox", "flush"]).run();
    assert_eq!(again.stdout, "delivered 0 notification(s)\n");
    assert_eq!(receiver.posts().len(), 1, "nothing is sent twice");
}

// ---------------------------------------------------------------------------------------
// 9. git-pages

#[test]
fn git_pages_publishes_once_per_version_and_never_overwrites() {
    let test = Test::new()
        .write(
            "project/pipeline.yml",
            &unindent(
                "
                version: 1
                name: demo
                stages:
                  docs:
                    publish:
                      - git-pages: {dir: site, remote: ../pages.git}
                ",
            ),
        )
        .write("project/site/index.html", "<h1>demo 1.0.0</h1>\n")
        .write("project/site/css/style.css", "h1 { color: teal }\n")
        .write("project/.gitignore", "/.murphy/\n");
    let project = test.path().join("project");
    git(test.path(), ["init", "-q", "--bare", "pages.git"]);
    git(&project, ["init", "-q", "-b", "main"]);
    crate::support::commit(&project, "docs 1.0.0");
    git(&project, ["tag", "v1.0.0"]);
    let pages = test.path().join("pages.git");

    let out = test.cwd("project").args(["run", "--trigger", "tag"]).run();
    line_with(&out.stderr, &["docs git-pages", "`site` published"]);
    assert_eq!(
        git(&pages, ["ls-tree", "-r", "--name-only", "gh-pages"]),
        "css/style.css\nindex.html"
    );
    assert_eq!(
        git(&pages, ["show", "gh-pages:index.html"]),
        "<h1>demo 1.0.0</h1>"
    );
    let message = git(&pages, ["log", "-1", "--format=%B", "gh-pages"]);
    assert!(
        message.lines().any(|l| l == "murphy-pages-version: 1.0.0"),
        "{message}"
    );
    let commit = git(&pages, ["rev-parse", "gh-pages"]);

    let again = out.murphy(["run", "--trigger", "tag"]).cwd("project").run();
    line_with(
        &again.stderr,
        &["docs git-pages", "`site` already there (same bytes)"],
    );
    assert_eq!(
        git(&pages, ["rev-parse", "gh-pages"]),
        commit,
        "nothing pushed"
    );

    // Edited without a commit: only --allow-dirty lets the tag run go on to the publish
    // guard.
    out.write("project/site/index.html", "<h1>demo 1.0.0, reworded</h1>\n");
    out.murphy(["run", "--trigger", "tag"])
        .cwd("project")
        .code(2)
        .run();
    let changed = out
        .murphy(["run", "--trigger", "tag", "--allow-dirty"])
        .cwd("project")
        .code(1)
        .run();
    line_with(
        &changed.stderr,
        &[
            "docs failed (git-pages",
            "`gh-pages` of ",
            "pages.git already has pages for version 1.0.0, with other files; a release never overwrites",
        ],
    );
    assert_eq!(git(&pages, ["rev-parse", "gh-pages"]), commit);
    assert_eq!(
        git(&pages, ["show", "gh-pages:index.html"]),
        "<h1>demo 1.0.0</h1>"
    );
}

// ---------------------------------------------------------------------------------------
// 10. Mistakes in the publish configuration

#[test]
fn publish_config_mistakes_are_reported_with_their_place() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              unit: {run: x}
              release:
                requires: [unti]
                publish:
                  - pypi: {files: [dist/*.whl], password: PYPI_TOKEN}
                  - http: {files: [dist/*], url: 'https://example.com/upload'}
            ",
        )
        .args(["validate"])
        .code(2)
        .run();
    // All three at once, each with its place and a caret under it.
    for block in [
        [
            "pipeline.yml:5:16: stage `release` requires `unti`, which is not a stage (did you mean `unit`?)",
            "  |",
            "5 |     requires: [unti]",
            "  |                ^^^^",
        ],
        [
            "pipeline.yml:7:47: `PYPI_TOKEN` is not declared in `secrets:` (the pipeline's or the stage's)",
            "  |",
            "7 |       - pypi: {files: [dist/*.whl], password: PYPI_TOKEN}",
            "  |                                               ^^^^^^^^^^",
        ],
        [
            "pipeline.yml:8:38: the `url` must hold `{file}` or `{path}`, or every file would land on one URL",
            "  |",
            "8 |       - http: {files: [dist/*], url: 'https://example.com/upload'}",
            "  |                                      ^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
        ],
    ] {
        assert!(
            out.stderr.contains(&(block.join("\n") + "\n")),
            "{}",
            out.stderr
        );
    }
    assert!(out.stderr.starts_with("error: pipeline.yml:5:16: "));
    assert!(!out.file(".murphy").exists());
}

/// A webhook with a literal URL, and a release secret in the pipeline.
const HOOKED: &str = "
    version: 1
    name: demo
    secrets: [PYPI_TOKEN]
    notify:
      - webhook: {url: 'http://127.0.0.1:PORT/HOOK', on: [success]}
    stages:
      build: {run: echo built}
";

#[test]
fn the_outbox_counts_the_tries_it_made() {
    let receiver = Server::start(Faults::default());
    let pipeline = release_pipeline(HOOKED, receiver.port).replace("HOOK", "gone");
    let out = Test::new()
        .pipeline(&pipeline)
        .args(["run"])
        .env("PYPI_TOKEN", TOKEN)
        .run();
    assert_eq!(receiver.posts().len(), 1, "a 404 is not retried");
    let waiting: Vec<Value> = parse_json(&out.murphy(["outbox", "list", "--json"]).run().stdout);
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["attempts"], 1, "{waiting:#?}");
}

#[test]
fn flushing_the_outbox_needs_only_the_secrets_of_the_notifications() {
    let receiver = Server::start(Faults::default());
    let port = receiver.port;
    drop(receiver);
    let pipeline = release_pipeline(HOOKED, port).replace("HOOK", "hook");
    let out = Test::new()
        .pipeline(&pipeline)
        .args(["run"])
        .env("PYPI_TOKEN", TOKEN)
        .run();
    let receiver = Server::on(port, Faults::default());
    // A cron job delivering notifications holds no release credentials.
    let flushed = out.murphy(["outbox", "flush"]).run();
    assert_eq!(flushed.stdout, "delivered 1 notification(s)\n");
    assert_eq!(receiver.posts().len(), 1);
}

/// Before tagging: `--tag` imagines the tag on HEAD as it is, dirty files and failed gates
/// included.
#[test]
fn release_dry_run_of_an_imagined_tag_checks_the_tree_and_the_gates_at_head() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            name: demo
            stages:
              unit: {run: test -f passes}
              release:
                needs: [unit]
                requires: [unit]
                publish:
                  - command: {files: [pipeline.yml], run: 'true'}
            ",
        )
        .write("tracked.txt", "committed\n")
        .write(".gitignore", "/.murphy/\n/passes\n")
        .commit("demo")
        .args(["run", "unit"])
        .code(1)
        .run();
    let failed = out.status().run_id;
    out.write("tracked.txt", "changed\n");
    let dry = out
        .murphy(["release", "--dry-run", "--tag", "v2.0.0"])
        .code(1)
        .run()
        .stdout;
    assert!(
        dry.starts_with("a tag run of `demo` for v2.0.0 (version 2.0.0):\n"),
        "{dry}"
    );
    assert!(
        dry.ends_with(&format!(
            "the release would stop:\n  - 1 tracked file(s) differ from HEAD: `tracked.txt` (a tag run refuses that without --allow-dirty)\n  - stage `release` requires `unit`, which failed for this commit in run {failed}\n"
        )),
        "{dry}"
    );
}
