//! Which variables a stage sees, and which of them decide its fingerprint.
//!
//! A stage does not inherit the whole outer environment: what it may read is what may change
//! its result, so it must be named. Variables in [`ALWAYS_PASSED`] and [`CI_PASSED`] (each CI
//! provider's documented non-secret variables) always pass and do not count in the
//! fingerprint: a new `PATH` entry or a new CI run id must not invalidate every checkpoint.
//! They pass with any `user:password@` taken out of the URLs they hold, since providers put
//! job tokens there. Any variable listed in `pass_env:` passes as it is, and its value is part
//! of the fingerprint, so a build made with one configuration is never restored for another.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::plan::{Plan, Stage};

/// Always passed to stages, never part of a fingerprint (with `LC_*`, the locale settings).
pub const ALWAYS_PASSED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "TMPDIR", "TERM", "NO_COLOR", "CI",
];

/// The CI providers' own variables that are passed the same way: an allowlist of those each
/// provider documents, without its credentials (`GITHUB_TOKEN`, `ACTIONS_ID_TOKEN_*`,
/// `CI_JOB_TOKEN`, `CI_JOB_JWT`, `CI_REPOSITORY_URL`, `CI_REGISTRY_PASSWORD`,
/// `SYSTEM_ACCESSTOKEN`, `BUILDKITE_AGENT_ACCESS_TOKEN`, `CIRCLE_OIDC_TOKEN`,
/// `BITBUCKET_STEP_OIDC_TOKEN`, Woodpecker's `CI_NETRC_*`, Jenkins
/// `credentials()` bindings), which reach a stage only when `pass_env:` names them.
pub const CI_PASSED: &[(&str, &[&str])] = &[
    (
        "GitHub Actions",
        &[
            "GITHUB_ACTIONS",
            "GITHUB_ACTION",
            "GITHUB_ACTION_PATH",
            "GITHUB_ACTION_REPOSITORY",
            "GITHUB_ACTOR",
            "GITHUB_ACTOR_ID",
            "GITHUB_API_URL",
            "GITHUB_BASE_REF",
            "GITHUB_ENV",
            "GITHUB_EVENT_NAME",
            "GITHUB_EVENT_PATH",
            "GITHUB_GRAPHQL_URL",
            "GITHUB_HEAD_REF",
            "GITHUB_JOB",
            "GITHUB_OUTPUT",
            "GITHUB_PATH",
            "GITHUB_REF",
            "GITHUB_REF_NAME",
            "GITHUB_REF_PROTECTED",
            "GITHUB_REF_TYPE",
            "GITHUB_REPOSITORY",
            "GITHUB_REPOSITORY_ID",
            "GITHUB_REPOSITORY_OWNER",
            "GITHUB_REPOSITORY_OWNER_ID",
            "GITHUB_RETENTION_DAYS",
            "GITHUB_RUN_ATTEMPT",
            "GITHUB_RUN_ID",
            "GITHUB_RUN_NUMBER",
            "GITHUB_SERVER_URL",
            "GITHUB_SHA",
            "GITHUB_STATE",
            "GITHUB_STEP_SUMMARY",
            "GITHUB_TRIGGERING_ACTOR",
            "GITHUB_WORKFLOW",
            "GITHUB_WORKFLOW_REF",
            "GITHUB_WORKFLOW_SHA",
            "GITHUB_WORKSPACE",
            "RUNNER_ARCH",
            "RUNNER_DEBUG",
            "RUNNER_ENVIRONMENT",
            "RUNNER_NAME",
            "RUNNER_OS",
            "RUNNER_TEMP",
            "RUNNER_TOOL_CACHE",
        ],
    ),
    (
        "GitLab CI",
        &[
            "GITLAB_CI",
            "GITLAB_USER_EMAIL",
            "GITLAB_USER_ID",
            "GITLAB_USER_LOGIN",
            "GITLAB_USER_NAME",
            "CI_API_V4_URL",
            "CI_BUILDS_DIR",
            "CI_COMMIT_AUTHOR",
            "CI_COMMIT_BEFORE_SHA",
            "CI_COMMIT_BRANCH",
            "CI_COMMIT_DESCRIPTION",
            "CI_COMMIT_MESSAGE",
            "CI_COMMIT_REF_NAME",
            "CI_COMMIT_REF_PROTECTED",
            "CI_COMMIT_REF_SLUG",
            "CI_COMMIT_SHA",
            "CI_COMMIT_SHORT_SHA",
            "CI_COMMIT_TAG",
            "CI_COMMIT_TAG_MESSAGE",
            "CI_COMMIT_TIMESTAMP",
            "CI_COMMIT_TITLE",
            "CI_CONCURRENT_ID",
            "CI_CONCURRENT_PROJECT_ID",
            "CI_DEFAULT_BRANCH",
            "CI_ENVIRONMENT_NAME",
            "CI_ENVIRONMENT_SLUG",
            "CI_ENVIRONMENT_URL",
            "CI_EXTERNAL_PULL_REQUEST_IID",
            "CI_JOB_ID",
            "CI_JOB_IMAGE",
            "CI_JOB_MANUAL",
            "CI_JOB_NAME",
            "CI_JOB_NAME_SLUG",
            "CI_JOB_STAGE",
            "CI_JOB_STARTED_AT",
            "CI_JOB_STATUS",
            "CI_JOB_URL",
            "CI_MERGE_REQUEST_DIFF_BASE_SHA",
            "CI_MERGE_REQUEST_EVENT_TYPE",
            "CI_MERGE_REQUEST_ID",
            "CI_MERGE_REQUEST_IID",
            "CI_MERGE_REQUEST_LABELS",
            "CI_MERGE_REQUEST_PROJECT_PATH",
            "CI_MERGE_REQUEST_PROJECT_URL",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA",
            "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
            "CI_MERGE_REQUEST_TARGET_BRANCH_SHA",
            "CI_MERGE_REQUEST_TITLE",
            "CI_NODE_INDEX",
            "CI_NODE_TOTAL",
            "CI_OPEN_MERGE_REQUESTS",
            "CI_PAGES_DOMAIN",
            "CI_PAGES_URL",
            "CI_PIPELINE_CREATED_AT",
            "CI_PIPELINE_ID",
            "CI_PIPELINE_IID",
            "CI_PIPELINE_SOURCE",
            "CI_PIPELINE_URL",
            "CI_PROJECT_DIR",
            "CI_PROJECT_ID",
            "CI_PROJECT_NAME",
            "CI_PROJECT_NAMESPACE",
            "CI_PROJECT_PATH",
            "CI_PROJECT_PATH_SLUG",
            "CI_PROJECT_ROOT_NAMESPACE",
            "CI_PROJECT_TITLE",
            "CI_PROJECT_URL",
            "CI_PROJECT_VISIBILITY",
            "CI_REGISTRY",
            "CI_REGISTRY_IMAGE",
            "CI_RUNNER_DESCRIPTION",
            "CI_RUNNER_ID",
            "CI_RUNNER_TAGS",
            "CI_SERVER",
            "CI_SERVER_HOST",
            "CI_SERVER_NAME",
            "CI_SERVER_PORT",
            "CI_SERVER_PROTOCOL",
            "CI_SERVER_URL",
            "CI_SERVER_VERSION",
        ],
    ),
    (
        "Azure Pipelines",
        &[
            "TF_BUILD",
            "AGENT_BUILDDIRECTORY",
            "AGENT_HOMEDIRECTORY",
            "AGENT_ID",
            "AGENT_JOBNAME",
            "AGENT_JOBSTATUS",
            "AGENT_MACHINENAME",
            "AGENT_NAME",
            "AGENT_OS",
            "AGENT_OSARCHITECTURE",
            "AGENT_TEMPDIRECTORY",
            "AGENT_TOOLSDIRECTORY",
            "AGENT_WORKFOLDER",
            "BUILD_ARTIFACTSTAGINGDIRECTORY",
            "BUILD_BINARIESDIRECTORY",
            "BUILD_BUILDID",
            "BUILD_BUILDNUMBER",
            "BUILD_BUILDURI",
            "BUILD_CONTAINERID",
            "BUILD_DEFINITIONNAME",
            "BUILD_DEFINITIONVERSION",
            "BUILD_QUEUEDBY",
            "BUILD_QUEUEDBYID",
            "BUILD_REASON",
            "BUILD_REPOSITORY_ID",
            "BUILD_REPOSITORY_LOCALPATH",
            "BUILD_REPOSITORY_NAME",
            "BUILD_REPOSITORY_PROVIDER",
            "BUILD_REPOSITORY_URI",
            "BUILD_REQUESTEDFOR",
            "BUILD_REQUESTEDFOREMAIL",
            "BUILD_REQUESTEDFORID",
            "BUILD_SOURCEBRANCH",
            "BUILD_SOURCEBRANCHNAME",
            "BUILD_SOURCESDIRECTORY",
            "BUILD_SOURCEVERSION",
            "BUILD_SOURCEVERSIONMESSAGE",
            "BUILD_STAGINGDIRECTORY",
            "PIPELINE_WORKSPACE",
            "SYSTEM_COLLECTIONID",
            "SYSTEM_COLLECTIONURI",
            "SYSTEM_DEFAULTWORKINGDIRECTORY",
            "SYSTEM_DEFINITIONID",
            "SYSTEM_HOSTTYPE",
            "SYSTEM_JOBATTEMPT",
            "SYSTEM_JOBDISPLAYNAME",
            "SYSTEM_JOBID",
            "SYSTEM_JOBNAME",
            "SYSTEM_PHASEDISPLAYNAME",
            "SYSTEM_PHASENAME",
            "SYSTEM_PULLREQUEST_ISFORK",
            "SYSTEM_PULLREQUEST_PULLREQUESTID",
            "SYSTEM_PULLREQUEST_PULLREQUESTNUMBER",
            "SYSTEM_PULLREQUEST_SOURCEBRANCH",
            "SYSTEM_PULLREQUEST_SOURCEREPOSITORYURI",
            "SYSTEM_PULLREQUEST_TARGETBRANCH",
            "SYSTEM_STAGEATTEMPT",
            "SYSTEM_STAGEDISPLAYNAME",
            "SYSTEM_STAGENAME",
            "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI",
            "SYSTEM_TEAMPROJECT",
            "SYSTEM_TEAMPROJECTID",
        ],
    ),
    (
        "Jenkins",
        &[
            "JENKINS_URL",
            "BRANCH_NAME",
            "BUILD_DISPLAY_NAME",
            "BUILD_ID",
            "BUILD_NUMBER",
            "BUILD_TAG",
            "BUILD_URL",
            "CHANGE_AUTHOR",
            "CHANGE_AUTHOR_DISPLAY_NAME",
            "CHANGE_AUTHOR_EMAIL",
            "CHANGE_BRANCH",
            "CHANGE_FORK",
            "CHANGE_ID",
            "CHANGE_TARGET",
            "CHANGE_TITLE",
            "CHANGE_URL",
            "EXECUTOR_NUMBER",
            "GIT_BRANCH",
            "GIT_COMMIT",
            "GIT_LOCAL_BRANCH",
            "GIT_PREVIOUS_COMMIT",
            "GIT_PREVIOUS_SUCCESSFUL_COMMIT",
            "GIT_URL",
            "JOB_BASE_NAME",
            "JOB_NAME",
            "JOB_URL",
            "NODE_LABELS",
            "NODE_NAME",
            "TAG_DATE",
            "TAG_NAME",
            "TAG_TIMESTAMP",
            "WORKSPACE",
        ],
    ),
    (
        "Buildkite",
        &[
            "BUILDKITE",
            "BUILDKITE_AGENT_ID",
            "BUILDKITE_AGENT_NAME",
            "BUILDKITE_BRANCH",
            "BUILDKITE_BUILD_AUTHOR",
            "BUILDKITE_BUILD_AUTHOR_EMAIL",
            "BUILDKITE_BUILD_CHECKOUT_PATH",
            "BUILDKITE_BUILD_CREATOR",
            "BUILDKITE_BUILD_CREATOR_EMAIL",
            "BUILDKITE_BUILD_ID",
            "BUILDKITE_BUILD_NUMBER",
            "BUILDKITE_BUILD_URL",
            "BUILDKITE_COMMIT",
            "BUILDKITE_JOB_ID",
            "BUILDKITE_LABEL",
            "BUILDKITE_MESSAGE",
            "BUILDKITE_ORGANIZATION_SLUG",
            "BUILDKITE_PARALLEL_JOB",
            "BUILDKITE_PARALLEL_JOB_COUNT",
            "BUILDKITE_PIPELINE_DEFAULT_BRANCH",
            "BUILDKITE_PIPELINE_NAME",
            "BUILDKITE_PIPELINE_SLUG",
            "BUILDKITE_PULL_REQUEST",
            "BUILDKITE_PULL_REQUEST_BASE_BRANCH",
            "BUILDKITE_PULL_REQUEST_REPO",
            "BUILDKITE_REPO",
            "BUILDKITE_RETRY_COUNT",
            "BUILDKITE_SOURCE",
            "BUILDKITE_STEP_ID",
            "BUILDKITE_STEP_KEY",
            "BUILDKITE_TAG",
        ],
    ),
    (
        "CircleCI",
        &[
            "CIRCLECI",
            "CIRCLE_BRANCH",
            "CIRCLE_BUILD_NUM",
            "CIRCLE_BUILD_URL",
            "CIRCLE_JOB",
            "CIRCLE_NODE_INDEX",
            "CIRCLE_NODE_TOTAL",
            "CIRCLE_PR_NUMBER",
            "CIRCLE_PR_REPONAME",
            "CIRCLE_PR_USERNAME",
            "CIRCLE_PREVIOUS_BUILD_NUM",
            "CIRCLE_PROJECT_REPONAME",
            "CIRCLE_PROJECT_USERNAME",
            "CIRCLE_PULL_REQUEST",
            "CIRCLE_PULL_REQUESTS",
            "CIRCLE_REPOSITORY_URL",
            "CIRCLE_SHA1",
            "CIRCLE_TAG",
            "CIRCLE_USERNAME",
            "CIRCLE_WORKFLOW_ID",
            "CIRCLE_WORKFLOW_JOB_ID",
            "CIRCLE_WORKFLOW_WORKSPACE_ID",
            "CIRCLE_WORKING_DIRECTORY",
        ],
    ),
    (
        "Bitbucket Pipelines",
        &[
            "BITBUCKET_BRANCH",
            "BITBUCKET_BUILD_NUMBER",
            "BITBUCKET_CLONE_DIR",
            "BITBUCKET_COMMIT",
            "BITBUCKET_DEPLOYMENT_ENVIRONMENT",
            "BITBUCKET_GIT_HTTP_ORIGIN",
            "BITBUCKET_PARALLEL_STEP",
            "BITBUCKET_PARALLEL_STEP_COUNT",
            "BITBUCKET_PIPELINE_UUID",
            "BITBUCKET_PR_DESTINATION_BRANCH",
            "BITBUCKET_PR_ID",
            "BITBUCKET_PROJECT_KEY",
            "BITBUCKET_REPO_FULL_NAME",
            "BITBUCKET_REPO_IS_PRIVATE",
            "BITBUCKET_REPO_OWNER",
            "BITBUCKET_REPO_SLUG",
            "BITBUCKET_STEP_UUID",
            "BITBUCKET_TAG",
            "BITBUCKET_WORKSPACE",
        ],
    ),
    (
        "Woodpecker",
        &[
            "CI_COMMIT_AUTHOR",
            "CI_COMMIT_BRANCH",
            "CI_COMMIT_MESSAGE",
            "CI_COMMIT_PULL_REQUEST",
            "CI_COMMIT_REF",
            "CI_COMMIT_SHA",
            "CI_COMMIT_SOURCE_BRANCH",
            "CI_COMMIT_TAG",
            "CI_COMMIT_TARGET_BRANCH",
            "CI_PIPELINE_EVENT",
            "CI_PIPELINE_FORGE_URL",
            "CI_PIPELINE_NUMBER",
            "CI_PIPELINE_URL",
            "CI_REPO",
            "CI_REPO_NAME",
            "CI_REPO_OWNER",
            "CI_REPO_URL",
            "CI_STEP_NAME",
            "CI_STEP_NUMBER",
            "CI_WORKSPACE",
        ],
    ),
];

pub fn always_passed(name: &str) -> bool {
    ALWAYS_PASSED.contains(&name)
        || name.starts_with("LC_")
        || CI_PASSED.iter().any(|(_, names)| names.contains(&name))
}

/// `value` with the `user:password@` of every URL in it taken out: GitLab, Buildkite, Azure
/// and Jenkins put job tokens there (`https://gitlab-ci-token:TOKEN@host/repo.git`). A
/// `git@host:repo` (no `://`) names a user, not a credential, and stays.
pub fn strip_userinfo(value: &str) -> Cow<'_, str> {
    if !value.contains('@') || !value.contains("://") {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends where the path, query, fragment or the next word begins.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | ',' | ';') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        out.push_str(
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
        );
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A stage's environment, without the per-run `MURPHY_*` variables.
#[derive(Debug, Default)]
pub struct StageEnv {
    /// Everything the stage's processes get.
    pub vars: BTreeMap<String, String>,
    /// The part that decides the result: the pipeline's and stage's `env`, and the listed
    /// `pass_env` variables (`None` when unset, which is a value too).
    pub fingerprinted: BTreeMap<String, Option<String>>,
}

/// The outer environment (the process's, in production), with the part every stage gets
/// picked out once per run rather than once per stage.
#[derive(Debug, Default)]
pub struct Outer {
    pub vars: BTreeMap<String, String>,
    passed: BTreeMap<String, String>,
}

impl Outer {
    pub fn new(vars: BTreeMap<String, String>) -> Outer {
        let passed = (vars.iter())
            .filter(|(name, _)| always_passed(name))
            .map(|(name, value)| (name.clone(), strip_userinfo(value).into_owned()))
            .collect();
        Outer { vars, passed }
    }
}

/// Resolves a stage's environment from `outer` and the run's `release` variables
/// (`MURPHY_VERSION`, ...), which count in the fingerprint: a build stamped with one version
/// is not restored for another.
pub fn resolve(
    plan: &Plan,
    stage: &Stage,
    outer: &Outer,
    release: &[(String, String)],
) -> StageEnv {
    let mut env = StageEnv {
        vars: outer.passed.clone(),
        fingerprinted: BTreeMap::new(),
    };
    for name in plan.pass_env.iter().chain(&stage.pass_env) {
        let value = outer.vars.get(name).cloned();
        if let Some(v) = &value {
            env.vars.insert(name.clone(), v.clone());
        }
        // Listing a variable says its value matters, whatever its name.
        env.fingerprinted.insert(name.clone(), value);
    }
    for (name, value) in plan.env.iter().chain(&stage.env).chain(release) {
        env.vars.insert(name.clone(), value.clone());
        env.fingerprinted.insert(name.clone(), Some(value.clone()));
    }
    env
}

/// The process environment as UTF-8 pairs (others cannot be named in `pass_env` anyway).
pub fn outer() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_taken_out_of_every_url_and_nothing_else() {
        let cases = [
            (
                "https://gitlab-ci-token:glcbt-64_x@gitlab.example.com/g/r.git",
                "https://gitlab.example.com/g/r.git",
            ),
            (
                "https://x-access-token:ghs_1@github.com/o/r.git https://u@h:8080?q=a@b",
                "https://github.com/o/r.git https://h:8080?q=a@b",
            ),
            ("git@github.com:o/r.git", "git@github.com:o/r.git"),
            ("ana@example.org", "ana@example.org"),
            ("https://dev.azure.com/org/p", "https://dev.azure.com/org/p"),
            ("https://a:b@", "https://"),
        ];
        for (value, expected) in cases {
            assert_eq!(strip_userinfo(value), expected, "{value}");
        }
    }

    #[test]
    fn credentials_are_not_on_the_allowlist() {
        for name in [
            "GITHUB_TOKEN",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            "CI_JOB_TOKEN",
            "CI_JOB_JWT",
            "CI_JOB_JWT_V2",
            "CI_REPOSITORY_URL",
            "CI_REGISTRY_PASSWORD",
            "CI_DEPLOY_PASSWORD",
            "SYSTEM_ACCESSTOKEN",
            "JENKINS_DEPLOY_PSW",
            "BUILDKITE_AGENT_ACCESS_TOKEN",
            "CIRCLE_OIDC_TOKEN",
        ] {
            assert!(!always_passed(name), "{name}");
        }
        for name in [
            "PATH",
            "LC_ALL",
            "CI_PROJECT_URL",
            "BUILDKITE_REPO",
            "TF_BUILD",
        ] {
            assert!(always_passed(name), "{name}");
        }
    }
}
