//! Redis and MQTT end to end through the hub, each beside the broker's own
//! consume rate measured with a plain client in the same run:
//!  Redis: N entries in a stream; a raw XREADGROUP+XACK loop, then
//!         `switchboard connect redis` (group from 0) → gateway → watchdog → upstream.
//!  MQTT:  a burst of N QoS 1 messages into a Mosquitto of the bench's own
//!         (queueing 1,000,000 per client); a raw subscriber, then
//!         `switchboard connect mqtt` over MQTT 5 and 3.1.1, with what never
//!         arrived counted as lost.
//!  Kafka: N keyed records on 4 partitions; a raw rdkafka consumer (its own
//!         group, from the start, committing at the end), then the hub in
//!         a group of its own each time: as a sidecar (`switchboard connect
//!         kafka`) and in-process (`switchboard up`), per-key ordering, and
//!         in-process without ordering and in partition order.
//!  SQS:   N messages in a queue, refilled before each reader; a raw
//!         receive (10) + DeleteMessageBatch loop, then `switchboard connect
//!         sqs`, with one receiver and with four (the raw client as many loops).
//! Needs Redis on 127.0.0.1:6379, the `mosquitto` binary, a Kafka
//! broker on 127.0.0.1:9092 and moto on 127.0.0.1:4566 (scripts/services
//! starts them).
//! Run with `bench/run brokers`.

use bench::{Chain, Proc, free_port, function_chain, metric, static_function, wait_ok};
use clap::Parser;
use redis::AsyncCommands;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bin: bench::Binaries,
    /// Redis stream entries.
    #[arg(long, default_value_t = 20_000)]
    redis: usize,
    /// MQTT messages in one burst.
    #[arg(long, default_value_t = 20_000)]
    mqtt: usize,
    /// Kafka records.
    #[arg(long, default_value_t = 20_000)]
    kafka: usize,
    /// SQS messages per run. moto's receive slows down with the queue's
    /// depth (14 messages/s at 1000 deep, 26 at 500), so keep it small.
    #[arg(long, default_value_t = 500)]
    sqs: usize,
}

const KAFKA: &str = "127.0.0.1:9092";
const SQS: &str = "http://127.0.0.1:4566";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let id = free_port()?;
    let (stream, topic, kafka, queue) = (
        format!("brokerbench:{id}"),
        format!("brokerbench/{id}"),
        format!("brokerbench.{id}"),
        format!("brokerbench-{id}"),
    );
    let dir = std::env::temp_dir().join(format!("switchboard-brokers-bench-{id}"));
    std::fs::create_dir_all(&dir)?;
    let annotations = [("topic", format!("{stream},{topic},kafka:{kafka},sqs:{queue}"))];
    let chain = function_chain(&a.bin.switchboard, &a.bin.upstream, &dir, &annotations).await?;
    let gateway = chain.gateway.clone();
    println!(
        "| source | events | raw client events/s | through the hub events/s | hub / raw | lost |\n|---|---:|---:|---:|---:|---:|"
    );

    // Redis: fill the stream once; each reader has its own group from 0.
    let mut con = redis::Client::open("redis://127.0.0.1:6379")?.get_multiplexed_async_connection().await?;
    let mut pipe = redis::pipe();
    for i in 0..a.redis {
        pipe.xadd(&stream, "*", &[("payload", format!("e{i}"))]).ignore();
        if pipe.cmd_iter().count() >= 1000 {
            let _: () = pipe.query_async(&mut con).await?;
            pipe = redis::pipe();
        }
    }
    let _: () = pipe.query_async(&mut con).await?;
    let _: () = con.xgroup_create(&stream, "raw", "0").await?;
    let started = Instant::now();
    let mut read = 0;
    let opts = redis::streams::StreamReadOptions::default().group("raw", "raw-1").count(1000);
    while read < a.redis {
        let reply: redis::streams::StreamReadReply = con.xread_options(&[&stream], &[">"], &opts).await?;
        let ids: Vec<String> = reply.keys.into_iter().flat_map(|k| k.ids).map(|e| e.id).collect();
        read += ids.len();
        let _: i64 = con.xack(&stream, "raw", &ids).await?;
    }
    let raw = a.redis as f64 / started.elapsed().as_secs_f64();
    let hub_port = free_port()?;
    let cfg = dir.join("redis.yml");
    std::fs::write(
        &cfg,
        format!(
            "hub:\n  listen: 127.0.0.1:{hub_port}\n  dead_letter_store: {}/dead-{hub_port}.redb\nredis:\n  group: hub\n  consumer: hub-1\n  start: \"0\"\n",
            dir.display()
        ),
    )?;
    let started = Instant::now();
    let hub = Proc::start(
        &a.bin.switchboard,
        &["connect", "redis", "--gateway", &gateway, "--config", &cfg.display().to_string()],
        &[],
    )?;
    let hub_url = format!("http://127.0.0.1:{hub_port}");
    wait_ok(&format!("{hub_url}/healthz")).await?;
    let lost = wait_delivered(&hub_url, a.redis, started).await?.lost;
    let through = a.redis as f64 / started.elapsed().as_secs_f64();
    println!(
        "| Redis stream (XREADGROUP, XACK) | {} | {raw:.0} | {through:.0} | {:.2} | {lost} |",
        a.redis,
        through / raw
    );
    drop(hub);
    let _: () = con.del(&stream).await?;

    // MQTT: one burst, QoS 1 both ways; the raw subscriber acks automatically.
    let broker = mosquitto(&dir)?;
    let raw = mqtt_raw(broker.port, &topic, a.mqtt).await?;
    for version in [5, 3] {
        let hub_port = free_port()?;
        let cfg = dir.join("mqtt.yml");
        std::fs::write(
            &cfg,
            format!(
                "hub:\n  listen: 127.0.0.1:{hub_port}\n  dead_letter_store: {}/dead-{hub_port}.redb\nmqtt:\n  url: mqtt://127.0.0.1:{}\n  client_id: bench-hub-{id}-{version}\n  clean_session: true\n  version: {version}\n",
                dir.display(),
                broker.port
            ),
        )?;
        let hub = Proc::start(
            &a.bin.switchboard,
            &["connect", "mqtt", "--gateway", &gateway, "--config", &cfg.display().to_string()],
            &[],
        )?;
        let hub_url = format!("http://127.0.0.1:{hub_port}");
        wait_ok(&format!("{hub_url}/readyz")).await?;
        tokio::time::sleep(Duration::from_secs(1)).await; // the subscription
        let started = Instant::now();
        let publisher = publish(broker.port, &topic, a.mqtt, "bench-pub-hub");
        let (published, delivered) = tokio::join!(publisher, wait_delivered(&hub_url, a.mqtt, started));
        published?;
        let lost = delivered?.lost;
        let through = a.mqtt as f64 / started.elapsed().as_secs_f64();
        let name = if version == 5 { "5" } else { "3.1.1" };
        println!("| MQTT QoS 1 ({name}) | {} | {raw:.0} | {through:.0} | {:.2} | {lost} |", a.mqtt, through / raw);
        drop(hub);
    }
    drop(broker);

    if a.kafka > 0 {
        kafka_runs(&a, &chain, &dir, &kafka, &static_function(&chain.watchdog, &annotations)).await?;
    }
    if a.sqs > 0 {
        sqs_runs(&a, &chain, &dir, &queue).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What a hub delivered of `n` events: the rate from its first delivery
/// (start-up and the group join left out), and how many never arrived.
struct Delivered {
    rate: f64,
    lost: usize,
}

/// Waits until the hub has delivered `n` events, or until nothing more
/// arrives for 15 s (what is missing then is lost).
async fn wait_delivered(hub: &str, n: usize, started: Instant) -> anyhow::Result<Delivered> {
    let mut first: Option<(Instant, f64)> = None;
    let mut last = (Instant::now(), 0.0);
    loop {
        let done = metric(hub, "switchboard_events_delivered_total").await;
        if first.is_none() && done > 0.0 {
            first = Some((Instant::now(), done));
        }
        if done > last.1 {
            last = (Instant::now(), done);
        }
        if done >= n as f64 || (done > 0.0 && last.0.elapsed() > Duration::from_secs(15)) {
            let rate = first.map_or(0.0, |(t, d)| (done - d) / t.elapsed().as_secs_f64());
            return Ok(Delivered { rate, lost: n.saturating_sub(done as usize) });
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "not all {n} events delivered in 5 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Mosquitto of the bench's own, on a free port, queueing far more than
/// any burst: the broker's default of 1,000 queued messages per client
/// would drop a burst's tail before the hub could ask for it.
struct Mosquitto {
    _proc: Proc,
    port: u16,
}

fn mosquitto(dir: &std::path::Path) -> anyhow::Result<Mosquitto> {
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nmax_queued_messages 1000000\nlog_dest none\n"
        ),
    )?;
    let proc = Proc::start("mosquitto", &["-c", &conf.display().to_string()], &[])?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Mosquitto { _proc: proc, port });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("mosquitto did not listen on {port} (install Debian's mosquitto)")
}

/// Kafka: the topic filled once; each reader is a group of its own from the start.
async fn kafka_runs(a: &Args, chain: &Chain, dir: &std::path::Path, topic: &str, function: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let client = || {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", KAFKA);
        c
    };
    let admin: AdminClient<_> = client().create()?;
    let new = NewTopic::new(topic, 4, TopicReplication::Fixed(1));
    for r in admin.create_topics([&new], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create {t} on {KAFKA}: {e} (scripts/services starts noida-db)"))?;
    }
    let producer: FutureProducer = client().set("linger.ms", "5").create()?;
    for chunk in (0..a.kafka).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|i| {
            let (key, body) = (format!("k{}", i % 64), format!("e{i}"));
            let producer = &producer;
            async move { producer.send(FutureRecord::to(topic).key(&key).payload(&body), Duration::ZERO).await }
        });
        for sent in futures_util::future::join_all(sends).await {
            sent.map_err(|(e, _)| anyhow::anyhow!("cannot produce to {topic}: {e}"))?;
        }
    }

    let consumer: StreamConsumer = client()
        .set("group.id", format!("raw-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut first: Option<Instant> = None;
    for _ in 0..a.kafka {
        consumer.recv().await?;
        first.get_or_insert_with(Instant::now);
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    let raw = (a.kafka - 1) as f64 / first.map_or(1.0, |t| t.elapsed().as_secs_f64());
    drop(consumer);

    println!(
        "\n| Kafka → hub → chain (4 partitions, 64 keys) | records | records/s from the first delivery | hub / raw |\n|---|---:|---:|---:|"
    );
    println!("| raw rdkafka consumer (StreamConsumer, no invocation) | {} | {raw:.0} | 1.00 |", a.kafka);
    for (topology, ordering) in [("sidecar", "key"), ("up", "key"), ("up", "none"), ("up", "partition")] {
        let hub_port = free_port()?;
        let section = format!(
            "hub:\n  listen: 127.0.0.1:{hub_port}\n  dead_letter_store: {}/dead-{hub_port}.redb\nkafka:\n  enabled: true\n  bootstrap_servers: {KAFKA}\n  group: hub-{topology}-{ordering}-{topic}\n  client_id: hub-{topology}-{ordering}\n  offset_reset: earliest\n  ordering: {ordering}\n",
            dir.display()
        );
        let cfg = dir.join(format!("kafka-{topology}-{ordering}.yml"));
        let started = Instant::now();
        let hub = match topology {
            "sidecar" => {
                std::fs::write(&cfg, &section)?;
                let args = ["connect", "kafka", "--gateway", &chain.gateway, "--config", &cfg.display().to_string()];
                Proc::start(&a.bin.switchboard, &args, &[])?
            }
            _ => {
                let gateway = format!("gateway:\n  basic_auth: false\n  bind: 127.0.0.1\n  port: {}\n", free_port()?);
                let rest = "queue:\n  enabled: false\ncron:\n  enabled: false\ncloudevents:\n  enabled: false\n";
                std::fs::write(&cfg, format!("{function}{gateway}{rest}{section}"))?;
                Proc::start(&a.bin.switchboard, &["up", "--config", &cfg.display().to_string()], &[])?
            }
        };
        let through = wait_delivered(&format!("http://127.0.0.1:{hub_port}"), a.kafka, started).await?.rate;
        println!("| {topology}, ordering: {ordering} | {} | {through:.0} | {:.2} |", a.kafka, through / raw);
        drop(hub);
    }
    admin.delete_topics(&[topic], &AdminOptions::new()).await?;
    Ok(())
}

/// SQS (moto): the queue filled before each reader; the raw client and the
/// hub each with one receiver, then with four.
async fn sqs_runs(a: &Args, chain: &Chain, dir: &std::path::Path, queue: &str) -> anyhow::Result<()> {
    use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(SQS)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "bench"))
        .build();
    let client = aws_sdk_sqs::Client::from_conf(config);
    let url = client
        .create_queue()
        .queue_name(queue)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot create a queue at {SQS} (scripts/services starts moto): {e}"))?
        .queue_url
        .unwrap_or_default();
    let fill = async || -> anyhow::Result<()> {
        let batches = (0..a.sqs).collect::<Vec<_>>();
        for chunk in batches.chunks(100) {
            let sends = chunk.chunks(10).map(|ten| {
                let entries = ten
                    .iter()
                    .map(|i| {
                        SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(format!("e{i}")).build()
                    })
                    .collect::<Result<Vec<_>, _>>();
                let (client, url) = (&client, &url);
                async move {
                    client
                        .send_message_batch()
                        .queue_url(url)
                        .set_entries(Some(entries?))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                }
            });
            futures_util::future::try_join_all(sends).await?;
        }
        Ok(())
    };
    println!(
        "\n| SQS (moto) → hub → chain | messages | raw receive + batch delete msgs/s | through the hub msgs/s | hub / raw |\n|---|---:|---:|---:|---:|"
    );
    for receivers in [1, 4] {
        fill().await?;
        let started = Instant::now();
        let left = std::sync::atomic::AtomicUsize::new(a.sqs);
        let loops = (0..receivers).map(|_| async {
            while left.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                let got = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await?;
                let entries = got
                    .messages()
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .set_receipt_handle(m.receipt_handle.clone())
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if entries.is_empty() {
                    continue;
                }
                let n = entries.len();
                client.delete_message_batch().queue_url(&url).set_entries(Some(entries)).send().await?;
                left.fetch_sub(
                    n.min(left.load(std::sync::atomic::Ordering::Relaxed)),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            anyhow::Ok(())
        });
        futures_util::future::try_join_all(loops).await?;
        let raw = a.sqs as f64 / started.elapsed().as_secs_f64();

        fill().await?;
        let hub_port = free_port()?;
        let cfg = dir.join(format!("sqs-{receivers}.yml"));
        std::fs::write(
            &cfg,
            format!(
                "hub:\n  listen: 127.0.0.1:{hub_port}\n  dead_letter_store: {}/dead-{hub_port}.redb\nsqs:\n  enabled: true\n  region: us-east-1\n  endpoint_url: {SQS}\n  wait_time: 1s\n  pollers: {receivers}\n",
                dir.display()
            ),
        )?;
        let started = Instant::now();
        let env =
            [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_EC2_METADATA_DISABLED", "true")];
        let args = ["connect", "sqs", "--gateway", &chain.gateway, "--config", &cfg.display().to_string()];
        let hub = Proc::start(&a.bin.switchboard, &args, &env)?;
        let through = wait_delivered(&format!("http://127.0.0.1:{hub_port}"), a.sqs, started).await?.rate;
        println!("| {receivers} receiver(s) | {} | {raw:.0} | {through:.0} | {:.2} |", a.sqs, through / raw);
        drop(hub);
    }
    client.delete_queue().queue_url(&url).send().await?;
    Ok(())
}

async fn publish(port: u16, topic: &str, n: usize, id: &str) -> anyhow::Result<()> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_inflight(1000);
    let (client, mut events) = AsyncClient::new(o, 1000);
    let topic = topic.to_string();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            client.publish(&topic, QoS::AtLeastOnce, false, format!("e{i}")).await?;
        }
        anyhow::Ok(client)
    });
    let mut acked = 0;
    while acked < n {
        if let Event::Incoming(Incoming::PubAck(_)) = events.poll().await? {
            acked += 1;
        }
    }
    sender.await??;
    Ok(())
}

async fn mqtt_raw(port: u16, topic: &str, n: usize) -> anyhow::Result<f64> {
    let (sub, mut events) = AsyncClient::new(MqttOptions::new("bench-raw-sub", "127.0.0.1", port), 1000);
    sub.subscribe(topic, QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Incoming::SubAck(_)) = events.poll().await? {
            break;
        }
    }
    let started = Instant::now();
    let owned = topic.to_string();
    let publisher = tokio::spawn(async move { publish(port, &owned, n, "bench-pub-raw").await });
    let mut got = 0;
    while got < n {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "raw MQTT subscriber got {got} of {n} messages in 60s"
        );
        if let Event::Incoming(Incoming::Publish(_)) = events.poll().await? {
            got += 1;
        }
    }
    publisher.await??;
    sub.unsubscribe(topic).await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
