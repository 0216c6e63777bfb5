//! What a source hands the hub, and what the hub answers.

use base64::Engine;
use bytes::Bytes;
use http::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// CloudEvents context attributes of an event that is one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudEventAttrs {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub specversion: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// Extension attributes, by lower-case name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
}

impl CloudEventAttrs {
    /// The binary-mode HTTP headers (`ce-*`) for these attributes; an
    /// extension whose name cannot be a header name is left out.
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, &str)> {
        let required = [
            (HeaderName::from_static("ce-id"), self.id.as_str()),
            (HeaderName::from_static("ce-source"), &self.source),
            (HeaderName::from_static("ce-type"), &self.ty),
            (HeaderName::from_static("ce-specversion"), &self.specversion),
        ];
        let optional = [("ce-subject", &self.subject), ("ce-time", &self.time), ("ce-dataschema", &self.dataschema)]
            .into_iter()
            .filter_map(|(name, value)| Some((HeaderName::from_static(name), value.as_deref()?)));
        let extensions = self
            .extensions
            .iter()
            .filter_map(|(k, v)| Some((HeaderName::try_from(format!("ce-{k}")).ok()?, v.as_str())));
        required.into_iter().chain(optional).chain(extensions)
    }

    /// Reads binary-mode attributes from `ce-*` headers (HTTP, NATS, MQTT
    /// user properties); `None` unless the four required ones are present.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let mut attrs = CloudEventAttrs::default();
        let (mut id, mut source, mut ty, mut version) = (false, false, false, false);
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            let Some(attr) = lower.strip_prefix("ce-").or_else(|| lower.strip_prefix("ce_")) else {
                continue;
            };
            let value = value.to_string();
            match attr {
                "id" => (attrs.id, id) = (value, true),
                "source" => (attrs.source, source) = (value, true),
                "type" => (attrs.ty, ty) = (value, true),
                "specversion" => (attrs.specversion, version) = (value, true),
                "subject" => attrs.subject = Some(value),
                "time" => attrs.time = Some(value),
                "dataschema" => attrs.dataschema = Some(value),
                other => {
                    attrs.extensions.insert(other.to_string(), value);
                }
            }
        }
        (id && source && ty && version).then_some(attrs)
    }
}

/// One event from a source.
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// Unique per event within its source (message id, stream id, …); sent as `X-Message-Id`.
    pub id: String,
    pub topic: String,
    /// Ordering key: events with the same key are delivered in order when ordering is on.
    pub key: Option<String>,
    /// Source-specific headers (`X-Nats-Subject`, `X-Kafka-Offset`, …), passed to the function.
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub cloudevent: Option<CloudEventAttrs>,
    /// Deliver to this function only (cron schedules belong to one function).
    pub function: Option<String>,
    /// The source made `id` up, for a message with none of its own (an
    /// MQTT publish, a core NATS message without `Nats-Msg-Id`, a cron
    /// tick): it names this delivery only, so a redelivery cannot be told
    /// by it.
    pub id_made_up: bool,
}

impl Event {
    /// Structured mode for brokers whose CloudEvents binding carries the
    /// whole event in the body (Kafka, SQS): when the content type is
    /// `application/cloudevents+json` and the body is an event, its
    /// attributes become [`Event::cloudevent`], its data (as written, or
    /// decoded from `data_base64`) the payload and its `datacontenttype`
    /// the content type. Anything else is left as it is.
    pub fn unwrap_structured_cloudevent(&mut self) {
        let structured = self.content_type.as_deref().is_some_and(|ct| ct.starts_with("application/cloudevents+json"));
        if !structured {
            return;
        }
        if let Some((attrs, data, content_type)) = parse_structured(&self.payload) {
            self.cloudevent = Some(attrs);
            self.payload = data;
            self.content_type = content_type;
        }
    }
}

/// A structured CloudEvent: its attributes, its data as written, and the
/// data's content type. `None` when the body is not one.
fn parse_structured(body: &[u8]) -> Option<(CloudEventAttrs, Bytes, Option<String>)> {
    let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).ok()?;
    let text = |v: Box<RawValue>| {
        serde_json::from_str::<serde_json::Value>(v.get()).ok().map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
    };
    let data = fields.remove("data");
    let data_base64 = fields.remove("data_base64").and_then(text);
    let content_type = fields.remove("datacontenttype").and_then(text);
    let mut take = |k: &str| fields.remove(k).and_then(text);
    let mut attrs = CloudEventAttrs {
        id: take("id")?,
        source: take("source")?,
        ty: take("type")?,
        specversion: take("specversion")?,
        subject: take("subject"),
        time: take("time"),
        dataschema: take("dataschema"),
        extensions: BTreeMap::new(),
    };
    for (k, v) in fields {
        if let Some(v) = text(v) {
            attrs.extensions.insert(k, v);
        }
    }
    let payload = match (data, data_base64) {
        (_, Some(b64)) => Bytes::from(base64::engine::general_purpose::STANDARD.decode(b64).ok()?),
        (Some(raw), None) => match serde_json::from_str::<serde_json::Value>(raw.get()) {
            // A string is the data itself; anything else is JSON, kept as written.
            Ok(serde_json::Value::String(s)) => Bytes::from(s),
            _ => Bytes::from(raw.get().to_string()),
        },
        (None, None) => Bytes::new(),
    };
    Some((attrs, payload, content_type))
}

/// A function's answer, for sources that route responses (reply subjects).
#[derive(Clone, Debug)]
pub struct Response {
    pub function: String,
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn structured_event(body: &str) -> Event {
        let mut e = Event {
            payload: Bytes::from(body.to_string()),
            content_type: Some("application/cloudevents+json; charset=utf-8".into()),
            ..Default::default()
        };
        e.unwrap_structured_cloudevent();
        e
    }

    #[test]
    fn a_structured_event_keeps_its_data_as_written() {
        let e = structured_event(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","tenant":"acme","datacontenttype":"application/json","data":{"b": 2, "a": 1}}"#,
        );
        let ce = e.cloudevent.unwrap();
        assert_eq!((ce.id.as_str(), ce.source.as_str(), ce.ty.as_str()), ("1", "/s", "t"));
        assert_eq!(ce.extensions.get("tenant").map(String::as_str), Some("acme"));
        assert_eq!(&e.payload[..], br#"{"b": 2, "a": 1}"#);
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn base64_data_is_decoded_and_other_bodies_left_alone() {
        let e = structured_event(r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAE="}"#);
        assert_eq!(&e.payload[..], &[0, 1]);
        // Not an event (no type): left as it is.
        let e = structured_event(r#"{"specversion":"1.0","id":"1","source":"/s"}"#);
        assert!(e.cloudevent.is_none());
        assert!(e.payload.starts_with(b"{"));
    }
}
