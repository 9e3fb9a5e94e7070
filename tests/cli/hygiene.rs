//! CI credentials and HTTP hygiene: what of the CI's environment reaches a stage, and what
//! murphy's HTTP requests carry and follow (servers on 127.0.0.1 and 127.0.0.2, two hosts
//! on loopback).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::support::{Test, unindent};

// ---------------------------------------------------------------------------------------
// CI credentials

/// Runs a stage that writes its environment under `vars`, and returns what it wrote.
fn stage_env(vars: &[(&str, &str)]) -> String {
    let mut test = Test::new()
        .pipeline("version: 1\nstages:\n  show: {run: env > env.txt}\n")
        .args(["run"]);
    for (name, value) in vars {
        test = test.env(name, value);
    }
    test.run().read("env.txt")
}

fn assert_passed(env: &str, passed: &[&str], withheld: &[&str]) {
    for line in passed {
        assert!(
            env.lines().any(|l| l == *line),
            "`{line}` missing in:\n{env}"
        );
    }
    for secret in withheld {
        assert!(
            !env.contains(secret),
            "`{secret}` reached the stage:\n{env}"
        );
    }
}

#[test]
fn gitlab_job_tokens_do_not_reach_a_stage() {
    let env = stage_env(&[
        ("GITLAB_CI", "true"),
        ("CI_PROJECT_URL", "https://gitlab.example.com/g/r"),
        (
            "CI_REPOSITORY_URL",
            "https://gitlab-ci-token:glcbt-repo-secret@gitlab.example.com/g/r.git",
        ),
        ("CI_JOB_JWT", "eyJ-jwt-secret"),
        ("CI_JOB_JWT_V2", "eyJ-jwt2-secret"),
        (
            "CI_ENVIRONMENT_URL",
            "https://deploy:env-secret@review.example.com/",
        ),
    ]);
    assert_passed(
        &env,
        &[
            "GITLAB_CI=true",
            "CI_PROJECT_URL=https://gitlab.example.com/g/r",
            "CI_ENVIRONMENT_URL=https://review.example.com/",
        ],
        &[
            "repo-secret",
            "jwt-secret",
            "jwt2-secret",
            "env-secret",
            "CI_REPOSITORY_URL",
        ],
    );
}

#[test]
fn buildkite_repository_url_reaches_a_stage_without_its_token() {
    let env = stage_env(&[
        ("BUILDKITE", "true"),
        ("BUILDKITE_BRANCH", "main"),
        (
            "BUILDKITE_REPO",
            "https://x-access-token:ghs_bk-secret@github.com/o/r.git",
        ),
        ("BUILDKITE_AGENT_ACCESS_TOKEN", "agent-secret"),
    ]);
    assert_passed(
        &env,
        &[
            "BUILDKITE=true",
            "BUILDKITE_BRANCH=main",
            "BUILDKITE_REPO=https://github.com/o/r.git",
        ],
        &["bk-secret", "agent-secret"],
    );
}

#[test]
fn azure_repository_uri_reaches_a_stage_without_its_token() {
    let env = stage_env(&[
        ("TF_BUILD", "True"),
        ("BUILD_BUILDID", "77"),
        (
            "BUILD_REPOSITORY_URI",
            "https://org:azure-secret@dev.azure.com/org/p/_git/r",
        ),
        ("SYSTEM_ACCESSTOKEN", "access-secret"),
    ]);
    assert_passed(
        &env,
        &[
            "TF_BUILD=True",
            "BUILD_BUILDID=77",
            "BUILD_REPOSITORY_URI=https://dev.azure.com/org/p/_git/r",
        ],
        &["azure-secret", "access-secret"],
    );
}

#[test]
fn jenkins_credentials_bindings_do_not_reach_a_stage() {
    // `environment { JENKINS_DEPLOY = credentials('deploy') }` makes `_USR` and `_PSW`.
    let env = stage_env(&[
        ("JENKINS_URL", "https://ci.example.com/"),
        ("BUILD_NUMBER", "12"),
        ("JENKINS_DEPLOY", "deployer:psw-secret"),
        ("JENKINS_DEPLOY_USR", "deployer"),
        ("JENKINS_DEPLOY_PSW", "psw-secret"),
        (
            "GIT_URL",
            "https://deployer:git-secret@git.example.com/r.git",
        ),
    ]);
    assert_passed(
        &env,
        &[
            "JENKINS_URL=https://ci.example.com/",
            "BUILD_NUMBER=12",
            "GIT_URL=https://git.example.com/r.git",
        ],
        &["psw-secret", "git-secret", "JENKINS_DEPLOY"],
    );
}

#[test]
fn a_listed_variable_passes_as_it_is() {
    let url = "https://gitlab-ci-token:glcbt-asked@gitlab.example.com/g/r.git";
    let out = Test::new()
        .pipeline(
            "version: 1\nstages:\n  show: {run: env > env.txt, pass_env: [CI_REPOSITORY_URL]}\n",
        )
        .args(["run"])
        .env("CI_REPOSITORY_URL", url)
        .run();
    assert_passed(
        &out.read("env.txt"),
        &[&format!("CI_REPOSITORY_URL={url}")],
        &[],
    );
}

// ---------------------------------------------------------------------------------------
// HTTP: a server that answers by a rule and records what it got

#[derive(Clone)]
struct Seen {
    method: String,
    path: String,
    /// Header lines, names in lower case.
    headers: Vec<(String, String)>,
}

type Rule = dyn Fn(&Seen) -> (&'static str, Vec<(&'static str, String)>) + Send + Sync;

struct Server {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `ip` at a free port; each request gets `rule`'s status and headers.
    fn on(
        ip: &str,
        rule: impl Fn(&Seen) -> (&'static str, Vec<(&'static str, String)>) + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind((ip, 0)).expect("cannot listen");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let rule: Arc<Rule> = Arc::new(rule);
        let (recorded, stopping) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let (recorded, rule) = (recorded.clone(), rule.clone());
                    std::thread::spawn(move || serve(stream, &recorded, &*rule));
                }
            }
        });
        Server {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Seen>>, rule: &Rule) {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let (Some(method), Some(path)) = (words.next(), words.next()) else {
        return;
    };
    let mut request = Seen {
        method: method.to_owned(),
        path: path.to_owned(),
        headers: Vec::new(),
    };
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let name = name.to_ascii_lowercase();
            if name == "content-length" {
                length = value.trim().parse().unwrap_or(0);
            }
            request.headers.push((name, value.trim().to_owned()));
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, headers) = rule(&request);
    seen.lock().unwrap().push(request);
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
}

/// A repository whose HEAD is tagged `v1.0.0`, with `pipeline`.
fn tagged(pipeline: &str) -> Test {
    Test::new()
        .git_init()
        .write("pipeline.yml", pipeline)
        .write(".gitignore", "/.murphy/\n/dist/\n")
        .commit("demo 1.0.0")
        .git(["tag", "v1.0.0"])
}

fn http_release(url: &str) -> String {
    unindent(
        "
        version: 1
        name: demo
        secrets: [UPLOAD_TOKEN]
        stages:
          build:
            run: [mkdir -p dist, echo 'wheel of demo' > dist/demo.whl]
            outputs: [dist]
          release:
            needs: [build]
            publish:
              - http: {files: ['dist/*'], url: 'URL/{file}', token: UPLOAD_TOKEN}
        ",
    )
    .replace("URL", url)
}

#[test]
fn an_upload_redirected_to_another_host_is_not_sent_there_and_not_published() {
    let elsewhere = Server::on("127.0.0.2", |_| ("201 Created", vec![]));
    let landing = elsewhere.url("/stolen/demo.whl");
    let origin = Server::on("127.0.0.1", move |seen| match seen.method.as_str() {
        "PUT" => (
            "307 Temporary Redirect",
            vec![("Location", landing.clone())],
        ),
        _ => ("404 Not Found", vec![]),
    });
    let out = tagged(&http_release(&origin.url("/files")))
        .args(["run", "--trigger", "tag"])
        .env("UPLOAD_TOKEN", "upload-secret")
        .code(1)
        .run();
    assert!(
        out.stderr.contains(&format!(
            "redirects the upload to {}",
            elsewhere.url("/stolen/demo.whl")
        )),
        "{}",
        out.stderr
    );
    assert_eq!(elsewhere.seen().len(), 0, "nothing reached the other host");
    let puts = origin.seen().iter().filter(|s| s.method == "PUT").count();
    assert_eq!(puts, 1, "the redirect is an answer, not a reason to retry");
    let show = out.show();
    assert_eq!(show["published"], serde_json::json!([]), "{show}");
    assert!(
        !out.stderr.contains("plain http://"),
        "loopback is not warned about"
    );
}

#[test]
fn an_upload_redirected_on_its_own_host_with_307_lands_there() {
    let origin = Server::on("127.0.0.1", |seen| {
        match (seen.method.as_str(), seen.path.as_str()) {
            ("PUT", "/files/demo.whl") => (
                "307 Temporary Redirect",
                vec![("Location", "/store/demo.whl".into())],
            ),
            ("PUT", _) => ("201 Created", vec![]),
            _ => ("404 Not Found", vec![]),
        }
    });
    let out = tagged(&http_release(&origin.url("/files")))
        .args(["run", "--trigger", "tag"])
        .env("UPLOAD_TOKEN", "upload-secret")
        .run();
    let puts: Vec<String> = origin
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT")
        .map(|s| s.path)
        .collect();
    assert_eq!(puts, ["/files/demo.whl", "/store/demo.whl"]);
    assert_eq!(out.show()["published"][0]["outcome"], "uploaded");
}

#[test]
fn a_webhook_redirect_carries_no_referer() {
    let elsewhere = Server::on("127.0.0.2", |_| ("200 OK", vec![]));
    let landing = elsewhere.url("/landed");
    let hook = Server::on("127.0.0.1", move |_| {
        (
            "307 Temporary Redirect",
            vec![("Location", landing.clone())],
        )
    });
    let secret_url = hook.url("/hooks/T000/B000/webhook-secret-path");
    let pipeline = unindent(
        "
        version: 1
        name: demo
        secrets: [HOOK_URL]
        notify:
          - webhook: {url_secret: HOOK_URL, on: [success]}
        stages:
          build: {run: echo built}
        ",
    );
    Test::new()
        .pipeline(&pipeline)
        .args(["run"])
        .env("HOOK_URL", &secret_url)
        .run();
    let seen = elsewhere.seen();
    assert_eq!(seen.len(), 1, "the notification followed the redirect");
    let Seen {
        method,
        path,
        headers,
    } = &seen[0];
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/landed"));
    assert!(
        headers
            .iter()
            .all(|(name, value)| name != "referer" && !value.contains("webhook-secret-path")),
        "{headers:?}"
    );
}

#[test]
fn credentials_over_plain_http_to_another_machine_are_warned_about() {
    // 0.0.0.0 is no loopback address; the request itself need not succeed.
    let out = tagged(&http_release("http://0.0.0.0:9/files"))
        .args(["run", "--trigger", "tag"])
        .env("UPLOAD_TOKEN", "upload-secret");
    let (_, out) = out.run_unchecked();
    assert!(
        out.stderr.contains(
            "secret `UPLOAD_TOKEN` goes to http://0.0.0.0:9 over plain http://, readable by anyone on the way; use https://"
        ),
        "{}",
        out.stderr
    );
}
