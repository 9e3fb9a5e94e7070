//! Pipeline file errors, `validate`, `graph` and `schema`.

use crate::support::{Test, parse_json};

/// Runs a bad pipeline and checks murphy's whole stderr, given line by line.
fn assert_config_error(yaml: &str, expected: &[&str]) {
    let out = Test::new().pipeline(yaml).args(["run"]).code(2).run();
    assert_eq!(out.stderr, expected.join("\n") + "\n");
    assert!(!out.file(".murphy").exists(), "nothing is run or recorded");
}

#[test]
fn unknown_key_suggests_the_near_one() {
    assert_config_error(
        "
        version: 1
        stages:
          a: {run: x, neds: [b]}
        ",
        &[
            "error: pipeline.yml:3:15: unknown key `neds` (did you mean `needs`?)",
            "  |",
            "3 |   a: {run: x, neds: [b]}",
            "  |               ^^^^",
        ],
    );
}

#[test]
fn every_unknown_key_is_reported_with_the_other_errors() {
    assert_config_error(
        "
        version: 1
        stages:
          lint: {run: x, inptus: [src]}
          build:
            needs: [lnit]
            run: y
            retry: {attempts: 2, dealy: 1s}
            timeot: 1m
        ",
        &[
            "error: pipeline.yml:3:18: unknown key `inptus` (did you mean `inputs`?)",
            "  |",
            "3 |   lint: {run: x, inptus: [src]}",
            "  |                  ^^^^^^",
            "",
            "pipeline.yml:7:26: unknown key `dealy` (did you mean `delay`?)",
            "  |",
            "7 |     retry: {attempts: 2, dealy: 1s}",
            "  |                          ^^^^^",
            "",
            "pipeline.yml:8:5: unknown key `timeot` (did you mean `timeout`?)",
            "  |",
            "8 |     timeot: 1m",
            "  |     ^^^^^^",
            "",
            "pipeline.yml:5:13: stage `build` needs `lnit`, which is not a stage (did you mean `lint`?)",
            "  |",
            "5 |     needs: [lnit]",
            "  |             ^^^^",
        ],
    );
}

#[test]
fn unknown_keys_come_with_a_wrong_type() {
    assert_config_error(
        "
        version: 1
        stages:
          a: {run: x, neds: [b], retry: {attempts: two}}
        ",
        &[
            "error: pipeline.yml:3:15: unknown key `neds` (did you mean `needs`?)",
            "  |",
            "3 |   a: {run: x, neds: [b], retry: {attempts: two}}",
            "  |               ^^^^",
            "",
            "pipeline.yml:3:44: expected a whole number",
            "  |",
            "3 |   a: {run: x, neds: [b], retry: {attempts: two}}",
            "  |                                            ^",
        ],
    );
}

#[test]
fn a_file_that_is_not_utf8_points_at_the_first_bad_byte() {
    let test = Test::new()
        .write("team.yml", "version: 1\nstages:\n  t: {run: x}\n")
        .pipeline("version: 1\ninclude: [{path: team.yml}]\nstages: {}\n");
    std::fs::write(
        test.path().join("team.yml"),
        b"version: 1\nstages:\n  t: {run: \"\xe9t\xe9\"}\n",
    )
    .unwrap();
    let out = test.args(["validate"]).code(2).run();
    assert_eq!(
        out.stderr,
        "error: team.yml:3:13: byte 0xe9 is not UTF-8: a pipeline file must be UTF-8 text\n  |\n3 |   t: {run: \"\u{fffd}t\u{fffd}\"}\n  |             ^\n"
    );
    std::fs::write(out.file("pipeline.yml"), b"version: 1\n# caf\xc3\n").unwrap();
    let out = out.murphy(["validate"]).code(2).run();
    assert!(
        out.stderr
            .starts_with("error: pipeline.yml:2:6: byte 0xc3 is not UTF-8"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_shell_is_sh_bash_or_a_command_with_the_script_file() {
    assert_config_error(
        "
        version: 1
        shell: bahs
        stages:
          a: {run: x, shell: python3 -u}
          b: {run: x, shell: zsh}
        ",
        &[
            "error: pipeline.yml:2:8: `bahs` is not a shell murphy knows (did you mean `bash`?): use `sh`, `bash`, or a command with `{0}` for the script file, like `bahs {0}`",
            "  |",
            "2 | shell: bahs",
            "  |        ^^^^",
            "",
            "pipeline.yml:4:22: the shell command `python3 -u` has no `{0}`: write `{0}` where the script file's path goes, like `python3 -u {0}`",
            "  |",
            "4 |   a: {run: x, shell: python3 -u}",
            "  |                      ^^^^^^^^^^",
            "",
            "pipeline.yml:5:22: `zsh` is not a shell murphy knows (did you mean `sh`?): use `sh`, `bash`, or a command with `{0}` for the script file, like `zsh {0}`",
            "  |",
            "5 |   b: {run: x, shell: zsh}",
            "  |                      ^^^",
        ],
    );
}

#[test]
fn needs_naming_no_stage_suggests_the_near_one() {
    assert_config_error(
        "
        version: 1
        stages:
          lint: {run: x}
          build: {needs: [lnit], run: y}
        ",
        &[
            "error: pipeline.yml:4:19: stage `build` needs `lnit`, which is not a stage (did you mean `lint`?)",
            "  |",
            "4 |   build: {needs: [lnit], run: y}",
            "  |                   ^^^^",
        ],
    );
}

#[test]
fn cycle_is_printed() {
    assert_config_error(
        "
        version: 1
        stages:
          a: {needs: [c]}
          b: {needs: [a]}
          c: {needs: [b]}
        ",
        &[
            "error: pipeline.yml:4:15: stages form a cycle: `a` -> `c` -> `b` -> `a`",
            "  |",
            "4 |   b: {needs: [a]}",
            "  |               ^",
        ],
    );
}

#[test]
fn two_stages_cannot_declare_the_same_output() {
    assert_config_error(
        "
        version: 1
        stages:
          a: {outputs: [dist/x]}
          b: {outputs: [./dist/x]}
        ",
        &[
            "error: pipeline.yml:4:17: stage `b` declares output `./dist/x`, which stage `a` already declares",
            "  |",
            "4 |   b: {outputs: [./dist/x]}",
            "  |                 ^^^^^^^^",
            "  = note: first declared at pipeline.yml:3:17; each output has exactly one producer",
        ],
    );
}

#[test]
fn bad_duration_is_reported_where_written() {
    assert_config_error(
        "
        version: 1
        stages:
          a:
            run: x
            timeout: soon
        ",
        &[
            "error: pipeline.yml:5:14: bad duration `soon`: expected a number with a unit, like `90s`, `20m` or `1h 30m`",
            "  |",
            "5 |     timeout: soon",
            "  |              ^^^^",
        ],
    );
}

#[test]
fn version_is_required() {
    assert_config_error(
        "
        stages:
          a: {run: x}
        ",
        &[
            "error: pipeline.yml:1:1: missing `version`: add `version: 1` at the top",
            "  |",
            "1 | stages:",
            "  | ^",
        ],
    );
}

#[test]
fn unsupported_version_is_refused() {
    assert_config_error(
        "
        version: 2
        stages:
          a: {run: x}
        ",
        &[
            "error: pipeline.yml:1:10: unsupported `version: 2`: this murphy reads version 1",
            "  |",
            "1 | version: 2",
            "  |          ^",
        ],
    );
}

#[test]
fn yaml_syntax_error_points_at_the_bad_line() {
    assert_config_error(
        "
        version: 1
        stages:
          a:
            run: x
           needs: [b]
        ",
        &[
            "error: pipeline.yml:5:4: invalid YAML: while parsing a block mapping, did not find expected key",
            "  |",
            "5 |    needs: [b]",
            "  |    ^",
        ],
    );
}

#[test]
fn a_stage_name_may_appear_once() {
    assert_config_error(
        "
        version: 1
        stages:
          a: {run: x}
          a: {run: y}
        ",
        &[
            "error: pipeline.yml:4:3: duplicate key `a`: each key may appear once in a mapping",
            "  |",
            "4 |   a: {run: y}",
            "  |   ^",
        ],
    );
}

#[test]
fn murphy_variables_cannot_be_set_in_env() {
    assert_config_error(
        "
        version: 1
        env: {MURPHY_STAGE: x}
        stages: {}
        ",
        &[
            "error: pipeline.yml:2:7: `MURPHY_STAGE` is set by murphy for each stage and cannot be set in `env`",
            "  |",
            "2 | env: {MURPHY_STAGE: x}",
            "  |       ^^^^^^^^^^^^",
        ],
    );
}

#[test]
fn validate_exits_0_on_a_good_file_and_2_on_a_bad_one() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              a: {run: touch ran}
              b: {needs: [a]}
            ",
        )
        .args(["validate"])
        .run();
    assert_eq!(out.stdout, "pipeline.yml: valid, 2 stages\n");
    assert!(!out.file("ran").exists(), "validate runs nothing");

    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              a: {needs: [b]}
            ",
        )
        .args(["validate"])
        .code(2)
        .run();
    assert!(
        out.stderr
            .starts_with("error: pipeline.yml:3:15: stage `a` needs `b`, which is not a stage"),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_reads_the_file_given() {
    let out = Test::new()
        .write("ci/other.yml", "version: 1\nstages: {a: {}}\n")
        .args(["--file", "ci/other.yml", "validate"])
        .run();
    assert_eq!(out.stdout, "ci/other.yml: valid, 1 stage\n");
}

const DIAMOND: &str = "
    version: 1
    name: demo
    stages:
      d: {needs: [b, c]}
      b: {needs: [a]}
      c: {needs: [a]}
      a: {}
";

const EDGES: [(&str, &str); 4] = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")];

#[test]
fn graph_dot_has_every_edge() {
    let out = Test::new()
        .pipeline(DIAMOND)
        .args(["graph", "--format", "dot"])
        .run();
    assert!(
        out.stdout.starts_with("digraph \"demo\" {"),
        "{}",
        out.stdout
    );
    for (from, to) in EDGES {
        assert!(
            out.stdout.contains(&format!("\"{from}\" -> \"{to}\";")),
            "{from} -> {to} missing:\n{}",
            out.stdout
        );
    }
    assert_eq!(out.stdout.matches("->").count(), EDGES.len());
}

#[test]
fn graph_mermaid_has_every_edge() {
    let out = Test::new()
        .pipeline(DIAMOND)
        .args(["graph", "--format", "mermaid"])
        .run();
    // Nodes are numbered and labelled: `s3["a"]`; edges join numbers: `s3 --> s1`.
    let mut labels = std::collections::HashMap::new();
    let mut edges = Vec::new();
    for line in out.stdout.lines().map(str::trim) {
        if let Some((id, label)) = line.split_once("[\"") {
            labels.insert(id, label.trim_end_matches("\"]"));
        } else if let Some((from, to)) = line.split_once(" --> ") {
            edges.push((from, to));
        }
    }
    let mut named: Vec<(&str, &str)> = edges.iter().map(|(f, t)| (labels[f], labels[t])).collect();
    named.sort();
    assert_eq!(named, EDGES, "{}", out.stdout);
}

#[test]
fn schema_is_json_with_the_stages() {
    let out = Test::new().args(["schema"]).run();
    let schema: serde_json::Value = parse_json(&out.stdout);
    assert!(schema["properties"]["stages"].is_object(), "{schema:#}");
    assert!(schema["properties"]["version"].is_object(), "{schema:#}");
    assert!(schema["properties"]["shell"].is_object(), "{schema:#}");
    let stage = &schema["$defs"]["StageDef"];
    assert!(stage["properties"]["shell"].is_object(), "{schema:#}");
}

/// An output naming the project itself could make a resume delete the project.
#[test]
fn an_output_may_not_be_the_project_or_outside_it() {
    for output in ["./", ".", "..", "../sibling"] {
        let out = Test::new()
            .pipeline(&format!(
                "version: 1\nstages:\n  a: {{run: 'true', outputs: ['{output}']}}\n"
            ))
            .args(["validate"])
            .code(2)
            .run();
        assert!(
            out.stderr.contains("is the project itself or outside it"),
            "{output}: {}",
            out.stderr
        );
    }
}

/// A cycle closed through `needs_optional` is still a cycle.
#[test]
fn a_cycle_through_needs_optional_is_refused() {
    let out = Test::new()
        .pipeline("version: 1\nstages:\n  a: {needs: [b]}\n  b: {needs_optional: [a]}\n")
        .args(["validate"])
        .code(2)
        .run();
    assert!(out.stderr.contains("form a cycle"), "{}", out.stderr);
}

/// A timeout that overflows any clock is a typo, reported where it is written.
#[test]
fn an_absurd_timeout_is_refused() {
    let out = Test::new()
        .pipeline("version: 1\nstages:\n  a: {run: 'true', timeout: 500000000000y}\n")
        .args(["validate"])
        .code(2)
        .run();
    assert!(
        out.stderr.starts_with(
            "error: pipeline.yml:3:29: duration `500000000000y` is longer than a week"
        ),
        "{}",
        out.stderr
    );
}

/// `murphy init` writes a pipeline that validates for each kind of project it knows, and never
/// writes over one that exists.
#[test]
fn init_writes_a_valid_pipeline_for_each_kind_of_project() {
    for (marker, content, stages) in [
        ("Cargo.toml", "[package]\nname = \"x\"\n", "4 stages"),
        // No `.pre-commit-config.yaml`: no pre-commit stage.
        ("pyproject.toml", "[project]\nname = \"x\"\n", "3 stages"),
        ("package.json", "{}\n", "3 stages"),
        ("README.md", "nothing to detect\n", "2 stages"),
    ] {
        let out = Test::new().write(marker, content).args(["init"]).run();
        assert!(out.stdout.contains(stages), "{marker}: {}", out.stdout);
        let valid = out.murphy(["validate"]).run();
        assert!(valid.stdout.contains(stages), "{marker}: {}", valid.stdout);
        out.write("pipeline.yml", "version: 1\nstages: {}\n");
        let again = out.murphy(["init"]).code(2).run();
        assert!(
            again.stderr.contains("never overwrites"),
            "{}",
            again.stderr
        );
        assert_eq!(out.read("pipeline.yml"), "version: 1\nstages: {}\n");
    }
}

/// Ten services share one test stage: each copies the template and overrides what it gives;
/// the copies run as stages of their own, and a mistake in `extends` points at it.
#[test]
fn stages_extend_a_template_and_override_its_keys() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            templates:
              svc-test:
                run: echo \"$SERVICE $LEVEL\" > $SERVICE.out
                env: {SERVICE: none, LEVEL: full}
            stages:
              api: {extends: svc-test, env: {SERVICE: api, LEVEL: quick}}
              web: {extends: svc-test, env: {SERVICE: web, LEVEL: full}}
            ",
        )
        .args(["run"])
        .run();
    assert_eq!(out.read("api.out"), "api quick\n");
    assert_eq!(out.read("web.out"), "web full\n");
    assert_eq!(out.status().stage_names(), ["api", "web"]);
    out.pipeline("version: 1\ntemplates:\n  base: {run: 'true'}\nstages:\n  a: {extends: bsae}\n");
    let bad = out.murphy(["validate"]).code(2).run();
    assert!(
        bad.stderr.starts_with(
            "error: pipeline.yml:5:16: `extends: bsae` names no template or stage (did you mean `base`?)"
        ),
        "{}",
        bad.stderr
    );
}

/// A matrix stage runs once per combination (less `exclude`), each instance with its values
/// in `MATRIX_*`; `needs` waits for all; one failing instance stops what needs the stage; a
/// selector runs only the instances it names.
#[test]
fn matrix_instances_run_with_their_values_and_can_be_selected() {
    let pipeline = "
        version: 1
        stages:
          integration:
            run: 'echo \"$MATRIX_DEP $MATRIX_PYTHON\" | tee -a ran.txt; test \"$MATRIX_DEP\" != bad'
            matrix:
              dep: [\"3006\", \"3007\", bad]
              python: [\"3.10\", \"3.12\"]
              exclude: [{dep: bad, python: \"3.12\"}]
          report: {needs: [integration], run: 'echo report >> ran.txt'}
    ";
    let out = Test::new()
        .pipeline(pipeline)
        .args(["run", "-j", "2"])
        .code(1)
        .run();
    let mut ran: Vec<String> = out.read("ran.txt").lines().map(str::to_owned).collect();
    ran.sort();
    assert_eq!(
        ran,
        [
            "3006 3.10",
            "3006 3.12",
            "3007 3.10",
            "3007 3.12",
            "bad 3.10"
        ]
    );
    let report = out.status();
    assert_eq!(report.stage("report").state, "skipped");
    assert!(
        report
            .stage("report")
            .reason()
            .contains("integration[dep=bad,python=3.10]")
    );
    std::fs::remove_file(out.file("ran.txt")).unwrap();
    out.murphy(["run", "integration[dep=3006,*]"]).run();
    // The two instances run side by side: which writes first is up to the scheduler.
    let mut selected: Vec<String> = out.read("ran.txt").lines().map(str::to_owned).collect();
    selected.sort();
    assert_eq!(selected, ["3006 3.10", "3006 3.12"]);
    let log = out
        .murphy(["logs", "integration[dep=3006,python=3.10]"])
        .run();
    assert!(log.stdout.contains("MATRIX_DEP"), "{}", log.stdout);
    assert!(log.stdout.contains("\n3006 3.10\n"), "{}", log.stdout);
}

/// `--force` and `--from` take a matrix stage's name (all its instances) or a selector, as
/// `murphy run` does.
#[test]
fn force_takes_a_matrix_stage_or_a_selector() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              t: {inputs: [in.txt], run: 'echo $MATRIX_V >> ran.txt', matrix: {v: [a, b]}}
            ",
        )
        .write("in.txt", "x\n")
        .args(["run"])
        .run();
    out.murphy(["run", "--force=t"]).run();
    out.murphy(["run", "--force=t[v=b]"]).run();
    let mut ran: Vec<String> = out.read("ran.txt").lines().map(str::to_owned).collect();
    ran.sort();
    assert_eq!(ran, ["a", "a", "b", "b", "b"]);
}
