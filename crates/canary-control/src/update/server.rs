//! The control plane's side of customer-hosted runners: the offer for one runner, assembled from
//! its last heartbeat, its org's pin, the channels' known-good history and the canary evidence;
//! and the artifacts (wheels, runner binaries) the lab judged, served by digest.

use super::{BuildManifest, Evidence, Offer, OfferSource, StatusFacts};
use crate::error::{LabError, Result};
use crate::registry::{Registry, ReleaseKind, ResultStatus};
use canary_contract::Channel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What `GET /v1/updates?runner=ID` answers for `runner`: the offer for its org and channel
/// (from its last heartbeat) and the changes from the versions it reported. `signing`: the
/// control plane publishes TUF metadata (`canary serve --tuf`).
pub async fn offer(reg: &Registry, runner: &str, signing: bool, orgs: &crate::orgs::OrgPolicies) -> Result<Offer> {
    let beat = reg
        .heartbeats()
        .await?
        .into_iter()
        .find(|h| h.runner_id == runner)
        .ok_or_else(|| {
            LabError::usage(
                format!("runner {runner} has sent no heartbeat"),
                "`canary-runner update check` sends one before it asks",
            )
        })?;
    let (mut offer, manifest) = offer_for(reg, beat.org.as_deref(), beat.channel.as_ref(), signing, orgs).await?;
    offer.runner = runner.to_string();
    if let Some(m) = manifest {
        offer.changes = super::changes(&beat.versions, &m.components);
    }
    Ok(offer)
}

/// The channel a host follows (its org's pin's, else the one it asked for, else stable) and
/// the build it should run there, with where that came from (`pin` or `channel`).
async fn target(
    reg: &Registry,
    org: Option<&str>,
    channel: Option<&Channel>,
) -> Result<(Channel, Option<canary_contract::BuildId>, OfferSource)> {
    let pin = match org {
        Some(org) => reg.pins().await?.into_iter().find(|p| p.org == org),
        None => None,
    };
    let channel = pin
        .as_ref()
        .map(|p| p.channel.clone())
        .or_else(|| channel.cloned())
        .unwrap_or_else(Channel::stable);
    let (target, source) = match pin.as_ref().and_then(|p| p.pinned_build_id.clone()) {
        Some(b) => (Some(b), OfferSource::Pin),
        None => (
            reg.known_good(&channel).await?.first().map(|r| r.build_id.clone()),
            OfferSource::Channel,
        ),
    };
    Ok((channel, target, source))
}

/// How many of a build's latest results fail (anything but pass or flaky) and are flaky.
fn failing_and_flaky(cells: &[crate::registry::ResultRow]) -> (i64, i64) {
    let count = |f: &dyn Fn(ResultStatus) -> bool| cells.iter().filter(|c| f(c.status)).count() as i64;
    (
        count(&|s| !matches!(s, ResultStatus::Pass | ResultStatus::Flaky)),
        count(&|s| s == ResultStatus::Flaky),
    )
}

/// What the offered build's results show: how many, how many pass, from which runs.
fn evidence(cells: &[crate::registry::ResultRow]) -> Evidence {
    let mut runs: Vec<String> = cells.iter().map(|c| c.run_id.clone()).collect();
    runs.sort();
    runs.dedup();
    Evidence {
        results: cells.len() as i64,
        passing: cells.iter().filter(|c| c.status == ResultStatus::Pass).count() as i64,
        runs,
    }
}

/// The channels a rollback took away from `target` (newest first: a rollback entry restores a
/// build; the entry after it was left).
async fn rolled_back_on(reg: &Registry, target: &canary_contract::BuildId) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in reg.channels().await? {
        let history = reg.releases(Some(&c), 1000).await?;
        if history
            .windows(2)
            .any(|w| w[0].kind == ReleaseKind::Rollback && w[1].build_id == *target && w[0].build_id != *target)
        {
            out.push(c.to_string());
        }
    }
    Ok(out)
}

/// The offer for hosts of `org` (if any) following `channel` (stable when none), and the
/// manifest a host would install (with its statement), when there is a build to offer.
pub async fn offer_for(
    reg: &Registry,
    org: Option<&str>,
    channel: Option<&Channel>,
    signing: bool,
    orgs: &crate::orgs::OrgPolicies,
) -> Result<(Offer, Option<BuildManifest>)> {
    let (channel, target, source) = target(reg, org, channel).await?;
    let stable_current = reg
        .known_good(&Channel::stable())
        .await?
        .first()
        .map(|r| r.build_id.clone());
    let mut facts = StatusFacts {
        channel: &channel,
        target: target.as_deref(),
        pinned: source == OfferSource::Pin,
        stable_current: stable_current.as_deref(),
        ..Default::default()
    };
    let mut offer = Offer {
        runner: String::new(),
        org: org.map(String::from),
        channel: channel.clone(),
        source,
        status: super::Status::Red,
        reasons: vec![],
        build: target.clone(),
        changes: vec![],
        reports: vec![],
        rollback: rollback_lines(),
        require_signed: org.is_some_and(|o| orgs.get(o).require_signed),
    };
    let Some(target) = target.clone() else {
        (offer.status, offer.reasons) = super::status(&facts);
        return Ok((offer, None));
    };
    let cells = reg.latest_cells(&target).await?;
    (facts.failing, facts.flaky) = failing_and_flaky(&cells);
    facts.rolled_back_on = rolled_back_on(reg, &target).await?;
    (offer.status, offer.reasons) = super::status(&facts);
    let row = reg.build_row(&target).await?;
    let components = row
        .as_ref()
        .and_then(|r| r.manifest.as_ref())
        .map(|m| m.components.clone())
        .unwrap_or_default();
    if components.is_empty() {
        offer.status = super::Status::Red;
        offer
            .reasons
            .push("the build has no manifest of components: it cannot be installed".into());
        return Ok((offer, None));
    }
    let evidence = evidence(&cells);
    offer.reports = evidence
        .runs
        .iter()
        .map(|r| format!("/reports/{r}/report.html"))
        .collect();
    if !signing {
        offer.status = super::Status::Red;
        offer.reasons.push(
            "this control plane publishes no signed update metadata (canary serve --tuf DIR --online-key FILE): hosts install nothing unsigned".into(),
        );
    }
    let manifest = BuildManifest {
        build: target.clone(),
        image: row.as_ref().map(pull_by).unwrap_or_default(),
        components,
        evidence,
        offered_for: match (source, org) {
            (OfferSource::Pin, Some(org)) => format!("pin:{org}"),
            _ => channel.to_string(),
        },
        statement: Some(super::Statement {
            org: offer.org.clone(),
            channel: offer.channel.clone(),
            status: offer.status,
            require_signed: offer.require_signed,
            rollback: offer.rollback.clone(),
        }),
    };
    Ok((offer, Some(manifest)))
}

/// What a host pulls a build by: its pushed digest reference when it was published, else the
/// lab's own name for it.
fn pull_by(row: &crate::registry::BuildRow) -> String {
    row.pushed_ref
        .as_ref()
        .map_or_else(|| row.image_ref.clone(), |p| p.to_string())
}

/// The offer documents a control plane publishes: one per channel, and one per channel for each
/// org with a pin or a policy (an org without either gets its channel's document).
pub async fn documents(reg: &Registry, orgs: &crate::orgs::OrgPolicies) -> Result<Vec<super::tuf::Doc>> {
    let mut channels: std::collections::BTreeSet<Channel> = reg.channels().await?.into_iter().collect();
    channels.extend(Channel::built_in());
    let mut with_own: std::collections::BTreeSet<String> = reg.pins().await?.into_iter().map(|p| p.org).collect();
    with_own.extend(orgs.names());
    let mut docs = Vec::new();
    let mut add = |org: Option<&str>, channel: &Channel, m: BuildManifest| {
        docs.push(super::tuf::Doc {
            org: org.map(String::from),
            channel: channel.clone(),
            body: serde_json::to_string(&m).expect("json"),
        })
    };
    for ch in channels.iter().filter(|c| super::tuf::fit_for_target(c)) {
        if let (_, Some(m)) = offer_for(reg, None, Some(ch), true, orgs).await? {
            add(None, ch, m);
        }
        for org in with_own.iter().filter(|o| super::tuf::fit_for_target(o)) {
            if let (_, Some(m)) = offer_for(reg, Some(org), Some(ch), true, orgs).await? {
                add(Some(org), ch, m);
            }
        }
    }
    Ok(docs)
}

/// The notice an admin gets when `offer` finds its runner behind: an offered build that is not
/// red and differs from what the runner reports. `None`: up to date, or nothing it should take.
pub fn behind(offer: &Offer) -> Option<crate::registry::Notice> {
    let build: canary_contract::BuildId = offer.build.as_deref()?.parse().ok()?;
    if offer.status == super::Status::Red || offer.changes.is_empty() {
        return None;
    }
    Some(crate::registry::Notice {
        runner_id: offer.runner.clone(),
        build_id: build,
        org: offer.org.clone(),
        channel: offer.channel.clone(),
        status: offer.status.as_str().into(),
        changes: serde_json::to_value(&offer.changes).expect("json"),
        noticed_at: String::new(),
        delivery: None,
    })
}

/// Judges whether `runner` (after its heartbeat or update check) is behind what it is offered:
/// records a new notice and returns it (to be delivered), or clears the runner's notices when it
/// caught up. A runner already noticed behind the same build returns `None`.
pub async fn notice(
    reg: &Registry,
    runner: &str,
    signing: bool,
    orgs: &crate::orgs::OrgPolicies,
) -> Result<Option<crate::registry::Notice>> {
    let offer = offer(reg, runner, signing, orgs).await?;
    match behind(&offer) {
        None => {
            reg.clear_notices(runner).await?;
            Ok(None)
        }
        Some(n) => Ok(reg.notice_behind(&n).await?.then_some(n)),
    }
}

fn rollback_lines() -> Vec<String> {
    vec![
        "on the runner's host: canary-runner update rollback".into(),
        "to an older installed build: canary-runner update rollback --to BUILD".into(),
        "if canary-runner itself is broken: in the install folder, point `current` at the build `previous` names: ln -sfn \"$(readlink previous)\" current".into(),
    ]
}

/// The artifacts the lab judged, found by their SHA-256: CLI wheels in the lab's wheel cache,
/// files in `<cache>/artifacts`, and the reference runner binary beside `canary`. The index is
/// rebuilt on a miss, at most every few seconds; a file's digest is computed once per size and
/// modification time.
pub struct Artifacts {
    roots: Vec<PathBuf>,
    files: Vec<PathBuf>,
    state: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    scanned: Option<Instant>,
    by_digest: HashMap<String, PathBuf>,
    known: HashMap<PathBuf, (u64, std::time::SystemTime, String)>,
}

pub use canary_runner::update::MAX_ARTIFACT;

impl Artifacts {
    pub fn new(cache_dir: &Path) -> Artifacts {
        let runner = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("canary-runner")));
        Artifacts {
            roots: vec![cache_dir.join("wheels"), cache_dir.join("artifacts")],
            files: runner.into_iter().collect(),
            state: Mutex::new(Index::default()),
        }
    }

    /// The file whose SHA-256 is `hex` (64 lowercase hex digits), if the lab has it.
    pub fn find(&self, hex: &str) -> Option<PathBuf> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        let mut state = self.state.lock().expect("artifact index");
        if let Some(p) = state.by_digest.get(hex).filter(|p| p.is_file()) {
            return Some(p.clone());
        }
        if state.scanned.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
            return None;
        }
        self.rescan(&mut state);
        state.by_digest.get(hex).cloned()
    }

    fn rescan(&self, state: &mut Index) {
        let mut candidates = self.files.clone();
        for root in &self.roots {
            let Ok(entries) = std::fs::read_dir(root) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    if let Ok(inner) = std::fs::read_dir(&p) {
                        candidates.extend(inner.flatten().map(|e| e.path()));
                    }
                } else {
                    candidates.push(p);
                }
            }
        }
        let mut by_digest = HashMap::new();
        for p in candidates {
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if !meta.is_file() || meta.len() > MAX_ARTIFACT {
                continue;
            }
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            let digest = match state.known.get(&p) {
                Some((len, t, d)) if *len == meta.len() && *t == mtime => d.clone(),
                _ => {
                    let Ok(d) = sha256_file(&p) else { continue };
                    state.known.insert(p.clone(), (meta.len(), mtime, d.clone()));
                    d
                }
            };
            by_digest.insert(digest, p);
        }
        state.by_digest = by_digest;
        state.scanned = Some(Instant::now());
    }
}

/// The SHA-256 of a file, hex, read in blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_found_by_digest_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = dir.path().join("wheels/pkg");
        std::fs::create_dir_all(&wheels).unwrap();
        std::fs::write(wheels.join("pkg-1.0-py3-none-any.whl"), b"wheel bytes").unwrap();
        let a = Artifacts::new(dir.path());
        let digest = sha256_file(&wheels.join("pkg-1.0-py3-none-any.whl")).unwrap();
        assert_eq!(a.find(&digest).unwrap(), wheels.join("pkg-1.0-py3-none-any.whl"));
        assert!(a.find("../../etc/passwd").is_none());
        assert!(a.find(&digest.to_uppercase()).is_none(), "lowercase hex only");
        assert!(a.find(&"0".repeat(64)).is_none());
    }

    fn offer(status: super::super::Status, changes: Vec<super::super::Change>) -> Offer {
        Offer {
            runner: "host-1".into(),
            org: Some("acme".into()),
            channel: canary_contract::Channel::stable(),
            source: OfferSource::Channel,
            status,
            reasons: vec![],
            build: Some("sha256:b".parse().unwrap()),
            changes,
            reports: vec![],
            rollback: vec![],
            require_signed: false,
        }
    }

    #[test]
    fn a_runner_is_behind_only_when_a_build_it_should_take_differs_from_what_it_runs() {
        use super::super::{Change, Status};
        let change = vec![Change {
            component: "claude-code".into(),
            from: Some("2.1.329".into()),
            to: Some("2.1.330".into()),
        }];
        let n = behind(&offer(Status::Green, change.clone())).expect("behind a green build");
        assert_eq!(
            (n.build_id.as_str(), n.status.as_str(), n.channel.as_str()),
            ("sha256:b", "green", "stable")
        );
        assert_eq!(n.changes[0]["to"], "2.1.330");
        assert!(behind(&offer(Status::Yellow, change.clone())).is_some());
        assert!(
            behind(&offer(Status::Red, change.clone())).is_none(),
            "a red build is not offered"
        );
        assert!(behind(&offer(Status::Green, vec![])).is_none(), "up to date");
        let mut none = offer(Status::Green, change);
        none.build = None;
        assert!(behind(&none).is_none(), "nothing to run");
    }

    #[tokio::test]
    async fn a_runner_behind_is_noticed_once_per_build_and_cleared_when_it_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&format!("sqlite://{}", dir.path().join("r.db").display()))
            .await
            .unwrap();
        let mut n = behind(&offer(
            super::super::Status::Green,
            vec![super::super::Change {
                component: "claude-code".into(),
                from: None,
                to: Some("2.1.330".into()),
            }],
        ))
        .unwrap();
        assert!(reg.notice_behind(&n).await.unwrap(), "new");
        assert!(!reg.notice_behind(&n).await.unwrap(), "the same build again: not new");
        assert_eq!(reg.open_notices().await.unwrap().len(), 1);
        n.build_id = "sha256:c".parse().unwrap();
        assert!(reg.notice_behind(&n).await.unwrap(), "a newer offer is new");
        let open = reg.open_notices().await.unwrap();
        assert_eq!(
            open.iter().map(|o| o.build_id.as_str()).collect::<Vec<_>>(),
            ["sha256:c"],
            "only the newest is open"
        );
        reg.set_notice_delivery("host-1", &"sha256:c".parse().unwrap(), "webhook: delivered")
            .await
            .unwrap();
        assert_eq!(
            reg.open_notices().await.unwrap()[0].delivery.as_deref(),
            Some("webhook: delivered")
        );
        assert_eq!(reg.clear_notices("host-1").await.unwrap(), 1);
        assert!(reg.open_notices().await.unwrap().is_empty());
        let audit = reg.audit_log(10).await.unwrap();
        assert_eq!(
            audit.iter().filter(|a| a.action == "runner.behind").count(),
            2,
            "audited once per build"
        );
        assert!(
            audit[0].reason.contains("claude-code (none) → 2.1.330"),
            "{}",
            audit[0].reason
        );
    }
}
