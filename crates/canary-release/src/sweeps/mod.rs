//! Post-update repo sweeps: after a build is promoted to stable, each opted-in repo is checked in
//! a container of that build, an agent session with the build's CLI tries to fix what fails, and
//! an improvement becomes a draft pull request, under the org's policy (plan quotas, allowed and
//! protected paths, never a merge). This module holds the rules; `job` runs one sweep and the
//! worker loop; the queue lives in the registry (`registry::sweeps`).

pub mod job;
pub mod opt_in;

use crate::error::{LabError, Result};
use crate::orgs::OrgPolicy;
use crate::registry::QuotaCounts;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The check commands a sweep runs, in this order.
pub const CHECKS: [&str; 3] = ["lint", "test", "ci"];

/// Schemes a sweep repo's remote may use (a path on the worker means nothing in its container).
const SCHEMES: &[&str] = &["https", "http", "ssh", "git"];

/// `owner/name` from a git remote URL: its last two path segments, `.git` dropped.
pub fn repo_id(url: &str) -> Result<String> {
    // Never repeat what may be a secret: the userinfo of the URL is shown as `***`.
    let shown = match url.split_once("://") {
        Some((scheme, rest)) if rest.split('/').next().is_some_and(|a| a.contains('@')) => {
            let after = rest.split_once('@').map_or("", |(_, h)| h);
            format!("{scheme}://***@{after}")
        }
        _ => url.to_string(),
    };
    let bad = |why: &str| {
        LabError::usage(
            format!("`{}` is not a sweepable git remote: {why}", crate::text::clean(&shown)),
            format!(
                "give an {} URL such as https://forge.example.invalid/owner/name.git",
                SCHEMES.join("/")
            ),
        )
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if !SCHEMES.contains(&scheme) {
        return Err(bad("its scheme is not allowed"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) || url.starts_with('-') {
        return Err(bad("it holds spaces or control characters"));
    }
    let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    // A token in the URL would be stored, listed and audited: credentials come from --token-env.
    if let Some(u) = userinfo {
        if u.contains(':') || scheme.starts_with("http") {
            return Err(bad("it carries credentials; pass a token with --token-env VAR instead"));
        }
    }
    if host.is_empty() || host.starts_with(':') || host.starts_with('-') {
        return Err(bad("it names no host"));
    }
    let bare = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(host),
    };
    if is_link_local(bare) {
        return Err(bad(
            "its host is a link-local or unspecified address (cloud metadata lives there)",
        ));
    }
    if path
        .split('/')
        .any(|seg| seg == ".." || seg == "." || seg.eq_ignore_ascii_case("%2e%2e"))
    {
        return Err(bad("its path has a `..` or `.` segment"));
    }
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let parts: Vec<&str> = path.rsplitn(3, '/').collect();
    if parts.len() < 2 {
        return Err(bad("its path has no owner/name"));
    }
    let (name, owner) = (parts[0], parts[1]);
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.len() <= 100
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if !ok(owner) || !ok(name) {
        return Err(bad("owner and name are letters, digits, `.`, `_` and `-`"));
    }
    Ok(format!("{owner}/{name}"))
}

/// Whether `host` is an IPv4 or IPv6 address a sweep must never reach: link-local (cloud
/// metadata services), unspecified, or IPv4-mapped forms of them.
fn is_link_local(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.is_link_local() || a.is_unspecified() || a.is_broadcast(),
        Ok(std::net::IpAddr::V6(a)) => {
            (a.segments()[0] & 0xffc0) == 0xfe80
                || a.is_unspecified()
                || a.to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_link_local() || v4.is_unspecified())
        }
        Err(_) => false,
    }
}

/// The REST API a remote's forge answers on when none is given: the remote's origin (the lab
/// forge and GitHub-API-compatible forges serve `/repos/...` there).
pub fn default_api(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split('/').next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            let scheme = if scheme == "http" { "http" } else { "https" };
            format!("{scheme}://{host}")
        }
        None => String::new(),
    }
}

/// A branch name git and the forge accept and that cannot be read as an option.
pub fn check_branch(b: &str) -> Result<()> {
    let ok = !b.is_empty()
        && b.len() <= 200
        && !b.starts_with(['-', '/', '.'])
        && !b.ends_with(['/', '.'])
        && !b.contains("..")
        && !b.contains("//")
        && !b.ends_with(".lock")
        && b.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-/".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(LabError::usage(
            format!("`{}` is not a branch name a sweep may use", crate::text::clean(b)),
            "letters, digits, `.`, `_`, `-` and `/`, not starting with `-`",
        ))
    }
}

/// The branch a sweep of `build` proposes on: one per build, never the repo's own branch.
pub fn branch_for(build: &str) -> String {
    let hex = build.strip_prefix("sha256:").unwrap_or(build);
    format!("canary-sweep/{}", &hex[..hex.len().min(12)])
}

/// The commands a repo declares in its `canary-repo.yaml` (the keys a sweep reads; the file
/// may hold others).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Commands {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<String>,
}

impl Commands {
    /// Those given on the command line win over the repo's.
    pub fn or(self, repo: Commands) -> Commands {
        Commands {
            lint: self.lint.or(repo.lint),
            test: self.test.or(repo.test),
            ci: self.ci.or(repo.ci),
        }
    }

    pub fn list(&self) -> Vec<(&'static str, &str)> {
        CHECKS
            .iter()
            .zip([&self.lint, &self.test, &self.ci])
            .filter_map(|(n, c)| c.as_deref().map(|c| (*n, c)))
            .collect()
    }

    /// The commands of a repo's manifest text; a manifest that is not YAML gives none.
    pub fn from_manifest(text: &str) -> Commands {
        #[derive(Deserialize)]
        struct Lenient {
            #[serde(default)]
            lint: Option<String>,
            #[serde(default)]
            test: Option<String>,
            #[serde(default)]
            ci: Option<String>,
        }
        serde_saphyr::from_str::<Lenient>(text)
            .map(|l| Commands {
                lint: l.lint,
                test: l.test,
                ci: l.ci,
            })
            .unwrap_or_default()
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub command: String,
    pub exit_code: Option<i64>,
    /// The output's last lines.
    pub tail: String,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Whether the checks after a change are better: fewer fail, and none that passed fails now.
pub fn improved(before: &[Check], after: &[Check]) -> bool {
    let failing = |c: &[Check]| c.iter().filter(|c| !c.passed()).count();
    let regressed = after
        .iter()
        .any(|a| !a.passed() && before.iter().any(|b| b.name == a.name && b.passed()));
    !regressed && failing(after) < failing(before)
}

/// Whether the org's policy lets this job run, or why not (the job is then `skipped`).
pub fn admit(p: &OrgPolicy, c: &QuotaCounts) -> std::result::Result<(), String> {
    let s = &p.sweeps;
    if !s.enabled {
        return Err(format!(
            "org {}'s policy ({} plan, {}) runs no sweeps",
            p.org,
            p.plan.as_str(),
            p.source
        ));
    }
    if c.earlier_in_sweep >= i64::from(s.repos_per_sweep) {
        return Err(format!(
            "quota: org {} sweeps at most {} repo(s) per promotion ({} plan)",
            p.org,
            s.repos_per_sweep,
            p.plan.as_str()
        ));
    }
    if c.other_sweeps_today >= i64::from(s.per_day) {
        return Err(format!(
            "quota: org {} had {} sweep(s) in the last day, its limit is {} ({} plan)",
            p.org,
            c.other_sweeps_today,
            s.per_day,
            p.plan.as_str()
        ));
    }
    if c.open_prs >= i64::from(s.open_prs_per_repo) {
        return Err(format!(
            "quota: the repo has {} open sweep PR(s), its limit is {}",
            c.open_prs, s.open_prs_per_repo
        ));
    }
    Ok(())
}

/// The changed paths a policy refuses (a change touching any is dropped whole).
pub fn refused_paths<'a>(p: &OrgPolicy, changed: &'a [String]) -> Vec<&'a str> {
    changed
        .iter()
        .filter(|f| !p.sweeps.may_change(f))
        .map(String::as_str)
        .collect()
}

/// The wait before try `attempt` + 1: `base` doubled per failed try, at most 30 minutes.
pub fn backoff(base: Duration, attempt: i64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.clamp(0, 20) as u32 - u32::from(attempt > 0));
    base.saturating_mul(factor).min(Duration::from_secs(1800))
}

/// The pull request's body: what failed before, what changed, the checks after.
pub fn pr_body(build: &str, components: &str, before: &[Check], changed: &[String], after: &[Check]) -> String {
    let mut b = format!(
        "Post-update sweep after build `{build}` ({components}) was promoted to stable.\n\nThis pull request was opened by Canary Lab as a draft; nothing is merged without a person.\n\n### Failing before\n"
    );
    for c in before.iter().filter(|c| !c.passed()) {
        b.push_str(&format!(
            "- `{}` (`{}`): exit {}\n",
            c.name,
            crate::text::clean(&c.command),
            c.exit_code.map(|e| e.to_string()).unwrap_or("none".into())
        ));
    }
    b.push_str("\n### Changed\n");
    for f in changed {
        b.push_str(&format!("- `{}`\n", crate::text::clean(f)));
    }
    b.push_str("\n### Checks after the change\n");
    for c in after {
        b.push_str(&format!(
            "- `{}`: {}\n",
            c.name,
            if c.passed() {
                "pass".to_string()
            } else {
                format!("fail (exit {:?})", c.exit_code)
            }
        ));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, code: i64) -> Check {
        Check {
            name: name.into(),
            command: "x".into(),
            exit_code: Some(code),
            tail: String::new(),
        }
    }

    #[test]
    fn remotes_give_owner_and_name_and_hostile_ones_are_refused() {
        assert_eq!(
            repo_id("https://forge.example.invalid/acme/app.git").unwrap(),
            "acme/app"
        );
        assert_eq!(repo_id("http://172.17.0.1:9000/git/acme/app.git").unwrap(), "acme/app");
        assert_eq!(repo_id("ssh://git@host/acme/app").unwrap(), "acme/app");
        for bad in [
            "file:///etc/acme/app",
            "ext::sh -c touch% /tmp/x",
            "-uhttps://h/a/b",
            "https://h/a b/c",
            "https://h/onlyone",
            "https://h/../..",
            "https://h/acme/.git",
            "http://:44653/git/acme/app.git",
        ] {
            assert!(repo_id(bad).is_err(), "{bad}");
        }
        for (bad, says) in [
            ("https://h/x/../acme/app.git", "`..`"),
            ("https://h/acme/./app.git", "`..`"),
            ("https://user:ghp_secret@h/acme/app.git", "credentials"),
            ("https://ghp_secret@h/acme/app.git", "credentials"),
            ("ssh://git:pw@h/acme/app.git", "credentials"),
            ("http://169.254.169.254/latest/meta-data.git", "link-local"),
            ("http://169.254.169.254:80/acme/app.git", "link-local"),
            ("http://[fe80::1]:80/acme/app.git", "link-local"),
            ("http://0.0.0.0/acme/app.git", "link-local"),
        ] {
            let e = repo_id(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("ghp_secret"), "the error repeats the secret: {e}");
        }
        assert_eq!(
            default_api("http://172.17.0.1:9000/git/acme/app.git"),
            "http://172.17.0.1:9000"
        );
        assert_eq!(default_api("ssh://git@host/acme/app"), "https://host");
        assert!(check_branch("main").is_ok() && check_branch("release/1.2").is_ok());
        for bad in ["-f", "a..b", "a b", "x.lock", "/x", ""] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
        assert_eq!(
            branch_for(&format!("sha256:{}", "ab".repeat(32))),
            "canary-sweep/abababababab"
        );
    }

    #[test]
    fn an_improvement_fails_fewer_checks_and_breaks_none_that_passed() {
        let before = [check("lint", 0), check("test", 1)];
        assert!(improved(&before, &[check("lint", 0), check("test", 0)]));
        assert!(!improved(&before, &[check("lint", 0), check("test", 1)]), "same");
        assert!(
            !improved(&before, &[check("lint", 1), check("test", 0)]),
            "traded one for another"
        );
        assert!(
            !improved(&[check("test", 0)], &[check("test", 0)]),
            "nothing was failing"
        );
    }

    #[test]
    fn the_policy_admits_within_quota_and_says_why_not() {
        let team = crate::orgs::OrgPolicy::parse("acme", "orgs/acme.yaml", "plan: team\n").unwrap();
        assert!(admit(&team, &QuotaCounts::default()).is_ok());
        let e = admit(
            &team,
            &QuotaCounts {
                earlier_in_sweep: 1,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("at most 1 repo(s) per promotion"), "{e}");
        let e = admit(
            &team,
            &QuotaCounts {
                other_sweeps_today: 1,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("last day"), "{e}");
        let e = admit(
            &team,
            &QuotaCounts {
                open_prs: 1,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("open sweep PR"), "{e}");
        let free = crate::orgs::OrgPolicy::default_for("globex");
        assert!(
            admit(&free, &QuotaCounts::default())
                .unwrap_err()
                .contains("runs no sweeps")
        );
        let p = crate::orgs::OrgPolicy::parse("acme", "f", "plan: team\nsweeps:\n  protected_paths: [\"tests/**\"]\n")
            .unwrap();
        let changed = vec!["src/app.py".to_string(), "tests/test_app.py".to_string()];
        assert_eq!(refused_paths(&p, &changed), ["tests/test_app.py"]);
    }

    #[test]
    fn commands_from_the_manifest_yield_to_those_given_and_backoff_doubles_to_a_cap() {
        let repo = Commands::from_manifest("id: python\ntest: pytest -q\nci: pytest -rA\ndescription: x\n");
        assert_eq!(repo.test.as_deref(), Some("pytest -q"));
        let given = Commands {
            test: Some("make test".into()),
            ..Default::default()
        };
        let c = given.or(repo);
        assert_eq!(c.list(), [("test", "make test"), ("ci", "pytest -rA")]);
        assert_eq!(Commands::from_manifest(": not yaml ["), Commands::default());
        let s = Duration::from_secs(1);
        assert_eq!((backoff(s, 1), backoff(s, 2), backoff(s, 3)), (s, 2 * s, 4 * s));
        assert_eq!(backoff(s, 40), Duration::from_secs(1800));
    }
}
