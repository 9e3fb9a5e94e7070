//! `murphy resume` checks again what succeeded before it, as `murphy run` checks a cached
//! stage: a deleted output is restored, a changed stage runs again and says why, a damaged
//! checkpoint is not trusted.
//!
//! Every stage appends a line to `ran.<stage>`, outside its inputs and outputs, so runs are
//! counted, never timed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::{Output, RunView, Test, assert_gone, parse_json};

fn counts<const N: usize>(out: &Output, stages: [&str; N]) -> [usize; N] {
    stages.map(|stage| out.count(&format!("ran.{stage}")))
}

/// `wait` sleeps (its pid in `wait.pid`) until a file `go` exists, then copies `made.txt`,
/// which `make` made; `pack` archives both.
const WAITING: &str = "
    version: 1
    stages:
      make:
        inputs: [src.txt]
        run: echo x >> ran.make; cp src.txt made.txt
        outputs: [made.txt]
      wait:
        needs: [make]
        run:
          - echo x >> ran.wait
          - if [ ! -e go ]; then sleep 30 & echo $! > wait.pid; wait; fi
          - cp made.txt waited.txt
        outputs: [waited.txt]
      pack:
        needs: [wait]
        run: echo x >> ran.pack
        archive: {files: [made.txt, waited.txt]}
";

#[test]
fn resume_after_kill_9_restores_a_deleted_output_of_a_stage_that_succeeded_before() {
    let mut murphy = Test::new()
        .pipeline(WAITING)
        .write("src.txt", "made\n")
        .args(["run"])
        .spawn();
    let sleeper = murphy.wait_for_pid("wait.pid");
    murphy.signal(libc::SIGKILL);
    let out = murphy.wait_killed();
    assert_eq!(out.status().stage("make").state, "succeeded");

    fs::remove_file(out.file("made.txt")).unwrap();
    out.write("go", "");
    let resumed = out.murphy(["resume"]).run();
    assert!(
        resumed
            .stderr
            .contains("make succeeded before the run was resumed (restored 1 output)"),
        "{}",
        resumed.stderr
    );
    assert_gone(sleeper);
    assert_eq!(counts(&out, ["make", "wait", "pack"]), [1, 2, 1]);
    assert_eq!(out.read("made.txt"), "made\n");
    assert_eq!(out.read("waited.txt"), "made\n");

    let run = out.status();
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.stage("make").state, "succeeded");
    let rechecked: Vec<_> = out
        .journal(&run.run_id)
        .into_iter()
        .filter(|r| r["event"] == "stage_rechecked")
        .collect();
    assert_eq!(rechecked.len(), 1, "{rechecked:#?}");
    assert_eq!(rechecked[0]["stage"], "make");
    assert_eq!(rechecked[0]["restored"], 1);

    // The archive holds the restored file, with the bytes `make` made.
    let build: serde_json::Value =
        parse_json(&out.murphy(["archive", "show", "1", "--json"]).run().stdout);
    let files: Vec<&str> = build["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["made.txt", "waited.txt"], "{build:#}");
}

/// `fmt` fails on a line with two spaces before a `;`; `test` passes once `lib.rs` says
/// `fixed`. The two do not depend on each other.
const FMT_AND_TEST: &str = "
    version: 1
    stages:
      fmt:
        inputs: [src/*.rs]
        run: echo x >> ran.fmt; if grep -n '  ;' src/*.rs; then exit 1; fi
      test:
        inputs: [src/*.rs]
        run: echo x >> ran.test; grep -q fixed src/lib.rs
";

#[test]
fn a_stage_whose_inputs_changed_after_it_succeeded_runs_again_on_resume_and_says_why() {
    let out = Test::new()
        .pipeline(FMT_AND_TEST)
        .write("src/lib.rs", "pub fn f() -> u8 { 1 }\n")
        .args(["run", "-j", "1"])
        .code(1)
        .run();
    let failed = out.status();
    assert_eq!(failed.stage("fmt").state, "succeeded");
    assert_eq!(failed.stage("test").state, "failed");

    // The test is "fixed", with badly formatted code.
    out.write("src/lib.rs", "pub fn f() -> u8 { 2 }  ; // fixed\n");
    let resumed = out.murphy(["resume"]).code(1).run();
    assert_eq!(counts(&out, ["fmt", "test"]), [2, 2]);
    let run = out.status();
    assert_eq!(run.run_id, failed.run_id);
    assert_eq!(run.status, "failed", "{}", resumed.stderr);
    assert_eq!(run.stage("fmt").state, "failed");
    assert_eq!(run.stage("test").state, "succeeded");
    let why = run.stage("fmt").why();
    assert!(
        why.starts_with("changed since it succeeded before the resume:")
            && why.contains("src/lib.rs"),
        "{why}"
    );

    // And the run that follows agrees with the resume.
    out.murphy(["run"]).code(1).run();
}

/// `make` copies `src.txt` to `made.txt`; `check` fails until a file `ok` exists.
const MAKE_THEN_CHECK: &str = "
    version: 1
    stages:
      make: {inputs: [src.txt], run: echo x >> ran.make; cp src.txt made.txt, outputs: [made.txt]}
      check: {needs: [make], run: echo x >> ran.check; test -f ok}
";

#[test]
fn a_damaged_checkpoint_of_a_stage_that_succeeded_before_is_not_trusted_on_resume() {
    let out = Test::new()
        .pipeline(MAKE_THEN_CHECK)
        .write("src.txt", "made\n")
        .args(["run"])
        .code(1)
        .run();
    // Every stored object of the checkpoint gets other bytes.
    let objects = out.file(".murphy/store/objects");
    let mut damaged = 0;
    for entry in walk(&objects) {
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&entry, "tampered\n").unwrap();
        damaged += 1;
    }
    assert_eq!(damaged, 1);
    fs::remove_file(out.file("made.txt")).unwrap();

    out.write("ok", "");
    let resumed = out.murphy(["resume"]).run();
    assert!(resumed.stderr.contains("damaged"), "{}", resumed.stderr);
    assert_eq!(counts(&out, ["make", "check"]), [2, 2]);
    assert_eq!(out.read("made.txt"), "made\n");
    let run = out.status();
    assert_eq!(run.status, "succeeded");
    assert_eq!(
        run.stage("make").why(),
        "its checkpoint was missing or damaged"
    );
}

#[test]
fn an_uncached_stage_whose_outputs_changed_after_it_succeeded_runs_again_on_resume() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              make: {cache: false, run: echo x >> ran.make; echo made > made.txt, outputs: [made.txt]}
              keep: {cache: false, run: echo x >> ran.keep; echo kept > kept.txt, outputs: [kept.txt]}
              check: {needs: [make, keep], run: echo x >> ran.check; test -f ok}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    out.write("made.txt", "edited\n");
    out.write("ok", "");
    let resumed = out.murphy(["resume"]).run();
    assert!(
        resumed
            .stderr
            .contains("keep succeeded before the run was resumed"),
        "{}",
        resumed.stderr
    );
    assert_eq!(counts(&out, ["make", "keep", "check"]), [2, 1, 2]);
    assert_eq!(out.read("made.txt"), "made\n");
    assert_eq!(
        out.status().stage("make").why(),
        "its outputs changed since it succeeded"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_changed_stage_with_a_checkpoint_for_what_it_is_now_is_restored_on_resume() {
    let out = Test::new()
        .pipeline(MAKE_THEN_CHECK)
        .write("src.txt", "one\n")
        .args(["run"])
        .code(1)
        .run();
    let failed = out.status().run_id;
    // Another run makes `make`'s checkpoint for the new source.
    out.write("src.txt", "two\n");
    out.murphy(["run", "make"]).run();
    fs::remove_file(out.file("made.txt")).unwrap();

    out.write("ok", "");
    out.murphy(["resume", &failed]).run();
    assert_eq!(counts(&out, ["make", "check"]), [2, 2]);
    assert_eq!(out.read("made.txt"), "two\n");
    let run: RunView = parse_json(&out.murphy(["status", &failed, "--json"]).run().stdout);
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.stage("make").state, "cached");
}

/// The archive build of a stage that runs again on resume holds what it archives now; the
/// build of its first run stays as it was.
#[test]
fn an_archive_stage_that_runs_again_on_resume_makes_a_new_build() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build: {inputs: [src.txt], run: mkdir -p dist && cp src.txt dist/app.txt, outputs: [dist/app.txt]}
              pack: {needs: [build], archive: {files: [dist/app.txt]}}
              check: {needs: [pack], run: test -f ok}
            ",
        )
        .write("src.txt", "one\n")
        .args(["run"])
        .code(1)
        .run();
    out.write("src.txt", "two\n");
    out.write("ok", "");
    out.murphy(["resume"]).run();
    let run = out.status();
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.stage("pack").state, "succeeded");

    for (build, bytes) in [("1", "one\n"), ("2", "two\n")] {
        let dir = format!("got{build}");
        out.murphy(["archive", "get", build, "--to", &dir]).run();
        assert_eq!(
            out.read(&format!("{dir}/dist/app.txt")),
            bytes,
            "build {build}"
        );
    }
}
