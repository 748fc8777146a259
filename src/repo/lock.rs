//! Locks: how commands that share a repository keep out of each other's
//! way (spec/FORMAT.md §15).
//!
//! A lock is an object `locks/<random id>` naming its holder (host, pid,
//! command) and kind. Shared locks coexist; an exclusive lock excludes
//! every other lock. Locks live in the repository itself, not in `flock`,
//! so the same protocol works on object storage.
//!
//! Taking a lock: list the locks; if a live one conflicts, wait or fail.
//! Otherwise write ours (create-only), list again, and if a conflicting
//! lock appeared meanwhile (two commands took theirs at the same instant),
//! remove ours and try again after a random pause. Of two conflicting
//! commands, at least one sees the other's lock, so they never both hold.
//!
//! A held lock is rewritten every [`LockOptions::refresh_every`] by a
//! background thread. A lock is *stale*, and ignored, when it was not
//! refreshed for [`LockOptions::stale_after`], or when it was taken on
//! this running machine (same boot id) by a process that is gone. If a
//! holder finds its lock removed (by `unlock`), it marks itself *lost*:
//! operations check [`RepoLock::check`] before the steps that depend on
//! it, and stop.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::layout::{lock_key, read_object, LOCKS};
use super::{host_name, now_unix, user_name};
use crate::error::{Error, Result};
use crate::format::lock::{bounded, LockMode, LockRecord, LOCK_VERSION};
use crate::store::{PutMode, Store, StoreError};

/// Which lock a command takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Commands that only add objects or read: backup, restore, check,
    /// sync, forget.
    Shared,
    /// Commands that delete what others may be using: prune's deleting
    /// phase, key removal.
    Exclusive,
}

/// Something worth telling the user about a lock.
#[derive(Debug, Clone)]
pub enum LockEvent {
    /// Waiting for these holders to finish.
    Waiting {
        /// The conflicting locks: mode, command, pid, host, user, since when.
        holders: String,
    },
    /// The repository could not be written: a read-only command goes on
    /// without a lock.
    Skipped {
        /// Why the lock could not be written.
        reason: String,
    },
}

/// Receives [`LockEvent`]s (the CLI prints them).
pub type LockNotifier = Arc<dyn Fn(&LockEvent) + Send + Sync>;

/// How locks are taken and kept.
#[derive(Clone)]
pub struct LockOptions {
    /// How long to wait for a conflicting lock to go away; zero fails at
    /// once, naming the holder.
    pub wait: Duration,
    /// A lock not refreshed for this long is stale.
    pub stale_after: Duration,
    /// How often a held lock is refreshed.
    pub refresh_every: Duration,
    /// Told when a command waits for a lock or goes on without one.
    pub notify: Option<LockNotifier>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            wait: Duration::ZERO,
            stale_after: DEFAULT_STALE_AFTER,
            refresh_every: DEFAULT_REFRESH_EVERY,
            notify: None,
        }
    }
}

impl std::fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockOptions")
            .field("wait", &self.wait)
            .field("stale_after", &self.stale_after)
            .field("refresh_every", &self.refresh_every)
            .finish()
    }
}

/// A lock not refreshed for 30 minutes is stale (six missed refreshes).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Held locks are refreshed every 5 minutes.
pub const DEFAULT_REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// Tries after a simultaneous-take race before giving up when not waiting.
const RACE_RETRIES: u32 = 5;

/// One lock object as found in the repository.
///
/// Serialised with `record` as `lock`, and `modified` as Unix seconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LockInfo {
    /// The lock's id (its key is `locks/<id>`).
    pub id: String,
    /// Its contents; `None` when the object could not be read or parsed
    /// (treated as an exclusive lock of an unknown holder).
    #[serde(rename = "lock")]
    pub record: Option<LockRecord>,
    /// Why it is stale, when it is.
    pub stale: Option<String>,
    /// When the store last saw it written.
    #[serde(serialize_with = "unix_seconds")]
    pub modified: SystemTime,
}

/// Serializes a time as Unix seconds (0 before 1970).
fn unix_seconds<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    s.serialize_u64(secs)
}

impl LockInfo {
    /// True for an exclusive lock, or one that cannot be read.
    pub fn is_exclusive(&self) -> bool {
        self.record
            .as_ref()
            .is_none_or(|r| r.mode == LockMode::Exclusive)
    }

    /// "exclusive lock of prune (pid 123 on vm, user root) since 2026-12-02 10:00:00 UTC".
    pub fn describe(&self) -> String {
        match &self.record {
            Some(r) => format!(
                "{} lock of '{}' (pid {} on {}, user {}) since {}",
                match r.mode {
                    LockMode::Shared => "shared",
                    LockMode::Exclusive => "exclusive",
                },
                r.command,
                r.pid,
                r.host,
                r.user,
                utc_time(r.created)
            ),
            None => format!("unreadable lock object {}", lock_key(&self.id)),
        }
    }
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc_time(secs: i64) -> String {
    format!("{} UTC", crate::retention::format_utc(secs))
}

/// Who this process is, as written into its locks.
struct Identity {
    host: String,
    user: String,
    pid: u32,
    process_start: u64,
    boot_id: String,
}

impl Identity {
    fn current() -> Self {
        let pid = std::process::id();
        Identity {
            host: bounded(&host_name()),
            user: bounded(&user_name()),
            pid,
            process_start: process_start(pid).unwrap_or(0),
            boot_id: boot_id().unwrap_or_default(),
        }
    }
}

fn boot_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(bounded(s.trim()))
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks
/// since boot. The command name (field 2) may hold spaces and parentheses,
/// so fields are counted from the last ')'.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Ids of the locks this process holds: a lock of this process that is
/// not among them was released, but its deletion failed.
static HELD_HERE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn held_here() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    HELD_HERE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a lock is stale, or `None` if it may be held.
fn staleness(
    id: &str,
    record: &LockRecord,
    modified: SystemTime,
    me: &Identity,
    now: i64,
    stale_after: Duration,
) -> Option<String> {
    if !me.boot_id.is_empty() && record.boot_id == me.boot_id && record.host == me.host {
        if record.pid == me.pid
            && record.process_start == me.process_start
            && !held_here().contains(id)
        {
            return Some("released by this process, which could not delete it".into());
        }
        let gone = match process_start(record.pid) {
            None => true,
            Some(start) => record.process_start != 0 && start != record.process_start,
        };
        if gone {
            return Some(format!("process {} on this machine is gone", record.pid));
        }
        // The holder runs here: its lock is live however old.
        return None;
    }
    let stored = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let last = record.refreshed.max(stored);
    let age = now.saturating_sub(last);
    (age > stale_after.as_secs() as i64).then(|| {
        format!(
            "not refreshed for {} (stale after {})",
            human_duration(age as u64),
            human_duration(stale_after.as_secs())
        )
    })
}

/// "3h 12m", "45s".
pub(crate) fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Every lock in `store`, each judged stale or live.
pub fn list_locks(store: &dyn Store, opts: &LockOptions) -> Result<Vec<LockInfo>> {
    let me = Identity::current();
    let now = now_unix().0;
    let mut out = Vec::new();
    for obj in store.list(LOCKS)? {
        let Some(id) = obj.key.strip_prefix(LOCKS) else {
            continue;
        };
        // An oversized object is no lock this build wrote: unreadable,
        // and never read into memory.
        let record = match read_object(store, &obj.key, Some(obj.size)) {
            Ok(bytes) => LockRecord::decode(&bytes).ok(),
            // Released between the listing and the read.
            Err(Error::Store(e)) if e.is_not_found() => continue,
            Err(Error::Store(e)) => return Err(e.into()),
            Err(_) => None,
        };
        let stale = match &record {
            Some(r) => staleness(id, r, obj.modified, &me, now, opts.stale_after),
            None => {
                let age = SystemTime::now()
                    .duration_since(obj.modified)
                    .unwrap_or_default();
                (age > opts.stale_after).then(|| "unreadable and old".to_string())
            }
        };
        out.push(LockInfo {
            id: id.to_string(),
            record,
            stale,
            modified: obj.modified,
        });
    }
    out.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Removes stale locks (all locks with `all`); returns the ones removed.
pub fn remove_locks(store: &dyn Store, all: bool, opts: &LockOptions) -> Result<Vec<LockInfo>> {
    let mut removed = Vec::new();
    for lock in list_locks(store, opts)? {
        if all || lock.stale.is_some() {
            store.delete(&lock_key(&lock.id))?;
            removed.push(lock);
        }
    }
    store.barrier()?;
    Ok(removed)
}

/// Live locks among `locks` that keep a lock of `kind` from being taken.
fn blockers<'a>(locks: &'a [LockInfo], kind: LockKind, ignore: &[String]) -> Vec<&'a LockInfo> {
    locks
        .iter()
        .filter(|l| l.stale.is_none() && !ignore.contains(&l.id))
        .filter(|l| kind == LockKind::Exclusive || l.is_exclusive())
        .collect()
}

fn describe_all(locks: &[&LockInfo]) -> String {
    locks
        .iter()
        .map(|l| l.describe())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A random pause of `lo..hi` milliseconds, so two racing commands do not
/// retry in step.
fn jitter(lo: u64, hi: u64) -> Duration {
    let mut b = [0u8; 8];
    crate::crypto::fill_random(&mut b);
    Duration::from_millis(lo + u64::from_le_bytes(b) % (hi - lo).max(1))
}

/// A lock held on a repository, released when dropped.
pub struct RepoLock {
    held: Option<Held>,
    skipped: Option<String>,
}

struct Held {
    store: Arc<dyn Store>,
    /// The current lock object's id: each refresh writes a new one.
    id: Arc<Mutex<String>>,
    location: String,
    lost: Arc<AtomicBool>,
    stop: Option<Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.held, &self.skipped) {
            (Some(h), _) => write!(f, "RepoLock({} on {})", lock_id(&h.id), h.location),
            (None, Some(why)) => write!(f, "RepoLock(none: {why})"),
            (None, None) => write!(f, "RepoLock(none)"),
        }
    }
}

impl RepoLock {
    /// Takes a lock of `kind` on `store` for `command`, waiting up to
    /// `opts.wait` for conflicting locks to go away. `ignore` names locks
    /// of this process that do not conflict with it (prune upgrading its
    /// shared lock).
    pub fn acquire(
        store: &Arc<dyn Store>,
        location: &str,
        kind: LockKind,
        command: &str,
        opts: &LockOptions,
    ) -> Result<RepoLock> {
        Self::acquire_ignoring(store, location, kind, command, opts, &Vec::new)
    }

    /// Like [`RepoLock::acquire`], but a repository that refuses writes
    /// (read-only medium, no permission) is read without a lock: for
    /// commands that only read. The notifier is told.
    pub fn acquire_for_reading(
        store: &Arc<dyn Store>,
        location: &str,
        command: &str,
        opts: &LockOptions,
    ) -> Result<RepoLock> {
        match Self::acquire(store, location, LockKind::Shared, command, opts) {
            Err(Error::Store(e)) if e.is_denied() => {
                let reason = format!(
                    "{location} cannot be written ({e}); reading it without a lock, so a prune running elsewhere could remove data this {command} reads"
                );
                if let Some(n) = &opts.notify {
                    n(&LockEvent::Skipped {
                        reason: reason.clone(),
                    });
                }
                Ok(RepoLock {
                    held: None,
                    skipped: Some(reason),
                })
            }
            other => other,
        }
    }

    pub(crate) fn acquire_ignoring(
        store: &Arc<dyn Store>,
        location: &str,
        kind: LockKind,
        command: &str,
        opts: &LockOptions,
        ignore: &dyn Fn() -> Vec<String>,
    ) -> Result<RepoLock> {
        let me = Identity::current();
        let deadline = Instant::now() + opts.wait;
        let mut told_waiting = false;
        let mut races = 0;
        loop {
            let locks = list_locks(store.as_ref(), opts)?;
            let ignored = ignore();
            let mut blocking = blockers(&locks, kind, &ignored);
            if blocking.is_empty() {
                // A fresh name at every try: one we stepped back from may
                // not have been deleted.
                let id = new_lock_id();
                let key = lock_key(&id);
                let (now, _) = now_unix();
                let record = LockRecord {
                    version: LOCK_VERSION,
                    mode: match kind {
                        LockKind::Shared => LockMode::Shared,
                        LockKind::Exclusive => LockMode::Exclusive,
                    },
                    command: bounded(command),
                    host: me.host.clone(),
                    user: me.user.clone(),
                    pid: me.pid,
                    process_start: me.process_start,
                    boot_id: me.boot_id.clone(),
                    created: now,
                    refreshed: now,
                };
                // Registered before it exists, so that no other thread of
                // this process ever takes it for one left behind.
                held_here().insert(id.clone());
                let step_back = || {
                    let _ = store.delete(&key);
                    held_here().remove(&id);
                };
                if let Err(e) = store.put(&key, &record.encode(), PutMode::Create) {
                    // It may have landed all the same (a lost
                    // acknowledgement); the name is ours alone.
                    step_back();
                    return Err(e.into());
                }
                let locks = match list_locks(store.as_ref(), opts) {
                    Ok(l) => l,
                    Err(e) => {
                        // Not knowing whether we hold it, we do not.
                        step_back();
                        return Err(e);
                    }
                };
                let mut ignore_me = ignore();
                ignore_me.push(id.clone());
                let raced = blockers(&locks, kind, &ignore_me);
                if raced.is_empty() {
                    return Ok(RepoLock::held(store.clone(), id, location, record, opts));
                }
                // Another command took a conflicting lock at the same
                // instant: both step back, and try again apart.
                step_back();
                races += 1;
                if Instant::now() >= deadline && races > RACE_RETRIES {
                    return Err(locked(location, kind, command, &raced));
                }
                std::thread::sleep(jitter(20, 400));
                continue;
            }
            if Instant::now() >= deadline {
                blocking.truncate(4);
                return Err(locked(location, kind, command, &blocking));
            }
            if !told_waiting {
                told_waiting = true;
                if let Some(n) = &opts.notify {
                    n(&LockEvent::Waiting {
                        holders: describe_all(&blocking),
                    });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(jitter(200, 1500).min(left.max(Duration::from_millis(10))));
        }
    }

    fn held(
        store: Arc<dyn Store>,
        id: String,
        location: &str,
        record: LockRecord,
        opts: &LockOptions,
    ) -> RepoLock {
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = channel::<()>();
        let id = Arc::new(Mutex::new(id));
        let refresher = {
            let (store, current, lost) = (store.clone(), id.clone(), lost.clone());
            let (every, stale_after) = (opts.refresh_every, opts.stale_after);
            std::thread::Builder::new()
                .name("diskvault-lock".into())
                .spawn(move || {
                    let mut record = record;
                    let mut last_ok = Instant::now();
                    loop {
                        match stopped.recv_timeout(every) {
                            Err(RecvTimeoutError::Timeout) => {}
                            _ => return,
                        }
                        match refresh(store.as_ref(), &current, &mut record) {
                            Ok(true) => last_ok = Instant::now(),
                            Ok(false) => {
                                lost.store(true, Ordering::SeqCst);
                                return;
                            }
                            // Others may already judge it stale: stop
                            // trusting it before they can.
                            Err(_) if last_ok.elapsed() > stale_after / 2 => {
                                lost.store(true, Ordering::SeqCst);
                                return;
                            }
                            Err(_) => {}
                        }
                    }
                })
                .ok()
        };
        RepoLock {
            held: Some(Held {
                store,
                id,
                location: location.to_string(),
                lost,
                stop: Some(stop),
                refresher,
            }),
            skipped: None,
        }
    }

    /// Fails if the lock was removed by someone else while held (by
    /// `unlock --all`, or because it was judged stale): what it protected
    /// may have changed, so the operation must stop.
    pub fn check(&self) -> Result<()> {
        match &self.held {
            Some(h) if h.lost.load(Ordering::SeqCst) => Err(Error::LockLost {
                location: h.location.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The lock object's id, when one is held (it changes at each
    /// refresh).
    pub fn id(&self) -> Option<String> {
        self.held.as_ref().map(|h| lock_id(&h.id))
    }

    /// Why no lock is held, for a read-only repository.
    pub fn skipped(&self) -> Option<&str> {
        self.skipped.as_deref()
    }
}

/// 16 random bytes in hex: no two lock objects ever share a name.
fn new_lock_id() -> String {
    let mut raw = [0u8; 16];
    crate::crypto::fill_random(&mut raw);
    hex::encode(raw)
}

fn lock_id(cell: &Mutex<String>) -> String {
    cell.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Refreshes a held lock: writes a new lock object with a new refresh
/// time, then deletes the old one. Returns false if the old one is gone
/// (removed by `unlock`): then the new one is taken back too, so a lock
/// that was removed never comes back to life under its holder's feet.
/// (Rewriting the old object in place could: its removal could land
/// between the check and the write.)
fn refresh(
    store: &dyn Store,
    current: &Mutex<String>,
    record: &mut LockRecord,
) -> std::result::Result<bool, StoreError> {
    let old = lock_id(current);
    if !store.exists(&lock_key(&old))? {
        return Ok(false);
    }
    let new = new_lock_id();
    held_here().insert(new.clone());
    let take_back = || {
        let _ = store.delete(&lock_key(&new));
        held_here().remove(&new);
    };
    record.refreshed = now_unix().0;
    if let Err(e) = store.put(&lock_key(&new), &record.encode(), PutMode::Create) {
        take_back();
        return Err(e);
    }
    match store.exists(&lock_key(&old)) {
        Ok(true) => {}
        Ok(false) => {
            take_back();
            return Ok(false);
        }
        Err(e) => {
            take_back();
            return Err(e);
        }
    }
    *current.lock().unwrap_or_else(|e| e.into_inner()) = new;
    let _ = store.delete(&lock_key(&old));
    held_here().remove(&old);
    Ok(true)
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        let Some(h) = self.held.as_mut() else {
            return;
        };
        drop(h.stop.take());
        if let Some(t) = h.refresher.take() {
            let _ = t.join();
        }
        let id = lock_id(&h.id);
        held_here().remove(&id);
        // A lock left behind is found stale later; nothing to report here.
        let _ = h.store.delete(&lock_key(&id));
    }
}

fn locked(location: &str, kind: LockKind, command: &str, holders: &[&LockInfo]) -> Error {
    Error::Locked {
        location: location.to_string(),
        wanted: format!(
            "{} lock for '{command}'",
            match kind {
                LockKind::Shared => "a shared",
                LockKind::Exclusive => "an exclusive",
            }
        ),
        holders: describe_all(holders),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_formats_known_instants() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_798_761_599), "2026-12-31 23:59:59 UTC");
    }

    #[test]
    fn process_start_of_this_process_is_known() {
        assert!(process_start(std::process::id()).is_some_and(|s| s > 0));
    }
}
