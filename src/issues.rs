//! Failures filed as issues (`notify: [{issue: ...}]`): one GitHub or GitLab issue per failing
//! stage, found again by a marker in its body (`<!-- murphy:PIPELINE/STAGE -->`), commented
//! on when the stage fails again and closed when it passes.
//!
//! A run's issue work is one outbox message, so nothing is lost while the API is down: a
//! message that fails midway is sent again whole, and finds the issues it already opened by
//! their markers instead of opening them twice.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::plan::{IssueProvider, IssueTarget, Notify};
use crate::records::{RunView, StageState};

/// The label every issue murphy opens carries, to list them in one call.
pub const LABEL: &str = "murphy";

/// The marker that names a stage's issue.
pub fn marker(pipeline: &str, stage: &str) -> String {
    format!("<!-- murphy:{pipeline}/{stage} -->")
}

/// What a finished run asks of the filer, if its trigger is one it watches: the stages that
/// failed and those that passed.
pub fn body(view: &RunView, target: &Notify) -> Option<Value> {
    let issue = target.issue.as_ref()?;
    if !view.trigger.is_some_and(|t| issue.triggers.contains(&t)) {
        return None;
    }
    let names = |states: &[StageState]| -> Vec<&str> {
        view.stages
            .iter()
            .filter(|s| states.contains(&s.state))
            .map(|s| s.name.as_str())
            .collect()
    };
    let failed = names(&[StageState::Failed, StageState::TimedOut]);
    let passed = names(&[StageState::Succeeded, StageState::Cached]);
    if failed.is_empty() && passed.is_empty() {
        return None;
    }
    let change = view.change.as_ref();
    Some(json!({
        "run_id": view.run_id,
        "pipeline": view.pipeline,
        "trigger": view.trigger.map(|t| t.name()),
        "description": view.description,
        "commit": change.and_then(|c| c.git.as_ref()).and_then(|g| g.sha.clone()),
        "links": change.map(|c| c.links()).unwrap_or_default(),
        "failed": failed,
        "passed": passed,
    }))
}

/// Why a call failed, and whether trying again later may help (a 5xx, a 429, no answer).
struct Failure {
    again: bool,
    message: String,
}

/// Does what `body` asks, each call tried up to `tries` times with backoff. Returns how many
/// tries were made with the last error, when it could not.
pub async fn send(
    body: &Value,
    api: &str,
    issue: &IssueTarget,
    token: &str,
    client: &reqwest::Client,
    tries: u32,
) -> Result<(), (u32, String)> {
    let mut made = 0;
    let mut last = String::new();
    for n in 0..tries.max(1) {
        made += 1;
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(200 << n.min(5))).await;
        }
        let api = Api {
            root: api,
            issue,
            token,
            client,
        };
        match api.file(body).await {
            Ok(()) => return Ok(()),
            Err(failure) => {
                last = failure.message;
                if !failure.again {
                    break;
                }
            }
        }
    }
    Err((made, crate::secrets::redact(&last).into_owned()))
}

struct Api<'a> {
    root: &'a str,
    issue: &'a IssueTarget,
    token: &'a str,
    client: &'a reqwest::Client,
}

impl Api<'_> {
    async fn file(&self, body: &Value) -> Result<(), Failure> {
        let words = |key: &str| -> Vec<String> {
            body[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let pipeline = body["pipeline"].as_str().unwrap_or_default();
        let run = body["run_id"].as_str().unwrap_or_default();
        let open = self.open_issues().await?;
        let context = context(body);
        for stage in words("failed") {
            let mark = marker(pipeline, &stage);
            match open.get(&mark) {
                Some(number) => {
                    let text = format!("Stage `{stage}` failed again in run {run}.{context}");
                    self.comment(*number, &text).await?;
                }
                None => {
                    let title = format!("murphy: stage `{stage}` of `{pipeline}` fails");
                    let text = format!(
                        "{mark}\nStage `{stage}` of `{pipeline}` failed in run {run}.{context}\n\nmurphy comments here when it fails again and closes this issue when it passes."
                    );
                    self.create(&title, &text).await?;
                }
            }
        }
        for stage in words("passed") {
            if let Some(number) = open.get(&marker(pipeline, &stage)) {
                let text = format!("Stage `{stage}` passed in run {run}: closing.{context}");
                self.comment(*number, &text).await?;
                self.close(*number).await?;
            }
        }
        Ok(())
    }

    fn project(&self) -> String {
        match self.issue.provider {
            IssueProvider::Github => format!("{}/repos/{}", self.root, self.issue.repository),
            IssueProvider::Gitlab => format!(
                "{}/projects/{}",
                self.root,
                self.issue.repository.replace('/', "%2F")
            ),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        json: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut request = self
            .client
            .request(method.clone(), &url)
            .timeout(Duration::from_secs(20))
            .header(reqwest::header::USER_AGENT, "murphy");
        request = match self.issue.provider {
            IssueProvider::Github => request
                .bearer_auth(self.token)
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
            IssueProvider::Gitlab => request.header("PRIVATE-TOKEN", self.token),
        };
        if let Some(json) = json {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json.to_string());
        }
        let what = format!("{method} {}", url.split('?').next().unwrap_or(&url));
        let response = request.send().await.map_err(|err| Failure {
            again: true,
            message: format!("{what}: {}", crate::causes::line(&err.without_url())),
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Failure {
                again: status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS,
                message: format!("{what}: {}", crate::publish::server_answer(status, &text)),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The open issues murphy filed, by the marker in their body.
    async fn open_issues(&self) -> Result<BTreeMap<String, u64>, Failure> {
        let (query, number, text) = match self.issue.provider {
            IssueProvider::Github => ("state=open", "number", "body"),
            IssueProvider::Gitlab => ("state=opened", "iid", "description"),
        };
        let url = format!(
            "{}/issues?{query}&labels={LABEL}&per_page=100",
            self.project()
        );
        let listed = self.call(reqwest::Method::GET, url, None).await?;
        let mut open = BTreeMap::new();
        for item in listed.as_array().into_iter().flatten() {
            // GitHub lists pull requests among issues.
            if item.get("pull_request").is_some() {
                continue;
            }
            let (Some(number), Some(text)) = (item[number].as_u64(), item[text].as_str()) else {
                continue;
            };
            if let Some(start) = text.find("<!-- murphy:")
                && let Some(len) = text[start..].find("-->")
            {
                open.insert(text[start..start + len + 3].to_owned(), number);
            }
        }
        Ok(open)
    }

    async fn create(&self, title: &str, text: &str) -> Result<(), Failure> {
        let json = match self.issue.provider {
            IssueProvider::Github => json!({"title": title, "body": text, "labels": [LABEL]}),
            IssueProvider::Gitlab => json!({"title": title, "description": text, "labels": LABEL}),
        };
        let url = format!("{}/issues", self.project());
        self.call(reqwest::Method::POST, url, Some(json))
            .await
            .map(drop)
    }

    async fn comment(&self, number: u64, text: &str) -> Result<(), Failure> {
        let path = match self.issue.provider {
            IssueProvider::Github => "comments",
            IssueProvider::Gitlab => "notes",
        };
        let url = format!("{}/issues/{number}/{path}", self.project());
        self.call(reqwest::Method::POST, url, Some(json!({"body": text})))
            .await
            .map(drop)
    }

    async fn close(&self, number: u64) -> Result<(), Failure> {
        let url = format!("{}/issues/{number}", self.project());
        let (method, json) = match self.issue.provider {
            IssueProvider::Github => (reqwest::Method::PATCH, json!({"state": "closed"})),
            IssueProvider::Gitlab => (reqwest::Method::PUT, json!({"state_event": "close"})),
        };
        self.call(method, url, Some(json)).await.map(drop)
    }
}

/// The run's description and links, for an issue's text.
fn context(body: &Value) -> String {
    let mut out = String::new();
    if let Some(d) = body["description"].as_str() {
        out.push_str(&format!("\n\n> {}", d.lines().next().unwrap_or_default()));
    }
    if let Some(sha) = body["commit"].as_str() {
        out.push_str(&format!("\n\nCommit: {sha}"));
    }
    for (name, key) in [
        ("commit", "commit"),
        ("CI run", "ci_run"),
        ("pull request", "pr"),
    ] {
        if let Some(link) = body["links"][key].as_str() {
            out.push_str(&format!("\n{name}: {link}"));
        }
    }
    out
}
