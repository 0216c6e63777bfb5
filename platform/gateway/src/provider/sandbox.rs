//! Process replicas run isolated, as faasd runs functions in containers,
//! with what an unprivileged user has: bubblewrap (`bwrap`, Flatpak's
//! sandbox) puts each replica, watchdog and function, in namespaces of its
//! own. Inside, `/var/openfaas/secrets` holds that function's secrets only,
//! read-only; `/tmp` is private; the folders where the platform keeps its
//! state (credentials, queue, secrets, records, dead letters) are empty;
//! `/proc` shows the replica's processes only (so no other process's root
//! or environment can be read through it); `/sys` is read-only; no
//! capability is kept and none can be gained (`no_new_privs`).

use openfaas::FunctionDeployment;
use std::path::{Path, PathBuf};

/// Where a function finds its secrets, as on OpenFaaS.
pub const SECRETS_DIR: &str = "/var/openfaas/secrets";

pub struct Sandbox {
    bwrap: PathBuf,
    /// Where the platform keeps state, folders and files: empty inside.
    hidden: Vec<PathBuf>,
}

impl Sandbox {
    /// A sandbox, once `bwrap` has shown it can make namespaces here; else
    /// why not, and how to opt out.
    pub fn new(hidden: Vec<PathBuf>) -> Result<Self, String> {
        let opt_out = "or set provider.isolation: none to run process functions unisolated, as this user with \
                       its view of the disk (they can then read the gateway's credentials and each other's secrets)";
        let bwrap = std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join("bwrap")).find(|p| p.is_file()))
            .ok_or_else(|| {
                format!("process functions run isolated by bubblewrap, and bwrap is not installed: apt install bubblewrap; {opt_out}")
            })?;
        let sandbox = Self { bwrap, hidden };
        let probe = std::process::Command::new(&sandbox.bwrap)
            .args(sandbox.base(true))
            .args(["--", "true"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}; {opt_out}", sandbox.bwrap.display()))?;
        if !probe.status.success() {
            return Err(format!(
                "this machine does not let bubblewrap make namespaces ({}): unprivileged user namespaces may be \
                 off (sysctl kernel.unprivileged_userns_clone, or AppArmor's \
                 kernel.apparmor_restrict_unprivileged_userns); {opt_out}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
        }
        Ok(sandbox)
    }

    /// Namespaces and the root, as every replica has them.
    fn base(&self, read_only: bool) -> Vec<String> {
        let root = if read_only { "--ro-bind" } else { "--bind" };
        [
            "--unshare-all",
            "--share-net",
            // The function is pid 1 of its namespace and gets the signals
            // sent to it; bwrap would not pass them on.
            "--as-pid-1",
            "--die-with-parent",
            // No controlling terminal to push keystrokes into.
            "--new-session",
            "--cap-drop",
            "ALL",
            root,
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--ro-bind",
            "/sys",
            "/sys",
            "--tmpfs",
            "/tmp",
        ]
        .map(String::from)
        .to_vec()
    }

    /// The command line that runs `command` as a replica of `d`, whose
    /// secrets (when it names any) are in the folder `secrets`.
    pub fn command(&self, command: &[String], d: &FunctionDeployment, secrets: Option<&Path>) -> Vec<String> {
        let read_only = d.read_only_root_filesystem;
        let bind = if read_only { "--ro-bind" } else { "--bind" };
        let mut args = vec![self.bwrap.display().to_string()];
        args.extend(self.base(read_only));
        let mut add = |words: &[&str]| args.extend(words.iter().map(|w| w.to_string()));
        // A platform run from under /tmp (a checkout there) keeps in view
        // the folder there that holds its working folder, where a stack's
        // functions and their files are, and the one holding the watchdog.
        let cwd = std::env::current_dir().ok();
        let needed = cwd.iter().map(PathBuf::as_path).chain(command.first().map(Path::new));
        let mut kept: Vec<PathBuf> = needed.filter_map(under_tmp).collect();
        kept.dedup();
        for folder in &kept {
            let folder = folder.display().to_string();
            add(&[bind, &folder, &folder]);
        }
        // /var/openfaas need not exist here, nor may this user make it:
        // /var is rebuilt on a tmpfs, its entries bound back in.
        add(&["--tmpfs", "/var"]);
        for entry in std::fs::read_dir("/var").into_iter().flatten().flatten() {
            let path = entry.path().display().to_string();
            match std::fs::read_link(entry.path()) {
                _ if entry.file_name() == "openfaas" => {}
                Ok(target) => add(&["--symlink", &target.display().to_string(), &path]),
                Err(_) => add(&[bind, &path, &path]),
            }
        }
        // Last, so that no bind above shows them again.
        for path in &self.hidden {
            let shown = path.display().to_string();
            if path.is_dir() {
                add(&["--tmpfs", &shown]);
            } else if path.is_file() {
                add(&["--ro-bind", "/dev/null", &shown]);
            }
        }
        add(&["--dir", SECRETS_DIR]);
        if let Some(dir) = secrets {
            add(&["--ro-bind", &dir.display().to_string(), SECRETS_DIR]);
        }
        if let Some(cwd) = &cwd {
            add(&["--chdir", &cwd.display().to_string()]);
        }
        add(&["--"]);
        args.extend(command.iter().cloned());
        args
    }
}

/// The folder directly under /tmp that holds `path`, when one does.
fn under_tmp(path: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix("/tmp").ok()?;
    let top = rest.components().next()?;
    Some(Path::new("/tmp").join(top))
}
