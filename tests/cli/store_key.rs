//! `MURPHY_STORE_KEY`: checkpoint records carry a keyed MAC, and a record someone without
//! the key edited (and re-checksummed) is never trusted.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{Output, Test};

const KEY: &str = "a store key of some length";

/// `make` copies `src.txt` to `made.txt`; every run of it appends to `ran.make`.
fn project() -> Test {
    Test::new()
        .pipeline(
            "
            version: 1
            stages:
              make: {inputs: [src.txt], run: echo x >> ran.make; cp src.txt made.txt, outputs: [made.txt]}
            ",
        )
        .write("src.txt", "made\n")
}

/// The one record in the store.
fn record(out: &Output) -> PathBuf {
    let records: Vec<PathBuf> = fs::read_dir(out.file(".murphy/store/records"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    records[0].clone()
}

/// Edits a record's body and seals it again as someone without the key can: a plain
/// checksum, or a MAC under another key.
fn forge(path: &Path, first_line: impl FnOnce(&str) -> String) {
    let text = fs::read_to_string(path).unwrap();
    let (_, body) = text.split_once('\n').unwrap();
    let body = body.replace("\"exit_code\": 0", "\"exit_code\": 0 ");
    fs::write(path, format!("{}\n{body}", first_line(&body))).unwrap();
}

#[test]
fn records_written_with_a_key_carry_a_mac_and_are_used_with_it() {
    let out = project().env("MURPHY_STORE_KEY", KEY).args(["run"]).run();
    let text = fs::read_to_string(record(&out)).unwrap();
    assert!(text.starts_with("mac:"), "{text}");
    out.murphy(["run"]).env("MURPHY_STORE_KEY", KEY).run();
    assert_eq!(out.status().stage("make").state, "cached");
    assert_eq!(out.count("ran.make"), 1);

    // Without the key, or with another, the record is not trusted: the stage runs.
    let without = out.murphy(["run"]).run();
    assert!(
        without
            .stderr
            .contains("was written with a store key: set MURPHY_STORE_KEY"),
        "{}",
        without.stderr
    );
    assert_eq!(out.count("ran.make"), 2);
}

#[test]
fn a_record_re_checksummed_without_the_key_is_ignored_with_a_warning() {
    let out = project().env("MURPHY_STORE_KEY", KEY).args(["run"]).run();
    let path = record(&out);
    forge(&path, |body| {
        blake3::hash(body.as_bytes()).to_hex().to_string()
    });
    fs::remove_file(out.file("made.txt")).unwrap();
    let again = out.murphy(["run"]).env("MURPHY_STORE_KEY", KEY).run();
    assert!(
        again
            .stderr
            .contains("has no MAC, and MURPHY_STORE_KEY is set: ignoring it"),
        "{}",
        again.stderr
    );
    assert_eq!(out.count("ran.make"), 2);
    assert_eq!(out.read("made.txt"), "made\n");
}

#[test]
fn a_record_sealed_with_another_key_is_ignored_with_a_warning() {
    let out = project().env("MURPHY_STORE_KEY", KEY).args(["run"]).run();
    let path = record(&out);
    forge(&path, |body| {
        let key = blake3::derive_key("murphy 2026-11 checkpoint record MAC", b"a guessed key");
        format!("mac:{}", blake3::keyed_hash(&key, body.as_bytes()).to_hex())
    });
    let again = out.murphy(["run"]).env("MURPHY_STORE_KEY", KEY).run();
    assert!(
        again
            .stderr
            .contains("is damaged or forged (its MAC does not match MURPHY_STORE_KEY)"),
        "{}",
        again.stderr
    );
    assert_eq!(out.count("ran.make"), 2);
}

#[test]
fn a_short_store_key_is_refused_before_anything_runs() {
    let out = project()
        .env("MURPHY_STORE_KEY", "too short")
        .args(["run"])
        .code(2)
        .run();
    assert_eq!(
        out.stderr,
        "error: MURPHY_STORE_KEY is shorter than 16 bytes: too weak to authenticate checkpoint records\n"
    );
    assert_eq!(out.count("ran.make"), 0);
}

/// `cache gc` run without the key keeps records sealed with one, and their objects.
#[test]
fn cache_gc_without_the_key_keeps_sealed_records() {
    let out = project().env("MURPHY_STORE_KEY", KEY).args(["run"]).run();
    let gc = out.murphy(["cache", "gc"]).run();
    assert_eq!(gc.stdout, "removed 0 records and 0 objects (0 bytes)\n");
    fs::remove_file(out.file("made.txt")).unwrap();
    out.murphy(["run"]).env("MURPHY_STORE_KEY", KEY).run();
    assert_eq!(out.status().stage("make").state, "cached");
    assert_eq!(out.read("made.txt"), "made\n");
    assert_eq!(out.count("ran.make"), 1);
}
