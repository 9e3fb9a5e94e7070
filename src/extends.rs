//! `extends:`: a stage copies a template (or another stage) and overrides the keys it gives,
//! so ten services can share one test stage definition.
//!
//! Each key the stage gives replaces the template's whole value (an `env` given replaces the
//! template's `env`); keys it leaves out, and lists it leaves empty, are the template's. A
//! template may extend another; a loop is an error that prints it.

use std::collections::{HashMap, HashSet};

use crate::config::{Source, Spanned, StageDef, span_of};
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::include::{Def, FileId};

/// A stage with its `extends` chain applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The file that defines the stage.
    pub file: FileId,
    pub name: Spanned<String>,
    pub def: Box<StageDef>,
    /// Which file wrote each key: a key taken from a template in another file is reported
    /// there.
    pub origins: Origins,
}

/// The file each key of a resolved stage was written in.
#[derive(Debug, Clone, Copy)]
pub struct Origins {
    pub needs: FileId,
    pub needs_optional: FileId,
    pub when: FileId,
    pub run: FileId,
    pub shell: FileId,
    pub inputs: FileId,
    pub outputs: FileId,
    pub env: FileId,
    pub workdir: FileId,
    pub timeout: FileId,
    pub retry: FileId,
    pub archive: FileId,
    pub publish: FileId,
    pub requires: FileId,
    pub matrix: FileId,
    pub reports: FileId,
}

impl Origins {
    fn all(file: FileId) -> Origins {
        Origins {
            needs: file,
            needs_optional: file,
            when: file,
            run: file,
            shell: file,
            inputs: file,
            outputs: file,
            env: file,
            workdir: file,
            timeout: file,
            retry: file,
            archive: file,
            publish: file,
            requires: file,
            matrix: file,
            reports: file,
        }
    }
}

/// `stages` with every `extends:` resolved, in order. A stage without one is moved, not
/// copied: a pipeline of 20,000 stages would otherwise be held twice over.
pub fn resolve(
    files: &[Source],
    templates: &[Def],
    stages: Vec<Def>,
) -> Result<Vec<Resolved>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut known: HashMap<&str, &Def> = HashMap::new();
    for template in templates {
        known.insert(&template.name.value, template);
    }
    let templates: HashSet<&str> = known.keys().copied().collect();
    for stage in &stages {
        if templates.contains(stage.name.value.as_str()) {
            errors.push(files[stage.file].error(
                format!(
                    "`{}` is both a template and a stage; `extends` could not tell which",
                    stage.name.value
                ),
                span_of(&stage.name),
            ));
        }
        known.insert(&stage.name.value, stage);
    }
    // First what each stage that extends another becomes, while all are there to be read.
    let mut flattened: Vec<Option<(Box<StageDef>, Origins)>> = Vec::with_capacity(stages.len());
    for stage in &stages {
        if stage.def.extends.is_none() {
            flattened.push(None);
            continue;
        }
        let mut chain = vec![stage.name.value.clone()];
        let flat = match flatten(files, stage, &known, &mut chain) {
            Ok(flat) => Some(flat),
            Err(d) => {
                errors.push(d);
                None
            }
        };
        flattened.push(flat);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let resolved = (stages.into_iter().zip(flattened))
        .map(|(stage, flat)| {
            let (def, origins) = flat.unwrap_or_else(|| (stage.def, Origins::all(stage.file)));
            Resolved {
                file: stage.file,
                name: stage.name,
                def,
                origins,
            }
        })
        .collect();
    Ok(resolved)
}

/// `stage` with its `extends` chain applied, and where each key came from.
fn flatten(
    files: &[Source],
    stage: &Def,
    known: &HashMap<&str, &Def>,
    chain: &mut Vec<String>,
) -> Result<(Box<StageDef>, Origins), Diagnostic> {
    let Some(parent_name) = &stage.def.extends else {
        return Ok((stage.def.clone(), Origins::all(stage.file)));
    };
    let source = &files[stage.file];
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
    let (parent, parent_origins) = flatten(files, parent, known, chain)?;
    let (def, origins) = inherit(*stage.def.clone(), stage.file, *parent, parent_origins);
    Ok((Box::new(def), origins))
}

/// The child's keys over the parent's.
fn inherit(
    child: StageDef,
    child_file: FileId,
    parent: StageDef,
    parent_origins: Origins,
) -> (StageDef, Origins) {
    let mut origins = Origins::all(child_file);
    // A key the child gives is the child's, from the child's file; else the parent's.
    macro_rules! take {
        ($key:ident, $given:expr) => {
            if $given {
                child.$key
            } else {
                origins.$key = parent_origins.$key;
                parent.$key
            }
        };
        ($key:ident, $given:expr, untracked) => {
            if $given { child.$key } else { parent.$key }
        };
    }
    let def = StageDef {
        overrides: child.overrides,
        extends: None,
        needs: take!(needs, !child.needs.is_empty()),
        needs_optional: take!(needs_optional, !child.needs_optional.is_empty()),
        when: take!(when, child.when.is_some()),
        run: take!(run, child.run.is_some()),
        shell: take!(shell, child.shell.is_some()),
        inputs: take!(inputs, !child.inputs.is_empty()),
        outputs: take!(outputs, !child.outputs.is_empty()),
        env: take!(env, !child.env.0.is_empty()),
        pass_env: take!(pass_env, !child.pass_env.is_empty(), untracked),
        cache: take!(cache, child.cache.is_some(), untracked),
        workdir: take!(workdir, child.workdir.is_some()),
        outside_links: take!(outside_links, child.outside_links.is_some(), untracked),
        timeout: take!(timeout, child.timeout.is_some()),
        retry: take!(retry, child.retry.is_some()),
        archive: take!(archive, child.archive.is_some()),
        publish: take!(publish, !child.publish.is_empty()),
        requires: take!(requires, !child.requires.is_empty()),
        secrets: take!(secrets, !child.secrets.is_empty(), untracked),
        reports: take!(reports, child.reports.is_some()),
        matrix: take!(matrix, child.matrix.is_some()),
    };
    (def, origins)
}

#[cfg(test)]
mod tests {
    use crate::config;
    use crate::plan::Plan;
    use std::path::Path;

    fn plan(text: &str) -> Result<Plan, String> {
        let source =
            config::parse(Path::new("pipeline.yml"), text.to_owned()).map_err(|e| e.to_string())?;
        Plan::new(crate::include::Pipeline::single(source)).map_err(|e| e.to_string())
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
