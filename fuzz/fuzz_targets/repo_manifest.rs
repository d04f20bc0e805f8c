//! `canary-repo.yaml` text → manifest (upstream URL and commit checks included).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match canary::repos::parse_manifest(std::path::Path::new("r/canary-repo.yaml"), text, "r") {
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
