//! Suite text → parser and compiler, then the per-repo expansion every run does. Any input
//! must end in a suite or a located error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let repos = vec!["python".to_string(), "js-ts".to_string()];
    match canary::suite::compile("fuzz.yaml", text.to_string(), &repos) {
        Ok(suite) => {
            let vars = std::collections::BTreeMap::from([("file".to_string(), "a.txt".to_string())]);
            let _ = suite.for_repo("python", &vars, &repos);
        }
        Err(e) => {
            // Rendering the error (what the user sees) must not panic either.
            let _ = e.to_string();
            if let canary::error::LabError::Source(s) = &e {
                let _ = s.location();
            }
        }
    }
});
