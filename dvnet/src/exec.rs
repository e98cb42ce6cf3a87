//! `dvnet exec NET NODE -- CMD`: runs a command inside a node, the way `ip netns exec` does —
//! in the node's network namespace, in a private mount namespace where the node's
//! `/etc/netns/<ns>/*` files are bind-mounted over `/etc` and `/sys` shows the node's
//! interfaces. The command replaces dvnet, so its exit code is the caller's.
//!
//! Must be called before any other thread exists (unsharing the mount namespace needs a
//! single-threaded process).

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::AsFd as _;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::netns;
use crate::runtime::netns::etc_dir as etc_netns_dir;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("the command is empty")]
    Empty,
    #[error("a NUL byte in {0:?}")]
    Nul(String),
}

fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> ExecError {
    let op = op.into();
    move |source| ExecError::Sys { op, source }
}

/// Replaces the process with `docker exec` into a container node (`-t` when this is a
/// terminal), the way users reach containers anyway.
///
/// # Errors
/// When the docker client cannot be started.
pub fn exec_in_container(container: &str, command: &[String]) -> Result<Infallible, ExecError> {
    use std::io::IsTerminal as _;
    let mut argv: Vec<String> = vec!["docker".into(), "exec".into(), "-i".into()];
    if std::io::stdin().is_terminal() {
        argv.push("-t".into());
    }
    argv.push(container.to_owned());
    if command.is_empty() {
        argv.extend([
            "sh".into(),
            "-c".into(),
            "command -v bash >/dev/null && exec bash || exec sh".into(),
        ]);
    } else {
        argv.extend(command.iter().cloned());
    }
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| ExecError::Nul(a.clone())))
        .collect::<Result<_, _>>()?;
    nix::unistd::execvp(&argv[0], &argv)
        .map_err(sys("running docker exec (is the docker client installed?)"))
}

/// Enters namespace `ns` and replaces the process with `command` (a login shell when empty).
/// `frr`: the router's FRR directory, if it runs FRR from the host: its UTS namespace is
/// entered and the directory shows as `/etc/frr` and `/run/frr`, so `vtysh` reaches it.
///
/// # Errors
/// Entering the namespace or starting the command fails.
pub fn exec_in(ns: &str, frr: Option<&Path>, command: &[String]) -> Result<Infallible, ExecError> {
    let fd = netns::open(ns)?;
    setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(sys(format!("entering namespace {ns}")))?;
    let frr = frr.filter(|d| d.join("uts").exists());
    if let Some(dir) = frr {
        let uts = std::fs::File::open(dir.join("uts")).map_err(|e| ExecError::Sys {
            op: format!("opening {}", dir.join("uts").display()),
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        setns(uts.as_fd(), CloneFlags::CLONE_NEWUTS)
            .map_err(sys("entering the router's UTS namespace"))?;
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(sys("creating a mount namespace"))?;
    // Keep our mounts from propagating back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("making / a slave mount"))?;
    // /sys of this namespace (as `ip netns exec`): tools that read /sys/class/net see the node.
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(
            Some(ns),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    if let Some(dir) = frr {
        for target in ["/etc/frr", "/run/frr"] {
            if Path::new(target).is_dir() {
                mount(
                    Some(dir),
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(sys(format!("bind-mounting {} on {target}", dir.display())))?;
            }
        }
    }
    let etc = etc_netns_dir(ns);
    if let Ok(entries) = std::fs::read_dir(&etc) {
        for entry in entries.flatten() {
            let target = Path::new("/etc").join(entry.file_name());
            if target.exists() {
                mount(
                    Some(&entry.path()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(sys(format!("bind-mounting {}", entry.path().display())))?;
            }
        }
    }
    let argv: Vec<String> = if command.is_empty() {
        let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/bash".into());
        vec![shell, "-i".into()]
    } else {
        command.to_vec()
    };
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| ExecError::Nul(a.clone())))
        .collect::<Result<_, _>>()?;
    let program = argv.first().ok_or(ExecError::Empty)?;
    nix::unistd::execvp(program, &argv)
        .map_err(sys(format!("running {}", program.to_string_lossy())))
}
