//! What a capture taps, and how it says what the datapath did: on the classic lab's plan.

use std::path::Path;

use dvnet_common::{CaptureMeta, DropReason, verdict};

use super::pcapng::Direction;
use super::{CaptureError, Describer, Request, frame_line, layout, links_of, parse};
use crate::plan::{Datapath, Plan, PlanOptions};
use crate::topology::Topology;

fn classic(datapath: Datapath) -> Plan {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classic.json");
    let topo = Topology::from_file(&path).expect("fixture is valid");
    Plan::build(
        &topo,
        PlanOptions {
            datapath,
            ..PlanOptions::default()
        },
    )
    .expect("plan")
}

fn request(targets: &[&str]) -> Request {
    Request {
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        ..Request::default()
    }
}

fn link<'a>(plan: &'a Plan, node: &str, subnet: &str) -> &'a crate::plan::LinkPlan {
    plan.links
        .iter()
        .find(|l| plan.nodes[l.node].name == node && plan.subnets[l.subnet].name == subnet)
        .expect("link")
}

#[test]
fn targets_name_links_and_mistakes_say_what_there_is() {
    let plan = classic(Datapath::Ebpf);
    let names = |links: Vec<usize>| -> Vec<String> {
        links
            .iter()
            .map(|&l| super::link_name(&plan, &plan.links[l]))
            .collect()
    };
    assert_eq!(
        names(links_of(&plan, &request(&["R-1"])).unwrap()),
        ["R-1:A", "R-1:C", "R-1:uplink"],
        "every link, the outbound access's too"
    );
    assert_eq!(
        names(links_of(&plan, &request(&["R-1:C", "A-1", "R-1:A", "R-1:C"])).unwrap()),
        ["R-1:A", "R-1:C", "A-1:A"],
        "each link once, in the plan's order"
    );
    let all = Request {
        all: true,
        ..Request::default()
    };
    assert_eq!(links_of(&plan, &all).unwrap().len(), plan.links.len());
    let err = |r: &Request| match links_of(&plan, r) {
        Err(CaptureError::Usage(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(err(&request(&["Q-9"])).contains("no node \"Q-9\"; its nodes are"));
    assert_eq!(
        err(&request(&["R-1:B"])),
        "R-1 is not on a subnet \"B\"; it is on A, C, uplink"
    );
    assert!(err(&request(&[])).contains("--all"));
}

#[test]
fn a_link_taps_its_interface_and_where_its_sends_are_first_seen() {
    let plan = classic(Datapath::Ebpf);
    // C: a veth pair between R-1 and R-2; A: a bridge
    let r1c = link(&plan, "R-1", "C");
    let r2c = link(&plan, "R-2", "C");
    let l = layout(&plan, &links_of(&plan, &request(&["R-1:C"])).unwrap());
    assert_eq!(l.interfaces.len(), 1);
    assert_eq!(l.interfaces[0].name, "R-1:C");
    assert_eq!(
        l.taps.iter().map(|(&i, &v)| (i, v)).collect::<Vec<_>>(),
        [
            (r1c.ifindex, (0, Direction::Inbound)),
            (r2c.ifindex, (0, Direction::Outbound))
        ]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "R-1 receives at its end, sends arrive at R-2's"
    );
    let a1 = link(&plan, "A-1", "A");
    let port = a1.fabric_port.as_ref().expect("A is bridged").ifindex;
    let l = layout(&plan, &links_of(&plan, &request(&["A-1"])).unwrap());
    assert_eq!(l.taps.get(&a1.ifindex), Some(&(0, Direction::Inbound)));
    assert_eq!(l.taps.get(&port), Some(&(0, Direction::Outbound)));
    // both ends of C: every packet once, where it arrives
    let l = layout(
        &plan,
        &links_of(&plan, &request(&["R-1:C", "R-2:C"])).unwrap(),
    );
    assert_eq!(l.taps.get(&r1c.ifindex), Some(&(0, Direction::Inbound)));
    assert_eq!(l.taps.get(&r2c.ifindex), Some(&(1, Direction::Inbound)));
    assert_eq!(l.taps.len(), 2);
}

fn meta(ifindex: u32, v: u8) -> CaptureMeta {
    CaptureMeta {
        ifindex,
        verdict: v,
        rule: u32::MAX,
        ..CaptureMeta::default()
    }
}

#[test]
fn verdicts_name_nodes_next_hops_interfaces_and_rules() {
    let plan = classic(Datapath::Ebpf);
    let d = Describer::new(&plan);
    let r1a = link(&plan, "R-1", "A");
    let r1c = link(&plan, "R-1", "C");
    let r2c = link(&plan, "R-2", "C");
    let a1 = link(&plan, "A-1", "A");
    let mut m = meta(r1a.ifindex, verdict::FORWARDED);
    m.egress = r1c.ifindex;
    m.family = 4;
    m.nexthop[..4].copy_from_slice(&r2c.address.unwrap().octets());
    assert_eq!(
        d.verdict(&m),
        format!(
            "forwarded by R-1 to R-2 ({}) out of {} on C",
            r2c.address.unwrap(),
            r1c.ifname
        )
    );
    assert_eq!(
        d.verdict(&meta(a1.ifindex, verdict::DELIVERED)),
        "delivered to A-1"
    );
    assert_eq!(
        d.verdict(&meta(r1a.ifindex, verdict::DELIVERED)),
        "to R-1 itself"
    );
    let port = a1.fabric_port.as_ref().unwrap().ifindex;
    assert_eq!(d.verdict(&meta(port, verdict::SENT)), "sent by A-1 onto A");
    // the classic lab's one rule: DROP A-2 → B
    let slot = plan.node("R-1").unwrap().firewall.as_ref().unwrap().rules[0].slot;
    let mut m = meta(r1a.ifindex, verdict::DROPPED);
    m.reason = DropReason::FirewallRule as u8;
    m.rule = slot;
    assert_eq!(
        d.verdict(&m),
        r#"dropped by R-1: fw-rule routers."R-1".fw_rules.drop[0]"#
    );
    m.reason = DropReason::TtlExceeded as u8;
    assert_eq!(
        d.verdict(&m),
        "dropped by R-1: ttl (answered with ICMP time exceeded)"
    );
    let mut m = meta(r1a.ifindex, verdict::ANSWERED);
    m.reason = DropReason::TtlExceeded as u8;
    assert_eq!(
        d.verdict(&m),
        "ICMP error sent by R-1 for a packet it dropped (ttl)"
    );
    let mut m = meta(a1.ifindex, verdict::DROPPED);
    m.reason = DropReason::ImpairLoss as u8;
    assert_eq!(d.verdict(&m), "dropped on A-1's link on A: impair-loss");

    let kernel = classic(Datapath::Kernel);
    let d = Describer::new(&kernel);
    assert!(
        d.verdict(&meta(link(&kernel, "R-1", "A").ifindex, verdict::DELIVERED))
            .contains("kernel datapath")
    );
}

#[test]
fn an_ipv6_next_hop_is_named_by_its_link_local_address() {
    let topo = Topology::from_json(
        r#"{"name": "six", "automatic_routing": true,
            "subnets": {"A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64", "hosts": {"A-1": {}}},
                        "B": {"cidr": "10.0.1.0/24", "cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}}},
                        "C": {"cidr": "10.0.2.0/24", "hosts": {}}},
            "routers": {"R-1": {"subnets": ["A", "C"]}, "R-2": {"subnets": ["C", "B"]}}}"#,
        "test",
    )
    .unwrap();
    let plan = Plan::build(&topo, PlanOptions::default()).unwrap();
    let d = Describer::new(&plan);
    let (r1a, r1c, r2c) = (
        link(&plan, "R-1", "A"),
        link(&plan, "R-1", "C"),
        link(&plan, "R-2", "C"),
    );
    let mut m = meta(r1a.ifindex, verdict::FORWARDED);
    m.egress = r1c.ifindex;
    m.family = 6;
    m.nexthop = r2c.link_local().octets();
    assert_eq!(
        d.verdict(&m),
        format!(
            "forwarded by R-1 to R-2 ({}) out of {} on C",
            r2c.link_local(),
            r1c.ifname
        )
    );
    // to an address no link has: the address alone
    m.nexthop = "fd00:0:9::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    assert!(
        d.verdict(&m)
            .starts_with("forwarded by R-1 to fd00:0:9::1 out of")
    );
}

#[test]
fn frames_are_summed_up_in_a_line_and_samples_parsed() {
    let mut frame = vec![0u8; 14 + 20 + 8];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[14] = 0x45;
    frame[22] = 63;
    frame[23] = 1;
    frame[26..30].copy_from_slice(&[10, 0, 0, 2]);
    frame[30..34].copy_from_slice(&[10, 0, 1, 2]);
    frame[34] = 8;
    frame[38..40].copy_from_slice(&7u16.to_be_bytes());
    frame[40..42].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(
        frame_line(&frame),
        "10.0.0.2 > 10.0.1.2 ICMP echo request id 7 seq 1, ttl 63"
    );
    let m = CaptureMeta {
        len: u32::try_from(frame.len()).unwrap(),
        ifindex: 9,
        ..CaptureMeta::default()
    };
    let mut sample = Vec::new();
    // SAFETY: plain integers
    sample.extend_from_slice(unsafe {
        std::slice::from_raw_parts(
            (&raw const m).cast::<u8>(),
            std::mem::size_of::<CaptureMeta>(),
        )
    });
    sample.extend_from_slice(&frame);
    sample.extend_from_slice(&[0, 0]);
    let (back, bytes) = parse(&sample).unwrap();
    assert_eq!(back, m);
    assert_eq!(bytes, frame, "the padding is not the packet's");
    assert!(parse(&sample[..20]).is_none());
}
