//! An error with its causes on one line: what journals, logs and one-line reports show.

/// `message: cause: cause`.
pub fn line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
