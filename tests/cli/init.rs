//! `murphy init`: the Rust template's inputs, run with a stand-in `cargo`, and the folders
//! murphy keeps out of git.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Output, Test};

const CARGO_TOML: &str = "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2021\"\n";

/// A crate with every kind of target, in a git repository, and murphy's Rust template for it.
fn rust_crate() -> Output {
    Test::new()
        .git_init()
        .write("Cargo.toml", CARGO_TOML)
        .write("Cargo.lock", "version = 4\n")
        .write("build.rs", "fn main() {}\n")
        .write("src/lib.rs", "\n")
        .write("tests/t.rs", "\n")
        .write("benches/b.rs", "\n")
        .write("examples/e.rs", "\n")
        .args(["init"])
        .run()
}

/// The stages of the latest run that ran rather than came from their checkpoint.
fn ran(out: &Output) -> Vec<String> {
    out.status()
        .stages
        .into_iter()
        .filter(|s| s.state != "cached")
        .map(|s| s.name)
        .collect()
}

/// Every kind of target's files is an input of the stages that compile or check it: a change
/// to `build.rs` reruns everything, a change to a test, bench or example everything but the
/// release build.
#[test]
fn the_rust_template_reruns_the_stages_that_read_each_kind_of_target() {
    let out = rust_crate();
    assert!(
        out.stdout
            .starts_with("wrote pipeline.yml for a Rust project (Cargo.toml): 4 stages"),
        "{}",
        out.stdout
    );
    out.murphy(["validate"]).run();
    // A stand-in `cargo` that only says it ran: the test is about what murphy reruns.
    out.write(".bin/cargo", "#!/bin/sh\necho \"cargo $*\"\n");
    fs::set_permissions(out.file(".bin/cargo"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        out.file(".bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = || out.murphy(["run"]).env("PATH", &path).run();
    run();
    assert_eq!(ran(&out), ["fmt", "clippy", "build", "test"]);
    run();
    assert!(ran(&out).is_empty(), "{:?}", ran(&out));

    for (file, stages) in [
        ("build.rs", &["fmt", "clippy", "build", "test"][..]),
        ("src/lib.rs", &["fmt", "clippy", "build", "test"]),
        ("tests/t.rs", &["fmt", "clippy", "test"]),
        ("benches/b.rs", &["fmt", "clippy", "test"]),
        ("examples/e.rs", &["fmt", "clippy", "test"]),
        // Untracked, so cargo's to rewrite: not an input.
        ("Cargo.lock", &[]),
    ] {
        out.write(file, "// changed\n");
        run();
        assert_eq!(ran(&out), stages, "after a change to {file}");
    }
}

#[test]
fn the_rust_template_lists_cargo_lock_only_when_git_tracks_it() {
    let out = rust_crate();
    assert!(
        !out.read("pipeline.yml").contains("Cargo.lock"),
        "untracked:\n{}",
        out.read("pipeline.yml")
    );

    out.git(["add", "Cargo.lock"]);
    fs::remove_file(out.file("pipeline.yml")).unwrap();
    out.murphy(["init"]).run();
    let text = out.read("pipeline.yml");
    // clippy, build and test read it; fmt does not.
    assert_eq!(
        text.matches("\"Cargo.lock\"").count(),
        3,
        "tracked:\n{text}"
    );
    out.murphy(["validate"]).run();
}

/// The state directory carries its own `.gitignore`: a run leaves `git status` as it was.
#[test]
fn a_run_leaves_nothing_for_git_to_see() {
    let out = Test::new()
        .git_init()
        .pipeline("version: 1\nstages:\n  s: {run: 'true'}\n")
        .commit("pipeline")
        .args(["run"])
        .run();
    assert_eq!(out.read(".murphy/.gitignore"), "*\n");
    assert_eq!(
        out.git(["status", "--porcelain", "--untracked-files=all"]),
        ""
    );
}
