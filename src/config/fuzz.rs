//! Mutated pipelines, a few thousand of them from a fixed seed: reading and planning one
//! never panics, every error it gives points into the file (`pipeline.yml:LINE:COL`), and the
//! plain reader reads each as serde-saphyr does.

use std::path::Path;

use super::{ConfigError, Source};
use crate::include::Pipeline;
use crate::plan::{Plan, PlanError};

/// What a read gives, places and unknown keys included, or its error: two reads of a file
/// agree when these do.
pub(super) fn shown(read: Result<Source, ConfigError>) -> String {
    match read {
        Ok(source) => {
            let keys: Vec<String> = (source.unknown_keys.iter())
                .map(|d| format!("{}: {}", d.location(), d.message))
                .collect();
            format!("{keys:?}\n{:?}", source.pipeline)
        }
        Err(err) => err.to_string(),
    }
}

/// A pipeline that uses most of the format: each mutation of it lands somewhere meaningful.
const SEED: &str = r#"version: 1
name: demo
shell: bash
env: {RUST_LOG: info}
pass_env: [HOME]
secrets: [TOKEN]
templates:
  check: {run: cargo test, timeout: 10m, retry: {attempts: 2, delay: 1s}}
stages:
  lint: {run: "cargo fmt --check", inputs: ["src/**/*.rs"]}
  build:
    needs: [lint]
    run: ["cargo build", "cargo doc"]
    outputs: [target/release/demo]
    workdir: .
  unit: {extends: check, needs: [build], matrix: {v: ["1", "2"]}}
  pack:
    needs: [unit]
    archive: {files: ["dist/*"], retention: {keep_last: 3}}
  release:
    needs: [pack]
    requires: [unit]
    when: {trigger: tag}
    publish:
      - http: {files: ["dist/*"], url: "https://example.org/{file}", token: TOKEN}
"#;

/// Bytes a mutation writes: YAML's syntax, and what makes values odd.
const ALPHABET: &[u8] = b" :-[]{}\"'#&*!|>%@`,\n\t.0123456789abcxyz/\\\xc3\xa9\xff";

/// xorshift64*: a fixed sequence, so a failure names the mutation that made it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, text: &[u8]) -> Vec<u8> {
    let mut bytes = text.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if at < bytes.len() => {
                bytes.remove(at);
            }
            1 if at < bytes.len() => bytes[at] = ALPHABET[rng.below(ALPHABET.len())],
            2 => {
                // A slice of the file again, elsewhere: duplicated keys and stages.
                let start = rng.below(bytes.len());
                let end = (start + rng.below(40)).min(bytes.len());
                let piece = bytes[start..end].to_vec();
                bytes.splice(at..at, piece);
            }
            _ => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
        }
    }
    bytes
}

#[test]
fn mutated_pipelines_never_panic_and_every_error_has_a_place() {
    let path = Path::new("pipeline.yml");
    let mut rng = Rng(0x6d75_7270_6879);
    for round in 0..3_000 {
        let bytes = mutate(&mut rng, SEED.as_bytes());
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        let outcome = std::panic::catch_unwind(|| -> Result<(), String> {
            let text = crate::config::decode(path, bytes.clone()).map_err(|e| e.to_string())?;
            let source = crate::config::parse(path, text).map_err(|e| e.to_string())?;
            match Plan::new(Pipeline::single(source)) {
                Ok(_) => Ok(()),
                Err(err @ PlanError::Invalid(_)) => Err(err.to_string()),
                Err(err) => panic!("a plan error with no place: {err}"),
            }
        });
        match outcome {
            Err(_) => panic!("round {round} panicked on:\n{shown}"),
            Ok(Err(message)) => assert!(
                message.contains("pipeline.yml:"),
                "round {round}: an error without its place: {message}\nfor:\n{shown}"
            ),
            Ok(Ok(())) => {}
        }
    }
}

#[test]
fn one_pass_reads_mutated_pipelines_as_the_walk_does() {
    let path = Path::new("pipeline.yml");
    let mut rng = Rng(0x7761_6c6b);
    let mut with_unknown_keys = 0;
    let mut plainly = 0;
    // This file's seed, and murphy's own pipeline: block style, comments, longer values.
    let seeds = [SEED, include_str!("../../pipeline.yml")];
    for round in 0..3_000 {
        let bytes = mutate(&mut rng, seeds[round % seeds.len()].as_bytes());
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let once = crate::config::parse(path, text.clone());
        with_unknown_keys += usize::from(once.as_ref().is_ok_and(|s| !s.unknown_keys.is_empty()));
        plainly += usize::from(crate::config::plain::reads(&text));
        let walked = crate::config::parse_with_walk(path, text.clone());
        assert_eq!(shown(once), shown(walked), "round {round}, for:\n{text}");
    }
    // The mutations must reach the cases in question, or this test shows nothing: unknown
    // keys, and files the plain reader reads (the others are read by serde-saphyr alone).
    assert!(with_unknown_keys > 50, "{with_unknown_keys}");
    assert!(plainly > 300, "{plainly}");
}
