//! Release confirmations on the shared store: two fresh runners (separate CI machines with
//! empty local state) release the same tag against one bucket of a real S3 server (moto), and
//! the file is published once.

use std::fs;
use std::path::PathBuf;

use crate::moto::Moto;
use crate::support::{Output, RunView, Test, parse_json, runner, unindent};

/// A release with a `command` target and no `check`: only the shared store can tell runner B
/// that runner A published already. The command appends the file to `UPLOADS`, outside both
/// clones, so a second upload shows. `BUILD` makes the file.
const PIPELINE: &str = r#"
    version: 1
    stages:
      release:
        run: ["mkdir -p dist && BUILD"]
        publish:
          - command: {files: [dist/app.txt], run: "cat {file} >> 'UPLOADS'"}
"#;

/// Same bytes on every machine.
const REPRODUCIBLE: &str = "cp app.txt dist/app.txt";
/// Other bytes on every machine.
const RANDOM: &str = "od -An -tx1 -N8 /dev/urandom > dist/app.txt";

/// Where the release's uploads land: a folder shared by the "machines" of one test.
struct Uploads {
    dir: tempfile::TempDir,
}

impl Uploads {
    fn new() -> Uploads {
        Uploads {
            dir: tempfile::Builder::new()
                .prefix("murphy-uploads-")
                .tempdir()
                .unwrap(),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("uploads.log")
    }

    /// Everything uploaded so far, one line per upload.
    fn lines(&self) -> Vec<String> {
        fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The project, committed and tagged `v1.0.0`: what every runner checks out.
fn origin(uploads: &Uploads, build: &str) -> Test {
    let pipeline = PIPELINE
        .replace("BUILD", build)
        .replace("UPLOADS", &uploads.log().to_string_lossy());
    Test::new()
        .git_init()
        .write("pipeline.yml", &unindent(&pipeline))
        .write("app.txt", "app 1.0.0\n")
        .write(".gitignore", "/.murphy/\n/dist/\n")
        .commit("demo 1.0.0")
        .git(["tag", "v1.0.0"])
}

/// `test` as a runner of the store `store`, with `args`.
fn on(moto: &Moto, test: Test, store: &str, args: &[&str]) -> Test {
    moto.env(test.cwd("work"))
        .env("MURPHY_STORE", store)
        .args(args.iter().copied())
}

fn run_id(out: &Output) -> String {
    let status = out.murphy(["status", "--json"]).cwd("work").run();
    parse_json::<RunView>(&status.stdout).run_id
}

#[test]
fn a_tag_release_confirmed_on_one_runner_is_skipped_on_another() {
    let moto = Moto::start();
    let store = format!("{}/team", moto.bucket("release-once"));
    let uploads = Uploads::new();
    let origin = origin(&uploads, REPRODUCIBLE);

    let a = on(
        &moto,
        runner(origin.path()),
        &store,
        &["run", "--trigger", "tag"],
    )
    .run();
    assert_eq!(uploads.lines(), ["app 1.0.0"], "{}", a.stderr);
    let run_a = run_id(&a);

    let b = on(
        &moto,
        runner(origin.path()),
        &store,
        &["run", "--trigger", "tag"],
    )
    .run();
    assert_eq!(
        uploads.lines(),
        ["app 1.0.0"],
        "runner B published again:\n{}",
        b.stderr
    );
    assert!(
        b.stderr.contains(&format!(
            "release command `cat {{file}} >> '{}'`: `dist/app.txt` was published by run {run_a} (confirmed on the shared store); skipped",
            uploads.log().display()
        )),
        "{}",
        b.stderr
    );
    // B's journal holds the publication as confirmed, so its own resume would not upload it.
    let journal = b.read(&format!("work/.murphy/runs/{}/journal.jsonl", run_id(&b)));
    let published: Vec<_> = journal
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|e| e["event"] == "published")
        .map(|e| (e["file"].to_string(), e["outcome"].to_string()))
        .collect();
    assert_eq!(
        published,
        [(
            r#""dist/app.txt""#.to_owned(),
            r#""already_present""#.to_owned()
        )],
        "{journal}"
    );
}

#[test]
fn a_version_confirmed_with_other_bytes_fails_the_other_runners_release() {
    let moto = Moto::start();
    let store = moto.bucket("release-conflict");
    let uploads = Uploads::new();
    let origin = origin(&uploads, RANDOM);

    let a = on(
        &moto,
        runner(origin.path()),
        &store,
        &["run", "--trigger", "tag"],
    )
    .run();
    assert_eq!(uploads.lines().len(), 1, "{}", a.stderr);
    let run_a = run_id(&a);

    let b = on(
        &moto,
        runner(origin.path()),
        &store,
        &["run", "--trigger", "tag"],
    )
    .code(1)
    .run();
    assert_eq!(
        uploads.lines().len(),
        1,
        "runner B published:\n{}",
        b.stderr
    );
    for part in [
        "`dist/app.txt` 1.0.0 was already published with other bytes",
        &format!("by run {run_a} of stage `release`"),
        "releases/work/command_20",
        "a released version is never published over",
    ] {
        assert!(b.stderr.contains(part), "{part}:\n{}", b.stderr);
    }
}

#[test]
fn killed_before_the_shared_confirmation_resume_writes_it_and_the_next_runner_skips() {
    let moto = Moto::start();
    let store = moto.bucket("release-killed");
    let uploads = Uploads::new();
    let origin = origin(&uploads, REPRODUCIBLE);

    // Journalled as published, killed before the shared store heard of it.
    let killed = on(
        &moto,
        runner(origin.path()),
        &store,
        &["run", "--trigger", "tag"],
    )
    .env("MURPHY_CRASH_AT", "published:dist/app.txt")
    .run_killed();
    assert_eq!(uploads.lines(), ["app 1.0.0"]);
    let run_a = run_id(&killed);

    let resumed = on(
        &moto,
        killed.murphy(Vec::<String>::new()),
        &store,
        &["resume"],
    )
    .run();
    assert!(
        resumed
            .stderr
            .contains("`dist/app.txt` was published before the run was resumed"),
        "{}",
        resumed.stderr
    );
    assert_eq!(uploads.lines(), ["app 1.0.0"], "the resume published again");

    let b = on(
        &moto,
        runner(origin.path()),
        &store,
        &["run", "--trigger", "tag"],
    )
    .run();
    assert_eq!(
        uploads.lines(),
        ["app 1.0.0"],
        "runner B published again:\n{}",
        b.stderr
    );
    assert!(
        b.stderr.contains(&format!("was published by run {run_a}")),
        "{}",
        b.stderr
    );
}

#[test]
fn a_publication_without_a_version_is_not_confirmed_and_every_runner_publishes() {
    let moto = Moto::start();
    let store = moto.bucket("release-unversioned");
    let uploads = Uploads::new();
    // A deploy on every push of an untagged commit: no release to be the same across runs.
    let pipeline = unindent(PIPELINE)
        .replace("BUILD", REPRODUCIBLE)
        .replace("UPLOADS", &uploads.log().to_string_lossy())
        .replace(
            "    publish:\n",
            "    when: {trigger: push}\n    publish:\n",
        );
    let origin = Test::new()
        .git_init()
        .write("pipeline.yml", &pipeline)
        .write("app.txt", "app 1.0.0\n")
        .write(".gitignore", "/.murphy/\n/dist/\n")
        .commit("demo");
    for _ in 0..2 {
        on(
            &moto,
            runner(origin.path()),
            &store,
            &["run", "--trigger", "push"],
        )
        .run();
    }
    assert_eq!(uploads.lines(), ["app 1.0.0", "app 1.0.0"]);
}

#[test]
fn runners_releasing_at_the_same_moment_publish_once() {
    let moto = Moto::start();
    let store = moto.bucket("release-race");
    let uploads = Uploads::new();
    // Every runner's build waits for the others (a barrier in a folder they share), and the
    // upload is slow, so all three reach the publication together and overlap there.
    let barrier = tempfile::tempdir().unwrap();
    let build = format!(
        "touch '{dir}'/$$ && i=0 && while [ $(ls '{dir}' | wc -l) -lt 3 ] && [ $i -lt 300 ]; \
         do sleep 0.1; i=$((i+1)); done && {REPRODUCIBLE}",
        dir = barrier.path().display()
    );
    let pipeline = PIPELINE
        .replace("BUILD", &build)
        .replace("cat {file}", "sleep 2 && cat {file}")
        .replace("UPLOADS", &uploads.log().to_string_lossy());
    let origin = Test::new()
        .git_init()
        .write("pipeline.yml", &unindent(&pipeline))
        .write("app.txt", "app 1.0.0\n")
        .write(".gitignore", "/.murphy/\n/dist/\n")
        .commit("demo 1.0.0")
        .git(["tag", "v1.0.0"]);
    let running: Vec<_> = (0..3)
        .map(|_| {
            on(
                &moto,
                runner(origin.path()),
                &store,
                &["run", "--trigger", "tag"],
            )
            .spawn()
        })
        .collect();
    let outs: Vec<Output> = running.into_iter().map(|r| r.wait()).collect();
    assert_eq!(
        uploads.lines(),
        ["app 1.0.0"],
        "published more than once:\n{}",
        outs.iter()
            .map(|o| o.stderr.as_str())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    let waited = outs
        .iter()
        .filter(|o| o.stderr.contains("is being published by"))
        .count();
    assert!(waited >= 1, "no runner waited for another");
}

#[test]
fn under_a_store_key_a_confirmation_counts_only_with_its_mac() {
    let moto = Moto::start();
    let store = moto.bucket("release-sealed");
    let uploads = Uploads::new();
    let origin = origin(&uploads, REPRODUCIBLE);
    let keyed = |key: &str| {
        on(
            &moto,
            runner(origin.path()),
            &store,
            &["run", "--trigger", "tag"],
        )
        .env("MURPHY_STORE_KEY", key)
    };
    keyed("the-team-key-0123456789").run();
    // The same key: the confirmation holds, and the upload is skipped.
    keyed("the-team-key-0123456789").run();
    assert_eq!(uploads.lines(), ["app 1.0.0"]);
    // Another key (someone who can write the bucket but has no key): not trusted.
    let forged = keyed("a-forger-key-0123456789").code(1).run();
    assert!(
        forged
            .stderr
            .contains("its MAC does not match MURPHY_STORE_KEY"),
        "{}",
        forged.stderr
    );
    assert_eq!(uploads.lines(), ["app 1.0.0"]);
}

#[test]
fn a_claim_left_by_a_dead_publisher_stops_a_command_without_check_from_publishing_again() {
    let moto = Moto::start();
    let store = moto.bucket("release-dead-claim");
    let uploads = Uploads::new();
    let origin = origin(&uploads, REPRODUCIBLE);
    // Published, then killed before its confirmation: only its claim says it was at work.
    on(
        &moto,
        runner(origin.path()),
        &store,
        &["run", "--trigger", "tag"],
    )
    .env("MURPHY_CRASH_AT", "published:dist/app.txt")
    .run_killed();
    assert_eq!(uploads.lines(), ["app 1.0.0"]);
    let b = on(
        &moto,
        runner(origin.path()),
        &store,
        &["run", "--trigger", "tag"],
    )
    .code(1)
    .run();
    assert_eq!(
        uploads.lines(),
        ["app 1.0.0"],
        "published twice:\n{}",
        b.stderr
    );
    assert!(
        b.stderr
            .contains("died before confirming it, so it may be out already"),
        "{}",
        b.stderr
    );
}
