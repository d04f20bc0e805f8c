//! Customer-hosted runners (seed §4.2, §6.2–6.3): what the control plane offers a runner it does
//! not manage (`GET /v1/updates`), signed build manifests, and the rules a host applies before it
//! installs a build (`canary-runner update plan`). Nothing here upgrades anything: the host does
//! that only when its admin runs `canary-runner update upgrade`.
//!
//! - [`sign`]: ed25519 keys and signatures over the manifest text.
//! - [`server`]: the offer and the artifacts, assembled from the registry.
//! - [`host`]: the runner side: versioned install folders, the atomic switch, smoke sessions,
//!   automatic switch back, the audit history.

pub mod host;
pub mod server;
pub mod sign;

use crate::builds::Component;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the control plane signs: one build as offered for a channel or an org's pin. The host
/// installs from this text only, after checking its signature, never from unsigned fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildManifest {
    /// The build's id (its image digest in the lab).
    pub build: String,
    pub image: String,
    /// Runner and CLIs, each with the digest of the artifact the lab judged.
    pub components: Vec<Component>,
    /// What the canary found for this build.
    pub evidence: Evidence,
    /// The channel (or `pin:ORG`) it is offered for.
    pub offered_for: String,
    /// What the control plane says of this offer, bound by the signature: for whom, how good,
    /// when it was issued and until when it holds. Absent in manifests from before it existed;
    /// a host that checks signatures requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<Statement>,
}

/// The signed part of an offer beyond the build itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub org: Option<String>,
    pub channel: String,
    pub status: Status,
    pub require_signed: bool,
    /// RFC 3339; the offer is refused after `expires_at` (a control plane that stops answering
    /// with fresh offers cannot freeze a host on an old one).
    pub issued_at: String,
    pub expires_at: String,
    /// Milliseconds of `issued_at`: a host refuses an offer older than one it already accepted.
    pub version: i64,
    /// How to go back, signed (never a script to pipe into a shell).
    pub rollback: Vec<String>,
}

/// How long a signed offer holds.
pub const OFFER_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Why a verified offer does not hold for this host, given the host's org and channels, the
/// time, and the newest offer version it accepted before. Checks that the offer's unsigned
/// fields say what was signed, that it was issued for this host's org and channel (or a pin of
/// its org to an allowed channel), that it has not expired, and that it is not older than one
/// already accepted (a replay).
pub fn bind(
    m: &BuildManifest,
    offer: &Offer,
    host_org: Option<&str>,
    host_channel: &str,
    allowed: &[String],
    now: jiff::Timestamp,
    last_version: i64,
) -> std::result::Result<(), String> {
    let Some(s) = &m.statement else {
        return Err("the signed manifest carries no statement (org, channel, status, expiry): the control plane is older than this host, or the statement was stripped".into());
    };
    if s.status != offer.status
        || s.require_signed != offer.require_signed
        || s.channel != offer.channel
        || s.org != offer.org
        || offer.build.as_deref() != Some(m.build.as_str())
    {
        return Err("the offer's build, status, channel, org or signing policy differ from what was signed".into());
    }
    if s.org.as_deref() != host_org {
        return Err(format!(
            "the offer was signed for org {}, this host is of org {}",
            crate::text::clean(s.org.as_deref().unwrap_or("(none)")),
            crate::text::clean(host_org.unwrap_or("(none)"))
        ));
    }
    let pinned = host_org.is_some_and(|o| m.offered_for == format!("pin:{o}"));
    if s.channel != host_channel && !(pinned && allowed.contains(&s.channel)) {
        return Err(format!(
            "the offer was signed for channel {}, this host follows {host_channel}",
            crate::text::clean(&s.channel)
        ));
    }
    let expires: jiff::Timestamp = s
        .expires_at
        .parse()
        .map_err(|_| "the signed expiry is not a time".to_string())?;
    if expires <= now {
        return Err(format!(
            "the offer expired at {expires} (now {now}): the control plane did not send a fresh one"
        ));
    }
    if s.version < last_version {
        return Err(format!(
            "the offer (version {}) is older than one this host already accepted (version {last_version}): a replay",
            s.version
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub results: i64,
    pub passing: i64,
    /// The canary runs whose reports back the verdict.
    pub runs: Vec<String>,
}

impl BuildManifest {
    /// The exact text that is signed and verified (serde_json keeps field order).
    pub fn text(&self) -> String {
        serde_json::to_string(self).expect("manifest serializes")
    }

    pub fn runner(&self) -> Option<&Component> {
        self.components.iter().find(|c| c.name == crate::builds::RUNNER)
    }
}

/// Green: known-good on stable. Yellow: beta, a pin off stable's current, or warnings. Red: no
/// build, failing evidence, or a build a channel was rolled back from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Green,
    Yellow,
    Red,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Green => "green",
            Status::Yellow => "yellow",
            Status::Red => "red",
        }
    }
}

/// What the control plane knows about the build it would offer.
#[derive(Debug, Default)]
pub struct StatusFacts<'a> {
    /// The channel the runner follows.
    pub channel: &'a str,
    /// The build offered (the org's pin, else the channel's current build).
    pub target: Option<&'a str>,
    pub pinned: bool,
    /// Stable's current build.
    pub stable_current: Option<&'a str>,
    /// Required results of the target that fail / are flaky.
    pub failing: i64,
    pub flaky: i64,
    /// Channels that were rolled back away from the target.
    pub rolled_back_on: Vec<String>,
}

/// The traffic light and every reason for it.
pub fn status(f: &StatusFacts<'_>) -> (Status, Vec<String>) {
    let Some(target) = f.target else {
        return (Status::Red, vec![format!("no build on channel {}", f.channel)]);
    };
    let mut red = Vec::new();
    if f.failing > 0 {
        red.push(format!("{} canary results of the build fail", f.failing));
    }
    for c in &f.rolled_back_on {
        red.push(format!("channel {c} was rolled back from this build"));
    }
    if !red.is_empty() {
        return (Status::Red, red);
    }
    let mut yellow = Vec::new();
    if f.flaky > 0 {
        yellow.push(format!("{} canary results are flaky", f.flaky));
    }
    if f.stable_current != Some(target) {
        yellow.push(if f.pinned {
            "the org's pinned build is not stable's current build".to_string()
        } else {
            format!("channel {} is not stable", f.channel)
        });
    }
    if yellow.is_empty() {
        (Status::Green, vec!["known-good on stable".into()])
    } else {
        (Status::Yellow, yellow)
    }
}

/// One component's move (the same record the pipeline's notifications carry).
pub use crate::builds::Change;

/// Component by component, what moves from `installed` (name → version) to `target`.
pub fn changes(installed: &BTreeMap<String, String>, target: &[Component]) -> Vec<Change> {
    let mut out = Vec::new();
    for c in target {
        let from = installed.get(&c.name).cloned();
        if from.as_deref() != Some(c.version.as_str()) {
            out.push(Change {
                component: c.name.clone(),
                from,
                to: Some(c.version.clone()),
            });
        }
    }
    for (name, v) in installed {
        if !target.iter().any(|c| &c.name == name) {
            out.push(Change {
                component: name.clone(),
                from: Some(v.clone()),
                to: None,
            });
        }
    }
    out
}

/// What the control plane answers `GET /v1/updates`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    pub runner: String,
    pub org: Option<String>,
    pub channel: String,
    /// `channel` or `pin`.
    pub source: String,
    pub status: Status,
    pub reasons: Vec<String>,
    /// The build to run; `None` when the channel has none.
    pub build: Option<String>,
    /// From what the runner last reported (its heartbeat) to the offered build.
    pub changes: Vec<Change>,
    /// The canary reports behind the verdict.
    pub reports: Vec<String>,
    /// The signed text ([`BuildManifest`]) and its signature, when the control plane signs.
    pub manifest: Option<String>,
    pub signature: Option<String>,
    pub key_id: Option<String>,
    /// How to go back, for an admin whose runner cannot do it itself.
    pub rollback: Vec<String>,
    /// The org's policy requires signed builds: the host refuses an unsigned or mis-signed one
    /// even when its own configuration does not ask.
    #[serde(default)]
    pub require_signed: bool,
}

/// Why a host will not install a build, if it will not. A signature is checked before anything
/// is downloaded: `require_signed` refuses a missing one, and a bad one is refused always.
pub fn check_signature(
    offer: &Offer,
    trusted: Option<&sign::Trusted>,
    require_signed: bool,
) -> std::result::Result<Option<BuildManifest>, String> {
    let Some(text) = &offer.manifest else {
        return Err("the control plane offered no build manifest".into());
    };
    if text.len() > 1024 * 1024 {
        return Err("the build manifest is larger than 1 MiB".into());
    }
    let manifest: BuildManifest =
        serde_json::from_str(text).map_err(|e| format!("the build manifest is not valid: {e}"))?;
    match (&offer.signature, trusted) {
        (Some(sig), Some(key)) => {
            if !key.verify(text, sig) {
                return Err(format!(
                    "the build manifest's signature does not verify with the trusted key {} (signed by {})",
                    key.id(),
                    offer.key_id.as_deref().unwrap_or("an unknown key")
                ));
            }
            Ok(Some(manifest))
        }
        // A host that trusts a key never accepts what that key did not sign.
        (None, _) if require_signed || offer.require_signed || trusted.is_some() => Err(format!(
            "the build is unsigned and {} requires signed builds",
            if offer.require_signed {
                "the org's policy"
            } else if require_signed {
                "this host"
            } else {
                "this host, which trusts a public key,"
            }
        )),
        (Some(_), None) if require_signed || offer.require_signed => {
            Err("the build is signed but no public key is configured to check it (update init --public-key)".into())
        }
        _ => Ok(Some(manifest)),
    }
}

/// The host's answer before it changes anything.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub from: Option<String>,
    pub to: String,
    pub changes: Vec<Change>,
    /// Bundles whose `runtime_compatibility` excludes the target runner: the upgrade is blocked.
    pub blocked: Vec<String>,
    /// Bundles that run on the target with warnings.
    pub warnings: Vec<String>,
    /// One smoke session per CLI of the target.
    pub smoke: Vec<String>,
    /// The build the host switches back to if a smoke session fails.
    pub rollback_point: Option<String>,
}

/// Installed bundles against the target's runner version (ADR 0008: a bundle whose
/// `runtime_compatibility` excludes the target blocks the upgrade; never inferred).
pub fn plan(installed: Option<&BuildManifest>, target: &BuildManifest, bundles: &[crate::compat::Declaration]) -> Plan {
    let from_versions: BTreeMap<String, String> = installed
        .map(|m| {
            m.components
                .iter()
                .map(|c| (c.name.clone(), c.version.clone()))
                .collect()
        })
        .unwrap_or_default();
    // The runner's version carries its binary digest after `+`; SemVer build metadata.
    let runtime = target
        .runner()
        .map(|c| crate::compat::runtime_version(c.version.split('+').next().unwrap_or(&c.version)));
    let mut blocked = Vec::new();
    let mut warnings = Vec::new();
    for decl in bundles {
        match &runtime {
            None => blocked.push(format!(
                "{}: the target build has no runner to check against",
                decl.file
            )),
            Some(Err(e)) => blocked.push(format!("{}: {e}", decl.file)),
            Some(Ok(v)) => {
                let r = crate::compat::check(decl, v);
                match r.verdict {
                    crate::compat::Verdict::Compatible => {}
                    crate::compat::Verdict::CompatibleWithWarnings => {
                        warnings.push(format!("{}: {}", decl.file, r.warnings.join("; ")))
                    }
                    crate::compat::Verdict::Blocked => blocked.push(format!("{}: {}", decl.file, r.reasons.join("; "))),
                }
            }
        }
    }
    Plan {
        from: installed.map(|m| m.build.clone()),
        to: target.build.clone(),
        changes: changes(&from_versions, &target.components),
        blocked,
        warnings,
        smoke: target
            .components
            .iter()
            .filter(|c| c.provider().is_some())
            .map(|c| format!("one session of {} {} against a local model stub", c.name, c.version))
            .collect(),
        rollback_point: installed.map(|m| m.build.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(name: &str, version: &str) -> Component {
        Component {
            name: name.into(),
            version: version.into(),
            package: None,
            package_version: None,
            digest: format!("sha256:{name}{version}"),
        }
    }

    fn manifest(build: &str, runner: &str, claude: &str) -> BuildManifest {
        BuildManifest {
            build: build.into(),
            image: format!("canary-lab/build:{build}"),
            components: vec![comp("runner", runner), comp("claude-code", claude)],
            evidence: Evidence {
                results: 3,
                passing: 3,
                runs: vec!["r1".into()],
            },
            offered_for: "stable".into(),
            statement: None,
        }
    }

    #[test]
    fn the_traffic_light_fails_closed() {
        let base = StatusFacts {
            channel: "stable",
            target: Some("b1"),
            stable_current: Some("b1"),
            ..Default::default()
        };
        assert_eq!(status(&base).0, Status::Green);
        assert_eq!(
            status(&StatusFacts {
                target: None,
                ..base.clone_facts()
            })
            .0,
            Status::Red
        );
        assert_eq!(
            status(&StatusFacts {
                failing: 1,
                ..base.clone_facts()
            })
            .0,
            Status::Red
        );
        assert_eq!(
            status(&StatusFacts {
                rolled_back_on: vec!["stable".into()],
                ..base.clone_facts()
            })
            .0,
            Status::Red
        );
        assert_eq!(
            status(&StatusFacts {
                flaky: 2,
                ..base.clone_facts()
            })
            .0,
            Status::Yellow
        );
        let beta = StatusFacts {
            channel: "beta",
            target: Some("b2"),
            ..base.clone_facts()
        };
        let (s, why) = status(&beta);
        assert_eq!(s, Status::Yellow);
        assert!(why[0].contains("beta"), "{why:?}");
    }

    impl StatusFacts<'_> {
        fn clone_facts(&self) -> Self {
            StatusFacts {
                channel: self.channel,
                target: self.target,
                pinned: self.pinned,
                stable_current: self.stable_current,
                failing: self.failing,
                flaky: self.flaky,
                rolled_back_on: self.rolled_back_on.clone(),
            }
        }
    }

    #[test]
    fn changes_list_every_component_that_moves_appears_or_goes() {
        let installed: BTreeMap<String, String> = [
            ("runner".to_string(), "0.1.0".to_string()),
            ("codex".into(), "0.163.0".into()),
        ]
        .into();
        let c = changes(&installed, &[comp("runner", "0.1.0"), comp("claude-code", "2.1.330")]);
        let shown: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, vec!["claude-code (none) → 2.1.330", "codex 0.163.0 → (removed)"]);
    }

    #[test]
    fn a_bundle_that_excludes_the_target_runner_blocks_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            crate::compat::load(&p).unwrap()
        };
        let ok = write("ok.yaml", "runtime_compatibility:\n  min_version: \"0.1.0\"\n");
        let old = write(
            "old.yaml",
            "runtime_compatibility:\n  min_version: \"0.0.1\"\n  max_version: \"0.0.x\"\n",
        );
        let from = manifest("b1", "0.1.0+aaaa", "2.1.329");
        let to = manifest("b2", "0.1.0+bbbb", "2.1.330");
        let p = plan(Some(&from), &to, std::slice::from_ref(&ok));
        assert!(p.blocked.is_empty(), "{:?}", p.blocked);
        assert_eq!(p.rollback_point.as_deref(), Some("b1"));
        assert_eq!(p.changes.len(), 2, "runner and claude-code move");
        assert_eq!(p.smoke.len(), 1, "one smoke session per CLI");
        let p = plan(Some(&from), &to, &[ok, old]);
        assert_eq!(p.blocked.len(), 1);
        assert!(
            p.blocked[0].contains("old.yaml") && p.blocked[0].contains("newer than max_version"),
            "{:?}",
            p.blocked
        );
    }

    #[test]
    fn signatures_are_checked_before_anything_is_installed() {
        let key = sign::Key::generate().unwrap();
        let other = sign::Key::generate().unwrap();
        let text = manifest("b1", "0.1.0", "2.1.330").text();
        let offer = |sig: Option<String>| Offer {
            runner: "r".into(),
            org: None,
            channel: "stable".into(),
            source: "channel".into(),
            status: Status::Green,
            reasons: vec![],
            build: Some("b1".into()),
            changes: vec![],
            reports: vec![],
            manifest: Some(text.clone()),
            signature: sig,
            key_id: None,
            rollback: vec![],
            require_signed: false,
        };
        let trusted = key.public();
        assert!(check_signature(&offer(Some(key.sign(&text))), Some(&trusted), true).is_ok());
        let err = check_signature(&offer(Some(other.sign(&text))), Some(&trusted), false).unwrap_err();
        assert!(
            err.contains("does not verify"),
            "a bad signature is refused even when not required"
        );
        assert!(
            check_signature(&offer(None), Some(&trusted), true)
                .unwrap_err()
                .contains("unsigned")
        );
        assert!(
            check_signature(&offer(None), Some(&trusted), false)
                .unwrap_err()
                .contains("which trusts a public key"),
            "a host with a key never takes an unsigned offer, required or not"
        );
        assert!(
            check_signature(&offer(None), None, false).is_ok(),
            "unsigned is allowed unless required"
        );
        let mut by_policy = offer(None);
        by_policy.require_signed = true;
        let err = check_signature(&by_policy, None, false).unwrap_err();
        assert!(err.contains("the org's policy requires signed builds"), "{err}");
        let mut tampered = offer(Some(key.sign(&text)));
        tampered.manifest = Some(text.replace("2.1.330", "2.1.331"));
        assert!(check_signature(&tampered, Some(&trusted), true).is_err());
    }

    /// A signed offer holds only for the host, channel and time it was issued for, and never
    /// after a newer one: replay, freeze, re-targeting and stripped fields are each refused.
    #[test]
    fn a_signed_offer_is_bound_to_its_host_channel_time_and_order() {
        let now: jiff::Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let statement = Statement {
            org: Some("acme".into()),
            channel: "stable".into(),
            status: Status::Green,
            require_signed: true,
            issued_at: "2026-12-05T11:00:00Z".into(),
            expires_at: "2026-12-06T11:00:00Z".into(),
            version: 1_000,
            rollback: vec!["canary-runner update rollback".into()],
        };
        let mut m = manifest("b1", "0.1.0", "2.1.330");
        m.statement = Some(statement.clone());
        let offer = Offer {
            runner: "r".into(),
            org: Some("acme".into()),
            channel: "stable".into(),
            source: "channel".into(),
            status: Status::Green,
            reasons: vec![],
            build: Some("b1".into()),
            changes: vec![],
            reports: vec![],
            manifest: Some(m.text()),
            signature: None,
            key_id: None,
            rollback: vec![],
            require_signed: true,
        };
        let allowed = vec!["stable".to_string(), "beta".to_string()];
        let check = |m: &BuildManifest, o: &Offer, org: Option<&str>, channel: &str, at: jiff::Timestamp, last: i64| {
            bind(m, o, org, channel, &allowed, at, last)
        };
        assert_eq!(check(&m, &offer, Some("acme"), "stable", now, 0), Ok(()));
        assert_eq!(
            check(&m, &offer, Some("acme"), "stable", now, 1_000),
            Ok(()),
            "the same offer again"
        );
        let says = |r: std::result::Result<(), String>, what: &str| {
            let e = r.unwrap_err();
            assert!(e.contains(what), "{e}");
        };
        says(check(&m, &offer, Some("acme"), "stable", now, 1_001), "a replay");
        says(
            check(
                &m,
                &offer,
                Some("acme"),
                "stable",
                "2026-12-07T00:00:00Z".parse().unwrap(),
                0,
            ),
            "expired",
        );
        says(
            check(&m, &offer, Some("acme"), "beta", now, 0),
            "signed for channel stable",
        );
        says(
            check(&m, &offer, Some("globex"), "stable", now, 0),
            "signed for org acme",
        );
        // The unsigned fields must say what was signed: a red offer dressed green, a policy
        // dropped, another channel claimed.
        for tamper in [
            |o: &mut Offer| o.status = Status::Yellow,
            |o: &mut Offer| o.require_signed = false,
            |o: &mut Offer| o.channel = "beta".into(),
            |o: &mut Offer| o.build = Some("b2".into()),
        ] {
            let mut o = offer.clone();
            tamper(&mut o);
            says(
                check(&m, &o, Some("acme"), "stable", now, 0),
                "differ from what was signed",
            );
        }
        let mut bare = m.clone();
        bare.statement = None;
        says(check(&bare, &offer, Some("acme"), "stable", now, 0), "no statement");
        // A pin of the host's org to another allowed channel holds; to a channel not allowed, not.
        let mut pinned = m.clone();
        pinned.offered_for = "pin:acme".into();
        pinned.statement = Some(Statement {
            channel: "beta".into(),
            ..statement.clone()
        });
        let mut o = offer.clone();
        o.channel = "beta".into();
        assert_eq!(check(&pinned, &o, Some("acme"), "stable", now, 0), Ok(()));
        let narrow = vec!["stable".to_string()];
        says(
            bind(&pinned, &o, Some("acme"), "stable", &narrow, now, 0),
            "signed for channel beta",
        );
    }
}
