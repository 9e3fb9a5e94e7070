//! `matrix:`: one stage run against several versions of its dependencies without copying it.
//! A stage with `matrix: {dep: ["3006", "3007"], python: ["3.10", "3.12"]}` becomes one
//! instance per combination, named `stage[dep=3006,python=3.10]`, each with the values as
//! `MATRIX_DEP`, `MATRIX_PYTHON`, and its own fingerprint, checkpoint and log. `exclude:`
//! leaves combinations out, `include:` adds them. `needs: [stage]` waits for every instance.

use std::collections::HashMap;

use crate::config::{Entries, MatrixDef, Scalar, Source, Spanned, span_of};
use crate::diagnostic::Diagnostic;
use crate::extends::Resolved;

/// The stages with every matrix expanded, and each matrix stage's instance names.
pub struct Expanded {
    pub defs: Vec<Resolved>,
    /// Group name to its instances, in order.
    pub groups: HashMap<String, Vec<String>>,
    /// Instance name to its values.
    pub values: HashMap<String, Vec<(String, String)>>,
}

pub fn expand(files: &[Source], defs: Vec<Resolved>) -> Result<Expanded, Vec<Diagnostic>> {
    if defs.iter().all(|d| d.def.matrix.is_none()) {
        // Nothing to expand: the stages stay where they are.
        return Ok(Expanded {
            defs,
            groups: HashMap::new(),
            values: HashMap::new(),
        });
    }
    let mut out = Expanded {
        defs: Vec::with_capacity(defs.len()),
        groups: HashMap::new(),
        values: HashMap::new(),
    };
    let mut errors = Vec::new();
    for mut stage in defs {
        let Some(matrix) = stage.def.matrix.take() else {
            out.defs.push(stage);
            continue;
        };
        let name = stage.name.clone();
        let at = (&files[stage.origins.matrix], &files[stage.file]);
        let combinations = match combinations(at, &name, &matrix) {
            Ok(c) => c,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        let mut instances = Vec::new();
        for combination in combinations {
            let label: Vec<String> = combination
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let instance = format!("{}[{}]", name.value, label.join(","));
            let mut copy = stage.clone();
            for (key, value) in &combination {
                let var = format!("MATRIX_{}", env_name(key));
                copy.def.env.0.retain(|(k, _)| k.value != var);
                copy.def
                    .env
                    .0
                    .push((respan(&name, var), Scalar(value.clone())));
            }
            instances.push(instance.clone());
            out.values.insert(instance.clone(), combination);
            copy.name = respan(&name, instance);
            out.defs.push(copy);
        }
        out.groups.insert(name.value.clone(), instances);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Every combination of the axes, in axis order, less `exclude`, plus `include`.
/// `at`: the files the matrix and the stage are written in.
fn combinations(
    (source, stage_source): (&Source, &Source),
    stage: &Spanned<String>,
    matrix: &MatrixDef,
) -> Result<Vec<Vec<(String, String)>>, Diagnostic> {
    let mut all: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (axis, values) in &matrix.axes {
        if values.is_empty() {
            return Err(source.error(
                format!("matrix axis `{}` has no values", axis.value),
                span_of(axis),
            ));
        }
        for value in values {
            if value.value.0.contains([',', ']', '[', '=', '/']) {
                return Err(source.error(
                    format!(
                        "matrix value `{}` holds one of `,=[]/`, which instance names use",
                        value.value.0
                    ),
                    span_of(value),
                ));
            }
        }
        all = all
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push((axis.value.clone(), v.value.0.clone()));
                    next
                })
            })
            .collect();
    }
    let pairs = |entries: &Entries<Scalar>| -> Vec<(String, String)> {
        entries
            .0
            .iter()
            .map(|(k, v)| (k.value.clone(), v.0.clone()))
            .collect()
    };
    for exclude in &matrix.exclude {
        let wanted = pairs(exclude);
        all.retain(|combination| !wanted.iter().all(|pair| combination.contains(pair)));
    }
    for include in &matrix.include {
        let extra = pairs(include);
        if !all.contains(&extra) {
            all.push(extra);
        }
    }
    all.retain(|c| !c.is_empty());
    if all.is_empty() {
        return Err(stage_source.error(
            format!(
                "the matrix of stage `{}` leaves no combination to run",
                stage.value
            ),
            span_of(stage),
        ));
    }
    Ok(all)
}

/// `python-version` is `PYTHON_VERSION`.
fn env_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn respan(at: &Spanned<String>, value: String) -> Spanned<String> {
    Spanned {
        value,
        referenced: at.referenced,
    }
}

/// Whether an instance's values match a selector like `dep=3006,*` (`*` allows the rest).
pub fn matches(values: &[(String, String)], selector: &str) -> bool {
    let mut wanted = Vec::new();
    let mut rest_allowed = false;
    for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, "*")) => wanted.push((k, None)),
            Some((k, v)) => wanted.push((k, Some(v))),
            None if part == "*" => rest_allowed = true,
            None => return false,
        }
    }
    let all_given = wanted.iter().all(|(k, v)| {
        values
            .iter()
            .any(|(vk, vv)| vk == k && v.is_none_or(|v| v == vv))
    });
    all_given && (rest_allowed || wanted.len() == values.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    use std::path::Path;

    fn plan(text: &str) -> Plan {
        let source = crate::config::parse(Path::new("pipeline.yml"), text.to_owned()).unwrap();
        Plan::new(crate::include::Pipeline::single(source)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn combinations_less_excludes_plus_includes() {
        let p = plan(
            "version: 1\nstages:\n  integration:\n    run: test\n    matrix:\n      dep: [\"3006\", \"3007\", \"git:main\"]\n      python: [\"3.10\", \"3.12\"]\n      exclude: [{dep: git:main, python: \"3.10\"}]\n      include: [{dep: \"3005\", python: \"3.8\"}]\n  report: {needs: [integration], run: report}\n",
        );
        let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "integration[dep=3006,python=3.10]",
                "integration[dep=3006,python=3.12]",
                "integration[dep=3007,python=3.10]",
                "integration[dep=3007,python=3.12]",
                "integration[dep=git:main,python=3.12]",
                "integration[dep=3005,python=3.8]",
                "report",
            ]
        );
        let first = &p.stages[0];
        assert!(
            first
                .env
                .contains(&("MATRIX_DEP".to_owned(), "3006".to_owned()))
        );
        assert!(
            first
                .env
                .contains(&("MATRIX_PYTHON".to_owned(), "3.10".to_owned()))
        );
        assert_eq!(
            p.stages[6].needs.len(),
            6,
            "needs: [integration] waits for every instance"
        );
    }

    #[test]
    fn selectors_pick_instances() {
        let values = vec![
            ("dep".to_owned(), "3006".to_owned()),
            ("python".to_owned(), "3.10".to_owned()),
        ];
        assert!(matches(&values, "dep=3006,*"));
        assert!(matches(&values, "dep=3006,python=3.10"));
        assert!(!matches(&values, "dep=3006"));
        assert!(!matches(&values, "dep=3007,*"));
        assert!(matches(&values, "*"));
    }
}
