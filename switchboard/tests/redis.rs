//! The Redis source against a real Redis: streams (at least once) and pub/sub.

mod common;
use common::*;
use redis::AsyncCommands;
use std::time::Duration;

async fn redis_con(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    match client.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => panic!("Redis is not reachable at 127.0.0.1:{port} ({e}); start it with scripts/services"),
    }
}

fn redis_cfg(port: u16, consumer: &str, extra: &str) -> String {
    config(&format!(
        "redis:\n  enabled: true\n  url: redis://127.0.0.1:{port}\n  group: sbtest\n  consumer: {consumer}\n  start: \"0\"\n  claim_idle: 1s\n  block: 200ms\n{extra}"
    ))
}

/// Whether every entry of `stream` read by the group gets acked in time.
async fn all_acked(con: &redis::aio::MultiplexedConnection, stream: &str) -> bool {
    eventually(Duration::from_secs(10), || {
        let mut con = con.clone();
        async move {
            let reply: redis::streams::StreamPendingReply = con.xpending(stream, "sbtest").await.unwrap();
            reply.count() == 0
        }
    })
    .await
}

#[tokio::test]
async fn stream_entries_are_delivered_with_headers_and_acked() {
    let mut con = redis_con(6379).await;
    let stream = unique("sbtest:orders:");
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("orders", &stream, &record, "", "");
    let p = Platform::start_in(dir, &redis_cfg(6379, "c1", ""), &stack, &[]).await;
    p.wait_ready(&["orders"]).await;
    let id: String = con.xadd(&stream, "*", &[("payload", "hello"), ("color", "blue")]).await.unwrap();
    let ok = eventually(Duration::from_secs(15), || async { envlog(&record).len() == 1 }).await;
    assert!(ok, "not delivered:\n{}", p.proc.output());
    let req = &envlog(&record)[0];
    for expected in [
        format!("Http_X_Redis_Stream={stream}"),
        format!("Http_X_Redis_Id={id}"),
        "Http_X_Redis_Field_Color=blue".into(),
        format!("Http_X_Topic={stream}"),
        "Http_X_Connector=switchboard/redis".into(),
        "body=hello".into(),
    ] {
        assert!(req.contains(&expected), "missing {expected} in\n{req}");
    }
    assert!(all_acked(&con, &stream).await, "entry not acked");
}

#[tokio::test]
async fn entries_handed_out_more_often_than_the_retry_policy_allows_are_dead_lettered_to_a_stream() {
    let mut con = redis_con(6379).await;
    let stream = unique("sbtest:poison:");
    let dead = unique("sbtest:dead:");
    let dir = tempdir();
    let record = dir.path().join("r.log");
    // A previous consumer "c-old" read the entry and died without acking it.
    let _: () = con.xgroup_create_mkstream(&stream, "sbtest", "0").await.unwrap();
    let _: String = con.xadd(&stream, "*", &[("payload", "poison")]).await.unwrap();
    let opts = redis::streams::StreamReadOptions::default().group("sbtest", "c-old").count(10);
    let _: redis::streams::StreamReadReply = con.xread_options(&[&stream], &[">"], &opts).await.unwrap();

    // Claiming it is its second delivery; the function allows one attempt.
    let stack = envlog_stack("victim", &stream, &record, "", "      com.openfaas.retry.attempts: \"1\"\n");
    let cfg = redis_cfg(6379, &unique("c"), &format!("  dead_letter_stream: {dead}\n"));
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    let lettered = eventually(Duration::from_secs(20), || {
        let (mut c, d) = (con.clone(), dead.clone());
        async move {
            let n: usize = c.xlen(&d).await.unwrap_or(0);
            n == 1
        }
    })
    .await;
    assert!(lettered, "no dead letter:\n{}", p.proc.output());
    let letters: redis::streams::StreamRangeReply = con.xrange_all(&dead).await.unwrap();
    let letter: String = redis::from_redis_value(letters.ids[0].map.get("letter").unwrap()).unwrap();
    let letter: serde_json::Value = serde_json::from_str(&letter).unwrap();
    assert!(letter["error"].as_str().unwrap().contains("delivered 2 times without settling"), "{letter}");
    assert_eq!(letter["event"]["payload"], "poison");
    assert_eq!(letter["topic"], stream.as_str());
    assert!(envlog(&record).is_empty(), "a poison entry must not be invoked again");
    assert!(all_acked(&con, &stream).await, "dead-lettered entry not acked");
}

#[tokio::test]
async fn reconnects_after_the_broker_restarts() {
    let port = free_port();
    let mut broker = Broker::start(
        "redis-server",
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .map(String::from)
            .to_vec(),
        port,
    );
    let stream = unique("sbtest:restart:");
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("r", &stream, &record, "", "");
    let p = Platform::start_in(dir, &redis_cfg(port, "c1", ""), &stack, &[]).await;
    p.wait_ready(&["r"]).await;
    let mut con = redis_con(port).await;
    let delivered = eventually(Duration::from_secs(15), || {
        let mut c = con.clone();
        let s = stream.clone();
        let rec = record.clone();
        async move {
            if envlog(&rec).is_empty() {
                let _: redis::RedisResult<String> = c.xadd(&s, "*", &[("payload", "before")]).await;
            }
            !envlog(&rec).is_empty()
        }
    })
    .await;
    assert!(delivered, "not delivered before the restart:\n{}", p.proc.output());
    assert!(link_reported(&p, "redis", true).await, "not reported connected");

    broker.kill();
    assert!(link_reported(&p, "redis", false).await, "the lost connection is not reported");
    broker.restart();
    con = redis_con(port).await;
    let after = eventually(Duration::from_secs(30), || {
        let mut c = con.clone();
        let s = stream.clone();
        let rec = record.clone();
        async move {
            let _: redis::RedisResult<String> = c.xadd(&s, "*", &[("payload", "after")]).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            envlog(&rec).iter().any(|b| b.contains("body=after"))
        }
    })
    .await;
    assert!(after, "not delivered after the broker restarted:\n{}", p.proc.output());
    assert!(p.proc.output().contains("reconnecting"), "the reconnect is not logged");
    assert!(link_reported(&p, "redis", true).await, "not reported connected again");
}

#[tokio::test]
async fn pubsub_channels_and_patterns() {
    let mut con = redis_con(6379).await;
    let channel = unique("sbtest.ps.");
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("ps", &format!("{channel}.*"), &record, "", "");
    let cfg = config("redis:\n  enabled: true\n  mode: pubsub\n");
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    p.wait_ready(&["ps"]).await;
    let got = eventually(Duration::from_secs(15), || {
        let mut c = con.clone();
        let ch = format!("{channel}.news");
        let rec = record.clone();
        async move {
            let _: redis::RedisResult<i64> = c.publish(&ch, "extra").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            !envlog(&rec).is_empty()
        }
    })
    .await;
    assert!(got, "no pub/sub delivery:\n{}", p.proc.output());
    let req = &envlog(&record)[0];
    assert!(req.contains(&format!("Http_X_Redis_Channel={channel}.news")) && req.contains("body=extra"), "{req}");
    assert!(p.proc.output().contains("at-most-once"), "the at-most-once warning is missing");
    let _: () = con.set("unused", 1).await.unwrap();
}

#[tokio::test]
async fn malformed_config_fails_at_start() {
    let dir = tempdir();
    for (yaml, expected) in [
        ("redis:\n  url: http://127.0.0.1:6379\n", "redis.url"),
        ("redis:\n  start: latest\n", "redis.start"),
        ("redis:\n  tls:\n    ca: ca.pem\n", "must be rediss://"),
        ("redis:\n  url: rediss://127.0.0.1:6379\n  tls:\n    ca: missing.pem\n", "redis.tls.ca missing.pem"),
        ("mqtt:\n  url: mqtt://127.0.0.1:1883\n  qos: 3\n", "mqtt.qos"),
        ("mqtt:\n  url: ftp://127.0.0.1\n", "mqtt.url"),
        ("mqtt:\n  share_group: a/b\n", "mqtt.share_group"),
        ("mqtt:\n  url: mqtts://127.0.0.1\n  tls:\n    cert: c.pem\n", "mqtt.tls.ca is not set"),
        ("nats:\n  tls:\n    cert: c.pem\n", "nats.tls.cert and nats.tls.key go together"),
    ] {
        std::fs::write(dir.path().join("bad.yml"), yaml).unwrap();
        let source = yaml.split(':').next().unwrap();
        let mut p = Proc::spawn(
            &["connect", source, "--gateway", "http://127.0.0.1:9", "--config", "bad.yml"],
            dir.path(),
            &[],
        );
        assert_ne!(p.wait_exit(Duration::from_secs(10)), Some(0), "{yaml}");
        assert!(p.output().contains(expected), "{expected}: {}", p.output());
    }
}

#[tokio::test]
async fn rediss_with_a_private_ca_and_a_client_certificate() {
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    certificates(&d);
    let pem = |name: &str| d.join(name).display().to_string();
    let port = free_port();
    let _broker = Broker::start(
        "redis-server",
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &pem("server.pem"),
            "--tls-key-file",
            &pem("server-key.pem"),
            "--tls-ca-cert-file",
            &pem("ca.pem"),
            "--tls-auth-clients",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .map(String::from)
        .to_vec(),
        port,
    );
    let tls = redis::TlsCertificates {
        client_tls: Some(redis::ClientTlsConfig {
            client_cert: std::fs::read(d.join("client.pem")).unwrap(),
            client_key: std::fs::read(d.join("client-key.pem")).unwrap(),
        }),
        root_cert: Some(std::fs::read(d.join("ca.pem")).unwrap()),
    };
    let url = format!("rediss://127.0.0.1:{port}");
    let client = redis::Client::build_with_tls(url.as_str(), tls).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.expect("test client over TLS");

    let stream = unique("sbtest:tls:");
    let record = d.join("r.log");
    let cfg = config(&format!(
        "redis:\n  enabled: true\n  url: {url}\n  group: sbtest\n  start: \"0\"\n  block: 200ms\n{}",
        tls_section(&d)
    ));
    let p = Platform::start_in(dir, &cfg, &envlog_stack("tls", &stream, &record, "", ""), &[]).await;
    p.wait_ready(&["tls"]).await;
    let _: String = con.xadd(&stream, "*", &[("payload", "over tls")]).await.unwrap();
    let ok = eventually(Duration::from_secs(15), || async { envlog(&record).len() == 1 }).await;
    assert!(ok, "not delivered over rediss://:\n{}", p.proc.output());
    assert!(envlog(&record)[0].contains("body=over tls"), "{:?}", envlog(&record));
    assert!(all_acked(&con, &stream).await, "entry not acked");
}

/// A stream is created only for a topic qualified `redis:`; a plain topic
/// (which any source may serve) is read once its stream exists, and never
/// leaves an empty stream behind.
#[tokio::test]
async fn streams_are_created_only_for_topics_that_name_redis() {
    let mut con = redis_con(6379).await;
    let (own, plain) = (unique("sbtest:own:"), unique("sbtest:plain:"));
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("mixed", &format!("redis:{own}, {plain}"), &record, "", "");
    let p = Platform::start_in(dir, &redis_cfg(6379, &unique("c"), ""), &stack, &[]).await;
    p.wait_ready(&["mixed"]).await;
    let created = eventually(Duration::from_secs(10), || {
        let mut con = con.clone();
        let own = own.clone();
        async move { con.exists::<_, bool>(&own).await.unwrap() }
    })
    .await;
    assert!(created, "no stream for the topic qualified redis:\n{}", p.proc.output());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!con.exists::<_, bool>(&plain).await.unwrap(), "an empty stream was made for a plain topic");

    let _: String = con.xadd(&own, "*", &[("payload", "mine")]).await.unwrap();
    let _: String = con.xadd(&plain, "*", &[("payload", "anyone's")]).await.unwrap();
    let both = eventually(Duration::from_secs(15), || async { envlog(&record).len() == 2 }).await;
    assert!(both, "not both delivered: {:?}\n{}", envlog(&record), p.proc.output());
    let calls = envlog(&record).join("\n");
    assert!(calls.contains(&format!("Http_X_Topic={own}")), "the qualifier is not part of the topic:\n{calls}");
    assert!(calls.contains("body=anyone's"), "{calls}");
    let _: () = con.del(&[&own, &plain]).await.unwrap();
}
