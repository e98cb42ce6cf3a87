//! Crafted frames for BPF_PROG_TEST_RUN, and checks of what comes out.

/// The Internet checksum of `data` (RFC 1071): 0 over a valid header.
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    let folded = sum as u16;
    !folded
}

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// BPF_PROG_TEST_RUN runs on the loopback device, whose MAC is all zeros: a frame sent to
/// it counts as addressed to the interface (`PACKET_HOST`).
pub const TO_TEST_DEVICE: [u8; 6] = [0; 6];

/// An Ethernet + IPv4 frame with `proto` and `payload`, valid header checksum.
#[must_use]
pub fn ipv4(src: [u8; 4], dst: [u8; 4], ttl: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + payload.len());
    f.extend_from_slice(&TO_TEST_DEVICE);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = u16::try_from(20 + payload.len()).expect("small packet");
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = ttl;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

/// An ICMP message of `kind` with identifier `id` and sequence `seq` (echo), 56 data bytes.
#[must_use]
pub fn icmp(src: [u8; 4], dst: [u8; 4], ttl: u8, kind: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..56u8).map(|i| i.wrapping_mul(7)));
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, ttl, 1, &icmp)
}

/// An ICMP echo request (id 1, sequence `seq`).
#[must_use]
pub fn icmp_echo(src: [u8; 4], dst: [u8; 4], ttl: u8, seq: u16) -> Vec<u8> {
    icmp(src, dst, ttl, 8, 1, seq)
}

/// A UDP datagram with 16 bytes of data (checksum 0: not computed, allowed for IPv4).
#[must_use]
pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut u = Vec::with_capacity(24);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&24u16.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&[0x55; 16]);
    ipv4(src, dst, 64, 17, &u)
}

/// An ARP request for `target` from `sender`.
#[must_use]
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// An Ethernet + IPv6 frame with next header `next` and `payload`.
#[must_use]
pub fn ipv6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload.len());
    f.extend_from_slice(&TO_TEST_DEVICE);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    let len = u16::try_from(payload.len()).expect("small packet");
    f.extend_from_slice(&len.to_be_bytes());
    f.push(next);
    f.push(hop_limit);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(payload);
    f
}

/// The checksum of an ICMPv6 `message` between `src` and `dst` (RFC 4443: over the
/// pseudo-header and the message): 0 over a valid one.
#[must_use]
pub fn icmp6_checksum(src: &[u8], dst: &[u8], message: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(40 + message.len());
    data.extend_from_slice(src);
    data.extend_from_slice(dst);
    let len = u32::try_from(message.len()).expect("small message");
    data.extend_from_slice(&len.to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 58]);
    data.extend_from_slice(message);
    checksum(&data)
}

/// An ICMPv6 message of `kind` (`code` 0) with identifier 1 and sequence `seq`, 56 data
/// bytes, valid checksum.
#[must_use]
pub fn icmp6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, kind: u8, seq: u16) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend((0..56u8).map(|i| i.wrapping_mul(7)));
    let c = icmp6_checksum(&src, &dst, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, hop_limit, 58, &m)
}
