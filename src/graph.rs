//! The pipeline's DAG drawn as text, Graphviz dot or Mermaid.

use std::fmt::Write;

use crate::plan::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per stage, in an order that runs, with what it needs.
    Text,
    /// Graphviz: `murphy graph --format dot | dot -Tsvg > pipeline.svg`.
    Dot,
    /// Mermaid, for Markdown that GitHub and GitLab render.
    Mermaid,
}

pub fn render(plan: &Plan, format: Format) -> String {
    let order = plan.topological_order();
    let mut out = String::new();
    match format {
        Format::Text => {
            let width = plan.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
            for id in order {
                let stage = &plan.stages[id];
                if stage.needs.is_empty() {
                    let _ = writeln!(out, "{}", stage.name);
                } else {
                    let needs: Vec<&str> = stage
                        .needs
                        .iter()
                        .map(|&n| plan.stages[n].name.as_str())
                        .collect();
                    let _ = writeln!(out, "{:width$}  <- {}", stage.name, needs.join(", "));
                }
            }
        }
        Format::Dot => {
            let _ = writeln!(out, "digraph {} {{", dot_quote(&plan.name));
            let _ = writeln!(out, "  rankdir=LR;");
            for id in &order {
                let _ = writeln!(out, "  {};", dot_quote(&plan.stages[*id].name));
            }
            for id in order {
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
        Format::Mermaid => {
            // Mermaid ids cannot hold `.` or `-` everywhere; number the nodes, label them.
            out.push_str("graph LR\n");
            for id in &order {
                let _ = writeln!(out, "  s{id}[\"{}\"]", plan.stages[*id].name);
            }
            for id in order {
                for &need in &plan.stages[id].needs {
                    let _ = writeln!(out, "  s{need} --> s{id}");
                }
            }
        }
    }
    out
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
        Plan::new(&source).unwrap()
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
}
