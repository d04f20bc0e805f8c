//! What a judgement says, wherever one is made on evidence (a rollout step's telemetry, a
//! metric's comparison): pass, fail, or inconclusive, which is never a pass.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Too little evidence (too few sessions, missing telemetry): never a pass.
    Inconclusive,
}

impl Verdict {
    /// Fail closed: only a pass passes.
    pub fn passed(self) -> bool {
        self == Verdict::Pass
    }
}
