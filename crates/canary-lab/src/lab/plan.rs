//! Cases: the cross product of suites and their repos, in a stable order, optionally cut into a
//! deterministic slice (`--partition i/n`) so a CI matrix can share the work.

use crate::error::{LabError, Result};
use crate::providers::Provider;
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
    /// The CLI of the build the case's sessions use (suites that run per provider).
    pub provider: Option<Provider>,
}

/// An image a run uses, with the CLIs it bundles (from its build manifest or labels) that the
/// lab can drive.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub reference: String,
    pub providers: Vec<Provider>,
}

impl ImagePlan {
    /// The providers an image's labels say it bundles.
    pub fn from_labels(reference: &str, labels: &std::collections::BTreeMap<String, String>) -> ImagePlan {
        let names = match crate::builds::BuildManifest::from_labels(labels) {
            Some(m) => m.providers(),
            None => labels
                .get(crate::builds::labels::RUNTIMES)
                .map(|r| {
                    r.split(',')
                        .filter_map(|p| p.split('=').next())
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        };
        ImagePlan::new(reference, &names)
    }

    /// An image bundling the CLIs named `names`. A CLI the lab does not know gets no case; the
    /// gate still requires evidence for every component of a build, so it stays unproven rather
    /// than passed.
    pub fn new(reference: &str, names: &[String]) -> ImagePlan {
        ImagePlan {
            reference: reference.into(),
            providers: names.iter().filter_map(|n| Provider::from_name(n)).collect(),
        }
    }
}

/// The providers a suite's case runs for in an image: the ones it names (each must be in the
/// build), every one the build bundles (a session step without `provider`), or none.
pub fn providers_for(suite: &Suite, image: &ImagePlan) -> Result<Vec<Option<Provider>>> {
    if let Some(named) = &suite.providers {
        if let Some(missing) = named.iter().find(|p| !image.providers.contains(p)) {
            return Err(LabError::usage(
                format!(
                    "{}: suite `{}` runs for {missing}, which image {} does not bundle",
                    suite.file, suite.name, image.reference
                ),
                format!(
                    "the image bundles: {}; build one with it (`canary run --provider {missing}@VERSION`) or drop it from `providers:`",
                    if image.providers.is_empty() {
                        "no CLI".to_string()
                    } else {
                        image.providers.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
                    }
                ),
            ));
        }
        return Ok(named.iter().copied().map(Some).collect());
    }
    if suite.per_provider() && !image.providers.is_empty() {
        return Ok(image.providers.iter().copied().map(Some).collect());
    }
    Ok(vec![None])
}

/// Every case once per image and, for suites that run per provider, once per provider of that
/// image. Ids gain the provider, and the image's label when there is more than one image.
pub fn expand(cases: Vec<Case>, images: &[ImagePlan]) -> Result<Vec<Case>> {
    let labels = image_labels(&images.iter().map(|i| i.reference.as_str()).collect::<Vec<_>>());
    let mut out = Vec::new();
    for c in cases {
        for (i, img) in images.iter().enumerate() {
            for provider in providers_for(&c.suite, img)? {
                let mut id = c.id.clone();
                if let Some(p) = &provider {
                    id = format!("{id}--{p}");
                }
                if images.len() > 1 {
                    id = format!("{id}--{}", labels[i]);
                }
                out.push(Case {
                    id,
                    suite: c.suite.clone(),
                    repo: c.repo.clone(),
                    image: i,
                    provider,
                });
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
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

/// One distinct label per image for case ids: the tag where tags differ; the whole reference
/// where two images share a tag (`a/x:1` and `b/x:1`); and a position where even references
/// repeat. Distinct labels keep case ids, container names and report folders apart.
pub fn image_labels(references: &[&str]) -> Vec<String> {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let short: Vec<String> = references.iter().map(|r| image_label(r)).collect();
    let mut labels: Vec<String> = short
        .iter()
        .zip(references)
        .map(|(l, r)| {
            if short.iter().filter(|o| *o == l).count() > 1 {
                safe(r.trim_start_matches("sha256:"))
            } else {
                l.clone()
            }
        })
        .collect();
    let snapshot = labels.clone();
    for (i, l) in labels.iter_mut().enumerate() {
        if snapshot.iter().filter(|o| *o == l).count() > 1 {
            *l = format!("{l}-{}", i + 1);
        }
    }
    labels
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
                    provider: None,
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

    fn image(reference: &str, providers: &[&str]) -> ImagePlan {
        ImagePlan {
            reference: reference.into(),
            providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn session_suite(extra: &str) -> Arc<Suite> {
        let text = format!(
            "name: s\nrepos: [a]\n{extra}steps:\n  - name: s\n    session:\n      prompt: hi\n      scenario:\n        - say: done\n"
        );
        Arc::new(crate::suite::compile("t.yaml", text, &["a".to_string()]).expect("valid"))
    }

    #[test]
    fn session_suites_run_once_per_cli_of_the_build() {
        let build = image("canary-lab/build:1", &["codex", "claude-code"]);
        let ids = |s: Arc<Suite>| -> Vec<String> {
            expand(plan(&[s], &[]), std::slice::from_ref(&build))
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect()
        };
        assert_eq!(ids(session_suite("")), ["s--a--claude-code", "s--a--codex"]);
        assert_eq!(ids(session_suite("providers: [codex]\n")), ["s--a--codex"]);
        // A suite without sessions runs once, whatever the build bundles.
        assert_eq!(ids(suite("x", &["a"])), ["x--a"]);
        // Naming a CLI the build lacks is an input error, before anything runs.
        let err = expand(plan(&[session_suite("providers: [gemini]\n")], &[]), &[build])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not bundle"), "{err}");
        // An image without CLIs: one case, whose session step then says why it cannot run.
        let bare = expand(plan(&[session_suite("")], &[]), &[image("base", &[])]).unwrap();
        assert_eq!((bare.len(), bare[0].provider), (1, None));
    }

    #[test]
    fn the_claude_shorthand_is_claude_code_in_ids_and_in_duplicates() {
        let build = image("canary-lab/build:1", &["codex", "claude-code"]);
        let cases = expand(plan(&[session_suite("providers: [claude]\n")], &[]), &[build]).unwrap();
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["s--a--claude-code"]);
        assert_eq!(cases[0].provider, Some(Provider::ClaudeCode));
        let twice = "name: s\nrepos: [a]\nproviders: [claude, claude-code]\nsteps:\n  - name: s\n    session:\n      prompt: hi\n      scenario:\n        - say: done\n";
        let e = crate::suite::compile("t.yaml", twice.to_string(), &["a".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("provider `claude-code` is listed twice"), "{e}");
    }

    #[test]
    fn images_multiply_cases_with_distinct_ids() {
        let cases = plan(&[suite("x", &["a", "b"])], &[]);
        let images = vec![
            image("canary-lab/runner:codex-0.163.0-ab", &[]),
            image("canary-lab/runner:codex-0.161.0-cd", &[]),
        ];
        let ids: Vec<String> = expand(cases, &images).unwrap().into_iter().map(|c| c.id).collect();
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
    fn images_that_share_a_tag_still_give_distinct_case_ids() {
        assert_eq!(image_labels(&["a/x:1", "b/x:2"]), ["1", "2"]);
        assert_eq!(image_labels(&["a/x:1", "b/x:1"]), ["a_x_1", "b_x_1"]);
        assert_eq!(image_labels(&["a/x:1", "a/x:1", "c/y:2"]), ["a_x_1-1", "a_x_1-2", "2"]);
    }

    #[test]
    fn bad_partitions_are_rejected() {
        for bad in ["0/2", "3/2", "1/0", "x", "1-2"] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
        assert_eq!("2/4".parse::<Partition>().unwrap(), Partition { index: 2, total: 4 });
    }
}
