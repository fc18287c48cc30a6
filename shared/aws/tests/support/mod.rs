//! What every AWS-adapter test needs: an SDK configuration aimed at the moto server the test
//! command started, and names no other test uses (moto's state is shared by all tests).
//!
//! The tests never skip: without `NODEFLEET_MOTO_ENDPOINT` they fail and say how to start
//! moto (`scripts/test.sh` does it by itself).

#![allow(dead_code)] // each test file uses a different part of this module

use aws_config::{BehaviorVersion, Region, SdkConfig};

#[allow(unused_imports)] // not every test file names the endpoint
pub use nodefleet_testkit::moto::{moto_endpoint, unique_name};

/// An SDK configuration for moto: its endpoint, a fixed region, dummy credentials.
pub fn moto_config() -> SdkConfig {
    nodefleet_testkit::moto::sdk_config()
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
