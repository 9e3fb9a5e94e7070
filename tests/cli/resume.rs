//! `murphy resume` after a failure and after kill -9 at every step of a stage's life, and the
//! state directory's lock.
//!
//! Every stage appends a line to `ran.<stage>`, a file outside its declared inputs and
//! outputs, so "it ran" and "it did not run" are counted, never timed.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::support::{Output, RunView, Test, assert_gone, parse_json};

fn counts<const N: usize>(out: &Output, stages: [&str; N]) -> [usize; N] {
    stages.map(|stage| out.count(&format!("ran.{stage}")))
}

#[test]
fn resume_runs_only_the_stages_that_did_not_succeed() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              s1: {run: echo x >> ran.s1}
              s2: {needs: [s1], run: echo x >> ran.s2}
              s3: {needs: [s2], run: echo x >> ran.s3; test -f fixed}
              s4: {needs: [s3], run: echo x >> ran.s4}
              s5: {needs: [s4], run: echo x >> ran.s5}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    const STAGES: [&str; 5] = ["s1", "s2", "s3", "s4", "s5"];
    assert_eq!(counts(&out, STAGES), [1, 1, 1, 0, 0]);
    let failed = out.status();
    assert_eq!(failed.status, "failed");
    assert_eq!(failed.stage("s3").state, "failed");

    out.write("fixed", "");
    let resumed = out.murphy(["resume"]).run();
    assert!(
        resumed
            .stderr
            .contains(&format!("resuming run {}", failed.run_id)),
        "{}",
        resumed.stderr
    );
    assert_eq!(counts(&out, STAGES), [1, 1, 2, 1, 1]);
    let runs = out.runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(
        (run.run_id.as_str(), run.status.as_str()),
        (failed.run_id.as_str(), "succeeded")
    );
    for name in STAGES {
        assert_eq!(run.stage(name).state, "succeeded", "{name}");
    }
    // What succeeded before keeps its first times.
    assert_eq!(run.stage("s1").started_at, failed.stage("s1").started_at);

    // A succeeded run has nothing left to resume.
    let err = out.murphy(["resume"]).code(2).run().stderr;
    assert_eq!(
        err,
        format!(
            "error: run {} succeeded; there is nothing to resume\n",
            failed.run_id
        )
    );
    assert_eq!(counts(&out, STAGES), [1, 1, 2, 1, 1]);
}

/// A chain whose middle stage makes a directory (a nested file with mode 0755 and a symlink).
/// Without a file `go`, `s2` waits in a `sleep` whose pid it writes to `s2.pid`.
const KILLABLE: &str = "
    version: 1
    stages:
      s1:
        inputs: [src.txt]
        run: echo x >> ran.s1; tr a-z A-Z < src.txt > s1.out
        outputs: [s1.out]
      s2:
        needs: [s1]
        inputs: [s2.txt]
        run:
          - echo x >> ran.s2
          - echo $$ > s2.pgid; if [ ! -e go ]; then sleep 30 & echo $! > s2.pid; wait; fi
          - mkdir -p s2.dir/sub && cat s1.out s2.txt > s2.dir/sub/data && chmod 755 s2.dir/sub/data
          - ln -sfn sub/data s2.dir/link
        outputs: [s2.dir]
      s3:
        needs: [s2]
        run: echo x >> ran.s3; wc -c < s2.dir/sub/data > s3.out; cat s2.dir/link >> s3.out
        outputs: [s3.out]
";

const KILLABLE_STAGES: [&str; 3] = ["s1", "s2", "s3"];

fn killable() -> Test {
    Test::new()
        .pipeline(KILLABLE)
        .write("src.txt", "source\n")
        .write("s2.txt", "two\n")
}

/// Every output of `KILLABLE`: each path's kind, mode and bytes or link target.
fn outputs(out: &Output) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for path in ["s1.out", "s2.dir", "s3.out"] {
        describe_tree(out.path(), &out.file(path), &mut found);
    }
    found
}

fn describe_tree(root: &Path, path: &Path, found: &mut BTreeMap<String, String>) {
    let name = path.strip_prefix(root).unwrap().display().to_string();
    let Ok(meta) = fs::symlink_metadata(path) else {
        found.insert(name, "missing".into());
        return;
    };
    let mode = meta.mode() & 0o7777;
    let what = if meta.file_type().is_symlink() {
        format!("link -> {}", fs::read_link(path).unwrap().display())
    } else if meta.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            describe_tree(root, &entry.unwrap().path(), found);
        }
        format!("dir {mode:o}")
    } else {
        format!(
            "file {mode:o} {:?}",
            String::from_utf8_lossy(&fs::read(path).unwrap())
        )
    };
    found.insert(name, what);
}

/// The outputs of `KILLABLE` run once, uninterrupted, in a temp dir of its own.
fn uninterrupted() -> BTreeMap<String, String> {
    let out = killable().write("go", "").args(["run"]).run();
    assert_eq!(counts(&out, KILLABLE_STAGES), [1, 1, 1]);
    let made = outputs(&out);
    assert_eq!(made["s2.dir/sub/data"], "file 755 \"SOURCE\\ntwo\\n\"");
    assert_eq!(made["s2.dir/link"], "link -> sub/data");
    assert_eq!(out.read("s3.out"), "11\nSOURCE\ntwo\n");
    made
}

/// Stages the journal recorded as done (succeeded or restored), from its intact lines.
fn finished_in_journal(out: &Output, run_id: &str) -> Vec<String> {
    out.intact_journal(run_id)
        .iter()
        .filter(|r| {
            r["event"] == "stage_cached"
                || (r["event"] == "stage_finished" && r["outcome"] == "succeeded")
        })
        .map(|r| r["stage"].as_str().unwrap().to_owned())
        .collect()
}

/// Every temp file (`*.murphy-tmp-*`) below `dir`, relative to it.
fn temp_litter(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(next) = todo.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().contains(".murphy-tmp-") {
                found.push(
                    entry
                        .path()
                        .strip_prefix(dir)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            } else if entry.file_type().unwrap().is_dir() {
                todo.push(entry.path());
            }
        }
    }
    found
}

/// Resumes a killed run of `KILLABLE` and checks what every kill -9 test wants: it ends well
/// in the same run, the outputs are those of an uninterrupted run, no stage the journal had
/// recorded as done ran again, each stage ran as often as `expected` says, in all, and no
/// temp file a killed writer left is still there.
fn resume_after_kill(out: &Output, expected: [usize; 3]) {
    let killed = out.status();
    assert_eq!(killed.status, "killed", "{killed:#?}");
    let done_before = finished_in_journal(out, &killed.run_id);
    let counts_before = counts(out, KILLABLE_STAGES);

    let resumed = out.murphy(["resume"]).run();
    assert!(
        resumed
            .stderr
            .contains(&format!("resuming run {}", killed.run_id)),
        "{}",
        resumed.stderr
    );
    let counts_after = counts(out, KILLABLE_STAGES);
    for (i, stage) in KILLABLE_STAGES.iter().enumerate() {
        if done_before.iter().any(|s| s == stage) {
            assert_eq!(
                counts_after[i], counts_before[i],
                "`{stage}` was done before the kill, yet ran again"
            );
        }
    }
    assert_eq!(counts_after, expected, "runs of {KILLABLE_STAGES:?}");
    assert_eq!(outputs(out), uninterrupted());

    let runs = out.runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].run_id, killed.run_id);
    assert_eq!(runs[0].status, "succeeded");
    for stage in &runs[0].stages {
        assert!(
            stage.state == "succeeded" || stage.state == "cached",
            "{stage:?}"
        );
    }
    assert_eq!(temp_litter(out.path()), Vec::<String>::new());
}

/// Kills whatever is left of a stage's process group when dropped, so that a failing test
/// leaves nothing behind. Only a live process leading its own group is signalled.
struct GroupGuard(libc::pid_t);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.0)) else {
            return;
        };
        let pgrp = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(2))
            .and_then(|f| f.parse::<libc::pid_t>().ok());
        if pgrp == Some(self.0) {
            // SAFETY: kill only sends a signal, to a group this test's pipeline started.
            unsafe { libc::killpg(self.0, libc::SIGKILL) };
        }
    }
}

fn read_pid(out: &Output, file: &str) -> libc::pid_t {
    out.read(file).trim().parse().unwrap()
}

#[test]
fn kill_9_while_a_stage_runs_then_resume() {
    let mut murphy = killable().args(["run"]).spawn();
    let sleeper = murphy.wait_for_pid("s2.pid");
    murphy.signal(libc::SIGKILL);
    let out = murphy.wait_killed();
    let _group = GroupGuard(read_pid(&out, "s2.pgid"));
    let killed = out.status();
    assert_eq!(killed.stage("s1").state, "succeeded");
    let s2 = killed.stage("s2");
    assert_eq!(s2.state, "interrupted");
    assert_eq!(s2.reason(), "murphy stopped while it ran");
    assert!(
        fs::read_to_string(format!("/proc/{sleeper}/stat")).is_ok(),
        "the killed murphy's stage is still running"
    );

    out.write("go", "");
    resume_after_kill(&out, [1, 2, 1]);
    assert_gone(sleeper);
}

/// Runs `KILLABLE` with a crash point, which must kill murphy.
fn crash_at(point: &str) -> Output {
    killable()
        .write("go", "")
        .env("MURPHY_CRASH_AT", point)
        .args(["run"])
        .run_killed()
}

#[test]
fn kill_9_after_a_stage_exited_then_resume() {
    let out = crash_at("stage-exited:s2");
    assert_eq!(counts(&out, KILLABLE_STAGES), [1, 1, 0]);
    assert_eq!(out.cache_stats().records, 1, "only s1 was checkpointed");
    resume_after_kill(&out, [1, 2, 1]);
}

#[test]
fn kill_9_after_objects_were_stored_then_resume() {
    let out = crash_at("objects-stored:s2");
    let stats = out.cache_stats();
    assert_eq!((stats.objects, stats.records), (2, 1), "{stats:?}");
    resume_after_kill(&out, [1, 2, 1]);
}

#[test]
fn kill_9_after_the_record_was_written_then_resume() {
    let out = crash_at("record-written:s2");
    assert_eq!(out.cache_stats().records, 2);
    // The checkpoint of `s2` was complete: it is restored, not run again.
    resume_after_kill(&out, [1, 1, 1]);
    assert_eq!(out.status().stage("s2").state, "cached");
}

/// A kill between a checkpoint file's temp file and its rename (here the last one, `latest/s2`,
/// after the record) leaves the temp file; the next run under the lock sweeps it.
#[test]
fn kill_9_while_a_checkpoint_file_is_written_then_resume() {
    let out = crash_at("temp-written:s2");
    let litter = temp_litter(out.path());
    assert_eq!(litter.len(), 1, "{litter:?}");
    assert!(
        litter[0].starts_with(".murphy/store/latest/.s2.murphy-tmp-"),
        "{litter:?}"
    );
    resume_after_kill(&out, [1, 1, 1]);
}

/// The run's own folder holds temp files too (its list of changed files, a template shell's
/// script): what a kill leaves there is swept when the run is resumed.
#[test]
fn kill_9_while_the_run_folder_is_written_then_resume() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              s1: {run: echo x >> ran.s1}
            ",
        )
        .commit("Initial")
        .env("MURPHY_CRASH_AT", "temp-written:changed-files.txt")
        .args(["run"])
        .run_killed();
    let run_id = out.status().run_id;
    let litter = temp_litter(out.path());
    assert_eq!(litter.len(), 1, "{litter:?}");
    assert!(
        litter[0].starts_with(&format!(
            ".murphy/runs/{run_id}/.changed-files.txt.murphy-tmp-"
        )),
        "{litter:?}"
    );
    out.murphy(["resume"]).run();
    assert_eq!(counts(&out, ["s1"]), [1]);
    assert_eq!(temp_litter(out.path()), Vec::<String>::new());
}

/// `cache gc` (which holds the state directory's lock) sweeps a killed writer's temp files too.
#[test]
fn cache_gc_sweeps_the_temp_files_a_kill_left() {
    let out = crash_at("temp-written:s2");
    assert_eq!(temp_litter(out.path()).len(), 1);
    out.murphy(["cache", "gc"]).run();
    assert_eq!(temp_litter(out.path()), Vec::<String>::new());
}

/// What the n-th journal append of an uninterrupted `KILLABLE` run records.
fn nth_append(n: usize) -> (String, Option<String>) {
    let out = killable().write("go", "").args(["run"]).run();
    let run_id = out.status().run_id;
    let record = &out.journal(&run_id)[n - 1];
    (
        record["event"].as_str().unwrap().to_owned(),
        record["stage"].as_str().map(str::to_owned),
    )
}

/// Tears the n-th journal append in half, then SIGKILL; then resume.
fn torn_journal_append(n: usize, event: &str, stage: Option<&str>) {
    assert_eq!(
        nth_append(n),
        (event.to_owned(), stage.map(str::to_owned)),
        "journal append {n}"
    );
    let out = crash_at(&format!("journal-append:{n}"));
    let run_id = &out.runs()[0].run_id;
    let journal = out.read(&format!(".murphy/runs/{run_id}/journal.jsonl"));
    assert!(!journal.ends_with('\n'), "a torn last line: {journal}");
    // Whatever it tore, every stage runs exactly once in all: a stage whose end was torn
    // off had completed its checkpoint, which resume restores.
    resume_after_kill(&out, [1, 1, 1]);
}

#[test]
fn torn_run_started_then_resume() {
    torn_journal_append(1, "run_started", None);
}

#[test]
fn torn_start_of_the_first_stage_then_resume() {
    torn_journal_append(2, "stage_started", Some("s1"));
}

#[test]
fn torn_end_of_the_first_stage_then_resume() {
    torn_journal_append(3, "stage_finished", Some("s1"));
}

#[test]
fn torn_start_of_the_second_stage_then_resume() {
    torn_journal_append(4, "stage_started", Some("s2"));
}

#[test]
fn torn_end_of_the_second_stage_then_resume() {
    torn_journal_append(5, "stage_finished", Some("s2"));
}

#[test]
fn torn_start_of_the_last_stage_then_resume() {
    torn_journal_append(6, "stage_started", Some("s3"));
}

#[test]
fn torn_end_of_the_last_stage_then_resume() {
    torn_journal_append(7, "stage_finished", Some("s3"));
}

#[test]
fn torn_run_finished_then_resume() {
    torn_journal_append(8, "run_finished", None);
}

/// A stage that holds the run until a file `release` appears.
const HOLDS: &str = "
    version: 1
    stages:
      hold: {run: 'echo x >> ran.hold; echo $$ > hold.pid; while [ ! -e release ]; do sleep 0.01; done'}
";

#[test]
fn a_second_run_is_refused_while_the_first_is_live() {
    let mut first = Test::new().pipeline(HOLDS).args(["run"]).spawn();
    first.wait_for_pid("hold.pid");
    let live: RunView = parse_json(&first.murphy(["status", "--json"]).run().stdout);
    assert_eq!(live.status, "running");
    let busy = format!("run {} (pid {}) is still running", live.run_id, first.pid());

    for command in [
        &["run"][..],
        &["resume"],
        &["run", "--force"],
        &["cache", "gc"],
    ] {
        let refused = first.murphy(command.iter().copied()).code(75).run();
        assert!(
            refused.stderr.starts_with("error: ") && refused.stderr.contains(&busy),
            "murphy {command:?}: {}",
            refused.stderr
        );
    }
    let runs: Vec<RunView> = parse_json(&first.murphy(["runs", "--json"]).run().stdout);
    assert_eq!(runs.len(), 1, "a refused run records nothing");

    fs::write(first.path().join("release"), "").unwrap();
    let out = first.wait();
    assert_eq!(out.status().status, "succeeded");
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.hold"), 2);
    let runs = out.runs();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.status == "succeeded"), "{runs:#?}");
}

#[test]
fn a_killed_run_does_not_block_the_next_and_shows_as_killed() {
    let mut murphy = Test::new().pipeline(HOLDS).args(["run"]).spawn();
    let stage = murphy.wait_for_pid("hold.pid");
    let _group = GroupGuard(stage);
    murphy.signal(libc::SIGKILL);
    let out = murphy.wait_killed();
    // The stage outlives a murphy killed by -9; a new `run` (unlike `resume`) leaves it be.
    // SAFETY: kill only sends a signal, to the process group of this test's stage.
    unsafe { libc::killpg(stage, libc::SIGKILL) };
    let killed = out.status();
    assert_eq!(killed.status, "killed");
    assert_eq!(killed.finished_at, None);
    assert_eq!(killed.stage("hold").state, "interrupted");
    let table = out.murphy(["status"]).run().stdout;
    assert!(table.contains("killed"), "{table}");

    out.write("release", "");
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.hold"), 2);
    let runs = out.runs();
    let states: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r.run_id.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].1, "succeeded");
    assert_eq!(states[1], (killed.run_id.as_str(), "killed"));
    assert_gone(stage);
}

/// The killed attempt of `s2` was for other inputs; with them put back, resume finds a
/// checkpoint for `s2` and restores it, but the attempt's processes still run and go on to
/// write `s2`'s outputs.
#[test]
fn resume_kills_the_leftovers_of_a_stage_it_restores_from_a_checkpoint() {
    let out = killable().write("go", "").args(["run"]).run();
    out.write("s2.txt", "other\n");
    fs::remove_file(out.file("go")).unwrap();
    let mut murphy = out.murphy(["run"]).spawn();
    let sleeper = murphy.wait_for_pid("s2.pid");
    murphy.signal(libc::SIGKILL);
    murphy.wait_killed();
    let _group = GroupGuard(read_pid(&out, "s2.pgid"));

    out.write("s2.txt", "two\n");
    out.write("go", "");
    out.murphy(["resume"]).run();
    assert_eq!(out.status().stage("s2").state, "cached");
    assert_gone(sleeper);
}

/// `murphy run --force` dies after `s2` ran; the resumed run must still force what was left.
#[test]
fn resume_of_a_forced_run_still_forces_what_it_had_not_finished() {
    let out = killable().write("go", "").args(["run"]).run();
    out.murphy(["run", "--force"])
        .env("MURPHY_CRASH_AT", "stage-exited:s2")
        .run_killed();
    assert_eq!(counts(&out, KILLABLE_STAGES), [2, 2, 1]);
    out.murphy(["resume"]).run();
    let run = out.status();
    assert_eq!(run.stage("s2").why(), "forced");
    assert_eq!(run.stage("s3").why(), "forced");
    assert_eq!(counts(&out, KILLABLE_STAGES), [2, 3, 2]);
}

/// `murphy run s1` dies tearing its first journal line, which names the stages it runs.
#[test]
fn resume_after_a_torn_run_started_runs_only_the_selected_stages() {
    let out = killable()
        .write("go", "")
        .env("MURPHY_CRASH_AT", "journal-append:1")
        .args(["run", "s1"])
        .run_killed();
    out.murphy(["resume"]).run();
    assert_eq!(counts(&out, KILLABLE_STAGES), [1, 0, 0]);
    assert_eq!(out.status().stage_names(), ["s1"]);
}

/// `s2` was killed after its checkpoint was complete; resume restores it. `status` must not
/// then give a reason why it ran.
#[test]
fn a_stage_restored_on_resume_has_no_why() {
    let out = crash_at("record-written:s2");
    assert_eq!(out.status().stage("s2").why(), "no checkpoint yet");
    out.murphy(["resume"]).run();
    let run = out.status();
    let s2 = run.stage("s2");
    assert_eq!(s2.state, "cached");
    assert_eq!(s2.why, None, "{s2:?}");
}

#[test]
fn a_run_whose_stage_left_the_pipeline_is_not_resumed() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build: {run: echo x >> ran.build}
              check: {needs: [build], run: echo x >> ran.check; false}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    let failed = out.status();
    out.pipeline(
        "
        version: 1
        stages:
          build: {run: echo x >> ran.build}
        ",
    );

    let err = out.murphy(["resume"]).code(2).run().stderr;
    assert_eq!(
        err,
        format!(
            "error: stage `check` of run {} is no longer in `pipeline.yml`; start a new run instead\n",
            failed.run_id
        )
    );
    assert_eq!(counts(&out, ["build", "check"]), [1, 1]);
}
