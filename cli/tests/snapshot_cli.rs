//! `nodefleet snapshot` from the outside, against both store kinds: a `file://` store and an
//! `s3://` bucket on moto (reached through the standard `AWS_ENDPOINT_URL`). Create, list,
//! verify and restore round-trip a data dir byte for byte; a corrupt pack makes restore fail
//! with one line naming the file and offset, and a non-zero exit.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod support;

use support::nodefleet;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;

fn temp_dir(name: &str) -> PathBuf {
    support::temp_dir("snapshot-cli", name)
}

/// Runs to completion: (exit code, stdout, stderr).
async fn run(command: &mut Command) -> (i32, String, String) {
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn run_ok(command: &mut Command) -> Value {
    let (code, stdout, stderr) = run(command).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A small data dir: nested files (one over several chunks), an empty file, an empty
/// directory, a symlink, an executable, and a file the geth profile leaves out.
fn make_data_dir(root: &Path) {
    std::fs::create_dir_all(root.join("geth/chaindata")).unwrap();
    std::fs::create_dir_all(root.join("geth/empty")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("geth/chaindata/000001.sst"), &big).unwrap();
    std::fs::write(root.join("geth/chaindata/CURRENT"), b"MANIFEST-000002\n").unwrap();
    std::fs::write(root.join("geth/empty-file"), b"").unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("chaindata/CURRENT", root.join("geth/current-link")).unwrap();
    std::fs::write(root.join("geth/nodekey"), b"secret identity").unwrap();
}

/// Every path under `root` with what it is: file contents and mode, link target, or dir.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with(".nodefleet") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {:o}", meta.permissions().mode() & 0o7777)
            } else {
                let bytes = std::fs::read(&path).unwrap();
                format!(
                    "file {:o} {} {}",
                    meta.permissions().mode() & 0o7777,
                    bytes.len(),
                    blake3::hash(&bytes)
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

/// The data dir's tree as a restore should give it: without the geth profile's exclusions.
fn shared_tree(root: &Path) -> BTreeMap<String, String> {
    let mut expected = tree(root);
    expected.remove("geth/nodekey");
    expected
}

/// Create, list, verify, restore through the CLI; the restore is byte-identical.
async fn round_trip(store: &str, envs: &[(&str, String)], scratch: &Path) {
    let data = scratch.join("data");
    make_data_dir(&data);
    let with_env = |command: &mut Command| {
        for (key, value) in envs {
            command.env(key, value);
        }
    };

    let mut create = nodefleet();
    with_env(&mut create);
    let created = run_ok(create.args([
        "snapshot",
        "create",
        "--from",
        data.to_str().unwrap(),
        "--store",
        store,
        "--client",
        "geth",
        "--json",
    ]))
    .await;
    let id = created["snapshot"].as_str().unwrap().to_owned();
    assert_eq!(created["bytes_skipped"], 0, "{created}");
    assert_eq!(created["bytes_total"], 3_000_026, "{created}");
    assert!(created["chunks_new"].as_u64().unwrap() >= 3, "{created}");
    // The generated contents repeat, so zstd stores them in far fewer bytes.
    assert!(
        created["bytes_transferred"].as_u64().unwrap() > 0,
        "{created}"
    );

    let mut list = nodefleet();
    with_env(&mut list);
    let listed = run_ok(list.args(["snapshot", "list", "--store", store, "--json"])).await;
    assert!(listed.to_string().contains(&id), "{listed}");

    let mut verify = nodefleet();
    with_env(&mut verify);
    let (code, _, stderr) = run(verify.args(["snapshot", "verify", "--store", store])).await;
    assert_eq!(code, 0, "{stderr}");

    let target = scratch.join("restored");
    let mut restore = nodefleet();
    with_env(&mut restore);
    let restored = run_ok(restore.args([
        "snapshot",
        "restore",
        "--store",
        store,
        "--to",
        target.to_str().unwrap(),
        "--json",
    ]))
    .await;
    assert_eq!(restored["snapshot"], id.as_str());
    assert_eq!(tree(&target), shared_tree(&data));

    // A second create of the same data uploads no chunk again.
    let mut again = nodefleet();
    with_env(&mut again);
    let second = run_ok(again.args([
        "snapshot",
        "create",
        "--from",
        data.to_str().unwrap(),
        "--store",
        store,
        "--client",
        "geth",
        "--json",
    ]))
    .await;
    assert_eq!(second["chunks_new"], 0, "{second}");
    assert!(
        second["bytes_skipped"].as_u64().unwrap() > 3_000_000,
        "{second}"
    );
}

#[tokio::test]
async fn a_file_store_round_trips_a_data_dir() {
    let scratch = temp_dir("file");
    let store = format!("file://{}", scratch.join("store").display());
    round_trip(&store, &[], &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
}

#[tokio::test]
async fn an_s3_store_on_moto_round_trips_a_data_dir() {
    let endpoint = std::env::var("NODEFLEET_MOTO_ENDPOINT").unwrap_or_else(|_| {
        panic!("NODEFLEET_MOTO_ENDPOINT is not set: run scripts/test.sh (it starts moto)")
    });
    let bucket = format!("snapshot-cli-{}", std::process::id());
    // moto takes an unsigned path-style PUT as CreateBucket.
    let created = http_put(&format!("{endpoint}/{bucket}")).await;
    assert!(created, "could not create bucket {bucket} on moto");
    let scratch = temp_dir("s3");
    let envs = [
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    round_trip(&format!("s3://{bucket}/mainnet/geth"), &envs, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A bare HTTP/1.1 PUT with an empty body; true on a 2xx answer.
async fn http_put(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "PUT /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer.starts_with("HTTP/1.1 2") || answer.starts_with("HTTP/1.0 2")
}

#[tokio::test]
async fn a_corrupt_pack_fails_the_restore_loudly() {
    let scratch = temp_dir("corrupt");
    let data = scratch.join("data");
    make_data_dir(&data);
    let store_dir = scratch.join("store");
    let store = format!("file://{}", store_dir.display());
    run_ok(nodefleet().args([
        "snapshot",
        "create",
        "--from",
        data.to_str().unwrap(),
        "--store",
        &store,
        "--json",
    ]))
    .await;

    // Flip one byte in the middle of every pack.
    let mut packs = Vec::new();
    let mut stack = vec![store_dir.join("packs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                packs.push(path);
            }
        }
    }
    assert!(!packs.is_empty());
    for pack in &packs {
        let mut bytes = std::fs::read(pack).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(pack, bytes).unwrap();
    }

    let target = scratch.join("restored");
    let (code, stdout, stderr) = run(nodefleet().args([
        "snapshot",
        "restore",
        "--store",
        &store,
        "--to",
        target.to_str().unwrap(),
        "--json",
    ]))
    .await;
    assert_ne!(code, 0, "a corrupt snapshot restored: {stdout}");
    assert!(
        stdout.is_empty(),
        "nothing is reported as restored: {stdout}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("offset"), "names the offset: {stderr}");
    assert!(
        stderr.contains("000001.sst") || stderr.contains("CURRENT") || stderr.contains("run.sh"),
        "names the file: {stderr}"
    );
    assert!(
        !target.join(".nodefleet-restored").exists(),
        "no restore marker after a failed restore"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[tokio::test]
async fn restoring_from_an_empty_store_says_there_is_nothing() {
    let scratch = temp_dir("empty");
    let store = format!("file://{}", scratch.join("store").display());
    let (code, _, stderr) = run(nodefleet().args([
        "snapshot",
        "restore",
        "--store",
        &store,
        "--to",
        scratch.join("to").to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no snapshot latest"), "{stderr}");
    let (code, _, stderr) = run(nodefleet().args([
        "snapshot", "restore", "--store", "ftp://x", "--to", "/tmp/x",
    ]))
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("bad store URL"), "{stderr}");
    let _ = std::fs::remove_dir_all(&scratch);
}
