//! A lab placed on several machines: each machine plans the whole lab (so that addresses,
//! routes and firewall entries are the same everywhere), then keeps its own share — its
//! nodes and their links — and joins every segment whose members sit on several machines to
//! the others by a VXLAN port on the segment's bridge.
//!
//! The VXLAN device is per segment (a VNI each, one UDP port per lab): the bridges and the
//! eBPF routers see an ordinary bridge port, so forwarding, counters and ARP work as on one
//! machine. Its forwarding table is static: every remote member's MAC (dvnet derives MACs from
//! addresses, so every machine knows them) points at its machine, and broadcasts go to every
//! machine with members (head-end replication: no multicast in the underlay).
//!
//! Every link of a lab that spans machines takes the underlay's MTU less the VXLAN overhead,
//! so that nothing is dropped silently: a node sending more is told by its own kernel
//! (`message too long`), and no router ever forwards a packet larger than the next link.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{LinkPlan, Plan, Segment, naming};
use crate::topology::Topology;

/// Ethernet, IPv4, UDP and VXLAN headers around every frame a VXLAN port sends.
pub const VXLAN_OVERHEAD: u32 = 50;

/// What a machine's share knows of the lab beyond its own nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachinePlan {
    /// This machine's name in the file.
    pub name: String,
    /// The network's id (the share's own id, [`Plan::id`], adds the machine's name).
    pub network: String,
    /// Its underlay address: where its VXLAN speaks from.
    pub address: Ipv4Addr,
    /// The UDP port of the lab's VXLAN, on every machine.
    pub vxlan_port: u16,
    /// The nodes of the other machines, for name resolution and `inspect`.
    pub elsewhere: Vec<RemoteNode>,
}

/// A node of another machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteNode {
    pub name: String,
    pub machine: String,
    /// Its address on each of its subnets (positions in [`Plan::subnets`]), in its order.
    pub addresses: Vec<(usize, Ipv4Addr)>,
}

/// The VXLAN port joining a segment to its members on other machines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelPlan {
    pub ifname: String,
    pub ifindex: u32,
    /// The segment's VXLAN network identifier, the same on every machine.
    pub vni: u32,
    /// The other machines with members on the segment, in file order.
    pub remotes: Vec<Remote>,
}

/// Another machine's members of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    pub machine: String,
    /// Its underlay address.
    pub address: Ipv4Addr,
    /// Its members' addresses on the segment (their MACs follow from them).
    pub members: Vec<Ipv4Addr>,
}

impl Remote {
    /// The MACs of the members (as [`naming::mac_for`] gives every node interface).
    pub fn macs(&self) -> impl Iterator<Item = [u8; 6]> + '_ {
        self.members.iter().map(|&a| naming::mac_for(a, false))
    }
}

/// The VNI of a segment: one of 2^24 - 1 by a hash of the network's id and the subnet's name,
/// so that every machine finds the same one and two labs rarely share one.
#[must_use]
pub fn vni(network: &str, subnet: &str) -> u32 {
    naming::fnv1a(format!("{network}/{subnet}").as_bytes()) % 0x00ff_ffff + 1
}

/// Per subnet, the machines (positions in [`Topology::machines`]) its members sit on, sorted.
#[must_use]
pub fn machines_on(topo: &Topology) -> Vec<Vec<usize>> {
    let mut on = vec![Vec::new(); topo.subnets.len()];
    for r in &topo.routers {
        for &s in &r.subnets {
            on[s].push(r.machine);
        }
    }
    for h in &topo.hosts {
        on[h.subnet].push(h.machine);
    }
    for machines in &mut on {
        machines.sort_unstable();
        machines.dedup();
    }
    on
}

/// The MTU of every link of a lab placed on `topo`'s machines: the smallest underlay's less
/// the VXLAN overhead when some segment spans machines, else the veth default.
#[must_use]
pub fn link_mtu(topo: &Topology, spans: bool) -> u32 {
    match topo.machines.iter().map(|m| u32::from(m.mtu)).min() {
        Some(underlay) if spans => underlay - VXLAN_OVERHEAD,
        _ => crate::netlink::LINK_MTU,
    }
}

/// Keeps machine `m`'s share of `plan`, the whole lab planned from `topo`: its nodes and
/// links (positions renumbered), a tunnel on each spanning segment it has members on
/// (`tunnels[s]`: the interface index planned for subnet `s`'s), no segment where it has none.
#[must_use]
pub fn share(mut plan: Plan, topo: &Topology, m: usize, tunnels: &[Option<u32>]) -> Plan {
    let machine_of: Vec<usize> = topo.nodes().map(|n| topo.node_machine(n)).collect();
    let machine_name = |i: usize| topo.machines[i].name.clone();
    // the other machines' members of each subnet, by machine
    let mut remote: Vec<BTreeMap<usize, Vec<Ipv4Addr>>> = vec![BTreeMap::new(); plan.subnets.len()];
    for link in &plan.links {
        let on = machine_of[link.node];
        if on != m {
            remote[link.subnet]
                .entry(on)
                .or_default()
                .extend(link.address);
        }
    }
    let elsewhere: Vec<RemoteNode> = plan
        .nodes
        .iter()
        .enumerate()
        .filter(|&(n, _)| machine_of[n] != m)
        .map(|(n, node)| RemoteNode {
            name: node.name.clone(),
            machine: machine_name(machine_of[n]),
            addresses: plan
                .links_of(node)
                .filter_map(|l| Some((l.subnet, l.address?)))
                .collect(),
        })
        .collect();

    // positions: old → new
    let node_map = renumbered(machine_of.iter().map(|&on| on == m));
    let link_map = renumbered(plan.links.iter().map(|l| node_map[l.node].is_some()));
    let link_at =
        |l: u32| link_map[l as usize].map(|p| u32::try_from(p).expect("fewer than 2^32 links"));
    let relink = |l: u32| link_at(l).expect("a local node's link is local");
    let links: Vec<LinkPlan> = std::mem::take(&mut plan.links)
        .into_iter()
        .filter_map(|mut l| {
            l.node = node_map[l.node]?;
            Some(l)
        })
        .collect();
    let nodes = std::mem::take(&mut plan.nodes)
        .into_iter()
        .enumerate()
        .filter(|&(n, _)| node_map[n].is_some())
        .map(|(_, mut node)| {
            for l in &mut node.links {
                *l = relink(*l);
            }
            for route in &mut node.routes {
                route.link = relink(route.link);
                for hop in &mut route.ecmp {
                    hop.link = relink(hop.link);
                }
            }
            node
        })
        .collect();
    for (s, subnet) in plan.subnets.iter_mut().enumerate() {
        subnet.links = subnet.links.iter().filter_map(|&l| link_at(l)).collect();
        if subnet.links.is_empty() {
            // all its members are elsewhere
            subnet.segment = Segment::Empty;
            continue;
        }
        let Some(ifindex) = tunnels[s] else {
            continue;
        };
        subnet.tunnel = Some(TunnelPlan {
            ifname: naming::tunnel_ifname(&subnet.name, s),
            ifindex,
            vni: vni(&topo.id, &subnet.name),
            remotes: std::mem::take(&mut remote[s])
                .into_iter()
                .map(|(on, members)| Remote {
                    machine: machine_name(on),
                    address: topo.machines[on].address,
                    members,
                })
                .collect(),
        });
    }
    plan.links = links;
    plan.nodes = nodes;
    plan.machine = Some(MachinePlan {
        name: machine_name(m),
        network: topo.id.clone(),
        address: topo.machines[m].address,
        vxlan_port: topo.vxlan_port(),
        elsewhere,
    });
    plan
}

/// The new position of each kept item (`keep`, in order) among the kept ones; `None` for the
/// others.
fn renumbered(keep: impl Iterator<Item = bool>) -> Vec<Option<usize>> {
    let mut next = 0;
    keep.map(|kept| {
        kept.then(|| {
            next += 1;
            next - 1
        })
    })
    .collect()
}
