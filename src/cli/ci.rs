//! `murphy ci generate` and `murphy ci check`: the CI provider's file, written or compared.

use super::{Cli, load_plan, pipeline_file};
use crate::cli::error::{Error, exit};
use crate::workflow::{self, Check, Provider};

#[derive(Debug, clap::Subcommand)]
pub(super) enum CiCommand {
    /// Write `.github/workflows/murphy.yml` or `.gitlab-ci.yml`: one job per stage, with the
    /// pipeline's needs, matrices, `when:` conditions and secrets
    Generate {
        #[arg(value_enum)]
        provider: Provider,
        /// Replace a file murphy did not write
        #[arg(long)]
        force: bool,
    },
    /// Exit 1 when the generated file no longer matches what `ci generate` writes now
    /// [default: every provider's file that is there]
    Check {
        #[arg(value_enum)]
        provider: Option<Provider>,
    },
}

pub(super) fn ci(cli: &Cli, command: &CiCommand) -> Result<i32, Error> {
    let plan = load_plan(cli, &pipeline_file(cli)?)?;
    match command {
        CiCommand::Generate { provider, force } => {
            let generated = workflow::generate(&plan, *provider)?;
            for note in &generated.notes {
                crate::report::note(&format!("note: {note}"));
            }
            workflow::write(&generated, *force)?;
            println!("wrote {}", generated.path.display());
            Ok(exit::SUCCESS)
        }
        CiCommand::Check { provider } => {
            let providers: Vec<Provider> = match provider {
                Some(p) => vec![*p],
                None => Provider::ALL
                    .into_iter()
                    .filter(|p| plan.root.join(p.path()).exists())
                    .collect(),
            };
            if providers.is_empty() {
                return Err(Error::Usage(
                    "no generated CI file to check: write one with `murphy ci generate github|gitlab`".into(),
                ));
            }
            let mut code = exit::SUCCESS;
            for provider in providers {
                let generated = workflow::generate(&plan, provider)?;
                let path = generated.path.display();
                let again = format!("murphy ci generate {}", provider.name());
                match workflow::check(&generated)? {
                    Check::Matches => println!("{path} matches the pipeline"),
                    Check::Missing => {
                        eprintln!("error: there is no `{path}`: write it with `{again}`");
                        code = exit::FAILED;
                    }
                    Check::Foreign => {
                        eprintln!(
                            "error: `{path}` was not written by murphy: replace it with `{again} --force`"
                        );
                        code = exit::FAILED;
                    }
                    Check::Differs {
                        line,
                        expected,
                        found,
                    } => {
                        let show = |l: Option<String>| {
                            l.map_or("(the end of the file)".to_owned(), |l| {
                                format!("`{}`", l.trim())
                            })
                        };
                        eprintln!(
                            "error: `{path}` no longer matches the pipeline: line {line} is {}, and would be {}\nrun `{again}` to update it",
                            show(found),
                            show(expected)
                        );
                        code = exit::FAILED;
                    }
                }
            }
            Ok(code)
        }
    }
}
