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
async fn messages_are_delivered_with_their_headers_attributes_and_cloudevents() {
    use aws_sdk_sqs::types::MessageAttributeValue;
    let queue = unique("sbtest-orders-");
    let url = sqs_queue(&queue).await;
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("orders", &format!("sqs:{queue}"), &record, "", "");
    let p = platform(dir, &sqs_section(), stack.trim_start_matches("functions:\n")).await;
    // One message with one attribute, and the call that delivered it.
    let deliver = async |body: &str, (name, value): (&str, &str)| {
        let attribute = MessageAttributeValue::builder().data_type("String").string_value(value).build().unwrap();
        let calls = envlog(&record).len();
        let client = sqs_client();
        let sent = client.send_message().queue_url(&url).message_body(body).message_attributes(name, attribute);
        sent.send().await.unwrap();
        let done = eventually(Duration::from_secs(20), || async { envlog(&record).len() > calls }).await;
        assert!(done, "not delivered:\n{}", p.proc.output());
        envlog(&record).pop().unwrap()
    };
    let call = &deliver("plain", ("color", "blue")).await;
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

    // A structured-mode CloudEvent (docs/hub.md's binding): its attributes
    // become ce-* headers, its data the body as written.
    let body = r#"{"specversion":"1.0","id":"ev-9","source":"/shop","type":"order.paid","datacontenttype":"application/json","data":{"order": 42}}"#;
    let call = &deliver(body, ("content-type", "application/cloudevents+json")).await;
    for expected in [
        "Http_Ce_Id=ev-9",
        "Http_Ce_Type=order.paid",
        "Http_Ce_Source=/shop",
        "Http_Content_Type=application/json",
        r#"body={"order": 42}"#,
    ] {
        assert!(call.contains(expected), "missing {expected} in\n{call}");
    }
}

/// Ten messages in one batch, one of which always fails: the other nine
/// are deleted at once; the failing one comes back after the retry's delay
/// (not the queue's visibility timeout) and is dead-lettered after its
/// attempts, then deleted.
#[tokio::test]
async fn one_failure_in_a_batch_is_retried_alone_then_dead_lettered() {
    let queue = unique("sbtest-batch-");
    let url = sqs_queue(&queue).await;
    let dir = tempdir();
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

/// The value of one series on the hub's `/metrics`, e.g.
/// `switchboard_sqs_deleted_total{queue="q"}`; 0 when it is not there.
async fn metric(p: &Platform, series: &str) -> f64 {
    let text = get(&format!("{}/metrics", p.hub_url)).await.text();
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn the_source_counts_what_it_receives_deletes_and_gives_back() {
    let queue = unique("sbtest-metrics-");
    let url = sqs_queue(&queue).await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let retry = "      com.openfaas.retry.attempts: \"2\"\n      com.openfaas.retry.min_wait: 1s\n      com.openfaas.retry.max_wait: 1s\n";
    let p = platform(dir, &sqs_section(), &conform_fn("counted", &format!("sqs:{queue}"), &record, retry)).await;
    let client = sqs_client();
    for body in ["ok:1", "ok:2", "fail:3"] {
        client.send_message().queue_url(&url).message_body(body).send().await.unwrap();
    }
    let settled = eventually(Duration::from_secs(30), || async {
        sqs_settled(&url).await == Some(true)
            && metric(&p, &format!("switchboard_sqs_deleted_total{{queue=\"{queue}\"}}")).await == 3.0
    })
    .await;
    assert!(settled, "not settled: {:?}\n{}", calls(&record), p.proc.output());
    // fail:3 failed once (503), was given back with the retry's delay, and received again.
    assert_eq!(metric(&p, &format!("switchboard_sqs_received_total{{queue=\"{queue}\"}}")).await, 4.0);
    let retry_ok =
        format!("switchboard_sqs_visibility_changes_total{{queue=\"{queue}\",reason=\"retry\",result=\"ok\"}}");
    assert_eq!(metric(&p, &retry_ok).await, 1.0);
    assert_eq!(metric(&p, &format!("switchboard_sqs_delete_failures_total{{queue=\"{queue}\"}}")).await, 0.0);
    let text = get(&format!("{}/metrics", p.hub_url)).await.text();
    for series in [
        format!("switchboard_sqs_messages{{queue=\"{queue}\",state=\"visible\"}}"),
        format!("switchboard_sqs_messages{{queue=\"{queue}\",state=\"in_flight\"}}"),
        format!("switchboard_sqs_message_age_seconds_count{{queue=\"{queue}\"}} 4"),
    ] {
        assert!(text.contains(&series), "no {series} in\n{text}");
    }
}

/// A FIFO queue: each group's messages one after another in order, the
/// two groups alongside; a message that fails once is retried before its
/// group goes on.
#[tokio::test]
async fn fifo_groups_are_delivered_in_order_and_alongside_each_other() {
    let queue = unique("sbtest-fifo-") + ".fifo";
    let url = sqs_queue(&queue).await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let p = platform(dir, &sqs_section(), &conform_fn("ordered", &format!("sqs:{queue}"), &record, "")).await;
    // a1 fails at its first call (503).
    let body = |g: &str, i: usize| if (g, i) == ("a", 1) { "fail:a1".to_string() } else { format!("sleep:0.4:{g}{i}") };
    let entries: Vec<_> = (0..4)
        .flat_map(|i| ["a", "b"].map(|g| (g, body(g, i))))
        .enumerate()
        .map(|(n, (group, body))| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(n.to_string())
                .message_group_id(group)
                .message_deduplication_id(&body)
                .message_body(body)
                .build()
                .unwrap()
        })
        .collect();
    sqs_client().send_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.unwrap();
    let done = eventually(Duration::from_secs(40), || async { calls(&record).len() >= 9 }).await;
    assert!(done, "not all delivered: {:?}\n{}", calls(&record), p.proc.output());
    // A group's calls by arrival: (body, arrival time).
    let group = |g: &str| -> Vec<(String, f64)> {
        let mut of: Vec<_> = calls(&record)
            .into_iter()
            .map(|c| (c["body"].as_str().unwrap().to_string(), c["t"].as_f64().unwrap()))
            .filter(|(body, _)| body[body.len() - 2..].starts_with(g))
            .collect();
        of.sort_by(|x, y| x.1.total_cmp(&y.1));
        of
    };
    let (a, b) = (group("a"), group("b"));
    let bodies = |calls: &[(String, f64)]| calls.iter().map(|(body, _)| body.clone()).collect::<Vec<_>>();
    let expected_a = ["sleep:0.4:a0", "fail:a1", "fail:a1", "sleep:0.4:a2", "sleep:0.4:a3"];
    assert_eq!(bodies(&a), expected_a, "group a out of order (a1 is called twice, before a2)");
    assert_eq!(bodies(&b), (0..4).map(|i| format!("sleep:0.4:b{i}")).collect::<Vec<_>>(), "group b out of order");
    for calls in [&a, &b] {
        for w in calls.windows(2).filter(|w| w[0].0.starts_with("sleep")) {
            assert!(w[1].1 - w[0].1 >= 0.35, "a call began before the one before it ended: {calls:?}");
        }
    }
    let (a_span, b_span) = ((a[0].1, a[4].1), (b[0].1, b[3].1));
    assert!(a_span.0 < b_span.1 && b_span.0 < a_span.1, "the groups ran one after the other: {a:?} {b:?}");
}

#[tokio::test]
async fn an_sns_notification_is_unwrapped() {
    use aws_sdk_sns::types::MessageAttributeValue;
    let queue = unique("sbtest-sns-");
    let url = sqs_queue(&queue).await;
    let sns = sns_client();
    let topic = sns.create_topic().name(unique("sbtest-topic-")).send().await.unwrap().topic_arn.unwrap();
    sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(sqs_arn(&url).await).send().await.unwrap();
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("notified", &format!("sqs:{queue}"), &record, "", "");
    let p = platform(dir, &sqs_section(), stack.trim_start_matches("functions:\n")).await;
    let attr = MessageAttributeValue::builder().data_type("String").string_value("acme").build().unwrap();
    let published = sns
        .publish()
        .topic_arn(&topic)
        .subject("new order")
        .message(r#"{"order":42}"#)
        .message_attributes("tenant", attr)
        .send()
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(20), || async { envlog(&record).len() == 1 }).await;
    assert!(done, "not delivered:\n{}", p.proc.output());
    let call = &envlog(&record)[0];
    for expected in [
        format!("Http_X_Sns_Topic_Arn={topic}"),
        format!("Http_X_Sns_Message_Id={}", published.message_id.unwrap()),
        "Http_X_Sns_Subject=new order".into(),
        "Http_X_Sns_Attr_Tenant=acme".into(),
        r#"body={"order":42}"#.into(),
    ] {
        assert!(call.contains(&expected), "missing {expected} in\n{call}");
    }
}

/// An upload to a bucket notifying the queue: S3's test event (sent when
/// the notification is configured) is deleted undelivered; the upload's
/// event reaches the function named by bucket, key and event.
#[tokio::test]
async fn s3_notifications_are_named_and_the_test_event_is_skipped() {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    let queue = unique("sbtest-s3-");
    let url = sqs_queue(&queue).await;
    let bucket = unique("sbtest-bucket-");
    let s3 = s3_client();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let notify =
        QueueConfiguration::builder().queue_arn(sqs_arn(&url).await).events(Event::S3ObjectCreated).build().unwrap();
    let config = NotificationConfiguration::builder().queue_configurations(notify).build();
    s3.put_bucket_notification_configuration().bucket(&bucket).notification_configuration(config).send().await.unwrap();
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("thumbs", &format!("sqs:{queue}"), &record, "", "");
    let p = platform(dir, &sqs_section(), stack.trim_start_matches("functions:\n")).await;
    s3.put_object().bucket(&bucket).key("cats/tom.png").body(b"not really a png".to_vec().into()).send().await.unwrap();
    let done = eventually(Duration::from_secs(20), || async {
        envlog(&record).len() == 1 && sqs_settled(&url).await == Some(true)
    })
    .await;
    assert!(done, "calls: {:?}\n{}", envlog(&record), p.proc.output());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = envlog(&record);
    assert_eq!(calls.len(), 1, "the test event was delivered too: {calls:?}");
    for expected in [
        format!("Http_X_S3_Bucket={bucket}"),
        // As S3 sends it: URL-encoded.
        "Http_X_S3_Key=cats%2Ftom.png".into(),
        "Http_X_S3_Event=ObjectCreated:Put".into(),
        "Http_Content_Type=application/json".into(),
        r#""eventSource": "aws:s3""#.into(),
    ] {
        assert!(calls[0].contains(&expected), "missing {expected} in\n{}", calls[0]);
    }
}

/// A function deployed while the platform runs, subscribed to a queue that
/// does not exist yet: once the queue is created it is consumed.
#[tokio::test]
async fn a_queue_created_and_subscribed_at_run_time_is_consumed() {
    let queue = unique("sbtest-late-");
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let p =
        Platform::start_in(dir, &config(&format!("cron:\n  enabled: false\n{}", sqs_section())), NO_STACK, &[]).await;
    let deploy = serde_json::json!({
        "service": "late", "image": "local", "envProcess": fixture("envlog.sh"),
        "envVars": {"RECORD_FILE": record.display().to_string()},
        "annotations": {"topic": format!("sqs:{queue}")},
    });
    let r = p.api("POST", "/system/functions", &deploy.to_string()).await;
    assert!(r.status < 300, "deploy: {} {}", r.status, r.text());
    p.wait_ready(&["late"]).await;
    // Subscribed before the queue exists: looked up again until it does.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let url = sqs_queue(&queue).await;
    sqs_client().send_message().queue_url(&url).message_body("first").send().await.unwrap();
    let done = eventually(Duration::from_secs(30), || async { envlog(&record).len() == 1 }).await;
    assert!(done, "the new queue was never consumed:\n{}", p.proc.output());
    assert!(envlog(&record)[0].contains("body=first"));
}

/// `sqs.redrive: queue`: the hub never dead-letters; failures go back to
/// the queue, whose redrive policy moves the message after maxReceiveCount.
#[tokio::test]
async fn with_redrive_queue_the_queues_policy_moves_what_fails() {
    let queue = unique("sbtest-redrive-");
    let dlq = sqs_queue(&format!("{queue}-dlq")).await;
    let url = sqs_queue_with_dlq(&queue, &dlq, 3).await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    // Fewer attempts than the queue allows receives: the hub would
    // dead-letter after two calls, the queue decides after three.
    let retry = "      com.openfaas.retry.attempts: \"2\"\n      com.openfaas.retry.min_wait: 1s\n      com.openfaas.retry.max_wait: 1s\n";
    let sqs = format!("{}  redrive: queue\n", sqs_section());
    let p = platform(dir, &sqs, &conform_fn("refuses", &format!("sqs:{queue}"), &record, retry)).await;
    sqs_client().send_message().queue_url(&url).message_body("poison:1").send().await.unwrap();
    let moved = eventually(Duration::from_secs(30), || async {
        let got = sqs_client().receive_message().queue_url(&dlq).wait_time_seconds(1).send().await.unwrap();
        got.messages.unwrap_or_default().iter().any(|m| m.body() == Some("poison:1"))
    })
    .await;
    assert!(moved, "never in the queue's dead-letter queue: {:?}\n{}", calls(&record), p.proc.output());
    assert_eq!(calls_of(&record, "poison:1").len(), 3, "one call per receive the policy allows");
    let letters = std::fs::read_to_string(p.dir.path().join("data/dead-letters.jsonl")).unwrap_or_default();
    assert!(!letters.contains("poison:1"), "the hub dead-lettered it too: {letters}");
    assert_eq!(sqs_settled(&url).await, Some(true));
}

/// Each mistake stops the start, naming its key.
#[tokio::test]
async fn bad_configs_fail_at_start_naming_the_key() {
    let endpoint = format!("  endpoint_url: {SQS}\n");
    for (section, key) in [
        (format!("  region: us-east-1\n{endpoint}  batch_size: 11\n"), "sqs.batch_size 11: expected 1 to 10"),
        (endpoint.clone(), "sqs.region: no region"),
        (format!("  region: us-east-1\n{endpoint}  queues: [\"https://sqs.example/orders\"]\n"), "sqs.queues"),
        (format!("  region: us-east-1\n{endpoint}  redrive: never\n"), "sqs.redrive"),
    ] {
        let cfg = config(&format!("cron:\n  enabled: false\nsqs:\n  enabled: true\n{section}"));
        let dir = tempdir();
        std::fs::write(dir.path().join("stack.yml"), NO_STACK).unwrap();
        let cfg = cfg.replace("STACK", "stack.yml").replace("HUB_PORT", &free_port().to_string());
        std::fs::write(dir.path().join("switchboard.yml"), cfg.replace("CE_PORT", &free_port().to_string())).unwrap();
        let port = free_port().to_string();
        let mut proc = Proc::spawn(&["up", "--config", "switchboard.yml", "--port", &port], dir.path(), &[]);
        let code = proc.wait_exit(Duration::from_secs(20));
        assert!(matches!(code, Some(c) if c != 0), "started with {section:?}: {}", proc.output());
        assert!(proc.output().contains(key), "no {key:?} in:\n{}", proc.output());
    }
}
