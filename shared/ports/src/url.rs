//! Store URLs: where chain data lives, parsed in one place.
//!
//! - `s3://bucket` or `s3://bucket/prefix/` — an S3 (or S3-compatible) bucket and key prefix.
//! - `file:///absolute/path` — a folder on the local file system.
//!
//! Anything else is a [`StoreUrlError`] that says what was expected.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreUrl {
    S3 {
        bucket: String,
        /// Empty, or ends with `/`.
        prefix: String,
    },
    File {
        root: PathBuf,
    },
}

/// Why a store URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad store URL {url:?}: {reason} (expected s3://bucket[/prefix] or file:///absolute/path)")]
pub struct StoreUrlError {
    pub url: String,
    pub reason: &'static str,
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl, StoreUrlError> {
        let fail = |reason| StoreUrlError {
            url: url.to_owned(),
            reason,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket(bucket) {
                return Err(fail(
                    "the bucket name must be 3-63 characters of a-z, 0-9, '.' and '-'",
                ));
            }
            if prefix.split('/').any(|part| part == "." || part == "..") {
                return Err(fail("the prefix must not contain '.' or '..' segments"));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.contains("//") {
                return Err(fail("the prefix must not contain empty segments"));
            }
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_owned(),
                prefix,
            });
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(fail("a file URL needs an absolute path: file:///dir"));
            }
            if rest.contains(['?', '#']) || rest.contains('%') {
                return Err(fail(
                    "a file URL must be a plain path (no query, fragment or escapes)",
                ));
            }
            if rest.split('/').any(|part| part == "..") {
                return Err(fail("the path must not contain '..'"));
            }
            return Ok(StoreUrl::File {
                root: PathBuf::from(rest),
            });
        }
        Err(fail("unknown scheme"))
    }
}

fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && bucket
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<StoreUrl, StoreUrlError> {
        StoreUrl::parse(url)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StoreUrl::File { root } => write!(f, "file://{}", root.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(
            StoreUrl::parse("s3://chain-data"),
            Ok(StoreUrl::S3 {
                bucket: "chain-data".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            StoreUrl::parse("s3://chain-data/mainnet/geth/"),
            Ok(StoreUrl::S3 {
                bucket: "chain-data".into(),
                prefix: "mainnet/geth/".into()
            })
        );
        assert_eq!(
            StoreUrl::parse("s3://chain-data/mainnet")
                .map(|u| u.to_string())
                .ok(),
            Some("s3://chain-data/mainnet/".into())
        );
    }

    #[test]
    fn file_urls() {
        assert_eq!(
            StoreUrl::parse("file:///var/lib/nodefleet"),
            Ok(StoreUrl::File {
                root: "/var/lib/nodefleet".into()
            })
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("http://x/y", "unknown scheme"),
            ("s3://", "bucket"),
            ("s3://UPPER", "bucket"),
            ("s3://-dash", "bucket"),
            ("s3://ok-bucket/a/../b", ".."),
            ("s3://ok-bucket/a//b", "empty segments"),
            ("file://relative/path", "absolute"),
            ("file:///a/../b", ".."),
            ("file:///a%20b", "plain path"),
            ("/just/a/path", "unknown scheme"),
        ] {
            let error = StoreUrl::parse(url).expect_err(url);
            let message = error.to_string();
            assert!(message.contains(why), "{url}: {message}");
            assert!(message.contains("expected s3://"), "{message}");
        }
    }
}
