//! The archive on the shared store: build numbers unique across runners archiving at once,
//! retention over every runner's builds, and two runners pruning at once. Runners are fresh
//! clones with empty local state sharing one bucket of a real S3 server (moto).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use crate::moto::Moto;
use crate::support::{Output, Test, parse_json, python_venv, runner};

/// Three stages archiving into one root at once, so one run alone races itself for numbers.
fn pipeline(keep_last: u64) -> String {
    let mut yaml = String::from("version: 1\nname: demo\nstages:\n");
    for stage in ["pack1", "pack2", "pack3"] {
        yaml.push_str(&format!(
            "  {stage}:\n    archive:\n      files: [\"dist/**\"]\n      retention: {{keep_last: {keep_last}, keep_days: 0}}\n"
        ));
    }
    yaml
}

/// One archiving stage.
fn single(keep_last: u64) -> String {
    format!(
        "version: 1\nname: demo\nstages:\n  pack:\n    archive:\n      files: [\"dist/**\"]\n      retention: {{keep_last: {keep_last}, keep_days: 0}}\n"
    )
}

fn origin(yaml: &str) -> Test {
    Test::new()
        .git_init()
        .pipeline(yaml)
        .write("dist/app.txt", "the app\n")
        .commit("first")
}

fn on(moto: &Moto, test: Test, store: &str) -> Test {
    moto.env(test).env("MURPHY_STORE", store)
}

/// The shared builds' manifests as `murphy archive list --json` shows them from `out`.
fn shared_list(moto: &Moto, out: &Output, store: &str) -> Vec<Value> {
    let listed = on(
        moto,
        out.murphy(["archive", "list", "--json"]).cwd("work"),
        store,
    )
    .run();
    parse_json(&listed.stdout)
}

fn numbers(manifests: &[Value]) -> Vec<u64> {
    manifests
        .iter()
        .map(|m| m["build"].as_u64().unwrap())
        .collect()
}

/// Every key in `bucket` below `prefix`, listed with the S3 API (boto3), not through murphy.
pub(crate) fn keys(moto: &Moto, bucket: &str, prefix: &str) -> BTreeSet<String> {
    let out = Command::new(python_venv().join("bin/python"))
        .arg("-c")
        .arg(
            "import sys, boto3\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                 aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):\n\
             \x20   for o in page.get('Contents', []):\n\
             \x20       print(o['Key'])",
        )
        .args([&moto.endpoint(), bucket, prefix])
        .output()
        .expect("cannot run the test venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The build numbers in the bucket: under `builds/` (with the files of each) and `numbers/`.
fn stored(moto: &Moto, bucket: &str) -> (BTreeMap<u64, BTreeSet<String>>, BTreeSet<u64>) {
    let prefix = "team/archive/artifacts/";
    let mut builds: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut claims = BTreeSet::new();
    for key in keys(moto, bucket, prefix) {
        let rest = key.strip_prefix(prefix).unwrap();
        if let Some(claim) = rest.strip_prefix("numbers/") {
            claims.insert(claim.parse().unwrap());
        } else {
            let (number, file) = rest
                .strip_prefix("builds/")
                .and_then(|r| r.split_once('/'))
                .unwrap_or_else(|| panic!("unexpected key {key}"));
            let file = if file.ends_with(".zip") {
                "(bundle)"
            } else {
                file
            };
            builds
                .entry(number.parse().unwrap())
                .or_default()
                .insert(file.to_owned());
        }
    }
    (builds, claims)
}

fn whole() -> BTreeSet<String> {
    ["(bundle)", "manifest.json"].map(str::to_owned).into()
}

#[test]
fn runners_archiving_at_once_get_unique_numbers_that_match_their_local_builds() {
    let moto = Moto::start();
    let bucket = "numbers";
    let store = format!("{}/team", moto.bucket(bucket));
    let origin = origin(&pipeline(100));
    let running: Vec<_> = (0..3)
        .map(|_| {
            on(&moto, runner(origin.path()), &store)
                .args(["run", "--jobs", "3"])
                .spawn()
        })
        .collect();
    let outs: Vec<Output> = running.into_iter().map(|r| r.wait()).collect();

    // Nine claims, three of them from each run's own stages at once: nine distinct numbers.
    let shared = shared_list(&moto, &outs[0], &store);
    assert_eq!(numbers(&shared), (1..=9).collect::<Vec<_>>());
    let (builds, claims) = stored(&moto, bucket);
    assert_eq!(claims, (1..=9).collect());
    assert!(builds.values().all(|files| *files == whole()), "{builds:?}");
    // Each runner's local build carries the number the store gave it, with the same manifest.
    let mut local = BTreeSet::new();
    for out in &outs {
        // Without MURPHY_STORE: this runner's local archive.
        let local_only = out.murphy(["archive", "list", "--json"]).cwd("work").run();
        let local_only: Vec<Value> = parse_json(&local_only.stdout);
        assert_eq!(local_only.len(), 3, "{local_only:?}");
        for manifest in &local_only {
            let number = manifest["build"].as_u64().unwrap();
            assert!(local.insert(number), "build {number} made twice");
            let there = shared.iter().find(|m| m["build"] == number).unwrap();
            assert_eq!(there, manifest);
        }
    }
    assert_eq!(local, (1..=9).collect());
}

/// 35 runs (the issue's number) spread over three runners in turn, `keep_last: 5` with
/// `keep_days: 0` (every build old enough) so that retention has much to do.
#[test]
fn thirty_five_runs_over_three_runners_leave_exactly_the_retention_set() {
    let moto = Moto::start();
    let bucket = "retention";
    let store = format!("{}/team", moto.bucket(bucket));
    let origin = origin(&single(5));
    let runners: Vec<Output> = (0..3)
        .map(|_| on(&moto, runner(origin.path()), &store).args(["run"]).run())
        .collect();
    for i in 3..35 {
        on(&moto, runners[i % 3].murphy(["run"]).cwd("work"), &store).run();
    }
    let (builds, claims) = stored(&moto, bucket);
    let kept: BTreeSet<u64> = (31..=35).collect();
    assert_eq!(builds.keys().copied().collect::<BTreeSet<_>>(), kept);
    assert!(builds.values().all(|files| *files == whole()), "{builds:?}");
    // The claims of pruned builds go with them; the next number still counts from 35.
    assert_eq!(claims, kept);
    let fresh = on(&moto, runner(origin.path()), &store).args(["run"]).run();
    let listed = numbers(&shared_list(&moto, &fresh, &store));
    assert_eq!(listed, [32, 33, 34, 35, 36]);
}

#[test]
fn two_runners_pruning_at_once_keep_what_the_rule_keeps() {
    let moto = Moto::start();
    let bucket = "prune";
    let store = format!("{}/team", moto.bucket(bucket));
    let origin = origin(&single(100));
    let a = on(&moto, runner(origin.path()), &store).args(["run"]).run();
    let b = on(&moto, runner(origin.path()), &store).args(["run"]).run();
    for i in 2..12 {
        let runner = if i % 2 == 0 { &a } else { &b };
        on(&moto, runner.murphy(["run"]).cwd("work"), &store).run();
    }
    assert_eq!(stored(&moto, bucket).0.len(), 12);

    // Both runners' pipelines now keep the last 3.
    for out in [&a, &b] {
        std::fs::write(out.file("work/pipeline.yml"), single(3)).unwrap();
    }
    // A pruner killed after it unlisted build 1 (manifest gone, bundle still there).
    on(&moto, a.murphy(["archive", "prune"]).cwd("work"), &store)
        .env("MURPHY_CRASH_AT", "shared-prune-unlisted:1")
        .run_killed();
    let (builds, _) = stored(&moto, bucket);
    assert_eq!(builds[&1], ["(bundle)".to_owned()].into());
    assert_eq!(
        shared_list(&moto, &a, &store).len(),
        11,
        "build 1 is no longer listed"
    );

    let first = on(&moto, a.murphy(["archive", "prune"]).cwd("work"), &store).spawn();
    let second = on(&moto, b.murphy(["archive", "prune"]).cwd("work"), &store).spawn();
    let (first, second) = (first.wait(), second.wait());
    // Between them they deleted builds 2 to 9, each said by at least one of them.
    let said: BTreeSet<u64> = [&first, &second]
        .iter()
        .flat_map(|out| out.stdout.lines())
        .filter_map(|line| {
            line.strip_prefix("deleted build ")?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(
        said,
        (2..=9).collect(),
        "{}\n{}",
        first.stdout,
        second.stdout
    );
    let (builds, claims) = stored(&moto, bucket);
    let kept: BTreeSet<u64> = [10, 11, 12].into();
    assert_eq!(claims, kept.iter().copied().chain([1]).collect());
    assert_eq!(
        builds.keys().copied().collect::<BTreeSet<_>>(),
        kept.iter().copied().chain([1]).collect(),
        "the rule keeps 10, 11, 12; build 1's bundle waits out the grace period"
    );
    // Past the grace period, the killed pruner's leftover goes.
    let swept = on(
        &moto,
        a.murphy(["archive", "prune", "--now", "2100-01-01T00:00:00Z"])
            .cwd("work"),
        &store,
    )
    .run();
    assert!(
        swept.stdout.contains("deleted build 1: incomplete"),
        "{}",
        swept.stdout
    );
    let (builds, _) = stored(&moto, bucket);
    assert_eq!(builds.keys().copied().collect::<BTreeSet<_>>(), kept);
}

#[test]
fn a_pull_requests_builds_go_under_its_own_prefix_and_trusted_runs_never_list_them() {
    let moto = Moto::start();
    let bucket = "pull-request";
    let store = format!("{}/team", moto.bucket(bucket));
    let origin = origin(&single(1));
    let trusted = on(&moto, runner(origin.path()), &store).args(["run"]).run();
    let mut pr = on(&moto, runner(origin.path()), &store);
    for (key, value) in [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "o/r"),
        ("GITHUB_RUN_ID", "42"),
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_REF", "refs/pull/7/merge"),
        ("GITHUB_HEAD_REF", "feature"),
        ("GITHUB_BASE_REF", "main"),
    ] {
        pr = pr.env(key, value);
    }
    pr.args(["run"]).run();
    let before = keys(&moto, bucket, "team/");
    // Its number comes after the trusted runs' claims.
    assert!(
        before.contains("team/pr/7/archive/artifacts/builds/000002/manifest.json")
            && before.contains("team/pr/7/archive/artifacts/numbers/000002"),
        "{before:#?}"
    );
    // Trusted runs list, number and prune their own builds only.
    on(&moto, trusted.murphy(["run"]).cwd("work"), &store).run();
    assert_eq!(numbers(&shared_list(&moto, &trusted, &store)), [2]);
    assert_eq!(
        stored(&moto, bucket).0.keys().copied().collect::<Vec<_>>(),
        [2]
    );
    let after = keys(&moto, bucket, "team/pr/");
    assert_eq!(
        after,
        before
            .into_iter()
            .filter(|k| k.starts_with("team/pr/"))
            .collect()
    );
}

/// Kill -9 between the bundle's upload and the manifest's: the build is not listed, and
/// `murphy resume` shares it whole under the number it claimed, claiming no other.
#[test]
fn a_kill_during_the_upload_leaves_no_listed_build_and_resume_shares_it_whole() {
    let moto = Moto::start();
    let bucket = "killed";
    let store = format!("{}/team", moto.bucket(bucket));
    let origin = origin(&single(5));
    let killed = on(&moto, runner(origin.path()), &store)
        .env("MURPHY_CRASH_AT", "archive-files-shared:1")
        .args(["run"])
        .run_killed();
    let (builds, claims) = stored(&moto, bucket);
    assert_eq!(builds[&1], ["(bundle)".to_owned()].into());
    assert_eq!(claims, [1].into());
    assert!(shared_list(&moto, &killed, &store).is_empty());

    on(&moto, killed.murphy(["resume"]).cwd("work"), &store).run();
    let (builds, claims) = stored(&moto, bucket);
    assert_eq!(builds.keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(builds[&1], whole());
    assert_eq!(claims, [1].into());
    let local = killed
        .murphy(["archive", "list", "--json"])
        .cwd("work")
        .run();
    let local: Vec<Value> = parse_json(&local.stdout);
    assert_eq!(local, shared_list(&moto, &killed, &store));
}

/// The store refuses mid-run (its bucket is gone when `pack` archives): `pack` fails naming
/// the store, and once the bucket is back, `murphy resume` archives and shares the build.
#[test]
fn a_store_that_refuses_the_archive_fails_the_stage_and_resume_finishes_it() {
    let moto = Moto::start();
    let bucket = "refused";
    let store = format!("{}/team", moto.bucket(bucket));
    // Emptied first, and again if the run's own records (pushed every second) came between.
    let drop_bucket = format!(
        "import boto3, time\ns3 = boto3.resource('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\nb = s3.Bucket('{bucket}')\nfor _ in range(50):\n    try:\n        b.objects.all().delete()\n        b.delete()\n        break\n    except Exception:\n        time.sleep(0.1)\nelse:\n    raise SystemExit('cannot drop the bucket')\n",
        moto.endpoint()
    );
    let yaml = format!(
        "{}    needs: [drop]\n  drop:\n    run:\n      - test -e dropped || {{ {} drop.py && touch dropped; }}\n",
        single(5),
        python_venv().join("bin/python").display()
    );
    let origin = Test::new()
        .git_init()
        .pipeline(&yaml)
        .write("dist/app.txt", "the app\n")
        .write("drop.py", &drop_bucket)
        .write(".gitignore", "dropped\n")
        .commit("first");
    let out = on(&moto, runner(origin.path()), &store)
        .args(["run"])
        .code(1)
        .run();
    let status = out.murphy(["status", "--json"]).cwd("work").run();
    let view: crate::support::RunView = parse_json(&status.stdout);
    let pack = view.stage("pack");
    assert_eq!(pack.state, "failed", "{view:#?}");
    assert!(
        pack.reason().contains("cannot give the build a number")
            && pack.reason().contains("NoSuchBucket"),
        "{}",
        pack.reason()
    );
    moto.bucket(bucket);
    on(&moto, out.murphy(["resume"]).cwd("work"), &store).run();
    let (builds, _) = stored(&moto, bucket);
    assert_eq!(builds.keys().copied().collect::<Vec<_>>(), [1]);
}
