//! One pipeline for four uses: what a run knows of its commit (git), of the CI it runs in,
//! its trigger and the `when:` conditions it decides, its release version, and its change
//! description, as `murphy show`, `status` and `runs` tell them.

use serde_json::Value;

use crate::support::{
    AUTHOR_EMAIL, AUTHOR_NAME, Output, Test, commit, git, git_command, parse_json, unindent,
};

const NOOP: &str = "
    version: 1
    stages:
      check: {run: 'true'}
";

fn author() -> String {
    format!("{AUTHOR_NAME} <{AUTHOR_EMAIL}>")
}

/// `murphy show --json` of the latest run of the pipeline in `dir`.
fn show_in(out: &Output, dir: &str) -> Value {
    parse_json(&out.murphy(["show", "--json"]).cwd(dir).run().stdout)
}

/// The latest run's `meta.json`, as text.
fn meta(out: &Output) -> String {
    let run = out.status().run_id;
    out.read(&format!(".murphy/runs/{run}/meta.json"))
}

// ---------------------------------------------------------------------------------------
// git metadata

#[test]
fn commit_branch_tags_author_message_and_previous_release_are_recorded() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .write("src.txt", "one\n")
        .commit("First")
        .git(["tag", "v1.0.0"])
        .write("src.txt", "two\n")
        .commit("Second")
        // Not a release tag (`v*`): passed over on the way back to the previous release.
        .git(["tag", "nightly-5"])
        .write("src.txt", "three\n")
        .commit("Release 1.1\n\nWhy it matters,\non two lines.")
        // An annotated tag counts like a light one.
        .git(["tag", "-a", "v1.1.0", "-m", "the 1.1 release"])
        .git(["tag", "also-here"])
        .args(["run"])
        .run();
    let sha = out.git(["rev-parse", "HEAD"]);
    let show = out.show();
    let commit = &show["commit"];
    assert_eq!(commit["sha"], sha.as_str(), "{show:#}");
    assert_eq!(commit["branch"], "main");
    assert_eq!(commit["tags"], serde_json::json!(["also-here", "v1.1.0"]));
    // Only tag runs compare the working tree with HEAD.
    assert_eq!(commit["dirty"], Value::Null);
    assert_eq!(commit["shallow"], false);
    assert_eq!(commit["author"], author().as_str());
    assert_eq!(commit["subject"], "Release 1.1");
    assert!(commit["committed_at"].is_string(), "{show:#}");
    assert_eq!(commit["previous_release"], "v1.0.0");
    assert_eq!(show["branch"], "main");
    assert_eq!(show["trigger"], "local");
    // The newest release tag at HEAD is the run's tag, and names its version.
    assert_eq!(show["tag"], "v1.1.0");
    assert_eq!(show["version"], "1.1.0");
    assert_eq!(show["prerelease"], false);
    assert_eq!(show["ci"], Value::Null);
    // The body is kept in the record.
    let meta: Value = parse_json(&meta(&out));
    assert_eq!(
        meta["change"]["git"]["body"],
        "Why it matters,\non two lines."
    );
}

/// A tag run compares the working tree with HEAD; other runs do not (it would cost a `stat`
/// of every tracked file on every run), and say so with a null.
#[test]
fn dirty_counts_changed_tracked_files_but_not_untracked_ones() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .write("tracked.txt", "committed\n")
        .commit("Initial")
        .git(["tag", "v1.0.0"])
        .write("untracked.txt", "new\n")
        .args(["run", "--trigger", "tag"])
        .run();
    assert_eq!(out.show()["commit"]["dirty"], false);

    out.write("tracked.txt", "changed\n");
    // A release of bytes no commit holds is refused before anything runs...
    let refused = out.murphy(["run", "--trigger", "tag"]).code(2).run();
    assert_eq!(
        refused.stderr,
        "error: a tag run releases what HEAD holds, and 1 tracked file(s) differ from HEAD: `tracked.txt`; commit or stash them, or pass --allow-dirty\n"
    );
    assert_eq!(out.runs().len(), 1, "the refused run is not recorded");
    let dry = out.murphy(["release", "--dry-run"]).code(1).run().stdout;
    assert!(
        dry.contains("  - 1 tracked file(s) differ from HEAD: `tracked.txt` (a tag run refuses that without --allow-dirty)"),
        "{dry}"
    );
    // ...unless asked for, and then the record says so.
    let allowed = out
        .murphy(["run", "--trigger", "tag", "--allow-dirty"])
        .run();
    assert!(
        allowed
            .stderr
            .contains("note: releasing from a dirty tree (--allow-dirty): 1 tracked file(s) differ from HEAD: `tracked.txt`"),
        "{}",
        allowed.stderr
    );
    let show = out.show();
    assert_eq!(show["commit"]["dirty"], true, "{show:#}");
    let text = out.murphy(["show"]).run().stdout;
    assert!(text.contains("with uncommitted changes"), "{text}");

    out.murphy(["run"]).run();
    let show = out.show();
    assert_eq!(show["commit"]["dirty"], Value::Null, "{show:#}");
    let text = out.murphy(["show"]).run().stdout;
    assert!(!text.contains("uncommitted"), "{text}");
}

/// A file touched without being changed is not a change, and the index is written back with
/// its new stat data, so the next comparison does not read it again.
#[test]
fn a_touched_tree_is_clean_and_the_index_is_refreshed() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .write("tracked.txt", "committed\n")
        .commit("Initial")
        .git(["tag", "v1.0.0"])
        .args(["run", "--trigger", "tag"])
        .run();
    let index = out.file(".git/index");
    let before = std::fs::read(&index).unwrap();
    // A new mtime and ctime, the same bytes.
    out.write("tracked.txt", "committed\n");
    out.murphy(["run", "--trigger", "tag"]).run();
    assert_eq!(out.show()["commit"]["dirty"], false);
    assert_ne!(
        std::fs::read(&index).unwrap(),
        before,
        "the index still holds the old stat data"
    );
}

#[test]
fn release_tags_pattern_chooses_the_previous_release() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            release_tags: 'release-*'
            stages:
              check: {run: 'true'}
            ",
        )
        .commit("One")
        .git(["tag", "release-1"])
        .commit("Two")
        // A `v` tag is no release under this pattern.
        .git(["tag", "v9.0.0"])
        .commit("Three")
        .git(["tag", "release-2"])
        .args(["run"])
        .run();
    let show = out.show();
    assert_eq!(show["commit"]["previous_release"], "release-1", "{show:#}");
    assert_eq!(show["tag"], "release-2");

    // Under the default pattern the same history has `v9.0.0` as the previous release.
    out.pipeline(NOOP);
    out.commit("Default pattern");
    out.murphy(["run"]).run();
    let show = out.show();
    assert_eq!(show["commit"]["previous_release"], "v9.0.0", "{show:#}");
    assert_eq!(show["tag"], Value::Null);
}

#[test]
fn previous_release_is_the_highest_version_on_the_nearest_tagged_commit() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .commit("Old")
        .git(["tag", "v0.9.0"])
        .commit("Tagged twice")
        .git(["tag", "v1.9.0"])
        .git(["tag", "v1.10.0"])
        .git(["tag", "v1.10.0rc1"])
        .commit("Now")
        .args(["run"])
        .run();
    let show = out.show();
    assert_eq!(show["commit"]["previous_release"], "v1.10.0", "{show:#}");
}

/// Web links for a remote in each of its URL forms.
#[test]
fn links_for_each_host_and_url_form() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .commit("Released")
        .git(["tag", "v1.0.0"])
        .commit("Next")
        .git(["remote", "add", "origin", "https://example.invalid/x.git"])
        .args(["run"])
        .run();
    let sha = out.git(["rev-parse", "HEAD"]);
    let github = "https://github.com/o/r";
    let gitlab = "https://gitlab.com/g/sub/r";
    let bitbucket = "https://bitbucket.org/o/r";
    let azure = "https://dev.azure.com/org/proj/_git/repo";
    let cases = [
        ("https://github.com/o/r.git", github),
        ("https://github.com/o/r", github),
        ("git@github.com:o/r.git", github),
        ("ssh://git@github.com/o/r.git", github),
        ("ssh://git@github.com:22/o/r.git", github),
        ("https://gitlab.com/g/sub/r.git", gitlab),
        ("git@gitlab.com:g/sub/r.git", gitlab),
        ("ssh://git@gitlab.com/g/sub/r.git", gitlab),
        ("https://ann@bitbucket.org/o/r.git", bitbucket),
        ("git@bitbucket.org:o/r.git", bitbucket),
        ("https://org@dev.azure.com/org/proj/_git/repo", azure),
        ("https://dev.azure.com/org/proj/_git/repo", azure),
        ("git@ssh.dev.azure.com:v3/org/proj/repo", azure),
        ("ssh://git@ssh.dev.azure.com/v3/org/proj/repo", azure),
        ("https://org.visualstudio.com/proj/_git/repo", azure),
        (
            "https://org.visualstudio.com/DefaultCollection/proj/_git/repo",
            azure,
        ),
        ("org@vs-ssh.visualstudio.com:v3/org/proj/repo", azure),
    ];
    for (remote, base) in cases {
        out.git(["remote", "set-url", "origin", remote]);
        out.murphy(["run"]).run();
        let links = &out.show()["links"];
        let commit = if base == gitlab {
            format!("{base}/-/commit/{sha}")
        } else if base == bitbucket {
            format!("{base}/commits/{sha}")
        } else {
            format!("{base}/commit/{sha}")
        };
        assert_eq!(links["commit"], commit.as_str(), "{remote}: {links:#}");
        assert!(links["diff"].is_string(), "{remote}: {links:#}");
        assert!(links["tree"].is_string(), "{remote}: {links:#}");
    }

    // The diff runs from the previous release to this commit, in each host's own form.
    let diffs = [
        (
            "git@github.com:o/r.git",
            format!("{github}/compare/v1.0.0...{sha}"),
            format!("{github}/tree/{sha}"),
        ),
        (
            "git@gitlab.com:g/sub/r.git",
            format!("{gitlab}/-/compare/v1.0.0...{sha}"),
            format!("{gitlab}/-/tree/{sha}"),
        ),
        (
            "git@bitbucket.org:o/r.git",
            format!("{bitbucket}/branches/compare/{sha}%0Dv1.0.0#diff"),
            format!("{bitbucket}/src/{sha}"),
        ),
        (
            "git@ssh.dev.azure.com:v3/org/proj/repo",
            format!("{azure}/branchCompare?baseVersion=GTv1.0.0&targetVersion=GC{sha}"),
            format!("{azure}?version=GC{sha}"),
        ),
    ];
    for (remote, diff, tree) in diffs {
        out.git(["remote", "set-url", "origin", remote]);
        out.murphy(["run"]).run();
        let links = &out.show()["links"];
        assert_eq!(links["diff"], diff.as_str(), "{remote}");
        assert_eq!(links["tree"], tree.as_str(), "{remote}");
    }
}

#[test]
fn other_hosts_get_no_links_and_no_error() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .commit("Only")
        .git(["remote", "add", "origin", "https://example.invalid/x.git"])
        .args(["run"])
        .run();
    for remote in [
        "https://git.example.org/o/r.git",
        "git@git.example.org:o/r.git",
        "ssh://git@git.example.org:2222/o/r.git",
        "/srv/git/r.git",
        "file:///srv/git/r.git",
    ] {
        out.git(["remote", "set-url", "origin", remote]);
        out.murphy(["run"]).run();
        let show = out.show();
        for link in ["commit", "diff", "tree", "pr", "ci_run"] {
            assert_eq!(show["links"][link], Value::Null, "{remote}: {show:#}");
        }
        assert!(show["commit"]["sha"].is_string(), "{remote}: {show:#}");
        let text = out.murphy(["show"]).run().stdout;
        assert!(!text.contains("links"), "{remote}: {text}");
    }
}

#[test]
fn a_remote_without_origin_is_the_first_remote() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .commit("Only")
        .git(["remote", "add", "upstream", "git@github.com:o/r.git"])
        .args(["run"])
        .run();
    let sha = out.git(["rev-parse", "HEAD"]);
    assert_eq!(
        out.show()["links"]["commit"],
        format!("https://github.com/o/r/commit/{sha}").as_str()
    );
}

#[test]
fn credentials_in_a_remote_url_are_never_recorded_or_shown() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .commit("Only")
        .git([
            "remote",
            "add",
            "origin",
            "https://ann:s3cr3t-pw@github.com/o/r.git",
        ])
        .args(["run"])
        .run();
    let sha = out.git(["rev-parse", "HEAD"]);
    let recorded = meta(&out);
    assert!(!recorded.contains("s3cr3t"), "{recorded}");
    assert!(
        recorded.contains("\"remote\": \"https://github.com/o/r.git\""),
        "{recorded}"
    );
    let show = out.show();
    assert_eq!(
        show["links"]["commit"],
        format!("https://github.com/o/r/commit/{sha}").as_str()
    );

    for (remote, secret) in [
        ("https://ghp_T0kenOnly@github.com/o/r.git", "ghp_T0kenOnly"),
        ("https://ann:hunter2@git.example.org/o/r.git", "hunter2"),
        ("ssh://ann:pa55word@gitlab.com/g/r.git", "pa55word"),
    ] {
        out.git(["remote", "set-url", "origin", remote]);
        out.murphy(["run"]).run();
        let recorded = meta(&out);
        let json = out.murphy(["show", "--json"]).run().stdout;
        let text = out.murphy(["show"]).run().stdout;
        let runs = out.murphy(["runs", "--json"]).run().stdout;
        for printed in [&recorded, &json, &text, &runs] {
            assert!(!printed.contains(secret), "{remote}: {printed}");
        }
    }
}

#[test]
fn an_empty_repository_has_a_branch_but_no_commit() {
    let out = Test::new().git_init().pipeline(NOOP).args(["run"]).run();
    let show = out.show();
    let commit = &show["commit"];
    assert_eq!(commit["sha"], Value::Null, "{show:#}");
    assert_eq!(commit["branch"], "main");
    assert_eq!(commit["tags"], serde_json::json!([]));
    assert_eq!(commit["author"], Value::Null);
    assert_eq!(commit["subject"], Value::Null);
    assert_eq!(commit["previous_release"], Value::Null);
    // Only tag runs compare the working tree with HEAD.
    assert_eq!(commit["dirty"], Value::Null);
    assert_eq!(show["links"]["commit"], Value::Null);
    assert_eq!(show["status"], "succeeded");
    let text = out.murphy(["show"]).run().stdout;
    assert!(text.contains("(no commit yet) on `main`"), "{text}");
}

#[test]
fn a_detached_head_has_a_commit_but_no_branch() {
    let test = Test::new()
        .git_init()
        .pipeline(NOOP)
        .commit("One")
        .git(["tag", "v1.0.0"])
        .commit("Two");
    let two = git(test.path(), ["rev-parse", "HEAD"]);
    let out = test
        .commit("Three")
        .git(["checkout", "-q", "--detach", "HEAD~1"])
        .args(["run"])
        .run();
    let show = out.show();
    assert_eq!(show["commit"]["sha"], two.as_str(), "{show:#}");
    assert_eq!(show["commit"]["branch"], Value::Null);
    assert_eq!(show["branch"], Value::Null);
    assert_eq!(show["commit"]["subject"], "Two");
    assert_eq!(show["commit"]["previous_release"], "v1.0.0");
    let text = out.murphy(["show"]).run().stdout;
    assert!(
        text.contains(&format!("{} (detached)", &two[..12])),
        "{text}"
    );

    // Detached at the release tag itself: the run's tag and version, no previous release.
    out.git(["checkout", "-q", "v1.0.0"]);
    out.murphy(["run"]).run();
    let show = out.show();
    assert_eq!(show["commit"]["tags"], serde_json::json!(["v1.0.0"]));
    assert_eq!(show["tag"], "v1.0.0");
    assert_eq!(show["version"], "1.0.0");
    assert_eq!(show["commit"]["previous_release"], Value::Null);
}

#[test]
fn a_shallow_clone_knows_its_commit_but_not_the_history_cut_off() {
    let test = Test::new().write("origin/pipeline.yml", &unindent(NOOP));
    let origin = test.path().join("origin");
    git(&origin, ["init", "-q", "-b", "main"]);
    commit(&origin, "One");
    git(&origin, ["tag", "v1.0.0"]);
    commit(&origin, "Two");
    let head = commit(&origin, "Three");
    git(&origin, ["tag", "v1.1.0"]);
    let url = format!("file://{}", origin.display());
    git(test.path(), ["clone", "-q", "--depth", "1", &url, "clone"]);
    let out = test.cwd("clone").args(["run"]).run();
    let show = show_in(&out, "clone");
    let commit = &show["commit"];
    assert_eq!(commit["sha"], head.as_str(), "{show:#}");
    assert_eq!(commit["shallow"], true);
    assert_eq!(commit["branch"], "main");
    assert_eq!(commit["tags"], serde_json::json!(["v1.1.0"]));
    assert_eq!(commit["subject"], "Three");
    // v1.0.0 is in the history the clone does not have.
    assert_eq!(commit["previous_release"], Value::Null);
    // Only tag runs compare the working tree with HEAD.
    assert_eq!(commit["dirty"], Value::Null);
    assert_eq!(show["links"]["commit"], Value::Null);
    assert_eq!(show["status"], "succeeded");
}

#[test]
fn outside_any_repository_there_is_no_commit() {
    let test = Test::new().pipeline(NOOP);
    let parent = test.path().parent().unwrap().to_owned();
    let out = test
        .env("GIT_CEILING_DIRECTORIES", parent.to_str().unwrap())
        .args(["run"])
        .run();
    let show = out.show();
    assert_eq!(show["commit"], Value::Null, "{show:#}");
    assert_eq!(show["branch"], Value::Null);
    assert_eq!(show["tag"], Value::Null);
    for link in ["commit", "diff", "tree", "pr", "ci_run"] {
        assert_eq!(show["links"][link], Value::Null, "{show:#}");
    }
    assert_eq!(show["trigger"], "local");
    let text = out.murphy(["show"]).run().stdout;
    assert!(!text.contains("\ncommit"), "{text}");
}

#[test]
fn git_ceiling_directories_stop_discovery_as_they_do_for_git() {
    let test = Test::new()
        .git_init()
        .write("enclosing.txt", "x\n")
        .commit("Enclosing")
        .write("inner/pipeline.yml", &unindent(NOOP));
    let ceiling = test.path().to_str().unwrap().to_owned();
    // git itself finds no repository from `inner`: the ceiling stops it.
    let mut rev_parse = git_command(&test.path().join("inner"));
    rev_parse
        .env("GIT_CEILING_DIRECTORIES", &ceiling)
        .args(["rev-parse", "--git-dir"]);
    assert!(!rev_parse.output().unwrap().status.success());

    let out = test
        .cwd("inner")
        .env("GIT_CEILING_DIRECTORIES", &ceiling)
        .args(["run"])
        .run();
    let show = show_in(&out, "inner");
    assert_eq!(show["commit"], Value::Null, "{show:#}");
}

// ---------------------------------------------------------------------------------------
// CI detection

/// Runs the pipeline (outside any repository) with a CI provider's variables, and returns
/// `murphy show --json`. The stage copies `MURPHY_TRIGGER` to `trigger.txt`.
fn ci_run(env: &[(&str, &str)], args: &[&str]) -> (Output, Value) {
    let mut test = Test::new().pipeline(
        "
        version: 1
        stages:
          check: {run: 'echo \"$MURPHY_TRIGGER\" > trigger.txt'}
        ",
    );
    for (key, value) in env {
        test = test.env(key, value);
    }
    let out = test.args(["run"]).args(args.iter().copied()).run();
    let show = out.show();
    assert_eq!(
        out.read("trigger.txt").trim(),
        show["trigger"].as_str().unwrap(),
        "the stage sees the run's trigger"
    );
    (out, show)
}

/// Checks `trigger`, `ci.provider`, `links.pr` and `links.ci_run`.
fn assert_ci(show: &Value, trigger: &str, provider: &str, pr: Option<&str>, ci_run: Option<&str>) {
    assert_eq!(show["trigger"], trigger, "{show:#}");
    assert_eq!(show["ci"]["provider"], provider, "{show:#}");
    assert_eq!(show["ci"]["trigger"], trigger, "{show:#}");
    assert_eq!(show["links"]["pr"].as_str(), pr, "{show:#}");
    assert_eq!(show["links"]["ci_run"].as_str(), ci_run, "{show:#}");
}

#[test]
fn github_actions_pull_request_schedule_push_and_tag() {
    let base = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "o/r"),
        ("GITHUB_RUN_ID", "42"),
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_JOB", "test"),
        ("GITHUB_ACTOR", "ann"),
    ];
    let run_url = Some("https://github.com/o/r/actions/runs/42");
    let with = |more: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        base.iter().chain(more).copied().collect()
    };

    let (out, pr) = ci_run(
        &with(&[
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_REF", "refs/pull/7/merge"),
            ("GITHUB_HEAD_REF", "feature"),
            ("GITHUB_BASE_REF", "main"),
        ]),
        &[],
    );
    assert_ci(
        &pr,
        "pr",
        "github_actions",
        Some("https://github.com/o/r/pull/7"),
        run_url,
    );
    assert_eq!(pr["branch"], "feature");
    assert_eq!(pr["ci"]["pr_number"], "7");
    assert_eq!(pr["ci"]["base_branch"], "main");
    assert_eq!(pr["ci"]["event"], "pull_request");
    assert_eq!(pr["ci"]["actor"], "ann");
    assert_eq!(pr["ci"]["job"], "test");
    assert_eq!(pr["ci"]["run_id"], "42");
    let text = out.murphy(["show"]).run().stdout;
    assert!(
        text.contains("trigger      pr (GitHub Actions, pull_request)"),
        "{text}"
    );

    let (_, nightly) = ci_run(
        &with(&[
            ("GITHUB_EVENT_NAME", "schedule"),
            ("GITHUB_REF", "refs/heads/main"),
            // GitHub sets these empty outside pull requests.
            ("GITHUB_HEAD_REF", ""),
            ("GITHUB_BASE_REF", ""),
        ]),
        &[],
    );
    assert_ci(&nightly, "nightly", "github_actions", None, run_url);
    assert_eq!(nightly["branch"], "main");

    let (_, push) = ci_run(
        &with(&[
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/heads/main"),
        ]),
        &[],
    );
    assert_ci(&push, "push", "github_actions", None, run_url);
    assert_eq!(push["branch"], "main");

    let (_, tag) = ci_run(
        &with(&[
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/tags/v1.2.0"),
        ]),
        &[],
    );
    assert_ci(&tag, "tag", "github_actions", None, run_url);
    assert_eq!(tag["tag"], "v1.2.0");
    assert_eq!(tag["version"], "1.2.0");
    assert_eq!(tag["prerelease"], false);
}

/// A CI murphy has no table for still is CI: `push`, not a person's `local` run.
#[test]
fn a_bare_ci_variable_runs_as_a_push_of_an_unknown_ci() {
    let (out, show) = ci_run(&[("CI", "true")], &[]);
    assert_ci(&show, "push", "other", None, None);
    let text = out.murphy(["show"]).run().stdout;
    assert!(text.contains("trigger      push (unknown CI"), "{text}");
}

/// A merge queue's build and `pull_request_target` (whose `GITHUB_REF` is the base branch)
/// are pull request runs, with their numbers.
#[test]
fn github_merge_queue_and_pull_request_target_are_pull_requests() {
    let (_, queue) = ci_run(
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_EVENT_NAME", "merge_group"),
            (
                "GITHUB_REF",
                "refs/heads/gh-readonly-queue/main/pr-31-0a1b2c3",
            ),
        ],
        &[],
    );
    assert_ci(
        &queue,
        "pr",
        "github_actions",
        Some("https://github.com/o/r/pull/31"),
        None,
    );
    assert_eq!(queue["ci"]["base_branch"], "main");

    let payload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        payload.path(),
        r#"{"number": 12, "pull_request": {"number": 12}}"#,
    )
    .unwrap();
    let (_, target) = ci_run(
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_EVENT_NAME", "pull_request_target"),
            ("GITHUB_REF", "refs/heads/main"),
            ("GITHUB_EVENT_PATH", payload.path().to_str().unwrap()),
        ],
        &[],
    );
    assert_ci(
        &target,
        "pr",
        "github_actions",
        Some("https://github.com/o/r/pull/12"),
        None,
    );
}

#[test]
fn a_ci_tag_that_is_no_release_tag_runs_as_a_push_with_a_note() {
    let (out, show) = ci_run(
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/tags/docs-2026"),
        ],
        &[],
    );
    assert_eq!(show["trigger"], "push", "{show:#}");
    assert_eq!(show["tag"], "docs-2026", "{show:#}");
    assert_eq!(show["version"], Value::Null, "{show:#}");
    assert!(
        out.stderr.contains(
            "note: tag `docs-2026` does not match `release_tags` (`v*`): running as `push`, which publishes nothing"
        ),
        "{}",
        out.stderr
    );
    // Asked for by hand, a tag run still insists on a release tag.
    let err = out
        .murphy(["run", "--trigger", "tag"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_REF", "refs/tags/docs-2026")
        .code(2)
        .run()
        .stderr;
    assert!(err.contains("docs-2026"), "{err}");
}

#[test]
fn github_enterprise_links_use_the_server_url() {
    let (_, show) = ci_run(
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://ghe.example.com"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_RUN_ID", "5"),
            ("GITHUB_EVENT_NAME", "pull_request_target"),
            ("GITHUB_REF", "refs/pull/9/merge"),
        ],
        &[],
    );
    assert_ci(
        &show,
        "pr",
        "github_actions",
        Some("https://ghe.example.com/o/r/pull/9"),
        Some("https://ghe.example.com/o/r/actions/runs/5"),
    );
}

#[test]
fn gitlab_merge_request_schedule_and_tag() {
    let base = [
        ("GITLAB_CI", "true"),
        ("CI_PROJECT_URL", "https://gitlab.com/g/r"),
        ("CI_PIPELINE_ID", "9"),
        ("CI_PIPELINE_URL", "https://gitlab.com/g/r/-/pipelines/9"),
    ];
    let run_url = Some("https://gitlab.com/g/r/-/pipelines/9");
    let with = |more: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        base.iter().chain(more).copied().collect()
    };

    let (_, mr) = ci_run(
        &with(&[
            ("CI_PIPELINE_SOURCE", "merge_request_event"),
            ("CI_MERGE_REQUEST_IID", "12"),
            ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "feature"),
            ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
        ]),
        &[],
    );
    assert_ci(
        &mr,
        "pr",
        "gitlab_ci",
        Some("https://gitlab.com/g/r/-/merge_requests/12"),
        run_url,
    );
    assert_eq!(mr["branch"], "feature");
    assert_eq!(mr["ci"]["base_branch"], "main");

    let (_, nightly) = ci_run(
        &with(&[
            ("CI_PIPELINE_SOURCE", "schedule"),
            ("CI_COMMIT_BRANCH", "main"),
        ]),
        &[],
    );
    assert_ci(&nightly, "nightly", "gitlab_ci", None, run_url);
    assert_eq!(nightly["branch"], "main");

    let (_, tag) = ci_run(
        &with(&[
            ("CI_PIPELINE_SOURCE", "push"),
            ("CI_COMMIT_TAG", "v2.0.0b2"),
        ]),
        &[],
    );
    assert_ci(&tag, "tag", "gitlab_ci", None, run_url);
    assert_eq!(tag["version"], "2.0.0b2");
    assert_eq!(tag["prerelease"], true);
}

#[test]
fn azure_pipelines_pull_request_schedule_and_tag() {
    let base = [
        ("TF_BUILD", "True"),
        ("BUILD_BUILDID", "77"),
        ("SYSTEM_COLLECTIONURI", "https://dev.azure.com/org/"),
        ("SYSTEM_TEAMPROJECT", "proj"),
        ("BUILD_REPOSITORY_NAME", "repo"),
    ];
    let run_url = Some("https://dev.azure.com/org/proj/_build/results?buildId=77");
    let with = |more: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        base.iter().chain(more).copied().collect()
    };

    let (_, pr) = ci_run(
        &with(&[
            ("BUILD_REASON", "PullRequest"),
            ("BUILD_SOURCEBRANCH", "refs/pull/5/merge"),
            ("SYSTEM_PULLREQUEST_PULLREQUESTID", "5"),
            ("SYSTEM_PULLREQUEST_SOURCEBRANCH", "refs/heads/feature"),
            ("SYSTEM_PULLREQUEST_TARGETBRANCH", "refs/heads/main"),
        ]),
        &[],
    );
    assert_ci(
        &pr,
        "pr",
        "azure_pipelines",
        Some("https://dev.azure.com/org/proj/_git/repo/pullrequest/5"),
        run_url,
    );
    assert_eq!(pr["branch"], "feature");
    assert_eq!(pr["ci"]["base_branch"], "main");

    let (_, nightly) = ci_run(
        &with(&[
            ("BUILD_REASON", "Schedule"),
            ("BUILD_SOURCEBRANCH", "refs/heads/main"),
        ]),
        &[],
    );
    assert_ci(&nightly, "nightly", "azure_pipelines", None, run_url);
    assert_eq!(nightly["branch"], "main");

    let (_, tag) = ci_run(
        &with(&[
            ("BUILD_REASON", "IndividualCI"),
            ("BUILD_SOURCEBRANCH", "refs/tags/v1.0.0"),
        ]),
        &[],
    );
    assert_ci(&tag, "tag", "azure_pipelines", None, run_url);
    assert_eq!(tag["tag"], "v1.0.0");
    assert_eq!(tag["version"], "1.0.0");
}

#[test]
fn azure_links_are_percent_encoded() {
    let (_, show) = ci_run(
        &[
            ("TF_BUILD", "True"),
            ("BUILD_BUILDID", "77"),
            ("SYSTEM_COLLECTIONURI", "https://dev.azure.com/org/"),
            ("SYSTEM_TEAMPROJECT", "My Project"),
            ("BUILD_REPOSITORY_NAME", "My Repo"),
            ("BUILD_REASON", "PullRequest"),
            ("SYSTEM_PULLREQUEST_PULLREQUESTID", "5"),
        ],
        &[],
    );
    assert_eq!(
        show["links"]["ci_run"],
        "https://dev.azure.com/org/My%20Project/_build/results?buildId=77"
    );
    assert_eq!(
        show["links"]["pr"],
        "https://dev.azure.com/org/My%20Project/_git/My%20Repo/pullrequest/5"
    );
}

#[test]
fn jenkins_change_and_tag() {
    let (_, pr) = ci_run(
        &[
            ("JENKINS_URL", "https://ci.example.com/"),
            ("BUILD_URL", "https://ci.example.com/job/r/1/"),
            ("BUILD_NUMBER", "1"),
            ("CHANGE_ID", "3"),
            ("CHANGE_URL", "https://github.com/o/r/pull/3"),
            ("CHANGE_BRANCH", "feature"),
            ("CHANGE_TARGET", "main"),
            ("BRANCH_NAME", "PR-3"),
        ],
        &[],
    );
    assert_ci(
        &pr,
        "pr",
        "jenkins",
        Some("https://github.com/o/r/pull/3"),
        Some("https://ci.example.com/job/r/1/"),
    );
    assert_eq!(pr["branch"], "feature");
    assert_eq!(pr["ci"]["event"], "change");

    let (_, tag) = ci_run(
        &[
            ("JENKINS_URL", "https://ci.example.com/"),
            ("BUILD_URL", "https://ci.example.com/job/r/2/"),
            ("TAG_NAME", "v1.2.0-rc.1"),
        ],
        &[],
    );
    assert_ci(
        &tag,
        "tag",
        "jenkins",
        None,
        Some("https://ci.example.com/job/r/2/"),
    );
    assert_eq!(tag["version"], "1.2.0-rc.1");
    assert_eq!(tag["prerelease"], true);
}

#[test]
fn buildkite_pull_request_and_schedule() {
    let (_, pr) = ci_run(
        &[
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_URL", "https://buildkite.com/o/p/builds/8"),
            ("BUILDKITE_BUILD_NUMBER", "8"),
            ("BUILDKITE_SOURCE", "webhook"),
            ("BUILDKITE_PULL_REQUEST", "9"),
            ("BUILDKITE_REPO", "git@github.com:o/r.git"),
            ("BUILDKITE_BRANCH", "feature"),
            ("BUILDKITE_TAG", ""),
        ],
        &[],
    );
    assert_ci(
        &pr,
        "pr",
        "buildkite",
        Some("https://github.com/o/r/pull/9"),
        Some("https://buildkite.com/o/p/builds/8"),
    );
    assert_eq!(pr["branch"], "feature");

    let (_, nightly) = ci_run(
        &[
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_URL", "https://buildkite.com/o/p/builds/10"),
            ("BUILDKITE_SOURCE", "schedule"),
            ("BUILDKITE_PULL_REQUEST", "false"),
            ("BUILDKITE_BRANCH", "main"),
        ],
        &[],
    );
    assert_ci(
        &nightly,
        "nightly",
        "buildkite",
        None,
        Some("https://buildkite.com/o/p/builds/10"),
    );
    assert_eq!(nightly["ci"]["pr_number"], Value::Null);
}

#[test]
fn circleci_pull_request_and_tag() {
    let (_, pr) = ci_run(
        &[
            ("CIRCLECI", "true"),
            ("CIRCLE_BUILD_URL", "https://circleci.com/gh/o/r/123"),
            ("CIRCLE_PULL_REQUEST", "https://github.com/o/r/pull/4"),
            ("CIRCLE_BRANCH", "feature"),
        ],
        &[],
    );
    assert_ci(
        &pr,
        "pr",
        "circleci",
        Some("https://github.com/o/r/pull/4"),
        Some("https://circleci.com/gh/o/r/123"),
    );
    assert_eq!(pr["ci"]["pr_number"], "4");

    let (_, tag) = ci_run(
        &[
            ("CIRCLECI", "true"),
            ("CIRCLE_BUILD_URL", "https://circleci.com/gh/o/r/124"),
            ("CIRCLE_TAG", "v3.0.0"),
        ],
        &[],
    );
    assert_ci(
        &tag,
        "tag",
        "circleci",
        None,
        Some("https://circleci.com/gh/o/r/124"),
    );
    assert_eq!(tag["version"], "3.0.0");
}

#[test]
fn trigger_flag_overrides_the_derived_trigger() {
    let pull_request = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "o/r"),
        ("GITHUB_RUN_ID", "42"),
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_REF", "refs/pull/7/merge"),
    ];
    let (_, show) = ci_run(&pull_request, &["--trigger", "nightly"]);
    assert_eq!(show["trigger"], "nightly", "{show:#}");
    // What CI said is still recorded, links included.
    assert_eq!(show["ci"]["trigger"], "pr");
    assert_eq!(show["links"]["pr"], "https://github.com/o/r/pull/7");

    // Outside CI the default is `local`, and `--trigger` still decides.
    let (_, show) = ci_run(&[], &["--trigger", "push"]);
    assert_eq!(show["trigger"], "push");
    assert_eq!(show["ci"], Value::Null);

    // A tag run asked of a pull request has no tag to read a version from.
    let out = Test::new()
        .pipeline(NOOP)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_REF", "refs/pull/7/merge")
        .args(["run", "--trigger", "tag"])
        .code(2)
        .run();
    assert!(
        out.stderr.contains("a `tag` run needs a tag"),
        "{}",
        out.stderr
    );
}

#[test]
fn no_ci_variable_of_the_machine_leaks_into_a_test() {
    let (_, show) = ci_run(&[], &[]);
    assert_eq!(show["ci"], Value::Null, "{show:#}");
    assert_eq!(show["trigger"], "local");
}

/// Without an upstream every tracked file is listed; for a pipeline in a subdirectory, those
/// below it relative to it and the others by their absolute path.
#[test]
fn changed_files_of_a_pipeline_in_a_subdirectory() {
    let out = Test::new()
        .git_init()
        .write(
            "app/pipeline.yml",
            "version: 1\nstages:\n  list: {run: 'cp \"$MURPHY_CHANGED_FILES\" ../out.txt'}\n",
        )
        .write("app/src/a.txt", "a\n")
        .write("top.txt", "top\n")
        .commit("Base")
        .cwd("app")
        .args(["run"])
        .run();
    let top = std::fs::canonicalize(out.path()).unwrap().join("top.txt");
    assert_eq!(
        out.read("out.txt"),
        format!("pipeline.yml\nsrc/a.txt\n{}\n", top.display())
    );
}

#[test]
fn changed_files_of_local_and_pr_runs() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              list: {run: 'mkdir -p out && cp \"${MURPHY_CHANGED_FILES:-/dev/null}\" out/changed.txt && echo \"${MURPHY_CHANGED_FILES:+set}\" >> out/changed.txt'}
            ",
        )
        .write("a.txt", "a\n")
        .write("b.txt", "b\n")
        .write("c.txt", "c\n")
        .commit("Base")
        .git(["checkout", "-q", "-b", "feature"])
        .git(["branch", "-q", "--set-upstream-to", "main"])
        .write("a.txt", "a, committed\n")
        .commit("Change a")
        .write("b.txt", "b, not committed\n")
        .args(["run"])
        .run();
    // Local: against the upstream, uncommitted changes included.
    assert_eq!(out.read("out/changed.txt"), "a.txt\nb.txt\nset\n");

    // A pull request: against its base branch, committed changes only.
    out.murphy(["run"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_REF", "refs/pull/7/merge")
        .env("GITHUB_HEAD_REF", "feature")
        .env("GITHUB_BASE_REF", "main")
        .run();
    assert_eq!(out.read("out/changed.txt"), "a.txt\nset\n");

    // Other triggers get no list.
    for trigger in ["push", "nightly"] {
        out.murphy(["run", "--trigger", trigger]).run();
        assert_eq!(out.read("out/changed.txt"), "\n", "{trigger}");
    }
}

/// Comparing the tree is the costliest git work a run can do: a run whose stages are all
/// restored from their checkpoints does not do it.
#[test]
fn a_run_that_runs_no_command_lists_no_changed_files() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              list: {inputs: [a.txt], run: 'cp \"$MURPHY_CHANGED_FILES\" listed.txt', outputs: [listed.txt]}
            ",
        )
        .write("a.txt", "a\n")
        .commit("Base")
        .write("a.txt", "a, not committed\n")
        .args(["run"])
        .run();
    let first = out.status().run_id;
    assert!(
        out.file(&format!(".murphy/runs/{first}/changed-files.txt"))
            .exists()
    );
    assert!(out.read("listed.txt").lines().any(|l| l == "a.txt"));

    out.murphy(["run"]).run();
    let cached = out.status();
    assert_eq!(cached.stage("list").state, "cached");
    assert!(
        !out.file(&format!(".murphy/runs/{}/changed-files.txt", cached.run_id))
            .exists()
    );

    // A forced stage runs whatever the store holds, so its run lists the changed files as it
    // starts (see `session::surely_runs`): the stage gets the list the run keeps.
    std::fs::remove_file(out.file("listed.txt")).unwrap();
    out.murphy(["run", "--force"]).run();
    let forced = out.status();
    assert_eq!(forced.stage("list").state, "succeeded");
    assert_eq!(
        out.read(&format!(".murphy/runs/{}/changed-files.txt", forced.run_id)),
        out.read("listed.txt")
    );
    assert!(out.read("listed.txt").lines().any(|l| l == "a.txt"));
}

// ---------------------------------------------------------------------------------------
// `when:` and triggers

/// Every stage appends its name to `ran.txt`, so what ran is known apart from the records.
const WHEN: &str = "
    version: 1
    stages:
      build: {run: 'echo build >> ran.txt'}
      lint: {when: {trigger: [local, pre-push, pr]}, run: 'echo lint >> ran.txt'}
      integration: {when: {trigger: [pr, push, nightly]}, run: 'echo integration >> ran.txt'}
      soak: {when: {trigger: nightly}, run: 'echo soak >> ran.txt'}
      soak-report: {needs: [soak], run: 'echo soak-report >> ran.txt'}
      mainline: {when: {branch: [main, 'release/*']}, run: 'echo mainline >> ran.txt'}
      deploy-staging: {when: {trigger: push, branch: main}, run: 'echo deploy-staging >> ran.txt'}
      publish: {needs: [build], when: {trigger: tag, tag: 'v*'}, run: 'echo publish >> ran.txt'}
      notify: {needs: [build], needs_optional: [publish, soak], run: 'echo notify >> ran.txt'}
";

const WHEN_STAGES: [&str; 9] = [
    "build",
    "lint",
    "integration",
    "soak",
    "soak-report",
    "mainline",
    "deploy-staging",
    "publish",
    "notify",
];

/// Runs WHEN with `trigger` on branch `main` (HEAD tagged `v1.0.0`) and checks which stages
/// ran; every other stage must be skipped by its `when`, except `soak-report`, skipped because
/// of `soak`.
fn assert_when(trigger: &str, ran: &[&str]) {
    let out = Test::new()
        .git_init()
        .pipeline(WHEN)
        .commit("Release")
        .git(["tag", "v1.0.0"])
        .args(["run", "--jobs", "1", "--trigger", trigger])
        .run();
    let run = out.status();
    assert_eq!(run.status, "succeeded", "{trigger}: {run:#?}");
    let mut appended: Vec<String> = out.read("ran.txt").lines().map(str::to_owned).collect();
    appended.sort();
    let mut expected: Vec<String> = ran.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(appended, expected, "{trigger}: what ran");
    let table = out.murphy(["status"]).run().stdout;
    for name in WHEN_STAGES {
        let stage = run.stage(name);
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for `{name}`:\n{table}"));
        if ran.contains(&name) {
            assert_eq!(stage.state, "succeeded", "{trigger}: {stage:?}");
        } else if name == "soak-report" {
            assert_eq!(stage.state, "skipped", "{trigger}: {stage:?}");
            assert!(
                stage
                    .reason()
                    .contains("because `soak` was skipped by its `when`"),
                "{trigger}: {stage:?}"
            );
            assert!(!row.contains("(when)"), "{row}");
        } else {
            assert_eq!(stage.state, "skipped_when", "{trigger}: {stage:?}");
            assert_eq!(stage.attempts, 0);
            assert!(!stage.reason().is_empty(), "{trigger}: {stage:?}");
            assert!(row.contains("skipped (when)"), "{trigger}: {row}");
            assert!(row.contains(stage.reason()), "{trigger}: {row}");
        }
    }
    // `notify` lists the optional stages it waits for when they do run.
    let notify = run.stage("notify");
    for optional in ["publish", "soak"] {
        let stage = run.stage(optional);
        if stage.state == "succeeded" {
            assert!(stage.finished() <= notify.started(), "{stage:?} {notify:?}");
        }
    }
}

#[test]
fn when_local() {
    assert_when("local", &["build", "lint", "mainline", "notify"]);
}

#[test]
fn when_pre_push() {
    assert_when("pre-push", &["build", "lint", "mainline", "notify"]);
}

#[test]
fn when_pr() {
    assert_when(
        "pr",
        &["build", "lint", "integration", "mainline", "notify"],
    );
}

#[test]
fn when_push() {
    assert_when(
        "push",
        &[
            "build",
            "integration",
            "mainline",
            "deploy-staging",
            "notify",
        ],
    );
}

#[test]
fn when_nightly() {
    assert_when(
        "nightly",
        &[
            "build",
            "integration",
            "soak",
            "soak-report",
            "mainline",
            "notify",
        ],
    );
}

#[test]
fn when_tag() {
    assert_when("tag", &["build", "mainline", "publish", "notify"]);
}

#[test]
fn when_reasons_name_what_did_not_hold() {
    let out = Test::new()
        .git_init()
        .pipeline(WHEN)
        .commit("Work")
        .git(["checkout", "-q", "-b", "feature/x"])
        .args(["run", "--trigger", "push"])
        .run();
    let run = out.status();
    let reason = |name: &str| run.stage(name).reason().to_owned();
    assert_eq!(
        reason("lint"),
        "trigger is `push`, not one of `local`, `pre-push`, `pr`"
    );
    assert_eq!(reason("soak"), "trigger is `push`, not `nightly`");
    assert_eq!(
        reason("mainline"),
        "branch `feature/x` is not one of `main`, `release/*`"
    );
    assert_eq!(reason("deploy-staging"), "branch `feature/x` is not `main`");
    assert_eq!(reason("publish"), "trigger is `push`, not `tag`");
    assert_eq!(
        reason("soak-report"),
        "because `soak` was skipped by its `when` (list it in `needs_optional` to run without it)"
    );
    assert_eq!(run.stage("integration").state, "succeeded");
    assert_eq!(run.stage("notify").state, "succeeded");
}

#[test]
fn when_branch_and_tag_patterns() {
    let pipeline = "
        version: 1
        stages:
          mainline: {when: {branch: [main, 'release/*']}, run: 'true'}
          release: {when: {tag: 'v*'}, run: 'true'}
          release-branch-push: {when: {trigger: [push], branch: 'release/*'}, run: 'true'}
    ";
    let out = Test::new()
        .git_init()
        .pipeline(pipeline)
        .commit("One")
        .args(["run", "--trigger", "push"])
        .run();
    let states = |out: &Output| -> Vec<String> {
        let run = out.status();
        ["mainline", "release", "release-branch-push"]
            .map(|n| run.stage(n).state.clone())
            .to_vec()
    };
    assert_eq!(states(&out), ["succeeded", "skipped_when", "skipped_when"]);
    assert_eq!(
        out.status().stage("release").reason(),
        "no tag, and `when` wants `v*`"
    );

    out.git(["checkout", "-q", "-b", "release/1.2"]);
    out.murphy(["run", "--trigger", "push"]).run();
    assert_eq!(states(&out), ["succeeded", "skipped_when", "succeeded"]);
    out.murphy(["run", "--trigger", "pr"]).run();
    assert_eq!(states(&out), ["succeeded", "skipped_when", "skipped_when"]);

    out.git(["checkout", "-q", "-b", "feature/x"]);
    out.git(["tag", "v1.3.0"]);
    out.murphy(["run", "--trigger", "push"]).run();
    assert_eq!(states(&out), ["skipped_when", "succeeded", "skipped_when"]);

    // A tag that is no release tag is no tag to `when`.
    out.git(["tag", "-d", "v1.3.0"]);
    out.git(["tag", "nightly-5"]);
    out.git(["checkout", "-q", "--detach"]);
    out.murphy(["run", "--trigger", "push"]).run();
    assert_eq!(
        states(&out),
        ["skipped_when", "skipped_when", "skipped_when"]
    );
    assert_eq!(
        out.status().stage("mainline").reason(),
        "no branch, and `when` wants one of `main`, `release/*`"
    );
}

#[test]
fn a_stage_needing_a_when_skipped_stage_runs_only_if_the_need_is_optional() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              publish: {when: {trigger: tag}, run: 'true'}
              announce: {needs: [publish], run: touch announce-ran}
              notify: {needs_optional: [publish], run: touch notify-ran}
              after-notify: {needs: [notify], run: touch after-notify-ran}
            ",
        )
        .args(["run"])
        .run();
    let run = out.status();
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.stage("publish").state, "skipped_when");
    let announce = run.stage("announce");
    assert_eq!(announce.state, "skipped");
    assert!(
        announce
            .reason()
            .contains("`publish` was skipped by its `when`"),
        "{announce:?}"
    );
    assert!(!out.file("announce-ran").exists());
    assert_eq!(run.stage("notify").state, "succeeded");
    assert!(out.file("notify-ran").exists());
    assert_eq!(run.stage("after-notify").state, "succeeded");
    let summary = &out.stderr;
    assert!(summary.contains("2 skipped"), "{summary}");
}

#[test]
fn an_unknown_trigger_in_when_is_a_config_error_with_a_suggestion() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              soak: {run: 'true', when: {trigger: [pr, nighty]}}
            ",
        )
        .args(["run"])
        .code(2)
        .run();
    let mut lines = out.stderr.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("error: pipeline.yml:3:"),
        "{}",
        out.stderr
    );
    assert!(
        first.ends_with(": `nighty` is not a trigger (did you mean `nightly`?)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        lines.nth(1),
        Some("3 |   soak: {run: 'true', when: {trigger: [pr, nighty]}}")
    );
    assert!(!out.file(".murphy").exists());

    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              soak: {run: 'true', when: {trigger: weekly}}
            ",
        )
        .args(["validate"])
        .code(2)
        .run();
    assert_eq!(
        out.stderr,
        [
            "error: pipeline.yml:3:39: `weekly` is not a trigger; triggers are: local, pre-push, pr, push, nightly, tag",
            "  |",
            "3 |   soak: {run: 'true', when: {trigger: weekly}}",
            "  |                                       ^^^^^^",
            "",
        ]
        .join("\n")
    );
}

#[test]
fn an_unknown_trigger_in_a_block_list_is_reported_where_it_is_written() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              soak:
                run: 'true'
                when:
                  trigger:
                    - pr
                    - nighty
            ",
        )
        .args(["validate"])
        .code(2)
        .run();
    assert!(
        out.stderr.starts_with(
            "error: pipeline.yml:8:11: `nighty` is not a trigger (did you mean `nightly`?)\n  |\n8 |         - nighty\n"
        ),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Release versions

const STAMP: &str = "
    version: 1
    stages:
      stamp: {run: 'mkdir -p out && echo \"${MURPHY_VERSION-unset} ${MURPHY_PRERELEASE-unset}\" > out/version'}
";

#[test]
fn versions_and_prereleases_from_the_tag_at_head() {
    let out = Test::new()
        .git_init()
        .pipeline(STAMP)
        .commit("Release")
        .args(["run"])
        .run();
    assert_eq!(out.read("out/version"), "unset unset\n");
    assert_eq!(out.show()["version"], Value::Null);

    let mut previous: Option<&str> = None;
    for (tag, expected) in [
        ("v1.2.0", "1.2.0 false"),
        ("v1.2.0rc1", "1.2.0rc1 true"),
        ("v1.2.0-rc.1", "1.2.0-rc.1 true"),
        ("v2.0.0b2", "2.0.0b2 true"),
    ] {
        if let Some(previous) = previous {
            out.git(["tag", "-d", previous]);
        }
        out.git(["tag", tag]);
        previous = Some(tag);
        out.murphy(["run", "--trigger", "tag"]).run();
        assert_eq!(out.read("out/version").trim(), expected, "{tag}");
        let show = out.show();
        let (version, prerelease) = expected.split_once(' ').unwrap();
        assert_eq!(show["tag"], tag);
        assert_eq!(show["version"], version, "{tag}");
        assert_eq!(show["prerelease"], prerelease == "true", "{tag}");
        let text = out.murphy(["show"]).run().stdout;
        let line = if prerelease == "true" {
            format!("version      {version} (pre-release)\n")
        } else {
            format!("version      {version}\n")
        };
        assert!(text.contains(&line), "{tag}: {text}");
    }
}

#[test]
fn the_newest_release_tag_at_head_wins() {
    let out = Test::new()
        .git_init()
        .pipeline(STAMP)
        .commit("Release")
        .git(["tag", "v1.2.0rc1"])
        .git(["tag", "v1.2.0"])
        .git(["tag", "v1.10.0"])
        .git(["tag", "v1.9.0"])
        .args(["run", "--trigger", "tag"])
        .run();
    assert_eq!(out.read("out/version"), "1.10.0 false\n");
}

#[test]
fn a_tag_run_without_a_release_tag_stops_before_anything_runs() {
    let out = Test::new()
        .git_init()
        .pipeline(STAMP)
        .commit("Untagged")
        .args(["run", "--trigger", "tag"])
        .code(2)
        .run();
    assert_eq!(
        out.stderr,
        "error: a `tag` run needs a tag: push one (CI reads it from the event) or tag HEAD with a tag matching `v*`\n"
    );
    assert!(out.runs().is_empty());
    assert!(!out.file("out").exists());

    // A tag that is not a release tag is no tag to a release.
    out.git(["tag", "nightly-5"]);
    let again = out.murphy(["run", "--trigger", "tag"]).code(2).run();
    assert!(again.stderr.contains("needs a tag"), "{}", again.stderr);

    // Outside any repository there is no tag either.
    let out = Test::new()
        .pipeline(STAMP)
        .args(["run", "--trigger", "tag"])
        .code(2)
        .run();
    assert!(out.stderr.contains("needs a tag"), "{}", out.stderr);
}

#[test]
fn a_tag_run_on_a_release_tag_that_is_no_version_stops_before_anything_runs() {
    let out = Test::new()
        .git_init()
        .pipeline(STAMP)
        .commit("Tagged")
        .git(["tag", "vfoo"])
        .args(["run", "--trigger", "tag"])
        .code(2)
        .run();
    assert_eq!(
        out.stderr,
        "error: tag `vfoo` is not a version: expected forms like `v1.2.0`, `v1.2.0-rc.1` (semver) or `v1.2.0rc1` (PEP 440)\n"
    );
    assert!(out.runs().is_empty());
    assert!(!out.file("out").exists());

    // Any other trigger runs without a version.
    out.murphy(["run"]).run();
    assert_eq!(out.read("out/version"), "unset unset\n");
    assert_eq!(out.show()["tag"], "vfoo");

    // Likewise for a tag CI says it builds.
    let out = Test::new()
        .pipeline(STAMP)
        .env("GITLAB_CI", "true")
        .env("CI_PIPELINE_SOURCE", "push")
        .env("CI_COMMIT_TAG", "v1.x")
        .args(["run"])
        .code(2)
        .run();
    assert!(
        out.stderr.starts_with("error: tag `v1.x` is not a version"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_tag_run_reads_the_version_from_a_custom_release_tag() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            release_tags: 'release-*'
            stages:
              stamp: {run: 'mkdir -p out && echo \"$MURPHY_VERSION $MURPHY_PRERELEASE\" > out/version'}
            ",
        )
        .commit("Release")
        .git(["tag", "release-1.2.0"])
        .args(["run", "--trigger", "tag"])
        .run();
    assert_eq!(out.read("out/version"), "1.2.0 false\n");
}

#[test]
fn resume_keeps_the_trigger_the_version_and_the_when_answers() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              lint: {when: {trigger: [local]}, run: 'true'}
              flaky: {run: 'mkdir -p out && echo \"$MURPHY_TRIGGER $MURPHY_VERSION\" >> out/seen && test ! -e out/fail'}
            ",
        )
        .commit("Release")
        .git(["tag", "v1.0.0"])
        .write("out/fail", "")
        .args(["run", "--trigger", "tag"])
        .code(1)
        .run();
    // Without the tag a new run would be `local` with no version; the resumed run is still
    // the release it started as.
    out.git(["tag", "-d", "v1.0.0"]);
    std::fs::remove_file(out.file("out/fail")).unwrap();
    out.murphy(["resume"]).run();
    assert_eq!(out.read("out/seen"), "tag 1.0.0\ntag 1.0.0\n");
    let run = out.status();
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.stage("lint").state, "skipped_when");
    assert_eq!(run.stage("flaky").state, "succeeded");
    let show = out.show();
    assert_eq!(show["trigger"], "tag");
    assert_eq!(show["version"], "1.0.0");
}

#[test]
fn the_version_is_part_of_the_fingerprint() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              stamp: {inputs: [src.txt], run: 'mkdir -p out && echo \"$MURPHY_VERSION\" >> out/stamped'}
            ",
        )
        .write("src.txt", "source\n")
        .commit("Release")
        .git(["tag", "v1.0.0"])
        .args(["run", "--trigger", "tag"])
        .run();
    assert_eq!(out.read("out/stamped"), "1.0.0\n");
    out.murphy(["run", "--trigger", "tag"]).run();
    assert_eq!(out.status().stage("stamp").state, "cached");
    assert_eq!(out.count("out/stamped"), 1);

    // Same sources, another version: stamped again.
    out.git(["tag", "v1.1.0"]);
    out.murphy(["run", "--trigger", "tag"]).run();
    let stamp = out.status();
    let stamp = stamp.stage("stamp");
    assert_eq!(stamp.state, "succeeded", "{stamp:?}");
    assert!(stamp.why().contains("MURPHY_VERSION"), "{stamp:?}");
    assert_eq!(out.read("out/stamped"), "1.0.0\n1.1.0\n");

    // Back to the first version: its checkpoint is still good.
    out.git(["tag", "-d", "v1.1.0"]);
    out.murphy(["run", "--trigger", "tag"]).run();
    assert_eq!(out.status().stage("stamp").state, "cached");
    assert_eq!(out.count("out/stamped"), 2);
}

// ---------------------------------------------------------------------------------------
// Change descriptions, `show` and `runs`

/// An editor script under the test's ignored home: `$1` is the file to edit.
fn editor(out: &Output, body: &str) -> String {
    let path = out.file(".home/editor.sh");
    out.write(".home/editor.sh", &format!("#!/bin/sh\n{body}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn description_flag_is_shown_and_listed() {
    let out = Test::new()
        .pipeline(NOOP)
        .args([
            "run",
            "--description",
            "Retry uploads on 503\n\nThe CDN sheds load with 503s.",
        ])
        .run();
    let show = out.show();
    assert_eq!(
        show["description"],
        "Retry uploads on 503\n\nThe CDN sheds load with 503s."
    );
    let text = out.murphy(["show"]).run().stdout;
    assert!(
        text.contains("description  Retry uploads on 503\n"),
        "{text}"
    );
    assert!(
        text.contains("             The CDN sheds load with 503s.\n"),
        "{text}"
    );

    let runs = out.murphy(["runs"]).run().stdout;
    let mut lines = runs.lines();
    let header = lines.next().unwrap();
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "RUN",
            "STATUS",
            "TRIGGER",
            "STARTED",
            "DURATION",
            "STAGES",
            "DESCRIPTION"
        ]
    );
    let row = lines.next().unwrap();
    // Only the first line of the description fits the table.
    assert!(row.ends_with("  Retry uploads on 503"), "{runs}");
    assert!(!runs.contains("CDN"), "{runs}");
    let listed: Vec<Value> = parse_json(&out.murphy(["runs", "--json"]).run().stdout);
    assert_eq!(listed[0]["description"], show["description"]);
    assert_eq!(listed[0]["trigger"], "local");

    // A long first line is cut to fit the table; the record keeps it whole.
    let long = "x".repeat(70);
    out.murphy(["run", "--description", &long]).run();
    let runs = out.murphy(["runs"]).run().stdout;
    let row = runs.lines().nth(1).unwrap();
    assert!(row.ends_with(&format!("  {}...", "x".repeat(57))), "{runs}");
    assert_eq!(out.show()["description"], long.as_str());
}

#[test]
fn description_commit_takes_the_last_commit_message() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            description: commit
            stages:
              check: {run: 'true'}
            ",
        )
        .commit("Fix the flaky upload\n\nRetries twice before giving up.")
        .args(["run"])
        .run();
    assert_eq!(
        out.show()["description"],
        "Fix the flaky upload\n\nRetries twice before giving up."
    );
    let runs = out.murphy(["runs"]).run().stdout;
    assert!(runs.contains("  Fix the flaky upload\n"), "{runs}");

    // The flag wins over the commit.
    out.murphy(["run", "--description", "Said on the command line"])
        .run();
    assert_eq!(out.show()["description"], "Said on the command line");

    // Without `description: commit` a run has none.
    out.pipeline(NOOP);
    out.commit("Plain");
    out.murphy(["run"]).run();
    assert_eq!(out.show()["description"], Value::Null);
    let text = out.murphy(["show"]).run().stdout;
    assert!(
        text.contains("description  (none: see `murphy run --description`)"),
        "{text}"
    );
}

#[test]
fn edit_stores_what_the_editor_wrote() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .commit("Speed up the cache")
        .args(["runs"])
        .run();
    let script = editor(
        &out,
        "cp \"$1\" \"$(dirname \"$0\")/template.txt\"\n\
         printf 'Cache keys by content\\n\\nNot by mtime.\\n# a comment line\\n' > \"$1\"",
    );
    out.murphy(["run", "--edit"])
        .env("EDITOR", &script)
        .env("VISUAL", &script)
        .run();
    assert_eq!(
        out.show()["description"],
        "Cache keys by content\n\nNot by mtime."
    );
    // The editor was given the commit subject to start from, and help in comments.
    let template = out.read(".home/template.txt");
    assert!(template.starts_with("Speed up the cache\n"), "{template}");
    assert!(template.contains("\n# "), "{template}");
    assert!(!out.file(".murphy/DESCRIPTION_EDITMSG").exists());
}

#[test]
fn edit_prefers_visual_to_editor() {
    let out = Test::new().pipeline(NOOP).args(["runs"]).run();
    let visual = editor(&out, "echo 'From VISUAL' > \"$1\"");
    out.murphy(["run", "--edit"])
        .env("VISUAL", &visual)
        .env("EDITOR", "false")
        .run();
    assert_eq!(out.show()["description"], "From VISUAL");
}

#[test]
fn an_empty_description_from_the_editor_aborts_and_records_nothing() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              check: {run: touch check-ran}
            ",
        )
        .args(["runs"])
        .run();
    // Only comments left: as empty as an empty file.
    for body in [": > \"$1\"", "printf '# nothing\\n\\n' > \"$1\""] {
        let script = editor(&out, body);
        let aborted = out
            .murphy(["run", "--edit"])
            .env("EDITOR", &script)
            .env("VISUAL", &script)
            .code(2)
            .run();
        assert_eq!(
            aborted.stderr,
            "error: aborted: the description is empty, so nothing was run\n"
        );
        assert_eq!(out.murphy(["runs", "--json"]).run().stdout.trim(), "[]");
        assert!(!out.file("check-ran").exists());
    }
}

#[test]
fn a_failing_editor_aborts_the_run() {
    let out = Test::new().pipeline(NOOP).args(["runs"]).run();
    let failed = out
        .murphy(["run", "--edit"])
        .env("EDITOR", "false")
        .env("VISUAL", "false")
        .code(2)
        .run();
    assert!(
        failed.stderr.contains("cannot run the editor `false`"),
        "{}",
        failed.stderr
    );
    assert_eq!(out.murphy(["runs", "--json"]).run().stdout.trim(), "[]");
}

#[test]
fn show_text_has_description_trigger_version_commit_and_links() {
    let out = Test::new()
        .git_init()
        .pipeline(NOOP)
        .commit("Previous")
        .git(["tag", "v1.1.0"])
        .commit("Ship the upload fix")
        .git(["tag", "v1.2.0rc1"])
        .git(["remote", "add", "origin", "git@github.com:o/r.git"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_REPOSITORY", "o/r")
        .env("GITHUB_RUN_ID", "42")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_REF", "refs/pull/7/merge")
        .args(["run", "--description", "Upload fix, first candidate"])
        .run();
    let sha = out.git(["rev-parse", "HEAD"]);
    let text = out.murphy(["show"]).run().stdout;
    let run_id = out.status().run_id;
    let github = "https://github.com/o/r";
    for line in [
        format!("run          {run_id} of `"),
        "description  Upload fix, first candidate\n".to_owned(),
        "trigger      pr (GitHub Actions, pull_request)\n".to_owned(),
        "version      1.2.0rc1 (pre-release)\n".to_owned(),
        format!("commit       {} on `main`\n", &sha[..12]),
        format!("             by {}, ", author()),
        "             Ship the upload fix\n".to_owned(),
        format!("links        commit  {github}/commit/{sha}\n"),
        format!("             diff    {github}/compare/v1.1.0...{sha}\n"),
        format!("             pr      {github}/pull/7\n"),
        format!("             ci run  {github}/actions/runs/42\n"),
        "stages       check  succeeded".to_owned(),
    ] {
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }
    let order: Vec<usize> = [
        "description",
        "trigger",
        "version",
        "commit",
        "links",
        "stages",
    ]
    .iter()
    .map(|label| text.find(&format!("\n{label} ")).unwrap())
    .collect();
    assert!(order.is_sorted(), "{text}");

    let runs = out.murphy(["runs"]).run().stdout;
    let row = runs.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(cells[0].trim(), run_id);
    assert_eq!(cells[1].trim(), "succeeded");
    assert_eq!(cells[2].trim(), "pr");
    assert_eq!(cells.last().unwrap().trim(), "Upload fix, first candidate");
}

/// A resumed tag run compares the tree again: its record says how it was when it started.
#[test]
fn a_resumed_tag_run_refuses_a_tree_changed_since() {
    let out = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              check: {run: test -f ok}
            ",
        )
        .write("tracked.txt", "committed\n")
        .commit("Initial")
        .git(["tag", "v1.0.0"])
        .args(["run", "--trigger", "tag"])
        .code(1)
        .run();
    out.write("ok", "");
    out.write("tracked.txt", "changed\n");
    let refused = out.murphy(["resume"]).code(2).run();
    assert_eq!(
        refused.stderr,
        "error: a tag run releases what HEAD holds, and 1 tracked file(s) differ from HEAD: `tracked.txt`; commit or stash them, or pass --allow-dirty\n"
    );
    assert_eq!(out.status().status, "failed");
    out.murphy(["resume", "--allow-dirty"]).run();
    assert_eq!(out.status().status, "succeeded");
}

/// A tag run outside any repository (a CI job on an exported tree) has no tree to compare:
/// resuming it is not refused as dirty.
#[test]
fn a_tag_run_outside_a_repository_resumes() {
    let out = Test::new()
        .pipeline("version: 1\nstages:\n  check: {run: test -f ok}\n")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_REF", "refs/tags/v1.0.0")
        .args(["run"])
        .code(1)
        .run();
    assert_eq!(out.show()["trigger"], "tag");
    out.write("ok", "");
    out.murphy(["resume"]).run();
    assert_eq!(out.status().status, "succeeded");
}
