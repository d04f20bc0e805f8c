//! Update offers from a control plane (possibly hostile) → a host's decision: whatever the
//! bytes, checking never panics, and nothing is accepted for a host that trusts a key unless it
//! verifies and is bound to this host's org and channel, unexpired, and not older than seen.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = serde_json::from_slice::<canary_lab::update::Offer>(data) else {
        return;
    };
    let key = canary_lab::update::sign::Trusted::parse(&"ab".repeat(32));
    let Ok(key) = key else { return };
    let now: jiff::Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
    let allowed = vec!["stable".to_string()];
    if let Ok(Some(m)) = canary_lab::update::check_signature(&offer, Some(&key), false) {
        // A random key signs nothing the fuzzer can forge: reaching here means it verified.
        let _ = canary_lab::update::bind(&m, &offer, Some("acme"), "stable", &allowed, now, 0);
    }
    if let Some(text) = &offer.manifest {
        if let Ok(m) = serde_json::from_str::<canary_lab::update::BuildManifest>(text) {
            let _ = canary_lab::update::bind(&m, &offer, Some("acme"), "stable", &allowed, now, i64::MAX);
        }
    }
});
