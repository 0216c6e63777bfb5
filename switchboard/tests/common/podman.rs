//! podman for the container tests (scripts/containers sets it up): the
//! command, its API's readiness, and the project's images built from the
//! binaries under test, as CI has no Rust image to build them in.

use std::path::Path;
use std::process::Command;

pub const SOCKET: &str = "/run/podman/podman.sock";
pub const WATCHDOG: &str = env!("CARGO_BIN_EXE_switchboard-watchdog");
/// The Dockerfile's prebuilt stage, which a build leaves as an untagged image.
const PREBUILT: &str = "label=io.switchboard.stage=prebuilt";

/// Runs podman; its output, or a failure saying what it printed.
pub fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman is not installed ({e}); set containers up with scripts/containers start"));
    assert!(out.status.success(), "podman {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The engine's API answers, or the test says how to start it.
pub fn engine_ready() {
    use std::io::{Read, Write};
    let ping = std::os::unix::net::UnixStream::connect(SOCKET).and_then(|mut s| {
        s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    });
    match ping {
        Ok(answer) if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") => {}
        other => panic!("podman's API is not serving {SOCKET} ({other:?}); start it with scripts/containers start"),
    }
}

/// Images built by a test, removed by id when it ends, with the prebuilt
/// stage's leftover.
pub struct Images(pub Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Command::new("podman").args(["rmi", "-f", id]).output();
        }
        let _ = Command::new("podman").args(["image", "prune", "-f", "--filter", PREBUILT]).output();
    }
}

/// The repository's Dockerfile at each `(target, tag)`, from the binaries
/// under test (`BINARIES=prebuilt`; stripped, so the context is 80 MB
/// rather than 550), in a context made under `dir`.
pub fn build_project_images(dir: &Path, targets: &[(&str, &str)]) -> Images {
    engine_ready();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let context = dir.join("context");
    std::fs::create_dir_all(context.join("target/debug")).unwrap();
    std::fs::create_dir_all(context.join("config/functions")).unwrap();
    std::fs::copy(repo.join("Dockerfile"), context.join("Dockerfile")).unwrap();
    std::fs::copy(repo.join("config/container.yml"), context.join("config/container.yml")).unwrap();
    for f in std::fs::read_dir(repo.join("config/functions")).unwrap().flatten() {
        std::fs::copy(f.path(), context.join("config/functions").join(f.file_name())).unwrap();
    }
    for (bin, name) in [(super::BIN, "switchboard"), (WATCHDOG, "switchboard-watchdog")] {
        let stripped = Command::new("strip").arg("-o").arg(context.join("target/debug").join(name)).arg(bin).status();
        assert!(stripped.is_ok_and(|s| s.success()), "strip {bin}");
    }
    let context = context.display().to_string();
    let mut built = Images(vec![]);
    for (target, tag) in targets {
        let mut build = vec!["build", "--network", "host", "--format", "docker", "-q", "--target", target, "-t", tag];
        build.extend(["--build-arg", "BINARIES=prebuilt", "--build-arg", "PROFILE=debug", &context]);
        podman(&build);
        built.0.push(podman(&["image", "inspect", "--format", "{{.Id}}", tag]));
    }
    built
}
