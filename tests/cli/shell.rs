//! `shell:`: scripts stop at their first failing command, `bash` fails a broken pipe, and a
//! template gets the script as a file; a plain one-line command runs without a shell.

use crate::support::Test;

#[test]
fn a_script_stops_at_its_first_failing_command() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              block:
                run: |
                  false
                  touch block-went-on
              list: {run: ['false; touch list-went-on', 'touch second-command-ran']}
            ",
        )
        .args(["run", "--keep-going"])
        .code(1)
        .run();
    let run = out.status();
    for name in ["block", "list"] {
        assert_eq!(run.stage(name).state, "failed", "{name}");
        assert_eq!(run.stage(name).exit_code, Some(1), "{name}");
    }
    for file in ["block-went-on", "list-went-on", "second-command-ran"] {
        assert!(!out.file(file).exists(), "{file} exists");
    }
}

#[test]
fn bash_fails_a_broken_pipe_and_sh_is_the_default() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            shell: bash
            stages:
              bash-by-default: {run: false | true}
              sh-by-choice: {shell: sh, run: false | true}
              bash-features: {run: '[[ $BASH_VERSION ]] && shopt -qo pipefail'}
            ",
        )
        .args(["run", "--keep-going"])
        .code(1)
        .run();
    let run = out.status();
    assert_eq!(run.stage("bash-by-default").state, "failed");
    assert_eq!(run.stage("bash-by-default").exit_code, Some(1));
    // POSIX sh has no pipefail: a pipe's status is its last command's.
    assert_eq!(run.stage("sh-by-choice").state, "succeeded");
    assert_eq!(run.stage("bash-features").state, "succeeded");
}

#[test]
fn a_template_gets_the_script_as_a_file_that_is_removed_after() {
    let out = Test::new()
        .write("sub/keep", "")
        .pipeline(
            r#"
            version: 1
            stages:
              py:
                shell: python3 {0}
                workdir: sub
                run: |
                  import sys
                  with open("from-python.txt", "w") as f:
                      f.write("it's \"quoted\"\n" + sys.argv[0] + "\n")
              traced:
                shell: bash -x {0}
                run: |
                  echo "a  b"
              failing:
                shell: python3 {0}
                run: raise SystemExit(7)
            "#,
        )
        .args(["run", "--keep-going"])
        .code(1)
        .run();
    let run = out.status();
    assert_eq!(run.stage("py").state, "succeeded");
    assert_eq!(run.stage("traced").state, "succeeded");
    assert_eq!(run.stage("failing").exit_code, Some(7));
    let written = out.read("sub/from-python.txt");
    let (quoted, script) = written.split_once('\n').unwrap();
    assert_eq!(quoted, "it's \"quoted\"");
    // The script was a file of the run, by absolute path (the stage ran in `sub`)...
    let script = std::path::Path::new(script.trim_end());
    let run_dir = out.file(".murphy/runs").join(&run.run_id);
    assert!(script.starts_with(&run_dir), "{}", script.display());
    assert_eq!(script.extension().unwrap(), "py");
    // ...and is gone now.
    assert!(!script.exists(), "{}", script.display());
    let leftovers: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("script"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let log = out.read(&format!(".murphy/runs/{}/logs/traced.log", run.run_id));
    // The trace (stderr) and the output (stdout) come through two pipes, in either order.
    assert!(log.contains("+ echo 'a  b'\n"), "{log}");
    assert!(log.contains("\na  b\n"), "{log}");
}

#[test]
fn changing_the_shell_runs_a_cached_stage_again() {
    let pipeline = |shell: &str| {
        format!(
            "version: 1\nstages:\n  build: {{shell: {shell}, inputs: [in.txt], outputs: [out.txt], run: cp in.txt out.txt}}\n"
        )
    };
    let out = Test::new()
        .write("in.txt", "x\n")
        .pipeline(&pipeline("sh"))
        .args(["run"])
        .run();
    out.murphy(["run"]).run();
    assert_eq!(out.status().stage("build").state, "cached");
    out.pipeline(&pipeline("bash"));
    out.murphy(["run"]).run();
    let run = out.status();
    assert_eq!(run.stage("build").state, "succeeded");
    assert_eq!(run.stage("build").why(), "its shell changed");
}

#[test]
fn a_publish_command_runs_in_the_stage_shell() {
    let pipeline = |shell: &str| {
        format!(
            "
            version: 1
            shell: {shell}
            stages:
              release:
                when: {{trigger: local}}
                publish: [{{command: {{run: 'false | true; touch published'}}}}]
            "
        )
    };
    let out = Test::new()
        .pipeline(&pipeline("bash"))
        .args(["run"])
        .code(1)
        .run();
    assert_eq!(out.status().stage("release").state, "failed");
    assert!(!out.file("published").exists());
    out.pipeline(&pipeline("sh"));
    out.murphy(["run"]).run();
    assert!(out.file("published").exists());
}

/// A one-line command with nothing for a shell to do runs without one, as make runs it; any
/// other script, and a plain command whose program is missing, still go through `sh`.
#[test]
fn a_plain_command_skips_the_shell_unless_its_program_is_missing() {
    use std::os::unix::fs::PermissionsExt;
    let test = Test::new();
    let root = test.path().to_owned();
    // An `sh` found first on PATH that notes each script it is given.
    let shim = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}/shell-calls\nexec /bin/sh \"$@\"\n",
        root.display()
    );
    let test = test.write("shim/sh", &shim);
    std::fs::set_permissions(root.join("shim/sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}/shim:{}", root.display(), std::env::var("PATH").unwrap());
    let out = test
        .write("sub/keep", "")
        .env("PATH", &path)
        .pipeline(
            "
            version: 1
            stages:
              plain: {workdir: sub, run: env}
              scripted: {run: touch a; touch b}
              missing: {run: no-such-program --flag}
            ",
        )
        .args(["run", "--keep-going"])
        .code(1)
        .run();
    let run = out.status();
    assert_eq!(run.stage("plain").state, "succeeded");
    assert_eq!(run.stage("scripted").state, "succeeded");
    assert_eq!(run.stage("missing").state, "failed");
    assert_eq!(run.stage("missing").exit_code, Some(127));
    let calls = out.read("shell-calls");
    let mut calls: Vec<&str> = calls.lines().collect();
    calls.sort();
    assert_eq!(
        calls,
        ["-e -c no-such-program --flag", "-e -c touch a; touch b"]
    );
    let logs = out.file(".murphy/runs").join(&run.run_id).join("logs");
    let missing = std::fs::read_to_string(logs.join("missing.log")).unwrap();
    assert!(missing.contains("no-such-program: not found"), "{missing}");
    // Without a shell, the program still finds its directory in `PWD`, as `sh` exports it.
    let plain = std::fs::read_to_string(logs.join("plain.log")).unwrap();
    let pwd = format!("\nPWD={}\n", root.join("sub").display());
    assert!(plain.contains(&pwd), "{plain}");
}
