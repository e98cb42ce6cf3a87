//! Starting FRR in the routers that run a routing protocol (`"routing": "ospf"`, or a router's
//! own `frr_config`), once their interfaces, addresses and datapath are in place.
//!
//! - A container router (image `dvnet/router`): the configuration goes to `/etc/frr/frr.conf`
//!   and the image's `dvnet-frr start <daemons>` starts zebra, staticd and the daemons, then
//!   applies it with `vtysh -b`.
//! - A namespace router uses the host's FRR: one directory per router,
//!   `/run/dvnet/<id>/frr/<node>/`, holds its configuration, sockets, pid files and logs; the
//!   daemons run inside the router's network namespace and a UTS namespace of its own (so
//!   vtysh and shells show the router's name). `dvnet exec` mounts that directory over
//!   `/etc/frr` and `/run/frr`, so a plain `vtysh` talks to this router's daemons.
//!
//! The eBPF routers find the routes FRR installs in the kernel through `bpf_fib_lookup`.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use futures::{StreamExt as _, TryStreamExt as _, stream};

use crate::docker::Containers;
use crate::netns;
use crate::plan::{FrrPlan, NodePlan, Plan};
use crate::state;

/// Where the host's FRR daemons are.
pub const FRR_LIB: &str = "/usr/lib/frr";

#[derive(Debug, thiserror::Error)]
pub enum FrrError {
    #[error("router {router}: reading its FRR configuration {path}: {source}")]
    Config {
        router: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "router {router} runs FRR, but {FRR_LIB}/zebra is missing on this host\n\
         hint: `./setup.sh` installs FRR (Debian's frr package)"
    )]
    NotInstalled { router: String },
    #[error("router {router}: {op}: {detail}")]
    Start {
        router: String,
        op: String,
        detail: String,
    },
}

/// The FRR daemons a configuration needs, beyond zebra and staticd: one per `router <proto>`.
#[must_use]
pub fn daemons(config: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for line in config.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let daemon = match words.as_slice() {
            ["router", "ospf", ..] => "ospfd",
            ["router", "ospf6", ..] => "ospf6d",
            ["router", "bgp", ..] => "bgpd",
            ["router", "rip", ..] => "ripd",
            ["router", "ripng", ..] => "ripngd",
            ["router", "isis", ..] => "isisd",
            ["router", "eigrp", ..] => "eigrpd",
            ["router", "babel", ..] => "babeld",
            _ => continue,
        };
        if !out.contains(&daemon) {
            out.push(daemon);
        }
    }
    out
}

/// A router's FRR directory (namespace routers).
#[must_use]
pub fn dir(id: &str, node: &NodePlan) -> PathBuf {
    state::dir(id).join("frr").join(&node.netns)
}

/// Starts FRR in every router that asks for it, a few at a time.
///
/// # Errors
/// A configuration cannot be read, FRR is missing, or a daemon does not start.
pub async fn start(plan: &Plan, docker: Option<&Containers>) -> Result<usize, FrrError> {
    let routers: Vec<(&NodePlan, String)> = plan
        .nodes
        .iter()
        .filter_map(|n| Some((n, n.frr.as_ref()?)))
        .map(|(n, frr)| match frr {
            FrrPlan::Generated { config } => Ok((n, config.clone())),
            FrrPlan::File { path } => {
                std::fs::read_to_string(path)
                    .map(|c| (n, c))
                    .map_err(|source| FrrError::Config {
                        router: n.name.clone(),
                        path: path.display().to_string(),
                        source,
                    })
            }
        })
        .collect::<Result<_, _>>()?;
    let count = routers.len();
    stream::iter(routers)
        .map(|(node, config)| async move {
            if node.container {
                let docker = docker.expect("container nodes come with a Docker connection");
                in_container(docker, node, &config).await
            } else {
                let id = plan.id.clone();
                let node = node.clone();
                tokio::task::spawn_blocking(move || in_namespace(&id, &node, &config))
                    .await
                    .expect("FRR starter panicked")
            }
        })
        .buffer_unordered(8)
        .try_collect::<()>()
        .await?;
    Ok(count)
}

async fn in_container(docker: &Containers, node: &NodePlan, config: &str) -> Result<(), FrrError> {
    let daemons = daemons(config).join(" ");
    let script = format!(
        "command -v dvnet-frr >/dev/null || {{ echo 'this image has no dvnet-frr: use dvnet/router' >&2; exit 3; }}; \
         umask 027 && printf '%s' \"$DVNET_FRR_CONF\" > /etc/frr/frr.conf && chown frr:frr /etc/frr/frr.conf && \
         exec dvnet-frr start {daemons}"
    );
    let err = |op: &str, detail: String| FrrError::Start {
        router: node.name.clone(),
        op: op.to_owned(),
        detail,
    };
    let exec = docker
        .client()
        .create_exec(
            &node.netns,
            CreateExecOptions {
                cmd: Some(vec!["sh".to_owned(), "-c".to_owned(), script]),
                env: Some(vec![format!("DVNET_FRR_CONF={config}")]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..CreateExecOptions::default()
            },
        )
        .await
        .map_err(|e| err("docker exec", e.to_string()))?;
    let mut output = String::new();
    if let StartExecResults::Attached {
        output: mut out, ..
    } = docker
        .client()
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| err("docker exec", e.to_string()))?
    {
        while let Some(Ok(chunk)) = out.next().await {
            output.push_str(&chunk.to_string());
        }
    }
    let code = docker
        .client()
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| err("docker exec", e.to_string()))?
        .exit_code;
    if code == Some(0) {
        Ok(())
    } else {
        Err(err(
            "dvnet-frr start",
            format!("exit {code:?}: {}", output.trim()),
        ))
    }
}

fn in_namespace(id: &str, node: &NodePlan, config: &str) -> Result<(), FrrError> {
    let err = |op: &str, detail: String| FrrError::Start {
        router: node.name.clone(),
        op: op.to_owned(),
        detail,
    };
    if !Path::new(FRR_LIB).join("zebra").exists() {
        return Err(FrrError::NotInstalled {
            router: node.name.clone(),
        });
    }
    let dir = dir(id, node);
    let (uid, gid) = frr_user()
        .ok_or_else(|| err("finding the frr user", "no user `frr` on this host".into()))?;
    let io = |op: &'static str| move |e: std::io::Error| err(op, e.to_string());
    std::fs::create_dir_all(&dir).map_err(io("creating its directory"))?;
    for (file, text) in [
        ("frr.conf", config),
        ("vtysh.conf", "service integrated-vtysh-config\n"),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(io("writing its configuration"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
            .map_err(io("writing its configuration"))?;
        nix::unistd::chown(&path, Some(uid), Some(gid)).map_err(|e| err("chown", e.to_string()))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750))
        .map_err(io("creating its directory"))?;
    nix::unistd::chown(&dir, Some(uid), Some(gid)).map_err(|e| err("chown", e.to_string()))?;

    let net = netns::open(&node.netns).map_err(|e| err("opening its namespace", e.to_string()))?;
    let uts = uts_namespace(&dir.join("uts"), &crate::docker::hostname(&node.name))
        .map_err(io("creating its UTS namespace"))?;
    let d = dir.display().to_string();
    for daemon in ["zebra", "staticd"].into_iter().chain(daemons(config)) {
        let mut cmd = Command::new(Path::new(FRR_LIB).join(daemon));
        cmd.args([
            "-d",
            "-F",
            "traditional",
            "-P",
            "0",
            "-f",
            "/dev/null",
            "--vty_socket",
            &d,
        ])
        .args([
            "-z",
            &format!("{d}/zserv.api"),
            "-i",
            &format!("{d}/{daemon}.pid"),
        ])
        .args([
            "--log",
            &format!("file:{d}/{daemon}.log"),
            "--log-level",
            "informational",
        ]);
        if daemon == "zebra" {
            // a netlink receive buffer big enough for full route dumps
            cmd.args(["-s", "90000000"]);
        }
        run_inside(&mut cmd, &net, &uts)
            .map_err(|e| err(&format!("starting {daemon} (see {d}/{daemon}.log)"), e))?;
        let socket = dir.join(format!("{daemon}.vty"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(err(
                    &format!("starting {daemon}"),
                    format!("no {} after 5 s (see {d}/{daemon}.log)", socket.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut vtysh = Command::new("vtysh");
    vtysh.args(["--vty_socket", &d, "--config_dir", &d, "-b"]);
    run_inside(&mut vtysh, &net, &uts).map_err(|e| err("applying its configuration (vtysh -b)", e))
}

/// The frr user and group of the host.
fn frr_user() -> Option<(nix::unistd::Uid, nix::unistd::Gid)> {
    let user = nix::unistd::User::from_name("frr").ok()??;
    let group = nix::unistd::Group::from_name("frr")
        .ok()
        .flatten()
        .map_or(user.gid, |g| g.gid);
    Some((user.uid, group))
}

/// A UTS namespace with `hostname`, kept alive by a bind mount at `file`.
fn uts_namespace(file: &Path, hostname: &str) -> std::io::Result<OwnedFd> {
    std::fs::File::create(file)?;
    std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)?;
            nix::unistd::sethostname(hostname)?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/uts"),
                file,
                Some("none"),
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    Ok(std::fs::File::open(file)?.into())
}

/// Runs a command to completion inside the router's network and UTS namespaces.
fn run_inside(cmd: &mut Command, net: &OwnedFd, uts: &OwnedFd) -> Result<(), String> {
    let (net, uts) = (net.as_fd().as_raw_fd(), uts.as_fd().as_raw_fd());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns is async-signal-safe; the descriptors outlive the spawn.
    unsafe {
        cmd.pre_exec(move || {
            for (fd, kind) in [(net, libc::CLONE_NEWNET), (uts, libc::CLONE_NEWUTS)] {
                if libc::setns(fd, kind) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_owned())
    }
}

/// Unmounts the UTS namespaces of a network's namespace routers (before its record goes).
#[must_use]
pub fn release(id: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(state::dir(id).join("frr")) else {
        return errors;
    };
    for entry in entries.flatten() {
        let uts = entry.path().join("uts");
        if uts.exists() {
            match nix::mount::umount2(&uts, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
                Err(e) => errors.push(format!("unmounting {}: {e}", uts.display())),
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemons_follow_the_configuration() {
        assert_eq!(daemons("router ospf\n ospf router-id 1.1.1.1\n"), ["ospfd"]);
        assert_eq!(
            daemons("router bgp 65000\n!\nrouter ospf\n!\nrouter bgp 65000 vrf x\n"),
            ["bgpd", "ospfd"]
        );
        assert!(daemons("interface eth0\n ip address 10.0.0.1/24\n").is_empty());
    }
}
