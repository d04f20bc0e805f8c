//! Opting a repo in to sweeps, checked field by field before anything is stored, and the PR
//! acceptance KPI read back from the forge.

use super::Commands;
use crate::error::{LabError, Result};
use crate::registry::{Registry, SweepRepo};
use serde::Serialize;
use std::collections::BTreeMap;

/// What `canary sweeps repos add` was given.
pub struct OptIn<'a> {
    pub url: &'a str,
    pub org: &'a str,
    pub branch: &'a str,
    /// The forge's REST API base (default: derived from the URL).
    pub api: Option<&'a str>,
    /// The environment variable the forge token is read from at sweep time.
    pub token_env: Option<&'a str>,
    pub commands: Commands,
}

fn check_env_name(v: &str) -> Result<()> {
    if !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !v.as_bytes()[0].is_ascii_digit()
    {
        Ok(())
    } else {
        Err(LabError::usage(
            format!("`{}` is not an environment variable name", crate::text::clean(v)),
            "letters, digits and `_`, e.g. --token-env ACME_FORGE_TOKEN",
        ))
    }
}

/// The repo row an opt-in stores, or the first field that is wrong and how to write it.
pub fn repo(o: &OptIn<'_>) -> Result<SweepRepo> {
    crate::gate::ops::check_name("org", o.org)?;
    super::check_branch(o.branch)?;
    let id = super::repo_id(o.url)?;
    if let Some(v) = o.token_env {
        check_env_name(v)?;
    }
    let api_url = match o.api {
        Some(a) if !crate::config::is_http_url(a) => {
            return Err(LabError::usage(
                format!("--api `{}` is not an http(s) URL", crate::text::clean(a)),
                "give the forge's REST API base, e.g. https://forge.example.invalid/api/v3",
            ));
        }
        Some(a) => a.trim_end_matches('/').to_string(),
        None => super::default_api(o.url),
    };
    let c = &o.commands;
    for (name, c) in [("lint", &c.lint), ("test", &c.test), ("ci", &c.ci)] {
        if c.as_deref()
            .is_some_and(|c| c.trim().is_empty() || c.chars().any(|ch| ch.is_control() && ch != '\t'))
        {
            return Err(LabError::usage(
                format!("--{name} is empty or holds control characters"),
                "give the command the repo's own CI runs, e.g. --test 'python3 -m pytest -q'",
            ));
        }
    }
    Ok(SweepRepo {
        id,
        org: o.org.to_string(),
        url: o.url.to_string(),
        branch: o.branch.to_string(),
        api_url,
        token_env: o.token_env.map(String::from),
        commands: serde_json::to_value(&o.commands).expect("json"),
        added_at: crate::registry::now(),
    })
}

/// Stores an opted-in repo (audited).
pub async fn add(reg: &Registry, repo: &SweepRepo, who: crate::gate::ops::Actor<'_>) -> Result<()> {
    let audit = crate::registry::Audit {
        actor: who.name,
        action: "sweeps repo add",
        target: &format!("repo {}", repo.id),
        decision: "done",
        reason: who.reason,
        evidence: serde_json::json!({"org": repo.org, "url": repo.url, "branch": repo.branch}),
    };
    reg.add_sweep_repo(repo, audit).await
}

/// Opts a repo out (audited); whether it was opted in.
pub async fn remove(reg: &Registry, id: &str, who: crate::gate::ops::Actor<'_>) -> Result<bool> {
    let audit = crate::registry::Audit {
        actor: who.name,
        action: "sweeps repo remove",
        target: &format!("repo {id}"),
        decision: "done",
        reason: who.reason,
        evidence: serde_json::json!({}),
    };
    reg.remove_sweep_repo(id, audit).await
}

/// The opted-in repos, one line each.
pub fn lines(all: &[SweepRepo]) -> Vec<String> {
    use canary_contract::text::clean;
    if all.is_empty() {
        return vec!["no repos opted in (canary sweeps repos add URL --org ORG)".into()];
    }
    all.iter()
        .map(|r| {
            format!(
                "{} ({}) {} at {}",
                clean(&r.id),
                clean(&r.org),
                clean(&r.url),
                clean(&r.branch)
            )
        })
        .collect()
}

/// Sweep PRs by what became of them.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Tally {
    pub opened: u64,
    pub merged: u64,
    pub closed_unmerged: u64,
    pub open: u64,
}

impl Tally {
    /// merged / (merged + closed unmerged), in percent to one decimal; none before any PR is
    /// decided.
    pub fn acceptance_pct(&self) -> Option<f64> {
        let decided = self.merged + self.closed_unmerged;
        (decided > 0).then(|| (self.merged as f64 * 1000.0 / decided as f64).round() / 10.0)
    }
}

/// The PR acceptance KPI by org and by build, and the PRs whose state could not be read.
#[derive(Debug, Default)]
pub struct Acceptance {
    pub by_org: BTreeMap<String, Tally>,
    pub by_build: BTreeMap<String, Tally>,
    pub unreadable: Vec<String>,
}

impl Acceptance {
    /// The KPI by org as terminal lines (org names cleaned).
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec!["sweep PR acceptance (merged / (merged + closed unmerged)):".to_string()];
        out.extend(self.by_org.iter().map(|(k, t)| {
            format!(
                "  org {}: {} opened, {} merged, {} closed unmerged, {} open — {}",
                crate::text::clean(k),
                t.opened,
                t.merged,
                t.closed_unmerged,
                t.open,
                t.acceptance_pct()
                    .map(|r| format!("{r} %"))
                    .unwrap_or("no decided PRs yet".into())
            )
        }));
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let view = |m: &BTreeMap<String, Tally>, key: &str| -> Vec<serde_json::Value> {
            m.iter()
                .map(|(k, t)| {
                    let mut v = serde_json::to_value(t).expect("json");
                    v[key] = serde_json::json!(k);
                    v["acceptance_pct"] = serde_json::json!(t.acceptance_pct());
                    v
                })
                .collect()
        };
        serde_json::json!({"orgs": view(&self.by_org, "org"), "builds": view(&self.by_build, "build"), "unreadable": self.unreadable})
    }
}

/// Reads every sweep PR's state back from its forge (the forge is the truth), keeps it in the
/// registry, and tallies them. A PR whose state cannot be read counts by its last known state.
pub async fn acceptance(reg: &Registry) -> Result<Acceptance> {
    let repos = reg.sweep_repos().await?;
    let jobs = reg.sweep_jobs(100_000).await?;
    let mut a = Acceptance::default();
    for j in jobs.iter().filter(|j| j.pr_number.is_some()) {
        let number = j.pr_number.unwrap_or(0);
        let known = || j.pr_state.clone().unwrap_or_else(|| "open".into());
        let state = match repos.iter().find(|r| r.id == j.repo_id) {
            Some(repo) => match super::job::pr_state(repo, number).await {
                Ok(s) => {
                    reg.set_sweep_pr_state(j.id, &s).await?;
                    s
                }
                Err(e) => {
                    a.unreadable.push(format!("{} #{number}: {e}", j.repo_id));
                    known()
                }
            },
            None => known(),
        };
        for t in [
            a.by_org.entry(j.org.clone()).or_default(),
            a.by_build.entry(j.build_id.to_string()).or_default(),
        ] {
            t.opened += 1;
            match state.as_str() {
                "merged" => t.merged += 1,
                "closed" => t.closed_unmerged += 1,
                _ => t.open += 1,
            }
        }
    }
    Ok(a)
}
