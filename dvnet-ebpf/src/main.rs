//! dvnet's TC programs. Loaded once per network, attached to many interfaces; the maps are
//! shared, and a program learns where it runs from `skb->ifindex` (dvnet gives every
//! interface of a network its own ifindex) through `DV_IFACES`.
#![no_std]
#![no_main]

mod counters;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
