//! Median, minimum and maximum of a few samples, and how they are printed.

use serde::Serialize;

/// A summary of `n` samples, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// `None` without samples.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            f64::midpoint(s[n / 2 - 1], s[n / 2])
        };
        Some(Summary {
            median,
            min: s[0],
            max: s[n - 1],
            n,
        })
    }

    /// `0.412 (0.398–0.430)` in seconds, or just the value for one sample.
    pub fn cell(&self) -> String {
        if self.n == 1 || (self.min - self.max).abs() < f64::EPSILON {
            secs(self.median)
        } else {
            format!(
                "{} ({}–{})",
                secs(self.median),
                secs(self.min),
                secs(self.max)
            )
        }
    }

    /// The median with the range, each written by `f`.
    pub fn cell_with(&self, f: impl Fn(f64) -> String) -> String {
        if self.n == 1 || (self.min - self.max).abs() < f64::EPSILON {
            f(self.median)
        } else {
            format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
        }
    }

    /// The same in milliseconds.
    pub fn cell_ms(&self) -> String {
        let ms = |x: f64| format!("{:.1}", x * 1e3);
        if self.n == 1 {
            ms(self.median)
        } else {
            format!("{} ({}–{})", ms(self.median), ms(self.min), ms(self.max))
        }
    }
}

/// About three significant digits (any unit).
pub fn sig3(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        secs(x)
    }
}

/// Seconds with about three significant digits.
pub fn secs(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert!((s.median - 2.5).abs() < 1e-12);
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn cells_read_as_median_and_range() {
        assert_eq!(
            Summary::of(&[0.5, 0.4, 0.6]).unwrap().cell(),
            "0.500 (0.400–0.600)"
        );
        assert_eq!(Summary::of(&[38.61]).unwrap().cell(), "38.6");
    }
}
