//! `manifest.json`: what a build is, from records not memory: its files by SHA-256, the run
//! and commit it came from, the QA status of the stages that led to it, and an in-toto
//! Statement v1 with a SLSA Provenance v1 predicate.

use jiff::Timestamp;
use serde::de::IgnoredAny;
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
        release(
            self.trigger,
            &self.pipeline,
            &self.stage,
            self.version.as_deref().or(self.tag.as_deref()),
        )
    }
}

/// The few fields of a manifest retention reads. Parsed on their own (serde skips the rest
/// without building it), so a prune over 10,000 builds does not make 10,000 provenance
/// statements only to drop them. The fields it does not read must still be there (checked,
/// not built), so a manifest retention keeps as unreadable is the one [`BuildManifest`] is.
#[derive(Debug, Deserialize)]
#[allow(
    dead_code,
    reason = "the unread fields are checked for presence, not read"
)]
pub struct Dated {
    pub v: u32,
    pub created_at: Timestamp,
    pipeline: String,
    stage: String,
    trigger: Trigger,
    version: Option<String>,
    tag: Option<String>,
    build: IgnoredAny,
    name: IgnoredAny,
    bundle: IgnoredAny,
    bundle_sha256: IgnoredAny,
    bundle_size: IgnoredAny,
    run_id: IgnoredAny,
    links: IgnoredAny,
    files: IgnoredAny,
    stages: IgnoredAny,
    provenance: IgnoredAny,
}

impl Dated {
    /// As [`BuildManifest::release`].
    pub fn release(&self) -> Option<Release<'_>> {
        release(
            self.trigger,
            &self.pipeline,
            &self.stage,
            self.version.as_deref().or(self.tag.as_deref()),
        )
    }
}

fn release<'a>(
    trigger: Trigger,
    pipeline: &'a str,
    stage: &'a str,
    version: Option<&'a str>,
) -> Option<Release<'a>> {
    (trigger == Trigger::Tag).then_some(Release {
        pipeline,
        stage,
        version,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(trigger: Trigger) -> BuildManifest {
        BuildManifest {
            v: MANIFEST_VERSION,
            build: 7,
            name: "app-1.0".into(),
            bundle: "app-1.0.zip".into(),
            bundle_sha256: "00".repeat(32),
            bundle_size: 3,
            created_at: Timestamp::from_second(1_800_000_000).unwrap(),
            pipeline: "app".into(),
            run_id: "run".into(),
            stage: "pack".into(),
            trigger,
            version: Some("1.0".into()),
            prerelease: Some(false),
            commit: None,
            branch: None,
            tag: Some("v1.0".into()),
            links: Links::default(),
            description: None,
            files: Vec::new(),
            stages: Vec::new(),
            provenance: json!({"_type": STATEMENT_TYPE}),
        }
    }

    #[test]
    fn dated_reads_what_retention_needs_and_only_a_whole_manifest() {
        for trigger in [Trigger::Tag, Trigger::Push] {
            let full = manifest(trigger);
            let dated: Dated =
                serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
            assert_eq!(dated.created_at, full.created_at);
            assert_eq!(dated.release(), full.release());
        }
        // A manifest without its files is unreadable to retention, as to everyone else.
        let mut value = serde_json::to_value(manifest(Trigger::Push)).unwrap();
        value.as_object_mut().unwrap().remove("files");
        assert!(serde_json::from_value::<BuildManifest>(value.clone()).is_err());
        assert!(serde_json::from_value::<Dated>(value).is_err());
    }
}
