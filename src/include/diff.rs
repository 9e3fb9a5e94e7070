//! What changed between two versions of an included file, stage by stage, for
//! `murphy lock --update` to print before the pin moves in review.

use std::collections::HashMap;

use serde_json::Value;

use super::{Def, Pipeline};
use crate::config::outline;

/// One definition as plain values: `("stage", "test", {...})`.
type Entry = (&'static str, String, Value);

/// What moving pins changes in the pipeline as a whole, every file included (nested includes
/// too): `stage `x` added`, `stage `y` removed`, `stage `z` changed: run, timeout`.
pub fn pipelines(old: &Pipeline, new: &Pipeline) -> Vec<String> {
    let (old, new) = (definitions(old), definitions(new));
    let find = |list: &[Entry], what: &str, name: &str| {
        list.iter()
            .find(|(w, n, _)| *w == what && n == name)
            .map(|(_, _, v)| v.clone())
    };
    let mut lines = Vec::new();
    for (what, name, after) in &new {
        match find(&old, what, name) {
            None => lines.push(format!("{what} `{name}` added")),
            Some(before) if before != *after => lines.push(format!(
                "{what} `{name}` changed: {}",
                changed_keys(&before, after).join(", ")
            )),
            Some(_) => {}
        }
    }
    for (what, name, _) in &old {
        if find(&new, what, name).is_none() {
            lines.push(format!("{what} `{name}` removed"));
        }
    }
    if lines.is_empty() {
        lines.push("no stage or template changed".to_owned());
    }
    lines
}

/// The merged templates and stages of `pipeline`, each as its file writes it.
fn definitions(pipeline: &Pipeline) -> Vec<Entry> {
    let mut outlines = HashMap::new();
    let mut value = |def: &Def, templates: bool| {
        let (t, s) = outlines
            .entry(def.file)
            .or_insert_with(|| outline(&pipeline.files[def.file].text).unwrap_or_default());
        let list = if templates { &t.0 } else { &s.0 };
        let found = list.iter().find(|(k, _)| k.value == def.name.value);
        found.map_or(Value::Null, |(_, v)| v.clone())
    };
    let mut out: Vec<Entry> = Vec::new();
    for def in &pipeline.templates {
        out.push(("template", def.name.value.clone(), value(def, true)));
    }
    for def in &pipeline.stages {
        out.push(("stage", def.name.value.clone(), value(def, false)));
    }
    out
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
    use crate::config::parse;
    use std::path::Path;

    fn pipeline(text: &str) -> Pipeline {
        Pipeline::single(parse(Path::new("p.yml"), text.to_owned()).unwrap())
    }

    #[test]
    fn names_what_each_stage_gained_or_lost() {
        let old = pipeline(
            "version: 1\nstages:\n  lint: {run: a}\n  test: {run: t, timeout: 5m}\n  gone: {run: g}\n",
        );
        let new = pipeline(
            "version: 1\nstages:\n  lint: {run: a}\n  test: {run: t2, retry: {attempts: 2}}\n  new: {run: n}\n",
        );
        assert_eq!(
            pipelines(&old, &new),
            [
                "stage `test` changed: retry, run, timeout (removed)",
                "stage `new` added",
                "stage `gone` removed",
            ]
        );
        assert_eq!(pipelines(&old, &old), ["no stage or template changed"]);
    }
}
