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

    /// The class of an IPv6 packet whose (first) next header is `next` and, for ICMPv6,
    /// whose type is `icmp_type`. Neighbour discovery and multicast listener messages are
    /// IPv6's ARP: counted as `Other`, so that `icmp` counts pings and errors alone, in
    /// both families.
    #[must_use]
    pub const fn of_ipv6(next: u8, icmp_type: u8) -> Self {
        match next {
            IPPROTO_ICMPV6 if icmp_type >= 130 && icmp_type <= 143 => PacketClass::Other,
            IPPROTO_ICMPV6 => PacketClass::Icmp,
            IPPROTO_TCP => PacketClass::Tcp,
            IPPROTO_UDP => PacketClass::Udp,
            _ => PacketClass::Other,
        }
    }

    /// The class of an Ethernet frame, from its `EtherType` (host byte order) and, for IPv4,
    /// its protocol (for IPv6, see [`PacketClass::of_ipv6`]).
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
    /// Lost on purpose: the link's `loss` impairment.
    ImpairLoss = 6,
    /// The egress link (or the other end of its veth pair) was taken down (`dvnet link`).
    LinkDown = 7,
    /// The delay line's queue of the link was full.
    QueueFull = 8,
}

impl DropReason {
    pub const COUNT: usize = 9;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::FirewallRule,
        DropReason::FirewallPolicy,
        DropReason::NoRoute,
        DropReason::TtlExceeded,
        DropReason::Malformed,
        DropReason::Internal,
        DropReason::ImpairLoss,
        DropReason::LinkDown,
        DropReason::QueueFull,
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
            DropReason::ImpairLoss => "impair-loss",
            DropReason::LinkDown => "link-down",
            DropReason::QueueFull => "queue-full",
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
    /// Packets changed on purpose, by `impaired::*`.
    pub impaired: [u64; impaired::COUNT],
}

/// Indexes of `LinkStats::impaired`.
pub mod impaired {
    /// One bit flipped (`corrupt`).
    pub const CORRUPTED: usize = 0;
    /// Sent twice (`duplicate`): counts the copies.
    pub const DUPLICATED: usize = 1;
    /// Held back by the delay line (`delay`, `jitter`, `rate`).
    pub const DELAYED: usize = 2;
    pub const COUNT: usize = 3;
    pub const NAMES: [&str; COUNT] = ["corrupted", "duplicated", "delayed"];
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats {
            traffic: [[Counter {
                packets: 0,
                bytes: 0,
            }; PacketClass::COUNT]; dir::COUNT],
            drops: [0; DropReason::COUNT],
            impaired: [0; impaired::COUNT],
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
        for (d, od) in self.impaired.iter_mut().zip(other.impaired.iter()) {
            *d += *od;
        }
    }
}

/// What the datapath knows about an interface dvnet created, keyed by its ifindex
/// (dvnet gives every interface of a network a distinct ifindex). Value of `DV_IFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Index into `DV_LINK_STATS`.
    pub link: u32,
    /// The router owning the interface (`IFACE_FORWARD` set), else `NO_ROUTER`.
    pub router: u32,
    /// `IFACE_*` flags.
    pub flags: u32,
    /// The interface's IPv4 address, network byte order (source of the ICMP errors the
    /// router sends).
    pub addr: u32,
    /// With `IFACE_DELAY_RETURN`: the interface whose ingress a delayed packet goes back to.
    pub target: u32,
}

/// `IfaceInfo::router` of an interface that does not belong to a router.
pub const NO_ROUTER: u32 = u32::MAX;
/// The interface belongs to an eBPF router: forward and filter what arrives on it.
pub const IFACE_FORWARD: u32 = 1;
/// The router has firewall rules or a DROP policy: filter forwarded packets.
pub const IFACE_FIREWALL: u32 = 1 << 1;
/// The router's firewall policy is DROP.
pub const IFACE_POLICY_DROP: u32 = 1 << 2;
/// A route miss consults the kernel's FIB (routes from a routing daemon).
pub const IFACE_FIB_FALLBACK: u32 = 1 << 3;
/// A fabric port: count what the node sends (the node's own interface counts what it gets).
pub const IFACE_FABRIC_PORT: u32 = 1 << 4;
/// Packets arriving here are impaired first: `DV_IMPAIR` has this interface's entry.
pub const IFACE_IMPAIRED: u32 = 1 << 5;
/// The near end of a delay line: what arrives here comes back from the delay line and goes
/// on to `IfaceInfo::target`'s ingress.
pub const IFACE_DELAY_RETURN: u32 = 1 << 6;
/// The router's firewall tracks every flow it accepts (policy DROP, or drop rules that could
/// meet an ICMP error about a flow). Without it a flow is tracked only when a drop rule
/// could meet its replies (`PROTO_DROP_PAIR`): the others pass on the rules alone.
pub const IFACE_FW_TRACK: u32 = 1 << 7;

/// Some key of the router's rules has `WILDCARD` as its source class (a rule from `any`):
/// without it, the lookups of wildcard sources are skipped (each is a miss in a map that may
/// hold many rules: a cache miss on every new flow).
pub const IFACE_FW_SRC_ANY: u32 = 1 << 9;
/// Some key of the router's rules has `WILDCARD` as its destination class (a rule to `any`).
pub const IFACE_FW_DST_ANY: u32 = 1 << 10;

/// `lo` of an eBPF router whose own packets the datapath routes (`NodePlan::own_route`):
/// the kernel sends everything it originates for a destination beyond its connected subnets
/// through one default route on `lo`, and the program on `lo`'s ingress routes it by the
/// router's route map, found from the packet's source address (`OWNERS`). No TTL check or
/// decrement, no firewall: the router's own packets, as the kernel's OUTPUT path.
pub const IFACE_OWN: u32 = 1 << 8;
/// The loopback interface's index, in every namespace.
pub const LO_IFINDEX: u32 = 1;
/// `IfaceInfo::link` of an interface that counts nothing (`lo`).
pub const NO_LINK: u32 = u32::MAX;
/// The pseudo-router under which `DV_ROUTES` holds, for each address of an eBPF router
/// whose own packets the datapath routes, a `/32` entry whose `link` is that router's id.
pub const OWNERS: u32 = u32::MAX - 1;

/// `skb->mark` of a duplicate the datapath made: counted, not impaired again. (Marks never
/// leave the namespace: the kernel clears them when a packet crosses into another.)
pub const MARK_DUPLICATE: u32 = 0xd71e_0001;
/// `skb->mark` of a packet back from the delay line: counted and impaired when it arrived.
pub const MARK_DELAYED: u32 = 0xd71e_0002;

/// Capture (`dvnet capture`): at most this many captures of one network at once; each has
/// its own slot in the taps' `sessions` bits and its own range of `DV_CAPTURE`'s entries.
pub const CAPTURE_SESSIONS: u32 = 4;
/// The most bytes of a packet a capture takes (a TCP super-packet is cut there).
pub const CAPTURE_SNAPLEN: u32 = 65_535;

/// Value of `DV_TAPS`, keyed by the ifindex of an interface whose ingress is captured.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tap {
    /// Bit `s`: capture session `s` wants what this interface sees.
    pub sessions: u32,
    /// Entries of `DV_CAPTURE` per session (the possible CPUs): session `s` reads entries
    /// `s * cpus ..`, one per CPU.
    pub cpus: u32,
    /// Bit `s`: session `s` wants only the packets dropped here (`verdict::DROPPED`).
    pub drops_only: u32,
}

/// What the datapath did with a captured packet (`CaptureMeta::verdict`).
pub mod verdict {
    /// Handed to the node it arrived at (a host, or a router's own stack: ARP, routing
    /// protocols, packets for its addresses, the kernel datapath).
    pub const DELIVERED: u8 = 0;
    /// Forwarded by an eBPF router: `egress`, `nexthop`.
    pub const FORWARDED: u8 = 1;
    /// Dropped: `reason` (a `DropReason`), `rule` for a firewall rule.
    pub const DROPPED: u8 = 2;
    /// An ICMP error the router built in place of a packet it dropped (`reason`), sent back
    /// out of the interface the packet came in on.
    pub const ANSWERED: u8 = 3;
    /// Sent by the node onto its bridged segment (seen at its fabric port).
    pub const SENT: u8 = 4;
}

/// What precedes each captured packet's bytes in `DV_CAPTURE` (48 bytes, no padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureMeta {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the packet was seen.
    pub ts_ns: u64,
    /// Where it was seen.
    pub ifindex: u32,
    /// Its length (the bytes that follow may be fewer: `CAPTURE_SNAPLEN`).
    pub len: u32,
    /// A `verdict::*`.
    pub verdict: u8,
    /// With `verdict::DROPPED`/`ANSWERED`: the `DropReason`.
    pub reason: u8,
    /// With `verdict::FORWARDED`: 4 or 6, the family of `nexthop`.
    pub family: u8,
    pub pad: u8,
    /// With `DropReason::FirewallRule`: the rule's slot; else `u32::MAX`.
    pub rule: u32,
    /// With `verdict::FORWARDED`: the interface it leaves by, and the next hop's address in
    /// network byte order: an IPv4 one in the first 4 bytes, an IPv6 one in all 16.
    pub egress: u32,
    pub nexthop: [u8; 16],
    pub pad2: u32,
}

/// Value of `DV_IMPAIR`, keyed by the ifindex of the interface whose ingress impairs.
/// Chances are thresholds out of 2^32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairEntry {
    pub loss: u32,
    pub corrupt: u32,
    pub duplicate: u32,
    /// `IMPAIR_*` flags.
    pub flags: u32,
    /// With `IMPAIR_SEEDED`: the seed of the packets' random draws.
    pub seed: u64,
    /// Packets seen since the entry was written: with a seed, the n-th packet's draws depend
    /// only on the seed and n.
    pub seq: u64,
    /// With `IMPAIR_DELAY`: the near end of the delay line the packet goes into.
    pub delay_ifindex: u32,
    pub pad: u32,
}

/// Draws come from the seed and the packet's sequence number (else from the kernel's).
pub const IMPAIR_SEEDED: u32 = 1;
/// Packets go through the delay line (`ImpairEntry::delay_ifindex`).
pub const IMPAIR_DELAY: u32 = 1 << 1;

/// A chance in parts per million as a threshold out of 2^32: `draw < threshold`.
#[must_use]
pub const fn threshold(ppm: u32) -> u32 {
    if ppm >= 1_000_000 {
        return u32::MAX;
    }
    #[allow(
        clippy::cast_possible_truncation,
        reason = "below 10^6 parts per million, the result is below 2^32"
    )]
    let t = ((ppm as u64 * (1u64 << 32)) / 1_000_000) as u32;
    t
}

/// Key of `DV_ROUTES`, an LPM trie: the router id then the destination, both in network
/// byte order, so one trie holds every router's table; the prefix length counts the router's
/// 32 bits (`32 + plen`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterAddr {
    /// Router id, big-endian.
    pub router: u32,
    /// IPv4 address, network byte order.
    pub addr: u32,
}

impl RouterAddr {
    #[must_use]
    pub const fn new(router: u32, addr_be: u32) -> Self {
        RouterAddr {
            router: router.to_be(),
            addr: addr_be,
        }
    }
}

/// Value of `DV_ROUTES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Where to send: the egress interface.
    pub ifindex: u32,
    /// Next hop, network byte order; 0 on a connected subnet (the destination itself).
    pub nexthop: u32,
    /// `ROUTE_*` flags.
    pub flags: u32,
    /// The egress link.
    pub link: u32,
    /// With `ROUTE_PEER`: the next hop's MAC and the egress interface's.
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// Equal-cost next hops (`"ecmp"`): this one and `paths - 1` in `DV_NEXTHOPS`; 0 or 1
    /// for a route of one next hop.
    pub paths: u16,
    /// The route's prefix length, with which the destination is masked to find its other
    /// next hops.
    pub plen: u16,
}

/// Key of `DV_ROUTES6` (and `DV_FW_CLASSES6`), an LPM trie: the router id (big-endian) then
/// the IPv6 address; the prefix length counts the router's 32 bits (`32 + plen`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterAddr6 {
    pub router: u32,
    pub addr: [u8; 16],
}

/// Value of `DV_ROUTES6`: as [`Route`], with an IPv6 next hop (the next router's link-local
/// address; all zero on a connected subnet: the destination itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route6 {
    pub ifindex: u32,
    pub flags: u32,
    pub link: u32,
    pub nexthop: [u8; 16],
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// Equal-cost next hops (`"ecmp"`): this one and `paths - 1` in `DV_NEXTHOPS6` under
    /// `group`; 0 or 1 for a route of one next hop.
    pub paths: u32,
    /// The route's number among its router's IPv6 routes (from 1): its further next hops'
    /// key, so that no address needs masking to find them.
    pub group: u32,
}

/// Key of `DV_NEXTHOPS6`: the `index`-th (from 1) next hop of route `group` of `router`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NexthopKey6 {
    pub router: u32,
    pub group: u32,
    pub index: u32,
}

/// [`flow_hash`] of an IPv6 flow: each address folded to 32 bits first.
#[must_use]
pub const fn flow_hash6(
    router: u32,
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    ports: u32,
    proto: u8,
) -> u32 {
    flow_hash(router, fold6(saddr), fold6(daddr), ports, proto)
}

/// An IPv6 address's four 32-bit words, xored.
const fn fold6(a: &[u8; 16]) -> u32 {
    let mut out = 0u32;
    let mut i = 0;
    while i < 16 {
        out ^= u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        i += 4;
    }
    out
}

/// Key of `DV_CONNTRACK6`: an IPv6 flow seen by a router, in the direction it was accepted
/// (ICMPv6 echo uses the identifier as both ports).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    pub router: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u32,
}

/// Key of `DV_NEXTHOPS`: the `index`-th (from 1) next hop of the route of `router` to
/// `addr/plen`. A flow takes the next hop `hash % paths` (0: the route itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NexthopKey {
    pub router: u32,
    /// The route's destination, network byte order.
    pub addr: u32,
    pub plen: u32,
    pub index: u32,
}

/// The most next hops of one route.
pub const MAX_PATHS: usize = 64;

/// The hash that spreads flows over equal-cost next hops: the router's id (so that routers
/// in series do not all split a flow set the same way), the addresses, the ports and the
/// protocol, mixed by murmur3's finalizer.
#[must_use]
pub const fn flow_hash(router: u32, saddr: u32, daddr: u32, ports: u32, proto: u8) -> u32 {
    const fn mix(mut h: u32) -> u32 {
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        h
    }
    let mut h = mix(router ^ 0x9e37_79b9);
    h = mix(h ^ saddr);
    h = mix(h ^ daddr);
    h = mix(h ^ ports);
    mix(h ^ proto as u32)
}

/// The destination is the router itself (or a broadcast address of its subnets): the kernel
/// takes it.
pub const ROUTE_LOCAL: u32 = 1;
/// A connected subnet: deliver to the destination directly.
pub const ROUTE_CONNECTED: u32 = 1 << 1;
/// The egress link, or the other end of its veth pair, is down (`dvnet link`): drop, counted.
pub const ROUTE_DOWN: u32 = 1 << 3;
/// The egress is a point-to-point link whose other end is the next hop, MAC known: rewrite
/// the MACs and hand the packet straight to the peer's ingress (`bpf_redirect_peer`), with no
/// neighbour lookup and no transmit queue.
pub const ROUTE_PEER: u32 = 1 << 2;

/// Firewall class of "no rule prefix contains this address".
pub const CLASS_NONE: u32 = 0;
/// In a rule key: any class, any protocol, any port.
pub const WILDCARD: u32 = u32::MAX;
/// `RuleKey::proto` and `dport` for "any".
pub const PROTO_ANY: u16 = u16::MAX;
/// `RuleKey::proto` of a marker, not a rule: some drop rule covers packets from
/// `src_class` to `dst_class` (any protocol, any port). No packet has this protocol.
pub const PROTO_DROP_PAIR: u16 = u16::MAX - 1;
pub const PORT_ANY: u16 = 0;

/// Key of `DV_FW_RULES`: a rule expanded to the classes its prefixes cover.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub router: u32,
    pub src_class: u32,
    pub dst_class: u32,
    /// IP protocol, or `PROTO_ANY`.
    pub proto: u16,
    /// Destination port (host order), or `PORT_ANY`.
    pub dport: u16,
}

/// Value of `DV_FW_RULES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleVerdict {
    /// `VERDICT_ACCEPT` or `VERDICT_DROP`.
    pub verdict: u32,
    /// Index into `DV_RULE_HITS` of the rule that decided.
    pub rule: u32,
}

pub const VERDICT_ACCEPT: u32 = 0;
pub const VERDICT_DROP: u32 = 1;

/// Key of `DV_CONNTRACK`: a flow seen by a router, in the direction it was accepted.
/// ICMP echo uses the identifier as both ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub router: u32,
    /// Network byte order.
    pub saddr: u32,
    /// Network byte order.
    pub daddr: u32,
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u32,
}

/// Indexes of `DV_GLOBAL`, per-CPU counters of the whole network.
pub mod global {
    /// Flows added to the connection map; minus its live entries, the evictions.
    pub const CT_INSERTS: u32 = 0;
    /// Route misses answered through the kernel FIB.
    pub const FIB_LOOKUPS: u32 = 1;
    /// Packets accepted by the rules alone, their flow not tracked: no drop rule could meet
    /// its replies.
    pub const CT_UNTRACKED: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Map names (≤ 15 characters, one prefix).
pub mod maps {
    pub const LINK_STATS: &str = "DV_LINK_STATS";
    pub const IFACES: &str = "DV_IFACES";
    pub const ROUTES: &str = "DV_ROUTES";
    pub const FW_CLASSES: &str = "DV_FW_CLASSES";
    pub const FW_RULES: &str = "DV_FW_RULES";
    pub const CONNTRACK: &str = "DV_CONNTRACK";
    pub const RULE_HITS: &str = "DV_RULE_HITS";
    pub const GLOBAL: &str = "DV_GLOBAL";
    pub const IMPAIR: &str = "DV_IMPAIR";
    /// ifindex → `Tap`: interfaces captured.
    pub const TAPS: &str = "DV_TAPS";
    /// One `u32`: how many interfaces are captured (0: the datapath does not look).
    pub const TAPPING: &str = "DV_TAPPING";
    /// Perf event array: captured packets, `CaptureMeta` then the bytes.
    pub const CAPTURE: &str = "DV_CAPTURE";
    /// `NexthopKey` → `Route`: the further next hops of equal-cost routes.
    pub const NEXTHOPS: &str = "DV_NEXTHOPS";
    /// `RouterAddr6` → `Route6`: every eBPF router's IPv6 table.
    pub const ROUTES6: &str = "DV_ROUTES6";
    /// `RouterAddr6` → class: the IPv6 prefixes of firewall rules.
    pub const FW_CLASSES6: &str = "DV_FW_CLASSES6";
    /// `FlowKey6` → 1: accepted IPv6 flows.
    pub const CONNTRACK6: &str = "DV_CONNTRACK6";
    /// ifindex → IPv6 address: the source of the ICMPv6 errors a router sends from there.
    pub const ADDRS6: &str = "DV_ADDRS6";
    /// Per-CPU scratch space of the IPv6 program.
    pub const SCRATCH6: &str = "DV_SCRATCH6";
    /// Program array: `node_ingress` tail-calls `node_ingress6` (index `JUMP_IPV6`) for the
    /// IPv6 packets a router forwards, in a stack frame of its own.
    pub const JUMP: &str = "DV_JUMP";
    /// Per-CPU scratch space: IPv6 flow keys.
    pub const KEYS6: &str = "DV_KEYS6";
    /// `NexthopKey6` → `Route6`: the further next hops of equal-cost IPv6 routes.
    pub const NEXTHOPS6: &str = "DV_NEXTHOPS6";
    /// Per-CPU scratch space: the capture record of an IPv6 packet, off the stack of
    /// `node_ingress6`.
    pub const CAPTURE6: &str = "DV_CAPTURE6";
    pub const ALL: [&str; 22] = [
        LINK_STATS,
        IFACES,
        ROUTES,
        FW_CLASSES,
        FW_RULES,
        CONNTRACK,
        RULE_HITS,
        GLOBAL,
        IMPAIR,
        TAPS,
        TAPPING,
        CAPTURE,
        NEXTHOPS,
        ROUTES6,
        FW_CLASSES6,
        CONNTRACK6,
        ADDRS6,
        SCRATCH6,
        JUMP,
        KEYS6,
        NEXTHOPS6,
        CAPTURE6,
    ];
    /// `node_ingress6`'s index in `DV_JUMP`.
    pub const JUMP_IPV6: u32 = 0;
}

/// Program names, as the kernel and aya see them.
pub mod programs {
    /// TC ingress of every node interface: counts what the node receives; on an eBPF
    /// router's interface, also filters and forwards.
    pub const NODE_INGRESS: &str = "node_ingress";
    /// TC ingress of a fabric port (bridged segments): counts what the node sends.
    pub const FABRIC_INGRESS: &str = "fabric_ingress";
    /// TC ingress of the near end of a delay line: sends delayed packets on.
    pub const DELAY_RETURN: &str = "delay_return";
    /// Reached from `node_ingress` by a tail call (never attached): forwards, filters or
    /// answers the IPv6 packets of an eBPF router.
    pub const NODE_INGRESS6: &str = "node_ingress6";
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const ETH_HLEN: usize = 14;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with no padding holes that matter (all fields are
    // integers; explicit padding fields where needed), valid for every bit pattern.
    unsafe impl aya::Pod for super::LinkStats {}
    unsafe impl aya::Pod for super::IfaceInfo {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::RouterAddr {}
    unsafe impl aya::Pod for super::Route {}
    unsafe impl aya::Pod for super::NexthopKey {}
    unsafe impl aya::Pod for super::RuleKey {}
    unsafe impl aya::Pod for super::RuleVerdict {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::RouterAddr6 {}
    unsafe impl aya::Pod for super::Route6 {}
    unsafe impl aya::Pod for super::FlowKey6 {}
    unsafe impl aya::Pod for super::NexthopKey6 {}
    unsafe impl aya::Pod for super::ImpairEntry {}
    unsafe impl aya::Pod for super::Tap {}
    unsafe impl aya::Pod for super::CaptureMeta {}
}
