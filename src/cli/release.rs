//! `murphy release --dry-run`: what a tag run would publish, where, and which gates hold.

use super::{Cli, load_plan, pipeline_file, state_dir};
use crate::cli::error::{Error, exit};
use crate::release::{Preview, preview};

#[derive(Debug, clap::Args)]
pub(super) struct ReleaseArgs {
    /// Show what a tag run would do (a release itself is a tag run: push a tag, or
    /// `murphy run --trigger tag`)
    #[arg(long, required = true)]
    dry_run: bool,
    /// The tag to imagine [default: the release tag at HEAD]
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,
    /// The secrets file to check [default: secrets.yml in the state directory]
    #[arg(long = "secrets", env = "MURPHY_SECRETS_FILE", value_name = "FILE")]
    secrets: Option<std::path::PathBuf>,
    /// One JSON object: `{pipeline, tag, version, no_tag, dirty, stages: [{stage, skipped,
    /// gates, secrets, targets}], stops}`; the exit code is the same
    #[arg(long)]
    json: bool,
}

pub(super) fn release(cli: &Cli, args: &ReleaseArgs) -> Result<i32, Error> {
    let plan = load_plan(cli, &pipeline_file(cli)?)?;
    let state = state_dir(cli)?;
    let secrets_file = args
        .secrets
        .clone()
        .unwrap_or_else(|| state.root().join("secrets.yml"));
    let preview = preview(&plan, &state, args.tag.as_deref(), &secrets_file)?;
    if args.json {
        super::show::print_json(&preview)?;
    } else {
        print(&preview);
    }
    Ok(if preview.stops.is_empty() {
        exit::SUCCESS
    } else {
        exit::FAILED
    })
}

fn print(preview: &Preview) {
    if let Some(pattern) = &preview.no_tag {
        println!(
            "no release tag (`{pattern}`) at HEAD: showing a tag run with version `dev` (give --tag to imagine one)"
        );
    }
    println!(
        "a tag run of `{}`{}:",
        preview.pipeline,
        match (&preview.tag, &preview.version) {
            (Some(tag), Some(v)) => format!(" for {tag} (version {v})"),
            _ => String::new(),
        }
    );
    if let Some(why) = &preview.dirty {
        println!("\nthe working tree is not clean: {why}");
    }
    for stage in &preview.stages {
        if let Some(why) = &stage.skipped {
            println!("\nstage `{}` would not publish: {why}", stage.stage);
            continue;
        }
        println!("\nstage `{}` would publish:", stage.stage);
        for gate in &stage.gates {
            println!(
                "  gate: requires `{}`, which {}",
                gate.requires, gate.detail
            );
        }
        for secret in &stage.secrets {
            match &secret.error {
                None => println!("  secret `{}`: present", secret.name),
                Some(err) => println!("  secret `{}`: NOT usable: {err}", secret.name),
            }
        }
        for target in &stage.targets {
            println!("  {} -> {}", target.id, target.destination);
            if let Some(why) = &target.no_files {
                println!("    no files yet ({why}): the run makes them");
            }
            for file in &target.files {
                println!(
                    "    {} (sha256 {}){}",
                    file.name,
                    file.sha256.get(..16).unwrap_or(&file.sha256),
                    file.url
                        .as_deref()
                        .map(|u| format!(" -> {u}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    if preview.stages.is_empty() {
        println!("\nno stage publishes anything (add a `publish:` block to a stage)");
    }
    if !preview.stops.is_empty() {
        println!("\nthe release would stop:");
        for stop in &preview.stops {
            println!("  - {stop}");
        }
    }
}
