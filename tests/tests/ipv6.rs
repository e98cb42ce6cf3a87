//! IPv6: dual-stack labs (`"cidr6"` beside `"cidr"`), in real namespaces with real traffic,
//! on both datapaths — eBPF routers (kernel forwarding off in both families: the program
//! forwards, filters and answers ICMPv6 errors) and kernel routers with ip6tables. IPv6
//! routes cross subnets without an IPv6 prefix through the next hop's link-local address,
//! names resolve to both families, the firewall filters both.

use dvnet_tests::{TestNet, text};
use serde_json::{Value, json};

/// The classic lab, dual-stack on the host subnets; the transit subnet C is IPv4 only.
fn dual_stack() -> Value {
    json!({
        "name": "ds", "automatic_routing": true, "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64",
                  "hosts": {"A-1": {}, "A-2": {"ip6": "fd00:0:a::a2"}}},
            "B": {"cidr": "10.0.1.0/24", "cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}, "B-2": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {"R-1": {"subnets": ["A", "C"]}, "R-2": {"subnets": ["C", "B"]}}
    })
}

/// One router between two dual-stack subnets, DROP policy: A may reach B, B-1 may open
/// tcp/5201 on A-1, A-2 → B-2 is dropped (drop beats accept), and an IPv6 prefix drops A's
/// ICMPv6 to B-2 alone (IPv4 untouched).
fn firewall_lab() -> Value {
    json!({
        "name": "fw6", "automatic_routing": true, "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64", "hosts": {"A-1": {}, "A-2": {}, "A-3": {}}},
            "B": {"cidr": "10.0.1.0/24", "cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}, "B-2": {}}}
        },
        "routers": {"R": {"subnets": ["A", "B"], "fw_rules": {
            "policy": "DROP",
            "accept": [["A", "B"], {"src": "B-1", "dst": "A-1", "proto": "tcp", "dport": 5201}],
            "drop": [["A-2", "B-2"], {"src": "fd00:0:a::/64", "dst": "B-2", "proto": "icmp"}]
        }}}
    })
}

fn ping6(net: &TestNet, from: &str, to: &str) -> bool {
    net.exec(from, &["ping", "-6", "-c", "1", "-W", "2", to])
        .status
        .success()
}

fn ping4(net: &TestNet, from: &str, to: &str) -> bool {
    net.exec(from, &["ping", "-4", "-c", "1", "-W", "2", to])
        .status
        .success()
}

fn sysctl(net: &TestNet, node: &str, key: &str) -> String {
    let out = net.exec(node, &["sysctl", "-n", key]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn every_host_reaches_every_host_over_ipv6_by_name(datapath: &str) {
    let net = TestNet::new(&format!("v6reach-{datapath}"), dual_stack());
    net.up(&["--datapath", datapath]);
    for router in ["R-1", "R-2"] {
        assert_eq!(
            sysctl(&net, router, "net.ipv6.conf.all.forwarding"),
            if datapath == "kernel" { "1" } else { "0" },
            "{datapath}: {router}'s kernel forwarding"
        );
    }
    let hosts = ["A-1", "A-2", "B-1", "B-2"];
    for from in hosts {
        for to in hosts.iter().filter(|&&t| t != from) {
            assert!(
                ping6(&net, from, to),
                "{datapath}: {from} cannot ping -6 {to}"
            );
        }
    }
    // IPv4 as before
    for to in ["A-2", "B-1", "B-2"] {
        assert!(ping4(&net, "A-1", to), "A-1 cannot ping -4 {to}");
    }
    // the explicit address is the one names resolve to
    let out = net.exec("B-1", &["ping", "-6", "-c", "1", "-W", "2", "A-2"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fd00:0:a::a2"),
        "{}",
        text(&out)
    );
    // every interface: its link-local address and, on A and B, its global one; nothing
    // tentative (no duplicate address detection), nothing the kernel made up
    let out = net.exec(
        "R-1",
        &["ip", "-6", "-o", "addr", "show", "scope", "global"],
    );
    let global = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(global.contains("fd00:0:a::1/64"), "{global}");
    assert_eq!(
        global.lines().count(),
        1,
        "R-1 has one global address: {global}"
    );
    let out = net.exec("R-1", &["ip", "-6", "-o", "addr"]);
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!all.contains("tentative"), "{all}");
    assert_eq!(
        all.matches("scope link").count(),
        2,
        "a link-local per link: {all}"
    );
    // inspect reads them back
    let live = net.inspect();
    let live = live.to_string();
    assert!(
        live.contains("fd00:0:b::/64"),
        "inspect shows IPv6 routes: {live}"
    );
    assert!(
        live.contains("fd00:0:a::1/64"),
        "inspect shows IPv6 addresses"
    );
}

fn traceroute6_shows_each_router_and_hop_limits_expire_there(datapath: &str) {
    let net = TestNet::new(&format!("v6trace-{datapath}"), dual_stack());
    net.up(&["--datapath", datapath]);
    let out = net.exec(
        "A-1",
        &["traceroute", "-6", "-n", "-q", "1", "-w", "2", "B-2"],
    );
    assert!(out.status.success(), "{}", text(&out));
    // R-2 answers from its global address (its interface on C has only a link-local one)
    assert_eq!(
        dvnet_tests::hops(&out),
        ["fd00:0:a::1", "fd00:0:b::1", "fd00:0:b::3"],
        "{datapath}: {}",
        text(&out)
    );
    for (hop_limit, router) in [("1", "fd00:0:a::1"), ("2", "fd00:0:b::1")] {
        let out = net.exec(
            "A-1",
            &[
                "ping", "-6", "-n", "-c", "1", "-W", "2", "-t", hop_limit, "B-2",
            ],
        );
        let o = String::from_utf8_lossy(&out.stdout);
        assert!(
            o.contains(&format!("From {router}")) && o.contains("Time exceeded"),
            "{datapath}: hop limit {hop_limit}: {o}"
        );
    }
    // no route: R-1 says so
    let out = net.exec(
        "A-1",
        &["ping", "-6", "-n", "-c", "1", "-W", "2", "fd00:0:c::1"],
    );
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(
        o.contains("From fd00:0:a::1") && o.contains("Destination unreachable"),
        "{datapath}: {o}"
    );
}

fn stats_count_exactly_the_ipv6_pings_sent(datapath: &str) {
    let net = TestNet::new(&format!("v6count-{datapath}"), dual_stack());
    net.up(&["--datapath", datapath]);
    // neighbour discovery first: it is counted apart from ICMPv6 pings ("other"), as ARP
    assert!(ping6(&net, "A-1", "B-2"));
    let stats = || -> Value {
        let out = net.host.dvnet(&["stats", &net.id, "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("stats --json")
    };
    let before = stats();
    let out = net.exec(
        "A-1",
        &["ping", "-6", "-c", "10", "-i", "0.01", "-W", "2", "B-2"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let after = stats();
    // every link on the path: 10 echo requests one way, 10 replies the other
    for (node, subnet) in [
        ("A-1", "A"),
        ("R-1", "A"),
        ("R-1", "C"),
        ("R-2", "C"),
        ("R-2", "B"),
        ("B-2", "B"),
    ] {
        let (rx0, tx0) = dvnet_tests::icmp_on(&before, node, subnet);
        let (rx1, tx1) = dvnet_tests::icmp_on(&after, node, subnet);
        assert_eq!(
            (rx1 - rx0, tx1 - tx0),
            (10, 10),
            "{datapath}: {node} on {subnet} (received, sent)"
        );
    }
    let (rx0, _) = dvnet_tests::icmp_on(&before, "B-1", "B");
    let (rx1, _) = dvnet_tests::icmp_on(&after, "B-1", "B");
    assert_eq!(rx1, rx0, "B-1 saw none of A-1's pings");
}

fn firewall_filters_ipv6_as_it_filters_ipv4(datapath: &str) {
    let net = TestNet::new(&format!("v6fw-{datapath}"), firewall_lab());
    net.up(&["--datapath", datapath]);
    for (from, to, family, passes, why) in [
        (
            "A-1",
            "B-1",
            6,
            true,
            "A → B is accepted, and its replies pass",
        ),
        ("A-1", "B-1", 4, true, "the same over IPv4"),
        (
            "A-2",
            "B-2",
            6,
            false,
            "A-2 → B-2 is dropped (drop beats accept)",
        ),
        ("A-2", "B-2", 4, false, "the same over IPv4"),
        (
            "B-1",
            "A-1",
            6,
            false,
            "B → A is not accepted (policy DROP)",
        ),
        ("B-1", "A-1", 4, false, "the same over IPv4"),
        (
            "A-1",
            "B-2",
            6,
            false,
            "an IPv6 prefix drops A's ICMPv6 to B-2",
        ),
        ("A-3", "B-2", 6, false, "every host of A"),
        ("A-1", "B-2", 4, true, "and leaves IPv4 alone"),
    ] {
        let got = if family == 6 {
            ping6(&net, from, to)
        } else {
            ping4(&net, from, to)
        };
        assert_eq!(
            got, passes,
            "{datapath}: {from} → {to} over IPv{family}: {why}"
        );
    }
    assert!(
        dvnet_tests::tcp_ok(&net, "B-1", "A-1", true),
        "{datapath}: B-1 → A-1 tcp/5201 over IPv6 is accepted"
    );
    assert!(
        !dvnet_tests::tcp_ok(&net, "B-2", "A-1", true),
        "{datapath}: B-2 → A-1 tcp/5201 over IPv6 is not"
    );
    if datapath == "ebpf" {
        let out = net.host.dvnet(&["stats", &net.id, "--json"]);
        let s: Value = serde_json::from_slice(&out.stdout).expect("stats --json");
        let hits = |rule: &str| {
            s["rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["rule"] == rule)
                .and_then(|r| r["hits"].as_u64())
                .unwrap_or(0)
        };
        // drop[0]: A-2 → B-2 once in each family; drop[1]: A-1's and A-3's ICMPv6 to B-2
        assert_eq!(hits(r#"routers."R".fw_rules.drop[0]"#), 2, "{s}");
        assert_eq!(hits(r#"routers."R".fw_rules.drop[1]"#), 2, "{s}");
    }
}

fn an_ipv6_lab_survives_a_link_down_and_up(datapath: &str) {
    let net = TestNet::new(&format!("v6ln-{datapath}"), dual_stack());
    net.up(&["--datapath", datapath]);
    assert!(ping6(&net, "A-1", "B-1"));
    let out = net.host.dvnet(&["link", &net.id, "R-2", "C", "down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !ping6(&net, "A-1", "B-1"),
        "{datapath}: the only path is down"
    );
    let out = net.host.dvnet(&["link", &net.id, "R-2", "C", "up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        ping6(&net, "A-1", "B-1"),
        "{datapath}: the IPv6 routes through the link are set again"
    );
    assert!(ping4(&net, "A-1", "B-1"));

    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert!(net.leftovers().is_empty(), "{:?}", net.leftovers());
}

fn nodes_of_a_network_without_ipv6_keep_it_off(datapath: &str) {
    let mut topology = dual_stack();
    for s in ["A", "B"] {
        topology["subnets"][s]
            .as_object_mut()
            .unwrap()
            .remove("cidr6");
    }
    topology["subnets"]["A"]["hosts"]["A-2"] = json!({});
    let net = TestNet::new(&format!("v6off-{datapath}"), topology);
    net.up(&["--datapath", datapath]);
    for node in ["R-1", "A-1"] {
        assert_eq!(
            sysctl(&net, node, "net.ipv6.conf.all.disable_ipv6"),
            "1",
            "{node}"
        );
        let out = net.exec(node, &["ip", "-6", "-o", "addr"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "{node} has no IPv6 address: {}",
            text(&out)
        );
    }
}

/// `dvnet apply` of an edited dual-stack file: a subnet renumbered in IPv6 and a host added,
/// then a rule on an IPv6 prefix; taking IPv6 away altogether is refused, and the lab runs on.
fn an_ipv6_lab_is_edited_while_it_runs(datapath: &str) {
    let net = TestNet::new(&format!("v6ed-{datapath}"), dual_stack());
    net.up(&["--datapath", datapath]);
    let apply = |topology: &Value| {
        let mut topology = topology.clone();
        topology["name"] = json!(net.id);
        std::fs::write(&net.file, topology.to_string()).unwrap();
        net.host.dvnet(&["apply", net.file.to_str().unwrap()])
    };
    let mut edited = dual_stack();
    edited["subnets"]["B"]["cidr6"] = json!("fd00:0:bb::/64");
    edited["subnets"]["B"]["hosts"]["B-3"] = json!({});
    let out = apply(&edited);
    assert!(out.status.success(), "{datapath}: {}", text(&out));
    assert!(
        ping6(&net, "A-1", "B-3"),
        "{datapath}: the new host, by name"
    );
    assert!(
        ping6(&net, "A-1", "fd00:0:bb::2"),
        "{datapath}: B-1 at its new address"
    );
    assert!(
        !ping6(&net, "A-1", "fd00:0:b::2"),
        "{datapath}: nothing at the old one"
    );
    assert!(ping6(&net, "B-3", "A-2"), "{datapath}: and back");
    // a rule on an IPv6 prefix: ICMPv6 from A-1 to B dies, IPv4 passes
    edited["routers"]["R-1"]["fw_rules"] =
        json!({"drop": [{"src": "A-1", "dst": "fd00:0:bb::/64", "proto": "icmp"}]});
    let out = apply(&edited);
    assert!(out.status.success(), "{datapath}: {}", text(&out));
    assert!(!ping6(&net, "A-1", "B-1"), "{datapath}: dropped over IPv6");
    assert!(ping4(&net, "A-1", "B-1"), "{datapath}: IPv4 untouched");
    assert!(ping6(&net, "A-2", "B-1"), "{datapath}: A-2 untouched");
    // A renumbered in IPv4: MACs follow the addresses, and the link-local addresses the
    // MACs: A's hosts' IPv6 default routes move to R-1's new link-local address
    edited["subnets"]["A"]["cidr"] = json!("10.0.9.0/24");
    let out = apply(&edited);
    assert!(out.status.success(), "{datapath}: {}", text(&out));
    assert!(
        ping6(&net, "B-3", "A-2"),
        "{datapath}: IPv6 after the renumbering"
    );
    assert!(ping4(&net, "B-3", "A-2"), "{datapath}: IPv4 too");
    // IPv6 taken away: refused before anything changes
    let mut v4 = edited.clone();
    for s in ["A", "B"] {
        v4["subnets"][s].as_object_mut().unwrap().remove("cidr6");
    }
    v4["subnets"]["A"]["hosts"]["A-2"] = json!({});
    v4["routers"]["R-1"]
        .as_object_mut()
        .unwrap()
        .remove("fw_rules");
    let out = apply(&v4);
    assert!(!out.status.success(), "{datapath}: {}", text(&out));
    assert!(text(&out).contains("IPv6"), "{}", text(&out));
    assert!(ping6(&net, "A-2", "B-3"), "{datapath}: the lab runs on");
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert!(net.leftovers().is_empty(), "{:?}", net.leftovers());
}

/// Three routers in a line running OSPF (FRR, generated by dvnet), the middle one with no
/// IPv6 prefix at all: OSPFv3 runs beside OSPFv2 over link-local addresses.
fn ospf_line() -> Value {
    json!({
        "name": "ospf6", "routing": "ospf", "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64", "hosts": {"A-1": {}}},
            "B": {"cidr": "10.0.1.0/24", "cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}}},
            "C": {"cidr": "10.0.2.0/24"},
            "D": {"cidr": "10.0.3.0/24"}
        },
        "routers": {
            "R-1": {"subnets": ["A", "C"]},
            "R-2": {"subnets": ["C", "D"]},
            "R-3": {"subnets": ["D", "B"]}
        }
    })
}

fn ospfv3_converges_and_the_routers_forward_what_it_learnt(datapath: &str) {
    let net = TestNet::new(&format!("v6ospf-{datapath}"), ospf_line());
    net.up(&["--datapath", datapath]);
    assert!(
        dvnet_tests::eventually(30, || ping6(&net, "A-1", "B-1")),
        "{datapath}: A-1 reaches B-1 over IPv6 once OSPFv3 converged"
    );
    let out = net.exec("R-2", &["vtysh", "-c", "show ipv6 ospf6 neighbor"]);
    let neighbours = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        neighbours.matches("Full").count(),
        2,
        "{datapath}: R-2 is Full with R-1 and R-3: {neighbours}"
    );
    let out = net.exec("R-1", &["ip", "-6", "route", "show", "proto", "ospf"]);
    let routes = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        routes.contains("fd00:0:b::/64 ") && routes.contains("via fe80::"),
        "{datapath}: R-1 learnt B through a link-local next hop: {routes}"
    );
    assert_eq!(
        sysctl(&net, "R-1", "net.ipv6.conf.all.forwarding"),
        if datapath == "kernel" { "1" } else { "0" },
        "{datapath}: the kernel forwards only on the kernel datapath"
    );
    // R-2 has no global address, so no source for an error that could leave its links:
    // it stays silent, as a kernel does
    let out = net.exec(
        "A-1",
        &["traceroute", "-6", "-n", "-q", "1", "-w", "1", "B-1"],
    );
    assert_eq!(
        dvnet_tests::hops(&out),
        ["fd00:0:a::1", "*", "fd00:0:b::1", "fd00:0:b::2"],
        "{datapath}: {}",
        text(&out)
    );
}

/// IPv6-only subnets: B (hosts) and the transit T have `"cidr6"` alone. A and C are
/// dual-stack, joined over IPv6 only.
fn ipv6_only() -> Value {
    json!({
        "name": "v6only", "automatic_routing": true, "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64", "hosts": {"A-1": {}}},
            "B": {"cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}, "B-2": {"ip6": "fd00:0:b::b2"}}},
            "T": {"cidr6": "fd00:0:7::/64"},
            "C": {"cidr": "10.0.2.0/24", "cidr6": "fd00:0:c::/64", "hosts": {"C-1": {}}}
        },
        "routers": {"R-1": {"subnets": ["A", "T"]}, "R-2": {"subnets": ["T", "B"]},
                    "R-3": {"subnets": ["B", "C"]}}
    })
}

/// The IPv4 addresses of `node` beside `lo`'s.
fn ipv4_addresses(net: &TestNet, node: &str) -> Vec<String> {
    let out = net.exec(node, &["ip", "-4", "-o", "addr", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains(" lo "))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

fn an_ipv6_only_subnet_carries_ipv6_and_no_ipv4(datapath: &str) {
    let net = TestNet::new(&format!("v6o-{datapath}"), ipv6_only());
    let out = net.up(&["--datapath", datapath]);
    // IPv4 cannot cross B and T: said, not hidden
    let said = text(&out);
    assert!(
        said.contains(r#"over IPv4, subnets "C" cannot reach subnets "A""#),
        "{datapath}: {said}"
    );
    // nodes of B have IPv6 alone; routers have IPv4 only where their subnets do
    for node in ["B-1", "B-2", "R-2"] {
        assert_eq!(
            ipv4_addresses(&net, node),
            Vec::<String>::new(),
            "{datapath}: {node}"
        );
    }
    assert_eq!(
        ipv4_addresses(&net, "R-3"),
        ["10.0.2.1/24"],
        "{datapath}: R-3"
    );
    let inspect = net.inspect();
    assert!(inspect.to_string().contains("fd00:0:b::b2"), "{inspect}");
    // every host reaches every host over IPv6, by name
    let hosts = ["A-1", "B-1", "B-2", "C-1"];
    for from in hosts {
        for to in hosts.iter().filter(|&&t| t != from) {
            assert!(
                ping6(&net, from, to),
                "{datapath}: {from} cannot ping -6 {to}"
            );
        }
    }
    // through every router, across the IPv6-only transit
    let out = net.exec(
        "A-1",
        &["traceroute", "-6", "-n", "-q", "1", "-w", "2", "C-1"],
    );
    assert_eq!(
        dvnet_tests::hops(&out),
        ["fd00:0:a::1", "fd00:0:7::2", "fd00:0:b::2", "fd00:0:c::2"],
        "{datapath}: {}",
        text(&out)
    );
    // and IPv4 goes nowhere: no route across, no IPv4 name for B's hosts
    assert!(
        !ping4(&net, "A-1", "10.0.2.2"),
        "{datapath}: IPv4 crossed B"
    );
    assert!(
        !ping4(&net, "A-1", "B-1"),
        "{datapath}: B-1 has an IPv4 name"
    );
    if datapath == "ebpf" {
        for router in ["R-1", "R-2", "R-3"] {
            assert_eq!(
                sysctl(&net, router, "net.ipv6.conf.all.forwarding"),
                "0",
                "{router}: the program forwards"
            );
        }
    }

    // edits: a subnet more, IPv6-only, behind R-3; then B and T get IPv4 (their links get
    // an address, a MAC made from it and the link-local address made from the MAC), and
    // IPv4 crosses
    let apply = |topology: &Value| {
        let mut topology = topology.clone();
        topology["name"] = json!(net.id);
        std::fs::write(&net.file, topology.to_string()).unwrap();
        net.host.dvnet(&["apply", net.file.to_str().unwrap()])
    };
    let mut edited = ipv6_only();
    edited["subnets"]["D"] = json!({"cidr6": "fd00:0:d::/64", "hosts": {"D-1": {}}});
    edited["routers"]["R-3"]["subnets"] = json!(["B", "C", "D"]);
    let out = apply(&edited);
    assert!(out.status.success(), "{datapath}: {}", text(&out));
    assert!(ping6(&net, "A-1", "D-1"), "{datapath}: A-1 → the new D-1");
    assert!(ping6(&net, "D-1", "B-2"), "{datapath}: D-1 → B-2");
    edited["subnets"]["B"]["cidr"] = json!("10.0.1.0/24");
    edited["subnets"]["T"]["cidr"] = json!("10.0.7.0/24");
    let out = apply(&edited);
    assert!(out.status.success(), "{datapath}: {}", text(&out));
    assert!(
        ping4(&net, "A-1", "10.0.2.2"),
        "{datapath}: IPv4 crosses now"
    );
    assert!(
        ping4(&net, "A-1", "B-1"),
        "{datapath}: B-1 by its IPv4 name"
    );
    for (from, to) in [("A-1", "C-1"), ("B-1", "A-1"), ("D-1", "A-1")] {
        assert!(
            ping6(&net, from, to),
            "{datapath}: {from} → {to} over IPv6 still"
        );
    }
    // and IPv6-only again: IPv4 taken away, IPv6 as before
    edited["subnets"]["B"]
        .as_object_mut()
        .unwrap()
        .remove("cidr");
    let out = apply(&edited);
    assert!(out.status.success(), "{datapath}: {}", text(&out));
    assert_eq!(
        ipv4_addresses(&net, "B-1"),
        Vec::<String>::new(),
        "{datapath}"
    );
    assert!(
        !ping4(&net, "A-1", "10.0.2.2"),
        "{datapath}: IPv4 crosses B still"
    );
    for (from, to) in [("A-1", "C-1"), ("B-1", "A-1"), ("C-1", "B-2")] {
        assert!(
            ping6(&net, from, to),
            "{datapath}: {from} → {to} over IPv6 again"
        );
    }
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

/// OSPFv3 learns the way across IPv6-only subnets, R-2 (no IPv4 address at all) taking a
/// router id of its own.
fn ospfv3_routes_across_ipv6_only_subnets(datapath: &str) {
    let mut topology = ipv6_only();
    topology
        .as_object_mut()
        .unwrap()
        .remove("automatic_routing");
    topology["routing"] = json!("ospf");
    let net = TestNet::new(&format!("v6f-{datapath}"), topology);
    net.up(&["--datapath", datapath]);
    assert!(
        dvnet_tests::eventually(30, || ping6(&net, "A-1", "C-1")
            && ping6(&net, "C-1", "B-2")),
        "{datapath}: OSPFv3 never joined A and C"
    );
    let neighbours = net.exec("R-2", &["vtysh", "-c", "show ipv6 ospf6 neighbor"]);
    let neighbours = text(&neighbours);
    assert_eq!(
        neighbours.matches("Full/").count(),
        2,
        "{datapath}: R-2's neighbours: {neighbours}"
    );
    let routes = net.exec("R-1", &["ip", "-6", "route", "show", "fd00:0:c::/64"]);
    assert!(
        String::from_utf8_lossy(&routes.stdout).contains("proto ospf"),
        "{datapath}: {}",
        text(&routes)
    );
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

dvnet_tests::both_datapaths!(
    an_ipv6_only_subnet_carries_ipv6_and_no_ipv4,
    ospfv3_routes_across_ipv6_only_subnets,
    every_host_reaches_every_host_over_ipv6_by_name,
    traceroute6_shows_each_router_and_hop_limits_expire_there,
    stats_count_exactly_the_ipv6_pings_sent,
    firewall_filters_ipv6_as_it_filters_ipv4,
    an_ipv6_lab_survives_a_link_down_and_up,
    an_ipv6_lab_is_edited_while_it_runs,
    nodes_of_a_network_without_ipv6_keep_it_off,
    ospfv3_converges_and_the_routers_forward_what_it_learnt,
);
