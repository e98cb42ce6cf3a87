//! What every benchmark that builds networks shares: the scratch space it owns (a prefix,
//! a fake host namespace, a directory; swept at the end, pass or fail), running commands
//! and checking them, and the dvnet binary it measures.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// `cargo build --release -p dvnet`, then the binary next to this one (or `$DVNET_BIN`).
pub(super) fn build_dvnet() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("DVNET_BIN") {
        return Ok(PathBuf::from(p));
    }
    crate::run(
        "cargo build --release -p dvnet",
        crate::cargo().args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "dvnet",
            "--bin",
            "dvnet",
        ]),
    )?;
    let exe = std::env::current_exe().context("locating xtask")?;
    let bin = exe
        .parent()
        .context("xtask has no directory")?
        .join("dvnet");
    if !bin.exists() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

/// What every benchmark that builds networks starts with: the dvnet binary built, Ctrl-C
/// caught, its scratch space (fake host included), an idle waiter and the machine, named.
pub(super) fn start(
    idle: super::idle::IdleSettings,
) -> anyhow::Result<(Scratch, super::idle::Waiter, super::Machine)> {
    let dvnet = build_dvnet()?;
    super::idle::catch_interrupts();
    let scratch = Scratch::new(dvnet)?;
    let machine = super::Machine::describe();
    eprintln!("xtask: machine: {}", machine.line());
    eprintln!(
        "xtask: everything this run creates is named {}-*; fake host {}",
        scratch.prefix, scratch.host
    );
    Ok((scratch, super::idle::Waiter::new(idle), machine))
}

/// Repetitions of a benchmark that measures for a while, and its quick form.
#[derive(Debug, clap::Args)]
pub(super) struct Repeat {
    /// Repetitions (median, min, max).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds of each throughput and packet-rate measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// For CI: one run of 1-second measurements.
    #[arg(long, conflicts_with_all = ["runs", "seconds"])]
    pub(super) quick: bool,
    /// Seconds to wait for an idle machine before measuring anyway (and saying so).
    #[arg(long)]
    pub(super) idle_timeout: Option<f64>,
}

impl Repeat {
    /// (runs, seconds), or (1, 1.0) for `--quick`.
    pub(super) fn runs_and_seconds(&self) -> (usize, f64) {
        if self.quick {
            (1, 1.0)
        } else {
            (self.runs, self.seconds)
        }
    }
}

/// What a benchmark that built networks says at its end: its table and the idle waiter's
/// notes printed, everything measured written as JSON (to `json`, or
/// `bench-results/<bench>.json`). [`verdict`] comes after.
pub(super) fn conclude(
    bench: &str,
    table: &str,
    wait: &super::idle::Waiter,
    machine: &super::Machine,
    report: &impl serde::Serialize,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    println!("{table}");
    for n in &wait.notes {
        println!("note: {n}");
    }
    let path = super::results_path(json, &format!("{bench}.json"));
    super::write_json(
        &path,
        &serde_json::json!({
            "bench": bench, "machine": machine, "report": report, "notes": wait.notes,
        }),
    )?;
    eprintln!("xtask: results in {}", path.display());
    Ok(())
}

/// A benchmark of the [`Repeat`] kind, whole: root checked, machine prepared, `measure`d
/// (given the runs and seconds), everything it made cleaned up, results concluded as
/// `bench` with `table`, and the verdict on what was left and what failed (`errors`).
pub(super) fn run_repeated<R: serde::Serialize>(
    bench: &str,
    repeat: &Repeat,
    json: Option<&Path>,
    measure: impl FnOnce(&Scratch, &mut super::idle::Waiter, usize, f64) -> anyhow::Result<R>,
    table: impl Fn(&R) -> String,
    errors: impl Fn(&R) -> &[String],
) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("bench {bench} builds networks: run it as root");
    }
    let (runs, seconds) = repeat.runs_and_seconds();
    let (scratch, mut wait, machine) = start(super::idle::IdleSettings::standard(
        repeat.idle_timeout,
        repeat.quick,
    ))?;
    let outcome = measure(&scratch, &mut wait, runs, seconds);
    let leftovers = scratch.cleanup();
    let report = outcome?;
    conclude(bench, &table(&report), &wait, &machine, &report, json)?;
    verdict(&leftovers, errors(&report))
}

/// The end of a benchmark: an error when the sweep left something behind or a measurement
/// of dvnet failed.
pub(super) fn verdict(leftovers: &[String], failed: &[String]) -> anyhow::Result<()> {
    if !leftovers.is_empty() {
        bail!("the cleanup left things behind: {}", leftovers.join("; "));
    }
    if !failed.is_empty() {
        bail!(
            "{} measurement(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// Runs `f` when dropped, unless disarmed.
pub(super) struct OnDrop<F: FnOnce()>(pub(super) Option<F>);

impl<F: FnOnce()> OnDrop<F> {
    pub(super) fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// What the benchmark owns: the prefix, the fake host, the scratch directory.
pub(super) struct Scratch {
    pub(super) prefix: String,
    pub(super) host: String,
    pub(super) dir: PathBuf,
    pub(super) dvnet: PathBuf,
    /// dvnet networks brought up (or tried), for `dvnet down` in the sweep.
    pub(super) networks: RefCell<Vec<String>>,
    pub(super) cleaned: RefCell<bool>,
}

impl Scratch {
    pub(super) fn new(dvnet: PathBuf) -> anyhow::Result<Scratch> {
        let prefix = format!("dvb{}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let host = format!("{prefix}-host");
        let scratch = Scratch {
            dir,
            host,
            dvnet,
            networks: RefCell::new(Vec::new()),
            cleaned: RefCell::new(false),
            prefix,
        };
        // from here on, Drop sweeps whatever was created
        std::fs::create_dir_all(&scratch.dir)
            .with_context(|| format!("creating {}", scratch.dir.display()))?;
        check(
            "creating the fake host",
            &Command::new("ip")
                .args(["netns", "add", &scratch.host])
                .output()?,
        )?;
        check(
            "lo up in the fake host",
            &Command::new("ip")
                .args(["-n", &scratch.host, "link", "set", "lo", "up"])
                .output()?,
        )?;
        Ok(scratch)
    }

    /// `program` inside the fake host.
    pub(super) fn in_host(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.host))
            .arg("--")
            .arg(program);
        c
    }

    pub(super) fn dvnet(&self) -> Command {
        self.in_host(&self.dvnet)
    }

    /// Writes `topology` to `<dir>/<file>` and plans it with `options`: the file to hand to
    /// `dvnet up` and what dvnet will build from it (its id checked to carry the prefix).
    pub(super) fn network_file(
        &self,
        file: &str,
        topology: &serde_json::Value,
        options: dvnet::plan::PlanOptions,
    ) -> anyhow::Result<(PathBuf, dvnet::plan::Plan)> {
        let text = serde_json::to_string_pretty(topology)? + "\n";
        let path = self.dir.join(file);
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        let plan = dvnet::plan::Plan::build(
            &dvnet::topology::Topology::from_json(&text, &path.display().to_string())?,
            options,
        )?;
        if !self.owns(&plan.id) {
            bail!(
                "network id {} does not carry the prefix {}",
                plan.id,
                self.prefix
            );
        }
        Ok((path, plan))
    }

    /// Whether a namespace or file name is this benchmark's.
    pub(super) fn owns(&self, name: &str) -> bool {
        let name = name.strip_prefix("dv-").unwrap_or(name);
        name.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with('-'))
    }

    /// Removes everything carrying the prefix; returns what could not be removed.
    pub(super) fn cleanup(&self) -> Vec<String> {
        if self.cleaned.replace(true) {
            return Vec::new();
        }
        // Mininet shells the script left (by pid, checked against their command line)
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "pids") {
                    kill_mininet_shells(&e.path());
                }
            }
        }
        // in the fake host, where they were brought up (down undoes host changes only there)
        for id in self.networks.borrow().iter() {
            let _ = self.dvnet().args(["down", id]).output();
        }
        // anything else: floor namespaces, pieces of a crashed `up`, the fake host last
        let mut names: Vec<String> = list_dir("/run/netns")
            .into_iter()
            .filter(|n| self.owns(n) && *n != self.host)
            .collect();
        names.push(self.host.clone());
        for n in &names {
            if Path::new("/run/netns").join(n).exists() {
                let _ = Command::new("ip").args(["netns", "del", n]).output();
            }
        }
        for dir in ["/etc/netns", "/run/dvnet", "/sys/fs/bpf/dvnet"] {
            for n in list_dir(dir).into_iter().filter(|n| self.owns(n)) {
                let _ = std::fs::remove_dir_all(Path::new(dir).join(n));
            }
        }
        for n in list_dir("/run/dvnet/.locks")
            .into_iter()
            .filter(|n| self.owns(n))
        {
            let _ = std::fs::remove_file(Path::new("/run/dvnet/.locks").join(n));
        }
        let _ = std::fs::remove_dir_all(&self.dir);

        let mut left = Vec::new();
        for dir in [
            "/run/netns",
            "/etc/netns",
            "/run/dvnet",
            "/sys/fs/bpf/dvnet",
        ] {
            for n in list_dir(dir).into_iter().filter(|n| self.owns(n)) {
                left.push(format!("{dir}/{n}"));
            }
        }
        if self.dir.exists() {
            left.push(self.dir.display().to_string());
        }
        left
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for l in self.cleanup() {
            eprintln!("xtask: left behind: {l}");
        }
    }
}

pub(super) fn list_dir(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills the Mininet node shells listed in `pidfile` that are still alive. A pid counts only
/// if its command line still names a Mininet node (`bash ... mininet:h1`), so a recycled pid
/// is never touched. Returns how many were killed.
pub(super) fn kill_mininet_shells(pidfile: &Path) -> usize {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Ok(text) = std::fs::read_to_string(pidfile) else {
        return 0;
    };
    let mut killed = 0;
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("mininet:")
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

pub(super) fn check(what: &str, out: &Output) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .take(6)
        .collect();
    bail!("{what} failed ({}): {}", out.status, tail.join(" | "))
}

pub(super) fn timed(cmd: &mut Command) -> anyhow::Result<(Duration, Output)> {
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("running {}", cmd.get_program().display()))?;
    Ok((start.elapsed(), out))
}

/// Like [`timed`], and the command's peak resident memory in MiB (from `wait4`: the process
/// itself, which `nsenter` becomes).
pub(super) fn timed_rss(cmd: &mut Command) -> anyhow::Result<(Duration, Output, Option<f64>)> {
    use std::io::Read as _;
    use std::os::unix::process::ExitStatusExt as _;
    let start = Instant::now();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", cmd.get_program().display()))?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (std never waits for it: `child` is
    // only dropped), and both pointers are to live locals
    let reaped = unsafe { nix::libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let took = start.elapsed();
    if reaped != pid {
        bail!(
            "waiting for {}: {}",
            cmd.get_program().display(),
            std::io::Error::last_os_error()
        );
    }
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    drop(child);
    #[expect(clippy::cast_precision_loss, reason = "KiB of one process")]
    let rss = (usage.ru_maxrss > 0).then(|| usage.ru_maxrss as f64 / 1024.0);
    Ok((took, output, rss))
}

/// What `dvnet up --json` reports of itself: its phases (name → seconds; a phase that runs
/// twice adds up) and its own time, seconds.
pub(super) fn up_report(
    stdout: &[u8],
) -> (serde_json::Map<String, serde_json::Value>, Option<f64>) {
    let mut phases = serde_json::Map::new();
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(stdout) else {
        return (phases, None);
    };
    for p in report["phases"].as_array().into_iter().flatten() {
        if let (Some(name), Some(s)) = (p["name"].as_str(), p["seconds"].as_f64()) {
            let sum = phases
                .get(name)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
                + s;
            phases.insert(name.to_owned(), sum.into());
        }
    }
    (phases, report["seconds"].as_f64())
}

/// `program` inside the namespace `/run/netns/<ns>` (nsenter execs it: the child's pid is the
/// program's own).
pub(super) fn in_ns(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

/// A process the benchmark started and owns (an iperf3 server, a UDP sink, hping3): killed by
/// its pid, and reaped, when dropped.
pub(super) struct Background {
    /// `None` once reaped.
    child: Option<std::process::Child>,
    what: String,
}

impl Background {
    pub(super) fn spawn(what: &str, cmd: &mut Command) -> anyhow::Result<Background> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({})", cmd.get_program().display()))?;
        Ok(Background {
            child: Some(child),
            what: what.to_owned(),
        })
    }

    fn child(&mut self) -> &mut std::process::Child {
        self.child
            .as_mut()
            .expect("reaped only by interrupt(self) and drop")
    }

    /// The first line the process prints (it must have `Stdio::piped()` stdout), or an error
    /// when it exits first.
    pub(super) fn first_line(&mut self) -> anyhow::Result<String> {
        self.first_line_of(false)
    }

    /// The same on standard error (`Stdio::piped()`).
    pub(super) fn first_line_of_stderr(&mut self) -> anyhow::Result<String> {
        self.first_line_of(true)
    }

    fn first_line_of(&mut self, stderr: bool) -> anyhow::Result<String> {
        use std::io::BufRead as _;
        let what = self.what.clone();
        let child = self.child();
        let stream: &mut dyn std::io::Read = if stderr {
            child
                .stderr
                .as_mut()
                .with_context(|| format!("{what}: stderr is not piped"))?
        } else {
            child
                .stdout
                .as_mut()
                .with_context(|| format!("{what}: stdout is not piped"))?
        };
        let mut line = String::new();
        // one byte at a time: nothing the process prints later is swallowed by a buffer
        let mut reader = std::io::BufReader::with_capacity(1, stream);
        reader.read_line(&mut line)?;
        if line.is_empty() {
            let status = child.wait()?;
            bail!("{what} exited before it was ready ({status})");
        }
        Ok(line.trim().to_owned())
    }

    /// Sends SIGINT (tools print their summary and exit), waits up to `grace`, then kills;
    /// returns what it printed where stdout/stderr were piped.
    pub(super) fn interrupt(mut self, grace: Duration) -> anyhow::Result<Output> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let mut child = self.child.take().expect("not reaped yet");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && child.try_wait()?.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        Ok(child.wait_with_output()?)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // our own child, not yet reaped: its pid cannot have been reused
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
