//! `murphy archive ...`, `murphy audit` and `murphy trace`: the archive for people and for
//! monitoring checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::show::{print_json, print_table};
use super::{Cli, io_error, load_plan, pipeline_file};
use crate::archive::manifest::BuildManifest;
use crate::archive::retention::Policy;
use crate::archive::{Archive, audit, bundle, sizes};
use crate::cli::error::{Error, exit};
use crate::remote::StoreUrl;
use crate::remote::archive::SharedArchive;

#[derive(Debug, clap::Args)]
pub(super) struct Where {
    /// The archive's folder [default: the pipeline's archive root, else `artifacts`]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum ArchiveCommand {
    /// List the builds, oldest first
    List {
        #[command(flatten)]
        at: Where,
        #[arg(long)]
        json: bool,
    },
    /// One build's manifest: run, commit, QA status, files
    Show {
        build: u64,
        #[command(flatten)]
        at: Where,
        #[arg(long)]
        json: bool,
    },
    /// Extract a build's files (all, or those named), checking each against the manifest
    Get {
        build: u64,
        files: Vec<String>,
        /// Where to put them [default: a new folder named after the build]
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        #[command(flatten)]
        at: Where,
    },
    /// Delete the builds retention lets go (older than keep_days and beyond keep_last)
    Prune {
        /// Only list what would go, and the rule that lets it go
        #[arg(long)]
        dry_run: bool,
        /// Judge ages as of this time (RFC 3339) instead of now
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
        /// Let release (tag) builds go too; they are pinned otherwise
        #[arg(long)]
        include_releases: bool,
        #[command(flatten)]
        at: Where,
        /// One JSON object: `{root, dry_run, keep_last, keep_days, pruned: [{build, rule}],
        /// swept}`
        #[arg(long)]
        json: bool,
    },
    /// Total and per-file size of each build, as a table and optionally an SVG chart
    Sizes {
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        #[command(flatten)]
        at: Where,
        /// One JSON array: `[{build, date, total, files: {PATH: BYTES}}]`, oldest first
        #[arg(long)]
        json: bool,
    },
}

/// The archive a command means, and the retention it is kept by.
fn locate(cli: &Cli, at: &Where) -> Result<(Archive, Policy), Error> {
    let (archive, policy, _) = locate_shared(cli, at)?;
    Ok((archive, policy))
}

/// The archive a loaded pipeline keeps (the first stage's that archives), with its retention:
/// what `murphy serve` shows.
pub(super) fn for_plan(plan: &crate::plan::Plan) -> Option<(Archive, Policy)> {
    let spec = plan.stages.iter().find_map(|s| s.archive.as_ref())?;
    Some((
        Archive::new(plan.root.join(&spec.root)),
        Policy {
            keep_last: spec.keep_last,
            keep_days: spec.keep_days,
        },
    ))
}

/// The archive as a store names it: the pipeline's `store:` and the archive's name there (if
/// the root is in the project).
struct Place {
    store: Option<StoreUrl>,
    name: Option<String>,
}

impl Place {
    /// The shared archive, when a store is configured (`--store`, MURPHY_STORE, `store:`).
    fn open(&self, cli: &Cli, root: &Path) -> Result<Option<SharedArchive>, Error> {
        let env = crate::environment::outer();
        let Some(remote) = super::store::open(cli, self.store.as_ref(), &env)? else {
            return Ok(None);
        };
        let Some(name) = self.name.clone() else {
            return Err(Error::Usage(format!(
                "`{}` is outside the project, so it has no place in the shared store `{}`; give an archive root inside the project",
                root.display(),
                remote.url()
            )));
        };
        Ok(Some(SharedArchive::new(remote, name)))
    }
}

/// [`locate`], with where the archive is on the shared store.
fn locate_shared(cli: &Cli, at: &Where) -> Result<(Archive, Policy, Place), Error> {
    // A pipeline that exists but does not load must stop us: guessing the default retention
    // could delete builds it keeps.
    let plan = match pipeline_file(cli) {
        Ok(file) => Some(load_plan(cli, &file)?),
        Err(_) => None,
    };
    let base = plan.as_ref().map(|p| p.root.clone()).unwrap_or_default();
    let specs: Vec<_> = plan
        .iter()
        .flat_map(|p| p.stages.iter().filter_map(|s| s.archive.clone()))
        .collect();
    let root = match &at.root {
        Some(root) => root.clone(),
        None => {
            let mut roots: Vec<&Path> = specs.iter().map(|s| s.root.as_path()).collect();
            roots.sort();
            roots.dedup();
            match roots.as_slice() {
                [] => base.join("artifacts"),
                [one] => base.join(one),
                several => {
                    let names: Vec<String> = several
                        .iter()
                        .map(|r| format!("`{}`", r.display()))
                        .collect();
                    return Err(Error::Usage(format!(
                        "the pipeline archives into {}; say which with --root",
                        names.join(" and ")
                    )));
                }
            }
        }
    };
    let same = |a: &Path, b: &Path| match (std::path::absolute(a), std::path::absolute(b)) {
        (Ok(a), Ok(b)) => crate::plan::normalize(&a) == crate::plan::normalize(&b),
        _ => a == b,
    };
    let spec = specs.iter().find(|s| same(&base.join(&s.root), &root));
    let inside = match (std::path::absolute(&root), std::path::absolute(&base)) {
        (Ok(root), Ok(base)) => crate::plan::normalize(&root)
            .strip_prefix(crate::plan::normalize(&base))
            .ok()
            .map(Path::to_owned),
        _ => None,
    };
    let place = Place {
        store: plan.as_ref().and_then(|p| p.store.clone()),
        name: spec
            .map(|s| s.root.clone())
            .or(inside)
            .map(|root| crate::remote::archive::name(&root)),
    };
    let policy = spec
        .map(|s| Policy {
            keep_last: s.keep_last,
            keep_days: s.keep_days,
        })
        .unwrap_or_else(|| {
            let policy = Policy::default();
            eprintln!(
                "note: no pipeline archives into {}: using the default retention (keep_last {}, keep_days {})",
                root.display(),
                policy.keep_last,
                policy.keep_days
            );
            policy
        });
    Ok((Archive::new(root), policy, place))
}

pub(super) fn archive(cli: &Cli, command: &ArchiveCommand) -> Result<i32, Error> {
    match command {
        ArchiveCommand::List { at, json } => {
            let (archive, _, place) = locate_shared(cli, at)?;
            let builds: Vec<(u64, Result<BuildManifest, String>)> =
                match place.open(cli, archive.root())? {
                    Some(shared) => {
                        crate::report::note(&format!("the shared archive {}", shared.location()));
                        let listing = crate::session::runtime()?.block_on(shared.list())?;
                        listing
                            .builds
                            .into_iter()
                            .map(|b| (b.number, b.manifest))
                            .collect()
                    }
                    None => archive
                        .builds()?
                        .into_iter()
                        .map(|b| (b.number, b.manifest))
                        .collect(),
                };
            if *json {
                let manifests: Vec<&BuildManifest> =
                    builds.iter().filter_map(|(_, m)| m.as_ref().ok()).collect();
                print_json(&manifests)?;
                return Ok(exit::SUCCESS);
            }
            let mut rows = vec![
                [
                    "BUILD", "CREATED", "TRIGGER", "VERSION", "COMMIT", "FILES", "SIZE", "NAME",
                ]
                .map(str::to_owned),
            ];
            for (number, manifest) in &builds {
                rows.push(match manifest {
                    Ok(m) => [
                        m.build.to_string(),
                        m.created_at.strftime("%Y-%m-%d %H:%M").to_string(),
                        m.trigger.name().to_owned(),
                        m.version.clone().unwrap_or_else(|| "-".into()),
                        m.commit
                            .as_deref()
                            .map(|c| c.get(..12).unwrap_or(c).to_owned())
                            .unwrap_or_else(|| "-".into()),
                        m.files.len().to_string(),
                        sizes::human(m.bundle_size),
                        m.name.clone(),
                    ],
                    Err(err) => [
                        number.to_string(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        format!("(unreadable manifest: {err})"),
                    ],
                });
            }
            print_table(&rows);
        }
        ArchiveCommand::Show { build, at, json } => {
            let (archive, _) = locate(cli, at)?;
            let (dir, m) = archive.build(*build)?;
            if *json {
                print_json(&m)?;
                return Ok(exit::SUCCESS);
            }
            println!("build {} `{}` in {}", m.build, m.name, dir.display());
            println!("created   {}", m.created_at);
            println!(
                "run       {} (stage `{}`, trigger {})",
                m.run_id, m.stage, m.trigger
            );
            if let Some(v) = &m.version {
                println!(
                    "version   {v}{}",
                    if m.prerelease == Some(true) {
                        " (pre-release)"
                    } else {
                        ""
                    }
                );
            }
            if let Some(c) = &m.commit {
                println!("commit    {c}");
            }
            if let Some(link) = &m.links.commit {
                println!("link      {link}");
            }
            if let Some(d) = &m.description {
                println!("change    {}", d.lines().next().unwrap_or_default());
            }
            println!(
                "bundle    {} ({}, sha256 {})",
                m.bundle,
                sizes::human(m.bundle_size),
                m.bundle_sha256
            );
            println!("qa");
            for s in &m.stages {
                println!("  {:<24} {}", s.name, s.state);
            }
            println!("files");
            for f in &m.files {
                println!("  {}  {:>10}  {}", f.sha256, sizes::human(f.size), f.path);
            }
        }
        ArchiveCommand::Get {
            build,
            files,
            to,
            at,
        } => {
            let (archive, _) = locate(cli, at)?;
            let (dir, m) = archive.build(*build)?;
            // The manifest's name is data, not a path: only a plain name here is used.
            let dest = to.clone().unwrap_or_else(|| {
                let plain = Path::new(&m.name)
                    .file_name()
                    .filter(|n| *n != ".." && *n != "." && m.name == n.to_string_lossy());
                PathBuf::from(plain.map_or_else(
                    || format!("build-{}", m.build),
                    |n| n.to_string_lossy().into_owned(),
                ))
            });
            std::fs::create_dir_all(&dest)
                .map_err(|e| io_error(&format!("cannot create `{}`", dest.display()), e))?;
            let expected: BTreeMap<String, String> = m
                .files
                .iter()
                .map(|f| (f.path.clone(), f.sha256.clone()))
                .collect();
            let written = bundle::extract(&dir.join(&m.bundle), &dest, files, &expected)
                .map_err(crate::archive::ArchiveError::from)?;
            println!(
                "extracted {} file(s) of build {} into {}, each checked against the manifest",
                written.len(),
                m.build,
                dest.display()
            );
        }
        ArchiveCommand::Prune {
            dry_run,
            now,
            include_releases,
            at,
            json,
        } => {
            let (archive, policy, place) = locate_shared(cli, at)?;
            let now = now.unwrap_or_else(Timestamp::now);
            let verb = if *dry_run { "would delete" } else { "deleted" };
            let mut swept = Vec::new();
            let expired = match place.open(cli, archive.root())? {
                Some(shared) => {
                    crate::report::note(&format!("the shared archive {}", shared.location()));
                    let runtime = crate::session::runtime()?;
                    if *dry_run {
                        runtime.block_on(shared.expired(policy, now, *include_releases))?
                    } else {
                        let pruned =
                            runtime.block_on(shared.prune(policy, now, *include_releases))?;
                        swept = pruned.swept;
                        pruned.expired
                    }
                }
                None => archive.prune(policy, now, *include_releases, *dry_run)?,
            };
            if *json {
                let pruned: Vec<_> = (expired.iter())
                    .map(|e| serde_json::json!({"build": e.build, "rule": e.rule}))
                    .collect();
                print_json(&serde_json::json!({
                    "root": archive.root(),
                    "dry_run": dry_run,
                    "keep_last": policy.keep_last,
                    "keep_days": policy.keep_days,
                    "pruned": pruned,
                    "swept": swept,
                }))?;
                return Ok(exit::SUCCESS);
            }
            for build in &swept {
                println!(
                    "deleted build {build}: incomplete (no manifest) for over {}",
                    jiff::fmt::friendly::SpanPrinter::new()
                        .duration_to_string(&crate::remote::archive::GRACE)
                );
            }
            for e in &expired {
                println!("{verb} build {}: {}", e.build, e.rule);
            }
            if expired.is_empty() {
                println!(
                    "nothing to prune: keep_last {}, keep_days {}",
                    policy.keep_last, policy.keep_days
                );
            }
        }
        ArchiveCommand::Sizes { svg, at, json } => {
            let (archive, _) = locate(cli, at)?;
            let manifests: Vec<BuildManifest> = archive
                .builds()?
                .into_iter()
                .filter_map(|b| b.manifest.ok())
                .collect();
            let rows = sizes::rows(&manifests);
            if *json {
                print_json(&rows)?;
            } else {
                print_table(&sizes::table(&rows));
            }
            if let Some(path) = svg {
                crate::atomic_file::write_shared(path, sizes::svg(&rows).as_bytes())
                    .map_err(|e| io_error(&format!("cannot write `{}`", path.display()), e))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(exit::SUCCESS)
}

pub(super) fn audit(cli: &Cli, at: &Where, json: bool) -> Result<i32, Error> {
    let (archive, policy) = locate(cli, at)?;
    let audit::Report { builds, findings } = audit::audit(&archive, policy, Timestamp::now())?;
    if json {
        print_json(&serde_json::json!({
            "root": archive.root(),
            "builds": builds,
            "ok": findings.is_empty(),
            "findings": findings,
        }))?;
    } else if findings.is_empty() {
        println!(
            "{builds} build(s) in {} match their records",
            archive.root().display()
        );
    } else {
        for f in &findings {
            let build = f.build.map(|b| format!("build {b}: ")).unwrap_or_default();
            println!("{}: {build}{}", f.kind, f.detail);
        }
        println!(
            "{} problem(s) in {}",
            findings.len(),
            archive.root().display()
        );
    }
    Ok(if findings.is_empty() {
        exit::SUCCESS
    } else {
        exit::FAILED
    })
}

pub(super) fn trace(cli: &Cli, at: &Where, target: &str, json: bool) -> Result<i32, Error> {
    let (archive, _) = locate(cli, at)?;
    let sha256 = if target.len() == 64 && target.bytes().all(|b| b.is_ascii_hexdigit()) {
        target.to_ascii_lowercase()
    } else {
        bundle::sha256_file(Path::new(target))
            .map_err(|e| {
                io_error(
                    &format!("cannot read `{target}` (give a path or a sha256)"),
                    e,
                )
            })?
            .0
    };
    let found: Vec<(BuildManifest, crate::archive::manifest::FileEntry)> = (archive.builds()?)
        .into_iter()
        .filter_map(|build| {
            let m = build.manifest.ok()?;
            let file = m.files.iter().find(|f| f.sha256 == sha256)?.clone();
            Some((m, file))
        })
        .collect();
    if json {
        let builds: Vec<serde_json::Value> = (found.iter())
            .map(|(m, file)| {
                serde_json::json!({
                    "build": m.build,
                    "name": m.name,
                    "file": file,
                    "created_at": m.created_at,
                    "run_id": m.run_id,
                    "stage": m.stage,
                    "trigger": m.trigger,
                    "version": m.version,
                    "commit": m.commit,
                    "links": m.links,
                    "stages": m.stages,
                })
            })
            .collect();
        print_json(&builds)?;
    }
    for (m, file) in found.iter().filter(|_| !json) {
        println!(
            "build {} `{}`: {} ({})",
            m.build, m.name, file.path, m.created_at
        );
        println!(
            "  run {} (stage `{}`, trigger {})",
            m.run_id, m.stage, m.trigger
        );
        if let Some(c) = &m.commit {
            println!("  commit {c}");
        }
        println!("  made from, stage by stage (following needs):");
        for stage in m.stages.iter().rev() {
            let needs = if stage.needs.is_empty() {
                String::new()
            } else {
                format!(", needs {}", stage.needs.join(", "))
            };
            println!("    {} ({}{needs})", stage.name, stage.state);
            for input in &stage.inputs {
                println!(
                    "      {}  {}",
                    input.sha256.get(..16).unwrap_or(&input.sha256),
                    input.path
                );
            }
        }
    }
    if found.is_empty() {
        eprintln!("no archived build holds a file with sha256 {sha256}");
        return Ok(exit::FAILED);
    }
    Ok(exit::SUCCESS)
}
