//! The lab forge and the runner's `pr` command on this machine, without containers: a real git
//! workspace pushed over smart HTTP to the forge, and a draft pull request opened through
//! octocrab against the forge's API.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn events(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn pr(ws: &Path, url: &str, repo: &str, branch: &str, base: &str) -> std::process::Output {
    Command::new(crate::helpers::runner_exe())
        .args([
            "pr",
            "--remote",
            &format!("{url}/git/{repo}.git"),
            "--api-url",
            url,
            "--repo",
            repo,
        ])
        .args(["--branch", branch, "--base", base, "--title", "Say howdy"])
        .current_dir(ws)
        .env_remove("GITHUB_TOKEN")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_pushes_a_branch_and_opens_a_draft_pr_on_the_forge() {
    let dir = tempfile::tempdir().unwrap();
    let forge = canary::forge::Forge::new(dir.path().join("forge"));
    let (addr, _server) = forge.clone().serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{addr}");

    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    git(&ws, &["init", "-q", "-b", "main"]);
    std::fs::write(ws.join("greeting.txt"), "hello\n").unwrap();
    git(&ws, &["add", "."]);
    git(&ws, &["commit", "-qm", "pinned"]);
    let head = git(&ws, &["rev-parse", "HEAD"]);
    git(
        &ws,
        &["push", "-q", &format!("{url}/git/lab/repo.git"), "HEAD:refs/heads/main"],
    );

    std::fs::write(ws.join("greeting.txt"), "howdy\n").unwrap();
    std::fs::write(ws.join("new.txt"), "new\n").unwrap();
    let ws2 = ws.clone();
    let url2 = url.clone();
    let out = tokio::task::spawn_blocking(move || pr(&ws2, &url2, "lab/repo", "canary/howdy", "main"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let ev = events(&out);
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["DIFF_READY", "PR_OPENED"]);
    assert_eq!(ev[0]["files"], serde_json::json!(["greeting.txt", "new.txt"]));
    assert_eq!(ev[1]["draft"], true);
    assert_eq!(ev[1]["branch"], "canary/howdy");
    assert_eq!(ev[1]["url"], format!("{url}/lab/repo/pull/1"));

    // The workspace is as the agent left it: HEAD, index and files untouched.
    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&ws, &["status", "--porcelain"]), " M greeting.txt\n?? new.txt\n");

    // The forge saw the push and the API call, and computed the same diff from what it got.
    let records = forge.records();
    let created = records
        .iter()
        .find_map(|r| r.pull_request.clone())
        .expect("a PR record");
    assert!(created.draft);
    assert_eq!((created.head.as_str(), created.base.as_str()), ("canary/howdy", "main"));
    assert_eq!(created.patch, ev[0]["patch"].as_str().unwrap());
    assert!(
        records
            .iter()
            .any(|r| r.path.ends_with("git-receive-pack") && r.status == 200)
    );

    // The API reads the PR back as GitHub would.
    let back: serde_json::Value = reqwest_get(&format!("{url}/repos/lab/repo/pulls/1")).await;
    assert_eq!(back["draft"], true);
    assert_eq!(back["head"]["ref"], "canary/howdy");

    // Faults: a base branch the forge lacks is GitHub's 422, reported as an ERROR event; a
    // second push of a diverged branch is refused (never force-pushed).
    let (ws2, url2) = (ws.clone(), url.clone());
    let out = tokio::task::spawn_blocking(move || pr(&ws2, &url2, "lab/repo", "canary/other", "release"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let last = events(&out).pop().unwrap();
    assert_eq!(last["kind"], "pr_failed");
    assert!(
        last["message"].as_str().unwrap().contains("422") && last["message"].as_str().unwrap().contains("release"),
        "{last}"
    );
    let (ws2, url2) = (ws.clone(), url.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        pr(&ws2, &url2, "lab/repo", "canary/howdy", "main")
    })
    .await
    .unwrap();
    let last = events(&out).pop().unwrap();
    assert_eq!(last["kind"], "push_failed", "{last}");
}

#[test]
fn a_workspace_without_changes_proposes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("a"), "a\n").unwrap();
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-qm", "pinned"]);
    let out = pr(dir.path(), "http://127.0.0.1:9", "lab/repo", "canary/x", "main");
    assert_eq!(out.status.code(), Some(1));
    let ev = events(&out);
    assert_eq!(ev.len(), 1, "no push, no API call: {ev:?}");
    assert_eq!(ev[0]["kind"], "nothing_to_propose");
}

async fn reqwest_get(url: &str) -> serde_json::Value {
    canary::init_tls();
    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&body).unwrap()
}
