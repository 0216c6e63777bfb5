//! The container runtime: a replica is a container of the deployment's
//! image, run through the Docker Engine API (Docker, or podman's compatible
//! service), as faasd runs functions with containerd. The image's watchdog
//! listens on 8080, published on a loopback port of this host; the
//! deployment's secrets are mounted read-only at `/var/openfaas/secrets`;
//! `limits` and `readOnlyRootFilesystem` apply.

use super::ProviderError;
use super::limits::Limits;
use super::replicas::{Instance, Supervised, forward_lines};
use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StatsOptions, StopContainerOptions,
};
use futures_util::{StreamExt, TryStreamExt};
use openfaas::FunctionDeployment;
use std::collections::{BTreeMap, HashMap};

/// Marks the containers of one gateway; its value is the provider's `prefix`.
const OWNER_LABEL: &str = "io.switchboard.owner";
/// Names the function a container serves (`name.namespace`).
const FUNCTION_LABEL: &str = "io.switchboard.function";
/// The watchdog's port in a function image, as OpenFaaS's templates have it.
const WATCHDOG_PORT: &str = "8080/tcp";
/// Where a function finds its secrets in a container, as on OpenFaaS.
const SECRETS_DIR: &str = "/var/openfaas/secrets";

pub struct Containers {
    docker: Docker,
    prefix: String,
}

impl Containers {
    /// Connects to the engine at `host` (`unix:///…`, `tcp://…`), or at
    /// `DOCKER_HOST`, or Docker's default socket, and removes the containers
    /// an earlier run under the same `prefix` left behind (a gateway killed
    /// before it could stop them): what runs is what this run starts.
    pub async fn start(host: Option<&str>, prefix: String) -> Result<Self, String> {
        let at = host.map(str::to_string).or_else(|| std::env::var("DOCKER_HOST").ok());
        let at = at.unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let unreachable = |e: EngineError| {
            format!(
                "the container engine at {at} does not answer: {e} (set provider.docker_host or DOCKER_HOST; \
                 podman serves the API with: podman system service --time=0 unix:///run/podman/podman.sock)"
            )
        };
        let docker = Docker::connect_with_host(&at).map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        let engine = Self { docker, prefix };
        let leftovers = engine.owned().await.map_err(|e| format!("cannot list containers at {at}: {e}"))?;
        for id in &leftovers {
            engine.remove(id).await;
        }
        if !leftovers.is_empty() {
            tracing::info!(count = leftovers.len(), prefix = %engine.prefix, "removed containers an earlier run left");
        }
        Ok(engine)
    }

    /// The ids of this gateway's containers.
    async fn owned(&self) -> Result<Vec<String>, EngineError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{OWNER_LABEL}={}", self.prefix)])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let listed = self.docker.list_containers(Some(options)).await?;
        Ok(listed.into_iter().filter_map(|c| c.id).collect())
    }

    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        // 404: already gone, which is what was wanted.
        if let Err(e) = self.docker.remove_container(id, Some(options)).await
            && !matches!(e, EngineError::DockerResponseServerError { status_code: 404, .. })
        {
            tracing::warn!(container = %id, error = %e, "cannot remove a container");
        }
    }

    /// What the container runtime needs of a deployment, checked before it
    /// is taken.
    pub(super) fn check(&self, d: &FunctionDeployment) -> Result<(), ProviderError> {
        if d.image.trim().is_empty() {
            return Err(ProviderError::Invalid(
                "image: required by the container provider, which runs each function's image".into(),
            ));
        }
        Limits::of(d).map(|_| ())
    }

    /// The image is here, or is pulled now; a deployment whose image cannot
    /// be had is refused rather than left restarting.
    pub(super) async fn ensure_image(&self, image: &str) -> Result<(), ProviderError> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let options = CreateImageOptions { from_image: Some(image.to_string()), ..Default::default() };
        let pulled: Result<Vec<_>, _> = self.docker.create_image(Some(options), None, None).try_collect().await;
        pulled.map(|_| ()).map_err(|e| {
            ProviderError::Invalid(format!("image {image:?}: not on the container engine, and cannot be pulled: {e}"))
        })
    }

    /// Runs the replica's container once: `Some(why)` when it exited or
    /// could not start, `None` when it was told to stop and has stopped.
    /// Either way the container is removed.
    pub(super) async fn run(&self, s: &mut Supervised) -> Option<String> {
        let d = &s.deployment;
        let name = format!("{}-{}-{}-{}", self.prefix, d.service, s.namespace, s.port);
        // A container of this name is one this gateway left: a crash's.
        self.remove(&name).await;
        let body = match self.create_body(s) {
            Ok(body) => body,
            Err(e) => return Some(e),
        };
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let id = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created.id,
            Err(e) => return Some(format!("cannot create the container {name}: {e}")),
        };
        if let Err(e) = self.docker.start_container(&id, None).await {
            self.remove(&id).await;
            return Some(format!("cannot start the container {name}: {e}"));
        }
        for (stdout, stderr) in [(true, false), (false, true)] {
            let (docker, id, logs, template) = (self.docker.clone(), id.clone(), s.logs.clone(), s.template());
            tokio::spawn(async move {
                let options = LogsOptions { follow: true, stdout, stderr, ..Default::default() };
                let lines =
                    docker.logs(&id, Some(options)).map_ok(|out| out.into_bytes()).map_err(std::io::Error::other);
                forward_lines(tokio_util::io::StreamReader::new(Box::pin(lines)), logs, template).await;
            });
        }
        s.endpoint.running(Some(Instance::Container(id.clone())));
        let mut wait = self.docker.wait_container(&id, None);
        let exited = tokio::select! {
            waited = wait.next() => Some(match waited {
                Some(Ok(w)) => format!("exit status: {}", w.status_code),
                Some(Err(EngineError::DockerContainerWaitError { code, .. })) => format!("exit status: {code}"),
                Some(Err(e)) => format!("lost sight of the container {name}: {e}"),
                None => format!("lost sight of the container {name}"),
            }),
            _ = &mut s.stopped => {
                // SIGTERM, the watchdog drains, SIGKILL after the timeout.
                let t = s.settings.stop_timeout.as_secs().max(1) as i32;
                let options = StopContainerOptions { t: Some(t), ..Default::default() };
                if let Err(e) = self.docker.stop_container(&id, Some(options)).await {
                    tracing::warn!(container = %name, error = %e, "cannot stop a container; removing it");
                }
                None
            }
        };
        s.endpoint.running(None);
        self.remove(&id).await;
        exited
    }

    /// The CPU time, in nanoseconds, the container `id` has used.
    pub(super) async fn cpu_nanos(&self, id: &str) -> Option<u64> {
        let options = StatsOptions { stream: false, one_shot: true };
        let stats = self.docker.stats(id, Some(options)).next().await?.ok()?;
        stats.cpu_stats?.cpu_usage?.total_usage
    }

    fn create_body(&self, s: &Supervised) -> Result<ContainerCreateBody, String> {
        let d = &s.deployment;
        let Limits { memory, nano_cpus } = Limits::of(d).map_err(|e| e.to_string())?;
        let mut binds = vec![];
        if let Some(dir) = &s.secrets {
            for name in &d.secrets {
                // The store's file itself: a link would point nowhere inside.
                let file = std::fs::canonicalize(dir.join(name))
                    .map_err(|e| format!("cannot find the secret {name} to mount: {e}"))?;
                binds.push(format!("{}:{SECRETS_DIR}/{name}:ro", file.display()));
            }
        }
        let published = PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(s.port.to_string()) };
        let labels = HashMap::from([
            (OWNER_LABEL.to_string(), self.prefix.clone()),
            (FUNCTION_LABEL.to_string(), format!("{}.{}", d.service, s.namespace)),
        ]);
        Ok(ContainerCreateBody {
            image: Some(d.image.clone()),
            env: Some(s.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            exposed_ports: Some(vec![WATCHDOG_PORT.into()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(WATCHDOG_PORT.to_string(), Some(vec![published]))])),
                binds: (!binds.is_empty()).then_some(binds),
                readonly_rootfs: Some(d.read_only_root_filesystem),
                // A read-only function still has a scratch /tmp, as on OpenFaaS.
                tmpfs: d.read_only_root_filesystem.then(|| HashMap::from([("/tmp".to_string(), String::new())])),
                memory,
                nano_cpus,
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

/// A container's environment: the deployment's, and `fprocess` when the
/// deployment names a command (otherwise the image's own is used).
pub(super) fn environment(d: &FunctionDeployment) -> BTreeMap<String, String> {
    let mut env = d.env_vars.clone().into_iter().collect::<BTreeMap<_, _>>();
    if let Some(command) = d.env_process.as_ref().filter(|p| !p.trim().is_empty()) {
        env.insert("fprocess".into(), command.clone());
    }
    env
}
