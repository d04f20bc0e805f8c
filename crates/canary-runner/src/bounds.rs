//! Bounds on the durations and counts people type: every one is checked when it is parsed, and
//! the message names the bound, so `--bake 5000000000000h` or `--min-sessions 2^64-1` never
//! reach a computation that would wrap.

use std::time::Duration;

/// A parser for a duration between `min` and `max` (humantime: `90s`, `10m`, `2h`), for clap's
/// `value_parser`.
pub fn duration(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let d = humantime::parse_duration(s)
            .map_err(|e| format!("`{}` is not a duration ({e}); e.g. 30s, 10m, 2h", crate::text::clean(s)))?;
        if d < min || d > max {
            return Err(format!(
                "{} is out of bounds: between {} and {}",
                crate::text::clean(s),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(d)
    }
}

/// A parser for a whole number between `min` and `max`.
pub fn count(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let n: u64 = s.parse().map_err(|_| {
            format!(
                "`{}` is not a whole number between {min} and {max}",
                crate::text::clean(s)
            )
        })?;
        if n < min || n > max {
            return Err(format!("{n} is out of bounds: between {min} and {max}"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_counts_are_bounded_with_the_bound_in_the_message() {
        let bake = duration(Duration::ZERO, Duration::from_secs(7 * 86_400));
        assert_eq!(bake("10m"), Ok(Duration::from_secs(600)));
        let e = bake("5000000000000h").unwrap_err();
        assert!(e.contains("between 0s and 7days"), "{e}");
        assert!(bake("soon").unwrap_err().contains("not a duration"));
        let n = count(1, 1_000_000);
        assert_eq!(n("30"), Ok(30));
        let e = n("18446744073709551615").unwrap_err();
        assert!(e.contains("between 1 and 1000000"), "{e}");
        assert!(n("-1").is_err() && n("0").is_err());
    }
}
