//! Forwarding on an eBPF router's interface, in the kernel's order: route lookup (the route
//! map, then — for routers fed by a routing daemon — the kernel's FIB; a miss is answered with
//! ICMP destination unreachable), TTL (expiry answered with ICMP time
//! exceeded), the firewall (forwarded traffic only, like iptables' FORWARD chain), then the
//! TTL decrement and `bpf_redirect_neigh` to the next hop. Everything the router itself must
//! see — ARP, packets for its own addresses, multicast and broadcast (routing protocols),
//! frames not addressed to it — goes to the kernel untouched.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        __sk_buff, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH, TC_ACT_OK, TC_ACT_REDIRECT,
        bpf_fib_lookup, bpf_redir_neigh,
    },
    helpers::generated::{bpf_fib_lookup, bpf_redirect_neigh, bpf_redirect_peer},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dvnet_common::{
    DropReason, ETH_P_IP, IFACE_FIB_FALLBACK, IFACE_FIREWALL, IfaceInfo, ROUTE_CONNECTED,
    ROUTE_DOWN, ROUTE_LOCAL, ROUTE_PEER, RouterAddr,
};

use crate::{
    firewall, icmp,
    maps::{self, DV_ROUTES},
    packet::{self, IP_OFF, Ipv4Hdr},
};

/// `skb->pkt_type` of a frame addressed to this interface's MAC.
const PACKET_HOST: u32 = 0;
const AF_INET: u32 = 2;
const LOOPBACK: u32 = 1;

/// What to do with a packet that arrived on a router's interface.
#[inline(always)]
pub fn forward(ctx: &TcContext, iface: &IfaceInfo) -> Result<i32, DropReason> {
    // SAFETY: the context is the kernel's `__sk_buff`, valid for the whole call.
    let pkt_type = unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).pkt_type };
    if pkt_type != PACKET_HOST {
        return Ok(TC_ACT_OK as i32);
    }
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return Ok(TC_ACT_OK as i32);
    };
    if u16::from_be(ethertype) != ETH_P_IP {
        return Ok(TC_ACT_OK as i32);
    }
    let Some(ip) = packet::ipv4(ctx) else {
        return Err(DropReason::Malformed);
    };
    if packet::is_multicast_or_broadcast(ip.daddr) {
        return Ok(TC_ACT_OK as i32);
    }

    let key = Key::new(
        64,
        RouterAddr {
            router: iface.router.to_be(),
            addr: ip.daddr,
        },
    );
    // the route, and the MACs to write when the next hop is the other end of a point-to-point
    // link (None: the kernel's neighbour table resolves it)
    let (egress, nexthop, macs) = match DV_ROUTES.get(&key).copied() {
        Some(route) if route.flags & ROUTE_LOCAL != 0 => return Ok(TC_ACT_OK as i32),
        Some(route) if route.flags & ROUTE_DOWN != 0 => {
            // counted on the link that is down, where the packet would have left
            maps::count_drop(route.link, DropReason::LinkDown);
            return Ok(aya_ebpf::bindings::TC_ACT_SHOT as i32);
        }
        Some(route) => {
            let nexthop = if route.flags & ROUTE_CONNECTED != 0 {
                ip.daddr
            } else {
                route.nexthop
            };
            let macs = (route.flags & ROUTE_PEER != 0).then_some((route.dmac, route.smac));
            (route.ifindex, nexthop, macs)
        }
        None => match fib_fallback(ctx, iface, &ip) {
            Some((egress, nexthop)) => (egress, nexthop, None),
            None => {
                let (kind, code) = (icmp::DEST_UNREACHABLE, icmp::NET_UNREACHABLE);
                return answer(ctx, iface, &ip, kind, code, DropReason::NoRoute);
            }
        },
    };
    if ip.ttl <= 1 {
        return answer(
            ctx,
            iface,
            &ip,
            icmp::TIME_EXCEEDED,
            0,
            DropReason::TtlExceeded,
        );
    }
    if iface.flags & IFACE_FIREWALL != 0 {
        firewall::check(ctx, iface, &ip)?;
    }

    decrement_ttl(ctx)?;
    if let Some((dmac, smac)) = macs {
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

/// On a route-map miss, routers whose routes come from a routing daemon ask the kernel's FIB:
/// an input-mode lookup as if the packet came in on `lo`, the one device with forwarding on
/// in such a router (so the kernel itself never forwards). Returns the egress interface and
/// next hop.
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

/// Answers with an ICMP error instead of forwarding; counted under `reason` either way.
#[inline(always)]
fn answer(
    ctx: &TcContext,
    iface: &IfaceInfo,
    ip: &packet::Ipv4,
    kind: u8,
    code: u8,
    reason: DropReason,
) -> Result<i32, DropReason> {
    match icmp::reply_error(ctx, iface, ip, kind, code) {
        Ok(true) => {
            maps::count_drop(iface.link, reason);
            Ok(TC_ACT_REDIRECT as i32)
        }
        Ok(false) | Err(_) => Err(reason),
    }
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
