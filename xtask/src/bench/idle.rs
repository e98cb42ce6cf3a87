//! Waiting for an idle machine. Namespace teardown is asynchronous: the kernel keeps
//! reclaiming for seconds after `dvnet down` (or `ip netns del`) returns, and a measurement
//! started meanwhile can take twice as long. So every measurement starts on an idle machine,
//! and the time until idle after a teardown is reported too ("reclaimed").
//!
//! Idle: the whole machine's busy share (user + nice + system + irq + softirq, from the
//! `cpu` line of /proc/stat) over one sampling interval is below the threshold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

/// How idleness is judged.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct IdleSettings {
    /// Busy share below which the machine counts as idle, in percent.
    pub threshold_pct: f64,
    /// Sampling interval.
    pub interval_s: f64,
    /// Give up (and say so) after this long.
    pub timeout_s: f64,
}

impl IdleSettings {
    /// What every benchmark uses: below 3 % busy over half a second; give up after
    /// `timeout_s` seconds if given, else 2 s for a `quick` smoke run and 120 s otherwise.
    pub fn standard(timeout_s: Option<f64>, quick: bool) -> IdleSettings {
        IdleSettings {
            threshold_pct: 3.0,
            interval_s: 0.5,
            timeout_s: timeout_s.unwrap_or(if quick { 2.0 } else { 120.0 }),
        }
    }
}

/// How a wait ended.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    /// The start of the first idle interval; `None` when the wait gave up.
    pub since: Option<Instant>,
    /// Busy share of the last interval sampled, in percent.
    pub busy_pct: f64,
}

#[derive(Clone, Copy)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

fn cpu_times() -> anyhow::Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    if v.len() < 7 {
        bail!("unexpected /proc/stat cpu line: {line}");
    }
    Ok(CpuTimes {
        busy: v[0] + v[1] + v[2] + v[5] + v[6],
        total: v.iter().sum(),
    })
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM only raise a flag: the benchmark stops at the next check
/// and cleans up. (Children in the foreground group get Ctrl-C themselves and stop.)
pub fn catch_interrupts() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// Fails once SIGINT or SIGTERM has arrived.
pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Samples until one interval is idle or the timeout passes.
pub fn wait(settings: &IdleSettings) -> anyhow::Result<Idle> {
    let interval = Duration::from_secs_f64(settings.interval_s);
    let deadline = Instant::now() + Duration::from_secs_f64(settings.timeout_s);
    let mut start = Instant::now();
    let mut before = cpu_times()?;
    loop {
        std::thread::sleep(interval);
        check_interrupted()?;
        let now = Instant::now();
        let after = cpu_times()?;
        let total = after.total.saturating_sub(before.total);
        #[expect(
            clippy::cast_precision_loss,
            reason = "jiffies over half a second: tiny numbers"
        )]
        let busy_pct = if total == 0 {
            0.0
        } else {
            after.busy.saturating_sub(before.busy) as f64 * 100.0 / total as f64
        };
        if busy_pct < settings.threshold_pct {
            return Ok(Idle {
                since: Some(start),
                busy_pct,
            });
        }
        if now >= deadline {
            return Ok(Idle {
                since: None,
                busy_pct,
            });
        }
        start = now;
        before = after;
    }
}

/// Waits for an idle machine and keeps notes of the waits that gave up.
#[derive(Debug)]
pub struct Waiter {
    pub settings: IdleSettings,
    /// Waits that gave up, to print beside the results.
    pub notes: Vec<String>,
}

impl Waiter {
    pub fn new(settings: IdleSettings) -> Waiter {
        Waiter {
            settings,
            notes: Vec::new(),
        }
    }

    /// Waits for an idle machine before `what`.
    pub fn settle(&mut self, what: &str) -> anyhow::Result<()> {
        let idle = wait(&self.settings)?;
        if idle.since.is_none() {
            self.notes.push(format!(
                "{what}: machine still {:.0}% busy after {} s; measured anyway",
                idle.busy_pct, self.settings.timeout_s
            ));
        }
        Ok(())
    }

    /// Seconds from `start` until the machine is idle, `None` when the wait gave up.
    pub fn reclaimed(&mut self, what: &str, start: Instant) -> anyhow::Result<Option<f64>> {
        let idle = wait(&self.settings)?;
        if let Some(since) = idle.since {
            Ok(Some(since.saturating_duration_since(start).as_secs_f64()))
        } else {
            self.notes.push(format!(
                "{what}: not idle {} s after the teardown ({:.0}% busy): no reclaimed time",
                self.settings.timeout_s, idle.busy_pct
            ));
            Ok(None)
        }
    }
}
