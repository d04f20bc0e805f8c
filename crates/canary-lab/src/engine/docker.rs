//! The Docker backend, over the engine's HTTP API (bollard). The only module that imports bollard.

mod distribution;
pub use distribution::{Transfer, registry_error};
mod executor;
mod firewall;
pub use firewall::bridge_name;
mod layers;
pub use layers::{Layer, ListedImage};

use super::protocol::{EXECUTOR_PATH, ExecRequest, ExecResponse};
use super::{
    Backend, ContainerSpec, ExecOutcome, ExecSpec, GcReport, GcScope, ImageInfo, OUTPUT_LIMIT, PreparedImage, labels,
    owner_labels,
};
use crate::error::{LabError, Result};
use base64::Engine as _;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerConfig, ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CommitContainerOptionsBuilder, CreateContainerOptionsBuilder,
    CreateImageOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Where the reference runner is placed in case containers (on PATH).
pub const RUNNER_PATH: &str = "/usr/local/bin/canary-runner";
/// Repository of the derived images that carry the executor.
pub const EXEC_REPO: &str = "canary-lab/exec";
/// Label of an exec image naming the image it was derived from.
const EXEC_BASE_LABEL: &str = "canary-lab.exec-base";
/// Grace the lab gives the executor past a deadline before it kills the container itself.
const EXECUTOR_GRACE: Duration = Duration::from_secs(5);

/// A live connection to a case container's executor (its stdin and response lines).
struct Session {
    input: Pin<Box<dyn AsyncWrite + Send>>,
    lines: mpsc::UnboundedReceiver<String>,
    next_id: u64,
}

type Sessions = Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>>;

/// The user case containers run as (created in the base image; numeric so any image works).
pub const CASE_USER: &str = "1000:1000";

#[derive(Clone)]
pub struct DockerBackend {
    docker: Docker,
    sessions: Sessions,
}

fn docker_err(context: &str) -> impl FnOnce(bollard::errors::Error) -> LabError + '_ {
    move |e| LabError::Docker {
        context: context.to_string(),
        message: e.to_string(),
    }
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }
    )
}

impl DockerBackend {
    /// Connects with the usual defaults (`DOCKER_HOST` or the local socket) and agrees on an API
    /// version with the engine, so older engines work too.
    pub async fn connect() -> Result<DockerBackend> {
        let docker = match super::endpoint::selected() {
            Some(e) => Self::connect_endpoint(e).await?,
            None => {
                let unreachable = |e: bollard::errors::Error| LabError::DockerUnreachable { reason: e.to_string() };
                let docker = Docker::connect_with_defaults().map_err(unreachable)?;
                let docker = docker.negotiate_version().await.map_err(unreachable)?;
                docker.ping().await.map_err(unreachable)?;
                docker
            }
        };
        Ok(DockerBackend {
            docker,
            sessions: Arc::default(),
        })
    }

    /// One engine of `engines:` by its entry, whatever `--engine` picked.
    pub async fn connect_to(e: &super::endpoint::Endpoint) -> Result<DockerBackend> {
        Ok(DockerBackend {
            docker: Self::connect_endpoint(e).await?,
            sessions: Arc::default(),
        })
    }

    /// An engine of `engines:`: its socket, or its TCP port with mutual TLS (the engine's CA
    /// checks it, its CA checks the lab's client certificate).
    async fn connect_endpoint(e: &super::endpoint::Endpoint) -> Result<Docker> {
        use super::endpoint::Address;
        let unreachable = |err: bollard::errors::Error| {
            let help = match e.address() {
                Ok(Address::Tcp(..)) => {
                    "check the engine is up, that tls.ca signed its certificate, and that tls.cert and tls.key are a client certificate its CA signed"
                }
                _ => "check the engine is up and the socket path is right",
            };
            LabError::usage(
                format!(
                    "cannot reach engine {} at {}: {}",
                    e.name,
                    e.host,
                    crate::text::clean(&err.to_string())
                ),
                help,
            )
        };
        let docker = match e.address()? {
            Address::Unix(host) => Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION),
            Address::Tcp(hostport, tls) => {
                for f in [&tls.ca, &tls.cert, &tls.key] {
                    std::fs::metadata(f).map_err(|err| LabError::read(f, err))?;
                }
                Docker::connect_with_ssl(
                    hostport,
                    &tls.key,
                    &tls.cert,
                    &tls.ca,
                    120,
                    bollard::API_DEFAULT_VERSION,
                )
            }
        }
        .map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(docker)
    }

    /// The gateway address of a Docker network (the host, on `bridge`): the one its IPAM
    /// names, else the first address of its IPv4 subnet (where Docker puts the bridge's own
    /// address; the default bridge's inspect often names no gateway).
    pub async fn gateway(&self, network: &str) -> Result<Option<std::net::IpAddr>> {
        let n = self
            .docker
            .inspect_network(network, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
            .map_err(docker_err("inspecting a network"))?;
        let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
        let named = configs
            .iter()
            .find_map(|c| c.gateway.as_deref().and_then(|g| g.parse().ok()));
        let first = || {
            configs.iter().find_map(|c| {
                let (net, _) = c.subnet.as_deref()?.split_once('/')?;
                let net: std::net::Ipv4Addr = net.parse().ok()?;
                Some(std::net::IpAddr::V4((u32::from(net) + 1).into()))
            })
        };
        Ok(named.or_else(first))
    }

    /// Imports a root filesystem tar as an image (`docker import`), with Dockerfile-style
    /// `changes` such as `ENV` and `WORKDIR`. Returns the image id.
    pub async fn import_rootfs<S>(&self, reference: &str, changes: Vec<String>, tar: S) -> Result<String>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes)
            .build();
        let mut progress = self
            .docker
            .create_image(Some(options), Some(bollard::body_try_stream(tar)), None);
        while let Some(item) = progress.next().await {
            item.map_err(docker_err("importing the base image"))?;
        }
        let info = self
            .image(reference)
            .await?
            .ok_or_else(|| LabError::ImageBuild(format!("{reference} missing after import")))?;
        Ok(info.id)
    }

    async fn exec_once(&self, container: &str, cmd: Vec<String>, env: Vec<String>, workdir: &str) -> Result<String> {
        let exec = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd),
                    env: Some(env),
                    working_dir: Some(workdir.to_string()),
                    user: Some(CASE_USER.to_string()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(docker_err("creating an exec"))?;
        Ok(exec.id)
    }

    /// Kills every process of the case user except the container's init, which is how a
    /// timed-out step (and whatever it spawned) is stopped: Docker has no "kill exec" call.
    async fn kill_case_processes(&self, container: &str) -> Result<()> {
        let id = self
            .exec_once(
                container,
                vec!["sh".into(), "-c".into(), "kill -9 -1".into()],
                vec![],
                "/",
            )
            .await?;
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&id, None)
            .await
            .map_err(docker_err("killing a step"))?
        {
            while output.next().await.is_some() {}
        }
        Ok(())
    }

    async fn wait_exit(&self, exec_id: &str) -> Result<Option<i64>> {
        for _ in 0..200 {
            let info = self
                .docker
                .inspect_exec(exec_id)
                .await
                .map_err(docker_err("inspecting an exec"))?;
            if info.running != Some(true) {
                return Ok(info.exit_code);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(None)
    }
}

fn append_capped(buf: &mut Vec<u8>, data: &[u8], truncated: &mut bool) {
    let room = OUTPUT_LIMIT.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

impl Backend for DockerBackend {
    async fn describe(&self) -> Result<String> {
        let v = self
            .docker
            .version()
            .await
            .map_err(docker_err("reading the engine version"))?;
        Ok(format!(
            "docker {} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(Some(ImageInfo {
                id: img.id.unwrap_or_default(),
                labels: img
                    .config
                    .and_then(|c| c.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(docker_err("inspecting an image")(e)),
        }
    }

    async fn prepare_image(&self, image_id: &str) -> Result<PreparedImage> {
        let fallback = |note: String| PreparedImage {
            id: image_id.to_string(),
            executor: false,
            note: Some(note),
        };
        if std::env::var("CANARY_EXECUTOR").is_ok_and(|v| v == "off") {
            return Ok(fallback("CANARY_EXECUTOR=off: steps use docker exec".into()));
        }
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("canary-exec")));
        let Some(exe) = exe.filter(|p| p.is_file()) else {
            return Ok(fallback("canary-exec is not installed next to canary (`cargo build --bins`); steps use docker exec, which is slower".into()));
        };
        match self.derive_exec_image(image_id, &exe).await {
            Ok(id) => Ok(PreparedImage {
                id,
                executor: true,
                note: None,
            }),
            Err(e) => Ok(fallback(format!(
                "the executor does not run in this image ({e}); steps use docker exec, which is slower"
            ))),
        }
    }

    async fn create_network(&self, run_id: &str) -> Result<String> {
        let name = format!("canary-lab-{run_id}");
        let iface = firewall::bridge_name(&name);
        self.docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                // Internal: members reach each other, never the outside world. The bridge gets
                // no address of its own, so the engine's host is not on the network either (a
                // remote engine included, whose firewall the lab cannot touch); where the lab
                // runs as root the local firewall refuses the host as well.
                internal: Some(true),
                labels: Some(owner_labels(run_id)),
                options: Some(
                    [
                        ("com.docker.network.bridge.name".to_string(), iface.clone()),
                        ("com.docker.network.bridge.inhibit_ipv4".to_string(), "true".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            })
            .await
            .map_err(docker_err("creating the lab network"))?;
        firewall::close(&iface);
        Ok(name)
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        match self.docker.remove_network(name).await {
            Ok(()) => {
                firewall::open(&firewall::bridge_name(name));
                Ok(())
            }
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(docker_err("removing the lab network")(e)),
        }
    }

    async fn start_container(&self, spec: &ContainerSpec) -> Result<String> {
        let body = create_body(spec);
        let name = format!("canary-{}-{}", spec.run_id, spec.case_id);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(c) => c,
            Err(e) if not_found(&e) => {
                return Err(LabError::ImageMissing {
                    image: spec.image.clone(),
                    hint: "build it with `canary images base` or name an image that exists (`docker images`)".into(),
                });
            }
            Err(e) => return Err(docker_err("creating a case container")(e)),
        };
        let started = async {
            if spec.executor {
                let session = self.attach_executor(&created.id).await?;
                self.sessions
                    .lock()
                    .expect("sessions lock")
                    .insert(created.id.clone(), Arc::new(tokio::sync::Mutex::new(session)));
            }
            self.docker
                .start_container(&created.id, None)
                .await
                .map_err(docker_err("starting a case container"))
        }
        .await;
        if let Err(e) = started {
            let _ = self.remove_container(&created.id).await;
            return Err(e);
        }
        Ok(created.id)
    }

    async fn container_ip(&self, container: &str, network: &str) -> Result<String> {
        let info = self
            .docker
            .inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(docker_err("inspecting a lab container"))?;
        info.network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| LabError::usage(format!("container {container} has no address on {network}"), "internal"))
    }

    async fn upload(&self, container: &str, tar: Vec<u8>) -> Result<()> {
        // Through the executor when there is one: the engine's archive API re-executes a
        // chrooted untar for every upload, which costs far more than tar itself.
        let session = self.sessions.lock().expect("sessions lock").get(container).cloned();
        if let Some(session) = session {
            let spec = ExecSpec {
                cmd: ["tar", "-x", "-f", "-", "-C", "/", "--no-same-owner"]
                    .map(String::from)
                    .to_vec(),
                env: vec![],
                workdir: "/".into(),
                deadline: Instant::now() + Duration::from_secs(120),
                stdin: Some(tar),
            };
            let out = self.exec_via_executor(container, &session, &spec).await?;
            if out.exit_code != Some(0) {
                return Err(LabError::Docker {
                    context: "unpacking the repo".into(),
                    message: format!(
                        "tar exited {:?}: {}",
                        out.exit_code,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
            return Ok(());
        }
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(docker_err("uploading the repo"))
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<ExecOutcome> {
        let session = self.sessions.lock().expect("sessions lock").get(container).cloned();
        if let Some(session) = session {
            return self.exec_via_executor(container, &session, spec).await;
        }
        let started = Instant::now();
        let id = self
            .exec_once(container, spec.cmd.clone(), spec.env.clone(), &spec.workdir)
            .await?;
        let mut out = ExecOutcome::default();
        let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&id, None)
            .await
            .map_err(docker_err("starting an exec"))?
        else {
            unreachable!("attached exec")
        };
        let deadline = tokio::time::Instant::from_std(spec.deadline);
        let mut killed_at = None;
        loop {
            let next = if killed_at.is_none() {
                tokio::select! {
                    item = output.next() => item,
                    _ = tokio::time::sleep_until(deadline) => {
                        out.timed_out = true;
                        killed_at = Some(Instant::now());
                        self.kill_case_processes(container).await?;
                        continue;
                    }
                }
            } else {
                // After the kill the stream ends at once; a second of grace guards against a
                // process that escaped the kill (it cannot: it would have to change user).
                tokio::time::timeout(Duration::from_secs(1), output.next())
                    .await
                    .unwrap_or_default()
            };
            match next {
                None => break,
                Some(Ok(LogOutput::StdOut { message })) | Some(Ok(LogOutput::Console { message })) => {
                    append_capped(&mut out.stdout, &message, &mut out.truncated)
                }
                Some(Ok(LogOutput::StdErr { message })) => append_capped(&mut out.stderr, &message, &mut out.truncated),
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => return Err(docker_err("reading exec output")(e)),
            }
        }
        out.exit_code = self.wait_exit(&id).await?;
        out.duration = started.elapsed();
        out.kill_latency = killed_at.map(|_| Instant::now().saturating_duration_since(spec.deadline));
        Ok(out)
    }

    async fn remove_container(&self, container: &str) -> Result<()> {
        self.sessions.lock().expect("sessions lock").remove(container);
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // 409: removal already in progress (e.g. a concurrent gc).
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(e) => Err(docker_err("removing a case container")(e)),
        }
    }

    async fn gc(&self, scope: GcScope) -> Result<GcReport> {
        let mut report = GcReport::default();
        // Only what the lab created: a container started from a lab image by anyone else inherits
        // the image's lab labels, but `canary-lab.owned` empty.
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".into(), vec![format!("{}=1", labels::OWNED)])]);
        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(docker_err("listing lab containers"))?;
        for c in containers {
            let l = c.labels.unwrap_or_default();
            if !scope.selects(&l) {
                report.skipped_live += 1;
                continue;
            }
            if let Some(id) = c.id {
                self.remove_container(&id).await?;
                report.containers.push(
                    c.names
                        .and_then(|n| n.first().cloned())
                        .unwrap_or(id)
                        .trim_start_matches('/')
                        .to_string(),
                );
            }
        }
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filters).build()))
            .await
            .map_err(docker_err("listing lab networks"))?;
        for n in networks {
            let l = n.labels.unwrap_or_default();
            if !scope.selects(&l) {
                report.skipped_live += 1;
                continue;
            }
            if let Some(name) = n.name {
                match self.docker.remove_network(&name).await {
                    Ok(()) => {
                        firewall::open(&firewall::bridge_name(&name));
                        report.networks.push(name)
                    }
                    Err(e) if not_found(&e) => {}
                    // A container gc leaves alone (kept by `repro --keep`, or another run's) is
                    // still attached: the network goes with it later, not now.
                    Err(bollard::errors::Error::DockerResponseServerError { status_code: 403, .. }) => {
                        report.skipped_live += 1
                    }
                    Err(e) => return Err(docker_err("removing the lab network")(e)),
                }
            }
        }
        Ok(report)
    }
}

/// A case container: the lab's labels, no capabilities, no new privileges, its resource limits,
/// no network unless the run has one.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut container_labels = owner_labels(&spec.run_id);
    container_labels.insert(labels::CASE.into(), spec.case_id.clone());
    if spec.keep {
        container_labels.insert(labels::KEEP.into(), "1".into());
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        // PID 1 is the executor that runs the steps, or an idle init when steps arrive as
        // engine execs; either way a deadline kills everything but it.
        cmd: Some(if let Some(cmd) = &spec.cmd {
            cmd.clone()
        } else if spec.executor {
            vec![EXECUTOR_PATH.into()]
        } else {
            vec!["sleep".into(), "infinity".into()]
        }),
        open_stdin: Some(spec.executor),
        attach_stdin: Some(spec.executor),
        attach_stdout: Some(spec.executor),
        attach_stderr: Some(spec.executor),
        stdin_once: Some(false),
        tty: Some(false),
        user: Some(CASE_USER.into()),
        working_dir: Some(crate::repos::WORKDIR.into()),
        env: Some(spec.env.clone()),
        labels: Some(container_labels),
        network_disabled: Some(spec.network.is_none()),
        networking_config: spec
            .network
            .as_ref()
            .filter(|_| !spec.aliases.is_empty())
            .map(|n| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    n.clone(),
                    EndpointSettings {
                        aliases: Some(spec.aliases.clone()),
                        ..Default::default()
                    },
                )])),
            }),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network.clone().unwrap_or_else(|| "none".into())),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(spec.memory_bytes),
            pids_limit: Some(spec.pids_limit),
            nano_cpus: Some(spec.nano_cpus),
            dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
            sysctls: spec
                .low_ports
                .then(|| HashMap::from([("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())])),
            ..Default::default()
        }),
        ..Default::default()
    }
}
