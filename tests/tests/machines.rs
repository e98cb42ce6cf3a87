//! Tier 3: one lab placed on several machines. Each machine is a namespace of its own (its
//! "host"), with an underlay address on a bridge they share (a switch namespace); dvnet runs
//! inside each and builds that machine's share, joined to the others by VXLAN through the
//! underlay. Real namespaces, veths, VXLAN and traffic.

use std::process::Output;

use dvnet_tests::{FakeHost, leftovers_of, require_root, text, unique};
use serde_json::{Value, json};

/// Machines `m1`.. on one underlay, `192.0.2.<k>/24`, and a lab file placed on them.
struct Machines {
    hosts: Vec<FakeHost>,
    _switch: FakeHost,
    /// The network's id (the machines' shares add their names).
    id: String,
    _dir: tempfile::TempDir,
    file: String,
}

impl Machines {
    fn new(tag: &str, count: usize, mut lab: Value) -> Machines {
        let switch = FakeHost::new(&format!("{tag}-sw"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        let mut machines = serde_json::Map::new();
        for k in 1..=count {
            let host = FakeHost::new(&format!("{tag}-m{k}"));
            let (near, far) = (format!("u{k}"), format!("p{k}"));
            host.ip(&[
                "link",
                "add",
                &near,
                "type",
                "veth",
                "peer",
                "name",
                &far,
                "netns",
                &switch.name,
            ]);
            switch.ip(&["link", "set", &far, "master", "br0", "up"]);
            host.ip(&["addr", "add", &format!("192.0.2.{k}/24"), "dev", &near]);
            host.ip(&["link", "set", &near, "up"]);
            machines.insert(format!("m{k}"), json!({"address": format!("192.0.2.{k}")}));
            hosts.push(host);
        }
        let id = unique(tag);
        lab["name"] = json!(id);
        lab["machines"] = Value::Object(machines);
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("lab.json");
        std::fs::write(&file, serde_json::to_string_pretty(&lab).unwrap()).unwrap();
        Machines {
            hosts,
            _switch: switch,
            id,
            _dir: dir,
            file: file.to_str().unwrap().to_owned(),
        }
    }

    /// The id of machine `k`'s share (1-based).
    fn share(&self, k: usize) -> String {
        dvnet::topology::machine_network_id(&self.id, &format!("m{k}")).unwrap()
    }

    /// `dvnet ARGS --machine m<k>` on machine `k`.
    fn dvnet(&self, k: usize, args: &[&str]) -> Output {
        let machine = format!("m{k}");
        let mut all = args.to_vec();
        all.extend(["--machine", &machine]);
        self.hosts[k - 1].dvnet(&all)
    }

    fn up(&self, datapath: &str) {
        for k in 1..=self.hosts.len() {
            let out = self.dvnet(k, &["up", &self.file, "--datapath", datapath]);
            assert!(out.status.success(), "up on m{k}: {}", text(&out));
        }
    }

    /// `dvnet exec` on machine `k`, in `node`.
    fn exec(&self, k: usize, node: &str, cmd: &[&str]) -> Output {
        let share = self.share(k);
        let mut args = vec!["exec", share.as_str(), node, "--"];
        args.extend_from_slice(cmd);
        self.hosts[k - 1].dvnet(&args)
    }

    fn ping(&self, k: usize, node: &str, target: &str) -> bool {
        self.exec(k, node, &["ping", "-c", "1", "-W", "2", target])
            .status
            .success()
    }

    /// `dvnet stats --json` of machine `k`'s share.
    fn stats(&self, k: usize) -> Value {
        let out = self.dvnet(k, &["stats", &self.id, "--json"]);
        assert!(out.status.success(), "stats on m{k}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Takes every share down and checks that nothing is left: no namespace, record or pin,
    /// and no VXLAN device or socket in the machines' own namespaces.
    fn down_clean(&self) {
        for k in 1..=self.hosts.len() {
            let out = self.dvnet(k, &["down", &self.file]);
            assert!(out.status.success(), "down on m{k}: {}", text(&out));
            assert_eq!(leftovers_of(&self.share(k)), Vec::<String>::new());
            let links = self.hosts[k - 1].ip(&["-d", "link", "show", "type", "vxlan"]);
            assert!(links.is_empty(), "m{k} holds VXLAN devices: {links}");
            let sockets = dvnet_tests::run(self.hosts[k - 1].command("ss").args(["-Huan"]));
            assert!(
                String::from_utf8_lossy(&sockets.stdout).trim().is_empty(),
                "m{k} holds UDP sockets: {}",
                text(&sockets)
            );
        }
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        for k in 1..=self.hosts.len() {
            let _ = self.dvnet(k, &["down", &self.file]);
        }
    }
}

/// ICMP packets (received, sent) on `node`'s link on `subnet` in a stats snapshot.
fn icmp(stats: &Value, node: &str, subnet: &str) -> (u64, u64) {
    let l = stats["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["node"] == node && l["subnet"] == subnet)
        .unwrap_or_else(|| panic!("no link of {node} on {subnet}: {stats}"));
    let n = |t: &Value| t["by_class"]["icmp"].as_u64().unwrap_or(0);
    (n(&l["rx"]), n(&l["tx"]))
}

/// The classic lab with its drop rule, split: on m1; and B's hosts on m2.
/// A spans both machines (a bridge each side), C (the routers' transit link) too.
fn classic_split() -> Value {
    json!({
        "automatic_routing": true,
        "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {"machine": "m2"}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {"machine": "m2"}, "B-2": {"machine": "m2"}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {
            "R-1": {"subnets": ["A", "C"], "fw_rules": {"policy": "ACCEPT", "drop": [["A-2", "B"]]}},
            "R-2": {"subnets": ["C", "B"], "machine": "m2"}
        }
    })
}

/// Where each node of `classic_split` runs.
const PLACED: [(&str, usize); 6] = [
    ("R-1", 1),
    ("A-1", 1),
    ("R-2", 2),
    ("A-2", 2),
    ("B-1", 2),
    ("B-2", 2),
];

fn classic_across_two_machines(datapath: &str) {
    let lab = Machines::new(&format!("split-{datapath}"), 2, classic_split());
    lab.up(datapath);
    // all pairs, by name (each machine's hosts files name the other's nodes too): what the
    // drop rule allows answers, what it drops dies, though A-2's packets cross to m1's R-1
    for &(from, k) in &PLACED {
        for &(to, _) in &PLACED {
            let dropped = from == "A-2" && to.starts_with('B');
            assert_eq!(
                lab.ping(k, from, to),
                !dropped,
                "{datapath}: {from} (m{k}) → {to}"
            );
        }
    }
    // the routers on both sides answer a traceroute
    let trace = lab.exec(1, "A-1", &["traceroute", "-n", "-w", "1", "-q", "1", "B-1"]);
    let hops: Vec<String> = String::from_utf8_lossy(&trace.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    assert_eq!(
        hops,
        ["10.0.0.1", "10.0.2.2", "10.0.1.2"],
        "{}",
        text(&trace)
    );
    // a packet the tunnel cannot carry is refused where it is sent, never dropped silently:
    // every link has the underlay's 1500 bytes less VXLAN's 50
    let big = lab.exec(
        1,
        "A-1",
        &[
            "ping", "-c", "1", "-W", "2", "-s", "1472", "-M", "do", "B-1",
        ],
    );
    assert!(!big.status.success());
    assert!(
        text(&big).contains("mtu=1450"),
        "{datapath}: a 1500-byte packet: {}",
        text(&big)
    );
    for (k, from, to) in [(1, "A-1", "B-1"), (2, "B-2", "A-1"), (2, "A-2", "R-1")] {
        let fits = lab.exec(
            k,
            from,
            &["ping", "-c", "1", "-W", "2", "-s", "1422", "-M", "do", to],
        );
        assert!(
            fits.status.success(),
            "{datapath}: 1450 bytes {from} → {to}: {}",
            text(&fits)
        );
    }
    // counters on each machine count the crossing packets exactly: 10 pings from A-1 (m1) to
    // B-1 (m2) cross C, whose ends are R-1 on m1 and R-2 on m2
    let before = (lab.stats(1), lab.stats(2));
    let out = lab.exec(
        1,
        "A-1",
        &["ping", "-c", "10", "-i", "0.01", "-W", "2", "B-1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let after = (lab.stats(1), lab.stats(2));
    let delta = |b: &Value, a: &Value, node, subnet| {
        let (b, a) = (icmp(b, node, subnet), icmp(a, node, subnet));
        (a.0 - b.0, a.1 - b.1)
    };
    assert_eq!(
        delta(&before.0, &after.0, "R-1", "C"),
        (10, 10),
        "{datapath}: R-1 on C (m1)"
    );
    assert_eq!(
        delta(&before.1, &after.1, "R-2", "C"),
        (10, 10),
        "{datapath}: R-2 on C (m2)"
    );
    assert_eq!(
        delta(&before.1, &after.1, "B-1", "B"),
        (10, 10),
        "{datapath}: B-1 (m2)"
    );
    lab.down_clean();
}

#[test]
fn ebpf_the_classic_lab_across_two_machines() {
    if require_root("ebpf_the_classic_lab_across_two_machines") {
        classic_across_two_machines("ebpf");
    }
}

#[test]
fn kernel_the_classic_lab_across_two_machines() {
    if require_root("kernel_the_classic_lab_across_two_machines") {
        classic_across_two_machines("kernel");
    }
}

/// H-a — R1 — R2 — ... — R6 — H-b, two routers on each of three machines.
#[test]
fn a_six_router_chain_across_three_machines() {
    if !require_root("a_six_router_chain_across_three_machines") {
        return;
    }
    let mut subnets = serde_json::Map::new();
    let mut routers = serde_json::Map::new();
    subnets.insert(
        "HA".into(),
        json!({"cidr": "10.1.0.0/24", "hosts": {"H-a": {"machine": "m1"}}}),
    );
    subnets.insert(
        "HB".into(),
        json!({"cidr": "10.2.0.0/24", "hosts": {"H-b": {"machine": "m3"}}}),
    );
    for i in 1..6 {
        subnets.insert(
            format!("L{i}"),
            json!({"cidr": format!("10.9.{i}.0/24"), "hosts": {}}),
        );
    }
    for i in 1..=6 {
        let left = if i == 1 {
            "HA".to_owned()
        } else {
            format!("L{}", i - 1)
        };
        let right = if i == 6 {
            "HB".to_owned()
        } else {
            format!("L{i}")
        };
        routers.insert(
            format!("R{i}"),
            json!({"subnets": [left, right], "machine": format!("m{}", (i + 1) / 2)}),
        );
    }
    let lab = Machines::new(
        "chain3",
        3,
        json!({"automatic_routing": true, "subnets": subnets, "routers": routers}),
    );
    lab.up("ebpf");
    assert!(lab.ping(1, "H-a", "10.2.0.2"), "H-a → H-b");
    assert!(lab.ping(3, "H-b", "10.1.0.2"), "H-b → H-a");
    let trace = lab.exec(
        1,
        "H-a",
        &["traceroute", "-n", "-w", "1", "-q", "1", "10.2.0.2"],
    );
    let hops = String::from_utf8_lossy(&trace.stdout).lines().count() - 1;
    assert_eq!(hops, 7, "six routers and H-b: {}", text(&trace));
    // the links between machines (L2: R2 on m1 to R3 on m2, L4: R4 on m2 to R5 on m3) count
    // the crossing packets on both sides
    let before: Vec<Value> = (1..=3).map(|k| lab.stats(k)).collect();
    let out = lab.exec(
        1,
        "H-a",
        &["ping", "-c", "10", "-i", "0.01", "-W", "2", "10.2.0.2"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let after: Vec<Value> = (1..=3).map(|k| lab.stats(k)).collect();
    for (k, node, subnet) in [
        (1, "R2", "L2"),
        (2, "R3", "L2"),
        (2, "R4", "L4"),
        (3, "R5", "L4"),
    ] {
        let (b, a) = (
            icmp(&before[k - 1], node, subnet),
            icmp(&after[k - 1], node, subnet),
        );
        assert_eq!(
            (a.0 - b.0, a.1 - b.1),
            (10, 10),
            "{node} on {subnet} (m{k})"
        );
    }
    lab.down_clean();
}
