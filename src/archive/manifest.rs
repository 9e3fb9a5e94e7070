//! `manifest.json`: what a build is, from records not memory: its files by SHA-256, the run
//! and commit it came from, the QA status of the stages that led to it, and an in-toto
//! Statement v1 with a SLSA Provenance v1 predicate.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::change::Links;
use crate::trigger::Trigger;

pub const MANIFEST_VERSION: u32 = 1;

/// The in-toto and SLSA type URIs the provenance statement uses.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// murphy's build type: a pipeline stage run by murphy, parameters as in `externalParameters`.
pub const BUILD_TYPE: &str = "urn:murphy:build-type:pipeline-stage:v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildManifest {
    pub v: u32,
    pub build: u64,
    /// The rendered archive name.
    pub name: String,
    /// The bundle's file name in the build's folder.
    pub bundle: String,
    pub bundle_sha256: String,
    pub bundle_size: u64,
    pub created_at: Timestamp,
    pub pipeline: String,
    pub run_id: String,
    pub stage: String,
    pub trigger: Trigger,
    pub version: Option<String>,
    pub prerelease: Option<bool>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub links: Links,
    pub description: Option<String>,
    /// The archived files, sorted by path.
    pub files: Vec<FileEntry>,
    /// The stages that led to the build (its needs, transitively, in pipeline order) with how
    /// they ended in this run (the QA status) and their inputs.
    pub stages: Vec<StageEntry>,
    /// An in-toto Statement v1 whose predicate is SLSA Provenance v1.
    pub provenance: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEntry {
    pub name: String,
    /// `succeeded`, `cached`, `skipped (when)`, ...
    pub state: String,
    pub needs: Vec<String>,
    /// Input files with their SHA-256 when the build was made.
    pub inputs: Vec<FileEntry>,
}

impl BuildManifest {
    /// The release this build is of, if it is one (a tag run): its pipeline, stage and
    /// version (its tag if it has none). Retention pins the first build of each release.
    pub fn release(&self) -> Option<Release<'_>> {
        (self.trigger == Trigger::Tag).then(|| Release {
            pipeline: &self.pipeline,
            stage: &self.stage,
            version: self.version.as_deref().or(self.tag.as_deref()),
        })
    }
}

/// What makes two builds builds of the same release: a stage of a pipeline archiving one
/// version (another stage archiving the same version is another part of the release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Release<'a> {
    pub pipeline: &'a str,
    pub stage: &'a str,
    pub version: Option<&'a str>,
}

/// What the provenance statement is made from.
pub struct ProvenanceInput<'a> {
    pub files: &'a [FileEntry],
    pub stages: &'a [StageEntry],
    pub pipeline_file: &'a str,
    pub stage: &'a str,
    pub run_id: &'a str,
    pub trigger: Trigger,
    pub version: Option<&'a str>,
    pub commit: Option<&'a str>,
    pub remote: Option<&'a str>,
    /// Where the repository is, for a commit without a remote to name.
    pub project: &'a std::path::Path,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// The in-toto Statement: subjects are the archived files by digest; resolved dependencies
/// are the git commit and every input of the stages that led to them.
pub fn provenance(p: &ProvenanceInput<'_>) -> Value {
    let subject: Vec<Value> = p
        .files
        .iter()
        .map(|f| json!({"name": f.path, "digest": {"sha256": f.sha256}}))
        .collect();
    let mut dependencies = Vec::new();
    if let Some(commit) = p.commit {
        let uri = match p.remote {
            Some(remote) if remote.contains("://") => format!("git+{remote}@{commit}"),
            // scp-like `git@host:o/r` is not a URI; its ssh:// form is.
            Some(remote) => match remote.split_once(':') {
                Some((host, path)) if !remote.starts_with('/') => {
                    format!("git+ssh://{host}/{}@{commit}", path.trim_start_matches('/'))
                }
                _ => format!("git+file://{remote}@{commit}"),
            },
            None => {
                let path = std::path::absolute(p.project).unwrap_or_else(|_| p.project.to_owned());
                format!("git+file://{}@{commit}", path.display())
            }
        };
        dependencies.push(json!({"uri": uri, "digest": {"gitCommit": commit}}));
    }
    let mut seen = std::collections::BTreeMap::new();
    for stage in p.stages {
        for input in &stage.inputs {
            seen.entry(input.path.clone())
                .or_insert_with(|| (input.sha256.clone(), Vec::new()))
                .1
                .push(stage.name.clone());
        }
    }
    for (path, (sha256, stages)) in seen {
        dependencies.push(json!({
            "name": path,
            "digest": {"sha256": sha256},
            "annotations": {"stages": stages},
        }));
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "pipeline": p.pipeline_file,
                    "stage": p.stage,
                    "trigger": p.trigger.name(),
                    "version": p.version,
                },
                "internalParameters": {
                    "murphyVersion": env!("CARGO_PKG_VERSION"),
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": format!("urn:murphy:builder:{}", env!("CARGO_PKG_VERSION"))},
                "metadata": {
                    "invocationId": p.run_id,
                    "startedOn": p.started_at.to_string(),
                    "finishedOn": p.finished_at.to_string(),
                },
            },
        },
    })
}
