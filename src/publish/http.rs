//! The `http` target: PUT each file to a URL (an artifact server, an object store), HEAD first
//! to see whether it is there already.

use reqwest::StatusCode;

use super::{Confirmed, Failure, Item, Release, fill};
use crate::archive::bundle::sha256_reader;
use crate::plan::Target;

/// Headers servers use to say a stored file's SHA-256 in hex (Artifactory, Nexus, ...).
const CHECKSUM_HEADERS: &[&str] = &["x-checksum-sha256", "x-content-sha256"];

fn fields(target: &Target) -> (&str, Option<&str>) {
    match target {
        Target::Http {
            url, token_secret, ..
        } => (url, token_secret.as_deref()),
        _ => unreachable!("http functions are only called for http targets"),
    }
}

fn authorized(
    request: reqwest::RequestBuilder,
    token: Option<&str>,
    release: &Release<'_>,
) -> Result<reqwest::RequestBuilder, Failure> {
    Ok(match token {
        Some(name) => {
            let token = release.secret(name)?;
            crate::secrets::mask_bearer(token);
            request.bearer_auth(token)
        }
        None => request,
    })
}

/// Whether the URL already holds `item`: by a checksum header, else by reading it back.
async fn already(
    url: &str,
    token: Option<&str>,
    item: &Item,
    release: &Release<'_>,
) -> Result<Option<Confirmed>, Failure> {
    let head = authorized(release.client.head(url), token, release)?
        .send()
        .await
        .map_err(Failure::from_reqwest)?;
    let status = head.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(Failure::from_status(status, head.headers(), ""));
    }
    let stated = CHECKSUM_HEADERS.iter().find_map(|h| {
        head.headers()
            .get(*h)?
            .to_str()
            .ok()
            .map(str::to_ascii_lowercase)
    });
    let there = match stated {
        Some(digest) => digest,
        None => {
            let get = authorized(release.client.get(url), token, release)?
                .send()
                .await
                .map_err(Failure::from_reqwest)?;
            let bytes = get.bytes().await.map_err(Failure::from_reqwest)?;
            sha256_reader(&mut bytes.as_ref())
                .map_err(|e| Failure::fatal(e.to_string()))?
                .0
        }
    };
    if there == item.digest {
        Ok(Some(Confirmed::AlreadyPresent))
    } else {
        Err(Failure::fatal(format!(
            "{url} already holds other bytes (sha256 {there}, ours {}); a release never overwrites",
            item.digest
        )))
    }
}

pub async fn publish(
    target: &Target,
    item: &Item,
    release: &Release<'_>,
) -> Result<Confirmed, Failure> {
    let (template, token) = fields(target);
    let url = fill(template, release.name, release.version, item);
    if let Some(name) = token {
        super::warn_plain_http(&url, name);
    }
    if let Some(done) = already(&url, token, item, release).await? {
        return Ok(done);
    }
    let bytes = tokio::fs::read(&item.path)
        .await
        .map_err(|e| Failure::fatal(format!("cannot read `{}`: {e}", item.path.display())))?;
    let request = authorized(release.client.put(&url), token, release)?
        .header("x-checksum-sha256", &item.digest)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes);
    let response = super::upload(request).await?;
    let status = response.status();
    if status.is_success() {
        return Ok(Confirmed::Uploaded);
    }
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    Err(Failure::from_status(status, &headers, &body))
}

pub async fn preflight(target: &Target, release: &Release<'_>) -> Result<String, String> {
    let (template, token) = fields(target);
    // The server, without any path a placeholder would fill.
    let base = template.split('{').next().unwrap_or(template);
    if let Some(name) = token {
        release
            .secret(name)
            .map_err(|_| format!("secret `{name}` is not set"))?;
        super::warn_plain_http(base, name);
    }
    let response = release
        .client
        .head(base)
        .send()
        .await
        .map_err(|e| format!("{base} is unreachable: {}", crate::causes::line(&e)))?;
    if response.status().is_server_error() {
        return Err(format!("{base} answered {}", response.status()));
    }
    Ok(format!("{base} reachable"))
}
