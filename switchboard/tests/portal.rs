//! The portal at `/ui/`: OpenFaaS's `/` redirect, behind the API's
//! credentials, with a policy that keeps it to its own origin, and its page
//! rendering the function list in a real browser (headless Chromium).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const STACK: &str = "functions:\n  echo:\n    fprocess: cat\n  shout:\n    fprocess: tr a-z A-Z\n    annotations:\n      topic: orders\n";

/// The page at `url` as headless Chromium leaves it once its scripts have
/// run (10 s of virtual time).
fn rendered(url: &str) -> String {
    let profile = tempdir();
    // The flags this machine needs: no sandbox as root, and no background
    // connections to a network that is closed.
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("chromium is not installed ({e}); scripts/test installs it (apt-get install chromium)")
        });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_portal_is_behind_the_credentials_and_keeps_to_its_origin() {
    let p = Platform::start(&config(""), STACK).await;
    let root = get(&format!("{}/", p.url)).await;
    assert_eq!(root.status, 301);
    assert_eq!(root.header("location").as_deref(), Some("/ui/"));

    let open = get(&format!("{}/ui/", p.url)).await;
    assert_eq!(open.status, 401, "the portal asks for the API's credentials");
    assert!(open.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")));

    let auth = p.auth.clone().unwrap();
    let page = call("GET", &format!("{}/ui/", p.url), &[("Authorization", &auth)], "").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(page.text().contains(r#"<script src="portal.js""#));
    for (file, kind) in [("portal.js", "text/javascript"), ("portal.css", "text/css")] {
        let r = call("GET", &format!("{}/ui/{file}", p.url), &[("Authorization", &auth)], "").await;
        assert_eq!(r.status, 200, "{file}");
        assert!(r.header("content-type").unwrap().starts_with(kind), "{file}");
    }
    // The hub's routes, for the portal: behind the same credentials.
    assert_eq!(get(&format!("{}/ui/hub/topics", p.url)).await.status, 401);
    let topics = call("GET", &format!("{}/ui/hub/topics", p.url), &[("Authorization", &auth)], "").await;
    assert_eq!(topics.json()["topics"][0]["topic"], "orders", "{}", topics.text());
    let letters = call("GET", &format!("{}/ui/hub/dead-letters", p.url), &[("Authorization", &auth)], "").await;
    assert_eq!(letters.json()["letters"], serde_json::json!([]), "{}", letters.text());
    let cross_site = [("Authorization", auth.as_str()), ("Sec-Fetch-Site", "cross-site")];
    let cross = call("GET", &format!("{}/ui/", p.url), &cross_site, "").await;
    assert_eq!(cross.status, 403, "another site cannot frame or fetch it");
}

#[tokio::test]
async fn the_portal_lists_the_functions_in_a_browser() {
    let p = Platform::start(&config(""), STACK).await;
    p.wait_ready(&["echo", "shout"]).await;
    assert_eq!(post(&format!("{}/function/shout", p.url), "a").await.text(), "A");
    let password = std::fs::read_to_string(p.dir.path().join("data/secrets/basic-auth-password")).unwrap();
    let url = format!("http://admin:{}@127.0.0.1:{}/ui/", password.trim(), p.port);
    let dom = rendered(&url);
    for row in [
        r#"<tr data-name="echo"><td><button type="button" aria-label="Show echo">echo</button></td><td>cat</td><td>1/1</td><td>0</td><td></td></tr>"#,
        r#"<tr data-name="shout"><td><button type="button" aria-label="Show shout">shout</button></td><td>tr a-z A-Z</td><td>1/1</td><td>1</td><td>orders</td></tr>"#,
    ] {
        assert!(dom.contains(row), "the page's script rendered {row}:\n{dom}");
    }
    assert!(dom.contains(r#"<span id="info">switchboard-process"#), "{dom}");
}

/// Issue 22: `/function/*` shares the origin of `/ui/` and `/system/*`, so
/// a function's HTML could run script as that origin, with the operator's
/// credentials. Its answers carry `Content-Security-Policy: sandbox`: in
/// Chromium the page's script does not run, and does with the setting off.
#[tokio::test]
async fn a_functions_page_cannot_run_as_the_portals_origin() {
    let dir = tempdir();
    let page = dir.path().join("page.html");
    std::fs::write(
        &page,
        "<html><body><p id=\"out\">script did not run</p><script>\
         document.getElementById('out').textContent = 'script ran';\
         fetch('/system/functions').then(r => r.text())\
           .then(t => { document.getElementById('out').textContent = 'script ran; the API answered ' + t; });\
         </script></body></html>",
    )
    .unwrap();
    let stack = format!(
        "functions:\n  evil:\n    fprocess: cat {}\n    environment:\n      content_type: text/html\n",
        page.display()
    );
    for (sandboxed, setting) in [(true, ""), (false, "gateway:\n  sandbox_functions: false\n")] {
        let d = tempdir();
        let p = Platform::start_in(d, &config(setting), &stack, &[]).await;
        p.wait_ready(&["evil"]).await;
        let r = get(&format!("{}/function/evil", p.url)).await;
        assert_eq!(r.header("content-security-policy").as_deref() == Some("sandbox"), sandboxed, "{setting}");
        let password = std::fs::read_to_string(p.dir.path().join("data/secrets/basic-auth-password")).unwrap();
        let url = format!("http://admin:{}@127.0.0.1:{}/function/evil", password.trim(), p.port);
        let dom = rendered(&url);
        if sandboxed {
            assert!(dom.contains("script did not run"), "the function's script ran as the gateway's origin:\n{dom}");
            assert!(!dom.contains("openfaas-fn"), "{dom}");
        } else {
            assert!(
                dom.contains("script ran"),
                "without the sandbox the page's script runs (the test can tell):\n{dom}"
            );
        }
    }
}

/// A crash-looping function is shown as such, with why, in the list.
#[tokio::test]
async fn the_portal_shows_a_crash_looping_function() {
    let stack = python_function("broken", "broken.py");
    let p = Platform::start(&config(""), &stack).await;
    p.crash_report("broken").await;
    let password = std::fs::read_to_string(p.dir.path().join("data/secrets/basic-auth-password")).unwrap();
    let dom = rendered(&format!("http://admin:{}@127.0.0.1:{}/ui/", password.trim(), p.port));
    assert!(dom.contains(r#"class="crash""#) && dom.contains("/1 crash-looping</td>"), "{dom}");
    assert!(dom.contains("No module named"), "the reason, in the cell's title:\n{dom}");
}

/// The on-call walk in a real browser (tests/portal/walkthrough.mjs,
/// Playwright driving Debian's Chromium): deploy, invoke from the keyboard,
/// an event dead-lettered while the function is broken, fixed, replayed
/// from the portal, paused and resumed, a letter purged; then at phone width. Its
/// screenshots are saved in target/portal-screenshots (docs/portal.md).
#[tokio::test]
async fn the_portal_walks_through_a_bad_day_in_a_browser() {
    let walkthrough = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/portal");
    assert!(
        walkthrough.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: scripts/test installs it (npm ci --prefix switchboard/tests/portal)"
    );
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/portal-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let dir = tempdir();
    let (switch, record) = (dir.path().join("broken"), dir.path().join("calls.jsonl"));
    let config = config_with("  retry:\n    attempts: 1\n", "");
    let p = Platform::start_in(dir, &config, "functions: {}\n", &[]).await;
    let password = std::fs::read_to_string(p.dir.path().join("data/secrets/basic-auth-password")).unwrap();
    let command = format!("python3 {}", fixture("switched.py"));
    let env = [
        ("PORTAL_URL", format!("{}/ui/", p.url)),
        ("PORTAL_USER", "admin".to_string()),
        ("PORTAL_PASSWORD", password.trim().to_string()),
        ("CE_URL", p.ce_url.clone()),
        ("SHOTS", shots.display().to_string()),
        ("FUNCTION_COMMAND", command),
        ("SWITCH_FILE", switch.display().to_string()),
        ("RECORD_FILE", record.display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let script = walkthrough.join("walkthrough.mjs").display().to_string();
    let mut node = Proc::spawn_program("node", &[&script], p.dir.path(), &env);
    let code = node.wait_exit(Duration::from_secs(180));
    let out = node.output();
    assert_eq!(code, Some(0), "the walkthrough failed:\n{out}\n--- platform ---\n{}", p.proc.output());
    assert!(out.contains("walkthrough passed"), "{out}");
    // What the function received, each once: the invoke, the replayed
    // letter, and the event sent after the resume (not the purged one).
    let bodies: Vec<String> = calls(&record).iter().map(|c| c["body"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(bodies, ["hello", "order 1", "order 2"]);
    assert_eq!(p.dead_letters().len(), 2, "two letters were written (their JSON-lines copy)");
    let auth = p.auth.clone().unwrap();
    let stored = call("GET", &format!("{}/dead-letters", p.hub_url), &[("Authorization", &auth)], "").await;
    assert_eq!(stored.json()["letters"], serde_json::json!([]), "the replayed and the purged letters left the store");
}
