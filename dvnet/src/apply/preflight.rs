//! Checks made before anything is created or changed: a network that cannot be built, or an
//! edit that cannot be made, is refused with the host untouched.

use super::ApplyError;
use super::inventory::Inventory;
use crate::datapath::ebpf;
use crate::plan::diff::{Diff, FrrChange};
use crate::plan::{NodePlan, Plan};
use crate::runtime::NodeRuntime as _;
use crate::runtime::docker::Containers;
use crate::state::{self, State};

/// Refuses to go on when dvnet's record root, lock directory or pin root could have been
/// planted by someone else (see [`state::check_dir`]); creates nothing.
///
/// # Errors
/// [`state::StateError::Untrusted`].
pub fn roots() -> Result<(), state::StateError> {
    state::check_dir(std::path::Path::new(state::STATE_DIR))?;
    state::check_dir(&crate::lock::dir())?;
    state::check_dir(std::path::Path::new(ebpf::PIN_ROOT))?;
    Ok(())
}

/// Nothing of network `plan.id` exists yet (`up`), and no network with another name holds
/// its id.
///
/// # Errors
/// The network is up, its id is taken, or a crashed `up` left things behind.
pub fn nothing_there(plan: &Plan) -> Result<(), ApplyError> {
    let id = plan.id.clone();
    match State::load(&id) {
        Ok(record) if record.plan.name != plan.name => {
            return Err(ApplyError::IdTaken {
                id,
                ours: plan.name.clone(),
                theirs: record.plan.name,
            });
        }
        Ok(_) => return Err(ApplyError::AlreadyUp { id }),
        Err(_) if crate::netns::exists(&plan.fabric_netns) => {
            return Err(ApplyError::AlreadyUp { id });
        }
        Err(_) => {}
    }
    let inventory = Inventory::of(&id)?;
    let leftovers: Vec<String> = inventory
        .paths()
        .into_iter()
        .filter(|p| Some(std::path::Path::new(p)) != inventory.lock.as_deref())
        .collect();
    if let Some(example) = leftovers.first() {
        return Err(ApplyError::Leftovers {
            id,
            leftovers: leftovers.len(),
            example: example.clone(),
        });
    }
    Ok(())
}

/// A machine's share of a lab placed on several, with segments to join: it runs on that
/// machine (its address is here), else its VXLAN would speak from an address that is not.
///
/// # Errors
/// The machine's address is not one of this machine's.
pub fn placement(plan: &Plan) -> Result<(), ApplyError> {
    let Some(machine) = &plan.machine else {
        return Ok(());
    };
    if plan.subnets.iter().all(|s| s.tunnel.is_none())
        || crate::host::local_addresses().contains(&machine.address)
    {
        return Ok(());
    }
    Err(ApplyError::Placement(format!(
        "machine {:?} is at {} in the file, and that is not an address of this machine: run \
         `--machine {}` on the machine that has it, or correct its \"address\"",
        machine.name, machine.address, machine.name
    )))
}

/// Outbound access: nftables is there, no host route clashes with the uplink or a subnet, the
/// host's interface and table names are free, published ports are free. For an edit
/// (`old`), the network's own routes and interface do not count as clashes, and only what
/// the edit adds is checked.
///
/// # Errors
/// The first problem found.
pub async fn host(new: &Plan, old: Option<&Plan>) -> Result<(), ApplyError> {
    let Some(uplink) = &new.uplink else {
        return Ok(());
    };
    let had_uplink = old.and_then(|o| o.uplink.as_ref());
    let here = crate::host::netns_inode();
    let others: Vec<Plan> = State::ids()?
        .iter()
        .filter(|i| **i != new.id)
        .filter_map(|i| State::load(i).ok())
        .filter(|s| s.host.as_ref().is_some_and(|h| h.netns == here))
        .map(|s| s.plan)
        .collect();
    let host = crate::host::netlink()?;
    let own_index = match had_uplink {
        Some(u) => host.index_of(&u.host_ifname).await.ok(),
        None => None,
    };
    let mut routes = host.routes().await?;
    if uplink.host_address6.is_some() {
        routes.extend(host.routes6().await?);
    }
    let prefixes: Vec<ipnet::IpNet> = routes
        .iter()
        .filter(|r| {
            // the network's own routes (through its uplink) are no clash with itself
            own_index.is_none_or(|own| {
                !r.attributes.iter().any(|a| {
                    matches!(a, netlink_packet_route::route::RouteAttribute::Oif(i) if Some(*i) == Some(own))
                })
            })
        })
        .filter_map(crate::netlink::route_prefix)
        .collect();
    if had_uplink.is_none() && host.index_of(&uplink.host_ifname).await.is_ok() {
        return Err(crate::host::OutboundError::InterfaceTaken {
            name: uplink.host_ifname.clone(),
        }
        .into());
    }
    crate::host::nat::preflight(new, &prefixes, &others, had_uplink.is_some())?;
    Ok(())
}

/// The nodes `nodes` of `plan` can start: for containers, a daemon answers, their images
/// are here and their names free (with `fresh`, no container of the network is left either).
/// Returns the Docker connection when any node, old or new, is a container.
///
/// # Errors
/// The first problem found.
pub async fn runtimes(
    plan: &Plan,
    nodes: &[&NodePlan],
    fresh: bool,
    needs_docker: bool,
) -> Result<Option<Containers>, ApplyError> {
    if !needs_docker && !nodes.iter().any(|n| n.container) {
        return Ok(None);
    }
    let docker = Containers::connect().await?;
    let containers: Vec<&NodePlan> = nodes.iter().copied().filter(|n| n.container).collect();
    if fresh {
        docker.check_images(&containers).await?;
        docker.check_names(plan, &containers, true).await?;
    } else {
        docker.preflight(plan, &containers).await?;
    }
    Ok(Some(docker))
}

/// FRR for the routers that will start it: installed, its user there, every configuration
/// read now.
///
/// # Errors
/// The first problem found.
pub async fn frr(
    plan: &Plan,
    diff: &Diff,
    docker: Option<&Containers>,
) -> Result<crate::frr::Configs, ApplyError> {
    let built = diff.built_nodes();
    let starting: std::collections::BTreeSet<&str> = diff
        .frr
        .iter()
        .filter_map(|c| match c {
            FrrChange::Start { router } | FrrChange::Restart { router } => Some(router.as_str()),
            FrrChange::Stop { .. } => None,
        })
        .chain(built)
        .collect();
    let configs = crate::frr::preflight(plan, |n| starting.contains(n.name.as_str()))?;
    // container routers start FRR with the image's `dvnet-frr`: checked once per image
    let mut checked: std::collections::BTreeMap<&str, bool> = std::collections::BTreeMap::new();
    for node in plan
        .nodes
        .iter()
        .filter(|n| n.container && n.frr.is_some() && starting.contains(n.name.as_str()))
    {
        let (Some(image), Some(docker)) = (node.image.as_deref(), docker) else {
            continue;
        };
        let has = if let Some(&has) = checked.get(image) {
            has
        } else {
            let has = docker.image_has(image, "dvnet-frr").await?;
            checked.insert(image, has);
            has
        };
        if !has {
            return Err(crate::runtime::docker::DockerError::NoFrrStarter {
                router: node.name.clone(),
                image: image.to_owned(),
            }
            .into());
        }
    }
    Ok(configs)
}
