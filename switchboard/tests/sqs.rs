//! The SQS source against a real SQS API (moto's server).

mod common;
use common::*;
use std::time::Duration;

/// The platform with the SQS source (its `sqs:` section) and `function`
/// (one stack.yml entry), ready: a message received before the function's
/// replica is up would get the gateway's 503 and come back.
async fn platform(dir: tempfile::TempDir, sqs: &str, function: &str) -> Platform {
    let cfg = config(&format!("cron:\n  enabled: false\n{sqs}"));
    let p = Platform::start_in(dir, &cfg, &format!("functions:\n{function}"), &[]).await;
    let name = function.trim_start().split(':').next().unwrap_or_default();
    p.wait_ready(&[name]).await;
    let ready =
        eventually(Duration::from_secs(20), || async { get(&format!("{}/readyz", p.hub_url)).await.status == 200 })
            .await;
    assert!(ready, "the hub never became ready:\n{}", p.proc.output());
    p
}

#[tokio::test]
async fn messages_are_delivered_with_their_headers_and_attributes() {
    use aws_sdk_sqs::types::MessageAttributeValue;
    let queue = unique("sbtest-orders-");
    let url = sqs_queue(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("orders", &format!("sqs:{queue}"), &record, "", "");
    let p = platform(dir, &sqs_section(), stack.trim_start_matches("functions:\n")).await;
    let attr = |s: &str| MessageAttributeValue::builder().data_type("String").string_value(s).build().unwrap();
    sqs_client()
        .send_message()
        .queue_url(&url)
        .message_body("plain")
        .message_attributes("color", attr("blue"))
        .send()
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(20), || async { envlog(&record).len() == 1 }).await;
    assert!(done, "not delivered:\n{}", p.proc.output());
    let call = &envlog(&record)[0];
    for expected in [
        format!("Http_X_Topic={queue}"),
        format!("Http_X_Sqs_Queue_Url={url}"),
        "Http_X_Sqs_Receive_Count=1".into(),
        "Http_X_Sqs_Attr_Color=blue".into(),
        "Http_X_Connector=switchboard/sqs".into(),
        "body=plain".into(),
    ] {
        assert!(call.contains(&expected), "missing {expected} in\n{call}");
    }
    assert!(call.contains("Http_X_Sqs_Message_Id="), "{call}");
    assert!(call.contains("Http_X_Sqs_Sent_Timestamp="), "{call}");
}

/// Ten messages in one batch, one of which always fails: the other nine
/// are deleted at once; the failing one comes back after the retry's delay
/// (not the queue's visibility timeout) and is dead-lettered after its
/// attempts, then deleted.
#[tokio::test]
async fn one_failure_in_a_batch_is_retried_alone_then_dead_lettered() {
    let queue = unique("sbtest-batch-");
    let url = sqs_queue(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.jsonl");
    let retry = "      com.openfaas.retry.attempts: \"3\"\n      com.openfaas.retry.min_wait: 1s\n      com.openfaas.retry.max_wait: 1s\n";
    // A visibility timeout far longer than the retry's delay.
    let sqs = sqs_section().replace("visibility_timeout: 2s", "visibility_timeout: 10s");
    let p = platform(dir, &sqs, &conform_fn("picky", &format!("sqs:{queue}"), &record, retry)).await;
    let client = sqs_client();
    let entries: Vec<_> = (0..10)
        .map(|i| {
            let body = if i == 3 { "poison:3".to_string() } else { format!("ok:{i}") };
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .build()
                .unwrap()
        })
        .collect();
    client.send_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.unwrap();
    let lettered = eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(p.dir.path().join("data/dead-letters.jsonl")).is_ok_and(|l| l.contains("poison:3"))
    })
    .await;
    assert!(lettered, "not dead-lettered: {:?}\n{}", calls(&record), p.proc.output());
    for i in (0..10).filter(|i| *i != 3) {
        assert_eq!(calls_of(&record, &format!("ok:{i}")).len(), 1, "{:?}", calls(&record));
    }
    let tries = calls_of(&record, "poison:3");
    assert_eq!(tries.len(), 3, "{tries:?}");
    let gap = tries[1]["t"].as_f64().unwrap() - tries[0]["t"].as_f64().unwrap();
    assert!(gap < 5.0, "redelivered after {gap:.2} s: the visibility timeout (10 s), not the retry's delay (1 s)");
    let empty = eventually(Duration::from_secs(10), || async { sqs_settled(&url).await == Some(true) }).await;
    assert!(empty, "messages left in the queue after settling");
}
