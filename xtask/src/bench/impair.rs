//! `cargo xtask bench impair`: what impairments cost, each figure beside its baseline in the
//! same run. One router `r` joins host `a` (subnet `sa`), host `b` (subnet `sb`) and
//! `--others` more subnets with a host each (`x1`…); every run, in turn:
//!
//! 1. TCP `a`→`b` (iperf3, one stream) with the other links unimpaired, then with every other
//!    link impaired by `dvnet apply` of a file that gives each `loss=1%, delay=10ms,
//!    jitter=1ms, rate=100mbit` (the delay line then serves 2 lines per link), then back:
//!    what a link without impairments pays for impairments elsewhere (nothing, if the map
//!    lookup and the idle delay line cost nothing);
//! 2. 64-byte UDP packets `a`→`b` (xtask's udpgen, one flow), counted at `b`'s interface:
//!    `sb` unimpaired, with `loss=0.1%` (a draw in the eBPF program on every packet), and
//!    with `delay=1ms` (every packet through the delay line and back): the packet rate a
//!    delayed link sustains, beside the same link without delay;
//! 3. the wall time of one `dvnet impair` call, whole (process, record, plan, maps, delay
//!    line): a loss set (map entries only), a delay set (a delay line started), changed (the
//!    line reconfigured) and cleared (the line stopped), beside `dvnet apply` of the
//!    unchanged file (the floor: the same process, record and plan, nothing to do).
//!
//! Each impairment is checked to be in force (a ping's RTT) before it is measured. Medians of
//! `--runs`; everything is named with the run's prefix and removed at the end, pass or fail.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dvnet::plan::{Plan, PlanOptions};
use serde::Serialize;
use serde_json::{Value, json};

use super::datapath::{iperf3_client, iperf3_server, link_rx, parse_rtt_avg, ping};
use super::harness::{Background, Scratch, check, in_ns, timed};
use super::idle::Waiter;
use super::stats::{Summary, sig3};

const SINK_PORT: u16 = 9;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Other subnets on the router, impaired in the second half of the TCP figure.
    #[arg(long, default_value_t = 16)]
    others: usize,
    #[command(flatten)]
    repeat: super::harness::Repeat,
    /// Where to write the results [default: bench-results/impair.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The figures, by key: samples and their summary.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub others: usize,
    pub seconds: f64,
    /// Gbit/s: `tcp_clean`, `tcp_others_impaired`; kpps: `udp_clean`, `udp_loss`,
    /// `udp_delay`; seconds: `apply_nothing`, `impair_loss`, `impair_delay_start`,
    /// `impair_delay_change`, `impair_clear`.
    pub samples: std::collections::BTreeMap<&'static str, Vec<f64>>,
    pub summary: std::collections::BTreeMap<&'static str, Option<Summary>>,
    /// Packets `udpgen` sent per packet `b` received, per UDP figure (loss and the delay
    /// line's queue show here).
    pub sent_per_received: std::collections::BTreeMap<&'static str, Vec<f64>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.others == 0 {
        bail!("--others: at least one other subnet to impair");
    }
    super::harness::run_repeated(
        "impair",
        &args.repeat,
        args.json.as_deref(),
        |scratch, wait, runs, seconds| measure(scratch, wait, args.others, runs, seconds),
        table,
        |r: &Report| &r.errors,
    )
}

/// The network: router `r` on `sa` (host `a`), `sb` (host `b`) and `x1`…`x<others>`.
fn topology(name: &str, others: usize, impaired: bool) -> Value {
    let mut subnets = serde_json::Map::new();
    subnets.insert(
        "sa".into(),
        json!({"cidr": "10.0.0.0/30", "hosts": {"a": {}}}),
    );
    subnets.insert(
        "sb".into(),
        json!({"cidr": "10.0.0.4/30", "hosts": {"b": {}}}),
    );
    let mut members = vec![json!("sa"), json!("sb")];
    for i in 1..=others {
        let mut s = json!({
            "cidr": format!("10.1.{}.{}/30", i / 64, (i % 64) * 4),
            "hosts": {format!("h{i}"): {}},
        });
        if impaired {
            s["impair"] =
                json!({"loss": "1%", "delay": "10ms", "jitter": "1ms", "rate": "100mbit"});
        }
        subnets.insert(format!("x{i}"), s);
        members.push(json!(format!("x{i}")));
    }
    json!({
        "name": name,
        "automatic_routing": true,
        "subnets": subnets,
        "routers": {"r": {"subnets": members}},
    })
}

pub(super) struct Net<'a> {
    pub(super) scratch: &'a Scratch,
    pub(super) id: String,
    file: PathBuf,
    plain: String,
    impaired: String,
    a_ns: String,
    b_ns: String,
    b_dev: String,
    b_ip: Ipv4Addr,
    h1_ip: Ipv4Addr,
    xtask: PathBuf,
    seconds: f64,
}

impl Net<'_> {
    pub(super) fn dvnet(&self, args: &[&str]) -> anyhow::Result<f64> {
        let (took, out) = timed(self.scratch.dvnet().args(args))?;
        check(&format!("dvnet {}", args.join(" ")), &out)?;
        Ok(took.as_secs_f64())
    }

    fn impair(&self, setting: &[&str]) -> anyhow::Result<f64> {
        let mut args = vec!["impair", self.id.as_str(), "sb"];
        args.extend_from_slice(setting);
        self.dvnet(&args)
    }

    /// `dvnet apply` of `text` (written to the network's file).
    fn apply(&self, text: &str) -> anyhow::Result<f64> {
        std::fs::write(&self.file, text)?;
        let f = self.file.to_str().context("a UTF-8 path")?;
        self.dvnet(&["apply", f])
    }

    /// The mean RTT of 5 pings from `a`, ms.
    fn rtt(&self, dst: Ipv4Addr) -> anyhow::Result<f64> {
        let out = in_ns(&self.a_ns, "ping")
            .args(["-q", "-n", "-c", "5", "-i", "0.05", "-W", "2"])
            .arg(dst.to_string())
            .output()?;
        check("ping", &out)?;
        parse_rtt_avg(&String::from_utf8_lossy(&out.stdout)).context("ping printed no summary")
    }

    /// Fails unless the RTT from `a` to `dst` is at least `ms`.
    fn in_force(&self, dst: Ipv4Addr, ms: f64, what: &str) -> anyhow::Result<()> {
        let rtt = self.rtt(dst)?;
        if rtt < ms {
            bail!("{what}: RTT {rtt:.2} ms, at least {ms} ms expected: not in force");
        }
        Ok(())
    }

    /// One TCP stream `a`→`b`, Gbit/s received.
    pub(super) fn tcp(&self, wait: &mut Waiter) -> anyhow::Result<f64> {
        wait.settle("tcp")?;
        let server = iperf3_server(&self.b_ns)?;
        let v = iperf3_client(
            &self.a_ns,
            &[
                "-c",
                &self.b_ip.to_string(),
                "-t",
                &self.seconds.to_string(),
            ],
        )?;
        drop(server.interrupt(Duration::from_secs(1)));
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|bps| bps / 1e9)
            .context("iperf3: no end.sum_received.bits_per_second")
    }

    /// 64-byte UDP packets `a`→`b`, one flow: kpps received at `b`, and packets sent per
    /// packet received.
    pub(super) fn udp(&self, wait: &mut Waiter) -> anyhow::Result<(f64, f64)> {
        let mut sink = Background::spawn(
            "udpsink",
            in_ns(&self.b_ns, &self.xtask)
                .args(["bench", "udpsink", "--port", &SINK_PORT.to_string()])
                .stdout(Stdio::piped()),
        )?;
        let line = sink.first_line()?;
        if line != "ready" {
            bail!("udpsink said {line:?}");
        }
        wait.settle("udp")?;
        let rx0 = link_rx(&self.b_ns, &self.b_dev)?;
        let out = in_ns(&self.a_ns, &self.xtask)
            .args(["bench", "udpgen", "--dst", &self.b_ip.to_string()])
            .args(["--dport", &SINK_PORT.to_string()])
            .args(["--seconds", &self.seconds.to_string()])
            .output()?;
        check("udpgen", &out)?;
        // what the delay line still holds arrives within its delay
        std::thread::sleep(Duration::from_millis(100));
        let rx1 = link_rx(&self.b_ns, &self.b_dev)?;
        drop(sink);
        let v: Value = serde_json::from_slice(&out.stdout).context("udpgen output")?;
        let seconds = v["seconds"].as_f64().context("udpgen: no seconds")?;
        let sent = v["sent"].as_f64().context("udpgen: no sent")?;
        let received = rx1.saturating_sub(rx0);
        if received == 0 {
            bail!("nothing arrived ({sent} sent)");
        }
        #[expect(clippy::cast_precision_loss, reason = "packet counts, far below 2^52")]
        let received = received as f64;
        Ok((received / seconds / 1e3, sent / received))
    }
}

/// Writes the network (`tag` in its name), brings it up, checks that `a` reaches `b`.
pub(super) fn network<'a>(
    scratch: &'a Scratch,
    tag: &str,
    others: usize,
    seconds: f64,
) -> anyhow::Result<Net<'a>> {
    let name = format!("{}-{tag}", scratch.prefix);
    let plain = serde_json::to_string_pretty(&topology(&name, others, false))? + "\n";
    let impaired = serde_json::to_string_pretty(&topology(&name, others, true))? + "\n";
    let (file, planned) = scratch.network_file(
        &format!("{tag}.json"),
        &topology(&name, others, false),
        PlanOptions::default(),
    )?;
    scratch.networks.borrow_mut().push(planned.id.clone());
    let (a_ns, _, _) = host_of(&planned, "a")?;
    let (b_ns, b_dev, b_ip) = host_of(&planned, "b")?;
    let (_, _, h1_ip) = host_of(&planned, "h1")?;
    let net = Net {
        scratch,
        id: planned.id.clone(),
        file,
        plain,
        impaired,
        a_ns,
        b_ns,
        b_dev,
        b_ip,
        h1_ip,
        xtask: std::env::current_exe().context("locating xtask")?,
        seconds,
    };
    let f = net.file.to_str().context("a UTF-8 path")?.to_owned();
    net.dvnet(&["up", &f])?;
    ping(&net.a_ns, net.b_ip).context("a does not reach b")?;
    Ok(net)
}

fn measure(
    scratch: &Scratch,
    wait: &mut Waiter,
    others: usize,
    runs: usize,
    seconds: f64,
) -> anyhow::Result<Report> {
    let net = network(scratch, "impair", others, seconds)?;
    let mut report = Report {
        others,
        seconds,
        ..Report::default()
    };
    for run in 1..=runs {
        eprintln!("xtask: run {run}/{runs}");
        if let Err(e) = one_run(&net, wait, &mut report) {
            eprintln!("xtask: run {run} FAILED: {e:#}");
            report.errors.push(format!("run {run}: {e:#}"));
            // back to the file's network for the next run
            let _ = net.apply(&net.plain);
        }
    }
    net.dvnet(&["down", &net.id])?;
    report.summary = report
        .samples
        .iter()
        .map(|(k, v)| (*k, Summary::of(v)))
        .collect();
    Ok(report)
}

/// A host's namespace, interface and address.
fn host_of(plan: &Plan, name: &str) -> anyhow::Result<(String, String, Ipv4Addr)> {
    let node = plan
        .nodes
        .iter()
        .find(|n| n.name == name)
        .with_context(|| format!("no node {name} in the plan"))?;
    let link = plan
        .links_of(node)
        .next()
        .with_context(|| format!("{name} has no link"))?;
    Ok((
        node.netns.clone(),
        link.ifname.clone(),
        link.address.context("an IPv4 address")?,
    ))
}

fn one_run(net: &Net<'_>, wait: &mut Waiter, report: &mut Report) -> anyhow::Result<()> {
    let mut sample = |key: &'static str, x: f64, unit: &str| {
        eprintln!("xtask:   {key:<22} {} {unit}", sig3(x));
        report.samples.entry(key).or_default().push(x);
    };
    // 1. TCP on a clean link, the others clean, then impaired
    let clean = net.tcp(wait)?;
    sample("tcp_clean", clean, "Gbit/s");
    net.apply(&net.impaired)?;
    // 10 ms each way, ± 1 ms of jitter each way
    net.in_force(net.h1_ip, 17.5, "delay=10ms on x1")?;
    let rtt_b = net.rtt(net.b_ip)?;
    if rtt_b > 5.0 {
        bail!("b's link is not impaired, yet its RTT is {rtt_b:.2} ms");
    }
    let impaired = net.tcp(wait)?;
    sample("tcp_others_impaired", impaired, "Gbit/s");
    net.apply(&net.plain)?;

    // 2. 64-byte UDP through sb: clean, 0.1 % loss, 1 ms delay
    let mut ratio = Vec::new();
    let (kpps, r) = net.udp(wait)?;
    sample("udp_clean", kpps, "kpps");
    ratio.push(("udp_clean", r));
    net.impair(&["loss=0.1%"])?;
    let (kpps, r) = net.udp(wait)?;
    sample("udp_loss", kpps, "kpps");
    ratio.push(("udp_loss", r));
    net.impair(&["clear"])?;
    net.impair(&["delay=1ms"])?;
    net.in_force(net.b_ip, 2.0, "delay=1ms on sb")?;
    let (kpps, r) = net.udp(wait)?;
    sample("udp_delay", kpps, "kpps");
    ratio.push(("udp_delay", r));
    net.impair(&["clear"])?;
    for (k, r) in ratio {
        report.sent_per_received.entry(k).or_default().push(r);
    }

    // 3. one call's wall time
    wait.settle("dvnet apply (nothing to do)")?;
    let t = net.apply(&net.plain)?;
    sample("apply_nothing", t, "s");
    wait.settle("dvnet impair loss")?;
    let t = net.impair(&["loss=1%"])?;
    sample("impair_loss", t, "s");
    wait.settle("dvnet impair delay (start)")?;
    let t = net.impair(&["delay=5ms"])?;
    sample("impair_delay_start", t, "s");
    net.in_force(net.b_ip, 10.0, "delay=5ms on sb")?;
    wait.settle("dvnet impair delay (change)")?;
    let t = net.impair(&["delay=6ms"])?;
    sample("impair_delay_change", t, "s");
    net.in_force(net.b_ip, 12.0, "delay=6ms on sb")?;
    wait.settle("dvnet impair clear")?;
    let t = net.impair(&["clear"])?;
    sample("impair_clear", t, "s");
    let rtt = net.rtt(net.b_ip)?;
    if rtt > 5.0 {
        bail!("cleared, yet b's RTT is {rtt:.2} ms");
    }
    Ok(())
}

/// The results as a Markdown table.
#[must_use]
pub fn table(r: &Report) -> String {
    let get = |k: &str| r.summary.get(k).copied().flatten();
    let cell = |k: &str, f: &dyn Fn(f64) -> String| {
        get(k).map_or_else(|| "–".to_owned(), |s| s.cell_with(f))
    };
    let ratio = |a: &str, b: &str| match (get(a), get(b)) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.0} %", 100.0 * a.median / b.median),
        _ => "–".to_owned(),
    };
    let sent = |k: &str| {
        r.sent_per_received
            .get(k)
            .and_then(|v| Summary::of(v))
            .map_or_else(|| "–".to_owned(), |s| format!("{:.3}", s.median))
    };
    let gbit = |x: f64| format!("{x:.2}");
    let kpps = |x: f64| format!("{x:.0}");
    let ms = |x: f64| format!("{:.0}", x * 1e3);
    let runs = r.samples.values().map(Vec::len).max().unwrap_or(0);
    let mut t = format!(
        "| {} runs of {} s, median (min–max) | figure | of the baseline |\n|---|---|---|\n",
        runs, r.seconds
    );
    let _ = writeln!(
        t,
        "| TCP a→b, Gbit/s: no link impaired (the baseline) | {} | 100 % |",
        cell("tcp_clean", &gbit)
    );
    let _ = writeln!(
        t,
        "| TCP a→b, Gbit/s: {} other links impaired (loss, delay, jitter, rate) | {} | {} |",
        r.others,
        cell("tcp_others_impaired", &gbit),
        ratio("tcp_others_impaired", "tcp_clean")
    );
    let _ = writeln!(
        t,
        "| 64-byte UDP a→b, kpps received: no impairment (the baseline; sent/received {}) | {} | 100 % |",
        sent("udp_clean"),
        cell("udp_clean", &kpps)
    );
    let _ = writeln!(
        t,
        "| 64-byte UDP a→b, kpps received: loss=0.1% (sent/received {}) | {} | {} |",
        sent("udp_loss"),
        cell("udp_loss", &kpps),
        ratio("udp_loss", "udp_clean")
    );
    let _ = writeln!(
        t,
        "| 64-byte UDP a→b, kpps received: delay=1ms, through the delay line (sent/received {}) | {} | {} |",
        sent("udp_delay"),
        cell("udp_delay", &kpps),
        ratio("udp_delay", "udp_clean")
    );
    let _ = writeln!(
        t,
        "| `dvnet apply` of the unchanged file, ms (the baseline) | {} | 100 % |",
        cell("apply_nothing", &ms)
    );
    for (k, what) in [
        ("impair_loss", "`dvnet impair NET sb loss=1%` (map entries)"),
        (
            "impair_delay_start",
            "`dvnet impair NET sb delay=5ms` (a delay line started)",
        ),
        (
            "impair_delay_change",
            "`dvnet impair NET sb delay=6ms` (the line reconfigured)",
        ),
        (
            "impair_clear",
            "`dvnet impair NET sb clear` (the line stopped)",
        ),
    ] {
        let _ = writeln!(
            t,
            "| {what}, ms | {} | {} |",
            cell(k, &ms),
            ratio(k, "apply_nothing")
        );
    }
    t
}
