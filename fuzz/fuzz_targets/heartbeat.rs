//! Heartbeat JSON from the fleet → a checked heartbeat; nothing accepted may carry a control
//! character (it would reach a terminal or a page).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(h) = canary::heartbeat::parse(text, "fuzz") {
        assert!(!h.runner_id.chars().any(char::is_control));
        for (k, v) in &h.versions {
            assert!(!k.chars().any(char::is_control) && !v.chars().any(char::is_control));
        }
        for name in [&h.org, &h.channel].into_iter().flatten() {
            assert!(!name.chars().any(char::is_control));
        }
    }
});
