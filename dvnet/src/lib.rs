//! dvnet builds emulated IP networks on one Linux machine.
//!
//! Data flows one way:
//! - [`topology`]: file → validated [`topology::Topology`] (every error at once, with its path).
//! - [`plan`]: topology → [`plan::Plan`], pure: addresses, names, routes, firewall entries,
//!   identities kept from the running network's plan; [`plan::diff`] says what changes.
//! - [`apply`]: a diff worked through on the machine — `up` (from nothing), `apply` (an edit),
//!   `down` (to nothing) — with checks before anything changes, one network's lock, rollback.
//! - [`state`]: the record of a running network, so later processes find it.
//!
//! The backends, each behind a small trait or module: [`runtime`] (where nodes run:
//! namespaces, Docker containers), [`datapath`] (eBPF maps and programs, the kernel's
//! iptables), [`host`] (the host's side of outbound access), [`frr`] (routing daemons).
//! Below them: [`netns`] (named namespaces), [`netlink`] (typed rtnetlink), [`lock`],
//! [`threads`] (work in chunks on threads).
//!
//! [`plugin`] serves it all to Docker as a network driver; [`delay`] is the delay line that
//! holds packets back (delay, jitter, rate) where the kernel has no netem.
//!
//! Around them: [`generate`] writes generated topologies, [`inspect`] reads a network back
//! from the kernel, [`stats`] reads the counters, [`render`] draws tables, [`exec`] enters
//! nodes, [`cli`] is the command line.
pub mod apply;
pub mod capture;
pub mod cli;
pub mod datapath;
pub mod delay;
pub mod exec;
pub mod frr;
pub mod generate;
pub mod graph;
pub mod host;
pub mod inspect;
pub mod lock;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod plugin;
pub mod render;
pub mod runtime;
pub mod state;
pub mod stats;
pub mod threads;
pub mod topology;
pub mod ui;

/// The `dvnet` binary, to start dvnet's own helper processes (the delay line): this one, or
/// `$DVNET_BIN` when this process is not `dvnet` (a test of the library).
///
/// # Errors
/// When neither can be found.
pub fn exe() -> std::io::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    if me.file_name().is_some_and(|n| n == "dvnet") {
        return Ok(me);
    }
    std::env::var_os("DVNET_BIN")
        .map(std::path::PathBuf::from)
        .ok_or_else(|| std::io::Error::other("not running as `dvnet`, and no $DVNET_BIN"))
}

/// An error with its causes, one `caused by:` line each; a cause the line above already
/// quotes is not repeated.
#[must_use]
pub fn error_chain(err: &dyn std::error::Error) -> String {
    use std::fmt::Write as _;
    let mut text = err.to_string();
    let mut shown = text.clone();
    let mut cause = err.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !shown.contains(&line) {
            let _ = write!(text, "\n  caused by: {line}");
        }
        shown = line;
        cause = c.source();
    }
    text
}
