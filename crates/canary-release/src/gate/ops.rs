//! The gate's workflows over the registry: what a promotion checks and records. The command
//! line and the pipeline both call these; neither decides anything itself.

use super::policy::Policy;
use super::{Decision, decide};
use crate::compat;
use crate::error::Result;
use crate::registry::{Audit, PinChange, Registry, ReleaseKind};
use canary_contract::{BuildId, Channel, Provider};

/// A request to put a build on a channel.
pub struct Promotion<'a> {
    /// Build id, id prefix or image reference.
    pub build: &'a str,
    pub channel: &'a Channel,
    /// Bundle manifests that must accept the build's runner version.
    pub bundles: &'a [compat::Declaration],
    /// Explain without writing anything.
    pub dry_run: bool,
    pub actor: &'a str,
    /// Why (empty: the policy's source is given as the reason).
    pub reason: &'a str,
}

/// The CLIs a build bundles, as its manifest (or, for an image without one, its runtimes label)
/// names them: the ones this lab runs, and apart from them the names it does not know.
fn bundled_clis(row: Option<&crate::registry::BuildRow>) -> (Vec<Provider>, Vec<String>) {
    let names: Vec<String> = match row {
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
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for name in names {
        match Provider::from_name(&name) {
            Some(p) => known.push(p),
            None => unknown.push(name),
        }
    }
    (known, unknown)
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
) -> Result<(BuildId, Decision)> {
    let channel_policy = policy.channel(p.channel)?.clone();
    let build = reg.resolve_build(p.build).await?;
    let row = reg.build_row(&build).await?;
    let (providers, unknown) = bundled_clis(row.as_ref());
    let repos = channel_policy.repos.clone().unwrap_or_else(|| all_repos.to_vec());
    let evidence = reg
        .evidence(&build, &channel_policy.required_suites, &repos, &providers)
        .await?;
    let mut decision = decide(&build, p.channel, &channel_policy, evidence, jiff::Timestamp::now());
    // A CLI the lab cannot run has no evidence and never will: named, so the build is blocked
    // for a reason a person can act on rather than passed on the CLIs that could be judged.
    decision.unmet.extend(unknown.iter().map(|n| {
        format!(
            "the build bundles `{}`, a CLI this lab does not run, so no canary result can judge it",
            crate::text::clean(n)
        )
    }));
    decision.allowed = decision.unmet.is_empty();
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
            ReleaseKind::Promote,
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

/// Releases each build to each channel through the gate (builds in order, then channels), under
/// the policy, judged on the canary repos `all_repos`: the one promotion loop `canary run --promote`, the
/// pipeline and `canary bisect --hold` share. Each decision is audited by [`promote`].
pub async fn release(
    reg: &Registry,
    policy: &Policy,
    all_repos: &[String],
    (builds, channels): (&[&str], &[Channel]),
    who: Actor<'_>,
) -> Result<Vec<Decision>> {
    let mut out = Vec::new();
    for build in builds {
        for channel in channels {
            let request = Promotion {
                build,
                channel,
                bundles: &[],
                dry_run: false,
                actor: who.name,
                reason: who.reason,
            };
            out.push(promote(reg, policy, all_repos, &request).await?.1);
        }
    }
    Ok(out)
}

/// What a workflow did: done, or refused with the reasons (already in the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    Done(T),
    Refused(Vec<String>),
}

/// Who acts, and why; both go into the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub reason: &'a str,
}

pub use canary_runner::names::check_name;

/// The build an org runs: its pinned build, or its channel's current known-good build.
pub async fn effective(reg: &Registry, pin: Option<&crate::registry::OrgPin>) -> Result<Option<BuildId>> {
    let Some(p) = pin else { return Ok(None) };
    if let Some(b) = &p.pinned_build_id {
        return Ok(Some(b.clone()));
    }
    Ok(reg.known_good(&p.channel).await?.first().map(|r| r.build_id.clone()))
}

pub async fn effective_of(reg: &Registry, org: &str) -> Result<Option<BuildId>> {
    let pins = reg.pins().await?;
    effective(reg, pins.iter().find(|p| p.org == org)).await
}

/// A pin: an org follows a channel, or runs one known-good build.
#[derive(Debug, Clone)]
pub struct PinRequest<'a> {
    pub org: &'a str,
    /// The channel to follow (default: the org's current one, else `stable`).
    pub channel: Option<&'a Channel>,
    /// Build id, prefix or image reference to pin to; none to follow the channel.
    pub build: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pinned {
    pub org: String,
    pub channel: Channel,
    pub pinned_build: Option<BuildId>,
    /// What the org runs now.
    pub runs: Option<BuildId>,
}

/// Pins an org. Only a build some channel has released (a known-good build) can be pinned;
/// anything else is refused and audited.
/// The audit entry of a rollback done for `who`.
fn rolled_back<'a>(who: Actor<'a>, target: &'a str, evidence: serde_json::Value) -> Audit<'a> {
    Audit {
        actor: who.name,
        action: "rollback",
        target,
        decision: "done",
        reason: who.reason,
        evidence,
    }
}

pub async fn pin(reg: &Registry, p: &PinRequest<'_>, who: Actor<'_>) -> Result<Outcome<Pinned>> {
    check_name("org", p.org)?;
    let current = reg.pins().await?.into_iter().find(|x| x.org == p.org);
    let channel = match p.channel {
        Some(c) => c.clone(),
        None => current.as_ref().map_or_else(Channel::stable, |x| x.channel.clone()),
    };
    let from = effective(reg, current.as_ref()).await?;
    let build = match p.build {
        None => None,
        Some(b) => {
            let id = reg.resolve_build(b).await?;
            let known_good = reg.releases(None, 100_000).await?.iter().any(|r| r.build_id == id);
            if !known_good {
                let reason = "the build was never promoted to any channel: only known-good builds can be pinned";
                reg.audit(Audit {
                    actor: who.name,
                    action: "pin",
                    target: &format!("{} -> {id}", p.org),
                    decision: "refused",
                    reason,
                    evidence: serde_json::json!({}),
                })
                .await?;
                return Ok(Outcome::Refused(vec![reason.into()]));
            }
            Some(id)
        }
    };
    let target = format!(
        "{} -> {}",
        p.org,
        build
            .as_ref()
            .map_or_else(|| format!("channel {channel}"), |b| b.to_string())
    );
    reg.set_pin(
        p.org,
        &channel,
        build.as_ref(),
        from.as_ref(),
        PinChange::Pin,
        Audit {
            actor: who.name,
            action: "pin",
            target: &target,
            decision: "done",
            reason: who.reason,
            evidence: serde_json::json!({"from": from}),
        },
    )
    .await?;
    let runs = effective_of(reg, p.org).await?;
    Ok(Outcome::Done(Pinned {
        org: p.org.to_string(),
        channel,
        pinned_build: build,
        runs,
    }))
}

/// What a rollback returns to its previous build.
#[derive(Debug, Clone, Copy)]
pub enum RollbackTarget<'a> {
    Channel(&'a Channel),
    Org(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RolledBack {
    /// The channel or org.
    pub target: String,
    pub from: BuildId,
    pub to: BuildId,
}

/// Returns a channel to its previous known-good build (every component of it), or an org to the
/// build before the one it runs on its channel. Refusals are audited.
pub async fn rollback(reg: &Registry, target: RollbackTarget<'_>, who: Actor<'_>) -> Result<Outcome<RolledBack>> {
    match target {
        RollbackTarget::Channel(channel) => rollback_channel(reg, channel, who).await,
        RollbackTarget::Org(org) => rollback_org(reg, org, who).await,
    }
}

/// A refused rollback, audited.
async fn refuse(reg: &Registry, who: Actor<'_>, what: &str, why: String) -> Result<Outcome<RolledBack>> {
    reg.audit(Audit {
        actor: who.name,
        action: "rollback",
        target: what,
        decision: "refused",
        reason: &why,
        evidence: serde_json::json!({}),
    })
    .await?;
    Ok(Outcome::Refused(vec![why]))
}

/// A channel back to its previous known-good build.
async fn rollback_channel(reg: &Registry, channel: &Channel, who: Actor<'_>) -> Result<Outcome<RolledBack>> {
    let history = reg.known_good(channel).await?;
    let (Some(current), Some(previous)) = (history.first(), history.get(1)) else {
        return refuse(
            reg,
            who,
            channel,
            format!("channel `{channel}` has no previous known-good build to return to"),
        )
        .await;
    };
    let text = format!("{channel}: {} -> {}", current.build_id, previous.build_id);
    reg.release(
        channel,
        &previous.build_id,
        ReleaseKind::Rollback,
        rolled_back(
            who,
            &text,
            serde_json::json!({"from": current.build_id, "to": previous.build_id}),
        ),
    )
    .await?;
    Ok(Outcome::Done(RolledBack {
        target: channel.to_string(),
        from: current.build_id.clone(),
        to: previous.build_id.clone(),
    }))
}

/// An org to the build before the one it runs on its channel.
async fn rollback_org(reg: &Registry, org: &str, who: Actor<'_>) -> Result<Outcome<RolledBack>> {
    check_name("org", org)?;
    let pins = reg.pins().await?;
    let Some(pin) = pins.iter().find(|p| p.org == org) else {
        return Err(crate::error::LabError::usage(
            format!("unknown org `{org}`"),
            "pin it first: `canary pin --org ORG --channel stable`",
        ));
    };
    let Some(current) = effective(reg, Some(pin)).await? else {
        return refuse(reg, who, org, format!("org `{org}` runs nothing yet")).await;
    };
    let history = reg.known_good(&pin.channel).await?;
    let previous = match history.iter().position(|r| r.build_id == current) {
        Some(i) => history.get(i + 1),
        None => history.first(),
    };
    let Some(previous) = previous else {
        return refuse(
            reg,
            who,
            org,
            format!(
                "channel `{}` has no known-good build older than the one org `{org}` runs",
                pin.channel
            ),
        )
        .await;
    };
    let text = format!("{org}: {current} -> {}", previous.build_id);
    reg.set_pin(
        org,
        &pin.channel,
        Some(&previous.build_id),
        Some(&current),
        PinChange::Rollback,
        rolled_back(
            who,
            &text,
            serde_json::json!({"from": current, "to": previous.build_id}),
        ),
    )
    .await?;
    Ok(Outcome::Done(RolledBack {
        target: org.to_string(),
        from: current,
        to: previous.build_id.clone(),
    }))
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Forgotten {
    pub build: BuildId,
    /// Case results deleted with it.
    pub results: u64,
}

/// Deletes a build and its results, unless a channel keeps it for rollback (its last two
/// known-good builds) or an org is pinned to it. Refusals are audited with every reason.
/// The builds the fleet may need at once, each with why: the last two known-good builds of every
/// channel (kept for rollback) and every org's pinned build.
pub async fn held(reg: &Registry) -> Result<Vec<(BuildId, String)>> {
    let mut out = Vec::new();
    for channel in reg.channels().await? {
        for r in reg.known_good(&channel).await?.into_iter().take(2) {
            out.push((
                r.build_id,
                format!("it is one of the last two known-good builds of `{channel}` (kept for rollback)"),
            ));
        }
    }
    for p in reg.pins().await? {
        if let Some(b) = p.pinned_build_id {
            out.push((b, format!("org `{}` is pinned to it", p.org)));
        }
    }
    Ok(out)
}

pub async fn forget(reg: &Registry, build: &str, who: Actor<'_>) -> Result<Outcome<Forgotten>> {
    let id = reg.resolve_build(build).await?;
    let why: Vec<String> = held(reg)
        .await?
        .into_iter()
        .filter(|(b, _)| *b == id)
        .map(|(_, why)| why)
        .collect();
    if !why.is_empty() {
        reg.audit(Audit {
            actor: who.name,
            action: "forget",
            target: &id,
            decision: "refused",
            reason: &why.join("; "),
            evidence: serde_json::json!({"reasons": why}),
        })
        .await?;
        return Ok(Outcome::Refused(why));
    }
    let results = reg
        .forget_build(
            &id,
            Audit {
                actor: who.name,
                action: "forget",
                target: &id,
                decision: "done",
                reason: who.reason,
                evidence: serde_json::json!({}),
            },
        )
        .await?;
    Ok(Outcome::Done(Forgotten { build: id, results }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::BuildInfo;

    const WHO: Actor<'static> = Actor {
        name: "test",
        reason: "unit test",
    };

    async fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path().join("r.db").to_str().unwrap()).await.unwrap();
        (dir, reg)
    }

    fn build_id(n: u8) -> BuildId {
        format!("sha256:{}", format!("{n:02x}").repeat(32)).parse().unwrap()
    }

    async fn build(reg: &Registry, n: u8) -> BuildId {
        let id = build_id(n);
        let info = BuildInfo::from_image(&id, &format!("canary-lab/build:{n}"), &Default::default());
        reg.record_build(&info).await.unwrap();
        id
    }

    async fn released(reg: &Registry, channel: &str, id: &str) {
        reg.release(
            &channel.parse().unwrap(),
            &id.parse().unwrap(),
            ReleaseKind::Promote,
            Audit {
                actor: "test",
                action: "promote",
                target: id,
                decision: "promoted",
                reason: "",
                evidence: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    }

    /// Pins the org `acme` as `pin` would for an operator.
    async fn pin_acme(reg: &Registry, channel: Option<&str>, build: Option<&str>) -> Outcome<Pinned> {
        let channel: Option<Channel> = channel.map(|c| c.parse().unwrap());
        let request = PinRequest {
            org: "acme",
            channel: channel.as_ref(),
            build,
        };
        pin(reg, &request, WHO).await.unwrap()
    }

    async fn refusals(reg: &Registry, action: &str) -> usize {
        reg.audit_log(100)
            .await
            .unwrap()
            .iter()
            .filter(|a| a.action == action && a.decision == "refused")
            .count()
    }

    /// A build whose labels name the CLIs `runtimes`, with a passing golden path on repo `a`.
    async fn judged_build(reg: &Registry, n: u8, runtimes: &str) -> BuildId {
        let id = build_id(n);
        let labels = [(crate::builds::labels::RUNTIMES.to_string(), runtimes.to_string())].into();
        let info = BuildInfo::from_image(&id, &format!("canary-lab/build:{n}"), &labels);
        let rows = [(format!("run-{n}"), "golden-path".to_string(), "a".to_string(), "pass")];
        reg.seed_results(&info, &rows).await.unwrap();
        id
    }

    #[tokio::test]
    async fn a_build_bundling_a_cli_the_lab_does_not_run_is_blocked_and_the_cli_named() {
        let (_d, reg) = registry().await;
        let promote_to_stable = |build: &BuildId| {
            let build = build.to_string();
            let reg = reg.clone();
            async move {
                let p = Promotion {
                    build: &build,
                    channel: &Channel::stable(),
                    bundles: &[],
                    dry_run: true,
                    actor: "test",
                    reason: "",
                };
                promote(&reg, &Policy::builtin(), &["a".into()], &p).await.unwrap().1
            }
        };
        let known = judged_build(&reg, 1, "codex=0.163.0").await;
        let d = promote_to_stable(&known).await;
        assert!(d.allowed, "{:?}", d.unmet);
        let unknown = judged_build(&reg, 2, "codex=0.163.0,cursor=1.0").await;
        let d = promote_to_stable(&unknown).await;
        assert!(!d.allowed);
        assert_eq!(
            d.unmet,
            ["the build bundles `cursor`, a CLI this lab does not run, so no canary result can judge it"]
        );
    }

    #[tokio::test]
    async fn rollback_returns_to_the_previous_build_and_refusals_are_audited() {
        let (_d, reg) = registry().await;
        let (a, b) = (build(&reg, 1).await, build(&reg, 2).await);
        // Nothing to return to: refused, and the refusal is in the audit log.
        let r = rollback(&reg, RollbackTarget::Channel(&Channel::beta()), WHO)
            .await
            .unwrap();
        assert!(matches!(r, Outcome::Refused(_)));
        assert_eq!(refusals(&reg, "rollback").await, 1);
        released(&reg, "beta", &a).await;
        released(&reg, "beta", &b).await;
        let r = rollback(&reg, RollbackTarget::Channel(&Channel::beta()), WHO)
            .await
            .unwrap();
        assert_eq!(
            r,
            Outcome::Done(RolledBack {
                target: "beta".into(),
                from: b.clone(),
                to: a.clone()
            })
        );
        assert_eq!(reg.known_good(&Channel::beta()).await.unwrap()[0].build_id, a);
        // An org on beta runs `a` now; it has nothing older on its channel.
        pin_acme(&reg, Some("beta"), None).await;
        let r = rollback(&reg, RollbackTarget::Org("acme"), WHO).await.unwrap();
        assert!(matches!(r, Outcome::Done(ref x) if x.from == a && x.to == b), "{r:?}");
        assert!(rollback(&reg, RollbackTarget::Org("nobody"), WHO).await.is_err());
        assert!(rollback(&reg, RollbackTarget::Org("\u{1b}[2J"), WHO).await.is_err());
    }

    #[tokio::test]
    async fn only_known_good_builds_are_pinned_and_kept_builds_are_not_forgotten() {
        let (_d, reg) = registry().await;
        let (a, b, c) = (build(&reg, 1).await, build(&reg, 2).await, build(&reg, 3).await);
        let r = pin_acme(&reg, None, Some(&a)).await;
        assert!(matches!(r, Outcome::Refused(ref why) if why[0].contains("never promoted")));
        assert_eq!(refusals(&reg, "pin").await, 1);
        assert!(reg.pins().await.unwrap().is_empty(), "a refused pin writes no pin");
        for id in [&a, &b, &c] {
            released(&reg, "stable", id).await;
        }
        let r = pin_acme(&reg, None, Some(&a)).await;
        assert!(matches!(r, Outcome::Done(ref p) if p.runs.as_deref() == Some(a.as_str()) && p.channel == "stable"));
        // a: pinned; c and b: stable's last two. None can go.
        for id in [&a, &b, &c] {
            let r = forget(&reg, id, WHO).await.unwrap();
            assert!(matches!(r, Outcome::Refused(_)), "{id}: {r:?}");
        }
        assert_eq!(refusals(&reg, "forget").await, 3);
        pin_acme(&reg, None, None).await;
        let r = forget(&reg, &a, WHO).await.unwrap();
        assert!(matches!(r, Outcome::Done(ref f) if f.build == a), "{r:?}");
        assert!(reg.resolve_build(&a).await.is_err());
    }

    #[test]
    fn names_that_do_not_print_as_themselves_are_refused() {
        for good in ["acme", "beta", "org-1.eu_west"] {
            assert!(check_name("org", good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "a\nb", "\u{1b}[2J", "é", &"x".repeat(65)] {
            assert!(check_name("org", bad).is_err(), "{bad:?}");
        }
    }
}
