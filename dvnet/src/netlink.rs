//! Typed rtnetlink operations on a handle bound to one network namespace.
//!
//! A netlink socket talks to the namespace it was created in, whatever thread later uses it.
//! So a [`Netlink`] is made from a socket opened inside the target namespace (see
//! [`socket_here`], called on the thread that created or entered the namespace), and from
//! then on used from ordinary async code.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, IntoRawFd as _, OwnedFd};

use futures::{StreamExt as _, TryStreamExt as _};
use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteNextHop, RouteScope,
};
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};
use rtnetlink::packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
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
    /// Its MTU ([`LINK_MTU`] is the veth default).
    pub mtu: u32,
    /// Created up: no second message to bring it up. Only the `local` end of
    /// [`Netlink::add_veth`] can be: the kernel applies the peer's flags before it has paired
    /// the two ends, and an unpaired veth refuses to open (ENOTCONN); the peer is set up
    /// afterwards.
    pub up: bool,
}

impl Netlink {
    /// Wraps a socket made by [`socket_here`]. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the socket cannot be registered with the runtime.
    pub fn from_socket(socket: OwnedFd, ns: &str) -> io::Result<Netlink> {
        Self::from_socket_joined(socket, ns).map(|(nl, _)| nl)
    }

    /// [`Netlink::from_socket`], with the task that owns the socket: it ends, closing the
    /// socket, once every clone of the handle is dropped and no request is in flight.
    ///
    /// # Errors
    /// When the socket cannot be registered with the runtime.
    pub fn from_socket_joined(
        socket: OwnedFd,
        ns: &str,
    ) -> io::Result<(Netlink, tokio::task::JoinHandle<()>)> {
        // SAFETY: the descriptor is a netlink socket we own; ownership moves into TokioSocket.
        let socket = unsafe { netlink_sys::TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        let task = tokio::spawn(connection);
        Ok((
            Netlink {
                handle,
                ns: ns.to_owned(),
            },
            task,
        ))
    }

    /// A handle inside the named namespace `ns` (`/run/netns/<ns>`): its socket is opened on
    /// a short-lived thread that enters the namespace. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the namespace does not exist or the socket cannot be opened.
    pub fn open_in(ns: &str) -> io::Result<Netlink> {
        use std::os::fd::AsFd as _;
        let fd = crate::netns::open(ns).map_err(io::Error::other)?;
        let socket = crate::netns::on_thread(fd.as_fd(), socket_here).and_then(|r| r)?;
        Netlink::from_socket(socket, ns)
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

    /// Creates a VXLAN port of bridge `master` in namespace `netns`, whose underlay is this
    /// handle's namespace (the device keeps the namespace it was asked from for its UDP
    /// socket, wherever it lives): unicast, `local` as its source, learning off (its
    /// forwarding table is filled by [`Netlink::add_vxlan_destination`]), up.
    ///
    /// # Errors
    /// When the kernel refuses (a name, index or VNI taken; no VXLAN support).
    pub async fn add_vxlan(
        &self,
        port: &VxlanPort<'_>,
        netns: BorrowedFd<'_>,
    ) -> Result<(), NetlinkError> {
        let msg = rtnetlink::LinkVxlan::new(port.name, port.vni)
            .port(port.udp_port)
            .local(port.local)
            .learning(false)
            .mtu(port.mtu)
            .index(port.ifindex)
            .controller(port.master)
            .setns_by_fd(netns.as_raw_fd())
            .up()
            .build();
        self.handle.link().add(msg).execute().await.map_err(|e| {
            let hint = if is_errno(&e, libc::EADDRINUSE) {
                format!(
                    "; UDP port {} is taken on this machine: give the lab another with \
                     \"vxlan_port\"",
                    port.udp_port
                )
            } else {
                String::new()
            };
            let mut err = self.err(
                format_args!(
                    "creating VXLAN port {} (VNI {}, UDP port {}, from {})",
                    port.name, port.vni, port.udp_port, port.local
                ),
                e,
            );
            err.op.push_str(&hint);
            err
        })
    }

    /// Sends frames for `mac` out of VXLAN port `ifindex` to the machine at `remote`; the
    /// all-zero MAC stands for broadcasts and unknown destinations, and is added once per
    /// machine (`bridge fdb append`).
    ///
    /// # Errors
    /// When the kernel refuses (no such port).
    pub async fn add_vxlan_destination(
        &self,
        ifindex: u32,
        mac: [u8; 6],
        remote: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        use netlink_packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        };
        const NLM_F_APPEND: u16 = 0x800;
        let mut msg = NeighbourMessage::default();
        msg.header.family = netlink_packet_route::AddressFamily::Bridge;
        msg.header.ifindex = ifindex;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                remote,
            )));
        let flags = if mac == [0; 6] {
            NLM_F_CREATE | NLM_F_APPEND
        } else {
            NLM_F_CREATE | NLM_F_EXCL
        };
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            flags,
            &format!(
                "sending {} out of VXLAN port {ifindex} to {remote}",
                crate::plan::format_mac(&mac)
            ),
        )
        .await
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
        debug_assert!(
            !peer.up,
            "a veth's peer cannot come up in the message that makes the pair"
        );
        let mut peer_msg = end_builder(peer).build();
        // The peer's ifinfomsg carries its index (IFLA attributes cannot).
        peer_msg.header.index = peer.ifindex;
        one_queue(&mut peer_msg);
        let mut msg = end_builder(local)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        msg.header.index = local.ifindex;
        one_queue(&mut msg);
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

    /// Sets a link down.
    ///
    /// # Errors
    /// When the link does not exist.
    pub async fn set_down(&self, ifindex: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(ifindex).down().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| self.err(format_args!("setting link {ifindex} down"), e))
    }

    /// Adds an address to a link. An IPv6 address is usable at once: no duplicate address
    /// detection (dvnet hands out every address once).
    ///
    /// # Errors
    /// When the link does not exist or the address is taken.
    pub async fn add_address(
        &self,
        ifindex: u32,
        addr: impl Into<IpAddr>,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let addr = addr.into();
        let mut request = self.handle.address().add(ifindex, addr, prefix_len);
        if addr.is_ipv6() {
            request.message_mut().attributes.push(
                netlink_packet_route::address::AddressAttribute::Flags(
                    netlink_packet_route::address::AddressFlags::Nodad,
                ),
            );
        }
        request
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
        dest: impl Into<IpNet>,
        via: impl Into<IpAddr>,
        ifindex: u32,
    ) -> Result<(), NetlinkError> {
        let (dest, via) = (dest.into(), via.into());
        self.handle
            .route()
            .add(Self::route_message(dest, via, ifindex))
            .execute()
            .await
            .map_err(|e| self.err(format_args!("adding route {dest} via {via}"), e))
    }

    /// A route to `dest` (either family), without next hops yet.
    fn route_to(dest: IpNet) -> RouteMessageBuilder<IpAddr> {
        RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .expect("a prefix's length fits its family")
    }

    fn route_message(dest: IpNet, via: IpAddr, ifindex: u32) -> RouteMessage {
        Self::route_to(dest)
            .gateway(via)
            .expect("a route's gateway is in its destination's family")
            .output_interface(ifindex)
            .build()
    }

    /// Adds a route of several equal-cost next hops (gateway, interface), or with `replace`
    /// sets it in place of the route to the same destination. Flows are spread over them by
    /// the namespace's `fib_multipath_hash_policy`.
    ///
    /// # Errors
    /// When a gateway is not reachable on its link.
    pub async fn set_multipath_route<A: Into<IpAddr> + Copy>(
        &self,
        dest: impl Into<IpNet>,
        hops: &[(A, u32)],
        replace: bool,
    ) -> Result<(), NetlinkError> {
        let dest = dest.into();
        let nexthops = hops
            .iter()
            .map(|&(via, ifindex)| {
                let mut nh = RouteNextHop::default();
                nh.interface_index = ifindex;
                nh.attributes
                    .push(RouteAttribute::Gateway(match via.into() {
                        IpAddr::V4(v4) => RouteAddress::Inet(v4),
                        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
                    }));
                nh
            })
            .collect();
        let msg = Self::route_to(dest).multipath(nexthops).build();
        let request = self.handle.route().add(msg);
        let request = if replace { request.replace() } else { request };
        request.execute().await.map_err(|e| {
            self.err(
                format_args!("setting route {dest} over {} next hops", hops.len()),
                e,
            )
        })
    }

    /// Adds a route, or replaces the one to the same destination.
    ///
    /// # Errors
    /// When the gateway is not reachable on the link.
    pub async fn replace_route(
        &self,
        dest: impl Into<IpNet>,
        via: impl Into<IpAddr>,
        ifindex: u32,
    ) -> Result<(), NetlinkError> {
        let (dest, via) = (dest.into(), via.into());
        self.handle
            .route()
            .add(Self::route_message(dest, via, ifindex))
            .replace()
            .execute()
            .await
            .map_err(|e| self.err(format_args!("setting route {dest} via {via}"), e))
    }

    /// Deletes a route; one that is gone already is fine.
    ///
    /// # Errors
    /// When the kernel refuses for another reason.
    pub async fn delete_route(
        &self,
        dest: impl Into<IpNet>,
        via: impl Into<IpAddr>,
        ifindex: u32,
    ) -> Result<(), NetlinkError> {
        let (dest, via) = (dest.into(), via.into());
        self.delete_route_message(
            Self::route_message(dest, via, ifindex),
            format_args!("deleting route {dest} via {via}"),
        )
        .await
    }

    /// Deletes the route `msg` names; one that is gone (or whose device is) is fine.
    async fn delete_route_message(
        &self,
        msg: RouteMessage,
        what: std::fmt::Arguments<'_>,
    ) -> Result<(), NetlinkError> {
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ESRCH) || is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(self.err(what, e)),
        }
    }

    /// The default route on `lo` by which an eBPF router's kernel sends the packets it
    /// originates (source `src` unless a socket chose another), which the program on `lo`
    /// routes ([`crate::plan::NodePlan::own_route`]): added, or set in place of the default
    /// route there is. Its MTU is the links' (`lo`'s own is 64 KiB: nothing would fragment).
    ///
    /// # Errors
    /// When `src` is not an address of the namespace.
    pub async fn set_own_route(&self, src: Ipv4Addr, mtu: u32) -> Result<(), NetlinkError> {
        let mut msg = Self::own_route_message(src);
        msg.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                self.err(
                    format_args!("setting the default route on lo from {src}"),
                    e,
                )
            })
    }

    fn own_route_message(src: Ipv4Addr) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .output_interface(LO_IFINDEX)
            .pref_source(src)
            .scope(RouteScope::Link)
            .build()
    }

    /// Deletes the default route on `lo` ([`Netlink::set_own_route`]); none is fine.
    ///
    /// # Errors
    /// When the kernel refuses for another reason.
    pub async fn delete_own_route(&self) -> Result<(), NetlinkError> {
        let mut msg = Self::own_route_message(Ipv4Addr::UNSPECIFIED);
        msg.attributes
            .retain(|a| !matches!(a, RouteAttribute::PrefSource(_)));
        self.delete_route_message(msg, format_args!("deleting the default route on lo"))
            .await
    }

    /// Deletes the route to `dest`, whatever its next hops; none is fine.
    ///
    /// # Errors
    /// When the kernel refuses for another reason.
    pub async fn delete_route_to(&self, dest: impl Into<IpNet>) -> Result<(), NetlinkError> {
        let dest = dest.into();
        let msg = Self::route_to(dest).build();
        self.delete_route_message(msg, format_args!("deleting the route to {dest}"))
            .await
    }

    /// Deletes an address from a link; one that is gone already is fine.
    ///
    /// # Errors
    /// When the kernel refuses for another reason.
    pub async fn delete_address(
        &self,
        ifindex: u32,
        addr: impl Into<IpAddr>,
    ) -> Result<(), NetlinkError> {
        let addr = addr.into();
        let mut dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| self.err(format_args!("listing addresses of link {ifindex}"), e))?
        {
            let here = msg.attributes.iter().any(|a| {
                matches!(a, netlink_packet_route::address::AddressAttribute::Address(a) if *a == addr)
            });
            if here {
                return self
                    .handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(|e| self.err(format_args!("deleting address {addr}"), e));
            }
        }
        Ok(())
    }

    /// Sets a link's MAC address.
    ///
    /// # Errors
    /// When the link does not exist.
    pub async fn set_mac(&self, ifindex: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(ifindex)
            .address(mac.to_vec())
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| self.err(format_args!("setting the MAC of link {ifindex}"), e))
    }

    /// Deletes a link if it exists (a veth takes its peer with it).
    ///
    /// # Errors
    /// When the kernel refuses for another reason than its absence.
    pub async fn delete_link_if_there(&self, index: u32) -> Result<bool, NetlinkError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENODEV) || is_errno(&e, libc::ENOENT) => Ok(false),
            Err(e) => Err(self.err(format_args!("deleting link {index}"), e)),
        }
    }

    /// Deletes links in one go: the kernel unregisters them together, paying one RCU grace
    /// period instead of one each. They are put in a group of their own, then the group is
    /// deleted (`ip link delete group`); links that are gone already are skipped.
    ///
    /// # Errors
    /// When the kernel refuses.
    pub async fn delete_links(&self, ifindexes: &[u32]) -> Result<(), NetlinkError> {
        /// A group no link of dvnet's is in otherwise (all are in group 0).
        const DOOMED: u32 = 0x6476;
        let mut any = false;
        for &ifindex in ifindexes {
            let mut msg = LinkMessage::default();
            msg.header.index = ifindex;
            msg.attributes.push(LinkAttribute::Group(DOOMED));
            match self
                .request(
                    RouteNetlinkMessage::SetLink(msg),
                    0,
                    &format!("marking link {ifindex} for deletion"),
                )
                .await
            {
                Ok(()) => any = true,
                Err(e) if is_errno(&e.source, libc::ENODEV) => {}
                Err(e) => return Err(e),
            }
        }
        if !any {
            return Ok(());
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(DOOMED));
        match self
            .request(
                RouteNetlinkMessage::DelLink(msg),
                0,
                &format!("deleting {} links", ifindexes.len()),
            )
            .await
        {
            // none left in the group: they went meanwhile (a node's namespace going takes
            // its veths' fabric ends with it)
            Err(e) if is_errno(&e.source, libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    /// Sends one request and waits for its acknowledgement.
    async fn request(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(), NetlinkError> {
        let mut req = NetlinkMessage::from(message);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut response = handle
            .request(req)
            .map_err(|e| self.err(format_args!("{what}"), e))?;
        while let Some(msg) = response.next().await {
            if let NetlinkPayload::Error(e) = msg.payload
                && e.code.is_some()
            {
                return Err(self.err(format_args!("{what}"), rtnetlink::Error::NetlinkError(e)));
            }
        }
        Ok(())
    }

    /// Adds an `ingress` qdisc to a link, the anchor of TC BPF programs (cls_bpf) on what it
    /// receives; with `block`, its filters are those of the namespace's shared block of that
    /// index (attached once by [`Netlink::attach_block`], for every link of the block).
    ///
    /// Why `ingress` and shared blocks: every TC block bound on a device that offloads
    /// nothing (a veth) joins a kernel-wide list that each new binding walks
    /// (`flow_indr_dev_setup_offload`), so making qdiscs costs time quadratic in the number
    /// of blocks on the machine — 46 s of a 10,000-node `up` with a `clsact` qdisc (two
    /// blocks) per interface. One block per namespace, and no egress block, keep it small.
    ///
    /// # Errors
    /// When the link does not exist or already has one.
    pub async fn add_ingress(&self, ifindex: u32, block: Option<u32>) -> Result<(), NetlinkError> {
        let mut msg = ingress_qdisc(ifindex);
        msg.attributes.push(TcAttribute::Kind("ingress".into()));
        if let Some(block) = block {
            msg.attributes.push(TcAttribute::Other(DefaultNla::new(
                TCA_INGRESS_BLOCK,
                block.to_ne_bytes().to_vec(),
            )));
        }
        self.request(
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("adding an ingress qdisc to link {ifindex}"),
        )
        .await
    }

    /// Deletes a link's `ingress` qdisc (and the filters it holds); none is fine.
    ///
    /// # Errors
    /// When the kernel refuses for another reason.
    pub async fn delete_ingress(&self, ifindex: u32) -> Result<(), NetlinkError> {
        match self
            .request(
                RouteNetlinkMessage::DelQueueDiscipline(ingress_qdisc(ifindex)),
                0,
                &format!("deleting the ingress qdisc of link {ifindex}"),
            )
            .await
        {
            Err(e) if is_errno(&e.source, libc::ENOENT) || is_errno(&e.source, libc::EINVAL) => {
                Ok(())
            }
            other => other,
        }
    }

    /// Attaches the loaded program `prog_fd` as a direct-action cls_bpf filter to the shared
    /// block `block` of this namespace: every link whose ingress qdisc names the block (now
    /// or later) runs it. A filter there already is given the program instead.
    ///
    /// # Errors
    /// When no qdisc has made the block, or the program is not a classifier.
    pub async fn attach_block(
        &self,
        block: u32,
        prog_fd: BorrowedFd<'_>,
        name: &str,
    ) -> Result<(), NetlinkError> {
        let mut msg = bpf_filter(prog_fd, name);
        msg.header.index = TCM_IFINDEX_MAGIC_BLOCK;
        msg.header.parent = TcHandle::from(block);
        // without NLM_F_EXCL: a filter the block has already is changed in place
        self.request(
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_CREATE,
            &format!("attaching {name} to block {block}"),
        )
        .await
    }

    /// Attaches the loaded program `prog_fd` as a direct-action cls_bpf filter on the ingress
    /// of a link that has a `clsact` qdisc. The filter holds the program: it outlives this
    /// process and goes away with the link.
    ///
    /// # Errors
    /// When the link or qdisc is missing, or the program is not a classifier.
    pub async fn attach_ingress(
        &self,
        ifindex: u32,
        prog_fd: BorrowedFd<'_>,
        name: &str,
    ) -> Result<(), NetlinkError> {
        let mut msg = bpf_filter(prog_fd, name);
        msg.header.index = index_i32(ifindex);
        msg.header.parent = TcHandle::from(TC_H_INGRESS_HOOK);
        self.request(
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("attaching {name} to link {ifindex}"),
        )
        .await
    }

    /// The index of the link called `name`.
    ///
    /// # Errors
    /// When there is none.
    pub async fn index_of(&self, name: &str) -> Result<u32, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(self.err(
                format_args!("finding link {name}"),
                rtnetlink::Error::RequestFailed,
            )),
            Err(e) => Err(self.err(format_args!("finding link {name}"), e)),
        }
    }

    /// Deletes a link (a veth takes its peer with it).
    ///
    /// # Errors
    /// When it does not exist.
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| self.err(format_args!("deleting link {index}"), e))
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
        self.dump_routes(
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            "listing routes",
        )
        .await
    }

    /// Every IPv6 route.
    ///
    /// # Errors
    /// When the dump fails.
    pub async fn routes6(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let filter = RouteMessageBuilder::<std::net::Ipv6Addr>::new().build();
        self.dump_routes(filter, "listing IPv6 routes").await
    }

    /// The routes `filter` (a family) selects.
    async fn dump_routes(
        &self,
        filter: RouteMessage,
        what: &str,
    ) -> Result<Vec<RouteMessage>, NetlinkError> {
        self.handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err(format_args!("{what}"), e))
    }
}

/// The destination prefix of a main-table route, of either family.
#[must_use]
pub fn route_prefix(r: &netlink_packet_route::route::RouteMessage) -> Option<IpNet> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
    if r.header.table != RouteHeader::RT_TABLE_MAIN {
        return None;
    }
    let dest = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(IpAddr::V4(*d)),
        RouteAttribute::Destination(RouteAddress::Inet6(d)) => Some(IpAddr::V6(*d)),
        _ => None,
    });
    let dest = dest.unwrap_or(match r.header.address_family {
        netlink_packet_route::AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    IpNet::new(dest, r.header.destination_prefix_length).ok()
}

/// Whether a netlink error is the kernel's `errno`.
#[must_use]
pub fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// The message naming a link's `ingress` qdisc.
fn ingress_qdisc(ifindex: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(index_i32(ifindex));
    msg.header.parent = TcHandle::from(TC_H_INGRESS);
    msg.header.handle = TcHandle::from(0xffff_0000);
    msg
}

fn index_i32(ifindex: u32) -> i32 {
    i32::try_from(ifindex).expect("interface indexes fit in i32")
}

/// A VXLAN port to make ([`Netlink::add_vxlan`]).
pub struct VxlanPort<'a> {
    pub name: &'a str,
    pub ifindex: u32,
    pub vni: u32,
    pub udp_port: u16,
    pub local: Ipv4Addr,
    pub mtu: u32,
    /// The bridge it joins.
    pub master: u32,
}

/// `lo`, in every namespace.
pub const LO_IFINDEX: u32 = 1;
/// The MTU of every link dvnet makes (the veth default).
pub const LINK_MTU: u32 = 1500;

/// `TC_H_INGRESS`, the ingress qdisc's parent, and its hook (`TC_H_MIN_INGRESS`).
const TC_H_INGRESS: u32 = 0xffff_fff1;
const TC_H_INGRESS_HOOK: u32 = 0xffff_fff2;
/// `TCA_INGRESS_BLOCK`: the shared block an ingress qdisc binds.
const TCA_INGRESS_BLOCK: u16 = 13;
/// `TCM_IFINDEX_MAGIC_BLOCK`: a filter message about a shared block (its index in `parent`).
const TCM_IFINDEX_MAGIC_BLOCK: i32 = -1;

/// A direct-action cls_bpf filter running `prog_fd` (priority 1, every protocol, handle 1);
/// where it goes is for the caller to say.
fn bpf_filter(prog_fd: BorrowedFd<'_>, name: &str) -> TcMessage {
    const PRIORITY: u32 = 1;
    const ETH_P_ALL: u16 = 0x0003;
    let mut msg = TcMessage::default();
    msg.header.handle = TcHandle::from(1);
    msg.header.info = (PRIORITY << 16) | u32::from(ETH_P_ALL.to_be());
    msg.attributes
        .push(TcAttribute::Kind(TcFilterBpf::KIND.into()));
    let fd = u32::try_from(prog_fd.as_raw_fd()).expect("descriptors are non-negative");
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(fd)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_owned())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    msg
}

fn end_builder(end: &VethEnd<'_>) -> LinkMessageBuilder<LinkUnspec> {
    let mut b = LinkMessageBuilder::<LinkUnspec>::new()
        .name(end.name)
        .address(end.mac.to_vec());
    if end.up {
        b = b.up();
    }
    if let Some(ns) = end.netns {
        b = b.setns_by_fd(ns.as_raw_fd());
    }
    if let Some(master) = end.master {
        b = b.controller(master);
    }
    if end.mtu != LINK_MTU {
        b = b.mtu(end.mtu);
    }
    b
}

/// One transmit and one receive queue for a veth end. Unasked, the kernel gives a veth one
/// of each per possible CPU, registered in sysfs, then (`veth_init_queues`) cuts the number
/// in use back to one, which waits for an expedited RCU grace period with RTNL held, for
/// each end: asking for one halves the time to make a pair on a 2-CPU machine (1,000 pairs:
/// 0.26 s → 0.13 s) and saves more with more CPUs. The queues beyond the first serve only
/// XDP on a veth, which dvnet does not use.
fn one_queue(msg: &mut LinkMessage) {
    msg.attributes.push(LinkAttribute::NumTxQueues(1));
    msg.attributes.push(LinkAttribute::NumRxQueues(1));
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
