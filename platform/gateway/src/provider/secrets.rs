//! Secrets of process functions, kept as files only their owner can read:
//! `DIR/NAMESPACE/NAME`. A function whose deployment names a secret finds
//! a copy in its own folder, `DIR/.mounts/NAMESPACE/FUNCTION/NAME`, which
//! its sandbox shows at `/var/openfaas/secrets` (or `$secret_mount_path`
//! unisolated). A copy, not a link: a link would lead out of the sandbox
//! into the store. An update rewrites every copy, so it reaches running
//! functions. Values are never listed.

use super::ProviderError;
use openfaas::{Secret, is_dns_label};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub struct SecretStore {
    dir: PathBuf,
}

/// Where functions' copies live, beside the namespaces' folders.
const MOUNTS: &str = ".mounts";

impl SecretStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// A namespace's folder. The API checks namespaces before they get
    /// here; the check is repeated so that no path is ever built from an
    /// unchecked name, whoever calls.
    fn folder(&self, namespace: &str) -> Result<PathBuf, ProviderError> {
        openfaas::check_name("namespace", namespace).map_err(|e| ProviderError::Invalid(e.to_string()))?;
        Ok(self.dir.join(namespace))
    }

    fn path(&self, namespace: &str, name: &str) -> Result<PathBuf, ProviderError> {
        // Kubernetes secret names: DNS subdomains. Nothing that climbs out.
        if name.len() > 253 || !name.split('.').all(is_dns_label) {
            return Err(ProviderError::Invalid(format!(
                "secret name {name:?}: expected lower-case letters, digits, '-' and '.'"
            )));
        }
        Ok(self.folder(namespace)?.join(name))
    }

    /// A function's folder of copies.
    fn mounts(&self, namespace: &str, function: &str) -> Result<PathBuf, ProviderError> {
        for (key, value) in [("namespace", namespace), ("function", function)] {
            openfaas::check_name(key, value).map_err(|e| ProviderError::Invalid(e.to_string()))?;
        }
        Ok(self.dir.join(MOUNTS).join(namespace).join(function))
    }

    fn storage(e: std::io::Error, path: &Path) -> ProviderError {
        ProviderError::Storage(format!("cannot write the secret {}: {e}", path.display()))
    }

    /// The names of the secrets in `namespace`.
    pub fn list(&self, namespace: &str) -> Result<Vec<Secret>, ProviderError> {
        let mut names: Vec<String> = std::fs::read_dir(self.folder(namespace)?)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            // Values being written (`.NAME.tmp`) are not secrets yet.
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| Secret { name, namespace: Some(namespace.into()), ..Default::default() })
            .collect())
    }

    /// Creates (`update: false`) or replaces a secret's value.
    pub fn put(&self, namespace: &str, secret: &Secret, update: bool) -> Result<(), ProviderError> {
        let path = self.path(namespace, &secret.name)?;
        match (path.is_file(), update) {
            (true, false) => {
                return Err(ProviderError::Conflict(format!(
                    "secret {} already exists in {namespace}; update it with PUT",
                    secret.name
                )));
            }
            (false, true) => {
                return Err(ProviderError::Missing(format!("secret {} not found in {namespace}", secret.name)));
            }
            _ => {}
        }
        let value = if secret.raw_value.is_empty() { secret.value.as_bytes() } else { &secret.raw_value };
        let dir = path.parent().expect("a secret is in a namespace folder");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Self::storage(e, dir))?;
        super::write_private(&path, value).map_err(|e| Self::storage(e, &path))?;
        // The functions that have it see the new value (written beside the
        // old and renamed over it, so a reader sees one or the other).
        let functions = std::fs::read_dir(self.dir.join(MOUNTS).join(namespace)).into_iter().flatten().flatten();
        for copy in functions.map(|f| f.path().join(&secret.name)).filter(|c| c.is_file()) {
            super::write_private(&copy, value).map_err(|e| Self::storage(e, &copy))?;
        }
        Ok(())
    }

    pub fn delete(&self, namespace: &str, name: &str) -> Result<(), ProviderError> {
        let path = self.path(namespace, name)?;
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProviderError::Missing(format!("secret {name} not found in {namespace}")),
            _ => Self::storage(e, &path),
        })
    }

    /// Removes a function's folder of copies.
    pub fn unmount(&self, namespace: &str, function: &str) {
        if let Ok(dir) = self.mounts(namespace, function) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// A folder of copies of the named secrets, for one function: its
    /// `secret_mount_path`.
    pub fn mount(&self, namespace: &str, function: &str, names: &[String]) -> Result<PathBuf, ProviderError> {
        let dir = self.mounts(namespace, function)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| Self::storage(e, &dir))?;
        for name in names {
            let target = self.path(namespace, name)?;
            if !target.is_file() {
                return Err(ProviderError::Invalid(format!(
                    "secret {name:?} not found in namespace {namespace}; create it first (faas-cli secret create {name})"
                )));
            }
            let copy = dir.join(name);
            let value = std::fs::read(&target).map_err(|e| Self::storage(e, &target))?;
            super::write_private(&copy, &value).map_err(|e| Self::storage(e, &copy))?;
        }
        Ok(dir)
    }
}
