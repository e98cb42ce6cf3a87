//! Helpers for dvnet's root tests (tier 2: eBPF programs on crafted packets; tier 3: real
//! topologies inside namespaces the tests create).
//!
//! A test that cannot run here (no root, a missing kernel feature) prints `skipping: <why>`
//! and passes — unless `DVNET_REQUIRE_ROOT_TESTS=1` (CI sets it), where it fails instead.
//!
//! Tier 3 runs the real `dvnet` binary, as a user would, inside a *fake host*: a network
//! namespace of the test's own, so nothing dvnet does to "the host's" network ever reaches
//! the real one. Every network a test builds has a unique name, and a guard tears it down
//! and deletes the fake host when the test ends, pass or fail.

#![allow(
    clippy::must_use_candidate,
    reason = "helpers whose results tests may ignore: `ip link set`, `up`"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub mod packet;

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

/// A name no other test (or test run) uses: `dvt<pid>-<n>-<tag>`.
#[must_use]
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "dvt{}-{}-{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `dvnet` binary under test: `$DVNET_BIN`, or the one cargo built next to the tests.
#[must_use]
pub fn dvnet_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DVNET_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/dvnet
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("dvnet");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p dvnet` first (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Runs a command, returning its output (never panics on failure: callers assert).
#[must_use]
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Text of stdout and stderr, for messages.
#[must_use]
pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The address of each hop `traceroute -n -q 1` printed (its first line, the header, skipped).
#[must_use]
pub fn hops(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

/// ICMP packets (received, sent) on `node`'s link on `subnet` in `dvnet stats --json`.
#[must_use]
pub fn icmp_on(stats: &serde_json::Value, node: &str, subnet: &str) -> (u64, u64) {
    let l = stats["links"]
        .as_array()
        .expect("stats --json has links")
        .iter()
        .find(|l| l["node"] == node && l["subnet"] == subnet)
        .unwrap_or_else(|| panic!("no link of {node} on {subnet}: {stats}"));
    let n = |t: &serde_json::Value| t["by_class"]["icmp"].as_u64().unwrap_or(0);
    (n(&l["rx"]), n(&l["tx"]))
}

/// A network namespace standing in for the host. Deleted on drop.
pub struct FakeHost {
    pub name: String,
}

impl FakeHost {
    /// Creates it, with `lo` up.
    #[must_use]
    pub fn new(tag: &str) -> FakeHost {
        let name = unique(&format!("{tag}-host"));
        let out = run(Command::new("ip").args(["netns", "add", &name]));
        assert!(
            out.status.success(),
            "creating the fake host: {}",
            text(&out)
        );
        let host = FakeHost { name };
        host.ip(&["link", "set", "lo", "up"]);
        host
    }

    /// A command run inside the fake host.
    #[must_use]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }

    /// `dvnet ARGS` inside the fake host.
    #[must_use]
    pub fn dvnet(&self, args: &[&str]) -> Output {
        run(self.command(dvnet_bin()).args(args))
    }

    /// `ip ARGS` inside the fake host; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run(self.command("ip").args(args));
        assert!(
            out.status.success(),
            "ip {args:?} in the fake host: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A network a test brings up from a topology, torn down on drop.
pub struct TestNet {
    pub host: FakeHost,
    /// The network's id (its name is unique, so is the id).
    pub id: String,
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
}

impl TestNet {
    /// Writes `topology` (its `name` replaced by a unique one) to a file in a fresh fake host.
    /// Nothing is brought up yet.
    #[must_use]
    pub fn new(tag: &str, mut topology: serde_json::Value) -> TestNet {
        // the id dvnet derives from the name (cut to its length limit): what `leftovers`
        // must look for
        let id = dvnet::topology::network_id(&unique(tag)).expect("a test tag gives an id");
        topology["name"] = serde_json::Value::String(id.clone());
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("net.json");
        std::fs::write(
            &file,
            serde_json::to_string_pretty(&topology).expect("json"),
        )
        .expect("write topology");
        TestNet {
            host: FakeHost::new(tag),
            id,
            dir,
            file,
        }
    }

    /// `dvnet up FILE EXTRA...`; panics unless it succeeds.
    pub fn up(&self, extra: &[&str]) -> Output {
        let file = self.file.to_str().expect("utf-8 path");
        let mut args = vec!["up", file];
        args.extend_from_slice(extra);
        let out = self.host.dvnet(&args);
        assert!(out.status.success(), "dvnet up failed: {}", text(&out));
        out
    }

    /// `dvnet down ID`.
    #[must_use]
    pub fn down(&self) -> Output {
        self.host.dvnet(&["down", &self.id])
    }

    /// `dvnet exec ID NODE -- CMD...`.
    #[must_use]
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", &self.id, node, "--"];
        args.extend_from_slice(cmd);
        self.host.dvnet(&args)
    }

    /// Whether one ping from `node` to `target` gets an answer.
    #[must_use]
    pub fn ping(&self, node: &str, target: &str) -> bool {
        self.exec(node, &["ping", "-c", "1", "-W", "2", target])
            .status
            .success()
    }

    /// `dvnet inspect ID --json`, parsed.
    #[must_use]
    pub fn inspect(&self) -> serde_json::Value {
        let out = self.host.dvnet(&["inspect", &self.id, "--json"]);
        assert!(out.status.success(), "dvnet inspect failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("inspect --json is JSON")
    }

    /// What this network left on the machine: namespaces, records, per-namespace files, pins.
    #[must_use]
    pub fn leftovers(&self) -> Vec<String> {
        leftovers_of(&self.id)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// Everything a network `id` could have left behind: what dvnet's own inventory finds
/// (namespaces, `/etc/netns` directories, record, lock, pins).
#[must_use]
pub fn leftovers_of(id: &str) -> Vec<String> {
    dvnet::apply::inventory::Inventory::of(id).map_or_else(
        |e| vec![format!("the inventory of {id} failed: {e}")],
        |i| i.paths(),
    )
}

/// Returns `true` when a Docker daemon answers and dvnet's images are there; otherwise prints
/// why the test is skipped, or panics when skipping is not allowed (CI).
#[must_use]
pub fn require_docker(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    let images = Command::new("docker")
        .args(["image", "inspect", "dvnet/host", "dvnet/router"])
        .output();
    if images.is_ok_and(|o| o.status.success()) {
        return true;
    }
    let why = format!(
        "{test}: needs a Docker daemon with dvnet/host and dvnet/router (`./setup.sh --docker`)"
    );
    assert!(
        std::env::var_os("DVNET_REQUIRE_ROOT_TESTS").is_none_or(|v| v != "1"),
        "DVNET_REQUIRE_ROOT_TESTS=1 but {why}"
    );
    eprintln!("skipping: {why}");
    false
}

/// Retries `check` every 100 ms until it holds or `seconds` pass.
pub fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A namespace standing in for "the internet" behind a fake host: `203.0.113.2/24` and
/// `2001:db8:113::2/64`, joined to the host's `203.0.113.1/24` and `2001:db8:113::1/64`, the
/// host's default route in both families. Deleted on drop.
pub struct Internet {
    pub name: String,
}

impl Internet {
    pub const HOST: &'static str = "203.0.113.1";
    pub const ADDRESS: &'static str = "203.0.113.2";
    /// The host's IPv6 address toward the internet (a documentation prefix).
    pub const HOST6: &'static str = "2001:db8:113::1";
    pub const ADDRESS6: &'static str = "2001:db8:113::2";

    #[must_use]
    pub fn behind(host: &FakeHost) -> Internet {
        let name = unique("inet");
        let out = run(Command::new("ip").args(["netns", "add", &name]));
        assert!(out.status.success(), "{}", text(&out));
        let inet = Internet { name };
        let _ = host.ip(&[
            "link", "add", "inet0", "type", "veth", "peer", "name", "eth0", "netns", &inet.name,
        ]);
        let _ = host.ip(&["addr", "add", "203.0.113.1/24", "dev", "inet0"]);
        let _ = host.ip(&["link", "set", "inet0", "up"]);
        let _ = host.ip(&["route", "add", "default", "via", Internet::ADDRESS]);
        let _ = host.ip(&["addr", "add", "2001:db8:113::1/64", "dev", "inet0", "nodad"]);
        let _ = host.ip(&["-6", "route", "add", "default", "via", Internet::ADDRESS6]);
        let steps: [&[&str]; 4] = [
            &["addr", "add", "203.0.113.2/24", "dev", "eth0"],
            &["addr", "add", "2001:db8:113::2/64", "dev", "eth0", "nodad"],
            &["link", "set", "eth0", "up"],
            &["link", "set", "lo", "up"],
        ];
        for args in steps {
            let out = run(Command::new("ip").arg("-n").arg(&inet.name).args(args));
            assert!(out.status.success(), "{}", text(&out));
        }
        inet
    }

    /// A command run inside the internet namespace.
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// How many interfaces network `net`'s datapath taps for captures (`DV_TAPPING`), read with
/// bpftool: 0 when nothing captures.
#[must_use]
pub fn tapped(net: &TestNet) -> u32 {
    let out = run(Command::new("bpftool")
        .args(["-j", "map", "lookup", "pinned"])
        .arg(format!("/sys/fs/bpf/dvnet/{}/DV_TAPPING", net.id))
        .args(["key", "0", "0", "0", "0"]));
    assert!(out.status.success(), "bpftool: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool -j");
    let bytes: Vec<u8> = v["value"]
        .as_array()
        .expect("value bytes")
        .iter()
        .map(|b| {
            u8::from_str_radix(b.as_str().expect("a hex byte").trim_start_matches("0x"), 16)
                .expect("a hex byte")
        })
        .collect();
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

/// The lab the capture and picture tests share: A (A-1, A-2: a bridge) — R-1 — C (a veth
/// pair) — R-2 — B (B-1); R-1 drops A-2 → B.
#[must_use]
pub fn lab_with_a_drop_rule() -> serde_json::Value {
    serde_json::json!({
        "automatic_routing": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}}
        },
        "routers": {
            "R-1": {"subnets": ["A", "C"], "fw_rules": {"policy": "ACCEPT", "drop": [["A-2", "B"]]}},
            "R-2": {"subnets": ["C", "B"]}
        }
    })
}

/// Runs each test `name(datapath)` on both datapaths, as `ebpf::name` and `kernel::name`
/// (as root only: see [`require_root`]).
#[macro_export]
macro_rules! both_datapaths {
    ($($name:ident),* $(,)?) => {
        mod ebpf {
            $(#[test]
            fn $name() {
                if $crate::require_root(stringify!($name)) {
                    super::$name("ebpf");
                }
            })*
        }
        mod kernel {
            $(#[test]
            fn $name() {
                if $crate::require_root(stringify!($name)) {
                    super::$name("kernel");
                }
            })*
        }
    };
}

/// Whether a TCP connection from `client` to `server:5201` carries 100 KB (iperf3; over
/// IPv6 with `ipv6`). The server gives up after 5 s and is stopped by its pid once the
/// client is done, so nothing outlives the test.
#[must_use]
pub fn tcp_ok(net: &TestNet, client: &str, server: &str, ipv6: bool) -> bool {
    let family: &[&str] = if ipv6 { &["-6"] } else { &[] };
    let mut srv = net
        .host
        .command(dvnet_bin())
        .args(["exec", &net.id, server, "--", "timeout", "5", "iperf3"])
        .args(family)
        .args(["-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut cmd = vec!["timeout", "4", "iperf3"];
    cmd.extend_from_slice(family);
    cmd.extend_from_slice(&[
        "-c",
        server,
        "-p",
        "5201",
        "-n",
        "100K",
        "--connect-timeout",
        "1000",
    ]);
    let out = net.exec(client, &cmd);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(srv.id()).expect("pid"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = srv.wait();
    out.status.success()
}
