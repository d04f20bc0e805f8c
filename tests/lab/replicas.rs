//! The control plane as several replicas: three `canary serve` processes on one PostgreSQL
//! registry behind a real load balancer (Debian's haproxy, which `scripts/haproxy.sh` installs).
//! Any replica answers the fleet; one holds the controller lease; when it is killed another
//! takes over within the lease, and the rollout goes on with no step taken twice. On SQLite a
//! second `canary serve` is refused.

use crate::helpers::{Killed, free_port};
use crate::registry::Backend;
use crate::rollout::{GATE, Serve, canary, kinds, serve_with, setup_with, simulate_at, status};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// haproxy on `port`, round-robin over `replicas`, each checked on /healthz every 200 ms.
fn haproxy(dir: &std::path::Path, port: u16, replicas: &[&Serve]) -> Killed {
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| format!("  server r{i} {} check\n", r.url.trim_start_matches("http://")))
        .collect();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  \
             option httpchk GET /healthz\n  retries 2\n  option redispatch\n  default-server inter 200ms fall 1 rise 2\n\
             frontend fleet\n  bind 127.0.0.1:{port}\n  default_backend replicas\nbackend replicas\n  balance roundrobin\n{servers}"
        ),
    )
    .unwrap();
    let child = Command::new(crate::helpers::installed("haproxy.sh"))
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "haproxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Killed(child)
}

/// A replica's `/metrics` sample of `name` whose labels contain `labels`, if any.
fn sample(s: &Serve, name: &str, labels: &str) -> Option<f64> {
    s.page("/metrics")
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
}

fn leading(s: &Serve) -> bool {
    sample(s, "canary_controller_leader{", "") == Some(1.0)
}

/// Sessions stored for `builds`, as `canary kpis` counts them.
fn sessions_stored(reg: &crate::registry::Fresh, builds: &[&str]) -> u64 {
    builds
        .iter()
        .map(|b| {
            let k = canary(reg).args(["kpis", "--build", b, "--json"]).run().code(0).json();
            k["builds"][0]["kpis"]["sessions"].as_u64().unwrap_or(0)
        })
        .sum()
}

/// The replicas that lead, once exactly one does (or the deadline passes).
fn one_leader(replicas: &[&Serve], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let leaders: Vec<usize> = (0..replicas.len()).filter(|&i| leading(replicas[i])).collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "not exactly one leader: {leaders:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn replicas_behind_haproxy_share_one_controller_and_survive_the_leaders_death() {
    let (reg, dir, policy, base, cand) = setup_with(Backend::Postgres, GATE);
    let mut replicas: Vec<Option<Serve>> = (0..3)
        .map(|_| Some(serve_with(&reg, &policy, free_port(), &["--lease", "2s"])))
        .collect();
    let all: Vec<&Serve> = replicas.iter().flatten().collect();
    let lb_port = free_port();
    let _lb = haproxy(dir.path(), lb_port, &all);
    let lb = format!("http://127.0.0.1:{lb_port}");
    let leader = one_leader(&all, Duration::from_secs(10));

    canary(&reg)
        .args(["rollout", "start", &cand, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    // The fleet talks to the load balancer; every replica answers part of it.
    simulate_at(&reg.url, &lb, 3000, &["*=fail:0.01,latency:900"], &["acme", "globex"]);
    for r in &all {
        let answered = sample(
            r,
            "canary_http_request_duration_seconds_count{",
            "route=\"/v1/assignment\"",
        );
        assert!(
            answered.unwrap_or(0.0) > 100.0,
            "{} answered {answered:?} assignments",
            r.url
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&reg, &policy)["rollout"]["step"].as_u64() < Some(1) {
        assert!(Instant::now() < deadline, "the leader never advanced the rollout");
        simulate_at(&reg.url, &lb, 3000, &["*=fail:0.01,latency:900"], &["acme", "globex"]);
    }

    // kill -9 the leader while the fleet is sending: haproxy stops sending it requests, the
    // simulated runners retry what failed through it, and no session's telemetry is lost.
    let before = sessions_stored(&reg, &[&base, &cand]);
    let fleet = {
        let (registry, lb) = (reg.url.clone(), lb.clone());
        std::thread::spawn(move || simulate_at(&registry, &lb, 6000, &["*=fail:0.01,latency:900"], &["acme", "globex"]))
    };
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Instant::now();
    {
        let dead = replicas[leader].as_mut().unwrap();
        dead.child.kill().unwrap();
        dead.child.wait().unwrap();
    }
    replicas[leader] = None;
    // Another replica takes the lease over once it expired (2 s), while the fleet goes on.
    let rest: Vec<&Serve> = replicas.iter().flatten().collect();
    one_leader(&rest, Duration::from_secs(10));
    let took_over = killed.elapsed();
    eprintln!("a replica took the controller over {took_over:?} after the leader was killed (lease 2 s)");
    assert!(took_over < Duration::from_secs(6), "{took_over:?}");
    let sent = fleet.join().expect("the simulated fleet finished without an error");
    let reported =
        sent["sessions"].as_u64().unwrap() - sent["dropped"].as_u64().unwrap() - sent["unassigned"].as_u64().unwrap();
    assert_eq!(sessions_stored(&reg, &[&base, &cand]) - before, reported, "{sent}");
    eprintln!("through the kill: {sent}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let st = status(&reg, &policy);
        if st["rollout"]["state"] != "running" {
            break st;
        }
        assert!(Instant::now() < deadline, "the rollout never finished: {st}");
        simulate_at(&reg.url, &lb, 4000, &["*=fail:0.01,latency:900"], &["acme", "globex"]);
    };
    assert_eq!(done["rollout"]["state"], "completed", "{done}");
    // Every transition once: no step advanced twice by two replicas.
    let k = kinds(&done);
    let mut seen = std::collections::BTreeSet::new();
    for e in &k {
        assert!(seen.insert(e.clone()) || e.starts_with("hold"), "{e} twice: {k:?}");
    }
    assert!(k.iter().any(|e| e.starts_with("complete")), "{k:?}");
}

#[test]
fn a_second_control_plane_on_a_sqlite_registry_is_refused() {
    let (reg, _dir, policy, _base, _cand) = setup_with(Backend::Sqlite, GATE);
    let first = serve_with(&reg, &policy, free_port(), &[]);
    canary(&reg)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(2)
        .stderr_has("another canary serve is running on the SQLite registry")
        .stderr_has("PostgreSQL");
    // Killed, it leaves no lock behind: the next one starts and leads at once.
    drop(first);
    let second = serve_with(&reg, &policy, free_port(), &[]);
    one_leader(&[&second], Duration::from_secs(5));
    // A lease that would lapse between renewals is refused before anything starts.
    drop(second);
    canary(&reg)
        .args(["serve", "--tick", "5s", "--lease", "6s"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(2)
        .stderr_has("shorter than two --tick");
}
