//! Basic auth on /system/* with OpenFaaS's secret files.

mod common;
use common::*;

#[tokio::test]
async fn system_routes_need_credentials_functions_do_not() {
    let dir = tempdir();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("basic-auth-user"), "admin\n").unwrap();
    std::fs::write(secrets.join("basic-auth-password"), "s3cret\n").unwrap();
    let secrets = secrets.display().to_string();
    let p = Platform::start_in(
        dir,
        &config(""),
        "functions:\n  echo:\n    fprocess: cat\n",
        &[("basic_auth", "true"), ("secret_mount_path", &secrets)],
    )
    .await;

    let r = get(&format!("{}/system/functions", p.url)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Basic realm=\"Restricted\""));
    assert_eq!(r.text(), "invalid credentials");
    let wrong =
        call("GET", &format!("{}/system/functions", p.url), &[("Authorization", "Basic YWRtaW46bm8=")], "").await;
    assert_eq!(wrong.status, 401);
    // admin:s3cret
    let ok =
        call("GET", &format!("{}/system/functions", p.url), &[("Authorization", "Basic YWRtaW46czNjcmV0")], "").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()[0]["name"], "echo");

    let invoked = eventually(std::time::Duration::from_secs(10), || async {
        post(&format!("{}/function/echo", p.url), "open").await.text() == "open"
    })
    .await;
    assert!(invoked, "/function is not behind auth");

    // The hub inside `up` discovers in-process through the same auth, with the gateway's credentials.
    let ready = eventually(std::time::Duration::from_secs(10), || async {
        get(&format!("{}/readyz", p.hub_url)).await.status == 200
    })
    .await;
    assert!(ready, "the hub never discovered functions:\n{}", p.proc.output());
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(metrics.contains("switchboard_discovery_errors_total 0"), "{metrics}");
}

#[tokio::test]
async fn missing_secret_fails_at_start_with_a_clear_error() {
    let dir = tempdir();
    std::fs::write(dir.path().join("switchboard.yml"), "queue:\n  enabled: false\nprovider:\n  kind: process\n")
        .unwrap();
    let mut proc = Proc::spawn(
        &["gateway", "--config", "switchboard.yml", "--port", &free_port().to_string()],
        dir.path(),
        &[("basic_auth", "true"), ("secret_mount_path", "/nonexistent")],
    );
    assert_ne!(proc.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    let out = proc.output();
    assert!(out.contains("/nonexistent/basic-auth-user") && out.contains("secret_mount_path"), "{out}");
}

#[tokio::test]
async fn invalid_config_names_the_key() {
    let dir = tempdir();
    std::fs::write(dir.path().join("bad.yml"), "gateway:\n  upstream_timeout: soon\n").unwrap();
    let mut proc = Proc::spawn(&["gateway", "--config", "bad.yml"], dir.path(), &[]);
    assert_ne!(proc.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    let out = proc.output();
    assert!(out.contains("bad.yml") && out.contains("upstream_timeout") && out.contains("soon"), "{out}");

    let mut proc = Proc::spawn(&["gateway", "--port", "notaport"], dir.path(), &[]);
    assert_ne!(proc.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    assert!(proc.output().contains("--port"), "{}", proc.output());

    let mut proc = Proc::spawn(&["up"], dir.path(), &[("upstream_timeout", "later")]);
    assert_ne!(proc.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    assert!(proc.output().contains("upstream_timeout"), "{}", proc.output());

    // An empty delimiter would split every topic into characters.
    let mut proc = Proc::spawn(&["connect", "cron"], dir.path(), &[("topic_delimiter", "")]);
    assert_ne!(proc.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    assert!(proc.output().contains("hub.topic_delimiter"), "{}", proc.output());

    std::fs::write(dir.path().join("retry.yml"), "hub:\n  retry:\n    attempts: 0\n").unwrap();
    let mut proc = Proc::spawn(&["connect", "cron", "--config", "retry.yml"], dir.path(), &[]);
    assert_ne!(proc.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    assert!(proc.output().contains("hub.retry.attempts"), "{}", proc.output());
}
