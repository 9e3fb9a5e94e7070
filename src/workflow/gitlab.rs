//! The GitLab CI pipeline: `.gitlab-ci.yml`.

use super::yaml::{Lines, list, quote, shell_word};
use super::{CI_TRIGGERS, Glob, Model, WorkflowError, levels, parse_glob};
use crate::trigger::Trigger;

const PROVIDER: &str = "GitLab CI";

/// Names that cannot be a job's in `.gitlab-ci.yml`: its global keywords, `pages` (GitLab
/// Pages' deploy job), and the names its YAML reads as other than strings.
const RESERVED: &[&str] = &[
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "types",
    "pages",
    "true",
    "false",
    "nil",
];

/// The rule under which murphy's change detection (`ci::detect`) gives `trigger`; the rules
/// are tried in [`CI_TRIGGERS`] order, so push is what is left.
fn event(trigger: Trigger) -> Option<&'static str> {
    match trigger {
        Trigger::Pr => Some(
            r#"$CI_PIPELINE_SOURCE == "merge_request_event" || $CI_PIPELINE_SOURCE == "external_pull_request_event""#,
        ),
        Trigger::Nightly => Some(r#"$CI_PIPELINE_SOURCE == "schedule""#),
        Trigger::Tag => Some("$CI_COMMIT_TAG"),
        _ => None,
    }
}

/// A glob of `release_tags` as the regular expression GitLab's rules take (RE2), anchored.
fn tag_regex(glob: &str) -> String {
    let mut out = String::from("/^");
    regex_of(&parse_glob(glob), &mut out);
    out.push_str("$/");
    out
}

fn regex_of(pieces: &[Glob], out: &mut String) {
    // RE2's metacharacters, and the `/` that would end the regex.
    let escaped = |c: char, out: &mut String| {
        if r"\.+*?()|[]{}^$/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    };
    for piece in pieces {
        match piece {
            Glob::Lit(c) => escaped(*c, out),
            Glob::Star { .. } => out.push_str(".*"),
            Glob::Any => out.push('.'),
            Glob::Class { negated, items } => {
                out.push('[');
                if *negated {
                    out.push('^');
                }
                for &c in items {
                    match c {
                        '-' => out.push(c),
                        c => escaped(c, out),
                    }
                }
                out.push(']');
            }
            Glob::Alt(branches) => {
                out.push_str("(?:");
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        out.push('|');
                    }
                    regex_of(branch, out);
                }
                out.push(')');
            }
        }
    }
}

pub(super) fn render(model: &Model, notes: &mut Vec<String>) -> Result<String, WorkflowError> {
    let ci = &model.plan.ci;
    let mut y = Lines::default();
    super::header(&mut y, "gitlab");
    y.line(
        0,
        &format!(
            "# Nightly runs: add a pipeline schedule (Build > Pipeline schedules) with cron `{}`.",
            ci.schedule
        ),
    );
    let secrets = model.secrets_of(None);
    let mut variables: Vec<String> = secrets.iter().map(|s| format!("{s} (masked)")).collect();
    variables.extend(
        (model.store_vars.iter())
            .filter(|name| !ci.env.iter().any(|(n, _)| n == *name))
            .map(|name| format!("{name} (if needed, or in `ci: {{env: ...}}`)")),
    );
    if !variables.is_empty() {
        let line = format!(
            "CI/CD variables it reads (Settings > CI/CD > Variables): {}",
            variables.join(", ")
        );
        y.line(0, &format!("# {line}."));
        notes.push(format!("set these {line}"));
    }
    y.line(0, "workflow:");
    y.line(1, "rules:");
    for condition in [
        r#"$CI_PIPELINE_SOURCE == "merge_request_event""#,
        r#"$CI_PIPELINE_SOURCE == "schedule""#,
        r#"$CI_PIPELINE_SOURCE == "web""#,
        &format!(
            "$CI_COMMIT_TAG =~ {}",
            tag_regex(&model.plan.release_tags.text)
        ),
        "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH",
    ] {
        y.line(2, &format!("- if: {}", quote(condition)));
    }
    y.line(0, "variables:");
    y.line(1, "GIT_DEPTH: \"0\"");
    for (name, value) in &ci.env {
        // GitLab would read a `$` in the value as a variable (`pa$$word` as `pa$word`):
        // `expand: false` (GitLab 15.6) keeps it as written, as GitHub does.
        match value.contains('$') {
            true => y.line(
                1,
                &format!(
                    "{}: {{value: {}, expand: false}}",
                    quote(name),
                    quote(value)
                ),
            ),
            false => y.line(1, &format!("{}: {}", quote(name), quote(value))),
        }
    }
    y.line(0, "default:");
    if !ci.image.is_empty() {
        y.line(1, &format!("image: {}", quote(&ci.image)));
    }
    y.line(1, "before_script:");
    y.line(2, &format!("- {}", quote(ci.install_command())));
    if model.jobs.is_empty() {
        y.line(0, "murphy:");
        y.line(1, "cache:");
        y.line(2, "key: murphy");
        y.line(2, "paths: [\".murphy/store/\"]");
        y.line(1, "script:");
        y.line(2, "- murphy run");
        return Ok(y.finish());
    }
    let levels = levels(&model.jobs);
    let deepest = levels.iter().copied().max().unwrap_or(1);
    let stages: Vec<String> = (1..=deepest).map(|l| format!("level-{l}")).collect();
    y.line(0, &format!("stages: {}", list(&stages)));
    for (job, level) in model.jobs.iter().zip(&levels) {
        if RESERVED.contains(&job.stage.as_str()) || job.stage.starts_with('.') {
            return Err(WorkflowError::Unsafe {
                what: "stage".into(),
                value: job.stage.clone(),
                provider: PROVIDER,
                why: "GitLab reserves the name (a keyword of `.gitlab-ci.yml`, `pages` for GitLab Pages' deploy, `.` for hidden jobs), so it cannot name a job: rename the stage",
            });
        }
        y.blank();
        y.line(0, &format!("{}:", quote(&job.stage)));
        y.line(1, &format!("stage: level-{level}"));
        if job.needs.is_empty() {
            y.line(1, "needs: []");
        } else {
            y.line(1, "needs:");
            for &(need, maybe) in &job.needs {
                y.line(2, &format!("- job: {}", quote(&model.jobs[need].stage)));
                if maybe {
                    y.line(3, "optional: true");
                }
            }
        }
        if job.conditional() {
            y.line(1, "rules:");
            for trigger in CI_TRIGGERS {
                let when = match job.triggers.contains(&trigger) {
                    true => "on_success",
                    false => "never",
                };
                match event(trigger) {
                    Some(condition) => {
                        y.line(2, &format!("- if: {}", quote(condition)));
                        y.line(3, &format!("when: {when}"));
                    }
                    None => y.line(2, &format!("- when: {when}")),
                }
            }
        }
        if job.instances.is_empty() {
            y.line(1, "script:");
            let command = format!("murphy run --needs-from-store {}", shell_word(&job.stage));
            y.line(2, &format!("- {}", quote(&command)));
        } else {
            for instance in &job.instances {
                if instance.contains('$') {
                    return Err(WorkflowError::Unsafe {
                        what: "matrix instance".into(),
                        value: instance.clone(),
                        provider: PROVIDER,
                        why: "GitLab would expand the `$` in it as a variable",
                    });
                }
            }
            y.line(1, "parallel:");
            y.line(2, "matrix:");
            y.line(3, &format!("- MURPHY_INSTANCE: {}", list(&job.instances)));
            y.line(1, "script:");
            y.line(2, "- murphy run --needs-from-store \"$MURPHY_INSTANCE\"");
        }
    }
    Ok(y.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_tag_globs_become_anchored_regexes() {
        assert_eq!(super::tag_regex("v*"), "/^v.*$/");
        assert_eq!(super::tag_regex("release/1.?"), r"/^release\/1\..$/");
    }

    #[test]
    fn braces_alternate_and_commas_outside_them_are_literal() {
        assert_eq!(super::tag_regex("a,b"), "/^a,b$/");
        assert_eq!(super::tag_regex("v{1,2}.*"), r"/^v(?:1|2)\..*$/");
        assert_eq!(super::tag_regex("{a,b}-c,d"), "/^(?:a|b)-c,d$/");
    }

    #[test]
    fn classes_keep_their_ranges_and_negation() {
        assert_eq!(super::tag_regex("v[0-9]*"), "/^v[0-9].*$/");
        assert_eq!(super::tag_regex("v[!a-z]"), "/^v[^a-z]$/");
        assert_eq!(super::tag_regex("v[^.]"), r"/^v[^\.]$/");
        assert_eq!(super::tag_regex(r"v\*"), r"/^v\*$/");
    }
}
