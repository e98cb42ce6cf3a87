//! The executor: turns the network of one plan into that of another by working through
//! their [`Diff`], touching only what it names. `up` is the diff from no network; an edit
//! is the diff between the running plan and the edited file's.
//!
//! Order: what goes goes first (FRR stopped, links deleted from the side of the nodes that
//! stay, nodes and their namespaces removed, bridges deleted), then what comes is built
//! (bridges, nodes: containers started and namespaces made with their sysctls on a few
//! dedicated threads, veths created with both ends in place, interfaces up with addresses,
//! routes, programs attached once every qdisc exists), then the firewalls of the kernel
//! datapath. Map entries, FRR, hosts files and the host side are the caller's (they differ
//! between `up` and an edit).
//!
//! In [`Mode::Rollback`] (putting a network back after an edit failed halfway) a node whose
//! namespace exists, or a link whose interface exists, is taken as already there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};

use futures::{StreamExt as _, TryStreamExt as _, stream};
use tracing::debug;

use super::ApplyError;
use super::progress::Phases;
use crate::netlink::{LO_IFINDEX, Netlink, VethEnd};
use crate::netns::{self, NetnsError};
use crate::plan::diff::{Diff, LinkChange};
use crate::plan::{FabricPort, Forwarder, LinkPlan, NodePlan, Plan, Segment, TunnelPlan};
use crate::runtime::docker::Containers;
use crate::runtime::{NodeRuntime as _, Origin};
use dvnet_common::programs;

/// Netlink requests in flight at once.
const CONCURRENCY: usize = 64;

/// Forward, or putting things back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Rollback,
}

/// What the executor needs beyond the plans.
pub struct Ctx<'a> {
    pub old: &'a Plan,
    pub new: &'a Plan,
    pub diff: &'a Diff,
    pub mode: Mode,
    pub docker: Option<&'a Containers>,
    /// The programs to attach: on node interfaces, on fabric ports.
    pub node_prog: BorrowedFd<'a>,
    pub fabric_prog: BorrowedFd<'a>,
    /// The program on the near ends of delay lines.
    pub delay_prog: BorrowedFd<'a>,
}

/// What was done, in numbers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub nodes_built: usize,
    pub nodes_removed: usize,
    pub links_created: usize,
    pub links_removed: usize,
    pub bridges_created: usize,
    pub bridges_removed: usize,
    pub nodes_rerouted: usize,
    pub processes_stopped: usize,
}

/// The work a diff means, by position in the old and new plans.
#[derive(Debug, Default)]
struct Work {
    /// Old nodes removed (or recreated).
    removed: Vec<usize>,
    /// New nodes built (added or recreated).
    built: Vec<usize>,
    /// Old links deleted from the side of a node that stays.
    links_gone: Vec<usize>,
    /// Fabric ports (ifindex) of removed nodes, deleted from the fabric.
    ports_gone: Vec<u32>,
    /// New links created (of built nodes, added, rewired).
    links_new: Vec<usize>,
    bridges_gone: Vec<usize>,
    bridges_new: Vec<usize>,
    /// (old link, new link) whose address changes in place.
    readdressed: Vec<(usize, usize)>,
    /// (old link, new link) whose global IPv6 address changes (comes, goes) in place.
    readdressed6: Vec<(usize, usize)>,
    /// New nodes that stay and whose routes are set again.
    rerouted: Vec<usize>,
    /// New links (of nodes that stay) taken down or up.
    states: Vec<usize>,
}

fn link_key(plan: &Plan, l: &LinkPlan) -> (String, String) {
    (
        plan.nodes[l.node].name.clone(),
        plan.subnets[l.subnet].name.clone(),
    )
}

fn work(ctx: &Ctx<'_>) -> Work {
    let (old, new, diff) = (ctx.old, ctx.new, ctx.diff);
    let mut w = Work::default();
    let removed = diff.removed_nodes();
    let built = diff.built_nodes();
    w.removed = old
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| removed.contains(n.name.as_str()))
        .map(|(i, _)| i)
        .collect();
    w.built = new
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| built.contains(n.name.as_str()))
        .map(|(i, _)| i)
        .collect();
    let old_links: HashMap<(String, String), usize> = old
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| (link_key(old, l), i))
        .collect();
    let new_links: HashMap<(String, String), usize> = new
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| (link_key(new, l), i))
        .collect();
    for &n in &w.removed {
        for &l in &old.nodes[n].links {
            if let Some(port) = &old.links[l as usize].fabric_port {
                w.ports_gone.push(port.ifindex);
            }
        }
    }
    for &n in &w.built {
        w.links_new
            .extend(new.nodes[n].links.iter().map(|&l| l as usize));
    }
    let mut rerouted: BTreeSet<usize> = BTreeSet::new();
    let node_of = |name: &str| new.nodes.iter().position(|n| n.name == name);
    for change in &diff.links {
        match change {
            LinkChange::Remove { node, subnet } => {
                w.links_gone
                    .extend(old_links.get(&(node.clone(), subnet.clone())));
                rerouted.extend(node_of(node));
            }
            LinkChange::Add { node, subnet, .. } => {
                w.links_new
                    .extend(new_links.get(&(node.clone(), subnet.clone())));
                rerouted.extend(node_of(node));
            }
            LinkChange::Rewire { node, subnet, .. } => {
                let k = (node.clone(), subnet.clone());
                w.links_gone.extend(old_links.get(&k));
                w.links_new.extend(new_links.get(&k));
                rerouted.extend(node_of(node));
            }
            LinkChange::Address { node, subnet, .. } => {
                let k = (node.clone(), subnet.clone());
                if let (Some(&o), Some(&n)) = (old_links.get(&k), new_links.get(&k)) {
                    w.readdressed.push((o, n));
                }
                rerouted.extend(node_of(node));
            }
            LinkChange::Address6 { node, subnet, .. } => {
                let k = (node.clone(), subnet.clone());
                if let (Some(&o), Some(&n)) = (old_links.get(&k), new_links.get(&k)) {
                    w.readdressed6.push((o, n));
                }
                rerouted.extend(node_of(node));
            }
            // the datapath's maps only
            LinkChange::Impair { .. } => {}
            LinkChange::State { node, subnet, .. } => {
                w.states
                    .extend(new_links.get(&(node.clone(), subnet.clone())));
                // the kernel drops routes through a link that goes down: set again when up
                rerouted.extend(node_of(node));
            }
        }
    }
    for r in &diff.routes {
        rerouted.extend(node_of(&r.node));
    }
    // a readdressed link that is also rewired is made anew with its new address (and its
    // state)
    let made: BTreeSet<usize> = w.links_new.iter().copied().collect();
    w.readdressed.retain(|(_, n)| !made.contains(n));
    w.readdressed6.retain(|(_, n)| !made.contains(n));
    w.states.retain(|n| !made.contains(n));
    w.rerouted = rerouted
        .into_iter()
        .filter(|n| !built.contains(new.nodes[*n].name.as_str()))
        .collect();
    let old_bridges: BTreeMap<&str, &Segment> = old
        .subnets
        .iter()
        .map(|s| (s.name.as_str(), &s.segment))
        .collect();
    let new_bridges: BTreeMap<&str, &Segment> = new
        .subnets
        .iter()
        .map(|s| (s.name.as_str(), &s.segment))
        .collect();
    w.bridges_gone = old
        .subnets
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.segment, Segment::Bridge { .. }))
        .filter(|(_, s)| new_bridges.get(s.name.as_str()) != Some(&&s.segment))
        .map(|(i, _)| i)
        .collect();
    w.bridges_new = new
        .subnets
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.segment, Segment::Bridge { .. }))
        .filter(|(_, s)| old_bridges.get(s.name.as_str()) != Some(&&s.segment))
        .map(|(i, _)| i)
        .collect();
    w
}

/// The sysctls (below `/proc/sys/net`) of a node, set from inside its namespace before any
/// interface exists (new interfaces take the `default` values). New namespaces copy
/// `net.ipv4.conf.{all,default}` from the host's, so everything that matters is set
/// explicitly. `ipv6`: the network has IPv6 ([`Plan::ipv6`]).
#[must_use]
pub fn node_sysctls(node: &NodePlan, ipv6: bool) -> Vec<(&'static str, &'static str)> {
    let mut sysctls = if node.forwarder == (Forwarder::Program { fib_fallback: true }) {
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
        let on = node.forwarder == Forwarder::Kernel;
        vec![("ipv4/ip_forward", if on { "1" } else { "0" })]
    };
    if ipv6 {
        sysctls.extend(ipv6_sysctls(node.forwarder == Forwarder::Kernel));
        if node.forwarder == (Forwarder::Program { fib_fallback: true }) {
            // the program asks the kernel's IPv6 FIB as if packets came in on `lo`, which
            // needs lo's forwarding flag; the kernel's own IPv6 forwarding (`all`) stays off
            sysctls.push(("ipv6/conf/lo/forwarding", "1"));
        }
    } else {
        // A network without IPv6 keeps it off: else router solicitations, MLD and DAD
        // chatter would land on every link and in every counter.
        sysctls.extend([
            ("ipv6/conf/all/disable_ipv6", "1"),
            ("ipv6/conf/default/disable_ipv6", "1"),
        ]);
    }
    sysctls.extend([
        // Labs route asymmetrically on purpose at times; reverse-path filtering would drop it.
        ("ipv4/conf/all/rp_filter", "0"),
        ("ipv4/conf/default/rp_filter", "0"),
        // Every traceroute probe deserves its answer.
        ("ipv4/icmp_ratelimit", "0"),
    ]);
    if node.forwarder != Forwarder::None || node.routes.iter().any(|r| !r.ecmp.is_empty()) {
        // Equal-cost routes (`"ecmp"`, or a routing daemon's; a host's to several gateways)
        // spread flows by addresses and ports, as the eBPF routers do: a flow stays on one
        // path.
        sysctls.push(("ipv4/fib_multipath_hash_policy", "1"));
        // and a next hop whose neighbour entry failed (a gateway taken down on a bridge)
        // is left out
        sysctls.push(("ipv4/fib_multipath_use_neigh", "1"));
    }
    if node.forwarder != Forwarder::None {
        // A next hop whose link has lost its carrier (the other end taken down) leaves its
        // group, as the eBPF routers leave it out.
        sysctls.extend([
            ("ipv4/conf/all/ignore_routes_with_linkdown", "1"),
            ("ipv4/conf/default/ignore_routes_with_linkdown", "1"),
        ]);
    }
    sysctls
}

/// IPv6 on, and as quiet and deterministic as IPv4: dvnet gives every interface its
/// link-local and global addresses itself (no address made from the MAC by the kernel, no
/// duplicate address detection, no router advertisements or solicitations: routes are
/// dvnet's), and a link taken down keeps its global ones, as IPv4 addresses are kept (its
/// link-local one the kernel flushes: dvnet adds it again when the link is up); routers of the
/// kernel datapath forward. Every traceroute probe gets its answer.
fn ipv6_sysctls(forward: bool) -> [(&'static str, &'static str); 16] {
    [
        ("ipv6/conf/all/disable_ipv6", "0"),
        ("ipv6/conf/default/disable_ipv6", "0"),
        ("ipv6/conf/all/addr_gen_mode", "1"),
        ("ipv6/conf/default/addr_gen_mode", "1"),
        ("ipv6/conf/all/accept_dad", "0"),
        ("ipv6/conf/default/accept_dad", "0"),
        ("ipv6/conf/all/accept_ra", "0"),
        ("ipv6/conf/default/accept_ra", "0"),
        ("ipv6/conf/all/router_solicitations", "0"),
        ("ipv6/conf/default/router_solicitations", "0"),
        ("ipv6/conf/all/keep_addr_on_down", "1"),
        ("ipv6/conf/default/keep_addr_on_down", "1"),
        ("ipv6/conf/all/forwarding", if forward { "1" } else { "0" }),
        (
            "ipv6/conf/default/forwarding",
            if forward { "1" } else { "0" },
        ),
        ("ipv6/icmp/ratelimit", "0"),
        ("ipv6/fib_multipath_hash_policy", "1"),
    ]
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

/// The shared TC block of a namespace dvnet made (a node's, the fabric's): every interface
/// that runs the namespace's program binds its ingress qdisc to it, and the program is
/// attached once, to the block (see [`Netlink::add_ingress`]).
pub const SHARED_BLOCK: u32 = 0xd7;

/// Netlink handles on nodes held at once: a network of more nodes has its handles opened
/// (and closed) a batch at a time, so the descriptors dvnet holds stay bounded whatever
/// the network's size (two per node would exhaust a limit of 20,000 at 10,000 nodes).
const HANDLES_HELD: usize = 2048;

/// A created namespace: a netlink socket inside it, kept when the network is small enough
/// for every node's handle to be held (see [`HANDLES_HELD`]).
struct NsCreated {
    socket: Option<OwnedFd>,
}

/// Creates namespaces on `workers` dedicated threads; results in job order. With
/// `sockets`, each gets a netlink socket opened inside it.
fn create_namespaces(
    jobs: &[NsJob],
    workers: usize,
    sockets: bool,
    observer: &dyn super::Observer,
) -> Result<Vec<NsCreated>, NetnsError> {
    let made = crate::threads::in_chunks(
        jobs,
        workers,
        |jobs| -> Result<Vec<NsCreated>, NetnsError> {
            let home = netns::current().map_err(|source| NetnsError::Io {
                op: "opening",
                name: "the current namespace".into(),
                source,
            })?;
            let mut out = Vec::with_capacity(jobs.len());
            let mut proc_sys = netns::ProcSys::for_namespaces(jobs.len());
            let mut points = netns::MountPoints::default();
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
                    sockets.then(crate::netlink::socket_here).transpose()
                };
                // the namespace's descriptor is closed at once: it stays mounted
                let (_fd, socket) = match job.adopt {
                    Some(pid) => netns::adopt_on_this_thread(
                        &mut points,
                        &job.name,
                        pid,
                        home.as_fd(),
                        init,
                    )?,
                    None => {
                        netns::create_on_this_thread(&mut points, &job.name, home.as_fd(), init)?
                    }
                };
                debug!(ns = %job.name, adopted = job.adopt.is_some(), "namespace");
                out.push(NsCreated { socket });
                observer.advance(1);
            }
            Ok(out)
        },
    );
    let mut all = Vec::with_capacity(jobs.len());
    for part in made {
        all.extend(part?);
    }
    Ok(all)
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

impl<'a> Wire<'a> {
    /// The end made as the pair's peer ([`Netlink::add_veth`]), through the handle on its
    /// node, which sets it up next: the node's end of a bridged link, the second link of a
    /// point-to-point pair.
    fn peer(&self) -> &'a LinkPlan {
        match *self {
            Wire::ToBridge { link, .. } | Wire::PointToPoint(_, link) => link,
        }
    }
}

/// The veths that make links `made` (positions in `plan.links`), by subnet.
fn wires<'a>(plan: &'a Plan, made: &BTreeSet<usize>) -> Result<Vec<Wire<'a>>, ApplyError> {
    let mut out = Vec::with_capacity(made.len());
    for subnet in &plan.subnets {
        let links: Vec<&LinkPlan> = subnet
            .links
            .iter()
            .filter(|&&l| made.contains(&(l as usize)))
            .map(|&l| &plan.links[l as usize])
            .collect();
        match &subnet.segment {
            Segment::Empty => {}
            Segment::PointToPoint => match links.as_slice() {
                [] => {}
                [a, b] => out.push(Wire::PointToPoint(a, b)),
                [one] => {
                    return Err(ApplyError::Internal(format!(
                        "subnet {}: a veth pair with one new end ({})",
                        subnet.name, one.ifname
                    )));
                }
                _ => unreachable!("a point-to-point subnet has two links"),
            },
            Segment::Bridge { ifindex, .. } => {
                for link in links {
                    out.push(Wire::ToBridge {
                        link,
                        port: link
                            .fabric_port
                            .as_ref()
                            .expect("a bridged link has a fabric port"),
                        bridge: *ifindex,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// `wires` in the order of a depth-first walk of the nodes they join: a node's wires one
/// after the other, its neighbours' next.
///
/// Why: each ingress qdisc binds its namespace's shared block, and the kernel looks every
/// bound block up in a list of all of them on the machine, newest first
/// (`flow_indr_dev_setup_offload`): a block's first binding walks the whole list, a later one
/// as far as the blocks first bound since. Made in node order, a node's links were bound
/// thousands of blocks apart (half a 10,000-node chain between a router's two links); walked
/// depth-first, a node's later bindings come right after its first. 10,000-node chain: links
/// 5.5 s → 3.5 s.
fn binding_order(wires: Vec<Wire<'_>>, nodes: usize) -> Vec<Wire<'_>> {
    let ends = |w: &Wire<'_>| match *w {
        Wire::PointToPoint(a, b) => [Some(a.node), Some(b.node)],
        Wire::ToBridge { link, .. } => [Some(link.node), None],
    };
    let mut of_node: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    for (i, w) in wires.iter().enumerate() {
        for n in ends(w).into_iter().flatten() {
            of_node[n].push(i);
        }
    }
    let mut order = Vec::with_capacity(wires.len());
    let (mut taken, mut seen) = (vec![false; wires.len()], vec![false; nodes]);
    let mut stack = Vec::new();
    for start in 0..nodes {
        stack.push(start);
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n], true) {
                continue;
            }
            let first = stack.len();
            for &i in &of_node[n] {
                if !std::mem::replace(&mut taken[i], true) {
                    order.push(i);
                    stack.extend(ends(&wires[i]).into_iter().flatten().filter(|&m| !seen[m]));
                }
            }
            // the first neighbour bound is walked first
            stack[first..].reverse();
        }
    }
    let mut wires: Vec<Option<Wire<'_>>> = wires.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| wires[i].take().expect("each wire once"))
        .collect()
}

/// Whether a new link's end is set up by dvnet where it was made: every link but those of
/// containers attached through the Docker driver (Docker moves their ends, which loses a
/// qdisc, and sets them up; dvnet attaches their program after).
fn in_place(plan: &Plan, link: &LinkPlan) -> bool {
    plan.nodes[link.node].attached.is_none()
}

/// Readies a new link's end, made down, through the handle on its node: its ingress qdisc,
/// then up (unless the link is down), at once after its pair is made.
///
/// Why in this order: a qdisc grafted on a device that is up deactivates the device, which
/// waits for an expedited RCU grace period with RTNL held (`qdisc_graft`, `dev_deactivate`):
/// on a device still down it does not (2,000 veth ends: 0.19 s up, 0.04 s down). Why at
/// once: the kernel queues a link-state event for each end as the pair is made, and one for
/// an end that is down waits in a queue that each event of a link coming up walks whole
/// (`__linkwatch_run_queue`), while its own work is done at 100 a second: 20,000 ends made
/// down and set up seconds later, with their node's addresses, made that walk quadratic
/// (9 % of the CPU of a 10,000-node `up`). Ends set up as they are made leave nothing
/// waiting.
async fn ready(nl: &Netlink, link: &LinkPlan) -> Result<(), ApplyError> {
    nl.add_ingress(link.ifindex, Some(SHARED_BLOCK)).await?;
    if !link.down {
        nl.set_up(link.ifindex).await?;
    }
    Ok(())
}

/// The VXLAN ports of the new bridges of segments that span machines, made from dvnet's own
/// namespace (the machine's: their underlay) into the fabric, with their forwarding tables.
async fn tunnels(
    new: &Plan,
    bridges: &[usize],
    fabric: &Netlink,
    rollback: bool,
) -> Result<(), ApplyError> {
    let tunnels: Vec<(u32, &TunnelPlan)> = bridges
        .iter()
        .filter_map(
            |&s| match (&new.subnets[s].segment, &new.subnets[s].tunnel) {
                (Segment::Bridge { ifindex, .. }, Some(t)) => Some((*ifindex, t)),
                _ => None,
            },
        )
        .collect();
    let Some(machine) = new.machine.as_ref().filter(|_| !tunnels.is_empty()) else {
        return Ok(());
    };
    let here = crate::netlink::socket_here()
        .and_then(|socket| Netlink::from_socket(socket, "this machine's namespace"))
        .map_err(|source| ApplyError::Io {
            op: "opening netlink in this machine's namespace".into(),
            source,
        })?;
    let fabric_ns = netns::open(&new.fabric_netns)?;
    for (bridge, t) in tunnels {
        if rollback && fabric.index_of(&t.ifname).await.is_ok() {
            continue;
        }
        debug!(port = %t.ifname, vni = t.vni, "VXLAN port");
        let port = crate::netlink::VxlanPort {
            name: &t.ifname,
            ifindex: t.ifindex,
            vni: t.vni,
            udp_port: machine.vxlan_port,
            local: machine.address,
            mtu: new.mtu,
            master: bridge,
        };
        here.add_vxlan(&port, fabric_ns.as_fd()).await?;
        for remote in &t.remotes {
            fabric
                .add_vxlan_destination(t.ifindex, [0; 6], remote.address)
                .await?;
            for mac in remote.macs() {
                fabric
                    .add_vxlan_destination(t.ifindex, mac, remote.address)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Handles on the namespaces the work touches.
struct Handles {
    fabric: Option<Netlink>,
    /// By node position in the new plan: netlink handles kept from the namespaces' creation
    /// (small networks only); others are opened a batch at a time by [`node_handles`].
    nodes: HashMap<usize, Netlink>,
}

/// The namespace of node `n`, opened now (dvnet's own for a container joining through
/// Docker: its interface is made here for Docker to move).
fn node_ns(new: &Plan, n: usize) -> Result<OwnedFd, ApplyError> {
    if new.nodes[n].attached.is_some() {
        return netns::current().map_err(|source| ApplyError::Io {
            op: "opening dvnet's own namespace".into(),
            source,
        });
    }
    Ok(netns::open(&new.nodes[n].netns)?)
}

/// Runs `work` on each of `items` with a netlink handle on its node (`node_of`),
/// [`CONCURRENCY`] at a time (see [`on_nodes`]).
async fn on_each_node<'a, T: Sync, Fut>(
    new: &Plan,
    held: &HashMap<usize, Netlink>,
    items: &'a [T],
    node_of: impl Fn(&T) -> usize,
    work: impl Fn(Netlink, &'a T) -> Fut,
) -> Result<(), ApplyError>
where
    Fut: std::future::Future<Output = Result<(), ApplyError>>,
{
    on_nodes(
        new,
        held,
        items,
        |item| vec![node_of(item)],
        |mut nls, item| work(nls.swap_remove(0), item),
    )
    .await
}

/// Runs `work` on each of `items` with netlink handles on the nodes it touches (`nodes_of`,
/// in that order), [`CONCURRENCY`] at a time, in batches of items touching at most
/// [`HANDLES_HELD`] nodes: a batch's handles are opened together and closed before the next
/// batch's open.
async fn on_nodes<'a, T: Sync, Fut>(
    new: &Plan,
    held: &HashMap<usize, Netlink>,
    items: &'a [T],
    nodes_of: impl Fn(&T) -> Vec<usize>,
    work: impl Fn(Vec<Netlink>, &'a T) -> Fut,
) -> Result<(), ApplyError>
where
    Fut: std::future::Future<Output = Result<(), ApplyError>>,
{
    let touched: Vec<Vec<usize>> = items.iter().map(&nodes_of).collect();
    let mut start = 0;
    while start < items.len() {
        let mut ids = BTreeSet::new();
        let mut end = start;
        while end < items.len() {
            let more = touched[end].iter().filter(|n| !ids.contains(*n)).count();
            if end > start && ids.len() + more > HANDLES_HELD {
                break;
            }
            ids.extend(touched[end].iter().copied());
            end += 1;
        }
        let ids: Vec<usize> = ids.into_iter().collect();
        let handles = node_handles(new, held, &ids)?;
        let done = stream::iter(start..end)
            .map(|i| {
                let nls = touched[i]
                    .iter()
                    .map(|n| handles.nodes[n].clone())
                    .collect();
                work(nls, &items[i])
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await;
        handles.close().await;
        done?;
        start = end;
    }
    Ok(())
}

/// One end of a veth in a node: in namespace `netns` (opened for the message and closed after
/// it), or without one in the namespace of the handle that makes the pair.
fn node_end<'b>(link: &'b LinkPlan, netns: Option<BorrowedFd<'b>>, mtu: u32) -> VethEnd<'b> {
    VethEnd {
        name: &link.ifname,
        ifindex: link.ifindex,
        mac: link.mac,
        netns,
        master: None,
        mtu,
        up: false,
    }
}

/// Netlink handles on the nodes of one batch, and the tasks owning the sockets opened for
/// it: [`Batch::close`] waits until those are closed, so that batches never overlap.
struct Batch {
    nodes: HashMap<usize, Netlink>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Batch {
    async fn close(self) {
        drop(self.nodes);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Netlink handles on the nodes `batch` (at most [`HANDLES_HELD`]): those held, the others
/// opened now, a few threads entering the namespaces in turn.
fn node_handles(
    new: &Plan,
    held: &HashMap<usize, Netlink>,
    batch: &[usize],
) -> Result<Batch, ApplyError> {
    let mut tasks = Vec::new();
    let mut out = HashMap::with_capacity(batch.len());
    let mut to_open: Vec<usize> = Vec::new();
    for &n in batch {
        if let Some(nl) = held.get(&n) {
            out.insert(n, nl.clone());
        } else if new.nodes[n].attached.is_some() {
            out.insert(n, crate::host::netlink()?);
        } else {
            to_open.push(n);
        }
    }
    if to_open.is_empty() {
        return Ok(Batch { nodes: out, tasks });
    }
    let names: Vec<&str> = to_open
        .iter()
        .map(|&n| new.nodes[n].netns.as_str())
        .collect();
    let sockets = tokio::task::block_in_place(|| netns::sockets_in(&names, 2))?;
    for (n, socket) in to_open.into_iter().zip(sockets) {
        let ns = &new.nodes[n].netns;
        let (nl, task) =
            Netlink::from_socket_joined(socket, ns).map_err(|source| ApplyError::Io {
                op: format!("opening netlink in {ns}"),
                source,
            })?;
        out.insert(n, nl);
        tasks.push(task);
    }
    Ok(Batch { nodes: out, tasks })
}

/// Does the work of `ctx.diff` but for map entries, FRR, hosts files and the host side.
/// Phases are timed in `phases`.
///
/// # Errors
/// The first step that fails (the caller rolls back).
#[expect(clippy::too_many_lines, reason = "one phase after the other, in order")]
#[tracing::instrument(skip_all, fields(net = %ctx.new.id, mode = ?ctx.mode))]
pub async fn converge(ctx: &Ctx<'_>, phases: &mut Phases<'_>) -> Result<Counts, ApplyError> {
    let (old, new) = (ctx.old, ctx.new);
    let w = work(ctx);
    let mut counts = Counts::default();
    let observer = phases.observer();
    let rollback = ctx.mode == Mode::Rollback;
    debug!(?w, "work");

    // ---- what goes ------------------------------------------------------------------
    let fabric_exists = netns::exists(&new.fabric_netns);
    let fabric_old = if fabric_exists && !old.nodes.is_empty() {
        Some(
            Netlink::open_in(&old.fabric_netns).map_err(|source| ApplyError::Io {
                op: format!("opening netlink in {}", old.fabric_netns),
                source,
            })?,
        )
    } else {
        None
    };
    // Links go from the fabric where they have a port (the veth's node end goes with it),
    // all in one batch; veth pairs between two nodes from a node's side. Removed nodes go at
    // the same time.
    let mut in_fabric: Vec<u32> = w.ports_gone.clone();
    let mut pairs: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for &l in &w.links_gone {
        let link = &old.links[l];
        match &link.fabric_port {
            Some(port) if fabric_old.is_some() => in_fabric.push(port.ifindex),
            _ => pairs.entry(link.node).or_default().push(link.ifindex),
        }
    }
    for &s in &w.bridges_gone {
        if let Segment::Bridge { ifindex, .. } = old.subnets[s].segment {
            in_fabric.push(ifindex);
        }
    }
    let fabric_side = async {
        if let Some(fabric) = &fabric_old
            && !in_fabric.is_empty()
        {
            debug!(links = ?in_fabric, "deleting in the fabric");
            fabric.delete_links(&in_fabric).await?;
        }
        Ok::<_, ApplyError>(())
    };
    let node_side = stream::iter(pairs)
        .map(|(n, ifindexes)| async move {
            let ns = &old.nodes[n].netns;
            let Ok(nl) = Netlink::open_in(ns) else {
                return Ok(()); // the node is gone already
            };
            for ifindex in ifindexes {
                debug!(node = %old.nodes[n].name, ifindex, "deleting a veth pair");
                nl.delete_link_if_there(ifindex).await?;
            }
            Ok::<_, ApplyError>(())
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>();
    // attached containers are Docker's: only dvnet's name for their namespace goes
    for &n in &w.removed {
        let node = &old.nodes[n];
        if node.attached.is_some() && netns::exists(&node.netns) {
            netns::delete(&node.netns)?;
        }
    }
    let gone: Vec<&NodePlan> = w
        .removed
        .iter()
        .map(|&n| &old.nodes[n])
        .filter(|n| n.attached.is_none())
        .collect();
    let whole_nodes = async {
        if gone.is_empty() {
            None
        } else {
            Some(super::teardown::nodes(&old.id, &gone, ctx.docker).await)
        }
    };
    let (fabric_done, nodes_done, removed) = futures::join!(fabric_side, node_side, whole_nodes);
    fabric_done?;
    nodes_done?;
    if let Some(report) = removed {
        if let Some(e) = report.errors.first() {
            return Err(ApplyError::Teardown(e.clone()));
        }
        counts.nodes_removed = gone.len();
        counts.processes_stopped = report.processes;
    }
    counts.links_removed = w.links_gone.len();
    counts.bridges_removed = w.bridges_gone.len();
    if !w.links_gone.is_empty() || !w.removed.is_empty() {
        phases.end("removals");
    }

    // ---- what comes -------------------------------------------------------------------
    // /run/netns made a shared mount point once, by `up` (with a thousand namespaces under
    // it, doing it again costs milliseconds)
    if !fabric_exists {
        netns::prepare_dir()?;
    }
    // nodes to build; in a rollback, those still there are kept
    let built: Vec<usize> = w
        .built
        .iter()
        .copied()
        .filter(|&n| !(rollback && netns::exists(&new.nodes[n].netns)))
        .collect();
    let kept_in_rollback: BTreeSet<usize> = w
        .built
        .iter()
        .copied()
        .filter(|n| !built.contains(n))
        .collect();
    // containers first: their namespaces are adopted below
    let containers: Vec<&NodePlan> = built
        .iter()
        .map(|&n| &new.nodes[n])
        .filter(|n| n.container)
        .collect();
    let mut adopt: HashMap<&str, u32> = HashMap::new();
    if !containers.is_empty() {
        let docker = ctx.docker.ok_or_else(|| {
            ApplyError::Internal("container nodes to start, but no Docker connection".into())
        })?;
        observer.start("containers", containers.len());
        let origins = docker.start(new, &containers).await?;
        for (node, origin) in containers.iter().zip(origins) {
            if let Origin::Adopt(pid) = origin {
                adopt.insert(node.netns.as_str(), pid);
            }
        }
        phases.end("containers");
    }
    let make_fabric = !fabric_exists;
    let mut jobs = Vec::with_capacity(built.len() + 1);
    if make_fabric {
        jobs.push(NsJob {
            name: new.fabric_netns.clone(),
            sysctls: fabric_sysctls(),
            adopt: None,
        });
    }
    // containers joined through the Docker driver live in Docker's namespaces: none is made
    let in_namespaces: Vec<usize> = built
        .iter()
        .copied()
        .filter(|&n| new.nodes[n].attached.is_none())
        .collect();
    jobs.extend(in_namespaces.iter().map(|&n| {
        let node = &new.nodes[n];
        NsJob {
            name: node.netns.clone(),
            sysctls: node_sysctls(node, new.ipv6),
            adopt: adopt.get(node.netns.as_str()).copied(),
        }
    }));
    let mut handles = Handles {
        fabric: fabric_old,
        nodes: HashMap::new(),
    };
    if !jobs.is_empty() {
        observer.start("namespaces", jobs.len());
        let workers = std::thread::available_parallelism()
            .map_or(2, std::num::NonZero::get)
            .clamp(1, 4);
        let keep = jobs.len() <= HANDLES_HELD;
        let created =
            tokio::task::block_in_place(|| create_namespaces(&jobs, workers, keep, observer))?;
        let mut created = created.into_iter();
        if make_fabric
            && let Some(socket) = created
                .next()
                .expect("the fabric namespace was created first")
                .socket
        {
            handles.fabric = Some(Netlink::from_socket(socket, &new.fabric_netns).map_err(
                |source| ApplyError::Io {
                    op: "opening netlink in the fabric".into(),
                    source,
                },
            )?);
        }
        for (c, &n) in created.zip(&in_namespaces) {
            let Some(socket) = c.socket else { continue };
            let nl = Netlink::from_socket(socket, &new.nodes[n].netns).map_err(|source| {
                ApplyError::Io {
                    op: format!("opening netlink in {}", new.nodes[n].netns),
                    source,
                }
            })?;
            handles.nodes.insert(n, nl);
        }
        counts.nodes_built = built.len();
        phases.end("namespaces");
    }
    let fabric = match handles.fabric.take() {
        Some(f) => f,
        None => Netlink::open_in(&new.fabric_netns).map_err(|source| ApplyError::Io {
            op: format!("opening netlink in {}", new.fabric_netns),
            source,
        })?,
    };
    // handles on the nodes that stay but change
    let links_new: BTreeSet<usize> = w
        .links_new
        .iter()
        .copied()
        .filter(|&l| !kept_in_rollback.contains(&new.links[l].node))
        .filter(|&l| {
            // in a rollback, an interface still there is kept
            !(rollback
                && !built.contains(&new.links[l].node)
                && link_exists(&new.nodes[new.links[l].node].netns, &new.links[l].ifname))
        })
        .collect();
    // segments
    if !w.bridges_new.is_empty() {
        stream::iter(
            w.bridges_new
                .iter()
                .filter_map(|&s| match &new.subnets[s].segment {
                    Segment::Bridge { name, ifindex } => Some((name, *ifindex)),
                    Segment::PointToPoint | Segment::Empty => None,
                }),
        )
        .map(|(name, ifindex)| {
            let fabric = &fabric;
            async move {
                if rollback && fabric.index_of(name).await.is_ok() {
                    return Ok(());
                }
                debug!(bridge = %name, ifindex, "bridge");
                fabric.add_bridge(name, ifindex).await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
        counts.bridges_created = w.bridges_new.len();
        tunnels(new, &w.bridges_new, &fabric, rollback).await?;
        phases.end("bridges");
    }

    // wires: one veth each, both ends created in place, down, by one message; then each end
    // gets its ingress qdisc and comes up (see [`ready`])
    let wires = wires(new, &links_new)?;
    if !wires.is_empty() {
        observer.start("links", wires.len());
        // Each pair is made through the handle on its peer end's node; an end in another
        // node gets its qdisc through that node's handle. In the order that binds each
        // node's qdiscs close together (see [`binding_order`]), which also lets a batch of
        // handles serve neighbours.
        let wires = binding_order(wires, new.nodes.len());
        let nodes_of = |wire: &Wire<'_>| {
            let mut nodes = vec![wire.peer().node];
            if let Wire::PointToPoint(a, _) = wire
                && in_place(new, a)
            {
                nodes.push(a.node);
            }
            nodes
        };
        let fabric_ns = netns::open(&new.fabric_netns)?;
        let (fabric, fabric_ns) = (&fabric, &fabric_ns);
        on_nodes(
            new,
            &handles.nodes,
            &wires,
            nodes_of,
            |nls, wire| async move {
                let nl = &nls[0];
                let peer = wire.peer();
                // in the namespace of the handle: its node's
                let peer_end = node_end(peer, None, new.mtu);
                match *wire {
                    Wire::ToBridge { link, port, bridge } => {
                        debug!(
                            link = %link.ifname,
                            ifindex = link.ifindex,
                            port = %port.ifname,
                            bridge,
                            "veth to a bridge"
                        );
                        let fabric_end = VethEnd {
                            name: &port.ifname,
                            ifindex: port.ifindex,
                            mac: port.mac,
                            netns: Some(fabric_ns.as_fd()),
                            master: Some(bridge),
                            mtu: new.mtu,
                            up: false,
                        };
                        nl.add_veth(&fabric_end, &peer_end).await?;
                        fabric.add_ingress(port.ifindex, Some(SHARED_BLOCK)).await?;
                        fabric.set_up(port.ifindex).await?;
                    }
                    Wire::PointToPoint(a, b) => {
                        debug!(a = %a.ifname, b = %b.ifname, "veth pair");
                        let ns_a = node_ns(new, a.node)?;
                        nl.add_veth(&node_end(a, Some(ns_a.as_fd()), new.mtu), &peer_end)
                            .await?;
                        if let Some(nl_a) = nls.get(1) {
                            ready(nl_a, a).await?;
                        }
                    }
                }
                if in_place(new, peer) {
                    ready(nl, peer).await?;
                }
                observer.advance(1);
                Ok::<_, ApplyError>(())
            },
        )
        .await?;
        counts.links_created = links_new.len();
        phases.end("links");
    }

    // the host's end of the uplink, when it comes now
    if let Some(uplink) = &new.uplink
        && old.uplink.is_none()
        && ctx.mode == Mode::Forward
    {
        crate::host::add_uplink(new, uplink, &fabric).await?;
        phases.end("uplink");
    }

    // inside the nodes: loopback and interfaces up, addresses, routes
    let built_set: BTreeSet<usize> = built.iter().copied().collect();
    let mut configure: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &l in &links_new {
        configure.entry(new.links[l].node).or_default().push(l);
    }
    for &n in &built {
        configure.entry(n).or_default();
    }
    // Docker configures an attached container's interface (address, routes) when it moves it
    configure.retain(|&n, _| new.nodes[n].attached.is_none());
    for &n in &w.rerouted {
        configure.entry(n).or_default();
    }
    for &(_, l) in w.readdressed.iter().chain(&w.readdressed6) {
        configure.entry(new.links[l].node).or_default();
    }
    for &l in &w.states {
        configure.entry(new.links[l].node).or_default();
    }
    configure.retain(|&n, _| new.nodes[n].attached.is_none());
    let states: BTreeSet<usize> = w.states.iter().copied().collect();
    if !configure.is_empty() {
        observer.start("addresses", configure.len());
        let readdressed: HashMap<usize, usize> =
            w.readdressed.iter().map(|&(o, n)| (n, o)).collect();
        let readdressed6: HashMap<usize, usize> =
            w.readdressed6.iter().map(|&(o, n)| (n, o)).collect();
        let removed_routes: HashMap<&str, &crate::plan::diff::RouteChange> = ctx
            .diff
            .routes
            .iter()
            .map(|r| (r.node.as_str(), r))
            .collect();
        let old_nodes: HashMap<&str, &NodePlan> =
            old.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let old_nodes = &old_nodes;
        let fabric = &fabric;
        let configure: Vec<(usize, Vec<usize>)> = configure.into_iter().collect();
        on_each_node(
            new,
            &handles.nodes,
            &configure,
            |&(n, _)| n,
            |nl, (n, made)| {
                let n = *n;
                let readdressed = &readdressed;
                let readdressed6 = &readdressed6;
                let removed_routes = &removed_routes;
                let states = &states;
                let built = built_set.contains(&n);
                async move {
                    let node = &new.nodes[n];
                    let nl = &nl;
                    debug!(
                        node = %node.name,
                        links = made.len(),
                        routes = node.routes.len(),
                        "addresses and routes"
                    );
                    if built {
                        // a qdisc before `up` (see [`ready`])
                        if node.own_route {
                            nl.add_ingress(LO_IFINDEX, Some(SHARED_BLOCK)).await?;
                        }
                        nl.set_up(1).await?;
                    }
                    // (made links came up with their veths and qdiscs, unless down)
                    for &l in made {
                        add_addresses(nl, new, &new.links[l]).await?;
                    }
                    for &position in &node.links {
                        let link = &new.links[position as usize];
                        if states.contains(&(position as usize)) {
                            debug!(link = %link.ifname, down = link.down, "link state");
                            if link.down {
                                nl.set_down(link.ifindex).await?;
                            } else {
                                nl.set_up(link.ifindex).await?;
                                if new.ipv6 {
                                    // the kernel flushes link-local addresses when a link
                                    // goes down, whatever `keep_addr_on_down` says
                                    match nl.add_address(link.ifindex, link.link_local(), 64).await
                                    {
                                        Err(e)
                                            if crate::netlink::is_errno(
                                                &e.source,
                                                libc::EEXIST,
                                            ) => {}
                                        other => other?,
                                    }
                                }
                            }
                        }
                    }
                    for &position in &node.links {
                        let l = &new.links[position as usize];
                        if let Some(&o) = readdressed.get(&(position as usize)) {
                            let before = &old.links[o];
                            if let Some(a) = before.address {
                                nl.delete_address(l.ifindex, a).await?;
                            }
                            nl.set_mac(l.ifindex, l.mac).await?;
                            if let Some(a) = l.address {
                                nl.add_address(l.ifindex, a, l.prefix_len).await?;
                            }
                            if new.ipv6 {
                                // the link-local address follows the MAC
                                nl.delete_address(l.ifindex, before.link_local()).await?;
                                nl.add_address(l.ifindex, l.link_local(), 64).await?;
                            }
                            if let Some(port) = &l.fabric_port {
                                fabric.set_mac(port.ifindex, port.mac).await?;
                            }
                        }
                        if let Some(&o) = readdressed6.get(&(position as usize)) {
                            let before = &old.links[o];
                            if let Some(a) = before.address6 {
                                nl.delete_address(l.ifindex, a).await?;
                            }
                            if let (Some(a), Some(net)) = (l.address6, new.subnets[l.subnet].cidr6)
                            {
                                nl.add_address(l.ifindex, a, net.prefix_len()).await?;
                            }
                        }
                    }
                    let before = (!built)
                        .then(|| old_nodes.get(node.name.as_str()))
                        .flatten();
                    let was_own = before.is_some_and(|o| o.own_route);
                    if node.own_route {
                        // the kernel's own packets go through `lo`, whose program routes them
                        // by the route map (a node made now gets the block's program in the
                        // programs pass; one that has it already, on this qdisc at once)
                        if !was_own && !built {
                            // the kernel routes it had go first (a default route among them
                            // too): the map has them
                            for r in before.iter().flat_map(|b| &b.routes) {
                                nl.delete_route_to(r.dest).await?;
                            }
                            nl.add_ingress(LO_IFINDEX, Some(SHARED_BLOCK)).await?;
                        }
                        if let Some(first) = new.links_of(node).find_map(|l| l.address) {
                            nl.set_own_route(first, new.mtu).await?;
                        }
                        // (IPv6 routes are few: kernel routes still)
                        for r in &node.routes6 {
                            set_kernel_route(nl, new, r, built).await?;
                        }
                    } else {
                        set_kernel_routes(nl, old, new, node, removed_routes, built, was_own)
                            .await?;
                    }
                    observer.advance(1);
                    Ok::<_, ApplyError>(())
                }
            },
        )
        .await?;
        counts.nodes_rerouted = w.rerouted.len();
        phases.end("addresses+routes");
    }

    // Programs are attached in a pass of their own, once every ingress qdisc exists: the
    // first filter on a qdisc waits for an RCU grace period since the qdisc was created
    // (`mini_qdisc_pair_swap`); by now one has passed for nearly all of them, instead of
    // an expedited grace period per interface. One filter per namespace, on its shared
    // block; made, or changed in place where the block has it already (a node that gained a
    // link keeps its block, one that lost every link made a new one).
    if !links_new.is_empty() {
        // (an attached container's program is attached once Docker has moved its interface)
        let by_node: BTreeSet<usize> = links_new
            .iter()
            .map(|&l| new.links[l].node)
            .filter(|&n| new.nodes[n].attached.is_none())
            .collect();
        let by_node: Vec<usize> = by_node.into_iter().collect();
        on_each_node(
            new,
            &handles.nodes,
            &by_node,
            |&n| n,
            |nl, _| async move {
                nl.attach_block(SHARED_BLOCK, ctx.node_prog, programs::NODE_INGRESS)
                    .await
                    .map_err(ApplyError::from)
            },
        )
        .await?;
        if links_new
            .iter()
            .any(|&l| new.links[l].fabric_port.is_some())
        {
            fabric
                .attach_block(SHARED_BLOCK, ctx.fabric_prog, programs::FABRIC_INGRESS)
                .await?;
        }
        phases.end("programs");
    }

    if delay_lines(ctx, &w, &built_set, &links_new, &fabric).await? {
        phases.end("delay lines");
    }

    // firewalls the datapath keeps outside its maps (the kernel's iptables): routers built,
    // and routers whose rules changed
    let changed: BTreeSet<&str> = ctx
        .diff
        .firewalls
        .iter()
        .map(|f| f.router.as_str())
        .collect();
    let routers: Vec<&NodePlan> = new
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            // a new router without rules needs none
            (built_set.contains(i)
                && n.firewall
                    .as_ref()
                    .is_some_and(crate::plan::FirewallPlan::active))
                || changed.contains(n.name.as_str())
        })
        .map(|(_, n)| n)
        .collect();
    if crate::datapath::of(new.datapath)
        .apply_firewalls(&routers)
        .await?
    {
        phases.end("firewalls");
    }
    Ok(counts)
}

/// A link's addresses: its IPv4 address (none on an IPv6-only subnet); in a network with
/// IPv6, its link-local address and, on a subnet with a `cidr6`, its global IPv6 address.
async fn add_addresses(nl: &Netlink, plan: &Plan, link: &LinkPlan) -> Result<(), ApplyError> {
    if let Some(address) = link.address {
        nl.add_address(link.ifindex, address, link.prefix_len)
            .await?;
    }
    if plan.ipv6 {
        nl.add_address(link.ifindex, link.link_local(), 64).await?;
        if let (Some(address6), Some(cidr6)) = (link.address6, plan.subnets[link.subnet].cidr6) {
            nl.add_address(link.ifindex, address6, cidr6.prefix_len())
                .await?;
        }
    }
    Ok(())
}

/// A node's routes as kernel routes: those that went, deleted; the others set (added on a
/// node made now). A router whose own packets went through `lo` (`was_own`) stops that.
/// IPv6 routes are set too (a network with IPv6 is never edited but for impairments and
/// link states: they are all set again when a link comes back up).
/// One route as a kernel route: added (`built`) or set in place, through its next hops
/// whose links are up (the kernel takes no route through a link that is down).
async fn set_kernel_route<N, A>(
    nl: &Netlink,
    new: &Plan,
    r: &crate::plan::RoutePlan<N, A>,
    built: bool,
) -> Result<(), ApplyError>
where
    N: Into<ipnet::IpNet> + Copy,
    A: Into<std::net::IpAddr> + Copy,
{
    let hops: Vec<(A, u32)> = r
        .nexthops()
        .map(|(via, _, l)| (via, &new.links[l as usize]))
        .filter(|(_, link)| !link.down)
        .map(|(via, link)| (via, link.ifindex))
        .collect();
    match hops[..] {
        [] => {}
        [(via, ifindex)] if built => {
            nl.add_route(r.dest, via, ifindex).await?;
        }
        [(via, ifindex)] => {
            nl.replace_route(r.dest, via, ifindex).await?;
        }
        _ => nl.set_multipath_route(r.dest, &hops, !built).await?,
    }
    Ok(())
}

async fn set_kernel_routes(
    nl: &Netlink,
    old: &Plan,
    new: &Plan,
    node: &NodePlan,
    removed_routes: &HashMap<&str, &crate::plan::diff::RouteChange>,
    built: bool,
    was_own: bool,
) -> Result<(), ApplyError> {
    if let Some(change) = removed_routes.get(node.name.as_str()) {
        for r in &change.remove {
            let dev = old.links.get(r.link as usize).map_or(0, |l| l.ifindex);
            nl.delete_route(r.dest, r.via, dev).await?;
        }
        for r in &change.remove6 {
            let dev = old.links.get(r.link as usize).map_or(0, |l| l.ifindex);
            nl.delete_route(r.dest, r.via, dev).await?;
        }
    }
    for r in &node.routes {
        set_kernel_route(nl, new, r, built).await?;
    }
    for r in &node.routes6 {
        set_kernel_route(nl, new, r, built).await?;
    }
    if was_own {
        // back to a kernel route per destination (set above)
        nl.delete_own_route().await?;
        nl.delete_ingress(LO_IFINDEX).await?;
    }
    Ok(())
}

/// The delay lines of a plan, by far-end ifindex: (link position, into the node, line).
fn lines_of(plan: &Plan) -> BTreeMap<u32, (usize, bool, &crate::plan::DelayLine)> {
    let mut out = BTreeMap::new();
    for (l, link) in plan.links.iter().enumerate() {
        for (into, hook) in [(true, &link.into_node), (false, &link.from_node)] {
            if let Some(d) = &hook.delay {
                out.insert(d.far_ifindex, (l, into, d));
            }
        }
    }
    out
}

/// A delay line end's MAC (locally administered, from its index).
fn delay_mac(ifindex: u32) -> [u8; 6] {
    let b = ifindex.to_be_bytes();
    [0x02, 0xd7, 0xde, b[1], b[2], b[3]]
}

/// Makes the veth pairs of the delay lines that start now (or whose link or node was made
/// anew, removed first): the far end in the fabric, the near end where the hooked interface
/// is, its program attached. (Lines that stop are removed by [`remove_delay_lines`], once
/// the datapath no longer sends into them.) Returns whether there was anything to do.
async fn delay_lines(
    ctx: &Ctx<'_>,
    _w: &Work,
    built: &BTreeSet<usize>,
    links_new: &BTreeSet<usize>,
    fabric: &Netlink,
) -> Result<bool, ApplyError> {
    let (old, new) = (ctx.old, ctx.new);
    let (before, after) = (lines_of(old), lines_of(new));
    let remade: BTreeSet<u32> = after
        .iter()
        .filter(|(_, (l, ..))| built.contains(&new.links[*l].node) || links_new.contains(l))
        .map(|(far, _)| *far)
        .collect();
    let make: Vec<(usize, bool, &crate::plan::DelayLine)> = after
        .iter()
        .filter(|(far, _)| !before.contains_key(far) || remade.contains(far))
        .map(|(_, line)| *line)
        .collect();
    if make.is_empty() {
        return Ok(false);
    }
    // a pair goes whole with either end (the near end may have gone with its node)
    for far in &remade {
        fabric.delete_link_if_there(*far).await?;
    }
    let mut nodes: HashMap<usize, (OwnedFd, Netlink)> = HashMap::new();
    for (l, into, d) in make {
        if ctx.mode == Mode::Rollback {
            fabric.delete_link_if_there(d.far_ifindex).await?;
        }
        let node = new.links[l].node;
        if into && !nodes.contains_key(&node) {
            let ns = &new.nodes[node].netns;
            let nl = Netlink::open_in(ns).map_err(|source| ApplyError::Io {
                op: format!("opening netlink in {ns}"),
                source,
            })?;
            nodes.insert(node, (netns::open(ns)?, nl));
        }
        let (netns, near_nl) = if into {
            let (fd, nl) = &nodes[&node];
            (Some(fd.as_fd()), nl)
        } else {
            (None, fabric)
        };
        debug!(near = %d.ifname, far = %d.far_ifname, "delay line");
        let far = VethEnd {
            name: &d.far_ifname,
            ifindex: d.far_ifindex,
            mac: delay_mac(d.far_ifindex),
            netns: None,
            master: None,
            mtu: crate::netlink::LINK_MTU,
            up: true,
        };
        let near = VethEnd {
            name: &d.ifname,
            ifindex: d.ifindex,
            mac: delay_mac(d.ifindex),
            netns,
            master: None,
            mtu: crate::netlink::LINK_MTU,
            up: false,
        };
        fabric.add_veth(&far, &near).await?;
        near_nl.set_up(d.ifindex).await?;
        // a program of its own: not the node's shared block
        near_nl.add_ingress(d.ifindex, None).await?;
        near_nl
            .attach_ingress(d.ifindex, ctx.delay_prog, programs::DELAY_RETURN)
            .await?;
    }
    Ok(true)
}

/// Removes the veth pairs of the delay lines `old` has and `new` has not (the datapath no
/// longer sends into them; the delay line has let go of them).
///
/// # Errors
/// When the fabric's netlink cannot be opened or refuses.
pub async fn remove_delay_lines(old: &Plan, new: &Plan) -> Result<bool, ApplyError> {
    let after = lines_of(new);
    let gone: Vec<u32> = lines_of(old)
        .into_keys()
        .filter(|far| !after.contains_key(far))
        .collect();
    if gone.is_empty() {
        return Ok(false);
    }
    let fabric = Netlink::open_in(&new.fabric_netns).map_err(|source| ApplyError::Io {
        op: format!("opening netlink in {}", new.fabric_netns),
        source,
    })?;
    for far in gone {
        debug!(far, "delay line removed");
        fabric.delete_link_if_there(far).await?;
    }
    Ok(true)
}

/// Whether namespace `ns` has an interface called `name` (rollback: kept as it is).
fn link_exists(ns: &str, name: &str) -> bool {
    let Ok(fd) = netns::open(ns) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads a NUL-terminated name
    netns::on_thread(
        fd.as_fd(),
        move || unsafe { libc::if_nametoindex(name.as_ptr()) } != 0,
    )
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{GenSpec, Shape, generate};
    use crate::plan::PlanOptions;
    use crate::topology::Topology;

    fn plan(shape: Shape, nodes: usize, hosts_per_lan: usize) -> Plan {
        let spec = GenSpec::of(shape, nodes, hosts_per_lan);
        let doc = generate(&spec).expect("a generated network").to_string();
        let topo = Topology::from_json(&doc, "test.json").expect("a valid topology");
        Plan::build(&topo, PlanOptions::default()).expect("a plan")
    }

    /// Every wire once; in a tree, each router's wires come together: those to its children
    /// (and its LAN) one after the other, right where the walk reaches it.
    #[test]
    fn binding_order_takes_each_wire_once_a_node_after_the_other() {
        for (shape, hosts) in [(Shape::Tree, 1), (Shape::Chain, 1), (Shape::Grid, 2)] {
            let p = plan(shape, 200, hosts);
            let all: BTreeSet<usize> = (0..p.links.len()).collect();
            let made = wires(&p, &all).expect("wires");
            let count = made.len();
            let ordered = binding_order(made, p.nodes.len());
            assert_eq!(ordered.len(), count, "{shape:?}");
            let mut links: Vec<u32> = ordered
                .iter()
                .flat_map(|w| match *w {
                    Wire::PointToPoint(a, b) => vec![a.ifindex, b.ifindex],
                    Wire::ToBridge { link, .. } => vec![link.ifindex],
                })
                .collect();
            let total = links.len();
            links.sort_unstable();
            links.dedup();
            assert_eq!(links.len(), total, "{shape:?}: a link made twice");
            if shape == Shape::Tree {
                // the wires of a router with more than one child, as positions in the order
                for (n, node) in p.nodes.iter().enumerate() {
                    let at: Vec<usize> = ordered
                        .iter()
                        .enumerate()
                        .filter(|(_, w)| match **w {
                            Wire::PointToPoint(a, b) => {
                                // wires to its children: it is the end nearer the root
                                (a.node == n || b.node == n) && a.node.min(b.node) == n
                            }
                            Wire::ToBridge { link, .. } => link.node == n,
                        })
                        .map(|(i, _)| i)
                        .collect();
                    if let (Some(first), Some(last)) = (at.first(), at.last()) {
                        assert_eq!(
                            last - first + 1,
                            at.len(),
                            "{}: its wires apart in the order ({at:?})",
                            node.name
                        );
                    }
                }
            }
        }
    }
}
