//! Applying plans to the machine: [`up`] builds a network from nothing, [`apply`] changes a
//! running one to match an edited file, [`down`] removes one. All three are a diff worked
//! through by one executor, each under the network's lock:
//!
//! - [`preflight`]: everything that can be checked before anything is created or changed.
//! - [`converge`]: the executor (nodes, segments, links, addresses, routes, programs,
//!   firewalls of the kernel datapath), driven by [`crate::plan::diff::Diff`].
//! - [`teardown`]: removing a whole network, or some of its nodes.
//! - [`inventory`]: what a network owns, found by name.
//! - [`progress`]: an observer the caller draws; the library prints nothing.
//!
//! An edit that fails halfway is undone: the executor runs again from where the edit was
//! going back to where it started. A failed `up` removes everything it made.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tracing::{info, instrument};

use crate::datapath::ebpf::{self, Loaded, Pinned};
use crate::datapath::entries;
use crate::frr;
use crate::plan::diff::{self, Diff, FrrChange, HostChange};
use crate::plan::{Datapath, NodePlan, Plan, PlanOptions};
use crate::runtime::NodeRuntime as _;
use crate::runtime::docker::Containers;
use crate::runtime::netns::Namespaces;
use crate::state::{self, State, StateError, Status};
use crate::topology::{Impair, Topology};

mod converge;
pub mod inventory;
mod preflight;
pub mod progress;
mod teardown;

pub use converge::{Counts, node_sysctls};
pub use progress::{Observer, Phase, Silent};
pub use teardown::DownReport;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("dvnet {0} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); try `sudo dvnet {0} ...`")]
    NotRoot(&'static str),
    #[error(
        "network {id} is already up; `dvnet apply FILE` changes it to match an edited file, \
         `dvnet down {id}` removes it"
    )]
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
    #[error(
        "network {id} was not torn down completely ({leftovers} leftover(s), e.g. {example}); \
         `dvnet down {id}` removes them"
    )]
    Leftovers {
        id: String,
        leftovers: usize,
        example: String,
    },
    #[error("network {id} is not up; `dvnet up FILE` builds it")]
    NotUp { id: String },
    #[error(
        "network {id} is placed on several machines, and changing such a lab while it runs is \
         not supported yet; `dvnet down` it and `dvnet up` the edited file on each machine"
    )]
    Placed { id: String },
    #[error(
        "the edit {what} network {id}, which changes every node's IPv6 settings: not \
         supported while it runs; `dvnet down` it and `dvnet up` the edited file"
    )]
    Ipv6Edit { id: String, what: &'static str },
    #[error(
        "the edit changes outbound_access.cidr6 of network {id} (the host's IPv6 end of the \
         uplink {from} → {to}), which changes the host's IPv6 forwarding and NAT66: not \
         supported while it runs; `dvnet down` it and `dvnet up` the edited file"
    )]
    UplinkIpv6Edit {
        id: String,
        from: String,
        to: String,
    },
    #[error(
        "network {id} was left {status} by a dvnet that died (pid {pid}); `dvnet down {id}` \
         removes it, then `dvnet up` builds it again"
    )]
    Unsettled {
        id: String,
        status: String,
        pid: u32,
    },
    #[error(
        "the edit needs {need} entries in eBPF map {map}, which was made for {have} when the \
         network came up; `dvnet down` and `dvnet up` build it with room for this size"
    )]
    Capacity { map: String, need: u64, have: u32 },
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error(transparent)]
    Entries(#[from] crate::datapath::entries::EntriesError),
    #[error(transparent)]
    Docker(#[from] crate::runtime::docker::DockerError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Frr(#[from] crate::frr::FrrError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(transparent)]
    Outbound(#[from] crate::host::OutboundError),
    #[error(transparent)]
    Bpf(#[from] crate::datapath::ebpf::BpfError),
    #[error(transparent)]
    KernelFirewall(#[from] crate::datapath::kernel::KernelFirewallError),
    #[error(transparent)]
    Netlink(#[from] crate::netlink::NetlinkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    #[error("{0}")]
    Attached(String),
    #[error("{0}")]
    Placement(String),
    #[error("{0}")]
    Impair(String),
    #[error(transparent)]
    Delay(#[from] crate::delay::DelayError),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Teardown(String),
    #[error("dvnet bug: {0}")]
    Internal(String),
    #[error("{error}\n(everything `up` had created was removed again{})", note(.cleanup))]
    RolledBack {
        #[source]
        error: Box<ApplyError>,
        cleanup: Vec<String>,
    },
    #[error("{error}\n(the network was put back as it was{})", note(.problems))]
    Restored {
        #[source]
        error: Box<ApplyError>,
        problems: Vec<String>,
    },
}

fn note(problems: &[String]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!("; but: {}", problems.join("; "))
    }
}

impl ApplyError {
    /// Whether the network does not exist after this error: refused before anything was
    /// created, or rolled back cleanly.
    fn left_nothing(&self) -> bool {
        match self {
            ApplyError::AlreadyUp { .. }
            | ApplyError::IdTaken { .. }
            | ApplyError::Leftovers { .. } => false,
            ApplyError::RolledBack { cleanup, .. } => cleanup.is_empty(),
            _ => true,
        }
    }
}

/// Options of `up`.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// The topology file, recorded for `dvnet ls` and `apply`.
    pub source: Option<PathBuf>,
    /// Its text, kept in the record (the Docker driver plans it again as containers join).
    pub source_text: Option<String>,
}

/// What `up` or `apply` did and how long each phase took (`up --json`, benchmarks).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub network: String,
    pub seconds: f64,
    pub phases: Vec<Phase>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Routers where FRR was started (or restarted).
    pub frr_routers: usize,
    /// eBPF map entries written or deleted.
    pub map_entries: usize,
}

fn require_root(command: &'static str) -> Result<(), ApplyError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(ApplyError::NotRoot(command))
    }
}

/// Raises the open-file limit to its hard maximum: `up` holds two descriptors per node.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Takes network `id`'s lock for `operation`, telling the observer when another operation
/// holds it.
fn lock_network(
    id: &str,
    operation: &str,
    observer: &dyn Observer,
) -> Result<crate::lock::Lock, ApplyError> {
    Ok(crate::lock::Lock::acquire(id, operation, |holder| {
        let who = holder.map_or_else(|| "another dvnet".to_owned(), |h| h.to_string());
        let what = format!("network {id} is busy: waiting for {who} to finish");
        tracing::warn!("{what}");
        observer.waiting(&what);
    })?)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Builds the network described by `plan`.
///
/// # Errors
/// Not root, the network is already up, or a step fails (then everything created so far is
/// removed again, and the error says so).
#[instrument(skip_all, fields(net = %plan.id))]
pub async fn up(
    plan: &Plan,
    options: &UpOptions,
    observer: &dyn Observer,
) -> Result<Report, ApplyError> {
    require_root("up")?;
    state::check_id(&plan.id)?;
    preflight::roots()?;
    // one operation per network: a second `up` waits here, then finds the network up
    let lock = lock_network(&plan.id, "up", observer)?;
    let result = up_locked(plan, options, observer).await;
    // a refused or rolled-back `up` leaves nothing, its lock file included
    if let Err(e) = &result
        && e.left_nothing()
    {
        lock.remove_file();
    }
    result
}

async fn up_locked(
    plan: &Plan,
    options: &UpOptions,
    observer: &dyn Observer,
) -> Result<Report, ApplyError> {
    let started = Instant::now();
    let id = plan.id.clone();
    preflight::nothing_there(plan)?;
    preflight::placement(plan)?;
    raise_fd_limit();
    // The datapath is checked before anything exists: its map entries, then the kernel's
    // verdict on the programs. Loading changes nothing on the host.
    let entries = entries::entries(plan)?;
    let mut loaded =
        tokio::task::block_in_place(|| Loaded::new(&entries, plan.link_slots(), plan.ipv6))?;
    preflight::host(plan, None).await?;
    let all: Vec<&NodePlan> = plan.nodes.iter().collect();
    let docker = preflight::runtimes(plan, &all, true, false).await?;
    let frr_configs = preflight::frr(plan, &diff::diff(None, Some(plan)), docker.as_ref()).await?;

    let mut record = State {
        version: state::VERSION,
        status: Status::Creating,
        source: options.source.clone(),
        created: now(),
        pid: std::process::id(),
        plan: plan.clone(),
        // what will change on the host, recorded before it is made (preflight found none of
        // it there): a rollback or `down` undoes exactly this
        host: plan.uplink.as_ref().map(|u| crate::host::HostChanges {
            netns: crate::host::netns_inode(),
            uplink: Some(u.host_ifname.clone()),
            ..crate::host::HostChanges::default()
        }),
        source_text: options.source_text.clone(),
        attached: Vec::new(),
        impair_overrides: Vec::new(),
    };
    record.save()?;

    let mut phases = progress::Phases::new(observer);
    let empty = Plan::empty(&id);
    let changes = diff::diff(None, Some(plan));
    let built = async {
        let (node_prog, fabric_prog, delay_prog) = (
            loaded.program_fd(dvnet_common::programs::NODE_INGRESS),
            loaded.program_fd(dvnet_common::programs::FABRIC_INGRESS),
            loaded.program_fd(dvnet_common::programs::DELAY_RETURN),
        );
        let ctx = converge::Ctx {
            old: &empty,
            new: plan,
            diff: &changes,
            mode: converge::Mode::Forward,
            docker: docker.as_ref(),
            node_prog,
            fabric_prog,
            delay_prog,
        };
        let counts = converge::converge(&ctx, &mut phases).await?;
        let lines = crate::delay::lines_of(plan);
        if !lines.is_empty() {
            crate::delay::configure(&id, &plan.fabric_netns, lines)?;
            phases.end("delay line");
        }
        loaded.pin(&ebpf::pin_dir(&id))?;
        phases.end("datapath");
        let frr_routers = frr::start(plan, &frr_configs, docker.as_ref()).await?;
        if frr_routers > 0 {
            phases.end("frr");
        }
        if plan.update_hosts {
            write_hosts(plan, plan.nodes.iter().filter(|n| !n.container))?;
            phases.end("hosts files");
        }
        if plan.uplink.is_some() {
            crate::host::add_nat(plan, &mut record)?;
            phases.end("host side");
        }
        Ok::<_, ApplyError>((counts, frr_routers))
    }
    .await;
    match built {
        Ok((counts, frr_routers)) => {
            record.status = Status::Up;
            if let Err(e) = record.save() {
                let cleanup = teardown::network(&id).await.errors;
                return Err(ApplyError::RolledBack {
                    error: Box::new(e.into()),
                    cleanup,
                });
            }

            Ok(Report {
                network: id,
                seconds: started.elapsed().as_secs_f64(),
                phases: phases.done,
                counts,
                frr_routers,
                map_entries: entries.ifaces.len()
                    + entries.routes.len()
                    + entries.nexthops.len()
                    + entries.classes.len()
                    + entries.rules.len(),
            })
        }
        Err(error) if std::env::var_os("DVNET_NO_ROLLBACK").is_some_and(|v| v == "1") => {
            tracing::warn!(
                "up failed; DVNET_NO_ROLLBACK=1 keeps what was built for inspection (`dvnet down {id}` removes it)"
            );
            Err(error)
        }
        Err(error) => {
            info!("up failed, rolling back: {error}");
            let cleanup = teardown::network(&id).await.errors;
            Err(ApplyError::RolledBack {
                error: Box::new(error),
                cleanup,
            })
        }
    }
}

/// Writes the hosts file (`update_hosts`) of `nodes`.
fn write_hosts<'a>(
    plan: &Plan,
    nodes: impl Iterator<Item = &'a NodePlan>,
) -> Result<(), ApplyError> {
    let text = plan.hosts_file();
    for node in nodes {
        let result = if node.container {
            crate::runtime::docker::write_hosts(node, &text)
        } else {
            Namespaces.write_hosts(node, &text)
        };
        result.map_err(|source| ApplyError::Io {
            op: format!("writing the hosts file of {}", node.name),
            source,
        })?;
    }
    Ok(())
}

/// What `apply` did.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    pub report: Report,
    pub changes: Diff,
    /// eBPF map entries written, by map, for people (`routes +3 -1`).
    pub map_changes: String,
}

/// What an edit starts from.
pub enum Change {
    /// The topology file, edited: its text, parsed. `preloaded` is the network's record as
    /// read earlier (used only if still current).
    File {
        topo: Box<Topology>,
        text: String,
        source: Option<PathBuf>,
        preloaded: Option<Box<(State, state::Stamp)>>,
    },
    /// A container joins a subnet (the Docker driver).
    Attach(state::AttachedHost),
    /// The container of a Docker endpoint leaves.
    Detach { endpoint: String },
    /// Impairments of a subnet (`node` none) or of one member's link, set at run time:
    /// `set`'s values replace those in force (the others kept), or with `clear` none is left.
    Impair {
        subnet: String,
        node: Option<String>,
        set: Impair,
        clear: bool,
    },
    /// A member's link taken down, or up again.
    Link {
        node: String,
        subnet: String,
        down: bool,
    },
}

/// Changes the running network `topo` describes to match it, touching only what changed.
/// `preloaded` is its record as read earlier (it is used only if it is still current).
///
/// # Errors
/// Not root, the network is not up, the edit cannot be made (checked before anything is
/// touched), or a step fails: then the network is put back as it was, and the error says so.
pub async fn apply(
    topo: Topology,
    text: String,
    source: Option<PathBuf>,
    preloaded: Option<(State, state::Stamp)>,
    observer: &dyn Observer,
) -> Result<Applied, ApplyError> {
    let id = topo.id.clone();
    if !topo.machines.is_empty() {
        return Err(ApplyError::Placed { id });
    }
    let change = Change::File {
        topo: Box::new(topo),
        text,
        source,
        preloaded: preloaded.map(Box::new),
    };
    apply_change(&id, change, observer).await
}

/// The topology of a running network as planned: its file's, with the hosts that joined
/// from outside (containers) added to their subnets.
fn with_attached(
    topo: &Topology,
    attached: &[state::AttachedHost],
) -> Result<Topology, ApplyError> {
    let mut topo = topo.clone();
    for a in attached {
        let docker = &a.attachment.docker_network;
        let Some(subnet) = topo.subnets.iter().position(|s| s.name == a.subnet) else {
            return Err(ApplyError::Attached(format!(
                "container {} is attached to subnet {:?} (Docker network {docker}), which the \
                 file no longer has; `docker network disconnect` it first",
                a.name, a.subnet
            )));
        };
        let cidr = topo.subnets[subnet].cidr;
        if !cidr.is_some_and(|c| c.contains(&a.address)) {
            let now = cidr.map_or_else(|| "IPv6-only".to_owned(), |c| c.to_string());
            return Err(ApplyError::Attached(format!(
                "container {} ({}) is attached to subnet {:?}, which is {now} now; \
                 `docker network disconnect` it first",
                a.name, a.address, a.subnet
            )));
        }
        let taken = topo.hosts.iter().any(|h| h.name == a.name)
            || topo.routers.iter().any(|r| r.name == a.name);
        if taken {
            return Err(ApplyError::Attached(format!(
                "the file names a node {:?}, the name of an attached container; rename it",
                a.name
            )));
        }
        topo.hosts.push(crate::topology::Host {
            name: a.name.clone(),
            subnet,
            ip: Some(a.address),
            ip6: None,
            image: None,
            publish: Vec::new(),
            impair: crate::topology::Impair::default(),
            machine: 0,
        });
    }
    Ok(topo)
}

/// Makes an edit of the running network `id`: see [`Change`] and [`apply`].
///
/// # Errors
/// As [`apply`].
#[instrument(skip_all, fields(net = %id))]
pub async fn apply_change(
    id: &str,
    change: Change,
    observer: &dyn Observer,
) -> Result<Applied, ApplyError> {
    require_root("apply")?;
    state::check_id(id)?;
    preflight::roots()?;
    let _lock = lock_network(id, "apply", observer)?;
    raise_fd_limit();
    let started = Instant::now();
    let mut phases = progress::Phases::new(observer);
    let mut change = change;
    let preloaded = match &mut change {
        Change::File { preloaded, .. } => preloaded.take(),
        _ => None,
    };
    // a record read before the lock (while the file was parsed) serves if still current
    let loaded = match preloaded.map(|b| *b) {
        Some((record, stamp)) if state::Stamp::of(id) == Some(stamp) => Ok(record),
        _ => State::load(id),
    };
    let mut record = match loaded {
        Ok(r) => r,
        Err(StateError::NotFound { id }) => return Err(ApplyError::NotUp { id }),
        Err(e) => return Err(e.into()),
    };
    if record.status != Status::Up {
        return Err(ApplyError::Unsettled {
            id: id.to_owned(),
            status: format!("{:?}", record.status).to_lowercase(),
            pid: record.pid,
        });
    }
    if record.plan.machine.is_some() {
        return Err(ApplyError::Placed { id: id.to_owned() });
    }
    // what to plan: the file (edited, or the one the network runs), who is attached, the
    // impairments set at run time and the links taken down
    let mut attached = record.attached.clone();
    let mut overrides = record.impair_overrides.clone();
    let mut downs: Vec<(String, String)> = record
        .plan
        .links
        .iter()
        .filter(|l| l.down)
        .map(|l| {
            (
                record.plan.nodes[l.node].name.clone(),
                record.plan.subnets[l.subnet].name.clone(),
            )
        })
        .collect();
    let mut impair_change = None;
    let mut link_change = None;
    let (base, text, source) = match change {
        Change::File {
            topo, text, source, ..
        } => {
            if record.plan.name != topo.name {
                return Err(ApplyError::IdTaken {
                    id: id.to_owned(),
                    ours: topo.name.clone(),
                    theirs: record.plan.name.clone(),
                });
            }
            // the file's impairments are in force again
            overrides.clear();
            (*topo, Some(text), source)
        }
        Change::Impair {
            subnet,
            node,
            set,
            clear,
        } => {
            impair_change = Some((subnet, node, set, clear));
            (running_topology(&record)?, record.source_text.clone(), None)
        }
        Change::Link { node, subnet, down } => {
            link_change = Some((node, subnet, down));
            (running_topology(&record)?, record.source_text.clone(), None)
        }
        Change::Attach(host) => {
            attached.retain(|a| a.attachment.endpoint != host.attachment.endpoint);
            attached.push(host);
            (running_topology(&record)?, record.source_text.clone(), None)
        }
        Change::Detach { endpoint } => {
            attached.retain(|a| a.attachment.endpoint != endpoint);
            (running_topology(&record)?, record.source_text.clone(), None)
        }
    };
    let mut topo = with_attached(&base, &attached)?;
    // overrides of what is gone since are forgotten
    overrides.retain(|o| impair_slot(&mut topo, &o.subnet, o.node.as_deref()).is_ok());
    for o in &overrides {
        if let Ok(slot) = impair_slot(&mut topo, &o.subnet, o.node.as_deref()) {
            *slot = o.impair;
        }
    }
    if let Some((subnet, node, set, clear)) = impair_change {
        let slot = impair_slot(&mut topo, &subnet, node.as_deref()).map_err(ApplyError::Impair)?;
        let next = if clear {
            Impair::default()
        } else {
            slot.overlaid(&set)
        };
        next.check().map_err(ApplyError::Impair)?;
        *slot = next;
        overrides.retain(|o| !(o.subnet == subnet && o.node == node));
        overrides.push(state::ImpairOverride {
            subnet,
            node,
            impair: next,
        });
    }
    if let Some((node, subnet, down)) = link_change {
        check_member(&topo, &node, &subnet).map_err(ApplyError::Impair)?;
        if attached.iter().any(|a| a.name == node) {
            return Err(ApplyError::Impair(format!(
                "{node} is a container joined through Docker: take its link down with `docker \
                 network disconnect`"
            )));
        }
        downs.retain(|(n, s)| !(*n == node && *s == subnet));
        if down {
            downs.push((node, subnet));
        }
    }
    let old = record.plan.clone();
    phases.end("record read");
    let options = PlanOptions {
        datapath: old.datapath,
        runtime: old.runtime,
    };
    let mut new = Plan::build_from(&topo, options, Some(&old))?;
    new.mark_attached(
        &attached
            .iter()
            .map(|a| (a.name.clone(), a.attachment.clone()))
            .collect::<Vec<_>>(),
    );
    new.mark_down(&downs);
    phases.end("plan");
    if old.ipv6 != new.ipv6 {
        return Err(ApplyError::Ipv6Edit {
            id: id.to_owned(),
            what: if new.ipv6 {
                "gives IPv6 (a first \"cidr6\") to"
            } else {
                "takes IPv6 (its last \"cidr6\") from"
            },
        });
    }
    if let (Some(o), Some(n)) = (&old.uplink, &new.uplink)
        && o.host_address6 != n.host_address6
    {
        let show =
            |a: Option<std::net::Ipv6Addr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
        return Err(ApplyError::UplinkIpv6Edit {
            id: id.to_owned(),
            from: show(o.host_address6),
            to: show(n.host_address6),
        });
    }
    let changes = diff::diff(Some(&old), Some(&new));
    let (old_entries, new_entries) = touched_entries(&old, &new, &changes)?;
    let map_diff = entries::diff(&old, &old_entries, &new, &new_entries);
    phases.end("diff");
    if changes.is_empty() && map_diff.is_empty() {
        if (source.is_some() && record.source != source)
            || record.source_text != text
            || record.attached != attached
            || record.impair_overrides != overrides
        {
            if source.is_some() {
                record.source = source;
            }
            record.source_text = text;
            record.attached = attached;
            record.impair_overrides = overrides;
            record.save()?;
        }
        return Ok(Applied {
            report: Report {
                network: new.id.clone(),
                seconds: started.elapsed().as_secs_f64(),
                ..Report::default()
            },
            changes,
            map_changes: String::new(),
        });
    }

    // ---- checks, before anything changes
    let pinned = Pinned::open(&new.id)?;
    check_capacity(&pinned, &new)?;
    preflight::host(&new, Some(&old)).await?;
    let built = changes.built_nodes();
    let building: Vec<&NodePlan> = new
        .nodes
        .iter()
        .filter(|n| built.contains(n.name.as_str()))
        .collect();
    let needs_docker = old.nodes.iter().chain(&new.nodes).any(|n| n.container);
    let docker = preflight::runtimes(&new, &building, false, needs_docker).await?;
    let frr_configs = preflight::frr(&new, &changes, docker.as_ref()).await?;
    phases.end("checks");

    // ---- the edit, marked first
    if changes.host.contains(&HostChange::AddUplink)
        && let Some(u) = &new.uplink
    {
        // the host changes, recorded before they are made
        record.host = Some(crate::host::HostChanges {
            netns: crate::host::netns_inode(),
            uplink: Some(u.host_ifname.clone()),
            ..crate::host::HostChanges::default()
        });
        record.save()?;
    }
    record.mark_applying()?;
    phases.end("record");
    // the record as it will be, serialized on the other core while the kernel works (the
    // host side may change it on the way: then it is serialized again)
    let done_view = state::StateView {
        version: record.version,
        status: Status::Up,
        source: source.clone().or_else(|| record.source.clone()),
        created: record.created,
        pid: record.pid,
        plan: &new,
        host: record.host.clone(),
        source_text: text.as_deref(),
        attached: &attached,
        impair_overrides: &overrides,
    };
    let (forward, done) = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let serialized = s.spawn(|| done_view.serialize());
            let forward = tokio::runtime::Handle::current().block_on(edit(
                &old,
                &new,
                &changes,
                &map_diff,
                Edit {
                    mode: converge::Mode::Forward,
                    pinned: &pinned,
                    docker: docker.as_ref(),
                    frr: &frr_configs,
                    record: &mut record,
                },
                &mut phases,
            ));
            (
                forward,
                serialized.join().expect("serializing the record panicked"),
            )
        })
    });
    match forward {
        Ok((counts, frr_routers)) => {
            record.status = Status::Up;
            record.source.clone_from(&done_view.source);
            record.source_text.clone_from(&text);
            record.attached.clone_from(&attached);
            record.impair_overrides.clone_from(&overrides);
            if done_view.host == record.host {
                // the record's plan is still the old one in memory: the bytes say the new
                record.save_serialized(&done)?;
            } else {
                record.plan = new.clone();
                record.save()?;
            }
            phases.end("record");
            let applied = Applied {
                report: Report {
                    network: new.id.clone(),
                    seconds: started.elapsed().as_secs_f64(),
                    phases: phases.done,
                    counts,
                    frr_routers,
                    map_entries: map_diff.len(),
                },
                changes,
                map_changes: map_diff.summary(),
            };
            // two whole plans and their entries are many small allocations: they are freed
            // on a thread of their own rather than before the answer
            std::thread::spawn(move || {
                drop((old, new, record, old_entries, new_entries, base, topo));
            });
            Ok(applied)
        }
        Err(error) => {
            info!("apply failed, putting the network back: {error}");
            let back = diff::diff(Some(&new), Some(&old));
            // every key the edit wrote, written back (those of the same nodes)
            let back_maps = entries::diff(&new, &new_entries, &old, &old_entries);
            // FRR of the old plan, for the routers the way back starts it again in
            let back_frr = preflight::frr(&old, &back, None).await.unwrap_or_default();
            let mut problems = Vec::new();
            let mut phases = progress::Phases::new(observer);
            if let Err(e) = edit(
                &new,
                &old,
                &back,
                &back_maps,
                Edit {
                    mode: converge::Mode::Rollback,
                    pinned: &pinned,
                    docker: docker.as_ref(),
                    frr: &back_frr,
                    record: &mut record,
                },
                &mut phases,
            )
            .await
            {
                problems.push(format!(
                    "{e} (`dvnet down {}` removes the network whole)",
                    old.id
                ));
            }
            record.plan = old;
            record.status = Status::Up;
            if let Err(e) = record.save() {
                problems.push(e.to_string());
            }

            Err(ApplyError::Restored {
                error: Box::new(error),
                problems,
            })
        }
    }
}

/// The impairments of subnet `subnet` (`node` none) or of `node`'s link on it.
///
/// # Errors
/// No such subnet, or `node` is not on it (the message says which are).
fn impair_slot<'t>(
    topo: &'t mut Topology,
    subnet: &str,
    node: Option<&str>,
) -> Result<&'t mut Impair, String> {
    let Some(s) = topo.subnets.iter().position(|x| x.name == subnet) else {
        let names: Vec<&str> = topo.subnets.iter().map(|x| x.name.as_str()).collect();
        return Err(format!(
            "no subnet {subnet:?} (the subnets: {})",
            names.join(", ")
        ));
    };
    let Some(node) = node else {
        return Ok(&mut topo.subnets[s].impair);
    };
    check_member(topo, node, subnet)?;
    if let Some(h) = topo.hosts.iter().position(|h| h.name == node) {
        return Ok(&mut topo.hosts[h].impair);
    }
    let r = topo
        .routers
        .iter()
        .position(|r| r.name == node)
        .expect("checked: a member");
    let slot = topo.routers[r]
        .subnets
        .iter()
        .position(|&x| x == s)
        .expect("checked: on the subnet");
    Ok(&mut topo.routers[r].impair[slot])
}

/// `node` is a member of `subnet`.
///
/// # Errors
/// When it is not (the message lists the members).
fn check_member(topo: &Topology, node: &str, subnet: &str) -> Result<(), String> {
    let Some(s) = topo.subnets.iter().position(|x| x.name == subnet) else {
        return Err(format!("no subnet {subnet:?}"));
    };
    let hosts = topo
        .hosts
        .iter()
        .filter(|h| h.subnet == s)
        .map(|h| h.name.as_str());
    let routers = topo
        .routers
        .iter()
        .filter(|r| r.subnets.contains(&s))
        .map(|r| r.name.as_str());
    let members: Vec<&str> = routers.chain(hosts).collect();
    if members.contains(&node) {
        Ok(())
    } else {
        Err(format!(
            "{node:?} is not on subnet {subnet} (its members: {})",
            members.join(", ")
        ))
    }
}

/// The topology a running network was last built or edited from (its file's text, kept in
/// its record).
fn running_topology(record: &State) -> Result<Topology, ApplyError> {
    let text = record.source_text.as_deref().ok_or_else(|| {
        ApplyError::Attached(format!(
            "network {} keeps no copy of its file (it came up with an older dvnet); `dvnet \
             apply FILE` once, then try again",
            record.plan.id
        ))
    })?;
    let origin = record
        .source
        .as_ref()
        .map_or_else(|| record.plan.id.clone(), |p| p.display().to_string());
    Ok(Topology::from_json(text, &origin)?)
}

/// What an edit works with beyond the plans.
struct Edit<'a> {
    mode: converge::Mode,
    pinned: &'a Pinned,
    docker: Option<&'a Containers>,
    frr: &'a frr::Configs,
    record: &'a mut State,
}

/// One edit, `old` → `new`: FRR stopped where it stops, the executor, the maps, FRR started
/// where it starts, hosts files, the host side.
async fn edit(
    old: &Plan,
    new: &Plan,
    changes: &Diff,
    map_diff: &entries::EntriesDiff,
    e: Edit<'_>,
    phases: &mut progress::Phases<'_>,
) -> Result<(Counts, usize), ApplyError> {
    let rollback = e.mode == converge::Mode::Rollback;
    // FRR that stops or restarts, before its router changes
    for c in &changes.frr {
        if let FrrChange::Stop { router } | FrrChange::Restart { router } = c
            && let Some(node) = old.node(router)
        {
            let r = frr::stop(&old.id, node, e.docker).await;
            if !rollback {
                r?;
            }
        }
    }
    let (node_prog, fabric_prog) = e.pinned.programs();
    let ctx = converge::Ctx {
        old,
        new,
        diff: changes,
        mode: e.mode,
        docker: e.docker,
        node_prog,
        fabric_prog,
        delay_prog: e.pinned.delay_program(),
    };
    if new.datapath == Datapath::Ebpf {
        let early = map_diff.own_route_puts();
        if !early.is_empty() {
            e.pinned.write(&early)?;
        }
    }
    let counts = converge::converge(&ctx, phases).await?;
    // the delay line serves the new lines before packets are sent into them...
    let during = crate::delay::lines_during(old, new);
    let lines = crate::delay::lines_of(new);
    if during != lines || !lines.is_empty() {
        crate::delay::configure(&new.id, &new.fabric_netns, during)?;
    }
    // (the near ends of lines that go keep their entries while packets still come back)
    let returning: Vec<u32> = old
        .links
        .iter()
        .flat_map(|l| [&l.into_node, &l.from_node])
        .filter_map(|h| h.delay.as_ref().map(|d| d.ifindex))
        .filter(|i| map_diff.ifaces.delete.contains(i))
        .collect();
    if new.datapath == Datapath::Ebpf || !map_diff.is_empty() {
        if returning.is_empty() {
            e.pinned.write(map_diff)?;
        } else {
            let mut first = map_diff.clone();
            first.ifaces.delete.retain(|i| !returning.contains(i));
            e.pinned.write(&first)?;
        }
        phases.end("map entries");
    }
    // ...and lets go of the old ones once none is
    crate::delay::configure(&new.id, &new.fabric_netns, lines)?;
    if converge::remove_delay_lines(old, new).await? {
        e.pinned.delete_ifaces(&returning)?;
        phases.end("delay lines");
    }
    let frr_routers = frr::start(new, e.frr, e.docker).await?;
    if frr_routers > 0 {
        phases.end("frr");
    }
    if changes.hosts_files {
        write_hosts(new, new.nodes.iter())?;
        phases.end("hosts files");
    } else if new.update_hosts {
        let built = changes.built_nodes();
        write_hosts(
            new,
            new.nodes
                .iter()
                .filter(|n| !n.container && built.contains(n.name.as_str())),
        )?;
    }
    host_side(old, new, changes, e.record).await?;
    if !changes.host.is_empty() {
        phases.end("host side");
    }
    Ok((counts, frr_routers))
}

/// The host side of an edit.
async fn host_side(
    old: &Plan,
    new: &Plan,
    changes: &Diff,
    record: &mut State,
) -> Result<(), ApplyError> {
    for c in &changes.host {
        match c {
            HostChange::AddUplink => {
                // the uplink itself came with the wiring
                crate::host::add_nat(new, record)?;
            }
            HostChange::RemoveUplink => {
                let errors = crate::host::undo(&old.id, record.host.as_ref()).await;
                if let Some(e) = errors.into_iter().next() {
                    return Err(ApplyError::Teardown(e));
                }
                record.host = None;
                record.save()?;
            }
            HostChange::Address { from, .. } => {
                let uplink = new
                    .uplink
                    .as_ref()
                    .expect("an address change has an uplink");
                crate::host::change_address(uplink, *from, new.uplink_cidr().prefix_len()).await?;
            }
            HostChange::Routes { add, remove } => {
                let uplink = new.uplink.as_ref().expect("a route change has an uplink");
                crate::host::change_routes(uplink, add, remove).await?;
            }
            HostChange::Routes6 { add, remove } => {
                let uplink = new.uplink.as_ref().expect("a route change has an uplink");
                crate::host::change_routes(uplink, add, remove).await?;
            }
            HostChange::Nat => {
                let _host = crate::host::lock(&new.id)?;
                crate::host::nat::reload(new)?;
            }
        }
    }
    Ok(())
}

/// The map entries, before and after, of the nodes an edit touches (see [`touched`]): the
/// other nodes' entries are the same in both plans, so comparing these finds every change.
///
/// # Errors
/// A router's rules expand to too many entries.
pub fn touched_entries(
    old: &Plan,
    new: &Plan,
    changes: &Diff,
) -> Result<(entries::MapEntries, entries::MapEntries), entries::EntriesError> {
    let (in_old, in_new) = touched(old, new, changes);
    Ok((
        entries::entries_of(old, in_old)?,
        entries::entries_of(new, in_new)?,
    ))
}

/// The positions, in the old plan and in the new, of the nodes whose map entries an edit
/// may change: those it names (added, removed, recreated; links, routes or firewall
/// changed), and the peers of their veth pairs (a route to a peer carries its MAC).
fn touched(old: &Plan, new: &Plan, changes: &Diff) -> (Vec<usize>, Vec<usize>) {
    use crate::plan::diff::{LinkChange, NodeChange};
    let mut names: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for c in &changes.nodes {
        names.insert(match c {
            NodeChange::Add { node, .. }
            | NodeChange::Remove { node }
            | NodeChange::Recreate { node, .. } => node,
        });
    }
    // subnets whose every member's entries may change: impairments of the segment, a
    // member taken down (routes through it)
    let mut whole: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for c in &changes.links {
        names.insert(match c {
            LinkChange::Add { node, .. }
            | LinkChange::Remove { node, .. }
            | LinkChange::Rewire { node, .. }
            | LinkChange::Address { node, .. }
            | LinkChange::Address6 { node, .. }
            | LinkChange::Impair { node, .. } => node,
            LinkChange::State { node, subnet, .. } => {
                whole.insert(subnet);
                node
            }
        });
    }
    for c in &changes.subnets {
        if let crate::plan::diff::SubnetChange::Impair { subnet, .. } = c {
            whole.insert(subnet);
        }
    }
    for plan in [old, new] {
        for s in plan
            .subnets
            .iter()
            .filter(|s| whole.contains(s.name.as_str()))
        {
            for &l in &s.links {
                names.insert(plan.nodes[plan.links[l as usize].node].name.as_str());
            }
        }
    }
    names.extend(changes.routes.iter().map(|r| r.node.as_str()));
    names.extend(changes.firewalls.iter().map(|f| f.router.as_str()));
    let mut peers = Vec::new();
    for plan in [old, new] {
        for node in plan
            .nodes
            .iter()
            .filter(|n| names.contains(n.name.as_str()))
        {
            for link in plan.links_of(node) {
                if let Some(peer) = plan.peer_of(link) {
                    peers.push(plan.nodes[peer.node].name.as_str());
                }
            }
        }
    }
    names.extend(peers);
    let positions = |plan: &Plan| {
        plan.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| names.contains(n.name.as_str()))
            .map(|(i, _)| i)
            .collect()
    };
    (positions(old), positions(new))
}

/// The pinned maps hold what `new` needs.
fn check_capacity(pinned: &Pinned, new: &Plan) -> Result<(), ApplyError> {
    use dvnet_common::maps;
    let counts = entries::counts(new)?;
    for (map, need) in [
        (maps::LINK_STATS, new.link_slots() as u64),
        (maps::IFACES, counts.ifaces as u64),
        (maps::IMPAIR, counts.impairs as u64),
        (maps::ROUTES, counts.routes as u64),
        (maps::NEXTHOPS, counts.nexthops as u64),
        (maps::FW_CLASSES, counts.classes as u64),
        (maps::FW_RULES, counts.rules as u64),
        (maps::RULE_HITS, counts.rule_slots as u64),
        (maps::ROUTES6, counts.routes6 as u64),
        (maps::NEXTHOPS6, counts.nexthops6 as u64),
        (maps::FW_CLASSES6, counts.classes6 as u64),
    ] {
        let have = pinned.capacity(map)?;
        if need > u64::from(have) {
            return Err(ApplyError::Capacity {
                map: map.to_owned(),
                need,
                have,
            });
        }
    }
    Ok(())
}

/// Removes everything network `id` owns, holding its lock: a `down` while an `up` runs
/// waits for it to finish, then removes what it built.
///
/// # Errors
/// Not root, `id` is not a network id, dvnet's directories are untrustworthy, or the lock
/// cannot be taken; problems met while removing are in the report.
pub async fn down(id: &str, observer: &dyn Observer) -> Result<DownReport, ApplyError> {
    require_root("down")?;
    state::check_id(id)?;
    preflight::roots()?;
    let lock = lock_network(id, "down", observer)?;
    let report = teardown::network(id).await;
    if report.errors.is_empty() {
        lock.remove_file();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = r#"{
        "name": "lab", "automatic_routing": true,
        "outbound_access": {"enabled": true, "cidr": "192.168.240.0/24"},
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}, "B-2": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {
            "R-1": {"subnets": ["A", "C"], "fw_rules": {"drop": [["A-2", "B"]], "accept": [["A", "B"]]}},
            "R-2": {"subnets": ["C", "B"]}
        }
    }"#;

    fn plan(json: &str, previous: Option<&Plan>) -> Plan {
        let topo = Topology::from_json(json, "test.json").expect("valid");
        Plan::build_from(&topo, PlanOptions::default(), previous).expect("plan")
    }

    /// Keys and values a delta writes, and keys it deletes, in a comparable form.
    fn writes(d: &entries::EntriesDiff) -> Vec<String> {
        let mut out: Vec<String> = d
            .ifaces
            .put
            .iter()
            .map(|e| format!("iface {e:?}"))
            .chain(d.ifaces.delete.iter().map(|k| format!("-iface {k:?}")))
            .chain(d.routes.put.iter().map(|e| format!("route {e:?}")))
            .chain(d.routes.delete.iter().map(|k| format!("-route {k:?}")))
            .chain(d.nexthops.put.iter().map(|e| format!("nexthop {e:?}")))
            .chain(d.nexthops.delete.iter().map(|k| format!("-nexthop {k:?}")))
            .chain(d.classes.put.iter().map(|e| format!("class {e:?}")))
            .chain(d.classes.delete.iter().map(|k| format!("-class {k:?}")))
            .chain(d.rules.put.iter().map(|e| format!("rule {e:?}")))
            .chain(d.rules.delete.iter().map(|k| format!("-rule {k:?}")))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_touched_nodes_entries_find_every_change_a_full_comparison_finds() {
        let before = plan(LAB, None);
        for edited in [
            LAB.replace(r#""A-2": {}"#, r#""A-2": {}, "A-3": {}"#),
            LAB.replace(r#""B-1": {}, "B-2": {}"#, r#""B-1": {}"#),
            LAB.replace(r#""B-2": {}"#, r#""B-2": {"ip": "10.0.1.99"}"#),
            LAB.replace(r#""drop": [["A-2", "B"]], "#, r#""policy": "DROP", "#),
            LAB.replace(
                r#""C": {"cidr": "10.0.2.0/24", "hosts": {}}"#,
                r#""C": {"cidr": "10.0.2.0/24", "hosts": {}},
                "D": {"cidr": "10.0.3.0/24", "hosts": {"D-1": {}}}"#,
            )
            .replace(
                r#""R-2": {"subnets": ["C", "B"]}"#,
                r#""R-2": {"subnets": ["C", "B"]}, "R-3": {"subnets": ["C", "D"]}"#,
            ),
            LAB.replace(
                r#", "fw_rules": {"drop": [["A-2", "B"]], "accept": [["A", "B"]]}"#,
                "",
            ),
        ] {
            let after = plan(&edited, Some(&before));
            let changes = diff::diff(Some(&before), Some(&after));
            let (o, n) = touched_entries(&before, &after, &changes).unwrap();
            let partial = entries::diff(&before, &o, &after, &n);
            let full = entries::diff(
                &before,
                &entries::entries(&before).unwrap(),
                &after,
                &entries::entries(&after).unwrap(),
            );
            assert_eq!(writes(&partial), writes(&full), "{edited}");
            assert!(!writes(&full).is_empty(), "{edited}");
        }
    }
}
