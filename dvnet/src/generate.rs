//! Generated topologies, written in the topology file format (`dvnet gen`), for tests and
//! benchmarks.
//!
//! Every shape is a graph of routers. Each router has a LAN subnet `n<i>` holding
//! `hosts_per_lan` hosts `h<i>-<j>` (no LAN when that is 0); each edge between two routers is
//! a transit subnet `t<i>-<j>` (a /30). LANs are numbered `10.x.y.0/24` in router order and
//! transits `172.16.0.0/12` in edge order, so neighbouring routers' prefixes aggregate.
//! The node count asked for is routers + hosts, so `gen chain 1000` is comparable with
//! Mininet's `linear,500` (500 switches + 500 hosts).

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

    #[test]
    fn a_ring_needs_three_routers() {
        assert!(generate(&spec(Shape::Ring, 4)).is_err());
        assert!(generate(&spec(Shape::Ring, 6)).is_ok());
    }
}
