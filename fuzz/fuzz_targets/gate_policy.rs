//! `gate.yaml` text → policy; a parsed policy is then asked for its channels.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match canary::gate::policy::Policy::parse("gate.yaml", text) {
        Ok(p) => {
            let _ = p.channel("beta");
            let _ = p.channel("stable");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
