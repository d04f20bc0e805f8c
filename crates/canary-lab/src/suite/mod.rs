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
