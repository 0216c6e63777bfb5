//! Gives the crate an identity of its sources (`SOURCE_ID`), so a binary
//! that links it can tell whether a `switchboard-watchdog` beside it runs
//! the same watchdog code or is left over from an older build.

use std::hash::{Hash, Hasher};
use std::path::Path;

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let mut sources = vec![Path::new("Cargo.toml").to_path_buf()];
    files(Path::new("src"), &mut sources);
    sources.sort();
    // SipHash with fixed keys: the same sources give the same id in every
    // build; an identity, not a defence.
    let mut hasher = std::hash::DefaultHasher::new();
    for path in &sources {
        path.hash(&mut hasher);
        std::fs::read(path).expect("a source file is readable").hash(&mut hasher);
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=WATCHDOG_SOURCE_ID={version}-{:016x}", hasher.finish());
}
