//! `murphy serve`: the real binary on a free 127.0.0.1 port, asked by a real HTTP client
//! (reqwest): pages, the JSON API against `--json`, archive downloads, a live run's stream,
//! webhooks signed as each provider signs them, the token, and `events verify` on a log that
//! was edited, cut and reordered.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Output, Running, Test, parse_json};

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITLAB_TOKEN: &str = "gitlab-token-1234";
const AZURE_USER: &str = "azure-user";
const AZURE_PASSWORD: &str = "azure-password-1234";

/// A pipeline that colours its log, archives a file and takes all three webhooks.
const PIPELINE: &str = r#"
    version: 1
    name: demo
    serve:
      webhooks:
        github: {secret: GH_HOOK}
        gitlab: {token: GL_HOOK}
        azure_devops: {username: AZ_USER, password: AZ_PASSWORD}
    stages:
      build:
        run: printf '\033[1;31mred <b>bold</b>\033[0m plain\n'
      pack:
        needs: [build]
        archive:
          files: ["dist/**"]
"#;

/// A running `murphy serve` and a client for it.
pub struct Server {
    pub url: String,
    running: Running,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub body: String,
    pub bytes: Vec<u8>,
}

impl Server {
    /// Starts `murphy serve --bind 127.0.0.1:0` in `test`'s folder and waits until it listens.
    pub fn start(test: Test) -> Server {
        let mut running = test
            .env("GH_HOOK", GITHUB_SECRET)
            .env("GL_HOOK", GITLAB_TOKEN)
            .env("AZ_USER", AZURE_USER)
            .env("AZ_PASSWORD", AZURE_PASSWORD)
            .args(["serve", "-v", "--bind", "127.0.0.1:0"])
            .spawn();
        let line = running.stdout_line();
        let url = line
            .strip_prefix("serving ")
            .unwrap_or_else(|| panic!("murphy serve did not say where it listens: {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        Server {
            url,
            running,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            // A fresh connection per request: after a 413 the server closes the connection
            // it did not read to the end, and a pooled one would be written to once more.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    pub fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.runtime.block_on(async {
            let response = request.send().await.expect("the server did not answer");
            let status = response.status().as_u16();
            let bytes = response.bytes().await.unwrap().to_vec();
            Answer {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
            }
        })
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.url)))
    }

    pub fn json(&self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        parse_json(&answer.body)
    }

    pub fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        self.send(request)
    }

    /// Another murphy command in the same folder.
    pub fn murphy<I, S>(&self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.running.murphy(args)
    }

    /// Stops the server (SIGTERM), as a person would; it ends with 0. Returns what it printed.
    pub fn stop(mut self) -> Output {
        self.running.signal(libc::SIGTERM);
        self.running.wait()
    }
}

/// A project with a commit and one run of [`PIPELINE`].
fn project() -> (Output, String) {
    let out = Test::new()
        .git_init()
        .pipeline(PIPELINE)
        .write("dist/app.txt", "the app\n")
        .commit("Add the app\n\nWith a body.")
        .args(["run"])
        .run();
    let sha = out.git(["rev-parse", "HEAD"]).trim().to_owned();
    (out, sha)
}

fn github_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// A `push` event as GitHub documents it (the fields murphy reads, and some it does not).
fn github_push(sha: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": sha,
        "created": true,
        "deleted": false,
        "forced": false,
        "compare": "https://github.com/octo/demo/compare/main",
        "commits": [{"id": sha, "message": "Add the app", "distinct": true}],
        "head_commit": {"id": sha, "message": "Add the app\n\nWith a body.", "timestamp": "2026-12-06T10:00:00Z"},
        "repository": {"id": 1, "full_name": "octo/demo", "html_url": "https://github.com/octo/demo"},
        "pusher": {"name": "octo", "email": "octo@example.com"},
        "sender": {"login": "octo", "id": 1}
    }))
    .unwrap()
}

fn github_headers(event: &str, delivery: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-event", event.to_owned()),
        ("x-github-delivery", delivery.to_owned()),
        ("x-hub-signature-256", github_signature(body)),
        ("user-agent", "GitHub-Hookshot/abc".to_owned()),
    ]
}

fn events(server: &Server) -> Vec<Value> {
    let out = server.murphy(["events", "list", "--json"]).run();
    let listed: Vec<Value> = parse_json(&out.stdout);
    // The API answers the same shape.
    assert_eq!(server.json("/api/events"), Value::Array(listed.clone()));
    listed
}

#[test]
fn pages_and_the_api_show_the_records_as_the_cli_does() {
    let (out, sha) = project();
    let run_id = out.runs()[0].run_id.clone();
    let server = Server::start(out.murphy(Vec::<String>::new()));

    // The API answers what `--json` prints.
    let runs: Value = parse_json(&server.murphy(["runs", "--json"]).run().stdout);
    assert_eq!(server.json("/api/runs"), runs);
    let shown: Value = parse_json(&server.murphy(["show", "--json", &run_id]).run().stdout);
    assert_eq!(server.json(&format!("/api/runs/{run_id}")), shown);
    let builds: Value = parse_json(&server.murphy(["archive", "list", "--json"]).run().stdout);
    assert_eq!(server.json("/api/builds"), builds);
    assert_eq!(builds.as_array().unwrap().len(), 1);
    assert_eq!(server.get("/api/runs/nope").status, 404);

    // The changes page: the commit, its description, the trigger it went through.
    let changes = server.get("/");
    assert_eq!(changes.status, 200);
    assert!(
        changes.body.contains(&format!("data-commit=\"{sha}\"")),
        "{}",
        changes.body
    );
    assert!(changes.body.contains("Add the app"), "{}", changes.body);
    assert!(
        changes.body.contains(&format!(
            "<li class=\"trigger\" data-trigger=\"local\"><b>local</b> <span class=\"state s-succeeded\">succeeded</span> <a href=\"/runs/{run_id}\">"
        )),
        "{}",
        changes.body
    );

    // The run page: stages with states, the log's colours as spans and its text escaped.
    let page = server.get(&format!("/runs/{run_id}"));
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<tr data-stage=\"build\">"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(
            "<span style=\"font-weight:bold;color:#cd0000\">red &lt;b&gt;bold&lt;/b&gt;</span> plain"
        ),
        "{}",
        page.body
    );
    assert!(!page.body.contains('\u{1b}'));
    assert!(
        page.body.contains("/archive/1/files/dist/app.txt"),
        "{}",
        page.body
    );

    // The build's file, as archived, and its provenance.
    let file = server.get("/archive/1/files/dist/app.txt");
    assert_eq!(file.status, 200);
    assert_eq!(file.bytes, b"the app\n");
    assert_eq!(server.get("/archive/1/files/dist/nope.txt").status, 404);
    let manifest = server.json("/archive/1/manifest.json");
    assert_eq!(
        manifest["provenance"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    let archive = server.get("/archive");
    assert!(
        archive
            .body
            .contains("audit: 1 build(s) match their records"),
        "{}",
        archive.body
    );
    assert!(
        archive.body.contains("<svg"),
        "the size chart: {}",
        archive.body
    );

    // The raw log, and the history index's answer for the commit.
    let log = server.get(&format!("/runs/{run_id}/logs/build"));
    assert!(log.body.contains("\u{1b}[1;31mred"), "{}", log.body);
    let history = server.json(&format!("/api/history?commit={sha}"));
    assert_eq!(history["runs"][0]["run_id"], run_id.as_str());
    assert_eq!(history["runs"][0]["stages"][0]["name"], "build");
    server.stop();
}

#[test]
fn webhooks_are_checked_stored_once_and_shown_beside_the_runs() {
    let (out, sha) = project();
    let server = Server::start(out.murphy(Vec::<String>::new()));

    // GitHub: a bad signature is refused and nothing is stored.
    let body = github_push(&sha);
    let mut bad = github_headers("push", "d-1", &body);
    bad[2].1 = github_signature(b"another body");
    assert_eq!(server.post("/hooks/github", &bad, &body).status, 401);
    let mut unsigned = github_headers("push", "d-1", &body);
    unsigned.remove(2);
    assert_eq!(server.post("/hooks/github", &unsigned, &body).status, 401);
    assert!(events(&server).is_empty());

    // A good one is stored; its redelivery is taken and not stored again.
    let headers = github_headers("push", "d-1", &body);
    let first = server.post("/hooks/github", &headers, &body);
    assert_eq!(first.status, 200, "{}", first.body);
    let again = server.post("/hooks/github", &headers, &body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(parse_json::<Value>(&again.body)["duplicate"], true);
    let pr = serde_json::to_vec(&json!({
        "action": "opened",
        "number": 7,
        "pull_request": {
            "html_url": "https://github.com/octo/demo/pull/7",
            "number": 7,
            "state": "open",
            "title": "Add the app",
            "merged": false,
            "head": {"ref": "feature", "sha": sha},
            "base": {"ref": "main", "sha": "1111111111111111111111111111111111111111"}
        },
        "repository": {"full_name": "octo/demo"}
    }))
    .unwrap();
    let opened = server.post(
        "/hooks/github",
        &github_headers("pull_request", "d-2", &pr),
        &pr,
    );
    assert_eq!(opened.status, 200, "{}", opened.body);

    // GitLab: a Pipeline Hook, by its token.
    let pipeline = serde_json::to_vec(&json!({
        "object_kind": "pipeline",
        "object_attributes": {"id": 31, "ref": "main", "tag": false, "sha": sha, "status": "success", "stages": ["test"]},
        "project": {"id": 1, "web_url": "https://gitlab.example.com/octo/demo"},
        "builds": []
    }))
    .unwrap();
    let gitlab = |token: &str, uuid: &str| {
        vec![
            ("x-gitlab-event", "Pipeline Hook".to_owned()),
            ("x-gitlab-token", token.to_owned()),
            ("x-gitlab-event-uuid", uuid.to_owned()),
        ]
    };
    assert_eq!(
        server
            .post("/hooks/gitlab", &gitlab("wrong", "g-1"), &pipeline)
            .status,
        401
    );
    for _ in 0..2 {
        let taken = server.post("/hooks/gitlab", &gitlab(GITLAB_TOKEN, "g-1"), &pipeline);
        assert_eq!(taken.status, 200, "{}", taken.body);
    }

    // Azure DevOps: a build.complete by basic authentication, deduplicated by its id.
    let build = serde_json::to_vec(&json!({
        "id": "4a5ba3b4-0f6c-4b0e-a5b2-6b7e2d1c8f1e",
        "eventType": "build.complete",
        "publisherId": "tfs",
        "message": {"text": "Build 20261206.1 succeeded"},
        "resource": {
            "buildNumber": "20261206.1",
            "status": "completed",
            "result": "succeeded",
            "sourceBranch": "refs/heads/main",
            "sourceVersion": sha,
            "_links": {"web": {"href": "https://dev.azure.com/octo/demo/_build/results?buildId=5"}}
        }
    }))
    .unwrap();
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        vec![(
            "authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
        )]
    };
    assert_eq!(
        server
            .post("/hooks/azure-devops", &basic(AZURE_USER, "wrong"), &build)
            .status,
        401
    );
    for _ in 0..2 {
        let taken = server.post(
            "/hooks/azure-devops",
            &basic(AZURE_USER, AZURE_PASSWORD),
            &build,
        );
        assert_eq!(taken.status, 200, "{}", taken.body);
    }

    // Too big a body: 413, nothing stored.
    let huge = vec![b' '; 2 * 1024 * 1024];
    let too_big = server.post(
        "/hooks/github",
        &github_headers("push", "d-9", &huge),
        &huge,
    );
    assert_eq!(too_big.status, 413);

    let stored = events(&server);
    let kinds: Vec<(&str, &str)> = stored
        .iter()
        .map(|e| (e["provider"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("github", "push"),
            ("github", "pr_opened"),
            ("gitlab", "pipeline"),
            ("azure-devops", "pipeline")
        ]
    );
    assert!(stored.iter().all(|e| e["commit"] == sha.as_str()));

    // The changes page shows them next to murphy's run of that commit, with the PR.
    let changes = server.get("/").body;
    let section = changes
        .split(&format!("data-commit=\"{sha}\""))
        .nth(1)
        .expect("the commit's section")
        .split("</section>")
        .next()
        .unwrap()
        .to_owned();
    assert!(section.contains("data-trigger=\"local\""), "{section}");
    assert!(
        section.contains("<a href=\"https://github.com/octo/demo/pull/7\">#7</a>"),
        "{section}"
    );
    assert!(section.contains("gitlab pipeline (success)"), "{section}");
    assert!(
        section.contains("azure-devops pipeline (succeeded)"),
        "{section}"
    );
    let history = server.json("/api/history?pr=7");
    assert_eq!(history["events"][0]["kind"], "pr_opened");

    // A secret in a payload is masked before it is stored.
    let leaky = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "after": sha,
        "head_commit": {"id": sha, "message": format!("oops {GITLAB_TOKEN}")}
    }))
    .unwrap();
    let taken = server.post(
        "/hooks/github",
        &github_headers("push", "d-3", &leaky),
        &leaky,
    );
    assert_eq!(taken.status, 200, "{}", taken.body);
    assert_eq!(events(&server)[4]["title"], "oops ***");

    let verified = server.murphy(["events", "verify"]).run();
    assert!(
        verified.stdout.contains("5 entries, the chain holds"),
        "{}",
        verified.stdout
    );
    let said = server.stop();
    assert!(
        said.stderr
            .contains("took github event d-1 (push) as entry 1"),
        "{}",
        said.stderr
    );
    for secret in [GITHUB_SECRET, GITLAB_TOKEN, AZURE_PASSWORD] {
        assert!(!said.stderr.contains(secret), "{}", said.stderr);
        assert!(!said.stdout.contains(secret));
        assert!(!out.read(".murphy/events.jsonl").contains(secret));
    }
}

#[test]
fn events_verify_names_the_first_edited_removed_or_moved_entry() {
    let (out, sha) = project();
    let server = Server::start(out.murphy(Vec::<String>::new()));
    for delivery in ["d-1", "d-2", "d-3", "d-4"] {
        let body = github_push(&sha);
        let taken = server.post(
            "/hooks/github",
            &github_headers("push", delivery, &body),
            &body,
        );
        assert_eq!(taken.status, 200, "{}", taken.body);
    }
    server.stop();
    let log = out.read(".murphy/events.jsonl");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4);
    let verify = |text: String| {
        out.write(".murphy/events.jsonl", &text);
        let (code, output) = out.murphy(["events", "verify"]).run_unchecked();
        (code, output.stdout)
    };
    let (code, said) = verify(log.clone());
    assert_eq!(code, Some(0), "{said}");

    // Edited: the second entry's delivery id changed.
    let edited = log.replacen("\"delivery\":\"d-2\"", "\"delivery\":\"d-X\"", 1);
    assert_ne!(edited, log);
    let (code, said) = verify(edited);
    assert_eq!(code, Some(1));
    assert!(
        said.contains(
            "events.jsonl:2: entry (seq 2) is bad: its digest does not match its content"
        ),
        "{said}"
    );

    // Removed: the third entry gone.
    let removed = [lines[0], lines[1], lines[3]].join("\n") + "\n";
    let (code, said) = verify(removed);
    assert_eq!(code, Some(1));
    assert!(
        said.contains(
            "events.jsonl:3: entry (seq 4) is bad: it does not follow the entry before it"
        ),
        "{said}"
    );

    // Reordered: the second and third swapped.
    let moved = [lines[0], lines[2], lines[1], lines[3]].join("\n") + "\n";
    let (code, said) = verify(moved);
    assert_eq!(code, Some(1));
    assert!(
        said.contains(
            "events.jsonl:2: entry (seq 3) is bad: it does not follow the entry before it"
        ),
        "{said}"
    );

    // A torn last line (a kill mid-write) is no damage.
    let torn = log.clone() + &lines[3][..20];
    let (code, said) = verify(torn);
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn a_token_guards_pages_but_not_webhooks_and_another_address_needs_one() {
    let (out, sha) = project();
    let refused = out
        .murphy(["serve", "--bind", "0.0.0.0:0"])
        .env("GH_HOOK", GITHUB_SECRET)
        .code(2)
        .run();
    assert!(
        refused
            .stderr
            .contains("refusing to serve on `0.0.0.0:0` without a token"),
        "{}",
        refused.stderr
    );

    let token = "serve-token-5678";
    let server = Server::start(
        out.murphy(Vec::<String>::new())
            .env("MURPHY_SERVE_TOKEN", token),
    );
    assert_eq!(server.get("/").status, 401);
    assert_eq!(server.get("/api/runs").status, 401);
    let with = server.send(
        server
            .client
            .get(format!("{}/api/runs", server.url))
            .bearer_auth(token),
    );
    assert_eq!(with.status, 200);
    let wrong = server.send(
        server
            .client
            .get(format!("{}/api/runs", server.url))
            .bearer_auth("serve-token-5679"),
    );
    assert_eq!(wrong.status, 401);
    let cookie = server.send(
        server
            .client
            .get(format!("{}/", server.url))
            .header("cookie", format!("murphy_token={token}")),
    );
    assert_eq!(cookie.status, 200);
    // A webhook needs only its own signature.
    let body = github_push(&sha);
    let taken = server.post(
        "/hooks/github",
        &github_headers("push", "d-1", &body),
        &body,
    );
    assert_eq!(taken.status, 200, "{}", taken.body);
    server.stop();
}

/// A run whose stage `wait` (after `before`, a stage that echoes its name, if given) has
/// started and waits for the file `go`, with a server over its records and the run's id.
pub fn waiting_run(before: Option<&str>) -> (Output, Running, Server, String) {
    let first = before
        .map(|name| format!("{name}: {{run: echo {name}}}\n  "))
        .unwrap_or_default();
    let needs = before
        .map(|name| format!("needs: [{name}], "))
        .unwrap_or_default();
    let out = Test::new()
        .git_init()
        .write(
            "pipeline.yml",
            &format!(
                "version: 1\nstages:\n  {first}wait: {{{needs}run: 'touch started; while [ ! -f go ]; do sleep 0.05; done'}}\n"
            ),
        )
        .commit("Wait for go")
        .args(["validate"])
        .run();
    let mut run = out.murphy(["run"]).spawn();
    run.wait_until("the stage started", || out.file("started").exists());
    let run_id = out.runs()[0].run_id.clone();
    let server = Server::start(out.murphy(Vec::<String>::new()));
    (out, run, server, run_id)
}

#[test]
fn a_run_in_progress_streams_its_stages_and_index_rebuild_recreates_the_index() {
    let (out, run, server, run_id) = waiting_run(None);
    let page = server.get(&format!("/runs/{run_id}"));
    assert!(page.body.contains("data-live=\"1\""), "{}", page.body);

    let url = format!("{}/runs/{run_id}/stream", server.url);
    let seen = server.runtime.block_on(async {
        use futures_util::StreamExt;
        let response = server.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        let mut text = String::new();
        let mut released = false;
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if !released && text.contains("\"state\":\"running\"") {
                // The first event showed the stage running: now let it finish.
                std::fs::write(out.file("go"), "").unwrap();
                released = true;
            }
        }
        text
    });
    run.wait();
    let updates: Vec<Value> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| parse_json(d.trim()))
        .collect();
    assert!(updates.len() >= 2, "{seen}");
    assert_eq!(updates[0]["stages"][0]["state"], "running");
    let last = updates.last().unwrap();
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["stages"][0]["state"], "succeeded");
    server.stop();

    // The index is only an index: removed, it is made again from the records.
    std::fs::remove_file(out.file(".murphy/index.sqlite")).unwrap();
    let rebuilt = out.murphy(["index", "rebuild"]).run();
    assert!(
        rebuilt.stdout.contains(": 1 runs, 0 builds, 0 events"),
        "{}",
        rebuilt.stdout
    );
}

#[test]
fn a_mistake_in_serve_or_an_issue_entry_points_into_the_file() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            serve:
              webhooks:
                github: {secrt: GH_HOOK}
            notify:
              - issue: {github: octo, token_secret: GH_TOKEN, triggers: [nighty]}
            stages:
              a: {run: \"true\"}
            ",
        )
        .args(["validate"])
        .code(2)
        .run();
    assert!(
        out.stderr
            .contains("pipeline.yml:4:14: unknown key `secrt` (did you mean `secret`?)"),
        "{}",
        out.stderr
    );
    out.pipeline(
        "
        version: 1
        notify:
          - issue: {github: octo, token_secret: GH_TOKEN, triggers: [nighty]}
        stages:
          a: {run: \"true\"}
        ",
    );
    let said = out.murphy(["validate"]).code(2).run().stderr;
    for expected in [
        "`octo` is not a GitHub repository: write `OWNER/NAME`",
        "`nighty` is not a trigger",
        "`GH_TOKEN`",
    ] {
        assert!(said.contains(expected), "{expected}: {said}");
    }
}
