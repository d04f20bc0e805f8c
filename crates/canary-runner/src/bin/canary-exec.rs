//! `canary-exec`: PID 1 of a case container. It reads [`ExecRequest`]s on stdin and answers
//! each with an [`ExecResponse`] line on stdout.
//!
//! Why it exists: every `docker exec` makes the engine spawn a process through runc, which
//! costs tens of milliseconds; a case runs a dozen commands (steps, baseline, diffs, file
//! checks). Spawning them from a process already inside the container costs about one.
//!
//! Deadlines: at a request's deadline the executor sends SIGKILL to every process it may signal
//! (`kill(-1)`); as PID 1 of the container's pid namespace that is everything but itself, so a
//! step's background children die with it. As PID 1 it also reaps orphans.

use base64::Engine as _;
use canary_contract::exec::{ExecRequest, ExecResponse};
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long output is still read after the command exited, for a background process that
/// kept the pipe open; then the pipe is abandoned (the process keeps running).
const DRAIN_GRACE: Duration = Duration::from_millis(50);

fn main() {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<ExecRequest>(&line) {
            Ok(req) => run(req),
            Err(e) => ExecResponse {
                error: Some(format!("bad request: {e}")),
                ..Default::default()
            },
        };
        reap_orphans();
        let mut text = serde_json::to_string(&response).expect("response serializes");
        text.push('\n');
        if stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()).is_err() {
            break;
        }
    }
}

fn run(req: ExecRequest) -> ExecResponse {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(req.timeout_ms);
    let mut resp = ExecResponse {
        id: req.id,
        ..Default::default()
    };
    let Some((program, args)) = req.cmd.split_first() else {
        resp.error = Some("empty command".into());
        return resp;
    };
    let input = match req
        .stdin
        .as_deref()
        .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
    {
        None => None,
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(e)) => {
            resp.error = Some(format!("bad stdin: {e}"));
            return resp;
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&req.cwd)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for kv in &req.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            resp.error = Some(format!("cannot start {program}: {e}"));
            return resp;
        }
    };
    // A writer thread, so a command that writes output before reading all its input cannot
    // deadlock against us.
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let as_file = |fd: std::os::fd::OwnedFd| std::fs::File::from(fd);
    let mut out = Capture::new(as_file(child.stdout.take().expect("piped").into()), req.output_limit);
    let mut err = Capture::new(as_file(child.stderr.take().expect("piped").into()), req.output_limit);
    let status = supervise(&mut child, [&mut out, &mut err], deadline, &mut resp);
    if let Some(s) = status {
        resp.exit_code = s
            .code()
            .map(i64::from)
            .or_else(|| s.signal().map(|sig| 128 + i64::from(sig)));
    }
    resp.truncated = out.truncated || err.truncated;
    let b64 = base64::engine::general_purpose::STANDARD;
    resp.stdout = b64.encode(&out.buf);
    resp.stderr = b64.encode(&err.buf);
    resp.duration_ms = started.elapsed().as_millis() as u64;
    resp
}

/// Waits for the command to exit and its output to close, killing every process it started at
/// the deadline; returns its exit status (none when it could not be read).
fn supervise(
    child: &mut std::process::Child,
    [out, err]: [&mut Capture; 2],
    deadline: Instant,
    resp: &mut ExecResponse,
) -> Option<std::process::ExitStatus> {
    let mut status = None;
    let mut exited_at = None;
    loop {
        let now = Instant::now();
        if status.is_none() && now >= deadline {
            // SAFETY: kill(-1) signals every process we may signal except ourselves.
            unsafe { libc::kill(-1, libc::SIGKILL) };
            resp.timed_out = true;
            status = child.wait().ok();
            resp.kill_latency_ms = Some(Instant::now().saturating_duration_since(deadline).as_millis() as u64);
            exited_at = Some(Instant::now());
        }
        if status.is_none() {
            status = child.try_wait().ok().flatten();
            if status.is_some() {
                exited_at = Some(Instant::now());
            }
        }
        let open = out.open() || err.open();
        if !open && status.is_some() {
            break;
        }
        if let (Some(t), true) = (exited_at, open) {
            if t.elapsed() >= DRAIN_GRACE {
                break;
            }
        }
        // Wake on output, or soon enough to notice the exit or the deadline.
        let wait = if status.is_some() {
            DRAIN_GRACE
        } else {
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(2))
        };
        poll(&mut [&mut *out, &mut *err], wait);
        if !out.open() && !err.open() && status.is_none() {
            // Both pipes closed: the command is exiting (or detached its output); wait for it.
            status = wait_until(child, deadline);
            if status.is_some() {
                exited_at = Some(Instant::now());
            }
        }
    }
    status
}

fn wait_until(child: &mut std::process::Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Collects a pipe's bytes up to a limit, counting (and dropping) the rest.
struct Capture {
    pipe: Option<std::fs::File>,
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capture {
    fn new(pipe: std::fs::File, limit: usize) -> Self {
        Capture {
            pipe: Some(pipe),
            buf: Vec::new(),
            limit,
            truncated: false,
        }
    }

    fn open(&self) -> bool {
        self.pipe.is_some()
    }

    fn read_available(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else { return };
        let mut chunk = [0u8; 65536];
        match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => self.pipe = None,
            Ok(n) => {
                let room = self.limit.saturating_sub(self.buf.len());
                if n > room {
                    self.truncated = true;
                }
                self.buf.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

fn poll(captures: &mut [&mut Capture], timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut which = Vec::new();
    for (i, c) in captures.iter().enumerate() {
        if let Some(p) = &c.pipe {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            which.push(i);
        }
    }
    if fds.is_empty() {
        std::thread::sleep(timeout);
        return;
    }
    // SAFETY: fds points at a live array of fds.len() pollfd structs.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis().max(1) as i32,
        )
    };
    if n <= 0 {
        return;
    }
    for (fd, i) in fds.iter().zip(which) {
        if fd.revents != 0 {
            captures[i].read_available();
        }
    }
}

/// PID 1 inherits every orphan; collect the ones that have exited.
fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: non-blocking wait for any child.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}
