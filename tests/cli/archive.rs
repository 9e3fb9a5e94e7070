//! The artifact archive: numbered builds made by `archive:` stages, retention and `prune`, two
//! writers at once, kill -9 while archiving and while pruning, `audit`, `get` and crafted
//! (zip-slip) bundles, deterministic bundles, the in-toto/SLSA provenance, `trace`, `sizes`,
//! and the archive's config errors.
//!
//! Damage is done the way a failing disk or an attacker would do it: bytes flipped, files
//! deleted, zips rewritten with the zip crate, manifests edited.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Output, Test, parse_json};

/// Far enough ahead that every build made now is older than any `keep_days` used here.
const FUTURE: &str = "2100-01-01T00:00:00Z";
/// Before any build here was made: a clock set backwards.
const PAST: &str = "2001-01-01T00:00:00Z";

/// A pipeline whose one stage archives `dist/**` (files the test writes) with this retention.
fn keep(keep_last: u64, keep_days: u64) -> String {
    format!(
        "
        version: 1
        name: demo
        stages:
          pack:
            archive:
              files: [\"dist/**\"]
              retention: {{keep_last: {keep_last}, keep_days: {keep_days}}}
        "
    )
}

/// `keep(keep_last, keep_days)` with two files to archive, run `runs` times: builds 1..=runs
/// (as long as retention lets them stay).
fn archived(keep_last: u64, keep_days: u64, runs: usize) -> Output {
    let out = Test::new()
        .pipeline(&keep(keep_last, keep_days))
        .write("dist/app.txt", "the app\n")
        .write("dist/lib/util.txt", "a library file\n")
        .args(["run"])
        .run();
    for _ in 1..runs {
        out.murphy(["run"]).run();
    }
    out
}

/// `build` makes `dist/` from `src/`, `test` checks it, `pack` archives what `build` made.
const CHAIN: &str = r"
    version: 1
    name: demo
    stages:
      build:
        inputs: [src/app.txt]
        run: mkdir -p dist/bin && cp src/app.txt dist/app.txt && printf 'echo hi\n' > dist/bin/run.sh && chmod 755 dist/bin/run.sh
        outputs: [dist/app.txt, dist/bin/run.sh]
      test:
        needs: [build]
        inputs: [src/app.txt, tests/check.txt]
        run: grep -q app dist/app.txt
      lint:
        when: {trigger: [pr]}
        run: 'true'
      pack:
        needs: [build, test]
        needs_optional: [lint]
        archive:
          files: [dist/**]
";

fn chain_project() -> Test {
    Test::new()
        .pipeline(CHAIN)
        .write("src/app.txt", "the app, version 1\n")
        .write("tests/check.txt", "what the test checks\n")
}

/// `murphy archive list --json`, run from `cwd` (the temp dir if `None`).
fn list_in(out: &Output, cwd: Option<&str>) -> Vec<Value> {
    let mut command = out.murphy(["archive", "list", "--json"]);
    if let Some(cwd) = cwd {
        command = command.cwd(cwd);
    }
    parse_json(&command.run().stdout)
}

/// The build numbers `murphy archive list` shows, oldest first.
fn numbers(out: &Output) -> Vec<u64> {
    list_in(out, None)
        .iter()
        .map(|m| m["build"].as_u64().unwrap())
        .collect()
}

fn build_dir(out: &Output, build: u64) -> PathBuf {
    out.file(&format!("artifacts/{build:06}"))
}

fn manifest(out: &Output, build: u64) -> Value {
    let path = build_dir(out, build).join("manifest.json");
    parse_json(&fs::read_to_string(&path).unwrap())
}

fn write_manifest(out: &Output, build: u64, manifest: &Value) {
    let path = build_dir(out, build).join("manifest.json");
    fs::write(path, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
}

fn bundle_path(out: &Output, build: u64) -> PathBuf {
    let name = manifest(out, build)["bundle"].as_str().unwrap().to_owned();
    build_dir(out, build).join(name)
}

/// The entries of an archive's root that are not builds: temp folders, half-deleted builds.
fn leftovers(root: &Path) -> Vec<String> {
    fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".build") || n.starts_with(".deleting-"))
        .collect()
}

/// The temp files (`*.murphy-tmp-*`) directly in an archive's root.
fn temp_files(root: &Path) -> Vec<String> {
    fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".murphy-tmp-"))
        .collect()
}

/// `murphy audit --json`, which must exit `code`; its findings as `(build, kind)`, and the
/// whole report.
fn audit(out: &Output, code: i32) -> (Vec<(Option<u64>, String)>, Value) {
    let report: Value = parse_json(&out.murphy(["audit", "--json"]).code(code).run().stdout);
    assert_eq!(report["ok"], json!(code == 0), "{report:#}");
    let findings = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["build"].as_u64(), f["kind"].as_str().unwrap().to_owned()))
        .collect();
    (findings, report)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// RFC 3986's `scheme ":" rest`, with a non-empty rest.
fn is_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    !rest.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// One entry of a zip the test writes.
enum Item<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn write_zip(path: &Path, items: &[Item<'_>]) {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    for item in items {
        match item {
            Item::File(name, bytes) => {
                let options = SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .unix_permissions(0o644);
                zip.start_file(*name, options).unwrap();
                zip.write_all(bytes).unwrap();
            }
            Item::Symlink(name, target) => {
                zip.add_symlink(*name, *target, SimpleFileOptions::default())
                    .unwrap();
            }
        }
    }
    zip.finish().unwrap();
}

/// Puts a zip of `items` in place of a build's bundle, and makes the manifest's record of the
/// bundle itself (its sha256 and size) agree, as a careful forger would; the manifest's list
/// of files is left as it was.
fn replace_bundle(out: &Output, build: u64, items: &[Item<'_>]) {
    let path = bundle_path(out, build);
    write_zip(&path, items);
    let bytes = fs::read(&path).unwrap();
    let mut m = manifest(out, build);
    m["bundle_sha256"] = json!(sha256(&bytes));
    m["bundle_size"] = json!(bytes.len());
    write_manifest(out, build, &m);
}

/// Makes the manifest's list of files name exactly the files among `items`, with their digests.
fn record_files(out: &Output, build: u64, items: &[Item<'_>]) {
    let files: Vec<Value> = items
        .iter()
        .filter_map(|item| match item {
            Item::File(name, bytes) => {
                Some(json!({"path": name, "sha256": sha256(bytes), "size": bytes.len()}))
            }
            Item::Symlink(..) => None,
        })
        .collect();
    let mut m = manifest(out, build);
    m["files"] = json!(files);
    write_manifest(out, build, &m);
}

/// Every path below `dir`, relative to it, symlinks included (not followed).
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            out.extend(
                tree(&entry.path())
                    .into_iter()
                    .map(|p| format!("{name}/{p}")),
            );
        }
        out.insert(name);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Retention and prune

#[test]
fn prune_deletes_exactly_what_the_dry_run_lists_and_keeps_releases_unless_included() {
    let test = Test::new()
        .git_init()
        .pipeline(&keep(1, 1))
        .write("dist/app.txt", "the app\n")
        .write(".gitignore", "/artifacts/\n/.murphy/\n")
        .commit("the app")
        .git(["tag", "v1.0.0"]);
    let out = test.args(["run"]).run();
    out.murphy(["run", "--trigger", "tag"]).run();
    out.murphy(["run"]).run();
    out.murphy(["run"]).run();
    let builds = list_in(&out, None);
    let triggers: Vec<&str> = builds
        .iter()
        .map(|m| m["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, ["local", "tag", "local", "local"]);
    assert_eq!(builds[1]["version"], "1.0.0");

    // A clock set backwards makes every build look young: nothing goes, releases included.
    let past = out
        .murphy(["archive", "prune", "--now", PAST, "--include-releases"])
        .run();
    assert_eq!(past.stdout, "nothing to prune: keep_last 1, keep_days 1\n");
    assert_eq!(numbers(&out), [1, 2, 3, 4]);

    // What would go, and the rule that lets it go: the release (2) is pinned.
    let now: Timestamp = FUTURE.parse().unwrap();
    let rule = |build: u64, rank: u64| {
        let created: Timestamp = builds[build as usize - 1]["created_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let days = (now.as_nanosecond() - created.as_nanosecond()) / (86_400 * 1_000_000_000);
        format!(
            "build {build}: {days} days old (keep_days: 1) and number {rank} from the newest (keep_last: 1)"
        )
    };
    let dry = out
        .murphy(["archive", "prune", "--dry-run", "--now", FUTURE])
        .run();
    assert_eq!(
        dry.stdout,
        format!("would delete {}\nwould delete {}\n", rule(1, 4), rule(3, 2))
    );
    assert_eq!(numbers(&out), [1, 2, 3, 4], "a dry run deletes nothing");
    let dry_json: Value = parse_json(
        &out.murphy(["archive", "prune", "--dry-run", "--now", FUTURE, "--json"])
            .run()
            .stdout,
    );
    assert_eq!(
        dry_json["pruned"],
        serde_json::json!([
            {"build": 1, "rule": rule(1, 4).split_once(": ").unwrap().1},
            {"build": 3, "rule": rule(3, 2).split_once(": ").unwrap().1},
        ]),
        "{dry_json:#}"
    );
    assert_eq!(
        (
            &dry_json["dry_run"],
            &dry_json["keep_last"],
            &dry_json["keep_days"]
        ),
        (&Value::Bool(true), &Value::from(1), &Value::from(1)),
        "{dry_json:#}"
    );
    assert_eq!(numbers(&out), [1, 2, 3, 4], "a dry run deletes nothing");

    let pruned = out.murphy(["archive", "prune", "--now", FUTURE]).run();
    assert_eq!(
        pruned.stdout,
        dry.stdout.replace("would delete", "deleted"),
        "the prune deletes exactly what the dry run listed"
    );
    assert_eq!(numbers(&out), [2, 4]);
    for gone in [1, 3] {
        assert!(!build_dir(&out, gone).exists(), "build {gone}");
    }
    assert_eq!(leftovers(&out.file("artifacts")), Vec::<String>::new());

    // Asked to, the release goes too; the newest stays whatever its age.
    let with_releases = out
        .murphy(["archive", "prune", "--now", FUTURE, "--include-releases"])
        .run();
    assert_eq!(with_releases.stdout, format!("deleted {}\n", rule(2, 2)));
    assert_eq!(numbers(&out), [4]);
    // What retention removed is no loss in the audit's eyes.
    assert_eq!(audit(&out, 0).0, []);
}

/// A second tag run for a version already archived (a retried release) makes an ordinary
/// build: the first build of the release stays pinned, the repeat goes by retention, and the
/// run says so.
#[test]
fn a_repeated_tag_run_for_one_version_pins_only_its_first_build() {
    let test = Test::new()
        .git_init()
        .pipeline(&keep(1, 1))
        .write("dist/app.txt", "the app\n")
        .write(".gitignore", "/artifacts/\n/.murphy/\n")
        .commit("the app")
        .git(["tag", "v1.0.0"]);
    let first = test.args(["run", "--trigger", "tag"]).run();
    assert!(
        !first.stderr.contains("repeats release"),
        "{}",
        first.stderr
    );
    let again = first.murphy(["run", "--trigger", "tag"]).run();
    assert!(
        again.stderr.contains(
            "build 2 repeats release 1.0.0 of stage `pack`: build 1 stays the pinned one, \
             and retention keeps build 2 like any other"
        ),
        "{}",
        again.stderr
    );
    let out = again.murphy(["run"]).run();
    let builds = list_in(&out, None);
    let triggers: Vec<(&str, &str)> = builds
        .iter()
        .map(|m| {
            (
                m["trigger"].as_str().unwrap(),
                m["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        triggers,
        [("tag", "1.0.0"), ("tag", "1.0.0"), ("local", "1.0.0")]
    );

    // Old and beyond keep_last 1: the repeat goes, the first build of the release stays.
    let dry = out
        .murphy(["archive", "prune", "--dry-run", "--now", FUTURE])
        .run();
    let listed: Vec<&str> = dry.stdout.lines().collect();
    assert_eq!(listed.len(), 1, "{}", dry.stdout);
    assert!(
        listed[0].starts_with("would delete build 2: "),
        "{}",
        dry.stdout
    );
    out.murphy(["archive", "prune", "--now", FUTURE]).run();
    assert_eq!(numbers(&out), [1, 3]);
    // Once the first is gone (asked for), nothing else of the release is pinned either.
    out.murphy(["archive", "prune", "--now", FUTURE, "--include-releases"])
        .run();
    assert_eq!(numbers(&out), [3]);
}

#[test]
fn builds_made_in_a_row_respect_keep_last() {
    // keep_days 0: every build is old at once, so only keep_last holds builds, and the
    // retention run after each archive removes the one that falls out of the newest 3.
    let out = archived(3, 0, 4);
    assert_eq!(numbers(&out), [2, 3, 4]);
    assert_eq!(out.read("artifacts/.next"), "5");

    let past = out
        .murphy(["archive", "prune", "--now", PAST, "--include-releases"])
        .run();
    assert_eq!(past.stdout, "nothing to prune: keep_last 3, keep_days 0\n");
    let now = out.murphy(["archive", "prune"]).run();
    assert_eq!(now.stdout, "nothing to prune: keep_last 3, keep_days 0\n");
    assert_eq!(numbers(&out), [2, 3, 4]);

    // A fifth build: the next number, never a reused one, and still the newest 3.
    out.murphy(["run"]).run();
    assert_eq!(numbers(&out), [3, 4, 5]);
    assert_eq!(audit(&out, 0).0, []);
}

#[test]
fn builds_younger_than_keep_days_are_all_kept_beyond_keep_last() {
    // Like 31 builds in one day with the defaults: more builds than keep_last, all young.
    let out = archived(3, 1, 4);
    assert_eq!(numbers(&out), [1, 2, 3, 4]);
    let now = out.murphy(["archive", "prune"]).run();
    assert_eq!(now.stdout, "nothing to prune: keep_last 3, keep_days 1\n");
    assert_eq!(numbers(&out), [1, 2, 3, 4]);
    // Two days on, the oldest is both old and beyond the newest 3.
    let newest: Timestamp = list_in(&out, None)[3]["created_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let later = newest
        .checked_add(jiff::SignedDuration::from_hours(48))
        .unwrap()
        .to_string();
    let dry = out
        .murphy(["archive", "prune", "--dry-run", "--now", &later])
        .run();
    assert!(
        dry.stdout.starts_with("would delete build 1: 2 days old (keep_days: 1) and number 4 from the newest (keep_last: 3)\n"),
        "{}",
        dry.stdout
    );
    assert_eq!(dry.stdout.lines().count(), 1, "{}", dry.stdout);
    assert_eq!(audit(&out, 0).0, []);
}

/// `--root artifacts` names the very folder the pipeline archives into (`root: artifacts`),
/// so it must be kept by the pipeline's retention, not the defaults.
#[test]
fn root_given_on_the_command_line_keeps_the_pipelines_retention() {
    let out = archived(1, 1, 3);
    assert_eq!(numbers(&out), [1, 2, 3]);
    let dry = |root: Option<&str>| {
        let mut args = vec!["archive", "prune", "--dry-run", "--now", FUTURE];
        if let Some(root) = root {
            args.extend(["--root", root]);
        }
        out.murphy(args).run().stdout
    };
    let implied = dry(None);
    let lines: Vec<&str> = implied.lines().collect();
    assert_eq!(lines.len(), 2, "{implied}");
    assert!(lines[0].starts_with("would delete build 1: "), "{implied}");
    assert!(lines[1].starts_with("would delete build 2: "), "{implied}");
    assert!(implied.contains("(keep_last: 1)"), "{implied}");
    let absolute = out.file("artifacts").to_string_lossy().into_owned();
    for root in ["artifacts", "./artifacts", absolute.as_str()] {
        assert_eq!(dry(Some(root)), implied, "--root {root}");
    }
    assert_eq!(numbers(&out), [1, 2, 3], "a dry run deletes nothing");
}

/// `files: ["**"]` matches the archive's own folder: earlier builds (and the archive's
/// bookkeeping) must not go into the next build.
#[test]
fn the_archive_never_archives_itself() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            name: demo
            stages:
              pack:
                archive: {files: [\"**\"]}
            ",
        )
        .write("app.txt", "the app\n")
        .args(["run"])
        .run();
    out.murphy(["run"]).run();
    let m = manifest(&out, 2);
    let files: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["app.txt", "pipeline.yml"]);
}

/// `keep_last: 0, keep_days: 0` lets retention delete the build the stage just made, while
/// the run reports it archived: murphy must refuse that retention, or keep the new build.
#[test]
fn retention_never_deletes_the_build_just_made() {
    let out = archived(0, 0, 1);
    assert_eq!(numbers(&out), [1], "the build the run just made");
    assert_eq!(out.status().status, "succeeded");
    // The next run's build is the one kept now.
    out.murphy(["run"]).run();
    assert_eq!(numbers(&out), [2]);
    assert_eq!(out.read("artifacts/.next"), "3");
    assert_eq!(audit(&out, 0).0, []);
}

/// Each `files` entry must match a file: one that matches nothing (a build step that made
/// fewer files than the archive expects) fails the stage, naming it, and makes no build.
#[test]
fn a_files_entry_that_matches_nothing_fails_the_stage_and_makes_no_build() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            name: demo
            stages:
              pack:
                archive: {files: [\"dist/**\", \"dist/*.whl\", notes.txt]}
            ",
        )
        .write("dist/app.txt", "the app\n")
        .args(["run"])
        .code(1)
        .run();
    assert!(
        out.stderr.contains(
            "the archive's `files` entries `dist/*.whl`, `notes.txt` matched no file; \
             no build was made"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(out.status().stage("pack").state, "failed");
    assert_eq!(numbers(&out), Vec::<u64>::new());
    let root = out.file("artifacts");
    if root.exists() {
        assert_eq!(leftovers(&root), Vec::<String>::new());
        assert_eq!(temp_files(&root), Vec::<String>::new());
    }

    // With the missing files made, the same stage archives all of them.
    out.write("dist/app-1.0-py3-none-any.whl", "a wheel\n");
    out.write("notes.txt", "notes\n");
    out.murphy(["resume"]).run();
    let m = manifest(&out, 1);
    let files: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["dist/app-1.0-py3-none-any.whl", "dist/app.txt", "notes.txt"]
    );
}

// ---------------------------------------------------------------------------------------
// Two writers at once, kill -9 while archiving and while pruning

/// A pipeline named `name` with four stages that each wait for the file `../gate` (or for
/// murphy to be gone: a failed test kills it), then archive `x` into the shared root
/// `../shared`.
fn gated_writer(name: &str) -> String {
    let mut yaml = format!("version: 1\nname: {name}\nstages:\n");
    for stage in ["s1", "s2", "s3", "s4"] {
        yaml.push_str(&format!(
            "  {stage}:\n    run: touch ../ready.{name}.{stage}; while [ ! -e ../gate ] && kill -0 $PPID; do sleep 0.01; done\n    archive: {{files: [x], root: ../shared}}\n"
        ));
    }
    yaml
}

#[test]
fn two_runs_archiving_into_one_root_at_once_get_distinct_numbers_and_whole_builds() {
    let test = Test::new()
        .write("a/pipeline.yml", &gated_writer("a"))
        .write("a/x", "made by a\n")
        .write("b/pipeline.yml", &gated_writer("b"))
        .write("b/x", "made by b\n");
    // Each in its own project, so each with its own state directory.
    let mut a = test.cwd("a").args(["run", "--jobs", "4"]).spawn();
    let mut b = a.murphy(["run", "--jobs", "4"]).cwd("b").spawn();
    let root = a.path().to_owned();
    for (running, name) in [(&mut a, "a"), (&mut b, "b")] {
        for stage in ["s1", "s2", "s3", "s4"] {
            let ready = root.join(format!("ready.{name}.{stage}"));
            running.wait_until(&format!("stage {stage} of {name} at the gate"), || {
                ready.exists()
            });
        }
    }
    // All eight stages wait; open the gate and let them archive together.
    fs::write(root.join("gate"), "").unwrap();
    b.wait();
    let out = a.wait();
    assert!(out.file("a/.murphy").is_dir() && out.file("b/.murphy").is_dir());

    let builds = list_in(&out, Some("a"));
    assert_eq!(
        parse_json::<Vec<Value>>(
            &out.murphy(["archive", "list", "--json", "--root", "shared"])
                .run()
                .stdout
        ),
        builds,
        "the same archive, named from outside both projects"
    );
    let shared = out.file("shared");
    let numbers: Vec<u64> = builds
        .iter()
        .map(|m| m["build"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>(), "{builds:#?}");
    let made: BTreeSet<(String, String)> = builds
        .iter()
        .map(|m| {
            (
                m["pipeline"].as_str().unwrap().to_owned(),
                m["stage"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ["a", "b"]
        .iter()
        .flat_map(|p| ["s1", "s2", "s3", "s4"].map(|s| ((*p).to_owned(), s.to_owned())))
        .collect();
    assert_eq!(made, expected, "each stage of each run archived once");
    // Each build's folder holds its own number and its own run's file.
    for m in &builds {
        let build = m["build"].as_u64().unwrap();
        let dir = shared.join(format!("{build:06}"));
        let own: Value = parse_json(&fs::read_to_string(dir.join("manifest.json")).unwrap());
        assert_eq!(own["build"], build);
        let x = format!("made by {}\n", m["pipeline"].as_str().unwrap());
        assert_eq!(m["files"][0]["sha256"], sha256(x.as_bytes()), "{m:#}");
        assert!(dir.join(m["bundle"].as_str().unwrap()).is_file(), "{m:#}");
    }
    assert_eq!(fs::read_to_string(shared.join(".next")).unwrap(), "9");
    assert_eq!(leftovers(&shared), Vec::<String>::new());
    let report: Value = parse_json(
        &out.murphy(["audit", "--json", "--root", "../shared"])
            .cwd("a")
            .run()
            .stdout,
    );
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["builds"], 8, "{report:#}");
}

#[test]
fn kill_while_archiving_leaves_no_partial_build_and_resume_makes_exactly_one() {
    let out = Test::new()
        .pipeline(&keep(30, 30))
        .write("dist/app.txt", "the app\n")
        .env("MURPHY_CRASH_AT", "archive-staged:pack")
        .args(["run"])
        .run_killed();
    // The build was written in full under its temporary name, not yet renamed into place.
    assert_eq!(numbers(&out), Vec::<u64>::new());
    assert!(!build_dir(&out, 1).exists());
    assert_eq!(leftovers(&out.file("artifacts")).len(), 1);
    assert!(!out.file("artifacts/.next").exists());
    assert_eq!(audit(&out, 0).0, []);

    out.murphy(["resume"]).run();
    assert_eq!(numbers(&out), [1]);
    assert_eq!(out.read("artifacts/.next"), "2");
    assert_eq!(leftovers(&out.file("artifacts")), Vec::<String>::new());
    let run_id = out.status().run_id;
    assert_eq!(manifest(&out, 1)["run_id"], run_id.as_str());
    assert_eq!(audit(&out, 0).0, []);
}

#[test]
fn kill_after_the_build_is_in_place_never_makes_a_second_build_on_resume() {
    // `killer` kills murphy (its parent) the moment the build is in place, mostly before the
    // run has recorded that `pack` archived it (it spins, not sleeps, to hit that window);
    // only the first time. The count only keeps a broken `pack` from hanging the test.
    let out = Test::new()
        .pipeline(
            "
            version: 1
            name: demo
            stages:
              pack:
                archive: {files: [\"dist/**\"]}
              killer:
                run: if [ ! -e killed ]; then i=0; until [ -e artifacts/000001 ]; do i=$((i+1)); [ $i -lt 3000000 ] || exit 1; done; true > killed; kill -9 $PPID; fi
            ",
        )
        .write("dist/app.txt", "the app\n")
        .args(["run", "--jobs", "2"])
        .run_killed();
    assert_eq!(numbers(&out), [1]);
    let run_id = out.status().run_id;

    out.murphy(["resume"]).run();
    assert_eq!(numbers(&out), [1], "no second build");
    assert_eq!(manifest(&out, 1)["run_id"], run_id.as_str());
    let run = out.status();
    assert_eq!(
        (run.run_id.as_str(), run.status.as_str()),
        (run_id.as_str(), "succeeded")
    );
    assert_eq!(leftovers(&out.file("artifacts")), Vec::<String>::new());
    assert_eq!(audit(&out, 0).0, []);
    // The kill may have come before `.next` was written: the next build is still the next
    // number.
    out.murphy(["run"]).run();
    assert_eq!(numbers(&out), [1, 2]);
}

#[test]
fn kill_while_pruning_leaves_each_build_whole_or_gone_and_the_next_prune_finishes() {
    let out = archived(1, 1, 3);
    assert_eq!(numbers(&out), [1, 2, 3]);
    // The prune deletes 1, then dies with 2 renamed away but not yet deleted.
    out.murphy(["archive", "prune", "--now", FUTURE])
        .env("MURPHY_CRASH_AT", "prune-renamed:2")
        .run_killed();
    assert_eq!(numbers(&out), [3], "the renamed build is not a build");
    assert!(!build_dir(&out, 1).exists());
    assert!(!build_dir(&out, 2).exists());
    assert_eq!(leftovers(&out.file("artifacts")), [".deleting-000002"]);
    // What is listed is whole.
    assert_eq!(audit(&out, 0).0, []);

    // The next prune, with nothing left to expire, finishes the deletion.
    let next = out.murphy(["archive", "prune"]).run();
    assert_eq!(next.stdout, "nothing to prune: keep_last 1, keep_days 1\n");
    assert_eq!(leftovers(&out.file("artifacts")), Vec::<String>::new());
    assert_eq!(numbers(&out), [3]);
    assert_eq!(audit(&out, 0).0, []);
}

#[test]
fn kill_while_pruning_the_first_build_and_the_next_archive_cleans_up() {
    // keep_days 0: the second run's retention deletes build 1, and dies having renamed it.
    let out = archived(1, 0, 1);
    out.murphy(["run"])
        .env("MURPHY_CRASH_AT", "prune-renamed:1")
        .run_killed();
    assert_eq!(numbers(&out), [2]);
    assert!(!build_dir(&out, 1).exists());
    assert_eq!(leftovers(&out.file("artifacts")), [".deleting-000001"]);
    assert_eq!(audit(&out, 0).0, []);

    // The killed run's archive step, resumed: the build it made is found, not made again,
    // and the half-deleted build goes.
    out.murphy(["resume"]).run();
    assert_eq!(numbers(&out), [2]);
    assert_eq!(out.read("artifacts/.next"), "3");
    assert_eq!(leftovers(&out.file("artifacts")), Vec::<String>::new());
    assert_eq!(audit(&out, 0).0, []);

    // The next archive goes on from there.
    out.murphy(["run"]).run();
    assert_eq!(numbers(&out), [3]);
    assert_eq!(leftovers(&out.file("artifacts")), Vec::<String>::new());
}

/// A kill between writing `.next`'s temp file and renaming it (the build is in place) leaves
/// that temp file in the archive's root: the resumed run's archive step (its retention run)
/// removes it, and so does `archive prune`.
#[test]
fn temp_files_a_killed_writer_left_in_the_root_are_swept() {
    let out = Test::new()
        .pipeline(&keep(30, 30))
        .write("dist/app.txt", "the app\n")
        .env("MURPHY_CRASH_AT", "temp-written:.next")
        .args(["run"])
        .run_killed();
    assert_eq!(numbers(&out), [1]);
    let root = out.file("artifacts");
    assert_eq!(temp_files(&root).len(), 1, "{:?}", temp_files(&root));

    out.murphy(["resume"]).run();
    assert_eq!(numbers(&out), [1], "the build was found, not made again");
    assert_eq!(temp_files(&root), Vec::<String>::new());

    out.murphy(["run"])
        .env("MURPHY_CRASH_AT", "temp-written:.next")
        .run_killed();
    assert_eq!(temp_files(&root).len(), 1);
    out.murphy(["archive", "prune"]).run();
    assert_eq!(temp_files(&root), Vec::<String>::new());
    assert_eq!(numbers(&out), [1, 2]);
    assert_eq!(leftovers(&root), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// Audit

/// Whether `pid` waits for a `flock` (the kernel lists blocked waiters in `/proc/locks` as
/// `N: -> FLOCK ADVISORY READ PID ...`).
fn waits_for_a_lock(pid: libc::pid_t) -> bool {
    let pid = pid.to_string();
    fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&"->") && fields.get(5) == Some(&pid.as_str())
        })
}

/// An audit that runs while a prune is halfway sees builds the prune is about to delete
/// (`overdue`), or numbers out of step with the folders (`missing-build`): what looks wrong
/// is checked again under the archive's lock, so it reports what the prune left, not what it
/// was in the middle of. The test plays the prune, step by step as `prune` takes them.
#[test]
fn audit_during_a_prune_checks_again_after_it_and_raises_no_false_alarm() {
    let out = archived(1, 1, 3);
    // Now the pipeline's retention lets builds 1 and 2 go.
    out.pipeline(&keep(1, 0));
    let root = out.file("artifacts");
    let lock = fs::File::options()
        .write(true)
        .open(root.join(".lock"))
        .unwrap();
    lock.lock().unwrap();
    fs::rename(root.join("000001"), root.join(".deleting-000001")).unwrap();

    let mut audit = out.murphy(["audit", "--json"]).spawn();
    let pid = audit.pid();
    audit.wait_until("the audit waits for the prune's lock", || {
        waits_for_a_lock(pid)
    });
    fs::rename(root.join("000002"), root.join(".deleting-000002")).unwrap();
    fs::remove_dir_all(root.join(".deleting-000001")).unwrap();
    fs::remove_dir_all(root.join(".deleting-000002")).unwrap();
    drop(lock);

    let report: Value = parse_json(&audit.wait().stdout);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["builds"], 1, "{report:#}");
}

/// `(Some(build), kind)`: a finding as [`audit`] returns it.
fn finding(build: u64, kind: &str) -> (Option<u64>, String) {
    (Some(build), kind.to_owned())
}

/// Three builds (keep_last 3, all young), damaged by `damage`, then `murphy audit --json`,
/// which must exit 1.
fn audit_after(damage: impl FnOnce(&Output)) -> (Vec<(Option<u64>, String)>, Value) {
    let out = archived(3, 1, 3);
    assert_eq!(
        audit(&out, 0).0,
        [],
        "the archive is sound before the damage"
    );
    damage(&out);
    audit(&out, 1)
}

/// The detail of the first finding of `kind` in an audit report.
fn detail<'a>(report: &'a Value, kind: &str) -> &'a str {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .and_then(|f| f["detail"].as_str())
        .unwrap_or_else(|| panic!("no `{kind}` finding in {report:#}"))
}

#[test]
fn audit_finds_a_flipped_byte_in_a_bundle() {
    let (findings, _) = audit_after(|out| {
        let path = bundle_path(out, 2);
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&path, bytes).unwrap();
    });
    assert!(
        findings.contains(&finding(2, "changed-file")),
        "{findings:?}"
    );
    // A flipped byte may also make an entry unreadable; nothing else is wrong.
    assert!(
        findings
            .iter()
            .all(|f| f == &finding(2, "changed-file") || f == &finding(2, "bad-bundle")),
        "{findings:?}"
    );
}

#[test]
fn audit_finds_a_deleted_bundle() {
    let (findings, report) = audit_after(|out| fs::remove_file(bundle_path(out, 2)).unwrap());
    assert_eq!(findings, [finding(2, "manifest-without-bundle")]);
    assert!(
        detail(&report, "manifest-without-bundle").contains("demo-2.zip"),
        "{report:#}"
    );
}

#[test]
fn audit_finds_an_extra_file_in_a_build_folder() {
    let (findings, report) = audit_after(|out| {
        fs::write(build_dir(out, 2).join("notes.txt"), "who put this here").unwrap();
    });
    assert_eq!(findings, [finding(2, "extra-file")]);
    assert!(
        detail(&report, "extra-file").contains("notes.txt"),
        "{report:#}"
    );
}

#[test]
fn audit_finds_an_entry_altered_inside_the_bundle() {
    let (findings, report) = audit_after(|out| {
        replace_bundle(
            out,
            2,
            &[
                Item::File("dist/app.txt", b"the app, with a backdoor\n"),
                Item::File("dist/lib/util.txt", b"a library file\n"),
            ],
        );
    });
    assert_eq!(findings, [finding(2, "changed-file")]);
    let detail = detail(&report, "changed-file");
    assert!(detail.contains("dist/app.txt"), "{detail}");
    assert!(
        detail.contains(&sha256(b"the app, with a backdoor\n")),
        "{detail}"
    );
}

#[test]
fn audit_finds_an_entry_removed_from_the_bundle() {
    let (findings, report) = audit_after(|out| {
        replace_bundle(out, 2, &[Item::File("dist/app.txt", b"the app\n")]);
    });
    assert_eq!(findings, [finding(2, "missing-file")]);
    assert!(
        detail(&report, "missing-file").contains("dist/lib/util.txt"),
        "{report:#}"
    );
}

#[test]
fn audit_finds_an_entry_added_to_the_bundle() {
    let (findings, report) = audit_after(|out| {
        replace_bundle(
            out,
            2,
            &[
                Item::File("dist/app.txt", b"the app\n"),
                Item::File("dist/lib/util.txt", b"a library file\n"),
                Item::File("dist/lib/extra.so", b"\x7fELF"),
            ],
        );
    });
    assert_eq!(findings, [finding(2, "extra-file")]);
    assert!(
        detail(&report, "extra-file").contains("dist/lib/extra.so"),
        "{report:#}"
    );
}

#[test]
fn audit_finds_a_build_without_manifest() {
    let (findings, _) = audit_after(|out| {
        fs::remove_file(build_dir(out, 2).join("manifest.json")).unwrap();
    });
    assert_eq!(findings, [finding(2, "build-without-manifest")]);
}

#[test]
fn audit_finds_an_unreadable_manifest() {
    let out = archived(3, 1, 3);
    fs::write(build_dir(&out, 2).join("manifest.json"), "{\"v\": 1, \"bui").unwrap();
    let (findings, _) = audit(&out, 1);
    assert_eq!(findings, [finding(2, "bad-manifest")]);
    // The listing still shows the build, and says what is wrong with it.
    let list = out.murphy(["archive", "list"]).run().stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("2 ") && l.contains("(unreadable manifest: ")),
        "{list}"
    );
}

#[test]
fn audit_finds_a_manifest_that_names_another_build() {
    let (findings, _) = audit_after(|out| {
        let mut m = manifest(out, 2);
        m["build"] = json!(7);
        write_manifest(out, 2, &m);
    });
    assert_eq!(findings, [finding(2, "bad-manifest")]);
}

#[test]
fn audit_finds_an_overdue_build_and_prune_clears_it() {
    let out = archived(1, 1, 2);
    let mut m = manifest(&out, 1);
    m["created_at"] = json!("2000-01-01T00:00:00Z");
    write_manifest(&out, 1, &m);
    let (findings, report) = audit(&out, 1);
    assert_eq!(findings, [finding(1, "overdue")]);
    assert!(
        detail(&report, "overdue").contains("keep_last: 1"),
        "{report:#}"
    );

    let pruned = out.murphy(["archive", "prune"]).run();
    assert!(
        pruned.stdout.starts_with("deleted build 1: "),
        "{}",
        pruned.stdout
    );
    assert_eq!(numbers(&out), [2]);
    assert_eq!(audit(&out, 0).0, []);
}

#[test]
fn audit_finds_a_manifest_outside_any_build_folder() {
    let (findings, report) = audit_after(|out| {
        fs::rename(build_dir(out, 1), out.file("artifacts/old-build")).unwrap();
    });
    // The stray manifest, and the build it was, gone from the 3 newest that retention keeps.
    assert_eq!(
        findings,
        [
            (None, "manifest-without-bundle".to_owned()),
            finding(1, "missing-build")
        ]
    );
    assert!(
        detail(&report, "manifest-without-bundle").contains("old-build"),
        "{report:#}"
    );
}

#[test]
fn audit_finds_a_missing_recent_build() {
    let (findings, report) = audit_after(|out| fs::remove_dir_all(build_dir(out, 2)).unwrap());
    assert_eq!(findings, [finding(2, "missing-build")]);
    assert!(
        detail(&report, "missing-build").contains("keeps the 3 newest"),
        "{report:#}"
    );
}

/// `.next` says build 3 was made, and keep_last 3 keeps it: its loss must be found like the
/// loss of build 2.
#[test]
fn audit_finds_the_newest_build_missing() {
    let (findings, report) = audit_after(|out| fs::remove_dir_all(build_dir(out, 3)).unwrap());
    assert_eq!(findings, [finding(3, "missing-build")]);
    assert!(
        detail(&report, "missing-build").contains("keeps the 3 newest"),
        "{report:#}"
    );
}

// ---------------------------------------------------------------------------------------
// get

#[test]
fn get_extracts_each_file_with_its_original_bytes_and_mode() {
    let out = chain_project().args(["run"]).run();
    let got = out
        .murphy(["archive", "get", "1", "--to", "got"])
        .run()
        .stdout;
    assert_eq!(
        got,
        "extracted 2 file(s) of build 1 into got, each checked against the manifest\n"
    );
    assert_eq!(
        tree(&out.file("got")),
        ["dist", "dist/app.txt", "dist/bin", "dist/bin/run.sh"]
            .map(String::from)
            .into()
    );
    for file in ["dist/app.txt", "dist/bin/run.sh"] {
        assert_eq!(
            fs::read(out.file(&format!("got/{file}"))).unwrap(),
            fs::read(out.file(file)).unwrap(),
            "{file}"
        );
    }
    let mode = |path: &str| fs::metadata(out.file(path)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("got/dist/app.txt"), 0o644);
    assert_eq!(mode("got/dist/bin/run.sh"), 0o755);

    // Named files only; by default into a folder named after the build.
    out.murphy(["archive", "get", "1", "dist/bin/run.sh"]).run();
    assert_eq!(
        tree(&out.file("demo-1")),
        ["dist", "dist/bin", "dist/bin/run.sh"]
            .map(String::from)
            .into()
    );
    let err = out
        .murphy(["archive", "get", "1", "dist/nope.txt", "--to", "none"])
        .code(1)
        .run()
        .stderr;
    assert!(
        err.contains("the bundle has no entry `dist/nope.txt`"),
        "{err}"
    );
    let err = out
        .murphy(["archive", "get", "9", "--to", "none"])
        .code(2)
        .run()
        .stderr;
    assert!(err.contains("no build 9"), "{err}");
}

#[test]
fn get_refuses_entries_that_would_land_outside_the_destination() {
    let out = archived(3, 1, 1);
    let outside = out.path().to_string_lossy().into_owned();
    let absolute = format!("{outside}/absolute-escape.txt");
    let evil: Vec<(&str, Item<'_>)> = vec![
        ("../escape.txt", Item::File("../escape.txt", b"pwned\n")),
        (
            "dist/../../escape.txt",
            Item::File("dist/../../escape.txt", b"pwned\n"),
        ),
        ("./../escape.txt", Item::File("./../escape.txt", b"pwned\n")),
        ("..\\escape.txt", Item::File("..\\escape.txt", b"pwned\n")),
        (&absolute, Item::File(&absolute, b"pwned\n")),
        ("dist/link", Item::Symlink("dist/link", "../../escape.txt")),
        ("link-abs", Item::Symlink("link-abs", &outside)),
    ];
    let before = tree(out.path());
    for (i, (name, item)) in evil.into_iter().enumerate() {
        // A good entry first, then the bad one; the manifest vouches for both.
        let items = [Item::File("dist/app.txt", b"the app\n"), item];
        replace_bundle(&out, 1, &items);
        record_files(&out, 1, &items);
        let dest = format!("dest{i}");
        let err = out
            .murphy(["archive", "get", "1", "--to", &dest])
            .code(1)
            .run()
            .stderr;
        assert!(
            err.contains(&format!(
                "entry `{name}` would land outside the destination"
            )),
            "{name}: {err}"
        );
        // Asked for by name, it is refused all the same.
        let err = out
            .murphy(["archive", "get", "1", name, "--to", &dest])
            .code(1)
            .run()
            .stderr;
        assert!(err.contains(&format!("entry `{name}`")), "{name}: {err}");
        // Nothing was written outside the destination, and in it no symlink and nothing but
        // the good entry.
        let mut now = tree(out.path());
        now.retain(|p| !p.starts_with("dest"));
        assert_eq!(now, before, "{name}");
        assert!(
            tree(&out.file(&dest)).is_subset(&["dist", "dist/app.txt"].map(String::from).into()),
            "{name}: {:?}",
            tree(&out.file(&dest))
        );
    }
}

#[test]
fn get_refuses_a_file_whose_bytes_differ_from_the_manifest() {
    let out = chain_project().args(["run"]).run();
    let script = fs::read(out.file("dist/bin/run.sh")).unwrap();
    // The manifest still has the original digests.
    replace_bundle(
        &out,
        1,
        &[
            Item::File("dist/app.txt", b"the app, with a backdoor\n"),
            Item::File("dist/bin/run.sh", &script),
        ],
    );
    let err = out
        .murphy(["archive", "get", "1", "--to", "got"])
        .code(1)
        .run()
        .stderr;
    let original = sha256(&fs::read(out.file("dist/app.txt")).unwrap());
    assert!(
        err.contains(&format!(
            "entry `dist/app.txt` does not match the manifest: sha256 {}, expected {original}",
            sha256(b"the app, with a backdoor\n")
        )),
        "{err}"
    );
    // The refused file is not there, not even under a temporary name.
    assert!(!out.file("got/dist/app.txt").exists());
    assert_eq!(
        fs::read_dir(out.file("got/dist")).unwrap().count(),
        0,
        "{:?}",
        tree(&out.file("got"))
    );
    // The file that does match can still be had.
    out.murphy(["archive", "get", "1", "dist/bin/run.sh", "--to", "got"])
        .run();
    assert_eq!(fs::read(out.file("got/dist/bin/run.sh")).unwrap(), script);
    assert!(!out.file("got/dist/app.txt").exists());
}

/// `get` checks each file "against the manifest": a file the manifest lists but the bundle
/// lacks is not a success.
#[test]
fn get_of_all_files_fails_when_the_bundle_lacks_one() {
    let out = chain_project().args(["run"]).run();
    let app = fs::read(out.file("dist/app.txt")).unwrap();
    // The bundle loses `dist/bin/run.sh`; its own sha256 and size in the manifest agree, the
    // manifest's list of files still names both.
    replace_bundle(&out, 1, &[Item::File("dist/app.txt", &app)]);
    let (code, got) = out
        .murphy(["archive", "get", "1", "--to", "got"])
        .run_unchecked();
    assert_ne!(code, Some(0), "{got:?}");
    assert!(
        got.stderr
            .contains("the bundle has no entry `dist/bin/run.sh`, which the manifest lists"),
        "{}",
        got.stderr
    );
    assert!(!got.stdout.contains("extracted"), "{}", got.stdout);
    assert!(!out.file("got/dist/bin/run.sh").exists());
}

/// The manifest's `name` is data: without `--to`, `get` extracts below the current
/// directory whatever the name says.
#[test]
fn get_without_to_stays_in_the_current_directory() {
    let out = archived(3, 1, 1);
    let escape = out.file("escaped").to_string_lossy().into_owned();
    for name in [escape.as_str(), "../escaped"] {
        let mut m = manifest(&out, 1);
        m["name"] = json!(name);
        write_manifest(&out, 1, &m);
        fs::create_dir_all(out.file("work")).unwrap();
        let mut before = tree(out.path());
        before.retain(|p| !p.starts_with("work"));
        // Refused, or extracted under `work`: either way nothing lands in `escaped`.
        let (code, _) = out
            .murphy(["archive", "get", "1"])
            .cwd("work")
            .run_unchecked();
        assert!(!out.file("escaped").exists(), "name {name}");
        let mut after = tree(out.path());
        after.retain(|p| !p.starts_with("work"));
        assert_eq!(
            after, before,
            "name {name}: written outside the current directory"
        );
        if code == Some(0) {
            assert_eq!(
                tree(&out.file("work")),
                [
                    "build-1",
                    "build-1/dist",
                    "build-1/dist/app.txt",
                    "build-1/dist/lib",
                    "build-1/dist/lib/util.txt"
                ]
                .map(String::from)
                .into(),
                "name {name}"
            );
        }
        fs::remove_dir_all(out.file("work")).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic bundles

#[test]
fn the_same_files_give_byte_identical_bundles_whatever_their_mtimes() {
    let test = Test::new()
        .pipeline(&keep(30, 30))
        .write("dist/app.txt", "the app\n")
        .write("dist/bin/run.sh", "echo hi\n")
        .write("dist/docs/readme.md", "# read me\n");
    fs::set_permissions(
        test.path().join("dist/bin/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = test.args(["run"]).run();

    // The same bytes, but every file touched: new mtimes, a new inode, another
    // non-executable mode, another order in the directory.
    fs::remove_file(out.file("dist/app.txt")).unwrap();
    fs::remove_file(out.file("dist/docs/readme.md")).unwrap();
    out.write("dist/docs/readme.md", "# read me\n");
    out.write("dist/app.txt", "the app\n");
    fs::set_permissions(
        out.file("dist/docs/readme.md"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(981_173_106);
    for file in ["dist/app.txt", "dist/bin/run.sh", "dist/docs/readme.md"] {
        fs::File::options()
            .write(true)
            .open(out.file(file))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    out.murphy(["run"]).run();

    let one = fs::read(bundle_path(&out, 1)).unwrap();
    let two = fs::read(bundle_path(&out, 2)).unwrap();
    assert_ne!(bundle_path(&out, 1), bundle_path(&out, 2));
    assert!(one == two, "the two bundles differ");
    assert_eq!(
        manifest(&out, 1)["bundle_sha256"],
        manifest(&out, 2)["bundle_sha256"]
    );
    assert_eq!(manifest(&out, 1)["bundle_sha256"], sha256(&one));

    // Entries sorted, every timestamp 1980-01-01 00:00:00, modes 0644 or 0755.
    let mut zip = zip::ZipArchive::new(fs::File::open(bundle_path(&out, 2)).unwrap()).unwrap();
    let mut seen = Vec::new();
    for i in 0..zip.len() {
        let file = zip.by_index(i).unwrap();
        let time = file.last_modified().unwrap();
        assert_eq!(
            (time.year(), time.month(), time.day()),
            (1980, 1, 1),
            "{}",
            file.name().unwrap()
        );
        assert_eq!((time.hour(), time.minute(), time.second()), (0, 0, 0));
        seen.push((
            file.name().unwrap().into_owned(),
            file.unix_mode().unwrap() & 0o777,
        ));
    }
    assert_eq!(
        seen,
        [
            ("dist/app.txt".to_owned(), 0o644),
            ("dist/bin/run.sh".to_owned(), 0o755),
            ("dist/docs/readme.md".to_owned(), 0o644),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Provenance and QA status

const REMOTE: &str = "https://github.com/example/demo.git";

fn git_chain_project() -> Output {
    chain_project()
        .git_init()
        .write(".gitignore", "/artifacts/\n/dist/\n/.murphy/\n")
        .git(["remote", "add", "origin", REMOTE])
        .commit("the app")
        .args(["run"])
        .run()
}

#[test]
fn provenance_is_an_in_toto_statement_with_a_slsa_predicate() {
    let out = git_chain_project();
    let commit = out.git(["rev-parse", "HEAD"]);
    let run_id = out.status().run_id;
    let m = manifest(&out, 1);
    assert_eq!(m["run_id"], run_id.as_str());
    assert_eq!(m["commit"], commit.as_str());
    let p = &m["provenance"];

    // The statement.
    assert_eq!(p["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(p["predicateType"], "https://slsa.dev/provenance/v1");
    let subject = p["subject"].as_array().unwrap();
    assert!(!subject.is_empty());
    let mut subjects = BTreeMap::new();
    for s in subject {
        let name = s["name"].as_str().unwrap();
        let digest = s["digest"]["sha256"].as_str().unwrap();
        assert!(is_sha256(digest), "{s}");
        subjects.insert(name.to_owned(), digest.to_owned());
    }
    let files: BTreeMap<String, String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(subjects, files, "the subjects are the archived files");
    for (path, digest) in &files {
        assert_eq!(
            *digest,
            sha256(&fs::read(out.file(path)).unwrap()),
            "{path}"
        );
    }
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["dist/app.txt", "dist/bin/run.sh"]
    );

    // The build definition.
    let definition = &p["predicate"]["buildDefinition"];
    assert!(
        is_uri(definition["buildType"].as_str().unwrap()),
        "{definition:#}"
    );
    let external = definition["externalParameters"].as_object().unwrap();
    assert_eq!(external["stage"], "pack");
    assert_eq!(external["trigger"], "local");
    let dependencies = definition["resolvedDependencies"].as_array().unwrap();
    for d in dependencies {
        // A ResourceDescriptor has a uri, a digest or content; a uri is a URI.
        assert!(d.get("uri").is_some() || d.get("digest").is_some(), "{d}");
        if let Some(uri) = d.get("uri") {
            assert!(is_uri(uri.as_str().unwrap()), "{d}");
        }
    }
    let git: Vec<&Value> = dependencies
        .iter()
        .filter(|d| d["digest"].get("gitCommit").is_some())
        .collect();
    assert_eq!(git.len(), 1, "{dependencies:#?}");
    assert_eq!(git[0]["digest"]["gitCommit"], commit.as_str());
    assert_eq!(git[0]["uri"], format!("git+{REMOTE}@{commit}"));
    let inputs: BTreeMap<&str, &str> = dependencies
        .iter()
        .filter_map(|d| Some((d["name"].as_str()?, d["digest"]["sha256"].as_str()?)))
        .collect();
    let expected: BTreeMap<&str, String> = ["src/app.txt", "tests/check.txt"]
        .into_iter()
        .map(|f| (f, sha256(&fs::read(out.file(f)).unwrap())))
        .collect();
    assert_eq!(
        inputs,
        expected.iter().map(|(k, v)| (*k, v.as_str())).collect(),
        "every input of the stages that led to the build, once"
    );

    // The run.
    let details = &p["predicate"]["runDetails"];
    assert!(
        is_uri(details["builder"]["id"].as_str().unwrap()),
        "{details:#}"
    );
    assert_eq!(details["metadata"]["invocationId"], run_id.as_str());
    let started: Timestamp = details["metadata"]["startedOn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let finished: Timestamp = details["metadata"]["finishedOn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(started <= finished);
}

/// A manifest's QA status: `(name, state, needs)` of each stage that led to the build.
fn qa(m: &Value) -> Vec<(String, String, Vec<String>)> {
    m["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
                s["needs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn stage(name: &str, state: &str, needs: &[&str]) -> (String, String, Vec<String>) {
    (
        name.to_owned(),
        state.to_owned(),
        needs.iter().map(|n| (*n).to_owned()).collect(),
    )
}

#[test]
fn the_manifest_records_how_each_stage_that_led_to_the_build_ended() {
    let out = git_chain_project();
    assert_eq!(
        qa(&manifest(&out, 1)),
        [
            stage("build", "succeeded", &[]),
            stage("test", "succeeded", &["build"]),
            stage("lint", "skipped (when)", &[]),
            stage("pack", "succeeded", &["build", "test", "lint"]),
        ]
    );
    // The `inputs` of `test` as hashed when the build was made.
    let m = manifest(&out, 1);
    let inputs: Vec<&str> = m["stages"][1]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["src/app.txt", "tests/check.txt"]);
    assert_eq!(
        m["stages"][1]["inputs"][1]["sha256"],
        sha256(&fs::read(out.file("tests/check.txt")).unwrap())
    );

    // Run again: what was restored from a checkpoint says so.
    out.murphy(["run"]).run();
    assert_eq!(
        qa(&manifest(&out, 2)),
        [
            stage("build", "cached", &[]),
            stage("test", "cached", &["build"]),
            stage("lint", "skipped (when)", &[]),
            stage("pack", "succeeded", &["build", "test", "lint"]),
        ]
    );
    let show = out.murphy(["archive", "show", "2"]).run().stdout;
    assert!(
        show.contains("qa\n  build                    cached\n"),
        "{show}"
    );
}

/// in-toto's ResourceDescriptor: `uri` is a URI (RFC 3986). Without a remote, the commit's is
/// `git+<sha>`, which has no scheme.
#[test]
fn provenance_commit_uri_is_a_uri_without_a_remote() {
    let out = chain_project()
        .git_init()
        .write(".gitignore", "/artifacts/\n/dist/\n/.murphy/\n")
        .commit("the app")
        .args(["run"])
        .run();
    let commit = out.git(["rev-parse", "HEAD"]);
    let m = manifest(&out, 1);
    let dependencies = &m["provenance"]["predicate"]["buildDefinition"]["resolvedDependencies"];
    let git = &dependencies[0];
    assert_eq!(git["digest"]["gitCommit"], commit.as_str(), "{git:#}");
    let uri = git["uri"].as_str().unwrap();
    assert!(uri.starts_with("git+file://"), "{uri}");
    assert!(uri.ends_with(&format!("@{commit}")), "{uri}");
    assert!(is_uri(uri), "{uri}");
    for d in dependencies.as_array().unwrap() {
        if let Some(uri) = d.get("uri") {
            assert!(is_uri(uri.as_str().unwrap()), "{d}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// trace

#[test]
fn trace_finds_the_builds_holding_a_file_by_path_or_digest() {
    let out = git_chain_project();
    out.murphy(["run"]).run();
    let commit = out.git(["rev-parse", "HEAD"]);
    let runs = out.runs();
    let digest = sha256(&fs::read(out.file("dist/app.txt")).unwrap());

    let by_path = out.murphy(["trace", "dist/app.txt"]).run().stdout;
    let by_digest = out.murphy(["trace", &digest]).run().stdout;
    let upper = out.murphy(["trace", &digest.to_uppercase()]).run().stdout;
    assert_eq!(by_path, by_digest);
    assert_eq!(by_path, upper);
    for (build, run) in [(1, &runs[1]), (2, &runs[0])] {
        let m = manifest(&out, build);
        let header = format!(
            "build {build} `demo-{build}`: dist/app.txt ({})\n  run {} (stage `pack`, trigger local)\n  commit {commit}\n",
            m["created_at"].as_str().unwrap(),
            run.run_id
        );
        assert!(by_path.contains(&header), "{header}\nin:\n{by_path}");
    }
    // The stages before the build, each with its inputs.
    let app = sha256(&fs::read(out.file("src/app.txt")).unwrap());
    let check = sha256(&fs::read(out.file("tests/check.txt")).unwrap());
    let section = format!(
        "  made from, stage by stage (following needs):\n    pack (succeeded, needs build, test, lint)\n    lint (skipped (when))\n    test (succeeded, needs build)\n      {}  src/app.txt\n      {}  tests/check.txt\n    build (succeeded)\n      {}  src/app.txt\n",
        &app[..16],
        &check[..16],
        &app[..16]
    );
    assert!(by_path.contains(&section), "{section}\nin:\n{by_path}");
    assert_eq!(by_path.matches("made from").count(), 2, "two builds");

    // Only the builds holding the file: the script is in both, a source file in none.
    let unknown = "0".repeat(64);
    let err = out.murphy(["trace", &unknown]).code(1).run().stderr;
    assert_eq!(
        err,
        format!("no archived build holds a file with sha256 {unknown}\n")
    );
    out.murphy(["trace", "tests/check.txt"]).code(1).run();
    out.murphy(["trace", "no/such/file"]).code(1).run();
}

// ---------------------------------------------------------------------------------------
// sizes

#[test]
fn sizes_prints_a_row_per_build_and_draws_a_line_per_series() {
    let out = Test::new()
        .pipeline(&keep(30, 30))
        .write("dist/app.txt", &"a".repeat(100))
        .write("dist/lib.txt", &"l".repeat(10))
        .args(["run"])
        .run();
    out.write("dist/app.txt", &"a".repeat(3000));
    out.murphy(["run"]).run();
    out.write("dist/lib.txt", &"l".repeat(2048));
    out.murphy(["run"]).run();

    let sizes = out.murphy(["archive", "sizes", "--svg", "chart.svg"]).run();
    assert_eq!(sizes.stderr, "wrote chart.svg\n");
    let rows: Vec<Vec<&str>> = sizes
        .stdout
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows.len(),
        4,
        "a header and a row per build:\n{}",
        sizes.stdout
    );
    assert_eq!(
        rows[0],
        [
            "BUILD",
            "DATE",
            "TOTAL",
            "dist/app.txt",
            "dist/lib.txt",
            "OTHER"
        ]
    );
    let date = |b: u64| manifest(&out, b)["created_at"].as_str().unwrap()[..10].to_owned();
    assert_eq!(rows[1], ["1", &date(1), "110 B", "100 B", "10 B", "0 B"]);
    assert_eq!(
        rows[2],
        ["2", &date(2), "2.9 KiB", "2.9 KiB", "10 B", "0 B"]
    );
    assert_eq!(
        rows[3],
        ["3", &date(3), "4.9 KiB", "2.9 KiB", "2.0 KiB", "0 B"]
    );

    let svg = out.read("chart.svg");
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(svg.ends_with("</svg>\n"), "{svg}");
    let polylines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
    assert_eq!(polylines.len(), 3, "the total and one per file:\n{svg}");
    for line in &polylines {
        let points = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 3, "a point per build: {line}");
    }

    // Past six files, the smaller ones are summed as OTHER in the table.
    for i in 0..6 {
        out.write(&format!("dist/small{i}.txt"), &"s".repeat(i + 1));
    }
    out.murphy(["run"]).run();
    let sizes = out.murphy(["archive", "sizes", "--svg", "chart.svg"]).run();
    let header: Vec<&str> = sizes
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(header.len(), 3 + 6 + 1, "{}", sizes.stdout);
    assert_eq!(sizes.stdout.lines().count(), 5);
    let last: Vec<&str> = sizes
        .stdout
        .lines()
        .nth(4)
        .unwrap()
        .split_whitespace()
        .collect();
    // small0 and small1 (1 + 2 bytes) are the two left out.
    assert_eq!(last.last(), Some(&"B"), "{}", sizes.stdout);
    assert!(
        sizes.stdout.lines().nth(4).unwrap().ends_with(" 3 B"),
        "{}",
        sizes.stdout
    );
    let svg = out.read("chart.svg");
    assert_eq!(
        svg.lines().filter(|l| l.starts_with("<polyline")).count(),
        7,
        "the total and the six largest files:\n{svg}"
    );
}

// ---------------------------------------------------------------------------------------
// Config errors

/// Runs a bad pipeline and checks murphy's whole stderr, given line by line.
fn assert_config_error(yaml: &str, expected: &[&str]) {
    let out = Test::new()
        .pipeline(yaml)
        .write("dist/a", "a")
        .args(["run"])
        .code(2)
        .run();
    assert_eq!(out.stderr, expected.join("\n") + "\n");
    assert!(!out.file(".murphy").exists(), "nothing is run or recorded");
    assert!(!out.file("artifacts").exists(), "nothing is archived");
    out.murphy(["validate"]).code(2).run();
}

#[test]
fn unknown_placeholder_in_the_archive_name_suggests_the_near_one() {
    assert_config_error(
        "
        version: 1
        stages:
          pack:
            archive:
              name: \"{name}-{verison}\"
              files: [dist/a]
        ",
        &[
            "error: pipeline.yml:5:13: unknown placeholder `{verison}` in the archive name (did you mean `{version}`?)",
            "  |",
            "5 |       name: \"{name}-{verison}\"",
            "  |             ^^^^^^^^^^^^^^^^^^",
        ],
    );
}

#[test]
fn archive_without_files_is_refused() {
    assert_config_error(
        "
        version: 1
        stages:
          pack:
            archive:
              files: []
        ",
        &[
            "error: pipeline.yml:3:3: the `archive` of stage `pack` has no `files` to keep",
            "  |",
            "3 |   pack:",
            "  |   ^^^^",
        ],
    );
}

#[test]
fn absolute_archive_file_is_refused() {
    assert_config_error(
        "
        version: 1
        stages:
          pack:
            archive: {files: [dist/a, /etc/passwd]}
        ",
        &[
            "error: pipeline.yml:4:31: `/etc/passwd` is an absolute path: archive files are relative to the pipeline's directory",
            "  |",
            "4 |     archive: {files: [dist/a, /etc/passwd]}",
            "  |                               ^^^^^^^^^^^",
        ],
    );
}

#[test]
fn two_stages_archiving_into_one_root_must_agree_on_retention() {
    assert_config_error(
        "
        version: 1
        stages:
          wheels:
            archive: {files: [dist/a], retention: {keep_last: 5}}
          docs:
            archive: {files: [dist/a], root: artifacts}
          other:
            archive: {files: [dist/a], root: elsewhere, retention: {keep_days: 1}}
        ",
        &[
            "error: pipeline.yml:5:3: stages `wheels` and `docs` archive into `artifacts` with different retention; give them the same",
            "  |",
            "5 |   docs:",
            "  |   ^^^^",
        ],
    );
}

/// `root: ./artifacts` is the default `artifacts`: one folder, so one retention.
#[test]
fn one_root_spelled_two_ways_must_agree_on_retention() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              a:
                archive: {files: [x], retention: {keep_last: 3}}
              b:
                archive: {files: [x], root: ./artifacts}
            ",
        )
        .write("x", "x\n")
        .args(["validate"])
        .code(2)
        .run();
    assert_eq!(
        out.stderr,
        [
            "error: pipeline.yml:5:3: stages `a` and `b` archive into `artifacts` with different retention; give them the same",
            "  |",
            "5 |   b:",
            "  |   ^",
            "",
        ]
        .join("\n")
    );
    out.murphy(["run"]).code(2).run();
    assert!(!out.file("artifacts").exists(), "nothing is archived");
}

/// An archive is murphy's to fill: git sees none of it, so `cargo package` or `npm pack` in
/// a repository bundles no earlier build into the next.
#[test]
fn the_archive_root_keeps_itself_out_of_git() {
    let out = Test::new()
        .git_init()
        .pipeline(&keep(30, 30))
        .write("dist/app.txt", "the app\n")
        .commit("app")
        .args(["run"])
        .run();
    assert_eq!(out.read("artifacts/.gitignore"), "*\n");
    let status = out.git(["status", "--porcelain", "--untracked-files=all"]);
    assert_eq!(status, "", "git sees what murphy wrote");

    // A user's own file is kept.
    out.write("artifacts/.gitignore", "*.zip\n");
    out.murphy(["run"]).run();
    assert_eq!(out.read("artifacts/.gitignore"), "*.zip\n");
}

/// `trace --json` and `archive sizes --json` carry what their text shows, for machines.
#[test]
fn trace_and_sizes_speak_json() {
    let out = chain_project().args(["run"]).run();
    let traced: Vec<Value> =
        parse_json(&out.murphy(["trace", "dist/app.txt", "--json"]).run().stdout);
    assert_eq!(traced.len(), 1, "{traced:#?}");
    let build = &traced[0];
    assert_eq!(build["build"], 1);
    assert_eq!(build["file"]["path"], "dist/app.txt");
    assert_eq!(
        build["file"]["sha256"],
        sha256(b"the app, version 1\n").as_str()
    );
    assert_eq!(build["stage"], "pack");
    let made_from: Vec<&str> = (build["stages"].as_array().unwrap().iter())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(made_from, ["build", "test", "lint", "pack"], "{build:#}");

    // A file no build holds: an empty array, and exit 1 as in text.
    let none = out
        .murphy(["trace", &"0".repeat(64), "--json"])
        .code(1)
        .run();
    assert_eq!(parse_json::<Vec<Value>>(&none.stdout), Vec::<Value>::new());

    out.write("src/app.txt", "the app, version 2 is longer\n");
    out.murphy(["run"]).run();
    let sizes: Vec<Value> = parse_json(&out.murphy(["archive", "sizes", "--json"]).run().stdout);
    let totals: Vec<(u64, u64)> = (sizes.iter())
        .map(|r| (r["build"].as_u64().unwrap(), r["total"].as_u64().unwrap()))
        .collect();
    let script = "echo hi\n".len() as u64;
    assert_eq!(
        totals,
        [
            (1, "the app, version 1\n".len() as u64 + script),
            (2, "the app, version 2 is longer\n".len() as u64 + script)
        ]
    );
    assert_eq!(sizes[1]["files"]["dist/bin/run.sh"], script, "{sizes:#?}");
}
