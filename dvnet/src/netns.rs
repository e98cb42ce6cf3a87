//! Named network namespaces, the `ip netns` way: a namespace is kept alive by a bind mount at
//! `/run/netns/<name>`, so `ip netns exec`, `nsenter --net=/run/netns/<name>` and later dvnet
//! processes all find it.
//!
//! Entering a namespace (`setns`) changes only the calling thread. dvnet does it only on
//! threads it owns for that purpose ([`on_thread`] and the creation workers), never on an async
//! runtime's workers, and always returns to the original namespace before the thread does
//! anything else.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where named namespaces live (as in iproute2).
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{op} namespace {name}: {source}")]
    Io {
        op: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "namespace {name} already exists: run `dvnet down` for the network that owns it, or `ip netns del {name}`"
    )]
    Exists { name: String },
}

fn io_err<'a>(op: &'static str, name: &'a str) -> impl FnOnce(io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Io {
        op,
        name: name.to_owned(),
        source,
    }
}

fn nix_err<'a>(op: &'static str, name: &'a str) -> impl FnOnce(nix::Error) -> NetnsError + 'a {
    move |e| NetnsError::Io {
        op,
        name: name.to_owned(),
        source: io::Error::from(e),
    }
}

/// The path of a named namespace.
#[must_use]
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so the namespaces mounted
/// in it are visible from every mount namespace (containers' `nsenter`, `ip netns exec`).
///
/// # Errors
/// When the directory cannot be created or mounted.
pub fn prepare_dir() -> Result<(), NetnsError> {
    fs::create_dir_all(NETNS_DIR).map_err(io_err("creating", NETNS_DIR))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, Some("none"), shared, None::<&str>).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself, then make it shared.
    mount(
        Some(NETNS_DIR),
        NETNS_DIR,
        Some("none"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nix_err("bind-mounting", NETNS_DIR))?;
    mount(None::<&str>, NETNS_DIR, Some("none"), shared, None::<&str>)
        .map_err(nix_err("sharing", NETNS_DIR))
}

/// The calling thread's current network namespace.
///
/// # Errors
/// When `/proc/thread-self/ns/net` cannot be opened.
pub fn current() -> io::Result<OwnedFd> {
    File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
}

/// Opens a named namespace.
///
/// # Errors
/// When it does not exist.
pub fn open(name: &str) -> Result<OwnedFd, NetnsError> {
    File::open(path(name))
        .map(OwnedFd::from)
        .map_err(io_err("opening", name))
}

/// Whether a named namespace exists.
#[must_use]
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Names of every namespace in `/run/netns`, sorted.
///
/// # Errors
/// When the directory exists but cannot be read.
pub fn list() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir(NETNS_DIR) {
        Ok(dir) => {
            for entry in dir {
                if let Some(name) = entry?.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// Links to one file a mount point may take before another file is made: well below the
/// fewest links a file may have on the filesystems `/run` lives on (ext4: 65,000).
const LINKS_PER_FILE: u32 = 8192;

/// The mount points of namespaces made one after the other (`/run/netns/<name>`, each an
/// empty file a namespace is bind-mounted on): links to one unnamed file (`O_TMPFILE`)
/// rather than a new file each. A new file is an inode to allocate, which can cost more than
/// the namespace: on ext4 without a journal (where `/run` is no tmpfs on some machines) the
/// allocator steps over every inode freed in the last minute, one by one, so a lab made again
/// soon after its `down` pays for the last one's files too (1,000 files 0.16 s here, 1,000
/// links 0.004 s). A mount belongs to a name, not to its inode, and `ip netns del` or `down`
/// removes one name as before. Where the filesystem has no unnamed files, each mount point is
/// a file of its own.
#[derive(Default)]
pub struct MountPoints {
    /// `/run/netns`, once opened.
    dir: Option<OwnedFd>,
    /// The unnamed file and how many names it has; `None` to open one.
    file: Option<(OwnedFd, u32)>,
    /// The filesystem makes no unnamed files (or links to them): new files only.
    files_only: bool,
}

impl MountPoints {
    /// Makes `/run/netns/<name>`.
    fn make(&mut self, name: &str) -> Result<PathBuf, NetnsError> {
        let target = path(name);
        if !self.files_only {
            match self.link(name) {
                Ok(()) => return Ok(target),
                Err(nix::Error::EEXIST) => {
                    return Err(NetnsError::Exists {
                        name: name.to_owned(),
                    });
                }
                // no unnamed files here (or no right to link them): files of their own
                Err(e) => {
                    tracing::debug!(error = %e, "mount points as files of their own");
                    self.files_only = true;
                }
            }
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&target)
        {
            Ok(_) => Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(NetnsError::Exists {
                name: name.to_owned(),
            }),
            Err(e) => Err(io_err("creating", name)(e)),
        }
    }

    /// Links `name` in `/run/netns` to the unnamed file, made first when there is none (or
    /// it has all the links it may take).
    fn link(&mut self, name: &str) -> nix::Result<()> {
        use nix::fcntl::{AtFlags, OFlag};
        use nix::sys::stat::Mode;
        let dir = match &self.dir {
            Some(dir) => dir,
            None => self.dir.insert(nix::fcntl::open(
                NETNS_DIR,
                OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?),
        };
        if self.file.as_ref().is_none_or(|(_, n)| *n >= LINKS_PER_FILE) {
            let file = nix::fcntl::openat(
                dir,
                ".",
                OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )?;
            self.file = Some((file, 0));
        }
        let (file, links) = self.file.as_mut().expect("made above");
        nix::unistd::linkat(&*file, "", dir, name, AtFlags::AT_EMPTY_PATH)?;
        *links += 1;
        Ok(())
    }
}

/// Makes the mount point `/run/netns/<name>` (through `points`), runs `make` (which mounts a
/// namespace on it and returns what the caller needs), and removes the mount point again if
/// `make` fails.
fn with_mount_point<T>(
    points: &mut MountPoints,
    name: &str,
    make: impl FnOnce(&Path) -> Result<T, NetnsError>,
) -> Result<T, NetnsError> {
    let target = points.make(name)?;
    let result = make(&target);
    if result.is_err() {
        let _ = umount2(&target, MntFlags::MNT_DETACH);
        let _ = fs::remove_file(&target);
    }
    result
}

/// Runs `init` on the calling thread inside the namespace it is in now (just mounted at
/// `name`), then returns the thread to `home`.
fn init_inside<T>(
    name: &str,
    home: BorrowedFd<'_>,
    init: impl FnOnce() -> io::Result<T>,
) -> Result<(OwnedFd, T), NetnsError> {
    let inside = (|| {
        let fd = current().map_err(io_err("opening", name))?;
        let value = init().map_err(io_err("setting up", name))?;
        Ok((fd, value))
    })();
    setns(home, CloneFlags::CLONE_NEWNET).map_err(nix_err("leaving", name))?;
    inside
}

/// Creates the namespace `name` on the calling thread, runs `init` inside it, and returns the
/// thread to `home`. The namespace stays alive (mounted) after this returns.
///
/// Must run on a thread that does nothing else in between (see the module docs).
///
/// # Errors
/// The namespace exists already, or a system call fails (then nothing is left behind).
pub fn create_on_this_thread<T>(
    points: &mut MountPoints,
    name: &str,
    home: BorrowedFd<'_>,
    init: impl FnOnce() -> io::Result<T>,
) -> Result<(OwnedFd, T), NetnsError> {
    with_mount_point(points, name, |target| {
        unshare(CloneFlags::CLONE_NEWNET).map_err(nix_err("creating", name))?;
        if let Err(e) = mount(
            Some("/proc/thread-self/ns/net"),
            target,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            setns(home, CloneFlags::CLONE_NEWNET).map_err(nix_err("leaving", name))?;
            return Err(nix_err("mounting", name)(e));
        }
        init_inside(name, home, init)
    })
}

/// Gives the namespace of process `pid` (a container's) the name `name`, like
/// `ip netns attach`, then runs `init` inside it on the calling thread and returns the thread
/// to `home`. Must run on a thread that does nothing else in between.
///
/// # Errors
/// The name is taken, or a system call fails (then the name is removed again).
pub fn adopt_on_this_thread<T>(
    points: &mut MountPoints,
    name: &str,
    pid: u32,
    home: BorrowedFd<'_>,
    init: impl FnOnce() -> io::Result<T>,
) -> Result<(OwnedFd, T), NetnsError> {
    with_mount_point(points, name, |target| {
        let source = format!("/proc/{pid}/ns/net");
        mount(
            Some(source.as_str()),
            target,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err("mounting", name))?;
        let fd = open(name)?;
        setns(&fd, CloneFlags::CLONE_NEWNET).map_err(nix_err("entering", name))?;
        init_inside(name, home, init)
    })
}

/// Names the namespace at `source` (a container runtime's namespace file) `name`: a bind
/// mount of it at `/run/netns/<name>`, as `ip netns attach` does for a process.
///
/// # Errors
/// The name is taken, or the mount fails (then the name is removed again).
pub fn name_path(name: &str, source: &Path) -> Result<(), NetnsError> {
    with_mount_point(&mut MountPoints::default(), name, |target| {
        mount(
            Some(source),
            target,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err("mounting", name))
    })
}

/// Runs `f` inside the namespace `ns` on a new thread and returns its result.
///
/// # Errors
/// When entering the namespace fails.
pub fn on_thread<T: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Netlink route sockets inside the named namespaces, in order: `workers` threads enter the
/// namespaces in turn (each thread ends afterwards, so none is left elsewhere than it began).
///
/// # Errors
/// A namespace that cannot be opened or entered, or a socket that cannot be made.
pub fn sockets_in(names: &[&str], workers: usize) -> Result<Vec<OwnedFd>, NetnsError> {
    let made = crate::threads::in_chunks(
        names,
        workers,
        |names| -> Result<Vec<OwnedFd>, NetnsError> {
            let mut out = Vec::with_capacity(names.len());
            for &name in names {
                let fd = open(name)?;
                setns(&fd, CloneFlags::CLONE_NEWNET).map_err(nix_err("entering", name))?;
                out.push(
                    crate::netlink::socket_here().map_err(|source| NetnsError::Io {
                        op: "opening a netlink socket in",
                        name: name.to_owned(),
                        source,
                    })?,
                );
            }
            Ok(out)
        },
    );
    let mut all = Vec::with_capacity(names.len());
    for part in made {
        all.extend(part?);
    }
    Ok(all)
}

/// Deletes a named namespace (unmount, remove the file). The kernel frees it once nothing else
/// holds it. A missing namespace is not an error.
///
/// # Errors
/// When the mount cannot be removed.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
        Err(e) => return Err(nix_err("unmounting", name)(e)),
    }
    match fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", name)(e)),
    }
}

/// The most threads deleting namespaces at once (see [`delete_all`]).
const DELETERS_MAX: usize = 16;

/// Deletes the named namespaces (see [`delete`]), on twice as many threads as there are CPUs
/// (at most [`DELETERS_MAX`]); results in the order of `names`. Each unmount waits for an RCU
/// grace period after it lets go of the mount table (`namespace_unlock` →
/// `synchronize_rcu_expedited`), about 0.9 ms while the kernel frees the namespaces deleted
/// before: 7–9 s of a 10,000-node `down` one after the other. Unmounts waiting at the same
/// time share a grace period; more threads than that contend for the mount table and the
/// CPUs freeing namespaces (10,000-node chain, 2 CPUs: 1 thread 7.0–7.6 s, 2: 4.1 s, 4:
/// 2.2–3.0 s, 6: 3.4 s, 8: 3.8–4.5 s, 16: 4.6–5.0 s).
#[must_use]
pub fn delete_all(names: &[&str]) -> Vec<Result<(), NetnsError>> {
    // a few namespaces are not worth a thread
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let threads = names
        .len()
        .div_ceil(32)
        .clamp(1, (2 * cpus).min(DELETERS_MAX));
    if threads == 1 {
        return names.iter().map(|name| delete(name)).collect();
    }
    crate::threads::in_chunks(names, threads, |names| {
        names.iter().map(|name| delete(name)).collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// The network sysctls (`/proc/sys/net`) of the calling thread's namespace.
///
/// Open it once per namespace and write through it: every namespace adds its own `net`
/// entry under `/proc/sys`, all in one dentry hash chain, so each lookup from `/proc/sys`
/// costs as much as there are namespaces; lookups below `net` do not. [`ProcSys`] avoids
/// even that one long lookup.
pub struct NetSysctls(OwnedFd);

impl NetSysctls {
    /// Opens `/proc/sys/net` of the calling thread's namespace.
    ///
    /// # Errors
    /// When procfs is not mounted.
    pub fn open() -> io::Result<NetSysctls> {
        File::open("/proc/sys/net").map(|f| NetSysctls(f.into()))
    }

    /// Writes `value` to `key`, a path below `/proc/sys/net` (`ipv4/ip_forward`).
    ///
    /// # Errors
    /// When the key does not exist (`NotFound`) or refuses the value.
    pub fn write(&self, key: &str, value: &str) -> io::Result<()> {
        use nix::fcntl::{OFlag, openat};
        use nix::sys::stat::Mode;
        let fd = openat(
            &self.0,
            key,
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("sysctl net/{key}: {e}")))?;
        let mut f = File::from(fd);
        io::Write::write_all(&mut f, value.as_bytes())
            .map_err(|e| io::Error::new(e.kind(), format!("sysctl net/{key}={value}: {e}")))
    }
}

/// Opens the network sysctls of namespace after namespace (on one thread) without the cost
/// that grows with the number of namespaces.
///
/// Every namespace's `net` directory is a dentry named `net` under the same `/proc/sys`, so
/// they all share one hash chain, and opening `/proc/sys/net` walks it: with 2,000
/// namespaces that walk was a quarter of `up`. Dentries belong to a procfs instance, though:
/// this opens `sys/net` through a procfs instance of its own, created with the new mount API
/// and never attached to any mount namespace (nothing appears in the host's mount table),
/// and replaces the instance every [`ProcSys::REFRESH`] namespaces so the chain stays short.
/// Where the kernel lacks the new mount API, it falls back to `/proc/sys/net`.
pub struct ProcSys {
    instance: Option<OwnedFd>,
    uses: usize,
}

impl ProcSys {
    /// Namespaces looked up through one procfs instance before it is replaced (each
    /// replacement costs an RCU grace period when the old one goes).
    pub const REFRESH: usize = 32;

    /// Namespaces below which the shared `/proc/sys/net` is cheaper than an instance of
    /// procfs of its own (making one, and letting it go, costs more than a few long lookups).
    pub const FEW: usize = 8;

    #[must_use]
    pub fn new() -> ProcSys {
        ProcSys {
            instance: None,
            uses: 0,
        }
    }

    /// For `namespaces` namespaces to come: a private procfs instance only when they are not
    /// [`ProcSys::FEW`].
    #[must_use]
    pub fn for_namespaces(namespaces: usize) -> ProcSys {
        ProcSys {
            instance: None,
            uses: if namespaces < Self::FEW {
                usize::MAX
            } else {
                0
            },
        }
    }

    /// The sysctls of the calling thread's (current) network namespace.
    ///
    /// # Errors
    /// When neither a private instance nor `/proc/sys/net` can be opened.
    pub fn net(&mut self) -> io::Result<NetSysctls> {
        use nix::fcntl::{OFlag, openat};
        use nix::sys::stat::Mode;
        if self.uses == usize::MAX {
            return NetSysctls::open();
        }
        if self.uses.is_multiple_of(Self::REFRESH) {
            self.instance = detached_procfs().ok();
        }
        self.uses += 1;
        match &self.instance {
            Some(root) => openat(
                root,
                "sys/net",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map(NetSysctls)
            .map_err(io::Error::from),
            None => NetSysctls::open(),
        }
    }
}

impl Default for ProcSys {
    fn default() -> Self {
        ProcSys::new()
    }
}

/// A new procfs instance, mounted nowhere: `fsopen("proc")`, `fsconfig(CREATE)`,
/// `fsmount()`. Returns the mount's root; closing it frees the instance.
fn detached_procfs() -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
    const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
    const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
    let check = |ret: libc::c_long| {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    };
    // SAFETY: fsopen reads a NUL-terminated name and returns a new descriptor or -1
    let fs = check(unsafe { libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: `fs` was just returned by fsopen and is owned by nothing else
    let fs = unsafe { OwnedFd::from_raw_fd(i32::try_from(fs).map_err(io::Error::other)?) };
    // SAFETY: the CREATE command takes no key or value (null pointers, 0)
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount takes the configured context and flags, returns a new descriptor
    let mnt = check(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )
    })?;
    // SAFETY: `mnt` was just returned by fsmount and is owned by nothing else
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(mnt).map_err(io::Error::other)?) })
}

/// The processes living in any of the given namespaces (by the inode of their network
/// namespace), found with one scan of `/proc`, as `ip netns pids` does.
#[must_use]
pub fn processes_in(namespaces: &[&str]) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt as _;
    let inodes: std::collections::HashSet<u64> = namespaces
        .iter()
        .filter_map(|n| fs::metadata(path(n)).ok())
        .map(|m| m.ino())
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| u32::try_from(pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| inodes.contains(&m.ino()))
        })
        .collect()
}

/// Stops processes and waits until they have exited: `SIGTERM`, up to `grace` for them to
/// go, then `SIGKILL` for the rest, and up to as long again for those. Returns how many were
/// stopped and what went wrong. A process that exits (or becomes a zombie) counts as gone:
/// a zombie holds no namespace, socket or file.
#[must_use]
pub fn stop_processes(pids: &[i32], grace: std::time::Duration) -> (usize, Vec<String>) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut errors = Vec::new();
    // pidfds first: a pid reused after the process exits is never signalled
    let mut alive: Vec<(i32, OwnedFd)> = pids
        .iter()
        .filter_map(|&pid| pidfd_open(pid).ok().map(|fd| (pid, fd)))
        .collect();
    let count = alive.len();
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        for (pid, fd) in &alive {
            if let Err(e) = pidfd_send_signal(fd, signal)
                && e.raw_os_error() != Some(libc::ESRCH)
            {
                // fall back to kill(2) where pidfds cannot signal
                if let Err(e) = kill(Pid::from_raw(*pid), signal)
                    && e != nix::Error::ESRCH
                {
                    errors.push(format!("stopping process {pid} ({signal}): {e}"));
                }
            }
        }
        let deadline = std::time::Instant::now() + grace;
        alive.retain(|(_, fd)| !exited_by(fd, deadline));
        if alive.is_empty() {
            break;
        }
    }
    for (pid, _) in &alive {
        errors.push(format!(
            "process {pid} did not exit within {grace:.0?} of SIGKILL"
        ));
    }
    (count, errors)
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: pidfd_open takes a pid and flags, returns a new descriptor or -1
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned by the kernel, owned by nothing else
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).map_err(io::Error::other)?) })
}

fn pidfd_send_signal(fd: &OwnedFd, signal: nix::sys::signal::Signal) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(fd, sig, info = NULL, flags = 0)
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until the process of `fd` has exited (its pidfd turns readable) or `deadline`.
fn exited_by(fd: &OwnedFd, deadline: std::time::Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one pollfd, valid for the call
        let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if r > 0 {
            return true;
        }
        if r == 0 || left.is_zero() {
            return false;
        }
        // EINTR: poll again
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    /// Removes the names it was given, pass or fail.
    struct Names(Vec<String>);

    /// `count` names `<tag><pid>-<i>` for a test to make in `/run/netns` (removed when
    /// dropped), or `None` without root.
    fn names(tag: &str, count: usize) -> Option<Names> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (names in {NETNS_DIR})");
            return None;
        }
        prepare_dir().unwrap();
        let prefix = format!("{tag}{}", std::process::id());
        Some(Names((0..count).map(|i| format!("{prefix}-{i}")).collect()))
    }

    impl Drop for Names {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = fs::remove_file(path(name));
            }
        }
    }

    /// Mount points made one after the other are names of one file (no inode each), each
    /// removed on its own; where unnamed files cannot be had, each is a file of its own; a
    /// name taken says so.
    #[test]
    fn mount_points_are_links_to_one_file_each_removed_on_its_own() {
        let Some(names) = names("zz-mp", 4) else {
            return;
        };
        let mut points = MountPoints::default();
        for name in &names.0[..3] {
            points.make(name).unwrap();
        }
        let meta: Vec<fs::Metadata> = names.0[..3]
            .iter()
            .map(|n| fs::metadata(path(n)).unwrap())
            .collect();
        assert!(meta.iter().all(|m| m.ino() == meta[0].ino()), "one file");
        assert_eq!(meta[0].nlink(), 3);
        assert!(matches!(
            points.make(&names.0[1]),
            Err(NetnsError::Exists { .. })
        ));
        fs::remove_file(path(&names.0[0])).unwrap();
        assert!(!exists(&names.0[0]));
        assert!(exists(&names.0[1]) && exists(&names.0[2]));
        assert_eq!(fs::metadata(path(&names.0[1])).unwrap().nlink(), 2);

        let mut files = MountPoints {
            files_only: true,
            ..MountPoints::default()
        };
        files.make(&names.0[3]).unwrap();
        let own = fs::metadata(path(&names.0[3])).unwrap();
        assert_ne!(own.ino(), meta[0].ino());
        assert_eq!(own.nlink(), 1);
    }

    /// Namespaces deleted on threads are all deleted, each result in its name's place; a name
    /// not there is no error.
    #[test]
    fn namespaces_deleted_on_threads_are_all_gone() {
        let Some(names) = names("zz-del", 200) else {
            return;
        };
        let mut points = MountPoints::default();
        // one a namespace, the others bare names, the last two never made
        create_on_this_thread(&mut points, &names.0[0], current().unwrap().as_fd(), || {
            Ok(())
        })
        .unwrap();
        for name in &names.0[1..198] {
            points.make(name).unwrap();
        }
        let all: Vec<&str> = names.0.iter().map(String::as_str).collect();
        let results = delete_all(&all);
        assert_eq!(results.len(), all.len());
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(all.iter().all(|name| !exists(name)));
    }
}
