//! `prune`: `murphy archive prune` over an archive of 10,000 builds, letting the oldest 1,000
//! go. One real build is made by an `archive:` stage, then copied under 10,000 numbers an hour
//! apart (its manifest with the number and date changed: the format the archive reads). The
//! baseline is `rm -rf` of the same 1,000 build folders: the deleting any prune must do,
//! without reading a manifest or keeping a build whole. Both start from a synced disk, as an
//! archive's builds were written long before they are pruned.

use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::{Env, Row, Target, TempDir, median, ms, murphy, time};

const BUILDS: u64 = 10_000;
const KEEP_LAST: u64 = 9_000;
const MEASURED: usize = 3;
/// `--now` for the prune; every build is older than `keep_days` by then, so `keep_last` decides.
const NOW: &str = "2030-01-01T00:00:00Z";
/// The newest build's date: 60 days before [`NOW`].
const NEWEST_SECONDS: i64 = 1_893_456_000 - 60 * 86_400;

pub fn run(env: &Env) -> Result<Vec<Row>> {
    let dir = TempDir::new("prune")?;
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("dist"))?;
    std::fs::write(project.join("dist/app.txt"), "the app\n")?;
    std::fs::write(project.join("dist/util.txt"), "a library file\n")?;
    std::fs::write(
        project.join("pipeline.yml"),
        format!(
            "version: 1\nname: prune\nstages:\n  pack:\n    archive:\n      files: [\"dist/**\"]\n      retention: {{keep_last: {KEEP_LAST}, keep_days: 30}}\n"
        ),
    )?;
    let state = dir.path().join("state");
    time(
        &mut murphy(env, &project, &state, &["run"]),
        &dir.path().join("run.err"),
    )
    .context("the run that makes the first build")?;
    let first = project.join("artifacts/000001");
    let manifest =
        std::fs::read_to_string(first.join("manifest.json")).context("the run made no build 1")?;
    let bundle = std::fs::read_dir(&first)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".zip"))
        .context("build 1 has no bundle")?;
    let bundle_bytes = std::fs::read(first.join(&bundle))?;
    let build = Template::new(&manifest)?;

    let archive = project.join("artifacts");
    let copy = dir.path().join("copy");
    let doomed = 1..=BUILDS - KEEP_LAST;
    let names: Vec<String> = doomed.clone().map(|n| format!("{n:06}")).collect();
    let stderr = dir.path().join("prune.err");
    eprintln!("xtask: writing an archive of {BUILDS} builds");
    fill(&archive, 1..=BUILDS, &build, &bundle, &bundle_bytes)?;
    let mut pruned = Vec::new();
    let mut removed = Vec::new();
    for _ in 0..MEASURED {
        // The prune before took exactly these: the archive is whole again.
        for root in [&archive, &copy] {
            fill(root, doomed.clone(), &build, &bundle, &bundle_bytes)?;
        }
        time(&mut Command::new("sync"), &stderr)?;
        pruned.push(time(
            &mut murphy(env, &project, &state, &["archive", "prune", "--now", NOW]),
            &stderr,
        )?);
        let left = std::fs::read_dir(&archive)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u64>().is_ok())
            .count() as u64;
        if left != KEEP_LAST {
            bail!("the prune left {left} builds, not {KEEP_LAST}");
        }
        removed.push(time(
            Command::new("rm")
                .arg("-rf")
                .args(&names)
                .current_dir(&copy),
            &stderr,
        )?);
    }
    Ok(vec![Row {
        name: format!(
            "prune: archive prune of {} of {BUILDS} builds (vs rm -rf of them)",
            BUILDS - KEEP_LAST
        ),
        value: ms(median(pruned)),
        baseline: Some(ms(median(removed))),
        unit: "ms",
        target: Some(Target::AtMost(1000.0)),
    }])
}

/// A real manifest, split where the build's number and date go.
struct Template {
    before_build: String,
    between: String,
    after_date: String,
}

impl Template {
    fn new(manifest: &str) -> Result<Template> {
        let (before_build, rest) = manifest
            .split_once("\"build\": 1,")
            .context("the manifest has no `\"build\": 1,`")?;
        let (between, rest) = rest
            .split_once("\"created_at\": \"")
            .context("the manifest has no created_at")?;
        let (_, after_date) = rest.split_once('"').context("created_at is not closed")?;
        Ok(Template {
            before_build: before_build.to_owned(),
            between: between.to_owned(),
            after_date: after_date.to_owned(),
        })
    }

    /// Build `number`'s manifest, `BUILDS - number` hours older than the newest.
    fn render(&self, number: u64) -> String {
        let seconds = NEWEST_SECONDS - (BUILDS - number) as i64 * 3_600;
        let mut out = String::with_capacity(self.before_build.len() + 4096);
        out.push_str(&self.before_build);
        let _ = write!(out, "\"build\": {number},");
        out.push_str(&self.between);
        let _ = write!(out, "\"created_at\": \"{}\"", rfc3339(seconds));
        out.push_str(&self.after_date);
        out
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil from days, H. Hinnant's method).
fn rfc3339(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// Puts builds `numbers` into the archive at `root`, each a manifest and a bundle.
fn fill(
    root: &Path,
    numbers: RangeInclusive<u64>,
    build: &Template,
    bundle: &str,
    bundle_bytes: &[u8],
) -> Result<()> {
    for number in numbers {
        let dir = root.join(format!("{number:06}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("manifest.json"), build.render(number))?;
        std::fs::write(dir.join(bundle), bundle_bytes)?;
    }
    std::fs::write(root.join(".next"), (BUILDS + 1).to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_893_456_000), "2030-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_825_599), "2000-02-29T11:59:59Z");
    }
}
