//! `needs` that go round in a loop: found by one depth-first walk, reported along the entry
//! that closes it.

use super::planner::Planner;
use super::{Stage, StageId};

impl Planner<'_> {
    /// Finds one cycle, if any, and reports it along the `needs` entry that closes it.
    pub(super) fn check_cycles(&mut self, stages: &[Stage]) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut marks = vec![Mark::New; stages.len()];
        for start in 0..stages.len() {
            if marks[start] != Mark::New {
                continue;
            }
            // Iterative DFS: (stage, index of the next need to visit).
            let mut path: Vec<(StageId, usize)> = vec![(start, 0)];
            marks[start] = Mark::OnPath;
            while let Some(&mut (node, ref mut next)) = path.last_mut() {
                if let Some(&need) = stages[node].needs.get(*next) {
                    *next += 1;
                    match marks[need] {
                        Mark::New => {
                            marks[need] = Mark::OnPath;
                            path.push((need, 0));
                        }
                        Mark::OnPath => {
                            let from = path.iter().position(|&(n, _)| n == need).unwrap_or(0);
                            let mut names: Vec<&str> = path[from..]
                                .iter()
                                .map(|&(n, _)| stages[n].name.as_str())
                                .collect();
                            names.push(&stages[need].name);
                            self.report_cycle(&names);
                            return;
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[node] = Mark::Done;
                    path.pop();
                }
            }
        }
    }

    pub(super) fn report_cycle(&mut self, names: &[&str]) {
        let chain = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(" -> ");
        let message = if names.len() == 2 {
            format!("stage `{}` needs itself", names[0])
        } else {
            format!("stages form a cycle: {chain}")
        };
        // Point at the need of the last stage on the path that closes the loop.
        let closing_stage = names[names.len() - 2];
        let closing_need = names[names.len() - 1];
        let defs = self.defs;
        let Some(stage) = defs.iter().find(|r| r.name.value == closing_stage) else {
            return;
        };
        let needs = stage.def.needs.iter().map(|n| (n, stage.origins.needs));
        let optional = (stage.def.needs_optional.iter()).map(|n| (n, stage.origins.needs_optional));
        match needs.chain(optional).find(|(n, _)| n.value == closing_need) {
            Some((need, file)) => {
                self.file = file;
                self.error(message, need)
            }
            None => {
                self.file = stage.file;
                self.error(message, &stage.name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::tests::plan_err;

    #[test]
    fn cycle_is_printed_in_order() {
        let err = plan_err(
            "version: 1\nstages:\n  a: {needs: [c]}\n  b: {needs: [a]}\n  c: {needs: [b]}\n",
        );
        assert!(
            err.starts_with("pipeline.yml:4:15: stages form a cycle: `a` -> `c` -> `b` -> `a`"),
            "{err}"
        );
    }

    #[test]
    fn self_need_is_a_cycle() {
        let err = plan_err("version: 1\nstages:\n  a: {needs: [a]}\n");
        assert!(
            err.starts_with("pipeline.yml:3:15: stage `a` needs itself"),
            "{err}"
        );
    }
}
