//! Progress reporting for long operations.
//!
//! An operation tells a [`ProgressSink`] how many bytes it has processed
//! and how many it will process in all; an embedding product implements
//! the trait to draw its own progress (the `diskvault` command draws a
//! bar). The options of every long operation carry an optional
//! [`Progress`], the handle that holds the sink.

use std::fmt;
use std::sync::{Arc, Mutex};

/// Receives the progress of a long operation.
///
/// `update` may be called from several of the operation's threads, but
/// never at the same time for one operation, and `done` never goes down
/// within a phase. Keep both methods cheap: they run on the operation's
/// threads.
pub trait ProgressSink: Send + Sync {
    /// A new phase begins: `name` says what is counted (`"backup"`,
    /// `"restore"`, `"check"`, `"sync"`, `"repair"`, `"repack"`), `total`
    /// how many bytes it will process (0 when not known yet). Operations
    /// with one phase may not call it; the default does nothing.
    fn phase(&self, name: &str, total: u64) {
        let _ = (name, total);
    }

    /// `done` bytes of `total` are processed in the current phase.
    fn update(&self, done: u64, total: u64);
}

/// Any `Fn(done, total)` closure is a sink that ignores phases.
impl<F: Fn(u64, u64) + Send + Sync> ProgressSink for F {
    fn update(&self, done: u64, total: u64) {
        self(done, total)
    }
}

/// A shared handle on a [`ProgressSink`], as the options of long
/// operations carry it. Cloning it shares the sink.
#[derive(Clone)]
pub struct Progress(Arc<dyn ProgressSink>);

impl Progress {
    /// Wraps a closure `f(done, total)`.
    pub fn new(f: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        Progress(Arc::new(f))
    }

    /// Wraps a sink of the caller's own (a trait object).
    pub fn from_sink(sink: Arc<dyn ProgressSink>) -> Self {
        Progress(sink)
    }

    /// The sink this handle reports to.
    pub fn sink(&self) -> &dyn ProgressSink {
        self.0.as_ref()
    }

    pub(crate) fn report(&self, done: u64, total: u64) {
        self.0.update(done, total)
    }

    pub(crate) fn begin(&self, phase: &str, total: u64) {
        self.0.phase(phase, total)
    }
}

impl From<Arc<dyn ProgressSink>> for Progress {
    fn from(sink: Arc<dyn ProgressSink>) -> Self {
        Progress::from_sink(sink)
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
    open_ended: bool,
}

impl Tracker {
    pub(crate) fn new(progress: Option<Progress>, total: u64) -> Self {
        Tracker {
            progress,
            done: 0,
            total,
            open_ended: false,
        }
    }

    /// A tracker whose `total` may be passed (a stream's size is known
    /// only at its end): the total reported grows with what was done.
    pub(crate) fn open_ended(progress: Option<Progress>, total: u64) -> Self {
        Tracker {
            open_ended: true,
            ..Tracker::new(progress, total)
        }
    }

    pub(crate) fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if let Some(p) = &self.progress {
            if self.open_ended {
                p.report(self.done, self.total.max(self.done));
            } else {
                p.report(self.done.min(self.total), self.total);
            }
        }
    }
}

/// A [`Tracker`] that worker threads advance together: one phase of an
/// operation whose units (packs) are processed in parallel. The lock keeps
/// the reports in order; it is taken once per unit, not per byte.
pub(crate) struct SharedTracker(Option<Mutex<Tracker>>);

impl SharedTracker {
    /// Starts phase `name` of `total` bytes on `progress`, if any.
    pub(crate) fn begin(progress: Option<&Progress>, name: &str, total: u64) -> Self {
        SharedTracker(progress.map(|p| {
            p.begin(name, total);
            p.report(0, total);
            Mutex::new(Tracker::new(Some(p.clone()), total))
        }))
    }

    pub(crate) fn advance(&self, bytes: u64) {
        if let Some(t) = &self.0 {
            t.lock().unwrap_or_else(|e| e.into_inner()).advance(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A sink of an embedding product's own, counting what it is told.
    #[derive(Default)]
    struct Recorder {
        phases: Mutex<Vec<(String, u64)>>,
        last: AtomicU64,
    }

    impl ProgressSink for Recorder {
        fn phase(&self, name: &str, total: u64) {
            self.phases.lock().unwrap().push((name.to_string(), total));
        }
        fn update(&self, done: u64, _total: u64) {
            self.last.store(done, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_trait_object_hears_phases_and_a_closure_hears_updates() {
        let recorder = Arc::new(Recorder::default());
        let progress = Progress::from_sink(recorder.clone());
        let tracker = SharedTracker::begin(Some(&progress), "check", 10);
        tracker.advance(4);
        tracker.advance(9);
        assert_eq!(*recorder.phases.lock().unwrap(), vec![("check".into(), 10)]);
        assert_eq!(
            recorder.last.load(Ordering::SeqCst),
            10,
            "capped at the total"
        );

        let seen = Arc::new(AtomicU64::new(0));
        let s = seen.clone();
        let closure = Progress::new(move |done, _| s.store(done, Ordering::SeqCst));
        let mut t = Tracker::new(Some(closure), 100);
        t.advance(30);
        assert_eq!(seen.load(Ordering::SeqCst), 30);
    }
}
