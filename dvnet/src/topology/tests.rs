//! Tests of reading topology files: the fixtures under `dvnet/tests/fixtures/`, the corpus of
//! invalid files (one per rule), and the forms the format accepts.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use super::{
    Endpoint, Firewall, FwRule, Host, Impair, MAX_FILE_BYTES, NodeRef, Outbound, Policy, Proto,
    Router, Routing, Subnet, Topology, TopologyError, network_id, read_text, sanitize,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn net(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}

fn read(text: &str) -> Topology {
    Topology::from_json(text, "test.json").unwrap_or_else(|e| panic!("expected a valid file: {e}"))
}

/// Every diagnostic of an invalid file, as `path: message`.
fn errors(text: &str) -> Vec<String> {
    match Topology::from_json(text, "test.json") {
        Err(TopologyError::Invalid { diagnostics, .. }) => {
            diagnostics.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected validation errors, got {other:?}"),
    }
}

fn host(name: &str, subnet: usize) -> Host {
    Host {
        name: name.to_owned(),
        subnet,
        ip: None,
        ip6: None,
        image: None,
        publish: Vec::new(),
        impair: Impair::default(),
        machine: 0,
    }
}

#[test]
fn classic_lab_reads_in_file_order() {
    let topology = Topology::from_file(&fixtures().join("classic.json")).unwrap();
    let a2 = NodeRef::Host(1);
    assert_eq!(topology.node_name(a2), "A-2");
    let expected = Topology {
        name: "Test Net 0".to_owned(),
        id: "test-net-0".to_owned(),
        routing: Routing::Static,
        update_hosts: false,
        ecmp: false,
        outbound: Some(Outbound {
            cidr: net("192.168.240.0/24"),
            cidr6: None,
            routers: vec![0, 1],
        }),
        machines: Vec::new(),
        vxlan_port: None,
        subnets: vec![
            Subnet {
                name: "A".to_owned(),
                cidr: Some(net("10.0.0.0/24")),
                cidr6: None,
                impair: Impair::default(),
            },
            Subnet {
                name: "B".to_owned(),
                cidr: Some(net("10.0.1.0/24")),
                cidr6: None,
                impair: Impair::default(),
            },
            Subnet {
                name: "C".to_owned(),
                cidr: Some(net("10.0.2.0/24")),
                cidr6: None,
                impair: Impair::default(),
            },
        ],
        routers: vec![
            Router {
                name: "R-1".to_owned(),
                subnets: vec![0, 2],
                ips: vec![None, None],
                ips6: vec![None; 2],
                image: None,
                firewall: Firewall {
                    policy: Policy::Accept,
                    accept: vec![],
                    drop: vec![FwRule {
                        src: Endpoint::Host(1),
                        dst: Endpoint::Subnet(1),
                        proto: None,
                        dport: None,
                        origin: r#"routers."R-1".fw_rules.drop[0]"#.to_owned(),
                    }],
                },
                frr_config: None,
                publish: Vec::new(),
                impair: vec![Impair::default(); 2],
                machine: 0,
            },
            Router {
                name: "R-2".to_owned(),
                subnets: vec![2, 1],
                ips: vec![None, None],
                ips6: vec![None; 2],
                image: Some("dvnet/router".to_owned()),
                firewall: Firewall::default(),
                frr_config: None,
                publish: Vec::new(),
                impair: vec![Impair::default(); 2],
                machine: 0,
            },
        ],
        hosts: vec![
            Host {
                image: Some("dvnet/host".to_owned()),
                ..host("A-1", 0)
            },
            host("A-2", 0),
            host("B-1", 1),
            host("B-2", 1),
        ],
    };
    assert_eq!(topology, expected);
}

#[test]
fn original_demo_reads_unchanged() {
    let topology = Topology::from_file(&fixtures().join("original-demo.json")).unwrap();
    assert_eq!(topology.name, "Test Net 0");
    assert!(
        topology.routing == Routing::None,
        "automatic_routing defaults to false, as in the original"
    );
    assert!(topology.update_hosts);
    assert_eq!(
        topology.outbound,
        Some(Outbound {
            cidr: net("192.168.240.0/24"),
            cidr6: None,
            routers: vec![0, 1],
        })
    );
    let names: Vec<&str> = topology.subnets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["A", "B", "C"]);
    let hosts: Vec<&str> = topology.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(hosts, ["A-1", "A-2", "B-1", "B-2"]);
    assert!(
        topology
            .hosts
            .iter()
            .all(|h| h.image.as_deref() == Some("pcollado/dhost"))
    );
    for (router, subnets) in topology.routers.iter().zip([[0, 2], [2, 1]]) {
        assert_eq!(router.subnets, subnets, "{}", router.name);
        assert_eq!(router.image.as_deref(), Some("pcollado/drouter"));
        assert!(
            router.firewall.policy == Policy::Accept
                && router.firewall.accept.is_empty()
                && router.firewall.drop.is_empty(),
            "{} has an open firewall",
            router.name
        );
    }
}

/// Each `invalid/<rule>.json` fails with one diagnostic per line of `<rule>.expected`, and the
/// error text holds every line.
#[test]
fn invalid_corpus_reports_the_expected_errors() {
    let dir = fixtures().join("invalid");
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let expected_path = path.with_extension("expected");
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {}
            Some("expected") => {
                assert!(
                    path.with_extension("json").exists(),
                    "{path:?} has no .json beside it"
                );
                continue;
            }
            _ => panic!("unexpected file {path:?} in the corpus"),
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{path:?} needs {expected_path:?}: {e}"));
        let lines: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{expected_path:?} is empty");
        let Err(error) = Topology::from_file(&path) else {
            failures.push(format!("{}: accepted", path.display()));
            continue;
        };
        let count = match &error {
            TopologyError::Invalid { diagnostics, .. } => diagnostics.len(),
            _ => 1,
        };
        let text = error.to_string();
        if count != lines.len() {
            failures.push(format!(
                "{}: {count} errors, expected {}:\n{text}",
                path.display(),
                lines.len()
            ));
        }
        for line in lines {
            if !text.contains(line) {
                failures.push(format!("{}: missing {line:?} in:\n{text}", path.display()));
            }
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} files in {dir:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_error_is_reported_at_once() {
    let errors = errors(
        r#"{
            "name": "lab",
            "update_hosts": "no",
            "subnets": {
                "A": {"cidrr": "10.0.0.0/24"},
                "B": {"cidr": "fd00::/64", "hosts": {"B-1": {"ip": "10.0.0.1"}}},
                "C": {"cidr": "10.0.2.0/24"}
            },
            "routers": {"R-1": {"subnets": ["C", "D"], "fw_rules": {"drop": [["X", "Y"]]}}}
        }"#,
    );
    let also = r#"an entry may also be a CIDR such as "10.0.0.0/24" or "fd00:0:a::/64", an address, or "*""#;
    assert_eq!(
        errors,
        [
            "update_hosts: expected true or false, found a string".to_owned(),
            r#"subnets."A".cidrr: unknown field "cidrr" (did you mean "cidr" or "cidr6"?)"#.to_owned(),
            r#"subnets."A": missing field "cidr": the subnet's prefix, such as "10.0.0.0/24" (or "cidr6" alone for an IPv6-only subnet)"#
                .to_owned(),
            r#"subnets."B".cidr: "fd00::/64" is IPv6: IPv6 prefixes go in "cidr6" and addresses in "ip6", beside the IPv4 ones"#
                .to_owned(),
            r#"routers."R-1".subnets[1]: unknown subnet "D" (the subnets are "A", "B", "C")"#
                .to_owned(),
            format!(r#"routers."R-1".fw_rules.drop[0][0]: unknown subnet or node "X"; {also}"#),
            format!(r#"routers."R-1".fw_rules.drop[0][1]: unknown subnet or node "Y"; {also}"#),
        ]
    );
}

#[test]
fn invalid_error_names_the_file_and_counts() {
    let error = Topology::from_json(r#"{"name": "lab"}"#, "net.json").unwrap_err();
    assert_eq!(
        error.to_string(),
        "net.json: 1 error:\n  missing top-level field \"subnets\": an object of subnets, such as \
         {\"A\": {\"cidr\": \"10.0.0.0/24\"}}"
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let error = Topology::from_json("{\n  \"name\": \"lab\"\n  \"subnets\": {}\n}", "net.json")
        .unwrap_err();
    match error {
        TopologyError::Syntax {
            line,
            column,
            ref message,
            ..
        } => {
            assert_eq!((line, column), (3, 3));
            assert_eq!(message, "expected `,` or `}`");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn keys_match_regardless_of_case() {
    let topology = read(
        r#"{
            "Name": "lab", "AUTOMATIC_ROUTING": true, "Update_Hosts": true,
            "Outbound_Access": {"ENABLED": true, "Cidr": "192.168.240.0/24"},
            "SUBNETS": {"a": {"CIDR": "10.0.0.0/24",
                              "Hosts": {"h": {"IMAGE": "img", "IP": "10.0.0.9"}}}},
            "Routers": {"r": {"Subnets": ["a"], "Fw_Rules": {
                "Policy": "drop", "Accept": [{"SRC": "h", "Proto": "TCP", "DPort": 22}]}}}
        }"#,
    );
    assert_eq!(topology.name, "lab");
    assert!(topology.routing == Routing::Static && topology.update_hosts);
    assert!(topology.outbound.is_some());
    assert_eq!(topology.subnets[0].name, "a", "names keep their case");
    assert_eq!(topology.hosts[0].image.as_deref(), Some("img"));
    assert_eq!(topology.hosts[0].ip, Some(Ipv4Addr::new(10, 0, 0, 9)));
    let firewall = &topology.routers[0].firewall;
    assert_eq!(firewall.policy, Policy::Drop);
    assert_eq!(firewall.accept[0].proto, Some(Proto::Tcp));
    assert_eq!(firewall.accept[0].dport, Some(22));
}

#[test]
fn names_are_case_sensitive() {
    let errors = errors(
        r#"{"name": "lab", "subnets": {"A": {"cidr": "10.0.0.0/24"}},
            "routers": {"R": {"subnets": ["a"]}}}"#,
    );
    assert_eq!(
        errors,
        [r#"routers."R".subnets[0]: unknown subnet "a" (did you mean "A"?)"#]
    );
}

#[test]
fn firewall_entries_take_every_form() {
    let topology = read(
        r#"{
            "name": "lab",
            "subnets": {
                "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}}},
                "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}}}
            },
            "routers": {
                "R-1": {"subnets": ["A", "B"], "fw_rules": {
                    "policy": "DROP",
                    "accept": [
                        "A",
                        ["B-1"],
                        ["A-1", "R-1"],
                        ["*", "10.0.1.7/24"],
                        ["any", "10.0.1.9"],
                        {"dst": "B", "proto": "udp", "dport": 53},
                        {"src": "A-1", "proto": "Icmp"},
                        {}
                    ],
                    "drop": [["R-1", "ANY"]]
                }}
            }
        }"#,
    );
    let firewall = &topology.routers[0].firewall;
    let sides: Vec<(&Endpoint, &Endpoint, Option<Proto>, Option<u16>)> = firewall
        .accept
        .iter()
        .map(|r| (&r.src, &r.dst, r.proto, r.dport))
        .collect();
    assert_eq!(
        sides,
        [
            (&Endpoint::Subnet(0), &Endpoint::Any, None, None),
            (&Endpoint::Host(1), &Endpoint::Any, None, None),
            (&Endpoint::Host(0), &Endpoint::Router(0), None, None),
            (
                &Endpoint::Any,
                &Endpoint::Cidr(net("10.0.1.0/24")),
                None,
                None
            ),
            (
                &Endpoint::Any,
                &Endpoint::Cidr(net("10.0.1.9/32")),
                None,
                None
            ),
            (
                &Endpoint::Any,
                &Endpoint::Subnet(1),
                Some(Proto::Udp),
                Some(53)
            ),
            (&Endpoint::Host(0), &Endpoint::Any, Some(Proto::Icmp), None),
            (&Endpoint::Any, &Endpoint::Any, None, None),
        ]
    );
    let origins: Vec<&str> = firewall.accept.iter().map(|r| r.origin.as_str()).collect();
    assert_eq!(origins[5], r#"routers."R-1".fw_rules.accept[5]"#);
    assert_eq!(firewall.drop[0].src, Endpoint::Router(0));
    assert_eq!(firewall.drop[0].dst, Endpoint::Any);
    assert_eq!(firewall.drop[0].origin, r#"routers."R-1".fw_rules.drop[0]"#);
}

#[test]
fn firewall_entries_may_name_routers_listed_later() {
    let topology = read(
        r#"{"name": "lab", "subnets": {"A": {"cidr": "10.0.0.0/24"}},
            "routers": {"R-1": {"subnets": ["A"], "fw_rules": {"drop": ["R-2"]}},
                        "R-2": {"subnets": ["A"]}}}"#,
    );
    assert_eq!(
        topology.routers[0].firewall.drop[0].src,
        Endpoint::Router(1)
    );
}

#[test]
fn cidrs_are_normalized_to_their_network() {
    let topology = read(
        r#"{"name": "lab", "subnets": {"A": {"cidr": "10.0.0.7/24"}, "B": {"cidr": "10.0.1.1/30"}},
            "routers": {"R": {"subnets": ["A", "B"]}},
            "outbound_access": {"enabled": true, "cidr": "192.168.240.9/24"}}"#,
    );
    assert_eq!(topology.subnets[0].cidr, Some(net("10.0.0.0/24")));
    assert_eq!(topology.subnets[1].cidr, Some(net("10.0.1.0/30")));
    assert_eq!(
        topology.outbound,
        Some(Outbound {
            cidr: net("192.168.240.0/24"),
            cidr6: None,
            routers: vec![0],
        })
    );
}

#[test]
fn minimal_file_takes_defaults() {
    let topology =
        read(r#"{"name": "x", "subnets": {"A": {"cidr": "10.0.0.0/30", "hosts": {"h": {}}}}}"#);
    assert!(topology.routing == Routing::None && !topology.update_hosts);
    assert_eq!(topology.outbound, None);
    assert!(topology.routers.is_empty());
    assert_eq!(topology.hosts, [host("h", 0)]);
}

#[test]
fn disabled_outbound_access_is_none() {
    let topology = read(
        r#"{"name": "x", "outbound_access": {"enabled": false, "cidr": "10.0.0.0/16"},
            "subnets": {"A": {"cidr": "10.0.0.0/24"}}}"#,
    );
    assert_eq!(
        topology.outbound, None,
        "a disabled uplink may overlap: it is never built"
    );
}

#[test]
fn explicit_addresses_are_kept() {
    let topology = read(
        r#"{"name": "lab",
            "subnets": {"A": {"cidr": "10.0.0.0/24", "hosts": {"h": {"ip": "10.0.0.254"}}},
                        "B": {"cidr": "10.0.1.0/24"}},
            "routers": {"r": {"subnets": ["A", "B"], "ip": {"B": "10.0.1.1"}}}}"#,
    );
    assert_eq!(topology.hosts[0].ip, Some(Ipv4Addr::new(10, 0, 0, 254)));
    assert_eq!(
        topology.routers[0].ips,
        [None, Some(Ipv4Addr::new(10, 0, 1, 1))]
    );
}

#[test]
fn a_full_subnet_fits_exactly() {
    // A /29 holds six nodes.
    let topology = read(
        r#"{"name": "lab", "subnets": {"A": {"cidr": "10.0.0.0/29",
            "hosts": {"h1": {}, "h2": {}, "h3": {}, "h4": {}, "h5": {"ip": "10.0.0.6"}}}},
            "routers": {"r": {"subnets": ["A"]}}}"#,
    );
    assert_eq!(topology.hosts.len(), 5);
}

#[test]
fn unknown_router_subnet_is_reported_once() {
    // The `ip` entry for the unknown subnet adds no second error.
    let errors = errors(
        r#"{"name": "lab", "subnets": {"A": {"cidr": "10.0.0.0/24"}},
            "routers": {"r": {"subnets": ["A", "Z"], "ip": {"Z": "10.9.0.1"}}}}"#,
    );
    assert_eq!(
        errors,
        [r#"routers."r".subnets[1]: unknown subnet "Z" (the subnets are "A")"#]
    );
}

#[test]
fn the_file_may_start_with_a_byte_order_mark() {
    read("\u{feff}{\"name\": \"lab\", \"subnets\": {\"A\": {\"cidr\": \"10.0.0.0/24\"}}}");
}

#[test]
fn network_ids_are_short_and_clean() {
    assert_eq!(network_id("Test Net 0").as_deref(), Some("test-net-0"));
    assert_eq!(network_id("  --Lab__1--  ").as_deref(), Some("lab-1"));
    assert_eq!(network_id("école").as_deref(), Some("cole"));
    assert_eq!(
        network_id("a very long network name indeed").as_deref(),
        Some("a-very-long-network-name"),
    );
    // Truncation at 24 characters leaves no trailing `-`.
    assert_eq!(
        network_id("abcdefghijklmnopqrstuvw xyz").as_deref(),
        Some("abcdefghijklmnopqrstuvw")
    );
    assert_eq!(network_id("!!!"), None);
    assert_eq!(network_id(""), None);
}

#[test]
fn sanitize_keeps_one_character_per_character() {
    assert_eq!(sanitize("R-1"), "r-1");
    assert_eq!(sanitize("r 1"), "r-1");
    assert_eq!(sanitize("Ab_é"), "ab--");
}

/// Runs `f` on another thread; panics if it takes more than five seconds (a read that blocks).
fn promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{what} did not return promptly: {e}"))
}

/// The message of a [`read_text`] error.
fn read_error(path: &Path) -> String {
    match read_text(path) {
        Err(TopologyError::Read { source, .. }) => source.to_string(),
        other => panic!("expected a read error for {path:?}, got {other:?}"),
    }
}

#[test]
fn read_text_refuses_a_fifo_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("net.json");
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let message = promptly("reading a FIFO with no writer", move || read_error(&fifo));
    assert!(message.contains("not a regular file"), "{message}");
}

#[test]
fn read_text_refuses_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let message = read_error(dir.path());
    assert!(message.contains("not a regular file"), "{message}");
}

#[test]
fn read_text_refuses_dev_zero() {
    let zero = Path::new("/dev/zero");
    if !zero.exists() {
        eprintln!("skipping: no /dev/zero");
        return;
    }
    let message = promptly("reading /dev/zero", move || read_error(zero));
    assert!(message.contains("not a regular file"), "{message}");
}

#[test]
fn read_text_refuses_an_oversized_file_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.json");
    // Sparse: nothing is written, so reading it all would be slow and use 64 MiB.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    let message = promptly("reading an oversized file", move || read_error(&path));
    assert_eq!(
        message,
        format!(
            "{} bytes is more than the 64 MiB a topology file may hold",
            MAX_FILE_BYTES + 1
        )
    );
}

#[test]
fn read_text_drops_a_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.json");
    let json = r#"{"name": "lab", "subnets": {"A": {"cidr": "10.0.0.0/24"}}}"#;
    std::fs::write(&path, format!("\u{feff}{json}")).unwrap();
    assert_eq!(read_text(&path).unwrap(), json);
    let topology = Topology::from_file(&path).expect("a file with a BOM reads");
    assert_eq!(topology.name, "lab");
}

#[test]
fn read_text_refuses_what_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.json");
    std::fs::write(&path, b"{\"name\": \"l\xffb\"}").unwrap();
    assert_eq!(read_error(&path), "not UTF-8 text (byte 11)");
}

/// A topology of one subnet with `hosts` hosts and `routers` routers, with outbound access
/// when asked.
fn one_subnet(hosts: usize, routers: usize, outbound: bool) -> String {
    let hosts: Vec<String> = (0..hosts).map(|i| format!("\"h{i}\": {{}}")).collect();
    let routers: Vec<String> = (0..routers)
        .map(|i| format!("\"r{i}\": {{\"subnets\": [\"A\"]}}"))
        .collect();
    let outbound = if outbound {
        r#""outbound_access": {"enabled": true, "cidr": "192.168.240.0/24"},"#
    } else {
        ""
    };
    format!(
        r#"{{"name": "lab", {outbound}
            "subnets": {{"A": {{"cidr": "10.0.0.0/16", "hosts": {{{}}}}}}},
            "routers": {{{}}}}}"#,
        hosts.join(", "),
        routers.join(", ")
    )
}

#[test]
fn a_subnet_of_1023_members_fits_a_bridge() {
    let topology = read(&one_subnet(1021, 2, true));
    assert_eq!(topology.hosts.len() + topology.routers.len(), 1023);
}

#[test]
fn a_subnet_of_more_members_than_a_bridge_holds_is_refused() {
    let message = r#"subnets."A": 1024 members (hosts and routers) on one subnet, more than the 1023 ports a Linux bridge holds; split it into several subnets joined by a router"#;
    assert_eq!(errors(&one_subnet(1022, 2, false)), [message]);
    assert_eq!(errors(&one_subnet(1024, 0, false)), [message]);
}

/// A file with these network, subnet, host and router names.
fn named(network: &str, subnet: &str, host: &str, router: &str) -> String {
    serde_json::json!({
        "name": network,
        "subnets": {subnet: {"cidr": "10.0.0.0/24", "hosts": {host: {}}}},
        "routers": {router: {"subnets": [subnet]}},
    })
    .to_string()
}

#[test]
fn names_at_the_length_limits_are_accepted() {
    let topology = read(&named(
        &"n".repeat(255),
        &"s".repeat(63),
        &"h".repeat(63),
        &"é".repeat(63),
    ));
    assert_eq!(topology.routers[0].name.chars().count(), 63);
}

#[test]
fn names_over_the_length_limits_are_refused() {
    let (subnet, host, router) = ("s".repeat(64), "h".repeat(64), "é".repeat(64));
    let node = "(a node's name becomes its hostname and part of its namespace and container names)";
    assert_eq!(
        errors(&named(&"n".repeat(256), &subnet, &host, &router)),
        [
            "name: the network name is 256 characters long, more than 255; shorten it".to_owned(),
            format!(
                "subnets.{subnet:?}: subnet name is 64 characters long, more than 63; shorten it"
            ),
            format!(
                "subnets.{subnet:?}.hosts.{host:?}: node name is 64 characters long, more than \
                 63 {node}; shorten it"
            ),
            format!(
                "routers.{router:?}: node name is 64 characters long, more than 63 {node}; \
                 shorten it"
            ),
        ]
    );
}

#[test]
fn node_names_with_whitespace_or_control_characters_are_refused() {
    for (name, what) in [
        ("A-1\n10.0.0.9 evil", "a newline (U+000A)"),
        ("A-1\r", "a carriage return (U+000D)"),
        ("A\t1", "a tab (U+0009)"),
        ("A 1", "a space (U+0020)"),
        ("A\u{7f}1", "a control character (U+007F)"),
        ("A\u{85}1", "a control character (U+0085)"),
        ("A\u{a0}1", "a whitespace character (U+00A0)"),
        ("A\u{2028}1", "a whitespace character (U+2028)"),
        ("A\u{3000}1", "a whitespace character (U+3000)"),
    ] {
        let why = "a node's name becomes its hostname and a line of /etc/hosts, so it cannot \
                   hold whitespace or control characters; use letters, digits and \"-\", such as \
                   \"R-1\"";
        assert_eq!(
            errors(&named("lab", "A", name, "R")),
            [format!(
                "subnets.\"A\".hosts.{name:?}: node name holds {what}: {why}"
            )],
            "host {name:?}"
        );
        assert_eq!(
            errors(&named("lab", "A", "h", name)),
            [format!("routers.{name:?}: node name holds {what}: {why}")],
            "router {name:?}"
        );
    }
}

#[test]
fn subnet_and_network_names_refuse_control_characters_only() {
    let topology = read(&named("Test Net\u{a0}0", "LAN of the lab", "h", "R"));
    assert_eq!(topology.subnets[0].name, "LAN of the lab");
    assert_eq!(
        errors(&named("lab\n", "A\u{1b}", "h", "R")),
        [
            "name: the network name holds a newline (U+000A): control characters are not allowed \
             (spaces are); remove it",
            r#"subnets."A\u{1b}": subnet name holds a control character (U+001B): control characters are not allowed; remove it"#,
        ]
    );
}

#[test]
fn node_names_may_hold_other_characters() {
    // What the original accepted and sanitizes into kernel names.
    let topology = read(&named("lab", "A", "école_1", "R.1"));
    assert_eq!(topology.hosts[0].name, "école_1");
    assert_eq!(topology.routers[0].name, "R.1");
}

/// A topology file in `dir` whose router takes `frr_config`; the diagnostics if it is refused.
fn with_frr_config(dir: &Path, frr_config: &str) -> Result<PathBuf, Vec<String>> {
    let file = dir.join("net.json");
    let json = serde_json::json!({
        "name": "lab",
        "subnets": {"A": {"cidr": "10.0.0.0/24"}},
        "routers": {"R": {"subnets": ["A"], "frr_config": frr_config}},
    });
    std::fs::write(&file, json.to_string()).unwrap();
    match Topology::from_file(&file) {
        Ok(topology) => Ok(topology.routers[0].frr_config.clone().unwrap()),
        Err(TopologyError::Invalid { diagnostics, .. }) => {
            Err(diagnostics.iter().map(ToString::to_string).collect())
        }
        Err(other) => panic!("expected a valid or invalid file, got {other}"),
    }
}

/// The one error of an `frr_config`.
fn frr_config_error(dir: &Path, frr_config: &str) -> String {
    match with_frr_config(dir, frr_config) {
        Ok(path) => panic!("{frr_config:?} accepted as {path:?}"),
        Err(mut errors) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            errors.remove(0)
        }
    }
}

const FRR_OUTSIDE: &str = "is outside the topology file's directory: dvnet reads FRR \
    configurations as root, so the file must be under the topology file's directory \
    (subdirectories are fine); move it there and give its path relative to the topology file";

#[test]
fn frr_config_under_the_topology_directory_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir(root.join("frr")).unwrap();
    std::fs::write(root.join("frr/r1.conf"), "hostname R\n").unwrap();
    std::os::unix::fs::symlink("frr/r1.conf", root.join("link.conf")).unwrap();
    let expected = root.join("frr/r1.conf");
    assert_eq!(with_frr_config(&root, "frr/r1.conf"), Ok(expected.clone()));
    assert_eq!(
        with_frr_config(&root, "./frr/../frr/r1.conf"),
        Ok(expected.clone())
    );
    assert_eq!(
        with_frr_config(&root, "link.conf"),
        Ok(expected.clone()),
        "a symlink within the directory is followed"
    );
    let absolute = expected.to_str().unwrap();
    assert_eq!(with_frr_config(&root, absolute), Ok(expected.clone()));
    // Exactly the limit.
    std::fs::File::create(root.join("big.conf"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    assert!(with_frr_config(&root, "big.conf").is_ok());
}

#[test]
fn frr_config_outside_the_topology_directory_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.conf");
    std::fs::write(&secret, "SECRET-CONTENT\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("escape.conf")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("sub/out")).unwrap();
    let secret = secret.to_str().unwrap();
    let parent = format!(
        "../{}/secret.conf",
        outside.path().file_name().unwrap().to_str().unwrap()
    );
    for path in [
        secret,
        "escape.conf",
        "sub/out/secret.conf",
        "sub/../../x",
        &parent,
    ] {
        let error = frr_config_error(root, path);
        assert_eq!(
            error,
            format!(r#"routers."R".frr_config: {path:?} {FRR_OUTSIDE}"#)
        );
        assert!(!error.contains("SECRET"), "{error}");
    }
}

#[test]
fn frr_config_must_be_a_small_utf8_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    std::fs::create_dir(root.join("frr")).unwrap();
    assert_eq!(
        frr_config_error(&root, "frr"),
        r#"routers."R".frr_config: "frr" is not a regular file; name an FRR configuration file"#
    );
    nix::unistd::mkfifo(
        &root.join("fifo.conf"),
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let fifo_root = root.clone();
    assert_eq!(
        promptly("validating a FIFO frr_config", move || frr_config_error(
            &fifo_root,
            "fifo.conf"
        )),
        r#"routers."R".frr_config: "fifo.conf" is not a regular file; name an FRR configuration file"#
    );
    std::fs::File::create(root.join("big.conf"))
        .unwrap()
        .set_len((1 << 20) + 1)
        .unwrap();
    assert_eq!(
        frr_config_error(&root, "big.conf"),
        r#"routers."R".frr_config: "big.conf" is larger than the 1 MiB an FRR configuration may hold"#
    );
    std::fs::write(root.join("bin.conf"), b"hostname SECRET\n\xff\xfe").unwrap();
    let error = frr_config_error(&root, "bin.conf");
    assert_eq!(
        error,
        r#"routers."R".frr_config: "bin.conf" is not UTF-8 text (invalid byte at offset 16); an FRR configuration is a text file"#
    );
    assert!(!error.contains("SECRET"), "{error}");
}

#[test]
fn impairments_on_subnets_hosts_and_router_links() {
    let t = read(
        r#"{"name": "lab",
            "subnets": {
                "A": {"cidr": "10.0.0.0/24", "impair": {"delay": "20ms", "jitter": "2ms", "seed": 7},
                      "hosts": {"A-1": {"impair": {"loss": "1%", "rate": "10mbit"}}, "A-2": {}}},
                "B": {"cidr": "10.0.1.0/24"}
            },
            "routers": {"R": {"subnets": ["A", "B"], "impair": {"B": {"corrupt": "0.1%", "duplicate": "0.5%"}}}}}"#,
    );
    assert_eq!(
        t.subnets[0].impair.to_string(),
        "delay=20ms jitter=2ms seed=7"
    );
    assert!(t.subnets[1].impair.is_none());
    assert_eq!(t.hosts[0].impair.to_string(), "loss=1% rate=10mbit");
    assert!(t.hosts[1].impair.is_none());
    assert_eq!(
        t.routers[0].impair,
        vec![
            Impair::default(),
            Impair {
                corrupt_ppm: Some(1_000),
                duplicate_ppm: Some(5_000),
                ..Impair::default()
            }
        ]
    );
}

#[test]
fn fuzz_findings_do_not_panic() {
    // inputs `cargo xtask fuzz` found to panic, kept once fixed: parsed, validated, planned
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    for entry in std::fs::read_dir(&dir).expect("the fuzz fixtures") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|x| x == "md") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("a finding");
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(topology) = Topology::from_json(text, "fuzz.json") {
            let options = crate::plan::PlanOptions::default();
            let _ = crate::plan::Plan::build(&topology, options);
            for m in 0..topology.machines.len() {
                let _ = crate::plan::Plan::build_share(&topology, options, m);
            }
        }
    }
}
