//! dvnet's TC programs. Loaded once per network, attached to many interfaces; the maps are
//! shared, and a program learns where it runs from `skb->ifindex` (dvnet gives every
//! interface of a network its own ifindex) through `DV_IFACES`.
//!
//! - `node_ingress` (TC ingress, every node interface): counts what the node receives; on an
//!   eBPF router's interface it also routes, filters and forwards; on the `lo` of a router
//!   whose own packets it routes, it sends those on.
//! - `fabric_ingress` (TC ingress, fabric ports of bridged segments): counts what the node
//!   sends.
//! - `delay_return` (TC ingress, the near end of a delay line): sends a packet back from the
//!   delay line on to the interface it was taken from.
//!
//! Where an interface is flagged `IFACE_IMPAIRED`, what arrives is counted, then impaired
//! ([`impair`]): a packet lost there is counted as received and as an `impair-loss` drop,
//! as a packet a firewall drops is.
//!
//! No per-packet logging: outcomes are counters and drop reasons in per-CPU maps. While a
//! capture runs (`dvnet capture`), the packets of the interfaces it taps go to it with what
//! was decided (`DV_CAPTURE`); otherwise a packet pays one array read for it.
#![no_std]
#![no_main]

mod firewall;
mod icmp;
mod icmp6;
mod impair;
mod maps;
mod packet;
mod router;
mod router6;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_F_INGRESS, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_redirect,
    macros::classifier,
    programs::TcContext,
};
use dvnet_common::{
    CaptureMeta, DropReason, IFACE_DELAY_RETURN, IFACE_FORWARD, IFACE_IMPAIRED, IFACE_OWN,
    IfaceInfo, MARK_DELAYED, dir, verdict,
};

/// The interface the packet is on, and its index.
#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context is the kernel's `__sk_buff`, valid for the whole call.
    unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).ifindex }
}

/// Counts the packet arriving on `iface` in `direction` (unless it is back from the delay
/// line: counted when it first arrived), then impairs it if the interface is flagged for
/// it: `Some(action)` when the packet goes no further here (lost: captured as such; into
/// the delay line: captured when it comes back).
#[inline(always)]
fn arrive(ctx: &TcContext, iface: &IfaceInfo, direction: usize) -> Option<i32> {
    let mark = impair::take_mark(ctx);
    if mark != MARK_DELAYED {
        maps::count(ctx, iface.link, direction);
    }
    if iface.flags & IFACE_IMPAIRED == 0 || mark != 0 {
        return None;
    }
    match impair::apply(ctx, ifindex(ctx), iface.link) {
        impair::Outcome::Pass => None,
        impair::Outcome::Drop => {
            if maps::tapping() {
                let mut meta = meta(ctx, verdict::DROPPED);
                meta.reason = DropReason::ImpairLoss as u8;
                maps::capture(ctx, &mut meta);
            }
            Some(TC_ACT_SHOT as i32)
        }
        impair::Outcome::Redirect(action) => Some(action),
    }
}

/// Captures the packet with a router's decision on it (`router::kind`): dropped (why, by
/// which rule), forwarded (where), or delivered to the router's kernel.
#[inline(always)]
fn capture_decision(
    ctx: &TcContext,
    kind: u8,
    (reason, rule): (DropReason, u32),
    (egress, nexthop): (u32, u32),
) {
    let mut m = meta(ctx, verdict::DELIVERED);
    match kind {
        router::kind::DROP | router::kind::ANSWER => {
            m.verdict = verdict::DROPPED;
            m.reason = reason as u8;
            m.rule = rule;
        }
        router::kind::FORWARD => {
            m.verdict = verdict::FORWARDED;
            m.egress = egress;
            m.family = 4;
            // (kept in network byte order: its bytes in memory are the address's)
            m.nexthop[..4].copy_from_slice(&nexthop.to_ne_bytes());
        }
        _ => {}
    }
    maps::capture(ctx, &mut m);
}

/// A capture's record of the packet on this interface.
#[inline(always)]
fn meta(ctx: &TcContext, verdict: u8) -> CaptureMeta {
    CaptureMeta {
        ts_ns: 0,
        ifindex: ifindex(ctx),
        len: 0,
        verdict,
        reason: 0,
        family: 0,
        pad: 0,
        rule: u32::MAX,
        egress: 0,
        nexthop: [0; 16],
        pad2: 0,
    }
}

/// TC ingress of every node interface: packets delivered to the node.
#[classifier]
pub fn node_ingress(ctx: TcContext) -> i32 {
    let Some(iface) = maps::iface_of(&ctx) else {
        return TC_ACT_OK as i32;
    };
    if let Some(action) = arrive(&ctx, &iface, dir::TO_NODE) {
        return action;
    }
    if iface.flags & IFACE_FORWARD == 0 {
        if maps::tapping() {
            maps::capture(&ctx, &mut meta(&ctx, verdict::DELIVERED));
        }
        return TC_ACT_OK as i32;
    }
    if iface.flags & IFACE_OWN == 0 && router6::is_ipv6(&ctx) {
        // in a frame of its own: IPv4 forwarding and IPv6 forwarding do not fit one stack.
        // (No IPv6 program in the array: the kernel, whose IPv6 is off, drops it.)
        // SAFETY: the context is this program's own.
        let _ = unsafe { maps::DV_JUMP.tail_call(&ctx, dvnet_common::maps::JUMP_IPV6) };
        return TC_ACT_OK as i32;
    }
    // the router's own packets, through `lo`: acted on for the router that sent them
    let iface = if iface.flags & IFACE_OWN == 0 {
        iface
    } else {
        match router::owner(&ctx) {
            Some(owner) => owner,
            None => return TC_ACT_OK as i32,
        }
    };
    let decision = router::decide(&ctx, &iface);
    let tapping = maps::tapping();
    if tapping {
        let d = &decision;
        capture_decision(&ctx, d.kind, (d.reason, d.rule), (d.egress, d.nexthop));
    }
    router::act(&ctx, &iface, &decision, || {
        if tapping {
            let mut m = meta(&ctx, verdict::ANSWERED);
            m.reason = decision.reason as u8;
            maps::capture(&ctx, &mut m);
        }
    })
}

/// Tail-called by `node_ingress` (counted and impaired there already): an IPv6 packet on an
/// eBPF router's interface, decided, captured with the decision, and carried out.
#[classifier]
pub fn node_ingress6(ctx: TcContext) -> i32 {
    match maps::iface_of(&ctx) {
        Some(iface) if iface.flags & IFACE_FORWARD != 0 => forward6(&ctx, &iface),
        _ => TC_ACT_OK as i32,
    }
}

#[inline(always)]
fn forward6(ctx: &TcContext, iface: &IfaceInfo) -> i32 {
    let decision = router6::decide(ctx, iface);
    let tapping = maps::tapping();
    if tapping {
        let d = &decision;
        if let Some(m) = record6(ctx) {
            match d.kind {
                router::kind::DROP | router::kind::ANSWER => {
                    m.verdict = verdict::DROPPED;
                    m.reason = d.reason as u8;
                    m.rule = d.rule;
                }
                router::kind::FORWARD => {
                    m.verdict = verdict::FORWARDED;
                    m.egress = d.egress;
                    m.family = 6;
                    // Read as one 16-byte value in memory: copied byte by byte, LLVM would
                    // keep each of its bytes in a stack slot of its own all the way through
                    // the decision (128 bytes the stack does not have).
                    // SAFETY: a plain read of a field.
                    m.nexthop = unsafe { core::ptr::read_volatile(&raw const d.nexthop) };
                }
                _ => {}
            }
            maps::capture(ctx, m);
        }
    }
    router6::act(ctx, iface, &decision, || {
        if tapping && let Some(m) = record6(ctx) {
            m.verdict = verdict::ANSWERED;
            m.reason = decision.reason as u8;
            maps::capture(ctx, m);
        }
    })
}

/// A capture record of this interface ([`meta`], verdict `DELIVERED`) in this CPU's slot of
/// `DV_CAPTURE6`: `node_ingress6` has no room for one on its stack.
#[inline(always)]
fn record6(ctx: &TcContext) -> Option<&'static mut CaptureMeta> {
    let m = maps::DV_CAPTURE6.get_ptr_mut(0)?;
    // SAFETY: a per-CPU slot; nothing else runs on this CPU while the program does.
    let m = unsafe { &mut *m };
    m.ts_ns = 0;
    m.ifindex = ifindex(ctx);
    m.len = 0;
    m.verdict = verdict::DELIVERED;
    m.reason = 0;
    m.family = 0;
    m.pad = 0;
    m.rule = u32::MAX;
    m.egress = 0;
    m.nexthop = [0; 16];
    m.pad2 = 0;
    Some(m)
}

/// TC ingress of a fabric port: packets the node sent onto its bridged segment.
#[classifier]
pub fn fabric_ingress(ctx: TcContext) -> i32 {
    if let Some(iface) = maps::iface_of(&ctx) {
        if let Some(action) = arrive(&ctx, &iface, dir::FROM_NODE) {
            return action;
        }
        if maps::tapping() {
            maps::capture(&ctx, &mut meta(&ctx, verdict::SENT));
        }
    }
    TC_ACT_OK as i32
}

/// TC ingress of the near end of a delay line: a packet whose time has come goes on to the
/// ingress it was taken from, marked so that it is not impaired twice.
#[classifier]
pub fn delay_return(ctx: TcContext) -> i32 {
    let Some(iface) = maps::iface_of(&ctx) else {
        return TC_ACT_SHOT as i32;
    };
    if iface.flags & IFACE_DELAY_RETURN == 0 {
        return TC_ACT_SHOT as i32;
    }
    // SAFETY: as in `ifindex`; `mark` is writable at TC.
    unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).mark = MARK_DELAYED };
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(iface.target, u64::from(BPF_F_INGRESS)) as i32 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
