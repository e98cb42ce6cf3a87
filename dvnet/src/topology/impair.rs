//! Link impairments, as netem and tc users write them: `delay`, `jitter`, `loss`, `corrupt`,
//! `duplicate`, `rate`, `seed`.
//!
//! One [`Impair`] is what a file or `dvnet impair` sets on a subnet (every packet entering
//! the segment) or on one member's link (both directions of that link). Values are kept in
//! integers (microseconds, parts per million, bits per second) so that plans compare and
//! serialize exactly.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The keys, in the order they print.
pub const KEYS: [&str; 7] = [
    "delay",
    "jitter",
    "loss",
    "corrupt",
    "duplicate",
    "rate",
    "seed",
];

/// The longest delay (or jitter) dvnet holds a packet: 60 s.
pub const MAX_DELAY_US: u32 = 60_000_000;
/// The slowest rate: 8 kbit/s (one 1,500-byte frame in 1.5 s).
pub const MIN_RATE_BPS: u64 = 8_000;
/// Parts per million of 100 %.
pub const PPM: u32 = 1_000_000;

/// Impairments of a segment or a link. `None`: not set (nothing done).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Impair {
    /// Added latency, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_us: Option<u32>,
    /// Spread of the latency (uniform, ± this), microseconds; needs `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_us: Option<u32>,
    /// Packets dropped, parts per million (1 % = 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_ppm: Option<u32>,
    /// Packets with one bit flipped past their IP header, parts per million.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_ppm: Option<u32>,
    /// Packets sent twice, parts per million.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_ppm: Option<u32>,
    /// Bandwidth, bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<u64>,
    /// Makes the random choices (loss, corruption, duplication, jitter) repeat run after run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Impair {
    /// Whether nothing is set.
    #[must_use]
    pub fn is_none(&self) -> bool {
        *self == Impair::default()
    }

    /// Whether packets must wait in a queue (delay, jitter or rate), not only be decided on.
    #[must_use]
    pub fn queues(&self) -> bool {
        self.delay_us.is_some_and(|d| d > 0) || self.rate_bps.is_some()
    }

    /// Sets `key` from the text `value` (`"20ms"`, `"1%"`, `"10mbit"`, `"7"`); `value`
    /// `"none"` unsets it.
    ///
    /// # Errors
    /// An unknown key, or a value that is not one tc would take for it (the message says
    /// what is expected).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        let none = value.eq_ignore_ascii_case("none");
        match key {
            "delay" => self.delay_us = if none { None } else { Some(parse_time(value)?) },
            "jitter" => self.jitter_us = if none { None } else { Some(parse_time(value)?) },
            "loss" => {
                self.loss_ppm = if none {
                    None
                } else {
                    Some(parse_percent(value)?)
                }
            }
            "corrupt" => {
                self.corrupt_ppm = if none {
                    None
                } else {
                    Some(parse_percent(value)?)
                }
            }
            "duplicate" => {
                self.duplicate_ppm = if none {
                    None
                } else {
                    Some(parse_percent(value)?)
                };
            }
            "rate" => self.rate_bps = if none { None } else { Some(parse_rate(value)?) },
            "seed" => {
                self.seed = if none {
                    None
                } else {
                    Some(
                        value
                            .parse()
                            .map_err(|_| format!("{value:?}: expected a whole number such as 7"))?,
                    )
                };
            }
            other => {
                return Err(format!(
                    "unknown impairment {other:?}; expected one of {}",
                    KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Checks the values together (each alone is checked by [`Impair::set`]).
    ///
    /// # Errors
    /// `jitter` without `delay`, or larger than it.
    pub fn check(&self) -> Result<(), String> {
        match (self.delay_us, self.jitter_us) {
            (None, Some(_)) => Err("jitter needs a delay (as in netem): add \"delay\"".into()),
            (Some(d), Some(j)) if j > d => Err(format!(
                "jitter {} is larger than the delay {}: packets cannot leave before they arrive",
                Time(j),
                Time(d)
            )),
            _ => Ok(()),
        }
    }

    /// `self` with the values `over` sets replaced by them.
    #[must_use]
    pub fn overlaid(&self, over: &Impair) -> Impair {
        Impair {
            delay_us: over.delay_us.or(self.delay_us),
            jitter_us: over.jitter_us.or(self.jitter_us),
            loss_ppm: over.loss_ppm.or(self.loss_ppm),
            corrupt_ppm: over.corrupt_ppm.or(self.corrupt_ppm),
            duplicate_ppm: over.duplicate_ppm.or(self.duplicate_ppm),
            rate_bps: over.rate_bps.or(self.rate_bps),
            seed: over.seed.or(self.seed),
        }
    }

    /// What a packet meets crossing both `self` and `then`: delays and jitters add, chances
    /// combine (`1 − (1 − a)(1 − b)`), the slower rate holds, the first seed counts.
    #[must_use]
    pub fn then(&self, then: &Impair) -> Impair {
        fn add(a: Option<u32>, b: Option<u32>) -> Option<u32> {
            match (a, b) {
                (None, None) => None,
                (a, b) => Some(
                    a.unwrap_or(0)
                        .saturating_add(b.unwrap_or(0))
                        .min(MAX_DELAY_US),
                ),
            }
        }
        fn chance(a: Option<u32>, b: Option<u32>) -> Option<u32> {
            match (a, b) {
                (None, None) => None,
                (a, b) => {
                    let (a, b) = (u64::from(a.unwrap_or(0)), u64::from(b.unwrap_or(0)));
                    let p = u64::from(PPM);
                    let pass = (p - a) * (p - b) / p;
                    Some(u32::try_from(p - pass).unwrap_or(PPM))
                }
            }
        }
        Impair {
            delay_us: add(self.delay_us, then.delay_us),
            jitter_us: add(self.jitter_us, then.jitter_us),
            loss_ppm: chance(self.loss_ppm, then.loss_ppm),
            corrupt_ppm: chance(self.corrupt_ppm, then.corrupt_ppm),
            duplicate_ppm: chance(self.duplicate_ppm, then.duplicate_ppm),
            rate_bps: match (self.rate_bps, then.rate_bps) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            seed: self.seed.or(then.seed),
        }
    }

    /// `key=value` pairs, as `dvnet impair` takes them (`delay=20ms loss=1%`).
    #[must_use]
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(v) = self.delay_us {
            out.push(("delay", Time(v).to_string()));
        }
        if let Some(v) = self.jitter_us {
            out.push(("jitter", Time(v).to_string()));
        }
        for (key, v) in [
            ("loss", self.loss_ppm),
            ("corrupt", self.corrupt_ppm),
            ("duplicate", self.duplicate_ppm),
        ] {
            if let Some(v) = v {
                out.push((key, Percent(v).to_string()));
            }
        }
        if let Some(v) = self.rate_bps {
            out.push(("rate", Rate(v).to_string()));
        }
        if let Some(v) = self.seed {
            out.push(("seed", v.to_string()));
        }
        out
    }
}

impl fmt::Display for Impair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs = self.pairs();
        if pairs.is_empty() {
            return f.write_str("none");
        }
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&text.join(" "))
    }
}

/// Splits `"20.5ms"` into `(20.5, "ms")`.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let n: f64 = number.parse().ok()?;
    n.is_finite().then_some((n, unit.trim()))
}

/// A time as tc writes it: `20ms`, `1.5s`, `500us` (also `usec`, `msec`, `sec`); a bare
/// number is microseconds, as in tc. At most 60 s.
///
/// # Errors
/// Anything else.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "numbers are parsed from digits and a point (never negative) and range-checked first"
)]
pub fn parse_time(text: &str) -> Result<u32, String> {
    let expected = || format!("{text:?}: expected a time such as 20ms, 500us or 1.5s");
    let (n, unit) = number_and_unit(text).ok_or_else(expected)?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "us" | "usec" | "usecs" => 1.0,
        "ms" | "msec" | "msecs" => 1e3,
        "s" | "sec" | "secs" => 1e6,
        _ => return Err(expected()),
    };
    let us = (n * scale).round();
    if us > f64::from(MAX_DELAY_US) {
        return Err(format!("{text:?}: at most 60s"));
    }
    // in range: checked above
    Ok(us as u32)
}

/// A chance as tc writes it: `1%`, `0.05%`. Parts per million.
///
/// # Errors
/// No `%`, or more than 100 %.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "numbers are parsed from digits and a point (never negative) and range-checked first"
)]
pub fn parse_percent(text: &str) -> Result<u32, String> {
    let expected = || format!("{text:?}: expected a percentage such as 1% or 0.1%");
    let number = text.strip_suffix('%').ok_or_else(expected)?;
    let (n, unit) = number_and_unit(number.trim()).ok_or_else(expected)?;
    if !unit.is_empty() {
        return Err(expected());
    }
    if n > 100.0 {
        return Err(format!("{text:?}: at most 100%"));
    }
    // in range: checked above
    Ok((n * 1e4).round() as u32)
}

/// A rate as tc writes it: `10mbit`, `1gbit`, `512kbit`, `100bit` (bits per second; a bare
/// number too), `1mbps` (bytes per second), with IEC forms (`kibit`, `mibps`, ...). At least
/// 8 kbit.
///
/// # Errors
/// Anything else.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "numbers are parsed from digits and a point (never negative) and range-checked first"
)]
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let expected = || format!("{text:?}: expected a rate such as 10mbit, 1gbit or 512kbit");
    let (n, unit) = number_and_unit(text).ok_or_else(expected)?;
    let unit = unit.to_ascii_lowercase();
    let (prefix, bytes) = if let Some(p) = unit.strip_suffix("bit") {
        (p, false)
    } else if let Some(p) = unit.strip_suffix("bps") {
        (p, true)
    } else if unit.is_empty() {
        ("", false)
    } else {
        return Err(expected());
    };
    let scale: f64 = match prefix {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(expected()),
    };
    let bps = (n * scale * if bytes { 8.0 } else { 1.0 }).round();
    if bps < MIN_RATE_BPS as f64 {
        return Err(format!("{text:?}: at least 8kbit"));
    }
    if bps > 1e13 {
        return Err(format!("{text:?}: at most 10tbit"));
    }
    // in range: checked above
    Ok(bps as u64)
}

/// A time, printed as tc would (`20ms`, `1.5s`, `500us`).
pub struct Time(pub u32);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us >= 1_000_000 && us.is_multiple_of(1000) {
            write!(f, "{}s", f64::from(us) / 1e6)
        } else if us >= 1000 && us.is_multiple_of(10) {
            write!(f, "{}ms", f64::from(us) / 1e3)
        } else {
            write!(f, "{us}us")
        }
    }
}

/// A chance in parts per million, printed as a percentage.
pub struct Percent(pub u32);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", f64::from(self.0) / 1e4)
    }
}

/// A rate in bits per second, printed as tc would.
pub struct Rate(pub u64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (scale, unit) in [
            (1_000_000_000_000, "tbit"),
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1000, "kbit"),
        ] {
            if b >= scale && b.is_multiple_of(scale / 1000) {
                // exact to three decimals
                #[allow(clippy::cast_precision_loss, reason = "at most 10^13, exact in f64")]
                return write!(f, "{}{unit}", b as f64 / scale as f64);
            }
        }
        write!(f, "{b}bit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_tc_writes_them() {
        assert_eq!(parse_time("20ms"), Ok(20_000));
        assert_eq!(parse_time("1.5s"), Ok(1_500_000));
        assert_eq!(parse_time("500us"), Ok(500));
        assert_eq!(parse_time("250"), Ok(250));
        assert!(parse_time("20 parsecs").is_err());
        assert!(parse_time("61s").is_err());
        assert_eq!(parse_percent("1%"), Ok(10_000));
        assert_eq!(parse_percent("0.1%"), Ok(1_000));
        assert_eq!(parse_percent("100%"), Ok(1_000_000));
        assert!(parse_percent("1").is_err());
        assert!(parse_percent("101%").is_err());
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("1mbps"), Ok(8_000_000));
        assert_eq!(parse_rate("1mibit"), Ok(1_048_576));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert!(parse_rate("10 furlongs").is_err());
        assert!(parse_rate("1bit").is_err());
    }

    #[test]
    fn printed_back_the_same_way() {
        let mut i = Impair::default();
        for (k, v) in [
            ("delay", "20ms"),
            ("jitter", "2ms"),
            ("loss", "1%"),
            ("corrupt", "0.1%"),
            ("duplicate", "0.05%"),
            ("rate", "10mbit"),
            ("seed", "7"),
        ] {
            i.set(k, v).unwrap();
        }
        assert_eq!(
            i.to_string(),
            "delay=20ms jitter=2ms loss=1% corrupt=0.1% duplicate=0.05% rate=10mbit seed=7"
        );
        assert_eq!(Impair::default().to_string(), "none");
        assert_eq!(Rate(1_500_000).to_string(), "1.5mbit");
        assert_eq!(Time(1500).to_string(), "1.5ms");
    }

    #[test]
    fn crossing_two_adds_delays_and_combines_chances() {
        let a = Impair {
            delay_us: Some(10_000),
            loss_ppm: Some(100_000),
            rate_bps: Some(10_000_000),
            ..Impair::default()
        };
        let b = Impair {
            delay_us: Some(5_000),
            loss_ppm: Some(100_000),
            rate_bps: Some(1_000_000),
            seed: Some(3),
            ..Impair::default()
        };
        let both = a.then(&b);
        assert_eq!(both.delay_us, Some(15_000));
        assert_eq!(both.loss_ppm, Some(190_000), "1 - 0.9 * 0.9");
        assert_eq!(both.rate_bps, Some(1_000_000));
        assert_eq!(both.seed, Some(3));
        assert_eq!(a.then(&Impair::default()), a);
    }

    #[test]
    fn jitter_needs_a_delay_at_least_as_large() {
        let mut i = Impair::default();
        i.set("jitter", "2ms").unwrap();
        assert!(i.check().unwrap_err().contains("needs a delay"));
        i.set("delay", "1ms").unwrap();
        assert!(i.check().unwrap_err().contains("larger than the delay"));
        i.set("delay", "20ms").unwrap();
        assert_eq!(i.check(), Ok(()));
        i.set("delay", "none").unwrap();
        i.set("jitter", "none").unwrap();
        assert!(i.is_none());
        assert!(
            i.set("latency", "1ms")
                .unwrap_err()
                .contains("expected one of")
        );
    }
}
