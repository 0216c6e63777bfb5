//! Faults an unlucky operator meets: a platform killed with -9, a restart,
//! a full disk, a mistaken replica count. Each test is bounded in time and
//! stops what it started.

mod common;
use common::*;
use std::time::Duration;

/// The pids of the watchdog processes `pid` started: its children, or
/// their children when a sandbox (bwrap) runs them.
fn watchdogs_of(pid: i32) -> Vec<i32> {
    let parent_of = |p: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // Field 4 of /proc/PID/stat, after the parenthesised name, is the parent's pid.
        stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<i32>().ok())
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let program = cmd.split('\0').next().unwrap_or_default();
            let parent = parent_of(*p);
            (parent == Some(pid) || parent.and_then(parent_of) == Some(pid))
                && program.contains("switchboard")
                && cmd.contains("watchdog")
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test]
async fn replicas_are_bounded() {
    let stack = "functions:\n  echo:\n    fprocess: cat\n    labels:\n      com.openfaas.scale.max: \"2\"\n";
    let config = config("").replace("  stop_timeout: 3s\n", "  stop_timeout: 3s\n  max_replicas: 3\n");
    let p = Platform::start(&config, stack).await;
    p.wait_ready(&["echo"]).await;
    let r = p.api("POST", "/system/scale-function/echo", r#"{"serviceName":"echo","replicas":1000000000}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("maximum of 2") && r.text().contains("com.openfaas.scale.max"), "{}", r.text());
    assert_eq!(p.api("POST", "/system/scale-function/echo", r#"{"replicas":2}"#).await.status, 202);
    assert_eq!(get(&format!("{}/healthz", p.url)).await.status, 200);

    // The provider's own cap, and a scale.min over it.
    let d = r#"{"service":"big","image":"x","envProcess":"cat","labels":{"com.openfaas.scale.min":"5"}}"#;
    let r = p.api("POST", "/system/functions", d).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("maximum of 3"), "{}", r.text());
    let d = r#"{"service":"small","image":"x","envProcess":"cat"}"#;
    assert_eq!(p.api("POST", "/system/functions", d).await.status, 202);
    let r = p.api("POST", "/system/scale-function/small", r#"{"replicas":4}"#).await;
    assert!(r.status == 400 && r.text().contains("maximum of 3"), "{}", r.text());
}

#[tokio::test]
async fn names_openfaas_refuses_are_refused() {
    let p = Platform::start(&config(""), NO_STACK).await;
    let long = "a".repeat(64);
    for name in ["Upper", "-dash", "under_score", "dot.ted", long.as_str()] {
        let d = serde_json::json!({"service": name, "image": "x", "envProcess": "cat"});
        let r = p.api("POST", "/system/functions", &d.to_string()).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert!(r.text().contains("DNS label"), "{}", r.text());
    }
    let d = r#"{"service":"ok","image":"x","envProcess":"cat","namespace":"Team"}"#;
    assert_eq!(p.api("POST", "/system/functions", d).await.status, 400);
}

/// Functions deployed and scaled through the API outlive a restart; a
/// deleted one stays deleted.
#[tokio::test]
async fn api_deployments_survive_a_restart() {
    let dir = tempdir();
    let mut p = Platform::start_in(dir, &config(""), NO_STACK, &[]).await;
    let ns = r#"{"name":"team-b","labels":{"openfaas":"1"}}"#;
    assert_eq!(p.api("POST", "/system/namespace/", ns).await.status, 202);
    let d = r#"{"service":"b","image":"x","envProcess":"cat","namespace":"team-b"}"#;
    assert_eq!(p.api("POST", "/system/functions", d).await.status, 202);
    for (name, command) in [("shout", "tr a-z A-Z"), ("gone", "cat")] {
        let d =
            serde_json::json!({"service": name, "image": "x", "envProcess": command, "annotations": {"topic": "t"}});
        assert_eq!(p.api("POST", "/system/functions", &d.to_string()).await.status, 202);
    }
    assert_eq!(p.api("POST", "/system/scale-function/shout", r#"{"replicas":2}"#).await.status, 202);
    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"gone"}"#).await.status, 202);

    p.proc.crash();
    p.proc = Proc::spawn(&["up", "--config", "switchboard.yml", "--port", &p.port.to_string()], p.dir.path(), &[]);
    p.wait_ready(&["shout"]).await;
    let f = p.api("GET", "/system/function/shout", "").await.json();
    assert_eq!((f["replicas"].as_u64(), f["annotations"]["topic"].as_str()), (Some(2), Some("t")));
    assert_eq!(post(&format!("{}/function/shout", p.url), "back").await.text(), "BACK");
    assert_eq!(p.api("GET", "/system/function/gone", "").await.status, 404);
    p.wait_ready(&["b.team-b"]).await;
    assert_eq!(p.api("GET", "/system/namespace/team-b", "").await.status, 200);
    assert!(p.proc.output().contains("restored functions deployed through the API"), "{}", p.proc.output());
    let state = std::fs::metadata(p.dir.path().join("data/functions.json")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&state.permissions()) & 0o777, 0o600, "it holds env values");
}

/// Restarts `p` on the stack `stack`, as an operator who edited stack.yml.
async fn restart_with_stack(p: &mut Platform, stack: &str) {
    p.proc.stop();
    std::fs::write(p.dir.path().join("stack.yml"), stack).unwrap();
    p.proc = Proc::spawn(&["up", "--config", "switchboard.yml", "--port", &p.port.to_string()], p.dir.path(), &[]);
    p.wait_ready(&["sink"]).await;
}

/// A scale through the API records a replica count, not the definition:
/// stack.yml edited afterwards applies at the next start, with the count.
#[tokio::test]
async fn a_stack_edit_after_an_api_scale_applies() {
    let dir = tempdir();
    let mut p = Platform::start_in(dir, &config(""), "functions:\n  sink:\n    fprocess: cat\n", &[]).await;
    p.wait_ready(&["sink"]).await;
    assert_eq!(p.api("POST", "/system/scale-function/sink", r#"{"replicas":2}"#).await.status, 202);

    restart_with_stack(&mut p, "functions:\n  sink:\n    fprocess: tr a-z A-Z\n").await;
    assert_eq!(post(&format!("{}/function/sink", p.url), "edited").await.text(), "EDITED", "the stack's edit runs");
    assert_eq!(p.api("GET", "/system/function/sink", "").await.json()["replicas"], 2, "the API's count is kept");
}

/// An update through the API outlives restarts while stack.yml is as it
/// was; an edit of stack.yml made after it wins, and the log says so.
#[tokio::test]
async fn a_stack_edit_after_an_api_update_wins_over_it() {
    let dir = tempdir();
    let stack = "functions:\n  sink:\n    fprocess: cat\n";
    let mut p = Platform::start_in(dir, &config(""), stack, &[]).await;
    p.wait_ready(&["sink"]).await;
    let d = r#"{"service":"sink","image":"x","envProcess":"tr a-z A-Z"}"#;
    assert_eq!(p.api("PUT", "/system/functions", d).await.status, 202);

    restart_with_stack(&mut p, stack).await;
    assert_eq!(post(&format!("{}/function/sink", p.url), "api").await.text(), "API", "the API's update is kept");

    restart_with_stack(&mut p, "functions:\n  sink:\n    fprocess: rev\n").await;
    assert_eq!(post(&format!("{}/function/sink", p.url), "stack").await.text(), "kcats", "the later stack edit runs");
    assert!(p.proc.output().contains("superseding the API's recorded one"), "{}", p.proc.output());

    // Superseded for good: the next start runs the stack's, quietly.
    restart_with_stack(&mut p, "functions:\n  sink:\n    fprocess: rev\n").await;
    assert_eq!(post(&format!("{}/function/sink", p.url), "again").await.text(), "niaga");
}

/// kill -9 of `switchboard up` takes its watchdogs with it: none is left
/// holding a port.
#[tokio::test]
async fn watchdogs_die_with_a_killed_platform() {
    let stack = "functions:\n  echo:\n    fprocess: cat\n    labels:\n      com.openfaas.scale.min: \"2\"\n";
    let p = Platform::start(&config(""), stack).await;
    p.wait_ready(&["echo"]).await;
    let up = p.proc.pid().as_raw();
    let watchdogs = watchdogs_of(up);
    assert_eq!(watchdogs.len(), 2, "{watchdogs:?}");
    // SIGKILL to the platform alone, not its process group.
    nix::sys::signal::kill(p.proc.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    let gone = eventually(Duration::from_secs(10), || async { watchdogs.iter().all(|w| !alive(*w)) }).await;
    assert!(gone, "watchdogs outlived their platform: {watchdogs:?}");
}

/// Asynchronous calls to a function deployed through the API, queued when
/// the platform is killed with -9: after the restart every one is answered
/// by the function, none ends with "not found".
#[tokio::test]
async fn queued_calls_to_api_functions_survive_kill_9() {
    let dir = tempdir();
    let queue = "  max_inflight: 1\n";
    let mut p = Platform::start_in(dir, &config(queue), NO_STACK, &[]).await;
    let d = serde_json::json!({
        "service": "slow", "image": "x", "envProcess": fixture("record.sh"),
        "envVars": {"RECORD_FILE": p.dir.path().join("slow.log").display().to_string(), "SLEEP": "0.2"}
    });
    assert_eq!(p.api("POST", "/system/functions", &d.to_string()).await.status, 202);
    p.wait_ready(&["slow"]).await;
    let (cb, mut rx) = recorder().await;
    const N: usize = 20;
    for i in 0..N {
        let r =
            call("POST", &format!("{}/async-function/slow", p.url), &[("X-Callback-Url", &cb)], format!("{i}")).await;
        assert_eq!(r.status, 202);
    }
    let before = receive(&mut rx, 2, Duration::from_secs(10)).await;
    p.proc.crash();
    p.proc = Proc::spawn(&["up", "--config", "switchboard.yml", "--port", &p.port.to_string()], p.dir.path(), &[]);
    // At least once: a call answered just before the kill may be answered again.
    let mut seen: std::collections::BTreeSet<String> = before.iter().map(|r| r.body.clone()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while seen.len() < N && tokio::time::Instant::now() < deadline {
        for r in receive(&mut rx, 1, Duration::from_secs(1)).await {
            assert_eq!(r.headers["x-function-status"], "200", "{r:?}\n{}", p.proc.output());
            seen.insert(r.body);
        }
    }
    assert!(before.iter().all(|r| r.headers["x-function-status"] == "200"), "{before:?}");
    let bodies: Vec<String> = seen.into_iter().collect();
    assert_eq!(bodies.len(), N, "every call answered at least once: {bodies:?}");
}

/// A queue retry policy quick enough for a test.
const QUICK_RETRY: &str = "  retry:\n    attempts: 4\n    min_wait: 100ms\n    max_wait: 300ms\n";

/// A callback receiver that is down at first is retried until it takes the
/// result; the function runs once. One that never comes up ends among the
/// dead letters, with the function's answer and the callback's failure.
#[tokio::test]
async fn callbacks_are_retried_then_dead_lettered() {
    let dir = tempdir();
    let log = dir.path().join("r.log");
    let stack = format!("functions:\n{}", recorder_fn("r", dir.path(), "", "      x: y\n"));
    let p = Platform::start_in(dir, &config(QUICK_RETRY), &stack, &[]).await;
    p.wait_ready(&["r"]).await;

    let late = free_port();
    let late_url = format!("http://127.0.0.1:{late}/done");
    let r = call("POST", &format!("{}/async-function/r", p.url), &[("X-Callback-Url", &late_url)], "once").await;
    assert_eq!(r.status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The receiver comes up on the port the callback was refused on.
    let head =
        late_callback(late).await.unwrap_or_else(|| panic!("the callback was not retried:\n{}", p.proc.output()));
    assert!(head.contains("x-function-status: 200"), "{head}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1, "the function ran once");

    let never = format!("http://127.0.0.1:{}/never", free_port());
    let r = call("POST", &format!("{}/async-function/r", p.url), &[("X-Callback-Url", &never)], "lost?").await;
    let call_id = r.header("x-call-id").unwrap();
    let dead = eventually(Duration::from_secs(15), || async {
        p.api("GET", "/system/async/dead-letters", "").await.json()[0]["call_id"] == call_id.as_str()
    })
    .await;
    assert!(dead, "no dead letter for a callback that never landed:\n{}", p.proc.output());
    let letter = &p.api("GET", "/system/async/dead-letters", "").await.json()[0];
    assert_eq!(letter["last_status"], 200);
    assert!(letter["last_error"].as_str().unwrap().contains("callback"), "{letter}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2, "the function ran once per call");
}

/// A queued call whose function is deleted before it runs is retried, then
/// dead-lettered as "not found"; it is never settled as answered.
#[tokio::test]
async fn a_call_to_a_deleted_function_is_dead_lettered() {
    let dir = tempdir();
    let p = Platform::start_in(dir, &config(&format!("  max_inflight: 1\n{QUICK_RETRY}")), NO_STACK, &[]).await;
    let d = serde_json::json!({
        "service": "doomed", "image": "x", "envProcess": fixture("record.sh"),
        "envVars": {"RECORD_FILE": p.dir.path().join("d.log").display().to_string(), "SLEEP": "1"}
    });
    assert_eq!(p.api("POST", "/system/functions", &d.to_string()).await.status, 202);
    p.wait_ready(&["doomed"]).await;
    for body in ["first", "second"] {
        assert_eq!(post(&format!("{}/async-function/doomed", p.url), body).await.status, 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"doomed"}"#).await.status, 202);
    let dead = eventually(Duration::from_secs(15), || async {
        let letters = p.api("GET", "/system/async/dead-letters", "").await.json();
        letters.as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    assert!(dead, "the call to a deleted function was not dead-lettered:\n{}", p.proc.output());
    let letter = &p.api("GET", "/system/async/dead-letters", "").await.json()[0];
    assert!(letter["last_error"].as_str().unwrap().contains("not found"), "{letter}");
    assert_eq!(letter["last_status"], 404);
}

/// A dead letter that cannot be written (a full disk) was not
/// dead-lettered: the event is reported undelivered, so the sender retries;
/// with space back the same event is dead-lettered and acknowledged.
#[tokio::test]
async fn an_unwritable_dead_letter_is_not_acknowledged() {
    let dir = tempdir();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "1m");
    let config = config_with("  dead_letter_store: disk/dead.redb\n", "");
    let p = Platform::start_in(dir, &config, &failing_function("broken", "fail"), &[]).await;
    p.wait_ready(&["broken"]).await;
    p.receiving().await;
    let headers = [("ce-id", "1"), ("ce-source", "/t"), ("ce-type", "fail"), ("ce-specversion", "1.0")];
    let filler = disk.fill();
    let r = call("POST", &p.ce_url, &headers, "x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("No space left"), "{}", r.text());
    std::fs::remove_file(filler).unwrap();
    let r = call("POST", &p.ce_url, &headers, "x").await;
    assert_eq!((r.status, r.json()["dead_lettered"].as_u64()), (200, Some(1)), "{}", r.text());
    assert_eq!(p.dead_letters().len(), 1, "the store's copy");
    let auth = p.auth.clone().unwrap();
    let listed = call("GET", &format!("{}/dead-letters", p.hub_url), &[("Authorization", &auth)], "").await;
    assert_eq!(listed.json()["letters"].as_array().map(Vec::len), Some(1), "{}", listed.text());
}

/// A small filesystem of the test's own (tmpfs, needs root as CI has),
/// unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount a tmpfs at {} (the disk-full tests need root)", dir.display());
        Self(dir.to_path_buf())
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The embedded queue on a full disk refuses requests with a clear answer
/// and reports unhealthy; once space is back it takes and delivers them
/// again, without a restart.
#[tokio::test]
async fn the_queue_recovers_when_the_disk_does() {
    let dir = tempdir();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "8m");
    let config = config("").replace("path: data/queue.redb", "path: disk/queue.redb");
    let p = Platform::start_in(dir, &config, "functions:\n  echo:\n    fprocess: cat\n", &[]).await;
    p.wait_ready(&["echo"]).await;
    let (cb, mut rx) = recorder().await;
    let send = |body: String| {
        let url = format!("{}/async-function/echo", p.url);
        let cb = cb.clone();
        async move { call("POST", &url, &[("X-Callback-Url", &cb)], body).await }
    };
    assert_eq!(send("before".into()).await.status, 202);
    assert_eq!(receive(&mut rx, 1, Duration::from_secs(10)).await.len(), 1);

    let filler = disk.fill();
    let big = "x".repeat(256 * 1024);
    let r = send(big.clone()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("cannot queue"), "{}", r.text());
    assert_eq!(r.header("retry-after").as_deref(), Some("5"), "the caller may try again");
    let unhealthy = get(&format!("{}/healthz", p.url)).await;
    assert_eq!(unhealthy.status, 503, "{}", unhealthy.text());

    std::fs::remove_file(filler).unwrap();
    let healthy =
        eventually(Duration::from_secs(10), || async { get(&format!("{}/healthz", p.url)).await.status == 200 }).await;
    assert!(healthy, "still unhealthy with space back:\n{}", p.proc.output());
    assert_eq!(send("after".into()).await.status, 202, "{}", p.proc.output());
    let got = receive(&mut rx, 1, Duration::from_secs(10)).await;
    assert_eq!(got.first().map(|r| r.body.as_str()), Some("after"), "{}", p.proc.output());
    drop(p);
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // utime and stime are fields 14 and 15; the slice starts at field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

async fn wait_healthy(url: &str, proc: &Proc) {
    let up = eventually(Duration::from_secs(20), || async { get(&format!("{url}/healthz")).await.status == 200 });
    assert!(up.await, "{}", proc.output());
}

/// Out of file descriptors, the accept loop pauses instead of spinning, and
/// serves again once connections close.
#[tokio::test]
async fn running_out_of_file_descriptors_does_not_spin() {
    let dir = tempdir();
    std::fs::write(dir.path().join("g.yml"), "queue:\n  enabled: false\nprovider:\n  kind: process\n").unwrap();
    let port = free_port().to_string();
    let proc = Proc::spawn_program(
        "sh",
        &["-c", "ulimit -n 64 && exec \"$@\"", "sh", BIN, "gateway", "--config", "g.yml", "--port", &port],
        dir.path(),
        &[],
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&url, &proc).await;
    let held: Vec<std::net::TcpStream> =
        (0..80).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port.parse().unwrap())).ok()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = proc.pid().as_raw();
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(pid) - before;
    // A spinning loop burns all of the 2 s (200 ticks at 100 Hz); pausing, next to none.
    assert!(spent < 50, "{spent} ticks of CPU in 2 s with no file descriptors left");
    assert!(proc.output().contains("cannot accept a connection"), "{}", proc.output());
    drop(held);
    let back = eventually(Duration::from_secs(10), || async { get(&format!("{url}/healthz")).await.status == 200 });
    assert!(back.await, "not serving again after connections closed:\n{}", proc.output());
}

/// Past `gateway.max_connections` a few places are kept for probes: health
/// and metrics answer, anything else is told to retry (503), and past those
/// a connection waits for a place instead of taking memory and descriptors.
#[tokio::test]
async fn connections_are_limited() {
    let p = Platform::start(&config("gateway:\n  max_connections: 2\n"), NO_STACK).await;
    let connect = |_| std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    // The start's own health checks close their connections first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle: Vec<std::net::TcpStream> = (0..2).map(connect).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("{}/healthz", p.url);
    assert_eq!(get(&url).await.status, 200, "a probe is answered past max_connections");
    let r = post(&format!("{}/function/nope", p.url), "").await;
    assert_eq!((r.status, r.header("retry-after").as_deref()), (503, Some("1")), "{}", r.text());
    assert!(r.text().contains("max_connections"), "{}", r.text());

    let reserve: Vec<std::net::TcpStream> = (0..8).map(connect).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = tokio::spawn(async move { try_call("GET", &url, &[], "").await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "served past max_connections and the probes' reserve");
    drop((idle, reserve));
    let r = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("served once a place was free");
    assert_eq!(r.unwrap().unwrap().status, 200);
}

/// `provider.watchdog` runs replicas on the small `switchboard-watchdog`
/// binary: it serves, and dies with a platform killed with -9 too.
#[tokio::test]
async fn the_small_watchdog_serves_and_stops_with_its_parent() {
    let small = env!("CARGO_BIN_EXE_switchboard-watchdog");
    let config = config("").replace("  stop_timeout: 3s\n", &format!("  stop_timeout: 3s\n  watchdog: {small}\n"));
    let stack = "functions:\n  echo:\n    fprocess: cat\n  streamed:\n    fprocess: cat\n    environment:\n      mode: streaming\n";
    let p = Platform::start(&config, stack).await;
    p.wait_ready(&["echo", "streamed"]).await;
    for f in ["echo", "streamed"] {
        assert_eq!(post(&format!("{}/function/{f}", p.url), "small").await.text(), "small");
    }
    let watchdogs = watchdogs_of(p.proc.pid().as_raw());
    assert_eq!(watchdogs.len(), 2, "{watchdogs:?}");
    for w in &watchdogs {
        let exe = std::fs::read_link(format!("/proc/{w}/exe")).unwrap();
        assert!(exe.ends_with("switchboard-watchdog"), "{}", exe.display());
    }
    nix::sys::signal::kill(p.proc.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    let gone = eventually(Duration::from_secs(10), || async { watchdogs.iter().all(|w| !alive(*w)) }).await;
    assert!(gone, "small watchdogs outlived their platform: {watchdogs:?}");
}

/// With no `provider.watchdog`, replicas run the small watchdog beside the
/// binary when it is of the same build (as the tests' target directory
/// has it), and `switchboard watchdog` when the one beside it is another
/// build's.
#[tokio::test]
async fn the_small_watchdog_beside_the_binary_is_used_only_when_it_pairs() {
    let stack = "functions:\n  echo:\n    fprocess: cat\n";
    let p = Platform::start(&config(""), stack).await;
    p.wait_ready(&["echo"]).await;
    let watchdogs = watchdogs_of(p.proc.pid().as_raw());
    assert_eq!(watchdogs.len(), 1, "{watchdogs:?}");
    let exe = std::fs::read_link(format!("/proc/{}/exe", watchdogs[0])).unwrap();
    assert!(exe.ends_with("switchboard-watchdog"), "a paired small watchdog runs: {}", exe.display());

    // A copy of the binary beside a switchboard-watchdog of another build.
    let dir = tempdir();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(BIN, bin.join("switchboard")).unwrap();
    let other = bin.join("switchboard-watchdog");
    std::fs::write(&other, "#!/bin/sh\necho 0.0.1-0000000000000000\n").unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (port, hub, ce) = (free_port(), free_port(), free_port());
    std::fs::write(dir.path().join("stack.yml"), stack).unwrap();
    let cfg = config("")
        .replace("STACK", "stack.yml")
        .replace("HUB_PORT", &hub.to_string())
        .replace("CE_PORT", &ce.to_string());
    std::fs::write(dir.path().join("switchboard.yml"), cfg).unwrap();
    let copy = bin.join("switchboard").display().to_string();
    let proc = Proc::spawn_program(
        &copy,
        &["up", "--config", "switchboard.yml", "--port", &port.to_string()],
        dir.path(),
        &[],
    );
    let url = format!("http://127.0.0.1:{port}/function/echo");
    let served = eventually(Duration::from_secs(30), || async {
        try_call("POST", &url, &[], "x").await.is_ok_and(|r| r.status == 200)
    });
    assert!(served.await, "{}", proc.output());
    let watchdogs = watchdogs_of(proc.pid().as_raw());
    assert_eq!(watchdogs.len(), 1, "{watchdogs:?}");
    let exe = std::fs::read_link(format!("/proc/{}/exe", watchdogs[0])).unwrap();
    assert_eq!(exe, bin.join("switchboard"), "another build's small watchdog is not used");
    assert!(proc.output().contains("from another build"), "{}", proc.output());
}

/// A deployment that cannot be recorded (a full disk under
/// `provider.state`) is refused, not made: it would be gone at the next
/// start.
#[tokio::test]
async fn an_unrecordable_deployment_is_refused() {
    let dir = tempdir();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "1m");
    let config = config("").replace("  stop_timeout: 3s\n", "  stop_timeout: 3s\n  state: disk/functions.json\n");
    let p = Platform::start_in(dir, &config, NO_STACK, &[]).await;
    let filler = disk.fill();
    let d = r#"{"service":"kept","image":"x","envProcess":"cat"}"#;
    let r = p.api("POST", "/system/functions", d).await;
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.text().contains("cannot record the change") && r.text().contains("nothing was changed"), "{}", r.text());
    assert_eq!(p.api("GET", "/system/function/kept", "").await.status, 404);
    std::fs::remove_file(filler).unwrap();
    assert_eq!(p.api("POST", "/system/functions", d).await.status, 202);
    p.wait_ready(&["kept"]).await;
}
