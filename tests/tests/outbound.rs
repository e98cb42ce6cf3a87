//! Tier 3: outbound access, host ↔ node, published ports — inside a fake host with a fake
//! "internet" namespace behind it (never the real outside); over IPv4, and over IPv6 with
//! NAT66 on both datapaths.

use std::process::{Command, Stdio};

use dvnet_tests::{FakeHost, Internet, TestNet, require_root, text};
use serde_json::{Value, json};

fn lab(cidr: &str) -> Value {
    json!({
        "name": "out", "automatic_routing": true, "update_hosts": true,
        "outbound_access": {"enabled": true, "cidr": cidr},
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {"publish": ["8080:80/tcp"]}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {"R-1": {"subnets": ["A", "C"]}, "R-2": {"subnets": ["C", "B"]}}
    })
}

/// The fake host's firewall and forwarding (both families, and which interfaces take IPv6
/// router advertisements), as text.
fn host_state(host: &FakeHost) -> String {
    let mut out = String::new();
    for args in [
        &["iptables-save"][..],
        &["ip6tables-save"],
        &["nft", "list", "ruleset"],
        &[
            "sh",
            "-c",
            "grep . /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv4/ip_forward \
             /proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/accept_ra",
        ],
    ] {
        let o = dvnet_tests::run(host.command(args[0]).args(&args[1..]));
        // iptables-save stamps the time in comments
        for line in String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn iperf_server(cmd: &mut Command) -> std::process::Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server")
}

#[test]
fn nodes_reach_out_through_the_routers_the_host_reaches_in_and_down_restores_the_host() {
    if !require_root(
        "nodes_reach_out_through_the_routers_the_host_reaches_in_and_down_restores_the_host",
    ) {
        return;
    }
    let net = TestNet::new("out", lab("192.168.240.0/24"));
    let inet = Internet::behind(&net.host);
    let before = host_state(&net.host);
    net.up(&[]);

    // a node reaches the "internet" through its router, then the host
    assert!(net.ping("B-1", Internet::ADDRESS));
    let out = net.exec(
        "B-1",
        &["traceroute", "-n", "-q", "1", "-w", "2", Internet::ADDRESS],
    );
    let hops = dvnet_tests::hops(&out);
    assert_eq!(
        hops,
        ["10.0.1.1", "192.168.240.1", Internet::ADDRESS],
        "{}",
        text(&out)
    );
    // and the internet sees the host's address
    let srv = iperf_server(
        inet.command("timeout")
            .args(["5", "iperf3", "-s", "-1", "-p", "7000"]),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let client = net.exec(
        "A-1",
        &["iperf3", "-c", Internet::ADDRESS, "-p", "7000", "-n", "10K"],
    );
    assert!(client.status.success(), "{}", text(&client));
    let served = String::from_utf8_lossy(&srv.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        served.contains(&format!("Accepted connection from {}", Internet::HOST)),
        "{served}"
    );

    // the path shows in the counters: R-2 forwarded B-1's pings up to the host
    let stats = net.host.dvnet(&["stats", &net.id, "--json"]);
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    let uplink = stats["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["node"] == "R-2" && l["subnet"] == "uplink")
        .unwrap();
    assert!(
        uplink["tx"]["by_class"]["icmp"].as_u64().unwrap_or(0) >= 1,
        "{uplink}"
    );

    // the host reaches every node
    for addr in ["10.0.0.2", "10.0.1.2", "10.0.0.1", "10.0.2.2"] {
        let out = dvnet_tests::run(net.host.command("ping").args(["-c", "1", "-W", "2", addr]));
        assert!(out.status.success(), "host → {addr}: {}", text(&out));
    }

    // a published port answers from the internet; the node sees the internet's address
    let srv = iperf_server(net.host.command(dvnet_tests::dvnet_bin()).args([
        "exec", &net.id, "A-1", "--", "timeout", "5", "iperf3", "-s", "-1", "-p", "80",
    ]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let client = dvnet_tests::run(inet.command("iperf3").args([
        "-c",
        Internet::HOST,
        "-p",
        "8080",
        "-n",
        "10K",
    ]));
    assert!(client.status.success(), "{}", text(&client));
    let served = String::from_utf8_lossy(&srv.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        served.contains(&format!("Accepted connection from {}", Internet::ADDRESS)),
        "{served}"
    );

    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        host_state(&net.host),
        before,
        "down restores the host's firewall and forwarding exactly"
    );
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

#[test]
fn an_uplink_that_clashes_with_the_hosts_routes_is_refused() {
    if !require_root("an_uplink_that_clashes_with_the_hosts_routes_is_refused") {
        return;
    }
    let net = TestNet::new("clash", lab("203.0.113.128/25"));
    let _inet = Internet::behind(&net.host);
    let before = host_state(&net.host);
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clashes with the host's route to 203.0.113.0/24"),
        "{err}"
    );
    assert_eq!(net.leftovers(), Vec::<String>::new());
    assert_eq!(host_state(&net.host), before);
}

#[test]
fn a_port_published_twice_is_refused() {
    if !require_root("a_port_published_twice_is_refused") {
        return;
    }
    let first = TestNet::new("pub1", lab("192.168.240.0/24"));
    first.up(&[]);
    // the same host port from another network, in the same host
    let mut topo = lab("192.168.241.0/24");
    topo["name"] = json!("other");
    // subnets of its own: the host routes the first network's subnets already
    for (subnet, cidr) in [
        ("A", "10.1.0.0/24"),
        ("B", "10.1.1.0/24"),
        ("C", "10.1.2.0/24"),
    ] {
        topo["subnets"][subnet]["cidr"] = json!(cidr);
    }
    let second = TestNet::new("pub2", topo);
    let file = second.file.to_str().unwrap().to_owned();
    let out = first.host.dvnet(&["up", &file]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host port 8080/tcp is already published by network"),
        "{err}"
    );
    assert_eq!(second.leftovers(), Vec::<String>::new());
}

/// Rewrites the network's file with `topo` (keeping its unique name) and applies it.
fn apply(net: &TestNet, mut topo: Value) -> std::process::Output {
    topo["name"] = json!(net.id);
    std::fs::write(&net.file, topo.to_string()).unwrap();
    net.host.dvnet(&["apply", net.file.to_str().unwrap()])
}

/// An iperf3 exchange from the internet to the host's `port`, answered by a server on `port
/// 80` in node `node`.
fn published_port_answers(net: &TestNet, inet: &Internet, node: &str, port: &str) -> bool {
    let srv = iperf_server(net.host.command(dvnet_tests::dvnet_bin()).args([
        "exec", &net.id, node, "--", "timeout", "5", "iperf3", "-s", "-1", "-p", "80",
    ]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let client = dvnet_tests::run(inet.command("iperf3").args([
        "-c",
        Internet::HOST,
        "-p",
        port,
        "-n",
        "10K",
    ]));
    let _ = srv.wait_with_output();
    client.status.success()
}

#[test]
fn apply_turns_outbound_access_on_grows_it_and_turns_it_off() {
    if !require_root("apply_turns_outbound_access_on_grows_it_and_turns_it_off") {
        return;
    }
    let mut topo = lab("192.168.240.0/24");
    let outbound = topo
        .as_object_mut()
        .unwrap()
        .remove("outbound_access")
        .unwrap();
    topo["subnets"]["A"]["hosts"]["A-1"] = json!({});
    let net = TestNet::new("outapply", topo.clone());
    let inet = Internet::behind(&net.host);
    let before = host_state(&net.host);
    let links_before = net.host.ip(&["-o", "link"]);
    net.up(&[]);
    assert!(!net.ping("B-1", Internet::ADDRESS), "no way out yet");

    // on, with a published port
    topo["outbound_access"] = outbound;
    topo["subnets"]["A"]["hosts"]["A-1"] = json!({"publish": ["8080:80/tcp"]});
    let out = apply(&net, topo.clone());
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("+ host: uplink, routes and NAT"), "{said}");
    assert!(net.ping("B-1", Internet::ADDRESS), "B-1 does not reach out");
    assert!(published_port_answers(&net, &inet, "A-1", "8080"));

    // a subnet more: the host routes to it, its host reaches out, a port more is published
    topo["subnets"]["D"] =
        json!({"cidr": "10.0.3.0/24", "hosts": {"D-1": {"publish": ["8081:80/tcp"]}}});
    topo["routers"]["R-3"] = json!({"subnets": ["C", "D"]});
    let out = apply(&net, topo.clone());
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("~ host: NAT table") && said.contains("+ router R-3"),
        "{said}"
    );
    assert!(net.ping("D-1", Internet::ADDRESS), "D-1 does not reach out");
    let out = dvnet_tests::run(
        net.host
            .command("ping")
            .args(["-c", "1", "-W", "2", "10.0.3.2"]),
    );
    assert!(out.status.success(), "host → D-1: {}", text(&out));
    assert!(published_port_answers(&net, &inet, "D-1", "8081"));
    assert!(published_port_answers(&net, &inet, "A-1", "8080"));

    // off again: the host is as it was before the network came up
    topo.as_object_mut().unwrap().remove("outbound_access");
    for (subnet, host) in [("A", "A-1"), ("D", "D-1")] {
        topo["subnets"][subnet]["hosts"][host] = json!({});
    }
    let out = apply(&net, topo.clone());
    assert!(out.status.success(), "{}", text(&out));
    assert!(!net.ping("B-1", Internet::ADDRESS), "still a way out");
    assert_eq!(
        host_state(&net.host),
        before,
        "the host's firewall and forwarding"
    );
    assert_eq!(
        net.host.ip(&["-o", "link"]),
        links_before,
        "the host's links"
    );
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(host_state(&net.host), before);
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

/// A dual-stack lab with outbound access over both families (NAT66 for IPv6): the transit
/// subnet C is IPv4 only, R-1 and R-2 are the border routers, R-3 (and D behind it) reaches
/// the uplink through R-2.
fn lab6() -> Value {
    json!({
        "name": "out6", "automatic_routing": true, "update_hosts": true,
        "outbound_access": {"enabled": true, "cidr": "192.168.240.0/24", "cidr6": "fd00:ff::/64",
                            "routers": ["R-1", "R-2"]},
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "cidr6": "fd00:0:a::/64",
                  "hosts": {"A-1": {"publish": ["8080:80/tcp"]}}},
            "B": {"cidr": "10.0.1.0/24", "cidr6": "fd00:0:b::/64", "hosts": {"B-1": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}},
            "D": {"cidr": "10.0.3.0/24", "cidr6": "fd00:0:d::/64", "hosts": {"D-1": {}}}
        },
        "routers": {"R-1": {"subnets": ["A", "C"]}, "R-2": {"subnets": ["C", "B"]},
                    "R-3": {"subnets": ["B", "D"]}}
    })
}

/// One line of the fake host's sysctls, `net.ipv6.conf.<dev>.<key>`.
fn host_sysctl6(host: &FakeHost, dev: &str, key: &str) -> String {
    let out = dvnet_tests::run(
        host.command("cat")
            .arg(format!("/proc/sys/net/ipv6/conf/{dev}/{key}")),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether an iperf3 exchange (`client`) with a server (`server`) succeeds, the server
/// seeing the connection come from `seen`.
fn iperf6_seen(server: &mut Command, client: &mut Command, seen: &str) -> Result<(), String> {
    let listener = iperf_server(server);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = dvnet_tests::run(client);
    let log = String::from_utf8_lossy(&listener.wait_with_output().unwrap().stdout).into_owned();
    if !out.status.success() {
        return Err(format!("client: {}", text(&out)));
    }
    if log.contains(&format!("Accepted connection from {seen}")) {
        Ok(())
    } else {
        Err(format!("the server did not see {seen}: {log}"))
    }
}

fn nodes_reach_out_over_ipv6_through_nat66_and_down_restores_the_host(datapath: &str) {
    let net = TestNet::new(&format!("o6-{datapath}"), lab6());
    let inet = Internet::behind(&net.host);
    let before = host_state(&net.host);
    assert_eq!(host_sysctl6(&net.host, "inet0", "accept_ra"), "1");
    assert_eq!(host_sysctl6(&net.host, "all", "forwarding"), "0");
    net.up(&["--datapath", datapath]);
    // IPv6 forwarding on, and the interface that took router advertisements still does
    assert_eq!(host_sysctl6(&net.host, "all", "forwarding"), "1");
    assert_eq!(host_sysctl6(&net.host, "inet0", "accept_ra"), "2");

    // every host reaches the internet over IPv6: from behind a border router, and from D
    // behind R-3, which has no uplink of its own
    for node in ["A-1", "B-1", "D-1"] {
        let out = net.exec(
            node,
            &["ping", "-6", "-c", "1", "-W", "2", Internet::ADDRESS6],
        );
        assert!(
            out.status.success(),
            "{datapath}: {node} → internet: {}",
            text(&out)
        );
    }
    // through its router, then the host
    let out = net.exec(
        "D-1",
        &[
            "traceroute",
            "-6",
            "-n",
            "-q",
            "1",
            "-w",
            "2",
            Internet::ADDRESS6,
        ],
    );
    assert_eq!(
        dvnet_tests::hops(&out),
        [
            "fd00:0:d::1",
            "fd00:0:b::1",
            "fd00:ff::1",
            Internet::ADDRESS6
        ],
        "{datapath}: {}",
        text(&out)
    );
    // the internet sees the host's address (NAT66), for TCP too
    iperf6_seen(
        inet.command("timeout")
            .args(["5", "iperf3", "-s", "-1", "-p", "7000"]),
        net.host.command(dvnet_tests::dvnet_bin()).args([
            "exec",
            &net.id,
            "A-1",
            "--",
            "iperf3",
            "-c",
            Internet::ADDRESS6,
            "-p",
            "7000",
            "-n",
            "10K",
        ]),
        Internet::HOST6,
    )
    .unwrap_or_else(|e| panic!("{datapath}: A-1 → internet over TCP: {e}"));

    // the host reaches every node over IPv6, routers' own addresses included
    for addr in [
        "fd00:0:a::2",
        "fd00:0:b::2",
        "fd00:0:d::2",
        "fd00:0:a::1",
        "fd00:0:d::1",
    ] {
        let out = dvnet_tests::run(
            net.host
                .command("ping")
                .args(["-6", "-c", "1", "-W", "2", addr]),
        );
        assert!(
            out.status.success(),
            "{datapath}: host → {addr}: {}",
            text(&out)
        );
    }

    // a published port answers on the host's IPv6 address; the node sees the internet's
    iperf6_seen(
        net.host.command(dvnet_tests::dvnet_bin()).args([
            "exec", &net.id, "A-1", "--", "timeout", "5", "iperf3", "-s", "-1", "-p", "80",
        ]),
        inet.command("iperf3")
            .args(["-c", Internet::HOST6, "-p", "8080", "-n", "10K"]),
        Internet::ADDRESS6,
    )
    .unwrap_or_else(|e| panic!("{datapath}: internet → published port over IPv6: {e}"));

    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        host_state(&net.host),
        before,
        "{datapath}: down restores the host's firewall, forwarding and accept_ra exactly"
    );
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

/// OSPF spreads the border routers' ways out, in both families (OSPFv2 and OSPFv3), and the
/// routers that learnt their routes from it still reach every subnet (on the eBPF datapath
/// through the kernel's FIB: a border router's own default must not hide those routes).
fn under_ospf_every_host_reaches_out_and_the_host_reaches_every_host(datapath: &str) {
    let mut topo = lab6();
    topo.as_object_mut().unwrap().remove("automatic_routing");
    topo["routing"] = json!("ospf");
    let net = TestNet::new(&format!("o6f-{datapath}"), topo);
    let _inet = Internet::behind(&net.host);
    let before = host_state(&net.host);
    net.up(&["--datapath", datapath]);
    // converged: D, two routers from the uplink, reaches out in both families
    assert!(
        dvnet_tests::eventually(30, || {
            net.ping("D-1", Internet::ADDRESS) && net.ping("D-1", Internet::ADDRESS6)
        }),
        "{datapath}: D-1 never reached out"
    );
    // R-3 learnt its default routes from the border routers
    for family in ["-4", "-6"] {
        let routes = net.exec("R-3", &["ip", family, "route", "show", "default"]);
        assert!(
            String::from_utf8_lossy(&routes.stdout).contains("proto ospf"),
            "{datapath}: R-3 {family}: {}",
            text(&routes)
        );
    }
    for node in ["A-1", "B-1", "D-1"] {
        assert!(
            net.ping(node, Internet::ADDRESS),
            "{datapath}: {node} → internet"
        );
        assert!(
            net.ping(node, Internet::ADDRESS6),
            "{datapath}: {node} → internet over IPv6"
        );
    }
    // the host reaches every host, through whichever border router it routes each subnet by
    for addr in [
        "10.0.0.2",
        "10.0.1.3",
        "10.0.3.2",
        "fd00:0:a::2",
        "fd00:0:b::3",
        "fd00:0:d::2",
    ] {
        let out = dvnet_tests::run(net.host.command("ping").args(["-c", "1", "-W", "2", addr]));
        assert!(
            out.status.success(),
            "{datapath}: host → {addr}: {}",
            text(&out)
        );
    }
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(host_state(&net.host), before);
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

dvnet_tests::both_datapaths!(
    nodes_reach_out_over_ipv6_through_nat66_and_down_restores_the_host,
    under_ospf_every_host_reaches_out_and_the_host_reaches_every_host,
);

#[test]
fn apply_grows_outbound_access_over_ipv6_refuses_a_new_uplink_prefix_and_turns_it_off() {
    if !require_root(
        "apply_grows_outbound_access_over_ipv6_refuses_a_new_uplink_prefix_and_turns_it_off",
    ) {
        return;
    }
    let mut topo = lab6();
    let net = TestNet::new("o6ap", topo.clone());
    let _inet = Internet::behind(&net.host);
    let before = host_state(&net.host);
    net.up(&[]);

    // a dual-stack subnet more behind R-3: the host routes to it, NAT66 takes its prefix
    topo["subnets"]["E"] = json!({"cidr": "10.0.4.0/24", "cidr6": "fd00:0:e::/64",
                                  "hosts": {"E-1": {}}});
    topo["routers"]["R-3"]["subnets"] = json!(["B", "D", "E"]);
    let out = apply(&net, topo.clone());
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("+fd00:0:e::/64 via fd00:ff::2") && said.contains("~ host: NAT table"),
        "{said}"
    );
    let out = net.exec(
        "E-1",
        &["ping", "-6", "-c", "1", "-W", "2", Internet::ADDRESS6],
    );
    assert!(out.status.success(), "E-1 → internet: {}", text(&out));
    let out = dvnet_tests::run(net.host.command("ping").args([
        "-6",
        "-c",
        "1",
        "-W",
        "2",
        "fd00:0:e::2",
    ]));
    assert!(out.status.success(), "host → E-1: {}", text(&out));
    let nat = String::from_utf8_lossy(
        &dvnet_tests::run(net.host.command("nft").args(["list", "ruleset"])).stdout,
    )
    .into_owned();
    assert!(nat.contains("fd00:0:e::/64"), "{nat}");

    // a new uplink prefix would change the host's IPv6 side: refused, nothing touched
    let mut moved = topo.clone();
    moved["outbound_access"]["cidr6"] = json!("fd00:fe::/64");
    let running = host_state(&net.host);
    let out = apply(&net, moved);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("changes outbound_access.cidr6") && err.contains("fd00:ff::1 → fd00:fe::1"),
        "{err}"
    );
    assert_eq!(host_state(&net.host), running);
    assert!(
        net.ping("B-1", Internet::ADDRESS6),
        "still out after the refusal"
    );

    // outbound access off: the host's IPv6 forwarding, accept_ra and tables as before
    topo.as_object_mut().unwrap().remove("outbound_access");
    topo["subnets"]["A"]["hosts"]["A-1"] = json!({});
    let out = apply(&net, topo);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!net.ping("B-1", Internet::ADDRESS6), "still a way out");
    assert_eq!(host_state(&net.host), before);
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(host_state(&net.host), before);
    assert_eq!(net.leftovers(), Vec::<String>::new());
}
