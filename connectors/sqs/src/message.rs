//! An SQS message as the function sees it: OpenFaaS Pro's `X-SQS-*`
//! headers, an SNS envelope unwrapped, S3 notifications named, and the
//! CloudEvents binding defined in docs/hub.md (binary mode in message
//! attributes, structured mode in the body).

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName as Attr};
use bytes::Bytes;
use connector_core::{CloudEventAttrs, Event};
use serde_json::Value;

/// The event of a message on `topic`; `None` for one that is not for a
/// function (S3's `s3:TestEvent`), deleted without delivery.
pub fn event(topic: &str, queue_url: &str, m: &Message) -> Option<Event> {
    let mut e = Event {
        id: m.message_id().unwrap_or_default().to_string(),
        topic: topic.to_string(),
        payload: Bytes::copy_from_slice(m.body().unwrap_or_default().as_bytes()),
        ..Default::default()
    };
    let system = |a: Attr| m.attributes().and_then(|attrs| attrs.get(&a)).cloned();
    e.headers.push(("X-SQS-Message-ID".into(), e.id.clone()));
    e.headers.push(("X-SQS-Queue-URL".into(), queue_url.to_string()));
    if let Some(n) = system(Attr::ApproximateReceiveCount) {
        e.headers.push(("X-SQS-Receive-Count".into(), n));
    }
    if let Some(t) = system(Attr::SentTimestamp) {
        e.headers.push(("X-SQS-Sent-Timestamp".into(), t));
    }
    if let Some(group) = system(Attr::MessageGroupId) {
        e.headers.push(("X-SQS-Message-Group-Id".into(), group.clone()));
        // FIFO: a group's messages in order, groups alongside.
        e.key = Some(group);
    }
    if let Some(dedup) = system(Attr::MessageDeduplicationId) {
        e.headers.push(("X-SQS-Message-Deduplication-Id".into(), dedup));
    }
    let mut attributes: Vec<(String, String)> = vec![];
    for (name, value) in m.message_attributes().into_iter().flatten() {
        let text = match (value.string_value(), value.binary_value()) {
            (Some(s), _) => s.to_string(),
            (None, Some(b)) => String::from_utf8_lossy(b.as_ref()).into_owned(),
            _ => continue,
        };
        attributes.push((name.clone(), text));
    }
    apply_attributes(&mut e, attributes, "X-SQS-Attr-");
    unwrap_sns(&mut e);
    e.unwrap_structured_cloudevent();
    if let Some(ce) = &e.cloudevent {
        e.id = ce.id.clone();
    }
    if let Some(json) = s3_notification(&e.payload) {
        if json.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
            return None;
        }
        if let Some([record]) = json.get("Records").and_then(Value::as_array).map(Vec::as_slice) {
            let field = |path: &[&str]| path.iter().try_fold(record, |v, k| v.get(*k)).and_then(Value::as_str);
            for (header, path) in [
                ("X-S3-Bucket", &["s3", "bucket", "name"][..]),
                ("X-S3-Key", &["s3", "object", "key"][..]),
                ("X-S3-Event", &["eventName"][..]),
            ] {
                if let Some(v) = field(path) {
                    e.headers.push((header.into(), v.to_string()));
                }
            }
        }
        e.content_type.get_or_insert_with(|| "application/json".into());
    }
    Some(e)
}

/// Attributes (SQS message attributes, SNS message attributes) become
/// `<prefix><name>` headers, except the CloudEvents binding's: `ce-*` (or
/// `ce_*`) attributes carry a binary-mode CloudEvent, and `content-type` is
/// its (or any message's) content type.
fn apply_attributes(e: &mut Event, attributes: Vec<(String, String)>, prefix: &str) {
    if let Some(ce) = CloudEventAttrs::from_headers(attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        e.cloudevent = Some(ce);
    }
    for (name, value) in attributes {
        let lower = name.to_ascii_lowercase();
        if lower == "content-type" {
            e.content_type = Some(value);
        } else if !(lower.starts_with("ce-") || lower.starts_with("ce_")) {
            e.headers.push((format!("{prefix}{name}"), value));
        }
    }
}

/// An SNS notification delivered to SQS without raw delivery: the payload
/// becomes its `Message`, with OpenFaaS Pro's `X-Sns-*` headers.
fn unwrap_sns(e: &mut Event) {
    if !e.payload.starts_with(b"{") {
        return;
    }
    let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(&e.payload) else { return };
    let text = |k: &str| envelope.get(k).and_then(Value::as_str);
    let (Some("Notification"), Some(arn), Some(message)) = (text("Type"), text("TopicArn"), text("Message")) else {
        return;
    };
    e.headers.push(("X-Sns-Topic-Arn".into(), arn.to_string()));
    if let Some(id) = text("MessageId") {
        e.headers.push(("X-Sns-Message-Id".into(), id.to_string()));
    }
    if let Some(subject) = text("Subject") {
        e.headers.push(("X-Sns-Subject".into(), subject.to_string()));
    }
    let attributes = envelope.get("MessageAttributes").and_then(Value::as_object).into_iter().flatten();
    let attributes =
        attributes.filter_map(|(name, a)| Some((name.clone(), a.get("Value")?.as_str()?.to_string()))).collect();
    e.payload = Bytes::from(message.to_string());
    apply_attributes(e, attributes, "X-Sns-Attr-");
}

/// An S3 event notification (or S3's test event), parsed.
fn s3_notification(payload: &[u8]) -> Option<Value> {
    if !payload.starts_with(b"{") {
        return None;
    }
    let json: Value = serde_json::from_slice(payload).ok()?;
    let from_s3 = |r: &Value| r.get("eventSource").and_then(Value::as_str) == Some("aws:s3");
    let records = json.get("Records").and_then(Value::as_array).is_some_and(|r| !r.is_empty() && r.iter().all(from_s3));
    let test = json.get("Service").and_then(Value::as_str) == Some("Amazon S3");
    (records || test).then_some(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::MessageAttributeValue;

    fn message(body: &str) -> Message {
        Message::builder().message_id("m-1").body(body).attributes(Attr::ApproximateReceiveCount, "2").build()
    }

    #[test]
    fn fifo_messages_are_ordered_by_group_and_keep_their_deduplication_id() {
        let mut m = message("x");
        let attrs = m.attributes.get_or_insert_default();
        attrs.insert(Attr::MessageGroupId, "g-1".into());
        attrs.insert(Attr::MessageDeduplicationId, "d-1".into());
        let e = event("jobs.fifo", "u", &m).unwrap();
        assert_eq!(e.key.as_deref(), Some("g-1"));
        assert_eq!(header(&e, "X-SQS-Message-Group-Id"), Some("g-1"));
        assert_eq!(header(&e, "X-SQS-Message-Deduplication-Id"), Some("d-1"));
    }

    fn header<'a>(e: &'a Event, name: &str) -> Option<&'a str> {
        e.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn an_sns_envelope_is_unwrapped() {
        let body = serde_json::json!({
            "Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:us-east-1:123:orders",
            "Subject": "new", "Message": "{\"order\":42}",
            "MessageAttributes": {"tenant": {"Type": "String", "Value": "acme"}}
        });
        let e = event("orders", "http://q/1/orders", &message(&body.to_string())).unwrap();
        assert_eq!(&e.payload[..], br#"{"order":42}"#);
        assert_eq!(header(&e, "X-Sns-Topic-Arn"), Some("arn:aws:sns:us-east-1:123:orders"));
        assert_eq!(header(&e, "X-Sns-Message-Id"), Some("sns-1"));
        assert_eq!(header(&e, "X-Sns-Subject"), Some("new"));
        assert_eq!(header(&e, "X-Sns-Attr-tenant"), Some("acme"));
        assert_eq!(header(&e, "X-SQS-Receive-Count"), Some("2"));
    }

    #[test]
    fn s3_notifications_are_named_and_the_test_event_skipped() {
        let body = r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"uploads"},"object":{"key":"cat.jpg"}}}]}"#;
        let e = event("uploads", "u", &message(body)).unwrap();
        assert_eq!(header(&e, "X-S3-Bucket"), Some("uploads"));
        assert_eq!(header(&e, "X-S3-Key"), Some("cat.jpg"));
        assert_eq!(header(&e, "X-S3-Event"), Some("ObjectCreated:Put"));
        assert_eq!(&e.payload[..], body.as_bytes(), "delivered as the JSON it is");
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"uploads"}"#;
        assert!(event("uploads", "u", &message(test)).is_none());
    }

    #[test]
    fn attributes_become_headers_or_a_cloudevent() {
        let string = |s: &str| MessageAttributeValue::builder().data_type("String").string_value(s).build().unwrap();
        let mut m = message("data");
        for (k, v) in [
            ("ce-id", "ev-1"),
            ("ce-source", "/shop"),
            ("ce-type", "order.created"),
            ("ce-specversion", "1.0"),
            ("content-type", "text/plain"),
            ("color", "blue"),
        ] {
            m.message_attributes.get_or_insert_default().insert(k.into(), string(v));
        }
        let e = event("orders", "u", &m).unwrap();
        let ce = e.cloudevent.as_ref().unwrap();
        assert_eq!((ce.id.as_str(), ce.ty.as_str()), ("ev-1", "order.created"));
        assert_eq!(e.id, "ev-1");
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
        assert_eq!(header(&e, "X-SQS-Attr-color"), Some("blue"));
        assert!(header(&e, "X-SQS-Attr-ce-id").is_none());
    }

    #[test]
    fn a_structured_cloudevent_body_is_read() {
        let content_type = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("application/cloudevents+json")
            .build()
            .unwrap();
        let body = r#"{"specversion":"1.0","id":"ev-2","source":"/shop","type":"order.paid","datacontenttype":"application/json","data":{"order": 42}}"#;
        let mut m = message(body);
        m.message_attributes.get_or_insert_default().insert("content-type".into(), content_type);
        let e = event("orders", "u", &m).unwrap();
        assert_eq!(e.cloudevent.as_ref().map(|c| c.ty.as_str()), Some("order.paid"));
        assert_eq!(e.id, "ev-2");
        assert_eq!(&e.payload[..], br#"{"order": 42}"#, "data as written");
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
    }
}
