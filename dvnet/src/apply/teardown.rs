//! Taking things away: a whole network (`down`, a rolled-back `up`) or some of its nodes (an
//! `apply`). Teardown discovers what exists (by name, label and pins), removes only that,
//! carries on past errors and reports them all.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::inventory::Inventory;
use crate::datapath::ebpf;
use crate::netns;
use crate::plan::{NodePlan, naming};
use crate::runtime::NodeRuntime as _;
use crate::runtime::docker::Containers;
use crate::state::{State, Status};

/// How long stopped processes get to exit after SIGTERM (and again after SIGKILL).
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// What `down` removed.
#[derive(Clone, Debug, Default, Serialize)]
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

/// Whether process `pid` is alive.
fn alive(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
}

/// Stops the processes running in namespaces `names` (SIGTERM, then SIGKILL) and waits for
/// them: once this returns, none runs.
fn stop_processes_in(names: &[&str], report: &mut DownReport) {
    let (stopped, errors) = netns::stop_processes(&netns::processes_in(names), STOP_GRACE);
    report.processes += stopped;
    report.errors.extend(errors);
}

/// Removes everything network `id` owns: its containers, the processes in its nodes, its
/// namespaces (nodes first, then the fabric), their `/etc/netns` directories, what it changed
/// on the host, its pins and its record. Idempotent. The caller holds the network's lock and
/// has checked `id`.
pub async fn network(id: &str) -> DownReport {
    let mut report = DownReport::default();
    let record = State::load(id).ok();
    let inventory = match Inventory::of(id) {
        Ok(i) => i,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    // Containers (found by label, so also after a crash); only if a daemon answers: without
    // one, no container of ours can be running. An `up` that died while creating containers
    // may have left creations in flight in Docker: they are followed until they settle.
    let settle_since = record
        .as_ref()
        .filter(|r| r.status != Status::Up && !alive(r.pid))
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
    let names: Vec<&str> = inventory.namespaces.iter().map(String::as_str).collect();
    // (containers attached through the Docker driver are Docker's: their processes stay)
    let attached: std::collections::BTreeSet<&str> = record
        .iter()
        .flat_map(|r| r.plan.nodes.iter())
        .filter(|n| n.attached.is_some())
        .map(|n| n.netns.as_str())
        .collect();
    let ours: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !attached.contains(n))
        .collect();
    stop_processes_in(&ours, &mut report);
    // nodes first, then the fabric: links die with the node namespaces
    let fabric = naming::fabric_netns(id);
    // VXLAN ports (a lab on several machines) before that, and at once: their UDP socket is
    // in this machine's namespace, and would outlive `down` for a while if they went with the
    // fabric (the kernel destroys a namespace in the background)
    let tunnels: Vec<u32> = record
        .iter()
        .flat_map(|r| &r.plan.subnets)
        .filter_map(|s| s.tunnel.as_ref().map(|t| t.ifindex))
        .collect();
    if !tunnels.is_empty() && names.contains(&fabric.as_str()) {
        let deleted = match crate::netlink::Netlink::open_in(&fabric) {
            Ok(nl) => nl.delete_links(&tunnels).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("opening netlink in {fabric}: {e}")),
        };
        report.errors.extend(deleted.err());
    }
    let (in_fabric, in_nodes): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| **n == fabric);
    for deleted in netns::delete_all(&in_nodes)
        .into_iter()
        .chain(netns::delete_all(&in_fabric))
    {
        match deleted {
            Ok(()) => report.namespaces += 1,
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    // by the network's prefix: also those of namespaces that are gone already
    for dir in &inventory.etc_netns {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            report
                .errors
                .push(format!("removing {}: {e}", dir.display()));
        }
    }
    // The host side of outbound access, exactly as recorded (nothing when nothing was).
    let changes = record.as_ref().and_then(|r| r.host.clone());
    report
        .errors
        .extend(crate::host::undo(id, changes.as_ref()).await);
    // Pins last: the programs die with the namespaces' interfaces, the maps with the pins.
    if inventory.pins.is_some() {
        report.record = true;
        if let Err(e) = ebpf::remove_pins(id) {
            report.errors.push(e.to_string());
        }
    }
    report.record |= record.is_some() || inventory.record.is_some();
    // the UTS namespaces of namespace routers running FRR are mounted inside the record
    report.errors.extend(crate::frr::release(id));
    if let Err(e) = State::remove(id) {
        report.errors.push(e.to_string());
    }
    report
}

/// Removes some nodes of a running network (an edit removes or recreates them): their
/// containers, the processes in their namespaces, the namespaces, their `/etc/netns`
/// directories and FRR directories. Their links went before (see `converge`).
pub async fn nodes(id: &str, nodes: &[&NodePlan], docker: Option<&Containers>) -> DownReport {
    let mut report = DownReport::default();
    let containers: Vec<&NodePlan> = nodes.iter().copied().filter(|n| n.container).collect();
    if !containers.is_empty() {
        match docker {
            Some(docker) => {
                let (removed, errors) = docker.remove(id, &containers).await;
                report.containers = removed;
                report.errors.extend(errors);
            }
            None => report
                .errors
                .push("container nodes to remove, but no Docker connection".into()),
        }
    }
    let names: Vec<&str> = nodes.iter().map(|n| n.netns.as_str()).collect();
    stop_processes_in(&names, &mut report);
    let gone: Vec<&str> = names
        .iter()
        .copied()
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .filter(|name| netns::exists(name))
        .collect();
    for deleted in netns::delete_all(&gone) {
        match deleted {
            Ok(()) => report.namespaces += 1,
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    let (_, errors) = crate::runtime::netns::Namespaces.remove(id, nodes).await;
    report.errors.extend(errors);
    report.errors.extend(crate::frr::release_nodes(id, nodes));
    report
}
