//! Data-center fabrics: equal-cost multipath on a leaf-spine Clos (flows spread over every
//! spine, each flow on one path, nothing reordered), on both datapaths and through a routing
//! daemon's routes; a k=4 fat tree where every host reaches every host; a host with two
//! equal-cost gateways spreads its flows over both.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use dvnet::generate;
use dvnet::plan::naming::node_netns;
use dvnet_tests::{TestNet, eventually, require_root, text};
use serde_json::{Value, json};

const SPINES: usize = 4;
const FLOWS: usize = 64;
const PER_FLOW: u32 = 20;
const PORT: u16 = 7000;

fn stats(net: &TestNet) -> Value {
    let out = net.host.dvnet(&["stats", &net.id, "--json"]);
    assert!(out.status.success(), "dvnet stats: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("stats --json is JSON")
}

/// UDP datagrams each spine received from leaf l1 (on its link to l1).
fn udp_into_spines(s: &Value) -> Vec<u64> {
    (1..=SPINES)
        .map(|i| {
            let spine = format!("s{i}");
            let subnet = format!("s{i}-l1");
            s["links"]
                .as_array()
                .expect("links")
                .iter()
                .find(|l| l["node"] == spine.as_str() && l["subnet"] == subnet.as_str())
                .and_then(|l| l["rx"]["by_class"]["udp"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

/// UDP sockets bound in a node's namespace.
fn sockets_in(net: &TestNet, node: &str, binds: &[&str]) -> Vec<UdpSocket> {
    let id = dvnet::topology::network_id(&net.id).expect("a network id");
    let ns = dvnet::netns::open(&node_netns(&id, node)).expect("the node's namespace");
    dvnet::netns::on_thread(ns.as_fd(), || {
        binds
            .iter()
            .map(|b| UdpSocket::bind(b).expect("a UDP socket"))
            .collect()
    })
    .expect("a thread in the namespace")
}

/// Sends `rounds` datagrams on each socket (flow, sequence), round by round, and returns what
/// `sink` received: per flow, the sequence numbers in arrival order.
fn send_and_receive(
    senders: &[UdpSocket],
    sink: &UdpSocket,
    to: &str,
    rounds: u32,
) -> BTreeMap<u32, Vec<u32>> {
    let total = senders.len() * rounds as usize;
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a timeout");
    let receiver = sink.try_clone().expect("a clone of the sink");
    let reader = std::thread::spawn(move || {
        let mut got: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut buf = [0u8; 64];
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while n < total && Instant::now() < deadline {
            if let Ok(len) = receiver.recv(&mut buf)
                && len == 8
            {
                let flow = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
                let seq = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
                got.entry(flow).or_default().push(seq);
                n += 1;
            }
        }
        got
    });
    for seq in 0..rounds {
        for (flow, s) in senders.iter().enumerate() {
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&u32::try_from(flow).expect("few flows").to_be_bytes());
            msg[4..].copy_from_slice(&seq.to_be_bytes());
            s.send_to(&msg, to).expect("sent");
        }
        // a short pause between rounds keeps every queue far from full
        std::thread::sleep(Duration::from_millis(2));
    }
    reader.join().expect("the reader")
}

/// A node's first address, as `dvnet inspect` reads it from the node.
fn address_of(net: &TestNet, node: &str) -> String {
    net.inspect()["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == node)
        .and_then(|n| {
            n["interfaces"]
                .as_array()?
                .iter()
                .find(|i| i["name"] != "lo")?["addresses"][0]
                .as_str()
        })
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address of {node}"))
        .to_owned()
}

/// A leaf-spine lab: 4 spines, 2 leaves of one host each (`h1-1` on l1, `h2-1` on l2).
fn clos(routing: &str) -> Value {
    let mut doc = generate::clos(SPINES, 2, 1, None, true).expect("a Clos");
    doc["update_hosts"] = Value::Bool(true);
    if routing == "ospf" {
        doc["routing"] = Value::String("ospf".into());
        doc.as_object_mut()
            .expect("an object")
            .remove("automatic_routing");
    }
    doc
}

fn flows_spread_over_every_spine_and_each_keeps_to_one(datapath: &str, routing: &str) {
    let net = TestNet::new(
        &format!("ecmp-{}{}", &datapath[..1], &routing[..1]),
        clos(routing),
    );
    net.up(&["--datapath", datapath]);
    let h2 = address_of(&net, "h2-1");
    if routing == "ospf" {
        // FRR's equal-cost routes: one line per next hop under the route to l2's LAN
        assert!(
            eventually(60, || {
                let out = net.exec("l1", &["ip", "route", "show", "10.0.1.0/24"]);
                String::from_utf8_lossy(&out.stdout)
                    .matches("nexthop")
                    .count()
                    == SPINES
            }),
            "OSPF gave l1 {SPINES} equal-cost next hops: {}",
            text(&net.exec("l1", &["ip", "route"]))
        );
        // and every spine its route on to l2's LAN (else datagrams hashed to it die)
        for i in 1..=SPINES {
            let spine = format!("s{i}");
            assert!(
                eventually(60, || {
                    let out = net.exec(&spine, &["ip", "route", "show", "10.0.1.0/24"]);
                    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
                }),
                "OSPF gave {spine} a route to 10.0.1.0/24"
            );
        }
    }
    assert!(
        eventually(10, || net.ping("h1-1", &h2)),
        "h1-1 reaches h2-1"
    );
    let to = format!("{h2}:{PORT}");
    let (senders, sink) =
        flows_over_every_spine(&net, ("0.0.0.0", &to), &format!("{datapath}/{routing}"));

    // one flow of 500 datagrams: all on one spine
    let before = udp_into_spines(&stats(&net));
    let one = &senders[..1];
    let got = send_and_receive(one, &sink, &to, 500);
    let after = udp_into_spines(&stats(&net));
    assert_eq!(
        got.get(&0).cloned().unwrap_or_default(),
        (0..500).collect::<Vec<_>>(),
        "one flow arrives whole and in order"
    );
    let mut spread: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    spread.sort_unstable();
    assert_eq!(
        spread,
        [0, 0, 0, 500],
        "{datapath}/{routing}: one flow takes one path"
    );
    if routing == "static" {
        // spine s1's link to l1 taken down: its next hop leaves l1's groups, nothing is lost
        let out = net.host.dvnet(&["link", &net.id, "s1", "s1-l1", "down"]);
        assert!(out.status.success(), "dvnet link down: {}", text(&out));
        let before = udp_into_spines(&stats(&net));
        let got = send_and_receive(&senders, &sink, &to, PER_FLOW);
        let after = udp_into_spines(&stats(&net));
        let spread: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(
            got.values().map(Vec::len).sum::<usize>(),
            FLOWS * PER_FLOW as usize,
            "{datapath}: with s1 down every datagram still arrives: {spread:?}"
        );
        assert!(
            spread[0] == 0 && spread[1..].iter().all(|&n| n > 0),
            "{datapath}: s1 down, flows spread over the other spines: {spread:?}"
        );
    }
    let out = net.down();
    assert!(out.status.success(), "down: {}", text(&out));
    let left = net.leftovers();
    assert!(left.is_empty(), "down leaves nothing: {left:?}");
}

fn fat_tree_every_host_reaches_every_host(datapath: &str) {
    let mut doc = generate::fat_tree(4, None, true).expect("a fat tree");
    doc["update_hosts"] = Value::Bool(true);
    let hosts: Vec<String> = doc["subnets"]
        .as_object()
        .expect("subnets")
        .values()
        .flat_map(|s| s["hosts"].as_object().expect("hosts").keys().cloned())
        .collect();
    assert_eq!(hosts.len(), 16);
    let net = TestNet::new(&format!("ft-{}", &datapath[..1]), doc);
    net.up(&["--datapath", datapath]);
    // each host pings the 15 others, in one shell per host
    for from in &hosts {
        let targets: Vec<&str> = hosts
            .iter()
            .filter(|&n| n != from)
            .map(String::as_str)
            .collect();
        let script = format!(
            "for t in {}; do ping -c 1 -W 2 $t >/dev/null || echo unreachable $t; done",
            targets.join(" ")
        );
        let out = net.exec(from, &["sh", "-c", &script]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{datapath}: {from}: {said}{}",
            text(&out)
        );
    }
    let out = net.down();
    assert!(out.status.success(), "down: {}", text(&out));
    let left = net.leftovers();
    assert!(left.is_empty(), "down leaves nothing: {left:?}");
}

#[test]
fn ebpf_flows_spread_over_every_spine_and_each_keeps_to_one() {
    if require_root("ebpf_flows_spread_over_every_spine_and_each_keeps_to_one") {
        flows_spread_over_every_spine_and_each_keeps_to_one("ebpf", "static");
    }
}

#[test]
fn kernel_flows_spread_over_every_spine_and_each_keeps_to_one() {
    if require_root("kernel_flows_spread_over_every_spine_and_each_keeps_to_one") {
        flows_spread_over_every_spine_and_each_keeps_to_one("kernel", "static");
    }
}

/// OSPF in FRR installs the equal-cost routes; the eBPF routers follow them through the
/// kernel's FIB, which picks by the flow's ports.
#[test]
fn ebpf_follows_a_routing_daemons_equal_cost_routes() {
    if require_root("ebpf_follows_a_routing_daemons_equal_cost_routes") {
        flows_spread_over_every_spine_and_each_keeps_to_one("ebpf", "ospf");
    }
}

#[test]
fn ebpf_fat_tree_every_host_reaches_every_host() {
    if require_root("ebpf_fat_tree_every_host_reaches_every_host") {
        fat_tree_every_host_reaches_every_host("ebpf");
    }
}

#[test]
fn kernel_fat_tree_every_host_reaches_every_host() {
    if require_root("kernel_fat_tree_every_host_reaches_every_host") {
        fat_tree_every_host_reaches_every_host("kernel");
    }
}

/// The leaf-spine lab with IPv6 on its host LANs (the spine links stay IPv4-only: IPv6
/// crosses them through link-local next hops): 64 IPv6 flows spread over every spine, each on
/// one, nothing reordered, counted once.
fn ipv6_flows_spread_over_every_spine_and_each_keeps_to_one(datapath: &str) {
    let mut doc = clos("static");
    doc["subnets"]["n1"]["cidr6"] = json!("fd00:1::/64");
    doc["subnets"]["n2"]["cidr6"] = json!("fd00:2::/64");
    let net = TestNet::new(&format!("ecmp6-{}", &datapath[..1]), doc);
    net.up(&["--datapath", datapath]);
    // h2-1, the only host of n2, takes the address after l2's
    let h2 = "fd00:2::2";
    assert!(
        eventually(10, || net
            .exec("h1-1", &["ping", "-6", "-c", "1", "-W", "1", h2])
            .status
            .success()),
        "{datapath}: h1-1 reaches h2-1 over IPv6"
    );
    let to = format!("[{h2}]:{PORT}");
    flows_over_every_spine(&net, ("[::]", &to), &format!("{datapath}/IPv6"));
    let out = net.down();
    assert!(out.status.success(), "down: {}", text(&out));
}

#[test]
fn ebpf_ipv6_flows_spread_over_every_spine_and_each_keeps_to_one() {
    if require_root("ebpf_ipv6_flows_spread_over_every_spine_and_each_keeps_to_one") {
        ipv6_flows_spread_over_every_spine_and_each_keeps_to_one("ebpf");
    }
}

#[test]
fn kernel_ipv6_flows_spread_over_every_spine_and_each_keeps_to_one() {
    if require_root("kernel_ipv6_flows_spread_over_every_spine_and_each_keeps_to_one") {
        ipv6_flows_spread_over_every_spine_and_each_keeps_to_one("kernel");
    }
}

/// [`FLOWS`] flows (source ports) of [`PER_FLOW`] datagrams each, interleaved, from h1-1 to
/// `to` on h2-1 (sockets bound to `any`, the family's unspecified address): every one whole,
/// in order and counted once, every spine used, no flow split between spines. Returns the
/// senders and the sink, for more.
fn flows_over_every_spine(
    net: &TestNet,
    (any, to): (&str, &str),
    what: &str,
) -> (Vec<UdpSocket>, UdpSocket) {
    let sink = sockets_in(net, "h2-1", &[&format!("{any}:{PORT}")]).remove(0);
    let bind = format!("{any}:0");
    let senders = sockets_in(net, "h1-1", &vec![bind.as_str(); FLOWS]);
    let before = udp_into_spines(&stats(net));
    let got = send_and_receive(&senders, &sink, to, PER_FLOW);
    let after = udp_into_spines(&stats(net));
    let spread = whole_and_counted_once(&got, &before, &after, what);
    assert!(
        spread.iter().all(|&n| n > 0),
        "{what}: {FLOWS} flows use every spine: {spread:?}"
    );
    // a flow is a multiple of its 20 datagrams on whichever spine carries it
    assert!(
        spread.iter().all(|&n| n % u64::from(PER_FLOW) == 0),
        "{what}: no flow is split between spines: {spread:?}"
    );
    (senders, sink)
}

/// Checks that the [`FLOWS`] flows of [`PER_FLOW`] datagrams arrived whole and in order, and
/// that the paths' counters (`before`, `after`) count each datagram once; returns what each
/// path carried.
fn whole_and_counted_once(
    got: &BTreeMap<u32, Vec<u32>>,
    before: &[u64],
    after: &[u64],
    what: &str,
) -> Vec<u64> {
    assert_eq!(
        got.values().map(Vec::len).sum::<usize>(),
        FLOWS * PER_FLOW as usize,
        "{what}: every datagram arrives"
    );
    for (flow, seqs) in got {
        assert_eq!(
            *seqs,
            (0..PER_FLOW).collect::<Vec<_>>(),
            "{what}: flow {flow} arrives whole and in order"
        );
    }
    let spread: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(
        spread.iter().sum::<u64>(),
        FLOWS as u64 * u64::from(PER_FLOW),
        "{what}: the paths count every datagram once: {spread:?}"
    );
    spread
}

/// Two routers between two LANs, `"ecmp": true`: each host's route goes through both.
fn two_gateways() -> Value {
    json!({
        "name": "gw2", "automatic_routing": true, "ecmp": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"a1": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"b1": {}}}
        },
        "routers": {"r1": {"subnets": ["A", "B"]}, "r2": {"subnets": ["A", "B"]}}
    })
}

/// UDP datagrams r1 and r2 received on LAN A.
fn udp_into_gateways(s: &Value) -> Vec<u64> {
    ["r1", "r2"]
        .iter()
        .map(|r| {
            s["links"]
                .as_array()
                .expect("links")
                .iter()
                .find(|l| l["node"] == *r && l["subnet"] == "A")
                .and_then(|l| l["rx"]["by_class"]["udp"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

fn a_host_spreads_flows_over_its_equal_cost_gateways(datapath: &str) {
    let net = TestNet::new(&format!("gw2-{}", &datapath[..1]), two_gateways());
    net.up(&["--datapath", datapath]);
    let routes = text(&net.exec("a1", &["ip", "route", "show", "default"]));
    assert_eq!(routes.matches("nexthop via").count(), 2, "{routes}");
    let b1 = address_of(&net, "b1");
    assert!(eventually(10, || net.ping("a1", &b1)), "a1 reaches b1");
    let to = format!("{b1}:{PORT}");
    let sink = sockets_in(&net, "b1", &[&format!("0.0.0.0:{PORT}")]).remove(0);
    let binds = vec!["0.0.0.0:0"; FLOWS];
    let senders = sockets_in(&net, "a1", &binds);
    let before = udp_into_gateways(&stats(&net));
    let got = send_and_receive(&senders, &sink, &to, PER_FLOW);
    let after = udp_into_gateways(&stats(&net));
    let spread = whole_and_counted_once(&got, &before, &after, datapath);
    assert!(
        spread
            .iter()
            .all(|&n| n > 0 && n % u64::from(PER_FLOW) == 0),
        "{datapath}: {FLOWS} flows use both gateways, none split: {spread:?}"
    );
    let out = net.down();
    assert!(out.status.success(), "down: {}", text(&out));
    assert!(net.leftovers().is_empty());
}

#[test]
fn ebpf_a_host_spreads_flows_over_its_equal_cost_gateways() {
    if require_root("ebpf_a_host_spreads_flows_over_its_equal_cost_gateways") {
        a_host_spreads_flows_over_its_equal_cost_gateways("ebpf");
    }
}

#[test]
fn kernel_a_host_spreads_flows_over_its_equal_cost_gateways() {
    if require_root("kernel_a_host_spreads_flows_over_its_equal_cost_gateways") {
        a_host_spreads_flows_over_its_equal_cost_gateways("kernel");
    }
}
