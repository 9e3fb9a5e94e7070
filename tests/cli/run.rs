//! `murphy run`: scheduling, failures, timeouts, retries, commands and the stage environment.

use crate::support::{Test, assert_gone};

const DIAMOND: &str = "
    version: 1
    name: diamond
    stages:
      a: {run: 'true'}
      b: {needs: [a], run: sleep 0.5}
      c: {needs: [a], run: sleep 0.5}
      d: {needs: [b, c], run: 'true'}
";

#[test]
fn independent_stages_overlap_and_a_join_waits_for_both() {
    let out = Test::new()
        .pipeline(DIAMOND)
        .args(["run", "--jobs", "2"])
        .run();
    let run = out.status();
    assert_eq!(
        (run.pipeline.as_str(), run.status.as_str()),
        ("diamond", "succeeded")
    );
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| run.stage(name));
    for stage in [a, b, c, d] {
        assert_eq!(stage.state, "succeeded", "{stage:?}");
    }
    let (start, end) = (run.started_at, run.finished_at.unwrap());
    assert!(start <= a.started() && d.finished() <= end, "{run:#?}");
    let millis = end.as_millisecond() - start.as_millisecond();
    assert_eq!(run.duration_ms, Some(u64::try_from(millis).unwrap()));
    assert!(a.finished() <= b.started() && a.finished() <= c.started());
    // Each started before the other finished: they ran at the same time.
    assert!(b.started() < c.finished(), "{b:?} {c:?}");
    assert!(c.started() < b.finished(), "{b:?} {c:?}");
    assert!(d.started() > b.finished(), "{b:?} {d:?}");
    assert!(d.started() > c.finished(), "{c:?} {d:?}");
}

#[test]
fn jobs_1_runs_one_stage_at_a_time() {
    let out = Test::new()
        .pipeline(DIAMOND)
        .args(["run", "--jobs", "1"])
        .run();
    let run = out.status();
    let (b, c) = (run.stage("b"), run.stage("c"));
    assert!(
        b.finished() <= c.started() || c.finished() <= b.started(),
        "{b:?} {c:?}"
    );
}

/// Of the stages ready at once, those the previous run ran are checked first: in an
/// edit-and-run loop, the stage whose input was just edited starts before the others are
/// checked (with `-j 1`, before they are even looked at).
#[test]
fn the_stages_the_last_run_ran_are_checked_first() {
    let pipeline = "
        version: 1
        stages:
          a: {inputs: [a.txt], outputs: [a.out], run: cp a.txt a.out}
          b: {inputs: [b.txt], outputs: [b.out], run: cp b.txt b.out}
    ";
    let out = Test::new()
        .write("a.txt", "1")
        .write("b.txt", "1")
        .pipeline(pipeline)
        .args(["run", "-j", "1"])
        .run();
    // `b` alone runs: the next run checks it first.
    out.write("b.txt", "2");
    out.murphy(["run", "-j", "1"]).run();
    out.write("b.txt", "3");
    out.murphy(["run", "-j", "1"]).run();
    let run = out.status();
    let events: Vec<String> = out
        .journal(&run.run_id)
        .iter()
        .filter_map(|e| {
            let stage = e["stage"].as_str()?;
            Some(format!("{} {stage}", e["event"].as_str()?))
        })
        .collect();
    assert_eq!(
        events,
        ["stage_started b", "stage_finished b", "stage_cached a"],
        "{events:?}"
    );
    // Without a previous run that ran it, the pipeline's order holds.
    let runs = out.runs();
    let oldest = runs.iter().min_by_key(|r| r.run_id.clone()).unwrap();
    let first = out.journal(&oldest.run_id);
    assert_eq!(first[1]["stage"], "a", "{first:?}");
}

/// `broken` fails at once while `slow`, on an independent branch, is still running.
const FAILING: &str = "
    version: 1
    stages:
      broken: {run: exit 3}
      after: {needs: [broken], run: touch after-ran}
      slow: {run: sleep 0.5}
      independent: {needs: [slow], run: touch independent-ran}
";

#[test]
fn a_failure_skips_its_dependents_and_starts_nothing_new() {
    let out = Test::new()
        .pipeline(FAILING)
        .args(["run", "--jobs", "2"])
        .code(1)
        .run();
    let run = out.status();
    assert_eq!(run.status, "failed");
    let broken = run.stage("broken");
    assert_eq!(broken.state, "failed");
    assert_eq!(broken.exit_code, Some(3));
    let after = run.stage("after");
    assert_eq!(after.state, "skipped");
    assert!(after.reason().contains("`broken` failed"), "{after:?}");
    assert!(!out.file("after-ran").exists());
    // `slow` was running when `broken` failed, so it finished; what it leads to never started.
    let slow = run.stage("slow");
    assert_eq!(slow.state, "succeeded");
    assert!(broken.finished() < slow.finished());
    let independent = run.stage("independent");
    assert_eq!(independent.state, "skipped");
    assert_eq!(independent.started_at, None);
    assert!(
        independent
            .reason()
            .contains("stopped after `broken` failed"),
        "{independent:?}"
    );
    assert!(!out.file("independent-ran").exists());
}

#[test]
fn keep_going_still_runs_independent_stages() {
    let out = Test::new()
        .pipeline(FAILING)
        .args(["run", "--jobs", "2", "--keep-going"])
        .code(1)
        .run();
    let run = out.status();
    assert_eq!(run.status, "failed");
    assert_eq!(run.stage("broken").state, "failed");
    let after = run.stage("after");
    assert_eq!(after.state, "skipped");
    assert!(after.reason().contains("`broken` failed"), "{after:?}");
    assert!(!out.file("after-ran").exists());
    assert_eq!(run.stage("independent").state, "succeeded");
    assert!(out.file("independent-ran").exists());
}

#[test]
fn timeout_kills_the_stage_and_its_grandchildren() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              hang:
                run: sleep 300 & echo $! > grandchild.pid; wait
                timeout: 1s
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    assert!(out.stderr.contains("hang timed out"), "{}", out.stderr);
    let run = out.status();
    assert_eq!(run.status, "failed");
    let hang = run.stage("hang");
    assert_eq!(hang.state, "timed_out");
    assert!(hang.duration_ms.unwrap() >= 1000, "{hang:?}");
    let pid = out.read("grandchild.pid").trim().parse().unwrap();
    assert_gone(pid);
    let log = out.read(&format!(".murphy/runs/{}/logs/hang.log", run.run_id));
    assert!(log.contains("murphy: timed out"), "{log}");
}

#[test]
fn a_stage_killed_by_a_signal_records_the_signal() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              doomed: {run: kill -KILL $$}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    let run = out.status();
    let doomed = run.stage("doomed");
    assert_eq!(doomed.state, "failed");
    assert_eq!(
        (doomed.exit_code, doomed.signal),
        (None, Some(libc::SIGKILL))
    );
    assert!(out.stderr.contains("killed by signal 9"), "{}", out.stderr);
}

#[test]
fn retry_succeeds_on_the_second_attempt() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              flaky:
                run: if [ -e failed-once ]; then echo second try; else touch failed-once; exit 1; fi
                retry: {attempts: 2, delay: 300ms}
            ",
        )
        .args(["run"])
        .run();
    let run = out.status();
    assert_eq!(run.status, "succeeded");
    let flaky = run.stage("flaky");
    assert_eq!(flaky.state, "succeeded");
    assert_eq!(flaky.attempts, 2);
    let log = out.read(&format!(".murphy/runs/{}/logs/flaky.log", run.run_id));
    assert!(log.contains("--- murphy: attempt 2 of 2 ---"), "{log}");
    assert!(log.contains("second try"), "{log}");

    // The journal shows the delay between the attempts.
    let journal = out.journal(&run.run_id);
    let at = |event: &str, attempt: u64| -> jiff::Timestamp {
        let record = journal
            .iter()
            .find(|r| r["event"] == event && r["attempt"] == attempt)
            .unwrap_or_else(|| panic!("no {event} of attempt {attempt} in {journal:#?}"));
        record["at"].as_str().unwrap().parse().unwrap()
    };
    let pause = at("stage_started", 2).duration_since(at("stage_finished", 1));
    assert!(pause >= jiff::SignedDuration::from_millis(300), "{pause:?}");
}

#[test]
fn retry_attempts_count_the_first_one() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              doomed: {run: echo try >> tries; exit 1, retry: {attempts: 3}}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    let doomed = &out.status().stages[0];
    assert_eq!(doomed.state, "failed");
    assert_eq!(doomed.attempts, 3);
    assert_eq!(out.read("tries"), "try\ntry\ntry\n");
}

#[test]
fn commands_run_in_order_and_stop_at_the_first_failure() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              steps:
                run:
                  - echo one >> done
                  - echo two >> done
                  - exit 4
                  - echo three >> done
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    assert_eq!(out.read("done"), "one\ntwo\n");
    let run = out.status();
    let steps = run.stage("steps");
    assert_eq!(steps.state, "failed");
    assert_eq!(steps.exit_code, Some(4));
    let log = out.read(&format!(".murphy/runs/{}/logs/steps.log", run.run_id));
    assert!(log.contains("$ exit 4"), "{log}");
    assert!(!log.contains("three"), "{log}");
}

#[test]
fn run_selects_the_named_stages_and_their_needs() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              a: {run: touch a-ran}
              b: {needs: [a], run: touch b-ran}
              c: {run: touch c-ran}
              d: {needs: [b], run: touch d-ran}
            ",
        )
        .args(["run", "b"])
        .run();
    let run = out.status();
    assert_eq!(run.stage_names(), ["a", "b"]);
    assert!(run.stages.iter().all(|s| s.state == "succeeded"), "{run:?}");
    assert!(out.file("a-ran").exists() && out.file("b-ran").exists());
    assert!(!out.file("c-ran").exists() && !out.file("d-ran").exists());
}

#[test]
fn run_of_an_unknown_stage_suggests_a_near_one() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build: {run: touch built}
            ",
        )
        .args(["run", "biuld"])
        .code(2)
        .run();
    assert_eq!(
        out.stderr,
        "error: no stage named `biuld` in the pipeline (did you mean `build`?)\n"
    );
    assert!(!out.file("built").exists());
    assert!(!out.file(".murphy").exists(), "nothing is recorded");
}

#[test]
fn stage_env_layers_pipeline_then_stage_then_murphy() {
    let out = Test::new()
        .pipeline(
            r#"
            version: 1
            env: {SHARED: pipeline, OVERRIDDEN: pipeline, NUMBER: 3.10}
            pass_env: [PASSED, SHARED]
            stages:
              show:
                env: {OVERRIDDEN: stage}
                run: printf '%s\n' "$PASSED" "$NOT_PASSED" "$SHARED" "$OVERRIDDEN" "$NUMBER" "$MURPHY_RUN_ID" "$MURPHY_STAGE" "$MURPHY_STATE_DIR" > env.txt
            "#,
        )
        .env("PASSED", "outside")
        .env("NOT_PASSED", "outside")
        .env("SHARED", "outside")
        .args(["run"])
        .run();
    let run = out.status();
    let env = out.read("env.txt");
    let lines: Vec<&str> = env.lines().collect();
    let state_dir = out.path().join(".murphy").canonicalize().unwrap();
    assert_eq!(
        lines,
        [
            "outside",
            "",
            "pipeline",
            "stage",
            "3.10",
            run.run_id.as_str(),
            "show",
            state_dir.to_str().unwrap(),
        ]
    );
}

#[test]
fn murphy_state_dir_is_absolute_for_a_relative_state_dir() {
    let out = Test::new()
        .pipeline(
            r#"
            version: 1
            stages:
              show: {run: 'printf %s "$MURPHY_STATE_DIR" > state-dir.txt'}
            "#,
        )
        .args(["--state-dir", "elsewhere/state", "run"])
        .run();
    let expected = out.path().join("elsewhere/state").canonicalize().unwrap();
    assert_eq!(out.read("state-dir.txt"), expected.to_str().unwrap());
    assert!(!out.file(".murphy").exists());
}
