//! `canary matrix` (a suite across upstream versions of one CLI, one build each, one run) and
//! `canary bisect` (the first bad version between a good and a bad one). Exit codes: 0 every
//! version passed / the first bad one was found, 1 a version failed / a channel hold was refused,
//! 2 error.

use crate::config::LabConfig;
use crate::engine::docker::DockerBackend;
use crate::error::{LabError, Result, exit};
use crate::lab::{self, RunOptions};
use crate::matrix::{Bisect, Selection, VersionMatrix};
use crate::progress::Progress;
use crate::providers::Provider;
use crate::report::{CaseStatus, RunReport};
use clap::Args;
use std::collections::BTreeMap;
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
    #[arg(long)]
    pub provider: String,
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
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BisectArgs {
    /// The CLI: codex or claude-code.
    #[arg(long)]
    pub provider: String,
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
    pub hold: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn provider(name: &str) -> Result<Provider> {
    match Provider::from_name(name) {
        Some(p) if p.package().is_some() => Ok(p),
        _ => Err(LabError::usage(
            format!("`{}` has no versions the lab can fetch", crate::text::clean(name)),
            "write --provider codex or --provider claude-code (Gemini CLI is npm-only)",
        )),
    }
}

/// The spelling of a package version the build specs take (`sdk-` for Claude Code's SDK).
fn spec_version(p: Provider, package_version: &str) -> String {
    match p {
        Provider::ClaudeCode => format!("sdk-{package_version}"),
        _ => package_version.to_string(),
    }
}

/// Every stable, not yanked package version upstream publishes (spelled as specs take them).
async fn upstream_versions(config: &LabConfig, p: Provider) -> Result<Vec<String>> {
    let package = p.package().expect("checked");
    let source = crate::upstream::sources::Source::Pypi(package.into());
    let fetcher = config.upstream.fetcher(&config.cache_dir)?;
    let fetched = crate::upstream::sources::fetch(&fetcher, &config.upstream.endpoints(), p.name(), &source).await?;
    Ok(fetched
        .releases
        .into_iter()
        .filter(|r| !r.prerelease && r.yanked.is_none())
        .map(|r| spec_version(p, &r.package_version))
        .collect())
}

/// One build per version (layers shared with every other build of this runner); versions that
/// cannot be built are kept with the reason.
async fn builds(
    engine: &DockerBackend,
    config: &LabConfig,
    p: Provider,
    versions: &[String],
    progress: &Progress,
) -> (BTreeMap<String, (String, Option<String>)>, BTreeMap<String, String>) {
    let (mut built, mut failed) = (BTreeMap::new(), BTreeMap::new());
    for v in versions {
        let spec: Result<crate::providers::ProviderSpec> = format!("{}@{v}", p.name()).parse();
        let result = match spec {
            Ok(spec) => crate::builds::ensure(engine, &config.lab(), &[spec], progress).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(b) => {
                let cli = b.manifest.component(p.name()).map(|c| c.version.clone());
                progress.line(format!("{} {v}: build {}", p.name(), b.reference));
                built.insert(v.clone(), (b.reference, cli));
            }
            Err(e) => {
                progress.line(format!("{} {v}: not built: {e}", p.name()));
                failed.insert(v.clone(), e.to_string());
            }
        }
    }
    (built, failed)
}

/// What each judged build runs: a suite on some repos, `jobs` cases at once, recorded or not.
struct RunSpec<'a> {
    /// How the printed repro lines start (`canary` and the global flags this run was given).
    repro_prefix: &'a str,
    suite: &'a PathBuf,
    repos: &'a [String],
    jobs: usize,
    record: bool,
}

/// Runs the suite once over these images (cases in parallel up to `jobs`), recording it.
async fn run_images(
    engine: &DockerBackend,
    config: &LabConfig,
    spec: &RunSpec<'_>,
    images: Vec<String>,
    progress: &Progress,
) -> Result<(RunReport, PathBuf)> {
    let RunSpec {
        repro_prefix,
        suite,
        repos,
        jobs,
        record,
    } = *spec;
    let suites = std::slice::from_ref(suite);
    let mut plans = Vec::new();
    for reference in &images {
        let labels = crate::engine::Backend::image(engine, reference)
            .await?
            .map(|i| i.labels)
            .unwrap_or_default();
        plans.push(lab::plan::ImagePlan::from_labels(reference, &labels));
    }
    let prepared = lab::prepare(&config.lab(), suites, repos, None, &plans)?;
    let mut reporters: Vec<Box<dyn crate::report::events::Reporter>> = Vec::new();
    if record {
        let reg = crate::registry::Registry::open(&config.registry).await?;
        reporters.push(Box::new(crate::registry::Recorder::new(reg).0));
    }
    let opts = RunOptions {
        run_id: lab::new_run_id(),
        images,
        jobs,
        partition: None,
        keep: false,
        repro_prefix: repro_prefix.to_string(),
        rerun_failed: 0,
        reporters,
    };
    lab::run(engine.clone(), &config.lab(), prepared, opts, progress).await
}

fn write_outputs(m: &VersionMatrix, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| LabError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for (name, text) in [
        (
            "matrix.json",
            serde_json::to_string_pretty(m).expect("matrix serializes"),
        ),
        ("matrix.md", m.markdown()),
        ("matrix.html", m.html()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| LabError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

pub async fn matrix(repro_prefix: &str, config: &LabConfig, a: &MatrixArgs) -> Result<i32> {
    let p = provider(&a.provider)?;
    let sel: Selection = a.versions.parse()?;
    // A README without the markers is refused before anything runs.
    let readme = match &a.readme {
        Some(path) => {
            let text = crate::fsutil::read_input(path, "the README", 4 << 20)?;
            crate::matrix::splice(&text, p.name(), "").map_err(|why| {
                LabError::usage(
                    format!("{}: {why}", path.display()),
                    format!("add the lines `<!-- canary matrix: {0} -->` and `<!-- /canary matrix: {0} -->` where the table goes", p.name()),
                )
            })?;
            Some((path.clone(), text))
        }
        None => None,
    };
    // The user's files are checked before anything is fetched or built.
    lab::load_suites(&config.lab(), std::slice::from_ref(&a.judge.suite), &a.judge.repos)?;
    let available = upstream_versions(config, p).await?;
    let versions = crate::matrix::select(&available, &sel)?;
    if versions.is_empty() {
        return Err(LabError::usage(
            format!(
                "--versions {} covers no published version of {}",
                crate::text::clean(&a.versions),
                p.name()
            ),
            "widen the range (`all` covers every one)",
        ));
    }
    let progress = Progress::new(false);
    progress.line(format!(
        "{} versions of {}: {}",
        versions.len(),
        p.name(),
        versions.join(", ")
    ));
    let engine = DockerBackend::connect().await?;
    let (built, not_built) = builds(&engine, config, p, &versions, &progress).await;
    let suite_name = a
        .judge
        .suite
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("suite")
        .to_string();
    let report = if built.is_empty() {
        None
    } else {
        let images = built.values().map(|(r, _)| r.clone()).collect();
        Some(
            run_images(
                &engine,
                config,
                &RunSpec {
                    repro_prefix,
                    suite: &a.judge.suite,
                    repos: &a.judge.repos,
                    jobs: a.judge.jobs,
                    record: !a.no_record,
                },
                images,
                &progress,
            )
            .await?,
        )
    };
    let m = VersionMatrix::from_run(p.name(), &suite_name, report.as_ref().map(|r| &r.0), &built, &not_built);
    let dir = a
        .out
        .clone()
        .or_else(|| report.as_ref().map(|r| r.1.clone()))
        .unwrap_or_else(|| config.reports_dir.join("matrix"));
    write_outputs(&m, &dir)?;
    if let Some((path, text)) = readme {
        let table = format!(
            "{}\n_{} × {} on the lab's canary repos, {} ({} versions, {} s). Regenerate: `canary matrix --provider {} --versions {} --readme {}`._\n",
            m.markdown(),
            m.provider,
            m.suite,
            m.generated_at,
            m.rows.len(),
            m.duration_ms / 1000,
            m.provider,
            crate::text::clean(&a.versions),
            path.display()
        );
        let out = crate::matrix::splice(&text, p.name(), &table).expect("checked above");
        crate::fsutil::write_atomic(&path, out.as_bytes())?;
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

#[derive(serde::Serialize)]
struct BisectOutcome {
    provider: String,
    first_bad: String,
    last_good: String,
    judged: Vec<(String, bool)>,
    between: usize,
    held: Option<String>,
}

pub async fn bisect(repro_prefix: &str, config: &LabConfig, a: &BisectArgs) -> Result<i32> {
    let p = provider(&a.provider)?;
    // The hold's policy is checked before anything is built, and used as loaded.
    let policy = match &a.hold {
        Some(ch) => {
            let policy = crate::gate::policy::Policy::load(config.gate_policy.as_deref())?;
            policy.channel(ch)?;
            Some(policy)
        }
        None => None,
    };
    lab::load_suites(&config.lab(), std::slice::from_ref(&a.judge.suite), &a.judge.repos)?;
    let available = upstream_versions(config, p).await?;
    let norm = |v: &str| spec_version(p, v.trim_start_matches("sdk-"));
    let mut b = Bisect::new(&available, &norm(&a.good), &norm(&a.bad))?;
    let between = b.between();
    let progress = Progress::new(false);
    progress.line(format!(
        "bisecting {} versions between {} (good) and {} (bad)",
        b.between(),
        b.last_good(),
        b.first_bad()
    ));
    let engine = DockerBackend::connect().await?;
    let spec = RunSpec {
        repro_prefix,
        suite: &a.judge.suite,
        repos: &a.judge.repos,
        jobs: a.judge.jobs,
        record: true,
    };
    let mut images = BTreeMap::new();
    while let Some(v) = b.next().map(String::from) {
        let (built, not_built) = builds(&engine, config, p, std::slice::from_ref(&v), &progress).await;
        // A version that cannot be built cannot be adopted: it counts as bad.
        let good = match built.get(&v) {
            Some((reference, _)) => {
                let (report, _) = run_images(&engine, config, &spec, vec![reference.clone()], &progress).await?;
                // The content id the run judged: a tag can move (another build of the same
                // versions commits it again) between this run and the hold below.
                images.insert(v.clone(), report.image.id.clone());
                matches!(report.status, CaseStatus::Passed | CaseStatus::Flaky)
            }
            None => {
                progress.line(format!("{v}: {}", not_built.get(&v).cloned().unwrap_or_default()));
                false
            }
        };
        progress.line(format!("{} {v}: {}", p.name(), if good { "good" } else { "bad" }));
        b.record(&v, good);
    }
    let mut code = exit::PASS;
    let mut held = None;
    if let (Some(channel), Some(policy)) = (&a.hold, &policy) {
        let reg = crate::registry::Registry::open(&config.registry).await?;
        // The last good version's build: judged here, or the --good one (built now if needed).
        let last_good = b.last_good().to_string();
        let id = match images.get(&last_good) {
            Some(id) => id.clone(),
            None => {
                let (built, not_built) = builds(&engine, config, p, std::slice::from_ref(&last_good), &progress).await;
                let (reference, _) = built.get(&last_good).cloned().ok_or_else(|| {
                    LabError::usage(
                        format!(
                            "the last good version {last_good} cannot be built: {}",
                            not_built.get(&last_good).cloned().unwrap_or_default()
                        ),
                        "check `canary providers fetch` for it",
                    )
                })?;
                let id = crate::engine::Backend::image(&engine, &reference)
                    .await?
                    .map(|i| i.id)
                    .unwrap_or_default();
                if !id.is_empty() && !reg.latest_cells(&id).await?.is_empty() {
                    id
                } else {
                    let (report, _) = run_images(&engine, config, &spec, vec![reference], &progress).await?;
                    report.image.id
                }
            }
        };
        let repos = crate::repos::Catalog::load(&config.repos_dir, &config.cache_dir)?.ids();
        let actor = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let reason = format!("canary bisect: {} {} is the first bad version", p.name(), b.first_bad());
        let request = crate::gate::ops::Promotion {
            build: &id,
            channel,
            bundles: &[],
            dry_run: false,
            actor: &actor,
            reason: &reason,
        };
        let (_, decision) = crate::gate::ops::promote(&reg, policy, &repos, &request).await?;
        if decision.allowed {
            held = Some(format!(
                "{channel} holds {} {last_good} ({})",
                p.name(),
                lab::short_id(&id)
            ));
        } else {
            held = Some(format!("{channel} not changed: {}", decision.unmet.join("; ")));
            code = exit::FAILED;
        }
    }
    let outcome = BisectOutcome {
        provider: p.name().into(),
        first_bad: b.first_bad().into(),
        last_good: b.last_good().into(),
        between,
        judged: b.judged.clone(),
        held,
    };
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
    Ok(code)
}
