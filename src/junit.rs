//! A run as a JUnit XML report (`murphy run --junit FILE`): one testcase per stage, and the
//! testcases of the JUnit reports stages write themselves (`reports: {junit: PATH}`), so a CI
//! system's test view shows both.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use quick_xml::events::{BytesStart, Event};

use crate::records::{RunDir, RunView, StageState, StageView};

/// Lines of a failed stage's log the report carries.
const TAIL: usize = 50;

/// A stage's own report, to merge: the stage and the file.
pub struct StageReport {
    pub stage: String,
    pub path: PathBuf,
}

/// One testcase, murphy's or read from a stage's report.
#[derive(Debug, Default, PartialEq)]
struct Case {
    name: String,
    classname: String,
    time: Option<String>,
    verdict: Option<Verdict>,
    system_out: Option<String>,
}

#[derive(Debug, PartialEq)]
struct Verdict {
    /// `failure`, `error` or `skipped`.
    kind: &'static str,
    message: Option<String>,
    text: String,
}

/// The report of `view`, with the testcases of `reports` (files relative to `root`) each in a
/// testsuite of its own; a report that cannot be read gives a warning and is left out.
pub fn render(
    view: &RunView,
    run: &RunDir,
    root: &Path,
    reports: &[StageReport],
    warnings: &mut Vec<String>,
) -> String {
    let cases: Vec<Case> = view
        .stages
        .iter()
        .map(|stage| stage_case(view, run, stage))
        .collect();
    let mut suites = vec![(view.pipeline.clone(), cases)];
    for report in reports {
        let file = root.join(&report.path);
        match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| read_cases(&text))
        {
            Ok(cases) => suites.push((
                format!("{}: {}", report.stage, report.path.display()),
                cases,
            )),
            Err(why) => warnings.push(format!(
                "stage `{}`: cannot read its JUnit report `{}`: {why}",
                report.stage,
                report.path.display()
            )),
        }
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let count = |cases: &[Case], kind: &str| {
        cases
            .iter()
            .filter(|c| c.verdict.as_ref().is_some_and(|v| v.kind == kind))
            .count()
    };
    let all: Vec<&Case> = suites.iter().flat_map(|(_, c)| c).collect();
    let total = |kind: &str| {
        all.iter()
            .filter(|c| c.verdict.as_ref().is_some_and(|v| v.kind == kind))
            .count()
    };
    let _ = writeln!(
        xml,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\"{}>",
        escape(&view.pipeline),
        all.len(),
        total("failure"),
        total("error"),
        total("skipped"),
        view.duration_ms
            .map(|ms| format!(" time=\"{}\"", seconds(ms)))
            .unwrap_or_default()
    );
    for (name, cases) in &suites {
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" timestamp=\"{}\">",
            escape(name),
            cases.len(),
            count(cases, "failure"),
            count(cases, "error"),
            count(cases, "skipped"),
            view.started_at,
        );
        for case in cases {
            write_case(&mut xml, case);
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn stage_case(view: &RunView, run: &RunDir, stage: &StageView) -> Case {
    let reason = stage.reason.clone();
    let verdict = |kind, message: Option<String>, text: String| {
        Some(Verdict {
            kind,
            message,
            text,
        })
    };
    let (verdict, system_out) = match stage.state {
        StageState::Succeeded => (None, None),
        StageState::Cached => (
            None,
            Some("not run: restored from its checkpoint (cached)".to_owned()),
        ),
        StageState::Failed | StageState::TimedOut => {
            let message = match (stage.state, stage.exit_code, stage.signal, &reason) {
                (StageState::TimedOut, ..) => "timed out".to_owned(),
                (_, Some(code), ..) => format!("failed (exit {code})"),
                (_, _, Some(signal), _) => format!("failed (killed by signal {signal})"),
                (_, _, _, Some(reason)) => format!("failed ({reason})"),
                _ => "failed".to_owned(),
            };
            (
                verdict(
                    "failure",
                    Some(message),
                    log_tail(&run.log_path(&stage.name)),
                ),
                None,
            )
        }
        StageState::Interrupted => (
            verdict("error", Some("interrupted".to_owned()), String::new()),
            None,
        ),
        StageState::Skipped
        | StageState::SkippedWhen
        | StageState::Pending
        | StageState::Running => (
            verdict(
                "skipped",
                Some(reason.unwrap_or_else(|| format!("not run ({})", stage.state.word()))),
                String::new(),
            ),
            None,
        ),
    };
    Case {
        name: stage.name.clone(),
        classname: view.pipeline.clone(),
        time: stage.active_ms.or(stage.duration_ms).map(seconds),
        verdict,
        system_out,
    }
}

fn write_case(xml: &mut String, case: &Case) {
    let time = case
        .time
        .as_ref()
        .map(|t| format!(" time=\"{}\"", escape(t)))
        .unwrap_or_default();
    let _ = write!(
        xml,
        "    <testcase name=\"{}\" classname=\"{}\"{time}",
        escape(&case.name),
        escape(&case.classname)
    );
    if case.verdict.is_none() && case.system_out.is_none() {
        xml.push_str("/>\n");
        return;
    }
    xml.push_str(">\n");
    if let Some(v) = &case.verdict {
        let message = v
            .message
            .as_ref()
            .map(|m| format!(" message=\"{}\"", escape(m)))
            .unwrap_or_default();
        if v.text.is_empty() {
            let _ = writeln!(xml, "      <{}{message}/>", v.kind);
        } else {
            let _ = writeln!(
                xml,
                "      <{}{message}>{}</{}>",
                v.kind,
                escape(&v.text),
                v.kind
            );
        }
    }
    if let Some(out) = &case.system_out {
        let _ = writeln!(xml, "      <system-out>{}</system-out>", escape(out));
    }
    xml.push_str("    </testcase>\n");
}

/// `1234` ms as `1.234`.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The last lines of a stage's log.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL)..].join("\n")
}

/// Text as XML character data or an attribute value: secrets masked, the special characters
/// escaped, and the control characters XML 1.0 cannot hold at all left out.
fn escape(text: &str) -> String {
    let text = crate::secrets::redact(text);
    let kept: String = (text.chars())
        .filter(|&c| {
            matches!(c, '\n' | '\t' | '\r')
                || !(c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}'))
        })
        .collect();
    crate::markup::escape(&kept).replace('\r', "&#13;")
}

/// Every testcase of a JUnit report (`<testsuites>` or a bare `<testsuite>`, nested at any
/// depth), or why the file is not one.
fn read_cases(text: &str) -> Result<Vec<Case>, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut cases = Vec::new();
    let mut open: Vec<Vec<u8>> = Vec::new();
    let mut case: Option<Case> = None;
    // The verdict or `system-out` being read inside a testcase.
    let mut inner: Option<(Vec<u8>, Option<String>, String)> = None;
    let mut root_seen = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("{e} at byte {}", reader.error_position()))?;
        match event {
            Event::Start(e) => {
                let name = e.name().as_ref().to_vec();
                check_root(&mut root_seen, &name)?;
                start(&e, &name, &mut case, &mut inner)?;
                open.push(name);
            }
            Event::Empty(e) => {
                let name = e.name().as_ref().to_vec();
                check_root(&mut root_seen, &name)?;
                start(&e, &name, &mut case, &mut inner)?;
                end(&name, &mut case, &mut inner, &mut cases);
            }
            Event::End(e) => {
                let name = e.name().as_ref().to_vec();
                open.pop();
                end(&name, &mut case, &mut inner, &mut cases);
            }
            Event::Text(t) => {
                if let Some((_, _, body)) = &mut inner {
                    body.push_str(
                        &t.xml_content(quick_xml::XmlVersion::Implicit1_0)
                            .map_err(|e| e.to_string())?,
                    );
                }
            }
            Event::CData(t) => {
                if let Some((_, _, body)) = &mut inner {
                    body.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, _, body)) = &mut inner {
                    let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => Cow::Owned(c.to_string()),
                        None => {
                            let name = r.decode().map_err(|e| e.to_string())?;
                            match quick_xml::escape::resolve_predefined_entity(&name) {
                                Some(s) => Cow::Borrowed(s),
                                None => return Err(format!("unknown entity `&{name};`")),
                            }
                        }
                    };
                    body.push_str(&resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err("it holds no `<testsuites>` or `<testsuite>` element".to_owned());
    }
    if let Some(name) = open.last() {
        return Err(format!(
            "it ends before `</{}>`",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(cases)
}

/// The first element must be a JUnit report's.
fn check_root(seen: &mut bool, name: &[u8]) -> Result<(), String> {
    if *seen {
        return Ok(());
    }
    if name != b"testsuites" && name != b"testsuite" {
        return Err(format!(
            "its root element is `<{}>`, not `<testsuites>` or `<testsuite>`",
            String::from_utf8_lossy(name)
        ));
    }
    *seen = true;
    Ok(())
}

type Inner = Option<(Vec<u8>, Option<String>, String)>;

fn start(
    e: &BytesStart<'_>,
    name: &[u8],
    case: &mut Option<Case>,
    inner: &mut Inner,
) -> Result<(), String> {
    match name {
        b"testcase" => {
            *case = Some(Case {
                name: attribute(e, b"name")?.unwrap_or_default(),
                classname: attribute(e, b"classname")?.unwrap_or_default(),
                time: attribute(e, b"time")?,
                ..Case::default()
            });
        }
        b"failure" | b"error" | b"skipped" | b"system-out" if case.is_some() => {
            *inner = Some((name.to_vec(), attribute(e, b"message")?, String::new()));
        }
        _ => {}
    }
    Ok(())
}

fn end(name: &[u8], case: &mut Option<Case>, inner: &mut Inner, cases: &mut Vec<Case>) {
    if name == b"testcase" {
        cases.extend(case.take());
        return;
    }
    let Some(c) = case.as_mut() else {
        return;
    };
    if inner.as_ref().is_none_or(|(n, ..)| n != name) {
        return;
    }
    let Some((_, message, text)) = inner.take() else {
        return;
    };
    let kind = match name {
        b"failure" => "failure",
        b"error" => "error",
        b"skipped" => "skipped",
        _ => {
            c.system_out = Some(text);
            return;
        }
    };
    c.verdict = Some(Verdict {
        kind,
        message,
        text: text.trim().to_owned(),
    });
}

fn attribute(e: &BytesStart<'_>, key: &[u8]) -> Result<Option<String>, String> {
    for attr in e.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        if attr.key.as_ref() == key {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| e.to_string())?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_style_reports_are_read() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3">
<testcase classname="tests.test_calc" name="test_add" time="0.001" />
<testcase classname="tests.test_calc" name="test_sub" time="0.002"><failure message="assert 1 == 2">def test_sub():
&gt;       assert 1 == 2 &amp;&#65;</failure></testcase>
<testcase classname="tests.test_calc" name="test_skip"><skipped type="pytest.skip" message="no db" /><system-out><![CDATA[a <b>]]></system-out></testcase>
</testsuite></testsuites>"#;
        let cases = read_cases(xml).unwrap();
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].verdict, None);
        assert_eq!(
            cases[1].verdict,
            Some(Verdict {
                kind: "failure",
                message: Some("assert 1 == 2".into()),
                text: "def test_sub():\n>       assert 1 == 2 &A".into()
            })
        );
        assert_eq!(cases[2].verdict.as_ref().map(|v| v.kind), Some("skipped"));
        assert_eq!(cases[2].system_out.as_deref(), Some("a <b>"));
    }

    #[test]
    fn broken_reports_say_why() {
        let err = |xml: &str| read_cases(xml).unwrap_err();
        assert!(
            err("<testsuite><testcase name='a'></testsuite>").contains("testcase"),
            "{}",
            err("<testsuite><testcase name='a'></testsuite>")
        );
        assert_eq!(
            err("<testsuite><testcase name='a'>"),
            "it ends before `</testcase>`"
        );
        assert_eq!(
            err("<html/>"),
            "its root element is `<html>`, not `<testsuites>` or `<testsuite>`"
        );
        assert_eq!(
            err("not xml at all"),
            "it holds no `<testsuites>` or `<testsuite>` element"
        );
    }

    #[test]
    fn escaping_leaves_no_markup_and_no_control_characters() {
        assert_eq!(
            escape("a<b>&\"c'\u{1b}[31m\r\n\u{0}"),
            "a&lt;b&gt;&amp;&quot;c&apos;[31m&#13;\n"
        );
    }
}
