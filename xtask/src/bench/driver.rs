//! `cargo xtask bench driver`: dvnet as Docker's network driver, beside dvnet itself and
//! beside Docker without it, in one run.
//!
//! 1. The classic lab (`examples/classic.json`, every node a container) built with
//!    `docker network create --driver …` and removed with `docker network rm`, beside
//!    `dvnet up --runtime docker` and `dvnet down` of the same file: what going through
//!    dockerd and the plugin costs.
//! 2. Join latency: `docker run -d --network <a subnet of the lab>` (the container becomes
//!    a host of the lab: an edit of it, its interface moved in, its side counted) beside
//!    `docker run -d --network none` of the same image, taking turns; then `docker rm -f`
//!    of each (leaving the lab beside removing a container with no network).
//!
//! The plugin runs where dockerd runs, under a driver name of this run's own; everything
//! is named with the run's prefix and removed at the end, pass or fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::harness::{OnDrop, Scratch, check, timed};
use super::idle::{self, IdleSettings, Waiter};
use super::stats::{Summary, secs};

const LABEL: &str = "dvnet.bench";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labs built and removed by each tool.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Containers started by each of `docker run --network <subnet>` and `--network none`.
    #[arg(long, default_value_t = 20)]
    joins: usize,
    /// For CI: one lab each, 3 containers each.
    #[arg(long, conflicts_with_all = ["runs", "joins"])]
    quick: bool,
    /// Seconds to wait for an idle machine before measuring anyway (and saying so).
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Where to write the results [default: bench-results/driver.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub nodes: usize,
    /// Seconds, median (min, max): `network_create`, `network_rm`, `dvnet_up`,
    /// `dvnet_down`, `run_joined`, `run_none`, `rm_joined`, `rm_none`.
    pub summary: std::collections::BTreeMap<&'static str, Option<Summary>>,
    pub samples: std::collections::BTreeMap<&'static str, Vec<f64>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("bench driver serves a Docker network driver and builds labs: run it as root");
    }
    let (runs, joins) = if args.quick {
        (1, 3)
    } else {
        (args.runs, args.joins)
    };
    super::containers::docker_answers()?;
    let (scratch, mut wait, machine) =
        super::harness::start(IdleSettings::standard(args.idle_timeout, args.quick))?;
    let outcome = measure(&scratch, &mut wait, runs, joins);
    let leftovers = scratch.cleanup();
    let report = outcome?;
    super::harness::conclude(
        "driver",
        &table(&report, false),
        &wait,
        &machine,
        &report,
        args.json.as_deref(),
    )?;
    super::harness::verdict(&leftovers, &report.errors)
}

/// The plugin of this run, stopped (SIGTERM, by its pid) when dropped.
struct Plugin {
    child: Child,
    socket: PathBuf,
}

impl Plugin {
    fn start(scratch: &Scratch) -> anyhow::Result<Plugin> {
        let socket = PathBuf::from(format!("/run/docker/plugins/{}.sock", scratch.prefix));
        let log = std::fs::File::create(scratch.dir.join("plugin.log"))?;
        // in dockerd's namespace: dockerd moves the interfaces the plugin makes
        let child = Command::new(&scratch.dvnet)
            .arg("plugin")
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dvnet plugin")?;
        let plugin = Plugin { child, socket };
        for _ in 0..100 {
            if std::os::unix::net::UnixStream::connect(&plugin.socket).is_ok() {
                return Ok(plugin);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        bail!("dvnet plugin did not serve on {}", plugin.socket.display())
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn docker(args: &[&str]) -> Command {
    let mut c = Command::new("docker");
    c.args(args);
    c
}

/// `docker ARGS`, timed and checked: seconds.
fn docker_timed(args: &[&str]) -> anyhow::Result<f64> {
    let (took, out) = timed(&mut docker(args))?;
    check(&format!("docker {}", args.join(" ")), &out)?;
    Ok(took.as_secs_f64())
}

/// Removes this run's containers and networks (any left by a failed measurement).
fn sweep(prefix: &str) {
    if let Ok(out) = docker(&["ps", "-aq", "--filter", &format!("label={LABEL}={prefix}")]).output()
    {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = docker(&["rm", "-f"]).args(&ids).output();
        }
    }
    // subnet networks before the lab's
    for n in ["A", "lab"] {
        let _ = docker(&["network", "rm", &format!("{prefix}-{n}")]).output();
    }
}

pub fn measure(
    scratch: &Scratch,
    wait: &mut Waiter,
    runs: usize,
    joins: usize,
) -> anyhow::Result<Report> {
    let prefix = scratch.prefix.clone();
    let classic = std::fs::read_to_string(super::workspace_root().join("examples/classic.json"))
        .context("reading examples/classic.json")?;
    let mut topology: serde_json::Value = serde_json::from_str(&classic)?;
    topology["name"] = format!("{prefix}-classic").into();
    let options = dvnet::plan::PlanOptions {
        runtime: dvnet::plan::Runtime::Docker,
        ..dvnet::plan::PlanOptions::default()
    };
    let (file, plan) = scratch.network_file("classic.json", &topology, options)?;
    let f = file.to_str().context("a UTF-8 path")?.to_owned();
    scratch.networks.borrow_mut().push(plan.id.clone());
    let plugin = Plugin::start(scratch)?;
    let _sweep = OnDrop(Some(|| sweep(&prefix)));
    let lab = format!("{prefix}-lab");
    let subnet = format!("{prefix}-A");
    let mut report = Report {
        nodes: plan.nodes.len(),
        summary: std::collections::BTreeMap::new(),
        samples: std::collections::BTreeMap::new(),
        errors: Vec::new(),
    };
    let def = format!("net.dvnet.def={f}");
    let create = [
        "network", "create", "--driver", &prefix, "--opt", &def, &lab,
    ];
    for run in 1..=runs {
        let r = (|| -> anyhow::Result<[f64; 4]> {
            wait.settle("docker network create")?;
            let create = docker_timed(&create)?;
            wait.settle("docker network rm")?;
            let rm = docker_timed(&["network", "rm", &lab])?;
            wait.settle("dvnet up")?;
            let (up, out) = timed(scratch.dvnet().args(["up", &f, "--runtime", "docker"]))?;
            check("dvnet up", &out)?;
            wait.settle("dvnet down")?;
            let (down, out) = timed(scratch.dvnet().args(["down", &plan.id]))?;
            check("dvnet down", &out)?;
            Ok([create, rm, up.as_secs_f64(), down.as_secs_f64()])
        })();
        match r {
            Ok(t) => {
                eprintln!(
                    "xtask: [run {run}/{runs}] docker network create {} s, rm {} s; dvnet up {} s, down {} s",
                    secs(t[0]),
                    secs(t[1]),
                    secs(t[2]),
                    secs(t[3])
                );
                for (k, v) in ["network_create", "network_rm", "dvnet_up", "dvnet_down"]
                    .into_iter()
                    .zip(t)
                {
                    report.samples.entry(k).or_default().push(v);
                }
            }
            Err(e) => report.errors.push(format!("run {run}: {e:#}")),
        }
        idle::check_interrupted()?;
    }
    // join latency, on one lab
    let r = (|| -> anyhow::Result<()> {
        docker_timed(&create)?;
        let attach = format!("net.dvnet.attach={lab}/A");
        docker_timed(&[
            "network",
            "create",
            "--driver",
            &prefix,
            "--ipam-driver",
            "null",
            "--opt",
            &attach,
            &subnet,
        ])?;
        let label = format!("{LABEL}={prefix}");
        for j in 0..joins {
            for (key, network) in [("run_joined", subnet.as_str()), ("run_none", "none")] {
                let name = format!("{prefix}-{key}-{j}");
                wait.settle("docker run")?;
                let took = docker_timed(&[
                    "run",
                    "-d",
                    "--stop-timeout",
                    "1",
                    "--label",
                    &label,
                    "--name",
                    &name,
                    "--network",
                    network,
                    "dvnet/host",
                    "sleep",
                    "600",
                ])?;
                report.samples.entry(key).or_default().push(took);
            }
            idle::check_interrupted()?;
        }
        for j in 0..joins {
            for key in ["run_joined", "run_none"] {
                let name = format!("{prefix}-{key}-{j}");
                wait.settle("docker rm")?;
                let took = docker_timed(&["rm", "-f", &name])?;
                let key = if key == "run_joined" {
                    "rm_joined"
                } else {
                    "rm_none"
                };
                report.samples.entry(key).or_default().push(took);
            }
        }
        docker_timed(&["network", "rm", &subnet])?;
        docker_timed(&["network", "rm", &lab])?;
        Ok(())
    })();
    if let Err(e) = r {
        report.errors.push(format!("joins: {e:#}"));
    }
    sweep(&prefix);
    drop(plugin);
    for key in [
        "network_create",
        "network_rm",
        "dvnet_up",
        "dvnet_down",
        "run_joined",
        "run_none",
        "rm_joined",
        "rm_none",
    ] {
        let s = report.samples.get(key).map_or(&[][..], Vec::as_slice);
        report.summary.insert(key, Summary::of(s));
    }
    Ok(report)
}

/// The table: for a terminal, or Markdown (`markdown`) for the README.
pub fn table(report: &Report, markdown: bool) -> String {
    use comfy_table::Table;
    use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
    let mut t = Table::new();
    t.load_style(if markdown {
        ASCII_MARKDOWN
    } else {
        UTF8_FULL_CONDENSED
    });
    let cell = |k: &str| {
        report
            .summary
            .get(k)
            .copied()
            .flatten()
            .map_or_else(|| "failed".to_owned(), |s| s.cell())
    };
    t.set_header(vec![
        format!("classic lab, {} containers", report.nodes),
        "build (s)".to_owned(),
        "remove (s)".to_owned(),
    ]);
    t.add_row(vec![
        "docker network create / rm --driver dvnet".to_owned(),
        cell("network_create"),
        cell("network_rm"),
    ]);
    t.add_row(vec![
        "dvnet up / down --runtime docker".to_owned(),
        cell("dvnet_up"),
        cell("dvnet_down"),
    ]);
    t.add_row(vec![
        "one container: docker run -d --network <lab subnet> / docker rm -f".to_owned(),
        cell("run_joined"),
        cell("rm_joined"),
    ]);
    t.add_row(vec![
        "one container: docker run -d --network none / docker rm -f".to_owned(),
        cell("run_none"),
        cell("rm_none"),
    ]);
    t.to_string()
}
