//! Customer-hosted runner updates, end to end on loopback: `canary serve` signs what it offers
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
    canary_lab::update::server::sha256_file(path).unwrap()
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
    pub(crate) fn release(&self, digit: char, components: &[canary_lab::builds::Component]) -> String {
        let id = format!("sha256:{}", std::iter::repeat_n(digit, 64).collect::<String>());
        let manifest = canary_lab::builds::BuildManifest {
            base: "sha256:base".into(),
            components: components.to_vec(),
            deltas: 0,
        };
        let labels = [(
            canary_lab::builds::MANIFEST_LABEL.to_string(),
            serde_json::to_string(&manifest).unwrap(),
        )]
        .into();
        let build = canary_lab::registry::BuildInfo::from_image(&id, &format!("canary-lab/build:{digit}"), &labels);
        let rows: Vec<(String, String, String, &str)> = ["ci-enabled", "js-ts", "python"]
            .iter()
            .map(|r| (format!("run-{digit}"), "golden-path".to_string(), r.to_string(), "pass"))
            .collect();
        rt().block_on(async {
            let reg = canary_lab::registry::Registry::open(&self.db).await.unwrap();
            reg.seed_results(&build, &rows).await.unwrap();
            reg.release(
                "stable",
                &id,
                "promote",
                canary_lab::registry::Audit {
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
pub(crate) fn runner_component() -> canary_lab::builds::Component {
    canary_lab::builds::Component {
        name: "runner".into(),
        version: "0.1.0+test".into(),
        package: None,
        package_version: None,
        digest: format!("sha256:{}", sha256(Path::new(env!("CARGO_BIN_EXE_canary-runner")))),
    }
}

/// A Claude Code component of a test build, from its wheel's digest.
pub(crate) fn claude_component(version: &str, digest: &str) -> canary_lab::builds::Component {
    canary_lab::builds::Component {
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

fn serve(lab: &Lab, port: u16, key: &Path) -> Serve {
    serve_on(lab, &format!("127.0.0.1:{port}"), key, &[])
}

/// `canary serve` on `listen` (its port reached on loopback), signing with `key`.
pub(crate) fn serve_on(lab: &Lab, listen: &str, key: &Path, extra: &[&str]) -> Serve {
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let (mut cmd, _r) = lab
        .canary()
        .args(["serve", "--listen", listen])
        .args(extra)
        .arg_path_flag("--signing-key", key)
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

fn update(home: &Path, token: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_canary-runner"))
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

    let keys = lab.dir.path().join("keys");
    let created = lab
        .canary()
        .args(["keys", "create", "--json", "--out"])
        .arg_path(&keys)
        .run()
        .code(0)
        .json();
    let public = created["public_key"].as_str().unwrap().to_string();
    lab.canary()
        .args(["keys", "create", "--out"])
        .arg_path(&keys)
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
    let server = serve(&lab, port, &keys.join("signing.key"));
    let home = lab.dir.path().join("host");
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, out) = update(
        &home,
        &token,
        &[
            "init",
            "--server",
            &url,
            "--runner-id",
            "host-1",
            "--org",
            "acme",
            "--public-key",
            &public,
            "--require-signed",
        ],
    );
    assert_eq!(code, 0, "{out}");

    // Nothing installed: an update is available, green, with what it installs.
    let (code, check, out) = update(&home, &token, &["check"]);
    assert_eq!(code, 1, "{out}");
    // The offer as the control plane signed it now, for the hostile control plane below.
    let first_offer = check["offer"].clone();
    assert_eq!(check["offer"]["status"], "green", "{out}");
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

    // A hostile control plane (or a man in the middle) holding no key: it replays the first
    // offer, re-targets it, strips its signature, or serves one past its expiry. Each is
    // refused and nothing is installed.
    hostile_control_plane(&home, &token, &public, &keys.join("signing.key"), first_offer);
    let (code, _, out) = update(
        &home,
        &token,
        &[
            "init",
            "--server",
            &url,
            "--runner-id",
            "host-1",
            "--org",
            "acme",
            "--public-key",
            &public,
            "--require-signed",
        ],
    );
    assert_eq!(code, 0, "{out}");

    // A control plane signing with another key: refused before anything is fetched.
    drop(server);
    let other = lab.dir.path().join("other-keys");
    lab.canary()
        .args(["keys", "create", "--out"])
        .arg_path(&other)
        .run()
        .code(0);
    let _server = serve(&lab, port, &other.join("signing.key"));
    let (code, o, out) = update(&home, &token, &["upgrade", "--yes"]);
    assert_eq!((code, o["outcome"].as_str()), (1, Some("refused")), "{out}");
    assert!(o["reason"].as_str().unwrap().contains("does not verify"), "{out}");

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
        vec!["refused", "done", "rolled_back", "blocked", "refused", "blocked"],
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

/// Points the host at a control plane that answers `/v1/updates` with what the test gives it,
/// and checks each hostile offer is refused with its reason while `current` stays put.
fn hostile_control_plane(home: &Path, token: &str, public: &str, key: &Path, first: serde_json::Value) {
    use std::sync::{Arc, Mutex};
    let answer = Arc::new(Mutex::new(first.to_string()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = answer.clone();
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
                        let body = served.lock().unwrap().clone();
                        async move { ([("content-type", "application/json")], body) }
                    }),
                );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let init = [
        "init",
        "--server",
        &url,
        "--runner-id",
        "host-1",
        "--org",
        "acme",
        "--public-key",
        public,
    ];
    let (code, _, out) = update(home, token, &init);
    assert_eq!(code, 0, "{out}");
    let current = std::fs::read_link(home.join("current")).unwrap();
    let refused = |offer: serde_json::Value, says: &str| {
        *answer.lock().unwrap() = offer.to_string();
        let (code, o, out) = update(home, token, &["check"]);
        assert_eq!(code, 1, "{says}: {out}");
        assert!(o["refused"].as_str().unwrap_or("").contains(says), "{says}: {out}");
        assert_eq!(
            std::fs::read_link(home.join("current")).unwrap(),
            current,
            "{says}: something was installed"
        );
    };
    // Replay: an offer older than one the host accepted since.
    refused(first.clone(), "a replay");
    // Re-target: the unsigned fields changed (another channel; a red build dressed green).
    let mut other_channel = first.clone();
    other_channel["channel"] = "beta".into();
    refused(other_channel, "differ from what was signed");
    // Stripped signature: a host that trusts a key never takes an unsigned offer.
    let mut stripped = first.clone();
    stripped["signature"] = serde_json::Value::Null;
    refused(stripped, "unsigned");
    // Freeze: a correctly signed offer past its expiry (signed here with the real key, newer
    // than anything seen, so only its expiry refuses it).
    let mut m: canary_lab::update::BuildManifest = serde_json::from_str(first["manifest"].as_str().unwrap()).unwrap();
    let s = m.statement.as_mut().unwrap();
    s.expires_at = "2026-01-01T00:00:00Z".into();
    s.version = i64::MAX / 2;
    let text = m.text();
    let mut expired = first.clone();
    expired["manifest"] = text.clone().into();
    expired["signature"] = canary_lab::update::sign::Key::load(key).unwrap().sign(&text).into();
    refused(expired, "expired");
}
