//! Worker threads: every operation's thread pool is made here, with one
//! bound on how many threads a caller may ask for; and the request pool,
//! apart from the CPU pools, where reads from storage wait for their
//! answers (many in flight hide an object store's latency).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Requests in flight at once by default: enough to hide an object
/// store's latency, few enough for an emulator or a small gateway.
pub const DEFAULT_REQUESTS: usize = 8;

static REQUESTS: AtomicUsize = AtomicUsize::new(DEFAULT_REQUESTS);
static REQUEST_POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

/// Sets how many storage requests may be in flight at once (1 to
/// [`MAX_THREADS`]). Takes effect if called before the first request pool
/// is used; the CLI's `--connections` sets it at start.
pub fn set_requests_in_flight(n: usize) -> Result<()> {
    check_threads(Some(n))?;
    REQUESTS.store(n, Ordering::Relaxed);
    Ok(())
}

/// How many storage requests may be in flight at once.
pub fn requests_in_flight() -> usize {
    REQUESTS.load(Ordering::Relaxed)
}

/// The pool whose threads wait for storage: ranged reads of a restore,
/// whole packs of `check --read-data`. Separate from the CPU pools, so
/// that waiting for the network never keeps a core idle. Work on it only
/// waits for storage: nothing running on it may wait for other work on it
/// (that could hold every thread waiting), and pack uploads are spawned on
/// it from outside.
pub(crate) fn request_pool() -> &'static rayon::ThreadPool {
    REQUEST_POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(requests_in_flight())
            .thread_name(|i| format!("diskvault-io-{i}"))
            .build()
            // Threads could not start at all: the machine cannot run
            // anything else either.
            .expect("cannot start the request threads")
    })
}

/// Most worker threads an operation accepts. Far above what any machine's
/// cores or storage can use; a larger number is a mistake (a typo, a
/// misunderstood flag), and spawning it would take minutes and memory.
pub const MAX_THREADS: usize = 256;

/// Checks a requested number of threads: 1 to [`MAX_THREADS`], or `None`
/// for the default.
pub fn check_threads(threads: Option<usize>) -> Result<()> {
    match threads {
        Some(n) if n == 0 || n > MAX_THREADS => Err(Error::InvalidArgument(format!(
            "{n} threads is not a sensible number of worker threads; give 1 to {MAX_THREADS}"
        ))),
        _ => Ok(()),
    }
}

/// A pool of `threads` workers named `diskvault-<what>-N`, all cores when
/// `None`.
pub(crate) fn worker_pool(threads: Option<usize>, what: &str) -> Result<rayon::ThreadPool> {
    check_threads(threads)?;
    let what = what.to_string();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .thread_name(move |i| format!("diskvault-{what}-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start worker threads: {e}")))
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a
/// `String`), or a placeholder.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}
