//! After a container joins: Docker moves its interface into the container's namespace once
//! `Join` has answered (for `docker run`, when the container's namespace exists; the
//! namespace does not exist yet during `Join`). A moved interface loses its qdiscs, so the
//! counting program of the container's side is attached afterwards: a short watch waits for
//! the interface to arrive, then names the container's namespace `dv-<lab>.<node>` (so
//! `dvnet exec`, `inspect` and `stats` reach it) and attaches the program there.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::netlink::Netlink;
use crate::netns;
use crate::plan::NodePlan;

/// How long the watch waits for Docker to move the interface.
const PATIENCE: Duration = Duration::from_secs(60);

/// Watches for `node`'s interfaces (`ifindexes`) in the namespace at `sandbox`, in the
/// background.
pub fn watch(lab: String, node: NodePlan, ifindexes: Vec<u32>, sandbox: PathBuf) {
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            if arrived(&sandbox, &ifindexes) {
                tracing::debug!(lab, node = %node.name, waited_ms = started.elapsed().as_millis(), "the container's interface arrived");
                if let Err(e) = adopt(&lab, &node, &ifindexes, &sandbox).await {
                    tracing::warn!(lab, node = %node.name, "counting the container's side: {e}");
                }
                return;
            }
            if started.elapsed() > PATIENCE {
                tracing::warn!(
                    lab,
                    node = %node.name,
                    "the container's interface did not arrive in {}",
                    sandbox.display()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// Whether the namespace at `sandbox` exists and holds every one of `ifindexes`.
fn arrived(sandbox: &std::path::Path, ifindexes: &[u32]) -> bool {
    let Ok(file) = std::fs::File::open(sandbox) else {
        return false;
    };
    let fd = std::os::fd::OwnedFd::from(file);
    let wanted = ifindexes.to_vec();
    netns::on_thread(std::os::fd::AsFd::as_fd(&fd), move || {
        wanted.iter().all(|&i| {
            let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
            // SAFETY: a buffer of IF_NAMESIZE bytes, as if_indextoname requires
            !unsafe { libc::if_indextoname(i, name.as_mut_ptr()) }.is_null()
        })
    })
    .unwrap_or(false)
}

async fn adopt(
    lab: &str,
    node: &NodePlan,
    ifindexes: &[u32],
    sandbox: &std::path::Path,
) -> Result<(), String> {
    let _lock =
        crate::lock::Lock::acquire(lab, "join (counting)", |_| {}).map_err(|e| e.to_string())?;
    // still there? (it may have left meanwhile)
    let record = crate::state::State::load(lab).map_err(|e| e.to_string())?;
    if record
        .plan
        .node(&node.name)
        .is_none_or(|n| n.attached.is_none())
    {
        return Ok(());
    }
    if !netns::exists(&node.netns) {
        netns::name_path(&node.netns, sandbox).map_err(|e| e.to_string())?;
    }
    let pinned = crate::datapath::ebpf::Pinned::open(lab).map_err(|e| e.to_string())?;
    let (program, _) = pinned.programs();
    let nl = Netlink::open_in(&node.netns).map_err(|e| e.to_string())?;
    for &ifindex in ifindexes {
        // an ingress qdisc left from before is fine
        let _ = nl.add_ingress(ifindex, None).await;
        nl.attach_ingress(ifindex, program, dvnet_common::programs::NODE_INGRESS)
            .await
            .map_err(|e| e.to_string())?;
    }
    tracing::info!(lab, node = %node.name, "the container's side is counted");
    Ok(())
}

/// Deletes the interface `name` in dvnet's namespace, if it is there.
pub async fn remove_interface(name: &str) {
    if let Ok(host) = crate::host::netlink()
        && let Ok(index) = host.index_of(name).await
    {
        let _ = host.delete_link_if_there(index).await;
    }
}
