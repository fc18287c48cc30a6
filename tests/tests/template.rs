//! `infra/template.yaml` against the code it deploys, offline (cfn-lint, `sam validate --lint`
//! and checkov check the template on its own, in `scripts/infra.sh check`):
//!
//! - **Least privilege.** Each function's role, and each node task role, grants exactly the
//!   IAM actions its code calls (`nodefleet_lambda::permissions`, itself tested against the
//!   adapters' recorded SDK calls and the services' port calls) plus what Lambda does with the
//!   role on the function's behalf ([`platform_actions`]), and nothing more; no role of the
//!   template allows a write action on `"*"` or a whole service; `iam:PassRole` names only
//!   roles ECS tasks assume, for ECS only; RunTask names exactly the task definition the
//!   function launches.
//! - **Settings.** Each function's environment, with the template's values (intrinsics
//!   resolved to the values a deployment gives them), is read by the function's own settings
//!   parser, which must accept it; every variable the parser reads is set by the template,
//!   except the few left to the code's defaults on purpose ([`LEFT_TO_CODE_DEFAULTS`], each
//!   with its reason, each really read).
//! - **Wiring.** The ports, names and schedules that code and template must agree on: the
//!   health check calls the agent's `/health` port, the RPC port is the nodes', the
//!   container name is the one the functions override, the updater's store is the one the
//!   node tasks hydrate from, its schedules match its interval and its lease outlives its
//!   timeout, the reactor has its four triggers.

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nodefleet_gateway::config::GatewayConfig;
use nodefleet_lambda::env::Env;
use nodefleet_lambda::permissions::{Principal, iam_actions};
use nodefleet_lambda::reactor::ReactorEnv;
use nodefleet_lambda::stack::{StackSettings, outputs_read};
use nodefleet_lambda::updater::{FUNCTION_TIMEOUT_SECS, UpdaterEnv, UpdaterEvent};
use serde_yaml::Value;
use serde_yaml::value::TaggedValue;

/// What a user answers `sam deploy --guided` for the parameters without a default.
const SAMPLE_PARAMETERS: &[(&str, &str)] = &[
    ("VpcId", "vpc-0123456789abcdef0"),
    ("VpcCidr", "10.0.0.0/16"),
    ("ZoneA", "us-east-1a"),
    ("ZoneB", "us-east-1b"),
    ("ZoneC", "us-east-1c"),
    ("SubnetA", "subnet-0aaaaaaaaaaaaaaaa"),
    ("SubnetB", "subnet-0bbbbbbbbbbbbbbbb"),
    ("SubnetC", "subnet-0cccccccccccccccc"),
    (
        "NodeImage",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/nodefleet-geth:v1",
    ),
    ("RpcPolicyToml", "allow = [\"trace_*\"]"),
];

/// Variables a function reads that the template leaves to the code's default, and why.
const LEFT_TO_CODE_DEFAULTS: &[(Principal, &str, &str)] = &[
    (
        Principal::RpcGateway,
        "POLICY_FILE",
        "a policy file path is for the local gateway; the template passes POLICY_TOML",
    ),
    (
        Principal::HealthReactor,
        "GRACE_SECS",
        "the client profile's start-up grace, which follows NODE_CLIENT",
    ),
    (
        Principal::HealthReactor,
        "HEALTHY_FLOOR",
        "derived from SERVING_NODES (two thirds), so the two cannot disagree",
    ),
    (
        Principal::SnapshotUpdater,
        "SNAPSHOT_STORE",
        "the one-URL alternative to SNAPSHOT_BUCKET and SNAPSHOT_PREFIX, which the template sets",
    ),
    (
        Principal::SnapshotUpdater,
        "STEP_TIMEOUT_ENSURE_NODE_SECS",
        "per-step timeouts are tuned in the code (shared/updater round.rs) for mainnet sizes",
    ),
    (
        Principal::SnapshotUpdater,
        "STEP_TIMEOUT_WAIT_SYNCED_SECS",
        "as above",
    ),
    (
        Principal::SnapshotUpdater,
        "STEP_TIMEOUT_QUIESCE_SECS",
        "as above",
    ),
    (
        Principal::SnapshotUpdater,
        "STEP_TIMEOUT_UPLOAD_SECS",
        "as above",
    ),
    (
        Principal::SnapshotUpdater,
        "STEP_TIMEOUT_VERIFY_SECS",
        "as above",
    ),
    (
        Principal::SnapshotUpdater,
        "STEP_TIMEOUT_PUBLISH_SECS",
        "as above",
    ),
    (
        Principal::SnapshotUpdater,
        "STEP_TIMEOUT_RESUME_SECS",
        "as above",
    ),
    (
        Principal::SnapshotUpdater,
        "STEP_TIMEOUT_PRUNE_SECS",
        "as above",
    ),
];

/// Actions Lambda takes with a function's role for it, which its code never calls: writing
/// the function's logs, and for a function in a VPC, managing its network interfaces.
fn platform_actions(function: &Resource<'_>) -> BTreeSet<&'static str> {
    let mut actions = BTreeSet::new();
    if function.kind() == "AWS::Serverless::Function" {
        actions.extend(["logs:CreateLogStream", "logs:PutLogEvents"]);
        if function.property("VpcConfig").is_some() {
            actions.extend([
                "ec2:AssignPrivateIpAddresses",
                "ec2:CreateNetworkInterface",
                "ec2:DeleteNetworkInterface",
                "ec2:DescribeNetworkInterfaces",
                "ec2:UnassignPrivateIpAddresses",
            ]);
        }
    }
    actions
}

/// Verbs of IAM actions that change something (the services' "Write" and "Permissions
/// management" levels, as they occur in this template and beyond).
const WRITE_VERBS: &[&str] = &[
    "Abort",
    "Assign",
    "Attach",
    "BatchDelete",
    "BatchWrite",
    "Complete",
    "Create",
    "Delete",
    "Deregister",
    "Detach",
    "Invoke",
    "Modify",
    "Pass",
    "Poll",
    "Put",
    "Register",
    "Restore",
    "Run",
    "Send",
    "Set",
    "Start",
    "Stop",
    "Submit",
    "Tag",
    "Unassign",
    "Untag",
    "Update",
    "Upload",
];

fn is_write(action: &str) -> bool {
    let verb = action.split_once(':').map_or(action, |(_, verb)| verb);
    WRITE_VERBS.iter().any(|w| verb.starts_with(w))
}

// ---------------------------------------------------------------- the template

struct Template {
    root: Value,
}

#[derive(Clone, Copy)]
struct Resource<'a> {
    name: &'a str,
    body: &'a Value,
}

impl<'a> Resource<'a> {
    fn kind(&self) -> &'a str {
        self.body["Type"].as_str().unwrap()
    }

    fn property(&self, name: &str) -> Option<&'a Value> {
        self.body.get("Properties").and_then(|p| p.get(name))
    }
}

fn load() -> Template {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    Template {
        root: serde_yaml::from_str(&text).unwrap(),
    }
}

fn tag<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    match value {
        Value::Tagged(tagged) if tagged.tag == name => Some(&tagged.value),
        _ => None,
    }
}

/// The logical id a `!Ref X` or `!GetAtt X.Arn` names.
fn logical_id(value: &Value) -> Option<&str> {
    if let Some(name) = tag(value, "!Ref").and_then(Value::as_str) {
        return Some(name);
    }
    tag(value, "!GetAtt")
        .and_then(Value::as_str)
        .and_then(|s| s.split_once('.'))
        .map(|(id, _)| id)
}

impl Template {
    fn resources(&self) -> impl Iterator<Item = Resource<'_>> {
        self.root["Resources"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(name, body)| Resource {
                name: name.as_str().unwrap(),
                body,
            })
    }

    fn resource(&self, name: &str) -> Resource<'_> {
        self.resources()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no resource {name}"))
    }

    fn function(&self, binary: &str) -> Resource<'_> {
        self.resources()
            .find(|r| {
                r.kind() == "AWS::Serverless::Function"
                    && r.body["Metadata"]["BuildProperties"]["Binary"].as_str() == Some(binary)
            })
            .unwrap_or_else(|| panic!("no function builds the binary {binary}"))
    }

    fn task_definition(&self, role: &str) -> Resource<'_> {
        self.resources()
            .find(|r| {
                r.kind() == "AWS::ECS::TaskDefinition" && {
                    let env = self.container_environment(*r, "node");
                    env.get("NODEFLEET_ROLE").map(String::as_str) == Some(role)
                }
            })
            .unwrap_or_else(|| panic!("no task definition of role {role}"))
    }

    /// The resource (a function or a task definition) a principal's code runs as.
    fn principal(&self, principal: Principal) -> Resource<'_> {
        match principal {
            Principal::NodeTask => self.task_definition("serving"),
            Principal::UpdaterTask => self.task_definition("updater"),
            function => self.function(function.name()),
        }
    }

    /// The IAM role a function or task definition runs with.
    fn role_of(&self, runner: Resource<'_>) -> Resource<'_> {
        let field = if runner.kind() == "AWS::ECS::TaskDefinition" {
            "TaskRoleArn"
        } else {
            "Role"
        };
        let role = logical_id(runner.property(field).unwrap()).unwrap();
        self.resource(role)
    }

    fn container<'t>(&'t self, task: Resource<'t>, name: &str) -> &'t Value {
        task.property("ContainerDefinitions")
            .unwrap()
            .as_sequence()
            .unwrap()
            .iter()
            .find(|c| c["Name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{} has no container {name}", task.name))
    }

    fn container_environment(&self, task: Resource<'_>, name: &str) -> BTreeMap<String, String> {
        self.container(task, name)["Environment"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|pair| {
                let value = self.resolve(&pair["Value"])?;
                Some((pair["Name"].as_str().unwrap().to_owned(), value))
            })
            .collect()
    }

    fn function_environment(&self, function: Resource<'_>) -> BTreeMap<String, String> {
        function
            .property("Environment")
            .and_then(|e| e.get("Variables"))
            .and_then(Value::as_mapping)
            .map(|vars| {
                vars.iter()
                    .filter_map(|(name, value)| {
                        Some((name.as_str().unwrap().to_owned(), self.resolve(value)?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value CloudFormation gives `value` in a deployment with [`SAMPLE_PARAMETERS`]:
    /// parameters' answers or defaults, resources' names and ARNs in their real shapes.
    /// `None` for `AWS::NoValue`; an `!If` takes its first branch (the setting is set).
    fn resolve(&self, value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Tagged(tagged) => self.resolve_tagged(tagged),
            other => panic!("cannot resolve {other:?}"),
        }
    }

    fn resolve_tagged(&self, tagged: &TaggedValue) -> Option<String> {
        let value = &tagged.value;
        match tagged.tag.to_string().as_str() {
            "!Ref" => self.reference(value.as_str().unwrap()),
            "!GetAtt" => {
                let (id, attribute) = value.as_str().unwrap().split_once('.').unwrap();
                Some(self.attribute(id, attribute))
            }
            "!Sub" => Some(self.substitute(value.as_str().unwrap())),
            "!If" => self.resolve(&value.as_sequence().unwrap()[1]),
            other => panic!("the test cannot resolve {other} yet: {value:?}"),
        }
    }

    fn substitute(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').unwrap() + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str(&format!("${{{literal}}}"));
            } else if let Some((id, attribute)) = name.split_once('.') {
                out.push_str(&self.attribute(id, attribute));
            } else {
                out.push_str(&self.reference(name).unwrap_or_default());
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn reference(&self, name: &str) -> Option<String> {
        let pseudo = match name {
            "AWS::Region" => Some("us-east-1"),
            "AWS::AccountId" => Some("123456789012"),
            "AWS::StackName" => Some("nodefleet"),
            "AWS::Partition" => Some("aws"),
            "AWS::NoValue" => return None,
            _ => None,
        };
        if let Some(value) = pseudo {
            return Some(value.to_owned());
        }
        if let Some(parameter) = self.root["Parameters"].get(name) {
            if let Some((_, answer)) = SAMPLE_PARAMETERS.iter().find(|(p, _)| *p == name) {
                return Some((*answer).to_owned());
            }
            return Some(self.resolve(&parameter["Default"]).unwrap_or_else(|| {
                panic!("parameter {name} has no default and no sample answer")
            }));
        }
        let resource = self.resource(name);
        let lower = name.to_ascii_lowercase();
        Some(match resource.kind() {
            "AWS::DynamoDB::Table" => format!("nodefleet-{name}-1A2B3C"),
            "AWS::ECS::Cluster" => format!("nodefleet-{name}-1A2B3C"),
            "AWS::ECS::CapacityProvider" => format!("nodefleet-{name}-1A2B3C"),
            "AWS::S3::Bucket" => format!("nodefleet-{lower}-1a2b3c"),
            "AWS::ECS::TaskDefinition" => format!(
                "arn:aws:ecs:us-east-1:123456789012:task-definition/{}:1",
                self.resolve(resource.property("Family").unwrap()).unwrap()
            ),
            "AWS::ElasticLoadBalancingV2::TargetGroup" => format!(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{name}/0123456789abcdef"
            ),
            "AWS::Logs::LogGroup" => self
                .resolve(resource.property("LogGroupName").unwrap())
                .unwrap(),
            "AWS::Serverless::Function" => self
                .resolve(resource.property("FunctionName").unwrap())
                .unwrap(),
            _ => format!("{name}-id"),
        })
    }

    fn attribute(&self, id: &str, attribute: &str) -> String {
        match attribute {
            "DNSName" => format!("internal-{id}-123456.us-east-1.elb.amazonaws.com"),
            "Arn" => format!("arn:aws:test:us-east-1:123456789012:{id}"),
            other => format!("{id}-{other}"),
        }
    }
}

// ---------------------------------------------------------------- IAM

/// A role's Allow statements.
fn statements<'t>(role: Resource<'t>) -> Vec<&'t Value> {
    role.property("Policies")
        .map(|policies| {
            policies
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|p| p["PolicyDocument"]["Statement"].as_sequence().unwrap())
                .filter(|s| s["Effect"].as_str() == Some("Allow"))
                .collect()
        })
        .unwrap_or_default()
}

fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().collect(),
        one => vec![one],
    }
}

fn actions_of(statement: &Value) -> Vec<&str> {
    one_or_many(&statement["Action"])
        .into_iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn granted(role: Resource<'_>) -> BTreeSet<String> {
    statements(role)
        .into_iter()
        .flat_map(actions_of)
        .map(str::to_owned)
        .collect()
}

fn statements_granting<'t>(role: Resource<'t>, action: &str) -> Vec<&'t Value> {
    statements(role)
        .into_iter()
        .filter(|s| actions_of(s).contains(&action))
        .collect()
}

#[test]
fn every_role_grants_exactly_what_its_code_calls() {
    let template = load();
    for principal in Principal::ALL {
        let runner = template.principal(principal);
        let role = template.role_of(runner);
        let mut expected: BTreeSet<String> = iam_actions(principal)
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        expected.extend(platform_actions(&runner).iter().map(|a| (*a).to_owned()));
        let granted = granted(role);
        let extra: Vec<_> = granted.difference(&expected).collect();
        let missing: Vec<_> = expected.difference(&granted).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{} ({} runs as {}): granted but never called: {extra:?}; called but not granted: {missing:?}",
            principal.name(),
            runner.name,
            role.name,
        );
    }
}

#[test]
fn no_role_allows_a_write_on_everything_or_a_whole_service() {
    let template = load();
    let roles: Vec<_> = template
        .resources()
        .filter(|r| r.kind() == "AWS::IAM::Role")
        .collect();
    assert!(roles.len() >= 7, "the template's roles: {}", roles.len());
    for role in roles {
        for statement in statements(role) {
            for action in actions_of(statement) {
                assert!(
                    !action.contains('*'),
                    "{}: {action} is a wildcard action",
                    role.name
                );
                let everything = one_or_many(&statement["Resource"])
                    .iter()
                    .any(|r| r.as_str() == Some("*"));
                assert!(
                    !(everything && is_write(action)),
                    "{}: the write action {action} is allowed on \"*\"",
                    role.name
                );
            }
        }
    }
}

/// The principal's role allows RunTask on exactly the task definition the function
/// launches, and passes exactly that task definition's roles, to ECS only.
fn check_launcher(template: &Template, principal: Principal, task_role: &str) {
    let function = template.principal(principal);
    let role = template.role_of(function);
    let task = template.task_definition(task_role);
    let env = function.property("Environment").unwrap()["Variables"].clone();
    assert_eq!(
        logical_id(&env["TASK_DEFINITION"]),
        Some(task.name),
        "{}: TASK_DEFINITION",
        principal.name()
    );
    let run_task = statements_granting(role, "ecs:RunTask");
    assert_eq!(run_task.len(), 1, "{}: one RunTask statement", role.name);
    let resources: Vec<_> = one_or_many(&run_task[0]["Resource"])
        .into_iter()
        .map(|r| logical_id(r).unwrap_or("<not a reference>"))
        .collect();
    assert_eq!(resources, [task.name], "{}: RunTask's resources", role.name);

    let pass = statements_granting(role, "iam:PassRole");
    assert_eq!(pass.len(), 1, "{}: one PassRole statement", role.name);
    let passed: BTreeSet<_> = one_or_many(&pass[0]["Resource"])
        .into_iter()
        .map(|r| logical_id(r).unwrap())
        .collect();
    let task_roles: BTreeSet<_> = ["TaskRoleArn", "ExecutionRoleArn"]
        .iter()
        .map(|field| logical_id(task.property(field).unwrap()).unwrap())
        .collect();
    assert_eq!(passed, task_roles, "{}: the roles it may pass", role.name);
    assert_eq!(
        pass[0]["Condition"]["StringEquals"]["iam:PassedToService"].as_str(),
        Some("ecs-tasks.amazonaws.com"),
        "{}: PassRole only to ECS tasks",
        role.name
    );
    for passed_role in passed {
        let trust = &template.resource(passed_role).body["Properties"]["AssumeRolePolicyDocument"];
        assert_eq!(
            trust["Statement"][0]["Principal"]["Service"].as_str(),
            Some("ecs-tasks.amazonaws.com"),
            "{passed_role} is a role ECS tasks assume"
        );
    }
}

#[test]
fn launchers_run_and_pass_only_their_own_task_definition_and_roles() {
    let template = load();
    check_launcher(&template, Principal::HealthReactor, "serving");
    check_launcher(&template, Principal::SnapshotUpdater, "updater");
    for principal in [
        Principal::RpcGateway,
        Principal::NodeTask,
        Principal::UpdaterTask,
    ] {
        let role = template.role_of(template.principal(principal));
        assert!(
            statements_granting(role, "iam:PassRole").is_empty(),
            "{} passes no role",
            principal.name()
        );
    }
}

// ---------------------------------------------------------------- settings

/// Runs `parse` on the function's template environment, recording what it reads.
fn reads(
    template: &Template,
    principal: Principal,
    parse: impl Fn(&dyn Fn(&str) -> Option<String>) -> Result<(), String>,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let set = template.function_environment(template.principal(principal));
    let read = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        read.borrow_mut().insert(name.to_owned());
        set.get(name).cloned()
    };
    if let Err(e) = parse(&lookup) {
        panic!(
            "{} rejects the template's environment: {e}\n{set:#?}",
            principal.name()
        );
    }
    (set, read.into_inner())
}

fn check_reads(principal: Principal, set: &BTreeMap<String, String>, read: &BTreeSet<String>) {
    let defaults: BTreeSet<&str> = LEFT_TO_CODE_DEFAULTS
        .iter()
        .filter(|(p, _, _)| *p == principal)
        .map(|(_, name, _)| *name)
        .collect();
    for name in read {
        assert!(
            set.contains_key(name) || defaults.contains(name.as_str()),
            "{} reads {name}, which the template does not set (set it, or say in \
             LEFT_TO_CODE_DEFAULTS why the code's default is right)",
            principal.name()
        );
    }
    for name in &defaults {
        assert!(
            read.contains(*name),
            "{}: LEFT_TO_CODE_DEFAULTS names {name}, which it does not read",
            principal.name()
        );
        assert!(
            !set.contains_key(*name),
            "{}: {name} is set, so it is not left to the default",
            principal.name()
        );
    }
    for name in set.keys() {
        assert!(
            read.contains(name),
            "{}: the template sets {name}, which the code never reads",
            principal.name()
        );
    }
}

#[test]
fn every_variable_a_function_reads_is_set_and_accepted() {
    let template = load();

    let (set, read) = reads(&template, Principal::RpcGateway, |var| {
        GatewayConfig::from_env(var)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    check_reads(Principal::RpcGateway, &set, &read);

    let (set, read) = reads(&template, Principal::HealthReactor, |var| {
        let env = ReactorEnv::from_env(Env::new(var)).map_err(|e| e.to_string())?;
        let seed = env.seed.ok_or("no seed fleet config")?;
        (seed.zones.len() == 3)
            .then_some(())
            .ok_or_else(|| format!("zones {:?}", seed.zones))
    });
    check_reads(Principal::HealthReactor, &set, &read);

    let (set, read) = reads(&template, Principal::SnapshotUpdater, |var| {
        UpdaterEnv::from_env(Env::new(var))
            .map(drop)
            .map_err(|e| e.to_string())
    });
    check_reads(Principal::SnapshotUpdater, &set, &read);
}

#[test]
fn operator_commands_read_the_functions_own_settings_from_the_outputs() {
    // `nodefleet status|events|replace|snapshot round --stack` rebuild the functions'
    // settings from the stack's outputs (nodefleet_lambda::stack) and leave the rest to the
    // parsers' defaults: that must give exactly what the functions run with, or an operator's
    // replacement would launch another task definition, size or grace (key lifetime), and an
    // operator's round would run with other timeouts or retention.
    let template = load();
    let outputs: BTreeMap<String, String> = outputs_read()
        .into_iter()
        .map(|name| {
            let output = template.root["Outputs"]
                .get(name)
                .unwrap_or_else(|| panic!("the template has no output {name}"));
            (name.to_owned(), template.resolve(&output["Value"]).unwrap())
        })
        .collect();
    let from_outputs = StackSettings::from_outputs("nodefleet", &outputs)
        .unwrap_or_else(|e| panic!("{e}\n{outputs:#?}"));
    let function_env =
        |principal: Principal| template.function_environment(template.principal(principal));
    let set = function_env(Principal::HealthReactor);
    let lookup = |name: &str| set.get(name).cloned();
    let reactor = ReactorEnv::from_env(Env::new(&lookup)).unwrap();
    assert_eq!(
        from_outputs.reactor,
        ReactorEnv {
            // The seed is the reactor's first run's business; operators read the stored
            // config.
            seed: None,
            ..reactor
        },
        "the reactor's settings differ: add an output for the variable (shared/lambda/src/stack.rs)"
    );
    let set = function_env(Principal::SnapshotUpdater);
    let lookup = |name: &str| set.get(name).cloned();
    let updater = UpdaterEnv::from_env(Env::new(&lookup)).unwrap();
    assert_eq!(
        from_outputs.updater, updater,
        "the updater's settings differ: add an output for the variable (shared/lambda/src/stack.rs)"
    );
}

// ---------------------------------------------------------------- wiring

#[test]
fn the_health_check_calls_the_agent_and_traffic_goes_to_the_rpc_port() {
    let template = load();
    let group = template.resource("NodeTargetGroup");
    let health_port = template.resolve(group.property("HealthCheckPort").unwrap());
    assert_eq!(
        health_port,
        Some(nodefleet_agent::DEFAULT_HEALTH_PORT.to_string())
    );
    assert_eq!(
        group.property("HealthCheckProtocol").unwrap().as_str(),
        Some("HTTP")
    );
    assert_eq!(
        group.property("HealthCheckPath").unwrap().as_str(),
        Some("/health")
    );
    let rpc_port = nodefleet_ports::NODE_RPC_PORT.to_string();
    assert_eq!(
        template.resolve(group.property("Port").unwrap()),
        Some(rpc_port.clone())
    );
    for role in ["serving", "updater"] {
        let task = template.task_definition(role);
        let node = template.container(task, "node");
        let ports: BTreeSet<String> = node["PortMappings"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| template.resolve(&m["ContainerPort"]).unwrap())
            .collect();
        assert!(ports.contains(&rpc_port), "{role}: ports {ports:?}");
        assert!(
            ports.contains(&nodefleet_agent::DEFAULT_HEALTH_PORT.to_string()),
            "{role}: ports {ports:?}"
        );
    }
}

#[test]
fn functions_and_tasks_agree_on_names_and_the_snapshot_store() {
    let template = load();
    let reactor = template.function_environment(template.principal(Principal::HealthReactor));
    let updater = template.function_environment(template.principal(Principal::SnapshotUpdater));
    for env in [&reactor, &updater] {
        // The container the functions' RunTask overrides is there in both definitions.
        let name = &env["CONTAINER_NAME"];
        template.container(template.task_definition("serving"), name);
        template.container(template.task_definition("updater"), name);
    }
    for shared in [
        "CLUSTER",
        "NETWORK_MODE",
        "CAPACITY_PROVIDER",
        "NODE_CLIENT",
        "FLEET_NAME",
    ] {
        assert_eq!(reactor[shared], updater[shared], "{shared}");
    }
    let store = format!(
        "s3://{}/{}",
        updater["SNAPSHOT_BUCKET"],
        updater["SNAPSHOT_PREFIX"].trim_matches('/')
    );
    for role in ["serving", "updater"] {
        let env = template.container_environment(template.task_definition(role), "node");
        assert_eq!(
            env["NODEFLEET_STORE"], store,
            "{role} hydrates from the updater's store"
        );
        assert_eq!(env["NODEFLEET_CLIENT"], reactor["NODE_CLIENT"], "{role}");
    }
}

fn events(function: Resource<'_>) -> Vec<&Value> {
    function
        .property("Events")
        .unwrap()
        .as_mapping()
        .unwrap()
        .values()
        .collect()
}

#[test]
fn the_updater_is_scheduled_as_its_settings_say() {
    let template = load();
    let function = template.principal(Principal::SnapshotUpdater);
    let env = template.function_environment(function);
    let timeout: u64 = template
        .resolve(function.property("Timeout").unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(timeout, FUNCTION_TIMEOUT_SECS);
    let lease: u64 = env["LEASE_TTL_SECS"].parse().unwrap();
    assert!(
        lease > timeout,
        "the lease ({lease} s) outlives a tick ({timeout} s)"
    );

    let mut schedules = BTreeMap::new();
    for event in events(function) {
        assert_eq!(event["Type"].as_str(), Some("Schedule"));
        let input: serde_json::Value =
            serde_json::from_str(event["Properties"]["Input"].as_str().unwrap()).unwrap();
        let rate = event["Properties"]["Schedule"].as_str().unwrap().to_owned();
        schedules.insert(format!("{:?}", UpdaterEvent::parse(&input)), rate);
    }
    let interval: u64 = env["ROUND_INTERVAL_SECS"].parse().unwrap();
    assert_eq!(
        schedules.get("StartRound").map(String::as_str),
        Some(format!("rate({} hours)", interval / 3600).as_str()),
        "the start-round schedule matches ROUND_INTERVAL_SECS ({interval} s)"
    );
    assert_eq!(
        schedules.get("Tick").map(String::as_str),
        Some("rate(1 minute)")
    );
}

#[test]
fn the_reactor_wakes_on_alarms_task_changes_spot_warnings_and_every_minute() {
    let template = load();
    let function = template.principal(Principal::HealthReactor);
    let mut kinds = BTreeSet::new();
    for event in events(function) {
        let properties = &event["Properties"];
        match event["Type"].as_str().unwrap() {
            "Schedule" => {
                kinds.insert(properties["Schedule"].as_str().unwrap().to_owned());
            }
            "EventBridgeRule" => {
                for kind in properties["Pattern"]["detail-type"].as_sequence().unwrap() {
                    kinds.insert(kind.as_str().unwrap().to_owned());
                }
            }
            other => panic!("unexpected trigger {other}"),
        }
    }
    let expected: BTreeSet<String> = [
        "CloudWatch Alarm State Change",
        "EC2 Spot Instance Interruption Warning",
        "ECS Task State Change",
        "rate(1 minute)",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(kinds, expected);
    // One alarm per zone, each named in the alarm rule.
    let alarms = template
        .resources()
        .filter(|r| r.kind() == "AWS::CloudWatch::Alarm")
        .count();
    assert_eq!(alarms, 3);
}

#[test]
fn writes_are_recognised() {
    for write in [
        "s3:PutObject",
        "iam:PassRole",
        "ecs:RunTask",
        "ecs:TagResource",
    ] {
        assert!(is_write(write), "{write}");
    }
    for read in [
        "s3:GetObject",
        "ecs:ListTasks",
        "ecs:DiscoverPollEndpoint",
        "ecr:BatchGetImage",
        "elasticloadbalancing:DescribeTargetHealth",
    ] {
        assert!(!is_write(read), "{read}");
    }
}
