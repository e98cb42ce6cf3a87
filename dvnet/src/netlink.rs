//! Typed rtnetlink operations on a handle bound to one network namespace.
//!
//! A netlink socket talks to the namespace it was created in, whatever thread later uses it.
//! So a [`Netlink`] is made from a socket opened inside the target namespace (see
//! [`socket_here`], called on the thread that created or entered the namespace), and from
//! then on used from ordinary async code.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, IntoRawFd as _, OwnedFd};

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use netlink_packet_route::route::RouteMessage;
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct NetlinkError {
    /// What was being done, with the object's name and namespace.
    pub op: String,
    #[source]
    pub source: rtnetlink::Error,
}

/// An rtnetlink handle bound to one namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    /// The namespace's name, for messages.
    ns: String,
}

/// Opens a netlink route socket in the calling thread's current namespace.
///
/// # Errors
/// When the socket cannot be created.
pub fn socket_here() -> io::Result<OwnedFd> {
    let socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) })
}

/// One end of a veth pair.
#[derive(Clone, Debug)]
pub struct VethEnd<'a> {
    pub name: &'a str,
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// Put this end in that namespace (default: the handle's namespace).
    pub netns: Option<BorrowedFd<'a>>,
    /// Enslave this end to that bridge (by ifindex, in its namespace).
    pub master: Option<u32>,
}

impl Netlink {
    /// Wraps a socket made by [`socket_here`]. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the socket cannot be registered with the runtime.
    pub fn from_socket(socket: OwnedFd, ns: &str) -> io::Result<Netlink> {
        // SAFETY: the descriptor is a netlink socket we own; ownership moves into TokioSocket.
        let socket = unsafe { netlink_sys::TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Ok(Netlink {
            handle,
            ns: ns.to_owned(),
        })
    }

    /// The namespace this handle talks to.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    fn err(&self, op: std::fmt::Arguments<'_>, source: rtnetlink::Error) -> NetlinkError {
        NetlinkError {
            op: format!("{op} in {}", self.ns),
            source,
        }
    }

    /// Creates a bridge, up, with STP and multicast snooping off.
    ///
    /// # Errors
    /// When the kernel refuses (a name or index taken, no bridge support).
    pub async fn add_bridge(&self, name: &str, ifindex: u32) -> Result<(), NetlinkError> {
        let msg = LinkBridge::new(name)
            .mcast_snooping(false)
            .index(ifindex)
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| self.err(format_args!("creating bridge {name}"), e))
    }

    /// Creates a veth pair in one message: `local` in this handle's namespace (or its own
    /// `netns`), `peer` wherever it says, with their names, indexes and MACs. `local` comes
    /// up; the peer cannot (the kernel opens it before the pair is joined: ENOTCONN), so its
    /// owner sets it up afterwards.
    ///
    /// # Errors
    /// When the kernel refuses (a name or index taken in one of the namespaces).
    pub async fn add_veth(
        &self,
        local: &VethEnd<'_>,
        peer: &VethEnd<'_>,
    ) -> Result<(), NetlinkError> {
        let mut peer_msg = end_builder(peer, false).build();
        // The peer's ifinfomsg carries its index (IFLA attributes cannot).
        peer_msg.header.index = peer.ifindex;
        let mut msg = end_builder(local, true)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        msg.header.index = local.ifindex;
        push_kind(&mut msg, InfoKind::Veth);
        self.handle.link().add(msg).execute().await.map_err(|e| {
            self.err(
                format_args!("creating veth {} / {}", local.name, peer.name),
                e,
            )
        })
    }

    /// Sets a link up.
    ///
    /// # Errors
    /// When the link does not exist.
    pub async fn set_up(&self, ifindex: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(ifindex).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| self.err(format_args!("setting link {ifindex} up"), e))
    }

    /// Adds an address to a link.
    ///
    /// # Errors
    /// When the link does not exist or the address is taken.
    pub async fn add_address(
        &self,
        ifindex: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(ifindex, addr.into(), prefix_len)
            .execute()
            .await
            .map_err(|e| self.err(format_args!("adding address {addr}/{prefix_len}"), e))
    }

    /// Adds a route through a gateway on a link.
    ///
    /// # Errors
    /// When the gateway is not reachable on the link, or the route exists.
    pub async fn add_route(
        &self,
        dest: Ipv4Net,
        via: Ipv4Addr,
        ifindex: u32,
    ) -> Result<(), NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .gateway(via)
            .output_interface(ifindex)
            .build();
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(|e| self.err(format_args!("adding route {dest} via {via}"), e))
    }

    /// Every link of the namespace.
    ///
    /// # Errors
    /// When the dump fails.
    pub async fn links(&self) -> Result<Vec<LinkMessage>, NetlinkError> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err(format_args!("listing links"), e))
    }

    /// Every IPv4 address of the namespace.
    ///
    /// # Errors
    /// When the dump fails.
    pub async fn addresses(&self) -> Result<Vec<AddressMessage>, NetlinkError> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err(format_args!("listing addresses"), e))
    }

    /// Every IPv4 route of the main table.
    ///
    /// # Errors
    /// When the dump fails.
    pub async fn routes(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        self.handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err(format_args!("listing routes"), e))
    }
}

fn end_builder(end: &VethEnd<'_>, up: bool) -> LinkMessageBuilder<LinkUnspec> {
    let mut b = LinkMessageBuilder::<LinkUnspec>::new()
        .name(end.name)
        .address(end.mac.to_vec());
    if up {
        b = b.up();
    }
    if let Some(ns) = end.netns {
        b = b.setns_by_fd(ns.as_raw_fd());
    }
    if let Some(master) = end.master {
        b = b.controller(master);
    }
    b
}

/// `LinkMessageBuilder<LinkUnspec>` has no kind; a veth message needs one before its data.
fn push_kind(msg: &mut LinkMessage, kind: InfoKind) {
    for attr in &mut msg.attributes {
        if let LinkAttribute::LinkInfo(infos) = attr {
            infos.insert(0, netlink_packet_route::link::LinkInfo::Kind(kind));
            return;
        }
    }
}
