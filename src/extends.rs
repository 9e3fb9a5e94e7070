//! `extends:`: a stage copies a template (or another stage) and overrides the keys it gives,
//! so ten services can share one test stage definition.
//!
//! Each key the stage gives replaces the template's whole value (an `env` given replaces the
//! template's `env`); keys it leaves out, and lists it leaves empty, are the template's. A
//! template may extend another; a loop is an error that prints it.

use std::collections::HashMap;

use crate::config::{Source, Spanned, StageDef, span_of};
use crate::diagnostic::{Diagnostic, did_you_mean};

/// The stages of `source` with every `extends:` resolved, in file order.
pub fn resolve(source: &Source) -> Result<Vec<(Spanned<String>, StageDef)>, Vec<Diagnostic>> {
    let file = &source.pipeline;
    let mut errors = Vec::new();
    let mut known: HashMap<&str, &StageDef> = HashMap::new();
    for (name, def) in &file.templates.0 {
        known.insert(&name.value, def);
    }
    for (name, def) in &file.stages.0 {
        if file.templates.0.iter().any(|(t, _)| t.value == name.value) {
            errors.push(source.error(
                format!(
                    "`{}` is both a template and a stage; `extends` could not tell which",
                    name.value
                ),
                span_of(name),
            ));
        }
        known.insert(&name.value, def);
    }
    let mut resolved = Vec::with_capacity(file.stages.0.len());
    for (name, def) in &file.stages.0 {
        let mut chain = vec![name.value.clone()];
        match flatten(source, def, &known, &mut chain) {
            Ok(def) => resolved.push((name.clone(), def)),
            Err(d) => errors.push(d),
        }
    }
    if errors.is_empty() {
        Ok(resolved)
    } else {
        Err(errors)
    }
}

/// `def` with its `extends` chain applied.
fn flatten(
    source: &Source,
    def: &StageDef,
    known: &HashMap<&str, &StageDef>,
    chain: &mut Vec<String>,
) -> Result<StageDef, Diagnostic> {
    let Some(parent_name) = &def.extends else {
        return Ok(def.clone());
    };
    let Some(parent) = known.get(parent_name.value.as_str()) else {
        let hint = did_you_mean(&parent_name.value, known.keys().copied())
            .map(|n| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default();
        return Err(source.error(
            format!(
                "`extends: {}` names no template or stage{hint}",
                parent_name.value
            ),
            span_of(parent_name),
        ));
    };
    if chain.contains(&parent_name.value) {
        chain.push(parent_name.value.clone());
        return Err(source.error(
            format!("`extends` goes round in a loop: {}", chain.join(" -> ")),
            span_of(parent_name),
        ));
    }
    chain.push(parent_name.value.clone());
    let parent = flatten(source, parent, known, chain)?;
    Ok(inherit(def.clone(), parent))
}

/// The child's keys over the parent's.
fn inherit(child: StageDef, parent: StageDef) -> StageDef {
    fn list<T>(child: Vec<T>, parent: Vec<T>) -> Vec<T> {
        if child.is_empty() { parent } else { child }
    }
    StageDef {
        extends: None,
        needs: list(child.needs, parent.needs),
        needs_optional: list(child.needs_optional, parent.needs_optional),
        when: child.when.or(parent.when),
        run: child.run.or(parent.run),
        inputs: list(child.inputs, parent.inputs),
        outputs: list(child.outputs, parent.outputs),
        env: if child.env.0.is_empty() {
            parent.env
        } else {
            child.env
        },
        pass_env: list(child.pass_env, parent.pass_env),
        cache: child.cache.or(parent.cache),
        workdir: child.workdir.or(parent.workdir),
        timeout: child.timeout.or(parent.timeout),
        retry: child.retry.or(parent.retry),
        archive: child.archive.or(parent.archive),
        publish: list(child.publish, parent.publish),
        requires: list(child.requires, parent.requires),
        secrets: list(child.secrets, parent.secrets),
        matrix: child.matrix.or(parent.matrix),
    }
}

#[cfg(test)]
mod tests {
    use crate::config;
    use crate::plan::Plan;
    use std::path::Path;

    fn plan(text: &str) -> Result<Plan, String> {
        let source =
            config::parse(Path::new("pipeline.yml"), text.to_owned()).map_err(|e| e.to_string())?;
        Plan::new(&source).map_err(|e| e.to_string())
    }

    #[test]
    fn a_stage_takes_the_template_and_overrides_what_it_gives() {
        let p = plan(
            "version: 1\ntemplates:\n  svc-test:\n    run: make test\n    env: {LEVEL: full}\n    timeout: 10m\nstages:\n  api: {extends: svc-test, env: {SERVICE: api}}\n  web: {extends: svc-test, run: make web-test}\n",
        )
        .unwrap();
        let api = &p.stages[p.stage_id("api").unwrap()];
        assert_eq!(api.commands, ["make test"]);
        assert_eq!(api.env, [("SERVICE".to_owned(), "api".to_owned())]);
        assert_eq!(api.timeout, Some(std::time::Duration::from_secs(600)));
        let web = &p.stages[p.stage_id("web").unwrap()];
        assert_eq!(web.commands, ["make web-test"]);
        assert_eq!(web.env, [("LEVEL".to_owned(), "full".to_owned())]);
        assert_eq!(p.stages.len(), 2, "templates are not stages");
    }

    #[test]
    fn chains_resolve_and_loops_and_unknown_names_are_errors() {
        let p = plan("version: 1\ntemplates:\n  base: {run: a}\n  mid: {extends: base, timeout: 1m}\nstages:\n  s: {extends: mid}\n").unwrap();
        assert_eq!(p.stages[0].commands, ["a"]);
        let err = plan("version: 1\ntemplates:\n  a: {extends: b}\n  b: {extends: a}\nstages:\n  s: {extends: a}\n").unwrap_err();
        assert!(
            err.contains("`extends` goes round in a loop: s -> a -> b -> a"),
            "{err}"
        );
        let err = plan("version: 1\ntemplates:\n  base: {run: a}\nstages:\n  s: {extends: bsae}\n")
            .unwrap_err();
        assert!(err.starts_with("pipeline.yml:5:16: `extends: bsae` names no template or stage (did you mean `base`?)"), "{err}");
    }
}
