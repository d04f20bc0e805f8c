//! The control plane's runner endpoints, served by `canary serve`: assignment, telemetry,
//! heartbeats and the CLIs' own OpenTelemetry (`otlp`), each behind a runner's bearer token; and
//! the rollout controller's loop. What assignment and authentication read is cached for a
//! second, so a request costs no query.

pub mod otlp;

use crate::authority::RefusalKind;
use crate::registry::Registry;
use crate::rollout::FleetState;
use crate::tokens::Principal;
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
    /// Token hash → whom it speaks for.
    tokens: Slot<BTreeMap<String, Principal>>,
    limiter: Arc<crate::authority::RateLimiter>,
    /// Refused telemetry by runner and why, since this process started.
    refused: Arc<Mutex<BTreeMap<(String, RefusalKind), u64>>>,
    /// The `Host` names pages are answered for.
    hosts: Arc<crate::authority::HostAllow>,
    builds: Arc<Mutex<BTreeSet<String>>>,
    refresh: Arc<tokio::sync::Mutex<()>>,
    /// For customer-hosted runners: the TUF publisher, and the artifacts served.
    updates: Arc<Updates>,
    /// This process's counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Sessions assigned per (build, cohort, rollup second) since the last flush to the registry.
    assigned: Arc<Mutex<BTreeMap<crate::registry::AssignedKey, u64>>>,
    /// This process as one replica of the control plane, and whether it leads the controller.
    pub replica: Arc<crate::replica::Replica>,
}

/// The update endpoints' own state.
#[derive(Default)]
pub struct Updates {
    /// Publishes the signed update metadata (`canary serve --tuf DIR --online-key FILE`).
    pub publisher: Option<crate::update::tuf::Publisher>,
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
            limiter: Default::default(),
            refused: Default::default(),
            hosts: Arc::new(crate::authority::HostAllow::new(None).expect("loopback names")),
            metrics: Default::default(),
            assigned: Default::default(),
            replica: Default::default(),
        }
    }

    /// The same control plane as `replica` of several.
    pub fn with_replica(mut self, replica: crate::replica::Replica) -> ControlPlane {
        self.replica = Arc::new(replica);
        self
    }

    /// The same control plane, answering pages for `hosts`.
    pub fn with_hosts(mut self, hosts: crate::authority::HostAllow) -> ControlPlane {
        self.hosts = Arc::new(hosts);
        self
    }

    /// Adds the assignments counted since the last call to the registry (each controller pass).
    /// Counts that cannot be written are kept for the next pass.
    pub async fn flush_assigned(&self) -> crate::error::Result<()> {
        let counts = std::mem::take(&mut *self.assigned.lock().expect("assigned lock"));
        if let Err(e) = self.reg.add_assigned(&counts).await {
            let mut now = self.assigned.lock().expect("assigned lock");
            for (k, n) in counts {
                *now.entry(k).or_default() += n;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Refused telemetry so far, by runner and why.
    pub fn refusals(&self) -> BTreeMap<(String, RefusalKind), u64> {
        self.refused.lock().expect("lock").clone()
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

    async fn token_map(&self) -> crate::error::Result<Arc<BTreeMap<String, Principal>>> {
        self.cached(&self.tokens, self.reg.live_tokens()).await
    }

    /// The runner a request's token speaks for, or the response refusing it. Operators' tokens
    /// never speak for a runner.
    pub(crate) async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Response> {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Err(unauthorized(
                "no bearer token: send `Authorization: Bearer <token>` (canary tokens create --runner ID --org ORG)",
            ));
        };
        let Some(token) = crate::tokens::bearer(value) else {
            return Err(unauthorized(
                "the Authorization header is not a Canary Lab bearer token",
            ));
        };
        let map = self.token_map().await.map_err(unavailable)?;
        let hash = crate::tokens::hash(token);
        match map.get(&hash) {
            Some(Principal::Runner { runner, orgs }) => Ok(Caller {
                runner: runner.clone(),
                orgs: orgs.clone(),
                hash,
            }),
            Some(Principal::Operator { .. }) => Err(error(
                StatusCode::FORBIDDEN,
                "an operator's token does not speak for a runner: runner endpoints take a runner's token",
            )),
            None => Err(unauthorized("unknown or revoked token")),
        }
    }

    /// Takes one call of `endpoint` from the caller's budget; when it is spent, the 429 to
    /// answer (nothing written).
    pub(crate) fn limit(
        &self,
        caller: &Caller,
        endpoint: &'static str,
        rate: crate::authority::Rate,
    ) -> Option<Response> {
        self.limiter
            .take(&caller.hash, endpoint, rate, Instant::now())
            .err()
            .map(|wait| {
                let secs = wait.as_secs().max(1);
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("too many {endpoint} requests from this token: at most {} per second (burst {}); retry in {secs} s", rate.per_second, rate.burst),
                );
                r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
                r
            })
    }

    fn count_refusal(&self, runner: &str, kind: RefusalKind) {
        let mut r = self.refused.lock().expect("lock");
        if r.len() < 10_000 || r.contains_key(&(runner.to_string(), kind)) {
            *r.entry((runner.to_string(), kind)).or_default() += 1;
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

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": crate::text::clean(message)}))).into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

pub(crate) fn unavailable(e: crate::error::LabError) -> Response {
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
    /// The conversation the session continues, when it resumes one.
    pub conversation: Option<String>,
}

/// Whom a runner endpoint's request speaks for.
pub(crate) struct Caller {
    pub(crate) runner: String,
    orgs: BTreeSet<String>,
    /// The token's hash: what rate limits are kept by.
    hash: String,
}

fn foreign_org(org: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        &format!(
            "org {} is not one this runner's token is bound to (canary tokens create --runner ID --org ORG)",
            crate::text::clean(&org.chars().take(64).collect::<String>())
        ),
    )
}

/// The assignment of a session that may continue a conversation: during a rollout drawn by
/// conversation, the conversation keeps the build it was first given (remembered in the
/// registry, so every replica and a restarted control plane agree).
async fn assign_conversation(
    cp: &ControlPlane,
    state: &FleetState,
    org: &str,
    session: &str,
    conversation: Option<&str>,
) -> crate::error::Result<Option<crate::rollout::Assignment>> {
    let sticky = crate::rollout::rollout_of(state, org)
        .filter(|r| r.key == crate::rollout::CohortKey::Conversation)
        .zip(conversation);
    let remembered = match sticky {
        Some((r, c)) => cp.reg.remembered_build(r.id, org, c).await?,
        None => None,
    };
    let asking = crate::rollout::Asking {
        org,
        session,
        conversation,
        remembered: remembered.as_ref(),
    };
    let a = crate::rollout::assign_to(state, &asking);
    if let (Some((r, c)), Some(a), None) = (sticky, &a, &remembered) {
        let placed = matches!(
            a.source,
            crate::rollout::Source::Candidate | crate::rollout::Source::Baseline
        );
        if placed {
            cp.reg.remember_build(r.id, org, c, &a.build).await?;
        }
    }
    Ok(a)
}

/// `GET /v1/assignment?runner=ID&org=ORG&session=SID[&conversation=CID]`: the build the session runs, recorded so
/// that the session's telemetry can be told from a fabricated one.
pub async fn assignment(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    Query(q): Query<AssignmentQuery>,
) -> Response {
    let caller = match cp.authenticate(&headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Some(resp) = cp.limit(&caller, "assignment", crate::authority::ASSIGNMENT) {
        return resp;
    }
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
    if q.conversation.as_deref().is_some_and(|c| !crate::telemetry::is_id(c)) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "conversation is an id: 1 to 128 letters, digits, `.`, `_`, `:`, `-`",
        );
    }
    if crate::gate::ops::check_name("org", &org).is_err() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "org is 1 to 64 letters, digits, `.`, `_`, `-`",
        );
    }
    if r != caller.runner {
        return forbidden(&caller.runner, &r);
    }
    if !caller.orgs.contains(&org) {
        return foreign_org(&org);
    }
    let state = match cp.fleet_state().await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let assigned = match assign_conversation(&cp, &state, &org, &session, q.conversation.as_deref()).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    match assigned {
        Some(a) => {
            let cohort = a.cohort.as_deref().unwrap_or("");
            let at = jiff::Timestamp::now();
            match cp
                .reg
                .record_assignment(&caller.runner, &session, &org, (&a.build, cohort), at)
                .await
            {
                Ok(()) => {
                    let second = crate::registry::rollup_second(at);
                    *cp.assigned
                        .lock()
                        .expect("assigned lock")
                        .entry((a.build.clone(), cohort.to_string(), second))
                        .or_default() += 1;
                    (StatusCode::OK, Json(json!(a))).into_response()
                }
                Err(e) => unavailable(e),
            }
        }
        None => error(
            StatusCode::NOT_FOUND,
            &format!("org {org}'s channel has no build yet: keep running the current one"),
        ),
    }
}

/// `POST /v1/telemetry`: a batch of finished sessions, each the token's runner's own, of one of
/// its orgs, assigned to it for the build it reports. One refused session refuses the batch
/// (403, counted by runner and reason); nothing of it is stored.
pub async fn telemetry(State(cp): State<ControlPlane>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let caller = match cp.authenticate(&headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Some(resp) = cp.limit(&caller, "telemetry", crate::authority::TELEMETRY) {
        return resp;
    }
    let now = jiff::Timestamp::now();
    let mut sessions = match crate::telemetry::parse_batch(&body, now) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    let ids: Vec<&str> = sessions
        .iter()
        .filter(|s| s.runner == caller.runner)
        .map(|s| s.session.as_str())
        .collect();
    let assigned = match cp.reg.assignments(&caller.runner, &ids).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    if let Err(refusal) = crate::authority::may_report(&caller.runner, &caller.orgs, &sessions, &assigned) {
        cp.count_refusal(&caller.runner, refusal.kind);
        return error(StatusCode::FORBIDDEN, &refusal.message);
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
    if let Err(resp) = otlp::fill_usage(&cp, &caller.runner, &mut sessions).await {
        return resp;
    }
    // Each session counts in the comparison its assignment put it in (never the runner's say).
    for s in &mut sessions {
        if let Some(a) = assigned.get(&s.session) {
            s.cohort.clone_from(&a.cohort);
        }
    }
    match cp.reg.ingest(&sessions, now).await {
        Ok(new) => {
            cp.metrics.ingested(new);
            (StatusCode::OK, Json(json!({"received": sessions.len(), "new": new}))).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /v1/heartbeats`: the token's runner's heartbeat.
pub async fn heartbeat(State(cp): State<ControlPlane>, headers: HeaderMap, body: String) -> Response {
    let caller = match cp.authenticate(&headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Some(resp) = cp.limit(&caller, "heartbeat", crate::authority::HEARTBEAT) {
        return resp;
    }
    let h = match crate::heartbeat::parse(&body, "request body") {
        Ok(h) => h,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    if h.runner_id != caller.runner {
        return forbidden(&caller.runner, &h.runner_id);
    }
    if let Some(org) = h.org.as_deref().filter(|o| !caller.orgs.contains(*o)) {
        return foreign_org(org);
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
    let n = match crate::update::server::notice(&cp.reg, runner, cp.updates.publisher.is_some(), &cp.updates.orgs).await
    {
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
            "rollback": "canary-runner update rollback",
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
async fn runner_of(cp: &ControlPlane, headers: &HeaderMap, q: &RunnerQuery) -> Result<Caller, Response> {
    let caller = cp.authenticate(headers).await?;
    let runner = caller.runner.clone();
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
    Ok(caller)
}

/// `GET /v1/updates?runner=ID`: the build this customer-hosted runner should run, its traffic
/// light, the changes from what it reported and how to roll back; for display: what a host
/// installs comes from the signed metadata (`/v1/tuf/...`).
pub async fn updates(State(cp): State<ControlPlane>, headers: HeaderMap, Query(q): Query<RunnerQuery>) -> Response {
    let runner = match runner_of(&cp, &headers, &q).await {
        Ok(c) => c.runner,
        Err(resp) => return resp,
    };
    match crate::update::server::offer(&cp.reg, &runner, cp.updates.publisher.is_some(), &cp.updates.orgs).await {
        Ok(o) => (StatusCode::OK, Json(o)).into_response(),
        Err(crate::error::LabError::Usage(m, h)) => error(StatusCode::NOT_FOUND, &format!("{m}: {h}")),
        Err(e) => unavailable(e),
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
        Ok(c) => match cp.limit(&c, "update report", crate::authority::UPDATE_REPORT) {
            None => c.runner,
            Some(resp) => return resp,
        },
        Err(resp) => return resp,
    };
    // The action and outcome are the host's own types: anything else does not deserialize.
    let entry: crate::update::host::AuditEntry = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            let said = crate::text::clean(&e.to_string()).chars().take(300).collect::<String>();
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("not an update report: {said}"),
            );
        }
    };
    let short = |s: &Option<canary_contract::BuildId>| s.as_deref().map(|v| v.chars().take(80).collect::<String>());
    let target = format!("runner:{runner}");
    let action = format!("runner.{}", entry.action);
    let reason: String = entry.reason.chars().take(2000).collect();
    let audit = crate::registry::Audit {
        actor: &target,
        action: &action,
        target: &target,
        decision: entry.outcome.as_str(),
        reason: &reason,
        evidence: json!({"from": short(&entry.from), "to": short(&entry.to), "at": entry.at.chars().take(40).collect::<String>()}),
    };
    match cp.reg.audit(audit).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"recorded": true}))).into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /v1/tuf/PATH`: the published TUF metadata and offer documents, to any runner's token;
/// an org's own offer documents only to tokens bound to that org.
pub async fn tuf_file(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    let caller = match cp.authenticate(&headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Some(resp) = cp.limit(&caller, "update metadata", crate::authority::UPDATE_METADATA) {
        return resp;
    }
    match crate::update::tuf::access(&path) {
        crate::update::tuf::Access::Never => return error(StatusCode::NOT_FOUND, "no such update metadata"),
        crate::update::tuf::Access::Org(org) if !caller.orgs.contains(&org) => {
            return error(
                StatusCode::FORBIDDEN,
                "another org's offer: this token is not bound to it",
            );
        }
        _ => {}
    }
    if cp.updates.publisher.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "this control plane publishes no update metadata (canary serve --tuf DIR --online-key FILE)",
        );
    }
    match cp.reg.tuf_file(&path).await {
        Ok(Some(body)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such update metadata"),
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

/// Middleware for what people read (the dashboard, `/api/...`, `/v1/status`): answered only for
/// an allowed `Host` (a DNS-rebinding page names its own), and only to an operator's token of the
/// role the page needs, as a bearer token or as the password of HTTP Basic (so a browser's own
/// login prompt works). Runners' tokens never open these pages.
/// Times every answered request for `/metrics`, by the route pattern it matched.
pub async fn observe(
    State(cp): State<ControlPlane>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let response = next.run(request).await;
    cp.metrics.observe(&route, response.status().as_u16(), start.elapsed());
    response
}

/// `GET /metrics` (an operator's token): the Prometheus text format.
pub async fn metrics(State(cp): State<ControlPlane>) -> Response {
    match crate::metrics::render(&cp.metrics, &cp.replica, &cp.reg, jiff::Timestamp::now()).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

pub async fn require_operator(
    State(cp): State<ControlPlane>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    if !cp.hosts.allows(host) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "this control plane does not answer pages for that Host; start `canary serve --public-url URL` with the address people use",
        );
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::tokens::from_authorization);
    let Some(token) = token else {
        return challenge(
            "this dashboard needs an operator's token: `canary tokens create --operator NAME --role viewer`, as the password (any user name) or as `Authorization: Bearer <token>`",
        );
    };
    let needs = crate::authority::role_for_path(request.uri().path());
    match cp.token_map().await {
        Ok(map) => match map.get(&crate::tokens::hash(&token)) {
            Some(Principal::Operator { role, .. }) if *role >= needs => next.run(request).await,
            Some(Principal::Operator { role, .. }) => error(
                StatusCode::FORBIDDEN,
                &format!(
                    "this page needs the {} role; the token has {}",
                    needs.as_str(),
                    role.as_str()
                ),
            ),
            Some(Principal::Runner { .. }) => error(
                StatusCode::FORBIDDEN,
                "a runner's token does not open the dashboard: use an operator's token",
            ),
            None => challenge("unknown or revoked token"),
        },
        Err(e) => unavailable(e),
    }
}

/// Headers on every answer: nothing is cached, sniffed, framed, or loaded from elsewhere.
pub async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    r
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
        .route(
            "/otlp/v1/logs",
            post(otlp::logs).layer(DefaultBodyLimit::max(otlp::MAX_BODY)),
        )
        .route(
            "/otlp/v1/metrics",
            post(otlp::metrics).layer(DefaultBodyLimit::max(otlp::MAX_BODY)),
        )
        .route("/v1/updates", get(updates))
        .route(
            "/v1/updates/report",
            post(update_report).layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/v1/artifacts/{digest}", get(artifact))
        .route("/v1/tuf/{*path}", get(tuf_file))
        .with_state(cp)
}

/// Publishes the update metadata if the offers, the root or the timestamp's age call for it. A
/// failure leaves the last publication served (hosts refuse it once it expires).
pub async fn publish(cp: &ControlPlane, p: &crate::update::tuf::Publisher) {
    let docs = match crate::update::server::documents(&cp.reg, &cp.updates.orgs).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("canary serve: could not assemble the update offers: {e}");
            return;
        }
    };
    match p.publish(&cp.reg, &docs, jiff::Timestamp::now()).await {
        Ok(Some(v)) => eprintln!(
            "canary serve: published update metadata version {v} ({} offers)",
            docs.len()
        ),
        Ok(None) => {}
        Err(e) => eprintln!("canary serve: could not publish the update metadata: {e}"),
    }
}

/// The rollout controller: a pass every `every` until the process ends, by the replica that holds
/// the controller lease (every replica renews or asks for it each pass). A pass that fails (the
/// registry away) changes nothing and is retried on the next; it never counts as a pass.
pub async fn run_controller(
    cp: ControlPlane,
    policy: crate::gate::policy::Policy,
    repos: Vec<String>,
    every: Duration,
) {
    let mut refused = BTreeSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = Instant::now();
    loop {
        tick.tick().await;
        // Every replica adds the assignments it counted; only the lease's holder does the rest.
        if let Err(e) = cp.flush_assigned().await {
            eprintln!("canary serve: could not record assignment counts: {e} (kept for the next pass)");
        }
        if !cp.replica.renew(&cp.reg).await {
            continue;
        }
        // Assignments live as long as their telemetry may still arrive (a week), then go.
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = Instant::now();
            let before =
                jiff::Timestamp::now() - jiff::SignedDuration::try_from(crate::telemetry::MAX_AGE).expect("small");
            if let Err(e) = cp.reg.prune_assignments(before).await {
                eprintln!("canary serve: could not prune old assignments: {e}");
            }
        }
        if let Some(p) = &cp.updates.publisher {
            publish(&cp, p).await;
        }
        match crate::rollout::controller::tick(&cp.reg, &policy, jiff::Timestamp::now()).await {
            Ok(steps) => {
                let mut changed = false;
                for s in steps.iter().filter(|s| s.changed) {
                    changed = true;
                    eprintln!(
                        "canary serve: rollout {} on {}: {} — {}",
                        s.rollout,
                        s.channel,
                        crate::rollout::pass_word(s.action),
                        crate::text::clean(&s.note)
                    );
                }
                if changed {
                    cp.invalidate();
                }
            }
            Err(e) => eprintln!("canary serve: rollout controller: {e} (no transition made; retrying)"),
        }
        match crate::rollout::train::train(&cp.reg, &policy, &repos, jiff::Timestamp::now(), &mut refused).await {
            Ok(said) => {
                for line in &said {
                    eprintln!("canary serve: train: {}", crate::text::clean(line));
                }
                if !said.is_empty() {
                    cp.invalidate();
                }
            }
            Err(e) => eprintln!("canary serve: train: {e} (retrying)"),
        }
    }
}
