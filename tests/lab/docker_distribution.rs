//! Runner builds published to an OCI registry and taken by engines that never built them: a
//! real docker-registry with TLS from a test CA and htpasswd logins (`scripts/oci-registry.sh`),
//! and a second Docker engine in its own network namespace (`scripts/engines.sh`), reached over
//! its own socket as another machine's engine would be.

use crate::helpers::*;
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const USER: &str = "lab";
pub const PASSWORD: &str = "s3cret-test";

/// Extra engines for one test, removed when it ends (pass or fail). Tests that use them take
/// turns (an exclusive lock held while they live): one test's `down` would end another's engines.
pub struct Engines {
    /// (name, socket) of each.
    pub all: Vec<(String, String)>,
    _turn: std::fs::File,
}

impl Engines {
    pub fn up(n: usize) -> Engines {
        use std::os::fd::AsRawFd;
        let turn = std::fs::File::create(std::env::temp_dir().join("canary-engines.lock")).unwrap();
        assert_eq!(unsafe { libc::flock(turn.as_raw_fd(), libc::LOCK_EX) }, 0);
        // Fresh engines: a test killed at its timeout leaves its own up, with what it pulled.
        let _ = Command::new(root().join("scripts/engines.sh")).arg("down").output();
        let out = Command::new(root().join("scripts/engines.sh"))
            .args(["up", &n.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/engines.sh up {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), format!("unix://{}", f[1]))
            })
            .collect();
        Engines { all, _turn: turn }
    }

    /// The folder of the lab's client certificate for the engines' TLS ports.
    pub fn client_tls() -> String {
        let out = Command::new(root().join("scripts/engines.sh"))
            .arg("client")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts again any engine whose daemon died (the others are kept as they are).
    pub fn restart(&self) {
        let out = Command::new(root().join("scripts/engines.sh"))
            .args(["up", &self.all.len().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// The lab's containers on engine `i`, as the docker CLI lists them (ids, one per line).
    pub fn lab_containers(&self, i: usize) -> String {
        let out = on(self.host(i), &["ps", "-aq", "--filter", "label=canary-lab"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `kill -9` of engine `i`'s daemon (0-based): its containers stay, nothing answers for them.
    pub fn kill(&self, i: usize) {
        let name = &self.all[i].0;
        let pid = std::fs::read_to_string(format!("/run/canary-engines/{name}/dockerd.pid")).unwrap();
        let killed = Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
        assert!(killed.success(), "kill -9 of {name}'s dockerd");
    }

    /// `DOCKER_HOST` of engine `i` (0-based).
    pub fn host(&self, i: usize) -> &str {
        &self.all[i].1
    }

    /// The lab host's address as the engines reach it.
    pub fn lab_address() -> String {
        let out = Command::new(root().join("scripts/engines.sh"))
            .arg("address")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/engines.sh")).arg("down").output();
    }
}

/// A registry for one test, stopped when it ends.
pub struct OciRegistry {
    pub host: String,
    dir: tempfile::TempDir,
}

impl OciRegistry {
    pub fn start(address: &str) -> OciRegistry {
        installed("oci-registry.sh");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().to_string();
        let out = Command::new(root().join("scripts/oci-registry.sh"))
            .args([
                "start",
                &dir.path().display().to_string(),
                address,
                &port,
                USER,
                PASSWORD,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/oci-registry.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        OciRegistry {
            host: format!("{address}:{port}"),
            dir,
        }
    }

    /// The folder holding its CA (`ca.crt`) and its server's certificate and key.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes the registry stores: what pushes have sent it.
    pub fn stored(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p).map_or(0, |rd| {
                rd.flatten()
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => walk(&e.path()),
                        _ => e.metadata().map_or(0, |m| m.len()),
                    })
                    .sum()
            })
        }
        walk(&self.dir.path().join("data"))
    }

    /// The file the registry keeps a blob in.
    pub fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A Docker client config holding a login for this registry, as `docker login` writes it.
    pub fn docker_config(&self, password: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        std::fs::write(
            d.path().join("config.json"),
            format!(r#"{{"auths": {{"https://{}": {{"auth": "{auth}"}}}}}}"#, self.host),
        )
        .unwrap();
        d
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/oci-registry.sh"))
            .args(["stop", &self.dir.path().display().to_string()])
            .output();
    }
}

/// The docker CLI against `engine` (`""`: the lab's own).
fn on(engine: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("docker");
    if !engine.is_empty() {
        cmd.env("DOCKER_HOST", engine);
    }
    cmd.args(args).output().unwrap()
}

fn image_id(engine: &str, reference: &str) -> Option<String> {
    let out = on(engine, &["image", "inspect", "--format", "{{.Id}}", reference]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn a_build_pushed_once_runs_on_an_engine_that_never_built_it_and_a_candidate_moves_one_layer() {
    require_lab();
    let engines = Engines::up(1);
    let registry = OciRegistry::start(&Engines::lab_address());
    let remote = engines.host(0).to_string();
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("registry.db").display().to_string();
    let repo = format!("{}/canary/builds", registry.host);
    let login = registry.docker_config(PASSWORD);
    let login_dir = login.path().display().to_string();

    let a = two_cli_build();
    let (a_ref, a_id) = (
        a["reference"].as_str().unwrap().to_string(),
        a["id"].as_str().unwrap().to_string(),
    );

    // Credentials come from the Docker config or the environment: without them, or with a wrong
    // password, the registry's refusal is an error that says how to log in.
    let nobody = tempfile::tempdir().unwrap();
    Canary::new()
        .args(["--registry", &db, "images", "push", &a_ref, "--to", &repo])
        .env("DOCKER_CONFIG", &nobody.path().display().to_string())
        .run()
        .code(2)
        .stderr_has("docker login")
        .stderr_has("no basic auth credentials");
    Canary::new()
        .args(["--registry", &db, "images", "push", &a_ref, "--to", &repo])
        .env("CANARY_REGISTRY_USERNAME", USER)
        .env("CANARY_REGISTRY_PASSWORD", "wrong")
        .run()
        .code(2)
        .stderr_has("the registry refused the credentials");
    Canary::new()
        .args([
            "--registry",
            &db,
            "images",
            "push",
            &a_ref,
            "--to",
            &format!("http://{repo}"),
        ])
        .run()
        .code(2)
        .stderr_has("TLS only");
    assert_eq!(registry.stored(), 0, "nothing reached the registry");

    let before = registry.stored();
    let pushed_a = Canary::new()
        .args(["--registry", &db, "images", "push", &a_ref, "--to", &repo, "--json"])
        .env("DOCKER_CONFIG", &login_dir)
        .run()
        .code(0)
        .json();
    let a_bytes = registry.stored() - before;
    let a_pushed = pushed_a["pushed"].as_str().unwrap().to_string();
    assert!(a_pushed.starts_with(&format!("{repo}@sha256:")), "{pushed_a}");
    assert_eq!(pushed_a["build"], a_id.as_str());
    assert_eq!(pushed_a["transfer"]["layers_present"], 0, "{pushed_a}");
    let a_layers = pushed_a["transfer"]["layers_moved"].as_u64().unwrap();
    assert!(a_layers >= 4, "base, runner and two CLIs: {pushed_a}");
    // The registry's name is taken off again: the build keeps only the lab's own.
    assert!(image_id("", &format!("{repo}:{}", &a_ref["canary-lab/build:".len()..])).is_none());

    // A one-CLI candidate: only its new layer is sent.
    let b = Canary::new()
        .args([
            "images",
            "build",
            "--from",
            &a_ref,
            "--set",
            "claude-code@sdk-0.2.187",
            "--json",
        ])
        .run()
        .code(0)
        .json();
    let (b_ref, b_id) = (
        b["reference"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    let before = registry.stored();
    let pushed_b = Canary::new()
        .args(["--registry", &db, "images", "push", &b_ref, "--to", &repo, "--json"])
        .env("DOCKER_CONFIG", &login_dir)
        .run()
        .code(0)
        .json();
    let b_bytes = registry.stored() - before;
    assert_eq!(pushed_b["transfer"]["layers_moved"], 1, "{pushed_b}");
    // Every other layer is the whole build's: all of them when the candidate is the build plus
    // one layer, all but the replaced CLI's when another test already made the candidate's
    // canonical stack (base, runner, Codex, the new Claude Code).
    let b_present = pushed_b["transfer"]["layers_present"].as_u64().unwrap();
    assert!(b_present == a_layers || b_present == a_layers - 1, "{pushed_b}");
    assert!(
        b_bytes < a_bytes / 2,
        "the candidate sent {b_bytes} bytes, the whole build {a_bytes}"
    );
    eprintln!("pushed: whole build {a_bytes} bytes in {a_layers} layers; one-CLI candidate {b_bytes} bytes in 1 layer");

    // The registry carries the pushed references with the builds.
    let builds = Canary::new()
        .args(["--registry", &db, "registry", "builds", "--json"])
        .run()
        .code(0)
        .json();
    let pushed_of = |id: &str| {
        builds
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["pushed_ref"].clone())
    };
    assert_eq!(pushed_of(&a_id), Some(serde_json::json!(a_pushed)), "{builds}");
    assert_eq!(pushed_of(&b_id), Some(pushed_b["pushed"].clone()), "{builds}");

    // The second engine never built either build. `images pull` takes the whole build;
    // a run of the candidate then fetches only its new layer, and the golden path passes there.
    assert!(image_id(&remote, &a_id).is_none());
    let pulled = Canary::new()
        .args(["--registry", &db, "images", "pull", &a_ref, "--json"])
        .env("DOCKER_HOST", &remote)
        .env("DOCKER_CONFIG", &login_dir)
        .run()
        .code(0)
        .json();
    assert_eq!(
        pulled["transfer"]["layers_moved"].as_u64().unwrap(),
        a_layers,
        "{pulled}"
    );
    assert!(
        pulled["transfer"]["bytes_moved"].as_u64().unwrap() > 100_000_000,
        "{pulled}"
    );
    assert_eq!(image_id(&remote, &a_ref).as_deref(), Some(a_id.as_str()));
    let started = std::time::Instant::now();
    let ran = Canary::new()
        .args([
            "--registry",
            &db,
            "run",
            "--image",
            &b_ref,
            "-s",
            "suites/golden-path.yaml",
            "--jobs",
            "2",
            "--json",
        ])
        .env("DOCKER_HOST", &remote)
        .env("DOCKER_CONFIG", &login_dir)
        .run();
    let stderr = ran.stderr();
    let report = ran.code(0).json();
    let short_b = &b_id["sha256:".len().."sha256:".len() + 12];
    assert!(
        stderr.contains(&format!(
            "pulled build {short_b} from {}",
            pushed_b["pushed"].as_str().unwrap()
        )) && stderr.contains(&format!("(1 layers fetched, {b_present} already here)")),
        "{stderr}"
    );
    assert_eq!(report["summary"]["passed"], 6, "{}", report["summary"]);
    assert_eq!(image_id(&remote, &b_id).as_deref(), Some(b_id.as_str()));
    eprintln!(
        "candidate pulled and judged on the second engine in {:?}",
        started.elapsed()
    );
    // Judged green there, the candidate goes to beta; the channel names where it was published.
    Canary::new()
        .args(["--registry", &db, "promote", &b_id, "--channel", "beta"])
        .run()
        .code(0);
    let status = Canary::new()
        .args(["--registry", &db, "status", "--json"])
        .run()
        .code(0)
        .json();
    let beta = status["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "beta")
        .unwrap();
    assert_eq!(beta["pushed"], pushed_b["pushed"], "{status}");

    // A registry row that names another build's manifest: the pulled image is not the build,
    // and it is refused and removed.
    on(&remote, &["rmi", "-f", &a_id]);
    let tampered = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('UPDATE runner_builds SET pushed_ref=? WHERE id=?', (sys.argv[2], sys.argv[3])); c.commit()",
            &db,
            pushed_b["pushed"].as_str().unwrap(),
            &a_id,
        ])
        .status()
        .unwrap();
    assert!(tampered.success());
    Canary::new()
        .args(["--registry", &db, "images", "pull", &a_ref])
        .env("DOCKER_HOST", &remote)
        .env("DOCKER_CONFIG", &login_dir)
        .run()
        .code(2)
        .stderr_has(&format!("not build {}: refused and removed", &a_id[7..19]));
    assert!(image_id(&remote, &a_id).is_none());
    assert_eq!(
        image_id(&remote, &b_id).as_deref(),
        Some(b_id.as_str()),
        "the other build is untouched"
    );

    // A registry whose stored manifest no longer matches its digest: the engine refuses it.
    let restored = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('UPDATE runner_builds SET pushed_ref=? WHERE id=?', (sys.argv[2], sys.argv[3])); c.commit()",
            &db,
            &a_pushed,
            &a_id,
        ])
        .status()
        .unwrap();
    assert!(restored.success());
    let manifest = registry.blob(a_pushed.rsplit_once('@').unwrap().1);
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes.push(b'\n');
    std::fs::write(&manifest, bytes).unwrap();
    let refused = Canary::new()
        .args(["--registry", &db, "images", "pull", &a_ref])
        .env("DOCKER_HOST", &remote)
        .env("DOCKER_CONFIG", &login_dir)
        .run();
    let stderr = refused.stderr();
    refused.code(2);
    assert!(stderr.contains("does not match the recorded digest"), "{stderr}");
    assert!(image_id(&remote, &a_id).is_none());
}

/// The lab's engine trusts the test CA for `host` (HOST:PORT) while this lives.
struct Trusted(PathBuf);

impl Trusted {
    fn ca(registry: &OciRegistry, host: &str) -> Trusted {
        let d = PathBuf::from("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(registry.dir().join("ca.crt"), d.join("ca.crt")).unwrap();
        Trusted(d)
    }
}

impl Drop for Trusted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A registry front that answers 503 to everything, over TLS with the test registry's
/// certificate; each request it saw is a line of its log.
fn always_503(registry: &OciRegistry, address: &str, log: &Path) -> (Killed, String) {
    const SERVER: &str = r#"
import http.server, ssl, sys
addr, port, certs, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        with open(log, "a") as f:
            f.write(self.command + " " + self.path + "\n")
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = answer
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer((addr, port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(certs + "/server.crt", certs + "/server.key")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;
    let port = free_port();
    let child = Command::new("python3")
        .args(["-c", SERVER, address, &port.to_string()])
        .arg(registry.dir())
        .arg(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect((address, port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the 503 registry did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (Killed(child), format!("{address}:{port}"))
}

/// A TCP path to the registry, as a load balancer that misbehaves: it closes the first
/// connection at once, and cuts the first one that carries more than 1 MiB of a push. It counts
/// what it did.
struct Dropping {
    host: String,
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Dropping {
    fn to(address: &str, upstream: &str) -> Dropping {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind((address, 0)).unwrap();
        let host = format!("{address}:{}", listener.local_addr().unwrap().port());
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (d, c, up) = (dropped.clone(), cut.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for down in listener.incoming().flatten() {
                if d.fetch_add(1, Ordering::SeqCst) == 0 {
                    drop(down);
                    continue;
                }
                let Ok(up) = std::net::TcpStream::connect(&up) else {
                    continue;
                };
                let (mut from_down, mut to_up) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                let c = c.clone();
                std::thread::spawn(move || {
                    let (mut sent, mut buf) = (0usize, vec![0u8; 64 * 1024]);
                    loop {
                        let n = match from_down.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        sent += n;
                        if sent > 1 << 20 && c.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                            break;
                        }
                        if to_up.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_up.shutdown(std::net::Shutdown::Both);
                    let _ = from_down.shutdown(std::net::Shutdown::Both);
                });
                let (mut from_up, mut to_down) = (up, down);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_up, &mut to_down);
                    let _ = to_down.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Dropping { host, dropped, cut }
    }
}

/// A small image of the test's own with a 4 MiB layer (enough for a push to be cut mid-way).
fn small_image(tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    // Bytes that do not compress, from a seed of this run.
    let mut x = u64::from(std::process::id()) | 1;
    let data: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.path().join("blob"), data).unwrap();
    let tar = dir.path().join("layer.tar");
    let made = Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-cf")
        .arg(&tar)
        .arg("blob")
        .status()
        .unwrap();
    assert!(made.success());
    // It carries a build manifest (a runner alone), as every image `images push` takes must.
    let manifest = format!(
        r#"{{"base":"sha256:{zeros}","components":[{{"name":"runner","version":"0.1.0+fault","digest":"sha256:{zeros}"}}],"deltas":0}}"#,
        zeros = "0".repeat(64)
    );
    // Dockerfile syntax: the JSON quoted, its own quotes escaped.
    let label = format!("LABEL canary-lab.build=\"{}\"", manifest.replace('"', "\\\""));
    let out = on("", &["import", "--change", &label, &tar.display().to_string(), tag]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A registry that answers 5xx, and a load balancer in front of a good one that drops
/// connections: the push through the balancer ends pushed and pulls back as the same image; the
/// push to and the pull from the failing one end in exit 2 after a bounded number of tries, say
/// why, and record or take nothing.
#[test]
fn a_registry_answering_503_is_tried_a_bounded_number_of_times_and_a_dropping_balancer_is_retried_through() {
    require_lab();
    let address = Engines::lab_address();
    let registry = OciRegistry::start(&address);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db").display().to_string();
    let tag = format!("canary-lab-fault-test:{}", std::process::id());
    let image = small_image(&tag);
    struct Removed(String);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = on("", &["rmi", "-f", &self.0]);
        }
    }
    let _image = Removed(image.clone());

    // 503 to everything: three tries, then exit 2 with the registry's words and what to check.
    let log = dir.path().join("503.log");
    let (_fake, fake) = always_503(&registry, &address, &log);
    let _trust_fake = Trusted::ca(&registry, &fake);
    // The engine retries each layer upload itself (five tries, ~50 s): the lab does not
    // multiply that, and says so.
    let started = std::time::Instant::now();
    Canary::new()
        .args([
            "--registry",
            &db,
            "images",
            "push",
            &image,
            "--to",
            &format!("{fake}/canary/fault"),
        ])
        .run()
        .code(2)
        .stderr_has("503")
        .stderr_has("the engine retried each layer itself");
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    let pings = seen.lines().filter(|l| l.starts_with("GET /v2/")).count();
    let uploads = seen.lines().filter(|l| l.starts_with("POST ")).count();
    eprintln!(
        "503 registry: push gave up after {:?}: {pings} ping(s), {uploads} upload tries",
        started.elapsed()
    );
    assert_eq!(pings, 1, "one push, the engine's own retries inside it: {seen}");
    assert!(uploads >= 2, "the engine retried the upload: {seen}");
    // Nothing was recorded: the registry does not know the image as a build.
    Canary::new()
        .args(["--registry", &db, "images", "pull", &image])
        .run()
        .code(2)
        .stderr_has("unknown build");

    // Through a balancer that drops the first connection and cuts a push mid-way: pushed.
    let lb = Dropping::to(&address, &registry.host);
    let _trust_lb = Trusted::ca(&registry, &lb.host);
    let login = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        login.path().join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, lb.host),
    )
    .unwrap();
    let login_dir = login.path().display().to_string();
    let pushed = Canary::new()
        .args([
            "--registry",
            &db,
            "images",
            "push",
            &image,
            "--to",
            &format!("{}/canary/fault", lb.host),
            "--json",
        ])
        .env("DOCKER_CONFIG", &login_dir)
        .run()
        .code(0)
        .json();
    use std::sync::atomic::Ordering;
    eprintln!(
        "through the dropping balancer: {} connections, 1 dropped, {} cut mid-push; pushed {}",
        lb.dropped.load(Ordering::SeqCst),
        lb.cut.load(Ordering::SeqCst),
        pushed["pushed"]
    );
    assert_eq!(lb.cut.load(Ordering::SeqCst), 1, "a push was cut mid-way");
    let pushed_ref = pushed["pushed"].as_str().unwrap().to_string();
    assert!(
        pushed_ref.starts_with(&format!("{}/canary/fault@sha256:", lb.host)),
        "{pushed}"
    );
    // What the registry holds is the image: gone here, it comes back by digest as the same id.
    on("", &["rmi", "-f", &image, &tag]);
    Canary::new()
        .args(["--registry", &db, "images", "pull", &image])
        .env("DOCKER_CONFIG", &login_dir)
        .run()
        .code(0);
    assert_eq!(image_id("", &image).as_deref(), Some(image.as_str()));

    // The same build recorded at the failing registry: its pull is tried three times, then
    // exit 2, and nothing is taken.
    let moved = pushed_ref.replace(&lb.host, &fake);
    let tampered = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('UPDATE runner_builds SET pushed_ref=? WHERE id=?', (sys.argv[2], sys.argv[3])); c.commit()",
            &db,
            &moved,
            &image,
        ])
        .status()
        .unwrap();
    assert!(tampered.success());
    on("", &["rmi", "-f", &image]);
    let before = std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    Canary::new()
        .args(["--registry", &db, "images", "pull", &image])
        .run()
        .code(2)
        .stderr_has("503")
        .stderr_has("tried 3 times");
    let after = std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    assert!(after - before >= 3, "three pull tries reached the registry");
    assert!(image_id("", &image).is_none(), "nothing was taken");
}
