//! The method policy: which JSON-RPC methods reach a node.
//!
//! Deny by default. A method is decided in this order, first match wins:
//!
//! 1. the operator's `deny` list: denied;
//! 2. a never-exposed method ([`NEVER_EXPOSED`]): allowed only when the operator lists it
//!    under `unsafe_allow` (or, for `debug_trace*`, enables the `trace` tier); denied otherwise,
//!    whatever `allow` says;
//! 3. `eth_accounts`: answered by the gateway itself with `[]`;
//! 4. the default allowlist ([`DEFAULT_ALLOW`]), the operator's `allow` list, or an enabled
//!    tier ([`Tier`]): allowed;
//! 5. anything else: denied.
//!
//! Names match exactly: case-sensitive, no trimming. A pattern is an exact name or a
//! namespace glob, a prefix followed by one trailing `*` (`trace_*`, `eth_get*`).
//!
//! The operator's file is TOML ([`PolicyFile`]); mistakes in it (unknown keys, malformed
//! patterns, an `allow` entry that can only name never-exposed methods) are load errors, so a
//! typo never silently opens or closes a method.

use std::collections::HashSet;

use serde::Deserialize;

use crate::limits::{Limits, LimitsFile};

/// Methods allowed without any operator configuration: reads, fee data, and raw transaction
/// submission. Stateless, so they work behind a load balancer.
pub const DEFAULT_ALLOW: &[&str] = &[
    "web3_clientVersion",
    "web3_sha3",
    "net_version",
    "net_listening",
    "eth_chainId",
    "eth_blockNumber",
    "eth_syncing",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
    "eth_feeHistory",
    "eth_blobBaseFee",
    "eth_getBalance",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_getTransactionCount",
    "eth_getProof",
    "eth_call",
    "eth_estimateGas",
    "eth_createAccessList",
    "eth_getBlockByHash",
    "eth_getBlockByNumber",
    "eth_getBlockTransactionCountByHash",
    "eth_getBlockTransactionCountByNumber",
    "eth_getUncleCountByBlockHash",
    "eth_getUncleCountByBlockNumber",
    "eth_getUncleByBlockHashAndIndex",
    "eth_getUncleByBlockNumberAndIndex",
    "eth_getTransactionByHash",
    "eth_getTransactionByBlockHashAndIndex",
    "eth_getTransactionByBlockNumberAndIndex",
    "eth_getTransactionReceipt",
    "eth_getBlockReceipts",
    "eth_getLogs",
    "eth_sendRawTransaction",
];

/// Methods that administer, sign with, or reach into a node. They are never exposed unless
/// named under `unsafe_allow`: a public endpoint that lets callers unlock accounts, change
/// peers or drive the consensus engine is a compromised node.
pub const NEVER_EXPOSED: &[&str] = &[
    "admin_*",
    "debug_*",
    "personal_*",
    "miner_*",
    "engine_*",
    "txpool_*",
    "clique_*",
    "db_*",
    "les_*",
    "shh_*",
    "testing_*",
    "rpc_modules",
    "eth_sign*",
    "eth_sendTransaction",
];

/// Answered by the gateway with an empty list: a shared endpoint holds no accounts.
pub const LOCAL_ACCOUNTS_METHOD: &str = "eth_accounts";

/// Opt-in groups of methods that are off by default for a stated reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// `trace_*` and `debug_trace*`: expensive, and only some clients serve them.
    Trace,
    /// Filter methods keep state on one node, so they break behind a balancer unless the
    /// operator runs a single node or sticky routing.
    Filters,
}

impl Tier {
    fn patterns(self) -> &'static [&'static str] {
        match self {
            Tier::Trace => &["trace_*", "debug_trace*"],
            Tier::Filters => &[
                "eth_newFilter",
                "eth_newBlockFilter",
                "eth_newPendingTransactionFilter",
                "eth_getFilterChanges",
                "eth_getFilterLogs",
                "eth_uninstallFilter",
            ],
        }
    }
}

/// The operator's policy file, as written in TOML.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Patterns allowed in addition to the defaults.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Patterns denied even when allowed by default, by `allow`, or by a tier.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Never-exposed methods the operator enables knowingly.
    #[serde(default)]
    pub unsafe_allow: Vec<String>,
    /// Opt-in tiers.
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsFile,
}

/// A mistake in a policy file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy file is not valid TOML for a policy: {0}")]
    Toml(String),
    #[error(
        "pattern {0:?} is not a method name or a namespace glob (letters, digits and '_', with one optional trailing '*')"
    )]
    BadPattern(String),
    #[error(
        "allow entry {0:?} can only name never-exposed methods; list it under unsafe_allow if you mean to expose them"
    )]
    AllowNamesNeverExposed(String),
    #[error("unsafe_allow entry {0:?} names no never-exposed method; list it under allow instead")]
    UnsafeAllowNotNeeded(String),
    #[error("limit {name} = {value} is out of range ({range})")]
    LimitOutOfRange {
        name: &'static str,
        value: u64,
        range: &'static str,
    },
}

/// What the policy says about one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward to a node.
    Allow,
    /// Answer `[]` locally (`eth_accounts`).
    AnswerAccounts,
    /// Answer -32601.
    Deny(DenyReason),
}

/// Why a method was denied (for logs; the client always sees -32601).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    NotAllowed,
    OperatorDenied,
    NeverExposed,
}

/// FNV-1a: method names are short and chosen by the operator, not by callers (callers only
/// look names up), so a fast non-keyed hash is safe here and cheaper than SipHash.
#[derive(Debug, Clone, Copy)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type FastSet = HashSet<Box<str>, std::hash::BuildHasherDefault<Fnv1a>>;

/// A set of exact names and namespace prefixes.
#[derive(Debug, Clone, Default)]
struct MethodSet {
    exact: FastSet,
    prefixes: Vec<Box<str>>,
}

impl MethodSet {
    fn from_patterns<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = MethodSet::default();
        for pattern in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) => set.prefixes.push(prefix.into()),
                None => {
                    set.exact.insert(pattern.into());
                }
            }
        }
        set
    }

    fn contains(&self, method: &str) -> bool {
        self.exact.contains(method) || self.prefixes.iter().any(|p| method.starts_with(&**p))
    }
}

/// A loaded, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    allow: MethodSet,
    deny: MethodSet,
    unsafe_allow: MethodSet,
    never_exposed: MethodSet,
    limits: Limits,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::from_file(PolicyFile::default()).unwrap_or_else(|e| unreachable!("defaults: {e}"))
    }
}

impl Policy {
    /// Parses and validates a TOML policy.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Toml(e.to_string()))?;
        Policy::from_file(file)
    }

    /// Validates a policy file.
    pub fn from_file(file: PolicyFile) -> Result<Policy, PolicyError> {
        for pattern in file
            .allow
            .iter()
            .chain(&file.deny)
            .chain(&file.unsafe_allow)
        {
            if !is_valid_pattern(pattern) {
                return Err(PolicyError::BadPattern(pattern.clone()));
            }
        }
        let never_exposed = MethodSet::from_patterns(NEVER_EXPOSED.iter().copied());
        for pattern in &file.allow {
            if lies_within(pattern, &never_exposed) {
                return Err(PolicyError::AllowNamesNeverExposed(pattern.clone()));
            }
        }
        for pattern in &file.unsafe_allow {
            if !overlaps(pattern, &never_exposed) {
                return Err(PolicyError::UnsafeAllowNotNeeded(pattern.clone()));
            }
        }
        let tier_patterns = file.tiers.iter().flat_map(|t| t.patterns().iter().copied());
        let (tier_unsafe, tier_safe): (Vec<&str>, Vec<&str>) =
            tier_patterns.partition(|p| lies_within(p, &never_exposed));
        let allow = MethodSet::from_patterns(
            DEFAULT_ALLOW
                .iter()
                .copied()
                .chain(tier_safe)
                .chain(file.allow.iter().map(|s| &**s)),
        );
        let unsafe_allow =
            MethodSet::from_patterns(file.unsafe_allow.iter().map(|s| &**s).chain(tier_unsafe));
        Ok(Policy {
            allow,
            deny: MethodSet::from_patterns(file.deny.iter().map(|s| &**s)),
            unsafe_allow,
            never_exposed,
            limits: Limits::from_file(&file.limits)?,
        })
    }

    /// Decides one method. Pure and allocation-free.
    pub fn verdict(&self, method: &str) -> Verdict {
        if self.deny.contains(method) {
            return Verdict::Deny(DenyReason::OperatorDenied);
        }
        if self.never_exposed.contains(method) {
            return if self.unsafe_allow.contains(method) {
                Verdict::Allow
            } else {
                Verdict::Deny(DenyReason::NeverExposed)
            };
        }
        if method == LOCAL_ACCOUNTS_METHOD {
            return Verdict::AnswerAccounts;
        }
        if self.allow.contains(method) {
            Verdict::Allow
        } else {
            Verdict::Deny(DenyReason::NotAllowed)
        }
    }

    /// The request limits that come with this policy.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

fn is_valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    !pattern.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Every method the pattern can match is in `set`.
fn lies_within(pattern: &str, set: &MethodSet) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => set.prefixes.iter().any(|p| prefix.starts_with(&**p)),
        None => set.contains(pattern),
    }
}

/// Some method the pattern can match is in `set`.
fn overlaps(pattern: &str, set: &MethodSet) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            set.prefixes
                .iter()
                .any(|p| prefix.starts_with(&**p) || p.starts_with(prefix))
                || set.exact.iter().any(|e| e.starts_with(prefix))
        }
        None => set.contains(pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DenyReason::*;
    use Verdict::*;

    #[test]
    fn every_default_method_is_allowed_and_nothing_else() {
        let policy = Policy::default();
        for method in DEFAULT_ALLOW {
            assert_eq!(policy.verdict(method), Allow, "{method}");
        }
        for method in [
            "eth_newFilter",
            "eth_getFilterChanges",
            "trace_block",
            "eth_subscribe",
            "parity_pendingTransactions",
            "",
            "eth_call ",
            " eth_call",
            "ETH_CALL",
            "eth_Call",
            "eth_blockNumberX",
        ] {
            assert_eq!(policy.verdict(method), Deny(NotAllowed), "{method:?}");
        }
        assert_eq!(policy.verdict("eth_accounts"), AnswerAccounts);
    }

    #[test]
    fn never_exposed_methods_are_denied_by_default() {
        let policy = Policy::default();
        for method in [
            "admin_addPeer",
            "admin_nodeInfo",
            "debug_traceTransaction",
            "debug_setHead",
            "personal_unlockAccount",
            "miner_start",
            "engine_forkchoiceUpdatedV3",
            "txpool_content",
            "clique_getSigners",
            "db_getString",
            "les_serverInfo",
            "shh_post",
            "testing_buildBlockV1",
            "rpc_modules",
            "eth_sign",
            "eth_signTransaction",
            "eth_signTypedData_v4",
            "eth_sendTransaction",
        ] {
            assert_eq!(policy.verdict(method), Deny(NeverExposed), "{method}");
        }
    }

    #[test]
    fn operator_allow_and_deny_by_name_and_glob() {
        let policy = Policy::from_toml(
            r#"
            allow = ["trace_*", "eth_newFilter", "eth_*"]
            deny = ["eth_sendRawTransaction", "eth_getUncle*"]
            "#,
        )
        .unwrap();
        assert_eq!(policy.verdict("trace_block"), Allow);
        assert_eq!(policy.verdict("eth_newFilter"), Allow);
        assert_eq!(policy.verdict("eth_subscribe"), Allow, "eth_* glob");
        assert_eq!(
            policy.verdict("eth_sendRawTransaction"),
            Deny(OperatorDenied)
        );
        assert_eq!(
            policy.verdict("eth_getUncleByBlockHashAndIndex"),
            Deny(OperatorDenied)
        );
        // eth_* does not open the never-exposed eth_sign* and eth_sendTransaction.
        assert_eq!(policy.verdict("eth_sign"), Deny(NeverExposed));
        assert_eq!(policy.verdict("eth_sendTransaction"), Deny(NeverExposed));
        assert_eq!(policy.verdict("net_peerCount"), Deny(NotAllowed));
    }

    #[test]
    fn never_exposed_needs_unsafe_allow_and_deny_still_wins() {
        let policy = Policy::from_toml(
            r#"
            unsafe_allow = ["debug_traceTransaction", "txpool_*"]
            deny = ["txpool_inspect"]
            "#,
        )
        .unwrap();
        assert_eq!(policy.verdict("debug_traceTransaction"), Allow);
        assert_eq!(policy.verdict("debug_traceCall"), Deny(NeverExposed));
        assert_eq!(policy.verdict("txpool_content"), Allow);
        assert_eq!(policy.verdict("txpool_inspect"), Deny(OperatorDenied));
        assert_eq!(policy.verdict("admin_peers"), Deny(NeverExposed));
    }

    #[test]
    fn tiers_open_their_methods_only() {
        let policy = Policy::from_toml(r#"tiers = ["trace", "filters"]"#).unwrap();
        assert_eq!(policy.verdict("trace_filter"), Allow);
        assert_eq!(policy.verdict("debug_traceBlockByNumber"), Allow);
        assert_eq!(policy.verdict("debug_setHead"), Deny(NeverExposed));
        assert_eq!(policy.verdict("eth_getFilterChanges"), Allow);
        assert_eq!(policy.verdict("eth_newPendingTransactionFilter"), Allow);
    }

    #[test]
    fn policy_file_mistakes_are_errors() {
        let cases = [
            (r#"allow = ["debug_*"]"#, "unsafe_allow"),
            (r#"allow = ["admin_addPeer"]"#, "unsafe_allow"),
            (r#"allow = ["eth_signTypedData"]"#, "unsafe_allow"),
            (r#"unsafe_allow = ["eth_call"]"#, "under allow"),
            (r#"allow = ["eth_*call"]"#, "namespace glob"),
            (r#"allow = [" eth_call"]"#, "namespace glob"),
            (r#"allow = [""]"#, "namespace glob"),
            (r#"alow = ["eth_call"]"#, "unknown field"),
            (r#"tiers = ["everything"]"#, "unknown variant"),
            ("[limits]\nmax_batch_items = 0", "max_batch_items"),
            ("allow = [", "TOML"),
        ];
        for (text, needle) in cases {
            let err = Policy::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn unsafe_allow_accepts_globs_that_reach_into_never_exposed() {
        assert!(Policy::from_toml(r#"unsafe_allow = ["debug_trace*"]"#).is_ok());
        assert!(Policy::from_toml(r#"unsafe_allow = ["eth_s*"]"#).is_ok());
    }
}
