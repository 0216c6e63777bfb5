//! `switchboard`: one binary for the hub and the compact platform.

mod cli;
mod config;
mod hub;
mod platform;
#[cfg(feature = "samples")]
mod thumbnail;

use anyhow::Result;

// glibc's allocator took a quarter of the hub's time under load (perf:
// malloc_consolidate, unlink_chunk); mimalloc is measured in docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Event-connector hub for serverless functions, with a compact OpenFaaS-compatible platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform on this machine: gateway, process provider, async queue and worker
    Up(PlatformArgs),
    /// Run the OpenFaaS-compatible gateway with its provider (and the embedded queue unless queue.url is set)
    Gateway(PlatformArgs),
    /// Run the watchdog in front of one function; configured by environment variables, as of-watchdog
    #[command(after_help = switchboard_watchdog::ENV_HELP)]
    Watchdog(WatchdogArgs),
    /// Run the async queue worker: a durable store that gateways publish to (queue.url), and the worker that invokes
    QueueWorker(QueueWorkerArgs),
    /// Run one event source beside any OpenFaaS-compatible gateway (a sidecar)
    Connect(ConnectArgs),
    /// List the gateway's functions: replicas, invocations, image
    List(cli::GatewayArgs),
    /// Describe one function: status, replicas, process, labels, annotations
    Describe {
        name: String,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// Invoke a function with stdin as the request body; its answer goes to stdout
    Invoke {
        name: String,
        /// Through the async queue: 202 and a call id
        #[arg(long = "async")]
        asynchronous: bool,
        /// A request header, NAME=VALUE (repeatable)
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// Scale a function to a number of replicas
    Scale {
        name: String,
        #[arg(long)]
        replicas: u64,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// Deploy the functions of an OpenFaaS stack.yml (update in place, or create)
    Deploy {
        /// The stack file
        #[arg(long = "yaml", short = 'f', default_value = "stack.yml")]
        stack: PathBuf,
        /// Only this function of the stack
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// Remove a function
    Remove {
        name: String,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// A function's logs: the latest lines, or as they come with --follow
    Logs {
        name: String,
        /// The last lines only
        #[arg(long)]
        tail: Option<u64>,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// Check credentials against the gateway (or --hub) and save them where faas-cli keeps its logins
    Login {
        #[arg(long, short, default_value = "admin")]
        username: String,
        /// Read the password from stdin (the default)
        #[arg(long = "password-stdin")]
        _stdin: bool,
        /// The password itself (visible in the shell's history: prefer stdin)
        #[arg(long, short)]
        password: Option<String>,
        /// Log in to this hub rather than the gateway
        #[arg(long)]
        hub: Option<String>,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// Forget the saved login for the gateway (or --hub)
    Logout {
        #[arg(long)]
        hub: Option<String>,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// The gateway's secrets: list (names only), create, update, remove
    Secret {
        #[command(subcommand)]
        verb: cli::Secrets,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// The gateway's function namespaces: list, create, remove
    Namespace {
        #[command(subcommand)]
        verb: cli::Namespaces,
        #[command(flatten)]
        gateway: cli::GatewayArgs,
    },
    /// The hub's topics: who subscribes to each, and which sources serve it, connected or not
    Topics(cli::HubArgs),
    /// Send a test event through a source's broker: the quickest way to see a trigger work
    Publish {
        #[command(flatten)]
        message: cli::PublishArgs,
        #[command(flatten)]
        hub: cli::HubArgs,
    },
    /// Browse, replay and purge the hub's dead letters
    DeadLetters {
        #[command(flatten)]
        hub: cli::HubArgs,
        #[command(subcommand)]
        verb: cli::Letters,
    },
    /// Pause a function's events: they wait where their brokers keep them until it is resumed
    Pause {
        /// NAME or NAME.NAMESPACE
        function: String,
        #[command(flatten)]
        hub: cli::HubArgs,
    },
    /// Resume a paused function: what waited is delivered
    Resume {
        /// NAME or NAME.NAMESPACE
        function: String,
        #[command(flatten)]
        hub: cli::HubArgs,
    },
    /// Run one of the sample functions this build carries, as config/stack.yml does
    #[cfg(feature = "samples")]
    Sample {
        #[command(subcommand)]
        function: Sample,
    },
}

#[cfg(feature = "samples")]
#[derive(Subcommand)]
enum Sample {
    /// Thumbnails the images that S3 event notifications name (an HTTP function on $PORT)
    #[command(long_about = THUMBNAIL_HELP)]
    Thumbnail,
}

#[cfg(feature = "samples")]
const THUMBNAIL_HELP: &str = "Thumbnails the images that S3 event notifications name: an HTTP function on 127.0.0.1:$PORT, \
    run behind a watchdog in http mode. Environment: STORE_DIR (objects: a folder per bucket), THUMBNAIL_BUCKET \
    (thumbnails), THUMBNAIL_SIZE (128: the box a thumbnail fits), MAX_PIXELS (40000000: larger images are refused).";

#[derive(clap::Args)]
struct ConnectArgs {
    /// The source to run
    source: config::SourceKind,
    /// The gateway to discover functions from and invoke through, overriding hub.gateway
    #[arg(long, env = "gateway_url")]
    gateway: Option<String>,
    /// YAML config file (the hub: section and the source's own)
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PlatformArgs {
    /// YAML config file; built-in defaults when absent
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Gateway port, overriding gateway.port
    #[arg(long)]
    pub port: Option<u16>,
    /// Serve /system/* without credentials: anyone who can reach the gateway
    /// can then deploy and run any command on this machine
    #[arg(long)]
    pub no_auth: bool,
}

#[derive(clap::Args)]
struct WatchdogArgs {
    /// Stop when the process with this pid (the supervisor) dies, even by SIGKILL
    #[arg(long, hide = true)]
    parent: Option<i32>,
}

#[derive(clap::Args)]
struct QueueWorkerArgs {
    /// YAML config file (the queue: section is used)
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address for gateways to publish to, overriding queue.listen
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Gateway to invoke functions through
    #[arg(long, env = "gateway_url", default_value = "http://127.0.0.1:8080")]
    gateway: String,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    connector_core::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => platform::up(args, true).await,
            Command::Gateway(args) => platform::up(args, false).await,
            Command::Watchdog(args) => {
                switchboard_watchdog::run_from_env(args.parent).await.map_err(|e| anyhow::anyhow!(e))
            }
            Command::QueueWorker(args) => {
                platform::queue_worker(args.config.as_deref(), args.listen, &args.gateway).await
            }
            Command::Connect(args) => {
                hub::connect(config::Config::load(args.config.as_deref())?, args.source, args.gateway).await
            }
            #[cfg(feature = "samples")]
            Command::Sample { function: Sample::Thumbnail } => thumbnail::run().await,
            Command::List(gateway) => cli::report(cli::list(gateway).await),
            Command::Describe { name, gateway } => cli::report(cli::describe(gateway, &name).await),
            Command::Invoke { name, asynchronous, headers, gateway } => {
                cli::report(cli::invoke(gateway, &name, asynchronous, &headers).await)
            }
            Command::Scale { name, replicas, gateway } => cli::report(cli::scale(gateway, &name, replicas).await),
            Command::Deploy { stack, filter, gateway } => {
                cli::report(cli::deploy(gateway, &stack, filter.as_deref()).await)
            }
            Command::Remove { name, gateway } => cli::report(cli::remove(gateway, &name).await),
            Command::Logs { name, tail, follow, gateway } => cli::report(cli::logs(gateway, &name, tail, follow).await),
            Command::Login { username, _stdin, password, hub, gateway } => {
                cli::report(cli::login(gateway, hub, &username, password).await)
            }
            Command::Logout { hub, gateway } => cli::report(cli::logout(gateway, hub).await),
            Command::Secret { verb, gateway } => cli::report(cli::secret(gateway, verb).await),
            Command::Namespace { verb, gateway } => cli::report(cli::namespace(gateway, verb).await),
            Command::Topics(hub) => cli::report(cli::topics(hub).await),
            Command::Publish { message, hub } => cli::report(cli::publish(hub, message).await),
            Command::DeadLetters { hub, verb } => cli::report(cli::dead_letters(hub, verb).await),
            Command::Pause { function, hub } => cli::report(cli::pause(hub, &function, true).await),
            Command::Resume { function, hub } => cli::report(cli::pause(hub, &function, false).await),
        }
    })
}

#[cfg(test)]
mod tests {
    /// clap checks a command line's definition only when it is parsed:
    /// every subcommand's, here, rather than at a user's first `--help`.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
