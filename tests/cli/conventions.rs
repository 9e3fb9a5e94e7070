//! What users of command-line tools expect: completions, a manual page, `--quiet`, the
//! `NO_COLOR`/`CLICOLOR` conventions, `--json` for machines, and `run --dry-run`.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Test, parse_json};

/// `gen` copies `src.txt` into `out/a.txt`, `build` copies that on, `nightly` runs only in
/// scheduled runs. Each stage appends its name to `ran.log`, which no stage declares, so the
/// log counts what really ran.
const PIPELINE: &str = "
    version: 1
    name: demo
    stages:
      gen:
        inputs: [src.txt]
        run: mkdir -p out && cp src.txt out/a.txt && echo gen >> ran.log
        outputs: [out/a.txt]
      build:
        needs: [gen]
        run: cp out/a.txt out/b.txt && echo build >> ran.log
        outputs: [out/b.txt]
      nightly:
        needs: [build]
        when: {trigger: nightly}
        run: echo nightly >> ran.log
";

fn project() -> Test {
    Test::new().pipeline(PIPELINE).write("src.txt", "one\n")
}

fn explain(out: &crate::support::Output, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["run", "--dry-run", "--json"];
    args.extend(extra);
    let lines: Vec<Value> = parse_json(&out.murphy(args).run().stdout);
    lines
        .iter()
        .map(|l| {
            (
                l["stage"].as_str().unwrap().to_owned(),
                l["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn dry_run_says_what_would_run_restore_or_skip_and_runs_nothing() {
    let out = project().args(["run", "--dry-run"]).run();
    assert_eq!(
        out.stdout,
        "gen      run      no checkpoint yet\n\
         build    run      no checkpoint yet\n\
         nightly  skip     (when): trigger is `local`, not `nightly`\n\
         would run 2, restore 0, keep 0 cached, skip 1 (nothing was run)\n"
    );
    assert!(!out.file("ran.log").exists(), "nothing ran");
    assert!(out.runs().is_empty(), "no run is recorded");

    out.murphy(["run"]).run();
    assert_eq!(out.read("ran.log"), "gen\nbuild\n");
    assert_eq!(
        explain(&out, &[]),
        pairs(&[("gen", "cached"), ("build", "cached"), ("nightly", "skip")])
    );
    assert_eq!(
        explain(&out, &["--trigger", "nightly"]),
        pairs(&[("gen", "cached"), ("build", "cached"), ("nightly", "run")])
    );
    assert_eq!(
        explain(&out, &["--force=build"]),
        pairs(&[("gen", "cached"), ("build", "run"), ("nightly", "skip")])
    );

    // A deleted output is put back from the checkpoint; the run agrees.
    std::fs::remove_file(out.file("out/b.txt")).unwrap();
    let text = out.murphy(["run", "--explain"]).run().stdout;
    assert!(
        text.contains("build    restore  unchanged; 1 output to put back from run "),
        "{text}"
    );
    // An edited input: `gen` runs; whether `build` does depends on what `gen` makes.
    out.write("src.txt", "two\n");
    let lines: Vec<Value> = parse_json(&out.murphy(["run", "--dry-run", "--json"]).run().stdout);
    assert_eq!(
        (&lines[0]["action"], &lines[0]["reason"]),
        (&json!("run"), &json!("input `src.txt` changed")),
        "{lines:#?}"
    );
    assert_eq!(lines[1]["action"], "depends", "{lines:#?}");
    assert_eq!(lines[1]["fingerprint"], Value::Null, "{lines:#?}");
    assert_eq!(
        out.read("ran.log"),
        "gen\nbuild\n",
        "a dry run runs nothing"
    );
    assert_eq!(out.runs().len(), 1, "and records nothing");

    // What the dry run said is what the run does.
    out.murphy(["run"]).run();
    assert_eq!(out.read("ran.log"), "gen\nbuild\ngen\nbuild\n");
    let status = out.status();
    assert_eq!(status.stage("gen").why(), "input `src.txt` changed");
}

#[test]
fn quiet_shows_nothing_of_a_good_run_and_everything_of_a_failure() {
    let out = project().args(["run", "--quiet"]).run();
    assert_eq!(out.stderr, "", "a quiet run that succeeds says nothing");
    assert_eq!(out.read("ran.log"), "gen\nbuild\n");

    out.pipeline(
        "
        version: 1
        name: demo
        stages:
          ok: {run: 'true'}
          broken: {needs: [ok], run: 'echo the reason; exit 3'}
        ",
    );
    let failed = out.murphy(["run", "-q"]).code(1).run();
    let lines: Vec<&str> = failed.stderr.lines().collect();
    assert!(
        lines[0].starts_with("broken failed (exit 3) after "),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("  the reason\n"),
        "{}",
        failed.stderr
    );
    assert!(
        lines.last().unwrap().contains(" failed in ")
            && lines
                .last()
                .unwrap()
                .ends_with("1 succeeded (0 cached), 1 failed, 0 skipped"),
        "{}",
        failed.stderr
    );
    assert!(!failed.stderr.contains("ok succeeded"), "{}", failed.stderr);

    let both = out.murphy(["run", "-q", "-v"]).code(2).run();
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
}

#[test]
fn colour_follows_no_color_and_clicolor() {
    let out = project().args(["run"]).run();
    let escapes = |env: &[(&str, &str)]| {
        let mut test = out.murphy(["run", "--force"]).env("NO_COLOR", "");
        for (k, v) in env {
            test = test.env(k, v);
        }
        test.run().stderr.contains("\u{1b}[")
    };
    // stderr is a pipe here: no colour unless forced, and never under NO_COLOR.
    assert!(!escapes(&[]));
    assert!(escapes(&[("CLICOLOR_FORCE", "1")]));
    assert!(!escapes(&[("CLICOLOR_FORCE", "0")]));
    assert!(!escapes(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]));
}

#[test]
fn completions_load_in_bash_and_the_manual_renders() {
    let out = project().args(["completions", "bash"]).run();
    let script = out.file("murphy.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let bash = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p murphy",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        bash.status.success() && String::from_utf8_lossy(&bash.stdout).contains("murphy"),
        "{bash:?}"
    );
    for shell in ["zsh", "fish"] {
        let script = out.murphy(["completions", shell]).run().stdout;
        assert!(script.contains("dry-run"), "{shell}: {script}");
    }

    let page = out.murphy(["man"]).run().stdout;
    assert!(page.contains(".TH murphy 1"), "{page}");
    assert!(page.contains("\\-\\-quiet"), "{page}");
    let dir = out.murphy(["man", "--dir", "man1"]).run();
    assert!(dir.stdout.starts_with("wrote "), "{}", dir.stdout);
    let run_page = out.read("man1/murphy-run.1");
    assert!(run_page.contains(".TH murphy-run 1"), "{run_page}");
    assert!(run_page.contains("\\-\\-dry\\-run"), "{run_page}");
    assert!(out.file("man1/murphy-archive-prune.1").is_file());
}

#[test]
fn validate_and_graph_speak_json() {
    let out = project().args(["validate", "--json"]).run();
    let valid: Value = parse_json(&out.stdout);
    assert_eq!(
        valid,
        json!({"file": "pipeline.yml", "valid": true, "stages": 3, "errors": [], "warnings": []})
    );
    let graph: Value = parse_json(&out.murphy(["graph", "--format", "json"]).run().stdout);
    assert_eq!(
        graph,
        json!({"pipeline": "demo", "stages": [
            {"name": "gen", "needs": [], "origin": null},
            {"name": "build", "needs": ["gen"], "origin": null},
            {"name": "nightly", "needs": ["build"], "origin": null},
        ]})
    );

    out.pipeline(
        "
        version: 1
        name: demo
        stages:
          build: {needs: [lnit], run: 'true'}
          lint: {run: 'true', inputs: [nothing/*.rs]}
        ",
    );
    let invalid: Value = parse_json(&out.murphy(["validate", "--json"]).code(2).run().stdout);
    assert_eq!(invalid["valid"], false, "{invalid:#}");
    let error = &invalid["errors"][0];
    assert_eq!(
        (&error["file"], &error["line"], &error["column"]),
        (&json!("pipeline.yml"), &json!(4), &json!(19)),
        "{invalid:#}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("(did you mean `lint`?)"),
        "{invalid:#}"
    );
}

/// Where the run would fail before running a stage, the dry run says `fail` and exits 1.
#[test]
fn dry_run_says_fail_where_the_run_would_fail() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            name: demo
            stages:
              gen: {run: 'echo gen >> ran.log'}
              build: {needs: [gen], inputs: [src.txt], run: 'echo build >> ran.log'}
            ",
        )
        .write("src.txt", "one\n")
        .args(["run", "--dry-run", "--needs-from-store", "build"])
        .code(1)
        .run();
    assert!(
        out.stdout.starts_with(
            "gen    fail     `build` needs it, but it is never cached, so no job can hand it on (declares no inputs or outputs"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .ends_with("; 1 would fail before running (nothing was run)\n"),
        "{}",
        out.stdout
    );
    // And the run agrees.
    out.murphy(["run", "--needs-from-store", "build"])
        .code(1)
        .run();
    assert!(!out.file("ran.log").exists());
}
