//! The lab forge: what a runner believes is its code host, inside the lab. One HTTP server with
//!
//! - `/git/{owner}/{repo}.git/...`: git's smart HTTP protocol through `git http-backend`, on bare
//!   repositories created on first use (so a runner can clone, fetch and push);
//! - `POST /repos/{owner}/{repo}/pulls` and `GET /repos/{owner}/{repo}/pulls/{number}`: the part
//!   of GitHub's REST API a runner needs to open a pull request (what `canary-runner pr` sends and reads);
//! - a record of every request, appended to `<root>/records.jsonl` and served at
//!   `GET /lab/records`, so a canary can check what the runner really did: which branch it
//!   pushed, whether the PR is a draft, and whether the PR's diff is the workspace's diff.
//!
//! Like the GitHub API, a pull request is refused (422) when its head or base branch does not
//! exist or when there is nothing between them.

use crate::error::{LabError, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The largest push the forge takes.
const BODY_LIMIT: usize = 512 << 20;

/// One request the forge received and how it answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub ts: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The JSON body of an API request (git traffic is not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// The pull request this request created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequest>,
    /// Why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A pull request as the forge stored it, with the diff it computed from what was pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    pub repo: String,
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub head: String,
    pub base: String,
    pub draft: bool,
    pub head_sha: String,
    pub base_sha: String,
    pub files: Vec<String>,
    /// `git diff --binary base...head` with the lab's diff flags.
    pub patch: String,
    /// `open` or `closed` (a merged pull request is closed and `merged`).
    #[serde(default = "open")]
    pub state: String,
    #[serde(default)]
    pub merged: bool,
}

fn open() -> String {
    "open".into()
}

#[derive(Default)]
struct Inner {
    records: Vec<Record>,
    pulls: Vec<PullRequest>,
}

#[derive(Clone)]
pub struct Forge {
    root: PathBuf,
    /// The URL clients use to reach the forge (for `html_url` and friends).
    public_url: Arc<Mutex<String>>,
    inner: Arc<Mutex<Inner>>,
}

impl Forge {
    pub fn new(root: PathBuf) -> Forge {
        Forge {
            root,
            public_url: Arc::new(Mutex::new(String::new())),
            inner: Arc::default(),
        }
    }

    /// Sets the URL put into API answers (by default the address the forge listens on).
    pub fn set_public_url(&self, url: &str) {
        *self.public_url.lock().expect("forge lock") = url.trim_end_matches('/').to_string();
    }

    pub fn records(&self) -> Vec<Record> {
        self.inner.lock().expect("forge lock").records.clone()
    }

    fn record(&self, r: Record) {
        let mut inner = self.inner.lock().expect("forge lock");
        if let Ok(line) = serde_json::to_string(&r) {
            use std::io::Write;
            // Appended under the lock, so lines never interleave.
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.join("records.jsonl"))
            {
                let _ = writeln!(f, "{line}");
            }
        }
        inner.records.push(r);
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/git/{*rest}", any(git))
            .route("/repos/{owner}/{repo}/pulls", post(create_pull).get(list_pulls))
            .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull).patch(update_pull))
            .route(
                "/repos/{owner}/{repo}/pulls/{number}/merge",
                axum::routing::put(merge_pull),
            )
            .route("/lab/records", get(records))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self.clone())
    }

    /// Listens on `addr` and serves until the task is dropped or aborted.
    pub async fn serve(self, addr: SocketAddr) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        std::fs::create_dir_all(self.root.join("git")).map_err(|e| LabError::write(&self.root, e))?;
        let (listener, bound) = crate::local::listen(addr).await?;
        if self.public_url.lock().expect("forge lock").is_empty() {
            self.set_public_url(&format!("http://{bound}"));
        }
        let app = self.router();
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((bound, handle))
    }

    fn bare(&self, owner: &str, repo: &str) -> PathBuf {
        self.root.join("git").join(owner).join(format!("{repo}.git"))
    }
}

/// Owner and repository names the forge accepts: GitHub's characters, no path tricks.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"message": message}).to_string(),
    )
        .into_response()
}

async fn not_found(State(forge): State<Forge>, method: Method, uri: Uri) -> Response {
    forge.record(Record {
        ts: canary_contract::time::now(),
        method: method.to_string(),
        path: uri.path().to_string(),
        status: 404,
        body: None,
        pull_request: None,
        error: Some("no such route on the lab forge".into()),
    });
    json_error(StatusCode::NOT_FOUND, "Not Found")
}

async fn records(State(forge): State<Forge>) -> Response {
    axum::Json(forge.records()).into_response()
}

/// Runs git in a bare repository; `Err` carries git's stderr.
async fn git_in(dir: &std::path::Path, args: &[&str]) -> std::result::Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(args).current_dir(dir);
    crate::local::git_output(cmd).await.map_err(|e| e.to_string())
}

/// Git smart HTTP through `git http-backend` (CGI). The repository is created, bare, on first use.
async fn git(State(forge): State<Forge>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().trim_start_matches("/git").to_string();
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let (owner, repo) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let Some(repo) = repo.strip_suffix(".git").filter(|r| valid_name(r) && valid_name(owner)) else {
        return json_error(StatusCode::NOT_FOUND, "repositories live at /git/{owner}/{repo}.git");
    };
    let dir = forge.bare(owner, repo);
    if !dir.join("HEAD").exists() {
        let _ = std::fs::create_dir_all(&dir);
        if let Err(e) = git_in(&dir, &["init", "--bare", "-q", "--initial-branch=main"]).await {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("git init failed: {e}"));
        }
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .env("GIT_PROJECT_ROOT", forge.root.join("git"))
        .env("GIT_HTTP_EXPORT_ALL", "1")
        // A named user may push (receive-pack is off for anonymous requests).
        .env("REMOTE_USER", "runner")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (h, var) in [
        (header::CONTENT_TYPE, "CONTENT_TYPE"),
        (header::CONTENT_ENCODING, "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
            cmd.env(var, v);
        }
    }
    if let Some(v) = headers.get("git-protocol").and_then(|v| v.to_str().ok()) {
        cmd.env("GIT_PROTOCOL", v);
    }
    let result = async {
        let mut child = cmd.spawn().map_err(|e| format!("cannot run git http-backend: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let feed = tokio::spawn(async move {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, &body).await;
        });
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        let _ = feed.await;
        Ok::<_, String>(out)
    }
    .await;
    let (status, response) = match result {
        Ok(out) => cgi_response(&out.stdout).unwrap_or_else(|| {
            (
                500,
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend answered nothing"),
            )
        }),
        Err(e) => (500, json_error(StatusCode::INTERNAL_SERVER_ERROR, &e)),
    };
    forge.record(Record {
        ts: canary_contract::time::now(),
        method: method.to_string(),
        path: uri.to_string(),
        status,
        body: None,
        pull_request: None,
        error: None,
    });
    response
}

/// Turns CGI output (headers, blank line, body) into a response.
fn cgi_response(out: &[u8]) -> Option<(u16, Response)> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, p + 2)))?;
    let head = String::from_utf8_lossy(&out[..split.0]);
    let mut builder = Response::builder();
    let mut status = 200u16;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value.split_whitespace().next()?.parse().ok()?;
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    let response = builder
        .status(status)
        .body(axum::body::Body::from(out[split.1..].to_vec()))
        .ok()?;
    Some((status, response))
}

#[derive(Deserialize)]
struct CreatePull {
    title: Option<String>,
    head: Option<String>,
    base: Option<String>,
    body: Option<String>,
    draft: Option<bool>,
}

/// The refusal GitHub gives for an invalid field of a new pull request.
fn unprocessable(field: &str, message: String) -> (StatusCode, String) {
    (StatusCode::UNPROCESSABLE_ENTITY, format!("{field}: {message}"))
}

async fn create_pull(State(forge): State<Forge>, Path((owner, repo)): Path<(String, String)>, body: Bytes) -> Response {
    let value: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let result = open_pull(&forge, &owner, &repo, value.as_ref()).await;
    let (status, response, pull, error) = match result {
        Ok(pr) => {
            let json = pull_json(&forge, &pr);
            (StatusCode::CREATED, json, Some(pr), None)
        }
        Err((status, message)) => (
            status,
            serde_json::json!({
                "message": if status == StatusCode::UNPROCESSABLE_ENTITY { "Validation Failed" } else { "Not Found" },
                "errors": [{"resource": "PullRequest", "code": "custom", "message": message}],
            }),
            None,
            Some(message),
        ),
    };
    forge.record(Record {
        ts: canary_contract::time::now(),
        method: "POST".into(),
        path: format!("/repos/{owner}/{repo}/pulls"),
        status: status.as_u16(),
        body: value,
        pull_request: pull,
        error,
    });
    (status, axum::Json(response)).into_response()
}

async fn open_pull(
    forge: &Forge,
    owner: &str,
    repo: &str,
    value: Option<&serde_json::Value>,
) -> std::result::Result<PullRequest, (StatusCode, String)> {
    if !valid_name(owner) || !valid_name(repo) || !forge.bare(owner, repo).join("HEAD").exists() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no repository {owner}/{repo}: push to it first"),
        ));
    }
    let req: CreatePull = value
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                "the body is not a pull request in JSON".to_string(),
            )
        })?;
    let title = req
        .title
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| unprocessable("title", "missing".into()))?;
    let head = req.head.ok_or_else(|| unprocessable("head", "missing".into()))?;
    let base = req.base.ok_or_else(|| unprocessable("base", "missing".into()))?;
    // `owner:branch` names a branch of the same repository here (the lab has no forks).
    let head_branch = head.rsplit(':').next().unwrap_or(&head).to_string();
    let dir = forge.bare(owner, repo);
    let head_sha = branch_sha(&dir, owner, repo, &head_branch).await?;
    let base_sha = branch_sha(&dir, owner, repo, &base)
        .await
        .map_err(|(s, m)| (s, m.replacen("head", "base", 1)))?;
    let range = format!("{base_sha}...{head_sha}");
    let flags = ["--no-renames", "--no-color", "--no-ext-diff", "--binary"];
    let files = git_in(&dir, &["diff", "--name-only", "-z", "--no-renames", &range])
        .await
        .map_err(|e| unprocessable("head", e))?;
    let files: Vec<String> = files.split('\0').filter(|s| !s.is_empty()).map(String::from).collect();
    if files.is_empty() {
        return Err(unprocessable(
            "head",
            format!("No commits between {base} and {head_branch}"),
        ));
    }
    let mut args = vec!["diff"];
    args.extend(flags);
    args.push(&range);
    let patch = git_in(&dir, &args).await.map_err(|e| unprocessable("head", e))?;
    let mut inner = forge.inner.lock().expect("forge lock");
    let pr = PullRequest {
        repo: format!("{owner}/{repo}"),
        number: inner
            .pulls
            .iter()
            .filter(|p| p.repo == format!("{owner}/{repo}"))
            .count() as u64
            + 1,
        title,
        body: req.body,
        head: head_branch,
        base,
        draft: req.draft.unwrap_or(false),
        head_sha,
        base_sha,
        files,
        patch,
        state: "open".into(),
        merged: false,
    };
    inner.pulls.push(pr.clone());
    Ok(pr)
}

/// The commit a branch of a forge repository points at (422 naming the branch when it has none).
async fn branch_sha(
    dir: &std::path::Path,
    owner: &str,
    repo: &str,
    branch: &str,
) -> std::result::Result<String, (StatusCode, String)> {
    git_in(
        dir,
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}^{{commit}}"),
        ],
    )
    .await
    .map(|s| s.trim().to_string())
    .map_err(|_| unprocessable("head", format!("no branch {branch} in {owner}/{repo}")))
}

impl Forge {
    /// A copy of pull request `number` of `owner/repo`, when it exists and `keep` takes it.
    fn pull(&self, owner: &str, repo: &str, number: u64, keep: impl Fn(&PullRequest) -> bool) -> Option<PullRequest> {
        let name = format!("{owner}/{repo}");
        let inner = self.inner.lock().expect("forge lock");
        inner
            .pulls
            .iter()
            .find(|p| p.repo == name && p.number == number && keep(p))
            .cloned()
    }
}

async fn get_pull(State(forge): State<Forge>, Path((owner, repo, number)): Path<(String, String, u64)>) -> Response {
    match forge.pull(&owner, &repo, number, |_| true) {
        Some(pr) => axum::Json(pull_json(&forge, &pr)).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    head: Option<String>,
}

/// `GET /repos/{owner}/{repo}/pulls?state=open|closed|all&head=owner:branch`, as GitHub answers.
async fn list_pulls(
    State(forge): State<Forge>,
    Path((owner, repo)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> Response {
    let name = format!("{owner}/{repo}");
    let state = q.state.unwrap_or_else(|| "open".into());
    let head = q.head.map(|h| h.rsplit(':').next().unwrap_or(&h).to_string());
    let pulls: Vec<serde_json::Value> = forge
        .inner
        .lock()
        .expect("forge lock")
        .pulls
        .iter()
        .filter(|p| p.repo == name && (state == "all" || p.state == state))
        .filter(|p| head.as_ref().is_none_or(|h| &p.head == h))
        .cloned()
        .collect::<Vec<_>>()
        .iter()
        .map(|p| pull_json(&forge, p))
        .collect();
    axum::Json(pulls).into_response()
}

/// `PATCH /repos/{owner}/{repo}/pulls/{number}` with `{"state": "closed"|"open"}`.
async fn update_pull(
    State(forge): State<Forge>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    body: Bytes,
) -> Response {
    let name = format!("{owner}/{repo}");
    let state = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["state"].as_str().map(String::from));
    let Some(state) = state.filter(|s| s == "open" || s == "closed") else {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, "state is open or closed");
    };
    let updated = {
        let mut inner = forge.inner.lock().expect("forge lock");
        inner
            .pulls
            .iter_mut()
            .find(|p| p.repo == name && p.number == number && !p.merged)
            .map(|p| {
                p.state = state.clone();
                p.clone()
            })
    };
    forge.record(Record {
        ts: canary_contract::time::now(),
        method: "PATCH".into(),
        path: format!("/repos/{name}/pulls/{number}"),
        status: if updated.is_some() { 200 } else { 404 },
        body: Some(serde_json::json!({"state": state})),
        pull_request: None,
        error: None,
    });
    match updated {
        Some(pr) => axum::Json(pull_json(&forge, &pr)).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// `PUT /repos/{owner}/{repo}/pulls/{number}/merge`: fast-forwards the base branch to the head
/// (the lab forge merges nothing else) and closes the pull request as merged.
async fn merge_pull(State(forge): State<Forge>, Path((owner, repo, number)): Path<(String, String, u64)>) -> Response {
    let name = format!("{owner}/{repo}");
    let Some(pr) = forge.pull(&owner, &repo, number, |p| p.state == "open") else {
        return json_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let dir = forge.bare(&owner, &repo);
    let ff = git_in(&dir, &["merge-base", "--is-ancestor", &pr.base_sha, &pr.head_sha])
        .await
        .is_ok()
        && git_in(
            &dir,
            &[
                "update-ref",
                &format!("refs/heads/{}", pr.base),
                &pr.head_sha,
                &pr.base_sha,
            ],
        )
        .await
        .is_ok();
    if !ff {
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "Pull Request is not mergeable");
    }
    {
        let mut inner = forge.inner.lock().expect("forge lock");
        if let Some(p) = inner.pulls.iter_mut().find(|p| p.repo == name && p.number == number) {
            p.state = "closed".into();
            p.merged = true;
        }
    }
    forge.record(Record {
        ts: canary_contract::time::now(),
        method: "PUT".into(),
        path: format!("/repos/{name}/pulls/{number}/merge"),
        status: 200,
        body: None,
        pull_request: None,
        error: None,
    });
    axum::Json(serde_json::json!({"sha": pr.head_sha, "merged": true, "message": "Pull Request successfully merged"}))
        .into_response()
}

/// A pull request in the shape of GitHub's REST API (the fields clients read).
fn pull_json(forge: &Forge, pr: &PullRequest) -> serde_json::Value {
    let base_url = forge.public_url.lock().expect("forge lock").clone();
    let owner = pr.repo.split('/').next().unwrap_or_default();
    let api = format!("{base_url}/repos/{}/pulls/{}", pr.repo, pr.number);
    let html = format!("{base_url}/{}/pull/{}", pr.repo, pr.number);
    // Accounts and repository objects are left out: clients treat them as optional, and a
    // lab forge has no users to describe.
    let end = |branch: &str, sha: &str| {
        serde_json::json!({
            "label": format!("{owner}:{branch}"), "ref": branch, "sha": sha,
        })
    };
    let now = canary_contract::time::now();
    serde_json::json!({
        "url": api, "id": pr.number, "node_id": format!("PR_lab_{}", pr.number),
        "html_url": html, "diff_url": format!("{html}.diff"), "patch_url": format!("{html}.patch"),
        "issue_url": format!("{base_url}/repos/{}/issues/{}", pr.repo, pr.number),
        "commits_url": format!("{api}/commits"), "review_comments_url": format!("{api}/comments"),
        "review_comment_url": format!("{base_url}/repos/{}/pulls/comments{{/number}}", pr.repo),
        "comments_url": format!("{base_url}/repos/{}/issues/{}/comments", pr.repo, pr.number),
        "statuses_url": format!("{base_url}/repos/{}/statuses/{}", pr.repo, pr.head_sha),
        "number": pr.number, "state": pr.state, "locked": false, "title": pr.title,
        "body": pr.body, "labels": [], "milestone": null,
        "created_at": now, "updated_at": now,
        "closed_at": if pr.state == "closed" { serde_json::json!(now) } else { serde_json::Value::Null },
        "merged_at": if pr.merged { serde_json::json!(now) } else { serde_json::Value::Null },
        "merge_commit_sha": null, "assignee": null, "assignees": [], "requested_reviewers": [],
        "requested_teams": [], "head": end(&pr.head, &pr.head_sha), "base": end(&pr.base, &pr.base_sha),
        "author_association": "OWNER", "draft": pr.draft, "merged": pr.merged, "mergeable": null,
        "comments": 0, "review_comments": 0, "commits": 1, "changed_files": pr.files.len(),
        "maintainer_can_modify": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_output_becomes_a_response() {
        let (status, r) = cgi_response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope").unwrap();
        assert_eq!(status, 404);
        assert_eq!(r.headers()["content-type"], "text/plain");
        let (status, _) = cgi_response(b"Content-Type: application/x-git\n\nbody").unwrap();
        assert_eq!(status, 200);
        assert!(cgi_response(b"no blank line").is_none());
    }

    #[test]
    fn names_cannot_escape_the_forge() {
        assert!(valid_name("golden-path.js-ts"));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }
}
