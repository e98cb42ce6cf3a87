//! Tier 2: dvnet's eBPF programs, run by the kernel on crafted packets with
//! BPF_PROG_TEST_RUN, their maps filled from real plans. This proves the whole chain —
//! toolchain, bpf-linker, verifier, maps — and pins down the datapath's behaviour: verdicts,
//! rewritten bytes, checksums, counters.
//!
//! BPF_PROG_TEST_RUN runs a TC program on the loopback device (ifindex 1) of the calling
//! namespace, so each test makes ifindex 1 play one interface of the plan.

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use dvnet::datapath::ebpf::Loaded;
use dvnet::datapath::entries::{MapEntries, entries};
use dvnet::plan::{Datapath, Plan, PlanOptions};
use dvnet::topology::Topology;
use dvnet_common::{DropReason, IfaceInfo, LinkStats, PacketClass, dir, maps, programs};
use dvnet_tests::packet::{self, checksum};
use dvnet_tests::require_root;

const LOOPBACK: u32 = 1;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// A plan's datapath with ifindex 1 standing in for one interface.
struct Bench {
    loaded: Loaded,
    entries: MapEntries,
    plan: Plan,
}

impl Bench {
    /// `node`'s interface `ifname` (or its fabric port with `fabric`) becomes ifindex 1.
    fn new(topology: &str, node: &str, ifname: &str, fabric: bool) -> Bench {
        let topo = Topology::from_json(topology, "test").expect("valid topology");
        let plan = Plan::build(
            &topo,
            PlanOptions {
                datapath: Datapath::Ebpf,
                ..PlanOptions::default()
            },
        )
        .expect("plan");
        let entries = entries(&plan).expect("entries");
        let mut loaded =
            Loaded::new(&entries, plan.links.len(), plan.ipv6).expect("load programs (needs root)");
        let n = plan
            .nodes
            .iter()
            .position(|n| n.name == node)
            .expect("node");
        let link = plan
            .links_of(&plan.nodes[n])
            .find(|l| l.ifname == ifname)
            .expect("interface");
        let ifindex = if fabric {
            link.fabric_port.as_ref().expect("fabric port").ifindex
        } else {
            link.ifindex
        };
        let info = entries
            .ifaces
            .iter()
            .find(|(i, _)| *i == ifindex)
            .expect("iface entry")
            .1;
        let mut ifaces: HashMap<&mut MapData, u32, IfaceInfo> =
            HashMap::try_from(loaded.ebpf_mut().map_mut(maps::IFACES).unwrap()).unwrap();
        ifaces.insert(&LOOPBACK, &info, 0).expect("insert iface");
        // the ICMPv6 errors' source, for an interface that has one
        if let Some((_, source)) = entries.addrs6.iter().find(|(i, _)| *i == ifindex) {
            let mut addrs6: HashMap<&mut MapData, u32, [u8; 16]> =
                HashMap::try_from(loaded.ebpf_mut().map_mut(maps::ADDRS6).unwrap()).unwrap();
            addrs6.insert(&LOOPBACK, source, 0).expect("insert address");
        }
        Bench {
            loaded,
            entries,
            plan,
        }
    }

    fn run(&mut self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &mut SchedClassifier = self
            .loaded
            .ebpf_mut()
            .program_mut(program)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; 512];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("test run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn ingress(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run(programs::NODE_INGRESS, frame)
    }

    fn link_of(&self, node: &str, ifname: &str) -> u32 {
        let n = self.plan.node(node).expect("node");
        self.plan
            .links_of(n)
            .find(|l| l.ifname == ifname)
            .expect("interface")
            .id
    }

    fn stats(&mut self, link: u32) -> LinkStats {
        let stats: PerCpuArray<&MapData, LinkStats> =
            PerCpuArray::try_from(self.loaded.ebpf_mut().map(maps::LINK_STATS).unwrap()).unwrap();
        let mut total = LinkStats::default();
        for cpu in stats.get(&link, 0).expect("read stats").iter() {
            total.add(cpu);
        }
        total
    }

    fn rule_hits(&mut self, slot: u32) -> u64 {
        let hits: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.loaded.ebpf_mut().map(maps::RULE_HITS).unwrap()).unwrap();
        hits.get(&slot, 0).expect("read hits").iter().sum()
    }
}

const CLASSIC: &str = r#"{
    "name": "classic", "automatic_routing": true,
    "subnets": {
        "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
        "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}, "B-2": {}}},
        "C": {"cidr": "10.0.2.0/24", "hosts": {}}
    },
    "routers": {
        "R-1": {"subnets": ["A", "C"], "fw_rules": {"policy": "ACCEPT", "drop": [["A-2", "B"]]}},
        "R-2": {"subnets": ["C", "B"]}
    }
}"#;

const A1: [u8; 4] = [10, 0, 0, 2];
const A2: [u8; 4] = [10, 0, 0, 3];
const B1: [u8; 4] = [10, 0, 1, 2];
const R1_A: [u8; 4] = [10, 0, 0, 1];

fn ip(frame: &[u8]) -> &[u8] {
    &frame[14..34]
}

#[test]
fn a_forwarded_packet_is_redirected_with_ttl_minus_one_and_a_valid_checksum() {
    if !require_root("a_forwarded_packet_is_redirected_with_ttl_minus_one_and_a_valid_checksum") {
        return;
    }
    let mut b = Bench::new(CLASSIC, "R-1", "ethr-1-a", false);
    let ping = packet::icmp_echo(A1, B1, 64, 1);
    let (verdict, out) = b.ingress(&ping);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "forwarded packets leave by bpf_redirect_neigh"
    );
    assert_eq!(ip(&out)[8], 63, "TTL − 1");
    assert_eq!(
        checksum(ip(&out)),
        0,
        "the IP header checksum is valid after the TTL change"
    );
    assert_eq!(out[34..], ping[34..], "the payload is untouched");
    // C is point-to-point: the next hop's MAC is known, the program writes both and hands the
    // packet straight to R-2's interface (bpf_redirect_peer)
    assert_eq!(out[0..6], [0x02, 0xd7, 10, 0, 2, 2], "to R-2's ethr-2-c");
    assert_eq!(out[6..12], [0x02, 0xd7, 10, 0, 2, 1], "from R-1's ethr-1-c");
    let link = b.link_of("R-1", "ethr-1-a");
    let s = b.stats(link);
    assert_eq!(
        s.traffic[dir::TO_NODE][PacketClass::Icmp as usize].packets,
        1
    );
    assert_eq!(s.drops, [0; DropReason::COUNT]);
}

#[test]
fn ttl_expiry_becomes_a_well_formed_time_exceeded_sent_back() {
    if !require_root("ttl_expiry_becomes_a_well_formed_time_exceeded_sent_back") {
        return;
    }
    let mut b = Bench::new(CLASSIC, "R-1", "ethr-1-a", false);
    let ping = packet::icmp_echo(A1, B1, 1, 7);
    let (verdict, out) = b.ingress(&ping);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "the answer goes back out of the ingress interface"
    );
    assert_eq!(out[0..6], packet::SRC_MAC, "back to the sender's MAC");
    assert_eq!(out[12..14], [0x08, 0x00]);
    let ipv4 = ip(&out);
    assert_eq!(ipv4[9], 1, "ICMP");
    assert_eq!(
        ipv4[12..16],
        R1_A,
        "from the router's address on the ingress interface"
    );
    assert_eq!(ipv4[16..20], A1, "to the sender");
    assert_eq!(checksum(ipv4), 0, "valid IP checksum");
    let total = usize::from(u16::from_be_bytes([ipv4[2], ipv4[3]]));
    assert_eq!(out.len(), 14 + total, "the frame is exactly the IP packet");
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (11, 0), "time exceeded in transit");
    assert_eq!(checksum(icmp), 0, "valid ICMP checksum");
    assert_eq!(icmp[8..28], ping[14..34], "quotes the original IP header");
    assert_eq!(icmp[28..36], ping[34..42], "and its first 8 bytes");
    let link = b.link_of("R-1", "ethr-1-a");
    assert_eq!(b.stats(link).drops[DropReason::TtlExceeded as usize], 1);
}

#[test]
fn no_route_becomes_destination_unreachable() {
    if !require_root("no_route_becomes_destination_unreachable") {
        return;
    }
    let mut b = Bench::new(CLASSIC, "R-1", "ethr-1-a", false);
    let (verdict, out) = b.ingress(&packet::udp(A1, [192, 168, 7, 7], 4000, 53));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 0), "destination (net) unreachable");
    assert_eq!(checksum(icmp), 0);
    assert_eq!(checksum(ip(&out)), 0);
    let link = b.link_of("R-1", "ethr-1-a");
    assert_eq!(b.stats(link).drops[DropReason::NoRoute as usize], 1);
}

#[test]
fn no_icmp_error_answers_an_icmp_error() {
    if !require_root("no_icmp_error_answers_an_icmp_error") {
        return;
    }
    let mut b = Bench::new(CLASSIC, "R-1", "ethr-1-a", false);
    // a time-exceeded message whose own TTL runs out here
    let error = packet::icmp(A1, B1, 1, 11, 0, 0);
    let (verdict, _) = b.ingress(&error);
    assert_eq!(verdict, TC_ACT_SHOT, "dropped silently");
    let link = b.link_of("R-1", "ethr-1-a");
    assert_eq!(b.stats(link).drops[DropReason::TtlExceeded as usize], 1);
}

#[test]
fn what_the_router_itself_must_see_goes_to_the_kernel() {
    if !require_root("what_the_router_itself_must_see_goes_to_the_kernel") {
        return;
    }
    let mut b = Bench::new(CLASSIC, "R-1", "ethr-1-a", false);
    assert_eq!(
        b.ingress(&packet::icmp_echo(A1, R1_A, 64, 1)).0,
        TC_ACT_OK,
        "for the router's address"
    );
    assert_eq!(
        b.ingress(&packet::icmp_echo(A1, [10, 0, 2, 1], 64, 1)).0,
        TC_ACT_OK,
        "its other address"
    );
    assert_eq!(
        b.ingress(&packet::arp_request(A1, R1_A)).0,
        TC_ACT_OK,
        "ARP"
    );
    assert_eq!(
        b.ingress(&packet::udp(A1, [224, 0, 0, 5], 1, 2)).0,
        TC_ACT_OK,
        "multicast"
    );
    let mut other_host = packet::icmp_echo(A1, B1, 64, 1);
    other_host[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    let (verdict, out) = b.ingress(&other_host);
    assert_eq!(
        verdict, TC_ACT_OK,
        "a frame for another MAC is not forwarded"
    );
    assert_eq!(ip(&out)[8], 64, "and not touched");
}

#[test]
fn a_denied_packet_dies_and_its_rule_and_reason_are_counted() {
    if !require_root("a_denied_packet_dies_and_its_rule_and_reason_are_counted") {
        return;
    }
    let mut b = Bench::new(CLASSIC, "R-1", "ethr-1-a", false);
    for seq in 0..3 {
        assert_eq!(
            b.ingress(&packet::icmp_echo(A2, B1, 64, seq)).0,
            TC_ACT_SHOT,
            "A-2 → B is dropped"
        );
    }
    assert_eq!(
        b.ingress(&packet::icmp_echo(A1, B1, 64, 1)).0,
        TC_ACT_REDIRECT,
        "A-1 → B passes"
    );
    let link = b.link_of("R-1", "ethr-1-a");
    assert_eq!(b.stats(link).drops[DropReason::FirewallRule as usize], 3);
    assert_eq!(
        b.rule_hits(0),
        3,
        "routers.\"R-1\".fw_rules.drop[0] hit 3 times"
    );
    assert_eq!(
        b.entries.rule_slots[0].origin,
        r#"routers."R-1".fw_rules.drop[0]"#
    );
}

const STATEFUL: &str = r#"{
    "name": "stateful", "automatic_routing": true,
    "subnets": {
        "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}}},
        "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}}}
    },
    "routers": {"R": {"subnets": ["A", "B"], "fw_rules": {
        "policy": "DROP",
        "accept": [{"src": "A", "dst": "B", "proto": "udp", "dport": 53}, {"src": "A", "dst": "B", "proto": "icmp"}]
    }}}
}"#;

#[test]
fn replies_to_an_accepted_flow_pass_under_a_drop_policy() {
    if !require_root("replies_to_an_accepted_flow_pass_under_a_drop_policy") {
        return;
    }
    // Both directions arrive on the same test device: the flow map is what decides.
    let mut b = Bench::new(STATEFUL, "R", "ethr-a", false);
    let (a1, b1) = ([10, 0, 0, 2], [10, 0, 1, 2]);
    assert_eq!(
        b.ingress(&packet::udp(b1, a1, 53, 4000)).0,
        TC_ACT_SHOT,
        "an unsolicited 'reply' dies"
    );
    assert_eq!(
        b.ingress(&packet::udp(a1, b1, 4000, 53)).0,
        TC_ACT_REDIRECT,
        "the query is accepted"
    );
    assert_eq!(
        b.ingress(&packet::udp(b1, a1, 53, 4000)).0,
        TC_ACT_REDIRECT,
        "its reply passes"
    );
    assert_eq!(
        b.ingress(&packet::udp(b1, a1, 53, 4001)).0,
        TC_ACT_SHOT,
        "another flow does not"
    );
    assert_eq!(
        b.ingress(&packet::udp(a1, b1, 4000, 80)).0,
        TC_ACT_SHOT,
        "port 80 is not accepted"
    );
    assert_eq!(
        b.ingress(&packet::icmp(a1, b1, 64, 8, 77, 1)).0,
        TC_ACT_REDIRECT,
        "ping accepted"
    );
    assert_eq!(
        b.ingress(&packet::icmp(b1, a1, 64, 0, 77, 1)).0,
        TC_ACT_REDIRECT,
        "its echo reply passes"
    );
    assert_eq!(
        b.ingress(&packet::icmp(b1, a1, 64, 8, 78, 1)).0,
        TC_ACT_SHOT,
        "B cannot start pinging A"
    );
    let link = b.link_of("R", "ethr-a");
    let drops = b.stats(link).drops;
    assert_eq!(drops[DropReason::FirewallPolicy as usize], 4, "{drops:?}");
    assert_eq!(b.rule_hits(0), 1, "the accept rule decided one new flow");
}

#[test]
fn counters_count_packets_and_bytes_by_direction_and_class() {
    if !require_root("counters_count_packets_and_bytes_by_direction_and_class") {
        return;
    }
    // A-1's fabric port counts what A-1 sends; A-1's own interface what it receives.
    let mut b = Bench::new(CLASSIC, "A-1", "etha-1-a", true);
    let ping = packet::icmp_echo(A1, B1, 64, 1);
    let arp = packet::arp_request(A1, R1_A);
    for _ in 0..10 {
        assert_eq!(
            b.run(programs::FABRIC_INGRESS, &ping).0,
            TC_ACT_OK,
            "counting never changes a packet's fate"
        );
    }
    b.run(programs::FABRIC_INGRESS, &arp);
    let link = b.link_of("A-1", "etha-1-a");
    let s = b.stats(link);
    let icmp = PacketClass::Icmp as usize;
    let len = u64::try_from(ping.len()).unwrap();
    assert_eq!(
        s.traffic[dir::FROM_NODE][icmp].packets,
        10,
        "10 pings sent → 10 counted: {s:?}"
    );
    assert_eq!(s.traffic[dir::FROM_NODE][icmp].bytes, 10 * len);
    assert_eq!(
        s.traffic[dir::FROM_NODE][PacketClass::Arp as usize].packets,
        1
    );
    assert_eq!(
        s.traffic[dir::TO_NODE],
        LinkStats::default().traffic[dir::TO_NODE]
    );
    // every other link is untouched
    for other in (0..u32::try_from(b.plan.links.len()).unwrap()).filter(|&l| l != link) {
        assert_eq!(b.stats(other), LinkStats::default(), "link {other}");
    }
}

#[test]
fn a_host_interface_only_counts() {
    if !require_root("a_host_interface_only_counts") {
        return;
    }
    let mut b = Bench::new(CLASSIC, "B-1", "ethb-1-b", false);
    let ping = packet::icmp_echo(A1, B1, 1, 1);
    let (verdict, out) = b.ingress(&ping);
    assert_eq!(verdict, TC_ACT_OK, "hosts do not forward, whatever the TTL");
    assert_eq!(out, ping);
    let link = b.link_of("B-1", "ethb-1-b");
    assert_eq!(
        b.stats(link).traffic[dir::TO_NODE][PacketClass::Icmp as usize].packets,
        1
    );
}

/// The classic lab, dual-stack on A and B; C (between the routers) is IPv4 only.
const DUAL: &str = r#"{
    "name": "dual", "automatic_routing": true,
    "subnets": {
        "A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64", "hosts": {"A-1": {}, "A-2": {}}},
        "B": {"cidr": "10.0.1.0/24", "cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}, "B-2": {}}},
        "C": {"cidr": "10.0.2.0/24", "hosts": {}}
    },
    "routers": {
        "R-1": {"subnets": ["A", "C"], "fw_rules": {"policy": "ACCEPT", "drop": [["A-2", "B"]]}},
        "R-2": {"subnets": ["C", "B"]}
    }
}"#;

fn v6(text: &str) -> [u8; 16] {
    text.parse::<std::net::Ipv6Addr>()
        .expect("an address")
        .octets()
}

#[test]
fn an_ipv6_packet_is_forwarded_with_hop_limit_minus_one_to_the_peer() {
    if !require_root("an_ipv6_packet_is_forwarded_with_hop_limit_minus_one_to_the_peer") {
        return;
    }
    let mut b = Bench::new(DUAL, "R-1", "ethr-1-a", false);
    let ping = packet::icmp6(v6("fd00:0:a::2"), v6("fd00:0:b::2"), 64, 128, 1);
    let (verdict, out) = b.ingress(&ping);
    assert_eq!(verdict, TC_ACT_REDIRECT, "forwarded (bpf_redirect_peer)");
    assert_eq!(out[14 + 7], 63, "hop limit − 1");
    assert_eq!(
        out[14..21],
        ping[14..21],
        "the rest of the header is untouched"
    );
    assert_eq!(out[22..], ping[22..], "addresses and payload untouched");
    // C is point-to-point: R-2's MAC is known, both are written
    assert_eq!(out[0..6], [0x02, 0xd7, 10, 0, 2, 2], "to R-2's ethr-2-c");
    assert_eq!(out[6..12], [0x02, 0xd7, 10, 0, 2, 1], "from R-1's ethr-1-c");
    let link = b.link_of("R-1", "ethr-1-a");
    let s = b.stats(link);
    assert_eq!(
        s.traffic[dir::TO_NODE][PacketClass::Icmp as usize].packets,
        1,
        "an ICMPv6 echo counts as ICMP"
    );
    assert_eq!(s.drops, [0; DropReason::COUNT]);
}

/// The ICMPv6 error in `out` from `from` to `to`: its type and code, after checking its
/// headers, its checksum and its quote of `original`.
fn icmp6_error(out: &[u8], original: &[u8], from: [u8; 16], to: [u8; 16]) -> (u8, u8) {
    assert_eq!(out[0..6], packet::SRC_MAC, "back to the sender's MAC");
    assert_eq!(out[12..14], [0x86, 0xdd], "IPv6");
    let ip = &out[14..54];
    assert_eq!(ip[0] >> 4, 6);
    assert_eq!(ip[6], 58, "ICMPv6");
    assert_eq!(ip[7], 64, "a fresh hop limit");
    assert_eq!(ip[8..24], from, "from the router");
    assert_eq!(ip[24..40], to, "to the sender");
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    assert_eq!(out.len(), 54 + len, "the frame is exactly the packet");
    let icmp = &out[54..];
    assert_eq!(
        packet::icmp6_checksum(&ip[8..24], &ip[24..40], icmp),
        0,
        "valid ICMPv6 checksum over the pseudo-header"
    );
    assert_eq!(icmp[8..48], original[14..54], "quotes the original header");
    assert_eq!(icmp[48..56], original[54..62], "and the 8 bytes after it");
    (icmp[0], icmp[1])
}

#[test]
fn hop_limit_expiry_and_no_route_become_well_formed_icmpv6_errors() {
    if !require_root("hop_limit_expiry_and_no_route_become_well_formed_icmpv6_errors") {
        return;
    }
    let mut b = Bench::new(DUAL, "R-1", "ethr-1-a", false);
    let (a1, r1) = (v6("fd00:0:a::2"), v6("fd00:0:a::1"));
    let ping = packet::icmp6(a1, v6("fd00:0:b::2"), 1, 128, 7);
    let (verdict, out) = b.ingress(&ping);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "back out of the ingress interface"
    );
    assert_eq!(icmp6_error(&out, &ping, r1, a1), (3, 0), "time exceeded");
    let nowhere = packet::icmp6(a1, v6("fd00:0:c::1"), 64, 128, 8);
    let (verdict, out) = b.ingress(&nowhere);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        icmp6_error(&out, &nowhere, r1, a1),
        (1, 0),
        "destination unreachable: no route"
    );
    // a link-local source is not forwarded: "beyond scope", as the kernel answers
    let local = v6("fe80::d7:aff:fe00:2");
    let scoped = packet::icmp6(local, v6("fd00:0:b::2"), 64, 128, 10);
    let (verdict, out) = b.ingress(&scoped);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        icmp6_error(&out, &scoped, r1, local),
        (1, 2),
        "beyond scope"
    );
    // no error answers an error
    let error = packet::icmp6(a1, v6("fd00:0:b::2"), 1, 3, 9);
    assert_eq!(b.ingress(&error).0, TC_ACT_SHOT, "dropped silently");
    let link = b.link_of("R-1", "ethr-1-a");
    let s = b.stats(link);
    assert_eq!(s.drops[DropReason::TtlExceeded as usize], 2);
    assert_eq!(s.drops[DropReason::NoRoute as usize], 2);
}

#[test]
fn neighbour_discovery_and_the_routers_own_ipv6_go_to_the_kernel_counted_apart() {
    if !require_root("neighbour_discovery_and_the_routers_own_ipv6_go_to_the_kernel_counted_apart")
    {
        return;
    }
    let mut b = Bench::new(DUAL, "R-1", "ethr-1-a", false);
    let a1 = v6("fd00:0:a::2");
    // a neighbour solicitation for R-1's address, to its solicited-node group
    let ns = packet::icmp6(a1, v6("ff02::1:ff00:1"), 255, 135, 0);
    assert_eq!(b.ingress(&ns).0, TC_ACT_OK, "neighbour discovery");
    assert_eq!(
        b.ingress(&packet::icmp6(a1, v6("fd00:0:a::1"), 64, 128, 1))
            .0,
        TC_ACT_OK,
        "for the router's address"
    );
    assert_eq!(
        b.ingress(&packet::icmp6(
            v6("fe80::1"),
            v6("fe80::d7:aff:fe00:1"),
            64,
            128,
            1
        ))
        .0,
        TC_ACT_OK,
        "link-local"
    );
    let link = b.link_of("R-1", "ethr-1-a");
    let s = b.stats(link);
    assert_eq!(
        s.traffic[dir::TO_NODE][PacketClass::Other as usize].packets,
        1,
        "neighbour discovery counts apart from ICMP, as ARP does"
    );
    assert_eq!(
        s.traffic[dir::TO_NODE][PacketClass::Icmp as usize].packets,
        2
    );
}

#[test]
fn the_firewall_drops_ipv6_by_the_same_rules() {
    if !require_root("the_firewall_drops_ipv6_by_the_same_rules") {
        return;
    }
    let mut b = Bench::new(DUAL, "R-1", "ethr-1-a", false);
    for seq in 0..3 {
        assert_eq!(
            b.ingress(&packet::icmp6(
                v6("fd00:0:a::3"),
                v6("fd00:0:b::2"),
                64,
                128,
                seq
            ))
            .0,
            TC_ACT_SHOT,
            "A-2 → B is dropped over IPv6 too"
        );
    }
    assert_eq!(
        b.ingress(&packet::icmp6(
            v6("fd00:0:a::2"),
            v6("fd00:0:b::2"),
            64,
            128,
            1
        ))
        .0,
        TC_ACT_REDIRECT,
        "A-1 → B passes"
    );
    let link = b.link_of("R-1", "ethr-1-a");
    assert_eq!(b.stats(link).drops[DropReason::FirewallRule as usize], 3);
    assert_eq!(b.rule_hits(0), 3, "the one rule, hit over IPv6");
}
