//! Canary suites: the YAML format (`raw`), its validation into a runnable plan (`compile`), and
//! the JSON Schema editors and CI use.
//!
//! Parse, then compile: the raw types only know YAML shapes; everything that can be wrong in a
//! well-formed file (an unknown repo, a bad regex, a duplicate step name, an unparsable duration)
//! is found by `compile`, reported at the exact line and column, before any container starts.

mod compile;
pub mod raw;
pub mod vars;

pub use compile::*;

/// The JSON Schema of the suite format, as checked in at `suites/schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(raw::RawSuite);
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serializes");
    text.push('\n');
    text
}

/// A suite file that compiled, and as it would run on each of its repos.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Checked {
    pub file: std::path::PathBuf,
    pub name: String,
    pub steps: usize,
    pub repos: Vec<String>,
}

/// Checks suite files as `canary suites check` does: each compiled, then specialised for each
/// of its repos (variables and repo commands checked). The first error ends the check.
pub fn check_files(
    files: &[std::path::PathBuf],
    catalog: &crate::repos::Catalog,
) -> crate::error::Result<Vec<Checked>> {
    let ids = catalog.ids();
    let mut out = Vec::new();
    for f in files {
        let s = load(f, &ids)?;
        for repo in &s.repos {
            s.for_repo_checked(catalog.get(repo)?, &ids)?;
        }
        out.push(Checked {
            file: f.clone(),
            name: s.name.clone(),
            steps: s.steps.len(),
            repos: s.repos.clone(),
        });
    }
    Ok(out)
}
