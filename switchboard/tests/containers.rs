//! The container provider against a real engine: podman's Docker-compatible
//! API (scripts/containers starts it), with a function image built here from
//! the small watchdog. Deploy → invoke → scale → logs → secrets → a killed
//! container restarted → a killed gateway's containers cleaned up → remove.

mod common;

use common::podman::*;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A function image: the small watchdog in front of `tr a-z A-Z` by
/// default, with two more commands a deployment's `envProcess` can name.
const DOCKERFILE: &str = r#"FROM docker.io/library/debian:bookworm-slim
COPY switchboard-watchdog /usr/bin/fwatchdog
COPY host secret /fn/
ENV fprocess="tr a-z A-Z"
CMD ["/usr/bin/fwatchdog"]
"#;
const HOST_FN: &str = "#!/bin/sh\necho \"served by $(hostname)\" >&2\nhostname\n";
const SECRET_FN: &str = "#!/bin/sh\ncat /var/openfaas/secrets/api-key\n";

/// The image and every container of one prefix, removed by id when the
/// test ends, passed or not.
struct Engine {
    prefix: String,
    image: String,
}

impl Engine {
    fn build(dir: &Path) -> Self {
        engine_ready();
        let context = dir.join("image");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::copy(WATCHDOG, context.join("switchboard-watchdog")).unwrap();
        for (name, text) in [("Dockerfile", DOCKERFILE), ("host", HOST_FN), ("secret", SECRET_FN)] {
            std::fs::write(context.join(name), text).unwrap();
            std::fs::set_permissions(context.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let prefix = unique("sbtest");
        let tag = format!("localhost/{prefix}-fn:1");
        podman(&["build", "--network", "host", "-q", "-t", &tag, &context.display().to_string()]);
        let image = podman(&["image", "inspect", "--format", "{{.Id}}", &tag]);
        Self { prefix, image }
    }

    fn tag(&self) -> String {
        format!("localhost/{}-fn:1", self.prefix)
    }

    /// Ids of the running containers of `function` (all of the prefix's for "").
    fn running(&self, function: &str) -> Vec<String> {
        let mut filter = vec!["ps", "-q", "--filter"];
        let owner = format!("label=io.switchboard.owner={}", self.prefix);
        filter.push(&owner);
        let named = format!("label=io.switchboard.function={function}.openfaas-fn");
        if !function.is_empty() {
            filter.extend(["--filter", &named]);
        }
        podman(&filter).lines().map(str::to_string).collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let owner = format!("label=io.switchboard.owner={}", self.prefix);
        if let Ok(out) = Command::new("podman").args(["ps", "-aq", "--filter", &owner]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("podman").args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("podman").args(["rmi", "-f", &self.image]).output();
    }
}

fn container_config(prefix: &str) -> String {
    config("").replace(
        "  kind: process\n",
        &format!("  kind: container\n  docker_host: unix://{SOCKET}\n  prefix: {prefix}\n"),
    )
}

#[tokio::test]
async fn functions_run_as_containers_of_their_images() {
    let dir = tempdir();
    let engine = Engine::build(dir.path());
    let p = Platform::start_in(dir, &container_config(&engine.prefix), NO_STACK, &[]).await;

    // An image-only deployment, as faas-cli sends for a stack.yml's image.
    let upper = serde_json::json!({"service": "upper", "image": engine.tag()});
    let r = p.api("POST", "/system/functions", &upper.to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    p.wait_ready(&["upper"]).await;
    assert_eq!(post(&format!("{}/function/upper", p.url), "hello").await.text(), "HELLO");
    assert_eq!(engine.running("upper").len(), 1);
    let status = p.api("GET", "/system/function/upper", "").await.json();
    assert_eq!(status["image"], engine.tag());
    assert_eq!(status["availableReplicas"], 1);

    // An image the engine has not and cannot pull is refused, not retried.
    let ghost = r#"{"service":"ghost","image":"localhost/no-such-image:1"}"#;
    let r = p.api("POST", "/system/functions", ghost).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("cannot be pulled"), "{}", r.text());
    let r = p.api("POST", "/system/functions", r#"{"service":"noimage","envProcess":"cat"}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("image: required by the container provider"), "{}", r.text());
    let big = serde_json::json!({"service": "big", "image": engine.tag(), "limits": {"memory": "lots"}});
    let r = p.api("POST", "/system/functions", &big.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("limits.memory"), "{}", r.text());

    // Scaled to two containers, both serving; their output is in the logs.
    let host = serde_json::json!({"service": "host", "image": engine.tag(), "envProcess": "/fn/host",
        "limits": {"memory": "64Mi", "cpu": "500m"}});
    assert_eq!(p.api("POST", "/system/functions", &host.to_string()).await.status, 202);
    p.wait_ready(&["host"]).await;
    assert_eq!(p.api("POST", "/system/scale-function/host", r#"{"replicas":2}"#).await.status, 202);
    p.wait_ready(&["host"]).await;
    let running = engine.running("host");
    assert_eq!(running.len(), 2, "{running:?}");
    let memory = podman(&["inspect", "--format", "{{.HostConfig.Memory}}", &running[0]]);
    assert_eq!(memory, (64 << 20).to_string(), "limits.memory applies");
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = post(&format!("{}/function/host", p.url), "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        served.insert(r.text().trim().to_string());
    }
    assert_eq!(served.len(), 2, "both replicas serve: {served:?}");
    let logged = eventually(Duration::from_secs(10), || async {
        let logs = p.api("GET", "/system/logs?name=host", "").await.text();
        served.iter().all(|h| logs.contains(&format!("served by {h}")))
    });
    assert!(logged.await, "{}", p.api("GET", "/system/logs?name=host", "").await.text());

    // A secret is mounted read-only at /var/openfaas/secrets and never listed.
    assert_eq!(p.api("POST", "/system/secrets", r#"{"name":"api-key","value":"k-1"}"#).await.status, 202);
    let reader = serde_json::json!({"service": "reader", "image": engine.tag(), "envProcess": "/fn/secret",
        "secrets": ["api-key"], "readOnlyRootFilesystem": true});
    assert_eq!(p.api("POST", "/system/functions", &reader.to_string()).await.status, 202);
    p.wait_ready(&["reader"]).await;
    assert_eq!(post(&format!("{}/function/reader", p.url), "").await.text(), "k-1");
    assert!(!p.api("GET", "/system/secrets", "").await.text().contains("k-1"));

    // A container killed under the gateway is replaced, and serves again.
    let killed = engine.running("upper");
    podman(&["kill", &killed[0]]);
    let replaced = eventually(Duration::from_secs(30), || async {
        let now = engine.running("upper");
        now.len() == 1 && now != killed && post(&format!("{}/function/upper", p.url), "again").await.text() == "AGAIN"
    });
    assert!(replaced.await, "the killed container was not replaced; output:\n{}", p.proc.output());

    // Removed: its containers are gone.
    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"host"}"#).await.status, 202);
    assert!(engine.running("host").is_empty());

    // A gateway killed with SIGKILL leaves its containers; the next start
    // under the same prefix removes them and runs what was deployed.
    let before = engine.running("");
    assert_eq!(before.len(), 2, "upper and reader: {before:?}");
    let Platform { mut proc, dir, .. } = p;
    proc.crash();
    assert_eq!(engine.running("").len(), 2, "containers outlive a killed gateway");
    let p = Platform::start_in(dir, &container_config(&engine.prefix), NO_STACK, &[]).await;
    p.wait_ready(&["upper", "reader"]).await;
    let after = engine.running("");
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|id| !before.contains(id)), "the old containers were removed: {before:?} {after:?}");
    assert_eq!(post(&format!("{}/function/reader", p.url), "").await.text(), "k-1");

    // Stopped: nothing of it is left running.
    let Platform { mut proc, .. } = p;
    proc.stop();
    assert!(engine.running("").is_empty(), "a stopped gateway stops its containers");
}

/// Replicas follow the containers' CPU use, as the engine reports it: any
/// call's CPU is over a target of one milli-CPU, so calls add a container,
/// and an idle one is stopped once the calls end.
#[tokio::test]
async fn containers_scale_with_their_cpu_use() {
    let dir = tempdir();
    let engine = Engine::build(dir.path());
    let p = Platform::start_in(dir, &container_config(&engine.prefix), NO_STACK, &[]).await;
    let labels = serde_json::json!({
        "com.openfaas.scale.type": "cpu", "com.openfaas.scale.target": "1",
        "com.openfaas.scale.target-proportion": "1", "com.openfaas.scale.max": "2",
        "com.openfaas.scale.down.window": "2s",
    });
    let hot = serde_json::json!({"service": "hot", "image": engine.tag(), "labels": labels});
    let r = p.api("POST", "/system/functions", &hot.to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    p.wait_ready(&["hot"]).await;
    assert_eq!(engine.running("hot").len(), 1);

    let load = Callers::start(&format!("{}/function/hot", p.url), 2, Duration::from_millis(10));
    let up = eventually(Duration::from_secs(60), || async { engine.running("hot").len() == 2 }).await;
    assert!(up, "never scaled up:\n{}", p.proc.output());
    drop(load);
    let down = eventually(Duration::from_secs(60), || async { engine.running("hot").len() == 1 }).await;
    assert!(down, "never scaled down:\n{}", p.proc.output());
    assert!(p.proc.output().contains("cpu load"), "{}", p.proc.output());
}

/// The repository's Dockerfile, built as CI builds it (the binaries this
/// test run built, `BINARIES=prebuilt`): the platform runs as a non-root
/// user, healthy, with credentials generated in its data volume, and runs a
/// deployed function behind the small watchdog of the same build.
#[tokio::test]
async fn the_switchboard_image_runs_the_platform_as_a_non_root_user() {
    let dir = tempdir();
    let tag = format!("localhost/{}:1", unique("sbtest-image-"));
    let image = build_project_images(dir.path(), &[("switchboard", &tag)]);

    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let id = Running(podman(&["run", "-d", "-p", &publish, &image.0[0]]));
    let url = format!("http://127.0.0.1:{port}");
    let healthy = eventually(Duration::from_secs(30), || async { get(&format!("{url}/healthz")).await.status == 200 });
    assert!(healthy.await, "{}", podman(&["logs", &id.0]));
    assert_eq!(podman(&["exec", &id.0, "id", "-u"]), "10001");
    assert_eq!(podman(&["healthcheck", "run", &id.0]), "", "the image's health check passes");

    let password = podman(&["exec", &id.0, "cat", "data/secrets/basic-auth-password"]);
    let auth = basic_auth("admin", &password);
    let deploy = r#"{"service":"shout","image":"local","envProcess":"tr a-z A-Z"}"#;
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let r = call("POST", &format!("{url}/system/functions"), &headers, deploy).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let shouted = eventually(Duration::from_secs(20), || async {
        post(&format!("{url}/function/shout"), "quiet").await.text() == "QUIET"
    });
    assert!(shouted.await, "{}", podman(&["logs", &id.0]));
    let processes = podman(&["exec", &id.0, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]);
    assert!(processes.contains("/usr/local/bin/switchboard-watchdog"), "{processes}");
}

/// A container removed by id when the test ends.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", "-t", "2", &self.0]).output();
    }
}
