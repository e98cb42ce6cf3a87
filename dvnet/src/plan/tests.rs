//! Plans of the fixtures: golden files, and the routing decisions spelled out.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::{Datapath, Plan, PlanOptions, Segment};
use crate::topology::Topology;

fn plan_of(fixture: &str) -> Plan {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{fixture}.json"));
    let topo = Topology::from_file(&path).expect("fixture is valid");
    Plan::build(
        &topo,
        PlanOptions {
            datapath: Datapath::Ebpf,
            ..PlanOptions::default()
        },
    )
    .expect("plan")
}

/// (destination, via) of a node's routes, as strings.
fn routes(plan: &Plan, node: &str) -> Vec<(String, String)> {
    plan.node(node)
        .expect("node")
        .routes
        .iter()
        .map(|r| (r.dest.to_string(), r.via.to_string()))
        .collect()
}

fn via(plan: &Plan, node: &str, dest: &str) -> String {
    routes(plan, node)
        .into_iter()
        .find(|(d, _)| d == dest)
        .unwrap_or_else(|| panic!("{node} has no route to {dest}: {:?}", routes(plan, node)))
        .1
}

fn address(plan: &Plan, node: &str, subnet: &str) -> Ipv4Addr {
    let n = plan.node(node).expect("node");
    plan.links_of(n)
        .find(|l| plan.subnets[l.subnet].name == subnet)
        .expect("on subnet")
        .address
        .expect("IPv4")
}

#[test]
fn golden_plans() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("DVNET_UPDATE_GOLDEN").is_some();
    for fixture in ["classic", "chain10", "ring", "star", "ospf"] {
        let text = serde_json::to_string_pretty(&plan_of(fixture)).expect("plans serialize") + "\n";
        let path = dir.join(format!("{fixture}.plan.json"));
        if update {
            std::fs::write(&path, &text).expect("write golden");
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            golden == text,
            "the plan of {fixture} differs from {}; if intended, regenerate with DVNET_UPDATE_GOLDEN=1 and review",
            path.display()
        );
        // and it reads back to the same plan
        let back: Plan = serde_json::from_str(&golden).expect("golden plans deserialize");
        assert_eq!(back, plan_of(fixture));
    }
}

#[test]
fn classic_lab_routes_through_the_transit_subnet() {
    // (the fixture has outbound access: every router also routes to the host by default)
    let p = plan_of("classic");
    assert_eq!(
        routes(&p, "R-1"),
        [
            ("10.0.1.0/24".into(), "10.0.2.2".into()),
            ("0.0.0.0/0".into(), "192.168.240.1".into())
        ]
    );
    assert_eq!(
        routes(&p, "R-2"),
        [
            ("10.0.0.0/24".into(), "10.0.2.1".into()),
            ("0.0.0.0/0".into(), "192.168.240.1".into())
        ]
    );
    assert_eq!(routes(&p, "A-2"), [("0.0.0.0/0".into(), "10.0.0.1".into())]);
    assert_eq!(routes(&p, "B-1"), [("0.0.0.0/0".into(), "10.0.1.1".into())]);
    // routers take the lowest addresses, hosts follow in file order
    assert_eq!(address(&p, "R-1", "A"), Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(address(&p, "A-1", "A"), Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(address(&p, "A-2", "A"), Ipv4Addr::new(10, 0, 0, 3));
    assert_eq!(address(&p, "R-2", "C"), Ipv4Addr::new(10, 0, 2, 2));
    // A and B have three members (a bridge), C two (a point-to-point veth)
    let seg = |name: &str| {
        p.subnets
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .segment
            .clone()
    };
    assert!(matches!(seg("A"), Segment::Bridge { .. }));
    assert_eq!(seg("C"), Segment::PointToPoint);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn a_chain_of_ten_routers_routes_both_ways() {
    let p = plan_of("chain10");
    // R0 reaches everything past R1 through R1
    let r1_t1 = address(&p, "R1", "T1").to_string();
    let r0 = routes(&p, "R0");
    assert_eq!(r0.len(), 9, "T2..T9 and L9: {r0:?}");
    assert!(r0.iter().all(|(_, via)| *via == r1_t1), "{r0:?}");
    // R5 in the middle: the far LANs each way
    assert_eq!(
        via(&p, "R5", "10.0.0.0/24"),
        address(&p, "R4", "T5").to_string()
    );
    assert_eq!(
        via(&p, "R5", "10.9.0.0/24"),
        address(&p, "R6", "T6").to_string()
    );
    assert_eq!(
        via(&p, "first", "0.0.0.0/0"),
        address(&p, "R0", "L0").to_string()
    );
}

#[test]
fn ties_in_a_ring_go_to_the_lowest_router() {
    let p = plan_of("ring");
    // R0 → N2: via R1 or via R3, both two routers away: R1 wins
    assert_eq!(
        via(&p, "R0", "10.0.2.0/24"),
        address(&p, "R1", "T01").to_string()
    );
    // R2 → N0: via R1 or R3: R1 wins
    assert_eq!(
        via(&p, "R2", "10.0.0.0/24"),
        address(&p, "R1", "T12").to_string()
    );
    // no tie: R1 → T30 goes through R0
    assert_eq!(
        via(&p, "R1", "172.16.0.12/30"),
        address(&p, "R0", "T01").to_string()
    );
    // deterministic: the same plan every time
    assert_eq!(plan_of("ring"), p);
}

#[test]
fn a_star_routes_through_its_spokes() {
    let p = plan_of("star");
    for (spoke, lan) in [
        ("ra", "10.0.1.0/24"),
        ("rb", "10.0.2.0/24"),
        ("rc", "10.0.3.0/24"),
    ] {
        assert_eq!(via(&p, "hub", lan), address(&p, spoke, "core").to_string());
    }
    assert_eq!(
        via(&p, "ra", "10.0.2.0/24"),
        address(&p, "rb", "core").to_string()
    );
    // an explicit address wins; routers still take the lowest
    assert_eq!(address(&p, "c1", "c"), Ipv4Addr::new(10, 0, 3, 200));
    assert_eq!(address(&p, "rc", "c"), Ipv4Addr::new(10, 0, 3, 1));
    let seg = |name: &str| {
        p.subnets
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .segment
            .clone()
    };
    assert!(
        matches!(seg("core"), Segment::Bridge { .. }),
        "four routers share core"
    );
    assert_eq!(seg("b"), Segment::PointToPoint);
}

#[test]
fn unreachable_subnets_are_reported() {
    let topo = Topology::from_json(
        r#"{"name": "islands", "automatic_routing": true,
            "subnets": {"A": {"cidr": "10.0.0.0/24", "hosts": {"a": {}}},
                        "B": {"cidr": "10.0.1.0/24", "hosts": {"b": {}}},
                        "C": {"cidr": "10.0.2.0/24", "hosts": {"c": {}}}},
            "routers": {"R": {"subnets": ["A", "B"]}, "S": {"subnets": ["C"]}}}"#,
        "test",
    )
    .unwrap();
    let p = Plan::build(&topo, PlanOptions::default()).unwrap();
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0].contains("\"C\"") && p.warnings[0].contains("\"A\", \"B\""),
        "{}",
        p.warnings[0]
    );
}

#[test]
fn ospf_routers_get_a_generated_frr_configuration() {
    let p = plan_of("ospf");
    let Some(super::FrrPlan::Generated { config }) = &p.node("R-1").unwrap().frr else {
        panic!("R-1 runs OSPF");
    };
    for line in [
        "hostname R-1",
        "interface ethr-1-a\n ip ospf area 0.0.0.0\n ip ospf hello-interval 1\n ip ospf dead-interval 3",
        "interface ethr-1-c\n ip ospf area 0.0.0.0",
        "router ospf\n ospf router-id 10.0.0.1",
        // hosts only on A: no hellos there
        " passive-interface ethr-1-a\n",
    ] {
        assert!(config.contains(line), "missing {line:?} in\n{config}");
    }
    assert!(
        !config.contains("passive-interface ethr-1-c"),
        "C joins the two routers"
    );
    // no static routes for routers; hosts keep a gateway
    assert!(p.node("R-1").unwrap().routes.is_empty());
    assert_eq!(via(&p, "A-1", "0.0.0.0/0"), "10.0.0.1");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

fn plan_text(json: &str, previous: Option<&Plan>) -> Plan {
    let topo = Topology::from_json(json, "test.json").expect("valid");
    Plan::build_from(
        &topo,
        PlanOptions {
            datapath: Datapath::Ebpf,
            ..PlanOptions::default()
        },
        previous,
    )
    .expect("plan")
}

/// Every identity of a plan that reaches the kernel, by name.
fn identities(plan: &Plan) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for node in &plan.nodes {
        out.insert(format!("node {}", node.name), node.id.to_string());
        for link in plan.links_of(node) {
            let subnet = &plan.subnets[link.subnet].name;
            out.insert(
                format!("link {}/{subnet}", node.name),
                format!(
                    "id {} {} ifindex {} {} {} port {:?}",
                    link.id,
                    link.ifname,
                    link.ifindex,
                    link.label_address(),
                    super::format_mac(&link.mac),
                    link.fabric_port
                ),
            );
        }
        if let Some(fw) = &node.firewall {
            for rule in &fw.rules {
                out.insert(
                    format!("rule {} {:?} {:?}", node.name, rule.src, rule.dst),
                    rule.slot.to_string(),
                );
            }
        }
    }
    for subnet in &plan.subnets {
        if let Segment::Bridge { name, ifindex } = &subnet.segment {
            out.insert(
                format!("bridge {}", subnet.name),
                format!("{name} {ifindex}"),
            );
        }
    }
    if let Some(u) = &plan.uplink {
        out.insert("uplink".into(), format!("{:?}", u.fabric_port));
    }
    out
}

/// Identities of `before` that `after` has under the same name with another value.
fn renumbered(before: &Plan, after: &Plan) -> Vec<String> {
    let a = identities(before);
    let b = identities(after);
    a.iter()
        .filter_map(|(k, v)| {
            b.get(k)
                .filter(|w| *w != v)
                .map(|w| format!("{k}: {v} -> {w}"))
        })
        .collect()
}

const LAB: &str = r#"{
    "name": "lab", "automatic_routing": true,
    "outbound_access": {"enabled": true, "cidr": "192.168.240.0/24"},
    "subnets": {
        "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
        "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}, "B-2": {}}},
        "C": {"cidr": "10.0.2.0/24", "hosts": {}}
    },
    "routers": {
        "R-1": {"subnets": ["A", "C"], "fw_rules": {"drop": [["A-2", "B"]], "accept": [["A", "B"]]}},
        "R-2": {"subnets": ["C", "B"]}
    }
}"#;

#[test]
fn a_subnet_and_router_added_at_the_top_renumber_nothing() {
    let before = plan_text(LAB, None);
    let edited = LAB
        .replace(
            r#""subnets": {
        "A""#,
            r#""subnets": {
        "Z": {"cidr": "10.9.0.0/24", "hosts": {"Z-1": {}, "Z-2": {}, "Z-3": {}}},
        "A""#,
        )
        .replace(
            r#""routers": {
        "R-1""#,
            r#""routers": {
        "R-0": {"subnets": ["Z", "A"]},
        "R-1""#,
        );
    let after = plan_text(&edited, Some(&before));
    assert_eq!(renumbered(&before, &after), Vec::<String>::new());
    // and the new things got identities nobody had
    let old = identities(&before);
    let new = identities(&after);
    assert!(new.contains_key("node R-0") && new.contains_key("bridge Z"));
    let old_values: std::collections::BTreeSet<&String> = old.values().collect();
    for (k, v) in new.iter().filter(|(k, _)| !old.contains_key(*k)) {
        if k.starts_with("node ") {
            assert!(!old_values.contains(v), "{k} reuses {v}");
        }
    }
    // a fresh plan of the edited file would have renumbered: that is what the seam avoids
    let fresh = plan_text(&edited, None);
    assert!(!renumbered(&before, &fresh).is_empty());
}

#[test]
fn removing_things_keeps_the_rest_and_frees_nothing_within_the_same_edit() {
    let before = plan_text(LAB, None);
    let edited = LAB
        .replace(r#""A-1": {}, "A-2": {}"#, r#""A-2": {}, "A-3": {}"#)
        .replace(
            r#""B-1": {}, "B-2": {}"#,
            r#""B-1": {}, "B-2": {}, "B-3": {}"#,
        );
    let after = plan_text(&edited, Some(&before));
    assert_eq!(renumbered(&before, &after), Vec::<String>::new());
    let gone = before.node("A-1").unwrap();
    let new = after.node("B-3").unwrap();
    assert_ne!(
        new.id, gone.id,
        "a removed node's id is not reused in the same edit"
    );
    let gone_link = &before.links[gone.links[0] as usize];
    let new_link = &after.links[new.links[0] as usize];
    assert_ne!(new_link.id, gone_link.id);
    assert_ne!(new_link.ifindex, gone_link.ifindex);
    // the next edit may reuse them
    let later = plan_text(
        &edited.replace(r#", "B-3": {}"#, r#", "B-3": {}, "B-4": {}"#),
        Some(&after),
    );
    assert_eq!(renumbered(&after, &later), Vec::<String>::new());
}

#[test]
fn a_rule_moved_in_the_file_keeps_its_slot() {
    let before = plan_text(LAB, None);
    let slot_of = |p: &Plan, src: &str| {
        p.node("R-1")
            .unwrap()
            .firewall
            .as_ref()
            .unwrap()
            .rules
            .iter()
            .find(|r| r.src[0].to_string() == src)
            .map(|r| (r.slot, r.origin.clone()))
            .unwrap()
    };
    // the accept rule becomes the first drop rule's neighbour: its origin changes, not its slot
    let edited = LAB.replace(
        r#""drop": [["A-2", "B"]], "accept": [["A", "B"]]"#,
        r#""drop": [["B-1", "A"], ["A-2", "B"]], "accept": [["A", "B"]]"#,
    );
    let after = plan_text(&edited, Some(&before));
    let (slot_before, origin_before) = slot_of(&before, "10.0.0.3/32");
    let (slot_after, origin_after) = slot_of(&after, "10.0.0.3/32");
    assert_eq!(slot_before, slot_after);
    assert_ne!(origin_before, origin_after);
}

#[test]
fn addresses_stay_with_their_nodes() {
    let before = plan_text(LAB, None);
    // a host inserted before the others would take the lowest address in a fresh plan
    let edited = LAB.replace(
        r#""A-1": {}, "A-2": {}"#,
        r#""A-0": {}, "A-1": {}, "A-2": {}"#,
    );
    let after = plan_text(&edited, Some(&before));
    assert_eq!(address(&after, "A-1", "A"), address(&before, "A-1", "A"));
    assert_eq!(address(&after, "A-2", "A"), address(&before, "A-2", "A"));
    assert_eq!(
        address(&after, "A-0", "A"),
        "10.0.0.4".parse::<Ipv4Addr>().unwrap()
    );
    // an explicit address wins over a kept one, and the node that had it moves
    let claimed = LAB.replace(
        r#""A-1": {}, "A-2": {}"#,
        r#""A-1": {}, "A-2": {"ip": "10.0.0.2"}"#,
    );
    let after = plan_text(&claimed, Some(&before));
    assert_eq!(
        address(&after, "A-2", "A"),
        "10.0.0.2".parse::<Ipv4Addr>().unwrap()
    );
    assert_ne!(address(&after, "A-1", "A"), address(&after, "A-2", "A"));
    // a subnet's new prefix moves its addresses
    let moved = LAB.replace("10.0.0.0/24", "10.5.0.0/24");
    let after = plan_text(&moved, Some(&before));
    assert!(
        address(&after, "A-1", "A")
            .to_string()
            .starts_with("10.5.0.")
    );
}

/// The diff from LAB to `edited` (planned as an edit of LAB), as `dvnet diff` prints it.
fn diff_of(edited: &str) -> String {
    let before = plan_text(LAB, None);
    let after = plan_text(edited, Some(&before));
    super::diff::diff(Some(&before), Some(&after)).render()
}

#[test]
fn diff_of_the_same_file_is_empty() {
    let before = plan_text(LAB, None);
    let again = plan_text(LAB, Some(&before));
    assert_eq!(before, again, "planning a file over itself changes nothing");
    assert_eq!(diff_of(LAB), "no changes\n");
}

#[test]
fn diff_goldens() {
    let cases: [(&str, String, &str); 6] = [
        (
            "a host added to a bridged subnet",
            LAB.replace(r#""A-2": {}"#, r#""A-2": {}, "A-3": {}"#),
            "+ host A-3, 10.0.0.4 on A\n",
        ),
        (
            "a subnet with a host behind a new router (C: veth pair -> bridge)",
            LAB.replace(
                r#""C": {"cidr": "10.0.2.0/24", "hosts": {}}"#,
                r#""C": {"cidr": "10.0.2.0/24", "hosts": {}},
        "D": {"cidr": "10.0.3.0/24", "hosts": {"D-1": {}}}"#,
            )
            .replace(
                r#""R-2": {"subnets": ["C", "B"]}"#,
                r#""R-2": {"subnets": ["C", "B"]}, "R-3": {"subnets": ["C", "D"]}"#,
            ),
            "+ router R-3, 10.0.2.3 on C, 10.0.3.1 on D, 192.168.240.4 on uplink\n\
             + host D-1, 10.0.3.2 on D\n\
             ~ subnet C: veth pair -> bridge, 3 members\n\
             + subnet D (veth pair)\n\
             ~ link R-1 on C: rewired (veth pair -> bridge)\n\
             ~ link R-2 on C: rewired (veth pair -> bridge)\n\
             ~ routes of R-1: +10.0.3.0/24 via 10.0.2.3\n\
             ~ routes of R-2: +10.0.3.0/24 via 10.0.2.3\n\
             ~ host: routes +10.0.3.0/24 via 192.168.240.4\n\
             ~ host: NAT table (sources, published ports)\n",
        ),
        (
            "a host removed (B: bridge -> veth pair)",
            LAB.replace(r#""B-1": {}, "B-2": {}"#, r#""B-1": {}"#),
            "- node B-2\n\
             ~ subnet B: bridge, 3 members -> veth pair\n\
             ~ link B-1 on B: rewired (bridge -> veth pair)\n\
             ~ link R-2 on B: rewired (bridge -> veth pair)\n",
        ),
        (
            "a firewall rule and the policy",
            LAB.replace(
                r#""drop": [["A-2", "B"]], "accept": [["A", "B"]]"#,
                r#""policy": "DROP", "drop": [["A-2", "B"]], "accept": [["A", "B"], ["B", "A"]]"#,
            ),
            "~ firewall of R-1: policy ACCEPT -> DROP +routers.\"R-1\".fw_rules.accept[1]\n",
        ),
        (
            "a node's image",
            LAB.replace(r#""A-1": {}"#, r#""A-1": {"image": "dvnet/host"}"#),
            "~ node A-1: recreated (namespace -> container)\n",
        ),
        (
            "an explicit address",
            LAB.replace(r#""B-2": {}"#, r#""B-2": {"ip": "10.0.1.99"}"#),
            "~ link B-2 on B: address 10.0.1.3 -> 10.0.1.99\n",
        ),
    ];
    for (edit, edited, expected) in cases {
        assert_eq!(diff_of(&edited), expected, "{edit}");
    }
}

#[test]
fn up_and_down_are_diffs_from_and_to_nothing() {
    let plan = plan_text(LAB, None);
    let up = super::diff::diff(None, Some(&plan));
    assert_eq!(up.built_nodes().len(), plan.nodes.len());
    assert!(up.links.is_empty(), "links come with their nodes");
    assert_eq!(up.host, [super::diff::HostChange::AddUplink]);
    let down = super::diff::diff(Some(&plan), None);
    assert_eq!(down.removed_nodes().len(), plan.nodes.len());
    assert_eq!(down.host, [super::diff::HostChange::RemoveUplink]);
    assert_eq!(down.subnets.len(), plan.subnets.len());
}

#[test]
fn routes_taken_over_from_the_previous_plan_are_the_routes_computed_anew() {
    // the seam that skips routing when only hosts change must give exactly the routes a
    // search gives, border routers' defaults toward the uplink included
    let value = crate::generate::generate(&crate::generate::GenSpec {
        shape: crate::generate::Shape::Tree,
        nodes: 60,
        hosts_per_lan: 2,
        fanout: 2,
        name: Some("reuse".into()),
    })
    .unwrap();
    let mut lab = value;
    lab["outbound_access"] = serde_json::json!({"enabled": true, "cidr": "192.168.240.0/24"});
    let before = plan_text(&lab.to_string(), None);
    // a host added to one LAN, one removed from another
    let subnets = lab["subnets"].as_object_mut().unwrap();
    let lans: Vec<String> = subnets
        .iter()
        .filter(|(_, s)| s["hosts"].as_object().is_some_and(|h| h.len() >= 2))
        .map(|(n, _)| n.clone())
        .collect();
    subnets[&lans[0]]["hosts"]["extra"] = serde_json::json!({});
    let first = subnets[&lans[1]]["hosts"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    subnets[&lans[1]]["hosts"]
        .as_object_mut()
        .unwrap()
        .remove(&first);
    let topo = Topology::from_json(&lab.to_string(), "test.json").unwrap();
    let options = PlanOptions {
        datapath: Datapath::Ebpf,
        ..PlanOptions::default()
    };
    let (reused, took_over) = Plan::build_inner(&topo, options, Some(&before), true, None).unwrap();
    assert!(took_over, "only hosts changed: the routes are taken over");
    let (computed, _) = Plan::build_inner(&topo, options, Some(&before), false, None).unwrap();
    assert_eq!(reused, computed);
    assert!(reused.nodes.iter().map(|n| n.routes.len()).sum::<usize>() > 100);
    // and where a router changes (it leaves a transit subnet), routes are searched again
    let routers = lab["routers"].as_object_mut().unwrap();
    let (name, router) = routers.iter_mut().next().unwrap();
    let name = name.clone();
    router["subnets"].as_array_mut().unwrap().pop();
    let topo = Topology::from_json(&lab.to_string(), "test.json").unwrap();
    let (changed, took_over) =
        Plan::build_inner(&topo, options, Some(&before), true, None).unwrap();
    assert!(!took_over, "{name} changed: routes are searched again");
    let (searched, _) = Plan::build_inner(&topo, options, Some(&before), false, None).unwrap();
    assert_eq!(changed, searched, "after {name} changed");
}

#[test]
fn under_the_docker_runtime_every_node_is_a_container_but_a_joined_one() {
    let docker = PlanOptions {
        datapath: Datapath::Ebpf,
        runtime: super::Runtime::Docker,
    };
    let plan_with = |json: &str, previous: Option<&Plan>| {
        let topo = Topology::from_json(json, "test.json").expect("valid");
        Plan::build_from(&topo, docker, previous).expect("plan")
    };
    let before = plan_with(LAB, None);
    let images: Vec<(&str, Option<&str>, bool)> = before
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.image.as_deref(), n.container))
        .collect();
    assert_eq!(
        images,
        [
            ("R-1", Some("dvnet/router"), true),
            ("R-2", Some("dvnet/router"), true),
            ("A-1", Some("dvnet/host"), true),
            ("A-2", Some("dvnet/host"), true),
            ("B-1", Some("dvnet/host"), true),
            ("B-2", Some("dvnet/host"), true),
        ]
    );
    // a container joining subnet A is a host of its own, the lab's containers stay
    let mut after = plan_with(
        &LAB.replace(
            r#""A-2": {}"#,
            r#""A-2": {}, "c-0123456789ab": {"ip": "10.0.0.9"}"#,
        ),
        Some(&before),
    );
    let attachment = super::Attachment {
        endpoint: "0123456789abcdef".into(),
        docker_network: "feedface".into(),
        src_name: super::Attachment::src_name("0123456789abcdef"),
    };
    after.mark_attached(&[("c-0123456789ab".into(), attachment)]);
    let joined = after.node("c-0123456789ab").unwrap();
    assert!(!joined.container && joined.image.is_none() && joined.attached.is_some());
    let link = after.links_of(joined).next().unwrap();
    assert_eq!(link.ifname, "dvc0123456789ab");
    // made in the host's namespace: far above the lab's own indexes and the host's
    assert_eq!(link.ifindex, super::attached_ifindex(&after.id, link.id));
    assert!(link.ifindex >= 1 << 24, "{}", link.ifindex);
    assert_ne!(
        super::attached_ifindex("lab-one", link.id),
        super::attached_ifindex("lab-two", link.id),
        "two labs' joining containers do not share an index"
    );
    assert_eq!(
        super::diff::diff(Some(&before), Some(&after)).render(),
        "+ host c-0123456789ab, 10.0.0.9 on A\n"
    );
    // the next edit keeps it
    let mut again = plan_with(
        &LAB.replace(
            r#""A-2": {}"#,
            r#""A-2": {}, "c-0123456789ab": {"ip": "10.0.0.9"}"#,
        ),
        Some(&after),
    );
    again.mark_attached(&[(
        "c-0123456789ab".into(),
        after
            .node("c-0123456789ab")
            .unwrap()
            .attached
            .clone()
            .unwrap(),
    )]);
    assert_eq!(
        super::diff::diff(Some(&after), Some(&again)).render(),
        "no changes\n"
    );
}

/// The shares of `split.json`'s two machines, and the whole lab.
fn split_shares() -> (Plan, Plan, Plan) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/split.json");
    let topo = Topology::from_file(&path).expect("fixture is valid");
    let options = PlanOptions::default();
    (
        Plan::build(&topo, options).expect("plan"),
        Plan::build_share(&topo, options, 0).expect("plan"),
        Plan::build_share(&topo, options, 1).expect("plan"),
    )
}

#[test]
fn a_lab_on_two_machines_splits_into_shares_that_agree() {
    let (whole, m1, m2) = split_shares();
    let names = |p: &Plan| p.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&m1), ["R-1", "A-1"]);
    assert_eq!(names(&m2), ["R-2", "A-2", "B-1", "B-2"]);
    // keyed apart: two machines simulated on one host never collide
    assert_eq!(
        (m1.id.as_str(), m2.id.as_str()),
        ("split-lab-m1", "split-lab-m2")
    );
    assert_eq!(m1.fabric_netns, "dv-split-lab-m1");
    assert_eq!(m2.node("R-2").unwrap().netns, "dv-split-lab-m2.r-2");
    // every node has the address, interface, MAC, routes and firewall the whole lab gives it
    for share in [&m1, &m2] {
        for node in &share.nodes {
            let there = whole.node(&node.name).unwrap();
            let links = |p: &Plan, n: &super::NodePlan| {
                p.links_of(n)
                    .map(|l| (l.id, l.address, l.ifname.clone(), l.mac))
                    .collect::<Vec<_>>()
            };
            assert_eq!(links(share, node), links(&whole, there), "{}", node.name);
            assert_eq!(routes(share, &node.name), routes(&whole, &node.name));
            for r in &node.routes {
                // a route leaves by one of the node's own links
                assert!(node.links.contains(&r.link), "{}: {r:?}", node.name);
                assert_eq!(share.links[r.link as usize].ifname, r.dev);
            }
            assert_eq!(node.firewall, there.firewall, "{}", node.name);
        }
        // names resolve to every node, wherever it runs
        let file = share.hosts_file();
        let mut lines: Vec<&str> = file.lines().collect();
        lines.sort_unstable();
        let whole_file = whole.hosts_file();
        let mut expected: Vec<&str> = whole_file.lines().collect();
        expected.sort_unstable();
        assert_eq!(lines, expected);
        // the smallest underlay (1500) less VXLAN's 50 bytes, on every link
        assert_eq!(share.mtu, 1450);
    }
    assert_eq!(whole.mtu, 1500);
}

#[test]
fn a_lab_on_two_machines_joins_its_spanning_segments_by_vxlan() {
    let (whole, m1, m2) = split_shares();
    let subnet = |p: &Plan, name: &str| p.subnets.iter().find(|s| s.name == name).unwrap().clone();
    let addr = |name: &str| {
        whole
            .links_of(whole.node(name).unwrap())
            .next()
            .unwrap()
            .address
            .unwrap()
    };
    // A spans both machines: a bridge on each, with a VXLAN port to the other's members
    let (a1, a2) = (subnet(&m1, "A"), subnet(&m2, "A"));
    assert!(matches!(a1.segment, Segment::Bridge { .. }));
    assert!(matches!(a2.segment, Segment::Bridge { .. }));
    let (t1, t2) = (a1.tunnel.unwrap(), a2.tunnel.unwrap());
    assert_eq!(t1.vni, t2.vni, "one VNI per segment on every machine");
    assert_eq!(t1.ifname, "vx-a");
    assert_eq!(t1.remotes.len(), 1);
    assert_eq!(t1.remotes[0].machine, "m2");
    assert_eq!(
        t1.remotes[0].address,
        "192.0.2.2".parse::<Ipv4Addr>().unwrap()
    );
    assert_eq!(t1.remotes[0].members, [addr("A-2")]);
    assert_eq!(t2.remotes[0].machine, "m1");
    assert_eq!(
        t2.remotes[0].members,
        [
            whole
                .node("R-1")
                .and_then(|n| whole.links[n.links[0] as usize].address)
                .unwrap(),
            addr("A-1")
        ]
    );
    // C is a transit link between the two routers: a veth pair on one machine, a bridge with
    // a VXLAN port on each side when its ends are on two
    assert_eq!(subnet(&whole, "C").segment, Segment::PointToPoint);
    let (c1, c2) = (subnet(&m1, "C"), subnet(&m2, "C"));
    assert!(matches!(c1.segment, Segment::Bridge { .. }));
    assert_eq!(
        c1.tunnel.as_ref().unwrap().vni,
        c2.tunnel.as_ref().unwrap().vni
    );
    assert_ne!(c1.tunnel.unwrap().vni, t1.vni, "a VNI per segment");
    // B is all on m2: nothing of it on m1, no VXLAN on m2
    assert_eq!(subnet(&m1, "B").segment, Segment::Empty);
    assert!(subnet(&m1, "B").links.is_empty());
    assert!(subnet(&m2, "B").tunnel.is_none());
    assert_eq!(subnet(&m2, "B").segment, subnet(&whole, "B").segment);
    // what each share knows of the other machine
    let machine = m1.machine.as_ref().unwrap();
    assert_eq!(
        (machine.name.as_str(), machine.network.as_str()),
        ("m1", "split-lab")
    );
    let elsewhere: Vec<&str> = machine.elsewhere.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(elsewhere, ["R-2", "A-2", "B-1", "B-2"]);
    assert_eq!(machine.vxlan_port, m2.machine.as_ref().unwrap().vxlan_port);
    // the share's links are renumbered: positions stay consistent
    for share in [&m1, &m2] {
        for (i, link) in share.links.iter().enumerate() {
            assert!(
                share.nodes[link.node]
                    .links
                    .contains(&u32::try_from(i).unwrap())
            );
            assert!(
                share.subnets[link.subnet]
                    .links
                    .contains(&u32::try_from(i).unwrap())
            );
        }
    }
}

/// A dual-stack classic lab whose transit subnet C has no IPv6 prefix.
const DUAL_STACK: &str = r#"{
  "name": "ds", "automatic_routing": true, "update_hosts": true,
  "subnets": {
    "A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64", "hosts": {"A-1": {}, "A-2": {"ip6": "fd00:0:a::a2"}}},
    "B": {"cidr": "10.0.1.0/24", "cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}}},
    "C": {"cidr": "10.0.2.0/24"},
    "D": {"cidr": "10.0.3.0/24", "cidr6": "fd00:0:d::/64", "hosts": {"D-1": {}}}
  },
  "routers": {
    "R-1": {"subnets": ["A", "C"], "fw_rules": {"drop": [["A-2", "B"], ["10.0.0.0/24", "D"], ["fd00:0:a::/64", "D-1"]]}},
    "R-2": {"subnets": ["C", "B", "D"], "ip6": {"D": "fd00:0:d::fe"}}
  }
}"#;

#[test]
fn a_dual_stack_lab_gets_ipv6_addresses_routes_and_rules_from_the_same_decisions() {
    let plan = plan_text(DUAL_STACK, None);
    assert!(plan.ipv6);
    let six = |node: &str, subnet: &str| {
        let n = plan.node(node).expect("node");
        plan.links_of(n)
            .find(|l| plan.subnets[l.subnet].name == subnet)
            .expect("on subnet")
            .address6
            .map(|a| a.to_string())
    };
    // routers first, hosts after, explicit addresses kept out of the pool
    assert_eq!(six("R-1", "A").as_deref(), Some("fd00:0:a::1"));
    assert_eq!(six("A-1", "A").as_deref(), Some("fd00:0:a::2"));
    assert_eq!(six("A-2", "A").as_deref(), Some("fd00:0:a::a2"));
    assert_eq!(six("R-2", "D").as_deref(), Some("fd00:0:d::fe"));
    assert_eq!(six("D-1", "D").as_deref(), Some("fd00:0:d::1"));
    assert_eq!(six("R-1", "C"), None, "C has no IPv6 prefix");
    // IPv6 routes cross C through the next hop's link-local address (from its MAC)
    let r2_c = plan
        .links
        .iter()
        .find(|l| l.ifname == "ethr-2-c")
        .expect("R-2 on C");
    assert_eq!(
        r2_c.link_local(),
        "fe80::d7:aff:fe00:202"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
    );
    let routes6 = |node: &str| -> Vec<(String, String)> {
        plan.node(node)
            .unwrap()
            .routes6
            .iter()
            .map(|r| (r.dest.to_string(), r.via.to_string()))
            .collect()
    };
    // B and D aggregate? fd00:0:b::/64 and fd00:0:d::/64 are not adjacent: two routes
    assert_eq!(
        routes6("R-1"),
        [
            (
                "fd00:0:b::/64".to_owned(),
                "fe80::d7:aff:fe00:202".to_owned()
            ),
            (
                "fd00:0:d::/64".to_owned(),
                "fe80::d7:aff:fe00:202".to_owned()
            ),
        ]
    );
    assert_eq!(
        routes6("R-2"),
        [(
            "fd00:0:a::/64".to_owned(),
            "fe80::d7:aff:fe00:201".to_owned()
        )]
    );
    assert_eq!(
        routes6("A-1"),
        [("::/0".to_owned(), "fe80::d7:aff:fe00:1".to_owned())]
    );
    // rules: names stand for both families, literal prefixes for their own
    let rules = &plan.node("R-1").unwrap().firewall.as_ref().unwrap().rules;
    let sides = |i: usize| {
        let r = &rules[i];
        let s = |v: &[ipnet::Ipv4Net]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let s6 = |v: &[ipnet::Ipv6Net]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        (s(&r.src), s(&r.dst), s6(&r.src6), s6(&r.dst6))
    };
    assert_eq!(
        sides(0),
        (
            vec!["10.0.0.3/32".to_owned()],
            vec!["10.0.1.0/24".to_owned()],
            vec!["fd00:0:a::a2/128".to_owned()],
            vec!["fd00:0:b::/64".to_owned()]
        )
    );
    assert_eq!(
        sides(1),
        (
            vec!["10.0.0.0/24".to_owned()],
            vec!["10.0.3.0/24".to_owned()],
            vec![],
            vec![]
        ),
        "an IPv4 prefix: IPv4 only"
    );
    assert_eq!(
        sides(2),
        (
            vec![],
            vec![],
            vec!["fd00:0:a::/64".to_owned()],
            vec!["fd00:0:d::1/128".to_owned()]
        ),
        "an IPv6 prefix: IPv6 only"
    );
    let v6 =
        crate::datapath::kernel::ruleset6(plan.node("R-1").unwrap().firewall.as_ref().unwrap());
    assert!(v6.contains("-s fd00:0:a::a2/128 -d fd00:0:b::/64"), "{v6}");
    assert!(!v6.contains("10.0.0.0/24"), "{v6}");
    let v4 = crate::datapath::kernel::ruleset(plan.node("R-1").unwrap().firewall.as_ref().unwrap());
    assert!(!v4.contains("fd00"), "{v4}");
    assert_eq!(v4.matches("-j DROP").count(), 2, "{v4}");
    // names resolve to both families
    let hosts = plan.hosts_file();
    assert!(hosts.contains("10.0.0.2\tA-1\n"), "{hosts}");
    assert!(hosts.contains("fd00:0:a::2\tA-1\n"), "{hosts}");
    assert!(hosts.contains("fd00:0:d::fe\tR-2-D\n"), "{hosts}");
}

#[test]
fn a_network_without_ipv6_plans_none() {
    let plan = plan_of("classic");
    assert!(!plan.ipv6);
    assert!(plan.links.iter().all(|l| l.address6.is_none()));
    assert!(plan.nodes.iter().all(|n| n.routes6.is_empty()));
    assert!(!plan.hosts_file().contains("::1"));
    let json = serde_json::to_string(&plan).unwrap();
    assert!(
        !json.contains("ipv6") && !json.contains("routes6"),
        "{json}"
    );
}

#[test]
fn ipv6_addresses_stay_with_their_nodes_across_an_edit() {
    let before = plan_text(DUAL_STACK, None);
    // a host added before A-1 in file order: A-1 keeps its IPv6 address, the new host takes
    // the next free one
    let edited = DUAL_STACK.replace(
        r#""hosts": {"A-1": {}"#,
        r#""hosts": {"A-0": {}, "A-1": {}"#,
    );
    let after = plan_text(&edited, Some(&before));
    let six = |plan: &Plan, node: &str| {
        plan.links_of(plan.node(node).unwrap())
            .next()
            .unwrap()
            .address6
            .unwrap()
            .to_string()
    };
    assert_eq!(six(&after, "A-1"), "fd00:0:a::2");
    assert_eq!(six(&after, "A-0"), "fd00:0:a::3");
}

/// A dual-stack lab with outbound access over both families: R-1 and R-2 on the uplink,
/// R-3 behind R-2; the transit subnet C has no IPv6.
const OUTBOUND6: &str = r#"{"name": "o6", "automatic_routing": true,
 "outbound_access": {"enabled": true, "cidr": "192.168.240.0/24", "cidr6": "fd00:ff::/64",
                     "routers": ["R-1", "R-2"]},
 "subnets": {
   "A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64", "hosts": {"A-1": {"publish": ["8080:80/tcp"]}}},
   "B": {"cidr": "10.0.1.0/24", "cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}}},
   "C": {"cidr": "10.0.2.0/24", "hosts": {}},
   "D": {"cidr": "10.0.3.0/24", "cidr6": "fd00:0:d::/64", "hosts": {"D-1": {}}}},
 "routers": {"R-1": {"subnets": ["A", "C"]}, "R-2": {"subnets": ["C", "B"]},
             "R-3": {"subnets": ["B", "D"]}}}"#;

#[test]
fn outbound_access_over_ipv6_routes_out_through_the_host_and_masquerades_every_prefix() {
    let plan = plan_text(OUTBOUND6, None);
    let uplink = plan.uplink.as_ref().unwrap();
    let six = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    assert_eq!(uplink.host_address6, Some(six("fd00:ff::1")));
    let default6 = |node: &str| {
        let n = plan.node(node).unwrap();
        let r = n.routes6.iter().find(|r| r.dest.prefix_len() == 0).unwrap();
        (r.via.to_string(), r.dev.clone())
    };
    // border routers: to the host's address on the uplink (the host's own is never handed out)
    assert_eq!(
        default6("R-1"),
        ("fd00:ff::1".into(), "ethr-1-uplink".into())
    );
    assert_eq!(
        default6("R-2"),
        ("fd00:ff::1".into(), "ethr-2-uplink".into())
    );
    // the others: the way they route to the uplink
    let r3 = plan.node("R-3").unwrap();
    let to_uplink = r3
        .routes6
        .iter()
        .find(|r| r.dest.to_string() == "fd00:ff::/64")
        .unwrap();
    assert_eq!(
        default6("R-3"),
        (to_uplink.via.to_string(), to_uplink.dev.clone())
    );
    // the host: each subnet through a border router on it, else the first
    let routes: Vec<String> = uplink
        .host_routes6
        .iter()
        .map(|(d, v)| format!("{d} via {v}"))
        .collect();
    assert_eq!(
        routes,
        [
            "fd00:0:a::/64 via fd00:ff::2",
            "fd00:0:b::/64 via fd00:ff::3",
            "fd00:0:d::/64 via fd00:ff::2"
        ]
    );
    let sources: Vec<String> = uplink
        .nat_sources6
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(sources, ["fd00:0:a::/64", "fd00:0:b::/64", "fd00:0:d::/64"]);
    assert_eq!(uplink.published[0].address6, Some(six("fd00:0:a::2")));
    assert!(
        crate::render::plan(&plan).contains("fd00:ff::/64 at fd00:ff::1 (NAT66)"),
        "{}",
        crate::render::plan(&plan)
    );

    // without outbound_access.cidr6: IPv6 stays inside the lab
    let inside = plan_text(&OUTBOUND6.replace(r#", "cidr6": "fd00:ff::/64""#, ""), None);
    let uplink = inside.uplink.as_ref().unwrap();
    assert_eq!(uplink.host_address6, None);
    assert!(uplink.host_routes6.is_empty() && uplink.nat_sources6.is_empty());
    assert_eq!(uplink.published[0].address6, None);
    assert!(
        inside
            .nodes
            .iter()
            .filter(|n| n.kind == super::NodeKind::Router)
            .all(|n| n.routes6.iter().all(|r| r.dest.prefix_len() > 0)),
        "no router has an IPv6 default route"
    );
}

/// IPv6-only subnets B and T (`"cidr6"` alone) between the dual-stack A and C.
const IPV6_ONLY: &str = r#"{"name": "v6o", "automatic_routing": true,
 "subnets": {
   "A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64", "hosts": {"A-1": {}}},
   "B": {"cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}}},
   "T": {"cidr6": "fd00:0:7::/64"},
   "C": {"cidr": "10.0.2.0/24", "cidr6": "fd00:0:c::/64", "hosts": {"C-1": {}}}},
 "routers": {"R-1": {"subnets": ["A", "T"]}, "R-2": {"subnets": ["T", "B"]},
             "R-3": {"subnets": ["B", "C"]}}}"#;

#[test]
fn ipv6_only_subnets_carry_ipv6_routes_and_no_ipv4() {
    let plan = plan_text(IPV6_ONLY, None);
    let link = |node: &str, subnet: &str| {
        plan.links_of(plan.node(node).unwrap())
            .find(|l| plan.subnets[l.subnet].name == subnet)
            .unwrap()
            .clone()
    };
    // no IPv4 on B and T: MACs made from the link's identity, link-local from the MAC
    let b1 = link("B-1", "B");
    assert_eq!(b1.address, None);
    assert_eq!(b1.address6, Some("fd00:0:b::3".parse().unwrap()));
    let [_, 0xd6, a, b, c, d] = b1.mac else {
        panic!("{:?}", b1.mac)
    };
    assert_eq!(u32::from_be_bytes([a, b, c, d]), b1.id);
    assert_eq!(link("R-3", "C").address, Some("10.0.2.1".parse().unwrap()));
    assert!(plan.subnets.iter().any(|s| s.cidr.is_none()));
    // IPv4 does not cross B or T: nobody routes 10.0.0.0/24 and 10.0.2.0/24 to each other
    let r1 = plan.node("R-1").unwrap();
    assert!(r1.routes.is_empty(), "{:?}", r1.routes);
    let to_c6 = r1
        .routes6
        .iter()
        .find(|r| r.dest.to_string() == "fd00:0:c::/64")
        .unwrap();
    assert_eq!(to_c6.via, link("R-2", "T").link_local());
    // B's hosts: IPv6 routes only, the default toward R-2 (A and T), C through R-3
    let b1_node = plan.node("B-1").unwrap();
    assert!(b1_node.routes.is_empty());
    let routes6: Vec<(String, Ipv6Addr)> = b1_node
        .routes6
        .iter()
        .map(|r| (r.dest.to_string(), r.via))
        .collect();
    assert_eq!(
        routes6,
        [
            ("fd00:0:c::/64".to_owned(), link("R-3", "B").link_local()),
            ("::/0".to_owned(), link("R-2", "B").link_local())
        ]
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains(r#"over IPv4, subnets "C" cannot reach subnets "A""#)),
        "{:?}",
        plan.warnings
    );
    let hosts = plan.hosts_file();
    assert!(hosts.contains("fd00:0:b::3\tB-1\n"), "{hosts}");
    assert!(
        !hosts
            .lines()
            .any(|l| l.ends_with("\tB-1") && l.starts_with("10.")),
        "{hosts}"
    );
    // B gets IPv4: the same links, an address each, and IPv4 crosses
    let dual = plan_text(
        &IPV6_ONLY
            .replace(
                r#""B": {"cidr6""#,
                r#""B": {"cidr": "10.0.1.0/24", "cidr6""#,
            )
            .replace(
                r#""T": {"cidr6""#,
                r#""T": {"cidr": "10.0.7.0/24", "cidr6""#,
            ),
        Some(&plan),
    );
    assert!(dual.warnings.is_empty(), "{:?}", dual.warnings);
    let r1 = dual.node("R-1").unwrap();
    assert!(
        r1.routes
            .iter()
            .any(|r| r.dest.to_string() == "10.0.2.0/24")
    );
    let diff = super::diff::diff(Some(&plan), Some(&dual)).render();
    assert!(
        diff.contains("~ link B-1 on B: address none -> 10.0.1.3"),
        "{diff}"
    );
}
