//! What each call of the protocol does.
//!
//! - A *lab* network (`--opt net.dvnet.def=PATH`) is a whole dvnet network: `CreateNetwork`
//!   builds it (nodes that name no image run `dvnet/host` and `dvnet/router`, unless
//!   `net.dvnet.runtime=netns`), `DeleteNetwork` removes it. Docker's own endpoints on it
//!   are refused: containers join a lab through a subnet network.
//! - A *subnet* network (`--opt net.dvnet.attach=LAB/SUBNET`) is one subnet of a running
//!   lab: each container that joins becomes a host of that subnet, added with `apply`'s
//!   machinery (nothing else in the lab is disturbed), and leaves the same way.
//!
//! What is safe inside a handler (dockerd 20.10 holds locks while it calls the driver):
//! `CreateNetwork` and `DeleteNetwork` hold only the network's own lock, so building a lab
//! there (containers made through the Docker API with `--network none`) is safe. The
//! endpoint calls (`CreateEndpoint`, `Join`, `Leave`, `DeleteEndpoint`) hold the container's
//! lock, and dockerd calls them while it starts up, before its API answers: they never call
//! Docker, only the kernel and dvnet's own records.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::protocol as p;
use crate::apply::{self, ApplyError, Change};
use crate::plan::{Attachment, Plan, PlanOptions, Runtime};
use crate::state::{self, AttachedHost, State};
use crate::topology::Topology;

/// The `--opt` keys.
pub const OPT_DEF: &str = "net.dvnet.def";
pub const OPT_RUNTIME: &str = "net.dvnet.runtime";
pub const OPT_DATAPATH: &str = "net.dvnet.datapath";
pub const OPT_ATTACH: &str = "net.dvnet.attach";

/// A failed call: its message reaches the user (`Error response from daemon: ...`).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("{0}")]
    Store(String),
}

impl DriverError {
    /// The message with its causes, one line each.
    #[must_use]
    pub fn chain(&self) -> String {
        crate::error_chain(self)
    }
}

/// How a subnet network's containers get their addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Addressing {
    /// `--ipam-driver null`: dvnet gives each the lowest free address of the subnet.
    Dvnet,
    /// `--subnet` the subnet's prefix: Docker gives them (`--ip` picks one), dvnet checks.
    Docker,
}

/// A Docker network of this driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Network {
    Lab {
        lab: String,
    },
    Subnet {
        lab: String,
        subnet: String,
        addressing: Addressing,
    },
}

/// A container's endpoint on a subnet network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub lab: String,
    pub subnet: String,
    pub node: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub joined: bool,
}

/// What the driver keeps, by Docker's ids, so that a restarted plugin (or dockerd) finds
/// every network and endpoint again.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Store {
    pub networks: BTreeMap<String, Network>,
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// Where the store of the plugin serving `socket` lives: one per socket (a driver's name
/// is its socket's), so that two plugins never share one.
#[must_use]
pub fn store_path(socket: &Path) -> PathBuf {
    let name = socket
        .file_stem()
        .map_or_else(|| "dvnet".into(), |s| s.to_string_lossy().into_owned());
    Path::new(state::STATE_DIR)
        .join(".plugin")
        .join(format!("{name}.json"))
}

impl Store {
    fn load(path: &Path) -> Result<Store, DriverError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| DriverError::Store(format!("reading {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store::default()),
            Err(e) => Err(DriverError::Store(format!(
                "reading {}: {e}",
                path.display()
            ))),
        }
    }

    fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.endpoints.is_empty()
    }

    fn save(&self, path: &Path) -> Result<(), DriverError> {
        let dir = path.parent().expect("the store is in a directory");
        state::secure_dir(Path::new(state::STATE_DIR), 0o755)?;
        state::secure_dir(dir, 0o700)?;
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(self).expect("the store serializes");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| DriverError::Store(format!("writing {}: {e}", path.display())))
    }
}

/// The driver: its store, saved after every change.
pub struct Driver {
    path: PathBuf,
    store: Mutex<Store>,
}

impl Driver {
    /// The driver with the store at `path` (created on first change).
    ///
    /// # Errors
    /// When the store exists but cannot be read.
    pub fn open(path: PathBuf) -> Result<Driver, DriverError> {
        let store = Store::load(&path)?;
        Ok(Driver {
            path,
            store: Mutex::new(store),
        })
    }

    /// Forgets the store when it holds nothing (a stopping plugin leaves no file behind).
    pub fn close(&self) {
        if self.store.lock().expect("the store").is_empty() {
            let _ = std::fs::remove_file(&self.path);
            if let Some(dir) = self.path.parent() {
                // only when no other plugin keeps a store there
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> Result<T, DriverError> {
        let mut store = self.store.lock().expect("the store");
        let out = f(&mut store);
        store.save(&self.path)?;
        Ok(out)
    }

    fn network(&self, id: &str) -> Option<Network> {
        self.store
            .lock()
            .expect("the store")
            .networks
            .get(id)
            .cloned()
    }

    /// `CreateNetwork`: a lab, or a subnet of a running one.
    ///
    /// # Errors
    /// Bad options, a bad file (every problem with its path), or the lab cannot be built
    /// (then nothing of it is left).
    pub async fn create_network(&self, req: p::CreateNetwork) -> Result<(), DriverError> {
        // dockerd may ask again for a network it has (as it restores its own); it is there
        if self.network(&req.network_id).is_some() {
            tracing::info!(network = %req.network_id, "network known already");
            return Ok(());
        }
        let opts = req.generic();
        let known = [OPT_DEF, OPT_RUNTIME, OPT_DATAPATH, OPT_ATTACH];
        if let Some(k) = opts
            .keys()
            .find(|k| k.starts_with("net.dvnet.") && !known.contains(&k.as_str()))
        {
            return Err(DriverError::Refused(format!(
                "unknown option {k}; dvnet takes --opt {}=...",
                known.join("=..., --opt ")
            )));
        }
        let network = match (opts.get(OPT_DEF), opts.get(OPT_ATTACH)) {
            (Some(_), Some(_)) => {
                return Err(DriverError::Refused(format!(
                    "give either --opt {OPT_DEF}=FILE (a whole lab) or --opt {OPT_ATTACH}=LAB/SUBNET \
                     (a subnet of a running lab), not both"
                )));
            }
            (None, None) => {
                return Err(DriverError::Refused(format!(
                    "a dvnet network needs --opt {OPT_DEF}=/abs/path/lab.json (a whole lab) or \
                     --opt {OPT_ATTACH}=LAB/SUBNET (a subnet of a running lab)"
                )));
            }
            (Some(def), None) => self.create_lab(def, &opts).await?,
            (None, Some(attach)) => self.create_subnet(attach, &req).await?,
        };
        tracing::info!(network = %req.network_id, ?network, "network created");
        self.with_store(|s| {
            s.networks.insert(req.network_id.clone(), network);
        })
    }

    async fn create_lab(
        &self,
        def: &str,
        opts: &BTreeMap<String, String>,
    ) -> Result<Network, DriverError> {
        let path = Path::new(def);
        if !path.is_absolute() {
            return Err(DriverError::Refused(format!(
                "{OPT_DEF}={def}: give the file's absolute path (dockerd runs elsewhere)"
            )));
        }
        let runtime = match opts.get(OPT_RUNTIME).map(String::as_str) {
            None | Some("docker") => Runtime::Docker,
            Some("auto") => Runtime::Auto,
            Some("netns") => Runtime::Netns,
            Some(other) => {
                return Err(DriverError::Refused(format!(
                    "{OPT_RUNTIME}={other}: expected docker (the default: every node a container), \
                     auto (containers for the nodes that name an image) or netns"
                )));
            }
        };
        let datapath = match opts.get(OPT_DATAPATH).map(String::as_str) {
            None | Some("ebpf") => crate::plan::Datapath::Ebpf,
            Some("kernel") => crate::plan::Datapath::Kernel,
            Some(other) => {
                return Err(DriverError::Refused(format!(
                    "{OPT_DATAPATH}={other}: expected ebpf (the default) or kernel"
                )));
            }
        };
        let text = crate::topology::read_text(path)?;
        let topo = Topology::from_json(&text, def)?;
        if !topo.machines.is_empty() {
            return Err(DriverError::Refused(format!(
                "{def} places its lab on machines (\"machines\"): a Docker network lives on \
                 one machine; remove the placement, or build the lab with `dvnet up FILE`"
            )));
        }
        let plan = Plan::build(&topo, PlanOptions { datapath, runtime })?;
        let options = apply::UpOptions {
            source: Some(path.to_path_buf()),
            source_text: Some(text),
        };
        apply::up(&plan, &options, &apply::Silent).await?;
        Ok(Network::Lab { lab: plan.id })
    }

    /// The lab a `--opt net.dvnet.attach` names: a dvnet id or name, or the Docker name of
    /// a lab network (asked of Docker: safe inside `CreateNetwork`).
    async fn lab_named(&self, lab: &str) -> Result<String, DriverError> {
        if let Some(id) = crate::topology::network_id(lab)
            && State::load(&id).is_ok()
        {
            return Ok(id);
        }
        if let Ok(docker) = crate::runtime::docker::Containers::connect().await
            && let Ok(net) = docker
                .client()
                .inspect_network(
                    lab,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
            && let Some(id) = net.id
            && let Some(Network::Lab { lab }) = self.network(&id)
        {
            return Ok(lab);
        }
        Err(DriverError::Refused(format!(
            "{OPT_ATTACH}: no running lab {lab:?} (a dvnet network id or name, or the Docker \
             name of a lab network; `dvnet ls` lists them)"
        )))
    }

    async fn create_subnet(
        &self,
        attach: &str,
        req: &p::CreateNetwork,
    ) -> Result<Network, DriverError> {
        let Some((lab, subnet)) = attach.rsplit_once('/') else {
            return Err(DriverError::Refused(format!(
                "{OPT_ATTACH}={attach}: expected LAB/SUBNET, such as classic/A"
            )));
        };
        let lab = self.lab_named(lab).await?;
        let record = State::load(&lab)?;
        let Some(s) = record.plan.subnets.iter().find(|s| s.name == subnet) else {
            let names: Vec<&str> = record
                .plan
                .subnets
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            return Err(DriverError::Refused(format!(
                "{OPT_ATTACH}={attach}: lab {lab} has no subnet {subnet:?} (its subnets: {})",
                names.join(", ")
            )));
        };
        let Some(cidr) = s.cidr else {
            return Err(DriverError::Refused(format!(
                "subnet {subnet} of lab {lab} is IPv6-only: containers join a lab's subnets over \
                 IPv4 for now; pick a subnet with a \"cidr\""
            )));
        };
        let pool = req.ipv4_data.first();
        let addressing = match pool {
            Some(d) if d.address_space == "null" => Addressing::Dvnet,
            Some(d) if d.pool.parse::<Ipv4Net>().is_ok_and(|p| p.trunc() == cidr) => {
                Addressing::Docker
            }
            _ => {
                return Err(DriverError::Refused(format!(
                    "subnet {subnet} of lab {lab} is {cidr}: create the network with \
                     --ipam-driver null (dvnet gives each container a free address), or with \
                     --subnet {cidr} (then `docker run --ip ADDR` picks one)"
                )));
            }
        };
        Ok(Network::Subnet {
            lab,
            subnet: subnet.to_owned(),
            addressing,
        })
    }

    /// `DeleteNetwork`: a lab goes whole; a subnet network forgets its endpoints. (Docker
    /// removes the network whatever this answers.)
    ///
    /// # Errors
    /// When the lab cannot be removed completely.
    pub async fn delete_network(&self, req: p::NetworkOnly) -> Result<(), DriverError> {
        let network = self.network(&req.network_id);
        let result = match &network {
            Some(Network::Lab { lab }) => {
                let report = apply::down(lab, &apply::Silent).await?;
                if report.errors.is_empty() {
                    Ok(())
                } else {
                    Err(DriverError::Refused(format!(
                        "lab {lab} was not removed completely: {}",
                        report.errors.join("; ")
                    )))
                }
            }
            _ => Ok(()),
        };
        self.with_store(|s| {
            s.networks.remove(&req.network_id);
            s.endpoints.retain(|_, e| e.network != req.network_id);
        })?;
        result
    }

    /// `CreateEndpoint`: the container's address, reserved (no Docker call here).
    ///
    /// # Errors
    /// A lab network (containers join subnets), or an address that is not free.
    pub fn create_endpoint(
        &self,
        req: &p::CreateEndpoint,
    ) -> Result<p::CreateEndpointAnswer, DriverError> {
        let Some(network) = self.network(&req.network_id) else {
            return Err(DriverError::Refused(
                "this dvnet network is unknown to the plugin (was it created while another plugin \
                 ran?); remove and create it again"
                    .into(),
            ));
        };
        let Network::Subnet {
            lab,
            subnet,
            addressing,
        } = network
        else {
            return Err(DriverError::Refused(format!(
                "a dvnet lab network takes no containers of its own: attach them to one of its \
                 subnets, through a network made with --opt {OPT_ATTACH}=LAB/SUBNET"
            )));
        };
        let record = State::load(&lab)?;
        let s = record
            .plan
            .subnets
            .iter()
            .find(|s| s.name == subnet)
            .ok_or_else(|| {
                DriverError::Refused(format!("lab {lab} has no subnet {subnet} any more"))
            })?;
        let Some(cidr) = s.cidr else {
            return Err(DriverError::Refused(format!(
                "subnet {subnet} of lab {lab} is IPv6-only now: containers join over IPv4"
            )));
        };
        let taken = |a: Ipv4Addr, store: &Store| -> Option<String> {
            record
                .plan
                .links
                .iter()
                .find(|l| l.address == Some(a))
                .map(|l| format!("node {} of lab {lab}", record.plan.nodes[l.node].name))
                .or_else(|| {
                    store
                        .endpoints
                        .values()
                        .find(|e| e.lab == lab && e.address == a)
                        .map(|e| format!("container {}", e.node))
                })
                .or_else(|| {
                    record
                        .plan
                        .uplink
                        .as_ref()
                        .filter(|u| u.host_address == a)
                        .map(|_| "the host's uplink".to_owned())
                })
        };
        let given = req
            .interface
            .as_ref()
            .map(|i| i.address.clone())
            .filter(|a| !a.is_empty());
        let mut store = self.store.lock().expect("the store");
        let address = match (&addressing, given) {
            (_, Some(text)) => {
                let net: Ipv4Net = text.parse().map_err(|_| {
                    DriverError::Refused(format!("Docker gave the address {text:?}"))
                })?;
                let a = net.addr();
                if !cidr.contains(&a) || a == cidr.network() || a == cidr.broadcast() {
                    return Err(DriverError::Refused(format!(
                        "{a} is not a host address of subnet {subnet} ({cidr})"
                    )));
                }
                if let Some(who) = taken(a, &store) {
                    return Err(DriverError::Refused(format!(
                        "{a} is the address of {who}: pick a free one with --ip (or create the \
                         network with --ipam-driver null and dvnet picks)"
                    )));
                }
                a
            }
            (Addressing::Dvnet, None) => cidr
                .hosts()
                .find(|&a| taken(a, &store).is_none())
                .ok_or_else(|| DriverError::Refused(format!("subnet {subnet} ({cidr}) is full")))?,
            (Addressing::Docker, None) => {
                return Err(DriverError::Refused("Docker gave no address".into()));
            }
        };
        let node = Attachment::node_name(&req.endpoint_id);
        store.endpoints.insert(
            req.endpoint_id.clone(),
            Endpoint {
                network: req.network_id.clone(),
                lab,
                subnet,
                node,
                address,
                prefix_len: cidr.prefix_len(),
                joined: false,
            },
        );
        store.save(&self.path)?;
        let answer = match addressing {
            // null IPAM: the address is dvnet's to give
            Addressing::Dvnet => p::CreateEndpointAnswer {
                interface: Some(p::EndpointInterface {
                    address: format!("{address}/{}", cidr.prefix_len()),
                    address_ipv6: String::new(),
                    mac_address: crate::plan::format_mac(&crate::plan::naming::mac_for(
                        address, false,
                    )),
                }),
            },
            Addressing::Docker => p::CreateEndpointAnswer::default(),
        };
        Ok(answer)
    }

    /// The endpoint `id`, as the store has it.
    fn endpoint(&self, id: &str) -> Option<Endpoint> {
        self.store
            .lock()
            .expect("the store")
            .endpoints
            .get(id)
            .cloned()
    }

    /// `Join`: the container becomes a host of the subnet (an edit of the lab); its
    /// interface waits here for Docker to move it in. No Docker call.
    ///
    /// # Errors
    /// An unknown endpoint, or the edit fails (then the lab is as it was).
    pub async fn join(&self, req: &p::Join) -> Result<p::JoinAnswer, DriverError> {
        let endpoint = self
            .endpoint(&req.endpoint_id)
            .ok_or_else(|| DriverError::Refused(format!("unknown endpoint {}", req.endpoint_id)))?;
        let attachment = Attachment {
            endpoint: req.endpoint_id.clone(),
            docker_network: req.network_id.clone(),
            src_name: Attachment::src_name(&req.endpoint_id),
        };
        let host = AttachedHost {
            name: endpoint.node.clone(),
            subnet: endpoint.subnet.clone(),
            address: endpoint.address,
            attachment: attachment.clone(),
        };
        apply::apply_change(&endpoint.lab, Change::Attach(host), &apply::Silent).await?;
        // its routes, for Docker to set when it moves the interface in
        let record = State::load(&endpoint.lab)?;
        let node = record
            .plan
            .node(&endpoint.node)
            .ok_or_else(|| DriverError::Refused("the container is not in the lab".into()))?;
        let mut gateway = String::new();
        let mut routes = Vec::new();
        for r in &node.routes {
            if r.dest == Ipv4Net::default() {
                gateway = r.via.to_string();
            } else {
                routes.push(p::StaticRoute {
                    destination: r.dest.to_string(),
                    route_type: 0,
                    next_hop: r.via.to_string(),
                });
            }
        }
        self.with_store(|s| {
            if let Some(e) = s.endpoints.get_mut(&req.endpoint_id) {
                e.joined = true;
            }
        })?;
        super::adopt::watch(
            endpoint.lab.clone(),
            node.clone(),
            record.plan.links_of(node).map(|l| l.ifindex).collect(),
            PathBuf::from(&req.sandbox_key),
        );
        Ok(p::JoinAnswer {
            interface_name: p::InterfaceName {
                src_name: attachment.src_name,
                dst_prefix: "eth".into(),
            },
            gateway,
            static_routes: routes,
            disable_gateway_service: true,
        })
    }

    /// `DeleteEndpoint` (after `Leave`, Docker has moved the interface back): the container
    /// leaves the lab (an edit), its address is free again. No Docker call.
    ///
    /// # Errors
    /// When the edit fails.
    pub async fn delete_endpoint(&self, req: &p::Endpoint) -> Result<(), DriverError> {
        let endpoint = self.endpoint(&req.endpoint_id);
        if let Some(e) = &endpoint
            && State::load(&e.lab).is_ok_and(|r| {
                r.attached
                    .iter()
                    .any(|a| a.attachment.endpoint == req.endpoint_id)
            })
        {
            apply::apply_change(
                &e.lab,
                Change::Detach {
                    endpoint: req.endpoint_id.clone(),
                },
                &apply::Silent,
            )
            .await?;
        }
        // the interface Docker moved back, if its other end went first
        super::adopt::remove_interface(&Attachment::src_name(&req.endpoint_id)).await;
        self.with_store(|s| {
            s.endpoints.remove(&req.endpoint_id);
        })
    }
}
