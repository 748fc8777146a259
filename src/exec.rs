//! Worker threads: every operation's thread pool is made here, with one
//! bound on how many threads a caller may ask for.

use crate::error::{Error, Result};

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
