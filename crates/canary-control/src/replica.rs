//! Replicas of `canary serve` on one registry. Any replica answers runners, the dashboard and
//! telemetry; one at a time holds the controller lease and does what only one may do: the
//! rollout controller and train, alert deliveries, update publication and pruning. It renews the
//! lease every pass; when it dies, another takes the lease over once it expires. Transitions are
//! guarded by each rollout's revision, so a replica that lost its lease mid-pass changes nothing.

use crate::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The controller's lease, by name in the registry.
pub const CONTROLLER: &str = "controller";

/// This process as one replica.
#[derive(Debug)]
pub struct Replica {
    /// `<host>-<pid>-<random>`: unique among the replicas of a registry.
    pub id: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// Take the lease whoever holds it: a SQLite registry's one `canary serve`, which holds the
    /// registry file's lock, so any earlier holder is gone.
    take_over: bool,
    leading: AtomicBool,
}

impl Default for Replica {
    /// A lone replica: it takes the lease over at once.
    fn default() -> Replica {
        Replica::new(Duration::from_secs(15), true)
    }
}

fn host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .take(48)
        .collect();
    if name.is_empty() { "host".into() } else { name }
}

impl Replica {
    pub fn new(lease: Duration, take_over: bool) -> Replica {
        let mut bytes = [0u8; 3];
        getrandom::fill(&mut bytes).expect("the OS random source");
        Replica {
            id: format!("{}-{}-{}", host(), std::process::id(), hex::encode(bytes)),
            lease,
            take_over,
            leading: AtomicBool::new(false),
        }
    }

    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Renews or takes the controller lease; whether this replica leads now. A registry that
    /// cannot answer means not leading: no work is done on a lease that may have passed on.
    pub async fn renew(&self, reg: &Registry) -> bool {
        let now = jiff::Timestamp::now();
        let (leads, holder) = match reg
            .hold_lease(CONTROLLER, &self.id, (now, self.lease), self.take_over)
            .await
        {
            Ok(l) => (l.held_by(&self.id), l.holder),
            Err(e) => (false, format!("unknown ({e})")),
        };
        let was = self.leading.swap(leads, Ordering::Relaxed);
        if leads != was {
            if leads {
                eprintln!(
                    "canary serve: replica {} leads the rollout controller (lease {}s)",
                    self.id,
                    self.lease.as_secs()
                );
            } else {
                eprintln!(
                    "canary serve: replica {} does not lead the rollout controller: {} does",
                    self.id,
                    crate::text::clean(&holder)
                );
            }
        }
        leads
    }

    /// Gives the lease up on shutdown, so another replica leads at once.
    pub async fn release(&self, reg: &Registry) {
        if self.leading.swap(false, Ordering::Relaxed) {
            let _ = reg.release_lease(CONTROLLER, &self.id).await;
        }
    }
}
