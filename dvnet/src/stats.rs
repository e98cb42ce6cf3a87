//! `dvnet stats`: per-link counters, rule hits and connection-map use, read straight from the
//! network's pinned BPF maps (any process can, while the network is up).
//!
//! Each link's counters come from where the kernel hands packets over: what a node receives
//! is counted by `node_ingress` on its own interface; what it sends is counted by the fabric
//! port on a bridged segment, or — on a point-to-point link — is what the other end receives.

use std::collections::BTreeMap;
use std::path::Path;

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use dvnet_common::{DropReason, FlowKey, LinkStats, PacketClass, dir, global, maps};
use serde::Serialize;

use crate::datapath::ebpf::pin_dir;
use crate::datapath::entries;
use crate::plan::{Action, Plan};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(
        "reading {path}: {source}\n\
         hint: the network's maps are pinned when `up` completes; is it up (`dvnet ls`), and are you root?"
    )]
    Map {
        path: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error(transparent)]
    Entries(#[from] entries::EntriesError),
    #[error(transparent)]
    Untrusted(#[from] crate::state::StateError),
}

/// Packets and bytes, in total and by class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    /// Only classes with traffic.
    pub by_class: BTreeMap<&'static str, u64>,
}

impl Traffic {
    fn from_counters(c: &[dvnet_common::Counter; PacketClass::COUNT]) -> Traffic {
        let mut t = Traffic::default();
        for (class, counter) in PacketClass::ALL.iter().zip(c) {
            t.packets += counter.packets;
            t.bytes += counter.bytes;
            if counter.packets > 0 {
                t.by_class.insert(class.name(), counter.packets);
            }
        }
        t
    }
}

/// One link: a node's interface.
#[derive(Clone, Debug, Serialize)]
pub struct LinkRow {
    pub link: u32,
    pub node: String,
    pub interface: String,
    pub subnet: String,
    /// What the node received.
    pub rx: Traffic,
    /// What the node sent.
    pub tx: Traffic,
    /// Packets that arrived on this link and were dropped (or answered with an ICMP error
    /// instead of being forwarded), by reason.
    pub drops: BTreeMap<&'static str, u64>,
    /// Packets changed on purpose on this link (`corrupted`, `duplicated`, `delayed`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub impaired: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleRow {
    pub router: String,
    pub rule: String,
    pub action: Action,
    /// Packets the rule decided: every dropped packet, the first packet of each accepted
    /// flow (later ones pass as established).
    pub hits: u64,
}

/// The connection map: how full, and how many flows it had to forget.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConntrackRow {
    pub entries: u64,
    pub capacity: u32,
    pub inserted: u64,
    /// Flows inserted that are no longer there: evicted by the LRU (a live flow evicted
    /// under a DROP policy loses its replies).
    pub evicted: u64,
    /// Packets accepted by the rules alone, their flow not tracked: no drop rule could meet
    /// its replies.
    pub untracked: u64,
}

/// Everything `dvnet stats` shows, at one instant.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub links: Vec<LinkRow>,
    pub rules: Vec<RuleRow>,
    pub conntrack: ConntrackRow,
}

fn open(dir: &Path, name: &str) -> Result<Map, StatsError> {
    let path = dir.join(name);
    let err = |e| StatsError::Map {
        path: path.display().to_string(),
        source: Box::new(e),
    };
    Map::from_map_data(MapData::from_pin(&path).map_err(err)?).map_err(err)
}

fn per_cpu<T: aya::Pod>(dir: &Path, name: &str) -> Result<PerCpuArray<MapData, T>, StatsError> {
    let path = dir.join(name).display().to_string();
    PerCpuArray::try_from(open(dir, name)?).map_err(|e| StatsError::Map {
        path,
        source: Box::new(e),
    })
}

fn sum<T: aya::Pod>(
    array: &PerCpuArray<MapData, T>,
    index: u32,
    dir: &Path,
    name: &str,
    add: impl Fn(&mut T, &T),
    zero: T,
) -> Result<T, StatsError> {
    let values = array.get(&index, 0).map_err(|e| StatsError::Map {
        path: dir.join(name).display().to_string(),
        source: Box::new(e),
    })?;
    let mut total = zero;
    for v in values.iter() {
        add(&mut total, v);
    }
    Ok(total)
}

/// Reads the counters of the network planned as `plan`.
///
/// # Errors
/// The maps are not pinned (the network is not up) or cannot be read.
pub fn read(plan: &Plan) -> Result<Snapshot, StatsError> {
    // pins are only read from dvnet's own directory, never one planted in bpffs
    crate::datapath::ebpf::check_pins(&plan.id)?;
    let dir = pin_dir(&plan.id);
    let stats = per_cpu::<LinkStats>(&dir, maps::LINK_STATS)?;
    // by link id (a link's slot in the counters)
    let mut per_link = std::collections::HashMap::with_capacity(plan.links.len());
    for link in &plan.links {
        per_link.insert(
            link.id,
            sum(
                &stats,
                link.id,
                &dir,
                maps::LINK_STATS,
                LinkStats::add,
                LinkStats::default(),
            )?,
        );
    }
    // what the delay line dropped, its queue full
    let mut queue_full: BTreeMap<u32, u64> = BTreeMap::new();
    for l in crate::delay::status(&plan.id)
        .map(|s| s.lines)
        .unwrap_or_default()
    {
        *queue_full.entry(l.link).or_default() += l.queue_full;
    }
    let links = plan
        .links
        .iter()
        .map(|link| {
            let own = &per_link[&link.id];
            let sent = if link.fabric_port.is_some() {
                own.traffic[dir::FROM_NODE]
            } else if let Some(peer) = plan.peer_of(link) {
                per_link[&peer.id].traffic[dir::TO_NODE]
            } else {
                LinkStats::default().traffic[dir::FROM_NODE]
            };
            LinkRow {
                link: link.id,
                node: plan.nodes[link.node].name.clone(),
                interface: link.ifname.clone(),
                subnet: plan.subnets[link.subnet].name.clone(),
                rx: Traffic::from_counters(&own.traffic[dir::TO_NODE]),
                tx: Traffic::from_counters(&sent),
                drops: DropReason::ALL
                    .iter()
                    .zip(own.drops)
                    .map(|(r, n)| match r {
                        DropReason::QueueFull => {
                            (r, n + queue_full.get(&link.id).copied().unwrap_or(0))
                        }
                        _ => (r, n),
                    })
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| (r.name(), n))
                    .collect(),
                impaired: dvnet_common::impaired::NAMES
                    .iter()
                    .zip(own.impaired)
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| (*r, n))
                    .collect(),
            }
        })
        .collect();

    let e = entries::entries(plan)?;
    let mut rules = Vec::with_capacity(e.rule_slots.len());
    if !e.rule_slots.is_empty() {
        let hits = per_cpu::<u64>(&dir, maps::RULE_HITS)?;
        for rule in &e.rule_slots {
            let node = &plan.nodes[rule.router];
            let action = node
                .firewall
                .as_ref()
                .and_then(|fw| fw.rules.iter().find(|r| r.origin == rule.origin))
                .map_or(Action::Accept, |r| r.action);
            let slot = rule.slot;
            rules.push(RuleRow {
                router: node.name.clone(),
                rule: rule.origin.clone(),
                action,
                hits: sum(&hits, slot, &dir, maps::RULE_HITS, |a, b| *a += b, 0)?,
            });
        }
    }

    let globals = per_cpu::<u64>(&dir, maps::GLOBAL)?;
    let inserted = sum(
        &globals,
        global::CT_INSERTS,
        &dir,
        maps::GLOBAL,
        |a, b| *a += b,
        0,
    )?;
    // a network made before the counter existed has no slot for it
    let untracked = sum(
        &globals,
        global::CT_UNTRACKED,
        &dir,
        maps::GLOBAL,
        |a, b| *a += b,
        0,
    )
    .unwrap_or(0);
    let conntrack = if e.firewalled {
        let path = dir.join(maps::CONNTRACK).display().to_string();
        let map: HashMap<MapData, FlowKey, u32> = HashMap::try_from(open(&dir, maps::CONNTRACK)?)
            .map_err(|e| StatsError::Map {
            path,
            source: Box::new(e),
        })?;
        let entries = map.keys().flatten().count() as u64;
        ConntrackRow {
            entries,
            capacity: crate::datapath::ebpf::CONNTRACK_ENTRIES,
            inserted,
            evicted: inserted.saturating_sub(entries),
            untracked,
        }
    } else {
        ConntrackRow::default()
    };
    Ok(Snapshot {
        links,
        rules,
        conntrack,
    })
}
