//! The eBPF object built from `dvnet-ebpf` and embedded in the binary, and how a network uses
//! it: loaded once (maps sized for the network, programs verified), maps filled from the
//! plan and pinned under `/sys/fs/bpf/dvnet/<id>/` so that `dvnet stats` can read them from
//! any later process. The programs themselves are held by the TC filters attached to the
//! interfaces, and go away with them.

use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, Map, MapData};
use aya::{Ebpf, EbpfLoader};
use dvnet_common::{
    IfaceInfo, ImpairEntry, NexthopKey, NexthopKey6, Route, Route6, RouterAddr, RouterAddr6,
    RuleKey, RuleVerdict, maps, programs,
};

use super::entries::MapEntries;

/// The eBPF datapath: routers forward and filter with the programs, driven by the maps
/// (their firewalls are map entries, written with the rest).
pub struct Programs;

impl super::Forwarding for Programs {
    fn apply_firewalls<'a>(
        &'a self,
        _routers: &'a [&'a crate::plan::NodePlan],
    ) -> futures::future::BoxFuture<'a, Result<bool, super::kernel::KernelFirewallError>> {
        use futures::FutureExt as _;
        async { Ok(false) }.boxed()
    }
}

/// The eBPF object built by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dvnet"));

/// Where bpffs lives, and dvnet's part of it.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const PIN_ROOT: &str = "/sys/fs/bpf/dvnet";
/// Flows the connection map holds before it evicts the least recently used.
pub const CONNTRACK_ENTRIES: u32 = 65_536;

/// How big a network's maps must be.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    pub links: u32,
    pub ifaces: u32,
    /// Any interface may be impaired by an edit: as many as interfaces.
    pub impairs: u32,
    pub routes: u32,
    pub nexthops: u32,
    pub classes: u32,
    pub rules: u32,
    pub rule_hits: u32,
    pub conntrack: u32,
    pub routes6: u32,
    pub nexthops6: u32,
    pub classes6: u32,
    pub addrs6: u32,
    /// Preallocated (LRU): a network without IPv6 takes one entry.
    pub conntrack6: u32,
}

/// Room for edits: a map holding `n` entries at `up` is made for this many. Arrays
/// (counters) cost their size in memory; the hash maps and tries allocate as they fill.
#[must_use]
pub fn with_room(n: usize, least: usize) -> u32 {
    u32::try_from((n * 2).max(n + least).max(1)).unwrap_or(u32::MAX)
}

impl MapSizes {
    /// Sizes that fit `entries` for a network whose links use `link_slots` counter slots,
    /// with room for edits (see [`with_room`]).
    #[must_use]
    pub fn for_entries(entries: &MapEntries, link_slots: usize) -> MapSizes {
        let rule_slots = entries
            .rule_slots
            .iter()
            .map(|r| r.slot as usize + 1)
            .max()
            .unwrap_or(0);
        MapSizes {
            links: with_room(link_slots, 256),
            ifaces: with_room(entries.ifaces.len(), 1024),
            impairs: with_room(entries.ifaces.len(), 1024),
            routes: with_room(entries.routes.len(), 4096),
            nexthops: with_room(entries.nexthops.len(), 4096),
            classes: with_room(entries.classes.len(), 4096),
            rules: with_room(entries.rules.len(), 4096),
            rule_hits: with_room(rule_slots, 256),
            // LRU maps are preallocated; a firewall added by an edit needs it whole
            conntrack: CONNTRACK_ENTRIES,
            routes6: with_room(entries.routes6.len(), 256),
            nexthops6: with_room(entries.nexthops6.len(), 256),
            classes6: with_room(entries.classes6.len(), 256),
            addrs6: with_room(entries.addrs6.len(), 256),
            // (a network's IPv6 is never added by an edit)
            conntrack6: if entries.addrs6.is_empty() {
                1
            } else {
                CONNTRACK_ENTRIES
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "loading dvnet's eBPF programs failed: {source}\n\
         hint: dvnet needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel with BPF, BTF and TC \
         classifiers; `--datapath kernel` forwards with the kernel instead (counters still need eBPF)"
    )]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("eBPF program {name} is missing from the object (was dvnet built with its programs?)")]
    MissingProgram { name: String },
    #[error(
        "the kernel refused eBPF program {name}: {source}\n\
         hint: this is a dvnet bug or a kernel too old for it (6.6 or newer is needed); \
         `--datapath kernel` avoids the forwarding program"
    )]
    Program {
        name: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error(transparent)]
    Untrusted(#[from] crate::state::StateError),
    #[error("{op} {path}: {source}")]
    Pin {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn map_err(name: &str) -> impl FnOnce(aya::maps::MapError) -> BpfError + '_ {
    move |e| BpfError::Map {
        name: name.to_owned(),
        source: Box::new(e),
    }
}

/// Parses the object and creates its maps, sized by `sizes`; programs are not yet loaded
/// into the kernel (see [`load_program`]).
///
/// # Errors
/// When the kernel refuses a map (no root, no BPF).
pub fn open(sizes: MapSizes) -> Result<Ebpf, BpfError> {
    EbpfLoader::new()
        .map_max_entries(maps::LINK_STATS, sizes.links)
        .map_max_entries(maps::IFACES, sizes.ifaces)
        .map_max_entries(maps::IMPAIR, sizes.impairs)
        .map_max_entries(maps::TAPS, sizes.ifaces)
        .map_max_entries(maps::CAPTURE, capture_entries())
        .map_max_entries(maps::ROUTES, sizes.routes)
        .map_max_entries(maps::NEXTHOPS, sizes.nexthops)
        .map_max_entries(maps::FW_CLASSES, sizes.classes)
        .map_max_entries(maps::FW_RULES, sizes.rules)
        .map_max_entries(maps::RULE_HITS, sizes.rule_hits)
        .map_max_entries(maps::CONNTRACK, sizes.conntrack)
        .map_max_entries(maps::ROUTES6, sizes.routes6)
        .map_max_entries(maps::NEXTHOPS6, sizes.nexthops6)
        .map_max_entries(maps::FW_CLASSES6, sizes.classes6)
        .map_max_entries(maps::ADDRS6, sizes.addrs6)
        .map_max_entries(maps::CONNTRACK6, sizes.conntrack6)
        .load(OBJECT)
        .map_err(|e| BpfError::Load {
            source: Box::new(e),
        })
}

/// The CPUs a capture reads from (the kernel's possible CPUs: `bpf_get_smp_processor_id`
/// is below their count).
#[must_use]
pub fn capture_cpus() -> u32 {
    aya::util::nr_cpus().map_or(1, std::num::NonZeroU32::get)
}

/// `DV_CAPTURE`'s entries: one per CPU for each capture that may run at once.
fn capture_entries() -> u32 {
    capture_cpus() * dvnet_common::CAPTURE_SESSIONS
}

/// Verifies and loads the classifier `name` into the kernel.
///
/// # Errors
/// When the program is missing or the verifier rejects it (the error carries its log).
pub fn load_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::SchedClassifier, BpfError> {
    load(
        name,
        ebpf.program_mut(name)
            .ok_or_else(|| BpfError::MissingProgram {
                name: name.to_owned(),
            })?,
    )
}

/// Verifies and loads `program`, the classifier `name`.
fn load<'a>(
    name: &str,
    program: &'a mut aya::programs::Program,
) -> Result<&'a mut aya::programs::SchedClassifier, BpfError> {
    let program_err = |e| BpfError::Program {
        name: name.to_owned(),
        source: Box::new(e),
    };
    let program: &mut aya::programs::SchedClassifier = program.try_into().map_err(program_err)?;
    program.load().map_err(program_err)?;
    Ok(program)
}

/// A network's eBPF object: programs loaded, maps filled.
pub struct Loaded {
    ebpf: Ebpf,
    /// Whether `node_ingress6` was loaded (a network with IPv6).
    ipv6: bool,
}

impl Loaded {
    /// Creates the maps, verifies the programs and fills the maps with `entries`. Without
    /// `ipv6`, `node_ingress6` is left out (~40 ms of the verifier's time): `node_ingress`
    /// passes an IPv6 packet to the kernel, whose IPv6 is off in such a network, and an edit
    /// cannot give a running network IPv6.
    ///
    /// # Errors
    /// When the kernel refuses a map, a program or an entry.
    pub fn new(entries: &MapEntries, links: usize, ipv6: bool) -> Result<Loaded, BpfError> {
        let mut ebpf = open(MapSizes::for_entries(entries, links))?;
        // The verifier takes tens of milliseconds a program and the maps of a 1,000-node
        // network a few more: each program is verified on a thread of its own while the maps
        // are filled on another, through their own descriptors (~115 ms → ~60 ms on 2 CPUs).
        let mut handles = FILLED
            .iter()
            .map(|name| map_copy(&ebpf, name))
            .collect::<Result<Vec<_>, BpfError>>()?;
        std::thread::scope(|s| {
            let filling = s.spawn(|| fill(&mut handles, entries));
            let verified: Vec<_> = ebpf
                .programs_mut()
                .filter(|(name, _)| loaded_programs(ipv6).any(|p| p == *name))
                .map(|(name, program)| s.spawn(move || load(name, program).map(|_| ())))
                .collect();
            let mut first_err = None;
            for v in verified {
                if let Err(e) = v.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
                    first_err.get_or_insert(e);
                }
            }
            let filled = filling
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            first_err.map_or(filled, Err)
        })?;
        if ipv6 {
            jump_table(&mut ebpf)?;
        }
        Ok(Loaded { ebpf, ipv6 })
    }

    /// The object, for tests that run its programs directly.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The descriptor of a loaded program, to attach it.
    ///
    /// # Panics
    /// When `name` is not one of the programs [`Loaded::new`] loads.
    #[must_use]
    pub fn program_fd(&self, name: &str) -> BorrowedFd<'_> {
        let program: &aya::programs::SchedClassifier = self
            .ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .expect("a loaded classifier");
        program
            .fd()
            .expect("a loaded program has a descriptor")
            .as_fd()
    }

    /// Pins every map, and the two programs, under `dir` (created; bpffs mounted if needed):
    /// stats read the maps, edits write them and attach the programs to new interfaces.
    ///
    /// # Errors
    /// When bpffs cannot be mounted or a pin cannot be made.
    pub fn pin(&mut self, dir: &Path) -> Result<(), BpfError> {
        ensure_bpffs()?;
        secure_pin_root()?;
        crate::state::secure_dir(dir, 0o700)?;
        for name in loaded_programs(self.ipv6) {
            let path = dir.join(name);
            let program: &mut aya::programs::SchedClassifier = self
                .ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .expect("a loaded classifier");
            program.pin(&path).map_err(|e| BpfError::Pin {
                op: "pinning",
                path: path.display().to_string(),
                source: std::io::Error::other(e),
            })?;
        }
        for name in maps::ALL {
            let map = self
                .ebpf
                .map(name)
                .ok_or_else(|| BpfError::MissingProgram {
                    name: name.to_owned(),
                })?;
            let path = dir.join(name);
            map.pin(&path).map_err(|e| BpfError::Pin {
                op: "pinning",
                path: path.display().to_string(),
                source: std::io::Error::other(e),
            })?;
        }
        Ok(())
    }
}

/// The programs of a network, loaded and pinned.
pub const PROGRAMS: [&str; 4] = [
    programs::NODE_INGRESS,
    programs::FABRIC_INGRESS,
    programs::DELAY_RETURN,
    programs::NODE_INGRESS6,
];

/// The programs [`Loaded::new`] loads: all of [`PROGRAMS`], but `node_ingress6` only in a
/// network with IPv6.
fn loaded_programs(ipv6: bool) -> impl Iterator<Item = &'static str> {
    PROGRAMS
        .into_iter()
        .filter(move |&name| ipv6 || name != programs::NODE_INGRESS6)
}

/// Puts `node_ingress6` where `node_ingress` tail-calls it.
fn jump_table(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    let fd = {
        let program: &aya::programs::SchedClassifier = ebpf
            .program(programs::NODE_INGRESS6)
            .and_then(|p| p.try_into().ok())
            .expect("a loaded classifier");
        program
            .fd()
            .expect("a loaded program has a descriptor")
            .try_clone()
            .map_err(|e| BpfError::Program {
                name: programs::NODE_INGRESS6.to_owned(),
                source: Box::new(aya::programs::ProgramError::IOError(e)),
            })?
    };
    let mut jump: aya::maps::ProgramArray<&mut MapData> =
        aya::maps::ProgramArray::try_from(ebpf.map_mut(maps::JUMP).expect("in the object"))
            .map_err(map_err(maps::JUMP))?;
    jump.set(maps::JUMP_IPV6, &fd, 0)
        .map_err(map_err(maps::JUMP))
}

/// The maps [`fill`] writes, in its order.
const FILLED: [&str; 10] = [
    maps::IMPAIR,
    maps::IFACES,
    maps::ROUTES,
    maps::NEXTHOPS,
    maps::FW_CLASSES,
    maps::FW_RULES,
    maps::NEXTHOPS6,
    maps::ROUTES6,
    maps::FW_CLASSES6,
    maps::ADDRS6,
];

/// A second handle on the object's map `name` (a hash map or an LPM trie), through a
/// descriptor of its own: writable while the object's programs are borrowed.
fn map_copy(ebpf: &Ebpf, name: &str) -> Result<Map, BpfError> {
    let io = |e: std::io::Error| BpfError::Map {
        name: name.to_owned(),
        source: Box::new(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error: e,
        })),
    };
    let map = ebpf.map(name).expect("in the object");
    let (Map::HashMap(data) | Map::LpmTrie(data)) = map else {
        unreachable!("{name} is a hash map or an LPM trie")
    };
    let copy = MapData::from_fd(data.fd().as_fd().try_clone_to_owned().map_err(io)?)
        .map_err(map_err(name))?;
    Ok(match map {
        Map::HashMap(_) => Map::HashMap(copy),
        _ => Map::LpmTrie(copy),
    })
}

/// Writes the entries into `maps` (handles on [`FILLED`], in its order).
fn fill(maps: &mut [Map], e: &MapEntries) -> Result<(), BpfError> {
    let [
        impair,
        ifaces,
        routes,
        nexthops,
        classes,
        rules,
        nexthops6,
        routes6,
        classes6,
        addrs6,
    ] = maps
    else {
        unreachable!("the maps of FILLED")
    };
    put_hash(impair, maps::IMPAIR, &e.impairs)?;
    put_hash(ifaces, maps::IFACES, &e.ifaces)?;
    put_lpm(routes, maps::ROUTES, &e.routes, lpm_key)?;
    put_hash(nexthops, maps::NEXTHOPS, &e.nexthops)?;
    put_lpm(classes, maps::FW_CLASSES, &e.classes, lpm_key)?;
    put_hash(rules, maps::FW_RULES, &e.rules)?;
    put_hash(nexthops6, maps::NEXTHOPS6, &e.nexthops6)?;
    put_lpm(routes6, maps::ROUTES6, &e.routes6, lpm_key6)?;
    put_lpm(classes6, maps::FW_CLASSES6, &e.classes6, lpm_key6)?;
    put_hash(addrs6, maps::ADDRS6, &e.addrs6)
}

/// The LPM key of (router, IPv6 prefix).
fn lpm_key6((router, prefix): &(u32, ipnet::Ipv6Net)) -> Key<RouterAddr6> {
    Key::new(
        32 + u32::from(prefix.prefix_len()),
        RouterAddr6 {
            router: router.to_be(),
            addr: prefix.network().octets(),
        },
    )
}

/// Writes `entries` into `map`, the hash map `name`.
fn put_hash<K: aya::Pod, V: aya::Pod>(
    map: &mut Map,
    name: &str,
    entries: &[(K, V)],
) -> Result<(), BpfError> {
    let mut map: HashMap<&mut MapData, K, V> = HashMap::try_from(map).map_err(map_err(name))?;
    for (k, v) in entries {
        map.insert(k, v, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Writes `entries`, keyed by (router, prefix) in either family (`key` makes the LPM key),
/// into `map`, the LPM trie `name`.
fn put_lpm<P, K: aya::Pod, V: aya::Pod>(
    map: &mut Map,
    name: &str,
    entries: &[(P, V)],
    key: fn(&P) -> Key<K>,
) -> Result<(), BpfError> {
    let mut map: LpmTrie<&mut MapData, K, V> = LpmTrie::try_from(map).map_err(map_err(name))?;
    for (k, v) in entries {
        map.insert(&key(k), v, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// The LPM key of (router, prefix): the router's 32 bits, then the prefix.
fn lpm_key((router, prefix): &(u32, ipnet::Ipv4Net)) -> Key<RouterAddr> {
    Key::new(
        32 + u32::from(prefix.prefix_len()),
        RouterAddr::new(*router, u32::from(prefix.network()).to_be()),
    )
}

/// Mounts bpffs at `/sys/fs/bpf` when it is not (a fresh machine may not have it).
///
/// # Errors
/// When the mount fails.
pub fn ensure_bpffs() -> Result<(), BpfError> {
    let mounted = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.split_whitespace().nth(1) == Some(BPFFS)
                    && l.split_whitespace().nth(2) == Some("bpf")
            })
    };
    if mounted() {
        return Ok(());
    }
    // Several networks coming up at once on a machine that has not mounted bpffs yet: each
    // would mount one, the later over the earlier, hiding the pins made there meanwhile. One
    // mounts; the others, once it is done, find it mounted.
    let _lock = crate::lock::Lock::acquire(crate::lock::BPFFS, "up (mounting bpffs)", |_| {})
        .map_err(|e| BpfError::Pin {
            op: "locking, to mount bpffs at",
            path: BPFFS.into(),
            source: std::io::Error::other(e),
        })?;
    if mounted() {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| BpfError::Pin {
        op: "mounting bpffs at",
        path: BPFFS.into(),
        source: std::io::Error::from(e),
    })
}

/// Where a network's maps are pinned. `id` must be a network id (checked where it enters).
#[must_use]
pub fn pin_dir(id: &str) -> PathBuf {
    debug_assert!(crate::plan::naming::is_network_id(id), "{id:?}");
    Path::new(PIN_ROOT).join(id)
}

/// Creates dvnet's part of bpffs, `/sys/fs/bpf/dvnet`, root's alone (mode 0700): bpffs is
/// often writable by everyone (sticky, like `/tmp`), so a directory someone else made there,
/// or a symbolic link, is refused rather than used.
///
/// # Errors
/// [`crate::state::StateError::Untrusted`] for such a directory.
pub fn secure_pin_root() -> Result<(), crate::state::StateError> {
    crate::state::secure_dir(Path::new(PIN_ROOT), 0o700)
}

/// Checks, without creating anything, that the pin root and network `id`'s pin directory are
/// trustworthy if they exist; `true` when the network has pins.
///
/// # Errors
/// [`crate::state::StateError::Untrusted`] when either is not.
pub fn check_pins(id: &str) -> Result<bool, crate::state::StateError> {
    crate::state::check_id(id)?;
    Ok(crate::state::check_dir(Path::new(PIN_ROOT))? && crate::state::check_dir(&pin_dir(id))?)
}

/// Removes a network's pins (the maps are freed once no program holds them). Only a
/// trustworthy pin directory of a network id is removed.
///
/// # Errors
/// When the directory is untrusted, or exists but cannot be removed.
pub fn remove_pins(id: &str) -> Result<(), crate::state::StateError> {
    if !check_pins(id)? {
        return Ok(());
    }
    let dir = pin_dir(id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(crate::state::StateError::Io {
            op: "removing",
            path: dir.display().to_string(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A running network's pinned maps and programs, for an edit.
pub struct Pinned {
    dir: PathBuf,
    node: aya::programs::SchedClassifier,
    fabric: aya::programs::SchedClassifier,
    delay: aya::programs::SchedClassifier,
}

fn pin_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(String) -> BpfError + 'a {
    move |e| BpfError::Pin {
        op,
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    }
}

impl Pinned {
    /// Opens the pins of network `id`.
    ///
    /// # Errors
    /// When they are missing (the network is not up) or untrustworthy.
    pub fn open(id: &str) -> Result<Pinned, BpfError> {
        if !check_pins(id)? {
            return Err(BpfError::Pin {
                op: "opening",
                path: pin_dir(id).display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let dir = pin_dir(id);
        let program = |name: &str| {
            let path = dir.join(name);
            aya::programs::SchedClassifier::from_pin(&path)
                .map_err(|e| pin_err("opening", &path)(e.to_string()))
        };
        Ok(Pinned {
            node: program(programs::NODE_INGRESS)?,
            fabric: program(programs::FABRIC_INGRESS)?,
            delay: program(programs::DELAY_RETURN)?,
            dir,
        })
    }

    /// The program attached to node interfaces, and the one on fabric ports.
    ///
    /// # Panics
    /// Never: pinned programs are loaded.
    #[must_use]
    pub fn programs(&self) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        (
            self.node.fd().expect("a pinned program").as_fd(),
            self.fabric.fd().expect("a pinned program").as_fd(),
        )
    }

    /// The program on the near ends of delay lines.
    ///
    /// # Panics
    /// Never: pinned programs are loaded.
    #[must_use]
    pub fn delay_program(&self) -> BorrowedFd<'_> {
        self.delay.fd().expect("a pinned program").as_fd()
    }

    /// Map `name` of the network, opened (for `dvnet capture`).
    ///
    /// # Errors
    /// When it is missing (a network brought up by a dvnet without it) or cannot be opened.
    pub fn open_map(&self, name: &str) -> Result<aya::maps::Map, BpfError> {
        self.map(name)
    }

    fn data(&self, name: &str) -> Result<MapData, BpfError> {
        let path = self.dir.join(name);
        MapData::from_pin(&path).map_err(|e| pin_err("opening", &path)(e.to_string()))
    }

    fn map(&self, name: &str) -> Result<aya::maps::Map, BpfError> {
        aya::maps::Map::from_map_data(self.data(name)?).map_err(map_err(name))
    }

    /// How many entries map `name` holds at most.
    ///
    /// # Errors
    /// When the map cannot be opened.
    pub fn capacity(&self, name: &str) -> Result<u32, BpfError> {
        let map = self.data(name)?;
        let info = map.info().map_err(map_err(name))?;
        Ok(info.max_entries())
    }

    /// Removes the entries of interfaces `ifindexes` (gone since).
    ///
    /// # Errors
    /// When the map cannot be opened.
    pub fn delete_ifaces(&self, ifindexes: &[u32]) -> Result<(), BpfError> {
        if ifindexes.is_empty() {
            return Ok(());
        }
        let mut ifaces: HashMap<MapData, u32, IfaceInfo> =
            HashMap::try_from(self.map(maps::IFACES)?).map_err(map_err(maps::IFACES))?;
        for i in ifindexes {
            let _ = ifaces.remove(i);
        }
        Ok(())
    }

    /// Applies `delta` to the LPM trie `name`, whose keys `key` makes: deletions, then
    /// insertions (nothing opened when it is empty).
    fn write_lpm<P, K: aya::Pod, V: aya::Pod>(
        &self,
        name: &str,
        delta: &super::entries::Delta<P, V>,
        key: fn(&P) -> Key<K>,
    ) -> Result<(), BpfError> {
        if delta.is_empty() {
            return Ok(());
        }
        let mut map: LpmTrie<MapData, K, V> =
            LpmTrie::try_from(self.map(name)?).map_err(map_err(name))?;
        for k in &delta.delete {
            let _ = map.remove(&key(k));
        }
        for (k, v) in &delta.put {
            map.insert(&key(k), v, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Writes `diff` into the maps: deletions, then insertions; new counter slots zeroed
    /// first; flows of routers that are gone forgotten.
    ///
    /// # Errors
    /// When the kernel refuses an entry.
    pub fn write(&self, diff: &super::entries::EntriesDiff) -> Result<(), BpfError> {
        use aya::maps::PerCpuArray;
        use aya::maps::PerCpuValues;
        use dvnet_common::{FlowKey, LinkStats};
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| BpfError::Pin {
                op: "counting CPUs for",
                path: self.dir.display().to_string(),
                source: e,
            })?
            .get() as usize;
        if !diff.fresh_links.is_empty() {
            let mut stats: PerCpuArray<MapData, LinkStats> =
                PerCpuArray::try_from(self.map(maps::LINK_STATS)?)
                    .map_err(map_err(maps::LINK_STATS))?;
            for &slot in &diff.fresh_links {
                let zero: PerCpuValues<LinkStats> =
                    PerCpuValues::try_from(vec![LinkStats::default(); cpus])
                        .expect("one value per CPU");
                stats
                    .set(slot, zero, 0)
                    .map_err(map_err(maps::LINK_STATS))?;
            }
        }
        if !diff.fresh_rules.is_empty() {
            let mut hits: PerCpuArray<MapData, u64> =
                PerCpuArray::try_from(self.map(maps::RULE_HITS)?)
                    .map_err(map_err(maps::RULE_HITS))?;
            for &slot in &diff.fresh_rules {
                let zero: PerCpuValues<u64> =
                    PerCpuValues::try_from(vec![0_u64; cpus]).expect("one value per CPU");
                hits.set(slot, zero, 0).map_err(map_err(maps::RULE_HITS))?;
            }
        }
        // a route's further next hops are in place before it counts them, and go after
        let mut nexthops: HashMap<MapData, NexthopKey, Route> =
            HashMap::try_from(self.map(maps::NEXTHOPS)?).map_err(map_err(maps::NEXTHOPS))?;
        for (k, v) in &diff.nexthops.put {
            nexthops.insert(k, v, 0).map_err(map_err(maps::NEXTHOPS))?;
        }
        let mut routes: LpmTrie<MapData, RouterAddr, Route> =
            LpmTrie::try_from(self.map(maps::ROUTES)?).map_err(map_err(maps::ROUTES))?;
        for k in &diff.routes.delete {
            let _ = routes.remove(&lpm_key(k));
        }
        for (k, v) in &diff.routes.put {
            routes
                .insert(&lpm_key(k), v, 0)
                .map_err(map_err(maps::ROUTES))?;
        }
        for k in &diff.nexthops.delete {
            let _ = nexthops.remove(k);
        }
        self.write_lpm(maps::FW_CLASSES, &diff.classes, lpm_key)?;
        let mut rules: HashMap<MapData, RuleKey, RuleVerdict> =
            HashMap::try_from(self.map(maps::FW_RULES)?).map_err(map_err(maps::FW_RULES))?;
        for k in &diff.rules.delete {
            let _ = rules.remove(k);
        }
        for (k, v) in &diff.rules.put {
            rules.insert(k, v, 0).map_err(map_err(maps::FW_RULES))?;
        }
        // a route's further next hops are in place before it counts them, and go after
        let mut nexthops6: HashMap<MapData, NexthopKey6, Route6> =
            HashMap::try_from(self.map(maps::NEXTHOPS6)?).map_err(map_err(maps::NEXTHOPS6))?;
        for (k, v) in &diff.nexthops6.put {
            nexthops6
                .insert(k, v, 0)
                .map_err(map_err(maps::NEXTHOPS6))?;
        }
        self.write_lpm(maps::ROUTES6, &diff.routes6, lpm_key6)?;
        for k in &diff.nexthops6.delete {
            let _ = nexthops6.remove(k);
        }
        self.write_lpm(maps::FW_CLASSES6, &diff.classes6, lpm_key6)?;
        if !diff.addrs6.is_empty() {
            let mut addrs6: HashMap<MapData, u32, [u8; 16]> =
                HashMap::try_from(self.map(maps::ADDRS6)?).map_err(map_err(maps::ADDRS6))?;
            for k in &diff.addrs6.delete {
                let _ = addrs6.remove(k);
            }
            for (k, v) in &diff.addrs6.put {
                addrs6.insert(k, v, 0).map_err(map_err(maps::ADDRS6))?;
            }
        }
        // impairments before the interfaces flagged for them, removed after
        let mut impairs: HashMap<MapData, u32, ImpairEntry> =
            HashMap::try_from(self.map(maps::IMPAIR)?).map_err(map_err(maps::IMPAIR))?;
        for (k, v) in &diff.impairs.put {
            impairs.insert(k, v, 0).map_err(map_err(maps::IMPAIR))?;
        }
        // interfaces last: a new interface's program finds its routes and rules in place
        let mut ifaces: HashMap<MapData, u32, IfaceInfo> =
            HashMap::try_from(self.map(maps::IFACES)?).map_err(map_err(maps::IFACES))?;
        for k in &diff.ifaces.delete {
            let _ = ifaces.remove(k);
        }
        for (k, v) in &diff.ifaces.put {
            ifaces.insert(k, v, 0).map_err(map_err(maps::IFACES))?;
        }
        for k in &diff.impairs.delete {
            let _ = impairs.remove(k);
        }
        if !diff.gone_routers.is_empty() {
            let mut flows: HashMap<MapData, FlowKey, u32> =
                HashMap::try_from(self.map(maps::CONNTRACK)?).map_err(map_err(maps::CONNTRACK))?;
            let stale: Vec<FlowKey> = flows
                .keys()
                .flatten()
                .filter(|k| diff.gone_routers.contains(&k.router))
                .collect();
            for k in stale {
                let _ = flows.remove(&k);
            }
        }
        Ok(())
    }
}
