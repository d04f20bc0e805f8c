//! Gate decisions as terminal lines, from the decision `--json` prints.

use super::Decision;
use canary_contract::build::short_id as short;

/// A promotion decision: the verdict line, then each unmet condition, warning and passing cell.
pub fn decision(
    build: &str,
    channel: &str,
    decision: &Decision,
    (dry_run, policy_source): (bool, &str),
) -> Vec<String> {
    let mut out = Vec::new();
    let verb = match (decision.allowed, dry_run) {
        (true, true) => "would be promoted",
        (true, false) => "promoted",
        (false, true) => "would be blocked",
        (false, false) => "blocked",
    };
    let prep = if decision.allowed { "to" } else { "from" };
    out.push(format!(
        "build {} {verb} {prep} {} ({policy_source})",
        short(build),
        channel
    ));
    for u in &decision.unmet {
        out.push(format!("  ✗ {u}"));
    }
    for w in &decision.warnings {
        out.push(format!("  ! {w}"));
    }
    for c in decision
        .evidence
        .iter()
        .filter(|c| c.status == Some(canary_registry::ResultStatus::Pass))
    {
        out.push(format!(
            "  ✓ {}: pass (run {})",
            c.place(),
            c.run_id.as_deref().unwrap_or("?")
        ));
    }
    out
}

/// An org's pin: what it follows or is pinned to, and what it runs.
pub fn pinned(p: &super::ops::Pinned) -> Vec<String> {
    let how = match &p.pinned_build {
        Some(b) => format!("pinned to {}", short(b)),
        None => format!("follows {}", p.channel),
    };
    vec![format!(
        "org {} {how} (runs {})",
        p.org,
        p.runs.as_deref().map(short).unwrap_or("nothing yet")
    )]
}
