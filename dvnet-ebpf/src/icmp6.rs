//! ICMPv6 errors a router sends instead of forwarding (what the kernel would have
//! answered): time exceeded, destination unreachable (RFC 4443). Built in place as the
//! IPv4 ones are ([`crate::icmp`]): the original IPv6 header and the 8 bytes after it are
//! quoted, a new Ethernet (addresses swapped), IPv6 and ICMPv6 header put before
//! them, the checksum computed with `bpf_csum_diff` over the pseudo-header and the message,
//! and the packet goes back out of the interface it came in on, from the address
//! `DV_ADDRS6` gives that interface.
//!
//! Never answered: ICMPv6 errors, packets from the unspecified or a multicast address.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_REDIRECT},
    helpers::generated::{
        bpf_csum_diff, bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use dvnet_common::{DropReason, ETH_HLEN, IPPROTO_ICMPV6, IfaceInfo};

use crate::maps::{DV_ADDRS6, DV_SCRATCH6};
use crate::packet::{self, IP_OFF, IPV6_HLEN};

pub const DEST_UNREACHABLE: u8 = 1;
pub const NO_ROUTE: u8 = 0;
/// Beyond the scope of the source address (a link-local source to be forwarded).
pub const BEYOND_SCOPE: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;

const ICMP_HLEN: usize = 8;
/// The quoted original: its IPv6 header and the 8 bytes after it (ports, or the echo
/// identifier and sequence: what traceroute and ping match their probes by), as IPv4's
/// errors quote. A fixed length, which the verifier takes; RFC 4443 allows more.
const QUOTE: usize = IPV6_HLEN + 8;
const OUT_IP: usize = ETH_HLEN;
const OUT_ICMP: usize = OUT_IP + IPV6_HLEN;
const OUT_QUOTE: usize = OUT_ICMP + ICMP_HLEN;
/// Largest reply; rounded up so that checksums read whole 32-bit words. The pseudo-header
/// is built after it, in the same scratch buffer.
const BUF: usize = OUT_QUOTE + QUOTE + 4;
const PSEUDO: usize = BUF;
const _: () = assert!(
    PSEUDO + 40 <= 256,
    "the scratch buffer holds reply and pseudo-header"
);

/// The one's-complement sum of the pseudo-header and `len` bytes at `data` (`len` a
/// multiple of 4), folded and inverted: the ICMPv6 checksum as stored.
#[inline(always)]
fn checksum(pseudo: *mut u8, data: *mut u8, len: u32) -> Result<u16, DropReason> {
    // SAFETY: both point into the scratch buffer, at least as long as the sizes given.
    let head = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, pseudo.cast(), 40, 0) };
    if head < 0 {
        return Err(DropReason::Internal);
    }
    // SAFETY: as above.
    crate::icmp::fold(unsafe {
        bpf_csum_diff(core::ptr::null_mut(), 0, data.cast(), len, head as u32)
    })
}

/// Turns the packet into an ICMPv6 error (`kind`, `code`) for its sender, to be sent back
/// out of `iface` (the program returns `TC_ACT_REDIRECT`). `Ok(false)`: no answer is
/// allowed (or the interface has no IPv6 source), the packet is only dropped. A function of
/// its own (a BPF subprogram), for the stack.
#[inline(never)]
pub fn reply_error(
    ctx: &TcContext,
    _iface: &IfaceInfo,
    kind: u8,
    code: u8,
) -> Result<bool, DropReason> {
    let Some(ip) = packet::ipv6(ctx) else {
        return Ok(false);
    };
    if ip.saddr == [0; 16] || ip.saddr[0] == 0xff {
        return Ok(false);
    }
    if ip.next == IPPROTO_ICMPV6 {
        let Ok(inner_kind) = ctx.load::<u8>(IP_OFF + IPV6_HLEN) else {
            return Ok(false);
        };
        if inner_kind < 128 {
            return Ok(false);
        }
    }
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context is the kernel's `__sk_buff`.
    let ifindex = unsafe { (*skb).ifindex };
    // SAFETY: the value is copied out at once.
    let Some(source) = (unsafe { DV_ADDRS6.get(&ifindex) }).copied() else {
        return Ok(false);
    };
    // a packet too short to quote whole (8 bytes after its header) goes unanswered
    if usize::from(ip.payload_len) < QUOTE - IPV6_HLEN {
        return Ok(false);
    }
    let Some(scratch) = DV_SCRATCH6.get_ptr_mut(0) else {
        return Err(DropReason::Internal);
    };
    // SAFETY: a per-CPU slot; nothing else runs on this CPU while the program does.
    let buf = unsafe { &mut *scratch };
    buf.fill(0);
    // Ethernet: back to where it came from.
    // SAFETY: constant 6-byte reads into the buffer, within its bounds.
    if unsafe { bpf_skb_load_bytes(skb.cast(), 0, buf.as_mut_ptr().add(6).cast(), 6) } < 0
        || unsafe { bpf_skb_load_bytes(skb.cast(), 6, buf.as_mut_ptr().cast(), 6) } < 0
    {
        return Err(DropReason::Malformed);
    }
    buf[12] = 0x86;
    buf[13] = 0xdd;
    // The quoted original.
    // SAFETY: QUOTE bytes fit the buffer after OUT_QUOTE.
    if unsafe {
        bpf_skb_load_bytes(
            skb.cast(),
            IP_OFF as u32,
            buf.as_mut_ptr().add(OUT_QUOTE).cast(),
            QUOTE as u32,
        )
    } < 0
    {
        return Ok(false);
    }
    let icmp_len = ICMP_HLEN + QUOTE;
    // IPv6 header: version 6, traffic class 0, no flow label
    buf[OUT_IP] = 0x60;
    buf[OUT_IP + 4..OUT_IP + 6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
    buf[OUT_IP + 6] = IPPROTO_ICMPV6;
    buf[OUT_IP + 7] = 64;
    buf[OUT_IP + 8..OUT_IP + 24].copy_from_slice(&source);
    buf[OUT_IP + 24..OUT_IP + 40].copy_from_slice(&ip.saddr);
    // ICMPv6 header (the 4 bytes after the checksum are unused: zero)
    buf[OUT_ICMP] = kind;
    buf[OUT_ICMP + 1] = code;
    buf[PSEUDO..PSEUDO + 16].copy_from_slice(&source);
    buf[PSEUDO + 16..PSEUDO + 32].copy_from_slice(&ip.saddr);
    buf[PSEUDO + 32..PSEUDO + 36].copy_from_slice(&(icmp_len as u32).to_be_bytes());
    buf[PSEUDO + 39] = IPPROTO_ICMPV6;
    let padded = (icmp_len + 3) & !3;
    if padded > BUF - OUT_ICMP {
        return Err(DropReason::Internal);
    }
    let pseudo = buf[PSEUDO..].as_mut_ptr();
    let sum = checksum(pseudo, buf[OUT_ICMP..].as_mut_ptr(), padded as u32)?;
    buf[OUT_ICMP + 2..OUT_ICMP + 4].copy_from_slice(&sum.to_ne_bytes());

    let out_len = (OUT_ICMP + icmp_len) as u32;
    // SAFETY: resizing the skb; no packet pointer is used after this.
    if unsafe { bpf_skb_change_tail(skb.cast(), out_len, 0) } < 0 {
        return Err(DropReason::Internal);
    }
    if out_len as usize > BUF {
        return Err(DropReason::Internal);
    }
    // SAFETY: `out_len` bytes of the buffer are initialized and within its bounds.
    if unsafe { bpf_skb_store_bytes(skb.cast(), 0, buf.as_ptr().cast(), out_len, 0) } < 0 {
        return Err(DropReason::Internal);
    }
    // SAFETY: plain helper call.
    if unsafe { bpf_redirect(ifindex, 0) } != i64::from(TC_ACT_REDIRECT) {
        return Err(DropReason::Internal);
    }
    Ok(true)
}
