//! Release versions read from tags: `v1.2.0` is 1.2.0; `v1.2.0-rc.1` (semver) and `v1.2.0rc1`,
//! `v2.0.0b2`, `v1.0.dev3` (PEP 440) are pre-releases. Hand-written because neither the
//! `semver` nor a PEP 440 crate alone reads both families that projects tag with.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The version as written in the tag, without the leading `v`.
    pub text: String,
    pub prerelease: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tag `{0}` is not a version: expected forms like `v1.2.0`, `v1.2.0-rc.1` (semver) or `v1.2.0rc1` (PEP 440)"
)]
pub struct VersionError(pub String);

/// Reads the version a release tag names. `prefix` is the literal start of the release tag
/// pattern (`release-` for `release-*`), taken off first; then a leading `v`.
pub fn from_tag(tag: &str, prefix: &str) -> Result<Version, VersionError> {
    let text = tag.strip_prefix(prefix).unwrap_or(tag);
    let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
    let parsed = parse(text).ok_or_else(|| VersionError(tag.to_owned()))?;
    Ok(Version {
        text: text.to_owned(),
        prerelease: parsed.prerelease,
    })
}

struct Parsed {
    release: Vec<u64>,
    prerelease: bool,
}

fn parse(text: &str) -> Option<Parsed> {
    // Build metadata (semver) or a local version (PEP 440) says nothing about pre-release.
    let (core, local) = match text.split_once('+') {
        Some((core, local)) => (core, Some(local)),
        None => (text, None),
    };
    if local.is_some_and(|l| {
        l.is_empty()
            || !l
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    }) {
        return None;
    }
    let mut release = Vec::new();
    let mut rest = core;
    loop {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        release.push(rest[..digits].parse().ok()?);
        rest = &rest[digits..];
        match rest.strip_prefix('.') {
            Some(next) if next.starts_with(|c: char| c.is_ascii_digit()) => rest = next,
            _ => break,
        }
    }
    let prerelease = suffix_is_prerelease(rest)?;
    Some(Parsed {
        release,
        prerelease,
    })
}

/// `Some(true)` for a pre-release suffix, `Some(false)` for none or a post-release, `None`
/// for anything that is no version.
fn suffix_is_prerelease(rest: &str) -> Option<bool> {
    if rest.is_empty() {
        return Some(false);
    }
    // PEP 440 post-releases (`.post1`, `-1`) are final releases.
    let lower = rest.to_ascii_lowercase();
    if let Some(post) = lower
        .strip_prefix(".post")
        .or_else(|| lower.strip_prefix("-post"))
        .or_else(|| lower.strip_prefix("post"))
        .or_else(|| {
            lower
                .strip_prefix('-')
                .filter(|n| !n.is_empty() && all_digits(n))
        })
    {
        return match post.split_once(".dev") {
            Some((n, dev)) => all_digits(n)
                .then(|| all_digits(dev))
                .filter(|ok| *ok)
                .map(|_| true),
            None => all_digits(post).then_some(false),
        };
    }
    // semver: `-` and dot-separated identifiers.
    if let Some(pre) = rest.strip_prefix('-')
        && !pre.is_empty()
        && pre
            .split('.')
            .all(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        return Some(true);
    }
    // PEP 440: an optional separator, a pre-release label and number, or `.devN`.
    let body = lower.trim_start_matches(['.', '-', '_']);
    for label in [
        "alpha", "beta", "preview", "pre", "rc", "a", "b", "c", "dev",
    ] {
        if let Some(n) = body.strip_prefix(label) {
            let n = n.trim_start_matches(['.', '-', '_']);
            let (n, tail) = n
                .split_once(".dev")
                .map_or((n, None), |(n, d)| (n, Some(d)));
            if all_digits(n) && tail.is_none_or(all_digits) {
                return Some(true);
            }
        }
    }
    None
}

fn all_digits(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_digit())
}

/// Orders two tags by version where both are versions (`v1.10.0` after `v1.9.0`), else by
/// name; for choosing among several tags on one commit.
pub fn compare_tags(a: &str, b: &str) -> Ordering {
    // Whatever comes before the first digit is the tag's prefix (`v`, `release-`).
    let key = |t: &str| {
        let text = t.trim_start_matches(|c: char| !c.is_ascii_digit());
        parse(text).map(|p| (p.release, !p.prerelease))
    };
    match (key(a), key(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_prereleases_from_tags() {
        let cases = [
            ("v1.2.0", "1.2.0", false),
            ("1.2.0", "1.2.0", false),
            ("v1.2.0rc1", "1.2.0rc1", true),
            ("v1.2.0-rc.1", "1.2.0-rc.1", true),
            ("v2.0.0b2", "2.0.0b2", true),
            ("v2.0.0a1", "2.0.0a1", true),
            ("v1.0.dev3", "1.0.dev3", true),
            ("v1.0.0.post1", "1.0.0.post1", false),
            ("v1.0.0+build.5", "1.0.0+build.5", false),
            ("v1.0.0-alpha.1+sha.abc", "1.0.0-alpha.1+sha.abc", true),
            ("v3.1", "3.1", false),
            ("v1.2.0.rc.2", "1.2.0.rc.2", true),
        ];
        for (tag, text, pre) in cases {
            let v = from_tag(tag, "v").unwrap_or_else(|e| panic!("{tag}: {e}"));
            assert_eq!((v.text.as_str(), v.prerelease), (text, pre), "{tag}");
        }
    }

    #[test]
    fn non_versions_are_refused_with_the_tag_named() {
        for tag in [
            "vfoo",
            "v",
            "v1.2.x",
            "release-1",
            "v1..2",
            "v1.2.0-",
            "v1.2.0+",
            "v1.2.0rcx",
        ] {
            let err = from_tag(tag, "v").expect_err(tag);
            assert!(err.to_string().contains(&format!("`{tag}`")), "{err}");
        }
    }

    #[test]
    fn a_custom_prefix_is_taken_off() {
        let v = from_tag("release-1.2.0", "release-").unwrap();
        assert_eq!((v.text.as_str(), v.prerelease), ("1.2.0", false));
    }

    #[test]
    fn tags_order_by_version() {
        assert_eq!(compare_tags("v1.10.0", "v1.9.0"), Ordering::Greater);
        assert_eq!(compare_tags("v2.0.0rc1", "v2.0.0"), Ordering::Less);
    }
}
