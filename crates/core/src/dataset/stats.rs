//! Distributions and OpenAI's epoch rule.

use serde::Serialize;

/// Summary of a per-example quantity; quantiles interpolate linearly (numpy's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Distribution {
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The arithmetic mean.
    pub mean: f64,
    /// The 50th percentile.
    pub median: f64,
    /// The 10th percentile.
    pub p10: f64,
    /// The 90th percentile.
    pub p90: f64,
}

impl Distribution {
    /// Summarises `values` (sorted in place). All zero when empty.
    pub fn of(values: &mut [u64]) -> Distribution {
        if values.is_empty() {
            return Distribution::default();
        }
        values.sort_unstable();
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        Distribution {
            min: values[0] as f64,
            max: values[values.len() - 1] as f64,
            mean: sum / values.len() as f64,
            median: quantile(values, 0.5),
            p10: quantile(values, 0.1),
            p90: quantile(values, 0.9),
        }
    }
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * frac
}

/// OpenAI's default number of epochs for `n` training examples, with the reason.
/// The rule (from OpenAI's data-prep cookbook): 3 epochs, raised to
/// min(25, 100 / n) when 3n < 100, lowered to max(1, 25000 / n) when 3n > 25000.
pub(crate) fn auto_epochs(n: u64) -> (u32, String) {
    if n == 0 {
        return (3, "no examples: OpenAI's default of 3 shown".to_owned());
    }
    if n * 3 < 100 {
        let e = (100 / n).min(25);
        (
            e as u32,
            format!(
                "auto: {n} examples x 3 = {} < 100, so min(25, 100 / {n}) = {e}",
                n * 3
            ),
        )
    } else if n * 3 > 25_000 {
        let e = (25_000 / n).max(1);
        (
            e as u32,
            format!(
                "auto: {n} examples x 3 = {} > 25000, so max(1, 25000 / {n}) = {e}",
                n * 3
            ),
        )
    } else {
        (
            3,
            format!("auto: {n} examples x 3 is within 100..25000, so 3"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy() {
        let mut v = vec![45, 111, 26, 28, 8032];
        let d = Distribution::of(&mut v);
        assert_eq!((d.min, d.max, d.median), (26.0, 8032.0, 45.0));
        assert!((d.mean - 1648.4).abs() < 1e-9);
        // numpy.quantile([26, 28, 45, 111, 8032], 0.1) = 26.8, 0.9 = 4863.6
        assert!((d.p10 - 26.8).abs() < 1e-9, "{}", d.p10);
        assert!((d.p90 - 4863.6).abs() < 1e-9, "{}", d.p90);
    }

    #[test]
    fn epoch_rule_matches_the_cookbook_table() {
        for (n, want) in [
            (5, 20),
            (10, 10),
            (13, 7),
            (20, 5),
            (33, 3),
            (34, 3),
            (8333, 3),
            (10_000, 2),
            (30_000, 1),
        ] {
            assert_eq!(auto_epochs(n).0, want, "n = {n}");
        }
    }
}
