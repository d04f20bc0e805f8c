//! Remote Docker engines over TCP with mutual TLS, named in canary.yaml's `engines:` and picked
//! with `--engine`: an engine in its own network namespace (`scripts/engines.sh`) passes the
//! backend conformance suite over its TLS port, and every way of reaching one wrongly is refused
//! with what to do.

use crate::docker_distribution::Engines;
use crate::helpers::*;
use std::process::Command;

#[test]
fn a_remote_engine_over_mutual_tls_passes_the_conformance_suite_and_wrong_ways_in_are_refused() {
    require_lab();
    let engines = Engines::up(1);
    let client = Engines::client_tls();
    // A client certificate the engines' CA never signed.
    let stranger = tempfile::tempdir().unwrap();
    let s = stranger.path().display().to_string();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-keyout",
            &format!("{s}/key.pem"),
            "-out",
            &format!("{s}/cert.pem"),
            "-subj",
            "/CN=stranger",
        ])
        .output()
        .unwrap();
    assert!(made.status.success());
    let address = engines.all[0].1.replace("unix://", "");
    assert!(address.ends_with("docker.sock"));
    let config = format!(
        "engines:\n\
         \x20 - name: e1\n\
         \x20   host: tcp://10.231.1.2:2376\n\
         \x20   tls: {{ca: {client}/ca.pem, cert: {client}/cert.pem, key: {client}/key.pem}}\n\
         \x20 - name: stranger\n\
         \x20   host: tcp://10.231.1.2:2376\n\
         \x20   tls: {{ca: {client}/ca.pem, cert: {s}/cert.pem, key: {s}/key.pem}}\n\
         \x20 - name: e1-socket\n\
         \x20   host: unix://{address}\n"
    );
    let (_dir, cfg) = write_temp("canary.yaml", &config);
    let cfg = cfg.display().to_string();

    // The base image goes to the remote engine through its API over TLS, then the suite runs
    // there: the egress check's listener sits on that engine's host, not this one.
    Canary::new()
        .args(["--config", &cfg, "--engine", "e1", "images", "base"])
        .run()
        .code(0);
    let report = Canary::new()
        .args(["--config", &cfg, "--engine", "e1", "engine", "check", "--json"])
        .run()
        .code(0)
        .json();
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.len() >= 10, "{report}");
    for c in checks {
        assert_eq!(c["passed"], true, "{c}");
    }
    assert!(checks.iter().any(|c| c["name"] == "no egress"), "{report}");

    // The same engine by its socket sees what the suite left: nothing.
    Canary::new()
        .args(["--config", &cfg, "--engine", "e1-socket", "gc"])
        .run()
        .code(0);
    assert_eq!(engines.lab_containers(0), "", "containers left on e1");

    // A client certificate the engine's CA did not sign: refused, with what to check.
    Canary::new()
        .args(["--config", &cfg, "--engine", "stranger", "images", "list"])
        .run()
        .code(2)
        .stderr_has("cannot reach engine stranger at tcp://10.231.1.2:2376")
        .stderr_has("client certificate its CA signed");
    // An engine that is not named, and a remote engine without TLS: refused before any
    // connection, pointing at the file.
    Canary::new()
        .args(["--config", &cfg, "--engine", "e9", "images", "list"])
        .run()
        .code(2)
        .stderr_has("the engines canary.yaml names: e1, stranger, e1-socket");
    let (_plain_dir, plain) = write_temp(
        "canary.yaml",
        "engines:\n  - name: e1\n    host: tcp://10.231.1.2:2375\n",
    );
    Canary::new()
        .arg_path_flag("--config", &plain)
        .args(["images", "list"])
        .run()
        .code(2)
        .stderr_has("a remote engine needs tls");
}

/// The golden path over three engines that never built the build: the run pushes it once, each
/// engine pulls it by digest, cases go where slots are free, and a `kill -9` of one engine's
/// daemon mid-run moves its cases to the others. Every case passes once, the report names the
/// engines, and gc leaves nothing on any of them.
#[test]
fn a_run_spreads_over_three_engines_and_survives_one_killed_mid_run() {
    use crate::docker_distribution::OciRegistry;
    require_lab();
    let engines = Engines::up(3);
    let registry = OciRegistry::start(&Engines::lab_address());
    let login = registry.docker_config(crate::docker_distribution::PASSWORD);
    let login_dir = login.path().display().to_string();
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("registry.db").display().to_string();
    let build = two_cli_build();
    let reference = build["reference"].as_str().unwrap().to_string();
    let mut config = format!("oci_registry: {}/canary/spread\nengines:\n", registry.host);
    for (name, socket) in &engines.all {
        config.push_str(&format!("  - name: {name}\n    host: {socket}\n    slots: 1\n"));
    }
    let (_dir, cfg) = write_temp("canary.yaml", &config);
    let cfg = cfg.display().to_string();

    let (cmd, _reports) = Canary::new()
        .args(["--config", &cfg, "--registry", &db, "run", "--image", &reference])
        .args(["-s", "suites/golden-path.yaml", "--json"])
        .env("DOCKER_CONFIG", &login_dir)
        .command();
    let child = spawn_captured(cmd);
    // As soon as e2 runs a case, its daemon dies.
    let e2 = engines.host(1).to_string();
    let started = std::time::Instant::now();
    loop {
        let ps = Command::new("docker")
            .env("DOCKER_HOST", &e2)
            .args(["ps", "--format", "{{.Names}}", "--filter", "label=canary-lab.run"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&ps.stdout).contains("golden-path--") {
            break;
        }
        assert!(started.elapsed().as_secs() < 240, "no case reached e2 in 4 minutes");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    engines.kill(1);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(stderr.contains("engine e2 went away: case golden-path--"), "{stderr}");
    for e in ["e1", "e2", "e3"] {
        assert!(stderr.contains(&format!("engine {e}: pulled build")), "{stderr}");
    }
    assert_eq!(report["summary"]["passed"], 6, "{}", report["summary"]);
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    let on: Vec<&str> = cases.iter().map(|c| c["engine"].as_str().unwrap()).collect();
    assert!(on.iter().all(|e| ["e1", "e2", "e3"].contains(e)), "{on:?}");
    assert!(on.contains(&"e1") && on.contains(&"e3"), "{on:?}");
    assert!(
        report["engine"].as_str().unwrap().contains("e3: "),
        "{}",
        report["engine"]
    );
    eprintln!(
        "cases by engine {on:?}; run {} ms; moved: {}",
        report["duration_ms"],
        stderr
            .lines()
            .filter(|l| l.contains("went away"))
            .collect::<Vec<_>>()
            .join(" | ")
    );

    // e2 comes back with what its killed daemon left; gc of every engine takes it all.
    engines.restart();
    Canary::new().args(["--config", &cfg, "gc"]).run().code(0);

    // Three CI jobs, one engine each, one PostgreSQL registry: `--partition i/3` records every
    // case exactly once.
    let pg = crate::registry::fresh(crate::registry::Backend::Postgres);
    let jobs: Vec<_> = (1..=3)
        .map(|i| {
            let (cmd, reports) = Canary::new()
                .args(["--config", &cfg, "--registry", &pg.url, "--engine", &format!("e{i}")])
                .args(["run", "--image", &reference, "-s", "suites/golden-path.yaml"])
                .args(["--partition", &format!("{i}/3"), "--json"])
                .command();
            let child = spawn_captured(cmd);
            (child, reports)
        })
        .collect();
    let mut ran = Vec::new();
    for (child, _reports) in jobs {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for c in report["cases"].as_array().unwrap() {
            ran.push(c["id"].as_str().unwrap().to_string());
        }
    }
    ran.sort();
    let before = ran.len();
    ran.dedup();
    assert_eq!(
        (before, ran.len()),
        (6, 6),
        "every case in exactly one partition: {ran:?}"
    );
    let results = Canary::new()
        .args(["--registry", &pg.url, "registry", "results", "--json"])
        .run()
        .code(0)
        .json();
    let mut recorded: Vec<String> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["case_id"].as_str().unwrap().to_string())
        .collect();
    recorded.sort();
    assert_eq!(recorded, ran, "the registry holds each case once");
    for (i, (name, _)) in engines.all.iter().enumerate() {
        assert_eq!(engines.lab_containers(i), "", "containers left on {name}");
    }
}

/// `canary sweeps run` over two engines that never built the build: each pulls it by digest,
/// both take jobs, and a `kill -9` of one engine's daemon mid-sweep gives its job back (its try
/// not counted) to the other. Every repo gets exactly one draft PR; gc leaves nothing.
#[test]
fn sweeps_spread_over_two_engines_and_a_killed_engine_s_job_moves_once() {
    use crate::docker_distribution::OciRegistry;
    use crate::docker_sweeps::{get, push_repo, wait_for};
    use std::time::Duration;
    require_lab();
    let engines = Engines::up(2);
    let lab = Engines::lab_address();
    let registry = OciRegistry::start(&lab);
    let login = registry.docker_config(crate::docker_distribution::PASSWORD);
    let login_dir = login.path().display().to_string();
    let build = Canary::new()
        .args(["images", "build", "--provider", "claude-code@sdk-0.2.186", "--json"])
        .run()
        .code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db").display().to_string();
    let orgs = dir.path().join("orgs");
    std::fs::create_dir_all(&orgs).unwrap();
    std::fs::write(orgs.join("acme.yaml"), "plan: enterprise\n").unwrap();
    let mut config = format!(
        "orgs_dir: {}\noci_registry: {}/canary/sweeps\nengines:\n",
        orgs.display(),
        registry.host
    );
    for (name, socket) in &engines.all {
        config.push_str(&format!("  - name: {name}\n    host: {socket}\n    slots: 1\n"));
    }
    let cfg = dir.path().join("canary.yaml");
    std::fs::write(&cfg, config).unwrap();
    let canary = || {
        Canary::new()
            .args(["--registry", &db])
            .arg_path_flag("--config", &cfg)
            .env("DOCKER_CONFIG", &login_dir)
    };

    // The forge on the lab host, at the address every engine reaches.
    let port = free_port();
    let _forge = Killed(
        Command::new(runner_exe())
            .args(["lab-forge", "--listen", &format!("0.0.0.0:{port}")])
            .args(["--public-url", &format!("http://{lab}:{port}"), "--root"])
            .arg(dir.path().join("forge"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the forge", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let local = format!("http://127.0.0.1:{port}");
    let repos = ["acme/one", "acme/two", "acme/three"];
    for id in repos {
        push_repo(&dir.path().join("seeds"), &local, id, "Howdy");
        let url = format!("http://{lab}:{port}/git/{id}.git");
        canary()
            .args(["sweeps", "repos", "add", &url, "--org", "acme"])
            .run()
            .code(0);
    }
    // Pushed once by hand (which records the build); the engines take it from the registry.
    canary().args(["images", "push", &build]).run().code(0);
    let queued = canary()
        .args(["sweeps", "enqueue", &build, "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(queued["enqueued"], 3, "{queued}");

    let scenario = dir.path().join("fix.yaml");
    std::fs::write(
        &scenario,
        "turns:\n  - edit: {file: greeting/__init__.py, replace: '\"Hello\"', with: '\"Howdy\"'}\n  - say: fixed the greeting\n",
    )
    .unwrap();
    let (cmd, _r) = canary()
        .args([
            "sweeps",
            "run",
            "--lease",
            "5m",
            "--backoff",
            "1s",
            "--step-timeout",
            "2m",
            "--json",
        ])
        .arg_path_flag("--scenario", &scenario)
        .command();
    let child = spawn_captured(cmd);
    // As soon as e2 runs a sweep, its daemon dies.
    let e2 = engines.host(1).to_string();
    wait_for("a sweep on e2", Duration::from_secs(240), || {
        let ps = Command::new("docker")
            .env("DOCKER_HOST", &e2)
            .args(["ps", "-q", "--filter", "label=canary-lab"])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&ps.stdout).trim().is_empty()
    });
    engines.kill(1);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let ended: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{stderr}\n{ended:#}");
    let ended = ended.as_array().unwrap();
    let moved: Vec<_> = ended.iter().filter(|e| e["outcome"] == "moved").collect();
    assert_eq!(moved.len(), 1, "{ended:?}");
    assert_eq!(moved[0]["engine"], "e2");
    assert!(moved[0]["reason"].as_str().unwrap().contains("engine e2 went away"));
    for e in ["e1", "e2"] {
        assert!(stderr.contains(&format!("engine {e}: pulled build")), "{stderr}");
    }
    let jobs = canary().args(["sweeps", "status", "--json"]).run().code(0).json();
    for j in jobs.as_array().unwrap() {
        assert_eq!(
            (j["state"].as_str(), j["outcome"].as_str()),
            (Some("done"), Some("pr_opened")),
            "{j}"
        );
        assert_eq!(j["attempts"], 1, "the lost try is not counted: {j}");
    }
    let moved_repo = moved[0]["repo"].as_str().unwrap();
    let redone = ended
        .iter()
        .find(|e| e["repo"] == moved_repo && e["outcome"] == "pr_opened")
        .unwrap();
    assert_eq!(redone["engine"], "e1", "{redone}");
    for id in repos {
        let pulls = get(&format!("{local}/repos/{id}/pulls?state=all"));
        assert_eq!(pulls.as_array().unwrap().len(), 1, "{id}: exactly one PR: {pulls}");
    }

    engines.restart();
    canary().args(["gc"]).run().code(0);
    for (i, (name, _)) in engines.all.iter().enumerate() {
        assert_eq!(engines.lab_containers(i), "", "containers left on {name}");
    }
}
