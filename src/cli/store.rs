//! `murphy store check`, and which shared store a command uses.

use std::collections::BTreeMap;

use super::{Cli, io_error, pipeline_file};
use crate::cli::error::{Error, exit};
use crate::remote::{Remote, StoreUrl};

#[derive(Debug, clap::Subcommand)]
pub(super) enum StoreCommand {
    /// Try every operation murphy needs (write, read, conditional create, delete) on the
    /// shared store, and say which failed; exit 1 if any did
    Check {
        #[arg(long)]
        json: bool,
    },
}

/// The shared store: `--store` (or `MURPHY_STORE`), else the pipeline's `store:`, else none.
/// `plan_store` is the pipeline's, for commands that loaded it.
pub(super) fn url(cli: &Cli, plan_store: Option<&StoreUrl>) -> Result<Option<StoreUrl>, Error> {
    match cli.store.as_deref() {
        Some("") => Ok(None),
        Some(text) => Ok(Some(StoreUrl::parse(text)?)),
        None => Ok(plan_store.cloned()),
    }
}

/// The shared store for a command that needs no pipeline: `--store`, else the `store:` of
/// the pipeline file if there is one.
pub(super) fn configured(cli: &Cli) -> Result<Option<StoreUrl>, Error> {
    if cli.store.is_some() {
        return url(cli, None);
    }
    match pipeline_file(cli) {
        Ok(file) => pipeline_store(&file),
        Err(_) => Ok(None),
    }
}

/// The `store:` of the pipeline file, from that file alone: it describes the project, so no
/// included file may set it, and nothing else of the pipeline need be planned (a view of the
/// records of a 20,000-stage pipeline must not plan it first).
fn pipeline_store(file: &std::path::Path) -> Result<Option<StoreUrl>, Error> {
    // A block mapping names its top-level keys at the start of a line: a file with no
    // `store:` there (and not one flow mapping) has none, and need not be parsed at all. One
    // that cannot be read is left to `load` to say so.
    if let Ok(text) = std::fs::read_to_string(file)
        && !text.trim_start().starts_with('{')
        && !text.lines().any(|l| l.starts_with("store:"))
    {
        return Ok(None);
    }
    let source = crate::config::load(file)?;
    let Some(text) = &source.pipeline.store else {
        return Ok(None);
    };
    StoreUrl::parse(&text.value).map(Some).map_err(|e| {
        Error::Config(crate::config::ConfigError::Invalid(vec![
            source.error(e.to_string(), crate::config::span_of(text)),
        ]))
    })
}

/// The shared store opened, if there is one.
pub(super) fn open(
    cli: &Cli,
    plan_store: Option<&StoreUrl>,
    env: &BTreeMap<String, String>,
) -> Result<Option<Remote>, Error> {
    match url(cli, plan_store)? {
        // The key from the environment only: these commands read no secrets file.
        Some(url) => {
            let key = env.get("MURPHY_STORE_KEY").map(String::as_str);
            if let Some(key) = key {
                crate::secrets::mask(key);
            }
            Ok(Some(Remote::open(&url, env)?.keyed(key)))
        }
        None => Ok(None),
    }
}

pub(super) fn store(cli: &Cli, command: &StoreCommand) -> Result<i32, Error> {
    let StoreCommand::Check { json } = command;
    // The pipeline is read only for its `store:`; `--store` alone needs no pipeline file.
    let store = match cli.store {
        Some(_) => url(cli, None)?,
        None => pipeline_store(&pipeline_file(cli)?)?,
    };
    let env = crate::environment::outer();
    let Some(remote) = open(cli, store.as_ref(), &env)? else {
        return Err(Error::Usage(
            "no shared store: set `store:` in the pipeline file, `--store URL` or MURPHY_STORE"
                .into(),
        ));
    };
    let results = crate::session::runtime()?.block_on(remote.check());
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if *json {
        let probes: Vec<_> = results
            .iter()
            .map(|(name, result)| {
                serde_json::json!({
                    "probe": name,
                    "ok": result.is_ok(),
                    "error": result.as_ref().err(),
                })
            })
            .collect();
        let out = serde_json::json!({"store": remote.url().as_str(), "probes": probes});
        println!(
            "{}",
            serde_json::to_string_pretty(&out)
                .map_err(|e| io_error("cannot render JSON", std::io::Error::other(e)))?
        );
    } else {
        println!("store {}", remote.url());
        for (name, result) in &results {
            match result {
                Ok(()) => println!("  ok      {name}"),
                Err(why) => println!("  FAILED  {name}: {why}"),
            }
        }
    }
    Ok(if failed == 0 {
        exit::SUCCESS
    } else {
        exit::FAILED
    })
}
