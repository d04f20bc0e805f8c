//! A fleet on a private Docker network: `canary-runner agent`s in containers of two runner builds
//! (Claude Code 2.1.329 and 2.1.330), each with the model stub on its own loopback, obey the
//! control plane's assignments during a 50 % rollout and post real telemetry to `canary serve`
//! on the host, reached through the network's gateway.

use crate::helpers::{Canary, docker, free_port, require_lab, root};
use crate::registry::{Backend, fresh};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GATE: &str = "stable:\n  required_suites: [golden-path]\n  allow_missing: true\n";

struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("{}-base", self.0), &format!("{}-cand", self.0)])
            .output();
        let _ = Command::new("docker").args(["network", "rm", &self.0]).output();
    }
}

#[test]
fn agents_in_containers_run_their_builds_sessions_and_report_telemetry() {
    require_lab();
    let build = |args: &[&str]| {
        Canary::new()
            .args(["images", "build"])
            .args(args)
            .args(["--json"])
            .run()
            .code(0)
            .json()
    };
    let base = build(&["--provider", "claude-code@sdk-0.2.186"]);
    let cand = build(&[
        "--from",
        base["id"].as_str().unwrap(),
        "--set",
        "claude-code@sdk-0.2.187",
    ]);
    let (base_id, cand_id) = (
        base["id"].as_str().unwrap().to_string(),
        cand["id"].as_str().unwrap().to_string(),
    );

    let reg = fresh(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("gate.yaml");
    std::fs::write(&policy, GATE).unwrap();
    let canary = || Canary::new().args(["--registry", &reg.url]);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let r = canary::registry::Registry::open(&reg.url).await.unwrap();
            for (id, reference) in [(&base_id, &base["reference"]), (&cand_id, &cand["reference"])] {
                // The fleet is what is under test here: the builds' golden-path verdicts are seeded.
                let b = canary::registry::BuildInfo::from_image(
                    &id.parse().unwrap(),
                    reference.as_str().unwrap(),
                    &Default::default(),
                );
                let rows: Vec<(String, String, String, &str)> = ["ci-enabled", "js-ts", "python"]
                    .iter()
                    .map(|repo| (format!("run-{id}"), "golden-path".to_string(), repo.to_string(), "pass"))
                    .collect();
                r.seed_results(&b, &rows).await.unwrap();
            }
        });
    canary()
        .args(["promote", &base_id, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    canary()
        .args([
            "rollout",
            "start",
            &cand_id,
            "--channel",
            "stable",
            "--steps",
            "50,100",
            "--min-sessions",
            "100000",
        ])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    let mut tokens = Vec::new();
    for runner in ["pool-base", "pool-cand"] {
        let t = canary()
            .args(["tokens", "create", "--runner", runner, "--org", "acme", "--json"])
            .run()
            .code(0)
            .json();
        tokens.push(t["token"].as_str().unwrap().to_string());
    }

    // The control plane on the host, off loopback (tokens exist), reached at the network's gateway.
    let net = Network(format!("canary-fleet-{}", std::process::id()));
    docker(&["network", "create", "--label", "canary-lab.test=fleet", &net.0]);
    let gateway = docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &net.0]);
    let port = free_port();
    let (mut cmd, _reports) = canary()
        .args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--tick", "1s"])
        .arg_path_flag("--policy", &policy)
        .command();
    let mut serve = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "canary serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Each container: its build's runner, the stub on its loopback, the scenario and a workspace.
    let fleet = dir.path().join("fleet");
    std::fs::create_dir_all(fleet.join("ws")).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/scenarios/edit.yaml"),
        fleet.join("edit.yaml"),
    )
    .unwrap();
    std::fs::write(fleet.join("ws/greeting.js"), "export const GREETING = \"Hello\";\n").unwrap();
    let script = |runner: &str, build: &str| {
        format!(
            "(canary-runner lab-stub --scenario /fleet/edit.yaml --log /tmp/stub.jsonl --addr-file /tmp/stub.addr >/tmp/stub.err 2>&1 &); \
             for i in $(seq 200); do [ -s /tmp/stub.addr ] && break; sleep 0.05; done; \
             cp -r /fleet/ws /tmp/ws && cd /tmp/ws && git init -q . && git add -A && git -c user.name=t -c user.email=t@localhost commit -qm pinned && \
             exec canary-runner agent --server http://{gateway}:{port} --runner-id {runner} --org acme --build {build} \
               --sessions 6 --provider claude-code --prompt 'do the canary task' --model-url $(cat /tmp/stub.addr) \
               --timeout 2m --workspace /tmp/ws --spool /tmp/spool.jsonl --batch 2"
        )
    };
    let run = |name: &str, image: &str, runner: &str, build: &str, token: &str| {
        Command::new("docker")
            .args([
                "run",
                "--rm",
                "--name",
                &format!("{}-{name}", net.0),
                "--network",
                &net.0,
            ])
            .args([
                "--label",
                "canary-lab.test=fleet",
                "-e",
                &format!("CANARY_RUNNER_TOKEN={token}"),
            ])
            .arg("-v")
            .arg(format!("{}:/fleet:ro", fleet.display()))
            .args([image, "sh", "-c", &script(runner, build)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = run(
        "base",
        base["reference"].as_str().unwrap(),
        "pool-base",
        &base_id,
        &tokens[0],
    );
    let b = run(
        "cand",
        cand["reference"].as_str().unwrap(),
        "pool-cand",
        &cand_id,
        &tokens[1],
    );
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let _ = serve.kill();
    let _ = serve.wait();
    let summary = |o: &std::process::Output| -> serde_json::Value {
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
    };
    let (a, b) = (summary(&a), summary(&b));
    eprintln!("fleet: base runner {a}, candidate runner {b}");
    for r in [&a, &b] {
        assert_eq!(r["ran"].as_u64().unwrap() + r["handed_off"].as_u64().unwrap(), 6, "{r}");
        assert_eq!(
            (r["ok"].clone(), r["unassigned"].as_u64(), r["waiting"].as_u64()),
            (r["ran"].clone(), Some(0), Some(0)),
            "{r}"
        );
    }
    assert!(a["ran"].as_u64().unwrap() + b["ran"].as_u64().unwrap() > 0, "{a} {b}");
    // What the registry holds per build is what that build's runners ran in their containers.
    let k = canary()
        .args(["kpis", "--channel", "stable", "--json"])
        .run()
        .code(0)
        .json();
    let of = |id: &str| {
        k["builds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["build"] == id)
            .unwrap()["kpis"]
            .clone()
    };
    assert_eq!(of(&base_id)["sessions"].as_u64(), a["ran"].as_u64(), "{k}");
    assert_eq!(of(&cand_id)["sessions"].as_u64(), b["ran"].as_u64(), "{k}");
    if a["ran"].as_u64() > Some(0) {
        assert_eq!(of(&base_id)["session_start_success_pct"].as_f64(), Some(100.0), "{k}");
        assert!(
            of(&base_id)["tokens"].as_i64() > Some(0),
            "the sessions' real token usage is reported: {k}"
        );
    }
}
