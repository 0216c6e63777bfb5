//! Where functions come from and how to reach them. `process` runs each
//! function as watchdog-fronted local processes, `container` as containers
//! of its image (both supervised by [`ReplicaProvider`]); `static` routes to
//! functions that already run elsewhere (containers, other hosts).

mod autoscale;
mod cgroup;
mod container;
mod limits;
mod process;
mod replicas;
mod sandbox;
mod secrets;
mod static_fns;

pub use autoscale::{Kind, Load, Scaled};
pub use container::Containers;
pub use replicas::{ReplicaProvider, ReplicaSettings, Runtime, reserve_ports};
pub use sandbox::Sandbox;
pub use static_fns::StaticProvider;

use crate::logs::LogStore;
use openfaas::{FunctionDeployment, FunctionNamespace, FunctionStatus, Secret};
use std::path::Path;
use std::sync::Arc;

/// Writes `bytes` to `path`, readable by its owner only, whole or not at
/// all: into a hidden file beside it, synced, then renamed over it, so a
/// reader or a crash never sees half of it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("function {0} not found")]
    NotFound(String),
    #[error("function {0} already exists; update it with PUT /system/functions")]
    Exists(String),
    #[error("invalid deployment: {0}")]
    Invalid(String),
    #[error("the {0} provider cannot {1}")]
    Unsupported(&'static str, &'static str),
    #[error("{0}")]
    Storage(String),
    /// Something other than a function not found, said whole.
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Conflict(String),
}

/// The result of resolving a function for an invocation.
pub enum Route {
    /// Base URL of a ready replica, and what its calls add to the
    /// function's load (for the functions this gateway runs).
    Ready(String, Option<std::sync::Arc<Load>>),
    /// The function has replicas, none ready yet: starting, or restarting
    /// after a crash.
    Starting,
    /// The function exists with no replicas (scaled to zero).
    NoReplicas,
    Unknown,
}

/// The label naming every function, as OpenFaaS's providers set it.
const FUNCTION_LABEL: &str = "faas_function";

pub enum Provider {
    // Boxed: the replica provider is large and the static one small.
    Replicas(Box<ReplicaProvider>),
    Static(StaticProvider),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Replicas(p) => p.runtime(),
            Provider::Static(_) => "static",
        }
    }

    pub fn route(&self, name: &str, namespace: &str) -> Route {
        match self {
            Provider::Replicas(p) => p.route(name, namespace),
            Provider::Static(p) => p.route(name, namespace),
        }
    }

    /// Starts a replica of a function at zero, for a call that waits for
    /// it: scale from zero, as OpenFaaS does. One replica, however many
    /// calls ask at once.
    pub fn wake(&self, name: &str, namespace: &str) {
        if let Provider::Replicas(p) = self {
            p.wake(name, namespace);
        }
    }

    /// One turn of scaling, meant for every second: functions labelled
    /// `com.openfaas.scale.zero: true` go to zero once idle for their
    /// `com.openfaas.scale.zero-duration`, as OpenFaaS's faas-idler does,
    /// and those that scale by load follow it. What the scalers measured
    /// and decided.
    pub async fn autoscale(&self) -> Vec<Scaled> {
        let Provider::Replicas(p) = self else { return vec![] };
        p.scale_idle().await;
        p.scale_by_load().await
    }

    /// The functions of `namespace`, each labelled `faas_function: NAME` as
    /// faas-netes and faasd label theirs (clients and dashboards select on
    /// it): added here, not kept in the deployment, so no redeploy drops it.
    pub fn list(&self, namespace: &str) -> Vec<FunctionStatus> {
        let mut list = match self {
            Provider::Replicas(p) => p.list(namespace),
            Provider::Static(p) => p.list(namespace),
        };
        for f in &mut list {
            f.labels.insert(FUNCTION_LABEL.into(), f.name.clone());
        }
        list
    }

    pub fn get(&self, name: &str, namespace: &str) -> Option<FunctionStatus> {
        self.list(namespace).into_iter().find(|f| f.name == name)
    }

    pub fn namespaces(&self, default: &str) -> Vec<String> {
        let mut all = match self {
            Provider::Replicas(p) => p.namespaces(),
            Provider::Static(p) => p.namespaces(),
        };
        all.push(default.to_string());
        all.sort();
        all.dedup();
        all
    }

    pub async fn namespace(&self, name: &str, default: &str) -> Option<FunctionNamespace> {
        match self {
            Provider::Replicas(p) => p.namespace(name).await,
            Provider::Static(_) => {
                self.namespaces(default).contains(&name.to_string()).then(|| FunctionNamespace::for_functions(name))
            }
        }
    }

    pub async fn put_namespace(&self, ns: FunctionNamespace, update: bool) -> Result<(), ProviderError> {
        match self {
            Provider::Replicas(p) => p.put_namespace(ns, update).await,
            Provider::Static(_) => {
                Err(ProviderError::Unsupported("static", "manage namespaces; name them in the config file"))
            }
        }
    }

    pub async fn delete_namespace(&self, name: &str) -> Result<(), ProviderError> {
        match self {
            Provider::Replicas(p) => p.delete_namespace(name).await,
            Provider::Static(_) => {
                Err(ProviderError::Unsupported("static", "manage namespaces; name them in the config file"))
            }
        }
    }

    pub fn secrets(&self, namespace: &str) -> Result<Vec<Secret>, ProviderError> {
        match self {
            Provider::Replicas(p) => p.secrets(namespace),
            Provider::Static(_) => {
                Err(ProviderError::Unsupported("static", "keep secrets; mount them into your containers"))
            }
        }
    }

    pub async fn put_secret(&self, namespace: &str, secret: Secret, update: bool) -> Result<(), ProviderError> {
        match self {
            Provider::Replicas(p) => p.put_secret(namespace, secret, update).await,
            Provider::Static(_) => {
                Err(ProviderError::Unsupported("static", "keep secrets; mount them into your containers"))
            }
        }
    }

    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), ProviderError> {
        match self {
            Provider::Replicas(p) => p.delete_secret(namespace, name).await,
            Provider::Static(_) => {
                Err(ProviderError::Unsupported("static", "keep secrets; mount them into your containers"))
            }
        }
    }

    pub async fn deploy(&self, d: FunctionDeployment) -> Result<(), ProviderError> {
        match self {
            Provider::Replicas(p) => p.deploy(d).await,
            Provider::Static(_) => {
                Err(ProviderError::Unsupported("static", "deploy functions; declare them in the config file"))
            }
        }
    }

    pub async fn update(&self, d: FunctionDeployment) -> Result<(), ProviderError> {
        match self {
            Provider::Replicas(p) => p.update(d).await,
            Provider::Static(_) => {
                Err(ProviderError::Unsupported("static", "update functions; declare them in the config file"))
            }
        }
    }

    pub async fn delete(&self, name: &str, namespace: &str) -> Result<(), ProviderError> {
        match self {
            Provider::Replicas(p) => p.delete(name, namespace).await,
            Provider::Static(_) => {
                Err(ProviderError::Unsupported("static", "delete functions; declare them in the config file"))
            }
        }
    }

    pub async fn scale(&self, name: &str, namespace: &str, replicas: u64) -> Result<(), ProviderError> {
        match self {
            Provider::Replicas(p) => p.scale(name, namespace, replicas).await,
            Provider::Static(_) => Err(ProviderError::Unsupported("static", "scale functions")),
        }
    }

    pub fn logs(&self) -> Option<Arc<LogStore>> {
        match self {
            Provider::Replicas(p) => Some(p.logs()),
            Provider::Static(_) => None,
        }
    }

    /// The platform is stopping: nothing starts or restarts from now on.
    pub fn close(&self) {
        if let Provider::Replicas(p) = self {
            p.close();
        }
    }

    pub async fn shutdown(&self) {
        if let Provider::Replicas(p) = self {
            p.shutdown().await;
        }
    }
}
