//! The durable embedded store (redb). An item moves pending → leased while a
//! worker has it, then is removed (settled), rescheduled, or moved to the
//! dead-letter table. Leases left by a crash return to pending on open, so
//! nothing enqueued is lost and everything is delivered at least once.
//!
//! redb refuses all work after one I/O error (a full disk, above all) until
//! the database is opened again, so a failed write closes it and the next
//! operation reopens it: the store comes back when the disk does. Until a
//! write succeeds again the store reports itself broken.

use crate::{DeadLetter, Envelope, QueueError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Key: (due time in ms since the epoch, sequence number).
const PENDING: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("pending");
const LEASED: TableDefinition<u64, &[u8]> = TableDefinition::new("leased");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Creates `path` readable by its owner only (queued calls carry request
/// bodies and headers, credentials among them), or makes it so.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
}

pub struct Store {
    path: PathBuf,
    /// None after a failed write, until it is reopened.
    db: RwLock<Option<Database>>,
    /// The last write error, until a write succeeds.
    broken: Mutex<Option<String>>,
}

/// An item taken from the queue; the worker must settle it.
pub struct Leased {
    pub seq: u64,
    pub envelope: Envelope,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| QueueError::Open(path.display().to_string(), e.to_string()))?;
        }
        let open = |e: std::io::Error| QueueError::Open(path.display().to_string(), e.to_string());
        private_file(path).map_err(open)?;
        let db = Database::create(path).map_err(|e| QueueError::Open(path.display().to_string(), e.to_string()))?;
        let store = Self { path: path.to_path_buf(), db: RwLock::new(Some(db)), broken: Mutex::new(None) };
        store.write(recover)?;
        Ok(store)
    }

    /// Runs `op` on the database, reopening it first after a failure; a
    /// failure closes it and marks the store broken, a success of a
    /// writing `op` mends it.
    fn run<T>(&self, writes: bool, op: impl FnOnce(&Database) -> Result<T, QueueError>) -> Result<T, QueueError> {
        if self.db.read().expect("db lock").is_none() {
            let mut db = self.db.write().expect("db lock");
            if db.is_none() {
                let reopened = Database::create(&self.path)
                    .map_err(|e| QueueError::Store(format!("cannot reopen {}: {e}", self.path.display())));
                *db = Some(reopened.inspect_err(|e| self.mark(Some(e.to_string())))?);
            }
        }
        let result = op(self.db.read().expect("db lock").as_ref().expect("opened above"));
        match &result {
            Err(QueueError::Store(e)) => {
                self.mark(Some(e.clone()));
                // Dropped here, reopened by the next operation.
                self.db.write().expect("db lock").take();
            }
            Ok(_) if writes => self.mark(None),
            _ => {}
        }
        result
    }

    fn write<T>(&self, op: impl FnOnce(&Database) -> Result<T, QueueError>) -> Result<T, QueueError> {
        self.run(true, op)
    }

    fn read<T>(&self, op: impl FnOnce(&Database) -> Result<T, QueueError>) -> Result<T, QueueError> {
        self.run(false, op)
    }

    fn mark(&self, error: Option<String>) {
        let mut broken = self.broken.lock().expect("broken lock");
        match (&*broken, &error) {
            (None, Some(e)) => tracing::error!(path = %self.path.display(), error = %e, "the queue store cannot write"),
            (Some(_), None) => tracing::info!(path = %self.path.display(), "the queue store writes again"),
            _ => {}
        }
        *broken = error;
    }

    /// Ok while the store can write. A broken store is tried with a small
    /// write, so it reports healthy as soon as the disk has room again.
    pub fn health(&self) -> Result<(), String> {
        if self.broken.lock().expect("broken lock").is_none() {
            return Ok(());
        }
        self.write(|db| {
            let tx = db.begin_write()?;
            tx.open_table(META)?.insert("probe", now_ms())?;
            tx.commit()?;
            Ok(())
        })
        .map_err(|e| format!("the queue store {} cannot write: {e}", self.path.display()))
    }
}

/// Returns leases a previous process left unsettled to the pending table.
fn recover(db: &Database) -> Result<(), QueueError> {
    let tx = db.begin_write()?;
    {
        let mut leased = tx.open_table(LEASED)?;
        let mut pending = tx.open_table(PENDING)?;
        tx.open_table(DEAD)?;
        let mut count = 0;
        while let Some((seq, bytes)) = leased.pop_first()? {
            pending.insert((0, seq.value()), bytes.value())?;
            count += 1;
        }
        if count > 0 {
            tracing::warn!(count, "requeued invocations left in flight by a previous run");
        }
    }
    tx.commit()?;
    Ok(())
}

impl Store {
    pub fn push(&self, envelope: &Envelope, due_ms: u64) -> Result<u64, QueueError> {
        let bytes = serde_json::to_vec(envelope)?;
        self.write(|db| {
            let tx = db.begin_write()?;
            let seq = {
                let mut meta = tx.open_table(META)?;
                let seq = meta.get("seq")?.map(|v| v.value()).unwrap_or(0) + 1;
                meta.insert("seq", seq)?;
                tx.open_table(PENDING)?.insert((due_ms, seq), bytes.as_slice())?;
                seq
            };
            tx.commit()?;
            Ok(seq)
        })
    }

    /// Leases the earliest item due by `now`; otherwise returns when the next one is due.
    pub fn lease_due(&self, now: u64) -> Result<Result<Leased, Option<u64>>, QueueError> {
        self.read(|db| {
            let tx = db.begin_write()?;
            let taken = {
                let mut pending = tx.open_table(PENDING)?;
                let first = pending.first()?.map(|(k, v)| (k.value(), v.value().to_vec()));
                match first {
                    Some(((due, seq), bytes)) if due <= now => {
                        pending.remove((due, seq))?;
                        tx.open_table(LEASED)?.insert(seq, bytes.as_slice())?;
                        Ok(Leased { seq, envelope: serde_json::from_slice(&bytes)? })
                    }
                    Some(((due, _), _)) => Err(Some(due)),
                    None => Err(None),
                }
            };
            if taken.is_ok() {
                tx.commit()?;
            } else {
                tx.abort()?;
            }
            Ok(taken)
        })
    }

    pub fn complete(&self, seq: u64) -> Result<(), QueueError> {
        self.write(|db| {
            let tx = db.begin_write()?;
            tx.open_table(LEASED)?.remove(seq)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn reschedule(&self, seq: u64, envelope: &Envelope, due_ms: u64) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(envelope)?;
        self.write(|db| {
            let tx = db.begin_write()?;
            tx.open_table(LEASED)?.remove(seq)?;
            tx.open_table(PENDING)?.insert((due_ms, seq), bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn dead_letter(&self, seq: u64, letter: &DeadLetter) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(letter)?;
        self.write(|db| {
            let tx = db.begin_write()?;
            tx.open_table(LEASED)?.remove(seq)?;
            tx.open_table(DEAD)?.insert(seq, bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.read(|db| {
            let tx = db.begin_read()?;
            let table = match tx.open_table(DEAD) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
                Err(e) => return Err(e.into()),
            };
            let mut out = vec![];
            for row in table.iter()? {
                let (_, v) = row?;
                out.push(serde_json::from_slice(v.value())?);
            }
            Ok(out)
        })
    }
}
