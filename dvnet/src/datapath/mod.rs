//! How routers forward and filter, and how links are counted.
//!
//! Both datapaths count every link with eBPF (so `dvnet stats` works with either); they
//! differ in who forwards and filters: `ebpf` — the `node_ingress` program on every router
//! interface, driven by the route and firewall maps, with kernel forwarding off; `kernel` —
//! kernel forwarding and iptables rules inside the router namespaces.

pub mod ebpf;
pub mod entries;
pub mod kernel;

use futures::future::BoxFuture;

use crate::plan::{Datapath, NodePlan};

/// What differs between datapaths beyond the plan's facts (who forwards in each node is
/// [`crate::plan::Forwarder`]; which map entries exist is [`entries`]). A new datapath is
/// a new file implementing this.
pub trait Forwarding: Sync {
    /// Makes the firewalls of `routers` what their plans say, where the datapath keeps them
    /// outside its maps; `true` when there was anything to do.
    fn apply_firewalls<'a>(
        &'a self,
        routers: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, Result<bool, kernel::KernelFirewallError>>;
}

/// The datapath's backend.
#[must_use]
pub fn of(datapath: Datapath) -> &'static dyn Forwarding {
    match datapath {
        Datapath::Ebpf => &ebpf::Programs,
        Datapath::Kernel => &kernel::Iptables,
    }
}
