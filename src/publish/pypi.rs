//! The `pypi` target: the upload API twine uses (a multipart POST), and the simple index
//! (PEP 503) to see what is already there.

use reqwest::multipart::{Form, Part};
use reqwest::{RequestBuilder, StatusCode};

use super::{Confirmed, Failure, Item, Release};
use crate::plan::Target;

/// What a distribution's file name says: `name-1.0-py3-none-any.whl`, `name-1.0.tar.gz`.
struct Distribution {
    name: String,
    version: String,
    filetype: &'static str,
    pyversion: String,
}

fn parse_filename(file: &str) -> Result<Distribution, Failure> {
    if let Some(stem) = file.strip_suffix(".whl") {
        let parts: Vec<&str> = stem.split('-').collect();
        if parts.len() >= 5 {
            return Ok(Distribution {
                name: parts[0].to_owned(),
                version: parts[1].to_owned(),
                filetype: "bdist_wheel",
                pyversion: parts[parts.len() - 3].to_owned(),
            });
        }
    }
    for suffix in [".tar.gz", ".zip"] {
        if let Some((name, version)) = file.strip_suffix(suffix).and_then(|s| s.rsplit_once('-')) {
            return Ok(Distribution {
                name: name.to_owned(),
                version: version.to_owned(),
                filetype: "sdist",
                pyversion: "source".into(),
            });
        }
    }
    Err(Failure::fatal(format!(
        "`{file}` is not a wheel (`name-version-py-abi-platform.whl`) or an sdist (`name-version.tar.gz`)"
    )))
}

/// PEP 503: lower case, runs of `-`, `_` and `.` become one `-`.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn target_fields(target: &Target) -> (&str, &str, &str, &str) {
    match target {
        Target::Pypi {
            repository_url,
            index_url,
            username,
            password_secret,
            ..
        } => (repository_url, index_url, username, password_secret),
        _ => unreachable!("pypi functions are only called for pypi targets"),
    }
}

/// `request` with a Basic login, whose header value is masked first: the password is masked
/// already, but a server echoing the header shows only its base64.
fn login(request: RequestBuilder, username: &str, password: &str) -> RequestBuilder {
    crate::secrets::mask_basic_auth(username, password);
    request.basic_auth(username, Some(password))
}

/// The sha256 the index lists for `file`, if it lists the file at all.
async fn listed(
    target: &Target,
    project: &str,
    file: &str,
    release: &Release<'_>,
) -> Result<Option<String>, Failure> {
    let (_, index_url, username, password_secret) = target_fields(target);
    super::warn_plain_http(index_url, password_secret);
    let url = format!(
        "{}/{}/",
        index_url.trim_end_matches('/'),
        normalize(project)
    );
    // A private index wants the same login to read as to upload.
    let response = login(
        release.client.get(&url),
        username,
        release.secret(password_secret)?,
    )
    .send()
    .await
    .map_err(Failure::from_reqwest)?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let headers = response.headers().clone();
    let body = response.text().await.map_err(Failure::from_reqwest)?;
    if !status.is_success() {
        return Err(Failure::from_status(status, &headers, &body));
    }
    Ok(sha256_in_index(&body, file))
}

/// Finds `<a href="...#sha256=HEX">file</a>` in a simple index page.
fn sha256_in_index(html: &str, file: &str) -> Option<String> {
    for anchor in html.split("<a ").skip(1) {
        let Some((attributes, rest)) = anchor.split_once('>') else {
            continue;
        };
        let text = rest.split("</a>").next().unwrap_or_default().trim();
        let href = attributes
            .split("href=\"")
            .nth(1)
            .and_then(|h| h.split('"').next())
            .unwrap_or_default();
        let named = href
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .split('#')
            .next()
            == Some(file);
        if text == file || named {
            return Some(
                href.split("#sha256=")
                    .nth(1)
                    .map(|h| h.chars().take_while(char::is_ascii_hexdigit).collect())
                    .unwrap_or_default(),
            );
        }
    }
    None
}

/// Whether the index has `item` already: the same bytes confirm it, other bytes refuse.
async fn already(
    target: &Target,
    item: &Item,
    dist: &Distribution,
    file: &str,
    release: &Release<'_>,
) -> Result<Option<Confirmed>, Failure> {
    match listed(target, &dist.name, file, release).await? {
        None => Ok(None),
        Some(digest) if digest == item.digest => Ok(Some(Confirmed::AlreadyPresent)),
        Some(digest) if digest.is_empty() => Err(Failure::fatal(format!(
            "`{file}` is already on the index, which does not say its sha256; not overwriting it"
        ))),
        Some(digest) => Err(Failure::fatal(format!(
            "`{file}` is already on the index with other bytes (sha256 {digest}, ours {}); a release never overwrites",
            item.digest
        ))),
    }
}

pub async fn publish(
    target: &Target,
    item: &Item,
    release: &Release<'_>,
) -> Result<Confirmed, Failure> {
    let (repository_url, _, username, password_secret) = target_fields(target);
    let file = item
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| item.name.clone());
    let dist = parse_filename(&file)?;
    super::warn_plain_http(repository_url, password_secret);
    if let Some(done) = already(target, item, &dist, &file, release).await? {
        return Ok(done);
    }
    let bytes = tokio::fs::read(&item.path)
        .await
        .map_err(|e| Failure::fatal(format!("cannot read `{}`: {e}", item.path.display())))?;
    let form = Form::new()
        .text(":action", "file_upload")
        .text("protocol_version", "1")
        .text("metadata_version", "2.1")
        .text("name", dist.name.clone())
        .text("version", dist.version.clone())
        .text("filetype", dist.filetype)
        .text("pyversion", dist.pyversion.clone())
        .text("sha256_digest", item.digest.clone())
        .part("content", Part::bytes(bytes).file_name(file.clone()));
    let request = login(
        release.client.post(repository_url),
        username,
        release.secret(password_secret)?,
    )
    .multipart(form);
    let response = super::upload(request).await?;
    let status = response.status();
    if status.is_success() {
        return Ok(Confirmed::Uploaded);
    }
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    // PyPI answers 400 "File already exists", pypiserver 409: maybe an upload that timed out
    // on our side but landed. The index says whether it is ours.
    if status == StatusCode::CONFLICT
        || (status == StatusCode::BAD_REQUEST && body.to_lowercase().contains("already exist"))
    {
        return match already(target, item, &dist, &file, release).await? {
            Some(done) => Ok(done),
            None => Err(Failure::from_status(status, &headers, &body)),
        };
    }
    Err(Failure::from_status(status, &headers, &body))
}

pub async fn preflight(target: &Target, release: &Release<'_>) -> Result<String, String> {
    let (repository_url, index_url, username, password_secret) = target_fields(target);
    super::warn_plain_http(index_url, password_secret);
    super::warn_plain_http(repository_url, password_secret);
    let password = release
        .secret(password_secret)
        .map_err(|_| format!("secret `{password_secret}` is not set"))?;
    let index = login(release.client.get(index_url), username, password)
        .send()
        .await
        .map_err(|e| {
            format!(
                "the index {index_url} is unreachable: {}",
                crate::causes::line(&e)
            )
        })?;
    let status = index.status();
    if status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
    {
        return Err(format!(
            "the index {index_url} answered {status}: murphy must read it to see what is already published"
        ));
    }
    // An upload without a file: the server checks credentials first, and creates nothing.
    let probe = Form::new()
        .text(":action", "file_upload")
        .text("name", "murphy-credentials-check")
        .text("version", "0");
    let answer = login(release.client.post(repository_url), username, password)
        .multipart(probe)
        .send()
        .await
        .map_err(|e| {
            format!(
                "{repository_url} is unreachable: {}",
                crate::causes::line(&e)
            )
        })?;
    match answer.status() {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(format!(
            "{repository_url} refused the credentials in `{password_secret}` ({})",
            answer.status()
        )),
        s if s.is_server_error() => Err(format!("{repository_url} answered {s}")),
        _ => Ok(format!("{repository_url} reachable, credentials accepted")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_say_name_and_version() {
        let wheel = parse_filename("murphy_demo-1.2.0rc1-py3-none-any.whl")
            .ok()
            .unwrap();
        assert_eq!(
            (wheel.name.as_str(), wheel.version.as_str(), wheel.filetype),
            ("murphy_demo", "1.2.0rc1", "bdist_wheel")
        );
        let sdist = parse_filename("murphy-demo-1.2.0.tar.gz").ok().unwrap();
        assert_eq!(
            (sdist.name.as_str(), sdist.version.as_str()),
            ("murphy-demo", "1.2.0")
        );
        assert!(parse_filename("notes.txt").is_err());
        assert_eq!(normalize("Murphy__Demo.x"), "murphy-demo-x");
    }

    #[test]
    fn the_index_says_which_bytes_it_has() {
        let html =
            r#"<a href="/packages/demo-1.0.0.tar.gz#sha256=5891b5b5">demo-1.0.0.tar.gz</a><br>"#;
        assert_eq!(
            sha256_in_index(html, "demo-1.0.0.tar.gz").as_deref(),
            Some("5891b5b5")
        );
        assert_eq!(sha256_in_index(html, "demo-2.0.0.tar.gz"), None);
    }
}
