//! The verbs for people, run as a person runs them against `switchboard
//! up`: the gateway's (`list`, `invoke`, `deploy`, `login`, `secret`, …) and
//! the hub's (`topics`, `dead-letters`, `pause`, `resume`, `publish`), from
//! the platform's folder, where the credentials are, or elsewhere after a
//! `login`.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

/// Runs `switchboard ARGS` in `dir`, with `--hub` the platform's unless
/// ARGS name one: exit code, stdout, stderr.
fn run(p: &Platform, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let hub = if args.contains(&"--hub") { vec![] } else { vec!["--hub", p.hub_url.as_str()] };
    command(dir, &[args, &hub].concat(), "")
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
    assert!(code == 1 && err.contains("wants credentials and none were found"), "{err}");
    let (code, _, err) = gw(&["describe", "nobody"], "");
    assert!(code == 1 && err.starts_with("error: no function nobody on the gateway at "), "{err}");
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

    // A test event through a broker (nats), and a CloudEvent to the receiver.
    let (code, out, err) = run(&p, here, &["publish", "nats", "order.created"]);
    assert!(code == 0 && out.starts_with("published to nats:order.created ("), "{out}{err}");
    let cloudevent = ["publish", "cloudevents", "order.created", "--cloudevents", &p.ce_url];
    let (code, out, err) = command(here, &[&cloudevent[..], &["--hub", &p.hub_url]].concat(), "via the CLI");
    assert!(code == 0 && out.starts_with("switchboard-publish-") && out.contains(r#""delivered":1"#), "{out}{err}");
    let delivered = eventually(Duration::from_secs(10), || async {
        let bodies: Vec<String> = calls(&work.join("calls.jsonl")).iter().map(|c| c["body"].to_string()).collect();
        bodies.contains(&"\"\"".to_string()) && bodies.contains(&"\"via the CLI\"".to_string())
    });
    assert!(delivered.await, "{:?}", calls(&work.join("calls.jsonl")));
    let (code, _, err) = run(&p, here, &["publish", "cron", "tick"]);
    assert!(code == 1 && err.starts_with("error: 400 Bad Request: cron has no broker to publish to"), "{err}");
    let (code, _, err) = run(&p, here, &["publish", "kafka", "orders"]);
    assert!(code == 1 && err.contains("no source kafka here (here: "), "{err}");

    // Errors say what to do.
    let (code, _, err) = run(&p, here, &["dead-letters", "purge"]);
    assert!(code == 1 && err.starts_with("error: 400 Bad Request: name the letters"), "{err}");
    let (code, _, err) = run(&p, here, &["pause", "nobody"]);
    assert!(code == 1 && err.contains("no function nobody subscribes"), "{err}");
    let (code, _, err) = run(&p, Path::new("/"), &["dead-letters", "list"]);
    assert!(
        code == 1 && err.contains("the hub at ") && err.contains("wants credentials") && err.contains("--secrets"),
        "{err}"
    );
    let (code, _, err) = run(&p, here, &["dead-letters", "list", "--hub", "http://127.0.0.1:9"]);
    assert!(code == 1 && err.contains("cannot reach the hub at http://127.0.0.1:9"), "{err}");
}

#[tokio::test]
async fn login_secrets_and_namespaces_from_another_folder() {
    let p = Platform::start(&config(""), "functions:\n  echo:\n    fprocess: cat\n").await;
    p.wait_ready(&["echo"]).await;
    let elsewhere = tempdir();
    let (here, url) = (elsewhere.path(), p.url.as_str());
    let gw = |args: &[&str], stdin: &str| command(here, &[args, &["--gateway", url]].concat(), stdin);
    let password = std::fs::read_to_string(p.dir.path().join("data/secrets/basic-auth-password")).unwrap();

    let (code, _, err) = gw(&["list"], "");
    assert_eq!(code, 1);
    assert!(err.starts_with("error: the gateway at ") && err.contains("run `switchboard login`"), "{err}");
    let (code, _, err) = gw(&["login", "--password-stdin"], "not-the-password\n");
    assert_eq!(code, 1);
    assert!(err.contains("refused these credentials"), "{err}");
    assert!(!here.join(".openfaas/config.yml").exists(), "a refused login is not saved");

    let (code, out, err) = gw(&["login", "--username", "admin", "--password-stdin"], &password);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("credentials saved for admin at {url}")), "{out}");
    // faas-cli's own file and format, readable by its owner only.
    let saved = here.join(".openfaas/config.yml");
    let logins: serde_json::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let token = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", password.trim()))
    };
    assert_eq!(logins["auths"], serde_json::json!([{"gateway": url, "auth": "basic", "token": token}]));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    let (code, out, err) = gw(&["list"], "");
    assert!(code == 0 && out.contains("echo "), "{out}{err}");

    let (code, out, err) = gw(&["secret", "create", "db-password", "--from-literal", "s3cret"], "");
    assert_eq!((code, out.as_str()), (0, "db-password created\n"), "{err}");
    let (code, out, err) = gw(&["secret", "create", "api-key"], "from stdin");
    assert_eq!((code, out.as_str()), (0, "api-key created\n"), "{err}");
    let (code, out, _) = gw(&["secret", "create", "api-key"], "again");
    assert_eq!(code, 1, "a secret that exists is not created twice: {out}");
    let (code, out, err) = gw(&["secret", "update", "api-key"], "new value");
    assert_eq!((code, out.as_str()), (0, "api-key updated\n"), "{err}");
    let (_, out, _) = gw(&["secret", "list"], "");
    assert_eq!(out, "NAME\napi-key\ndb-password\n", "names only, never values");
    assert_eq!(gw(&["secret", "remove", "db-password"], "").1, "db-password removed\n");
    assert_eq!(gw(&["secret", "list"], "").1, "NAME\napi-key\n");

    let (code, out, err) = gw(&["namespace", "create", "team-a"], "");
    assert_eq!((code, out.as_str()), (0, "namespace team-a created\n"), "{err}");
    assert_eq!(gw(&["namespace", "list"], "").1, "NAMESPACE\nopenfaas-fn\nteam-a\n");
    assert_eq!(gw(&["namespace", "remove", "team-a"], "").0, 0);
    assert_eq!(gw(&["namespace", "list", "--json"], "").1.trim(), "[\n  \"openfaas-fn\"\n]");

    assert_eq!(gw(&["logout"], "").1, format!("credentials for {url} removed\n"));
    assert_eq!(gw(&["list"], "").0, 1, "logged out");
    let (code, _, err) = command(here, &["list", "--gateway", &format!("http://127.0.0.1:{}", free_port())], "");
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the gateway") && err.contains("is `switchboard up` running there?"), "{err}");
}
