//! `cargo xtask bench capture`: what `dvnet capture` costs the datapath, in one run. Router
//! `r` between hosts `a` (subnet `sa`) and `b` (`sb`), and a third host `h1` on `x1`; each run,
//! taking turns, TCP (iperf3, one stream) and 64-byte UDP packets (xtask's udpgen, one flow)
//! `a`→`b`:
//!
//! 1. with no capture (the baseline: every packet pays one array read for capture);
//! 2. while `dvnet capture NET h1` runs (capture on: every packet also looks its
//!    interface up among the taps, and misses);
//! 3. while `dvnet capture NET r:sa -w FILE` captures the router's link the flow enters by
//!    (every packet copied to the capture, described and written as pcapng).
//!
//! The capture's own count of packets written and lost is reported with the third.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::harness::{Background, Scratch};
use super::idle::Waiter;
use super::impair::Net;
use super::stats::{Summary, sig3};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    repeat: super::harness::Repeat,
    /// Where to write the results [default: bench-results/capture.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Where the capture is, for each figure.
const CASES: [(&str, Option<&str>); 3] = [
    ("off", None),
    ("another link", Some("h1")),
    ("this router's link", Some("r:sa")),
];

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub seconds: f64,
    /// `tcp <case>` in Gbit/s, `udp <case>` in kpps received.
    pub samples: std::collections::BTreeMap<String, Vec<f64>>,
    pub summary: std::collections::BTreeMap<String, Option<Summary>>,
    /// What the capture of the router's link said it wrote and lost, per UDP run.
    pub captured: Vec<(u64, u64)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    super::harness::run_repeated(
        "capture",
        &args.repeat,
        args.json.as_deref(),
        measure,
        table,
        |r: &Report| &r.errors,
    )
}

/// `dvnet capture NET TARGET -w FILE`, ready (its taps set).
fn start_capture(
    net: &Net<'_>,
    target: &str,
    file: &std::path::Path,
) -> anyhow::Result<Background> {
    let mut cap = Background::spawn(
        "dvnet capture",
        net.scratch
            .dvnet()
            .args(["capture", &net.id, target, "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    let line = cap.first_line_of_stderr()?;
    if !line.contains("capturing") {
        bail!("dvnet capture said {line:?}");
    }
    Ok(cap)
}

/// Stops a capture (Ctrl-C); the packets it wrote and lost, as it says.
fn stop_capture(cap: Background) -> anyhow::Result<(u64, u64)> {
    let out = cap.interrupt(Duration::from_secs(5))?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let number_before = |word: &str| -> Option<u64> {
        let at = said.find(word)?;
        said[..at].split_whitespace().last()?.parse().ok()
    };
    let written = number_before(" packet").context(format!("dvnet capture said {said:?}"))?;
    Ok((written, number_before(" lost").unwrap_or(0)))
}

fn measure(
    scratch: &Scratch,
    wait: &mut Waiter,
    runs: usize,
    seconds: f64,
) -> anyhow::Result<Report> {
    let net = super::impair::network(scratch, "capture", 1, seconds)?;
    let file = scratch.dir.join("capture.pcapng");
    let mut report = Report {
        seconds,
        ..Report::default()
    };
    for run in 1..=runs {
        eprintln!("xtask: run {run}/{runs}");
        let r = (|| -> anyhow::Result<()> {
            for (case, target) in CASES {
                for proto in ["tcp", "udp"] {
                    let cap = target.map(|t| start_capture(&net, t, &file)).transpose()?;
                    let (x, unit) = if proto == "tcp" {
                        (net.tcp(wait)?, "Gbit/s")
                    } else {
                        (net.udp(wait)?.0, "kpps")
                    };
                    if let Some(cap) = cap {
                        let counts = stop_capture(cap)?;
                        if case == "this router's link" && proto == "udp" {
                            report.captured.push(counts);
                        }
                    }
                    let key = format!("{proto} {case}");
                    eprintln!("xtask:   {key:<28} {} {unit}", sig3(x));
                    report.samples.entry(key).or_default().push(x);
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            eprintln!("xtask: run {run} FAILED: {e:#}");
            report.errors.push(format!("run {run}: {e:#}"));
        }
    }
    net.dvnet(&["down", &net.id])?;
    report.summary = report
        .samples
        .iter()
        .map(|(k, v)| (k.clone(), Summary::of(v)))
        .collect();
    Ok(report)
}

/// The results as a Markdown table.
#[must_use]
pub fn table(r: &Report) -> String {
    let get = |k: &str| r.summary.get(k).copied().flatten();
    let runs = r.samples.values().map(Vec::len).max().unwrap_or(0);
    let mut t = format!(
        "| {runs} runs of {} s, median (min–max) | TCP a→b, Gbit/s | of off | 64-byte UDP a→b, kpps | of off |\n|---|---|---|---|---|\n",
        r.seconds
    );
    for (case, _) in CASES {
        let mut row = format!("| capture {case} |");
        for (proto, f) in [("tcp", 2usize), ("udp", 0)] {
            let s = get(&format!("{proto} {case}"));
            let base = get(&format!("{proto} off"));
            let cell = s.map_or_else(|| "–".into(), |s| s.cell_with(|x| format!("{x:.f$}")));
            let pct = match (s, base) {
                (Some(s), Some(b)) if b.median > 0.0 => {
                    format!("{:.0} %", 100.0 * s.median / b.median)
                }
                _ => "–".into(),
            };
            let _ = write!(row, " {cell} | {pct} |");
        }
        t.push_str(&row);
        t.push('\n');
    }
    if !r.captured.is_empty() {
        let written: u64 = r.captured.iter().map(|c| c.0).sum();
        let lost: u64 = r.captured.iter().map(|c| c.1).sum();
        let _ = writeln!(
            t,
            "\nCapturing the router's link during the UDP runs: {written} packets written, {lost} lost to full rings."
        );
    }
    t
}
