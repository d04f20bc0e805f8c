//! Issuing and revoking the control plane's bearer tokens, each change audited: what
//! `canary tokens create|list|revoke` do. A token is shown once, stored hashed.

use crate::error::{LabError, Result};
use crate::gate::ops::Actor;
use crate::registry::{Audit, Registry, TokenRow};
use crate::tokens::{Issued, Principal};
use canary_contract::text::clean;

/// A principal in words: `runner r-1 (orgs acme, beta-org)` or `operator ana (admin)`.
pub fn describe(p: &Principal) -> String {
    match p {
        Principal::Runner { runner, orgs } => format!(
            "runner {} (orgs {})",
            clean(runner),
            clean(&orgs.iter().cloned().collect::<Vec<_>>().join(", "))
        ),
        Principal::Operator { operator, role } => format!("operator {} ({})", clean(operator), role.as_str()),
    }
}

/// What a person is told, beside the token itself, when one is issued.
pub fn issued_note(t: &Issued) -> String {
    format!(
        "token {} for {}: shown once, stored hashed; send it as `Authorization: Bearer …` (a runner: canary-runner --token / CANARY_RUNNER_TOKEN; a browser: as the password)",
        t.id,
        describe(&t.principal)
    )
}

/// Refuses a principal whose name is not an id or whose org is not a name (call it before the
/// registry is opened: a bad input writes nothing).
pub fn check(principal: &Principal) -> Result<()> {
    if let Principal::Runner { orgs, .. } = principal {
        for o in orgs {
            crate::gate::ops::check_name("org", o)?;
        }
    }
    let name = principal.name().to_string();
    if !crate::telemetry::is_id(&name) {
        return Err(LabError::usage(
            format!("`{}` is not an id", clean(&name)),
            "a runner id or operator name is 1 to 128 letters, digits, `.`, `_`, `:`, `-`",
        ));
    }
    Ok(())
}

/// Issues a token for `principal` (checked) and stores its hash.
pub async fn issue(reg: &Registry, principal: Principal, who: Actor<'_>) -> Result<Issued> {
    check(&principal)?;
    let t = crate::tokens::issue(principal)?;
    let target = format!("{} token {}", describe(&t.principal), t.id);
    let audit = Audit {
        actor: who.name,
        action: "token create",
        target: &target,
        decision: "done",
        reason: who.reason,
        evidence: serde_json::json!({}),
    };
    reg.add_token(&t, audit).await?;
    Ok(t)
}

/// Which tokens a revocation names: one by id, or every token of a runner.
pub enum Revoke<'a> {
    Id(&'a str),
    Runner(&'a str),
}

impl Revoke<'_> {
    /// Refuses a token id that is not one (before the registry is opened).
    pub fn check(&self) -> Result<()> {
        match self {
            Revoke::Id(i) if i.len() != 12 || !i.chars().all(|c| c.is_ascii_hexdigit()) => Err(LabError::usage(
                format!("`{}` is not a token id", clean(i)),
                "token ids are the 12 hex digits `canary tokens list` shows",
            )),
            _ => Ok(()),
        }
    }
}

/// Revokes the tokens named; how many were live, and what was named (for the audit and the
/// user). Runners using them are refused within a second (the server's cache lifetime).
pub async fn revoke(reg: &Registry, which: Revoke<'_>, who: Actor<'_>) -> Result<(u64, String)> {
    which.check()?;
    let (id, runner, target) = match which {
        Revoke::Id(i) => (Some(i), None, format!("token {i}")),
        Revoke::Runner(r) => (None, Some(r), format!("runner {} tokens", clean(r))),
    };
    let audit = Audit {
        actor: who.name,
        action: "token revoke",
        target: &target,
        decision: "done",
        reason: who.reason,
        evidence: serde_json::json!({}),
    };
    let n = reg.revoke_tokens(id, runner, audit).await?;
    Ok((n, target))
}

/// Every token, one line each (never the secret: only its id).
pub fn lines(all: &[TokenRow]) -> Vec<String> {
    if all.is_empty() {
        return vec!["no tokens; `canary tokens create --runner ID --org ORG` issues one".into()];
    }
    all.iter()
        .map(|t| {
            let who = match &t.principal {
                Principal::Runner { runner, orgs } => format!(
                    "runner {} [{}]",
                    clean(runner),
                    clean(&orgs.iter().cloned().collect::<Vec<_>>().join(","))
                ),
                Principal::Operator { .. } => describe(&t.principal),
            };
            format!(
                "{}  {:<32} created {} by {}{}",
                t.id,
                who,
                t.created_at,
                clean(&t.actor),
                t.revoked_at
                    .as_ref()
                    .map(|r| format!(", revoked {r}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}
