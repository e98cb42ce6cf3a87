//! Nodes that name an image run as Docker containers (through bollard): `--network none`,
//! NET_ADMIN, NET_RAW and SYS_ADMIN, hostname = node name, labels carrying the network id and
//! node name so `down` finds them even after a crash. dvnet then adopts the container's
//! network namespace under `/run/netns/<name>` and wires it exactly like a namespace node.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::{StreamExt as _, TryStreamExt as _, stream};

use crate::plan::{NodePlan, Plan};

/// Label keys on every container dvnet creates.
pub const LABEL_NETWORK: &str = "org.dvnet.network";
pub const LABEL_NODE: &str = "org.dvnet.node";
/// Containers created at once.
const CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "this network has container nodes, but no Docker daemon answers ({source})\n\
         hint: `./setup.sh --docker` installs and starts one; or run every node as a namespace \
         with `--runtime netns`"
    )]
    NoDaemon {
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "image{} not available here: {}\n\
         hint: dvnet's own images (dvnet/host, dvnet/router) are built by `./setup.sh --docker`; \
         `docker pull` others where a registry is reachable; or run the nodes as namespaces \
         with `--runtime netns`",
        if missing.len() == 1 { "" } else { "s" },
        missing.iter().map(|(image, nodes)| format!("{image} (for {})", nodes.join(", "))).collect::<Vec<_>>().join(", ")
    )]
    MissingImages { missing: Vec<(String, Vec<String>)> },
    #[error("{op} container {name}: {source}")]
    Container {
        op: &'static str,
        name: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "container {name} is not running (its main process exited: the image's command must keep running)"
    )]
    NotRunning { name: String },
}

/// A connection to the Docker daemon.
#[derive(Clone)]
pub struct Containers {
    docker: Docker,
}

impl Containers {
    /// Connects to the local daemon and checks that it answers.
    ///
    /// # Errors
    /// When no daemon answers.
    pub async fn connect() -> Result<Containers, DockerError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|source| DockerError::NoDaemon { source })?;
        match tokio::time::timeout(std::time::Duration::from_secs(3), docker.ping()).await {
            Ok(Ok(_)) => Ok(Containers { docker }),
            Ok(Err(source)) => Err(DockerError::NoDaemon { source }),
            Err(_) => Err(DockerError::NoDaemon {
                source: bollard::errors::Error::RequestTimeoutError,
            }),
        }
    }

    /// The underlying client.
    #[must_use]
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Checks that every image the plan's container nodes need is present (pulling is left to
    /// the user: here no registry may be reachable, and a silent pull of a large image would
    /// be a surprise).
    ///
    /// # Errors
    /// Lists every missing image and the nodes that need it.
    pub async fn check_images(&self, plan: &Plan) -> Result<(), DockerError> {
        let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
        for node in plan.nodes.iter().filter(|n| n.container) {
            let image = node.image.clone().expect("container nodes have an image");
            match wanted.iter_mut().find(|(i, _)| *i == image) {
                Some((_, nodes)) => nodes.push(node.name.clone()),
                None => wanted.push((image, vec![node.name.clone()])),
            }
        }
        let mut missing = Vec::new();
        for (image, nodes) in wanted {
            if self.docker.inspect_image(&image).await.is_err() {
                missing.push((image, nodes));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DockerError::MissingImages { missing })
        }
    }

    /// Creates and starts the containers of every container node; returns the process id of
    /// each (in plan order of container nodes), whose network namespace dvnet then adopts.
    ///
    /// # Errors
    /// When Docker refuses a container or it does not keep running.
    pub async fn create(&self, plan: &Plan) -> Result<Vec<(usize, u32)>, DockerError> {
        let extra_hosts: Vec<String> = if plan.update_hosts {
            plan.host_entries()
                .into_iter()
                .map(|(name, ip)| format!("{name}:{ip}"))
                .collect()
        } else {
            Vec::new()
        };
        stream::iter(plan.nodes.iter().enumerate().filter(|(_, n)| n.container))
            .map(|(i, node)| {
                let extra_hosts = extra_hosts.clone();
                async move {
                    self.create_one(plan, node, extra_hosts)
                        .await
                        .map(|pid| (i, pid))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await
    }

    async fn create_one(
        &self,
        plan: &Plan,
        node: &NodePlan,
        extra_hosts: Vec<String>,
    ) -> Result<u32, DockerError> {
        let name = node.netns.clone();
        let err = |op| {
            let name = name.clone();
            move |source| DockerError::Container { op, name, source }
        };
        let labels = HashMap::from([
            (LABEL_NETWORK.to_owned(), plan.id.clone()),
            (LABEL_NODE.to_owned(), node.name.clone()),
        ]);
        let body = ContainerCreateBody {
            image: node.image.clone(),
            hostname: Some(hostname(&node.name)),
            labels: Some(labels),
            // a shell as main process stays up with a terminal, as with `docker run -dit`
            tty: Some(true),
            open_stdin: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                cap_add: Some(vec![
                    "NET_ADMIN".into(),
                    "NET_RAW".into(),
                    "SYS_ADMIN".into(),
                ]),
                extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
                init: Some(false),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..CreateContainerOptions::default()
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(err("creating"))?;
        self.docker
            .start_container(&name, None)
            .await
            .map_err(err("starting"))?;
        let state = self
            .docker
            .inspect_container(&name, None)
            .await
            .map_err(err("inspecting"))?
            .state;
        match state.and_then(|s| if s.running == Some(true) { s.pid } else { None }) {
            Some(pid) if pid > 0 => Ok(u32::try_from(pid).expect("positive pid")),
            _ => Err(DockerError::NotRunning { name }),
        }
    }

    /// Removes every container of network `id` (found by label), running or not.
    ///
    /// # Errors
    /// Listing fails; removal errors are collected.
    pub async fn remove_network(&self, id: &str) -> Result<(usize, Vec<String>), DockerError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_NETWORK}={id}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| DockerError::Container {
                op: "listing",
                name: format!("of network {id}"),
                source,
            })?;
        let results: Vec<Result<(), String>> = stream::iter(list.into_iter().filter_map(|c| c.id))
            .map(|cid| async move {
                let options = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                self.docker
                    .remove_container(&cid, Some(options))
                    .await
                    .map_err(|e| format!("removing container {cid}: {e}"))
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let removed = results.iter().filter(|r| r.is_ok()).count();
        Ok((
            removed,
            results.into_iter().filter_map(Result::err).collect(),
        ))
    }
}

/// A valid RFC 1123 hostname for a node: its name where it is one, else its sanitized form.
#[must_use]
pub fn hostname(node: &str) -> String {
    let valid = !node.is_empty()
        && node.len() <= 63
        && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !node.starts_with('-')
        && !node.ends_with('-');
    if valid {
        node.to_owned()
    } else {
        crate::topology::sanitize(node)
    }
}
