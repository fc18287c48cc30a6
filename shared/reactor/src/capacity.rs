//! Capacity planning by bin packing: how many nodes of one client fit on each candidate
//! instance type, how many instances each zone needs, what that costs, and which type is
//! cheapest. `nodefleet plan` prints [`render_plan`]; the reactor takes its task CPU and
//! memory reservations from [`TaskReservation`] ([`task_size_for_client`], handed to the ECS
//! scheduler's `task_size`, which puts them into RunTask's overrides), so the numbers that
//! size the fleet are the numbers ECS schedules with.
//!
//! The model:
//! - every node of a fleet runs the same client, so packing is one item size into identical
//!   bins: nodes per instance is the minimum, over CPU, memory, disk, random-read IOPS and
//!   network, of `floor(schedulable capacity / one node's need)`. A type where that minimum
//!   is zero is infeasible, with the resources that do not fit named.
//! - schedulable capacity is the instance less what is not the tasks': [`OS_AND_AGENT_CPU_UNITS`]
//!   and [`OS_AND_AGENT_MEMORY_MIB`] for the OS and the ECS agent, and
//!   [`FILESYSTEM_USABLE_PERCENT`] of the raw NVMe.
//! - disks: all NVMe disks of an instance are striped (RAID 0) into one filesystem that every
//!   node task on it mounts a directory of. Striping rather than one disk per node because a
//!   node's data (2 TB with headroom) is larger than one disk on several types (i3.4xlarge:
//!   2 x 1.9 TB; i3en.2xlarge: 2 x 2.5 TB) and because every node then gets the read rate of
//!   all disks; losing one disk loses the instance's nodes, which is no worse than losing the
//!   instance, and they re-hydrate from the snapshot.
//! - nodes are spread over zones as evenly as possible (6 over 3 is 2-2-2; 7 over 3 is
//!   3-2-2), and each zone is packed on its own: an instance never serves two zones, so
//!   `instances in a zone = ceil(nodes in the zone / nodes per instance)`.
//! - utilisation of a resource is what the nodes reserve over what the chosen instances can
//!   schedule; cost is instances x on-demand price x [`HOURS_PER_MONTH`].
//! - the cheapest choice is the feasible type with the lowest monthly cost; ties go to fewer
//!   instances (fewer things to fail), then to catalog order.
//!
//! Not modelled: replacement surge (the reactor launches a replacement before it stops the
//! old task, so a zone needs one free slot or a capacity provider that adds an instance) and
//! the consensus client beside each execution client.
//!
//! Errors: only the request can be wrong ([`PlanError`]: an unknown client, no nodes, no
//! zones); none are retryable, and a type that does not fit is a result, not an error.

pub mod catalog;
pub mod profiles;

use std::fmt::Write as _;

use serde::Serialize;

use catalog::{CATALOG, InstanceType};
use profiles::{ClientProfile, ECS_CPU_UNITS_PER_VCPU};

/// CPU kept back from tasks for the OS, the ECS agent and the log/metrics daemons: half a
/// vCPU, in ECS units.
pub const OS_AND_AGENT_CPU_UNITS: u32 = 512;
/// Memory kept back from tasks: ECS registers less than the physical memory (the kernel's
/// share) and the agent, Docker and the daemons need about 1 GiB on top; 2 GiB covers both
/// on every size in the catalog.
pub const OS_AND_AGENT_MEMORY_MIB: u32 = 2_048;
/// Share of the raw NVMe that a node can fill: XFS metadata and log on the stripe, and a
/// margin so a full disk is an alarm, not a crashed client.
pub const FILESYSTEM_USABLE_PERCENT: u64 = 97;
/// Hours in the month AWS prices with (8,760 h / 12).
pub const HOURS_PER_MONTH: u64 = 730;

/// Why a plan cannot be made at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown client {0:?}: expected one of geth, reth, erigon, nethermind, besu")]
    UnknownClient(String),
    #[error("a plan needs at least one node")]
    NoNodes,
    #[error("a plan needs at least one zone")]
    NoZones,
}

/// A resource a node reserves on its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Cpu,
    Memory,
    Disk,
    Iops,
    Network,
}

impl Resource {
    pub const ALL: [Resource; 5] = [
        Resource::Cpu,
        Resource::Memory,
        Resource::Disk,
        Resource::Iops,
        Resource::Network,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Disk => "disk",
            Resource::Iops => "iops",
            Resource::Network => "network",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Resource::Cpu => "CPU units",
            Resource::Memory => "MiB",
            Resource::Disk => "GB",
            Resource::Iops => "read IOPS",
            Resource::Network => "Mbps",
        }
    }
}

/// An amount of each resource: what one node needs, or what one instance can schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// ECS CPU units (1024 per vCPU).
    pub cpu_units: u64,
    pub memory_mib: u64,
    /// Decimal GB.
    pub disk_gb: u64,
    pub read_iops: u64,
    pub network_mbps: u64,
}

impl Resources {
    pub fn get(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Cpu => self.cpu_units,
            Resource::Memory => self.memory_mib,
            Resource::Disk => self.disk_gb,
            Resource::Iops => self.read_iops,
            Resource::Network => self.network_mbps,
        }
    }

    /// One node of `profile`.
    pub fn node_of(profile: &ClientProfile) -> Resources {
        Resources {
            cpu_units: u64::from(profile.task_cpu_units()),
            memory_mib: u64::from(profile.task_memory_mib()),
            disk_gb: profile.disk_gb(),
            read_iops: u64::from(profile.read_iops()),
            network_mbps: u64::from(profile.network_mbps()),
        }
    }

    /// What tasks can reserve on one `instance`: the instance less the OS/agent share.
    pub fn schedulable_on(instance: &InstanceType) -> Resources {
        let cpu = u64::from(instance.vcpus) * u64::from(ECS_CPU_UNITS_PER_VCPU);
        Resources {
            cpu_units: cpu.saturating_sub(u64::from(OS_AND_AGENT_CPU_UNITS)),
            memory_mib: u64::from(instance.memory_mib)
                .saturating_sub(u64::from(OS_AND_AGENT_MEMORY_MIB)),
            disk_gb: instance.nvme_total_gb() * FILESYSTEM_USABLE_PERCENT / 100,
            read_iops: u64::from(instance.random_read_iops),
            network_mbps: u64::from(instance.network.sustained_mbps()),
        }
    }
}

/// The ECS task size for one node: what the reactor's RunTask asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TaskReservation {
    /// ECS CPU units (1024 per vCPU).
    pub cpu_units: u32,
    pub memory_mib: u32,
}

impl TaskReservation {
    pub fn of(profile: &ClientProfile) -> TaskReservation {
        TaskReservation {
            cpu_units: profile.task_cpu_units(),
            memory_mib: profile.task_memory_mib(),
        }
    }
}

/// The task size of one node of `client` (a lower-case name from [`profiles::PROFILES`]):
/// what the reactor's RunTask reserves, the same numbers [`plan_for_client`] packs with.
/// `None` for a client nodefleet has no profile of (anvil is local-only).
pub fn task_size_for_client(client: &str) -> Option<TaskReservation> {
    profiles::profile(client).map(TaskReservation::of)
}

/// How many nodes with `need` fit on an instance with `capacity`, and the resource that
/// binds first (the first of [`Resource::ALL`] among equals). A zero need never binds.
pub fn nodes_per_instance(need: &Resources, capacity: &Resources) -> (u64, Resource) {
    let mut best = (u64::MAX, Resource::Cpu);
    for resource in Resource::ALL {
        let need = need.get(resource);
        if need == 0 {
            continue;
        }
        let fit = capacity.get(resource) / need;
        if fit < best.0 {
            best = (fit, resource);
        }
    }
    best
}

/// `nodes` spread over `zones` as evenly as possible, the larger shares first.
pub fn spread_over_zones(nodes: u32, zones: u32) -> Vec<u32> {
    if zones == 0 {
        return Vec::new();
    }
    let base = nodes / zones;
    let remainder = nodes % zones;
    (0..zones)
        .map(|zone| base + u32::from(zone < remainder))
        .collect()
}

/// One zone of a packing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ZonePacking {
    pub nodes: u32,
    pub instances: u64,
}

/// Share of the chosen instances' schedulable capacity that the nodes reserve, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Utilisation {
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
    pub iops: f64,
    pub network: f64,
}

/// A type the nodes fit on, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Packing {
    pub instance_type: &'static str,
    pub nodes_per_instance: u64,
    /// The resource that stops one more node fitting.
    pub limited_by: Resource,
    pub zones: Vec<ZonePacking>,
    pub total_instances: u64,
    pub utilisation: Utilisation,
    /// Thousandths of a dollar per month (730 h), on-demand.
    pub monthly_cost_mills: u64,
}

/// A resource one node needs more of than an instance can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    pub resource: Resource,
    pub needed: u64,
    pub available: u64,
}

/// A type one node does not fit on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Infeasible {
    pub instance_type: &'static str,
    pub shortfalls: Vec<Shortfall>,
}

impl Infeasible {
    /// "disk: needs 1815 GB, has 460 GB; cpu: ..."
    pub fn reason(&self) -> String {
        self.shortfalls
            .iter()
            .map(|s| {
                let unit = s.resource.unit();
                format!(
                    "{}: needs {} {unit}, has {} {unit}",
                    s.resource.name(),
                    s.needed,
                    s.available
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The whole answer for one client, node count and zone count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityPlan {
    pub client: String,
    pub nodes: u32,
    pub zones: u32,
    pub nodes_per_zone: Vec<u32>,
    pub task: TaskReservation,
    /// One node's reservation of every resource.
    pub node: Resources,
    /// Feasible types, in catalog order.
    pub feasible: Vec<Packing>,
    pub infeasible: Vec<Infeasible>,
    /// The cheapest feasible type, if any type fits.
    pub cheapest: Option<&'static str>,
}

impl CapacityPlan {
    pub fn cheapest_packing(&self) -> Option<&Packing> {
        let name = self.cheapest?;
        self.feasible.iter().find(|p| p.instance_type == name)
    }
}

/// Plan `nodes` nodes of `client` (a name from [`profiles::PROFILES`]) over `zones` zones on
/// the built-in [`CATALOG`].
pub fn plan_for_client(client: &str, nodes: u32, zones: u32) -> Result<CapacityPlan, PlanError> {
    let profile =
        profiles::profile(client).ok_or_else(|| PlanError::UnknownClient(client.to_owned()))?;
    plan_capacity(profile, nodes, zones, CATALOG)
}

/// Plan `nodes` nodes of `profile` over `zones` zones on each type of `catalog`.
pub fn plan_capacity(
    profile: &ClientProfile,
    nodes: u32,
    zones: u32,
    catalog: &[InstanceType],
) -> Result<CapacityPlan, PlanError> {
    if nodes == 0 {
        return Err(PlanError::NoNodes);
    }
    if zones == 0 {
        return Err(PlanError::NoZones);
    }
    let node = Resources::node_of(profile);
    let nodes_per_zone = spread_over_zones(nodes, zones);
    let mut feasible = Vec::new();
    let mut infeasible = Vec::new();
    for instance in catalog {
        match pack(instance, &node, &nodes_per_zone) {
            Ok(packing) => feasible.push(packing),
            Err(shortfalls) => infeasible.push(Infeasible {
                instance_type: instance.name,
                shortfalls,
            }),
        }
    }
    let cheapest = feasible
        .iter()
        .enumerate()
        .min_by_key(|(order, p)| (p.monthly_cost_mills, p.total_instances, *order))
        .map(|(_, p)| p.instance_type);
    Ok(CapacityPlan {
        client: profile.client.to_owned(),
        nodes,
        zones,
        nodes_per_zone,
        task: TaskReservation::of(profile),
        node,
        feasible,
        infeasible,
        cheapest,
    })
}

/// Pack the zones' nodes onto `instance`, or say which resources one node lacks.
pub fn pack(
    instance: &InstanceType,
    node: &Resources,
    nodes_per_zone: &[u32],
) -> Result<Packing, Vec<Shortfall>> {
    let capacity = Resources::schedulable_on(instance);
    let (per_instance, limited_by) = nodes_per_instance(node, &capacity);
    if per_instance == 0 {
        let shortfalls = Resource::ALL
            .into_iter()
            .filter(|r| node.get(*r) > capacity.get(*r))
            .map(|resource| Shortfall {
                resource,
                needed: node.get(resource),
                available: capacity.get(resource),
            })
            .collect();
        return Err(shortfalls);
    }
    let zones: Vec<ZonePacking> = nodes_per_zone
        .iter()
        .map(|&nodes| ZonePacking {
            nodes,
            instances: u64::from(nodes).div_ceil(per_instance),
        })
        .collect();
    let total_instances: u64 = zones.iter().map(|z| z.instances).sum();
    let total_nodes: u64 = nodes_per_zone.iter().map(|&n| u64::from(n)).sum();
    let percent = |resource: Resource| {
        let reserved = total_nodes.saturating_mul(node.get(resource));
        let available = total_instances.saturating_mul(capacity.get(resource));
        if available == 0 {
            0.0
        } else {
            reserved as f64 * 100.0 / available as f64
        }
    };
    Ok(Packing {
        instance_type: instance.name,
        nodes_per_instance: per_instance,
        limited_by,
        zones,
        total_instances,
        utilisation: Utilisation {
            cpu: percent(Resource::Cpu),
            memory: percent(Resource::Memory),
            disk: percent(Resource::Disk),
            iops: percent(Resource::Iops),
            network: percent(Resource::Network),
        },
        monthly_cost_mills: total_instances
            .saturating_mul(u64::from(instance.price_mills_per_hour))
            .saturating_mul(HOURS_PER_MONTH),
    })
}

/// Dollars with cents and thousands separators, from thousandths of a dollar.
pub fn format_dollars(mills: u64) -> String {
    let cents = mills.saturating_add(5) / 10;
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("${grouped}.{:02}", cents % 100)
}

fn zones_label(zones: &[impl Copy + Into<u64>]) -> String {
    zones
        .iter()
        .map(|&z| z.into().to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The human table `nodefleet plan` prints: one row per feasible type (instances in each
/// zone, nodes per instance and what limits it, utilisation, monthly cost), the cheapest
/// marked with `*`, then the infeasible types with their reason.
pub fn render_plan(plan: &CapacityPlan) -> String {
    let mut out = String::new();
    let node = &plan.node;
    // Writing to a String cannot fail; the results are discarded on purpose.
    let _ = writeln!(
        out,
        "{} x {} over {} zones ({} nodes per zone)",
        plan.nodes,
        plan.client,
        plan.zones,
        zones_label(&plan.nodes_per_zone)
    );
    let _ = writeln!(
        out,
        "per node: task cpu {} units, task memory {} MiB, disk {} GB, {} read IOPS, {} Mbps",
        plan.task.cpu_units, plan.task.memory_mib, node.disk_gb, node.read_iops, node.network_mbps
    );
    let _ = writeln!(
        out,
        "prices: on-demand Linux, us-east-1, {HOURS_PER_MONTH} h per month\n"
    );
    let _ = writeln!(
        out,
        "  {:<14} {:>10} {:>11} {:>8} {:>9} {:>5} {:>5} {:>5} {:>5} {:>5} {:>13}",
        "type",
        "inst/zone",
        "nodes/inst",
        "limit",
        "instances",
        "cpu",
        "mem",
        "disk",
        "iops",
        "net",
        "per month"
    );
    for packing in &plan.feasible {
        let mark = if plan.cheapest == Some(packing.instance_type) {
            '*'
        } else {
            ' '
        };
        let per_zone: Vec<u64> = packing.zones.iter().map(|z| z.instances).collect();
        let u = &packing.utilisation;
        let _ = writeln!(
            out,
            "{mark} {:<14} {:>10} {:>11} {:>8} {:>9} {:>4.0}% {:>4.0}% {:>4.0}% {:>4.0}% {:>4.0}% {:>13}",
            packing.instance_type,
            zones_label(&per_zone),
            packing.nodes_per_instance,
            packing.limited_by.name(),
            packing.total_instances,
            u.cpu,
            u.memory,
            u.disk,
            u.iops,
            u.network,
            format_dollars(packing.monthly_cost_mills)
        );
    }
    match plan.cheapest_packing() {
        Some(best) => {
            let _ = writeln!(
                out,
                "\n* cheapest: {} x {} ({} per month)",
                best.total_instances,
                best.instance_type,
                format_dollars(best.monthly_cost_mills)
            );
        }
        None => {
            let _ = writeln!(out, "\nno instance type fits one {} node", plan.client);
        }
    }
    if !plan.infeasible.is_empty() {
        let _ = writeln!(out, "\ndoes not fit one node:");
        for infeasible in &plan.infeasible {
            let _ = writeln!(
                out,
                "  {:<14} {}",
                infeasible.instance_type,
                infeasible.reason()
            );
        }
    }
    out
}
