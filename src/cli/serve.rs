//! `murphy serve`, `murphy events ...` and `murphy index rebuild`: parse, call, print.

use std::net::SocketAddr;

use super::show::print_json;
use super::{Cli, load_plan, pipeline_file, state_dir};
use crate::cli::error::{Error, exit};
use crate::serve::{HookSecrets, Options};

#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
    /// Where to listen; any address but loopback needs `MURPHY_SERVE_TOKEN`
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    bind: SocketAddr,
    #[command(flatten)]
    secrets: super::run::SecretsFile,
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum EventsCommand {
    /// The events webhooks brought, oldest first
    List {
        #[arg(long)]
        json: bool,
    },
    /// Check the log's hash chain; exit 1 naming the first edited, removed or moved entry
    Verify,
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum IndexCommand {
    /// Recreate the history index from the run records, the archive and the event log
    Rebuild,
}

pub(super) fn serve(cli: &Cli, args: &ServeArgs) -> Result<i32, Error> {
    let token = std::env::var(crate::serve::TOKEN_VARIABLE)
        .ok()
        .filter(|t| !t.is_empty());
    crate::serve::check_bind(args.bind, token.as_deref())?;
    if let Some(token) = &token {
        crate::secrets::mask(token);
    }
    let state = state_dir(cli)?;
    let plan = load_plan(cli, &pipeline_file(cli)?)?;
    let env = crate::environment::outer();
    let names = plan.webhooks.secret_names();
    let values = crate::secrets::load(&names, &env, &args.secrets.path(&state))?;
    let value = |name: &Option<String>| name.as_ref().and_then(|n| values.get(n)).cloned();
    let hooks = HookSecrets {
        github: value(&plan.webhooks.github_secret),
        gitlab: value(&plan.webhooks.gitlab_token),
        azure_devops: plan
            .webhooks
            .azure_devops
            .as_ref()
            .and_then(|(u, p)| Some((values.get(u)?.clone(), values.get(p)?.clone()))),
    };
    let archive = super::archive::for_plan(&plan);
    let remote = super::store::open(cli, plan.store.as_ref(), &env)?
        .map(|remote| crate::remote::runs::read_here(remote, &env));
    let options = Options {
        bind: args.bind,
        token,
        state,
        archive,
        hooks,
        remote,
    };
    // Pages read records on blocking threads while streams and webhooks go on.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| super::io_error("cannot start the server's runtime", e))?;
    runtime.block_on(crate::serve::serve(options, |addr| {
        // The one line a script waits for.
        println!("serving http://{addr}/");
    }))?;
    Ok(exit::SUCCESS)
}

pub(super) fn events(cli: &Cli, command: &EventsCommand) -> Result<i32, Error> {
    let state = state_dir(cli)?;
    let path = crate::events::path(state.root());
    match command {
        EventsCommand::List { json } => {
            let entries = crate::events::read(&path)?;
            if *json {
                print_json(&entries)?;
                return Ok(exit::SUCCESS);
            }
            let mut rows = vec![
                [
                    "SEQ", "AT", "PROVIDER", "KIND", "COMMIT", "REF", "STATUS", "TITLE",
                ]
                .map(str::to_owned),
            ];
            for e in &entries {
                let f = &e.fact;
                rows.push([
                    e.seq.to_string(),
                    e.at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                    f.provider.clone(),
                    f.kind.clone(),
                    f.commit
                        .as_deref()
                        .map(|c| c.get(..12).unwrap_or(c).to_owned())
                        .unwrap_or_else(|| "-".into()),
                    f.reference.clone().unwrap_or_else(|| "-".into()),
                    f.status.clone().unwrap_or_else(|| "-".into()),
                    f.title.clone().unwrap_or_default(),
                ]);
            }
            super::show::print_table(&rows);
            Ok(exit::SUCCESS)
        }
        EventsCommand::Verify => {
            let verified = crate::events::verify(&path)?;
            match verified.first_bad {
                None => {
                    println!(
                        "{}: {} entries, the chain holds",
                        path.display(),
                        verified.entries
                    );
                    Ok(exit::SUCCESS)
                }
                Some(bad) => {
                    let seq = bad.seq.map(|s| format!(" (seq {s})")).unwrap_or_default();
                    println!(
                        "{}:{}: entry{seq} is bad: {}; the {} entries before it hold",
                        path.display(),
                        bad.line,
                        bad.problem,
                        verified.entries
                    );
                    Ok(exit::FAILED)
                }
            }
        }
    }
}

pub(super) fn index(cli: &Cli, command: &IndexCommand) -> Result<i32, Error> {
    match command {
        IndexCommand::Rebuild => {
            let state = state_dir(cli)?;
            let builds = match pipeline_file(cli) {
                Ok(file) => super::archive::for_plan(&load_plan(cli, &file)?)
                    .map(|(archive, _)| archive.builds())
                    .transpose()?
                    .map(|b| b.into_iter().filter_map(|b| b.manifest.ok()).collect())
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let mut index = crate::index::Index::open(state.root())?;
            let (runs, builds, events) = index.rebuild(&state, &builds)?;
            println!(
                "rebuilt {}: {runs} runs, {builds} builds, {events} events",
                crate::index::path(state.root()).display()
            );
            Ok(exit::SUCCESS)
        }
    }
}
