//! Process functions run isolated (`provider.isolation: sandbox`, the
//! default): each replica in namespaces of its own, finding its secrets
//! where OpenFaaS puts them and nothing of the platform's or other
//! functions'. Each escape is tried from inside a function.

mod common;
use common::*;
use std::time::Duration;

/// Deploys the probe function `name` with `extra` deployment JSON fields.
async fn deploy_probe(p: &Platform, name: &str, extra: serde_json::Value) {
    let mut d = serde_json::json!({"service": name, "image": "x", "envProcess": format!("sh {}", fixture("probe.sh"))});
    d.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let r = p.api("POST", "/system/functions", &d.to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    p.wait_ready(&[name]).await;
}

/// What `try` (`read PATH`, `write PATH`, `eat MiB`) gives inside `function`.
async fn attempt(p: &Platform, function: &str, what: &str) -> Resp {
    call("POST", &format!("{}/function/{function}", p.url), &[], format!("{what}\n")).await
}

async fn secret(p: &Platform, method: &str, name: &str, value: &str) {
    let r = p.api(method, "/system/secrets", &serde_json::json!({"name": name, "value": value}).to_string()).await;
    assert!(r.status < 300, "{}", r.text());
}

#[tokio::test]
async fn a_function_reads_its_own_secrets_and_nothing_of_the_platform() {
    let p = Platform::start(&config(""), NO_STACK).await;
    secret(&p, "POST", "mine", "s3cret").await;
    secret(&p, "POST", "theirs", "not-yours").await;
    deploy_probe(&p, "probe", serde_json::json!({"secrets": ["mine"]})).await;
    deploy_probe(&p, "other", serde_json::json!({"secrets": ["theirs"]})).await;

    let own = attempt(&p, "probe", "read /var/openfaas/secrets/mine").await;
    assert_eq!((own.status, own.text().as_str()), (200, "s3cret"), "its own secret, at OpenFaaS's path");

    let dir = p.dir.path().display().to_string();
    let up = p.proc.pid().as_raw();
    for path in [
        "/var/openfaas/secrets/theirs".to_string(),
        format!("{dir}/data/secrets/basic-auth-password"),
        format!("{dir}/data/queue.redb"),
        format!("{dir}/data/functions.json"),
        format!("{dir}/data/function-secrets/openfaas-fn/theirs"),
        format!("{dir}/data/function-secrets/.mounts/openfaas-fn/other/theirs"),
        // Through the platform's own process: not there in the sandbox's /proc.
        format!("/proc/{up}/root{dir}/data/secrets/basic-auth-password"),
        format!("/proc/{up}/environ"),
    ] {
        let r = attempt(&p, "probe", &format!("read {path}")).await;
        assert_ne!(r.status, 200, "{path} was readable inside the function: {}", r.text());
    }
    // The checks above could pass: the files are there, for the platform.
    assert!(std::fs::metadata(format!("{dir}/data/secrets/basic-auth-password")).is_ok());

    // No capability held, none to be gained.
    let status = attempt(&p, "probe", "read /proc/self/status").await.text();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");

    // An update reaches the running function.
    secret(&p, "PUT", "mine", "rotated").await;
    assert_eq!(attempt(&p, "probe", "read /var/openfaas/secrets/mine").await.text(), "rotated");
}

/// `/tmp` is the function's own; `readOnlyRootFilesystem` leaves only it
/// writable.
#[tokio::test]
async fn tmp_is_private_and_a_read_only_root_is_read_only() {
    let p = Platform::start(&config(""), NO_STACK).await;
    deploy_probe(&p, "rw", serde_json::json!({})).await;
    deploy_probe(&p, "ro", serde_json::json!({"readOnlyRootFilesystem": true})).await;
    let dir = p.dir.path().display().to_string();

    assert_eq!(attempt(&p, "rw", "write /tmp/mark").await.status, 200);
    assert_ne!(attempt(&p, "ro", "read /tmp/mark").await.status, 200, "another function's /tmp");
    assert_eq!(attempt(&p, "ro", "write /tmp/scratch").await.status, 200, "a read-only function's scratch /tmp");

    assert_ne!(attempt(&p, "ro", &format!("write {dir}/ro.txt")).await.status, 200);
    assert!(!p.dir.path().join("ro.txt").exists());
    assert_eq!(attempt(&p, "rw", &format!("write {dir}/rw.txt")).await.status, 200);
    assert!(p.dir.path().join("rw.txt").exists());
}

/// `limits.memory` holds: a function that takes more is killed; one that
/// stays under it answers.
#[tokio::test]
async fn a_memory_limit_kills_a_function_that_exceeds_it() {
    let p = Platform::start(&config(""), NO_STACK).await;
    deploy_probe(&p, "small", serde_json::json!({"limits": {"memory": "64Mi"}})).await;
    let r = attempt(&p, "small", "eat 16").await;
    assert_eq!((r.status, r.text().trim()), (200, "held 16 MiB"));
    let r = attempt(&p, "small", "eat 256").await;
    assert_ne!(r.status, 200, "256 MiB under a 64 MiB limit: {}", r.text());
    deploy_probe(&p, "large", serde_json::json!({})).await;
    assert_eq!(attempt(&p, "large", "eat 256").await.status, 200, "no limit, no kill");

    // limits.cpu: a CFS quota of half the period (this machine's cgroup v1 layout).
    deploy_probe(&p, "capped", serde_json::json!({"limits": {"cpu": "500m"}})).await;
    let quota = std::fs::read_dir("/sys/fs/cgroup/cpu/switchboard")
        .expect("the cpu controller's cgroups (cgroup v1, as this machine has)")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("openfaas-fn.capped-"))
        .map(|e| std::fs::read_to_string(e.path().join("cpu.cfs_quota_us")).unwrap());
    assert_eq!(quota.as_deref().map(str::trim), Some("50000"));

    let r = p
        .api(
            "POST",
            "/system/functions",
            r#"{"service":"bad","image":"x","envProcess":"cat","limits":{"memory":"lots"}}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

/// With `provider.isolation: none` functions see what the platform sees
/// (the control for the tests above), and every start says so.
#[tokio::test]
async fn isolation_none_is_loud() {
    let config = config("").replace("  stop_timeout: 3s\n", "  stop_timeout: 3s\n  isolation: none\n");
    let p = Platform::start(&config, NO_STACK).await;
    deploy_probe(&p, "probe", serde_json::json!({})).await;
    let path = format!("{}/data/secrets/basic-auth-password", p.dir.path().display());
    assert_eq!(attempt(&p, "probe", &format!("read {path}")).await.status, 200);
    assert!(p.proc.output().contains("provider.isolation: none"), "{}", p.proc.output());
}

/// A machine where bubblewrap is missing, or cannot make namespaces, does
/// not start the process provider, and says how to opt out.
#[tokio::test]
async fn a_machine_without_namespaces_refuses_to_start() {
    let bin = tempdir();
    for (why, fake) in [
        ("not installed", None),
        // What bwrap prints where user namespaces are off.
        ("no namespaces", Some("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")),
    ] {
        if let Some(script) = fake {
            let path = bin.path().join("bwrap");
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let dir = tempdir();
        std::fs::write(dir.path().join("stack.yml"), NO_STACK).unwrap();
        let config = config("")
            .replace("STACK", &dir.path().join("stack.yml").display().to_string())
            .replace("HUB_PORT", &free_port().to_string())
            .replace("CE_PORT", &free_port().to_string());
        std::fs::write(dir.path().join("switchboard.yml"), config).unwrap();
        let path = format!("{}:/nonexistent", bin.path().display());
        let mut proc =
            Proc::spawn(&["up", "--config", "switchboard.yml", "--port", "0"], dir.path(), &[("PATH", &path)]);
        assert_ne!(proc.wait_exit(Duration::from_secs(20)), Some(0), "{why}: started");
        let out = proc.output();
        assert!(out.contains("provider.isolation: none"), "{why}: {out}");
        let reason = if fake.is_some() { "No permissions to create new namespace" } else { "apt install bubblewrap" };
        assert!(out.contains(reason), "{why}: {out}");
    }
}

/// A state file kept in the working folder, where functions' own files are
/// too, is hidden alone.
#[tokio::test]
async fn a_state_file_beside_the_functions_is_hidden_alone() {
    let config = config("").replace("path: data/queue.redb", "path: queue.redb");
    let p = Platform::start(&config, NO_STACK).await;
    deploy_probe(&p, "probe", serde_json::json!({})).await;
    let dir = p.dir.path().display().to_string();
    assert!(p.dir.path().join("queue.redb").is_file());
    let r = attempt(&p, "probe", &format!("read {dir}/queue.redb")).await;
    assert_ne!(r.status, 200, "the queue was readable inside the function");
    assert_eq!(attempt(&p, "probe", &format!("write {dir}/mine.txt")).await.status, 200, "its folder is still its own");
}
