//! The control plane's runner endpoints, served by `canary serve`: assignment, telemetry and
//! heartbeats, each behind a runner's bearer token; and the rollout controller's loop. What
//! assignment and authentication read is cached for a second, so a request costs no query.

use crate::registry::Registry;
use crate::rollout::FleetState;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long assignment and token checks may lag the registry.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// A value loaded from the registry, and when.
type Slot<T> = Arc<Mutex<Option<Cached<T>>>>;

struct Cached<T> {
    at: Instant,
    value: Arc<T>,
}

/// What the runner endpoints share.
#[derive(Clone)]
pub struct ControlPlane {
    pub reg: Arc<Registry>,
    state: Slot<FleetState>,
    /// Token hash → runner.
    tokens: Slot<BTreeMap<String, String>>,
    builds: Arc<Mutex<BTreeSet<String>>>,
    refresh: Arc<tokio::sync::Mutex<()>>,
    /// For customer-hosted runners: the key offers are signed with, and the artifacts served.
    updates: Arc<Updates>,
}

/// The update endpoints' own state.
#[derive(Default)]
pub struct Updates {
    pub key: Option<crate::update::sign::Key>,
    pub artifacts: Option<crate::update::server::Artifacts>,
    /// Where an admin is told that a customer-hosted runner is behind its offered build.
    pub webhook: Option<String>,
    /// Org policies (`require_signed`).
    pub orgs: crate::orgs::OrgPolicies,
}

impl ControlPlane {
    pub fn new(reg: Arc<Registry>) -> ControlPlane {
        ControlPlane {
            reg,
            state: Default::default(),
            tokens: Default::default(),
            builds: Default::default(),
            refresh: Default::default(),
            updates: Default::default(),
        }
    }

    /// The same control plane, offering signed updates (with `key`) and serving `artifacts`.
    pub fn with_updates(mut self, updates: Updates) -> ControlPlane {
        self.updates = Arc::new(updates);
        self
    }

    /// Drops the caches (after this process changed a rollout).
    pub fn invalidate(&self) {
        *self.state.lock().expect("lock") = None;
        *self.tokens.lock().expect("lock") = None;
    }

    async fn cached<T>(
        &self,
        slot: &Mutex<Option<Cached<T>>>,
        load: impl std::future::Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<Arc<T>> {
        let fresh = |slot: &Mutex<Option<Cached<T>>>| {
            slot.lock()
                .expect("lock")
                .as_ref()
                .filter(|c| c.at.elapsed() < CACHE_TTL)
                .map(|c| c.value.clone())
        };
        if let Some(v) = fresh(slot) {
            return Ok(v);
        }
        // One reload at a time; the others wait for it and take its result.
        let _one = self.refresh.lock().await;
        if let Some(v) = fresh(slot) {
            return Ok(v);
        }
        let value = Arc::new(load.await?);
        *slot.lock().expect("lock") = Some(Cached {
            at: Instant::now(),
            value: value.clone(),
        });
        Ok(value)
    }

    pub async fn fleet_state(&self) -> crate::error::Result<Arc<FleetState>> {
        self.cached(&self.state, self.reg.fleet_state()).await
    }

    async fn token_map(&self) -> crate::error::Result<Arc<BTreeMap<String, String>>> {
        self.cached(&self.tokens, self.reg.live_tokens()).await
    }

    /// The runner a request's token belongs to, or the response refusing it.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<String, Response> {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Err(unauthorized(
                "no bearer token: send `Authorization: Bearer <token>` (canary tokens create --runner ID)",
            ));
        };
        let Some(token) = crate::tokens::bearer(value) else {
            return Err(unauthorized(
                "the Authorization header is not a Canary Lab bearer token",
            ));
        };
        let map = self.token_map().await.map_err(unavailable)?;
        match map.get(&crate::tokens::hash(token)) {
            Some(runner) => Ok(runner.clone()),
            None => Err(unauthorized("unknown or revoked token")),
        }
    }

    /// Whether every build named is one the registry knows.
    async fn unknown_build<'a>(&self, builds: impl Iterator<Item = &'a str>) -> crate::error::Result<Option<String>> {
        let wanted: BTreeSet<&str> = builds.collect();
        let missing: BTreeSet<&str> = {
            let known = self.builds.lock().expect("lock");
            wanted.iter().filter(|b| !known.contains(**b)).copied().collect()
        };
        if missing.is_empty() {
            return Ok(None);
        }
        let found = self.reg.known_builds(&missing).await?;
        let first_unknown = missing.iter().find(|b| !found.contains(**b)).map(|b| b.to_string());
        self.builds.lock().expect("lock").extend(found);
        Ok(first_unknown)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": crate::text::clean(message)}))).into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

fn unavailable(e: crate::error::LabError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the registry could not answer: {e}"),
    )
}

fn forbidden(token_runner: &str, named: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        &format!(
            "the token is runner {}'s, the request speaks for runner {}",
            crate::text::clean(token_runner),
            crate::text::clean(&named.chars().take(128).collect::<String>())
        ),
    )
}

#[derive(serde::Deserialize)]
pub struct AssignmentQuery {
    pub runner: Option<String>,
    pub org: Option<String>,
    pub session: Option<String>,
}

/// `GET /v1/assignment?runner=ID&org=ORG&session=SID`.
pub async fn assignment(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    Query(q): Query<AssignmentQuery>,
) -> Response {
    let runner = match cp.authenticate(&headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (Some(r), Some(org), Some(session)) = (q.runner, q.org, q.session) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "runner, org and session are all required",
        );
    };
    if !crate::telemetry::is_id(&r) || !crate::telemetry::is_id(&session) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "runner and session are ids: 1 to 128 letters, digits, `.`, `_`, `:`, `-`",
        );
    }
    if crate::gate::ops::check_name("org", &org).is_err() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "org is 1 to 64 letters, digits, `.`, `_`, `-`",
        );
    }
    if r != runner {
        return forbidden(&runner, &r);
    }
    let state = match cp.fleet_state().await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    match crate::rollout::assign(&state, &org, &session) {
        Some(a) => (StatusCode::OK, Json(json!(a))).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("org {org}'s channel has no build yet: keep running the current one"),
        ),
    }
}

/// `POST /v1/telemetry`: a batch of finished sessions, all of the token's runner.
pub async fn telemetry(State(cp): State<ControlPlane>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let runner = match cp.authenticate(&headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let now = jiff::Timestamp::now();
    let sessions = match crate::telemetry::parse_batch(&body, now) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    if let Some(s) = sessions.iter().find(|s| s.runner != runner) {
        return forbidden(&runner, &s.runner);
    }
    match cp.unknown_build(sessions.iter().map(|s| s.build.as_str())).await {
        Ok(Some(b)) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("unknown build {b}: telemetry is taken for builds the registry knows"),
            );
        }
        Ok(None) => {}
        Err(e) => return unavailable(e),
    }
    match cp.reg.ingest(&sessions, now).await {
        Ok(new) => (StatusCode::OK, Json(json!({"received": sessions.len(), "new": new}))).into_response(),
        Err(e) => unavailable(e),
    }
}

/// `POST /v1/heartbeats`: the token's runner's heartbeat.
pub async fn heartbeat(State(cp): State<ControlPlane>, headers: HeaderMap, body: String) -> Response {
    let runner = match cp.authenticate(&headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let h = match crate::heartbeat::parse(&body, "request body") {
        Ok(h) => h,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    if h.runner_id != runner {
        return forbidden(&runner, &h.runner_id);
    }
    if let Err(e) = cp.reg.record_heartbeat(&h).await {
        return unavailable(e);
    }
    notice(&cp, &h.runner_id).await;
    (StatusCode::ACCEPTED, Json(json!({"recorded": h.runner_id}))).into_response()
}

/// After a heartbeat: is the runner behind the build it is offered? A new notice is logged,
/// audited, shown on the dashboard and posted to the admin's webhook (in the background, its
/// outcome kept with the notice). A failure here never fails the heartbeat.
async fn notice(cp: &ControlPlane, runner: &str) {
    let n = match crate::update::server::notice(&cp.reg, runner, cp.updates.key.as_ref(), &cp.updates.orgs).await {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            eprintln!("canary serve: could not judge whether runner {runner} is behind: {e}");
            return;
        }
    };
    let summary = crate::registry::summary(&n.changes);
    eprintln!(
        "canary serve: runner {runner} is behind: {} offers build {} ({}): {summary}",
        crate::text::clean(&n.channel),
        n.build_id,
        n.status
    );
    let Some(url) = cp.updates.webhook.clone() else {
        let _ = cp
            .reg
            .set_notice_delivery(&n.runner_id, &n.build_id, "no webhook configured")
            .await;
        return;
    };
    let reg = cp.reg.clone();
    tokio::spawn(async move {
        let payload = json!({
            "event": "runner.behind",
            "runner": n.runner_id,
            "org": n.org,
            "channel": n.channel,
            "build": n.build_id,
            "status": n.status,
            "component_changes": n.changes,
            "summary": summary,
            "upgrade": "on the runner's host: canary-runner update plan, then canary-runner update upgrade",
            "rollback": "canary-runner update rollback (or /v1/updates/rollback.sh)",
        });
        let delivery = match crate::webhook::post(&url, &payload).await {
            Ok(()) => format!("webhook {url}: delivered"),
            Err(e) => format!("webhook {url}: {e}"),
        };
        eprintln!(
            "canary serve: runner {}: {}",
            n.runner_id,
            crate::text::clean(&delivery)
        );
        let _ = reg.set_notice_delivery(&n.runner_id, &n.build_id, &delivery).await;
    });
}

#[derive(serde::Deserialize)]
pub struct RunnerQuery {
    runner: Option<String>,
}

/// The token's runner, when the query names the same one.
async fn runner_of(cp: &ControlPlane, headers: &HeaderMap, q: &RunnerQuery) -> Result<String, Response> {
    let runner = cp.authenticate(headers).await?;
    let Some(r) = &q.runner else {
        return Err(error(StatusCode::UNPROCESSABLE_ENTITY, "runner is required"));
    };
    if !crate::telemetry::is_id(r) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "runner is an id: 1 to 128 letters, digits, `.`, `_`, `:`, `-`",
        ));
    }
    if *r != runner {
        return Err(forbidden(&runner, r));
    }
    Ok(runner)
}

/// `GET /v1/updates?runner=ID`: the build this customer-hosted runner should run, its traffic
/// light, the changes from what it reported, the signed manifest and how to roll back.
pub async fn updates(State(cp): State<ControlPlane>, headers: HeaderMap, Query(q): Query<RunnerQuery>) -> Response {
    let runner = match runner_of(&cp, &headers, &q).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match crate::update::server::offer(&cp.reg, &runner, cp.updates.key.as_ref(), &cp.updates.orgs).await {
        Ok(o) => (StatusCode::OK, Json(o)).into_response(),
        Err(crate::error::LabError::Usage(m, h)) => error(StatusCode::NOT_FOUND, &format!("{m}: {h}")),
        Err(e) => unavailable(e),
    }
}

/// `GET /v1/updates/rollback.sh?runner=ID`: the standalone rollback script.
pub async fn rollback_script(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    Query(q): Query<RunnerQuery>,
) -> Response {
    match runner_of(&cp, &headers, &q).await {
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8")],
            crate::update::server::ROLLBACK_SCRIPT,
        )
            .into_response(),
        Err(resp) => resp,
    }
}

/// `POST /v1/updates/report?runner=ID`: what an update attempt on the host came to, kept in the
/// audit log beside the control plane's own decisions.
pub async fn update_report(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    Query(q): Query<RunnerQuery>,
    body: axum::body::Bytes,
) -> Response {
    let runner = match runner_of(&cp, &headers, &q).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let entry: crate::update::host::AuditEntry = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &format!("not an update report: {e}")),
    };
    const OUTCOMES: &[&str] = &["done", "up_to_date", "blocked", "refused", "failed", "rolled_back"];
    const ACTIONS: &[&str] = &["upgrade", "rollback", "channel"];
    if !OUTCOMES.contains(&entry.outcome.as_str()) || !ACTIONS.contains(&entry.action.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("action is one of {ACTIONS:?}, outcome one of {OUTCOMES:?}"),
        );
    }
    let short = |s: &Option<String>| s.as_deref().map(|v| v.chars().take(80).collect::<String>());
    let target = format!("runner:{runner}");
    let action = format!("runner.{}", entry.action);
    let reason: String = entry.reason.chars().take(2000).collect();
    let audit = crate::registry::Audit {
        actor: &target,
        action: &action,
        target: &target,
        decision: &entry.outcome,
        reason: &reason,
        evidence: json!({"from": short(&entry.from), "to": short(&entry.to), "at": entry.at.chars().take(40).collect::<String>()}),
    };
    match cp.reg.audit(audit).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"recorded": true}))).into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /v1/artifacts/SHA256`: the exact wheel or runner binary the lab judged.
pub async fn artifact(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> Response {
    if let Err(resp) = cp.authenticate(&headers).await {
        return resp;
    }
    if cp.updates.artifacts.is_none() {
        return error(StatusCode::NOT_FOUND, "this control plane serves no artifacts");
    }
    let hex = digest.strip_prefix("sha256:").unwrap_or(&digest).to_string();
    // Hashing files new to the index is blocking work.
    let updates = cp.updates.clone();
    let found = tokio::task::spawn_blocking(move || updates.artifacts.as_ref().and_then(|a| a.find(&hex)))
        .await
        .ok()
        .flatten();
    let Some(path) = found else {
        return error(StatusCode::NOT_FOUND, "no artifact with that digest");
    };
    match tokio::fs::File::open(&path).await {
        Ok(f) => {
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(f));
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, len.to_string()),
                ],
                body,
            )
                .into_response()
        }
        Err(_) => error(StatusCode::NOT_FOUND, "no artifact with that digest"),
    }
}

/// Middleware for what people read (the dashboard, `/api/...`, `/v1/status`) when `canary serve`
/// listens beyond loopback: any live token, as a bearer token or as the password of HTTP Basic
/// (so a browser's own login prompt works). Refused requests get 401 and a Basic challenge.
pub async fn require_token(
    State(cp): State<ControlPlane>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::tokens::from_authorization);
    let Some(token) = token else {
        return challenge(
            "this dashboard needs a token: use a token from `canary tokens create` as the password (any user name), or send `Authorization: Bearer <token>`",
        );
    };
    match cp.token_map().await {
        Ok(map) if map.contains_key(&crate::tokens::hash(&token)) => next.run(request).await,
        Ok(_) => challenge("unknown or revoked token"),
        Err(e) => unavailable(e),
    }
}

fn challenge(message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"canary\", charset=\"UTF-8\""),
    );
    r
}

/// The runner endpoints, each with its own body limit (a larger body is answered 413 unread).
pub fn router(cp: ControlPlane) -> axum::Router {
    use axum::extract::DefaultBodyLimit;
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/assignment", get(assignment))
        .route(
            "/v1/telemetry",
            post(telemetry).layer(DefaultBodyLimit::max(crate::telemetry::MAX_BODY)),
        )
        .route(
            "/v1/heartbeats",
            post(heartbeat).layer(DefaultBodyLimit::max(crate::heartbeat::MAX_BODY)),
        )
        .route("/v1/updates", get(updates))
        .route("/v1/updates/rollback.sh", get(rollback_script))
        .route(
            "/v1/updates/report",
            post(update_report).layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/v1/artifacts/{digest}", get(artifact))
        .with_state(cp)
}

/// The rollout controller: a pass every `every` until the process ends. A pass that fails (the
/// registry away) changes nothing and is retried on the next; it never counts as a pass.
pub async fn run_controller(cp: ControlPlane, policy: crate::gate::policy::Policy, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match crate::rollout::controller::tick(&cp.reg, &policy, jiff::Timestamp::now()).await {
            Ok(steps) => {
                let mut changed = false;
                for s in steps.iter().filter(|s| s.changed) {
                    changed = true;
                    eprintln!(
                        "canary serve: rollout {} on {}: {} — {}",
                        s.rollout,
                        s.channel,
                        s.action,
                        crate::text::clean(&s.note)
                    );
                }
                if changed {
                    cp.invalidate();
                }
            }
            Err(e) => eprintln!("canary serve: rollout controller: {e} (no transition made; retrying)"),
        }
    }
}
