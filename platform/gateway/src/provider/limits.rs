//! A deployment's `limits`, as Kubernetes writes them: what the container
//! runtime gives its engine and the process runtime its cgroups.

use super::ProviderError;
use openfaas::FunctionDeployment;

/// `limits.memory` in bytes and `limits.cpu` in billionths of a CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
}

impl Limits {
    /// The limits `d` asks for (`128Mi`, `1G`; `500m`, `0.5`), or a 400 naming the bad one.
    pub fn of(d: &FunctionDeployment) -> Result<Self, ProviderError> {
        let limit = |key: &str| d.limits.as_ref().and_then(|l| l.get(key)).map(|v| v.trim());
        let memory = limit("memory")
            .map(|v| {
                memory_bytes(v).ok_or_else(|| {
                    ProviderError::Invalid(format!("limits.memory {v:?}: expected a size such as 128Mi, 1Gi or 500M"))
                })
            })
            .transpose()?;
        let nano_cpus = limit("cpu")
            .map(|v| {
                nano_cpus(v).ok_or_else(|| {
                    ProviderError::Invalid(format!("limits.cpu {v:?}: expected CPUs such as 500m or 1.5"))
                })
            })
            .transpose()?;
        Ok(Self { memory, nano_cpus })
    }

    pub fn any(&self) -> bool {
        self.memory.is_some() || self.nano_cpus.is_some()
    }
}

fn memory_bytes(v: &str) -> Option<i64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let scale: i64 = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return None,
    };
    number.parse::<i64>().ok().filter(|n| *n > 0)?.checked_mul(scale)
}

fn nano_cpus(v: &str) -> Option<i64> {
    let nanos = match v.strip_suffix('m') {
        Some(milli) => milli.parse::<i64>().ok()?.checked_mul(1_000_000)?,
        None => {
            let cpus = v.parse::<f64>().ok().filter(|c| c.is_finite())?;
            (cpus * 1e9).round() as i64
        }
    };
    (nanos > 0).then_some(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(memory_bytes("128Mi"), Some(128 << 20));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("4096"), Some(4096));
        for bad in ["", "Mi", "12 Mi", "-1Mi", "0", "1.5Gi", "9999999999999Gi"] {
            assert_eq!(memory_bytes(bad), None, "{bad:?}");
        }
        assert_eq!(nano_cpus("500m"), Some(500_000_000));
        assert_eq!(nano_cpus("1.5"), Some(1_500_000_000));
        for bad in ["", "m", "0", "-1", "NaN", "inf", "one"] {
            assert_eq!(nano_cpus(bad), None, "{bad:?}");
        }
    }
}
