//! Telemetry batches from the fleet → checked sessions: nothing accepted may carry a control
//! character, a negative count, more failed than run commands, or a start after its arrival.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    if let Ok(sessions) = canary_lab::telemetry::parse_batch(data, now) {
        for s in sessions {
            for v in [&s.runner, &s.org, &s.session, &s.build] {
                assert!(!v.chars().any(char::is_control));
            }
            assert!(s.commands >= 0 && s.commands_failed >= 0 && s.commands_failed <= s.commands);
            assert!(s.cost_micros >= 0 && s.duration_ms >= 0);
            assert!(s.started_at.as_str() <= "2026-11-22T12:00:00.000Z");
        }
    }
});
