//! Deterministic addresses: in each subnet, routers take the lowest free addresses in file
//! order, hosts follow in file order; an explicit `ip` wins and is never handed out twice.
//! The network and broadcast addresses are never handed out.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::PlanError;
use super::identity::Previous;
use crate::topology::Topology;

/// Addresses of every router interface (parallel to `Router::subnets`) and every host.
pub struct Addresses {
    pub routers: Vec<Vec<Ipv4Addr>>,
    pub hosts: Vec<Ipv4Addr>,
}

/// Hands out the free addresses of one subnet, lowest first.
struct Pool {
    next: u32,
    last: u32,
    taken: HashSet<u32>,
}

impl Pool {
    fn new(cidr: Ipv4Net) -> Pool {
        let first = u32::from(cidr.network()) + 1;
        let last = u32::from(cidr.broadcast()).saturating_sub(1);
        Pool {
            next: first,
            last,
            taken: HashSet::new(),
        }
    }

    fn take(&mut self) -> Option<Ipv4Addr> {
        while self.next <= self.last {
            let candidate = self.next;
            self.next += 1;
            if !self.taken.contains(&candidate) {
                return Some(Ipv4Addr::from(candidate));
            }
        }
        None
    }
}

/// Assigns every address. Explicit addresses first; then each node keeps the address it had
/// in `previous` (when its subnet kept its prefix and nobody claims it explicitly); then the
/// rest, lowest first, routers before hosts in file order. `reserved` addresses (the host's
/// end of the uplink) are never handed out.
///
/// # Errors
/// A subnet runs out of addresses (validation rejects such files first).
pub fn assign(
    topo: &Topology,
    previous: &Previous,
    reserved: &[(usize, Ipv4Addr)],
) -> Result<Addresses, PlanError> {
    let mut pools: Vec<Pool> = topo.subnets.iter().map(|s| Pool::new(s.cidr)).collect();
    for &(s, ip) in reserved {
        pools[s].taken.insert(u32::from(ip));
    }
    for r in &topo.routers {
        for (&s, ip) in r.subnets.iter().zip(&r.ips) {
            if let Some(ip) = ip {
                pools[s].taken.insert(u32::from(*ip));
            }
        }
    }
    for h in &topo.hosts {
        if let Some(ip) = h.ip {
            pools[h.subnet].taken.insert(u32::from(ip));
        }
    }
    // what each node had, where still free
    let keep = |pools: &mut Vec<Pool>, node: &str, s: usize| {
        let subnet = &topo.subnets[s];
        let ip = previous.address(node, &subnet.name, subnet.cidr)?;
        let n = u32::from(ip);
        let inside = n > u32::from(subnet.cidr.network()) && n < u32::from(subnet.cidr.broadcast());
        (inside && pools[s].taken.insert(n)).then_some(ip)
    };
    let kept_routers: Vec<Vec<Option<Ipv4Addr>>> = topo
        .routers
        .iter()
        .map(|r| {
            r.subnets
                .iter()
                .zip(&r.ips)
                .map(|(&s, ip)| ip.or_else(|| keep(&mut pools, &r.name, s)))
                .collect()
        })
        .collect();
    let kept_hosts: Vec<Option<Ipv4Addr>> = topo
        .hosts
        .iter()
        .map(|h| h.ip.or_else(|| keep(&mut pools, &h.name, h.subnet)))
        .collect();
    let mut take = |subnet: usize, known: Option<Ipv4Addr>| {
        known
            .or_else(|| pools[subnet].take())
            .ok_or_else(|| PlanError::SubnetExhausted {
                subnet: topo.subnets[subnet].name.clone(),
                cidr: topo.subnets[subnet].cidr,
            })
    };
    let routers = topo
        .routers
        .iter()
        .zip(kept_routers)
        .map(|(r, kept)| {
            r.subnets
                .iter()
                .zip(kept)
                .map(|(&s, ip)| take(s, ip))
                .collect()
        })
        .collect::<Result<Vec<Vec<_>>, _>>()?;
    let hosts = topo
        .hosts
        .iter()
        .zip(kept_hosts)
        .map(|(h, ip)| take(h.subnet, ip))
        .collect::<Result<_, _>>()?;
    Ok(Addresses { routers, hosts })
}
