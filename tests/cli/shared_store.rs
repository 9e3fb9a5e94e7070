//! The shared store: fresh runners with empty local state, acting as separate CI runners,
//! sharing one bucket of a real S3 server (moto's `moto_server` on 127.0.0.1).

use std::path::Path;

use crate::moto::Moto;
use crate::support::{Output, Test, git};

const PIPELINE: &str = r#"
    version: 1
    stages:
      build:
        inputs: [src.txt]
        outputs: [out/app.bin, out/big.bin]
        run:
          - mkdir -p out && cat src.txt > out/app.bin && echo build >> ran.log
          - head -c 3000000 /dev/urandom > out/big.bin
      test:
        needs: [build]
        inputs: [out/app.bin]
        run: ["test -s out/app.bin && echo test >> ran.log"]
"#;

/// A project committed in a git repository: what runner A checks out.
fn origin() -> Test {
    Test::new()
        .git_init()
        .pipeline(PIPELINE)
        .write("src.txt", "v1\n")
        .write(".gitignore", "out/\nran.log\n")
        .commit("first")
}

/// A fresh clone of `origin` in a temp dir of its own: a new CI runner, no local state.
fn runner(origin: &Path) -> Test {
    let test = Test::new();
    git(
        test.path(),
        ["clone", "-q", &origin.to_string_lossy(), "work"],
    );
    test.cwd("work")
}

fn run_on(moto: &Moto, test: Test, store: &str) -> Output {
    moto.env(test)
        .env("MURPHY_STORE", store)
        .args(["run"])
        .run()
}

#[test]
fn a_second_runner_restores_what_the_first_built_without_running_it() {
    let moto = Moto::start();
    let store = format!("{}/team", moto.bucket("restore"));
    let origin = origin();
    let a = run_on(&moto, runner(origin.path()), &store);
    let work_a = a.path().join("work");
    assert_eq!(
        std::fs::read_to_string(work_a.join("ran.log")).unwrap(),
        "build\ntest\n"
    );

    let b = run_on(&moto, runner(origin.path()), &store);
    let work_b = b.path().join("work");
    assert!(
        !work_b.join("ran.log").exists(),
        "runner B ran a stage:\n{}",
        b.stderr
    );
    for file in ["out/app.bin", "out/big.bin"] {
        assert_eq!(
            std::fs::read(work_a.join(file)).unwrap(),
            std::fs::read(work_b.join(file)).unwrap(),
            "{file} differs"
        );
    }
    let status = b.murphy(["status", "--json"]).cwd("work").run();
    let view: crate::support::RunView = crate::support::parse_json(&status.stdout);
    for stage in ["build", "test"] {
        assert_eq!(view.stage(stage).state, "cached", "{view:#?}");
    }
    // The credential never reaches a log or the terminal.
    assert!(!b.stderr.contains("moto-secret-value-1234"));
}

#[test]
fn store_check_probes_each_operation_and_names_what_failed() {
    let moto = Moto::start();
    let store = moto.bucket("check");
    let out = moto
        .env(Test::new())
        .args(["--store", &store, "store", "check"])
        .run();
    for probe in ["write", "read", "conditional create", "delete"] {
        assert!(
            out.stdout.contains(&format!("ok      {probe}")),
            "{}",
            out.stdout
        );
    }
    let out = moto
        .env(Test::new())
        .args(["--store", "s3://no-such-bucket/x", "store", "check"])
        .code(1)
        .run();
    assert!(
        out.stdout.contains("FAILED  write") && out.stdout.contains("NoSuchBucket"),
        "{}",
        out.stdout
    );
    let out = Test::new()
        .args(["--store", "ftp://host/x", "store", "check"])
        .code(2)
        .run();
    assert!(
        out.stderr.contains("`ftp://host/x` is not a store URL"),
        "{}",
        out.stderr
    );
}
