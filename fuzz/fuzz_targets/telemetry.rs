//! Telemetry batches from the fleet → checked sessions: nothing accepted may carry a control
//! character, a negative count, more failed than run commands, or a start after its arrival.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    if let Ok(sessions) = canary::telemetry::parse_batch(data, now) {
        let mut ids = std::collections::BTreeSet::new();
        for s in sessions {
            assert!(ids.insert((s.runner.clone(), s.session.clone())), "a session twice in one batch");
            assert!(s.outcome != canary::telemetry::Outcome::Ok || s.start_latency_ms.is_some());
            for v in [&s.runner, &s.org, &s.session, &s.build] {
                assert!(!v.chars().any(char::is_control));
            }
            assert!(s.commands >= 0 && s.commands_failed >= 0 && s.commands_failed <= s.commands);
            assert!(s.cost_micros >= 0 && s.duration_ms >= 0);
            assert!(s.started_at.as_str() <= "2026-11-22T12:00:00.000Z");
        }
    }
});
