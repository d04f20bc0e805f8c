//! `canary serve`: the runner endpoints, the dashboard and its API behind operator tokens,
//! the rollout controller and (optionally) sweep workers, in one process whose state is all in
//! the registry. The CLI parses its flags into [`ServeOptions`] and calls [`serve`].

use crate::config::LabConfig;
use crate::error::{LabError, Result};
use crate::registry::Registry;
use std::path::PathBuf;

/// What `canary serve` is told on its command line (see its `--help` for each).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: std::net::SocketAddr,
    pub public_url: Option<String>,
    pub header_timeout: std::time::Duration,
    pub tick: std::time::Duration,
    pub lease: std::time::Duration,
    pub policy: Option<PathBuf>,
    pub tuf: Option<PathBuf>,
    pub online_key: Option<PathBuf>,
    pub timestamp_lifetime: std::time::Duration,
    pub updates_webhook: Option<String>,
    pub sweep_workers: usize,
    pub sweep_scenario: Option<PathBuf>,
    pub sweep_model_url: Option<String>,
    pub sweep_network: String,
}

/// Checks every option before anything is opened (a bad value writes nothing), then opens the
/// registry and serves until Ctrl-C: the runner endpoints, the dashboard, the rollout
/// controller and, when asked, sweep workers.
pub async fn serve(config: &LabConfig, a: &ServeOptions) -> Result<()> {
    let policy = crate::gate::policy::Policy::load(a.policy.as_deref().or(config.gate_policy.as_deref()))?;
    check_timing(a)?;
    let hosts = crate::authority::HostAllow::new(a.public_url.as_deref())
        .map_err(|m| LabError::usage(m, "e.g. --public-url https://canary.example.com"))?;
    let webhook = a.updates_webhook.clone().or(config.updates.webhook.clone());
    if let Some(w) = webhook.as_deref().filter(|w| !crate::config::is_http_url(w)) {
        return Err(LabError::usage(
            format!("--updates-webhook `{}` is not an http(s) URL", crate::text::clean(w)),
            "give the URL that receives notices of runners behind their offered build",
        ));
    }
    let publisher = publisher(a)?;
    let orgs = crate::orgs::OrgPolicies::load(&config.orgs_dir)?;
    let reg = std::sync::Arc::new(Registry::open(&config.registry).await?);
    if !a.listen.ip().is_loopback() && reg.live_tokens().await?.is_empty() {
        // Every endpoint beyond loopback takes tokens; with none issued, nothing could use them.
        return Err(LabError::usage(
            format!(
                "canary serve will not listen on {} without runner tokens: only loopback is served until tokens are issued",
                a.listen
            ),
            "issue one per runner with `canary tokens create --runner ID`, or use --listen 127.0.0.1:PORT",
        ));
    }
    let (replica, _one_serve) = replica(&reg, a.lease)?;
    let cp = crate::control::ControlPlane::new(reg.clone())
        .with_replica(replica)
        .with_hosts(hosts)
        .with_updates(crate::control::Updates {
            publisher,
            artifacts: Some(crate::update::server::Artifacts::new(&config.cache_dir)),
            webhook,
            orgs,
        });
    // Before anything is served: whether this replica leads, and where the alert outbox's scan
    // starts (events from now on are alerted; a rollout started through this process is one).
    cp.replica.renew(&cp.reg).await;
    cp.reg.start_alert_scan().await?;
    let app = app(config, &policy, &cp)?;
    let listener = tokio::net::TcpListener::bind(a.listen).await.map_err(|e| {
        LabError::usage(
            format!("cannot listen on {}: {e}", a.listen),
            "pick another --listen address",
        )
    })?;
    eprintln!(
        "canary serve: listening on http://{} (dashboard at /; runner endpoints /v1/assignment, /v1/telemetry, /v1/heartbeats; GET /v1/status; /api/...)",
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    let sweeper = if a.sweep_workers > 0 {
        Some(sweep_workers(config, a, cp.reg.clone()).await?)
    } else {
        None
    };
    // Alerts have their own task: a slow webhook never delays a rollout's judgement.
    let alerts = tokio::spawn(crate::rollout::delivery::run(
        cp.reg.clone(),
        policy.clone(),
        a.tick,
        cp.replica.clone(),
    ));
    let repos = config.repo_ids()?;
    let (reg, replica) = (cp.reg.clone(), cp.replica.clone());
    let controller = tokio::spawn(crate::control::run_controller(cp, policy, repos, a.tick));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let timeouts = crate::http_serve::Timeouts {
        header_read: a.header_timeout,
        ..Default::default()
    };
    crate::http_serve::serve(listener, app, timeouts, shutdown)
        .await
        .map_err(|e| LabError::usage(format!("serve failed: {e}"), "internal"))?;
    controller.abort();
    alerts.abort();
    replica.release(&reg).await;
    if let Some(s) = sweeper {
        s.abort();
    }
    Ok(())
}

/// The controller's tick and lease: a pass at all, and a lease that outlives two of them.
fn check_timing(a: &ServeOptions) -> Result<()> {
    if a.tick.is_zero() {
        return Err(LabError::usage(
            "--tick 0 would judge rollouts in a busy loop",
            "e.g. --tick 5s",
        ));
    }
    if a.lease < a.tick * 2 {
        return Err(LabError::usage(
            format!(
                "--lease {} is shorter than two --tick ({}): the controller's lease would lapse between its renewals",
                humantime::format_duration(a.lease),
                humantime::format_duration(a.tick)
            ),
            "e.g. --tick 5s --lease 15s",
        ));
    }
    Ok(())
}

/// This process as a replica. A SQLite registry takes one `canary serve` at a time: the file's
/// lock (held as long as the returned file is) refuses a second with a clear message, and the
/// one that has it takes the controller lease over at once (a killed predecessor's lease is
/// stale). On PostgreSQL, replicas share the lease.
fn replica(reg: &Registry, lease: std::time::Duration) -> Result<(crate::replica::Replica, Option<std::fs::File>)> {
    let Some(path) = reg.sqlite_path() else {
        return Ok((crate::replica::Replica::new(lease, false), None));
    };
    let lock = path.with_extension("serve.lock");
    match crate::fsutil::try_lock(&lock)? {
        Some(file) => Ok((crate::replica::Replica::new(lease, true), Some(file))),
        None => Err(LabError::usage(
            format!(
                "another canary serve is running on the SQLite registry {} (it holds {}): a SQLite file takes one control plane at a time",
                reg.display,
                lock.display()
            ),
            "run replicas of canary serve on a PostgreSQL registry (--registry postgres://...), or stop the other one",
        )),
    }
}

/// The update repository's publisher, when `--tuf` and `--online-key` are given.
fn publisher(a: &ServeOptions) -> Result<Option<crate::update::tuf::Publisher>> {
    let (Some(dir), Some(key)) = (&a.tuf, &a.online_key) else {
        return Ok(None);
    };
    let lifetimes = crate::update::tuf::Lifetimes {
        timestamp: a.timestamp_lifetime,
        ..Default::default()
    };
    Ok(Some(crate::update::tuf::Publisher::open(
        dir,
        crate::update::sign::Key::load(key)?,
        lifetimes,
    )?))
}

/// Readiness, for a load balancer's checks: `ok` while the registry answers within a second;
/// else 503, so the balancer sends the fleet to replicas that can store what it reports. The
/// endpoint is open to anyone, so it names nothing of the registry (host, database, error).
async fn healthz(
    axum::extract::State(reg): axum::extract::State<std::sync::Arc<Registry>>,
) -> (axum::http::StatusCode, &'static str) {
    match tokio::time::timeout(std::time::Duration::from_secs(1), reg.ping()).await {
        Ok(Ok(())) => (axum::http::StatusCode::OK, "ok"),
        _ => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "registry unreachable"),
    }
}

/// What `canary serve` answers: `/healthz`, the runner endpoints, and what people read (status,
/// the dashboard, refused telemetry) for operators' tokens only, by role, for allowed Host names.
fn app(
    config: &LabConfig,
    policy: &crate::gate::policy::Policy,
    cp: &crate::control::ControlPlane,
) -> Result<axum::Router> {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;
    async fn status(State(reg): State<std::sync::Arc<Registry>>) -> (StatusCode, axum::Json<serde_json::Value>) {
        match crate::status::status(&reg, None).await {
            Ok(v) => (StatusCode::OK, axum::Json(v)),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": e.to_string()})),
            ),
        }
    }
    let pages = Pages {
        policy: std::sync::Arc::new(policy.clone()),
        reg: cp.reg.clone(),
        reports: config.reports_dir.clone(),
        min_age: config
            .upstream
            .policy(None)?
            .providers
            .into_iter()
            .map(|(k, p)| (k, p.min_release_age))
            .collect(),
    };
    let dashboard = axum::Router::new()
        .route("/", get(page_overview))
        .route("/history", get(page_history))
        .route("/upstream", get(page_upstream))
        .route("/fleet", get(page_fleet))
        .route("/audit", get(page_audit))
        .route("/api/overview", get(api_overview))
        .route("/api/history", get(api_history))
        .route("/api/upstream", get(api_upstream))
        .route("/api/fleet", get(api_fleet))
        .route("/api/audit", get(api_audit))
        .route("/reports/{run}/report.html", get(run_report))
        .with_state(pages);
    let refusals = {
        let cp = cp.clone();
        move || {
            let cp = cp.clone();
            async move {
                let rows: Vec<serde_json::Value> = cp
                    .refusals()
                    .into_iter()
                    .map(|((runner, why), n)| serde_json::json!({"runner": runner, "why": why, "refused": n}))
                    .collect();
                axum::Json(serde_json::json!({"refused_telemetry": rows}))
            }
        }
    };
    let readable = axum::Router::new()
        .route("/v1/status", get(status))
        .with_state(cp.reg.clone())
        .route("/api/refusals", get(refusals))
        .route("/metrics", get(crate::control::metrics).with_state(cp.clone()))
        .merge(dashboard)
        .layer(axum::middleware::from_fn_with_state(
            cp.clone(),
            crate::control::require_operator,
        ));
    Ok(axum::Router::new()
        .route("/healthz", get(healthz).with_state(cp.reg.clone()))
        .merge(crate::control::router(cp.clone()))
        .merge(readable)
        .layer(axum::middleware::from_fn_with_state(
            cp.clone(),
            crate::control::observe,
        ))
        .layer(axum::middleware::from_fn(crate::control::security_headers)))
}

/// Sweep workers in the server: the queue is in the registry, so a failed pass loses nothing
/// and is tried again.
async fn sweep_workers(
    config: &LabConfig,
    a: &ServeOptions,
    reg: std::sync::Arc<Registry>,
) -> Result<tokio::task::JoinHandle<()>> {
    let orgs = crate::orgs::OrgPolicies::load(&config.orgs_dir)?;
    let lanes = crate::sweeps::job::lanes(config, a.sweep_workers).await?;
    let o = crate::sweeps::job::WorkerOptions {
        worker: format!("{}:{}:serve", crate::engine::hostname(), std::process::id()),
        lease: std::time::Duration::from_secs(20 * 60),
        max_attempts: 3,
        backoff: std::time::Duration::from_secs(30),
        network: a.sweep_network.clone(),
        scenario: a.sweep_scenario.clone(),
        model_url: a.sweep_model_url.clone(),
        step_timeout: std::time::Duration::from_secs(10 * 60),
        drain: false,
    };
    let config = config.clone();
    Ok(tokio::spawn(async move {
        let images = match crate::sweeps::job::Images::new(&config).await {
            Ok(i) => i,
            Err(e) => return eprintln!("canary serve: sweeps: {e}"),
        };
        loop {
            let log = |e: &crate::sweeps::job::Ended| eprintln!("canary serve: {e}");
            if let Err(e) = crate::sweeps::job::run(&lanes, &images, &reg, &orgs, &o, &log).await {
                eprintln!("canary serve: sweeps: {e} (retrying in 30 s)");
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            }
        }
    }))
}

/// What the dashboard's handlers share.
#[derive(Clone)]
struct Pages {
    reg: std::sync::Arc<Registry>,
    /// What rollouts are judged by, to show their figures against thresholds.
    policy: std::sync::Arc<crate::gate::policy::Policy>,
    reports: PathBuf,
    /// Each watched provider's release-age gate.
    min_age: std::collections::BTreeMap<String, std::time::Duration>,
}

type Html = (axum::http::StatusCode, axum::response::Html<String>);
type Json = (axum::http::StatusCode, axum::Json<serde_json::Value>);

fn html_of(
    path: &str,
    title: &str,
    data: Result<serde_json::Value>,
    render: impl Fn(&serde_json::Value) -> maud::Markup,
) -> Html {
    use axum::http::StatusCode;
    match data {
        Ok(v) => (
            StatusCode::OK,
            axum::response::Html(crate::dashboard::layout(path, title, render(&v))),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::response::Html(crate::dashboard::layout(
                path,
                title,
                maud::html! { p.fail-list { "the registry could not answer: " (crate::text::clean(&e.to_string())) } },
            )),
        ),
    }
}

fn json_of(data: Result<serde_json::Value>) -> Json {
    use axum::http::StatusCode;
    match data {
        Ok(v) => (StatusCode::OK, axum::Json(v)),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": e.to_string()})),
        ),
    }
}

async fn overview_data(reg: &Registry, policy: &crate::gate::policy::Policy) -> Result<serde_json::Value> {
    let status = crate::status::status(reg, None).await?;
    let mut rollouts = Vec::new();
    for r in reg.rollouts(false, 5).await? {
        let now = if r.state.active() {
            Some(crate::rollout::controller::judge_rollout(reg, policy, &r, jiff::Timestamp::now()).await?)
        } else {
            None
        };
        let mut events = reg.rollout_events(r.id).await?;
        let keep = events.len().saturating_sub(20);
        events.drain(..keep);
        let pushed = reg.pushed_ref(&r.build_id).await?.map(|p| p.to_string());
        rollouts.push(
            serde_json::json!({"rollout": r, "percent": r.percent(), "pushed": pushed, "now": now, "events": events}),
        );
    }
    let mut history = serde_json::Map::new();
    for c in reg.channels().await? {
        history.insert(
            c.to_string(),
            serde_json::to_value(reg.known_good(&c).await?).expect("json"),
        );
    }
    Ok(serde_json::json!({"status": status, "history": history, "rollouts": rollouts}))
}

async fn page_overview(axum::extract::State(p): axum::extract::State<Pages>) -> Html {
    html_of("/", "Overview", overview_data(&p.reg, &p.policy).await, |v| {
        crate::dashboard::overview(&v["status"], &v["history"], &v["rollouts"])
    })
}

async fn api_overview(axum::extract::State(p): axum::extract::State<Pages>) -> Json {
    json_of(overview_data(&p.reg, &p.policy).await)
}

async fn page_history(axum::extract::State(p): axum::extract::State<Pages>) -> Html {
    let data = crate::dashboard::history_data(&p.reg, crate::dashboard::HISTORY_BUILDS).await;
    html_of("/history", "Compatibility history", data, crate::dashboard::history)
}

async fn api_history(axum::extract::State(p): axum::extract::State<Pages>) -> Json {
    json_of(crate::dashboard::history_data(&p.reg, crate::dashboard::HISTORY_BUILDS).await)
}

async fn page_upstream(axum::extract::State(p): axum::extract::State<Pages>) -> Html {
    html_of(
        "/upstream",
        "Upstream",
        crate::dashboard::upstream_data(&p.reg, &p.min_age, jiff::Timestamp::now()).await,
        crate::dashboard::upstream,
    )
}

async fn api_upstream(axum::extract::State(p): axum::extract::State<Pages>) -> Json {
    json_of(crate::dashboard::upstream_data(&p.reg, &p.min_age, jiff::Timestamp::now()).await)
}

async fn fleet_of(reg: &Registry) -> Result<serde_json::Value> {
    let status = crate::status::status(reg, None).await?;
    let now = jiff::Timestamp::now();
    let mut v = crate::dashboard::fleet_data(&status, now);
    v["kpis"] = crate::dashboard::fleet_kpis(reg, now).await?;
    v["behind"] = serde_json::to_value(reg.open_notices().await?).expect("json");
    Ok(v)
}

async fn page_fleet(axum::extract::State(p): axum::extract::State<Pages>) -> Html {
    html_of("/fleet", "Fleet", fleet_of(&p.reg).await, crate::dashboard::fleet)
}

async fn api_fleet(axum::extract::State(p): axum::extract::State<Pages>) -> Json {
    json_of(fleet_of(&p.reg).await)
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AuditQuery {
    #[serde(flatten)]
    filter: crate::registry::AuditFilter,
    page: i64,
}

async fn page_audit(
    axum::extract::State(p): axum::extract::State<Pages>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Html {
    let data = crate::dashboard::audit_data(&p.reg, &q.filter, q.page).await;
    html_of("/audit", "Audit", data, crate::dashboard::audit)
}

async fn api_audit(
    axum::extract::State(p): axum::extract::State<Pages>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Json {
    json_of(crate::dashboard::audit_data(&p.reg, &q.filter, q.page).await)
}

/// A run's `report.html` from the reports folder. The run id is a name, never a path.
async fn run_report(
    axum::extract::State(p): axum::extract::State<Pages>,
    axum::extract::Path(run): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let ok = !run.is_empty()
        && run.len() <= 64
        && !run.starts_with('.')
        && run
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return (StatusCode::BAD_REQUEST, "not a run id").into_response();
    }
    let file = p.reports.join(&run).join(crate::report::html::HTML_FILE);
    match crate::fsutil::read_input(&file, "report", crate::fsutil::MAX_INPUT) {
        Ok(text) => axum::response::Html(text).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no report.html for this run").into_response(),
    }
}
