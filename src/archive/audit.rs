//! `murphy audit`: does the archive still match its records? Every build is checked against
//! its manifest, and the archive against its retention policy.

use std::collections::BTreeMap;
use std::fs;

use jiff::Timestamp;
use serde::Serialize;

use super::retention::Policy;
use super::{Archive, ArchiveError, bundle};

/// One thing wrong, for a person or a monitoring check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The build it concerns, if one.
    pub build: Option<u64>,
    /// A stable word for machines: `missing-file`, `changed-file`, `extra-file`,
    /// `unsafe-entry`, `bad-bundle`, `bad-manifest`, `manifest-without-bundle`,
    /// `build-without-manifest`, `overdue`, `missing-build`.
    pub kind: &'static str,
    pub detail: String,
}

/// What an audit found, and in how many builds.
#[derive(Debug)]
pub struct Report {
    pub builds: usize,
    /// Empty when the archive matches its records.
    pub findings: Vec<Finding>,
}

/// Checks every build. The check reads the archive in several looks (the folder, each build,
/// `.next`), which a writer or a prune working meanwhile can make disagree (a build listed
/// and then renamed away, a number given out after the listing). So what looks wrong is
/// checked again under the archive's lock, which keeps them out; only that is reported.
/// An archive that looks right is not held up: writers never wait for a clean audit.
pub fn audit(archive: &Archive, policy: Policy, now: Timestamp) -> Result<Report, ArchiveError> {
    let first = check(archive, policy, now)?;
    if first.findings.is_empty() {
        return Ok(first);
    }
    let _lock = archive.read_lock()?;
    check(archive, policy, now)
}

fn check(archive: &Archive, policy: Policy, now: Timestamp) -> Result<Report, ArchiveError> {
    let mut findings = Vec::new();
    let builds = archive.builds()?;
    for build in &builds {
        let mut finding = |kind, detail: String| {
            findings.push(Finding {
                build: Some(build.number),
                kind,
                detail,
            });
        };
        let manifest = match &build.manifest {
            Ok(m) => m,
            Err(_) if !build.dir.join("manifest.json").exists() => {
                finding(
                    "build-without-manifest",
                    format!("{} has no manifest.json", build.dir.display()),
                );
                continue;
            }
            Err(err) => {
                finding(
                    "bad-manifest",
                    format!("manifest.json does not read: {err}"),
                );
                continue;
            }
        };
        if manifest.build != build.number {
            finding(
                "bad-manifest",
                format!(
                    "the manifest says build {}, the folder {}",
                    manifest.build, build.number
                ),
            );
        }
        let bundle_path = build.dir.join(&manifest.bundle);
        if !bundle_path.is_file() {
            finding(
                "manifest-without-bundle",
                format!("the bundle `{}` is gone", manifest.bundle),
            );
            continue;
        }
        for entry in fs::read_dir(&build.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "manifest.json" && name != manifest.bundle {
                finding(
                    "extra-file",
                    format!("`{name}` in the build's folder is in no record"),
                );
            }
        }
        match bundle::sha256_file(&bundle_path) {
            Ok((sha, _)) if sha == manifest.bundle_sha256 => {}
            Ok((sha, _)) => finding(
                "changed-file",
                format!(
                    "the bundle's sha256 is {sha}, the manifest says {}",
                    manifest.bundle_sha256
                ),
            ),
            Err(err) => finding("bad-bundle", format!("cannot read the bundle: {err}")),
        }
        // An unreadable bundle is reported once, by the digests below.
        for name in bundle::unsafe_entries(&bundle_path).unwrap_or_default() {
            finding(
                "unsafe-entry",
                format!(
                    "entry `{name}` would land outside the folder the bundle is extracted to (absolute path, `..` or a symlink)"
                ),
            );
        }
        let inside = match bundle::digests(&bundle_path) {
            Ok(inside) => inside,
            Err(err) => {
                finding("bad-bundle", crate::causes::line(&err));
                continue;
            }
        };
        let recorded: BTreeMap<&str, &str> = manifest
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.sha256.as_str()))
            .collect();
        for (path, sha) in &recorded {
            match inside.get(*path) {
                None => finding(
                    "missing-file",
                    format!("`{path}` is in the manifest but not the bundle"),
                ),
                Some((actual, _)) if actual != sha => finding(
                    "changed-file",
                    format!("`{path}` has sha256 {actual}, the manifest says {sha}"),
                ),
                Some(_) => {}
            }
        }
        for path in inside.keys().filter(|p| !recorded.contains_key(p.as_str())) {
            finding(
                "extra-file",
                format!("`{path}` is in the bundle but not the manifest"),
            );
        }
    }

    for leftover in manifests_without_builds(archive) {
        findings.push(Finding {
            build: None,
            kind: "manifest-without-bundle",
            detail: format!("{} is a manifest outside any build folder", leftover),
        });
    }

    for e in archive.expired(policy, now, false)? {
        findings.push(Finding {
            build: Some(e.build),
            kind: "overdue",
            detail: format!(
                "retention lets it go ({}); `murphy archive prune` removes it",
                e.rule
            ),
        });
    }
    // The newest `keep_last` numbers are never pruned, so a gap among them is a lost build,
    // counting from the highest number ever given out, not the highest still there.
    let given = archive.last_given();
    if let Some(newest) = builds.last().map(|b| b.number).max(given) {
        let floor = newest
            .saturating_sub(policy.keep_last.saturating_sub(1))
            .max(1);
        for number in floor..=newest {
            if !builds.iter().any(|b| b.number == number) {
                findings.push(Finding {
                    build: Some(number),
                    kind: "missing-build",
                    detail: format!(
                        "build {number} is gone, but retention keeps the {} newest",
                        policy.keep_last
                    ),
                });
            }
        }
    }
    findings.sort_by_key(|f| f.build);
    Ok(Report {
        builds: builds.len(),
        findings,
    })
}

/// `manifest.json` files lying directly in the archive root or in folders that are not builds.
fn manifests_without_builds(archive: &Archive) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(archive.root()) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || name.parse::<u64>().is_ok() {
            continue;
        }
        if name == "manifest.json" || (path.is_dir() && path.join("manifest.json").exists()) {
            out.push(path.display().to_string());
        }
    }
    out
}
