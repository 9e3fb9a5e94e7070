//! Project chores that need more than a shell one-liner, run as `cargo xtask <task>`.
//!
//! Kept in Rust (not shell scripts) so they work wherever murphy builds.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <TASK> [ARGS...]

Tasks:
  bench [--json] [NAME...]   Build murphy in release mode and run its benchmarks
                             [default: all but remote]; --json prints the results for machines";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::main(&args[1..]),
        _ => return usage(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the usage and returns exit code 2, the usual code for a bad command line.
fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    eprintln!("\nBenchmarks: {}", bench::names().join(", "));
    ExitCode::from(2)
}

/// The workspace root: the parent of this crate, whose Cargo.toml cargo passed at build time.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}
