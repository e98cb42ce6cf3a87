//! Tier 3: `dvnet up` builds real networks of namespaces; `dvnet down` leaves nothing behind.
//! Every test runs dvnet inside a fake host namespace of its own.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dvnet_tests::{FakeHost, TestNet, leftovers_of, require_root, run, text, unique};
use serde_json::{Value, json};

/// The classic two-router lab: subnet C is a transit subnet with no hosts.
fn classic() -> Value {
    json!({
        "name": "classic",
        "automatic_routing": true,
        "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}, "B-2": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {
            "R-1": {"subnets": ["A", "C"]},
            "R-2": {"subnets": ["C", "B"]}
        }
    })
}

/// Every node's addresses, from `dvnet inspect --json`.
fn addresses(inspect: &Value) -> BTreeMap<String, Vec<String>> {
    inspect["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let addrs = n["interfaces"]
                .as_array()
                .expect("interfaces")
                .iter()
                .filter(|i| i["name"] != "lo")
                .flat_map(|i| i["addresses"].as_array().expect("addresses").iter())
                .map(|a| {
                    a.as_str()
                        .expect("address")
                        .split('/')
                        .next()
                        .expect("ip")
                        .to_owned()
                })
                .collect();
            (n["name"].as_str().expect("name").to_owned(), addrs)
        })
        .collect()
}

#[test]
fn classic_lab_every_host_reaches_every_host_and_down_leaves_nothing() {
    if !require_root("classic_lab_every_host_reaches_every_host_and_down_leaves_nothing") {
        return;
    }
    let net = TestNet::new("classic", classic());
    net.up(&["--datapath", "kernel"]);
    let inspect = net.inspect();
    let addrs = addresses(&inspect);
    let hosts = ["A-1", "A-2", "B-1", "B-2"];
    for from in hosts {
        for to in hosts {
            if from != to {
                let target = &addrs[to][0];
                assert!(net.ping(from, target), "{from} cannot ping {to} ({target})");
            }
        }
    }
    // every router address answers too, the far side of the transit subnet included
    for addr in addrs["R-2"].iter().chain(&addrs["R-1"]) {
        assert!(
            net.ping("A-1", addr),
            "A-1 cannot ping router address {addr}"
        );
    }
    // names resolve through the per-node hosts file (update_hosts)
    assert!(net.ping("A-1", "B-2"), "A-1 cannot ping B-2 by name");

    // kernel routes are the plan's routes
    let plan = &inspect["state"]["plan"];
    for (node, live) in plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(inspect["nodes"].as_array().unwrap())
    {
        for route in node["routes"].as_array().unwrap() {
            let dest = route["dest"].as_str().unwrap();
            let dest = if dest == "0.0.0.0/0" { "default" } else { dest };
            let found = live["routes"].as_array().unwrap().iter().any(|r| {
                (r["dest"] == dest || (dest == "default" && r["dest"] == "0.0.0.0/0"))
                    && r["via"] == route["via"]
                    && r["dev"] == route["dev"]
            });
            assert!(
                found,
                "{}: planned route {route} missing from {}",
                node["name"], live["routes"]
            );
        }
    }

    let out = net.down();
    assert!(out.status.success(), "down: {}", text(&out));
    assert_eq!(
        net.leftovers(),
        Vec::<String>::new(),
        "down left things behind"
    );
    let again = net.down();
    assert!(
        again.status.success(),
        "a second down must succeed: {}",
        text(&again)
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to remove"),
        "{}",
        text(&again)
    );
    // the fake host itself was never touched: only its loopback
    let links = net.host.ip(&["-o", "link"]);
    assert_eq!(
        links.lines().count(),
        1,
        "the fake host gained links: {links}"
    );
}

#[test]
fn up_twice_says_so_and_changes_nothing() {
    if !require_root("up_twice_says_so_and_changes_nothing") {
        return;
    }
    let net = TestNet::new("twice", classic());
    net.up(&[]);
    let before = net.inspect();
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already up") && err.contains(&format!("dvnet down {}", net.id)),
        "{err}"
    );
    let after = net.inspect();
    assert_eq!(
        before["nodes"], after["nodes"],
        "a refused up changed the network"
    );
}

#[test]
fn two_networks_run_side_by_side() {
    if !require_root("two_networks_run_side_by_side") {
        return;
    }
    // Same addresses, same node names: nothing may collide.
    let a = TestNet::new("side-a", classic());
    let b = TestNet::new("side-b", classic());
    a.up(&[]);
    b.up(&[]);
    let addrs = addresses(&a.inspect());
    assert!(a.ping("A-1", &addrs["B-1"][0]));
    assert!(b.ping("A-1", &addrs["B-1"][0]));
    assert!(a.down().status.success());
    assert_eq!(a.leftovers(), Vec::<String>::new());
    // b is untouched by a's teardown
    assert!(
        b.ping("B-2", &addrs["A-2"][0]),
        "tearing down one network broke the other"
    );
}

#[test]
fn invalid_input_leaves_the_host_exactly_as_it_was() {
    if !require_root("invalid_input_leaves_the_host_exactly_as_it_was") {
        return;
    }
    let mut topo = classic();
    topo["routers"]["R-2"]["subnets"] = json!(["C", "D"]);
    let net = TestNet::new("invalid", topo);
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "invalid input must exit with 2: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"routers."R-2".subnets[1]"#) && err.contains("\"D\""),
        "{err}"
    );
    // (not a count of all of /run/netns: tests running beside this one create namespaces)
    assert_eq!(net.leftovers(), Vec::<String>::new());
    assert_eq!(net.host.ip(&["-o", "link"]).lines().count(), 1);
    assert_eq!(net.host.ip(&["-o", "route"]).trim(), "");
}

#[test]
fn down_recovers_after_up_is_killed_midway() {
    if !require_root("down_recovers_after_up_is_killed_midway") {
        return;
    }
    let host = FakeHost::new("kill9");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.json");
    let name = unique("kill9");
    // big enough that `up` is still running when killed
    let out = host.dvnet(&[
        "gen",
        "chain",
        "600",
        "--name",
        &name,
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = name.clone();

    let mut child = host
        .command(dvnet_tests::dvnet_bin())
        .args(["up", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dvnet up");
    // wait until it has created some namespaces, then kill -9 it
    let deadline = Instant::now() + Duration::from_secs(20);
    while leftovers_of(&id).len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9 dvnet up");
    let _ = child.wait();
    let left = leftovers_of(&id);
    assert!(
        left.len() >= 20,
        "up was killed too late or too early to test recovery: {left:?}"
    );

    let ls = host.dvnet(&["ls", "--json"]);
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains(&id),
        "ls must show the half-built network: {}",
        text(&ls)
    );

    let out = host.dvnet(&["down", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        leftovers_of(&id),
        Vec::<String>::new(),
        "down after kill -9 left things behind"
    );
}

#[test]
fn down_stops_processes_left_running_in_nodes() {
    if !require_root("down_stops_processes_left_running_in_nodes") {
        return;
    }
    let net = TestNet::new("procs", classic());
    net.up(&[]);
    // a server a user started and forgot
    let out = net.exec("A-1", &["iperf3", "-s", "-D", "-p", "5999"]);
    assert!(out.status.success(), "{}", text(&out));
    let ns = format!("dv-{}.a-1", net.id);
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", &ns])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&pids.stdout)
        .trim()
        .parse()
        .expect("one process in A-1");
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stopped 1 processes"),
        "{}",
        text(&out)
    );
    // gone, or dead and waiting for its parent to reap it (state Z)
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(), "the server outlived its network");
}

#[test]
fn an_up_that_fails_halfway_rolls_back() {
    if !require_root("an_up_that_fails_halfway_rolls_back") {
        return;
    }
    // A router's own FRR configuration with an error fails at the very end of `up`, once
    // namespaces, links, routes and programs all exist.
    let net = TestNet::new(
        "rollback",
        json!({
            "name": "rollback",
            "subnets": {
                "A": {"cidr": "10.0.0.0/24", "hosts": {"a": {}}},
                "B": {"cidr": "10.0.1.0/24", "hosts": {"b": {}}}
            },
            "routers": {"R": {"subnets": ["A", "B"], "frr_config": "bad.conf"}}
        }),
    );
    std::fs::write(
        net.dir.path().join("bad.conf"),
        "router ospf\n this is not a command\n",
    )
    .unwrap();
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf at line 2") && err.contains("removed again"),
        "{err}"
    );
    // the file was read as root: the error names the line, never quotes it
    assert!(!err.contains("this is not a command"), "{err}");
    assert_eq!(
        net.leftovers(),
        Vec::<String>::new(),
        "the rollback left things behind"
    );
    assert!(
        !std::path::Path::new(&format!("/sys/fs/bpf/dvnet/{}", net.id)).exists(),
        "pins left behind"
    );
    assert_eq!(
        net.host.ip(&["-o", "link"]).lines().count(),
        1,
        "the fake host gained links"
    );
}

#[test]
fn every_node_runs_with_the_sysctls_it_needs() {
    if !require_root("every_node_runs_with_the_sysctls_it_needs") {
        return;
    }
    // more namespaces per creating thread than one procfs instance serves (32), so that
    // the sysctls are also written through the replacements
    let host = FakeHost::new("sysctl");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.json");
    let name = unique("sysctl");
    let out = host.dvnet(&[
        "gen",
        "chain",
        "100",
        "--name",
        &name,
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = host.dvnet(&["up", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let nodes: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("dv-{name}.")))
        .collect();
    let mut wrong = Vec::new();
    for ns in &nodes {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["--", "cat"])
            .args([
                "/proc/sys/net/ipv6/conf/all/disable_ipv6",
                "/proc/sys/net/ipv6/conf/default/disable_ipv6",
                "/proc/sys/net/ipv4/conf/all/rp_filter",
                "/proc/sys/net/ipv4/icmp_ratelimit",
            ])
            .output()
            .unwrap();
        let values: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if values != ["1", "1", "0", "0"] {
            wrong.push(format!("{ns}: {values:?}"));
        }
    }
    let down = host.dvnet(&["down", &name]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(nodes.len(), 100, "one namespace per node");
    assert!(
        wrong.is_empty(),
        "nodes without IPv6 off, rp_filter 0 and no ICMP rate limit: {wrong:?}"
    );
    assert_eq!(leftovers_of(&name), Vec::<String>::new());
}

/// The descriptors `up` holds grow with its batches (2,048 handles), not with the network:
/// a 3,000-node chain (even one descriptor per node would be too many) comes up under a
/// limit of 2,500 open files, answers across, and goes down clean.
#[test]
fn a_network_larger_than_the_descriptor_limit_comes_up_and_down() {
    if !require_root("a_network_larger_than_the_descriptor_limit_comes_up_and_down") {
        return;
    }
    let host = FakeHost::new("fds");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.json");
    let name = unique("fds");
    let out = host.dvnet(&[
        "gen",
        "chain",
        "3000",
        "--name",
        &name,
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let limited = |args: &[&str]| {
        let mut cmd = host.command("prlimit");
        cmd.arg("--nofile=2500")
            .arg("--")
            .arg(dvnet_tests::dvnet_bin());
        run(cmd.args(args))
    };
    let out = limited(&["up", file.to_str().unwrap()]);
    let down = || limited(&["down", &name]);
    if !out.status.success() {
        let _ = down();
        panic!("up under 2,500 descriptors: {}", text(&out));
    }
    // h1-1 to h20-1: 19 routers away (10.0.19.2 is the LAN of r20)
    let out = host.dvnet(&[
        "exec",
        &name,
        "h1-1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        "10.0.19.2",
    ]);
    let reached = out.status.success();
    let out_down = down();
    assert!(reached, "h1-1 reaches h20-1: {}", text(&out));
    assert!(out_down.status.success(), "down: {}", text(&out_down));
    assert!(leftovers_of(&name).is_empty(), "down leaves nothing");
}
