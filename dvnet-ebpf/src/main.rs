//! dvnet's TC programs. Loaded once per network, attached to many interfaces; the maps are
//! shared, and a program learns where it runs from `skb->ifindex` (dvnet gives every
//! interface of a network its own ifindex) through `DV_IFACES`.
//!
//! - `node_ingress` (TC ingress, every node interface): counts what the node receives; on an
//!   eBPF router's interface it also routes, filters and forwards.
//! - `fabric_ingress` (TC ingress, fabric ports of bridged segments): counts what the node
//!   sends.
//!
//! No per-packet logging: outcomes are counters and drop reasons in per-CPU maps.
#![no_std]
#![no_main]

mod firewall;
mod icmp;
mod maps;
mod packet;
mod router;

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use dvnet_common::{IFACE_FORWARD, dir};

/// TC ingress of every node interface: packets delivered to the node.
#[classifier]
pub fn node_ingress(ctx: TcContext) -> i32 {
    let Some(iface) = maps::iface_of(&ctx) else {
        return TC_ACT_OK as i32;
    };
    maps::count(&ctx, iface.link, dir::TO_NODE);
    if iface.flags & IFACE_FORWARD == 0 {
        return TC_ACT_OK as i32;
    }
    match router::forward(&ctx, &iface) {
        Ok(action) => action,
        Err(reason) => {
            maps::count_drop(iface.link, reason);
            aya_ebpf::bindings::TC_ACT_SHOT as i32
        }
    }
}

/// TC ingress of a fabric port: packets the node sent onto its bridged segment.
#[classifier]
pub fn fabric_ingress(ctx: TcContext) -> i32 {
    if let Some(iface) = maps::iface_of(&ctx) {
        maps::count(&ctx, iface.link, dir::FROM_NODE);
    }
    TC_ACT_OK as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
