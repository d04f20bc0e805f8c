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
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(args)
        .current_dir(workspace)
        .env("GIT_INDEX_FILE", index)
        .envs(AUTHOR)
        .env("GIT_TERMINAL_PROMPT", "0");
    crate::local::git_output(cmd).await.map_err(|e| match e {
        crate::local::GitError::NotRun(_) => e.to_string(),
        crate::local::GitError::Failed(stderr) => format!("git {} failed: {stderr}", args[0]),
    })
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
    let commit = commit_workspace(ws, idx, &args.title).await;
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
    match create_pull(&args, owner, name).await {
        Ok(pr) => {
            let _ = out.send(Event::PrOpened {
                url: pr.url,
                draft: pr.draft,
                branch: pr.branch,
            });
            if pr.draft == args.ready {
                return fail(
                    "changed_event",
                    format!(
                        "asked for {} pull request, the API answered draft={}",
                        if args.ready { "a ready" } else { "a draft" },
                        pr.draft
                    ),
                );
            }
            true
        }
        Err((kind, e)) => fail(kind, e),
    }
}

/// Commits the workspace's changes against HEAD without touching its index or HEAD; returns
/// the commit, its file names (NUL-separated) and its patch, or `None` when nothing changed.
async fn commit_workspace(ws: &Path, idx: &Path, title: &str) -> Result<Option<(String, String, String)>, String> {
    git(ws, idx, &["read-tree", "HEAD"]).await?;
    git(ws, idx, &["add", "-A"]).await?;
    let tree = git(ws, idx, &["write-tree"]).await?.trim().to_string();
    let head_tree = git(ws, idx, &["rev-parse", "HEAD^{tree}"]).await?.trim().to_string();
    if tree == head_tree {
        return Ok(None);
    }
    let commit = git(ws, idx, &["commit-tree", &tree, "-p", "HEAD", "-m", title])
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
    Ok(Some((commit, files, patch)))
}

/// A pull request as the API answered its creation.
struct Opened {
    url: String,
    draft: bool,
    branch: String,
}

/// `POST {api}/repos/{owner}/{name}/pulls`, GitHub's REST API (which the lab forge serves too),
/// with the token as a bearer token when there is one. Errors carry GitHub's message and the
/// details it lists, and the ERROR kind to report.
async fn create_pull(args: &PrArgs, owner: &str, name: &str) -> Result<Opened, (&'static str, String)> {
    let mut url = reqwest::Url::parse(args.api_url.as_str())
        .map_err(|e| ("bad_argument", format!("--api-url {}: {e}", args.api_url)))?;
    url.path_segments_mut()
        .map_err(|_| ("bad_argument", format!("--api-url {}: not a base URL", args.api_url)))?
        .pop_if_empty()
        .extend(["repos", owner, name, "pulls"]);
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| ("pr_failed", format!("cannot build the API client: {e}")))?;
    let mut req = client
        .post(url)
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header(
            reqwest::header::USER_AGENT,
            concat!("canary-runner/", env!("CARGO_PKG_VERSION")),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(
            serde_json::json!({
                "title": args.title,
                "head": args.branch,
                "base": args.base,
                "body": args.body,
                "draft": !args.ready,
            })
            .to_string(),
        );
    if let Some(t) = &args.token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.map_err(|e| ("pr_failed", e.to_string()))?;
    let status = r.status();
    let mut body = Vec::new();
    let mut r = r;
    while let Some(chunk) = r.chunk().await.map_err(|e| ("pr_failed", e.to_string()))? {
        if body.len() + chunk.len() > 4 * 1024 * 1024 {
            return Err(("pr_failed", "the API's answer is larger than 4 MiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        return Err(("pr_failed", api_error(status, &v)));
    }
    let url = v["html_url"].as_str().or(v["url"].as_str()).ok_or((
        "changed_event",
        "the API's answer names no pull request URL".to_string(),
    ))?;
    Ok(Opened {
        url: url.to_string(),
        draft: v["draft"].as_bool().unwrap_or(false),
        branch: v["head"]["ref"].as_str().unwrap_or(&args.branch).to_string(),
    })
}

/// A failed API call in one line, with GitHub's message and the details it lists.
fn api_error(status: reqwest::StatusCode, v: &serde_json::Value) -> String {
    let message = v["message"].as_str().unwrap_or("no message");
    let details: Vec<String> = v["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["message"].as_str().map(String::from).unwrap_or_else(|| e.to_string()))
        .collect();
    let one = if details.is_empty() {
        format!("{message} ({})", status.as_u16())
    } else {
        format!("{message} ({}): {}", status.as_u16(), details.join("; "))
    };
    crate::text::clean(&one).into_owned()
}
