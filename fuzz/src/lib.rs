//! One entry point per parser of outside input. Each must return, whatever
//! the bytes: an error is fine, a panic is a bug. Used by the fuzz targets
//! and, over the kept corpora, by switchboard/tests/fuzz_corpus.rs.

/// A CloudEvents request: header lines (`name: value`), a blank line, the
/// body; in binary, structured and batched mode alike.
pub fn cloudevents(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut headers = http::HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(name, value);
        }
    }
    for attribute in ["type", "subject", "partitionkey"] {
        let _ = switchboard_cloudevents::parse(&headers, bytes::Bytes::copy_from_slice(body), attribute);
    }
}

/// A `schedule` annotation (parsing also finds its next fire time).
pub fn cron(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = switchboard_cron::Schedule::parse(text);
}

/// The config file's sections and a stack.yml, from the same YAML text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = switchboard_gateway::stack::parse(text);
    let _ = serde_yaml_ng::from_str::<switchboard_gateway::GatewayConfig>(text);
    let _ = serde_yaml_ng::from_str::<switchboard_gateway::ProviderConfig>(text);
    if let Ok(hub) = serde_yaml_ng::from_str::<connector_core::HubConfig>(text) {
        let _ = hub.validate();
    }
    build::<switchboard_cron::CronConfig>(text);
    build::<switchboard_cloudevents::CloudEventsConfig>(text);
    build::<switchboard_nats::NatsConfig>(text);
    build::<switchboard_redis::RedisConfig>(text);
    build::<switchboard_mqtt::MqttConfig>(text);
}

/// A source's section, validated as the binary does.
fn build<C: connector_core::SourceConfig>(text: &str) {
    if let Ok(config) = serde_yaml_ng::from_str::<C>(text) {
        let _ = config.build();
    }
}

/// The OpenFaaS API's JSON bodies, durations and retry annotations.
pub fn openfaas_json(data: &[u8]) {
    let _ = serde_json::from_slice::<openfaas::FunctionDeployment>(data);
    let _ = serde_json::from_slice::<openfaas::FunctionStatus>(data);
    let _ = serde_json::from_slice::<openfaas::ScaleServiceRequest>(data);
    let _ = serde_json::from_slice::<openfaas::DeleteFunctionRequest>(data);
    let _ = serde_json::from_slice::<openfaas::QueueRequest>(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = openfaas::is_dns_label(text);
    let _ = openfaas::parse_duration("fuzz", text);
    if let Ok(value) = http::HeaderValue::from_str(text) {
        let _ = openfaas::retry::parse_retry_after(&value);
    }
    let annotations = [("com.openfaas.retry.attempts", text), ("com.openfaas.retry.codes", text)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = openfaas::RetryPolicy::default().with_annotations(&annotations);
}
