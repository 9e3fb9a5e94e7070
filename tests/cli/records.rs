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
