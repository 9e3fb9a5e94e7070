//! What runs leave behind: `runs`, `status`, `logs` and the journal they are replayed from.

use std::io::Write;

use crate::support::{Output, RunView, Test, parse_json};

fn greeting(word: &str) -> String {
    format!("version: 1\nstages:\n  greet: {{run: echo {word}}}\n")
}

fn runs(out: &Output) -> Vec<RunView> {
    parse_json(&out.murphy(["runs", "--json"]).run().stdout)
}

#[test]
fn runs_are_listed_newest_first_and_logs_read_any_run() {
    let first = Test::new()
        .write("pipeline.yml", &greeting("first"))
        .args(["run"])
        .run();
    let first_run = first.status();
    let second = first
        .murphy(["run"])
        .write("pipeline.yml", &greeting("second"))
        .run();
    let second_run = second.status();
    assert_ne!(first_run.run_id, second_run.run_id);

    let listed = runs(&second);
    let ids: Vec<&str> = listed.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, [&second_run.run_id, &first_run.run_id]);
    assert!(listed[0].started_at > listed[1].started_at);
    assert!(listed.iter().all(|r| r.status == "succeeded"));

    // The table says the same.
    let table = second.murphy(["runs"]).run().stdout;
    let second_at = table.find(&second_run.run_id).unwrap();
    let first_at = table.find(&first_run.run_id).unwrap();
    assert!(second_at < first_at, "{table}");

    let latest = second.murphy(["logs", "greet"]).run().stdout;
    assert_eq!(latest, "$ echo second\nsecond\n");
    let older = second
        .murphy(["logs", &first_run.run_id, "greet"])
        .run()
        .stdout;
    assert_eq!(older, "$ echo first\nfirst\n");
}

#[test]
fn logs_of_an_unknown_stage_or_run_is_a_usage_error() {
    let out = Test::new()
        .write("pipeline.yml", &greeting("hello"))
        .args(["run"])
        .run();
    let run = out.status();
    let err = out.murphy(["logs", "gret"]).code(2).run().stderr;
    assert_eq!(
        err,
        format!(
            "error: run {} has no stage `gret` (did you mean `greet`?)\n",
            run.run_id
        )
    );
    let err = out.murphy(["logs", "nope", "greet"]).code(2).run().stderr;
    assert!(err.starts_with("error: no run `nope`"), "{err}");
}

#[test]
fn status_before_any_run_is_a_usage_error() {
    let out = Test::new()
        .write("pipeline.yml", &greeting("hello"))
        .args(["status"])
        .code(2)
        .run();
    assert!(
        out.stderr.starts_with("error: no runs recorded"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_torn_last_journal_line_does_not_break_status() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              a: {run: 'true'}
              b: {needs: [a], run: exit 2}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    let before = out.status();
    // What a kill in the middle of a write leaves behind.
    let journal = out.file(&format!(".murphy/runs/{}/journal.jsonl", before.run_id));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(br#"{"v":1,"at":"2026-11-22T00:00:00Z","event":"stage_fin"#)
        .unwrap();

    let after = out.status();
    assert_eq!(after.run_id, before.run_id);
    assert_eq!(after.status, "failed");
    assert_eq!(after.finished_at, before.finished_at);
    assert_eq!(after.stage("a").state, "succeeded");
    let b = after.stage("b");
    assert_eq!((b.state.as_str(), b.exit_code), ("failed", Some(2)));
    // The table, the listing and the logs read the same journal.
    let table = out.murphy(["status"]).run().stdout;
    assert!(table.contains("failed"), "{table}");
    assert_eq!(runs(&out).len(), 1);
    assert_eq!(out.murphy(["logs", "b"]).run().stdout, "$ exit 2\n");
}

/// A stage that succeeds and prints nothing costs no log file (a file per stage is most of
/// what a small stage in a chain costs); one that prints, or fails, has its log.
#[test]
fn only_a_stage_that_printed_or_failed_has_a_log_file() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              quiet: {run: 'true'}
              loud: {needs: [quiet], run: 'echo hi'}
              failing: {needs: [loud], run: exit 3}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    let run = out.status();
    let log = |stage: &str| out.file(&format!(".murphy/runs/{}/logs/{stage}.log", run.run_id));
    assert!(!log("quiet").exists());
    assert_eq!(
        std::fs::read_to_string(log("loud")).unwrap(),
        "$ echo hi\nhi\n"
    );
    assert_eq!(
        std::fs::read_to_string(log("failing")).unwrap(),
        "$ exit 3\n"
    );
    let quiet = out.murphy(["logs", "quiet"]).run();
    assert_eq!(quiet.stdout, "");
    assert_eq!(quiet.stderr, "note: stage `quiet` printed nothing\n");
}

/// Run ids begin with the start time; quick runs must still sort by it.
#[test]
fn runs_in_quick_succession_are_listed_newest_first() {
    let out = Test::new()
        .write("pipeline.yml", &greeting("hello"))
        .args(["run"])
        .run();
    for _ in 0..5 {
        out.murphy(["run"]).run();
    }
    let listed = runs(&out);
    let started: Vec<_> = listed.iter().map(|r| r.started_at).collect();
    assert!(
        started.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {:#?}",
        listed
            .iter()
            .map(|r| (&r.run_id, r.started_at))
            .collect::<Vec<_>>()
    );
    // And `status` without a run id reads the latest run.
    let latest = listed.iter().max_by_key(|r| r.started_at).unwrap();
    assert_eq!(out.status().run_id, latest.run_id);
}

#[test]
fn logs_of_a_cached_stage_are_those_of_the_run_that_made_its_checkpoint() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build: {inputs: [src.txt], run: cat src.txt}
            ",
        )
        .write("src.txt", "built from src\n")
        .args(["run"])
        .run();
    let maker = out.status().run_id;
    out.murphy(["run"]).run();
    let cached = out.status();
    assert_eq!(cached.stage("build").state, "cached");
    assert_ne!(cached.run_id, maker);

    let logs = out.murphy(["logs", "build"]).run();
    assert_eq!(logs.stdout, "$ cat src.txt\nbuilt from src\n");
    assert_eq!(
        logs.stderr,
        format!(
            "note: stage `build` was restored from its checkpoint in run {}; this is the log of run {maker}, which made it\n",
            cached.run_id
        )
    );
    // The run that made it is read as it is, with no note.
    let own = out.murphy(["logs", &maker, "build"]).run();
    assert_eq!(
        (own.stdout.as_str(), own.stderr.as_str()),
        ("$ cat src.txt\nbuilt from src\n", "")
    );
}

#[test]
fn status_counts_attempts_across_resumes_and_tells_active_from_wall_time() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              flaky: {run: test -f fixed, retry: {attempts: 2}}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    out.write("fixed", "");
    out.murphy(["resume"]).run();
    let run_id = out.status().run_id;
    let status: serde_json::Value = parse_json(&out.murphy(["status", "--json"]).run().stdout);
    let stage = &status["stages"][0];
    assert_eq!(stage["attempts"], 3, "{status:#}");

    // Both times are the journal's: active is the sum of the attempts, wall runs from the
    // first start to the last end, the time between the failure and the resume included.
    let journal = out.journal(&run_id);
    let at = |r: &serde_json::Value| {
        r["at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond()
    };
    let starts: Vec<i64> = journal
        .iter()
        .filter(|r| r["event"] == "stage_started")
        .map(at)
        .collect();
    let ends: Vec<i64> = journal
        .iter()
        .filter(|r| r["event"] == "stage_finished")
        .map(at)
        .collect();
    assert_eq!((starts.len(), ends.len()), (3, 3));
    let active: i64 = starts.iter().zip(&ends).map(|(s, e)| e - s).sum();
    assert_eq!(stage["active_ms"], active, "{status:#}");
    assert_eq!(stage["wall_ms"], ends[2] - starts[0], "{status:#}");

    let table = out.murphy(["status"]).run().stdout;
    let header = table.lines().nth(1).unwrap();
    assert!(
        header.contains("ATTEMPTS") && header.contains("ACTIVE") && header.contains("WALL"),
        "{table}"
    );
}
