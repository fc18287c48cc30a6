//! Opening the object store a URL names: `s3://bucket/prefix` through the standard AWS
//! environment (credentials, region, `AWS_ENDPOINT_URL` for S3-compatible servers), or
//! `file:///dir` on the local file system.

use std::sync::Arc;

use anyhow::Context;
use nodefleet_aws::S3ObjectStore;
use nodefleet_local::FsObjectStore;
use nodefleet_ports::{ObjectStore, StoreUrl};

pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let parsed = StoreUrl::parse(url)?;
    match &parsed {
        StoreUrl::S3 { .. } => {
            let config = nodefleet_aws::load_sdk_config().await;
            let store = S3ObjectStore::new(&config, &parsed)
                .with_context(|| format!("cannot open {url}"))?;
            Ok(Arc::new(store))
        }
        StoreUrl::File { .. } => {
            let store =
                FsObjectStore::from_url(&parsed).with_context(|| format!("cannot open {url}"))?;
            Ok(Arc::new(store))
        }
    }
}
