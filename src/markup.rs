//! Text made safe inside HTML, SVG and XML, as content or a quoted attribute value: a leaf
//! every module that writes markup uses.

/// Escapes the five characters markup gives a meaning to (`&apos;` for `'`, which HTML5,
/// SVG and XML all read).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_five_are_escaped_and_the_rest_kept() {
        assert_eq!(
            super::escape(r#"<a href="x">Tom & Jerry's</a> é"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&apos;s&lt;/a&gt; é"
        );
    }
}
