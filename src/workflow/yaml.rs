//! The little YAML the generated files need, written by hand so its order never moves:
//! every value murphy did not choose itself goes out double-quoted and escaped.

use std::fmt::Write;

/// `value` as a YAML double-quoted scalar: nothing in it can end the string or start a
/// mapping, a comment or an anchor.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A flow list of quoted values: `["a", "b"]`.
pub fn list<S: AsRef<str>>(values: &[S]) -> String {
    let items: Vec<String> = values.iter().map(|v| quote(v.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// `word` as one shell word: as is when it holds nothing the shell reads, else single-quoted.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '=' | ','));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Lines of YAML, each at an indent of two spaces per level.
#[derive(Default)]
pub struct Lines(String);

impl Lines {
    pub fn line(&mut self, level: usize, text: &str) {
        for _ in 0..level {
            self.0.push_str("  ");
        }
        self.0.push_str(text);
        self.0.push('\n');
    }

    pub fn blank(&mut self) {
        self.0.push('\n');
    }

    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_cannot_break_out() {
        assert_eq!(quote("a: b"), r#""a: b""#);
        assert_eq!(quote("x\" # y\nz"), r#""x\" # y\nz""#);
        assert_eq!(quote("back\\slash"), r#""back\\slash""#);
        assert_eq!(quote("\u{7}"), r#""\u0007""#);
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("build"), "build");
        assert_eq!(shell_word("test[py=3.12]"), "'test[py=3.12]'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
