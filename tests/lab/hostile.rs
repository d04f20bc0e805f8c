//! The hostile-input corpus (`tests/fixtures/hostile/`): malformed and hostile suites, repo
//! manifests, gate policies, lab configs, bundle manifests, heartbeats and command lines. Each
//! input must be refused as the docs say (exit 2), with the file and line where one applies, a
//! help line, its JSON error object under `--json`, no panic, no escape sequence echoed, and
//! nothing written: no registry, no report folder, no cache.

use crate::helpers::{Canary, root};
use std::path::{Path, PathBuf};

/// What a fixture's first line says it must produce: `# expect: exit=2 line=8 says=...`.
struct Expect {
    exit: i32,
    line: Option<u32>,
    says: String,
}

fn expectation(file: &Path) -> Expect {
    let bytes = std::fs::read(file).unwrap();
    let first = String::from_utf8_lossy(bytes.split(|b| *b == b'\n').next().unwrap()).to_string();
    let rest = first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("{}: the first line must be `# expect: ...`", file.display()));
    let (exit, rest) = rest.split_once(' ').unwrap();
    let (line, says) = rest.split_once(' ').unwrap();
    Expect {
        exit: exit.strip_prefix("exit=").unwrap().parse().unwrap(),
        line: match line.strip_prefix("line=").unwrap() {
            "-" => None,
            n => Some(n.parse().unwrap()),
        },
        says: says.strip_prefix("says=").unwrap().to_string(),
    }
}

/// A scratch folder for one case, with a lab config that sends every write into it.
struct Scratch {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lab.yaml");
        std::fs::write(
            &config,
            format!(
                "cache_dir: {0}/cache\nreports_dir: {0}/reports\nregistry: {0}/registry.db\n",
                dir.path().display()
            ),
        )
        .unwrap();
        Scratch { dir, config }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Every file below the scratch folder that the test did not put there.
    fn written(&self, ours: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let rel = e.path().strip_prefix(self.dir.path()).unwrap().display().to_string();
                if ours.iter().any(|o| rel == *o || rel.starts_with(&format!("{o}/"))) {
                    continue;
                }
                if e.path().is_dir() {
                    stack.push(e.path());
                }
                out.push(rel);
            }
        }
        out
    }
}

/// Runs one case and checks everything a user would notice.
fn check(name: &str, scratch: &Scratch, ours: &[&str], canary: Canary, want: &Expect, file: Option<&str>) -> usize {
    let out = canary.run();
    let (stdout, stderr) = (out.stdout(), out.stderr());
    let code = out.out.status.code();
    let mut problems = Vec::new();
    if code != Some(want.exit) {
        problems.push(format!("exit {code:?}, wanted {}", want.exit));
    }
    if stderr.contains("panicked") || code == Some(101) {
        problems.push("panicked".into());
    }
    if !stderr.contains(&want.says) {
        problems.push(format!("stderr lacks {:?}", want.says));
    }
    // miette's `help:` line, or the argument parser's pointer to --help.
    if !stderr.contains("help:") && !stderr.contains("try '--help'") {
        problems.push("no help line".into());
    }
    if stdout.contains('\u{1b}') || stderr.contains('\u{1b}') {
        problems.push("an escape sequence reached the terminal".into());
    }
    match serde_json::from_str::<serde_json::Value>(stdout.trim()) {
        Ok(v) => {
            let e = &v["error"];
            if !e["message"].is_string() || !e["help"].is_string() || e["exit_code"] != want.exit {
                problems.push(format!("the JSON error object is incomplete: {v}"));
            }
            if let (Some(line), Some(file)) = (want.line, file) {
                let loc = e["location"].as_str().unwrap_or("");
                if !(loc.starts_with(file) && loc.contains(&format!(":{line}:"))) {
                    problems.push(format!("JSON location {loc:?}, wanted {file}:{line}:<column>"));
                }
            }
        }
        Err(_) => problems.push(format!("stdout is not one JSON error object: {stdout:?}")),
    }
    if let (Some(line), Some(file)) = (want.line, file) {
        if !stderr.contains(&format!("{file}:{line}:")) {
            problems.push(format!("stderr does not locate {file}:{line}:<column>"));
        }
    }
    if out.report_dirs() > 0 {
        problems.push("a report folder was written".into());
    }
    let written = scratch.written(ours);
    if !written.is_empty() {
        problems.push(format!("wrote {written:?}"));
    }
    if problems.is_empty() {
        0
    } else {
        eprintln!("{name}: {}\n--- stderr\n{stderr}", problems.join("; "));
        1
    }
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/hostile").join(kind))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

#[test]
fn every_hostile_input_is_refused_cleanly() {
    let mut failures = 0;
    let mut total = 0;

    for file in fixtures("suites") {
        let want = expectation(&file);
        let s = Scratch::new();
        let c = Canary::new()
            .arg_path_flag("--config", &s.config)
            .args(["suites", "check", "--json", &rel(&file)]);
        failures += check(&rel(&file), &s, &["lab.yaml"], c, &want, Some(&rel(&file)));
        total += 1;
    }

    for file in fixtures("repos") {
        let want = expectation(&file);
        let s = Scratch::new();
        let repo = s.path("repos/r");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::copy(&file, repo.join("canary-repo.yaml")).unwrap();
        std::fs::write(repo.join("README.md"), "a repo\n").unwrap();
        let manifest = repo.join("canary-repo.yaml").display().to_string();
        let c = Canary::new()
            .arg_path_flag("--config", &s.config)
            .arg_path_flag("--repos-dir", &s.path("repos"))
            .args(["repos", "list", "--json"]);
        failures += check(&rel(&file), &s, &["lab.yaml", "repos"], c, &want, Some(&manifest));
        total += 1;
    }

    for file in fixtures("policies") {
        let want = expectation(&file);
        let s = Scratch::new();
        let c = Canary::new().arg_path_flag("--config", &s.config).args([
            "promote",
            "sha256:00",
            "--channel",
            "beta",
            "--dry-run",
            "--json",
            "--policy",
            &rel(&file),
        ]);
        failures += check(&rel(&file), &s, &["lab.yaml"], c, &want, Some(&rel(&file)));
        total += 1;
    }

    for file in fixtures("configs") {
        let want = expectation(&file);
        let s = Scratch::new();
        let c = Canary::new()
            .args(["--config", &rel(&file)])
            .arg_path_flag("--registry", &s.path("registry.db"))
            .args(["status", "--json"]);
        failures += check(&rel(&file), &s, &["lab.yaml"], c, &want, Some(&rel(&file)));
        total += 1;
    }

    for file in fixtures("bundles") {
        let want = expectation(&file);
        let s = Scratch::new();
        let c = Canary::new().arg_path_flag("--config", &s.config).args([
            "compat",
            "check",
            "--runtime",
            "1.0.0",
            "--json",
            &rel(&file),
        ]);
        failures += check(&rel(&file), &s, &["lab.yaml"], c, &want, Some(&rel(&file)));
        total += 1;
    }

    #[derive(serde::Deserialize)]
    struct Heartbeat {
        name: String,
        says: String,
        body: String,
    }
    let text = std::fs::read_to_string(root().join("tests/fixtures/hostile/heartbeats.yaml")).unwrap();
    let beats: Vec<Heartbeat> = serde_saphyr::from_str(&text).unwrap();
    for h in beats {
        let s = Scratch::new();
        let file = s.path("hb.json");
        std::fs::write(&file, &h.body).unwrap();
        let want = Expect {
            exit: 2,
            line: None,
            says: h.says,
        };
        let c = Canary::new()
            .arg_path_flag("--config", &s.config)
            .args(["heartbeat", "--json"])
            .arg_path(&file);
        failures += check(
            &format!("heartbeat {}", h.name),
            &s,
            &["lab.yaml", "hb.json"],
            c,
            &want,
            None,
        );
        total += 1;
    }

    #[derive(serde::Deserialize)]
    struct RootFile {
        name: String,
        says: String,
        body: String,
    }
    let text = std::fs::read_to_string(root().join("tests/fixtures/hostile/roots.yaml")).unwrap();
    let roots: Vec<RootFile> = serde_saphyr::from_str(&text).unwrap();
    for r in roots {
        let s = Scratch::new();
        let dir = s.path("tuf");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("1.root.json"), &r.body).unwrap();
        let want = Expect {
            exit: 2,
            line: None,
            says: r.says,
        };
        let c = Canary::new()
            .arg_path_flag("--config", &s.config)
            .args(["keys", "rotate", "--json"])
            .arg_path_flag("--dir", &dir)
            .arg_path_flag("--old-key", &s.path("old.key"))
            .arg_path_flag("--root-key", &s.path("new.key"));
        failures += check(&format!("root {}", r.name), &s, &["lab.yaml", "tuf"], c, &want, None);
        if std::fs::read_dir(&dir).unwrap().count() != 1 {
            eprintln!("root {}: wrote into the root folder", r.name);
            failures += 1;
        }
        total += 1;
    }

    #[derive(serde::Deserialize)]
    struct Args {
        name: String,
        exit: i32,
        says: String,
        args: Vec<String>,
    }
    let text = std::fs::read_to_string(root().join("tests/fixtures/hostile/args.yaml")).unwrap();
    let lines: Vec<Args> = serde_saphyr::from_str(&text).unwrap();
    for a in lines {
        let s = Scratch::new();
        let want = Expect {
            exit: a.exit,
            line: None,
            says: a.says,
        };
        let c = Canary::new().arg_path_flag("--config", &s.config).args(&a.args);
        failures += check(&format!("args {}", a.name), &s, &["lab.yaml"], c, &want, None);
        total += 1;
    }

    assert!(
        total >= 150,
        "the corpus holds {total} inputs; it must hold at least 150"
    );
    assert_eq!(
        failures, 0,
        "{failures} of {total} hostile inputs were not refused cleanly (see above)"
    );
}
