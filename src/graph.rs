//! The pipeline's DAG drawn as text, Graphviz dot or Mermaid.

use std::fmt::Write;

use crate::plan::{Plan, StageId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per stage, in an order that runs, with what it needs.
    Text,
    /// Graphviz: `murphy graph --format dot | dot -Tsvg > pipeline.svg`.
    Dot,
    /// Mermaid, for Markdown that GitHub and GitLab render.
    Mermaid,
    /// `{"pipeline", "stages": [{"name", "needs", "origin"}]}`, stages in an order that runs.
    Json,
}

pub fn render(plan: &Plan, format: Format) -> String {
    let order = plan.topological_order();
    let origins = origins(plan);
    let mut out = String::new();
    match format {
        Format::Text => {
            let width = plan.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
            let lines: Vec<String> = order
                .iter()
                .map(|&id| {
                    let stage = &plan.stages[id];
                    let needs: Vec<&str> = stage
                        .needs
                        .iter()
                        .map(|&n| plan.stages[n].name.as_str())
                        .collect();
                    match needs.is_empty() {
                        true => stage.name.clone(),
                        false => format!("{:width$}  <- {}", stage.name, needs.join(", ")),
                    }
                })
                .collect();
            let line_width = lines.iter().map(String::len).max().unwrap_or(0);
            for (line, id) in lines.iter().zip(&order) {
                match &origins {
                    Some(origins) => {
                        let _ = writeln!(out, "{line:line_width$}  [{}]", origins[*id]);
                    }
                    None => {
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
        }
        Format::Dot => {
            let _ = writeln!(out, "digraph {} {{", dot_quote(&plan.name));
            let _ = writeln!(out, "  rankdir=LR;");
            for (i, (label, members)) in clusters(&order, origins.as_deref()).iter().enumerate() {
                let indent = match label {
                    Some(label) => {
                        let _ = writeln!(out, "  subgraph cluster_{i} {{");
                        let _ = writeln!(out, "    label={};", dot_quote(label));
                        "    "
                    }
                    None => "  ",
                };
                for id in members {
                    let _ = writeln!(out, "{indent}{};", dot_quote(&plan.stages[*id].name));
                }
                if label.is_some() {
                    let _ = writeln!(out, "  }}");
                }
            }
            for &id in &order {
                let stage = &plan.stages[id];
                for &need in &stage.needs {
                    let _ = writeln!(
                        out,
                        "  {} -> {};",
                        dot_quote(&plan.stages[need].name),
                        dot_quote(&stage.name)
                    );
                }
            }
            out.push_str("}\n");
        }
        Format::Json => {
            let stages: Vec<serde_json::Value> = order
                .iter()
                .map(|&id| {
                    let stage = &plan.stages[id];
                    let needs: Vec<&str> = (stage.needs.iter())
                        .map(|&n| plan.stages[n].name.as_str())
                        .collect();
                    serde_json::json!({
                        "name": stage.name,
                        "needs": needs,
                        "origin": origins.as_ref().map(|o| &o[id]),
                    })
                })
                .collect();
            let graph = serde_json::json!({"pipeline": plan.name, "stages": stages});
            let _ = writeln!(out, "{graph:#}");
        }
        Format::Mermaid => {
            // Mermaid ids cannot hold `.` or `-` everywhere; number the nodes, label them.
            out.push_str("graph LR\n");
            for (i, (label, members)) in clusters(&order, origins.as_deref()).iter().enumerate() {
                if let Some(label) = label {
                    let _ = writeln!(out, "  subgraph f{i}[\"{label}\"]");
                }
                for id in members {
                    let _ = writeln!(out, "  s{id}[\"{}\"]", plan.stages[*id].name);
                }
                if label.is_some() {
                    out.push_str("  end\n");
                }
            }
            for &id in &order {
                for &need in &plan.stages[id].needs {
                    let _ = writeln!(out, "  s{need} --> s{id}");
                }
            }
        }
    }
    out
}

/// Each stage's origin, when the plan has origins worth showing.
fn origins(plan: &Plan) -> Option<Vec<String>> {
    plan.has_origins()
        .then(|| plan.stages.iter().map(|s| s.origin()).collect())
}

/// The stages in `order`, grouped by origin in order of first appearance; one unlabelled
/// group when there are no origins to show.
fn clusters(order: &[StageId], origins: Option<&[String]>) -> Vec<(Option<String>, Vec<StageId>)> {
    let Some(origins) = origins else {
        return vec![(None, order.to_vec())];
    };
    let mut groups: Vec<(Option<String>, Vec<StageId>)> = Vec::new();
    for &id in order {
        let label = &origins[id];
        match groups.iter_mut().find(|(l, _)| l.as_ref() == Some(label)) {
            Some((_, members)) => members.push(id),
            None => groups.push((Some(label.clone()), vec![id])),
        }
    }
    groups
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn diamond() -> Plan {
        let text = "version: 1\nname: demo\nstages:\n  d: {needs: [b, c]}\n  b: {needs: [a]}\n  c: {needs: [a]}\n  a: {}\n";
        let source = crate::config::parse(Path::new("pipeline.yml"), text.into()).unwrap();
        Plan::new(crate::include::Pipeline::single(source)).unwrap()
    }

    #[test]
    fn text_lists_stages_in_run_order() {
        assert_eq!(
            render(&diamond(), Format::Text),
            "a\nb  <- a\nc  <- a\nd  <- b, c\n"
        );
    }

    #[test]
    fn dot_and_mermaid_have_every_edge() {
        let dot = render(&diamond(), Format::Dot);
        for edge in [
            "\"a\" -> \"b\"",
            "\"a\" -> \"c\"",
            "\"b\" -> \"d\"",
            "\"c\" -> \"d\"",
        ] {
            assert!(dot.contains(edge), "{dot}");
        }
        let mermaid = render(&diamond(), Format::Mermaid);
        assert_eq!(mermaid.matches("-->").count(), 4, "{mermaid}");
    }

    #[test]
    fn json_lists_stages_in_run_order_with_their_needs() {
        let json: serde_json::Value =
            serde_json::from_str(&render(&diamond(), Format::Json)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"pipeline": "demo", "stages": [
                {"name": "a", "needs": [], "origin": null},
                {"name": "b", "needs": ["a"], "origin": null},
                {"name": "c", "needs": ["a"], "origin": null},
                {"name": "d", "needs": ["b", "c"], "origin": null},
            ]})
        );
    }
}
