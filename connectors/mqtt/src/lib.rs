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

pub use config::{ConfigError, MqttConfig, valid_filter};

use connector_core::{
    Backoff, CloudEventAttrs, Event, Outcome, Response, Settle, Source, SourceConfig, SourceContext, SourceError,
    Subscribed,
};
use futures_util::future::BoxFuture;
use std::collections::BTreeSet;

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
            }

            impl Settle for Message {
                async fn reply(&self, response: &Response) {
                    respond(&self.client, &self.publish, response).await;
                }

                async fn settle(self, outcome: Outcome) {
                    if let Outcome::Redeliver { reason, .. } = outcome {
                        tracing::warn!(%reason, "not acked; the broker redelivers it after a reconnect");
                    } else if let Err(e) = self.client.ack(&self.publish).await {
                        tracing::warn!(error = %e, "cannot ack an MQTT message; the broker will redeliver it");
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
                let (client, mut events) = m::AsyncClient::new(options, 1024);
                let mut topics = ctx.topics.clone();
                let mut subscribed: Subscribed<String, ()> = Subscribed::default();
                let mut backoff = Backoff::default();
                tracing::info!(url = %c.url, client_id = %c.client_id, version = c.version, qos = c.qos, clean_session = c.clean_session, "connecting to MQTT");
                ctx.broker.disconnected();
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
                        polled = events.poll() => match polled {
                            Ok(m::Event::Incoming(m::Incoming::Publish(p))) => {
                                let event = event(&p);
                                ctx.dispatcher.submit(event, Message { client: client.clone(), publish: p }).await;
                            }
                            Ok(m::Event::Incoming(m::Incoming::ConnAck(ack))) => {
                                ctx.broker.connected();
                                backoff.reset();
                                tracing::info!(session_present = ack.session_present, "connected to MQTT");
                                // A new session has no subscriptions: make them again.
                                if !ack.session_present {
                                    subscribed.clear();
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                ctx.broker.disconnected();
                                tracing::warn!(url = %c.url, error = %e, "MQTT connection lost; reconnecting");
                                if !backoff.sleep(&ctx.shutdown).await {
                                    return Ok(());
                                }
                            }
                        },
                        changed = topics.changed() => if changed.is_err() { return Ok(()) },
                        () = ctx.shutdown.cancelled() => {
                            let _ = client.disconnect().await;
                            return Ok(());
                        }
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

    pub fn configure(o: &mut rumqttc::MqttOptions, c: &MqttConfig) {
        o.set_inflight(c.inflight);
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
