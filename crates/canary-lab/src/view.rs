//! The lab's objects as terminal lines (`canary images`, `gc`, `repos`, `suites check`,
//! `providers fetch`), from the same values `--json` prints. Names that come from files or the
//! engine are cleaned before they show.

use crate::builds::{Build, BuildManifest};
use crate::engine::GcReport;
use crate::engine::docker::ListedImage;
use crate::images::BaseImage;
use crate::providers::Fetched;
use crate::repos::RepoStatus;
use crate::suite::Checked;
use canary_contract::build::short_id;
use canary_contract::text::clean;

pub fn base_image(img: &BaseImage) -> Vec<String> {
    let how = if img.built { "built" } else { "already present" };
    vec![format!("{} {} ({how})", img.reference, img.id)]
}

pub fn build(b: &Build) -> Vec<String> {
    vec![
        format!("{} {}", b.reference, b.id),
        format!("  components: {}", b.manifest.summary()),
        format!(
            "  layers: {} built, {} reused of {}",
            b.layers_built,
            b.layers_reused,
            b.manifest.components.len()
        ),
    ]
}

/// A build pushed to its registry.
pub fn published(p: &crate::distribution::Published) -> Vec<String> {
    vec![
        format!("pushed {} {}", p.reference, p.build.short()),
        format!("  as {}", p.pushed),
        format!(
            "  layers: {} sent, {} already in the registry",
            p.transfer.layers_moved, p.transfer.layers_present
        ),
        format!(
            "  credentials: {}",
            p.credentials
                .as_deref()
                .unwrap_or("none (the registry was asked without any)")
        ),
    ]
}

/// The runner builds in the engine as `--json` lists them.
pub fn builds_json(all: &[(ListedImage, BuildManifest)]) -> Vec<serde_json::Value> {
    all.iter()
        .map(|(i, m)| serde_json::json!({"id": i.id, "tags": i.tags, "created": i.created, "size": i.size, "manifest": m}))
        .collect()
}

/// The runner builds in the engine, one line each.
pub fn builds(all: &[(ListedImage, BuildManifest)]) -> Vec<String> {
    let mut out = vec![format!("{:<34} {:<14} {:<8} COMPONENTS", "BUILD", "ID", "SIZE")];
    for (i, m) in all {
        out.push(format!(
            "{:<34} {:<14} {:<8} {}",
            m.reference(),
            short_id(&i.id),
            format!("{}M", i.size / 1_000_000),
            m.summary()
        ));
    }
    if all.is_empty() {
        out.push("no runner builds yet: `canary images build --provider codex@VERSION`".into());
    }
    out
}

/// `canary engine check`: one line per check, then the verdict.
pub fn conformance(r: &crate::engine::conformance::Conformance) -> Vec<String> {
    let mut out = vec![format!("{} with {}", clean(&r.engine), clean(&r.image))];
    for c in &r.checks {
        out.push(format!(
            "  {} {:<13} {} ({} ms)",
            if c.passed { "ok  " } else { "FAIL" },
            c.name,
            clean(&c.detail),
            c.millis
        ));
    }
    let failed = r.checks.iter().filter(|c| !c.passed).count();
    out.push(if failed == 0 {
        format!("conforms: {} checks passed", r.checks.len())
    } else {
        format!("does not conform: {failed} of {} checks failed", r.checks.len())
    });
    out
}

/// What `canary gc` removed (images only when it was asked to prune them).
pub fn gc(r: &GcReport, images: Option<&[String]>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(images) = images {
        out.extend(images.iter().map(|i| format!("removed image {}", clean(i))));
        out.push(format!("{} images removed", images.len()));
    }
    out.extend(r.containers.iter().map(|c| format!("removed container {}", clean(c))));
    out.extend(r.networks.iter().map(|n| format!("removed network {}", clean(n))));
    out.push(format!(
        "{} containers and {} networks removed; {} belong to live runs or were kept",
        r.containers.len(),
        r.networks.len(),
        r.skipped_live
    ));
    out
}

pub fn repos(all: &[RepoStatus]) -> Vec<String> {
    all.iter()
        .map(|r| format!("{:<12} {:<11} {}  {}", r.id, r.language, r.digest, r.status))
        .collect()
}

pub fn suites(all: &[Checked]) -> Vec<String> {
    all.iter()
        .map(|s| {
            format!(
                "ok {}: suite `{}`, {} steps × {} repos",
                s.file.display(),
                clean(&s.name),
                s.steps,
                s.repos.len()
            )
        })
        .collect()
}

pub fn fetched(f: &Fetched, printed: &str) -> Vec<String> {
    vec![format!(
        "{} {} ({} {}): {}  [{}]",
        f.provider.name(),
        f.cli_version,
        f.package,
        f.package_version,
        f.binary.display(),
        clean(printed)
    )]
}
