//! The known-good registry and its gate, on SQLite and on a real PostgreSQL server (started by
//! `scripts/postgres.sh`; `CANARY_TEST_POSTGRES` holds its admin URL). The same test code runs
//! on both.

use crate::helpers::{Canary, write_temp};
use canary::registry::{JobState, SweepOutcome};
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty registry; the guard drops a PostgreSQL database or a temporary folder.
pub struct Fresh {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// The admin URL and database name of a PostgreSQL test database, dropped with the guard.
    drop_db: Option<(String, String)>,
}

impl Fresh {
    /// The same database reached at another URL (through a proxy the test controls); dropping
    /// it drops nothing.
    pub fn via(&self, url: String) -> Fresh {
        Fresh {
            url,
            _dir: None,
            drop_db: None,
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.drop_db {
            let _ = sql(admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs SQL against a registry directly (what the CLI never exposes: tampering, fake schemas).
pub fn sql(url: &str, statement: &str) -> Result<(), String> {
    sqlx::any::install_default_drivers();
    let url = if url.starts_with("postgres") {
        url.to_string()
    } else {
        format!("sqlite://{url}")
    };
    runtime().block_on(async {
        let pool = sqlx::AnyPool::connect(&url).await.map_err(|e| e.to_string())?;
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

pub fn fresh(backend: Backend) -> Fresh {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            Fresh {
                url: dir.path().join("registry.db").display().to_string(),
                _dir: Some(dir),
                drop_db: None,
            }
        }
        Backend::Postgres => {
            let admin = std::env::var("CANARY_TEST_POSTGRES").unwrap_or_else(|_| {
                panic!("CANARY_TEST_POSTGRES is not set: start the test server with `export CANARY_TEST_POSTGRES=$(scripts/postgres.sh)` (`just test` does)")
            });
            static N: AtomicU32 = AtomicU32::new(0);
            let name = format!("canary_t{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
            sql(&admin, &format!("DROP DATABASE IF EXISTS {name}")).unwrap();
            // CREATE DATABASE copies template1 and fails while another test's CREATE holds it:
            // tried again briefly.
            let mut attempt = 0;
            while let Err(e) = sql(&admin, &format!("CREATE DATABASE {name}")) {
                attempt += 1;
                if attempt == 20 || !e.contains("being accessed by other users") {
                    panic!("cannot create a test database on {admin}: {e}");
                }
                std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
            }
            let (base, _) = admin.rsplit_once('/').unwrap();
            Fresh {
                url: format!("{base}/{name}"),
                _dir: None,
                drop_db: Some((admin.clone(), name)),
            }
        }
    }
}

fn canary(reg: &Fresh) -> Canary {
    Canary::new().args(["--registry", &reg.url])
}

macro_rules! on_both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                $body(Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                $body(Backend::Postgres)
            }
        }
    };
}

on_both!(unknown_names_exit_2, |b| {
    let reg = fresh(b);
    canary(&reg).args(["registry", "init"]).run().code(0);
    canary(&reg)
        .args(["promote", "sha256:0000000000", "--channel", "stable"])
        .run()
        .code(2)
        .stderr_has("unknown build");
    canary(&reg)
        .args(["rollback", "--org", "nobody"])
        .run()
        .code(2)
        .stderr_has("unknown org `nobody`");
    canary(&reg)
        .args(["status", "--org", "nobody"])
        .run()
        .code(2)
        .stderr_has("unknown org");
    canary(&reg)
        .args([
            "compat",
            "check",
            "tests/fixtures/bundles/compatible.yaml",
            "--build",
            "sha256:feedfacecafe",
        ])
        .run()
        .code(2)
        .stderr_has("unknown build");
});

on_both!(a_newer_schema_is_refused, |b| {
    let reg = fresh(b);
    canary(&reg).args(["registry", "init"]).run().code(0);
    sql(&reg.url, "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990001, 'from the future', TRUE, X'00', 1)")
        .or_else(|_| sql(&reg.url, "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990001, 'from the future', TRUE, '\\x00', 1)"))
        .unwrap();
    canary(&reg)
        .args(["registry", "builds"])
        .run()
        .code(2)
        .stderr_has("schema version 99990001, newer than this canary understands");
});

on_both!(the_audit_log_is_append_only, |b| {
    let reg = fresh(b);
    canary(&reg).args(["registry", "init"]).run().code(0);
    sql(&reg.url, "INSERT INTO audit_log (ts, actor, action, target, decision, reason, evidence) VALUES ('t', 'a', 'x', 'y', 'z', '', '{}')").unwrap();
    let update = sql(&reg.url, "UPDATE audit_log SET decision = 'forged'").unwrap_err();
    assert!(update.contains("append-only"), "{update}");
    let delete = sql(&reg.url, "DELETE FROM audit_log").unwrap_err();
    assert!(delete.contains("append-only"), "{delete}");
});

#[test]
fn an_unreachable_registry_stops_the_run_before_it_starts() {
    let out = Canary::new()
        .args([
            "--registry",
            "postgres://canary@127.0.0.1:9/none",
            "run",
            "-s",
            "suites/demo.yaml",
        ])
        .run()
        .code(2);
    assert!(
        out.stderr().contains("registry postgres://canary@127.0.0.1:9/none"),
        "{}",
        out.stderr()
    );
    assert_eq!(out.report_dirs(), 0, "nothing ran");
}

#[test]
fn bundle_compatibility_verdicts_and_exit_codes() {
    let check = |manifest: &str, runtime: &str| {
        Canary::new()
            .args([
                "compat",
                "check",
                &format!("tests/fixtures/bundles/{manifest}.yaml"),
                "--runtime",
                runtime,
                "--json",
            ])
            .run()
    };
    let ok = check("compatible", "1.4.7").code(0).json();
    assert_eq!(ok["verdict"], "compatible");
    let blocked = check("compatible", "1.5.0").code(1).json();
    assert_eq!(blocked["verdict"], "blocked");
    assert_eq!(blocked["reasons"][0], "runtime 1.5.0 is newer than max_version 1.4.x");
    let warned = check("too-new", "1.3.0").code(0).json();
    assert_eq!(warned["verdict"], "compatible_with_warnings");
    check("too-new", "1.2.9").code(1);
    check("undeclared", "1.0.0")
        .code(2)
        .stderr_has("compatibility is never inferred");
    check("compatible", "1.4")
        .code(2)
        .stderr_has("not a SemVer runtime version");
}

#[test]
fn a_bad_policy_file_points_at_the_problem() {
    let (_d, policy) = write_temp("gate.yaml", "stable:\n  required_suites: [gate]\n  max_agee: 1d\n");
    let reg = fresh(Backend::Sqlite);
    let out = canary(&reg)
        .args(["promote", "x", "--channel", "stable", "--policy"])
        .arg_path(&policy)
        .run()
        .code(2);
    assert!(
        out.stderr().contains("unknown field `max_agee`") && out.stderr().contains("gate.yaml:3:3"),
        "{}",
        out.stderr()
    );
    canary(&reg)
        .args([
            "promote",
            "x",
            "--channel",
            "gold",
            "--policy",
            "tests/fixtures/gate.yaml",
        ])
        .run()
        .code(2)
        .stderr_has("unknown channel `gold`");
}

on_both!(the_sweep_queue_is_idempotent_leased_retried_and_dead_lettered, |b| {
    let reg = fresh(b);
    let url = if reg.url.starts_with("postgres") {
        reg.url.clone()
    } else {
        format!("sqlite://{}", reg.url)
    };
    runtime().block_on(async {
        use canary::registry::{Audit, BuildInfo, Registry, SweepRepo};
        let r = Registry::open(&url).await.unwrap();
        let audit = || Audit {
            actor: "t",
            action: "sweeps repo add",
            target: "repo",
            decision: "done",
            reason: "",
            evidence: serde_json::json!({}),
        };
        for id in ["acme/a", "acme/b"] {
            r.add_sweep_repo(
                &SweepRepo {
                    id: id.into(),
                    org: "acme".into(),
                    url: format!("https://forge.example.invalid/{id}.git"),
                    branch: "main".into(),
                    api_url: "https://forge.example.invalid".into(),
                    token_env: None,
                    commands: serde_json::json!({}),
                    added_at: canary::registry::now(),
                },
                audit(),
            )
            .await
            .unwrap();
        }
        let build = format!("sha256:{}", "ab".repeat(32));
        let info = BuildInfo::from_image(&build.parse().unwrap(), "canary-lab/build:x", &Default::default());
        r.seed_results(&info, &[("run".into(), "golden-path".into(), "python".into(), "pass")])
            .await
            .unwrap();
        let release = |kind: &'static str| {
            let r = &r;
            let build = build.clone();
            async move {
                r.release(
                    &"stable".parse().unwrap(),
                    &build.parse().unwrap(),
                    kind.parse().unwrap(),
                    Audit {
                        actor: "t",
                        action: kind,
                        target: "stable",
                        decision: "done",
                        reason: "",
                        evidence: serde_json::json!({}),
                    },
                )
                .await
                .unwrap()
            }
        };
        release("promote").await;
        release("promote").await;
        assert_eq!(
            r.sweep_jobs(10).await.unwrap().len(),
            2,
            "one job per repo and build, however often promoted"
        );
        assert_eq!(r.enqueue_sweeps(&build.parse().unwrap()).await.unwrap(), 0);

        let t0 = jiff::Timestamp::now();
        let lease = std::time::Duration::from_secs(60);
        let a = r.claim_sweep("w1", lease, 2, t0).await.unwrap().unwrap();
        let b2 = r.claim_sweep("w2", lease, 2, t0).await.unwrap().unwrap();
        assert_ne!(a.id, b2.id, "two workers never hold one job");
        assert!(
            r.claim_sweep("w3", lease, 2, t0).await.unwrap().is_none(),
            "nothing else is due"
        );
        // w1 dies; after its lease another worker takes the job, and w1 can no longer end it.
        let later = t0 + jiff::SignedDuration::from_secs(61);
        let again = r.claim_sweep("w3", lease, 2, later).await.unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (a.id, 2));
        assert!(
            !r.finish_sweep(
                a.id,
                "w1",
                SweepOutcome::PrOpened,
                "late",
                &serde_json::json!({}),
                Some((1, "u"))
            )
            .await
            .unwrap()
        );
        assert!(
            r.finish_sweep(
                a.id,
                "w3",
                SweepOutcome::NothingToPropose,
                "ok",
                &serde_json::json!({}),
                None
            )
            .await
            .unwrap()
        );
        // w2's engine goes away: the job is given back, its try not counted, due at once; only
        // its holder may give it back.
        assert!(!r.release_sweep(b2.id, "w3", "engine e2 went away").await.unwrap());
        assert!(r.release_sweep(b2.id, "w2", "engine e2 went away").await.unwrap());
        let j = r.sweep_job(b2.id).await.unwrap().unwrap();
        assert_eq!((j.state, j.attempts), (JobState::Queued, 0), "{j:?}");
        let b2 = r.claim_sweep("w2", lease, 2, later).await.unwrap().unwrap();
        assert_eq!(b2.attempts, 1, "a released job is claimed as its first try");
        // w2's try fails: retried after its backoff, then dead after the last attempt.
        assert!(
            r.retry_sweep(b2.id, "w2", "forge answered 503", later, 2)
                .await
                .unwrap()
        );
        let j = r.sweep_job(b2.id).await.unwrap().unwrap();
        assert_eq!((j.state, j.attempts), (JobState::Queued, 1));
        let c = r.claim_sweep("w2", lease, 2, later).await.unwrap().unwrap();
        assert!(r.retry_sweep(c.id, "w2", "forge answered 503", later, 2).await.unwrap());
        let j = r.sweep_job(b2.id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Dead, "{j:?}");
        assert_eq!(j.reason.as_deref(), Some("forge answered 503"));
        assert_eq!(r.sweeps_pending().await.unwrap(), 0);
    });
});

on_both!(recorders_of_one_build_at_once_keep_every_inventory, |b| {
    let reg = fresh(b);
    let build = "sha256:cccccccccccc0003";
    let bid: canary::contract::BuildId = build.parse().unwrap();
    runtime().block_on(async {
        let r = canary::registry::Registry::open(&reg.url).await.unwrap();
        r.record_run(&drift_report(build, "lab/codex:163", false), "x")
            .await
            .unwrap();
        // The registry's connections open first, so the recorders below really overlap.
        for res in futures_util::future::join_all((0..4).map(|_| r.inventories(&bid))).await {
            res.unwrap();
        }
        // Sixteen runs of the build recorded at once, each having seen one event kind of its own.
        let reports: Vec<canary::report::RunReport> = (0..16)
            .map(|k| {
                let mut v = serde_json::to_value(drift_report(build, "lab/codex:163", false)).unwrap();
                for c in v["cases"].as_array_mut().unwrap() {
                    c["inventory"]["events"][format!("extra.{k}")] =
                        serde_json::json!({"count": 1, "unknown": true, "fields": {"type": ["string"]}});
                }
                serde_json::from_value(v).unwrap()
            })
            .collect();
        let results = futures_util::future::join_all(reports.iter().map(|rep| r.record_inventories(rep))).await;
        for res in results {
            res.unwrap();
        }
        let inv = r.inventories(&bid).await.unwrap();
        let kinds: Vec<&String> = inv[0].events.keys().collect();
        for k in 0..16 {
            assert!(
                inv[0].events.contains_key(&format!("extra.{k}")),
                "extra.{k} lost: {kinds:?}"
            );
        }
    });
});

/// A run with a drift case, recorded: the status is kept as `drift`, the gate blocks on it, and
/// the build's inventory is what `canary drift` compares.
fn drift_report(build: &str, reference: &str, drift: bool) -> canary::report::RunReport {
    let inventory = |turn: &str, unknown: bool| {
        serde_json::json!({"provider": "codex", "version": if drift { "0.164.0" } else { "0.163.0" }, "not_json": 0, "truncated": false, "events": {
            "thread.started": {"count": 1, "unknown": false, "fields": {"thread_id": ["string"], "type": ["string"]}},
            turn: {"count": 1, "unknown": unknown, "fields": {"type": ["string"], "usage": ["object"], "usage.input_tokens": ["integer"], "usage.cached_input_tokens": ["integer"], "usage.output_tokens": ["integer"]}}
        }})
    };
    let (status, line, inv) = if drift {
        (
            "drift",
            Some("drift: codex 0.164.0 emits unknown event turn.done; turn.completed no longer seen"),
            inventory("turn.done", true),
        )
    } else {
        ("passed", None, inventory("turn.completed", false))
    };
    let case = |repo: &str| {
        serde_json::json!({
            "id": format!("golden-path--{repo}--codex"), "suite": "golden-path", "repo": repo, "status": status, "attempts": 1,
            "image": reference, "provider": "codex", "duration_ms": 1,
            "timings": {"container_ms": 0, "setup_ms": 0, "steps_ms": 0, "checks_ms": 0, "teardown_ms": 0},
            "steps": [], "artifacts": "cases/x", "repro": "canary repro x", "error": null, "drift": line, "inventory": inv
        })
    };
    serde_json::from_value(serde_json::json!({
        "schema_version": 1, "run_id": format!("run-{reference}"), "lab_version": "0.1.0", "started_at": "2026-11-22T00:00:00Z",
        "finished_at": "2026-11-22T00:00:01Z", "duration_ms": 1, "engine": "docker",
        "image": {"reference": reference, "id": build, "labels": {"canary-lab.runtimes": "codex=0.163.0"}},
        "jobs": 1, "partition": null, "suites": [], "repos": [],
        "cases": [case("js-ts"), case("python"), case("ci-enabled")],
        "summary": {"total": 3, "passed": 0, "flaky": 0, "failed": 0, "drift": 0, "timed_out": 0, "error": 0}, "status": status
    }))
    .unwrap()
}

on_both!(drift_is_recorded_blocks_the_gate_and_inventories_compare, |b| {
    let reg = fresh(b);
    let (old, new) = ("sha256:aaaaaaaaaaaa0001", "sha256:bbbbbbbbbbbb0002");
    runtime().block_on(async {
        let r = canary::registry::Registry::open(&reg.url).await.unwrap();
        r.record_run(&drift_report(old, "lab/codex:163", false), "x")
            .await
            .unwrap();
        r.record_run(&drift_report(new, "lab/codex:164", true), "x")
            .await
            .unwrap();
        // Recording again changes nothing (inventories merge by shape).
        r.record_run(&drift_report(new, "lab/codex:164", true), "x")
            .await
            .unwrap();
    });
    let results = canary(&reg)
        .args(["registry", "results", "--build", new, "--json"])
        .run()
        .code(0)
        .stdout();
    assert!(results.contains("\"drift\""), "{results}");
    canary(&reg)
        .args(["promote", new, "--channel", "beta", "--dry-run"])
        .run()
        .code(1)
        .stdout_has("drift");
    let d = canary(&reg).args(["drift", new, "--json"]).run().code(1).json();
    assert_eq!(d["clis"][0]["against"], old, "the earlier build is the baseline: {d:#}");
    assert_eq!(
        d["clis"][0]["drift"],
        "drift: codex 0.164.0 emits unknown event turn.done; turn.completed no longer seen"
    );
    canary(&reg).args(["drift", old]).run().code(0).stdout_has("no drift");
});

on_both!(update_metadata_is_published_once_per_change_and_replaced_whole, |b| {
    let reg = fresh(b);
    let url = if reg.url.starts_with("postgres") {
        reg.url.clone()
    } else {
        format!("sqlite://{}", reg.url)
    };
    runtime().block_on(async {
        use canary::update::sign::Key;
        use canary::update::tuf::{self, Doc, Lifetimes, Publisher, RootSpec, Signer};
        let r = canary::registry::Registry::open(&url).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A root folder with two versions, then another folder with one: the second publication
        // must not leave the first folder's version 2 behind for hosts to stumble on.
        let make = |path: std::path::PathBuf, versions: u64| async move {
            std::fs::create_dir_all(&path).unwrap();
            let (root_key, online) = (Key::generate().unwrap(), Key::generate().unwrap());
            let publics = [root_key.public()];
            let signer = Signer::new(root_key);
            let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
            let mut previous = None;
            for v in 1..=versions {
                let spec = RootSpec {
                    version: v,
                    root_keys: &publics,
                    threshold: 1,
                    online: &online.public(),
                    expires: later,
                };
                let prev: Option<tough::schema::Signed<tough::schema::Root>> = previous.take();
                let text = tuf::sign_root(
                    &spec,
                    std::slice::from_ref(&signer),
                    prev.as_ref().map(|p| (p, std::slice::from_ref(&signer))),
                )
                .await
                .unwrap();
                std::fs::write(path.join(format!("{v}.root.json")), &text).unwrap();
                previous = Some(tuf::parse_root(&text).unwrap());
            }
            Publisher::open(&path, online, Lifetimes::default()).unwrap()
        };
        let doc = |build: &str| Doc {
            org: None,
            channel: "stable".parse().unwrap(),
            body: format!("{{\"build\":\"{build}\"}}"),
        };
        let now = jiff::Timestamp::now();
        let p = make(dir.path().join("a"), 2).await;
        assert_eq!(p.publish(&r, &[doc("b1")], now).await.unwrap(), Some(1));
        assert_eq!(p.publish(&r, &[doc("b1")], now).await.unwrap(), None, "nothing moved");
        assert_eq!(
            p.publish(&r, &[doc("b2")], now).await.unwrap(),
            Some(2),
            "an offer moved"
        );
        let ts: serde_json::Value =
            serde_json::from_str(&r.tuf_file("timestamp.json").await.unwrap().unwrap()).unwrap();
        assert_eq!(ts["signed"]["version"], 2);
        assert!(r.tuf_file("2.targets.json").await.unwrap().is_some());
        assert!(r.tuf_file("2.root.json").await.unwrap().is_some());
        let q = make(dir.path().join("b"), 1).await;
        assert_eq!(q.publish(&r, &[doc("b2")], now).await.unwrap(), Some(3), "another root");
        assert!(r.tuf_file("1.root.json").await.unwrap().is_some());
        assert!(
            r.tuf_file("2.root.json").await.unwrap().is_none(),
            "the other folder's root 2 is gone"
        );
    });
});
