//! `switchboard connect` beside a separate gateway that goes away and comes back.

mod common;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn the_connector_survives_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
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
    let connector =
        Proc::spawn(&["connect", "cloudevents", "--gateway", &gateway_url, "--config", "connector.yml"], d, &[]);

    let send = |id: &'static str| {
        let url = format!("http://127.0.0.1:{ce_port}/");
        async move {
            try_call(
                "POST",
                &url,
                &[("ce-id", id), ("ce-source", "/t"), ("ce-type", "restart.test"), ("ce-specversion", "1.0")],
                id,
            )
            .await
            .map(|r| r.json())
            .unwrap_or_default()
        }
    };
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
    assert!(d.join("data/dead-letters.jsonl").exists());
}
