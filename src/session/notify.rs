//! How a run tells the `notify:` targets, and `murphy outbox flush`: the local outbox first,
//! then, with a shared store, the shared one.

use std::path::Path;
use std::time::Duration;

use super::{SessionError, http_error, io_error, runtime};
use crate::environment;
use crate::executor::Context;
use crate::outbox::Delivery;
use crate::plan::Plan;
use crate::records::{RunView, StateDir};
use crate::remote::{Remote, StoreUrl};

/// Tries to deliver every notification waiting in the outbox of `state`: how many went, and
/// each one still waiting with why.
pub fn flush_outbox(
    plan: &Plan,
    state: &StateDir,
    secrets_file: &Path,
    store: Option<&StoreUrl>,
) -> Result<(usize, Vec<(String, String)>), SessionError> {
    let env = environment::outer();
    // Only the secrets the notifications name: a cron job that delivers them must not
    // need the release's tokens.
    let names: Vec<String> = plan
        .notify
        .iter()
        .filter_map(|n| match (&n.url, &n.issue) {
            (_, Some(issue)) => Some(issue.token_secret.clone()),
            (crate::plan::UrlSource::Secret(name), None) => Some(name.clone()),
            (crate::plan::UrlSource::Literal(_), None) => None,
        })
        .collect();
    let secrets = crate::secrets::load(&names, &env, secrets_file)?;
    let client = crate::publish::client(Duration::from_secs(30)).map_err(http_error)?;
    let outbox = crate::outbox::Outbox::new(state.root());
    let remote = store.map(|url| Remote::open(url, &env)).transpose()?;
    let how = Delivery {
        notify: &plan.notify,
        secrets: &secrets,
        client: &client,
        tries: 3,
    };
    runtime()?.block_on(async {
        let (mut delivered, mut waiting) = outbox
            .flush(&how)
            .await
            .map_err(|e| io_error("cannot read the outbox", e))?;
        if let Some(remote) = &remote {
            let holder = crate::remote::holder("outbox flush");
            let shared = crate::remote::outbox::flush(remote, &outbox, &holder, &how).await?;
            if let Some(holder) = shared.busy {
                crate::report::note(&format!(
                    "note: the shared outbox is being delivered by {holder}"
                ));
            }
            // What waited here went to the shared outbox: it now waits there, if anywhere.
            delivered += shared.delivered;
            waiting = shared.waiting;
        }
        Ok((delivered, waiting))
    })
}

/// Tells the `notify:` targets how the run went. Each message goes to the outbox before it is
/// sent, so one the receiver did not take waits for the next run or `murphy outbox flush`;
/// a notification never changes how the run ended.
pub(super) async fn notify(ctx: &Context, state: &StateDir) {
    if ctx.plan.notify.is_empty() {
        return;
    }
    let view = match RunView::load(state, &ctx.run) {
        Ok(view) => view,
        Err(err) => {
            tracing::warn!(
                "cannot read the run back to notify: {}",
                crate::causes::line(&err)
            );
            return;
        }
    };
    let outbox = crate::outbox::Outbox::new(state.root());
    for message in crate::outbox::messages(&view, &ctx.plan.notify) {
        if let Err(err) = outbox.put(&message) {
            tracing::warn!(
                "cannot write notification {} to the outbox: {err}",
                message.id
            );
        }
    }
    let client = match ctx.client() {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!("the notifications wait in the outbox: {err}");
            return;
        }
    };
    let how = Delivery {
        notify: &ctx.plan.notify,
        secrets: &ctx.secrets,
        client,
        tries: 2,
    };
    let flushed = outbox.flush(&how).await;
    let Some(remote) = &ctx.remote else {
        match flushed {
            Ok((delivered, waiting)) => report_notified(ctx, delivered, &waiting, "the outbox"),
            Err(err) => tracing::warn!("cannot read the outbox: {err}"),
        }
        return;
    };
    // What the receivers did not take goes to the shared outbox, which outlives this machine.
    let delivered = flushed.map_or(0, |(delivered, _)| delivered);
    let holder = crate::remote::holder(&ctx.run.id);
    let shared = crate::remote::outbox::flush(remote, &outbox, &holder, &how).await;
    match shared {
        Ok(shared) => report_notified(
            ctx,
            delivered + shared.delivered,
            &shared.waiting,
            "the shared outbox",
        ),
        Err(err) => {
            report_notified(ctx, delivered, &[], "the outbox");
            tracing::warn!(
                "cannot hand notifications to the shared outbox: {}; they wait in this machine's",
                crate::causes::line(&err)
            );
        }
    }
}

fn report_notified(ctx: &Context, delivered: usize, waiting: &[(String, String)], place: &str) {
    if delivered > 0 {
        ctx.reporter
            .note(&format!("sent {delivered} notification(s)"));
    }
    for (id, why) in waiting {
        ctx.reporter.note(&format!(
            "notification {id} is waiting in {place} ({why}); `murphy outbox flush` retries it"
        ));
    }
}
