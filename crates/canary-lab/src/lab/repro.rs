//! `canary repro RUN/CASE`: one case of an earlier run, again, with the same image (by content
//! id), the same repo content (the run's copy, checked against its digest) and the same suite
//! (the run's copy, compiled against the repos it names).

use super::Prepared;
use super::plan::Case;
use crate::Settings;
use crate::error::{LabError, Result};
use crate::report::{CaseReport, RunReport};
use crate::repos::Content;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a repro runs, and what it came from.
pub struct Repro {
    pub run_id: String,
    /// The case as the earlier run reported it.
    pub case: CaseReport,
    /// The image it ran on, by content id.
    pub image_id: String,
    pub repo_digest: String,
    /// The one case, ready for [`super::run`].
    pub prepared: Prepared,
    /// The earlier run's report.
    pub old: RunReport,
}

/// Reads the run's report and its copies of the suite and repo, and prepares the one case.
pub fn load(config: &Settings, target: &str) -> Result<Repro> {
    let (run_id, case_id) = parse_target(target)?;
    let run_dir = config.reports_dir.join(run_id);
    let old = read_report(&run_dir)?;
    let case = old.case(case_id).cloned().ok_or_else(|| {
        LabError::usage(
            format!("run {run_id} has no case `{case_id}`"),
            format!(
                "cases: {}",
                old.cases.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let suite_ref = old
        .suites
        .iter()
        .find(|s| s.name == case.suite)
        .ok_or_else(|| LabError::usage("report lists no such suite", "the report is damaged"))?;
    let repo_ref = old
        .repos
        .iter()
        .find(|r| r.id == case.repo)
        .ok_or_else(|| LabError::usage("report lists no such repo", "the report is damaged"))?;

    // The case's own image (a run may have several), by content id.
    let image_id = old
        .images
        .iter()
        .find(|i| i.reference == case.image)
        .unwrap_or(&old.image)
        .id
        .clone();
    let suite_path = run_dir.join("suites").join(format!("{}.yaml", suite_ref.name));
    let suite = crate::suite::load_snapshot(&suite_path)?;
    if suite.digest != suite_ref.digest {
        return Err(LabError::usage(
            format!("{} changed since the run", suite_path.display()),
            "repro runs the suite exactly as it ran; restore the file",
        ));
    }
    let tar_path = run_dir.join("repos").join(format!("{}.tar", repo_ref.id));
    let tar = std::fs::read(&tar_path).map_err(|e| LabError::read(&tar_path, e))?;
    let with = crate::repos::RunWith {
        test: &repo_ref.test,
        ci: repo_ref.ci.as_deref(),
        vars: &repo_ref.vars,
    };
    let content = Content::from_tar(&tar, with).map_err(|e| LabError::read(&tar_path, e))?;
    if content.digest != repo_ref.digest {
        return Err(LabError::RepoPinMismatch {
            id: repo_ref.id.clone(),
            pinned: repo_ref.digest.clone(),
            actual: content.digest,
        });
    }
    let suite = Arc::new(suite.for_repo(&repo_ref.id, &repo_ref.vars, &suite.repos)?);
    let provider = case.provider;
    let prepared = Prepared {
        cases: vec![Case {
            id: case.id.clone(),
            suite: suite.clone(),
            repo: repo_ref.id.clone(),
            image: 0,
            provider,
        }],
        suites: vec![suite],
        repos: BTreeMap::from([(repo_ref.id.clone(), super::RepoUpload::new(&content)?)]),
        repo_commands: BTreeMap::from([(repo_ref.id.clone(), (repo_ref.test.clone(), repo_ref.ci.clone()))]),
        repo_vars: BTreeMap::from([(repo_ref.id.clone(), repo_ref.vars.clone())]),
    };
    Ok(Repro {
        run_id: run_id.to_string(),
        case,
        image_id,
        repo_digest: repo_ref.digest.clone(),
        prepared,
        old,
    })
}

/// `<run-id>/<case-id>`: two names, never paths (a run id is a folder under the reports folder).
fn parse_target(target: &str) -> Result<(&str, &str)> {
    let (run_id, case_id) = target.split_once('/').ok_or_else(|| {
        LabError::usage(
            format!("invalid case `{}`", crate::text::clean(target)),
            "write `<run-id>/<case-id>`, as printed by `canary run`",
        )
    })?;
    // Both halves are names, never paths: a run id is a folder name under the reports folder.
    let is_name = |s: &str| canary_runner::names::is_id(s) && !s.starts_with('.');
    if !is_name(run_id) || !is_name(case_id) {
        return Err(LabError::usage(
            format!("invalid case `{}`", crate::text::clean(target)),
            "write `<run-id>/<case-id>` as printed by `canary run`: letters, digits, `.`, `_`, `:` and `-`",
        ));
    }
    Ok((run_id, case_id))
}

/// The run's report, as `canary run` wrote it.
fn read_report(run_dir: &std::path::Path) -> Result<RunReport> {
    let report_path = run_dir.join(crate::report::JSON_FILE);
    let text = std::fs::read_to_string(&report_path).map_err(|e| LabError::read(&report_path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        LabError::usage(
            format!("{}: not a run report: {e}", report_path.display()),
            "point at a folder written by `canary run`",
        )
    })
}

/// A repro that ran: its report and folder, and the container it left running (`keep`).
pub struct Rerun {
    pub report: RunReport,
    pub run_dir: std::path::PathBuf,
    pub kept: Option<String>,
}

/// Runs case `target` (`RUN/CASE`) again, alone, on the very image it ran on; `keep` leaves its
/// container running. The image must still be in the engine (see [`image_gone`]).
pub async fn rerun(
    config: &Settings,
    target: &str,
    keep: bool,
    repro_prefix: String,
    progress: &crate::progress::Progress,
) -> Result<Rerun> {
    let r = load(config, target)?;
    let engine = crate::engine::docker::DockerBackend::connect().await?;
    if crate::engine::Backend::image(&engine, &r.image_id).await?.is_none() {
        return Err(image_gone(&r.old, &r.case, &r.image_id));
    }
    progress.line(format!(
        "reproducing {} from run {} (image {}, repo {})",
        r.case.id,
        r.run_id,
        super::short_id(&r.image_id),
        r.repo_digest
    ));
    let run_id = super::new_run_id();
    let opts = super::RunOptions {
        run_id: run_id.clone(),
        images: vec![r.image_id.clone()],
        jobs: 1,
        partition: None,
        keep,
        repro_prefix,
        rerun_failed: 0,
        reporters: Vec::new(),
        judged: Vec::new(),
    };
    let (report, run_dir) = super::run(engine, config, r.prepared, opts, progress).await?;
    Ok(Rerun {
        report,
        run_dir,
        kept: keep.then(|| format!("canary-{run_id}-{}", r.case.id)),
    })
}

/// The error when the image a case ran on has left the engine: repro runs on that image or not
/// at all, since a rebuild is another image. It names the image and, for a runner build, the
/// command that makes its components again.
pub fn image_gone(old: &RunReport, case: &CaseReport, image_id: &str) -> LabError {
    let image = old.images.iter().find(|i| i.id == image_id).unwrap_or(&old.image);
    let rebuild = crate::builds::BuildManifest::from_labels(&image.labels)
        .map(|m| {
            let specs: Vec<String> = m
                .clis()
                .filter_map(crate::builds::spec_of)
                .map(|s| format!("--provider {s}"))
                .collect();
            format!(
                "; `canary images build {}` makes the same components again (a new image: then run the suite on it with `canary run --image`, and compare)",
                specs.join(" ")
            )
        })
        .unwrap_or_default();
    LabError::usage(
        format!(
            "the image case {} ran on is no longer in the engine: {} ({})",
            case.id,
            super::short_id(image_id),
            crate::text::clean(&image.reference)
        ),
        format!("repro runs a case on the very image it ran on; load or pull that image by its digest{rebuild}"),
    )
}

/// How a printed repro line starts: the program as a person starts it again (see [`program`])
/// with the folder flags the run was given, each path quoted for the shell when it needs to be,
/// so the line runs as printed from where the run ran.
pub fn prefix(config: Option<&std::path::Path>, reports_dir: Option<&std::path::Path>) -> String {
    let mut p = program();
    if let Some(c) = config {
        p.push_str(&format!(" --config {}", shell_word(&c.display().to_string())));
    }
    if let Some(d) = reports_dir {
        p.push_str(&format!(" --reports-dir {}", shell_word(&d.display().to_string())));
    }
    p
}

/// How a person starts this program again from where it ran: `canary` when that is what PATH
/// finds, else the path it was started by (`target/debug/canary` after `./lab demo` on a fresh
/// clone, where nothing put `canary` on PATH).
pub fn program() -> String {
    let me = std::env::current_exe().and_then(|p| p.canonicalize()).ok();
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("canary"))
                .find(|p| p.is_file())
        })
        .and_then(|p| p.canonicalize().ok());
    if me.is_some() && me == on_path {
        return "canary".into();
    }
    match std::env::args_os().next() {
        Some(a) if std::path::Path::new(&a).components().count() > 1 => shell_word(&a.to_string_lossy()),
        _ => me.map_or_else(|| "canary".into(), |p| shell_word(&p.display().to_string())),
    }
}

/// `s` as one shell word: as it is when it holds only characters no shell treats specially,
/// else in single quotes.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':' | '@' | ',' | '='));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn printed_paths_are_one_shell_word_each() {
        use super::shell_word;
        assert_eq!(shell_word("/tmp/reports-1"), "/tmp/reports-1");
        assert_eq!(shell_word("my reports"), "'my reports'");
        assert_eq!(shell_word("it's; rm -rf ~"), "'it'\\''s; rm -rf ~'");
        assert_eq!(shell_word("$(id)"), "'$(id)'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn a_repro_prefix_names_a_program_that_runs_and_its_folders() {
        let p = super::prefix(
            Some(std::path::Path::new("lab config.yaml")),
            Some(std::path::Path::new("/tmp/r")),
        );
        // The test binary is not `canary` on PATH: the line names it by the path it was started by.
        let program = super::program();
        assert_ne!(program, "canary");
        assert!(std::path::Path::new(program.trim_matches('\'')).exists(), "{program}");
        assert_eq!(p, format!("{program} --config 'lab config.yaml' --reports-dir /tmp/r"));
    }

    #[test]
    fn a_repro_target_is_two_names_never_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::Settings {
            reports_dir: dir.path().join("reports"),
            ..Default::default()
        };
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/run.json"), "{}").unwrap();
        for target in [
            "../outside/case",
            "../../etc/passwd",
            "run/../x",
            "./x/case",
            "run",
            "/abs/case",
        ] {
            let e = super::load(&settings, target).err().expect(target).to_string();
            assert!(e.contains("invalid case"), "{target}: {e}");
        }
        // A well-formed target that names no run says it cannot read the report.
        let e = super::load(&settings, "20261206-000000-abcd/demo--python")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("invalid case"), "{e}");
    }
}
