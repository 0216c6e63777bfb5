//! `switchboard publish mqtt TOPIC` and replies routed to MQTT: a message
//! published at QoS 1 (QoS 0 when `mqtt.qos` is 0) by a client of its own,
//! done once the broker acknowledges it. In MQTT 5 each header is a user
//! property (a CloudEvent's `ce-*` attributes without the prefix, as its
//! MQTT binding has them) and `content-type` the content type; MQTT 3.1.1
//! has neither, so the body goes alone.

use crate::MqttSource;
use connector_core::{Published, Publisher};
use futures_util::future::BoxFuture;
use std::time::Duration;

/// The longest wait for the broker's acknowledgement.
const PATIENCE: Duration = Duration::from_secs(10);

pub struct MqttPublisher {
    pub source: std::sync::Arc<MqttSource>,
}

impl Publisher for MqttPublisher {
    fn publish(&self, topic: &str, message: Published) -> BoxFuture<'_, Result<String, String>> {
        let topic = topic.to_string();
        Box::pin(async move {
            if topic.contains(['+', '#']) {
                return Err(format!("{topic}: a message goes to a topic, not a filter with + or #"));
            }
            let sent = match self.source.config.version {
                5 => tokio::time::timeout(PATIENCE, v5(&self.source, topic, message)).await,
                _ => tokio::time::timeout(PATIENCE, v4(&self.source, topic, message)).await,
            };
            sent.unwrap_or_else(|_| Err(format!("no acknowledgement from {} in {PATIENCE:?}", self.source.config.url)))
        })
    }
}

/// A client id of the publisher's own: the source's own session is not disturbed.
fn client_id(source: &MqttSource) -> String {
    format!("{}-publish-{}", source.config.client_id, std::process::id())
}

async fn v4(source: &MqttSource, topic: String, message: Published) -> Result<String, String> {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS, Transport};
    let mut options = MqttOptions::new(client_id(source), &source.endpoint.host, source.endpoint.port);
    if let Some(u) = &source.config.username {
        options.set_credentials(u.clone(), source.config.password.clone().unwrap_or_default());
    }
    if let Some(tls) = source.tls().map_err(|e| e.to_string())? {
        options.set_transport(Transport::Tls(tls));
    }
    let qos = if source.config.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
    let (client, mut events) = AsyncClient::new(options, 8);
    client.publish(topic, qos, false, message.body).await.map_err(|e| e.to_string())?;
    loop {
        match events.poll().await.map_err(|e| e.to_string())? {
            Event::Incoming(Incoming::PubAck(ack)) => break Ok(format!("acknowledged (packet {})", ack.pkid)),
            Event::Outgoing(Outgoing::Publish(_)) if qos == QoS::AtMostOnce => break Ok("sent at QoS 0".into()),
            _ => continue,
        }
    }
    .inspect(|_| {
        let _ = client.try_disconnect();
    })
}

async fn v5(source: &MqttSource, topic: String, message: Published) -> Result<String, String> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    use rumqttc::{Outgoing, Transport};
    let mut options = MqttOptions::new(client_id(source), &source.endpoint.host, source.endpoint.port);
    if let Some(u) = &source.config.username {
        options.set_credentials(u.clone(), source.config.password.clone().unwrap_or_default());
    }
    if let Some(tls) = source.tls().map_err(|e| e.to_string())? {
        options.set_transport(Transport::Tls(tls));
    }
    let mut properties = PublishProperties::default();
    for (k, v) in message.headers {
        if k.eq_ignore_ascii_case("content-type") {
            properties.content_type = Some(v);
        } else if k.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ce-")) {
            // CloudEvents' MQTT binding: attributes without a prefix.
            properties.user_properties.push((k[3..].to_string(), v));
        } else {
            properties.user_properties.push((k, v));
        }
    }
    let qos = if source.config.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
    let (client, mut events) = AsyncClient::new(options, 8);
    client.publish_with_properties(topic, qos, false, message.body, properties).await.map_err(|e| e.to_string())?;
    loop {
        match events.poll().await.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::PubAck(ack)) => break Ok(format!("acknowledged (packet {})", ack.pkid)),
            Event::Outgoing(Outgoing::Publish(_)) if qos == QoS::AtMostOnce => break Ok("sent at QoS 0".into()),
            _ => continue,
        }
    }
    .inspect(|_| {
        let _ = client.try_disconnect();
    })
}
