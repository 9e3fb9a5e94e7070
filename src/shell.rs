//! `shell:`: which program runs a stage's scripts, and how a script is handed to it.
//!
//! As in GitHub Actions, a script fails at its first failing command: `sh` is `sh -e`, `bash`
//! is `bash --noprofile --norc -eo pipefail` (a failing pipe stage fails too). Any other
//! interpreter is a template, `python3 {0}`, whose `{0}` is the path of a file holding the
//! script: a file, not an argument, so multi-line scripts and their quoting reach the
//! interpreter as written.
//!
//! Like make, `sh` is skipped for a script that is one plain command (`cargo test --locked`):
//! no quote, variable, glob, redirection or builtin, nothing the shell would change. Its words
//! are the program and its arguments, which is what `sh -c` would have run, minus the 0.3 ms
//! a shell costs to start. If that program cannot be started, the shell runs the script
//! after all and says why, with exit code 127, as it always did.

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

    /// What runs `script`. A template needs the script in a file first:
    /// [`ScriptFile::write`] in `scratch`, kept as long as the [`Invocation`].
    pub fn command(&self, script: &str, scratch: &Path) -> io::Result<Invocation> {
        let inline = |words: &[&str]| {
            let mut argv: Vec<OsString> = words.iter().map(OsString::from).collect();
            argv.push(script.into());
            argv
        };
        Ok(match self {
            Shell::Sh => {
                let shell = inline(&["sh", "-e", "-c"]);
                match plain_command(script) {
                    Some(words) => Invocation {
                        argv: words.map(OsString::from).collect(),
                        shell: Some(shell),
                        _script: None,
                    },
                    None => Invocation::of(shell),
                }
            }
            // bash reads `BASH_ENV` before any script, so a bash stage always starts bash.
            Shell::Bash => Invocation::of(inline(&[
                "bash",
                "--noprofile",
                "--norc",
                "-eo",
                "pipefail",
                "-c",
            ])),
            Shell::Template { words, .. } => {
                let file = ScriptFile::write(scratch, self.extension(), script)?;
                let path = file.path.to_string_lossy();
                let argv = words
                    .iter()
                    .map(|w| w.replace("{0}", &path).into())
                    .collect();
                Invocation {
                    argv,
                    shell: None,
                    _script: Some(file),
                }
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

/// A program and its arguments, ready to start.
#[derive(Debug)]
pub struct Invocation {
    pub argv: Vec<OsString>,
    /// The shell's own command for the same script, when `argv` skips the shell: run when
    /// `argv` cannot be started, so that a missing program gets the shell's message.
    pub shell: Option<Vec<OsString>>,
    /// A template's script file, removed when this is dropped.
    _script: Option<ScriptFile>,
}

impl Invocation {
    fn of(argv: Vec<OsString>) -> Invocation {
        Invocation {
            argv,
            shell: None,
            _script: None,
        }
    }
}

/// The words of a script that `sh -c` would run as one program with these very arguments,
/// or `None`. Deliberately narrow: letters, digits, blanks and `-_./,:+=@%` only, so nothing
/// is quoted, expanded, redirected or split other than at blanks; one line; and a first word
/// that is neither an assignment, a path (relative to which directory?), nor a word the shell
/// gives its own meaning (a keyword or builtin: `cd`, `exit`, `echo`, whose options differ
/// from `/bin/echo`'s). `true` and `false` are builtins that behave as their programs do.
fn plain_command(script: &str) -> Option<impl Iterator<Item = &str>> {
    /// POSIX sh's, dash's and bash's reserved words and builtins made of plain characters.
    const SHELL_WORDS: &str = "\
        . : alias bg bind break builtin caller case cd command compgen complete compopt continue \
        coproc declare dirs disown do done echo elif else enable esac eval exec exit export fc \
        fg fi for function getopts hash help history if in jobs kill let local login logout \
        mapfile newgrp popd printf pushd pwd read readarray readonly return select set shift \
        shopt source suspend test then time times trap type typeset ulimit umask unalias unset \
        until wait while";
    let line = script.strip_suffix('\n').unwrap_or(script);
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./,:+=@% \t".contains(&b);
    if !line.bytes().all(plain) {
        return None;
    }
    let words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let program = words.clone().next()?;
    let ours = program.contains(['=', '/']) || SHELL_WORDS.split(' ').any(|word| word == program);
    (!ours).then_some(words)
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
        let invocation = shell.command("print('a b')", dir.path()).unwrap();
        let argv = &invocation.argv;
        let path = PathBuf::from(&argv[2]);
        assert_eq!(argv[..2], [OsString::from("python3"), "-u".into()]);
        assert_eq!(path.extension().unwrap(), "py");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "print('a b')\n");
        drop(invocation);
        assert!(!path.exists());
    }

    #[test]
    fn only_a_plain_command_skips_the_shell() {
        fn words(script: &str) -> Option<Vec<&str>> {
            plain_command(script).map(|w| w.collect())
        }
        assert_eq!(words("true"), Some(vec!["true"]));
        assert_eq!(
            words("cargo  test\t--locked -p x:y,z@1.0+a=b %d\n"),
            Some(vec![
                "cargo",
                "test",
                "--locked",
                "-p",
                "x:y,z@1.0+a=b",
                "%d"
            ])
        );
        for script in [
            "",
            " \n",
            "cd src",
            "echo -e x",
            "exit 1",
            "FOO=1 make",
            "./build",
            "bin/build",
            "make; make install",
            "make && make install",
            "ls *.txt",
            "ls ~",
            "cat $HOME",
            "echo 'a b'",
            "make \"a b\"",
            "make a\\ b",
            "make # comment",
            "make > log",
            "make\nmake install",
            "make 2>&1",
            "ls {a,b}",
            "make `x`",
            "test -f x",
            ". env.sh",
            ": ignored",
            "alias x",
            "until false",
            "while true",
            "müll",
        ] {
            assert_eq!(words(script), None, "{script:?}");
        }
        let (dir, sh) = (tempfile::tempdir().unwrap(), Shell::Sh);
        let plain = sh.command("make -j2", dir.path()).unwrap();
        assert_eq!(plain.argv, ["make", "-j2"]);
        assert_eq!(plain.shell.unwrap(), ["sh", "-e", "-c", "make -j2"]);
        let shell = sh.command("make -j2 > log", dir.path()).unwrap();
        assert_eq!(shell.argv, ["sh", "-e", "-c", "make -j2 > log"]);
        assert!(shell.shell.is_none());
        let bash = Shell::Bash.command("make", dir.path()).unwrap();
        assert_eq!(bash.argv[0], "bash");
    }
}
