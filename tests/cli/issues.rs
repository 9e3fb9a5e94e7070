//! Failures filed as issues: murphy against a small GitHub (and GitLab) issues API served in
//! the test, with the shapes of the providers' REST docs. One issue per failing stage, a
//! comment when it fails again, closed when it passes; a period of 5xx answers ridden out by
//! the outbox.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::{Output, Test, answer, read_request};

#[derive(Clone, Copy, PartialEq)]
enum Provider {
    Github,
    Gitlab,
}

#[derive(Debug, Clone)]
struct Issue {
    number: u64,
    title: String,
    body: String,
    open: bool,
    labels: Vec<String>,
    comments: Vec<String>,
}

/// The issues API of one repository, in memory; `down` answers 503 to every call while set.
struct Tracker {
    url: String,
    issues: Arc<Mutex<Vec<Issue>>>,
    down: Arc<AtomicUsize>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Tracker {
    fn start(provider: Provider, token: &'static str) -> Tracker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issues = Arc::new(Mutex::new(Vec::<Issue>::new()));
        let down = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (i, d, c) = (issues.clone(), down.clone(), calls.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                c.lock()
                    .unwrap()
                    .push(format!("{} {}", request.method, request.path));
                if d.load(Ordering::SeqCst) > 0 {
                    answer(
                        stream,
                        "503 Service Unavailable",
                        &[],
                        b"{\"message\":\"down\"}",
                    );
                    continue;
                }
                let authorized = match provider {
                    Provider::Github => request.authorization == format!("Bearer {token}"),
                    Provider::Gitlab => request
                        .headers
                        .iter()
                        .any(|(n, v)| n == "private-token" && v == token),
                };
                if !authorized {
                    answer(
                        stream,
                        "401 Unauthorized",
                        &[],
                        b"{\"message\":\"Bad credentials\"}",
                    );
                    continue;
                }
                let (status, reply) = route(provider, &request, &mut i.lock().unwrap());
                let json = ("Content-Type", "application/json".to_owned());
                answer(stream, status, &[json], reply.to_string().as_bytes());
            }
        });
        Tracker {
            url,
            issues,
            down,
            calls,
        }
    }

    fn issues(&self) -> Vec<Issue> {
        self.issues.lock().unwrap().clone()
    }
}

/// The few endpoints the filer calls, answered as the providers document them.
fn route(
    provider: Provider,
    request: &crate::support::Request,
    issues: &mut Vec<Issue>,
) -> (&'static str, Value) {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let (prefix, text_key, number_key, notes) = match provider {
        Provider::Github => ("/repos/octo/demo/issues", "body", "number", "comments"),
        Provider::Gitlab => (
            "/projects/octo%2Fdemo/issues",
            "description",
            "iid",
            "notes",
        ),
    };
    let show = |issue: &Issue| {
        let state = match (provider, issue.open) {
            (Provider::Github, true) => "open",
            (Provider::Github, false) => "closed",
            (Provider::Gitlab, true) => "opened",
            (Provider::Gitlab, false) => "closed",
        };
        let mut v = json!({"id": 1000 + issue.number, "title": issue.title, "state": state});
        v[number_key] = json!(issue.number);
        v[text_key] = json!(issue.body);
        v["labels"] = match provider {
            Provider::Github => json!(
                issue
                    .labels
                    .iter()
                    .map(|l| json!({"name": l}))
                    .collect::<Vec<_>>()
            ),
            Provider::Gitlab => json!(issue.labels),
        };
        v
    };
    let Some(rest) = request.path.strip_prefix(prefix) else {
        return ("404 Not Found", json!({"message": "Not Found"}));
    };
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (request.method.as_str(), parts.as_slice()) {
        ("GET", [query]) if query.is_empty() || query.starts_with('?') => {
            let want_open = query.contains("state=open");
            let label = query.contains("labels=murphy");
            let mut listed: Vec<Value> = issues
                .iter()
                .filter(|i| !want_open || i.open)
                .filter(|i| !label || i.labels.iter().any(|l| l == "murphy"))
                .map(show)
                .collect();
            if provider == Provider::Github {
                // GitHub lists pull requests among issues: one that quotes a marker is no issue.
                listed.push(json!({"number": 99, "title": "a PR", "state": "open",
                    "body": "<!-- murphy:demo/check -->", "labels": [{"name": "murphy"}],
                    "pull_request": {"url": "https://api.github.com/repos/octo/demo/pulls/99"}}));
            }
            ("200 OK", json!(listed))
        }
        ("POST", [""]) | ("POST", []) => {
            let labels = match &body["labels"] {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect(),
                Value::String(s) => s.split(',').map(str::to_owned).collect(),
                _ => Vec::new(),
            };
            let issue = Issue {
                number: issues.len() as u64 + 1,
                title: body["title"].as_str().unwrap_or_default().to_owned(),
                body: body[text_key].as_str().unwrap_or_default().to_owned(),
                open: true,
                labels,
                comments: Vec::new(),
            };
            let shown = show(&issue);
            issues.push(issue);
            ("201 Created", shown)
        }
        (method, [number, what]) if method == "POST" && *what == notes => {
            let Some(issue) = number
                .parse::<u64>()
                .ok()
                .and_then(|n| issues.get_mut(n as usize - 1))
            else {
                return ("404 Not Found", json!({"message": "Not Found"}));
            };
            issue
                .comments
                .push(body["body"].as_str().unwrap_or_default().to_owned());
            ("201 Created", json!({"id": 1, "body": body["body"]}))
        }
        (method, [number]) if method == "PATCH" || method == "PUT" => {
            let Some(issue) = number
                .parse::<u64>()
                .ok()
                .and_then(|n| issues.get_mut(n as usize - 1))
            else {
                return ("404 Not Found", json!({"message": "Not Found"}));
            };
            let close = match provider {
                Provider::Github => method == "PATCH" && body["state"] == "closed",
                Provider::Gitlab => method == "PUT" && body["state_event"] == "close",
            };
            if close {
                issue.open = false;
            }
            let shown = show(issue);
            ("200 OK", shown)
        }
        _ => ("404 Not Found", json!({"message": "Not Found"})),
    }
}

fn project(provider: Provider, api: &str) -> Test {
    let (key, token_name) = match provider {
        Provider::Github => ("github", "GH_TOKEN"),
        Provider::Gitlab => ("gitlab", "GL_TOKEN"),
    };
    Test::new()
        .git_init()
        .pipeline(&format!(
            "
            version: 1
            name: demo
            secrets: [{token_name}]
            notify:
              - issue: {{{key}: octo/demo, token_secret: {token_name}, api: \"{api}\"}}
            stages:
              check:
                run: test -f ok
              other:
                run: \"true\"
            "
        ))
        .commit("Add the check")
        .args(["validate"])
}

fn nightly(out: &Output, token: (&str, &str), code: i32) -> Output {
    out.murphy(["run", "--trigger", "nightly"])
        .env(token.0, token.1)
        .code(code)
        .run()
}

#[test]
fn a_failing_nightly_stage_opens_one_github_issue_comments_again_and_closes_it_when_it_passes() {
    let token = ("GH_TOKEN", "gh-token-1234");
    let tracker = Tracker::start(Provider::Github, "gh-token-1234");
    let out = project(Provider::Github, &tracker.url).run();

    // The API is down: the run fails as it would, and its issue waits in the outbox.
    tracker.down.store(1, Ordering::SeqCst);
    nightly(&out, token, 1);
    assert!(
        !tracker.calls.lock().unwrap().is_empty(),
        "the API was tried"
    );
    assert!(tracker.issues().is_empty());
    let waiting = out.murphy(["outbox", "list"]).run();
    assert!(waiting.stdout.contains("issues"), "{}", waiting.stdout);

    // Back up: the flush files it, once.
    tracker.down.store(0, Ordering::SeqCst);
    out.murphy(["outbox", "flush"]).env(token.0, token.1).run();
    let issues = tracker.issues();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].open);
    assert_eq!(issues[0].title, "murphy: stage `check` of `demo` fails");
    assert!(
        issues[0].body.starts_with("<!-- murphy:demo/check -->"),
        "{}",
        issues[0].body
    );
    assert_eq!(issues[0].labels, ["murphy"]);
    out.murphy(["outbox", "flush"]).env(token.0, token.1).run();
    assert_eq!(
        tracker.issues().len(),
        1,
        "a flush with nothing waiting files nothing"
    );

    // It fails again: a comment on the same issue, no second one.
    nightly(&out, token, 1);
    let issues = tracker.issues();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].comments.len(), 1);
    assert!(
        issues[0].comments[0].starts_with("Stage `check` failed again in run "),
        "{:?}",
        issues[0].comments
    );

    // A local run is not watched (the default is nightly only).
    let before = tracker.calls.lock().unwrap().len();
    out.murphy(["run"]).env(token.0, token.1).code(1).run();
    assert_eq!(tracker.calls.lock().unwrap().len(), before);

    // It passes: a last comment, and the issue is closed.
    out.write("ok", "");
    nightly(&out, token, 0);
    let issues = tracker.issues();
    assert_eq!(issues.len(), 1);
    assert!(!issues[0].open, "{issues:?}");
    assert!(
        issues[0].comments[1].starts_with("Stage `check` passed in run "),
        "{:?}",
        issues[0].comments
    );
    let left = out.murphy(["outbox", "list"]).run();
    assert_eq!(left.stdout.trim(), "the outbox is empty");
}

#[test]
fn gitlab_issues_are_filed_noted_and_closed_through_its_api() {
    let token = ("GL_TOKEN", "gl-token-1234");
    let tracker = Tracker::start(Provider::Gitlab, "gl-token-1234");
    let out = project(Provider::Gitlab, &tracker.url).run();
    nightly(&out, token, 1);
    nightly(&out, token, 1);
    let issues = tracker.issues();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].body.starts_with("<!-- murphy:demo/check -->"));
    assert_eq!(issues[0].comments.len(), 1);
    out.write("ok", "");
    nightly(&out, token, 0);
    let issues = tracker.issues();
    assert!(!issues[0].open, "{issues:?}");
    let calls = tracker.calls.lock().unwrap().clone();
    assert!(
        calls
            .iter()
            .any(|c| c == "PUT /projects/octo%2Fdemo/issues/1"),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c == "POST /projects/octo%2Fdemo/issues/1/notes"),
        "{calls:?}"
    );
}
