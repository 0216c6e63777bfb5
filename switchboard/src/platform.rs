//! Starting the compact platform: gateway, provider, queue and worker.

use crate::PlatformArgs;
use crate::config::{Config, QueueBackend, check_stack};
use anyhow::{Context, Result};
use openfaas::Credentials;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchboard_gateway::config::GENERATED_SECRETS;
use switchboard_gateway::{
    Containers, Gateway, GatewayConfig, Isolation, Provider, ProviderConfig, ReplicaProvider, ReplicaSettings, Runtime,
    Sandbox, StaticProvider,
};
use switchboard_queue::{Backlog, EmbeddedQueue, Queue, RemoteQueue, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

fn local_url(config: &GatewayConfig, port: u16) -> String {
    let host = if config.bind.is_unspecified() { "127.0.0.1".to_string() } else { config.bind.to_string() };
    format!("http://{host}:{port}")
}

async fn provider(config: &Config) -> Result<Provider> {
    let (runtime, stack, stop_timeout, log_lines, max_replicas, state, secrets) = match &config.provider {
        ProviderConfig::Static { functions } => {
            let functions = functions.clone();
            return Ok(Provider::Static(StaticProvider::new(functions, &config.gateway.function_namespace)?));
        }
        ProviderConfig::Process {
            stack,
            stop_timeout,
            log_lines,
            max_replicas,
            state,
            secrets,
            watchdog,
            isolation,
        } => {
            let watchdog = match watchdog {
                Some(small) if small.is_file() => vec![small.display().to_string()],
                Some(small) => anyhow::bail!("provider.watchdog {} is not a file", small.display()),
                None => default_watchdog().await?,
            };
            let sandbox = match isolation {
                Isolation::Sandbox => Some(Arc::new(
                    Sandbox::new(state_paths(config, state.as_deref(), secrets)).map_err(anyhow::Error::msg)?,
                )),
                Isolation::None => {
                    tracing::warn!(
                        "provider.isolation: none: process functions run as this user with its view of the disk; \
                         any of them can read the gateway's credentials, the queue and every function's secrets"
                    );
                    None
                }
            };
            (Runtime::Process { watchdog, sandbox }, stack, stop_timeout, log_lines, max_replicas, state, secrets)
        }
        ProviderConfig::Container {
            stack,
            stop_timeout,
            log_lines,
            max_replicas,
            state,
            secrets,
            docker_host,
            prefix,
        } => {
            let engine = Containers::start(docker_host.as_deref(), prefix.clone()).await.map_err(anyhow::Error::msg)?;
            (Runtime::Container(engine), stack, stop_timeout, log_lines, max_replicas, state, secrets)
        }
    };
    let provider = ReplicaProvider::new(ReplicaSettings {
        runtime,
        default_namespace: config.gateway.function_namespace.clone(),
        stop_timeout: *stop_timeout,
        log_lines: *log_lines,
        max_replicas: *max_replicas,
        state: state.clone(),
        secrets: secrets.clone(),
        // With room for the fields the gateway adds as it forwards a request
        // (X-Call-Id, X-Start-Time, X-Forwarded-For…).
        watchdog_env: [
            ("max_header_size", (config.gateway.max_header_size + 4096).to_string()),
            ("max_headers", (config.gateway.max_headers + 16).to_string()),
            ("PATH", replica_path()?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    });
    if let Some(stack) = stack {
        for d in switchboard_gateway::stack::load(stack)? {
            let name = d.service.clone();
            provider
                .deploy_from_stack(d)
                .await
                .with_context(|| format!("cannot deploy function {name} from {}", stack.display()))?;
        }
    }
    let restored = provider.restore().await.context("cannot restore the functions deployed through the API")?;
    if restored > 0 {
        tracing::info!(count = restored, "restored functions deployed through the API");
    }
    Ok(Provider::Replicas(Box::new(provider)))
}

/// Where the platform keeps state, hidden from sandboxed functions: the
/// credentials' and secrets' folders, and each state file's folder; a
/// file in the working folder (or above it), where functions' own files
/// are too, alone.
fn state_paths(config: &Config, state: Option<&Path>, secrets: &Path) -> Vec<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let store = config.hub.dead_letter_store();
    let files =
        [state, Some(config.queue.path.as_path()), Some(store.as_path()), config.hub.dead_letter_file.as_deref()];
    let folders = [config.gateway.secret_mount_path.as_path(), secrets].into_iter().map(absolute);
    let files = files.into_iter().flatten().map(absolute).map(|f| match f.parent() {
        Some(folder) if !cwd.starts_with(folder) => folder.to_path_buf(),
        _ => f,
    });
    let mut paths: Vec<PathBuf> = folders.chain(files).filter(|p| !cwd.starts_with(p)).collect();
    paths.sort();
    paths.dedup();
    // A hidden folder hides what is in it.
    let nested = |p: &PathBuf| paths.iter().any(|other| other != p && p.starts_with(other));
    paths.iter().filter(|p| !nested(p)).cloned().collect()
}

/// The replicas' PATH: this executable's folder first, so that a stack's
/// `switchboard sample …` runs this very build (a `cargo run` installs
/// nothing), then the gateway's own PATH.
fn replica_path() -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the switchboard executable")?;
    let folders = exe.parent().map(Path::to_path_buf).into_iter();
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(folders.chain(std::env::split_paths(&inherited)))
        .context("the switchboard executable's folder cannot be put on PATH (it holds a ':')")?;
    Ok(path.to_string_lossy().into_owned())
}

/// The small `switchboard-watchdog` beside this executable when it runs
/// the same watchdog code as this one (a build of both leaves them so; a
/// `cargo run` rebuilds only this one and may leave an older one beside
/// it), else this executable's `watchdog` subcommand.
async fn default_watchdog() -> Result<Vec<String>> {
    let exe = std::env::current_exe().context("cannot find the switchboard executable")?;
    let small = exe.with_file_name("switchboard-watchdog");
    if small.is_file() {
        let asked = tokio::process::Command::new(&small).arg("--source-id").kill_on_drop(true).output();
        match tokio::time::timeout(std::time::Duration::from_secs(5), asked).await {
            Ok(Ok(out))
                if out.status.success() && out.stdout.trim_ascii() == switchboard_watchdog::SOURCE_ID.as_bytes() =>
            {
                return Ok(vec![small.display().to_string()]);
            }
            _ => tracing::info!(
                watchdog = %small.display(),
                "the switchboard-watchdog beside this binary is from another build; replicas run `switchboard watchdog`"
            ),
        }
    }
    Ok(vec![exe.display().to_string(), "watchdog".into()])
}

/// The API's credentials: read from `secret_mount_path`, or generated there
/// at first start when it is the data directory's; none when the operator
/// turned auth off, which is said loudly.
fn credentials(config: &GatewayConfig) -> Result<Option<Credentials>> {
    if !config.basic_auth {
        tracing::warn!(
            "basic auth is OFF: anyone who can reach the gateway can deploy functions, and so run any command \
             on this machine as this user; turn it off only on a machine no one else can reach"
        );
        return Ok(None);
    }
    let dir = &config.secret_mount_path;
    if dir != Path::new(GENERATED_SECRETS) {
        return Ok(Some(Credentials::from_secret_mount(dir)?));
    }
    let (credentials, generated) = Credentials::load_or_generate(dir)?;
    if generated {
        let file = dir.join(openfaas::auth::PASSWORD_FILE);
        println!("Generated credentials for the gateway's API (/system/*), stored readable by this user only:");
        println!("  user      {}", credentials.user);
        println!("  password  {}", credentials.password);
        println!("Read the password again with: cat {}", file.display());
    }
    Ok(Some(credentials))
}

/// `switchboard up` and `switchboard gateway`.
pub async fn up(args: PlatformArgs, with_hub: bool) -> Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(port) = args.port {
        config.gateway.port = port;
    }
    if args.no_auth {
        config.gateway.basic_auth = false;
    }
    check_stack(&config)?;
    let credentials = credentials(&config.gateway)?;
    let addr = SocketAddr::new(config.gateway.bind, config.gateway.port);
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (gateway.port)"))?;
    let url = local_url(&config.gateway, listener.local_addr()?.port());
    let stop = CancellationToken::new();

    let (queue, backlog) = queue(&config)?;
    // The hub's listeners bind after the replicas start: none may take their ports.
    #[cfg_attr(not(feature = "cloudevents"), allow(unused_mut))]
    let mut own = vec![config.hub.listen.port()];
    #[cfg(feature = "cloudevents")]
    own.push(config.cloudevents.listen.port());
    switchboard_gateway::provider::reserve_ports(own);
    let provider = provider(&config).await?;
    if with_hub {
        // The portal shows this hub's events (/ui/hub/), on loopback when it listens everywhere.
        let mut hub = config.hub.listen;
        if hub.ip().is_unspecified() {
            hub.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        config.gateway.hub = Some(hub);
    }
    let gateway = Arc::new(Gateway::new(config.gateway.clone(), provider, queue, credentials.clone()));
    let worker = backlog.map(|backlog| {
        let worker = Worker::new(backlog, worker_config(&config, &url), gateway.metrics.registry());
        tokio::spawn(worker.run(stop.clone().cancelled_owned()))
    });

    let token = stop.clone();
    let server = tokio::spawn(switchboard_gateway::serve(gateway.clone(), listener, token.cancelled_owned()));
    let scaler = gateway.clone();
    let token = stop.clone();
    tokio::spawn(async move { scaler.autoscale(token.cancelled_owned()).await });
    // The hub discovers and invokes through this gateway, with its
    // credentials, calling it in-process rather than over loopback HTTP.
    let mut banner_sources: Vec<String> = vec![];
    let hub = if with_hub {
        config.hub.gateway = url.clone();
        config.hub.basic_auth = config.gateway.basic_auth;
        config.hub.secret_mount_path = config.gateway.secret_mount_path.clone();
        let sources = crate::config::enabled(&config)?;
        banner_sources = sources.iter().map(|s| format!("{} {}", s.name(), s.describe())).collect();
        let local = switchboard_gateway::InProcess::new(gateway.clone());
        let call = connector_core::gateway::in_process(move |req| {
            let local = local.clone();
            async move { local.call(req).await }
        });
        Some(crate::hub::start(&config, sources, Some(call), stop.clone())?)
    } else {
        None
    };
    print_banner(&config, &url, &gateway, credentials.as_ref(), hub.is_some().then_some(&banner_sources));
    let failed = match hub {
        Some(hub) => tokio::select! {
            () = switchboard_http::shutdown_signal() => None,
            done = hub => Some(done),
        },
        None => {
            switchboard_http::shutdown_signal().await;
            None
        }
    };
    // Closed first: a replica that exits from here on stays down.
    gateway.provider.close();
    tracing::info!("stopping");
    stop.cancel();
    if let Some(w) = worker {
        let _ = w.await;
    }
    let _ = server.await;
    gateway.provider.shutdown().await;
    tracing::info!("stopped");
    match failed {
        Some(Ok(Err(e))) => Err(e.into()),
        Some(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

type QueueParts = (Option<Arc<dyn Queue>>, Option<Arc<dyn Backlog>>);

/// Where `/async-function` publishes, and what this process's worker takes
/// from, if it runs one.
fn queue(config: &Config) -> Result<QueueParts> {
    let q = &config.queue;
    Ok(match (q.enabled, &q.url, q.backend) {
        (false, ..) => (None, None),
        (true, Some(remote), QueueBackend::Embedded) => (Some(Arc::new(RemoteQueue::new(remote))), None),
        (true, None, QueueBackend::Embedded) => {
            anyhow::ensure!(
                q.consume,
                "queue.consume: false needs queue.backend: jetstream; nothing else would run the embedded queue's calls"
            );
            let embedded = EmbeddedQueue::open(&q.path)?;
            (Some(Arc::new(embedded.clone())), Some(Arc::new(embedded)))
        }
        (true, Some(_), QueueBackend::Jetstream) => {
            anyhow::bail!(
                "queue.url is for the embedded queue's separate worker; with queue.backend: jetstream gateways publish to JetStream themselves"
            )
        }
        #[cfg(feature = "nats")]
        (true, None, QueueBackend::Jetstream) => {
            let shared = switchboard_nats::JetStreamQueue::new(&config.nats, &q.jetstream, q.max_inflight)?;
            (Some(Arc::new(shared.clone())), q.consume.then(|| Arc::new(shared) as Arc<dyn Backlog>))
        }
        #[cfg(not(feature = "nats"))]
        (true, None, QueueBackend::Jetstream) => anyhow::bail!("queue.backend: jetstream needs the nats cargo feature"),
    })
}

fn worker_config(config: &Config, gateway_url: &str) -> WorkerConfig {
    WorkerConfig {
        gateway_url: gateway_url.to_string(),
        max_inflight: config.queue.max_inflight,
        retry: config.queue.retry.clone(),
        invoke_timeout: config.queue.invoke_timeout,
    }
}

/// `sources`: one line per source the hub runs, when it runs.
fn print_banner(
    config: &Config,
    url: &str,
    gateway: &Gateway,
    credentials: Option<&Credentials>,
    sources: Option<&Vec<String>>,
) {
    let ns = &config.gateway.function_namespace;
    let functions: Vec<String> = gateway
        .provider
        .namespaces(ns)
        .iter()
        .flat_map(|ns| gateway.provider.list(ns).into_iter().map(move |f| format!("{}.{ns}", f.name)))
        .collect();
    let q = &config.queue;
    let worker =
        if q.consume { format!("a worker here runs {} at once", q.max_inflight) } else { "no worker here".into() };
    let queue = match (q.enabled, &q.url, q.backend) {
        (false, ..) => "disabled".to_string(),
        (true, Some(u), _) => format!("remote queue-worker at {u}"),
        (true, None, QueueBackend::Embedded) => format!("embedded at {} ({worker})", q.path.display()),
        #[cfg(feature = "nats")]
        (true, None, QueueBackend::Jetstream) => {
            format!("JetStream stream {} at {} ({worker})", q.jetstream.stream, config.nats.url)
        }
        #[cfg(not(feature = "nats"))]
        (true, None, QueueBackend::Jetstream) => "JetStream".into(),
    };
    println!("switchboard {} is up", env!("CARGO_PKG_VERSION"));
    match credentials {
        Some(c) => {
            println!("  gateway    {url}  (auth: basic, user {})", c.user);
            println!(
                "  login      faas-cli login -g {url} -u {} --password-stdin < {}",
                c.user,
                config.gateway.secret_mount_path.join(openfaas::auth::PASSWORD_FILE).display()
            );
        }
        None => println!("  gateway    {url}  (auth: OFF, anyone who can reach it can run commands here)"),
    }
    println!("  invoke     {url}/function/NAME   async: {url}/async-function/NAME");
    println!("  metrics    {url}/metrics");
    println!("  queue      {queue}");
    println!(
        "  provider   {}  functions: {}",
        gateway.provider.name(),
        if functions.is_empty() { "none".into() } else { functions.join(", ") }
    );
    if let Some(sources) = sources {
        println!("  hub        http://{}/metrics", config.hub.listen);
        for line in sources {
            println!("    source   {line}");
        }
        if sources.is_empty() {
            println!("    source   none enabled");
        }
    }
    println!("Press Ctrl-C to stop.");
}

/// `switchboard queue-worker`: invokes queued calls through `gateway`. With
/// the embedded queue it owns the durable store and takes requests from
/// gateways on `queue.listen`; with JetStream it pulls from the stream, as
/// many of it as wanted, and `queue.listen` serves `/healthz`. Both serve
/// the worker's `/metrics` there.
pub async fn queue_worker(config_path: Option<&Path>, listen: Option<SocketAddr>, gateway: &str) -> Result<()> {
    let mut config = Config::load(config_path)?;
    config.queue.url = None;
    config.queue.consume = true;
    let listen = listen.unwrap_or(config.queue.listen);
    let (queue, backlog) = queue(&config)?;
    let (Some(queue), Some(backlog)) = (queue, backlog) else {
        anyhow::bail!("queue.enabled is false: there is no queue to work on");
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (queue.listen)"))?;
    let stop = CancellationToken::new();
    let registry = switchboard_queue::Registry::new();
    let worker = Worker::new(backlog, worker_config(&config, gateway), &registry);
    let worker = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    let routes = match config.queue.backend {
        QueueBackend::Embedded => switchboard_queue::intake_router(queue),
        QueueBackend::Jetstream => switchboard_queue::health_router(queue),
    };
    let routes = routes.merge(switchboard_queue::metrics_router(registry));
    println!(
        "queue-worker listening on http://{} ({}), invoking through {gateway}",
        listener.local_addr()?,
        match config.queue.backend {
            QueueBackend::Embedded => format!("store {}", config.queue.path.display()),
            QueueBackend::Jetstream => "JetStream; /healthz and /metrics".into(),
        }
    );
    let intake = switchboard_http::Routes(routes);
    let limits = switchboard_http::Limits { body_timeout: config.gateway.read_timeout, ..Default::default() };
    let server = tokio::spawn(switchboard_http::serve(listener, intake, limits, stop.clone().cancelled_owned()));
    switchboard_http::shutdown_signal().await;
    stop.cancel();
    let _ = worker.await;
    let _ = server.await;
    Ok(())
}
