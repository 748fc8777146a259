//! Progress reporting for long operations.

use std::fmt;
use std::sync::Arc;

/// A callback told how many bytes of image an operation has processed so
/// far, and how many it will process in all. Called from the operation's
/// coordinating thread, a few times per second at most per 16 MiB step.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(u64, u64) + Send + Sync>);

impl Progress {
    /// Wraps `f(done, total)`.
    pub fn new(f: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        Progress(Arc::new(f))
    }

    pub(crate) fn report(&self, done: u64, total: u64) {
        (self.0)(done, total)
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// Tracks bytes done against a total and reports to an optional callback.
pub(crate) struct Tracker {
    progress: Option<Progress>,
    done: u64,
    total: u64,
}

impl Tracker {
    pub(crate) fn new(progress: Option<Progress>, total: u64) -> Self {
        Tracker {
            progress,
            done: 0,
            total,
        }
    }

    pub(crate) fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if let Some(p) = &self.progress {
            // A stream's total is known only at its end.
            p.report(self.done, self.total.max(self.done));
        }
    }
}
