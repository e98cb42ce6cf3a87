//! Nodes that are bare network namespaces: nothing to start (the wiring makes the namespace,
//! with the node's sysctls, on dvnet's own threads), nothing to stop beyond the namespace.
//! Their `/etc/hosts` is `/etc/netns/<ns>/hosts`, the `ip netns exec` convention, which
//! `dvnet exec` mounts over `/etc/hosts`.

use std::path::PathBuf;

use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::{NodeRuntime, Origin, RuntimeError};
use crate::plan::{NodePlan, Plan};

/// Per-namespace configuration files (`ip netns exec` convention).
#[must_use]
pub fn etc_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// The namespace runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct Namespaces;

impl NodeRuntime for Namespaces {
    fn name(&self) -> &'static str {
        "namespace"
    }

    fn preflight<'a>(
        &'a self,
        _plan: &'a Plan,
        _nodes: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async { Ok(()) }.boxed()
    }

    fn start<'a>(
        &'a self,
        _plan: &'a Plan,
        nodes: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, Result<Vec<Origin>, RuntimeError>> {
        async move { Ok(vec![Origin::New; nodes.len()]) }.boxed()
    }

    fn remove<'a>(
        &'a self,
        _id: &'a str,
        nodes: &'a [&'a NodePlan],
    ) -> BoxFuture<'a, (usize, Vec<String>)> {
        async move {
            let mut errors = Vec::new();
            for node in nodes {
                let dir = etc_dir(&node.netns);
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        errors.push(format!("removing {}: {e}", dir.display()));
                    }
                    _ => {}
                }
            }
            (0, errors)
        }
        .boxed()
    }

    fn write_hosts(&self, node: &NodePlan, text: &str) -> std::io::Result<()> {
        let dir = etc_dir(&node.netns);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("hosts"), text)
    }
}
