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
    let left = Command::new("docker")
        .env("DOCKER_HOST", engines.host(0))
        .args(["ps", "-aq", "--filter", "label=canary-lab"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "containers left on e1"
    );

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
