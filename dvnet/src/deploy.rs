//! `up` and `down`: applying a [`Plan`] to the kernel, and removing everything a network
//! owns.
//!
//! `up` validates everything it can before it creates anything (root, no network of that id
//! already up, no leftover namespace in the way), records the network as `creating`, then
//! builds: namespaces (on a few dedicated threads, each node's sysctls set from inside it and
//! a netlink socket opened there), bridges, one veth pair per link created directly in its two
//! namespaces, then addresses and routes in every node, concurrently and bounded. If any step
//! fails, everything the network owns is removed again. `down` discovers what belongs to the
//! network by name (so it works after a crash) and removes it, carrying on past errors.

use std::collections::BTreeSet;
use std::io::IsTerminal as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt as _, TryStreamExt as _, stream};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::{debug, info, instrument};

use crate::datapath::ebpf::{self, Loaded};
use crate::datapath::{entries, kernel};
use crate::docker::Containers;
use crate::netlink::{Netlink, NetlinkError, VethEnd};
use crate::netns::{self, NetnsError};
use crate::plan::{Datapath, FabricPort, LinkPlan, NodeKind, Plan, Segment, naming};
use crate::state::{self, State, StateError, Status};
use crate::topology::Routing;
use dvnet_common::programs;

/// Netlink requests in flight at once.
const CONCURRENCY: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("dvnet {0} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); try `sudo dvnet {0} ...`")]
    NotRoot(&'static str),
    #[error("network {id} is already up; `dvnet down {id}` removes it first")]
    AlreadyUp { id: String },
    #[error(
        "the name {ours:?} gives the id {id}, which network {theirs:?} already has; rename this \
         network, or `dvnet down {id}` removes the other one"
    )]
    IdTaken {
        id: String,
        ours: String,
        theirs: String,
    },
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(
        "network {id} was not torn down completely ({leftovers} leftover namespace(s), e.g. {example}); \
         `dvnet down {id}` removes them"
    )]
    Leftovers {
        id: String,
        leftovers: usize,
        example: String,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Entries(#[from] crate::datapath::entries::EntriesError),
    #[error(transparent)]
    Docker(#[from] crate::docker::DockerError),
    #[error(transparent)]
    Frr(#[from] crate::frr::FrrError),
    #[error(transparent)]
    Outbound(#[from] crate::outbound::OutboundError),
    #[error(transparent)]
    Bpf(#[from] crate::datapath::ebpf::BpfError),
    #[error(transparent)]
    KernelFirewall(#[from] crate::datapath::kernel::KernelFirewallError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{error}\n(everything `up` had created was removed again{})", cleanup_note(.cleanup))]
    RolledBack {
        #[source]
        error: Box<DeployError>,
        cleanup: Vec<String>,
    },
}

fn cleanup_note(problems: &[String]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!("; but: {}", problems.join("; "))
    }
}

/// Options of `up`.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// The topology file, recorded for `dvnet ls`.
    pub source: Option<PathBuf>,
    /// Show progress bars (on a terminal).
    pub progress: bool,
}

/// What `up` did and how long each phase took.
#[derive(Clone, Debug, Default)]
pub struct UpReport {
    pub namespaces: usize,
    /// Routers where FRR was started.
    pub frr_routers: usize,
    pub links: usize,
    pub phases: Vec<(&'static str, Duration)>,
}

/// What `down` removed.
#[derive(Clone, Debug, Default)]
pub struct DownReport {
    pub namespaces: usize,
    /// Processes that were still running inside the nodes.
    pub processes: usize,
    /// Containers removed.
    pub containers: usize,
    pub record: bool,
    /// Problems met on the way (teardown carries on past them).
    pub errors: Vec<String>,
}

impl DownReport {
    /// Whether there was anything to remove.
    #[must_use]
    pub fn found_anything(&self) -> bool {
        self.namespaces > 0 || self.record || self.containers > 0
    }
}

fn require_root(command: &'static str) -> Result<(), DeployError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(DeployError::NotRoot(command))
    }
}

/// Raises the open-file limit to its hard maximum: `up` holds two descriptors per node.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The sysctls (below `/proc/sys/net`) of a node, set from inside its namespace before any interface exists (new
/// interfaces take the `default` values). New namespaces copy `net.ipv4.conf.{all,default}`
/// from the host's, so everything that matters is set explicitly.
fn node_sysctls(ip_forward: bool, fib_fallback: bool) -> Vec<(&'static str, &'static str)> {
    let mut sysctls = if fib_fallback {
        // An eBPF router fed by a routing daemon. FRR installs no transit routes unless it
        // reads `ip_forward` as 1, and the program looks routes up in the kernel's FIB as if
        // packets came in on `lo`, which needs forwarding there. The kernel decides forwarding
        // per device: `ip_forward` sets every device (lo included) and the default, and the
        // default back to 0 leaves every interface created later not forwarding. So the
        // kernel forwards nothing; the program does.
        vec![
            ("ipv4/ip_forward", "1"),
            ("ipv4/conf/default/forwarding", "0"),
        ]
    } else {
        vec![("ipv4/ip_forward", if ip_forward { "1" } else { "0" })]
    };
    sysctls.extend([
        // IPv6 is not supported yet: without this, router solicitations, MLD and DAD chatter
        // would land on every link and in every counter.
        ("ipv6/conf/all/disable_ipv6", "1"),
        ("ipv6/conf/default/disable_ipv6", "1"),
        // Labs route asymmetrically on purpose at times; reverse-path filtering would drop it.
        ("ipv4/conf/all/rp_filter", "0"),
        ("ipv4/conf/default/rp_filter", "0"),
        // Every traceroute probe deserves its answer.
        ("ipv4/icmp_ratelimit", "0"),
    ]);
    sysctls
}

fn fabric_sysctls() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ipv4/ip_forward", "0"),
        ("ipv6/conf/all/disable_ipv6", "1"),
        ("ipv6/conf/default/disable_ipv6", "1"),
    ]
}

/// A namespace to create and how to set it up.
struct NsJob {
    name: String,
    sysctls: Vec<(&'static str, &'static str)>,
    /// A container's main process, whose namespace is adopted instead of a new one.
    adopt: Option<u32>,
}

/// A created namespace: its descriptor and a netlink socket inside it.
struct NsCreated {
    fd: OwnedFd,
    socket: OwnedFd,
}

/// Creates namespaces on `workers` dedicated threads; results in job order.
fn create_namespaces(
    jobs: &[NsJob],
    workers: usize,
    bar: &ProgressBar,
) -> Result<Vec<NsCreated>, NetnsError> {
    let chunk = jobs.len().div_ceil(workers.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|jobs| {
                s.spawn(move || -> Result<Vec<NsCreated>, NetnsError> {
                    let home = netns::current().map_err(|source| NetnsError::Io {
                        op: "opening",
                        name: "the current namespace".into(),
                        source,
                    })?;
                    let mut out = Vec::with_capacity(jobs.len());
                    let mut proc_sys = netns::ProcSys::new();
                    for job in jobs {
                        let init = || {
                            let sysctls = proc_sys.net()?;
                            for (key, value) in &job.sysctls {
                                // Some keys are absent on some kernels (no IPv6); the ones that
                                // matter exist everywhere dvnet runs.
                                if let Err(e) = sysctls.write(key, value)
                                    && e.kind() != std::io::ErrorKind::NotFound
                                {
                                    return Err(e);
                                }
                            }
                            crate::netlink::socket_here()
                        };
                        let (fd, socket) = match job.adopt {
                            Some(pid) => {
                                netns::adopt_on_this_thread(&job.name, pid, home.as_fd(), init)?
                            }
                            None => netns::create_on_this_thread(&job.name, home.as_fd(), init)?,
                        };
                        out.push(NsCreated { fd, socket });
                        bar.inc(1);
                    }
                    Ok(out)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(jobs.len());
        let mut first_err = None;
        for h in handles {
            match h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
                Ok(v) => all.extend(v),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(all),
        }
    })
}

fn progress(enabled: bool, len: usize, what: &'static str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what);
    bar
}

/// Builds the network described by `plan`.
///
/// # Errors
/// Not root, the network is already up, or a kernel operation fails (then everything created
/// so far is removed again, and the error says so).
#[instrument(skip_all, fields(net = %plan.id))]
pub async fn up(plan: &Plan, options: &UpOptions) -> Result<UpReport, DeployError> {
    require_root("up")?;
    state::check_id(&plan.id)?;
    trusted_roots()?;
    // one operation per network: a second `up` waits here, then finds the network up
    let lock = lock_network(&plan.id, "up")?;
    let result = up_locked(plan, options).await;
    // a refused or rolled-back `up` leaves nothing, its lock file included
    if let Err(e) = &result
        && e.left_nothing()
    {
        lock.remove_file();
    }
    result
}

impl DeployError {
    /// Whether the network does not exist after this error: refused before anything was
    /// created, or rolled back cleanly.
    fn left_nothing(&self) -> bool {
        match self {
            DeployError::AlreadyUp { .. }
            | DeployError::IdTaken { .. }
            | DeployError::Leftovers { .. } => false,
            DeployError::RolledBack { cleanup, .. } => cleanup.is_empty(),
            _ => true,
        }
    }
}

async fn up_locked(plan: &Plan, options: &UpOptions) -> Result<UpReport, DeployError> {
    let id = plan.id.clone();
    match State::load(&id) {
        Ok(record) if record.plan.name != plan.name => {
            return Err(DeployError::IdTaken {
                id,
                ours: plan.name.clone(),
                theirs: record.plan.name,
            });
        }
        Ok(_) => return Err(DeployError::AlreadyUp { id }),
        Err(_) if netns::exists(&plan.fabric_netns) => return Err(DeployError::AlreadyUp { id }),
        Err(_) => {}
    }
    let leftovers: Vec<String> = netns::list()
        .map_err(|source| DeployError::Io {
            op: "listing namespaces".into(),
            source,
        })?
        .into_iter()
        .filter(|n| naming::belongs_to(n, &id))
        .collect();
    let mut leftovers = leftovers;
    if ebpf::check_pins(&id)? {
        leftovers.push(ebpf::pin_dir(&id).display().to_string());
    }
    leftovers.extend(etc_netns_of(&id).iter().map(|d| d.display().to_string()));
    if let Some(example) = leftovers.first() {
        return Err(DeployError::Leftovers {
            id,
            leftovers: leftovers.len(),
            example: example.clone(),
        });
    }
    raise_fd_limit();
    // The datapath is checked before anything exists: its map entries, then the kernel's
    // verdict on the programs. Loading changes nothing on the host.
    let entries = entries::entries(plan)?;
    let loaded = tokio::task::block_in_place(|| Loaded::new(&entries, plan.link_slots()))?;
    // Outbound access: nftables there, no clash with the host's routes, ports free.
    if let Some(uplink) = &plan.uplink {
        // published ports only collide within one host (namespace)
        let here = host_netns_inode();
        let others: Vec<Plan> = State::ids()?
            .iter()
            .filter_map(|i| State::load(i).ok())
            .filter(|s| s.host.as_ref().is_some_and(|h| h.netns == here))
            .map(|s| s.plan)
            .collect();
        let host = host_netlink()?;
        let host_routes = host.routes().await?;
        let prefixes: Vec<ipnet::Ipv4Net> = host_routes
            .iter()
            .filter_map(crate::inspect::route_prefix)
            .collect();
        if host.index_of(&uplink.host_ifname).await.is_ok() {
            return Err(crate::outbound::OutboundError::InterfaceTaken {
                name: uplink.host_ifname.clone(),
            }
            .into());
        }
        crate::outbound::preflight(plan, &prefixes, &others)?;
    }
    // Container nodes need a daemon, their images and their names, checked before anything
    // is created.
    let docker = if plan.nodes.iter().any(|n| n.container) {
        let docker = Containers::connect().await?;
        docker.check_images(plan).await?;
        docker.check_names(plan).await?;
        Some(docker)
    } else {
        None
    };
    // FRR: installed, its user there, every configuration readable.
    let frr_configs = crate::frr::preflight(plan)?;

    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut record = State {
        version: state::VERSION,
        status: Status::Creating,
        source: options.source.clone(),
        created,
        pid: std::process::id(),
        plan: plan.clone(),
        // what will change on the host, recorded before it is made (preflight found none of
        // it there): a rollback or `down` undoes exactly this
        host: plan.uplink.as_ref().map(|u| crate::outbound::HostChanges {
            netns: host_netns_inode(),
            uplink: Some(u.host_ifname.clone()),
            ..crate::outbound::HostChanges::default()
        }),
    };
    record.save()?;

    let built = match build(plan, options, &loaded, docker.as_ref(), &frr_configs).await {
        Ok(report) if plan.uplink.is_some() => host_side(plan, &mut record).map(|()| report),
        other => other,
    };
    match built {
        Ok(report) => {
            record.status = Status::Up;
            if let Err(e) = record.save() {
                let cleanup = teardown(&id).await.errors;
                return Err(DeployError::RolledBack {
                    error: Box::new(e.into()),
                    cleanup,
                });
            }
            Ok(report)
        }
        Err(error) if std::env::var_os("DVNET_NO_ROLLBACK").is_some_and(|v| v == "1") => {
            tracing::warn!(
                "up failed; DVNET_NO_ROLLBACK=1 keeps what was built for inspection (`dvnet down {id}` removes it)"
            );
            Err(error)
        }
        Err(error) => {
            info!("up failed, rolling back: {error}");
            let cleanup = teardown(&id).await.errors;
            Err(DeployError::RolledBack {
                error: Box::new(error),
                cleanup,
            })
        }
    }
}

async fn build<'a>(
    plan: &'a Plan,
    options: &UpOptions,
    loaded: &Loaded,
    docker: Option<&Containers>,
    frr_configs: &crate::frr::Configs,
) -> Result<UpReport, DeployError> {
    let mut report = UpReport::default();
    let mut phase_start = Instant::now();
    let mut phase = |report: &mut UpReport, name: &'static str| {
        let now = Instant::now();
        report.phases.push((name, now - phase_start));
        info!(
            phase = name,
            elapsed_ms = (now - phase_start).as_millis(),
            "phase done"
        );
        phase_start = now;
    };

    netns::prepare_dir()?;
    // namespaces: the fabric first, then one per node (in plan order)
    // containers first: their namespaces are adopted below
    let containers = match docker {
        Some(docker) => docker.create(plan).await?,
        None => Vec::new(),
    };
    if !containers.is_empty() {
        phase(&mut report, "containers");
    }
    let mut jobs = vec![NsJob {
        name: plan.fabric_netns.clone(),
        sysctls: fabric_sysctls(),
        adopt: None,
    }];
    let pids: std::collections::HashMap<usize, u32> = containers.into_iter().collect();
    jobs.extend(plan.nodes.iter().enumerate().map(|(i, n)| NsJob {
        name: n.netns.clone(),
        sysctls: node_sysctls(
            n.ip_forward,
            n.kind == NodeKind::Router
                && plan.datapath == Datapath::Ebpf
                && plan.routing != Routing::Static,
        ),
        adopt: pids.get(&i).copied(),
    }));
    let bar = progress(options.progress, jobs.len(), "namespaces");
    let workers = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(1, 4);
    let created = tokio::task::block_in_place(|| create_namespaces(&jobs, workers, &bar))?;
    bar.finish_and_clear();
    report.namespaces = created.len();
    phase(&mut report, "namespaces");

    let mut created = created.into_iter();
    let fabric = created
        .next()
        .expect("the fabric namespace was created first");
    let fabric_nl = Netlink::from_socket(fabric.socket, &plan.fabric_netns).map_err(|source| {
        DeployError::Io {
            op: "opening netlink in the fabric".into(),
            source,
        }
    })?;
    let nodes: Vec<(OwnedFd, Netlink)> = created
        .zip(&plan.nodes)
        .map(|(c, n)| {
            Netlink::from_socket(c.socket, &n.netns)
                .map(|nl| (c.fd, nl))
                .map_err(|source| DeployError::Io {
                    op: format!("opening netlink in {}", n.netns),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;

    // segments
    let bridges = plan.subnets.iter().filter_map(|s| match &s.segment {
        Segment::Bridge { name, ifindex } => Some((name, *ifindex)),
        Segment::PointToPoint | Segment::Empty => None,
    });
    stream::iter(bridges)
        .map(|(name, ifindex)| fabric_nl.add_bridge(name, ifindex))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
    phase(&mut report, "bridges");

    let node_prog = loaded.program_fd(programs::NODE_INGRESS);
    let fabric_prog = loaded.program_fd(programs::FABRIC_INGRESS);

    // wires: one veth each, both ends created in place by one message (fabric ports get
    // their counting program right away)
    let wires = wires(plan);
    let bar = progress(options.progress, wires.len(), "links");
    stream::iter(&wires)
        .map(|wire| {
            let fabric_nl = &fabric_nl;
            let bar = &bar;
            let node_end = |link: &'a LinkPlan| VethEnd {
                name: &link.ifname,
                ifindex: link.ifindex,
                mac: link.mac,
                netns: Some(nodes[link.node].0.as_fd()),
                master: None,
            };
            async move {
                match *wire {
                    Wire::ToBridge { link, port, bridge } => {
                        let fabric_end = VethEnd {
                            name: &port.ifname,
                            ifindex: port.ifindex,
                            mac: port.mac,
                            netns: None,
                            master: Some(bridge),
                        };
                        fabric_nl.add_veth(&fabric_end, &node_end(link)).await?;
                        fabric_nl.add_clsact(port.ifindex).await?;
                    }
                    Wire::PointToPoint(a, b) => {
                        fabric_nl.add_veth(&node_end(a), &node_end(b)).await?;
                    }
                }
                bar.inc(1);
                Ok::<_, DeployError>(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
    bar.finish_and_clear();
    report.links = plan.links.len();
    phase(&mut report, "links");

    if let Some(uplink) = &plan.uplink {
        uplink_interface(plan, uplink, &fabric_nl).await?;
        phase(&mut report, "uplink");
    }

    // inside every node: loopback and interfaces up, addresses, then routes
    let bar = progress(options.progress, plan.nodes.len(), "addresses");
    stream::iter(plan.nodes.iter().zip(&nodes))
        .map(|(node, (_, nl))| {
            let bar = &bar;
            async move {
                nl.set_up(1).await?;
                for link in plan.links_of(node) {
                    nl.set_up(link.ifindex).await?;
                    nl.add_address(link.ifindex, link.address, link.prefix_len)
                        .await?;
                }
                for r in &node.routes {
                    nl.add_route(r.dest, r.via, plan.links[r.link as usize].ifindex)
                        .await?;
                }
                for link in plan.links_of(node) {
                    nl.add_clsact(link.ifindex).await?;
                }
                bar.inc(1);
                Ok::<_, DeployError>(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
    bar.finish_and_clear();
    phase(&mut report, "addresses+routes");

    // Programs are attached in a pass of their own, once every clsact qdisc exists: the
    // first filter on a qdisc waits for an RCU grace period since the qdisc was created
    // (`mini_qdisc_pair_swap`); by now one has passed for nearly all of them, instead of
    // an expedited grace period per interface.
    let on_nodes = plan.links.iter().map(|link| {
        (
            &nodes[link.node].1,
            link.ifindex,
            node_prog,
            programs::NODE_INGRESS,
        )
    });
    let on_fabric = plan.links.iter().filter_map(|link| {
        let port = link.fabric_port.as_ref()?;
        Some((
            &fabric_nl,
            port.ifindex,
            fabric_prog,
            programs::FABRIC_INGRESS,
        ))
    });
    stream::iter(on_nodes.chain(on_fabric))
        .map(|(nl, ifindex, prog, name)| nl.attach_ingress(ifindex, prog, name))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
    phase(&mut report, "programs");

    loaded.pin(&ebpf::pin_dir(&plan.id))?;
    if plan.datapath == Datapath::Kernel {
        kernel_firewalls(plan).await?;
    }
    phase(&mut report, "datapath");

    report.frr_routers = crate::frr::start(plan, frr_configs, docker).await?;
    if report.frr_routers > 0 {
        phase(&mut report, "frr");
    }

    if plan.update_hosts {
        write_hosts_files(plan)?;
        phase(&mut report, "hosts files");
    }
    debug!(
        routers = plan
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Router)
            .count(),
        "network built"
    );
    Ok(report)
}

/// A netlink handle in the namespace dvnet runs in (the host's).
fn host_netlink() -> Result<Netlink, DeployError> {
    let socket = crate::netlink::socket_here().map_err(|source| DeployError::Io {
        op: "opening netlink".into(),
        source,
    })?;
    Netlink::from_socket(socket, "the host").map_err(|source| DeployError::Io {
        op: "opening netlink".into(),
        source,
    })
}

/// The inode of the calling thread's network namespace (which host a change was made on).
fn host_netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
}

/// The host's end of the uplink: a veth from the uplink bridge into the host's namespace,
/// its address, and routes to the network's subnets through the border routers.
async fn uplink_interface(
    plan: &Plan,
    uplink: &crate::plan::UplinkPlan,
    fabric_nl: &Netlink,
) -> Result<(), DeployError> {
    let home = netns::current().map_err(|source| DeployError::Io {
        op: "opening the host namespace".into(),
        source,
    })?;
    let Segment::Bridge {
        ifindex: bridge, ..
    } = plan.subnets[uplink.subnet].segment
    else {
        unreachable!("the uplink is always a bridge");
    };
    let port = &uplink.fabric_port;
    let fabric_end = VethEnd {
        name: &port.ifname,
        ifindex: port.ifindex,
        mac: port.mac,
        netns: None,
        master: Some(bridge),
    };
    let host_end = VethEnd {
        name: &uplink.host_ifname,
        ifindex: 0,
        mac: crate::plan::naming::mac_for(uplink.host_address, false),
        netns: Some(home.as_fd()),
        master: None,
    };
    fabric_nl.add_veth(&fabric_end, &host_end).await?;
    let host = host_netlink()?;
    let index = host.index_of(&uplink.host_ifname).await?;
    host.set_up(index).await?;
    host.add_address(
        index,
        uplink.host_address,
        plan.subnets[uplink.subnet].cidr.prefix_len(),
    )
    .await?;
    for (dest, via) in &uplink.host_routes {
        host.add_route(*dest, *via, index).await?;
    }
    Ok(())
}

/// Forwarding, NAT and FORWARD accepts on the host, recorded before they are made so a
/// rollback or `down` can undo them.
fn host_side(plan: &Plan, record: &mut State) -> Result<(), DeployError> {
    // forwarding and NAT are shared by the host's networks: one changes them at a time
    let _host = lock_host(&plan.id)?;
    let mut changes = record.host.clone().unwrap_or_default();
    changes.netns = host_netns_inode();
    changes.forwarding_before = crate::outbound::forwarding_snapshot();
    changes.nft_table = Some(crate::outbound::table_name(&plan.id));
    // recorded first: if applying fails halfway, `down` knows what to restore
    record.host = Some(changes.clone());
    record.save()?;
    let result = crate::outbound::apply(plan, &mut changes);
    record.host = Some(changes);
    record.save()?;
    result.map_err(DeployError::from)
}

/// The iptables rules of every router with a firewall (kernel datapath), a few at a time.
async fn kernel_firewalls(plan: &Plan) -> Result<(), DeployError> {
    let jobs: Vec<(String, crate::plan::FirewallPlan)> = plan
        .nodes
        .iter()
        .filter_map(|n| {
            let fw = n.firewall.as_ref()?;
            (!fw.rules.is_empty() || fw.policy == crate::topology::Policy::Drop)
                .then(|| (n.netns.clone(), fw.clone()))
        })
        .collect();
    stream::iter(jobs)
        .map(|(ns, fw)| tokio::task::spawn_blocking(move || kernel::apply(&ns, &fw)))
        .buffer_unordered(4)
        .map(|joined| {
            joined
                .expect("iptables worker panicked")
                .map_err(DeployError::from)
        })
        .try_collect::<()>()
        .await
}

/// A veth pair to create.
enum Wire<'a> {
    /// A link on a bridged segment and its fabric port.
    ToBridge {
        link: &'a LinkPlan,
        port: &'a FabricPort,
        bridge: u32,
    },
    /// The two links of a point-to-point segment.
    PointToPoint(&'a LinkPlan, &'a LinkPlan),
}

fn wires(plan: &Plan) -> Vec<Wire<'_>> {
    let mut wires = Vec::with_capacity(plan.links.len());
    for subnet in &plan.subnets {
        let links = subnet.links.iter().map(|&l| &plan.links[l as usize]);
        match &subnet.segment {
            Segment::Empty => {}
            Segment::PointToPoint => {
                let pair: Vec<&LinkPlan> = links.collect();
                wires.push(Wire::PointToPoint(pair[0], pair[1]));
            }
            Segment::Bridge { ifindex, .. } => {
                wires.extend(links.map(|link| {
                    Wire::ToBridge {
                        link,
                        port: link
                            .fabric_port
                            .as_ref()
                            .expect("a bridged link has a fabric port"),
                        bridge: *ifindex,
                    }
                }));
            }
        }
    }
    wires
}

/// `/etc/netns/<ns>/hosts` for every node, the `ip netns exec` convention (`dvnet exec`
/// bind-mounts it over `/etc/hosts`).
fn write_hosts_files(plan: &Plan) -> Result<(), DeployError> {
    let text = plan.hosts_file();
    for node in &plan.nodes {
        let dir = etc_netns_dir(&node.netns);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("hosts"), &text))
            .map_err(|source| DeployError::Io {
                op: format!("writing {}/hosts", dir.display()),
                source,
            })?;
    }
    Ok(())
}

/// Per-namespace configuration files (`ip netns exec` convention).
#[must_use]
pub fn etc_netns_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// The `/etc/netns` directories of network `id` (all of them, whether or not their
/// namespaces still exist).
fn etc_netns_of(id: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/etc/netns") else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| naming::belongs_to(n, id))
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Refuses to go on when dvnet's record root or pin root could have been planted by someone
/// else (see [`state::check_dir`]); creates nothing.
fn trusted_roots() -> Result<(), StateError> {
    state::check_dir(std::path::Path::new(state::STATE_DIR))?;
    state::check_dir(&crate::lock::dir())?;
    state::check_dir(std::path::Path::new(ebpf::PIN_ROOT))?;
    Ok(())
}

/// Takes network `id`'s lock for `operation`, saying so when another operation holds it.
fn lock_network(id: &str, operation: &str) -> Result<crate::lock::Lock, DeployError> {
    Ok(crate::lock::Lock::acquire(id, operation, |holder| {
        let who = holder.map_or_else(|| "another dvnet".to_owned(), |h| h.to_string());
        tracing::warn!("network {id} is busy: waiting for {who} to finish");
    })?)
}

/// Takes the host's lock (forwarding, NAT) on behalf of network `id`.
fn lock_host(id: &str) -> Result<crate::lock::Lock, DeployError> {
    Ok(crate::lock::Lock::acquire(
        crate::lock::HOST,
        &format!("up/down {id} (host side)"),
        |holder| {
            if let Some(h) = holder {
                tracing::warn!("the host side is busy: waiting for {h}");
            }
        },
    )?)
}

/// Whether process `pid` is alive.
fn alive(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
}

/// How long stopped processes get to exit after SIGTERM (and again after SIGKILL).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Removes everything network `id` owns: its namespaces (nodes first, then the fabric), its
/// per-namespace files and its record. Idempotent; carries on past errors and reports them.
/// The caller holds the network's lock and has checked `id`.
async fn teardown(id: &str) -> DownReport {
    let mut report = DownReport::default();
    let record = State::load(id).ok();
    let names: BTreeSet<String> = match netns::list() {
        Ok(all) => all
            .into_iter()
            .filter(|n| naming::belongs_to(n, id))
            .collect(),
        Err(e) => {
            report.errors.push(format!("listing namespaces: {e}"));
            BTreeSet::new()
        }
    };
    let fabric = naming::fabric_netns(id);
    // Containers (found by label, so also after a crash); only if a daemon answers: without
    // one, no container of ours can be running.
    // An `up` that died while creating containers may have left creations in flight in
    // Docker: follow them until they settle.
    let settle_since = record
        .as_ref()
        .filter(|r| r.status == Status::Creating && !alive(r.pid))
        .filter(|r| r.plan.nodes.iter().any(|n| n.container))
        .map(|r| r.created);
    if let Ok(docker) = Containers::connect().await {
        match docker.remove_network(id, settle_since).await {
            Ok((removed, errors)) => {
                report.containers = removed;
                report.errors.extend(errors);
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    // Processes left running inside the nodes (a server started with `dvnet exec`) would keep
    // their namespaces alive, unseen, after the mounts are gone: they belong to the network.
    // They are stopped (SIGTERM, then SIGKILL) and waited for: when `down` returns, none runs.
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (stopped, errors) = netns::stop_processes(&netns::processes_in(&name_refs), STOP_GRACE);
    report.processes = stopped;
    report.errors.extend(errors);
    // nodes first, then the fabric: links die with the node namespaces
    let ordered: Vec<&String> = names
        .iter()
        .filter(|n| **n != fabric)
        .chain(names.get(&fabric))
        .collect();
    for name in ordered {
        match netns::delete(name) {
            Ok(()) => report.namespaces += 1,
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    // by the network's prefix: also those of namespaces that are gone already
    for dir in etc_netns_of(id) {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            report
                .errors
                .push(format!("removing {}: {e}", dir.display()));
        }
    }
    // The host side of outbound access, exactly as recorded (nothing when nothing was): the
    // uplink veth goes with the fabric namespace; the NAT table, FORWARD accepts and
    // forwarding are undone here, one network at a time.
    let changes = record.as_ref().and_then(|r| r.host.clone());
    report
        .errors
        .extend(undo_host_side(id, changes.as_ref()).await);

    // Pins last: the programs die with the namespaces' interfaces, the maps with the pins.
    match ebpf::check_pins(id) {
        Ok(true) => {
            report.record = true;
            if let Err(e) = ebpf::remove_pins(id) {
                report.errors.push(e.to_string());
            }
        }
        Ok(false) => {}
        Err(e) => report.errors.push(e.to_string()),
    }
    report.record |= record.is_some() || state::check_dir(&state::dir(id)).unwrap_or(false);
    // the UTS namespaces of namespace routers running FRR are mounted inside the record
    report.errors.extend(crate::frr::release(id));
    if let Err(e) = State::remove(id) {
        report.errors.push(e.to_string());
    }
    report
}

/// Undoes what network `id` recorded changing on the host (`changes`), under the host lock.
async fn undo_host_side(id: &str, changes: Option<&crate::outbound::HostChanges>) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(changes) = changes else {
        return errors;
    };
    let _host = match lock_host(id) {
        Ok(lock) => lock,
        Err(e) => return vec![e.to_string()],
    };
    let changes = Some(changes.clone());
    let others: Vec<State> = State::ids()
        .unwrap_or_default()
        .into_iter()
        .filter(|other| other != id)
        .filter_map(|other| State::load(&other).ok())
        .filter(|other| {
            other.plan.uplink.is_some()
                && changes
                    .as_ref()
                    .is_none_or(|c| other.host.as_ref().is_some_and(|h| h.netns == c.netns))
        })
        .collect();
    // forwarding goes back only when no other network of this host needs it; otherwise the
    // settings to restore pass to one that does
    let restore = others.is_empty();
    if !restore
        && let Some(before) = changes.as_ref().and_then(|c| c.forwarding_before.clone())
        && let Some(mut heir) = others.into_iter().next()
        && let Some(h) = heir.host.as_mut()
    {
        h.forwarding_before = Some(before);
        if let Err(e) = heir.save() {
            errors.push(e.to_string());
        }
    }
    // only where `up` made them: run from another namespace, `down` must not touch this one
    let here = changes
        .as_ref()
        .is_none_or(|c| c.netns == host_netns_inode());
    if here && let Some(name) = changes.as_ref().and_then(|c| c.uplink.as_ref()) {
        // the host's end of the uplink, now rather than when the kernel reclaims the fabric
        if let Ok(host) = host_netlink()
            && let Ok(index) = host.index_of(name).await
            && let Err(e) = host.delete_link(index).await
        {
            errors.push(e.to_string());
        }
    }
    match &changes {
        Some(c) if c.netns != host_netns_inode() => errors.push(format!(
            "network {id} was brought up from another network namespace (inode {}); its NAT table \
             ({}) and forwarding settings there were left alone: run `dvnet down {id}` from that \
             namespace, or remove them there by hand",
            c.netns,
            crate::outbound::table_name(id)
        )),
        _ => errors.extend(crate::outbound::remove(id, changes.as_ref(), restore)),
    }
    errors
}

/// Removes everything network `id` owns (see [`teardown`]), holding its lock: a `down` while
/// an `up` runs waits for it to finish, then removes what it built.
///
/// # Errors
/// Not root, `id` is not a network id, dvnet's directories are untrustworthy, or the lock
/// cannot be taken; problems met while removing are in the report.
pub async fn down(id: &str) -> Result<DownReport, DeployError> {
    require_root("down")?;
    state::check_id(id)?;
    trusted_roots()?;
    let lock = lock_network(id, "down")?;
    let report = teardown(id).await;
    if report.errors.is_empty() {
        lock.remove_file();
    }
    Ok(report)
}

/// Whether stderr is a terminal (progress bars are drawn there).
#[must_use]
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
