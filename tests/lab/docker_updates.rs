//! Customer hosts as containers on a private Docker network. Each host is the lab's base image
//! with only the bootstrap `canary-runner` in it; `canary serve` runs on the lab's host, reached
//! through the network's gateway and a relay the test can slow down. The hosts check, plan,
//! upgrade with consent to the real Claude Code the lab judged (smoke sessions of the real CLI
//! in the container), switch back from a build whose CLI fails its smoke session, are blocked by
//! a bundle, refuse a build signed with another key, keep their build when an upgrade is killed
//! mid-download, and roll back. The admin is told by webhook when a host is behind, the fleet
//! page shows it, and the control plane's audit holds every attempt.

use crate::helpers::{docker, free_port, require_lab, root, webhook};
use crate::updates::{Lab, broken_wheel, claude_component, runner_component, serve_on, sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LABEL: &str = "canary-lab.test=updates";

/// The network and the host containers; removed on drop.
struct Hosts {
    net: String,
    names: Vec<String>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("docker").args(["rm", "-f", n]).output();
        }
        let _ = Command::new("docker").args(["network", "rm", &self.net]).output();
    }
}

/// `canary-runner update --json ARGS` on a host container: exit code, JSON, all output.
fn update(host: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new("docker")
        .args(["exec", host, "canary-runner", "update", "--json"])
        .args(args)
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

/// `update check` on `host` until the signed offer names `build` (the control plane publishes
/// on its next tick after a release).
fn check_until(host: &str, build: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, check, out) = update(host, &["check"]);
        if check["signed"]["build"] == build {
            return check;
        }
        assert!(Instant::now() < deadline, "the signed offer never named {build}: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A TCP relay from `0.0.0.0:port` to the control plane on loopback; what flows back to the host
/// is held to ~8 MB/s while `slow` is set, so a download can be caught half-way.
fn relay(to: u16, slow: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out, slow) = (server, client, slow.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if slow.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_micros(n as u64 / 8));
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// The lab's cached wheel of a Claude Code version and its CLI version.
fn claude(spec: &str) -> (PathBuf, String, String) {
    let binary = crate::real_cli::fetch(spec);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(binary.parent().unwrap().parent().unwrap().join("provider.json")).unwrap(),
    )
    .unwrap();
    let digest = meta["wheel_sha256"].as_str().unwrap().to_string();
    let wheel = std::fs::read_dir(root().join(".canary/cache/wheels/claude-agent-sdk"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| format!("sha256:{}", sha256(p)) == digest)
        .expect("the fetched wheel is in the lab's wheel cache");
    (wheel, digest, meta["cli_version"].as_str().unwrap().to_string())
}

fn link_or_copy(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The scenarios of one long test, each named: a scenario that fails is recorded and the next
/// one still runs (the hosts keep whatever state it left), and the test fails at the end naming
/// every scenario that failed, with its message.
#[derive(Default)]
struct Scenarios(Vec<String>);

impl Scenarios {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> Option<T> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.0.push(format!("{name}: {why}"));
                None
            }
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} scenario(s) failed:\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

#[test]
fn customer_hosts_in_containers_upgrade_with_consent_switch_back_refuse_and_survive_a_kill() {
    require_lab();
    let base = crate::helpers::Canary::new()
        .args(["images", "base", "--json"])
        .run()
        .code(0)
        .json()["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let (wheel_a, digest_a, version_a) = claude("claude-code@sdk-0.2.186");
    let (wheel_c, digest_c, version_c) = claude("claude-code@sdk-0.2.187");

    // The control plane's cache holds exactly the artifacts it offers.
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(cache.join("artifacts")).unwrap();
    link_or_copy(&wheel_a, &cache.join("artifacts/a.whl"));
    link_or_copy(&wheel_c, &cache.join("artifacts/c.whl"));
    broken_wheel(&cache.join("artifacts/broken.whl"));
    let (hook_url, hooks) = webhook();
    let config = dir.path().join("canary.yaml");
    std::fs::write(
        &config,
        format!(
            "cache_dir: {}\norgs_dir: {}\nupdates:\n  webhook: {hook_url}\n",
            cache.display(),
            dir.path().join("orgs").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("orgs")).unwrap();
    std::fs::write(
        dir.path().join("orgs/globex.yaml"),
        "plan: team\nrequire_signed: true\n",
    )
    .unwrap();
    let lab = Lab {
        db: format!("sqlite://{}", dir.path().join("r.db").display()),
        config,
        dir,
    };
    let runner_bin = PathBuf::from(crate::helpers::runner_exe());
    let runner = runner_component();
    let cli = claude_component;
    let build_a = lab.release('a', &[runner.clone(), cli(&version_a, &digest_a)]);

    let trust = lab.trust();
    let mut tokens = Vec::new();
    for (id, org) in [("host-1", "acme"), ("host-2", "globex")] {
        tokens.push(
            lab.canary()
                .args(["tokens", "create", "--runner", id, "--org", org, "--json"])
                .run()
                .code(0)
                .json()["token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }

    // The private network, the control plane off loopback on the lab's host, and the relay.
    let net = format!("canary-updates-{}", std::process::id());
    let mut hosts = Hosts {
        net: net.clone(),
        names: vec![],
    };
    docker(&["network", "create", "--label", LABEL, &net]);
    let gateway = docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &net]);
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let mut server = Some(serve_on(&lab, &listen, &trust, &[]));
    let slow = Arc::new(AtomicBool::new(false));
    let relay_port = relay(port, slow.clone());
    let url = format!("http://{gateway}:{relay_port}");

    // Two customer hosts: the base image and the bootstrap runner, nothing installed.
    for (i, id) in ["host-1", "host-2"].iter().enumerate() {
        let name = format!("{net}-{id}");
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            "--label",
            LABEL,
            "-e",
            &format!("CANARY_RUNNER_TOKEN={}", tokens[i]),
            "-v",
            &format!("{}:/usr/local/bin/canary-runner:ro", runner_bin.display()),
            &base,
            "sleep",
            "infinity",
        ]);
        hosts.names.push(name.clone());
        // The admin's one install step: the install folder, owned by the user the runner runs as.
        let uid = docker(&["exec", &name, "id", "-u"]);
        docker(&[
            "exec",
            "-u",
            "0",
            &name,
            "install",
            "-d",
            "-o",
            &uid,
            "/opt/canary-runner",
        ]);
        let org = if i == 0 { "acme" } else { "globex" };
        // host-1's admin pins the root file given out of band; host-2's trusts the first root
        // it is served and compares the key ids printed.
        let mut init = vec!["init", "--server", &url, "--runner-id", id, "--org", org];
        if i == 0 {
            docker(&[
                "cp",
                trust.first_root().to_str().unwrap(),
                &format!("{name}:/tmp/root.json"),
            ]);
            init.extend(["--root", "/tmp/root.json"]);
        } else {
            init.push("--trust-on-first-use");
        }
        let (code, o, out) = update(&name, &init);
        assert_eq!((code, o["trusted_root"].as_bool()), (0, Some(true)), "{out}");
        let ids = std::fs::read_to_string(trust.first_root()).unwrap();
        for id in o["root_key_ids"].as_array().unwrap() {
            assert!(ids.contains(id.as_str().unwrap()), "{id} is a key of the root given");
        }
    }
    let (h1, h2) = (hosts.names[0].clone(), hosts.names[1].clone());

    // The fleet page as an operator reads it, and the keys a later rotation signs with.
    let fleet = |token: &str| -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sf", "-H", &format!("authorization: Bearer {token}")])
            .arg(format!("http://127.0.0.1:{port}/api/fleet"))
            .output()
            .unwrap();
        assert!(out.status.success(), "GET /api/fleet");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let rotated = crate::updates::Trust {
        online: trust.keys.join("online-2.key"),
        ..trust.clone()
    };
    let mut s = Scenarios::default();

    let ops = s.run(
        "host-1 hears of a green update once, and the fleet page lists it behind",
        || {
            // host-1: an update is available, green; the admin hears of it once, and the fleet page says so.
            let check = check_until(&h1, &build_a);
            let (code, out) = (1, check.to_string());
            assert_eq!((code, check["offer"]["status"].as_str()), (1, Some("green")), "{out}");
            assert_eq!(check["signed"]["statement"]["status"], "green", "{out}");
            assert_eq!(check["offer"]["build"], build_a.as_str());
            let (code, _, out) = update(&h1, &["check"]);
            assert_eq!(code, 1, "{out}");
            wait_for("the webhook notice", Duration::from_secs(20), || {
                !hooks.lock().unwrap().is_empty()
            });
            std::thread::sleep(Duration::from_millis(500));
            {
                let got = hooks.lock().unwrap();
                assert_eq!(got.len(), 1, "told once, not at every heartbeat: {got:?}");
                assert_eq!(
                    (
                        got[0]["event"].as_str(),
                        got[0]["runner"].as_str(),
                        got[0]["build"].as_str()
                    ),
                    (Some("runner.behind"), Some("host-1"), Some(build_a.as_str()))
                );
                assert_eq!(got[0]["status"], "green");
                assert!(
                    got[0]["component_changes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c["component"] == "claude-code" && c["to"] == version_a.as_str()),
                    "{got:?}"
                );
            }
            let ops = lab
                .canary()
                .args([
                    "tokens",
                    "create",
                    "--operator",
                    "admin-desk",
                    "--role",
                    "viewer",
                    "--json",
                ])
                .run()
                .code(0)
                .json()["token"]
                .as_str()
                .unwrap()
                .to_string();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let behind = fleet(&ops);
            assert_eq!(behind["behind"][0]["runner_id"], "host-1", "{behind}");
            assert!(
                behind["behind"][0]["delivery"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with("delivered"),
                "{behind}"
            );
            ops
        },
    );
    s.run(
        "without consent nothing is installed; with --yes the CLI is smoke-tested and the host caught up",
        || {
            let ops = ops.clone().expect("needs the operator token of the first scenario");
            // Without consent nothing is installed; with --yes the real CLI runs its smoke session in
            // the container and the host reports what it runs now.
            let (code, o, out) = update(&h1, &["upgrade"]);
            assert_eq!((code, o["outcome"].as_str()), (1, Some("refused")), "{out}");
            let (code, o, out) = update(&h1, &["upgrade", "--yes"]);
            assert_eq!((code, o["outcome"].as_str()), (0, Some("done")), "{out}");
            assert_eq!(o["smoke"][0], format!("claude-code {version_a}"), "{out}");
            docker(&["exec", &h1, "test", "-x", "/opt/canary-runner/current/bin/claude"]);
            let (code, _, out) = update(&h1, &["check"]);
            assert_eq!(code, 0, "up to date: {out}");
            assert!(fleet(&ops)["behind"].as_array().unwrap().is_empty(), "caught up");
        },
    );
    s.run(
        "a build whose CLI fails its smoke session is switched to, then back",
        || {
            // A build whose CLI fails its smoke session: switched to, switched back.
            let broken_digest = format!("sha256:{}", sha256(&cache.join("artifacts/broken.whl")));
            let build_b = lab.release('b', &[runner.clone(), cli("2.1.999", &broken_digest)]);
            check_until(&h1, &build_b);
            let (code, o, out) = update(&h1, &["upgrade", "--yes", "--smoke-timeout", "60s"]);
            assert_eq!((code, o["outcome"].as_str()), (1, Some("rolled_back")), "{out}");
            assert!(o["reason"].as_str().unwrap().contains("claude-code 2.1.999"), "{out}");
            let (_, status, _) = update(&h1, &["status"]);
            assert_eq!(
                status["current"]["build"],
                build_a.as_str(),
                "the host still runs the old build"
            );
            assert_eq!(
                docker(&["exec", &h1, "/opt/canary-runner/current/bin/claude", "--version"]),
                format!("{version_a} (Claude Code)"),
                "the old CLI answers"
            );
        },
    );
    s.run("a bundle that excludes the target runner blocks plan and upgrade", || {
        // host-2 has a bundle that excludes the target's runner: plan and upgrade are blocked.
        docker(&[
            "exec",
            &h2,
            "sh",
            "-c",
            "mkdir -p /opt/canary-runner/bundles/legacy && printf 'runtime_compatibility:\\n  min_version: \"0.0.1\"\\n  max_version: \"0.0.x\"\\n' > /opt/canary-runner/bundles/legacy/manifest.yaml",
        ]);
        let (code, plan, out) = update(&h2, &["plan"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            plan["plan"]["blocked"][0]
                .as_str()
                .unwrap()
                .contains("newer than max_version"),
            "{out}"
        );
        let (code, o, out) = update(&h2, &["upgrade", "--yes"]);
        assert_eq!((code, o["outcome"].as_str()), (1, Some("blocked")), "{out}");
        docker(&["exec", &h2, "test", "!", "-e", "/opt/canary-runner/current"]);
    });
    s.run("another control plane's metadata is refused", || {
        // Another control plane (its own root and online key) answering at the same address:
        // host-1 refuses its metadata, which no key it trusts signed.
        drop(server.take());
        let other = lab.trust_in("other");
        server = Some(serve_on(&lab, &listen, &other, &[]));
        let (code, o, out) = update(&h1, &["upgrade", "--yes"]);
        assert_eq!((code, o["outcome"].as_str()), (1, Some("refused")), "{out}");
        assert!(
            o["reason"].as_str().unwrap().contains("not signed by a threshold"),
            "{out}"
        );
    });
    s.run(
        "a control plane without signed metadata offers red and installs nothing",
        || {
            // A control plane that publishes no update metadata: its offers are red and say why, and
            // host-2 installs nothing.
            drop(server.take());
            let (mut cmd, _r) = lab.canary().args(["serve", "--listen", &listen]).command();
            let unsigned = crate::updates::Serve(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
            wait_for("canary serve", Duration::from_secs(20), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            docker(&["exec", &h2, "rm", "-r", "/opt/canary-runner/bundles"]);
            let (code, check, out) = update(&h2, &["check"]);
            assert_eq!((code, check["offer"]["status"].as_str()), (1, Some("red")), "{out}");
            assert!(out.contains("publishes no signed update metadata"), "{out}");
            let (code, o, out) = update(&h2, &["upgrade", "--yes"]);
            assert_eq!(code, 1, "{out}");
            assert!(
                o["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("publishes no signed update metadata"),
                "{out}"
            );
            docker(&["exec", &h2, "test", "!", "-e", "/opt/canary-runner/current"]);
            drop(unsigned);
            server = Some(serve_on(&lab, &listen, &trust, &[]));
        },
    );
    let build_c = s.run("an upgrade killed mid-download leaves the old build active", || {
        // A new good build; the upgrade is killed (SIGKILL) half-way through its download.
        let build_c = lab.release('c', &[runner.clone(), cli(&version_c, &digest_c)]);
        check_until(&h1, &build_c);
        slow.store(true, Ordering::Relaxed);
        let started = Command::new("docker")
            .args([
                "exec",
                "-d",
                &h1,
                "sh",
                "-c",
                "echo $$ > /tmp/upgrade.pid; exec canary-runner update upgrade --yes > /tmp/upgrade.out 2>&1",
            ])
            .status()
            .unwrap();
        assert!(started.success());
        wait_for("a download under way", Duration::from_secs(60), || {
            let size = Command::new("docker")
                .args([
                    "exec",
                    &h1,
                    "sh",
                    "-c",
                    "cat /opt/canary-runner/builds/*.partial/*.whl 2>/dev/null | wc -c",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&size.stdout).trim().parse::<u64>().unwrap_or(0) > 4 * 1024 * 1024
        });
        docker(&["exec", &h1, "sh", "-c", "kill -9 $(cat /tmp/upgrade.pid)"]);
        slow.store(false, Ordering::Relaxed);
        let (_, status, out) = update(&h1, &["status"]);
        assert_eq!(
            status["current"]["build"],
            build_a.as_str(),
            "the old build stays active: {out}"
        );
        assert_eq!(
            docker(&["exec", &h1, "/opt/canary-runner/current/bin/claude", "--version"]),
            format!("{version_a} (Claude Code)")
        );
        build_c
    });
    s.run("the next upgrade completes, and rollback returns", || {
        let build_c = build_c.clone().expect("needs the build of the killed-upgrade scenario");
        // The next upgrade starts the download afresh and completes; then back with rollback.
        let (code, o, out) = update(&h1, &["upgrade", "--yes"]);
        assert_eq!((code, o["outcome"].as_str()), (0, Some("done")), "{out}");
        assert_eq!(o["smoke"][0], format!("claude-code {version_c}"), "{out}");
        let (_, status, _) = update(&h1, &["status"]);
        assert_eq!(
            (
                status["current"]["build"].as_str(),
                status["previous"]["build"].as_str()
            ),
            (Some(build_c.as_str()), Some(build_a.as_str()))
        );
        let (code, o, out) = update(&h1, &["rollback"]);
        assert_eq!((code, o["outcome"].as_str()), (0, Some("done")), "{out}");
        assert_eq!(
            docker(&["exec", &h1, "/opt/canary-runner/current/bin/claude", "--version"]),
            format!("{version_a} (Claude Code)")
        );
    });
    s.run("the agent says an update is available and installs nothing", || {
        let build_c = build_c.clone().expect("needs the build of the killed-upgrade scenario");
        // host-2 runs the agent: at start it reports its versions and asks; the update is said, the
        // admin told, and nothing installed.
        let out = Command::new("docker")
            .args([
                "exec",
                &h2,
                "canary-runner",
                "agent",
                "--server",
                &url,
                "--runner-id",
                "host-2",
            ])
            .args([
                "--org",
                "globex",
                "--build",
                "sha256:0000",
                "--sessions",
                "0",
                "--update-check",
                "1h",
            ])
            .args([
                "--provider",
                "claude-code",
                "--prompt",
                "x",
                "--model-url",
                "http://127.0.0.1:9",
            ])
            .args(["--spool", "/tmp/spool.jsonl"])
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(
            (report["update_checks"].as_u64(), report["update_available"].as_str()),
            (Some(1), Some(build_c.as_str())),
            "{report}"
        );
        assert!(
            stderr.contains(&format!(
                "update available: channel stable offers build {build_c} (green)"
            )) && stderr.contains("never upgrades itself"),
            "{stderr}"
        );
        docker(&["exec", &h2, "test", "!", "-e", "/opt/canary-runner/current"]);
        wait_for("the notice of host-2", Duration::from_secs(20), || {
            hooks
                .lock()
                .unwrap()
                .iter()
                .any(|h| h["runner"] == "host-2" && h["build"] == build_c.as_str())
        });
    });
    s.run("hosts follow a rotated root", || {
        let build_c = build_c.clone().expect("needs the build of the killed-upgrade scenario");
        // The root is rotated offline (root-b replaced by root-c, and a new online key); once serve
        // runs with the new online key, every host follows root 2 at its next check, verified by
        // the root it trusted, and trusts nothing the old online key signs.
        for name in ["root-c", "online-2"] {
            lab.canary()
                .args(["keys", "create", "--name", name, "--out"])
                .arg_path(&trust.keys)
                .run()
                .code(0);
        }
        lab.canary()
            .args(["keys", "rotate", "--threshold", "2"])
            .arg_path_flag("--dir", &trust.roots)
            .arg_path_flag("--old-key", &trust.keys.join("root-a.key"))
            .arg_path_flag("--old-key", &trust.keys.join("root-b.key"))
            .arg_path_flag("--root-key", &trust.keys.join("root-a.key"))
            .arg_path_flag("--root-key", &trust.keys.join("root-c.key"))
            .arg_path_flag("--online-key", &trust.keys.join("online-2.pub"))
            .run()
            .code(0);
        drop(server.take());
        server = Some(serve_on(&lab, &listen, &rotated, &[]));
        for h in [&h1, &h2] {
            wait_for("the host to follow root 2", Duration::from_secs(30), || {
                let (_, check, _) = update(h, &["check"]);
                check["trusted_root_version"] == 2 && check["signed"]["build"] == build_c.as_str()
            });
            docker(&[
                "exec",
                h,
                "grep",
                "-Eq",
                "\"version\": ?2,",
                "/opt/canary-runner/tuf/root.json",
            ]);
        }
    });
    s.run("a hostile control plane is refused every way", || {
        // A hostile control plane the hosts are pointed at: it replays an older publication,
        // strips the timestamp's signatures, and (holding the online key) serves an expired
        // timestamp and a beta offer where a stable host reads. Each is refused; nothing installed.
        let real = format!("http://127.0.0.1:{port}");
        let older = crate::updates::published(&real, &tokens[0]);
        let build_d = lab.release('d', &[runner.clone(), cli(&version_c, &digest_c)]);
        check_until(&h1, &build_d);
        let latest = crate::updates::published(&real, &tokens[0]);
        let (fake_port, served) = crate::updates::fake_control_plane(&build_d, "0.0.0.0:0");
        let fake = format!("http://{gateway}:{fake_port}");
        for (h, id, org) in [(&h1, "host-1", "acme"), (&h2, "host-2", "globex")] {
            let (code, _, out) = update(h, &["init", "--server", &fake, "--runner-id", id, "--org", org]);
            assert_eq!(code, 0, "{out}");
        }
        let current = |h: &str| docker(&["exec", h, "sh", "-c", "readlink /opt/canary-runner/current || true"]);
        let refused = |h: &str, files: crate::updates::Files, says: &str| {
            *served.lock().unwrap() = files;
            let before = current(h);
            let (code, o, out) = update(h, &["upgrade", "--yes"]);
            assert_eq!((code, o["outcome"].as_str()), (1, Some("refused")), "{says}: {out}");
            assert!(o["reason"].as_str().unwrap_or("").contains(says), "{says}: {out}");
            assert_eq!(current(h), before, "{says}: switched");
        };
        refused(&h1, older, "a rollback");
        let mut stripped = latest.clone();
        let mut ts: serde_json::Value = serde_json::from_slice(&stripped["timestamp.json"]).unwrap();
        ts["signatures"] = serde_json::json!([]);
        stripped.insert("timestamp.json".into(), ts.to_string().into_bytes());
        refused(&h1, stripped, "not signed by a threshold");
        let doc = |org: Option<&str>, statement_channel: &str| {
            crate::updates::retargeted(&latest, org, "stable", statement_channel)
        };
        let two_days_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48);
        refused(
            &h2,
            crate::updates::signed_by_online_key(&rotated, &[doc(None, "stable")], two_days_ago),
            "has expired",
        );
        refused(
            &h2,
            crate::updates::signed_by_online_key(&rotated, &[doc(Some("globex"), "beta")], jiff::Timestamp::now()),
            "issued for channel beta",
        );
        docker(&["exec", &h2, "test", "!", "-e", "/opt/canary-runner/current"]);
    });
    s.run("the audit log holds every attempt", || {
        // The control plane's audit: every attempt of both hosts, and the notices.
        let audit = lab.canary().args(["registry", "audit", "--json"]).run().code(0).json();
        let entries: Vec<String> = audit
            .as_array()
            .or_else(|| audit["entries"].as_array())
            .unwrap()
            .iter()
            .filter(|e| e["action"].as_str().unwrap_or("").starts_with("runner."))
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["target"].as_str().unwrap(),
                    e["action"].as_str().unwrap(),
                    e["decision"].as_str().unwrap()
                )
            })
            .collect();
        for want in [
            "runner:host-1 runner.behind green",
            "runner:host-1 runner.upgrade refused",
            "runner:host-1 runner.upgrade done",
            "runner:host-1 runner.upgrade rolled_back",
            "runner:host-2 runner.upgrade blocked",
            "runner:host-1 runner.rollback done",
        ] {
            assert!(entries.iter().any(|e| e == want), "{want} missing from {entries:?}");
        }
        let serve_log = std::fs::read_to_string(lab.dir.path().join("serve.log")).unwrap();
        assert!(serve_log.contains("runner host-1 is behind"), "{serve_log}");
    });
    drop(server);
    let _ = gateway;
    s.finish();
}
