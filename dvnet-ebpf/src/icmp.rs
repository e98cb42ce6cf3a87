//! ICMP errors a router sends instead of forwarding (what the kernel would have answered):
//! time exceeded, destination unreachable. Built in place: the original IP header and the
//! first 8 bytes of its payload are kept, a new Ethernet (addresses swapped), IP and ICMP
//! header are put before them, both checksums computed with `bpf_csum_diff`, and the packet
//! goes back out of the interface it came in on.
//!
//! Never answered: ICMP errors, fragments other than the first, packets from unspecified,
//! multicast or broadcast sources (RFC 1812 4.3.2.7).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_REDIRECT},
    helpers::generated::{
        bpf_csum_diff, bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use dvnet_common::{DropReason, ETH_HLEN, IPPROTO_ICMP, IfaceInfo};

use crate::packet::{self, IP_OFF, Ipv4};

pub const DEST_UNREACHABLE: u8 = 3;
pub const NET_UNREACHABLE: u8 = 0;
pub const TIME_EXCEEDED: u8 = 11;

const IP_HLEN: usize = 20;
const ICMP_HLEN: usize = 8;
/// The quoted original: its IP header (with options, at most 60 bytes) + 8 bytes.
const MAX_QUOTE: usize = 60 + 8;
const OUT_IP: usize = ETH_HLEN;
const OUT_ICMP: usize = OUT_IP + IP_HLEN;
const OUT_QUOTE: usize = OUT_ICMP + ICMP_HLEN;
/// Largest reply; the buffer is rounded up so checksums can read whole 32-bit words.
const BUF: usize = OUT_QUOTE + MAX_QUOTE + 4;

/// Whether an ICMP type is an error message (never answered with another error).
#[inline(always)]
fn is_icmp_error(kind: u8) -> bool {
    matches!(kind, 3 | 4 | 5 | 11 | 12)
}

/// The one's-complement sum of `len` bytes at `data` (`len` a multiple of 4), folded and
/// inverted: the Internet checksum, in network byte order as stored.
#[inline(always)]
fn checksum(data: *mut u8, len: u32) -> Result<u16, DropReason> {
    // SAFETY: `data` points into a stack buffer at least `len` bytes long.
    fold(unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, data.cast(), len, 0) })
}

/// A `bpf_csum_diff` sum folded to 16 bits and inverted: the checksum as stored (an error
/// from the helper, negative, is an internal drop).
#[inline(always)]
pub fn fold(sum: i64) -> Result<u16, DropReason> {
    if sum < 0 {
        return Err(DropReason::Internal);
    }
    let mut s = sum as u64;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    Ok(!(s as u16))
}

/// Turns the packet into an ICMP error (`kind`, `code`) for its sender, to be sent back out
/// of `iface` (the program returns `TC_ACT_REDIRECT`). `Ok(false)`: no answer is allowed,
/// the packet is only dropped.
#[inline(always)]
pub fn reply_error(
    ctx: &TcContext,
    iface: &IfaceInfo,
    ip: &Ipv4,
    kind: u8,
    code: u8,
) -> Result<bool, DropReason> {
    if ip.is_later_fragment() || ip.saddr == 0 || packet::is_multicast_or_broadcast(ip.saddr) {
        return Ok(false);
    }
    if ip.proto == IPPROTO_ICMP {
        let Ok(inner_kind) = ctx.load::<u8>(IP_OFF + ip.header_len) else {
            return Ok(false);
        };
        if is_icmp_error(inner_kind) {
            return Ok(false);
        }
    }
    let quote = core::cmp::min(ip.header_len + 8, usize::from(ip.total_len));
    // bounded for the verifier: at least the 20-byte header, at most MAX_QUOTE
    if !(IP_HLEN..=MAX_QUOTE).contains(&quote) {
        return Err(DropReason::Malformed);
    }
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let mut buf = [0u8; BUF];

    // Ethernet: back to where it came from.
    // SAFETY: constant 12-byte reads into the buffer, within its bounds.
    if unsafe { bpf_skb_load_bytes(skb.cast(), 0, buf.as_mut_ptr().add(6).cast(), 6) } < 0
        || unsafe { bpf_skb_load_bytes(skb.cast(), 6, buf.as_mut_ptr().cast(), 6) } < 0
    {
        return Err(DropReason::Malformed);
    }
    buf[12] = 0x08;
    buf[13] = 0x00;
    // The quoted original.
    // SAFETY: `quote` is bounded to MAX_QUOTE, the room left in the buffer.
    if unsafe {
        bpf_skb_load_bytes(
            skb.cast(),
            IP_OFF as u32,
            buf.as_mut_ptr().add(OUT_QUOTE).cast(),
            quote as u32,
        )
    } < 0
    {
        return Err(DropReason::Malformed);
    }

    let icmp_len = ICMP_HLEN + quote;
    let total = IP_HLEN + icmp_len;
    // IP header
    buf[OUT_IP] = 0x45;
    buf[OUT_IP + 1] = 0xc0; // precedence: internetwork control, as Linux sends its errors
    buf[OUT_IP + 2..OUT_IP + 4].copy_from_slice(&(total as u16).to_be_bytes());
    buf[OUT_IP + 8] = 64;
    buf[OUT_IP + 9] = IPPROTO_ICMP;
    buf[OUT_IP + 12..OUT_IP + 16].copy_from_slice(&iface.addr.to_ne_bytes());
    buf[OUT_IP + 16..OUT_IP + 20].copy_from_slice(&ip.saddr.to_ne_bytes());
    let ip_sum = checksum(buf[OUT_IP..].as_mut_ptr(), IP_HLEN as u32)?;
    buf[OUT_IP + 10..OUT_IP + 12].copy_from_slice(&ip_sum.to_ne_bytes());
    // ICMP header, checksum over header + quote (zero-padded to whole words)
    buf[OUT_ICMP] = kind;
    buf[OUT_ICMP + 1] = code;
    let padded = (icmp_len + 3) & !3;
    if padded > BUF - OUT_ICMP {
        return Err(DropReason::Internal);
    }
    let icmp_sum = checksum(buf[OUT_ICMP..].as_mut_ptr(), padded as u32)?;
    buf[OUT_ICMP + 2..OUT_ICMP + 4].copy_from_slice(&icmp_sum.to_ne_bytes());

    let out_len = (ETH_HLEN + total) as u32;
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
    let ifindex = unsafe { (*skb).ifindex };
    // SAFETY: plain helper call.
    if unsafe { bpf_redirect(ifindex, 0) } != i64::from(TC_ACT_REDIRECT) {
        return Err(DropReason::Internal);
    }
    Ok(true)
}
