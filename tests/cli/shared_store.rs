//! The shared store: fresh runners with empty local state, acting as separate CI runners,
//! sharing one bucket of a real S3 server (moto's `moto_server` on 127.0.0.1).

use crate::moto::Moto;
use crate::support::{Output, Test, git, runner};

const PIPELINE: &str = r#"
    version: 1
    stages:
      build:
        inputs: [src.txt]
        outputs: [out/app.bin, out/big.bin]
        run:
          - mkdir -p out && cat src.txt > out/app.bin && echo build >> ran.log
          - head -c 3000000 /dev/urandom > out/big.bin
      test:
        needs: [build]
        inputs: [out/app.bin]
        run: ["test -s out/app.bin && echo test >> ran.log"]
"#;

/// A project committed in a git repository: what runner A checks out.
fn origin() -> Test {
    Test::new()
        .git_init()
        .pipeline(PIPELINE)
        .write("src.txt", "v1\n")
        .write(".gitignore", "out/\nran.log\n")
        .commit("first")
}

fn run_on(moto: &Moto, test: Test, store: &str) -> Output {
    moto.env(test)
        .env("MURPHY_STORE", store)
        .args(["run"])
        .run()
}

#[test]
fn a_second_runner_restores_what_the_first_built_without_running_it() {
    let moto = Moto::start();
    let store = format!("{}/team", moto.bucket("restore"));
    let origin = origin();
    let a = run_on(&moto, runner(origin.path()), &store);
    let work_a = a.path().join("work");
    assert_eq!(
        std::fs::read_to_string(work_a.join("ran.log")).unwrap(),
        "build\ntest\n"
    );

    let b = run_on(&moto, runner(origin.path()), &store);
    let work_b = b.path().join("work");
    assert!(
        !work_b.join("ran.log").exists(),
        "runner B ran a stage:\n{}",
        b.stderr
    );
    for file in ["out/app.bin", "out/big.bin"] {
        assert_eq!(
            std::fs::read(work_a.join(file)).unwrap(),
            std::fs::read(work_b.join(file)).unwrap(),
            "{file} differs"
        );
    }
    let status = b.murphy(["status", "--json"]).cwd("work").run();
    let view: crate::support::RunView = crate::support::parse_json(&status.stdout);
    for stage in ["build", "test"] {
        assert_eq!(view.stage(stage).state, "cached", "{view:#?}");
    }
    // The credential never reaches a log or the terminal.
    assert!(!b.stderr.contains("moto-secret-value-1234"));
}

#[test]
fn store_check_probes_each_operation_and_names_what_failed() {
    let moto = Moto::start();
    let store = moto.bucket("check");
    let out = moto
        .env(Test::new())
        .args(["--store", &store, "store", "check"])
        .run();
    for probe in [
        "write",
        "read",
        "conditional create",
        "conditional update",
        "delete",
    ] {
        assert!(
            out.stdout.contains(&format!("ok      {probe}")),
            "{}",
            out.stdout
        );
    }
    let out = moto
        .env(Test::new())
        .args(["--store", "s3://no-such-bucket/x", "store", "check"])
        .code(1)
        .run();
    assert!(
        out.stdout.contains("FAILED  write") && out.stdout.contains("NoSuchBucket"),
        "{}",
        out.stdout
    );
    // A directory has no `If-Match`: said, since leases are then safe on one machine only.
    let dir = tempfile::tempdir().unwrap();
    let out = Test::new()
        .args([
            "--store",
            &format!("file://{}", dir.path().display()),
            "store",
            "check",
        ])
        .code(1)
        .run();
    assert!(
        out.stdout.contains("ok      conditional create")
            && out
                .stdout
                .contains("FAILED  conditional update: the store has no conditional update"),
        "{}",
        out.stdout
    );
    let out = Test::new()
        .args(["--store", "ftp://host/x", "store", "check"])
        .code(2)
        .run();
    assert!(
        out.stderr.contains("`ftp://host/x` is not a store URL"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_pull_request_reads_shared_checkpoints_but_never_writes_where_trusted_runs_restore() {
    let moto = Moto::start();
    let store = moto.bucket("trust");
    let origin = origin();
    // An untrusted change builds first: its checkpoint goes under its own prefix.
    let pr = moto
        .env(runner(origin.path()))
        .env("MURPHY_STORE", &store)
        .args(["run", "--trigger", "pr"])
        .run();
    assert!(pr.path().join("work/ran.log").exists());
    // A trusted run does not restore it: it builds for itself, and shares that.
    let push = run_on(&moto, runner(origin.path()), &store);
    assert_eq!(
        std::fs::read_to_string(push.path().join("work/ran.log")).unwrap(),
        "build\ntest\n",
        "a push run restored what a pull request made:\n{}",
        push.stderr
    );
    // Another pull request reads what the trusted run shared.
    let pr2 = moto
        .env(runner(origin.path()))
        .env("MURPHY_STORE", &store)
        .args(["run", "--trigger", "pr"])
        .run();
    assert!(!pr2.path().join("work/ran.log").exists(), "{}", pr2.stderr);
}

#[test]
fn an_unreachable_store_stops_the_run_before_anything_is_recorded() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let origin = origin();
    let out = runner(origin.path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("MURPHY_STORE_RETRY_TIMEOUT", "1s")
        .env("MURPHY_STORE", "s3://nowhere/team")
        .args(["run"])
        .code(1)
        .run();
    assert!(
        out.stderr.contains("s3://nowhere/team") && out.stderr.contains("Connection refused"),
        "{}",
        out.stderr
    );
    assert!(!out.path().join("work/ran.log").exists());
    let runs = out.murphy(["runs", "--json"]).cwd("work").run();
    assert_eq!(runs.stdout.trim(), "[]", "a run was recorded");
}

/// A proxy in front of moto that answers its first `refuse` connections with S3's `503 Slow
/// Down`, then passes every byte through; returns its port and how many it refused.
fn throttling_proxy(
    upstream: u16,
    refuse: usize,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = refused.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            if count.load(Ordering::SeqCst) < refuse {
                // Read what the client sends (headers and any body), then refuse it.
                client
                    .set_read_timeout(Some(std::time::Duration::from_millis(200)))
                    .unwrap();
                let mut buf = [0u8; 65536];
                while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                            <Message>Please reduce your request rate.</Message></Error>";
                let _ = write!(
                    client,
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                count.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut client, mut server) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, refused)
}

#[test]
fn a_throttled_store_is_retried() {
    let moto = Moto::start();
    let store = moto.bucket("throttled");
    let (port, refused) = throttling_proxy(moto.port, 3);
    let origin = origin();
    let out = moto
        .env(runner(origin.path()))
        .env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}"))
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run();
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "{}",
        out.stderr
    );
    // Everything arrived: a runner that talks to the store directly restores it all.
    let b = run_on(&moto, runner(origin.path()), &store);
    assert!(!b.path().join("work/ran.log").exists(), "{}", b.stderr);
}

#[test]
fn a_directory_store_is_shared_the_same_way() {
    let shared = tempfile::tempdir().unwrap();
    let store = format!("file://{}", shared.path().display());
    let origin = origin();
    let a = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run();
    assert!(a.path().join("work/ran.log").exists());
    let b = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run();
    assert!(!b.path().join("work/ran.log").exists(), "{}", b.stderr);
    assert!(b.path().join("work/out/big.bin").exists());
    // A damaged object in the store is refused by its digest, and the stage runs instead.
    for entry in walkdir(shared.path().join("checkpoints/objects")) {
        std::fs::write(&entry, b"forged").unwrap();
    }
    let c = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run_unchecked()
        .1;
    assert!(c.stderr.contains("do not hash to its name"), "{}", c.stderr);
    assert_eq!(
        std::fs::read_to_string(c.path().join("work/ran.log")).unwrap_or_default(),
        "build\ntest\n",
        "{}",
        c.stderr
    );
    // The run that found the damage put the right bytes back: the next runner restores.
    let d = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run();
    assert!(!d.path().join("work/ran.log").exists(), "{}", d.stderr);
}

/// Every file below `dir`.
fn walkdir(dir: std::path::PathBuf) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn records_from_the_store_are_trusted_only_with_the_key_that_sealed_them() {
    let shared = tempfile::tempdir().unwrap();
    let store = format!("file://{}", shared.path().display());
    let origin = origin();
    let with_key = |test: Test, key: &str| {
        test.env("MURPHY_STORE", &store)
            .env("MURPHY_STORE_KEY", key)
    };
    let a = with_key(runner(origin.path()), "the-team-key-0123456789")
        .args(["run"])
        .run();
    assert!(a.path().join("work/ran.log").exists());
    // Another key, or none: the record is not trusted, and the stage runs.
    let b = with_key(runner(origin.path()), "another-key-0123456789")
        .args(["run"])
        .run();
    assert!(b.stderr.contains("MAC does not match"), "{}", b.stderr);
    assert!(b.path().join("work/ran.log").exists());
    let c = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run();
    assert!(c.path().join("work/ran.log").exists(), "{}", c.stderr);
    // The same key: restored.
    let d = with_key(runner(origin.path()), "the-team-key-0123456789")
        .args(["run"])
        .run();
    assert!(!d.path().join("work/ran.log").exists(), "{}", d.stderr);
}

#[test]
fn a_kill_mid_upload_shows_no_record_until_resume_shares_it() {
    let moto = Moto::start();
    let store = moto.bucket("killed");
    let origin = origin();
    // Killed after `build`'s objects went up, before its record did.
    let a = moto
        .env(runner(origin.path()))
        .env("MURPHY_STORE", &store)
        .env("MURPHY_CRASH_AT", "objects-shared:build")
        .args(["run"])
        .run_killed();
    // Another runner sees no checkpoint (no record without its objects, nor objects taken for
    // a record): it builds for itself.
    let b = run_on(&moto, runner(origin.path()), &store);
    assert_eq!(
        std::fs::read_to_string(b.path().join("work/ran.log")).unwrap(),
        "build\ntest\n"
    );
    // The killed runner resumes: `build` is not run again, only shared.
    let resumed = moto
        .env(a.murphy(["resume"]).cwd("work"))
        .env("MURPHY_STORE", &store)
        .run();
    assert_eq!(
        std::fs::read_to_string(a.path().join("work/ran.log")).unwrap(),
        "build\ntest\n",
        "{}",
        resumed.stderr
    );
}

#[test]
fn a_store_whose_bucket_does_not_exist_stops_the_run_before_anything_is_recorded() {
    let moto = Moto::start();
    let origin = origin();
    let out = moto
        .env(runner(origin.path()))
        .env("MURPHY_STORE", "s3://no-such-bucket/team")
        .args(["run"])
        .code(1)
        .run();
    assert!(out.stderr.contains("NoSuchBucket"), "{}", out.stderr);
    assert!(!out.path().join("work/ran.log").exists());
    let runs = out.murphy(["runs", "--json"]).cwd("work").run();
    assert_eq!(runs.stdout.trim(), "[]", "a run was recorded");
}

/// A webhook receiver on `listener` that answers every POST with 200 and counts them.
fn receiver(listener: std::net::TcpListener) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if crate::support::read_request(&stream).is_some() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            crate::support::answer(stream, "200 OK", &[], b"");
        }
    });
    posts
}

#[test]
fn a_notification_no_receiver_took_waits_in_the_shared_outbox_for_another_machine() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let shared = tempfile::tempdir().unwrap();
    let store = format!("file://{}", shared.path().display());
    let origin = Test::new()
        .git_init()
        .pipeline(&format!(
            "
            version: 1
            notify:
              - webhook: {{url: 'http://127.0.0.1:{port}/hook', on: [success]}}
            stages:
              build: {{run: echo built}}
            "
        ))
        .commit("first");
    // The receiver is down: the message goes to the shared outbox, not this runner's disk.
    let a = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run();
    assert!(
        a.stderr.contains("is waiting in the shared outbox"),
        "{}",
        a.stderr
    );
    let here = walkdir(a.path().join("work/.murphy/outbox"));
    assert!(
        !here
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "json")),
        "{here:?}"
    );
    let listed = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["outbox", "list", "--json"])
        .run();
    let waiting: Vec<serde_json::Value> = crate::support::parse_json(&listed.stdout);
    assert_eq!(waiting.len(), 1, "{}", listed.stdout);

    // The receiver is back; a fresh machine delivers it, once.
    let posts = receiver(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    let b = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["outbox", "flush"])
        .run();
    assert!(
        b.stdout.contains("delivered 1 notification(s)"),
        "{}",
        b.stdout
    );
    let again = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["outbox", "flush"])
        .run();
    assert!(
        again.stdout.contains("delivered 0 notification(s)"),
        "{}",
        again.stdout
    );
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_run_from_another_machine_is_resumed_only_from_its_commit() {
    let shared = tempfile::tempdir().unwrap();
    let store = format!("file://{}", shared.path().display());
    let origin = Test::new()
        .git_init()
        .pipeline(
            "
            version: 1
            stages:
              check: {run: test -f fixed}
            ",
        )
        .commit("first");
    let first = git(origin.path(), ["rev-parse", "HEAD"]);
    let a = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .code(1)
        .run();
    let status = a.murphy(["status", "--json"]).cwd("work").run();
    let run = crate::support::parse_json::<crate::support::RunView>(&status.stdout).run_id;
    std::fs::write(origin.path().join("fixed"), "").unwrap();
    crate::support::commit(origin.path(), "fix");
    // A machine at the new commit may not finish the old commit's run.
    let b = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["resume", &run])
        .code(2)
        .run();
    assert!(
        b.stderr
            .contains(&format!("run {run} was made from commit {}", &first[..12])),
        "{}",
        b.stderr
    );
    // At that commit it may; the run keeps its id and fails as the commit still does.
    let c = runner(origin.path());
    git(&c.path().join("work"), ["checkout", "-q", &first]);
    let c = c
        .env("MURPHY_STORE", &store)
        .args(["resume", &run])
        .code(1)
        .run();
    let status = c.murphy(["status", "--json"]).cwd("work").run();
    let view: crate::support::RunView = crate::support::parse_json(&status.stdout);
    assert_eq!(
        (view.run_id.as_str(), view.status.as_str()),
        (run.as_str(), "failed")
    );
    assert_eq!(view.stage("check").attempts, 2, "{view:#?}");
}

#[test]
fn a_record_from_the_store_is_verified_before_any_object_it_names_is_fetched() {
    let shared = tempfile::tempdir().unwrap();
    let store = format!("file://{}", shared.path().display());
    let origin = origin();
    runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run();
    // Someone who can write the bucket rewrites `build`'s record: its checksum is recomputed
    // (it is no MAC), and one object's digest is a path that climbs out of the store.
    let records = walkdir(shared.path().join("checkpoints/records"));
    let mut forged = 0;
    for record in records {
        let text = std::fs::read_to_string(&record).unwrap();
        let (_, body) = text.split_once('\n').unwrap();
        let mut json: serde_json::Value = serde_json::from_str(body).unwrap();
        if json["stage"] != "build" {
            continue;
        }
        json["outputs"][1]["digest"] = "../../../../evil-dir/x".into();
        let body = serde_json::to_string_pretty(&json).unwrap();
        let sum = blake3::hash(body.as_bytes()).to_hex();
        std::fs::write(&record, format!("{sum}\n{body}")).unwrap();
        forged += 1;
    }
    assert_eq!(forged, 1);
    let b = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run();
    assert!(b.stderr.contains("which is not a digest"), "{}", b.stderr);
    assert!(
        !b.path().join("evil-dir").exists(),
        "a forged record made a folder outside"
    );
    assert!(b.path().join("work/ran.log").exists(), "{}", b.stderr);
}

#[test]
fn a_pull_request_job_cannot_write_as_trusted_by_naming_another_trigger() {
    let shared = tempfile::tempdir().unwrap();
    let store = format!("file://{}", shared.path().display());
    let origin = origin();
    // The CI says this job builds pull request 7; its script asks for `--trigger push`.
    runner(origin.path())
        .env("MURPHY_STORE", &store)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_REF", "refs/pull/7/merge")
        .args(["run", "--trigger", "push"])
        .run();
    assert!(shared.path().join("pr/7/checkpoints/records").is_dir());
    assert!(!shared.path().join("checkpoints/records").exists());
    let push = runner(origin.path())
        .env("MURPHY_STORE", &store)
        .args(["run"])
        .run();
    assert!(push.path().join("work/ran.log").exists(), "{}", push.stderr);
}

/// A proxy in front of moto that refuses (403 AccessDenied) every request for a checkpoint and
/// passes every other through: a store that answers the probe and the run's records, and
/// then will not take a checkpoint.
fn refusing_checkpoints(upstream: u16) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut client = client;
                if line.contains("/checkpoints/") {
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                                <Message>Access Denied</Message></Error>";
                    let _ = write!(
                        client,
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let _ = server.write_all(line.as_bytes());
                let _ = server.write_all(reader.buffer());
                let mut back = server.try_clone().unwrap();
                let mut out = client.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut back, &mut out);
                    let _ = out.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(reader.get_mut(), &mut server);
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn a_restored_stage_whose_checkpoint_the_store_refuses_fails_instead_of_running_again() {
    let moto = Moto::start();
    let store = moto.bucket("refusing");
    let origin = origin();
    // Built here with no store: the local checkpoints are this runner's own.
    let a = runner(origin.path()).args(["run"]).run();
    let port = refusing_checkpoints(moto.port);
    let out = moto
        .env(a.murphy(["run"]).cwd("work"))
        .env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}"))
        .env("MURPHY_STORE", &store)
        .env("MURPHY_STORE_RETRY_TIMEOUT", "1s")
        .code(1)
        .run();
    assert!(
        out.stderr
            .contains("cannot share the checkpoint with the shared store")
            && out.stderr.contains("403 Forbidden"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(a.path().join("work/ran.log")).unwrap(),
        "build\ntest\n",
        "a restored stage ran again:\n{}",
        out.stderr
    );
}

#[test]
fn a_pull_requests_runners_list_its_runs_and_trusted_runners_do_not() {
    let shared = tempfile::tempdir().unwrap();
    let store = format!("file://{}", shared.path().display());
    let origin = origin();
    let pr = |test: Test| {
        test.env("MURPHY_STORE", &store)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_EVENT_NAME", "pull_request")
            .env("GITHUB_REF", "refs/pull/7/merge")
    };
    pr(runner(origin.path())).args(["run"]).run();
    let listed = |test: Test| -> usize {
        let out = test.args(["runs", "--json"]).run();
        crate::support::parse_json::<Vec<serde_json::Value>>(&out.stdout).len()
    };
    assert_eq!(listed(pr(runner(origin.path()))), 1);
    assert_eq!(listed(runner(origin.path()).env("MURPHY_STORE", &store)), 0);
}
