//! The fleet's rules, pure: what a runner's telemetry batch may say and how sessions sum up
//! (`telemetry`), who a bearer token speaks for (`tokens`), and which build a session runs and
//! whether a rollout step may advance (`rollout`), and the seedable generator simulations use (`rng`). No I/O: the registry stores these values and
//! the control plane applies the rules, so each rule is tested without a database or a fleet.

pub use canary_contract::text;
pub use canary_runner::error;

pub mod otlp;
pub mod rng;
pub mod rollout;
pub mod telemetry;
pub mod tokens;
