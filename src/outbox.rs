//! Notifications that are never lost: each is written to the outbox on disk before it is
//! sent, and leaves it only when the receiver confirmed it. One the receiver refused or never
//! heard stays for the next run or `murphy outbox flush`.
//!
//! The outbox holds what to say and which `notify:` entry to say it to, never the URL: a
//! Slack webhook URL is a secret, resolved when the message is sent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::atomic_file;
use crate::plan::{Notify, NotifyEvent, NotifyKind, UrlSource};
use crate::records::RunView;

pub const MESSAGE_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub v: u32,
    pub id: String,
    pub created_at: Timestamp,
    /// Which `notify:` entry (by position, for people) it goes to.
    pub target: usize,
    /// What that entry is (kind, URL or secret name, events): a message follows its entry,
    /// not a position, if `notify:` is edited meanwhile.
    pub target_key: String,
    pub kind: NotifyKind,
    pub event: NotifyEvent,
    pub body: Value,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// How waiting messages are delivered: where each `notify:` entry posts, the secrets its URL
/// may name, the client, and how many tries each message gets.
pub struct Delivery<'a> {
    pub notify: &'a [Notify],
    pub secrets: &'a std::collections::BTreeMap<String, String>,
    pub client: &'a reqwest::Client,
    pub tries: u32,
}

pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(state_dir: &Path) -> Outbox {
        Outbox::at(state_dir.join("outbox"))
    }

    /// An outbox in `dir` (the shared outbox's messages wait in one while they are sent).
    pub fn at(dir: PathBuf) -> Outbox {
        Outbox { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding message `id`.
    pub fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes a message durably; from here on it is never lost.
    pub fn put(&self, message: &Message) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let mut message = message.clone();
        redact_strings(&mut message.body);
        if let Some(error) = &mut message.last_error {
            *error = crate::secrets::redact(error).into_owned();
        }
        let text = serde_json::to_vec_pretty(&message).map_err(io::Error::other)?;
        atomic_file::write(&self.dir.join(format!("{}.json", message.id)), &text)
    }

    /// Holds the outbox against every other process that sends or moves its messages, until
    /// the file returned is dropped.
    pub fn lock(&self) -> io::Result<fs::File> {
        fs::create_dir_all(&self.dir)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(lock)
    }

    /// Every waiting message, oldest first. One that does not read is reported, not dropped.
    pub fn list(&self) -> io::Result<Vec<Result<Message, (PathBuf, String)>>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let read = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Message>(&b).map_err(|e| e.to_string()));
            out.push(read.map_err(|e| (path, e)));
        }
        out.sort_by(|a, b| match (a, b) {
            (Ok(a), Ok(b)) => a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(a), Err(b)) => a.0.cmp(&b.0),
        });
        Ok(out)
    }

    /// Tries to deliver every waiting message, each up to `tries` times. Returns how many were
    /// delivered and what is still waiting, with why.
    pub async fn flush(&self, how: &Delivery<'_>) -> io::Result<(usize, Vec<(String, String)>)> {
        // One flusher at a time (a run and a cron job): a message is sent by one of them.
        let _lock = self.lock()?;
        let mut delivered = 0;
        let mut waiting = Vec::new();
        for item in self.list()? {
            let mut message = match item {
                Ok(message) => message,
                Err((path, err)) => {
                    waiting.push((path.display().to_string(), format!("unreadable: {err}")));
                    continue;
                }
            };
            let result = match how.notify.iter().find(|n| key(n) == message.target_key) {
                Some(target) => send(&message, target, how.secrets, how.client, how.tries)
                    .await
                    .map_err(|(made, err)| {
                        message.attempts += made;
                        err
                    }),
                None => Err(format!(
                    "its `notify:` entry ({}) is gone or changed; deliver it by hand or delete the file",
                    message.target_key
                )),
            };
            match result {
                Ok(()) => {
                    match fs::remove_file(self.dir.join(format!("{}.json", message.id))) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                    delivered += 1;
                }
                Err(err) => {
                    message.last_error = Some(err.clone());
                    self.put(&message)?;
                    waiting.push((message.id.clone(), err));
                }
            }
        }
        Ok((delivered, waiting))
    }
}

/// Masks secrets in every string of a JSON value, before it is written or sent.
fn redact_strings(value: &mut Value) {
    match value {
        Value::String(s) => *s = crate::secrets::redact(s).into_owned(),
        Value::Array(items) => items.iter_mut().for_each(redact_strings),
        Value::Object(map) => map.values_mut().for_each(redact_strings),
        _ => {}
    }
}

async fn send(
    message: &Message,
    target: &Notify,
    secrets: &std::collections::BTreeMap<String, String>,
    client: &reqwest::Client,
    tries: u32,
) -> Result<(), (u32, String)> {
    if let (Some(issue), UrlSource::Literal(api)) = (&target.issue, &target.url) {
        let token = secrets.get(&issue.token_secret).ok_or_else(|| {
            (
                0,
                format!(
                    "secret `{}` (the issue token) is not set",
                    issue.token_secret
                ),
            )
        })?;
        return crate::issues::send(&message.body, api, issue, token, client, tries).await;
    }
    let url = match &target.url {
        UrlSource::Literal(url) => url.clone(),
        UrlSource::Secret(name) => {
            let url = secrets
                .get(name)
                .cloned()
                .ok_or_else(|| (0, format!("secret `{name}` (the URL) is not set")))?;
            crate::publish::warn_plain_http(&url, name);
            url
        }
    };
    let mut last = String::new();
    let mut made = 0;
    for n in 0..tries.max(1) {
        made += 1;
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(200 << n.min(5))).await;
        }
        let mut body = message.body.clone();
        redact_strings(&mut body);
        let request = client
            .post(&url)
            .timeout(Duration::from_secs(10))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                last = crate::publish::server_answer(status, &body);
                if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                    break;
                }
            }
            // The URL may be a secret (Slack): reqwest's message would carry it.
            Err(err) => last = crate::causes::line(&err.without_url()),
        }
    }
    Err((made, crate::secrets::redact(&last).into_owned()))
}

/// A stable name for a `notify:` entry: its kind, where it posts, and what it listens for.
pub fn key(target: &Notify) -> String {
    let url = match (&target.url, &target.issue) {
        (UrlSource::Literal(url), Some(issue)) => format!("{url} {}", issue.repository),
        (UrlSource::Literal(url), None) => url.clone(),
        (UrlSource::Secret(name), _) => format!("secret:{name}"),
    };
    let on: Vec<&str> = target.on.iter().map(|e| event_word(*e)).collect();
    format!("{:?} {url} on {}", target.kind, on.join(",")).to_lowercase()
}

/// The messages a finished run sends: `success` or `failure`, and `release` for a tag run
/// that published.
pub fn messages(view: &RunView, notify: &[Notify]) -> Vec<Message> {
    use crate::records::RunState;
    let mut events = Vec::new();
    match view.status {
        RunState::Succeeded => {
            events.push(NotifyEvent::Success);
            let uploaded = view
                .published
                .iter()
                .any(|p| p.outcome == crate::publish::Confirmed::Uploaded);
            if view.trigger == Some(crate::trigger::Trigger::Tag) && uploaded {
                events.push(NotifyEvent::Release);
            }
        }
        RunState::Failed => events.push(NotifyEvent::Failure),
        _ => {}
    }
    let mut out = Vec::new();
    for (index, target) in notify.iter().enumerate() {
        if target.kind == NotifyKind::Issue {
            if let Some(body) = crate::issues::body(view, target) {
                let failed = body["failed"].as_array().is_some_and(|f| !f.is_empty());
                out.push(Message {
                    v: MESSAGE_VERSION,
                    id: format!("{}-issues-{index}", view.run_id),
                    created_at: Timestamp::now(),
                    target: index,
                    target_key: key(target),
                    kind: target.kind,
                    event: if failed {
                        NotifyEvent::Failure
                    } else {
                        NotifyEvent::Success
                    },
                    body,
                    attempts: 0,
                    last_error: None,
                });
            }
            continue;
        }
        for &event in events.iter().filter(|e| target.on.contains(e)) {
            out.push(Message {
                v: MESSAGE_VERSION,
                id: format!("{}-{}-{index}", view.run_id, event_word(event)),
                created_at: Timestamp::now(),
                target: index,
                target_key: key(target),
                kind: target.kind,
                event,
                body: body(view, target.kind, event),
                attempts: 0,
                last_error: None,
            });
        }
    }
    out
}

fn event_word(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::Success => "success",
        NotifyEvent::Failure => "failure",
        NotifyEvent::Release => "release",
    }
}

/// The run at a glance: generic JSON, or Slack's `{"text": ...}`.
fn body(view: &RunView, kind: NotifyKind, event: NotifyEvent) -> Value {
    let change = view.change.as_ref();
    let links = change.map(|c| c.links()).unwrap_or_default();
    let version = change
        .and_then(|c| c.version.as_ref())
        .map(|v| v.text.clone());
    let failed: Vec<&str> = view
        .stages
        .iter()
        .filter(|s| {
            matches!(
                s.state,
                crate::records::StageState::Failed | crate::records::StageState::TimedOut
            )
        })
        .map(|s| s.name.as_str())
        .collect();
    match kind {
        NotifyKind::Webhook | NotifyKind::Issue => json!({
            "event": event_word(event),
            "run_id": view.run_id,
            "pipeline": view.pipeline,
            "status": view.status.word(),
            "trigger": view.trigger.map(|t| t.name()),
            "version": version,
            "description": view.description,
            "links": links,
            "failed_stages": failed,
            "published": view.published.iter().map(|p| json!({"target": p.target, "file": p.file})).collect::<Vec<_>>(),
        }),
        NotifyKind::Slack => {
            let what = match event {
                NotifyEvent::Release => format!(
                    "released {} {}",
                    view.pipeline,
                    version.as_deref().unwrap_or("")
                ),
                _ => format!(
                    "run {} of {} {}",
                    view.run_id,
                    view.pipeline,
                    view.status.word()
                ),
            };
            let mut text = format!("murphy: {what}");
            if !failed.is_empty() {
                text.push_str(&format!(" (failed: {})", failed.join(", ")));
            }
            if let Some(d) = &view.description {
                text.push_str(&format!("\n{}", d.lines().next().unwrap_or_default()));
            }
            for (name, link) in [
                ("commit", &links.commit),
                ("diff", &links.diff),
                ("PR", &links.pr),
                ("CI run", &links.ci_run),
            ] {
                if let Some(link) = link {
                    text.push_str(&format!("\n<{link}|{name}>"));
                }
            }
            json!({"text": text})
        }
    }
}
