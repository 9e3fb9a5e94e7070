//! `murphy archive sizes`: how big each build and each of its files is, over time, as a table
//! and as an SVG line chart (hand-written: a few dozen elements need no plotting library).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::manifest::BuildManifest;
use crate::markup::escape;

/// Files shown on their own (a column in the table, a line in the chart); the table sums the
/// rest as "other", the chart leaves them to the total.
const MAX_SERIES: usize = 6;

/// Per build: its number, date, total size, and size by file (path to bytes).
#[derive(serde::Serialize)]
pub struct Row {
    pub build: u64,
    pub date: String,
    pub total: u64,
    pub files: BTreeMap<String, u64>,
}

pub fn rows(manifests: &[BuildManifest]) -> Vec<Row> {
    manifests
        .iter()
        .map(|m| Row {
            build: m.build,
            date: m.created_at.strftime("%Y-%m-%d").to_string(),
            total: m.files.iter().map(|f| f.size).sum(),
            files: m.files.iter().map(|f| (f.path.clone(), f.size)).collect(),
        })
        .collect()
}

/// The files with the largest size in the newest build come first; they get their own lines.
fn series(rows: &[Row]) -> Vec<String> {
    let all: std::collections::BTreeSet<&String> =
        rows.iter().flat_map(|r| r.files.keys()).collect();
    let mut names: Vec<(u64, &String)> = all
        .into_iter()
        .map(|k| {
            let latest = rows
                .iter()
                .rev()
                .find_map(|r| r.files.get(k))
                .copied()
                .unwrap_or(0);
            (latest, k)
        })
        .collect();
    names.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    names
        .into_iter()
        .take(MAX_SERIES)
        .map(|(_, k)| k.clone())
        .collect()
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The table: one row per build, the total, then the largest files and the rest.
pub fn table(rows: &[Row]) -> Vec<Vec<String>> {
    let names = series(rows);
    let mut header = vec!["BUILD".to_owned(), "DATE".to_owned(), "TOTAL".to_owned()];
    header.extend(names.iter().cloned());
    header.push("OTHER".into());
    let mut out = vec![header];
    for row in rows {
        let mut line = vec![row.build.to_string(), row.date.clone(), human(row.total)];
        let mut named = 0;
        for name in &names {
            let size = row.files.get(name).copied();
            named += size.unwrap_or(0);
            line.push(size.map(human).unwrap_or_else(|| "-".into()));
        }
        line.push(human(row.total - named.min(row.total)));
        out.push(line);
    }
    out
}

/// A line chart: x is the build (in order), y the size; one line for the total and one per
/// large file.
pub fn svg(rows: &[Row]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 400.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 220.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 50.0;
    const COLOURS: [&str; 7] = [
        "#222222", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    ];
    let names = series(rows);
    let max = rows.iter().map(|r| r.total).max().unwrap_or(0).max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |i: usize| {
        if rows.len() <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (rows.len() - 1) as f64
        }
    };
    let y = |v: u64| TOP + plot_h * (1.0 - v as f64 / max);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="14">Archive size per build</text>"#
    );
    // Axes and a few gridlines.
    for step in 0..=4 {
        let value = (max * step as f64 / 4.0) as u64;
        let gy = y(value);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            gy + 4.0,
            escape(&human(value))
        );
    }
    let label_every = rows.len().div_ceil(10).max(1);
    for (i, row) in rows.iter().enumerate() {
        if i % label_every == 0 || i + 1 == rows.len() {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x(i),
                H - BOTTOM + 16.0,
                row.build
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">build</text>"#,
        LEFT + plot_w / 2.0,
        H - 12.0
    );
    let mut lines: Vec<(String, Vec<u64>)> =
        vec![("total".into(), rows.iter().map(|r| r.total).collect())];
    for name in &names {
        lines.push((
            name.clone(),
            rows.iter()
                .map(|r| r.files.get(name).copied().unwrap_or(0))
                .collect(),
        ));
    }
    for (k, (name, values)) in lines.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="{}" points="{}"/>"#,
            if k == 0 { 3 } else { 2 },
            points.join(" ")
        );
        for point in &points {
            let (px, py) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                out,
                r#"<circle cx="{px}" cy="{py}" r="3" fill="{colour}"/>"#
            );
        }
        let ly = TOP + 10.0 + 18.0 * k as f64;
        let lx = W - RIGHT + 15.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(&shorten(name))
        );
    }
    out.push_str("</svg>\n");
    out
}

fn shorten(name: &str) -> String {
    if name.chars().count() > 28 {
        format!(
            "...{}",
            name.chars()
                .rev()
                .take(25)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        )
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(build: u64, files: &[(&str, u64)]) -> Row {
        Row {
            build,
            date: "2026-11-22".into(),
            total: files.iter().map(|(_, s)| s).sum(),
            files: files.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn table_and_chart_show_every_build() {
        let rows = vec![
            row(1, &[("a.whl", 2048), ("<doc>", 10)]),
            row(2, &[("a.whl", 4096)]),
        ];
        let table = table(&rows);
        assert_eq!(table[0][..3], ["BUILD", "DATE", "TOTAL"]);
        assert_eq!(table[2][2], "4.0 KiB");
        let svg = svg(&rows);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 3, "total and two files");
        assert!(svg.contains("&lt;doc&gt;"), "names are escaped");
    }
}
