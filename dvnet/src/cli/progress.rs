//! Progress bars for people: the library reports phases to an observer; this one draws
//! them on a terminal.

use crate::apply;

/// Progress bars on a terminal (stderr), one per phase that counts its steps.
pub struct Bars {
    enabled: bool,
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl Bars {
    pub fn on_terminal() -> Bars {
        use std::io::IsTerminal as _;
        Bars {
            enabled: std::io::stderr().is_terminal(),
            bar: std::sync::Mutex::new(None),
        }
    }

    pub fn clear(&self) {
        if let Some(bar) = self.bar.lock().expect("bars").take() {
            bar.finish_and_clear();
        }
    }
}

impl apply::Observer for Bars {
    fn start(&self, phase: &'static str, total: usize) {
        if !self.enabled || total == 0 {
            return;
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(phase);
        if let Some(old) = self.bar.lock().expect("bars").replace(bar) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, n: usize) {
        if let Some(bar) = self.bar.lock().expect("bars").as_ref() {
            bar.inc(n as u64);
        }
    }

    fn done(&self, _phase: &'static str, _elapsed: std::time::Duration) {
        self.clear();
    }

    fn waiting(&self, what: &str) {
        if self.enabled {
            eprintln!("{what}");
        }
    }
}
