//! Where events go that could not be delivered, with what went wrong.

use crate::event::{CloudEventAttrs, Event};
use base64::Engine;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub time: String,
    pub source: String,
    pub topic: String,
    /// The function that could not be reached (none when nothing subscribes).
    pub function: Option<String>,
    pub status: Option<u16>,
    pub attempts: u32,
    pub error: String,
    pub event: DeadEvent,
}

impl DeadLetter {
    /// A letter's `time` for now: RFC 3339, UTC, to the millisecond.
    pub fn now() -> String {
        humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadEvent {
    pub id: String,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// The payload as text when it is UTF-8, else base64 (`payload_base64: true`).
    pub payload: String,
    #[serde(default)]
    pub payload_base64: bool,
    pub cloudevent: Option<CloudEventAttrs>,
}

impl DeadEvent {
    pub fn of(e: &Event) -> Self {
        let (payload, payload_base64) = match std::str::from_utf8(&e.payload) {
            Ok(s) => (s.to_string(), false),
            Err(_) => (base64::engine::general_purpose::STANDARD.encode(&e.payload), true),
        };
        Self {
            id: e.id.clone(),
            key: e.key.clone(),
            headers: e.headers.clone(),
            content_type: e.content_type.clone(),
            payload,
            payload_base64,
            cloudevent: e.cloudevent.clone(),
        }
    }
}

pub trait DeadLetterSink: Send + Sync {
    /// Stores a letter durably; an error means the event must be redelivered.
    fn send(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), String>>;
    fn describe(&self) -> String;
    /// Why letters are refused now (the store is full), while they are.
    fn refusing(&self) -> Option<String> {
        None
    }
}

/// A JSON-lines file, appended and synced per letter, up to a size: anyone
/// who can send events can make dead letters, so the file must not be able
/// to fill the disk. A letter that would pass the size is refused, and its
/// event is left with its source (redelivered), not lost.
pub struct FileSink {
    path: PathBuf,
    max_size: u64,
    lock: tokio::sync::Mutex<()>,
    /// The size of the last letter refused for want of room, until one is
    /// written: the file is full for as long as that letter would not fit.
    refused: std::sync::Mutex<Option<u64>>,
}

impl FileSink {
    pub fn new(path: &Path, max_size: u64) -> Self {
        Self { path: path.to_path_buf(), max_size, lock: tokio::sync::Mutex::new(()), refused: Default::default() }
    }

    fn size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    fn full(&self, size: u64, letter: u64) -> String {
        format!(
            "{} is full: {size} bytes, and a letter of {letter} would pass hub.dead_letter_max_size ({} bytes); \
             move the file away or raise the limit",
            self.path.display(),
            self.max_size
        )
    }
}

impl DeadLetterSink for FileSink {
    fn send(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut line = serde_json::to_vec(&letter).map_err(|e| e.to_string())?;
            line.push(b'\n');
            let _guard = self.lock.lock().await;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await.map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
            // Letters carry payloads and headers: readable by their owner only.
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .await
                .map_err(err)?;
            let size = f.metadata().await.map_err(err)?.len();
            let n = line.len() as u64;
            if size + n > self.max_size {
                *self.refused.lock().expect("refused lock") = Some(n);
                return Err(self.full(size, n));
            }
            f.write_all(&line).await.map_err(err)?;
            // tokio's File buffers: a write error (ENOSPC) surfaces at flush,
            // and sync_data alone would report success for a line never written.
            f.flush().await.map_err(err)?;
            f.sync_data().await.map_err(err)?;
            *self.refused.lock().expect("refused lock") = None;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn refusing(&self) -> Option<String> {
        let mut refused = self.refused.lock().expect("refused lock");
        let letter = (*refused)?;
        let size = self.size();
        // Room made by hand (the file moved away or cut) ends it.
        if size + letter <= self.max_size {
            *refused = None;
            return None;
        }
        Some(self.full(size, letter))
    }
}
