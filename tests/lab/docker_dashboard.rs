//! The dashboard and `report.html` in a real browser: Debian's Chromium, headless (installed by
//! `scripts/chromium.sh`), loads every page of `canary serve` against a registry filled by real
//! runs, and the test asserts on the DOM it built; a screenshot of each page is kept in the
//! test's output folder (`target/browser-shots/`).

use crate::helpers::{free_port, require_lab, root};
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    let out = Command::new(root().join("scripts/chromium.sh")).output().unwrap();
    assert!(
        out.status.success(),
        "Chromium is needed for the browser tests and could not be installed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The DOM Chromium built for `url`, and a screenshot of it at `shot`.
fn browse(browser: &Path, url: &str, shot: &Path) -> String {
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1280,1000",
    ];
    let profile = tempfile::tempdir().unwrap();
    let dom = Command::new(browser)
        .args(base)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "chromium {url}: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot_run = Command::new(browser)
        .args(base)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(shot_run.status.success() && shot.exists(), "no screenshot of {url}");
    String::from_utf8_lossy(&dom.stdout).to_string()
}

fn canary(reports: &Path, db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_canary"));
    c.current_dir(root())
        .arg("--reports-dir")
        .arg(reports)
        .arg("--registry")
        .arg(db)
        .env("CI", "true");
    c
}

struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_dashboard_page_and_a_report_render_in_a_real_browser() {
    require_lab();
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let (reports, db) = (dir.path().join("reports"), dir.path().join("registry.db"));
    let shots = root().join("target/browser-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let base = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(root())
        .args(["images", "base", "--json"])
        .output()
        .unwrap();
    let base: serde_json::Value = serde_json::from_slice(&base.stdout).unwrap();
    let image = base["reference"].as_str().unwrap().to_string();

    // Real runs fill the registry: a green one and a red one on the same build.
    let green = canary(&reports, &db)
        .args([
            "run",
            "--suite",
            "suites/demo.yaml",
            "--repo",
            "python",
            "--json",
            "--image",
            &image,
        ])
        .output()
        .unwrap();
    assert_eq!(
        green.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&green.stderr)
    );
    let red = canary(&reports, &db)
        .args([
            "run",
            "--suite",
            "tests/fixtures/suites/failing.yaml",
            "--json",
            "--image",
            &image,
        ])
        .output()
        .unwrap();
    assert_eq!(red.status.code(), Some(1), "{}", String::from_utf8_lossy(&red.stderr));
    let red: serde_json::Value = serde_json::from_slice(&red.stdout).unwrap();
    let red_run = red["run_id"].as_str().unwrap().to_string();
    // A channel, an org pin, and a heartbeat with a hostile runner id.
    let policy = dir.path().join("gate.yaml");
    std::fs::write(&policy, "beta:\n  required_suites: [demo]\n  repos: [python]\n").unwrap();
    let promoted = canary(&reports, &db)
        .args(["promote", &image, "--channel", "beta", "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(
        promoted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    canary(&reports, &db)
        .args(["pin", "--org", "acme", "--channel", "beta"])
        .output()
        .unwrap();
    // Where the build was published, as `canary images push` records it (the push itself is
    // tested against a real registry in docker_distribution).
    let image_id = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", &image])
        .output()
        .unwrap();
    let image_id = String::from_utf8_lossy(&image_id.stdout).trim().to_string();
    let pushed = format!("registry.lab.test:5000/canary/runner@{image_id}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let r = canary::registry::Registry::open(&db.display().to_string())
                .await
                .unwrap();
            r.record_push(&image_id.parse().unwrap(), &pushed.parse().unwrap())
                .await
                .unwrap();
        });
    let hb = dir.path().join("hb.json");
    std::fs::write(
        &hb,
        r#"{"type":"HEARTBEAT","runner_id":"<b id=pwned>x</b>","channel":"beta","versions":{"runner":"0.1.0"}}"#,
    )
    .unwrap();
    let beat = canary(&reports, &db).arg("heartbeat").arg(&hb).output().unwrap();
    assert_eq!(beat.status.code(), Some(0), "{}", String::from_utf8_lossy(&beat.stderr));

    // Anything but loopback is refused while no token exists to let anyone in.
    let open = canary(&reports, &db)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(open.status.code(), Some(2));

    // Every page needs an operator's token, on loopback too; the browser logs in with it as the
    // password of its own login prompt, here in the URL.
    let token_of = |args: &[&str]| {
        let created = canary(&reports, &db).args(args).output().unwrap();
        assert_eq!(
            created.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&created.stdout).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ops = token_of(&[
        "tokens",
        "create",
        "--operator",
        "release-desk",
        "--role",
        "operator",
        "--json",
    ]);
    let viewer = token_of(&[
        "tokens",
        "create",
        "--operator",
        "wallboard",
        "--role",
        "viewer",
        "--json",
    ]);
    let runner = token_of(&["tokens", "create", "--runner", "r-1", "--org", "acme", "--json"]);
    let port = free_port();
    let url = format!("http://release-desk:{ops}@127.0.0.1:{port}");
    let serve = Serve(
        canary(&reports, &db)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let overview = browse(&browser, &format!("{url}/"), &shots.join("overview.png"));
    assert!(overview.contains("id=\"channel-beta\""), "{overview}");
    assert!(
        overview.contains(&image) || overview.contains("data-component"),
        "{overview}"
    );
    assert!(overview.contains(">acme<"), "the org pin shows");
    let published = format!("published as <code>{pushed}</code>");
    assert_eq!(
        overview.matches(&published).count(),
        2,
        "the channel and the org following it name where the build was published: {overview}"
    );

    let history = browse(&browser, &format!("{url}/history"), &shots.join("history.png"));
    assert!(
        history.contains(&format!("<span class=\"pushed\" title=\"{pushed}\">published</span>")),
        "the build's column says it was published: {history}"
    );
    let cells = |status: &str| history.matches(&format!("data-status=\"{status}\"")).count();
    assert!(
        cells("pass") >= 1 && cells("fail") >= 1,
        "green and red cells: {history}"
    );
    // A red cell links to its case in the run's report.html, which answers.
    let link = format!("/reports/{red_run}/report.html#");
    assert!(history.contains(&link), "{history}");
    // ... and shows the command that reproduces it, as text a person can copy.
    assert!(
        history.contains(&format!("<code class=\"repro\">canary repro {red_run}/")),
        "{history}"
    );

    let fleet = browse(&browser, &format!("{url}/fleet"), &shots.join("fleet.png"));
    assert!(
        fleet.contains("&lt;b id=pwned&gt;x&lt;/b&gt;"),
        "the hostile runner id is text: {fleet}"
    );
    assert!(!fleet.contains("id=\"pwned\""), "and never markup");

    let audit = browse(
        &browser,
        &format!("{url}/audit?action=promote"),
        &shots.join("audit.png"),
    );
    assert!(
        audit.contains(">promote<") && !audit.contains(">pin<"),
        "the filter applies: {audit}"
    );

    let upstream = browse(&browser, &format!("{url}/upstream"), &shots.join("upstream.png"));
    assert!(upstream.contains("id=\"upstream\""));

    let report = browse(
        &browser,
        &format!("{url}/reports/{red_run}/report.html"),
        &shots.join("report.png"),
    );
    assert!(report.contains("data-status=\"failed\""), "{report}");
    assert!(
        report.contains("expected") && report.contains("Howdy"),
        "expected vs got shows"
    );
    assert!(report.contains(&format!("repro {red_run}/")), "the repro line shows");
    // The same file is in the run folder, self-contained.
    let file = reports.join(&red_run).join("report.html");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("<script") && !text.contains("<link"));

    // A path instead of a run id is refused; the API answers the same data as JSON.
    let client = |path: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {ops}\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(client("/reports/..%2F..%2Fetc/report.html").starts_with("HTTP/1.0 400"));
    let api = client("/api/history");
    assert!(api.starts_with("HTTP/1.0 200") && api.contains("\"rows\""), "{api}");

    // A SQLite registry takes one control plane at a time: the loopback one stops first.
    drop(serve);
    let wide = free_port();
    let _wide = Serve(
        canary(&reports, &db)
            .args(["serve", "--listen", &format!("0.0.0.0:{wide}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", wide)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let raw_at = |host: &str, path: &str, auth: Option<&str>| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", wide)).unwrap();
        use std::io::{Read, Write};
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let here = format!("127.0.0.1:{wide}");
    let raw = |path: &str, auth: Option<&str>| raw_at(&here, path, auth);
    for path in [
        "/",
        "/history",
        "/api/overview",
        "/v1/status",
        &format!("/reports/{red_run}/report.html"),
    ] {
        let refused = raw(path, None);
        assert!(refused.starts_with("HTTP/1.0 401"), "{path}: {refused}");
        assert!(
            refused.to_ascii_lowercase().contains("www-authenticate: basic"),
            "{refused}"
        );
        assert!(
            raw(
                path,
                Some("Bearer cl_000000000000_0000000000000000000000000000000000000000000000000000000000000000")
            )
            .starts_with("HTTP/1.0 401")
        );
        let allowed = raw(path, Some(&format!("Bearer {viewer}")));
        assert!(allowed.starts_with("HTTP/1.0 200"), "{path}: {allowed}");
        // What a browser is told about every answer.
        let head = allowed.to_ascii_lowercase();
        for h in [
            "content-security-policy: default-src 'none'",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "cache-control: no-store",
        ] {
            assert!(head.contains(h), "{path}: no {h}: {allowed}");
        }
        // A runner's token (a customer-hosted runner's too) never opens a page.
        let by_runner = raw(path, Some(&format!("Bearer {runner}")));
        assert!(by_runner.starts_with("HTTP/1.0 403"), "{path}: {by_runner}");
        // DNS rebinding: a page of evil.example resolved to this host sends its own Host name.
        let rebound = raw_at(&format!("evil.example:{wide}"), path, Some(&format!("Bearer {viewer}")));
        assert!(rebound.starts_with("HTTP/1.0 421"), "{path}: {rebound}");
    }
    // The audit log needs the operator role; a viewer is refused, an operator reads it.
    assert!(raw("/api/audit", Some(&format!("Bearer {viewer}"))).starts_with("HTTP/1.0 403"));
    assert!(raw("/api/audit", Some(&format!("Bearer {ops}"))).starts_with("HTTP/1.0 200"));
    // An operator's token does not speak for a runner.
    let as_runner = raw(
        "/v1/assignment?runner=release-desk&org=acme&session=s1",
        Some(&format!("Bearer {ops}")),
    );
    assert!(as_runner.starts_with("HTTP/1.0 403"), "{as_runner}");
    assert!(raw("/healthz", None).starts_with("HTTP/1.0 200"), "health stays open");
    let behind = browse(
        &browser,
        &format!("http://wallboard:{viewer}@127.0.0.1:{wide}/"),
        &shots.join("overview-with-token.png"),
    );
    assert!(behind.contains("id=\"channel-beta\""), "{behind}");
}
