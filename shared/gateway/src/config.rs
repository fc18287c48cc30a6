//! Gateway settings from the environment (Lambda) or a policy file path (CLI).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `UPSTREAM_URL` | where allowed calls go: the internal NLB, `http://host:8545` | required |
//! | `POLICY_FILE` | path of a TOML policy file | none: the built-in policy |
//! | `POLICY_TOML` | the policy itself, inline (wins over `POLICY_FILE`) | none |
//! | `UPSTREAM_TIMEOUT_MS` | upstream timeout in milliseconds, at most 28000 | 20000 |

use std::path::Path;
use std::time::Duration;

use nodefleet_gateway_core::{Policy, PolicyError};

use crate::upstream::{HttpUpstream, HttpUpstreamConfig, MAX_TIMEOUT, UpstreamUrlError};

/// A setting that cannot be used; the message says which and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("cannot read policy file {path}: {source}")]
    PolicyUnreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("policy {origin}: {source}")]
    PolicyInvalid { origin: String, source: PolicyError },
    #[error("UPSTREAM_TIMEOUT_MS={0:?} must be a whole number of milliseconds from 1 to 28000")]
    BadTimeout(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamUrlError),
}

/// Reads and validates a policy file.
pub fn load_policy_file(path: &Path) -> Result<Policy, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::PolicyUnreadable {
        path: path.display().to_string(),
        source,
    })?;
    Policy::from_toml(&text).map_err(|source| ConfigError::PolicyInvalid {
        origin: format!("file {}", path.display()),
        source,
    })
}

/// Everything the Lambda needs, read once at init.
#[derive(Debug)]
pub struct GatewayConfig {
    pub policy: Policy,
    pub upstream: HttpUpstream,
}

impl GatewayConfig {
    /// Reads the settings through `var` (in production `std::env::var(..).ok()`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<GatewayConfig, ConfigError> {
        let url = var("UPSTREAM_URL").ok_or(ConfigError::Missing("UPSTREAM_URL"))?;
        let policy = match (var("POLICY_TOML"), var("POLICY_FILE")) {
            (Some(text), _) => {
                Policy::from_toml(&text).map_err(|source| ConfigError::PolicyInvalid {
                    origin: "POLICY_TOML".to_owned(),
                    source,
                })?
            }
            (None, Some(path)) => load_policy_file(Path::new(&path))?,
            (None, None) => Policy::default(),
        };
        let mut upstream_config = HttpUpstreamConfig::default();
        if let Some(ms) = var("UPSTREAM_TIMEOUT_MS") {
            upstream_config.timeout = parse_timeout(&ms).ok_or(ConfigError::BadTimeout(ms))?;
        }
        let upstream = HttpUpstream::new(&url, upstream_config)?;
        Ok(GatewayConfig { policy, upstream })
    }
}

fn parse_timeout(ms: &str) -> Option<Duration> {
    let ms: u64 = ms.trim().parse().ok()?;
    let timeout = Duration::from_millis(ms);
    (ms > 0 && timeout <= MAX_TIMEOUT).then_some(timeout)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        GatewayConfig::from_env(|k| vars.get(k).cloned())
    }

    #[test]
    fn upstream_url_is_required_and_checked() {
        assert_eq!(
            from(&[]).unwrap_err().to_string(),
            "UPSTREAM_URL is not set"
        );
        assert!(
            from(&[("UPSTREAM_URL", "https://x")])
                .unwrap_err()
                .to_string()
                .contains("http://")
        );
        assert!(from(&[("UPSTREAM_URL", "http://10.0.0.1:8545")]).is_ok());
    }

    #[test]
    fn inline_policy_and_timeout() {
        let config = from(&[
            ("UPSTREAM_URL", "http://10.0.0.1:8545"),
            ("POLICY_TOML", "allow = [\"trace_*\"]"),
            ("UPSTREAM_TIMEOUT_MS", "5000"),
        ])
        .unwrap();
        assert_eq!(
            config.policy.verdict("trace_block"),
            nodefleet_gateway_core::Verdict::Allow
        );
        for bad in ["0", "29000", "fast", "-1"] {
            let err =
                from(&[("UPSTREAM_URL", "http://h:1"), ("UPSTREAM_TIMEOUT_MS", bad)]).unwrap_err();
            assert!(matches!(err, ConfigError::BadTimeout(_)), "{bad}");
        }
        let err = from(&[
            ("UPSTREAM_URL", "http://h:1"),
            ("POLICY_TOML", "allow = [\"admin_*\"]"),
        ])
        .unwrap_err();
        assert!(err.to_string().starts_with("policy POLICY_TOML: "), "{err}");
    }

    #[test]
    fn an_unreadable_policy_file_names_the_path() {
        let err = from(&[
            ("UPSTREAM_URL", "http://h:1"),
            ("POLICY_FILE", "/nonexistent/policy.toml"),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read policy file /nonexistent/policy.toml: "),
            "{err}"
        );
    }
}
