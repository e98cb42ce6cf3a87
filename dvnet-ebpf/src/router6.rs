//! IPv6 forwarding on an eBPF router's interface, in the order of [`crate::router`]: route
//! lookup in `DV_ROUTES6` (a miss is answered with ICMPv6 destination unreachable), hop
//! limit (expiry answered with ICMPv6 time exceeded), the firewall, then the hop limit
//! decrement (IPv6 has no header checksum) and out: straight to the peer of a
//! point-to-point link, else `bpf_redirect_neigh` to the next hop (the neighbour table the
//! kernel's neighbour discovery keeps). Neighbour discovery, multicast, link-local
//! destinations and the router's own addresses go to the kernel untouched. Routers fed by
//! a routing daemon ask the kernel's FIB on a miss ([`fib_fallback`]).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        __sk_buff, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH, bpf_fib_lookup,
        bpf_redir_neigh,
    },
    helpers::generated::{bpf_fib_lookup, bpf_redirect_neigh, bpf_redirect_peer},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dvnet_common::{
    DropReason, ETH_P_IPV6, IFACE_FIB_FALLBACK, IFACE_FIREWALL, IfaceInfo, NexthopKey6,
    ROUTE_CONNECTED, ROUTE_DOWN, ROUTE_LOCAL, ROUTE_PEER, Route6, RouterAddr6, flow_hash6,
};

use crate::{
    firewall, icmp6,
    maps::{self, DV_NEXTHOPS6, DV_ROUTES6},
    packet::{self, IP_OFF, IPV6_HLEN},
    router::kind,
};

const PACKET_HOST: u32 = 0;
const AF_INET6: u32 = 10;
const LOOPBACK: u32 = 1;

/// What a router does with an IPv6 packet: as [`crate::router::Decision`].
#[derive(Clone, Copy)]
pub struct Decision6 {
    pub kind: u8,
    pub peer: bool,
    pub icmp: (u8, u8),
    pub reason: DropReason,
    pub rule: u32,
    pub link: u32,
    pub egress: u32,
    pub nexthop: [u8; 16],
    pub macs: ([u8; 6], [u8; 6]),
    /// The packet's hop limit (the rest of its header is read again where needed: the
    /// decision stays small, for the stack).
    pub hop_limit: u8,
}

impl Decision6 {
    #[inline(always)]
    fn kernel() -> Decision6 {
        Decision6 {
            kind: kind::KERNEL,
            peer: false,
            icmp: (0, 0),
            reason: DropReason::Internal,
            rule: u32::MAX,
            link: 0,
            egress: 0,
            nexthop: [0; 16],
            macs: ([0; 6], [0; 6]),
            hop_limit: 0,
        }
    }

    #[inline(always)]
    fn drop(reason: DropReason, link: u32) -> Decision6 {
        Decision6 {
            kind: kind::DROP,
            reason,
            link,
            ..Decision6::kernel()
        }
    }

    #[inline(always)]
    fn answer(icmp: (u8, u8), reason: DropReason) -> Decision6 {
        Decision6 {
            kind: kind::ANSWER,
            icmp,
            reason,
            ..Decision6::kernel()
        }
    }
}

/// Whether the frame is IPv6.
#[inline(always)]
pub fn is_ipv6(ctx: &TcContext) -> bool {
    ctx.load::<u16>(12)
        .is_ok_and(|t| u16::from_be(t) == ETH_P_IPV6)
}

/// What to do with an IPv6 packet that arrived on a router's interface.
#[inline(always)]
pub fn decide(ctx: &TcContext, iface: &IfaceInfo) -> Decision6 {
    // SAFETY: the context is the kernel's `__sk_buff`, valid for the whole call.
    let pkt_type = unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).pkt_type };
    if pkt_type != PACKET_HOST {
        return Decision6::kernel();
    }
    let Some(ip) = packet::ipv6(ctx) else {
        return Decision6::drop(DropReason::Malformed, iface.link);
    };
    if packet::is_multicast_or_link_local6(&ip.daddr) {
        return Decision6::kernel();
    }
    let mut d = Decision6 {
        kind: kind::FORWARD,
        hop_limit: ip.hop_limit,
        ..Decision6::kernel()
    };
    match route_to(ctx, iface, &ip, &mut d) {
        LOCAL => return Decision6::kernel(),
        DOWN => return Decision6::drop(DropReason::LinkDown, d.link),
        FOUND => {}
        _ => {
            let mut nexthop = [0u8; 16];
            let egress = fib_fallback(ctx, iface, &ip, &mut nexthop);
            if egress == 0 {
                let icmp = (icmp6::DEST_UNREACHABLE, icmp6::NO_ROUTE);
                return Decision6::answer(icmp, DropReason::NoRoute);
            }
            d.egress = egress;
            d.nexthop = nexthop;
        }
    }
    // a link-local source never leaves its link (RFC 4291): answered as the kernel does
    if ip.saddr[0] == 0xfe && ip.saddr[1] & 0xc0 == 0x80 {
        let icmp = (icmp6::DEST_UNREACHABLE, icmp6::BEYOND_SCOPE);
        return Decision6::answer(icmp, DropReason::NoRoute);
    }
    if ip.hop_limit <= 1 {
        return Decision6::answer((icmp6::TIME_EXCEEDED, 0), DropReason::TtlExceeded);
    }
    if iface.flags & IFACE_FIREWALL != 0 {
        let verdict = firewall::check6(ctx, iface, &ip);
        if verdict != 0 {
            let reason = if verdict >> 32 == DropReason::FirewallRule as u64 + 1 {
                DropReason::FirewallRule
            } else {
                DropReason::FirewallPolicy
            };
            let mut dropped = Decision6::drop(reason, iface.link);
            dropped.rule = verdict as u32;
            return dropped;
        }
    }
    d
}

/// What [`route_to`] found.
const FOUND: u32 = 0;
const MISS: u32 = 1;
/// For the router itself.
const LOCAL: u32 = 2;
/// Through a link that is down (`d.link`).
const DOWN: u32 = 3;

/// Looks the packet's destination up in the route map: with a route, `d` gets where it goes
/// (of equal-cost next hops, the flow's). A function of its own (a BPF subprogram): the
/// route and its key stay off the caller's stack.
#[inline(never)]
fn route_to(ctx: &TcContext, iface: &IfaceInfo, ip: &packet::Ipv6, d: &mut Decision6) -> u32 {
    let key = Key::new(
        160,
        RouterAddr6 {
            router: iface.router.to_be(),
            addr: ip.daddr,
        },
    );
    let Some(mut route) = DV_ROUTES6.get(&key).copied() else {
        return MISS;
    };
    if route.flags & ROUTE_LOCAL != 0 {
        return LOCAL;
    }
    if route.flags & ROUTE_DOWN != 0 {
        // counted on the link that is down, where the packet would have left
        d.link = route.link;
        return DOWN;
    }
    if route.paths > 1 {
        pick_path(ctx, iface.router, ip, &mut route);
    }
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
    FOUND
}

/// Of an equal-cost route's next hops, the flow's (a hash of its addresses and ports picks
/// one of `route.paths`): `route` becomes it. A function of its own (a BPF subprogram), for
/// the stack.
#[inline(never)]
fn pick_path(ctx: &TcContext, router: u32, ip: &packet::Ipv6, route: &mut Route6) {
    let (sport, dport) = firewall::ports6(ctx, IP_OFF + IPV6_HLEN, ip.next);
    let ports = (u32::from(u16::from_be(sport)) << 16) | u32::from(u16::from_be(dport));
    let hash = flow_hash6(router, &ip.saddr, &ip.daddr, ports, ip.next);
    // (no division that could panic: a BPF subprogram may not end in a call)
    let index = match hash.checked_rem(route.paths) {
        Some(0) | None => return,
        Some(index) => index,
    };
    let key = NexthopKey6 {
        router,
        group: route.group,
        index,
    };
    // SAFETY: the value is copied out at once.
    if let Some(other) = unsafe { DV_NEXTHOPS6.get(&key) } {
        *route = *other;
    }
}

/// On a route-map miss, a router whose routes come from a routing daemon (OSPFv3) asks the
/// kernel's IPv6 FIB, as [`crate::router`] does for IPv4: as if the packet came in on `lo`,
/// the one device whose IPv6 forwarding flag is on in such a router (the kernel's own IPv6
/// forwarding, `all`, stays off). Returns the egress interface (0: no route) and writes the
/// next hop. A function of its own (a BPF subprogram), for the stack.
#[inline(never)]
fn fib_fallback(
    ctx: &TcContext,
    iface: &IfaceInfo,
    ip: &packet::Ipv6,
    nexthop: &mut [u8; 16],
) -> u32 {
    if iface.flags & IFACE_FIB_FALLBACK == 0 {
        return 0;
    }
    maps::bump(&maps::DV_GLOBAL, dvnet_common::global::FIB_LOOKUPS);
    // SAFETY: all-zero bytes are a valid value of this plain C struct of integers.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET6 as u8;
    params.l4_protocol = ip.next;
    (params.sport, params.dport) = firewall::ports6(ctx, IP_OFF + IPV6_HLEN, ip.next);
    params.__bindgen_anon_1.tot_len = ip.payload_len.saturating_add(IPV6_HLEN as u16);
    params.ifindex = LOOPBACK;
    params.__bindgen_anon_3.ipv6_src = words(ip.saddr);
    params.__bindgen_anon_4.ipv6_dst = words(ip.daddr);
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
        return 0;
    }
    // SAFETY: the kernel filled the IPv6 member of the union.
    let w = unsafe { params.__bindgen_anon_4.ipv6_dst };
    for (i, word) in w.iter().enumerate() {
        nexthop[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    params.ifindex
}

/// Carries out `d` (counting drops), as [`crate::router::act`].
#[inline(always)]
pub fn act(ctx: &TcContext, iface: &IfaceInfo, d: &Decision6, answered: impl FnOnce()) -> i32 {
    crate::router::carry_out(
        iface,
        (d.kind, d.reason, d.link),
        || icmp6::reply_error(ctx, iface, d.icmp.0, d.icmp.1),
        || send(ctx, d),
        answered,
    )
}

/// Hop limit − 1, the MACs, and out.
#[inline(always)]
fn send(ctx: &TcContext, d: &Decision6) -> Result<i32, DropReason> {
    let hop_limit = d.hop_limit - 1;
    ctx.store(IP_OFF + 7, &hop_limit, 0)
        .map_err(|_| DropReason::Internal)?;
    if d.peer {
        let (dmac, smac) = d.macs;
        let mut eth = [0u8; 12];
        eth[..6].copy_from_slice(&dmac);
        eth[6..].copy_from_slice(&smac);
        ctx.store(0, &eth, 0).map_err(|_| DropReason::Internal)?;
        // SAFETY: plain helper call; valid at TC ingress
        return Ok(unsafe { bpf_redirect_peer(d.egress, 0) } as i32);
    }
    let mut params = bpf_redir_neigh {
        nh_family: AF_INET6,
        __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 {
            ipv6_nh: words(d.nexthop),
        },
    };
    // SAFETY: params lives on the stack for the call; the size is its own.
    let action = unsafe {
        bpf_redirect_neigh(
            d.egress,
            &raw mut params,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    };
    Ok(action as i32)
}

/// An address's 16 bytes as the four 32-bit words (in memory order) the helper takes.
#[inline(always)]
fn words(a: [u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}
