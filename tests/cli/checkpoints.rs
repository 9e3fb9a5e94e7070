//! Checkpoints: what makes a stage run again and what does not, restoring outputs, the store
//! (damage, `cache stats`, `cache gc`), `--force`, `--from` and `cache:`.
//!
//! Every stage appends a line to `ran.<stage>`, a file outside its declared inputs and
//! outputs, so "it ran" and "it did not run" are counted, never timed.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::support::{CacheStats, Output, Test};

/// `build` -> `test` -> `package`, and `docs` on its own.
const CHAIN: &str = "
    version: 1
    stages:
      build:
        inputs: [src/a.txt]
        run: echo x >> ran.build; tr a-z A-Z < src/a.txt > build.out
        outputs: [build.out]
      test:
        needs: [build]
        env: {FIRST: one, SECOND: two}
        run: echo x >> ran.test; cat build.out build.out > test.out
        outputs: [test.out]
      package:
        needs: [test]
        run: echo x >> ran.package; wc -c < test.out > package.out
        outputs: [package.out]
      docs:
        inputs: [src/d.txt]
        run: echo x >> ran.docs; cp src/d.txt docs.out
        outputs: [docs.out]
";

/// `CHAIN` with the top-level keys, the stages, each stage's keys and the `env` keys in
/// another order.
const CHAIN_REORDERED: &str = "
    stages:
      docs:
        outputs: [docs.out]
        run: echo x >> ran.docs; cp src/d.txt docs.out
        inputs: [src/d.txt]
      package:
        outputs: [package.out]
        run: echo x >> ran.package; wc -c < test.out > package.out
        needs: [test]
      test:
        outputs: [test.out]
        run: echo x >> ran.test; cat build.out build.out > test.out
        env: {SECOND: two, FIRST: one}
        needs: [build]
      build:
        outputs: [build.out]
        run: echo x >> ran.build; tr a-z A-Z < src/a.txt > build.out
        inputs: [src/a.txt]
    version: 1
";

const CHAIN_STAGES: [&str; 4] = ["build", "test", "package", "docs"];

fn chain() -> Output {
    Test::new()
        .pipeline(CHAIN)
        .write("src/a.txt", "abc\n")
        .write("src/d.txt", "docs\n")
        .args(["run"])
        .run()
}

/// How often each stage ran so far, in the order given.
fn counts<const N: usize>(out: &Output, stages: [&str; N]) -> [usize; N] {
    stages.map(|stage| out.count(&format!("ran.{stage}")))
}

fn states(out: &Output) -> Vec<(String, String)> {
    out.status()
        .stages
        .into_iter()
        .map(|s| (s.name, s.state))
        .collect()
}

fn all_cached(out: &Output) -> bool {
    states(out).iter().all(|(_, state)| state == "cached")
}

#[test]
fn an_unchanged_pipeline_runs_nothing_the_second_time() {
    let out = chain();
    assert_eq!(counts(&out, CHAIN_STAGES), [1, 1, 1, 1]);
    let first = out.status();
    assert!(first.stages.iter().all(|s| s.state == "succeeded"));
    assert_eq!(first.stage("build").why(), "no checkpoint yet");

    out.murphy(["run"]).run();
    assert_eq!(counts(&out, CHAIN_STAGES), [1, 1, 1, 1]);
    assert!(all_cached(&out), "{:?}", states(&out));
    let second = out.status();
    assert_ne!(second.run_id, first.run_id);
    for name in CHAIN_STAGES {
        // Same fingerprint, same outputs as the run that made the checkpoint.
        let (before, after) = (first.stage(name), second.stage(name));
        assert_eq!(after.fingerprint, before.fingerprint, "{name}");
        assert_eq!(after.output_digest, before.output_digest, "{name}");
    }
}

#[test]
fn an_edited_input_reruns_its_stage_and_what_depends_on_it() {
    let out = chain();
    out.write("src/a.txt", "abcd\n");
    out.murphy(["run"]).run();
    assert_eq!(counts(&out, CHAIN_STAGES), [2, 2, 2, 1]);
    assert_eq!(out.read("build.out"), "ABCD\n");
    assert_eq!(out.read("package.out").trim(), "10");

    let run = out.status();
    let why = |name: &str| {
        (
            run.stage(name).state.clone(),
            run.stage(name).why().to_owned(),
        )
    };
    assert_eq!(
        why("build"),
        ("succeeded".into(), "input `src/a.txt` changed".into())
    );
    assert_eq!(
        why("test"),
        ("succeeded".into(), "upstream `build` changed".into())
    );
    assert_eq!(
        why("package"),
        ("succeeded".into(), "upstream `test` changed".into())
    );
    assert_eq!(why("docs"), ("cached".into(), String::new()));
}

/// A stage is re-run because its inputs changed, but makes the same outputs: the stages after
/// it see the same upstream digest and stay cached.
#[test]
fn a_rerun_that_makes_the_same_outputs_leaves_its_dependents_cached() {
    let out = chain();
    out.write("src/a.txt", "ABC\n");
    out.murphy(["run"]).run();
    assert_eq!(counts(&out, CHAIN_STAGES), [2, 1, 1, 1]);
    let run = out.status();
    assert_eq!(run.stage("build").state, "succeeded");
    for name in ["test", "package", "docs"] {
        assert_eq!(run.stage(name).state, "cached", "{name}");
    }
}

#[test]
fn reordering_yaml_keys_reruns_nothing() {
    let out = chain();
    out.pipeline(CHAIN_REORDERED);
    out.murphy(["run"]).run();
    assert_eq!(counts(&out, CHAIN_STAGES), [1, 1, 1, 1]);
    assert!(all_cached(&out), "{:?}", states(&out));
}

/// One stage that reads a stage `env` value, a `pass_env` variable and an input; and one
/// that reads none of them (a pipeline-level `pass_env` would reach it too).
fn env_pipeline(greeting: &str, command: &str) -> String {
    format!(
        r#"
        version: 1
        stages:
          greet:
            env: {{GREETING: {greeting}}}
            pass_env: [FLAVOUR]
            inputs: [in.txt]
            run: echo x >> ran.greet; {command} "$GREETING $FLAVOUR" > greet.out
            outputs: [greet.out]
          other:
            outputs: [other.out]
            run: echo x >> ran.other; echo other > other.out
        "#
    )
}

fn env_test(pipeline: &str) -> Output {
    Test::new()
        .pipeline(pipeline)
        .write("in.txt", "input\n")
        .env("FLAVOUR", "vanilla")
        .env("TERM", "xterm")
        .env("NOT_PASSED", "one")
        .args(["run"])
        .run()
}

#[test]
fn env_commands_and_pass_env_values_move_the_fingerprint() {
    let out = env_test(&env_pipeline("hello", "echo"));
    assert_eq!(counts(&out, ["greet", "other"]), [1, 1]);
    assert_eq!(out.read("greet.out"), "hello vanilla\n");

    // A `pass_env` variable's value, in murphy's own environment.
    out.murphy(["run"])
        .env("FLAVOUR", "chocolate")
        .env("TERM", "xterm")
        .run();
    assert_eq!(counts(&out, ["greet", "other"]), [2, 1]);
    assert_eq!(out.read("greet.out"), "hello chocolate\n");
    let run = out.status();
    assert_eq!(run.stage("greet").why(), "env `FLAVOUR` changed");
    assert_eq!(run.stage("other").state, "cached");

    // A stage `env` value.
    out.pipeline(&env_pipeline("goodbye", "echo"));
    out.murphy(["run"])
        .env("FLAVOUR", "chocolate")
        .env("TERM", "xterm")
        .run();
    assert_eq!(counts(&out, ["greet", "other"]), [3, 1]);
    assert_eq!(out.read("greet.out"), "goodbye chocolate\n");
    assert_eq!(out.status().stage("greet").why(), "env `GREETING` changed");

    // The command.
    out.pipeline(&env_pipeline("goodbye", "printf '%s\\n'"));
    out.murphy(["run"])
        .env("FLAVOUR", "chocolate")
        .env("TERM", "xterm")
        .run();
    assert_eq!(counts(&out, ["greet", "other"]), [4, 1]);
    assert_eq!(out.status().stage("greet").why(), "its commands changed");
}

#[test]
fn always_passed_variables_unlisted_variables_and_mtimes_do_not() {
    let out = env_test(&env_pipeline("hello", "echo"));
    assert_eq!(counts(&out, ["greet", "other"]), [1, 1]);

    // `TERM` always reaches stages but is no part of a fingerprint; `NOT_PASSED` never
    // reaches them at all.
    out.murphy(["run"])
        .env("FLAVOUR", "vanilla")
        .env("TERM", "dumb")
        .env("NOT_PASSED", "two")
        .run();
    assert_eq!(counts(&out, ["greet", "other"]), [1, 1]);
    assert!(all_cached(&out), "{:?}", states(&out));

    // A new mtime (and so a new ctime) on an input whose bytes are the same.
    let input = fs::File::options()
        .write(true)
        .open(out.file("in.txt"))
        .unwrap();
    let before = input.metadata().unwrap().modified().unwrap();
    input
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    assert_ne!(input.metadata().unwrap().modified().unwrap(), before);
    drop(input);
    out.murphy(["run"])
        .env("FLAVOUR", "vanilla")
        .env("TERM", "dumb")
        .run();
    assert_eq!(counts(&out, ["greet", "other"]), [1, 1]);
    assert!(all_cached(&out), "{:?}", states(&out));
}

/// What a path holds, for comparing workspaces: a file's mode and bytes, a link's target.
fn describe(path: &Path) -> String {
    let meta = fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
    let mode = meta.mode() & 0o7777;
    if meta.file_type().is_symlink() {
        format!("link -> {}", fs::read_link(path).unwrap().display())
    } else if meta.is_dir() {
        let mut names: Vec<String> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        format!("dir {mode:o} {names:?}")
    } else {
        format!("file {mode:o} {:?}", fs::read(path).unwrap())
    }
}

const OUTPUT_PATHS: [&str; 6] = [
    "bin/tool",
    "dist",
    "dist/sub",
    "dist/sub/nested.txt",
    "dist/link",
    "dist/top.txt",
];

fn describe_outputs(out: &Output) -> Vec<String> {
    OUTPUT_PATHS.map(|p| describe(&out.file(p))).to_vec()
}

const MAKES_A_TREE: &str = "
    version: 1
    stages:
      build:
        outputs: [bin/tool, dist]
        run:
          - echo x >> ran.build
          - mkdir -p bin dist/sub
          - printf 'echo tool\\n' > bin/tool && chmod 755 bin/tool
          - printf 'nested' > dist/sub/nested.txt && chmod 640 dist/sub/nested.txt
          - printf 'top' > dist/top.txt
          - ln -s sub/nested.txt dist/link
";

#[test]
fn deleted_outputs_are_restored_without_running_the_stage() {
    let out = Test::new().pipeline(MAKES_A_TREE).args(["run"]).run();
    let made = describe_outputs(&out);
    assert_eq!(made[0], format!("file 755 {:?}", b"echo tool\n"));
    assert_eq!(made[4], "link -> sub/nested.txt");

    fs::remove_file(out.file("bin/tool")).unwrap();
    fs::remove_dir_all(out.file("dist")).unwrap();
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.build"), 1);
    assert_eq!(out.status().stage("build").state, "cached");
    assert_eq!(describe_outputs(&out), made);

    // Changed outputs are put back too: other bytes of the same size, another mode, a link
    // that points elsewhere.
    out.write("bin/tool", "echo tooL\n");
    fs::set_permissions(out.file("bin/tool"), fs::Permissions::from_mode(0o644)).unwrap();
    out.write("dist/top.txt", "TOP");
    fs::remove_file(out.file("dist/link")).unwrap();
    std::os::unix::fs::symlink("top.txt", out.file("dist/link")).unwrap();
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.build"), 1);
    assert_eq!(out.status().stage("build").state, "cached");
    assert_eq!(describe_outputs(&out), made);
}

#[test]
fn a_declared_output_missing_after_exit_0_fails_the_stage_and_records_nothing() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build:
                run: echo x >> ran.build; if [ -e fixed ]; then echo ok > out.txt; fi
                outputs: [out.txt]
              after: {needs: [build], run: echo x >> ran.after}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    let message = "declared output `out.txt` was not produced";
    assert!(out.stderr.contains(message), "{}", out.stderr);
    let run = out.status();
    assert_eq!(run.status, "failed");
    let build = run.stage("build");
    assert_eq!(build.state, "failed");
    assert!(build.reason().contains(message), "{build:?}");
    assert_eq!(run.stage("after").state, "skipped");
    assert_eq!(counts(&out, ["build", "after"]), [1, 0]);
    assert_eq!(
        out.cache_stats(),
        CacheStats {
            objects: 0,
            bytes: 0,
            records: 0
        }
    );

    // `fixed` is no input: had anything been recorded, the stage would now be cached.
    out.write("fixed", "");
    out.murphy(["run"]).run();
    assert_eq!(counts(&out, ["build", "after"]), [2, 1]);
    assert_eq!(out.status().stage("build").state, "succeeded");
    assert_eq!(out.read("out.txt"), "ok\n");
}

const ONE_STAGE: &str = "
    version: 1
    stages:
      build:
        inputs: [in.txt]
        run: echo x >> ran.build; tr a-z A-Z < in.txt > out.txt
        outputs: [out.txt]
";

fn one_stage() -> Output {
    Test::new()
        .pipeline(ONE_STAGE)
        .write("in.txt", "some bytes to keep\n")
        .args(["run"])
        .run()
}

/// Every file below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The one file in a store folder (`objects` or `records`).
fn only_file(out: &Output, folder: &str) -> PathBuf {
    let files = files_below(&out.file(&format!(".murphy/store/{folder}")));
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

fn flip_a_byte(path: &Path) {
    let mut mode = fs::metadata(path).unwrap().permissions();
    mode.set_mode(mode.mode() | 0o200);
    fs::set_permissions(path, mode).unwrap();
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// Damages the store with `damage`, removes the workspace's output, and checks that the next
/// run runs the stage again and succeeds, and that the run after that is cached.
fn damaged_store_reruns(damage: impl FnOnce(&Output)) {
    let out = one_stage();
    let object = only_file(&out, "objects");
    assert_eq!(
        object.file_name().unwrap().to_str().unwrap(),
        blake3::hash(b"SOME BYTES TO KEEP\n").to_hex().as_str()
    );
    assert_eq!(
        fs::metadata(&object).unwrap().permissions().mode() & 0o777,
        0o444,
        "objects are read-only"
    );
    damage(&out);
    fs::remove_file(out.file("out.txt")).unwrap();

    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.build"), 2);
    let build = out.status().stage("build").why().to_owned();
    assert_eq!(build, "its checkpoint was missing or damaged");
    assert_eq!(out.read("out.txt"), "SOME BYTES TO KEEP\n");

    // The run stored a sound checkpoint again.
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.build"), 2);
    assert_eq!(out.status().stage("build").state, "cached");
    assert_eq!(out.read("out.txt"), "SOME BYTES TO KEEP\n");
    assert_eq!(
        fs::read(&object).unwrap(),
        b"SOME BYTES TO KEEP\n",
        "the damaged object was replaced"
    );
}

#[test]
fn a_corrupted_object_is_detected_and_the_stage_reruns() {
    damaged_store_reruns(|out| flip_a_byte(&only_file(out, "objects")));
}

#[test]
fn a_deleted_object_is_detected_and_the_stage_reruns() {
    damaged_store_reruns(|out| fs::remove_file(only_file(out, "objects")).unwrap());
}

#[test]
fn a_corrupted_record_is_detected_and_the_stage_reruns() {
    damaged_store_reruns(|out| flip_a_byte(&only_file(out, "records")));
}

/// A corrupted object must not be copied into the workspace when the output is intact there
/// either: the stage runs again, it is not "restored" from bad bytes.
#[test]
fn a_corrupted_object_is_not_restored_over_a_good_output() {
    let out = one_stage();
    flip_a_byte(&only_file(&out, "objects"));
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.build"), 2);
    assert_eq!(out.read("out.txt"), "SOME BYTES TO KEEP\n");
}

#[test]
fn force_reruns_every_stage() {
    let out = chain();
    out.murphy(["run", "--force"]).run();
    assert_eq!(counts(&out, CHAIN_STAGES), [2, 2, 2, 2]);
    let run = out.status();
    for name in CHAIN_STAGES {
        let stage = run.stage(name);
        assert_eq!((stage.state.as_str(), stage.why()), ("succeeded", "forced"));
    }
}

#[test]
fn force_stage_reruns_only_that_stage() {
    let out = chain();
    out.murphy(["run", "--force=test"]).run();
    // `test` makes the same outputs again, so `package` keeps its checkpoint.
    assert_eq!(counts(&out, CHAIN_STAGES), [1, 2, 1, 1]);
    let run = out.status();
    assert_eq!(run.stage("test").why(), "forced");
    for name in ["build", "package", "docs"] {
        assert_eq!(run.stage(name).state, "cached", "{name}");
    }

    // Repeatable.
    out.murphy(["run", "--force=build", "--force=docs"]).run();
    assert_eq!(counts(&out, CHAIN_STAGES), [2, 2, 1, 2]);
}

#[test]
fn from_takes_the_stages_before_it_from_their_checkpoints() {
    let out = chain();
    // `build`'s input changed, but `--from test` takes `build` from its newest checkpoint.
    out.write("src/a.txt", "xyz\n");
    out.murphy(["run", "--from", "test"]).run();
    assert_eq!(counts(&out, CHAIN_STAGES), [1, 2, 1, 1]);
    assert_eq!(out.read("build.out"), "ABC\n", "the checkpoint's output");
    let run = out.status();
    let build = run.stage("build");
    assert_eq!(build.state, "cached");
    assert!(
        build
            .reason()
            .contains("restored from its newest checkpoint"),
        "{build:?}"
    );
    assert_eq!(run.stage("test").why(), "forced");
}

#[test]
fn from_runs_the_stages_after_it_that_changed() {
    let out = chain();
    out.murphy(["run", "--from", "test", "package"]).run();
    // `--from` forces the stage it names; the stages after it follow their fingerprints.
    assert_eq!(counts(&out, CHAIN_STAGES), [1, 2, 1, 1]);
    let run = out.status();
    assert_eq!(run.stage_names(), ["build", "test", "package"]);
    assert_eq!(run.stage("package").state, "cached");

    // When the restarted stage makes other outputs, the stages after it run.
    out.pipeline(&CHAIN.replace("cat build.out build.out", "cat build.out"));
    out.murphy(["run", "--from", "test"]).run();
    assert_eq!(counts(&out, CHAIN_STAGES), [1, 3, 2, 1]);
    assert_eq!(
        out.status().stage("package").why(),
        "upstream `test` changed"
    );
}

#[test]
fn from_without_a_checkpoint_is_a_usage_error_naming_the_stage() {
    let out = Test::new()
        .pipeline(CHAIN)
        .write("src/a.txt", "abc\n")
        .write("src/d.txt", "docs\n")
        .args(["run", "--from", "package"])
        .code(2)
        .run();
    assert!(
        out.stderr.starts_with(
            "error: stage `build` has no checkpoint, so the run cannot start at `package`"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(counts(&out, CHAIN_STAGES), [0, 0, 0, 0]);
    assert!(!out.file(".murphy/runs").exists(), "no run is recorded");

    // With `build` checkpointed, `test` is still missing one.
    out.murphy(["run", "build"]).run();
    let err = out
        .murphy(["run", "--from", "package"])
        .code(2)
        .run()
        .stderr;
    assert!(
        err.starts_with("error: stage `test` has no checkpoint"),
        "{err}"
    );
    assert_eq!(counts(&out, CHAIN_STAGES), [1, 0, 0, 0]);
}

#[test]
fn cache_true_caches_a_plain_stage_and_cache_false_never_caches() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              plain: {run: echo x >> ran.plain}
              pinned: {cache: true, run: echo x >> ran.pinned}
              never:
                cache: false
                inputs: [in.txt]
                run: echo x >> ran.never; cp in.txt never.out
                outputs: [never.out]
            ",
        )
        .write("in.txt", "in\n")
        .args(["run"])
        .run();
    assert_eq!(counts(&out, ["plain", "pinned", "never"]), [1, 1, 1]);
    out.murphy(["run"]).run();
    out.murphy(["run"]).run();
    assert_eq!(counts(&out, ["plain", "pinned", "never"]), [3, 1, 3]);
    let run = out.status();
    assert_eq!(run.stage("plain").state, "succeeded");
    assert_eq!(run.stage("pinned").state, "cached");
    assert_eq!(run.stage("never").state, "succeeded");
    // Only `pinned` has a checkpoint; `never` still had its output checked.
    assert_eq!(out.cache_stats().records, 1);
    assert_eq!(out.read("never.out"), "in\n");
}

/// git's "racily clean" file: rewritten right after it was hashed, with the same size, inode
/// and mtime. Only its bytes (and its ctime) differ; the stage must see the change.
#[test]
fn an_input_rewritten_at_once_with_the_same_size_and_mtime_reruns_the_stage() {
    let out = one_stage();
    let input = out.file("in.txt");
    let before = fs::metadata(&input).unwrap();
    fs::write(&input, "SOME BYTES TO KEEP\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&input)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    let after = fs::metadata(&input).unwrap();
    assert_eq!(
        (after.len(), after.ino(), after.modified().unwrap()),
        (before.len(), before.ino(), before.modified().unwrap())
    );

    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.build"), 2);
    assert_eq!(out.status().stage("build").why(), "input `in.txt` changed");
    assert_eq!(out.read("out.txt"), "SOME BYTES TO KEEP\n");

    // And the same again, from the second run's hashes.
    fs::write(&input, "more bytes to keep\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&input)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.build"), 3);
    assert_eq!(out.read("out.txt"), "MORE BYTES TO KEEP\n");
}

/// Rewrites a record's `created_at` to `days` ago, with a checksum that matches again.
fn backdate_record(path: &Path, days: i64) {
    let bytes = fs::read(path).unwrap();
    let body = bytes.get(65..).expect("a checksum line, then the record");
    let mut record: serde_json::Value = serde_json::from_slice(body).unwrap();
    let then = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(24 * days))
        .unwrap();
    record["created_at"] = then.to_string().into();
    let body = serde_json::to_vec_pretty(&record).unwrap();
    let mut bytes = blake3::hash(&body).to_hex().as_bytes().to_vec();
    bytes.push(b'\n');
    bytes.extend_from_slice(&body);
    fs::write(path, bytes).unwrap();
}

fn records(out: &Output) -> Vec<PathBuf> {
    files_below(&out.file(".murphy/store/records"))
}

fn gc(out: &Output, args: &[&str]) -> String {
    let mut command = vec!["cache", "gc"];
    command.extend_from_slice(args);
    out.murphy(command).run().stdout
}

#[test]
fn cache_stats_counts_and_gc_removes_what_no_record_uses() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build:
                inputs: [in.txt]
                run: echo x >> ran.build; cp in.txt a.out; echo same > b.out
                outputs: [a.out, b.out]
              copy:
                inputs: [b.txt]
                run: echo x >> ran.copy; cp b.txt copy.out
                outputs: [copy.out]
            ",
        )
        .write("in.txt", "first\n")
        .write("b.txt", "same\n")
        .args(["run"])
        .run();
    // `b.out` and `copy.out` hold the same bytes: one object.
    assert_eq!(
        out.cache_stats(),
        CacheStats {
            objects: 2,
            bytes: 6 + 5,
            records: 2
        }
    );
    let first_records = records(&out);

    out.write("in.txt", "second!\n");
    out.murphy(["run"]).run();
    assert_eq!(counts(&out, ["build", "copy"]), [2, 1]);
    assert_eq!(
        out.cache_stats(),
        CacheStats {
            objects: 3,
            bytes: 6 + 5 + 8,
            records: 3
        }
    );
    // Every object is used.
    assert_eq!(gc(&out, &[]), "removed 0 records and 0 objects (0 bytes)\n");
    assert_eq!(out.cache_stats().objects, 3);

    // The first `build` record grows old: it goes, and `first\n` with it.
    let old_build = first_records
        .iter()
        .find(|r| !fs::read_to_string(r).unwrap().contains("copy.out"))
        .unwrap();
    backdate_record(old_build, 3);
    assert_eq!(
        gc(&out, &["--keep-days", "2"]),
        "removed 1 records and 1 objects (6 bytes)\n"
    );
    assert_eq!(
        out.cache_stats(),
        CacheStats {
            objects: 2,
            bytes: 5 + 8,
            records: 2
        }
    );
    out.murphy(["run"]).run();
    assert_eq!(counts(&out, ["build", "copy"]), [2, 1], "still cached");

    // All records grow old: the store empties, and the stages run again.
    for record in records(&out) {
        backdate_record(&record, 3);
    }
    assert_eq!(
        gc(&out, &["--keep-days", "2"]),
        "removed 2 records and 2 objects (13 bytes)\n"
    );
    assert_eq!(
        out.cache_stats(),
        CacheStats {
            objects: 0,
            bytes: 0,
            records: 0
        }
    );
    fs::remove_file(out.file("copy.out")).unwrap();
    out.murphy(["run"]).run();
    assert_eq!(counts(&out, ["build", "copy"]), [3, 2]);
    assert_eq!(out.read("copy.out"), "same\n");
    assert_eq!(out.cache_stats().records, 2);
    out.murphy(["run"]).run();
    assert_eq!(counts(&out, ["build", "copy"]), [3, 2]);
}

#[test]
fn gc_removes_a_damaged_record_and_the_objects_only_it_used() {
    let out = one_stage();
    flip_a_byte(&only_file(&out, "records"));
    assert_eq!(
        gc(&out, &[]),
        "removed 1 records and 1 objects (19 bytes)\n"
    );
    assert_eq!(
        out.cache_stats(),
        CacheStats {
            objects: 0,
            bytes: 0,
            records: 0
        }
    );
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.build"), 2);
    assert_eq!(out.read("out.txt"), "SOME BYTES TO KEEP\n");
}

/// `--keep-days 0` keeps nothing: a record made a moment ago is older than 0 days.
#[test]
fn gc_keep_days_0_removes_a_record_made_a_moment_ago() {
    let out = one_stage();
    // Three tries: a comparison in whole seconds would pass whenever a run straddled one.
    for round in 0..3 {
        out.write("in.txt", &format!("round {round}\n"));
        out.murphy(["run"]).run();
        gc(&out, &["--keep-days", "0"]);
        assert_eq!(
            out.cache_stats(),
            CacheStats {
                objects: 0,
                bytes: 0,
                records: 0
            },
            "round {round}"
        );
    }
}

/// An input named by an absolute path would tie the pipeline (and its fingerprints) to one
/// machine's layout, so it is refused before anything runs, pointing at the path.
#[test]
fn an_absolute_input_path_is_refused() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              copy: {inputs: [/etc/hostname], run: 'true'}
            ",
        )
        .args(["run"])
        .code(2)
        .run();
    assert!(
        out.stderr.starts_with(
            "error: pipeline.yml:3:19: `/etc/hostname` is an absolute path: inputs and outputs are relative to the pipeline's directory"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.file(".murphy").exists(), "nothing ran");
}

// Regressions found in review: each test reproduces a defect that once got through.

/// Two stages with the same commands and inputs are still two stages: neither is restored
/// from the other's record.
#[test]
fn identical_stages_do_not_share_a_checkpoint() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              docs: {inputs: [gen.sh], run: sh gen.sh, outputs: [docs.out]}
              site: {inputs: [gen.sh], run: sh gen.sh, outputs: [site.out]}
            ",
        )
        .write(
            "gen.sh",
            "echo x >> ran.$MURPHY_STAGE; echo hi > $MURPHY_STAGE.out\n",
        )
        .args(["run", "-j", "1"])
        .run();
    assert_eq!((out.count("ran.docs"), out.count("ran.site")), (1, 1));
    assert!(out.file("site.out").exists());
}

/// Declaring one more output changes what a record must hold: the stage runs again.
#[test]
fn declaring_another_output_reruns_the_stage() {
    let out = Test::new()
        .pipeline("version: 1\nstages:\n  a: {inputs: [in.txt], run: 'echo x >> ran.a; mkdir -p dist; touch dist/a dist/b', outputs: [dist/a]}\n")
        .write("in.txt", "x\n")
        .args(["run"])
        .run();
    out.pipeline("version: 1\nstages:\n  a: {inputs: [in.txt], run: 'echo x >> ran.a; mkdir -p dist; touch dist/a dist/b', outputs: [dist/a, dist/b]}\n");
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.a"), 2);
    assert_eq!(
        out.status().stage("a").why(),
        "its declared outputs changed"
    );
}

/// With the pipeline in the current directory, `**/*` must not take murphy's own records
/// (journals, locks, logs) as inputs, or the stage would never be cached.
#[test]
fn the_state_directory_is_never_an_input() {
    let out = Test::new()
        .pipeline("version: 1\nstages:\n  a: {inputs: ['**/*'], run: 'echo x >> ../ran.a'}\n")
        .write("src/x.txt", "x\n")
        .args(["run"])
        .run();
    out.murphy(["run"]).run();
    assert_eq!(out.status().stage("a").state, "cached");
}

/// A directory output that is read-only comes back whole, its files first, its mode last.
#[test]
fn a_read_only_output_directory_is_restored() {
    let out = Test::new()
        .pipeline("version: 1\nstages:\n  a: {inputs: [in.txt], run: 'echo x >> ran.a; mkdir -p out; echo f > out/f; chmod 555 out', outputs: [out]}\n")
        .write("in.txt", "x\n")
        .args(["run"])
        .run();
    fs::set_permissions(out.file("out"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(out.file("out")).unwrap();
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.a"), 1, "restored, not run");
    assert_eq!(out.read("out/f"), "f\n");
    let mode = fs::metadata(out.file("out")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o555);
    fs::set_permissions(out.file("out"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// A listed variable counts in the fingerprint even when its name looks like a CI one, and
/// credential-looking CI variables never pass unlisted.
#[test]
fn listed_variables_count_and_ci_credentials_stay_out() {
    let pipeline = "version: 1\nstages:\n  a: {pass_env: [BUILD_PROFILE], inputs: [in.txt], run: 'echo x >> ran.a; echo \"$BUILD_PROFILE ${GITHUB_TOKEN:-none} ${GITHUB_REF:-none}\" > out.txt', outputs: [out.txt]}\n";
    let out = Test::new()
        .pipeline(pipeline)
        .write("in.txt", "x\n")
        .env("BUILD_PROFILE", "debug")
        .env("GITHUB_TOKEN", "ghp_secret")
        .args(["run"])
        .run();
    assert_eq!(out.read("out.txt"), "debug none none\n");
    out.murphy(["run"]).env("BUILD_PROFILE", "release").run();
    assert_eq!(out.count("ran.a"), 2);
    assert_eq!(out.read("out.txt"), "release none none\n");
}

/// A symlinked input counts by the bytes it points at, not only by where it points.
#[test]
fn a_symlinked_input_counts_by_its_target_bytes() {
    let out = Test::new()
        .pipeline("version: 1\nstages:\n  a: {inputs: [cfg.yml], run: 'echo x >> ran.a; cp cfg.yml out.txt', outputs: [out.txt]}\n")
        .write("real/cfg.yml", "v1\n")
        .args(["validate"])
        .run();
    std::os::unix::fs::symlink("real/cfg.yml", out.file("cfg.yml")).unwrap();
    out.murphy(["run"]).run();
    out.write("real/cfg.yml", "v2\n");
    out.murphy(["run"]).run();
    assert_eq!(out.count("ran.a"), 2);
    assert_eq!(out.read("out.txt"), "v2\n");
}

/// `--from` runs an earlier stage that is never cached instead of asking for its checkpoint.
#[test]
fn from_runs_earlier_stages_that_are_never_cached() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              setup: {run: echo x >> ran.setup}
              build: {needs: [setup], inputs: [in.txt], run: echo x >> ran.build; cp in.txt b.out, outputs: [b.out]}
              test: {needs: [build], inputs: [b.out], run: echo x >> ran.test}
            ",
        )
        .write("in.txt", "x\n")
        .args(["run"])
        .run();
    out.murphy(["run", "--from", "test"]).run();
    assert_eq!(
        (
            out.count("ran.setup"),
            out.count("ran.build"),
            out.count("ran.test")
        ),
        (2, 1, 2)
    );
}

/// A murphy started by a stage keeps its own records: it does not take the outer run's
/// `MURPHY_STATE_DIR` (and its lock) for its own.
#[test]
fn a_nested_murphy_uses_its_own_state_dir() {
    let inner = "version: 1\nstages:\n  x: {run: 'true'}\n";
    let murphy = env!("CARGO_BIN_EXE_murphy");
    let out = Test::new()
        .pipeline(&format!(
            "version: 1\nstages:\n  outer: {{run: 'cd sub && {murphy} run'}}\n"
        ))
        .write("sub/pipeline.yml", inner)
        .args(["run"])
        .run();
    assert!(out.file("sub/.murphy/runs").is_dir(), "{}", out.stderr);
}
