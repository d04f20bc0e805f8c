//! The known-good registry and its gate, on SQLite and on a real PostgreSQL server (started by
//! `scripts/postgres.sh`; `CANARY_TEST_POSTGRES` holds its admin URL). The same test code runs
//! on both.

use crate::helpers::{Canary, write_temp};
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
        use canary_lab::registry::{Audit, BuildInfo, Registry, SweepRepo};
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
                    added_at: canary_lab::registry::now(),
                },
                audit(),
            )
            .await
            .unwrap();
        }
        let build = format!("sha256:{}", "ab".repeat(32));
        let info = BuildInfo::from_image(&build, "canary-lab/build:x", &Default::default());
        r.seed_results(&info, &[("run".into(), "golden-path".into(), "python".into(), "pass")])
            .await
            .unwrap();
        let release = |kind: &'static str| {
            let r = &r;
            let build = build.clone();
            async move {
                r.release(
                    "stable",
                    &build,
                    kind,
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
        assert_eq!(r.enqueue_sweeps(&build).await.unwrap(), 0);

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
            !r.finish_sweep(a.id, "w1", "pr_opened", "late", &serde_json::json!({}), Some((1, "u")))
                .await
                .unwrap()
        );
        assert!(
            r.finish_sweep(a.id, "w3", "nothing_to_propose", "ok", &serde_json::json!({}), None)
                .await
                .unwrap()
        );
        // w2's try fails: retried after its backoff, then dead after the last attempt.
        assert!(
            r.retry_sweep(b2.id, "w2", "forge answered 503", later, 2)
                .await
                .unwrap()
        );
        let j = r.sweep_job(b2.id).await.unwrap().unwrap();
        assert_eq!((j.state.as_str(), j.attempts), ("queued", 1));
        let c = r.claim_sweep("w2", lease, 2, later).await.unwrap().unwrap();
        assert!(r.retry_sweep(c.id, "w2", "forge answered 503", later, 2).await.unwrap());
        let j = r.sweep_job(b2.id).await.unwrap().unwrap();
        assert_eq!(j.state, "dead", "{j:?}");
        assert_eq!(j.reason.as_deref(), Some("forge answered 503"));
        assert_eq!(r.sweeps_pending().await.unwrap(), 0);
    });
});
