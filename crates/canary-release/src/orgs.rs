//! Org policies: one file per org (`orgs/ORG.yaml`), saying the org's plan and what the lab may do
//! for it on its own: whether customer hosts must get signed builds, and post-update repo sweeps
//! (quotas, paths a sweep may and may never touch, dependency suggestions, auto-merge). A plan
//! sets the ceiling of every quota; a file may lower one, never raise it. An org without a file
//! gets the free plan's defaults: no sweeps, signatures as the host configures them.

use crate::error::{LabError, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::Path;

/// Where org policies live by default (relative to the working directory).
pub const DEFAULT_DIR: &str = "orgs";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Free,
    Team,
    Enterprise,
}

/// What a plan allows at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quota {
    pub sweeps_per_day: u32,
    pub repos_per_sweep: u32,
    pub open_prs_per_repo: u32,
    pub dependency_suggestions: bool,
    pub auto_merge: bool,
}

canary_contract::words!(Plan, "a plan", { Free => "free", Team => "team", Enterprise => "enterprise" });

impl Plan {
    /// The plan's ceiling: free has no sweeps; team about one repo a day; enterprise advanced
    /// sweeps, dependency suggestions, and auto-merge as a policy may ask (which only marks a
    /// PR ready: the lab never merges).
    pub fn quota(self) -> Quota {
        match self {
            Plan::Free => Quota {
                sweeps_per_day: 0,
                repos_per_sweep: 0,
                open_prs_per_repo: 0,
                dependency_suggestions: false,
                auto_merge: false,
            },
            Plan::Team => Quota {
                sweeps_per_day: 1,
                repos_per_sweep: 1,
                open_prs_per_repo: 1,
                dependency_suggestions: false,
                auto_merge: false,
            },
            Plan::Enterprise => Quota {
                sweeps_per_day: 24,
                repos_per_sweep: 200,
                open_prs_per_repo: 5,
                dependency_suggestions: true,
                auto_merge: true,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOrgPolicy {
    /// `free`, `team` or `enterprise`.
    #[schemars(with = "Plan")]
    pub plan: Spanned<Plan>,
    /// Customer hosts of this org install signed builds only.
    #[serde(default, deserialize_with = "crate::yaml::strict_bool")]
    pub require_signed: bool,
    #[serde(default)]
    #[schemars(with = "Option<RawSweeps>")]
    pub sweeps: Option<Spanned<RawSweeps>>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSweeps {
    /// Sweeps run for this org after a promotion to stable (default: true where the plan has them).
    #[serde(default, deserialize_with = "crate::yaml::strict_opt_bool")]
    pub enabled: Option<bool>,
    pub per_day: Option<u32>,
    pub repos_per_sweep: Option<u32>,
    pub open_prs_per_repo: Option<u32>,
    /// Globs of the paths a sweep may change (default: everything not protected).
    #[serde(default)]
    pub allowed_paths: Vec<String>,
    /// Globs of paths a sweep never changes: a change that touches one is dropped and reported.
    #[serde(default)]
    pub protected_paths: Vec<String>,
    #[serde(default, deserialize_with = "crate::yaml::strict_bool")]
    pub dependency_suggestions: bool,
    /// `blocked` (the default) or `approved`: what the agent's risky actions get in a sweep.
    pub risky_actions: Option<String>,
    /// Enterprise only: mark a sweep PR ready for review when its checks pass. Never a merge.
    #[serde(default, deserialize_with = "crate::yaml::strict_bool")]
    pub auto_merge: bool,
}

/// An org's sweep rules, checked against its plan.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPolicy {
    pub enabled: bool,
    pub per_day: u32,
    pub repos_per_sweep: u32,
    pub open_prs_per_repo: u32,
    pub allowed_paths: Vec<String>,
    pub protected_paths: Vec<String>,
    pub dependency_suggestions: bool,
    pub risky_actions_approved: bool,
    pub auto_merge: bool,
    #[serde(skip)]
    allowed: Option<globset::GlobSet>,
    #[serde(skip)]
    protected: globset::GlobSet,
}

/// Paths every sweep leaves alone whatever the policy says: the repository's own machinery.
pub const ALWAYS_PROTECTED: &[&str] = &[".git/**", ".canary/**"];

impl SweepPolicy {
    /// A plan's own sweeps, for an org whose policy says nothing about them.
    fn of_plan(quota: &Quota) -> SweepPolicy {
        if quota.sweeps_per_day == 0 {
            return SweepPolicy::none();
        }
        SweepPolicy {
            enabled: true,
            per_day: quota.sweeps_per_day,
            repos_per_sweep: quota.repos_per_sweep,
            open_prs_per_repo: quota.open_prs_per_repo,
            ..SweepPolicy::none()
        }
    }

    fn none() -> SweepPolicy {
        SweepPolicy {
            enabled: false,
            per_day: 0,
            repos_per_sweep: 0,
            open_prs_per_repo: 0,
            allowed_paths: vec![],
            protected_paths: vec![],
            dependency_suggestions: false,
            risky_actions_approved: false,
            auto_merge: false,
            allowed: None,
            protected: globs(ALWAYS_PROTECTED.iter().copied()).expect("static globs"),
        }
    }

    /// Whether a sweep may change `path` (relative, `/`-separated): not protected, and allowed
    /// when an allow-list is set.
    pub fn may_change(&self, path: &str) -> bool {
        !self.protected.is_match(path) && self.allowed.as_ref().is_none_or(|a| a.is_match(path))
    }
}

/// What only some plans may turn on: dependency suggestions and auto-merge. `Err` is the
/// message and its help.
fn entitled(r: &RawSweeps, quota: &Quota, org: &str, plan: Plan) -> std::result::Result<(), (String, &'static str)> {
    if r.dependency_suggestions && !quota.dependency_suggestions {
        return Err((
            format!("org `{org}`: the {} plan has no dependency suggestions", plan.as_str()),
            "remove `dependency_suggestions`, or use the enterprise plan",
        ));
    }
    if r.auto_merge && !quota.auto_merge {
        return Err((
            format!("org `{org}`: auto_merge is for enterprise policies only"),
            "remove `auto_merge`; sweep PRs stay drafts for a person to merge",
        ));
    }
    Ok(())
}

fn globs<'a>(patterns: impl Iterator<Item = &'a str>) -> std::result::Result<globset::GlobSet, globset::Error> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        b.add(globset::GlobBuilder::new(p).literal_separator(true).build()?);
    }
    b.build()
}

#[derive(Debug, Clone, Serialize)]
pub struct OrgPolicy {
    pub org: String,
    pub plan: Plan,
    pub require_signed: bool,
    pub sweeps: SweepPolicy,
    /// The file it came from, or `default (no policy file)`.
    pub source: String,
}

impl OrgPolicy {
    /// An org without a policy file.
    pub fn default_for(org: &str) -> OrgPolicy {
        OrgPolicy {
            org: org.to_string(),
            plan: Plan::Free,
            require_signed: false,
            sweeps: SweepPolicy::none(),
            source: "default (no policy file)".into(),
        }
    }

    /// Parses and checks `org`'s policy text; `file` names it in errors.
    pub fn parse(org: &str, file: &str, text: &str) -> Result<OrgPolicy> {
        let raw: RawOrgPolicy = crate::yaml::parse(
            file,
            text,
            "org policy",
            "an org policy takes plan (free, team, enterprise), require_signed and sweeps",
        )?;
        let plan = raw.plan.value;
        let quota = plan.quota();
        let mut p = OrgPolicy {
            org: org.to_string(),
            plan,
            require_signed: raw.require_signed,
            sweeps: SweepPolicy::none(),
            source: file.to_string(),
        };
        let Some(s) = raw.sweeps else {
            p.sweeps = SweepPolicy::of_plan(&quota);
            return Ok(p);
        };
        let at = |message: String, help: &str| -> LabError {
            crate::yaml::located(file, text, &s.referenced, message, help).into()
        };
        let r = &s.value;
        let enabled = r.enabled.unwrap_or(quota.sweeps_per_day > 0);
        if enabled && quota.sweeps_per_day == 0 {
            return Err(at(
                format!("org `{org}`: the {} plan has no repo sweeps", plan.as_str()),
                "remove `sweeps`, set `enabled: false`, or move the org to the team or enterprise plan",
            ));
        }
        let limit = |name: &str, v: Option<u32>, max: u32| -> Result<u32> {
            match v {
                None => Ok(max),
                Some(v) if v <= max => Ok(v),
                Some(v) => Err(at(
                    format!(
                        "org `{org}`: sweeps.{name} is {v}, above the {} plan's {max}",
                        plan.as_str()
                    ),
                    "a policy may lower a plan's quota, not raise it",
                )),
            }
        };
        let per_day = limit("per_day", r.per_day, quota.sweeps_per_day)?;
        let repos_per_sweep = limit("repos_per_sweep", r.repos_per_sweep, quota.repos_per_sweep)?;
        if enabled && (per_day == 0 || repos_per_sweep == 0) {
            return Err(at(
                format!("org `{org}`: sweeps are enabled but sweeps.per_day or sweeps.repos_per_sweep is 0"),
                "set `enabled: false` to turn sweeps off, or a quota of at least 1",
            ));
        }
        let open_prs_per_repo = limit("open_prs_per_repo", r.open_prs_per_repo, quota.open_prs_per_repo)?;
        entitled(r, &quota, org, plan).map_err(|(m, h)| at(m, h))?;
        let risky_actions_approved = match r.risky_actions.as_deref() {
            None | Some("blocked") => false,
            Some("approved") => true,
            Some(other) => {
                return Err(at(
                    format!("org `{org}`: sweeps.risky_actions is `{}`", crate::text::clean(other)),
                    "write `blocked` (the default) or `approved`",
                ));
            }
        };
        let mut protected: Vec<&str> = ALWAYS_PROTECTED.to_vec();
        protected.extend(r.protected_paths.iter().map(String::as_str));
        let protected_set = globs(protected.into_iter()).map_err(|e| {
            at(
                format!("org `{org}`: sweeps.protected_paths: {e}"),
                "write globs such as `.github/**`",
            )
        })?;
        let allowed = if r.allowed_paths.is_empty() {
            None
        } else {
            Some(globs(r.allowed_paths.iter().map(String::as_str)).map_err(|e| {
                at(
                    format!("org `{org}`: sweeps.allowed_paths: {e}"),
                    "write globs such as `src/**`",
                )
            })?)
        };
        p.sweeps = SweepPolicy {
            enabled,
            per_day,
            repos_per_sweep,
            open_prs_per_repo,
            allowed_paths: r.allowed_paths.clone(),
            protected_paths: r.protected_paths.clone(),
            dependency_suggestions: r.dependency_suggestions,
            risky_actions_approved,
            auto_merge: r.auto_merge,
            allowed,
            protected: protected_set,
        };
        Ok(p)
    }
}

/// Every org's policy, from the `*.yaml` files of a folder (the file name is the org).
#[derive(Debug, Clone, Default)]
pub struct OrgPolicies {
    pub orgs: BTreeMap<String, OrgPolicy>,
}

impl OrgPolicies {
    /// Loads `dir`; a missing folder is no policies. Every file is checked: one with an error
    /// fails the load, so nothing runs under a policy that does not say what it means.
    pub fn load(dir: &Path) -> Result<OrgPolicies> {
        let mut orgs = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OrgPolicies { orgs }),
            Err(e) => return Err(LabError::read(dir, e)),
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Some(org) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".yaml").or_else(|| n.strip_suffix(".yml")))
            else {
                continue;
            };
            let twin = if path.extension().is_some_and(|e| e == "yml") {
                path.with_extension("yaml")
            } else {
                path.with_extension("yml")
            };
            if twin.exists() && path.extension().is_some_and(|e| e == "yml") {
                return Err(LabError::usage(
                    format!(
                        "{} and {} both hold org {}'s policy",
                        twin.display(),
                        path.display(),
                        crate::text::clean(org)
                    ),
                    "an org has exactly one policy file: merge them into ORG.yaml and remove the other",
                ));
            }
            crate::gate::ops::check_name("org", org).map_err(|_| {
                LabError::usage(
                    format!("{}: `{}` is not an org name", path.display(), crate::text::clean(org)),
                    "name each policy file after its org: letters, digits, `.`, `_`, `-`",
                )
            })?;
            let text = crate::fsutil::read_input(&path, "org policy", crate::fsutil::MAX_INPUT)?;
            let p = OrgPolicy::parse(org, &path.display().to_string(), &text)?;
            orgs.insert(org.to_string(), p);
        }
        Ok(OrgPolicies { orgs })
    }

    /// The orgs that have a policy file.
    pub fn names(&self) -> Vec<String> {
        self.orgs.keys().cloned().collect()
    }

    /// `org`'s policy, or the defaults of an org without a file.
    pub fn get(&self, org: &str) -> OrgPolicy {
        self.orgs
            .get(org)
            .cloned()
            .unwrap_or_else(|| OrgPolicy::default_for(org))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OrgPolicy> {
        OrgPolicy::parse("acme", "orgs/acme.yaml", text)
    }

    #[test]
    fn a_plan_sets_the_ceiling_and_a_policy_may_only_lower_it() {
        let team = parse("plan: team\n").unwrap();
        assert!(team.sweeps.enabled);
        assert_eq!(
            (
                team.sweeps.per_day,
                team.sweeps.repos_per_sweep,
                team.sweeps.open_prs_per_repo
            ),
            (1, 1, 1)
        );
        assert!(!team.sweeps.auto_merge && !team.require_signed);
        let e = parse("plan: team\nsweeps:\n  per_day: 5\n").unwrap_err().to_string();
        assert!(e.contains("sweeps.per_day is 5, above the team plan's 1"), "{e}");
        let e = parse("plan: free\nsweeps: {enabled: true}\n").unwrap_err().to_string();
        assert!(e.contains("the free plan has no repo sweeps"), "{e}");
        assert!(!parse("plan: free\n").unwrap().sweeps.enabled, "free: no sweeps");
        let e = parse("plan: team\nsweeps: {auto_merge: true}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auto_merge is for enterprise policies only"), "{e}");
        let e = parse("plan: team\nsweeps: {dependency_suggestions: true}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no dependency suggestions"), "{e}");
        let ent = parse(
            "plan: enterprise\nrequire_signed: true\nsweeps: {auto_merge: true, per_day: 2, risky_actions: approved}\n",
        )
        .unwrap();
        assert!(ent.require_signed && ent.sweeps.auto_merge && ent.sweeps.risky_actions_approved);
        assert_eq!(ent.sweeps.per_day, 2);
        let e = parse("plan: gold\n").unwrap_err().to_string();
        assert!(e.contains("gold") || e.contains("plan"), "{e}");
        let e = parse("plan: team\nsweeps: {risky_actions: maybe}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("risky_actions"), "{e}");
        let e = parse("plan: team\nunknown: 1\n").unwrap_err().to_string();
        assert!(e.contains("unknown"), "{e}");
    }

    #[test]
    fn protected_paths_win_over_allowed_ones_and_the_repo_machinery_is_always_protected() {
        let p = parse("plan: team\nsweeps:\n  allowed_paths: [\"src/**\", \"tests/**\"]\n  protected_paths: [\"src/generated/**\"]\n").unwrap();
        assert!(p.sweeps.may_change("src/app.py"));
        assert!(p.sweeps.may_change("tests/test_app.py"));
        assert!(!p.sweeps.may_change("src/generated/schema.py"), "protected");
        assert!(!p.sweeps.may_change("README.md"), "not allowed");
        let open = parse("plan: team\nsweeps:\n  protected_paths: [\".github/**\"]\n").unwrap();
        assert!(open.sweeps.may_change("README.md"));
        assert!(!open.sweeps.may_change(".github/workflows/ci.yml"));
        assert!(!open.sweeps.may_change(".git/config"));
        let e = parse("plan: team\nsweeps:\n  protected_paths: [\"src/[\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("protected_paths"), "{e}");
    }

    #[test]
    fn a_folder_of_policies_loads_by_org_and_one_bad_file_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(OrgPolicies::load(&dir.path().join("none")).unwrap().orgs.is_empty());
        std::fs::write(dir.path().join("acme.yaml"), "plan: team\nrequire_signed: true\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
        let all = OrgPolicies::load(dir.path()).unwrap();
        assert!(all.get("acme").require_signed);
        assert_eq!(all.get("globex").plan, Plan::Free);
        std::fs::write(dir.path().join("bad.yaml"), "plan: team\nsweeps:\n  per_day: 9\n").unwrap();
        let e = OrgPolicies::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("per_day"), "{e}");
    }

    #[test]
    fn near_miss_booleans_and_zero_quotas_are_refused() {
        for text in [
            "plan: enterprise\nrequire_signed: \"yes\"\n",
            "plan: enterprise\nrequire_signed: 1\n",
            "plan: team\nsweeps:\n  enabled: \"true\"\n",
        ] {
            let e = format!("{:?}", miette::Report::new(parse(text).unwrap_err()));
            assert!(e.contains("true or false"), "{text}: {e}");
        }
        assert!(
            parse("plan: enterprise\nrequire_signed: true\n")
                .unwrap()
                .require_signed
        );
        let e = parse("plan: team\nsweeps:\n  enabled: true\n  per_day: 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("per_day or sweeps.repos_per_sweep is 0"), "{e}");
        assert!(parse("plan: team\nsweeps:\n  enabled: false\n  per_day: 0\n").is_ok());
    }

    #[test]
    fn an_org_with_two_policy_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ACME.yaml"), "plan: enterprise\nrequire_signed: true\n").unwrap();
        std::fs::write(dir.path().join("ACME.yml"), "plan: free\n").unwrap();
        let e = OrgPolicies::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("both hold org ACME's policy"), "{e}");
        std::fs::remove_file(dir.path().join("ACME.yml")).unwrap();
        assert!(OrgPolicies::load(dir.path()).unwrap().get("ACME").require_signed);
    }
}
