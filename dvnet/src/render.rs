//! Tables for people (`dvnet plan`, `inspect`, `stats`); scripts use `--json`.

use std::fmt::Write as _;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::plan::{Action, NodeKind, Plan};

/// A table with dvnet's look and the given header.
#[must_use]
pub fn table<I: IntoIterator<Item = &'static str>>(header: I) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(header);
    t
}

/// One line naming the network and its size.
#[must_use]
pub fn summary(plan: &Plan) -> String {
    let routers = plan
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Router)
        .count();
    let hosts = plan.nodes.len() - routers;
    format!(
        "network \"{}\" (id {}): {} subnets, {routers} routers, {hosts} hosts, {} links; datapath {}",
        plan.name,
        plan.id,
        plan.subnets.len(),
        plan.links.len(),
        match plan.datapath {
            crate::plan::Datapath::Ebpf => "ebpf",
            crate::plan::Datapath::Kernel => "kernel",
        }
    )
}

/// The whole plan, as tables.
#[must_use]
pub fn plan(plan: &Plan) -> String {
    let mut out = summary(plan);
    out.push_str("\n\n");
    out.push_str(&machine(plan));

    let mut t = table([
        "node",
        "kind",
        "interface",
        "address",
        "subnet",
        "wired to",
        "namespace",
    ]);
    for node in &plan.nodes {
        for (i, link) in plan.links_of(node).enumerate() {
            let first = i == 0;
            t.add_row([
                on_first(first, node.name.clone()),
                on_first(first, kind(node.kind).to_owned()),
                link.ifname.clone(),
                addresses(plan, link),
                plan.subnets[link.subnet].name.clone(),
                wired_to(plan, link),
                on_first(first, node.netns.clone()),
            ]);
        }
    }
    let _ = write!(out, "{t}\n\n");

    let mut t = table(["node", "destination", "via", "dev"]);
    for node in &plan.nodes {
        let mut first = true;
        route_rows(&mut t, &node.name, &node.routes, &mut first);
        route_rows(&mut t, &node.name, &node.routes6, &mut first);
    }
    if t.row_count() > 0 {
        let _ = write!(out, "routes (beyond connected subnets)\n{t}\n\n");
    }

    let mut t = table([
        "router", "policy", "action", "from", "to", "proto", "dport", "rule",
    ]);
    for node in &plan.nodes {
        let Some(fw) = &node.firewall else { continue };
        if fw.rules.is_empty() && fw.policy == crate::topology::Policy::Accept {
            continue;
        }
        let policy = format!("{:?}", fw.policy).to_uppercase();
        if fw.rules.is_empty() {
            t.add_row([
                node.name.clone(),
                policy.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for (i, r) in fw.rules.iter().enumerate() {
            // both families side by side; "any" once when both are
            let nets = |v4: &[ipnet::Ipv4Net], v6: &[ipnet::Ipv6Net]| {
                let all: Vec<ipnet::IpNet> = v4
                    .iter()
                    .map(|&n| n.into())
                    .chain(v6.iter().map(|&n| n.into()))
                    .collect();
                let mut words: Vec<String> = all
                    .iter()
                    .map(|n| {
                        if n.prefix_len() == 0 {
                            "any".to_owned()
                        } else {
                            n.to_string()
                        }
                    })
                    .collect();
                words.dedup();
                words.join(" ")
            };
            t.add_row([
                on_first(i == 0, node.name.clone()),
                on_first(i == 0, policy.clone()),
                match r.action {
                    Action::Accept => "accept".to_owned(),
                    Action::Drop => "drop".to_owned(),
                },
                nets(&r.src, &r.src6),
                nets(&r.dst, &r.dst6),
                r.proto
                    .map_or_else(|| "any".to_owned(), crate::plan::proto_name),
                r.dport.map_or_else(String::new, |p| p.to_string()),
                r.origin.clone(),
            ]);
        }
    }
    if t.row_count() > 0 {
        let _ = write!(out, "firewall\n{t}\n\n");
    }
    let frr: Vec<String> = plan
        .nodes
        .iter()
        .filter_map(|n| match n.frr.as_ref()? {
            crate::plan::FrrPlan::Generated { .. } => Some(format!("{} (OSPF, generated)", n.name)),
            crate::plan::FrrPlan::File { path } => Some(format!("{} ({})", n.name, path.display())),
        })
        .collect();
    if !frr.is_empty() {
        let _ = writeln!(
            out,
            "FRR runs in: {} (`dvnet plan --json` shows the configurations)\n",
            frr.join(", ")
        );
    }
    if let Some(uplink) = &plan.uplink {
        let ipv6 = match (uplink.host_address6, plan.subnets[uplink.subnet].cidr6) {
            (Some(a), Some(net)) => format!(" and {net} at {a} (NAT66)"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "outbound access: the host joins {} at {}{ipv6} (interface {}); {} published \
             port(s)\n",
            plan.uplink_cidr(),
            uplink.host_address,
            uplink.host_ifname,
            uplink.published.len()
        );
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// Where a link goes: its fabric port on the subnet's bridge, or the other node.
/// A link's addresses: IPv4, and its global IPv6 address where it has one.
fn addresses(plan: &Plan, link: &crate::plan::LinkPlan) -> String {
    let v4 = link.address.map(|a| format!("{a}/{}", link.prefix_len));
    let v6 = link
        .address6
        .zip(plan.subnets[link.subnet].cidr6)
        .map(|(a, net)| format!("{a}/{}", net.prefix_len()));
    match (v4, v6) {
        (Some(v4), Some(v6)) => format!("{v4} {v6}"),
        (v4, v6) => v4.or(v6).unwrap_or_default(),
    }
}

/// A node's routes of one family, a line per next hop (the destination once); the node's
/// name on its first line (`first`).
fn route_rows<N, A>(
    t: &mut Table,
    node: &str,
    routes: &[crate::plan::RoutePlan<N, A>],
    first: &mut bool,
) where
    N: Into<ipnet::IpNet> + Copy,
    A: std::fmt::Display + Copy,
{
    for r in routes {
        let dest: ipnet::IpNet = r.dest.into();
        for (j, (via, dev, _)) in r.nexthops().enumerate() {
            t.add_row([
                on_first(std::mem::take(first), node.to_owned()),
                match (j, dest.prefix_len()) {
                    (0, 0) => "default".to_owned(),
                    (0, _) => dest.to_string(),
                    _ => "  (equal cost)".to_owned(),
                },
                via.to_string(),
                dev.to_owned(),
            ]);
        }
    }
}

fn wired_to(plan: &Plan, link: &crate::plan::LinkPlan) -> String {
    if let Some(port) = &link.fabric_port {
        return format!("bridge, port {}", port.ifname);
    }
    plan.peer_of(link).map_or_else(String::new, |peer| {
        format!("{} {}", plan.nodes[peer.node].name, peer.ifname)
    })
}

/// A machine's share of a lab placed on several: where it speaks from, which nodes run
/// elsewhere, and the VXLAN ports joining its segments to theirs. Nothing for a lab on one.
fn machine(plan: &Plan) -> String {
    let Some(m) = &plan.machine else {
        return String::new();
    };
    let mut out = format!(
        "machine {:?}'s share of network {}: underlay {}, VXLAN UDP port {}, link MTU {}\n",
        m.name, m.network, m.address, m.vxlan_port, plan.mtu
    );
    let mut elsewhere = std::collections::BTreeMap::<&str, Vec<&str>>::new();
    for n in &m.elsewhere {
        elsewhere.entry(&n.machine).or_default().push(&n.name);
    }
    for (machine, nodes) in elsewhere {
        let _ = writeln!(out, "on {machine:?}: {}", nodes.join(", "));
    }
    let mut t = table([
        "subnet",
        "VXLAN port",
        "VNI",
        "to machine",
        "at",
        "members there",
    ]);
    for subnet in &plan.subnets {
        let Some(tunnel) = &subnet.tunnel else {
            continue;
        };
        for (i, remote) in tunnel.remotes.iter().enumerate() {
            let members: Vec<String> = remote.members.iter().map(ToString::to_string).collect();
            t.add_row([
                on_first(i == 0, subnet.name.clone()),
                on_first(i == 0, tunnel.ifname.clone()),
                on_first(i == 0, tunnel.vni.to_string()),
                remote.machine.clone(),
                remote.address.to_string(),
                members.join(" "),
            ]);
        }
    }
    if t.row_count() > 0 {
        let _ = writeln!(out, "{t}");
    }
    out.push('\n');
    out
}

/// `value` on a group's first row, blank on the others.
fn on_first(first: bool, value: impl Into<String>) -> String {
    if first { value.into() } else { String::new() }
}

fn kind(k: NodeKind) -> &'static str {
    match k {
        NodeKind::Router => "router",
        NodeKind::Host => "host",
    }
}

/// `dvnet inspect`: the record and what the kernel reports.
#[must_use]
pub fn inspect(record: &crate::state::State, live: &[crate::inspect::LiveNode]) -> String {
    let plan = &record.plan;
    let mut out = summary(plan);
    let _ = writeln!(
        out,
        "\nstatus {:?}, from {}",
        record.status,
        record
            .source
            .as_ref()
            .map_or("?".into(), |p| p.display().to_string())
    );
    out.push('\n');
    out.push_str(&machine(plan));
    let mut t = table([
        "node",
        "kind",
        "interface",
        "state",
        "address",
        "subnet",
        "wired to",
        "namespace / container",
    ]);
    for (node, l) in plan.nodes.iter().zip(live) {
        for (i, link) in plan.links_of(node).enumerate() {
            // Docker renames a joined container's interface as it moves it in (eth0, ...);
            // moved, it keeps its index
            let iface = l.interfaces.iter().find(|x| {
                x.name == link.ifname || (node.attached.is_some() && x.ifindex == link.ifindex)
            });
            t.add_row([
                on_first(i == 0, node.name.clone()),
                on_first(i == 0, kind(node.kind).to_owned()),
                iface.map_or_else(|| link.ifname.clone(), |x| x.name.clone()),
                iface
                    .map_or("missing", |x| if x.up { "up" } else { "down" })
                    .to_owned(),
                iface.map_or_else(String::new, |x| x.addresses.join(" ")),
                plan.subnets[link.subnet].name.clone(),
                wired_to(plan, link),
                on_first(
                    i == 0,
                    if node.container {
                        format!("{} (container)", node.netns)
                    } else if let Some(a) = &node.attached {
                        format!(
                            "{} (joined through Docker network {:.12})",
                            node.netns, a.docker_network
                        )
                    } else {
                        node.netns.clone()
                    },
                ),
            ]);
        }
    }
    let _ = write!(out, "{t}\n\n");
    let mut t = table(["node", "destination", "via", "dev"]);
    for l in live {
        for (i, r) in l.routes.iter().enumerate() {
            t.add_row([
                on_first(i == 0, l.name.clone()),
                if r.dest.ends_with("/0") {
                    "default".to_owned()
                } else {
                    r.dest.clone()
                },
                r.via.map_or_else(String::new, |v| v.to_string()),
                r.dev.clone().unwrap_or_default(),
            ]);
        }
    }
    let _ = write!(out, "routes (kernel, main table)\n{t}\n");
    let own: Vec<&str> = plan
        .nodes
        .iter()
        .filter(|n| n.own_route)
        .map(|n| n.name.as_str())
        .collect();
    if !own.is_empty() {
        let _ = writeln!(
            out,
            "{} router(s) send their own packets through `default dev lo`, routed by the eBPF \
             program from the route map (their routes: `dvnet plan`): {}",
            own.len(),
            own.join(", ")
        );
    }
    if let Some(uplink) = &plan.uplink {
        let cidr = plan.uplink_cidr();
        let _ = writeln!(
            out,
            "\noutbound access: the host is {}/{} on {} (uplink {}); NAT table `ip {}`",
            uplink.host_address,
            cidr.prefix_len(),
            uplink.host_ifname,
            cidr,
            crate::host::nat::table_name(&plan.id)
        );
        if !uplink.published.is_empty() {
            let mut t = table(["host port", "node", "address", "node port"]);
            for p in &uplink.published {
                t.add_row([
                    format!("{}/{}", p.host_port, p.proto),
                    p.node.clone(),
                    p.address
                        .map(std::net::IpAddr::from)
                        .or(p.address6.map(std::net::IpAddr::from))
                        .map_or_else(String::new, |a| a.to_string()),
                    p.node_port.to_string(),
                ]);
            }
            let _ = write!(out, "published ports\n{t}\n");
        }
    }
    out.push_str(&impairments(plan));
    out
}

/// The impairments in force and the links taken down, where each applies and by what
/// means; empty when there are none.
#[must_use]
pub fn impairments(plan: &Plan) -> String {
    let mut t = table(["packets", "impairments", "applied by"]);
    let mut rows = 0;
    for link in &plan.links {
        let node = &plan.nodes[link.node].name;
        let subnet = &plan.subnets[link.subnet].name;
        for (hook, what) in [
            (&link.from_node, format!("{node} sends on {subnet}")),
            (&link.into_node, format!("{node} receives on {subnet}")),
        ] {
            if hook.is_none() {
                continue;
            }
            let i = &hook.impair;
            let mut by = Vec::new();
            if i.loss_ppm.is_some() || i.corrupt_ppm.is_some() || i.duplicate_ppm.is_some() {
                by.push("eBPF");
            }
            if hook.delay.is_some() {
                by.push("dvnet's delay line");
            }
            t.add_row([what, i.to_string(), by.join(" + ")]);
            rows += 1;
        }
    }
    let down: Vec<String> = plan
        .links
        .iter()
        .filter(|l| l.down)
        .map(|l| {
            format!(
                "{} on {}",
                plan.nodes[l.node].name, plan.subnets[l.subnet].name
            )
        })
        .collect();
    let mut out = String::new();
    if rows > 0 {
        let _ = write!(out, "\nimpairments in force\n{t}\n");
    }
    if !down.is_empty() {
        let _ = writeln!(out, "\nlinks taken down: {}", down.join(", "));
    }
    out
}

fn classes(t: &crate::stats::Traffic) -> String {
    t.by_class
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn drops(d: &std::collections::BTreeMap<&'static str, u64>) -> String {
    d.iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `dvnet stats FILE` of a lab on several machines: every machine's links in one table,
/// from each machine's `dvnet stats --json` (`machines`: by machine name, in file order).
#[must_use]
pub fn machines_stats(name: &str, machines: &serde_json::Map<String, serde_json::Value>) -> String {
    use serde_json::Value;
    let counts = |v: &Value| {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let number = |v: &Value| v.as_u64().unwrap_or(0).to_string();
    let mut out = format!("network \"{name}\" on {} machines\n\n", machines.len());
    let mut t = table([
        "machine",
        "node",
        "interface",
        "subnet",
        "rx packets",
        "rx bytes",
        "tx packets",
        "tx bytes",
        "rx by class",
        "tx by class",
        "drops",
    ]);
    let mut rules = table(["machine", "router", "rule", "action", "hits"]);
    for (machine, stats) in machines {
        let links = stats["links"].as_array().map_or(&[][..], Vec::as_slice);
        for (i, l) in links.iter().enumerate() {
            t.add_row([
                on_first(i == 0, machine.clone()),
                l["node"].as_str().unwrap_or_default().to_owned(),
                l["interface"].as_str().unwrap_or_default().to_owned(),
                l["subnet"].as_str().unwrap_or_default().to_owned(),
                number(&l["rx"]["packets"]),
                number(&l["rx"]["bytes"]),
                number(&l["tx"]["packets"]),
                number(&l["tx"]["bytes"]),
                counts(&l["rx"]["by_class"]),
                counts(&l["tx"]["by_class"]),
                counts(&l["drops"]),
            ]);
        }
        for r in stats["rules"].as_array().map_or(&[][..], Vec::as_slice) {
            rules.add_row([
                machine.clone(),
                r["router"].as_str().unwrap_or_default().to_owned(),
                r["rule"].as_str().unwrap_or_default().to_owned(),
                r["action"].as_str().unwrap_or_default().to_owned(),
                number(&r["hits"]),
            ]);
        }
    }
    let _ = writeln!(out, "{t}");
    if rules.row_count() > 0 {
        let _ = writeln!(out, "\nfirewall rules\n{rules}");
    }
    out
}

/// A rate in units per second, short: `950`, `12.3k`, `4.56M`, `7.89G`.
#[must_use]
pub fn rate(per_second: f64) -> String {
    match per_second {
        r if r >= 1e9 => format!("{:.2}G", r / 1e9),
        r if r >= 1e6 => format!("{:.2}M", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

/// `dvnet stats`: a row per link; with `previous` (taken `seconds` earlier), rates too.
#[must_use]
pub fn stats(
    plan: &Plan,
    now: &crate::stats::Snapshot,
    previous: Option<(&crate::stats::Snapshot, f64)>,
) -> String {
    let mut out = summary(plan);
    out.push_str("\n\n");
    let mut t = if previous.is_some() {
        table([
            "node",
            "interface",
            "subnet",
            "rx pkt/s",
            "rx bit/s",
            "tx pkt/s",
            "tx bit/s",
            "rx packets",
            "tx packets",
            "drops; impaired",
        ])
    } else {
        table([
            "node",
            "interface",
            "subnet",
            "rx packets",
            "rx bytes",
            "tx packets",
            "tx bytes",
            "rx by class",
            "tx by class",
            "drops; impaired",
        ])
    };
    for (i, l) in now.links.iter().enumerate() {
        let mut row = vec![l.node.clone(), l.interface.clone(), l.subnet.clone()];
        if let Some((prev, secs)) = previous {
            let p = &prev.links[i];
            #[expect(clippy::cast_precision_loss, reason = "rates are approximate")]
            let per_s = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
            row.extend([
                rate(per_s(l.rx.packets, p.rx.packets)),
                rate(8.0 * per_s(l.rx.bytes, p.rx.bytes)),
                rate(per_s(l.tx.packets, p.tx.packets)),
                rate(8.0 * per_s(l.tx.bytes, p.tx.bytes)),
                l.rx.packets.to_string(),
                l.tx.packets.to_string(),
            ]);
        } else {
            row.extend([
                l.rx.packets.to_string(),
                l.rx.bytes.to_string(),
                l.tx.packets.to_string(),
                l.tx.bytes.to_string(),
                classes(&l.rx),
                classes(&l.tx),
            ]);
        }
        let mut what = drops(&l.drops);
        if !l.impaired.is_empty() {
            if !what.is_empty() {
                what.push_str("; ");
            }
            what.push_str(&drops(&l.impaired));
        }
        row.push(what);
        t.add_row(row);
    }
    let _ = writeln!(out, "{t}");
    if !now.rules.is_empty() {
        let mut t = table(["router", "rule", "action", "hits"]);
        for r in &now.rules {
            t.add_row([
                r.router.clone(),
                r.rule.clone(),
                match r.action {
                    Action::Accept => "accept".to_owned(),
                    Action::Drop => "drop".to_owned(),
                },
                r.hits.to_string(),
            ]);
        }
        let _ = writeln!(out, "\nfirewall rules\n{t}");
        let c = &now.conntrack;
        let _ = writeln!(
            out,
            "flows tracked: {} of {} (inserted {}, evicted {}); packets passed on the rules \
             alone: {} (no drop rule could meet their replies)",
            c.entries, c.capacity, c.inserted, c.evicted, c.untracked
        );
    }
    out
}
