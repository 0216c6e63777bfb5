//! What a source hands the hub, and what the hub answers.

use bytes::Bytes;
use http::HeaderName;
use serde::{Deserialize, Serialize};
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
}

/// A function's answer, for sources that route responses (reply subjects).
#[derive(Clone, Debug)]
pub struct Response {
    pub function: String,
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}
