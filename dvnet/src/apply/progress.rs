//! Progress, reported to an observer: the library draws nothing and prints nothing; the
//! command line draws bars on a terminal, a daemon could log, a benchmark reads the report.

use std::time::Duration;

use serde::Serialize;

/// Told what `up`, `apply` and `down` are doing. Every method has a default that ignores it.
pub trait Observer: Sync {
    /// A phase of `total` steps begins (0: not counted).
    fn start(&self, _phase: &'static str, _total: usize) {}
    /// `n` more steps of the current phase are done.
    fn advance(&self, _n: usize) {}
    /// The phase ended after `elapsed`.
    fn done(&self, _phase: &'static str, _elapsed: Duration) {}
    /// The operation waits for something (a lock another dvnet holds).
    fn waiting(&self, _what: &str) {}
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Observer for Silent {}

/// A phase and how long it took.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub seconds: f64,
}

/// Times phases, tells the observer, and logs each at info level (`phase done`).
pub(super) struct Phases<'a> {
    observer: &'a dyn Observer,
    started: std::time::Instant,
    pub done: Vec<Phase>,
}

impl<'a> Phases<'a> {
    pub fn new(observer: &'a dyn Observer) -> Phases<'a> {
        Phases {
            observer,
            started: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    pub fn observer(&self) -> &'a dyn Observer {
        self.observer
    }

    /// Ends the phase that ran since the last one ended.
    pub fn end(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        let elapsed = now - self.started;
        tracing::info!(phase = name, elapsed_ms = elapsed.as_millis(), "phase done");
        self.observer.done(name, elapsed);
        self.done.push(Phase {
            name,
            seconds: elapsed.as_secs_f64(),
        });
        self.started = now;
    }
}
