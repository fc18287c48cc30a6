//! What every AWS-adapter test needs: an SDK configuration aimed at the moto server the test
//! command started, and names no other test uses (moto's state is shared by all tests).
//!
//! The tests never skip: without `NODEFLEET_MOTO_ENDPOINT` they fail and say how to start
//! moto (`scripts/test.sh` does it by itself).

#![allow(dead_code)] // each test file uses a different part of this module

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The environment variable `scripts/test.sh` sets to moto's loopback URL.
pub const MOTO_ENDPOINT_VAR: &str = "NODEFLEET_MOTO_ENDPOINT";

/// moto's URL; panics with instructions if the test command did not start moto.
pub fn moto_endpoint() -> String {
    match std::env::var(MOTO_ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{MOTO_ENDPOINT_VAR} is not set: these tests talk to a moto server. Run \
             scripts/test.sh (it installs and starts moto), or start one with \
             `scripts/moto.sh start` and export the URL it prints"
        ),
    }
}

/// An SDK configuration for moto: its endpoint, a fixed region, dummy credentials.
pub fn moto_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("testing", "testing", None, None, "moto"),
            ),
        )
        .build()
}

/// A name unique to this test run: `<prefix>-<pid>-<counter>-<nanos>`, lower case, at
/// most 63 characters (valid for a bucket, table, cluster or target group).
pub fn unique_name(prefix: &str) -> String {
    let name = format!("{prefix}-{}", nodefleet_ports::model::unique_suffix()).to_lowercase();
    name.chars()
        .take(32)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// An SDK configuration for aws-smithy-mocks: no network (the mock HTTP client), no
/// retries (so an error reaches the adapter on the first answer), dummy credentials. Add
/// [`mock_interceptor`] on the service's own config builder:
/// `aws_sdk_s3::config::Builder::from(&mock_config()).interceptor(mock_interceptor(rules))`.
pub fn mock_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("test", "test", None, None, "mock"),
            ),
        )
        .http_client(aws_smithy_mocks::create_mock_http_client())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build()
}

/// An interceptor that answers only from `rules`, in any order.
pub fn mock_interceptor(
    rules: &[&aws_smithy_mocks::Rule],
) -> aws_smithy_mocks::MockResponseInterceptor {
    rules.iter().fold(
        aws_smithy_mocks::MockResponseInterceptor::new()
            .rule_mode(aws_smithy_mocks::RuleMode::MatchAny),
        |interceptor, rule| interceptor.with_rule(rule),
    )
}
