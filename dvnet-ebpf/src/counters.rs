//! Per-link counters on the fabric side of every node link: packets and bytes by direction
//! and class. The fabric port is the bridge-side end of a node's veth, so its ingress sees
//! what the node sent and its egress what is delivered to the node.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_OK},
    macros::{classifier, map},
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};
use dvnet_common::{ETH_HLEN, ETH_P_IP, IfaceInfo, LinkStats, PacketClass, dir};

/// Sized by userspace before loading (one entry per link of the network).
#[map(name = "DV_LINK_STATS")]
pub static DV_LINK_STATS: PerCpuArray<LinkStats> = PerCpuArray::with_max_entries(1, 0);

/// ifindex → where the program runs. Sized by userspace before loading.
#[map(name = "DV_IFACES")]
pub static DV_IFACES: HashMap<u32, IfaceInfo> = HashMap::with_max_entries(1, 0);

/// TC ingress on a fabric port: packets the node sent.
#[classifier]
pub fn fabric_from_node(ctx: TcContext) -> i32 {
    count(&ctx, dir::FROM_NODE);
    TC_ACT_OK
}

/// TC egress on a fabric port: packets delivered to the node.
#[classifier]
pub fn fabric_to_node(ctx: TcContext) -> i32 {
    count(&ctx, dir::TO_NODE);
    TC_ACT_OK
}

/// The class of the frame in `ctx`.
#[inline(always)]
pub fn classify(ctx: &TcContext) -> PacketClass {
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return PacketClass::Other;
    };
    let ethertype = u16::from_be(ethertype);
    let proto = if ethertype == ETH_P_IP {
        // protocol byte of the IPv4 header
        ctx.load::<u8>(ETH_HLEN + 9).unwrap_or(0)
    } else {
        0
    };
    PacketClass::of_frame(ethertype, proto)
}

/// The link of the interface the packet is on, if dvnet created it.
#[inline(always)]
pub fn link_of(ctx: &TcContext) -> Option<IfaceInfo> {
    // SAFETY: the context is the kernel's `__sk_buff`, valid for the whole call.
    let ifindex = unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).ifindex };
    // SAFETY: the value is copied out before the call returns.
    unsafe { DV_IFACES.get(&ifindex) }.copied()
}

#[inline(always)]
fn count(ctx: &TcContext, direction: usize) {
    let Some(iface) = link_of(ctx) else {
        return;
    };
    let class = classify(ctx) as usize;
    let Some(stats) = DV_LINK_STATS.get_ptr_mut(iface.link) else {
        return;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
    let stats = unsafe { &mut *stats };
    if let Some(d) = stats.traffic.get_mut(direction)
        && let Some(c) = d.get_mut(class)
    {
        c.packets += 1;
        c.bytes += u64::from(ctx.len());
    }
}
