//! The verbs for people, against the hub's port: `topics`, `dead-letters`,
//! `pause`, `resume`. Tables by default, `--json` for scripts; the credentials are
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
        let mut body: serde_json::Map<String, Value> = self
            .pairs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), if k == "status" { json!(self.status) } else { json!(v) }))
            .collect();
        if !ids.is_empty() {
            body.insert("ids".into(), json!(ids));
        }
        if all {
            body.insert("all".into(), json!(true));
        }
        Value::Object(body)
    }
}

/// A client of one hub.
struct Hub {
    url: String,
    auth: Option<String>,
    json: bool,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Hub {
    fn new(args: &HubArgs) -> Self {
        let read = |f: &str| std::fs::read_to_string(args.secrets.join(f)).ok().map(|s| s.trim().to_string());
        let auth = read("basic-auth-user").zip(read("basic-auth-password")).map(|(user, password)| {
            use base64::Engine;
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        });
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Self { url: args.hub.trim_end_matches('/').to_string(), auth, json: args.json, client }
    }

    /// The hub's JSON answer to `method path`, or an error that says what to do.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.url));
        if let Some(auth) = &self.auth {
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        let body = match body {
            Some(b) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let res = self.client.request(req.body(body)?).await.with_context(|| {
            format!("cannot reach the hub at {}: is `switchboard up` (or a `connect`) running there? (--hub, SWITCHBOARD_HUB)", self.url)
        })?;
        let status = res.status();
        let bytes = res.into_body().collect().await.context("the hub's answer was cut short")?.to_bytes();
        let answer: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes).trim()}));
        match status.as_u16() {
            200..=299 => Ok(answer),
            401 if self.auth.is_none() => bail!(
                "the hub wants credentials and none were found: run this where `switchboard up` keeps data/secrets, or give --secrets DIR"
            ),
            401 => bail!("the hub refused these credentials: are they this platform's? (--secrets DIR)"),
            _ => bail!("{}: {}", status, answer["error"].as_str().unwrap_or(&answer.to_string())),
        }
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
    let hub = Hub::new(&args);
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
    let hub = Hub::new(&args);
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
    let hub = Hub::new(&args);
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
