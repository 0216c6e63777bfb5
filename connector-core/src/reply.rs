//! Replies routed to any broker (`com.switchboard.reply-to:
//! SOURCE:TOPIC`): a function's 2xx answer is published to that topic of
//! that source's broker, as a CloudEvent that names the event it answers,
//! before the event is settled; so pipelines chain without glue code.

use crate::event::{CloudEventAttrs, Event, Response};
use crate::source::Published;
use crate::topics::SOURCES;

/// The annotation: where a function's answers go.
pub const REPLY_TO: &str = "com.switchboard.reply-to";

/// The CloudEvents extension of a reply that names the event it answers
/// (its CloudEvent id, else the broker's message id).
pub const CORRELATION: &str = "correlationid";

/// Sources whose brokers take replies: all but cron and CloudEvents, which
/// have none.
const BROKERS: [&str; 5] = ["kafka", "mqtt", "nats", "redis", "sqs"];

#[derive(Clone, Debug, PartialEq)]
pub struct ReplyTo {
    pub source: &'static str,
    pub topic: String,
}

impl ReplyTo {
    /// `kafka:thumbnails.done`, `mqtt:devices/+/reply`, …
    pub fn parse(value: &str) -> Result<Self, String> {
        let expected = || format!("{REPLY_TO} {value:?}: expected SOURCE:TOPIC, SOURCE one of {}", BROKERS.join(", "));
        let (source, topic) = value.trim().split_once(':').ok_or_else(expected)?;
        let source = SOURCES.iter().copied().find(|s| *s == source && BROKERS.contains(s)).ok_or_else(expected)?;
        if topic.is_empty() {
            return Err(expected());
        }
        Ok(Self { source, topic: topic.to_string() })
    }

    /// The topic of the reply to an event on `topic`: each `+` level of
    /// an MQTT-style reply topic is the event topic's level at that place
    /// (`devices/+/reply` for `devices/d1/temp` is `devices/d1/reply`),
    /// and a final `#` its levels from that place on.
    pub fn topic_for(&self, topic: &str) -> Result<String, String> {
        if !self.topic.contains(['+', '#']) {
            return Ok(self.topic.clone());
        }
        let levels: Vec<&str> = topic.split('/').collect();
        let mut out = vec![];
        for (i, level) in self.topic.split('/').enumerate() {
            match level {
                "+" => out.push(*levels.get(i).ok_or_else(|| self.too_short(topic))?),
                "#" => {
                    let rest = levels.get(i..).filter(|r| !r.is_empty()).ok_or_else(|| self.too_short(topic))?;
                    out.extend(rest);
                    break;
                }
                other => out.push(other),
            }
        }
        Ok(out.join("/"))
    }

    fn too_short(&self, topic: &str) -> String {
        format!("{REPLY_TO} {}: the event's topic {topic:?} has no level for each + or #", self.topic)
    }
}

/// The reply to `event` with `answer`: the answer as it is when it is
/// already a CloudEvent (binary mode `ce-*` headers, or structured), else
/// a new CloudEvent of it, whose `correlationid` names the event; its
/// attributes as `ce-*` headers, which each publisher writes in its
/// broker's binding. The event's key goes along, so a key's replies keep
/// its order.
pub fn message(event: &Event, answer: &Response) -> Published {
    let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = header("content-type");
    let mut headers: Vec<(String, String)> =
        content_type.iter().map(|ct| ("content-type".into(), ct.clone())).collect();
    let structured = content_type.as_deref().is_some_and(|ct| ct.starts_with("application/cloudevents"));
    let pairs = answer.headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
    let cloudevent = match CloudEventAttrs::from_headers(pairs) {
        Some(ce) => Some(ce),
        None if structured => None,
        None => {
            let cause = event.cloudevent.as_ref().map_or(&event.id, |ce| &ce.id);
            let ty =
                event.cloudevent.as_ref().map_or("com.switchboard.reply".to_string(), |ce| format!("{}.reply", ce.ty));
            Some(CloudEventAttrs {
                id: uuid::Uuid::new_v4().to_string(),
                source: format!("/switchboard/{}", answer.function),
                ty,
                specversion: "1.0".into(),
                time: Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
                extensions: [(CORRELATION.to_string(), cause.clone())].into(),
                ..Default::default()
            })
        }
    };
    if let Some(ce) = &cloudevent {
        headers.extend(ce.headers().map(|(k, v)| (k.as_str().to_string(), v.to_string())));
    }
    Published { body: answer.body.clone(), headers, key: event.key.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_topic_is_a_qualified_topic_of_a_broker() {
        let r = ReplyTo::parse("kafka:thumbnails.done").unwrap();
        assert_eq!((r.source, r.topic.as_str()), ("kafka", "thumbnails.done"));
        for bad in ["thumbnails.done", "cron:x", "cloudevents:x", "kafka:", "amqp:x"] {
            let e = ReplyTo::parse(bad).unwrap_err();
            assert!(e.contains("expected SOURCE:TOPIC, SOURCE one of kafka, mqtt, nats, redis, sqs"), "{bad}: {e}");
        }
    }

    #[test]
    fn wildcards_take_the_event_topics_levels() {
        let r = ReplyTo::parse("mqtt:devices/+/reply").unwrap();
        assert_eq!(r.topic_for("devices/d1/temp").unwrap(), "devices/d1/reply");
        let r = ReplyTo::parse("mqtt:replies/#").unwrap();
        assert_eq!(r.topic_for("devices/d1/temp").unwrap(), "replies/d1/temp");
        assert!(ReplyTo::parse("mqtt:a/+/+/b").unwrap().topic_for("one").is_err());
        assert_eq!(ReplyTo::parse("nats:results").unwrap().topic_for("anything").unwrap(), "results");
    }

    fn answer(headers: &[(&str, &str)]) -> Response {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Response { function: "resize.openfaas-fn".into(), status: 200, headers: map, body: "done".into() }
    }

    fn attrs(m: &Published) -> CloudEventAttrs {
        CloudEventAttrs::from_headers(m.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
    }

    #[test]
    fn a_plain_answer_becomes_a_cloudevent_naming_the_event() {
        let event = Event { id: "m-7".into(), key: Some("k".into()), ..Default::default() };
        let m = message(&event, &answer(&[("content-type", "text/plain")]));
        let ce = attrs(&m);
        assert_eq!((ce.source.as_str(), ce.ty.as_str()), ("/switchboard/resize.openfaas-fn", "com.switchboard.reply"));
        assert_eq!(ce.extensions[CORRELATION], "m-7");
        assert_eq!((&m.body[..], m.key.as_deref()), (&b"done"[..], Some("k")));
        assert!(m.headers.contains(&("content-type".into(), "text/plain".into())));
        assert!(m.headers.contains(&("ce-correlationid".into(), "m-7".into())));

        let cause = CloudEventAttrs { id: "ce-1".into(), ty: "order.created".into(), ..Default::default() };
        let event = Event { id: "m-8".into(), cloudevent: Some(cause), ..Default::default() };
        let ce = attrs(&message(&event, &answer(&[])));
        assert_eq!((ce.ty.as_str(), ce.extensions[CORRELATION].as_str()), ("order.created.reply", "ce-1"));
    }

    #[test]
    fn an_answer_that_is_a_cloudevent_goes_as_it_is() {
        let event = Event { id: "m-9".into(), ..Default::default() };
        let binary = [("ce-id", "a-1"), ("ce-source", "/f"), ("ce-type", "t"), ("ce-specversion", "1.0")];
        let ce = attrs(&message(&event, &answer(&binary)));
        assert_eq!((ce.id.as_str(), ce.extensions.get(CORRELATION)), ("a-1", None));
        let structured = message(&event, &answer(&[("content-type", "application/cloudevents+json")]));
        assert_eq!(structured.headers, [("content-type".to_string(), "application/cloudevents+json".to_string())]);
    }
}
