//! Tier 3: the gallery (`examples/`): each lab brought up as a user would (its name made
//! unique, in a fake host) and checked for what README.md says it shows, then taken down
//! leaving nothing.

use std::process::{Child, Stdio};

use dvnet_tests::{Internet, TestNet, dvnet_bin, eventually, require_docker, require_root, text};
use serde_json::Value;

fn example(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("an example is JSON")
}

/// The addresses of the first hops `traceroute` shows from `node` to `to`.
fn hops(net: &TestNet, node: &str, to: &str) -> Vec<String> {
    let out = net.exec(node, &["traceroute", "-n", "-q", "1", "-w", "1", to]);
    dvnet_tests::hops(&out)
}

fn drops(net: &TestNet, node: &str, subnet: &str, reason: &str) -> u64 {
    let out = net.host.dvnet(&["stats", &net.id, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("stats --json");
    v["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["node"] == node && l["subnet"] == subnet)
        .and_then(|l| l["drops"][reason].as_u64())
        .unwrap_or(0)
}

/// An iperf3 server in `node` on `port`, for one test.
fn server(net: &TestNet, node: &str, port: &str) -> Child {
    let child = net
        .host
        .command(dvnet_bin())
        .args([
            "exec", &net.id, node, "--", "timeout", "10", "iperf3", "-s", "-1", "-p", port,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 -s");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

/// Whether a TCP connection from `node` to `to`:`port` gets through (iperf3, 10 KB).
fn connects(net: &TestNet, node: &str, to: &str, port: &str) -> bool {
    net.exec(
        node,
        &[
            "timeout",
            "5",
            "iperf3",
            "-c",
            to,
            "-p",
            port,
            "-n",
            "10K",
            "--connect-timeout",
            "1500",
        ],
    )
    .status
    .success()
}

fn down_leaves_nothing(net: &TestNet) {
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

#[test]
fn classic_routes_through_two_routers_and_drops_a_2_to_b() {
    if !require_root("classic_routes_through_two_routers_and_drops_a_2_to_b") {
        return;
    }
    let net = TestNet::new("ex-classic", example("classic"));
    net.up(&[]);
    assert_eq!(
        hops(&net, "A-1", "B-1"),
        ["10.0.0.1", "10.0.2.2", "10.0.1.2"]
    );
    assert!(!net.ping("A-2", "B-1"), "R-1's rule drops A-2 → B");
    assert!(net.ping("A-2", "A-1"));
    assert_eq!(drops(&net, "R-1", "A", "fw-rule"), 1);
    down_leaves_nothing(&net);
}

#[test]
fn dual_stack_routes_ipv6_across_an_ipv4_transit_and_drops_a_2_to_b_in_both_families() {
    if !require_root(
        "dual_stack_routes_ipv6_across_an_ipv4_transit_and_drops_a_2_to_b_in_both_families",
    ) {
        return;
    }
    let net = TestNet::new("ex-dual", example("dual-stack"));
    net.up(&[]);
    let out = net.exec(
        "A-1",
        &["traceroute", "-6", "-n", "-q", "1", "-w", "1", "B-1"],
    );
    assert_eq!(
        dvnet_tests::hops(&out),
        ["fd00:0:a::1", "fd00:0:b::1", "fd00:0:b::2"],
        "{}",
        text(&out)
    );
    for family in ["-4", "-6"] {
        let ping = |from: &str, to: &str| {
            net.exec(from, &["ping", family, "-c", "1", "-W", "2", to])
                .status
                .success()
        };
        assert!(!ping("A-2", "B-1"), "R-1's rule drops A-2 → B ({family})");
        assert!(ping("A-1", "B-1"), "{family}");
        assert!(ping("A-2", "A-1"), "{family}");
    }
    down_leaves_nothing(&net);
}

#[test]
fn firewall_lets_only_what_its_rules_accept_and_the_replies_through() {
    if !require_root("firewall_lets_only_what_its_rules_accept_and_the_replies_through") {
        return;
    }
    let net = TestNet::new("ex-firewall", example("firewall"));
    net.up(&[]);
    let mut web = server(&net, "web", "80");
    assert!(
        connects(&net, "laptop", "web", "80"),
        "clients → web:80 accepted"
    );
    let _ = web.wait();
    let mut web = server(&net, "web", "80");
    assert!(
        !connects(&net, "phone", "web", "80"),
        "the phone's drop rule wins"
    );
    let _ = web.kill();
    let _ = web.wait();
    let mut db = server(&net, "db", "5432");
    assert!(
        connects(&net, "web", "db", "5432"),
        "web → db:5432 accepted"
    );
    let _ = db.wait();
    let mut db = server(&net, "db", "5432");
    assert!(!connects(&net, "laptop", "db", "5432"), "the DROP policy");
    let _ = db.kill();
    let _ = db.wait();
    assert!(net.ping("laptop", "web"), "ICMP from the laptop accepted");
    assert!(!net.ping("phone", "web"), "not from the phone");
    assert!(drops(&net, "gw", "clients", "fw-rule") >= 1);
    assert!(drops(&net, "gw", "clients", "fw-policy") >= 2);
    down_leaves_nothing(&net);
}

#[test]
fn ospf_ring_reroutes_around_a_link_taken_down_and_back() {
    if !require_root("ospf_ring_reroutes_around_a_link_taken_down_and_back") {
        return;
    }
    let net = TestNet::new("ex-ring", example("ospf-ring"));
    net.up(&[]);
    // each hop answers from the interface the probe came in on
    let via_r1 = ["10.0.0.1", "172.16.0.2", "172.16.0.6", "10.0.2.2"];
    assert!(
        eventually(30, || hops(&net, "h0", "h2") == via_r1),
        "first via R1: {:?}",
        hops(&net, "h0", "h2")
    );
    let out = net.host.dvnet(&["link", &net.id, "R1", "T01", "down"]);
    assert!(out.status.success(), "{}", text(&out));
    let via_r4 = [
        "10.0.0.1",
        "172.16.0.18",
        "172.16.0.13",
        "172.16.0.9",
        "10.0.2.2",
    ];
    assert!(
        eventually(30, || hops(&net, "h0", "h2") == via_r4),
        "then via R4 and R3: {:?}",
        hops(&net, "h0", "h2")
    );
    assert!(net.ping("h0", "h2"));
    let out = net.host.dvnet(&["link", &net.id, "R1", "T01", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        eventually(30, || hops(&net, "h0", "h2") == via_r1),
        "back via R1: {:?}",
        hops(&net, "h0", "h2")
    );
    down_leaves_nothing(&net);
}

#[test]
fn impairments_delay_the_wan_and_the_laptops_link() {
    if !require_root("impairments_delay_the_wan_and_the_laptops_link") {
        return;
    }
    let net = TestNet::new("ex-impair", example("impairments"));
    net.up(&[]);
    let rtt = |node: &str| -> f64 {
        let out = net.exec(node, &["ping", "-c", "5", "-i", "0.1", "-q", "server"]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        said.lines()
            .find(|l| l.starts_with("rtt"))
            .and_then(|l| l.split(" = ").nth(1))
            // the least: a stall of a loaded machine delays some, none comes back sooner
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{node}: {said}"))
    };
    // the WAN: 25 ms each way
    let pc = rtt("pc");
    assert!(
        (49.5..=56.0).contains(&pc),
        "pc → server {pc} ms, 50 expected"
    );
    // the laptop's own link: 4 ± 3 ms more each way
    let laptop = rtt("wifi-laptop");
    assert!(laptop > pc, "{laptop} ms > {pc} ms");
    let inspect = net.host.dvnet(&["inspect", &net.id]);
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("delay=25ms rate=20mbit"));
    down_leaves_nothing(&net);
}

#[test]
fn outbound_reaches_the_internet_and_publishes_www() {
    if !require_root("outbound_reaches_the_internet_and_publishes_www") {
        return;
    }
    let net = TestNet::new("ex-outbound", example("outbound"));
    let inet = Internet::behind(&net.host);
    net.up(&[]);
    assert!(net.ping("desk", Internet::ADDRESS), "the LAN reaches out");
    let mut www = server(&net, "www", "80");
    let client = dvnet_tests::run(inet.command("iperf3").args([
        "-c",
        Internet::HOST,
        "-p",
        "8080",
        "-n",
        "10K",
    ]));
    assert!(
        client.status.success(),
        "the published port answers: {}",
        text(&client)
    );
    let _ = www.wait();
    down_leaves_nothing(&net);
}

#[test]
fn containers_and_namespaces_share_a_lab() {
    if !require_docker("containers_and_namespaces_share_a_lab") {
        return;
    }
    let net = TestNet::new("ex-containers", example("containers"));
    net.up(&[]);
    for (from, to) in [("A-1", "B-1"), ("A-2", "B-1"), ("B-1", "A-2")] {
        assert!(net.ping(from, to), "{from} → {to}");
    }
    down_leaves_nothing(&net);
}

#[test]
fn fabric_1000_comes_up_answers_across_and_goes_down_clean() {
    if !require_root("fabric_1000_comes_up_answers_across_and_goes_down_clean") {
        return;
    }
    let net = TestNet::new("ex-fabric", example("fabric-1000"));
    net.up(&[]);
    // from the root's LAN to leaves far down the tree, and between two leaves
    for (from, to) in [("h1-1", "h200-4"), ("h150-2", "h199-3"), ("h77-1", "h2-2")] {
        let addr = net.inspect()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == to)
            .and_then(|n| n["interfaces"][0]["addresses"][0].as_str())
            .map_or_else(
                || panic!("no address of {to}"),
                |a| a.split('/').next().unwrap().to_owned(),
            );
        assert!(net.ping(from, &addr), "{from} → {to} ({addr})");
    }
    down_leaves_nothing(&net);
}

#[test]
fn the_original_demo_routes_by_its_own_frr_configs() {
    if !require_root("the_original_demo_routes_by_its_own_frr_configs") {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/original-demo");
    let text = std::fs::read_to_string(dir.join("net.json")).expect("the demo");
    let net = TestNet::new("ex-demo", serde_json::from_str(&text).expect("JSON"));
    // its FRR configurations, where the file says (beside it)
    std::fs::create_dir_all(net.dir.path().join("frr")).unwrap();
    for r in ["R-1", "R-2"] {
        std::fs::copy(
            dir.join(format!("frr/{r}.conf")),
            net.dir.path().join(format!("frr/{r}.conf")),
        )
        .unwrap();
    }
    net.up(&[]);
    assert!(
        eventually(30, || net.ping("A-1", "B-1")),
        "OSPF, as R-1's and R-2's own configurations set it up, carries A to B"
    );
    let out = net.exec("R-1", &["vtysh", "-c", "show ip ospf neighbor"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("10.0.2.2") && said.contains("Full"), "{said}");
    assert_eq!(
        hops(&net, "A-1", "B-1"),
        ["10.0.0.1", "10.0.2.2", "10.0.1.2"]
    );
    assert!(!net.ping("A-2", "B-2"), "R-1's rule drops A-2 → B-2");
    assert!(net.ping("A-2", "B-1"));
    down_leaves_nothing(&net);
}

#[test]
fn leaf_spine_spreads_flows_over_the_spines() {
    if !require_root("leaf_spine_spreads_flows_over_the_spines") {
        return;
    }
    let net = TestNet::new("ex-clos", example("leaf-spine"));
    net.up(&[]);
    // leaf, spine, leaf, host: three routers on the way
    let path = hops(&net, "h1-1", "h4-1");
    assert_eq!(path.len(), 4, "h1-1 → h4-1: {path:?}");
    assert!(path[0] == "10.0.0.1" && path[3] == "10.0.3.2", "{path:?}");
    // 16 pings, each its own flow (its own echo id), from h1-1's leaf up to the spines
    let icmp_into_spines = || -> Vec<u64> {
        let out = net.host.dvnet(&["stats", &net.id, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).expect("stats --json");
        (1..=4)
            .map(|i| {
                v["links"]
                    .as_array()
                    .expect("links")
                    .iter()
                    .find(|l| l["node"] == format!("s{i}") && l["subnet"] == format!("s{i}-l1"))
                    .and_then(|l| l["rx"]["by_class"]["icmp"].as_u64())
                    .unwrap_or(0)
            })
            .collect()
    };
    let before = icmp_into_spines();
    for _ in 0..16 {
        assert!(net.ping("h1-1", "h4-1"), "h1-1 reaches h4-1");
    }
    let after = icmp_into_spines();
    let spread: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        spread.iter().sum::<u64>(),
        16,
        "every request crosses one spine: {spread:?}"
    );
    // all on two spines or fewer: a chance of 1 in 10,000 with four paths
    assert!(
        spread.iter().filter(|&&n| n > 0).count() >= 3,
        "16 flows over 4 spines: {spread:?}"
    );
    down_leaves_nothing(&net);
}
