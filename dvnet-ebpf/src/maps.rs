//! The maps, shared by every program of a network, and the counting helpers.

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::generated::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerfEventArray, ProgramArray},
    programs::TcContext,
};
use dvnet_common::{
    CAPTURE_SESSIONS, CAPTURE_SNAPLEN, CaptureMeta, DropReason, ETH_HLEN, ETH_P_IP, ETH_P_IPV6,
    FlowKey, FlowKey6, IfaceInfo, ImpairEntry, LinkStats, NexthopKey, NexthopKey6, PacketClass,
    Route, Route6, RouterAddr, RouterAddr6, RuleKey, RuleVerdict, Tap,
};

// Sizes are set by userspace before loading, from the network's plan.

/// Per-link traffic by direction and class, drops by reason; indexed by link id.
#[map(name = "DV_LINK_STATS")]
pub static DV_LINK_STATS: PerCpuArray<LinkStats> = PerCpuArray::with_max_entries(1, 0);

/// ifindex → where a program runs.
/// `BPF_F_NO_PREALLOC`: entries are allocated as userspace writes them, so a map sized with
/// room for edits costs only what it holds.
const NO_PREALLOC: u32 = 1;

#[map(name = "DV_IFACES")]
pub static DV_IFACES: HashMap<u32, IfaceInfo> = HashMap::with_max_entries(1, NO_PREALLOC);

/// (router, destination) → route; every router's table in one trie.
#[map(name = "DV_ROUTES")]
pub static DV_ROUTES: LpmTrie<RouterAddr, Route> = LpmTrie::with_max_entries(1, 0);

/// The further next hops of equal-cost routes (`Route::paths`).
#[map(name = "DV_NEXTHOPS")]
pub static DV_NEXTHOPS: HashMap<NexthopKey, Route> = HashMap::with_max_entries(1, NO_PREALLOC);

/// (router, address) → firewall class: the most specific rule prefix containing it.
#[map(name = "DV_FW_CLASSES")]
pub static DV_FW_CLASSES: LpmTrie<RouterAddr, u32> = LpmTrie::with_max_entries(1, 0);

/// Rules, expanded to classes, with wildcards.
#[map(name = "DV_FW_RULES")]
pub static DV_FW_RULES: HashMap<RuleKey, RuleVerdict> = HashMap::with_max_entries(1, NO_PREALLOC);

/// Accepted flows, so their later packets and replies pass. LRU: a full map evicts.
#[map(name = "DV_CONNTRACK")]
pub static DV_CONNTRACK: LruHashMap<FlowKey, u32> = LruHashMap::with_max_entries(1, 0);

/// (router, IPv6 destination) → route.
#[map(name = "DV_ROUTES6")]
pub static DV_ROUTES6: LpmTrie<RouterAddr6, Route6> = LpmTrie::with_max_entries(1, 0);

/// The further next hops of equal-cost IPv6 routes (`Route6::paths`).
#[map(name = "DV_NEXTHOPS6")]
pub static DV_NEXTHOPS6: HashMap<NexthopKey6, Route6> = HashMap::with_max_entries(1, NO_PREALLOC);

/// (router, IPv6 address) → firewall class.
#[map(name = "DV_FW_CLASSES6")]
pub static DV_FW_CLASSES6: LpmTrie<RouterAddr6, u32> = LpmTrie::with_max_entries(1, 0);

/// Accepted IPv6 flows.
#[map(name = "DV_CONNTRACK6")]
pub static DV_CONNTRACK6: LruHashMap<FlowKey6, u32> = LruHashMap::with_max_entries(1, 0);

/// ifindex → the IPv6 source of the ICMPv6 errors a router sends from that interface.
#[map(name = "DV_ADDRS6")]
pub static DV_ADDRS6: HashMap<u32, [u8; 16]> = HashMap::with_max_entries(1, NO_PREALLOC);

/// Scratch space for building an ICMPv6 error (one per CPU): too large for the stack
/// beside the rest of the program.
#[map(name = "DV_SCRATCH6")]
pub static DV_SCRATCH6: PerCpuArray<[u8; 256]> = PerCpuArray::with_max_entries(1, 0);

/// The IPv6 firewall's keys, per CPU, off the stack: a flow and its reply (or a quoted
/// flow), and the key of an address's class lookup.
#[repr(C)]
pub struct Keys6 {
    pub flows: [FlowKey6; 2],
    pub class: aya_ebpf::maps::lpm_trie::Key<RouterAddr6>,
}

#[map(name = "DV_KEYS6")]
pub static DV_KEYS6: PerCpuArray<Keys6> = PerCpuArray::with_max_entries(1, 0);

/// `node_ingress6`, tail-called for the IPv6 packets of eBPF routers.
#[map(name = "DV_JUMP")]
pub static DV_JUMP: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Hits per rule.
#[map(name = "DV_RULE_HITS")]
pub static DV_RULE_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// ifindex → impairments of what arrives there (interfaces flagged `IFACE_IMPAIRED`).
#[map(name = "DV_IMPAIR")]
pub static DV_IMPAIR: HashMap<u32, ImpairEntry> = HashMap::with_max_entries(1, NO_PREALLOC);

/// ifindex → the captures that want what arrives there (`dvnet capture`).
#[map(name = "DV_TAPS")]
pub static DV_TAPS: HashMap<u32, Tap> = HashMap::with_max_entries(1, NO_PREALLOC);

/// How many interfaces are captured: while 0, a packet costs one array read.
#[map(name = "DV_TAPPING")]
pub static DV_TAPPING: Array<u32> = Array::with_max_entries(1, 0);

/// Captured packets: `CaptureMeta`, then the packet's bytes; `CAPTURE_SESSIONS` ranges of
/// one entry per CPU, each filled by the capture that reads it.
#[map(name = "DV_CAPTURE")]
pub static DV_CAPTURE: PerfEventArray<CaptureMeta> = PerfEventArray::new(0);

/// The capture record of an IPv6 packet, per CPU, off the stack of `node_ingress6`.
#[map(name = "DV_CAPTURE6")]
pub static DV_CAPTURE6: PerCpuArray<CaptureMeta> = PerCpuArray::with_max_entries(1, 0);

/// Network-wide counters (`dvnet_common::global`).
#[map(name = "DV_GLOBAL")]
pub static DV_GLOBAL: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(dvnet_common::global::COUNT, 0);

/// The interface the packet is on, if dvnet created it.
#[inline(always)]
pub fn iface_of(ctx: &TcContext) -> Option<IfaceInfo> {
    // SAFETY: the context is the kernel's `__sk_buff`, valid for the whole call.
    let ifindex = unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).ifindex };
    // SAFETY: the value is copied out before anything else touches the map.
    unsafe { DV_IFACES.get(&ifindex) }.copied()
}

/// The class of the frame in `ctx`.
#[inline(always)]
pub fn classify(ctx: &TcContext) -> PacketClass {
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return PacketClass::Other;
    };
    let ethertype = u16::from_be(ethertype);
    if ethertype == ETH_P_IPV6 {
        let next = ctx.load::<u8>(ETH_HLEN + 6).unwrap_or(0);
        let icmp_type = ctx.load::<u8>(ETH_HLEN + 40).unwrap_or(0);
        return PacketClass::of_ipv6(next, icmp_type);
    }
    let proto = if ethertype == ETH_P_IP {
        ctx.load::<u8>(ETH_HLEN + 9).unwrap_or(0)
    } else {
        0
    };
    PacketClass::of_frame(ethertype, proto)
}

/// Counts the packet on `link` in `direction`.
#[inline(always)]
pub fn count(ctx: &TcContext, link: u32, direction: usize) {
    let class = classify(ctx) as usize;
    let Some(stats) = DV_LINK_STATS.get_ptr_mut(link) else {
        return;
    };
    // SAFETY: a per-CPU slot; nothing else runs on this CPU while the program does.
    let stats = unsafe { &mut *stats };
    if let Some(d) = stats.traffic.get_mut(direction)
        && let Some(c) = d.get_mut(class)
    {
        c.packets += 1;
        c.bytes += u64::from(ctx.len());
    }
}

/// Counts a packet dropped (or answered instead of forwarded) on `link`.
#[inline(always)]
pub fn count_drop(link: u32, reason: DropReason) {
    if let Some(stats) = DV_LINK_STATS.get_ptr_mut(link) {
        // SAFETY: as in `count`.
        let stats = unsafe { &mut *stats };
        // The reason's index read as a plain byte: LLVM knows an enum's range and would drop
        // the bounds check below, which the verifier needs when the reason was kept on the
        // stack as a wider word.
        let index = reason as u8;
        // SAFETY: a read of a local.
        let index = unsafe { core::ptr::read_volatile(&raw const index) };
        if let Some(d) = stats.drops.get_mut(usize::from(index)) {
            *d += 1;
        }
    }
}

/// Counts a packet changed on purpose on `link` (`dvnet_common::impaired`).
#[inline(always)]
pub fn count_impaired(link: u32, what: usize) {
    if let Some(stats) = DV_LINK_STATS.get_ptr_mut(link) {
        // SAFETY: as in `count`.
        let stats = unsafe { &mut *stats };
        if let Some(d) = stats.impaired.get_mut(what) {
            *d += 1;
        }
    }
}

/// Adds one to a per-CPU counter array slot.
#[inline(always)]
pub fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(v) = map.get_ptr_mut(index) {
        // SAFETY: as in `count`.
        unsafe { *v += 1 };
    }
}

/// Whether any interface of the network is captured (one array read).
#[inline(always)]
pub fn tapping() -> bool {
    DV_TAPPING.get(0).is_some_and(|n| *n != 0)
}

/// Hands the packet, as it is now, with `meta` to every capture that taps `meta.ifindex`.
/// Call only when [`tapping`].
#[inline(always)]
pub fn capture(ctx: &TcContext, meta: &mut CaptureMeta) {
    // SAFETY: the value is copied out before anything else touches the map.
    let Some(tap) = (unsafe { DV_TAPS.get(&meta.ifindex) }).copied() else {
        return;
    };
    let len = ctx.len();
    meta.len = len;
    // SAFETY: plain helper calls.
    meta.ts_ns = unsafe { bpf_ktime_get_ns() };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let snap = if len < CAPTURE_SNAPLEN {
        len
    } else {
        CAPTURE_SNAPLEN
    };
    let dropped = meta.verdict == dvnet_common::verdict::DROPPED;
    for session in 0..CAPTURE_SESSIONS {
        let bit = 1 << session;
        if tap.sessions & bit != 0 && (dropped || tap.drops_only & bit == 0) {
            DV_CAPTURE.output_at_index(ctx, session * tap.cpus + cpu, meta, snap);
        }
    }
}
