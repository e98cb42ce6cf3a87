//! Routes from shortest paths over the graph of routers and subnets.
//!
//! Vertices are routers and subnets (so host-less transit subnets and chains of routers
//! work), edges join a router to each subnet it is on. A router's next hop toward a
//! destination subnet is a router one step closer to it, sharing a subnet with it. Ties go to
//! the lowest router in file order, then to the router's earliest subnet, so plans are
//! deterministic. A router's destinations are then grouped by next hop and each group
//! aggregated into the fewest prefixes covering exactly it (subnets are disjoint, so no prefix
//! ever covers a destination of another group). Hosts use the router of their subnet closest
//! to each destination: the one serving most destinations becomes the default gateway, the
//! others get specific routes.
//!
//! Cost: one breadth-first search from each router finds all of its next hops at once (each
//! vertex carries the least first hop of the shortest paths reaching it), so a network of R
//! routers and S subnets costs R searches, each linear in the graph, plus R·S decisions to
//! aggregate. Subnets with hosts and two or more routers take one search each (from all
//! their routers together); one-router subnets need none.

use ipnet::{Ipv4Net, Ipv4Subnets, Ipv6Net};
use petgraph::Directed;
use petgraph::csr::Csr;
use std::collections::{BTreeMap, HashMap};

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
    /// For each router: (destinations as prefixes, next hops), aggregated, sorted by prefix.
    /// One next hop, or with `ecmp` every equal-cost one, in (router, position) order.
    pub routers: Vec<Vec<(Ipv4Net, Vec<Hop>)>>,
    /// The same for the subnets' IPv6 prefixes (empty when none has one): the same next
    /// hops, each group aggregated in its own family.
    pub routers6: Vec<Vec<(Ipv6Net, Vec<Hop>)>>,
    /// For each subnet with hosts: the gateway for them, if it has a router — with `ecmp`,
    /// every router on it at the least distance (in router order). (Host-less subnets: the
    /// first router on them, since nothing reads it.)
    pub default_gateway: Vec<Option<Vec<usize>>>,
    /// The same for IPv6 where IPv6-only subnets (which carry no IPv4) make the families'
    /// shortest paths differ; `None`: IPv4's gateways serve IPv6 too.
    pub default_gateway6: Option<Vec<Option<Vec<usize>>>>,
    /// For each subnet with hosts: specific routes for destinations not served by the default
    /// gateway(s), each through one router or, with `ecmp`, several. (Empty for host-less
    /// subnets.)
    pub host_routes: Vec<Vec<(Ipv4Net, Vec<usize>)>>,
    /// The same for IPv6 prefixes (the default gateway serves both families).
    pub host_routes6: Vec<Vec<(Ipv6Net, Vec<usize>)>>,
    /// Groups of subnets that cannot reach each other, when the network is not connected.
    pub islands: Vec<Vec<usize>>,
    /// Groups of IPv4 subnets that cannot reach each other over IPv4 although they are
    /// joined (by IPv6-only subnets alone, which IPv4 does not cross).
    pub islands4: Vec<Vec<usize>>,
}

/// Not reached (yet).
const UNSEEN: u32 = u32::MAX;

/// The graph, a petgraph compressed sparse row graph (each undirected edge stored both ways):
/// routers are vertices `0..R`, subnets `R..R+S`.
struct Graph {
    routers: usize,
    csr: Csr<(), (), Directed, u32>,
}

/// Routers from which the routers' searches are shared out among threads.
const PARALLEL_FROM: usize = 512;

/// Scratch space of one search, reused across searches.
struct Search {
    /// Vertices crossed from the sources.
    dist: Vec<u32>,
    /// Per vertex, the least label over the shortest paths reaching it.
    label: Vec<u64>,
    /// Vertices in the order reached (a FIFO queue read from the front).
    order: Vec<u32>,
}

impl Search {
    fn new(vertices: usize) -> Search {
        Search {
            dist: vec![UNSEEN; vertices],
            label: vec![0; vertices],
            order: Vec::with_capacity(vertices),
        }
    }
}

impl Graph {
    /// The graph, leaving out the subnets `left_out` picks (they keep their vertex, alone).
    fn new(
        topo: &Topology,
        on_subnet: &[Vec<(usize, usize)>],
        left_out: impl Fn(usize) -> bool,
    ) -> Graph {
        let routers = topo.routers.len();
        let vertex = |v: usize| u32::try_from(v).expect("fewer than 2^32 routers and subnets");
        let mut edges: Vec<(u32, u32)> = Vec::new();
        for (s, members) in on_subnet.iter().enumerate().filter(|&(s, _)| !left_out(s)) {
            for &(r, _) in members {
                edges.push((vertex(r), vertex(routers + s)));
                edges.push((vertex(routers + s), vertex(r)));
            }
        }
        edges.sort_unstable();
        edges.dedup();
        let csr = Csr::from_sorted_edges(&edges).expect("edges were sorted");
        Graph { routers, csr }
    }

    /// The neighbours of `v` (vertices past the last one with an edge have none).
    fn neighbours(&self, v: usize) -> &[u32] {
        match u32::try_from(v) {
            Ok(v) if (v as usize) < self.csr.node_count() => self.csr.neighbors_slice(v),
            _ => &[],
        }
    }

    /// Breadth-first from `sources` (each given its label). Every vertex reached gets its
    /// distance and the least label among its predecessors on shortest paths, except that
    /// `relabel_first(label, w)` is what a source passes on to its neighbour `w`.
    fn search(
        &self,
        search: &mut Search,
        sources: impl IntoIterator<Item = (usize, u64)>,
        relabel_first: impl Fn(u64, usize) -> u64,
    ) {
        search.dist.fill(UNSEEN);
        search.order.clear();
        for (v, label) in sources {
            search.dist[v] = 0;
            search.label[v] = label;
            search
                .order
                .push(u32::try_from(v).expect("checked in Graph::new"));
        }
        let mut head = 0;
        while let Some(&u) = search.order.get(head) {
            head += 1;
            let u = u as usize;
            let next = search.dist[u] + 1;
            let from = search.label[u];
            for &w in self.neighbours(u) {
                let w = w as usize;
                let label = if next == 1 {
                    relabel_first(from, w)
                } else {
                    from
                };
                let d = search.dist[w];
                if d == UNSEEN {
                    search.dist[w] = next;
                    search.label[w] = label;
                    search
                        .order
                        .push(u32::try_from(w).expect("checked in Graph::new"));
                } else if d == next && label < search.label[w] {
                    search.label[w] = label;
                }
            }
        }
    }
}

/// The islands alone: groups of subnets that cannot reach each other (one search).
#[must_use]
pub fn islands_of(topo: &Topology) -> Vec<Vec<usize>> {
    let nr = topo.routers.len();
    let ns = topo.subnets.len();
    let mut on_subnet: Vec<Vec<(usize, usize)>> = vec![Vec::new(); ns];
    for (r, router) in topo.routers.iter().enumerate() {
        for (pos, &s) in router.subnets.iter().enumerate() {
            on_subnet[s].push((r, pos));
        }
    }
    let graph = Graph::new(topo, &on_subnet, |_| false);
    let mut search = Search::new(nr + ns);
    islands(&graph, &mut search, ns)
}

/// Computes every route of the network. IPv6-only subnets carry no IPv4: when there are
/// some, IPv4's routes come from searches of the graph without them, IPv6's from searches
/// of the whole graph (else one search serves both families).
pub fn compute(topo: &Topology) -> Routing {
    let ipv6_only = |s: usize| topo.subnets[s].cidr.is_none();
    if !(0..topo.subnets.len()).any(ipv6_only) {
        return compute_in(topo, &|_| false, BOTH);
    }
    let v4 = compute_in(topo, &ipv6_only, V4);
    let v6 = compute_in(topo, &|_| false, V6);
    let mut islands4: Vec<Vec<usize>> = v4
        .islands
        .into_iter()
        .map(|i| i.into_iter().filter(|&s| !ipv6_only(s)).collect::<Vec<_>>())
        .filter(|i| !i.is_empty())
        .collect();
    if islands4.len() <= v6.islands.len().max(1) {
        islands4.clear();
    }
    Routing {
        islands4,
        routers: v4.routers,
        routers6: v6.routers6,
        default_gateway: v4.default_gateway,
        default_gateway6: Some(v6.default_gateway),
        host_routes: v4.host_routes,
        host_routes6: v6.host_routes6,
        islands: v6.islands,
    }
}

/// Which families a pass of [`compute_in`] routes: (IPv4, IPv6).
type Families = (bool, bool);
const BOTH: Families = (true, true);
const V4: Families = (true, false);
const V6: Families = (false, true);

/// Every route of the network in the families `(v4, v6)` (the other's are left empty) over
/// the graph without the subnets `left_out` picks (their prefixes are no destinations either).
fn compute_in(topo: &Topology, left_out: &dyn Fn(usize) -> bool, (v4, v6): Families) -> Routing {
    let nr = topo.routers.len();
    let ns = topo.subnets.len();
    // routers on each subnet, lowest index first, with the subnet's position in their list
    let mut on_subnet: Vec<Vec<(usize, usize)>> = vec![Vec::new(); ns];
    for (r, router) in topo.routers.iter().enumerate() {
        for (pos, &s) in router.subnets.iter().enumerate() {
            on_subnet[s].push((r, pos));
        }
    }
    let graph = Graph::new(topo, &on_subnet, left_out);
    let mut search = Search::new(nr + ns);
    // IPv4 destinations in address order, so that each next hop's destinations merge into
    // intervals as they come (see `Group`). Aggregation depends on the set of prefixes only:
    // the order changes nothing else.
    let mut by_address: Vec<(usize, Ipv4Net)> = (0..ns)
        .filter(|&s| !left_out(s))
        .filter_map(|s| Some((s, topo.subnets[s].cidr?)))
        .collect();
    by_address.sort_by_key(|&(_, c)| (u32::from(c.network()), c.prefix_len()));

    let islands = islands(&graph, &mut search, ns);

    // Routers. A search from router r labels each vertex with the least first hop (router,
    // position) of the shortest paths reaching it: a router two steps away takes
    // (itself, position of the subnet joining it to r), everything further the least label
    // of its predecessors. A destination's label is then exactly the least router one router
    // closer to it among r's neighbours, with r's earliest subnet toward it.
    //
    // A subnet with a single router (a LAN) leads nowhere: the search leaves it out and
    // takes its distance and label from its router.
    let single: Vec<Option<usize>> = on_subnet
        .iter()
        .map(|m| match m[..] {
            [(r, _)] => Some(r),
            _ => None,
        })
        .collect();
    let core = Graph::new(topo, &on_subnet, |s| single[s].is_some() || left_out(s));
    let dests: Vec<Dest> = by_address
        .iter()
        .filter(|_| v4)
        .map(|&(s, cidr)| Dest {
            vertex: u32::try_from(single[s].unwrap_or(nr + s)).expect("checked in Graph::new"),
            start: u32::from(cidr.network()),
            end: u32::from(cidr.broadcast()),
        })
        .collect();
    // IPv6 destinations: the vertex deciding each subnet's next hop, and its prefix
    let dests6: Vec<(u32, Ipv6Net)> = topo
        .subnets
        .iter()
        .enumerate()
        .filter(|&(s, _)| v6 && !left_out(s))
        .filter_map(|(s, sub)| {
            let vertex = u32::try_from(single[s].unwrap_or(nr + s)).expect("checked");
            Some((vertex, sub.cidr6?))
        })
        .collect();
    let mut routers = Vec::with_capacity(nr);
    let mut routers6 = Vec::with_capacity(if dests6.is_empty() { 0 } else { nr });
    // One search per router, each independent of the others: without ECMP (whose interned
    // sets are shared across routers), large networks share them out among threads, each
    // with its own scratch space (a 10,000-node chain: ~0.3 s of CPU).
    let threads = if topo.ecmp || nr < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(4)
    };
    let routes_of = |routers: &[usize], search: &mut Search| {
        // the group of each label, reset after each router
        let mut group_of = vec![usize::MAX; nr];
        let mut sets = topo.ecmp.then(|| HopSets::new(nr + ns));
        routers
            .iter()
            .map(|&r| {
                router_routes(
                    topo,
                    &core,
                    r,
                    &single,
                    (&dests, &dests6),
                    search,
                    &mut group_of,
                    sets.as_mut(),
                )
            })
            .collect::<Vec<RouterRoutes>>()
    };
    let all: Vec<usize> = (0..nr).collect();
    let computed: Vec<RouterRoutes> = if threads == 1 {
        routes_of(&all, &mut search)
    } else {
        crate::threads::in_chunks(&all, threads, |routers| {
            routes_of(routers, &mut Search::new(nr + ns))
        })
        .concat()
    };
    for (v4, v6) in computed {
        routers.push(v4);
        if !dests6.is_empty() {
            routers6.push(v6);
        }
    }

    // Hosts: per subnet, the closest router on it (ties to the lowest), found by one search
    // from all its routers at once, each labelled with itself.
    let mut has_hosts = vec![false; ns];
    for h in &topo.hosts {
        has_hosts[h.subnet] = true;
    }
    // their destinations: IPv4 ones in address order, then IPv6-only ones
    let host_dests: Vec<usize> = by_address
        .iter()
        .map(|&(s, _)| s)
        .chain((0..ns).filter(|&s| !left_out(s) && topo.subnets[s].cidr.is_none()))
        .collect();
    let mut default_gateway = Vec::with_capacity(ns);
    let mut host_routes = Vec::with_capacity(ns);
    let mut host_routes6 = Vec::with_capacity(ns);
    for (t, members) in on_subnet.iter().enumerate() {
        // no router: no gateway; one router: it serves every destination
        if members.len() < 2 || !has_hosts[t] {
            default_gateway.push(members.first().map(|&(r, _)| vec![r]));
            host_routes.push(Vec::new());
            host_routes6.push(Vec::new());
            continue;
        }
        // (destination subnet, gateways)
        let decisions: Vec<(usize, Vec<usize>)> = if topo.ecmp {
            // every router of the subnet at the least distance: one search from each
            let distances: Vec<Vec<u32>> = members
                .iter()
                .map(|&(r, _)| {
                    graph.search(&mut search, [(r, r as u64)], |label, _| label);
                    (0..ns).map(|s| search.dist[nr + s]).collect()
                })
                .collect();
            let mut order: Vec<usize> = (0..members.len()).collect();
            order.sort_by_key(|&i| members[i].0);
            host_dests
                .iter()
                .copied()
                .filter(|&s| s != t)
                .filter_map(|s| {
                    let best = distances
                        .iter()
                        .map(|d| d[s])
                        .min()
                        .filter(|&d| d != UNSEEN)?;
                    let gws = order
                        .iter()
                        .filter(|&&i| distances[i][s] == best)
                        .map(|&i| members[i].0)
                        .collect();
                    Some((s, gws))
                })
                .collect()
        } else {
            graph.search(
                &mut search,
                members.iter().map(|&(r, _)| (r, r as u64)),
                |label, _| label,
            );
            host_dests
                .iter()
                .copied()
                .filter(|&s| s != t && search.dist[nr + s] != UNSEEN)
                .map(|s| {
                    let gw = usize::try_from(search.label[nr + s]).expect("a router index");
                    (s, vec![gw])
                })
                .collect()
        };
        let gw = majority(&decisions).or_else(|| members.first().map(|&(r, _)| vec![r]));
        let specific: Vec<(usize, Vec<usize>)> = decisions
            .into_iter()
            .filter(|(_, g)| Some(g) != gw.as_ref())
            .collect();
        default_gateway.push(gw);
        host_routes.push(aggregate(
            specific
                .iter()
                .filter(|_| v4)
                .filter_map(|(s, g)| Some((topo.subnets[*s].cidr?, g.clone())))
                .collect(),
        ));
        host_routes6.push(aggregate6(
            specific
                .iter()
                .filter(|_| v6)
                .filter_map(|(s, g)| Some((topo.subnets[*s].cidr6?, g.clone())))
                .collect(),
        ));
    }
    Routing {
        routers,
        routers6,
        default_gateway6: None,
        default_gateway,
        host_routes,
        host_routes6,
        islands,
        islands4: Vec::new(),
    }
}

/// A destination, in address order: the vertex whose search result decides its next hop
/// (its router if it is the only one, else the subnet itself) and its addresses.
struct Dest {
    vertex: u32,
    start: u32,
    end: u32,
}

/// The routes of router `r`: a search from its subnets over `core` (the graph without
/// single-router subnets), then every destination in address order. With `ecmp`, each
/// destination's next hops are every first hop of its shortest paths. The IPv6 routes
/// (destinations `dests.1`) come from the same search.
#[expect(
    clippy::too_many_arguments,
    reason = "scratch space threaded through the searches"
)]
fn router_routes(
    topo: &Topology,
    core: &Graph,
    r: usize,
    single: &[Option<usize>],
    (dests, dests6): (&[Dest], &[(u32, Ipv6Net)]),
    search: &mut Search,
    group_of: &mut Vec<usize>,
    mut ecmp: Option<&mut HopSets>,
) -> RouterRoutes {
    let nr = core.routers;
    core.search(
        search,
        topo.routers[r]
            .subnets
            .iter()
            .enumerate()
            .filter(|&(_, &s)| single[s].is_none())
            .map(|(pos, &s)| (nr + s, pos as u64)),
        |position, w| ((w as u64) << 32) | position,
    );
    if let Some(sets) = ecmp.as_deref_mut() {
        sets.fill(core, search);
    }
    // A label names the next hops: the least first hop packed as (router, position), or
    // with ECMP the id of the set of first hops. Each label's destinations form a group.
    let label_of = |v: usize| match &ecmp {
        Some(sets) => u64::from(sets.of[v]),
        None => search.label[v],
    };
    let group_key = |label: u64| {
        usize::try_from(if ecmp.is_some() { label } else { label >> 32 }).expect("an index")
    };
    let mut groups: Vec<Group<u64>> = Vec::new();
    // Consecutive destinations mostly share their next hop and touch each other: they grow
    // one run of addresses, handed to its group when a destination does not continue it.
    let mut run: Option<(u64, usize, u32, u32)> = None; // label, group, start, end
    for dest in dests {
        let v = dest.vertex as usize;
        let d = search.dist[v];
        // Skip the unreachable and the connected: the search started at r's subnets, so
        // distance 0 is 1 from r; r's single-router subnets are decided by r itself.
        if d == UNSEEN || d == 0 || v == r {
            continue;
        }
        let label = label_of(v);
        if let Some((l, _, _, end)) = &mut run
            && *l == label
            && dest.start <= end.saturating_add(1)
        {
            *end = (*end).max(dest.end);
            continue;
        }
        if let Some((_, g, start, end)) = run {
            groups[g].add(start, end);
        }
        let key = group_key(label);
        if key >= group_of.len() {
            group_of.resize(key + 1, usize::MAX);
        }
        let g = &mut group_of[key];
        if *g == usize::MAX {
            *g = groups.len();
            groups.push(Group {
                hop: label,
                intervals: Vec::new(),
            });
        }
        run = Some((label, *g, dest.start, dest.end));
    }
    if let Some((_, g, start, end)) = run {
        groups[g].add(start, end);
    }
    for g in &groups {
        group_of[group_key(g.hop)] = usize::MAX;
    }
    let hop = |packed: u64| Hop {
        router: usize::try_from(packed >> 32).expect("a router index"),
        via_position: usize::try_from(packed & 0xffff_ffff).expect("a position"),
    };
    let hops_of = |label: u64| -> Vec<Hop> {
        match &ecmp {
            Some(sets) => sets.sets[group_key(label)]
                .iter()
                .map(|&p| hop(p))
                .collect(),
            None => vec![hop(label)],
        }
    };
    let v4 = Group::finish(groups)
        .into_iter()
        .map(|(prefix, label)| (prefix, hops_of(label)))
        .collect();
    // IPv6: the same decisions for the subnets' IPv6 prefixes, aggregated by label
    let decisions6: Vec<(Ipv6Net, u64)> = dests6
        .iter()
        .filter(|&&(vertex, _)| {
            let v = vertex as usize;
            let d = search.dist[v];
            d != UNSEEN && d != 0 && v != r
        })
        .map(|&(vertex, net)| (net, label_of(vertex as usize)))
        .collect();
    let v6 = aggregate6(decisions6)
        .into_iter()
        .map(|(prefix, label)| (prefix, hops_of(label)))
        .collect();
    (v4, v6)
}

/// A router's routes: IPv4, IPv6.
type RouterRoutes = (Vec<(Ipv4Net, Vec<Hop>)>, Vec<(Ipv6Net, Vec<Hop>)>);

/// ECMP: the sets of first hops (packed as (router, position)) of one router's search,
/// interned, so that the vertices sharing a set share its id. Id 0 is the empty set.
struct HopSets {
    sets: Vec<Vec<u64>>,
    ids: HashMap<Vec<u64>, u32>,
    /// Unions already made.
    unions: HashMap<(u32, u32), u32>,
    /// Per vertex, the id of its set (vertices the search reached).
    of: Vec<u32>,
}

impl HopSets {
    fn new(vertices: usize) -> HopSets {
        HopSets {
            sets: Vec::new(),
            ids: HashMap::new(),
            unions: HashMap::new(),
            of: vec![0; vertices],
        }
    }

    fn intern(&mut self, set: Vec<u64>) -> u32 {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = u32::try_from(self.sets.len()).expect("fewer than 2^32 sets");
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        id
    }

    fn union(&mut self, a: u32, b: u32) -> u32 {
        if a == b {
            return a;
        }
        let key = (a.min(b), a.max(b));
        if let Some(&id) = self.unions.get(&key) {
            return id;
        }
        let mut set: Vec<u64> = self.sets[a as usize]
            .iter()
            .chain(&self.sets[b as usize])
            .copied()
            .collect();
        set.sort_unstable();
        set.dedup();
        let id = self.intern(set);
        self.unions.insert(key, id);
        id
    }

    /// Every reached vertex's first hops over all the shortest paths of `search`, whose
    /// sources are labelled with their position among the router's subnets: a router next
    /// to a source is a first hop through each source it touches; any other vertex has the
    /// union of its predecessors' first hops.
    fn fill(&mut self, graph: &Graph, search: &Search) {
        self.sets.clear();
        self.ids.clear();
        self.unions.clear();
        self.intern(Vec::new());
        for &v in &search.order {
            let v = v as usize;
            let d = search.dist[v];
            let id = match d {
                0 => 0,
                1 => {
                    let mut hops: Vec<u64> = graph
                        .neighbours(v)
                        .iter()
                        .map(|&u| u as usize)
                        .filter(|&u| search.dist[u] == 0)
                        .map(|u| ((v as u64) << 32) | search.label[u])
                        .collect();
                    hops.sort_unstable();
                    hops.dedup();
                    self.intern(hops)
                }
                _ => {
                    let mut acc: Option<u32> = None;
                    for &u in graph.neighbours(v) {
                        let u = u as usize;
                        if search.dist[u].wrapping_add(1) == d {
                            let s = self.of[u];
                            acc = Some(acc.map_or(s, |a| self.union(a, s)));
                        }
                    }
                    acc.unwrap_or(0)
                }
            };
            self.of[v] = id;
        }
    }
}

/// Groups of subnets that reach each other, in order of their first subnet, each sorted;
/// empty when there is only one.
fn islands(graph: &Graph, search: &mut Search, ns: usize) -> Vec<Vec<usize>> {
    let nr = graph.routers;
    let mut island_of = vec![usize::MAX; ns];
    let mut islands: Vec<Vec<usize>> = Vec::new();
    for s in 0..ns {
        if island_of[s] != usize::MAX {
            continue;
        }
        graph.search(search, [(nr + s, 0)], |label, _| label);
        let mut members: Vec<usize> = search
            .order
            .iter()
            .filter_map(|&v| (v as usize).checked_sub(nr))
            .collect();
        members.sort_unstable();
        for &t in &members {
            island_of[t] = islands.len();
        }
        islands.push(members);
    }
    if islands.len() == 1 {
        islands.clear();
    }
    islands
}

/// Only connected routes for routers; hosts keep a default gateway (the first router on their
/// subnet) so that a routing daemon in the routers is all the network needs.
#[must_use]
pub fn gateways_only(topo: &Topology) -> Routing {
    let mut default_gateway = vec![None; topo.subnets.len()];
    for (r, router) in topo.routers.iter().enumerate() {
        for &s in &router.subnets {
            default_gateway[s].get_or_insert(vec![r]);
        }
    }
    Routing {
        default_gateway6: None,
        routers: vec![Vec::new(); topo.routers.len()],
        routers6: Vec::new(),
        host_routes: vec![Vec::new(); topo.subnets.len()],
        host_routes6: vec![Vec::new(); topo.subnets.len()],
        default_gateway,
        islands: Vec::new(),
        islands4: Vec::new(),
    }
}

/// The value chosen for most destinations; ties go to the smallest.
fn majority<K, T: Clone + Ord>(decisions: &[(K, T)]) -> Option<T> {
    let mut counts: BTreeMap<&T, usize> = BTreeMap::new();
    for (_, v) in decisions {
        *counts.entry(v).or_default() += 1;
    }
    // max_by_key keeps the last maximum: iterate in reverse so ties go to the smallest
    counts
        .into_iter()
        .rev()
        .max_by_key(|&(_, n)| n)
        .map(|(v, _)| v.clone())
}

/// Groups destinations by next hop and aggregates each group exactly; sorted by prefix.
pub(super) fn aggregate<T: Clone + Ord>(decisions: Vec<(Ipv4Net, T)>) -> Vec<(Ipv4Net, T)> {
    aggregate_with(decisions, Ipv4Net::aggregate)
}

/// [`aggregate`] for IPv6 prefixes.
pub(super) fn aggregate6<T: Clone + Ord>(decisions: Vec<(Ipv6Net, T)>) -> Vec<(Ipv6Net, T)> {
    aggregate_with(decisions, Ipv6Net::aggregate)
}

/// [`aggregate`] in either family: `merge` is the family's exact aggregation. Prefixes
/// order by network address, then length.
fn aggregate_with<N: Copy + Ord, T: Clone + Ord>(
    decisions: Vec<(N, T)>,
    merge: fn(&Vec<N>) -> Vec<N>,
) -> Vec<(N, T)> {
    let mut groups: BTreeMap<T, Vec<N>> = BTreeMap::new();
    for (prefix, hop) in decisions {
        groups.entry(hop).or_default().push(prefix);
    }
    let mut out: Vec<(N, T)> = groups
        .into_iter()
        .flat_map(|(hop, prefixes)| merge(&prefixes).into_iter().map(move |p| (p, hop.clone())))
        .collect();
    out.sort_by_key(|&(p, _)| p);
    out
}

/// The destinations of one next hop, merged into address intervals as they arrive in address
/// order: exactly the intervals `Ipv4Net::aggregate` finds after sorting them, without
/// keeping every prefix.
struct Group<T> {
    hop: T,
    intervals: Vec<(u32, u32)>,
}

impl<T: Copy + Ord> Group<T> {
    /// Adds the addresses `start..=end`, starting at or after everything added before.
    fn add(&mut self, start: u32, end: u32) {
        if let Some(last) = self.intervals.last_mut()
            && start <= last.1.saturating_add(1)
        {
            last.1 = last.1.max(end);
        } else {
            self.intervals.push((start, end));
        }
    }

    /// The fewest prefixes covering each group exactly (as `aggregate`): sorted by prefix,
    /// then by next hop.
    fn finish(mut groups: Vec<Group<T>>) -> Vec<(Ipv4Net, T)> {
        groups.sort_unstable_by_key(|g| g.hop);
        let mut out: Vec<(Ipv4Net, T)> = groups
            .iter()
            .flat_map(|g| {
                g.intervals.iter().flat_map(move |&(start, end)| {
                    Ipv4Subnets::new(start.into(), end.into(), 0).map(move |p| (p, g.hop))
                })
            })
            .collect();
        out.sort_by_key(|&(p, _)| (u32::from(p.network()), p.prefix_len()));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use serde_json::json;

    use super::*;
    use crate::generate::{GenSpec, Shape, generate};

    /// The first implementation, kept as the definition: one search from each destination
    /// subnet, every decision of every router and subnet kept, then aggregated.
    fn reference(topo: &Topology) -> Routing {
        let nr = topo.routers.len();
        let ns = topo.subnets.len();
        let mut adj = vec![Vec::new(); nr + ns];
        let mut on_subnet: Vec<Vec<(usize, usize)>> = vec![Vec::new(); ns];
        for (r, router) in topo.routers.iter().enumerate() {
            for (pos, &s) in router.subnets.iter().enumerate() {
                adj[r].push(nr + s);
                adj[nr + s].push(r);
                on_subnet[s].push((r, pos));
            }
        }
        let mut per_router: Vec<Vec<(Ipv4Net, Vec<Hop>)>> = vec![Vec::new(); nr];
        let mut per_subnet_gw: Vec<Vec<(Ipv4Net, Vec<usize>)>> = vec![Vec::new(); ns];
        let mut island_of = vec![usize::MAX; ns];
        let mut islands: Vec<Vec<usize>> = Vec::new();
        for dest in 0..ns {
            let mut dist = vec![u32::MAX; nr + ns];
            dist[nr + dest] = 0;
            let mut queue = VecDeque::from([nr + dest]);
            while let Some(v) = queue.pop_front() {
                for &n in &adj[v] {
                    if dist[n] == u32::MAX {
                        dist[n] = dist[v] + 1;
                        queue.push_back(n);
                    }
                }
            }
            if island_of[dest] == usize::MAX {
                let members: Vec<usize> = (0..ns).filter(|&t| dist[nr + t] != u32::MAX).collect();
                for &t in &members {
                    island_of[t] = islands.len();
                }
                islands.push(members);
            }
            let prefix = topo.subnets[dest]
                .cidr
                .expect("the reference routes IPv4 labs");
            for (r, router) in topo.routers.iter().enumerate() {
                let d = dist[r];
                if d == u32::MAX || d <= 1 {
                    continue;
                }
                let mut closer: Vec<Hop> = router
                    .subnets
                    .iter()
                    .enumerate()
                    .flat_map(|(pos, &t)| {
                        on_subnet[t]
                            .iter()
                            .filter(|&&(r2, _)| r2 != r && dist[r2] + 2 == d)
                            .map(move |&(r2, _)| Hop {
                                router: r2,
                                via_position: pos,
                            })
                    })
                    .collect();
                closer.sort_unstable();
                closer.dedup();
                assert!(!closer.is_empty(), "a closer neighbour");
                if !topo.ecmp {
                    closer.truncate(1);
                }
                per_router[r].push((prefix, closer));
            }
            for (t, routers) in on_subnet.iter().enumerate() {
                if t == dest {
                    continue;
                }
                if let Some(best) = routers
                    .iter()
                    .map(|&(r, _)| dist[r])
                    .filter(|&d| d != u32::MAX)
                    .min()
                {
                    let mut gws: Vec<usize> = routers
                        .iter()
                        .filter(|&&(r, _)| dist[r] == best)
                        .map(|&(r, _)| r)
                        .collect();
                    gws.sort_unstable();
                    if !topo.ecmp {
                        gws.truncate(1);
                    }
                    per_subnet_gw[t].push((prefix, gws));
                }
            }
        }
        let mut default_gateway = Vec::new();
        let mut host_routes = Vec::new();
        for (t, decisions) in per_subnet_gw.into_iter().enumerate() {
            let gw = majority(&decisions).or_else(|| on_subnet[t].first().map(|&(r, _)| vec![r]));
            host_routes.push(aggregate(
                decisions
                    .into_iter()
                    .filter(|(_, g)| Some(g) != gw.as_ref())
                    .collect(),
            ));
            default_gateway.push(gw);
        }
        if islands.len() == 1 {
            islands.clear();
        }
        Routing {
            routers6: Vec::new(),
            host_routes6: Vec::new(),
            routers: per_router.into_iter().map(aggregate).collect(),
            default_gateway6: None,
            default_gateway,
            host_routes,
            islands,
            islands4: Vec::new(),
        }
    }

    /// The same routes as the definition, with ties to one path and with ECMP.
    fn assert_same(topo: &Topology, what: &str) {
        for ecmp in [false, true] {
            let mut topo = topo.clone();
            topo.ecmp = ecmp;
            let what = format!("{what} (ecmp {ecmp})");
            let (got, want) = (compute(&topo), reference(&topo));
            assert_eq!(got.routers, want.routers, "{what}: router routes");
            assert_eq!(got.islands, want.islands, "{what}: islands");
            for h in &topo.hosts {
                let s = h.subnet;
                assert_eq!(
                    got.default_gateway[s], want.default_gateway[s],
                    "{what}: gateway of subnet {s}"
                );
                assert_eq!(
                    got.host_routes[s], want.host_routes[s],
                    "{what}: host routes of subnet {s}"
                );
            }
        }
    }

    fn read(doc: &serde_json::Value) -> Topology {
        Topology::from_json(&doc.to_string(), "test.json")
            .unwrap_or_else(|e| panic!("a valid topology: {e}"))
    }

    #[test]
    fn per_router_searches_match_the_per_destination_definition_on_generated_shapes() {
        for shape in [
            Shape::Chain,
            Shape::Ring,
            Shape::Star,
            Shape::Tree,
            Shape::Grid,
        ] {
            for nodes in [3, 7, 40, 130] {
                for hosts_per_lan in [0, 1, 3] {
                    let spec = GenSpec::of(shape, nodes, hosts_per_lan);
                    if let Ok(doc) = generate(&spec) {
                        assert_same(&read(&doc), &format!("{shape:?} {nodes}/{hosts_per_lan}"));
                    }
                }
            }
        }
        // fabrics, where nearly every route has several next hops
        for k in [2, 4, 6] {
            let doc = crate::generate::fat_tree(k, None, true).expect("a fat tree");
            assert_same(&read(&doc), &format!("fat tree k={k}"));
        }
        for (spines, leaves, hosts) in [(1, 3, 1), (3, 4, 2), (4, 5, 0)] {
            let doc = crate::generate::clos(spines, leaves, hosts, None, true).expect("a Clos");
            assert_same(&read(&doc), &format!("clos {spines}/{leaves}/{hosts}"));
        }
    }

    /// Networks of [`PARALLEL_FROM`] routers or more share the routers' searches out among
    /// threads (on a machine of several CPUs): the same routes as the definition.
    #[test]
    fn searches_shared_among_threads_match_the_definition() {
        for (shape, nodes) in [
            (Shape::Chain, 1100),
            (Shape::Tree, 1100),
            (Shape::Grid, 1100),
        ] {
            let spec = GenSpec::of(shape, nodes, 1);
            let topo = read(&generate(&spec).expect("a generated network"));
            assert!(
                topo.routers.len() >= PARALLEL_FROM,
                "{shape:?}: enough routers"
            );
            assert_same(&topo, &format!("{shape:?} {nodes}"));
        }
    }

    /// Generated fabrics number their links so that what lies behind one next hop
    /// aggregates: at k = 8 a fat tree's router needs at most 56 routes (165 with the links
    /// numbered as made), a Clos leaf one per other leaf's LAN and one per spine's block.
    #[test]
    fn generated_fabrics_aggregate_their_links() {
        let doc = crate::generate::fat_tree(8, None, true).expect("a fat tree");
        let most = compute(&read(&doc))
            .routers
            .iter()
            .map(Vec::len)
            .max()
            .expect("routers");
        assert!(most <= 56, "{most} routes on one router of a k=8 fat tree");
        let doc = crate::generate::clos(4, 8, 2, None, true).expect("a Clos");
        let topo = read(&doc);
        let routing = compute(&topo);
        for (r, routes) in topo.routers.iter().zip(&routing.routers) {
            if r.name.starts_with('l') {
                assert!(routes.len() <= 7 + 8, "{}: {} routes", r.name, routes.len());
            }
        }
    }

    #[test]
    fn ecmp_uses_every_spine_and_only_shortest_paths() {
        let doc = crate::generate::fat_tree(4, None, true).expect("a fat tree");
        let topo = read(&doc);
        let routing = compute(&topo);
        let r = topo
            .routers
            .iter()
            .position(|r| r.name == "e0-0")
            .expect("e0-0");
        // another pod: up through both aggregation routers of the pod
        let far: Ipv4Net = "10.3.0.0/23".parse().expect("a prefix");
        let (_, hops) = routing.routers[r]
            .iter()
            .find(|(p, _)| *p == far)
            .expect("a route to pod 3");
        let names: Vec<&str> = hops
            .iter()
            .map(|h| topo.routers[h.router].name.as_str())
            .collect();
        assert_eq!(names, ["a0-0", "a0-1"]);
        // an aggregation router toward another pod: each of its k/2 cores
        let a = topo
            .routers
            .iter()
            .position(|r| r.name == "a0-1")
            .expect("a0-1");
        let (_, hops) = routing.routers[a]
            .iter()
            .find(|(p, _)| {
                p.contains(
                    &"10.2.1.1"
                        .parse::<std::net::Ipv4Addr>()
                        .expect("an address"),
                )
            })
            .expect("a route to pod 2");
        let names: Vec<&str> = hops
            .iter()
            .map(|h| topo.routers[h.router].name.as_str())
            .collect();
        assert_eq!(names, ["c1-0", "c1-1"]);
    }

    /// Random labs: LANs shared by several routers, host-less subnets, islands, subnets
    /// numbered out of address order (so that aggregation and ties are exercised).
    #[test]
    fn per_router_searches_match_the_per_destination_definition_on_random_labs() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % n as u64).expect("small")
        };
        for lab in 0..150 {
            let subnets = 2 + next(30);
            // distinct third octets, shuffled: neighbours in the file are rarely neighbours
            // in address space, and adjacent /24s aggregate
            let mut octets: Vec<usize> = (0..256).collect();
            for i in (1..octets.len()).rev() {
                octets.swap(i, next(i + 1));
            }
            let mut doc_subnets = serde_json::Map::new();
            for (s, octet) in octets.iter().take(subnets).enumerate() {
                let hosts: serde_json::Map<String, serde_json::Value> = (0..[0, 0, 1, 2][next(4)])
                    .map(|h| (format!("h{s}-{h}"), json!({})))
                    .collect();
                doc_subnets.insert(
                    format!("s{s}"),
                    json!({"cidr": format!("10.{}.{octet}.0/24", next(2)), "hosts": hosts}),
                );
            }
            let mut doc_routers = serde_json::Map::new();
            for r in 0..=next(20) {
                let mut on: Vec<String> = Vec::new();
                for _ in 0..=next(4) {
                    let s = format!("s{}", next(subnets));
                    if !on.contains(&s) {
                        on.push(s);
                    }
                }
                doc_routers.insert(format!("r{r}"), json!({"subnets": on}));
            }
            let doc = json!({
                "name": format!("lab {lab}"),
                "automatic_routing": true,
                "subnets": doc_subnets,
                "routers": doc_routers,
            });
            assert_same(&read(&doc), &format!("lab {lab}: {doc}"));
        }
    }
}
