//! What every side of Canary Lab shares and nothing else: the Runner Contract's events, the
//! agent CLIs (`Provider`), release channels (`Channel`), a build's components, the executor's wire protocol, terminal-safe text and the time format.
//! It depends on serde and its friends only, so the runner that ships inside every runner build,
//! the lab and the control plane can all depend on it without pulling in each other.

pub mod build;
pub mod build_id;
pub mod channel;
pub mod events;
pub mod exec;
pub mod oci;
pub mod provider;
pub mod text;
mod text_value;
pub mod time;
pub mod verdict;

pub use build_id::BuildId;
pub use channel::Channel;
pub use provider::Provider;
pub use verdict::Verdict;
