//! `include:`: one pipeline assembled from files of the project (`path:`) and files of git
//! repositories (`git:`, pinned in `pipeline.lock` by `murphy lock`). The repositories are
//! real ones made with the `git` command in the test's temp dir and served as `file://` URLs
//! (or relative paths); every pipeline is really run.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{Output, Test, commit, git, parse_json, unindent};

/// Runs `murphy ARGS` on a pipeline that must be refused, and checks its whole stderr, given
/// line by line; nothing may run or be recorded.
fn assert_refused(out: &Output, args: &[&str], expected: &[&str]) {
    let refused = out.murphy(args.iter().copied()).code(2).run();
    assert_eq!(refused.stderr, expected.join("\n") + "\n");
    assert_eq!(refused.stdout, "");
    assert!(
        !out.file(".murphy/runs").exists(),
        "nothing is run or recorded"
    );
}

/// `murphy status --json` as JSON, for the keys [`crate::support::RunView`] does not know.
fn status_json(out: &Output) -> serde_json::Value {
    parse_json(&out.murphy(["status", "--json"]).run().stdout)
}

/// Each stage's `from` in `murphy status --json`, by name.
fn froms(out: &Output) -> Vec<(String, String)> {
    status_json(out)["stages"]
        .as_array()
        .expect("`stages` is a list")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["from"].as_str().unwrap_or("<none>").to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// `path:` includes

const COMMON: &str = "
    version: 1
    owner: core
    env: {SHARED: included, ONLY_INCLUDED: kept}
    templates:
      shout: {env: {LOUD: 'yes'}}
    stages:
      build: {run: 'echo built by common > built.txt'}
      package: {needs: [test], run: 'cp env.txt packaged.txt'}
";

#[test]
fn a_path_include_brings_its_stages_env_and_templates_and_shows_where_each_stage_came_from() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            name: demo
            include:
              - path: stages/common.yml
            env: {WHO: project, SHARED: project}
            stages:
              test:
                extends: shout
                needs: [build]
                run: 'echo \"WHO=$WHO SHARED=$SHARED ONLY=$ONLY_INCLUDED LOUD=$LOUD\" > env.txt && cat built.txt >> env.txt'
            ",
        )
        .write("stages/common.yml", &unindent(COMMON))
        .args(["run"])
        .run();

    // The including file's `env` wins; a key only the included file sets is kept; the
    // template of the included file is there to extend; `needs` cross files both ways.
    let expected = "WHO=project SHARED=project ONLY=kept LOUD=yes\nbuilt by common\n";
    assert_eq!(out.read("env.txt"), expected);
    assert_eq!(out.read("packaged.txt"), expected);
    let run = out.status();
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.stage_names(), ["build", "package", "test"]);
    assert!(run.stage("build").finished() <= run.stage("test").started());
    assert!(run.stage("test").finished() <= run.stage("package").started());

    assert_eq!(
        out.murphy(["graph"]).run().stdout,
        [
            "build              [stages/common.yml, owner core]",
            "test     <- build  [pipeline.yml]",
            "package  <- test   [stages/common.yml, owner core]",
        ]
        .join("\n")
            + "\n"
    );
}

#[test]
fn graph_and_status_name_the_file_and_owner_of_each_stage() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            name: demo
            include:
              - path: stages/common.yml
            stages:
              test: {needs: [build], run: 'echo tested > tested.txt'}
            ",
        )
        .write(
            "stages/common.yml",
            &unindent(
                "
                version: 1
                owner: core
                stages:
                  build: {run: 'echo built > built.txt'}
                ",
            ),
        )
        .args(["run"])
        .run();
    assert_eq!(out.read("tested.txt"), "tested\n");

    assert_eq!(
        out.murphy(["graph"]).run().stdout,
        "build            [stages/common.yml, owner core]\n\
         test   <- build  [pipeline.yml]\n"
    );
    let dot = out.murphy(["graph", "--format", "dot"]).run().stdout;
    for part in [
        "  subgraph cluster_0 {\n    label=\"stages/common.yml, owner core\";\n    \"build\";\n  }\n",
        "  subgraph cluster_1 {\n    label=\"pipeline.yml\";\n    \"test\";\n  }\n",
        "  \"build\" -> \"test\";\n",
    ] {
        assert!(dot.contains(part), "no {part:?} in:\n{dot}");
    }
    let mermaid = out.murphy(["graph", "--format", "mermaid"]).run().stdout;
    for part in [
        "  subgraph f0[\"stages/common.yml, owner core\"]\n  s0[\"build\"]\n  end\n",
        "  subgraph f1[\"pipeline.yml\"]\n  s1[\"test\"]\n  end\n",
        "  s0 --> s1\n",
    ] {
        assert!(mermaid.contains(part), "no {part:?} in:\n{mermaid}");
    }

    let status = out.murphy(["status"]).run().stdout;
    let lines: Vec<&str> = status.lines().collect();
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&header[..3], ["STAGE", "FROM", "STATE"], "{status}");
    assert!(
        lines[2].starts_with("build  stages/common.yml, owner core  succeeded"),
        "{status}"
    );
    assert!(
        lines[3].starts_with("test   pipeline.yml                   succeeded"),
        "{status}"
    );
    assert_eq!(
        froms(&out),
        pairs(&[
            ("build", "stages/common.yml, owner core"),
            ("test", "pipeline.yml")
        ])
    );
}

#[test]
fn a_pipeline_of_one_file_shows_no_origins() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build: {run: 'true'}
              test: {needs: [build], run: 'true'}
            ",
        )
        .args(["run"])
        .run();
    assert_eq!(
        out.murphy(["graph"]).run().stdout,
        "build\ntest   <- build\n"
    );
    let status = out.murphy(["status"]).run().stdout;
    assert!(!status.contains("FROM"), "{status}");
    assert_eq!(
        froms(&out),
        pairs(&[("build", "<none>"), ("test", "<none>")])
    );
}

#[test]
fn a_stage_both_files_define_is_refused_naming_both_places() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            include:
              - path: stages/common.yml
            stages:
              lint: {run: 'touch lint-ran'}
              test: {run: 'touch mine-ran'}
            ",
        )
        .write(
            "stages/common.yml",
            &unindent(
                "
                version: 1
                stages:
                  build: {run: 'touch build-ran'}
                  test: {run: 'touch theirs-ran'}
                ",
            ),
        )
        .args(["runs"])
        .run();
    assert_refused(
        &out,
        &["run"],
        &[
            "error: pipeline.yml:6:3: stage `test` is defined in two files; rename one, or say `override: true` on the one in `pipeline.yml` to replace the included one",
            "  |",
            "6 |   test: {run: 'touch mine-ran'}",
            "  |   ^^^^",
            "  = note: also defined at stages/common.yml:4:3",
        ],
    );
    for file in ["lint-ran", "build-ran", "mine-ran", "theirs-ran"] {
        assert!(!out.file(file).exists(), "{file}: nothing runs");
    }
}

#[test]
fn a_template_both_files_define_is_refused_too() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            include:
              - path: common.yml
            templates:
              base: {run: 'true'}
            stages:
              a: {extends: base}
            ",
        )
        .write(
            "common.yml",
            "version: 1\ntemplates:\n  base: {run: 'false'}\n",
        )
        .args(["runs"])
        .run();
    assert_refused(
        &out,
        &["validate"],
        &[
            "error: pipeline.yml:5:3: template `base` is defined in two files; rename one, or say `override: true` on the one in `pipeline.yml` to replace the included one",
            "  |",
            "5 |   base: {run: 'true'}",
            "  |   ^^^^",
            "  = note: also defined at common.yml:3:3",
        ],
    );
}

#[test]
fn override_true_replaces_the_included_stage_whole_and_keeps_its_place() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            include:
              - path: stages/common.yml
            stages:
              test: {needs: [build], run: 'echo tested >> ran.txt'}
              build:
                override: true
                run: 'echo \"mine flavor=${FLAVOR:-none}\" >> ran.txt'
            ",
        )
        .write(
            "stages/common.yml",
            &unindent(
                "
                version: 1
                stages:
                  build: {env: {FLAVOR: theirs}, run: 'echo theirs >> ran.txt'}
                  lint: {run: 'echo linted >> lint.txt'}
                ",
            ),
        )
        .args(["run"])
        .run();
    // The included `build` neither ran nor lent its `env` to the one that replaced it.
    assert_eq!(out.read("ran.txt"), "mine flavor=none\ntested\n");
    assert_eq!(out.read("lint.txt"), "linted\n");
    let run = out.status();
    assert_eq!(run.stage_names(), ["build", "lint", "test"]);
    assert_eq!(
        froms(&out),
        pairs(&[
            ("build", "pipeline.yml"),
            ("lint", "stages/common.yml"),
            ("test", "pipeline.yml"),
        ])
    );
}

#[test]
fn override_true_with_nothing_to_replace_is_refused() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            include:
              - path: stages/common.yml
            stages:
              tset: {override: true, run: 'touch ran'}
            ",
        )
        .write(
            "stages/common.yml",
            "version: 1\nstages:\n  test: {run: 'touch ran'}\n",
        )
        .args(["runs"])
        .run();
    assert_refused(
        &out,
        &["run"],
        &[
            "error: pipeline.yml:5:20: `override: true`, but no included file defines a stage `tset` to replace",
            "  |",
            "5 |   tset: {override: true, run: 'touch ran'}",
            "  |                    ^^^^",
        ],
    );
    assert!(!out.file("ran").exists());
}

#[test]
fn two_included_files_defining_one_stage_are_refused() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            include:
              - path: stages/rust.yml
              - path: stages/python.yml
            stages: {}
            ",
        )
        .write(
            "stages/rust.yml",
            "version: 1\nstages:\n  lint: {run: 'touch rust-ran'}\n",
        )
        .write(
            "stages/python.yml",
            "version: 1\nstages:\n  fmt: {run: 'true'}\n  lint: {run: 'touch python-ran'}\n",
        )
        .args(["runs"])
        .run();
    assert_refused(
        &out,
        &["run"],
        &[
            "error: stages/python.yml:4:3: stage `lint` is defined in two files; rename one of them",
            "  |",
            "4 |   lint: {run: 'touch python-ran'}",
            "  |   ^^^^",
            "  = note: also defined at stages/rust.yml:3:3",
        ],
    );
}

#[test]
fn project_settings_are_refused_in_an_included_file() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            include:
              - path: stages/common.yml
            stages: {}
            ",
        )
        .write(
            "stages/common.yml",
            &unindent(
                "
                version: 1
                stages:
                  a: {run: 'touch ran'}
                notify:
                  - webhook: {url: 'http://127.0.0.1:9/hook', on: [failure]}
                ",
            ),
        )
        .args(["runs"])
        .run();
    assert_refused(
        &out,
        &["run"],
        &[
            "error: stages/common.yml:4:1: `notify` describes the project and belongs in its own pipeline file, not in an included one",
            "  |",
            "4 | notify:",
            "  | ^^^^^^^",
        ],
    );
    out.write(
        "stages/common.yml",
        "version: 1\nrelease_tags: 'v*'\nstages: {}\n",
    );
    let refused = out.murphy(["validate"]).code(2).run();
    assert!(
        refused.stderr.starts_with("error: stages/common.yml:2:1: `release_tags` describes the project and belongs in its own pipeline file, not in an included one\n"),
        "{}",
        refused.stderr
    );
}

#[test]
fn an_include_cycle_is_refused_with_its_chain() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            include:
              - path: stages/a.yml
            stages:
              mine: {run: 'touch ran'}
            ",
        )
        .write(
            "stages/a.yml",
            "version: 1\ninclude:\n  - path: b.yml\nstages:\n  a: {run: 'touch ran'}\n",
        )
        .write(
            "stages/b.yml",
            "version: 1\ninclude:\n  - path: a.yml\nstages:\n  b: {run: 'touch ran'}\n",
        )
        .args(["runs"])
        .run();
    assert_refused(
        &out,
        &["run"],
        &[
            "error: stages/b.yml:3:5: include cycle: stages/a.yml -> stages/b.yml -> stages/a.yml",
            "  |",
            "3 |   - path: a.yml",
            "  |     ^",
        ],
    );

    // Back to the including file itself.
    out.write(
        "stages/b.yml",
        "version: 1\ninclude:\n  - path: ../pipeline.yml\nstages:\n  b: {run: 'touch ran'}\n",
    );
    assert_refused(
        &out,
        &["run"],
        &[
            "error: stages/b.yml:3:5: include cycle: pipeline.yml -> stages/a.yml -> stages/b.yml -> pipeline.yml",
            "  |",
            "3 |   - path: ../pipeline.yml",
            "  |     ^",
        ],
    );

    // A file that includes itself.
    out.write(
        "stages/a.yml",
        "version: 1\ninclude:\n  - path: ./a.yml\nstages:\n  a: {run: 'touch ran'}\n",
    );
    assert_refused(
        &out,
        &["validate"],
        &[
            "error: stages/a.yml:3:5: include cycle: stages/a.yml -> stages/a.yml",
            "  |",
            "3 |   - path: ./a.yml",
            "  |     ^",
        ],
    );
    assert!(!out.file("ran").exists());
}

#[test]
fn a_file_two_files_include_is_read_once() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            include:
              - path: stages/rust.yml
              - path: stages/python.yml
            stages:
              all: {needs: [cargo, pytest, setup], run: 'echo all >> ran.txt'}
            ",
        )
        .write(
            "stages/rust.yml",
            "version: 1\ninclude:\n  - path: setup.yml\nstages:\n  cargo: {needs: [setup], run: 'echo cargo >> cargo.txt'}\n",
        )
        .write(
            "stages/python.yml",
            "version: 1\ninclude:\n  - path: ../stages/setup.yml\nstages:\n  pytest: {needs: [setup], run: 'echo pytest >> pytest.txt'}\n",
        )
        .write(
            "stages/setup.yml",
            "version: 1\nstages:\n  setup: {run: 'echo setup >> setup.txt'}\n",
        )
        .args(["run"])
        .run();
    assert_eq!(out.read("setup.txt"), "setup\n");
    assert_eq!(out.read("ran.txt"), "all\n");
    assert_eq!(
        out.status().stage_names(),
        ["setup", "cargo", "pytest", "all"]
    );
}

// ---------------------------------------------------------------------------------------------
// `git:` includes

/// A repository pipelines include from: a bare `NAME.git` (what `git:` points at) and a clone
/// `NAME-work` beside it that its maintainers push `main` from.
struct Upstream {
    bare: PathBuf,
    work: PathBuf,
}

impl Upstream {
    fn new(root: &Path, name: &str) -> Upstream {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}-work"));
        let (bare_arg, work_arg) = (bare.to_str().unwrap(), work.to_str().unwrap());
        git(root, ["init", "-q", "--bare", "-b", "main", bare_arg]);
        git(root, ["init", "-q", "-b", "main", work_arg]);
        git(&work, ["remote", "add", "origin", bare_arg]);
        Upstream { bare, work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Writes `files` (unindented) in the clone, commits them and pushes `main`; returns the
    /// commit.
    fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, text) in files {
            let path = self.work.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, unindent(text)).unwrap();
        }
        let sha = commit(&self.work, message);
        git(&self.work, ["push", "-q", "origin", "main"]);
        sha
    }

    /// Tags the clone's `HEAD` and pushes the tag.
    fn tag(&self, tag: &str) {
        git(&self.work, ["tag", tag]);
        git(&self.work, ["push", "-q", "origin", tag]);
    }
}

fn short(commit: &str) -> &str {
    &commit[..12]
}

/// `base.yml` as first published: `test` appends `one` to `test.txt`, `old` leaves a mark.
const BASE_V1: &str = "
    version: 1
    stages:
      test: {run: 'echo one >> test.txt'}
      old: {run: 'touch old-ran'}
";

/// `base.yml` moved on: `test` changed, `new` added, `old` removed.
const BASE_V2: &str = "
    version: 1
    stages:
      test: {run: 'echo two >> test.txt'}
      new: {run: 'touch new-ran'}
";

/// A project pipeline including `file` of `url` at `reference`, with a stage of its own that
/// needs the included `test`.
fn project(url: &str, reference: &str, file: &str) -> String {
    unindent(&format!(
        "
        version: 1
        name: demo
        include:
          - git: {url}
            ref: {reference}
            file: {file}
        stages:
          after: {{needs: [test], run: 'echo after >> after.txt'}}
        "
    ))
}

/// A project in a fresh temp dir including `base.yml` (v1, on `main` and tagged `v1`) of a
/// repository `pipelines` beside it, at `reference` ("" for the commit itself), not locked yet.
fn git_project(reference: &str) -> (Output, Upstream, String) {
    let test = Test::new();
    let upstream = Upstream::new(test.path(), "pipelines");
    let v1 = upstream.push(&[("base.yml", BASE_V1)], "Base pipeline");
    upstream.tag("v1");
    let reference = if reference.is_empty() { &v1 } else { reference };
    let out = test
        .write(
            "pipeline.yml",
            &project(&upstream.url(), reference, "base.yml"),
        )
        .args(["runs"])
        .run();
    (out, upstream, v1)
}

/// The lock file, parsed.
fn lock_json(out: &Output) -> serde_json::Value {
    parse_json(&out.read("pipeline.lock"))
}

#[test]
fn a_git_include_runs_only_once_locked_and_at_the_locked_commit_until_updated() {
    let (out, upstream, v1) = git_project("main");
    let url = upstream.url();

    // No lock yet: refused, nothing runs.
    let refused = out.murphy(["run"]).code(2).run();
    assert_eq!(
        refused.stderr,
        format!(
            "error: `pipeline.lock` does not match the git includes of `pipeline.yml`; run `murphy lock` and commit the lock file:\n  \
             there is no `pipeline.lock` yet\n  \
             `pipeline.yml` includes `pipelines@main:base.yml` ({url}), which is not pinned\n"
        )
    );
    assert!(out.runs().is_empty(), "no run is recorded");
    assert!(!out.file("test.txt").exists());

    let locked = out.murphy(["lock"]).run();
    assert_eq!(
        locked.stdout,
        format!(
            "pinned `pipelines@main:base.yml` ({url}) at {}\n\
             wrote pipeline.lock (1 pinned); commit it with the project\n",
            short(&v1)
        )
    );
    let lock = lock_json(&out);
    assert_eq!(lock["version"], 1, "{lock:#}");
    let pin = &lock["includes"][0];
    assert_eq!(pin["name"], "pipelines", "{lock:#}");
    assert_eq!(pin["git"], url.as_str(), "{lock:#}");
    assert_eq!(pin["ref"], "main", "{lock:#}");
    assert_eq!(pin["file"], "base.yml", "{lock:#}");
    assert_eq!(pin["commit"], v1.as_str(), "{lock:#}");
    assert_eq!(
        pin["digest"],
        blake3::hash(unindent(BASE_V1).as_bytes()).to_hex().as_str(),
        "the digest is BLAKE3 of the file's bytes: {lock:#}"
    );
    assert!(
        out.file(".murphy/includes").is_dir(),
        "the repository is cached in the state dir"
    );

    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\n");
    assert_eq!(out.read("after.txt"), "after\n");
    assert!(out.file("old-ran").exists());
    assert_eq!(
        froms(&out),
        pairs(&[
            ("test", "pipelines@main:base.yml"),
            ("old", "pipelines@main:base.yml"),
            ("after", "pipeline.yml"),
        ])
    );
    assert_eq!(
        out.murphy(["graph"]).run().stdout,
        "test            [pipelines@main:base.yml]\n\
         old             [pipelines@main:base.yml]\n\
         after  <- test  [pipeline.yml]\n"
    );

    // `main` moves on upstream; the project keeps reading the locked commit.
    let v2 = upstream.push(&[("base.yml", BASE_V2)], "Base pipeline, take two");
    fs::remove_file(out.file("old-ran")).unwrap();
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\none\n", "the locked commit ran");
    assert!(out.file("old-ran").exists());
    assert!(!out.file("new-ran").exists());

    // `murphy lock` never moves a pin.
    let before = out.read("pipeline.lock");
    assert_eq!(
        out.murphy(["lock"]).run().stdout,
        "pipeline.lock is up to date (1 pinned)\n"
    );
    assert_eq!(out.read("pipeline.lock"), before);

    // `--update NAME` does, and says what changed, stage by stage.
    let updated = out.murphy(["lock", "--update", "pipelines"]).run();
    assert_eq!(
        updated.stdout,
        format!(
            "moved `pipelines@main:base.yml` ({url}) from {} to {}\n  \
             stage `test` changed: run\n  \
             stage `new` added\n  \
             stage `old` removed\n\
             wrote pipeline.lock (1 pinned); commit it with the project\n",
            short(&v1),
            short(&v2)
        )
    );
    assert_eq!(lock_json(&out)["includes"][0]["commit"], v2.as_str());
    fs::remove_file(out.file("old-ran")).unwrap();
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\none\ntwo\n");
    assert!(out.file("new-ran").exists());
    assert!(!out.file("old-ran").exists());
    assert_eq!(out.status().stage_names(), ["test", "new", "after"]);

    // Nothing left to move.
    assert_eq!(
        out.murphy(["lock", "--update"]).run().stdout,
        "pipeline.lock is up to date (1 pinned)\n"
    );

    // The same moves, for a machine.
    let v3 = upstream.push(&[("base.yml", BASE_V1)], "Back to one");
    let json: serde_json::Value =
        parse_json(&out.murphy(["lock", "--update", "--json"]).run().stdout);
    assert_eq!(json["written"], true, "{json:#}");
    assert_eq!(
        json["changes"],
        serde_json::json!([{
            "kind": "moved",
            "name": "pipelines",
            "include": format!("`pipelines@main:base.yml` ({url})"),
            "from": v2,
            "to": v3,
        }]),
        "{json:#}"
    );
    assert_eq!(json["pins"][0]["commit"], v3.as_str(), "{json:#}");
    assert_eq!(
        json["stage_changes"],
        serde_json::json!([
            "stage `test` changed: run",
            "stage `old` added",
            "stage `new` removed"
        ]),
        "{json:#}"
    );
    assert_eq!(lock_json(&out)["includes"][0]["commit"], v3.as_str());
    let unchanged: serde_json::Value = parse_json(&out.murphy(["lock", "--json"]).run().stdout);
    assert_eq!(unchanged["written"], false, "{unchanged:#}");
    assert_eq!(unchanged["changes"], serde_json::json!([]), "{unchanged:#}");
}

#[test]
fn a_git_include_may_name_a_tag_or_a_commit() {
    let (out, upstream, v1) = git_project("v1");
    let url = upstream.url();
    let v2 = upstream.push(&[("base.yml", BASE_V2)], "Take two");
    let v3 = upstream.push(
        &[(
            "base.yml",
            "version: 1\nstages:\n  test: {run: 'echo three >> test.txt'}\n",
        )],
        "Take three",
    );

    // A tag: its commit, though `main` moved on.
    assert_eq!(
        out.murphy(["lock"]).run().stdout,
        format!(
            "pinned `pipelines@v1:base.yml` ({url}) at {}\n\
             wrote pipeline.lock (1 pinned); commit it with the project\n",
            short(&v1)
        )
    );
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\n");
    assert_eq!(
        out.murphy(["lock", "--update", "pipelines"]).run().stdout,
        "pipeline.lock is up to date (1 pinned)\n",
        "the tag did not move"
    );

    // A commit id, neither `main` nor a tag.
    out.write("pipeline.yml", &project(&url, &v2, "base.yml"));
    assert_eq!(
        out.murphy(["lock"]).run().stdout,
        format!(
            "pinned `pipelines@{v2}:base.yml` ({url}) at {}\n\
             dropped `pipelines@v1:base.yml` ({url}): no file includes it any more\n\
             wrote pipeline.lock (1 pinned); commit it with the project\n",
            short(&v2)
        )
    );
    let lock = lock_json(&out);
    assert_eq!(lock["includes"].as_array().unwrap().len(), 1, "{lock:#}");
    assert_eq!(lock["includes"][0]["commit"], v2.as_str(), "{lock:#}");
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\ntwo\n");
    assert_eq!(
        out.murphy(["lock", "--update"]).run().stdout,
        "pipeline.lock is up to date (1 pinned)\n",
        "a commit never moves"
    );

    // `main`, for contrast: the newest commit.
    out.write("pipeline.yml", &project(&url, "main", "base.yml"));
    out.murphy(["lock"]).run();
    assert_eq!(lock_json(&out)["includes"][0]["commit"], v3.as_str());
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\ntwo\nthree\n");
}

#[test]
fn a_lock_that_no_longer_matches_the_includes_is_refused() {
    let (out, upstream, _) = git_project("main");
    let url = upstream.url();
    upstream.push(
        &[(
            "other.yml",
            "version: 1\nstages:\n  test: {run: 'echo other >> test.txt'}\n",
        )],
        "Another file",
    );
    out.murphy(["lock"]).run();
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\n");
    let runs = out.runs().len();

    // Another ref.
    out.write("pipeline.yml", &project(&url, "v1", "base.yml"));
    let refused = out.murphy(["run"]).code(2).run();
    assert_eq!(
        refused.stderr,
        format!(
            "error: `pipeline.lock` does not match the git includes of `pipeline.yml`; run `murphy lock` and commit the lock file:\n  \
             `pipeline.yml` includes `pipelines@v1:base.yml` ({url}), which is not pinned\n  \
             `pipeline.lock` pins `pipelines@main:base.yml` ({url}), which no file includes any more\n"
        )
    );

    // Another file.
    out.write("pipeline.yml", &project(&url, "main", "other.yml"));
    let refused = out.murphy(["run"]).code(2).run();
    assert_eq!(
        refused.stderr,
        format!(
            "error: `pipeline.lock` does not match the git includes of `pipeline.yml`; run `murphy lock` and commit the lock file:\n  \
             `pipeline.yml` includes `pipelines@main:other.yml` ({url}), which is not pinned\n  \
             `pipeline.lock` pins `pipelines@main:base.yml` ({url}), which no file includes any more\n"
        )
    );
    // `validate` and `graph` read the same lock.
    out.murphy(["validate"]).code(2).run();
    out.murphy(["graph"]).code(2).run();
    assert_eq!(out.runs().len(), runs, "no run is recorded");
    assert_eq!(out.read("test.txt"), "one\n", "nothing ran");

    out.murphy(["lock"]).run();
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\nother\n");
}

#[test]
fn a_locked_pipeline_runs_from_the_cache_when_the_repository_is_gone() {
    let (out, upstream, _) = git_project("main");
    out.murphy(["lock"]).run();
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\n");

    fs::remove_dir_all(&upstream.bare).unwrap();
    fs::remove_dir_all(&upstream.work).unwrap();
    out.murphy(["validate"]).run();
    out.murphy(["run", "--force"]).run();
    assert_eq!(out.read("test.txt"), "one\none\n");
    assert_eq!(out.status().status, "succeeded");

    // Without the cache too, there is nothing left to read the file from.
    fs::remove_dir_all(out.file(".murphy/includes")).unwrap();
    let refused = out.murphy(["run", "--force"]).code(2).run();
    let first = refused.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: pipeline.yml:4:") && first.contains(&upstream.url()),
        "the error names the repository it cannot fetch:\n{}",
        refused.stderr
    );
    assert_eq!(out.read("test.txt"), "one\none\n");
}

#[test]
fn a_lock_whose_digest_was_altered_is_refused() {
    let (out, upstream, v1) = git_project("main");
    let url = upstream.url();
    out.murphy(["lock"]).run();
    let lock = out.read("pipeline.lock");
    let digest = lock_json(&out)["includes"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged = blake3::hash(b"version: 1\nstages: {}\n")
        .to_hex()
        .to_string();
    out.write("pipeline.lock", &lock.replace(&digest, &forged));

    let refused = out.murphy(["run"]).code(2).run();
    assert!(
        refused.stderr.starts_with(&format!(
            "error: pipeline.yml:4:5: `pipelines@main:base.yml` ({url}) at commit {} is not the file `pipeline.lock` pinned (its digest differs)",
            short(&v1)
        )),
        "{}",
        refused.stderr
    );
    assert!(out.runs().is_empty(), "no run is recorded");
    assert!(!out.file("test.txt").exists());

    // As the message says, pinning afresh mends it.
    let mended = out.murphy(["lock", "--update", "pipelines"]).run();
    assert!(
        mended
            .stdout
            .ends_with("wrote pipeline.lock (1 pinned); commit it with the project\n"),
        "{}",
        mended.stdout
    );
    assert_eq!(out.read("pipeline.lock"), lock);
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\n");
}

#[test]
fn lock_update_of_an_unknown_name_is_refused() {
    let (out, _upstream, _) = git_project("main");
    out.murphy(["lock"]).run();
    let lock = out.read("pipeline.lock");

    let refused = out.murphy(["lock", "--update", "pipelnes"]).code(2).run();
    assert!(
        refused
            .stderr
            .contains("no git include is named `pipelnes` (did you mean `pipelines`?)"),
        "{}",
        refused.stderr
    );
    let refused = out.murphy(["lock", "--update", "zzz"]).code(2).run();
    assert!(
        refused.stderr.contains("no git include is named `zzz`"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("did you mean"),
        "{}",
        refused.stderr
    );
    assert_eq!(out.read("pipeline.lock"), lock, "the lock is left alone");
}

#[test]
fn a_git_included_file_includes_its_siblings_at_the_same_commit() {
    let test = Test::new();
    let upstream = Upstream::new(test.path(), "pipelines");
    let v1 = upstream.push(
        &[
            (
                "rust/base.yml",
                "version: 1\nowner: rust-team\ninclude:\n  - path: ../common/setup.yml\nstages:\n  cargo: {needs: [setup], run: 'echo cargo >> ran.txt'}\n",
            ),
            (
                "common/setup.yml",
                "version: 1\nstages:\n  setup: {run: 'echo setup one >> ran.txt'}\n",
            ),
        ],
        "Rust pipeline",
    );
    let out = test
        .write(
            "pipeline.yml",
            &unindent(&format!(
                "
            version: 1
            include:
              - git: {}
                ref: main
                file: rust/base.yml
            stages:
              all: {{needs: [cargo], run: 'echo all >> ran.txt'}}
            ",
                upstream.url()
            )),
        )
        .args(["lock"])
        .run();
    assert_eq!(lock_json(&out)["includes"][0]["commit"], v1.as_str());
    out.murphy(["run"]).run();
    assert_eq!(out.read("ran.txt"), "setup one\ncargo\nall\n");
    assert_eq!(
        froms(&out),
        pairs(&[
            ("setup", "pipelines@main:common/setup.yml"),
            ("cargo", "pipelines@main:rust/base.yml, owner rust-team"),
            ("all", "pipeline.yml"),
        ])
    );

    // The sibling changes upstream: still read at the locked commit.
    upstream.push(
        &[(
            "common/setup.yml",
            "version: 1\nstages:\n  setup: {run: 'echo setup two >> ran.txt'}\n",
        )],
        "Setup, take two",
    );
    out.murphy(["run", "--force"]).run();
    assert_eq!(
        out.read("ran.txt"),
        "setup one\ncargo\nall\nsetup one\ncargo\nall\n"
    );
    // What moved is shown stage by stage, the sibling file's stage included.
    let moved = out.murphy(["lock", "--update"]).run();
    assert!(
        moved.stdout.contains("\n  stage `setup` changed: run\n"),
        "{}",
        moved.stdout
    );
    out.murphy(["run", "--force"]).run();
    assert!(
        out.read("ran.txt")
            .ends_with("all\nsetup two\ncargo\nall\n"),
        "{}",
        out.read("ran.txt")
    );
}

#[test]
fn a_path_leaving_the_included_repository_is_refused() {
    let test = Test::new().write("x.yml", "version: 1\nstages:\n  x: {run: 'touch ran'}\n");
    let upstream = Upstream::new(test.path(), "pipelines");
    upstream.push(
        &[(
            "rust/base.yml",
            "version: 1\ninclude:\n  - path: ../../x.yml\nstages:\n  cargo: {run: 'touch ran'}\n",
        )],
        "Rust pipeline",
    );
    let out = test
        .write(
            "pipeline.yml",
            &project(&upstream.url(), "main", "rust/base.yml"),
        )
        .args(["lock"])
        .code(2)
        .run();
    assert_eq!(
        out.stderr,
        [
            "error: pipelines@main:rust/base.yml:3:11: `../../x.yml` leaves the repository this file comes from",
            "  |",
            "3 |   - path: ../../x.yml",
            "  |           ^^^^^^^^^^^",
            "",
        ]
        .join("\n")
    );
    assert!(!out.file("pipeline.lock").exists(), "no lock is written");
    assert!(!out.file("ran").exists());
}

#[test]
fn a_relative_git_path_is_taken_from_the_project_even_when_run_from_a_subdirectory() {
    let test = Test::new();
    let upstream = Upstream::new(test.path(), "pipelines");
    let v1 = upstream.push(&[("base.yml", BASE_V1)], "Base pipeline");
    let out = test
        .write(
            "project/pipeline.yml",
            &project("../pipelines.git", "main", "base.yml"),
        )
        .write("project/src/lib.rs", "")
        .cwd("project/src")
        .args(["lock"])
        .run();
    assert!(
        out.stdout.starts_with(&format!(
            "pinned `pipelines@main:base.yml` (../pipelines.git) at {}\n",
            short(&v1)
        )),
        "{}",
        out.stdout
    );
    let lock: serde_json::Value = parse_json(&out.read("project/pipeline.lock"));
    assert_eq!(
        lock["includes"][0]["git"], "../pipelines.git",
        "as written: {lock:#}"
    );
    assert_eq!(lock["includes"][0]["commit"], v1.as_str(), "{lock:#}");

    out.murphy(["run"]).cwd("project/src").run();
    assert_eq!(out.read("project/test.txt"), "one\n");
    assert_eq!(out.read("project/after.txt"), "after\n");
    out.murphy(["run"]).cwd("project").run();
    assert_eq!(out.read("project/test.txt"), "one\none\n");
    assert!(!out.file("project/src/test.txt").exists());
}

#[test]
fn an_include_given_a_name_is_pinned_and_updated_by_that_name() {
    let test = Test::new();
    let upstream = Upstream::new(test.path(), "pipelines");
    let v1 = upstream.push(&[("base.yml", BASE_V1)], "Base pipeline");
    let url = upstream.url();
    let out = test
        .pipeline(&format!(
            "
            version: 1
            include:
              - git: {url}
                ref: main
                file: base.yml
                name: shared
            stages: {{}}
            "
        ))
        .args(["lock"])
        .run();
    assert_eq!(
        out.stdout,
        format!(
            "pinned `shared@main:base.yml` ({url}) at {}\n\
             wrote pipeline.lock (1 pinned); commit it with the project\n",
            short(&v1)
        )
    );
    assert_eq!(lock_json(&out)["includes"][0]["name"], "shared");
    let v2 = upstream.push(&[("base.yml", BASE_V2)], "Take two");

    // The repository's name is not the include's name any more.
    let refused = out.murphy(["lock", "--update", "pipelines"]).code(2).run();
    assert!(
        refused
            .stderr
            .contains("no git include is named `pipelines`"),
        "{}",
        refused.stderr
    );
    assert_eq!(lock_json(&out)["includes"][0]["commit"], v1.as_str());

    let moved = out.murphy(["lock", "--update", "shared"]).run();
    assert!(
        moved.stdout.starts_with(&format!(
            "moved `shared@main:base.yml` ({url}) from {} to {}\n",
            short(&v1),
            short(&v2)
        )),
        "{}",
        moved.stdout
    );
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "two\n");
    // Every stage comes from one file that names no owner: nothing to tell apart.
    assert_eq!(froms(&out), pairs(&[("test", "<none>"), ("new", "<none>")]));
}

#[test]
fn plain_lock_does_not_take_an_altered_digest_for_a_moved_pin() {
    let (out, _upstream, _v1) = git_project("main");
    out.murphy(["lock"]).run();
    let lock = out.read("pipeline.lock");
    let digest = lock_json(&out)["includes"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    out.write("pipeline.lock", &lock.replace(&digest, &"0".repeat(64)));
    let refused = out.murphy(["lock"]).code(2).run();
    assert!(
        refused
            .stderr
            .contains("is not the file `pipeline.lock` pinned (its digest differs)"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        out.read("pipeline.lock"),
        lock.replace(&digest, &"0".repeat(64)),
        "left alone"
    );
}

#[test]
fn one_git_include_reached_from_two_files_is_pinned_once() {
    let test = Test::new();
    let upstream = Upstream::new(test.path(), "pipelines");
    upstream.push(&[("base.yml", BASE_V1)], "Base pipeline");
    let include = format!(
        "version: 1\ninclude:\n  - {{git: {}, ref: main, file: base.yml}}\n",
        upstream.url()
    );
    let out = test
        .pipeline(
            "
            version: 1
            include: [{path: ci/a.yml}, {path: ci/b.yml}]
            stages:
              after: {needs: [test], run: 'echo after >> after.txt'}
            ",
        )
        .write("ci/a.yml", &include)
        .write("ci/b.yml", &include)
        .args(["lock"])
        .run();
    assert_eq!(
        out.stdout
            .matches("pinned `pipelines@main:base.yml`")
            .count(),
        1,
        "{}",
        out.stdout
    );
    assert_eq!(lock_json(&out)["includes"].as_array().unwrap().len(), 1);
    out.murphy(["run"]).run();
    assert_eq!(out.read("test.txt"), "one\n");
}

#[test]
fn a_git_url_holding_a_token_is_refused_without_printing_it() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            include:
              - {git: 'https://ci:s3cr3t-t0ken@127.0.0.1:1/core.git', ref: main, file: base.yml}
            stages: {}
            ",
        )
        .args(["lock"])
        .code(2)
        .run();
    assert!(
        out.stderr
            .starts_with("error: pipeline.yml:3:11: a `git:` URL may not hold credentials"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);
    assert!(!out.file("pipeline.lock").exists());
}

#[test]
fn two_repositories_of_one_name_are_refused() {
    let test = Test::new();
    for dir in ["a", "b"] {
        fs::create_dir_all(test.path().join(dir)).unwrap();
    }
    let first = Upstream::new(&test.path().join("a"), "pipelines");
    first.push(&[("base.yml", BASE_V1)], "Base pipeline");
    let second = Upstream::new(&test.path().join("b"), "pipelines");
    second.push(
        &[("other.yml", "version: 1\nstages:\n  other: {run: 'true'}\n")],
        "Other",
    );
    let out = test
        .write(
            "pipeline.yml",
            &format!(
                "version: 1\ninclude:\n  - {{git: {}, ref: main, file: base.yml}}\n  - {{git: {}, ref: main, file: other.yml}}\n",
                first.url(),
                second.url()
            ),
        )
        .args(["lock"])
        .code(2)
        .run();
    assert!(
        out.stderr
            .contains("pipeline.yml:4:5: two repositories are named `pipelines`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("give one a `name:`"), "{}", out.stderr);
}
