//! Where nodes run: a runtime makes a node's network namespace exist, and takes it away.
//! dvnet wires every namespace the same way whatever made it, so a runtime is small:
//!
//! - [`netns::Namespaces`]: a bare network namespace (the namespace itself is made by the
//!   wiring, with the node's sysctls, on dvnet's own threads).
//! - [`docker::Containers`]: a Docker container (`--network none`), whose namespace dvnet
//!   adopts.
//!
//! A new runtime (a remote machine, a Docker driver's endpoints) is a new file implementing
//! [`NodeRuntime`].

use futures::future::BoxFuture;

use crate::plan::{NodePlan, Plan};

pub mod docker;
pub mod netns;

/// Where a started node's network namespace comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A new namespace, made by the wiring.
    New,
    /// The namespace of this process (a container's), adopted under the node's name.
    Adopt(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    #[error("{0}")]
    Other(String),
}

/// A kind of node.
pub trait NodeRuntime: Sync {
    /// What it is called in messages.
    fn name(&self) -> &'static str;

    /// Checks, before anything is created, that `nodes` of `plan` can start here.
    fn preflight<'a>(
        &'a self,
        plan: &'a Plan,
        nodes: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Starts `nodes`, in order; says where each one's namespace comes from. When one fails,
    /// the others in flight are waited for, then the first error is returned.
    fn start<'a>(
        &'a self,
        plan: &'a Plan,
        nodes: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, Result<Vec<Origin>, RuntimeError>>;

    /// Stops and removes `nodes` of network `id` (their namespaces are unmounted by the
    /// caller); returns how many were removed and what went wrong.
    fn remove<'a>(
        &'a self,
        id: &'a str,
        nodes: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, (usize, Vec<String>)>;

    /// Writes a running node's `/etc/hosts`.
    ///
    /// # Errors
    /// When the file cannot be written.
    fn write_hosts(&self, node: &NodePlan, text: &str) -> std::io::Result<()>;
}
