//! The dashboard in a real browser: Debian's headless Chromium shows a run's stages
//! (`--dump-dom`), and a stage of a run in progress changes state on the open page without a
//! reload, watched over the DevTools protocol (a mark left on the page's `window` survives,
//! which a reload would wipe).

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::stream::MaybeTlsStream;

use crate::support::parse_json;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Debian's chromium, installed with apt-get when missing.
fn chromium() -> &'static Path {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| crate::support::ensure_debian("chromium", &["chromium"]));
    Path::new(CHROMIUM)
}

/// A headless Chromium in its own process group and profile, stopped (the whole group) on drop.
struct Browser {
    child: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    fn command(profile: &Path) -> Command {
        let mut command = Command::new(chromium());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdin(Stdio::null())
            .process_group(0);
        command
    }

    /// The DOM of `url` once loaded and its scripts ran.
    fn dump_dom(url: &str) -> String {
        let profile = tempfile::tempdir().unwrap();
        let out = Browser::command(profile.path())
            .args(["--dump-dom", url])
            .stderr(Stdio::null())
            .output()
            .expect("cannot start chromium");
        assert!(out.status.success(), "chromium --dump-dom failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Opens `url` with the DevTools protocol on a port of Chromium's choosing.
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Browser::command(profile.path())
            .arg("--remote-debugging-port=0")
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromium");
        Browser { child, profile }
    }

    /// The DevTools websocket of the page showing `url`.
    fn page_socket(&self, url: &str) -> String {
        let port_file: PathBuf = self.profile.path().join("DevToolsActivePort");
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < give_up, "chromium never showed {url}");
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next()?.parse::<u16>().ok())
                && let Some(list) = http_get(port, "/json/list")
            {
                let targets: Vec<Value> = parse_json(&list);
                if let Some(socket) = targets
                    .iter()
                    .find(|t| t["type"] == "page" && t["url"] == url)
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                {
                    return socket.to_owned();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signals the process group this test started Chromium in.
        unsafe { libc::killpg(pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A GET to Chromium's DevTools endpoint (which answers HTTP/1.1 only).
fn http_get(port: u16, path: &str) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .ok()?;
        response.text().await.ok()
    })
}

/// One DevTools session with a page.
struct DevTools {
    socket: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl DevTools {
    fn connect(url: &str) -> DevTools {
        let (socket, _) = tungstenite::connect(url).expect("cannot reach the page's DevTools");
        DevTools { socket, next: 0 }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        self.next += 1;
        let id = self.next;
        let call = json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true},
        });
        self.socket
            .send(Message::Text(call.to_string().into()))
            .unwrap();
        loop {
            let Message::Text(text) = self.socket.read().unwrap() else {
                continue;
            };
            let reply: Value = parse_json(&text);
            if reply["id"] == id {
                return reply["result"]["result"]["value"].clone();
            }
        }
    }

    /// Evaluates `expression` until `done` holds for its value; returns that value.
    fn wait_for(&mut self, what: &str, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.eval(expression);
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < give_up,
                "gave up waiting for {what}: {value}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn the_dashboard_shows_stages_and_follows_a_live_run_without_a_reload() {
    let (out, run, server, run_id) = crate::serve::waiting_run(Some("lint"));
    let page = format!("{}/runs/{run_id}", server.url);

    // The page as served says `running`; the browser shows the stages.
    let dom = Browser::dump_dom(&page);
    assert!(dom.contains("<tr data-stage=\"lint\">"), "{dom}");
    assert!(dom.contains("<tr data-stage=\"wait\">"), "{dom}");
    assert!(dom.contains("data-live=\"1\""), "{dom}");

    let browser = Browser::open(&page);
    let mut tools = DevTools::connect(&browser.page_socket(&page));
    let state = "document.querySelector('tr[data-stage=\"wait\"] .stage-state').textContent";
    // Once the stream's first update is drawn, leave a mark on this document.
    tools.wait_for(
        "the first live update",
        "Number(document.body.dataset.updates || 0)",
        |v| v.as_u64() >= Some(1),
    );
    assert_eq!(tools.eval(state), "running");
    tools.eval("window.murphyMark = 'the same page'; true");

    std::fs::write(out.file("go"), "").unwrap();
    let seen = tools.wait_for(
        "the stage to succeed on the page",
        &format!(
            "JSON.stringify({{state: {state}, run: document.getElementById('run-status').textContent, mark: window.murphyMark || null, live: document.body.dataset.live}})"
        ),
        |v| {
            v.as_str()
                .is_some_and(|s| s.contains("\"state\":\"succeeded\""))
        },
    );
    let seen: Value = parse_json(seen.as_str().unwrap());
    assert_eq!(seen["run"], "succeeded", "{seen}");
    assert_eq!(
        seen["mark"], "the same page",
        "the page was reloaded: {seen}"
    );
    assert_eq!(
        seen["live"], "0",
        "the stream was closed after the run: {seen}"
    );
    run.wait();
    drop(browser);
    server.stop();
}
