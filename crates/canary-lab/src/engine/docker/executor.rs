//! The in-container executor: baking it into a derived image, and talking to it over the
//! container's attach stream (see `src/bin/canary-exec.rs` for the other end).

use super::*;
/// The exec image's tag: the base image with the executor (and runner) binaries it gets, by
/// their size and mtime.
fn exec_tag(image_id: &str, exe: &std::path::Path, runner: Option<&std::path::Path>) -> Result<String> {
    let mut h = Sha256::new();
    h.update(image_id.as_bytes());
    for file in std::iter::once(exe).chain(runner) {
        let meta = std::fs::metadata(file).map_err(|e| LabError::read(file, e))?;
        h.update(meta.len().to_le_bytes());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        h.update(mtime.as_nanos().to_le_bytes());
    }
    Ok(hex::encode(h.finalize())[..12].to_string())
}

impl DockerBackend {
    /// Attaches to a created container's executor; returns the session to register.
    pub(super) async fn attach_executor(&self, id: &str) -> Result<Session> {
        let options = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let attached = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(docker_err("attaching to the executor"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut output = attached.output;
        let name = id.chars().take(12).collect::<String>();
        tokio::spawn(async move {
            let mut pending: Vec<u8> = Vec::new();
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        // Only the new bytes are searched for the line's end: an answer of
                        // megabytes arrives in many chunks, and searching all that had come
                        // each time made its reading quadratic (12 MiB of output took 18 s).
                        let mut from = pending.len();
                        pending.extend_from_slice(&message);
                        while let Some(at) = pending[from..].iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=from + at).collect();
                            from = 0;
                            if tx.send(String::from_utf8_lossy(&line).trim_end().to_string()).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        tracing::warn!("executor in {name}: {}", String::from_utf8_lossy(&message).trim_end())
                    }
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(Session {
            input: attached.input,
            lines: rx,
            next_id: 0,
        })
    }

    pub(super) async fn exec_via_executor(
        &self,
        container: &str,
        session: &tokio::sync::Mutex<Session>,
        spec: &ExecSpec,
    ) -> Result<ExecOutcome> {
        let started = Instant::now();
        let mut s = session.lock().await;
        s.next_id += 1;
        let id = s.next_id;
        let request = ExecRequest {
            id,
            cmd: spec.cmd.clone(),
            env: spec.env.clone(),
            cwd: spec.workdir.clone(),
            timeout_ms: spec.deadline.saturating_duration_since(Instant::now()).as_millis() as u64,
            output_limit: OUTPUT_LIMIT,
            stdin: spec
                .stdin
                .as_ref()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        };
        let mut line = serde_json::to_vec(&request).expect("request serializes");
        line.push(b'\n');
        let lost = |what: &str| LabError::Docker {
            context: "talking to the in-container executor".into(),
            message: what.into(),
        };
        s.input
            .write_all(&line)
            .await
            .map_err(|e| lost(&format!("cannot send a command: {e}")))?;
        s.input
            .flush()
            .await
            .map_err(|e| lost(&format!("cannot send a command: {e}")))?;
        let guard = tokio::time::Instant::from_std(spec.deadline + EXECUTOR_GRACE);
        let response = match tokio::time::timeout_at(guard, s.lines.recv()).await {
            Ok(Some(text)) => serde_json::from_str::<ExecResponse>(&text)
                .map_err(|e| lost(&format!("unreadable answer ({e}): {text}")))?,
            Ok(None) => return Err(lost("the executor exited (the container stopped or was removed)")),
            Err(_) => {
                // The executor missed its own deadline: stop the whole container.
                let _ = self
                    .docker
                    .kill_container(
                        container,
                        Some(KillContainerOptionsBuilder::default().signal("KILL").build()),
                    )
                    .await;
                return Ok(ExecOutcome {
                    timed_out: true,
                    duration: started.elapsed(),
                    kill_latency: Some(Instant::now().saturating_duration_since(spec.deadline)),
                    ..Default::default()
                });
            }
        };
        if response.id != id {
            return Err(lost(&format!("answer {} to request {id}", response.id)));
        }
        if let Some(e) = response.error {
            return Err(lost(&e));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(ExecOutcome {
            exit_code: response.exit_code,
            stdout: b64.decode(response.stdout).unwrap_or_default(),
            stderr: b64.decode(response.stderr).unwrap_or_default(),
            timed_out: response.timed_out,
            truncated: response.truncated,
            duration: started.elapsed(),
            kill_latency: response.kill_latency_ms.map(Duration::from_millis),
        })
    }

    /// Builds `canary-lab/exec:<key>` = `image_id` + the executor binary, and checks that the
    /// executor runs there. The key covers the base image and the executor build, so each
    /// pair is built once and reused by every later run.
    pub(super) async fn derive_exec_image(&self, image_id: &str, exe: &std::path::Path) -> Result<String> {
        // A runner build carries its own runner (it is one of the build's components, judged
        // with it); other images (the bare base) get the reference runner built beside the lab
        // in the same layer, so the lab's forge and stub can run there.
        let has_runner = self
            .image(image_id)
            .await?
            .is_some_and(|i| i.labels.contains_key(canary_contract::build::labels::RUNNER_VERSION));
        let runner = exe.with_file_name("canary-runner");
        let runner = (runner.is_file() && !has_runner).then_some(runner);
        let tag = exec_tag(image_id, exe, runner.as_deref())?;
        let reference = format!("{EXEC_REPO}:{tag}");
        if let Some(info) = self.image(&reference).await? {
            return Ok(info.id);
        }
        // Parallel first runs would each commit the same tag; one builds, the rest wait.
        let _lock = crate::fsutil::lock(&std::env::temp_dir().join(format!("canary-lab-exec-{tag}.lock"))).await?;
        if let Some(info) = self.image(&reference).await? {
            return Ok(info.id);
        }
        let tar = exec_layer(exe, runner.as_deref())?;

        let run = format!("exec-image-{tag}");
        let labels = HashMap::from([(EXEC_BASE_LABEL.to_string(), image_id.to_string())]);
        let id = self
            .build_layer(Layer {
                parent: image_id,
                tar,
                reference: &reference,
                cmd: Some(vec![EXECUTOR_PATH.into()]),
                labels,
            })
            .await?;
        // Prove the executor runs in this image before any case depends on it.
        let mut spec = ContainerSpec::new(&run, "probe", &reference);
        spec.executor = true;
        let probe = async {
            let c = self.start_container(&spec).await?;
            let out = self
                .exec(
                    &c,
                    &ExecSpec {
                        stdin: None,
                        cmd: vec!["sh".into(), "-c".into(), "echo ok".into()],
                        env: vec![],
                        workdir: "/".into(),
                        deadline: Instant::now() + Duration::from_secs(10),
                    },
                )
                .await;
            self.remove_container(&c).await?;
            out
        }
        .await;
        match probe {
            Ok(out) if out.exit_code == Some(0) && out.stdout == b"ok\n" => {
                self.prune_exec_images(image_id, &id).await;
                Ok(id)
            }
            other => {
                let _ = self
                    .docker
                    .remove_image(
                        &reference,
                        Some(RemoveImageOptionsBuilder::default().force(true).build()),
                        None,
                    )
                    .await;
                Err(LabError::Docker {
                    context: "probing the executor".into(),
                    message: format!("{other:?}"),
                })
            }
        }
    }
}

/// The executor's layer: its folder, the case user's workspace, the executor binary and, for an
/// image without a runner of its own, the reference runner.
fn exec_layer(exe: &std::path::Path, runner: Option<&std::path::Path>) -> Result<Vec<u8>> {
    let binary = std::fs::read(exe).map_err(|e| LabError::read(exe, e))?;
    let mut tar = tar::Builder::new(Vec::new());
    let dir = std::path::Path::new(EXECUTOR_PATH).parent().expect("has a parent");
    let mut p = std::path::PathBuf::new();
    for part in dir.strip_prefix("/").expect("absolute").components() {
        p.push(part);
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(tar::EntryType::Directory);
        hd.set_mode(0o755);
        hd.set_size(0);
        tar.append_data(&mut hd, format!("{}/", p.display()), std::io::empty())
            .expect("in-memory tar");
    }
    // The workspace, owned by the case user, so the executor can unpack repos into it.
    let mut hd = tar::Header::new_gnu();
    hd.set_entry_type(tar::EntryType::Directory);
    hd.set_mode(0o755);
    hd.set_size(0);
    hd.set_uid(crate::repos::CONTAINER_UID);
    hd.set_gid(crate::repos::CONTAINER_UID);
    tar.append_data(&mut hd, "work/", std::io::empty())
        .expect("in-memory tar");
    let mut hd = tar::Header::new_gnu();
    hd.set_mode(0o755);
    hd.set_size(binary.len() as u64);
    tar.append_data(&mut hd, EXECUTOR_PATH.trim_start_matches('/'), binary.as_slice())
        .expect("in-memory tar");
    if let Some(runner) = runner {
        let bytes = std::fs::read(runner).map_err(|e| LabError::read(runner, e))?;
        let mut hd = tar::Header::new_gnu();
        hd.set_mode(0o755);
        hd.set_size(bytes.len() as u64);
        tar.append_data(&mut hd, RUNNER_PATH.trim_start_matches('/'), bytes.as_slice())
            .expect("in-memory tar");
    }
    Ok(tar.into_inner().expect("in-memory tar"))
}
