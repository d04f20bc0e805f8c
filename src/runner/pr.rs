//! The runner's draft pull request: the workspace's changes committed on a new branch (without
//! moving the workspace's HEAD or touching its index), pushed to the remote, and proposed as a
//! draft through a GitHub-API client whose base URI is configurable (the lab forge in the lab,
//! GitHub or GitHub Enterprise elsewhere).

use super::events::Event;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

pub struct PrArgs {
    pub workspace: PathBuf,
    /// Git remote URL the branch is pushed to.
    pub remote: String,
    /// Base URI of the GitHub REST API.
    pub api_url: String,
    /// `owner/name` on the API.
    pub repo: String,
    pub branch: String,
    pub base: String,
    pub title: String,
    pub body: Option<String>,
    pub token: Option<String>,
    /// Open it ready for review instead of as a draft.
    pub ready: bool,
}

const AUTHOR: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "canary-runner"),
    ("GIT_AUTHOR_EMAIL", "canary-runner@canary-lab.invalid"),
    ("GIT_COMMITTER_NAME", "canary-runner"),
    ("GIT_COMMITTER_EMAIL", "canary-runner@canary-lab.invalid"),
];

/// Runs git in the workspace with a scratch index; `Err` carries git's stderr.
async fn git(workspace: &Path, index: &Path, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("git")
        .args(args)
        .current_dir(workspace)
        .env("GIT_INDEX_FILE", index)
        .envs(AUTHOR)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "git {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Commits the workspace onto `branch`, pushes it and opens the pull request. Returns whether it
/// all worked; every outcome is an event.
pub async fn run(args: PrArgs, out: mpsc::UnboundedSender<Event>) -> bool {
    let fail = |kind: &str, message: String| {
        let _ = out.send(Event::error(kind, message));
        false
    };
    let Some((owner, name)) = args.repo.split_once('/') else {
        return fail(
            "bad_argument",
            format!("--repo must be owner/name, got {:?}", args.repo),
        );
    };
    let index = match tempfile::NamedTempFile::new() {
        Ok(f) => f,
        Err(e) => return fail("no_commit", e.to_string()),
    };
    let ws = &args.workspace;
    let idx = index.path();
    let commit = async {
        git(ws, idx, &["read-tree", "HEAD"]).await?;
        git(ws, idx, &["add", "-A"]).await?;
        let tree = git(ws, idx, &["write-tree"]).await?.trim().to_string();
        let head_tree = git(ws, idx, &["rev-parse", "HEAD^{tree}"]).await?.trim().to_string();
        if tree == head_tree {
            return Ok(None);
        }
        let commit = git(ws, idx, &["commit-tree", &tree, "-p", "HEAD", "-m", &args.title])
            .await?
            .trim()
            .to_string();
        let files = git(ws, idx, &["diff", "--name-only", "-z", "--no-renames", "HEAD", &commit]).await?;
        let patch = git(
            ws,
            idx,
            &[
                "diff",
                "--no-renames",
                "--no-color",
                "--no-ext-diff",
                "--binary",
                "HEAD",
                &commit,
            ],
        )
        .await?;
        Ok::<_, String>(Some((commit, files, patch)))
    }
    .await;
    let (commit, files, patch) = match commit {
        Ok(Some(c)) => c,
        Ok(None) => return fail("nothing_to_propose", "the workspace has no changes against HEAD".into()),
        Err(e) => return fail("no_commit", e),
    };
    let _ = out.send(Event::DiffReady {
        files: files.split('\0').filter(|s| !s.is_empty()).map(String::from).collect(),
        patch,
    });
    // A plain push: an existing branch that is not an ancestor is refused, never overwritten.
    let refspec = format!("{commit}:refs/heads/{}", args.branch);
    if let Err(e) = git(ws, idx, &["push", "--porcelain", &args.remote, &refspec]).await {
        return fail("push_failed", e);
    }
    let client = octocrab::Octocrab::builder().base_uri(args.api_url.as_str());
    let client = match client {
        Ok(b) => match &args.token {
            Some(t) => b.personal_token(t.clone()).build(),
            None => b.build(),
        },
        Err(e) => return fail("bad_argument", format!("--api-url {}: {e}", args.api_url)),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => return fail("pr_failed", format!("cannot build the API client: {e}")),
    };
    let pulls = client.pulls(owner, name);
    let created = pulls
        .create(&args.title, &args.branch, &args.base)
        .draft(!args.ready)
        .body::<String>(args.body.clone())
        .send()
        .await;
    match created {
        Ok(pr) => {
            let draft = pr.draft.unwrap_or(false);
            let _ = out.send(Event::PrOpened {
                url: pr.html_url.map(|u| u.to_string()).unwrap_or_else(|| pr.url.clone()),
                draft,
                branch: pr.head.ref_field.clone(),
            });
            if draft == args.ready {
                return fail(
                    "changed_event",
                    format!(
                        "asked for {} pull request, the API answered draft={draft}",
                        if args.ready { "a ready" } else { "a draft" }
                    ),
                );
            }
            true
        }
        Err(e) => fail("pr_failed", api_error(&e)),
    }
}

/// An octocrab error in one line, with GitHub's message when there is one.
fn api_error(e: &octocrab::Error) -> String {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            let details: Vec<String> = source
                .errors
                .iter()
                .flatten()
                .map(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect();
            if details.is_empty() {
                format!("{} ({})", source.message, source.status_code)
            } else {
                format!("{} ({}): {}", source.message, source.status_code, details.join("; "))
            }
        }
        other => other.to_string(),
    }
}
