//! One operation per network at a time: every command that changes a network (`up`, `down`,
//! and later `apply` and the Docker driver) holds that network's lock, an exclusive `flock`
//! on `/run/dvnet/.locks/<id>`, for as long as it runs. The kernel releases a lock when its
//! holder dies, so a `kill -9` never leaves a network locked.
//!
//! A lock file may be removed by its holder (`down` removes it with the network); a waiter
//! that then gets the lock of a removed file notices (the path no longer names the file it
//! locked) and locks the new one instead.
//!
//! Changes to the host's own namespace that several networks share (forwarding, the NAT
//! tables of outbound access) take [`HOST`], a lock of their own; mounting bpffs takes
//! [`BPFFS`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::state;

/// The lock of the host side (forwarding and NAT shared by every network of this host).
pub const HOST: &str = ".host";
/// The lock of mounting bpffs, which every network's pins share.
pub const BPFFS: &str = ".bpffs";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Untrusted(#[from] state::StateError),
    #[error("{op} the lock {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Who holds a lock: written into the lock file by its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub operation: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`dvnet {}` (pid {})", self.operation, self.pid)
    }
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    /// Holds the `flock` (closing the file releases it).
    _file: File,
    path: PathBuf,
}

/// The directory of lock files.
#[must_use]
pub fn dir() -> PathBuf {
    Path::new(state::STATE_DIR).join(".locks")
}

fn path_of(name: &str) -> PathBuf {
    dir().join(name)
}

impl Lock {
    /// Takes the lock `name` (a network id, or [`HOST`]) for `operation`. When another process
    /// holds it, `waiting` is called once with who that is, and this waits until it is free.
    ///
    /// # Errors
    /// When the lock file cannot be created or locked.
    pub fn acquire(
        name: &str,
        operation: &str,
        waiting: impl FnOnce(Option<Holder>),
    ) -> Result<Lock, LockError> {
        let mut waiting = Some(waiting);
        let path = path_of(name);
        let err = |op: &'static str| {
            let path = path.display().to_string();
            move |source| LockError::Io { op, path, source }
        };
        state::secure_dir(Path::new(state::STATE_DIR), 0o755)?;
        state::secure_dir(&dir(), 0o700)?;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(err("opening"))?;
            if !try_flock(&file, true).map_err(err("locking"))? {
                if let Some(waiting) = waiting.take() {
                    waiting(read_holder(&mut file));
                }
                try_flock(&file, false).map_err(err("locking"))?;
            }
            // The holder before us may have removed the file: then ours is stale.
            let same = std::fs::symlink_metadata(&path).is_ok_and(|m| {
                file.metadata()
                    .is_ok_and(|f| f.ino() == m.ino() && f.dev() == m.dev())
            });
            if !same {
                continue;
            }
            file.set_len(0).map_err(err("writing"))?;
            file.rewind().map_err(err("writing"))?;
            write!(file, "{} {operation}", std::process::id()).map_err(err("writing"))?;
            return Ok(Lock { _file: file, path });
        }
    }

    /// Removes the lock file while holding it (the network is gone); the lock is released
    /// when `self` drops.
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `flock(LOCK_EX)`, without blocking when `nonblocking`; `false` when it would block.
fn try_flock(file: &File, nonblocking: bool) -> io::Result<bool> {
    let mut op = libc::LOCK_EX;
    if nonblocking {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a descriptor this function borrows
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) if nonblocking => return Ok(false),
            _ => return Err(e),
        }
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    let (pid, operation) = text.trim().split_once(' ')?;
    Some(Holder {
        pid: pid.parse().ok()?,
        operation: operation.to_owned(),
    })
}
