//! The reference runner's parts: Runner Contract events, the approval policy, and the adapters
//! that translate each CLI's native stream. See docs/runner-contract.md.

pub mod adapters;
pub mod agent;
pub mod events;
pub mod inventory;
pub mod mcp;
pub mod policy;
pub mod pr;
pub mod proxy;
pub mod session;

/// This runner's heartbeat (Runner Contract `HEARTBEAT`): its own version and each CLI found on
/// PATH, with the capabilities that follow, stamped now.
pub async fn heartbeat(runner_id: &str, org: Option<&str>, channel: Option<&str>) -> serde_json::Value {
    let mut versions = std::collections::BTreeMap::new();
    versions.insert(
        canary_contract::build::RUNNER.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    let mut capabilities = vec!["session".to_string(), "pr".to_string()];
    for provider in canary_contract::Provider::ALL {
        if let Some(v) = session::installed_version(provider.command()).await {
            versions.insert(provider.name().to_string(), v);
            capabilities.push(format!("provider:{}", provider.name()));
        }
    }
    let mut v = serde_json::to_value(events::Event::Heartbeat { versions, capabilities }).expect("event serializes");
    let o = v.as_object_mut().expect("events are objects");
    o.insert("ts".into(), canary_contract::time::now().into());
    o.insert("runner_id".into(), runner_id.into());
    if let Some(org) = org {
        o.insert("org".into(), org.into());
    }
    if let Some(c) = channel {
        o.insert("channel".into(), c.into());
    }
    v
}
