//! Forwarding on an eBPF router's interface, in the kernel's order: route lookup (a miss is
//! answered with ICMP destination unreachable), TTL (expiry answered with ICMP time
//! exceeded), the firewall (forwarded traffic only, like iptables' FORWARD chain), then the
//! TTL decrement and `bpf_redirect_neigh` to the next hop. Everything the router itself must
//! see — ARP, packets for its own addresses, multicast and broadcast (routing protocols),
//! frames not addressed to it — goes to the kernel untouched.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_REDIRECT, bpf_redir_neigh},
    helpers::generated::bpf_redirect_neigh,
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dvnet_common::{
    DropReason, ETH_P_IP, IFACE_FIREWALL, IfaceInfo, ROUTE_CONNECTED, ROUTE_LOCAL, RouterAddr,
};

use crate::{
    firewall, icmp,
    maps::{self, DV_ROUTES},
    packet::{self, IP_OFF, Ipv4Hdr},
};

/// `skb->pkt_type` of a frame addressed to this interface's MAC.
const PACKET_HOST: u32 = 0;
const AF_INET: u32 = 2;

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
    let Some(route) = DV_ROUTES.get(&key).copied() else {
        return answer(
            ctx,
            iface,
            &ip,
            icmp::DEST_UNREACHABLE,
            icmp::NET_UNREACHABLE,
            DropReason::NoRoute,
        );
    };
    if route.flags & ROUTE_LOCAL != 0 {
        return Ok(TC_ACT_OK as i32);
    }
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
    let nexthop = if route.flags & ROUTE_CONNECTED != 0 {
        ip.daddr
    } else {
        route.nexthop
    };
    let mut params = bpf_redir_neigh {
        nh_family: AF_INET,
        __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 { ipv4_nh: nexthop },
    };
    // SAFETY: params lives on the stack for the call; the size is its own.
    let action = unsafe {
        bpf_redirect_neigh(
            route.ifindex,
            &raw mut params,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    };
    Ok(action as i32)
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
