//! A test tool: a [`Store`] decorator that counts operations and injects
//! faults, so tests can prove that every operation survives a failing disk.
//!
//! Not meant for production use. Wrap any store, run an operation, and
//! assert what the user would see:
//!
//! ```
//! use std::sync::Arc;
//! use diskvault::store::{Fault, FaultyStore, LocalStore, OpKind, PutMode, Store};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = FaultyStore::new(Arc::new(LocalStore::new(dir.path())))
//!     .with_fault(Fault::NoSpace(2));
//! store.put("a", b"first", PutMode::Overwrite).unwrap();
//! let err = store.put("b", b"second", PutMode::Overwrite).unwrap_err();
//! assert!(err.to_string().contains("no space"));
//! assert_eq!(store.counts().ops(OpKind::Put), 2);
//! assert_eq!(store.injected(), vec![(OpKind::Put, "b".to_string())]);
//! ```
//!
//! Operations are numbered from 1 per [`OpKind`], in the order they reach
//! the decorator. With several threads (a backup stores packs from its own
//! thread, a restore reads chunks in parallel) the numbering of one kind is
//! still total, though which object gets which number may vary between runs.
//! To sweep a fault over every operation an action performs, run the action
//! once through [`FaultyStore::counting`] and read [`FaultyStore::counts`].

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::{ObjectInfo, PutMode, Store, StoreError};

/// The kinds of operation, each numbered separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// [`Store::get`] and [`Store::get_range`]: reading object bytes.
    Read,
    /// [`Store::size`], [`Store::exists`] and [`Store::list`]: metadata.
    Lookup,
    /// [`Store::put`].
    Put,
    /// [`Store::delete`].
    Delete,
    /// [`Store::barrier`] and [`Store::ensure_durable`]: making writes
    /// durable.
    Barrier,
}

impl OpKind {
    /// Every kind, for sweeps.
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Lookup,
        OpKind::Put,
        OpKind::Delete,
        OpKind::Barrier,
    ];
}

/// A fault to inject. `n` counts operations of the fault's kind from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The nth operation of this kind fails with an I/O error and does
    /// nothing (a put writes nothing, a delete deletes nothing).
    Fail(OpKind, u64),
    /// The nth read returns only the first half of the bytes asked for, as
    /// a faulty network store or file system might; the object itself is
    /// intact.
    ShortRead(u64),
    /// From the nth put on, every put finds the device full (`ENOSPC`,
    /// converted as the local store converts it) and writes nothing.
    NoSpace(u64),
    /// The nth put stores the object but then reports an I/O error, as when
    /// a connection drops after the upload completed: the caller cannot
    /// know the object landed.
    FailAfterPut(u64),
    /// The nth operation of this kind fails with a transient error (a
    /// timeout) and does nothing: what a retry layer must absorb.
    Transient(OpKind, u64),
    /// Every operation of this kind waits this long before it runs: makes
    /// races between concurrent writers certain instead of lucky.
    Slow(OpKind, std::time::Duration),
    /// Every put and delete fails as on a read-only medium (`EROFS`,
    /// converted as the local store converts it) and changes nothing.
    ReadOnly,
    /// The first operation of this kind on a key under this prefix fails
    /// with an I/O error and does nothing: targets one stage (say, the
    /// first index file) whatever else the operation writes first.
    FailUnder(OpKind, &'static str),
}

impl Fault {
    fn kind(&self) -> OpKind {
        match self {
            Fault::Fail(kind, _)
            | Fault::Transient(kind, _)
            | Fault::Slow(kind, _)
            | Fault::FailUnder(kind, _) => *kind,
            Fault::ShortRead(_) => OpKind::Read,
            Fault::NoSpace(_) | Fault::FailAfterPut(_) | Fault::ReadOnly => OpKind::Put,
        }
    }

    /// True when this fault applies to operation number `n` of its kind.
    fn fires_at(&self, n: u64) -> bool {
        match *self {
            Fault::Fail(_, at)
            | Fault::Transient(_, at)
            | Fault::ShortRead(at)
            | Fault::FailAfterPut(at) => n == at,
            Fault::Slow(..) | Fault::FailUnder(..) | Fault::ReadOnly => true,
            Fault::NoSpace(from) => n >= from,
        }
    }
}

/// A change to the store, as [`OpCounts::writes`] records it in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteEvent {
    /// An object stored (reached the inner store).
    Put(String),
    /// An object removed.
    Delete(String),
    /// An object written by another process marked to be made durable by
    /// the next barrier.
    EnsureDurable(String),
    /// A barrier that succeeded: everything before it is durable.
    Barrier,
}

/// What went through a [`FaultyStore`].
#[derive(Debug, Clone, Default)]
pub struct OpCounts {
    /// Operations started, per kind (including those that failed).
    pub by_kind: BTreeMap<OpKind, u64>,
    /// Bytes returned by reads.
    pub bytes_read: u64,
    /// Bytes passed to puts that reached the inner store.
    pub bytes_written: u64,
    /// How many times each key was put successfully into the inner store.
    pub puts_by_key: BTreeMap<String, u32>,
    /// Every successful change, in order, for write-order assertions.
    pub writes: Vec<WriteEvent>,
    /// The most puts that were running at once.
    pub puts_in_flight_peak: usize,
    /// How many reads of each key returned bytes.
    pub reads_by_key: BTreeMap<String, u32>,
}

impl OpCounts {
    /// Operations of one kind.
    pub fn ops(&self, kind: OpKind) -> u64 {
        self.by_kind.get(&kind).copied().unwrap_or(0)
    }

    /// Keys written more than once, for "nothing is stored twice"
    /// assertions.
    pub fn keys_written_twice(&self) -> Vec<&str> {
        self.puts_by_key
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// These counts without the objects under `prefix` in `puts_by_key`,
    /// and `writes` (the per-kind totals and byte counts keep them): for
    /// assertions about what an operation stores, leaving out its lock
    /// (`locks/`).
    pub fn without(&self, prefix: &str) -> OpCounts {
        let mut c = self.clone();
        c.puts_by_key.retain(|k, _| !k.starts_with(prefix));
        c.writes.retain(|w| match w {
            WriteEvent::Put(k) | WriteEvent::Delete(k) | WriteEvent::EnsureDurable(k) => {
                !k.starts_with(prefix)
            }
            WriteEvent::Barrier => true,
        });
        c
    }

    /// Keys written under `prefix` (e.g. `packs/`).
    pub fn keys_written_under(&self, prefix: &str) -> Vec<&str> {
        self.puts_by_key
            .keys()
            .filter(|k| k.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }

    /// Reads that returned bytes, of keys under `prefix`.
    pub fn reads_under(&self, prefix: &str) -> u32 {
        self.reads_by_key
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Default)]
struct State {
    counts: OpCounts,
    /// Faults that fired: the kind and the key of the operation.
    injected: Vec<(OpKind, String)>,
    /// Puts running now.
    puts_in_flight: usize,
}

/// A [`Store`] that counts every operation and injects the configured
/// [`Fault`]s. A test tool; see the module documentation.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Vec<Fault>,
    state: Mutex<State>,
}

/// What to do with one operation.
enum Action {
    Pass,
    Inject(Fault),
}

/// Key under which a failed barrier is reported: a barrier concerns every
/// earlier write, not one object.
const BARRIER_KEY: &str = "(write barrier)";

impl FaultyStore {
    /// Wraps `inner` with no faults yet.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FaultyStore {
            inner,
            faults: Vec::new(),
            state: Mutex::new(State::default()),
        }
    }

    /// Wraps `inner` only to count its operations.
    pub fn counting(inner: Arc<dyn Store>) -> Self {
        Self::new(inner)
    }

    /// Adds a fault.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// The configured faults.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// What went through so far.
    pub fn counts(&self) -> OpCounts {
        self.lock().counts.clone()
    }

    /// The faults that fired, in order: the kind of operation and its key
    /// (`(write barrier)` for a barrier).
    pub fn injected(&self) -> Vec<(OpKind, String)> {
        self.lock().injected.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has already failed;
        // the counters stay usable for its report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers an operation and decides its fate.
    fn begin(&self, kind: OpKind, key: &str) -> Action {
        let mut state = self.lock();
        let n = state.counts.by_kind.entry(kind).or_insert(0);
        *n += 1;
        let n = *n;
        let delay = self.faults.iter().find_map(|f| match f {
            Fault::Slow(k, d) if *k == kind => Some(*d),
            _ => None,
        });
        let fault = self.faults.iter().find(|f| match f {
            Fault::Slow(..) => false,
            Fault::ReadOnly => kind == OpKind::Put || kind == OpKind::Delete,
            Fault::FailUnder(k, prefix) => {
                *k == kind
                    && key.starts_with(prefix)
                    && !state
                        .injected
                        .iter()
                        .any(|(ik, ikey)| ik == k && ikey.starts_with(prefix))
            }
            _ => f.kind() == kind && f.fires_at(n),
        });
        if let Some(d) = delay {
            // Not while holding the state lock: other threads keep going.
            drop(state);
            std::thread::sleep(d);
            state = self.lock();
        }
        match fault {
            Some(f) => {
                state.injected.push((kind, key.to_string()));
                Action::Inject(*f)
            }
            None => Action::Pass,
        }
    }

    /// A put, counted and faulted.
    fn put_counted(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StoreError> {
        match self.begin(OpKind::Put, key) {
            Action::Pass => {
                self.inner.put(key, data, mode)?;
                self.record_put(key, data.len());
                Ok(())
            }
            Action::Inject(Fault::NoSpace(_)) => Err(Self::no_space(key)),
            Action::Inject(Fault::ReadOnly) => Err(Self::read_only(key)),
            Action::Inject(Fault::FailAfterPut(_)) => {
                self.inner.put(key, data, mode)?;
                self.record_put(key, data.len());
                Err(Self::failure(key, "acknowledging a write"))
            }
            Action::Inject(Fault::Transient(..)) => Err(Self::transient(key)),
            Action::Inject(_) => Err(Self::failure(key, "write")),
        }
    }

    fn record_read(&self, key: &str, bytes: &[u8]) {
        let mut state = self.lock();
        state.counts.bytes_read += bytes.len() as u64;
        *state
            .counts
            .reads_by_key
            .entry(key.to_string())
            .or_insert(0) += 1;
    }

    fn record_put(&self, key: &str, len: usize) {
        let mut state = self.lock();
        state.counts.bytes_written += len as u64;
        *state.counts.puts_by_key.entry(key.to_string()).or_insert(0) += 1;
        state.counts.writes.push(WriteEvent::Put(key.to_string()));
    }

    /// Records a change that succeeded, passing its result through.
    fn record(&self, event: WriteEvent, result: Result<(), StoreError>) -> Result<(), StoreError> {
        if result.is_ok() {
            self.lock().counts.writes.push(event);
        }
        result
    }

    /// The error of an injected failure.
    fn failure(key: &str, what: &str) -> StoreError {
        StoreError::Io {
            key: key.to_string(),
            source: io::Error::other(format!("injected fault: {what} failed")),
        }
    }

    fn transient(key: &str) -> StoreError {
        StoreError::Transient {
            key: key.to_string(),
            source: io::Error::new(io::ErrorKind::TimedOut, "injected fault: timed out"),
        }
    }

    fn read_only(key: &str) -> StoreError {
        StoreError::io(key, io::Error::from_raw_os_error(libc::EROFS))
    }

    fn no_space(key: &str) -> StoreError {
        StoreError::io(key, io::Error::from_raw_os_error(libc::ENOSPC))
    }

    fn read(
        &self,
        key: &str,
        read: impl FnOnce() -> Result<Vec<u8>, StoreError>,
    ) -> Result<Vec<u8>, StoreError> {
        match self.begin(OpKind::Read, key) {
            Action::Inject(Fault::ShortRead(_)) => {
                let mut bytes = read()?;
                bytes.truncate(bytes.len() / 2);
                self.record_read(key, &bytes);
                Ok(bytes)
            }
            Action::Inject(Fault::Transient(..)) => Err(Self::transient(key)),
            Action::Inject(_) => Err(Self::failure(key, "read")),
            Action::Pass => {
                let bytes = read()?;
                self.record_read(key, &bytes);
                Ok(bytes)
            }
        }
    }

    fn lookup<T>(
        &self,
        key: &str,
        op: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.begin(OpKind::Lookup, key) {
            Action::Inject(Fault::Transient(..)) => Err(Self::transient(key)),
            Action::Inject(_) => Err(Self::failure(key, "lookup")),
            Action::Pass => op(),
        }
    }
}

impl Store for FaultyStore {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.read(key, || self.inner.get(key))
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        self.read(key, || self.inner.get_range(key, offset, len))
    }

    fn size(&self, key: &str) -> Result<u64, StoreError> {
        self.lookup(key, || self.inner.size(key))
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StoreError> {
        {
            let mut state = self.lock();
            state.puts_in_flight += 1;
            state.counts.puts_in_flight_peak =
                state.counts.puts_in_flight_peak.max(state.puts_in_flight);
        }
        let result = self.put_counted(key, data, mode);
        self.lock().puts_in_flight -= 1;
        result
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.lookup(key, || self.inner.exists(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.lookup(prefix, || self.inner.list(prefix))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.begin(OpKind::Delete, key) {
            Action::Pass => self.record(WriteEvent::Delete(key.into()), self.inner.delete(key)),
            Action::Inject(Fault::Transient(..)) => Err(Self::transient(key)),
            Action::Inject(Fault::ReadOnly) => Err(Self::read_only(key)),
            Action::Inject(_) => Err(Self::failure(key, "delete")),
        }
    }

    fn barrier(&self) -> Result<(), StoreError> {
        match self.begin(OpKind::Barrier, BARRIER_KEY) {
            Action::Pass => self.record(WriteEvent::Barrier, self.inner.barrier()),
            Action::Inject(_) => Err(Self::failure(BARRIER_KEY, "write barrier")),
        }
    }

    fn remove_stale_temporaries(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        self.inner.remove_stale_temporaries(age)
    }

    fn large_puts_in_flight(&self) -> Option<usize> {
        self.inner.large_puts_in_flight()
    }

    fn requests(&self) -> Option<crate::store::RequestCounts> {
        self.inner.requests()
    }

    fn ensure_durable(&self, key: &str) -> Result<(), StoreError> {
        match self.begin(OpKind::Barrier, key) {
            Action::Pass => self.record(
                WriteEvent::EnsureDurable(key.into()),
                self.inner.ensure_durable(key),
            ),
            Action::Inject(_) => Err(Self::failure(key, "making durable")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        Arc::new(LocalStore::new(dir.path()))
    }

    #[test]
    fn counts_every_operation() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStore::counting(store(&dir));
        s.put("a/1", b"one", PutMode::Overwrite).unwrap();
        s.put("a/1", b"one", PutMode::Overwrite).unwrap();
        s.barrier().unwrap();
        assert_eq!(s.get("a/1").unwrap(), b"one");
        assert_eq!(s.get_range("a/1", 1, 2).unwrap(), b"ne");
        assert!(s.exists("a/1").unwrap());
        let listed = s.list("a/").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].size), ("a/1", 3));
        s.delete("a/1").unwrap();

        let c = s.counts();
        assert_eq!(c.ops(OpKind::Put), 2);
        assert_eq!(c.ops(OpKind::Read), 2);
        assert_eq!(c.ops(OpKind::Lookup), 2);
        assert_eq!(c.ops(OpKind::Delete), 1);
        assert_eq!(c.ops(OpKind::Barrier), 1);
        assert_eq!(c.bytes_read, 5);
        assert_eq!(c.bytes_written, 6);
        assert_eq!(c.keys_written_twice(), vec!["a/1"]);
        assert_eq!(
            c.writes,
            vec![
                WriteEvent::Put("a/1".into()),
                WriteEvent::Put("a/1".into()),
                WriteEvent::Barrier,
                WriteEvent::Delete("a/1".into()),
            ]
        );
        assert_eq!(c.keys_written_under("a/"), vec!["a/1"]);
        assert!(s.injected().is_empty());
    }

    #[test]
    fn a_failed_put_writes_nothing_and_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStore::new(store(&dir)).with_fault(Fault::Fail(OpKind::Put, 2));
        s.put("k1", b"x", PutMode::Overwrite).unwrap();
        let e = s.put("k2", b"y", PutMode::Overwrite).unwrap_err();
        assert!(e.to_string().contains("'k2'"), "{e}");
        s.put("k3", b"z", PutMode::Overwrite).unwrap();
        assert!(!dir.path().join("k2").exists());
        assert_eq!(s.injected(), vec![(OpKind::Put, "k2".to_string())]);
    }

    #[test]
    fn a_full_disk_stays_full() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStore::new(store(&dir)).with_fault(Fault::NoSpace(1));
        for key in ["k1", "k2"] {
            let e = s.put(key, b"x", PutMode::Overwrite).unwrap_err();
            assert!(matches!(e, StoreError::NoSpace { .. }), "{e}");
        }
        assert_eq!(s.counts().bytes_written, 0);
    }

    #[test]
    fn a_lost_acknowledgement_still_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStore::new(store(&dir)).with_fault(Fault::FailAfterPut(1));
        assert!(s.put("k", b"data", PutMode::Overwrite).is_err());
        assert_eq!(std::fs::read(dir.path().join("k")).unwrap(), b"data");
    }

    #[test]
    fn short_reads_return_half() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStore::new(store(&dir))
            .with_fault(Fault::ShortRead(1))
            .with_fault(Fault::ShortRead(2));
        s.put("k", b"abcdefgh", PutMode::Overwrite).unwrap();
        assert_eq!(s.get("k").unwrap(), b"abcd");
        assert_eq!(s.get_range("k", 2, 4).unwrap(), b"cd");
        assert_eq!(s.get("k").unwrap(), b"abcdefgh");
    }

    #[test]
    fn failed_lookups_deletes_and_barriers() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStore::new(store(&dir))
            .with_fault(Fault::Fail(OpKind::Lookup, 1))
            .with_fault(Fault::Fail(OpKind::Delete, 1))
            .with_fault(Fault::Fail(OpKind::Barrier, 1));
        s.put("k", b"x", PutMode::Overwrite).unwrap();
        assert!(s.list("").is_err());
        assert!(s.delete("k").is_err());
        assert!(dir.path().join("k").exists());
        let e = s.barrier().unwrap_err();
        assert!(e.to_string().contains("barrier"), "{e}");
        assert_eq!(s.injected().len(), 3);
    }
}
