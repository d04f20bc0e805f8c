//! Customer-hosted runners (seed §4.2, §6.2–6.3): what the control plane offers a runner it does
//! not manage (`GET /v1/updates`), build manifests signed through TUF metadata, and the rules a host applies before it
//! installs a build (`canary-runner update plan`). Nothing here upgrades anything: the host does
//! that only when its admin runs `canary-runner update upgrade`.
//!
//! - [`tuf`]: the host's verification of The Update Framework metadata (the control plane's
//!   publication and keys live in the lab crate's `update`).
//! - [`host`]: the runner side: versioned install folders, the atomic switch, smoke sessions,
//!   automatic switch back, the audit history.

pub mod host;
pub mod tuf;

/// The largest artifact served (a Claude Code wheel is about 100 MB).
pub const MAX_ARTIFACT: u64 = 1024 * 1024 * 1024;

use canary_contract::build::Component;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the control plane signs (a TUF target, `tuf`): one build as offered for a channel or an
/// org's pin. The host installs from this document only, after TUF verified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildManifest {
    /// The build's id (its image digest in the lab).
    pub build: canary_contract::BuildId,
    pub image: String,
    /// Runner and CLIs, each with the digest of the artifact the lab judged.
    pub components: Vec<Component>,
    /// What the canary found for this build.
    pub evidence: Evidence,
    /// The channel (or `pin:ORG`) it is offered for.
    pub offered_for: String,
    /// What the control plane says of this offer: for whom, how good. A host requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<Statement>,
}

/// The signed part of an offer beyond the build itself: for whom, how good, under which policy,
/// and how to go back. Freshness and versions are TUF's (`tuf`): the timestamp expires, and a
/// host refuses metadata older than what it trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub org: Option<String>,
    pub channel: canary_contract::Channel,
    pub status: Status,
    pub require_signed: bool,
    /// How to go back, signed (never a script to pipe into a shell).
    pub rollback: Vec<String>,
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
        self.components
            .iter()
            .find(|c| c.name == canary_contract::build::RUNNER)
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

canary_contract::words!(Status, "a traffic light", { Green => "green", Yellow => "yellow", Red => "red" });

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
pub use canary_contract::build::Change;

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

/// Where an offered build comes from: the channel's current build, or the build the org is
/// pinned to (which a host does not upgrade away from by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferSource {
    Channel,
    Pin,
}

canary_contract::words!(OfferSource, "an offer's source", { Channel => "channel", Pin => "pin" });

/// What the control plane answers `GET /v1/updates`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    pub runner: String,
    pub org: Option<String>,
    pub channel: canary_contract::Channel,
    pub source: OfferSource,
    pub status: Status,
    pub reasons: Vec<String>,
    /// The build to run; `None` when the channel has none.
    pub build: Option<canary_contract::BuildId>,
    /// From what the runner last reported (its heartbeat) to the offered build.
    pub changes: Vec<Change>,
    /// The canary reports behind the verdict.
    pub reports: Vec<String>,
    /// How to go back, for an admin whose runner cannot do it itself.
    pub rollback: Vec<String>,
    /// The org's policy requires signed builds: the host refuses an unsigned or mis-signed one
    /// even when its own configuration does not ask.
    #[serde(default)]
    pub require_signed: bool,
}

/// The host's answer before it changes anything.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub from: Option<canary_contract::BuildId>,
    pub to: canary_contract::BuildId,
    pub changes: Vec<Change>,
    /// Bundles whose `runtime_compatibility` excludes the target runner: the upgrade is blocked.
    pub blocked: Vec<String>,
    /// Bundles that run on the target with warnings.
    pub warnings: Vec<String>,
    /// One smoke session per CLI of the target.
    pub smoke: Vec<String>,
    /// The build the host switches back to if a smoke session fails.
    pub rollback_point: Option<canary_contract::BuildId>,
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
                    crate::compat::Compatibility::Compatible => {}
                    crate::compat::Compatibility::CompatibleWithWarnings => {
                        warnings.push(format!("{}: {}", decl.file, r.warnings.join("; ")))
                    }
                    crate::compat::Compatibility::Blocked => {
                        blocked.push(format!("{}: {}", decl.file, r.reasons.join("; ")))
                    }
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
            build: build.parse().expect("a build id"),
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
        let from = manifest("sha256:b1", "0.1.0+aaaa", "2.1.329");
        let to = manifest("sha256:b2", "0.1.0+bbbb", "2.1.330");
        let p = plan(Some(&from), &to, std::slice::from_ref(&ok));
        assert!(p.blocked.is_empty(), "{:?}", p.blocked);
        assert_eq!(p.rollback_point.as_deref(), Some("sha256:b1"));
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

    /// A verified offer document holds only for the org and channel it was issued for: a
    /// document of another org, another channel or without a statement is refused; a pin of the
    /// host's org to another channel holds when the host may follow that channel.
    #[test]
    fn a_signed_offer_is_bound_to_its_org_and_channel() {
        use super::tuf::bind;
        use canary_contract::Channel;
        let statement = Statement {
            org: Some("acme".into()),
            channel: Channel::stable(),
            status: Status::Green,
            require_signed: true,
            rollback: vec!["canary-runner update rollback".into()],
        };
        let mut m = manifest("sha256:b1", "0.1.0", "2.1.330");
        m.statement = Some(statement.clone());
        let allowed = Channel::built_in();
        let (stable, beta) = (&Channel::stable(), &Channel::beta());
        let says = |r: std::result::Result<(), String>, what: &str| {
            let e = r.unwrap_err();
            assert!(e.contains(what), "{e}");
        };
        assert_eq!(bind(&m, Some("acme"), stable, &allowed), Ok(()));
        says(bind(&m, Some("acme"), beta, &allowed), "issued for channel stable");
        says(bind(&m, Some("globex"), stable, &allowed), "issued for org acme");
        says(bind(&m, None, stable, &allowed), "issued for org acme");
        let mut bare = m.clone();
        bare.statement = None;
        says(bind(&bare, Some("acme"), stable, &allowed), "no statement");
        let mut pinned = m.clone();
        pinned.offered_for = "pin:acme".into();
        pinned.statement = Some(Statement {
            channel: Channel::beta(),
            ..statement
        });
        assert_eq!(bind(&pinned, Some("acme"), stable, &allowed), Ok(()));
        says(
            bind(&pinned, Some("acme"), stable, &[Channel::stable()]),
            "issued for channel beta",
        );
    }
}
