//! `just bench` (registry part): the promotion decision and the known-good query on a
//! registry seeded with 100,000 results, on SQLite and (with CANARY_TEST_POSTGRES) PostgreSQL.
//! Target: under 50 ms each.

use canary::gate::{decide, policy::Policy};
use canary::registry::{Audit, BuildInfo, Registry};
use std::time::{Duration, Instant};

const BUILDS: usize = 100;
const RUNS_PER_BUILD: usize = 50;
const SUITES: [&str; 4] = ["golden-path", "demo", "contract", "smoke"];
const REPOS: [&str; 5] = ["js-ts", "python", "ci-enabled", "go", "rust"];
const ROUNDS: usize = 20;

fn build(i: usize) -> BuildInfo {
    BuildInfo {
        id: format!("sha256:{i:064x}").parse().unwrap(),
        image_ref: format!("canary-lab/runner:bench-{i}"),
        runner_version: format!("1.{i}.0"),
        adapters: vec!["codex".into(), "claude-code".into()],
        runtime_versions: [("codex".to_string(), format!("0.{}.0", 100 + i))]
            .into_iter()
            .collect(),
        manifest: None,
    }
}

async fn seed(reg: &Registry) {
    for b in 0..BUILDS {
        let mut rows = Vec::new();
        for run in 0..RUNS_PER_BUILD {
            for suite in SUITES {
                for repo in REPOS {
                    // Every build is green on its last run; earlier runs have some failures.
                    let status = if run + 1 < RUNS_PER_BUILD && (run + repo.len()) % 7 == 0 {
                        "fail"
                    } else {
                        "pass"
                    };
                    rows.push((format!("run-{b}-{run}"), suite.to_string(), repo.to_string(), status));
                }
            }
        }
        reg.seed_results(&build(b), &rows).await.expect("seed");
    }
    for b in (0..BUILDS).step_by(10) {
        let id = build(b).id;
        let audit = Audit {
            actor: "bench",
            action: "promote",
            target: &id,
            decision: "promoted",
            reason: "",
            evidence: serde_json::json!({}),
        };
        reg.release(
            &canary::contract::Channel::stable(),
            &id.parse().expect("a build id"),
            canary::registry::ReleaseKind::Promote,
            audit,
        )
        .await
        .expect("release");
    }
}

fn timed<F: std::future::Future<Output = ()>>(rt: &tokio::runtime::Runtime, mut f: impl FnMut() -> F) -> Duration {
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    times[ROUNDS / 2]
}

/// The dashboard: data and page, as `canary serve` answers them: the overview and the history grid.
fn dashboard(rt: &tokio::runtime::Runtime, reg: &Registry) -> (Duration, Duration) {
    let overview = timed(rt, || async move {
        let status = canary::status::status(reg, None).await.expect("status");
        let mut history = serde_json::Map::new();
        for c in reg.channels().await.expect("channels") {
            history.insert(
                c.to_string(),
                serde_json::to_value(reg.known_good(&c).await.expect("kg")).unwrap(),
            );
        }
        let page = canary::dashboard::layout(
            "/",
            "Overview",
            canary::dashboard::overview(&status, &serde_json::Value::Object(history), &serde_json::json!([])),
        );
        assert!(page.contains("channel-stable"));
    });
    let grid = timed(rt, || async move {
        let data = canary::dashboard::history_data(reg, canary::dashboard::HISTORY_BUILDS)
            .await
            .expect("history");
        let page = canary::dashboard::layout("/history", "History", canary::dashboard::history(&data));
        assert_eq!(
            data["rows"].as_array().map(|r| r.len()),
            Some(SUITES.len() * REPOS.len())
        );
        assert!(page.contains("data-status"));
    });
    (overview, grid)
}

fn bench(rt: &tokio::runtime::Runtime, label: &str, url: &str) {
    let reg = rt.block_on(Registry::open(url)).expect("open registry");
    let t = Instant::now();
    rt.block_on(seed(&reg));
    let seeded = rt.block_on(reg.count(canary::registry::Table::Results)).expect("count");
    let policy = Policy::builtin();
    let mut stable = policy
        .channel(&canary::contract::Channel::stable())
        .expect("stable")
        .clone();
    stable.required_suites = SUITES.iter().map(|s| s.to_string()).collect();
    let repos: Vec<String> = REPOS.iter().map(|s| s.to_string()).collect();
    let candidate: canary::contract::BuildId = build(BUILDS - 1).id.parse().expect("a build id");

    let decision = timed(rt, || {
        let (reg, stable, repos, candidate) = (&reg, &stable, &repos, &candidate);
        async move {
            let evidence = reg
                .evidence(candidate, &stable.required_suites, repos, &[])
                .await
                .expect("evidence");
            let d = decide(
                candidate,
                &canary::contract::Channel::stable(),
                stable,
                evidence,
                jiff::Timestamp::now(),
            );
            assert!(d.allowed, "{:?}", d.unmet);
        }
    });
    let known_good = timed(rt, || {
        let reg = &reg;
        async move {
            let kg = reg
                .known_good(&canary::contract::Channel::stable())
                .await
                .expect("known-good");
            assert_eq!(kg.len(), BUILDS / 10);
        }
    });
    let (overview, grid) = dashboard(rt, &reg);
    let ok = |d: Duration| if d < Duration::from_millis(50) { "ok" } else { "MISSED" };
    let ok200 = |d: Duration| if d < Duration::from_millis(200) { "ok" } else { "MISSED" };
    println!(
        "{label:<11} seeded {seeded} results in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    println!(
        "{:<11} promotion decision (20 cells)   {:>7.2} ms   < 50 ms {}",
        "",
        decision.as_secs_f64() * 1000.0,
        ok(decision)
    );
    println!(
        "{:<11} known-good query (stable)       {:>7.2} ms   < 50 ms {}",
        "",
        known_good.as_secs_f64() * 1000.0,
        ok(known_good)
    );
    println!(
        "{:<11} dashboard overview (data+page)  {:>7.2} ms   < 200 ms {}",
        "",
        overview.as_secs_f64() * 1000.0,
        ok200(overview)
    );
    println!(
        "{:<11} history grid, {} builds         {:>7.2} ms   < 200 ms {}",
        "",
        canary::dashboard::HISTORY_BUILDS,
        grid.as_secs_f64() * 1000.0,
        ok200(grid)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "Canary Lab registry bench (median of {ROUNDS}; {} results)",
        BUILDS * RUNS_PER_BUILD * SUITES.len() * REPOS.len()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    bench(&rt, "sqlite", &dir.path().join("bench.db").display().to_string());
    match std::env::var("CANARY_TEST_POSTGRES") {
        Ok(admin) => {
            let name = format!("canary_bench_{}", std::process::id());
            let (base, _) = admin.rsplit_once('/').expect("URL with a database");
            let exec = |sql: String| {
                rt.block_on(async {
                    use sqlx::Connection;
                    let mut c = sqlx::PgConnection::connect(&admin).await.expect("postgres admin");
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut c)
                        .await
                        .expect("admin statement");
                })
            };
            exec(format!("CREATE DATABASE {name}"));
            bench(&rt, "postgres", &format!("{base}/{name}"));
            exec(format!("DROP DATABASE {name} WITH (FORCE)"));
        }
        Err(_) => println!("postgres    skipped: set CANARY_TEST_POSTGRES=$(scripts/postgres.sh) (`just bench` does)"),
    }
}
