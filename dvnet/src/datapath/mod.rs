//! How routers forward and filter, and how links are counted.
//!
//! Both datapaths count every link with eBPF (so `dvnet stats` works with either); they
//! differ in who forwards and filters: `ebpf` — the `node_ingress` program on every router
//! interface, driven by the route and firewall maps, with kernel forwarding off; `kernel` —
//! kernel forwarding and iptables rules inside the router namespaces.

pub mod ebpf;
pub mod entries;
pub mod kernel;
