//! The dashboard `canary serve` shows: overview, compatibility history, upstream, fleet and
//! audit. Each page is rendered on the server (maud, which escapes every value) from the same
//! JSON document its `/api/...` route answers, so the page and the API never disagree; no
//! script, no external file. The data functions query only what a page shows.

use crate::error::Result;
use crate::registry::{AuditFilter, Registry, ResultStatus};
use crate::report::html::{STYLE, safe, status_badge};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::{Value, json};

/// Builds the history grid shows (its columns), newest first.
pub const HISTORY_BUILDS: usize = 20;
/// Audit rows per page.
pub const AUDIT_PAGE: i64 = 100;
/// A runner whose last heartbeat is older than this is flagged stale.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

const PAGES: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/history", "Compatibility history"),
    ("/upstream", "Upstream"),
    ("/fleet", "Fleet"),
    ("/audit", "Audit"),
];

/// The page around `body`.
pub fn layout(active: &str, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Canary Lab" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "Canary Lab" }
                    nav {
                        @for (href, name) in PAGES {
                            a href=(href) class=[(*href == active).then_some("on")] { (name) }
                        }
                    }
                }
                main { h2 { (title) } (body) }
            }
        }
    }
    .into_string()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn short(id: &str) -> String {
    safe(crate::lab::short_id(id))
}

fn components(v: &Value) -> Markup {
    html! {
        @if let Some(list) = v.as_array() {
            ul.components {
                @for c in list {
                    li data-component=(safe(s(c, "name"))) {
                        b { (safe(s(c, "name"))) } " " code { (safe(s(c, "version"))) }
                        @if let Some(p) = c["package"].as_str() {
                            " (" (safe(p)) @if let Some(pv) = c["package_version"].as_str() { " " (safe(pv)) } ")"
                        }
                    }
                }
            }
        } @else { "no manifest recorded" }
    }
}

/// Each rollout: its step and share of sessions, the checks of the step, its timeline.
fn rollout_sections(rollouts: &Value) -> Markup {
    html! {
        @if let Some(list) = rollouts.as_array().filter(|l| !l.is_empty()) {
            h2 { "Rollouts" }
            @for x in list {
                @let r = &x["rollout"];
                section.rollout id={ "rollout-" (r["id"]) } {
                    p {
                        strong { "rollout " (r["id"]) } " · build " code { (short(s(r, "build_id"))) }
                        " → " (safe(s(r, "channel"))) " (baseline " code { (short(s(r, "baseline_id"))) } ") · "
                        span class={ "state-" (safe(s(r, "state"))) } { (safe(s(r, "state"))) }
                        @if let Some(rings) = r["rings"].as_array().filter(|r| !r.is_empty()) {
                            @let ring = r["ring"].as_u64().unwrap_or(0) as usize;
                            " · ring " (ring + 1) " of " (rings.len() + 1) " ("
                            (safe(rings.get(ring).and_then(|g| g["name"].as_str()).unwrap_or("everyone else"))) ")"
                        }
                        " · step " (r["step"].as_u64().unwrap_or(0) + 1) " of " (r["steps"].as_array().map_or(0, |a| a.len()))
                        " · " (x["percent"]) " % of sessions"
                    }
                    @if let Some(pushed) = x["pushed"].as_str() {
                        p.pushed { "candidate published as " code { (safe(pushed)) } }
                    }
                    p { (safe(s(r, "note"))) }
                    @if let Some(checks) = x["now"]["checks"].as_array() {
                        table.checks {
                            tr { th { "metric" } th { "candidate" } th { "baseline" } th { "limit" } th { "verdict" } }
                            @for c in checks {
                                tr {
                                    td { (safe(s(c, "metric"))) }
                                    td { (format!("{:.4}", c["candidate"].as_f64().unwrap_or(0.0))) }
                                    td { (format!("{:.4}", c["baseline"].as_f64().unwrap_or(0.0))) }
                                    td { (c["limit"]) }
                                    td title=(safe(s(c, "why"))) { (safe(s(c, "verdict"))) }
                                }
                            }
                        }
                        p { "candidate " (x["now"]["candidate"]["sessions"]) " sessions this step, baseline "
                            (x["now"]["baseline"]["sessions"])
                            @if x["percent"].as_f64().unwrap_or(0.0) >= 100.0 { " since the rollout started" } @else { " this step" } }
                    }
                    details {
                        summary { "timeline (" (x["events"].as_array().map_or(0, |e| e.len())) ")" }
                        ol {
                            @for e in x["events"].as_array().into_iter().flatten() {
                                li { (safe(s(e, "ts"))) " " strong { (safe(s(e, "kind"))) } " step "
                                    (e["step"].as_u64().unwrap_or(0) + 1) " by " (safe(s(e, "actor"))) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The overview: each channel's build with its components, since when, its previous
/// known-good builds, org pins.
pub fn overview(status: &Value, history: &Value, rollouts: &Value) -> Markup {
    html! {
        (rollout_sections(rollouts))
        @if status["channels"].as_array().is_none_or(|c| c.is_empty()) {
            p { "No channel has a build yet: " code { "./lab demo" } " promotes the first to beta." }
        }
        @for c in status["channels"].as_array().into_iter().flatten() {
            section.channel id={ "channel-" (safe(s(c, "channel"))) } {
                h2 { "Channel " (safe(s(c, "channel"))) }
                p {
                    "build " code { (short(s(c, "build"))) } " · " code { (safe(s(c, "image"))) }
                    " · since " (safe(s(c, "since")))
                }
                @if let Some(pushed) = c["pushed"].as_str() {
                    p.pushed { "published as " code { (safe(pushed)) } }
                }
                (components(&c["components"]))
                @if let Some(list) = history[s(c, "channel")].as_array() {
                    details {
                        summary { "known-good history (" (list.len()) ")" }
                        table {
                            tr { th { "build" } th { "kind" } th { "released" } th { "by" } }
                            @for r in list {
                                tr {
                                    td { code { (short(s(r, "build_id"))) } }
                                    td { (safe(s(r, "kind"))) }
                                    td { (safe(s(r, "released_at"))) }
                                    td { (safe(s(r, "actor"))) }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Orgs" }
        table id="orgs" {
            tr { th { "org" } th { "channel" } th { "pinned to" } th { "runs" } th { "since" } }
            @for o in status["orgs"].as_array().into_iter().flatten() {
                tr {
                    td { (safe(s(o, "org"))) }
                    td { (safe(s(o, "channel"))) }
                    td { @if let Some(b) = o["pinned_build"].as_str() { code { (short(b)) } } @else { "follows channel" } }
                    td {
                        code { (short(s(o, "runs"))) }
                        @if let Some(pushed) = o["pushed"].as_str() { br; span.pushed { "published as " code { (safe(pushed)) } } }
                    }
                    td { (safe(s(o, "since"))) }
                }
            }
        }
    }
}

/// The history grid's data: rows suite × repo × provider, one column per build (newest first),
/// each cell the build's latest result there.
pub async fn history_data(reg: &Registry, max_builds: usize) -> Result<Value> {
    let builds = reg.recent_builds(max_builds as i64).await?;
    let mut rows: std::collections::BTreeMap<(String, String, Option<canary_contract::Provider>), Vec<Value>> =
        Default::default();
    let mut columns = Vec::new();
    for (i, b) in builds.iter().enumerate() {
        let cells = reg.latest_cells(&b.id).await?;
        let failing = cells
            .iter()
            .filter(|c| !matches!(c.status, ResultStatus::Pass | ResultStatus::Flaky))
            .count();
        // Most cells failing at once is an outage of the lab or upstream, not flakiness.
        let outage = cells.len() >= 4 && failing * 2 > cells.len();
        // What this build changed against the next older one in the grid (everything it holds
        // for the oldest): the column's label, since build ids alone say nothing to a person.
        let changed: Option<Vec<Value>> = b.manifest.as_ref().map(|m| {
            let before = builds.get(i + 1).and_then(|o| o.manifest.as_ref());
            m.changes_from(before)
                .into_iter()
                .map(|c| json!({"component": c.component, "from": c.from, "to": c.to}))
                .collect()
        });
        columns.push(json!({
            "build": b.id, "image": b.image_ref, "pushed": b.pushed_ref, "created_at": b.created_at,
            "components": b.manifest.as_ref().map(|m| m.summary()),
            "changed": changed,
            "outage": outage,
        }));
        for c in cells {
            let key = (c.suite.clone(), c.repo.clone(), c.provider);
            let row = rows.entry(key).or_insert_with(|| vec![Value::Null; builds.len()]);
            let run_id = c.run_id.clone();
            row[i] = json!({
                "status": c.status.as_str(), "run_id": run_id, "case_id": c.case_id,
                "recorded_at": c.recorded_at, "attempts": c.attempts,
                "report": format!("/reports/{}/report.html#{}", run_id, c.case_id),
                "repro": format!("canary repro {}/{}", run_id, c.case_id),
            });
        }
    }
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|((suite, repo, provider), cells)| {
            // Flake rate: cases that failed and then passed on a rerun of the same inputs, among
            // the results that judged the build (infra errors and outage columns excluded).
            let judged: Vec<&Value> = cells
                .iter()
                .zip(&columns)
                .filter(|(c, col)| !c.is_null() && col["outage"] != true && c["status"] != "infra_error")
                .map(|(c, _)| c)
                .collect();
            let flaky = judged.iter().filter(|c| c["status"] == "flaky").count();
            let rate = if judged.is_empty() {
                Value::Null
            } else {
                json!(flaky as f64 / judged.len() as f64)
            };
            json!({"suite": suite, "repo": repo, "provider": provider.map_or("", canary_contract::Provider::name), "cells": cells, "flake_rate": rate})
        })
        .collect();
    Ok(json!({"columns": columns, "rows": rows}))
}

pub fn history(v: &Value) -> Markup {
    let columns = v["columns"].as_array().cloned().unwrap_or_default();
    html! {
        p { "Rows: suite × repo × provider. Columns: builds, newest first, labelled by what each changed against the one before it. Each cell is the build's latest result; it links to the case's report, and a cell that did not pass shows the command that reproduces it." }
        table id="grid" {
            tr {
                th { "suite" } th { "repo" } th { "provider" } th { "flake rate" }
                @for c in &columns {
                    th title=(safe(c["components"].as_str().unwrap_or(""))) {
                        code { (short(s(c, "build"))) }
                        @for ch in c["changed"].as_array().into_iter().flatten() {
                            br;
                            span.change title=(safe(&format!("{} {} → {}", s(ch, "component"), ch["from"].as_str().unwrap_or("(none)"), ch["to"].as_str().unwrap_or("(removed)")))) {
                                (safe(s(ch, "component"))) " " (safe(ch["to"].as_str().unwrap_or("(removed)")))
                            }
                        }
                        @if let Some(pushed) = c["pushed"].as_str() { br; span.pushed title=(safe(pushed)) { "published" } }
                        @if c["outage"] == true { br; span.st.error title="most cells failed at once" { "outage?" } }
                    }
                }
            }
            @for r in v["rows"].as_array().into_iter().flatten() {
                tr {
                    td { (safe(s(r, "suite"))) } td { (safe(s(r, "repo"))) } td { (safe(s(r, "provider"))) }
                    td { @if let Some(x) = r["flake_rate"].as_f64() { (format!("{:.0} %", x * 100.0)) } }
                    @for cell in r["cells"].as_array().into_iter().flatten() {
                        @if cell.is_null() {
                            td.cell data-status="none" { span.st.none { "—" } }
                        } @else {
                            td.cell data-status=(safe(s(cell, "status"))) title=(safe(s(cell, "repro"))) {
                                a href=(safe(s(cell, "report"))) { (status_badge(s(cell, "status"))) }
                                @if !matches!(s(cell, "status"), "pass" | "flaky") {
                                    br; code.repro { (safe(s(cell, "repro"))) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Versions per provider with their channel, the release-age gate (when each becomes a
/// candidate under `min_release_age`), and the pipeline's verdict on each judged one.
pub async fn upstream_data(
    reg: &Registry,
    min_age: &std::collections::BTreeMap<String, std::time::Duration>,
    now: jiff::Timestamp,
) -> Result<Value> {
    let verdicts = reg.verdicts().await?;
    let mut versions = reg.versions().await?;
    versions.sort_by(|a, b| b.released_at.cmp(&a.released_at));
    let rows: Vec<Value> = versions
        .iter()
        .take(500)
        .map(|v| {
            let verdict = verdicts.iter().find(|d| {
                d.provider == v.provider && Some(&d.package_version) == v.package_version.as_ref().or(Some(&v.version))
            });
            // The release-age gate: a release becomes a candidate once it is old enough.
            let eligible_at = match (v.released_at.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()), min_age.get(v.provider.name())) {
                (Some(t), Some(age)) => jiff::SignedDuration::try_from(*age).ok().and_then(|a| t.checked_add(a).ok()),
                _ => None,
            };
            let wait_s = eligible_at.map(|e| e.duration_since(now).as_secs().max(0));
            json!({
                "version": v,
                "eligible_at": eligible_at.map(|e| e.to_string()),
                "eligible_in_s": wait_s,
                "verdict": verdict.map(|d| json!({"status": d.status, "build": d.build_id, "channel": d.channel, "decided_at": d.decided_at})),
            })
        })
        .collect();
    let skipped = reg.skipped_versions(200).await?;
    Ok(json!({"versions": rows, "skipped": skipped}))
}

pub fn upstream(v: &Value) -> Markup {
    html! {
        table id="upstream" {
            tr { th { "provider" } th { "version" } th { "package" } th { "channel" } th { "released" } th { "release-age gate" } th { "verdict" } }
            @for r in v["versions"].as_array().into_iter().flatten() {
                @let ver = &r["version"];
                tr {
                    td { (safe(s(ver, "provider"))) }
                    td { code { (safe(s(ver, "version"))) } }
                    td { (safe(s(ver, "package"))) " " (safe(s(ver, "package_version"))) }
                    td { (safe(s(ver, "channel"))) }
                    td { (safe(s(ver, "released_at"))) }
                    td.gate {
                        @match r["eligible_in_s"].as_i64() {
                            Some(0) => "eligible",
                            Some(w) => { "eligible in " (humantime::format_duration(std::time::Duration::from_secs(w as u64))) }
                            None => "unknown release time",
                        }
                    }
                    td {
                        @if r["verdict"].is_null() { "not judged" } @else {
                            (safe(s(&r["verdict"], "status"))) " " code { (short(s(&r["verdict"], "build"))) }
                        }
                    }
                }
            }
        }
        @if let Some(list) = v["skipped"].as_array().filter(|l| !l.is_empty()) {
            h2 { "Skipped by the candidate policy" }
            table id="skipped" {
                tr { th { "provider" } th { "version" } th { "released" } th { "why" } th { "last seen" } }
                @for r in list {
                    tr {
                        td { (safe(s(r, "provider"))) }
                        td { code { (safe(s(r, "package_version"))) } }
                        td { (safe(s(r, "released_at"))) }
                        td { (safe(s(r, "reason"))) }
                        td { (safe(s(r, "seen_at"))) }
                    }
                }
            }
        }
    }
}

/// Deployed runners against their channel's known-good, the stale ones flagged.
pub fn fleet_data(status: &Value, now: jiff::Timestamp) -> Value {
    let runners: Vec<Value> = status["runners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let stale = r["sent_at"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_none_or(|t| now.duration_since(t).as_secs() as u64 > STALE_AFTER.as_secs());
            let mut r = r.clone();
            r["stale"] = json!(stale);
            r
        })
        .collect();
    json!({"runners": runners, "stale_after_s": STALE_AFTER.as_secs()})
}

/// The KPIs of the builds sessions run now (each channel's build, each rollout's candidate) over
/// the last day, with their failure and disconnect rates per minute.
pub async fn fleet_kpis(reg: &Registry, now: jiff::Timestamp) -> Result<Value> {
    let since_ts = now.checked_sub(jiff::SignedDuration::from_hours(24)).unwrap_or(now);
    let since = crate::registry::rollup_second(since_ts);
    let state = reg.fleet_state().await?;
    let mut builds: Vec<(canary_contract::BuildId, String)> = state
        .channels
        .iter()
        .map(|(c, b)| (b.clone(), format!("{c} (current)")))
        .collect();
    builds.extend(
        state
            .rollouts
            .iter()
            .map(|(c, r)| (r.build.clone(), format!("{c} (rollout {} candidate)", r.id))),
    );
    let mut out = Vec::new();
    for (build, role) in builds {
        let (sums, start, approval) = reg.telemetry_sums(&build, &since).await?;
        if sums.sessions == 0 {
            continue;
        }
        let series: Vec<Value> = reg
            .telemetry_series(&build, &since)
            .await?
            .into_iter()
            .map(|(minute, n, failed, disconnected)| json!({"minute": minute, "sessions": n, "failed": failed, "disconnected": disconnected}))
            .collect();
        out.push(json!({"build": build, "role": role, "kpis": crate::telemetry::kpis(&sums, &start, &approval), "series": series}));
    }
    Ok(json!({"since": since_ts.to_string(), "builds": out}))
}

/// An inline SVG chart of a build's failure and disconnect rates per minute (plotters' SVG
/// backend; the labels are numbers and times the lab formats itself).
pub fn rate_chart(series: &[Value]) -> String {
    use plotters::prelude::*;
    let points: Vec<(String, f64, f64)> = series
        .iter()
        .map(|p| {
            let n = p["sessions"].as_f64().unwrap_or(0.0).max(1.0);
            (
                s(p, "minute").get(11..16).unwrap_or("").to_string(),
                p["failed"].as_f64().unwrap_or(0.0) * 100.0 / n,
                p["disconnected"].as_f64().unwrap_or(0.0) * 100.0 / n,
            )
        })
        .collect();
    let top = points.iter().map(|p| p.1.max(p.2)).fold(1.0f64, f64::max) * 1.2;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 220)).into_drawing_area();
        let draw =
            || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
                root.fill(&WHITE)?;
                let width = points.len().max(2) as i32 - 1;
                let mut chart = ChartBuilder::on(&root)
                    .margin(8)
                    .x_label_area_size(24)
                    .y_label_area_size(40)
                    .build_cartesian_2d(0..width, 0f64..top)?;
                let labels = points.clone();
                chart
                    .configure_mesh()
                    .x_labels(6)
                    .y_labels(5)
                    .x_label_formatter(&|i| labels.get(*i as usize).map(|p| p.0.clone()).unwrap_or_default())
                    .y_label_formatter(&|v| format!("{v:.1} %"))
                    .draw()?;
                chart
                    .draw_series(LineSeries::new(
                        points.iter().enumerate().map(|(i, p)| (i as i32, p.1)),
                        &RED,
                    ))?
                    .label("failure rate")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
                chart
                    .draw_series(LineSeries::new(
                        points.iter().enumerate().map(|(i, p)| (i as i32, p.2)),
                        &BLUE,
                    ))?
                    .label("disconnect rate")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
                // Points too, so that a single minute shows.
                for (pick, colour) in [(1usize, RED), (2, BLUE)] {
                    chart.draw_series(points.iter().enumerate().map(|(i, p)| {
                        Circle::new((i as i32, if pick == 1 { p.1 } else { p.2 }), 3, colour.filled())
                    }))?;
                }
                chart
                    .configure_series_labels()
                    .border_style(BLACK)
                    .background_style(WHITE)
                    .draw()?;
                root.present()?;
                Ok(())
            };
        if let Err(e) = draw() {
            tracing::warn!("chart: {e}");
        }
    }
    svg
}

pub fn fleet(v: &Value) -> Markup {
    html! {
        @if let Some(builds) = v["kpis"]["builds"].as_array().filter(|b| !b.is_empty()) {
            h2 { "Session KPIs (last 24 h)" }
            @for b in builds {
                @let k = &b["kpis"];
                section.kpis data-build=(safe(s(b, "build"))) {
                    h3 { code { (short(s(b, "build"))) } " " (safe(s(b, "role"))) }
                    p {
                        (k["sessions"]) " sessions · start success " (k["session_start_success_pct"]) " % · time to terminal "
                        (k["avg_time_to_terminal_ms"]) " ms (p95 " (k["p95_time_to_terminal_ms"]) " ms) · failure "
                        (k["failure_rate_pct"]) " % · disconnect " (k["disconnect_rate_pct"]) " % · command failure "
                        (k["command_failure_rate_pct"]) " % · approval gates " (k["approval_gates"]) " (median "
                        (k["median_approval_resolution_ms"]) " ms) · cost per agent-hour " (k["cost_per_agent_hour_usd"]) " USD"
                    }
                    figure.chart { (PreEscaped(rate_chart(b["series"].as_array().map(|a| &a[..]).unwrap_or(&[])))) }
                }
            }
        }
        h2 { "Runners" }
        table id="fleet" {
            tr { th { "runner" } th { "org" } th { "channel" } th { "versions" } th { "channel's known-good" } th { "update" } th { "last heartbeat" } }
            @for r in v["runners"].as_array().into_iter().flatten() {
                @let notice = v["behind"].as_array().into_iter().flatten().find(|n| n["runner_id"] == r["runner_id"]);
                tr.runner data-stale=(r["stale"] == true) data-behind=(notice.is_some()) {
                    td { (safe(s(r, "runner_id"))) }
                    td { (safe(s(r, "org"))) }
                    td { (safe(s(r, "channel"))) }
                    td {
                        @for (k, val) in r["versions"].as_object().into_iter().flatten() {
                            (safe(k)) " " code { (safe(val.as_str().unwrap_or(""))) } br;
                        }
                    }
                    td { code { (short(s(r, "known_good_build"))) } }
                    td.update {
                        @if let Some(n) = notice {
                            span.st.failed { "behind" } " "
                            (safe(s(n, "status"))) " build " code { (short(s(n, "build_id"))) } ": "
                            (safe(&crate::registry::summary(&n["changes"])))
                            @if let Some(d) = n["delivery"].as_str() { br; small { (safe(d)) } }
                        }
                    }
                    td { (safe(s(r, "sent_at"))) @if r["stale"] == true { " " span.st.failed { "stale" } } }
                }
            }
        }
    }
}

pub async fn audit_data(reg: &Registry, filter: &AuditFilter, page: i64) -> Result<Value> {
    let page = page.max(0);
    let rows = reg.audit_page(filter, AUDIT_PAGE, page * AUDIT_PAGE).await?;
    Ok(json!({"filter": filter, "page": page, "rows": rows}))
}

pub fn audit(v: &Value) -> Markup {
    let f = &v["filter"];
    let page = v["page"].as_i64().unwrap_or(0);
    html! {
        form method="get" action="/audit" {
            input name="actor" placeholder="actor" value=(safe(s(f, "actor")));
            " " input name="action" placeholder="action" value=(safe(s(f, "action")));
            " " input name="target" placeholder="target contains" value=(safe(s(f, "target")));
            " " input name="since" placeholder="since (RFC 3339)" value=(safe(s(f, "since")));
            " " button type="submit" { "filter" }
        }
        table id="audit" {
            tr { th { "time" } th { "actor" } th { "action" } th { "target" } th { "decision" } th { "reason" } }
            @for r in v["rows"].as_array().into_iter().flatten() {
                tr {
                    td { (safe(s(r, "ts"))) } td { (safe(s(r, "actor"))) } td { (safe(s(r, "action"))) }
                    td { code { (safe(s(r, "target"))) } } td { (safe(s(r, "decision"))) } td { (safe(s(r, "reason"))) }
                }
            }
        }
        p {
            @if page > 0 { a href={ "/audit?page=" (page - 1) } { "newer" } " " }
            @if v["rows"].as_array().is_some_and(|r| r.len() as i64 == AUDIT_PAGE) { a href={ "/audit?page=" (page + 1) } { "older" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_release_age_gate_counts_down_to_eligibility() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path().join("r.db").to_str().unwrap()).await.unwrap();
        for (version, released) in [("0.163.0", "2026-11-21T12:00:00Z"), ("0.164.0", "2026-11-22T11:00:00Z")] {
            reg.record_version(&crate::registry::VersionRow {
                provider: canary_contract::Provider::Codex,
                version: version.into(),
                released_at: Some(released.into()),
                source: "pypi:openai-codex-cli-bin".into(),
                channel: "stable".into(),
                package: None,
                package_version: None,
            })
            .await
            .unwrap();
        }
        let ages = std::collections::BTreeMap::from([("codex".to_string(), std::time::Duration::from_secs(24 * 3600))]);
        let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let v = upstream_data(&reg, &ages, now).await.unwrap();
        let rows = v["versions"].as_array().unwrap();
        let of = |ver: &str| rows.iter().find(|r| r["version"]["version"] == ver).unwrap().clone();
        assert_eq!(of("0.163.0")["eligible_in_s"], 0, "a day old: eligible");
        assert_eq!(of("0.164.0")["eligible_in_s"], 23 * 3600, "an hour old: 23 h to go");
        let page = layout("/upstream", "Upstream", upstream(&v));
        assert!(page.contains("eligible in 23h"), "{page}");
    }

    #[test]
    fn history_columns_say_what_changed_and_red_cells_how_to_reproduce() {
        let v = json!({
            "columns": [
                {"build": "sha256:bbbbbbbbbbbbbbbb", "outage": false,
                 "changed": [{"component": "codex", "from": "0.161.0", "to": "0.163.0"}]},
                {"build": "sha256:aaaaaaaaaaaaaaaa", "outage": false, "changed": null},
            ],
            "rows": [{"suite": "golden-path", "repo": "python", "provider": "codex", "flake_rate": null, "cells": [
                {"status": "fail", "report": "/reports/r2/report.html#c", "repro": "canary repro r2/golden-path--python--codex"},
                {"status": "pass", "report": "/reports/r1/report.html#c", "repro": "canary repro r1/golden-path--python--codex"},
            ]}],
        });
        let page = layout("/history", "Compatibility history", history(&v));
        assert!(
            page.contains(">codex 0.163.0</span>"),
            "the column names the CLI it changed: {page}"
        );
        assert!(page.contains("codex 0.161.0 → 0.163.0"), "from what: {page}");
        assert!(
            page.contains("<code class=\"repro\">canary repro r2/golden-path--python--codex</code>"),
            "the red cell shows its repro command: {page}"
        );
        assert!(
            !page.contains("<code class=\"repro\">canary repro r1/"),
            "a green one does not"
        );
    }

    #[test]
    fn hostile_values_render_as_text() {
        let status = json!({
            "channels": [{"channel": "beta", "build": "sha256:abc", "image": "<img src=x onerror=alert(1)>", "since": "t",
                          "components": [{"name": "codex", "version": "0.163.0\u{1b}[2J"}]}],
            "orgs": [], "runners": [{"runner_id": "<script>alert(1)</script>", "sent_at": "2020-01-01T00:00:00Z", "versions": {"runner": "1"}}],
        });
        let page = layout("/", "Overview", overview(&status, &json!({}), &json!([])));
        assert!(!page.contains("<img src=x") && page.contains("&lt;img src=x"));
        assert!(!page.contains('\u{1b}'));
        let fleet_page = layout("/fleet", "Fleet", fleet(&fleet_data(&status, jiff::Timestamp::now())));
        assert!(fleet_page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            fleet_page.contains("data-stale=\"true\""),
            "a runner silent since 2020 is stale"
        );
    }
}
