//! The host's side of a network: everything dvnet changes in the namespace it runs in (the
//! host's, or a test's fake host), which is outbound access alone.
//!
//! - Here: the host's end of the uplink (a veth from the uplink bridge in the fabric), its
//!   address, and routes to the network's subnets through the border routers.
//! - [`nat`]: NAT and published ports in an nftables table of dvnet's own, forwarding, and
//!   the iptables FORWARD accepts a dropping policy needs.
//!
//! What is changed is recorded before it is made ([`HostChanges`] in the network's record),
//! and only what is recorded is undone. Networks of one host share forwarding: changes to it
//! are made under the host lock.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd as _;

use ipnet::IpNet;

use crate::netlink::{Netlink, NetlinkError, VethEnd};
use crate::plan::{Plan, Segment, UplinkPlan};
use crate::state::State;

pub mod nat;

pub use nat::{HostChanges, OutboundError};

/// The IPv4 addresses of the namespace dvnet runs in (this machine's, for a lab placed on
/// several); none when they cannot be read.
#[must_use]
pub fn local_addresses() -> Vec<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| {
                    a.address?
                        .as_sockaddr_in()
                        .map(nix::sys::socket::SockaddrIn::ip)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Nat(#[from] OutboundError),
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
}

/// A netlink handle in the namespace dvnet runs in (the host's).
///
/// # Errors
/// When the socket cannot be opened.
pub fn netlink() -> Result<Netlink, HostError> {
    let io = |source| HostError::Io {
        op: "opening netlink in the host's namespace",
        source,
    };
    let socket = crate::netlink::socket_here().map_err(io)?;
    Netlink::from_socket(socket, "the host").map_err(io)
}

/// The inode of the calling thread's network namespace (which host a change was made on).
#[must_use]
pub fn netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
}

/// Takes the host's lock (forwarding, NAT) on behalf of network `id`.
///
/// # Errors
/// When the lock cannot be taken.
pub fn lock(id: &str) -> Result<crate::lock::Lock, HostError> {
    Ok(crate::lock::Lock::acquire(
        crate::lock::HOST,
        &format!("up/apply/down {id} (host side)"),
        |holder| {
            if let Some(h) = holder {
                tracing::warn!("the host side is busy: waiting for {h}");
            }
        },
    )?)
}

/// The host's end of the uplink: a veth from the uplink bridge into the host's namespace,
/// its address, and routes to the network's subnets through the border routers.
///
/// # Errors
/// When the kernel refuses a step.
pub async fn add_uplink(
    plan: &Plan,
    uplink: &UplinkPlan,
    fabric: &Netlink,
) -> Result<(), HostError> {
    let home = crate::netns::current().map_err(|source| HostError::Io {
        op: "opening the host namespace",
        source,
    })?;
    let Segment::Bridge {
        ifindex: bridge, ..
    } = plan.subnets[uplink.subnet].segment
    else {
        unreachable!("the uplink is always a bridge");
    };
    let port = &uplink.fabric_port;
    let fabric_end = VethEnd {
        name: &port.ifname,
        ifindex: port.ifindex,
        mac: port.mac,
        netns: None,
        master: Some(bridge),
        mtu: crate::netlink::LINK_MTU,
        up: true,
    };
    let host_end = VethEnd {
        name: &uplink.host_ifname,
        ifindex: 0,
        mac: crate::plan::naming::mac_for(uplink.host_address, false),
        netns: Some(home.as_fd()),
        master: None,
        mtu: crate::netlink::LINK_MTU,
        // up once its IPv6 settings are made (below)
        up: false,
    };
    fabric.add_veth(&fabric_end, &host_end).await?;
    let host = netlink()?;
    let index = host.index_of(&uplink.host_ifname).await?;
    if uplink.host_address6.is_some() {
        // dvnet's own interface: usable at once (no duplicate address detection holding its
        // link-local address, and with it neighbour discovery, for a second), and deaf to
        // router advertisements (none come from the lab; it sends no solicitations into it)
        for (key, value) in [("accept_dad", "0"), ("accept_ra", "0")] {
            let path = format!("/proc/sys/net/ipv6/conf/{}/{key}", uplink.host_ifname);
            std::fs::write(&path, value).map_err(|source| HostError::Io {
                op: "setting the uplink's IPv6 settings",
                source,
            })?;
        }
    }
    host.set_up(index).await?;
    host.add_address(index, uplink.host_address, plan.uplink_cidr().prefix_len())
        .await?;
    for (dest, via) in &uplink.host_routes {
        host.add_route(*dest, *via, index).await?;
    }
    if let (Some(address6), Some(cidr6)) = (uplink.host_address6, plan.subnets[uplink.subnet].cidr6)
    {
        host.add_address(index, address6, cidr6.prefix_len())
            .await?;
        for (dest, via) in &uplink.host_routes6 {
            host.add_route(*dest, *via, index).await?;
        }
    }
    Ok(())
}

/// Changes the host's routes to the network, of either family (an edit moved or added
/// subnets).
///
/// # Errors
/// When the uplink is missing or the kernel refuses a route.
pub async fn change_routes<N: Into<IpNet> + Copy, A: Into<IpAddr> + Copy>(
    uplink: &UplinkPlan,
    add: &[(N, A)],
    remove: &[(N, A)],
) -> Result<(), HostError> {
    let host = netlink()?;
    let index = host.index_of(&uplink.host_ifname).await?;
    for (dest, via) in remove {
        host.delete_route(*dest, *via, index).await?;
    }
    for (dest, via) in add {
        host.replace_route(*dest, *via, index).await?;
    }
    Ok(())
}

/// Moves the host's address on the uplink (its prefix changed).
///
/// # Errors
/// When the kernel refuses.
pub async fn change_address(
    uplink: &UplinkPlan,
    from: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), HostError> {
    let host = netlink()?;
    let index = host.index_of(&uplink.host_ifname).await?;
    host.delete_address(index, from).await?;
    host.add_address(index, uplink.host_address, prefix_len)
        .await?;
    for (dest, via) in &uplink.host_routes {
        host.replace_route(*dest, *via, index).await?;
    }
    Ok(())
}

/// Forwarding, NAT and FORWARD accepts on the host, recorded before they are made so a
/// rollback or `down` can undo them.
///
/// # Errors
/// When a step fails (what was done is recorded).
pub fn add_nat(plan: &Plan, record: &mut State) -> Result<(), HostError> {
    let _host = lock(&plan.id)?;
    let mut changes = record.host.clone().unwrap_or_default();
    changes.netns = netns_inode();
    changes.forwarding_before = nat::forwarding_snapshot();
    changes.forwarding6_before = nat::forwarding6_snapshot(plan);
    changes.nft_table = Some(nat::table_name(&plan.id));
    // recorded first: if applying fails halfway, `down` knows what to restore
    record.host = Some(changes.clone());
    record.save()?;
    let result = nat::apply(plan, &mut changes);
    record.host = Some(changes);
    record.save()?;
    Ok(result?)
}

/// Undoes what network `id` recorded changing on the host (`changes`), under the host lock:
/// its uplink, NAT table and FORWARD accepts, and forwarding once no other network of this
/// host needs it. Returns what went wrong.
pub async fn undo(id: &str, changes: Option<&HostChanges>) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(changes) = changes else {
        return errors;
    };
    let _host = match lock(id) {
        Ok(lock) => lock,
        Err(e) => return vec![e.to_string()],
    };
    let others: Vec<State> = State::ids()
        .unwrap_or_default()
        .into_iter()
        .filter(|other| other != id)
        .filter_map(|other| State::load(&other).ok())
        .filter(|other| {
            other.plan.uplink.is_some()
                && other
                    .host
                    .as_ref()
                    .is_some_and(|h| h.netns == changes.netns)
        })
        .collect();
    // each family's forwarding goes back only when no other network of this host needs it;
    // otherwise the settings to restore pass to one that does
    let mut others = others;
    let heir = (!others.is_empty()).then_some(0);
    let heir6 = others.iter().position(|s| {
        s.plan
            .uplink
            .as_ref()
            .is_some_and(|u| u.host_address6.is_some())
    });
    let restore = (heir.is_none(), heir6.is_none());
    if let Some(i) = heir
        && let Some(h) = others[i].host.as_mut()
        && changes.forwarding_before.is_some()
    {
        h.forwarding_before.clone_from(&changes.forwarding_before);
        if let Err(e) = others[i].save() {
            errors.push(e.to_string());
        }
    }
    if let Some(i) = heir6
        && let Some(h) = others[i].host.as_mut()
        && changes.forwarding6_before.is_some()
    {
        h.forwarding6_before.clone_from(&changes.forwarding6_before);
        h.accept_ra_raised.clone_from(&changes.accept_ra_raised);
        if let Err(e) = others[i].save() {
            errors.push(e.to_string());
        }
    }
    if changes.netns != netns_inode() {
        // only where `up` made them: run from another namespace, this one is not touched
        errors.push(format!(
            "network {id} was brought up from another network namespace (inode {}); its NAT table \
             ({}) and forwarding settings there were left alone: run `dvnet down {id}` from that \
             namespace, or remove them there by hand",
            changes.netns,
            nat::table_name(id)
        ));
        return errors;
    }
    if let Some(name) = &changes.uplink {
        // the host's end of the uplink, now rather than when the kernel reclaims the fabric
        if let Ok(host) = netlink()
            && let Ok(index) = host.index_of(name).await
            && let Err(e) = host.delete_link(index).await
        {
            errors.push(e.to_string());
        }
    }
    errors.extend(nat::remove(id, Some(changes), restore));
    errors
}
