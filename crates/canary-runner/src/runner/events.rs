//! Runner Contract v1 events: the types live in `canary-contract` (the lowest crate, shared by
//! the runner, the lab and the control plane); this module keeps their old path and checks
//! that every ERROR kind the lab's sources emit is listed.

pub use canary_contract::events::*;

#[cfg(test)]
mod kinds_tests {
    /// Every kind the sources emit is listed, so a suite naming it is accepted.
    #[test]
    fn every_emitted_error_kind_is_listed() {
        let sources = [
            include_str!("../../../canary-contract/src/events.rs"),
            include_str!("session.rs"),
            include_str!("proxy.rs"),
            include_str!("pr.rs"),
            include_str!("adapters/mod.rs"),
            include_str!("adapters/codex.rs"),
            include_str!("adapters/claude.rs"),
            include_str!("adapters/gemini.rs"),
            include_str!("../../../canary-lab/src/lab/case.rs"),
            include_str!("../stub/scenario.rs"),
            include_str!("../bin/canary-runner.rs"),
        ];
        let re = regex::Regex::new(r#"(?:error|fail)\(\s*"([a-z_]+)""#).unwrap();
        let mut found = 0;
        for text in sources {
            for c in re.captures_iter(text) {
                found += 1;
                assert!(
                    super::ERROR_KINDS.contains(&&c[1]),
                    "ERROR kind `{}` is emitted but not listed",
                    &c[1]
                );
            }
        }
        assert!(found > 10, "the scan found the emitters ({found})");
    }
}
