//! What `up` built, recorded under `/run/dvnet/<id>/` so that any later process can list,
//! inspect, enter and tear down the network. `/run` is a tmpfs: like the namespaces, the
//! record does not survive a reboot.
//!
//! The record is a convenience, not the source of truth for teardown: `down` also discovers
//! the network's objects by their names, so it works when `up` was killed before writing it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// Where records live.
pub const STATE_DIR: &str = "/run/dvnet";
const STATE_FILE: &str = "state.json";
/// Bumped when the record's shape changes incompatibly.
pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "network {id} is not up (no record in {STATE_DIR}); `dvnet ls` lists the networks that are"
    )]
    NotFound { id: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the record {path} is unreadable ({source}); `dvnet down` still removes the network")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `up` is running (or died while running).
    Creating,
    Up,
}

/// The record of one network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub status: Status,
    /// The topology file `up` read.
    pub source: Option<PathBuf>,
    /// Seconds since the epoch when `up` started.
    pub created: u64,
    /// The process that ran `up`.
    pub pid: u32,
    pub plan: Plan,
    /// Changes to the host beyond the network's own objects (outbound access).
    #[serde(default)]
    pub host: Option<crate::outbound::HostChanges>,
}

/// The directory of a network's record.
#[must_use]
pub fn dir(id: &str) -> PathBuf {
    Path::new(STATE_DIR).join(id)
}

impl State {
    /// Writes the record atomically (write to a temporary file, then rename).
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub fn save(&self) -> Result<(), StateError> {
        let dir = dir(&self.plan.id);
        fs::create_dir_all(&dir).map_err(|source| io_err("creating", &dir, source))?;
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_vec(self).expect("a plan always serializes");
        fs::write(&tmp, text).map_err(|source| io_err("writing", &tmp, source))?;
        let path = dir.join(STATE_FILE);
        fs::rename(&tmp, &path).map_err(|source| io_err("writing", &path, source))
    }

    /// Reads the record of network `id`.
    ///
    /// # Errors
    /// When there is none, or it is unreadable.
    pub fn load(id: &str) -> Result<State, StateError> {
        let path = dir(id).join(STATE_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound { id: id.to_owned() });
            }
            Err(source) => return Err(io_err("reading", &path, source)),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt {
            path: path.display().to_string(),
            source,
        })
    }

    /// Every network that has a record, by id.
    ///
    /// # Errors
    /// When the state directory cannot be read.
    pub fn ids() -> Result<Vec<String>, StateError> {
        let mut ids = Vec::new();
        match fs::read_dir(STATE_DIR) {
            Ok(entries) => {
                for e in entries {
                    let e = e.map_err(|source| io_err("reading", Path::new(STATE_DIR), source))?;
                    if let Some(name) = e.file_name().to_str() {
                        ids.push(name.to_owned());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_err("reading", Path::new(STATE_DIR), source)),
        }
        ids.sort();
        Ok(ids)
    }

    /// Removes the record of `id`; a missing one is fine.
    ///
    /// # Errors
    /// When it exists but cannot be removed.
    pub fn remove(id: &str) -> Result<(), StateError> {
        let dir = dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_err("removing", &dir, source)),
        }
    }
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> StateError {
    StateError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}
