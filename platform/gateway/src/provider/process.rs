//! The process runtime: a replica is a watchdog child process on a loopback
//! port, in front of the deployment's `envProcess`, in a sandbox of its own
//! ([`Sandbox`]) and cgroups holding its `limits`, told to stop when this
//! process dies (even by SIGKILL).

use super::cgroup::Cgroup;
use super::limits::Limits;
use super::replicas::{Instance, Supervised, forward_lines, free_port};
use super::sandbox::{SECRETS_DIR, Sandbox};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use openfaas::FunctionDeployment;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncRead;

/// Environment a function inherits from the gateway; everything else comes
/// from its deployment, so the gateway's own settings never leak into it.
const INHERITED_ENV: [&str; 6] = ["PATH", "HOME", "USER", "LANG", "TMPDIR", "TZ"];

/// The watchdog's environment for one replica listening on `port`:
/// `defaults` under the deployment's own variables.
pub(super) fn environment(
    d: &FunctionDeployment,
    port: u16,
    secrets: Option<&Path>,
    sandboxed: bool,
    defaults: &BTreeMap<String, String>,
) -> std::io::Result<BTreeMap<String, String>> {
    let mut env: BTreeMap<String, String> =
        INHERITED_ENV.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect();
    env.extend(defaults.clone());
    env.extend(d.env_vars.clone());
    env.insert("fprocess".into(), d.env_process.clone().unwrap_or_default());
    env.entry("mode".into()).or_insert_with(|| "serializing".into());
    env.insert("port".into(), port.to_string());
    env.insert("bind_address".into(), "127.0.0.1".into());
    // Each replica is removed from routing before it is stopped, and
    // replicas share /tmp, so neither the drain delay nor the lock file helps.
    env.insert("suppress_lock".into(), "true".into());
    if sandboxed {
        // Its own, where OpenFaaS puts them.
        env.insert("TMPDIR".into(), "/tmp".into());
        env.insert("secret_mount_path".into(), SECRETS_DIR.into());
    } else if let Some(dir) = secrets {
        env.insert("secret_mount_path".into(), dir.display().to_string());
    }
    env.insert("healthcheck_interval".into(), "0s".into());
    if env.get("mode").map(String::as_str) == Some("http") && !env.contains_key("upstream_url") {
        let upstream = free_port()?;
        env.insert("upstream_url".into(), format!("http://127.0.0.1:{upstream}"));
        env.insert("PORT".into(), upstream.to_string());
    }
    Ok(env)
}

/// Runs the watchdog once: `Some(why)` when it exited, `None` when it was
/// told to stop and has stopped.
pub(super) async fn run(s: &mut Supervised, watchdog: &[String], sandbox: Option<&Sandbox>) -> Option<String> {
    // Checked when the function was deployed.
    let limits = Limits::of(&s.deployment).unwrap_or_default();
    let cgroup = if limits.any() {
        match Cgroup::create(&format!("{}.{}", s.namespace, s.instance), &limits) {
            Ok(cgroup) => Some(cgroup),
            Err(e) => return Some(e),
        }
    } else {
        None
    };
    let mut command = watchdog.to_vec();
    let command = match sandbox {
        // bwrap ends the sandbox with this process.
        Some(sandbox) => sandbox.command(&command, &s.deployment, s.secrets.as_deref()),
        None => {
            command.extend(["--parent".to_string(), std::process::id().to_string()]);
            command
        }
    };
    let procs = cgroup.as_ref().map(Cgroup::procs).unwrap_or_default();
    let command = launched(&procs, sandbox.is_some(), command);
    let ended = run_command(s, &command, sandbox.is_some()).await;
    if let Some(cgroup) = cgroup {
        cgroup.remove().await;
    }
    ended
}

/// `command`, started by a shell that first joins the cgroups whose
/// `cgroup.procs` files are `procs`, so every process of the replica is in
/// them from its start (joining from here after the spawn would race).
/// bwrap is made deaf to SIGTERM: it would die of one without passing it
/// on, taking its sandbox with it undrained, when a stop signals every
/// process (systemd's does); the watchdog inside drains, and bwrap ends
/// when it does.
fn launched(procs: &[std::path::PathBuf], sandboxed: bool, command: Vec<String>) -> Vec<String> {
    if procs.is_empty() && !sandboxed {
        return command;
    }
    let deaf = if sandboxed { "trap '' TERM; " } else { "" };
    let script = format!(r#"{deaf}while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#);
    let mut joined = vec!["/bin/sh".into(), "-c".into(), script, "sh".into()];
    joined.extend(procs.iter().map(|p| p.display().to_string()));
    joined.push("--".into());
    joined.extend(command);
    joined
}

async fn run_command(s: &mut Supervised, command: &[String], sandboxed: bool) -> Option<String> {
    let spawned = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env_clear()
        .envs(&s.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // A group of its own: the terminal's Ctrl-C reaches `up` alone (the
        // replicas stop when it says, not all at once with it), and the
        // group is swept when the replica ends, so no function outlives it.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Some(format!("cannot start the watchdog {}: {e}", command.join(" "))),
    };
    for out in [
        child.stdout.take().map(|o| Box::new(o) as Box<dyn AsyncRead + Send + Unpin>),
        child.stderr.take().map(|e| Box::new(e) as Box<dyn AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        tokio::spawn(forward_lines(out, s.logs.clone(), s.template()));
    }
    let group = child.id().map(|pid| Pid::from_raw(pid as i32));
    s.endpoint.running(child.id().map(Instance::Process));
    let ended = tokio::select! {
        status = child.wait() => Some(status.map(|st| st.to_string()).unwrap_or_else(|e| e.to_string())),
        _ = &mut s.stopped => {
            terminate(&mut child, s.settings.stop_timeout, sandboxed).await;
            None
        }
    };
    s.endpoint.running(None);
    // Whatever the watchdog left behind (its function, after a SIGKILL or a
    // crash) would hold the replica's ports: the group goes with it.
    if let Some(group) = group {
        let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
    }
    ended
}

/// SIGTERM to the watchdog (which drains, then stops its function), then
/// SIGKILL if it has not stopped within `limit`. A sandboxed watchdog is
/// bwrap's child: bwrap would not pass the signal on.
async fn terminate(child: &mut tokio::process::Child, limit: Duration, sandboxed: bool) {
    let watchdog = child.id().and_then(|pid| if sandboxed { child_of(pid) } else { Some(Pid::from_raw(pid as i32)) });
    if let Some(pid) = watchdog {
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    }
    if tokio::time::timeout(limit, child.wait()).await.is_err() {
        tracing::warn!(?limit, "replica did not stop after SIGTERM; killing it");
        let _ = child.kill().await;
    }
}

/// The one child of `parent`: a sandboxed watchdog, under bwrap.
fn child_of(parent: u32) -> Option<Pid> {
    processes().find_map(|(pid, p)| (p.parent == parent).then(|| Pid::from_raw(pid as i32)))
}

/// The CPU time, in nanoseconds, each process tree headed by one of
/// `roots` has used: its live processes' own, and what the children they
/// waited for used (a fork-mode function's).
pub(super) fn cpu_nanos(roots: &[u32]) -> Vec<u64> {
    let all: Vec<(u32, Stat)> = processes().collect();
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0).unwrap_or(100);
    roots
        .iter()
        .map(|root| {
            let mut tree = vec![*root];
            let mut ticks = 0;
            while let Some(pid) = tree.pop() {
                for (child, p) in &all {
                    if *child == pid {
                        ticks += p.cpu_ticks;
                    } else if p.parent == pid {
                        tree.push(*child);
                    }
                }
            }
            ticks * 1_000_000_000 / tick as u64
        })
        .collect()
}

/// What this gateway reads of a process's `/proc/PID/stat`.
struct Stat {
    parent: u32,
    /// User and system time, its own and its waited-for children's.
    cpu_ticks: u64,
}

/// Every process this gateway can see, by pid.
fn processes() -> impl Iterator<Item = (u32, Stat)> {
    let entries = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    entries.filter_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields from the third on, after the parenthesised name: the
        // parent is the fourth, the times the fourteenth to seventeenth.
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
        let parent = fields.get(1)?.parse().ok()?;
        let cpu_ticks = fields.get(11..15)?.iter().filter_map(|f| f.parse::<u64>().ok()).sum();
        Some((pid, Stat { parent, cpu_ticks }))
    })
}
