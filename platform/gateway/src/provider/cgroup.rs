//! A process replica's `limits`, applied through cgroups: a cgroup of its
//! own under this process's, in each hierarchy that has the controller
//! (cgroup v1: `memory` and `cpu` are separate hierarchies; v2: one, where
//! the machine delegates the controllers to this process's cgroup).

use super::limits::Limits;
use std::path::{Path, PathBuf};

/// Folder, beside the replicas' cgroups, holding the ones of this process.
const PARENT: &str = "switchboard";
/// The scheduler period a CPU limit is a share of (the kernel's default).
const CPU_PERIOD_US: i64 = 100_000;

/// One replica's cgroups, removed with [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

/// Where a controller's cgroups are made, and which interface they have.
struct Hierarchy {
    /// This process's cgroup in it.
    own: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// Makes the cgroups for replica `name` with `limits` set, or says why
    /// the limits cannot apply here (a deployment that asks for them is
    /// refused rather than run without them).
    pub fn create(name: &str, limits: &Limits) -> Result<Self, String> {
        let mut wanted = vec![];
        if let Some(bytes) = limits.memory {
            wanted.push(("memory", bytes));
        }
        if let Some(nanos) = limits.nano_cpus {
            wanted.push(("cpu", nanos));
        }
        let mut made = Self { dirs: vec![] };
        for (controller, value) in wanted {
            if let Err(e) = made.apply(controller, value, name) {
                // None left behind for a replica that will not start.
                for dir in &made.dirs {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e);
            }
        }
        Ok(made)
    }

    /// Makes (or reuses) `name`'s cgroup for `controller` and sets it to `value`.
    fn apply(&mut self, controller: &str, value: i64, name: &str) -> Result<(), String> {
        let h = hierarchy(controller)?;
        let dir = h.own.join(PARENT).join(name);
        if !self.dirs.contains(&dir) {
            std::fs::create_dir_all(&dir).map_err(|e| cannot(controller, &dir, e))?;
            self.dirs.push(dir.clone());
        }
        if h.v2 {
            enable_v2(&h.own.join(PARENT), controller)?;
        }
        let quota = || (value * CPU_PERIOD_US / 1_000_000_000).max(1000);
        let settings: Vec<(&str, String)> = match (controller, h.v2) {
            // No swap, so the limit is what the function has, as in a container.
            ("memory", false) => {
                vec![("memory.limit_in_bytes", value.to_string()), ("memory.memsw.limit_in_bytes", value.to_string())]
            }
            ("memory", true) => vec![("memory.max", value.to_string()), ("memory.swap.max", "0".into())],
            (_, false) => {
                vec![("cpu.cfs_period_us", CPU_PERIOD_US.to_string()), ("cpu.cfs_quota_us", quota().to_string())]
            }
            (_, true) => vec![("cpu.max", format!("{} {CPU_PERIOD_US}", quota()))],
        };
        for (file, value) in settings {
            let path = dir.join(file);
            // memsw and swap.max exist only where swap is accounted.
            if !path.exists() && (file.contains("memsw") || file.contains("swap")) {
                continue;
            }
            std::fs::write(&path, &value).map_err(|e| cannot(controller, &path, e))?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files a replica's first process writes its pid to.
    pub fn procs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Removes the cgroups once their processes are gone (a moment after
    /// the last one is reaped).
    pub async fn remove(self) {
        for dir in &self.dirs {
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Whether `limits` can apply here: a deployment asking for limits this
/// machine cannot enforce is refused, not run without them.
pub fn check(limits: &Limits) -> Result<(), String> {
    for (controller, wanted) in [("memory", limits.memory.is_some()), ("cpu", limits.nano_cpus.is_some())] {
        if wanted {
            let parent = hierarchy(controller)?.own.join(PARENT);
            std::fs::create_dir_all(&parent).map_err(|e| cannot(controller, &parent, e))?;
        }
    }
    Ok(())
}

fn cannot(controller: &str, path: &Path, e: std::io::Error) -> String {
    format!(
        "cannot apply limits.{controller} (its cgroup {}: {e}); limits need a cgroup this process may manage \
         (root, or a cgroup v2 delegated to its user)",
        path.display()
    )
}

/// The hierarchy that has `controller`: a v1 one of its own, else the v2
/// one where this process's cgroup has it.
fn hierarchy(controller: &str) -> Result<Hierarchy, String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let groups = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    for line in mounts.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS … - FSTYPE SOURCE SUPEROPTIONS
        let Some((fields, tail)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = fields.split(' ').collect();
        let tail: Vec<&str> = tail.split(' ').collect();
        let (Some(root), Some(point), Some(fstype), Some(options)) =
            (fields.get(3), fields.get(4), tail.first(), tail.get(2))
        else {
            continue;
        };
        let v2 = match *fstype {
            "cgroup" if options.split(',').any(|o| o == controller) => false,
            "cgroup2" => true,
            _ => continue,
        };
        // This process's cgroup in that hierarchy: `ID:CONTROLLERS:PATH`,
        // with CONTROLLERS empty for v2.
        let own = groups.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = if v2 { list.is_empty() } else { list.split(',').any(|c| c == controller) };
            matches.then(|| path.to_string())
        });
        let Some(own) = own else { continue };
        let relative = own.strip_prefix(root).unwrap_or(&own).trim_start_matches('/');
        let own = Path::new(point).join(relative);
        if v2 {
            let available = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
            if !available.split_whitespace().any(|c| c == controller) {
                continue;
            }
            enable_v2(&own, controller)?;
        }
        return Ok(Hierarchy { own, v2 });
    }
    Err(format!(
        "cannot apply limits.{controller}: no cgroup hierarchy here has the {controller} controller for this process"
    ))
}

/// Lets the children of `dir` use `controller`. A v2 cgroup holding
/// processes of its own may not (the "no internal processes" rule): run
/// Switchboard in a leaf cgroup delegated to it (systemd's `Delegate=yes`).
fn enable_v2(dir: &Path, controller: &str) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    if std::fs::read_to_string(&control).unwrap_or_default().split_whitespace().any(|c| c == controller) {
        return Ok(());
    }
    std::fs::write(&control, format!("+{controller}")).map_err(|e| cannot(controller, &control, e))
}
