//! The docker-compose deployment, run for real with podman-compose and the
//! CI override (docs/compose.md): images built from the binaries under
//! test, one event through each source to its function, a connector killed
//! with SIGKILL mid-stream and nothing lost after its restart, and the
//! S3 → SQS → thumbnail pipeline with real images. Everything is taken
//! down (`down -v`) when the test ends, passed or not.

mod common;

use common::podman::*;
use common::*;
use image::ImageFormat;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SOURCES: [&str; 5] = ["nats", "redis", "mqtt", "kafka", "sqs"];
const CONNECTORS: [&str; 7] = ["cron", "cloudevents", "nats", "redis", "mqtt", "kafka", "sqs"];
/// The client's environment: moto takes any keys.
const AWS: [&str; 6] =
    ["-e", "AWS_ACCESS_KEY_ID=test", "-e", "AWS_SECRET_ACCESS_KEY=test", "-e", "AWS_DEFAULT_REGION=us-east-1"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn run(program: &str, args: &[&str], dir: &Path, env: &[(&str, String)]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is not installed ({e}); set containers up with scripts/containers start")
        });
    assert!(
        out.status.success(),
        "{program} {}:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running deployment under a project name of its own, taken down with
/// its volumes when dropped.
struct Deployment {
    project: String,
    compose: String,
    env: Vec<(&'static str, String)>,
    gateway: String,
    cloudevents: String,
}

impl Deployment {
    fn compose(&self, args: &[&str]) -> String {
        let mut all = vec!["-p", &self.project, "-f", "docker-compose.yml", "-f", "docker-compose.ci.yml"];
        all.extend(args);
        run(&self.compose, &all, &repo(), &self.env)
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    fn exec(&self, service: &str, command: &[&str]) -> Option<String> {
        let out = Command::new("podman").arg("exec").arg(self.container(service)).args(command).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs the test client in the deployment's network.
    fn client(&self, args: &[&str], mounts: &[(&Path, &str)]) -> String {
        let network = format!("{}_default", self.project);
        let mut all = vec!["run".to_string(), "--rm".into(), "--network".into(), network];
        all.extend(AWS.iter().map(|s| s.to_string()));
        for (host, inside) in mounts {
            all.extend(["-v".into(), format!("{}:{inside}", host.display())]);
        }
        all.push("switchboard-ci-client:latest".into());
        all.extend(args.iter().map(|s| s.to_string()));
        podman(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    async fn inbox(&self, source: &str) -> Vec<serde_json::Value> {
        let r = get(&format!("{}/function/inbox-{source}", self.gateway)).await;
        if r.status != 200 {
            return vec![];
        }
        serde_json::from_slice(&r.body).unwrap_or_default()
    }

    async fn received(&self, source: &str, body: &str) -> bool {
        self.inbox(source).await.iter().any(|e| e["body"] == body)
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for service in CONNECTORS.iter().map(|c| format!("connect-{c}")).chain([
            "gateway".into(),
            "queue-worker".into(),
            "thumbnail".into(),
        ]) {
            let out = Command::new("podman").args(["logs", "--tail", "30", &self.container(&service)]).output();
            let out = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr));
            all += &format!("--- {service}\n{}\n", out.unwrap_or_default());
        }
        all
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let mut all = vec!["-p", &self.project, "-f", "docker-compose.yml", "-f", "docker-compose.ci.yml"];
        all.extend(["down", "-v", "-t", "2"]);
        let _ = Command::new(&self.compose).args(&all).current_dir(repo()).envs(self.env.clone()).output();
    }
}

/// The test's client image, from compose/ci (kept, as the broker images
/// are: the next run's build cache).
fn build_client() {
    let client = ["build", "--network", "host", "-q", "-t", "switchboard-ci-client:latest", "-f"];
    let mut all = client.to_vec();
    all.extend(["compose/ci/client.Dockerfile", "compose/ci"]);
    run("podman", &all, &repo(), &[]);
}

#[tokio::test]
async fn the_compose_deployment_delivers_from_every_source() {
    let repo = repo();
    let compose = [repo.join(".services/compose/bin/podman-compose"), PathBuf::from("podman-compose")]
        .into_iter()
        .find(|p| p.is_file() || Command::new(p).arg("version").output().is_ok())
        .map(|p| p.display().to_string())
        .expect("podman-compose is not installed; scripts/containers start installs it");
    let wheels = std::fs::read_dir(repo.join("compose/ci/wheels")).map(|d| d.count()).unwrap_or(0);
    assert!(wheels > 0, "compose/ci/wheels is empty: scripts/containers start downloads the CI brokers' wheels");
    let dir = tempdir();
    let targets = [("switchboard", "switchboard:latest"), ("functions", "switchboard-functions:latest")];
    let _images = build_project_images(dir.path(), &targets);
    build_client();

    let (gateway_port, ce_port) = (free_port(), free_port());
    let d = Deployment {
        project: unique("sbcompose"),
        compose,
        env: vec![("GATEWAY_PORT", gateway_port.to_string()), ("CLOUDEVENTS_PORT", ce_port.to_string())],
        gateway: format!("http://127.0.0.1:{gateway_port}"),
        cloudevents: format!("http://127.0.0.1:{ce_port}"),
    };
    d.compose(&["build", "nats", "redis", "mosquitto", "kafka", "sqs"]);
    d.compose(&["up", "-d"]);

    // podman 4.3 runs no health checks without systemd, so the test waits
    // for each service itself, as the health checks would.
    let healthy =
        eventually(Duration::from_secs(60), || async { get(&format!("{}/healthz", d.gateway)).await.status == 200 });
    assert!(healthy.await, "the gateway never became healthy:\n{}", d.logs());
    for c in CONNECTORS {
        let ready = eventually(Duration::from_secs(90), || async {
            d.exec(&format!("connect-{c}"), &["curl", "-fsS", "http://127.0.0.1:8081/readyz"]).is_some()
        });
        assert!(ready.await, "connect-{c} never became ready:\n{}", d.logs());
    }

    // The API is behind the credentials the gateway generated in its volume.
    let password = d.exec("gateway", &["cat", "data/secrets/basic-auth-password"]).expect("generated credentials");
    assert_eq!(get(&format!("{}/system/functions", d.gateway)).await.status, 401);
    let auth = basic_auth("admin", &password);
    let listed = call("GET", &format!("{}/system/functions", d.gateway), &[("Authorization", &auth)], "").await;
    assert_eq!(listed.json().as_array().map(Vec::len), Some(8), "{}", listed.text());

    // One event through each source, to its own function.
    for source in SOURCES {
        let body = format!("hello from {source}");
        d.client(&[source, &body], &[]);
        let arrived = eventually(Duration::from_secs(30), || d.received(source, &body));
        assert!(arrived.await, "{source}: {:?}\n{}", d.inbox(source).await, d.logs());
    }
    let r = call(
        "POST",
        &format!("{}/", d.cloudevents),
        &[("ce-id", "c-1"), ("ce-source", "/compose"), ("ce-type", "com.example.compose"), ("ce-specversion", "1.0")],
        "hello from cloudevents",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(d.received("events", "hello from cloudevents").await);

    // An async call goes through JetStream to the queue-worker service.
    let worker = eventually(Duration::from_secs(60), || async {
        d.exec("queue-worker", &["curl", "-fsS", "http://127.0.0.1:8083/healthz"]).is_some()
    });
    assert!(worker.await, "the queue-worker never became healthy:\n{}", d.logs());
    let r = call("POST", &format!("{}/async-function/inbox-events", d.gateway), &[], "hello through the queue").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let queued = eventually(Duration::from_secs(30), || d.received("events", "hello through the queue"));
    assert!(queued.await, "the queued call never ran:\n{}", d.logs());
    let ticked = eventually(Duration::from_secs(25), || async { !d.inbox("cron").await.is_empty() });
    assert!(ticked.await, "no cron tick reached inbox-cron:\n{}", d.logs());
    let tick = &d.inbox("cron").await[0];
    assert_eq!(tick["headers"]["x-cron-schedule"], "*/10 * * * * *", "{tick}");

    // connect-redis killed with SIGKILL mid-stream: restarted by its policy,
    // it delivers every entry, those sent while it was down included.
    let first: Vec<String> = (0..100).map(|i| format!("entry-{i}")).collect();
    let second: Vec<String> = (100..200).map(|i| format!("entry-{i}")).collect();
    let as_args = |v: &[String]| std::iter::once("redis".to_string()).chain(v.iter().cloned()).collect::<Vec<_>>();
    let args = as_args(&first);
    d.client(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let pid = podman(&["inspect", "--format", "{{.State.Pid}}", &d.container("connect-redis")]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid.parse().unwrap()), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let args = as_args(&second);
    d.client(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let restarted = eventually(Duration::from_secs(30), || async {
        podman(&["inspect", "--format", "{{.RestartCount}}", &d.container("connect-redis")]) != "0"
    });
    assert!(restarted.await, "connect-redis was not restarted");
    let all = eventually(Duration::from_secs(60), || async {
        let seen: std::collections::BTreeSet<String> =
            d.inbox("redis").await.iter().filter_map(|e| e["body"].as_str().map(String::from)).collect();
        first.iter().chain(&second).all(|b| seen.contains(b))
    });
    assert!(all.await, "entries were lost across the restart:\n{}", d.logs());

    // The pipeline: uploads to S3 become thumbnails through SQS; fifty at once.
    let uploads = dir.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    let cases =
        [("wide.png", ImageFormat::Png, 640, 480, 128, 96), ("tall.jpg", ImageFormat::Jpeg, 300, 1200, 32, 128)];
    for (name, format, w, h, _, _) in cases {
        std::fs::write(uploads.join(name), picture(w, h, format)).unwrap();
    }
    for i in 0..50 {
        let format = if i % 2 == 0 { ImageFormat::Png } else { ImageFormat::Jpeg };
        std::fs::write(uploads.join(format!("batch-{i}")), picture(400, 300, format)).unwrap();
    }
    std::fs::write(uploads.join("notes.txt"), "not a picture").unwrap();
    d.client(&["upload", "/in"], &[(&uploads, "/in:ro")]);
    let thumbs = dir.path().join("thumbnails");
    std::fs::create_dir_all(&thumbs).unwrap();
    let done = eventually(Duration::from_secs(120), || async {
        d.client(&["get", "thumbnails", "/out"], &[(&thumbs, "/out")]);
        std::fs::read_dir(&thumbs).map(|e| e.count()).unwrap_or(0) == 52
    });
    assert!(done.await, "not every upload was thumbnailed:\n{}", d.logs());
    let measure = |name: &str| measure(&std::fs::read(thumbs.join(name)).unwrap());
    for (name, format, _, _, tw, th) in cases {
        assert_eq!(measure(name), (format, tw, th), "{name}");
    }
    for i in 0..50 {
        let format = if i % 2 == 0 { ImageFormat::Png } else { ImageFormat::Jpeg };
        assert_eq!(measure(&format!("batch-{i}")), (format, 128, 96), "batch-{i}");
    }
    let letters = eventually(Duration::from_secs(30), || async {
        d.exec("connect-sqs", &["cat", "data/dead-letters.jsonl"]).is_some_and(|l| l.contains("notes.txt"))
    });
    assert!(letters.await, "the text upload was not dead-lettered:\n{}", d.logs());
    let letters = d.exec("connect-sqs", &["cat", "data/dead-letters.jsonl"]).unwrap();
    let letter: serde_json::Value =
        serde_json::from_str(letters.lines().find(|l| l.contains("notes.txt")).unwrap()).unwrap();
    assert_eq!((letter["status"].as_u64(), letter["attempts"].as_u64()), (Some(422), Some(1)), "{letter}");
    assert!(letter["error"].as_str().unwrap().contains("uploads/notes.txt: not an image"), "{letter}");
}
