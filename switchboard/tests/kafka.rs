//! The Kafka source against a real Kafka-protocol broker (noida-db).

mod common;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn records_are_delivered_with_their_headers_and_cloudevents() {
    let topic = unique("sbtest.orders.");
    kafka_topic(&topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("orders", &topic, &record, "", "");
    // One at a time: envlog.sh's records of concurrent calls would interleave.
    let cfg = config(&format!("{}  ordering: partition\n", kafka_section(&unique("g"))));
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    p.wait_ready(&["orders"]).await;
    let producer = kafka_producer();
    kafka_send(&producer, &topic, Some("customer-7"), &[("color", "blue")], "plain").await;
    let ce = [("ce_specversion", "1.0"), ("ce_id", "ev-1"), ("ce_source", "/shop"), ("ce_type", "order.created")];
    kafka_send(&producer, &topic, Some("customer-8"), &ce, "binary").await;
    let structured = r#"{"specversion":"1.0","id":"ev-2","source":"/shop","type":"order.paid","datacontenttype":"application/json","data":{"total": 42}}"#;
    kafka_send(&producer, &topic, None, &[("content-type", "application/cloudevents+json")], structured).await;

    let all = eventually(Duration::from_secs(30), || async { envlog(&record).len() == 3 }).await;
    assert!(all, "not delivered: {:?}\n{}", envlog(&record), p.proc.output());
    let calls = envlog(&record);
    let find = |body: &str| calls.iter().find(|c| c.contains(&format!("body={body}"))).cloned().unwrap_or_default();
    let plain = find("plain");
    for expected in [
        format!("Http_X_Topic={topic}"),
        "Http_X_Kafka_Partition=0".into(),
        "Http_X_Kafka_Offset=0".into(),
        "Http_X_Kafka_Key=customer-7".into(),
        "Http_X_Kafka_Color=blue".into(),
        "Http_X_Connector=switchboard/kafka".into(),
    ] {
        assert!(plain.contains(&expected), "missing {expected} in\n{plain}");
    }
    assert!(plain.contains("Http_X_Kafka_Timestamp="), "{plain}");
    let binary = find("binary");
    for expected in ["Http_Ce_Id=ev-1", "Http_Ce_Type=order.created", "Http_Ce_Partitionkey=customer-8"] {
        assert!(binary.contains(expected), "missing {expected} in\n{binary}");
    }
    let structured = find(r#"{"total": 42}"#);
    for expected in ["Http_Ce_Id=ev-2", "Http_Ce_Type=order.paid", "Http_Content_Type=application/json"] {
        assert!(structured.contains(expected), "missing {expected} in\n{structured}");
    }
}

#[tokio::test]
async fn a_bad_property_fails_at_start_naming_it() {
    let cfg = config(&format!("{}    fetch.wait.max.mss: \"100\"\n", kafka_section("g")));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stack.yml"), NO_STACK).unwrap();
    let cfg = cfg.replace("STACK", "stack.yml").replace("HUB_PORT", &free_port().to_string());
    std::fs::write(dir.path().join("switchboard.yml"), cfg.replace("CE_PORT", &free_port().to_string())).unwrap();
    let mut proc = Proc::spawn(&["up", "--config", "switchboard.yml"], dir.path(), &[]);
    let code = proc.wait_exit(Duration::from_secs(20));
    assert!(matches!(code, Some(c) if c != 0), "started with a bad property: {}", proc.output());
    assert!(proc.output().contains("fetch.wait.max.mss"), "{}", proc.output());
}
