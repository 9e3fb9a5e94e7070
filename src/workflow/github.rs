//! The GitHub Actions workflow: `.github/workflows/murphy.yml`.

use super::yaml::{Lines, list, quote, shell_word};
use super::{CI_TRIGGERS, Glob, Job, Model, WorkflowError, parse_glob};
use crate::trigger::Trigger;

const PROVIDER: &str = "GitHub Actions";

/// Refuses a value GitHub would read as an expression: it evaluates `${{ ... }}` in almost
/// every string of a workflow, so a value holding one could read secrets.
fn literal<'v>(what: &str, value: &'v str) -> Result<&'v str, WorkflowError> {
    if value.contains("${{") {
        return Err(WorkflowError::Unsafe {
            what: what.to_owned(),
            value: value.to_owned(),
            provider: PROVIDER,
            why: "GitHub would evaluate the `${{` in it as an expression",
        });
    }
    Ok(value)
}

/// A secret's name as `${{ secrets.NAME }}` takes it.
fn secret_name(name: &str) -> Result<&str, WorkflowError> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.to_ascii_uppercase().starts_with("GITHUB_");
    if !ok {
        return Err(WorkflowError::Unsafe {
            what: "secret".into(),
            value: name.to_owned(),
            provider: PROVIDER,
            why: "GitHub secret names are letters, digits and `_`, not starting with a digit or `GITHUB_`",
        });
    }
    Ok(name)
}

/// A variable's name as a workflow's `env:` takes it without quoting.
fn env_name(name: &str) -> Result<&str, WorkflowError> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(WorkflowError::Unsafe {
            what: "`ci.env` variable".into(),
            value: name.to_owned(),
            provider: PROVIDER,
            why: "a variable name is letters, digits and `_`, not starting with a digit",
        });
    }
    Ok(name)
}

/// More tag filters than this from one `release_tags` is a glob no one meant.
const MAX_TAG_FILTERS: usize = 64;

/// `release_tags` as GitHub's tag filters, which know no `{a,b}`: one filter per branch.
/// What a filter cannot say exactly (`?`, a negated class, a class of other than letters and
/// digits) it widens to `*`: the job's murphy still checks the tag against `release_tags`,
/// and runs a tag that does not match as a push, which publishes nothing.
fn tag_filters(glob: &str) -> Result<Vec<String>, WorkflowError> {
    let too_many = || WorkflowError::Unsafe {
        what: "release_tags".into(),
        value: glob.to_owned(),
        provider: PROVIDER,
        why: "its `{...}` groups make more than 64 tag filters: write fewer alternatives",
    };
    let pieces = parse_glob(literal("release_tags", glob)?);
    if never_a_tag(&pieces) {
        return Err(WorkflowError::Unsafe {
            what: "release_tags".into(),
            value: glob.to_owned(),
            provider: PROVIDER,
            why: "it asks for a character no git tag holds (a space, `~`, `^`, `:`, `?`, `*`, `[` or `\\`), so it would match no tag",
        });
    }
    let mut filters = filters_of(&pieces).ok_or_else(too_many)?;
    let mut seen = std::collections::HashSet::new();
    filters.retain(|f| seen.insert(f.clone()));
    Ok(filters)
}

/// Whether `pieces` ask for a character `git check-ref-format` refuses in every branch of a
/// `{...}` (a filter holding one is an error to GitHub, and would match nothing).
fn never_a_tag(pieces: &[Glob]) -> bool {
    pieces.iter().any(|piece| match piece {
        Glob::Lit(c) => c.is_control() || " ~^:?*[\\".contains(*c),
        Glob::Alt(branches) => branches.iter().all(|b| never_a_tag(b)),
        _ => false,
    })
}

/// The filter patterns `pieces` expand to; `None` past [`MAX_TAG_FILTERS`].
fn filters_of(pieces: &[Glob]) -> Option<Vec<String>> {
    let mut filters = vec![String::new()];
    for piece in pieces {
        let options = match piece {
            Glob::Alt(branches) => {
                let mut options = Vec::new();
                for branch in branches.iter().filter(|b| !never_a_tag(b)) {
                    options.extend(filters_of(branch)?);
                }
                options
            }
            piece => vec![filter_of(piece)],
        };
        if filters.len() * options.len() > MAX_TAG_FILTERS {
            return None;
        }
        filters = (filters.iter())
            .flat_map(|f| options.iter().map(move |o| format!("{f}{o}")))
            .collect();
    }
    Some(filters)
}

/// One piece other than `{...}` in a filter pattern.
fn filter_of(piece: &Glob) -> String {
    match piece {
        // Characters a filter pattern reads as its own: `+` repeats the one before, `!` first
        // negates, `]` closes a class.
        Glob::Lit(c) if "+]!".contains(*c) => format!("\\{c}"),
        Glob::Lit(c) => c.to_string(),
        Glob::Star { double: false } => "*".to_owned(),
        Glob::Star { double: true } => "**".to_owned(),
        Glob::Class {
            negated: false,
            items,
        } if items.iter().all(|c| c.is_ascii_alphanumeric() || *c == '-')
            && items.first() != Some(&'-')
            && items.last() != Some(&'-') =>
        {
            format!("[{}]", items.iter().collect::<String>())
        }
        // `filters_of` expands `{...}` before it comes here; `*` would only widen it.
        Glob::Any | Glob::Class { .. } | Glob::Alt(_) => "*".to_owned(),
    }
}

/// The condition under which murphy's change detection (`ci::detect`) gives `trigger`.
fn event(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Pr => "github.event_name == 'pull_request'",
        Trigger::Nightly => "github.event_name == 'schedule'",
        Trigger::Tag => {
            "github.event_name != 'pull_request' && github.event_name != 'schedule' && startsWith(github.ref, 'refs/tags/')"
        }
        _ => {
            "github.event_name != 'pull_request' && github.event_name != 'schedule' && !startsWith(github.ref, 'refs/tags/')"
        }
    }
}

/// The job's `if:`, if it needs one. An ancestor that may be absent (skipped by its `when:`,
/// however far up) would skip this job too under GitHub's implicit `success()`, which
/// looks at every ancestor, so such a job asks only that nothing failed or was cancelled.
fn condition(job: &Job) -> Option<String> {
    let mut parts = Vec::new();
    if job.may_lack_an_ancestor {
        parts.push("!failure() && !cancelled()".to_owned());
    }
    if job.conditional() {
        let events: Vec<String> = CI_TRIGGERS
            .into_iter()
            .filter(|t| job.triggers.contains(t))
            .map(|t| format!("({})", event(t)))
            .collect();
        parts.push(match (events.len(), parts.is_empty()) {
            (1, true) => events[0]
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_owned(),
            _ => format!("({})", events.join(" || ")),
        });
    }
    (!parts.is_empty()).then(|| format!("${{{{ {} }}}}", parts.join(" && ")))
}

pub(super) fn render(model: &Model) -> Result<String, WorkflowError> {
    let ci = &model.plan.ci;
    let mut y = Lines::default();
    super::header(&mut y, "github");
    let secrets = model.secrets_of(None);
    if !secrets.is_empty() {
        y.line(
            0,
            &format!("# Repository secrets it reads: {}.", secrets.join(", ")),
        );
    }
    let unset: Vec<&str> = (model.store_vars.iter().copied())
        .filter(|name| !ci.env.iter().any(|(n, _)| n == name))
        .collect();
    if !unset.is_empty() {
        let vars = unset.join(", ");
        y.line(
            0,
            &format!("# The store also reads {vars} if set: give them in `ci: {{env: ...}}`."),
        );
    }
    y.line(0, "name: murphy");
    y.line(0, "on:");
    y.line(1, "pull_request:");
    y.line(1, "push:");
    y.line(
        2,
        &format!(
            "branches: {}",
            list(&[literal("ci.default_branch", &ci.default_branch)?])
        ),
    );
    y.line(
        2,
        &format!(
            "tags: {}",
            list(&tag_filters(&model.plan.release_tags.text)?)
        ),
    );
    y.line(1, "schedule:");
    y.line(2, &format!("- cron: {}", quote(&ci.schedule)));
    y.line(1, "workflow_dispatch:");
    y.line(0, "permissions:");
    y.line(1, "contents: read");
    if !ci.env.is_empty() {
        y.line(0, "env:");
        for (name, value) in &ci.env {
            let name = env_name(name)?;
            y.line(
                1,
                &format!("{name}: {}", quote(literal("ci.env value", value)?)),
            );
        }
    }
    y.line(0, "jobs:");
    if model.jobs.is_empty() {
        y.line(1, "murphy:");
        y.line(2, "name: murphy run");
        runs_on(&mut y, &ci.runs_on)?;
        env(&mut y, &secrets, false)?;
        y.line(2, "steps:");
        checkout(&mut y);
        y.line(3, "- name: the checkpoint store of earlier runs");
        y.line(4, "uses: actions/cache@v4");
        y.line(4, "with:");
        y.line(5, "path: .murphy/store");
        y.line(5, "key: murphy-${{ runner.os }}-${{ github.run_id }}");
        y.line(5, "restore-keys: murphy-${{ runner.os }}-");
        install(&mut y, ci.install_command())?;
        y.line(3, "- name: murphy run");
        y.line(4, "run: murphy run");
        return Ok(y.finish());
    }
    for job in &model.jobs {
        y.line(1, &format!("{}:", job.id));
        match job.instances.is_empty() {
            true => y.line(2, &format!("name: {}", quote(&job.stage))),
            // Each instance's job is named for it, as murphy names it.
            false => y.line(2, "name: ${{ matrix.instance }}"),
        }
        runs_on(&mut y, &ci.runs_on)?;
        if !job.needs.is_empty() {
            let needs: Vec<&str> = job
                .needs
                .iter()
                .map(|&(n, _)| model.jobs[n].id.as_str())
                .collect();
            y.line(2, &format!("needs: [{}]", needs.join(", ")));
        }
        if let Some(condition) = condition(job) {
            y.line(2, &format!("if: {}", quote(&condition)));
        }
        if !job.instances.is_empty() {
            y.line(2, "strategy:");
            y.line(3, "fail-fast: false");
            y.line(3, "matrix:");
            for instance in &job.instances {
                literal("matrix instance", instance)?;
            }
            y.line(4, &format!("instance: {}", list(&job.instances)));
        }
        env(
            &mut y,
            &model.secrets_of(Some(job)),
            !job.instances.is_empty(),
        )?;
        y.line(2, "steps:");
        checkout(&mut y);
        install(&mut y, ci.install_command())?;
        if job.instances.is_empty() {
            y.line(
                3,
                &format!("- name: {}", quote(&format!("murphy run {}", job.stage))),
            );
            let command = format!("murphy run --needs-from-store {}", shell_word(&job.stage));
            y.line(4, &format!("run: {}", quote(&command)));
        } else {
            y.line(3, "- name: murphy run ${{ matrix.instance }}");
            y.line(4, "run: murphy run --needs-from-store \"$MURPHY_INSTANCE\"");
        }
    }
    Ok(y.finish())
}

fn runs_on(y: &mut Lines, labels: &[String]) -> Result<(), WorkflowError> {
    for label in labels {
        literal("ci.runs_on", label)?;
    }
    match labels {
        [one] => y.line(2, &format!("runs-on: {}", quote(one))),
        many => y.line(2, &format!("runs-on: {}", list(many))),
    }
    Ok(())
}

/// The job's environment: its secrets, and a matrix job's instance, which the script reads
/// from a variable rather than from an expression in its text.
fn env(y: &mut Lines, secrets: &[String], matrix: bool) -> Result<(), WorkflowError> {
    if secrets.is_empty() && !matrix {
        return Ok(());
    }
    y.line(2, "env:");
    for name in secrets {
        let name = secret_name(name)?;
        y.line(3, &format!("{name}: ${{{{ secrets.{name} }}}}"));
    }
    if matrix {
        y.line(3, "MURPHY_INSTANCE: ${{ matrix.instance }}");
    }
    Ok(())
}

/// The whole history: murphy compares against the merge base and reads release tags.
fn checkout(y: &mut Lines) {
    y.line(3, "- uses: actions/checkout@v4");
    y.line(4, "with:");
    y.line(5, "fetch-depth: 0");
}

fn install(y: &mut Lines, command: &str) -> Result<(), WorkflowError> {
    y.line(3, "- name: install murphy");
    y.line(
        4,
        &format!("run: {}", quote(literal("ci.install", command)?)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tag_filters;

    #[test]
    fn braces_become_one_tag_filter_per_branch() {
        assert_eq!(tag_filters("v*").unwrap(), ["v*"]);
        assert_eq!(tag_filters("v{1,2}.*").unwrap(), ["v1.*", "v2.*"]);
        assert_eq!(
            tag_filters("{a,b}-{c,d}").unwrap(),
            ["a-c", "a-d", "b-c", "b-d"]
        );
        assert_eq!(tag_filters("a,b").unwrap(), ["a,b"]);
        assert_eq!(tag_filters("v{1,1}").unwrap(), ["v1"]);
    }

    #[test]
    fn what_a_filter_cannot_say_is_widened_or_escaped() {
        assert_eq!(tag_filters("v[0-9]*").unwrap(), ["v[0-9]*"]);
        assert_eq!(tag_filters("v1.?").unwrap(), ["v1.*"]);
        assert_eq!(tag_filters("v[!a]x").unwrap(), ["v*x"]);
        assert_eq!(tag_filters("v[.]").unwrap(), ["v*"]);
        assert_eq!(tag_filters("!v1+b").unwrap(), [r"\!v1\+b"]);
    }

    #[test]
    fn a_character_no_tag_holds_is_refused() {
        for glob in [r"v\*", "v 1", "v{1,~}x~"] {
            let err = tag_filters(glob).unwrap_err().to_string();
            assert!(err.contains("no git tag holds"), "{err}");
        }
        // One branch that can match is enough: the other filter is left out.
        assert_eq!(tag_filters("v{1,~}").unwrap(), ["v1"]);
    }

    #[test]
    fn too_many_filters_are_refused() {
        let err = tag_filters("{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}").unwrap_err();
        assert!(
            err.to_string().contains("more than 64 tag filters"),
            "{err}"
        );
        assert!(tag_filters("{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}").is_ok());
    }
}
