//! `canary drift`: each CLI of a build compared against what its adapter reads (the adapter's
//! contract) and against a baseline build's recorded inventory of the same CLI.

use crate::error::{LabError, Result};
use crate::providers::Provider;
use crate::registry::Registry;
use canary_runner::runner::inventory;

/// One CLI's comparison: against its adapter's contract and against the baseline build.
#[derive(Debug, serde::Serialize)]
pub struct CliDrift {
    pub provider: String,
    pub build: canary_contract::BuildId,
    pub version: String,
    pub against: Option<canary_contract::BuildId>,
    pub against_version: Option<String>,
    /// `drift: ...` when something the adapter reads changed; `None` otherwise.
    pub drift: Option<String>,
    /// Every finding, breaking or not, with its class.
    pub findings: Vec<DriftFinding>,
}

/// One finding as `canary drift` shows it.
#[derive(Debug, serde::Serialize)]
pub struct DriftFinding {
    /// `lost_field`, `unknown_event`, `tool_type_changed`, `header_added`, …
    pub class: String,
    /// Whether it is drift (breaks the adapter, or a proxy in front of the model) rather than
    /// informational.
    pub drift: bool,
    /// `request` for what the CLI sends to the model, `output` for what it prints.
    pub side: &'static str,
    pub text: String,
}

/// Compares each CLI of `build` (or only `only`) against its contract and against `against`
/// (default: the newest earlier build whose inventory of that CLI has another version). A
/// build with no recorded inventory is an error, not "no drift".
pub async fn compare(
    reg: &Registry,
    build: &str,
    against: Option<&str>,
    only: Option<Provider>,
) -> Result<Vec<CliDrift>> {
    let id = reg.resolve_build(build).await?;
    let against = match against {
        Some(b) => Some(reg.resolve_build(b).await?),
        None => None,
    };
    let mine: Vec<_> = reg
        .inventories(&id)
        .await?
        .into_iter()
        .filter(|i| only.is_none_or(|p| p.name() == i.provider))
        .collect();
    if mine.is_empty() {
        return Err(LabError::usage(
            format!("build {} has no recorded CLI inventory", crate::lab::short_id(&id)),
            "run a suite with sessions against it first (`canary run --image IMAGE --suite FILE` records what the CLIs did), or check `canary registry builds`",
        ));
    }
    let mut out = Vec::new();
    for inv in &mine {
        let base_id = match &against {
            Some(b) => Some(b.clone()),
            None => reg.inventory_baseline(&id, &inv.provider).await?,
        };
        let base = match &base_id {
            Some(b) => reg
                .inventories(b)
                .await?
                .into_iter()
                .find(|x| x.provider == inv.provider),
            None => None,
        };
        let mut findings = match Provider::from_name(&inv.provider) {
            Some(p) => inv.against(inventory::contract(p)),
            None => Vec::new(),
        };
        if let Some(b) = &base {
            for f in inventory::diff(b, inv) {
                if !findings.contains(&f) {
                    findings.push(f);
                }
            }
        }
        out.push(CliDrift {
            provider: inv.provider.clone(),
            build: id.clone(),
            version: inv.version.clone(),
            against: base.as_ref().and(base_id.clone()),
            against_version: base.as_ref().map(|b| b.version.clone()),
            drift: inventory::drift_line(&inv.provider, &inv.version, &findings),
            findings: findings
                .iter()
                .map(|f| DriftFinding {
                    class: f.class(),
                    drift: f.breaks(),
                    side: if matches!(f, inventory::Finding::Request { .. }) {
                        "request"
                    } else {
                        "output"
                    },
                    text: f.to_string(),
                })
                .collect(),
        });
    }
    Ok(out)
}

/// The comparison as terminal lines: per CLI, what it was compared against, the drift line or
/// "no drift", then every finding.
pub fn lines(reports: &[CliDrift]) -> Vec<String> {
    use canary_contract::build::short_id as short;
    use canary_contract::text::clean;
    let mut out = Vec::new();
    for r in reports {
        let base = match (&r.against, &r.against_version) {
            (Some(b), Some(v)) => format!("against {} {} (build {})", r.provider, v, short(b)),
            _ => "against its adapter's contract only (no earlier build has an inventory of it)".into(),
        };
        out.push(format!(
            "{} {} (build {}) {}:",
            r.provider,
            clean(&r.version),
            short(&r.build),
            base
        ));
        match &r.drift {
            Some(line) => out.push(format!("  {}", clean(line))),
            None => out.push("  no drift: everything the adapter reads is there".into()),
        }
        for f in &r.findings {
            let mark = if f.drift { "drift" } else { "info" };
            out.push(format!("  - [{mark}] {} {}: {}", f.side, f.class, clean(&f.text)));
        }
    }
    out
}
