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

/// The fleet keeps reporting through the balancer until the rollout ends: it must complete, and
/// every transition appear once (no step advanced twice by two replicas).
fn completes_with_each_transition_once(reg: &crate::registry::Fresh, policy: &std::path::Path, lb: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let st = status(reg, policy);
        if st["rollout"]["state"] != "running" {
            break st;
        }
        assert!(Instant::now() < deadline, "the rollout never finished: {st}");
        simulate_at(&reg.url, lb, 4000, &["*=fail:0.01,latency:900"], &["acme", "globex"]);
    };
    assert_eq!(done["rollout"]["state"], "completed", "{done}");
    let k = kinds(&done);
    let mut seen = std::collections::BTreeSet::new();
    for e in &k {
        assert!(seen.insert(e.clone()) || e.starts_with("hold"), "{e} twice: {k:?}");
    }
    assert!(k.iter().any(|e| e.starts_with("complete")), "{k:?}");
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
    completes_with_each_transition_once(&reg, &policy, &lb);
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

/// A TCP path to PostgreSQL that the test can cut (every open connection shut, new ones closed
/// at once) and restore: a replica losing its database without the database going down.
struct Cuttable {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Cuttable {
    fn to(upstream: &str) -> Cuttable {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, o, up) = (cut.clone(), open.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for down in listener.incoming().flatten() {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(up) = std::net::TcpStream::connect(&up) else {
                    continue;
                };
                {
                    let mut held = o.lock().unwrap();
                    held.push(down.try_clone().unwrap());
                    held.push(up.try_clone().unwrap());
                }
                for (mut from, mut to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Cuttable { port, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `GET /healthz` on a replica, without authentication: its status line, then its body.
fn health(s: &Serve) -> String {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(s.url.trim_start_matches("http://")) else {
        return "unreachable".into();
    };
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let status = out.lines().next().unwrap_or("");
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    format!("{status}\n{body}")
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// The leading replica loses its database (the connection cut, PostgreSQL itself up) while a
/// rollout runs and the fleet reports through haproxy: its /healthz turns 503 so the balancer
/// leaves it, it stops leading, the other replica takes the lease over within the lease time,
/// no telemetry is lost, and when its database comes back it follows: every transition once.
#[test]
fn a_leader_that_loses_its_database_leaves_the_balancer_and_the_lease_and_no_step_is_taken_twice() {
    let (reg, dir, policy, base, cand) = setup_with(Backend::Postgres, GATE);
    let upstream = "127.0.0.1:55432";
    assert!(
        reg.url.contains(upstream),
        "the test database is at {upstream}: {}",
        reg.url
    );
    let path = Cuttable::to(upstream);
    let cut_reg = reg.via(reg.url.replace(upstream, &format!("127.0.0.1:{}", path.port)));
    let r0 = serve_with(&cut_reg, &policy, free_port(), &["--lease", "2s"]);
    one_leader(&[&r0], Duration::from_secs(10));
    let r1 = serve_with(&reg, &policy, free_port(), &["--lease", "2s"]);
    let lb_port = free_port();
    let _lb = haproxy(dir.path(), lb_port, &[&r0, &r1]);
    let lb = format!("http://127.0.0.1:{lb_port}");
    assert_eq!(
        one_leader(&[&r0, &r1], Duration::from_secs(5)),
        0,
        "the first replica leads"
    );
    let fleet = ["*=fail:0.01,latency:900"];
    canary(&reg)
        .args(["rollout", "start", &cand, "--channel", "stable"])
        .arg_path_flag("--policy", &policy)
        .run()
        .code(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&reg, &policy)["rollout"]["step"].as_u64() < Some(1) {
        assert!(Instant::now() < deadline, "the leader never advanced the rollout");
        simulate_at(&reg.url, &lb, 3000, &fleet, &["acme", "globex"]);
    }

    path.cut();
    let unready = wait_until("r0's /healthz turning 503", Duration::from_secs(5), || {
        health(&r0).contains(" 503 ")
    });
    // Open to anyone, it says no more than that: nothing of the database's address or error.
    let said = health(&r0);
    assert!(said.ends_with("\nregistry unreachable"), "{said}");
    assert!(!said.contains("127.0.0.1") && !said.contains("postgres"), "{said}");
    let took_over = wait_until("r1 taking the lease over", Duration::from_secs(8), || leading(&r1));
    eprintln!("database cut: r0 unready after {unready:?}, r1 leads after {took_over:?} (lease 2 s)");
    // The fleet goes on through the balancer: nothing it reported is lost.
    let before = sessions_stored(&reg, &[&base, &cand]);
    let sent = simulate_at(&reg.url, &lb, 3000, &fleet, &["acme", "globex"]);
    let reported =
        sent["sessions"].as_u64().unwrap() - sent["dropped"].as_u64().unwrap() - sent["unassigned"].as_u64().unwrap();
    assert_eq!(sessions_stored(&reg, &[&base, &cand]) - before, reported, "{sent}");

    // Its database back, r0 is ready again and follows: one leader, r1.
    path.restore();
    wait_until("r0's /healthz turning 200", Duration::from_secs(10), || {
        health(&r0).contains(" 200 ")
    });
    for _ in 0..5 {
        assert_eq!(one_leader(&[&r0, &r1], Duration::from_secs(5)), 1);
        std::thread::sleep(Duration::from_millis(300));
    }
    completes_with_each_transition_once(&reg, &policy, &lb);
}
