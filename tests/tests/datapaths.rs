//! Tier 3: the same suite on both datapaths — eBPF routers (kernel forwarding off) and kernel
//! routers with iptables. Real namespaces, real traffic, counters read back with
//! `dvnet stats --json`.

use dvnet_tests::{TestNet, require_root, text};
use serde_json::{Value, json};

fn classic() -> Value {
    json!({
        "name": "classic", "automatic_routing": true, "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}, "B-2": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {"R-1": {"subnets": ["A", "C"]}, "R-2": {"subnets": ["C", "B"]}}
    })
}

fn firewall_lab() -> Value {
    json!({
        "name": "fw", "automatic_routing": true, "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}, "B-2": {}}}
        },
        "routers": {"R": {"subnets": ["A", "B"], "fw_rules": {
            "policy": "DROP",
            "accept": [["A", "B"], {"src": "B-1", "dst": "A-1", "proto": "tcp", "dport": 5201}],
            "drop": [["A-2", "B-2"]]
        }}}
    })
}

fn stats(net: &TestNet) -> Value {
    let out = net.host.dvnet(&["stats", &net.id, "--json"]);
    assert!(out.status.success(), "dvnet stats: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("stats --json is JSON")
}

fn link<'a>(stats: &'a Value, node: &str) -> Vec<&'a Value> {
    stats["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["node"] == node)
        .collect()
}

fn icmp(traffic: &Value) -> u64 {
    traffic["by_class"]["icmp"].as_u64().unwrap_or(0)
}

fn every_host_reaches_every_host(datapath: &str) {
    let net = TestNet::new(&format!("reach-{datapath}"), classic());
    net.up(&["--datapath", datapath]);
    for router in ["R-1", "R-2"] {
        let out = net.exec(router, &["sysctl", "-n", "net.ipv4.conf.all.forwarding"]);
        let expected = if datapath == "ebpf" { "0" } else { "1" };
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expected,
            "{router} kernel forwarding"
        );
    }
    let hosts = ["A-1", "A-2", "B-1", "B-2"];
    for from in hosts {
        for to in hosts.iter().filter(|&&t| t != from) {
            assert!(net.ping(from, to), "{datapath}: {from} cannot ping {to}");
        }
    }
}

fn traceroute_shows_each_router(datapath: &str) {
    let net = TestNet::new(&format!("trace-{datapath}"), classic());
    net.up(&["--datapath", datapath]);
    let out = net.exec("A-1", &["traceroute", "-n", "-q", "1", "-w", "2", "B-2"]);
    assert!(out.status.success(), "{}", text(&out));
    let hops = dvnet_tests::hops(&out);
    assert_eq!(
        hops,
        ["10.0.0.1", "10.0.2.2", "10.0.1.3"],
        "{datapath}: {}",
        text(&out)
    );
    // ping -t: each TTL dies at the next router, which says so
    for (ttl, router) in [("1", "10.0.0.1"), ("2", "10.0.2.2")] {
        let out = net.exec(
            "A-1",
            &["ping", "-n", "-c", "1", "-W", "2", "-t", ttl, "B-2"],
        );
        let o = String::from_utf8_lossy(&out.stdout);
        assert!(
            o.contains(&format!("From {router}")) && o.contains("Time to live exceeded"),
            "{datapath} ttl {ttl}: {o}"
        );
    }
}

fn firewall_denies_allows_and_lets_replies_through(datapath: &str) {
    let net = TestNet::new(&format!("fw-{datapath}"), firewall_lab());
    net.up(&["--datapath", datapath]);
    assert!(
        net.ping("A-1", "B-1"),
        "{datapath}: A → B is accepted, and its replies pass"
    );
    assert!(net.ping("A-2", "B-1"), "{datapath}: A-2 → B-1 is accepted");
    assert!(
        !net.ping("A-2", "B-2"),
        "{datapath}: A-2 → B-2 is dropped (drop beats accept)"
    );
    assert!(
        !net.ping("B-1", "A-1"),
        "{datapath}: B → A is not accepted (policy DROP)"
    );
    assert!(
        dvnet_tests::tcp_ok(&net, "B-1", "A-1", false),
        "{datapath}: B-1 → A-1 tcp/5201 is accepted"
    );
    assert!(
        !dvnet_tests::tcp_ok(&net, "B-2", "A-1", false),
        "{datapath}: B-2 → A-1 tcp/5201 is not"
    );
    if datapath == "ebpf" {
        let s = stats(&net);
        let hits: Vec<(String, u64)> = s["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rule"].as_str().unwrap().to_owned(),
                    r["hits"].as_u64().unwrap(),
                )
            })
            .collect();
        let hit = |rule: &str| hits.iter().find(|(r, _)| r == rule).unwrap().1;
        assert_eq!(
            hit(r#"routers."R".fw_rules.drop[0]"#),
            1,
            "the one ping A-2 → B-2 sent: {hits:?}"
        );
        assert!(hit(r#"routers."R".fw_rules.accept[1]"#) >= 1, "{hits:?}");
        let r_a = link(&s, "R")
            .into_iter()
            .find(|l| l["subnet"] == "B")
            .unwrap();
        assert!(
            r_a["drops"]["fw-policy"].as_u64().unwrap_or(0) >= 2,
            "policy drops counted: {r_a}"
        );
    }
}

fn stats_count_exactly_the_pings_sent(datapath: &str) {
    let net = TestNet::new(&format!("count-{datapath}"), classic());
    net.up(&["--datapath", datapath]);
    let before = stats(&net);
    let out = net.exec("A-1", &["ping", "-c", "10", "-i", "0.01", "-W", "2", "B-2"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = stats(&net);
    // every link on the path: 10 requests one way, 10 replies the other
    let path = [
        ("A-1", "etha-1-a"),
        ("R-1", "ethr-1-a"),
        ("R-1", "ethr-1-c"),
        ("R-2", "ethr-2-c"),
        ("R-2", "ethr-2-b"),
        ("B-2", "ethb-2-b"),
    ];
    for (node, iface) in path {
        let find = |s: &Value| {
            s["links"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["node"] == node && l["interface"] == iface)
                .unwrap()
                .clone()
        };
        let (b, a) = (find(&before), find(&after));
        assert_eq!(
            icmp(&a["rx"]) - icmp(&b["rx"]),
            10,
            "{datapath} {node} {iface} received: {a}"
        );
        assert_eq!(
            icmp(&a["tx"]) - icmp(&b["tx"]),
            10,
            "{datapath} {node} {iface} sent: {a}"
        );
    }
    // nothing of it reached B-1
    let b1 = |s: &Value| icmp(&link(s, "B-1")[0]["rx"]);
    assert_eq!(b1(&after), b1(&before), "B-1 saw none of A-1's pings");
}

/// eBPF: a flow is tracked only where a drop rule could meet its replies; the others pass on
/// the rules alone, replies included.
#[test]
fn flows_are_tracked_only_where_a_drop_rule_could_meet_their_replies() {
    if !require_root("flows_are_tracked_only_where_a_drop_rule_could_meet_their_replies") {
        return;
    }
    let mut lab = firewall_lab();
    lab["routers"]["R"]["fw_rules"] = json!({
        "policy": "ACCEPT",
        "drop": [["100.64.0.1/32", "any"], {"src": "B-1", "dst": "A-1", "proto": "tcp"}]
    });
    let net = TestNet::new("track", lab);
    net.up(&[]);
    let ping = |from: &str, to: &str| {
        net.exec(from, &["ping", "-c", "3", "-i", "0.2", "-W", "2", to])
            .status
            .success()
    };
    let conntrack = |s: &Value| {
        (
            s["conntrack"]["inserted"].as_u64().unwrap(),
            s["conntrack"]["untracked"].as_u64().unwrap(),
        )
    };
    // no drop rule could meet B-2's replies to A-2: 3 requests and 3 replies pass untracked
    let before = conntrack(&stats(&net));
    assert!(ping("A-2", "B-2"), "A-2 reaches B-2");
    let after = conntrack(&stats(&net));
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (0, 6),
        "A-2 → B-2: inserted, untracked"
    );
    // B-1 → A-1 meets a drop rule (for TCP; ICMP is judged alike, to be safe): A-1's flow
    // to B-1 is tracked once, and its replies pass as part of it
    assert!(ping("A-1", "B-1"), "A-1 reaches B-1");
    let tracked = conntrack(&stats(&net));
    assert_eq!(
        (tracked.0 - after.0, tracked.1 - after.1),
        (1, 0),
        "A-1 → B-1: inserted, untracked"
    );
}

/// Rules from `any` and to `any` (wildcards, which eBPF routers look up only where some rule
/// has one) beside rules between named hosts, with an ACCEPT policy.
fn rules_from_any_and_to_any_hold(datapath: &str) {
    let mut lab = firewall_lab();
    lab["routers"]["R"]["fw_rules"] = json!({
        "policy": "ACCEPT",
        "drop": [["any", "B-1"], ["A-2", "any"]],
        "accept": [["A-1", "B-2"]]
    });
    let net = TestNet::new(&format!("any-{datapath}"), lab);
    net.up(&["--datapath", datapath]);
    assert!(!net.ping("A-1", "B-1"), "{datapath}: any → B-1 dropped");
    assert!(!net.ping("A-2", "B-2"), "{datapath}: A-2 → any dropped");
    assert!(net.ping("A-1", "B-2"), "{datapath}: A-1 → B-2 accepted");
    assert!(
        net.ping("B-2", "A-1"),
        "{datapath}: B-2 → A-1 by the policy"
    );
    // B-1's replies are to a ping it did not answer; B-1 itself may send
    assert!(
        net.ping("B-1", "A-1"),
        "{datapath}: B-1 → A-1 by the policy"
    );
    assert!(net.down().status.success());
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

dvnet_tests::both_datapaths!(
    every_host_reaches_every_host,
    traceroute_shows_each_router,
    firewall_denies_allows_and_lets_replies_through,
    stats_count_exactly_the_pings_sent,
    rules_from_any_and_to_any_hold,
);
