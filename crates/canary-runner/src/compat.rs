//! Bundle ↔ runtime compatibility (ADR 0008): a bundle's manifest declares which runtime
//! versions it runs on; the lab answers compatible / compatible_with_warnings / blocked.
//!
//! Fail-closed: compatibility is never inferred. A manifest without
//! `runtime_compatibility.min_version` is rejected as bad input, not treated as "anything goes".

use crate::error::{LabError, Result, SourceError};
use miette::NamedSource;
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::path::Path;

/// The part of a bundle manifest the lab reads; every other key belongs to the bundle.
#[derive(Debug, Deserialize)]
struct RawManifest {
    #[serde(default)]
    runtime_compatibility: Option<Spanned<RawCompat>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompat {
    #[serde(default)]
    min_version: Option<Spanned<String>>,
    #[serde(default)]
    max_version: Option<Spanned<String>>,
    #[serde(default)]
    contracts_major: Option<Spanned<u64>>,
    #[serde(default)]
    tested_versions: Vec<String>,
}

/// A version bound: numbers, or `x` / `*` for "any" (`1.4.x`, `1.x`). Missing parts are "any".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bound {
    pub text: String,
    parts: [Option<u64>; 3],
}

impl Bound {
    fn parse(text: &str) -> std::result::Result<Bound, String> {
        let t = text.trim().trim_start_matches('v');
        let pieces: Vec<&str> = t.split('.').collect();
        if pieces.is_empty() || pieces.len() > 3 || pieces.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "`{text}` is not a version: write MAJOR.MINOR.PATCH, with `x` for any (`1.4.x`)"
            ));
        }
        let mut parts = [None; 3];
        let mut wild = false;
        for (i, p) in pieces.iter().enumerate() {
            if matches!(*p, "x" | "X" | "*") {
                wild = true;
            } else if wild {
                return Err(format!(
                    "`{text}`: after a wildcard every part must be one (`1.x.x`, not `1.x.3`)"
                ));
            } else {
                parts[i] = Some(
                    p.parse::<u64>()
                        .map_err(|_| format!("`{text}`: `{p}` is not a number or `x`"))?,
                );
            }
        }
        Ok(Bound {
            text: text.trim().to_string(),
            parts,
        })
    }

    /// `v` is at or above the lowest version the bound allows.
    fn admits_from(&self, v: &Version) -> bool {
        let low = Version::new(
            self.parts[0].unwrap_or(0),
            self.parts[1].unwrap_or(0),
            self.parts[2].unwrap_or(0),
        );
        // A pre-release of the minimum itself (1.0.0-rc.1 against 1.0.0) is older than it.
        *v >= low
    }

    /// `v` is at or below the highest version the bound allows (wildcards open their part).
    fn admits_to(&self, v: &Version) -> bool {
        let actual = [v.major, v.minor, v.patch];
        for (bound, got) in self.parts.iter().zip(actual) {
            match bound {
                None => return true,
                Some(b) if got < *b => return true,
                Some(b) if got > *b => return false,
                Some(_) => {}
            }
        }
        true
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Declaration {
    pub file: String,
    pub min_version: Bound,
    pub max_version: Option<Bound>,
    pub contracts_major: Option<u64>,
    pub tested_versions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    Compatible,
    CompatibleWithWarnings,
    Blocked,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompatResult {
    pub manifest: String,
    pub runtime: String,
    pub verdict: Compatibility,
    /// Why it is blocked (empty unless blocked).
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
}

/// Reads a bundle manifest's `runtime_compatibility` declaration.
pub fn load(path: &Path) -> Result<Declaration> {
    let text = crate::fsutil::read_input(path, "bundle manifest", crate::fsutil::MAX_INPUT)?;
    parse(&path.display().to_string(), &text)
}

pub fn parse(file: &str, text: &str) -> Result<Declaration> {
    let fields = "runtime_compatibility takes min_version, max_version, contracts_major, tested_versions";
    let raw: RawManifest = crate::yaml::parse(file, text, "bundle manifest", fields)?;
    let located = |loc: &serde_saphyr::Location, message: String, help: &str| -> LabError {
        SourceError {
            message,
            src: NamedSource::new(file, text.to_string()),
            span: crate::yaml::span(text, loc),
            label: "here".into(),
            help: Some(help.into()),
            related: None,
            related_label: String::new(),
        }
        .into()
    };
    let Some(compat) = raw.runtime_compatibility else {
        return Err(LabError::usage(
            format!("{file}: no `runtime_compatibility` declaration"),
            "compatibility is never inferred: declare `runtime_compatibility: {min_version: \"X.Y.Z\"}` in the manifest",
        ));
    };
    let Some(min) = compat.value.min_version else {
        return Err(located(
            &compat.referenced,
            "`runtime_compatibility` has no `min_version`".into(),
            "declare the oldest runtime the bundle runs on",
        ));
    };
    let min_version = Bound::parse(&min.value).map_err(|m| located(&min.referenced, m, "e.g. `1.2.0`"))?;
    let max_version = match compat.value.max_version {
        None => None,
        Some(m) => Some(Bound::parse(&m.value).map_err(|msg| located(&m.referenced, msg, "e.g. `1.4.x` or `1.9.3`"))?),
    };
    Ok(Declaration {
        file: file.to_string(),
        min_version,
        max_version,
        contracts_major: compat.value.contracts_major.map(|c| c.value),
        tested_versions: compat.value.tested_versions,
    })
}

/// Parses a runtime version (SemVer), e.g. from `--runtime` or a build's runner version.
pub fn runtime_version(text: &str) -> Result<Version> {
    Version::parse(text.trim().trim_start_matches('v')).map_err(|e| {
        LabError::usage(
            format!("`{text}` is not a SemVer runtime version: {e}"),
            "write MAJOR.MINOR.PATCH, e.g. `1.4.2`",
        )
    })
}

impl CompatResult {
    /// The verdict line, then each reason it is blocked and each warning.
    pub fn lines(&self) -> Vec<String> {
        let verdict = serde_json::to_value(self.verdict).expect("serializes");
        let mut out = vec![format!(
            "{}: {} with runtime {}",
            crate::text::clean(&self.manifest),
            verdict.as_str().unwrap_or(""),
            self.runtime
        )];
        out.extend(self.reasons.iter().map(|why| format!("  ✗ {why}")));
        out.extend(self.warnings.iter().map(|w| format!("  ! {w}")));
        out
    }
}

pub fn check(decl: &Declaration, runtime: &Version) -> CompatResult {
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    if !decl.min_version.admits_from(runtime) {
        reasons.push(format!(
            "runtime {runtime} is older than min_version {}",
            decl.min_version.text
        ));
    }
    match &decl.max_version {
        Some(max) if !max.admits_to(runtime) => {
            reasons.push(format!("runtime {runtime} is newer than max_version {}", max.text))
        }
        Some(_) => {}
        None => warnings.push("no max_version: the bundle does not say which future runtimes it supports".into()),
    }
    match decl.contracts_major {
        Some(m) if m != runtime.major => reasons.push(format!(
            "contracts_major {m} does not match the runtime's contracts major {}",
            runtime.major
        )),
        Some(_) => {}
        None => warnings.push("no contracts_major: contract breaks between runtime majors are not guarded".into()),
    }
    if !runtime.pre.is_empty() {
        warnings.push(format!("runtime {runtime} is a pre-release"));
    }
    if !decl.tested_versions.is_empty()
        && !decl
            .tested_versions
            .iter()
            .any(|t| t.trim_start_matches('v') == runtime.to_string())
    {
        warnings.push(format!("runtime {runtime} is not among tested_versions"));
    }
    let verdict = if !reasons.is_empty() {
        Compatibility::Blocked
    } else if warnings.is_empty() {
        Compatibility::Compatible
    } else {
        Compatibility::CompatibleWithWarnings
    };
    CompatResult {
        manifest: decl.file.clone(),
        runtime: runtime.to_string(),
        verdict,
        reasons,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(yaml: &str) -> Declaration {
        parse("m.yaml", yaml).expect("valid manifest")
    }

    fn v(s: &str) -> Version {
        runtime_version(s).unwrap()
    }

    #[test]
    fn wildcard_max_admits_its_whole_minor() {
        let d =
            decl("runtime_compatibility:\n  min_version: \"1.2.0\"\n  max_version: \"1.4.x\"\n  contracts_major: 1\n");
        assert_eq!(check(&d, &v("1.4.9")).verdict, Compatibility::Compatible);
        assert_eq!(check(&d, &v("1.2.0")).verdict, Compatibility::Compatible);
        let newer = check(&d, &v("1.5.0"));
        assert_eq!(newer.verdict, Compatibility::Blocked);
        assert_eq!(newer.reasons, vec!["runtime 1.5.0 is newer than max_version 1.4.x"]);
        assert_eq!(
            check(&d, &v("1.1.9")).reasons,
            vec!["runtime 1.1.9 is older than min_version 1.2.0"]
        );
    }

    #[test]
    fn major_wildcards_and_contracts() {
        let d = decl("runtime_compatibility:\n  min_version: 1.0.0\n  max_version: 1.x.x\n  contracts_major: 1\n");
        assert_eq!(check(&d, &v("1.99.3")).verdict, Compatibility::Compatible);
        let r = check(&d, &v("2.0.0"));
        assert_eq!(r.verdict, Compatibility::Blocked);
        assert_eq!(r.reasons.len(), 2, "{:?}", r.reasons);
    }

    #[test]
    fn missing_optional_fields_warn() {
        let d = decl("name: bundle\nruntime_compatibility:\n  min_version: 1.0.0\n");
        let r = check(&d, &v("1.3.0-beta.1"));
        assert_eq!(r.verdict, Compatibility::CompatibleWithWarnings);
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
    }

    #[test]
    fn compatibility_is_never_inferred() {
        let e = parse("m.yaml", "name: bundle\n").unwrap_err();
        assert!(e.to_string().contains("no `runtime_compatibility` declaration"));
        let e = parse("m.yaml", "runtime_compatibility:\n  max_version: 1.x\n").unwrap_err();
        assert!(e.to_string().contains("no `min_version`"), "{e}");
    }

    #[test]
    fn bad_versions_point_at_the_field() {
        let e = parse(
            "m.yaml",
            "runtime_compatibility:\n  min_version: 1.0.0\n  max_version: 1.x.3\n",
        )
        .unwrap_err();
        match e {
            LabError::Source(s) => assert_eq!(s.location(), "m.yaml:3:16"),
            other => panic!("{other}"),
        }
        assert!(runtime_version("1.2").is_err());
    }
}
