//! The instance catalog: the storage-optimised EC2 types a fleet can run on, as data.
//!
//! Sources, as of 2025:
//! - shape (vCPU, memory, NVMe instance store, network, 100 % random-read IOPS of the instance
//!   store): the AWS "Amazon EC2 Instance Types Guide", page "Specifications for Amazon EC2
//!   storage optimized instances" (docs.aws.amazon.com/ec2/latest/instancetypes/so.html). The
//!   vCPU, memory and disk figures were cross-checked in this session against a public
//!   instance table (i3/i3en sizes and 10/25/50/100 Gbps classes agree).
//! - price: AWS "Amazon EC2 On-Demand Pricing", Linux, region us-east-1. These hourly prices
//!   could not be re-read from the live pricing page in this session (no network); they are
//!   the long-standing published list prices and must be checked before a budget is signed.
//!
//! Units are integers so that comparisons are exact: memory in MiB (AWS states GiB), disk in
//! decimal GB (AWS states instance store in GB), network in Mbps, price in thousandths of a
//! US dollar ("mills") per hour, which is the precision AWS publishes.
//!
//! For "up to" network types the packing uses the published *baseline* bandwidth, not the
//! burst ceiling: a node serves RPC all day, so it cannot live on burst credits. Baseline
//! figures are the ones AWS lists in the network specifications table; where a value is
//! marked "baseline not confirmed" below it is the usual per-size fraction of the family and
//! should be re-checked.

use serde::Serialize;

/// MiB in one GiB: AWS states memory in GiB.
const MIB_PER_GIB: u32 = 1024;

/// How an instance type's network bandwidth is stated by AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkBandwidth {
    /// A fixed bandwidth, sustained.
    Fixed { mbps: u32 },
    /// "Up to" a burst ceiling; only the baseline is sustained.
    UpTo { burst_mbps: u32, baseline_mbps: u32 },
}

impl NetworkBandwidth {
    /// What a long-running node can count on.
    pub fn sustained_mbps(self) -> u32 {
        match self {
            NetworkBandwidth::Fixed { mbps } => mbps,
            NetworkBandwidth::UpTo { baseline_mbps, .. } => baseline_mbps,
        }
    }

    /// AWS's own wording, e.g. "up to 25 Gbps" or "10 Gbps".
    pub fn label(self) -> String {
        match self {
            NetworkBandwidth::Fixed { mbps } => format!("{} Gbps", gbps(mbps)),
            NetworkBandwidth::UpTo { burst_mbps, .. } => format!("up to {} Gbps", gbps(burst_mbps)),
        }
    }
}

fn gbps(mbps: u32) -> String {
    let whole = mbps / 1000;
    let fraction = mbps % 1000;
    if fraction == 0 {
        whole.to_string()
    } else {
        let digits = format!("{fraction:03}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// One EC2 instance type with local NVMe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Number of NVMe instance-store disks.
    pub nvme_disks: u32,
    /// Size of each of those disks, decimal GB.
    pub nvme_disk_gb: u32,
    pub network: NetworkBandwidth,
    /// 100 % random-read IOPS of all instance-store disks together (4 KiB blocks).
    pub random_read_iops: u32,
    /// On-demand Linux price in us-east-1, thousandths of a dollar per hour.
    pub price_mills_per_hour: u32,
}

impl InstanceType {
    /// Raw NVMe capacity of the instance, decimal GB.
    pub fn nvme_total_gb(&self) -> u64 {
        u64::from(self.nvme_disks) * u64::from(self.nvme_disk_gb)
    }
}

const fn up_to(burst_mbps: u32, baseline_mbps: u32) -> NetworkBandwidth {
    NetworkBandwidth::UpTo {
        burst_mbps,
        baseline_mbps,
    }
}

const fn fixed(mbps: u32) -> NetworkBandwidth {
    NetworkBandwidth::Fixed { mbps }
}

#[allow(clippy::too_many_arguments)] // one row of a table: the arguments are its columns
const fn row(
    name: &'static str,
    vcpus: u32,
    memory_gib_x100: u32,
    nvme_disks: u32,
    nvme_disk_gb: u32,
    network: NetworkBandwidth,
    random_read_iops: u32,
    price_mills_per_hour: u32,
) -> InstanceType {
    InstanceType {
        name,
        vcpus,
        // i3 memory has quarter-GiB figures (15.25 GiB), hence hundredths.
        memory_mib: memory_gib_x100 * MIB_PER_GIB / 100,
        nvme_disks,
        nvme_disk_gb,
        network,
        random_read_iops,
        price_mills_per_hour,
    }
}

/// The candidate types: i3, i3en and i4i, every size except `metal` (same shape as the
/// largest size, and ECS gains nothing from bare metal).
pub const CATALOG: &[InstanceType] = &[
    // i3: Xeon E5-2686 v4; "up to 10 Gbps" below 8xlarge.
    row(
        "i3.large",
        2,
        1525,
        1,
        475,
        up_to(10_000, 750),
        100_125,
        156,
    ),
    row(
        "i3.xlarge",
        4,
        3050,
        1,
        950,
        up_to(10_000, 1_250),
        206_250,
        312,
    ),
    row(
        "i3.2xlarge",
        8,
        6100,
        1,
        1_900,
        up_to(10_000, 2_500),
        412_500,
        624,
    ),
    row(
        "i3.4xlarge",
        16,
        12200,
        2,
        1_900,
        up_to(10_000, 5_000),
        825_000,
        1_248,
    ),
    row(
        "i3.8xlarge",
        32,
        24400,
        4,
        1_900,
        fixed(10_000),
        1_650_000,
        2_496,
    ),
    row(
        "i3.16xlarge",
        64,
        48800,
        8,
        1_900,
        fixed(25_000),
        3_300_000,
        4_992,
    ),
    // i3en: "up to 25 Gbps" below 6xlarge.
    row(
        "i3en.large",
        2,
        1600,
        1,
        1_250,
        up_to(25_000, 2_100),
        42_500,
        226,
    ),
    row(
        "i3en.xlarge",
        4,
        3200,
        1,
        2_500,
        up_to(25_000, 4_200),
        85_000,
        452,
    ),
    row(
        "i3en.2xlarge",
        8,
        6400,
        2,
        2_500,
        up_to(25_000, 8_400),
        170_000,
        904,
    ),
    row(
        "i3en.3xlarge",
        12,
        9600,
        1,
        7_500,
        up_to(25_000, 12_500),
        250_000,
        1_356,
    ),
    row(
        "i3en.6xlarge",
        24,
        19200,
        2,
        7_500,
        fixed(25_000),
        500_000,
        2_712,
    ),
    row(
        "i3en.12xlarge",
        48,
        38400,
        4,
        7_500,
        fixed(50_000),
        1_000_000,
        5_424,
    ),
    row(
        "i3en.24xlarge",
        96,
        76800,
        8,
        7_500,
        fixed(100_000),
        2_000_000,
        10_848,
    ),
    // i4i: AWS Nitro SSD; baselines of the "up to" sizes not confirmed in this session.
    row(
        "i4i.large",
        2,
        1600,
        1,
        468,
        up_to(10_000, 781),
        31_250,
        172,
    ),
    row(
        "i4i.xlarge",
        4,
        3200,
        1,
        937,
        up_to(10_000, 1_875),
        62_500,
        343,
    ),
    row(
        "i4i.2xlarge",
        8,
        6400,
        1,
        1_875,
        up_to(12_000, 4_687),
        125_000,
        686,
    ),
    row(
        "i4i.4xlarge",
        16,
        12800,
        1,
        3_750,
        up_to(25_000, 9_375),
        250_000,
        1_373,
    ),
    row(
        "i4i.8xlarge",
        32,
        25600,
        2,
        3_750,
        fixed(18_750),
        500_000,
        2_746,
    ),
    row(
        "i4i.12xlarge",
        48,
        38400,
        3,
        3_750,
        fixed(28_125),
        750_000,
        4_118,
    ),
    row(
        "i4i.16xlarge",
        64,
        51200,
        4,
        3_750,
        fixed(37_500),
        1_000_000,
        5_491,
    ),
    row(
        "i4i.24xlarge",
        96,
        76800,
        6,
        3_750,
        fixed(56_250),
        1_500_000,
        8_237,
    ),
    row(
        "i4i.32xlarge",
        128,
        102400,
        8,
        3_750,
        fixed(75_000),
        2_000_000,
        10_982,
    ),
];

/// The catalog entry called `name`.
pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    CATALOG.iter().find(|instance| instance.name == name)
}
