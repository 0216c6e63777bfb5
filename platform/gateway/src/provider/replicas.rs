//! The provider that runs functions itself: each replica of a function is
//! a watchdog process or a container ([`Runtime`]), supervised here:
//! restarted with backoff when it exits, stopped gracefully, and gone with
//! this process. What the API deploys, updates and scales is recorded in a
//! state file and restored at the next start, so queued work never finds
//! its function gone.

use super::autoscale::{Kind, Load, Policy, Scaled, Scaler};
use super::cgroup;
use super::container::{self, Containers};
use super::limits::Limits;
use super::process;
use super::sandbox::Sandbox;
use super::secrets::SecretStore;
use super::{ProviderError, Route};
use crate::logs::LogStore;
use openfaas::{FunctionDeployment, FunctionNamespace, FunctionStatus, LogMessage, NAMESPACE_LABEL, Secret};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Label that sets the replicas a function starts with (OpenFaaS's name).
const SCALE_MIN: &str = "com.openfaas.scale.min";
/// Label that caps a function's replicas, below the provider's own cap.
const SCALE_MAX: &str = "com.openfaas.scale.max";
/// Labels that scale an idle function to zero (OpenFaaS's faas-idler).
const SCALE_ZERO: &str = "com.openfaas.scale.zero";
const SCALE_ZERO_DURATION: &str = "com.openfaas.scale.zero-duration";
/// faas-idler's default idle time.
const DEFAULT_ZERO_DURATION: Duration = Duration::from_secs(15 * 60);
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A replica that ran this long before crashing restarts without delay growth.
const STABLE_RUN: Duration = Duration::from_secs(10);
/// Quick exits in a row that make a replica crash-looping; each of the
/// first ones is logged, then one line a [`CRASH_REPORT_EVERY`].
const CRASH_LOOP: u32 = 3;
const CRASH_REPORT_EVERY: Duration = Duration::from_secs(60);
/// The annotation a crash-looping function is listed with, which
/// `faas-cli describe` and the portal show.
const CRASH_ANNOTATION: &str = "com.switchboard.crash-looping";
/// The function's own last lines given with it.
const CRASH_LINES: usize = 3;
/// How the supervisor's own lines in a function's log begin.
const SUPERVISOR_MARK: &str = "replica exited";

/// How each replica runs.
pub enum Runtime {
    /// A watchdog child process on a loopback port, in front of the
    /// deployment's `envProcess`: the watchdog's command line
    /// (`switchboard watchdog`, or the small `switchboard-watchdog` binary),
    /// run in a sandbox unless isolation is off. `limits` apply through cgroups.
    Process { watchdog: Vec<String>, sandbox: Option<Arc<Sandbox>> },
    /// A container of the deployment's image, through the Docker Engine API.
    Container(Containers),
}

impl Runtime {
    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Process { .. } => "process",
            Runtime::Container(_) => "container",
        }
    }
}

pub struct ReplicaSettings {
    pub runtime: Runtime,
    pub default_namespace: String,
    pub stop_timeout: Duration,
    pub log_lines: usize,
    /// The most replicas of one function.
    pub max_replicas: u64,
    /// Where API changes are recorded; none: they last until the process ends.
    pub state: Option<PathBuf>,
    /// Where secrets are kept (`/system/secrets`).
    pub secrets: PathBuf,
    /// Settings every process replica's watchdog gets, under its
    /// deployment's own: the gateway's request-head bounds, so a request
    /// the gateway takes is not refused behind it.
    pub watchdog_env: BTreeMap<String, String>,
}

type Key = (String, String);

pub struct ReplicaProvider {
    /// The settings, the log store and the closing flag every replica starts with.
    starter: Starter,
    functions: RwLock<BTreeMap<Key, Arc<Function>>>,
    /// What the API changed, as written to `settings.state`; held while a
    /// change is recorded and applied, so changes apply in the recorded order.
    records: tokio::sync::Mutex<State>,
    /// The names in `records.namespaces`, for readers that do not wait.
    api_namespaces: RwLock<Vec<String>>,
    /// The stack file's functions as this start deployed them: what an API
    /// change is compared with at the next start.
    stack: RwLock<BTreeMap<Key, FunctionDeployment>>,
    secrets: SecretStore,
}

/// The API's changes: functions as it last left them, and the namespaces it
/// created.
#[derive(Clone, Default)]
struct State {
    functions: BTreeMap<Key, Record>,
    namespaces: BTreeMap<String, FunctionNamespace>,
}

/// The state file's form.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    #[serde(default)]
    namespaces: Vec<FunctionNamespace>,
    #[serde(default)]
    functions: Vec<Record>,
}

/// A function as the API last left it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    /// The definition the API deployed or updated; none when the API only
    /// scaled a function of the stack file, whose definition stays the stack's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deployment: Option<FunctionDeployment>,
    /// The stack file's definition when the API changed the function: one
    /// that differs at a later start means stack.yml was edited since, and
    /// the edit wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stack: Option<FunctionDeployment>,
    replicas: u64,
}

struct Function {
    deployment: FunctionDeployment,
    namespace: String,
    /// Its `secret_mount_path`, when it names secrets.
    secrets: Option<PathBuf>,
    created_at: String,
    replicas: RwLock<Vec<Replica>>,
    next: AtomicUsize,
    /// `com.openfaas.scale.zero-duration` when it scales to zero when idle.
    idle_limit: Option<Duration>,
    /// What its calls add to its load, and when it last had one.
    load: Arc<Load>,
    /// How it scales by load, when it does.
    scaler: Option<std::sync::Mutex<Scaler>>,
    /// Deleted or replaced: no replica of it starts any more, whoever
    /// (a call from zero, the autoscaler) still holds it.
    retired: AtomicBool,
}

struct Replica {
    endpoint: Arc<Endpoint>,
    stop: oneshot::Sender<()>,
    supervisor: JoinHandle<()>,
}

pub(super) struct Endpoint {
    url: String,
    ready: AtomicBool,
    /// Its exits that came soon after its start, in a row.
    crashes: std::sync::Mutex<Crashes>,
    /// What runs it now, when something does: whose CPU it uses.
    instance: std::sync::Mutex<Option<Instance>>,
    /// The CPU its instance had used at the last look, in nanoseconds.
    cpu_seen: AtomicU64,
}

/// What runs a replica.
#[derive(Clone)]
pub(super) enum Instance {
    /// The process that heads its process tree.
    Process(u32),
    /// Its container's id.
    Container(String),
}

#[derive(Default)]
struct Crashes {
    in_a_row: u32,
    last: Option<Instant>,
    status: String,
}

impl Endpoint {
    fn new(url: String) -> Self {
        let (crashes, instance) = Default::default();
        Self { url, ready: AtomicBool::new(false), crashes, instance, cpu_seen: AtomicU64::new(0) }
    }

    /// What runs the replica from now on (none: nothing, it ended).
    pub(super) fn running(&self, instance: Option<Instance>) {
        *self.instance.lock().expect("instance lock") = instance;
        self.cpu_seen.store(0, Ordering::Relaxed);
    }

    /// The CPU used since the last look, given all its instance has used.
    fn cpu_since(&self, total: u64) -> u64 {
        total.saturating_sub(self.cpu_seen.swap(total, Ordering::Relaxed))
    }

    /// Notes an exit after a run of `ran`; the exits in a row so far.
    fn exited(&self, ran: Duration, status: &str) -> u32 {
        let mut c = self.crashes.lock().expect("crashes lock");
        c.in_a_row = if ran > STABLE_RUN { 1 } else { c.in_a_row + 1 };
        c.last = Some(Instant::now());
        c.status = status.to_string();
        c.in_a_row
    }

    /// Exits in a row and the last status, while the replica is crash-
    /// looping: it exited soon after starting, again and again, and lately.
    fn crash_looping(&self) -> Option<(u32, String)> {
        let c = self.crashes.lock().expect("crashes lock");
        let lately = c.last.is_some_and(|t| t.elapsed() < RESTART_BACKOFF_MAX * 3);
        (c.in_a_row >= CRASH_LOOP && lately).then(|| (c.in_a_row, c.status.clone()))
    }
}

impl Replica {
    async fn stop(self) {
        self.endpoint.ready.store(false, Ordering::Release);
        let _ = self.stop.send(());
        let _ = self.supervisor.await;
    }
}

impl ReplicaProvider {
    pub fn new(settings: ReplicaSettings) -> Self {
        let logs = Arc::new(LogStore::new(settings.log_lines));
        let (functions, records, api_namespaces, stack) = Default::default();
        let secrets = SecretStore::new(settings.secrets.clone());
        let starter = Starter { settings: Arc::new(settings), logs, closing: Arc::new(AtomicBool::new(false)) };
        Self { starter, functions, records, api_namespaces, stack, secrets }
    }

    /// Deploys a function of the stack file: not recorded, since the stack
    /// file itself is read again at every start.
    pub async fn deploy_from_stack(&self, d: FunctionDeployment) -> Result<(), ProviderError> {
        let (d, namespace) = self.validate(d)?;
        self.image_ready(&d).await?;
        let key = (d.service.clone(), namespace.clone());
        self.stack.write().expect("stack lock").insert(key, d.clone());
        self.start_function((d, namespace)).await
    }

    /// Applies the API changes recorded by an earlier run, over the stack's
    /// functions. A state file that cannot be read stops the start.
    pub async fn restore(&self) -> Result<usize, ProviderError> {
        let Some(path) = &self.starter.settings.state else {
            return Ok(0);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(ProviderError::Storage(format!("cannot read {}: {e}", path.display()))),
        };
        let saved: Saved = serde_json::from_str(&text)
            .map_err(|e| ProviderError::Storage(format!("{} is not a function list: {e}", path.display())))?;
        let mut state = self.records.lock().await;
        state.namespaces = saved.namespaces.into_iter().map(|n| (n.name.clone(), n)).collect();
        *self.api_namespaces.write().expect("namespaces lock") = state.namespaces.keys().cloned().collect();
        let mut superseded = false;
        for mut r in saved.functions {
            let key = match &r.deployment {
                Some(d) => {
                    let (_, namespace) = self.validate(d.clone())?;
                    (d.service.clone(), namespace)
                }
                None => (r.name.clone(), r.namespace.clone()),
            };
            let in_stack = self.stack.read().expect("stack lock").get(&key).cloned();
            let qualified = format!("{}.{}", key.0, key.1);
            match (r.deployment.take(), in_stack) {
                (Some(_), Some(stack)) if r.stack.as_ref() != Some(&stack) => {
                    tracing::warn!(
                        function = %qualified, state = %path.display(),
                        "stack.yml changed this function after the API last deployed it: the stack's definition \
                         applies, superseding the API's recorded one (its replica count is kept)"
                    );
                    r.stack = None;
                    superseded = true;
                    self.scale_function(&key.0, &key.1, r.replicas).await?;
                }
                (Some(api), _) => {
                    let (d, namespace) = self.validate(api)?;
                    if self.find(&key.0, &key.1).is_some() {
                        self.replace(d.clone(), namespace, r.replicas).await?;
                    } else {
                        self.start_function((d.clone(), namespace)).await?;
                        self.scale_function(&key.0, &key.1, r.replicas).await?;
                    }
                    r.deployment = Some(d);
                }
                (None, Some(_)) => self.scale_function(&key.0, &key.1, r.replicas).await?,
                (None, None) => {
                    tracing::warn!(function = %qualified, "scaled through the API but no longer in stack.yml: its replica count is dropped");
                    superseded = true;
                    continue;
                }
            }
            (r.name, r.namespace) = key.clone();
            state.functions.insert(key, r);
        }
        if superseded {
            self.save(&state)?;
        }
        Ok(state.functions.len())
    }

    /// Records a change to the state before it is made; the caller holds
    /// the state locked while it makes it.
    fn record<T>(&self, state: &mut State, change: impl FnOnce(&mut State) -> T) -> Result<(), ProviderError> {
        let mut changed = state.clone();
        change(&mut changed);
        self.save(&changed)?;
        *state = changed;
        *self.api_namespaces.write().expect("namespaces lock") = state.namespaces.keys().cloned().collect();
        Ok(())
    }

    /// Writes the state to the state file (whole, then renamed over the old
    /// one, so a crash leaves one or the other). A change that cannot be
    /// recorded is refused, since it would be lost at the next restart.
    fn save(&self, state: &State) -> Result<(), ProviderError> {
        let Some(path) = &self.starter.settings.state else {
            return Ok(());
        };
        let err = |e: std::io::Error| {
            ProviderError::Storage(format!("cannot record the change in {}: {e}; nothing was changed", path.display()))
        };
        let saved = Saved {
            namespaces: state.namespaces.values().cloned().collect(),
            functions: state.functions.values().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&saved).expect("the state serializes");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // Deployments carry environment values, credentials among them.
        super::write_private(path, &json).map_err(err)
    }

    /// The runtime's name: `process` or `container`.
    pub fn runtime(&self) -> &'static str {
        self.starter.settings.runtime.name()
    }

    /// A container's image is at hand before its deployment is taken.
    async fn image_ready(&self, d: &FunctionDeployment) -> Result<(), ProviderError> {
        match &self.starter.settings.runtime {
            Runtime::Container(engine) => engine.ensure_image(&d.image).await,
            Runtime::Process { .. } => Ok(()),
        }
    }

    pub fn logs(&self) -> Arc<LogStore> {
        self.starter.logs.clone()
    }

    fn find(&self, name: &str, namespace: &str) -> Option<Arc<Function>> {
        self.functions.read().expect("functions lock").get(&(name.to_string(), namespace.to_string())).cloned()
    }

    pub fn route(&self, name: &str, namespace: &str) -> Route {
        let Some(f) = self.find(name, namespace) else {
            return Route::Unknown;
        };
        let replicas = f.replicas.read().expect("replicas lock");
        let n = replicas.len();
        let start = f.next.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            return Route::NoReplicas;
        }
        (0..n)
            .map(|i| &replicas[(start + i) % n].endpoint)
            .find(|e| e.ready.load(Ordering::Acquire))
            .map_or(Route::Starting, |e| Route::Ready(e.url.clone(), Some(f.load.clone())))
    }

    /// Starts one replica of a function at zero, unless the platform is stopping.
    pub fn wake(&self, name: &str, namespace: &str) {
        let Some(f) = self.find(name, namespace) else { return };
        let mut replicas = f.replicas.write().expect("replicas lock");
        if replicas.is_empty() && !f.ended(&self.starter) {
            match f.start_replica(&self.starter) {
                Ok(r) => {
                    replicas.push(r);
                    tracing::info!(function = %f.qualified(), "scaled from zero for a call");
                }
                Err(e) => tracing::error!(function = %f.qualified(), error = %e, "cannot start a replica"),
            }
        }
    }

    /// Scales to zero the functions that asked to be when idle and have
    /// been idle that long.
    pub async fn scale_idle(&self) {
        let functions: Vec<Arc<Function>> = self.functions.read().expect("functions lock").values().cloned().collect();
        for f in functions {
            let Some(limit) = f.idle_limit else { continue };
            if f.load.idle() >= limit && !f.replicas.read().expect("replicas lock").is_empty() {
                // Logged as decided: the replicas drain before they are gone.
                tracing::info!(function = %f.qualified(), idle = %humantime::format_duration(limit), "scaled to zero: idle ({SCALE_ZERO_DURATION})");
                f.scale(0, &self.starter).await;
            }
        }
    }

    /// Moves each function that scales by load toward the replicas its load
    /// asks for; what each one's scaler measured and decided. A function at
    /// zero is left there: its next call starts it.
    pub async fn scale_by_load(&self) -> Vec<Scaled> {
        let functions: Vec<Arc<Function>> = self.functions.read().expect("functions lock").values().cloned().collect();
        let mut report = vec![];
        for f in functions {
            let Some(scaler) = &f.scaler else { continue };
            let current = f.replicas.read().expect("replicas lock").len() as u64;
            let (kind, target) = {
                let s = scaler.lock().expect("scaler lock");
                (s.policy.kind, s.policy.target)
            };
            let cpu = if kind == Kind::Cpu { self.cpu_used(&f).await } else { 0 };
            let (load, decision) = {
                let mut s = scaler.lock().expect("scaler lock");
                if current == 0 {
                    s.reset(f.load.calls());
                    continue;
                }
                s.observe(Instant::now(), &f.load, cpu, current)
            };
            if let Some((to, why)) = &decision {
                tracing::info!(function = %f.qualified(), from = current, to, reason = %why, "autoscaled");
                // Out of routing now; drained apart, so the next tick is not held up.
                let surplus = f.resize(*to, &self.starter);
                tokio::spawn(futures_util::future::join_all(surplus.into_iter().map(Replica::stop)));
            }
            let scaled_to = decision.map(|(to, _)| to);
            report.push(Scaled { function: f.qualified(), kind, load, target, replicas: current, scaled_to });
        }
        report
    }

    /// The CPU `f`'s replicas used since the last look, in nanoseconds.
    async fn cpu_used(&self, f: &Function) -> u64 {
        let endpoints: Vec<Arc<Endpoint>> =
            f.replicas.read().expect("replicas lock").iter().map(|r| r.endpoint.clone()).collect();
        let (mut processes, mut containers) = (vec![], vec![]);
        for e in endpoints {
            let instance = e.instance.lock().expect("instance lock").clone();
            match instance {
                Some(Instance::Process(pid)) => processes.push((e, pid)),
                Some(Instance::Container(id)) => containers.push((e, id)),
                None => {}
            }
        }
        let pids: Vec<u32> = processes.iter().map(|(_, pid)| *pid).collect();
        let mut used: u64 =
            processes.iter().zip(process::cpu_nanos(&pids)).map(|((e, _), total)| e.cpu_since(total)).sum();
        if let Runtime::Container(engine) = &self.starter.settings.runtime {
            for (e, id) in containers {
                if let Some(total) = engine.cpu_nanos(&id).await {
                    used += e.cpu_since(total);
                }
            }
        }
        used
    }

    pub fn list(&self, namespace: &str) -> Vec<FunctionStatus> {
        let functions = self.functions.read().expect("functions lock");
        let listed = functions.values().filter(|f| f.namespace == namespace);
        listed.map(|f| self.with_crashes(f, f.status())).collect()
    }

    /// `status`, with why and what it last wrote when `f` is crash-looping.
    fn with_crashes(&self, f: &Function, mut status: FunctionStatus) -> FunctionStatus {
        let looping = f.replicas.read().expect("replicas lock").iter().find_map(|r| r.endpoint.crash_looping());
        if let Some((times, why)) = looping {
            let history = self.starter.logs.history(&f.deployment.service, &f.namespace);
            // Its own lines: the supervisor's are about it, not from it.
            let own = history.iter().rev().filter(|l| !l.text.starts_with(SUPERVISOR_MARK)).take(CRASH_LINES);
            let mut last: Vec<&str> = own.map(|l| l.text.as_str()).collect();
            last.reverse();
            status.annotations.insert(
                CRASH_ANNOTATION.into(),
                format!("exited {times} times in a row soon after starting ({why}); last lines: {}", last.join(" | ")),
            );
        }
        status
    }

    /// The namespaces functions may be in besides the default one: those
    /// the API created and those of the stack file's functions.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> =
            self.functions.read().expect("functions lock").keys().map(|(_, ns)| ns.clone()).collect();
        all.extend(self.api_namespaces.read().expect("namespaces lock").iter().cloned());
        all
    }

    fn namespace_known(&self, state: &State, namespace: &str) -> bool {
        namespace == self.starter.settings.default_namespace
            || state.namespaces.contains_key(namespace)
            || self.functions.read().expect("functions lock").keys().any(|(_, ns)| ns == namespace)
    }

    fn mount_secrets(&self, d: &FunctionDeployment, namespace: &str) -> Result<Option<PathBuf>, ProviderError> {
        if d.secrets.is_empty() {
            return Ok(None);
        }
        self.secrets.mount(namespace, &d.service, &d.secrets).map(Some)
    }

    /// `GET /system/secrets`: names, never values.
    pub fn secrets(&self, namespace: &str) -> Result<Vec<Secret>, ProviderError> {
        self.secrets.list(namespace)
    }

    /// `POST` (create) and `PUT` (update) `/system/secrets`.
    pub async fn put_secret(&self, namespace: &str, secret: Secret, update: bool) -> Result<(), ProviderError> {
        let state = self.records.lock().await;
        if !self.namespace_known(&state, namespace) {
            return Err(ProviderError::Missing(format!("namespace {namespace} not found")));
        }
        self.secrets.put(namespace, &secret, update)
    }

    /// `DELETE /system/secrets`; a secret a function uses stays.
    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), ProviderError> {
        let _state = self.records.lock().await;
        let users: Vec<String> = self
            .functions
            .read()
            .expect("functions lock")
            .values()
            .filter(|f| f.namespace == namespace && f.deployment.secrets.iter().any(|s| s == name))
            .map(|f| f.deployment.service.clone())
            .collect();
        if !users.is_empty() {
            return Err(ProviderError::Conflict(format!(
                "secret {name} is used by {}; remove it from them first",
                users.join(", ")
            )));
        }
        self.secrets.delete(namespace, name)
    }

    /// `GET /system/namespace/NAME`.
    pub async fn namespace(&self, name: &str) -> Option<FunctionNamespace> {
        let state = self.records.lock().await;
        match state.namespaces.get(name) {
            Some(ns) => Some(ns.clone()),
            None if self.namespace_known(&state, name) => Some(FunctionNamespace::for_functions(name)),
            None => None,
        }
    }

    /// Creates (`update: false`) or replaces a namespace for functions.
    pub async fn put_namespace(&self, ns: FunctionNamespace, update: bool) -> Result<(), ProviderError> {
        openfaas::check_name("namespace", &ns.name).map_err(|e| ProviderError::Invalid(e.to_string()))?;
        let (key, value) = NAMESPACE_LABEL;
        if ns.labels.get(key).map(String::as_str) != Some(value) {
            return Err(ProviderError::Invalid(format!(
                "namespace {:?}: a namespace for functions carries the label {key}: \"{value}\"",
                ns.name
            )));
        }
        let mut state = self.records.lock().await;
        match (self.namespace_known(&state, &ns.name), update) {
            (true, false) => return Err(ProviderError::Conflict(format!("namespace {} already exists", ns.name))),
            (false, true) => return Err(ProviderError::Missing(format!("namespace {} not found", ns.name))),
            _ => {}
        }
        self.record(&mut state, |s| s.namespaces.insert(ns.name.clone(), ns))
    }

    /// Deletes an empty namespace the API created.
    pub async fn delete_namespace(&self, name: &str) -> Result<(), ProviderError> {
        let mut state = self.records.lock().await;
        if !state.namespaces.contains_key(name) {
            if self.namespace_known(&state, name) {
                let why =
                    format!("namespace {name} was not created through the API (it is the default, or the stack's)");
                return Err(ProviderError::Conflict(why));
            }
            return Err(ProviderError::Missing(format!("namespace {name} not found")));
        }
        if self.functions.read().expect("functions lock").keys().any(|(_, ns)| ns == name) {
            return Err(ProviderError::Conflict(format!("namespace {name} has functions; delete them first")));
        }
        self.record(&mut state, |s| s.namespaces.remove(name))
    }

    fn validate(&self, mut d: FunctionDeployment) -> Result<(FunctionDeployment, String), ProviderError> {
        // Names become folders, container names and Kubernetes objects:
        // DNS labels, as OpenFaaS requires, checked as the API checks them.
        let namespace = d.namespace.clone().unwrap_or_else(|| self.starter.settings.default_namespace.clone());
        for (key, name) in [("service", &d.service), ("namespace", &namespace)] {
            openfaas::check_name(key, name).map_err(|e| ProviderError::Invalid(e.to_string()))?;
        }
        // of-watchdog reads its command from the environment, so stack files
        // written for it set `environment: {fprocess: …}` instead.
        if d.env_process.as_deref().is_none_or(|p| p.trim().is_empty()) {
            d.env_process = d.env_vars.get("fprocess").cloned();
        }
        match &self.starter.settings.runtime {
            Runtime::Process { .. } if d.env_process.as_deref().is_none_or(|p| p.trim().is_empty()) => {
                return Err(ProviderError::Invalid(
                    "envProcess (or envVars.fprocess): required by the process provider, which runs a command \
                     (e.g. \"cat\"), not an image; the container provider runs images"
                        .into(),
                ));
            }
            Runtime::Container(c) => c.check(&d)?,
            // Limits that cannot apply here are refused, not ignored.
            Runtime::Process { .. } => cgroup::check(&Limits::of(&d)?).map_err(ProviderError::Invalid)?,
        }
        idle_limit(&d)?;
        self.scaling(&d)?;
        let max = self.max_replicas(&d)?;
        match d.labels.get(SCALE_MIN).map(|v| (v, v.parse::<u64>())) {
            Some((v, Err(_))) => {
                return Err(ProviderError::Invalid(format!("labels.{SCALE_MIN} {v:?}: expected a whole number")));
            }
            Some((_, Ok(min))) if min > max => {
                return Err(ProviderError::Invalid(format!(
                    "labels.{SCALE_MIN} {min}: over the function's maximum of {max} replicas"
                )));
            }
            _ => {}
        }
        d.namespace = Some(namespace.clone());
        Ok((d, namespace))
    }

    /// The most replicas `d` may have: its `com.openfaas.scale.max` label,
    /// within the provider's `max_replicas`.
    fn max_replicas(&self, d: &FunctionDeployment) -> Result<u64, ProviderError> {
        let cap = self.starter.settings.max_replicas;
        match d.labels.get(SCALE_MAX) {
            None => Ok(cap),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n.min(cap)),
                _ => Err(ProviderError::Invalid(format!("labels.{SCALE_MAX} {v:?}: expected a whole number above 0"))),
            },
        }
    }

    /// How `d` scales by load, between its minimum and its maximum.
    fn scaling(&self, d: &FunctionDeployment) -> Result<Option<Policy>, ProviderError> {
        let max = self.max_replicas(d)?;
        Policy::of(d, initial_replicas(d), max, d.labels.contains_key(SCALE_MAX)).map_err(ProviderError::Invalid)
    }

    pub async fn deploy(&self, d: FunctionDeployment) -> Result<(), ProviderError> {
        let (d, namespace) = self.validate(d)?;
        self.image_ready(&d).await?;
        let key = (d.service.clone(), namespace.clone());
        let mut state = self.records.lock().await;
        if self.find(&key.0, &key.1).is_some() {
            return Err(ProviderError::Exists(format!("{}.{namespace}", d.service)));
        }
        if !self.namespace_known(&state, &namespace) {
            return Err(ProviderError::Invalid(format!(
                "namespace {namespace:?} does not exist; create it first with POST /system/namespace/ \
                 and the label openfaas: \"1\" (faas-cli namespace create {namespace})"
            )));
        }
        let record = self.api_record(&key, Some(d.clone()), initial_replicas(&d));
        self.record(&mut state, |s| s.functions.insert(key, record))?;
        self.start_function((d, namespace)).await
    }

    async fn start_function(&self, (d, namespace): (FunctionDeployment, String)) -> Result<(), ProviderError> {
        let key = (d.service.clone(), namespace.clone());
        let mounted = self.mount_secrets(&d, &namespace)?;
        let policy = self.scaling(&d)?;
        let f = {
            let mut functions = self.functions.write().expect("functions lock");
            if functions.contains_key(&key) {
                return Err(ProviderError::Exists(format!("{}.{namespace}", d.service)));
            }
            let f = Arc::new(Function::new(d, namespace, mounted, policy));
            functions.insert(key, f.clone());
            f
        };
        let initial = initial_replicas(&f.deployment);
        f.scale(initial, &self.starter).await;
        tracing::info!(function = %f.qualified(), replicas = initial, "deployed");
        Ok(())
    }

    /// Replaces a function: new replicas start, and the old ones stop once
    /// the new ones are ready (or after a bounded wait).
    pub async fn update(&self, d: FunctionDeployment) -> Result<(), ProviderError> {
        let (d, namespace) = self.validate(d)?;
        self.image_ready(&d).await?;
        let key = (d.service.clone(), namespace.clone());
        let mut state = self.records.lock().await;
        let old =
            self.find(&key.0, &key.1).ok_or_else(|| ProviderError::NotFound(format!("{}.{namespace}", d.service)))?;
        let replicas = (old.replicas.read().expect("replicas lock").len() as u64).min(self.max_replicas(&d)?);
        let record = self.api_record(&key, Some(d.clone()), replicas);
        self.record(&mut state, |s| s.functions.insert(key, record))?;
        self.replace(d, namespace, replicas).await
    }

    /// Starts `replicas` of the new deployment, then stops the old ones.
    async fn replace(&self, d: FunctionDeployment, namespace: String, replicas: u64) -> Result<(), ProviderError> {
        let key = (d.service.clone(), namespace.clone());
        let old =
            self.find(&key.0, &key.1).ok_or_else(|| ProviderError::NotFound(format!("{}.{namespace}", d.service)))?;
        let replicas = replicas.min(self.max_replicas(&d)?);
        let mounted = self.mount_secrets(&d, &namespace)?;
        let policy = self.scaling(&d)?;
        let new = Arc::new(Function::new(d, namespace, mounted, policy));
        new.scale(replicas, &self.starter).await;
        new.wait_ready(Duration::from_secs(10)).await;
        self.functions.write().expect("functions lock").insert(key, new.clone());
        old.retire(&self.starter).await;
        tracing::info!(function = %new.qualified(), "updated");
        Ok(())
    }

    pub async fn delete(&self, name: &str, namespace: &str) -> Result<(), ProviderError> {
        let key = (name.to_string(), namespace.to_string());
        let mut state = self.records.lock().await;
        if self.find(name, namespace).is_none() {
            return Err(ProviderError::NotFound(format!("{name}.{namespace}")));
        }
        self.record(&mut state, |s| s.functions.remove(&key))?;
        let removed = self.functions.write().expect("functions lock").remove(&key);
        let f = removed.ok_or_else(|| ProviderError::NotFound(format!("{name}.{namespace}")))?;
        f.retire(&self.starter).await;
        self.secrets.unmount(namespace, name);
        tracing::info!(function = %f.qualified(), "deleted");
        Ok(())
    }

    pub async fn scale(&self, name: &str, namespace: &str, replicas: u64) -> Result<(), ProviderError> {
        let f = self.find(name, namespace).ok_or_else(|| ProviderError::NotFound(format!("{name}.{namespace}")))?;
        let max = self.max_replicas(&f.deployment)?;
        if replicas > max {
            return Err(ProviderError::Invalid(format!(
                "replicas {replicas}: over the maximum of {max} for {name}.{namespace} \
                 (labels.{SCALE_MAX}, within provider.max_replicas)"
            )));
        }
        let mut state = self.records.lock().await;
        let key = (name.to_string(), namespace.to_string());
        // A scale is a replica count only: the definition recorded stays
        // the API's when the API made it, and the stack file's otherwise.
        let record = match state.functions.get(&key) {
            Some(r) => Record { replicas, ..r.clone() },
            None => self.api_record(&key, None, replicas),
        };
        self.record(&mut state, |s| s.functions.insert(key, record))?;
        self.scale_function(name, namespace, replicas).await
    }

    /// What the API leaves of a function, with the stack file's definition
    /// of it as this start knows it.
    fn api_record(&self, key: &Key, deployment: Option<FunctionDeployment>, replicas: u64) -> Record {
        let stack = self.stack.read().expect("stack lock").get(key).cloned();
        Record { name: key.0.clone(), namespace: key.1.clone(), deployment, stack, replicas }
    }

    async fn scale_function(&self, name: &str, namespace: &str, replicas: u64) -> Result<(), ProviderError> {
        let f = self.find(name, namespace).ok_or_else(|| ProviderError::NotFound(format!("{name}.{namespace}")))?;
        f.scale(replicas.min(self.max_replicas(&f.deployment)?), &self.starter).await;
        tracing::info!(function = %f.qualified(), replicas, "scaled");
        Ok(())
    }

    /// Shutdown has begun: replicas that exit from now on stay down, and
    /// none starts. Called as soon as the stop is asked for, since a
    /// replica restarted during the drain would outlive the platform.
    pub fn close(&self) {
        self.starter.closing.store(true, Ordering::Release);
    }

    pub async fn shutdown(&self) {
        self.close();
        let all: Vec<_> = std::mem::take(&mut *self.functions.write().expect("functions lock")).into_values().collect();
        futures_util::future::join_all(all.iter().map(|f| f.scale(0, &self.starter))).await;
    }
}

/// What a function's replicas start with.
struct Starter {
    settings: Arc<ReplicaSettings>,
    logs: Arc<LogStore>,
    /// Set once shutdown begins: from then on no replica starts or restarts.
    closing: Arc<AtomicBool>,
}

/// How long `d` may idle before it scales to zero: `com.openfaas.scale.zero:
/// true`, for `com.openfaas.scale.zero-duration` (15 minutes by default).
fn idle_limit(d: &FunctionDeployment) -> Result<Option<Duration>, ProviderError> {
    let invalid = |e: openfaas::InvalidSetting| ProviderError::Invalid(format!("labels: {e}"));
    match d.labels.get(SCALE_ZERO).map(|v| v.trim()) {
        None | Some("false") => Ok(None),
        Some("true") => match d.labels.get(SCALE_ZERO_DURATION) {
            None => Ok(Some(DEFAULT_ZERO_DURATION)),
            Some(v) => openfaas::parse_duration(SCALE_ZERO_DURATION, v).map(Some).map_err(invalid),
        },
        Some(v) => Err(ProviderError::Invalid(format!("labels.{SCALE_ZERO} {v:?}: expected true or false"))),
    }
}

fn initial_replicas(d: &FunctionDeployment) -> u64 {
    d.labels.get(SCALE_MIN).and_then(|v| v.parse().ok()).unwrap_or(1)
}

impl Function {
    fn new(
        deployment: FunctionDeployment,
        namespace: String,
        secrets: Option<PathBuf>,
        policy: Option<Policy>,
    ) -> Self {
        Self {
            scaler: policy.map(|p| std::sync::Mutex::new(Scaler::new(p))),
            load: Arc::new(Load::new()),
            retired: AtomicBool::new(false),
            // Checked when the function was deployed.
            idle_limit: idle_limit(&deployment).unwrap_or_default(),
            deployment,
            namespace,
            secrets,
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            replicas: RwLock::new(vec![]),
            next: AtomicUsize::new(0),
        }
    }

    fn qualified(&self) -> String {
        format!("{}.{}", self.deployment.service, self.namespace)
    }

    fn status(&self) -> FunctionStatus {
        let replicas = self.replicas.read().expect("replicas lock");
        let d = &self.deployment;
        FunctionStatus {
            name: d.service.clone(),
            image: d.image.clone(),
            namespace: Some(self.namespace.clone()),
            env_process: d.env_process.clone(),
            env_vars: d.env_vars.clone(),
            labels: d.labels.clone(),
            annotations: d.annotations.clone(),
            invocation_count: 0,
            replicas: replicas.len() as u64,
            available_replicas: replicas.iter().filter(|r| r.endpoint.ready.load(Ordering::Acquire)).count() as u64,
            created_at: self.created_at.clone(),
        }
    }

    async fn scale(&self, target: u64, starter: &Starter) {
        let surplus = self.resize(target, starter);
        futures_util::future::join_all(surplus.into_iter().map(Replica::stop)).await;
    }

    /// Whether none of its replicas may start: the platform is stopping,
    /// or the function was deleted or replaced.
    fn ended(&self, starter: &Starter) -> bool {
        starter.closing.load(Ordering::Acquire) || self.retired.load(Ordering::Acquire)
    }

    /// Stops its replicas for good: it was deleted or replaced.
    async fn retire(&self, starter: &Starter) {
        self.retired.store(true, Ordering::Release);
        self.scale(0, starter).await;
    }

    /// Starts replicas up to `target`, or takes those past it out of
    /// routing and gives them back to be stopped.
    fn resize(&self, target: u64, starter: &Starter) -> Vec<Replica> {
        let mut replicas = self.replicas.write().expect("replicas lock");
        while (replicas.len() as u64) < target && !self.ended(starter) {
            match self.start_replica(starter) {
                Ok(r) => replicas.push(r),
                Err(e) => {
                    tracing::error!(function = %self.qualified(), error = %e, "cannot start a replica");
                    break;
                }
            }
        }
        let keep = (target as usize).min(replicas.len());
        replicas.drain(keep..).collect()
    }

    async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let all_ready =
                self.replicas.read().expect("replicas lock").iter().all(|r| r.endpoint.ready.load(Ordering::Acquire));
            if all_ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start_replica(&self, starter: &Starter) -> std::io::Result<Replica> {
        let Starter { settings, logs, closing } = starter;
        let d = &self.deployment;
        // The port the gateway reaches the replica on: the watchdog's own,
        // or the one a container's 8080 is published on.
        let port = free_port()?;
        let env = match &settings.runtime {
            Runtime::Process { sandbox, .. } => {
                process::environment(d, port, self.secrets.as_deref(), sandbox.is_some(), &settings.watchdog_env)?
            }
            Runtime::Container(_) => container::environment(d),
        };
        let endpoint = Arc::new(Endpoint::new(format!("http://127.0.0.1:{port}")));
        let (stop, stopped) = oneshot::channel();
        let supervisor = tokio::spawn(supervise(Supervised {
            settings: settings.clone(),
            logs: logs.clone(),
            closing: closing.clone(),
            deployment: d.clone(),
            namespace: self.namespace.clone(),
            secrets: self.secrets.clone(),
            instance: format!("{}-{port}", d.service),
            env,
            port,
            endpoint: endpoint.clone(),
            stopped,
        }));
        Ok(Replica { endpoint, stop, supervisor })
    }
}

/// Ports this process's own listeners are configured with (the hub's, the
/// CloudEvents receiver's), which may not be bound yet when replicas start:
/// a replica is never given one, or the two would fight over it.
static RESERVED: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();

/// Keeps `ports` from the replicas; set once, before any replica starts.
pub fn reserve_ports(ports: Vec<u16>) {
    let _ = RESERVED.set(ports);
}

/// A port nothing listens on now, and not a reserved one.
pub(super) fn free_port() -> std::io::Result<u16> {
    let reserved = RESERVED.get().map_or(&[][..], Vec::as_slice);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !reserved.contains(&port) {
            return Ok(port);
        }
    }
}

/// One replica, as its runtime runs it.
pub(super) struct Supervised {
    pub settings: Arc<ReplicaSettings>,
    pub logs: Arc<LogStore>,
    /// Set once the platform stops: an exited replica is not restarted.
    pub closing: Arc<AtomicBool>,
    pub deployment: FunctionDeployment,
    pub namespace: String,
    /// The function's folder of copies of its secrets, when it names any.
    pub secrets: Option<PathBuf>,
    pub instance: String,
    pub env: BTreeMap<String, String>,
    pub port: u16,
    pub endpoint: Arc<Endpoint>,
    /// Fires when the replica is to stop.
    pub stopped: oneshot::Receiver<()>,
}

/// Keeps one replica running until told to stop: its runtime runs it once,
/// to its exit (`Some(why)`) or until told to stop (`None`).
async fn supervise(mut s: Supervised) {
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut reported = Instant::now();
    loop {
        let started = Instant::now();
        let settings = s.settings.clone();
        // Ready once the replica's port takes connections, whichever runs it.
        let readiness = tokio::spawn(mark_ready(s.endpoint.clone(), s.port));
        let exited = match &settings.runtime {
            Runtime::Process { watchdog, sandbox } => process::run(&mut s, watchdog, sandbox.as_deref()).await,
            Runtime::Container(engine) => engine.run(&mut s).await,
        };
        readiness.abort();
        s.endpoint.ready.store(false, Ordering::Release);
        let Some(status) = exited else { return };
        let (function, namespace, instance) = (&s.deployment.service, &s.namespace, &s.instance);
        if s.closing.load(Ordering::Acquire) {
            tracing::info!(%function, %namespace, %instance, %status, "replica exited while stopping; not restarted");
            return;
        }
        let in_a_row = s.endpoint.exited(started.elapsed(), &status);
        // A replica that cannot start (a missing module) would say so every
        // few seconds for ever: the first exits each, then one a minute.
        if in_a_row <= CRASH_LOOP || reported.elapsed() >= CRASH_REPORT_EVERY {
            reported = Instant::now();
            tracing::warn!(%function, %namespace, %instance, %status, in_a_row, ?backoff, "replica exited; restarting");
            s.log(format!(
                "{SUPERVISOR_MARK} ({status}), {in_a_row} in a row; restarting in {}",
                humantime::format_duration(backoff)
            ));
        }
        if started.elapsed() > STABLE_RUN {
            backoff = RESTART_BACKOFF_MIN;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = &mut s.stopped => return,
        }
        // The platform may have begun to stop during the wait.
        if s.closing.load(Ordering::Acquire) {
            return;
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

impl Supervised {
    pub fn template(&self) -> LogMessage {
        LogMessage {
            name: self.deployment.service.clone(),
            namespace: self.namespace.clone(),
            instance: self.instance.clone(),
            timestamp: String::new(),
            text: String::new(),
        }
    }

    pub fn log(&self, text: String) {
        self.logs.push(LogMessage { text, timestamp: now_rfc3339(), ..self.template() });
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The longest log line kept; the rest of a longer one is dropped, so a
/// function writing without newlines cannot grow one line without end.
const MAX_LOG_LINE: usize = 16 * 1024;

pub(super) async fn forward_lines(out: impl AsyncRead + Unpin, logs: Arc<LogStore>, template: LogMessage) {
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    let push = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line).into_owned();
        logs.push(LogMessage { text, timestamp: now_rfc3339(), ..template.clone() });
        line.clear();
    };
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let end = buf.iter().position(|b| *b == b'\n');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        line.extend_from_slice(&chunk[..chunk.len().min(MAX_LOG_LINE.saturating_sub(line.len()))]);
        let used = end.map_or(buf.len(), |i| i + 1);
        reader.consume(used);
        if end.is_some() {
            push(&mut line);
        }
    }
    if !line.is_empty() {
        push(&mut line);
    }
}

async fn mark_ready(endpoint: Arc<Endpoint>, port: u16) {
    while !healthy(port).await {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    endpoint.ready.store(true, Ordering::Release);
}

/// Whether a watchdog on `port` says it is healthy (`GET /_/health`, 200).
/// An open port alone is not enough: the port was free when it was handed
/// to the replica, and another process may have taken it since, whose
/// answers the gateway would pass off as the function's.
async fn healthy(port: u16) -> bool {
    let links = switchboard_http::Links::<http_body_util::Empty<bytes::Bytes>>::default();
    let probe = http::Request::get("/_/health").header(http::header::HOST, "127.0.0.1").body(Default::default());
    let Ok(probe) = probe else { return false };
    let answer = tokio::time::timeout(Duration::from_secs(1), links.send(&format!("127.0.0.1:{port}"), probe)).await;
    matches!(answer, Ok(Ok(res)) if res.status() == http::StatusCode::OK)
}
