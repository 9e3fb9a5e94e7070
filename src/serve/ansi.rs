//! A stage log's ANSI colours as HTML: SGR sequences become `<span>`s, every other escape is
//! dropped, and all text is HTML-escaped.

pub use crate::markup::escape;

/// The 16 basic colours (xterm's defaults).
const BASIC: [&str; 16] = [
    "#000000", "#cd0000", "#00cd00", "#cdcd00", "#0000ee", "#cd00cd", "#00cdcd", "#e5e5e5",
    "#7f7f7f", "#ff0000", "#00ff00", "#ffff00", "#5c5cff", "#ff00ff", "#00ffff", "#ffffff",
];

fn colour_256(n: u16) -> String {
    match n {
        0..=15 => BASIC[n as usize].to_owned(),
        16..=231 => {
            let n = n - 16;
            let level = |v: u16| if v == 0 { 0 } else { 55 + v * 40 };
            format!(
                "#{:02x}{:02x}{:02x}",
                level(n / 36),
                level((n / 6) % 6),
                level(n % 6)
            )
        }
        _ => {
            let v = 8 + (n.min(255) - 232) * 10;
            format!("#{v:02x}{v:02x}{v:02x}")
        }
    }
}

#[derive(Default, Clone, PartialEq)]
struct Style {
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
    fg: Option<String>,
    bg: Option<String>,
}

impl Style {
    fn css(&self) -> String {
        let mut css = Vec::new();
        if self.bold {
            css.push("font-weight:bold".to_owned());
        }
        if self.dim {
            css.push("opacity:.7".to_owned());
        }
        if self.italic {
            css.push("font-style:italic".to_owned());
        }
        if self.underline {
            css.push("text-decoration:underline".to_owned());
        }
        if let Some(fg) = &self.fg {
            css.push(format!("color:{fg}"));
        }
        if let Some(bg) = &self.bg {
            css.push(format!("background:{bg}"));
        }
        css.join(";")
    }

    /// Applies one SGR sequence's parameters.
    fn apply(&mut self, params: &[u16]) {
        let mut i = 0;
        let params: &[u16] = if params.is_empty() { &[0] } else { params };
        while i < params.len() {
            let p = params[i];
            match p {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some(BASIC[(p - 30) as usize].to_owned()),
                90..=97 => self.fg = Some(BASIC[(p - 90 + 8) as usize].to_owned()),
                40..=47 => self.bg = Some(BASIC[(p - 40) as usize].to_owned()),
                100..=107 => self.bg = Some(BASIC[(p - 100 + 8) as usize].to_owned()),
                39 => self.fg = None,
                49 => self.bg = None,
                38 | 48 => {
                    let colour = match params.get(i + 1) {
                        Some(5) => {
                            let c = params.get(i + 2).map(|n| colour_256(*n));
                            i += 2;
                            c
                        }
                        Some(2) => {
                            let rgb = params.get(i + 2..i + 5).map(|c| {
                                format!(
                                    "#{:02x}{:02x}{:02x}",
                                    c[0].min(255),
                                    c[1].min(255),
                                    c[2].min(255)
                                )
                            });
                            i += 4;
                            rgb
                        }
                        _ => None,
                    };
                    if p == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// The log as HTML for a `<pre>`.
pub fn to_html(log: &str) -> String {
    let mut out = String::with_capacity(log.len() + log.len() / 8);
    let mut style = Style::default();
    let mut open = false;
    let mut text = String::new();
    let mut chars = log.chars().peekable();
    let flush = |text: &mut String, out: &mut String| {
        out.push_str(&escape(text));
        text.clear();
    };
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            text.push(c);
            continue;
        }
        flush(&mut text, &mut out);
        if chars.peek() != Some(&'[') {
            // Not a CSI sequence: drop the escape and the character after it.
            chars.next();
            continue;
        }
        chars.next();
        let mut body = String::new();
        let mut last = None;
        for c in chars.by_ref() {
            if ('\u{40}'..='\u{7e}').contains(&c) {
                last = Some(c);
                break;
            }
            body.push(c);
        }
        if last != Some('m') {
            continue;
        }
        let params: Vec<u16> = body
            .split([';', ':'])
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        let mut next = style.clone();
        next.apply(&params);
        if next != style {
            if open {
                out.push_str("</span>");
                open = false;
            }
            let css = next.css();
            if !css.is_empty() {
                out.push_str(&format!("<span style=\"{css}\">"));
                open = true;
            }
            style = next;
        }
    }
    flush(&mut text, &mut out);
    if open {
        out.push_str("</span>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_spans_and_text_is_escaped() {
        let html = to_html("\u{1b}[1;31m<b>error</b>\u{1b}[0m & done\u{1b}[2K\n");
        assert_eq!(
            html,
            "<span style=\"font-weight:bold;color:#cd0000\">&lt;b&gt;error&lt;/b&gt;</span> &amp; done\n"
        );
        assert_eq!(
            to_html("\u{1b}[38;5;196mx\u{1b}[38;2;1;2;3my"),
            "<span style=\"color:#ff0000\">x</span><span style=\"color:#010203\">y</span>"
        );
    }
}
