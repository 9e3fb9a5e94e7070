//! `shell:`: which program runs a stage's scripts, and how a script is handed to it.
//!
//! As in GitHub Actions, a script fails at its first failing command: `sh` is `sh -e`, `bash`
//! is `bash --noprofile --norc -eo pipefail` (a failing pipe stage fails too). Any other
//! interpreter is a template, `python3 {0}`, whose `{0}` is the path of a file holding the
//! script: a file, not an argument, so multi-line scripts and their quoting reach the
//! interpreter as written.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::diagnostic::did_you_mean;

/// The shell every stage gets unless its file or the stage names another.
pub const DEFAULT: &str = "sh";

/// A checked `shell:` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Bash,
    /// The template as written (for the fingerprint and messages) and its words.
    Template {
        text: String,
        words: Vec<String>,
    },
}

impl Shell {
    /// Reads a `shell:` value; the error says what was expected.
    pub fn parse(text: &str) -> Result<Shell, String> {
        match text {
            "sh" => return Ok(Shell::Sh),
            "bash" => return Ok(Shell::Bash),
            _ => {}
        }
        let words = split_words(text)?;
        let Some(program) = words.first() else {
            return Err("`shell` is empty: use `sh`, `bash`, or a command with `{0}`".into());
        };
        if !text.contains("{0}") {
            if words.len() == 1 {
                let hint = did_you_mean(text, ["sh", "bash"])
                    .map(|near| format!(" (did you mean `{near}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "`{text}` is not a shell murphy knows{hint}: use `sh`, `bash`, or a command with `{{0}}` for the script file, like `{text} {{0}}`"
                ));
            }
            return Err(format!(
                "the shell command `{text}` has no `{{0}}`: write `{{0}}` where the script file's path goes, like `{text} {{0}}`"
            ));
        }
        if program.contains("{0}") {
            return Err(format!(
                "in the shell command `{text}`, `{{0}}` is the script file and cannot be the program: name the interpreter first"
            ));
        }
        Ok(Shell::Template {
            text: text.to_owned(),
            words,
        })
    }

    /// The value as the pipeline writes it: what the fingerprint records.
    pub fn text(&self) -> &str {
        match self {
            Shell::Sh => "sh",
            Shell::Bash => "bash",
            Shell::Template { text, .. } => text,
        }
    }

    /// The program and arguments that run `script`. A template needs the script in a file
    /// first: [`ScriptFile::write`] in `scratch`, kept until the command ended.
    pub fn command(
        &self,
        script: &str,
        scratch: &Path,
    ) -> io::Result<(Vec<OsString>, Option<ScriptFile>)> {
        let inline = |words: &[&str]| {
            let mut argv: Vec<OsString> = words.iter().map(OsString::from).collect();
            argv.push(script.into());
            argv
        };
        Ok(match self {
            Shell::Sh => (inline(&["sh", "-e", "-c"]), None),
            Shell::Bash => (
                inline(&["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]),
                None,
            ),
            Shell::Template { words, .. } => {
                let file = ScriptFile::write(scratch, self.extension(), script)?;
                let path = file.path.to_string_lossy();
                let argv = words
                    .iter()
                    .map(|w| w.replace("{0}", &path).into())
                    .collect();
                (argv, Some(file))
            }
        })
    }

    /// Some interpreters insist on their extension (pwsh runs only `.ps1` files).
    fn extension(&self) -> &'static str {
        let Shell::Template { words, .. } = self else {
            return "sh";
        };
        let program = words
            .first()
            .map_or("", |p| p.rsplit('/').next().unwrap_or(p));
        if program.starts_with("python") {
            "py"
        } else if program.starts_with("pwsh") || program.starts_with("powershell") {
            "ps1"
        } else {
            "sh"
        }
    }
}

/// Words separated by blanks; `'...'` and `"..."` keep blanks inside one word.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_default().push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_default().push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("the shell command `{text}` has an unclosed `{q}`"));
    }
    words.extend(word);
    Ok(words)
}

/// A script written to a file for a template shell; removed when dropped.
#[derive(Debug)]
pub struct ScriptFile {
    path: PathBuf,
}

impl ScriptFile {
    /// A new file in `dir`, named so that no two commands of any murphy share one.
    fn write(dir: &Path, extension: &str, script: &str) -> io::Result<ScriptFile> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Absolute: the command runs in the stage's workdir, wherever `dir` was named from.
        // Marked as a temp file: one that a kill -9 leaves is swept at the next run.
        let name = format!(
            "script{}{}-{n}.{extension}",
            crate::atomic_file::TEMP_MARKER,
            std::process::id()
        );
        let path = std::path::absolute(dir)?.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        // From here on, the file is removed whatever happens.
        let written = ScriptFile { path };
        file.write_all(script.as_bytes())?;
        if !script.ends_with('\n') {
            file.write_all(b"\n")?;
        }
        Ok(written)
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_templates() {
        assert_eq!(Shell::parse("sh"), Ok(Shell::Sh));
        assert_eq!(Shell::parse("bash"), Ok(Shell::Bash));
        assert_eq!(
            Shell::parse("pwsh -command \". '{0}'\""),
            Ok(Shell::Template {
                text: "pwsh -command \". '{0}'\"".into(),
                words: vec!["pwsh".into(), "-command".into(), ". '{0}'".into()],
            })
        );
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        assert_eq!(
            Shell::parse("bahs").unwrap_err(),
            "`bahs` is not a shell murphy knows (did you mean `bash`?): use `sh`, `bash`, or a command with `{0}` for the script file, like `bahs {0}`"
        );
        assert!(
            Shell::parse("zsh")
                .unwrap_err()
                .ends_with("a command with `{0}` for the script file, like `zsh {0}`"),
        );
        assert!(
            Shell::parse("bash -x")
                .unwrap_err()
                .contains("has no `{0}`")
        );
        assert!(
            Shell::parse("{0} x")
                .unwrap_err()
                .contains("cannot be the program")
        );
        assert!(
            Shell::parse("python3 '{0}")
                .unwrap_err()
                .contains("unclosed `'`")
        );
        assert!(Shell::parse("  ").unwrap_err().contains("is empty"));
    }

    #[test]
    fn a_template_gets_a_file_that_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let shell = Shell::parse("python3 -u {0}").unwrap();
        let (argv, file) = shell.command("print('a b')", dir.path()).unwrap();
        let path = PathBuf::from(&argv[2]);
        assert_eq!(argv[..2], [OsString::from("python3"), "-u".into()]);
        assert_eq!(path.extension().unwrap(), "py");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "print('a b')\n");
        drop(file);
        assert!(!path.exists());
    }
}
