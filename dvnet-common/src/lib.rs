//! Types shared by dvnet's eBPF programs and its userspace: map keys and values, drop
//! reasons, packet classes. Everything is `#[repr(C)]` and plain data; the `user` feature
//! implements `aya::Pod` so userspace can read and write the maps.
#![no_std]

/// Directions of a link, relative to the node that owns the interface.
pub mod dir {
    /// Packets the node sent on the link.
    pub const FROM_NODE: usize = 0;
    /// Packets delivered to the node on the link.
    pub const TO_NODE: usize = 1;
    /// Number of directions.
    pub const COUNT: usize = 2;
}

/// What a packet is, for counting: `10 pings → 10` must hold even though ARP and other
/// chatter share the link.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketClass {
    Icmp = 0,
    Tcp = 1,
    Udp = 2,
    /// IPv4 with another protocol (OSPF, GRE, ...).
    Ipv4Other = 3,
    Arp = 4,
    /// Anything else: IPv6, LLDP, ...
    Other = 5,
}

impl PacketClass {
    pub const COUNT: usize = 6;
    pub const ALL: [PacketClass; Self::COUNT] = [
        PacketClass::Icmp,
        PacketClass::Tcp,
        PacketClass::Udp,
        PacketClass::Ipv4Other,
        PacketClass::Arp,
        PacketClass::Other,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            PacketClass::Icmp => "icmp",
            PacketClass::Tcp => "tcp",
            PacketClass::Udp => "udp",
            PacketClass::Ipv4Other => "ipv4-other",
            PacketClass::Arp => "arp",
            PacketClass::Other => "other",
        }
    }

    /// The class of an IPv4 packet carrying `proto`.
    #[must_use]
    pub const fn of_ipv4(proto: u8) -> Self {
        match proto {
            IPPROTO_ICMP => PacketClass::Icmp,
            IPPROTO_TCP => PacketClass::Tcp,
            IPPROTO_UDP => PacketClass::Udp,
            _ => PacketClass::Ipv4Other,
        }
    }

    /// The class of an Ethernet frame, from its EtherType (host byte order) and, for IPv4,
    /// its protocol.
    #[must_use]
    pub const fn of_frame(ethertype: u16, ipv4_proto: u8) -> Self {
        match ethertype {
            ETH_P_IP => Self::of_ipv4(ipv4_proto),
            ETH_P_ARP => PacketClass::Arp,
            _ => PacketClass::Other,
        }
    }
}

/// Why the datapath dropped (or answered instead of forwarding) a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A `drop` rule of the router's firewall matched.
    FirewallRule = 0,
    /// No rule matched and the router's policy is DROP.
    FirewallPolicy = 1,
    /// No route to the destination (answered with ICMP destination unreachable).
    NoRoute = 2,
    /// TTL reached zero (answered with ICMP time exceeded).
    TtlExceeded = 3,
    /// The packet was too short or malformed to parse.
    Malformed = 4,
    /// A helper failed (redirect, checksum, resize).
    Internal = 5,
}

impl DropReason {
    pub const COUNT: usize = 6;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::FirewallRule,
        DropReason::FirewallPolicy,
        DropReason::NoRoute,
        DropReason::TtlExceeded,
        DropReason::Malformed,
        DropReason::Internal,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::FirewallRule => "fw-rule",
            DropReason::FirewallPolicy => "fw-policy",
            DropReason::NoRoute => "no-route",
            DropReason::TtlExceeded => "ttl",
            DropReason::Malformed => "malformed",
            DropReason::Internal => "internal",
        }
    }
}

/// Packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Everything counted on one link (one node interface), per CPU: packets and bytes by
/// direction and class, and drops by reason. Value of `LINK_STATS`, indexed by link id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStats {
    pub traffic: [[Counter; PacketClass::COUNT]; dir::COUNT],
    pub drops: [u64; DropReason::COUNT],
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats {
            traffic: [[Counter {
                packets: 0,
                bytes: 0,
            }; PacketClass::COUNT]; dir::COUNT],
            drops: [0; DropReason::COUNT],
        }
    }
}

impl LinkStats {
    /// Adds `other` into `self` (summing the per-CPU values of a link).
    pub fn add(&mut self, other: &LinkStats) {
        for (d, od) in self.traffic.iter_mut().zip(other.traffic.iter()) {
            for (c, oc) in d.iter_mut().zip(od.iter()) {
                c.packets += oc.packets;
                c.bytes += oc.bytes;
            }
        }
        for (d, od) in self.drops.iter_mut().zip(other.drops.iter()) {
            *d += *od;
        }
    }
}

/// What the datapath knows about an interface dvnet created, keyed by its ifindex
/// (dvnet gives every interface of a network a distinct ifindex). Value of `IFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Index into `LINK_STATS`.
    pub link: u32,
    /// The router owning the interface (router-side interfaces only), else `NO_ROUTER`.
    pub router: u32,
    /// `ROLE_*`.
    pub role: u32,
    pub _pad: u32,
}

/// `IfaceInfo::router` of an interface that does not belong to a router.
pub const NO_ROUTER: u32 = u32::MAX;
/// The fabric-side end of a node's link (in the fabric namespace).
pub const ROLE_FABRIC_PORT: u32 = 0;
/// A router's own interface (inside the router's namespace).
pub const ROLE_ROUTER_IFACE: u32 = 1;

/// Map names (≤ 15 characters, one prefix).
pub mod maps {
    pub const LINK_STATS: &str = "DV_LINK_STATS";
    pub const IFACES: &str = "DV_IFACES";
}

/// Program names, as the kernel and aya see them.
pub mod programs {
    /// TC ingress of a fabric port: packets the node sent.
    pub const FABRIC_FROM_NODE: &str = "fabric_from_node";
    /// TC egress of a fabric port: packets delivered to the node.
    pub const FABRIC_TO_NODE: &str = "fabric_to_node";
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const ETH_HLEN: usize = 14;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with no padding holes that matter (all fields are
    // integers; explicit padding fields where needed), valid for every bit pattern.
    unsafe impl aya::Pod for super::LinkStats {}
    unsafe impl aya::Pod for super::IfaceInfo {}
    unsafe impl aya::Pod for super::Counter {}
}
