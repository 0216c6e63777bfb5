use super::{ProviderError, Route};
use crate::config::StaticFunction;
use openfaas::FunctionStatus;
use std::collections::BTreeMap;

pub struct StaticProvider {
    functions: Vec<(String, String, StaticFunction)>,
    /// When the provider started, as `createdAt`: the functions are as old
    /// as the configuration that declares them.
    created_at: String,
}

impl StaticProvider {
    pub fn new(functions: BTreeMap<String, StaticFunction>, default_ns: &str) -> Result<Self, ProviderError> {
        let functions = functions
            .into_iter()
            .map(|(name, f)| {
                if !f.upstream.starts_with("http://") {
                    return Err(ProviderError::Invalid(format!(
                        "provider.functions.{name}.upstream {:?}: expected an http:// URL",
                        f.upstream
                    )));
                }
                let ns = f.namespace.clone().unwrap_or_else(|| default_ns.to_string());
                Ok((name, ns, StaticFunction { upstream: f.upstream.trim_end_matches('/').to_string(), ..f }))
            })
            .collect::<Result<_, _>>()?;
        let created_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        Ok(Self { functions, created_at })
    }

    pub fn route(&self, name: &str, namespace: &str) -> Route {
        match self.functions.iter().find(|(n, ns, _)| n == name && ns == namespace) {
            Some((_, _, f)) => Route::Ready(f.upstream.clone(), None),
            None => Route::Unknown,
        }
    }

    pub fn list(&self, namespace: &str) -> Vec<FunctionStatus> {
        self.functions
            .iter()
            .filter(|(_, ns, _)| ns == namespace)
            .map(|(name, ns, f)| FunctionStatus {
                name: name.clone(),
                namespace: Some(ns.clone()),
                annotations: f.annotations.clone(),
                labels: f.labels.clone(),
                replicas: 1,
                available_replicas: 1,
                created_at: self.created_at.clone(),
                ..Default::default()
            })
            .collect()
    }

    pub fn namespaces(&self) -> Vec<String> {
        self.functions.iter().map(|(_, ns, _)| ns.clone()).collect()
    }
}
