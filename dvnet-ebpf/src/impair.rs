//! Impairments, at the ingress of the interface where a packet enters (or is delivered
//! from) a segment: loss, corruption and duplication decided here, delay and rate by the
//! delay line the packet is sent into.
//!
//! The callers pass untouched what the datapath made or let through once already (a
//! duplicate, or a packet back from the delay line: see [`take_mark`]). With a seed, the
//! n-th packet's draws depend only on the seed and n, so a run can be repeated.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_F_INGRESS},
    helpers::generated::{bpf_clone_redirect, bpf_get_prandom_u32, bpf_redirect},
    programs::TcContext,
};
use dvnet_common::{
    DropReason, ETH_HLEN, ETH_P_IP, IMPAIR_DELAY, IMPAIR_SEEDED, MARK_DELAYED, MARK_DUPLICATE,
    impaired,
};

use crate::maps::{self, DV_IMPAIR};

/// What happens to the packet.
pub enum Outcome {
    /// On as usual.
    Pass,
    /// Lost (counted).
    Drop,
    /// Into the delay line: the program returns this action.
    Redirect(i32),
}

/// splitmix64: a good 64-bit mix of a counter.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline(always)]
fn skb(ctx: &TcContext) -> *mut __sk_buff {
    ctx.as_ptr().cast()
}

/// The datapath's own mark on the packet (`MARK_DUPLICATE`, `MARK_DELAYED`), cleared; 0 for
/// any other packet.
#[inline(always)]
pub fn take_mark(ctx: &TcContext) -> u32 {
    let skb = skb(ctx);
    // SAFETY: the context is the kernel's `__sk_buff`, valid for the whole call; `mark` is
    // readable and writable at TC.
    unsafe {
        let mark = (*skb).mark;
        if mark == MARK_DUPLICATE || mark == MARK_DELAYED {
            (*skb).mark = 0;
            return mark;
        }
    }
    0
}

/// Impairs the packet arriving on `ifindex` (link `link`), per its `DV_IMPAIR` entry.
#[inline(always)]
pub fn apply(ctx: &TcContext, ifindex: u32, link: u32) -> Outcome {
    let skb = skb(ctx);
    let Some(entry) = DV_IMPAIR.get_ptr_mut(&ifindex) else {
        return Outcome::Pass;
    };
    // SAFETY: a map value; concurrent packets may race on `seq`, which only costs
    // repeatability of runs that send on several CPUs at once.
    let e = unsafe { &mut *entry };
    let (a, b) = if e.flags & IMPAIR_SEEDED != 0 {
        let n = e.seq;
        e.seq = n + 1;
        let x = mix(e.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        (x, mix(x))
    } else {
        // SAFETY: plain helper calls.
        let (p, q, r, s) = unsafe {
            (
                bpf_get_prandom_u32(),
                bpf_get_prandom_u32(),
                bpf_get_prandom_u32(),
                bpf_get_prandom_u32(),
            )
        };
        (
            u64::from(p) | (u64::from(q) << 32),
            u64::from(r) | (u64::from(s) << 32),
        )
    };
    let (lose, spoil) = (a as u32, (a >> 32) as u32);
    let (twice, where_) = (b as u32, (b >> 32) as u32);
    if lose < e.loss {
        maps::count_drop(link, DropReason::ImpairLoss);
        return Outcome::Drop;
    }
    if spoil < e.corrupt && corrupt(ctx, where_) {
        maps::count_impaired(link, impaired::CORRUPTED);
    }
    let delay = e.flags & IMPAIR_DELAY != 0;
    let delay_ifindex = e.delay_ifindex;
    if twice < e.duplicate {
        // the copy goes where the packet goes: into the delay line, or back to this ingress
        // marked (counted there, not impaired again)
        // SAFETY: as above; the helper clones the packet as it is now.
        let rc = unsafe {
            if delay {
                bpf_clone_redirect(skb.cast(), delay_ifindex, 0)
            } else {
                (*skb).mark = MARK_DUPLICATE;
                let rc = bpf_clone_redirect(skb.cast(), ifindex, u64::from(BPF_F_INGRESS));
                (*skb).mark = 0;
                rc
            }
        };
        if rc == 0 {
            maps::count_impaired(link, impaired::DUPLICATED);
        }
    }
    if delay {
        maps::count_impaired(link, impaired::DELAYED);
        // SAFETY: plain helper call.
        return Outcome::Redirect(unsafe { bpf_redirect(delay_ifindex, 0) } as i32);
    }
    Outcome::Pass
}

/// Flips one bit, chosen by `draw`, past the IPv4 header (anywhere past the Ethernet header
/// for other frames), as a bad cable would: checksums catch it where they are checked.
#[inline(always)]
fn corrupt(ctx: &TcContext, draw: u32) -> bool {
    let mut start = ETH_HLEN as u32;
    if let Ok(ethertype) = ctx.load::<u16>(12)
        && u16::from_be(ethertype) == ETH_P_IP
        && let Ok(ver_ihl) = ctx.load::<u8>(ETH_HLEN)
    {
        start += u32::from(ver_ihl & 0x0f) * 4;
    }
    let len = ctx.len();
    if len <= start {
        return false;
    }
    let span = len - start;
    let at = (start + (draw >> 3) % span) as usize;
    let Ok(byte) = ctx.load::<u8>(at) else {
        return false;
    };
    let flipped = byte ^ (1u8 << (draw & 7));
    ctx.store(at, &flipped, 0).is_ok()
}
