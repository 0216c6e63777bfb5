//! The README's first run, as a newcomer makes it: `switchboard up` on its
//! embedded defaults (no --config, the default ports) in a fresh folder
//! holding only the repository's config/, as a checkout has it; then every
//! command of the README's Quick start, as written and in order, in one
//! shell, each of which must succeed (curl fails on an HTTP error here) and
//! show what the README says it shows, the upload → thumbnail pipeline
//! included.

mod common;

use common::*;
use image::ImageFormat;
use std::path::Path;
use std::time::Duration;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The shell commands of the README's Quick start (up to "### With
/// Docker"), continuation lines joined and comments dropped, but for those
/// that start a long-running process (`cargo run`, `switchboard connect`):
/// the test runs the platform itself. The CLI's verbs run, from the binary
/// under test.
fn quick_start_commands(readme: &str) -> Vec<String> {
    let start = readme.find("## Quick start").expect("the README has a Quick start");
    let end = readme[start..].find("### With Docker").map_or(readme.len(), |i| start + i);
    let (mut commands, mut in_block, mut pending) = (vec![], false, String::new());
    for line in readme[start..end].lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        let line = line.trim();
        if !in_block || line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands.retain(|c| !c.starts_with("cargo ") && !c.starts_with("switchboard connect "));
    commands
}

#[tokio::test]
async fn the_readme_quick_start_works_on_a_first_run() {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let commands = quick_start_commands(&readme);
    let expected = ["function/echo", "function/upload/photo.jpg?bucket=thumbnails", "127.0.0.1:8082/"];
    for part in expected {
        assert!(commands.iter().any(|c| c.contains(part)), "no README command with {part}: {commands:#?}");
    }
    for port in [8080, 8081, 8082] {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "port {port} is taken ({e}): this test runs `up` on its default ports 8080-8082; stop what holds it"
            );
        }
    }

    let dir = tempdir();
    let copy = std::process::Command::new("cp")
        .args(["-r", &format!("{REPO}/config"), "config"])
        .current_dir(dir.path())
        .status();
    assert!(copy.unwrap().success(), "cannot copy config/");
    std::fs::write(dir.path().join("photo.jpg"), picture(640, 480, ImageFormat::Jpeg)).unwrap();
    let proc = Proc::spawn(&["up"], dir.path(), &[]);
    let p = Platform {
        proc,
        url: "http://127.0.0.1:8080".into(),
        port: 8080,
        hub_url: "http://127.0.0.1:8081".into(),
        ce_url: "http://127.0.0.1:8082".into(),
        dir,
        auth: None,
    };
    let healthy =
        eventually(Duration::from_secs(30), || async { get(&format!("{}/healthz", p.url)).await.status == 200 });
    assert!(healthy.await, "`up` never became healthy:\n{}", p.proc.output());
    assert!(p.proc.output().contains("Generated credentials"), "{}", p.proc.output());
    let p = Platform { auth: credentials(&p.dir.path().join("data/secrets")), ..p };
    p.wait_ready(&["echo", "sha512sum", "hello", "tick", "order-created", "upload", "thumbnail"]).await;
    p.receiving().await;

    // One shell, so that AUTH carries from one command to the next; a
    // marker before each to find its output.
    let mut script =
        String::from("set -euo pipefail\ncurl() { command curl --fail-with-body -sS --max-time 60 \"$@\"; }\n");
    for (i, command) in commands.iter().enumerate() {
        script.push_str(&format!("echo '<<<{i}>>>'\n{command}\necho\n"));
    }
    // `switchboard` is the binary under test, as target/release is for a reader.
    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let run = std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(p.dir.path())
        .env("PATH", path)
        .env_remove("OPENFAAS_URL")
        .env_remove("SWITCHBOARD_HUB")
        .env("OPENFAAS_CONFIG", p.dir.path().join(".openfaas"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "a README command failed:\n{out}\nplatform:\n{}", p.proc.output());
    let output_of = |part: &str| {
        let i = commands.iter().position(|c| c.contains(part)).unwrap();
        let from = out.find(&format!("<<<{i}>>>")).unwrap() + format!("<<<{i}>>>").len();
        let to = out[from..].find("<<<").map_or(out.len(), |n| from + n);
        out[from..to].trim().to_string()
    };

    assert_eq!(output_of("function/echo"), "hello");
    assert!(output_of("function/sha512sum").starts_with("ddaf35a193617aba"), "{}", output_of("function/sha512sum"));
    assert!(output_of("function/hello/any/path").contains(r#""hello": "you""#), "{out}");
    assert!(output_of("async-function/echo").starts_with("HTTP/1.1 202"), "{out}");
    assert_eq!(output_of("function/shout"), "QUIET");
    assert!(output_of("/system/functions").contains(r#""name":"echo""#), "{out}");
    assert!(output_of("scale-function/shout").is_empty(), "{out}");
    assert!(output_of("127.0.0.1:8081/metrics").contains("switchboard_events_received_total"), "{out}");
    let letters: serde_json::Value = serde_json::from_str(&output_of("/dead-letters?function=order-created")).unwrap();
    assert_eq!(letters["letters"], serde_json::json!([]), "{out}");
    let replayed: serde_json::Value = serde_json::from_str(&output_of("/dead-letters/replay")).unwrap();
    assert_eq!(replayed["letters"], 0, "{out}");
    assert!(output_of("/functions/order-created/pause").contains(r#""paused":true"#), "{out}");
    assert!(output_of("/functions/order-created/resume").contains(r#""paused":false"#), "{out}");
    let topics = output_of("switchboard topics");
    let order = topics.lines().find(|l| l.starts_with("com.example.order.created "));
    assert!(
        order.is_some_and(|l| l.contains(" order-created.openfaas-fn ") && l.ends_with(" cloudevents")),
        "{topics}"
    );
    let published = output_of("switchboard publish cloudevents");
    assert!(published.starts_with("switchboard-publish-") && published.contains(r#""delivered":1"#), "{out}");
    assert!(output_of("switchboard dead-letters list").ends_with("no dead letters"), "{out}");
    assert_eq!(output_of("switchboard pause"), "order-created.openfaas-fn paused: its events wait", "{out}");
    assert_eq!(output_of("switchboard resume"), "order-created.openfaas-fn resumed", "{out}");
    assert!(output_of("switchboard list").contains("thumbnail"), "{out}");
    let sent = output_of("127.0.0.1:8082/");
    assert!(sent.starts_with("HTTP/1.1 200") && sent.contains(r#""delivered":1"#), "{sent}");
    let uploaded: serde_json::Value = serde_json::from_str(&output_of("--data-binary @photo.jpg")).unwrap();
    assert_eq!(uploaded["event"]["delivered"], 1, "{uploaded}");
    let thumb = std::fs::read(p.dir.path().join("thumb.jpg")).unwrap();
    assert_eq!(measure(&thumb), (ImageFormat::Jpeg, 128, 96), "thumb.jpg");

    // What the logs commands show, once the logs have caught up: the
    // CloudEvent's data, and a tick (every 30 s).
    let logged = |name: &'static str, text: &'static str| {
        let p = &p;
        eventually(Duration::from_secs(40), move || async move {
            let logs = p.api("GET", &format!("/system/logs?name={name}&tail=5"), "").await.text();
            let lines = logs.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
            lines.into_iter().any(|l| l["text"].as_str().is_some_and(|t| t.contains(text)))
        })
    };
    assert!(logged("order-created", r#"{"order":42}"#).await, "{}", p.proc.output());
    assert!(logged("order-created", r#"{"order":43}"#).await, "{}", p.proc.output());
    assert!(logged("tick", "scheduled_time").await, "{}", p.proc.output());
    let letters =
        call("GET", &format!("{}/dead-letters", p.hub_url), &[("Authorization", p.auth.as_deref().unwrap())], "").await;
    assert_eq!(letters.json()["letters"], serde_json::json!([]), "no event was dead-lettered: {}", letters.text());
}
