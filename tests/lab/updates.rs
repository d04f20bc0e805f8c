//! Customer-hosted runner updates, end to end on loopback: `canary serve` publishes TUF metadata for what it offers
//! and serves the exact artifacts the lab judged (the real `canary-runner` binary and the real
//! Claude Code wheel); `canary-runner update` on a host folder checks, plans, upgrades with a
//! smoke session of the real CLI against its model stub, switches back when a build's CLI fails
//! its smoke session, is blocked by a bundle that excludes the target, refuses a build signed
//! with another key, and every attempt lands in the host's history and the control plane's audit.

use crate::helpers::{Canary, free_port, root};
use crate::real_cli::{CLAUDE, fetch};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn sha256(path: &Path) -> String {
    canary::update::server::sha256_file(path).unwrap()
}

pub(crate) struct Lab {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) db: String,
    pub(crate) config: PathBuf,
}

impl Lab {
    pub(crate) fn canary(&self) -> Canary {
        Canary::new()
            .args(["--registry", &self.db])
            .arg_path_flag("--config", &self.config)
    }

    /// Records a build with these components and puts it on stable.
    pub(crate) fn release(&self, digit: char, components: &[canary::builds::Component]) -> String {
        let id = format!("sha256:{}", std::iter::repeat_n(digit, 64).collect::<String>());
        let manifest = canary::builds::BuildManifest {
            base: "sha256:base".into(),
            components: components.to_vec(),
            deltas: 0,
        };
        let labels = [(
            canary::builds::MANIFEST_LABEL.to_string(),
            serde_json::to_string(&manifest).unwrap(),
        )]
        .into();
        let build = canary::registry::BuildInfo::from_image(
            &id.parse().unwrap(),
            &format!("canary-lab/build:{digit}"),
            &labels,
        );
        let rows: Vec<(String, String, String, &str)> = ["ci-enabled", "js-ts", "python"]
            .iter()
            .map(|r| (format!("run-{digit}"), "golden-path".to_string(), r.to_string(), "pass"))
            .collect();
        rt().block_on(async {
            let reg = canary::registry::Registry::open(&self.db).await.unwrap();
            reg.seed_results(&build, &rows).await.unwrap();
            reg.release(
                &"stable".parse().unwrap(),
                &id.parse().unwrap(),
                canary::registry::ReleaseKind::Promote,
                canary::registry::Audit {
                    actor: "test",
                    action: "promote",
                    target: "stable",
                    decision: "promoted",
                    reason: "test release",
                    evidence: serde_json::json!({}),
                },
            )
            .await
            .unwrap();
        });
        id
    }
}

pub(crate) struct Serve(pub(crate) Child);

/// The runner component of a test build: this checkout's `canary-runner`.
pub(crate) fn runner_component() -> canary::builds::Component {
    canary::builds::Component {
        name: "runner".into(),
        version: "0.1.0+test".into(),
        package: None,
        package_version: None,
        digest: format!("sha256:{}", sha256(Path::new(crate::helpers::runner_exe()))),
    }
}

/// A Claude Code component of a test build, from its wheel's digest.
pub(crate) fn claude_component(version: &str, digest: &str) -> canary::builds::Component {
    canary::builds::Component {
        name: "claude-code".into(),
        version: version.into(),
        package: Some("claude-agent-sdk".into()),
        package_version: None,
        digest: digest.into(),
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The keys and root of a control plane's update metadata, made as an admin would: two root
/// keys (threshold 2) kept apart from the online key `canary serve` holds.
#[derive(Clone)]
pub(crate) struct Trust {
    pub(crate) keys: PathBuf,
    pub(crate) roots: PathBuf,
    /// The online key `canary serve` signs with.
    pub(crate) online: PathBuf,
}

impl Trust {
    pub(crate) fn first_root(&self) -> PathBuf {
        self.roots.join("1.root.json")
    }
}

impl Lab {
    pub(crate) fn trust(&self) -> Trust {
        self.trust_in("")
    }

    /// Keys and a root under `<lab>/<name>` (another control plane's, when `name` is not empty).
    pub(crate) fn trust_in(&self, name: &str) -> Trust {
        let keys = self.dir.path().join(name).join("keys");
        for name in ["root-a", "root-b", "online"] {
            self.canary()
                .args(["keys", "create", "--name", name, "--out"])
                .arg_path(&keys)
                .run()
                .code(0);
        }
        let roots = self.dir.path().join(name).join("tuf");
        let made = self
            .canary()
            .args(["keys", "init-root", "--json", "--out"])
            .arg_path(&roots)
            .arg_path_flag("--root-key", &keys.join("root-a.key"))
            .arg_path_flag("--root-key", &keys.join("root-b.key"))
            .arg_path_flag("--online-key", &keys.join("online.pub"))
            .run()
            .code(0)
            .json();
        assert_eq!(
            (made["version"].as_u64(), made["threshold"].as_u64()),
            (Some(1), Some(2)),
            "{made}"
        );
        Trust {
            online: keys.join("online.key"),
            keys,
            roots,
        }
    }
}

fn serve(lab: &Lab, port: u16, trust: &Trust) -> Serve {
    serve_on(lab, &format!("127.0.0.1:{port}"), trust, &[])
}

/// `canary serve` on `listen` (its port reached on loopback), publishing update metadata with
/// `trust`'s online key, republishing within a few hundred milliseconds of a change.
pub(crate) fn serve_on(lab: &Lab, listen: &str, trust: &Trust, extra: &[&str]) -> Serve {
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let (mut cmd, _r) = lab
        .canary()
        .args(["serve", "--tick", "300ms", "--listen", listen])
        .args(extra)
        .arg_path_flag("--tuf", &trust.roots)
        .arg_path_flag("--online-key", &trust.online)
        .command();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab.dir.path().join("serve.log"))
        .unwrap();
    let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "canary serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve(child)
}

/// `update check` until the signed offer names `build` (the control plane publishes on its next
/// tick after a release).
fn check_until(home: &Path, token: &str, build: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, check, out) = update(home, token, &["check"]);
        if check["signed"]["build"] == build {
            return check;
        }
        assert!(Instant::now() < deadline, "the signed offer never named {build}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn update(home: &Path, token: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(crate::helpers::runner_exe())
        .arg("update")
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .env("CANARY_RUNNER_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// A claude-agent-sdk wheel with a working-looking CLI and one more entry whose name, once the
/// CLI folder is stripped, is the absolute path `target/pwned`.
pub(crate) fn evil_wheel(path: &Path, target: &Path) {
    let f = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    zip.start_file("claude_agent_sdk/_bundled/claude", opts).unwrap();
    zip.write_all(b"#!/bin/sh\necho '2.1.998 (Claude Code)'\n").unwrap();
    zip.start_file(format!("claude_agent_sdk/_bundled/{}/pwned", target.display()), opts)
        .unwrap();
    zip.write_all(b"written outside the home\n").unwrap();
    zip.finish().unwrap();
}

/// A claude-agent-sdk wheel whose bundled CLI exits 3: a release that breaks sessions.
pub(crate) fn broken_wheel(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    zip.start_file("claude_agent_sdk/_bundled/claude", opts).unwrap();
    zip.write_all(b"#!/bin/sh\necho 'broken release' >&2\nexit 3\n")
        .unwrap();
    zip.start_file("claude_agent_sdk/_bundled/claude.version", opts)
        .unwrap();
    zip.write_all(b"2.1.999 (Claude Code)\n").unwrap();
    zip.finish().unwrap();
}

#[test]
fn a_customer_host_upgrades_with_consent_smoke_tests_and_switches_back_and_refuses_what_it_must() {
    let claude_bin = fetch(CLAUDE);
    let provider_json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(claude_bin.parent().unwrap().parent().unwrap().join("provider.json")).unwrap(),
    )
    .unwrap();
    let wheel_digest = provider_json["wheel_sha256"].as_str().unwrap().to_string();
    let cli_version = provider_json["cli_version"].as_str().unwrap().to_string();
    let wheels = root().join(".canary/cache/wheels/claude-agent-sdk");
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| format!("sha256:{}", sha256(p)) == wheel_digest)
        .expect("the fetched wheel is in the lab's wheel cache");

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(cache.join("artifacts")).unwrap();
    std::fs::copy(&wheel, cache.join("artifacts/claude.whl")).unwrap();
    broken_wheel(&cache.join("artifacts/broken.whl"));
    let outside = dir.path().join("outside-the-home");
    evil_wheel(&cache.join("artifacts/evil.whl"), &outside);
    let config = dir.path().join("canary.yaml");
    std::fs::write(&config, format!("cache_dir: {}\n", cache.display())).unwrap();
    let lab = Lab {
        db: format!("sqlite://{}", dir.path().join("r.db").display()),
        config,
        dir,
    };
    let runner = runner_component();
    let claude = claude_component;
    let good = lab.release('a', &[runner.clone(), claude(&cli_version, &wheel_digest)]);

    let trust = lab.trust();
    // A key is never overwritten.
    lab.canary()
        .args(["keys", "create", "--name", "online", "--out"])
        .arg_path(&trust.keys)
        .run()
        .code(2);
    let token = lab
        .canary()
        .args(["tokens", "create", "--runner", "host-1", "--org", "acme", "--json"])
        .run()
        .code(0)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let port = free_port();
    let server = serve(&lab, port, &trust);
    let home = lab.dir.path().join("host");
    let url = format!("http://127.0.0.1:{port}");
    let init = |home: &Path, url: &str, root: Option<&Path>| {
        let mut args = vec!["init", "--server", url, "--runner-id", "host-1", "--org", "acme"];
        let root = root.map(|r| r.to_str().unwrap().to_string());
        if let Some(r) = &root {
            args.extend(["--root", r.as_str()]);
        }
        let (code, o, out) = update(home, &token, &args);
        assert_eq!(code, 0, "{out}");
        o
    };
    // Without a pinned root nothing will be installed, and init says how to pin one.
    let o = init(&home, &url, None);
    assert_eq!(o["trusted_root"], false, "{o}");
    let (code, o, out) = update(&home, &token, &["upgrade", "--yes"]);
    assert_eq!((code, o["outcome"].as_str()), (1, Some("refused")), "{out}");
    assert!(o["reason"].as_str().unwrap().contains("no trusted root"), "{out}");
    let o = init(&home, &url, Some(&trust.first_root()));
    assert_eq!(o["root_key_ids"].as_array().unwrap().len(), 2, "{o}");

    // Nothing installed: an update is available, green, with what it installs.
    let check = check_until(&home, &token, &good);
    let out = check.to_string();
    assert_eq!(check["trusted_root_version"], 1, "{out}");
    // The metadata as the control plane published it now, for the hostile control plane below.
    let first_metadata = published(&url, &token);
    assert_eq!(check["offer"]["status"], "green", "{out}");
    assert_eq!(check["signed"]["statement"]["status"], "green", "{out}");
    assert_eq!(check["offer"]["build"], good.as_str());
    assert!(check["refused"].is_null(), "{out}");
    assert!(
        check["offer"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["component"] == "claude-code" && c["to"] == cli_version.as_str()),
        "{out}"
    );
    // Without --yes and without a terminal nothing is installed.
    let (code, o, out) = update(&home, &token, &["upgrade"]);
    assert_eq!((code, o["outcome"].as_str()), (1, Some("refused")), "{out}");
    assert!(!home.join("current").exists(), "no consent, no install");

    let (code, o, out) = update(&home, &token, &["upgrade", "--yes"]);
    assert_eq!((code, o["outcome"].as_str()), (0, Some("done")), "{out}");
    assert_eq!(o["smoke"][0], format!("claude-code {cli_version}"), "{out}");
    assert!(home.join("current/bin/claude").exists() && home.join("current/bin/canary-runner").exists());
    let (code, _, out) = update(&home, &token, &["check"]);
    assert_eq!(code, 0, "up to date: {out}");

    // A release whose CLI fails its smoke session: installed beside, switched to, switched back.
    let broken_digest = format!("sha256:{}", sha256(&cache.join("artifacts/broken.whl")));
    let broken = lab.release('b', &[runner.clone(), claude("2.1.999", &broken_digest)]);
    check_until(&home, &token, &broken);
    let (code, o, out) = update(&home, &token, &["upgrade", "--yes", "--smoke-timeout", "30s"]);
    assert_eq!((code, o["outcome"].as_str()), (1, Some("rolled_back")), "{out}");
    assert!(o["reason"].as_str().unwrap().contains("claude-code 2.1.999"), "{out}");
    let (_, status, _) = update(&home, &token, &["status"]);
    assert_eq!(
        status["current"]["build"],
        good.as_str(),
        "the host still runs the old build"
    );
    assert!(status["previous"].is_null(), "and nothing else moved");

    // A bundle that excludes the target's runner blocks plan and upgrade.
    let bundle = home.join("bundles/legacy");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(
        bundle.join("manifest.yaml"),
        "runtime_compatibility:\n  min_version: \"0.0.1\"\n  max_version: \"0.0.x\"\n",
    )
    .unwrap();
    let (code, plan, out) = update(&home, &token, &["plan"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        plan["plan"]["blocked"][0]
            .as_str()
            .unwrap()
            .contains("newer than max_version"),
        "{out}"
    );
    let (code, o, out) = update(&home, &token, &["upgrade", "--yes"]);
    assert_eq!((code, o["outcome"].as_str()), (1, Some("blocked")), "{out}");
    std::fs::remove_dir_all(home.join("bundles")).unwrap();

    // A judged and signed build whose wheel hides an entry with an absolute path
    // (`…/_bundled//<path outside the home>`): the host's unpacker refuses the whole wheel, writes
    // nothing outside its home, and keeps running its build.
    let evil_digest = format!("sha256:{}", sha256(&cache.join("artifacts/evil.whl")));
    let evil = lab.release('e', &[runner.clone(), claude("2.1.998", &evil_digest)]);
    check_until(&home, &token, &evil);
    let (code, o, out) = update(&home, &token, &["upgrade", "--yes"]);
    assert_eq!((code, o["outcome"].as_str()), (2, Some("failed")), "{out}");
    assert!(o["reason"].as_str().unwrap().contains("is refused"), "{out}");
    assert!(!outside.exists(), "the wheel wrote outside the host's home");
    let (_, status, _) = update(&home, &token, &["status"]);
    assert_eq!(status["current"]["build"], good.as_str(), "the host keeps its build");

    // A hostile control plane (or a man in the middle) holding no root key: it replays the
    // first publication, strips signatures, serves nothing signed, freezes on an expired
    // timestamp, or (holding the online key) re-targets a beta build at this stable host.
    // Each is refused and nothing is installed.
    hostile_control_plane(&lab, &home, &token, &trust, first_metadata, &url);
    init(&home, &url, None);

    // A control plane given an online key its root does not name refuses to start.
    drop(server);
    lab.canary()
        .args(["keys", "create", "--name", "other", "--out"])
        .arg_path(&trust.keys)
        .run()
        .code(0);
    let out = lab
        .canary()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg_path_flag("--tuf", &trust.roots)
        .arg_path_flag("--online-key", &trust.keys.join("other.key"))
        .run()
        .code(2)
        .stderr();
    assert!(out.contains("is not the root's"), "{out}");

    // The root is rotated offline (a third key, threshold 2 of 3, a new online key): the control
    // plane publishes under it at its next tick and the host follows, verified by the old root.
    lab.canary()
        .args(["keys", "create", "--name", "root-c", "--out"])
        .arg_path(&trust.keys)
        .run()
        .code(0);
    lab.canary()
        .args(["keys", "create", "--name", "online-2", "--out"])
        .arg_path(&trust.keys)
        .run()
        .code(0);
    // One old key is below the old threshold: refused, nothing written.
    let out = lab
        .canary()
        .args(["keys", "rotate", "--threshold", "2"])
        .arg_path_flag("--dir", &trust.roots)
        .arg_path_flag("--old-key", &trust.keys.join("root-a.key"))
        .arg_path_flag("--root-key", &trust.keys.join("root-a.key"))
        .arg_path_flag("--root-key", &trust.keys.join("root-c.key"))
        .arg_path_flag("--online-key", &trust.keys.join("online-2.pub"))
        .run()
        .code(2)
        .stderr();
    assert!(out.contains("do not meet its threshold"), "{out}");
    assert!(!trust.roots.join("2.root.json").exists());
    let rotated = lab
        .canary()
        .args(["keys", "rotate", "--json", "--threshold", "2"])
        .arg_path_flag("--dir", &trust.roots)
        .arg_path_flag("--old-key", &trust.keys.join("root-a.key"))
        .arg_path_flag("--old-key", &trust.keys.join("root-b.key"))
        .arg_path_flag("--root-key", &trust.keys.join("root-a.key"))
        .arg_path_flag("--root-key", &trust.keys.join("root-b.key"))
        .arg_path_flag("--root-key", &trust.keys.join("root-c.key"))
        .arg_path_flag("--online-key", &trust.keys.join("online-2.pub"))
        .run()
        .code(0)
        .json();
    assert_eq!(rotated["version"], 2, "{rotated}");
    let rotated = Trust {
        online: trust.keys.join("online-2.key"),
        ..trust.clone()
    };
    let _server = serve(&lab, port, &rotated);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, check, out) = update(&home, &token, &["check"]);
        if check["trusted_root_version"] == 2 {
            assert_eq!(check["signed"]["build"], evil.as_str(), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "the host never followed root 2: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Rollback with nothing before: said, not done. The host's history and the control
    // plane's audit hold every attempt.
    let (code, _, out) = update(&home, &token, &["rollback"]);
    assert_eq!(code, 1, "{out}");
    let (_, status, _) = update(&home, &token, &["status"]);
    let outcomes: Vec<&str> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        // no root; no consent; done; smoke failed; bundle; evil wheel; replay; stripped;
        // nothing signed; rollback with nothing before.
        vec![
            "refused",
            "refused",
            "done",
            "rolled_back",
            "blocked",
            "failed",
            "refused",
            "refused",
            "refused",
            "blocked"
        ],
        "{status}"
    );
    let audit = lab.canary().args(["registry", "audit", "--json"]).run().code(0).json();
    let runner_entries: Vec<String> = audit
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap_or("").starts_with("runner."))
        .map(|e| format!("{} {}", e["action"].as_str().unwrap(), e["decision"].as_str().unwrap()))
        .collect();
    for want in [
        "runner.upgrade done",
        "runner.upgrade rolled_back",
        "runner.upgrade blocked",
        "runner.upgrade refused",
        "runner.rollback blocked",
    ] {
        assert!(
            runner_entries.iter().any(|e| e == want),
            "{want} missing from {runner_entries:?}"
        );
    }
    let _ = broken;
}

pub(crate) type Files = std::collections::HashMap<String, Vec<u8>>;

/// Every TUF file the control plane at `url` serves now (its newest publication and first root),
/// read with `token` as a host reads them.
pub(crate) fn published(url: &str, token: &str) -> Files {
    let _ = rustls::crypto::ring::default_provider().install_default();
    rt().block_on(async {
        let http = reqwest::Client::new();
        let get = |path: String| {
            let http = http.clone();
            let url = format!("{url}/v1/tuf/{path}");
            async move {
                let r = http.get(&url).bearer_auth(token).send().await.unwrap();
                assert!(r.status().is_success(), "{url}: {}", r.status());
                (path, r.bytes().await.unwrap().to_vec())
            }
        };
        let mut files = Files::new();
        let (p, ts) = get("timestamp.json".into()).await;
        let v = serde_json::from_slice::<serde_json::Value>(&ts).unwrap()["signed"]["version"]
            .as_u64()
            .unwrap();
        files.insert(p, ts);
        let (p, snap) = get(format!("{v}.snapshot.json")).await;
        files.insert(p, snap);
        let (p, targets) = get(format!("{v}.targets.json")).await;
        let t: serde_json::Value = serde_json::from_slice(&targets).unwrap();
        files.insert(p, targets);
        for (name, target) in t["signed"]["targets"].as_object().unwrap() {
            if name.starts_with("offers/org/") && !name.starts_with("offers/org/acme/") {
                continue;
            }
            let sha = target["hashes"]["sha256"].as_str().unwrap();
            let (p, body) = get(format!("targets/{sha}.{name}")).await;
            files.insert(p, body);
        }
        let (p, root) = get("1.root.json".into()).await;
        files.insert(p, root);
        files
    })
}

/// A control plane that serves the TUF files the test gives it (and accepts heartbeats and
/// reports, and answers `/v1/updates` with a green offer of `build`) on `bind`; returns its port.
pub(crate) fn fake_control_plane(build: &str, bind: &str) -> (u16, std::sync::Arc<std::sync::Mutex<Files>>) {
    use std::sync::{Arc, Mutex};
    let files: Arc<Mutex<Files>> = Default::default();
    let served = files.clone();
    let offer = serde_json::json!({
        "runner": "host-1", "org": "acme", "channel": "stable", "source": "channel",
        "status": "green", "reasons": [], "build": build, "changes": [], "reports": [],
        "rollback": [], "require_signed": true,
    })
    .to_string();
    let listener = std::net::TcpListener::bind(bind).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use axum::routing::{get, post};
            let app = axum::Router::new()
                .route("/v1/heartbeats", post(|| async { axum::http::StatusCode::ACCEPTED }))
                .route(
                    "/v1/updates/report",
                    post(|| async { axum::http::StatusCode::ACCEPTED }),
                )
                .route(
                    "/v1/updates",
                    get(move || {
                        let body = offer.clone();
                        async move { ([("content-type", "application/json")], body) }
                    }),
                )
                .route(
                    "/v1/tuf/{*path}",
                    get(move |axum::extract::Path(path): axum::extract::Path<String>| {
                        let body = served.lock().unwrap().get(&path).cloned();
                        async move {
                            match body {
                                Some(b) => (axum::http::StatusCode::OK, b),
                                None => (axum::http::StatusCode::NOT_FOUND, vec![]),
                            }
                        }
                    }),
                );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (port, files)
}

/// Signs a publication of `docs` with the control plane's online key (an attacker who stole it),
/// as of `at`, with a version above any the real control plane reached.
/// The published stable offer re-targeted as a hostile control plane would: its statement says
/// `org` and `statement_channel`, and it is filed as `org`'s document for `channel`.
pub(crate) fn retargeted(
    latest: &Files,
    org: Option<&str>,
    channel: &str,
    statement_channel: &str,
) -> canary::update::tuf::Doc {
    let mut m: serde_json::Value = serde_json::from_slice(
        latest
            .iter()
            .find(|(p, _)| p.ends_with("offers/channel/stable.json"))
            .unwrap()
            .1,
    )
    .unwrap();
    m["statement"]["org"] = org.into();
    m["statement"]["channel"] = statement_channel.into();
    m["offered_for"] = statement_channel.into();
    canary::update::tuf::Doc {
        org: org.map(String::from),
        channel: channel.parse().unwrap(),
        body: m.to_string(),
    }
}

pub(crate) fn signed_by_online_key(trust: &Trust, docs: &[canary::update::tuf::Doc], at: jiff::Timestamp) -> Files {
    use canary::update::tuf;
    let key = tuf::Signer::new(canary::update::sign::Key::load(&trust.online).unwrap());
    let state = tuf::State {
        version: 1_000_000,
        ..Default::default()
    };
    let (files, _) = rt()
        .block_on(tuf::sign_publication(
            &trust.roots,
            &key,
            &state,
            docs,
            at,
            &tuf::Lifetimes::default(),
        ))
        .unwrap();
    files.into_iter().map(|(p, b)| (p, b.into_bytes())).collect()
}

/// Points hosts at a hostile control plane and checks that each attack is refused with its
/// reason and nothing is installed or switched.
fn hostile_control_plane(lab: &Lab, home: &Path, token: &str, trust: &Trust, first: Files, real: &str) {
    let latest = published(real, token);
    let build = serde_json::from_slice::<serde_json::Value>(
        latest
            .iter()
            .find(|(p, _)| p.ends_with("offers/channel/stable.json"))
            .unwrap()
            .1,
    )
    .unwrap()["build"]
        .as_str()
        .unwrap()
        .to_string();
    let (port, files) = fake_control_plane(&build, "127.0.0.1:0");
    let url = format!("http://127.0.0.1:{port}");
    let init = |home: &Path| {
        let (code, _, out) = update(
            home,
            token,
            &["init", "--server", &url, "--runner-id", "host-1", "--org", "acme"],
        );
        assert_eq!(code, 0, "{out}");
    };
    let refused = |home: &Path, serve: Files, says: &str| {
        *files.lock().unwrap() = serve;
        let before = std::fs::read_link(home.join("current")).ok();
        let (code, o, out) = update(home, token, &["upgrade", "--yes"]);
        assert_eq!((code, o["outcome"].as_str()), (1, Some("refused")), "{says}: {out}");
        assert!(o["reason"].as_str().unwrap_or("").contains(says), "{says}: {out}");
        assert_eq!(
            std::fs::read_link(home.join("current")).ok(),
            before,
            "{says}: switched"
        );
    };
    init(home);
    // Replay: the first publication again, after the host trusted newer ones.
    refused(home, first, "a rollback");
    // Stripped signatures on the newest timestamp.
    let mut stripped = latest.clone();
    let mut ts: serde_json::Value = serde_json::from_slice(&stripped["timestamp.json"]).unwrap();
    ts["signatures"] = serde_json::json!([]);
    stripped.insert("timestamp.json".into(), ts.to_string().into_bytes());
    refused(home, stripped, "not signed by a threshold");
    // A control plane that serves nothing signed at all.
    refused(home, Files::new(), "did not serve the metadata");

    // The next two need the online key, and a host that has seen nothing newer (a fresh one
    // pinned to the same root), so that only the attack itself refuses them.
    let fresh = lab.dir.path().join("fresh-host");
    let (code, _, out) = update(
        &fresh,
        token,
        &[
            "init",
            "--server",
            &url,
            "--runner-id",
            "host-1",
            "--org",
            "acme",
            "--root",
            trust.first_root().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let doc = |org: Option<&str>, channel: &str, statement_channel: &str| {
        retargeted(&latest, org, channel, statement_channel)
    };
    // Freeze: correctly signed, but its timestamp expired a day ago.
    let two_days_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48);
    refused(
        &fresh,
        signed_by_online_key(trust, &[doc(None, "stable", "stable")], two_days_ago),
        "has expired",
    );
    // Re-target: the beta offer placed where this stable host of acme reads.
    refused(
        &fresh,
        signed_by_online_key(trust, &[doc(Some("acme"), "stable", "beta")], jiff::Timestamp::now()),
        "issued for channel beta",
    );
    assert!(!fresh.join("current").exists(), "nothing installed on the fresh host");
}
