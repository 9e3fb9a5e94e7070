//! Why a run happens (local, pre-push, pr, push, nightly, tag), and the `when:` conditions
//! that let one pipeline file serve all of them.

use std::fmt;

use globset::GlobMatcher;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A developer's run outside CI (the default there).
    Local,
    /// The git pre-push hook.
    PrePush,
    /// A pull (merge) request in CI.
    Pr,
    /// A push to a branch in CI.
    Push,
    /// A scheduled build.
    Nightly,
    /// A pushed tag: a release.
    Tag,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [
        Trigger::Local,
        Trigger::PrePush,
        Trigger::Pr,
        Trigger::Push,
        Trigger::Nightly,
        Trigger::Tag,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Trigger::Local => "local",
            Trigger::PrePush => "pre-push",
            Trigger::Pr => "pr",
            Trigger::Push => "push",
            Trigger::Nightly => "nightly",
            Trigger::Tag => "tag",
        }
    }

    pub fn parse(name: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `when:` conditions are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation {
    pub trigger: Trigger,
    pub branch: Option<String>,
    pub tag: Option<String>,
}

/// A glob with the text it was written as, for messages.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    pub matcher: GlobMatcher,
}

impl Pattern {
    /// The text before the first glob character: `release-` for `release-*`.
    pub fn literal_prefix(&self) -> &str {
        let end = self
            .text
            .find(['*', '?', '[', '{'])
            .unwrap_or(self.text.len());
        &self.text[..end]
    }
}

/// A stage's `when:`; every given part must hold (AND), any listed value within a part (OR).
#[derive(Debug, Clone, Default)]
pub struct When {
    pub triggers: Option<Vec<Trigger>>,
    pub branches: Option<Vec<Pattern>>,
    pub tags: Option<Vec<Pattern>>,
}

impl When {
    /// `Ok` if the stage runs in `situation`, else why not.
    pub fn check(&self, situation: &Situation) -> Result<(), String> {
        if let Some(triggers) = &self.triggers
            && !triggers.contains(&situation.trigger)
        {
            let names: Vec<&str> = triggers.iter().map(|t| t.name()).collect();
            return Err(format!(
                "trigger is `{}`, not {}",
                situation.trigger,
                one_of(&names)
            ));
        }
        for (what, patterns, value) in [
            ("branch", &self.branches, &situation.branch),
            ("tag", &self.tags, &situation.tag),
        ] {
            let Some(patterns) = patterns else { continue };
            let texts: Vec<&str> = patterns.iter().map(|p| p.text.as_str()).collect();
            match value {
                Some(v) if patterns.iter().any(|p| p.matcher.is_match(v)) => {}
                Some(v) => return Err(format!("{what} `{v}` is not {}", one_of(&texts))),
                None => return Err(format!("no {what}, and `when` wants {}", one_of(&texts))),
            }
        }
        Ok(())
    }
}

fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern {
            text: text.into(),
            matcher: globset::Glob::new(text).unwrap().compile_matcher(),
        }
    }

    fn situation(trigger: Trigger, branch: Option<&str>, tag: Option<&str>) -> Situation {
        Situation {
            trigger,
            branch: branch.map(str::to_owned),
            tag: tag.map(str::to_owned),
        }
    }

    #[test]
    fn every_part_must_hold() {
        let when = When {
            triggers: Some(vec![Trigger::Pr, Trigger::Push]),
            branches: Some(vec![pattern("main"), pattern("release/*")]),
            tags: None,
        };
        assert!(
            when.check(&situation(Trigger::Push, Some("release/1.2"), None))
                .is_ok()
        );
        assert_eq!(
            when.check(&situation(Trigger::Local, Some("main"), None)),
            Err("trigger is `local`, not one of `pr`, `push`".into())
        );
        assert_eq!(
            when.check(&situation(Trigger::Pr, Some("dev"), None)),
            Err("branch `dev` is not one of `main`, `release/*`".into())
        );
        let tagged = When {
            tags: Some(vec![pattern("v*")]),
            ..When::default()
        };
        assert!(
            tagged
                .check(&situation(Trigger::Tag, None, Some("v1.0.0")))
                .is_ok()
        );
        assert_eq!(
            tagged.check(&situation(Trigger::Push, Some("main"), None)),
            Err("no tag, and `when` wants `v*`".into())
        );
    }
}
