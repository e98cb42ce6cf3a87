//! Forwarding on an eBPF router's interface, in the kernel's order: route lookup (the route
//! map, then — for routers fed by a routing daemon — the kernel's FIB; a miss is answered with
//! ICMP destination unreachable), TTL (expiry answered with ICMP time
//! exceeded), the firewall (forwarded traffic only, like iptables' FORWARD chain), then the
//! TTL decrement and `bpf_redirect_neigh` to the next hop. Everything the router itself must
//! see — ARP, packets for its own addresses, multicast and broadcast (routing protocols),
//! frames not addressed to it — goes to the kernel untouched.
//!
//! A router whose own packets the datapath routes (`IFACE_OWN` on `lo`) has them looked up
//! in the same route map and sent the same way, without the TTL and the firewall (what the
//! kernel's OUTPUT path would do).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        __sk_buff, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH, TC_ACT_OK, TC_ACT_REDIRECT,
        TC_ACT_SHOT, bpf_fib_lookup, bpf_redir_neigh,
    },
    helpers::generated::{bpf_fib_lookup, bpf_redirect_neigh, bpf_redirect_peer},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dvnet_common::{
    DropReason, ETH_HLEN, ETH_P_IP, IFACE_FIB_FALLBACK, IFACE_FIREWALL, IFACE_FORWARD, IFACE_OWN,
    IfaceInfo, NO_LINK, NexthopKey, OWNERS, ROUTE_CONNECTED, ROUTE_DOWN, ROUTE_LOCAL, ROUTE_PEER,
    Route, RouterAddr, flow_hash,
};

use crate::{
    firewall, icmp,
    maps::{self, DV_NEXTHOPS, DV_ROUTES},
    packet::{self, IP_OFF, Ipv4Hdr},
};

/// `skb->pkt_type` of a frame addressed to this interface's MAC.
const PACKET_HOST: u32 = 0;
const AF_INET: u32 = 2;
const LOOPBACK: u32 = 1;

/// What a router does with a packet (`Decision::kind`).
pub mod kind {
    /// To the router's own stack (ARP, its own addresses, multicast, not IPv4, ...).
    pub const KERNEL: u8 = 0;
    /// Dropped: `reason`, `rule` (a firewall rule's slot, or `u32::MAX`), counted on `link`.
    pub const DROP: u8 = 1;
    /// Dropped and answered with the ICMP error `icmp` (type, code) about `ip`.
    pub const ANSWER: u8 = 2;
    /// Forwarded: out of `egress` to `nexthop`; with `peer`, the next hop is the other end
    /// of a point-to-point link and `macs` (destination, source) are written (else the
    /// neighbour table resolves it).
    pub const FORWARD: u8 = 3;
}

/// What a router does with a packet, decided before anything of the packet changes (a
/// capture sees it as it arrived, with the decision). A plain struct with every field set,
/// not an enum: the verifier refuses to copy the undefined bytes of an enum's other variants.
#[derive(Clone, Copy)]
pub struct Decision {
    pub kind: u8,
    pub peer: bool,
    /// The router's own packet (`IFACE_OWN`): its TTL stays as the kernel set it.
    pub own: bool,
    pub icmp: (u8, u8),
    pub reason: DropReason,
    pub rule: u32,
    pub link: u32,
    pub egress: u32,
    pub nexthop: u32,
    pub macs: ([u8; 6], [u8; 6]),
    pub ip: packet::Ipv4,
}

impl Decision {
    #[inline(always)]
    fn kernel() -> Decision {
        Decision {
            kind: kind::KERNEL,
            peer: false,
            own: false,
            icmp: (0, 0),
            reason: DropReason::Internal,
            rule: u32::MAX,
            link: 0,
            egress: 0,
            nexthop: 0,
            macs: ([0; 6], [0; 6]),
            ip: packet::Ipv4::default(),
        }
    }

    /// Dropped for `reason`, counted on `link`.
    #[inline(always)]
    fn drop(reason: DropReason, link: u32) -> Decision {
        Decision {
            kind: kind::DROP,
            reason,
            link,
            ..Decision::kernel()
        }
    }

    #[inline(always)]
    fn answer(ip: packet::Ipv4, icmp: (u8, u8), reason: DropReason) -> Decision {
        Decision {
            kind: kind::ANSWER,
            icmp,
            reason,
            ip,
            ..Decision::kernel()
        }
    }
}

/// A packet the router itself sent through `lo` (`IFACE_OWN`): the router it belongs to,
/// found from its source address, as the interface the program acts for (counting nothing,
/// its ICMP errors from that address). `None`: not one of an eBPF router's own packets.
#[inline(always)]
pub fn owner(ctx: &TcContext) -> Option<IfaceInfo> {
    let ethertype = ctx.load::<u16>(12).ok()?;
    if u16::from_be(ethertype) != ETH_P_IP {
        return None;
    }
    let saddr = ctx.load::<u32>(ETH_HLEN + 12).ok()?;
    let key = Key::new(
        64,
        RouterAddr {
            router: OWNERS.to_be(),
            addr: saddr,
        },
    );
    let owner = DV_ROUTES.get(&key)?;
    Some(IfaceInfo {
        link: NO_LINK,
        router: owner.link,
        flags: IFACE_FORWARD | IFACE_OWN,
        addr: saddr,
        target: 0,
    })
}

/// What to do with a packet that arrived on a router's interface (or that the router sent
/// through `lo`, `IFACE_OWN`).
#[inline(always)]
pub fn decide(ctx: &TcContext, iface: &IfaceInfo) -> Decision {
    let own = iface.flags & IFACE_OWN != 0;
    // SAFETY: the context is the kernel's `__sk_buff`, valid for the whole call.
    let pkt_type = unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).pkt_type };
    if pkt_type != PACKET_HOST && !own {
        return Decision::kernel();
    }
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return Decision::kernel();
    };
    if u16::from_be(ethertype) != ETH_P_IP {
        return Decision::kernel();
    }
    let Some(ip) = packet::ipv4(ctx) else {
        return Decision::drop(DropReason::Malformed, iface.link);
    };
    if packet::is_multicast_or_broadcast(ip.daddr) {
        return Decision::kernel();
    }

    let key = Key::new(
        64,
        RouterAddr {
            router: iface.router.to_be(),
            addr: ip.daddr,
        },
    );
    let mut d = Decision {
        kind: kind::FORWARD,
        own,
        ..Decision::kernel()
    };
    match DV_ROUTES.get(&key).copied() {
        Some(route) if route.flags & ROUTE_LOCAL != 0 => return Decision::kernel(),
        // counted on the link that is down, where the packet would have left
        Some(route) if route.flags & ROUTE_DOWN != 0 => {
            return Decision::drop(DropReason::LinkDown, route.link);
        }
        Some(route) => {
            let route = if route.paths > 1 {
                pick_path(ctx, iface.router, &ip, &route)
            } else {
                route
            };
            d.nexthop = if route.flags & ROUTE_CONNECTED != 0 {
                ip.daddr
            } else {
                route.nexthop
            };
            d.egress = route.ifindex;
            if route.flags & ROUTE_PEER != 0 {
                d.peer = true;
                d.macs = (route.dmac, route.smac);
            }
        }
        None => match fib_fallback(ctx, iface, &ip) {
            Some((egress, nexthop)) => {
                d.egress = egress;
                d.nexthop = nexthop;
            }
            None => {
                let icmp = (icmp::DEST_UNREACHABLE, icmp::NET_UNREACHABLE);
                return Decision::answer(ip, icmp, DropReason::NoRoute);
            }
        },
    }
    if own {
        return d;
    }
    if ip.ttl <= 1 {
        return Decision::answer(ip, (icmp::TIME_EXCEEDED, 0), DropReason::TtlExceeded);
    }
    if iface.flags & IFACE_FIREWALL != 0
        && let Err((reason, rule)) = firewall::check(ctx, iface, &ip)
    {
        let mut dropped = Decision::drop(reason, iface.link);
        dropped.rule = rule;
        return dropped;
    }
    d
}

/// Carries out `d` (counting drops): the program's action. A packet answered with an ICMP
/// error is handed to `answered` as it leaves (for the captures).
#[inline(always)]
pub fn act(ctx: &TcContext, iface: &IfaceInfo, d: &Decision, answered: impl FnOnce()) -> i32 {
    carry_out(
        iface,
        (d.kind, d.reason, d.link),
        || icmp::reply_error(ctx, iface, &d.ip, d.icmp.0, d.icmp.1),
        || send(ctx, d),
        answered,
    )
}

/// Carries out a decision of either family (`kind`, and for a drop its reason and the link
/// it is counted on): drops counted, an answer made by `answer` (handed to `answered` as it
/// leaves), a packet forwarded by `send` (its failure counted on the ingress link).
#[inline(always)]
pub fn carry_out(
    iface: &IfaceInfo,
    (kind, reason, link): (u8, DropReason, u32),
    answer: impl FnOnce() -> Result<bool, DropReason>,
    send: impl FnOnce() -> Result<i32, DropReason>,
    answered: impl FnOnce(),
) -> i32 {
    match kind {
        kind::DROP => {
            maps::count_drop(link, reason);
            TC_ACT_SHOT as i32
        }
        kind::ANSWER => {
            maps::count_drop(iface.link, reason);
            match answer() {
                Ok(true) => {
                    answered();
                    TC_ACT_REDIRECT as i32
                }
                Ok(false) | Err(_) => TC_ACT_SHOT as i32,
            }
        }
        kind::FORWARD => match send() {
            Ok(action) => action,
            Err(reason) => {
                maps::count_drop(iface.link, reason);
                TC_ACT_SHOT as i32
            }
        },
        _ => TC_ACT_OK as i32,
    }
}

/// TTL − 1, the MACs, and out.
#[inline(always)]
fn send(ctx: &TcContext, d: &Decision) -> Result<i32, DropReason> {
    if !d.own {
        decrement_ttl(ctx)?;
    }
    let (egress, nexthop) = (d.egress, d.nexthop);
    if d.peer {
        let (dmac, smac) = d.macs;
        let mut eth = [0u8; 12];
        eth[..6].copy_from_slice(&dmac);
        eth[6..].copy_from_slice(&smac);
        ctx.store(0, &eth, 0).map_err(|_| DropReason::Internal)?;
        // SAFETY: plain helper call; valid at TC ingress
        return Ok(unsafe { bpf_redirect_peer(egress, 0) } as i32);
    }
    let mut params = bpf_redir_neigh {
        nh_family: AF_INET,
        __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 { ipv4_nh: nexthop },
    };
    // SAFETY: params lives on the stack for the call; the size is its own.
    let action = unsafe {
        bpf_redirect_neigh(
            egress,
            &raw mut params,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    };
    Ok(action as i32)
}

/// The next hop of an equal-cost route that the packet's flow takes: `flow_hash` of its
/// addresses and ports (none for fragments, whose later parts have none) picks one of
/// `route.paths`, so every packet of a flow takes the same one.
#[inline(always)]
fn pick_path(ctx: &TcContext, router: u32, ip: &packet::Ipv4, route: &Route) -> Route {
    let (sport, dport) = if ip.frag & 0x3fff != 0 {
        (0, 0)
    } else {
        firewall::ports(ctx, IP_OFF + ip.header_len, ip.proto)
    };
    let ports = (u32::from(u16::from_be(sport)) << 16) | u32::from(u16::from_be(dport));
    let hash = flow_hash(router, ip.saddr, ip.daddr, ports, ip.proto);
    let index = hash % u32::from(route.paths);
    if index == 0 {
        return *route;
    }
    let plen = u32::from(route.plen);
    let mask = if plen == 0 {
        0
    } else {
        (u32::MAX << (32 - plen.min(32))).to_be()
    };
    let key = NexthopKey {
        router,
        addr: ip.daddr & mask,
        plen,
        index,
    };
    // SAFETY: the value is copied out at once.
    unsafe { DV_NEXTHOPS.get(&key) }.copied().unwrap_or(*route)
}

/// On a route-map miss, routers whose routes come from a routing daemon ask the kernel's FIB:
/// an input-mode lookup as if the packet came in on `lo`, the one device with forwarding on
/// in such a router (so the kernel itself never forwards). Of equal-cost routes the kernel
/// picks one by the flow's addresses and ports. Returns the egress interface and next hop.
#[inline(always)]
fn fib_fallback(ctx: &TcContext, iface: &IfaceInfo, ip: &packet::Ipv4) -> Option<(u32, u32)> {
    if iface.flags & IFACE_FIB_FALLBACK == 0 {
        return None;
    }
    maps::bump(&maps::DV_GLOBAL, dvnet_common::global::FIB_LOOKUPS);
    // SAFETY: all-zero bytes are a valid value of this plain C struct of integers.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET as u8;
    params.l4_protocol = ip.proto;
    // the ports pick among a routing daemon's equal-cost routes (hash policy 1, set in
    // every router)
    if ip.frag & 0x3fff == 0 {
        (params.sport, params.dport) = firewall::ports(ctx, IP_OFF + ip.header_len, ip.proto);
    }
    params.__bindgen_anon_1.tot_len = ip.total_len;
    params.ifindex = LOOPBACK;
    params.__bindgen_anon_3.ipv4_src = ip.saddr;
    params.__bindgen_anon_4.ipv4_dst = ip.daddr;
    // SAFETY: params lives on the stack for the call; the size is its own.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr().cast(),
            &raw mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            u32::from(BPF_FIB_LOOKUP_SKIP_NEIGH),
        )
    };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return None;
    }
    // SAFETY: the kernel filled the IPv4 member of the union.
    Some((params.ifindex, unsafe { params.__bindgen_anon_4.ipv4_dst }))
}

/// TTL − 1 with the header checksum fixed incrementally (as the kernel's `ip_decrease_ttl`).
#[inline(always)]
fn decrement_ttl(ctx: &TcContext) -> Result<(), DropReason> {
    // The header was pulled into the linear area by `packet::ipv4`; helpers since may have
    // moved data, so the pointer is derived afresh.
    let ip = packet::ptr_at::<Ipv4Hdr>(ctx, IP_OFF).ok_or(DropReason::Malformed)?;
    // SAFETY: bounds checked by `ptr_at`.
    let ip = unsafe { &mut *ip };
    let mut check = u32::from(ip.check);
    check += u32::from(0x0100u16.to_be());
    ip.check = (check + u32::from(check >= 0xffff)) as u16;
    ip.ttl -= 1;
    Ok(())
}
