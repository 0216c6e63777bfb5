//! Replays the fuzzers' kept corpora (fuzz/corpus/TARGET/*) through the same
//! entry points `scripts/fuzz` drives, so every input that once found a bug,
//! and every input that reached new code, is checked on each test run.

#[path = "../../fuzz/src/lib.rs"]
mod entries;

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!inputs.is_empty(), "the {target} corpus is empty");
    for input in inputs {
        let data = std::fs::read(&input).unwrap();
        // A panic names the input that caused it.
        let run = std::panic::catch_unwind(|| entry(&data));
        assert!(run.is_ok(), "{target} panicked on {}", input.display());
    }
}

#[test]
fn cloudevents() {
    replay("cloudevents", entries::cloudevents);
}

#[test]
fn cron() {
    replay("cron", entries::cron);
}

#[test]
fn config() {
    replay("config", entries::config);
}

#[test]
fn openfaas_json() {
    replay("openfaas_json", entries::openfaas_json);
}
