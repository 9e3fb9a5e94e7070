//! Which CI system a run is in, read from the environment: GitHub Actions, GitLab CI, Azure
//! Pipelines, Jenkins, Buildkite, CircleCI, Bitbucket Pipelines and Woodpecker, and any other
//! that sets `CI`. The README has the table of variables read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::environment::strip_userinfo;
use crate::trigger::Trigger;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    GithubActions,
    GitlabCi,
    AzurePipelines,
    Jenkins,
    Buildkite,
    Circleci,
    BitbucketPipelines,
    Woodpecker,
    /// A CI system murphy has no table for: `CI` is set, nothing else is known.
    Other,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::GithubActions => "GitHub Actions",
            Provider::GitlabCi => "GitLab CI",
            Provider::AzurePipelines => "Azure Pipelines",
            Provider::Jenkins => "Jenkins",
            Provider::Buildkite => "Buildkite",
            Provider::Circleci => "CircleCI",
            Provider::BitbucketPipelines => "Bitbucket Pipelines",
            Provider::Woodpecker => "Woodpecker",
            Provider::Other => "unknown CI",
        }
    }
}

/// What the CI system says about this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiInfo {
    pub provider: Provider,
    pub run_id: Option<String>,
    pub run_url: Option<String>,
    pub job: Option<String>,
    /// The provider's own name for what started the run (`pull_request`, `schedule`, ...).
    pub event: Option<String>,
    pub pr_number: Option<String>,
    pub pr_url: Option<String>,
    pub actor: Option<String>,
    /// The trigger the event maps to.
    pub trigger: Trigger,
    pub branch: Option<String>,
    /// The tag being built, for tag runs.
    pub tag: Option<String>,
    /// The branch a pull request targets: what its changes are compared against.
    pub base_branch: Option<String>,
}

/// Reads `env` (the process environment, in production) for a known CI provider. URLs lose
/// any `user:password@` on the way in: what is read here ends up in `meta.json` and in
/// notifications.
pub fn detect(env: &BTreeMap<String, String>) -> Option<CiInfo> {
    let get = |k: &str| {
        env.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| strip_userinfo(v).into_owned())
    };
    let is = |k: &str, v: &str| env.get(k).is_some_and(|x| x.eq_ignore_ascii_case(v));

    if is("GITHUB_ACTIONS", "true") {
        let server = get("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
        let repo = get("GITHUB_REPOSITORY");
        let git_ref = get("GITHUB_REF").unwrap_or_default();
        let event = get("GITHUB_EVENT_NAME");
        // A merge queue builds `gh-readonly-queue/<base>/pr-<n>-<sha>`: code that has not
        // landed yet, so a `pr` run, kept apart under its pull request's number.
        let queue = git_ref
            .strip_prefix("refs/heads/gh-readonly-queue/")
            .and_then(|rest| rest.rsplit_once("/pr-"))
            .map(|(base, rest)| (base.to_owned(), rest.split('-').next().unwrap_or_default()));
        let from_ref = git_ref
            .strip_prefix("refs/pull/")
            .and_then(|r| r.split('/').next())
            .map(str::to_owned);
        let pr_number = match event.as_deref() {
            // Its `GITHUB_REF` is the base branch: the number is in the event's payload.
            Some("pull_request_target") => from_ref.or_else(|| {
                get("GITHUB_EVENT_PATH")
                    .and_then(|path| event_pr_number(std::path::Path::new(&path)))
            }),
            Some("merge_group") => queue
                .as_ref()
                .map(|(_, n)| (*n).to_owned())
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            _ => from_ref,
        };
        let tag = git_ref.strip_prefix("refs/tags/").map(str::to_owned);
        let trigger = match event.as_deref() {
            Some("pull_request" | "pull_request_target" | "merge_group") => Trigger::Pr,
            Some("schedule") => Trigger::Nightly,
            _ if tag.is_some() => Trigger::Tag,
            _ => Trigger::Push,
        };
        let repo_url = repo.as_ref().map(|r| format!("{server}/{r}"));
        return Some(CiInfo {
            provider: Provider::GithubActions,
            run_url: match (&repo_url, get("GITHUB_RUN_ID")) {
                (Some(base), Some(id)) => Some(format!("{base}/actions/runs/{id}")),
                _ => None,
            },
            run_id: get("GITHUB_RUN_ID"),
            job: get("GITHUB_JOB"),
            pr_url: match (&repo_url, &pr_number) {
                (Some(base), Some(n)) => Some(format!("{base}/pull/{n}")),
                _ => None,
            },
            pr_number,
            actor: get("GITHUB_ACTOR"),
            trigger,
            branch: get("GITHUB_HEAD_REF")
                .or_else(|| git_ref.strip_prefix("refs/heads/").map(str::to_owned)),
            tag,
            base_branch: get("GITHUB_BASE_REF").or(queue
                .filter(|_| event.as_deref() == Some("merge_group"))
                .map(|(base, _)| base)),
            event,
        });
    }
    if is("GITLAB_CI", "true") {
        let event = get("CI_PIPELINE_SOURCE");
        let tag = get("CI_COMMIT_TAG");
        let pr_number = get("CI_MERGE_REQUEST_IID");
        let trigger = match event.as_deref() {
            Some("merge_request_event" | "external_pull_request_event") => Trigger::Pr,
            Some("schedule") => Trigger::Nightly,
            _ if tag.is_some() => Trigger::Tag,
            _ => Trigger::Push,
        };
        let project = get("CI_MERGE_REQUEST_PROJECT_URL").or_else(|| get("CI_PROJECT_URL"));
        return Some(CiInfo {
            provider: Provider::GitlabCi,
            run_id: get("CI_PIPELINE_ID"),
            run_url: get("CI_PIPELINE_URL"),
            job: get("CI_JOB_NAME"),
            pr_url: match (project, &pr_number) {
                (Some(p), Some(n)) => Some(format!("{p}/-/merge_requests/{n}")),
                _ => None,
            },
            pr_number,
            actor: get("GITLAB_USER_LOGIN"),
            trigger,
            branch: get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME").or_else(|| get("CI_COMMIT_BRANCH")),
            tag,
            base_branch: get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME"),
            event,
        });
    }
    if is("TF_BUILD", "true") {
        let event = get("BUILD_REASON");
        let source = get("BUILD_SOURCEBRANCH").unwrap_or_default();
        let tag = source.strip_prefix("refs/tags/").map(str::to_owned);
        let pr_number = get("SYSTEM_PULLREQUEST_PULLREQUESTNUMBER")
            .or_else(|| get("SYSTEM_PULLREQUEST_PULLREQUESTID"));
        let trigger = match event.as_deref() {
            Some("PullRequest") => Trigger::Pr,
            Some("Schedule") => Trigger::Nightly,
            _ if tag.is_some() => Trigger::Tag,
            _ => Trigger::Push,
        };
        let collection =
            get("SYSTEM_COLLECTIONURI").map(|c| if c.ends_with('/') { c } else { format!("{c}/") });
        let project = get("SYSTEM_TEAMPROJECT").map(|p| encode_segment(&p));
        let run_url = match (&collection, &project, get("BUILD_BUILDID")) {
            (Some(c), Some(p), Some(id)) => Some(format!("{c}{p}/_build/results?buildId={id}")),
            _ => None,
        };
        let pr_url = match (
            &collection,
            &project,
            get("BUILD_REPOSITORY_NAME").map(|r| encode_segment(&r)),
            get("SYSTEM_PULLREQUEST_PULLREQUESTID"),
        ) {
            (Some(c), Some(p), Some(repo), Some(id)) => {
                Some(format!("{c}{p}/_git/{repo}/pullrequest/{id}"))
            }
            _ => None,
        };
        return Some(CiInfo {
            provider: Provider::AzurePipelines,
            run_id: get("BUILD_BUILDID"),
            run_url,
            job: get("SYSTEM_JOBDISPLAYNAME").or_else(|| get("AGENT_JOBNAME")),
            pr_number,
            pr_url,
            actor: get("BUILD_REQUESTEDFOR"),
            trigger,
            branch: get("SYSTEM_PULLREQUEST_SOURCEBRANCH")
                .or_else(|| source.strip_prefix("refs/heads/").map(str::to_owned))
                .map(|b| {
                    b.strip_prefix("refs/heads/")
                        .map(str::to_owned)
                        .unwrap_or(b)
                }),
            tag,
            base_branch: get("SYSTEM_PULLREQUEST_TARGETBRANCH").map(|b| {
                b.strip_prefix("refs/heads/")
                    .map(str::to_owned)
                    .unwrap_or(b)
            }),
            event,
        });
    }
    if env.contains_key("JENKINS_URL") {
        let pr_number = get("CHANGE_ID");
        let tag = get("TAG_NAME");
        let (trigger, event) = match (&pr_number, &tag) {
            (Some(_), _) => (Trigger::Pr, "change"),
            (None, Some(_)) => (Trigger::Tag, "tag"),
            (None, None) => (Trigger::Push, "branch"),
        };
        return Some(CiInfo {
            provider: Provider::Jenkins,
            run_id: get("BUILD_NUMBER").or_else(|| get("BUILD_ID")),
            run_url: get("BUILD_URL"),
            job: get("JOB_NAME"),
            event: Some(event.to_owned()),
            pr_url: get("CHANGE_URL"),
            pr_number,
            actor: get("CHANGE_AUTHOR").or_else(|| get("BUILD_USER_ID")),
            trigger,
            branch: get("CHANGE_BRANCH")
                .or_else(|| get("BRANCH_NAME"))
                .or_else(|| {
                    get("GIT_BRANCH")
                        .map(|b| b.strip_prefix("origin/").map(str::to_owned).unwrap_or(b))
                }),
            tag,
            base_branch: get("CHANGE_TARGET"),
        });
    }
    if is("BUILDKITE", "true") {
        let event = get("BUILDKITE_SOURCE");
        let pr_number = get("BUILDKITE_PULL_REQUEST").filter(|v| v != "false");
        let tag = get("BUILDKITE_TAG");
        let trigger = match (&pr_number, event.as_deref(), &tag) {
            (Some(_), ..) => Trigger::Pr,
            (None, Some("schedule"), _) => Trigger::Nightly,
            (None, _, Some(_)) => Trigger::Tag,
            _ => Trigger::Push,
        };
        let repo = get("BUILDKITE_REPO").and_then(|r| crate::git::github_repo(&r));
        return Some(CiInfo {
            provider: Provider::Buildkite,
            run_id: get("BUILDKITE_BUILD_NUMBER"),
            run_url: get("BUILDKITE_BUILD_URL"),
            job: get("BUILDKITE_LABEL").or_else(|| get("BUILDKITE_STEP_KEY")),
            pr_url: match (repo, &pr_number) {
                (Some(base), Some(n)) => Some(format!("{base}/pull/{n}")),
                _ => None,
            },
            pr_number,
            actor: get("BUILDKITE_BUILD_CREATOR").or_else(|| get("BUILDKITE_BUILD_AUTHOR")),
            trigger,
            branch: get("BUILDKITE_BRANCH"),
            tag,
            base_branch: get("BUILDKITE_PULL_REQUEST_BASE_BRANCH"),
            event,
        });
    }
    if is("CIRCLECI", "true") {
        let pr_url = get("CIRCLE_PULL_REQUEST");
        let pr_number = get("CIRCLE_PR_NUMBER").or_else(|| {
            pr_url
                .as_ref()
                .and_then(|u| u.rsplit('/').next().map(str::to_owned))
        });
        let tag = get("CIRCLE_TAG");
        let (trigger, event) = match (&pr_url, &tag) {
            (Some(_), _) => (Trigger::Pr, "pull_request"),
            (None, Some(_)) => (Trigger::Tag, "tag"),
            (None, None) => (Trigger::Push, "push"),
        };
        return Some(CiInfo {
            provider: Provider::Circleci,
            run_id: get("CIRCLE_WORKFLOW_ID").or_else(|| get("CIRCLE_BUILD_NUM")),
            run_url: get("CIRCLE_BUILD_URL"),
            job: get("CIRCLE_JOB"),
            event: Some(event.to_owned()),
            pr_number,
            pr_url,
            actor: get("CIRCLE_USERNAME"),
            trigger,
            branch: get("CIRCLE_BRANCH"),
            tag,
            base_branch: None,
        });
    }
    if env.contains_key("BITBUCKET_BUILD_NUMBER") {
        let pr_number = get("BITBUCKET_PR_ID");
        let tag = get("BITBUCKET_TAG");
        let (trigger, event) = match (&pr_number, &tag) {
            (Some(_), _) => (Trigger::Pr, "pull_request"),
            (None, Some(_)) => (Trigger::Tag, "tag"),
            (None, None) => (Trigger::Push, "push"),
        };
        let repo = get("BITBUCKET_GIT_HTTP_ORIGIN")
            .map(|o| o.trim_end_matches(".git").to_owned())
            .or_else(
                || match (get("BITBUCKET_WORKSPACE"), get("BITBUCKET_REPO_SLUG")) {
                    (Some(w), Some(r)) => Some(format!("https://bitbucket.org/{w}/{r}")),
                    _ => None,
                },
            );
        let build = get("BITBUCKET_BUILD_NUMBER");
        return Some(CiInfo {
            provider: Provider::BitbucketPipelines,
            run_url: match (&repo, &build) {
                (Some(r), Some(n)) => Some(format!("{r}/pipelines/results/{n}")),
                _ => None,
            },
            run_id: build,
            job: get("BITBUCKET_STEP_UUID"),
            event: Some(event.to_owned()),
            pr_url: match (&repo, &pr_number) {
                (Some(r), Some(n)) => Some(format!("{r}/pull-requests/{n}")),
                _ => None,
            },
            pr_number,
            actor: None,
            trigger,
            branch: get("BITBUCKET_BRANCH"),
            tag,
            base_branch: get("BITBUCKET_PR_DESTINATION_BRANCH"),
        });
    }
    if is("CI", "woodpecker") {
        let event = get("CI_PIPELINE_EVENT");
        let tag = get("CI_COMMIT_TAG");
        let trigger = match event.as_deref() {
            Some("pull_request" | "pull_request_closed") => Trigger::Pr,
            Some("cron") => Trigger::Nightly,
            _ if tag.is_some() => Trigger::Tag,
            _ => Trigger::Push,
        };
        let pr_number = get("CI_COMMIT_PULL_REQUEST").filter(|_| trigger == Trigger::Pr);
        return Some(CiInfo {
            provider: Provider::Woodpecker,
            run_id: get("CI_PIPELINE_NUMBER"),
            run_url: get("CI_PIPELINE_URL"),
            job: get("CI_STEP_NAME"),
            // The forge's page of what started the pipeline: the pull request's, for one.
            pr_url: get("CI_PIPELINE_FORGE_URL").filter(|_| pr_number.is_some()),
            pr_number,
            actor: get("CI_COMMIT_AUTHOR"),
            trigger,
            branch: get("CI_COMMIT_SOURCE_BRANCH").or_else(|| get("CI_COMMIT_BRANCH")),
            tag,
            base_branch: get("CI_COMMIT_TARGET_BRANCH").filter(|_| trigger == Trigger::Pr),
            event,
        });
    }
    // Most CI systems set `CI` (`true`, `1`, their name): a run there is no person's `local`
    // run, even though nothing else about it is known.
    if get("CI").is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | "no")) {
        return Some(CiInfo {
            provider: Provider::Other,
            run_id: None,
            run_url: None,
            job: None,
            event: None,
            pr_number: None,
            pr_url: None,
            actor: None,
            trigger: Trigger::Push,
            branch: None,
            tag: None,
            base_branch: None,
        });
    }
    None
}

/// The pull request number in a GitHub event payload (`pull_request.number`, or `number`), if
/// the file can be read and holds one.
fn event_pr_number(path: &std::path::Path) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            tracing::warn!("cannot read the event payload {}: {err}", path.display());
            return None;
        }
    };
    let payload: serde_json::Value = match serde_json::from_str(&text) {
        Ok(payload) => payload,
        Err(err) => {
            tracing::warn!("the event payload {} is not JSON: {err}", path.display());
            return None;
        }
    };
    payload
        .pointer("/pull_request/number")
        .or_else(|| payload.get("number"))
        .and_then(serde_json::Value::as_u64)
        .map(|n| n.to_string())
}

/// Percent-encodes one URL path segment: Azure project and repository names hold spaces.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn github_pull_request() {
        let ci = detect(&env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_JOB", "test"),
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_REF", "refs/pull/7/merge"),
            ("GITHUB_HEAD_REF", "feature"),
            ("GITHUB_BASE_REF", "main"),
            ("GITHUB_ACTOR", "ana"),
        ]))
        .unwrap();
        assert_eq!(ci.trigger, Trigger::Pr);
        assert_eq!(
            ci.run_url.as_deref(),
            Some("https://github.com/o/r/actions/runs/42")
        );
        assert_eq!(ci.pr_number.as_deref(), Some("7"));
        assert_eq!(ci.pr_url.as_deref(), Some("https://github.com/o/r/pull/7"));
        assert_eq!(ci.branch.as_deref(), Some("feature"));
        assert_eq!(ci.base_branch.as_deref(), Some("main"));
        assert_eq!(ci.actor.as_deref(), Some("ana"));
    }

    #[test]
    fn github_schedule_and_tag_push() {
        let nightly = env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "schedule"),
            ("GITHUB_REF", "refs/heads/main"),
        ]);
        assert_eq!(detect(&nightly).unwrap().trigger, Trigger::Nightly);
        let tag = env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/tags/v1.2.0"),
        ]);
        let ci = detect(&tag).unwrap();
        assert_eq!(
            (ci.trigger, ci.tag.as_deref()),
            (Trigger::Tag, Some("v1.2.0"))
        );
        let push = env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/heads/main"),
        ]);
        let ci = detect(&push).unwrap();
        assert_eq!(
            (ci.trigger, ci.branch.as_deref()),
            (Trigger::Push, Some("main"))
        );
    }

    #[test]
    fn gitlab_events() {
        let mr = detect(&env(&[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_SOURCE", "merge_request_event"),
            ("CI_MERGE_REQUEST_IID", "12"),
            ("CI_PROJECT_URL", "https://gitlab.com/g/r"),
            ("CI_PIPELINE_URL", "https://gitlab.com/g/r/-/pipelines/9"),
            ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
        ]))
        .unwrap();
        assert_eq!(mr.trigger, Trigger::Pr);
        assert_eq!(
            mr.pr_url.as_deref(),
            Some("https://gitlab.com/g/r/-/merge_requests/12")
        );
        assert_eq!(mr.base_branch.as_deref(), Some("main"));
        let sched = env(&[("GITLAB_CI", "true"), ("CI_PIPELINE_SOURCE", "schedule")]);
        assert_eq!(detect(&sched).unwrap().trigger, Trigger::Nightly);
        let tag = env(&[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_SOURCE", "push"),
            ("CI_COMMIT_TAG", "v2.0.0"),
        ]);
        assert_eq!(detect(&tag).unwrap().trigger, Trigger::Tag);
    }

    #[test]
    fn azure_events() {
        let pr = detect(&env(&[
            ("TF_BUILD", "True"),
            ("BUILD_REASON", "PullRequest"),
            ("BUILD_BUILDID", "77"),
            ("SYSTEM_COLLECTIONURI", "https://dev.azure.com/org/"),
            ("SYSTEM_TEAMPROJECT", "proj"),
            ("BUILD_REPOSITORY_NAME", "repo"),
            ("SYSTEM_PULLREQUEST_PULLREQUESTID", "5"),
            ("SYSTEM_PULLREQUEST_TARGETBRANCH", "refs/heads/main"),
        ]))
        .unwrap();
        assert_eq!(pr.trigger, Trigger::Pr);
        assert_eq!(
            pr.run_url.as_deref(),
            Some("https://dev.azure.com/org/proj/_build/results?buildId=77")
        );
        assert_eq!(
            pr.pr_url.as_deref(),
            Some("https://dev.azure.com/org/proj/_git/repo/pullrequest/5")
        );
        assert_eq!(pr.base_branch.as_deref(), Some("main"));
        let sched = env(&[("TF_BUILD", "True"), ("BUILD_REASON", "Schedule")]);
        assert_eq!(detect(&sched).unwrap().trigger, Trigger::Nightly);
        let tag = env(&[
            ("TF_BUILD", "True"),
            ("BUILD_REASON", "IndividualCI"),
            ("BUILD_SOURCEBRANCH", "refs/tags/v1.0.0"),
        ]);
        assert_eq!(detect(&tag).unwrap().tag.as_deref(), Some("v1.0.0"));
    }

    #[test]
    fn jenkins_buildkite_circleci() {
        let j = detect(&env(&[
            ("JENKINS_URL", "https://ci/"),
            ("CHANGE_ID", "3"),
            ("CHANGE_URL", "https://gh/o/r/pull/3"),
            ("BUILD_URL", "https://ci/job/x/1/"),
        ]))
        .unwrap();
        assert_eq!((j.provider, j.trigger), (Provider::Jenkins, Trigger::Pr));
        assert_eq!(j.run_url.as_deref(), Some("https://ci/job/x/1/"));
        let j = detect(&env(&[
            ("JENKINS_URL", "https://ci/"),
            ("TAG_NAME", "v1.0.0"),
        ]))
        .unwrap();
        assert_eq!(j.trigger, Trigger::Tag);

        let b = detect(&env(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_PULL_REQUEST", "false"),
            ("BUILDKITE_SOURCE", "schedule"),
            ("BUILDKITE_BUILD_URL", "https://buildkite.com/o/p/builds/8"),
        ]))
        .unwrap();
        assert_eq!(
            (b.provider, b.trigger, b.pr_number),
            (Provider::Buildkite, Trigger::Nightly, None)
        );
        let b = detect(&env(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_PULL_REQUEST", "9"),
            ("BUILDKITE_REPO", "git@github.com:o/r.git"),
        ]))
        .unwrap();
        assert_eq!(
            (b.trigger, b.pr_url.as_deref()),
            (Trigger::Pr, Some("https://github.com/o/r/pull/9"))
        );

        let c = detect(&env(&[
            ("CIRCLECI", "true"),
            ("CIRCLE_PULL_REQUEST", "https://github.com/o/r/pull/4"),
        ]))
        .unwrap();
        assert_eq!(
            (c.trigger, c.pr_number.as_deref()),
            (Trigger::Pr, Some("4"))
        );
        let c = detect(&env(&[("CIRCLECI", "true"), ("CIRCLE_TAG", "v3.0.0")])).unwrap();
        assert_eq!(c.trigger, Trigger::Tag);
    }

    #[test]
    fn urls_read_lose_their_credentials() {
        let mr = detect(&env(&[
            ("GITLAB_CI", "true"),
            ("CI_MERGE_REQUEST_IID", "12"),
            ("CI_PROJECT_URL", "https://ana:glpat-1@gitlab.com/g/r"),
            (
                "CI_PIPELINE_URL",
                "https://ana:glpat-1@gitlab.com/g/r/-/pipelines/9",
            ),
        ]))
        .unwrap();
        assert_eq!(
            (mr.pr_url.as_deref(), mr.run_url.as_deref()),
            (
                Some("https://gitlab.com/g/r/-/merge_requests/12"),
                Some("https://gitlab.com/g/r/-/pipelines/9")
            )
        );
    }

    #[test]
    fn outside_ci_nothing_is_detected() {
        assert_eq!(detect(&env(&[("PATH", "/bin")])), None);
        assert_eq!(detect(&env(&[("CI", "false")])), None);
    }

    #[test]
    fn a_bare_ci_variable_is_an_unknown_ci_pushing() {
        for value in ["true", "1", "drone"] {
            let ci = detect(&env(&[("CI", value)])).unwrap();
            assert_eq!((ci.provider, ci.trigger), (Provider::Other, Trigger::Push));
        }
    }

    #[test]
    fn github_merge_queue_is_a_pull_request_of_its_number() {
        let ci = detect(&env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_EVENT_NAME", "merge_group"),
            (
                "GITHUB_REF",
                "refs/heads/gh-readonly-queue/release/1.x/pr-31-0a1b2c3d4e5f",
            ),
        ]))
        .unwrap();
        assert_eq!(ci.trigger, Trigger::Pr);
        assert_eq!(ci.pr_number.as_deref(), Some("31"));
        assert_eq!(ci.pr_url.as_deref(), Some("https://github.com/o/r/pull/31"));
        assert_eq!(ci.base_branch.as_deref(), Some("release/1.x"));
        // A queue branch of another shape: still `pr`, without a number (its runs are then
        // kept apart under their run id).
        let odd = detect(&env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "merge_group"),
            ("GITHUB_REF", "refs/heads/gh-readonly-queue/main/pr-x"),
        ]))
        .unwrap();
        assert_eq!((odd.trigger, odd.pr_number), (Trigger::Pr, None));
    }

    #[test]
    fn github_pull_request_target_reads_its_number_from_the_payload() {
        let dir = tempfile::tempdir().unwrap();
        let base = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "pull_request_target"),
            ("GITHUB_REF", "refs/heads/main"),
            ("GITHUB_BASE_REF", "main"),
            ("GITHUB_HEAD_REF", "feature"),
        ];
        let with_payload = |text: &str| {
            let path = dir.path().join("event.json");
            std::fs::write(&path, text).unwrap();
            let mut vars = base.to_vec();
            let path = path.to_str().unwrap().to_owned();
            vars.push(("GITHUB_EVENT_PATH", &path));
            detect(&env(&vars)).unwrap()
        };
        let ci =
            with_payload(r#"{"action": "opened", "number": 12, "pull_request": {"number": 12}}"#);
        assert_eq!(
            (ci.trigger, ci.pr_number.as_deref(), ci.branch.as_deref()),
            (Trigger::Pr, Some("12"), Some("feature"))
        );
        assert_eq!(
            with_payload(r#"{"number": 13}"#).pr_number.as_deref(),
            Some("13")
        );
        // Unreadable or odd payloads: still a `pr` run, without a number.
        assert_eq!(with_payload("not json").pr_number, None);
        assert_eq!(with_payload(r#"{"number": "x"}"#).pr_number, None);
        let mut vars = base.to_vec();
        vars.push(("GITHUB_EVENT_PATH", "/nonexistent/event.json"));
        let ci = detect(&env(&vars)).unwrap();
        assert_eq!((ci.trigger, ci.pr_number), (Trigger::Pr, None));
    }

    #[test]
    fn bitbucket_pipelines() {
        let pr = detect(&env(&[
            ("CI", "true"),
            ("BITBUCKET_BUILD_NUMBER", "118"),
            ("BITBUCKET_PR_ID", "4"),
            ("BITBUCKET_BRANCH", "feature"),
            ("BITBUCKET_PR_DESTINATION_BRANCH", "main"),
            ("BITBUCKET_GIT_HTTP_ORIGIN", "http://bitbucket.org/ws/repo"),
        ]))
        .unwrap();
        assert_eq!(
            (pr.provider, pr.trigger),
            (Provider::BitbucketPipelines, Trigger::Pr)
        );
        assert_eq!(
            pr.run_url.as_deref(),
            Some("http://bitbucket.org/ws/repo/pipelines/results/118")
        );
        assert_eq!(
            pr.pr_url.as_deref(),
            Some("http://bitbucket.org/ws/repo/pull-requests/4")
        );
        assert_eq!(
            (pr.branch.as_deref(), pr.base_branch.as_deref()),
            (Some("feature"), Some("main"))
        );
        let tag = detect(&env(&[
            ("BITBUCKET_BUILD_NUMBER", "119"),
            ("BITBUCKET_TAG", "v1.0.0"),
            ("BITBUCKET_WORKSPACE", "ws"),
            ("BITBUCKET_REPO_SLUG", "repo"),
        ]))
        .unwrap();
        assert_eq!(
            (tag.trigger, tag.tag.as_deref(), tag.run_url.as_deref()),
            (
                Trigger::Tag,
                Some("v1.0.0"),
                Some("https://bitbucket.org/ws/repo/pipelines/results/119")
            )
        );
        let push = detect(&env(&[
            ("BITBUCKET_BUILD_NUMBER", "120"),
            ("BITBUCKET_BRANCH", "main"),
        ]))
        .unwrap();
        assert_eq!(push.trigger, Trigger::Push);
    }

    #[test]
    fn woodpecker_events() {
        let pr = detect(&env(&[
            ("CI", "woodpecker"),
            ("CI_PIPELINE_EVENT", "pull_request"),
            ("CI_COMMIT_PULL_REQUEST", "8"),
            ("CI_COMMIT_SOURCE_BRANCH", "feature"),
            ("CI_COMMIT_TARGET_BRANCH", "main"),
            ("CI_PIPELINE_NUMBER", "51"),
            (
                "CI_PIPELINE_URL",
                "https://ci.example.org/repos/3/pipeline/51",
            ),
            (
                "CI_PIPELINE_FORGE_URL",
                "https://git.example.org/o/r/pulls/8",
            ),
        ]))
        .unwrap();
        assert_eq!(
            (pr.provider, pr.trigger),
            (Provider::Woodpecker, Trigger::Pr)
        );
        assert_eq!(
            (pr.pr_number.as_deref(), pr.pr_url.as_deref()),
            (Some("8"), Some("https://git.example.org/o/r/pulls/8"))
        );
        assert_eq!(
            (pr.branch.as_deref(), pr.base_branch.as_deref()),
            (Some("feature"), Some("main"))
        );
        let event = |e: &str| {
            detect(&env(&[
                ("CI", "woodpecker"),
                ("CI_PIPELINE_EVENT", e),
                ("CI_COMMIT_TAG", "v2.0.0"),
            ]))
            .unwrap()
            .trigger
        };
        assert_eq!(event("cron"), Trigger::Nightly);
        assert_eq!(event("tag"), Trigger::Tag);
        let push = detect(&env(&[
            ("CI", "woodpecker"),
            ("CI_PIPELINE_EVENT", "push"),
            ("CI_COMMIT_BRANCH", "main"),
        ]))
        .unwrap();
        assert_eq!(
            (push.trigger, push.branch.as_deref(), push.pr_number),
            (Trigger::Push, Some("main"), None)
        );
    }
}
