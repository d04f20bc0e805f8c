//! `canary matrix` (a suite across upstream versions of one CLI, one build each, one run) and
//! `canary bisect` (the first bad version between a good and a bad one). Exit codes: 0 every
//! version passed / the first bad one was found, 1 a version failed / a channel hold was refused,
//! 2 error.

use crate::config::LabConfig;
use crate::contract::{Channel, Provider};
use crate::error::{Result, exit};
use crate::matrix::judge::{self, Judging};
use crate::progress::Progress;
use clap::Args;
use std::path::PathBuf;

/// How each version is judged: a suite on canary repos, cases at once.
#[derive(Args, Debug)]
pub struct JudgeOpts {
    #[arg(long, default_value = "suites/golden-path.yaml")]
    pub suite: PathBuf,
    /// Only these canary repos (default: the suite's).
    #[arg(long = "repo")]
    pub repos: Vec<String>,
    #[arg(short, long, default_value_t = 2)]
    pub jobs: usize,
}

#[derive(Args, Debug)]
pub struct MatrixArgs {
    /// The CLI: codex or claude-code (its versions come from its PyPI package).
    #[arg(long, value_parser = <Provider as std::str::FromStr>::from_str)]
    pub provider: Provider,
    /// all, FROM..TO (either end open, e.g. 0.133..), newest:N, or a comma-separated list.
    #[arg(long, default_value = "newest:5")]
    pub versions: String,
    #[command(flatten)]
    pub judge: JudgeOpts,
    /// Where matrix.json, matrix.md and matrix.html go (default: the run's report folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not record the verdicts in the known-good registry.
    #[arg(long)]
    pub no_record: bool,
    /// Also write the Markdown table into this file, between its `<!-- canary matrix:
    /// PROVIDER -->` and `<!-- /canary matrix: PROVIDER -->` lines (the README's table).
    #[arg(long)]
    pub readme: Option<PathBuf>,
    /// Judge this many versions per run (default: all in one run; 10 with --release-judged).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Remove each version's build once judged, unless a channel or an org pin holds it (its
    /// verdict stays in the registry; `canary repro` of its cases then needs the build again).
    #[arg(long)]
    pub release_judged: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BisectArgs {
    /// The CLI: codex or claude-code.
    #[arg(long, value_parser = <Provider as std::str::FromStr>::from_str)]
    pub provider: Provider,
    /// A version known to pass.
    #[arg(long)]
    pub good: String,
    /// A newer version known to fail.
    #[arg(long)]
    pub bad: String,
    #[command(flatten)]
    pub judge: JudgeOpts,
    /// Then release the last good version's build to this channel (through the gate), so the
    /// channel stays below the first bad version.
    #[arg(long)]
    pub hold: Option<Channel>,
    #[arg(long)]
    pub json: bool,
}

impl JudgeOpts {
    fn judging(&self, repro_prefix: &str, record: bool) -> Judging {
        Judging {
            suite: self.suite.clone(),
            repos: self.repos.clone(),
            jobs: self.jobs,
            repro_prefix: repro_prefix.to_string(),
            record,
            batch: 0,
            release_judged: false,
        }
    }
}

pub async fn matrix(repro_prefix: &str, config: &LabConfig, a: &MatrixArgs) -> Result<i32> {
    let p = judge::fetchable(a.provider)?;
    let readme = match &a.readme {
        Some(path) => Some((path, judge::readme_for(path, p)?)),
        None => None,
    };
    let progress = Progress::new(false);
    let mut judging = a.judge.judging(repro_prefix, !a.no_record);
    judging.release_judged = a.release_judged;
    judging.batch = a.batch.unwrap_or(if a.release_judged { 10 } else { 0 });
    let judge::Judged { matrix: m, run_dir } = judge::matrix(config, p, &a.versions, &judging, &progress).await?;
    let dir = a
        .out
        .clone()
        .or(run_dir)
        .unwrap_or_else(|| config.reports_dir.join("matrix"));
    judge::write_outputs(&m, &dir)?;
    if let Some((path, text)) = readme {
        let again = format!(
            "canary matrix --provider {} --versions {} --readme {}",
            m.provider,
            crate::text::clean(&a.versions),
            path.display()
        );
        let out = crate::matrix::splice(&text, p.name(), &m.readme_table(&again)).expect("checked above");
        crate::fsutil::write_atomic(path, out.as_bytes())?;
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&m).expect("matrix serializes"));
    } else {
        outln!("{}", m.markdown());
        outln!(
            "Matrix: {}  {}  {}",
            dir.join("matrix.html").display(),
            dir.join("matrix.md").display(),
            dir.join("matrix.json").display()
        );
    }
    Ok(
        if m.rows.iter().all(|r| matches!(r.status.as_str(), "passed" | "flaky")) {
            exit::PASS
        } else {
            exit::FAILED
        },
    )
}

pub async fn bisect(repro_prefix: &str, config: &LabConfig, a: &BisectArgs) -> Result<i32> {
    let p = judge::fetchable(a.provider)?;
    let progress = Progress::new(false);
    let judging = a.judge.judging(repro_prefix, true);
    let outcome = judge::bisect(config, p, (&a.good, &a.bad), a.hold.as_ref(), &judging, &progress).await?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&outcome).expect("serializes"));
    } else {
        outln!(
            "first bad: {} {} (last good {}); {} version(s) judged",
            outcome.provider,
            outcome.first_bad,
            outcome.last_good,
            outcome.judged.len()
        );
        if let Some(h) = &outcome.held {
            outln!("{h}");
        }
    }
    Ok(if outcome.hold_refused { exit::FAILED } else { exit::PASS })
}
