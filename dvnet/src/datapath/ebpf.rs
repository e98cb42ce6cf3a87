//! The eBPF object built from `dvnet-ebpf` and embedded in the binary, and how a network uses
//! it: loaded once (maps sized for the network, programs verified), maps filled from the
//! plan and pinned under `/sys/fs/bpf/dvnet/<id>/` so that `dvnet stats` can read them from
//! any later process. The programs themselves are held by the TC filters attached to the
//! interfaces, and go away with them.

use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData};
use aya::{Ebpf, EbpfLoader};
use dvnet_common::{IfaceInfo, Route, RouterAddr, RuleKey, RuleVerdict, maps, programs};

use super::entries::MapEntries;

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
    pub routes: u32,
    pub classes: u32,
    pub rules: u32,
    pub rule_hits: u32,
    pub conntrack: u32,
}

impl MapSizes {
    /// Sizes that fit `entries` for a network of `links` links (every map at least 1).
    #[must_use]
    pub fn for_entries(entries: &MapEntries, links: usize) -> MapSizes {
        let n = |v: usize| u32::try_from(v.max(1)).unwrap_or(u32::MAX);
        MapSizes {
            links: n(links),
            // a few spare slots: interfaces added after `up` (an uplink, a test device)
            ifaces: n(entries.ifaces.len() + 8),
            routes: n(entries.routes.len()),
            classes: n(entries.classes.len()),
            rules: n(entries.rules.len()),
            rule_hits: n(entries
                .rule_slots
                .iter()
                .map(|r| r.slot as usize + 1)
                .max()
                .unwrap_or(0)),
            conntrack: if entries.firewalled {
                CONNTRACK_ENTRIES
            } else {
                1
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
        .map_max_entries(maps::ROUTES, sizes.routes)
        .map_max_entries(maps::FW_CLASSES, sizes.classes)
        .map_max_entries(maps::FW_RULES, sizes.rules)
        .map_max_entries(maps::RULE_HITS, sizes.rule_hits)
        .map_max_entries(maps::CONNTRACK, sizes.conntrack)
        .load(OBJECT)
        .map_err(|e| BpfError::Load {
            source: Box::new(e),
        })
}

/// Verifies and loads the classifier `name` into the kernel.
///
/// # Errors
/// When the program is missing or the verifier rejects it (the error carries its log).
pub fn load_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::SchedClassifier, BpfError> {
    let program_err = |e| BpfError::Program {
        name: name.to_owned(),
        source: Box::new(e),
    };
    let program: &mut aya::programs::SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| BpfError::MissingProgram {
            name: name.to_owned(),
        })?
        .try_into()
        .map_err(program_err)?;
    program.load().map_err(program_err)?;
    Ok(program)
}

/// A network's eBPF object: programs loaded, maps filled.
pub struct Loaded {
    ebpf: Ebpf,
}

impl Loaded {
    /// Creates the maps, verifies the programs and fills the maps with `entries`.
    ///
    /// # Errors
    /// When the kernel refuses a map, a program or an entry.
    pub fn new(entries: &MapEntries, links: usize) -> Result<Loaded, BpfError> {
        let mut ebpf = open(MapSizes::for_entries(entries, links))?;
        for name in [programs::NODE_INGRESS, programs::FABRIC_INGRESS] {
            load_program(&mut ebpf, name)?;
        }
        fill(&mut ebpf, entries)?;
        Ok(Loaded { ebpf })
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

    /// Pins every map under `dir` (created; bpffs mounted if needed).
    ///
    /// # Errors
    /// When bpffs cannot be mounted or a pin cannot be made.
    pub fn pin(&self, dir: &Path) -> Result<(), BpfError> {
        ensure_bpffs()?;
        secure_pin_root()?;
        crate::state::secure_dir(dir, 0o700)?;
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

fn fill(ebpf: &mut Ebpf, e: &MapEntries) -> Result<(), BpfError> {
    let mut ifaces: HashMap<&mut MapData, u32, IfaceInfo> =
        HashMap::try_from(ebpf.map_mut(maps::IFACES).expect("in the object"))
            .map_err(map_err(maps::IFACES))?;
    for (ifindex, info) in &e.ifaces {
        ifaces
            .insert(ifindex, info, 0)
            .map_err(map_err(maps::IFACES))?;
    }
    let mut routes: LpmTrie<&mut MapData, RouterAddr, Route> =
        LpmTrie::try_from(ebpf.map_mut(maps::ROUTES).expect("in the object"))
            .map_err(map_err(maps::ROUTES))?;
    for ((router, dest), route) in &e.routes {
        let key = Key::new(
            32 + u32::from(dest.prefix_len()),
            RouterAddr::new(*router, u32::from(dest.network()).to_be()),
        );
        routes
            .insert(&key, route, 0)
            .map_err(map_err(maps::ROUTES))?;
    }
    let mut classes: LpmTrie<&mut MapData, RouterAddr, u32> =
        LpmTrie::try_from(ebpf.map_mut(maps::FW_CLASSES).expect("in the object"))
            .map_err(map_err(maps::FW_CLASSES))?;
    for ((router, prefix), class) in &e.classes {
        let key = Key::new(
            32 + u32::from(prefix.prefix_len()),
            RouterAddr::new(*router, u32::from(prefix.network()).to_be()),
        );
        classes
            .insert(&key, class, 0)
            .map_err(map_err(maps::FW_CLASSES))?;
    }
    let mut rules: HashMap<&mut MapData, RuleKey, RuleVerdict> =
        HashMap::try_from(ebpf.map_mut(maps::FW_RULES).expect("in the object"))
            .map_err(map_err(maps::FW_RULES))?;
    for (key, verdict) in &e.rules {
        rules
            .insert(key, verdict, 0)
            .map_err(map_err(maps::FW_RULES))?;
    }
    Ok(())
}

/// Mounts bpffs at `/sys/fs/bpf` when it is not (a fresh machine may not have it).
///
/// # Errors
/// When the mount fails.
pub fn ensure_bpffs() -> Result<(), BpfError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some(BPFFS) && l.split_whitespace().nth(2) == Some("bpf")
    }) {
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
