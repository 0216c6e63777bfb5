//! The NATS source against the real NATS server: core subjects with
//! request/reply, JetStream surviving a `kill -9` of the connector, and
//! servers of the test's own that restart or require TLS, a user, a token or
//! a creds file.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// A fresh JetStream stream on one unique subject starting with `prefix`.
async fn new_stream(prefix: &str) -> (async_nats::jetstream::Context, String, String) {
    let js = async_nats::jetstream::new(nats().await);
    let id = unique("");
    let (stream, subject) = (format!("SBTEST_{id}"), format!("{prefix}{id}"));
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .expect("create stream");
    (js, stream, subject)
}

/// Whether the hub's JetStream consumer of `topic` (durable `sbtest`) has
/// acked or terminated something and has nothing left to deliver.
async fn settled(js: &async_nats::jetstream::Context, stream: &str, topic: &str) -> bool {
    let consumer = format!("sbtest-{}", topic.replace('.', "_"));
    let Ok(s) = js.get_stream(stream).await else { return false };
    let Ok(mut c) = s.get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer).await else {
        return false;
    };
    c.info().await.is_ok_and(|i| i.ack_floor.stream_sequence > 0 && i.num_ack_pending == 0 && i.num_pending == 0)
}

#[tokio::test]
async fn core_subjects_pass_headers_and_answer_the_reply_subject() {
    let client = nats().await;
    let subject = unique("sbtest.core.");
    let stack = format!("functions:\n  env:\n    fprocess: env\n    annotations:\n      topic: {subject}\n");
    let cfg = config(&format!("nats:\n  enabled: true\n  url: nats://127.0.0.1:4222\n  queue_group: {subject}\n"));
    let p = Platform::start(&cfg, &stack).await;
    p.wait_ready(&["env"]).await;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Trace", "abc");
    headers.insert("Nats-Msg-Id", "msg-1");
    headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let mut reply = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while reply.is_none() && std::time::Instant::now() < deadline {
        let req = client.request_with_headers(subject.clone(), headers.clone(), "ping".into());
        if let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(500), req).await {
            reply = Some(String::from_utf8_lossy(&msg.payload).into_owned());
        }
    }
    assert!(reply.is_some(), "no reply from the function; output:\n{}", p.proc.output());
    let env = reply.unwrap();
    for expected in [
        format!("Http_X_Topic={subject}"),
        "Http_X_Nats_Trace=abc".into(),
        "Http_X_Connector=switchboard/nats".into(),
        "Http_X_Message_Id=msg-1".into(),
        "Http_Traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    ] {
        assert!(env.contains(&expected), "missing {expected} in:\n{env}");
    }
}

#[tokio::test]
async fn jetstream_delivers_everything_after_the_connector_is_killed() {
    let (js, stream, subject) = new_stream("sbtest.js.").await;

    // The platform runs the function; the hub runs separately, as a sidecar.
    let dir = tempdir();
    let record = dir.path().join("js.log");
    let stack = format!(
        "functions:\n{}",
        recorder_fn(
            "js",
            dir.path(),
            "",
            &format!("      topic: {subject}\n      com.switchboard.max_inflight: \"2\"\n")
        )
    );
    let p = Platform::start(&config(""), &stack).await;
    p.wait_ready(&["js"]).await;
    let connector_cfg = dir.path().join("connector.yml");
    let hub_port = free_port();
    std::fs::write(
        &connector_cfg,
        format!(
            "hub:\n  listen: 127.0.0.1:{hub_port}\n  refresh_interval: 1s\nnats:\n  url: nats://127.0.0.1:4222\n  jetstream:\n    stream: {stream}\n    durable: sbtest\n    ack_wait: 5s\n"
        ),
    )
    .unwrap();
    let connect = |dir: &std::path::Path| {
        Proc::spawn(
            &["connect", "nats", "--gateway", &p.url, "--config", &connector_cfg.display().to_string()],
            dir,
            &[("basic_auth", "true"), ("secret_mount_path", &p.secrets())],
        )
    };

    const N: u64 = 200;
    for i in 0..N {
        js.publish(subject.clone(), format!("m{i}").into()).await.unwrap().await.unwrap();
    }
    let mut first = connect(dir.path());
    let seqs = |f: &std::path::Path| -> BTreeSet<u64> {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('|').nth(4).and_then(|s| s.parse().ok()))
            .collect()
    };
    let started = eventually(Duration::from_secs(20), || async { seqs(&record).len() >= 20 }).await;
    assert!(started, "the connector delivered nothing:\n{}", first.output());
    first.crash();
    let before = seqs(&record).len() as u64;
    assert!(before < N, "everything was delivered before the kill; the test proves nothing");

    let second = connect(dir.path());
    let all = eventually(Duration::from_secs(60), || async { seqs(&record).len() as u64 >= N }).await;
    let got = seqs(&record);
    assert!(all, "lost {} of {N} messages after kill -9:\n{}", N - got.len() as u64, second.output());
    assert_eq!(got, (1..=N).collect::<BTreeSet<u64>>());

    // Everything was acked: nothing left pending on the consumer.
    let acked = eventually(Duration::from_secs(15), || settled(&js, &stream, &subject)).await;
    assert!(acked, "messages left unacknowledged");
    drop(second);
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test]
async fn dead_letters_go_to_the_configured_subject() {
    use futures_util::StreamExt;
    let client = nats().await;
    let subject = unique("sbtest.dlq.");
    let dead_subject = format!("{subject}.dead");
    let mut letters = client.subscribe(dead_subject.clone()).await.unwrap();
    let dir = tempdir();
    let stack = format!(
        "functions:\n  doomed:\n    fprocess: {}\n    environment:\n      FAIL_TIMES: 100\n      COUNTER_FILE: {}/count\n    annotations:\n      topic: {subject}\n      com.openfaas.retry.attempts: \"2\"\n      com.openfaas.retry.min_wait: 10ms\n      com.openfaas.retry.max_wait: 20ms\n",
        fixture("flaky.sh"),
        dir.path().display()
    );
    let cfg = config(&format!(
        "nats:\n  enabled: true\n  url: nats://127.0.0.1:4222\n  queue_group: {subject}\n  dead_letter_subject: {dead_subject}\n"
    ));
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    p.wait_ready(&["doomed"]).await;
    let mut letter = None;
    for _ in 0..50 {
        client.publish(subject.clone(), "lost cause".into()).await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), letters.next()).await {
            letter = Some(m);
            break;
        }
    }
    let letter = letter.unwrap_or_else(|| panic!("no dead letter on {dead_subject}:\n{}", p.proc.output()));
    let letter: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
    assert_eq!(letter["function"], "doomed.openfaas-fn");
    assert_eq!(letter["source"], "nats");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["status"], 500);
    assert_eq!(letter["event"]["payload"], "lost cause");
    assert!(!p.dir.path().join("data/dead-letters.jsonl").exists(), "the subject replaces the file");
}

/// JetStream's acknowledgements follow the outcome: a failed invocation is
/// nakked with the backoff delay and comes back as a redelivery; once a
/// redelivery succeeds it is acked; once the last attempt fails the message
/// is dead-lettered and terminated, never delivered again.
#[tokio::test]
async fn jetstream_naks_with_a_delay_then_acks_or_terminates() {
    let (js, stream, subject) = new_stream("sbtest.nak.").await;
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    // Topics are the message's subject: `<subject>.recovers` and `<subject>.doomed`.
    let flaky = |name: &str, fail_times: u32, attempts: u32| {
        format!(
            "  {name}:\n    fprocess: {}\n    environment:\n      FAIL_TIMES: {fail_times}\n      COUNTER_FILE: {}/{name}.count\n    annotations:\n      topic: {subject}.{name}\n      com.openfaas.retry.attempts: \"{attempts}\"\n      com.openfaas.retry.min_wait: 300ms\n      com.openfaas.retry.max_wait: 400ms\n",
            fixture("flaky.sh"),
            d.display()
        )
    };
    // A function of another source's topic, outside the stream: left alone, without a warning.
    let outside = unique("sbtest.outside.");
    let stack = format!(
        "functions:\n{}{}  other:\n    fprocess: cat\n    annotations:\n      topic: {outside}\n",
        flaky("recovers", 2, 5),
        flaky("doomed", 100, 2)
    );
    js.update_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .expect("stream subjects");
    let cfg = config(&format!(
        "nats:\n  enabled: true\n  url: nats://127.0.0.1:4222\n  jetstream:\n    stream: {stream}\n    durable: sbtest\n    ack_wait: 1s\n"
    ));
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    p.wait_ready(&["recovers", "doomed"]).await;
    let started = std::time::Instant::now();
    for name in ["recovers", "doomed"] {
        js.publish(format!("{subject}.{name}"), name.into()).await.unwrap().await.unwrap();
    }
    let count = |name: &str| -> u32 {
        std::fs::read_to_string(d.join(format!("{name}.count"))).ok().and_then(|c| c.trim().parse().ok()).unwrap_or(0)
    };
    let (recovers, doomed) = (format!("{subject}.recovers"), format!("{subject}.doomed"));
    let recovered = eventually(Duration::from_secs(20), || settled(&js, &stream, &recovers)).await;
    assert!(recovered, "the recovering message was not acked:\n{}", p.proc.output());
    assert_eq!(count("recovers"), 3, "two failures, then the third delivery succeeded");
    let output = p.proc.output();
    assert!(!output.lines().any(|l| l.contains("WARN") && l.contains(&outside)), "{output}");
    // Two naks, each with the 300-400 ms backoff as its delay.
    assert!(started.elapsed() >= Duration::from_millis(600), "redelivered without the nak delay");

    let letters = p.dir.path().join("data/dead-letters.jsonl");
    let dead = eventually(Duration::from_secs(20), || async {
        std::fs::read_to_string(&letters).is_ok_and(|l| l.contains("doomed.openfaas-fn"))
    })
    .await;
    assert!(dead, "the failing message was not dead-lettered:\n{}", p.proc.output());
    assert!(eventually(Duration::from_secs(10), || settled(&js, &stream, &doomed)).await, "not terminated");
    assert_eq!(count("doomed"), 2, "com.openfaas.retry.attempts is 2");
    let letter: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&letters).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["source"], "nats");
    // Terminated, not left to the server: no redelivery after ack_wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count("doomed"), 2, "the dead-lettered message was delivered again");

    // The stream grows to take the outside topic: at the next change of the
    // topic map (a deploy) the hub reads the stream's subjects again.
    js.update_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{subject}.>"), outside.clone()],
        ..Default::default()
    })
    .await
    .expect("stream subjects");
    let late = serde_json::json!({"service": "late", "image": "x", "envProcess": "cat",
                                  "annotations": {"topic": unique("sbtest.late.")}});
    assert_eq!(p.api("POST", "/system/functions", &late.to_string()).await.status, 202);
    js.publish(outside.clone(), "now inside".into()).await.unwrap().await.unwrap();
    let consumed = eventually(Duration::from_secs(15), || settled(&js, &stream, &outside)).await;
    assert!(consumed, "the grown stream's new topic was not consumed:\n{}", p.proc.output());
    let _ = js.delete_stream(&stream).await;
}

/// A hub full for longer than the ack wait (`hub.max_pending: 1`, a 2 s
/// function, a 1 s ack wait): messages it cannot take yet are not pulled,
/// and the one waiting for a place is kept alive, so JetStream hands none
/// out twice.
#[tokio::test]
async fn jetstream_pulls_only_what_a_full_hub_can_take() {
    let (js, stream, subject) = new_stream("sbtest.full.").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let stack = format!("functions:\n{}", conform_fn("slow", &subject, &record, ""));
    let cfg = config_with(
        "  max_pending: 1\n",
        &format!(
            "nats:\n  enabled: true\n  url: nats://127.0.0.1:4222\n  jetstream:\n    stream: {stream}\n    durable: sbtest\n    ack_wait: 1s\n"
        ),
    );
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    p.wait_ready(&["slow"]).await;
    for i in 0..4 {
        js.publish(subject.clone(), format!("sleep:2:{i}").into()).await.unwrap().await.unwrap();
    }
    let done = eventually(Duration::from_secs(30), || settled(&js, &stream, &subject)).await;
    assert!(done, "not all acked: {:?}\n{}", calls(&record), p.proc.output());
    for i in 0..4 {
        assert_eq!(calls_of(&record, &format!("sleep:2:{i}")).len(), 1, "{:?}", calls(&record));
    }
    // The consumer's sequence counts every hand-out, redeliveries included.
    let consumer = format!("sbtest-{}", subject.replace('.', "_"));
    let s = js.get_stream(&stream).await.unwrap();
    let mut c = s.get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer).await.unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(info.delivered.consumer_sequence, 4, "messages handed out again while they waited: {info:?}");
    let _ = js.delete_stream(&stream).await;
}

/// A JetStream server of the test's own is killed mid-stream and restarted on
/// its store: the hub reconnects, pulls again, and every message published
/// before and after is delivered.
#[tokio::test]
async fn jetstream_carries_on_after_the_server_restarts() {
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    let port = free_port();
    let store = d.join("jetstream");
    let args = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd", &store.display().to_string()];
    let mut server = Broker::start("nats-server", args.map(String::from).to_vec(), port);
    let url = format!("nats://127.0.0.1:{port}");
    let subject = unique("sbtest.restart.");
    let stack = format!("functions:\n{}", recorder_fn("r", &d, "", &format!("      topic: {subject}\n")));
    let cfg = config(&format!(
        "nats:\n  enabled: true\n  url: {url}\n  jetstream:\n    stream: RESTART\n    subjects: [\"{subject}\"]\n    durable: sbtest\n"
    ));
    let p = Platform::start(&cfg, &stack).await;
    p.wait_ready(&["r"]).await;
    let record = d.join("r.log");
    let bodies = || -> BTreeSet<String> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('|').next().map(String::from))
            .collect()
    };
    let publish = |from: u32, to: u32| {
        let (url, subject) = (url.clone(), subject.clone());
        async move {
            let js = async_nats::jetstream::new(async_nats::connect(&url).await.expect("test client"));
            for i in from..to {
                js.publish(subject.clone(), format!("m{i}").into()).await.unwrap().await.unwrap();
            }
        }
    };
    // The hub makes the stream; publish once it exists.
    let made = eventually(Duration::from_secs(15), || async {
        let Ok(c) = async_nats::connect(&url).await else { return false };
        async_nats::jetstream::new(c).get_stream("RESTART").await.is_ok()
    })
    .await;
    assert!(made, "the hub did not create the stream:\n{}", p.proc.output());
    publish(0, 20).await;
    let before = eventually(Duration::from_secs(15), || async { bodies().len() >= 20 }).await;
    assert!(before, "not delivered before the restart:\n{}", p.proc.output());
    assert!(link_reported(&p, "nats", true).await, "not reported connected");

    server.kill();
    assert!(link_reported(&p, "nats", false).await, "the lost connection is not reported");
    server.restart();
    publish(20, 40).await;
    let expected: BTreeSet<String> = (0..40).map(|i| format!("m{i}")).collect();
    let all = eventually(Duration::from_secs(30), || async { bodies() == expected }).await;
    assert!(
        all,
        "missing after the restart: {:?}\n{}",
        expected.difference(&bodies()).collect::<Vec<_>>(),
        p.proc.output()
    );
    assert!(link_reported(&p, "nats", true).await, "not reported connected again");
}

/// A NATS server of the test's own with these `auth` settings and, when
/// `tls`, TLS that requires a client certificate from the test CA.
fn secured_nats(dir: &std::path::Path, auth: &str, tls: bool) -> Broker {
    let port = free_port();
    let d = dir.display();
    let tls = if tls {
        format!(
            "tls {{\n  cert_file: \"{d}/server.pem\"\n  key_file: \"{d}/server-key.pem\"\n  ca_file: \"{d}/ca.pem\"\n  verify: true\n}}\n"
        )
    } else {
        String::new()
    };
    let conf = dir.join("nats.conf");
    std::fs::write(&conf, format!("listen: 127.0.0.1:{port}\n{auth}\n{tls}")).unwrap();
    Broker::start("nats-server", vec!["-c".into(), conf.display().to_string()], port)
}

/// Publishes to `subject` until the recorder function in `dir` has a call,
/// since core NATS drops messages published before the hub subscribes.
async fn delivered_through(client: &async_nats::Client, subject: &str, dir: &std::path::Path, p: &Platform) {
    let record = dir.join("secure.log");
    let delivered = eventually(Duration::from_secs(15), || async {
        client.publish(subject.to_string(), "secret".into()).await.unwrap();
        client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::read_to_string(&record).is_ok_and(|r| r.contains("secret"))
    })
    .await;
    assert!(delivered, "nothing delivered through the secured server; output:\n{}", p.proc.output());
}

#[tokio::test]
async fn tls_with_a_client_certificate_and_user_password() {
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    certificates(&d);
    let server = secured_nats(&d, "authorization { user: hub, password: s3cret }", true);
    let subject = unique("sbtest.tls.");
    let stack = format!("functions:\n{}", recorder_fn("secure", &d, "", &format!("      topic: {subject}\n")));
    let nats = |password: &str| {
        format!(
            "nats:\n  enabled: true\n  url: tls://127.0.0.1:{}\n  user: hub\n  password: {password}\n{}",
            server.port,
            tls_section(&d)
        )
    };
    let p = Platform::start(&config(&nats("s3cret")), &stack).await;
    p.wait_ready(&["secure"]).await;
    let client = async_nats::ConnectOptions::new()
        .user_and_password("hub".into(), "s3cret".into())
        .require_tls(true)
        .add_root_certificates(d.join("ca.pem"))
        .add_client_certificate(d.join("client.pem"), d.join("client-key.pem"))
        .connect(format!("tls://127.0.0.1:{}", server.port))
        .await
        .expect("test client over TLS");
    delivered_through(&client, &subject, &d, &p).await;
    drop(p);

    // A wrong password is reported, and the hub keeps trying rather than exiting.
    let mut p = Platform::start(&config(&nats("wrong")), &stack).await;
    let reported = eventually(Duration::from_secs(10), || async {
        p.proc.output().to_lowercase().contains("authorization violation")
    })
    .await;
    assert!(reported, "no authorization error logged:\n{}", p.proc.output());
    assert_eq!(p.proc.wait_exit(Duration::from_secs(1)), None, "the hub exited:\n{}", p.proc.output());
}

#[tokio::test]
async fn token_authentication() {
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    let server = secured_nats(&d, "authorization { token: t0ken }", false);
    let subject = unique("sbtest.token.");
    let stack = format!("functions:\n{}", recorder_fn("secure", &d, "", &format!("      topic: {subject}\n")));
    let cfg = config(&format!("nats:\n  enabled: true\n  url: nats://127.0.0.1:{}\n  token: t0ken\n", server.port));
    let p = Platform::start(&cfg, &stack).await;
    p.wait_ready(&["secure"]).await;
    let client = async_nats::ConnectOptions::with_token("t0ken".into())
        .connect(format!("nats://127.0.0.1:{}", server.port))
        .await
        .expect("test client with the token");
    delivered_through(&client, &subject, &d, &p).await;
}

/// Decentralized (JWT) authentication, as with `nsc`: the server trusts an
/// operator key and knows the account it signed; the hub holds a creds file
/// with a user JWT signed by that account and the user's NKey seed.
#[tokio::test]
async fn creds_file_authentication() {
    use nats_jwt::{KeyPair, Token};
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    let (operator, account, user) = (KeyPair::new_operator(), KeyPair::new_account(), KeyPair::new_user());
    let account_jwt = Token::new_account(account.public_key()).name("hub").sign(&operator);
    let user_jwt = Token::new_user(account.public_key(), user.public_key()).name("hub").sign(&account);
    let creds = d.join("hub.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let auth = format!(
        "trusted_keys: [\"{}\"]\nresolver: MEMORY\nresolver_preload: {{ {}: \"{account_jwt}\" }}",
        operator.public_key(),
        account.public_key()
    );
    let server = secured_nats(&d, &auth, false);
    let url = format!("nats://127.0.0.1:{}", server.port);
    assert!(async_nats::connect(&url).await.is_err(), "the server let a client in without credentials");

    let subject = unique("sbtest.creds.");
    let stack = format!("functions:\n{}", recorder_fn("secure", &d, "", &format!("      topic: {subject}\n")));
    let cfg = config(&format!("nats:\n  enabled: true\n  url: {url}\n  creds: {}\n", creds.display()));
    let p = Platform::start(&cfg, &stack).await;
    p.wait_ready(&["secure"]).await;
    let client = async_nats::ConnectOptions::with_credentials_file(&creds)
        .await
        .expect("the creds file")
        .connect(&url)
        .await
        .expect("test client with the creds file");
    delivered_through(&client, &subject, &d, &p).await;
}
