//! Masking that cannot be sidestepped: a secret across the 64 KiB cut of a long line, on a
//! long line without a newline, and the `Authorization` value murphy builds, echoed back by
//! a server.

use crate::support::{Output, Test, unindent};

const SECRET: &str = "s3cret-0f-23-bytes-long";

/// Where murphy cuts a line that has no newline yet.
const CUT: usize = 64 * 1024;

/// A pipeline whose `build` stage prints the bytes of `line.txt` with `secret` set.
fn printing(line: &[u8]) -> Test {
    let test = Test::new()
        .pipeline(&unindent(
            "
            version: 1
            name: demo
            secrets: [MY_SECRET]
            stages:
              build:
                run:
                  - test \"$MY_SECRET\" = s3cret-0f-23-bytes-long && echo the secret reached the stage
                  - cat line.txt
            ",
        ))
        .env("MY_SECRET", SECRET);
    std::fs::write(test.path().join("line.txt"), line).unwrap();
    test
}

/// The output of `build` as the terminal showed it (`-v`), each piece on a line of its own
/// there, joined back into the stream it was.
fn echoed(out: &Output) -> String {
    out.stderr
        .lines()
        .filter_map(|line| line.strip_prefix("build | "))
        .collect()
}

/// Checks the stage log, the journal and the terminal: no secret anywhere, `masked` (the
/// line as it must be shown) in the log and on the terminal.
fn assert_masked(out: &Output, masked: &str) {
    let run = out.status().run_id;
    let log = out.read(&format!(".murphy/runs/{run}/logs/build.log"));
    let journal = out.read(&format!(".murphy/runs/{run}/journal.jsonl"));
    let terminal = echoed(out);
    assert!(
        log.contains("the secret reached the stage\n"),
        "the stage got the real value"
    );
    for (sink, text) in [
        ("log", &log),
        ("journal", &journal),
        ("terminal", &terminal),
    ] {
        assert!(!text.contains(SECRET), "the {sink} holds the secret");
    }
    assert!(
        log.contains(&format!("{masked}\n")),
        "the log lost the line"
    );
    assert!(terminal.contains(masked), "the terminal lost the line");
}

#[test]
fn a_secret_across_the_64_kib_cut_of_a_line_is_masked() {
    // The cut falls 10 bytes into the secret.
    let head = "a".repeat(CUT - 10);
    let line = format!("{head}{SECRET} and the rest of the line\n");
    let out = printing(line.as_bytes()).args(["-v", "run"]).run();
    assert_masked(&out, &format!("{head}*** and the rest of the line"));
}

#[test]
fn a_secret_on_a_200_kib_line_without_a_newline_is_masked() {
    // Nothing but the secret, over and over: whichever byte a piece is cut at, it cuts a
    // secret (23 bytes divide no power of two), the last one at the very end of the output.
    let copies = 200 * 1024 / SECRET.len();
    let out = printing(SECRET.repeat(copies).as_bytes())
        .args(["-v", "run"])
        .run();
    assert_masked(&out, &"***".repeat(copies));
}
