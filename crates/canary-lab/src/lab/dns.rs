//! The lab network's DNS for outside names: the server (`canary-runner lab-dns`) lives in the
//! runner crate; the lab starts it in a container of the run.

use crate::engine::{Backend, ContainerSpec};
use crate::error::Result;

pub use canary_runner::dns::{answer, serve};

/// Starts the lab DNS in `image` (an image of the run that carries `canary-runner`) on
/// `network` and returns its address for the cases' DNS setting.
pub async fn start<B: Backend>(backend: &B, run_id: &str, network: &str, image: &str) -> Result<String> {
    let mut spec = ContainerSpec::new(run_id, "dns", image);
    spec.network = Some(network.into());
    spec.memory_bytes = 64 << 20;
    spec.low_ports = true;
    spec.cmd = Some(vec![
        crate::engine::docker::RUNNER_PATH.into(),
        "lab-dns".into(),
        "--listen".into(),
        "0.0.0.0:53".into(),
    ]);
    let id = backend.start_container(&spec).await?;
    backend.container_ip(&id, network).await
}
