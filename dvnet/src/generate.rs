//! Generated topologies, written in the topology file format (`dvnet gen`), for tests and
//! benchmarks.
//!
//! Every shape is a graph of routers. Each router has a LAN subnet `n<i>` holding
//! `hosts_per_lan` hosts `h<i>-<j>` (no LAN when that is 0); each edge between two routers is
//! a transit subnet `t<i>-<j>` (a /30). LANs are numbered `10.x.y.0/24` in router order and
//! transits `172.16.0.0/12` in edge order, so neighbouring routers' prefixes aggregate.
//! The node count asked for is routers + hosts, so `gen chain 1000` is comparable with
//! Mininet's `linear,500` (500 switches + 500 hosts).
//!
//! Data-center fabrics have their own generators, with `"ecmp": true`: a leaf-spine Clos
//! ([`clos`]) and a k-ary fat tree ([`fat_tree`], Al-Fares et al. 2008). Asked for by node
//! count (`bench suite`), they take the largest fabric of their kind that fits.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Map, Value, json};

/// The shape of the router graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// r1 - r2 - ... - rk
    Chain,
    /// a chain closed into a cycle
    Ring,
    /// r1 in the middle, every other router joined to it
    Star,
    /// a tree with `fanout` children per router, r1 at the root
    Tree,
    /// a square grid, each router joined to its right and lower neighbours
    Grid,
    /// leaf-spine: every leaf joined to every spine, hosts on the leaves (`gen clos SPINES
    /// LEAVES HOSTS_PER_LEAF`)
    Clos,
    /// a k-ary fat tree: k pods of k/2 edge and k/2 aggregation routers, (k/2)² cores,
    /// k/2 hosts per edge router (`gen fattree K`)
    Fattree,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenSpec {
    pub shape: Shape,
    /// Total nodes (routers + hosts).
    pub nodes: usize,
    pub hosts_per_lan: usize,
    /// Children per router, for trees.
    pub fanout: usize,
    pub name: Option<String>,
}

#[cfg(test)]
impl GenSpec {
    /// For tests: a network of that shape, trees of fanout 3, the default name.
    #[must_use]
    pub fn of(shape: Shape, nodes: usize, hosts_per_lan: usize) -> GenSpec {
        GenSpec {
            shape,
            nodes,
            hosts_per_lan,
            fanout: 3,
            name: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("{0}")]
    Invalid(String),
}

/// Router edges of a shape over `k` routers (0-based, lower index first).
fn edges(shape: Shape, k: usize, fanout: usize) -> Vec<(usize, usize)> {
    match shape {
        Shape::Chain => (1..k).map(|i| (i - 1, i)).collect(),
        Shape::Ring => {
            let mut e: Vec<_> = (1..k).map(|i| (i - 1, i)).collect();
            if k >= 3 {
                e.push((0, k - 1));
            }
            e
        }
        Shape::Star => (1..k).map(|i| (0, i)).collect(),
        Shape::Tree => (1..k).map(|i| ((i - 1) / fanout, i)).collect(),
        Shape::Clos | Shape::Fattree => unreachable!("fabrics have generators of their own"),
        Shape::Grid => {
            let side = (1..=k).find(|s| s * s >= k).unwrap_or(1);
            let mut e = Vec::new();
            for i in 0..k {
                if (i + 1) % side != 0 && i + 1 < k {
                    e.push((i, i + 1));
                }
                if i + side < k {
                    e.push((i, i + side));
                }
            }
            e
        }
    }
}

/// Generates a topology file.
///
/// # Errors
/// Sizes that do not fit (too few nodes for the shape, more than 65,536 LANs, ...).
pub fn generate(spec: &GenSpec) -> Result<Value, GenError> {
    match spec.shape {
        Shape::Fattree => return fat_tree(fat_tree_k_for(spec.nodes)?, spec.name.clone(), true),
        Shape::Clos => {
            let (spines, leaves, hosts) = clos_for(spec.nodes, spec.hosts_per_lan)?;
            return clos(spines, leaves, hosts, spec.name.clone(), true);
        }
        _ => {}
    }
    let per_router = 1 + spec.hosts_per_lan;
    let routers = spec.nodes.div_ceil(per_router).max(1);
    let hosts = spec.nodes.saturating_sub(routers);
    if spec.shape == Shape::Ring && routers < 3 {
        return Err(GenError::Invalid(format!(
            "a ring needs at least 3 routers; {} nodes with {} hosts per LAN make {routers}",
            spec.nodes, spec.hosts_per_lan
        )));
    }
    if spec.shape == Shape::Tree && spec.fanout == 0 {
        return Err(GenError::Invalid(
            "a tree needs a fanout of at least 1".into(),
        ));
    }
    if spec.hosts_per_lan > 250 {
        return Err(GenError::Invalid(
            "at most 250 hosts per LAN (LANs are /24)".into(),
        ));
    }
    if spec.hosts_per_lan > 0 && routers > 65_536 {
        return Err(GenError::Invalid(
            "at most 65,536 LANs (10.0.0.0/8 in /24s)".into(),
        ));
    }
    let edges = edges(spec.shape, routers, spec.fanout.max(1));
    if edges.len() > 1 << 18 {
        return Err(GenError::Invalid(
            "at most 262,144 transit links (172.16.0.0/12 in /30s)".into(),
        ));
    }

    let mut subnets = Map::new();
    let mut router_subnets: Vec<Vec<String>> = vec![Vec::new(); routers];
    // hosts spread over LANs in order: the first LANs get one more when it does not divide
    let mut remaining = hosts;
    for (i, subnets_of) in router_subnets.iter_mut().enumerate() {
        if spec.hosts_per_lan == 0 {
            break;
        }
        let lan = format!("n{}", i + 1);
        let base =
            u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (u32::try_from(i).expect("checked") << 8);
        let cidr = Ipv4Net::new(Ipv4Addr::from(base), 24).expect("valid /24");
        let count = remaining.min(spec.hosts_per_lan);
        remaining -= count;
        let mut lan_hosts = Map::new();
        for j in 0..count {
            lan_hosts.insert(format!("h{}-{}", i + 1, j + 1), json!({}));
        }
        subnets.insert(
            lan.clone(),
            json!({"cidr": cidr.to_string(), "hosts": lan_hosts}),
        );
        subnets_of.push(lan);
    }
    for (e, &(a, b)) in edges.iter().enumerate() {
        let name = format!("t{}-{}", a + 1, b + 1);
        let base =
            u32::from(Ipv4Addr::new(172, 16, 0, 0)) + (u32::try_from(e).expect("checked") << 2);
        let cidr = Ipv4Net::new(Ipv4Addr::from(base), 30).expect("valid /30");
        subnets.insert(name.clone(), json!({"cidr": cidr.to_string(), "hosts": {}}));
        router_subnets[a].push(name.clone());
        router_subnets[b].push(name);
    }
    let mut routers_json = Map::new();
    for (i, s) in router_subnets.into_iter().enumerate() {
        if s.is_empty() {
            return Err(GenError::Invalid(
                "a single router with no hosts has no subnet; ask for more nodes".into(),
            ));
        }
        routers_json.insert(format!("r{}", i + 1), json!({"subnets": s}));
    }
    let shape = format!("{:?}", spec.shape).to_lowercase();
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| format!("gen-{shape}-{}", spec.nodes));
    Ok(json!({
        "name": name,
        "automatic_routing": true,
        "subnets": subnets,
        "routers": routers_json,
    }))
}

/// Nodes of a k-ary fat tree: k³/4 hosts, k²/2 edge and aggregation routers, k²/4 cores.
#[must_use]
pub fn fat_tree_nodes(k: usize) -> usize {
    k * k * k / 4 + k * k + k * k / 4
}

/// The largest fat tree of at most `nodes` nodes (k even, at least 2).
fn fat_tree_k_for(nodes: usize) -> Result<usize, GenError> {
    let k = (1..=32)
        .map(|i| 2 * i)
        .take_while(|&k| fat_tree_nodes(k) <= nodes)
        .last()
        .ok_or_else(|| {
            GenError::Invalid(format!(
                "the smallest fat tree (k = 2) has {} nodes",
                fat_tree_nodes(2)
            ))
        })?;
    Ok(k)
}

/// A leaf-spine Clos of about `nodes` nodes with `hosts_per_leaf` hosts on each leaf (at
/// least 1): 2 spines under 20 nodes, 4 under 200, 8 under 2,000, 16 from there.
fn clos_for(nodes: usize, hosts_per_leaf: usize) -> Result<(usize, usize, usize), GenError> {
    let hosts = hosts_per_leaf.max(1);
    let spines = match nodes {
        0..20 => 2,
        20..200 => 4,
        200..2000 => 8,
        _ => 16,
    };
    let leaves = nodes.saturating_sub(spines) / (1 + hosts);
    if leaves < 2 {
        return Err(GenError::Invalid(format!(
            "a Clos of {spines} spines and 2 leaves of {hosts} hosts needs {} nodes",
            spines + 2 * (1 + hosts)
        )));
    }
    Ok((spines, leaves, hosts))
}

/// The `index`-th point-to-point /30 of 172.16.0.0/12. Fabrics number their links in
/// blocks that follow the topology (a spine's links, a pod's links), so that what lies
/// behind one next hop aggregates into a few prefixes: a router's routes grow with the
/// fabric's blocks, not with its links.
fn transit(index: usize) -> Result<String, GenError> {
    let index = u32::try_from(index)
        .ok()
        .filter(|&i| i < 1 << 18)
        .ok_or_else(|| {
            GenError::Invalid(
                "at most 262,144 links between routers (172.16.0.0/12 in /30s)".into(),
            )
        })?;
    let base = u32::from(Ipv4Addr::new(172, 16, 0, 0)) + (index << 2);
    Ok(Ipv4Net::new(Ipv4Addr::from(base), 30)
        .expect("valid /30")
        .to_string())
}

/// The document of a generated fabric.
fn fabric_doc(
    name: &str,
    ecmp: bool,
    subnets: &Map<String, Value>,
    routers: &Map<String, Value>,
) -> Value {
    json!({
        "name": name,
        "automatic_routing": true,
        "ecmp": ecmp,
        "subnets": subnets,
        "routers": routers,
    })
}

/// A leaf-spine Clos: spines `s1..`, leaves `l1..` each joined to every spine by a /30
/// `s<i>-l<j>`, and leaf `l<j>`'s LAN `n<j>` (`10.x.y.0/24`) holding hosts `h<j>-<h>`.
///
/// # Errors
/// Sizes that do not fit the addressing (more than 250 hosts per leaf, 65,536 leaves).
pub fn clos(
    spines: usize,
    leaves: usize,
    hosts_per_leaf: usize,
    name: Option<String>,
    ecmp: bool,
) -> Result<Value, GenError> {
    if spines == 0 || leaves == 0 {
        return Err(GenError::Invalid(
            "a Clos needs at least one spine and one leaf".into(),
        ));
    }
    if hosts_per_leaf > 250 {
        return Err(GenError::Invalid(
            "at most 250 hosts per leaf (LANs are /24)".into(),
        ));
    }
    if leaves > 65_536 {
        return Err(GenError::Invalid(
            "at most 65,536 leaves (10.0.0.0/8 in /24s)".into(),
        ));
    }
    let mut subnets = Map::new();
    let mut routers = Map::new();
    // spine s's links to the leaves are one block: behind spine s for every leaf
    let per_spine = leaves.next_power_of_two();
    let mut spine_subnets: Vec<Vec<String>> = vec![Vec::new(); spines];
    for l in 1..=leaves {
        let mut on = Vec::with_capacity(spines + 1);
        if hosts_per_leaf > 0 {
            let lan = format!("n{l}");
            let base = u32::from(Ipv4Addr::new(10, 0, 0, 0))
                + (u32::try_from(l - 1).expect("checked") << 8);
            let hosts: Map<String, Value> = (1..=hosts_per_leaf)
                .map(|h| (format!("h{l}-{h}"), json!({})))
                .collect();
            subnets.insert(
                lan.clone(),
                json!({"cidr": format!("{}/24", Ipv4Addr::from(base)), "hosts": hosts}),
            );
            on.push(lan);
        }
        for (s, of_spine) in spine_subnets.iter_mut().enumerate() {
            let link = format!("s{}-l{l}", s + 1);
            let cidr = transit(s * per_spine + l - 1)?;
            subnets.insert(link.clone(), json!({"cidr": cidr, "hosts": {}}));
            of_spine.push(link.clone());
            on.push(link);
        }
        routers.insert(format!("l{l}"), json!({ "subnets": on }));
    }
    for (s, on) in spine_subnets.into_iter().enumerate() {
        routers.insert(format!("s{}", s + 1), json!({ "subnets": on }));
    }
    let name = name.unwrap_or_else(|| format!("gen-clos-{spines}-{leaves}-{hosts_per_leaf}"));
    Ok(fabric_doc(&name, ecmp, &subnets, &routers))
}

/// A k-ary fat tree: in pod `p`, edge routers `e<p>-<i>` and aggregation routers
/// `a<p>-<j>` (every edge joined to every aggregation router of its pod), core routers
/// `c<j>-<i>` joined to aggregation router `j` of every pod; edge `e<p>-<i>`'s LAN
/// `n<p>-<i>` (`10.p.i.0/24`) holds k/2 hosts `h<p>-<i>-<h>`.
///
/// # Errors
/// k odd, below 2, or above 64 (the addressing's limit: 65,536 links).
pub fn fat_tree(k: usize, name: Option<String>, ecmp: bool) -> Result<Value, GenError> {
    if k < 2 || !k.is_multiple_of(2) || k > 64 {
        return Err(GenError::Invalid(format!(
            "a fat tree's k is even, from 2 to 64 (got {k})"
        )));
    }
    let half = k / 2;
    let mut subnets = Map::new();
    let mut routers = Map::new();
    // Links are numbered in blocks of what lies behind one next hop for most routers:
    // pod p's edge-to-aggregation links, aggregation router j's within it (behind the pod's
    // aggregation routers for everyone outside the pod, behind j for the pod's edges); then
    // core group j's links to the pods, pod q's within it (behind aggregation router j of
    // the pod for an edge, behind the pod's edges for its other aggregation routers).
    let per_pod = (half * half).next_power_of_two();
    let per_group = (k * half).next_power_of_two();
    let groups_base = k * per_pod;
    let edge_link = |p: usize, j: usize, i: usize| p * per_pod + j * half + i;
    let core_link = |q: usize, j: usize, i: usize| groups_base + j * per_group + q * half + i;
    let mut core_subnets: Vec<Vec<String>> = vec![Vec::new(); half * half];
    for p in 0..k {
        let mut agg_subnets: Vec<Vec<String>> = vec![Vec::new(); half];
        for i in 0..half {
            let lan = format!("n{p}-{i}");
            let hosts: Map<String, Value> = (1..=half)
                .map(|h| (format!("h{p}-{i}-{h}"), json!({})))
                .collect();
            subnets.insert(
                lan.clone(),
                json!({"cidr": format!("10.{p}.{i}.0/24"), "hosts": hosts}),
            );
            let mut on = vec![lan];
            for (j, of_agg) in agg_subnets.iter_mut().enumerate() {
                let link = format!("e{p}-{i}-a{j}");
                let cidr = transit(edge_link(p, j, i))?;
                subnets.insert(link.clone(), json!({"cidr": cidr, "hosts": {}}));
                of_agg.push(link.clone());
                on.push(link);
            }
            routers.insert(format!("e{p}-{i}"), json!({ "subnets": on }));
        }
        for (j, mut on) in agg_subnets.into_iter().enumerate() {
            for i in 0..half {
                let link = format!("a{p}-{j}-c{i}");
                let cidr = transit(core_link(p, j, i))?;
                subnets.insert(link.clone(), json!({"cidr": cidr, "hosts": {}}));
                core_subnets[j * half + i].push(link.clone());
                on.push(link);
            }
            routers.insert(format!("a{p}-{j}"), json!({ "subnets": on }));
        }
    }
    for (c, on) in core_subnets.into_iter().enumerate() {
        routers.insert(
            format!("c{}-{}", c / half, c % half),
            json!({ "subnets": on }),
        );
    }
    let name = name.unwrap_or_else(|| format!("gen-fattree-{k}"));
    Ok(fabric_doc(&name, ecmp, &subnets, &routers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: Shape, nodes: usize) -> GenSpec {
        GenSpec {
            shape,
            nodes,
            hosts_per_lan: 1,
            fanout: 2,
            name: None,
        }
    }

    fn count(v: &Value, key: &str) -> usize {
        v[key].as_object().map_or(0, Map::len)
    }

    #[test]
    fn node_count_is_routers_plus_hosts() {
        for shape in [
            Shape::Chain,
            Shape::Ring,
            Shape::Star,
            Shape::Tree,
            Shape::Grid,
        ] {
            for n in [6, 7, 100, 1001] {
                let v = generate(&spec(shape, n)).unwrap();
                let hosts: usize = v["subnets"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|s| s["hosts"].as_object().unwrap().len())
                    .sum();
                assert_eq!(count(&v, "routers") + hosts, n, "{shape:?} {n}");
            }
        }
    }

    #[test]
    fn shapes_have_the_expected_links() {
        assert_eq!(edges(Shape::Chain, 4, 2), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(
            edges(Shape::Ring, 4, 2),
            vec![(0, 1), (1, 2), (2, 3), (0, 3)]
        );
        assert_eq!(edges(Shape::Star, 4, 2), vec![(0, 1), (0, 2), (0, 3)]);
        assert_eq!(
            edges(Shape::Tree, 5, 2),
            vec![(0, 1), (0, 2), (1, 3), (1, 4)]
        );
        // a 3x3 grid missing its last cell
        assert_eq!(
            edges(Shape::Grid, 8, 2),
            vec![
                (0, 1),
                (0, 3),
                (1, 2),
                (1, 4),
                (2, 5),
                (3, 4),
                (3, 6),
                (4, 5),
                (4, 7),
                (6, 7)
            ]
        );
    }

    fn hosts(v: &Value) -> usize {
        v["subnets"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| s["hosts"].as_object().unwrap().len())
            .sum()
    }

    #[test]
    fn fabrics_have_their_textbook_sizes() {
        for k in [2, 4, 8] {
            let v = fat_tree(k, None, true).unwrap();
            assert_eq!(hosts(&v), k * k * k / 4, "k={k} hosts");
            assert_eq!(count(&v, "routers"), 5 * k * k / 4, "k={k} routers");
            // every router has k ports (edges: k/2 up, and their LAN)
            for (name, r) in v["routers"].as_object().unwrap() {
                let ports = r["subnets"].as_array().unwrap().len();
                let want = if name.starts_with('e') { k / 2 + 1 } else { k };
                assert_eq!(ports, want, "k={k} {name}");
            }
            assert_eq!(hosts(&v) + count(&v, "routers"), fat_tree_nodes(k));
        }
        assert!(fat_tree(3, None, true).is_err() && fat_tree(66, None, true).is_err());
        let v = clos(4, 6, 3, None, true).unwrap();
        assert_eq!((count(&v, "routers"), hosts(&v)), (10, 18));
        assert_eq!(v["routers"]["s1"]["subnets"].as_array().unwrap().len(), 6);
        assert_eq!(v["routers"]["l6"]["subnets"].as_array().unwrap().len(), 5);
        assert_eq!(v["ecmp"], true);
        // by node count: the largest that fits
        assert_eq!(fat_tree_k_for(10_000).unwrap(), 32);
        assert_eq!(fat_tree_k_for(36).unwrap(), 4);
        let v = generate(&spec(Shape::Clos, 1000)).unwrap();
        assert!(hosts(&v) + count(&v, "routers") <= 1000);
        assert!(hosts(&v) + count(&v, "routers") > 990);
    }

    #[test]
    fn a_ring_needs_three_routers() {
        assert!(generate(&spec(Shape::Ring, 4)).is_err());
        assert!(generate(&spec(Shape::Ring, 6)).is_ok());
    }
}
