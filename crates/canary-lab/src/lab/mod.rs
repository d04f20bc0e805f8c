//! `canary run`: compile suites, plan cases, run them in a bounded pool, write the reports.
//!
//! All input is validated before the first container starts (bad suites, unknown repos, repos
//! off their pin, a missing image: exit 2, nothing run). Whatever ends the run (success,
//! failure, Ctrl-C, SIGTERM, a panic in a case) the run's containers and network are removed by
//! label, so cleanup never depends on in-memory bookkeeping being intact.

pub mod case;
pub mod checks;
pub mod dns;
pub mod drift;
pub mod forge;
pub mod placement;
pub mod plan;
pub mod repro;
pub mod session;

use crate::Settings;
use crate::engine::{Backend, GcScope};
use crate::error::{LabError, Result};
use crate::progress::Progress;
use crate::providers::Provider;
use crate::report::{self, CaseReport, CaseStatus, CaseTimings, ImageRef, RepoRef, RunReport, SuiteRef, Summary};
use crate::repos::Catalog;
use crate::suite::{Network, StepAction, Suite};
pub use canary_contract::build::short_id;
use case::CaseContext;
use plan::{Case, Partition};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Suites ready to run: compiled, with the content of every repo they use, verified.
/// A repo's content as a case receives it, and as the run folder keeps it.
pub struct RepoUpload {
    pub digest: String,
    /// The content alone (kept as `repos/<id>.tar`; its digest is re-checkable).
    pub content_tar: Vec<u8>,
    /// The content plus its baseline commit (what each case container receives).
    pub upload_tar: Arc<Vec<u8>>,
}

impl RepoUpload {
    pub fn new(content: &crate::repos::Content) -> Result<RepoUpload> {
        Ok(RepoUpload {
            digest: content.digest.clone(),
            content_tar: content.to_tar(),
            upload_tar: Arc::new(content.baseline_tar()?),
        })
    }
}

pub struct Prepared {
    pub suites: Vec<Arc<Suite>>,
    pub cases: Vec<Case>,
    pub repos: BTreeMap<String, RepoUpload>,
    pub repo_commands: BTreeMap<String, (String, Option<String>)>,
    /// Each repo's `vars`, recorded in the report so `repro` instantiates suites the same way.
    pub repo_vars: BTreeMap<String, BTreeMap<String, String>>,
}

/// Reads the canary repos and compiles the suites: every error in the user's files surfaces
/// here, before any engine is asked anything.
pub fn load_suites(
    config: &Settings,
    suite_files: &[PathBuf],
    only_repos: &[String],
) -> Result<(Catalog, Vec<Arc<Suite>>)> {
    if suite_files.is_empty() {
        return Err(LabError::usage(
            "no suite given",
            "name one or more suite files: `canary run --suite suites/demo.yaml`",
        ));
    }
    let catalog = Catalog::load(&config.repos_dir, &config.cache_dir)?;
    let known = catalog.ids();
    for r in only_repos {
        catalog.get(r)?;
    }
    let mut suites: Vec<Arc<Suite>> = Vec::new();
    for f in suite_files {
        let s = crate::suite::load(f, &known)?;
        if let Some(other) = suites.iter().find(|o| o.name == s.name) {
            return Err(LabError::usage(
                format!("suites {} and {} are both named `{}`", other.file, s.file, s.name),
                "suite names identify cases and report files: rename one",
            ));
        }
        suites.push(Arc::new(s));
    }
    Ok((catalog, suites))
}

/// Compiles the suites and plans the cases (suite × repo × image × provider); every input
/// error surfaces here.
pub fn prepare(
    config: &Settings,
    suite_files: &[PathBuf],
    only_repos: &[String],
    partition: Option<Partition>,
    images: &[plan::ImagePlan],
) -> Result<Prepared> {
    let (catalog, suites) = load_suites(config, suite_files, only_repos)?;
    let known = catalog.ids();
    let mut cases = plan::plan(&suites, only_repos);
    if cases.is_empty() {
        return Err(LabError::usage(
            "no cases to run",
            format!(
                "the suites target {}; --repo selected {}",
                suites
                    .iter()
                    .flat_map(|s| s.repos.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                only_repos.join(", ")
            ),
        ));
    }
    // Images and their CLIs multiply the matrix; partitions then split the whole of it.
    cases = plan::expand(cases, images)?;
    if let Some(p) = partition {
        cases = plan::partition(cases, p);
    }
    let mut repos = BTreeMap::new();
    let mut repo_commands = BTreeMap::new();
    let mut repo_vars = BTreeMap::new();
    for c in &mut cases {
        let repo = catalog.get(&c.repo)?;
        c.suite = Arc::new(c.suite.for_repo_checked(repo, &known)?);
        repo_vars.insert(c.repo.clone(), repo.manifest.vars.clone());
        if !repos.contains_key(&c.repo) {
            let content = catalog.pinned_content(&c.repo)?;
            repos.insert(c.repo.clone(), RepoUpload::new(&content)?);
            repo_commands.insert(c.repo.clone(), (repo.manifest.test.clone(), repo.manifest.ci.clone()));
        }
    }
    Ok(Prepared {
        suites,
        cases,
        repos,
        repo_commands,
        repo_vars,
    })
}

pub struct RunOptions {
    pub run_id: String,
    /// Images to run every case in (one or more).
    pub images: Vec<String>,
    pub jobs: usize,
    pub partition: Option<Partition>,
    pub keep: bool,
    pub repro_prefix: String,
    /// Rerun failed cases up to this many times; one that then passes is `flaky`.
    pub rerun_failed: u32,
    /// Consumers of the run's events beyond the terminal and the report files (the registry's
    /// recorder); they see every event after those two.
    pub reporters: Vec<Box<dyn report::events::Reporter>>,
    /// Cases judged by an earlier, interrupted pass of this run (`--resume`): not run again,
    /// and part of the report.
    pub judged: Vec<CaseReport>,
}

/// A run id: UTC time plus a few hex digits, sortable and unique enough for one lab.
pub fn new_run_id() -> String {
    let now = jiff::Timestamp::now();
    let salt = (now.subsec_nanosecond() as u32 ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{}-{salt:04x}", now.strftime("%Y%m%d-%H%M%S"))
}

/// Says something about the run to every reporter (the terminal shows it).
async fn note(events: &report::events::Reporters, text: String) {
    events.emit_or_warn(report::events::RunEvent::Note(text)).await;
}

/// Removes what crashed runs left behind, and says so.
async fn gc_orphans<B: Backend>(backend: &B, events: &report::events::Reporters) {
    match backend.gc(GcScope::Orphaned).await {
        Ok(r) if !r.containers.is_empty() || !r.networks.is_empty() => {
            let text = format!(
                "removed {} containers and {} networks left by crashed runs",
                r.containers.len(),
                r.networks.len()
            );
            note(events, text).await
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("gc before run: {e}"),
    }
}

/// Runs the prepared cases; returns the report and the run folder. The caller has already
/// checked that the engine is reachable. The phases: the images, the lab's services, the
/// pre-flight of each runner image's CLIs, the cases, the cleanup, the report.
pub async fn run<B: Backend + Clone>(
    backend: B,
    config: &Settings,
    prepared: Prepared,
    opts: RunOptions,
    progress: &Progress,
) -> Result<(RunReport, PathBuf)> {
    let one = placement::Engine {
        name: None,
        backend,
        slots: opts.jobs.max(1),
    };
    run_on(vec![one], config, prepared, opts, progress).await
}

/// A run over several engines: each gets the run's services and case images of its own, cases
/// go to the one with the most free slots, and the report names each case's engine. The first
/// engine describes the run and answers the pre-flight; every engine must hold the run's images.
pub async fn run_on<B: Backend + Clone>(
    engines: Vec<placement::Engine<B>>,
    config: &Settings,
    prepared: Prepared,
    mut opts: RunOptions,
    progress: &Progress,
) -> Result<(RunReport, PathBuf)> {
    let started_at = jiff::Timestamp::now();
    let started = Instant::now();
    let run_dir = config.reports_dir.join(&opts.run_id);
    // Everything the run shows or keeps consumes one event stream.
    let mut reporters: Vec<Box<dyn report::events::Reporter>> = vec![
        Box::new(report::events::Terminal(progress.clone())),
        Box::new(report::events::Files::default()),
        Box::new(report::events::Journal::new(&run_dir)),
    ];
    reporters.append(&mut opts.reporters);
    let events = report::events::Reporters::new(reporters);
    let first = &engines.first().expect("a run has an engine").backend;
    let engine = describe(&engines).await?;
    let images = resolve_images(first, &opts.images).await?;
    write_inputs(&run_dir, &prepared)?;
    let mut lanes = Vec::new();
    let mut preflight_done = None;
    for e in &engines {
        lanes.push(lane(e, &images, &prepared, &opts, &run_dir, &events, &mut preflight_done).await?);
    }
    let slots: Vec<usize> = engines.iter().map(|e| e.slots).collect();
    let lanes = Arc::new(placement::Lanes::new(lanes, &slots));
    events
        .emit_or_warn(report::events::RunEvent::RunStarted {
            run_id: &opts.run_id,
            cases: prepared.cases.len(),
            images: &opts.images,
            image_ids: images.iter().map(|(_, i)| i.id.clone()).collect(),
            jobs: opts.jobs,
            partition: opts.partition.map(|p| p.to_string()),
        })
        .await;
    let todo: Vec<Case> = prepared
        .cases
        .iter()
        .filter(|c| !opts.judged.iter().any(|j| j.id == c.id))
        .cloned()
        .collect();
    let outcome = run_all(&lanes, &todo, opts.rerun_failed, progress, &events).await;
    // Cleanup runs on every path out of the pool, before anything can return early.
    for lane in &lanes.lanes {
        clean_up(&lane.backend, &lane.cx, matches!(outcome, Err(LabError::Interrupted))).await;
    }
    let mut cases = outcome?;
    cases.append(&mut opts.judged);
    cases.sort_by_key(|c| prepared.cases.iter().position(|p| p.id == c.id));
    let report = RunReport {
        schema_version: report::SCHEMA_VERSION,
        run_id: opts.run_id.clone(),
        lab_version: env!("CARGO_PKG_VERSION").into(),
        started_at: started_at.to_string(),
        finished_at: jiff::Timestamp::now().to_string(),
        duration_ms: started.elapsed().as_millis() as u64,
        engine,
        jobs: opts.jobs,
        partition: opts.partition.map(|p| p.to_string()),
        ..RunReport::of(images, &prepared, cases)
    };
    events
        .emit(report::events::RunEvent::RunFinished {
            report: &report,
            run_dir: &run_dir,
        })
        .await?;
    Ok((report, run_dir))
}

impl RunReport {
    /// What a run's report says of its inputs and cases (the caller adds when and where).
    fn of(images: Vec<(String, crate::engine::ImageInfo)>, prepared: &Prepared, cases: Vec<CaseReport>) -> RunReport {
        let summary = Summary::of(&cases);
        let image_refs: Vec<ImageRef> = images
            .into_iter()
            .map(|(reference, info)| ImageRef {
                reference,
                id: info.id,
                labels: info.labels,
            })
            .collect();
        RunReport {
            schema_version: report::SCHEMA_VERSION,
            run_id: String::new(),
            lab_version: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
            duration_ms: 0,
            engine: String::new(),
            image: image_refs[0].clone(),
            matrix: cases.iter().map(report::MatrixRow::of).collect(),
            images: image_refs,
            jobs: 0,
            partition: None,
            suites: prepared
                .suites
                .iter()
                .map(|s| SuiteRef {
                    name: s.name.clone(),
                    file: s.file.clone(),
                    digest: s.digest.clone(),
                })
                .collect(),
            repos: prepared
                .repos
                .iter()
                .map(|(id, r)| {
                    let (test, ci) = prepared.repo_commands.get(id).cloned().unwrap_or_default();
                    RepoRef {
                        id: id.clone(),
                        digest: r.digest.clone(),
                        test,
                        ci,
                        vars: prepared.repo_vars.get(id).cloned().unwrap_or_default(),
                    }
                })
                .collect(),
            status: summary.status(),
            summary,
            cases,
        }
    }
}

/// Each image the run was given, as the engine knows it; a missing one says how to get it.
async fn resolve_images<B: Backend>(
    backend: &B,
    references: &[String],
) -> Result<Vec<(String, crate::engine::ImageInfo)>> {
    let mut images = Vec::new();
    for reference in references {
        let info = backend.image(reference).await?.ok_or_else(|| LabError::ImageMissing {
            image: reference.clone(),
            hint: if reference.starts_with(crate::images::BASE_REPO) {
                "build it with `canary images base` (or `just demo`, which does)".into()
            } else {
                "check `docker images`, or build it with `canary images build --provider ...`".into()
            },
        })?;
        images.push((reference.clone(), info));
    }
    Ok(images)
}

/// The image each case runs in: the run's image with the in-container executor when it can.
async fn case_images<B: Backend>(
    backend: &B,
    images: &[(String, crate::engine::ImageInfo)],
    events: &report::events::Reporters,
) -> Result<Vec<case::CaseImage>> {
    let mut out = Vec::new();
    for (reference, info) in images {
        let prepared_image = backend.prepare_image(&info.id).await?;
        if let Some(text) = &prepared_image.note {
            note(events, format!("note: {text}")).await;
        }
        out.push(case::CaseImage {
            reference: reference.clone(),
            id: prepared_image.id,
            executor: prepared_image.executor,
            labels: info.labels.clone(),
        });
    }
    Ok(out)
}

/// Whether an image carries the lab's own runner (not one taken from a user's image).
fn carries_runner(image: &case::CaseImage) -> bool {
    crate::builds::BuildManifest::from_labels(&image.labels).is_some_and(|m| {
        m.components
            .iter()
            .any(|c| c.name == crate::builds::RUNNER && !c.from_image())
    })
}

/// The run's private network and what answers on it.
struct Services {
    network: Option<String>,
    /// The lab DNS responder's address.
    dns: Option<String>,
    /// The lab forge's container.
    forge: Option<String>,
}

/// The lab network when a suite asks for it, its DNS responder (outside names fail at once;
/// the responder is the build's own runner, so the bare base image keeps Docker's resolver and
/// its slow failures) and the forge when a suite opens pull requests.
async fn services<B: Backend>(
    backend: &B,
    run_id: &str,
    prepared: &Prepared,
    case_images: &[case::CaseImage],
    events: &report::events::Reporters,
) -> Result<Services> {
    let network = if prepared.suites.iter().any(|s| s.network == Network::Lab) {
        Some(backend.create_network(run_id).await?)
    } else {
        None
    };
    let dns = match &network {
        Some(net) if carries_runner(&case_images[0]) => {
            match dns::start(backend, run_id, net, &case_images[0].id).await {
                Ok(ip) => Some(ip),
                Err(e) => {
                    note(
                        events,
                        format!("lab DNS not started ({e}): outside names resolve slowly"),
                    )
                    .await;
                    None
                }
            }
        }
        _ => None,
    };
    let opens_prs = prepared
        .suites
        .iter()
        .any(|s| s.steps.iter().any(|st| matches!(st.action, StepAction::DraftPr(_))));
    let forge = match (&network, opens_prs) {
        (Some(net), true) => {
            let t = Instant::now();
            // A forge that cannot start leaves the network behind: the run's cleanup takes it.
            match forge::start(backend, run_id, net, &case_images[0].id).await {
                Ok(id) => {
                    let text = format!("lab forge up at {} ({} ms)", forge::URL, t.elapsed().as_millis());
                    note(events, text).await;
                    Some(id)
                }
                Err(e) => {
                    let _ = backend.gc(GcScope::Run(run_id.to_string())).await;
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    Ok(Services { network, dns, forge })
}

/// Before any case: each runner image's CLIs against the flags the runner passes them, `--jobs`
/// images at a time (a matrix has one image per upstream version); notes in image order.
async fn preflight<B: Backend>(
    backend: &B,
    opts: &RunOptions,
    prepared: &Prepared,
    case_images: &[case::CaseImage],
    events: &report::events::Reporters,
) -> BTreeMap<(usize, Provider), crate::runner::inventory::Preflight> {
    let mut wanted = Vec::new();
    for (index, image) in case_images.iter().enumerate() {
        let providers: std::collections::BTreeSet<Provider> = prepared
            .cases
            .iter()
            .filter(|c| c.image == index)
            .filter_map(|c| c.provider)
            .collect();
        if carries_runner(image) && !providers.is_empty() {
            wanted.push((index, image, providers.into_iter().collect::<Vec<Provider>>()));
        }
    }
    let mut checked: Vec<_> = {
        use futures_util::StreamExt;
        let run_id = &opts.run_id;
        futures_util::stream::iter(wanted)
            .map(|(index, image, providers)| async move {
                let t = Instant::now();
                let (found, notes) = drift::preflight(backend, run_id, index, image, &providers).await;
                (index, found, notes, t.elapsed())
            })
            .buffer_unordered(opts.jobs.max(1))
            .collect()
            .await
    };
    checked.sort_by_key(|c| c.0);
    let mut out = BTreeMap::new();
    for (index, found, notes, took) in checked {
        for n in notes {
            note(events, format!("note: {n}")).await;
        }
        for (p, pf) in found {
            let said = pf
                .drift_line()
                .unwrap_or_else(|| "every flag the runner passes is listed".into());
            note(
                events,
                format!("pre-flight {} {}: {said} ({} ms)", p, pf.version, took.as_millis()),
            )
            .await;
            out.insert((index, p), pf);
        }
    }
    out
}

/// Removes what the run created (containers being removed, then everything labelled with the
/// run). After an interrupt, sweeps again a second apart until a pass finds nothing: a container
/// create already sent to the engine completes there although the lab stopped waiting for it.
async fn clean_up<B: Backend>(backend: &B, cx: &CaseContext, interrupted: bool) {
    let removals = std::mem::take(&mut *cx.removals.lock().expect("removals lock"));
    for r in removals {
        let _ = r.await;
    }
    if let Err(e) = backend.gc(GcScope::Run(cx.run_id.clone())).await {
        let text = format!(
            "warning: cleanup of run {} failed: {e}; `canary gc` will retry",
            cx.run_id
        );
        note(&cx.events, text).await;
    }
    if interrupted {
        for _ in 0..5 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            match backend.gc(GcScope::Run(cx.run_id.clone())).await {
                Ok(r) if r.containers.is_empty() && r.networks.is_empty() => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

/// Runs every case, then reruns the ones that did not pass, up to `reruns` more times.
async fn run_all<B: Backend + Clone>(
    lanes: &Arc<placement::Lanes<B>>,
    cases: &[Case],
    reruns: u32,
    progress: &Progress,
    events: &report::events::Reporters,
) -> Result<Vec<CaseReport>> {
    let mut reports = run_pool(lanes, cases, 1, progress, events).await?;
    for attempt in 2..=reruns + 1 {
        let again: Vec<usize> = (0..reports.len())
            .filter(|&i| reports[i].status != CaseStatus::Passed)
            .collect();
        if again.is_empty() {
            break;
        }
        events
            .emit_or_warn(report::events::RunEvent::Rerunning {
                cases: again.len(),
                attempt,
            })
            .await;
        let subset: Vec<Case> = again.iter().map(|&i| cases[i].clone()).collect();
        let rerun = run_pool(lanes, &subset, attempt, progress, events).await?;
        for (i, mut r) in again.into_iter().zip(rerun) {
            if r.status == CaseStatus::Passed {
                r.status = CaseStatus::Flaky;
            }
            reports[i] = r;
        }
    }
    Ok(reports)
}

async fn run_pool<B: Backend + Clone>(
    lanes: &Arc<placement::Lanes<B>>,
    cases: &[Case],
    attempt: u32,
    progress: &Progress,
    events: &report::events::Reporters,
) -> Result<Vec<CaseReport>> {
    let bar = progress.bar(cases.len() as u64, "cases");
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = cases.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, case) in cases.iter().cloned().enumerate() {
        let (lanes, bar, done, events) = (lanes.clone(), bar.clone(), done.clone(), events.clone());
        tasks.spawn(async move {
            let r = lanes.run_one(&case, attempt, &bar).await?;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            bar.inc(1);
            events
                .emit_or_warn(report::events::RunEvent::CaseFinished {
                    case: &r,
                    done: n,
                    total,
                })
                .await;
            Some((index, r))
        });
    }
    let mut results: Vec<Option<CaseReport>> = vec![None; cases.len()];
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                None => break,
                Some(Ok(Some((i, r)))) => results[i] = Some(r),
                // No engine was left to run the case: it stands as the lab's error below.
                Some(Ok(None)) => {}
                // A panic inside one case costs that case, not the run.
                Some(Err(e)) => tracing::error!("a case task failed: {e}"),
            },
            _ = &mut interrupted => {
                tasks.abort_all();
                // Let aborted cases unwind so no container create is still in flight when the
                // caller sweeps the run's label.
                while tasks.join_next().await.is_some() {}
                bar.abandon();
                return Err(LabError::Interrupted);
            }
        }
    }
    bar.finish_and_clear();
    let cx = &lanes.lanes[0].cx;
    Ok(results
        .into_iter()
        .zip(cases)
        .map(|(r, c)| r.unwrap_or_else(|| crashed(cx, c, attempt)))
        .collect())
}

/// One engine made ready for the run's cases: the run's images checked there by id, leftovers
/// of crashed runs removed, its case images, services and the pre-flight (asked of the first
/// engine, shared with the others).
async fn lane<B: Backend + Clone>(
    e: &placement::Engine<B>,
    images: &[(String, crate::engine::ImageInfo)],
    prepared: &Prepared,
    opts: &RunOptions,
    run_dir: &std::path::Path,
    events: &report::events::Reporters,
    preflight_done: &mut Option<BTreeMap<(usize, Provider), crate::runner::inventory::Preflight>>,
) -> Result<placement::Lane<B>> {
    // The same images on every engine, by id: a case judges the build, wherever it runs.
    let references: Vec<String> = images.iter().map(|(r, _)| r.clone()).collect();
    for ((reference, info), (_, theirs)) in images.iter().zip(resolve_images(&e.backend, &references).await?) {
        if theirs.id != info.id {
            return Err(LabError::usage(
                format!(
                    "engine {} has {reference} as {}, not {}",
                    e.name.as_deref().unwrap_or("?"),
                    short_id(&theirs.id),
                    short_id(&info.id)
                ),
                "every engine of a run must hold the same build: pull it by digest (`canary images pull`)",
            ));
        }
    }
    // Leftovers of crashed runs go first, so a lab never accumulates them.
    gc_orphans(&e.backend, events).await;
    let case_images = case_images(&e.backend, images, events).await?;
    let services = services(&e.backend, &opts.run_id, prepared, &case_images, events).await?;
    let preflight = match preflight_done {
        Some(p) => p.clone(),
        None => preflight_done
            .insert(preflight(&e.backend, opts, prepared, &case_images, events).await)
            .clone(),
    };
    let cx = Arc::new(CaseContext {
        run_id: opts.run_id.clone(),
        run_dir: run_dir.to_path_buf(),
        images: case_images,
        network: services.network,
        dns: services.dns,
        forge: services.forge,
        repo_tars: prepared
            .repos
            .iter()
            .map(|(k, r)| (k.clone(), r.upload_tar.clone()))
            .collect(),
        repo_commands: prepared.repo_commands.clone(),
        keep: opts.keep,
        repro_prefix: opts.repro_prefix.clone(),
        removals: Default::default(),
        events: events.clone(),
        preflight,
    });
    Ok(placement::Lane::new(e.name.clone(), e.backend.clone(), cx, e.slots))
}

/// What the report says ran the cases: the engine, or each engine by name.
async fn describe<B: Backend>(engines: &[placement::Engine<B>]) -> Result<String> {
    if let [one] = engines {
        return one.backend.describe().await;
    }
    let mut parts = Vec::new();
    for e in engines {
        parts.push(format!(
            "{}: {} ({} slots)",
            e.name.as_deref().unwrap_or("?"),
            e.backend.describe().await?,
            e.slots
        ));
    }
    Ok(parts.join("; "))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The report of a case whose task died: an error, never a pass.
fn crashed(cx: &CaseContext, c: &Case, attempt: u32) -> CaseReport {
    CaseReport {
        attempts: attempt,
        image: cx.images[c.image].reference.clone(),
        runtime: cx.images[c.image].runtime(c.provider),
        provider: c.provider,
        id: c.id.clone(),
        suite: c.suite.name.clone(),
        repo: c.repo.clone(),
        status: CaseStatus::Error,
        duration_ms: 0,
        timings: CaseTimings::default(),
        steps: Vec::new(),
        artifacts: format!("cases/{}", c.id),
        repro: format!("{} repro {}/{}", cx.repro_prefix, cx.run_id, c.id),
        error: Some("the lab crashed while running this case, or no engine was left to run it".into()),
        drift: None,
        inventory: None,
        engine: None,
    }
}

/// Keeps the exact inputs beside the results: what `canary repro` runs again.
fn write_inputs(run_dir: &std::path::Path, prepared: &Prepared) -> Result<()> {
    for s in &prepared.suites {
        crate::fsutil::write_atomic(
            &run_dir.join("suites").join(format!("{}.yaml", s.name)),
            s.source.as_bytes(),
        )?;
    }
    for (id, r) in &prepared.repos {
        crate::fsutil::write_atomic(&run_dir.join("repos").join(format!("{id}.tar")), &r.content_tar)?;
    }
    Ok(())
}
