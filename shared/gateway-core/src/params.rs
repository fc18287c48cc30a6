//! Params checks for the few methods the gateway inspects before forwarding.
//!
//! - `eth_getLogs`: one filter object; `fromBlock`/`toBlock` are hex quantities or tags;
//!   `blockHash` excludes both; the block range is capped. Numeric bounds are checked
//!   directly; `latest`, `safe`, `finalized` and `pending` (and a missing bound, which means
//!   `latest`) are resolved against the chain head the caller supplies, so the check asks for
//!   a head ([`ParamsCheck::NeedsHead`]) only when a bound is a tag.
//! - `eth_sendRawTransaction`: one hex string, so garbage never costs a node a decode.
//! - `eth_accounts`: no params, or an empty array.
//!
//! Everything else passes through: the node is the authority on its own params.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The outcome of a params check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsCheck {
    Ok,
    /// The check needs the current head block to resolve a tag; call again with it.
    NeedsHead,
    /// Answer -32602 with this message.
    Invalid(String),
}

/// Checks the params of `method`; `head` is the latest block number when known.
pub fn check_params(
    method: &str,
    params: Option<&RawValue>,
    max_get_logs_blocks: u64,
    head: Option<u64>,
) -> ParamsCheck {
    match method {
        "eth_getLogs" => check_get_logs(params, max_get_logs_blocks, head),
        "eth_sendRawTransaction" => check_send_raw_transaction(params),
        "eth_accounts" => match params.map(|p| serde_json::from_str::<Vec<&RawValue>>(p.get())) {
            None => ParamsCheck::Ok,
            Some(Ok(items)) if items.is_empty() => ParamsCheck::Ok,
            Some(_) => invalid("eth_accounts takes no params"),
        },
        _ => ParamsCheck::Ok,
    }
}

fn invalid(message: impl Into<String>) -> ParamsCheck {
    ParamsCheck::Invalid(message.into())
}

#[derive(Deserialize)]
struct LogFilter<'a> {
    #[serde(borrow, default, rename = "fromBlock")]
    from_block: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "toBlock")]
    to_block: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "blockHash")]
    block_hash: Option<&'a RawValue>,
}

/// A block bound: a number, or "the head" (latest, safe, finalized, pending, or absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Number(u64),
    Head,
}

fn check_get_logs(params: Option<&RawValue>, cap: u64, head: Option<u64>) -> ParamsCheck {
    let Some(params) = params else {
        return invalid("eth_getLogs takes one filter object");
    };
    let filter = match serde_json::from_str::<Vec<&RawValue>>(params.get()) {
        Ok(items) if items.len() == 1 => items[0],
        _ => return invalid("eth_getLogs takes one filter object"),
    };
    let Ok(filter) = serde_json::from_str::<LogFilter<'_>>(filter.get()) else {
        return invalid("eth_getLogs takes one filter object");
    };
    let from = filter.from_block.filter(|v| v.get() != "null");
    let to = filter.to_block.filter(|v| v.get() != "null");
    if filter.block_hash.is_some_and(|v| v.get() != "null") {
        return if from.is_some() || to.is_some() {
            invalid("eth_getLogs: blockHash cannot be combined with fromBlock or toBlock")
        } else {
            ParamsCheck::Ok
        };
    }
    let (from, to) = match (parse_bound(from), parse_bound(to)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(()), _) => {
            return invalid("eth_getLogs: fromBlock must be a hex block number or a tag");
        }
        (_, Err(())) => return invalid("eth_getLogs: toBlock must be a hex block number or a tag"),
    };
    let resolve = |bound| match bound {
        Bound::Number(n) => Some(n),
        Bound::Head => head,
    };
    let (Some(from), Some(to)) = (resolve(from), resolve(to)) else {
        return ParamsCheck::NeedsHead;
    };
    // Saturating: a range of all 2^64 blocks must not wrap to zero and slip under the cap.
    let blocks = if to >= from {
        (to - from).saturating_add(1)
    } else {
        0
    };
    if blocks > cap {
        return invalid(format!(
            "eth_getLogs block range of {blocks} blocks exceeds the cap of {cap} blocks"
        ));
    }
    ParamsCheck::Ok
}

fn parse_bound(raw: Option<&RawValue>) -> Result<Bound, ()> {
    let Some(raw) = raw else {
        return Ok(Bound::Head);
    };
    let text = raw.get();
    let value = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or(())?;
    match value {
        "latest" | "safe" | "finalized" | "pending" => Ok(Bound::Head),
        "earliest" => Ok(Bound::Number(0)),
        _ => parse_quantity(value).map(Bound::Number),
    }
}

/// Parses a hex quantity such as `0x1b4`.
fn parse_quantity(value: &str) -> Result<u64, ()> {
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .ok_or(())?;
    if digits.is_empty() {
        return Err(());
    }
    u64::from_str_radix(digits, 16).map_err(|_| ())
}

/// Parses the `result` of `eth_blockNumber` (a JSON string holding a hex quantity).
pub fn parse_block_number(result: &str) -> Option<u64> {
    let value = result.trim().strip_prefix('"')?.strip_suffix('"')?;
    parse_quantity(value).ok()
}

fn check_send_raw_transaction(params: Option<&RawValue>) -> ParamsCheck {
    let ok = params
        .and_then(|p| serde_json::from_str::<Vec<&str>>(p.get()).ok())
        .is_some_and(|items| {
            items.len() == 1
                && items[0]
                    .strip_prefix("0x")
                    .is_some_and(|hex| hex.len() >= 2 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        });
    if ok {
        ParamsCheck::Ok
    } else {
        invalid("eth_sendRawTransaction takes one hex-encoded transaction")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(params: &str, head: Option<u64>) -> ParamsCheck {
        let raw: &RawValue = serde_json::from_str(params).unwrap();
        check_params("eth_getLogs", Some(raw), 5_000, head)
    }

    #[test]
    fn get_logs_numeric_ranges_are_checked_without_a_head() {
        assert_eq!(
            logs(r#"[{"fromBlock":"0x1","toBlock":"0x1388"}]"#, None),
            ParamsCheck::Ok
        );
        assert_eq!(
            logs(r#"[{"fromBlock":"0x0","toBlock":"0x1387"}]"#, None),
            ParamsCheck::Ok
        );
        let over = logs(r#"[{"fromBlock":"0x0","toBlock":"0x1388"}]"#, None);
        assert_eq!(
            over,
            ParamsCheck::Invalid(
                "eth_getLogs block range of 5001 blocks exceeds the cap of 5000 blocks".into()
            )
        );
        assert_eq!(
            logs(r#"[{"fromBlock":"earliest","toBlock":"0x1388"}]"#, None),
            over
        );
        // A reversed range is the node's to judge.
        assert_eq!(
            logs(r#"[{"fromBlock":"0x10","toBlock":"0x1"}]"#, None),
            ParamsCheck::Ok
        );
    }

    #[test]
    fn get_logs_tags_need_the_head() {
        for tag in ["latest", "safe", "finalized", "pending"] {
            let params = format!(r#"[{{"fromBlock":"0x0","toBlock":"{tag}"}}]"#);
            assert_eq!(logs(&params, None), ParamsCheck::NeedsHead, "{tag}");
            assert_eq!(logs(&params, Some(4_999)), ParamsCheck::Ok, "{tag}");
            assert!(
                matches!(logs(&params, Some(5_000)), ParamsCheck::Invalid(_)),
                "{tag}"
            );
        }
        // Missing bounds mean latest.
        assert_eq!(logs(r#"[{}]"#, None), ParamsCheck::NeedsHead);
        assert_eq!(logs(r#"[{}]"#, Some(20_000_000)), ParamsCheck::Ok);
        assert_eq!(logs(r#"[{"fromBlock":null}]"#, Some(1)), ParamsCheck::Ok);
        assert!(matches!(
            logs(r#"[{"fromBlock":"0x1"}]"#, Some(20_000_000)),
            ParamsCheck::Invalid(_)
        ));
        assert!(matches!(
            logs(
                r#"[{"toBlock":"latest","fromBlock":"earliest"}]"#,
                Some(9_000)
            ),
            ParamsCheck::Invalid(_)
        ));
    }

    #[test]
    fn get_logs_block_hash_passes_alone_only() {
        let hash = "0x88e96d4537bea4d9c05d12549907b32561d3bf31f45aae734cdc119f13406cb6";
        assert_eq!(
            logs(&format!(r#"[{{"blockHash":"{hash}"}}]"#), None),
            ParamsCheck::Ok
        );
        assert!(matches!(
            logs(&format!(r#"[{{"blockHash":"{hash}","fromBlock":"0x1"}}]"#), None),
            ParamsCheck::Invalid(m) if m.contains("blockHash")
        ));
    }

    #[test]
    fn get_logs_malformed_params() {
        for params in [
            r#"[]"#,
            r#"[{}, {}]"#,
            r#"{"fromBlock":"0x1"}"#,
            r#"["0x1"]"#,
            r#"[{"fromBlock":1}]"#,
            r#"[{"fromBlock":"1"}]"#,
            r#"[{"fromBlock":"0x"}]"#,
            r#"[{"toBlock":"0xzz"}]"#,
            r#"[{"toBlock":"Latest"}]"#,
            r#"[{"toBlock":"0x10000000000000000"}]"#,
        ] {
            assert!(
                matches!(logs(params, Some(1)), ParamsCheck::Invalid(_)),
                "{params}"
            );
        }
        assert!(matches!(
            check_params("eth_getLogs", None, 5_000, None),
            ParamsCheck::Invalid(_)
        ));
    }

    #[test]
    fn send_raw_transaction_takes_one_hex_string() {
        let check = |p: &str| {
            check_params(
                "eth_sendRawTransaction",
                Some(serde_json::from_str(p).unwrap()),
                1,
                None,
            )
        };
        assert_eq!(check(r#"["0x02f8"]"#), ParamsCheck::Ok);
        for bad in [
            r#"[]"#,
            r#"["02f8"]"#,
            r#"["0x"]"#,
            r#"["0xzz"]"#,
            r#"[1]"#,
            r#"["0x02","0x03"]"#,
            r#"{}"#,
        ] {
            assert!(matches!(check(bad), ParamsCheck::Invalid(_)), "{bad}");
        }
    }

    #[test]
    fn accounts_takes_no_params() {
        let check = |p: Option<&str>| {
            check_params(
                "eth_accounts",
                p.map(|p| serde_json::from_str(p).unwrap()),
                1,
                None,
            )
        };
        assert_eq!(check(None), ParamsCheck::Ok);
        assert_eq!(check(Some("[]")), ParamsCheck::Ok);
        assert!(matches!(check(Some("[1]")), ParamsCheck::Invalid(_)));
        assert!(matches!(check(Some("[[]]")), ParamsCheck::Invalid(_)));
        assert!(matches!(check(Some("{}")), ParamsCheck::Invalid(_)));
    }

    #[test]
    fn block_number_results_parse() {
        assert_eq!(parse_block_number(r#""0x10""#), Some(16));
        assert_eq!(parse_block_number("16"), None);
        assert_eq!(parse_block_number(r#""latest""#), None);
    }
}
