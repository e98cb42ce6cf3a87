//! Deterministic addresses: in each subnet, routers take the lowest free addresses in file
//! order, hosts follow in file order; an explicit `ip` (`ip6`) wins and is never handed out
//! twice. The network address is never handed out, nor in IPv4 the broadcast address. Both
//! families follow the same rules, each in its own pool: a node's IPv6 address on a subnet
//! is not derived from its IPv4 one (explicit addresses differ between them).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::PlanError;
use super::identity::Previous;
use crate::topology::Topology;

/// Addresses of every router interface (parallel to `Router::subnets`) and every host: IPv4
/// ones where the subnet has a `cidr` (all but IPv6-only subnets), IPv6 ones where it has a
/// `cidr6`.
pub struct Addresses {
    pub routers: Vec<Vec<Option<Ipv4Addr>>>,
    pub hosts: Vec<Option<Ipv4Addr>>,
    pub routers6: Vec<Vec<Option<Ipv6Addr>>>,
    pub hosts6: Vec<Option<Ipv6Addr>>,
}

/// Hands out the free addresses of one subnet, lowest first (addresses as numbers, so that
/// one pool serves both families).
struct Pool {
    next: u128,
    last: u128,
    taken: HashSet<u128>,
}

impl Pool {
    /// The usable range of `net`: after the network address, up to the broadcast address
    /// (IPv4) or the last address (IPv6).
    fn new(net: IpNet) -> Pool {
        let (first, last) = match net {
            IpNet::V4(n) => (
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())).saturating_sub(1),
            ),
            IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
        };
        Pool {
            next: first + 1,
            last,
            taken: HashSet::new(),
        }
    }

    fn contains(&self, n: u128, net: IpNet) -> bool {
        let network = match net {
            IpNet::V4(n) => u128::from(u32::from(n.network())),
            IpNet::V6(n) => u128::from(n.network()),
        };
        n > network && n <= self.last
    }

    fn take(&mut self) -> Option<u128> {
        while self.next <= self.last {
            let candidate = self.next;
            self.next += 1;
            if !self.taken.contains(&candidate) {
                return Some(candidate);
            }
        }
        None
    }
}

/// One family's view of the topology, as numbers: each subnet's prefix (if it has one in
/// this family), explicit addresses, and what each node had before.
struct Family<'a> {
    nets: Vec<Option<IpNet>>,
    router_ips: Vec<Vec<Option<u128>>>,
    host_ips: Vec<Option<u128>>,
    previous: Previously<'a>,
}

/// The address a node had on a subnet (by name and position), as a number.
type Previously<'a> = Box<dyn Fn(&str, usize) -> Option<u128> + 'a>;

/// Assigns every address. Explicit addresses first; then each node keeps the address it had
/// in `previous` (when its subnet kept its prefix and nobody claims it explicitly); then the
/// rest, lowest first, routers before hosts in file order. `reserved` addresses (the host's
/// ends of the uplink, in either family) are never handed out.
///
/// # Errors
/// A subnet runs out of addresses (validation rejects such files first).
pub fn assign(
    topo: &Topology,
    previous: &Previous,
    reserved: &[(usize, IpAddr)],
) -> Result<Addresses, PlanError> {
    let reserved_in = |v6: bool| -> Vec<(usize, u128)> {
        reserved
            .iter()
            .filter_map(|&(s, ip)| match ip {
                IpAddr::V4(ip) if !v6 => Some((s, v4_number(ip))),
                IpAddr::V6(ip) if v6 => Some((s, u128::from(ip))),
                _ => None,
            })
            .collect()
    };
    let v4 = Family {
        nets: topo.subnets.iter().map(|s| s.cidr.map(IpNet::V4)).collect(),
        router_ips: topo
            .routers
            .iter()
            .map(|r| r.ips.iter().map(|ip| ip.map(v4_number)).collect())
            .collect(),
        host_ips: topo.hosts.iter().map(|h| h.ip.map(v4_number)).collect(),
        previous: Box::new(|node, s| {
            let subnet = &topo.subnets[s];
            previous
                .address(node, &subnet.name, subnet.cidr?)
                .map(v4_number)
        }),
    };
    let (routers, hosts) = assign_family(topo, &v4, &reserved_in(false))?;
    let v4 = |n: Option<u128>| n.map(|n| Ipv4Addr::from(u32::try_from(n).expect("an IPv4 number")));
    let routers = routers
        .into_iter()
        .map(|r| r.into_iter().map(v4).collect())
        .collect();
    let hosts = hosts.into_iter().map(v4).collect();

    let (routers6, hosts6) = if topo.ipv6() {
        let v6 = Family {
            nets: topo
                .subnets
                .iter()
                .map(|s| s.cidr6.map(IpNet::V6))
                .collect(),
            router_ips: topo
                .routers
                .iter()
                .map(|r| r.ips6.iter().map(|ip| ip.map(u128::from)).collect())
                .collect(),
            host_ips: topo.hosts.iter().map(|h| h.ip6.map(u128::from)).collect(),
            previous: Box::new(|node, s| {
                let subnet = &topo.subnets[s];
                previous
                    .address6(node, &subnet.name, subnet.cidr6?)
                    .map(u128::from)
            }),
        };
        let (routers, hosts) = assign_family(topo, &v6, &reserved_in(true))?;
        let v6 = |n: Option<u128>| n.map(Ipv6Addr::from);
        (
            routers
                .into_iter()
                .map(|r| r.into_iter().map(v6).collect())
                .collect(),
            hosts.into_iter().map(v6).collect(),
        )
    } else {
        (
            topo.routers
                .iter()
                .map(|r| vec![None; r.subnets.len()])
                .collect(),
            vec![None; topo.hosts.len()],
        )
    };
    Ok(Addresses {
        routers,
        hosts,
        routers6,
        hosts6,
    })
}

fn v4_number(ip: Ipv4Addr) -> u128 {
    u128::from(u32::from(ip))
}

type Assigned = (Vec<Vec<Option<u128>>>, Vec<Option<u128>>);

/// The addresses of one family: `None` on the subnets without a prefix in it.
fn assign_family(
    topo: &Topology,
    family: &Family<'_>,
    reserved: &[(usize, u128)],
) -> Result<Assigned, PlanError> {
    let mut pools: Vec<Option<Pool>> = family.nets.iter().map(|n| n.map(Pool::new)).collect();
    let claim = |pools: &mut Vec<Option<Pool>>, s: usize, n: u128| {
        if let Some(pool) = &mut pools[s] {
            pool.taken.insert(n);
        }
    };
    for &(s, n) in reserved {
        claim(&mut pools, s, n);
    }
    for (r, router) in topo.routers.iter().enumerate() {
        for (&s, ip) in router.subnets.iter().zip(&family.router_ips[r]) {
            if let Some(n) = ip {
                claim(&mut pools, s, *n);
            }
        }
    }
    for (h, host) in topo.hosts.iter().enumerate() {
        if let Some(n) = family.host_ips[h] {
            claim(&mut pools, host.subnet, n);
        }
    }
    // what each node had, where still free
    let keep = |pools: &mut Vec<Option<Pool>>, node: &str, s: usize| {
        let net = family.nets[s]?;
        let n = (family.previous)(node, s)?;
        let pool = pools[s].as_mut()?;
        (pool.contains(n, net) && pool.taken.insert(n)).then_some(n)
    };
    let kept_routers: Vec<Vec<Option<u128>>> = topo
        .routers
        .iter()
        .enumerate()
        .map(|(r, router)| {
            router
                .subnets
                .iter()
                .zip(&family.router_ips[r])
                .map(|(&s, ip)| ip.or_else(|| keep(&mut pools, &router.name, s)))
                .collect()
        })
        .collect();
    let kept_hosts: Vec<Option<u128>> = topo
        .hosts
        .iter()
        .enumerate()
        .map(|(h, host)| family.host_ips[h].or_else(|| keep(&mut pools, &host.name, host.subnet)))
        .collect();
    let mut take = |s: usize, known: Option<u128>| -> Result<Option<u128>, PlanError> {
        let Some(pool) = &mut pools[s] else {
            return Ok(None);
        };
        known
            .or_else(|| pool.take())
            .map(Some)
            .ok_or_else(|| PlanError::SubnetExhausted {
                subnet: topo.subnets[s].name.clone(),
                cidr: family.nets[s].expect("a pool has a prefix"),
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
    Ok((routers, hosts))
}

/// The IPv6 link-local address of an interface with `mac`: modified EUI-64, as the kernel
/// would make it (dvnet adds it itself, so that it exists at once and never changes).
#[must_use]
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}
