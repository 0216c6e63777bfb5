//! OpenFaaS durations: a bare integer is seconds, otherwise a Go-style
//! duration such as `1m30s` or `500ms`.

use crate::InvalidSetting;
use std::time::Duration;

pub fn parse_duration(key: &str, value: &str) -> Result<Duration, InvalidSetting> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(value)
        .map_err(|_| InvalidSetting::new(key, value, "a duration such as 30, 30s, 1m30s or 500ms"))
}

/// Serde helpers so config structs can hold `Duration` written the OpenFaaS way.
pub mod serde_duration {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => super::parse_duration("duration", &t)
                .map_err(|e| D::Error::custom(format!("invalid value {:?}: expected {}", e.value, e.expected))),
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openfaas_forms() {
        assert_eq!(parse_duration("t", "30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("t", "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("t", "500ms").unwrap(), Duration::from_millis(500));
        let err = parse_duration("exec_timeout", "soon").unwrap_err().to_string();
        assert!(err.contains("exec_timeout") && err.contains("soon"), "{err}");
    }
}
