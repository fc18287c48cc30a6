//! Request limits: body size, batch length, and the `eth_getLogs` block range.

use serde::Deserialize;

use crate::policy::PolicyError;

/// Default body cap. Large enough for a 100-item batch of `eth_call`s with calldata, small
/// enough that a flood of huge bodies cannot exhaust the gateway's memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// Hard ceiling for the body cap: Lambda rejects payloads over 6 MB, and API Gateway's
/// envelope plus base64 encoding of a body take some of that, so 5 MiB keeps a margin.
pub const MAX_BODY_BYTES_CEILING: usize = 5 * 1024 * 1024;
/// Default batch cap: what public providers commonly allow; a node answers a batch serially,
/// so longer batches mostly add tail latency for everybody behind the same node.
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 100;
/// Ceiling for the batch cap, bounding the work one request can ask of the fleet.
pub const MAX_BATCH_ITEMS_CEILING: usize = 10_000;
/// Default `eth_getLogs` range cap, in blocks: geth and most providers answer 5,000 blocks
/// of logs within seconds; open-ended ranges can scan the whole chain.
pub const DEFAULT_MAX_GET_LOGS_BLOCKS: u64 = 5_000;

/// Validated limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_items: usize,
    pub max_get_logs_blocks: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_items: DEFAULT_MAX_BATCH_ITEMS,
            max_get_logs_blocks: DEFAULT_MAX_GET_LOGS_BLOCKS,
        }
    }
}

/// The `[limits]` table of a policy file; absent keys keep their defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_body_bytes: Option<u64>,
    pub max_batch_items: Option<u64>,
    pub max_get_logs_blocks: Option<u64>,
}

impl Limits {
    pub(crate) fn from_file(file: &LimitsFile) -> Result<Limits, PolicyError> {
        let defaults = Limits::default();
        let check = |name, value: Option<u64>, default: u64, max: u64, range| match value {
            None => Ok(default),
            Some(v) if (1..=max).contains(&v) => Ok(v),
            Some(value) => Err(PolicyError::LimitOutOfRange { name, value, range }),
        };
        Ok(Limits {
            max_body_bytes: check(
                "max_body_bytes",
                file.max_body_bytes,
                defaults.max_body_bytes as u64,
                MAX_BODY_BYTES_CEILING as u64,
                "1..=5242880",
            )? as usize,
            max_batch_items: check(
                "max_batch_items",
                file.max_batch_items,
                defaults.max_batch_items as u64,
                MAX_BATCH_ITEMS_CEILING as u64,
                "1..=10000",
            )? as usize,
            max_get_logs_blocks: check(
                "max_get_logs_blocks",
                file.max_get_logs_blocks,
                defaults.max_get_logs_blocks,
                u64::MAX,
                "at least 1",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn limits_default_and_override() {
        assert_eq!(*Policy::default().limits(), Limits::default());
        let policy = Policy::from_toml(
            "[limits]\nmax_body_bytes = 1024\nmax_batch_items = 5\nmax_get_logs_blocks = 10",
        )
        .unwrap();
        assert_eq!(
            *policy.limits(),
            Limits {
                max_body_bytes: 1024,
                max_batch_items: 5,
                max_get_logs_blocks: 10
            }
        );
    }

    #[test]
    fn body_cap_stays_below_lambdas_payload_limit() {
        let err = Policy::from_toml("[limits]\nmax_body_bytes = 6000000").unwrap_err();
        assert!(err.to_string().contains("max_body_bytes"), "{err}");
    }
}
