//! `switchboard connect` beside a separate gateway: discovery through its basic
//! auth and namespaces, and a gateway that goes away and comes back.

mod common;
use common::*;
use std::time::Duration;

/// Sends a binary-mode CloudEvent with `id` as its body; the connector's
/// answer, or null when it cannot be reached.
async fn send(ce_port: u16, ty: &str, id: &str) -> serde_json::Value {
    let headers = [("ce-id", id), ("ce-source", "/t"), ("ce-type", ty), ("ce-specversion", "1.0")];
    try_call("POST", &format!("http://127.0.0.1:{ce_port}/"), &headers, id.to_string())
        .await
        .map(|r| r.json())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_connector_survives_a_gateway_restart() {
    let dir = tempdir();
    let d = dir.path();
    let (gw_port, hub_port, ce_port) = (free_port(), free_port(), free_port());
    let record = d.join("r.log");
    std::fs::write(
        d.join("stack.yml"),
        format!("functions:\n{}", recorder_fn("r", d, "", "      topic: restart.test\n")),
    )
    .unwrap();
    std::fs::write(d.join("gateway.yml"), "provider:\n  kind: process\n  stack: stack.yml\nqueue:\n  enabled: false\n")
        .unwrap();
    std::fs::write(
        d.join("connector.yml"),
        format!(
            "hub:\n  listen: 127.0.0.1:{hub_port}\n  refresh_interval: 300ms\n  retry:\n    attempts: 2\n    min_wait: 10ms\n    max_wait: 50ms\ncloudevents:\n  listen: 127.0.0.1:{ce_port}\n"
        ),
    )
    .unwrap();
    let gateway_url = format!("http://127.0.0.1:{gw_port}");
    let start_gateway = || Proc::spawn(&["gateway", "--config", "gateway.yml", "--port", &gw_port.to_string()], d, &[]);
    let mut gateway = start_gateway();
    // The connector logs in with the credentials the gateway generated at its first start.
    let up =
        eventually(Duration::from_secs(20), || async { get(&format!("{gateway_url}/healthz")).await.status == 200 });
    assert!(up.await, "{}", gateway.output());
    let connector = Proc::spawn(
        &["connect", "cloudevents", "--gateway", &gateway_url, "--config", "connector.yml"],
        d,
        &[("basic_auth", "true"), ("secret_mount_path", "data/secrets")],
    );

    let send = |id: &'static str| send(ce_port, "restart.test", id);
    let delivered = eventually(Duration::from_secs(20), || async { send("before").await["delivered"] == 1 }).await;
    assert!(delivered, "not delivered before the restart:\n{}\n{}", gateway.output(), connector.output());

    gateway.stop();
    let dead = send("during").await;
    assert_eq!(dead["dead_lettered"], 1, "with the gateway down the event is dead-lettered, not lost: {dead}");
    let errors = eventually(Duration::from_secs(10), || async {
        get(&format!("http://127.0.0.1:{hub_port}/metrics"))
            .await
            .text()
            .lines()
            .any(|l| l.starts_with("switchboard_discovery_errors_total") && !l.ends_with(" 0"))
    })
    .await;
    assert!(errors, "discovery errors are not counted");

    let _gateway = start_gateway();
    let back = eventually(Duration::from_secs(20), || async { send("after").await["delivered"] == 1 }).await;
    assert!(back, "not delivered after the restart:\n{}", connector.output());
    let bodies: Vec<String> =
        std::fs::read_to_string(&record).unwrap().lines().map(|l| l.rsplit('|').next().unwrap().to_string()).collect();
    assert!(bodies.contains(&"before".to_string()) && bodies.contains(&"after".to_string()), "{bodies:?}");
    assert!(d.join(format!("data/dead-letters-cloudevents-{hub_port}.redb")).exists());
}

/// Discovery beside a gateway with basic auth, the connector configured by
/// OpenFaaS's environment variables: functions in several namespaces addressed
/// as `name.namespace`, an allow-list of namespaces, a custom topic delimiter;
/// when the gateway starts answering 401 the hub keeps its last topic map and
/// goes on delivering.
#[tokio::test]
async fn discovery_with_basic_auth_namespaces_and_a_delimiter() {
    let dir = tempdir();
    let d = dir.path();
    let (gw_port, hub_port, ce_port) = (free_port(), free_port(), free_port());
    let secrets = |name: &str, password: &str| {
        let s = d.join(name);
        std::fs::create_dir(&s).unwrap();
        std::fs::write(s.join("basic-auth-user"), "admin\n").unwrap();
        std::fs::write(s.join("basic-auth-password"), format!("{password}\n")).unwrap();
        s.display().to_string()
    };
    let (right, changed) = (secrets("secrets", "s3cret"), secrets("changed", "other"));
    let function = |name: &str, namespace: &str, topic: &str| {
        format!("{}    namespace: {namespace}\n", recorder_fn(name, d, "", &format!("      topic: \"{topic}\"\n")))
    };
    std::fs::write(
        d.join("stack.yml"),
        format!("functions:\n{}{}", function("a", "team-a", "ns.one|ns.two"), function("b", "team-b", "ns.one")),
    )
    .unwrap();
    std::fs::write(d.join("gateway.yml"), "provider:\n  kind: process\n  stack: stack.yml\nqueue:\n  enabled: false\n")
        .unwrap();
    std::fs::write(
        d.join("connector.yml"),
        format!(
            "hub:\n  listen: 127.0.0.1:{hub_port}\n  namespaces: [team-a]\ncloudevents:\n  listen: 127.0.0.1:{ce_port}\n"
        ),
    )
    .unwrap();
    let gateway = |secrets: &str| {
        Proc::spawn(
            &["gateway", "--config", "gateway.yml", "--port", &gw_port.to_string()],
            d,
            &[("basic_auth", "true"), ("secret_mount_path", secrets)],
        )
    };
    let mut gw = gateway(&right);
    // Configured as OpenFaaS's connectors are, by their environment variables.
    let gateway_url = format!("http://127.0.0.1:{gw_port}");
    let connector = Proc::spawn(
        &["connect", "cloudevents", "--config", "connector.yml"],
        d,
        &[
            ("gateway_url", &gateway_url),
            ("basic_auth", "true"),
            ("secret_mount_path", &right),
            ("topic_delimiter", "|"),
            ("rebuild_interval", "300ms"),
        ],
    );
    let send = |ty: &'static str, id: &'static str| send(ce_port, ty, id);
    let delivered =
        eventually(Duration::from_secs(20), || async { send("ns.one", "one").await["delivered"] == 1 }).await;
    assert!(delivered, "ns.one not delivered once:\n{}\n{}", gw.output(), connector.output());
    assert_eq!(send("ns.two", "two").await["delivered"], 1);
    let topics = |f: &str| -> Vec<String> {
        std::fs::read_to_string(d.join(f))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('|').nth(1).unwrap().into())
            .collect()
    };
    assert_eq!(topics("a.log"), ["ns.one", "ns.two"], "a.team-a subscribes to both topics split on |");
    assert!(topics("b.log").is_empty(), "team-b is not in hub.namespaces");
    let metrics = get(&format!("http://127.0.0.1:{hub_port}/metrics")).await.text();
    assert!(metrics.contains(r#"function="a.team-a""#), "{metrics}");

    // The gateway comes back with other credentials: discovery is refused,
    // the hub keeps its last map, and events still reach a.team-a.
    gw.stop();
    let _gw = gateway(&changed);
    let refused =
        eventually(Duration::from_secs(15), || async { connector.output().contains("401 Unauthorized") }).await;
    assert!(refused, "the 401 is not logged:\n{}", connector.output());
    let after = eventually(Duration::from_secs(15), || async { send("ns.one", "after").await["delivered"] == 1 }).await;
    assert!(after, "not delivered with the last topic map:\n{}", connector.output());
    assert_eq!(topics("a.log").len(), 3);
    assert_eq!(connector.output().matches("discovered functions").count(), 1, "{}", connector.output());
}

/// `connect` beside an https:// gateway whose certificate a private CA
/// signed and which requires a client certificate: with `hub.tls` it
/// discovers and invokes over TLS; without the CA the gateway's certificate
/// is refused and the refusal logged.
#[tokio::test]
async fn an_https_gateway_with_a_private_ca() {
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    certificates(&d);
    let stack = format!("functions:\n{}", recorder_fn("r", &d, "", "      topic: tls.test\n"));
    let p = Platform::start(&config(""), &stack).await;
    p.wait_ready(&["r"]).await;
    let tls_port = free_port();
    let pem = |name: &str| d.join(name).display().to_string();
    let _proxy = Broker::start(
        "python3",
        vec![
            fixture("tls_proxy.py"),
            tls_port.to_string(),
            p.port.to_string(),
            pem("server.pem"),
            pem("server-key.pem"),
            pem("ca.pem"),
        ],
        tls_port,
    );
    let gateway = format!("https://127.0.0.1:{tls_port}");
    let connector = |ca: bool| {
        let (hub_port, ce_port) = (free_port(), free_port());
        let tls = if ca { tls_section(&d) } else { String::new() };
        let file = format!("connector-{ca}.yml");
        std::fs::write(
            d.join(&file),
            format!(
                "hub:\n  listen: 127.0.0.1:{hub_port}\n  dead_letter_store: data/dead-{ca}.redb\n{tls}cloudevents:\n  listen: 127.0.0.1:{ce_port}\n"
            ),
        )
        .unwrap();
        let auth = [("basic_auth", "true"), ("secret_mount_path", &p.secrets())];
        (Proc::spawn(&["connect", "cloudevents", "--gateway", &gateway, "--config", &file], &d, &auth), ce_port)
    };

    let (trusting, ce_port) = connector(true);
    let delivered =
        eventually(Duration::from_secs(20), || async { send(ce_port, "tls.test", "over-tls").await["delivered"] == 1 })
            .await;
    assert!(delivered, "not delivered through the https:// gateway:\n{}", trusting.output());
    assert!(std::fs::read_to_string(d.join("r.log")).unwrap().contains("over-tls"));

    let (refusing, _) = connector(false);
    let refused = eventually(Duration::from_secs(15), || async {
        let out = refusing.output();
        out.contains("discovery failed") && out.to_lowercase().contains("certificate")
    })
    .await;
    assert!(refused, "an unknown CA was not refused:\n{}", refusing.output());
}
