//! Cases: the cross product of suites and their repos, in a stable order, optionally cut into a
//! deterministic slice (`--partition i/n`) so a CI matrix can share the work.

use crate::error::{LabError, Result};
use crate::suite::Suite;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Case {
    /// `<suite>--<repo>` (plus `--<image tag>` when a run has several images): unique within a
    /// run, safe in file and container names.
    pub id: String,
    pub suite: Arc<Suite>,
    pub repo: String,
    /// Index of the run's image this case runs in.
    pub image: usize,
}

/// The part of an image reference that tells images apart in case ids: its tag (or its last
/// path segment), with anything unsafe in names replaced.
pub fn image_label(reference: &str) -> String {
    let tail = reference.rsplit('/').next().unwrap_or(reference);
    let tag = tail
        .split_once(':')
        .map_or(tail, |(_, t)| t)
        .trim_start_matches("sha256:");
    let tag = if tag.len() == 64 && tag.chars().all(|c| c.is_ascii_hexdigit()) {
        &tag[..12]
    } else {
        tag
    };
    tag.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every case once per image; ids gain the image's label when there is more than one.
pub fn across_images(cases: Vec<Case>, images: &[String]) -> Vec<Case> {
    if images.len() <= 1 {
        return cases;
    }
    let mut out: Vec<Case> = cases
        .into_iter()
        .flat_map(|c| {
            images.iter().enumerate().map(move |(i, img)| Case {
                id: format!("{}--{}", c.id, image_label(img)),
                suite: c.suite.clone(),
                repo: c.repo.clone(),
                image: i,
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Every (suite, repo) pair, restricted to `only_repos` when it is not empty, sorted by id.
pub fn plan(suites: &[Arc<Suite>], only_repos: &[String]) -> Vec<Case> {
    let mut cases: Vec<Case> = suites
        .iter()
        .flat_map(|s| {
            s.repos
                .iter()
                .filter(|r| only_repos.is_empty() || only_repos.contains(r))
                .map(|r| Case {
                    id: case_id(&s.name, r),
                    suite: s.clone(),
                    repo: r.clone(),
                    image: 0,
                })
        })
        .collect();
    cases.sort_by(|a, b| a.id.cmp(&b.id));
    cases
}

pub fn case_id(suite: &str, repo: &str) -> String {
    format!("{suite}--{repo}")
}

/// Slice `index` (1-based) of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub index: usize,
    pub total: usize,
}

impl std::str::FromStr for Partition {
    type Err = LabError;
    fn from_str(s: &str) -> Result<Partition> {
        let bad = || {
            LabError::usage(
                format!("invalid partition `{s}`"),
                "write `i/n` with 1 <= i <= n, e.g. `--partition 2/4`",
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, total) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if total == 0 || index == 0 || index > total {
            return Err(bad());
        }
        Ok(Partition { index, total })
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

/// Round-robin over the sorted cases: every case lands in exactly one slice, slices differ in
/// size by at most one, and the same inputs always give the same slices.
pub fn partition(cases: Vec<Case>, p: Partition) -> Vec<Case> {
    cases
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % p.total == p.index - 1)
        .map(|(_, c)| c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(name: &str, repos: &[&str]) -> Arc<Suite> {
        let text = format!(
            "name: {name}\nrepos: [{}]\nsteps:\n  - name: s\n    exec: 'true'\n",
            repos.join(", ")
        );
        let known: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        Arc::new(crate::suite::compile("t.yaml", text, &known).expect("valid"))
    }

    #[test]
    fn partitions_cover_every_case_exactly_once() {
        let cases = plan(&[suite("x", &["a", "b", "c"]), suite("y", &["a", "c"])], &[]);
        assert_eq!(cases.len(), 5);
        let mut seen = Vec::new();
        for i in 1..=3 {
            let slice = partition(cases.clone(), Partition { index: i, total: 3 });
            assert!(slice.len() == 1 || slice.len() == 2);
            seen.extend(slice.into_iter().map(|c| c.id));
        }
        seen.sort();
        assert_eq!(seen, cases.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn repo_filter_restricts_the_matrix() {
        let cases = plan(&[suite("x", &["a", "b"])], &["b".to_string()]);
        assert_eq!(cases.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["x--b"]);
    }

    #[test]
    fn images_multiply_cases_with_distinct_ids() {
        let cases = plan(&[suite("x", &["a", "b"])], &[]);
        let images = vec![
            "canary-lab/runner:codex-0.163.0-ab".to_string(),
            "canary-lab/runner:codex-0.161.0-cd".to_string(),
        ];
        let ids: Vec<String> = across_images(cases, &images).into_iter().map(|c| c.id).collect();
        assert_eq!(
            ids,
            [
                "x--a--codex-0.161.0-cd",
                "x--a--codex-0.163.0-ab",
                "x--b--codex-0.161.0-cd",
                "x--b--codex-0.163.0-ab"
            ]
        );
        assert_eq!(
            image_label("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            "0123456789ab"
        );
    }

    #[test]
    fn bad_partitions_are_rejected() {
        for bad in ["0/2", "3/2", "1/0", "x", "1-2"] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
        assert_eq!("2/4".parse::<Partition>().unwrap(), Partition { index: 2, total: 4 });
    }
}
