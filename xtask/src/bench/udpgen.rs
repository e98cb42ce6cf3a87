//! A small-packet generator and a sink, run by `bench datapath` inside its own namespaces
//! (`xtask bench udpgen|udpsink`, hidden subcommands).
//!
//! Why not iperf3 or hping3 alone: `iperf3 -u -l 64 -b 0` sends one `sendto` per packet and
//! tops out near 170 kpps on a bare veth pair here, and `hping3 --flood` (one `malloc` and
//! one `sendto` per packet) near 100 kpps, so both measured the sender more than the path.
//! This one builds IPv4/UDP packets itself and sends them 64 at a time with `sendmmsg` on a
//! raw socket (`IPPROTO_RAW`: the kernel fills in the IP checksum, the UDP checksum is left
//! 0 as IPv4 allows). Each packet's flow is (source port, destination port) counted up over
//! `flows` combinations like hping3's `-s` does with source ports, so with enough flows
//! every packet is the first of its flow for a router's connection tracking. To an IPv6
//! destination it sends UDP headers and payloads on a raw IPv6 socket (`IPPROTO_UDP`): the
//! kernel builds the IPv6 header and, asked by `IPV6_CHECKSUM`, the UDP checksum IPv6 needs.
//!
//! The sink binds the destination port and never reads: the destination's stack drops what
//! overflows the socket buffer instead of answering every packet with ICMP port unreachable
//! (which would load the path backwards).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::libc;

/// First source port; flows count up from here.
const SPORT_BASE: u16 = 1024;
/// Packets per `sendmmsg`.
const BATCH: usize = 64;

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Destination address (IPv4 or IPv6).
    #[arg(long)]
    dst: std::net::IpAddr,
    /// First destination port (flows beyond 64,512 source ports use the next ones).
    #[arg(long, default_value_t = 9)]
    dport: u16,
    /// UDP payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Distinct flows to cycle through (1: one flow).
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// How long to send.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// The first UDP port to bind.
    #[arg(long, default_value_t = 9)]
    port: u16,
    /// How many consecutive ports to bind (`udpgen --flows` beyond 64,512 uses several).
    #[arg(long, default_value_t = 1)]
    ports: u16,
    /// Exit after this long (a safety net: the benchmark kills it sooner).
    #[arg(long, default_value_t = 600.0)]
    seconds: f64,
}

/// The (source, destination) ports of the `i`-th flow.
fn ports(i: u32, dport: u16) -> (u16, u16) {
    let span = u32::from(u16::MAX - SPORT_BASE) + 1;
    let sport = SPORT_BASE + u16::try_from(i % span).expect("below the span");
    let dport = dport.wrapping_add(u16::try_from(i / span).unwrap_or(0));
    (sport, dport)
}

/// An IPv4 + UDP packet; the kernel fills in the source address, IP id and checksum.
fn packet(dst: std::net::Ipv4Addr, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let udp_len = 8 + payload;
    let total = 20 + udp_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    p[8] = 64; // TTL: enough for any chain measured
    p[9] = 17; // UDP
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    p
}

/// A UDP header and payload, for a raw IPv6 socket (the kernel adds the IPv6 header and,
/// with `IPV6_CHECKSUM`, the checksum).
fn datagram6(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let udp_len = 8 + payload;
    let mut p = vec![0u8; udp_len];
    p[0..2].copy_from_slice(&sport.to_be_bytes());
    p[2..4].copy_from_slice(&dport.to_be_bytes());
    p[4..6].copy_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    p
}

/// A raw socket to `dst` and its address: IPv4 (`IPPROTO_RAW`: whole packets) or IPv6
/// (`IPPROTO_UDP`: UDP headers, checksum by the kernel). The address is a `sockaddr_in6`'s
/// room either way.
fn raw_socket(
    dst: std::net::IpAddr,
) -> anyhow::Result<(std::os::fd::OwnedFd, libc::sockaddr_in6, libc::socklen_t)> {
    let (family, proto) = match dst {
        std::net::IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_RAW),
        std::net::IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_UDP),
    };
    // SAFETY: plain socket call; the descriptor is owned below.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a raw socket (root?)");
    }
    // SAFETY: fd was just opened and nothing else owns it.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: all-zero bytes are a valid sockaddr_in6 (and sockaddr_in within it).
    let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let len = match dst {
        std::net::IpAddr::V4(v4) => {
            let sin = (&raw mut addr).cast::<libc::sockaddr_in>();
            // SAFETY: a sockaddr_in fits in the sockaddr_in6 it points into.
            unsafe {
                (*sin).sin_family = libc::sa_family_t::try_from(libc::AF_INET).expect("small");
                (*sin).sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
            }
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::IpAddr::V6(v6) => {
            addr.sin6_family = libc::sa_family_t::try_from(libc::AF_INET6).expect("small");
            addr.sin6_addr.s6_addr = v6.octets();
            // the kernel computes the UDP checksum at this offset
            let offset: libc::c_int = 6;
            // SAFETY: a valid descriptor and option value.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_CHECKSUM,
                    (&raw const offset).cast(),
                    libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("small"),
                )
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error()).context("IPV6_CHECKSUM");
            }
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    Ok((
        owned,
        addr,
        libc::socklen_t::try_from(len).expect("small struct"),
    ))
}

/// Sends for `seconds`; prints `{"sent": N, "seconds": S, "pps": R}`.
pub fn generate(args: &GenArgs) -> anyhow::Result<()> {
    if args.flows == 0 || args.flows > 1 << 24 || args.payload > 1400 {
        bail!("need 1 to 2^24 flows and at most 1400 bytes of payload");
    }
    let (owned, mut addr, addr_len) = raw_socket(args.dst)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&owned);
    // where the ports are in each buffer
    let ports_at = match args.dst {
        std::net::IpAddr::V4(_) => 20,
        std::net::IpAddr::V6(_) => 0,
    };

    // one buffer per slot of the batch; their ports are rewritten before every send
    let mut bufs: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| match args.dst {
            std::net::IpAddr::V4(v4) => packet(v4, SPORT_BASE, args.dport, args.payload),
            std::net::IpAddr::V6(_) => datagram6(SPORT_BASE, args.dport, args.payload),
        })
        .collect();
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: all-zero bytes are a valid mmsghdr; the pointers are set right after.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_name = (&raw mut addr).cast();
        m.msg_hdr.msg_namelen = addr_len;
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }

    let deadline = Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut flow = 0u32;
    let mut sent: u64 = 0;
    let mut errors: u64 = 0;
    while start.elapsed() < deadline {
        if args.flows > 1 {
            for b in &mut bufs {
                let (s, d) = ports(flow, args.dport);
                b[ports_at..ports_at + 2].copy_from_slice(&s.to_be_bytes());
                b[ports_at + 2..ports_at + 4].copy_from_slice(&d.to_be_bytes());
                flow = (flow + 1) % args.flows;
            }
        }
        // SAFETY: msgs points at BATCH valid headers, each at a live buffer and `addr`.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr(),
                u32::try_from(BATCH).expect("small"),
                0,
            )
        };
        if n < 0 {
            // ENOBUFS and the like under overload: count and go on
            errors += 1;
            if errors > 1_000_000 {
                return Err(std::io::Error::last_os_error()).context("sendmmsg keeps failing");
            }
        } else {
            sent += u64::try_from(n).unwrap_or(0);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "packet counts, far below 2^52")]
    let pps = sent as f64 / seconds;
    println!(
        "{}",
        serde_json::json!({"sent": sent, "seconds": seconds, "pps": pps, "send_errors": errors})
    );
    Ok(())
}

/// Binds the ports and sleeps until killed (or `seconds` pass).
pub fn sink(args: &SinkArgs) -> anyhow::Result<()> {
    let sockets = (0..args.ports.max(1))
        .map(|i| {
            let port = args.port.wrapping_add(i);
            // both families where the namespace has IPv6, else IPv4
            std::net::UdpSocket::bind(("::", port))
                .or_else(|_| std::net::UdpSocket::bind(("0.0.0.0", port)))
                .with_context(|| format!("binding UDP port {port}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!("ready");
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    drop(sockets);
    Ok(())
}

/// The destination ports `flows` flows use, from `dport` on.
pub fn ports_used(flows: u32) -> u16 {
    let span = u32::from(u16::MAX - SPORT_BASE) + 1;
    u16::try_from(flows.div_ceil(span))
        .unwrap_or(u16::MAX)
        .max(1)
}

/// Source ports per destination port.
pub const SPORTS: u32 = (u16::MAX - SPORT_BASE) as u32 + 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_count_source_ports_then_destination_ports() {
        assert_eq!(ports(0, 9), (1024, 9));
        assert_eq!(ports(1, 9), (1025, 9));
        assert_eq!(ports(64_511, 9), (65_535, 9));
        assert_eq!(ports(64_512, 9), (1024, 10));
    }

    #[test]
    fn packets_carry_lengths_and_ports() {
        let p = packet(std::net::Ipv4Addr::new(10, 0, 1, 2), 1024, 9, 64);
        assert_eq!(p.len(), 92);
        assert_eq!(&p[2..4], &92u16.to_be_bytes());
        assert_eq!(&p[16..20], &[10, 0, 1, 2]);
        assert_eq!(&p[24..26], &72u16.to_be_bytes());
    }
}
