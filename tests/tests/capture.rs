//! Tier 3: `dvnet capture` — packets taken from the datapath with what it decided, read back
//! by tshark as a user would read them.
//!
//! The lab: A (A-1, A-2: a bridge) — R-1 — C (a veth pair) — R-2 — B (B-1); R-1 drops A-2 → B.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use dvnet_tests::{TestNet, dvnet_bin, lab_with_a_drop_rule as lab, require_root, tapped, text};
use serde_json::json;

const B1: &str = "10.0.1.2";

/// A running `dvnet capture`, started and ready (its taps set).
struct Capture {
    child: Child,
}

impl Capture {
    /// `dvnet capture ID ARGS...` in the network's fake host; returns once it says it
    /// captures.
    fn start(net: &TestNet, args: &[&str], stdout: Stdio) -> Capture {
        let mut child = net
            .host
            .command(dvnet_bin())
            .args(["capture", &net.id])
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("dvnet capture");
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().expect("piped"))
            .read_line(&mut line)
            .expect("stderr");
        assert!(line.contains("capturing"), "not ready: {line:?}");
        Capture { child }
    }

    /// Ctrl-C, as a user stops it; what it said last.
    fn stop(self) -> String {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        self.wait()
    }

    /// Waits for it to end by itself (`-c N`); what it said last.
    fn wait(mut self) -> String {
        let status = self.child.wait().expect("wait");
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut rest);
        assert!(status.success(), "dvnet capture: {status}: {rest}");
        rest
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // our own child, by its pid
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tshark's fields of each packet of `file` matching `filter`, tab-separated.
fn tshark(file: &std::path::Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    // the first occurrence of each field (an ICMP error quotes the packet it is about)
    cmd.arg("-r")
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-E", "occurrence=f"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark (./setup.sh installs it)");
    assert!(out.status.success(), "tshark: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

#[test]
fn five_pings_through_a_router_are_ten_packets_with_their_verdicts() {
    if !require_root("five_pings_through_a_router_are_ten_packets_with_their_verdicts") {
        return;
    }
    let net = TestNet::new("cap-ping", lab());
    net.up(&[]);
    assert!(net.ping("A-1", B1));
    assert_eq!(tapped(&net), 0, "nothing tapped before");
    let file = net.dir.path().join("r1.pcapng");
    let cap = Capture::start(
        &net,
        &["R-1:A", "-w", file.to_str().unwrap()],
        Stdio::null(),
    );
    assert!(tapped(&net) > 0);
    let out = net.exec("A-1", &["ping", "-c", "5", "-i", "0.1", B1]);
    assert!(out.status.success(), "{}", text(&out));
    let said = cap.stop();
    assert!(said.contains("packets captured"), "{said}");
    assert_eq!(tapped(&net), 0, "untapped when it ends");
    let rows = tshark(
        &file,
        "icmp",
        &[
            "frame.interface_name",
            "frame.p2p_dir",
            "ip.src",
            "icmp.type",
            "frame.comment",
        ],
    );
    assert_eq!(rows.len(), 10, "5 requests, 5 replies: {rows:?}");
    let requests: Vec<_> = rows.iter().filter(|r| r[3] == "8").collect();
    let replies: Vec<_> = rows.iter().filter(|r| r[3] == "0").collect();
    assert_eq!((requests.len(), replies.len()), (5, 5), "{rows:?}");
    for r in &requests {
        assert_eq!(r[0], "R-1:A");
        assert_eq!(r[1], "1", "inbound: arriving at R-1");
        assert_eq!(r[2], "10.0.0.2");
        assert!(
            r[4].starts_with("forwarded by R-1 to R-2 (10.0.2.2) out of ethr-1-c on C"),
            "{r:?}"
        );
    }
    for r in &replies {
        assert_eq!(r[1], "0", "outbound: R-1 sends it");
        assert_eq!(r[4], "sent by R-1 onto A", "{r:?}");
    }
}

#[test]
fn an_ipv6_packet_forwarded_names_its_next_hop() {
    if !require_root("an_ipv6_packet_forwarded_names_its_next_hop") {
        return;
    }
    // the lab, dual-stack on A and B; C carries IPv6 on link-local addresses alone
    let mut topology = lab();
    topology["subnets"]["A"]["cidr6"] = json!("fd00:0:a::/64");
    topology["subnets"]["B"]["cidr6"] = json!("fd00:0:b::/64");
    let net = TestNet::new("cap-six", topology);
    net.up(&[]);
    let out = net.exec(
        "R-2",
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "ethr-2-c", "scope", "link",
        ],
    );
    let said = text(&out);
    let r2_link_local = said
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("R-2's link-local address on C: {said}"))
        .to_owned();
    assert!(r2_link_local.starts_with("fe80:"), "{r2_link_local}");
    let file = net.dir.path().join("six.pcapng");
    let cap = Capture::start(
        &net,
        &["R-1:A", "-w", file.to_str().unwrap()],
        Stdio::null(),
    );
    let out = net.exec(
        "A-1",
        &["ping", "-6", "-c", "3", "-i", "0.1", "fd00:0:b::2"],
    );
    assert!(out.status.success(), "{}", text(&out));
    cap.stop();
    let rows = tshark(&file, "icmpv6.type == 128", &["ipv6.dst", "frame.comment"]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        assert_eq!(r[0], "fd00:0:b::2");
        assert_eq!(
            r[1],
            format!("forwarded by R-1 to R-2 ({r2_link_local}) out of ethr-1-c on C"),
            "{r:?}"
        );
    }
}

#[test]
fn drops_come_with_the_rule_and_ttl_expiry_with_its_icmp_error() {
    if !require_root("drops_come_with_the_rule_and_ttl_expiry_with_its_icmp_error") {
        return;
    }
    let net = TestNet::new("cap-drop", lab());
    net.up(&[]);
    assert!(net.ping("A-1", B1));
    let file = net.dir.path().join("drops.pcapng");
    let cap = Capture::start(
        &net,
        &["R-1", "--drops-only", "-w", file.to_str().unwrap()],
        Stdio::null(),
    );
    assert!(!net.ping("A-2", B1), "the DROP rule holds");
    let out = net.exec("A-1", &["ping", "-c", "2", "-t", "1", "-W", "1", B1]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Time to live exceeded"));
    cap.stop();
    let rows = tshark(&file, "frame", &["ip.src", "ip.ttl", "frame.comment"]);
    assert_eq!(rows.len(), 3, "only drops: {rows:?}");
    assert_eq!(rows[0][0], "10.0.0.3");
    assert_eq!(
        rows[0][2],
        r#"dropped by R-1: fw-rule routers."R-1".fw_rules.drop[0]"#
    );
    for r in &rows[1..] {
        assert_eq!((r[0].as_str(), r[1].as_str()), ("10.0.0.2", "1"));
        assert_eq!(
            r[2],
            "dropped by R-1: ttl (answered with ICMP time exceeded)"
        );
    }
    // and with everything: each expiry followed by the error it caused, going back
    let file = net.dir.path().join("ttl.pcapng");
    let cap = Capture::start(
        &net,
        &["R-1:A", "-w", file.to_str().unwrap()],
        Stdio::null(),
    );
    let _ = net.exec("A-1", &["ping", "-c", "1", "-t", "1", "-W", "1", B1]);
    cap.stop();
    let rows = tshark(
        &file,
        "icmp",
        &[
            "frame.p2p_dir",
            "icmp.type",
            "ip.src",
            "ip.dst",
            "frame.comment",
        ],
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][1], "8");
    assert!(rows[0][4].contains("ttl"), "{rows:?}");
    assert_eq!(
        &rows[1][..4],
        ["0", "11", "10.0.0.1", "10.0.0.2"],
        "{rows:?}"
    );
    assert_eq!(
        rows[1][4],
        "ICMP error sent by R-1 for a packet it dropped (ttl); sent by R-1 onto A"
    );
}

#[test]
fn a_capture_streams_into_tshark_and_lines_are_readable() {
    if !require_root("a_capture_streams_into_tshark_and_lines_are_readable") {
        return;
    }
    let net = TestNet::new("cap-pipe", lab());
    net.up(&[]);
    assert!(net.ping("A-1", B1));
    // `-w - | tshark -i -`, as the README says: the packets reach tshark while they come
    let mut tshark = Command::new("tshark")
        .args(["-l", "-i", "-", "-Y", "icmp", "-T", "fields"])
        .args(["-e", "ip.src", "-e", "frame.comment"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark");
    let cap = Capture::start(
        &net,
        &["B-1", "-w", "-"],
        Stdio::from(tshark.stdin.take().unwrap()),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = tshark.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let out = net.exec("A-1", &["ping", "-c", "2", "-i", "0.1", B1]);
    assert!(out.status.success());
    // while the capture still runs
    let mut delivered = Vec::new();
    while delivered.len() < 2 {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("tshark saw no delivery in 10 s: {delivered:?}"));
        if line.contains("delivered to B-1") {
            delivered.push(line);
        }
    }
    assert!(
        delivered.iter().all(|l| l.starts_with("10.0.0.2\t")),
        "{delivered:?}"
    );
    cap.stop();
    let _ = tshark.wait();
    let _ = reader.join();
    // without -w: a line each
    let cap = Capture::start(&net, &["A-1:A", "-c", "2"], Stdio::piped());
    let _ = net.exec("A-1", &["ping", "-c", "1", B1]);
    let mut child_out = String::new();
    let mut cap = cap;
    std::io::Read::read_to_string(cap.child.stdout.as_mut().unwrap(), &mut child_out).unwrap();
    cap.wait();
    assert!(
        child_out.contains("A-1:A out 10.0.0.2 > 10.0.1.2 ICMP echo request"),
        "{child_out}"
    );
    assert!(child_out.contains("sent by A-1 onto A"), "{child_out}");
}

#[test]
fn all_links_of_a_six_router_chain_see_each_packet_once_per_hop() {
    if !require_root("all_links_of_a_six_router_chain_see_each_packet_once_per_hop") {
        return;
    }
    let mut subnets = serde_json::Map::new();
    subnets.insert(
        "h".into(),
        json!({"cidr": "10.9.0.0/30", "hosts": {"h0": {}}}),
    );
    subnets.insert(
        "t".into(),
        json!({"cidr": "10.9.1.0/30", "hosts": {"h1": {}}}),
    );
    let mut routers = serde_json::Map::new();
    for i in 1..=6 {
        if i < 6 {
            subnets.insert(
                format!("s{i}"),
                json!({"cidr": format!("10.8.{i}.0/30"), "hosts": {}}),
            );
        }
        let left = if i == 1 {
            "h".into()
        } else {
            format!("s{}", i - 1)
        };
        let right = if i == 6 { "t".into() } else { format!("s{i}") };
        routers.insert(format!("r{i}"), json!({"subnets": [left, right]}));
    }
    let net = TestNet::new(
        "cap-all",
        json!({"automatic_routing": true, "subnets": subnets, "routers": routers}),
    );
    net.up(&[]);
    assert!(net.ping("h0", "10.9.1.2"));
    let file = net.dir.path().join("all.pcapng");
    let cap = Capture::start(
        &net,
        &["--all", "-w", file.to_str().unwrap()],
        Stdio::null(),
    );
    let out = net.exec("h0", &["ping", "-c", "1", "10.9.1.2"]);
    assert!(out.status.success());
    cap.stop();
    let rows = tshark(
        &file,
        "icmp.type == 8",
        &["frame.interface_name", "frame.comment"],
    );
    let mut expected: Vec<String> = (1..=6)
        .map(|i| {
            let hop = if i == 6 {
                "h1".to_owned()
            } else {
                format!("r{}", i + 1)
            };
            format!("forwarded by r{i} to {hop}")
        })
        .collect();
    expected.push("delivered to h1".into());
    assert_eq!(
        rows.len(),
        7,
        "the request once at each of 7 arrivals: {rows:?}"
    );
    for (row, want) in rows.iter().zip(&expected) {
        assert!(
            row[1].starts_with(want.as_str()),
            "{row:?} should say {want}"
        );
    }
    let interfaces = tshark(&file, "frame", &["frame.interface_name"]);
    assert!(!interfaces.is_empty());
}

#[test]
fn captures_run_side_by_side_and_one_killed_leaves_nothing_tapped() {
    if !require_root("captures_run_side_by_side_and_one_killed_leaves_nothing_tapped") {
        return;
    }
    let net = TestNet::new("cap-two", lab());
    net.up(&["--datapath", "kernel"]);
    assert!(net.ping("A-1", B1));
    let (f1, f2) = (
        net.dir.path().join("1.pcapng"),
        net.dir.path().join("2.pcapng"),
    );
    let one = Capture::start(&net, &["R-1:A", "-w", f1.to_str().unwrap()], Stdio::null());
    let two = Capture::start(&net, &["A-1", "-w", f2.to_str().unwrap()], Stdio::null());
    let out = net.exec("A-1", &["ping", "-c", "3", "-i", "0.1", B1]);
    assert!(out.status.success());
    one.stop();
    assert!(tapped(&net) > 0, "the other still captures");
    two.stop();
    assert_eq!(tapped(&net), 0);
    let rows = tshark(&f1, "icmp.type == 8", &["frame.comment"]);
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|r| r[0].contains("kernel datapath")),
        "no verdict on the kernel datapath, and it says so: {rows:?}"
    );
    assert_eq!(tshark(&f2, "icmp.type == 8", &["frame.comment"]).len(), 3);
    // killed: its taps stay until the next capture in its slot clears them
    let mut killed = Capture::start(&net, &["R-1"], Stdio::null());
    killed.child.kill().expect("kill -9");
    killed.child.wait().expect("reaped");
    drop(killed);
    assert!(tapped(&net) > 0, "a capture killed with -9 cannot untap");
    let after = Capture::start(&net, &["B-1"], Stdio::null());
    after.stop();
    assert_eq!(tapped(&net), 0, "the next capture in its slot cleared them");
    // a capture ends when the network goes down, and down leaves nothing
    let last = Capture::start(&net, &["R-2"], Stdio::null());
    assert!(net.down().status.success());
    let said = last.wait();
    assert!(said.contains("the network went down"), "{said}");
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

#[test]
fn bad_targets_are_refused_with_what_there_is() {
    if !require_root("bad_targets_are_refused_with_what_there_is") {
        return;
    }
    let net = TestNet::new("cap-bad", lab());
    net.up(&[]);
    let out = net.host.dvnet(&["capture", &net.id, "R-9"]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .contains("has no node \"R-9\" (did you mean \"R-1\" or \"R-2\"?); its nodes are"),
        "{}",
        text(&out)
    );
    let out = net.host.dvnet(&["capture", &net.id, "R-1:B"]);
    assert!(text(&out).contains("R-1 is not on a subnet \"B\"; it is on A, C"));
    assert_eq!(tapped(&net), 0);
}
