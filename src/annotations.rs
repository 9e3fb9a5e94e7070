//! Compiler-style error lines found in a failed stage's output, turned into GitHub Actions
//! `::error` annotations so the reason shows on the pull request's diff.
//!
//! Three shapes are read: `path:line:col: message` (gcc, clang, go, eslint's unix format),
//! rustc's `error[E0308]: message` followed by ` --> path:line:col`, and pytest's
//! `path:line: SomeError...`. Warnings and notes are left out: the stage failed on its errors.

use std::path::{Component, Path, PathBuf};

/// An error the output pointed at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// As the tool wrote it: relative to the stage's working directory, or absolute.
    pub file: String,
    pub line: u32,
    pub col: Option<u32>,
    pub message: String,
}

/// Every error annotation in `text`, in order, at most `limit`.
pub fn parse(text: &str, limit: usize) -> Vec<Annotation> {
    let mut found = Vec::new();
    // rustc's header waits for its `-->` line.
    let mut pending: Option<String> = None;
    for raw in text.lines() {
        if found.len() >= limit {
            break;
        }
        let line = strip_ansi(raw);
        let line = line.trim_end();
        if let Some(header) = rustc_header(line) {
            pending = header;
            continue;
        }
        if let Some(location) = line.trim_start().strip_prefix("--> ") {
            if let Some(message) = pending.take()
                && let Some((file, line, col)) = location_of(location.trim())
            {
                found.push(Annotation {
                    file,
                    line,
                    col,
                    message,
                });
            }
            continue;
        }
        if let Some(annotation) = located(line) {
            found.push(annotation);
        }
    }
    found
}

/// `Some(Some(message))` for a rustc error header, `Some(None)` for a warning or note header
/// (which ends the error before it), `None` for anything else.
fn rustc_header(line: &str) -> Option<Option<String>> {
    let is_error =
        (line.starts_with("error[E") && line.contains("]: ")) || line.starts_with("error: ");
    if is_error {
        // `error: aborting due to ...` and `could not compile` sum up; they point nowhere.
        return Some(Some(line.to_owned()));
    }
    let other = ["warning", "note", "help"]
        .iter()
        .any(|w| line.starts_with(&format!("{w}: ")) || line.starts_with(&format!("{w}[")));
    other.then_some(None)
}

/// `path:line:col: message` or pytest's `path:line: XError...`.
fn located(line: &str) -> Option<Annotation> {
    let (path, rest) = line.split_once(':')?;
    if !looks_like_path(path) {
        return None;
    }
    let (line_no, rest) = rest.split_once(':')?;
    let line_no: u32 = line_no.parse().ok()?;
    // `path:line:col: message`
    if let Some((col, message)) = rest.split_once(':')
        && let Ok(col) = col.parse::<u32>()
    {
        let message = message.trim();
        let severity = message.split(':').next().unwrap_or_default().trim();
        if message.is_empty() || matches!(severity, "warning" | "note" | "remark" | "info") {
            return None;
        }
        return Some(Annotation {
            file: path.to_owned(),
            line: line_no,
            col: Some(col),
            message: message.to_owned(),
        });
    }
    // pytest: `tests/test_x.py:12: AssertionError` or `...: in test_x` (a frame, not the error).
    let message = rest.trim();
    let first = message.split([':', ' ', '(']).next().unwrap_or_default();
    let is_error = first.ends_with("Error") || first.ends_with("Exception") || first == "Failed";
    (is_error && rest.starts_with(' ')).then(|| Annotation {
        file: path.to_owned(),
        line: line_no,
        col: None,
        message: message.to_owned(),
    })
}

/// `src/a.rs:3:5` (rustc's `-->` target).
fn location_of(text: &str) -> Option<(String, u32, Option<u32>)> {
    let mut parts = text.rsplitn(3, ':');
    let col = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let path = parts.next()?;
    looks_like_path(path).then(|| (path.to_owned(), line, Some(col)))
}

/// A file name rather than a timestamp, a URL or prose: no spaces, no scheme, and a `.` or
/// `/` in it.
fn looks_like_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(char::is_whitespace)
        && !path.contains("://")
        && (path.contains('.') || path.contains('/'))
        && !path.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Removes colour escapes (`ESC [ ... m`): a tool may colour its output even into a pipe.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `file`, as the path from `repo_root` GitHub wants, if it lies inside: a relative `file` is
/// taken from `cwd` (the stage's working directory). Both `cwd` and `repo_root` are absolute.
pub fn repo_relative(file: &str, cwd: &Path, repo_root: &Path) -> Option<String> {
    let joined = cwd.join(file);
    let mut normal = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    let relative = normal.strip_prefix(repo_root).ok()?;
    let text = relative.to_str()?;
    (!text.is_empty()).then(|| text.to_owned())
}

/// A workflow command's message, escaped as GitHub's runner unescapes it.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value (`file=...`): also `:` and `,`, which end one.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// The `::error` line for `annotation`, its file already made repo-relative (or `None` when
/// it lies outside the repository: the annotation then has no place).
pub fn github_command(annotation: &Annotation, file: Option<&str>) -> String {
    let mut props = Vec::new();
    if let Some(file) = file {
        props.push(format!("file={}", escape_property(file)));
        props.push(format!("line={}", annotation.line));
        if let Some(col) = annotation.col {
            props.push(format!("col={col}"));
        }
    }
    let message = crate::secrets::redact(&annotation.message);
    let props = if props.is_empty() {
        String::new()
    } else {
        format!(" {}", props.join(","))
    };
    format!("::error{props}::{}", escape_data(&message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(file: &str, line: u32, col: Option<u32>, message: &str) -> Annotation {
        Annotation {
            file: file.into(),
            line,
            col,
            message: message.into(),
        }
    }

    #[test]
    fn rustc_errors_take_their_place_from_the_arrow_line() {
        let out = "\
error[E0308]: mismatched types
 --> src/broken.rs:2:18
  |
2 |     let x: u32 = \"text\";
  |            ---   ^^^^^^ expected `u32`, found `&str`
  |            |
  |            expected due to this

warning: unused variable: `y`
 --> src/broken.rs:3:9
  |
error: cannot find value `z` in this scope
   --> src/lib/deep.rs:14:5
error: aborting due to 2 previous errors

For more information about this error, try `rustc --explain E0308`.
";
        assert_eq!(
            parse(out, 10),
            vec![
                one(
                    "src/broken.rs",
                    2,
                    Some(18),
                    "error[E0308]: mismatched types"
                ),
                one(
                    "src/lib/deep.rs",
                    14,
                    Some(5),
                    "error: cannot find value `z` in this scope"
                ),
            ]
        );
    }

    #[test]
    fn gcc_clang_go_and_eslint_lines() {
        let out = "\
main.c: In function 'main':
main.c:4:5: error: 'y' undeclared (first use in this function)
main.c:6:1: warning: control reaches end of non-void function [-Wreturn-type]
main.c:4:5: note: each undeclared identifier is reported only once
\x1b[1m./cmd/tool/main.go:12:2:\x1b[0m undefined: fmt.Printn
/home/ci/proj/web/app.js:1:10: 'x' is defined but never used. [Error/no-unused-vars]
12:30:45: started at noon
see http://example.com:80:1: nothing
";
        assert_eq!(
            parse(out, 10),
            vec![
                one(
                    "main.c",
                    4,
                    Some(5),
                    "error: 'y' undeclared (first use in this function)"
                ),
                one("./cmd/tool/main.go", 12, Some(2), "undefined: fmt.Printn"),
                one(
                    "/home/ci/proj/web/app.js",
                    1,
                    Some(10),
                    "'x' is defined but never used. [Error/no-unused-vars]"
                ),
            ]
        );
    }

    #[test]
    fn pytest_errors_but_not_its_frames() {
        let out = "\
tests/test_calc.py:7: in test_add
    assert add(1, 2) == 4
tests/test_calc.py:7: AssertionError
tests/test_io.py:19: FileNotFoundError: [Errno 2] No such file or directory: 'x'
";
        assert_eq!(
            parse(out, 10),
            vec![
                one("tests/test_calc.py", 7, None, "AssertionError"),
                one(
                    "tests/test_io.py",
                    19,
                    None,
                    "FileNotFoundError: [Errno 2] No such file or directory: 'x'"
                ),
            ]
        );
    }

    #[test]
    fn the_limit_holds() {
        let out = "a.c:1:1: error: x\n".repeat(30);
        assert_eq!(parse(&out, 10).len(), 10);
    }

    #[test]
    fn paths_become_relative_to_the_repository() {
        let root = Path::new("/w/repo");
        let cwd = Path::new("/w/repo/sub");
        assert_eq!(
            repo_relative("./src/a.rs", cwd, root).as_deref(),
            Some("sub/src/a.rs")
        );
        assert_eq!(
            repo_relative("../top.c", cwd, root).as_deref(),
            Some("top.c")
        );
        assert_eq!(
            repo_relative("/w/repo/x/y.go", cwd, root).as_deref(),
            Some("x/y.go")
        );
        assert_eq!(repo_relative("/usr/include/stdio.h", cwd, root), None);
        assert_eq!(repo_relative("../../etc/passwd", cwd, root), None);
    }

    #[test]
    fn commands_are_escaped_by_github_rules() {
        let a = one("a,b:c.rs", 3, Some(4), "100% wrong\r\nsecond: line, here");
        assert_eq!(
            github_command(&a, Some("dir/a,b:c.rs")),
            "::error file=dir/a%2Cb%3Ac.rs,line=3,col=4::100%25 wrong%0D%0Asecond: line, here"
        );
        assert_eq!(github_command(&a, None).split("::").nth(1), Some("error"));
    }

    #[test]
    fn secrets_in_messages_are_masked() {
        crate::secrets::mask("annotation-s3cret-4711");
        let a = one("a.c", 1, Some(2), "error: bad token annotation-s3cret-4711");
        let line = github_command(&a, Some("a.c"));
        assert!(!line.contains("s3cret"), "{line}");
        assert!(
            line.starts_with("::error file=a.c,line=1,col=2::error: bad token "),
            "{line}"
        );
    }
}
