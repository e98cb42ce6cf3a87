//! `dvnet capture`: the packets a node's links see, taken from the datapath itself, each with
//! what the datapath decided (forwarded where, delivered, dropped — why, and by which rule).
//!
//! The programs hand a packet to user space only when its interface is tapped: `DV_TAPPING`
//! (one array entry, the number of tapped interfaces) is read on every packet; while it is 0
//! nothing else happens. A capture takes one of [`CAPTURE_SESSIONS`] slots (a `flock` in the
//! network's record directory: a capture killed with `-9` frees its slot with its life; the
//! next one in that slot clears what it left in the maps), sets its bit in the `DV_TAPS` entry
//! of every interface it wants, and reads its range of `DV_CAPTURE` (a perf event array: one
//! ring per CPU, made when the capture starts, gone when it ends).
//!
//! Which interfaces a link `NODE:SUBNET` takes: the node's own (what it receives, with the
//! decision of the node: a router's verdict, or delivered), and the place where what it sends
//! is first seen — its fabric port on a bridged segment, or the other end of its veth pair
//! (with that node's verdict: a packet a host sends to a router shows where the router sent
//! it). With `--all`, every node interface and fabric port: each packet once, at each place
//! it is seen.

pub mod pcapng;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aya::maps::perf::{PerfEvent, PerfEventArrayBuffer};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerfEventArray};
use dvnet_common::{
    CAPTURE_SESSIONS, CAPTURE_SNAPLEN, CaptureMeta, DropReason, Tap, maps, verdict,
};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::datapath::ebpf::{self, BpfError, Pinned};
use crate::plan::{Forwarder, LinkPlan, Plan};

use self::pcapng::{Direction, Interface};

/// Pages of each CPU's ring (a power of two): 1 MiB with 4 KiB pages.
const RING_PAGES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "network {0} was brought up by a dvnet without capture; bring it up again (`dvnet down`, `dvnet up`) to capture it"
    )]
    Unsupported(String),
    #[error("{CAPTURE_SESSIONS} captures of network {0} already run; stop one (its pids: {1})")]
    Busy(String, String),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CaptureError {
    let what = what.into();
    move |source| CaptureError::Io { what, source }
}

fn map_err(name: &str) -> impl FnOnce(aya::maps::MapError) -> CaptureError + '_ {
    move |e| CaptureError::Io {
        what: format!("the map {name}"),
        source: io::Error::other(e),
    }
}

/// What to capture.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `NODE` (every link of the node) or `NODE:SUBNET`.
    pub targets: Vec<String>,
    /// Every link of the network.
    pub all: bool,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Only packets the datapath dropped.
    pub drops_only: bool,
}

/// Where the packets go.
pub enum Sink<'a> {
    /// A pcapng stream.
    Pcapng(Box<dyn Write + 'a>),
    /// One line per packet.
    Text(Box<dyn Write + 'a>),
    /// A call per packet (`dvnet ui`).
    Each(Box<dyn FnMut(&Record<'_>) + 'a>),
}

/// A packet, for [`Sink::Each`].
pub struct Record<'r> {
    /// The captured link's id.
    pub link: u32,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub direction: Direction,
    /// One line about the packet ([`frame_line`]).
    pub summary: String,
    /// What the datapath did.
    pub verdict: &'r str,
    pub dropped: bool,
}

/// What a capture did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Packets written.
    pub captured: u64,
    /// Packets the datapath handed over that the rings had no room for.
    pub lost: u64,
    /// Why it stopped.
    pub stopped: Stop,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Stop {
    /// `--count` packets were written.
    #[default]
    Count,
    /// Interrupted (Ctrl-C, SIGTERM).
    Signal,
    /// The reader of the output went away (a pipe closed).
    ReaderGone,
    /// The network went down.
    NetworkDown,
}

/// The interfaces a capture taps, and how their packets are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// One per captured link: `NODE:SUBNET`.
    pub interfaces: Vec<Interface>,
    /// Their link ids.
    pub links: Vec<u32>,
    /// ifindex → (interface, direction relative to that interface's node).
    pub taps: BTreeMap<u32, (u32, Direction)>,
}

/// The links `request` names, in plan order.
///
/// # Errors
/// An unknown node, or a node not on the subnet named, or nothing named.
pub fn links_of(plan: &Plan, request: &Request) -> Result<Vec<usize>, CaptureError> {
    if request.all {
        return Ok((0..plan.links.len()).collect());
    }
    if request.targets.is_empty() {
        return Err(CaptureError::Usage(
            "name what to capture: NODE, NODE:SUBNET, several of them, or --all".into(),
        ));
    }
    let mut links = Vec::new();
    for target in &request.targets {
        let (node_name, subnet) = match target.rsplit_once(':') {
            Some((n, s)) if plan.node(n).is_some() => (n, Some(s)),
            _ => (target.as_str(), None),
        };
        let Some(node) = plan.node(node_name) else {
            let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(CaptureError::Usage(format!(
                "network {} has {}",
                plan.id,
                crate::topology::no_such_node(node_name, &names)
            )));
        };
        let mine: Vec<usize> = node.links.iter().map(|&l| l as usize).collect();
        match subnet {
            None => links.extend(mine),
            Some(s) => {
                let Some(&l) = mine
                    .iter()
                    .find(|&&l| plan.subnets[plan.links[l].subnet].name == s)
                else {
                    let on: Vec<&str> = mine
                        .iter()
                        .map(|&l| plan.subnets[plan.links[l].subnet].name.as_str())
                        .collect();
                    return Err(CaptureError::Usage(format!(
                        "{node_name} is not on a subnet {s:?}; it is on {}",
                        on.join(", ")
                    )));
                };
                links.push(l);
            }
        }
    }
    links.sort_unstable();
    links.dedup();
    Ok(links)
}

/// The interfaces to tap for `links`: each link's own interface (inbound), then, where no
/// captured link receives there already, the place its sends are first seen (outbound).
#[must_use]
pub fn layout(plan: &Plan, links: &[usize]) -> Layout {
    let mut interfaces = Vec::new();
    let mut ids = Vec::new();
    let mut taps = BTreeMap::new();
    for (i, &l) in links.iter().enumerate() {
        let link = &plan.links[l];
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        ids.push(link.id);
        interfaces.push(Interface {
            name: link_name(plan, link),
            description: format!(
                "{} in {}, {}",
                link.ifname,
                plan.nodes[link.node].name,
                match link.address {
                    Some(a) => format!("{a}/{}", link.prefix_len),
                    None => link.label_address().to_string(),
                }
            ),
            snaplen: CAPTURE_SNAPLEN,
        });
        taps.insert(link.ifindex, (i, Direction::Inbound));
    }
    for (i, &l) in links.iter().enumerate() {
        let link = &plan.links[l];
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(ifindex) = sent_at(plan, link) {
            taps.entry(ifindex).or_insert((i, Direction::Outbound));
        }
    }
    Layout {
        interfaces,
        links: ids,
        taps,
    }
}

/// Where what `link`'s node sends on it is first seen: its fabric port on a bridge, or the
/// other end of its veth pair.
fn sent_at(plan: &Plan, link: &LinkPlan) -> Option<u32> {
    match &link.fabric_port {
        Some(port) => Some(port.ifindex),
        None => plan.peer_of(link).map(|p| p.ifindex),
    }
}

fn link_name(plan: &Plan, link: &LinkPlan) -> String {
    format!(
        "{}:{}",
        plan.nodes[link.node].name, plan.subnets[link.subnet].name
    )
}

/// Where an interface of the network is: the link, and whether it is that link's fabric port.
struct Place {
    link: usize,
    fabric: bool,
}

/// Turns the datapath's records into words: every interface, address and rule by name.
pub struct Describer<'a> {
    plan: &'a Plan,
    places: HashMap<u32, Place>,
    /// Each address of a link (IPv4, IPv6 global and link-local) → the link.
    owners: HashMap<IpAddr, usize>,
}

impl<'a> Describer<'a> {
    #[must_use]
    pub fn new(plan: &'a Plan) -> Describer<'a> {
        let mut places = HashMap::new();
        let mut owners = HashMap::new();
        for (i, link) in plan.links.iter().enumerate() {
            places.insert(
                link.ifindex,
                Place {
                    link: i,
                    fabric: false,
                },
            );
            if let Some(port) = &link.fabric_port {
                places.insert(
                    port.ifindex,
                    Place {
                        link: i,
                        fabric: true,
                    },
                );
            }
            if let Some(a) = link.address {
                owners.insert(a.into(), i);
            }
            if plan.ipv6 {
                // IPv6 routes lead to the next router's link-local address
                owners.insert(link.link_local().into(), i);
                if let Some(a) = link.address6 {
                    owners.insert(a.into(), i);
                }
            }
        }
        Describer {
            plan,
            places,
            owners,
        }
    }

    /// What the datapath did, in words: the comment of the packet.
    #[must_use]
    pub fn verdict(&self, meta: &CaptureMeta) -> String {
        let plan = self.plan;
        let Some(place) = self.places.get(&meta.ifindex) else {
            return format!("seen on interface {}", meta.ifindex);
        };
        let link = &plan.links[place.link];
        let node = &plan.nodes[link.node];
        let subnet = &plan.subnets[link.subnet].name;
        let reason = DropReason::ALL
            .get(usize::from(meta.reason))
            .map_or("unknown", |r| r.name());
        match meta.verdict {
            verdict::SENT => format!("sent by {} onto {subnet}", node.name),
            verdict::DELIVERED => match node.forwarder {
                Forwarder::None => format!("delivered to {}", node.name),
                Forwarder::Kernel => format!(
                    "to {}'s kernel (kernel datapath: the kernel decides, unseen)",
                    node.name
                ),
                Forwarder::Program { .. } => format!("to {} itself", node.name),
            },
            verdict::FORWARDED => {
                let n = meta.nexthop;
                let hop = if meta.family == 6 {
                    IpAddr::from(Ipv6Addr::from(n))
                } else {
                    IpAddr::from(Ipv4Addr::new(n[0], n[1], n[2], n[3]))
                };
                let out = self.places.get(&meta.egress).map(|p| &plan.links[p.link]);
                let to = match self.owners.get(&hop) {
                    Some(&l) => format!("{} ({hop})", plan.nodes[plan.links[l].node].name),
                    None => hop.to_string(),
                };
                match out {
                    Some(o) => format!(
                        "forwarded by {} to {to} out of {} on {}",
                        node.name, o.ifname, plan.subnets[o.subnet].name
                    ),
                    None => format!("forwarded by {} to {to}", node.name),
                }
            }
            verdict::DROPPED => {
                let by = if meta.reason == DropReason::ImpairLoss as u8 {
                    format!("on {}'s link on {subnet}", node.name)
                } else {
                    format!("by {}", node.name)
                };
                let mut s = format!("dropped {by}: {reason}");
                if meta.reason == DropReason::FirewallRule as u8 {
                    if let Some(rule) = node
                        .firewall
                        .as_ref()
                        .and_then(|f| f.rules.iter().find(|r| r.slot == meta.rule))
                    {
                        let _ = write!(s, " {}", rule.origin);
                    }
                } else if meta.reason == DropReason::FirewallPolicy as u8 {
                    let _ = write!(s, " routers.{:?}.fw_rules.policy", node.name);
                } else if meta.reason == DropReason::TtlExceeded as u8 {
                    s.push_str(" (answered with ICMP time exceeded)");
                } else if meta.reason == DropReason::NoRoute as u8 {
                    s.push_str(" (answered with ICMP destination unreachable)");
                } else if meta.reason == DropReason::LinkDown as u8 {
                    s.push_str(" (its route leaves by a link taken down)");
                }
                s
            }
            verdict::ANSWERED => format!(
                "ICMP error sent by {} for a packet it dropped ({reason})",
                node.name
            ),
            other => format!("verdict {other}"),
        }
    }

    /// Where what leaves by interface `ifindex` (a node's) is seen next: its link's fabric
    /// port, or the other end of its veth pair.
    #[must_use]
    pub fn sent_at(&self, ifindex: u32) -> Option<u32> {
        let place = self.places.get(&ifindex).filter(|p| !p.fabric)?;
        sent_at(self.plan, &self.plan.links[place.link])
    }
}

/// One line about a frame: `10.0.0.2 > 10.0.1.2 ICMP echo request id 7 seq 1`.
#[must_use]
pub fn frame_line(frame: &[u8]) -> String {
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
    };
    let ip_at = |at: usize| -> Option<Ipv4Addr> {
        let b: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    let Some(ethertype) = u16_at(12) else {
        return format!("{} bytes", frame.len());
    };
    match ethertype {
        0x0806 => match (u16_at(20), ip_at(28), ip_at(38)) {
            (Some(1), Some(sender), Some(target)) => format!("ARP who-has {target} tell {sender}"),
            (Some(2), Some(sender), _) => format!("ARP reply {sender} is-at"),
            _ => "ARP".into(),
        },
        0x0800 => {
            let (Some(&ver_ihl), Some(&proto), Some(src), Some(dst)) =
                (frame.get(14), frame.get(23), ip_at(26), ip_at(30))
            else {
                return "IPv4 (truncated)".into();
            };
            let l4 = 14 + usize::from(ver_ihl & 0x0f) * 4;
            let ttl = frame.get(22).copied().unwrap_or(0);
            let what = match proto {
                1 => {
                    let kind = frame.get(l4).copied();
                    let code = frame.get(l4 + 1).copied();
                    match kind {
                        Some(0 | 8) => format!(
                            "ICMP echo {} id {} seq {}",
                            if kind == Some(8) { "request" } else { "reply" },
                            u16_at(l4 + 4).unwrap_or(0),
                            u16_at(l4 + 6).unwrap_or(0)
                        ),
                        Some(11) => "ICMP time exceeded in transit".into(),
                        Some(3) => {
                            format!("ICMP destination unreachable (code {})", code.unwrap_or(0))
                        }
                        Some(k) => format!("ICMP type {k}"),
                        None => "ICMP".into(),
                    }
                }
                6 => {
                    let flags = frame.get(l4 + 13).copied().unwrap_or(0);
                    let names: String = [
                        (0x02, 'S'),
                        (0x10, '.'),
                        (0x01, 'F'),
                        (0x04, 'R'),
                        (0x08, 'P'),
                    ]
                    .iter()
                    .filter(|(bit, _)| flags & bit != 0)
                    .map(|(_, c)| *c)
                    .collect();
                    format!(
                        "TCP {} > {} [{names}]",
                        u16_at(l4).unwrap_or(0),
                        u16_at(l4 + 2).unwrap_or(0)
                    )
                }
                17 => format!(
                    "UDP {} > {}",
                    u16_at(l4).unwrap_or(0),
                    u16_at(l4 + 2).unwrap_or(0)
                ),
                89 => "OSPF".into(),
                p => format!("IP protocol {p}"),
            };
            format!("{src} > {dst} {what}, ttl {ttl}")
        }
        0x86dd => "IPv6".into(),
        t => format!("ethertype {t:#06x}"),
    }
}

/// The slot this capture holds (its lock file in the network's record directory).
struct Slot {
    index: u32,
    _lock: Flock<std::fs::File>,
}

fn slot_path(id: &str, slot: u32) -> PathBuf {
    crate::state::dir(id).join(format!("capture.{slot}.lock"))
}

fn take_slot(id: &str) -> Result<Slot, CaptureError> {
    let mut holders = Vec::new();
    for index in 0..CAPTURE_SESSIONS {
        let path = slot_path(id, index);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                lock.set_len(0)
                    .and_then(|()| write!(lock, "{}", std::process::id()))
                    .map_err(io_err(format!("writing {}", path.display())))?;
                return Ok(Slot { index, _lock: lock });
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                holders.push(std::fs::read_to_string(&path).unwrap_or_default());
            }
            Err((_, e)) => {
                return Err(io_err(format!("locking {}", path.display()))(e.into()));
            }
        }
    }
    Err(CaptureError::Busy(id.to_owned(), holders.join(", ")))
}

/// The network's tap maps.
struct Taps {
    taps: BpfHashMap<MapData, u32, Tap>,
    tapping: Array<MapData, u32>,
}

impl Taps {
    fn open(pinned: &Pinned, id: &str) -> Result<Taps, CaptureError> {
        let open = |name: &str| {
            pinned.open_map(name).map_err(|e| match e {
                BpfError::Pin { .. } => CaptureError::Unsupported(id.to_owned()),
                e => e.into(),
            })
        };
        Ok(Taps {
            taps: BpfHashMap::try_from(open(maps::TAPS)?).map_err(map_err(maps::TAPS))?,
            tapping: Array::try_from(open(maps::TAPPING)?).map_err(map_err(maps::TAPPING))?,
        })
    }

    /// Sets (or clears) `slot`'s bit on `ifindexes` and everywhere else clears it when
    /// `clear_elsewhere`; then says how many interfaces are tapped.
    fn update(
        &mut self,
        slot: u32,
        ifindexes: &[u32],
        set: bool,
        cpus: u32,
        drops_only: bool,
    ) -> Result<(), CaptureError> {
        let bit = 1u32 << slot;
        let present: Vec<(u32, Tap)> = self.taps.iter().filter_map(Result::ok).collect();
        let current: HashMap<u32, Tap> = present.into_iter().collect();
        // this slot's bits left by a capture that died, and ours
        for (&ifindex, tap) in &current {
            if tap.sessions & bit != 0 && !(set && ifindexes.contains(&ifindex)) {
                let rest = Tap {
                    sessions: tap.sessions & !bit,
                    drops_only: tap.drops_only & !bit,
                    ..*tap
                };
                if rest.sessions == 0 {
                    let _ = self.taps.remove(&ifindex);
                } else {
                    self.taps
                        .insert(&ifindex, &rest, 0)
                        .map_err(map_err(maps::TAPS))?;
                }
            }
        }
        if set {
            for &ifindex in ifindexes {
                let old = current.get(&ifindex).copied().unwrap_or_default();
                let tap = Tap {
                    sessions: old.sessions | bit,
                    cpus,
                    drops_only: if drops_only {
                        old.drops_only | bit
                    } else {
                        old.drops_only & !bit
                    },
                };
                self.taps
                    .insert(&ifindex, &tap, 0)
                    .map_err(map_err(maps::TAPS))?;
            }
        }
        let tapped = self
            .taps
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, t)| t.sessions != 0)
            .count();
        self.tapping
            .set(0, &u32::try_from(tapped).unwrap_or(u32::MAX), 0)
            .map_err(map_err(maps::TAPPING))
    }
}

/// Set by SIGINT/SIGTERM, or by [`stop`].
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks the capture of this process to stop (it untaps and returns).
pub fn stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether the capture of this process was asked to stop (Ctrl-C, SIGTERM, [`stop`]).
#[must_use]
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(s, &action) };
    }
}

/// Captures what `request` names on network `id` into `sink` until `--count`, a signal, the
/// reader going away or the network going down; `ready` is called once the taps are set
/// (with the links captured).
///
/// # Errors
/// Bad targets, an old network, no free slot, or the maps and rings failing.
#[expect(
    clippy::too_many_lines,
    reason = "setup, the read loop and teardown read best in one place"
)]
pub fn capture(
    plan: &Plan,
    request: &Request,
    sink: Sink<'_>,
    ready: impl FnOnce(&[Interface]),
) -> Result<Summary, CaptureError> {
    let id = plan.id.as_str();
    let links = links_of(plan, request)?;
    let layout = layout(plan, &links);
    let describer = Describer::new(plan);
    let pinned = Pinned::open(id)?;
    let mut taps = Taps::open(&pinned, id)?;
    let perf = pinned
        .open_map(maps::CAPTURE)
        .map_err(|_| CaptureError::Unsupported(id.to_owned()))?;
    let mut perf = PerfEventArray::try_from(perf).map_err(map_err(maps::CAPTURE))?;
    let slot = take_slot(id)?;
    let cpus = ebpf::capture_cpus();
    let online = aya::util::online_cpus().map_err(|(what, e)| io_err(what)(e))?;
    let mut rings = Vec::new();
    for &cpu in &online {
        let ring = PerfEventArrayBuffer::open(cpu, RING_PAGES).map_err(|e| CaptureError::Io {
            what: format!("opening the capture ring of CPU {cpu}"),
            source: io::Error::other(e),
        })?;
        perf.set(slot.index * cpus + cpu, &ring)
            .map_err(map_err(maps::CAPTURE))?;
        rings.push(ring);
    }
    let epoll =
        Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| io_err("epoll")(e.into()))?;
    for (i, ring) in rings.iter().enumerate() {
        epoll
            .add(ring.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .map_err(|e| io_err("epoll")(e.into()))?;
    }
    // wall clock = monotonic + offset
    let offset_ns = {
        let real = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
            .map_err(|e| io_err("the clock")(e.into()))?;
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_err(|e| io_err("the clock")(e.into()))?;
        let ns = |t: nix::sys::time::TimeSpec| {
            i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
        };
        ns(real) - ns(mono)
    };

    let mut out = match sink {
        Sink::Pcapng(w) => Out::Pcapng(
            pcapng::Writer::new(
                w,
                &format!("dvnet {}", env!("CARGO_PKG_VERSION")),
                &layout.interfaces,
            )
            .map_err(io_err("writing the capture"))?,
        ),
        Sink::Text(w) => Out::Text(w),
        Sink::Each(f) => Out::Each(f),
    };
    // the header now: a reader sees the interfaces before the first packet
    if !reader_there(out.flush())? {
        return Ok(Summary {
            stopped: Stop::ReaderGone,
            ..Summary::default()
        });
    }

    STOP.store(false, Ordering::SeqCst);
    catch_signals();
    let ifindexes: Vec<u32> = layout.taps.keys().copied().collect();
    taps.update(slot.index, &ifindexes, true, cpus, request.drops_only)?;
    ready(&layout.interfaces);

    let mut first_ts = None::<u64>;
    let mut summary = Summary::default();
    let mut events = [EpollEvent::empty(); 16];
    let mut last_check = Instant::now();
    let mut sample = Vec::with_capacity(2048);
    // ICMP errors on their way: where they will be seen next → (their IP packet, the words)
    let mut answers: HashMap<u32, (Option<Vec<u8>>, String)> = HashMap::new();
    let outcome: Result<(), CaptureError> = (|| {
        loop {
            if STOP.load(Ordering::SeqCst) {
                summary.stopped = Stop::Signal;
                return Ok(());
            }
            if last_check.elapsed() > Duration::from_secs(1) {
                last_check = Instant::now();
                if !crate::state::dir(id).exists() {
                    summary.stopped = Stop::NetworkDown;
                    return Ok(());
                }
            }
            let n = match epoll.wait(&mut events, EpollTimeout::from(200u16)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io_err("waiting for packets")(e.into())),
            };
            for ev in &events[..n] {
                let Some(ring) = usize::try_from(ev.data())
                    .ok()
                    .and_then(|i| rings.get_mut(i))
                else {
                    continue;
                };
                let mut records: Vec<(CaptureMeta, Vec<u8>)> = Vec::new();
                ring.for_each(|event| match event {
                    PerfEvent::Sample { head, tail } => {
                        sample.clear();
                        sample.extend_from_slice(head);
                        sample.extend_from_slice(tail);
                        if let Some(r) = parse(&sample) {
                            records.push(r);
                        }
                    }
                    PerfEvent::Lost { count } => summary.lost += count,
                });
                for (meta, bytes) in records {
                    if request.drops_only && meta.verdict != verdict::DROPPED {
                        continue;
                    }
                    let Some(&(interface, direction)) = layout.taps.get(&meta.ifindex) else {
                        continue;
                    };
                    // An ICMP error a router built leaves by the interface the dropped
                    // packet came in on, and is seen next where that link's sends are: when
                    // that place is tapped, the packet is written there, with both words.
                    let mut comment = describer.verdict(&meta);
                    let direction = if meta.verdict == verdict::ANSWERED {
                        if let Some(next) = describer.sent_at(meta.ifindex)
                            && layout.taps.contains_key(&next)
                        {
                            answers.insert(next, (bytes.get(14..).map(<[u8]>::to_vec), comment));
                            continue;
                        }
                        match direction {
                            Direction::Inbound => Direction::Outbound,
                            Direction::Outbound => Direction::Inbound,
                        }
                    } else {
                        if let Some((ip, said)) = answers.remove(&meta.ifindex)
                            && ip.as_deref() == bytes.get(14..)
                        {
                            comment = format!("{said}; {comment}");
                        }
                        direction
                    };
                    let wall = i128::from(meta.ts_ns) + offset_ns;
                    let written = match &mut out {
                        Out::Pcapng(p) => p.packet(&pcapng::Packet {
                            interface,
                            timestamp_ns: u64::try_from(wall).unwrap_or(0),
                            original_len: meta.len,
                            data: &bytes,
                            direction,
                            comment: &comment,
                        }),
                        Out::Text(t) => {
                            let first = *first_ts.get_or_insert(meta.ts_ns);
                            #[expect(clippy::cast_precision_loss, reason = "seconds, printed")]
                            let secs = meta.ts_ns.saturating_sub(first) as f64 / 1e9;
                            writeln!(
                                t,
                                "{secs:10.6} {} {} {}, {} bytes: {comment}",
                                layout.interfaces[interface as usize].name,
                                if direction == Direction::Inbound {
                                    "in "
                                } else {
                                    "out"
                                },
                                frame_line(&bytes),
                                meta.len
                            )
                        }
                        Out::Each(f) => {
                            f(&Record {
                                link: layout.links[interface as usize],
                                timestamp_ns: u64::try_from(wall).unwrap_or(0),
                                direction,
                                summary: frame_line(&bytes),
                                verdict: &comment,
                                dropped: meta.verdict == verdict::DROPPED,
                            });
                            Ok(())
                        }
                    };
                    if !reader_there(written)? {
                        summary.stopped = Stop::ReaderGone;
                        return Ok(());
                    }
                    summary.captured += 1;
                    if request.count.is_some_and(|c| summary.captured >= c) {
                        summary.stopped = Stop::Count;
                        return Ok(());
                    }
                }
            }
            if !reader_there(out.flush())? {
                summary.stopped = Stop::ReaderGone;
                return Ok(());
            }
        }
    })();
    // untap first, whatever happened (a network gone has no maps to untap)
    let untapped = if summary.stopped == Stop::NetworkDown {
        Ok(())
    } else {
        taps.update(slot.index, &[], false, cpus, false)
    };
    for (i, _) in rings.iter().enumerate() {
        let _ = perf.unset(slot.index * cpus + online[i]);
    }
    drop(slot);
    outcome?;
    untapped?;
    // what is left goes out (a reader gone by now is no error)
    reader_there(out.finish())?;
    Ok(summary)
}

/// Where a capture writes, made from its [`Sink`].
enum Out<'a> {
    Pcapng(pcapng::Writer<Box<dyn Write + 'a>>),
    Text(Box<dyn Write + 'a>),
    Each(Box<dyn FnMut(&Record<'_>) + 'a>),
}

impl Out<'_> {
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Pcapng(p) => p.flush(),
            Out::Text(t) => t.flush(),
            Out::Each(_) => Ok(()),
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Out::Pcapng(p) => p.into_inner().map(drop),
            Out::Text(mut t) => t.flush(),
            Out::Each(_) => Ok(()),
        }
    }
}

/// Whether the reader is still there: `Ok(false)` when it went away (a closed pipe ends a
/// capture as Ctrl-C does), an error for any other failure to write.
fn reader_there(written: io::Result<()>) -> Result<bool, CaptureError> {
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(io_err("writing the capture")(e)),
    }
}

/// A sample: the record, then the packet's first `min(len, snaplen)` bytes (then padding).
fn parse(sample: &[u8]) -> Option<(CaptureMeta, Vec<u8>)> {
    const META: usize = std::mem::size_of::<CaptureMeta>();
    let head = sample.get(..META)?;
    // SAFETY: CaptureMeta is plain integers, valid for every bit pattern; read unaligned.
    let meta: CaptureMeta = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
    let caplen = meta.len.min(CAPTURE_SNAPLEN) as usize;
    let bytes = sample.get(META..META + caplen)?.to_vec();
    Some((meta, bytes))
}

#[cfg(test)]
mod tests;
