//! A router's firewall, for forwarded packets. Semantics (DESIGN.md): a matching `drop` rule
//! wins over a matching `accept` rule, which wins over the policy; stateful: packets of an
//! accepted flow, and its replies, pass.
//!
//! Cost per packet does not grow with the number of rules. Addresses are classified by an
//! LPM trie into the most specific rule prefix that contains them (userspace expands each
//! rule to every class its prefixes cover); then at most 12 hash lookups cover every
//! combination of {source class, any} × {destination class, any} × {(protocol, port),
//! (protocol, any port), any}. Accepted flows enter an LRU connection map, so only the first
//! packet of a flow pays for the rule lookups.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use dvnet_common::{
    CLASS_NONE, DropReason, FlowKey, FlowKey6, IFACE_FW_DST_ANY, IFACE_FW_SRC_ANY, IFACE_FW_TRACK,
    IFACE_POLICY_DROP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IfaceInfo, PORT_ANY,
    PROTO_ANY, PROTO_DROP_PAIR, RouterAddr, RouterAddr6, RuleKey, VERDICT_DROP, WILDCARD, global,
};

use crate::{
    maps::{
        DV_CONNTRACK, DV_CONNTRACK6, DV_FW_CLASSES, DV_FW_CLASSES6, DV_FW_RULES, DV_GLOBAL,
        DV_KEYS6, DV_RULE_HITS, bump,
    },
    packet::{IP_OFF, IPV6_HLEN, Ipv4, Ipv6},
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO: u8 = 8;
const ICMPV6_ECHO: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const BPF_NOEXIST: u64 = 1;

/// The ports of a packet (network byte order); ICMP echo uses its identifier for both.
#[inline(always)]
pub fn ports(ctx: &TcContext, l4: usize, proto: u8) -> (u16, u16) {
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => match ctx.load::<[u16; 2]>(l4) {
            Ok([s, d]) => (s, d),
            Err(_) => (0, 0),
        },
        IPPROTO_ICMP => match ctx.load::<[u8; 2]>(l4) {
            Ok([ICMP_ECHO | ICMP_ECHO_REPLY, _]) => {
                let id = ctx.load::<u16>(l4 + 4).unwrap_or(0);
                (id, id)
            }
            _ => (0, 0),
        },
        _ => (0, 0),
    }
}

#[inline(always)]
fn flow(router: u32, saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        router,
        saddr,
        daddr,
        sport,
        dport,
        proto: u32::from(proto),
    }
}

/// Whether the flow, or the flow it replies to, was accepted before.
#[inline(always)]
fn tracked(key: &FlowKey) -> bool {
    // SAFETY: read-only lookups; the values are not used.
    if unsafe { DV_CONNTRACK.get(key) }.is_some() {
        return true;
    }
    let reply = FlowKey {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        ..*key
    };
    unsafe { DV_CONNTRACK.get(&reply) }.is_some()
}

/// For an ICMP error, the flow of the packet it quotes (which its receiver sent).
#[inline(always)]
fn quoted_flow(ctx: &TcContext, router: u32, l4: usize) -> Option<FlowKey> {
    let kind = ctx.load::<u8>(l4).ok()?;
    if !matches!(kind, 3 | 11 | 12) {
        return None;
    }
    let inner = l4 + 8;
    let ver_ihl = ctx.load::<u8>(inner).ok()?;
    let inner_l4 = inner + usize::from(ver_ihl & 0x0f) * 4;
    let proto = ctx.load::<u8>(inner + 9).ok()?;
    let saddr = ctx.load::<u32>(inner + 12).ok()?;
    let daddr = ctx.load::<u32>(inner + 16).ok()?;
    let (sport, dport) = ports(ctx, inner_l4, proto);
    Some(flow(router, saddr, daddr, sport, dport, proto))
}

/// The firewall class of an address at a router.
#[inline(always)]
fn class_of(router: u32, addr: u32) -> u32 {
    let key = Key::new(
        64,
        RouterAddr {
            router: router.to_be(),
            addr,
        },
    );
    DV_FW_CLASSES.get(&key).copied().unwrap_or(CLASS_NONE)
}

/// The wildcard source and destination classes worth looking up for this router: `WILDCARD`
/// where some rule of it has one there, else `CLASS_NONE` (skipped).
#[inline(always)]
fn wildcards(iface: &IfaceInfo) -> (u32, u32) {
    let any = |flag: u32| {
        if iface.flags & flag != 0 {
            WILDCARD
        } else {
            CLASS_NONE
        }
    };
    (any(IFACE_FW_SRC_ANY), any(IFACE_FW_DST_ANY))
}

/// Lets the packet through, or says why it dies: the reason, and the slot of the `drop` rule
/// that matched (`u32::MAX` for the policy).
#[inline(always)]
pub fn check(ctx: &TcContext, iface: &IfaceInfo, ip: &Ipv4) -> Result<(), (DropReason, u32)> {
    let router = iface.router;
    let l4 = IP_OFF + ip.header_len;
    let (sport, dport) = if ip.is_later_fragment() {
        (0, 0)
    } else {
        ports(ctx, l4, ip.proto)
    };
    let key = flow(router, ip.saddr, ip.daddr, sport, dport, ip.proto);
    if tracked(&key) {
        return Ok(());
    }
    if ip.proto == IPPROTO_ICMP
        && let Some(quoted) = quoted_flow(ctx, router, l4)
        && tracked(&quoted)
    {
        return Ok(());
    }

    let src = class_of(router, ip.saddr);
    let dst = class_of(router, ip.daddr);
    if verdict(iface, (src, dst), ip.proto, dport)?
        && DV_CONNTRACK.insert(&key, &1, BPF_NOEXIST).is_ok()
    {
        bump(&DV_GLOBAL, global::CT_INSERTS);
    }
    Ok(())
}

/// The rules' verdict on a new flow from class `src` to class `dst` of protocol `proto` to
/// port `dport` (network byte order): dropped (the reason, and the slot of the `drop` rule
/// that matched, `u32::MAX` for the policy), or accepted, and then whether the flow must be
/// tracked. The same for both families (their classes differ, the rules are shared).
#[inline(always)]
fn verdict(
    iface: &IfaceInfo,
    (src, dst): (u32, u32),
    proto: u8,
    dport: u16,
) -> Result<bool, (DropReason, u32)> {
    let router = iface.router;
    let port = if matches!(proto, IPPROTO_TCP | IPPROTO_UDP) {
        u16::from_be(dport)
    } else {
        PORT_ANY
    };
    let proto = u16::from(proto);
    let (src_any, dst_any) = wildcards(iface);
    let srcs = [src, src_any];
    let dsts = [dst, dst_any];
    let l4s = [(proto, port), (proto, PORT_ANY), (PROTO_ANY, PORT_ANY)];
    let mut accept = u32::MAX;
    let mut drop = u32::MAX;
    for s in srcs {
        if s == CLASS_NONE {
            continue;
        }
        for d in dsts {
            if d == CLASS_NONE {
                continue;
            }
            for (p, dp) in l4s {
                let k = RuleKey {
                    router,
                    src_class: s,
                    dst_class: d,
                    proto: p,
                    dport: dp,
                };
                if let Some(v) = unsafe { DV_FW_RULES.get(&k) } {
                    if v.verdict == VERDICT_DROP {
                        drop = drop.min(v.rule);
                    } else {
                        accept = accept.min(v.rule);
                    }
                }
            }
        }
    }
    if drop != u32::MAX {
        bump(&DV_RULE_HITS, drop);
        return Err((DropReason::FirewallRule, drop));
    }
    if accept != u32::MAX {
        bump(&DV_RULE_HITS, accept);
    } else if iface.flags & IFACE_POLICY_DROP != 0 {
        return Err((DropReason::FirewallPolicy, u32::MAX));
    }
    // Tracking lets the replies pass where rules would drop them. Where no drop rule could
    // meet them (and the policy accepts), the rules alone let every packet of the flow and
    // every reply through: the insert, most of a new flow's cost, is saved.
    if iface.flags & IFACE_FW_TRACK == 0
        && !replies_could_be_dropped(router, (src, dst), (src_any, dst_any))
    {
        bump(&DV_GLOBAL, global::CT_UNTRACKED);
        return Ok(false);
    }
    Ok(true)
}

/// The ports of an IPv6 packet whose (first) next header is `next`; ICMPv6 echo uses its
/// identifier for both.
#[inline(always)]
pub fn ports6(ctx: &TcContext, l4: usize, next: u8) -> (u16, u16) {
    match next {
        IPPROTO_TCP | IPPROTO_UDP => ports(ctx, l4, next),
        IPPROTO_ICMPV6 => match ctx.load::<[u8; 2]>(l4) {
            Ok([ICMPV6_ECHO | ICMPV6_ECHO_REPLY, _]) => {
                let id = ctx.load::<u16>(l4 + 4).unwrap_or(0);
                (id, id)
            }
            _ => (0, 0),
        },
        _ => (0, 0),
    }
}

/// Whether the IPv6 flow `key`, or the flow it replies to, was accepted before; `other`
/// is scratch space for the reply's key (both in a per-CPU map: the stack has no room).
#[inline(always)]
fn tracked6(key: &FlowKey6, other: &mut FlowKey6) -> bool {
    // SAFETY: read-only lookups; the values are not used.
    if unsafe { DV_CONNTRACK6.get(key) }.is_some() {
        return true;
    }
    other.router = key.router;
    other.saddr = key.daddr;
    other.daddr = key.saddr;
    other.sport = key.dport;
    other.dport = key.sport;
    other.proto = key.proto;
    unsafe { DV_CONNTRACK6.get(other) }.is_some()
}

/// For an ICMPv6 error, the flow of the packet it quotes (which its receiver sent), written
/// into `out`; `false` when the packet is not such an error.
#[inline(always)]
fn quoted_flow6(ctx: &TcContext, router: u32, l4: usize, out: &mut FlowKey6) -> bool {
    let Ok(kind) = ctx.load::<u8>(l4) else {
        return false;
    };
    if !(1..=4).contains(&kind) {
        return false;
    }
    let inner = l4 + 8;
    let Ok(next) = ctx.load::<u8>(inner + 6) else {
        return false;
    };
    let (sport, dport) = ports6(ctx, inner + IPV6_HLEN, next);
    let (Ok(saddr), Ok(daddr)) = (
        ctx.load::<[u8; 16]>(inner + 8),
        ctx.load::<[u8; 16]>(inner + 24),
    ) else {
        return false;
    };
    out.router = router;
    out.saddr = saddr;
    out.daddr = daddr;
    out.sport = sport;
    out.dport = dport;
    out.proto = u32::from(next);
    true
}

/// The firewall class of an IPv6 address at a router.
#[inline(always)]
fn class_of6(key: &mut Key<RouterAddr6>, router: u32, addr: [u8; 16]) -> u32 {
    *key = Key::new(
        160,
        RouterAddr6 {
            router: router.to_be(),
            addr,
        },
    );
    DV_FW_CLASSES6.get(key).copied().unwrap_or(CLASS_NONE)
}

/// [`check`] for an IPv6 packet, in a function of its own (a BPF subprogram, whose stack
/// frame is apart from its caller's: the keys of IPv6 flows are large), its answer packed
/// into one word (BPF functions return a register): 0 lets the packet through, else the
/// reason (plus one) in the high half and the rule's slot in the low half.
#[inline(never)]
pub fn check6(ctx: &TcContext, iface: &IfaceInfo, ip: &Ipv6) -> u64 {
    match check6_inner(ctx, iface, ip) {
        Ok(()) => 0,
        Err((reason, rule)) => ((reason as u64 + 1) << 32) | u64::from(rule),
    }
}

#[inline(always)]
fn check6_inner(ctx: &TcContext, iface: &IfaceInfo, ip: &Ipv6) -> Result<(), (DropReason, u32)> {
    let router = iface.router;
    let l4 = IP_OFF + IPV6_HLEN;
    let (sport, dport) = ports6(ctx, l4, ip.next);
    let Some(keys) = DV_KEYS6.get_ptr_mut(0) else {
        return Err((DropReason::Internal, u32::MAX));
    };
    // SAFETY: a per-CPU slot; nothing else runs on this CPU while the program does.
    let keys = unsafe { &mut *keys };
    let [key, other] = &mut keys.flows;
    key.router = router;
    key.saddr = ip.saddr;
    key.daddr = ip.daddr;
    key.sport = sport;
    key.dport = dport;
    key.proto = u32::from(ip.next);
    if tracked6(key, other) {
        return Ok(());
    }
    if ip.next == IPPROTO_ICMPV6 && quoted_flow6(ctx, router, l4, other) {
        let quoted = *other;
        if tracked6(&quoted, other) {
            return Ok(());
        }
    }
    let classes = (
        class_of6(&mut keys.class, router, ip.saddr),
        class_of6(&mut keys.class, router, ip.daddr),
    );
    if verdict(iface, classes, ip.next, dport)?
        && DV_CONNTRACK6.insert(key, &1, BPF_NOEXIST).is_ok()
    {
        bump(&DV_GLOBAL, global::CT_INSERTS);
    }
    Ok(())
}

/// Whether a drop rule covers packets from class `dst` to class `src` (a reply's way), with
/// wildcards: at most four lookups of the `PROTO_DROP_PAIR` markers.
#[inline(always)]
fn replies_could_be_dropped(
    router: u32,
    (src, dst): (u32, u32),
    (src_any, dst_any): (u32, u32),
) -> bool {
    for s in [dst, src_any] {
        if s == CLASS_NONE {
            continue;
        }
        for d in [src, dst_any] {
            if d == CLASS_NONE {
                continue;
            }
            let k = RuleKey {
                router,
                src_class: s,
                dst_class: d,
                proto: PROTO_DROP_PAIR,
                dport: PORT_ANY,
            };
            if unsafe { DV_FW_RULES.get(&k) }.is_some() {
                return true;
            }
        }
    }
    false
}
