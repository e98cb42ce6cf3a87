//! The BPF map entries of a plan: pure, so what the datapath loads can be tested without a
//! kernel.
//!
//! - Interfaces: every node interface (counting; on eBPF routers also forwarding, with the
//!   router's firewall flags) and every fabric port (counting what the node sends).
//! - Routes, per eBPF router: connected subnets, the router's own addresses and its subnets'
//!   broadcast addresses (delivered to the kernel), then the plan's routes; for a router
//!   whose own packets go through `lo`, its addresses under the pseudo-router `OWNERS`, and
//!   `lo`'s interface entry.
//! - Firewall, per router with rules or a DROP policy: every prefix its rules name becomes a
//!   class; each rule is expanded to the classes inside its prefixes (an address belongs to
//!   the most specific class containing it, so a rule on `10.0.0.0/8` must also be found from
//!   the class of `10.0.0.3/32` when both are named). Where two rules land on the same key,
//!   drop beats accept, then the earlier rule wins.

use std::collections::HashMap;

use dvnet_common::{
    IFACE_DELAY_RETURN, IFACE_FABRIC_PORT, IFACE_FIB_FALLBACK, IFACE_FIREWALL, IFACE_FORWARD,
    IFACE_FW_DST_ANY, IFACE_FW_SRC_ANY, IFACE_FW_TRACK, IFACE_IMPAIRED, IFACE_OWN,
    IFACE_POLICY_DROP, IMPAIR_DELAY, IMPAIR_SEEDED, IfaceInfo, ImpairEntry, LO_IFINDEX, NO_LINK,
    NO_ROUTER, NexthopKey, OWNERS, PORT_ANY, PROTO_ANY, PROTO_DROP_PAIR, ROUTE_CONNECTED,
    ROUTE_DOWN, ROUTE_LOCAL, ROUTE_PEER, Route, RuleKey, RuleVerdict, VERDICT_ACCEPT, VERDICT_DROP,
    WILDCARD, threshold,
};
use dvnet_common::{IPPROTO_ICMP, IPPROTO_ICMPV6, NexthopKey6, Route6};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::plan::{Action, Forwarder, Hook, LinkPlan, NodeKind, NodePlan, Plan};
use crate::topology::Policy;

/// Rule expansions beyond this are refused (nested prefixes multiply).
pub const MAX_RULE_ENTRIES: usize = 4_000_000;

#[derive(Debug, thiserror::Error)]
pub enum EntriesError {
    #[error(
        "router \"{router}\": its firewall rules expand to {entries} map entries (more than {MAX_RULE_ENTRIES}): \
         many rules name prefixes nested inside other rules' prefixes; merge them, or use `--datapath kernel`"
    )]
    TooManyRules { router: String, entries: usize },
}

/// A rule's slot in `DV_RULE_HITS`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleSlot {
    /// Index into `Plan::nodes` of the router.
    pub router: usize,
    /// Index into `DV_RULE_HITS`.
    pub slot: u32,
    pub origin: String,
}

/// Everything the maps of a network hold at `up`.
#[derive(Clone, Debug, Default)]
pub struct MapEntries {
    pub ifaces: Vec<(u32, IfaceInfo)>,
    /// ifindex → impairments of what arrives there.
    pub impairs: Vec<(u32, ImpairEntry)>,
    /// (router id, destination) → route.
    pub routes: Vec<((u32, Ipv4Net), Route)>,
    /// The further next hops of equal-cost routes.
    pub nexthops: Vec<(NexthopKey, Route)>,
    /// (router id, prefix) → class.
    pub classes: Vec<((u32, Ipv4Net), u32)>,
    /// (router id, IPv6 destination) → route.
    pub routes6: Vec<((u32, Ipv6Net), Route6)>,
    /// (router id, IPv6 prefix) → class.
    pub classes6: Vec<((u32, Ipv6Net), u32)>,
    /// The further next hops of equal-cost IPv6 routes.
    pub nexthops6: Vec<(NexthopKey6, Route6)>,
    /// ifindex → the IPv6 source of the ICMPv6 errors a router sends from there.
    pub addrs6: Vec<(u32, [u8; 16])>,
    pub rules: Vec<(RuleKey, RuleVerdict)>,
    /// The rules and their `DV_RULE_HITS` slots.
    pub rule_slots: Vec<RuleSlot>,
    /// Whether any router filters (the connection map is needed).
    pub firewalled: bool,
}

fn be(addr: std::net::Ipv4Addr) -> u32 {
    u32::from(addr).to_be()
}

/// The map entries of `plan`.
///
/// # Errors
/// A router's rules expand to too many entries.
pub fn entries(plan: &Plan) -> Result<MapEntries, EntriesError> {
    let mut out = entries_of(plan, 0..plan.nodes.len())?;
    out.ifaces.extend(lo_entry(plan));
    Ok(out)
}

/// `lo`'s entry, one for the whole network (`lo` is interface 1 in every namespace), while
/// some router's own packets go through it ([`crate::plan::NodePlan::own_route`]): the
/// router is found from each packet's source address.
fn lo_entry(plan: &Plan) -> Option<(u32, IfaceInfo)> {
    plan.nodes.iter().any(|n| n.own_route).then_some((
        LO_IFINDEX,
        IfaceInfo {
            link: NO_LINK,
            router: NO_ROUTER,
            flags: IFACE_FORWARD | IFACE_OWN,
            addr: 0,
            target: 0,
        },
    ))
}

/// How many entries each map needs for a plan.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub ifaces: usize,
    pub impairs: usize,
    /// At most this many (a route may share its key with a connected one).
    pub routes: usize,
    /// Further next hops of equal-cost routes.
    pub nexthops: usize,
    pub classes: usize,
    pub rules: usize,
    /// One past the highest rule slot.
    pub rule_slots: usize,
    /// At most this many IPv6 routes (a connected and a local one per interface, then the
    /// plan's).
    pub routes6: usize,
    pub classes6: usize,
    /// Further next hops of equal-cost IPv6 routes.
    pub nexthops6: usize,
}

/// How many entries each map needs for `plan`, without making them all: interfaces and
/// routes are counted, firewalls expanded (they are few).
///
/// # Errors
/// A router's rules expand to too many entries.
pub fn counts(plan: &Plan) -> Result<Counts, EntriesError> {
    let mut c = Counts::default();
    let mut firewalled = Vec::new();
    for (n, node) in plan.nodes.iter().enumerate() {
        let links = node.links.len();
        for l in plan.links_of(node) {
            c.ifaces += 1 + usize::from(l.fabric_port.is_some());
            for hook in [&l.into_node, &l.from_node] {
                c.impairs += usize::from(!hook.is_none());
                c.ifaces += usize::from(hook.delay.is_some());
            }
        }
        if matches!(node.forwarder, Forwarder::Program { .. }) {
            // a connected route and two local ones per interface (and its owner entry),
            // then the plan's
            c.routes += 3 * links + node.routes.len();
            if node.own_route {
                c.routes += links;
                c.ifaces += 1;
            }
            c.nexthops += node.routes.iter().map(|r| r.ecmp.len()).sum::<usize>();
            if plan.ipv6 {
                c.routes6 += 2 * links + node.routes6.len();
                c.nexthops6 += node.routes6.iter().map(|r| r.ecmp.len()).sum::<usize>();
            }
            if node
                .firewall
                .as_ref()
                .is_some_and(crate::plan::FirewallPlan::active)
            {
                firewalled.push(n);
            }
        }
    }
    let fw = entries_of(plan, firewalled)?;
    c.classes = fw.classes.len();
    c.classes6 = fw.classes6.len();
    c.rules = fw.rules.len();
    c.rule_slots = fw
        .rule_slots
        .iter()
        .map(|r| r.slot as usize + 1)
        .max()
        .unwrap_or(0);
    Ok(c)
}

/// The map entries of the nodes `nodes` (positions in `plan.nodes`): what an edit compares
/// for the nodes it touches.
///
/// # Errors
/// A router's rules expand to too many entries.
pub fn entries_of(
    plan: &Plan,
    nodes: impl IntoIterator<Item = usize>,
) -> Result<MapEntries, EntriesError> {
    let mut out = MapEntries::default();
    // every router's address, sorted: made once, for the first firewall that asks
    let mut router_addrs: Option<Vec<u32>> = None;
    for n in nodes {
        let node = &plan.nodes[n];
        let router = node.kind == NodeKind::Router;
        let mut flags = 0;
        let program = matches!(node.forwarder, Forwarder::Program { .. });
        if let Forwarder::Program { fib_fallback } = node.forwarder {
            flags |= IFACE_FORWARD;
            if fib_fallback {
                // routes come from a routing daemon: a route-map miss asks the kernel's FIB
                flags |= IFACE_FIB_FALLBACK;
            }
            if let Some(fw) = &node.firewall
                && fw.active()
            {
                flags |= IFACE_FIREWALL;
                if fw.policy == Policy::Drop {
                    flags |= IFACE_POLICY_DROP;
                }
                let routers = router_addrs.get_or_insert_with(|| router_addresses(plan));
                if tracks_every_flow(plan, fw, routers) {
                    flags |= IFACE_FW_TRACK;
                }
            }
        }
        let id = node.id;
        if flags & IFACE_FIREWALL != 0 {
            out.firewalled = true;
            let first = out.rules.len();
            firewall(plan, n, &mut out)?;
            // which wildcard lookups can hit at all
            for (k, _) in &out.rules[first..] {
                if k.src_class == WILDCARD {
                    flags |= IFACE_FW_SRC_ANY;
                }
                if k.dst_class == WILDCARD {
                    flags |= IFACE_FW_DST_ANY;
                }
            }
        }
        // the source of the ICMP errors sent from an interface: its IPv4 address, or on an
        // IPv6-only subnet the node's first one (as the kernel would pick)
        let first_address = plan
            .links_of(node)
            .find_map(|l| l.address)
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        for link in plan.links_of(node) {
            let impaired = |hook: &Hook| {
                if hook.is_none() { 0 } else { IFACE_IMPAIRED }
            };
            out.ifaces.push((
                link.ifindex,
                IfaceInfo {
                    link: link.id,
                    router: if router { id } else { NO_ROUTER },
                    flags: flags | impaired(&link.into_node),
                    addr: be(link.address.unwrap_or(first_address)),
                    target: 0,
                },
            ));
            let mut hooks = vec![(link.ifindex, &link.into_node)];
            if let Some(port) = &link.fabric_port {
                out.ifaces.push((
                    port.ifindex,
                    IfaceInfo {
                        link: link.id,
                        router: NO_ROUTER,
                        flags: IFACE_FABRIC_PORT | impaired(&link.from_node),
                        addr: 0,
                        target: 0,
                    },
                ));
                hooks.push((port.ifindex, &link.from_node));
            }
            for (ifindex, hook) in hooks {
                if hook.is_none() {
                    continue;
                }
                out.impairs.push((ifindex, impair_entry(hook)));
                if let Some(d) = &hook.delay {
                    out.ifaces.push((
                        d.ifindex,
                        IfaceInfo {
                            link: link.id,
                            router: NO_ROUTER,
                            flags: IFACE_DELAY_RETURN,
                            addr: 0,
                            target: ifindex,
                        },
                    ));
                }
            }
        }
        if program {
            routes(plan, n, &mut out.routes, &mut out.nexthops);
            if plan.ipv6 {
                routes6(plan, n, &mut out.routes6, &mut out.nexthops6);
                addresses6(plan, n, &mut out.addrs6);
            }
        }
    }
    Ok(out)
}

/// Whether a router's firewall must track every flow it accepts: its policy drops (a reply
/// passes only as part of a flow), or a drop rule could meet an ICMP error about a flow —
/// one sent by a router on the way (a drop rule from anywhere, or from a prefix holding a
/// router's address) or from outside (outbound access). Else a flow is tracked only when a
/// drop rule could meet its replies (see `PROTO_DROP_PAIR`). `routers`: every router
/// address of the plan, sorted ([`router_addresses`]).
fn tracks_every_flow(plan: &Plan, fw: &crate::plan::FirewallPlan, routers: &[u32]) -> bool {
    if fw.policy == Policy::Drop || plan.uplink.is_some() {
        return true;
    }
    fw.rules
        .iter()
        .filter(|r| r.action == Action::Drop)
        .flat_map(|r| &r.src)
        .any(|p| {
            let first = routers.partition_point(|&a| a < u32::from(p.network()));
            p.prefix_len() == 0
                || routers
                    .get(first)
                    .is_some_and(|&a| a <= u32::from(p.broadcast()))
        })
}

/// Every address of every router of `plan`, sorted.
fn router_addresses(plan: &Plan) -> Vec<u32> {
    let mut addrs: Vec<u32> = plan
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Router)
        .flat_map(|n| plan.links_of(n).filter_map(|l| l.address.map(u32::from)))
        .collect();
    addrs.sort_unstable();
    addrs
}

/// The entry of an impaired interface.
#[must_use]
pub fn impair_entry(hook: &Hook) -> ImpairEntry {
    let i = &hook.impair;
    let mut flags = 0;
    if i.seed.is_some() {
        flags |= IMPAIR_SEEDED;
    }
    if hook.delay.is_some() {
        flags |= IMPAIR_DELAY;
    }
    ImpairEntry {
        loss: i.loss_ppm.map_or(0, threshold),
        corrupt: i.corrupt_ppm.map_or(0, threshold),
        duplicate: i.duplicate_ppm.map_or(0, threshold),
        flags,
        seed: i.seed.unwrap_or(0),
        seq: 0,
        delay_ifindex: hook.delay.as_ref().map_or(0, |d| d.ifindex),
        pad: 0,
    }
}

/// Whether a packet sent on `link` toward `via` (an IPv4 address, or an IPv6 link-local
/// one) cannot get there: the link is down, or the other end of its veth pair, or (on a
/// bridge) the next hop's own link.
fn blocked(plan: &Plan, link: &LinkPlan, via: Option<std::net::IpAddr>) -> bool {
    if link.down || plan.peer_of(link).is_some_and(|p| p.down) {
        return true;
    }
    via.is_some_and(|via| {
        plan.subnets[link.subnet]
            .links
            .iter()
            .map(|&l| &plan.links[l as usize])
            .any(|l| l.down && is_at(l, via))
    })
}

/// Whether `via` is `link`'s IPv4 address or its IPv6 link-local one.
fn is_at(link: &LinkPlan, via: std::net::IpAddr) -> bool {
    match via {
        std::net::IpAddr::V4(v4) => link.address == Some(v4),
        std::net::IpAddr::V6(v6) => link.link_local() == v6,
    }
}

/// The planned routes of a router that belong in its route map: all of them, but none for a
/// router whose routing daemon fills the kernel's FIB, which a map miss asks. Its planned
/// routes (a border router's default toward the uplink) are kernel routes beside the
/// daemon's, where the longest prefix wins; in the map, a default would win over every
/// destination the daemon learnt.
fn planned<'a, T>(node: &NodePlan, routes: &'a [T]) -> &'a [T] {
    if node.forwarder == (Forwarder::Program { fib_fallback: true }) {
        &[]
    } else {
        routes
    }
}

/// A router's IPv6 routes: its connected IPv6 subnets, its own global addresses (for the
/// kernel), then the plan's IPv6 routes through their first next hop that can be reached.
fn routes6(
    plan: &Plan,
    n: usize,
    out: &mut Vec<((u32, Ipv6Net), Route6)>,
    nexthops: &mut Vec<(NexthopKey6, Route6)>,
) {
    let node = &plan.nodes[n];
    let id = node.id;
    let route = |link: &LinkPlan, via: Option<std::net::Ipv6Addr>, flags: u32| {
        let mut r = Route6 {
            ifindex: link.ifindex,
            flags,
            link: link.id,
            nexthop: via.map_or([0; 16], |v| v.octets()),
            dmac: [0; 6],
            smac: [0; 6],
            paths: 0,
            group: 0,
        };
        // to the other end of a point-to-point link: the MACs are known
        if flags & ROUTE_LOCAL == 0
            && let Some(peer) = plan.peer_of(link)
            && via.is_none_or(|v| peer.link_local() == v)
        {
            r.flags |= ROUTE_PEER;
            r.dmac = peer.mac;
            r.smac = link.mac;
        }
        r
    };
    for link in plan.links_of(node) {
        let (Some(cidr6), Some(address6)) = (plan.subnets[link.subnet].cidr6, link.address6) else {
            continue;
        };
        let mut connected = route(link, None, ROUTE_CONNECTED);
        if blocked(plan, link, None) {
            connected.flags |= ROUTE_DOWN;
        }
        out.push(((id, cidr6), connected));
        out.push((
            (id, Ipv6Net::from(address6)),
            route(link, None, ROUTE_LOCAL),
        ));
    }
    for (group, r) in (1..).zip(planned(node, &node.routes6)) {
        let hops: Vec<(std::net::Ipv6Addr, &LinkPlan)> = r
            .nexthops()
            .map(|(via, _, l)| (via, &plan.links[l as usize]))
            .collect();
        // of equal-cost next hops, those that can be reached (see `routes`)
        let mut live: Vec<Route6> = hops
            .iter()
            .filter(|(via, link)| !blocked(plan, link, Some((*via).into())))
            .map(|&(via, link)| route(link, Some(via), 0))
            .collect();
        if live.is_empty() {
            let (via, link) = hops[0];
            let mut dead = route(link, Some(via), 0);
            dead.flags |= ROUTE_DOWN;
            live.push(dead);
        }
        live.truncate(dvnet_common::MAX_PATHS);
        let paths = u32::try_from(live.len()).expect("at most MAX_PATHS");
        for (index, hop) in (0..).zip(live.iter_mut()) {
            hop.paths = paths;
            hop.group = group;
            if index > 0 {
                let key = NexthopKey6 {
                    router: id,
                    group,
                    index,
                };
                nexthops.push((key, *hop));
            }
        }
        out.push(((id, r.dest), live[0]));
    }
}

/// The source of the ICMPv6 errors an eBPF router sends from each of its interfaces: the
/// interface's global address, else the router's first one (the kernel's choice for a
/// destination of global scope). A router without any global address sends none (its
/// link-local address could not leave the link: the kernel sends none either).
fn addresses6(plan: &Plan, n: usize, out: &mut Vec<(u32, [u8; 16])>) {
    let node = &plan.nodes[n];
    let Some(first) = plan.links_of(node).find_map(|l| l.address6) else {
        return;
    };
    for link in plan.links_of(node) {
        out.push((link.ifindex, link.address6.unwrap_or(first).octets()));
    }
}

fn routes(
    plan: &Plan,
    n: usize,
    out: &mut Vec<((u32, Ipv4Net), Route)>,
    nexthops: &mut Vec<(NexthopKey, Route)>,
) {
    let node = &plan.nodes[n];
    let id = node.id;
    // On a point-to-point link the next hop is the other end, whose MAC dvnet chose: the
    // program rewrites the MACs and hands the packet to the peer directly.
    let route = |link: &LinkPlan, nexthop: u32, flags: u32| {
        let mut r = Route {
            ifindex: link.ifindex,
            nexthop,
            flags,
            link: link.id,
            dmac: [0; 6],
            smac: [0; 6],
            paths: 0,
            plen: 0,
        };
        if flags & ROUTE_LOCAL == 0
            && let Some(peer) = plan.peer_of(link)
        {
            r.flags |= ROUTE_PEER;
            r.dmac = peer.mac;
            r.smac = link.mac;
        }
        r
    };
    for link in plan.links_of(node) {
        // (an IPv6-only subnet has no IPv4 routes)
        let (Some(cidr), Some(address)) = (plan.subnets[link.subnet].cidr, link.address) else {
            continue;
        };
        let mut connected = route(link, 0, ROUTE_CONNECTED);
        if blocked(plan, link, None) {
            connected.flags |= ROUTE_DOWN;
        }
        out.push(((id, cidr), connected));
        for local in [address, cidr.broadcast()] {
            out.push(((id, Ipv4Net::from(local)), route(link, 0, ROUTE_LOCAL)));
        }
        if node.own_route {
            // whose the packets sent from this address through `lo` are
            let owner = Route {
                link: id,
                ..Route::default()
            };
            out.push(((OWNERS, Ipv4Net::from(address)), owner));
        }
    }
    for r in planned(node, &node.routes) {
        let entry = |via: std::net::Ipv4Addr, link: &LinkPlan| {
            // a gateway route through the uplink goes to the host, not to a node: no known MAC
            let to_peer = plan.peer_of(link).is_some_and(|p| p.address == Some(via));
            let mut entry = route(link, be(via), 0);
            if !to_peer {
                entry.flags &= !ROUTE_PEER;
            }
            entry
        };
        // Of equal-cost next hops, those that cannot be reached are left out (as a router
        // drops a dead next hop); with none left, the route drops, counted as link-down.
        let mut hops = r
            .nexthops()
            .map(|(via, _, l)| (via, &plan.links[l as usize]));
        let first = hops.next().expect("a route has a next hop");
        let mut live: Vec<Route> = std::iter::once(first)
            .chain(hops)
            .filter(|&(via, link)| !blocked(plan, link, Some(via.into())))
            .map(|(via, link)| entry(via, link))
            .collect();
        if live.is_empty() {
            let mut dead = entry(first.0, first.1);
            dead.flags |= ROUTE_DOWN;
            live.push(dead);
        }
        live.truncate(dvnet_common::MAX_PATHS);
        let paths = u16::try_from(live.len()).expect("at most MAX_PATHS");
        let prefix_len = u16::from(r.dest.prefix_len());
        for (index, hop) in live.iter_mut().enumerate() {
            hop.paths = paths;
            hop.plen = prefix_len;
            if index > 0 {
                let key = NexthopKey {
                    router: id,
                    addr: be(r.dest.network()),
                    plen: u32::from(prefix_len),
                    index: u32::try_from(index).expect("at most MAX_PATHS"),
                };
                nexthops.push((key, *hop));
            }
        }
        out.push(((id, r.dest), live[0]));
    }
}

fn firewall(plan: &Plan, n: usize, out: &mut MapEntries) -> Result<(), EntriesError> {
    let node = &plan.nodes[n];
    let Some(fw) = &node.firewall else {
        return Ok(());
    };
    let id = node.id;

    // Classes: every prefix named, in either family, sorted so that each prefix is followed
    // by the prefixes inside it (IPv4 first, then network ascending, shorter first).
    let mut prefixes: Vec<IpNet> = fw
        .rules
        .iter()
        .flat_map(|r| {
            let v4 = r.src.iter().chain(&r.dst).map(|&p| IpNet::from(p));
            let v6 = r.src6.iter().chain(&r.dst6).map(|&p| IpNet::from(p));
            v4.chain(v6)
        })
        .filter(|p| p.prefix_len() > 0)
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    // numbered per router (keys carry the router): an edit of one router's rules renumbers
    // no other router's classes
    let first_class = 1;
    let class_of: HashMap<IpNet, usize> =
        prefixes.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    for (i, p) in prefixes.iter().enumerate() {
        let class = first_class + u32::try_from(i).expect("fewer than 2^32 classes");
        match p {
            IpNet::V4(p) => out.classes.push(((id, *p), class)),
            IpNet::V6(p) => out.classes6.push(((id, *p), class)),
        }
    }
    // The classes inside a prefix: itself and the run of prefixes after it that it contains.
    let inside = |p: &IpNet| -> Vec<u32> {
        let start = class_of[p];
        let end = prefixes[start..]
            .iter()
            .take_while(|q| p.contains(*q))
            .count()
            + start;
        (start..end)
            .map(|i| first_class + u32::try_from(i).expect("fewer than 2^32 classes"))
            .collect()
    };
    let expand = |side: Vec<IpNet>| -> Vec<u32> {
        if side.iter().any(|p| p.prefix_len() == 0) {
            return vec![WILDCARD];
        }
        let mut v: Vec<u32> = side.iter().flat_map(inside).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let v4 = |side: &[Ipv4Net]| expand(side.iter().map(|&p| p.into()).collect());
    let v6 = |side: &[ipnet::Ipv6Net]| expand(side.iter().map(|&p| p.into()).collect());

    let mut keys: HashMap<RuleKey, RuleVerdict> = HashMap::new();
    for rule in &fw.rules {
        let slot = rule.slot;
        out.rule_slots.push(RuleSlot {
            router: n,
            slot,
            origin: rule.origin.clone(),
        });
        let verdict = match rule.action {
            Action::Accept => VERDICT_ACCEPT,
            Action::Drop => VERDICT_DROP,
        };
        // the rule in each family it matches in: its IPv4 sides, then its IPv6 ones (where
        // ICMP is ICMPv6)
        let families = [
            (v4(&rule.src), v4(&rule.dst), rule.proto),
            (
                v6(&rule.src6),
                v6(&rule.dst6),
                rule.proto
                    .map(|p| if p == IPPROTO_ICMP { IPPROTO_ICMPV6 } else { p }),
            ),
        ];
        let dport = rule.dport.unwrap_or(PORT_ANY);
        for (srcs, dsts, proto) in families {
            if keys.len() + srcs.len() * dsts.len() > MAX_RULE_ENTRIES {
                return Err(EntriesError::TooManyRules {
                    router: node.name.clone(),
                    entries: keys.len() + srcs.len() * dsts.len(),
                });
            }
            let proto = proto.map_or(PROTO_ANY, u16::from);
            for &s in &srcs {
                for &d in &dsts {
                    let key = RuleKey {
                        router: id,
                        src_class: s,
                        dst_class: d,
                        proto,
                        dport,
                    };
                    let new = RuleVerdict {
                        verdict,
                        rule: slot,
                    };
                    keys.entry(key)
                        .and_modify(|old| {
                            // drop beats accept; then the earlier rule
                            if (new.verdict, std::cmp::Reverse(new.rule))
                                > (old.verdict, std::cmp::Reverse(old.rule))
                            {
                                *old = new;
                            }
                        })
                        .or_insert(new);
                }
            }
        }
    }
    // markers of the class pairs some drop rule covers: a new flow whose replies meet none
    // needs no tracking
    let pairs: Vec<(RuleKey, RuleVerdict)> = keys
        .iter()
        .filter(|(_, v)| v.verdict == VERDICT_DROP)
        .map(|(k, v)| {
            let pair = RuleKey {
                proto: PROTO_DROP_PAIR,
                dport: PORT_ANY,
                ..*k
            };
            (pair, *v)
        })
        .collect();
    for (pair, v) in pairs {
        keys.entry(pair)
            .and_modify(|old| old.rule = old.rule.min(v.rule))
            .or_insert(v);
    }
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort_by_key(|(k, _)| (k.router, k.src_class, k.dst_class, k.proto, k.dport));
    out.rules.extend(keys);
    Ok(())
}

/// The writes that turn one map's entries into another's: keys to insert or overwrite, and
/// keys to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta<K, V> {
    pub put: Vec<(K, V)>,
    pub delete: Vec<K>,
}

impl<K, V> Default for Delta<K, V> {
    fn default() -> Self {
        Delta {
            put: Vec::new(),
            delete: Vec::new(),
        }
    }
}

impl<K, V> Delta<K, V> {
    /// How many keys change.
    #[must_use]
    pub fn len(&self) -> usize {
        self.put.len() + self.delete.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn delta<K: Clone + Eq + std::hash::Hash, V: Clone + PartialEq>(
    old: &[(K, V)],
    new: &[(K, V)],
) -> Delta<K, V> {
    let before: HashMap<&K, &V> = old.iter().map(|(k, v)| (k, v)).collect();
    let after: HashMap<&K, &V> = new.iter().map(|(k, v)| (k, v)).collect();
    Delta {
        put: new
            .iter()
            .filter(|(k, v)| before.get(k) != Some(&v))
            .cloned()
            .collect(),
        delete: old
            .iter()
            .filter(|(k, _)| !after.contains_key(k))
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

/// What changes in every map between two plans' entries: only these keys are written.
#[derive(Clone, Debug, Default)]
pub struct EntriesDiff {
    pub ifaces: Delta<u32, IfaceInfo>,
    pub impairs: Delta<u32, ImpairEntry>,
    pub routes: Delta<(u32, Ipv4Net), Route>,
    pub nexthops: Delta<NexthopKey, Route>,
    pub classes: Delta<(u32, Ipv4Net), u32>,
    pub rules: Delta<RuleKey, RuleVerdict>,
    pub routes6: Delta<(u32, Ipv6Net), Route6>,
    pub nexthops6: Delta<NexthopKey6, Route6>,
    pub classes6: Delta<(u32, Ipv6Net), u32>,
    pub addrs6: Delta<u32, [u8; 16]>,
    /// Counter slots of links and rules that are new: zeroed before use.
    pub fresh_links: Vec<u32>,
    pub fresh_rules: Vec<u32>,
    /// Routers that are gone: their tracked flows are forgotten.
    pub gone_routers: Vec<u32>,
}

impl EntriesDiff {
    /// Entries written or deleted, in all.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ifaces.len()
            + self.impairs.len()
            + self.routes.len()
            + self.nexthops.len()
            + self.classes.len()
            + self.rules.len()
            + self.routes6.len()
            + self.nexthops6.len()
            + self.classes6.len()
            + self.addrs6.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The writes a router needs before it starts sending its own packets through `lo`
    /// (`lo`'s entry, its owner entries): made before the kernel routes go, so that no packet
    /// of its own meets `lo` unrouted. New keys only, harmless before.
    #[must_use]
    pub fn own_route_puts(&self) -> EntriesDiff {
        let mut early = EntriesDiff::default();
        early.ifaces.put = (self.ifaces.put.iter())
            .filter(|(k, _)| *k == LO_IFINDEX)
            .copied()
            .collect();
        early.routes.put = (self.routes.put.iter())
            .filter(|((router, _), _)| *router == OWNERS)
            .copied()
            .collect();
        early
    }

    /// `routes +3 -1, ifaces +2`, for people.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (name, put, delete) in [
            (
                "interfaces",
                self.ifaces.put.len(),
                self.ifaces.delete.len(),
            ),
            (
                "impairments",
                self.impairs.put.len(),
                self.impairs.delete.len(),
            ),
            ("routes", self.routes.put.len(), self.routes.delete.len()),
            (
                "IPv6 routes",
                self.routes6.put.len(),
                self.routes6.delete.len(),
            ),
            (
                "next hops",
                self.nexthops.put.len(),
                self.nexthops.delete.len(),
            ),
            (
                "firewall classes",
                self.classes.put.len(),
                self.classes.delete.len(),
            ),
            (
                "firewall rules",
                self.rules.put.len(),
                self.rules.delete.len(),
            ),
        ] {
            if put + delete > 0 {
                parts.push(format!("{name} +{put} -{delete}"));
            }
        }
        parts.join(", ")
    }
}

/// The map writes from `old`'s entries to `new`'s (plans of one network, `new` built from
/// `old`, so ids are stable).
#[must_use]
pub fn diff(
    old: &Plan,
    old_entries: &MapEntries,
    new: &Plan,
    new_entries: &MapEntries,
) -> EntriesDiff {
    let old_links: std::collections::HashSet<u32> = old.links.iter().map(|l| l.id).collect();
    let old_slots: std::collections::HashSet<u32> =
        old_entries.rule_slots.iter().map(|r| r.slot).collect();
    let new_routers: std::collections::HashSet<u32> = new.nodes.iter().map(|n| n.id).collect();
    let mut ifaces = delta(&old_entries.ifaces, &new_entries.ifaces);
    // (entries of some nodes leave `lo` out; those of a whole plan have it already)
    match (lo_entry(old), lo_entry(new)) {
        (None, Some(lo)) if !ifaces.put.iter().any(|(k, _)| *k == lo.0) => ifaces.put.push(lo),
        (Some((lo, _)), None) if !ifaces.delete.contains(&lo) => ifaces.delete.push(lo),
        _ => {}
    }
    EntriesDiff {
        ifaces,
        impairs: delta(&old_entries.impairs, &new_entries.impairs),
        routes: delta(&old_entries.routes, &new_entries.routes),
        nexthops: delta(&old_entries.nexthops, &new_entries.nexthops),
        classes: delta(&old_entries.classes, &new_entries.classes),
        rules: delta(&old_entries.rules, &new_entries.rules),
        routes6: delta(&old_entries.routes6, &new_entries.routes6),
        nexthops6: delta(&old_entries.nexthops6, &new_entries.nexthops6),
        classes6: delta(&old_entries.classes6, &new_entries.classes6),
        addrs6: delta(&old_entries.addrs6, &new_entries.addrs6),
        fresh_links: new
            .links
            .iter()
            .map(|l| l.id)
            .filter(|id| !old_links.contains(id))
            .collect(),
        fresh_rules: new_entries
            .rule_slots
            .iter()
            .map(|r| r.slot)
            .filter(|s| !old_slots.contains(s))
            .collect(),
        gone_routers: old
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Router && !new_routers.contains(&n.id))
            .map(|n| n.id)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanOptions;
    use crate::topology::Topology;

    fn plan(json: &str) -> Plan {
        let topo = Topology::from_json(json, "test").expect("valid");
        Plan::build(
            &topo,
            PlanOptions {
                datapath: crate::plan::Datapath::Ebpf,
                ..PlanOptions::default()
            },
        )
        .expect("plan")
    }

    const CLASSIC: &str = r#"{
        "name": "classic", "automatic_routing": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}, "B-2": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {
            "R-1": {"subnets": ["A", "C"], "fw_rules": {"policy": "ACCEPT", "drop": [["A-2", "B"]]}},
            "R-2": {"subnets": ["C", "B"]}
        }
    }"#;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn routers_route_connected_local_and_planned_destinations() {
        let p = plan(CLASSIC);
        let e = entries(&p).unwrap();
        let r1: Vec<_> = e
            .routes
            .iter()
            .filter(|((r, _), _)| *r == 0)
            .map(|((_, d), r)| (d.to_string(), r.flags))
            .collect();
        assert!(r1.contains(&("10.0.0.0/24".into(), ROUTE_CONNECTED)));
        assert!(r1.contains(&("10.0.0.1/32".into(), ROUTE_LOCAL)));
        assert!(r1.contains(&("10.0.0.255/32".into(), ROUTE_LOCAL)));
        // through the point-to-point transit C: the next hop's MAC is known
        assert!(r1.contains(&("10.0.1.0/24".into(), ROUTE_PEER)), "{r1:?}");
        let via = e
            .routes
            .iter()
            .find(|((r, d), _)| *r == 0 && *d == net("10.0.1.0/24"))
            .unwrap()
            .1;
        assert_eq!(
            u32::from_be(via.nexthop),
            u32::from(std::net::Ipv4Addr::new(10, 0, 2, 2))
        );
        assert_eq!(via.dmac, [0x02, 0xd7, 10, 0, 2, 2], "R-2's MAC on C");
        assert_eq!(via.smac, [0x02, 0xd7, 10, 0, 2, 1], "R-1's MAC on C");
        // hosts route nothing; every interface is known
        assert!(e.routes.iter().all(|((r, _), _)| *r < 2));
        assert_eq!(
            e.ifaces.len(),
            p.links.len() + p.links.iter().filter(|l| l.fabric_port.is_some()).count()
        );
    }

    #[test]
    fn a_router_fed_by_ospf_leaves_its_planned_default_to_the_kernel() {
        // a border router's default toward the uplink would win, in the map, over every
        // route OSPF learnt (which only the kernel's FIB holds): it stays a kernel route
        let lab = CLASSIC.replace(
            r#""automatic_routing": true,"#,
            r#""routing": "ospf", "outbound_access": {"enabled": true, "cidr": "192.168.240.0/24", "routers": ["R-1"]},"#,
        );
        let p = plan(&lab);
        assert!(p.nodes[0].routes.iter().any(|r| r.dest.prefix_len() == 0));
        let e = entries(&p).unwrap();
        let r1: Vec<String> = e
            .routes
            .iter()
            .filter(|((r, _), _)| *r == 0)
            .map(|((_, d), _)| d.to_string())
            .collect();
        assert!(r1.contains(&"10.0.0.0/24".to_owned()), "{r1:?}");
        assert!(!r1.contains(&"0.0.0.0/0".to_owned()), "{r1:?}");
        // under static routing the default is the map's
        let p = plan(&CLASSIC.replace(
            r#""automatic_routing": true,"#,
            r#""automatic_routing": true, "outbound_access": {"enabled": true, "cidr": "192.168.240.0/24", "routers": ["R-1"]},"#,
        ));
        let e = entries(&p).unwrap();
        assert!(
            e.routes
                .iter()
                .any(|((r, d), _)| *r == 0 && d.prefix_len() == 0)
        );
    }

    #[test]
    fn only_routers_with_rules_or_drop_policy_filter() {
        let mut e = entries(&plan(CLASSIC)).unwrap();
        assert!(e.firewalled);
        let flags = |router: u32| {
            e.ifaces
                .iter()
                .find(|(_, i)| i.router == router)
                .unwrap()
                .1
                .flags
        };
        assert_eq!(flags(0), IFACE_FORWARD | IFACE_FIREWALL);
        assert_eq!(flags(1), IFACE_FORWARD);
        assert_eq!(
            e.rule_slots,
            vec![RuleSlot {
                router: 0,
                slot: 0,
                origin: r#"routers."R-1".fw_rules.drop[0]"#.into()
            }]
        );
        // A-2 (10.0.0.3) → B (10.0.1.0/24): one class each, one key, and the marker of the
        // pair a drop rule covers (a flow whose replies meet it is tracked)
        assert_eq!(e.classes.len(), 2);
        assert_eq!(e.rules.len(), 2);
        // (sorted by protocol: the marker's comes before "any")
        assert_eq!(e.rules[0].0.proto, PROTO_DROP_PAIR);
        assert_eq!(
            (e.rules[0].0.src_class, e.rules[0].0.dst_class),
            (e.rules[1].0.src_class, e.rules[1].0.dst_class)
        );
        e.rules.remove(0);
        assert_eq!(
            e.rules[0].1,
            RuleVerdict {
                verdict: VERDICT_DROP,
                rule: 0
            }
        );
    }

    #[test]
    fn kernel_datapath_only_counts() {
        let topo = Topology::from_json(CLASSIC, "test").unwrap();
        let p = Plan::build(
            &topo,
            PlanOptions {
                datapath: crate::plan::Datapath::Kernel,
                ..PlanOptions::default()
            },
        )
        .unwrap();
        let e = entries(&p).unwrap();
        assert!(e.routes.is_empty() && e.rules.is_empty() && !e.firewalled);
        assert!(e.ifaces.iter().all(|(_, i)| i.flags & IFACE_FORWARD == 0));
    }

    #[test]
    fn rules_on_nested_prefixes_reach_every_class_inside() {
        let p = plan(
            r#"{
            "name": "nested", "automatic_routing": true,
            "subnets": {
                "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
                "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}}}
            },
            "routers": {"R": {"subnets": ["A", "B"], "fw_rules": {
                "policy": "DROP",
                "accept": [["10.0.0.0/16", "*"]],
                "drop": [["A-2", "B"], {"src": "10.0.0.0/16", "dst": "10.0.1.0/24", "proto": "tcp", "dport": 22}]
            }}}
        }"#,
        );
        let e = entries(&p).unwrap();
        let class = |s: &str| e.classes.iter().find(|((_, p), _)| *p == net(s)).unwrap().1;
        let (wide, a2, b) = (
            class("10.0.0.0/16"),
            class("10.0.0.3/32"),
            class("10.0.1.0/24"),
        );
        let verdict = |src, dst, proto, dport| {
            e.rules
                .iter()
                .find(|(k, _)| {
                    *k == RuleKey {
                        router: 0,
                        src_class: src,
                        dst_class: dst,
                        proto,
                        dport,
                    }
                })
                .map(|(_, v)| *v)
        };
        // the /16 accept covers the classes inside it: itself, A-2's /32, B's /24
        for c in [wide, a2, b] {
            assert_eq!(
                verdict(c, WILDCARD, PROTO_ANY, PORT_ANY).unwrap().verdict,
                VERDICT_ACCEPT,
                "class {c}"
            );
        }
        // drop A-2 → B is specific
        assert_eq!(
            verdict(a2, b, PROTO_ANY, PORT_ANY).unwrap(),
            RuleVerdict {
                verdict: VERDICT_DROP,
                rule: 0
            }
        );
        // tcp/22 drop from the whole /16, A-2 included
        assert_eq!(verdict(a2, b, 6, 22).unwrap().verdict, VERDICT_DROP);
        assert_eq!(verdict(wide, b, 6, 22).unwrap().rule, 1);
        assert_eq!(
            e.ifaces
                .iter()
                .find(|(_, i)| i.router == 0)
                .unwrap()
                .1
                .flags,
            // a rule to `any`, none from `any`: only wildcard destinations are looked up
            IFACE_FORWARD | IFACE_FIREWALL | IFACE_POLICY_DROP | IFACE_FW_TRACK | IFACE_FW_DST_ANY
        );
    }

    /// R-1 — T — R-2 with `lans` LANs behind R-2: R-1 has `lans` routes.
    fn fan(lans: usize) -> String {
        let mut subnets = vec![
            r#""A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}}}"#.to_owned(),
            r#""T": {"cidr": "10.255.0.0/30", "hosts": {}}"#.to_owned(),
        ];
        let mut behind = vec![r#""T""#.to_owned()];
        for i in 0..lans {
            subnets.push(format!(
                r#""L{i}": {{"cidr": "10.{}.0.0/24", "hosts": {{"L{i}-1": {{}}}}}}"#,
                2 * i + 2
            ));
            behind.push(format!(r#""L{i}""#));
        }
        format!(
            r#"{{"name": "fan", "automatic_routing": true, "subnets": {{{}}},
                "routers": {{"R-1": {{"subnets": ["A", "T"]}}, "R-2": {{"subnets": [{}]}}}}}}"#,
            subnets.join(","),
            behind.join(",")
        )
    }

    #[test]
    fn a_router_taking_its_own_route_gets_lo_and_its_owners_written_first() {
        let options = PlanOptions {
            datapath: crate::plan::Datapath::Ebpf,
            ..PlanOptions::default()
        };
        let old = plan(&fan(4));
        let topo = Topology::from_json(&fan(40), "test").expect("valid");
        let new = Plan::build_from(&topo, options, Some(&old)).expect("plan");
        let r1 = new.nodes.iter().find(|n| n.name == "R-1").unwrap();
        assert!(r1.own_route && !old.nodes[0].own_route);
        let d = diff(&old, &entries(&old).unwrap(), &new, &entries(&new).unwrap());
        let early = d.own_route_puts();
        assert_eq!(
            early.ifaces.put.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [LO_IFINDEX]
        );
        // one owner entry per address of R-1, nothing else
        let mut owners: Vec<_> = early
            .routes
            .put
            .iter()
            .map(|((r, p), v)| (*r, *p, v.link))
            .collect();
        owners.sort();
        assert_eq!(
            owners,
            [
                (OWNERS, "10.0.0.1/32".parse().unwrap(), r1.id),
                (OWNERS, "10.255.0.1/32".parse().unwrap(), r1.id)
            ]
        );
        assert_eq!(early.len(), 3);
        // and the way back writes nothing early: its deletions wait for the kernel routes
        let back = diff(&new, &entries(&new).unwrap(), &old, &entries(&old).unwrap());
        assert!(back.own_route_puts().is_empty());
        assert!(back.ifaces.delete.contains(&LO_IFINDEX));
    }
}
