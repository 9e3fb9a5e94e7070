//! Private state and the archive's entries: the state directory's modes after a run, the
//! secrets file refused when it is not a private regular file, `audit` of a bundle with an
//! entry that climbs out, and `archive get` into a folder holding a symlink.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Output, Test, parse_json};

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Every regular file under `dir`, with its mode.
fn files(dir: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files(&entry.path()));
        } else if kind.is_file() {
            out.push((entry.path().display().to_string(), mode(&entry.path())));
        }
    }
    out
}

#[test]
fn the_state_directory_its_runs_logs_and_records_are_for_the_owner_only() {
    // The usual umask, under which murphy used to leave everything world-readable. Every
    // test in this binary runs under this one (the default here), so setting it races no one.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o022) };
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build:
                inputs: [src.txt]
                run: echo the log line; cp src.txt out.txt
                outputs: [out.txt]
            ",
        )
        .write("src.txt", "source\n")
        .args(["run"])
        .run();
    let state = out.file(".murphy");
    let run = out.status().run_id.clone();
    let run_dir = state.join("runs").join(&run);
    for dir in [&state, &state.join("runs"), &run_dir, &run_dir.join("logs")] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    let files = files(&state);
    for name in [
        "lock",
        "meta.json",
        "journal.jsonl",
        "build.log",
        "/store/records/",
        "/store/manifests/",
    ] {
        assert!(
            files.iter().any(|(path, _)| path.contains(name)),
            "no {name} in {files:?}"
        );
    }
    // Objects are read-only (0444) so that nothing edits a checkpoint in place; like every
    // other file, they are out of reach of others behind the 0700 folder.
    let readable: Vec<_> = files
        .iter()
        .filter(|(path, mode)| !path.contains("/store/objects/") && mode & 0o077 != 0)
        .collect();
    assert_eq!(readable, Vec::<&(String, u32)>::new());
    // A state directory left open by an older murphy is closed by the next run.
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    out.murphy(["run"]).run();
    assert_eq!(mode(&state), 0o700);
}

const WITH_SECRET: &str = "
    version: 1
    secrets: [DEPLOY_TOKEN]
    stages:
      build:
        run: echo built
";

/// `murphy run --secrets FILE` with DEPLOY_TOKEN unset, which must be refused (exit 2) naming
/// `FILE`; returns stderr.
fn refused(test: Test, file: &str) -> String {
    let out = test
        .pipeline(WITH_SECRET)
        .env("DEPLOY_TOKEN", "")
        .args(["run", "--secrets", file])
        .code(2)
        .run();
    assert!(
        out.stderr
            .contains(&format!("refusing the secrets file `{file}`")),
        "{}",
        out.stderr
    );
    assert!(!out.path().join(".murphy/runs").exists(), "nothing ran");
    out.stderr
}

#[test]
fn a_secrets_file_that_is_a_fifo_is_refused_without_opening_it() {
    let test = Test::new();
    let fifo = test.path().join("secrets.yml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Opened, the FIFO would block murphy for as long as no writer comes: forever.
    let err = refused(test, "secrets.yml");
    assert!(err.contains("it is a FIFO, not a regular file"), "{err}");
}

#[test]
fn a_secrets_file_that_is_a_symlink_is_refused() {
    let test = Test::new().write("elsewhere/real.yml", "DEPLOY_TOKEN: s3cret-value\n");
    let real = test.path().join("elsewhere/real.yml");
    fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&real, test.path().join("secrets.yml")).unwrap();
    let err = refused(test, "secrets.yml");
    assert!(err.contains("it is a symlink, not a regular file"), "{err}");
}

#[test]
fn a_secrets_file_in_a_folder_others_can_write_is_refused() {
    let test = Test::new().write("shared/secrets.yml", "DEPLOY_TOKEN: s3cret-value\n");
    let shared = test.path().join("shared");
    fs::set_permissions(
        shared.join("secrets.yml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused(test, "shared/secrets.yml");
    assert!(
        err.contains("its folder `shared` is writable by others (mode 777)"),
        "{err}"
    );
}

#[test]
fn a_secrets_file_owned_by_someone_else_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: giving a file to another user needs root");
        return;
    }
    let test = Test::new().write("secrets.yml", "DEPLOY_TOKEN: s3cret-value\n");
    let file = test.path().join("secrets.yml");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
    let err = refused(test, "secrets.yml");
    assert!(err.contains("it belongs to uid 65534, not to you"), "{err}");
}

#[test]
fn a_private_secrets_file_is_still_read() {
    let test = Test::new().write("secrets.yml", "DEPLOY_TOKEN: s3cret-value\n");
    fs::set_permissions(
        test.path().join("secrets.yml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    test.pipeline(WITH_SECRET)
        .env("DEPLOY_TOKEN", "")
        .args(["run", "--secrets", "secrets.yml"])
        .run();
}

// ---------------------------------------------------------------------------------------
// The archive's entries

/// One build of `dist/app.txt`, archived into `artifacts/000001`.
fn archived() -> Output {
    Test::new()
        .pipeline(
            "
            version: 1
            name: demo
            stages:
              pack:
                archive:
                  files: [\"dist/**\"]
            ",
        )
        .write("dist/app.txt", "the app\n")
        .args(["run"])
        .run()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replaces build 1's bundle with a hand-made zip of `files`, and its manifest's records to
/// vouch for every one of them, so only the names can be wrong.
fn hand_made(out: &Output, files: &[(&str, &[u8])]) {
    let dir = out.file("artifacts/000001");
    let manifest_path = dir.join("manifest.json");
    let mut manifest: Value = parse_json(&fs::read_to_string(&manifest_path).unwrap());
    let bundle = dir.join(manifest["bundle"].as_str().unwrap());
    let mut zip = zip::ZipWriter::new(fs::File::create(&bundle).unwrap());
    for (name, bytes) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    let bytes = fs::read(&bundle).unwrap();
    manifest["bundle_sha256"] = json!(sha256(&bytes));
    manifest["bundle_size"] = json!(bytes.len());
    manifest["files"] = files
        .iter()
        .map(|(name, bytes)| json!({"path": name, "sha256": sha256(bytes), "size": bytes.len()}))
        .collect();
    fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn audit_finds_a_bundle_entry_that_climbs_out() {
    let out = archived();
    hand_made(
        &out,
        &[("dist/app.txt", b"the app\n"), ("../x", b"pwned\n")],
    );
    let report: Value = parse_json(&out.murphy(["audit", "--json"]).code(1).run().stdout);
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report:#}");
    assert_eq!(findings[0]["build"], 1, "{report:#}");
    assert_eq!(findings[0]["kind"], "unsafe-entry", "{report:#}");
    assert!(
        findings[0]["detail"]
            .as_str()
            .unwrap()
            .contains("entry `../x`"),
        "{report:#}"
    );
}

#[test]
fn archive_get_does_not_write_through_a_symlink_in_the_destination() {
    let out = archived();
    fs::create_dir_all(out.file("got")).unwrap();
    fs::create_dir_all(out.file("elsewhere")).unwrap();
    std::os::unix::fs::symlink("../elsewhere", out.file("got/dist")).unwrap();
    let err = out
        .murphy(["archive", "get", "1", "--to", "got"])
        .code(1)
        .run()
        .stderr;
    assert!(
        err.contains("`got/dist` is a symlink; refusing to extract through it"),
        "{err}"
    );
    assert_eq!(fs::read_dir(out.file("elsewhere")).unwrap().count(), 0);
    // Without the symlink, the same command extracts the build.
    fs::remove_file(out.file("got/dist")).unwrap();
    out.murphy(["archive", "get", "1", "--to", "got"]).run();
    assert_eq!(out.read("got/dist/app.txt"), "the app\n");
}

/// A state directory an older murphy left open (umask 002) is closed by the next run before
/// the secrets file in it is read, so that run is not refused for a folder it fixes itself.
#[test]
fn a_state_directory_left_open_is_closed_before_its_secrets_file_is_read() {
    let test = Test::new()
        .pipeline("version: 1\nstages:\n  a: {run: 'true'}\n")
        .write(".murphy/secrets.yml", "OTHER: some value\n");
    let state = test.path().join(".murphy");
    fs::set_permissions(state.join("secrets.yml"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o775)).unwrap();
    let out = test.args(["run"]).run();
    assert_eq!(mode(&out.file(".murphy")), 0o700);
}
