//! The run's lab forge: `canary-runner lab-forge` in its own container on the run's private
//! network, reachable by cases as `http://forge:8080` (bare git remotes and the pull-request
//! API). Its records live in its own container, out of reach of the agents whose pull requests
//! it checks. `draft_pr` steps seed the forge with the pinned repo, run `canary-runner pr` in the
//! case container, and check what the forge received.

use super::checks::RepoDiff;
use crate::engine::{Backend, ContainerSpec, ExecSpec};
use crate::error::{LabError, Result};
use crate::forge::{PullRequest, Record};
use crate::report::CheckFailure;
use crate::suite::{DraftPrSpec, PullRequestExpect};
use std::time::{Duration, Instant};

pub const HOST: &str = "forge";
pub const URL: &str = "http://forge:8080";
const ROOT: &str = "/tmp/forge";

fn sh(script: String, deadline: Instant) -> ExecSpec {
    ExecSpec {
        cmd: vec!["sh".into(), "-c".into(), script],
        env: vec![],
        workdir: "/".into(),
        deadline,
        stdin: None,
    }
}

/// Starts the forge in `image` (an image of the run that carries `canary-runner`) on `network`
/// and waits until it listens.
pub async fn start<B: Backend>(backend: &B, run_id: &str, network: &str, image: &str) -> Result<String> {
    let mut spec = ContainerSpec::new(run_id, "forge", image);
    spec.network = Some(network.into());
    spec.aliases = vec![HOST.into()];
    spec.memory_bytes = 512 << 20;
    spec.cmd = Some(
        [
            crate::engine::docker::RUNNER_PATH,
            "lab-forge",
            "--listen",
            "0.0.0.0:8080",
            "--root",
            ROOT,
            "--public-url",
            URL,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    let id = backend.start_container(&spec).await?;
    let wait = backend
        .exec(
            &id,
            &sh(
                format!("for i in $(seq 200); do [ -s {ROOT}/ready ] && exit 0; sleep 0.05; done; exit 1"),
                Instant::now() + Duration::from_secs(30),
            ),
        )
        .await;
    match wait {
        Ok(o) if o.exit_code == Some(0) => Ok(id),
        other => {
            let _ = backend.remove_container(&id).await;
            Err(LabError::usage(
                format!(
                    "the lab forge did not start in {image}: {}",
                    other
                        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                        .unwrap_or_else(|e| e.to_string())
                ),
                "the first image of the run must carry canary-runner (runner images do; so does any image the lab's executor runs in)",
            ))
        }
    }
}

/// The forge repository a case attempt pushes to: one per container, so attempts and cases
/// never share a branch.
pub fn repo_name(case_id: &str, container: &str) -> String {
    let slug: String = case_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("lab/{slug}-{}", &container[..container.len().min(8)])
}

/// Seeds the forge with the pinned repo on `base` and returns the runner's argv, or why the pull
/// request cannot be attempted.
pub async fn prepare<B: Backend>(
    backend: &B,
    container: &str,
    repo: &str,
    spec: &DraftPrSpec,
) -> Result<std::result::Result<Vec<String>, CheckFailure>> {
    let remote = format!("{URL}/git/{repo}.git");
    let seed = format!(
        "git push -q {remote} \"$(git rev-parse canary-lab/pinned^{{commit}})\":refs/heads/{}",
        spec.base
    );
    let out = backend
        .exec(
            container,
            &ExecSpec {
                workdir: crate::repos::WORKDIR.into(),
                env: vec!["GIT_TERMINAL_PROMPT=0".into()],
                ..sh(seed, Instant::now() + Duration::from_secs(60))
            },
        )
        .await?;
    if out.exit_code != Some(0) {
        return Ok(Err(CheckFailure {
            check: "lab forge".into(),
            expected: format!("the pinned repo pushed to {remote}"),
            actual: format!(
                "exit {:?}: {}",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }));
    }
    let mut argv: Vec<String> = [
        "canary-runner",
        "pr",
        "--workspace",
        crate::repos::WORKDIR,
        "--remote",
        &remote,
        "--api-url",
        URL,
        "--repo",
        repo,
        "--branch",
        &spec.branch,
        "--base",
        &spec.base,
        "--title",
        &spec.title,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(body) = &spec.body {
        argv.extend(["--body".into(), body.clone()]);
    }
    Ok(Ok(argv))
}

/// Everything the forge recorded, read from its container.
pub async fn records<B: Backend>(backend: &B, forge: &str) -> Result<Vec<Record>> {
    let out = backend
        .exec(
            forge,
            &sh(
                format!("cat {ROOT}/records.jsonl 2>/dev/null || true"),
                Instant::now() + Duration::from_secs(30),
            ),
        )
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The records of one forge repository (git traffic and API calls).
pub fn for_repo<'a>(records: &'a [Record], repo: &str) -> Vec<&'a Record> {
    let (git, api) = (format!("/git/{repo}.git/"), format!("/repos/{repo}/"));
    records
        .iter()
        .filter(|r| r.path.starts_with(&git) || r.path.starts_with(&api))
        .collect()
}

/// Checks the pull request the forge received for `repo` against the expectation and the lab's
/// own view of the repo's diff.
pub fn check(
    expect: &PullRequestExpect,
    repo: &str,
    records: &[Record],
    lab_diff: std::result::Result<&RepoDiff, &str>,
) -> Vec<CheckFailure> {
    let fail = |check: &str, expected: String, actual: String| CheckFailure {
        check: format!("pull_request.{check}"),
        expected,
        actual,
    };
    let mine = for_repo(records, repo);
    let prs: Vec<&PullRequest> = mine.iter().filter_map(|r| r.pull_request.as_ref()).collect();
    let Some(pr) = prs.last() else {
        let seen = if mine.is_empty() {
            "no request at all".to_string()
        } else {
            mine.iter()
                .map(|r| {
                    format!(
                        "{} {} -> {}{}",
                        r.method,
                        r.path,
                        r.status,
                        r.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        return vec![fail(
            "opened",
            format!("a pull request on the lab forge for {repo}"),
            format!("none was opened; the forge received: {seen}"),
        )];
    };
    let mut failures = Vec::new();
    if prs.len() > 1 {
        failures.push(fail("opened", "one pull request".into(), format!("{}", prs.len())));
    }
    if let Some(d) = expect.draft.filter(|d| *d != pr.draft) {
        failures.push(fail("draft", d.to_string(), pr.draft.to_string()));
    }
    for (what, want, got) in [
        ("branch", &expect.branch, &pr.head),
        ("base", &expect.base, &pr.base),
        ("title", &expect.title, &pr.title),
    ] {
        if let Some(w) = want.as_ref().filter(|w| *w != got) {
            failures.push(fail(what, w.clone(), got.clone()));
        }
    }
    if expect.diff_matches {
        match lab_diff {
            Err(why) => failures.push(fail("diff", "the repo's diff in the case container".into(), why.into())),
            Ok(d) if d.patch != pr.patch => failures.push(fail(
                "diff",
                format!(
                    "the pull request's diff to equal the repo's diff ({} files: {})",
                    d.files.len(),
                    d.files.join(", ")
                ),
                format!(
                    "the forge computed {} files ({}){}",
                    pr.files.len(),
                    pr.files.join(", "),
                    first_difference(&d.patch, &pr.patch)
                ),
            )),
            Ok(_) => {}
        }
    }
    failures
}

/// Where two patches part, for a failure message.
fn first_difference(a: &str, b: &str) -> String {
    let line = a.lines().zip(b.lines()).position(|(x, y)| x != y);
    match line {
        Some(n) => format!(
            "; first difference at patch line {}: {:?} vs {:?}",
            n + 1,
            a.lines().nth(n).unwrap_or_default(),
            b.lines().nth(n).unwrap_or_default()
        ),
        None => format!("; patch lengths {} vs {} lines", a.lines().count(), b.lines().count()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(draft: bool, patch: &str) -> Record {
        Record {
            ts: String::new(),
            method: "POST".into(),
            path: "/repos/lab/c-1/pulls".into(),
            status: 201,
            body: None,
            error: None,
            pull_request: Some(PullRequest {
                repo: "lab/c-1".into(),
                number: 1,
                title: "t".into(),
                body: None,
                head: "canary/x".into(),
                base: "main".into(),
                draft,
                head_sha: String::new(),
                base_sha: String::new(),
                files: vec!["a".into()],
                patch: patch.into(),
                state: "open".into(),
                merged: false,
            }),
        }
    }

    #[test]
    fn draft_branch_and_diff_are_checked() {
        let expect = PullRequestExpect {
            draft: Some(true),
            branch: Some("canary/x".into()),
            base: Some("main".into()),
            title: None,
            diff_matches: true,
        };
        let d = RepoDiff {
            files: vec!["a".into()],
            patch: "+x\n".into(),
        };
        assert!(check(&expect, "lab/c-1", &[pr(true, "+x\n")], Ok(&d)).is_empty());
        let f = check(&expect, "lab/c-1", &[pr(false, "+y\n")], Ok(&d));
        let names: Vec<&str> = f.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(names, ["pull_request.draft", "pull_request.diff"]);
        assert!(f[1].actual.contains("\"+x\" vs \"+y\""), "{}", f[1].actual);
        let none = check(&expect, "lab/other", &[pr(true, "+x\n")], Ok(&d));
        assert_eq!(none[0].check, "pull_request.opened");
        assert!(none[0].actual.contains("no request at all"));
    }
}
