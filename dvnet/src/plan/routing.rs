//! Routes from shortest paths over the graph of routers and subnets.
//!
//! Vertices are routers and subnets (so host-less transit subnets and chains of routers
//! work), edges join a router to each subnet it is on. One breadth-first search from each
//! destination subnet gives every router's distance to it; a router's next hop is a neighbour
//! one router closer. Ties go to the lowest router in file order, then to the router's
//! earliest subnet, so plans are deterministic. A router's destinations are then grouped by
//! next hop and each group aggregated into the fewest prefixes covering exactly it (subnets
//! are disjoint, so no prefix ever covers a destination of another group). Hosts use the
//! router of their subnet closest to each destination: the one serving most destinations
//! becomes the default gateway, the others get specific routes.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use petgraph::graph::{NodeIndex, UnGraph};

use crate::topology::Topology;

/// A hop toward a destination: through `router`'s address on `subnet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hop {
    /// The router (index into `Topology::routers`) the packet goes to.
    pub router: usize,
    /// The position, among the *sending* node's subnets, of the subnet they share.
    pub via_position: usize,
}

/// Routing decisions, before they become addresses and interface names.
pub struct Routing {
    /// For each router: (destinations as prefixes, next hop), aggregated, sorted by prefix.
    pub routers: Vec<Vec<(Ipv4Net, Hop)>>,
    /// For each subnet: the gateway for hosts on it, if it has a router.
    pub default_gateway: Vec<Option<usize>>,
    /// For each subnet: specific routes for destinations not served by the default gateway.
    pub host_routes: Vec<Vec<(Ipv4Net, usize)>>,
    /// Groups of subnets that cannot reach each other, when the network is not connected.
    pub islands: Vec<Vec<usize>>,
}

/// The graph: routers are vertices `0..R`, subnets `R..R+S`.
struct Graph {
    graph: UnGraph<(), ()>,
    routers: usize,
}

impl Graph {
    fn new(topo: &Topology) -> Graph {
        let routers = topo.routers.len();
        let edges: usize = topo.routers.iter().map(|r| r.subnets.len()).sum();
        let mut graph = UnGraph::with_capacity(routers + topo.subnets.len(), edges);
        for _ in 0..routers + topo.subnets.len() {
            graph.add_node(());
        }
        for (r, router) in topo.routers.iter().enumerate() {
            for &s in &router.subnets {
                graph.add_edge(NodeIndex::new(r), NodeIndex::new(routers + s), ());
            }
        }
        Graph { graph, routers }
    }

    /// Hop counts (vertices crossed) from subnet `s` to every vertex.
    fn distances_from_subnet(&self, s: usize, dist: &mut [u32], queue: &mut VecDeque<usize>) {
        dist.fill(u32::MAX);
        let start = self.routers + s;
        dist[start] = 0;
        queue.clear();
        queue.push_back(start);
        while let Some(v) = queue.pop_front() {
            let next = dist[v] + 1;
            for n in self.graph.neighbors(NodeIndex::new(v)) {
                let n = n.index();
                if dist[n] == u32::MAX {
                    dist[n] = next;
                    queue.push_back(n);
                }
            }
        }
    }
}

/// Computes every route of the network.
#[must_use]
pub fn compute(topo: &Topology) -> Routing {
    let graph = Graph::new(topo);
    let nr = topo.routers.len();
    let ns = topo.subnets.len();
    // routers on each subnet, lowest index first, with the subnet's position in their list
    let mut on_subnet: Vec<Vec<(usize, usize)>> = vec![Vec::new(); ns];
    for (r, router) in topo.routers.iter().enumerate() {
        for (pos, &s) in router.subnets.iter().enumerate() {
            on_subnet[s].push((r, pos));
        }
    }

    let mut per_router: Vec<Vec<(Ipv4Net, Hop)>> = vec![Vec::new(); nr];
    let mut per_subnet_gw: Vec<Vec<(Ipv4Net, usize)>> = vec![Vec::new(); ns];
    let mut dist = vec![u32::MAX; nr + ns];
    let mut queue = VecDeque::new();
    let mut island_of = vec![usize::MAX; ns];
    let mut islands: Vec<Vec<usize>> = Vec::new();

    for dest in 0..ns {
        graph.distances_from_subnet(dest, &mut dist, &mut queue);
        if island_of[dest] == usize::MAX {
            let members: Vec<usize> = (0..ns).filter(|&t| dist[nr + t] != u32::MAX).collect();
            for &t in &members {
                island_of[t] = islands.len();
            }
            islands.push(members);
        }
        let prefix = topo.subnets[dest].cidr;
        let dist = &dist;
        // routers: next hop one router closer
        for (r, router) in topo.routers.iter().enumerate() {
            let d = dist[r];
            // d == 1: connected; MAX: unreachable
            if d == u32::MAX || d <= 1 {
                continue;
            }
            let best = router
                .subnets
                .iter()
                .enumerate()
                .flat_map(|(pos, &t)| {
                    on_subnet[t]
                        .iter()
                        .filter(move |&&(r2, _)| r2 != r && dist[r2] + 2 == d)
                        .map(move |&(r2, _)| Hop {
                            router: r2,
                            via_position: pos,
                        })
                })
                .min();
            if let Some(hop) = best {
                per_router[r].push((prefix, hop));
            }
        }
        // hosts: per subnet, the closest router on it
        for (t, routers) in on_subnet.iter().enumerate() {
            if t == dest {
                continue;
            }
            if let Some(&(gw, _)) = routers
                .iter()
                .filter(|&&(r, _)| dist[r] != u32::MAX)
                .min_by_key(|&&(r, _)| (dist[r], r))
            {
                per_subnet_gw[t].push((prefix, gw));
            }
        }
    }

    let routers = per_router.into_iter().map(aggregate).collect();
    let mut default_gateway = Vec::with_capacity(ns);
    let mut host_routes = Vec::with_capacity(ns);
    for (t, decisions) in per_subnet_gw.into_iter().enumerate() {
        let gw = majority(&decisions).or_else(|| on_subnet[t].first().map(|&(r, _)| r));
        default_gateway.push(gw);
        let specific: Vec<_> = decisions
            .into_iter()
            .filter(|&(_, g)| Some(g) != gw)
            .collect();
        host_routes.push(aggregate(specific));
    }
    if islands.len() == 1 {
        islands.clear();
    }
    Routing {
        routers,
        default_gateway,
        host_routes,
        islands,
    }
}

/// Only connected routes for routers; hosts keep a default gateway (the first router on their
/// subnet) so that a routing daemon in the routers is all the network needs.
#[must_use]
pub fn gateways_only(topo: &Topology) -> Routing {
    let mut default_gateway = vec![None; topo.subnets.len()];
    for (r, router) in topo.routers.iter().enumerate() {
        for &s in &router.subnets {
            default_gateway[s].get_or_insert(r);
        }
    }
    Routing {
        routers: vec![Vec::new(); topo.routers.len()],
        host_routes: vec![Vec::new(); topo.subnets.len()],
        default_gateway,
        islands: Vec::new(),
    }
}

/// The value chosen for most destinations; ties go to the smallest.
fn majority<T: Copy + Ord>(decisions: &[(Ipv4Net, T)]) -> Option<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for &(_, v) in decisions {
        *counts.entry(v).or_default() += 1;
    }
    // max_by_key keeps the last maximum: iterate in reverse so ties go to the smallest
    counts
        .into_iter()
        .rev()
        .max_by_key(|&(_, n)| n)
        .map(|(v, _)| v)
}

/// Groups destinations by next hop and aggregates each group exactly; sorted by prefix.
fn aggregate<T: Copy + Ord>(decisions: Vec<(Ipv4Net, T)>) -> Vec<(Ipv4Net, T)> {
    let mut groups: BTreeMap<T, Vec<Ipv4Net>> = BTreeMap::new();
    for (prefix, hop) in decisions {
        groups.entry(hop).or_default().push(prefix);
    }
    let mut out: Vec<(Ipv4Net, T)> = groups
        .into_iter()
        .flat_map(|(hop, prefixes)| {
            Ipv4Net::aggregate(&prefixes)
                .into_iter()
                .map(move |p| (p, hop))
        })
        .collect();
    out.sort_by_key(|&(p, _)| (u32::from(p.network()), p.prefix_len()));
    out
}

/// The address a router has on the subnet it shares with a neighbour.
#[must_use]
pub fn address_on(
    router_subnets: &[usize],
    router_addrs: &[Ipv4Addr],
    subnet: usize,
) -> Option<Ipv4Addr> {
    router_subnets
        .iter()
        .position(|&s| s == subnet)
        .map(|i| router_addrs[i])
}
