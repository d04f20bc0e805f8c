//! Times as every side writes them: RFC 3339 UTC with milliseconds, which sorts as text.

/// Now, formatted.
pub fn now() -> String {
    format_ts(jiff::Timestamp::now())
}

/// A time as the registry stores it and the runner reports it.
pub fn format_ts(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_have_milliseconds_and_sort_as_text() {
        let a: jiff::Timestamp = "2026-12-05T09:05:03.5Z".parse().unwrap();
        let b: jiff::Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        assert_eq!(super::format_ts(a), "2026-12-05T09:05:03.500Z");
        assert!(super::format_ts(a) < super::format_ts(b));
    }
}
