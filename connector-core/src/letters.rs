//! The hub's dead letters, kept where an operator can browse, replay and
//! purge them: a durable embedded store (redb, as the async queue is). A
//! letter is written and synced before its event is settled, so an event
//! whose letter could not be written is not dead-lettered; the JSON-lines
//! export (`hub.dead_letter_file`), when set, is a copy written after.
//!
//! A letter being replayed is claimed (in the same transaction that finds
//! it), so two replays of the same letters deliver each once; it is removed
//! once delivered, or given back with its new failure. Claims left by a
//! crash are given back when the store is opened again.
//!
//! redb refuses all work after one I/O error (a full disk) until it is
//! opened again: a failed write closes it and the next operation reopens
//! it, so the store comes back when the disk does.

use crate::deadletter::{DeadLetter, DeadLetterSink, FileSink};
use futures_util::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

const LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("letters");
/// Letters being replayed: id → the replay's id.
const CLAIMED: TableDefinition<u64, &str> = TableDefinition::new("claimed");
/// "seq": the last id given; "bytes": what the letters hold.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Functions paused through the hub's API: the hub's other durable state,
/// kept here so that a pause outlives a restart.
const PAUSED: TableDefinition<&str, ()> = TableDefinition::new("paused");

/// The most letters one replay takes; the rest wait for the next.
pub const MAX_REPLAY: usize = 10_000;

/// A letter as the store keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    pub id: u64,
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// Times it was replayed and failed again.
    #[serde(default)]
    pub replays: u32,
}

/// Which letters: every field given must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// `NAME` (any namespace) or `NAME.NAMESPACE`.
    pub function: Option<String>,
    pub topic: Option<String>,
    pub source: Option<String>,
    /// The HTTP status of the last failure.
    pub status: Option<u16>,
    /// RFC 3339 times, inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    pub ids: Option<Vec<u64>>,
}

impl Filter {
    /// Whether the filter names anything: replay and purge ask for a
    /// filter or `all`, so that an empty request is not everything.
    pub fn is_empty(&self) -> bool {
        let Filter { function, topic, source, status, since, until, ids } = self;
        function.is_none()
            && topic.is_none()
            && source.is_none()
            && status.is_none()
            && since.is_none()
            && until.is_none()
            && ids.is_none()
    }

    /// Whether the times are times: why not, naming the one that is not.
    pub fn validate(&self) -> Result<(), String> {
        self.compile().map(|_| ())
    }

    /// The filter with its times read, or which one is not a time.
    fn compile(&self) -> Result<Compiled<'_>, String> {
        let time = |key: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| {
                    humantime::parse_rfc3339_weak(t)
                        .map_err(|e| format!("{key}={t}: expected an RFC 3339 time such as 2026-12-04T10:00:00Z ({e})"))
                })
                .transpose()
        };
        Ok(Compiled { filter: self, since: time("since", &self.since)?, until: time("until", &self.until)? })
    }
}

struct Compiled<'a> {
    filter: &'a Filter,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

impl Compiled<'_> {
    fn matches(&self, s: &Stored) -> bool {
        let (f, l) = (self.filter, &s.letter);
        let function = |want: &str| {
            l.function
                .as_deref()
                .is_some_and(|have| have == want || have.strip_prefix(want).is_some_and(|rest| rest.starts_with('.')))
        };
        let time = humantime::parse_rfc3339_weak(&l.time).ok();
        f.ids.as_ref().is_none_or(|ids| ids.contains(&s.id))
            && f.function.as_deref().is_none_or(function)
            && f.topic.as_ref().is_none_or(|t| *t == l.topic)
            && f.source.as_ref().is_none_or(|src| *src == l.source)
            && f.status.is_none_or(|st| l.status == Some(st))
            && self.since.is_none_or(|since| time.is_some_and(|t| t >= since))
            && self.until.is_none_or(|until| time.is_some_and(|t| t <= until))
    }
}

/// A letter and whether a replay holds it now.
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub stored: Stored,
    pub state: &'static str,
}

/// One page of letters, oldest first; `next` is the `after` of the next page.
#[derive(Debug, Serialize)]
pub struct Page {
    pub letters: Vec<Listed>,
    pub next: Option<u64>,
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct LetterStore(Arc<Inner>);

struct Inner {
    path: PathBuf,
    max_bytes: u64,
    /// None after a failed write, until it is reopened.
    db: RwLock<Option<Database>>,
    /// The size of the last letter refused for want of room, until one is written.
    refused: Mutex<Option<u64>>,
    export: Option<FileSink>,
}

type StoreResult<T> = Result<T, String>;

fn failed(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl LetterStore {
    /// Opens (or creates, readable by its owner only: letters carry
    /// payloads and headers) the store at `path`, holding at most
    /// `max_bytes` of letters; claims a previous process left are given back.
    pub fn open(path: &Path, max_bytes: u64, export: Option<FileSink>) -> StoreResult<Self> {
        let err = |e: String| format!("cannot open the dead-letter store {}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        private_file(path).map_err(|e| err(e.to_string()))?;
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                err("another process holds it; give each hub (each `connect`) a store of its own".into())
            }
            e => err(e.to_string()),
        })?;
        let inner =
            Inner { path: path.to_path_buf(), max_bytes, db: RwLock::new(Some(db)), refused: Mutex::new(None), export };
        let store = Self(Arc::new(inner));
        let returned = store.write(|tx| {
            tx.open_table(LETTERS).map_err(failed)?;
            tx.open_table(META).map_err(failed)?;
            tx.open_table(PAUSED).map_err(failed)?;
            let mut claimed = tx.open_table(CLAIMED).map_err(failed)?;
            let n = claimed.len().map_err(failed)?;
            claimed.retain(|_, _| false).map_err(failed)?;
            Ok(n)
        });
        let returned = returned.map_err(err)?;
        if returned > 0 {
            tracing::warn!(count = returned, "dead letters a previous run was replaying are back in the store");
        }
        Ok(store)
    }

    pub fn describe(&self) -> String {
        format!("store {}", self.0.path.display())
    }

    /// Runs `op` in a write transaction and commits it (synced); a
    /// failure closes the database, which the next operation reopens.
    fn write<T>(&self, op: impl FnOnce(&redb::WriteTransaction) -> StoreResult<T>) -> StoreResult<T> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(failed)?;
            let out = op(&tx)?;
            tx.commit().map_err(failed)?;
            Ok(out)
        })
    }

    /// As [`LetterStore::write`], but an `Err` of `op`'s own (not the
    /// store's) aborts the transaction: nothing of it is kept.
    fn write_all_or_none<T, R>(
        &self,
        op: impl FnOnce(&redb::WriteTransaction) -> StoreResult<Result<T, R>>,
    ) -> StoreResult<Result<T, R>> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(failed)?;
            let out = op(&tx)?;
            match out {
                Ok(_) => tx.commit().map_err(failed)?,
                Err(_) => tx.abort().map_err(failed)?,
            }
            Ok(out)
        })
    }

    fn read<T>(&self, op: impl FnOnce(&redb::ReadTransaction) -> StoreResult<T>) -> StoreResult<T> {
        self.with_db(|db| op(&db.begin_read().map_err(failed)?))
    }

    fn with_db<T>(&self, op: impl FnOnce(&Database) -> StoreResult<T>) -> StoreResult<T> {
        let inner = &self.0;
        if inner.db.read().expect("db lock").is_none() {
            let mut db = inner.db.write().expect("db lock");
            if db.is_none() {
                *db = Some(Database::create(&inner.path).map_err(|e| format!("cannot reopen: {e}"))?);
            }
        }
        let result = op(inner.db.read().expect("db lock").as_ref().expect("opened above"));
        if result.is_err() {
            // redb takes no more work after an I/O error: reopened next time.
            inner.db.write().expect("db lock").take();
        }
        result.map_err(|e| format!("{}: {e}", inner.path.display()))
    }

    /// Keeps `letter`; its id, or why not (the store is full or cannot write).
    pub fn add(&self, letter: &DeadLetter) -> StoreResult<u64> {
        self.add_all(std::slice::from_ref(letter)).map(|ids| ids[0])
    }

    /// Keeps `letters`, all or none, in one transaction; their ids.
    pub fn add_all(&self, letters: &[DeadLetter]) -> StoreResult<Vec<u64>> {
        let max = self.0.max_bytes;
        let added = self.write_all_or_none(|tx| {
            let mut ids = vec![];
            for letter in letters {
                match Self::insert(tx, letter, max)? {
                    Ok(id) => ids.push(id),
                    Err(refused) => return Ok(Err(refused)),
                }
            }
            Ok(Ok(ids))
        })?;
        let mut refused = self.0.refused.lock().expect("refused lock");
        match added {
            Ok(ids) => {
                *refused = None;
                Ok(ids)
            }
            Err((held, n)) => {
                *refused = Some(n);
                Err(self.full(held, n))
            }
        }
    }

    /// One letter into the open transaction; `Err((held, size))` when it
    /// would not fit (the transaction is then left uncommitted).
    fn insert(tx: &redb::WriteTransaction, letter: &DeadLetter, max: u64) -> StoreResult<Result<u64, (u64, u64)>> {
        let mut meta = tx.open_table(META).map_err(failed)?;
        let held = meta.get("bytes").map_err(failed)?.map_or(0, |v| v.value());
        let id = meta.get("seq").map_err(failed)?.map_or(0, |v| v.value()) + 1;
        let row = serde_json::to_vec(&Stored { id, letter: letter.clone(), replays: 0 }).map_err(failed)?;
        let n = row.len() as u64;
        if held + n > max {
            return Ok(Err((held, n)));
        }
        meta.insert("seq", id).map_err(failed)?;
        meta.insert("bytes", held + n).map_err(failed)?;
        tx.open_table(LETTERS).map_err(failed)?.insert(id, row.as_slice()).map_err(failed)?;
        Ok(Ok(id))
    }

    fn full(&self, held: u64, letter: u64) -> String {
        format!(
            "the dead-letter store {} is full: its letters hold {held} bytes, and a letter of {letter} would pass \
             hub.dead_letter_max_size ({} bytes); replay or purge letters (/dead-letters) or raise the limit",
            self.0.path.display(),
            self.0.max_bytes
        )
    }

    /// Letters that match, oldest first, after the id `after`, at most `limit`.
    pub fn list(&self, filter: &Filter, after: u64, limit: usize) -> StoreResult<Page> {
        let compiled = filter.compile()?;
        self.read(|tx| {
            let (letters, claimed) = (tx.open_table(LETTERS).map_err(failed)?, tx.open_table(CLAIMED).map_err(failed)?);
            let mut page = Page { letters: vec![], next: None };
            for row in letters.range(after.saturating_add(1)..).map_err(failed)? {
                let (_, v) = row.map_err(failed)?;
                let stored: Stored = serde_json::from_slice(v.value()).map_err(failed)?;
                if !compiled.matches(&stored) {
                    continue;
                }
                if page.letters.len() == limit {
                    page.next = page.letters.last().map(|l| l.stored.id);
                    break;
                }
                let state = if claimed.get(stored.id).map_err(failed)?.is_some() { "replaying" } else { "stored" };
                page.letters.push(Listed { stored, state });
            }
            Ok(page)
        })
    }

    pub fn get(&self, id: u64) -> StoreResult<Option<Listed>> {
        let page = self.list(&Filter { ids: Some(vec![id]), ..Default::default() }, id.saturating_sub(1), 1)?;
        Ok(page.letters.into_iter().next())
    }

    /// The letters held and their bytes.
    pub fn size(&self) -> StoreResult<(u64, u64)> {
        self.read(|tx| {
            let count = tx.open_table(LETTERS).map_err(failed)?.len().map_err(failed)?;
            let bytes = tx.open_table(META).map_err(failed)?.get("bytes").map_err(failed)?.map_or(0, |v| v.value());
            Ok((count, bytes))
        })
    }

    /// Claims for `replay` up to [`MAX_REPLAY`] letters that match and no
    /// replay holds, oldest first; and whether more match.
    pub fn claim(&self, filter: &Filter, replay: &str) -> StoreResult<(Vec<Stored>, bool)> {
        let compiled = filter.compile()?;
        self.write(|tx| {
            let letters = tx.open_table(LETTERS).map_err(failed)?;
            let mut claimed = tx.open_table(CLAIMED).map_err(failed)?;
            let mut taken = vec![];
            for row in letters.iter().map_err(failed)? {
                let (k, v) = row.map_err(failed)?;
                if claimed.get(k.value()).map_err(failed)?.is_some() {
                    continue;
                }
                let stored: Stored = serde_json::from_slice(v.value()).map_err(failed)?;
                if !compiled.matches(&stored) {
                    continue;
                }
                if taken.len() == MAX_REPLAY {
                    return Ok((taken, true));
                }
                claimed.insert(stored.id, replay).map_err(failed)?;
                taken.push(stored);
            }
            Ok((taken, false))
        })
    }

    /// A replayed letter was delivered: it leaves the store.
    pub fn delivered(&self, id: u64) -> StoreResult<()> {
        self.write(|tx| remove(tx, id).map(|_| ()))
    }

    /// A replayed letter failed again: it stays, with `failure`'s reason,
    /// status and attempts added to its own.
    pub fn failed_again(&self, id: u64, failure: &DeadLetter) -> StoreResult<()> {
        self.write(|tx| {
            let mut letters = tx.open_table(LETTERS).map_err(failed)?;
            let old = letters.get(id).map_err(failed)?.map(|v| v.value().to_vec());
            let Some(old) = old else { return Ok(()) };
            let mut stored: Stored = serde_json::from_slice(&old).map_err(failed)?;
            stored.letter.time = failure.time.clone();
            stored.letter.error = failure.error.clone();
            stored.letter.status = failure.status;
            stored.letter.attempts += failure.attempts;
            stored.replays += 1;
            let row = serde_json::to_vec(&stored).map_err(failed)?;
            letters.insert(id, row.as_slice()).map_err(failed)?;
            let mut meta = tx.open_table(META).map_err(failed)?;
            let held = meta.get("bytes").map_err(failed)?.map_or(0, |v| v.value());
            let bytes = (held + row.len() as u64).saturating_sub(old.len() as u64);
            meta.insert("bytes", bytes).map_err(failed)?;
            tx.open_table(CLAIMED).map_err(failed)?.remove(id).map_err(failed)?;
            Ok(())
        })
    }

    /// A replay let go of a letter it could not settle (the hub stopping).
    pub fn release(&self, id: u64) -> StoreResult<()> {
        self.write(|tx| tx.open_table(CLAIMED).map_err(failed)?.remove(id).map(|_| ()).map_err(failed))
    }

    /// Removes the letters that match and no replay holds: how many, and
    /// how many matched but were being replayed.
    pub fn purge(&self, filter: &Filter) -> StoreResult<(u64, u64)> {
        let compiled = filter.compile()?;
        self.write(|tx| {
            let matching: Vec<(u64, bool)> = {
                let letters = tx.open_table(LETTERS).map_err(failed)?;
                let claimed = tx.open_table(CLAIMED).map_err(failed)?;
                let mut matching = vec![];
                for row in letters.iter().map_err(failed)? {
                    let (_, v) = row.map_err(failed)?;
                    let stored: Stored = serde_json::from_slice(v.value()).map_err(failed)?;
                    if compiled.matches(&stored) {
                        matching.push((stored.id, claimed.get(stored.id).map_err(failed)?.is_some()));
                    }
                }
                matching
            };
            let (mut purged, mut busy) = (0, 0);
            for (id, replaying) in matching {
                if replaying {
                    busy += 1;
                } else if remove(tx, id)? {
                    purged += 1;
                }
            }
            Ok((purged, busy))
        })
    }
}

impl LetterStore {
    /// The functions paused through the API.
    pub fn paused(&self) -> StoreResult<std::collections::BTreeSet<String>> {
        self.read(|tx| {
            let table = tx.open_table(PAUSED).map_err(failed)?;
            let rows = table.iter().map_err(failed)?;
            rows.map(|row| row.map(|(k, _)| k.value().to_string()).map_err(failed)).collect()
        })
    }

    pub fn set_paused(&self, function: &str, paused: bool) -> StoreResult<()> {
        self.write(|tx| {
            let mut table = tx.open_table(PAUSED).map_err(failed)?;
            match paused {
                true => table.insert(function, ()).map(|_| ()),
                false => table.remove(function).map(|_| ()),
            }
            .map_err(failed)
        })
    }
}

/// Removes a letter and its claim, and its bytes from the count.
fn remove(tx: &redb::WriteTransaction, id: u64) -> StoreResult<bool> {
    let removed = tx.open_table(LETTERS).map_err(failed)?.remove(id).map_err(failed)?.map(|v| v.value().len() as u64);
    tx.open_table(CLAIMED).map_err(failed)?.remove(id).map_err(failed)?;
    let Some(n) = removed else { return Ok(false) };
    let mut meta = tx.open_table(META).map_err(failed)?;
    let held = meta.get("bytes").map_err(failed)?.map_or(0, |v| v.value());
    meta.insert("bytes", held.saturating_sub(n)).map_err(failed)?;
    Ok(true)
}

impl DeadLetterSink for LetterStore {
    fn send(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let store = self.clone();
            let kept = letter.clone();
            tokio::task::spawn_blocking(move || store.add(&kept))
                .await
                .map_err(|e| format!("the dead-letter store's task failed: {e}"))??;
            if let Some(export) = &self.0.export {
                // A copy: the letter is kept whatever becomes of it.
                if let Err(e) = export.send(letter).await {
                    tracing::warn!(error = %e, "a dead letter is in the store but not in the export file");
                }
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        LetterStore::describe(self)
    }

    fn refusing(&self) -> Option<String> {
        let mut refused = self.0.refused.lock().expect("refused lock");
        let letter = (*refused)?;
        let held = self.size().map(|(_, bytes)| bytes).unwrap_or(u64::MAX);
        // Room made (letters replayed or purged) ends it.
        if held.saturating_add(letter) <= self.0.max_bytes {
            *refused = None;
            return None;
        }
        Some(self.full(held, letter))
    }
}

/// Creates `path` readable by its owner only, or makes it so.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadletter::DeadEvent;

    fn letter(function: &str, topic: &str) -> DeadLetter {
        DeadLetter {
            time: "2026-12-04T10:00:00.000Z".into(),
            source: "cloudevents".into(),
            topic: topic.into(),
            function: Some(function.into()),
            status: Some(500),
            attempts: 1,
            error: "HTTP 500".into(),
            event: DeadEvent::of(&crate::Event { id: "e".into(), payload: "body".into(), ..Default::default() }),
        }
    }

    fn all() -> Filter {
        Filter::default()
    }

    #[test]
    fn claims_are_taken_once_and_given_back_by_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("letters.redb");
        let store = LetterStore::open(&path, 1 << 20, None).unwrap();
        for topic in ["a", "b", "c"] {
            store.add(&letter("f.ns", topic)).unwrap();
        }
        let (first, more) = store.claim(&all(), "r1").unwrap();
        assert_eq!((first.len(), more), (3, false));
        assert!(store.claim(&all(), "r2").unwrap().0.is_empty(), "a second replay takes nothing");
        assert!(store.list(&all(), 0, 10).unwrap().letters.iter().all(|l| l.state == "replaying"));
        drop(store);

        let store = LetterStore::open(&path, 1 << 20, None).unwrap();
        assert!(store.list(&all(), 0, 10).unwrap().letters.iter().all(|l| l.state == "stored"));
        assert_eq!(store.claim(&all(), "r3").unwrap().0.len(), 3);
    }

    #[test]
    fn the_bytes_held_follow_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = LetterStore::open(&dir.path().join("letters.redb"), 1 << 20, None).unwrap();
        let ids: Vec<u64> = (0..3).map(|_| store.add(&letter("f.ns", "t")).unwrap()).collect();
        store.claim(&all(), "r").unwrap();
        store.delivered(ids[0]).unwrap();
        store
            .failed_again(ids[1], &DeadLetter { error: "HTTP 503: a much longer reason".into(), ..letter("f.ns", "t") })
            .unwrap();
        store.release(ids[2]).unwrap();
        let again = store.get(ids[1]).unwrap().unwrap();
        assert_eq!((again.stored.replays, again.stored.letter.attempts, again.state), (1, 2, "stored"));
        assert_eq!(store.purge(&all()).unwrap(), (2, 0));
        assert_eq!(store.size().unwrap(), (0, 0));
    }

    #[test]
    fn a_letter_past_the_bound_is_refused_until_room_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&Stored { id: 1, letter: letter("f.ns", "t"), replays: 0 }).unwrap().len() as u64;
        let store = LetterStore::open(&dir.path().join("letters.redb"), one + 10, None).unwrap();
        let id = store.add(&letter("f.ns", "t")).unwrap();
        let refused = store.add(&letter("f.ns", "t")).unwrap_err();
        assert!(refused.contains("is full") && refused.contains("hub.dead_letter_max_size"), "{refused}");
        assert!(store.refusing().is_some());
        store.purge(&Filter { ids: Some(vec![id]), ..Default::default() }).unwrap();
        assert!(store.refusing().is_none());
    }

    #[test]
    fn a_function_filter_matches_a_name_in_any_namespace_or_exactly() {
        let stored = |f: &str| Stored { id: 1, letter: letter(f, "t"), replays: 0 };
        let by = |f: &str| Filter { function: Some(f.into()), ..Default::default() };
        let matches = |filter: Filter, f: &str| filter.compile().unwrap().matches(&stored(f));
        assert!(matches(by("resize"), "resize.openfaas-fn"));
        assert!(matches(by("resize.team-a"), "resize.team-a"));
        assert!(!matches(by("resize"), "resizer.openfaas-fn"));
        assert!(!matches(by("resize.team-a"), "resize.team-b"));
        let bad = Filter { since: Some("yesterday".into()), ..Default::default() }.validate().unwrap_err();
        assert!(bad.starts_with("since=yesterday: expected an RFC 3339 time"), "{bad}");
    }
}
