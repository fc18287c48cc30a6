//! Criterion micro-benchmarks of the gateway's pure request path, no network:
//! `prepare` (parse, validate, policy, params checks) -> `upstream_request` (the body sent to
//! the node) -> `finish` (merging the node's answer into the client's reply).
//!
//! Targets (issue 2): <= 2 us for a single `eth_blockNumber`, <= 60 us for a 100-item batch.
//!
//! Run: `cargo bench -p nodefleet-gateway-core --bench filter`
//! (results in BENCHMARKS.md).

#![allow(clippy::unwrap_used)] // a benchmark whose fixture is wrong should stop loudly

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nodefleet_gateway_core::{Policy, Reply, UpstreamAnswer, prepare};
use serde_json::Value;
use serde_json::value::RawValue;

const SINGLE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
const SINGLE_UPSTREAM_ANSWER: &str = r#"{"jsonrpc":"2.0","id":0,"result":"0x1499d2c"}"#;
const DENIED: &str = r#"{"jsonrpc":"2.0","id":7,"method":"admin_peers","params":[]}"#;

/// A 100-item batch of the kind a dapp backend or indexer sends: mostly `eth_call` and
/// `eth_getBalance`, some block/receipt reads, two `eth_getLogs` with a numeric range (the
/// one params check that parses), and ten calls the policy denies.
fn batch_body() -> String {
    let token = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
    let holder = "0x28c6c06298d514db089934071355e5743bf21d60";
    let mut items = Vec::with_capacity(100);
    for i in 0..100u32 {
        let id = i + 1;
        let item = match i % 10 {
            // 40 eth_call: ERC-20 balanceOf(holder) at latest.
            0 | 2 | 4 | 6 => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_call","params":[{{"to":"{token}","data":"0x70a08231000000000000000000000000{}"}},"latest"]}}"#,
                &holder[2..]
            ),
            // 30 eth_getBalance.
            1 | 3 | 5 => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_getBalance","params":["{holder}","latest"]}}"#
            ),
            // 10 reads without interesting params, 10 with a hash.
            7 => match i % 20 {
                7 => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_blockNumber"}}"#),
                _ => format!(
                    r#"{{"jsonrpc":"2.0","id":"req-{id}","method":"eth_getTransactionReceipt","params":["0x88df016429689c079f3b2f6ad39fa052532c56795b733da78a91ebe6a713944b"]}}"#
                ),
            },
            8 => match i {
                // 2 eth_getLogs with a numeric range under the cap.
                8 | 58 => format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_getLogs","params":[{{"fromBlock":"0x1499000","toBlock":"0x14993e8","address":"{token}","topics":["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"]}}]}}"#
                ),
                _ => format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_getBlockByNumber","params":["0x1499d2c",false]}}"#
                ),
            },
            // 10 denied: admin, debug, personal, signing.
            _ => {
                let method = [
                    "admin_peers",
                    "debug_traceTransaction",
                    "personal_unlockAccount",
                    "eth_sendTransaction",
                    "admin_nodeInfo",
                ][(i as usize / 10) % 5];
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":[]}}"#)
            }
        };
        items.push(item);
    }
    format!("[{}]", items.join(","))
}

/// What a node answers to the gateway's upstream batch: one response per forwarded call, ids
/// as the gateway rewrote them, with results of realistic size for each method.
fn upstream_answer_for(upstream_body: &str) -> String {
    let sent: Value = serde_json::from_str(upstream_body).unwrap();
    let calls = match sent {
        Value::Array(calls) => calls,
        one => vec![one],
    };
    let answers: Vec<String> = calls
        .iter()
        .map(|call| {
            let id = &call["id"];
            let result = match call["method"].as_str().unwrap() {
                "eth_call" => {
                    r#""0x00000000000000000000000000000000000000000000000000000a3c1d2b7e90""#
                        .to_owned()
                }
                "eth_getBalance" => r#""0x2d8b1f5c3a9e7d40""#.to_owned(),
                "eth_blockNumber" => r#""0x1499d2c""#.to_owned(),
                "eth_getLogs" => format!(
                    "[{}]",
                    [
                        r#"{"address":"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48","topics":["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef","0x00000000000000000000000028c6c06298d514db089934071355e5743bf21d60","0x000000000000000000000000d8da6bf26964af9d7eed9e03e53415d37aa96045"],"data":"0x0000000000000000000000000000000000000000000000000000000005f5e100","blockNumber":"0x14991a2","transactionHash":"0x88df016429689c079f3b2f6ad39fa052532c56795b733da78a91ebe6a713944b","transactionIndex":"0x3f","blockHash":"0x5a1c2bd1bd3a3f0f4cf8a4e9c1e5d2c0f1b6e3a7d8c9b0a1f2e3d4c5b6a79880","logIndex":"0x8a","removed":false}"#;
                        3
                    ]
                    .join(",")
                ),
                "eth_getTransactionReceipt" => r#"{"blockHash":"0x5a1c2bd1bd3a3f0f4cf8a4e9c1e5d2c0f1b6e3a7d8c9b0a1f2e3d4c5b6a79880","blockNumber":"0x14991a2","contractAddress":null,"cumulativeGasUsed":"0x2a6f5b","effectiveGasPrice":"0x4a817c800","from":"0x28c6c06298d514db089934071355e5743bf21d60","gasUsed":"0xb5e1","logs":[],"logsBloom":"0x00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000","status":"0x1","to":"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48","transactionHash":"0x88df016429689c079f3b2f6ad39fa052532c56795b733da78a91ebe6a713944b","transactionIndex":"0x3f","type":"0x2"}"#.to_owned(),
                "eth_getBlockByNumber" => r#"{"baseFeePerGas":"0x1d4a8c3e2","difficulty":"0x0","extraData":"0x6265617665726275696c642e6f7267","gasLimit":"0x1c9c380","gasUsed":"0xe4e1c0","hash":"0x5a1c2bd1bd3a3f0f4cf8a4e9c1e5d2c0f1b6e3a7d8c9b0a1f2e3d4c5b6a79880","miner":"0x95222290dd7278aa3ddd389cc1e1d165cc4bafe5","mixHash":"0x9c1e5d2c0f1b6e3a7d8c9b0a1f2e3d4c5b6a798805a1c2bd1bd3a3f0f4cf8a4e","nonce":"0x0000000000000000","number":"0x1499d2c","parentHash":"0x3f0f4cf8a4e9c1e5d2c0f1b6e3a7d8c9b0a1f2e3d4c5b6a798805a1c2bd1bd3a","size":"0x2a1b3","stateRoot":"0xd2c0f1b6e3a7d8c9b0a1f2e3d4c5b6a798805a1c2bd1bd3a3f0f4cf8a4e9c1e5","timestamp":"0x6745c1a3","transactions":["0x88df016429689c079f3b2f6ad39fa052532c56795b733da78a91ebe6a713944b"],"transactionsRoot":"0xa7d8c9b0a1f2e3d4c5b6a798805a1c2bd1bd3a3f0f4cf8a4e9c1e5d2c0f1b6e3","uncles":[]}"#.to_owned(),
                other => panic!("no canned answer for {other}"),
            };
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
        })
        .collect();
    if answers.len() == 1 {
        answers.into_iter().next().unwrap()
    } else {
        format!("[{}]", answers.join(","))
    }
}

/// The whole pure path of one request, as the handler runs it (the head is not needed: the
/// `eth_getLogs` ranges are numeric).
fn full_path(body: &[u8], policy: &Policy, upstream_answer: &[u8]) -> Reply {
    let exchange = match prepare(body, policy) {
        Ok(exchange) => exchange,
        Err(reply) => return reply,
    };
    let request = exchange.upstream_request();
    let answer = request.map(|request| {
        black_box(&request.body);
        Ok(UpstreamAnswer {
            status: 200,
            body: upstream_answer,
        })
    });
    exchange.finish(answer)
}

fn checked_fixture(body: &str, policy: &Policy) -> String {
    let exchange = prepare(body.as_bytes(), policy).unwrap();
    let upstream = exchange.upstream_request().unwrap();
    let answer = upstream_answer_for(&upstream.body);
    // Sanity: every allowed call got its node answer, every denied one -32601.
    let reply = full_path(body.as_bytes(), policy, answer.as_bytes());
    assert_eq!(reply.status, 200);
    let value: Value = serde_json::from_str(&reply.body).unwrap();
    if let Value::Array(items) = &value {
        assert_eq!(items.len(), 100);
        let denied = items
            .iter()
            .filter(|i| i["error"]["code"] == -32601)
            .count();
        assert_eq!(denied, 10, "ten denied calls");
        assert!(
            items
                .iter()
                .filter(|i| i["error"].is_null())
                .all(|i| !i["result"].is_null())
        );
    } else {
        assert_eq!(value["result"], "0x1499d2c");
    }
    answer
}

fn bench_filter(c: &mut Criterion) {
    let policy = Policy::default();

    let single_answer = checked_fixture(SINGLE, &policy);
    assert_eq!(single_answer, SINGLE_UPSTREAM_ANSWER);
    let batch = batch_body();
    let batch_answer = checked_fixture(&batch, &policy);

    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_eth_blockNumber/full", |b| {
        b.iter(|| {
            full_path(
                black_box(SINGLE.as_bytes()),
                &policy,
                black_box(SINGLE_UPSTREAM_ANSWER.as_bytes()),
            )
        })
    });
    group.bench_function("single_denied_admin_peers/full", |b| {
        b.iter(|| full_path(black_box(DENIED.as_bytes()), &policy, b""))
    });

    group.throughput(Throughput::Elements(100));
    group.bench_function("batch100_mixed/full", |b| {
        b.iter(|| {
            full_path(
                black_box(batch.as_bytes()),
                &policy,
                black_box(batch_answer.as_bytes()),
            )
        })
    });
    // The three steps of the batch on their own, to show where the time goes.
    group.bench_function("batch100_mixed/prepare", |b| {
        b.iter(|| prepare(black_box(batch.as_bytes()), &policy).unwrap())
    });
    group.bench_function("batch100_mixed/upstream_request", |b| {
        let exchange = prepare(batch.as_bytes(), &policy).unwrap();
        b.iter(|| black_box(&exchange).upstream_request())
    });
    group.bench_function("batch100_mixed/finish", |b| {
        b.iter_batched(
            || prepare(batch.as_bytes(), &policy).unwrap(),
            |exchange| {
                exchange.finish(Some(Ok(UpstreamAnswer {
                    status: 200,
                    body: black_box(batch_answer.as_bytes()),
                })))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // Context, not a target: one serde_json pass over the same bytes (split into raw
    // items, nothing else). The request path above makes about two such passes over the
    // request and two over the node's answer; see BENCHMARKS.md.
    let mut reference = c.benchmark_group("reference");
    reference.bench_function("batch100_request_one_raw_scan", |b| {
        b.iter(|| serde_json::from_str::<Vec<&RawValue>>(black_box(&batch)).unwrap())
    });
    reference.bench_function("batch100_answer_one_raw_scan", |b| {
        b.iter(|| serde_json::from_str::<Vec<&RawValue>>(black_box(&batch_answer)).unwrap())
    });
    reference.finish();
}

criterion_group!(benches, bench_filter);
criterion_main!(benches);
