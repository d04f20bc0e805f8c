//! The host's verification against a control plane that is honest, then hostile: every attack
//! TUF is here for is tried through the real `tough` client over an in-memory transport.

use super::*;
use crate::update::{BuildManifest, Evidence, Statement, Status};
use std::sync::Mutex;

/// Files by path under `http://cp/v1/tuf/`, as a control plane (or an attacker) serves them.
#[derive(Clone, Debug, Default)]
struct Served(Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl Served {
    fn put(&self, files: &[(String, String)]) {
        let mut m = self.0.lock().unwrap();
        for (p, b) in files {
            m.insert(p.clone(), b.clone().into_bytes());
        }
    }
    fn set(&self, path: &str, body: Vec<u8>) {
        self.0.lock().unwrap().insert(path.to_string(), body);
    }
    fn get(&self, path: &str) -> Vec<u8> {
        self.0.lock().unwrap()[path].clone()
    }
}

#[async_trait::async_trait]
impl tough::Transport for Served {
    async fn fetch(&self, url: reqwest::Url) -> std::result::Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError, TransportErrorKind};
        let path = url.path().strip_prefix("/v1/tuf/").unwrap_or("").to_string();
        match self.0.lock().unwrap().get(&path) {
            Some(b) => {
                let b = tough::Bytes::from(b.clone());
                Ok(Box::pin(futures_util::stream::once(std::future::ready(Ok(b)))))
            }
            None => Err(TransportError::new(TransportErrorKind::FileNotFound, url.as_str())),
        }
    }
}

const SERVER: &str = "http://cp";

fn doc(org: Option<&str>, channel: &str, build: &str) -> Doc {
    let m = BuildManifest {
        build: build.parse().expect("a build id"),
        image: format!("canary-lab/build:{build}"),
        components: vec![],
        evidence: Evidence {
            results: 1,
            passing: 1,
            runs: vec![],
        },
        offered_for: channel.into(),
        statement: Some(Statement {
            org: org.map(String::from),
            channel: channel.parse().unwrap(),
            status: Status::Green,
            require_signed: false,
            rollback: vec!["canary-runner update rollback".into()],
        }),
    };
    Doc {
        org: org.map(String::from),
        channel: channel.parse().unwrap(),
        body: serde_json::to_string(&m).unwrap(),
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    roots: PathBuf,
    root_keys: Vec<Signer>,
    online: Signer,
    served: Served,
    state: State,
}

fn key() -> Signer {
    Signer::new(Key::generate().unwrap())
}

fn publics(keys: &[Signer]) -> Vec<Trusted> {
    keys.iter().map(|k| k.0.public()).collect()
}

fn in_a_year() -> jiff::Timestamp {
    jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365)
}

/// A root of two keys, threshold 2, an online key, and nothing published yet.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots");
    std::fs::create_dir_all(&roots).unwrap();
    let root_keys = vec![key(), key()];
    let online = key();
    let spec = RootSpec {
        version: 1,
        root_keys: &publics(&root_keys),
        threshold: 2,
        online: &online.0.public(),
        expires: in_a_year(),
    };
    let text = sign_root(&spec, &root_keys, None).await.unwrap();
    std::fs::write(roots.join("1.root.json"), &text).unwrap();
    Setup {
        _dir: dir,
        roots,
        root_keys,
        online,
        served: Served::default(),
        state: State::default(),
    }
}

impl Setup {
    async fn publish_at(&mut self, docs: &[Doc], now: jiff::Timestamp) -> Vec<(String, String)> {
        let (files, state) = sign_publication(&self.roots, &self.online, &self.state, docs, now, &Lifetimes::default())
            .await
            .unwrap();
        self.served.put(&files);
        self.state = state;
        files
    }

    async fn publish(&mut self, docs: &[Doc]) -> Vec<(String, String)> {
        self.publish_at(docs, jiff::Timestamp::now()).await
    }

    fn host(&self) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        pin_root(home.path(), &std::fs::read(self.roots.join("1.root.json")).unwrap()).unwrap();
        home
    }
}

async fn fetch(
    home: &Path,
    served: &Served,
    org: Option<&str>,
    channel: &str,
) -> std::result::Result<Verified, String> {
    let allowed = canary_contract::Channel::built_in();
    fetch_offer(home, SERVER, served.clone(), org, &channel.parse().unwrap(), &allowed).await
}

fn says(r: std::result::Result<Verified, String>, what: &str) {
    match r {
        Ok(v) => panic!("accepted {} (wanted a refusal saying {what:?})", v.manifest.build),
        Err(e) => assert!(e.contains(what), "{e}"),
    }
}

#[tokio::test]
async fn a_host_reads_the_offer_for_its_org_or_else_its_channel() {
    let mut s = setup().await;
    s.publish(&[
        doc(None, "stable", "sha256:aaaa"),
        doc(None, "beta", "sha256:bbbb"),
        doc(Some("acme"), "stable", "sha256:cccc"),
    ])
    .await;
    let home = s.host();
    let v = fetch(home.path(), &s.served, Some("acme"), "stable").await.unwrap();
    assert_eq!(
        (v.manifest.build.as_str(), v.target.as_str()),
        ("sha256:cccc", "offers/org/acme/stable.json")
    );
    let v = fetch(home.path(), &s.served, Some("globex"), "stable").await.unwrap();
    assert_eq!(
        v.manifest.build, "sha256:aaaa",
        "an org without its own offer takes its channel's"
    );
    let v = fetch(home.path(), &s.served, None, "beta").await.unwrap();
    assert_eq!(v.manifest.build, "sha256:bbbb");
    says(
        fetch(home.path(), &s.served, None, "nightly").await,
        "offers nothing for channel nightly",
    );
    let bare = tempfile::tempdir().unwrap();
    says(fetch(bare.path(), &s.served, None, "stable").await, "no trusted root");
}

#[tokio::test]
async fn older_metadata_is_refused_once_newer_was_trusted() {
    let mut s = setup().await;
    let old = s.publish(&[doc(None, "stable", "sha256:0001")]).await;
    s.publish(&[doc(None, "stable", "sha256:0002")]).await;
    let home = s.host();
    assert_eq!(
        fetch(home.path(), &s.served, None, "stable")
            .await
            .unwrap()
            .manifest
            .build,
        "sha256:0002"
    );
    // The control plane (or a mirror) serves the first publication again.
    let replayed: Vec<_> = old.into_iter().filter(|(p, _)| p == "timestamp.json").collect();
    s.served.put(&replayed);
    says(fetch(home.path(), &s.served, None, "stable").await, "a rollback");
}

#[tokio::test]
async fn an_expired_timestamp_is_refused() {
    let mut s = setup().await;
    let two_days_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48);
    s.publish_at(&[doc(None, "stable", "sha256:0001")], two_days_ago).await;
    let home = s.host();
    says(fetch(home.path(), &s.served, None, "stable").await, "has expired");
}

#[tokio::test]
async fn files_of_two_publications_or_altered_files_are_refused() {
    let mut s = setup().await;
    let first = s.publish(&[doc(None, "stable", "sha256:0001")]).await;
    s.publish(&[doc(None, "stable", "sha256:0002")]).await;
    let home = s.host();
    // Mix and match: the newest timestamp, with the first snapshot put where it names its own.
    let snap1 = first.iter().find(|(p, _)| p == "1.snapshot.json").unwrap().1.clone();
    let honest = s.served.get("2.snapshot.json");
    s.served.set("2.snapshot.json", snap1.into_bytes());
    let r = fetch(home.path(), &s.served, None, "stable").await;
    assert!(r.is_err(), "a snapshot of another publication is refused");
    s.served.set("2.snapshot.json", honest);
    // An offer document changed after signing (its path names its digest; the bytes differ).
    let path = s
        .state
        .docs
        .get("offers/channel/stable.json")
        .map(|sha| format!("targets/{sha}.offers/channel/stable.json"))
        .unwrap();
    let text = String::from_utf8(s.served.get(&path)).unwrap().replace("0002", "0003");
    s.served.set(&path, text.into_bytes());
    says(
        fetch(home.path(), &s.served, None, "stable").await,
        "does not match the digest",
    );
}

#[tokio::test]
async fn metadata_signed_by_another_key_is_refused() {
    let mut s = setup().await;
    s.publish(&[doc(None, "stable", "sha256:0001")]).await;
    let home = s.host();
    // Someone with another key signs a publication of their own under the same root.
    let mut forged = setup().await;
    let files = forged.publish(&[doc(None, "stable", "sha256:e0e0")]).await;
    let no_root: Vec<_> = files.into_iter().filter(|(p, _)| !p.ends_with(".root.json")).collect();
    s.served.put(&no_root);
    says(
        fetch(home.path(), &s.served, None, "stable").await,
        "not signed by a threshold",
    );
}

#[tokio::test]
async fn a_document_issued_for_another_org_is_refused() {
    let mut s = setup().await;
    let mut wrong = doc(Some("globex"), "stable", "sha256:0001");
    wrong.org = Some("acme".into());
    s.publish(&[wrong]).await;
    let home = s.host();
    says(
        fetch(home.path(), &s.served, Some("acme"), "stable").await,
        "issued for org globex",
    );
}

#[tokio::test]
async fn a_rotated_root_is_followed_and_one_below_threshold_is_not() {
    let mut s = setup().await;
    s.publish(&[doc(None, "stable", "sha256:0001")]).await;
    let home = s.host();
    fetch(home.path(), &s.served, None, "stable").await.unwrap();
    let (_, _, root1) = latest_root(&s.roots).unwrap();
    let new_keys = vec![key(), key(), key()];
    let new_online = key();
    let spec = RootSpec {
        version: 2,
        root_keys: &publics(&new_keys),
        threshold: 2,
        online: &new_online.0.public(),
        expires: in_a_year(),
    };
    // One of the two old keys is not enough, and the tool says so.
    let err = sign_root(&spec, &new_keys, Some((&root1, &s.root_keys[..1])))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not meet its threshold"), "{err}");
    // Served anyway (signed by hand with one old key), a host refuses it and keeps root 1.
    {
        use tough::editor::signed::SignedRole;
        use tough::schema::KeyHolder;
        let root2 = unsigned_root(&spec).unwrap();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let by_new = SignedRole::new(
            root2.clone(),
            &KeyHolder::Root(root2.clone()),
            &sources(&new_keys),
            &rng,
        )
        .await
        .unwrap();
        let by_one_old = SignedRole::new(
            root2.clone(),
            &KeyHolder::Root(root1.signed.clone()),
            &sources(&s.root_keys[..1]),
            &rng,
        )
        .await
        .unwrap();
        let weak = by_new
            .add_old_signatures(by_one_old.signed().signatures.clone())
            .unwrap();
        s.served.set("2.root.json", weak.buffer().clone());
        let r = fetch(home.path(), &s.served, None, "stable").await;
        assert!(r.is_err(), "a root below the old threshold is refused");
        let trusted = parse_root(&std::fs::read(trust_dir(home.path()).join("root.json")).unwrap()).unwrap();
        assert_eq!(trusted.signed.version.get(), 1, "the host keeps root 1");
    }
    // A proper rotation: both old keys, two of the three new ones at least (all three here).
    let text = sign_root(&spec, &new_keys, Some((&root1, &s.root_keys))).await.unwrap();
    std::fs::write(s.roots.join("2.root.json"), &text).unwrap();
    // The old online key can no longer publish; the new one does.
    let stale = sign_publication(
        &s.roots,
        &s.online,
        &s.state,
        &[doc(None, "stable", "sha256:0002")],
        jiff::Timestamp::now(),
        &Lifetimes::default(),
    )
    .await;
    assert!(stale.is_err(), "the old online key is not the new root's");
    s.online = new_online;
    s.publish(&[doc(None, "stable", "sha256:0002")]).await;
    let v = fetch(home.path(), &s.served, None, "stable").await.unwrap();
    assert_eq!((v.root_version, v.manifest.build.as_str()), (2, "sha256:0002"));
    let trusted = parse_root(&std::fs::read(trust_dir(home.path()).join("root.json")).unwrap()).unwrap();
    assert_eq!(trusted.signed.version.get(), 2, "the host now trusts root 2");
}

#[tokio::test]
async fn roots_are_checked_when_made_and_when_read() {
    let root_keys = vec![key(), key()];
    let online = key();
    let online_public = online.0.public();
    let publics = publics(&root_keys);
    let spec = |threshold| RootSpec {
        version: 1,
        root_keys: &publics,
        threshold,
        online: &online_public,
        expires: in_a_year(),
    };
    for (t, what) in [(0, "not between 1"), (3, "not between 1")] {
        let e = sign_root(&spec(t), &root_keys, None).await.unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    }
    let e = sign_root(&spec(2), &root_keys[..1], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not meet the new threshold"), "{e}");
    let same = vec![online.0.public()];
    let e = sign_root(
        &RootSpec {
            version: 1,
            root_keys: &same,
            threshold: 1,
            online: &online.0.public(),
            expires: in_a_year(),
        },
        std::slice::from_ref(&online),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("the online key is also a root key"), "{e}");
    // A host refuses to pin what is not a self-signed root.
    let home = tempfile::tempdir().unwrap();
    assert!(
        pin_root(home.path(), b"{}")
            .unwrap_err()
            .contains("not TUF root metadata")
    );
    let text = sign_root(&spec(2), &root_keys, None).await.unwrap();
    let mut tampered: serde_json::Value = serde_json::from_slice(&text).unwrap();
    tampered["signed"]["roles"]["root"]["threshold"] = 1.into();
    let e = pin_root(home.path(), tampered.to_string().as_bytes()).unwrap_err();
    assert!(e.contains("not signed by a threshold"), "{e}");
    assert!(!has_root(home.path()), "nothing pinned");
    // A control plane given an online key the root does not name refuses to start.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1.root.json"), &text).unwrap();
    let e = Publisher::open(dir.path(), Key::generate().unwrap(), Lifetimes::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is not the root's"), "{e}");
}

#[test]
fn only_published_paths_are_served_and_org_offers_only_to_their_org() {
    let sha = "a".repeat(64);
    assert_eq!(access("timestamp.json"), Access::Runners);
    assert_eq!(access("3.root.json"), Access::Runners);
    assert_eq!(
        access(&format!("targets/{sha}.offers/channel/stable.json")),
        Access::Runners
    );
    assert_eq!(
        access(&format!("targets/{sha}.offers/org/acme/stable.json")),
        Access::Org("acme".into())
    );
    for bad in [
        "_state.json",
        "",
        "../registry.db",
        "targets/../_state.json",
        "targets/short.offers/channel/stable.json",
        "a//b",
        "root.json%00",
        ".hidden",
    ] {
        assert_eq!(access(bad), Access::Never, "{bad}");
    }
    // Found by the fuzzer: an org document path without its channel named the org
    // `passing.json`; only `offers/org/<org>/<channel>.json` is an org's.
    for bad in [
        format!("targets/{sha}.offers/org/passing.json"),
        format!("targets/{sha}.offers/org/acme/beta/stable.json"),
        format!("targets/{sha}.offers/org/-rf/stable.json"),
    ] {
        assert_eq!(access(&bad), Access::Never, "{bad}");
    }
}

#[test]
fn the_state_calls_for_a_publication_when_anything_moved_or_the_timestamp_ages() {
    let l = Lifetimes::default();
    let now = jiff::Timestamp::now();
    let docs: BTreeMap<String, String> = [("offers/channel/stable.json".to_string(), "ab".to_string())].into();
    let s = State {
        root_version: 1,
        root_sha: "r1".into(),
        version: 4,
        docs: docs.clone(),
        timestamp_expires: Some(now + jiff::SignedDuration::from_hours(20)),
    };
    assert!(s.current((1, "r1"), &docs, now, &l));
    assert!(!s.current((2, "r1"), &docs, now, &l), "a new root");
    assert!(!s.current((1, "r9"), &docs, now, &l), "another root folder");
    assert!(!s.current((1, "r1"), &BTreeMap::new(), now, &l), "offers changed");
    assert!(
        !s.current((1, "r1"), &docs, now + jiff::SignedDuration::from_hours(9), &l),
        "less than half the timestamp's life left"
    );
    assert!(
        !State::default().current((0, ""), &BTreeMap::new(), now, &l),
        "never published"
    );
}
