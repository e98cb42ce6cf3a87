//! What a network owns on this machine, found by name: the one place `up`'s checks, `down`,
//! `ls` and the tests look. Everything a network creates carries its id (namespaces
//! `dv-<id>` and `dv-<id>.<node>`, their `/etc/netns` directories, the record, the lock, the
//! pins; containers carry it as a label), so this finds it after a crash too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::datapath::ebpf;
use crate::plan::naming;
use crate::state;

/// Everything of one network found on the machine (containers aside: see
/// [`crate::runtime::docker::Containers::of_network`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Namespaces in `/run/netns` (nodes, and the fabric `dv-<id>`).
    pub namespaces: Vec<String>,
    /// `/etc/netns/dv-<id>...` directories.
    pub etc_netns: Vec<PathBuf>,
    /// The record directory `/run/dvnet/<id>`.
    pub record: Option<PathBuf>,
    /// The lock file `/run/dvnet/.locks/<id>`.
    pub lock: Option<PathBuf>,
    /// The pin directory `/sys/fs/bpf/dvnet/<id>`.
    pub pins: Option<PathBuf>,
}

fn entries_of(dir: &str, id: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| naming::belongs_to(n, id))
        .collect();
    names.sort();
    names
}

impl Inventory {
    /// What network `id` owns now. `id` must be a network id.
    ///
    /// # Errors
    /// When dvnet's pin root is untrustworthy (see [`state::check_dir`]).
    pub fn of(id: &str) -> Result<Inventory, state::StateError> {
        state::check_id(id)?;
        let existing = |p: PathBuf| std::fs::symlink_metadata(&p).is_ok().then_some(p);
        Ok(Inventory {
            namespaces: entries_of(crate::netns::NETNS_DIR, id),
            etc_netns: entries_of("/etc/netns", id)
                .into_iter()
                .map(|n| Path::new("/etc/netns").join(n))
                .collect(),
            record: existing(state::dir(id)),
            lock: existing(crate::lock::dir().join(id)),
            pins: ebpf::check_pins(id)?.then(|| ebpf::pin_dir(id)),
        })
    }

    /// Whether nothing of the network is left (but maybe its lock file).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.etc_netns.is_empty()
            && self.record.is_none()
            && self.pins.is_none()
    }

    /// Every path found, for messages and tests.
    #[must_use]
    pub fn paths(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .map(|n| crate::netns::path(n).display().to_string())
            .chain(self.etc_netns.iter().map(|p| p.display().to_string()))
            .chain(
                [&self.record, &self.lock, &self.pins]
                    .into_iter()
                    .flatten()
                    .map(|p| p.display().to_string()),
            )
            .collect()
    }
}

/// The ids of every network with namespaces on this machine (records aside).
#[must_use]
pub fn networks_with_namespaces() -> BTreeSet<String> {
    crate::netns::list()
        .unwrap_or_default()
        .iter()
        .filter_map(|n| naming::network_of(n).map(str::to_owned))
        .filter(|id| naming::is_network_id(id))
        .collect()
}
