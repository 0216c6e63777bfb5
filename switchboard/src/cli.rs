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

/// The credentials in `secrets`, as an `Authorization` value.
fn credentials(secrets: &std::path::Path) -> Option<String> {
    let read = |f: &str| std::fs::read_to_string(secrets.join(f)).ok().map(|s| s.trim().to_string());
    read("basic-auth-user").zip(read("basic-auth-password")).map(|(user, password)| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    })
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
        Self { name, url, url_from, auth: credentials(secrets), json, client }
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
                "the {} wants credentials and none were found: run this where `switchboard up` keeps data/secrets, or give --secrets DIR",
                self.name
            ),
            401 => bail!("the {} refused these credentials: are they this platform's? (--secrets DIR)", self.name),
            _ => Ok(res),
        }
    }

    /// The JSON answer to `method path`, or an error that says what to do.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let json = [("Content-Type".to_string(), "application/json".to_string())];
        let headers: &[(String, String)] = if body.is_some() { &json } else { &[] };
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let res = self.send(method, path, headers, body).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await.context("the answer was cut short")?.to_bytes();
        let answer: Value = match bytes.is_empty() {
            true => Value::Null,
            false => serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes).trim()})),
        };
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
    let f = api.call("GET", &path, None).await?;
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
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("--header {h}: expected NAME=VALUE"))
        })
        .collect::<Result<_>>()?;
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
