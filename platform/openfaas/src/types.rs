//! JSON bodies of the OpenFaaS provider API (faas-provider `types/`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Map = BTreeMap<String, String>;

/// Body of `POST`/`PUT /system/functions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeployment {
    pub service: String,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_process: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Map::is_empty")]
    pub env_vars: Map,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Map::is_empty")]
    pub labels: Map,
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Map::is_empty")]
    pub annotations: Map,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Map>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Map>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
}

/// An item of `GET /system/functions` and the body of `GET /system/function/NAME`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_process: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Map::is_empty")]
    pub env_vars: Map,
    /// Always sent, `{}` when empty: Go clients dereference these maps.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub labels: Map,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub annotations: Map,
    /// Go providers send an integer; some send a float.
    #[serde(default, deserialize_with = "whole_number")]
    pub invocation_count: u64,
    #[serde(default)]
    pub replicas: u64,
    #[serde(default)]
    pub available_replicas: u64,
    /// RFC 3339; Go's `time.Time` refuses anything else, an empty string included.
    #[serde(default = "zero_time")]
    pub created_at: String,
}

/// A Go `*map[string]string` pointing at a nil map is sent as `null`.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
    Ok(Option::<Map>::deserialize(d)?.unwrap_or_default())
}

fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(f64::deserialize(d)?.max(0.0) as u64)
}

fn zero_time() -> String {
    "0001-01-01T00:00:00Z".into()
}

/// Body of `POST`/`PUT /system/namespace/NAME` and of its `GET`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionNamespace {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Map::is_empty")]
    pub annotations: Map,
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Map::is_empty")]
    pub labels: Map,
}

/// The label that marks a namespace as one for functions, as OpenFaaS has it.
pub const NAMESPACE_LABEL: (&str, &str) = ("openfaas", "1");

impl FunctionNamespace {
    /// A namespace for functions, with nothing but its name and that label.
    pub fn for_functions(name: &str) -> Self {
        let (key, value) = NAMESPACE_LABEL;
        Self { name: name.to_string(), labels: Map::from([(key.to_string(), value.to_string())]), ..Default::default() }
    }
}

/// Body of `POST`, `PUT` and `DELETE /system/secrets`, and an item of its
/// `GET` (which never carries a value).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Binary values, base64 in JSON as Go encodes `[]byte`.
    #[serde(default, with = "base64_bytes", skip_serializing_if = "Vec::is_empty")]
    pub raw_value: Vec<u8>,
}

/// Body of `POST /system/async-report`: how an asynchronous invocation
/// ended, as OpenFaaS's queue-worker reports it to the gateway's metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsyncReport {
    #[serde(rename = "name")]
    pub function_name: String,
    pub status_code: u16,
    /// Seconds.
    #[serde(default)]
    pub time_taken: f64,
}

/// Body of `POST /system/scale-function/NAME`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleServiceRequest {
    #[serde(default)]
    pub service_name: String,
    pub replicas: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Body of `DELETE /system/functions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteFunctionRequest {
    pub function_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Body of `GET /system/info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayInfo {
    pub provider: ProviderInfo,
    pub version: VersionInfo,
    pub arch: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub provider: String,
    pub orchestration: String,
    pub version: VersionInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit_message: String,
    pub sha: String,
    pub release: String,
}

/// One NDJSON line of `GET /system/logs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogMessage {
    pub name: String,
    pub namespace: String,
    pub instance: String,
    pub timestamp: String,
    pub text: String,
}

/// An asynchronous invocation as queued by `/async-function`. Field names are
/// OpenFaaS's (Go names). `CallbackUrl` is a plain string here; OpenFaaS
/// serialises Go's `url.URL` struct, which no other client can read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueueRequest {
    #[serde(default)]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub host: String,
    #[serde(default, with = "base64_bytes")]
    pub body: Vec<u8>,
    pub method: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub query_string: String,
    pub function: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

impl QueueRequest {
    pub fn call_id(&self) -> Option<&str> {
        self.header
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(crate::headers::CALL_ID))
            .and_then(|(_, v)| v.first())
            .map(String::as_str)
    }
}

/// Bytes as a base64 string, as Go encodes `[]byte` in JSON.
pub mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD.decode(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function deployed without labels or annotations is still listed
    /// with both maps, which Go clients dereference, and a whole count.
    #[test]
    fn a_function_without_metadata_lists_empty_maps() {
        let f = FunctionStatus { name: "f".into(), created_at: "2026-11-29T00:00:00Z".into(), ..Default::default() };
        let json = serde_json::to_value(&f).unwrap();
        assert!(json["labels"].is_object() && json["annotations"].is_object(), "{json}");
        assert!(json["invocationCount"].is_u64(), "{json}");
    }

    /// An item as a Go provider writes it: null maps, fields this crate does
    /// not model, nanosecond timestamps.
    #[test]
    fn function_status_from_a_go_provider() {
        let json = r#"{"name":"nodeinfo","image":"ghcr.io/openfaas/nodeinfo:latest","namespace":"openfaas-fn",
            "labels":null,"annotations":{"topic":"a,b","prometheus.io.scrape":"false"},"envVars":null,
            "secrets":["s"],"readOnlyRootFilesystem":true,"limits":{"memory":"128Mi"},
            "invocationCount":3,"replicas":1,"availableReplicas":1,
            "createdAt":"2026-11-23T05:44:28.045396123Z","usage":{"cpu":0.5,"totalMemoryBytes":1024}}"#;
        let f: FunctionStatus = serde_json::from_str(json).unwrap();
        assert_eq!(f.name, "nodeinfo");
        assert_eq!(f.namespace.as_deref(), Some("openfaas-fn"));
        assert!(f.labels.is_empty() && f.env_vars.is_empty());
        assert_eq!(f.annotations["topic"], "a,b");
        assert_eq!(f.available_replicas, 1);
    }
}
