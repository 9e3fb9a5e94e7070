//! Masking that cannot be sidestepped: a secret across the 64 KiB cut of a long line, on a
//! long line without a newline, and the `Authorization` value murphy builds, echoed back by
//! a server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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

// ---------------------------------------------------------------------------------------
// A server that echoes the `Authorization` header it got in every answer

struct Echo {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Answers every request with `you sent Authorization: VALUE`: a GET with 404 (the index
    /// knows no such project), anything else with 400 (an upload refused).
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot listen");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => echo(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let (mut length, mut authorization) = (0, String::new());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return;
        };
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => authorization = value.trim().to_owned(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let status = if request.starts_with("GET ") {
        "404 Not Found"
    } else {
        "400 Bad Request"
    };
    let answer = format!("you sent Authorization: {authorization}");
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{answer}",
        answer.len()
    );
}

#[test]
fn an_echoed_basic_authorization_is_masked_in_the_journal_and_show_json() {
    let server = Echo::start();
    let pipeline = unindent(
        "
        version: 1
        name: demo
        secrets: [PYPI_TOKEN]
        stages:
          build:
            run: mkdir -p dist && echo 'sdist of demo 1.0.0' > dist/demo-1.0.0.tar.gz
            outputs: [dist]
          release:
            needs: [build]
            publish:
              - pypi:
                  files: ['dist/*.tar.gz']
                  repository_url: http://127.0.0.1:PORT/
                  username: alice
                  password: PYPI_TOKEN
        ",
    )
    .replace("PORT", &server.port.to_string());
    let out = Test::new()
        .git_init()
        .write("pipeline.yml", &pipeline)
        .write(".gitignore", "/.murphy/\n/dist/\n")
        .commit("demo 1.0.0")
        .git(["tag", "v1.0.0"])
        .args(["run", "--trigger", "tag"])
        .env("PYPI_TOKEN", SECRET)
        .code(1)
        .run();
    // base64 of `alice:s3cret-0f-23-bytes-long`, what the header carries.
    let basic = "YWxpY2U6czNjcmV0LTBmLTIzLWJ5dGVzLWxvbmc=";
    let run = out.status().run_id;
    let journal = out.read(&format!(".murphy/runs/{run}/journal.jsonl"));
    assert!(
        journal.contains("400 Bad Request: you sent Authorization: Basic ***"),
        "the refusal is recorded, masked:\n{journal}"
    );
    let show = out.murphy(["show", "--json"]).run().stdout;
    assert!(
        show.contains("you sent Authorization: Basic ***"),
        "show --json has the refusal, masked:\n{show}"
    );
    for (sink, text) in [
        ("journal", &journal),
        ("show --json", &show),
        ("terminal", &out.stderr),
    ] {
        assert!(!text.contains(basic), "{sink} holds the Basic value");
        assert!(!text.contains(SECRET), "{sink} holds the secret");
    }
}
