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
        // Another step wrote there first: murphy appends.
        .write("summary.md", "earlier step\n")
        .git(["remote", "add", "origin", "https://github.com/o/r.git"])
        .commit("Broken");
    let summary = test.path().join("summary.md");
    test.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())
        .env("GITHUB_REPOSITORY", "o/r")
        .env("GITHUB_RUN_ID", "42")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_REF", "refs/heads/main")
        .args(["-v", "run", "-j1", "--junit", "junit.xml"])
        .code(1)
        .run()
}

/// `stderr` with the run id, the durations and the rustc path made fixed.
fn normalise(out: &Output, stderr: &str) -> String {
    let run = out.status().run_id;
    let mut text = stderr.replace(&run, "RUN").replace(&rustc(), "rustc");
    // The token that stops workflow commands is random, but one per run.
    if let Some(token) = text
        .lines()
        .find_map(|l| l.strip_prefix("::stop-commands::"))
        .map(str::to_owned)
    {
        assert_eq!(token.len(), 32, "{stderr}");
        text = text.replace(&token, "TOKEN");
    }
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
::stop-commands::TOKEN
$ echo hello; echo world
hello
world
::TOKEN::
::endgroup::
greet succeeded in T
build started
::group::build output
::stop-commands::TOKEN
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
::TOKEN::
::endgroup::
build failed (exit 1) after T
last 12 lines of .murphy/runs/RUN/logs/build.log:
::stop-commands::TOKEN
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
::TOKEN::
::error file=src/broken.rs,line=3,col=18::error[E0308]: mismatched types
run RUN failed in T: 1 succeeded (0 cached), 1 failed, 0 skipped
"#;
    let name = out.path().file_name().unwrap().to_str().unwrap();
    assert_eq!(stderr, expected.replace("NAME", name), "{}", out.stderr);

    let sha = out.git(["rev-parse", "HEAD"]);
    let summary = normalise(&out, &out.read("summary.md"));
    let expected = format!(
        "earlier step
### murphy: `{name}` run `RUN` failed

| stage | state | time | note |
| --- | --- | --- | --- |
| `greet` | ✅ succeeded | T |  |
| `build` | ❌ failed | T | exit 1 |

[CI run](https://github.com/o/r/actions/runs/42) · [commit {short}](https://github.com/o/r/commit/{sha})

",
        short = &sha[..7]
    );
    assert_eq!(summary, expected);

    let cases = junit_cases(&out.read("junit.xml"));
    assert_eq!(
        cases
            .iter()
            .map(|c| (c.suite.as_str(), c.name.as_str(), c.verdict.as_str()))
            .collect::<Vec<_>>(),
        [
            (name, "greet", ""),
            (name, "build", "failure: failed (exit 1)")
        ]
    );
    let failure = &cases[1].text;
    assert!(
        failure.contains("error[E0308]: mismatched types\n --> src/broken.rs:3:18"),
        "{failure}"
    );
}

/// A testcase of a JUnit file, read back with quick-xml (which refuses what is not
/// well-formed).
#[derive(Debug)]
struct Case {
    suite: String,
    name: String,
    /// `failure: MESSAGE`, `skipped: MESSAGE`, or empty for a pass.
    verdict: String,
    text: String,
    system_out: String,
}

fn junit_cases(xml: &str) -> Vec<Case> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let attr = |e: &quick_xml::events::BytesStart, key: &str| -> String {
        e.attributes()
            .map(|a| a.expect("well-formed attribute"))
            .find(|a| a.key.as_ref() == key.as_bytes())
            .map(|a| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .unwrap()
                    .into_owned()
            })
            .unwrap_or_default()
    };
    let (mut cases, mut suite, mut depth, mut inside) = (Vec::new(), String::new(), 0, None);
    loop {
        let event = reader.read_event().expect("well-formed XML");
        let (e, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = e {
            match e.name().as_ref() {
                b"testsuite" => suite = attr(&e, "name"),
                b"testcase" => cases.push(Case {
                    suite: suite.clone(),
                    name: attr(&e, "name"),
                    verdict: String::new(),
                    text: String::new(),
                    system_out: String::new(),
                }),
                b"failure" | b"skipped" | b"error" => {
                    let kind = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    cases.last_mut().unwrap().verdict = format!("{kind}: {}", attr(&e, "message"));
                    inside = Some("text");
                }
                b"system-out" => inside = Some("out"),
                _ => {}
            }
            if !empty {
                depth += 1;
            }
            if empty && inside.is_some() {
                inside = None;
            }
        }
        match event {
            Event::End(_) => {
                depth -= 1;
                inside = None;
            }
            Event::Text(t) => {
                let text = t.xml_content(quick_xml::XmlVersion::Implicit1_0).unwrap();
                match (inside, cases.last_mut()) {
                    (Some("text"), Some(c)) => c.text.push_str(&text),
                    (Some("out"), Some(c)) => c.system_out.push_str(&text),
                    _ => {}
                }
            }
            Event::GeneralRef(r) => {
                let name = r.decode().unwrap();
                let c = quick_xml::escape::resolve_predefined_entity(&name).expect("known entity");
                match (inside, cases.last_mut()) {
                    (Some("text"), Some(case)) => case.text.push_str(c),
                    (Some("out"), Some(case)) => case.system_out.push_str(c),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "every element is closed:\n{xml}");
    cases
}

const UNIT_REPORT: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="2" failures="1">
<testcase classname="tests.test_calc" name="test_add" time="0.001"/>
<testcase classname="tests.test_calc" name="test_sub" time="0.002"><failure message="assert 1 == 2">&gt; assert 1 == 2</failure><system-out>printed</system-out></testcase>
</testsuite></testsuites>
"#;

/// `unit` writes a JUnit report, `lint` a broken one, `quiet` none at all; `gate` fails until
/// the file `ok` exists.
const REPORTS: &str = "
    version: 1
    stages:
      unit:
        run: mkdir -p reports && cp unit.xml.in reports/unit.xml
        reports: {junit: reports/unit.xml}
      lint:
        run: mkdir -p reports && printf '<testsuite><testcase name=\"x\">' > reports/lint.xml
        reports: {junit: reports/lint.xml}
      quiet:
        run: 'true'
        reports: {junit: reports/quiet.xml}
      gate:
        needs: [unit, lint, quiet]
        run: test -f ok
";

#[test]
fn stage_reports_merge_into_the_junit_file_of_a_run_and_of_its_resume() {
    let out = Test::new()
        .pipeline(REPORTS)
        .write("unit.xml.in", UNIT_REPORT)
        .args(["run", "-j1", "--junit", "junit.xml"])
        .code(1)
        .run();
    // Each bad report is named; the rest of the report is still written.
    for warning in [
        "warning: stage `lint`: cannot read its JUnit report `reports/lint.xml`: it ends before `</testcase>`",
        "warning: stage `quiet`: cannot read its JUnit report `reports/quiet.xml`: No such file or directory (os error 2)",
    ] {
        assert!(out.stderr.contains(warning), "{}", out.stderr);
    }
    let name = out.path().file_name().unwrap().to_str().unwrap();
    let suite = "unit: reports/unit.xml";
    let verdicts = |xml: &str| -> Vec<(String, String, String)> {
        junit_cases(xml)
            .into_iter()
            .map(|c| (c.suite, c.name, c.verdict))
            .collect()
    };
    let row = |s: &str, n: &str, v: &str| (s.to_owned(), n.to_owned(), v.to_owned());
    assert_eq!(
        verdicts(&out.read("junit.xml")),
        [
            row(name, "unit", ""),
            row(name, "lint", ""),
            row(name, "quiet", ""),
            row(name, "gate", "failure: failed (exit 1)"),
            row(suite, "test_add", ""),
            row(suite, "test_sub", "failure: assert 1 == 2"),
        ]
    );
    let cases = junit_cases(&out.read("junit.xml"));
    assert_eq!(
        (cases[5].text.as_str(), cases[5].system_out.as_str()),
        ("> assert 1 == 2", "printed")
    );

    // The resume writes its own report: what it finished, and the reports again.
    out.write("ok", "");
    let resumed = out.murphy(["resume", "--junit", "resumed.xml"]).run();
    assert_eq!(
        verdicts(&resumed.read("resumed.xml")),
        [
            row(name, "unit", ""),
            row(name, "lint", ""),
            row(name, "quiet", ""),
            row(name, "gate", ""),
            row(suite, "test_add", ""),
            row(suite, "test_sub", "failure: assert 1 == 2"),
        ]
    );
}

#[test]
fn a_report_path_outside_the_project_is_refused() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              unit:
                run: 'true'
                reports: {junit: ../elsewhere.xml}
            ",
        )
        .args(["run"])
        .code(2)
        .run();
    assert!(
        out.stderr
            .contains("report `../elsewhere.xml` leaves the project"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("pipeline.yml:5:"), "{}", out.stderr);
}

#[test]
fn gitlab_folds_stage_output_into_sections() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              test:
                matrix: {py: ['3.12']}
                run: echo testing
              fail:
                needs: [test]
                run: echo broken; exit 3
            ",
        )
        .env("GITLAB_CI", "true")
        .args(["-v", "run", "-j1"])
        .code(1)
        .run();
    // Section markers carry a timestamp: check it is one, then fix it.
    let mut stderr = String::new();
    for line in out.stderr.lines() {
        let mut fixed = line.to_owned();
        for marker in ["section_start:", "section_end:"] {
            if let Some((before, after)) = fixed.split_once(marker) {
                let (ts, rest) = after.split_once(':').unwrap();
                assert!(ts.parse::<u64>().unwrap() > 1_700_000_000, "{line}");
                fixed = format!("{before}{marker}TS:{rest}");
            }
        }
        stderr.push_str(&fixed);
        stderr.push('\n');
    }
    let stderr = normalise(&out, &stderr);
    let name = out.path().file_name().unwrap().to_str().unwrap();
    let expected = format!(
        "murphy starting run RUN of `{name}`: 2 stages
test[py=3.12] started
\x1b[0Ksection_start:TS:murphy_test_py_3.12__1[collapsed=true]\r\x1b[0Ktest[py=3.12] output
$ echo testing
testing
\x1b[0Ksection_end:TS:murphy_test_py_3.12__1\r\x1b[0K
test[py=3.12] succeeded in T
fail started
\x1b[0Ksection_start:TS:murphy_fail_1[collapsed=true]\r\x1b[0Kfail output
$ echo broken; exit 3
broken
\x1b[0Ksection_end:TS:murphy_fail_1\r\x1b[0K
fail failed (exit 3) after T
last 2 lines of .murphy/runs/RUN/logs/fail.log:
  $ echo broken; exit 3
  broken
run RUN failed in T: 1 succeeded (0 cached), 1 failed, 0 skipped
"
    );
    assert_eq!(stderr, expected);
}

/// Two stages printing at the same time: each group holds its own stage's lines only, every
/// line is shown once, and no group opens inside another.
#[test]
fn side_by_side_stages_never_share_a_group() {
    let chatty =
        |name: &str| format!("for i in 1 2 3 4 5 6 7 8; do echo {name}-$i; sleep 0.02; done");
    let out = Test::new()
        .pipeline(&format!(
            "
            version: 1
            stages:
              left: {{run: '{}'}}
              right: {{run: '{}'}}
            ",
            chatty("left"),
            chatty("right")
        ))
        .env("GITHUB_ACTIONS", "true")
        .args(["-v", "run", "-j2"])
        .run();
    let mut open: Option<&str> = None;
    let mut seen = Vec::new();
    for line in out.stderr.lines() {
        if let Some(title) = line.strip_prefix("::group::") {
            assert_eq!(open, None, "a group inside a group:\n{}", out.stderr);
            open = Some(title.strip_suffix(" output").unwrap());
        } else if line == "::endgroup::" {
            assert!(open.take().is_some(), "{}", out.stderr);
        } else if let Some(stage) = open {
            if !line.starts_with("$ ") && !line.starts_with("::") {
                assert!(
                    line.starts_with(&format!("{stage}-")),
                    "{line:?} in {stage}'s group:\n{}",
                    out.stderr
                );
                seen.push(line.to_owned());
            }
        } else {
            assert!(
                !line.starts_with("left-") && !line.starts_with("right-"),
                "{}",
                out.stderr
            );
        }
    }
    seen.sort();
    let mut expected: Vec<String> = ["left", "right"]
        .iter()
        .flat_map(|s| (1..=8).map(move |i| format!("{s}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(seen, expected, "{}", out.stderr);
}

/// Outside a git repository, annotations name files from `GITHUB_WORKSPACE`; a stage's
/// `workdir` is where its tools' relative paths start; a file outside gets no place.
#[test]
fn annotations_take_paths_from_the_stage_workdir_to_the_workspace() {
    let test = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              lint:
                workdir: sub
                run: |
                  echo 'x.c:3:7: error: boom, 100%'
                  echo '../top.c:1:2: warning: only a warning'
                  echo '../top.c:1:2: error: up'
                  echo '/usr/include/stdio.h:9:1: error: elsewhere'
                  exit 1
            ",
        )
        .write("sub/x.c", "");
    let workspace = test.path().to_str().unwrap().to_owned();
    let out = test
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", &workspace)
        .args(["run"])
        .code(1)
        .run();
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("::error"))
        .collect();
    assert_eq!(
        errors,
        [
            "::error file=sub/x.c,line=3,col=7::error: boom, 100%25",
            "::error file=top.c,line=1,col=2::error: up",
            "::error::error: elsewhere",
        ],
        "{}",
        out.stderr
    );
}

/// The workflow commands GitHub's runner would act on in `log`: lines starting with `::`
/// (after leading blanks) or holding `##[`, except while `::stop-commands::TOKEN` holds, up
/// to the line `::TOKEN::`.
fn commands_github_reads(log: &str) -> Vec<String> {
    let mut stopped: Option<String> = None;
    let mut commands = Vec::new();
    for line in log.lines() {
        let line = line.trim_start();
        if let Some(token) = &stopped {
            if line == format!("::{token}::") {
                stopped = None;
            }
            continue;
        }
        if let Some(token) = line.strip_prefix("::stop-commands::") {
            stopped = Some(token.to_owned());
        } else if line.starts_with("::") || line.contains("##[") {
            commands.push(line.to_owned());
        }
    }
    commands
}

/// A stage's output is data: what it prints cannot close murphy's group, add annotations or
/// stop murphy's own commands, whether streamed or in the failure's tail.
#[test]
fn stage_output_cannot_write_workflow_commands() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              sly:
                run: |
                  echo '::endgroup::'
                  echo '  ::error file=x.rs,line=1::all good'
                  echo 'text ##[error]legacy'
                  echo '::stop-commands::guess'
                  exit 1
            ",
        )
        .env("GITHUB_ACTIONS", "true")
        .args(["-v", "run"])
        .code(1)
        .run();
    let commands = commands_github_reads(&out.stderr);
    assert_eq!(
        commands,
        ["::group::sly output", "::endgroup::"],
        "{}",
        out.stderr
    );
    // The lines are all there to read, streamed and in the tail (each after the script).
    assert_eq!(out.stderr.matches("all good").count(), 4, "{}", out.stderr);
}

/// A test stage that fails before writing its report this time leaves the last run's
/// report out of this run's JUnit file, saying so.
#[test]
fn an_old_report_is_not_passed_off_as_this_runs() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              unit:
                inputs: [src.txt]
                run: grep -q good src.txt && mkdir -p reports && cp unit.xml.in reports/unit.xml
                reports: {junit: reports/unit.xml}
            ",
        )
        .write("unit.xml.in", UNIT_REPORT)
        .write("src.txt", "good\n")
        .args(["run", "--junit", "junit.xml"])
        .run();
    assert!(
        out.read("junit.xml").contains("test_add"),
        "{}",
        out.read("junit.xml")
    );
    out.write("src.txt", "broken\n");
    let failed = out.murphy(["run", "--junit", "junit.xml"]).code(1).run();
    assert!(
        failed.stderr.contains(
            "warning: stage `unit` wrote no JUnit report `reports/unit.xml` this time; the old one is left out"
        ),
        "{}",
        failed.stderr
    );
    let xml = out.read("junit.xml");
    assert!(!xml.contains("test_add"), "{xml}");
    assert!(xml.contains("<failure"), "{xml}");
}
