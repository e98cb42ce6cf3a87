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

use crate::netns;
use crate::plan::{FrrPlan, NodePlan, Plan};
use crate::runtime::docker::Containers;
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

/// The largest FRR configuration dvnet reads.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The configuration of every router that runs FRR (by node index), read before anything is
/// created.
#[derive(Clone, Debug, Default)]
pub struct Configs(Vec<(usize, Config)>);

/// One router's FRR configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub text: String,
    /// The user's own file (its contents never appear in an error), or `None` when dvnet
    /// wrote it.
    pub file: Option<PathBuf>,
}

/// Checks, before anything is created, what starting FRR will need in the routers `starts`
/// picks: the host's FRR and its user for namespace routers, and each configuration, read
/// now.
///
/// # Errors
/// FRR or its user is missing, or a configuration cannot be read.
pub fn preflight(plan: &Plan, starts: impl Fn(&NodePlan) -> bool) -> Result<Configs, FrrError> {
    let mut configs = Vec::new();
    for (i, node) in plan.nodes.iter().enumerate() {
        let Some(frr) = &node.frr else { continue };
        if !starts(node) {
            continue;
        }
        if !node.container {
            if !Path::new(FRR_LIB).join("zebra").exists() {
                return Err(FrrError::NotInstalled {
                    router: node.name.clone(),
                });
            }
            if frr_user().is_none() {
                return Err(FrrError::Start {
                    router: node.name.clone(),
                    op: "finding the frr user".into(),
                    detail: "no user `frr` on this host (Debian's frr package makes it)".into(),
                });
            }
        }
        let config = match frr {
            FrrPlan::Generated { config } => Config {
                text: config.clone(),
                file: None,
            },
            FrrPlan::File { path } => Config {
                text: read_config(path).map_err(|source| FrrError::Config {
                    router: node.name.clone(),
                    path: path.display().to_string(),
                    source,
                })?,
                file: Some(path.clone()),
            },
        };
        configs.push((i, config));
    }
    Ok(Configs(configs))
}

/// A configuration file: a regular file of at most [`MAX_CONFIG_BYTES`] of UTF-8 text.
fn read_config(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned());
    // Validation resolved every link in the path: a link put in its place since is refused
    // (O_NOFOLLOW), and a FIFO does not block the open (O_NONBLOCK).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(invalid("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid("larger than 1 MiB"));
    }
    String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text"))
}

/// What an error may say of FRR's complaints about a configuration: everything, for one dvnet
/// wrote; for a user's own file, only which lines FRR refused (FRR quotes them, and the file
/// was read as root).
fn complaint(config: &Config, output: &str) -> String {
    let Some(file) = &config.file else {
        return output.to_owned();
    };
    let mut lines: Vec<u32> = Vec::new();
    for (i, _) in output.match_indices("line ") {
        let digits: String = output[i + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse()
            && !lines.contains(&n)
        {
            lines.push(n);
        }
    }
    let which = if lines.is_empty() {
        String::new()
    } else {
        let l: Vec<String> = lines.iter().map(ToString::to_string).collect();
        format!(
            " at line{} {}",
            if l.len() == 1 { "" } else { "s" },
            l.join(", ")
        )
    };
    format!(
        "FRR refused {}{which}; `vtysh --dryrun -f {}` shows why",
        file.display(),
        file.display()
    )
}

/// Starts FRR in every router that asks for it, a few at a time.
///
/// # Errors
/// A daemon does not start, or FRR refuses a configuration.
pub async fn start(
    plan: &Plan,
    configs: &Configs,
    docker: Option<&Containers>,
) -> Result<usize, FrrError> {
    let count = configs.0.len();
    stream::iter(&configs.0)
        .map(|(i, config)| async move {
            let node = &plan.nodes[*i];
            if node.container {
                let docker = docker.expect("container nodes come with a Docker connection");
                in_container(docker, node, config).await
            } else {
                let id = plan.id.clone();
                let node = node.clone();
                let config = config.clone();
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

async fn in_container(
    docker: &Containers,
    node: &NodePlan,
    config: &Config,
) -> Result<(), FrrError> {
    let daemons = daemons(&config.text).join(" ");
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
                env: Some(vec![format!("DVNET_FRR_CONF={}", config.text)]),
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
            format!("exit {code:?}: {}", complaint(config, output.trim())),
        ))
    }
}

fn in_namespace(id: &str, node: &NodePlan, config: &Config) -> Result<(), FrrError> {
    let (config, text) = (config, config.text.as_str());
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
        ("frr.conf", text),
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
    let uts = uts_namespace(
        &dir.join("uts"),
        &crate::runtime::docker::hostname(&node.name),
    )
    .map_err(io("creating its UTS namespace"))?;
    let d = dir.display().to_string();
    for daemon in ["zebra", "staticd"].into_iter().chain(daemons(text)) {
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
    run_inside(&mut vtysh, &net, &uts).map_err(|e| {
        err(
            "applying its configuration (vtysh -b)",
            complaint(config, &e),
        )
    })
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

/// Stops FRR in one router (its configuration changed, or it no longer runs FRR): the
/// daemons get SIGTERM and are waited for; a namespace router's FRR directory goes too.
///
/// # Errors
/// When the daemons cannot be stopped.
pub async fn stop(id: &str, node: &NodePlan, docker: Option<&Containers>) -> Result<(), FrrError> {
    let err = |op: &str, detail: String| FrrError::Start {
        router: node.name.clone(),
        op: op.to_owned(),
        detail,
    };
    if node.container {
        let docker = docker.expect("container nodes come with a Docker connection");
        let exec = docker
            .client()
            .create_exec(
                &node.netns,
                CreateExecOptions {
                    cmd: Some(vec!["dvnet-frr".to_owned(), "stop".to_owned()]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..CreateExecOptions::default()
                },
            )
            .await
            .map_err(|e| err("docker exec", e.to_string()))?;
        if let StartExecResults::Attached { mut output, .. } = docker
            .client()
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| err("docker exec", e.to_string()))?
        {
            while output.next().await.is_some() {}
        }
        return Ok(());
    }
    let dir = dir(id, node);
    let pids: Vec<i32> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect();
    let (_, errors) = netns::stop_processes(&pids, std::time::Duration::from_secs(3));
    if let Some(e) = errors.into_iter().next() {
        return Err(err("stopping its daemons", e));
    }
    release_one(&dir).map_err(|e| err("removing its directory", e))
}

/// Unmounts a namespace router's UTS namespace and removes its FRR directory.
fn release_one(dir: &Path) -> Result<(), String> {
    let uts = dir.join("uts");
    if uts.exists() {
        match nix::mount::umount2(&uts, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
            Err(e) => return Err(format!("unmounting {}: {e}", uts.display())),
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Releases the FRR directories of routers that are gone (their daemons died with their
/// namespaces).
#[must_use]
pub fn release_nodes(id: &str, nodes: &[&NodePlan]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| !n.container)
        .filter_map(|n| release_one(&dir(id, n)).err())
        .collect()
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
