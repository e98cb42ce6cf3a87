//! What changes between two plans of one network, by name: the list `dvnet apply` works
//! through and `dvnet diff` shows. Pure: no I/O. `up` is the diff from an empty network,
//! `down` the diff to one.
//!
//! A node is recreated when what it runs on changes (its image, container or namespace, its
//! kind); a link is rewired (its veth made anew) when what joins it changes: its subnet turns
//! from a veth pair into a bridge or back, its peer or fabric port changes, or a node at
//! either end is recreated. Everything else changes in place: addresses, routes, firewalls,
//! FRR configurations, hosts files, the host's side of outbound access.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

use super::{LinkPlan, NodeKind, NodePlan, Plan, Route6Plan, RoutePlan, Segment};
use crate::topology::Impair;

/// Every change between two plans, grouped by kind, each list in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub nodes: Vec<NodeChange>,
    pub subnets: Vec<SubnetChange>,
    pub links: Vec<LinkChange>,
    pub routes: Vec<RouteChange>,
    pub firewalls: Vec<FirewallChange>,
    /// Routers whose FRR starts, stops or restarts (a new configuration).
    pub frr: Vec<FrrChange>,
    /// Whether the nodes' hosts files change (`update_hosts`).
    pub hosts_files: bool,
    /// The host's side of outbound access.
    pub host: Vec<HostChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum NodeChange {
    Add {
        node: String,
        kind: NodeKind,
        /// Its image, when it runs as a container.
        image: Option<String>,
        /// (subnet, address) of each of its links: IPv4, or IPv6 on an IPv6-only subnet.
        links: Vec<(String, IpAddr)>,
    },
    Remove {
        node: String,
    },
    /// Removed and made anew (with all its links).
    Recreate {
        node: String,
        why: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum SubnetChange {
    Add {
        subnet: String,
        segment: String,
    },
    Remove {
        subnet: String,
    },
    /// How the subnet is carried changes (a veth pair ↔ a bridge).
    Segment {
        subnet: String,
        from: String,
        to: String,
    },
    /// The impairments of every packet entering the segment.
    Impair {
        subnet: String,
        from: Impair,
        to: Impair,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum LinkChange {
    Add {
        node: String,
        subnet: String,
        /// IPv4, or IPv6 on an IPv6-only subnet.
        address: IpAddr,
    },
    Remove {
        node: String,
        subnet: String,
    },
    /// The veth is made anew; identities (name, index, address, counters) are kept.
    Rewire {
        node: String,
        subnet: String,
        why: String,
    },
    /// A new address (and MAC, which follows it) on the same interface.
    Address {
        node: String,
        subnet: String,
        from: Option<Ipv4Addr>,
        to: Option<Ipv4Addr>,
    },
    /// A new global IPv6 address (with its prefix length), or one given or taken away (the
    /// subnet's `cidr6` came or went).
    Address6 {
        node: String,
        subnet: String,
        from: Option<(Ipv6Addr, u8)>,
        to: Option<(Ipv6Addr, u8)>,
    },
    /// The member's own impairments.
    Impair {
        node: String,
        subnet: String,
        from: Impair,
        to: Impair,
    },
    /// Taken down, or up again.
    State {
        node: String,
        subnet: String,
        down: bool,
    },
}

/// Routes of a node that stays (nodes added or recreated get all theirs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteChange {
    pub node: String,
    pub add: Vec<RoutePlan>,
    pub remove: Vec<RoutePlan>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add6: Vec<Route6Plan>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove6: Vec<Route6Plan>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirewallChange {
    pub router: String,
    /// `ACCEPT → DROP`, when the policy changes.
    pub policy: Option<(crate::topology::Policy, crate::topology::Policy)>,
    /// Where the rules added and removed stand in the files.
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum FrrChange {
    Start { router: String },
    Stop { router: String },
    Restart { router: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum HostChange {
    /// Outbound access turns on: the uplink, routes, NAT.
    AddUplink,
    /// Outbound access turns off.
    RemoveUplink,
    /// The host's address on the uplink.
    Address { from: Ipv4Addr, to: Ipv4Addr },
    Routes {
        add: Vec<(Ipv4Net, Ipv4Addr)>,
        remove: Vec<(Ipv4Net, Ipv4Addr)>,
    },
    /// The host's IPv6 routes to the network.
    Routes6 {
        add: Vec<(Ipv6Net, Ipv6Addr)>,
        remove: Vec<(Ipv6Net, Ipv6Addr)>,
    },
    /// The NAT table (sources, published ports) is reloaded.
    Nat,
}

impl Diff {
    /// Whether nothing changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }

    /// Names of the nodes added or recreated (they are built whole).
    #[must_use]
    pub fn built_nodes(&self) -> BTreeSet<&str> {
        self.nodes
            .iter()
            .filter_map(|c| match c {
                NodeChange::Add { node, .. } | NodeChange::Recreate { node, .. } => {
                    Some(node.as_str())
                }
                NodeChange::Remove { .. } => None,
            })
            .collect()
    }

    /// Names of the nodes removed or recreated (they are taken down first).
    #[must_use]
    pub fn removed_nodes(&self) -> BTreeSet<&str> {
        self.nodes
            .iter()
            .filter_map(|c| match c {
                NodeChange::Remove { node } | NodeChange::Recreate { node, .. } => {
                    Some(node.as_str())
                }
                NodeChange::Add { .. } => None,
            })
            .collect()
    }

    /// Lines for people, one per change, `+` added, `-` removed, `~` changed.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.is_empty() {
            out.push_str("no changes\n");
            return out;
        }
        for c in &self.nodes {
            let _ = match c {
                NodeChange::Add {
                    node,
                    kind,
                    image,
                    links,
                } => {
                    let _ = write!(out, "+ {} {node}", format!("{kind:?}").to_lowercase());
                    if let Some(image) = image {
                        let _ = write!(out, " (container {image})");
                    }
                    for (subnet, address) in links {
                        let _ = write!(out, ", {address} on {subnet}");
                    }
                    writeln!(out)
                }
                NodeChange::Remove { node } => writeln!(out, "- node {node}"),
                NodeChange::Recreate { node, why } => {
                    writeln!(out, "~ node {node}: recreated ({why})")
                }
            };
        }
        for c in &self.subnets {
            let _ = match c {
                SubnetChange::Add { subnet, segment } => {
                    writeln!(out, "+ subnet {subnet} ({segment})")
                }
                SubnetChange::Remove { subnet } => writeln!(out, "- subnet {subnet}"),
                SubnetChange::Segment { subnet, from, to } => {
                    writeln!(out, "~ subnet {subnet}: {from} -> {to}")
                }
                SubnetChange::Impair { subnet, from, to } => {
                    writeln!(out, "~ subnet {subnet}: impairments {from} -> {to}")
                }
            };
        }
        for c in &self.links {
            let _ = match c {
                LinkChange::Add {
                    node,
                    subnet,
                    address,
                } => writeln!(out, "+ link {node} on {subnet} ({address})"),
                LinkChange::Remove { node, subnet } => writeln!(out, "- link {node} on {subnet}"),
                LinkChange::Rewire { node, subnet, why } => {
                    writeln!(out, "~ link {node} on {subnet}: rewired ({why})")
                }
                LinkChange::Address {
                    node,
                    subnet,
                    from,
                    to,
                } => {
                    let show =
                        |a: &Option<Ipv4Addr>| a.map_or_else(|| "none".into(), |a| a.to_string());
                    writeln!(
                        out,
                        "~ link {node} on {subnet}: address {} -> {}",
                        show(from),
                        show(to)
                    )
                }
                LinkChange::Address6 {
                    node,
                    subnet,
                    from,
                    to,
                } => {
                    let show = |a: &Option<(Ipv6Addr, u8)>| {
                        a.map_or_else(|| "none".to_owned(), |(a, l)| format!("{a}/{l}"))
                    };
                    writeln!(
                        out,
                        "~ link {node} on {subnet}: IPv6 address {} -> {}",
                        show(from),
                        show(to)
                    )
                }
                LinkChange::Impair {
                    node,
                    subnet,
                    from,
                    to,
                } => writeln!(out, "~ link {node} on {subnet}: impairments {from} -> {to}"),
                LinkChange::State { node, subnet, down } => writeln!(
                    out,
                    "~ link {node} on {subnet}: {}",
                    if *down { "up -> down" } else { "down -> up" }
                ),
            };
        }
        for r in &self.routes {
            let _ = write!(out, "~ routes of {}:", r.node);
            let vias = |route: &RoutePlan| {
                route
                    .nexthops()
                    .map(|(via, _, _)| via.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for route in &r.add {
                let _ = write!(out, " +{} via {}", route.dest, vias(route));
            }
            for route in &r.remove {
                let _ = write!(out, " -{} via {}", route.dest, vias(route));
            }
            for route in &r.add6 {
                let _ = write!(out, " +{} via {}", route.dest, route.via);
            }
            for route in &r.remove6 {
                let _ = write!(out, " -{}", route.dest);
            }
            out.push('\n');
        }
        for f in &self.firewalls {
            let _ = write!(out, "~ firewall of {}:", f.router);
            if let Some((from, to)) = f.policy {
                let name = |p: crate::topology::Policy| format!("{p:?}").to_uppercase();
                let _ = write!(out, " policy {} -> {}", name(from), name(to));
            }
            for r in &f.added {
                let _ = write!(out, " +{r}");
            }
            for r in &f.removed {
                let _ = write!(out, " -{r}");
            }
            out.push('\n');
        }
        for c in &self.frr {
            let _ = match c {
                FrrChange::Start { router } => writeln!(out, "+ FRR in {router}"),
                FrrChange::Stop { router } => writeln!(out, "- FRR in {router}"),
                FrrChange::Restart { router } => {
                    writeln!(
                        out,
                        "~ FRR in {router}: restarted with its new configuration"
                    )
                }
            };
        }
        if self.hosts_files {
            out.push_str("~ hosts files of every node\n");
        }
        for c in &self.host {
            let _ = match c {
                HostChange::AddUplink => writeln!(out, "+ host: uplink, routes and NAT"),
                HostChange::RemoveUplink => writeln!(out, "- host: uplink, routes and NAT"),
                HostChange::Address { from, to } => {
                    writeln!(out, "~ host: uplink address {from} -> {to}")
                }
                HostChange::Routes { add, remove } => route_changes(&mut out, add, remove),
                HostChange::Routes6 { add, remove } => route_changes(&mut out, add, remove),
                HostChange::Nat => writeln!(out, "~ host: NAT table (sources, published ports)"),
            };
        }
        out
    }
}

/// A line of the host's route changes, of either family.
fn route_changes<N: std::fmt::Display, A: std::fmt::Display>(
    out: &mut String,
    add: &[(N, A)],
    remove: &[(N, A)],
) -> std::fmt::Result {
    let _ = write!(out, "~ host: routes");
    for (dest, via) in add {
        let _ = write!(out, " +{dest} via {via}");
    }
    for (dest, via) in remove {
        let _ = write!(out, " -{dest} via {via}");
    }
    writeln!(out)
}

/// What a node runs on: a change means making it anew.
fn substrate(node: &NodePlan) -> (NodeKind, bool, Option<&str>, super::Forwarder) {
    (
        node.kind,
        node.container,
        node.image.as_deref().filter(|_| node.container),
        node.forwarder,
    )
}

fn why_recreated(old: &NodePlan, new: &NodePlan) -> Option<String> {
    if old.kind != new.kind {
        Some(format!("{:?} -> {:?}", old.kind, new.kind).to_lowercase())
    } else if old.container != new.container {
        Some(if new.container {
            "namespace -> container".into()
        } else {
            "container -> namespace".into()
        })
    } else if old.forwarder != new.forwarder {
        // its sysctls are set when its namespace is made
        Some(format!(
            "forwarding {:?} -> {:?}",
            old.forwarder, new.forwarder
        ))
    } else if substrate(old) != substrate(new) {
        Some(format!(
            "image {} -> {}",
            old.image.as_deref().unwrap_or("none"),
            new.image.as_deref().unwrap_or("none")
        ))
    } else {
        None
    }
}

fn segment_name(segment: &Segment, members: usize) -> String {
    match segment {
        Segment::Empty => "empty".into(),
        Segment::PointToPoint => "veth pair".into(),
        Segment::Bridge { .. } => format!(
            "bridge, {members} member{}",
            if members == 1 { "" } else { "s" }
        ),
    }
}

/// What joins a link to its segment: a change means a new veth.
#[derive(PartialEq, Eq)]
enum Wire<'a> {
    /// The other end of the veth pair: (node, ifname, ifindex).
    Peer(&'a str, &'a str, u32),
    /// The bridge and the fabric port.
    Bridge(u32, &'a str, u32),
    None,
}

fn wire<'a>(plan: &'a Plan, link: &'a LinkPlan) -> Wire<'a> {
    match (&plan.subnets[link.subnet].segment, &link.fabric_port) {
        (Segment::Bridge { ifindex, .. }, Some(port)) => {
            Wire::Bridge(*ifindex, &port.ifname, port.ifindex)
        }
        (Segment::PointToPoint, _) => plan.peer_of(link).map_or(Wire::None, |peer| {
            Wire::Peer(&plan.nodes[peer.node].name, &peer.ifname, peer.ifindex)
        }),
        _ => Wire::None,
    }
}

/// A link's key: (node, subnet) names.
fn key<'a>(plan: &'a Plan, link: &LinkPlan) -> (&'a str, &'a str) {
    (&plan.nodes[link.node].name, &plan.subnets[link.subnet].name)
}

/// A route as the kernel sees it: its destination and every next hop.
/// What came and what went.
type AddedRemoved<T> = (Vec<T>, Vec<T>);

/// The routes of `new` that `old` lacks, and those of `old` that `new` lacks (compared by
/// destination and next hops), in either family.
fn routes_changed<N: Copy + Ord, A: Copy + Ord>(
    old: &[super::RoutePlan<N, A>],
    new: &[super::RoutePlan<N, A>],
) -> AddedRemoved<super::RoutePlan<N, A>> {
    let before: BTreeSet<_> = old.iter().map(route_key).collect();
    let after: BTreeSet<_> = new.iter().map(route_key).collect();
    let add = new
        .iter()
        .filter(|r| !before.contains(&route_key(r)))
        .cloned()
        .collect();
    let remove = old
        .iter()
        .filter(|r| !after.contains(&route_key(r)))
        .cloned()
        .collect();
    (add, remove)
}

fn route_key<N: Copy, A: Copy>(r: &super::RoutePlan<N, A>) -> (N, Vec<(A, &str)>) {
    (
        r.dest,
        r.nexthops().map(|(via, dev, _)| (via, dev)).collect(),
    )
}

/// The changes that turn the network of `old` into that of `new` (`None`: no network).
#[must_use]
pub fn diff(old: Option<&Plan>, new: Option<&Plan>) -> Diff {
    let empty = Plan::empty(old.or(new).map_or("", |p| p.id.as_str()));
    let old = old.unwrap_or(&empty);
    let new = new.unwrap_or(&empty);
    let mut d = Diff::default();

    // nodes
    let old_nodes: BTreeMap<&str, &NodePlan> =
        old.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let new_nodes: BTreeMap<&str, &NodePlan> =
        new.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut recreated: BTreeSet<&str> = BTreeSet::new();
    for n in &old.nodes {
        if !new_nodes.contains_key(n.name.as_str()) {
            d.nodes.push(NodeChange::Remove {
                node: n.name.clone(),
            });
        }
    }
    for n in &new.nodes {
        match old_nodes.get(n.name.as_str()) {
            None => d.nodes.push(NodeChange::Add {
                node: n.name.clone(),
                kind: n.kind,
                image: n.image.clone().filter(|_| n.container),
                links: new
                    .links_of(n)
                    .map(|l| (new.subnets[l.subnet].name.clone(), l.label_address()))
                    .collect(),
            }),
            Some(o) => {
                if let Some(why) = why_recreated(o, n) {
                    recreated.insert(n.name.as_str());
                    d.nodes.push(NodeChange::Recreate {
                        node: n.name.clone(),
                        why,
                    });
                }
            }
        }
    }
    let built = |name: &str| !old_nodes.contains_key(name) || recreated.contains(name);

    // subnets
    let old_subnets: BTreeMap<&str, usize> = old
        .subnets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let new_subnets: BTreeMap<&str, usize> = new
        .subnets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for s in &old.subnets {
        if !new_subnets.contains_key(s.name.as_str()) {
            d.subnets.push(SubnetChange::Remove {
                subnet: s.name.clone(),
            });
        }
    }
    for s in &new.subnets {
        let to = segment_name(&s.segment, s.links.len());
        match old_subnets.get(s.name.as_str()) {
            None => d.subnets.push(SubnetChange::Add {
                subnet: s.name.clone(),
                segment: to,
            }),
            Some(&i) => {
                let o = &old.subnets[i];
                if o.segment != s.segment {
                    d.subnets.push(SubnetChange::Segment {
                        subnet: s.name.clone(),
                        from: segment_name(&o.segment, o.links.len()),
                        to,
                    });
                }
                if o.impair != s.impair {
                    d.subnets.push(SubnetChange::Impair {
                        subnet: s.name.clone(),
                        from: o.impair,
                        to: s.impair,
                    });
                }
            }
        }
    }

    // links
    let old_links: BTreeMap<(&str, &str), &LinkPlan> =
        old.links.iter().map(|l| (key(old, l), l)).collect();
    let new_links: BTreeMap<(&str, &str), &LinkPlan> =
        new.links.iter().map(|l| (key(new, l), l)).collect();
    for k in old_links.keys() {
        if !new_links.contains_key(k) && !recreated.contains(k.0) && new_nodes.contains_key(k.0) {
            d.links.push(LinkChange::Remove {
                node: k.0.to_owned(),
                subnet: k.1.to_owned(),
            });
        }
    }
    for (k, l) in &new_links {
        if built(k.0) {
            continue;
        }
        let Some(o) = old_links.get(k) else {
            d.links.push(LinkChange::Add {
                node: k.0.to_owned(),
                subnet: k.1.to_owned(),
                address: l.label_address(),
            });
            continue;
        };
        let peer_rebuilt = new
            .peer_of(l)
            .is_some_and(|p| built(&new.nodes[p.node].name));
        let why = if wire(old, o) != wire(new, l) {
            Some(
                match (
                    &old.subnets[o.subnet].segment,
                    &new.subnets[l.subnet].segment,
                ) {
                    (Segment::PointToPoint, Segment::Bridge { .. }) => {
                        "veth pair -> bridge".to_owned()
                    }
                    (Segment::Bridge { .. }, Segment::PointToPoint) => {
                        "bridge -> veth pair".to_owned()
                    }
                    _ => "its peer changed".to_owned(),
                },
            )
        } else if peer_rebuilt {
            Some("its peer is recreated".to_owned())
        } else {
            None
        };
        if let Some(why) = why {
            d.links.push(LinkChange::Rewire {
                node: k.0.to_owned(),
                subnet: k.1.to_owned(),
                why,
            });
        }
        if o.address != l.address || o.prefix_len != l.prefix_len {
            d.links.push(LinkChange::Address {
                node: k.0.to_owned(),
                subnet: k.1.to_owned(),
                from: o.address,
                to: l.address,
            });
        }
        let six = |p: &Plan, l: &super::LinkPlan| {
            Some((l.address6?, p.subnets[l.subnet].cidr6?.prefix_len()))
        };
        if six(old, o) != six(new, l) {
            d.links.push(LinkChange::Address6 {
                node: k.0.to_owned(),
                subnet: k.1.to_owned(),
                from: six(old, o),
                to: six(new, l),
            });
        }
        if o.impair != l.impair {
            d.links.push(LinkChange::Impair {
                node: k.0.to_owned(),
                subnet: k.1.to_owned(),
                from: o.impair,
                to: l.impair,
            });
        }
        if o.down != l.down {
            d.links.push(LinkChange::State {
                node: k.0.to_owned(),
                subnet: k.1.to_owned(),
                down: l.down,
            });
        }
    }

    // routes, firewalls, FRR of nodes that stay
    for n in &new.nodes {
        let Some(o) = old_nodes.get(n.name.as_str()) else {
            continue;
        };
        if recreated.contains(n.name.as_str()) {
            continue;
        }
        let (add, remove) = routes_changed(&o.routes, &n.routes);
        let (add6, remove6) = routes_changed(&o.routes6, &n.routes6);
        if !add.is_empty() || !remove.is_empty() || !add6.is_empty() || !remove6.is_empty() {
            d.routes.push(RouteChange {
                node: n.name.clone(),
                add,
                remove,
                add6,
                remove6,
            });
        }
        if let (Some(fo), Some(fn_)) = (&o.firewall, &n.firewall)
            && fo != fn_
        {
            let rule = |r: &super::RulePlan| {
                (
                    r.action,
                    r.src.clone(),
                    r.dst.clone(),
                    r.src6.clone(),
                    r.dst6.clone(),
                    r.proto,
                    r.dport,
                )
            };
            let before: BTreeSet<_> = fo.rules.iter().map(rule).collect();
            let after: BTreeSet<_> = fn_.rules.iter().map(rule).collect();
            let change = FirewallChange {
                router: n.name.clone(),
                policy: (fo.policy != fn_.policy).then_some((fo.policy, fn_.policy)),
                added: fn_
                    .rules
                    .iter()
                    .filter(|r| !before.contains(&rule(r)))
                    .map(|r| r.origin.clone())
                    .collect(),
                removed: fo
                    .rules
                    .iter()
                    .filter(|r| !after.contains(&rule(r)))
                    .map(|r| r.origin.clone())
                    .collect(),
            };
            // rules that only moved in the file change nothing the datapath does
            if change.policy.is_some() || !change.added.is_empty() || !change.removed.is_empty() {
                d.firewalls.push(change);
            }
        }
        match (&o.frr, &n.frr) {
            (None, Some(_)) => d.frr.push(FrrChange::Start {
                router: n.name.clone(),
            }),
            (Some(_), None) => d.frr.push(FrrChange::Stop {
                router: n.name.clone(),
            }),
            (Some(a), Some(b)) if a != b => d.frr.push(FrrChange::Restart {
                router: n.name.clone(),
            }),
            _ => {}
        }
    }

    d.hosts_files = new.update_hosts && (!old.update_hosts || old.hosts_file() != new.hosts_file());

    // the host's side
    match (&old.uplink, &new.uplink) {
        (None, Some(_)) => d.host.push(HostChange::AddUplink),
        (Some(_), None) => d.host.push(HostChange::RemoveUplink),
        (Some(o), Some(n)) => {
            if o.host_address != n.host_address {
                d.host.push(HostChange::Address {
                    from: o.host_address,
                    to: n.host_address,
                });
            }
            let (add, remove) = changed(&o.host_routes, &n.host_routes);
            if !add.is_empty() || !remove.is_empty() {
                d.host.push(HostChange::Routes { add, remove });
            }
            let (add, remove) = changed(&o.host_routes6, &n.host_routes6);
            if !add.is_empty() || !remove.is_empty() {
                d.host.push(HostChange::Routes6 { add, remove });
            }
            if o.nat_sources != n.nat_sources
                || o.nat_sources6 != n.nat_sources6
                || o.published != n.published
            {
                d.host.push(HostChange::Nat);
            }
        }
        (None, None) => {}
    }
    d
}

/// What `after` adds to `before`, and what it takes away, in order.
fn changed<T: Copy + Ord>(before: &[T], after: &[T]) -> (Vec<T>, Vec<T>) {
    let old: BTreeSet<T> = before.iter().copied().collect();
    let new: BTreeSet<T> = after.iter().copied().collect();
    (
        after.iter().filter(|r| !old.contains(r)).copied().collect(),
        before
            .iter()
            .filter(|r| !new.contains(r))
            .copied()
            .collect(),
    )
}

impl Plan {
    /// The plan of no network at all (the start of `up`, the end of `down`).
    #[must_use]
    pub fn empty(id: &str) -> Plan {
        Plan {
            name: String::new(),
            id: id.to_owned(),
            datapath: super::Datapath::default(),
            runtime: super::Runtime::default(),
            routing: crate::topology::Routing::default(),
            ecmp: false,
            update_hosts: false,
            fabric_netns: super::naming::fabric_netns(id),
            subnets: Vec::new(),
            nodes: Vec::new(),
            links: Vec::new(),
            uplink: None,
            machine: None,
            ipv6: false,
            mtu: crate::netlink::LINK_MTU,
            warnings: Vec::new(),
        }
    }
}
