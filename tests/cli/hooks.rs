//! `murphy hooks install|uninstall`, and the hook fired by a real `git push` to a local bare
//! remote.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process;

use crate::support::{Output, Test, git, git_command};

/// `check` runs before a push and fails when `fail-pre-push` exists; `pr-only` always fails
/// but never runs before a push. Both record what they saw in `out/` (ignored by git).
const PIPELINE: &str = "
    version: 1
    stages:
      check:
        when: {trigger: pre-push}
        run: 'mkdir -p out && echo murphy >> out/log && cp \"$MURPHY_CHANGED_FILES\" out/changed.txt && test ! -e fail-pre-push'
      pr-only: {when: {trigger: pr}, run: exit 1}
";

/// A repository with `pipeline.yml` and `a.txt`, `b.txt`, `c.txt` committed on `main` and
/// pushed to the bare `remote.git` beside it, as `origin`. No hook yet.
fn project(pipeline: &str) -> Output {
    let test = Test::new()
        .git_init()
        .pipeline(pipeline)
        .write("a.txt", "a\n")
        .write("b.txt", "b\n")
        .write("c.txt", "c\n")
        .commit("Base")
        .git(["init", "-q", "--bare", "remote.git"]);
    let remote = test.path().join("remote.git");
    test.git(["remote", "add", "origin", remote.to_str().unwrap()])
        .git(["push", "-q", "-u", "origin", "main"])
        .args(["runs"])
        .run()
}

/// `git push origin ARGS...` with the hook in place; does not check how it ended.
fn push(out: &Output, refs: &[&str]) -> process::Output {
    git_command(out.path())
        .args(["push", "origin"])
        .args(refs)
        .output()
        .expect("cannot start git push")
}

fn assert_pushed(push: &process::Output) {
    assert!(
        push.status.success(),
        "the push was refused ({})\n{}",
        push.status,
        String::from_utf8_lossy(&push.stderr)
    );
}

fn assert_refused(push: &process::Output) {
    assert!(
        !push.status.success(),
        "the push went through\n{}",
        String::from_utf8_lossy(&push.stderr)
    );
}

/// The commit the remote's `main` is at.
fn remote_main(out: &Output) -> String {
    git(&out.file("remote.git"), ["rev-parse", "main"])
}

/// Writes an executable hook script.
fn write_hook(out: &Output, path: &str, script: &str) {
    out.write(path, script);
    fs::set_permissions(out.file(path), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_failing_pre_push_stage_refuses_the_push_and_a_passing_one_lets_it_through() {
    let out = project(PIPELINE);
    let installed = out.murphy(["hooks", "install"]).run();
    let hook = out.file(".git/hooks/pre-push");
    assert_eq!(
        installed.stdout,
        format!("installed the pre-push hook at {}\n", hook.display())
    );
    let script = fs::read_to_string(&hook).unwrap();
    assert!(
        script.contains(env!("CARGO_BIN_EXE_murphy")),
        "the hook runs the murphy that installed it:\n{script}"
    );

    let base = remote_main(&out);
    out.write("a.txt", "a, changed\n");
    out.write("fail-pre-push", "");
    let head = out.commit("Change a");
    let refused = push(&out, &["main"]);
    assert_refused(&refused);
    assert_eq!(remote_main(&out), base, "the remote did not move");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("check"),
        "murphy's output reaches git:\n{stderr}"
    );
    let run = out.status();
    assert_eq!(run.status, "failed");
    assert_eq!(run.stage("check").state, "failed");
    assert_eq!(run.stage("pr-only").state, "skipped_when");
    assert_eq!(out.show()["trigger"], "pre-push");

    out.git(["rm", "-q", "fail-pre-push"]);
    let head2 = out.commit("Stop failing");
    assert_ne!(head, head2);
    assert_pushed(&push(&out, &["main"]));
    assert_eq!(remote_main(&out), head2, "the remote has the pushed commit");
    let run = out.status();
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.stage("check").state, "succeeded");
    assert_eq!(run.stage("pr-only").state, "skipped_when");
    assert_eq!(out.count("out/log"), 2);

    // Installing again updates murphy's own hook in place.
    let again = out.murphy(["hooks", "install"]).run();
    assert_eq!(
        again.stdout,
        format!("updated the pre-push hook at {}\n", hook.display())
    );
}

/// A hook that logs its arguments and input, and vetoes the push when `out/veto` exists.
const FOREIGN: &str = "#!/bin/sh
mkdir -p out
echo \"foreign $1 $2\" >> out/log
cat >> out/foreign-stdin
test ! -e out/veto
";

#[test]
fn a_foreign_hook_is_refused_without_force() {
    let out = project(PIPELINE);
    write_hook(&out, ".git/hooks/pre-push", FOREIGN);
    let refused = out.murphy(["hooks", "install"]).code(2).run();
    let hook = out.file(".git/hooks/pre-push");
    assert_eq!(
        refused.stderr,
        format!(
            "error: `{}` exists and was not written by murphy; `murphy hooks install --force` keeps it and runs it before murphy\n",
            hook.display()
        )
    );
    assert_eq!(fs::read_to_string(&hook).unwrap(), FOREIGN);
    assert!(!out.file(".git/hooks/pre-push.before-murphy").exists());

    // Nor does uninstall touch it.
    let left = out.murphy(["hooks", "uninstall"]).code(2).run();
    assert!(
        left.stderr
            .contains("was not written by murphy; leaving it alone"),
        "{}",
        left.stderr
    );
    assert_eq!(fs::read_to_string(&hook).unwrap(), FOREIGN);
}

#[test]
fn with_force_the_foreign_hook_runs_first_and_uninstall_restores_it() {
    let out = project(PIPELINE);
    write_hook(&out, ".git/hooks/pre-push", FOREIGN);
    let installed = out.murphy(["hooks", "install", "--force"]).run();
    let kept = out.file(".git/hooks/pre-push.before-murphy");
    assert!(
        installed.stdout.contains(&format!(
            "the hook it replaced is kept at {} and runs first",
            kept.display()
        )),
        "{}",
        installed.stdout
    );
    assert_eq!(fs::read_to_string(&kept).unwrap(), FOREIGN);

    let base = remote_main(&out);
    out.write("a.txt", "a, changed\n");
    let head = out.commit("Change a");
    assert_pushed(&push(&out, &["main"]));
    assert_eq!(remote_main(&out), head);
    let remote = out.file("remote.git");
    // The foreign hook ran first, with git's arguments and the push's refs on stdin.
    assert_eq!(
        out.read("out/log"),
        format!("foreign origin {}\nmurphy\n", remote.display())
    );
    assert_eq!(
        out.read("out/foreign-stdin"),
        format!("refs/heads/main {head} refs/heads/main {base}\n")
    );
    // ... and murphy got the same input: the list of changed files is against `base`.
    assert_eq!(out.read("out/changed.txt"), "a.txt\n");

    // The foreign hook can still veto a push; murphy then does not run.
    out.write("out/veto", "");
    out.write("b.txt", "b, changed\n");
    out.commit("Change b");
    assert_refused(&push(&out, &["main"]));
    assert_eq!(remote_main(&out), head);
    let foreign = format!("foreign origin {}\n", remote.display());
    assert_eq!(out.read("out/log"), format!("{foreign}murphy\n{foreign}"));

    let removed = out.murphy(["hooks", "uninstall"]).run();
    let hook = out.file(".git/hooks/pre-push");
    assert_eq!(
        removed.stdout,
        format!(
            "removed murphy's pre-push hook at {}\nrestored the hook it had replaced\n",
            hook.display()
        )
    );
    assert_eq!(fs::read_to_string(&hook).unwrap(), FOREIGN);
    assert!(!kept.exists());
    // Only the foreign hook runs now.
    fs::remove_file(out.file("out/veto")).unwrap();
    assert_pushed(&push(&out, &["main"]));
    assert_eq!(
        out.read("out/log"),
        format!("{foreign}murphy\n{foreign}{foreign}")
    );

    let nothing = out.murphy(["hooks", "uninstall"]).code(2).run();
    assert!(
        nothing.stderr.contains("leaving it alone"),
        "{}",
        nothing.stderr
    );
}

#[test]
fn uninstall_without_a_hook_removes_nothing() {
    let out = project(PIPELINE);
    let done = out.murphy(["hooks", "uninstall"]).run();
    assert_eq!(
        done.stdout,
        format!(
            "no pre-push hook at {}; nothing to remove\n",
            out.file(".git/hooks/pre-push").display()
        )
    );
    out.murphy(["hooks", "install"]).run();
    out.murphy(["hooks", "uninstall"]).run();
    assert!(!out.file(".git/hooks/pre-push").exists());
}

#[test]
fn a_relative_core_hooks_path_is_honoured_from_any_directory() {
    let out = project(PIPELINE);
    out.git(["config", "core.hooksPath", ".githooks"]);
    out.write("sub/keep", "");
    let installed = out.murphy(["hooks", "install"]).cwd("sub").run();
    let hook = out.file(".githooks/pre-push");
    assert!(
        installed.stdout.contains(".githooks/pre-push"),
        "{}",
        installed.stdout
    );
    assert!(hook.is_file());
    assert!(!out.file(".git/hooks/pre-push").exists());
    assert!(!out.file("sub/.githooks").exists());

    let base = remote_main(&out);
    out.write("fail-pre-push", "");
    out.commit("Fails");
    assert_refused(&push(&out, &["main"]));
    assert_eq!(remote_main(&out), base);
    assert_eq!(out.status().stage("check").state, "failed");

    out.murphy(["hooks", "uninstall"]).run();
    assert!(!hook.exists());
    assert_pushed(&push(&out, &["main"]));
}

#[test]
fn install_outside_a_repository_is_a_usage_error() {
    let out = Test::new()
        .pipeline(PIPELINE)
        .args(["hooks", "install"])
        .code(2)
        .run();
    assert!(
        out.stderr.contains("is not in a git repository"),
        "{}",
        out.stderr
    );
}

#[test]
fn changed_files_are_exactly_those_of_the_pushed_commits() {
    let out = project(PIPELINE);
    out.murphy(["hooks", "install"]).run();
    out.write("a.txt", "a, changed\n");
    out.commit("Change a");
    out.write("d.txt", "new\n");
    out.git(["rm", "-q", "c.txt"]);
    out.commit("Add d, remove c");
    // Not committed, so not pushed: not listed.
    out.write("b.txt", "b, not committed\n");
    out.write("untracked.txt", "x\n");
    assert_pushed(&push(&out, &["main"]));
    assert_eq!(out.read("out/changed.txt"), "a.txt\nc.txt\nd.txt\n");
}

#[test]
fn changed_files_of_a_new_branch_are_against_where_it_forked() {
    let out = project(PIPELINE);
    // As in a clone, origin/HEAD names the remote's default branch.
    out.git(["remote", "set-head", "origin", "main"]);
    out.murphy(["hooks", "install"]).run();
    out.git(["checkout", "-q", "-b", "feature"]);
    out.write("b.txt", "b, on the branch\n");
    out.commit("Change b");
    assert_pushed(&push(&out, &["feature"]));
    assert_eq!(out.read("out/changed.txt"), "b.txt\n");
}

#[test]
fn changed_files_with_no_base_to_compare_list_every_tracked_file() {
    let out = project(PIPELINE);
    out.murphy(["hooks", "install"]).run();
    out.git(["checkout", "-q", "-b", "feature"]);
    out.write("b.txt", "b, on the branch\n");
    out.commit("Change b");
    // A new branch, no upstream and no origin/HEAD: nothing to compare with.
    assert_pushed(&push(&out, &["feature"]));
    assert_eq!(
        out.read("out/changed.txt"),
        "a.txt\nb.txt\nc.txt\npipeline.yml\n"
    );
}

#[test]
fn changed_files_are_those_of_the_pushed_branch_not_of_head() {
    let out = project(PIPELINE);
    out.git(["remote", "set-head", "origin", "main"]);
    out.murphy(["hooks", "install"]).run();
    out.git(["checkout", "-q", "-b", "feature"]);
    out.write("b.txt", "b, on the branch\n");
    out.commit("Change b");
    out.git(["checkout", "-q", "main"]);
    assert_pushed(&push(&out, &["feature"]));
    assert_eq!(out.read("out/changed.txt"), "b.txt\n");
}

#[test]
fn a_hook_installed_for_a_pipeline_in_a_subdirectory_runs_that_pipeline() {
    let test = Test::new()
        .git_init()
        .write(
            "app/pipeline.yml",
            "version: 1\nstages:\n  check: {run: 'true'}\n",
        )
        .write("app/main.c", "int main;\n")
        .commit("App")
        .git(["init", "-q", "--bare", "remote.git"]);
    let remote = test.path().join("remote.git");
    let out = test
        .git(["remote", "add", "origin", remote.to_str().unwrap()])
        .git(["push", "-q", "-u", "origin", "main"])
        .cwd("app")
        .args(["hooks", "install"])
        .run();
    out.write("app/main.c", "int main(void) { return 0; }\n");
    let head = out.commit("Fix main");
    let pushed = push(&out, &["main"]);
    assert_pushed(&pushed);
    assert_eq!(remote_main(&out), head);
    assert!(out.file("app/.murphy/runs").is_dir());
}

#[test]
fn force_with_a_hook_already_kept_names_the_kept_hook() {
    let out = project(PIPELINE);
    write_hook(&out, ".git/hooks/pre-push", FOREIGN);
    out.murphy(["hooks", "install", "--force"]).run();
    // Another tool writes its own hook over murphy's.
    write_hook(&out, ".git/hooks/pre-push", "#!/bin/sh\nexit 0\n");
    let refused = out.murphy(["hooks", "install", "--force"]).code(2).run();
    assert!(
        refused.stderr.contains("pre-push.before-murphy"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(
        fs::read_to_string(out.file(".git/hooks/pre-push.before-murphy")).unwrap(),
        FOREIGN
    );
}
