//! Intervals for comparing two rates.
//!
//! A rollout's controller looks at its figures every few seconds. A fixed-sample interval
//! re-tested at every look is wrong far more often than its level says, so decisions use an
//! **always-valid** interval: the normal-mixture sequential probability ratio test (mSPRT) of
//! Robbins (1970) as Johari, Pekelis and Walsh apply it to A/B tests ("Always valid inference",
//! Operations Research 2022), inverted into a confidence sequence. With the difference's
//! estimate `d`, its variance `V` and a mixing normal of standard deviation `tau` around the
//! hypothesised difference, the likelihood ratio against `d0` is
//!
//! ```text
//! L(d0) = sqrt(V / (V + tau²)) · exp(tau² (d - d0)² / (2 V (V + tau²)))
//! ```
//!
//! and the interval at level `alpha` is every `d0` with `L(d0) < 1 / alpha`:
//!
//! ```text
//! d ± sqrt(2 V (V + tau²) / tau² · (ln(1 / alpha) + ½ ln((V + tau²) / V)))
//! ```
//!
//! It covers the true difference at every look at once with probability at least `1 - alpha`
//! (for normal estimates; the rates are judged only past `min_sessions`, where the normal
//! approximation holds). `tau` says which differences the test is quickest to see: the interval
//! is narrowest, for a given `alpha`, when `V` is near `tau²`. `docs/rollouts.md` has a worked
//! example. Wilson's interval for one proportion and Newcombe's hybrid score interval for a
//! difference (Newcombe 1998, method 10) are the fixed-sample intervals the controller used
//! before; they stay to show, in tests, what re-testing at every look does.

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

/// A rate with half a hit and half a miss added (never exactly 0 or 1), so that a side with no
/// failure yet still has a variance and an interval is never a point.
fn smoothed(p: Proportion) -> f64 {
    (p.hits as f64 + 0.5) / (p.n as f64 + 1.0)
}

/// The radius of the always-valid interval of an estimate with variance `v` (see the module's
/// documentation).
pub fn mixture_radius(v: f64, alpha: f64, tau: f64) -> f64 {
    let t2 = tau * tau;
    // No spread at all (every value alike) is a variance of 0: floored far below tau² so that
    // (V + tau²) / V stays finite and the radius, rightly, near 0.
    let v = v.max(t2 * 1e-12).max(f64::MIN_POSITIVE);
    let alpha = alpha.clamp(1e-9, 0.5);
    (2.0 * v * (v + t2) / t2 * ((1.0 / alpha).ln() + 0.5 * ((v + t2) / v).ln())).sqrt()
}

/// The always-valid interval of `a.rate() - b.rate()` at level `alpha`, mixing over differences
/// of standard deviation `tau`: valid however often it is looked at.
pub fn sequential_difference(a: Proportion, b: Proportion, alpha: f64, tau: f64) -> (f64, f64) {
    if a.n == 0 || b.n == 0 {
        return (-1.0, 1.0);
    }
    let (pa, pb) = (smoothed(a), smoothed(b));
    let v = pa * (1.0 - pa) / a.n as f64 + pb * (1.0 - pb) / b.n as f64;
    let d = a.rate() - b.rate();
    let r = mixture_radius(v, alpha, tau);
    ((d - r).max(-1.0), (d + r).min(1.0))
}

/// Whether `hits` of `n` is out of line with an expected share `p0`, by the same always-valid
/// test at level `alpha` (a sample-ratio mismatch when `hits` are the candidate's sessions among
/// `n`): the interval around the observed share leaves out `p0`.
pub fn share_mismatch(observed: Proportion, p0: f64, alpha: f64, tau: f64) -> bool {
    if observed.n == 0 || !(0.0..=1.0).contains(&p0) {
        return false;
    }
    let p0s = p0.clamp(0.5 / (observed.n as f64 + 1.0), 1.0 - 0.5 / (observed.n as f64 + 1.0));
    let v = p0s * (1.0 - p0s) / observed.n as f64;
    (observed.rate() - p0).abs() >= mixture_radius(v, alpha, tau)
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
    fn the_always_valid_interval_is_wider_than_the_fixed_one_and_narrows_with_sessions() {
        let (a, b) = (Proportion::new(50, 1000), Proportion::new(500, 10_000));
        let (flo, fhi) = difference_interval(a, b, z_for(0.95));
        let (slo, shi) = sequential_difference(a, b, 0.05, 0.02);
        assert!(slo < flo && shi > fhi, "fixed {flo}..{fhi}, sequential {slo}..{shi}");
        let (a2, b2) = (Proportion::new(500, 10_000), Proportion::new(5000, 100_000));
        let (lo2, hi2) = sequential_difference(a2, b2, 0.05, 0.02);
        assert!(hi2 - lo2 < (shi - slo) / 2.0, "{lo2}..{hi2}");
        assert!(lo2 < 0.0 && hi2 > 0.0);
        // Worked example of docs/rollouts.md: 100 of 1,000 against 500 of 10,000.
        let (lo, hi) = sequential_difference(Proportion::new(100, 1000), Proportion::new(500, 10_000), 0.05, 0.02);
        assert!((lo - 0.0200).abs() < 5e-4 && (hi - 0.0800).abs() < 5e-4, "{lo} {hi}");
        // No failure on either side still gives an interval, never a point.
        let (lo, hi) = sequential_difference(Proportion::new(0, 300), Proportion::new(0, 3000), 0.05, 0.02);
        assert!(lo < 0.0 && hi > 0.0, "{lo} {hi}");
        assert_eq!(sequential_difference(Proportion::new(0, 0), b, 0.05, 0.02), (-1.0, 1.0));
    }

    #[test]
    fn a_share_far_from_the_step_is_a_mismatch_and_a_near_one_is_not() {
        // 10 % step: 700 candidate of 10,000 is a mismatch, 1,000 is not, 980 is noise.
        assert!(share_mismatch(Proportion::new(700, 10_000), 0.10, 0.001, 0.05));
        assert!(!share_mismatch(Proportion::new(1000, 10_000), 0.10, 0.001, 0.05));
        assert!(!share_mismatch(Proportion::new(980, 10_000), 0.10, 0.001, 0.05));
        assert!(!share_mismatch(Proportion::new(0, 0), 0.10, 0.001, 0.05));
    }

    #[test]
    fn newcombe_matches_a_worked_example() {
        // 56/70 - 48/80 at 95 %: 0.0524 to 0.3339 (Newcombe 1998, method 10, example (a)).
        let (lo, hi) = difference_interval(Proportion::new(56, 70), Proportion::new(48, 80), z_for(0.95));
        assert!((lo - 0.0524).abs() < 5e-4 && (hi - 0.3339).abs() < 5e-4, "{lo} {hi}");
    }
}
