//! Upstream commands: `watch` (what is new upstream), `pipeline` (watch → build → canary →
//! record → promote → notify), `heartbeat` and `serve` (what deployed runners run).
//!
//! Exit codes: `watch` 0 = new versions found, 1 = nothing new, 2 = error; `pipeline` 0 = every
//! candidate green (or nothing to judge), 1 = a candidate was blocked (red or yellow), 2 = error;
//! `heartbeat` / `serve` 0 / 2.

use super::registry::{open, print_json};
use crate::config::LabConfig;
use crate::error::{LabError, Result, exit};
use crate::progress::Progress;
use crate::registry::Registry;
use crate::upstream::{self, Judged, WatchOptions, WatchReport};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only this provider (codex, claude-code, gemini).
    #[arg(long)]
    pub provider: Option<String>,
    /// Show what is new without recording it in the registry.
    #[arg(long)]
    pub no_record: bool,
    /// Do not download claude-agent-sdk wheels to learn the Claude Code version they bundle.
    #[arg(long)]
    pub no_resolve: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Only this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Suites candidates must pass (default: pipeline.suites in canary.yaml, else golden-path).
    #[arg(long = "suite", short = 's')]
    pub suites: Vec<PathBuf>,
    /// Judge candidates again even when the registry has a verdict for them.
    #[arg(long)]
    pub rejudge: bool,
    /// Webhook for verdicts (overrides pipeline.webhook).
    #[arg(long)]
    pub webhook: Option<String>,
    /// Parallel cases per canary run (overrides pipeline.jobs).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct HeartbeatArgs {
    /// A heartbeat payload (JSON; `-` reads stdin), as `canary-runner heartbeat` prints it.
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Every endpoint but /healthz takes a token (`canary tokens create`).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: std::net::SocketAddr,
    /// The URL people open the dashboard at; its host joins the loopback names pages are
    /// answered for (any other `Host` is refused, which defeats DNS rebinding).
    #[arg(long)]
    pub public_url: Option<String>,
    /// How long a connection may take to send a request's headers (also the idle time of a
    /// kept-alive connection); 1s to 10m.
    #[arg(long, default_value = "10s", value_parser = crate::bounds::duration(std::time::Duration::from_secs(1), std::time::Duration::from_secs(600)))]
    pub header_timeout: std::time::Duration,
    /// How often the rollout controller judges running rollouts (100ms to 1h).
    #[arg(long, default_value = "5s", value_parser = crate::bounds::duration(std::time::Duration::from_millis(100), std::time::Duration::from_secs(3600)))]
    pub tick: std::time::Duration,
    /// Gate policy for rollouts (default: gate_policy from canary.yaml, else ./gate.yaml, else built-in).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Publish TUF update metadata for customer-hosted runners: the folder holding the root
    /// versions (`canary keys init-root`, `canary keys rotate`). Needs --online-key; without
    /// both, hosts are offered nothing they will install.
    #[arg(long, requires = "online_key")]
    pub tuf: Option<PathBuf>,
    /// The online key (`canary keys create`) the root names for targets, snapshot and timestamp.
    #[arg(long, requires = "tuf")]
    pub online_key: Option<PathBuf>,
    /// How long a published timestamp holds (republished at half its life); a host refuses
    /// metadata whose timestamp expired (a frozen control plane).
    #[arg(long, default_value = "1d", value_parser = crate::bounds::duration(std::time::Duration::from_secs(2), std::time::Duration::from_secs(30 * 24 * 3600)))]
    pub timestamp_lifetime: std::time::Duration,
    /// Tell an admin at this webhook when a customer-hosted runner is behind its offered build
    /// (default: updates.webhook from canary.yaml).
    #[arg(long)]
    pub updates_webhook: Option<String>,
    /// Sweep workers to run in this process (0: none; `canary sweeps run` works the same queue).
    #[arg(long, default_value_t = 0)]
    pub sweep_workers: usize,
    /// Lab: the model stub's scenario for sweep agents.
    #[arg(long)]
    pub sweep_scenario: Option<PathBuf>,
    /// A real model endpoint for sweep agents.
    #[arg(long)]
    pub sweep_model_url: Option<String>,
    /// Docker network of the sweep containers.
    #[arg(long, default_value = "bridge")]
    pub sweep_network: String,
}

pub async fn watch(config: &LabConfig, a: &WatchArgs) -> Result<i32> {
    let reg = open(config).await?;
    let report = upstream::watch(
        &reg,
        &WatchOptions {
            config: &config.upstream,
            cache_dir: config.cache_dir.clone(),
            provider: a.provider.clone(),
            record: !a.no_record,
            resolve: !a.no_resolve,
        },
    )
    .await?;
    if a.json {
        print_json(&report);
    } else {
        print_watch(&report);
    }
    Ok(if report.anything_new() {
        exit::PASS
    } else {
        exit::FAILED
    })
}

fn print_watch(r: &WatchReport) {
    for p in &r.providers {
        let kg = if p.known_good.is_empty() {
            "nothing known-good yet".to_string()
        } else {
            p.known_good
                .iter()
                .map(|(c, v)| format!("{c} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fresh = p
            .freshness
            .iter()
            .map(|(s, f)| {
                format!(
                    "{s}{}",
                    if *f == upstream::http::Freshness::NotModified {
                        " (not modified)"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        outln!(
            "{} — known-good: {kg}; upstream: {fresh}, {} versions",
            p.provider,
            p.upstream_versions
        );
        if p.newer.is_empty() {
            outln!("  no candidate newer than known-good");
        }
        let shown = if p.known_good.is_empty() { 10 } else { usize::MAX };
        outln!(
            "  {:<12} {:<8} {:<26} {:<5} SOURCE",
            "VERSION",
            "CHANNEL",
            "PUBLISHED",
            "NEW"
        );
        for j in p.newer.iter().take(shown) {
            outln!(
                "  {:<12} {:<8} {:<26} {:<5} {}{}",
                if j.release.version.starts_with("sdk-") {
                    "?"
                } else {
                    j.release.version.as_str()
                },
                j.channel.as_deref().unwrap_or("-"),
                j.release.published_at.as_deref().unwrap_or("-"),
                if p.new.contains(&j.release.version) { "new" } else { "" },
                j.release.source,
                package_note(j)
            );
        }
        if p.newer.len() > shown {
            outln!("  … and {} older candidates (--json lists all)", p.newer.len() - shown);
        }
        for j in p.skipped.iter().take(5) {
            let why = j.skipped.as_deref().unwrap_or("");
            let short_why: String = why.split(". ").next().unwrap_or(why).chars().take(100).collect();
            outln!("  {:<12} skipped: {short_why}", j.release.package_version);
        }
        if p.skipped.len() > 5 {
            outln!("  … and {} more skipped (--json has the reasons)", p.skipped.len() - 5);
        }
    }
    outln!(
        "{} new version(s){}",
        r.providers.iter().map(|p| p.new.len()).sum::<usize>(),
        if r.recorded > 0 {
            format!(", {} recorded in the registry", r.recorded)
        } else {
            String::new()
        }
    );
}

pub async fn pipeline(cli_prefix: &str, config: &LabConfig, a: &PipelineArgs) -> Result<i32> {
    // Stage lines go to stderr even with --json: stdout stays one JSON document.
    let progress = Progress::new(false);
    let reg = open(config).await?;
    let opts = crate::pipeline::PipelineOptions {
        provider: a.provider.clone(),
        suites: a.suites.clone(),
        rejudge: a.rejudge,
        webhook: a.webhook.clone(),
        jobs: a.jobs,
        repro_prefix: cli_prefix.to_string(),
    };
    let outcome = crate::pipeline::run(config, &reg, &opts, &progress).await?;
    if a.json {
        print_json(&outcome);
    } else {
        for o in &outcome.verdicts {
            outln!(
                "{:<12} {:<12} {:<7} {}",
                crate::text::clean(o["provider"].as_str().or(o["candidate"].as_str()).unwrap_or("")),
                crate::text::clean(o["version"].as_str().unwrap_or("")),
                o["status"].as_str().unwrap_or(""),
                crate::text::clean(o["changes"].as_str().or(o["error"].as_str()).unwrap_or(""))
            );
        }
        if outcome.verdicts.is_empty() {
            outln!("nothing new to judge");
        }
    }
    Ok(outcome.exit_code)
}

fn package_note(j: &Judged) -> String {
    if j.release.version == j.release.package_version {
        String::new()
    } else if j.release.version.starts_with("sdk-") {
        format!(
            " ({} {}; bundled version not resolved yet)",
            j.release.package, j.release.package_version
        )
    } else {
        format!(" ({} {})", j.release.package, j.release.package_version)
    }
}

/// The most a heartbeat may weigh, from a file, standard input or an HTTP body.
pub const MAX_HEARTBEAT: u64 = crate::heartbeat::MAX_BODY as u64;

pub async fn heartbeat(config: &LabConfig, a: &HeartbeatArgs) -> Result<i32> {
    let text = if a.file.as_os_str() == "-" {
        crate::fsutil::read_stream(std::io::stdin(), "stdin", MAX_HEARTBEAT)?
    } else {
        crate::fsutil::read_input(&a.file, "heartbeat", MAX_HEARTBEAT)?
    };
    let h = crate::heartbeat::parse(&text, &a.file.display().to_string())?;
    let reg = open(config).await?;
    reg.record_heartbeat(&h).await?;
    if a.json {
        print_json(&h);
    } else {
        outln!("recorded heartbeat of {}", h.runner_id);
    }
    Ok(exit::PASS)
}

/// `canary serve`: `POST /v1/heartbeats` takes a runner's heartbeat, `GET /v1/status` answers what
/// `canary status --json` prints, `GET /healthz` says it is up.
pub async fn serve(config: &LabConfig, a: &ServeArgs) -> Result<i32> {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;
    let policy = crate::gate::policy::Policy::load(a.policy.as_deref().or(config.gate_policy.as_deref()))?;
    if a.tick.is_zero() {
        return Err(LabError::usage(
            "--tick 0 would judge rollouts in a busy loop",
            "e.g. --tick 5s",
        ));
    }
    let hosts = crate::authority::HostAllow::new(a.public_url.as_deref())
        .map_err(|m| LabError::usage(m, "e.g. --public-url https://canary.example.com"))?;
    let webhook = a.updates_webhook.clone().or(config.updates.webhook.clone());
    if let Some(w) = webhook.as_deref().filter(|w| !crate::config::is_http_url(w)) {
        return Err(LabError::usage(
            format!("--updates-webhook `{}` is not an http(s) URL", crate::text::clean(w)),
            "give the URL that receives notices of runners behind their offered build",
        ));
    }
    let publisher = match (&a.tuf, &a.online_key) {
        (Some(dir), Some(key)) => Some(crate::update::tuf::Publisher::open(
            dir,
            crate::update::sign::Key::load(key)?,
            crate::update::tuf::Lifetimes {
                timestamp: a.timestamp_lifetime,
                ..Default::default()
            },
        )?),
        _ => None,
    };
    let orgs = crate::orgs::OrgPolicies::load(&config.orgs_dir)?;
    let reg = std::sync::Arc::new(open(config).await?);
    async fn status(State(reg): State<std::sync::Arc<Registry>>) -> (StatusCode, axum::Json<serde_json::Value>) {
        match super::gate::status_json(&reg, None).await {
            Ok(v) => (StatusCode::OK, axum::Json(v)),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": e.to_string()})),
            ),
        }
    }
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
    let cp = crate::control::ControlPlane::new(reg.clone())
        .with_hosts(hosts)
        .with_updates(crate::control::Updates {
            publisher,
            artifacts: Some(crate::update::server::Artifacts::new(&config.cache_dir)),
            webhook,
            orgs,
        });
    let pages = Pages {
        policy: std::sync::Arc::new(policy.clone()),
        reg: reg.clone(),
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
    // What people read: operators' tokens only, by role, for allowed Host names only.
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
        .with_state(reg)
        .route("/api/refusals", get(refusals))
        .merge(dashboard)
        .layer(axum::middleware::from_fn_with_state(
            cp.clone(),
            crate::control::require_operator,
        ));
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::control::router(cp.clone()))
        .merge(readable)
        .layer(axum::middleware::from_fn(crate::control::security_headers));
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
        let orgs = crate::orgs::OrgPolicies::load(&config.orgs_dir)?;
        let engine = crate::engine::docker::DockerBackend::connect().await?;
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
        let (reg, workers) = (cp.reg.clone(), a.sweep_workers);
        Some(tokio::spawn(async move {
            loop {
                let log = |e: &crate::sweeps::job::Ended| {
                    eprintln!(
                        "canary serve: sweep #{} {} ({}): {} — {}",
                        e.job,
                        crate::text::clean(&e.repo),
                        crate::text::clean(&e.org),
                        e.outcome,
                        crate::text::clean(&e.reason)
                    )
                };
                if let Err(e) = crate::sweeps::job::run(&engine, &reg, &orgs, &o, workers, &log).await {
                    // The queue is in the registry: a failed pass loses nothing; try again.
                    eprintln!("canary serve: sweeps: {e} (retrying in 30 s)");
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                }
            }
        }))
    } else {
        None
    };
    let controller = tokio::spawn(crate::control::run_controller(cp, policy, a.tick));
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
    if let Some(s) = sweeper {
        s.abort();
    }
    Ok(exit::PASS)
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
            Some(crate::rollout::controller::judge_rollout(reg, policy, &r).await?)
        } else {
            None
        };
        let mut events = reg.rollout_events(r.id).await?;
        let keep = events.len().saturating_sub(20);
        events.drain(..keep);
        rollouts.push(serde_json::json!({"rollout": r, "percent": r.percent(), "now": now, "events": events}));
    }
    let mut history = serde_json::Map::new();
    for c in reg.channels().await? {
        history.insert(
            c.clone(),
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
