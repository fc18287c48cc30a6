//! What tests against the moto server share: its URL (which the test command exports), raw
//! calls for the APIs the workspace has no SDK for (EC2's query API, moto's own
//! `/moto-api`), and names unique to a run, since every test shares one moto.
//!
//! Tests never skip: without `NODEFLEET_MOTO_ENDPOINT` they fail and say how to start moto
//! (`scripts/test.sh` does it by itself).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The environment variable `scripts/test.sh` sets to moto's loopback URL.
pub const MOTO_ENDPOINT_VAR: &str = "NODEFLEET_MOTO_ENDPOINT";

/// The region every moto test uses.
pub const REGION: &str = "us-east-1";

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

/// An SDK configuration for moto: its endpoint, [`REGION`], dummy credentials.
pub fn sdk_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(moto_endpoint())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("testing", "testing", None, None, "moto"),
            ),
        )
        .build()
}

/// One HTTP/1.0 request to moto (1.0, so the answer is never chunked). `service` goes into a
/// dummy SigV4 scope, which is how moto's single server tells services apart. Returns the
/// status and the body.
pub async fn moto_http(path: &str, service: &str, content_type: &str, body: &str) -> (u16, String) {
    let endpoint = moto_endpoint();
    let authority = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {authority}\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, \
         Signature=0\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// One EC2 query call (form-encoded); panics unless moto answers 200. Returns the XML.
pub async fn ec2_query(form: &str) -> String {
    let (status, body) = moto_http("/", "ec2", "application/x-www-form-urlencoded", form).await;
    assert_eq!(status, 200, "EC2 {form}: {body}");
    body
}

/// The text of the first `<tag>` in `xml`.
pub fn first_xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml.find(&open).unwrap() + open.len();
    let end = start + xml[start..].find('<').unwrap();
    xml[start..end].to_owned()
}

/// Starts one EC2 instance in `zone` and returns its id.
pub async fn run_ec2_instance(zone: &str, instance_type: &str) -> String {
    let body = ec2_query(&format!(
        "Action=RunInstances&Version=2016-11-15&ImageId=ami-12c6146b&MinCount=1&MaxCount=1\
         &InstanceType={instance_type}&Placement.AvailabilityZone={zone}"
    ))
    .await;
    first_xml_value(&body, "instanceId")
}

/// The id of moto's default VPC.
pub async fn default_vpc() -> String {
    let vpcs = ec2_query(
        "Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=is-default&Filter.1.Value.1=true",
    )
    .await;
    first_xml_value(&vpcs, "vpcId")
}

/// Keeps moto's ECS tasks in the status they were put in: by default its state manager
/// advances a task one status per describe (RUNNING, DEACTIVATING, ... STOPPED), so tasks
/// would stop by themselves.
pub async fn keep_ecs_tasks_where_they_are() {
    let (status, body) = moto_http(
        "/moto-api/state-manager/set-transition",
        "ecs",
        "application/json",
        r#"{"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000000}}"#,
    )
    .await;
    assert!(
        status == 200 || status == 201,
        "set-transition: {status} {body}"
    );
}

/// A name unique to this test run, lower case, at most 32 characters (valid for a bucket,
/// table, cluster or target group).
pub fn unique_name(prefix: &str) -> String {
    let name = format!("{prefix}-{}", nodefleet_ports::model::unique_suffix()).to_lowercase();
    name.chars()
        .take(32)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// A node cluster on moto, as the reactor's and the updater's Lambda tests need it.
#[derive(Debug, Clone)]
pub struct EcsCluster {
    pub cluster: String,
    /// An awsvpc task definition whose node container publishes 8545.
    pub task_definition: String,
    /// `SUBNETS_BY_ZONE` for the functions: moto's default subnet of each zone.
    pub subnets_by_zone: String,
}

/// Creates a cluster with `instances_per_zone` i3.8xlarge container instances in each of
/// `zones`, a node task definition with container `container` (awsvpc: moto gives bridge
/// tasks no host ports), and finds each zone's default subnet.
pub async fn ecs_cluster(
    sdk: &SdkConfig,
    zones: &[&str],
    instances_per_zone: usize,
    container: &str,
) -> EcsCluster {
    use aws_sdk_ecs::types::{ContainerDefinition, NetworkMode, PortMapping};
    let ecs = aws_sdk_ecs::Client::new(sdk);
    let cluster = unique_name("nf-cluster");
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .unwrap();
    let task_definition = unique_name("nf-node");
    ecs.register_task_definition()
        .family(&task_definition)
        .network_mode(NetworkMode::Awsvpc)
        .container_definitions(
            ContainerDefinition::builder()
                .name(container)
                .image("ghcr.io/nodefleet/node:test")
                .memory(64)
                .cpu(16)
                .port_mappings(PortMapping::builder().container_port(8545).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut subnets = Vec::new();
    for zone in zones {
        for _ in 0..instances_per_zone {
            let instance = run_ec2_instance(zone, "i3.8xlarge").await;
            ecs.register_container_instance()
                .cluster(&cluster)
                .instance_identity_document(format!(
                    r#"{{"instanceId": "{instance}", "availabilityZone": "{zone}", "region": "{REGION}"}}"#
                ))
                .send()
                .await
                .unwrap();
        }
        let found = ec2_query(&format!(
            "Action=DescribeSubnets&Version=2016-11-15&Filter.1.Name=availability-zone\
             &Filter.1.Value.1={zone}&Filter.2.Name=default-for-az&Filter.2.Value.1=true"
        ))
        .await;
        subnets.push(format!("{zone}={}", first_xml_value(&found, "subnetId")));
    }
    EcsCluster {
        cluster,
        task_definition,
        subnets_by_zone: subnets.join(","),
    }
}
