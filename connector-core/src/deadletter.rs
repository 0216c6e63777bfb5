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
}

/// A JSON-lines file, appended and synced per letter.
pub struct FileSink {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl FileSink {
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), lock: tokio::sync::Mutex::new(()) }
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
            f.write_all(&line).await.map_err(err)?;
            // tokio's File buffers: a write error (ENOSPC) surfaces at flush,
            // and sync_data alone would report success for a line never written.
            f.flush().await.map_err(err)?;
            f.sync_data().await.map_err(err)
        })
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}
