//! The plan: everything `up` will build, computed from a [`Topology`] without any I/O —
//! addresses, interface names and indexes, MACs, routes, firewall entries, the objects each
//! node needs. It is `Serialize`, so `dvnet plan --json` and golden tests come for free, and
//! `up`, `inspect` and `down` all work from it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::topology::{Endpoint, Impair, NodeRef, Policy, Routing, Topology};

pub use frr::FrrPlan;
pub use machines::{MachinePlan, RemoteNode, TunnelPlan};

mod addressing;
pub mod diff;
pub mod frr;
pub mod identity;
pub mod machines;
pub mod naming;
mod routing;

/// How routers forward and filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    /// TC eBPF programs driven by BPF maps; kernel forwarding stays off.
    #[default]
    Ebpf,
    /// Kernel forwarding and iptables rules inside the router namespaces.
    Kernel,
}

/// Where nodes run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Nodes that name an image run as Docker containers, the others as namespaces.
    #[default]
    Auto,
    /// Every node runs as a network namespace, images ignored (large benchmarks).
    Netns,
    /// Every node runs as a Docker container: one that names no image runs
    /// [`HOST_IMAGE`] or [`ROUTER_IMAGE`] (as labs built by the Docker driver do).
    Docker,
}

/// The image of a host that names none, under [`Runtime::Docker`].
pub const HOST_IMAGE: &str = "dvnet/host";
/// The image of a router that names none, under [`Runtime::Docker`].
pub const ROUTER_IMAGE: &str = "dvnet/router";

/// Choices made at `up` time that shape the plan.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanOptions {
    pub datapath: Datapath,
    pub runtime: Runtime,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("subnet \"{subnet}\" ({cidr}) has no address left")]
    SubnetExhausted { subnet: String, cidr: ipnet::IpNet },
}

/// What `up` builds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub id: String,
    pub datapath: Datapath,
    /// Where nodes run (`--runtime`); kept so that edits plan the same way.
    #[serde(default)]
    pub runtime: Runtime,
    pub routing: Routing,
    /// Routes use every equal-cost next hop (`"ecmp": true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ecmp: bool,
    pub update_hosts: bool,
    /// The namespace holding the segments.
    pub fabric_netns: String,
    pub subnets: Vec<SubnetPlan>,
    pub nodes: Vec<NodePlan>,
    /// One per node interface. References inside the plan (`NodePlan::links`,
    /// `SubnetPlan::links`, `RoutePlan::link`) are positions in this list; `LinkPlan::id` is
    /// the link's stable identity.
    pub links: Vec<LinkPlan>,
    /// Outbound access: the uplink joining the host to the border routers.
    pub uplink: Option<UplinkPlan>,
    /// In a lab placed on several machines, the machine whose share this is: only its nodes
    /// are here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachinePlan>,
    /// IPv6 is on in every node (some subnet has a `cidr6`): every link has a link-local
    /// address, links on subnets with `cidr6` a global one, and nodes IPv6 routes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
    /// The MTU of every link (less than the veth default in a lab spanning machines).
    #[serde(default = "link_mtu", skip_serializing_if = "is_link_mtu")]
    pub mtu: u32,
    /// Things the user should know (islands, missing routing).
    pub warnings: Vec<String>,
}

fn link_mtu() -> u32 {
    crate::netlink::LINK_MTU
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_link_mtu(mtu: &u32) -> bool {
    *mtu == crate::netlink::LINK_MTU
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetPlan {
    pub name: String,
    /// `None` on an IPv6-only subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Net>,
    /// How the subnet's links are joined.
    pub segment: Segment,
    /// Links on this subnet (positions in [`Plan::links`]).
    pub links: Vec<u32>,
    /// Impairments of every packet entering the segment.
    #[serde(default, skip_serializing_if = "Impair::is_none")]
    pub impair: Impair,
    /// The VXLAN port joining the segment's bridge to its members on other machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelPlan>,
}

/// What carries a subnet.
///
/// Two members (every transit link between two routers, every LAN of one host) are joined by
/// one veth pair, node to node: half the kernel objects of a bridge with two ports, and as
/// real as a cable. Any other number of members share a bridge in the fabric namespace, each
/// member wired to it by a veth whose fabric-side end is the member's *fabric port*.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Segment {
    /// No member: nothing is built.
    Empty,
    /// Exactly two members, joined directly.
    PointToPoint,
    /// A bridge in the fabric namespace.
    Bridge { name: String, ifindex: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Router,
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    /// The node's stable identity: the router id in BPF keys.
    pub id: u32,
    pub kind: NodeKind,
    /// Namespace name (and container name for container nodes).
    pub netns: String,
    pub image: Option<String>,
    /// Runs as a Docker container (it names an image, and the runtime is not `netns`).
    pub container: bool,
    /// This node's links, in interface order (positions in [`Plan::links`]).
    pub links: Vec<u32>,
    /// Routes beyond the connected ones.
    pub routes: Vec<RoutePlan>,
    /// IPv6 routes beyond the connected ones, through the next hops' link-local addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes6: Vec<Route6Plan>,
    /// Who forwards in this node: decided here, once, for every later step.
    pub forwarder: Forwarder,
    /// An eBPF router with more than [`OWN_ROUTE_MIN`] routes: its kernel gets one default
    /// route on `lo` for the packets it sends itself, which the program on `lo` routes by the
    /// route map, instead of a kernel route per destination (the routes are the map's
    /// already; thousands of kernel routes per router cost more than the rest of `up`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_route: bool,
    /// Routers only: the firewall, resolved to prefixes.
    pub firewall: Option<FirewallPlan>,
    /// Routers that run FRR.
    pub frr: Option<FrrPlan>,
    /// A host that is a Docker container joined through dvnet's network driver: Docker owns
    /// its namespace and configures its interface; dvnet wires the interface's other end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<Attachment>,
}

/// How a container joined a network through the Docker driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Docker's endpoint id.
    pub endpoint: String,
    /// The Docker network it joined through.
    pub docker_network: String,
    /// Its interface's name while it waits, in dvnet's namespace, for Docker to move it
    /// into the container (Docker renames it there).
    pub src_name: String,
}

impl Attachment {
    /// The host's name in the network for endpoint `endpoint` (`c-` and its first 12 hex).
    #[must_use]
    pub fn node_name(endpoint: &str) -> String {
        format!("c-{}", &endpoint[..endpoint.len().min(12)])
    }

    /// The interface's name before Docker moves it (15 characters at most).
    #[must_use]
    pub fn src_name(endpoint: &str) -> String {
        format!("dvc{}", &endpoint[..endpoint.len().min(12)])
    }
}

/// Who forwards packets in a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Forwarder {
    /// Nobody: a host.
    #[default]
    None,
    /// The kernel (`--datapath kernel` routers): forwarding on, iptables firewall.
    Kernel,
    /// dvnet's eBPF program on every interface, kernel forwarding off; with
    /// `fib_fallback`, a route-map miss asks the kernel's FIB (a routing daemon fills it).
    Program { fib_fallback: bool },
}

impl LinkPlan {
    /// The link's IPv6 link-local address (from its MAC), in a network with IPv6.
    #[must_use]
    pub fn link_local(&self) -> Ipv6Addr {
        addressing::link_local(self.mac)
    }

    /// The address that names the link for people: its IPv4 address, or on an IPv6-only
    /// subnet its global IPv6 one.
    #[must_use]
    pub fn label_address(&self) -> IpAddr {
        match (self.address, self.address6) {
            (Some(a), _) => a.into(),
            (None, Some(a)) => a.into(),
            (None, None) => unreachable!("every link has an address in some family"),
        }
    }
}

impl SubnetPlan {
    /// The prefix that names the subnet for people: IPv4, or on an IPv6-only subnet IPv6.
    #[must_use]
    pub fn label(&self) -> String {
        match (self.cidr, self.cidr6) {
            (Some(c), _) => c.to_string(),
            (None, Some(c)) => c.to_string(),
            (None, None) => unreachable!("every subnet has a prefix in some family"),
        }
    }
}

impl Plan {
    /// The uplink's IPv4 prefix (outbound access always has one).
    ///
    /// # Panics
    /// Without outbound access.
    #[must_use]
    pub fn uplink_cidr(&self) -> Ipv4Net {
        let uplink = self.uplink.as_ref().expect("outbound access");
        self.subnets[uplink.subnet]
            .cidr
            .expect("the uplink has IPv4")
    }
}

impl FirewallPlan {
    /// Whether the firewall filters anything (rules, or a DROP policy).
    #[must_use]
    pub fn active(&self) -> bool {
        !self.rules.is_empty() || self.policy == Policy::Drop
    }
}

/// A node's interface: on a point-to-point segment, one end of the veth pair joining it to the
/// other member; on a bridged segment, wired to its fabric port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPlan {
    /// The link's stable identity: its slot in the counters.
    pub id: u32,
    /// Index into [`Plan::nodes`].
    pub node: usize,
    /// Index into [`Plan::subnets`].
    pub subnet: usize,
    pub ifname: String,
    pub ifindex: u32,
    #[serde(with = "mac")]
    pub mac: [u8; 6],
    /// `None` on an IPv6-only subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The IPv4 prefix length (0 without an IPv4 address).
    pub prefix_len: u8,
    /// The global IPv6 address, on a subnet with a `cidr6` (its prefix length is the
    /// subnet's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    /// On bridged segments only.
    pub fabric_port: Option<FabricPort>,
    /// The member's own impairments, both directions of this link (the file's, or what
    /// `dvnet impair` set).
    #[serde(default, skip_serializing_if = "Impair::is_none")]
    pub impair: Impair,
    /// What packets delivered to the node on this link meet, at its interface's ingress:
    /// on a veth pair, the segment's impairments, then the other end's, then this end's; on
    /// a bridge, this end's.
    #[serde(default, skip_serializing_if = "Hook::is_none")]
    pub into_node: Hook,
    /// Bridged segments: what packets the node sends meet, at its fabric port's ingress: the
    /// segment's impairments, then this end's. (On a veth pair the other end's `into_node`
    /// does it.)
    #[serde(default, skip_serializing_if = "Hook::is_none")]
    pub from_node: Hook,
    /// Taken down on purpose (`dvnet link NET NODE SUBNET down`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub down: bool,
}

/// Impairments applied where packets arrive on an interface, and the delay line that holds
/// them back when they must wait (delay, jitter, rate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub impair: Impair,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayLine>,
}

impl Hook {
    #[must_use]
    pub fn is_none(&self) -> bool {
        self.impair.is_none() && self.delay.is_none()
    }
}

/// A veth pair a delayed packet takes: the datapath sends it into the near end (in the
/// hooked interface's namespace), dvnet's delay line reads it at the far end (in the fabric
/// namespace) and sends it back when its time comes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayLine {
    pub ifname: String,
    pub ifindex: u32,
    pub far_ifname: String,
    pub far_ifindex: u32,
}

/// The fabric-side end of a link on a bridged segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricPort {
    pub ifname: String,
    pub ifindex: u32,
    #[serde(with = "mac")]
    pub mac: [u8; 6],
}

/// A route: IPv4 (the default), or IPv6 ([`Route6Plan`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePlan<N = Ipv4Net, A = Ipv4Addr> {
    pub dest: N,
    pub via: A,
    /// Outgoing interface (name inside the node).
    pub dev: String,
    /// Outgoing link (position in [`Plan::links`]).
    pub link: u32,
    /// With `"ecmp": true`, the other next hops of equal cost: the route's next hops are
    /// this one and these (each flow takes one of them).
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub ecmp: Vec<NextHop<A>>,
}

/// An IPv6 route, through the next hop's link-local address.
pub type Route6Plan = RoutePlan<Ipv6Net, Ipv6Addr>;

/// One more next hop of a route (see [`RoutePlan::ecmp`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextHop<A = Ipv4Addr> {
    pub via: A,
    pub dev: String,
    /// Position in [`Plan::links`].
    pub link: u32,
}

impl<N, A: Copy> RoutePlan<N, A> {
    /// Every next hop: (gateway, interface, link), the first one first.
    pub fn nexthops(&self) -> impl Iterator<Item = (A, &str, u32)> {
        std::iter::once((self.via, self.dev.as_str(), self.link))
            .chain(self.ecmp.iter().map(|h| (h.via, h.dev.as_str(), h.link)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallPlan {
    pub policy: Policy,
    /// `drop` rules first, then `accept` rules, each in file order.
    pub rules: Vec<RulePlan>,
    /// The network has IPv6: the firewall filters it too (the policy, and the rules with
    /// IPv6 prefixes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    Drop,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePlan {
    /// The rule's stable slot in the hit counters.
    pub slot: u32,
    pub action: Action,
    /// Source prefixes (`0.0.0.0/0` for any); empty when the rule matches IPv6 only.
    pub src: Vec<Ipv4Net>,
    /// Destination prefixes (`0.0.0.0/0` for any); empty when the rule matches IPv6 only.
    pub dst: Vec<Ipv4Net>,
    /// In a network with IPv6: the rule's IPv6 source prefixes (`::/0` for any); empty when
    /// it matches IPv4 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src6: Vec<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst6: Vec<Ipv6Net>,
    /// IP protocol number, if the rule names one.
    pub proto: Option<u8>,
    pub dport: Option<u16>,
    /// Where the rule stands in the file.
    pub origin: String,
}

/// The subnet that joins the host to the border routers (`outbound_access`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkPlan {
    /// Index into [`Plan::subnets`] (always a bridge).
    pub subnet: usize,
    /// The host's address on it.
    pub host_address: Ipv4Addr,
    /// The host's end of its veth to the uplink bridge, in the host's namespace.
    pub host_ifname: String,
    /// The other end, on the bridge.
    pub fabric_port: FabricPort,
    /// Routes the host gets to the network's subnets, through border routers.
    pub host_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Source prefixes the host masquerades when they leave through its other interfaces.
    pub nat_sources: Vec<Ipv4Net>,
    /// The host's IPv6 address on it, when the uplink has a `cidr6` (outbound access over
    /// IPv6, masqueraded as IPv4 is: NAT66).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address6: Option<Ipv6Addr>,
    /// The host's IPv6 routes to the network's subnets, through border routers' global
    /// addresses on the uplink.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_routes6: Vec<(Ipv6Net, Ipv6Addr)>,
    /// IPv6 source prefixes the host masquerades.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_sources6: Vec<Ipv6Net>,
    /// Published ports: DNAT on the host.
    pub published: Vec<PublishPlan>,
}

/// A host port forwarded to a node's port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishPlan {
    pub host_port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
    pub node: String,
    /// The node's first IPv4 address (none for a host on an IPv6-only subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The node's IPv6 address, when the uplink has IPv6: the port is published on the
    /// host's IPv6 addresses too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    pub node_port: u16,
}

pub use crate::topology::UPLINK;

/// Where each packet meets its impairments (see [`LinkPlan::into_node`] and
/// [`LinkPlan::from_node`]), and the delay lines of those that must wait, identities kept by
/// link and direction.
fn impairment_hooks(
    links: &mut [LinkPlan],
    subnets: &[SubnetPlan],
    prev: &identity::Previous<'_>,
    ifindexes: &mut identity::Pool,
) {
    for s in subnets {
        match (&s.segment, s.links.as_slice()) {
            (Segment::PointToPoint, &[a, b]) => {
                let (a, b) = (a as usize, b as usize);
                let (ia, ib) = (links[a].impair, links[b].impair);
                links[a].into_node.impair = s.impair.then(&ib).then(&ia);
                links[b].into_node.impair = s.impair.then(&ia).then(&ib);
            }
            (Segment::Bridge { .. }, members) => {
                for &l in members {
                    let link = &mut links[l as usize];
                    link.from_node.impair = s.impair.then(&link.impair);
                    link.into_node.impair = link.impair;
                }
            }
            _ => {}
        }
    }
    for link in links.iter_mut() {
        for (into, tag) in [(true, 'i'), (false, 'o')] {
            let hook = if into {
                &mut link.into_node
            } else {
                &mut link.from_node
            };
            if !hook.impair.queues() {
                continue;
            }
            let kept = prev.delay_line(link.id, into);
            let (ifindex, far_ifindex) =
                kept.unwrap_or_else(|| (ifindexes.take(), ifindexes.take()));
            hook.delay = Some(DelayLine {
                ifname: format!("dvd{}{tag}", link.id),
                ifindex,
                far_ifname: format!("dvq{}{tag}", link.id),
                far_ifindex,
            });
        }
    }
}

/// `topo` with the uplink as one more subnet of the border routers, which take the addresses
/// after the host's.
fn with_uplink(topo: &Topology, out: &crate::topology::Outbound) -> Topology {
    let mut t = topo.clone();
    let uplink = t.subnets.len();
    t.subnets.push(crate::topology::Subnet {
        name: UPLINK.to_owned(),
        cidr: Some(out.cidr),
        cidr6: out.cidr6,
        impair: crate::topology::Impair::default(),
    });
    // the host holds the first address (reserved); border routers take the next ones
    for &r in &out.routers {
        t.routers[r].subnets.push(uplink);
        t.routers[r].ips.push(None);
        t.routers[r].ips6.push(None);
        t.routers[r].impair.push(crate::topology::Impair::default());
    }
    t
}

/// The host's address on the uplink: the prefix's first.
fn uplink_host_address(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

/// The host's IPv6 address on the uplink: the prefix's first.
fn uplink_host_address6(cidr6: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(cidr6.network()) + 1)
}

/// The uplink's plan, and the default routes toward it.
fn uplink_plan(
    topo: &Topology,
    out: &crate::topology::Outbound,
    subnet: usize,
    (id, port_ifindex): (&str, u32),
    nodes: &mut [NodePlan],
    links: &[LinkPlan],
    subnets: &[SubnetPlan],
) -> UplinkPlan {
    let host_address = uplink_host_address(out.cidr);
    let host_address6 = out.cidr6.map(uplink_host_address6);
    // (position, link) of each node on the uplink
    let uplink_links: Vec<Option<(u32, LinkPlan)>> = nodes
        .iter()
        .map(|n| {
            n.links
                .iter()
                .map(|&l| (l, &links[l as usize]))
                .find(|(_, l)| l.subnet == subnet)
                .map(|(at, l)| (at, l.clone()))
        })
        .collect();
    let on_uplink = |n: usize| uplink_links[n].clone().map(|(_, l)| l);
    // default routes: border routers to the host; other routers toward their route to the
    // uplink (static routing; a routing daemon spreads the default itself); in each family
    // the uplink has
    for (node, uplink_link) in nodes.iter_mut().zip(&uplink_links).take(topo.routers.len()) {
        // a border router's default route, to the host's address on the uplink
        fn border<N: Default, A>(on: Option<&(u32, LinkPlan)>, via: A) -> Option<RoutePlan<N, A>> {
            on.map(|(position, link)| RoutePlan {
                dest: N::default(),
                via,
                dev: link.ifname.clone(),
                link: *position,
                ecmp: Vec::new(),
            })
        }
        let default = border(uplink_link.as_ref(), host_address).or_else(|| {
            node.routes
                .iter()
                .find(|rt| rt.dest.contains(&out.cidr.network()))
                .map(|rt| RoutePlan {
                    dest: Ipv4Net::default(),
                    ..rt.clone()
                })
        });
        node.routes.extend(default);
        if let (Some(cidr6), Some(host6)) = (out.cidr6, host_address6) {
            let default6 = border(uplink_link.as_ref(), host6).or_else(|| {
                node.routes6
                    .iter()
                    .find(|rt| rt.dest.contains(&cidr6.network()))
                    .map(|rt| RoutePlan {
                        dest: Ipv6Net::default(),
                        ..rt.clone()
                    })
            });
            node.routes6.extend(default6);
        }
    }
    // the host reaches each subnet through a border router on it, or the first border router
    let border_of = |s: usize| {
        out.routers
            .iter()
            .find(|&&r| topo.routers[r].subnets.contains(&s))
            .or_else(|| out.routers.first())
            .and_then(|&r| on_uplink(r))
    };
    let others = || subnets.iter().enumerate().filter(|&(s, _)| s != subnet);
    let decisions: Vec<(Ipv4Net, Ipv4Addr)> = others()
        .filter_map(|(s, sub)| Some((sub.cidr?, border_of(s)?.address?)))
        .collect();
    let decisions6: Vec<(Ipv6Net, Ipv6Addr)> = if host_address6.is_some() {
        others()
            .filter_map(|(s, sub)| Some((sub.cidr6?, border_of(s)?.address6?)))
            .collect()
    } else {
        Vec::new()
    };
    let sources: Vec<Ipv4Net> = others().filter_map(|(_, s)| s.cidr).collect();
    let sources6: Vec<Ipv6Net> = if host_address6.is_some() {
        others().filter_map(|(_, s)| s.cidr6).collect()
    } else {
        Vec::new()
    };
    let mut published = Vec::new();
    for node in topo.nodes() {
        let (ports, n) = match node {
            NodeRef::Router(r) => (&topo.routers[r].publish, r),
            NodeRef::Host(h) => (&topo.hosts[h].publish, topo.routers.len() + h),
        };
        for p in ports {
            let first = &links[nodes[n].links[0] as usize];
            published.push(PublishPlan {
                host_port: p.host_port,
                proto: match p.proto {
                    crate::topology::Proto::Udp => "udp".to_owned(),
                    _ => "tcp".to_owned(),
                },
                node: nodes[n].name.clone(),
                address: nodes[n]
                    .links
                    .iter()
                    .find_map(|&l| links[l as usize].address),
                address6: first.address6.filter(|_| host_address6.is_some()),
                node_port: p.node_port,
            });
        }
    }
    UplinkPlan {
        subnet,
        host_address,
        host_ifname: naming::uplink_host_ifname(id),
        fabric_port: FabricPort {
            ifname: "uplink.host".to_owned(),
            ifindex: port_ifindex,
            mac: naming::mac_for(host_address, true),
        },
        host_routes: routing::aggregate(decisions),
        nat_sources: Ipv4Net::aggregate(&sources),
        host_address6,
        host_routes6: routing::aggregate6(decisions6),
        nat_sources6: Ipv6Net::aggregate(&sources6),
        published,
    }
}

/// The interface index of a container's link when it joins through Docker's driver. Its end
/// is made in the host's namespace (Docker moves it into the container), where the small
/// indexes of a lab's own range belong to the host's interfaces and to other labs' joining
/// containers: it takes one of 65,536 indexes above 2^24 (where the host's own never reach),
/// in a range of the network's own (one of 4,096, by a hash of its id), by its link id.
#[must_use]
pub fn attached_ifindex(network_id: &str, link_id: u32) -> u32 {
    let hash = naming::fnv1a(network_id.as_bytes());
    (1 << 24) + (hash % 4096) * 65_536 + (link_id % 65_536)
}

/// A route through `hops` (the first one first; with ECMP, the others too).
fn route_through<N, A>(dest: N, mut hops: impl Iterator<Item = NextHop<A>>) -> RoutePlan<N, A> {
    let first = hops.next().expect("a route has a next hop");
    RoutePlan {
        dest,
        via: first.via,
        dev: first.dev,
        link: first.link,
        ecmp: hops.collect(),
    }
}

/// Interface indexes start here: every interface a network creates gets its own index, the
/// same in whichever namespace it lives, so one eBPF program shared by all of them can tell
/// where it runs (`skb->ifindex`). New namespaces hold only `lo` (1).
pub const FIRST_IFINDEX: u32 = 16;

/// An eBPF router with more routes than this sends its own packets through the datapath
/// ([`NodePlan::own_route`]): one default route and one qdisc on `lo` then cost less than
/// its routes as kernel routes.
pub const OWN_ROUTE_MIN: usize = 32;

impl Plan {
    /// Plans `topo`.
    ///
    /// # Errors
    /// A subnet runs out of addresses (validation rejects such files before this).
    pub fn build(topo: &Topology, options: PlanOptions) -> Result<Plan, PlanError> {
        Self::build_from(topo, options, None)
    }

    /// Plans machine `machine`'s share of a lab placed on several (see [`machines`]).
    ///
    /// # Errors
    /// A subnet runs out of addresses (validation rejects such files before this).
    pub fn build_share(
        topo: &Topology,
        options: PlanOptions,
        machine: usize,
    ) -> Result<Plan, PlanError> {
        Self::build_inner(topo, options, None, false, Some(machine)).map(|(plan, _)| plan)
    }

    /// Plans `topo` as an edit of `previous` (the plan a running network was built from):
    /// everything still there keeps its identities (see [`identity`]).
    ///
    /// # Errors
    /// A subnet runs out of addresses (validation rejects such files before this).
    pub fn build_from(
        topo: &Topology,
        options: PlanOptions,
        previous: Option<&Plan>,
    ) -> Result<Plan, PlanError> {
        Self::build_inner(topo, options, previous, true, None).map(|(plan, _)| plan)
    }

    /// [`Plan::build_from`], with the previous plan's routes taken over when nothing routes
    /// depend on changed (`reuse`), or always computed; says whether they were taken over.
    #[expect(
        clippy::too_many_lines,
        reason = "one pass over the topology, in order"
    )]
    fn build_inner(
        topo: &Topology,
        options: PlanOptions,
        previous: Option<&Plan>,
        reuse: bool,
        machine: Option<usize>,
    ) -> Result<(Plan, bool), PlanError> {
        let prev = previous.map(identity::Previous::of).unwrap_or_default();
        // With outbound access, the uplink is planned as one more subnet of the border routers
        // (the host, which is not a node, holds its first address).
        let augmented;
        let topo = match &topo.outbound {
            Some(out) => {
                augmented = with_uplink(topo, out);
                &augmented
            }
            None => topo,
        };
        let uplink_subnet = topo.outbound.as_ref().map(|_| topo.subnets.len() - 1);
        let reserved: Vec<(usize, std::net::IpAddr)> = match (&topo.outbound, uplink_subnet) {
            (Some(out), Some(u)) => {
                let mut r = vec![(u, uplink_host_address(out.cidr).into())];
                r.extend(out.cidr6.map(|c| (u, uplink_host_address6(c).into())));
                r
            }
            _ => Vec::new(),
        };
        let addrs = addressing::assign(topo, &prev, &reserved)?;
        let id = machine.map_or_else(|| topo.id.clone(), |m| topo.machine_id(m));
        // a machine's share: which segments span machines
        let spans: Vec<bool> = match machine {
            Some(_) => machines::machines_on(topo)
                .iter()
                .map(|on| on.len() > 1)
                .collect(),
            None => vec![false; topo.subnets.len()],
        };
        let mut ifindexes = identity::Pool::new(FIRST_IFINDEX, prev.all_ifindexes.iter().copied());
        let mut link_ids = identity::Pool::new(0, prev.all_link_ids.iter().copied());
        let mut node_ids = identity::Pool::new(0, prev.all_node_ids.iter().copied());
        let mut rule_slots = identity::Pool::new(0, prev.all_rule_slots.iter().copied());
        let kept_bridge_names: std::collections::BTreeSet<String> = topo
            .subnets
            .iter()
            .filter_map(|s| {
                prev.bridges
                    .get(s.name.as_str())
                    .map(|(name, _)| (*name).to_owned())
            })
            .collect();

        // members per subnet decide how it is carried
        let mut members = vec![0usize; topo.subnets.len()];
        for r in &topo.routers {
            for &sub in &r.subnets {
                members[sub] += 1;
            }
        }
        for h in &topo.hosts {
            members[h.subnet] += 1;
        }
        let mut subnets: Vec<SubnetPlan> = topo
            .subnets
            .iter()
            .enumerate()
            .map(|(i, s)| SubnetPlan {
                name: s.name.clone(),
                cidr: s.cidr,
                cidr6: s.cidr6,
                segment: match members[i] {
                    _ if Some(i) == uplink_subnet || spans[i] => {
                        bridge(&s.name, i, &prev, &kept_bridge_names, &mut ifindexes)
                    }
                    0 => Segment::Empty,
                    2 => Segment::PointToPoint,
                    _ => bridge(&s.name, i, &prev, &kept_bridge_names, &mut ifindexes),
                },
                links: Vec::new(),
                impair: s.impair,
                tunnel: None,
            })
            .collect();
        let tunnels: Vec<Option<u32>> = spans
            .iter()
            .map(|&spans| spans.then(|| ifindexes.take()))
            .collect();

        let mut nodes = Vec::with_capacity(topo.routers.len() + topo.hosts.len());
        let mut links: Vec<LinkPlan> = Vec::new();
        for node in topo.nodes() {
            // name, kind, subnets, and each subnet's addresses in either family
            type Parts<'a> = (
                &'a str,
                NodeKind,
                Vec<usize>,
                Vec<Option<Ipv4Addr>>,
                Vec<Option<Ipv6Addr>>,
            );
            let (name, kind, node_subnets, node_addrs, node_addrs6): Parts<'_> = match node {
                NodeRef::Router(r) => {
                    let router = &topo.routers[r];
                    (
                        &router.name,
                        NodeKind::Router,
                        router.subnets.clone(),
                        addrs.routers[r].clone(),
                        addrs.routers6[r].clone(),
                    )
                }
                NodeRef::Host(h) => {
                    let host = &topo.hosts[h];
                    (
                        &host.name,
                        NodeKind::Host,
                        vec![host.subnet],
                        vec![addrs.hosts[h]],
                        vec![addrs.hosts6[h]],
                    )
                }
            };
            let node_index = nodes.len();
            let mut node_links = Vec::with_capacity(node_subnets.len());
            // the names this node keeps: a new short name must avoid them
            let mut names: std::collections::BTreeSet<String> = node_subnets
                .iter()
                .filter_map(|&s| prev.link(name, &topo.subnets[s].name))
                .map(|l| l.ifname.to_owned())
                .collect();
            for (position, (&s, &address)) in node_subnets.iter().zip(&node_addrs).enumerate() {
                let at = u32::try_from(links.len()).expect("fewer than 2^32 links");
                let subnet = &topo.subnets[s];
                let kept = prev.link(name, &subnet.name);
                let link = kept.map_or_else(|| link_ids.take(), |l| l.id);
                let ifname = kept.map_or_else(
                    || {
                        let n = node_ifname(name, &subnet.name, position, &names);
                        names.insert(n.clone());
                        n
                    },
                    |l| l.ifname.to_owned(),
                );
                let ifindex = kept.map_or_else(|| ifindexes.take(), |l| l.ifindex);
                let bridged = matches!(subnets[s].segment, Segment::Bridge { .. });
                let fabric_port = bridged.then(|| {
                    let (ifname, ifindex) = kept
                        .and_then(|l| l.port.map(|(n, i)| (n.to_owned(), i)))
                        .unwrap_or_else(|| {
                            (
                                naming::fabric_port_ifname(name, &subnet.name, link),
                                ifindexes.take(),
                            )
                        });
                    FabricPort {
                        ifname,
                        ifindex,
                        mac: naming::link_mac(address, link, true),
                    }
                });
                links.push(LinkPlan {
                    id: link,
                    node: node_index,
                    subnet: s,
                    ifname,
                    ifindex,
                    mac: naming::link_mac(address, link, false),
                    address,
                    prefix_len: subnet.cidr.map_or(0, |c| c.prefix_len()),
                    address6: node_addrs6[position],
                    fabric_port,
                    impair: match node {
                        NodeRef::Router(r) => topo.routers[r].impair[position],
                        NodeRef::Host(h) => topo.hosts[h].impair,
                    },
                    into_node: Hook::default(),
                    from_node: Hook::default(),
                    down: false,
                });
                subnets[s].links.push(at);
                node_links.push(at);
            }
            let firewall = match node {
                NodeRef::Router(r) => Some(firewall_plan(topo, &addrs, r, &prev, &mut rule_slots)),
                NodeRef::Host(_) => None,
            };
            nodes.push(NodePlan {
                name: name.to_owned(),
                id: prev
                    .node_ids
                    .get(name)
                    .copied()
                    .unwrap_or_else(|| node_ids.take()),
                kind,
                netns: naming::node_netns(&id, name),
                image: match (options.runtime, kind) {
                    (Runtime::Docker, NodeKind::Host) => {
                        Some(topo.node_image(node).unwrap_or(HOST_IMAGE).to_owned())
                    }
                    (Runtime::Docker, NodeKind::Router) => {
                        Some(topo.node_image(node).unwrap_or(ROUTER_IMAGE).to_owned())
                    }
                    _ => topo.node_image(node).map(str::to_owned),
                },
                container: options.runtime == Runtime::Docker
                    || (options.runtime == Runtime::Auto && topo.node_image(node).is_some()),
                links: node_links,
                routes: Vec::new(),
                routes6: Vec::new(),
                forwarder: match (kind, options.datapath) {
                    (NodeKind::Host, _) => Forwarder::None,
                    (NodeKind::Router, Datapath::Kernel) => Forwarder::Kernel,
                    (NodeKind::Router, Datapath::Ebpf) => Forwarder::Program {
                        fib_fallback: topo.routing != Routing::Static,
                    },
                },
                firewall,
                frr: None,
                attached: None,
                own_route: false,
            });
        }

        impairment_hooks(&mut links, &subnets, &prev, &mut ifindexes);

        // FRR, where asked: the user's own configuration, or OSPF written by dvnet
        let mut routers_on = vec![0usize; subnets.len()];
        for link in links
            .iter()
            .filter(|l| nodes[l.node].kind == NodeKind::Router)
        {
            routers_on[link.subnet] += 1;
        }
        for (r, router) in topo.routers.iter().enumerate() {
            nodes[r].frr = if let Some(path) = &router.frr_config {
                Some(FrrPlan::File { path: path.clone() })
            } else if topo.routing == Routing::Ospf {
                let node_links: Vec<&LinkPlan> =
                    nodes[r].links.iter().map(|&l| &links[l as usize]).collect();
                Some(FrrPlan::Generated {
                    config: frr::ospf_config(
                        &nodes[r],
                        &node_links,
                        &routers_on,
                        topo.outbound
                            .as_ref()
                            .is_some_and(|o| o.routers.contains(&r)),
                        topo.ipv6(),
                    ),
                })
            } else {
                None
            };
        }

        // An edit that leaves routers, subnets and router addresses as they were leaves every
        // route as it was: taken from the previous plan instead of searched again.
        let reused = reuse
            .then(|| reusable_routes(topo, &addrs, previous, &nodes, &links))
            .flatten();
        let routing = match (&reused, topo.routing) {
            (Some(_), _) => routing::Routing {
                routers: Vec::new(),
                routers6: Vec::new(),
                default_gateway: Vec::new(),
                default_gateway6: None,
                host_routes: Vec::new(),
                host_routes6: Vec::new(),
                islands: routing::islands_of(topo),
                islands4: Vec::new(),
            },
            (None, Routing::Static) => routing::compute(topo),
            (None, _) => routing::gateways_only(topo),
        };
        let mut warnings = Vec::new();
        let runs_frr =
            |r: &crate::topology::Router| topo.routing == Routing::Ospf || r.frr_config.is_some();
        if topo.routing == Routing::None
            && topo.subnets.len() > 1
            && !topo.routers.is_empty()
            && !topo.routers.iter().any(runs_frr)
        {
            warnings.push(
                "automatic_routing is off: routers get only connected routes and hosts a default \
                 gateway; set \"automatic_routing\": true, or \"routing\": \"ospf\" to run FRR, or run a routing daemon yourself"
                    .to_owned(),
            );
        }
        let names = |members: &[usize]| {
            members
                .iter()
                .map(|&s| format!("\"{}\"", topo.subnets[s].name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (i, island) in routing.islands.iter().enumerate().skip(1) {
            let mut w = String::new();
            let _ = write!(
                w,
                "subnets {} cannot reach subnets {}: no chain of routers joins them",
                names(island),
                names(&routing.islands[0])
            );
            if i > 1 {
                w.push_str(" (nor the other islands)");
            }
            warnings.push(w);
        }
        for island in routing.islands4.iter().skip(1) {
            warnings.push(format!(
                "over IPv4, subnets {} cannot reach subnets {}: only IPv6-only subnets join \
                 them, and IPv4 does not cross a subnet without \"cidr\" (IPv6 does)",
                names(island),
                names(&routing.islands4[0])
            ));
        }

        let router_count = topo.routers.len();
        let computed = reused.is_none();
        let took_over = !computed;
        if let Some(reused) = reused {
            for (node, routes) in nodes.iter_mut().zip(reused) {
                node.routes = routes;
            }
        }
        // a router's link on a subnet (its IPv4 address, its link-local address for IPv6)
        let router_links: Vec<Vec<u32>> = nodes[..router_count]
            .iter()
            .map(|n| n.links.clone())
            .collect();
        let link_on = |r: usize, subnet: usize| -> &LinkPlan {
            let position = topo.routers[r]
                .subnets
                .iter()
                .position(|&s| s == subnet)
                .expect("a next hop shares the subnet");
            &links[router_links[r][position] as usize]
        };
        // routers
        for (r, table) in routing.routers.iter().enumerate() {
            let node = &nodes[r];
            let next_hop = |hop: &routing::Hop| {
                let link = node.links[hop.via_position];
                (
                    link,
                    &links[link as usize],
                    link_on(hop.router, links[link as usize].subnet),
                )
            };
            let routes = table
                .iter()
                .map(|(dest, hops)| {
                    route_through(
                        *dest,
                        hops.iter().map(next_hop).map(|(at, out, to)| NextHop {
                            via: to.address.expect("IPv4 routes cross IPv4 subnets"),
                            dev: out.ifname.clone(),
                            link: at,
                        }),
                    )
                })
                .collect();
            let routes6 = routing
                .routers6
                .get(r)
                .into_iter()
                .flatten()
                .map(|(dest, hops)| {
                    route_through(
                        *dest,
                        hops.iter().map(next_hop).map(|(at, out, to)| NextHop {
                            via: to.link_local(),
                            dev: out.ifname.clone(),
                            link: at,
                        }),
                    )
                });
            let routes6 = routes6.collect();
            nodes[r].routes = routes;
            nodes[r].routes6 = routes6;
        }
        // hosts
        for (h, host) in topo.hosts.iter().enumerate().filter(|_| computed) {
            let node = &nodes[router_count + h];
            let link = node.links[0];
            let dev = &links[link as usize].ifname;
            // through one gateway, or with `ecmp` each of several
            let hops = |gws: &[usize]| {
                gws.iter()
                    .map(|&gw| (link_on(gw, host.subnet), dev.clone(), link))
                    .collect::<Vec<_>>()
            };
            let route = |dest: Ipv4Net, gws: &[usize]| {
                route_through(
                    dest,
                    hops(gws).into_iter().map(|(to, dev, link)| NextHop {
                        via: to.address.expect("IPv4 routes cross IPv4 subnets"),
                        dev,
                        link,
                    }),
                )
            };
            let route6 = |dest: Ipv6Net, gws: &[usize]| {
                route_through(
                    dest,
                    hops(gws).into_iter().map(|(to, dev, link)| NextHop {
                        via: to.link_local(),
                        dev,
                        link,
                    }),
                )
            };
            // a host on an IPv6-only subnet has no IPv4 to route
            let ipv4 = topo.subnets[host.subnet].cidr.is_some();
            let mut v4: Vec<RoutePlan> = routing.host_routes[host.subnet]
                .iter()
                .filter(|_| ipv4)
                .map(|(dest, gws)| route(*dest, gws))
                .collect();
            let mut v6: Vec<Route6Plan> = routing.host_routes6[host.subnet]
                .iter()
                .map(|(dest, gws)| route6(*dest, gws))
                .collect();
            if let Some(gws) = &routing.default_gateway[host.subnet]
                && ipv4
            {
                v4.push(route(Ipv4Net::default(), gws));
            }
            let gateways6 = routing
                .default_gateway6
                .as_ref()
                .unwrap_or(&routing.default_gateway);
            if let Some(gws) = &gateways6[host.subnet]
                && topo.ipv6()
            {
                v6.push(route6(Ipv6Net::default(), gws));
            }
            nodes[router_count + h].routes = v4;
            nodes[router_count + h].routes6 = v6;
        }

        let uplink = match (&topo.outbound, uplink_subnet) {
            (Some(out), Some(u)) => {
                let port = prev.uplink_port.unwrap_or_else(|| ifindexes.take());
                Some(uplink_plan(
                    topo,
                    out,
                    u,
                    (&id, port),
                    &mut nodes,
                    &links,
                    &subnets,
                ))
            }
            _ => None,
        };
        for node in &mut nodes {
            node.own_route = node.forwarder
                == (Forwarder::Program {
                    fib_fallback: false,
                })
                && node.routes.len() > OWN_ROUTE_MIN;
        }

        let plan = Plan {
            name: topo.name.clone(),
            id: id.clone(),
            datapath: options.datapath,
            runtime: options.runtime,
            routing: topo.routing,
            ecmp: topo.ecmp,
            update_hosts: topo.update_hosts,
            fabric_netns: naming::fabric_netns(&id),
            subnets,
            nodes,
            links,
            uplink,
            machine: None,
            ipv6: topo.ipv6(),
            mtu: machines::link_mtu(topo, spans.contains(&true)),
            warnings,
        };
        let plan = match machine {
            Some(m) => machines::share(plan, topo, m, &tunnels),
            None => plan,
        };
        Ok((plan, took_over))
    }

    /// Marks the hosts of `attached` (by name) as containers joined through the Docker
    /// driver: their interfaces take the names Docker looks for.
    pub fn mark_attached(&mut self, attached: &[(String, Attachment)]) {
        for (name, attachment) in attached {
            let Some(n) = self.nodes.iter().position(|n| &n.name == name) else {
                continue;
            };
            for &l in &self.nodes[n].links.clone() {
                let link = &mut self.links[l as usize];
                link.ifname.clone_from(&attachment.src_name);
                // made in the host's namespace, where Docker takes it from: an index no other
                // lab's joining container and no interface of the host has
                link.ifindex = attached_ifindex(&self.id, link.id);
            }
            let src = attachment.src_name.clone();
            for r in &mut self.nodes[n].routes {
                r.dev.clone_from(&src);
            }
            // Docker's own container, whatever the runtime says of the lab's nodes
            self.nodes[n].image = None;
            self.nodes[n].container = false;
            self.nodes[n].attached = Some(attachment.clone());
            // its namespace is Docker's, made after the plan: no delay line into it
            for &l in &self.nodes[n].links.clone() {
                let link = &mut self.links[l as usize];
                if link.into_node.delay.take().is_some() {
                    self.warnings.push(format!(
                        "container {name} joined through Docker: delay, jitter and rate apply to \
                         what it sends, not to what it receives"
                    ));
                    link.into_node.impair.delay_us = None;
                    link.into_node.impair.jitter_us = None;
                    link.into_node.impair.rate_bps = None;
                }
            }
        }
    }

    /// Marks the links `(node, subnet)` taken down on purpose (`dvnet link`); others up.
    pub fn mark_down(&mut self, down: &[(String, String)]) {
        for i in 0..self.links.len() {
            let l = &self.links[i];
            let key = (&self.nodes[l.node].name, &self.subnets[l.subnet].name);
            self.links[i].down = down.iter().any(|(n, s)| (n, s) == key);
        }
    }

    /// Slots the counters need: one past the highest link id.
    #[must_use]
    pub fn link_slots(&self) -> usize {
        self.links
            .iter()
            .map(|l| l.id as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// Finds a node by name.
    #[must_use]
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The other end of a point-to-point link.
    #[must_use]
    pub fn peer_of(&self, link: &LinkPlan) -> Option<&LinkPlan> {
        let subnet = &self.subnets[link.subnet];
        if subnet.segment != Segment::PointToPoint {
            return None;
        }
        subnet
            .links
            .iter()
            .map(|&l| &self.links[l as usize])
            .find(|l| l.id != link.id)
    }

    /// The links of a node.
    pub fn links_of<'a>(&'a self, node: &'a NodePlan) -> impl Iterator<Item = &'a LinkPlan> + 'a {
        node.links.iter().map(|&l| &self.links[l as usize])
    }

    /// Every name and address, for name resolution in the nodes (`update_hosts`): each node
    /// under its own name at its first address, and every interface as `<node>-<subnet>`.
    #[must_use]
    pub fn host_entries(&self) -> Vec<(String, IpAddr)> {
        let mut entries = Vec::with_capacity(self.links.len() + self.nodes.len());
        let local = self.nodes.iter().map(|node| {
            let addresses: Vec<(usize, IpAddr)> = self
                .links_of(node)
                .filter_map(|l| Some((l.subnet, l.address?.into())))
                .collect();
            (node.name.as_str(), addresses)
        });
        let elsewhere = self.machine.iter().flat_map(|m| &m.elsewhere).map(|node| {
            let addresses = node.addresses.iter().map(|&(s, a)| (s, a.into())).collect();
            (node.name.as_str(), addresses)
        });
        // IPv6 names follow the same rules, over the links with a global IPv6 address
        let local6 = self.nodes.iter().map(|node| {
            let addresses: Vec<(usize, IpAddr)> = self
                .links_of(node)
                .filter_map(|l| Some((l.subnet, l.address6?.into())))
                .collect();
            (node.name.as_str(), addresses)
        });
        for (name, addresses) in local.chain(elsewhere).chain(local6) {
            for (i, &(subnet, address)) in addresses.iter().enumerate() {
                if i == 0 {
                    entries.push((name.to_owned(), address));
                }
                entries.push((format!("{name}-{}", self.subnets[subnet].name), address));
            }
        }
        entries
    }

    /// `/etc/hosts` for namespace nodes (`update_hosts`).
    #[must_use]
    pub fn hosts_file(&self) -> String {
        let mut out = String::from("127.0.0.1\tlocalhost\n");
        if self.ipv6 {
            out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        }
        for (name, addr) in self.host_entries() {
            let _ = writeln!(out, "{addr}\t{name}");
        }
        out
    }
}

/// The routes of every node (in plan order: routers, then hosts) when an edit leaves them
/// as they were: routing is static, the subnets are the same (names, prefixes, order), the
/// routers are the same (names, order, subnets, addresses), and every subnet with hosts had
/// hosts before (theirs are its routes, through each host's own interface). `None` otherwise:
/// then they are computed.
fn reusable_routes(
    topo: &Topology,
    addrs: &addressing::Addresses,
    previous: Option<&Plan>,
    nodes: &[NodePlan],
    links: &[LinkPlan],
) -> Option<Vec<Vec<RoutePlan>>> {
    let prev = previous?;
    // IPv6 routes are computed every time (their labs are small)
    if topo.ipv6() || prev.ipv6 {
        return None;
    }
    if topo.routing != Routing::Static || prev.routing != Routing::Static || topo.ecmp != prev.ecmp
    {
        return None;
    }
    if prev.subnets.len() != topo.subnets.len()
        || prev
            .subnets
            .iter()
            .zip(&topo.subnets)
            .any(|(p, s)| p.name != s.name || p.cidr != s.cidr)
    {
        return None;
    }
    let prev_routers: Vec<&NodePlan> = prev
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Router)
        .collect();
    if prev_routers.len() != topo.routers.len() {
        return None;
    }
    for (r, (router, p)) in topo.routers.iter().zip(&prev_routers).enumerate() {
        if p.name != router.name || p.links.len() != router.subnets.len() {
            return None;
        }
        for ((&s, &addr), pl) in router
            .subnets
            .iter()
            .zip(&addrs.routers[r])
            .zip(prev.links_of(p))
        {
            if prev.subnets[pl.subnet].name != topo.subnets[s].name || pl.address != addr {
                return None;
            }
        }
    }
    // each subnet's host routes, from a host it had
    let mut by_subnet: std::collections::HashMap<&str, &[RoutePlan]> =
        std::collections::HashMap::new();
    for n in prev.nodes.iter().filter(|n| n.kind == NodeKind::Host) {
        if let Some(l) = prev.links_of(n).next() {
            by_subnet
                .entry(prev.subnets[l.subnet].name.as_str())
                .or_insert(&n.routes);
        }
    }
    let default = Ipv4Net::default();
    let mut out = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let position_of = |dev: &str| {
            node.links
                .iter()
                .copied()
                .find(|&l| links[l as usize].ifname == dev)
        };
        if i < prev_routers.len() {
            // the default routes toward the uplink are added again afterwards
            let routes = prev_routers[i]
                .routes
                .iter()
                .filter(|r| r.dest != default)
                .map(|r| {
                    let ecmp = r
                        .ecmp
                        .iter()
                        .map(|h| {
                            Some(NextHop {
                                link: position_of(&h.dev)?,
                                ..h.clone()
                            })
                        })
                        .collect::<Option<Vec<_>>>()?;
                    Some(RoutePlan {
                        link: position_of(&r.dev)?,
                        ecmp,
                        ..r.clone()
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            out.push(routes);
        } else {
            let at = *node.links.first()?;
            let link = &links[at as usize];
            let subnet = topo.subnets[link.subnet].name.as_str();
            let routes = by_subnet.get(subnet)?;
            out.push(
                routes
                    .iter()
                    .map(|r| RoutePlan {
                        dest: r.dest,
                        via: r.via,
                        dev: link.ifname.clone(),
                        link: at,
                        ecmp: Vec::new(),
                    })
                    .collect(),
            );
        }
    }
    Some(out)
}

/// A bridge for subnet `name` (the `index`-th): the one it had, or a new one whose name
/// avoids the bridges kept.
fn bridge(
    name: &str,
    index: usize,
    prev: &identity::Previous<'_>,
    kept: &std::collections::BTreeSet<String>,
    ifindexes: &mut identity::Pool,
) -> Segment {
    if let Some((bridge, ifindex)) = prev.bridges.get(name) {
        return Segment::Bridge {
            name: (*bridge).to_owned(),
            ifindex: *ifindex,
        };
    }
    let mut bridge = naming::bridge_ifname(name, index);
    let mut k = index;
    while kept.contains(&bridge) {
        k += 1;
        bridge = naming::bridge_ifname(name, k);
    }
    Segment::Bridge {
        name: bridge,
        ifindex: ifindexes.take(),
    }
}

/// A new interface name for `node` on `subnet`: the readable form, or `eth<k>` with the
/// lowest `k` from `position` on that the node does not use.
fn node_ifname(
    node: &str,
    subnet: &str,
    position: usize,
    used: &std::collections::BTreeSet<String>,
) -> String {
    let mut k = position;
    loop {
        let name = naming::node_ifname(node, subnet, k);
        if !used.contains(&name) {
            return name;
        }
        k += 1;
    }
}

/// A rule's sides in one family: both, or neither when one has no prefix in it (the rule
/// matches nothing in that family).
fn both<N>(src: Vec<N>, dst: Vec<N>) -> (Vec<N>, Vec<N>) {
    if src.is_empty() || dst.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (src, dst)
    }
}

fn firewall_plan(
    topo: &Topology,
    addrs: &addressing::Addresses,
    router: usize,
    prev: &identity::Previous<'_>,
    slots: &mut identity::Pool,
) -> FirewallPlan {
    let fw = &topo.routers[router].firewall;
    let resolve = |e: &Endpoint| -> Vec<Ipv4Net> {
        match e {
            Endpoint::Any => vec![Ipv4Net::default()],
            Endpoint::Subnet(s) => topo.subnets[*s].cidr.into_iter().collect(),
            Endpoint::Host(h) => addrs.hosts[*h].map(Ipv4Net::from).into_iter().collect(),
            Endpoint::Router(r) => addrs.routers[*r]
                .iter()
                .flatten()
                .map(|&a| Ipv4Net::from(a))
                .collect(),
            Endpoint::Cidr(c) => vec![*c],
            Endpoint::Cidr6(_) => Vec::new(),
        }
    };
    // names stand for both families; a network without IPv6 has no IPv6 rules
    let resolve6 = |e: &Endpoint| -> Vec<Ipv6Net> {
        if !topo.ipv6() {
            return Vec::new();
        }
        match e {
            Endpoint::Any => vec![Ipv6Net::default()],
            Endpoint::Subnet(s) => topo.subnets[*s].cidr6.into_iter().collect(),
            Endpoint::Host(h) => addrs.hosts6[*h].map(Ipv6Net::from).into_iter().collect(),
            Endpoint::Router(r) => addrs.routers6[*r]
                .iter()
                .flatten()
                .map(|&a| Ipv6Net::from(a))
                .collect(),
            Endpoint::Cidr(_) => Vec::new(),
            Endpoint::Cidr6(c) => vec![*c],
        }
    };
    let rules = fw
        .drop
        .iter()
        .map(|r| (Action::Drop, r))
        .chain(fw.accept.iter().map(|r| (Action::Accept, r)))
        .map(|(action, r)| {
            let (src, dst) = both(resolve(&r.src), resolve(&r.dst));
            let (src6, dst6) = both(resolve6(&r.src), resolve6(&r.dst));
            (action, r, src, dst, src6, dst6)
        })
        .map(|(action, r, src, dst, src6, dst6)| RulePlan {
            slot: 0,
            action,
            src,
            dst,
            src6,
            dst6,
            proto: r.proto.map(crate::topology::Proto::number),
            dport: r.dport,
            origin: r.origin.clone(),
        })
        .collect::<Vec<_>>();
    // slots: a rule keeps its slot (and its hit count) wherever it moves in the file
    let kept = prev.rule_slots.get(topo.routers[router].name.as_str());
    let keys = identity::rule_keys(&rules);
    let rules = rules
        .into_iter()
        .zip(keys)
        .map(|(mut rule, key)| {
            rule.slot = kept
                .and_then(|k| k.get(&key).copied())
                .unwrap_or_else(|| slots.take());
            rule
        })
        .collect();
    FirewallPlan {
        policy: fw.policy,
        rules,
        ipv6: topo.ipv6(),
    }
}

/// An IP protocol's name: `tcp`, `udp`, `icmp`, or the number.
#[must_use]
pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        n => n.to_string(),
    }
}

/// MACs as `02:d7:0a:00:00:01` in JSON.
mod mac {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's `with` passes a reference"
    )]
    pub fn serialize<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_mac(mac))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        let text = String::deserialize(d)?;
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut mac {
            let part = parts
                .next()
                .ok_or_else(|| D::Error::custom("MAC too short"))?;
            *byte = u8::from_str_radix(part, 16).map_err(D::Error::custom)?;
        }
        if parts.next().is_some() {
            return Err(D::Error::custom("MAC too long"));
        }
        Ok(mac)
    }
}

/// `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests;
