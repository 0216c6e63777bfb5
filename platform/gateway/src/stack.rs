//! OpenFaaS stack.yml: `functions: NAME: {fprocess|image, environment,
//! annotations, labels, namespace}`. Build-only fields are accepted and ignored.

use openfaas::FunctionDeployment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
struct Stack {
    #[serde(default)]
    functions: BTreeMap<String, StackFunction>,
}

#[derive(Deserialize)]
struct StackFunction {
    #[serde(default)]
    image: String,
    #[serde(default)]
    fprocess: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    environment: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    secrets: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("stack file {path}: {reason}")]
pub struct StackError {
    path: String,
    reason: String,
}

pub fn load(path: &Path) -> Result<Vec<FunctionDeployment>, StackError> {
    let err = |reason: String| StackError { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse(&text).map_err(err)
}

/// The functions of a stack.yml's text.
pub fn parse(text: &str) -> Result<Vec<FunctionDeployment>, String> {
    let stack: Stack = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    stack
        .functions
        .into_iter()
        .map(|(name, f)| {
            let env_vars = f
                .environment
                .into_iter()
                .map(|(k, v)| match v {
                    serde_yaml_ng::Value::String(s) => Ok((k, s)),
                    serde_yaml_ng::Value::Number(n) => Ok((k, n.to_string())),
                    serde_yaml_ng::Value::Bool(b) => Ok((k, b.to_string())),
                    _ => Err(format!("functions.{name}.environment.{k}: expected a string, number or boolean")),
                })
                .collect::<Result<_, _>>()?;
            Ok(FunctionDeployment {
                service: name,
                image: f.image,
                namespace: f.namespace,
                env_process: f.fprocess,
                env_vars,
                labels: f.labels,
                annotations: f.annotations,
                secrets: f.secrets,
                ..Default::default()
            })
        })
        .collect()
}
