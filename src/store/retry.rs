//! Retries of transient failures (a timeout, a busy or restarting
//! service), with exponential backoff, as a decorator over any store.
//!
//! The services' own client retries single HTTP requests; this layer also
//! covers what reaches us as [`StoreError::Transient`] after that, so that
//! a service restarted in the middle of a backup costs a pause, not the
//! backup. A create-only put retried after a failure whose request may
//! have landed finds the key taken: it counts as done if the object there
//! is the one it was writing.

use std::sync::Arc;
use std::time::Duration;

use super::{ObjectInfo, PutMode, PutStream, RequestCounts, Store, StoreError};

/// A store that retries transient failures of `inner`.
pub struct RetryStore {
    inner: Arc<dyn Store>,
    attempts: u32,
    first_pause: Duration,
}

impl RetryStore {
    /// Up to 8 attempts, pausing 0.25 s, then twice as long each time
    /// (about a minute in all).
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self::with(inner, 8, Duration::from_millis(250))
    }

    /// `attempts` tries in all, the first pause `first_pause`.
    pub fn with(inner: Arc<dyn Store>, attempts: u32, first_pause: Duration) -> Self {
        RetryStore {
            inner,
            attempts: attempts.max(1),
            first_pause,
        }
    }

    fn retry<T>(&self, mut op: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut pause = self.first_pause;
        let mut attempt = 1;
        loop {
            match op() {
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(15));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl Store for RetryStore {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.retry(|| self.inner.get(key))
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        self.retry(|| self.inner.get_range(key, offset, len))
    }

    fn size(&self, key: &str) -> Result<u64, StoreError> {
        self.retry(|| self.inner.size(key))
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StoreError> {
        let mut failed_once = false;
        let result = self.retry(|| {
            let r = self.inner.put(key, data, mode);
            failed_once |= matches!(&r, Err(e) if e.is_transient());
            r
        });
        match result {
            Err(e) if e.is_already_exists() && failed_once => {
                // The failed attempt may have landed: ours if its bytes are.
                match self.retry(|| self.inner.get(key)) {
                    Ok(there) if there == data => Ok(()),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.retry(|| self.inner.exists(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.retry(|| self.inner.list(prefix))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.retry(|| self.inner.delete(key))
    }

    fn barrier(&self) -> Result<(), StoreError> {
        self.retry(|| self.inner.barrier())
    }

    fn ensure_durable(&self, key: &str) -> Result<(), StoreError> {
        self.inner.ensure_durable(key)
    }

    fn remove_stale_temporaries(&self, age: Duration) -> Result<usize, StoreError> {
        self.inner.remove_stale_temporaries(age)
    }

    /// A streamed put is not retried piece by piece: only stores that
    /// keep the bytes themselves stream, and their failures are not
    /// transient.
    fn begin_put(&self) -> Result<Option<Box<dyn PutStream>>, StoreError> {
        self.inner.begin_put()
    }

    fn large_puts_in_flight(&self) -> Option<usize> {
        self.inner.large_puts_in_flight()
    }

    fn requests(&self) -> Option<RequestCounts> {
        self.inner.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Fault, FaultyStore, MemoryStore, OpKind};

    #[test]
    fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let faulty = Arc::new(
            FaultyStore::new(Arc::new(MemoryStore::new()))
                .with_fault(Fault::Transient(OpKind::Put, 1))
                .with_fault(Fault::Transient(OpKind::Put, 2))
                .with_fault(Fault::Fail(OpKind::Read, 1)),
        );
        let s = RetryStore::with(faulty.clone(), 3, Duration::from_millis(1));
        s.put("k", b"v", PutMode::Overwrite).unwrap();
        assert_eq!(faulty.counts().ops(OpKind::Put), 3);
        assert!(s.get("k").is_err(), "a permanent failure is not retried");
        assert_eq!(s.get("k").unwrap(), b"v");
    }

    #[test]
    fn a_create_whose_lost_attempt_landed_counts_as_done() {
        // The first attempt stores the object but reports a timeout.
        struct LostAck(MemoryStore, std::sync::atomic::AtomicBool);
        impl Store for LostAck {
            fn get(&self, k: &str) -> Result<Vec<u8>, StoreError> {
                self.0.get(k)
            }
            fn get_range(&self, k: &str, o: u64, l: usize) -> Result<Vec<u8>, StoreError> {
                self.0.get_range(k, o, l)
            }
            fn size(&self, k: &str) -> Result<u64, StoreError> {
                self.0.size(k)
            }
            fn put(&self, k: &str, d: &[u8], m: PutMode) -> Result<(), StoreError> {
                self.0.put(k, d, m)?;
                if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    return Err(StoreError::Transient {
                        key: k.into(),
                        source: std::io::Error::other("timed out"),
                    });
                }
                Ok(())
            }
            fn exists(&self, k: &str) -> Result<bool, StoreError> {
                self.0.exists(k)
            }
            fn list(&self, p: &str) -> Result<Vec<ObjectInfo>, StoreError> {
                self.0.list(p)
            }
            fn delete(&self, k: &str) -> Result<(), StoreError> {
                self.0.delete(k)
            }
            fn barrier(&self) -> Result<(), StoreError> {
                Ok(())
            }
        }
        let inner = Arc::new(LostAck(MemoryStore::new(), Default::default()));
        let s = RetryStore::with(inner.clone(), 3, Duration::from_millis(1));
        s.put("config", b"mine", PutMode::Create).unwrap();
        // Someone else's object is still someone else's.
        let e = s.put("config", b"theirs", PutMode::Create).unwrap_err();
        assert!(e.is_already_exists());
    }
}
