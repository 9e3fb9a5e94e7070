//! The command line itself: global options after any subcommand, the `--force` forms.

use std::fs;

use crate::support::Test;

/// A pipeline that is not `pipeline.yml`, so murphy finds it only through `-f`; its stage
/// fails until a file `ok` exists, so there is a run to resume.
const ELSEWHERE: &str = "
    version: 1
    stages:
      check: {run: 'echo checking; test -e ok'}
";

#[test]
fn global_options_work_after_run_resume_and_outbox_flush() {
    let test = Test::new().write("other.yml", &crate::support::unindent(ELSEWHERE));
    let out = test
        .args(["run", "-f", "other.yml", "--state-dir", "st", "-v"])
        .code(1)
        .run();
    // `-v` streams the stage's output; `--state-dir` took the records.
    assert!(out.stderr.contains("checking"), "{}", out.stderr);
    assert!(out.file("st/runs").is_dir());
    assert!(!out.file(".murphy").exists());

    out.write("ok", "");
    out.murphy(["resume", "-f", "other.yml", "--state-dir", "st"])
        .run();
    let runs: Vec<crate::support::RunView> = crate::support::parse_json(
        &out.murphy(["runs", "--state-dir", "st", "--json"])
            .run()
            .stdout,
    );
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].status, "succeeded");

    let flushed = out
        .murphy([
            "outbox",
            "flush",
            "--file",
            "other.yml",
            "--state-dir",
            "st",
        ])
        .run();
    assert_eq!(flushed.stdout, "delivered 0 notification(s)\n");
}

/// Three stages that each count their runs in `ran.NAME`; `b` needs `a`.
const THREE: &str = "
    version: 1
    stages:
      a: {inputs: [in.txt], run: 'echo a >> ran.a'}
      b: {needs: [a], inputs: [in.txt], run: 'echo b >> ran.b'}
      c: {inputs: [in.txt], run: 'echo c >> ran.c'}
";

fn ran(out: &crate::support::Output) -> [usize; 3] {
    ["a", "b", "c"].map(|s| out.count(&format!("ran.{s}")))
}

/// `--force` takes no value unless written `--force=STAGE`: `run --force b` is `run b`, every
/// stage of it forced, not a forced `b` inside the whole pipeline.
#[test]
fn force_then_a_stage_runs_that_stage_and_its_needs_all_forced() {
    let out = Test::new()
        .pipeline(THREE)
        .write("in.txt", "x\n")
        .args(["run"])
        .run();
    assert_eq!(ran(&out), [1, 1, 1]);

    out.murphy(["run", "--force", "b"]).run();
    assert_eq!(ran(&out), [2, 2, 1]);
    let run = out.status();
    assert_eq!(run.stage_names(), ["a", "b"]);
    for name in ["a", "b"] {
        assert_eq!(run.stage(name).why(), "forced", "{name}");
    }
}

#[test]
fn force_equals_a_stage_forces_only_that_one() {
    let out = Test::new()
        .pipeline(THREE)
        .write("in.txt", "x\n")
        .args(["run"])
        .run();
    out.murphy(["run", "--force=b"]).run();
    assert_eq!(ran(&out), [1, 2, 1]);
    let run = out.status();
    assert_eq!(run.stage_names(), ["a", "b", "c"]);
    assert_eq!(run.stage("b").why(), "forced");
    for name in ["a", "c"] {
        assert_eq!(run.stage(name).state, "cached", "{name}");
    }

    let refused = out.murphy(["run", "b", "--force=c"]).code(2).run();
    assert_eq!(
        refused.stderr,
        "error: `--force=c` names a stage this run does not include\n"
    );
    assert_eq!(ran(&out), [1, 2, 1]);
    assert!(fs::read_dir(out.file(".murphy/runs")).unwrap().count() == 2);
}
