//! Publishing: each (target, file) exactly once, whatever fails on the way.
//!
//! A file counts as published when the server confirmed it, and that confirmation is
//! journalled (and fsynced) at once: a resumed run skips what its journal confirms. Before
//! uploading, each target asks whether the file is already there: the same bytes are a
//! confirmation (a re-run of a finished release uploads nothing), other bytes are an error,
//! never an overwrite. Connection errors, timeouts, 5xx and 429 are retried with exponential
//! backoff and jitter (429 and 503 honour `Retry-After`); other refusals stop at once with the
//! server's answer.

pub mod http;
pub mod pages;
pub mod pypi;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::archive::bundle::sha256_file;
use crate::inputs;
use crate::plan::Target;

/// How one publication ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmed {
    Uploaded,
    /// The server already had these exact bytes.
    AlreadyPresent,
}

/// Why a publication did not (yet) succeed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try after a pause (the server's `Retry-After`, if it gave one).
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// Retrying cannot help: bad credentials, a refusal, other bytes already published.
    Fatal(String),
}

impl Failure {
    pub fn fatal(message: impl Into<String>) -> Failure {
        Failure::Fatal(message.into())
    }

    /// Classifies a transport error: anything short of an HTTP answer is worth a retry.
    pub fn from_reqwest(err: reqwest::Error) -> Failure {
        let message = crate::causes::line(&err);
        if err.is_builder() {
            Failure::Fatal(message)
        } else {
            Failure::Retry {
                message,
                after: None,
            }
        }
    }

    /// Classifies an HTTP answer that was not a success.
    pub fn from_status(
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &str,
    ) -> Failure {
        let answer = server_answer(status, body);
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Failure::Retry {
                message: answer,
                after: retry_after(headers),
            }
        } else {
            Failure::Fatal(answer)
        }
    }
}

/// `403 Forbidden: invalid credentials`, the server's own words cut to one readable line.
pub fn server_answer(status: reqwest::StatusCode, body: &str) -> String {
    let text: String = strip_tags(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let text: String = text.chars().take(300).collect();
    if text.is_empty() {
        format!("the server answered {status}")
    } else {
        format!("the server answered {status}: {text}")
    }
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The HTTP client murphy talks to servers with: one place for its timeouts, identity and
/// redirects. `timeout` bounds a whole request (an upload of a large file included). It never
/// sends `Referer`: the URL it would name may be a secret (a Slack webhook's).
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .user_agent(concat!("murphy/", env!("CARGO_PKG_VERSION")))
        .referer(false)
        .redirect(reqwest::redirect::Policy::custom(redirect))
        .build()
}

/// As many redirects as reqwest follows by default.
const MAX_REDIRECTS: usize = 10;

tokio::task_local! {
    /// Set while [`upload`] sends, for [`redirect`]: reqwest's redirect policy belongs to the
    /// client and sees neither the method nor the body, and one client reads, uploads and
    /// notifies.
    static UPLOADING: ();
}

/// Which redirects murphy follows. A read or a notification follows any (to another host
/// without `Authorization`, which reqwest drops). An upload follows only a 307 or 308 to the
/// same scheme, host and port: another host must not receive the file, and a 301, 302 or 303
/// would turn the upload into a GET whose success looks like a publication.
fn redirect(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    if attempt.previous().len() >= MAX_REDIRECTS {
        return attempt.error("too many redirects");
    }
    if UPLOADING.try_with(|_| ()).is_err() {
        return attempt.follow();
    }
    let same_origin = attempt
        .previous()
        .first()
        .is_some_and(|first| first.origin() == attempt.url().origin());
    let keeps_the_request = matches!(
        attempt.status(),
        reqwest::StatusCode::TEMPORARY_REDIRECT | reqwest::StatusCode::PERMANENT_REDIRECT
    );
    if same_origin && keeps_the_request {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

/// Sends an upload. A redirect it may not follow (see [`redirect`]) ends it with an error that
/// names where the server wanted the file: nothing was sent there, and nothing counts as
/// published.
pub async fn upload(request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
    let response = UPLOADING
        .scope((), request.send())
        .await
        .map_err(Failure::from_reqwest)?;
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok());
    match location {
        Some(location) if response.status().is_redirection() => {
            let next = response
                .url()
                .join(location)
                .map_or_else(|_| location.to_owned(), |u| u.to_string());
            let from = response.url().clone();
            Err(Failure::fatal(format!(
                "{from} answered {} and redirects the upload to {}; an upload follows a redirect only to the same host with 307 or 308, so nothing was sent there (is the URL right?)",
                response.status(),
                crate::environment::strip_userinfo(&next)
            )))
        }
        _ => Ok(response),
    }
}

/// Warns, once per server, when secret `secret` is about to go over plain `http://` to
/// another machine, where anyone on the way can read it.
pub fn warn_plain_http(url: &str, secret: &str) {
    static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let Ok(url) = reqwest::Url::parse(url) else {
        return;
    };
    if url.scheme() != "http" || is_loopback(&url) {
        return;
    }
    let origin = url.origin().ascii_serialization();
    let first = WARNED.lock().map_or(true, |mut warned| {
        warned.insert(format!("{secret} {origin}"))
    });
    if first {
        tracing::warn!(
            "secret `{secret}` goes to {origin} over plain http://, readable by anyone on the way; use https://"
        );
    }
}

/// Whether `url` names this machine: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let host = host.to_ascii_lowercase();
            host == "localhost" || host.ends_with(".localhost")
        }
    }
}

/// One thing to publish to one target: a file, or a folder (git-pages), or a command run.
#[derive(Debug, Clone)]
pub struct Item {
    /// What the records call it: the file's path relative to the pipeline's directory.
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 of the file (a git tree id for a pages folder, a command's own digest).
    pub digest: String,
}

/// What a target needs to know of the run.
pub struct Release<'a> {
    pub root: &'a Path,
    pub state_dir: &'a Path,
    /// The pipeline's name, for `{name}` in URLs and commit messages.
    pub name: &'a str,
    pub version: Option<&'a str>,
    pub secrets: &'a BTreeMap<String, String>,
    pub client: &'a reqwest::Client,
}

impl Release<'_> {
    pub fn secret(&self, name: &str) -> Result<&str, Failure> {
        self.secrets
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Failure::fatal(format!("secret `{name}` is not loaded")))
    }
}

/// The files a target publishes, with their digests. A pattern that matches nothing is an
/// error: a release that silently publishes less than it says is worse than a failed one.
pub fn items(target: &Target, root: &Path, state_dir: &Path) -> Result<Vec<Item>, String> {
    let patterns = match target {
        Target::Pypi { files, .. } | Target::Http { files, .. } => files.clone(),
        Target::Command { files, run, .. } if files.is_empty() => {
            let digest = crate::fingerprint::hex(blake3::hash(run.as_bytes()).as_bytes());
            return Ok(vec![Item {
                name: "(command)".into(),
                path: root.to_owned(),
                digest,
            }]);
        }
        Target::Command { files, .. } => files.clone(),
        Target::GitPages { dir, .. } => {
            let path = root.join(dir);
            if !path.is_dir() {
                return Err(format!(
                    "`{dir}` is not a folder: nothing to publish to pages"
                ));
            }
            let digest =
                pages::tree_digest(&path).map_err(|e| format!("cannot read `{dir}`: {e}"))?;
            return Ok(vec![Item {
                name: dir.clone(),
                path,
                digest,
            }]);
        }
    };
    let mut items = Vec::new();
    for pattern in &patterns {
        let found = inputs::expand(root, std::slice::from_ref(pattern), state_dir)
            .map_err(|e| format!("cannot expand `{pattern}`: {e}"))?;
        if found.is_empty() {
            return Err(format!("`{pattern}` matched no file to publish"));
        }
        if let Some((relative, target)) = inputs::leading_outside(root, &found) {
            return Err(format!(
                "`{}` is a symlink to `{}`, outside the project: nothing from outside is published",
                relative.display(),
                target.display()
            ));
        }
        for relative in found {
            let path = root.join(&relative);
            let (digest, _) =
                sha256_file(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            items.push(Item {
                name: relative.to_string_lossy().into_owned(),
                path,
                digest,
            });
        }
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    items.dedup_by(|a, b| a.name == b.name);
    Ok(items)
}

/// Publishes one item to one target, once.
pub async fn publish(
    target: &Target,
    item: &Item,
    release: &Release<'_>,
) -> Result<Confirmed, Failure> {
    match target {
        Target::Pypi { .. } => pypi::publish(target, item, release).await,
        Target::Http { .. } => http::publish(target, item, release).await,
        Target::GitPages { .. } => pages::publish(target, item, release),
        Target::Command { .. } => Err(Failure::fatal("commands are run by the stage, not here")),
    }
}

/// Checks, without publishing, that a target can work: credentials present and (where the
/// server can tell) accepted, the endpoint reachable. `Ok` carries what was checked.
pub async fn preflight(target: &Target, release: &Release<'_>) -> Result<String, String> {
    match target {
        Target::Pypi { .. } => pypi::preflight(target, release).await,
        Target::Http { .. } => http::preflight(target, release).await,
        Target::GitPages { .. } => pages::preflight(target, release),
        Target::Command { run, .. } => Ok(format!("runs `{run}` (nothing to check beforehand)")),
    }
}

/// Retries `attempt` on retryable failures, `attempts` times in all, waiting `base`, then
/// twice as long each time (at most a minute), plus up to half as much again at random so
/// that many clients do not come back at once.
pub async fn with_retries<F, Fut>(
    attempts: u32,
    base: Duration,
    mut attempt: F,
) -> Result<Confirmed, String>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<Confirmed, Failure>>,
{
    let mut last = String::new();
    for n in 1..=attempts.max(1) {
        match attempt(n).await {
            Ok(done) => return Ok(done),
            Err(Failure::Fatal(message)) => return Err(message),
            Err(Failure::Retry { message, after }) => {
                last = message;
                if n == attempts.max(1) {
                    break;
                }
                let backoff = base
                    .saturating_mul(1 << (n - 1).min(10))
                    .min(Duration::from_secs(60));
                let jitter = Duration::from_millis(
                    crate::random::u64() % (backoff.as_millis() as u64 / 2 + 1),
                );
                let pause = after.map_or(backoff + jitter, |a| a.min(Duration::from_secs(60)));
                tracing::info!(
                    "{last}; trying again in {}",
                    crate::report::format_duration(pause)
                );
                tokio::time::sleep(pause).await;
            }
        }
    }
    Err(format!(
        "{last} (gave up after {} attempts)",
        attempts.max(1)
    ))
}

/// The (stage, target, item, digest) a run's journal confirms: what a resumed run skips.
pub type ConfirmedSet = HashSet<(String, String, String, String)>;

/// A target's name in records and messages: its kind and where it publishes, so two targets
/// of one kind (or two stages publishing the same file to two places) never share a
/// confirmation.
pub fn target_ids(targets: &[Target]) -> Vec<String> {
    targets
        .iter()
        .map(|t| match t {
            Target::Pypi { repository_url, .. } => format!("pypi {repository_url}"),
            Target::Http { url, .. } => format!("http {url}"),
            Target::GitPages { remote, branch, .. } => format!("git-pages {remote} {branch}"),
            Target::Command { run, .. } => format!("command `{run}`"),
        })
        .collect()
}

/// `{name}`, `{version}`, `{file}`, `{path}` in a URL template.
pub fn fill(template: &str, name: &str, version: Option<&str>, item: &Item) -> String {
    let file = Path::new(&item.name)
        .file_name()
        .map_or(item.name.clone(), |f| f.to_string_lossy().into_owned());
    template
        .replace("{name}", name)
        .replace("{version}", version.unwrap_or("dev"))
        .replace("{file}", &file)
        .replace("{path}", &item.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_one_readable_line() {
        let answer = server_answer(
            reqwest::StatusCode::FORBIDDEN,
            "<html><body><h1>403</h1>\n<p>Invalid   or expired token</p></body></html>",
        );
        assert_eq!(
            answer,
            "the server answered 403 Forbidden: 403 Invalid or expired token"
        );
    }

    #[test]
    fn loopback_is_this_machine_only() {
        for (url, loopback) in [
            ("http://127.0.0.1:8080/x", true),
            ("http://127.0.0.2/", true),
            ("http://[::1]:80/", true),
            ("http://localhost/", true),
            ("http://pypi.localhost/", true),
            ("http://192.0.2.7/", false),
            ("http://0.0.0.0:9/", false),
            ("http://example.org/", false),
            ("http://localhost.example.org/", false),
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert_eq!(is_loopback(&parsed), loopback, "{url}");
        }
    }

    #[tokio::test]
    async fn retries_stop_at_the_first_fatal_answer_and_give_up_after_the_limit() {
        let mut calls = 0;
        let result = with_retries(3, Duration::from_millis(1), |_| {
            calls += 1;
            async { Err(Failure::fatal("403")) }
        })
        .await;
        assert_eq!((result, calls), (Err("403".into()), 1));
        let mut calls = 0;
        let result = with_retries(3, Duration::from_millis(1), |_| {
            calls += 1;
            async {
                Err(Failure::Retry {
                    message: "503".into(),
                    after: None,
                })
            }
        })
        .await;
        assert_eq!(calls, 3);
        assert_eq!(result, Err("503 (gave up after 3 attempts)".into()));
        let result = with_retries(5, Duration::from_millis(1), |n| async move {
            if n < 3 {
                Err(Failure::Retry {
                    message: "reset".into(),
                    after: None,
                })
            } else {
                Ok(Confirmed::Uploaded)
            }
        })
        .await;
        assert_eq!(result, Ok(Confirmed::Uploaded));
    }
}
