//! The OpenFaaS contract shared by the gateway, watchdog, queue and hub:
//! JSON bodies, duration syntax, basic-auth secrets and retry annotations.
//! Names and shapes follow OpenFaaS so that its tooling works unchanged.

pub mod auth;
pub mod duration;
pub mod headers;
pub mod retry;
pub mod types;

pub use auth::Credentials;
pub use duration::parse_duration;
pub use retry::RetryPolicy;
pub use types::*;

/// An invalid setting: names the key, the value and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for `{key}`: expected {expected}")]
pub struct InvalidSetting {
    pub key: String,
    pub value: String,
    pub expected: &'static str,
}

impl InvalidSetting {
    pub fn new(key: impl Into<String>, value: impl Into<String>, expected: &'static str) -> Self {
        Self { key: key.into(), value: value.into(), expected }
    }
}

/// Splits `name.namespace` at the last dot, as the OpenFaaS gateway does.
pub fn split_function_name<'a>(qualified: &'a str, default_ns: &'a str) -> (&'a str, &'a str) {
    match qualified.rsplit_once('.') {
        Some((name, ns)) if !name.is_empty() && !ns.is_empty() => (name, ns),
        _ => (qualified, default_ns),
    }
}

/// OpenFaaS function names: `[-a-zA-Z_0-9.]+`.
pub fn is_valid_function_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A name OpenFaaS deploys: a DNS label (RFC 1123), as Kubernetes requires
/// of services and namespaces: lower-case letters, digits and `-`, starting
/// and ending with a letter or digit, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Checks a function or namespace name taken from a request before it
/// names a file, a folder or a container: a DNS label, so `..`, `/`, NUL
/// and every encoding of them are refused, whatever route carries them.
pub fn check_name(key: &str, value: &str) -> Result<(), InvalidSetting> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(InvalidSetting::new(
            key,
            value,
            "a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit, \
             at most 63 characters",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_last_dot() {
        assert_eq!(split_function_name("fn.ns", "openfaas-fn"), ("fn", "ns"));
        assert_eq!(split_function_name("a.b.ns", "x"), ("a.b", "ns"));
        assert_eq!(split_function_name("fn", "openfaas-fn"), ("fn", "openfaas-fn"));
        assert_eq!(split_function_name("fn.", "d"), ("fn.", "d"));
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("my-fn1") && is_dns_label("a") && is_dns_label(&"a".repeat(63)));
        for bad in ["", "My-fn", "-fn", "fn-", "fn_1", "fn.ns", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn validates_names() {
        assert!(is_valid_function_name("my-fn_1.ns"));
        assert!(!is_valid_function_name("a/b"));
        assert!(!is_valid_function_name(""));
    }
}
