//! The hub's verbs for people (`switchboard topics`, `dead-letters`,
//! `pause`, `resume`), run as a person runs them against `switchboard up`: from the
//! platform's folder, where the credentials are.

mod common;

use common::*;
use std::path::Path;

/// Runs `switchboard ARGS` in `dir`, with `--hub` the platform's unless
/// ARGS name one: exit code, stdout, stderr.
fn run(p: &Platform, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let hub = if args.contains(&"--hub") { vec![] } else { vec!["--hub", p.hub_url.as_str()] };
    command(dir, &[args, &hub].concat(), "")
}

/// Runs `switchboard ARGS` in `dir` with `stdin`: exit code, stdout, stderr.
fn command(dir: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("secret_mount_path")
        .env_remove("OPENFAAS_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn functions_are_listed_described_invoked_scaled_logged_and_removed() {
    let stack =
        "functions:\n  echo:\n    fprocess: cat\n  shout:\n    fprocess: tr a-z A-Z\n    labels: {team: docs}\n";
    let p = Platform::start(&config(""), stack).await;
    p.wait_ready(&["echo", "shout"]).await;
    let (here, url) = (p.dir.path(), p.url.as_str());
    let gw = |args: &[&str], stdin: &str| command(here, &[args, &["--gateway", url]].concat(), stdin);

    let (code, out, err) = gw(&["invoke", "shout"], "quiet please");
    assert_eq!((code, out.as_str()), (0, "QUIET PLEASE"), "{err}");
    let (code, out, err) = gw(&["invoke", "echo", "-H", "X-Trace=1"], "hello");
    assert_eq!((code, out.as_str()), (0, "hello"), "{err}");
    let (code, out, err) = gw(&["invoke", "echo", "--async"], "later");
    assert!(code == 0 && out.starts_with("accepted (202 Accepted): call id "), "{out}{err}");

    let (code, out, err) = gw(&["list"], "");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("INVOCATIONS"), "{out}");
    assert!(lines[1].starts_with("echo ") && lines[1].contains("openfaas-fn") && lines[1].contains("1/1"), "{out}");
    assert!(lines[2].starts_with("shout ") && lines[2].contains("1/1"), "{out}");
    let (_, json, _) = gw(&["list", "--json"], "");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap().as_array().unwrap().len(), 2, "{json}");

    let (code, out, _) = gw(&["describe", "shout"], "");
    assert!(code == 0 && out.contains("Status:      Ready") && out.contains("Process:     tr a-z A-Z"), "{out}");
    assert!(
        out.contains("team=docs") && out.contains(&format!("URL:         {url}/function/shout.openfaas-fn")),
        "{out}"
    );

    let (code, out, err) = gw(&["scale", "shout", "--replicas", "2"], "");
    assert_eq!((code, out.as_str()), (0, "shout: scaling to 2 replicas\n"), "{err}");
    let scaled = eventually(std::time::Duration::from_secs(20), || async {
        gw(&["describe", "shout"], "").1.contains("2 of 2 available")
    });
    assert!(scaled.await, "{}", gw(&["describe", "shout"], "").1);

    let (code, out, err) = gw(&["logs", "echo", "--tail", "50"], "");
    assert!(code == 0 && out.lines().any(|l| l.contains("echo-") && l.contains("POST")), "{out}{err}");

    std::fs::write(
        here.join("more.yml"),
        "functions:\n  lower:\n    fprocess: tr A-Z a-z\n  other:\n    fprocess: cat\n",
    )
    .unwrap();
    let (code, out, err) = gw(&["deploy", "-f", "more.yml", "--filter", "lower"], "");
    assert_eq!((code, out), (0, format!("lower deployed: {url}/function/lower\n")), "{err}");
    let invoked =
        eventually(std::time::Duration::from_secs(20), || async { gw(&["invoke", "lower"], "LOUD").1 == "loud" });
    assert!(invoked.await, "{}", p.proc.output());
    assert!(!gw(&["list"], "").1.contains("other"), "--filter deploys that one only");
    assert_eq!(
        gw(&["deploy", "-f", "more.yml", "--filter", "lower"], "").1,
        format!("lower updated: {url}/function/lower\n")
    );
    let (code, _, err) = gw(&["deploy", "-f", "more.yml", "--filter", "nobody"], "");
    assert!(code == 1 && err.contains("--filter nobody: no function of that name in more.yml"), "{err}");

    let (code, out, err) = gw(&["remove", "shout"], "");
    assert_eq!((code, out.as_str()), (0, "shout removed\n"), "{err}");
    assert!(!gw(&["list"], "").1.contains("shout"));

    // Errors say what went wrong.
    let (code, _, err) = gw(&["invoke", "nobody"], "x");
    assert!(code == 1 && err.starts_with("error: nobody answered 404"), "{err}");
    let (code, _, err) = command(Path::new("/"), &["list", "--gateway", url], "");
    assert!(code == 1 && err.contains("the gateway wants credentials"), "{err}");
    let (code, _, err) = gw(&["describe", "nobody"], "");
    assert!(code == 1 && err.contains("404"), "{err}");
}

#[tokio::test]
async fn dead_letters_pause_and_resume_from_the_command_line() {
    let dir = tempdir();
    let work = dir.path().to_path_buf();
    std::fs::write(work.join("broken"), "").unwrap();
    let stack = switched_fn(&work, "order.created", "");
    let nats = format!("nats:\n  enabled: true\n  url: nats://127.0.0.1:4222\n  queue_group: {}\n", unique("cli"));
    let p = Platform::start_in(dir, &config(&nats), &stack, &[]).await;
    p.wait_ready(&["fixme"]).await;
    p.receiving().await;
    let ce_url = p.ce_url.clone();
    let ce = |id: &'static str| {
        let url = ce_url.clone();
        async move {
            let headers =
                [("ce-id", id), ("ce-source", "/shop"), ("ce-type", "order.created"), ("ce-specversion", "1.0")];
            call("POST", &url, &headers, id).await
        }
    };
    for id in ["a", "b", "c"] {
        assert_eq!(ce(id).await.json()["dead_lettered"], 1);
    }
    let here = p.dir.path();

    let (code, out, err) = run(&p, here, &["dead-letters", "list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("FUNCTION") && lines[0].contains("ERROR"), "{out}");
    assert_eq!(lines.iter().filter(|l| l.contains("fixme.openfaas-fn") && l.contains("HTTP 500")).count(), 3, "{out}");
    let (_, json, _) = run(&p, here, &["dead-letters", "list", "--json", "--source", "cloudevents"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed["letters"].as_array().unwrap().len(), 3, "{json}");
    let id = listed["letters"][0]["id"].to_string();
    assert_eq!(
        run(&p, here, &["dead-letters", "list", "--function", "nobody"]).1,
        "ID  TIME  SOURCE  TOPIC  FUNCTION  ATTEMPTS  ERROR\nno dead letters\n"
    );
    let (code, shown, _) = run(&p, here, &["dead-letters", "show", &id]);
    assert!(code == 0 && shown.contains(r#""payload": "a""#), "{shown}");

    assert!(link_reported(&p, "nats", true).await, "{}", p.proc.output());
    let (code, out, err) = run(&p, here, &["topics"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "TOPIC          FUNCTIONS          SOURCES\norder.created  fixme.openfaas-fn  cloudevents, nats (connected)\n"
    );
    let (code, out, err) = run(&p, here, &["pause", "fixme"]);
    assert_eq!((code, out.as_str()), (0, "fixme.openfaas-fn paused: its events wait\n"), "{err}");
    assert!(run(&p, here, &["topics"]).1.contains("fixme.openfaas-fn (paused)"));
    assert_eq!(ce("d").await.status, 503);
    assert_eq!(run(&p, here, &["resume", "fixme.openfaas-fn"]).1, "fixme.openfaas-fn resumed\n");

    std::fs::remove_file(work.join("broken")).unwrap();
    let (code, out, err) = run(&p, here, &["dead-letters", "replay", "--all"]);
    assert_eq!((code, out.as_str()), (0, "replayed 3: 3 delivered, 0 failed again\n"), "{err}");
    assert_eq!(run(&p, here, &["dead-letters", "list", "--json"]).1.matches("\"id\"").count(), 0);

    // Errors say what to do.
    let (code, _, err) = run(&p, here, &["dead-letters", "purge"]);
    assert!(code == 1 && err.starts_with("error: 400 Bad Request: name the letters"), "{err}");
    let (code, _, err) = run(&p, here, &["pause", "nobody"]);
    assert!(code == 1 && err.contains("no function nobody subscribes"), "{err}");
    let (code, _, err) = run(&p, Path::new("/"), &["dead-letters", "list"]);
    assert!(code == 1 && err.contains("the hub wants credentials") && err.contains("--secrets"), "{err}");
    let (code, _, err) = run(&p, here, &["dead-letters", "list", "--hub", "http://127.0.0.1:9"]);
    assert!(code == 1 && err.contains("cannot reach the hub at http://127.0.0.1:9"), "{err}");
}
