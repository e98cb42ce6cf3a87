//! Helpers for dvnet's root tests (tier 2: eBPF programs on crafted packets; tier 3: real
//! topologies inside namespaces the tests create).
//!
//! A test that cannot run here (no root, a missing kernel feature) prints `skipping: <why>`
//! and passes — unless `DVNET_REQUIRE_ROOT_TESTS=1` (CI sets it), where it fails instead.

/// Returns `true` when the test can run as root; otherwise prints why it is skipped, or
/// panics when skipping is not allowed.
#[must_use]
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let why = format!("{test}: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)");
    assert!(
        std::env::var_os("DVNET_REQUIRE_ROOT_TESTS").is_none_or(|v| v != "1"),
        "DVNET_REQUIRE_ROOT_TESTS=1 but {why}"
    );
    eprintln!("skipping: {why}");
    false
}

pub mod packet;
