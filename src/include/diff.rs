//! What changed between two versions of an included file, stage by stage, for
//! `murphy lock --update` to print before the pin moves in review.

use serde_json::Value;

use crate::config::{Entries, outline};

/// `stage `x` added`, `stage `y` removed`, `stage `z` changed: run, timeout`, in file order;
/// a file that does not parse is reported as such.
pub fn stages(old: &str, new: &str) -> Vec<String> {
    let (Some(old), Some(new)) = (outline(old), outline(new)) else {
        return vec!["(one version does not parse; compare the files by hand)".to_owned()];
    };
    let mut lines = entries("template", &old.0, &new.0);
    lines.extend(entries("stage", &old.1, &new.1));
    if lines.is_empty() {
        lines.push("no stage or template changed".to_owned());
    }
    lines
}

fn entries(what: &str, old: &Entries<Value>, new: &Entries<Value>) -> Vec<String> {
    let find = |list: &Entries<Value>, name: &str| {
        list.0
            .iter()
            .find(|(k, _)| k.value == name)
            .map(|(_, v)| v.clone())
    };
    let mut lines = Vec::new();
    for (name, after) in &new.0 {
        match find(old, &name.value) {
            None => lines.push(format!("{what} `{}` added", name.value)),
            Some(before) if before != *after => {
                lines.push(format!(
                    "{what} `{}` changed: {}",
                    name.value,
                    changed_keys(&before, after).join(", ")
                ));
            }
            Some(_) => {}
        }
    }
    for (name, _) in &old.0 {
        if find(new, &name.value).is_none() {
            lines.push(format!("{what} `{}` removed", name.value));
        }
    }
    lines
}

/// The keys whose values differ, sorted, removed ones last.
fn changed_keys(before: &Value, after: &Value) -> Vec<String> {
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
        return vec!["its whole definition".to_owned()];
    };
    let mut keys: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| format!("{k} (removed)")),
    );
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_each_stage_gained_or_lost() {
        let old = "version: 1\nstages:\n  lint: {run: a}\n  test: {run: t, timeout: 5m}\n  gone: {run: g}\n";
        let new = "version: 1\nstages:\n  lint: {run: a}\n  test: {run: t2, retry: {attempts: 2}}\n  new: {run: n}\n";
        assert_eq!(
            stages(old, new),
            [
                "stage `test` changed: retry, run, timeout (removed)",
                "stage `new` added",
                "stage `gone` removed",
            ]
        );
        assert_eq!(stages(old, old), ["no stage or template changed"]);
    }
}
