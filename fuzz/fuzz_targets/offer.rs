//! What a (possibly hostile) control plane hands a host, outside what tough verifies itself: a
//! root file given to `update init --root` or trusted on first use, an offer document once its
//! digest matched, the unsigned offer shown to the admin, and the paths `/v1/tuf/` answers.
//! Whatever the bytes, nothing panics, and a document binds only to its own org and channel.
#![no_main]
use canary::update::tuf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(root) = tuf::parse_root(data) {
        let _ = tuf::self_signed(&root);
        let _ = tuf::root_key_ids(&root);
    }
    let allowed = vec!["stable".to_string()];
    if let Ok(m) = serde_json::from_slice::<canary::update::BuildManifest>(data) {
        if tuf::bind(&m, Some("acme"), "stable", &allowed).is_ok() {
            let s = m.statement.as_ref().expect("bound documents carry a statement");
            assert!(s.org.as_deref() == Some("acme"));
            assert!(s.channel == "stable");
        }
        let _ = canary::update::plan(None, &m, &[]);
    }
    let _ = serde_json::from_slice::<canary::update::Offer>(data);
    if let Ok(path) = std::str::from_utf8(data) {
        if let tuf::Access::Org(org) = tuf::access(path) {
            assert!(path.contains(&format!("offers/org/{org}/")));
        }
    }
});
