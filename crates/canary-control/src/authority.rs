//! Who may do what on the control plane, as rules without I/O: what a runner may report, how
//! often a token may write, which `Host` a page is answered for, which role reads what. The
//! HTTP layer (`control`) asks these and maps the answer to a status.

use crate::registry::Assigned;
use crate::telemetry::Session;
use crate::tokens::Role;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a runner's telemetry was refused; the kind is what the control plane counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    OtherRunner,
    ForeignOrg,
    Unassigned,
    OtherBuild,
}

/// Whether runner `runner`, bound to `orgs`, may report `sessions`, given what the control plane
/// assigned it (`assigned`, by session id). Every session must be the runner's own, of one of its
/// orgs, assigned to it, for the org and build it was assigned.
pub fn may_report(
    runner: &str,
    orgs: &BTreeSet<String>,
    sessions: &[Session],
    assigned: &BTreeMap<String, Assigned>,
) -> Result<(), Refusal> {
    let refuse = |kind, message: String| Err(Refusal { kind, message });
    for (i, s) in sessions.iter().enumerate() {
        let id = crate::text::clean(&s.session);
        if s.runner != runner {
            return refuse(
                RefusalKind::OtherRunner,
                format!(
                    "sessions[{i}]: the token is runner {}'s, the session names runner {}",
                    crate::text::clean(runner),
                    crate::text::clean(&s.runner)
                ),
            );
        }
        if !orgs.contains(&s.org) {
            return refuse(
                RefusalKind::ForeignOrg,
                format!(
                    "sessions[{i}]: org {} is not one this runner's token is bound to",
                    crate::text::clean(&s.org)
                ),
            );
        }
        let Some(a) = assigned.get(&s.session) else {
            return refuse(
                RefusalKind::Unassigned,
                format!("sessions[{i}]: session {id} was never assigned to this runner (GET /v1/assignment first)"),
            );
        };
        if a.org != s.org || a.build != s.build {
            return refuse(
                RefusalKind::OtherBuild,
                format!(
                    "sessions[{i}]: session {id} was assigned build {} for org {}, not build {} for org {}",
                    crate::text::clean(&a.build),
                    crate::text::clean(&a.org),
                    crate::text::clean(&s.build),
                    crate::text::clean(&s.org)
                ),
            );
        }
    }
    Ok(())
}

/// How often one token may call one kind of write endpoint: a bucket of `burst` calls refilled
/// at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub const fn new(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }
}

/// The write endpoints' limits, per token. Assignment is a write too (it is recorded).
pub const ASSIGNMENT: Rate = Rate::new(2000.0, 4000.0);
pub const TELEMETRY: Rate = Rate::new(20.0, 40.0);
/// The CLIs' own OpenTelemetry: each session's exporter sends every few seconds.
pub const OTLP: Rate = Rate::new(100.0, 400.0);
pub const HEARTBEAT: Rate = Rate::new(1.0, 10.0);
/// Update reports land in the audit log: a handful per upgrade.
pub const UPDATE_REPORT: Rate = Rate::new(0.2, 10.0);
/// Update metadata reads: a check fetches a handful of files (more after root rotations).
pub const UPDATE_METADATA: Rate = Rate::new(20.0, 200.0);

/// Token buckets by (token, endpoint). Kept in memory: a restart forgets them, which only ever
/// lets a runner write a little sooner.
/// (token, endpoint) → (calls left, when last counted).
type Buckets = BTreeMap<(String, &'static str), (f64, Instant)>;

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    /// Takes one call from `key`'s bucket for `endpoint`; `Err(wait)` when it is empty.
    pub fn take(&self, key: &str, endpoint: &'static str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("lock");
        if buckets.len() > 100_000 {
            // Bounded: forget buckets that are full again (idle for a whole burst).
            buckets
                .retain(|_, (level, at)| *level + now.duration_since(*at).as_secs_f64() * rate.per_second < rate.burst);
        }
        let (level, at) = buckets.entry((key.to_string(), endpoint)).or_insert((rate.burst, now));
        *level = (*level + now.saturating_duration_since(*at).as_secs_f64() * rate.per_second).min(rate.burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *level) / rate.per_second))
        }
    }
}

/// The `Host` values pages are answered for: loopback names by default, plus the host of
/// `--public-url`. A name a DNS-rebinding page uses is refused before any handler runs.
#[derive(Debug, Clone)]
pub struct HostAllow {
    names: BTreeSet<String>,
}

impl HostAllow {
    pub fn new(public_url: Option<&str>) -> Result<HostAllow, String> {
        let mut names: BTreeSet<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).into();
        if let Some(u) = public_url {
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"))
                .ok_or_else(|| format!("--public-url `{}` is not an http(s) URL", crate::text::clean(u)))?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            if authority.is_empty() || authority.contains('@') {
                return Err(format!(
                    "--public-url `{}` has no host, or carries credentials",
                    crate::text::clean(u)
                ));
            }
            let host = host_name(authority)
                .ok_or_else(|| format!("--public-url `{}` has no valid host", crate::text::clean(u)))?;
            names.insert(host.to_ascii_lowercase());
        }
        Ok(HostAllow { names })
    }

    /// Whether a request's `Host` header names an allowed host (any port).
    pub fn allows(&self, host: Option<&str>) -> bool {
        host.and_then(host_name)
            .is_some_and(|h| self.names.contains(&h.to_ascii_lowercase()))
    }
}

/// The host of `host[:port]` or `[v6][:port]`, if it is one in shape.
fn host_name(authority: &str) -> Option<&str> {
    let host = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (h, rest) = authority.split_at(end + 1);
        (rest.is_empty() || rest[1..].parse::<u16>().is_ok() && rest.starts_with(':')).then_some(h)?
    } else {
        match authority.split_once(':') {
            Some((h, port)) => {
                port.parse::<u16>().ok()?;
                h
            }
            None => authority,
        }
    };
    (!host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':')))
    .then_some(host)
}

/// What a page needs: the audit log names people and reasons, so it needs `operator`.
pub fn role_for_path(path: &str) -> Role {
    if path == "/audit" || path.starts_with("/api/audit") {
        Role::Operator
    } else {
        Role::Viewer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(runner: &str, org: &str, id: &str, build: &str) -> Session {
        Session {
            runner: runner.into(),
            org: org.into(),
            session: id.into(),
            build: build.parse().expect("a build id"),
            started_at: "2026-12-05T00:00:00Z".into(),
            start_latency_ms: Some(1),
            outcome: crate::telemetry::SessionEnd::Ok,
            usage: Default::default(),
            usage_from_otel: false,
            cohort: String::new(),
        }
    }

    #[test]
    fn a_runner_reports_only_its_own_assigned_sessions_of_its_orgs() {
        let orgs: BTreeSet<String> = ["acme".to_string()].into();
        let assigned: BTreeMap<String, Assigned> = [(
            "s1".to_string(),
            Assigned {
                org: "acme".into(),
                build: "sha256:b1".parse().unwrap(),
                cohort: String::new(),
            },
        )]
        .into();
        assert_eq!(
            may_report("r1", &orgs, &[session("r1", "acme", "s1", "sha256:b1")], &assigned),
            Ok(())
        );
        let kind = |s: Session| may_report("r1", &orgs, &[s], &assigned).unwrap_err().kind;
        assert_eq!(kind(session("r2", "acme", "s1", "sha256:b1")), RefusalKind::OtherRunner);
        assert_eq!(
            kind(session("r1", "globex", "s1", "sha256:b1")),
            RefusalKind::ForeignOrg
        );
        assert_eq!(kind(session("r1", "acme", "s2", "sha256:b1")), RefusalKind::Unassigned);
        assert_eq!(kind(session("r1", "acme", "s1", "sha256:b2")), RefusalKind::OtherBuild);
        // A runner bound to no org (a token from before tokens had orgs) reports nothing.
        let none = BTreeSet::new();
        let e = may_report("r1", &none, &[session("r1", "acme", "s1", "sha256:b1")], &assigned).unwrap_err();
        assert_eq!(e.kind, RefusalKind::ForeignOrg);
    }

    #[test]
    fn a_token_bucket_refuses_a_flood_and_refills() {
        let l = RateLimiter::default();
        let rate = Rate {
            per_second: 2.0,
            burst: 3.0,
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take("a", "x", rate, t0).is_ok());
        }
        let wait = l.take("a", "x", rate, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO, "{wait:?}");
        // Another token, another endpoint: their own buckets.
        assert!(l.take("b", "x", rate, t0).is_ok());
        assert!(l.take("a", "y", rate, t0).is_ok());
        assert!(l.take("a", "x", rate, t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take("a", "x", rate, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn pages_answer_only_allowed_hosts() {
        let h = HostAllow::new(Some("https://canary.example.com:8443/")).unwrap();
        for ok in [
            "localhost:8787",
            "127.0.0.1:1",
            "[::1]:80",
            "LOCALHOST",
            "canary.example.com",
            "canary.example.com:443",
        ] {
            assert!(h.allows(Some(ok)), "{ok}");
        }
        for bad in [
            None,
            Some(""),
            Some("evil.example:8787"),
            Some("127.0.0.1.evil.example"),
            Some("localhost:notaport"),
            Some("localhost@evil"),
            Some("[::2]:80"),
        ] {
            assert!(!h.allows(bad), "{bad:?}");
        }
        assert!(HostAllow::new(Some("ftp://x")).is_err());
        assert!(HostAllow::new(Some("https://user:pw@x")).is_err());
        assert!(HostAllow::new(Some("https://")).is_err());
    }

    #[test]
    fn the_audit_log_needs_an_operator() {
        assert_eq!(role_for_path("/api/audit"), Role::Operator);
        assert_eq!(role_for_path("/audit"), Role::Operator);
        assert_eq!(role_for_path("/api/fleet"), Role::Viewer);
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }
}
