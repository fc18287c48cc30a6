//! What one mainnet full node of each execution client needs from its instance.
//!
//! Chain data sizes come from DESIGN.md's reference figures: geth about 1.2 TiB full,
//! reth about 1.2-1.8 TB full (the upper end is used), erigon about 1.0-1.1 TB full (upper
//! end). Nethermind and besu are not in DESIGN.md: their figures are estimates of a
//! snap-synced mainnet full node (both clients' docs ask for a 2 TB SSD) and were not
//! confirmed in this session. The disk a node reserves is its chain data plus
//! [`GROWTH_HEADROOM_PERCENT`].
//!
//! CPU and memory are the clients' recommended mainnet figures (4 cores, 16 GiB; erigon asks
//! for more memory because it leans on the page cache for MDBX), plus the node agent that runs
//! in every task ([`AGENT_CPU_UNITS`], [`AGENT_MEMORY_MIB`]). Network and IOPS are engineering
//! allowances, not measurements: see [`NODE_NETWORK_MBPS`] and [`IopsClass`].

use serde::Serialize;

/// ECS CPU units in one vCPU.
pub const ECS_CPU_UNITS_PER_VCPU: u32 = 1024;
/// Decimal GB in one TiB, rounded up: 1 TiB = 1,099.5 GB.
const GB_PER_TIB_ROUNDED_UP: u32 = 1_100;
/// Free space kept on top of today's chain data: about a year of mainnet growth plus the room
/// geth's and reth's compaction/MDBX page reuse need to write before they free, so a node is
/// not evicted for a full disk between two capacity reviews.
pub const GROWTH_HEADROOM_PERCENT: u32 = 50;
/// The node agent (hydration, `/health`, snapshot upload) beside the client in each task:
/// a quarter vCPU covers BLAKE3 verification of a disk-bound hydration stream.
pub const AGENT_CPU_UNITS: u32 = 256;
/// The agent's memory: its parallel ranged GETs keep about concurrency x 16 MiB in flight
/// (8 x 16 MiB), plus the process itself.
pub const AGENT_MEMORY_MIB: u32 = 256;
/// Sustained network a serving node is allowed: devp2p gossip is tens of Mbps; the rest is
/// room for JSON-RPC answers (eth_getLogs, block bodies). Hydration bursts above this and is
/// covered by the burst allowance of "up to" types, not by this reservation.
pub const NODE_NETWORK_MBPS: u32 = 1_000;

/// How hard a client's database hits the disk with random reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IopsClass {
    /// LSM-tree stores (geth's pebble, nethermind's and besu's RocksDB): writes are
    /// sequential, reads hit a few levels.
    Standard,
    /// B+tree stores in MDBX (reth, erigon): every state read is a random page read.
    High,
}

impl IopsClass {
    /// The random-read IOPS one node reserves from the instance store (an allowance chosen so
    /// that block processing keeps up with 12 s slots with room to serve RPC; not measured).
    pub fn read_iops(self) -> u32 {
        match self {
            IopsClass::Standard => 10_000,
            IopsClass::High => 25_000,
        }
    }
}

/// The resources one node task needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientProfile {
    pub client: &'static str,
    /// vCPUs the client itself should have.
    pub client_vcpus: u32,
    /// Memory the client itself should have, GiB.
    pub client_memory_gib: u32,
    /// Today's mainnet full-node chain data, decimal GB.
    pub chain_data_gb: u32,
    pub iops_class: IopsClass,
}

impl ClientProfile {
    /// ECS task CPU reservation: client plus agent, in ECS units (1024 per vCPU).
    pub fn task_cpu_units(&self) -> u32 {
        self.client_vcpus * ECS_CPU_UNITS_PER_VCPU + AGENT_CPU_UNITS
    }

    /// ECS task memory reservation: client plus agent, MiB.
    pub fn task_memory_mib(&self) -> u32 {
        self.client_memory_gib * 1024 + AGENT_MEMORY_MIB
    }

    /// Disk one node reserves: chain data plus growth headroom, decimal GB.
    pub fn disk_gb(&self) -> u64 {
        u64::from(self.chain_data_gb) * u64::from(100 + GROWTH_HEADROOM_PERCENT) / 100
    }

    pub fn read_iops(&self) -> u32 {
        self.iops_class.read_iops()
    }

    pub fn network_mbps(&self) -> u32 {
        NODE_NETWORK_MBPS
    }
}

/// The five mainnet clients nodefleet runs on AWS (anvil is local-only and never planned).
pub const PROFILES: &[ClientProfile] = &[
    ClientProfile {
        client: "geth",
        client_vcpus: 4,
        client_memory_gib: 16,
        // DESIGN.md: about 1.2 TiB full.
        chain_data_gb: 12 * GB_PER_TIB_ROUNDED_UP / 10,
        iops_class: IopsClass::Standard,
    },
    ClientProfile {
        client: "reth",
        client_vcpus: 4,
        client_memory_gib: 16,
        // DESIGN.md: about 1.2-1.8 TB full; the upper end.
        chain_data_gb: 1_800,
        iops_class: IopsClass::High,
    },
    ClientProfile {
        client: "erigon",
        client_vcpus: 4,
        client_memory_gib: 32,
        // DESIGN.md: about 1.0-1.1 TB full; the upper end.
        chain_data_gb: 1_100,
        iops_class: IopsClass::High,
    },
    ClientProfile {
        client: "nethermind",
        client_vcpus: 4,
        client_memory_gib: 16,
        // Not in DESIGN.md: estimate, unconfirmed (docs ask for a 2 TB disk).
        chain_data_gb: 1_200,
        iops_class: IopsClass::Standard,
    },
    ClientProfile {
        client: "besu",
        client_vcpus: 4,
        client_memory_gib: 16,
        // Not in DESIGN.md: estimate for Bonsai snap sync, unconfirmed (docs ask for 2 TB).
        chain_data_gb: 1_200,
        iops_class: IopsClass::Standard,
    },
];

/// The profile of `client` (lower-case name, as the agent and CLI spell it).
pub fn profile(client: &str) -> Option<&'static ClientProfile> {
    PROFILES.iter().find(|profile| profile.client == client)
}
