//! Errors that point into a user's file: `pipeline.yml:6:20`, the line, and a caret under it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a source file, 1-based, counted in characters as editors do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    /// Characters to underline; at least one caret is always drawn.
    pub len: usize,
}

impl Span {
    pub fn new(line: usize, column: usize, len: usize) -> Self {
        Span { line, column, len }
    }

    /// The start of the file, for errors about the document as a whole.
    pub fn start() -> Self {
        Span::new(1, 1, 0)
    }
}

/// Several diagnostics, a blank line apart.
pub struct List<'a>(pub &'a [Diagnostic]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// One message about one place in one file, with optional notes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub path: PathBuf,
    pub span: Span,
    /// The line of source text the span points into, kept so the diagnostic renders alone.
    pub source_line: Option<String>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// The `--json` shape of a diagnostic: `{file, line, column, message, notes}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.path,
            "line": self.span.line,
            "column": self.span.column,
            "message": self.message,
            "notes": self.notes,
        })
    }

    pub fn new(message: impl Into<String>, path: &Path, text: &str, span: Span) -> Self {
        let source_line = text
            .lines()
            .nth(span.line.saturating_sub(1))
            .map(str::to_owned);
        Diagnostic {
            message: message.into(),
            path: path.to_owned(),
            span,
            source_line,
            notes: Vec::new(),
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// `pipeline.yml:6:20`, the form editors and terminals turn into links.
    pub fn location(&self) -> String {
        format!(
            "{}:{}:{}",
            self.path.display(),
            self.span.line,
            self.span.column
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.location(), self.message)?;
        if let Some(line) = &self.source_line {
            let gutter = self.span.line.to_string().len();
            let pad = " ".repeat(gutter);
            // Tabs keep their width in the caret line so the caret stays under its column.
            let lead: String = line
                .chars()
                .take(self.span.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let carets = "^".repeat(self.span.len.max(1));
            writeln!(f, "{pad} |")?;
            writeln!(f, "{} | {}", self.span.line, line)?;
            write!(f, "{pad} | {lead}{carets}")?;
        }
        for note in &self.notes {
            write!(f, "\n  = note: {note}")?;
        }
        Ok(())
    }
}

/// The closest candidate to `name`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(distance, c)| *distance <= (c.len().max(name.len()) / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_and_caret() {
        let text = "version: 1\nstages:\n  b: {needs: [lnit]}\n";
        let d = Diagnostic::new(
            "stage `b` needs `lnit`",
            Path::new("pipeline.yml"),
            text,
            Span::new(3, 16, 4),
        );
        assert_eq!(
            d.to_string(),
            "pipeline.yml:3:16: stage `b` needs `lnit`\n  |\n3 |   b: {needs: [lnit]}\n  |                ^^^^"
        );
    }

    #[test]
    fn suggests_only_near_names() {
        assert_eq!(did_you_mean("lnit", ["lint", "build"]), Some("lint"));
        assert_eq!(did_you_mean("neds", ["needs", "run"]), Some("needs"));
        assert_eq!(did_you_mean("deploy", ["lint", "build"]), None);
    }
}
