//! `just bench` (engines): builds through an image registry and cases over several engines,
//! on this machine's extra engines (`scripts/engines.sh`, each in its own network namespace) and
//! a TLS docker-registry (`scripts/oci-registry.sh`).
//!
//! (a) pushing a whole runner build, then a one-CLI candidate of it (only its new layer moves);
//! (b) pulling the candidate on a fresh engine that has the parent, and the whole build on one
//!     that has nothing; (c) the lab's per-case overhead inside a case (container, uploads,
//!     checks: a case's time beyond its commands) with the cases on one engine and spread over
//!     three, target under 50 ms more per case.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const USER: &str = "bench";
const PASSWORD: &str = "bench-only";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str, args: &[&str]) -> String {
    let out = Command::new(root().join("scripts").join(name))
        .args(args)
        .output()
        .expect("script");
    assert!(
        out.status.success(),
        "scripts/{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn canary(reports: &Path, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let mut c = Command::new(env!("CARGO_BIN_EXE_canary"));
    c.current_dir(root())
        .env("CI", "true")
        .arg("--reports-dir")
        .arg(reports);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.args(args).arg("--json").output().expect("canary");
    assert!(
        out.status.success(),
        "canary {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Per case: its time beyond its steps' own commands, averaged over the run's cases.
fn in_case_overhead(report: &serde_json::Value) -> f64 {
    let cases = report["cases"].as_array().expect("cases");
    let beyond: u64 = cases
        .iter()
        .map(|c| {
            let steps: u64 = c["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["duration_ms"].as_u64().unwrap())
                .sum();
            c["duration_ms"].as_u64().unwrap().saturating_sub(steps)
        })
        .sum();
    beyond as f64 / cases.len() as f64
}

/// What the measures share: the engines, the registry, the lab's own registry file.
struct Lab {
    reports: tempfile::TempDir,
    work: tempfile::TempDir,
    /// `DOCKER_HOST` of each extra engine.
    engines: Vec<String>,
    registry_dir: String,
    repo: String,
    db: String,
}

const LOGIN: [(&str, &str); 2] = [
    ("CANARY_REGISTRY_USERNAME", USER),
    ("CANARY_REGISTRY_PASSWORD", PASSWORD),
];

fn setup() -> Lab {
    let work = tempfile::tempdir().expect("tempdir");
    script("oci-registry.sh", &[]);
    let engines: Vec<String> = script("engines.sh", &["up", "3"])
        .lines()
        .map(|l| format!("unix://{}", l.split_whitespace().nth(1).expect("socket")))
        .collect();
    let address = script("engines.sh", &["address"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let registry_dir = work.path().join("registry").display().to_string();
    script(
        "oci-registry.sh",
        &["start", &registry_dir, &address, &port, USER, PASSWORD],
    );
    Lab {
        reports: tempfile::tempdir().expect("tempdir"),
        repo: format!("{address}:{port}/canary/bench"),
        db: work.path().join("registry.db").display().to_string(),
        work,
        engines,
        registry_dir,
    }
}

impl Lab {
    fn canary(&self, engine: Option<usize>, args: &[&str]) -> serde_json::Value {
        let mut env = LOGIN.to_vec();
        if let Some(i) = engine {
            env.push(("DOCKER_HOST", self.engines[i].as_str()));
        }
        let mut all = vec!["--registry", self.db.as_str()];
        all.extend_from_slice(args);
        canary(self.reports.path(), &env, &all)
    }
}

/// (a) and (b): a whole build and a one-CLI candidate, pushed and pulled; returns the
/// candidate's reference (on every engine afterwards).
fn transfers(lab: &Lab) -> String {
    let two = [
        "images",
        "build",
        "--provider",
        "codex@0.163.0",
        "--provider",
        "claude-code@sdk-0.2.186",
    ];
    let parent = lab.canary(None, &two);
    let parent_ref = parent["reference"].as_str().unwrap().to_string();
    let child = lab.canary(
        None,
        &[
            "images",
            "build",
            "--from",
            &parent_ref,
            "--set",
            "claude-code@sdk-0.2.187",
        ],
    );
    let child_ref = child["reference"].as_str().unwrap().to_string();
    let timed = |engine: Option<usize>, args: &[&str]| {
        let t = Instant::now();
        let v = lab.canary(engine, args);
        (v, t.elapsed().as_secs_f64())
    };
    let (whole, whole_s) = timed(None, &["images", "push", &parent_ref, "--to", &lab.repo]);
    let (one, one_s) = timed(None, &["images", "push", &child_ref, "--to", &lab.repo]);
    let (pulled_whole, pull_whole_s) = timed(Some(0), &["images", "pull", &parent_ref]);
    let (pulled_one, pull_one_s) = timed(Some(0), &["images", "pull", &child_ref]);
    for i in 1..3 {
        lab.canary(Some(i), &["images", "pull", &child_ref]);
    }
    let mb = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / 1e6;
    println!("Canary Lab bench: engines and the image registry (3 extra engines, TLS docker-registry)");
    println!();
    println!(
        "(a) push, whole build               {whole_s:>6.1} s  {} layers sent",
        whole["transfer"]["layers_moved"]
    );
    println!(
        "    push, one-CLI candidate         {one_s:>6.1} s  {} layer sent, {} already there   target: one layer",
        one["transfer"]["layers_moved"], one["transfer"]["layers_present"]
    );
    println!(
        "(b) pull, whole build, empty engine {pull_whole_s:>6.1} s  {} layers, {:.0} MB",
        pulled_whole["transfer"]["layers_moved"],
        mb(&pulled_whole["transfer"]["bytes_moved"])
    );
    println!(
        "    pull, one-CLI candidate         {pull_one_s:>6.1} s  {} layer, {:.0} MB, {} already there",
        pulled_one["transfer"]["layers_moved"],
        mb(&pulled_one["transfer"]["bytes_moved"]),
        pulled_one["transfer"]["layers_present"]
    );
    child_ref
}

/// (c) the demo suite's cases on one engine, then over three (best of three rounds each).
fn placement(lab: &Lab, image: &str) {
    let config = |names: &[usize], slots: usize| -> String {
        let mut text = String::from("engines:\n");
        for &i in names {
            text.push_str(&format!(
                "  - name: e{}\n    host: {}\n    slots: {slots}\n",
                i + 1,
                lab.engines[i]
            ));
        }
        let path = lab.work.path().join(format!("canary-{}.yaml", names.len()));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let run = |cfg: &str| {
        in_case_overhead(&lab.canary(
            None,
            &[
                "--config",
                cfg,
                "run",
                "--image",
                image,
                "-s",
                "suites/demo.yaml",
                "--no-record",
            ],
        ))
    };
    let (single, spread) = (config(&[0], 3), config(&[0, 1, 2], 1));
    let (mut one_engine, mut three_engines) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        one_engine = one_engine.min(run(&single));
        three_engines = three_engines.min(run(&spread));
    }
    let more = three_engines - one_engine;
    println!(
        "(c) in-case overhead per case       {one_engine:>6.0} ms on one engine, {three_engines:.0} ms over three: {more:+.0} ms   target: < +50 ms {}",
        if more < 50.0 { "ok" } else { "MISSED" }
    );
}

/// The registry and the engines go when the bench ends, however it ends.
impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/oci-registry.sh"))
            .args(["stop", &self.registry_dir])
            .output();
        let _ = Command::new(root().join("scripts/engines.sh")).arg("down").output();
    }
}

fn main() {
    let lab = setup();
    let candidate = transfers(&lab);
    placement(&lab, &candidate);
}
