//! What each channel and org runs, what is available, what the fleet reports and what is new
//! upstream: one model, assembled here from the registry, that `canary status --json`,
//! `GET /v1/status` and the dashboard's overview all show.

use crate::error::{LabError, Result};
use crate::registry::Registry;

/// How many of the newest builds with results the status looks at for what is available.
pub const RECENT_BUILDS: i64 = 100;

/// The status document; `org` narrows the orgs to one (an unknown org is an error).
pub async fn status(reg: &Registry, org: Option<&str>) -> Result<serde_json::Value> {
    // Only the builds the document names are read, so the status stays fast as history grows:
    // each channel's current build, and the newest builds for what is available.
    let mut builds = reg.recent_builds(RECENT_BUILDS).await?;
    let mut channel_rows = Vec::new();
    for channel in reg.channels().await? {
        let history = reg.known_good(&channel).await?;
        let releases = reg.releases(Some(&channel), 1).await?;
        if let Some(r) = history.first() {
            if !builds.iter().any(|b| b.id == r.build_id) {
                if let Some(b) = reg.build_row(&r.build_id).await? {
                    builds.push(b);
                }
            }
        }
        let current = history.first().and_then(|r| builds.iter().find(|b| b.id == r.build_id));
        let manifest = current.and_then(|b| b.manifest.clone());
        channel_rows.push(serde_json::json!({
            "channel": channel,
            "build": history.first().map(|r| r.build_id.clone()),
            "image": current.map(|b| b.image_ref.clone()),
            "pushed": current.and_then(|b| b.pushed_ref.clone()),
            "components": manifest.as_ref().map(|m| &m.components),
            "since": releases.first().map(|r| r.released_at.clone()),
            "previous_known_good": history.get(1).map(|r| r.build_id.clone()),
        }));
    }
    let mut org_rows = Vec::new();
    for p in reg.pins().await?.into_iter().filter(|p| org.is_none_or(|o| o == p.org)) {
        let runs = crate::gate::ops::effective(reg, Some(&p)).await?;
        // Where the org's runners pull what it runs from, when that build was pushed.
        let pushed = match &runs {
            Some(b) => reg.pushed_ref(b).await?.map(|r| r.to_string()),
            None => None,
        };
        org_rows.push(serde_json::json!({"org": p.org, "channel": p.channel, "pinned_build": p.pinned_build_id, "runs": runs, "pushed": pushed, "since": p.since}));
    }
    if let Some(org) = org {
        if org_rows.is_empty() {
            return Err(LabError::usage(
                format!("unknown org `{org}`"),
                "`canary status` lists the orgs with pins",
            ));
        }
    }
    let current: Vec<String> = channel_rows
        .iter()
        .filter_map(|c| c["build"].as_str().map(String::from))
        .collect();
    let available: Vec<_> = builds
        .iter()
        .filter(|b| !current.iter().any(|c| *c == b.id) && b.results > 0 && b.results == b.passing)
        .map(|b| serde_json::json!({"build": b.id, "image": b.image_ref, "results": b.results}))
        .collect();
    // Deployed runners next to what they should run: the known-good of their channel.
    let mut runners = Vec::new();
    for h in reg.heartbeats().await? {
        let channel = h.channel.clone().unwrap_or_else(canary_contract::Channel::stable);
        let kg = channel_rows
            .iter()
            .find(|c| c["channel"] == channel.as_str())
            .and_then(|c| c["build"].as_str().map(String::from));
        let kg_runtimes = kg
            .as_ref()
            .and_then(|id| builds.iter().find(|b| &b.id == id))
            .map(|b| b.runtime_versions.clone())
            .unwrap_or(serde_json::Value::Null);
        runners.push(serde_json::json!({
            "runner_id": h.runner_id, "org": h.org, "channel": channel, "versions": h.versions,
            "capabilities": h.capabilities, "sent_at": h.sent_at, "received_at": h.received_at,
            "known_good_build": kg, "known_good_runtimes": kg_runtimes,
        }));
    }
    let upstream = newest_upstream(reg).await?;
    Ok(serde_json::json!({
        "channels": channel_rows, "orgs": org_rows, "available": available,
        "runners": runners, "upstream": upstream,
    }))
}

/// One channel of `canary status`: its build, where it was published, and its components.
fn channel_lines(c: &serde_json::Value, out: &mut Vec<String>) {
    use canary_contract::build::short_id as short;
    use canary_contract::text::clean;
    out.push(format!(
        "  {:<8} {:<14} {:<34} since {}  (previous known-good: {})",
        c["channel"].as_str().unwrap_or(""),
        short(c["build"].as_str().unwrap_or("-")),
        clean(c["image"].as_str().unwrap_or("")),
        c["since"].as_str().unwrap_or("-"),
        c["previous_known_good"].as_str().map(short).unwrap_or("none")
    ));
    if let Some(pushed) = c["pushed"].as_str() {
        out.push(format!("           published as {}", clean(pushed)));
    }
    for comp in c["components"].as_array().into_iter().flatten() {
        out.push(format!(
            "           {:<12} {}",
            clean(comp["name"].as_str().unwrap_or("")),
            clean(comp["version"].as_str().unwrap_or(""))
        ));
    }
}

/// `canary status` as terminal lines, from the JSON document [`status`] answers (the same one
/// `--json` prints and `GET /v1/status` serves). Stored strings are cleaned before they show.
pub fn lines(v: &serde_json::Value) -> Vec<String> {
    use canary_contract::build::short_id as short;
    use canary_contract::text::clean;
    let mut out = Vec::new();
    let rows = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let (channel_rows, org_rows, available) = (rows("channels"), rows("orgs"), rows("available"));
    out.push("CHANNELS".into());
    for c in &channel_rows {
        channel_lines(c, &mut out);
    }
    out.push("ORGS".into());
    for o in &org_rows {
        let how = match o["pinned_build"].as_str() {
            Some(b) => format!("pinned to {}", short(b)),
            None => format!("follows {}", o["channel"].as_str().unwrap_or("")),
        };
        out.push(format!(
            "  {:<16} {:<26} runs {:<14} since {}",
            clean(o["org"].as_str().unwrap_or("")),
            how,
            o["runs"].as_str().map(short).unwrap_or("-"),
            o["since"].as_str().unwrap_or("")
        ));
        if let Some(pushed) = o["pushed"].as_str() {
            out.push(format!("           published as {}", clean(pushed)));
        }
    }
    out.push("AVAILABLE (every recorded case passed, not current anywhere)".into());
    for b in &available {
        out.push(format!(
            "  {:<14} {}",
            short(b["build"].as_str().unwrap_or("")),
            clean(b["image"].as_str().unwrap_or(""))
        ));
    }
    let versions = |v: &serde_json::Value| {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "-".into())
    };
    out.push("RUNNERS (deployed, from heartbeats; known-good of their channel)".into());
    for r in rows("runners") {
        out.push(format!(
            "  {:<18} {:<8} runs {:<40} known-good {:<30} last seen {}",
            clean(r["runner_id"].as_str().unwrap_or("")),
            r["channel"].as_str().unwrap_or(""),
            versions(&r["versions"]),
            versions(&r["known_good_runtimes"]),
            r["sent_at"].as_str().unwrap_or("")
        ));
    }
    out.push("UPSTREAM (newest version recorded by `canary watch`)".into());
    if let Some(m) = v["upstream"].as_object() {
        for (p, u) in m {
            out.push(format!(
                "  {:<12} {:<12} {:<8} published {}",
                p,
                clean(u["version"].as_str().unwrap_or("")),
                u["channel"].as_str().unwrap_or(""),
                u["released_at"].as_str().unwrap_or("-")
            ));
        }
    }
    out
}

/// The newest upstream version the watch recorded, per provider. Claude Code releases whose
/// bundled CLI version is not known yet (`sdk-…`) are not CLI versions and never "newest".
async fn newest_upstream(reg: &Registry) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let mut upstream: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for v in reg
        .versions()
        .await?
        .into_iter()
        .filter(|v| !v.version.starts_with("sdk-"))
    {
        let newer = match upstream.get(v.provider.name()) {
            None => true,
            Some(cur) => {
                let parse = |s: &str| crate::upstream::semver_of(s);
                match (parse(&v.version), cur["version"].as_str().and_then(parse)) {
                    (Some(a), Some(b)) => a > b,
                    _ => false,
                }
            }
        };
        if newer {
            upstream.insert(v.provider.to_string(), serde_json::to_value(&v).expect("json"));
        }
    }
    Ok(upstream)
}
