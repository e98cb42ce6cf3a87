//! Tier 3: `dvnet apply FILE` changes a running network to match its edited file, touching
//! only what changed: untouched nodes keep their processes, connections, counters and
//! identities (interface names, ifindexes, addresses); the same file twice changes nothing; a
//! failed apply puts the network back as it was; a killed one leaves nothing `down` cannot
//! remove. Every test edits the file of a [`TestNet`] in place (same unique name) and runs
//! dvnet inside a fake host namespace of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dvnet_tests::{TestNet, dvnet_bin, leftovers_of, require_docker, require_root, run, text};
use serde_json::{Value, json};

/// The classic two-router lab: subnet C is a transit subnet with no hosts.
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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn file(net: &TestNet) -> &str {
    net.file.to_str().expect("utf-8 path")
}

/// Rewrites the network's file with `topo`, under the network's own (unique) name.
fn edit(net: &TestNet, topo: &Value) {
    let mut topo = topo.clone();
    topo["name"] = json!(net.id);
    std::fs::write(
        &net.file,
        serde_json::to_string_pretty(&topo).expect("json"),
    )
    .expect("write topology");
}

/// `dvnet diff FILE`.
fn diff(net: &TestNet) -> Output {
    net.host.dvnet(&["diff", file(net)])
}

/// `dvnet apply FILE`, whatever comes of it.
fn apply(net: &TestNet) -> Output {
    net.host.dvnet(&["apply", file(net)])
}

/// Change lines: `+ ...`, `- ...`, `~ ...`.
fn change_lines(printed: &str) -> Vec<&str> {
    printed
        .lines()
        .filter(|l| l.starts_with("+ ") || l.starts_with("- ") || l.starts_with("~ "))
        .collect()
}

/// Applying the file as it stands is a no-op: `no changes`, and nothing else changed.
fn applies_as_no_change(net: &TestNet, what: &str) {
    let out = apply(net);
    let printed = stdout(&out);
    assert!(
        out.status.success()
            && printed.lines().any(|l| l.trim() == "no changes")
            && change_lines(&printed).is_empty(),
        "{what}: applying the same file again must print `no changes` and change nothing: {}",
        text(&out)
    );
}

/// Edits the file to `topo` and applies it. `apply` must succeed and print the change lines
/// `diff` showed (in the same order), then `network <id>: ...`. Returns what it printed.
fn apply_ok(net: &TestNet, topo: &Value, what: &str) -> String {
    edit(net, topo);
    let shown = diff(net);
    assert!(shown.status.success(), "{what}: diff: {}", text(&shown));
    let shown = stdout(&shown);
    assert!(
        !change_lines(&shown).is_empty(),
        "{what}: the edit must change something, diff shows:\n{shown}"
    );
    let out = apply(net);
    assert!(out.status.success(), "{what}: apply failed: {}", text(&out));
    let printed = stdout(&out);
    let summary = format!("network {}: ", net.id);
    let end = printed
        .lines()
        .position(|l| l.starts_with(&summary))
        .unwrap_or_else(|| {
            panic!(
                "{what}: apply printed no `{summary}...` line: {}",
                text(&out)
            )
        });
    // diff's lines, in order, before the summary (other lines between them are allowed)
    let mut before_summary = printed.lines().take(end);
    for line in shown.lines() {
        assert!(
            before_summary.any(|l| l == line),
            "{what}: apply did not print diff's line {line:?} (in diff's order, before \
             `{summary}`): {}\n--- diff showed\n{shown}",
            text(&out)
        );
    }
    printed
}

/// `dvnet stats ID --json`.
fn stats(net: &TestNet) -> Value {
    let out = net.host.dvnet(&["stats", &net.id, "--json"]);
    assert!(out.status.success(), "dvnet stats: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("stats --json is JSON")
}

/// The counters of `node`'s only link.
fn link_of(stats: &Value, node: &str) -> Value {
    let links: Vec<&Value> = stats["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter(|l| l["node"] == node)
        .collect();
    assert_eq!(links.len(), 1, "{node} has one link: {stats}");
    links[0].clone()
}

fn icmp(traffic: &Value) -> u64 {
    traffic["by_class"]["icmp"].as_u64().unwrap_or(0)
}

/// Live nodes by name, from `inspect --json`.
fn live_nodes(inspect: &Value) -> BTreeMap<String, &Value> {
    inspect["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["name"].as_str().expect("name").to_owned(), n))
        .collect()
}

/// An interface's identity: its ifindex and its addresses (with prefix lengths, sorted).
type Identity = (u64, Vec<String>);

/// A live node's interfaces but `lo`: name → identity.
fn live_interfaces(node: &Value) -> BTreeMap<String, Identity> {
    node["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .filter(|i| i["name"] != "lo")
        .map(|i| {
            let mut addrs: Vec<String> = i["addresses"]
                .as_array()
                .expect("addresses")
                .iter()
                .map(|a| a.as_str().expect("address").to_owned())
                .collect();
            addrs.sort();
            (
                i["name"].as_str().expect("interface name").to_owned(),
                (i["ifindex"].as_u64().expect("ifindex"), addrs),
            )
        })
        .collect()
}

/// The plan's link with id `id` (ids are stable across applies, not positions).
/// A link of the plan, by its position in `links` (how nodes, subnets and routes refer to
/// links; a link's `id` is its identity, kept across edits).
fn plan_link(plan: &Value, position: &Value) -> Value {
    let at = position
        .as_u64()
        .and_then(|p| usize::try_from(p).ok())
        .expect("a position");
    plan["links"]
        .as_array()
        .expect("links")
        .get(at)
        .unwrap_or_else(|| panic!("the plan has no link at {at}"))
        .clone()
}

/// A planned node's interfaces: name → identity.
fn planned_interfaces(plan: &Value, node: &Value) -> BTreeMap<String, Identity> {
    node["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|id| {
            let l = plan_link(plan, id);
            (
                l["ifname"].as_str().expect("ifname").to_owned(),
                (
                    l["ifindex"].as_u64().expect("ifindex"),
                    vec![format!(
                        "{}/{}",
                        l["address"].as_str().expect("address"),
                        l["prefix_len"]
                    )],
                ),
            )
        })
        .collect()
}

/// Routes through a gateway as (dest, via, dev), the default route spelled `default`.
fn gateway_routes(routes: &Value) -> BTreeSet<(String, String, String)> {
    routes
        .as_array()
        .expect("routes")
        .iter()
        .filter(|r| !r["via"].is_null())
        .map(|r| {
            let dest = r["dest"].as_str().expect("dest");
            let dest = if dest == "0.0.0.0/0" { "default" } else { dest };
            (
                dest.to_owned(),
                r["via"].as_str().expect("via").to_owned(),
                r["dev"].as_str().expect("dev").to_owned(),
            )
        })
        .collect()
}

/// The live network is its plan: the same nodes, each with the plan's interfaces (names,
/// ifindexes, addresses) and gateway routes, and none other; on `datapath` still.
fn live_matches_plan(inspect: &Value, datapath: &str, what: &str) {
    let plan = &inspect["state"]["plan"];
    assert_eq!(
        plan["datapath"], datapath,
        "{what}: the network changed datapath"
    );
    let live = live_nodes(inspect);
    let planned: BTreeSet<String> = plan["nodes"]
        .as_array()
        .expect("plan nodes")
        .iter()
        .map(|n| n["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(
        live.keys().cloned().collect::<BTreeSet<_>>(),
        planned,
        "{what}: the live nodes are not the plan's"
    );
    for node in plan["nodes"].as_array().expect("plan nodes") {
        let name = node["name"].as_str().expect("name");
        let live = live[name];
        assert_eq!(
            live_interfaces(live),
            planned_interfaces(plan, node),
            "{what}: {name}'s interfaces (name → ifindex, addresses) are not the plan's"
        );
        assert_eq!(
            gateway_routes(&live["routes"]),
            gateway_routes(&node["routes"]),
            "{what}: {name}'s routes through a gateway are not the plan's"
        );
    }
}

/// Every node in both: same namespace, and every interface it still has keeps its ifindex
/// and addresses. Every node only in `before` has no namespace left.
fn identities_kept(before: &Value, after: &Value, what: &str) {
    let (old, new) = (live_nodes(before), live_nodes(after));
    for (name, node) in &new {
        let Some(was) = old.get(name) else { continue };
        assert_eq!(
            node["netns"], was["netns"],
            "{what}: {name} moved to another namespace"
        );
        let was = live_interfaces(was);
        for (ifname, identity) in live_interfaces(node) {
            if let Some(had) = was.get(&ifname) {
                assert_eq!(
                    &identity, had,
                    "{what}: {name}'s {ifname} changed identity (ifindex, addresses)"
                );
            }
        }
    }
    for (name, node) in old.iter().filter(|(n, _)| !new.contains_key(*n)) {
        let netns = Path::new("/run/netns").join(node["netns"].as_str().expect("netns"));
        assert!(
            !netns.exists(),
            "{what}: {name} was removed but {} is left",
            netns.display()
        );
    }
}

/// Each host's address (its first link's), from the plan.
fn host_addresses(inspect: &Value) -> BTreeMap<String, String> {
    let plan = &inspect["state"]["plan"];
    plan["nodes"]
        .as_array()
        .expect("plan nodes")
        .iter()
        .filter(|n| n["kind"] == "host")
        .map(|n| {
            let link = plan_link(plan, &n["links"][0]);
            (
                n["name"].as_str().expect("name").to_owned(),
                link["address"].as_str().expect("address").to_owned(),
            )
        })
        .collect()
}

/// Which (from, to) pings a firewall drops.
type Blocked = fn(&str, &str) -> bool;

fn nothing_blocked(_: &str, _: &str) -> bool {
    false
}

/// Every host pings every other host's address, and gets an answer unless `blocked` says so.
fn every_host_reaches_every_host(net: &TestNet, inspect: &Value, blocked: Blocked, what: &str) {
    let addrs = host_addresses(inspect);
    let mut wrong = Vec::new();
    for from in addrs.keys() {
        for (to, addr) in addrs.iter().filter(|(t, _)| *t != from) {
            let expected = !blocked(from, to);
            if net.ping(from, addr) != expected {
                wrong.push(format!(
                    "{from} → {to} ({addr}): {}",
                    if expected {
                        "no answer"
                    } else {
                        "answered, but the firewall drops it"
                    }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{what}: {wrong:#?}");
}

/// Plan and live nodes: what a failed or empty apply must leave exactly as it was.
fn same_network(before: &Value, after: &Value, what: &str) {
    assert_eq!(
        after["state"]["plan"], before["state"]["plan"],
        "{what}: the recorded plan changed"
    );
    assert_eq!(
        after["nodes"], before["nodes"],
        "{what}: the live nodes (interfaces, ifindexes, addresses, routes) changed"
    );
}

/// The fabric namespace's interfaces (`ifindex: name@peer`): its bridges and their ports.
fn fabric_links(inspect: &Value) -> Vec<String> {
    let fabric = inspect["state"]["plan"]["fabric_netns"]
        .as_str()
        .expect("fabric_netns");
    let out = run(Command::new("ip").args(["-n", fabric, "-o", "link"]));
    assert!(out.status.success(), "{}", text(&out));
    let mut links: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split(':').take(2).collect::<Vec<_>>().join(":"))
        .collect();
    links.sort();
    links
}

/// Containers labelled as `id`'s.
fn containers_of(id: &str) -> Vec<String> {
    let out = run(Command::new("docker").args([
        "ps",
        "-a",
        "--filter",
        &format!("label=org.dvnet.network={id}"),
        "--format",
        "{{.Names}}",
    ]));
    stdout(&out).lines().map(str::to_owned).collect()
}

/// A container node's Docker id and start time: both change if it is recreated or restarted.
fn container_identity(net: &TestNet, node: &str) -> String {
    let name = format!("dv-{}.{}", net.id, node.to_lowercase());
    let out =
        run(Command::new("docker").args(["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", &name]));
    assert!(
        out.status.success(),
        "docker inspect {name}: {}",
        text(&out)
    );
    stdout(&out).trim().to_owned()
}

/// A command running in a node through `dvnet exec` (which becomes the command: the child's
/// pid is the command's). Killed on drop if it still runs.
struct Running(Option<Child>);

impl Running {
    fn start(net: &TestNet, node: &str, cmd: &[&str]) -> Running {
        let child = net
            .host
            .command(dvnet_bin())
            .args(["exec", &net.id, node, "--"])
            .args(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("dvnet exec {node} -- {cmd:?}: {e}"));
        Running(Some(child))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("still held")
    }

    fn alive(&mut self) -> bool {
        self.child().try_wait().expect("try_wait").is_none()
    }

    fn pid(&mut self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child().id()).expect("pid"))
    }

    /// Waits for it to end by itself.
    fn wait(mut self) -> Output {
        self.0
            .take()
            .expect("still held")
            .wait_with_output()
            .expect("wait")
    }

    /// SIGINT (ping prints its summary), then waits.
    fn interrupt(mut self) -> Output {
        let pid = self.pid();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        self.wait()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// From ping's output: (transmitted, received, the icmp_seq numbers that got no reply).
fn ping_summary(printed: &str) -> (u64, u64, Vec<u64>) {
    let summary = printed
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in ping's output:\n{printed}"));
    let mut parts = summary.split(", ");
    let mut count = |suffix: &str| -> u64 {
        parts
            .next()
            .and_then(|p| p.strip_suffix(suffix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot read {suffix:?} from {summary:?}"))
    };
    let transmitted = count(" packets transmitted");
    let received = count(" received");
    let answered: BTreeSet<u64> = printed
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    let lost = (1..=transmitted)
        .filter(|s| !answered.contains(s))
        .collect();
    (transmitted, received, lost)
}

/// Applies `topo` as one step of a sequence and checks the network after it: live is the
/// plan, identities of what stayed are kept, hosts reach each other as the file says, and
/// applying the file again changes nothing. Returns the new `inspect`.
fn step(
    net: &TestNet,
    datapath: &str,
    topo: &Value,
    before: &Value,
    blocked: Blocked,
    what: &str,
) -> Value {
    let what = format!("{datapath}, {what}");
    apply_ok(net, topo, &what);
    let after = net.inspect();
    live_matches_plan(&after, datapath, &what);
    identities_kept(before, &after, &what);
    every_host_reaches_every_host(net, &after, blocked, &what);
    applies_as_no_change(net, &what);
    same_network(
        &after,
        &net.inspect(),
        &format!("{what}: applying it again"),
    );
    after
}

/// The segment kind (`bridge`, `point_to_point`) of `subnet` in the plan.
fn segment(inspect: &Value, subnet: &str) -> String {
    inspect["state"]["plan"]["subnets"]
        .as_array()
        .expect("subnets")
        .iter()
        .find(|s| s["name"] == subnet)
        .unwrap_or_else(|| panic!("no subnet {subnet} in the plan"))["segment"]["kind"]
        .as_str()
        .expect("segment kind")
        .to_owned()
}

/// Step d.'s firewall: A-3 starts no flow to B.
fn a3_to_b(from: &str, to: &str) -> bool {
    from == "A-3" && to.starts_with("B-")
}

fn edits_in_sequence_keep_the_network_consistent(datapath: &str) {
    if !require_docker(&format!(
        "edits_in_sequence_keep_the_network_consistent ({datapath})"
    )) {
        return;
    }
    let mut topo = classic();
    topo["subnets"]["A"]["hosts"]["A-2"] = json!({"image": "dvnet/host"});
    let net = TestNet::new(&format!("seq-{datapath}"), topo.clone());
    net.up(&["--datapath", datapath]);
    let mut now = net.inspect();
    live_matches_plan(&now, datapath, &format!("{datapath}, up"));
    let a2 = container_identity(&net, "A-2");

    // A-1 → B-1 (through R-1, C, R-2) is on every file of the sequence
    let b1 = host_addresses(&now)["B-1"].clone();
    let started = Instant::now();
    let mut ping = Running::start(
        &net,
        "A-1",
        // no deadline (-w): with one, ping quits at the first ICMP error, and a kernel router
        // answers "net unreachable" in the moment its rewired link has no routes yet
        &["ping", "-D", "-O", "-i", "0.2", "-W", "1", &b1],
    );
    std::thread::sleep(Duration::from_secs(1));

    // a. a host more on A (a bridge already: nothing is rewired)
    topo["subnets"]["A"]["hosts"]["A-3"] = json!({});
    now = step(
        &net,
        datapath,
        &topo,
        &now,
        nothing_blocked,
        "a. add host A-3",
    );
    assert!(
        net.ping("B-1", "A-3"),
        "{datapath}, a.: B-1 cannot ping A-3 by name (hosts files)"
    );

    // b. a subnet D behind a new router R-3 on C: C turns from a veth pair into a bridge
    topo["subnets"]["D"] = json!({"cidr": "10.0.3.0/24", "hosts": {"D-1": {}}});
    topo["routers"]["R-3"] = json!({"subnets": ["C", "D"]});
    now = step(
        &net,
        datapath,
        &topo,
        &now,
        nothing_blocked,
        "b. add R-3 and D",
    );
    assert_eq!(segment(&now, "C"), "bridge", "{datapath}, b.");
    assert!(
        net.ping("A-1", "D-1"),
        "{datapath}, b.: A-1 cannot ping D-1 by name (hosts files)"
    );

    // c. B-2, R-3 and D go: C and B (two members each) turn back into veth pairs
    topo["subnets"]["B"]["hosts"]
        .as_object_mut()
        .expect("hosts")
        .remove("B-2");
    topo["subnets"]
        .as_object_mut()
        .expect("subnets")
        .remove("D");
    topo["routers"]
        .as_object_mut()
        .expect("routers")
        .remove("R-3");
    now = step(
        &net,
        datapath,
        &topo,
        &now,
        nothing_blocked,
        "c. remove B-2, R-3 and D",
    );
    assert_eq!(segment(&now, "C"), "point_to_point", "{datapath}, c.");
    assert_eq!(segment(&now, "B"), "point_to_point", "{datapath}, c.");

    // d. R-1 drops what it does not accept: A-1 and A-2 may start flows to B, B to all of
    // A; A-3 may not reach B-1 any more, but answers B-1 (replies to accepted flows pass)
    topo["routers"]["R-1"]["fw_rules"] = json!({
        "policy": "DROP",
        "accept": [["A-1", "B"], ["A-2", "B"], ["B", "A"]]
    });
    step(
        &net,
        datapath,
        &topo,
        &now,
        a3_to_b,
        "d. R-1's firewall: DROP but A-1, A-2 → B and B → A",
    );

    assert_eq!(
        container_identity(&net, "A-2"),
        a2,
        "{datapath}: the container A-2 was recreated or restarted, though never edited"
    );
    // long enough for the bound below to mean something
    if let Some(rest) = Duration::from_secs(12).checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    assert!(
        ping.alive(),
        "{datapath}: the ping in A-1 did not survive the applies"
    );
    let out = ping.interrupt();
    let (transmitted, received, lost) = ping_summary(&stdout(&out));
    eprintln!("{datapath}: the ping through the edits: {transmitted} sent, {received} answered");
    assert!(
        transmitted > 50,
        "{datapath}: too few pings to judge: {}",
        text(&out)
    );
    // The ping's path changes three times: in b. R-1's and R-2's links on C are rewired
    // (veth pair → bridge), in c. they are rewired back and R-2's and B-1's links on B too
    // (bridge → veth pair), in d. R-1's firewall is loaded (a reply in flight may find no
    // flow of its own yet). Each is a moment without a veth or a rule; at one ping per
    // 200 ms that costs a ping or two at most. 10 lost is two seconds of outage in all:
    // anything more is an apply that disturbed a path longer than it had to.
    assert!(
        transmitted - received <= 10,
        "{datapath}: the ping A-1 → B-1 lost {} of {transmitted} (icmp_seq {lost:?}): {}",
        transmitted - received,
        text(&out)
    );
}

fn the_same_file_twice_changes_nothing(datapath: &str) {
    if !require_root(&format!("the_same_file_twice_changes_nothing ({datapath})")) {
        return;
    }
    let net = TestNet::new(&format!("same-{datapath}"), classic());
    net.up(&["--datapath", datapath]);
    let mut sleeper = Running::start(&net, "A-1", &["sleep", "300"]);
    let before = net.inspect();
    let fabric = fabric_links(&before);
    let out = diff(&net);
    assert!(
        out.status.success() && stdout(&out).trim() == "no changes",
        "{datapath}: diff of the file up is running: {}",
        text(&out)
    );
    applies_as_no_change(&net, datapath);
    let after = net.inspect();
    assert_eq!(
        after, before,
        "{datapath}: an apply with no changes touched the network (record or live nodes)"
    );
    assert_eq!(
        fabric_links(&after),
        fabric,
        "{datapath}: an apply with no changes touched the fabric"
    );
    assert!(
        sleeper.alive(),
        "{datapath}: `sleep 300` in A-1 did not survive an apply with no changes"
    );
    assert!(net.ping("A-1", "B-2"), "{datapath}: A-1 → B-2");
}

/// An explicit address changes in place (the interface, its MAC, the routes through it and
/// every hosts file follow); an image turns a namespace node into a container, recreated
/// alone.
fn an_address_in_place_and_an_image_by_recreating_the_node(datapath: &str) {
    if !require_docker(&format!(
        "{datapath}::an_address_in_place_and_an_image_by_recreating_the_node"
    )) {
        return;
    }
    let mut topo = classic();
    let net = TestNet::new("readdress", topo.clone());
    net.up(&["--datapath", datapath]);
    let before = net.inspect();
    let a1_ifindex = live_interfaces(live_nodes(&before)["A-1"]);

    topo["subnets"]["B"]["hosts"]["B-2"] = json!({"ip": "10.0.1.99"});
    let printed = apply_ok(&net, &topo, &format!("{datapath}, B-2's address"));
    assert!(
        printed.contains("~ link B-2 on B: address 10.0.1.3 -> 10.0.1.99"),
        "{printed}"
    );
    let after = net.inspect();
    live_matches_plan(&after, datapath, &format!("{datapath}, B-2's address"));
    every_host_reaches_every_host(&net, &after, nothing_blocked, "B-2's address");
    // names follow (update_hosts)
    let out = net.exec("A-1", &["getent", "hosts", "B-2"]);
    assert!(
        stdout(&out).starts_with("10.0.1.99"),
        "A-1's hosts file still has B-2's old address: {}",
        text(&out)
    );
    assert!(net.ping("A-1", "B-2"), "A-1 cannot ping B-2 by name");

    // B-1 becomes a container: it alone is recreated
    topo["subnets"]["B"]["hosts"]["B-1"] = json!({"image": "dvnet/host"});
    let printed = apply_ok(&net, &topo, &format!("{datapath}, B-1's image"));
    assert!(
        printed.contains("~ node B-1: recreated (namespace -> container)"),
        "{printed}"
    );
    let after = net.inspect();
    live_matches_plan(&after, datapath, &format!("{datapath}, B-1's image"));
    every_host_reaches_every_host(&net, &after, nothing_blocked, "B-1's image");
    assert_eq!(
        containers_of(&net.id),
        [format!("dv-{}.b-1", net.id)],
        "B-1 runs as a container"
    );
    assert_eq!(
        live_interfaces(live_nodes(&after)["A-1"]),
        a1_ifindex,
        "A-1 was touched"
    );
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert!(containers_of(&net.id).is_empty());
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

dvnet_tests::both_datapaths!(
    edits_in_sequence_keep_the_network_consistent,
    the_same_file_twice_changes_nothing,
    an_address_in_place_and_an_image_by_recreating_the_node,
);

#[test]
fn counters_of_untouched_links_keep_counting() {
    if !require_root("counters_of_untouched_links_keep_counting") {
        return;
    }
    let mut topo = classic();
    let net = TestNet::new("counters", topo.clone());
    net.up(&["--datapath", "ebpf"]);
    let before = net.inspect();
    let b1 = host_addresses(&before)["B-1"].clone();
    let ten_pings = || {
        let out = net.exec("A-1", &["ping", "-c", "10", "-i", "0.01", "-W", "2", &b1]);
        assert!(out.status.success(), "A-1 → B-1: {}", text(&out));
    };
    let s0 = stats(&net);
    ten_pings();
    let s1 = stats(&net);
    // B is a bridge already: a host more rewires nothing on the path
    topo["subnets"]["B"]["hosts"]["B-3"] = json!({});
    apply_ok(&net, &topo, "add host B-3");
    let s2 = stats(&net);
    ten_pings();
    let s3 = stats(&net);
    for (node, requests, replies) in [("A-1", "tx", "rx"), ("B-1", "rx", "tx")] {
        for dir in [requests, replies] {
            let count = |s: &Value| icmp(&link_of(s, node)[dir]);
            let counts = [count(&s0), count(&s1), count(&s2), count(&s3)];
            assert_eq!(
                counts[1] - counts[0],
                10,
                "{node} {dir} before the apply: {counts:?}"
            );
            assert_eq!(
                counts[2], counts[1],
                "{node} {dir}: the apply reset or moved the counters: {counts:?}"
            );
            assert_eq!(
                counts[3] - counts[2],
                10,
                "{node} {dir} after the apply: {counts:?}"
            );
        }
    }
    let after = net.inspect();
    let a1 = |inspect: &Value| live_interfaces(live_nodes(inspect)["A-1"]);
    assert_eq!(
        a1(&after),
        a1(&before),
        "A-1's link changed identity (ifindex, addresses)"
    );
    identities_kept(&before, &after, "add host B-3");
    live_matches_plan(&after, "ebpf", "add host B-3");
}

/// An echo server on port 7777 for one connection; says how much it echoed when it closes.
const ECHO_SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777))
s.listen(1)
c, _ = s.accept()
n = 0
while True:
    d = c.recv(4096)
    if not d:
        break
    c.sendall(d)
    n += len(d)
print(f"echoed {n} bytes", flush=True)
"#;

/// One connection to ADDRESS:7777, LINES lines over it, one every 0.2 s, each read back
/// before the next; fails at the first one not echoed within 5 s.
const ECHO_CLIENT: &str = r#"
import socket, sys, time
addr, lines = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 5
while True:
    try:
        c = socket.create_connection((addr, 7777), timeout=5)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.1)
print("connected from port", c.getsockname()[1], flush=True)
f = c.makefile("rwb")
for i in range(lines):
    line = f"line {i}\n".encode()
    f.write(line)
    f.flush()
    if f.readline() != line:
        sys.exit(f"line {i} was not echoed")
    time.sleep(0.2)
print(f"all {lines} lines echoed", flush=True)
"#;

#[test]
fn a_process_and_a_tcp_connection_survive_an_apply() {
    if !require_root("a_process_and_a_tcp_connection_survive_an_apply") {
        return;
    }
    let mut topo = classic();
    let net = TestNet::new("tcp", topo.clone());
    net.up(&["--datapath", "ebpf"]);
    let python = net.exec("B-1", &["python3", "-c", "pass"]);
    assert!(
        python.status.success(),
        "needs python3 in the nodes (namespace nodes share the host's files): {}",
        text(&python)
    );
    let b1 = host_addresses(&net.inspect())["B-1"].clone();
    let mut server = Running::start(&net, "B-1", &["python3", "-c", ECHO_SERVER]);
    // 50 lines: 10 s, the apply falls in the middle
    let mut client = Running::start(&net, "A-1", &["python3", "-c", ECHO_CLIENT, &b1, "50"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        client.alive(),
        "the client ended before the apply: {}",
        text(&client.wait())
    );
    topo["subnets"]["A"]["hosts"]["A-3"] = json!({});
    apply_ok(&net, &topo, "add host A-3");
    assert!(
        server.alive(),
        "the server in B-1 did not survive the apply: {}",
        text(&server.wait())
    );
    assert!(
        client.alive(),
        "the client ended before the apply did, so its connection did not span it: {}",
        text(&client.wait())
    );
    let out = client.wait();
    assert!(
        out.status.success() && stdout(&out).contains("all 50 lines echoed"),
        "the connection A-1 → B-1 broke across the apply: {}",
        text(&out)
    );
    let out = server.wait();
    assert!(
        out.status.success() && stdout(&out).contains("echoed"),
        "the server: {}",
        text(&out)
    );
    // and the new host is there
    assert!(net.ping("A-3", &b1), "A-3 → B-1");
}

#[test]
fn a_failing_apply_puts_the_network_back() {
    if !require_docker("a_failing_apply_puts_the_network_back") {
        return;
    }
    let original = classic();
    let net = TestNet::new("failback", original.clone());
    net.up(&["--datapath", "ebpf"]);
    let before = net.inspect();
    let fabric = fabric_links(&before);
    let mut edited = original.clone();
    edited["subnets"]["A"]["hosts"]["A-3"] = json!({});
    edited["subnets"]["A"]["hosts"]["A-9"] = json!({"image": "dvnet/does-not-exist"});
    edited["routers"]["R-1"]["fw_rules"] = json!({"policy": "DROP", "accept": [["A", "B"]]});
    edit(&net, &edited);
    let out = apply(&net);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an apply that cannot be done fails with 1: {}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("dvnet/does-not-exist"),
        "the error names the missing image: {}",
        text(&out)
    );
    let after = net.inspect();
    same_network(&before, &after, "after the failed apply");
    assert_eq!(
        fabric_links(&after),
        fabric,
        "the failed apply changed the fabric"
    );
    assert_eq!(
        containers_of(&net.id),
        Vec::<String>::new(),
        "a container is left"
    );
    for node in ["a-3", "a-9"] {
        let netns = format!("/run/netns/dv-{}.{node}", net.id);
        assert!(!Path::new(&netns).exists(), "{netns} is left");
    }
    for (from, to) in [("A-1", "B-1"), ("A-2", "B-2"), ("B-1", "A-1")] {
        // B → A would be dropped by the edit's firewall
        assert!(net.ping(from, to), "{from} → {to} after the failed apply");
    }
    // the record is still the original file's
    let out = diff(&net);
    assert!(
        stdout(&out).contains("+ host A-3") && stdout(&out).contains("~ firewall of R-1"),
        "diff of the edit still shows all of it: {}",
        text(&out)
    );
    edit(&net, &original);
    let out = diff(&net);
    assert!(
        out.status.success() && stdout(&out).trim() == "no changes",
        "diff of the original file: {}",
        text(&out)
    );
}

#[test]
fn a_failure_late_in_apply_puts_the_rewired_subnet_back() {
    if !require_root("a_failure_late_in_apply_puts_the_rewired_subnet_back") {
        return;
    }
    // A new router whose own FRR configuration has an error: it fails once R-3 and D-1
    // exist and C has been rewired from a veth pair into a bridge (as in `up`, FRR starts
    // last).
    let original = classic();
    let net = TestNet::new("lateback", original.clone());
    net.up(&["--datapath", "ebpf"]);
    std::fs::write(
        net.dir.path().join("bad.conf"),
        "router ospf\n this is not a command\n",
    )
    .expect("write bad.conf");
    let before = net.inspect();
    let fabric = fabric_links(&before);
    let mut edited = original.clone();
    edited["subnets"]["D"] = json!({"cidr": "10.0.3.0/24", "hosts": {"D-1": {}}});
    edited["routers"]["R-3"] = json!({"subnets": ["C", "D"], "frr_config": "bad.conf"});
    edit(&net, &edited);
    let mut sleeper = Running::start(&net, "A-1", &["sleep", "300"]);
    let out = apply(&net);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("bad.conf") && stderr(&out).contains("put back as it was"),
        "the error names the file and says the network was put back: {}",
        text(&out)
    );
    let after = net.inspect();
    same_network(&before, &after, "after the rolled-back apply");
    assert_eq!(
        fabric_links(&after),
        fabric,
        "C's bridge or ports are left in the fabric"
    );
    for node in ["r-3", "d-1"] {
        let netns = format!("/run/netns/dv-{}.{node}", net.id);
        assert!(!Path::new(&netns).exists(), "{netns} is left");
    }
    assert!(
        sleeper.alive(),
        "a process in A-1 did not survive the rollback"
    );
    every_host_reaches_every_host(&net, &after, nothing_blocked, "after the rolled-back apply");
    edit(&net, &original);
    let out = diff(&net);
    assert!(
        out.status.success() && stdout(&out).trim() == "no changes",
        "diff of the original file: {}",
        text(&out)
    );
}

#[test]
fn up_of_a_running_network_points_to_apply() {
    if !require_root("up_of_a_running_network_points_to_apply") {
        return;
    }
    let net = TestNet::new("upagain", classic());
    net.up(&[]);
    let before = net.inspect();
    let out = net.host.dvnet(&["up", file(&net)]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("dvnet apply"),
        "up of a running network says to use `dvnet apply`: {}",
        text(&out)
    );
    same_network(&before, &net.inspect(), "after the refused up");
}

#[test]
fn kill_during_apply_then_down_leaves_nothing() {
    if !require_root("kill_during_apply_then_down_leaves_nothing") {
        return;
    }
    let out = run(Command::new(dvnet_bin()).args(["gen", "chain", "60"]));
    assert!(out.status.success(), "{}", text(&out));
    let mut topo: Value = serde_json::from_slice(&out.stdout).expect("gen writes JSON");
    let net = TestNet::new("killapply", topo.clone());
    net.up(&["--datapath", "ebpf"]);
    let namespaces = || {
        leftovers_of(&net.id)
            .iter()
            .filter(|l| l.starts_with("/run/netns/"))
            .count()
    };
    let built = namespaces();
    assert_eq!(built, 61, "60 nodes and the fabric");
    // 200 hosts more on the first router's LAN, which turns from a veth pair into a bridge:
    // enough work that apply is still at it when killed
    let hosts = topo["subnets"]["n1"]["hosts"]
        .as_object_mut()
        .expect("n1's hosts");
    for i in 2..=201 {
        hosts.insert(format!("h1-{i}"), json!({}));
    }
    edit(&net, &topo);
    let mut child = net
        .host
        .command(dvnet_bin())
        .args(["apply", file(&net)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dvnet apply");
    // killed as soon as the first new namespace exists: in the middle of its work
    let deadline = Instant::now() + Duration::from_secs(20);
    while namespaces() <= built
        && Instant::now() < deadline
        && child.try_wait().expect("try_wait").is_none()
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let running = child.try_wait().expect("try_wait").is_none();
    child.kill().expect("kill -9 dvnet apply");
    let _ = child.wait();
    assert!(
        running,
        "apply ended before it could be killed ({} namespaces): make the edit bigger",
        namespaces()
    );
    assert!(
        namespaces() > built,
        "apply was killed before it made anything: {:?}",
        leftovers_of(&net.id)
    );
    let out = net.down();
    assert!(
        out.status.success(),
        "down after a killed apply: {}",
        text(&out)
    );
    assert_eq!(
        leftovers_of(&net.id),
        Vec::<String>::new(),
        "down after a killed apply left things behind"
    );
}
