//! Every upstream version of a CLI, judged: which versions a matrix covers (`all`, a range, a
//! list, the newest N), the version matrix built from one run's report (one build per version)
//! and its renderings (JSON, Markdown, HTML), and the bisection that finds the first bad version
//! in about log2(n) judged versions.

use crate::error::{LabError, Result};
use crate::report::{CaseStatus, RunReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod judge;

/// Which versions a matrix covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Inclusive; either end may be open (`0.133..`, `..0.160.0`).
    Range(Option<String>, Option<String>),
    /// `newest:N`
    Newest(usize),
    /// `0.160.0,0.161.0`
    List(Vec<String>),
}

fn version(v: &str) -> Option<pep440_rs::Version> {
    v.trim_start_matches("sdk-").parse().ok()
}

impl std::str::FromStr for Selection {
    type Err = LabError;
    fn from_str(s: &str) -> Result<Selection> {
        let help =
            "write all, FROM..TO (either end may be left out, e.g. 0.133..), newest:N, or a comma-separated list";
        let bad = |why: &str| LabError::usage(format!("--versions `{}`: {why}", crate::text::clean(s)), help);
        let s = s.trim();
        if s == "all" {
            return Ok(Selection::All);
        }
        if let Some(n) = s.strip_prefix("newest:") {
            let n: usize = n.parse().map_err(|_| bad("N is not a number"))?;
            if n == 0 {
                return Err(bad("N must be at least 1"));
            }
            return Ok(Selection::Newest(n));
        }
        let check = |v: &str| {
            version(v)
                .map(|_| v.to_string())
                .ok_or_else(|| bad(&format!("`{}` is not a version", crate::text::clean(v))))
        };
        if let Some((from, to)) = s.split_once("..") {
            let end = |v: &str| (!v.is_empty()).then(|| check(v)).transpose();
            return Ok(Selection::Range(end(from)?, end(to)?));
        }
        let list = s.split(',').map(|v| check(v.trim())).collect::<Result<Vec<_>>>()?;
        Ok(Selection::List(list))
    }
}

/// Sorts versions oldest first by PEP 440; strings that are not versions are dropped.
pub fn sorted(versions: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<(pep440_rs::Version, String)> = versions
        .into_iter()
        .filter_map(|s| version(&s).map(|p| (p, s)))
        .collect();
    v.sort();
    v.dedup_by(|a, b| a.0 == b.0);
    v.into_iter().map(|(_, s)| s).collect()
}

/// The versions of `available` (oldest first) that `sel` covers; a listed version that is not
/// available is an error naming it.
pub fn select(available: &[String], sel: &Selection) -> Result<Vec<String>> {
    let available = sorted(available.iter().cloned());
    Ok(match sel {
        Selection::All => available,
        Selection::Newest(n) => available[available.len().saturating_sub(*n)..].to_vec(),
        Selection::Range(from, to) => {
            let (from, to) = (from.as_deref().and_then(version), to.as_deref().and_then(version));
            available
                .into_iter()
                .filter(|v| {
                    let p = version(v).expect("sorted keeps versions");
                    from.as_ref().is_none_or(|f| p >= *f) && to.as_ref().is_none_or(|t| p <= *t)
                })
                .collect()
        }
        Selection::List(list) => {
            let mut chosen = Vec::new();
            for v in list {
                // Spelled as upstream publishes it (`sdk-0.2.187` for `0.2.187` of Claude Code's SDK).
                match available.iter().find(|a| version(a) == version(v)) {
                    Some(a) => chosen.push(a.clone()),
                    None => {
                        return Err(LabError::usage(
                            format!("version {} is not published upstream", crate::text::clean(v)),
                            "`canary watch --json` lists what upstream publishes",
                        ));
                    }
                }
            }
            sorted(chosen)
        }
    })
}

/// One version's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// The package version (`0.163.0`, or `sdk-0.2.187` for Claude Code's SDK).
    pub version: String,
    /// The CLI's own version (Claude Code's differs from its SDK's).
    pub cli_version: Option<String>,
    /// The build's image, when it was built.
    pub image: Option<String>,
    /// `passed`, `flaky`, `failed`, `drift`, `timed_out`, `error`, or `not_built`.
    pub status: String,
    pub passed: usize,
    pub total: usize,
    /// What failed where: the first failing case's repo and its cause.
    pub cause: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionMatrix {
    pub provider: canary_contract::Provider,
    pub suite: String,
    pub generated_at: String,
    pub run_id: Option<String>,
    pub duration_ms: u64,
    pub rows: Vec<Row>,
}

/// The run's status of a set of cases: the worst of them, as the report ranks statuses.
fn worst(statuses: &[CaseStatus]) -> CaseStatus {
    let s = crate::report::Summary {
        total: statuses.len(),
        passed: statuses.iter().filter(|s| **s == CaseStatus::Passed).count(),
        flaky: statuses.iter().filter(|s| **s == CaseStatus::Flaky).count(),
        failed: statuses.iter().filter(|s| **s == CaseStatus::Failed).count(),
        drift: statuses.iter().filter(|s| **s == CaseStatus::Drift).count(),
        timed_out: statuses.iter().filter(|s| **s == CaseStatus::TimedOut).count(),
        error: statuses.iter().filter(|s| **s == CaseStatus::Error).count(),
    };
    s.status()
}

impl VersionMatrix {
    /// Rows from one run over one build per version (`images`: version → image reference), and
    /// the versions that could not be built (version → why).
    pub fn from_run(
        provider: canary_contract::Provider,
        suite: &str,
        report: Option<&RunReport>,
        images: &BTreeMap<String, (String, Option<String>)>,
        not_built: &BTreeMap<String, String>,
    ) -> VersionMatrix {
        let mut rows = Vec::new();
        for (v, (image, cli_version)) in images {
            let cases: Vec<_> = report
                .map(|r| r.cases.iter().filter(|c| &c.image == image).collect())
                .unwrap_or_default();
            let statuses: Vec<CaseStatus> = cases.iter().map(|c| c.status).collect();
            let status = if cases.is_empty() {
                "error".to_string()
            } else {
                worst(&statuses).as_str().to_string()
            };
            let cause = cases
                .iter()
                .find(|c| !matches!(c.status, CaseStatus::Passed | CaseStatus::Flaky))
                .map(|c| {
                    let row = crate::report::MatrixRow::of(c);
                    format!("{}: {}", c.repo, row.cause.unwrap_or_else(|| c.status.as_str().into()))
                })
                .or_else(|| cases.is_empty().then(|| "no case ran in this build".to_string()));
            rows.push(Row {
                version: v.clone(),
                cli_version: cli_version.clone(),
                image: Some(image.clone()),
                status,
                passed: statuses
                    .iter()
                    .filter(|s| matches!(s, CaseStatus::Passed | CaseStatus::Flaky))
                    .count(),
                total: cases.len(),
                cause,
            });
        }
        for (v, why) in not_built {
            rows.push(Row {
                version: v.clone(),
                cli_version: None,
                image: None,
                status: "not_built".into(),
                passed: 0,
                total: 0,
                cause: Some(why.clone()),
            });
        }
        let order = sorted(rows.iter().map(|r| r.version.clone()));
        rows.sort_by_key(|r| order.iter().position(|v| *v == r.version).unwrap_or(usize::MAX));
        VersionMatrix {
            provider,
            suite: suite.into(),
            generated_at: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or(jiff::Timestamp::now())
                .to_string(),
            run_id: report.map(|r| r.run_id.clone()),
            duration_ms: report.map(|r| r.duration_ms).unwrap_or(0),
            rows,
        }
    }

    /// A Markdown table (newest first); cell text is escaped for tables.
    /// The Markdown table a README holds, with how it was made and the command that makes it
    /// again.
    pub fn readme_table(&self, again: &str) -> String {
        format!(
            "{}\n_{} × {} on the lab's canary repos, {} ({} versions, {} s in all, builds included). Regenerate: `{again}`._\n",
            self.markdown(),
            self.provider,
            self.suite,
            self.generated_at,
            self.rows.len(),
            self.duration_ms / 1000,
        )
    }

    pub fn markdown(&self) -> String {
        let cell = |s: &str| {
            crate::text::clean(&s.replace(['\n', '\r'], " "))
                .replace('|', "\\|")
                .replace('<', "&lt;")
        };
        let mut out = format!(
            "| {} version | CLI | {} | cases | what failed where |\n|---|---|---|---|---|\n",
            cell(self.provider.name()),
            cell(&self.suite)
        );
        for r in self.rows.iter().rev() {
            out.push_str(&format!(
                "| {} | {} | {} | {}/{} | {} |\n",
                cell(&r.version),
                cell(r.cli_version.as_deref().unwrap_or("—")),
                cell(&r.status),
                r.passed,
                r.total,
                cell(r.cause.as_deref().unwrap_or(""))
            ));
        }
        out
    }

    /// A page a person reads; every value escaped.
    pub fn html(&self) -> String {
        use maud::{DOCTYPE, html};
        let title = format!("{} × {}", self.provider, self.suite);
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (title) }
                    style { "body{font:14px system-ui,sans-serif;margin:2em}td,th{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left}.passed{color:#1a7f37}.failed,.timed_out,.error,.not_built{color:#cf222e}.drift{color:#b35900}.flaky{color:#bf8700}" }
                }
                body {
                    h1 { (title) }
                    p { "generated " (self.generated_at) @if let Some(r) = &self.run_id { " · run " code { (r) } } " · " (self.rows.len()) " versions in " (self.duration_ms / 1000) " s" }
                    table {
                        tr { th { "version" } th { "CLI" } th { "status" } th { "cases" } th { "what failed where" } }
                        @for r in self.rows.iter().rev() {
                            tr {
                                td { code { (r.version) } }
                                td { (r.cli_version.as_deref().unwrap_or("—")) }
                                td class=(r.status) { (r.status) }
                                td { (r.passed) "/" (r.total) }
                                td { (r.cause.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        .into_string()
    }
}

/// Replaces the generated table of `provider` in a README: the text between the lines
/// `<!-- canary matrix: PROVIDER -->` and `<!-- /canary matrix: PROVIDER -->`. `Err` says which
/// marker is missing.
pub fn splice(readme: &str, provider: &str, table: &str) -> std::result::Result<String, String> {
    let (open, close) = (
        format!("<!-- canary matrix: {provider} -->"),
        format!("<!-- /canary matrix: {provider} -->"),
    );
    let start = readme.find(&open).ok_or_else(|| format!("no `{open}` line"))? + open.len();
    let end = start
        + readme[start..]
            .find(&close)
            .ok_or_else(|| format!("no `{close}` line after `{open}`"))?;
    Ok(format!("{}\n{}{}", &readme[..start], table, &readme[end..]))
}

/// Finds the first bad version between a known good and a known bad one by halving: the caller
/// judges [`Bisect::next`] and reports it with [`Bisect::record`] until `next` is `None`.
#[derive(Debug, Clone)]
pub struct Bisect {
    versions: Vec<String>,
    /// Index of the newest version known good, and of the oldest known bad.
    good: usize,
    bad: usize,
    pub judged: Vec<(String, bool)>,
}

impl Bisect {
    /// `versions` are every upstream version (any order); `good` must be older than `bad`.
    pub fn new(versions: &[String], good: &str, bad: &str) -> Result<Bisect> {
        let versions = sorted(versions.iter().cloned());
        let find = |v: &str, flag: &str| {
            versions.iter().position(|x| version(x) == version(v)).ok_or_else(|| {
                LabError::usage(
                    format!("{flag} {} is not a published version", crate::text::clean(v)),
                    "name versions upstream publishes (`canary watch --json` lists them)",
                )
            })
        };
        let (g, b) = (find(good, "--good")?, find(bad, "--bad")?);
        if g >= b {
            return Err(LabError::usage(
                format!(
                    "--good {} is not older than --bad {}",
                    crate::text::clean(good),
                    crate::text::clean(bad)
                ),
                "the good version comes first: --good OLDER --bad NEWER",
            ));
        }
        Ok(Bisect {
            versions,
            good: g,
            bad: b,
            judged: Vec::new(),
        })
    }

    /// How many versions lie strictly between the good and the bad one.
    pub fn between(&self) -> usize {
        self.bad - self.good - 1
    }

    /// The version to judge next, or `None` when the first bad one is known.
    pub fn next(&self) -> Option<&str> {
        (self.bad - self.good > 1).then(|| self.versions[(self.good + self.bad) / 2].as_str())
    }

    pub fn record(&mut self, v: &str, good: bool) {
        if let Some(i) = self.versions.iter().position(|x| x == v) {
            if good && i > self.good && i < self.bad {
                self.good = i;
            } else if !good && i < self.bad && i > self.good {
                self.bad = i;
            }
        }
        self.judged.push((v.to_string(), good));
    }

    pub fn first_bad(&self) -> &str {
        &self.versions[self.bad]
    }

    pub fn last_good(&self) -> &str {
        &self.versions[self.good]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selections_parse_and_select_in_version_order() {
        let avail = vs(&["0.160.0", "0.133.0", "0.99.0", "0.140.1", "0.163.0", "not-a-version"]);
        assert_eq!(
            select(&avail, &"all".parse().unwrap()).unwrap(),
            vs(&["0.99.0", "0.133.0", "0.140.1", "0.160.0", "0.163.0"])
        );
        assert_eq!(
            select(&avail, &"0.133..".parse().unwrap()).unwrap(),
            vs(&["0.133.0", "0.140.1", "0.160.0", "0.163.0"])
        );
        assert_eq!(
            select(&avail, &"0.133..0.160.0".parse().unwrap()).unwrap(),
            vs(&["0.133.0", "0.140.1", "0.160.0"])
        );
        assert_eq!(
            select(&avail, &"..0.133".parse().unwrap()).unwrap(),
            vs(&["0.99.0", "0.133.0"])
        );
        assert_eq!(
            select(&avail, &"newest:2".parse().unwrap()).unwrap(),
            vs(&["0.160.0", "0.163.0"])
        );
        assert_eq!(
            select(&avail, &"0.163.0,0.99.0".parse().unwrap()).unwrap(),
            vs(&["0.99.0", "0.163.0"])
        );
        assert!(select(&avail, &"0.1.0".parse().unwrap()).is_err());
        for bad in ["newest:0", "newest:x", "1..x", "a,b", "--help"] {
            assert!(bad.parse::<Selection>().is_err(), "{bad}");
        }
        // Claude Code's SDK versions sort by their number.
        assert_eq!(
            sorted(vs(&["sdk-0.2.187", "sdk-0.2.99"])),
            vs(&["sdk-0.2.99", "sdk-0.2.187"])
        );
        // A listed version comes back spelled as upstream publishes it.
        let sdk = vs(&["sdk-0.2.179", "sdk-0.2.180"]);
        assert_eq!(select(&sdk, &"0.2.180,0.2.179".parse().unwrap()).unwrap(), sdk);
    }

    #[test]
    fn bisect_finds_the_first_bad_version_in_log2_judgements() {
        let versions: Vec<String> = (0..40).map(|i| format!("0.{}.0", 120 + i)).collect();
        for first_bad in 1..40 {
            let mut b = Bisect::new(&versions, "0.120.0", "0.159.0").unwrap();
            let n = b.between();
            while let Some(v) = b.next().map(String::from) {
                let minor: usize = v.split('.').nth(1).unwrap().parse().unwrap();
                b.record(&v, minor - 120 < first_bad);
            }
            assert_eq!(b.first_bad(), format!("0.{}.0", 120 + first_bad));
            assert_eq!(b.last_good(), format!("0.{}.0", 119 + first_bad));
            let bound = ((n + 1) as f64).log2().ceil() as usize;
            assert!(
                b.judged.len() <= bound,
                "{} judged for {n} versions between",
                b.judged.len()
            );
        }
        assert!(Bisect::new(&versions, "0.150.0", "0.140.0").is_err());
        assert!(Bisect::new(&versions, "0.1.0", "0.140.0").is_err());
    }

    #[test]
    fn the_readme_table_is_replaced_between_its_markers_only() {
        let readme = "intro\n<!-- canary matrix: codex -->\nold\n<!-- /canary matrix: codex -->\nrest\n";
        let out = splice(readme, "codex", "| new |\n").unwrap();
        assert_eq!(
            out,
            "intro\n<!-- canary matrix: codex -->\n| new |\n<!-- /canary matrix: codex -->\nrest\n"
        );
        assert_eq!(splice(&out, "codex", "| new |\n").unwrap(), out, "idempotent");
        assert!(
            splice(readme, "claude-code", "x")
                .unwrap_err()
                .contains("canary matrix: claude-code")
        );
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        let m = VersionMatrix {
            provider: canary_contract::Provider::Codex,
            suite: "golden-path".into(),
            generated_at: "t".into(),
            run_id: None,
            duration_ms: 0,
            rows: vec![Row {
                version: "0.1.0".into(),
                cli_version: Some("0.1.0".into()),
                image: None,
                status: "failed".into(),
                passed: 0,
                total: 3,
                cause: Some("a | b\n<script>".into()),
            }],
        };
        let md = m.markdown();
        assert_eq!(md.lines().count(), 3, "{md}");
        assert!(md.contains("a \\| b &lt;script>"), "{md}");
        assert!(!m.html().contains("<script>"));
    }
}
