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
    let warning = "stage `test` changed its own inputs: `tests/__pycache__/t1.pyc`, \
        `tests/__pycache__/t2.pyc`, `tests/__pycache__/t3.pyc`, `tests/__pycache__/t4.pyc`, \
        `tests/__pycache__/t5.pyc`, and 1 more; its checkpoint will not match and it will run \
        again next time. Add what it writes to `.gitignore`";
    assert!(out.stderr.contains(warning), "{}", out.stderr);

    // As warned: it runs again, and changes them again.
    let again = out.murphy(["run"]).run();
    assert_eq!(out.count("ran.test"), 2);
    assert!(
        again.stderr.contains("changed its own inputs"),
        "{}",
        again.stderr
    );

    // The fix the warning names: ignored, the cache files are no input, and the inputs are
    // again those of the first run, whose checkpoint now matches.
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

/// Writes into files that were inputs create nothing where the inputs live: found through the
/// files' own times, without walking the inputs again; a new file is found by the walk its
/// folder's moved times call for. Each waits past the window in which a folder's times cannot
/// yet vouch for it, so that the cheaper path is the one taken.
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
        .args(["validate"])
        .run();
    let settle = || std::thread::sleep(std::time::Duration::from_millis(250));
    settle();
    let first = out.murphy(["run"]).run();
    assert!(
        !first.stderr.contains("changed its own inputs"),
        "{}",
        first.stderr
    );

    for (script, named) in [
        // In place: no folder moves.
        ("echo more >> data/deep/b.txt", "`data/deep/b.txt`"),
        // A new file in a walked folder.
        ("echo c > data/deep/c.txt", "`data/deep/c.txt`"),
        // A file named literally that did not exist.
        ("echo 1.0 > VERSION", "`VERSION`"),
    ] {
        out.write("step.sh", &format!("echo x >> ran.gen; {script}\n"));
        settle();
        let run = out.murphy(["run"]).run();
        let warning = format!("stage `gen` changed its own inputs: {named};");
        assert!(run.stderr.contains(&warning), "{warning}\n{}", run.stderr);
    }
    assert_eq!(out.count("ran.gen"), 4);
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
