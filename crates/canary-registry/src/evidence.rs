//! The evidence the gate decides on: the latest result of each cell a policy requires. Shaped
//! here, next to the rows it is read from; the decision itself is the gate's.

use crate::{ResultRow, ResultStatus};
use canary_contract::Provider;
use serde::Serialize;

/// The latest result of one (suite, repo, provider) cell for the build.
#[derive(Debug, Clone, Serialize)]
pub struct CellEvidence {
    pub suite: String,
    pub repo: String,
    /// The build's CLI the cell is about; `None` for a suite that judges the build as a whole.
    pub provider: Option<Provider>,
    /// `None` when the build has no result for the cell.
    pub status: Option<ResultStatus>,
    pub recorded_at: Option<String>,
    pub run_id: Option<String>,
}

impl CellEvidence {
    /// `suite `x` on repo `y`` (`for codex` when the cell is a provider's).
    pub fn place(&self) -> String {
        match &self.provider {
            Some(p) => format!("suite `{}` on repo `{}` for {p}", self.suite, self.repo),
            None => format!("suite `{}` on repo `{}`", self.suite, self.repo),
        }
    }
}

/// The cells a policy requires of a build that bundles `providers`, with the build's latest
/// result in each. A suite whose results name providers (it ran per provider) is required for
/// every CLI the build bundles, so a build is never judged on one of its CLIs only; a suite
/// whose results are build-wide (no sessions) is required once. A suite with no result at all is
/// required per provider, so each missing CLI is named.
pub fn required_cells(
    results: &[ResultRow],
    suites: &[String],
    repos: &[String],
    providers: &[Provider],
) -> Vec<CellEvidence> {
    let mut out = Vec::new();
    for suite in suites {
        let ran = results.iter().filter(|r| &r.suite == suite);
        let build_wide = ran.clone().next().is_some() && ran.clone().all(|r| r.provider.is_none());
        let per: Vec<Option<Provider>> = if build_wide || providers.is_empty() {
            vec![None]
        } else {
            providers.iter().copied().map(Some).collect()
        };
        for repo in repos {
            for p in &per {
                let hit = results
                    .iter()
                    .find(|r| &r.suite == suite && &r.repo == repo && r.provider == *p);
                out.push(CellEvidence {
                    suite: suite.clone(),
                    repo: repo.clone(),
                    provider: *p,
                    status: hit.map(|c| c.status),
                    recorded_at: hit.map(|c| c.recorded_at.clone()),
                    run_id: hit.map(|c| c.run_id.clone()),
                });
            }
        }
    }
    out
}
