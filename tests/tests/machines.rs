//! Tier 3: one lab placed on several machines. Each machine is a namespace of its own (its
//! "host"), with an underlay address on a bridge they share (a switch namespace); dvnet runs
//! inside each and builds that machine's share, joined to the others by VXLAN through the
//! underlay. Real namespaces, veths, VXLAN and traffic.

use std::process::{Child, Command, Output};

use dvnet_tests::{FakeHost, eventually, icmp_on, leftovers_of, require_root, run, text, unique};
use serde_json::{Value, json};

/// Machines `m1`.. on one underlay, `192.0.2.<k>/24`, and a lab file placed on them.
struct Machines {
    /// The SSH servers of the machines, when the file reaches them over SSH (stopped first).
    sshd: Option<Sshd>,
    hosts: Vec<FakeHost>,
    _switch: FakeHost,
    /// The network's id (the machines' shares add their names).
    id: String,
    _dir: tempfile::TempDir,
    file: String,
}

/// An `sshd` in each machine, on its underlay address, letting root in with a key made for
/// the test, and the `ssh` command line (`$DVNET_SSH`) that uses the key.
struct Sshd {
    servers: Vec<Child>,
    dir: tempfile::TempDir,
    /// `/run/sshd` (sshd's privilege-separation directory) was made by the test.
    made_privsep_dir: bool,
}

impl Sshd {
    fn start(hosts: &[FakeHost]) -> Sshd {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = dir.path().to_owned();
        let path = |name: &str| base.join(name).to_str().unwrap().to_owned();
        for key in ["id", "host"] {
            let out = run(Command::new("ssh-keygen").args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &path(key),
            ]));
            assert!(out.status.success(), "ssh-keygen: {}", text(&out));
        }
        std::fs::copy(path("id.pub"), path("authorized_keys")).unwrap();
        let made_privsep_dir = !std::path::Path::new("/run/sshd").exists();
        if made_privsep_dir {
            std::fs::create_dir("/run/sshd").unwrap();
        }
        let mut sshd = Sshd {
            servers: Vec::new(),
            dir,
            made_privsep_dir,
        };
        for (k, host) in hosts.iter().enumerate() {
            let config = path(&format!("sshd_config_{k}"));
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 192.0.2.{}\nHostKey {}\nAuthorizedKeysFile {}\n\
                     PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                     PidFile {}\n",
                    k + 1,
                    path("host"),
                    path("authorized_keys"),
                    path(&format!("sshd_{k}.pid")),
                ),
            )
            .unwrap();
            let server = host
                .command("/usr/sbin/sshd")
                .args(["-D", "-e", "-f", &config])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("sshd starts");
            sshd.servers.push(server);
        }
        // ready when a command runs on every machine
        for (k, host) in hosts.iter().enumerate() {
            let ready = eventually(10, || {
                run(host
                    .command("sh")
                    .args(["-c", &format!("{} root@192.0.2.{} true", sshd.ssh(), k + 1)]))
                .status
                .success()
            });
            assert!(ready, "sshd on m{} does not answer", k + 1);
        }
        sshd
    }

    /// The ssh command line dvnet uses (`$DVNET_SSH`).
    fn ssh(&self) -> String {
        format!(
            "ssh -F /dev/null -i {} -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no \
             -o LogLevel=ERROR -o BatchMode=yes",
            self.dir.path().join("id").display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        if self.made_privsep_dir {
            let _ = std::fs::remove_dir("/run/sshd");
        }
    }
}

impl Machines {
    fn new(tag: &str, count: usize, lab: Value) -> Machines {
        Self::placed(tag, count, lab, false)
    }

    /// Machines whose `"ssh"` reaches each one's sshd.
    fn with_ssh(tag: &str, count: usize, lab: Value) -> Machines {
        Self::placed(tag, count, lab, true)
    }

    fn placed(tag: &str, count: usize, mut lab: Value, ssh: bool) -> Machines {
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
            let mut machine = json!({"address": format!("192.0.2.{k}")});
            if ssh {
                machine["ssh"] = json!(format!("root@192.0.2.{k}"));
            }
            machines.insert(format!("m{k}"), machine);
            hosts.push(host);
        }
        let sshd = ssh.then(|| Sshd::start(&hosts));
        let id = unique(tag);
        lab["name"] = json!(id);
        lab["machines"] = Value::Object(machines);
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("lab.json");
        std::fs::write(&file, serde_json::to_string_pretty(&lab).unwrap()).unwrap();
        Machines {
            sshd,
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

    /// `dvnet ARGS` on machine `k`, no `--machine`: what runs on every machine over SSH.
    fn fan_out(&self, k: usize, args: &[&str]) -> Output {
        let ssh = self.sshd.as_ref().expect("machines with sshd").ssh();
        run(self.hosts[k - 1]
            .command(dvnet_tests::dvnet_bin())
            .args(args)
            .env("DVNET_SSH", ssh))
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
        self.sshd = None;
        for k in 1..=self.hosts.len() {
            let _ = self.dvnet(k, &["down", &self.file]);
        }
    }
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
    let hops = dvnet_tests::hops(&trace);
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
        let (b, a) = (icmp_on(b, node, subnet), icmp_on(a, node, subnet));
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

/// A share brought up on a machine that is not the one the file places it on is refused
/// before anything is made: its VXLAN would speak from an address that is not there.
#[test]
fn a_share_on_the_wrong_machine_is_refused() {
    if !require_root("a_share_on_the_wrong_machine_is_refused") {
        return;
    }
    let lab = Machines::new("wrong", 2, classic_split());
    let out = lab.hosts[0].dvnet(&["up", &lab.file, "--machine", "m2"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "machine \"m2\" is at 192.0.2.2 in the file, and that is not an address of this machine"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(leftovers_of(&lab.share(2)), Vec::<String>::new());
    // without --machine, and no "ssh" to reach the other machine by
    let out = lab.hosts[0].dvnet(&["up", &lab.file]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("machine(s) \"m2\" are not this one and have no \"ssh\""),
        "{}",
        text(&out)
    );
    assert_eq!(leftovers_of(&lab.share(1)), Vec::<String>::new());
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
            icmp_on(&before[k - 1], node, subnet),
            icmp_on(&after[k - 1], node, subnet),
        );
        assert_eq!(
            (a.0 - b.0, a.1 - b.1),
            (10, 10),
            "{node} on {subnet} (m{k})"
        );
    }
    lab.down_clean();
}

/// `dvnet up FILE` on one machine builds every machine's share over SSH; `stats FILE` shows
/// all of them in one table; `down FILE` takes them all down. A machine whose share fails
/// (its VXLAN port is taken) makes the whole `up` roll back, on every machine.
#[test]
fn over_ssh_one_command_drives_every_machine() {
    if !require_root("over_ssh_one_command_drives_every_machine") {
        return;
    }
    let mut lab = classic_split();
    lab["vxlan_port"] = json!(24_789);
    let lab = Machines::with_ssh("ssh", 2, lab);
    let out = lab.fan_out(1, &["up", &lab.file]);
    assert!(out.status.success(), "up over ssh: {}", text(&out));
    for &(from, k) in &PLACED {
        assert!(
            lab.ping(k, from, "B-2") || from == "A-2",
            "{from} (m{k}) → B-2"
        );
    }
    // a node is entered from any machine: over SSH where it runs elsewhere, exit code kept
    for (k, node, address) in [
        (1, "B-1", "10.0.1.2"),
        (2, "A-1", "10.0.0.2"),
        (1, "A-1", "10.0.0.2"),
    ] {
        let out = lab.fan_out(
            k,
            &["exec", &lab.file, node, "--", "ip", "-4", "-o", "addr"],
        );
        assert!(
            out.status.success(),
            "exec {node} from m{k}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains(&format!("inet {address}/24")),
            "{node} from m{k}: {}",
            text(&out)
        );
    }
    let out = lab.fan_out(1, &["exec", &lab.file, "B-2", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    // one table (and one JSON document) of every machine's links
    let out = lab.fan_out(1, &["stats", &lab.file, "--json"]);
    assert!(out.status.success(), "stats over ssh: {}", text(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    for &(node, k) in &PLACED {
        let links = stats["machines"][format!("m{k}")]["links"]
            .as_array()
            .unwrap();
        assert!(
            links.iter().any(|l| l["node"] == node),
            "{node} on m{k}: {stats}"
        );
    }
    let out = lab.fan_out(1, &["stats", &lab.file]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("m1") && table.contains("m2") && table.contains("B-2"),
        "{table}"
    );
    // every machine's networks in one list
    let out = lab.fan_out(2, &["ls", &lab.file, "--json"]);
    assert!(out.status.success(), "ls over ssh: {}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in 1..=2 {
        let ids: Vec<&str> = listed["machines"][format!("m{k}")]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert!(ids.contains(&lab.share(k).as_str()), "m{k}: {listed}");
    }
    let out = lab.fan_out(2, &["down", &lab.file]);
    assert!(out.status.success(), "down over ssh: {}", text(&out));
    for k in 1..=2 {
        assert_eq!(leftovers_of(&lab.share(k)), Vec::<String>::new(), "m{k}");
    }

    // m2's VXLAN port is taken: its share fails, and m1's, which came up, goes down again
    let mut blocker = lab.hosts[1]
        .command("python3")
        .args([
            "-c",
            "import socket, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('192.0.2.2', 24789))\nprint('bound', flush=True)\ntime.sleep(120)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(blocker.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "bound");
    let out = lab.fan_out(1, &["up", &lab.file]);
    let _ = blocker.kill();
    let _ = blocker.wait();
    assert!(
        !out.status.success(),
        "up with m2's port taken: {}",
        text(&out)
    );
    let said = text(&out);
    assert!(said.contains("machine \"m2\""), "{said}");
    assert!(said.contains("taken down again on m1"), "{said}");
    for k in 1..=2 {
        assert_eq!(
            leftovers_of(&lab.share(k)),
            Vec::<String>::new(),
            "m{k}: {said}"
        );
    }
}

/// FRR's OSPF across machines: the routers' hellos (multicast, 224.0.0.5) cross the VXLAN
/// port by head-end replication, the adjacency forms, and the eBPF routers forward what OSPF
/// learnt across the machines.
#[test]
fn ospf_converges_across_two_machines() {
    if !require_root("ospf_converges_across_two_machines") {
        return;
    }
    let lab = Machines::new(
        "ospf",
        2,
        json!({
            "routing": "ospf",
            "subnets": {
                "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}}},
                "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {"machine": "m2"}}},
                "C": {"cidr": "10.0.2.0/24", "hosts": {}}
            },
            "routers": {
                "R-1": {"subnets": ["A", "C"]},
                "R-2": {"subnets": ["C", "B"], "machine": "m2"}
            }
        }),
    );
    lab.up("ebpf");
    assert!(
        eventually(40, || lab.ping(1, "A-1", "10.0.1.2")),
        "OSPF did not converge across the machines within 40 s"
    );
    assert!(lab.ping(2, "B-1", "10.0.0.2"), "B-1 → A-1");
    for (k, router) in [(1, "R-1"), (2, "R-2")] {
        let out = lab.exec(k, router, &["vtysh", "-c", "show ip ospf neighbor"]);
        assert!(
            text(&out).contains("Full"),
            "{router} (m{k}): {}",
            text(&out)
        );
        let routes = lab.exec(k, router, &["ip", "route"]);
        assert!(
            text(&routes).contains("proto ospf"),
            "{router}: {}",
            text(&routes)
        );
    }
    lab.down_clean();
}
