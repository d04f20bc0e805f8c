//! Post-update repo sweeps end to end: repos of four orgs on the lab forge (served over HTTP on
//! the lab's host), a Claude Code runner build promoted to stable, and `canary sweeps run`
//! sweeping each repo in a container of that build with the real CLI driven by the model stub.
//! The fixable repo gets exactly one draft PR, the green one nothing, the protected one a dropped
//! change, the Team-plan org only its quota; a second promotion enqueues nothing; a worker killed
//! mid-job leaves the job to the next worker, which finishes it once.

use crate::helpers::{Canary, Killed, docker, free_port, require_lab};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GATE: &str = "stable:\n  required_suites: [golden-path]\n  allow_missing: true\n";

struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["network", "rm", &self.0]).output();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@localhost")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@localhost")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small Python repo whose test wants `want` while the code says `Hello`.
pub(crate) fn push_repo(root: &Path, forge: &str, id: &str, want: &str) {
    let ws = root.join(id.replace('/', "-"));
    std::fs::create_dir_all(ws.join("greeting")).unwrap();
    std::fs::create_dir_all(ws.join("tests")).unwrap();
    std::fs::write(ws.join("greeting/__init__.py"), "GREETING = \"Hello\"\n").unwrap();
    std::fs::write(
        ws.join("tests/test_greeting.py"),
        format!("from greeting import GREETING\n\n\ndef test_greeting():\n    assert GREETING == \"{want}\"\n"),
    )
    .unwrap();
    std::fs::write(
        ws.join("canary-repo.yaml"),
        "id: sample\ntest: python3 -m pytest -q -p no:cacheprovider\n",
    )
    .unwrap();
    git(&ws, &["init", "-q", "-b", "main"]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "pinned"]);
    git(
        &ws,
        &["push", "-q", &format!("{forge}/git/{id}.git"), "HEAD:refs/heads/main"],
    );
}

pub(crate) fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn get(url: &str) -> serde_json::Value {
    let out = Command::new("curl").args(["-sf", url]).output().unwrap();
    assert!(out.status.success(), "GET {url}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn docker_sweeps_after_a_promotion_open_one_draft_pr_under_org_policies_and_survive_a_killed_worker() {
    require_lab();
    let image = Canary::new()
        .args(["images", "build", "--provider", "claude-code@sdk-0.2.186", "--json"])
        .run()
        .code(0)
        .json();
    let build = image["id"].as_str().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("r.db").display());
    let config = dir.path().join("canary.yaml");
    let orgs = dir.path().join("orgs");
    std::fs::create_dir_all(&orgs).unwrap();
    std::fs::write(&config, format!("orgs_dir: {}\n", orgs.display())).unwrap();
    // acme: enterprise; initech protects the package the fix would touch; globex is on Team
    // (one repo per promotion); umbrella has no policy file (the free plan: no sweeps).
    std::fs::write(orgs.join("acme.yaml"), "plan: enterprise\n").unwrap();
    std::fs::write(
        orgs.join("initech.yaml"),
        "plan: team\nsweeps:\n  protected_paths: [\"greeting/**\"]\n",
    )
    .unwrap();
    std::fs::write(orgs.join("globex.yaml"), "plan: team\n").unwrap();
    let policy = dir.path().join("gate.yaml");
    std::fs::write(&policy, GATE).unwrap();
    let canary = || {
        Canary::new()
            .args(["--registry", &db])
            .arg_path_flag("--config", &config)
    };

    // The lab forge on the lab's host, reached by sweep containers at their network's gateway.
    let net = Network(format!("canary-sweeps-{}", std::process::id()));
    docker(&["network", "create", "--label", "canary-lab.test=sweeps", &net.0]);
    let gateway = docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &net.0]);
    let port = free_port();
    let forge_url = format!("http://{gateway}:{port}");
    let _forge = Killed(
        Command::new(crate::helpers::runner_exe())
            .args([
                "lab-forge",
                "--listen",
                &format!("0.0.0.0:{port}"),
                "--public-url",
                &forge_url,
                "--root",
            ])
            .arg(dir.path().join("forge"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the forge", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let local = format!("http://127.0.0.1:{port}");
    let seeds = dir.path().join("seeds");
    let add = |id: &str| {
        let org = id.split('/').next().unwrap();
        canary()
            .args([
                "sweeps",
                "repos",
                "add",
                &format!("{forge_url}/git/{id}.git"),
                "--org",
                org,
            ])
            .run()
            .code(0);
    };
    for (id, want) in [
        ("acme/fixable", "Howdy"),
        ("acme/green", "Hello"),
        ("globex/one", "Hello"),
        ("globex/two", "Hello"),
        ("initech/protected", "Howdy"),
        ("umbrella/free", "Howdy"),
    ] {
        push_repo(&seeds, &local, id, want);
        add(id);
    }
    // A repo the forge does not have: its clone fails every try, and it ends dead with why.
    add("acme/missing");
    canary()
        .args([
            "sweeps",
            "repos",
            "add",
            "ext::sh -c touch% /tmp/pwned",
            "--org",
            "acme",
        ])
        .run()
        .code(2);
    assert_eq!(
        canary()
            .args(["sweeps", "repos", "list", "--json"])
            .run()
            .code(0)
            .json()
            .as_array()
            .unwrap()
            .len(),
        7
    );

    // The build's golden-path verdict is seeded: the sweeps are under test here.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let r = canary::registry::Registry::open(&db).await.unwrap();
            let labels = Command::new("docker")
                .args(["image", "inspect", "-f", "{{json .Config.Labels}}", &build])
                .output()
                .unwrap();
            let labels: std::collections::BTreeMap<String, String> =
                serde_json::from_slice(&labels.stdout).unwrap_or_default();
            let b = canary::registry::BuildInfo::from_image(
                &build.parse().unwrap(),
                image["reference"].as_str().unwrap(),
                &labels,
            );
            let rows: Vec<(String, String, String, &str)> = ["ci-enabled", "js-ts", "python"]
                .iter()
                .map(|repo| {
                    (
                        "run-sweeps".to_string(),
                        "golden-path".to_string(),
                        repo.to_string(),
                        "pass",
                    )
                })
                .collect();
            r.seed_results(&b, &rows).await.unwrap();
        });
    canary()
        .args(["promote", &build, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    let status = canary().args(["sweeps", "status", "--json"]).run().code(0).json();
    assert_eq!(
        status.as_array().unwrap().len(),
        7,
        "one job per opted-in repo: {status}"
    );
    // The same build again: nothing new.
    let again = canary()
        .args(["sweeps", "enqueue", &build, "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(again["enqueued"], 0, "{again}");

    // A worker is killed (SIGKILL) while it holds the first job; the next one takes it over once
    // its lease has run out.
    let scenario = dir.path().join("fix.yaml");
    std::fs::write(
        &scenario,
        "turns:\n  - edit: {file: greeting/__init__.py, replace: '\"Hello\"', with: '\"Howdy\"'}\n  - say: fixed the greeting\n",
    )
    .unwrap();
    let run_args = |c: Canary| {
        c.args([
            "sweeps",
            "run",
            "--lease",
            "25s",
            "--backoff",
            "1s",
            "--step-timeout",
            "2m",
        ])
        .arg_path_flag("--scenario", &scenario)
    };
    let (mut cmd, _r) = run_args(canary()).command();
    let mut first = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the first job to be claimed", Duration::from_secs(60), || {
        canary()
            .args(["sweeps", "status", "--json"])
            .run()
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["state"] == "running" && j["repo_id"] == "acme/fixable")
    });
    std::thread::sleep(Duration::from_secs(1));
    first.kill().unwrap();
    first.wait().unwrap();
    let all = canary().args(["sweeps", "status", "--json"]).run().json();
    let held: Vec<&serde_json::Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "running")
        .collect();
    assert_eq!(held.len(), 1, "{all:#}");
    assert_eq!(
        held[0]["repo_id"], "acme/fixable",
        "killed while it swept the fixable repo"
    );
    let killed_job = held[0]["id"].as_i64().unwrap();
    let _ = Command::new(env!("CARGO_BIN_EXE_canary")).args(["gc"]).output();

    let out = run_args(canary()).args(["--workers", "2", "--json"]).run();
    assert_eq!(out.out.status.code(), Some(1), "a job ended dead: {}", out.stderr());
    let jobs = canary().args(["sweeps", "status", "--json"]).run().code(0).json();
    let by_repo = |id: &str| -> serde_json::Value {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["repo_id"] == id)
            .unwrap()
            .clone()
    };
    eprintln!("{}", serde_json::to_string_pretty(&jobs).unwrap());
    for j in jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["repo_id"] != "acme/missing")
    {
        assert_eq!(j["state"], "done", "{j}");
    }
    let missing = by_repo("acme/missing");
    assert_eq!(
        (missing["state"].as_str(), missing["attempts"].as_i64()),
        (Some("dead"), Some(3)),
        "{missing}"
    );
    assert!(missing["reason"].as_str().unwrap().contains("cloning"), "{missing}");
    let fixable = by_repo("acme/fixable");
    assert_eq!(fixable["outcome"], "pr_opened", "{fixable}");
    assert_eq!(by_repo("acme/green")["outcome"], "nothing_to_propose");
    let protected = by_repo("initech/protected");
    assert_eq!(protected["outcome"], "dropped", "{protected}");
    assert!(
        protected["reason"].as_str().unwrap().contains("greeting/__init__.py"),
        "{protected}"
    );
    let globex: Vec<String> = ["globex/one", "globex/two"]
        .iter()
        .map(|r| by_repo(r)["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        globex.iter().filter(|o| *o == "skipped").count(),
        1,
        "the Team plan sweeps one repo per promotion: {globex:?}"
    );
    assert!(
        by_repo("umbrella/free")["reason"]
            .as_str()
            .unwrap()
            .contains("runs no sweeps")
    );
    let killed = jobs.as_array().unwrap().iter().find(|j| j["id"] == killed_job).unwrap();
    assert_eq!(killed["attempts"], 2, "taken over once: {killed}");

    // The forge holds exactly one pull request: a draft from a sweep branch into main.
    let pulls = get(&format!("{local}/repos/acme/fixable/pulls?state=all"));
    assert_eq!(pulls.as_array().unwrap().len(), 1, "{pulls}");
    assert_eq!(pulls[0]["draft"], true);
    assert_eq!(
        pulls[0]["changed_files"], 1,
        "only the fix, no check leftovers: {pulls}"
    );
    assert_eq!(pulls[0]["base"]["ref"], "main");
    assert!(pulls[0]["head"]["ref"].as_str().unwrap().starts_with("canary-sweep/"));
    assert!(pulls[0]["body"].as_str().unwrap().contains("### Failing before"));
    for other in ["acme/green", "initech/protected", "globex/one", "globex/two"] {
        let p = get(&format!("{local}/repos/{other}/pulls?state=all"));
        assert!(p.as_array().unwrap().is_empty(), "{other}: {p}");
    }

    // A person merges it; the KPI reads that back from the forge.
    let merged = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{local}/repos/acme/fixable/pulls/1/merge")])
        .output()
        .unwrap();
    assert!(merged.status.success());
    let kpis = canary().args(["sweeps", "kpis", "--json"]).run().code(0).json();
    let acme = kpis["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(
        (acme["opened"].as_u64(), acme["merged"].as_u64()),
        (Some(1), Some(1)),
        "{kpis}"
    );
    assert_eq!(acme["acceptance_pct"], 100.0);

    // `canary serve --sweep-workers` works the same queue: a repo opted in later and enqueued for
    // the build gets its draft PR from the control plane's own worker.
    push_repo(&seeds, &local, "acme/late", "Howdy");
    add("acme/late");
    let again = canary()
        .args(["sweeps", "enqueue", &build, "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(again["enqueued"], 1, "only the new repo: {again}");
    let serve_port = free_port();
    let (mut cmd, _r) = canary()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{serve_port}"),
            "--sweep-workers",
            "1",
        ])
        .args(["--sweep-network", &net.0])
        .arg_path_flag("--sweep-scenario", &scenario)
        .command();
    let _serve = Killed(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    wait_for(
        "the control plane's worker to sweep the new repo",
        Duration::from_secs(120),
        || {
            canary()
                .args(["sweeps", "status", "--json"])
                .run()
                .json()
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["repo_id"] == "acme/late" && j["state"] == "done")
        },
    );
    let late = canary().args(["sweeps", "status", "--json"]).run().code(0).json();
    let late = late
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["repo_id"] == "acme/late")
        .unwrap()
        .clone();
    assert_eq!(late["outcome"], "pr_opened", "{late}");
    let pulls = get(&format!("{local}/repos/acme/late/pulls?state=all"));
    assert_eq!(pulls.as_array().unwrap().len(), 1, "{pulls}");
}
