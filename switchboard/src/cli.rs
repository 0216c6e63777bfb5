//! The verbs for people: against any OpenFaaS-compatible gateway (`list`,
//! `describe`, `invoke`, `deploy`, `scale`, `remove`, `logs`, in faas-cli's wire
//! format) and against the hub's port (`topics`, `dead-letters`, `pause`,
//! `resume`). Tables by default, `--json` for scripts; the credentials are
//! those `switchboard up` wrote (data/secrets), and every error says what
//! to do next.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct HubArgs {
    /// The hub's address (hub.listen of `up` or a `connect`)
    #[arg(long, env = "SWITCHBOARD_HUB", default_value = "http://127.0.0.1:8081", global = true)]
    hub: String,
    /// Where the credentials are: basic-auth-user and basic-auth-password, as `up` writes them
    #[arg(long, env = "secret_mount_path", default_value = "data/secrets", global = true)]
    secrets: PathBuf,
    /// Print the hub's JSON instead of a table
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// The gateway's address
    #[arg(long, short, env = "OPENFAAS_URL", default_value = "http://127.0.0.1:8080", global = true)]
    gateway: String,
    /// Where the credentials are: basic-auth-user and basic-auth-password, as `up` writes them
    #[arg(long, env = "secret_mount_path", default_value = "data/secrets", global = true)]
    secrets: PathBuf,
    /// The function namespace (the gateway's default when absent)
    #[arg(long, short, global = true)]
    namespace: Option<String>,
    /// Print the gateway's JSON instead of a table
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum Letters {
    /// List dead letters, oldest first
    List {
        #[command(flatten)]
        filter: Filter,
        /// Letters after this id (the `next` of the previous page)
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one letter in full, its event included
    Show { id: u64 },
    /// Replay letters to their functions and wait for the outcome
    Replay {
        /// Letter ids; or a filter, --all, or --from
        ids: Vec<u64>,
        #[command(flatten)]
        filter: Filter,
        /// Every letter
        #[arg(long)]
        all: bool,
        /// A broker's own dead letters, SOURCE:PLACE (kafka:TOPIC, redis:STREAM, nats:SUBJECT, sqs:QUEUE)
        #[arg(long)]
        from: Option<String>,
    },
    /// Remove letters for good
    Purge {
        ids: Vec<u64>,
        #[command(flatten)]
        filter: Filter,
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args, Default)]
pub struct Filter {
    /// NAME or NAME.NAMESPACE
    #[arg(long)]
    function: Option<String>,
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    source: Option<String>,
    /// The HTTP status of the last failure
    #[arg(long)]
    status: Option<u16>,
    /// RFC 3339 time, such as 2026-12-04T10:00:00Z
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
}

impl Filter {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let Filter { function, topic, source, status, since, until } = self;
        [
            ("function", function.clone()),
            ("topic", topic.clone()),
            ("source", source.clone()),
            ("status", status.map(|s| s.to_string())),
            ("since", since.clone()),
            ("until", until.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }

    /// The selection of a replay or purge request.
    fn selection(&self, ids: &[u64], all: bool) -> Value {
        let Filter { function, topic, source, status, since, until } = self;
        let mut body = json!({
            "function": function, "topic": topic, "source": source, "status": status, "since": since, "until": until,
            "ids": (!ids.is_empty()).then_some(ids), "all": all.then_some(true),
        });
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|_, v| !v.is_null());
        }
        body
    }
}

/// A client of one hub or gateway.
struct Api {
    /// "hub" or "gateway", for the messages.
    name: &'static str,
    url: String,
    /// The flag and variable that set `url`, for the messages.
    url_from: &'static str,
    auth: Option<String>,
    json: bool,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// The credentials for `url`: those `switchboard login` (or `faas-cli
/// login`) saved for it, else those `up` wrote in `secrets`, as an
/// `Authorization` value.
fn credentials(url: &str, secrets: &std::path::Path) -> Option<String> {
    if let Some(token) = saved_login(url) {
        return Some(format!("Basic {token}"));
    }
    let read = |f: &str| std::fs::read_to_string(secrets.join(f)).ok().map(|s| s.trim().to_string());
    read("basic-auth-user").zip(read("basic-auth-password")).map(|(user, password)| basic(&user, &password))
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", token(user, password))
}

fn token(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// faas-cli's own file of saved logins: `$OPENFAAS_CONFIG/config.yml`,
/// else `~/.openfaas/config.yml`; each login is a gateway's URL and its
/// base64 `user:password`, so either tool's login serves both.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Logins {
    #[serde(default)]
    auths: Vec<Login>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Login {
    gateway: String,
    auth: String,
    token: String,
}

fn logins_file() -> Option<PathBuf> {
    let dir = match std::env::var_os("OPENFAAS_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".openfaas"),
    };
    Some(dir.join("config.yml"))
}

fn saved_login(url: &str) -> Option<String> {
    let text = std::fs::read_to_string(logins_file()?).ok()?;
    let logins: Logins = serde_yaml_ng::from_str(&text).ok()?;
    let url = url.trim_end_matches('/');
    logins.auths.into_iter().find(|l| l.gateway.trim_end_matches('/') == url && l.auth == "basic").map(|l| l.token)
}

impl Api {
    fn hub(args: &HubArgs) -> Self {
        Self::new("hub", &args.hub, "--hub, SWITCHBOARD_HUB", &args.secrets, args.json)
    }

    fn gateway(args: &GatewayArgs) -> Self {
        Self::new("gateway", &args.gateway, "--gateway, OPENFAAS_URL", &args.secrets, args.json)
    }

    fn new(name: &'static str, url: &str, url_from: &'static str, secrets: &std::path::Path, json: bool) -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let url = url.trim_end_matches('/').to_string();
        Self { name, auth: credentials(&url, secrets), url, url_from, json, client }
    }

    /// The answer to `method path` with `headers` and `body`, or an error
    /// that says what to do; the body is read by the caller.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.url));
        if let Some(auth) = &self.auth {
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let res = self.client.request(req.body(Full::new(body))?).await.with_context(|| {
            format!(
                "cannot reach the {} at {}: is `switchboard up` running there? ({})",
                self.name, self.url, self.url_from
            )
        })?;
        match res.status().as_u16() {
            401 if self.auth.is_none() => bail!(
                "the {} at {} wants credentials and none were found: run `switchboard login`, or run this where `switchboard up` keeps data/secrets (--secrets DIR)",
                self.name,
                self.url
            ),
            401 => bail!(
                "the {} at {} refused these credentials: run `switchboard login` with this platform's",
                self.name,
                self.url
            ),
            _ => Ok(res),
        }
    }

    /// The JSON answer to `method path`, or an error that says what to do.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let json = [("Content-Type".to_string(), "application/json".to_string())];
        let headers: &[(String, String)] = if body.is_some() { &json } else { &[] };
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        Self::succeeded(self.exchange(method, path, headers, body).await?)
    }

    /// The status and JSON answer to `method path` (a text answer as
    /// `{"error": TEXT}`), whatever the status.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<(http::StatusCode, Value)> {
        let res = self.send(method, path, headers, body).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await.context("the answer was cut short")?.to_bytes();
        let answer: Value = match bytes.is_empty() {
            true if !status.is_success() => json!({"error": format!("{method} {path}")}),
            true => Value::Null,
            false => serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes).trim()})),
        };
        Ok((status, answer))
    }

    /// The answer of a 2xx, else its error.
    fn succeeded((status, answer): (http::StatusCode, Value)) -> Result<Value> {
        if !status.is_success() {
            bail!("{}: {}", status, answer["error"].as_str().map_or_else(|| answer.to_string(), str::to_string));
        }
        Ok(answer)
    }

    fn print(&self, answer: &Value, table: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(answer).unwrap_or_default());
        } else {
            print!("{}", table(answer));
        }
    }
}

/// A verb's error for a person: one line, what went wrong and why, and
/// exit status 1.
pub fn report(result: Result<()>) -> Result<()> {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// `switchboard dead-letters …`
pub async fn dead_letters(args: HubArgs, verb: Letters) -> Result<()> {
    let hub = Api::hub(&args);
    match verb {
        Letters::List { filter, after, limit } => {
            let mut query: Vec<String> = filter.pairs().iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
            query.push(format!("after={after}"));
            query.push(format!("limit={limit}"));
            let answer = hub.call("GET", &format!("/dead-letters?{}", query.join("&")), None).await?;
            hub.print(&answer, letters_table);
        }
        Letters::Show { id } => {
            let answer = hub.call("GET", &format!("/dead-letters/{id}"), None).await?;
            // A letter is a document: shown as the hub keeps it.
            println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
        }
        Letters::Replay { ids, filter, all, from } => {
            let mut body = filter.selection(&ids, all);
            body["wait"] = json!(true);
            if let Some(from) = from {
                body["from"] = json!(from);
            }
            let answer = hub.call("POST", "/dead-letters/replay", Some(body)).await?;
            hub.print(&answer, |a| {
                let more = if a["more"] == true { " (more match: replay again)" } else { "" };
                format!("replayed {}: {} delivered, {} failed again{more}\n", a["letters"], a["delivered"], a["failed"])
            });
        }
        Letters::Purge { ids, filter, all } => {
            let answer = hub.call("POST", "/dead-letters/purge", Some(filter.selection(&ids, all))).await?;
            hub.print(&answer, |a| format!("purged {} ({} being replayed, left)\n", a["purged"], a["replaying"]));
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct PublishArgs {
    /// kafka, nats, redis, mqtt or sqs (through the hub, to its broker), or cloudevents (to its receiver)
    source: String,
    /// The topic: a Kafka topic, NATS subject, Redis stream or channel, MQTT topic, SQS queue, or CloudEvent type
    topic: String,
    /// The body: this file's bytes (else stdin)
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// The message's key: a Kafka record key, an SQS FIFO message group, a Redis stream's key field
    #[arg(long)]
    key: Option<String>,
    /// A message header, NAME=VALUE (repeatable)
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// The CloudEvents receiver (cloudevents.listen), for `publish cloudevents`
    #[arg(long, env = "SWITCHBOARD_CLOUDEVENTS", default_value = "http://127.0.0.1:8082")]
    cloudevents: String,
}

/// `NAME=VALUE` pairs of `-H`.
fn header_pairs(headers: &[String]) -> Result<Vec<(String, String)>> {
    headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("--header {h}: expected NAME=VALUE"))
        })
        .collect()
}

/// `switchboard publish SOURCE TOPIC`: a test event through a broker, sent
/// by the hub with its own connection (`POST /publish/SOURCE`); or, for
/// `cloudevents`, a binary-mode CloudEvent of that type posted to the
/// receiver, which answers once it is delivered.
pub async fn publish(args: HubArgs, p: PublishArgs) -> Result<()> {
    use std::io::{IsTerminal, Read};
    let body = match &p.file {
        Some(file) => std::fs::read(file).with_context(|| format!("--file {}", file.display()))?,
        None if std::io::stdin().is_terminal() => vec![],
        None => {
            let mut b = vec![];
            std::io::stdin().read_to_end(&mut b).context("cannot read the body from stdin")?;
            b
        }
    };
    let mut headers = header_pairs(&p.headers)?;
    if p.source == "cloudevents" {
        let receiver = Api::new("CloudEvents receiver", &p.cloudevents, "--cloudevents", &args.secrets, args.json);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let id = format!("switchboard-publish-{}-{nanos}", std::process::id());
        for (k, v) in
            [("ce-specversion", "1.0"), ("ce-source", "switchboard-cli"), ("ce-type", &p.topic), ("ce-id", &id)]
        {
            headers.push((k.to_string(), v.to_string()));
        }
        let res = receiver.send("POST", "/", &headers, body.into()).await?;
        let status = res.status();
        let answer = res.into_body().collect().await.context("the answer was cut short")?.to_bytes();
        let text = String::from_utf8_lossy(&answer).trim().to_string();
        if !status.is_success() {
            bail!("the CloudEvents receiver answered {status}: {text}");
        }
        println!("{id}: {text}");
        return Ok(());
    }
    let hub = Api::hub(&args);
    let mut path = format!("/publish/{}?topic={}", encode(&p.source), encode(&p.topic));
    if let Some(key) = &p.key {
        path.push_str(&format!("&key={}", encode(key)));
    }
    let answer = Api::succeeded(hub.exchange("POST", &path, &headers, body.into()).await?)?;
    hub.print(&answer, |a| {
        format!(
            "published to {}:{} ({})\n",
            p.source,
            a["topic"].as_str().unwrap_or(&p.topic),
            a["at"].as_str().unwrap_or("-")
        )
    });
    Ok(())
}

/// `switchboard pause|resume FUNCTION`
pub async fn pause(args: HubArgs, function: &str, paused: bool) -> Result<()> {
    let hub = Api::hub(&args);
    let action = if paused { "pause" } else { "resume" };
    let answer = hub.call("POST", &format!("/functions/{}/{action}", encode(function)), None).await?;
    hub.print(&answer, |a| {
        let f = a["function"].as_str().unwrap_or(function);
        if paused { format!("{f} paused: its events wait\n") } else { format!("{f} resumed\n") }
    });
    Ok(())
}

/// `switchboard topics`: each topic, who subscribes, and which sources
/// serve it here, connected or not.
pub async fn topics(args: HubArgs) -> Result<()> {
    let hub = Api::hub(&args);
    let answer = hub.call("GET", "/topics", None).await?;
    hub.print(&answer, |a| {
        let topics = a["topics"].as_array().map(Vec::as_slice).unwrap_or_default();
        let rows: Vec<[String; 3]> = topics
            .iter()
            .map(|t| {
                let list = |key: &str, name: &str, flag: &dyn Fn(&Value) -> Option<&'static str>| {
                    let items = t[key].as_array().map(Vec::as_slice).unwrap_or_default();
                    let shown: Vec<String> = items
                        .iter()
                        .map(|i| {
                            let n = i[name].as_str().unwrap_or("?");
                            flag(i).map_or(n.to_string(), |f| format!("{n} ({f})"))
                        })
                        .collect();
                    if shown.is_empty() { "-".to_string() } else { shown.join(", ") }
                };
                let paused = |f: &Value| (f["paused"] == true).then_some("paused");
                let connected = |s: &Value| match s["connected"].as_bool() {
                    Some(true) => Some("connected"),
                    Some(false) => Some("NOT CONNECTED"),
                    None => None,
                };
                let topic = t["topic"].as_str().unwrap_or("?").to_string();
                [topic, list("functions", "function", &paused), list("sources", "source", &connected)]
            })
            .collect();
        let mut out = table(["TOPIC", "FUNCTIONS", "SOURCES"], &rows);
        if rows.is_empty() {
            out.push_str("no function subscribes to a topic\n");
        }
        out
    });
    Ok(())
}

fn letters_table(answer: &Value) -> String {
    let letters = answer["letters"].as_array().map(Vec::as_slice).unwrap_or_default();
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows: Vec<[String; 7]> = letters
        .iter()
        .map(|l| {
            let error: String = text(&l["error"]).chars().take(60).collect();
            [
                text(&l["id"]),
                text(&l["time"]),
                text(&l["source"]),
                text(&l["topic"]),
                text(&l["function"]),
                text(&l["attempts"]),
                error,
            ]
        })
        .collect();
    let mut out = table(["ID", "TIME", "SOURCE", "TOPIC", "FUNCTION", "ATTEMPTS", "ERROR"], &rows);
    match answer["next"].as_u64() {
        Some(next) => out.push_str(&format!("more: --after {next}\n")),
        None if rows.is_empty() => out.push_str("no dead letters\n"),
        None => {}
    }
    out
}

/// Columns padded to their widest cell.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A query value or path segment, percent-encoded.
fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `?namespace=NS` when one is named.
fn in_namespace(args: &GatewayArgs, sep: char) -> String {
    args.namespace.as_deref().map(|ns| format!("{sep}namespace={}", encode(ns))).unwrap_or_default()
}

/// `switchboard list`: the functions, their replicas and invocations.
pub async fn list(args: GatewayArgs) -> Result<()> {
    let api = Api::gateway(&args);
    let answer = api.call("GET", &format!("/system/functions{}", in_namespace(&args, '?')), None).await?;
    api.print(&answer, |a| {
        let functions = a.as_array().map(Vec::as_slice).unwrap_or_default();
        let mut rows: Vec<[String; 5]> = functions
            .iter()
            .map(|f| {
                let replicas = format!("{}/{}", f["availableReplicas"], f["replicas"]);
                let text = |k: &str| f[k].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
                [text("name"), text("namespace"), replicas, f["invocationCount"].to_string(), text("image")]
            })
            .collect();
        rows.sort();
        table(["NAME", "NAMESPACE", "REPLICAS", "INVOCATIONS", "IMAGE"], &rows)
    });
    Ok(())
}

/// `switchboard describe NAME`
pub async fn describe(args: GatewayArgs, name: &str) -> Result<()> {
    let api = Api::gateway(&args);
    let path = format!("/system/function/{}{}", encode(name), in_namespace(&args, '?'));
    let answer = api.exchange("GET", &path, &[], Bytes::new()).await?;
    if answer.0 == http::StatusCode::NOT_FOUND {
        bail!("no function {name} on the gateway at {} (switchboard list shows them)", api.url);
    }
    let f = Api::succeeded(answer)?;
    api.print(&f, |f| {
        let text = |k: &str| f[k].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
        let map = |k: &str| {
            let entries = f[k].as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))));
            entries.map(|e| e.collect::<Vec<_>>().join(", ")).filter(|s| !s.is_empty()).unwrap_or("-".into())
        };
        let status = if f["availableReplicas"].as_u64().unwrap_or(0) > 0 { "Ready" } else { "Not Ready" };
        let lines = [
            ("Name", text("name")),
            ("Namespace", text("namespace")),
            ("Status", status.to_string()),
            ("Replicas", format!("{} of {} available", f["availableReplicas"], f["replicas"])),
            ("Invocations", f["invocationCount"].to_string()),
            ("Image", text("image")),
            ("Process", text("envProcess")),
            ("URL", format!("{}/function/{}.{}", api.url, text("name"), text("namespace"))),
            ("Labels", map("labels")),
            ("Annotations", map("annotations")),
        ];
        lines.iter().map(|(k, v)| format!("{:<12} {v}\n", format!("{k}:"))).collect()
    });
    Ok(())
}

/// `switchboard invoke NAME`: the request body is stdin; the answer's body
/// goes to stdout as it is.
pub async fn invoke(args: GatewayArgs, name: &str, asynchronous: bool, headers: &[String]) -> Result<()> {
    use std::io::{Read, Write};
    // A function is not the gateway's admin: it never sees the credentials.
    let api = Api { auth: None, ..Api::gateway(&args) };
    let headers = header_pairs(headers)?;
    let mut body = vec![];
    std::io::stdin().read_to_end(&mut body).context("cannot read the request body from stdin")?;
    let function = match &args.namespace {
        Some(ns) => format!("{name}.{ns}"),
        None => name.to_string(),
    };
    let route = if asynchronous { "async-function" } else { "function" };
    let res = api.send("POST", &format!("/{route}/{}", encode(&function)), &headers, body.into()).await?;
    let status = res.status();
    let call_id = res.headers().get("x-call-id").and_then(|v| v.to_str().ok()).map(String::from);
    let answer = res.into_body().collect().await.context("the answer was cut short")?.to_bytes();
    if !status.is_success() {
        bail!("{function} answered {status}: {}", String::from_utf8_lossy(&answer).trim());
    }
    if asynchronous {
        println!("accepted ({status}): call id {}", call_id.as_deref().unwrap_or("-"));
    } else {
        std::io::stdout().write_all(&answer)?;
    }
    Ok(())
}

/// `switchboard scale NAME --replicas N`
pub async fn scale(args: GatewayArgs, name: &str, replicas: u64) -> Result<()> {
    let api = Api::gateway(&args);
    let mut body = json!({"serviceName": name, "replicas": replicas});
    if let Some(ns) = &args.namespace {
        body["namespace"] = json!(ns);
    }
    api.call("POST", &format!("/system/scale-function/{}", encode(name)), Some(body)).await?;
    println!("{name}: scaling to {replicas} replicas");
    Ok(())
}

/// `switchboard remove NAME`
pub async fn remove(args: GatewayArgs, name: &str) -> Result<()> {
    let api = Api::gateway(&args);
    let mut body = json!({"functionName": name});
    if let Some(ns) = &args.namespace {
        body["namespace"] = json!(ns);
    }
    api.call("DELETE", "/system/functions", Some(body)).await?;
    println!("{name} removed");
    Ok(())
}

/// `switchboard logs NAME [--tail N] [--follow]`: a line a log entry, as
/// they come when following.
pub async fn logs(args: GatewayArgs, name: &str, tail: Option<u64>, follow: bool) -> Result<()> {
    use std::io::Write;
    let api = Api::gateway(&args);
    let mut path = format!("/system/logs?name={}&follow={follow}{}", encode(name), in_namespace(&args, '&'));
    if let Some(tail) = tail {
        path.push_str(&format!("&tail={tail}"));
    }
    let res = api.send("GET", &path, &[], Bytes::new()).await?;
    let status = res.status();
    let mut body = res.into_body();
    if !status.is_success() {
        let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        bail!("{status}: {}", String::from_utf8_lossy(&text).trim());
    }
    let (mut pending, mut out) = (Vec::new(), std::io::stdout());
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.context("the log stream broke off")?.into_data() else { continue };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let entry: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
            if api.json || entry.is_null() {
                out.write_all(&line)?;
            } else {
                let text = |k: &str| entry[k].as_str().unwrap_or("").to_string();
                writeln!(out, "{} {} {}", text("timestamp"), text("instance"), text("text"))?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// `switchboard deploy -f stack.yml [--filter NAME]`: each function of an
/// OpenFaaS stack, updated in place (PUT) when the gateway has it, else
/// created (POST), as faas-cli deploys.
pub async fn deploy(args: GatewayArgs, stack: &std::path::Path, filter: Option<&str>) -> Result<()> {
    let api = Api::gateway(&args);
    let mut functions = switchboard_gateway::stack::load(stack)?;
    if let Some(only) = filter {
        functions.retain(|f| f.service == only);
        if functions.is_empty() {
            bail!("--filter {only}: no function of that name in {}", stack.display());
        }
    }
    for mut f in functions {
        if f.namespace.is_none() {
            f.namespace = args.namespace.clone();
        }
        let body = serde_json::to_value(&f)?;
        let json = [("Content-Type".to_string(), "application/json".to_string())];
        let updated = api.send("PUT", "/system/functions", &json, Bytes::from(body.to_string())).await?;
        let verb = match updated.status().as_u16() {
            404 => {
                api.call("POST", "/system/functions", Some(body)).await?;
                "deployed"
            }
            s if (200..300).contains(&s) => "updated",
            _ => {
                let status = updated.status();
                let text = updated.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                bail!("{}: {status}: {}", f.service, String::from_utf8_lossy(&text).trim());
            }
        };
        println!("{} {verb}: {}/function/{}", f.service, api.url, f.service);
    }
    Ok(())
}

/// `switchboard login [-u USER] --password-stdin`: checks the credentials
/// against the gateway (or `--hub`), then saves them where faas-cli keeps
/// its logins.
pub async fn login(args: GatewayArgs, hub: Option<String>, user: &str, password: Option<String>) -> Result<()> {
    use std::io::Read;
    let password = match password {
        Some(p) => p,
        None => {
            let mut p = String::new();
            std::io::stdin().read_to_string(&mut p).context("cannot read the password from stdin")?;
            p
        }
    };
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password: give it on stdin with --password-stdin (or --password)");
    }
    let (name, url, check) = match &hub {
        Some(hub) => ("hub", hub.as_str(), "/topics"),
        None => ("gateway", args.gateway.as_str(), "/system/functions"),
    };
    let url = url.trim_end_matches('/').to_string();
    let api = Api { auth: Some(basic(user, password)), ..Api::new(name, &url, "the URL", &args.secrets, args.json) };
    api.call("GET", check, None).await?;
    let file = logins_file().context("no home folder to save the login in: set OPENFAAS_CONFIG to a folder")?;
    let mut logins: Logins = match std::fs::read_to_string(&file) {
        Ok(text) => {
            serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not a faas-cli config", file.display()))?
        }
        Err(_) => Logins::default(),
    };
    logins.auths.retain(|l| l.gateway.trim_end_matches('/') != url);
    logins.auths.push(Login { gateway: url.clone(), auth: "basic".into(), token: token(user, password) });
    write_private(&file, &serde_yaml_ng::to_string(&logins)?)?;
    println!("credentials saved for {user} at {url} ({})", file.display());
    Ok(())
}

/// `switchboard logout`: forgets the saved login for the gateway (or `--hub`).
pub async fn logout(args: GatewayArgs, hub: Option<String>) -> Result<()> {
    let url = hub.as_deref().unwrap_or(&args.gateway).trim_end_matches('/').to_string();
    let file = logins_file().context("no home folder: set OPENFAAS_CONFIG")?;
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let mut logins: Logins = serde_yaml_ng::from_str(&text).unwrap_or_default();
    let before = logins.auths.len();
    logins.auths.retain(|l| l.gateway.trim_end_matches('/') != url);
    if logins.auths.len() == before {
        bail!("no login saved for {url} in {}", file.display());
    }
    write_private(&file, &serde_yaml_ng::to_string(&logins)?)?;
    println!("credentials for {url} removed");
    Ok(())
}

/// Writes `text` to `file`, readable by its owner only, as faas-cli does.
fn write_private(file: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(file)?;
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", file.display()))
}

#[derive(clap::Subcommand)]
pub enum Secrets {
    /// The secrets' names (never their values)
    List,
    /// Create a secret from --from-literal, --from-file or stdin
    Create(SecretValue),
    /// Replace a secret's value
    Update(SecretValue),
    /// Remove a secret
    Remove { name: String },
}

#[derive(clap::Args)]
pub struct SecretValue {
    name: String,
    /// The value itself (visible in the shell's history: prefer stdin)
    #[arg(long)]
    from_literal: Option<String>,
    /// A file whose bytes are the value
    #[arg(long)]
    from_file: Option<PathBuf>,
}

/// `switchboard secret list|create|update|remove`, as faas-cli's.
pub async fn secret(args: GatewayArgs, verb: Secrets) -> Result<()> {
    use base64::Engine;
    let api = Api::gateway(&args);
    let named = |name: &str| {
        let mut body = json!({"name": name});
        if let Some(ns) = &args.namespace {
            body["namespace"] = json!(ns);
        }
        body
    };
    let (method, body, done) = match verb {
        Secrets::List => {
            let answer = api.call("GET", &format!("/system/secrets{}", in_namespace(&args, '?')), None).await?;
            api.print(&answer, |a| {
                let secrets = a.as_array().map(Vec::as_slice).unwrap_or_default();
                let mut rows: Vec<[String; 1]> =
                    secrets.iter().map(|s| [s["name"].as_str().unwrap_or("?").to_string()]).collect();
                rows.sort();
                table(["NAME"], &rows)
            });
            return Ok(());
        }
        Secrets::Create(v) | Secrets::Update(v) if v.from_literal.is_some() && v.from_file.is_some() => {
            bail!("{}: give --from-literal or --from-file, not both", v.name)
        }
        Secrets::Create(v) => ("POST", value(named(&v.name), &v)?, format!("{} created", v.name)),
        Secrets::Update(v) => ("PUT", value(named(&v.name), &v)?, format!("{} updated", v.name)),
        Secrets::Remove { name } => ("DELETE", named(&name), format!("{name} removed")),
    };
    /// The value as faas-cli sends it: text as `value`, other bytes as
    /// base64 `rawValue`.
    fn value(mut body: Value, v: &SecretValue) -> Result<Value> {
        let bytes = match (&v.from_literal, &v.from_file) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(file)) => std::fs::read(file).with_context(|| format!("--from-file {}", file.display()))?,
            (None, None) => {
                use std::io::Read;
                let mut b = vec![];
                std::io::stdin().read_to_end(&mut b).context("cannot read the value from stdin")?;
                b
            }
        };
        match String::from_utf8(bytes) {
            Ok(text) => body["value"] = json!(text),
            Err(e) => body["rawValue"] = json!(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
        }
        Ok(body)
    }
    api.call(method, "/system/secrets", Some(body)).await?;
    println!("{done}");
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum Namespaces {
    /// The gateway's function namespaces
    List,
    /// Create a function namespace
    Create { name: String },
    /// Remove a function namespace
    Remove { name: String },
}

/// `switchboard namespace list|create|remove`, as faas-cli's.
pub async fn namespace(args: GatewayArgs, verb: Namespaces) -> Result<()> {
    let api = Api::gateway(&args);
    match verb {
        Namespaces::List => {
            let answer = api.call("GET", "/system/namespaces", None).await?;
            api.print(&answer, |a| {
                let names = a.as_array().map(Vec::as_slice).unwrap_or_default();
                let rows: Vec<[String; 1]> = names.iter().map(|n| [n.as_str().unwrap_or("?").to_string()]).collect();
                table(["NAMESPACE"], &rows)
            });
        }
        Namespaces::Create { name } => {
            // Labelled as OpenFaaS labels a namespace made for functions.
            let ns = json!({"name": name, "labels": {"openfaas": "1"}});
            api.call("POST", "/system/namespace/", Some(ns)).await?;
            println!("namespace {name} created");
        }
        Namespaces::Remove { name } => {
            api.call("DELETE", &format!("/system/namespace/{}", encode(&name)), None).await?;
            println!("namespace {name} removed");
        }
    }
    Ok(())
}
