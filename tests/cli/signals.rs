//! Real signals to a running `murphy run`.

use crate::support::{Output, Test, assert_gone};

const HANGS: &str = "
    version: 1
    stages:
      hang: {run: 'sleep 30 & echo $! > child.pid; wait'}
      later: {needs: [hang], run: touch later-ran}
";

/// Runs `HANGS`, sends `signal` to murphy once `hang` runs, and checks that murphy exits
/// 130 leaving nothing of the stage behind.
fn interrupt(signal: libc::c_int) -> Output {
    let mut murphy = Test::new().pipeline(HANGS).args(["run"]).code(130).spawn();
    let child = murphy.wait_for_pid("child.pid");
    murphy.signal(signal);
    let out = murphy.wait();
    assert_gone(child);
    out
}

fn interrupts_cleanly_on(signal: libc::c_int) {
    let out = interrupt(signal);
    let run = out.status();
    assert_eq!(run.status, "interrupted");
    assert!(run.finished_at.is_some(), "the end of the run is recorded");
    assert_eq!(run.stage("hang").state, "interrupted");
    assert_eq!(run.stage("later").state, "skipped");
    assert!(!out.file("later-ran").exists());
}

#[test]
fn sigterm_stops_the_run_and_its_processes() {
    interrupts_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_stops_the_run_and_its_processes() {
    interrupts_cleanly_on(libc::SIGINT);
}

#[test]
fn dependents_of_an_interrupted_stage_are_skipped_because_of_the_interrupt() {
    let run = interrupt(libc::SIGTERM).status();
    assert_eq!(run.stage("hang").state, "interrupted");
    let later = run.stage("later");
    assert_eq!(later.state, "skipped");
    assert!(!later.reason().contains("failed"), "{later:?}");
    assert!(later.reason().contains("interrupted"), "{later:?}");
}

#[test]
fn the_summary_does_not_count_an_interrupted_stage_as_failed() {
    let out = interrupt(libc::SIGTERM);
    let summary = out.stderr.lines().last().unwrap_or_default();
    assert!(summary.contains("was interrupted"), "{}", out.stderr);
    assert!(summary.contains(" 0 failed"), "{summary}");
}

#[test]
fn interrupt_during_a_retry_delay_shows_the_stage_interrupted() {
    let mut murphy = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              flaky:
                run: exit 1
                retry: {attempts: 2, delay: 1s}
            ",
        )
        .args(["run"])
        .code(130)
        .spawn();
    // Once the failed attempt is journalled, murphy is in the retry delay.
    let runs = murphy.path().join(".murphy/runs");
    murphy.wait_until("the first attempt failed", || {
        let Some(Ok(run)) = std::fs::read_dir(&runs).ok().and_then(|mut d| d.next()) else {
            return false;
        };
        std::fs::read_to_string(run.path().join("journal.jsonl"))
            .is_ok_and(|journal| journal.contains("\"stage_finished\""))
    });
    murphy.signal(libc::SIGTERM);
    let run = murphy.wait().status();
    assert_eq!(run.status, "interrupted");
    // The failed attempt is journalled first; the interruption must be the last word.
    assert_eq!(run.stage("flaky").state, "interrupted");
}
