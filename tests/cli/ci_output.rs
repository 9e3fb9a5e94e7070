//! CI-native output on real compiler output: GitHub Actions groups, `::error` annotations and
//! the step summary, GitLab sections, and the `--junit` report with the stages' own reports.

use crate::support::{Output, Test};

/// A Rust file rustc refuses: `error[E0308]` at line 3, column 18.
const BROKEN_RS: &str = "\
/// Says hello.
pub fn hello() -> u32 {
    let x: u32 = \"text\";
    x
}
";

/// The real rustc of the toolchain that builds these tests, by its path: a test's `HOME` is
/// its own, where rustup's proxy would find no default toolchain.
fn rustc() -> String {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = String::from_utf8(out.stdout).unwrap();
    format!("{}/bin/rustc", sysroot.trim())
}

/// `greet` prints two lines and succeeds; `build` compiles `src/broken.rs` and fails.
fn pipeline() -> String {
    format!(
        "
        version: 1
        stages:
          greet:
            run: echo hello; echo world
          build:
            needs: [greet]
            run: {} --edition 2021 --crate-type lib --emit=metadata --out-dir out src/broken.rs
        ",
        rustc()
    )
}

fn github_run() -> Output {
    let test = Test::new()
        .git_init()
        .pipeline(&pipeline())
        .write("src/broken.rs", BROKEN_RS)
        .commit("Broken");
    let summary = test.path().join("summary.md");
    test.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())
        .args(["-v", "run", "-j1"])
        .code(1)
        .run()
}

/// `stderr` with the run id, the durations and the rustc path made fixed.
fn normalise(out: &Output, stderr: &str) -> String {
    let run = out.status().run_id;
    let text = stderr.replace(&run, "RUN").replace(&rustc(), "rustc");
    let words = |line: &str| -> String {
        line.split(' ')
            .map(|word| {
                let bare = word.trim_end_matches(':');
                let secs = bare.strip_suffix('s').unwrap_or("x");
                if secs.parse::<f64>().is_ok() && secs.contains('.') {
                    word.replacen(bare, "T", 1)
                } else {
                    word.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    text.lines().map(|l| words(l) + "\n").collect()
}

#[test]
fn github_folds_stage_output_and_annotates_compiler_errors() {
    let out = github_run();
    let stderr = normalise(&out, &out.stderr);
    let expected = r#"murphy starting run RUN of `NAME`: 2 stages
greet started
::group::greet output
$ echo hello; echo world
hello
world
::endgroup::
greet succeeded in T
build started
::group::build output
$ rustc --edition 2021 --crate-type lib --emit=metadata --out-dir out src/broken.rs
error[E0308]: mismatched types
 --> src/broken.rs:3:18
  |
3 |     let x: u32 = "text";
  |            ---   ^^^^^^ expected `u32`, found `&str`
  |            |
  |            expected due to this

error: aborting due to 1 previous error

For more information about this error, try `rustc --explain E0308`.
::endgroup::
build failed (exit 1) after T
last 12 lines of .murphy/runs/RUN/logs/build.log:
  $ rustc --edition 2021 --crate-type lib --emit=metadata --out-dir out src/broken.rs
  error[E0308]: mismatched types
   --> src/broken.rs:3:18
    |
  3 |     let x: u32 = "text";
    |            ---   ^^^^^^ expected `u32`, found `&str`
    |            |
    |            expected due to this
  
  error: aborting due to 1 previous error
  
  For more information about this error, try `rustc --explain E0308`.
::error file=src/broken.rs,line=3,col=18::error[E0308]: mismatched types
run RUN failed in T: 1 succeeded (0 cached), 1 failed, 0 skipped
"#;
    let name = out.path().file_name().unwrap().to_str().unwrap();
    assert_eq!(stderr, expected.replace("NAME", name), "{}", out.stderr);
}
