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
/// MessagePack (with field names): a few times faster to read than JSON for a large plan,
/// which every `apply`, `stats` and `inspect` reads whole; `dvnet inspect --json` shows it.
const STATE_FILE: &str = "state.msgpack";
/// Present while an edit runs (or after one died): its process id.
const APPLYING_FILE: &str = "applying";
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
        source: rmp_serde::decode::Error,
    },
    #[error(
        "refusing to use {path}: it {why}. dvnet keeps its records, locks and pins only in \
         directories that root owns and nobody else can write (someone may have planted this one); \
         look at what it is, remove it, and run the command again"
    )]
    Untrusted { path: String, why: String },
    #[error(
        "{id:?} is not a network id (lowercase letters, digits and `-`); `dvnet ls` lists the networks"
    )]
    BadId { id: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `up` is running (or died while running).
    Creating,
    Up,
    /// `apply` is changing it (or died while doing so).
    Applying,
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
    pub host: Option<crate::host::HostChanges>,
    /// The topology file's text the network was last built or edited from: what the Docker
    /// driver plans again when a container joins or leaves.
    #[serde(default)]
    pub source_text: Option<String>,
    /// Hosts that joined from outside the file (containers, through the Docker driver):
    /// planned with every edit.
    #[serde(default)]
    pub attached: Vec<AttachedHost>,
    /// Impairments set at run time (`dvnet impair`): in force over the file's until the
    /// next `dvnet apply FILE`.
    #[serde(default)]
    pub impair_overrides: Vec<ImpairOverride>,
}

/// What `dvnet impair` set on a subnet (`node` none) or on one member's link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpairOverride {
    pub subnet: String,
    pub node: Option<String>,
    pub impair: crate::topology::Impair,
}

/// A container joined to a subnet through the Docker driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedHost {
    pub name: String,
    pub subnet: String,
    pub address: std::net::Ipv4Addr,
    pub attachment: crate::plan::Attachment,
}

/// One version of a record on disk: it changes whenever the record is written (each write
/// is a new file, renamed over the old one) or an edit marks or unmarks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    mtime_ns: i128,
    marked: bool,
}

impl Stamp {
    /// Which write of the record this is, as text (whether it is marked aside): what a
    /// process that follows the record says it has read.
    #[must_use]
    pub fn version(&self) -> String {
        format!("{}:{}", self.ino, self.mtime_ns)
    }

    /// The stamp of network `id`'s record now, if it has one.
    #[must_use]
    pub fn of(id: &str) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt as _;
        if !crate::plan::naming::is_network_id(id) {
            return None;
        }
        let meta = fs::metadata(dir(id).join(STATE_FILE)).ok()?;
        Some(Stamp {
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            marked: dir(id).join(APPLYING_FILE).exists(),
        })
    }
}

/// A record to write, borrowing its plan: serialized exactly as a [`State`] is (an edit
/// serializes the record it will write while the kernel works, without copying the plan).
#[derive(Serialize)]
pub struct StateView<'a> {
    pub version: u32,
    pub status: Status,
    pub source: Option<PathBuf>,
    pub created: u64,
    pub pid: u32,
    pub plan: &'a Plan,
    pub host: Option<crate::host::HostChanges>,
    pub source_text: Option<&'a str>,
    pub attached: &'a [AttachedHost],
    pub impair_overrides: &'a [ImpairOverride],
}

impl StateView<'_> {
    /// The record's bytes, for [`State::save_serialized`].
    #[must_use]
    pub fn serialize(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a plan always serializes")
    }
}

/// The directory of a network's record. `id` must be a network id
/// ([`crate::plan::naming::is_network_id`]): callers check it where it enters.
#[must_use]
pub fn dir(id: &str) -> PathBuf {
    debug_assert!(crate::plan::naming::is_network_id(id), "{id:?}");
    Path::new(STATE_DIR).join(id)
}

/// Refuses anything but a network id.
///
/// # Errors
/// When `id` is not one.
pub fn check_id(id: &str) -> Result<(), StateError> {
    if crate::plan::naming::is_network_id(id) {
        Ok(())
    } else {
        Err(StateError::BadId { id: id.to_owned() })
    }
}

/// Whether `path` is a directory dvnet can trust: a real directory (no symbolic link), owned
/// by the user dvnet runs as (root), writable by nobody else. `Ok(false)` when it is absent.
///
/// # Errors
/// [`StateError::Untrusted`] when it exists but is not such a directory.
pub fn check_dir(path: &Path) -> Result<bool, StateError> {
    use std::os::unix::fs::MetadataExt as _;
    let untrusted = |why: String| StateError::Untrusted {
        path: path.display().to_string(),
        why,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(io_err("checking", path, source)),
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
        return Err(untrusted(format!("is a symbolic link (to {target})")));
    }
    if !meta.is_dir() {
        return Err(untrusted("is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(untrusted(format!(
            "is owned by uid {}, not by uid {me} (root)",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(format!(
            "is writable by others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(true)
}

/// Makes sure `path` is a trusted directory ([`check_dir`]), creating it with `mode` when
/// absent (its parent must exist).
///
/// # Errors
/// When it exists untrusted, or cannot be created.
pub fn secure_dir(path: &Path, mode: u32) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt as _;
    if check_dir(path)? {
        return Ok(());
    }
    match fs::DirBuilder::new().mode(mode).create(path) {
        // someone made it between the check and now: check what they made
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(io_err("creating", path, source)),
    }
    if check_dir(path)? {
        Ok(())
    } else {
        Err(io_err(
            "creating",
            path,
            io::Error::from(io::ErrorKind::NotFound),
        ))
    }
}

impl State {
    /// Writes the record atomically (write to a temporary file, then rename).
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub fn save(&self) -> Result<(), StateError> {
        self.save_serialized(&self.serialize())
    }

    /// The record as it will be written (serializing a large plan takes a while: an edit
    /// does it while the kernel works).
    #[must_use]
    pub fn serialize(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a plan always serializes")
    }

    /// Writes a record made by [`State::serialize`] of `self`, atomically; an edit's mark
    /// (see [`State::mark_applying`]) goes once the record is in place.
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub fn save_serialized(&self, text: &[u8]) -> Result<(), StateError> {
        check_id(&self.plan.id)?;
        secure_dir(Path::new(STATE_DIR), 0o755)?;
        let dir = dir(&self.plan.id);
        secure_dir(&dir, 0o755)?;
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        fs::write(&tmp, text).map_err(|source| io_err("writing", &tmp, source))?;
        let path = dir.join(STATE_FILE);
        fs::rename(&tmp, &path).map_err(|source| io_err("writing", &path, source))?;
        if self.status != Status::Applying {
            let mark = dir.join(APPLYING_FILE);
            match fs::remove_file(&mark) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("removing", &mark, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Marks the network as being edited by this process, cheaply (the record itself, with
    /// its large plan, is written once, when the edit is done): a `dvnet` that dies
    /// mid-edit leaves the mark, and later ones see the network as `applying`.
    ///
    /// # Errors
    /// When the mark cannot be written.
    pub fn mark_applying(&mut self) -> Result<(), StateError> {
        self.status = Status::Applying;
        self.pid = std::process::id();
        let path = dir(&self.plan.id).join(APPLYING_FILE);
        fs::write(&path, self.pid.to_string()).map_err(|source| io_err("writing", &path, source))
    }

    /// Reads the record of network `id`.
    ///
    /// # Errors
    /// When there is none, or it is unreadable.
    pub fn load(id: &str) -> Result<State, StateError> {
        check_id(id)?;
        if !check_dir(Path::new(STATE_DIR))? || !check_dir(&dir(id))? {
            return Err(StateError::NotFound { id: id.to_owned() });
        }
        let path = dir(id).join(STATE_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound { id: id.to_owned() });
            }
            Err(source) => return Err(io_err("reading", &path, source)),
        };
        let mut state: State =
            rmp_serde::from_slice(&text).map_err(|source| StateError::Corrupt {
                path: path.display().to_string(),
                source,
            })?;
        // an edit in progress (or one that died)
        if let Ok(pid) = fs::read_to_string(dir(id).join(APPLYING_FILE)) {
            state.status = Status::Applying;
            state.pid = pid.trim().parse().unwrap_or(0);
        }
        Ok(state)
    }

    /// Reads the record of network `id` with its [`Stamp`]: a record read early (before the
    /// network's lock is taken) can later be told to be still current.
    ///
    /// # Errors
    /// As [`State::load`].
    pub fn load_stamped(id: &str) -> Result<(State, Stamp), StateError> {
        loop {
            let before = Stamp::of(id);
            let state = State::load(id)?;
            let after = Stamp::of(id);
            if let Some(stamp) = after
                && before == after
            {
                return Ok((state, stamp));
            }
        }
    }

    /// Every network that has a record, by id (entries that are not network ids, such as
    /// the locks' directory, are not records).
    ///
    /// # Errors
    /// When the state directory cannot be read or is not trustworthy.
    pub fn ids() -> Result<Vec<String>, StateError> {
        let mut ids = Vec::new();
        if !check_dir(Path::new(STATE_DIR))? {
            return Ok(ids);
        }
        let entries = fs::read_dir(STATE_DIR)
            .map_err(|source| io_err("reading", Path::new(STATE_DIR), source))?;
        for e in entries {
            let e = e.map_err(|source| io_err("reading", Path::new(STATE_DIR), source))?;
            if let Some(name) = e.file_name().to_str()
                && crate::plan::naming::is_network_id(name)
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                ids.push(name.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Removes the record of `id`; a missing one is fine.
    ///
    /// # Errors
    /// When `id` is not a network id, or the record exists but cannot be removed.
    pub fn remove(id: &str) -> Result<(), StateError> {
        check_id(id)?;
        if !check_dir(Path::new(STATE_DIR))? {
            return Ok(());
        }
        let dir = dir(id);
        if fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            return Err(StateError::Untrusted {
                path: dir.display().to_string(),
                why: "is not a directory".into(),
            });
        }
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
