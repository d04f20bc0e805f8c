//! `canary watch` as terminal lines, from the report `--json` prints. Upstream metadata is
//! hostile: every version, source and reason is cleaned before it is shown.

use super::{Judged, WatchReport};
use canary_contract::text::clean;

/// What `canary watch` found, per CLI: known-good versions, each source's freshness, newer
/// candidates (the newest ten when nothing is known-good yet) and skipped versions.
pub fn watch(r: &WatchReport) -> Vec<String> {
    let mut out = Vec::new();
    for p in &r.providers {
        let (kg, fresh) = (known_good(p), freshness(p));
        out.push(format!(
            "{} — known-good: {kg}; upstream: {fresh}, {} versions",
            p.provider, p.upstream_versions
        ));
        if p.newer.is_empty() {
            out.push("  no candidate newer than known-good".into());
        }
        let shown = if p.known_good.is_empty() { 10 } else { usize::MAX };
        out.push(format!(
            "  {:<12} {:<8} {:<26} {:<5} SOURCE",
            "VERSION", "CHANNEL", "PUBLISHED", "NEW"
        ));
        for j in p.newer.iter().take(shown) {
            out.push(format!(
                "  {:<12} {:<8} {:<26} {:<5} {}{}",
                clean(if j.release.version.starts_with("sdk-") {
                    "?"
                } else {
                    &j.release.version
                }),
                j.channel.as_deref().unwrap_or("-"),
                clean(j.release.published_at.as_deref().unwrap_or("-")),
                if p.new.contains(&j.release.version) { "new" } else { "" },
                j.release.source,
                clean(&package_note(j))
            ));
        }
        if p.newer.len() > shown {
            out.push(format!(
                "  … and {} older candidates (--json lists all)",
                p.newer.len() - shown
            ));
        }
        for j in p.skipped.iter().take(5) {
            let why = j.skipped.as_deref().unwrap_or("");
            let short_why: String = why.split(". ").next().unwrap_or(why).chars().take(100).collect();
            out.push(format!(
                "  {:<12} skipped: {}",
                clean(&j.release.package_version),
                clean(&short_why)
            ));
        }
        if p.skipped.len() > 5 {
            out.push(format!(
                "  … and {} more skipped (--json has the reasons)",
                p.skipped.len() - 5
            ));
        }
    }
    out.push(format!(
        "{} new version(s){}",
        r.providers.iter().map(|p| p.new.len()).sum::<usize>(),
        if r.recorded > 0 {
            format!(", {} recorded in the registry", r.recorded)
        } else {
            String::new()
        }
    ));
    out
}

/// The CLI's known-good versions, per channel.
fn known_good(p: &super::ProviderWatch) -> String {
    if p.known_good.is_empty() {
        "nothing known-good yet".to_string()
    } else {
        p.known_good
            .iter()
            .map(|(c, v)| format!("{c} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Each upstream source the watch read, and whether it had changed.
fn freshness(p: &super::ProviderWatch) -> String {
    p.freshness
        .iter()
        .map(|(s, f)| {
            format!(
                "{s}{}",
                if *f == super::http::Freshness::NotModified {
                    " (not modified)"
                } else {
                    ""
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn package_note(j: &Judged) -> String {
    if j.release.version == j.release.package_version {
        String::new()
    } else if j.release.version.starts_with("sdk-") {
        format!(
            " ({} {}; bundled version not resolved yet)",
            j.release.package, j.release.package_version
        )
    } else {
        format!(" ({} {})", j.release.package, j.release.package_version)
    }
}
