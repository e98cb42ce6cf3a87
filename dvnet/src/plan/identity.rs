//! Stable identities: every number and name a network's objects carry in the kernel (node
//! ids in BPF keys, link ids indexing the counters, interface indexes, interface names,
//! addresses, rule slots) is handed out by name and kept from one plan to the next. A plan
//! built from a previous one ([`super::Plan::build_from`]) keeps the identity of everything
//! that is still there, whatever its position in the file; only what is new gets a new one.
//!
//! New identities are the lowest free ones, and never one the previous plan used: an object
//! removed by an edit may still be on its way out of the kernel while the edit creates new
//! ones. With no previous plan, identities follow file order, as they always have.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::{LinkPlan, Plan, RulePlan, Segment};

/// Hands out numbers: kept ones as they were, new ones lowest first, never one in use.
#[derive(Clone, Debug)]
pub struct Pool {
    used: BTreeSet<u32>,
    next: u32,
}

impl Pool {
    /// A pool whose numbers start at `first`, with `used` taken already.
    pub fn new(first: u32, used: impl IntoIterator<Item = u32>) -> Pool {
        Pool {
            used: used.into_iter().collect(),
            next: first,
        }
    }

    /// The lowest free number.
    pub fn take(&mut self) -> u32 {
        while self.used.contains(&self.next) {
            self.next += 1;
        }
        let n = self.next;
        self.used.insert(n);
        self.next += 1;
        n
    }
}

/// One link of a previous plan, by (node, subnet).
#[derive(Clone, Debug)]
pub struct PrevLink<'a> {
    pub id: u32,
    pub ifname: &'a str,
    pub ifindex: u32,
    /// Its address and the subnet's prefix then, if it had them: an address is kept only
    /// while its subnet keeps its prefix.
    pub address: Option<(Ipv4Addr, Ipv4Net)>,
    /// Its IPv6 address and the subnet's IPv6 prefix then, if it had them.
    pub address6: Option<(Ipv6Addr, Ipv6Net)>,
    pub port: Option<(&'a str, u32)>,
}

/// What a previous plan had, by name (borrowing the plan's names).
#[derive(Clone, Debug, Default)]
pub struct Previous<'a> {
    pub node_ids: HashMap<&'a str, u32>,
    /// node → subnet → link
    pub links: HashMap<&'a str, HashMap<&'a str, PrevLink<'a>>>,
    /// subnet → (bridge name, ifindex)
    pub bridges: HashMap<&'a str, (&'a str, u32)>,
    pub uplink_port: Option<u32>,
    /// (link id, into the node?) → the delay line's (near, far) ifindexes
    pub delay_lines: HashMap<(u32, bool), (u32, u32)>,
    /// router → rule key → slot
    pub rule_slots: HashMap<&'a str, HashMap<String, u32>>,
    /// Every number the previous plan used, by kind: new identities avoid them all.
    pub all_node_ids: Vec<u32>,
    pub all_link_ids: Vec<u32>,
    pub all_ifindexes: Vec<u32>,
    pub all_rule_slots: Vec<u32>,
}

impl<'a> Previous<'a> {
    /// The identities of `plan`.
    #[must_use]
    pub fn of(plan: &'a Plan) -> Previous<'a> {
        let mut p = Previous::default();
        for node in &plan.nodes {
            p.node_ids.insert(&node.name, node.id);
            p.all_node_ids.push(node.id);
            if let Some(fw) = &node.firewall {
                let slots = p.rule_slots.entry(&node.name).or_default();
                for (key, rule) in rule_keys(&fw.rules).into_iter().zip(&fw.rules) {
                    slots.insert(key, rule.slot);
                    p.all_rule_slots.push(rule.slot);
                }
            }
        }
        for link in &plan.links {
            let node = plan.nodes[link.node].name.as_str();
            let subnet = &plan.subnets[link.subnet];
            p.links.entry(node).or_default().insert(
                subnet.name.as_str(),
                PrevLink {
                    id: link.id,
                    ifname: &link.ifname,
                    ifindex: link.ifindex,
                    address: link.address.zip(subnet.cidr),
                    address6: link.address6.zip(subnet.cidr6),
                    port: link
                        .fabric_port
                        .as_ref()
                        .map(|port| (port.ifname.as_str(), port.ifindex)),
                },
            );
            p.all_link_ids.push(link.id);
            p.all_ifindexes.push(link.ifindex);
            p.all_ifindexes
                .extend(link.fabric_port.as_ref().map(|port| port.ifindex));
            for (into, hook) in [(true, &link.into_node), (false, &link.from_node)] {
                if let Some(d) = &hook.delay {
                    p.delay_lines
                        .insert((link.id, into), (d.ifindex, d.far_ifindex));
                    p.all_ifindexes.extend([d.ifindex, d.far_ifindex]);
                }
            }
        }
        for subnet in &plan.subnets {
            if let Segment::Bridge { name, ifindex } = &subnet.segment {
                p.bridges.insert(&subnet.name, (name, *ifindex));
                p.all_ifindexes.push(*ifindex);
            }
        }
        if let Some(uplink) = &plan.uplink {
            p.uplink_port = Some(uplink.fabric_port.ifindex);
            p.all_ifindexes.push(uplink.fabric_port.ifindex);
        }
        p
    }

    /// The previous address of `node` on `subnet`, if its subnet still has the same prefix.
    #[must_use]
    pub fn address(&self, node: &str, subnet: &str, cidr: Ipv4Net) -> Option<Ipv4Addr> {
        self.link(node, subnet)?
            .address
            .filter(|&(_, net)| net == cidr)
            .map(|(address, _)| address)
    }

    /// The previous IPv6 address of `node` on `subnet`, if its subnet still has the same
    /// IPv6 prefix.
    #[must_use]
    pub fn address6(&self, node: &str, subnet: &str, cidr6: Ipv6Net) -> Option<Ipv6Addr> {
        self.link(node, subnet)?
            .address6
            .filter(|&(_, net)| net == cidr6)
            .map(|(address, _)| address)
    }

    /// The (near, far) ifindexes of link `id`'s delay line into the node (`into`) or out.
    #[must_use]
    pub fn delay_line(&self, id: u32, into: bool) -> Option<(u32, u32)> {
        self.delay_lines.get(&(id, into)).copied()
    }

    /// The link `node` had on `subnet`.
    #[must_use]
    pub fn link(&self, node: &str, subnet: &str) -> Option<&PrevLink<'a>> {
        self.links.get(node)?.get(subnet)
    }
}

/// A rule's identity within its router: what it matches and does, and which occurrence of
/// such a rule it is (a rule moved in the file keeps its slot and its hits).
#[must_use]
pub fn rule_keys(rules: &[RulePlan]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    rules
        .iter()
        .map(|r| {
            let base = format!(
                "{:?} {:?} {:?} {:?} {:?}",
                r.action, r.src, r.dst, r.proto, r.dport
            );
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            format!("{base} #{n}")
        })
        .collect()
}

/// The link names a node already uses, so a new short name (`eth<k>`) avoids them.
#[must_use]
pub fn names_in_use<'a>(links: impl Iterator<Item = &'a LinkPlan>) -> BTreeSet<String> {
    links.map(|l| l.ifname.clone()).collect()
}
