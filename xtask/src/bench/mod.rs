//! `cargo xtask bench`: measurements behind DESIGN.md's performance targets.
//!
//! - [`deploy`]: wall time of `dvnet up`/`down` against the floor (one `ip -batch` creating
//!   the same namespaces and veths) and Mininet, on an idle machine, inside a fake host.
//! - [`datapath`]: forwarding and firewall figures, eBPF vs kernel vs a bare veth pair.
//! - [`containers`]: container nodes vs sequential `docker run`.
//! - [`driver`]: the Docker network driver vs `dvnet up`, and joins vs `--network none`.
//! - [`plan`]: parsing, validation and planning of a large topology, in-process.
//! - [`apply`]: an edit of a running network (one host added) beside its `up`.
//! - [`capture`]: what `dvnet capture` costs the datapath: off, on another link, on the path.
//! - [`impair`]: what impairments cost: clean links beside impaired ones, the packet rate of
//!   a delayed link, one `dvnet impair` call.
//! - [`suite`]: all of the above in one run, with JSON, SVG plots and the README summary.
//!
//! All of them run from a release build: a debug xtask re-executes itself with
//! `cargo run --release`, since a debug build's timings of the library mean nothing.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

mod apply;
mod capture;
mod containers;
mod datapath;
mod deploy;
mod driver;
mod ecmp;
mod harness;
mod idle;
mod impair;
mod machines;
mod plan;
mod plots;
mod stats;
mod suite;
mod udpgen;

/// Benchmarks (results in bench-results/, which git ignores).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every figure in one run (deploy of four shapes, datapath, containers) with the
    /// baselines, JSON and SVG plots; `--quick` in under two minutes (needs root).
    Suite(suite::Args),
    /// A network of container nodes beside sequential `docker run` (needs root, Docker).
    Containers(containers::Args),
    /// The Docker network driver: a lab by `docker network create` beside `dvnet up`, and
    /// `docker run` on a lab's subnet beside `--network none` (needs root, Docker).
    Driver(driver::Args),
    /// Both datapaths side by side: forwarding, firewall scaling, attaching at scale (needs
    /// root).
    Datapath(datapath::Args),
    /// Time `dvnet up`/`down` beside one `ip -batch` (the floor) and Mininet (needs root).
    Deploy(deploy::Args),
    /// Time parsing, validation and planning of a large generated topology.
    Plan(plan::Args),
    /// `dvnet apply` of one added host beside `dvnet up` of the whole network (needs root).
    Apply(apply::Args),
    /// Impairments: a clean link's throughput with others impaired, the packet rate of a
    /// delayed link, the cost of one `dvnet impair` (needs root).
    Impair(impair::Args),
    /// `dvnet capture`'s cost: forwarding with capture off, on another link, and on the
    /// router's link the flow crosses (needs root).
    Capture(capture::Args),
    /// Equal-cost multipath: 8 TCP streams leaf to leaf over 4 spines, ECMP beside one path,
    /// both datapaths (needs root).
    Ecmp(ecmp::Args),
    /// A lab placed on two machines (namespaces on a shared underlay) beside the same lab on
    /// one: TCP and 64-byte UDP through VXLAN, and `up` of a 2,000-node chain (needs root).
    Machines(machines::Args),
    /// (helper, run inside a benchmark's namespace) Send small UDP packets over many flows.
    #[command(hide = true)]
    Udpgen(udpgen::GenArgs),
    /// (helper, run inside a benchmark's namespace) Bind a UDP port and never read.
    #[command(hide = true)]
    Udpsink(udpgen::SinkArgs),
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    // parse first: `--help` and mistakes answer at once, before any release build
    let cli = Cli::parse_from(
        std::iter::once("cargo xtask bench").chain(args.iter().map(String::as_str)),
    );
    match cli.command {
        // helpers run from whatever binary a benchmark started them with
        Command::Udpgen(a) => return udpgen::generate(&a),
        Command::Udpsink(a) => return udpgen::sink(&a),
        _ => {}
    }
    if cfg!(debug_assertions) {
        return rerun_in_release(args);
    }
    match cli.command {
        Command::Suite(a) => suite::run(&a),
        Command::Containers(a) => containers::run(&a),
        Command::Driver(a) => driver::run(&a),
        Command::Datapath(a) => datapath::run(&a),
        Command::Deploy(a) => deploy::run(&a),
        Command::Plan(a) => plan::run(&a),
        Command::Apply(a) => apply::run(&a),
        Command::Impair(a) => impair::run(&a),
        Command::Capture(a) => capture::run(&a),
        Command::Ecmp(a) => ecmp::run(&a),
        Command::Machines(a) => machines::run(&a),
        Command::Udpgen(_) | Command::Udpsink(_) => unreachable!("handled above"),
    }
}

/// Replaces this debug process with `cargo run --release -p xtask -- bench ARGS`.
fn rerun_in_release(args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    eprintln!("xtask: benchmarks run from a release build: cargo run --release -p xtask");
    let err = super::cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "xtask",
            "--",
            "bench",
        ])
        .args(args)
        .exec();
    Err(anyhow::Error::new(err).context("running cargo run --release -p xtask"))
}

/// The workspace root (xtask's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Where a result file goes: `path` as given, or `bench-results/<default>` at the workspace
/// root (git ignores it).
fn results_path(path: Option<&Path>, default: &str) -> PathBuf {
    path.map_or_else(
        || workspace_root().join("bench-results").join(default),
        Path::to_path_buf,
    )
}

/// Writes `value` as pretty JSON, creating the directory.
fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The machine the numbers come from.
#[derive(Debug, Clone, serde::Serialize)]
struct Machine {
    cpu: String,
    cpus: usize,
    memory_gib: f64,
    kernel: String,
    /// 1-minute load average when the benchmark started.
    load_1m: f64,
}

impl Machine {
    fn describe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let meminfo = read("/proc/meminfo");
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_1m: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(f64::NAN),
        }
    }

    fn line(&self) -> String {
        format!(
            "{}, {} CPUs, {} GiB, Linux {}, load {:.2} at start",
            self.cpu, self.cpus, self.memory_gib, self.kernel, self.load_1m
        )
    }
}
