//! `cargo xtask bench containers`: a generated chain whose every node is a Docker container
//! (hosts `dvnet/host`, routers `dvnet/router`), `dvnet up` and `dvnet down`, beside the same
//! number of plain sequential `docker run -dit --network none` of the same images with the
//! same capabilities (and `docker rm -f` of each, one after the other), in the same run.
//!
//! dvnet does more than the baseline (veths, addresses, routes, programs inside every
//! container); the baseline is what a script that starts the containers one by one costs
//! before it has wired anything.
//!
//! Containers of the baseline are named `<prefix>-c<i>` and labelled `dvnet.bench=<prefix>`;
//! whatever carries the label is removed at the end, pass or fail.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context as _, bail};
use dvnet::generate::{GenSpec, Shape, generate};
use dvnet::plan::PlanOptions;
use serde::Serialize;
use serde_json::Value;

use super::harness::{OnDrop, Scratch, check, timed};
use super::idle::{self, IdleSettings, Waiter};
use super::stats::{Summary, secs};

const HOST_IMAGE: &str = "dvnet/host";
const ROUTER_IMAGE: &str = "dvnet/router";
const LABEL: &str = "dvnet.bench";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container nodes (routers + hosts).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Measurements per tool.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// For CI: 10 nodes, one run, 2 s idle timeout.
    #[arg(long, conflicts_with_all = ["nodes", "runs"])]
    quick: bool,
    /// Where to write the results [default: bench-results/containers.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seconds to wait for an idle machine before measuring anyway (and saying so).
    #[arg(long)]
    idle_timeout: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub hosts: usize,
    pub routers: usize,
    /// Seconds, median (min, max) over the runs: `dvnet_up`, `dvnet_down`, `docker_run`,
    /// `docker_rm`.
    pub summary: std::collections::BTreeMap<&'static str, Option<Summary>>,
    pub runs: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("bench containers creates namespaces and containers: run it as root");
    }
    let (nodes, runs) = if args.quick {
        (10, 1)
    } else {
        (args.nodes, args.runs)
    };
    docker_answers()?;
    let (scratch, mut wait, machine) =
        super::harness::start(IdleSettings::standard(args.idle_timeout, args.quick))?;
    let outcome = measure(&scratch, &mut wait, nodes, runs);
    let leftovers = scratch.cleanup();
    let report = outcome?;
    println!("{}", table(&report, false));
    for n in &wait.notes {
        println!("note: {n}");
    }
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = super::results_path(args.json.as_deref(), "containers.json");
    super::write_json(
        &path,
        &serde_json::json!({
            "bench": "containers", "started_unix": started_unix, "machine": machine,
            "report": report, "notes": wait.notes,
        }),
    )?;
    eprintln!("xtask: results in {}", path.display());
    super::harness::verdict(&leftovers, &report.errors)
}

/// Whether a Docker daemon answers, and both images are there.
pub fn docker_answers() -> anyhow::Result<()> {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .context("running docker (./setup.sh --docker installs it)")?;
    check(
        "docker version (is dockerd running? ./setup.sh --docker)",
        &out,
    )?;
    for image in [HOST_IMAGE, ROUTER_IMAGE] {
        let out = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .output()?;
        check(
            &format!("docker image inspect {image} (./setup.sh --docker builds it)"),
            &out,
        )?;
    }
    Ok(())
}

/// Brings the container network up and down `runs` times, and the baseline as often, taking
/// turns.
pub fn measure(
    scratch: &Scratch,
    wait: &mut Waiter,
    nodes: usize,
    runs: usize,
) -> anyhow::Result<Report> {
    let prefix = &scratch.prefix;
    let mut value = generate(&GenSpec {
        shape: Shape::Chain,
        nodes,
        hosts_per_lan: 1,
        fanout: 2,
        name: Some(format!("{prefix}-c{nodes}")),
    })?;
    set_images(&mut value);
    let (file, plan) =
        scratch.network_file(&format!("c{nodes}.json"), &value, PlanOptions::default())?;
    let images: Vec<&str> = plan
        .nodes
        .iter()
        .map(|n| n.image.as_deref().unwrap_or(HOST_IMAGE))
        .collect();
    let routers = images.iter().filter(|i| **i == ROUTER_IMAGE).count();
    let mut report = Report {
        nodes,
        hosts: nodes - routers,
        routers,
        summary: std::collections::BTreeMap::new(),
        runs: Vec::new(),
        errors: Vec::new(),
    };
    let id = plan.id.clone();
    scratch.networks.borrow_mut().push(id.clone());
    let sweep = OnDrop(Some(|| remove_labelled(prefix)));
    let mut samples: std::collections::BTreeMap<&'static str, Vec<f64>> =
        std::collections::BTreeMap::new();
    for run in 1..=runs {
        // dvnet
        let r = (|| -> anyhow::Result<(f64, f64)> {
            wait.settle("dvnet up (containers)")?;
            let guard = OnDrop(Some(|| {
                let _ = scratch.dvnet().args(["down", &id]).output();
            }));
            let (up, out) = timed(scratch.dvnet().arg("up").arg(&file))?;
            check("dvnet up", &out)?;
            wait.settle("dvnet down (containers)")?;
            let (down, out) = timed(scratch.dvnet().args(["down", &id]))?;
            guard.disarm();
            check("dvnet down", &out)?;
            Ok((up.as_secs_f64(), down.as_secs_f64()))
        })();
        match r {
            Ok((up, down)) => {
                eprintln!(
                    "xtask: [{nodes} containers, run {run}/{runs}] dvnet   up {} s, down {} s",
                    secs(up),
                    secs(down)
                );
                samples.entry("dvnet_up").or_default().push(up);
                samples.entry("dvnet_down").or_default().push(down);
                report
                    .runs
                    .push(serde_json::json!({"tool": "dvnet", "run": run, "up": up, "down": down}));
            }
            Err(e) => report.errors.push(format!("dvnet run {run}: {e:#}")),
        }
        idle::check_interrupted()?;
        // the baseline
        match baseline(scratch, wait, &images) {
            Ok((up, down)) => {
                eprintln!(
                    "xtask: [{nodes} containers, run {run}/{runs}] docker  run {} s, rm {} s",
                    secs(up),
                    secs(down)
                );
                samples.entry("docker_run").or_default().push(up);
                samples.entry("docker_rm").or_default().push(down);
                report.runs.push(
                    serde_json::json!({"tool": "docker", "run": run, "up": up, "down": down}),
                );
            }
            Err(e) => report.errors.push(format!("docker run {run}: {e:#}")),
        }
        idle::check_interrupted()?;
    }
    drop(sweep);
    for key in ["dvnet_up", "dvnet_down", "docker_run", "docker_rm"] {
        let s = samples.get(key).map_or(&[][..], Vec::as_slice);
        report.summary.insert(key, Summary::of(s));
    }
    Ok(report)
}

/// Every node of a generated network runs as a container.
fn set_images(value: &mut Value) {
    if let Some(subnets) = value["subnets"].as_object_mut() {
        for s in subnets.values_mut() {
            if let Some(hosts) = s["hosts"].as_object_mut() {
                for h in hosts.values_mut() {
                    h["image"] = HOST_IMAGE.into();
                }
            }
        }
    }
    if let Some(routers) = value["routers"].as_object_mut() {
        for r in routers.values_mut() {
            r["image"] = ROUTER_IMAGE.into();
        }
    }
}

/// One `docker run` after another, then one `docker rm -f` after another: seconds for each.
fn baseline(scratch: &Scratch, wait: &mut Waiter, images: &[&str]) -> anyhow::Result<(f64, f64)> {
    let prefix = &scratch.prefix;
    let names: Vec<String> = (0..images.len())
        .map(|i| format!("{prefix}-c{i}"))
        .collect();
    wait.settle("docker run")?;
    let _guard = OnDrop(Some(|| remove_labelled(prefix)));
    let start = Instant::now();
    for (name, image) in names.iter().zip(images) {
        let out = Command::new("docker")
            .args(["run", "-dit", "--network", "none", "--name", name])
            .args(["--label", &format!("{LABEL}={prefix}"), "--hostname", name])
            .args(["--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW"])
            .args(["--cap-add", "SYS_ADMIN", image])
            .output()?;
        check(&format!("docker run {name}"), &out)?;
    }
    let up = start.elapsed().as_secs_f64();
    wait.settle("docker rm")?;
    let start = Instant::now();
    for name in &names {
        let out = Command::new("docker").args(["rm", "-f", name]).output()?;
        check(&format!("docker rm -f {name}"), &out)?;
    }
    Ok((up, start.elapsed().as_secs_f64()))
}

/// Removes every container carrying this benchmark's label.
fn remove_labelled(prefix: &str) {
    let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={LABEL}={prefix}")])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
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
    t.set_header(vec![
        format!(
            "{} containers ({} hosts, {} routers)",
            report.nodes, report.hosts, report.routers
        ),
        "up (s)".to_owned(),
        "down (s)".to_owned(),
    ]);
    let cell = |k: &str| {
        report
            .summary
            .get(k)
            .copied()
            .flatten()
            .map_or_else(|| "failed".to_owned(), |s| s.cell())
    };
    t.add_row(vec![
        "dvnet up/down (wired, routed, programs attached)".to_owned(),
        cell("dvnet_up"),
        cell("dvnet_down"),
    ]);
    t.add_row(vec![
        "sequential docker run / docker rm -f (no network)".to_owned(),
        cell("docker_run"),
        cell("docker_rm"),
    ]);
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvnet::plan::Plan;
    use dvnet::topology::Topology;

    #[test]
    fn every_node_gets_an_image() {
        let mut v = generate(&GenSpec {
            shape: Shape::Chain,
            nodes: 10,
            hosts_per_lan: 1,
            fanout: 2,
            name: Some("dvb1-c".into()),
        })
        .unwrap();
        set_images(&mut v);
        let plan = Plan::build(
            &Topology::from_json(&v.to_string(), "c").unwrap(),
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(plan.nodes.len(), 10);
        assert!(plan.nodes.iter().all(|n| n.image.is_some()));
    }
}
