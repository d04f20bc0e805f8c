//! The gate's workflows over the registry: what a promotion checks and records. The command
//! line and the pipeline both call these; neither decides anything itself.

use super::policy::Policy;
use super::{Decision, decide};
use crate::compat;
use crate::error::Result;
use crate::registry::{Audit, Registry};

/// A request to put a build on a channel.
pub struct Promotion<'a> {
    /// Build id, id prefix or image reference.
    pub build: &'a str,
    pub channel: &'a str,
    /// Bundle manifests that must accept the build's runner version.
    pub bundles: &'a [compat::Declaration],
    /// Explain without writing anything.
    pub dry_run: bool,
    pub actor: &'a str,
    /// Why (empty: the policy's source is given as the reason).
    pub reason: &'a str,
}

/// Decides a promotion under `policy` from the registry's evidence for the build (every CLI it
/// bundles, every required suite and repo; `all_repos` when the policy names none) and, unless
/// it is a dry run, records it: the release, or the refusal, each in the audit log with the
/// evidence. Returns the resolved build id and the decision.
pub async fn promote(
    reg: &Registry,
    policy: &Policy,
    all_repos: &[String],
    p: &Promotion<'_>,
) -> Result<(String, Decision)> {
    let channel_policy = policy.channel(p.channel)?.clone();
    let build = reg.resolve_build(p.build).await?;
    let row = reg.builds().await?.into_iter().find(|b| b.id == build);
    let providers: Vec<String> = match row.as_ref() {
        Some(b) => match &b.manifest {
            Some(m) => m.providers(),
            None => b
                .runtime_versions
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        },
        None => Vec::new(),
    };
    let repos = channel_policy.repos.clone().unwrap_or_else(|| all_repos.to_vec());
    let evidence = reg
        .evidence(&build, &channel_policy.required_suites, &repos, &providers)
        .await?;
    let mut decision = decide(&build, p.channel, &channel_policy, evidence, jiff::Timestamp::now());
    if !p.bundles.is_empty() {
        let runner = row.map(|b| b.runner_version).unwrap_or_default();
        match compat::runtime_version(&runner) {
            Ok(v) => {
                for d in p.bundles {
                    let r = compat::check(d, &v);
                    decision
                        .unmet
                        .extend(r.reasons.iter().map(|why| format!("bundle {}: {why}", d.file)));
                    decision
                        .warnings
                        .extend(r.warnings.iter().map(|w| format!("bundle {}: {w}", d.file)));
                }
            }
            Err(_) => decision.unmet.push(format!(
                "the build's runner version `{runner}` is not SemVer, so bundle compatibility cannot be shown"
            )),
        }
        decision.allowed = decision.unmet.is_empty();
    }
    if p.dry_run {
        return Ok((build, decision));
    }
    let evidence = serde_json::to_value(&decision).expect("serializable");
    let target = format!("{build} -> {}", p.channel);
    if decision.allowed {
        let reason = if p.reason.is_empty() {
            format!("green under {}", policy.source)
        } else {
            p.reason.to_string()
        };
        reg.release(
            p.channel,
            &build,
            "promote",
            Audit {
                actor: p.actor,
                action: "promote",
                target: &target,
                decision: "promoted",
                reason: &reason,
                evidence,
            },
        )
        .await?;
    } else {
        reg.audit(Audit {
            actor: p.actor,
            action: "promote",
            target: &target,
            decision: "blocked",
            reason: &decision.unmet.join("; "),
            evidence,
        })
        .await?;
    }
    Ok((build, decision))
}
