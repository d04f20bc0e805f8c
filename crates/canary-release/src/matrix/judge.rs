//! Judging upstream versions for real: one runner build per version (layers shared), one lab run
//! over those builds, and the bisection loop that builds and judges one version at a time. The
//! CLI's `canary matrix` and `canary bisect` parse their flags into these requests and render
//! the outcomes.

use super::{Bisect, Selection, VersionMatrix};
use crate::config::LabConfig;
use crate::engine::docker::DockerBackend;
use crate::error::{LabError, Result};
use crate::lab::{self, RunOptions};
use crate::progress::Progress;
use crate::providers::Provider;
use crate::report::{CaseStatus, RunReport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How each version is judged: a suite on canary repos, `jobs` cases at once.
#[derive(Debug, Clone)]
pub struct Judging {
    pub suite: PathBuf,
    /// Only these canary repos (empty: the suite's).
    pub repos: Vec<String>,
    pub jobs: usize,
    /// How the printed repro lines start (`canary` and the global flags this run was given).
    pub repro_prefix: String,
    /// Record the verdicts in the known-good registry.
    pub record: bool,
    /// Judge this many versions at a time (0: all in one run).
    pub batch: usize,
    /// Remove each version's build (its layer, executor image and unpacked CLI) once judged,
    /// unless a channel or an org pin holds it: disk stays bounded over many versions.
    pub release_judged: bool,
}

/// The CLI a matrix or bisection judges, checked to be one whose versions the lab can fetch.
pub fn fetchable(p: Provider) -> Result<Provider> {
    match p.package() {
        Some(_) => Ok(p),
        None => Err(LabError::usage(
            format!("`{p}` has no versions the lab can fetch"),
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
    let package = p.package().expect("checked by fetchable");
    let source = crate::upstream::sources::Source::Pypi(package.into());
    let fetcher = config.upstream.fetcher(&config.cache_dir)?;
    let fetched = crate::upstream::sources::fetch(&fetcher, &config.upstream.endpoints(), p, &source).await?;
    Ok(fetched
        .releases
        .into_iter()
        .filter(|r| !r.prerelease && r.yanked.is_none())
        .map(|r| spec_version(p, &r.package_version))
        .collect())
}

/// Versions built (version → image reference and the CLI version inside) and those that could
/// not be (version → why).
type Built = (BTreeMap<String, (String, Option<String>)>, BTreeMap<String, String>);

/// One build per version (layers shared with every other build of this runner); versions that
/// cannot be built are kept with the reason.
async fn builds(
    engine: &DockerBackend,
    config: &LabConfig,
    p: Provider,
    versions: &[String],
    progress: &Progress,
) -> Built {
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

/// Runs the suite once over these images (cases in parallel up to `jobs`), recording it.
async fn run_images(
    engine: &DockerBackend,
    config: &LabConfig,
    j: &Judging,
    images: Vec<String>,
    progress: &Progress,
) -> Result<(RunReport, PathBuf)> {
    let suites = std::slice::from_ref(&j.suite);
    let mut plans = Vec::new();
    for reference in &images {
        let labels = crate::engine::Backend::image(engine, reference)
            .await?
            .map(|i| i.labels)
            .unwrap_or_default();
        plans.push(lab::plan::ImagePlan::from_labels(reference, &labels));
    }
    let prepared = lab::prepare(&config.lab(), suites, &j.repos, None, &plans)?;
    let mut reporters: Vec<Box<dyn crate::report::events::Reporter>> = Vec::new();
    if j.record {
        let reg = crate::registry::Registry::open(&config.registry).await?;
        reporters.push(Box::new(crate::registry::Recorder::new(reg).0));
    }
    let opts = RunOptions {
        run_id: lab::new_run_id(),
        images,
        jobs: j.jobs,
        partition: None,
        keep: false,
        repro_prefix: j.repro_prefix.clone(),
        rerun_failed: 0,
        reporters,
        judged: Vec::new(),
    };
    crate::engines::run(config, engine.clone(), prepared, opts, progress).await
}

/// A README a matrix table goes into: refused before anything runs when it lacks the markers.
pub fn readme_for(path: &Path, p: Provider) -> Result<String> {
    let text = crate::fsutil::read_input(path, "the README", 4 << 20)?;
    super::splice(&text, p.name(), "").map_err(|why| {
        LabError::usage(
            format!("{}: {why}", path.display()),
            format!(
                "add the lines `<!-- canary matrix: {0} -->` and `<!-- /canary matrix: {0} -->` where the table goes",
                p.name()
            ),
        )
    })?;
    Ok(text)
}

/// Writes matrix.json, matrix.md and matrix.html into `dir`.
pub fn write_outputs(m: &VersionMatrix, dir: &Path) -> Result<()> {
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

/// A judged matrix and the folder of the run behind it (none when no version could be built).
pub struct Judged {
    pub matrix: VersionMatrix,
    pub run_dir: Option<PathBuf>,
}

/// Builds and judges the selected versions of one CLI in one run.
pub async fn matrix(
    config: &LabConfig,
    p: Provider,
    versions: &str,
    j: &Judging,
    progress: &Progress,
) -> Result<Judged> {
    let started = std::time::Instant::now();
    let sel: Selection = versions.parse()?;
    // The user's files are checked before anything is fetched or built.
    lab::load_suites(&config.lab(), std::slice::from_ref(&j.suite), &j.repos)?;
    let available = upstream_versions(config, p).await?;
    let chosen = super::select(&available, &sel)?;
    if chosen.is_empty() {
        return Err(LabError::usage(
            format!(
                "--versions {} covers no published version of {}",
                crate::text::clean(versions),
                p.name()
            ),
            "widen the range (`all` covers every one)",
        ));
    }
    progress.line(format!(
        "{} versions of {}: {}",
        chosen.len(),
        p.name(),
        chosen.join(", ")
    ));
    let engine = DockerBackend::connect().await?;
    let suite_name = j
        .suite
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("suite")
        .to_string();
    let (mut built, mut not_built) = (BTreeMap::new(), BTreeMap::new());
    let mut report: Option<(RunReport, PathBuf)> = None;
    let size = if j.batch == 0 { chosen.len() } else { j.batch };
    for batch in chosen.chunks(size.max(1)) {
        let (b, n) = builds(&engine, config, p, batch, progress).await;
        if !b.is_empty() {
            let images = b.values().map(|(r, _)| r.clone()).collect();
            let (r, dir) = run_images(&engine, config, j, images, progress).await?;
            report = Some(match report {
                None => (r, dir),
                Some((mut all, _)) => {
                    all.duration_ms += r.duration_ms;
                    all.cases.extend(r.cases);
                    (all, dir)
                }
            });
        }
        if j.release_judged {
            release(&engine, config, p, &b, progress).await?;
        }
        built.extend(b);
        not_built.extend(n);
    }
    let mut matrix = VersionMatrix::from_run(p, &suite_name, report.as_ref().map(|r| &r.0), &built, &not_built);
    // The whole of it: fetching, building, judging and releasing every batch.
    matrix.duration_ms = started.elapsed().as_millis() as u64;
    Ok(Judged {
        matrix,
        run_dir: report.map(|r| r.1),
    })
}

/// Removes the judged builds of a batch from the engine, and their unpacked CLIs from the cache
/// (the wheels stay, so a later build needs no download), except builds a channel or an org pin
/// holds. Verdicts stay in the registry.
async fn release(
    engine: &DockerBackend,
    config: &LabConfig,
    p: Provider,
    built: &BTreeMap<String, (String, Option<String>)>,
    progress: &Progress,
) -> Result<()> {
    let reg = crate::registry::Registry::open(&config.registry).await?;
    let held = crate::gate::ops::held(&reg).await?;
    for (version, (reference, _)) in built {
        let Some(info) = crate::engine::Backend::image(engine, reference).await? else {
            continue;
        };
        if let Some((_, why)) = held.iter().find(|(b, _)| b.as_str() == info.id) {
            progress.line(format!("{} {version}: build kept ({why})", p.name()));
            continue;
        }
        let size = engine.remove_build(&info.id).await?;
        let unpacked = config
            .cache_dir
            .join("providers")
            .join(p.name())
            .join(version.trim_start_matches("sdk-"));
        if unpacked.is_dir() {
            std::fs::remove_dir_all(&unpacked).map_err(|e| LabError::write(&unpacked, e))?;
        }
        progress.line(format!(
            "{} {version}: judged; build removed ({} MB image)",
            p.name(),
            size / 1_000_000
        ));
    }
    Ok(())
}

/// What a bisection found, and what its hold did (none asked, held, or refused by the gate).
#[derive(Debug, serde::Serialize)]
pub struct Bisected {
    pub provider: Provider,
    pub first_bad: String,
    pub last_good: String,
    pub judged: Vec<(String, bool)>,
    pub between: usize,
    pub held: Option<String>,
    /// The hold was refused by the gate: the channel did not change.
    #[serde(skip)]
    pub hold_refused: bool,
}

/// Finds the first bad version between `good` and `bad`, building and judging one version at a
/// time; then, when `hold` names a channel, releases the last good version's build to it
/// through the gate.
pub async fn bisect(
    config: &LabConfig,
    p: Provider,
    (good, bad): (&str, &str),
    hold: Option<&canary_contract::Channel>,
    j: &Judging,
    progress: &Progress,
) -> Result<Bisected> {
    // The hold's policy is checked before anything is built, and used as loaded.
    let policy = match hold {
        Some(ch) => {
            let policy = crate::gate::policy::Policy::load(config.gate_policy.as_deref())?;
            policy.channel(ch)?;
            Some(policy)
        }
        None => None,
    };
    lab::load_suites(&config.lab(), std::slice::from_ref(&j.suite), &j.repos)?;
    let available = upstream_versions(config, p).await?;
    let norm = |v: &str| spec_version(p, v.trim_start_matches("sdk-"));
    let mut b = Bisect::new(&available, &norm(good), &norm(bad))?;
    let between = b.between();
    progress.line(format!(
        "bisecting {} versions between {} (good) and {} (bad)",
        b.between(),
        b.last_good(),
        b.first_bad()
    ));
    let engine = DockerBackend::connect().await?;
    let mut images = BTreeMap::new();
    while let Some(v) = b.next().map(String::from) {
        let (built, not_built) = builds(&engine, config, p, std::slice::from_ref(&v), progress).await;
        // A version that cannot be built cannot be adopted: it counts as bad.
        let good = match built.get(&v) {
            Some((reference, _)) => {
                let (report, _) = run_images(&engine, config, j, vec![reference.clone()], progress).await?;
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
    let mut out = Bisected {
        provider: p,
        first_bad: b.first_bad().into(),
        last_good: b.last_good().into(),
        between,
        judged: b.judged.clone(),
        held: None,
        hold_refused: false,
    };
    if let (Some(channel), Some(policy)) = (hold, &policy) {
        let id = last_good_build(&engine, config, p, &out.last_good, &images, j, progress).await?;
        hold_channel(config, policy, channel, &id, &mut out).await?;
    }
    Ok(out)
}

/// The last good version's build: judged during the bisection, or the `--good` one (built and
/// judged now when the registry has no verdict for it).
async fn last_good_build(
    engine: &DockerBackend,
    config: &LabConfig,
    p: Provider,
    last_good: &str,
    judged: &BTreeMap<String, String>,
    j: &Judging,
    progress: &Progress,
) -> Result<String> {
    if let Some(id) = judged.get(last_good) {
        return Ok(id.clone());
    }
    let (built, not_built) = builds(engine, config, p, &[last_good.to_string()], progress).await;
    let (reference, _) = built.get(last_good).cloned().ok_or_else(|| {
        LabError::usage(
            format!(
                "the last good version {last_good} cannot be built: {}",
                not_built.get(last_good).cloned().unwrap_or_default()
            ),
            "check `canary providers fetch` for it",
        )
    })?;
    let id = crate::engine::Backend::image(engine, &reference)
        .await?
        .map(|i| i.id)
        .unwrap_or_default();
    let reg = crate::registry::Registry::open(&config.registry).await?;
    if let Ok(build) = id.parse::<canary_contract::BuildId>() {
        if !reg.latest_cells(&build).await?.is_empty() {
            return Ok(id);
        }
    }
    let (report, _) = run_images(engine, config, j, vec![reference], progress).await?;
    Ok(report.image.id)
}

/// Releases `id` to `channel` through the gate, saying in `out` what happened.
async fn hold_channel(
    config: &LabConfig,
    policy: &crate::gate::policy::Policy,
    channel: &canary_contract::Channel,
    id: &str,
    out: &mut Bisected,
) -> Result<()> {
    let reg = crate::registry::Registry::open(&config.registry).await?;
    let actor = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let reason = format!(
        "canary bisect: {} {} is the first bad version",
        out.provider, out.first_bad
    );
    let who = crate::gate::ops::Actor {
        name: &actor,
        reason: &reason,
    };
    let decisions = crate::gate::ops::release(
        &reg,
        policy,
        &config.repo_ids()?,
        (&[id], std::slice::from_ref(channel)),
        who,
    )
    .await?;
    let decision = decisions.first().expect("one build, one channel");
    if decision.allowed {
        out.held = Some(format!(
            "{channel} holds {} {} ({})",
            out.provider,
            out.last_good,
            lab::short_id(id)
        ));
    } else {
        out.held = Some(format!("{channel} not changed: {}", decision.unmet.join("; ")));
        out.hold_refused = true;
    }
    Ok(())
}
