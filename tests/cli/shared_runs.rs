//! Runs on the shared store: fresh clones acting as separate CI runners list, show and resume
//! each other's runs through one bucket of a real S3 server (moto's `moto_server`).

use std::path::Path;

use crate::moto::Moto;
use crate::support::{Output, RunView, Test, git, parse_json};

/// `build` waits for a `go` file, so a test can act while it runs.
const PIPELINE: &str = r#"
    version: 1
    stages:
      build:
        inputs: [src.txt]
        outputs: [out/app.bin]
        run:
          - echo started > started
          - while [ ! -e go ]; do sleep 0.05; done
          - mkdir -p out && cat src.txt > out/app.bin && echo "built from $(cat src.txt)" && echo build >> ran.log
      test:
        needs: [build]
        inputs: [out/app.bin]
        run: ["test -s out/app.bin && echo test >> ran.log"]
"#;

fn origin() -> Test {
    Test::new()
        .git_init()
        .pipeline(PIPELINE)
        .write("src.txt", "v1\n")
        .write(".gitignore", "out/\nran.log\nstarted\ngo\n")
        .commit("first")
}

/// A fresh clone of `origin`: a new CI runner with no local state, using the store.
fn runner(moto: &Moto, origin: &Path, store: &str) -> Test {
    moto.env(crate::support::runner(origin))
        .env("MURPHY_STORE", store)
}

/// Another murphy command on the runner `out` ran on, with the store.
fn on(moto: &Moto, out: &Output, store: &str) -> Test {
    moto.env(out.murphy(Vec::<String>::new()).cwd("work"))
        .env("MURPHY_STORE", store)
}

fn runs(test: Test) -> Vec<RunView> {
    parse_json(&listing(test).stdout)
}

/// `murphy runs --json`, whose output is also a handle on the runner it ran on.
fn listing(test: Test) -> Output {
    test.args(["runs", "--json"]).run()
}

#[test]
fn a_runner_lists_the_runs_of_another_and_prints_its_logs() {
    let moto = Moto::start();
    let store = format!("{}/team", moto.bucket("lists"));
    let origin = origin();
    let a = runner(&moto, origin.path(), &store)
        .write("work/go", "")
        .args(["run"])
        .run();
    let [run_a]: [RunView; 1] = runs(on(&moto, &a, &store)).try_into().unwrap();

    let b = runner(&moto, origin.path(), &store);
    let listed = runs(b);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0].run_id, run_a.run_id);
    assert_eq!(listed[0].status, "succeeded");
    let b = runner(&moto, origin.path(), &store)
        .args(["logs", &run_a.run_id, "build"])
        .run();
    assert!(b.stdout.ends_with("\nbuilt from v1\n"), "{}", b.stdout);
    let status: RunView = parse_json(
        &on(&moto, &b, &store)
            .args(["status", "--json"])
            .run()
            .stdout,
    );
    assert_eq!(status.run_id, run_a.run_id);
    assert_eq!(status.stage("build").state, "succeeded");
    assert_eq!(status.stage("test").state, "succeeded");
    // B ran nothing: it only read what A recorded.
    assert!(!b.path().join("work/ran.log").exists());
}

#[test]
fn a_run_killed_mid_upload_is_resumed_and_completed_on_another_runner() {
    let moto = Moto::start();
    let store = format!("{}/team", moto.bucket("killed"));
    let origin = origin();
    // Killed after build's objects were uploaded, before its checkpoint record.
    let a = runner(&moto, origin.path(), &store)
        .write("work/go", "")
        .env("MURPHY_CRASH_AT", "objects-shared:build")
        .env("MURPHY_STORE_LEASE", "3s")
        .args(["run"])
        .run_killed();
    let [run_a]: [RunView; 1] = runs(on(&moto, &a, &store)).try_into().unwrap();

    let b = listing(runner(&moto, origin.path(), &store).write("work/go", ""));
    let listed: Vec<RunView> = parse_json(&b.stdout);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0].run_id, run_a.run_id);
    assert_eq!(listed[0].status, "killed");
    // A's lease lasts until it expires (no one renews it): B is refused until then.
    let resumed = loop {
        let (code, out) = on(&moto, &b, &store)
            .args(["resume", &run_a.run_id])
            .run_unchecked();
        match code {
            Some(75) => {
                assert!(
                    out.stderr.contains("is being run by") && out.stderr.contains("(pid "),
                    "{}",
                    out.stderr
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            _ => break (code, out),
        }
    };
    assert_eq!(resumed.0, Some(0), "{}", resumed.1.stderr);
    // No partial checkpoint of A's was trusted: B built it.
    assert_eq!(
        std::fs::read_to_string(b.path().join("work/ran.log")).unwrap(),
        "build\ntest\n"
    );

    // A third runner sees the run as B finished it, under A's id.
    let c = runner(&moto, origin.path(), &store);
    let [seen]: [RunView; 1] = runs(c).try_into().unwrap();
    assert_eq!(seen.run_id, run_a.run_id);
    assert_eq!(seen.status, "succeeded", "{seen:#?}");
}

#[test]
fn a_resume_elsewhere_while_the_run_goes_on_is_refused_naming_the_holder() {
    let moto = Moto::start();
    let store = moto.bucket("held");
    let origin = origin();
    let mut a = runner(&moto, origin.path(), &store).args(["run"]).spawn();
    let started = a.path().join("work/started");
    a.wait_until("build started", || started.exists());

    let b_out = listing(runner(&moto, origin.path(), &store));
    let [run_a]: [RunView; 1] = parse_json::<Vec<RunView>>(&b_out.stdout)
        .try_into()
        .unwrap();
    assert_eq!(run_a.status, "killed", "no live lock on B: {run_a:#?}");
    let refused = on(&moto, &b_out, &store)
        .args(["resume", &run_a.run_id])
        .code(75)
        .run();
    let holder = format!("(pid {}, {})", a.pid(), run_a.run_id);
    assert!(
        refused
            .stderr
            .contains(&format!("run {} is being run by", run_a.run_id))
            && refused.stderr.contains(&holder)
            && refused.stderr.contains("ends at"),
        "{}",
        refused.stderr
    );
    assert!(!b_out.path().join("work/ran.log").exists());

    std::fs::write(a.path().join("work/go"), "").unwrap();
    a.wait();
    let done = on(&moto, &b_out, &store)
        .args(["resume", &run_a.run_id])
        .code(2)
        .run();
    assert!(
        done.stderr
            .contains("succeeded; there is nothing to resume"),
        "{}",
        done.stderr
    );
}

#[test]
fn a_run_that_lost_the_store_mid_run_is_completed_by_resume_once_it_is_back() {
    let mut moto = Moto::start();
    let store = format!("{}/team", moto.bucket("lost"));
    let origin = origin();
    let mut a = runner(&moto, origin.path(), &store)
        .env("MURPHY_STORE_RETRY_TIMEOUT", "1s")
        .args(["run"])
        .code(1)
        .spawn();
    let started = a.path().join("work/started");
    a.wait_until("build started", || started.exists());
    moto.kill();
    std::fs::write(a.path().join("work/go"), "").unwrap();
    let failed = a.wait();
    assert!(
        failed.stderr.contains("cannot share the checkpoint"),
        "{}",
        failed.stderr
    );
    assert!(failed.stderr.contains("murphy resume"), "{}", failed.stderr);

    // moto keeps everything in memory: the store comes back empty.
    moto.restart();
    moto.bucket("lost");
    let run_id = runs(on(&moto, &failed, &store))[0].run_id.clone();
    on(&moto, &failed, &store).args(["resume"]).run();

    // A fresh runner finds the whole run: what the store lost was pushed again.
    let c_out = listing(runner(&moto, origin.path(), &store));
    let [seen]: [RunView; 1] = parse_json::<Vec<RunView>>(&c_out.stdout)
        .try_into()
        .unwrap();
    assert_eq!(seen.run_id, run_id);
    assert_eq!(seen.status, "succeeded", "{seen:#?}");
    let log = on(&moto, &c_out, &store)
        .args(["logs", &run_id, "build"])
        .run();
    assert!(log.stdout.contains("\nbuilt from v1\n"), "{}", log.stdout);
}

#[test]
fn a_run_killed_here_is_resumed_here_at_once_despite_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let origin = origin();
    let a = Test::new();
    git(
        a.path(),
        ["clone", "-q", &origin.path().to_string_lossy(), "work"],
    );
    // The lease of the killed murphy is 90 s long; its process is gone, and this is its host.
    let a = a
        .cwd("work")
        .write("work/go", "")
        .env("MURPHY_STORE", &store)
        .env("MURPHY_CRASH_AT", "objects-shared:build")
        .args(["run"])
        .run_killed();
    a.murphy(["resume"])
        .cwd("work")
        .env("MURPHY_STORE", &store)
        .run();
    let [run]: [RunView; 1] = runs(
        a.murphy(Vec::<String>::new())
            .cwd("work")
            .env("MURPHY_STORE", &store),
    )
    .try_into()
    .unwrap();
    assert_eq!(run.status, "succeeded");
}

#[test]
fn a_lease_length_that_is_not_a_duration_of_seconds_is_refused_before_a_run_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    // Under 3 s a renewal (every third of it) has no time to answer; 2ns made it zero.
    for bad in ["soon", "2ns", "2s"] {
        let out = origin()
            .env("MURPHY_STORE", &format!("file://{}", dir.path().display()))
            .env("MURPHY_STORE_LEASE", bad)
            .args(["run"])
            .code(2)
            .run();
        assert!(
            out.stderr.contains(&format!(
                "MURPHY_STORE_LEASE=`{bad}` is not a duration like `90s` of at least 3 s"
            )),
            "{}",
            out.stderr
        );
        assert!(runs(out.murphy(Vec::<String>::new())).is_empty());
    }
}

/// The run's folder in a `file://` store under `dir` (with `prefix`), once there is one.
fn stored_run(dir: &Path, prefix: &str) -> Option<std::path::PathBuf> {
    let runs = dir.join(prefix).join("runs");
    let entry = std::fs::read_dir(runs).ok()?.flatten().next()?;
    Some(entry.path())
}

#[test]
fn a_run_that_loses_its_lease_stops_before_anything_else_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let mut a = origin()
        .env("MURPHY_STORE", &store)
        .env("MURPHY_STORE_LEASE", "3s")
        .args(["run"])
        .code(1)
        .spawn();
    let started = a.path().join("started");
    a.wait_until("build started", || started.exists());
    let lease = stored_run(dir.path(), "").unwrap().join("lease");
    a.wait_until("the lease is taken", || lease.exists());
    // Another machine takes the run over (as if A had not renewed in time).
    let theirs =
        r#"{"holder":"runner-b (pid 1, resume)","expires":"2999-01-01T00:00:00Z","nonce":"b0b0"}"#;
    std::fs::write(&lease, theirs).unwrap();
    let stopped = a.wait();
    let run_id = stored_run(dir.path(), "")
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        stopped.stderr.contains(&format!(
            "lost the lease on run {run_id} to runner-b (pid 1, resume): stopping before anything else is published or archived"
        )),
        "{}",
        stopped.stderr
    );
    // Build never went on to test, and B's lease was left alone.
    assert!(!stopped.path().join("ran.log").exists());
    assert_eq!(std::fs::read_to_string(&lease).unwrap(), theirs);
}

#[test]
fn a_pull_request_run_keeps_its_records_under_its_own_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let origin = origin();
    let pr = |test: Test| {
        test.env("MURPHY_STORE", &store)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_EVENT_NAME", "pull_request")
            .env("GITHUB_REF", "refs/pull/7/merge")
    };
    let _a = pr(crate::support::runner(origin.path()))
        .write("work/go", "")
        .args(["run"])
        .run();
    let stored = stored_run(dir.path(), "pr/7").expect("no run under pr/7/runs");
    assert!(stored.join("meta.json").is_file());
    assert!(stored.join("lease").is_file());
    assert!(
        !dir.path().join("runs").exists(),
        "a pull request's run was written where every run is listed"
    );
    // A trusted runner does not see it; another runner of the pull request does.
    let trusted = crate::support::runner(origin.path()).env("MURPHY_STORE", &store);
    assert!(runs(trusted).is_empty());
    let run_id = stored.file_name().unwrap().to_string_lossy().into_owned();
    let b = pr(crate::support::runner(origin.path()))
        .args(["resume", &run_id])
        .code(2)
        .run();
    assert!(
        b.stderr.contains("succeeded; there is nothing to resume"),
        "{}",
        b.stderr
    );
}

#[test]
fn a_refused_resume_leaves_a_pulled_run_marked_as_another_machines() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let origin = origin();
    let mut a = crate::support::runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .spawn();
    let started = a.path().join("work/started");
    a.wait_until("build started", || started.exists());
    let b = listing(crate::support::runner(origin.path()).env("MURPHY_STORE", &store));
    let [run_a]: [RunView; 1] = parse_json::<Vec<RunView>>(&b.stdout).try_into().unwrap();
    b.murphy(["resume", &run_a.run_id])
        .cwd("work")
        .env("MURPHY_STORE", &store)
        .code(75)
        .run();
    let mark = b
        .path()
        .join("work/.murphy/runs")
        .join(&run_a.run_id)
        .join("pulled");
    assert!(
        mark.exists(),
        "a resume refused its lease made the run B's own"
    );
    std::fs::write(a.path().join("work/go"), "").unwrap();
    a.wait();
}
