//! The MQTT source (MQTT 3.1.1 and 5, via rumqttc).
//!
//! Each discovered topic is a topic filter (`+` and `#` work, and the
//! dispatcher matches the concrete topic against them). Acknowledgements are
//! manual: a QoS 1 or 2 message is acked only once delivery has settled, so
//! with a persistent session (`clean_session: false`) an unacked message is
//! redelivered by the broker after a reconnect. QoS 0 is at most once.
//! MQTT 5 user properties become `X-Mqtt-<name>` headers and are read as a
//! CloudEvent when they carry its attributes (the CloudEvents MQTT binding);
//! a response topic gets the function's response, with the correlation data.

mod config;
mod publish;

pub use config::{ConfigError, MqttConfig, valid_filter};

use connector_core::{
    Backoff, CloudEventAttrs, Event, Outcome, Publisher, Response, Settle, Source, SourceConfig, SourceContext,
    SourceError, Subscribed,
};
use futures_util::future::BoxFuture;
use prometheus::IntGauge;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub struct MqttSource {
    config: MqttConfig,
    endpoint: config::Endpoint,
}

impl MqttSource {
    pub fn new(config: MqttConfig) -> Result<Self, ConfigError> {
        let endpoint = config.validate()?;
        Ok(Self { config, endpoint })
    }

    fn tls(&self) -> Result<Option<rumqttc::TlsConfiguration>, SourceError> {
        let Some(t) = self.config.tls.as_ref().filter(|_| self.endpoint.tls) else { return Ok(None) };
        let pem = t.read("mqtt")?;
        // validate() has made sure a mqtts:// URL comes with a CA.
        let ca = pem.ca.ok_or("mqtt.tls.ca is not set")?;
        Ok(Some(rumqttc::TlsConfiguration::Simple { ca, alpn: None, client_auth: pem.client }))
    }
}

impl SourceConfig for MqttConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(MqttSource::new(self.clone())?))
    }
}

impl Source for MqttSource {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn describe(&self) -> String {
        format!("{} (MQTT {}, QoS {})", self.config.url, self.config.version, self.config.qos)
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        let source = MqttSource { config: self.config.clone(), endpoint: self.endpoint.clone() };
        Some(Arc::new(publish::MqttPublisher { source: Arc::new(source) }))
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            if self.config.qos == 0 {
                tracing::warn!("mqtt.qos 0 is at-most-once: a message in flight when the hub stops is lost");
            }
            match self.config.version {
                5 => v5::run(&self, ctx).await,
                _ => v4::run(&self, ctx).await,
            }
        })
    }
}

/// Filters to subscribe to: every topic of this source that is a valid filter.
fn wanted(ctx: &SourceContext) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for t in ctx.wanted() {
        if valid_filter(&t) {
            out.insert(t);
        } else {
            tracing::warn!(topic = %t, "not a valid MQTT topic filter; not subscribing");
        }
    }
    out
}

fn base_event(topic: &str, payload: bytes::Bytes, qos: u8, retain: bool) -> Event {
    Event {
        id: uuid::Uuid::new_v4().to_string(),
        id_made_up: true,
        topic: topic.to_string(),
        payload,
        headers: vec![
            ("X-Mqtt-Topic".into(), topic.to_string()),
            ("X-Mqtt-Qos".into(), qos.to_string()),
            ("X-Mqtt-Retain".into(), retain.to_string()),
        ],
        ..Default::default()
    }
}

/// The largest MQTT packet (a remaining length of 268,435,455 bytes). The
/// client reads any packet a broker may send: a packet over the client's
/// own limit broke the connection, the broker sent it again after the
/// reconnect, and nothing after it was ever read. A payload over
/// `mqtt.max_payload` is dead-lettered instead.
const MQTT_MAX_PACKET: u32 = 268_435_455;

/// What the session's event loop hands the hub.
enum Received<P> {
    Publish(P),
    /// Connected; whether the broker kept the session (and its subscriptions).
    Connected {
        session_present: bool,
    },
}

/// The broker's QoS 1 and 2 messages the hub holds: read and not yet
/// acked. At the receive window the broker sends nothing more until one
/// is acked, so a count that stays up while nothing settles is a stall,
/// and `/readyz` says so.
struct Held {
    count: AtomicI64,
    /// When a message last arrived or was settled.
    moved: Mutex<Instant>,
    gauge: IntGauge,
}

impl Held {
    fn new(registry: &prometheus::Registry) -> Result<Arc<Self>, SourceError> {
        let gauge = IntGauge::new(
            "switchboard_mqtt_unacked_messages",
            "QoS 1 and 2 messages read from the broker and not yet acked; at mqtt.inflight the broker sends no more",
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Arc::new(Self { count: AtomicI64::new(0), moved: Mutex::new(Instant::now()), gauge }))
    }

    fn add(&self, n: i64) {
        self.gauge.set(self.count.fetch_add(n, Ordering::AcqRel) + n);
        *self.moved.lock().expect("held lock") = Instant::now();
    }

    /// A new connection: the broker sends the unacked messages again.
    fn reset(&self) {
        self.count.store(0, Ordering::Release);
        self.gauge.set(0);
    }

    /// Reports a stall: messages held and none moving for `limit`.
    fn check(&self, broker: &connector_core::BrokerState, limit: Duration) {
        let (held, still) = (self.count.load(Ordering::Acquire), self.moved.lock().expect("held lock").elapsed());
        if held > 0 && still > limit {
            broker.stalled(format!(
                "{held} messages held unacked and none settled for {}s; the broker sends no more past the \
                 receive window (mqtt.inflight)",
                still.as_secs()
            ));
        } else {
            broker.flowing();
        }
    }
}

/// How often the session looks for a stall.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// The session loop, the same for both protocol versions: `$parts` holds
/// what differs (options, how a PUBLISH becomes an event, response routing).
macro_rules! session {
    ($module:ident, $rumqttc:path, $parts:ident, $set_clean:ident) => {
        mod $module {
            use super::$parts::{Publish, configure, event, qos, respond};
            use super::*;
            use $rumqttc as m;

            /// A QoS 1 or 2 message is acked once settled; one left
            /// unacked comes back from the broker after a reconnect.
            struct Message {
                client: m::AsyncClient,
                publish: Publish,
                held: Option<Arc<Held>>,
            }

            impl Settle for Message {
                async fn reply(&self, response: &Response) {
                    respond(&self.client, &self.publish, response).await;
                }

                async fn settle(self, outcome: Outcome) {
                    if let Outcome::Redeliver { reason, .. } = outcome {
                        tracing::warn!(%reason, "not acked; the broker redelivers it after a reconnect");
                        return;
                    }
                    if let Err(e) = self.client.ack(&self.publish).await {
                        tracing::warn!(error = %e, "cannot ack an MQTT message; the broker will redeliver it");
                    } else if let Some(held) = &self.held {
                        held.add(-1);
                    }
                }
            }

            /// Polls the event loop all the time, in a task of its own:
            /// acks go out through it, so it must never wait for the hub.
            /// (It did: a full hub stopped the loop that polled it, while
            /// 1,024 acks waited in its channel for that loop, and the
            /// broker's window of unacked messages stayed full for ever.)
            /// What it reads is bounded by the receive window.
            async fn pump(
                mut events: m::EventLoop,
                to_hub: tokio::sync::mpsc::UnboundedSender<Received<Publish>>,
                ctx: (connector_core::BrokerState, String, CancellationToken),
            ) {
                let (broker, url, shutdown) = ctx;
                let mut backoff = Backoff::default();
                loop {
                    let polled = tokio::select! {
                        polled = events.poll() => polled,
                        () = shutdown.cancelled() => return,
                    };
                    let received = match polled {
                        Ok(m::Event::Incoming(m::Incoming::Publish(p))) => Received::Publish(p),
                        Ok(m::Event::Incoming(m::Incoming::ConnAck(ack))) => {
                            broker.connected();
                            backoff.reset();
                            tracing::info!(session_present = ack.session_present, "connected to MQTT");
                            Received::Connected { session_present: ack.session_present }
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            broker.disconnected();
                            tracing::warn!(%url, error = %e, "MQTT connection lost; reconnecting");
                            if !backoff.sleep(&shutdown).await {
                                return;
                            }
                            continue;
                        }
                    };
                    if to_hub.send(received).is_err() {
                        return;
                    }
                }
            }

            pub async fn run(src: &MqttSource, ctx: SourceContext) -> Result<(), SourceError> {
                let c = &src.config;
                let mut options = m::MqttOptions::new(&c.client_id, &src.endpoint.host, src.endpoint.port);
                options.set_keep_alive(c.keep_alive).$set_clean(c.clean_session).set_manual_acks(true);
                configure(&mut options, c);
                if let Some(u) = &c.username {
                    options.set_credentials(u.clone(), c.password.clone().unwrap_or_default());
                }
                if let Some(tls) = src.tls()? {
                    options.set_transport(rumqttc::Transport::Tls(tls));
                }
                let qos = qos(c.qos);
                let (client, events) = m::AsyncClient::new(options, 1024);
                let held = Held::new(&ctx.registry)?;
                let stall_after = 2 * ctx.dispatcher.upstream_timeout();
                let mut stall_check = tokio::time::interval(STALL_CHECK);
                tracing::info!(url = %c.url, client_id = %c.client_id, version = c.version, qos = c.qos, clean_session = c.clean_session, "connecting to MQTT");
                // Before the event loop runs: it reports the connection.
                ctx.broker.disconnected();
                let (to_hub, mut received) = tokio::sync::mpsc::unbounded_channel();
                let session = (ctx.broker.clone(), c.url.clone(), ctx.shutdown.clone());
                // The event loop ends with the session.
                let _pump = AbortOnDropHandle::new(tokio::spawn(pump(events, to_hub, session)));
                let mut topics = ctx.topics.clone();
                let mut subscribed: Subscribed<String, ()> = Subscribed::default();
                loop {
                    let changes = subscribed.update(&wanted(&ctx));
                    for (f, ()) in changes.removed {
                        let _ = client.unsubscribe(c.subscription(&f)).await;
                        tracing::info!(filter = %f, "unsubscribed");
                    }
                    for f in changes.added {
                        client.subscribe(c.subscription(&f), qos).await?;
                        tracing::info!(filter = %c.subscription(&f), "subscribed");
                        subscribed.insert(f, ());
                    }
                    tokio::select! {
                        next = received.recv() => match next {
                            Some(Received::Publish(p)) => {
                                let acked = p.qos as u8 > 0;
                                let held = acked.then(|| held.clone());
                                if let Some(held) = &held {
                                    held.add(1);
                                }
                                let mut event = event(&p);
                                let size = event.payload.len();
                                let message = Message { client: client.clone(), publish: p, held };
                                if size > c.max_payload {
                                    event.payload = bytes::Bytes::new();
                                    event.headers.push(("X-Mqtt-Payload-Size".into(), size.to_string()));
                                    let why = format!("payload of {size} bytes is over mqtt.max_payload ({} bytes)", c.max_payload);
                                    ctx.dispatcher.refuse(event, message, why).await;
                                } else {
                                    ctx.dispatcher.submit(event, message).await;
                                }
                            }
                            Some(Received::Connected { session_present }) => {
                                held.reset();
                                // A new session has no subscriptions: make them again.
                                if !session_present {
                                    subscribed.clear();
                                }
                            }
                            None => return Ok(()),
                        },
                        _ = stall_check.tick() => held.check(&ctx.broker, stall_after),
                        changed = topics.changed() => if changed.is_err() { return Ok(()) },
                        () = ctx.shutdown.cancelled() => return Ok(()),
                    }
                }
            }
        }
    };
}

session!(v4, rumqttc, v4_parts, set_clean_session);
session!(v5, rumqttc::v5, v5_parts, set_clean_start);

mod v4_parts {
    use super::*;
    pub use rumqttc::Publish;

    /// MQTT 3.1.1 has no receive window of the client's: the broker's own
    /// setting bounds the unacked messages it sends (Mosquitto's
    /// `max_inflight_messages`, 20 by default).
    pub fn configure(o: &mut rumqttc::MqttOptions, _: &MqttConfig) {
        o.set_max_packet_size(MQTT_MAX_PACKET as usize, MQTT_MAX_PACKET as usize);
    }

    pub fn qos(n: u8) -> rumqttc::QoS {
        rumqttc::qos(n).unwrap_or(rumqttc::QoS::AtLeastOnce)
    }

    pub fn event(p: &rumqttc::Publish) -> Event {
        base_event(&p.topic, p.payload.clone(), p.qos as u8, p.retain)
    }

    pub async fn respond(_: &rumqttc::AsyncClient, _: &Publish, _: &Response) {}
}

mod v5_parts {
    use super::*;
    pub use rumqttc::v5::mqttbytes::v5::Publish;
    use rumqttc::v5::mqttbytes::v5::PublishProperties;

    pub fn configure(o: &mut rumqttc::v5::MqttOptions, c: &MqttConfig) {
        // The receive window: unacked messages the broker may send at once.
        o.set_receive_maximum(Some(c.inflight));
        o.set_max_packet_size(Some(MQTT_MAX_PACKET));
        if !c.clean_session {
            // Without an expiry an MQTT 5 session ends with the connection.
            o.set_session_expiry_interval(Some(c.session_expiry.as_secs().min(u32::MAX as u64) as u32));
        }
    }

    pub fn qos(n: u8) -> rumqttc::v5::mqttbytes::QoS {
        rumqttc::v5::mqttbytes::qos(n).unwrap_or(rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
    }

    pub fn event(p: &Publish) -> Event {
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        let mut e = base_event(&topic, p.payload.clone(), p.qos as u8, p.retain);
        if let Some(props) = &p.properties {
            e.content_type = props.content_type.clone();
            // CloudEvents' MQTT binding: attributes are user properties without a prefix.
            if props.user_properties.iter().any(|(k, _)| k == "specversion") {
                let prefixed: Vec<(String, String)> =
                    props.user_properties.iter().map(|(k, v)| (format!("ce-{k}"), v.clone())).collect();
                e.cloudevent = CloudEventAttrs::from_headers(prefixed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            if let Some(ce) = &e.cloudevent {
                e.id = ce.id.clone();
            }
            for (k, v) in &props.user_properties {
                if k == "traceparent" || k == "tracestate" {
                    e.headers.push((k.clone(), v.clone()));
                } else if e.cloudevent.is_none() {
                    e.headers.push((format!("X-Mqtt-{k}"), v.clone()));
                }
            }
        }
        e
    }

    /// MQTT 5 request/response: the answer goes to the response topic,
    /// with the request's correlation data.
    pub async fn respond(client: &rumqttc::v5::AsyncClient, p: &Publish, r: &Response) {
        let Some(props) = &p.properties else { return };
        let Some(topic) = &props.response_topic else { return };
        let properties = PublishProperties { correlation_data: props.correlation_data.clone(), ..Default::default() };
        let sent = client
            .publish_with_properties(
                topic.clone(),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                r.body.clone(),
                properties,
            )
            .await;
        if let Err(e) = sent {
            tracing::warn!(%topic, error = %e, "cannot publish the function's response");
        }
    }
}
