//! Tier 3: an eBPF router with many routes sends its own packets (pings, traceroutes, TCP, the
//! answers to what is sent to it) through one default route on `lo`, which the program on
//! `lo` routes by the route map, instead of holding a kernel route per destination; `apply`
//! moves a router between the two as its routes grow and shrink. Real namespaces and traffic.

use dvnet_tests::{TestNet, icmp_on, require_root, text};
use serde_json::{Map, Value, json};

/// R-1 — T — R-2: A (one host) on R-1, `lans` LANs of one host each behind R-2, on every
/// other /24 (no two aggregate): R-1 has `lans` routes, R-2 one.
fn fan(lans: usize) -> Value {
    let mut subnets = Map::new();
    subnets.insert(
        "A".into(),
        json!({"cidr": "10.0.0.0/24", "hosts": {"A-1": {}}}),
    );
    subnets.insert("T".into(), json!({"cidr": "10.255.0.0/30", "hosts": {}}));
    let mut behind = vec![json!("T")];
    for i in 0..lans {
        let name = format!("L{i}");
        subnets.insert(
            name.clone(),
            json!({"cidr": format!("10.{}.0.0/24", 2 * i + 2), "hosts": {format!("L{i}-1"): {}}}),
        );
        behind.push(json!(name));
    }
    json!({
        "name": "fan", "automatic_routing": true,
        "subnets": subnets,
        "routers": {"R-1": {"subnets": ["A", "T"]}, "R-2": {"subnets": behind}}
    })
}

/// The plan's address of `node` on its first link.
fn address_of(net: &TestNet, node: &str) -> String {
    let inspect = net.inspect();
    let plan = &inspect["state"]["plan"];
    let n = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .unwrap_or_else(|| panic!("no node {node}"));
    let link = usize::try_from(n["links"][0].as_u64().unwrap()).unwrap();
    plan["links"][link]["address"].as_str().unwrap().to_owned()
}

fn own_route(net: &TestNet, node: &str) -> bool {
    net.inspect()["state"]["plan"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .is_some_and(|n| n["own_route"] == true)
}

fn out(net: &TestNet, node: &str, cmd: &[&str]) -> String {
    let o = net.exec(node, cmd);
    assert!(o.status.success(), "{node}: {cmd:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stats(net: &TestNet) -> Value {
    let o = net.host.dvnet(&["stats", &net.id, "--json"]);
    assert!(o.status.success(), "dvnet stats: {}", text(&o));
    serde_json::from_slice(&o.stdout).expect("stats --json is JSON")
}

/// Whether `R-1` holds a kernel route per destination (and nothing on `lo`), or only the
/// default route on `lo` (with the ingress qdisc there).
fn kernel_routes_of_r1(net: &TestNet) -> (usize, bool) {
    let routes = out(net, "R-1", &["ip", "-o", "route"]);
    let via = routes.lines().filter(|l| l.contains(" via ")).count();
    let lo_default = routes
        .lines()
        .any(|l| l.starts_with("default dev lo ") && l.contains(" src 10.0.0.1 "));
    let qdisc = out(net, "R-1", &["tc", "qdisc", "show", "dev", "lo"]);
    assert_eq!(
        lo_default,
        qdisc.contains("ingress"),
        "the default route on lo and lo's ingress go together: {routes}\n{qdisc}"
    );
    (via, lo_default)
}

#[test]
fn a_router_with_many_routes_sends_its_own_packets_through_the_datapath() {
    if !require_root("a_router_with_many_routes_sends_its_own_packets_through_the_datapath") {
        return;
    }
    let net = TestNet::new("own", fan(40));
    net.up(&[]);
    assert!(own_route(&net, "R-1"), "R-1 has 40 routes");
    assert!(!own_route(&net, "R-2"), "R-2 has one");
    // R-1's kernel: its connected subnets and the default route on lo, nothing else
    let routes = out(&net, "R-1", &["ip", "-o", "route"]);
    assert_eq!(routes.lines().count(), 3, "{routes}");
    assert_eq!(kernel_routes_of_r1(&net), (0, true), "{routes}");
    let inspect = net.host.dvnet(&["inspect", &net.id]);
    let said = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        said.contains("1 router(s) send their own packets through `default dev lo`")
            && said.contains("route map (their routes: `dvnet plan`): R-1\n"),
        "{said}"
    );
    let far = address_of(&net, "L39-1");
    let r2_on_t = net.inspect()["state"]["plan"]["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["ifname"]
                .as_str()
                .is_some_and(|n| n.starts_with("ethr-2-t"))
        })
        .map(|l| l["address"].as_str().unwrap().to_owned())
        .expect("R-2's link on T");

    // pings from the router itself, each counted once on the way, none lost
    let before = stats(&net);
    out(
        &net,
        "R-1",
        &["ping", "-c", "10", "-i", "0.01", "-W", "2", &far],
    );
    let after = stats(&net);
    for (node, subnet, rx, tx) in [("R-2", "T", 10, 10), ("L39-1", "L39", 10, 10)] {
        let (b, a) = (
            icmp_on(&before, node, subnet),
            icmp_on(&after, node, subnet),
        );
        assert_eq!(
            (a.0 - b.0, a.1 - b.1),
            (rx, tx),
            "{node} on {subnet}: requests in, replies out"
        );
    }
    // traceroute from the router: R-2, then the host (its TTLs are the kernel's own)
    let trace = out(
        &net,
        "R-1",
        &["traceroute", "-n", "-q", "1", "-w", "2", &far],
    );
    let hops: Vec<&str> = trace
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(hops, [r2_on_t.as_str(), far.as_str()], "{trace}");
    // large datagrams leave fragmented at the links' MTU (lo's is 64 KiB)
    out(
        &net,
        "R-1",
        &[
            "ping", "-c", "2", "-s", "3000", "-M", "dont", "-W", "2", &far,
        ],
    );
    // the answers to what is sent to any of its addresses
    for addr in ["10.0.0.1", "10.255.0.1"] {
        out(
            &net,
            "L0-1",
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", addr],
        );
    }
    // TCP from the router (checksums and segmentation offloaded through lo)
    out(&net, "L39-1", &["iperf3", "-s", "-1", "-D"]);
    let mut tcp = None;
    for _ in 0..20 {
        let o = net.exec(
            "R-1",
            &[
                "iperf3",
                "-c",
                &far,
                "-n",
                "4M",
                "--connect-timeout",
                "1000",
            ],
        );
        if o.status.success() {
            tcp = Some(o);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(tcp.is_some(), "4 MB over TCP from R-1 to L39-1");
    // no route: answered at once, from the router's own address
    let o = net.exec("R-1", &["ping", "-c", "1", "-W", "2", "10.250.0.1"]);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && said.contains("From 10.0.0.1") && said.contains("Net Unreachable"),
        "{}",
        text(&o)
    );
    // a host behind R-1 gets through as ever
    assert!(net.ping("A-1", &far));
    assert!(net.down().status.success());
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

#[test]
fn apply_moves_a_router_between_kernel_routes_and_its_own_route() {
    if !require_root("apply_moves_a_router_between_kernel_routes_and_its_own_route") {
        return;
    }
    let net = TestNet::new("ownapply", fan(4));
    net.up(&[]);
    assert_eq!(kernel_routes_of_r1(&net), (4, false));
    let apply = |lab: Value| {
        let mut lab = lab;
        lab["name"] = json!(net.id);
        std::fs::write(&net.file, serde_json::to_string_pretty(&lab).unwrap()).unwrap();
        let o = net.host.dvnet(&["apply", net.file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    };
    // 36 more LANs behind R-2: R-1's routes go to the map alone
    apply(fan(40));
    assert!(own_route(&net, "R-1"));
    assert_eq!(kernel_routes_of_r1(&net), (0, true));
    let (near, far) = (address_of(&net, "L0-1"), address_of(&net, "L39-1"));
    for to in [&near, &far] {
        assert!(net.ping("R-1", to), "R-1 → {to}");
        assert!(net.ping("A-1", to), "A-1 → {to}");
    }
    assert!(net.ping("L39-1", "10.0.0.1"), "L39-1 → R-1");
    // and back: a kernel route per destination again, nothing left on lo
    apply(fan(4));
    assert!(!own_route(&net, "R-1"));
    assert_eq!(kernel_routes_of_r1(&net), (4, false));
    let near = address_of(&net, "L3-1");
    assert!(net.ping("R-1", &near), "R-1 → {near}");
    assert!(net.ping("L3-1", "10.255.0.1"), "L3-1 → R-1");
    assert!(net.down().status.success());
    assert_eq!(net.leftovers(), Vec::<String>::new());
}
