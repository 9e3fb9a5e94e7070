//! Which variables a stage sees, and which of them decide its fingerprint.
//!
//! A stage does not inherit the whole outer environment: what it may read is what may change
//! its result, so it must be named. Variables in [`ALWAYS_PASSED`] (and the CI providers'
//! own, by prefix, except those whose names say they hold credentials) always pass and do not
//! count in the fingerprint: a new `PATH` entry or a new CI run id must not invalidate every
//! checkpoint. Any variable listed in `pass_env:` passes, and its value is part of the
//! fingerprint, so a build made with one configuration is never restored for another.

use std::collections::BTreeMap;

use crate::plan::{Plan, Stage};

/// Always passed to stages, never part of a fingerprint.
pub const ALWAYS_PASSED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "TMPDIR", "TERM", "NO_COLOR", "CI",
];

/// Prefixes of variables that are passed the same way: locale settings and the CI providers'
/// own variables (GitHub Actions, GitLab CI, Azure Pipelines, Jenkins, Buildkite, CircleCI).
pub const ALWAYS_PASSED_PREFIXES: &[&str] = &[
    "LC_",
    "GITHUB_",
    "RUNNER_",
    "GITLAB_",
    "CI_",
    "TF_BUILD",
    "BUILD_",
    "SYSTEM_",
    "AGENT_",
    "JENKINS_",
    "JOB_",
    "BUILDKITE",
    "CIRCLE",
];

/// Parts of a name that say it holds a credential (`CI_JOB_TOKEN`, `GITHUB_TOKEN`,
/// `SYSTEM_ACCESSTOKEN`, `CI_REGISTRY_PASSWORD`): never passed by prefix, only when listed.
const CREDENTIAL_WORDS: &[&str] = &[
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "KEY",
    "CREDENTIAL",
    "AUTH",
];

pub fn always_passed(name: &str) -> bool {
    if ALWAYS_PASSED.contains(&name) {
        return true;
    }
    let upper = name.to_ascii_uppercase();
    ALWAYS_PASSED_PREFIXES.iter().any(|p| name.starts_with(p))
        && !CREDENTIAL_WORDS.iter().any(|w| upper.contains(w))
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

/// Resolves a stage's environment from `outer` (the process environment, in production) and
/// the run's `release` variables (`MURPHY_VERSION`, ...), which count in the fingerprint: a
/// build stamped with one version is not restored for another.
pub fn resolve(
    plan: &Plan,
    stage: &Stage,
    outer: &BTreeMap<String, String>,
    release: &[(String, String)],
) -> StageEnv {
    let mut env = StageEnv::default();
    for (name, value) in outer {
        if always_passed(name) {
            env.vars.insert(name.clone(), value.clone());
        }
    }
    for name in plan.pass_env.iter().chain(&stage.pass_env) {
        let value = outer.get(name).cloned();
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
