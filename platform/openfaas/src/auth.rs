//! Basic auth with OpenFaaS's secret files: `basic-auth-user` and
//! `basic-auth-password` in `secret_mount_path`, whitespace trimmed.

use base64::Engine;
use std::path::Path;

pub const USER_FILE: &str = "basic-auth-user";
pub const PASSWORD_FILE: &str = "basic-auth-password";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Never prints the password, so a credential in a struct cannot leak into a log.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"********").finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MissingSecret {
    #[error(
        "cannot read basic-auth secret {path}: {source} (basic_auth is on; put {USER_FILE} and {PASSWORD_FILE} in secret_mount_path)"
    )]
    Unreadable { path: String, source: std::io::Error },
    #[error("basic-auth secret {path} is empty (basic_auth is on; a login of an empty {what} is refused)")]
    Empty { path: String, what: &'static str },
    #[error("cannot write generated credentials to {path}: {source}")]
    Unwritable { path: String, source: std::io::Error },
}

impl Credentials {
    /// Reads `basic-auth-user` and `basic-auth-password` from `dir`; both
    /// must exist and be non-empty.
    pub fn from_secret_mount(dir: &Path) -> Result<Self, MissingSecret> {
        let read = |file: &str, what: &'static str| {
            let path = dir.join(file);
            let value = std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|source| MissingSecret::Unreadable { path: path.display().to_string(), source })?;
            if value.is_empty() {
                return Err(MissingSecret::Empty { path: path.display().to_string(), what });
            }
            Ok(value)
        };
        Ok(Self { user: read(USER_FILE, "user name")?, password: read(PASSWORD_FILE, "password")? })
    }

    /// Reads the credentials in `dir`, or, when neither file exists there,
    /// generates them the way faasd does at install: user `admin` and a
    /// random password, in files only their owner can read. Returns whether
    /// they were generated now.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), MissingSecret> {
        if dir.join(USER_FILE).exists() || dir.join(PASSWORD_FILE).exists() {
            return Self::from_secret_mount(dir).map(|c| (c, false));
        }
        let credentials = Self { user: "admin".into(), password: random_password() };
        write_private(dir, USER_FILE, &credentials.user)?;
        write_private(dir, PASSWORD_FILE, &credentials.password)?;
        Ok((credentials, true))
    }

    /// The `Authorization` header value a client sends.
    pub fn header_value(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    /// Whether an `Authorization` header carries these credentials. The
    /// scheme is case-insensitive (RFC 9110 §11.1).
    pub fn accepts(&self, header: Option<&http::HeaderValue>) -> bool {
        let Some(encoded) = header.and_then(|v| v.to_str().ok()).and_then(|v| scheme_param(v, "basic")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        constant_time_eq(&decoded, expected.as_bytes())
    }
}

/// The parameter of an `Authorization` value with `scheme` (any case).
pub fn scheme_param<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.trim().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// 32 characters from 62: about 190 bits.
fn random_password() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Writes `dir/file` readable by its owner only (0600, in a 0700 directory).
fn write_private(dir: &Path, file: &str, value: &str) -> Result<(), MissingSecret> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = dir.join(file);
    let err = |source| MissingSecret::Unwritable { path: path.display().to_string(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(err)?;
    f.write_all(value.as_bytes()).and_then(|()| f.sync_all()).map_err(err)
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_header() {
        let c = Credentials { user: "admin".into(), password: "s3cret".into() };
        let v = http::HeaderValue::from_str(&c.header_value()).unwrap();
        assert!(c.accepts(Some(&v)));
        let wrong = Credentials { user: "admin".into(), password: "nope".into() };
        assert!(!wrong.accepts(Some(&v)));
        assert!(!c.accepts(None));
    }

    #[test]
    fn scheme_is_case_insensitive() {
        let c = Credentials { user: "admin".into(), password: "s3cret".into() };
        for v in ["basic YWRtaW46czNjcmV0", "BASIC YWRtaW46czNjcmV0", "Basic  YWRtaW46czNjcmV0 "] {
            assert!(c.accepts(Some(&http::HeaderValue::from_static(v))), "{v}");
        }
        assert!(!c.accepts(Some(&http::HeaderValue::from_static("Bearer YWRtaW46czNjcmV0"))));
        assert!(!c.accepts(Some(&http::HeaderValue::from_static("BasicYWRtaW46czNjcmV0"))));
    }

    #[test]
    fn empty_secrets_are_refused() {
        let dir = std::env::temp_dir().join(format!("openfaas-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(USER_FILE), "admin\n").unwrap();
        std::fs::write(dir.join(PASSWORD_FILE), " \n").unwrap();
        let err = Credentials::from_secret_mount(&dir).unwrap_err().to_string();
        assert!(err.contains(PASSWORD_FILE) && err.contains("empty"), "{err}");
        // One file present: never generate over it.
        std::fs::remove_file(dir.join(PASSWORD_FILE)).unwrap();
        let err = Credentials::load_or_generate(&dir).unwrap_err().to_string();
        assert!(err.contains(PASSWORD_FILE), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generated_credentials_are_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("openfaas-gen-{}", std::process::id())).join("secrets");
        let (c, generated) = Credentials::load_or_generate(&dir).unwrap();
        assert!(generated && c.user == "admin" && c.password.len() == 32);
        let mode = std::fs::metadata(dir.join(PASSWORD_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let (again, generated) = Credentials::load_or_generate(&dir).unwrap();
        assert!(!generated && again == c);
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}
