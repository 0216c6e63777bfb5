//! The Kubernetes manifests (deploy/kubernetes), checked offline, since no
//! cluster runs here: rendered with kustomize, validated against
//! Kubernetes's schemas (`kubernetes-validate --strict`), scanned by
//! checkov, and compared with the compose deployment, so the containers
//! they start are those the compose test runs.

use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// checkov's findings that docs/kubernetes.md explains; any other fails.
const EXPLAINED: &[&str] = &[
    // The image is named by tag: the project publishes to no registry, so
    // there is no digest to pin; pin yours with `kustomize edit set image`.
    "CKV_K8S_43",
];

/// A tool of the venv scripts/services makes.
fn tool(name: &str) -> PathBuf {
    let path = repo().join(".services/manifests/bin").join(name);
    assert!(path.exists(), "{} is missing: scripts/services start installs it", path.display());
    path
}

/// The kustomization, rendered, in a file of its own.
fn rendered() -> (tempfile::TempDir, PathBuf) {
    let out = Command::new("kubectl")
        .args(["kustomize", "deploy/kubernetes"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl ({e}): scripts/services start installs it"));
    assert!(out.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchboard.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    (dir, file)
}

fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_manifests_are_valid_kubernetes_objects() {
    let (_dir, file) = rendered();
    let (ok, out) = run(&tool("kubernetes-validate"), &["--strict", &file.display().to_string()]);
    println!("{out}");
    assert!(ok, "kubernetes-validate --strict refused the manifests:\n{out}");
    assert!(!out.contains("ERROR") && !out.contains("WARN"), "{out}");
}

#[test]
fn checkov_finds_nothing_unexplained() {
    let (_dir, file) = rendered();
    let skip = EXPLAINED.join(",");
    let file = file.display().to_string();
    // --skip-download: nothing is fetched (no network here, nor needed).
    let args =
        ["--framework", "kubernetes", "--compact", "--quiet", "--skip-download", "--skip-check", &skip, "-f", &file];
    let (ok, out) = run(&tool("checkov"), &args);
    println!("{out}");
    assert!(ok, "checkov found misconfigurations that docs/kubernetes.md does not explain:\n{out}");
}

#[test]
fn each_part_runs_as_the_compose_test_runs_it_with_replicas_and_a_budget() {
    let (_dir, file) = rendered();
    let objects = documents(&file);
    let mut compose: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap()).unwrap();
    // Services merge anchors that merge anchors: one pass a level.
    for _ in 0..3 {
        compose.apply_merge().unwrap();
    }
    let services = &compose["services"];
    let budgets: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "PodDisruptionBudget").collect();
    let deployments: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 8, "seven sources and the queue-worker");
    for d in deployments {
        let name = d["metadata"]["name"].as_str().unwrap();
        let part = name.strip_prefix("switchboard-").unwrap();
        let service = &services[part];
        assert!(service.is_mapping(), "{part} is not a service of docker-compose.yml");
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"], service["command"], "{name} runs other arguments than compose's {part}");
        let image = |v: &Value| v.as_str().unwrap().split(':').next().unwrap().to_string();
        assert_eq!(image(&container["image"]), image(&service["image"]), "{name}'s image");
        assert!(d["spec"]["replicas"].as_u64().unwrap() >= 2, "{name}: fewer than two replicas");
        let labels = &d["spec"]["selector"]["matchLabels"];
        assert!(budgets.iter().any(|b| &b["spec"]["selector"]["matchLabels"] == labels), "{name} has no budget");
        let sc = &container["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{name}");
        assert_eq!(d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true, "{name}");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert!(container[probe]["httpGet"]["path"].is_string(), "{name} has no {probe}");
        }
    }
}
