//! Packet access: bounds-checked pointers into the linear part of the skb.

use aya_ebpf::programs::TcContext;

/// A pointer to a `T` at `offset`, if the linear data holds it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The IPv4 header fields the datapath reads, copied out of the packet.
#[derive(Clone, Copy, Default)]
pub struct Ipv4 {
    /// Header length in bytes (20..=60).
    pub header_len: usize,
    pub total_len: u16,
    pub ttl: u8,
    pub proto: u8,
    /// Fragment offset and flags, host order.
    pub frag: u16,
    /// Network byte order.
    pub saddr: u32,
    /// Network byte order.
    pub daddr: u32,
}

impl Ipv4 {
    /// Whether this is a fragment other than the first.
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        self.frag & 0x1fff != 0
    }
}

/// Offset of the IPv4 header.
pub const IP_OFF: usize = dvnet_common::ETH_HLEN;

/// The raw IPv4 header (fixed part).
#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

/// Reads the IPv4 header, pulling it into the linear area if needed.
#[inline(always)]
pub fn ipv4(ctx: &TcContext) -> Option<Ipv4> {
    const NEED: usize = IP_OFF + core::mem::size_of::<Ipv4Hdr>();
    if ctx.data() + NEED > ctx.data_end() {
        ctx.pull_data(NEED as u32).ok()?;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, IP_OFF)?;
    // SAFETY: bounds checked by `ptr_at`.
    let ip = unsafe { &*ip };
    if ip.ver_ihl >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(ip.ver_ihl & 0x0f) * 4;
    let total_len = u16::from_be(ip.tot_len);
    if header_len < 20 || usize::from(total_len) < header_len {
        return None;
    }
    Some(Ipv4 {
        header_len,
        total_len,
        ttl: ip.ttl,
        proto: ip.protocol,
        frag: u16::from_be(ip.frag_off),
        saddr: ip.saddr,
        daddr: ip.daddr,
    })
}

/// Whether an address (network byte order) is multicast or limited broadcast.
#[inline(always)]
pub fn is_multicast_or_broadcast(addr_be: u32) -> bool {
    let a = u32::from_be(addr_be);
    a >> 28 == 0xe || a == u32::MAX
}

/// The IPv6 header fields the datapath reads, copied out of the packet (addresses as
/// stored, network byte order).
#[derive(Clone, Copy, Default)]
pub struct Ipv6 {
    pub payload_len: u16,
    /// The first next header (extension headers are not walked: a packet with one is
    /// forwarded and filtered by its first next header, without ports).
    pub next: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// The fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;

/// The raw IPv6 header.
#[repr(C)]
pub struct Ipv6Hdr {
    pub ver_tc_flow: [u8; 4],
    pub payload_len: u16,
    pub next: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Reads the IPv6 header, pulling it into the linear area if needed (then read in place,
/// not by a helper call per field).
#[inline(always)]
pub fn ipv6(ctx: &TcContext) -> Option<Ipv6> {
    const NEED: usize = IP_OFF + IPV6_HLEN;
    if ctx.data() + NEED > ctx.data_end() {
        ctx.pull_data(NEED as u32).ok()?;
    }
    let ip = ptr_at::<Ipv6Hdr>(ctx, IP_OFF)?;
    // SAFETY: bounds checked by `ptr_at`.
    let ip = unsafe { &*ip };
    if ip.ver_tc_flow[0] >> 4 != 6 {
        return None;
    }
    Some(Ipv6 {
        payload_len: u16::from_be(ip.payload_len),
        next: ip.next,
        hop_limit: ip.hop_limit,
        saddr: ip.saddr,
        daddr: ip.daddr,
    })
}

/// Whether an IPv6 address is multicast (`ff00::/8`) or link-local (`fe80::/10`): never
/// forwarded, for the router's own stack.
#[inline(always)]
pub fn is_multicast_or_link_local6(addr: &[u8; 16]) -> bool {
    addr[0] == 0xff || (addr[0] == 0xfe && addr[1] & 0xc0 == 0x80)
}
