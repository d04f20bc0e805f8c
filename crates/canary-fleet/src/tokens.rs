//! Tokens: what every endpoint of `canary serve` but `/healthz` requires. A runner's token speaks
//! for that runner and the orgs it is bound to; an operator's for a person with a role. A token is shown once
//! when it is issued; the registry keeps its SHA-256 only, and the public id to list and revoke it.

use sha2::Digest;
use std::collections::BTreeSet;

/// What an operator may do on `canary serve`, each role including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the dashboard, `/api/*` (but the audit log) and `/v1/status`.
    Viewer,
    /// Also reads the audit log.
    Operator,
    /// Also changes state through the control plane.
    Admin,
}

canary_contract::words!(Role, "a role", { Viewer => "viewer", Operator => "operator", Admin => "admin" });

/// Whom a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// One runner: its own sessions, heartbeats and updates, for the orgs it is bound to.
    Runner { runner: String, orgs: BTreeSet<String> },
    /// A person or tool reading (or, by role, operating) the control plane; never a runner.
    Operator { operator: String, role: Role },
}

impl Principal {
    /// The runner id or operator name.
    pub fn name(&self) -> &str {
        match self {
            Principal::Runner { runner, .. } => runner,
            Principal::Operator { operator, .. } => operator,
        }
    }
}

/// A newly issued token: `cl_<id>_<secret>`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    pub id: String,
    #[serde(flatten)]
    pub principal: Principal,
    pub token: String,
    #[serde(skip)]
    pub hash: String,
}

/// Issues a token for `principal` from the operating system's random source.
pub fn issue(principal: Principal) -> crate::error::Result<Issued> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id)
        .and_then(|_| getrandom::fill(&mut secret))
        .map_err(|e| crate::error::LabError::usage(format!("no random source: {e}"), "internal"))?;
    let id = hex::encode(id);
    let token = format!("cl_{id}_{}", hex::encode(secret));
    Ok(Issued {
        hash: hash(&token),
        id,
        principal,
        token,
    })
}

/// A runner's token, bound to `orgs`.
pub fn issue_runner(runner: &str, orgs: &[String]) -> crate::error::Result<Issued> {
    issue(Principal::Runner {
        runner: runner.to_string(),
        orgs: orgs.iter().cloned().collect(),
    })
}

pub fn hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// The token of an `Authorization: Bearer ...` header value, if it is one of ours in shape.
pub fn bearer(header: &str) -> Option<&str> {
    let t = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?
        .trim();
    (t.len() == 3 + 12 + 1 + 64 && t.starts_with("cl_") && t.is_ascii()).then_some(t)
}

/// The token of an `Authorization` header from a person's browser or tool: a bearer token, or
/// HTTP Basic with the token as the password (the browser's own login prompt; the user name is
/// ignored). `None` unless the value is one of ours in shape.
pub fn from_authorization(header: &str) -> Option<String> {
    if let Some(t) = bearer(header) {
        return Some(t.to_string());
    }
    use base64::Engine;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?
        .trim();
    if encoded.len() > 512 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    bearer(&format!("Bearer {password}")).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_checked_by_hash_and_shape() {
        let a = issue_runner("r-1", &[]).unwrap();
        let b = issue_runner("r-1", &[]).unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(hash(&a.token), a.hash);
        assert_eq!(bearer(&format!("Bearer {}", a.token)), Some(a.token.as_str()));
        for bad in [
            "",
            "Bearer",
            "Basic abc",
            "Bearer cl_short",
            &format!("Bearer {}x", a.token),
        ] {
            assert_eq!(bearer(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_browser_sends_the_token_as_a_basic_password() {
        use base64::Engine;
        let a = issue_runner("viewer", &[]).unwrap();
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert_eq!(
            from_authorization(&basic(&format!("anyone:{}", a.token))),
            Some(a.token.clone())
        );
        assert_eq!(
            from_authorization(&format!("Bearer {}", a.token)),
            Some(a.token.clone())
        );
        for bad in [
            basic("anyone:cl_short"),
            basic(&a.token),
            "Basic !!!".to_string(),
            format!("Basic {}", "A".repeat(600)),
        ] {
            assert_eq!(from_authorization(&bad), None, "{bad}");
        }
    }
}
