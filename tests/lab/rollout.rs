//! Staged rollouts end to end: `canary serve` (the control plane and its rollout controller) as
//! a real process on loopback, a simulated fleet posting telemetry over HTTP, the CLI reading
//! and operating the rollout, and `kill -9` of the control plane mid-rollout.

use crate::helpers::{Canary, free_port, webhook, write_temp};
use crate::registry::{Backend, Fresh, fresh};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub(crate) const GATE: &str = "\
stable:
  required_suites: [golden-path]
  rollout:
    steps: [1, 10, 50, 100]
    bake: 1s
    min_sessions: 100
    max_failure_rate_increase: 0.1
    max_disconnect_rate_increase: 0.1
    max_start_latency_p95_ratio: 2
beta:
  required_suites: [golden-path]
  allow_missing: true
";

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One HTTP request: `method` to `url` with an optional bearer token, headers and body; the
/// status, content type and body.
pub(crate) fn request(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    rt().block_on(async {
        canary::init_tls();
        let mut req = reqwest::Client::new().request(method, url).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let kind = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (r.status().as_u16(), kind, r.bytes().await.unwrap().to_vec())
    })
}

/// Records a build with golden-path results on every canary repo (`status` for each).
fn seed_build(url: &str, digit: char, status: &str) -> String {
    let id = format!("sha256:{}", std::iter::repeat_n(digit, 64).collect::<String>());
    seed_build_id(url, &id, status);
    id
}

/// Records the build `id` with golden-path results on every canary repo (`status` for each).
pub(crate) fn seed_build_id(url: &str, id: &str, status: &str) {
    let digit = &id[7..8];
    let build = canary::registry::BuildInfo::from_image(
        &id.parse().unwrap(),
        &format!("canary-lab/build:{digit}"),
        &Default::default(),
    );
    let rows: Vec<(String, String, String, &str)> = ["ci-enabled", "js-ts", "python"]
        .iter()
        .map(|repo| {
            (
                format!("run-{digit}"),
                "golden-path".to_string(),
                repo.to_string(),
                status,
            )
        })
        .collect();
    rt().block_on(async {
        let reg = canary::registry::Registry::open(url).await.unwrap();
        reg.seed_results(&build, &rows).await.unwrap();
    });
}

pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) url: String,
    port: u16,
    /// An operator's token, for the pages.
    pub(crate) ops: String,
}

impl Serve {
    /// A page (or API answer) of the control plane, as the operator's browser asks for it.
    pub(crate) fn page(&self, path: &str) -> String {
        rt().block_on(async {
            canary::init_tls();
            reqwest::Client::new()
                .get(format!("{}{path}", self.url))
                .bearer_auth(&self.ops)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(reg: &Fresh, policy: &std::path::Path, port: u16) -> Serve {
    serve_with(reg, policy, port, &[])
}

/// `canary serve` with `extra` flags.
pub(crate) fn serve_with(reg: &Fresh, policy: &std::path::Path, port: u16, extra: &[&str]) -> Serve {
    let ops = canary(reg)
        .args([
            "tokens",
            "create",
            "--operator",
            "release-desk",
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
    let (mut cmd, _reports) = canary(reg)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--tick", "200ms"])
        .args(extra)
        .arg_path_flag("--policy", policy)
        .command();
    let child = cmd.stderr(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "canary serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve { child, url, port, ops }
}

/// A runner's token bound to org acme, as `canary tokens create` prints it.
pub(crate) fn runner_token(reg: &Fresh, runner: &str) -> String {
    canary(reg)
        .args(["tokens", "create", "--runner", runner, "--org", "acme", "--json"])
        .run()
        .code(0)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `canary rollout start BUILD --channel stable` with the test's policy and `flags`; it starts.
pub(crate) fn start_rollout(reg: &Fresh, policy: &std::path::Path, build: &str, flags: &[&str]) {
    canary(reg)
        .args(["rollout", "start", build, "--channel", "stable"])
        .args(flags)
        .arg_path_flag("--policy", policy)
        .run()
        .code(0);
}

pub(crate) fn canary(reg: &Fresh) -> Canary {
    Canary::new().args(["--registry", &reg.url])
}

pub(crate) fn status(reg: &Fresh, policy: &std::path::Path) -> serde_json::Value {
    let out = canary(reg)
        .args(["rollout", "status", "--channel", "stable", "--json"])
        .arg_path_flag("--policy", policy)
        .run();
    out.json()
}

pub(crate) fn simulate(reg: &Fresh, s: &Serve, sessions: u64, profiles: &[&str], orgs: &[&str]) -> serde_json::Value {
    simulate_at(&reg.url, &s.url, sessions, profiles, orgs)
}

/// A simulated fleet (its tokens issued in the registry at `registry`) against the control
/// plane at `url` (a replica, or a load balancer).
pub(crate) fn simulate_at(
    registry: &str,
    url: &str,
    sessions: u64,
    profiles: &[&str],
    orgs: &[&str],
) -> serde_json::Value {
    let mut c = Canary::new().args(["--registry", registry]).args([
        "fleet",
        "simulate",
        "--server",
        url,
        "--runners",
        "8",
        "--sessions",
        &sessions.to_string(),
        "--batch",
        "250",
        "--json",
    ]);
    for p in profiles {
        c = c.args(["--profile", p]);
    }
    for o in orgs {
        c = c.args(["--org", o]);
    }
    c.run().code(0).json()
}

/// Feeds the fleet until the rollout leaves `running` at a step or `stop` says enough.
pub(crate) fn drive(
    reg: &Fresh,
    s: &Serve,
    policy: &std::path::Path,
    profiles: &[&str],
    rounds: usize,
) -> serde_json::Value {
    for _ in 0..rounds {
        let st = status(reg, policy);
        if st["rollout"]["state"] != "running" {
            return st;
        }
        simulate(reg, s, 4000, profiles, &["acme", "globex"]);
        std::thread::sleep(Duration::from_millis(1300));
    }
    status(reg, policy)
}

fn setup(b: Backend) -> (Fresh, tempfile::TempDir, std::path::PathBuf, String, String) {
    setup_with(b, GATE)
}

pub(crate) fn setup_with(b: Backend, gate: &str) -> (Fresh, tempfile::TempDir, std::path::PathBuf, String, String) {
    let reg = fresh(b);
    let (dir, policy) = write_temp("gate.yaml", gate);
    let base = seed_build(&reg.url, 'a', "pass");
    let cand = seed_build(&reg.url, 'b', "pass");
    canary(&reg)
        .args(["promote", &base, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    (reg, dir, policy, base, cand)
}

/// The stable channel's build, as `canary status --json` shows it.
pub(crate) fn channel_build(reg: &Fresh) -> String {
    let out = canary(reg).args(["status", "--json"]).run().code(0).json();
    let stable = out["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "stable")
        .cloned();
    stable
        .and_then(|c| c["build"].as_str().map(String::from))
        .unwrap_or_default()
}

pub(crate) fn kinds(st: &serde_json::Value) -> Vec<String> {
    st["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}@{}", e["kind"].as_str().unwrap(), e["step"]))
        .collect()
}

#[test]
fn a_good_build_rolls_out_step_by_step_and_survives_a_kill_of_the_control_plane() {
    let (reg, _d, policy, base, cand) = setup(Backend::Sqlite);
    let mut s = serve(&reg, &policy, free_port());
    // A build the gate refuses is refused here too (exit 1), audited.
    let red = seed_build(&reg.url, 'c', "fail");
    canary(&reg)
        .args(["rollout", "start", &red, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(1)
        .stderr_has("golden-path");
    canary(&reg)
        .args(["pin", "--org", "initech", "--build", &base])
        .run()
        .code(0);
    canary(&reg)
        .args(["rollout", "start", &cand, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0)
        .stdout_has("1 → 10 → 50 → 100");

    // Without telemetry the rollout holds at step 1 and says why.
    std::thread::sleep(Duration::from_millis(1500));
    let st = status(&reg, &policy);
    assert_eq!(
        (st["rollout"]["step"].as_u64(), st["rollout"]["state"].as_str()),
        (Some(0), Some("running"))
    );
    assert!(
        st["rollout"]["note"]
            .as_str()
            .unwrap()
            .contains("holding: the candidate has 0 of the 100 sessions"),
        "{st}"
    );

    // Feed it until it reaches 10 %, then kill the control plane (no shutdown) and restart it.
    let mut st = st;
    for _ in 0..20 {
        if st["rollout"]["step"].as_u64() >= Some(1) {
            break;
        }
        simulate(&reg, &s, 1500, &["*=fail:0.01,latency:900"], &["acme", "globex"]);
        std::thread::sleep(Duration::from_millis(300));
        st = status(&reg, &policy);
    }
    assert!(
        st["rollout"]["step"].as_u64() >= Some(1) && st["rollout"]["state"] == "running",
        "{st}"
    );
    let holds = kinds(&st).iter().filter(|k| k.starts_with("hold@0")).count();
    assert!(
        holds <= 3,
        "a lasting hold is one event per reason, not one per pass: {st}"
    );
    let step_before = st["rollout"]["step"].clone();
    unsafe {
        libc::kill(s.child.id() as i32, libc::SIGKILL);
    }
    let _ = s.child.wait();
    let port = s.port;
    drop(s);
    let st = status(&reg, &policy);
    assert_eq!(st["rollout"]["step"], step_before, "the step survives the kill");
    s = serve(&reg, &policy, port);

    // A pinned org is never given the candidate, whatever the step.
    let pinned = simulate(&reg, &s, 400, &[], &["initech"]);
    assert_eq!(
        pinned["by_build"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&base],
        "{pinned}"
    );
    assert_eq!(pinned["by_source"]["pin"], 400);
    // A frozen org stays on the channel's build while the rollout runs.
    canary(&reg).args(["freeze", "--org", "umbrella"]).run().code(0);
    std::thread::sleep(Duration::from_millis(1100));
    let frozen = simulate(&reg, &s, 300, &[], &["umbrella"]);
    assert_eq!(frozen["by_source"]["frozen"], 300, "{frozen}");
    assert_eq!(
        frozen["by_build"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&base]
    );

    let st = drive(&reg, &s, &policy, &["*=fail:0.01,latency:900"], 25);
    assert_eq!(st["rollout"]["state"], "completed", "{st}");
    // Every transition once: start, three advances, complete (holds may come between).
    let k: Vec<String> = kinds(&st).into_iter().filter(|k| !k.starts_with("hold")).collect();
    assert_eq!(
        k,
        ["start@0", "advance@1", "advance@2", "advance@3", "complete@3"],
        "{st}"
    );
    assert_eq!(channel_build(&reg), cand);
    // The fleet page charts what the telemetry says, per build, as inline SVG.
    let fleet = s.page("/fleet");
    std::fs::write(std::env::temp_dir().join("canary-fleet-page.html"), &fleet).unwrap();
    assert!(
        fleet.contains("Session KPIs") && fleet.contains(&format!("data-build=\"{cand}\"")),
        "{fleet}"
    );
    assert!(
        fleet.contains("<svg") && fleet.contains("failure rate") && fleet.contains("<polyline"),
        "{fleet}"
    );
    let audit = canary(&reg)
        .args(["registry", "audit", "--json"])
        .run()
        .code(0)
        .stdout();
    assert!(
        audit.contains("rollout-controller") && audit.contains("failure rate"),
        "{audit}"
    );
}

#[test]
fn a_build_failing_a_fifth_of_its_sessions_is_rolled_back_at_the_first_step() {
    let (reg, _d, policy, base, cand) = setup(Backend::Sqlite);
    let s = serve(&reg, &policy, free_port());
    start_rollout(&reg, &policy, &cand, &["--bake", "1h"]);
    // Operators can hold it and let it go on; a second start on the channel is refused.
    canary(&reg)
        .args(["rollout", "pause", "--channel", "stable", "--reason", "looking"])
        .run()
        .code(0)
        .stdout_has("paused");
    canary(&reg)
        .args(["rollout", "pause", "--channel", "stable"])
        .run()
        .code(1)
        .stderr_has("is paused, so it cannot be paused");
    canary(&reg)
        .args(["rollout", "resume", "--channel", "stable"])
        .run()
        .code(0)
        .stdout_has("running");
    canary(&reg)
        .args(["rollout", "start", &cand, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(1)
        .stderr_has("in progress");
    let bad = format!("{}=fail:0.2,latency:900", &cand[7..19]);
    let st = drive(&reg, &s, &policy, &[&bad, "*=fail:0.01,latency:900"], 20);
    assert_eq!(st["rollout"]["state"], "aborted", "{st}");
    assert_eq!(st["rollout"]["step"], 0, "aborted at the first step: {st}");
    assert!(st["rollout"]["note"].as_str().unwrap().contains("failure rate"), "{st}");
    canary(&reg)
        .args(["rollout", "status", "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(1);
    // Every session is back on the baseline at once.
    std::thread::sleep(Duration::from_millis(1200));
    let after = simulate(&reg, &s, 500, &[], &["acme"]);
    assert_eq!(
        after["by_build"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&base],
        "{after}"
    );
    assert_eq!(channel_build(&reg), base);
    // The dashboard's overview shows it: state, figures against thresholds, timeline.
    let page = s.page("/");
    assert!(page.contains("Rollouts") && page.contains("state-aborted"), "{page}");
    assert!(page.contains("aborted: failure rate"), "{page}");
}

/// Candidate and baseline are drawn from the orgs the rollout judges: an org on beta, which runs
/// the candidate already, failing half its sessions and a frozen org
/// whose baseline sessions fail as badly count on neither side, so a healthy candidate moves on.
/// Before cohorts, the pinned org's failures were the candidate's and aborted it.
#[test]
fn sessions_of_pinned_and_frozen_orgs_count_on_neither_side() {
    let (reg, _d, policy, base, cand) = setup(Backend::Sqlite);
    // Org early follows beta, which runs the candidate already.
    canary(&reg)
        .args(["promote", &cand, "--channel", "beta"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    canary(&reg)
        .args(["pin", "--org", "early", "--channel", "beta"])
        .run()
        .code(0);
    canary(&reg).args(["freeze", "--org", "frozen"]).run().code(0);
    let s = serve(&reg, &policy, free_port());
    start_rollout(&reg, &policy, &cand, &["--bake", "3s"]);
    std::thread::sleep(Duration::from_millis(1200));
    let outside = simulate(&reg, &s, 600, &["*=fail:0.5,latency:900"], &["early", "frozen"]);
    assert_eq!(outside["by_build"][&cand]["sessions"], 300, "{outside}");
    assert_eq!(outside["by_build"][&base]["sessions"], 300, "{outside}");
    assert!(
        outside["by_build"][&cand]["failed"].as_u64().unwrap() > 100,
        "{outside}"
    );
    let st = drive(&reg, &s, &policy, &["*=fail:0.01,latency:900"], 20);
    assert!(
        st["rollout"]["state"] == "completed" || st["rollout"]["step"].as_u64() >= Some(1),
        "the candidate moved on: {st}"
    );
    assert!(
        !kinds(&st).iter().any(|k| k.starts_with("abort")),
        "never aborted: {st}"
    );
}

#[test]
fn a_candidate_whose_runners_drop_sessions_is_held_by_the_sample_ratio_guard_sqlite() {
    a_candidate_whose_runners_drop_sessions_is_held_by_the_sample_ratio_guard(Backend::Sqlite);
}

#[test]
fn a_candidate_whose_runners_drop_sessions_is_held_by_the_sample_ratio_guard_postgres() {
    a_candidate_whose_runners_drop_sessions_is_held_by_the_sample_ratio_guard(Backend::Postgres);
}

fn a_candidate_whose_runners_drop_sessions_is_held_by_the_sample_ratio_guard(b: Backend) {
    // Sessions count for the guard two seconds after assignment (the simulated runners report
    // within that), and the step never bakes out.
    let (hook, got) = webhook();
    let gate = GATE.replace(
        "    bake: 1s\n",
        &format!("    bake: 1h\n    sample_ratio: {{action: hold, settle: 2s}}\n    alerts: {{webhook: '{hook}', held_after: 2s}}\n"),
    );
    let (reg, _d, policy, _base, cand) = setup_with(b, &gate);
    let s = serve(&reg, &policy, free_port());
    start_rollout(&reg, &policy, &cand, &["--steps", "10,100"]);
    let lossy = format!("{}=fail:0.01,latency:900,drop:0.3", &cand[7..19]);
    let mut st = status(&reg, &policy);
    let mut dropped = 0;
    for _ in 0..8 {
        let sim = simulate(
            &reg,
            &s,
            4000,
            &[&lossy, "*=fail:0.01,latency:900"],
            &["acme", "globex"],
        );
        dropped += sim["dropped"].as_u64().unwrap();
        std::thread::sleep(Duration::from_millis(1300));
        st = status(&reg, &policy);
        if st["rollout"]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("sample ratio")
        {
            break;
        }
    }
    assert!(dropped > 0, "the simulator dropped nothing: {st}");
    assert_eq!(st["rollout"]["state"], "running", "{st}");
    assert_eq!(st["rollout"]["step"], 0, "{st}");
    let note = st["rollout"]["note"].as_str().unwrap();
    assert!(note.starts_with("holding: sample ratio: the candidate has"), "{note}");
    assert!(note.contains("a mismatch"), "{note}");
    assert!(kinds(&st).contains(&"hold@0".to_string()), "{st}");
    // The on-call channel is told, in Slack's format: started, the mismatch once, and each hold
    // that lasted past held_after once.
    let texts = wait_for_alerts(&got, |t| {
        t.iter()
            .any(|t| t.contains("is holding at step 1 of 2 (10 % of sessions): sample ratio"))
    });
    let count = |what: &str| texts.iter().filter(|t| t.contains(what)).count();
    assert!(
        texts[0].contains("started at step 1 of 2 (10 % of sessions)"),
        "{texts:?}"
    );
    assert_eq!(count("started"), 1, "{texts:?}");
    assert_eq!(
        count("holds at step 1 of 2 (10 % of sessions): sample-ratio mismatch: sample ratio: the candidate has"),
        1,
        "{texts:?}"
    );
    assert_eq!(
        count("is holding at step 1 of 2 (10 % of sessions): sample ratio"),
        1,
        "{texts:?}"
    );
    let holds: std::collections::BTreeSet<_> = texts.iter().filter(|t| t.contains("is holding")).collect();
    assert_eq!(holds.len(), count("is holding"), "one message per hold: {texts:?}");
}

/// The alert texts a receiver got, once `done` says they are all there (or 20 s have passed) and
/// a second more has brought nothing else.
fn wait_for_alerts(got: &std::sync::Mutex<Vec<serde_json::Value>>, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let texts = || -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .map(|b| b["text"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(&texts()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    texts()
}

#[test]
fn a_candidate_whose_sessions_cost_twice_as_much_is_rolled_back_by_its_guardrail() {
    let gate = GATE.replace(
        "    bake: 1s\n",
        "    bake: 1h\n    guardrails:\n      - {metric: cost_per_session, max_relative_increase: 0.25}\n",
    );
    let (reg, _d, policy, base, cand) = setup_with(Backend::Sqlite, &gate);
    let s = serve(&reg, &policy, free_port());
    start_rollout(&reg, &policy, &cand, &["--steps", "10,100"]);
    // Failures, disconnects and latency alike: only the cost differs.
    let dear = format!("{}=fail:0.01,latency:900,cost:2", &cand[7..19]);
    let st = drive(&reg, &s, &policy, &[&dear, "*=fail:0.01,latency:900"], 20);
    assert_eq!(st["rollout"]["state"], "aborted", "{st}");
    let note = st["rollout"]["note"].as_str().unwrap();
    assert!(note.starts_with("aborted: cost per session $0."), "{note}");
    assert!(note.contains("more than the 25 % ($0.0"), "{note}");
    assert_eq!(channel_build(&reg), base);
}

/// `GET /v1/assignment` for each (session, conversation), as a runner asks: the answers.
fn assign(s: &Serve, token: &str, asks: impl Iterator<Item = (String, String)>) -> Vec<serde_json::Value> {
    rt().block_on(async {
        canary::init_tls();
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        for (session, conversation) in asks {
            let r = client
                .get(format!(
                    "{}/v1/assignment?runner=conv&org=acme&session={session}&conversation={conversation}",
                    s.url
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            out.push(serde_json::from_str(&r.text().await.unwrap()).unwrap());
        }
        out
    })
}

#[test]
fn a_conversation_keeps_its_build_when_the_rollout_moves_to_the_next_step() {
    let gate = GATE.replace(
        "    steps: [1, 10, 50, 100]\n",
        "    steps: [10, 50, 100]\n    bake: 1h\n",
    );
    let gate = gate.replacen("    bake: 1s\n", "", 1);
    let (reg, _d, policy, base, cand) = setup_with(Backend::Sqlite, &gate);
    let token = runner_token(&reg, "conv");
    let s = serve(&reg, &policy, free_port());
    start_rollout(&reg, &policy, &cand, &[]);
    std::thread::sleep(Duration::from_millis(1200));
    // 400 conversations start at the 10 % step.
    let first: Vec<String> = assign(&s, &token, (0..400).map(|c| (format!("first-{c}"), format!("c-{c}"))))
        .iter()
        .map(|a| a["build"].as_str().unwrap().to_string())
        .collect();
    let on_candidate = first.iter().filter(|b| **b == cand).count();
    assert!((20..=70).contains(&on_candidate), "{on_candidate} of 400 at 10 %");
    // An operator moves it on: the bake is an hour, so a pause and resume is not it; the test
    // advances by writing the next step as the controller would.
    rt().block_on(async {
        let r = canary::registry::Registry::open(&reg.url).await.unwrap();
        let row = r.rollout(1).await.unwrap().unwrap();
        let moved = r
            .transition(canary::registry::Transition {
                id: 1,
                revision: row.revision,
                state: canary::rollout::State::Running,
                step: 1,
                ring: 0,
                restart_step: true,
                note: "step 2 of 3: 50 % of sessions",
                kind: canary::rollout::EventKind::Advance,
                figures: serde_json::json!({}),
                release: false,
                audit: canary::registry::Audit {
                    actor: "test",
                    action: "rollout",
                    target: "rollout 1",
                    decision: "advance",
                    reason: "",
                    evidence: serde_json::json!({}),
                },
            })
            .await
            .unwrap();
        assert!(moved);
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Every conversation resumed at 50 % keeps its build; new ones are drawn at 50 %.
    let again = assign(&s, &token, (0..400).map(|c| (format!("second-{c}"), format!("c-{c}"))));
    for (c, (a, was)) in again.iter().zip(&first).enumerate() {
        assert_eq!(a["step"], 1, "{a}");
        assert_eq!(
            a["build"].as_str().unwrap(),
            was,
            "conversation c-{c} changed build: {a}"
        );
        assert_eq!(a["sticky"], true, "{a}");
    }
    let fresh = assign(&s, &token, (0..400).map(|c| (format!("new-{c}"), format!("n-{c}"))))
        .iter()
        .filter(|a| a["build"] == cand.as_str())
        .count();
    assert!((140..=260).contains(&fresh), "{fresh} of 400 new conversations at 50 %");
    // An abort sends every conversation back to the baseline at once.
    canary(&reg)
        .args(["rollout", "abort", "--channel", "stable", "--reason", "test"])
        .run()
        .code(0);
    std::thread::sleep(Duration::from_millis(1500));
    for a in assign(&s, &token, (0..400).map(|c| (format!("third-{c}"), format!("c-{c}")))) {
        assert_eq!(a["build"].as_str().unwrap(), base, "{a}");
    }
}

#[test]
fn a_build_green_on_beta_rolls_out_to_stable_by_itself_and_waits_for_approval_at_50() {
    // stable follows beta: a build beta has run for a second over 200 sessions starts its own
    // rollout on stable; the 50 % step waits for an operator.
    let gate = GATE.replace(
        "    steps: [1, 10, 50, 100]\n",
        "    steps: [10, 50, 100]\n    auto_after: {channel: beta, soak: 1s, min_sessions: 200}\n    approve_before: [50]\n",
    );
    let (reg, _d, policy, base, cand) = setup_with(Backend::Sqlite, &gate);
    // Beta's orgs run beta's build; the pipeline promotes a green candidate to beta as this does.
    canary(&reg)
        .args(["pin", "--org", "beta-org", "--channel", "beta"])
        .run()
        .code(0);
    canary(&reg)
        .args(["promote", &cand, "--channel", "beta"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    let s = serve(&reg, &policy, free_port());
    // Not yet: beta has not run it.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(status_of(&reg).is_none(), "started before beta ran the build");
    let beta = simulate(&reg, &s, 400, &["*=fail:0.01,latency:900"], &["beta-org"]);
    assert_eq!(beta["by_build"][&cand]["sessions"], 400, "{beta}");
    // No command typed: the train starts it, as its audit entry says.
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        if let Some(st) = status_of(&reg) {
            break st;
        }
        assert!(Instant::now() < deadline, "the train never started the rollout");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(started["rollout"]["actor"], "rollout-train", "{started}");
    assert_eq!(started["rollout"]["build_id"], cand.as_str(), "{started}");
    let first = simulate(&reg, &s, 2000, &[], &["acme"]);
    let on_candidate = first["by_build"][&cand]["sessions"].as_u64().unwrap_or(0);
    assert!(
        (100..=320).contains(&on_candidate),
        "{on_candidate} of 2000 stable sessions at 10 %: {first}"
    );
    // The 10 % step passes and then holds for an approval, saying how to give it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        simulate(&reg, &s, 2000, &["*=fail:0.01,latency:900"], &["acme"]);
        std::thread::sleep(Duration::from_millis(1300));
        let st = status(&reg, &policy);
        if st["rollout"]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("awaiting an operator's approval")
        {
            break st;
        }
        assert!(Instant::now() < deadline, "never held for approval: {st}");
    };
    assert_eq!(held["rollout"]["step"], 0, "{held}");
    assert!(
        held["rollout"]["note"]
            .as_str()
            .unwrap()
            .contains("go to 50 % (step 2 of 3): `canary rollout approve --channel stable`"),
        "{held}"
    );
    // An operator approves (audited); approving it again is refused. Paused meanwhile, so the
    // controller does not move it on between the two.
    canary(&reg)
        .args(["rollout", "pause", "--channel", "stable"])
        .run()
        .code(0);
    canary(&reg)
        .args([
            "rollout",
            "approve",
            "--channel",
            "stable",
            "--actor",
            "dana",
            "--reason",
            "looks fine",
        ])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    canary(&reg)
        .args(["rollout", "approve", "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(1)
        .stderr_has("already approved");
    canary(&reg)
        .args(["rollout", "resume", "--channel", "stable"])
        .run()
        .code(0);
    let st = drive(&reg, &s, &policy, &["*=fail:0.01,latency:900"], 20);
    assert_eq!(st["rollout"]["state"], "completed", "{st}");
    assert!(kinds(&st).contains(&"approve@0".to_string()), "{st}");
    assert_eq!(channel_build(&reg), cand);
    assert_ne!(cand, base);
}

/// The stable channel's rollout as `canary rollout status --json` shows it, if there is one.
fn status_of(reg: &Fresh) -> Option<serde_json::Value> {
    let out = canary(reg).args(["rollout", "list", "--json"]).run().code(0).json();
    out.as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "stable")
        .map(|r| serde_json::json!({"rollout": r}))
}

/// Healthy sessions of `build`, stored as telemetry that arrived now, in the comparison of the
/// first rollout's first ring.
fn healthy(reg: &canary::registry::Registry, build: &str, prefix: &str, n: usize) {
    let sessions: Vec<canary::telemetry::Session> = (0..n)
        .map(|i| canary::telemetry::Session {
            runner: "r".into(),
            org: "acme".into(),
            session: format!("{prefix}-{i}"),
            build: build.parse().unwrap(),
            started_at: canary::registry::now(),
            start_latency_ms: Some(900),
            outcome: canary::telemetry::SessionEnd::Ok,
            usage: canary::telemetry::SessionUsage {
                commands: 3,
                commands_failed: 0,
                approvals: 0,
                approval_wait_ms: 0,
                tokens: 1000,
                cost_micros: 10_000,
                duration_ms: 60_000,
            },
            usage_from_otel: false,
            cohort: canary::rollout::cohort_label(1, 0),
        })
        .collect();
    rt().block_on(reg.ingest(&sessions, jiff::Timestamp::now())).unwrap();
}

#[test]
fn the_last_step_is_judged_against_the_baseline_it_replaced_and_completes() {
    // At 100 % no baseline session runs beside the candidate: the step's own window has none,
    // so the last step reads the baseline since the rollout started (it held forever otherwise).
    let gate = GATE
        .replace("    steps: [1, 10, 50, 100]\n", "    steps: [50, 100]\n")
        .replace("    bake: 1s\n", "    bake: 0s\n");
    let (reg, _d, policy_file, base, cand) = setup_with(Backend::Sqlite, &gate);
    canary(&reg)
        .args(["rollout", "start", &cand, "--channel", "stable"])
        .arg_path_flag("--policy", &policy_file)
        .run()
        .code(0);
    let policy = canary::gate::policy::Policy::load(Some(&policy_file)).unwrap();
    let r = rt().block_on(canary::registry::Registry::open(&reg.url)).unwrap();
    let tick = || {
        rt().block_on(canary::rollout::controller::tick(&r, &policy, jiff::Timestamp::now()))
            .unwrap()
    };
    healthy(&r, &cand, "c1", 150);
    healthy(&r, &base, "b1", 150);
    assert_eq!(
        tick()[0].action,
        Some(canary::rollout::EventKind::Advance),
        "50 % passes"
    );
    std::thread::sleep(Duration::from_millis(1100));
    healthy(&r, &cand, "c2", 300);
    let done = tick();
    assert_eq!(
        done[0].action,
        Some(canary::rollout::EventKind::Complete),
        "{:?}",
        done[0]
    );
    assert_eq!(channel_build(&reg), cand);
}

#[test]
fn rings_go_through_the_steps_one_after_another() {
    // staff is the first ring; everyone else (acme, globex) waits on the baseline until it is
    // through every step.
    let gate = GATE.replace(
        "    steps: [1, 10, 50, 100]\n",
        "    steps: [50, 100]\n    rings: [{name: internal, orgs: [staff]}]\n",
    );
    let (reg, _d, policy, base, cand) = setup_with(Backend::Sqlite, &gate);
    let s = serve(&reg, &policy, free_port());
    let started = canary(&reg)
        .args(["rollout", "start", &cand, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    started.stdout_has("ring 1 of 2 (internal), step 1 of 2: 50 % of sessions");
    std::thread::sleep(Duration::from_millis(1200));
    let waiting = simulate(&reg, &s, 600, &[], &["acme", "globex"]);
    assert_eq!(
        waiting["by_build"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&base],
        "the last ring runs the baseline while the first goes: {waiting}"
    );
    let page = s.page("/");
    assert!(page.contains(" · ring 1 of 2 (internal) · step 1 of 2"), "{page}");
    let mut st = status(&reg, &policy);
    for _ in 0..30 {
        if st["rollout"]["state"] != "running" {
            break;
        }
        simulate(
            &reg,
            &s,
            3000,
            &["*=fail:0.01,latency:900"],
            &["staff", "acme", "globex"],
        );
        std::thread::sleep(Duration::from_millis(1300));
        st = status(&reg, &policy);
    }
    assert_eq!(st["rollout"]["state"], "completed", "{st}");
    let moves: Vec<String> = kinds(&st)
        .into_iter()
        .filter(|k| !k.starts_with("hold") && !k.starts_with("wait"))
        .collect();
    assert_eq!(
        moves,
        ["start@0", "advance@1", "advance@0", "advance@1", "complete@1"],
        "ring 1's two steps, then ring 2's: {st}"
    );
    // The controller's advances, as the audit log has them, oldest first.
    let advances: Vec<String> = rt().block_on(async {
        let r = canary::registry::Registry::open(&reg.url).await.unwrap();
        let only = canary::registry::AuditFilter {
            actor: "rollout-controller".into(),
            ..Default::default()
        };
        let rows = r.audit_page(&only, 100, 0).await.unwrap();
        rows.into_iter()
            .rev()
            .filter(|a| a.decision == "advance")
            .map(|a| a.reason)
            .collect()
    });
    assert_eq!(
        advances,
        [
            "ring 1 of 2 (internal), step 2 of 2: 100 % of sessions",
            "ring 2 of 2 (everyone else), step 1 of 2: 50 % of sessions",
            "ring 2 of 2 (everyone else), step 2 of 2: 100 % of sessions",
        ],
        "{st}"
    );
    assert_eq!(channel_build(&reg), cand);
}

#[test]
fn an_on_call_webhook_gets_exactly_one_message_per_transition() {
    let (hook, got) = webhook();
    let gate = GATE.replace(
        "    steps: [1, 10, 50, 100]\n",
        &format!("    steps: [50, 100]\n    alerts: {{webhook: '{hook}', format: generic, held_after: 1h}}\n"),
    );
    let (reg, _d, policy, _base, cand) = setup_with(Backend::Sqlite, &gate);
    let s = serve(&reg, &policy, free_port());
    start_rollout(&reg, &policy, &cand, &[]);
    let st = drive(&reg, &s, &policy, &["*=fail:0.01,latency:900"], 20);
    assert_eq!(st["rollout"]["state"], "completed", "{st}");
    wait_for_alerts(&got, |t| t.len() >= 3);
    let bodies = got.lock().unwrap().clone();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "canary.rollout.started",
            "canary.rollout.advanced",
            "canary.rollout.completed"
        ],
        "{bodies:?}"
    );
    assert_eq!(bodies[1]["percent"], 100.0, "{bodies:?}");
    assert_eq!(bodies[2]["build"], cand.as_str(), "{bodies:?}");
    // Each delivery is in the audit log.
    let audit = rt().block_on(async {
        let r = canary::registry::Registry::open(&reg.url).await.unwrap();
        let only = canary::registry::AuditFilter {
            action: "alert".into(),
            ..Default::default()
        };
        r.audit_page(&only, 100, 0).await.unwrap()
    });
    assert_eq!(audit.len(), 3, "{audit:?}");
    assert!(
        audit
            .iter()
            .all(|a| a.decision == "delivered" && a.target.contains(&hook)),
        "{audit:?}"
    );
}

#[test]
fn runner_endpoints_take_only_valid_authenticated_input_sqlite() {
    runner_endpoints_take_only_valid_authenticated_input(Backend::Sqlite)
}

#[test]
fn runner_endpoints_take_only_valid_authenticated_input_postgres() {
    runner_endpoints_take_only_valid_authenticated_input(Backend::Postgres)
}

fn runner_endpoints_take_only_valid_authenticated_input(b: Backend) {
    let (reg, _d, policy, base, cand) = setup(b);
    let s = serve(&reg, &policy, free_port());
    let token = canary(&reg)
        .args(["tokens", "create", "--runner", "r-1", "--org", "acme", "--json"])
        .run()
        .code(0)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let session = |id: &str, build: &str| {
        serde_json::json!({"runner": "r-1", "org": "acme", "session": id, "build": build,
            "started_at": canary::registry::now(), "start_latency_ms": 800, "outcome": "ok",
            "commands": 3, "commands_failed": 0, "approvals": 1, "approval_wait_ms": 4000,
            "tokens": 1000, "cost_usd": 0.1, "duration_ms": 60000})
    };
    let count = || -> i64 {
        rt().block_on(async {
            canary::registry::Registry::open(&reg.url)
                .await
                .unwrap()
                .telemetry_count()
                .await
                .unwrap()
        })
    };
    rt().block_on(async {
        canary::init_tls();
        let c = reqwest::Client::new();
        let post = |auth: Option<String>, body: String| {
            let mut r = c.post(format!("{}/v1/telemetry", s.url)).body(body);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            r.send()
        };
        let good = serde_json::json!({"sessions": [session("s-1", &base), session("s-2", &base)]}).to_string();
        let bearer = Some(format!("Bearer {token}"));
        let assign = |runner: &str, org: &str, id: &str| {
            c.get(format!(
                "{}/v1/assignment?runner={runner}&org={org}&session={id}",
                s.url
            ))
            .header("authorization", bearer.clone().unwrap())
            .send()
        };
        // Telemetry is taken only for sessions the control plane assigned to this runner.
        let unassigned = post(bearer.clone(), good.clone()).await.unwrap();
        assert_eq!(unassigned.status().as_u16(), 403);
        assert!(unassigned.text().await.unwrap().contains("never assigned"));
        for id in ["s-1", "s-2"] {
            assert_eq!(assign("r-1", "acme", id).await.unwrap().status().as_u16(), 200);
        }
        // The token is bound to acme: another org's assignment and telemetry are refused.
        let foreign = assign("r-1", "globex", "s-7").await.unwrap();
        assert_eq!(foreign.status().as_u16(), 403);
        assert!(
            foreign
                .text()
                .await
                .unwrap()
                .contains("not one this runner's token is bound to")
        );
        let globex = good.replace("\"acme\"", "\"globex\"");
        assert_eq!(post(bearer.clone(), globex).await.unwrap().status().as_u16(), 403);
        // A session assigned the baseline reported as another build: refused.
        let other_build = serde_json::json!({"sessions": [session("s-1", &cand)]}).to_string();
        let r = post(bearer.clone(), other_build).await.unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(r.text().await.unwrap().contains("was assigned build"));
        // No token, a made-up token: 401, nothing stored.
        assert_eq!(post(None, good.clone()).await.unwrap().status().as_u16(), 401);
        let fake = format!("Bearer cl_000000000000_{}", "0".repeat(64));
        assert_eq!(post(Some(fake), good.clone()).await.unwrap().status().as_u16(), 401);
        // Another runner's sessions: 403.
        let other = good.replace("\"r-1\"", "\"r-2\"");
        assert_eq!(post(bearer.clone(), other).await.unwrap().status().as_u16(), 403);
        // Malformed and unknown builds: 422 with the place named.
        let r = post(bearer.clone(), good.replace("\"ok\"", "\"great\"")).await.unwrap();
        assert_eq!(r.status().as_u16(), 422);
        let r = post(
            bearer.clone(),
            serde_json::json!({"sessions": [session("s-9", "sha256:0123")]}).to_string(),
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(r.text().await.unwrap().contains("session s-9 was never assigned"));
        // One session twice in a batch: refused whole.
        let twice = serde_json::json!({"sessions": [session("s-1", &base), session("s-1", &base)]}).to_string();
        let r = post(bearer.clone(), twice).await.unwrap();
        assert_eq!(r.status().as_u16(), 422);
        assert!(r.text().await.unwrap().contains("appears twice"));
        // Oversized: 413 once the limit is passed, while the client is still sending (the
        // rest of the body is never read).
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = s.url.trim_start_matches("http://").to_string();
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let (mut rd, mut wr) = tcp.into_split();
            let head = format!(
                "POST /v1/telemetry HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                bearer.clone().unwrap(),
                16 * 1024 * 1024
            );
            let writer = tokio::spawn(async move {
                wr.write_all(head.as_bytes()).await?;
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..256 {
                    wr.write_all(&chunk).await?;
                }
                Ok::<_, std::io::Error>(())
            });
            let mut answer = vec![0u8; 512];
            let n = tokio::time::timeout(std::time::Duration::from_secs(20), rd.read(&mut answer))
                .await
                .expect("the server answers before the whole body is sent")
                .unwrap();
            let answer = String::from_utf8_lossy(&answer[..n]);
            assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
            writer.abort();
        }
        // A batch sent twice after a timeout is stored once.
        for _ in 0..2 {
            assert_eq!(post(bearer.clone(), good.clone()).await.unwrap().status().as_u16(), 200);
        }
        // Assignment: authenticated, for the token's own runner.
        let a = c
            .get(format!("{}/v1/assignment?runner=r-1&org=acme&session=x1", s.url))
            .header("authorization", bearer.clone().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(a.status().as_u16(), 200);
        let a: serde_json::Value = serde_json::from_slice(&a.bytes().await.unwrap()).unwrap();
        assert_eq!(
            (a["build"].as_str(), a["source"].as_str()),
            (Some(base.as_str()), Some("channel"))
        );
        let a = c
            .get(format!("{}/v1/assignment?runner=r-2&org=acme&session=x1", s.url))
            .header("authorization", bearer.clone().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(a.status().as_u16(), 403);
    });
    assert_eq!(count(), 2);
    // KPIs from what was stored.
    let k = canary(&reg)
        .args(["kpis", "--channel", "stable", "--json"])
        .run()
        .code(0)
        .json();
    let kpis = &k["builds"][0]["kpis"];
    assert_eq!(
        (kpis["sessions"].as_i64(), kpis["session_start_success_pct"].as_f64()),
        (Some(2), Some(100.0)),
        "{k}"
    );
    assert_eq!(kpis["cost_per_agent_hour_usd"].as_f64(), Some(6.0), "{k}");
    // A revoked token is refused within a second.
    let list = canary(&reg).args(["tokens", "list", "--json"]).run().code(0).json();
    let id = list.as_array().unwrap().iter().find(|t| t["runner"] == "r-1").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    canary(&reg).args(["tokens", "revoke", &id]).run().code(0);
    std::thread::sleep(Duration::from_millis(1100));
    let status = rt().block_on(async {
        reqwest::Client::new()
            .get(format!("{}/v1/assignment?runner=r-1&org=acme&session=x1", s.url))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 401);
}

/// Real `canary-runner agent`s with the real Claude Code CLI against the model stub: one runner of
/// the baseline build, one of the candidate, each running the sessions assigned to its build and
/// reporting them; a runner whose control plane is down keeps running its build, and reports
/// none of those unassigned sessions.
#[test]
fn runner_agents_obey_assignments_and_keep_telemetry_while_the_control_plane_is_down() {
    use crate::real_cli::{CLAUDE, StubProcess, fetch, workspace};
    let (reg, _d, policy, base, cand) = setup(Backend::Sqlite);
    let s = serve(&reg, &policy, free_port());
    start_rollout(&reg, &policy, &cand, &["--steps", "50,100", "--min-sessions", "100000"]);
    let claude = fetch(CLAUDE);
    let stub = StubProcess::start("edit");
    let ws = workspace();
    let spools = tempfile::tempdir().unwrap();
    let agent = |runner: &str, build: &str, server: &str, sessions: u32| {
        let token = runner_token(&reg, runner);
        std::thread::sleep(Duration::from_millis(1100));
        let out = std::process::Command::new(crate::helpers::runner_exe())
            .args([
                "agent",
                "--server",
                server,
                "--runner-id",
                runner,
                "--org",
                "acme",
                "--build",
                build,
            ])
            .args([
                "--sessions",
                &sessions.to_string(),
                "--provider",
                "claude-code",
                "--prompt",
                "do the canary task",
            ])
            .args(["--model-url", &stub.url, "--timeout", "2m", "--batch", "2", "--cli"])
            .arg(&claude)
            .arg("--workspace")
            .arg(ws.path())
            .arg("--spool")
            .arg(spools.path().join(format!("{runner}.jsonl")))
            .env("CANARY_RUNNER_TOKEN", &token)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let a = agent("pool-base", &base, &s.url, 6);
    let b = agent("pool-cand", &cand, &s.url, 6);
    for r in [&a, &b] {
        assert_eq!(r["ran"].as_u64().unwrap() + r["handed_off"].as_u64().unwrap(), 6, "{r}");
        assert_eq!(
            (r["ok"].clone(), r["waiting"].as_u64()),
            (r["ran"].clone(), Some(0)),
            "{r}"
        );
    }
    // Each build's telemetry is what its runners ran; the stub saw real CLI sessions.
    let k = canary(&reg)
        .args(["kpis", "--channel", "stable", "--json"])
        .run()
        .code(0)
        .json();
    let sessions_of = |id: &str| {
        k["builds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["build"] == id)
            .unwrap()["kpis"]["sessions"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(sessions_of(&base), a["ran"].as_u64().unwrap(), "{k}");
    assert_eq!(sessions_of(&cand), b["ran"].as_u64().unwrap(), "{k}");
    // Which build a session runs depends on its id's cohort (ids carry the time), so how many
    // each runner ran varies from run to run; together they ran real sessions.
    assert!(a["ran"].as_u64().unwrap() + b["ran"].as_u64().unwrap() >= 1, "{a} {b}");

    // The control plane is away: the runner keeps running its build, but sessions it was never
    // assigned are not reported (the control plane judges assigned sessions only).
    let down = format!("http://127.0.0.1:{}", free_port());
    let c = agent("pool-away", &base, &down, 2);
    assert_eq!(
        (c["ran"].as_u64(), c["unassigned"].as_u64(), c["waiting"].as_u64()),
        (Some(2), Some(2), Some(0)),
        "{c}"
    );
    let c = agent("pool-away", &base, &s.url, 0);
    assert_eq!((c["sent"].as_u64(), c["waiting"].as_u64()), (Some(0), Some(0)), "{c}");
    let k = canary(&reg)
        .args(["kpis", "--build", &base, "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(k["builds"][0]["kpis"]["sessions"].as_u64(), a["ran"].as_u64());
}

/// One request of the control-plane corpus (`tests/fixtures/hostile/control-plane.yaml`).
#[derive(serde::Deserialize)]
struct HostileRequest {
    name: String,
    method: String,
    path: String,
    #[serde(rename = "as")]
    caller: String,
    status: u16,
    says: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

/// Sends `method path` as raw HTTP/1.0, so the corpus controls every byte of the Host header.
fn raw_request(port: u16, method: &str, path: &str, host: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// Every hostile request of the corpus gets its status and message, and nothing is written: no
/// telemetry, no assignment, no heartbeat, no audit row. Among them the attacks of a malicious
/// runner: unassigned sessions, another runner's session ids, a foreign org, another build.
#[test]
fn every_hostile_control_plane_request_is_refused_and_writes_nothing() {
    let (reg, _d, policy, base, cand) = setup(Backend::Sqlite);
    let s = serve(&reg, &policy, free_port());
    let token = |args: &[&str]| {
        canary(&reg).args(args).args(["--json"]).run().code(0).json()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let r1 = token(&["tokens", "create", "--runner", "r-1", "--org", "acme"]);
    let r2 = token(&["tokens", "create", "--runner", "r-2", "--org", "acme"]);
    let viewer = token(&["tokens", "create", "--operator", "wall", "--role", "viewer"]);
    let operator = token(&["tokens", "create", "--operator", "ops", "--role", "operator"]);
    std::thread::sleep(Duration::from_millis(1100));
    let host = format!("127.0.0.1:{}", s.port);
    // r-1's one real session.
    let (status, body) = raw_request(
        s.port,
        "GET",
        "/v1/assignment?runner=r-1&org=acme&session=s-1",
        &host,
        Some(&r1),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let written = || {
        rt().block_on(async {
            let r = canary::registry::Registry::open(&reg.url).await.unwrap();
            (
                r.telemetry_count().await.unwrap(),
                r.assignments("r-1", &["s-1", "p1"]).await.unwrap().len()
                    + r.assignments("r-2", &["s-1", "p1"]).await.unwrap().len(),
                r.heartbeats().await.unwrap().len(),
                r.audit_log(100_000).await.unwrap().len(),
            )
        })
    };
    let before = written();
    let text =
        std::fs::read_to_string(crate::helpers::root().join("tests/fixtures/hostile/control-plane.yaml")).unwrap();
    let corpus: Vec<HostileRequest> = serde_saphyr::from_str(&text).unwrap();
    let now = canary::registry::now();
    let mut failures = Vec::new();
    for c in &corpus {
        let auth = match c.caller.as_str() {
            "runner" => Some(r1.as_str()),
            "runner2" => Some(r2.as_str()),
            "viewer" => Some(viewer.as_str()),
            "operator" => Some(operator.as_str()),
            "garbage" => Some("cl_000000000000_0000000000000000000000000000000000000000000000000000000000000000"),
            _ => None,
        };
        let body = c
            .body
            .as_deref()
            .unwrap_or("")
            .replace("{base}", &base)
            .replace("{cand}", &cand)
            .replace("{now}", &now);
        let (status, answer) = raw_request(
            s.port,
            &c.method,
            &c.path,
            c.host.as_deref().unwrap_or(&host),
            auth,
            &body,
        );
        if status != c.status || !answer.contains(&c.says) || answer.contains('\u{1b}') {
            failures.push(format!("{}: wanted {} `{}`, got:\n{answer}", c.name, c.status, c.says));
        }
    }
    assert!(corpus.len() >= 100, "the corpus holds {} requests", corpus.len());
    assert!(
        failures.is_empty(),
        "{} of {} refused wrongly:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
    assert_eq!(written(), before, "a refused request wrote something");
    // What the control plane counted: r-1's refused telemetry, by why.
    let (_, refusals) = raw_request(s.port, "GET", "/api/refusals", &host, Some(&viewer), "");
    assert!(
        refusals.contains("\"why\":\"unassigned\"") && refusals.contains("\"why\":\"foreign_org\""),
        "{refusals}"
    );
}

/// A malicious runner with a valid token tries to steer a rollout: fabricated healthy sessions
/// to push the candidate onto stable, fabricated failures to abort it, another runner's session
/// ids to crowd out its real telemetry, and a foreign org. Every attempt is refused; the rollout
/// stays where live telemetry puts it, and the victim's real session counts.
#[test]
fn a_malicious_runner_cannot_move_or_abort_a_rollout_or_squat_session_ids() {
    let (reg, _d, policy, base, cand) = setup(Backend::Sqlite);
    let s = serve(&reg, &policy, free_port());
    start_rollout(
        &reg,
        &policy,
        &cand,
        &["--steps", "50,100", "--min-sessions", "20", "--bake", "0s"],
    );
    let (mallory, victim) = (runner_token(&reg, "mallory"), runner_token(&reg, "victim"));
    std::thread::sleep(Duration::from_millis(1100));
    let session = |runner: &str, id: &str, build: &str, outcome: &str| {
        serde_json::json!({"runner": runner, "org": "acme", "session": id, "build": build,
            "started_at": canary::registry::now(), "start_latency_ms": 700, "outcome": outcome,
            "commands": 3, "commands_failed": u64::from(outcome != "ok"), "approvals": 0, "approval_wait_ms": 0,
            "tokens": 100, "cost_usd": 0.01, "duration_ms": 30000})
    };
    let post = |token: &str, sessions: Vec<serde_json::Value>| {
        let body = serde_json::json!({ "sessions": sessions }).to_string();
        raw_request(
            s.port,
            "POST",
            "/v1/telemetry",
            &format!("127.0.0.1:{}", s.port),
            Some(token),
            &body,
        )
    };
    // 1. Push: 500 healthy sessions of each build, none of them assigned.
    for build in [&cand, &base] {
        let fake: Vec<_> = (0..500)
            .map(|i| session("mallory", &format!("push-{i}"), build, "ok"))
            .collect();
        let (code, body) = post(&mallory, fake);
        assert_eq!(code, 403, "{body}");
    }
    // 2. Abort: 500 failures of the candidate.
    let fake: Vec<_> = (0..500)
        .map(|i| session("mallory", &format!("kill-{i}"), &cand, "failed"))
        .collect();
    assert_eq!(post(&mallory, fake).0, 403);
    // 3. Foreign org: assignment and telemetry for globex.
    let (refused, _) = raw_request(
        s.port,
        "GET",
        "/v1/assignment?runner=mallory&org=globex&session=g-1",
        &format!("127.0.0.1:{}", s.port),
        Some(&mallory),
        "",
    );
    assert_eq!(refused, 403);
    // 4. Squatting: the victim is assigned v-1; mallory reports v-1 first, under either name.
    let (code, assigned) = raw_request(
        s.port,
        "GET",
        "/v1/assignment?runner=victim&org=acme&session=v-1",
        &format!("127.0.0.1:{}", s.port),
        Some(&victim),
        "",
    );
    assert_eq!(code, 200, "{assigned}");
    let build = assigned
        .split("\"build\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(post(&mallory, vec![session("mallory", "v-1", &build, "failed")]).0, 403);
    assert_eq!(post(&mallory, vec![session("victim", "v-1", &build, "failed")]).0, 403);
    let (code, body) = post(&victim, vec![session("victim", "v-1", &build, "ok")]);
    assert_eq!((code, body.contains("\"new\":1")), (200, true), "{body}");
    // Ticks pass (every 200 ms); nothing moved: step 0, running, waiting for sessions.
    std::thread::sleep(Duration::from_millis(1500));
    let st = status(&reg, &policy);
    assert_eq!(
        (st["rollout"]["step"].as_u64(), st["rollout"]["state"].as_str()),
        (Some(0), Some("running")),
        "{st}"
    );
    assert_eq!(channel_build(&reg), base, "stable still runs the baseline");
    let count = rt().block_on(async {
        canary::registry::Registry::open(&reg.url)
            .await
            .unwrap()
            .telemetry_count()
            .await
            .unwrap()
    });
    assert_eq!(count, 1, "only the victim's real session is stored");
}

/// Where each build was published travels with it: the org pinned to the stable build shows
/// the stable build's pushed reference, a rollout shows its candidate's, in `canary status`,
/// `canary rollout status` and the dashboard's overview.
#[test]
fn pins_rollouts_and_the_overview_name_where_their_builds_were_published() {
    let (reg, _d, policy, base, cand) = setup(Backend::Sqlite);
    let pushed_of = |id: &str, repo: &str| format!("registry.lab.test:5000/canary/{repo}@{id}");
    let (base_pushed, cand_pushed) = (pushed_of(&base, "stable"), pushed_of(&cand, "next"));
    rt().block_on(async {
        let r = canary::registry::Registry::open(&reg.url).await.unwrap();
        for (id, p) in [(&base, &base_pushed), (&cand, &cand_pushed)] {
            r.record_push(&id.parse().unwrap(), &p.parse().unwrap()).await.unwrap();
        }
    });
    canary(&reg)
        .args(["pin", "--org", "acme", "--build", &base])
        .run()
        .code(0);
    start_rollout(&reg, &policy, &cand, &["--bake", "1h"]);

    let status = canary(&reg).args(["status", "--json"]).run().code(0).json();
    let acme = status["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == "acme")
        .unwrap();
    assert_eq!(acme["pushed"], base_pushed.as_str(), "{status}");
    let text = canary(&reg).args(["status"]).run().code(0).stdout();
    assert_eq!(
        text.matches(&format!("published as {base_pushed}")).count(),
        2,
        "channel and org: {text}"
    );

    let rollout = canary(&reg)
        .args(["rollout", "status", "--channel", "stable", "--json"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0)
        .json();
    assert_eq!(rollout["pushed"], cand_pushed.as_str(), "{rollout}");
    canary(&reg)
        .args(["rollout", "status", "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0)
        .stdout_has(&format!("candidate published as {cand_pushed}"));

    let s = serve(&reg, &policy, free_port());
    let page = s.page("/");
    assert!(
        page.contains(&format!("candidate published as <code>{cand_pushed}</code>")),
        "{page}"
    );
    let orgs = &page[page.find("id=\"orgs\"").unwrap()..];
    assert!(
        orgs.contains(&format!("published as <code>{base_pushed}</code>")),
        "{orgs}"
    );
}

/// `docker stop` of a runner agent mid-session (SIGTERM): the session under way is interrupted
/// (its CLI and the command it ran are gone), no new session starts, the telemetry of what ran
/// is still sent, and the agent exits 0 saying why it stopped.
#[test]
fn a_runner_agent_stopped_mid_session_ends_it_starts_no_other_and_sends_its_telemetry() {
    use crate::real_cli::{CLAUDE, StubProcess, fetch, workspace};
    let (reg, _d, policy, base, _cand) = setup(Backend::Sqlite);
    let s = serve(&reg, &policy, free_port());
    let claude = fetch(CLAUDE);
    let stub = StubProcess::start("long");
    let ws = workspace();
    let spool = tempfile::tempdir().unwrap();
    let token = runner_token(&reg, "stopped");
    let child = std::process::Command::new(crate::helpers::runner_exe())
        .args(["agent", "--server", &s.url, "--runner-id", "stopped", "--org", "acme"])
        .args(["--build", &base, "--sessions", "50", "--provider", "claude-code"])
        .args([
            "--prompt",
            "do the canary task",
            "--model-url",
            &stub.url,
            "--timeout",
            "5m",
        ])
        .args(["--batch", "10", "--cli"])
        .arg(&claude)
        .arg("--workspace")
        .arg(ws.path())
        .arg("--spool")
        .arg(spool.path().join("stopped.jsonl"))
        .env("CANARY_RUNNER_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The ten-minute command is running inside the first session.
    let sleeping = || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "time.sleep\\(600\\)"])
            .output()
            .unwrap();
        !out.stdout.is_empty()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !sleeping() {
        assert!(Instant::now() < deadline, "the session never ran its command");
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = Instant::now();
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("the agent ended {:?} after SIGTERM", stopped.elapsed());
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stopped.elapsed() < Duration::from_secs(20), "{:?}", stopped.elapsed());
    assert!(stderr.contains("stopping on a signal after 1 sessions"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["ran"].as_u64(), report["ok"].as_u64()),
        (Some(1), Some(0)),
        "{report}"
    );
    assert_eq!(report["waiting"], 0, "what ran was sent: {report}");
    assert!(!sleeping(), "the session's command was left running");
    let k = canary(&reg)
        .args(["kpis", "--build", &base, "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(k["builds"][0]["kpis"]["sessions"].as_u64(), Some(1), "{k}");
}
