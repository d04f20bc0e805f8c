//! The backend conformance suite: one table of checks every [`Backend`] must pass before cases
//! run on it (`canary engine check`). Each check starts what it needs under a run id of its own,
//! says what it saw, and is cleaned up by the backend's own `gc` of that run, which is itself
//! checked last. The Docker backend runs it in the tests; a new backend (another engine, a
//! Kubernetes one: docs/kubernetes.md) is built against it.

use super::{Backend, ContainerSpec, ExecOutcome, ExecSpec, GcScope, OUTPUT_LIMIT};
use serde::Serialize;
use std::time::{Duration, Instant};

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    /// What the check holds the backend to.
    pub expects: &'static str,
    pub passed: bool,
    /// What it saw.
    pub detail: String,
    pub millis: u64,
}

/// The suite's outcome: every check, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Conformance {
    pub engine: String,
    pub image: String,
    pub checks: Vec<Check>,
}

impl Conformance {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

type Outcome = std::result::Result<String, String>;

fn sh(script: &str, deadline: Duration, stdin: Option<Vec<u8>>) -> ExecSpec {
    ExecSpec {
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        env: Vec::new(),
        workdir: "/".into(),
        deadline: Instant::now() + deadline,
        stdin,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// Fails with what the exec said when it did not exit 0.
fn ok(o: ExecOutcome, what: &str) -> std::result::Result<ExecOutcome, String> {
    if o.exit_code == Some(0) && !o.timed_out {
        Ok(o)
    } else {
        Err(format!(
            "{what}: exit {:?}{}, stderr {:?}",
            o.exit_code,
            if o.timed_out { " (timed out)" } else { "" },
            text(&o.stderr).chars().take(200).collect::<String>()
        ))
    }
}

/// The processes still running in a container, by name (zombies, which only wait for PID 1 to
/// collect their status, are not running).
async fn processes<B: Backend>(b: &B, c: &str) -> std::result::Result<String, String> {
    let script = r#"for p in /proc/[0-9]*; do s=$(cat "$p/stat" 2>/dev/null) || continue; case "$s" in *") Z "*) ;; *) cat "$p/comm" 2>/dev/null;; esac; done"#;
    let o = b
        .exec(c, &sh(script, Duration::from_secs(10), None))
        .await
        .map_err(|e| e.to_string())?;
    Ok(text(&o.stdout))
}

async fn large_stdin<B: Backend>(b: &B, c: &str) -> Outcome {
    let n = 32 << 20;
    let o = b
        .exec(c, &sh("wc -c", Duration::from_secs(60), Some(vec![b'x'; n])))
        .await
        .map_err(|e| e.to_string())?;
    let o = ok(o, "wc -c")?;
    match text(&o.stdout).parse::<usize>() {
        Ok(got) if got == n => Ok(format!("{n} bytes in, counted {got}")),
        _ => Err(format!("{n} bytes in, `wc -c` said {:?}", text(&o.stdout))),
    }
}

async fn large_output<B: Backend>(b: &B, c: &str) -> Outcome {
    // Both streams at once, each under the limit: neither may block the other.
    let each = 6 << 20;
    let script = format!("head -c {each} /dev/zero | tr '\\0' e >&2 & head -c {each} /dev/zero | tr '\\0' o; wait");
    let o = b
        .exec(c, &sh(&script, Duration::from_secs(60), None))
        .await
        .map_err(|e| e.to_string())?;
    let o = ok(o, "the writer")?;
    let whole = |v: &[u8], byte: u8| v.len() == each && v.iter().all(|x| *x == byte);
    if whole(&o.stdout, b'o') && whole(&o.stderr, b'e') && !o.truncated {
        Ok(format!("{each} bytes on stdout and on stderr, whole"))
    } else {
        Err(format!(
            "stdout {} and stderr {} bytes of {each} (truncated: {})",
            o.stdout.len(),
            o.stderr.len(),
            o.truncated
        ))
    }
}

async fn output_limit<B: Backend>(b: &B, c: &str) -> Outcome {
    let o = b
        .exec(c, &sh("head -c 20971520 /dev/zero", Duration::from_secs(60), None))
        .await
        .map_err(|e| e.to_string())?;
    if o.truncated && o.stdout.len() == OUTPUT_LIMIT {
        Ok(format!(
            "20 MiB written, {} bytes kept, marked truncated",
            o.stdout.len()
        ))
    } else {
        Err(format!(
            "20 MiB written, {} bytes kept (limit {OUTPUT_LIMIT}), truncated: {}",
            o.stdout.len(),
            o.truncated
        ))
    }
}

async fn deadline_kills<B: Backend>(b: &B, c: &str) -> Outcome {
    let started = Instant::now();
    let o = b
        .exec(c, &sh("sleep 300 & sleep 301; wait", Duration::from_secs(1), None))
        .await
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if !o.timed_out {
        return Err(format!(
            "a 1 s deadline did not time the exec out (exit {:?})",
            o.exit_code
        ));
    }
    if took > Duration::from_secs(10) {
        return Err(format!("the exec returned {took:?} after a 1 s deadline"));
    }
    let left = processes(b, c).await?;
    if left.lines().any(|p| p == "sleep") {
        return Err(format!("processes left after the deadline: {left:?}"));
    }
    Ok(format!(
        "timed out after {took:.1?}, killed {:?} past the deadline, no child left",
        o.kill_latency.unwrap_or_default()
    ))
}

async fn limits<B: Backend>(b: &B, c: &str) -> Outcome {
    // cgroup v2 names first, v1 after.
    let o = b
        .exec(
            c,
            &sh(
                "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                 cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
                Duration::from_secs(10),
                None,
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
    let o = ok(o, "reading the cgroup limits")?;
    let seen: Vec<String> = text(&o.stdout).lines().map(str::to_string).collect();
    let want = [(256i64 << 20).to_string(), "64".to_string()];
    if seen == want {
        Ok(format!("memory {} bytes, {} processes", want[0], want[1]))
    } else {
        Err(format!(
            "asked for memory {} and 64 processes, the cgroup says {seen:?}",
            want[0]
        ))
    }
}

async fn upload<B: Backend>(b: &B, c: &str) -> Outcome {
    let mut tar = tar::Builder::new(Vec::new());
    let body = b"conformance\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, "tmp/conformance/uploaded.txt", &body[..])
        .map_err(|e| e.to_string())?;
    let tar = tar.into_inner().map_err(|e| e.to_string())?;
    b.upload(c, tar).await.map_err(|e| e.to_string())?;
    let o = b
        .exec(
            c,
            &sh("cat /tmp/conformance/uploaded.txt", Duration::from_secs(10), None),
        )
        .await
        .map_err(|e| e.to_string())?;
    let o = ok(o, "reading the uploaded file")?;
    if o.stdout == body {
        Ok("a file uploaded as a tar reads back the same".into())
    } else {
        Err(format!("read back {:?}", text(&o.stdout)))
    }
}

/// A TCP connection from the container to `addr`, tried for 3 seconds: whether it was made.
async fn reaches<B: Backend>(b: &B, c: &str, addr: &std::net::SocketAddr) -> std::result::Result<bool, String> {
    let script = format!(
        "timeout 3 bash -c 'exec 3<>/dev/tcp/{}/{}' 2>/dev/null && echo reached || echo refused",
        addr.ip(),
        addr.port()
    );
    let o = b
        .exec(c, &sh(&script, Duration::from_secs(10), None))
        .await
        .map_err(|e| e.to_string())?;
    Ok(text(&o.stdout) == "reached")
}

fn run_id() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("conformance-{}-{nanos:x}-{n}", std::process::id())
}

/// The checks as they are made, each timed.
struct Table(Vec<Check>);

impl Table {
    async fn check(
        &mut self,
        name: &'static str,
        expects: &'static str,
        f: impl std::future::Future<Output = Outcome>,
    ) {
        let started = Instant::now();
        let (passed, detail) = match f.await {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.0.push(Check {
            name,
            expects,
            passed,
            detail,
            millis: started.elapsed().as_millis() as u64,
        });
    }
}

/// The checks made inside one running case container.
async fn in_container<B: Backend>(b: &B, c: &str, t: &mut Table) {
    t.check(
        "limits",
        "memory and process limits hold inside the container",
        limits(b, c),
    )
    .await;
    t.check("upload", "an archive unpacks into the container", upload(b, c))
        .await;
    t.check(
        "large stdin",
        "32 MiB of stdin reach the command whole",
        large_stdin(b, c),
    )
    .await;
    t.check(
        "large output",
        "6 MiB on each of stdout and stderr at once come back whole",
        large_output(b, c),
    )
    .await;
    t.check(
        "output limit",
        "output past the limit is cut at it and said to be",
        output_limit(b, c),
    )
    .await;
    t.check(
        "deadline",
        "a deadline kills the command and every child it started, promptly",
        deadline_kills(b, c),
    )
    .await;
}

/// Runs every check against `b` with cases in `image` (the lab's base image: `sh`, `bash`,
/// coreutils). `outside` is an address the host listens on that a container on an ordinary
/// network can reach and one on a lab network must not; `open_network` is such an ordinary
/// network (`bridge` under Docker).
pub async fn run<B: Backend>(b: &B, image: &str, outside: std::net::SocketAddr, open_network: &str) -> Conformance {
    let engine = b.describe().await.unwrap_or_else(|e| format!("unreachable: {e}"));
    let run = run_id();
    let mut t = Table(Vec::new());
    let prepared = b.prepare_image(image).await;
    let executor = prepared.as_ref().is_ok_and(|p| p.executor);
    t.check(
        "executor",
        "the in-container executor runs in the image (stdin, deadlines and streams go through it)",
        async {
            match &prepared {
                Ok(p) if p.executor => Ok(format!("image {} runs canary-exec", &p.id)),
                Ok(p) => Err(p.note.clone().unwrap_or_else(|| "no executor".into())),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    let case_image = prepared.map(|p| p.id).unwrap_or_else(|_| image.to_string());
    let mut spec = ContainerSpec::new(&run, "case", &case_image);
    (spec.memory_bytes, spec.pids_limit, spec.executor) = (256 << 20, 64, executor);
    let container = b.start_container(&spec).await;
    t.check(
        "start",
        "a labelled case container starts with the limits it is given",
        async {
            container
                .as_ref()
                .map(|c| format!("container {}", &c[..c.len().min(12)]))
                .map_err(|e| e.to_string())
        },
    )
    .await;
    if let Ok(c) = &container {
        in_container(b, c, &mut t).await;
    }
    t.check(
        "no egress",
        "a container on a lab network reaches nothing outside it, the host included; on an open one it does",
        egress(b, &run, &case_image, executor, (outside, open_network)),
    )
    .await;
    t.check(
        "gc",
        "gc of the run removes its containers and networks and nothing else",
        gc(b, &run, &case_image),
    )
    .await;
    Conformance {
        engine,
        image: image.to_string(),
        checks: t.0,
    }
}

async fn egress<B: Backend>(
    b: &B,
    run: &str,
    image: &str,
    executor: bool,
    (outside, open): (std::net::SocketAddr, &str),
) -> Outcome {
    let network = b.create_network(run).await.map_err(|e| e.to_string())?;
    let mut spec = ContainerSpec::new(run, "egress-lab", image);
    (spec.network, spec.executor) = (Some(network.clone()), executor);
    let lab = b.start_container(&spec).await.map_err(|e| e.to_string())?;
    let mut spec = ContainerSpec::new(run, "egress-open", image);
    (spec.network, spec.executor) = (Some(open.to_string()), executor);
    let control = b.start_container(&spec).await.map_err(|e| e.to_string())?;
    // The listener may still be starting: the open side is asked until it answers (bounded).
    let mut open_reached = false;
    for _ in 0..10 {
        open_reached = reaches(b, &control, &outside).await?;
        if open_reached {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    match (open_reached, reaches(b, &lab, &outside).await?) {
        (true, false) => Ok(format!("{outside} refused from {network}, reached from {open}")),
        (false, _) => Err(format!(
            "{outside} is not reachable even from {open}: the check proves nothing (is the host listening there?)"
        )),
        (true, true) => Err(format!("a container on the lab network {network} reached {outside}")),
    }
}

async fn gc<B: Backend>(b: &B, run: &str, image: &str) -> Outcome {
    // Another run's container: gc of this run must leave it (its own gc takes it after).
    let other = run_id();
    b.start_container(&ContainerSpec::new(&other, "bystander", image))
        .await
        .map_err(|e| e.to_string())?;
    let r = b.gc(GcScope::Run(run.to_string())).await.map_err(|e| e.to_string())?;
    let again = b.gc(GcScope::Run(run.to_string())).await.map_err(|e| e.to_string())?;
    let bystander_left = b
        .gc(GcScope::Run(other))
        .await
        .map_err(|e| e.to_string())?
        .containers
        .len()
        == 1;
    if r.containers.is_empty() {
        return Err("gc of the run removed no container".into());
    }
    if !again.containers.is_empty() || !again.networks.is_empty() {
        return Err(format!(
            "a second gc still found {:?} {:?}",
            again.containers, again.networks
        ));
    }
    if !bystander_left {
        return Err("gc of one run removed another run's container".into());
    }
    Ok(format!(
        "{} containers and {} networks removed, a second gc finds nothing",
        r.containers.len(),
        r.networks.len()
    ))
}

/// The suite against the Docker engine the lab uses (local, or `--engine` over TLS), with the
/// lab's base image. The egress check's listener runs on the engine's host itself (a container
/// in the host's network namespace, for the length of the run), so a remote engine is checked
/// as the local one is.
pub async fn check_docker(image: &str) -> crate::error::Result<Conformance> {
    let b = super::docker::DockerBackend::connect().await?;
    if b.image(image).await?.is_none() {
        return Err(crate::error::LabError::usage(
            format!("the base image {image} is not in this engine"),
            "build it with `canary images base`",
        ));
    }
    let gateway = b.gateway("bridge").await?.ok_or_else(|| {
        crate::error::LabError::usage(
            "Docker's default bridge network has no gateway address",
            "the egress check needs the default `bridge` network",
        )
    })?;
    // A port unlikely to be taken on the engine's host (a taken one fails the check, loudly).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let port = 20_000 + (nanos % 40_000) as u16;
    let host_run = run_id();
    let mut spec = ContainerSpec::new(&host_run, "host-listener", image);
    spec.network = Some("host".into());
    spec.cmd = Some(vec![
        "python3".into(),
        "-c".into(),
        format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',{port}))\ns.listen(64)\nwhile True:\n  s.accept()[0].close()"
        ),
    ]);
    b.start_container(&spec).await?;
    let outside = std::net::SocketAddr::new(gateway, port);
    let result = run(&b, image, outside, "bridge").await;
    b.gc(GcScope::Run(host_run)).await?;
    Ok(result)
}
