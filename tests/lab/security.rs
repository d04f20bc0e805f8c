//! Security regressions, one per class of hostile input found by the hostile-input review:
//! host commands through git, path traversal through the cache, gate bypasses, pins that do not
//! pin, panics on user-controlled ids and closed pipes, escape sequences from heartbeats. Each
//! asserts what a user would see (exit code, the located message) and that nothing was written.

use crate::helpers::{Canary, write_temp};
use std::path::Path;

/// A repos folder holding one repo whose manifest is `manifest`.
fn repo_with(manifest: &str) -> tempfile::TempDir {
    let repos = tempfile::tempdir().unwrap();
    std::fs::create_dir(repos.path().join("evil")).unwrap();
    std::fs::write(repos.path().join("evil/canary-repo.yaml"), manifest).unwrap();
    repos
}

fn repos_list(repos: &Path, cache: &Path) -> crate::helpers::Ran {
    let (_c, config) = write_temp("canary.yaml", &format!("cache_dir: {}\n", cache.display()));
    Canary::new()
        .arg_path_flag("--config", &config)
        .arg_path_flag("--repos-dir", repos)
        .args(["repos", "list"])
        .run()
}

#[test]
fn an_upstream_url_never_reaches_git_as_an_option() {
    let marker = tempfile::tempdir().unwrap();
    let pwned = marker.path().join("pwned");
    let manifest = format!(
        "id: evil\nlanguage: text\ntest: 'true'\ndigest: sha256:x\nupstream:\n  url: --upload-pack=touch {}\n  commit: 0123456789abcdef0123456789abcdef01234567\n",
        pwned.display()
    );
    let repos = repo_with(&manifest);
    let cache = tempfile::tempdir().unwrap();
    let out = repos_list(repos.path(), cache.path()).code(2);
    assert!(out.stderr().contains("canary-repo.yaml:6:8"), "{}", out.stderr());
    assert!(out.stderr().contains("is not an allowed git URL"), "{}", out.stderr());
    assert!(!pwned.exists(), "git ran the attacker's command");
    assert!(!cache.path().join("repos").exists(), "nothing was written");
    // `ext::` transports run commands too.
    let repos = repo_with(&manifest.replace("--upload-pack=touch", "ext::sh -c touch"));
    repos_list(repos.path(), cache.path()).code(2);
    assert!(!pwned.exists());
}

#[test]
fn an_upstream_commit_never_becomes_a_path() {
    let repos = repo_with(
        "id: evil\nlanguage: text\ntest: 'true'\ndigest: sha256:x\nupstream:\n  url: https://example.invalid/r.git\n  commit: ../../../outside\n",
    );
    let cache = tempfile::tempdir().unwrap();
    let out = repos_list(repos.path(), cache.path()).code(2);
    assert!(out.stderr().contains("canary-repo.yaml:7:11"), "{}", out.stderr());
    assert!(out.stderr().contains("not a full commit id"), "{}", out.stderr());
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_none(),
        "nothing was written"
    );
}

#[test]
fn a_changed_repo_command_breaks_the_pin() {
    let repos = tempfile::tempdir().unwrap();
    let src = crate::helpers::root().join("canary-repos/python");
    let dst = repos.path().join("python");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        } else if entry.file_name() != "__pycache__" && entry.file_name() != ".pytest_cache" {
            let status = std::process::Command::new("cp")
                .arg("-r")
                .arg(entry.path())
                .arg(&dst)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    let cache = tempfile::tempdir().unwrap();
    repos_list(repos.path(), cache.path()).code(0);
    let manifest = dst.join("canary-repo.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let test_line = text.lines().find(|l| l.starts_with("test:")).unwrap().to_string();
    std::fs::write(&manifest, text.replace(&test_line, "test: \"true\"")).unwrap();
    repos_list(repos.path(), cache.path()).code(1).stdout_has("MISMATCH");
}

#[test]
fn an_empty_gate_selection_is_a_located_policy_error() {
    let (_d, policy) = write_temp("gate.yaml", "stable:\n  required_suites: [golden-path]\n  repos: []\n");
    let out = Canary::new()
        .args(["promote", "sha256:0000000000", "--channel", "stable", "--policy"])
        .arg_path(&policy)
        .run()
        .code(2);
    assert!(out.stderr().contains("gate.yaml:3:10"), "{}", out.stderr());
    assert!(out.stderr().contains("repos is empty"), "{}", out.stderr());
}

#[test]
fn user_ids_and_closed_pipes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let out = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["promote", "ÄÖÜäöüßÄÖÜäöüßÄÖÜ", "--channel", "stable"])
        .run();
    assert_eq!(out.out.status.code(), Some(2), "{}", out.stderr());
    assert!(!out.stderr().contains("panicked"), "{}", out.stderr());

    // `canary status --json | head -c 10`: the reader goes away, the command does not panic.
    Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["registry", "init"])
        .run()
        .code(0);
    let (mut cmd, _reports) = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["status", "--json"])
        .command();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn heartbeats_are_validated_and_the_newest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let send = |text: &str| {
        let (_d, f) = write_temp("hb.json", text);
        Canary::new()
            .arg_path_flag("--registry", &db)
            .args(["heartbeat", "--json"])
            .arg_path(&f)
            .run()
    };
    // An escape sequence in the runner id is refused, not printed raw.
    let out = send(r#"{"runner_id": "eu\u001b[2J", "versions": {"runner": "1"}}"#).code(2);
    assert!(
        !out.stderr().contains('\u{1b}'),
        "escape printed raw: {:?}",
        out.stderr()
    );
    // Wrong-typed org is an error, not silently dropped.
    send(r#"{"runner_id": "eu-1", "org": 7, "versions": {"runner": "1"}}"#).code(2);
    // Newest wins, whatever the arrival order.
    send(r#"{"runner_id": "eu-1", "versions": {"runner": "2"}, "ts": "2026-11-22T10:00:00Z"}"#).code(0);
    send(r#"{"runner_id": "eu-1", "versions": {"runner": "1"}, "ts": "2026-11-22T09:00:00+00:00"}"#).code(0);
    let status = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["status", "--json"])
        .run()
        .code(0)
        .json();
    assert_eq!(status["runners"][0]["versions"]["runner"], "2", "{status}");
}

fn status_with(registry: &str) -> crate::helpers::Ran {
    Canary::new().args(["--registry", registry, "status"]).run()
}

#[test]
fn a_registry_that_is_not_ours_is_refused_at_once_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Another application's SQLite database: never migrated into a registry.
    let foreign = dir.path().join("app.db");
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", foreign.display()))
                .await
                .unwrap();
            sqlx::query("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
                .execute(&mut c)
                .await
                .unwrap();
        });
    }
    let before = std::fs::read(&foreign).unwrap();
    for cmd in [&["status"][..], &["pin", "--org", "acme", "--channel", "beta"][..]] {
        let out = Canary::new()
            .arg_path_flag("--registry", &foreign)
            .args(cmd.iter().copied())
            .run()
            .code(2);
        assert!(
            out.stderr().contains("not a Canary Lab registry") && out.stderr().contains("invoices"),
            "{}",
            out.stderr()
        );
        assert!(
            out.stderr().contains("never migrates another application's database"),
            "{}",
            out.stderr()
        );
    }
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        before,
        "the foreign file is unchanged"
    );

    // A file that is not a database: a named cause at once, not a pool timeout.
    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, "hello, this is text and not a database at all\n").unwrap();
    let started = std::time::Instant::now();
    let out = status_with(junk.to_str().unwrap()).code(2);
    assert!(out.stderr().contains("is not a SQLite database"), "{}", out.stderr());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // A damaged SQLite file (right header, garbage after it).
    let damaged = dir.path().join("damaged.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 8192));
    std::fs::write(&damaged, &bytes).unwrap();
    let out = status_with(damaged.to_str().unwrap()).code(2);
    assert!(out.stderr().contains("cannot be read"), "{}", out.stderr());
}

#[test]
fn registry_urls_and_paths_never_create_what_the_user_did_not_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let here = |p: &str| dir.path().join(p).display().to_string();
    // An unknown scheme is an error, not a file named `mysql:`.
    let out = Canary::new()
        .args([
            "--registry",
            "mysql://root:secret@db/canary",
            "pin",
            "--org",
            "acme",
            "--channel",
            "beta",
        ])
        .run()
        .code(2);
    assert!(out.stderr().contains("unknown URL scheme `mysql`"), "{}", out.stderr());
    assert!(
        !out.stderr().contains("secret"),
        "the password is masked: {}",
        out.stderr()
    );
    // A typo in a folder: no folders are created.
    let typo = here("regsitry/sub/registry.db");
    let out = Canary::new()
        .args(["--registry", &typo, "pin", "--org", "acme", "--channel", "beta"])
        .run()
        .code(2);
    assert!(out.stderr().contains("does not exist"), "{}", out.stderr());
    assert!(!dir.path().join("regsitry").exists());
    // Read-only commands create nothing.
    let missing = here("registry.db");
    for cmd in [&["status"][..], &["registry", "builds"][..], &["registry", "audit"][..]] {
        let out = Canary::new()
            .args(["--registry", &missing])
            .args(cmd.iter().copied())
            .run()
            .code(2);
        assert!(out.stderr().contains("no registry there yet"), "{}", out.stderr());
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was created"
    );
}

#[cfg(unix)]
#[test]
fn a_read_only_registry_serves_reads_and_refuses_writes_by_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["pin", "--org", "acme", "--channel", "beta"])
        .run()
        .code(0);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["status", "--json"])
        .run()
        .code(0);
    assert_eq!(out.json()["orgs"][0]["org"], "acme");
    // The file's mode is honoured even for root, who could write through it.
    let out = Canary::new()
        .arg_path_flag("--registry", &db)
        .args(["pin", "--org", "acme", "--channel", "stable"])
        .run()
        .code(2);
    assert!(out.stderr().contains("read-only"), "{}", out.stderr());
}

/// `canary serve`'s values are checked before anything is opened: out-of-bounds durations and a
/// `--public-url` that is not one exit 2, name the bound or the fault, and write no registry.
#[test]
fn serve_refuses_bad_values_before_it_opens_anything() {
    for (args, says) in [
        (vec!["--tick", "0s"], "between 100ms and 1h"),
        (vec!["--tick", "9999999999h"], "between 100ms and 1h"),
        (vec!["--header-timeout", "0s"], "between 1s and 10m"),
        (vec!["--public-url", "file:///etc/passwd"], "not an http(s) URL"),
        (
            vec!["--public-url", "https://admin:pw@canary.example"],
            "carries credentials",
        ),
        (vec!["--public-url", "https://"], "no host"),
        (vec!["--tuf", "tuf"], "--online-key"),
        (vec!["--online-key", "online.key"], "--tuf"),
        (
            vec![
                "--tuf",
                "no-such-roots",
                "--online-key",
                "online.key",
                "--timestamp-lifetime",
                "1s",
            ],
            "between 2s and 30days",
        ),
        (
            vec!["--tuf", "no-such-roots", "--online-key", "no-such.key"],
            "cannot read no-such",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("registry.db");
        let out = Canary::new()
            .arg_path_flag("--registry", &db)
            .args(["serve"])
            .args(&args)
            .run()
            .code(2);
        assert!(out.stderr().contains(says), "{args:?}: {}", out.stderr());
        assert!(!db.exists(), "{args:?}: a registry was written");
    }
}

/// Every command that prints, run with a stdout whose reader is gone (`| head -c0`): none panics,
/// each ends with the exit code it would have had.
#[test]
fn no_command_panics_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let reg = db.display().to_string();
    let keys = dir.path().join("keys");
    let home = dir.path().join("host");
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        std::process::Stdio::from(writer)
    };
    let run = |bin: &str, args: &[&str], want: i32| {
        let out = std::process::Command::new(bin)
            .args(args)
            .stdout(closed())
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(want), "{args:?}: {stderr}");
    };
    let canary = env!("CARGO_BIN_EXE_canary");
    let runner = crate::helpers::runner_exe();
    let keys_arg = keys.display().to_string();
    let home_arg = home.display().to_string();
    for (args, want) in [
        (vec!["--registry", &reg, "registry", "init"], 0),
        (vec!["--registry", &reg, "status", "--json"], 0),
        (vec!["--registry", &reg, "status"], 0),
        (
            vec![
                "--registry",
                &reg,
                "tokens",
                "create",
                "--runner",
                "r-1",
                "--org",
                "acme",
            ],
            0,
        ),
        (
            vec![
                "--registry",
                &reg,
                "tokens",
                "create",
                "--operator",
                "ops",
                "--role",
                "viewer",
                "--json",
            ],
            0,
        ),
        (vec!["--registry", &reg, "tokens", "list"], 0),
        (vec!["--registry", &reg, "registry", "audit", "--json"], 0),
        (vec!["--registry", &reg, "rollout", "list"], 0),
        (vec!["keys", "create", "--out", &keys_arg], 0),
        (vec!["schema", "suite"], 0),
        (vec!["suites", "check", "suites/demo.yaml"], 0),
    ] {
        run(canary, &args, want);
    }
    for (args, want) in [
        (
            vec![
                "update",
                "--home",
                &home_arg,
                "init",
                "--server",
                "http://127.0.0.1:9",
                "--runner-id",
                "h-1",
            ],
            0,
        ),
        (vec!["update", "--home", &home_arg, "status"], 0),
        (vec!["update", "--home", &home_arg, "--json", "status"], 0),
        (vec!["heartbeat", "--runner-id", "h-1"], 0),
    ] {
        run(runner, &args, want);
    }
}
