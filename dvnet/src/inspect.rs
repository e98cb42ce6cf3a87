//! What a running network looks like, read back from the kernel (`dvnet inspect`).

use std::net::IpAddr;

use futures::{StreamExt as _, stream};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use serde::Serialize;

use crate::netlink::{Netlink, NetlinkError};
use crate::netns;
use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("opening netlink in {ns}: {source}")]
    Socket {
        ns: String,
        #[source]
        source: std::io::Error,
    },
}

/// A node as the kernel sees it.
#[derive(Clone, Debug, Serialize)]
pub struct LiveNode {
    pub name: String,
    pub netns: String,
    pub interfaces: Vec<LiveInterface>,
    pub routes: Vec<LiveRoute>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LiveInterface {
    pub name: String,
    pub ifindex: u32,
    pub up: bool,
    pub addresses: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LiveRoute {
    pub dest: String,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
}

/// A netlink handle inside a named namespace, opened from this process.
///
/// # Errors
/// The namespace does not exist or the socket cannot be opened.
pub fn netlink_in(ns: &str) -> Result<Netlink, InspectError> {
    Netlink::open_in(ns).map_err(|source| InspectError::Socket {
        ns: ns.to_owned(),
        source,
    })
}

/// Reads every node's interfaces, addresses and routes.
///
/// # Errors
/// A node's namespace is gone or cannot be read.
pub async fn live(plan: &Plan) -> Result<Vec<LiveNode>, InspectError> {
    stream::iter(&plan.nodes)
        .map(|node| async move {
            // a container joined through the Docker driver shows once Docker has moved its
            // interface in (dvnet then names its namespace)
            if node.attached.is_some() && !netns::exists(&node.netns) {
                return Ok(LiveNode {
                    name: node.name.clone(),
                    netns: node.netns.clone(),
                    interfaces: Vec::new(),
                    routes: Vec::new(),
                });
            }
            let nl = netlink_in(&node.netns)?;
            read_node(&nl, &node.name, plan.ipv6).await
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A node's interfaces, addresses and main-table routes; with `ipv6`, its IPv6 ones too
/// (link-local addresses and the kernel's own link-local and multicast routes left out).
async fn read_node(nl: &Netlink, name: &str, ipv6: bool) -> Result<LiveNode, InspectError> {
    let links = nl.links().await?;
    let addrs = nl.addresses().await?;
    let mut routes = nl.routes().await?;
    if ipv6 {
        routes.extend(nl.routes6().await?);
    }
    let mut interfaces: Vec<LiveInterface> = links
        .iter()
        .map(|l| LiveInterface {
            name: l
                .attributes
                .iter()
                .find_map(|a| {
                    if let LinkAttribute::IfName(n) = a {
                        Some(n.clone())
                    } else {
                        None
                    }
                })
                .unwrap_or_default(),
            ifindex: l.header.index,
            up: l.header.flags.contains(LinkFlags::Up),
            addresses: Vec::new(),
        })
        .collect();
    for a in &addrs {
        let addr = a.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
                Some(IpAddr::V4(*ip))
            }
            AddressAttribute::Address(IpAddr::V6(ip)) if !ip.is_unicast_link_local() => {
                Some(IpAddr::V6(*ip))
            }
            _ => None,
        });
        if let (Some(ip), Some(iface)) = (
            addr,
            interfaces.iter_mut().find(|i| i.ifindex == a.header.index),
        ) {
            iface
                .addresses
                .push(format!("{ip}/{}", a.header.prefix_len));
        }
    }
    let name_of = |index: u32| {
        interfaces
            .iter()
            .find(|i| i.ifindex == index)
            .map(|i| i.name.clone())
    };
    let routes = routes
        .iter()
        .filter(|r| r.header.table == netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN)
        .filter(|r| {
            // the kernel's own IPv6 routes: link-local on every link, multicast
            let own6 = r.attributes.iter().any(|a| {
                matches!(a, RouteAttribute::Destination(RouteAddress::Inet6(d))
                    if d.is_unicast_link_local() || d.is_multicast())
            });
            !own6
        })
        .flat_map(|r| {
            let mut dest = None;
            let mut hops = vec![(None, None)];
            let address = |a: &RouteAddress| match a {
                RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
                RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
                _ => None,
            };
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Destination(d) => dest = address(d),
                    RouteAttribute::Gateway(g) => hops[0].0 = address(g),
                    RouteAttribute::Oif(i) => hops[0].1 = name_of(*i),
                    // equal-cost next hops: a line each
                    RouteAttribute::MultiPath(nexthops) => {
                        hops = nexthops
                            .iter()
                            .map(|nh| {
                                let via = nh.attributes.iter().find_map(|a| match a {
                                    RouteAttribute::Gateway(g) => address(g),
                                    _ => None,
                                });
                                (via, name_of(nh.interface_index))
                            })
                            .collect();
                    }
                    _ => {}
                }
            }
            let dest = match dest {
                Some(d) => format!("{d}/{}", r.header.destination_prefix_length),
                None => "default".to_owned(),
            };
            hops.into_iter().map(move |(via, dev)| LiveRoute {
                dest: dest.clone(),
                via,
                dev,
            })
        })
        .collect();
    Ok(LiveNode {
        name: name.to_owned(),
        netns: nl.namespace().to_owned(),
        interfaces,
        routes,
    })
}
