//! Intervals for comparing two rates: Wilson score intervals for each proportion and Newcombe's
//! hybrid score interval for their difference (Newcombe 1998, method 10), which stays inside
//! [-1, 1] and behaves at rates near zero, where failure rates live.

/// `hits` of `n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proportion {
    pub hits: u64,
    pub n: u64,
}

impl Proportion {
    pub fn new(hits: u64, n: u64) -> Proportion {
        Proportion { hits: hits.min(n), n }
    }
    pub fn rate(self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.hits as f64 / self.n as f64
        }
    }
}

/// The Wilson score interval of a proportion at the two-sided normal quantile `z`.
pub fn wilson(p: Proportion, z: f64) -> (f64, f64) {
    if p.n == 0 {
        return (0.0, 1.0);
    }
    let n = p.n as f64;
    let phat = p.rate();
    let z2 = z * z;
    let centre = phat + z2 / (2.0 * n);
    let spread = z * (phat * (1.0 - phat) / n + z2 / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z2 / n;
    (
        ((centre - spread) / denom).max(0.0),
        ((centre + spread) / denom).min(1.0),
    )
}

/// The interval of `a.rate() - b.rate()` (Newcombe's hybrid score interval).
pub fn difference_interval(a: Proportion, b: Proportion, z: f64) -> (f64, f64) {
    let (l1, u1) = wilson(a, z);
    let (l2, u2) = wilson(b, z);
    let (p1, p2) = (a.rate(), b.rate());
    let d = p1 - p2;
    let lower = d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let upper = d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    (lower.max(-1.0), upper.min(1.0))
}

/// The two-sided standard normal quantile for a confidence level (0.95 → 1.96), by Acklam's
/// rational approximation of the inverse normal CDF (relative error below 1.2e-9).
pub fn z_for(confidence: f64) -> f64 {
    let p = 1.0 - (1.0 - confidence.clamp(0.5, 0.999_999)) / 2.0;
    inverse_normal(p)
}

fn inverse_normal(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -inverse_normal(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_the_tables() {
        assert!((z_for(0.95) - 1.959964).abs() < 1e-5);
        assert!((z_for(0.99) - 2.575829).abs() < 1e-5);
        assert!((z_for(0.90) - 1.644854).abs() < 1e-5);
    }

    #[test]
    fn wilson_matches_a_worked_example() {
        // 81 of 263 at 95 %: 0.2553 to 0.3662 (Newcombe 1998, table I).
        let (lo, hi) = wilson(Proportion::new(81, 263), z_for(0.95));
        assert!((lo - 0.2553).abs() < 5e-4 && (hi - 0.3662).abs() < 5e-4, "{lo} {hi}");
        let (lo, hi) = wilson(Proportion::new(0, 10), z_for(0.95));
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 5e-4, "{hi}");
    }

    #[test]
    fn newcombe_matches_a_worked_example() {
        // 56/70 - 48/80 at 95 %: 0.0524 to 0.3339 (Newcombe 1998, method 10, example (a)).
        let (lo, hi) = difference_interval(Proportion::new(56, 70), Proportion::new(48, 80), z_for(0.95));
        assert!((lo - 0.0524).abs() < 5e-4 && (hi - 0.3339).abs() < 5e-4, "{lo} {hi}");
    }
}
