//! `cargo xtask bench`: how fast the release build of murphy is, next to a baseline that
//! does the same work without murphy.
//!
//! Each benchmark is a function in [`BENCHMARKS`] that returns result [`Row`]s; this module
//! builds murphy, runs the chosen benchmarks and prints one table (or JSON). The machines
//! this runs on are noisy, so a missed target is reported, never an error: only a
//! benchmark that could not run makes the task fail.

mod change;
mod hash;
mod history;
mod json;
mod noop;
mod overhead;
mod prune;
mod remote;
mod scale;
mod touched;
mod validate;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

/// One benchmark: a name for the command line and the function that measures it.
struct Benchmark {
    name: &'static str,
    run: fn(&Env) -> Result<Vec<Row>>,
    /// Whether a plain `cargo xtask bench` runs it; one that must first make a Python venv
    /// runs only when named.
    default: bool,
}

/// Every benchmark, in the order they run.
const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        name: "overhead",
        run: overhead::run,
        default: true,
    },
    Benchmark {
        name: "noop",
        run: noop::run,
        default: true,
    },
    Benchmark {
        name: "touched",
        run: touched::run,
        default: true,
    },
    Benchmark {
        name: "change",
        run: change::run,
        default: true,
    },
    Benchmark {
        name: "hash",
        run: hash::run,
        default: true,
    },
    Benchmark {
        name: "validate",
        run: validate::run,
        default: true,
    },
    Benchmark {
        name: "history",
        run: history::run,
        default: false,
    },
    Benchmark {
        name: "scale",
        run: scale::run,
        default: true,
    },
    Benchmark {
        name: "prune",
        run: prune::run,
        default: true,
    },
    Benchmark {
        name: "remote",
        run: remote::run,
        default: false,
    },
];

/// What every benchmark gets: the binary under test.
pub struct Env {
    /// `target/release/murphy`, freshly built.
    pub murphy: PathBuf,
}

/// One measured figure, with what it is compared to.
pub struct Row {
    pub name: String,
    pub value: f64,
    /// The same work done without murphy, when there is such a thing; gives the ratio.
    pub baseline: Option<f64>,
    pub unit: &'static str,
    pub target: Option<Target>,
}

/// The figure a row should reach: an upper bound for times, a lower one for throughputs
/// and speed ratios, or an upper bound for the ratio to the baseline (noise moves both
/// alike, so the ratio is what holds on a busy machine).
#[derive(Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    RatioAtMost(f64),
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.baseline
            .map(|b| self.value / b)
            .filter(|r| r.is_finite())
    }

    fn pass(&self) -> Option<bool> {
        self.target.map(|t| match t {
            Target::AtMost(max) => self.value <= max,
            Target::AtLeast(min) => self.value >= min,
            Target::RatioAtMost(max) => self.ratio().is_some_and(|r| r <= max),
        })
    }
}

/// The names of all benchmarks, for the usage text.
pub fn names() -> Vec<&'static str> {
    BENCHMARKS.iter().map(|b| b.name).collect()
}

/// `cargo xtask bench [--json] [NAME...]`.
pub fn main(args: &[String]) -> Result<ExitCode> {
    let mut json = false;
    let mut chosen: Vec<&Benchmark> = Vec::new();
    for arg in args {
        if arg == "--json" {
            json = true;
        } else if let Some(bench) = BENCHMARKS.iter().find(|b| b.name == arg) {
            chosen.push(bench);
        } else {
            eprintln!("xtask: unknown benchmark or option `{arg}`\n");
            return Ok(crate::usage());
        }
    }
    if chosen.is_empty() {
        chosen = BENCHMARKS.iter().filter(|b| b.default).collect();
    }

    let env = Env {
        murphy: build_murphy()?,
    };
    let mut rows = Vec::new();
    for bench in chosen {
        eprintln!("xtask: running benchmark `{}`", bench.name);
        let found = (bench.run)(&env).with_context(|| format!("benchmark `{}`", bench.name))?;
        rows.extend(found);
    }

    if json {
        println!("{}", to_json(&rows));
    } else {
        print!("{}", to_table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the release binary and returns its path. Cargo's own output goes to stderr so
/// that stdout holds only the results.
fn build_murphy() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("xtask: cargo build --release --bin murphy");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "murphy"])
        .current_dir(&root)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("`cargo build --release --bin murphy` failed ({status})");
    }
    let murphy = root.join("target/release/murphy");
    if !murphy.is_file() {
        bail!("the build did not produce `{}`", murphy.display());
    }
    Ok(murphy)
}

/// A directory under the system temp dir, removed again when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `murphy-bench-<label>-<pid>-<nanos>`; the pid and time keep parallel runs apart.
    pub fn new(label: &str) -> Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "murphy-bench-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `command` to completion and returns how long it took. Its stdout is discarded and
/// its stderr goes to `stderr_file`, which is quoted if the command fails (a benchmark of
/// a failing run measures nothing).
pub fn time(command: &mut Command, stderr_file: &Path) -> Result<Duration> {
    let stderr = std::fs::File::create(stderr_file)
        .with_context(|| format!("cannot create {}", stderr_file.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let start = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    let elapsed = start.elapsed();
    if !status.success() {
        let output = std::fs::read_to_string(stderr_file).unwrap_or_default();
        bail!("{command:?} failed ({status}); its stderr:\n{output}");
    }
    Ok(elapsed)
}

/// Runs in `dir` with plain, uncoloured output and no progress bars, and without a
/// `MURPHY_STATE_DIR` or `MURPHY_LOG` from the caller's shell changing what murphy does.
pub fn quiet<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    cmd.current_dir(dir)
        .env_remove("MURPHY_STATE_DIR")
        .env_remove("MURPHY_LOG")
        .env("NO_COLOR", "1")
        .env("CI", "true")
}

/// `murphy --state-dir <state> <args...>`, run in `dir` as [`quiet`] says.
pub fn murphy(env: &Env, dir: &Path, state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(&env.murphy);
    cmd.arg("--state-dir").arg(state).args(args);
    quiet(&mut cmd, dir);
    cmd
}

/// The median, which one slow outlier on a busy machine does not move.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Milliseconds as a float, the unit the tables use for times.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Enough digits to compare small and large figures alike.
fn number(x: f64) -> String {
    if x.abs() < 10.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.1}")
    }
}

fn to_table(rows: &[Row]) -> String {
    let header = [
        "benchmark",
        "value",
        "baseline",
        "ratio",
        "unit",
        "target",
        "result",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            [
                row.name.clone(),
                number(row.value),
                row.baseline.map_or("-".into(), number),
                row.ratio().map_or("-".into(), |r| format!("{r:.2}x")),
                row.unit.to_string(),
                row.target.map_or("-".into(), |t| match t {
                    Target::AtMost(max) => format!("<= {max}"),
                    Target::AtLeast(min) => format!(">= {min}"),
                    Target::RatioAtMost(max) => format!("<= {max:.2}x"),
                }),
                match row.pass() {
                    Some(true) => "PASS".into(),
                    Some(false) => "FAIL".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut push_line = |line: &[&str]| {
        let mut text = String::new();
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            // Names and words align left, numbers right, as is easiest to read.
            if i == 0 || i >= 4 {
                let _ = write!(text, "{cell:<width$}  ");
            } else {
                let _ = write!(text, "{cell:>width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    push_line(&header);
    for line in &cells {
        push_line(&line.each_ref().map(String::as_str));
    }
    out
}

/// JSON by hand: the shape is flat and fixed, not worth a serde dependency.
fn to_json(rows: &[Row]) -> String {
    let num = |x: Option<f64>| match x {
        Some(x) if x.is_finite() => x.to_string(),
        _ => "null".into(),
    };
    let items: Vec<String> = rows
        .iter()
        .map(|row| {
            let target = match row.target {
                Some(Target::AtMost(max)) => format!("{{\"at_most\": {}}}", num(Some(max))),
                Some(Target::AtLeast(min)) => format!("{{\"at_least\": {}}}", num(Some(min))),
                Some(Target::RatioAtMost(max)) => {
                    format!("{{\"ratio_at_most\": {}}}", num(Some(max)))
                }
                None => "null".into(),
            };
            let pass = row.pass().map_or("null".into(), |p| p.to_string());
            format!(
                "    {{\"name\": {}, \"value\": {}, \"baseline\": {}, \"ratio\": {}, \
                 \"unit\": {}, \"target\": {target}, \"pass\": {pass}}}",
                json_string(&row.name),
                num(Some(row.value)),
                num(row.baseline),
                num(row.ratio()),
                json_string(row.unit),
            )
        })
        .collect();
    format!("{{\n  \"results\": [\n{}\n  ]\n}}", items.join(",\n"))
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
