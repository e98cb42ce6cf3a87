//! Nodes that name an image run as Docker containers (through bollard): `--network none`,
//! NET_ADMIN, NET_RAW and SYS_ADMIN, hostname = node name, labels carrying the network id and
//! node name so `down` finds them even after a crash. dvnet then adopts the container's
//! network namespace under `/run/netns/<name>` and wires it exactly like a namespace node.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures::{StreamExt as _, stream};

use super::{NodeRuntime, Origin, RuntimeError};
use crate::plan::{NodePlan, Plan};
use futures::FutureExt as _;
use futures::future::BoxFuture;

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
    #[error(
        "the container name{} {} {} already taken by container{} that dvnet did not make for this network\n\
         hint: remove or rename {} (`docker rm -f NAME`), or rename the network",
        if names.len() == 1 { "" } else { "s" }, names.join(", "),
        if names.len() == 1 { "is" } else { "are" }, if names.len() == 1 { "" } else { "s" },
        if names.len() == 1 { "it" } else { "them" }
    )]
    NamesTaken { names: Vec<String> },
    #[error(
        "containers of network {id} are left from an earlier run ({}); `dvnet down {id}` removes them",
        names.join(", ")
    )]
    Orphans { id: String, names: Vec<String> },
    #[error(
        "router {router} runs FRR in a container of image {image}, which has no `dvnet-frr` to \
         start it\nhint: use dvnet/router (`./setup.sh --docker` builds it), or an image built \
         from images/router"
    )]
    NoFrrStarter { router: String, image: String },
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
    pub async fn check_images(&self, nodes: &[&NodePlan]) -> Result<(), DockerError> {
        let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
        for node in nodes.iter().filter(|n| n.container) {
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

    /// Checks, before anything is created, that no container holds a name `nodes` need. With
    /// `fresh` (a network being built from nothing), no container of this network may be left
    /// from before either.
    ///
    /// # Errors
    /// [`DockerError::NamesTaken`] (a foreign container) or [`DockerError::Orphans`].
    pub async fn check_names(
        &self,
        plan: &Plan,
        nodes: &[&NodePlan],
        fresh: bool,
    ) -> Result<(), DockerError> {
        if fresh {
            let ours = self.of_network(&plan.id).await?;
            if !ours.is_empty() {
                return Err(DockerError::Orphans {
                    id: plan.id.clone(),
                    names: ours.into_iter().map(|(_, name)| name).collect(),
                });
            }
        }
        let mut taken = Vec::new();
        for node in nodes.iter().filter(|n| n.container) {
            match self.docker.inspect_container(&node.netns, None).await {
                Ok(_) => taken.push(node.netns.clone()),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(source) => {
                    return Err(DockerError::Container {
                        op: "looking up",
                        name: node.netns.clone(),
                        source,
                    });
                }
            }
        }
        if taken.is_empty() {
            Ok(())
        } else {
            Err(DockerError::NamesTaken { names: taken })
        }
    }

    /// Whether `image` has the program `command` on its `PATH`: a throwaway container, no
    /// network, that runs `command -v`.
    ///
    /// # Errors
    /// When Docker cannot run it.
    pub async fn image_has(&self, image: &str, command: &str) -> Result<bool, DockerError> {
        let err = |op| {
            let name = format!("checking {image} for {command}");
            move |source| DockerError::Container { op, name, source }
        };
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["sh".into(), "-c".into()]),
            cmd: Some(vec![format!("command -v {command} >/dev/null")]),
            labels: Some(HashMap::from([(LABEL_NETWORK.to_owned(), String::new())])),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(err("creating"))?;
        let id = created.id;
        let outcome = async {
            self.docker
                .start_container(&id, None)
                .await
                .map_err(err("starting"))?;
            let mut wait = self.docker.wait_container(&id, None);
            let code = match wait.next().await {
                Some(Ok(r)) => r.status_code,
                // a non-zero exit arrives as an error carrying the code
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                Some(Err(e)) => return Err(err("waiting for")(e)),
                None => -1,
            };
            Ok(code == 0)
        }
        .await;
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = self.docker.remove_container(&id, Some(options)).await;
        outcome
    }

    /// The containers labelled as network `id`'s, running or not: (id, name).
    ///
    /// # Errors
    /// When the daemon cannot list them.
    pub async fn of_network(&self, id: &str) -> Result<Vec<(String, String)>, DockerError> {
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
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                Some((c.id?, name))
            })
            .collect())
    }

    /// The network ids of every container dvnet labelled, with how many each has.
    ///
    /// # Errors
    /// When the daemon cannot list them.
    pub async fn networks(&self) -> Result<HashMap<String, usize>, DockerError> {
        let filters = HashMap::from([("label", vec![LABEL_NETWORK.to_owned()])]);
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
                name: "made by dvnet".into(),
                source,
            })?;
        let mut out = HashMap::new();
        for c in list {
            if let Some(id) = c.labels.as_ref().and_then(|l| l.get(LABEL_NETWORK)) {
                *out.entry(id.clone()).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    /// Creates and starts the containers of `nodes`; returns the process id of each, in order,
    /// whose network namespace dvnet then adopts. When one fails, the others still in flight
    /// are waited for (never abandoned halfway, where Docker would finish them after the
    /// rollback looked), then the first error is returned.
    ///
    /// # Errors
    /// When Docker refuses a container or it does not keep running.
    pub async fn create(&self, plan: &Plan, nodes: &[&NodePlan]) -> Result<Vec<u32>, DockerError> {
        let extra_hosts: Vec<String> = if plan.update_hosts {
            plan.host_entries()
                .into_iter()
                .map(|(name, ip)| format!("{name}:{ip}"))
                .collect()
        } else {
            Vec::new()
        };
        // bounded by hand: a stream combinator's closure over borrowed nodes trips the
        // compiler's Send analysis behind the boxed runtime future
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut results: Vec<(usize, Result<u32, DockerError>)> = Vec::with_capacity(nodes.len());
        let mut next = 0;
        while next < nodes.len() || !pending.is_empty() {
            while next < nodes.len() && pending.len() < CONCURRENCY {
                let (i, node, extra_hosts) = (next, nodes[next], extra_hosts.clone());
                pending.push(async move { (i, self.create_one(plan, node, extra_hosts).await) });
                next += 1;
            }
            if let Some(done) = pending.next().await {
                results.push(done);
            }
        }
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// Removes the containers of `nodes` that are labelled as network `id`'s (never one
    /// dvnet did not make for it).
    pub async fn remove_nodes(&self, id: &str, nodes: &[&NodePlan]) -> (usize, Vec<String>) {
        let names: std::collections::HashSet<&str> =
            nodes.iter().map(|n| n.netns.as_str()).collect();
        let ours = match self.of_network(id).await {
            Ok(ours) => ours,
            Err(e) => return (0, vec![e.to_string()]),
        };
        let ids: Vec<String> = ours
            .into_iter()
            .filter(|(_, name)| names.contains(name.as_str()))
            .map(|(cid, _)| cid)
            .collect();
        let mut removed = std::collections::HashSet::new();
        let mut errors = Vec::new();
        self.remove_all(ids, &mut removed, &mut errors).await;
        (removed.len(), errors)
    }

    /// The process id of a running container.
    ///
    /// # Errors
    /// When it cannot be inspected or does not run.
    pub async fn pid_of(&self, name: &str) -> Result<u32, DockerError> {
        let state = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|source| DockerError::Container {
                op: "inspecting",
                name: name.to_owned(),
                source,
            })?
            .state;
        match state.and_then(|s| if s.running == Some(true) { s.pid } else { None }) {
            Some(pid) if pid > 0 => Ok(u32::try_from(pid).expect("positive pid")),
            _ => Err(DockerError::NotRunning {
                name: name.to_owned(),
            }),
        }
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
        self.pid_of(&name).await
    }

    /// Removes every container of network `id` (found by label), running or not.
    ///
    /// With `settle_since` (when an `up` that started then died while creating containers),
    /// creations Docker still had in flight are waited for: every container-creation event of
    /// this network since that moment is followed until none has come for
    /// [`SETTLE_QUIET`], and each container it names is removed too.
    ///
    /// # Errors
    /// Listing fails; removal errors are collected.
    pub async fn remove_network(
        &self,
        id: &str,
        settle_since: Option<u64>,
    ) -> Result<(usize, Vec<String>), DockerError> {
        // subscribed before listing, and from the start of `up`: no creation slips between
        let mut events = settle_since.map(|since| {
            let filters = HashMap::from([
                ("type", vec!["container".to_owned()]),
                ("event", vec!["create".to_owned()]),
                ("label", vec![format!("{LABEL_NETWORK}={id}")]),
            ]);
            Box::pin(
                self.docker.events(Some(
                    EventsOptionsBuilder::new()
                        .since(&since.to_string())
                        .filters(&filters)
                        .build(),
                )),
            )
        });
        let listed: Vec<String> = self
            .of_network(id)
            .await?
            .into_iter()
            .map(|(cid, _)| cid)
            .collect();
        let mut removed = std::collections::HashSet::new();
        let mut errors = Vec::new();
        self.remove_all(listed, &mut removed, &mut errors).await;
        if let Some(events) = events.as_mut() {
            let deadline = tokio::time::Instant::now() + SETTLE_MAX;
            loop {
                let next = tokio::time::timeout(SETTLE_QUIET, events.next()).await;
                let cid = match next {
                    Ok(Some(Ok(event))) => event.actor.and_then(|a| a.id),
                    Ok(Some(Err(e))) => {
                        errors.push(format!("following Docker's events: {e}"));
                        break;
                    }
                    // quiet, or the stream ended
                    Err(_) | Ok(None) => break,
                };
                if let Some(cid) = cid
                    && !removed.contains(&cid)
                {
                    self.remove_all(vec![cid], &mut removed, &mut errors).await;
                }
                if tokio::time::Instant::now() > deadline {
                    break;
                }
            }
        }
        Ok((removed.len(), errors))
    }

    async fn remove_all(
        &self,
        ids: Vec<String>,
        removed: &mut std::collections::HashSet<String>,
        errors: &mut Vec<String>,
    ) {
        let results: Vec<(String, Result<(), bollard::errors::Error>)> = stream::iter(ids)
            .map(|cid| async move {
                let options = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                let r = self.docker.remove_container(&cid, Some(options)).await;
                (cid, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (cid, r) in results {
            match r {
                Ok(()) => {
                    removed.insert(cid);
                }
                // gone already (removed by someone else, or by an earlier pass)
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => errors.push(format!("removing container {cid}: {e}")),
            }
        }
    }
}

/// How long `down` waits, after an `up` died creating containers, for a creation event
/// before it trusts that Docker has none in flight.
pub const SETTLE_QUIET: std::time::Duration = std::time::Duration::from_secs(1);
/// The most `down` waits for creations in flight.
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

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

impl NodeRuntime for Containers {
    fn name(&self) -> &'static str {
        "container"
    }

    fn preflight<'a>(
        &'a self,
        plan: &'a Plan,
        nodes: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            self.check_images(nodes).await?;
            self.check_names(plan, nodes, false).await?;
            Ok(())
        }
        .boxed()
    }

    fn start<'a>(
        &'a self,
        plan: &'a Plan,
        nodes: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, Result<Vec<Origin>, RuntimeError>> {
        async move {
            Ok(self
                .create(plan, nodes)
                .await?
                .into_iter()
                .map(Origin::Adopt)
                .collect())
        }
        .boxed()
    }

    fn remove<'a>(
        &'a self,
        id: &'a str,
        nodes: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, (usize, Vec<String>)> {
        self.remove_nodes(id, nodes).boxed()
    }

    fn write_hosts(&self, node: &NodePlan, text: &str) -> std::io::Result<()> {
        write_hosts(node, text)
    }
}

/// Writes a container node's `/etc/hosts`: Docker bind-mounts a file of its own there, so
/// it is written through the container's root and seen at once inside.
///
/// # Errors
/// When no process runs in the node, or the file cannot be written.
pub fn write_hosts(node: &NodePlan, text: &str) -> std::io::Result<()> {
    let pid = node_pid(&node.netns)?;
    std::fs::write(format!("/proc/{pid}/root/etc/hosts"), text)
}

/// The process whose network namespace is the adopted `/run/netns/<name>`: the container's
/// main process, found without asking Docker.
fn node_pid(name: &str) -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata(crate::netns::path(name))?.ino();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino)
            && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok()
        {
            return Ok(pid);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no process runs in {name}"),
    ))
}
