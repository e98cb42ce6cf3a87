//! Tier 3: Docker nodes, mixed networks, FRR routers speaking OSPF (in containers and in
//! namespaces), forwarded by the eBPF datapath along the routes OSPF installs.

use std::process::Command;

use dvnet_tests::{TestNet, eventually, require_docker, require_root, text};
use serde_json::{Value, json};

fn classic(host_image: Option<&str>, router_image: Option<&str>) -> Value {
    let node = |image: Option<&str>| image.map_or(json!({}), |i| json!({"image": i}));
    json!({
        "name": "classic", "automatic_routing": true, "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": node(host_image), "A-2": node(host_image)}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": node(host_image), "B-2": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {
            "R-1": router(&["A", "C"], router_image),
            "R-2": router(&["C", "B"], None)
        }
    })
}

/// A router on `subnets`, a container when `image` is given.
fn router(subnets: &[&str], image: Option<&str>) -> Value {
    let mut r = json!({"subnets": subnets});
    if let Some(image) = image {
        r["image"] = json!(image);
    }
    r
}

fn containers_of(id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=org.dvnet.network={id}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn docker_ping(container: &str, target: &str) -> bool {
    Command::new("docker")
        .args(["exec", container, "ping", "-c", "1", "-W", "2", target])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_classic_lab_as_containers_and_down_leaves_no_container() {
    if !require_docker("the_classic_lab_as_containers_and_down_leaves_no_container") {
        return;
    }
    let mut topo = classic(Some("dvnet/host"), Some("dvnet/router"));
    topo["subnets"]["B"]["hosts"]["B-2"] = json!({"image": "dvnet/host"});
    topo["routers"]["R-2"]["image"] = json!("dvnet/router");
    let net = TestNet::new("ctr", topo);
    net.up(&[]);
    let names = containers_of(&net.id);
    assert_eq!(names.len(), 6, "every node is a container: {names:?}");
    let hosts = ["A-1", "A-2", "B-1", "B-2"];
    for from in hosts {
        let container = format!("dv-{}.{}", net.id, from.to_lowercase());
        for to in hosts.iter().filter(|&&t| t != from) {
            assert!(
                docker_ping(&container, to),
                "docker exec {container} ping {to}"
            );
        }
    }
    // the container's hostname is the node's name
    let out = Command::new("docker")
        .args(["exec", &format!("dv-{}.a-1", net.id), "hostname"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "A-1");
    assert!(net.down().status.success());
    assert!(
        containers_of(&net.id).is_empty(),
        "down removes the containers"
    );
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

#[test]
fn a_mixed_lab_of_containers_and_namespaces() {
    if !require_docker("a_mixed_lab_of_containers_and_namespaces") {
        return;
    }
    let net = TestNet::new("mixed", classic(Some("dvnet/host"), None));
    net.up(&[]);
    assert_eq!(containers_of(&net.id).len(), 3, "A-1, A-2, B-1");
    for (from, to) in [
        ("A-1", "B-2"),
        ("B-2", "A-1"),
        ("B-1", "A-2"),
        ("A-2", "B-2"),
    ] {
        assert!(
            net.ping(from, to),
            "{from} → {to} (dvnet exec works for both kinds)"
        );
    }
    // --runtime netns ignores images
    let ns_only = TestNet::new("mixed-ns", classic(Some("dvnet/host"), None));
    ns_only.up(&["--runtime", "netns"]);
    assert!(containers_of(&ns_only.id).is_empty());
    assert!(ns_only.ping("A-1", "B-2"));
}

#[test]
fn a_missing_image_is_refused_before_anything_is_created() {
    if !require_docker("a_missing_image_is_refused_before_anything_is_created") {
        return;
    }
    let net = TestNet::new("noimage", classic(Some("dvnet/no-such-image"), None));
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dvnet/no-such-image")
            && err.contains("A-1, A-2, B-1")
            && err.contains("--runtime netns"),
        "{err}"
    );
    assert_eq!(net.leftovers(), Vec::<String>::new());
    assert!(containers_of(&net.id).is_empty());
}

#[test]
fn a_router_image_without_dvnet_frr_is_refused_before_anything_is_created() {
    if !require_docker("a_router_image_without_dvnet_frr_is_refused_before_anything_is_created") {
        return;
    }
    // dvnet/host has no FRR: found out before any namespace or container exists
    let net = TestNet::new("nofrr", ospf_lab(Some("dvnet/host")));
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no `dvnet-frr`") && err.contains("dvnet/router"),
        "{err}"
    );
    assert!(!err.contains("removed again"), "nothing was created: {err}");
    assert_eq!(net.leftovers(), Vec::<String>::new());
    assert!(containers_of(&net.id).is_empty());
}

/// The OSPF lab of the original dvnet slides: 4 hosts, 2 routers, a transit subnet.
fn ospf_lab(router_image: Option<&str>) -> Value {
    json!({
        "name": "ospf", "routing": "ospf", "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}, "B-2": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {
            "R-1": router(&["A", "C"], router_image),
            "R-2": router(&["C", "B"], router_image)
        }
    })
}

fn ospf_converges_and_ebpf_forwards(net: &TestNet) {
    assert!(
        eventually(30, || net.ping("A-1", "B-2")),
        "OSPF did not converge within 30 s"
    );
    let hosts = ["A-1", "A-2", "B-1", "B-2"];
    for from in hosts {
        for to in hosts.iter().filter(|&&t| t != from) {
            assert!(net.ping(from, to), "{from} → {to}");
        }
    }
    for router in ["R-1", "R-2"] {
        // the route came from OSPF...
        let routes = net.exec(router, &["ip", "route"]);
        assert!(
            String::from_utf8_lossy(&routes.stdout).contains("proto ospf"),
            "{router}: {}",
            text(&routes)
        );
        // ...and the kernel does not forward: no interface has forwarding on
        let fwd = net.exec(
            router,
            &["sh", "-c", "cat /proc/sys/net/ipv4/conf/eth*/forwarding"],
        );
        assert!(
            String::from_utf8_lossy(&fwd.stdout)
                .lines()
                .all(|l| l == "0"),
            "{router}: {}",
            text(&fwd)
        );
    }
    let out = net.exec("A-1", &["traceroute", "-n", "-q", "1", "-w", "2", "B-2"]);
    let hops = dvnet_tests::hops(&out);
    assert_eq!(hops, ["10.0.0.1", "10.0.2.2", "10.0.1.3"], "{}", text(&out));
}

#[test]
fn ospf_in_namespace_routers_converges_and_the_ebpf_datapath_forwards() {
    if !require_root("ospf_in_namespace_routers_converges_and_the_ebpf_datapath_forwards") {
        return;
    }
    let net = TestNet::new("ospf-ns", ospf_lab(None));
    net.up(&[]);
    ospf_converges_and_ebpf_forwards(&net);
    // vtysh reaches this router's own daemons, and shows its name
    let out = net.exec("R-1", &["vtysh", "-c", "show ip ospf neighbor"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Full"),
        "{}",
        text(&out)
    );
    let out = net.exec("R-1", &["hostname"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "R-1");
}

#[test]
fn ospf_in_container_routers_converges_and_the_ebpf_datapath_forwards() {
    if !require_docker("ospf_in_container_routers_converges_and_the_ebpf_datapath_forwards") {
        return;
    }
    let net = TestNet::new("ospf-ctr", ospf_lab(Some("dvnet/router")));
    net.up(&[]);
    ospf_converges_and_ebpf_forwards(&net);
}

// The OSPF ring that reroutes around a link taken down is examples/ospf-ring.json, tested in
// tests/examples.rs.
