//! Capacity planning: the packing arithmetic on hand-checked cases, infeasible types, the
//! cheapest choice, zone spreading, the `nodefleet plan` table, and a property test that a
//! packing never over-commits a resource and always hosts every node.
#![allow(clippy::unwrap_used)]

use nodefleet_reactor::capacity::catalog::{CATALOG, NetworkBandwidth, instance_type};
use nodefleet_reactor::capacity::profiles::{ClientProfile, IopsClass, PROFILES, profile};
use nodefleet_reactor::capacity::{
    PlanError, Resource, Resources, TaskReservation, format_dollars, nodes_per_instance, pack,
    plan_capacity, plan_for_client, render_plan, spread_over_zones, task_size_for_client,
};
use proptest::prelude::*;

fn geth() -> &'static ClientProfile {
    profile("geth").unwrap()
}

#[test]
fn geth_task_reservation_is_client_plus_agent_in_ecs_units() {
    // 4 vCPU x 1024 + 256 agent units; 16 GiB x 1024 + 256 MiB agent.
    assert_eq!(
        TaskReservation::of(geth()),
        TaskReservation {
            cpu_units: 4_352,
            memory_mib: 16_640
        }
    );
    // 1.2 TiB ~ 1,320 GB of chain data, plus 50 % headroom.
    assert_eq!(geth().disk_gb(), 1_980);
}

#[test]
fn the_task_size_for_a_client_is_its_profile_reservation_and_none_for_unknown_clients() {
    assert_eq!(
        task_size_for_client("geth"),
        Some(TaskReservation {
            cpu_units: 4_352,
            memory_mib: 16_640
        })
    );
    // erigon asks for 32 GiB: 32 x 1024 + 256 agent MiB.
    assert_eq!(
        task_size_for_client("erigon"),
        Some(TaskReservation {
            cpu_units: 4_352,
            memory_mib: 33_024
        })
    );
    for profile in PROFILES {
        let size = task_size_for_client(profile.client).unwrap();
        assert_eq!(size, TaskReservation::of(profile), "{}", profile.client);
        // The capacity plan packs with the same numbers the RunTask asks for.
        let plan = plan_for_client(profile.client, 3, 3).unwrap();
        assert_eq!(plan.task, size, "{}", profile.client);
    }
    for unknown in ["anvil", "Geth", "", "geth "] {
        assert_eq!(task_size_for_client(unknown), None, "{unknown:?}");
    }
}

#[test]
fn schedulable_capacity_subtracts_the_os_and_agent_share() {
    let capacity = Resources::schedulable_on(instance_type("i3en.3xlarge").unwrap());
    // 12 vCPU x 1024 - 512; 96 GiB - 2 GiB; 97 % of 7,500 GB; published IOPS; baseline network.
    assert_eq!(
        capacity,
        Resources {
            cpu_units: 11_776,
            memory_mib: 96_256,
            disk_gb: 7_275,
            read_iops: 250_000,
            network_mbps: 12_500,
        }
    );
}

#[test]
fn nodes_per_instance_is_the_minimum_over_resources() {
    let need = Resources {
        cpu_units: 1_000,
        memory_mib: 100,
        disk_gb: 10,
        read_iops: 1,
        network_mbps: 1,
    };
    let capacity = Resources {
        cpu_units: 3_500,
        memory_mib: 1_000,
        disk_gb: 25,
        read_iops: 100,
        network_mbps: 100,
    };
    // cpu 3, memory 10, disk 2 (25 / 10), iops 100, network 100.
    assert_eq!(nodes_per_instance(&need, &capacity), (2, Resource::Disk));
}

#[test]
fn geth_on_i3en_3xlarge_packs_two_per_instance_limited_by_cpu() {
    let node = Resources::node_of(geth());
    let packing = pack(instance_type("i3en.3xlarge").unwrap(), &node, &[2, 2, 2]).unwrap();
    // cpu 11,776 / 4,352 = 2; memory 96,256 / 16,640 = 5; disk 7,275 / 1,980 = 3.
    assert_eq!(packing.nodes_per_instance, 2);
    assert_eq!(packing.limited_by, Resource::Cpu);
    assert_eq!(
        packing
            .zones
            .iter()
            .map(|z| z.instances)
            .collect::<Vec<_>>(),
        [1, 1, 1]
    );
    assert_eq!(packing.total_instances, 3);
    // 3 instances x $1.356 x 730 h.
    assert_eq!(packing.monthly_cost_mills, 3 * 1_356 * 730);
    assert_eq!(format_dollars(packing.monthly_cost_mills), "$2,969.64");
    // 2 x 4,352 / 11,776 = 73.9 %; 2 x 1,980 / 7,275 = 54.4 %.
    assert!(
        (packing.utilisation.cpu - 73.913).abs() < 0.01,
        "{}",
        packing.utilisation.cpu
    );
    assert!(
        (packing.utilisation.disk - 54.433).abs() < 0.01,
        "{}",
        packing.utilisation.disk
    );
}

#[test]
fn geth_on_i4i_4xlarge_is_limited_by_disk_to_one_node() {
    let node = Resources::node_of(geth());
    let packing = pack(instance_type("i4i.4xlarge").unwrap(), &node, &[3, 2]).unwrap();
    // disk 3,637 / 1,980 = 1 although cpu would allow 3.
    assert_eq!(
        (packing.nodes_per_instance, packing.limited_by),
        (1, Resource::Disk)
    );
    assert_eq!(
        packing
            .zones
            .iter()
            .map(|z| z.instances)
            .collect::<Vec<_>>(),
        [3, 2]
    );
}

#[test]
fn a_node_whose_data_does_not_fit_one_instance_disk_is_infeasible_with_the_reason() {
    let node = Resources::node_of(geth());
    let shortfalls = pack(instance_type("i3.2xlarge").unwrap(), &node, &[2, 2, 2]).unwrap_err();
    // 1,900 GB x 97 % = 1,843 GB < 1,980 GB; cpu (7,680) and memory (60,416) suffice.
    assert_eq!(shortfalls.len(), 1);
    assert_eq!(shortfalls[0].resource, Resource::Disk);
    assert_eq!(
        (shortfalls[0].needed, shortfalls[0].available),
        (1_980, 1_843)
    );
}

#[test]
fn a_node_larger_than_every_disk_fits_no_type() {
    let huge = ClientProfile {
        client: "archive",
        client_vcpus: 4,
        client_memory_gib: 16,
        // 50 TB x 1.5 = 75 TB, more than i3en.24xlarge's 60 TB.
        chain_data_gb: 50_000,
        iops_class: IopsClass::Standard,
    };
    let plan = plan_capacity(&huge, 3, 3, CATALOG).unwrap();
    assert!(plan.feasible.is_empty());
    assert_eq!(plan.cheapest, None);
    assert_eq!(plan.infeasible.len(), CATALOG.len());
    assert!(
        plan.infeasible
            .iter()
            .all(|i| i.shortfalls.iter().any(|s| s.resource == Resource::Disk))
    );
    assert!(render_plan(&plan).contains("no instance type fits one archive node"));
}

#[test]
fn the_cheapest_choice_is_the_minimum_monthly_cost_among_feasible_types() {
    for profile in PROFILES {
        for (nodes, zones) in [(1, 1), (3, 3), (6, 3), (7, 3), (12, 4), (30, 3)] {
            let plan = plan_capacity(profile, nodes, zones, CATALOG).unwrap();
            let cheapest = plan.cheapest_packing().unwrap();
            let minimum = plan
                .feasible
                .iter()
                .map(|p| p.monthly_cost_mills)
                .min()
                .unwrap();
            assert_eq!(
                cheapest.monthly_cost_mills, minimum,
                "{} {nodes}/{zones}",
                profile.client
            );
        }
    }
    let plan = plan_for_client("geth", 6, 3).unwrap();
    assert_eq!(plan.cheapest, Some("i3en.3xlarge"));
}

#[test]
fn six_nodes_over_three_zones_are_two_per_zone() {
    assert_eq!(spread_over_zones(6, 3), [2, 2, 2]);
    assert_eq!(spread_over_zones(7, 3), [3, 2, 2]);
    assert_eq!(spread_over_zones(2, 3), [1, 1, 0]);
    let plan = plan_for_client("geth", 6, 3).unwrap();
    assert_eq!(plan.nodes_per_zone, [2, 2, 2]);
    for packing in &plan.feasible {
        assert!(
            packing.zones.iter().all(|z| z.nodes == 2),
            "{}",
            packing.instance_type
        );
    }
}

#[test]
fn bad_requests_are_errors() {
    assert_eq!(
        plan_for_client("parity", 6, 3).unwrap_err(),
        PlanError::UnknownClient("parity".into())
    );
    assert_eq!(
        plan_for_client("geth", 0, 3).unwrap_err(),
        PlanError::NoNodes
    );
    assert_eq!(
        plan_for_client("geth", 6, 0).unwrap_err(),
        PlanError::NoZones
    );
}

#[test]
fn the_table_marks_the_cheapest_and_lists_infeasible_types_with_reasons() {
    let table = render_plan(&plan_for_client("geth", 6, 3).unwrap());
    let cheapest_row = table
        .lines()
        .find(|l| l.starts_with('*') && l.contains("i3en.3xlarge"))
        .unwrap();
    assert!(cheapest_row.contains("1/1/1"), "{cheapest_row}");
    assert!(cheapest_row.contains("$2,969.64"), "{cheapest_row}");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("* i")).count(),
        1,
        "{table}"
    );
    assert!(
        table.contains("* cheapest: 3 x i3en.3xlarge ($2,969.64 per month)"),
        "{table}"
    );
    let infeasible_row = table
        .lines()
        .find(|l| l.trim_start().starts_with("i3.2xlarge"))
        .unwrap();
    assert!(
        infeasible_row.contains("disk: needs 1980 GB, has 1843 GB"),
        "{infeasible_row}"
    );
    // The i3.4xlarge row: one node per instance, six instances, $5,466.24.
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("i3.4xlarge"))
        .unwrap();
    assert!(row.contains("2/2/2") && row.contains("$5,466.24"), "{row}");
}

#[test]
fn the_plan_serialises_for_json_output() {
    let json = serde_json::to_value(plan_for_client("reth", 6, 3).unwrap()).unwrap();
    assert_eq!(json["client"], "reth");
    assert_eq!(json["nodes_per_zone"], serde_json::json!([2, 2, 2]));
    assert_eq!(json["task"]["cpu_units"], 4_352);
    let cheapest = json["cheapest"].as_str().unwrap();
    let feasible = json["feasible"].as_array().unwrap();
    assert!(feasible.iter().any(|p| p["instance_type"] == cheapest));
    assert!(feasible[0]["utilisation"]["cpu"].is_number());
}

#[test]
fn format_dollars_rounds_to_cents_and_groups_thousands() {
    assert_eq!(format_dollars(0), "$0.00");
    assert_eq!(format_dollars(1_234_565), "$1,234.57");
    assert_eq!(format_dollars(999), "$1.00");
    assert_eq!(format_dollars(1_000_000_000), "$1,000,000.00");
}

#[test]
fn the_catalog_covers_the_three_families_with_consistent_rows() {
    assert_eq!(CATALOG.len(), 6 + 7 + 9);
    for family in ["i3.", "i3en.", "i4i."] {
        assert!(CATALOG.iter().any(|i| i.name.starts_with(family)));
    }
    let mut names: Vec<_> = CATALOG.iter().map(|i| i.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CATALOG.len(), "duplicate names");
    for instance in CATALOG {
        assert!(instance.nvme_total_gb() > 0 && instance.price_mills_per_hour > 0);
        if let NetworkBandwidth::UpTo {
            burst_mbps,
            baseline_mbps,
        } = instance.network
        {
            assert!(baseline_mbps < burst_mbps, "{}", instance.name);
        }
    }
    assert_eq!(instance_type("i3.large").unwrap().memory_mib, 15_616); // 15.25 GiB
    assert_eq!(
        instance_type("i3en.24xlarge").unwrap().nvme_total_gb(),
        60_000
    );
}

fn demand() -> impl Strategy<Value = Resources> {
    (
        256u64..70_000,
        256u64..600_000,
        1u64..80_000,
        0u64..3_000_000,
        0u64..120_000,
    )
        .prop_map(
            |(cpu_units, memory_mib, disk_gb, read_iops, network_mbps)| Resources {
                cpu_units,
                memory_mib,
                disk_gb,
                read_iops,
                network_mbps,
            },
        )
}

proptest! {
    #[test]
    fn a_packing_never_exceeds_a_resource_and_hosts_every_node(
        node in demand(),
        nodes in 1u32..400,
        zones in 1u32..7,
    ) {
        let per_zone = spread_over_zones(nodes, zones);
        prop_assert_eq!(per_zone.iter().sum::<u32>(), nodes);
        prop_assert!(per_zone.iter().max().unwrap() - per_zone.iter().min().unwrap() <= 1);
        for instance in CATALOG {
            let capacity = Resources::schedulable_on(instance);
            let fits_one = Resource::ALL.iter().all(|&r| node.get(r) <= capacity.get(r));
            match pack(instance, &node, &per_zone) {
                Ok(packing) => {
                    prop_assert!(fits_one, "{} packed a node that does not fit", instance.name);
                    for resource in Resource::ALL {
                        prop_assert!(
                            packing.nodes_per_instance * node.get(resource) <= capacity.get(resource),
                            "{} over-commits {:?}", instance.name, resource
                        );
                    }
                    for (zone, &zone_nodes) in packing.zones.iter().zip(&per_zone) {
                        prop_assert_eq!(zone.nodes, zone_nodes);
                        // enough instances for the zone, and not one more than needed
                        prop_assert!(zone.instances * packing.nodes_per_instance >= u64::from(zone_nodes));
                        prop_assert!(
                            zone.instances == 0
                                || (zone.instances - 1) * packing.nodes_per_instance < u64::from(zone_nodes)
                        );
                    }
                    let u = packing.utilisation;
                    for share in [u.cpu, u.memory, u.disk, u.iops, u.network] {
                        prop_assert!((0.0..=100.0).contains(&share), "{} at {share}%", instance.name);
                    }
                }
                Err(shortfalls) => {
                    prop_assert!(!fits_one, "{} rejected a node that fits", instance.name);
                    prop_assert!(shortfalls.iter().all(|s| s.needed > s.available));
                }
            }
        }
    }
}
