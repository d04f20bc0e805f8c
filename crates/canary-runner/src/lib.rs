//! The runner that ships inside every runner build and on customers' hosts: the `canary-runner`
//! binary (sessions through each CLI's adapter, the approval proxy, pull requests, agent mode,
//! the lab DNS, the telemetry spool, the customer-host update manager) and `canary-exec`, the
//! executor that runs as PID 1 in a case container. It depends on `canary-contract` and on no
//! store, container engine, GitHub client or chart library: what customers run changes only when
//! the runner does.

pub mod archive;
pub mod bounds;
pub mod compat;
pub mod dns;
pub mod error;
pub mod forge;
pub mod fsutil;
pub mod local;
pub mod names;
pub mod runner;
pub mod spool;
pub mod stub;
pub mod update;
pub mod wheel;
pub mod yaml;

pub use canary_contract::text;

/// Installs the process's TLS crypto provider (ring); every HTTPS client is built after this.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub use canary_contract::Provider;
