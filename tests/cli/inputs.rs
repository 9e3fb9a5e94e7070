//! Inputs: what git ignores is not an input, patterns that match nothing and stages that
//! change their own inputs are warned about, and a run says how many files it read again.
//!
//! Every stage appends a line to `ran.<stage>`, a file outside its inputs, so "it ran" and
//! "it did not run" are counted, never timed.

use crate::support::{Output, Test, parse_json};

/// `check` reads everything below `src/` and the ignored `local.env`, named literally.
const CHECK: &str = "
    version: 1
    stages:
      check:
        inputs: [src, 'lib/**/*.txt', local.env]
        run: echo x >> ran.check
";

#[test]
fn inputs_skip_what_git_ignores_at_every_level() {
    let out = Test::new()
        .git_init()
        .pipeline(CHECK)
        .write(".gitignore", "*.log\nlocal.env\nran.*\n")
        .write("src/gen/.gitignore", "*.tmp\n")
        .write(
            ".git/info/exclude",
            "/.home/\n/out/\n/remote.git/\nscratch/\n",
        )
        // The global excludes file: `$XDG_CONFIG_HOME/git/ignore`, the test's `.home`.
        .write(".home/git/ignore", "*.swp\n")
        .write("src/a.txt", "a\n")
        .write("src/gen/b.txt", "b\n")
        .write("src/debug.log", "1\n")
        .write("src/gen/c.tmp", "1\n")
        .write("src/scratch/d.txt", "1\n")
        .write("src/.a.txt.swp", "1\n")
        .write("lib/e.txt", "e\n")
        .write("lib/f.log", "1\n")
        .write("local.env", "KEY=1\n")
        .args(["run"])
        .run();
    assert_eq!(out.count("ran.check"), 1);

    // What git ignores may change freely.
    out.write("src/debug.log", "2\n");
    out.write("src/gen/c.tmp", "2\n");
    out.write("src/scratch/d.txt", "2\n");
    out.write("src/.a.txt.swp", "2\n");
    out.write("src/scratch/new.txt", "2\n");
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.check"), 1, "an ignored file was an input");
    assert_eq!(out.status().stage("check").state, "cached");

    // A file named literally counts though git ignores it.
    out.write("local.env", "KEY=2\n");
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.check"), 2);
    assert_eq!(
        out.status().stage("check").why(),
        "input `local.env` changed"
    );

    // Files the rules do not cover still count, below a directory and through a glob.
    out.write("src/gen/b.txt", "b2\n");
    out.write("lib/e.txt", "e2\n");
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.check"), 3);
    assert_eq!(
        out.status().stage("check").why(),
        "input `lib/e.txt` changed, input `src/gen/b.txt` changed"
    );
}

#[test]
fn outside_a_repository_gitignore_files_mean_nothing() {
    let out = Test::new()
        .pipeline(CHECK)
        .write(".gitignore", "*.log\n")
        .write("src/debug.log", "1\n")
        .write("local.env", "1\n")
        .args(["run"])
        .run();
    out.write("src/debug.log", "2\n");
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.check"), 2);
    assert_eq!(
        out.status().stage("check").why(),
        "input `src/debug.log` changed"
    );
}

#[test]
fn a_pattern_that_matches_nothing_warns_in_run_and_validate() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              check:
                inputs: ['src/**/*.rs', 'src/**/*.py', docs, only.log]
                run: echo x >> ran.check
            ",
        )
        .write(".gitignore", "*.log\nran.*\n")
        .write("src/main.rs", "fn main() {}\n")
        .write("only.log", "1\n")
        .args(["validate"])
        .run();
    let expected = [
        "stage `check`: `inputs` pattern `src/**/*.py` matches no file (files git ignores do not count)",
        "stage `check`: `inputs` pattern `docs` matches no file",
    ];
    for warning in expected {
        assert!(out.stderr.contains(warning), "{warning}\n{}", out.stderr);
    }
    assert!(
        out.stderr.contains("pipeline.yml: stage `check`"),
        "{}",
        out.stderr
    );
    // A literal name counts though git ignores it; a pattern that matched is not named.
    assert!(!out.stderr.contains("only.log"), "{}", out.stderr);
    assert!(!out.stderr.contains("*.rs"), "{}", out.stderr);
    assert!(out.stdout.contains("valid, 1 stage"), "{}", out.stdout);

    let run = out.murphy(["run"]).run();
    for warning in expected {
        assert!(run.stderr.contains(warning), "{warning}\n{}", run.stderr);
    }
    assert_eq!(out.count("ran.check"), 1);
}

/// A file's times come from a clock a tick behind: an edit just after a run could carry a
/// time inside it. The test's own edits wait past that, as an edit by hand would.
fn after_a_tick() {
    std::thread::sleep(std::time::Duration::from_millis(20));
}

/// The warning comes with the run that the writes make run the stage again: the one after.
#[test]
fn a_stage_that_changes_its_own_inputs_is_told_how_to_fix_it() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              test:
                inputs: [tests]
                run: >-
                  echo x >> ran.test;
                  mkdir -p tests/__pycache__;
                  for i in 1 2 3 4 5 6; do date +%N > tests/__pycache__/t$i.pyc; done
            ",
        )
        .write(".gitignore", "ran.*\n")
        .write("tests/t1.py", "assert True\n")
        .args(["run"])
        .run();
    assert!(
        !out.stderr.contains("changed its own inputs"),
        "{}",
        out.stderr
    );

    // It runs again, as its writes made it, and says why.
    let again = out.murphy(["run"]).run();
    assert_eq!(out.count("ran.test"), 2);
    let warning = "stage `test` changed its own inputs when it last ran: \
        `tests/__pycache__/t1.pyc`, `tests/__pycache__/t2.pyc`, `tests/__pycache__/t3.pyc`, \
        `tests/__pycache__/t4.pyc`, `tests/__pycache__/t5.pyc`, and 1 more; its checkpoint \
        cannot match, so it runs again. Add what it writes to `.gitignore`";
    assert!(again.stderr.contains(warning), "{}", again.stderr);

    // The fix the warning names: ignored, the cache files are no input, and the inputs are
    // again those of the first run, whose checkpoint now matches.
    after_a_tick();
    out.write(".gitignore", "ran.*\n__pycache__/\n");
    let fixed = out.murphy(["run"]).run();
    assert!(
        !fixed.stderr.contains("changed its own inputs"),
        "{}",
        fixed.stderr
    );
    assert_eq!(out.count("ran.test"), 2);
    assert_eq!(out.status().stage("test").state, "cached");
}

/// A write into a file that was an input, a file added where the inputs are walked, and a
/// file named literally that did not exist are each named by the next run, and only they:
/// `step.sh`, changed by the test between the runs, is an input that changed too, but not
/// while the stage ran.
#[test]
fn a_stage_that_writes_into_an_input_or_adds_one_is_told_which() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              gen:
                inputs: [data/**, VERSION, step.sh]
                run: sh step.sh
            ",
        )
        .write(".gitignore", "ran.*\n")
        .write("data/a.txt", "a\n")
        .write("data/deep/b.txt", "b\n")
        .write("step.sh", "echo x >> ran.gen\n")
        .args(["run"])
        .run();
    assert!(
        !out.stderr.contains("changed its own inputs"),
        "{}",
        out.stderr
    );
    let mut runs = 1;
    for (script, named) in [
        // In place.
        ("echo more >> data/deep/b.txt", "`data/deep/b.txt`"),
        // A new file in a walked folder.
        ("echo c > data/deep/c.txt", "`data/deep/c.txt`"),
        // A file named literally that did not exist.
        ("echo 1.0 > VERSION", "`VERSION`"),
    ] {
        after_a_tick();
        out.write("step.sh", &format!("echo x >> ran.gen; {script}\n"));
        let wrote = out.murphy(["run"]).run();
        assert!(
            !wrote.stderr.contains("changed its own inputs"),
            "{}",
            wrote.stderr
        );
        after_a_tick();
        out.write("step.sh", "echo x >> ran.gen\n");
        let next = out.murphy(["run"]).run();
        runs += 2;
        let warning = format!("stage `gen` changed its own inputs when it last ran: {named};");
        assert!(next.stderr.contains(&warning), "{warning}\n{}", next.stderr);
    }
    assert_eq!(out.count("ran.gen"), runs);
    // A run that changed nothing of its own is not warned about.
    after_a_tick();
    out.write("data/a.txt", "edited by hand\n");
    let edited = out.murphy(["run"]).run();
    assert!(
        !edited.stderr.contains("changed its own inputs"),
        "{}",
        edited.stderr
    );
}

#[test]
fn a_run_records_how_many_files_it_read_again() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              check:
                inputs: [src]
                run: echo x >> ran.check
            ",
        )
        .write("src/a.txt", "a\n")
        .write("src/b.txt", "b\n")
        .write("src/c.txt", "c\n");
    // The stat cache trusts only files last changed 100 ms (2 s on whole-second file systems)
    // before it read them.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = out.args(["run"]).run();
    let rehashed = |out: &Output| {
        let status: serde_json::Value = parse_json(&out.murphy(["status", "--json"]).run().stdout);
        status["rehashed"].clone()
    };
    // Each read once for the fingerprint; after the stage ran, the cache vouched for them.
    assert_eq!(rehashed(&out), 3);
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.check"), 1);
    assert_eq!(rehashed(&out), 0);
    // Touched, not changed: read again, and still cached.
    let file = std::fs::File::options()
        .write(true)
        .open(out.file("src/b.txt"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.check"), 1);
    assert_eq!(rehashed(&out), 1);
}

/// Past the racy window, a run keeps each walk of an input pattern and the next one reuses
/// it while no folder it listed and no ignore file it read has moved: each change below must
/// still be seen, by a run that follows a run that kept the walk.
#[test]
fn a_kept_walk_sees_every_change_to_folders_and_ignore_files() {
    let out = Test::new()
        .git_init()
        .pipeline(CHECK)
        .write(".gitignore", "*.log\nlocal.env\nran.*\n")
        .write("src/gen/.gitignore", "*.tmp\n")
        .write(".git/info/exclude", "/.home/\n")
        .write(".home/git/ignore", "*.swp\n")
        .write("src/a.txt", "a\n")
        .write("src/gen/b.txt", "b\n")
        .write("lib/e.txt", "e\n")
        .write("lib/deep/f.txt", "f\n")
        .write("lib/deep/g.txt", "g\n")
        .write("local.env", "KEY=1\n")
        .args(["run"])
        .run();
    assert_eq!(out.count("ran.check"), 1);
    let mut runs = 1;
    let mut check = |change: &dyn Fn(), why: &str| {
        // Settled, then walked and kept by a run that runs nothing.
        std::thread::sleep(std::time::Duration::from_millis(150));
        out.murphy(["run"]).run();
        assert_eq!(out.count("ran.check"), runs, "before: {why}");
        change();
        out.murphy(["run"]).run();
        runs += 1;
        assert_eq!(out.count("ran.check"), runs, "{why}");
        assert_eq!(out.status().stage("check").why(), why);
    };
    check(
        &|| out.write("src/gen/new.txt", "n\n"),
        "input `src/gen/new.txt` was added",
    );
    check(
        &|| out.write("src/gen/.gitignore", "*.tmp\nb.txt\n"),
        "input `src/gen/.gitignore` changed, input `src/gen/b.txt` was removed",
    );
    check(
        &|| out.write(".gitignore", "*.log\nlocal.env\nran.*\nf.txt\n"),
        "input `lib/deep/f.txt` was removed",
    );
    check(
        &|| out.write(".git/info/exclude", "/.home/\nnew.txt\n"),
        "input `src/gen/new.txt` was removed",
    );
    check(
        &|| out.write(".home/git/ignore", "*.swp\na.txt\n"),
        "input `src/a.txt` was removed",
    );
    check(
        &|| std::fs::rename(out.file("lib/deep"), out.file("lib/deeper")).unwrap(),
        "input `lib/deeper/g.txt` was added, input `lib/deep/g.txt` was removed",
    );
    check(
        &|| std::fs::remove_file(out.file("lib/e.txt")).unwrap(),
        "input `lib/e.txt` was removed",
    );
}
