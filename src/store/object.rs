//! Vaults on object storage: Azure Blob Storage (`az://CONTAINER/PREFIX`)
//! and S3-compatible stores (`s3://BUCKET/PREFIX`), through the
//! `object_store` crate, behind the [`Store`] trait.
//!
//! A repository key `K` is the object `PREFIX/K` in the container or
//! bucket. What the contract needs maps onto what the services give:
//! create-only puts are conditional requests (`If-None-Match: *`), listings
//! are listings by prefix with each object's size and time, ranged reads
//! are `Range` requests, and a put is durable when it returns, so
//! [`Store::barrier`] has nothing to do. Credentials and endpoints come
//! from each cloud's usual environment variables (README, "Object
//! storage").
//!
//! The store is synchronous, like the rest of diskvault: every call runs
//! its request on a small runtime of its own. Many calls may run at once
//! from different threads; each waits only for its own request.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload, RetryConfig};

use super::{ObjectInfo, PutMode, RequestCounts, Store, StoreError};

/// Which service a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Azure Blob Storage (`az://`).
    Azure,
    /// Amazon S3 or a compatible service (`s3://`).
    S3,
}

/// A parsed `az://CONTAINER/PREFIX` or `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    /// Azure or S3.
    pub service: Service,
    /// The container (Azure) or bucket (S3).
    pub container: String,
    /// The prefix under which the repository's keys live, without slashes
    /// at either end; empty for the whole container.
    pub prefix: String,
}

impl ObjectUrl {
    /// Parses a URL; `None` when `text` is not one (a local path).
    pub fn parse(text: &str) -> Option<Result<ObjectUrl, String>> {
        let (service, rest) = if let Some(r) = text.strip_prefix("az://") {
            (Service::Azure, r)
        } else if let Some(r) = text.strip_prefix("s3://") {
            (Service::S3, r)
        } else {
            return None;
        };
        let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/').to_string();
        if container.is_empty() {
            return Some(Err(format!(
                "'{text}' names no container or bucket; write az://CONTAINER/PREFIX or s3://BUCKET/PREFIX"
            )));
        }
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Some(Err(format!(
                "'{text}': '.' and '..' are not allowed in a prefix"
            )));
        }
        Some(Ok(ObjectUrl {
            service,
            container: container.to_string(),
            prefix,
        }))
    }
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.service {
            Service::Azure => "az",
            Service::S3 => "s3",
        };
        if self.prefix.is_empty() {
            write!(f, "{scheme}://{}", self.container)
        } else {
            write!(f, "{scheme}://{}/{}", self.container, self.prefix)
        }
    }
}

/// Counters of the requests a remote store made.
#[derive(Default)]
struct Counters {
    get: AtomicU64,
    put: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    head: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// A repository in a container or bucket. See the module documentation.
pub struct ObjectBackend {
    inner: Arc<dyn ObjectStore>,
    url: ObjectUrl,
    runtime: tokio::runtime::Runtime,
    counters: Counters,
}

/// Objects this large are uploaded in parts. Above the default pack size
/// (16 MiB), so that a backup's packs each cost one request; large index
/// files and packs of a larger target go in parts, several at once.
pub const MULTIPART_THRESHOLD: usize = 32 << 20;

/// The size of each part of a multipart upload (S3 needs 5 MiB or more
/// for every part but the last).
pub const PART_SIZE: usize = 8 << 20;

/// Parts of one object in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// How long the service's client keeps retrying a failing request
/// (connection refused, 5xx, timeouts) before the error reaches us.
const RETRY_TIMEOUT: Duration = Duration::from_secs(90);

impl ObjectBackend {
    /// Connects to the container or bucket `url` names, with credentials
    /// and endpoints from the environment, and checks that it can be
    /// listed: a wrong credential, a missing container or an unreachable
    /// endpoint fails here, saying which.
    pub fn open(url: &ObjectUrl) -> Result<ObjectBackend, StoreError> {
        Self::open_with(url, &[])
    }

    /// [`ObjectBackend::open`] with settings given as environment
    /// variables would give them (`AZURE_STORAGE_ACCOUNT_KEY`,
    /// `AWS_ENDPOINT_URL`, ...), applied over the environment's: how an
    /// embedder configures a store without touching the process
    /// environment.
    pub fn open_with(
        url: &ObjectUrl,
        settings: &[(String, String)],
    ) -> Result<ObjectBackend, StoreError> {
        let backend = Self::connect(url, settings, RETRY_TIMEOUT, 10)?;
        // A quick first contact: no minutes of retries to learn that the
        // endpoint is wrong.
        let probe = Self::connect(url, settings, Duration::from_secs(10), 2)?;
        let prefix = probe.path("");
        let probed = probe.run(async {
            let mut listing = probe.inner.list(Some(&prefix));
            listing.next().await.transpose().map(|_| ())
        });
        probed.map_err(|e| classify(&url.to_string(), e, true))?;
        Ok(backend)
    }

    fn connect(
        url: &ObjectUrl,
        settings: &[(String, String)],
        retry_timeout: Duration,
        max_retries: usize,
    ) -> Result<Self, StoreError> {
        let setting = |name: &str| {
            settings
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(name).ok())
                .unwrap_or_default()
        };
        let retry = RetryConfig {
            max_retries,
            retry_timeout,
            ..RetryConfig::default()
        };
        let config_error = |e: object_store::Error| StoreError::Backend {
            key: url.to_string(),
            failure: BackendFailure::Configuration,
            detail: e.to_string(),
        };
        let inner: Arc<dyn ObjectStore> = match url.service {
            Service::Azure => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_container_name(&url.container)
                    .with_retry(retry);
                for (k, v) in settings {
                    if let Ok(key) = k.to_ascii_lowercase().parse::<AzureConfigKey>() {
                        b = b.with_config(key, v);
                    }
                }
                if setting("AZURE_STORAGE_ENDPOINT").starts_with("http://") {
                    b = b.with_allow_http(true);
                }
                Arc::new(b.build().map_err(config_error)?)
            }
            Service::S3 => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&url.container)
                    .with_retry(retry);
                for (k, v) in settings {
                    if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        b = b.with_config(key, v);
                    }
                }
                // A plain-HTTP endpoint (an emulator, a private gateway)
                // is what the user asked for.
                let mut endpoint = setting("AWS_ENDPOINT_URL");
                if endpoint.is_empty() {
                    endpoint = setting("AWS_ENDPOINT");
                }
                if endpoint.starts_with("http://") {
                    b = b.with_allow_http(true);
                }
                if !endpoint.is_empty() {
                    // Custom endpoints name the bucket in the path.
                    b = b.with_virtual_hosted_style_request(false);
                }
                Arc::new(b.build().map_err(config_error)?)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("diskvault-net")
            .enable_all()
            .build()
            .map_err(|e| StoreError::io(&url.to_string(), e))?;
        Ok(ObjectBackend {
            inner,
            url: url.clone(),
            runtime,
            counters: Counters::default(),
        })
    }

    /// Where this store is, as a URL.
    pub fn url(&self) -> &ObjectUrl {
        &self.url
    }

    fn path(&self, key: &str) -> ObjectPath {
        let full = match (self.url.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.trim_end_matches('/').to_string(),
            (false, true) => self.url.prefix.clone(),
            (false, false) => format!("{}/{}", self.url.prefix, key.trim_end_matches('/')),
        };
        ObjectPath::from(full)
    }

    /// The repository key of an object path under the prefix.
    fn key_of(&self, path: &ObjectPath) -> Option<String> {
        let s = path.as_ref();
        if self.url.prefix.is_empty() {
            return Some(s.to_string());
        }
        s.strip_prefix(&self.url.prefix)?
            .strip_prefix('/')
            .map(str::to_string)
    }

    /// Uploads a large object in parts, [`PARTS_IN_FLIGHT`] at once. The
    /// object appears whole when the upload completes, never before, so a
    /// put in parts is as atomic as a single one.
    ///
    /// Only for [`PutMode::Overwrite`]: a multipart upload cannot be made
    /// conditional through every service, and a create-only put is never a
    /// check-then-write, so those always go as one conditional request
    /// (services take single puts of several GiB). The objects written
    /// create-only (config, locks, key files) are small anyway; the large
    /// ones (packs, index files) are content-named and overwritable.
    fn put_in_parts(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key);
        let parts = data.len().div_ceil(PART_SIZE) as u64;
        // Starting the upload is a request on S3; finishing it is one on
        // both services.
        let requests = parts + 1 + u64::from(self.url.service == Service::S3);
        self.counters.put.fetch_add(requests, Ordering::Relaxed);
        let result = self.run(async {
            let upload = self.inner.put_multipart(&path).await?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            for part in data.chunks(PART_SIZE) {
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    // The parts already sent would be kept (and billed)
                    // until the service expires them: abandon them now.
                    let _ = writer.abort().await;
                    return Err(e);
                }
                writer.write(part);
            }
            writer.finish().await
        });
        result.map_err(|e| classify(key, e, false))?;
        self.counters
            .sent
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn run<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What went wrong talking to the service, for a clear one-line error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendFailure {
    /// The endpoint did not answer (refused, unresolvable, timed out).
    Unreachable,
    /// The service refused the credentials.
    Credentials,
    /// The container or bucket does not exist.
    MissingContainer,
    /// The URL or environment does not make a usable client.
    Configuration,
}

impl std::fmt::Display for BackendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendFailure::Unreachable => "the storage endpoint cannot be reached",
            BackendFailure::Credentials => "the storage service refused the credentials",
            BackendFailure::MissingContainer => "the container or bucket does not exist",
            BackendFailure::Configuration => "the storage client cannot be configured",
        })
    }
}

/// Maps an `object_store` error on `key` to the contract's errors. At the
/// first contact (`probing`), failures the service reports in general
/// terms are told apart: endpoint, credentials, container.
fn classify(key: &str, e: object_store::Error, probing: bool) -> StoreError {
    use object_store::Error as E;
    let text = error_chain(&e);
    let lower = text.to_ascii_lowercase();
    let backend = |failure| StoreError::Backend {
        key: key.to_string(),
        failure,
        detail: first_line(&text),
    };
    if lower.contains("containernotfound")
        || lower.contains("nosuchbucket")
        || lower.contains("the specified container does not exist")
        || lower.contains("the specified bucket does not exist")
    {
        return backend(BackendFailure::MissingContainer);
    }
    match e {
        E::NotFound { .. } => {
            return StoreError::NotFound {
                key: key.to_string(),
            }
        }
        E::AlreadyExists { .. } | E::Precondition { .. } => {
            return StoreError::AlreadyExists {
                key: key.to_string(),
            }
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            return backend(BackendFailure::Credentials)
        }
        _ => {}
    }
    if lower.contains("authenticationfailed")
        || lower.contains("signaturedoesnotmatch")
        || lower.contains("invalidaccesskeyid")
        || lower.contains("accessdenied")
        || lower.contains("403 forbidden")
        || lower.contains("401 unauthorized")
    {
        return backend(BackendFailure::Credentials);
    }
    let unreachable = lower.contains("connection refused")
        || lower.contains("dns error")
        || lower.contains("error sending request")
        || lower.contains("timed out")
        || lower.contains("connection reset")
        || lower.contains("broken pipe");
    if unreachable && probing {
        return backend(BackendFailure::Unreachable);
    }
    let io = std::io::Error::other(first_line(&text));
    if unreachable
        || lower.contains("500 internal")
        || lower.contains("502 ")
        || lower.contains("503 ")
        || lower.contains("504 ")
        || lower.contains("slowdown")
        || lower.contains("serverbusy")
    {
        return StoreError::Transient {
            key: key.to_string(),
            source: io,
        };
    }
    StoreError::Io {
        key: key.to_string(),
        source: io,
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut end = line.len().min(400);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

impl Store for ObjectBackend {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.count(&self.counters.get);
        let path = self.path(key);
        let bytes = self
            .run(async { self.inner.get(&path).await?.bytes().await })
            .map_err(|e| classify(key, e, false))?;
        self.counters
            .received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes.to_vec())
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        if len == 0 {
            // An empty range is no request; the object must exist.
            self.size(key)?;
            return Ok(Vec::new());
        }
        self.count(&self.counters.get);
        let path = self.path(key);
        let range = offset..offset + len as u64;
        let result = self.run(self.inner.get_range(&path, range));
        let bytes = match result {
            Ok(b) => b,
            // The service refuses a range past the end; say it the way the
            // contract does.
            Err(e) if error_chain(&e).to_ascii_lowercase().contains("range") => {
                return Err(StoreError::Io {
                    key: key.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("object is shorter than {} bytes", offset + len as u64),
                    ),
                })
            }
            Err(e) => return Err(classify(key, e, false)),
        };
        self.counters
            .received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if bytes.len() != len {
            return Err(StoreError::Io {
                key: key.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("object is shorter than {} bytes", offset + len as u64),
                ),
            });
        }
        Ok(bytes.to_vec())
    }

    fn size(&self, key: &str) -> Result<u64, StoreError> {
        self.count(&self.counters.head);
        let path = self.path(key);
        self.run(self.inner.head(&path))
            .map(|m| m.size)
            .map_err(|e| classify(key, e, false))
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StoreError> {
        if data.len() >= MULTIPART_THRESHOLD && mode == PutMode::Overwrite {
            return self.put_in_parts(key, data);
        }
        self.count(&self.counters.put);
        let path = self.path(key);
        let opts = PutOptions {
            mode: match mode {
                PutMode::Overwrite => object_store::PutMode::Overwrite,
                PutMode::Create => object_store::PutMode::Create,
            },
            ..PutOptions::default()
        };
        let payload = PutPayload::from(data.to_vec());
        self.run(self.inner.put_opts(&path, payload, opts))
            .map_err(|e| classify(key, e, false))?;
        self.counters
            .sent
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.size(key) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.count(&self.counters.list);
        let path = self.path(prefix);
        let listed = self.run(async {
            let mut out = Vec::new();
            let mut stream = self.inner.list(Some(&path));
            while let Some(meta) = stream.next().await {
                out.push(meta?);
            }
            Ok::<_, object_store::Error>(out)
        });
        let metas = listed.map_err(|e| classify(prefix, e, false))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let key = self.key_of(&m.location)?;
                let secs = m.last_modified.timestamp().max(0) as u64;
                Some(ObjectInfo {
                    key,
                    size: m.size,
                    modified: UNIX_EPOCH + Duration::from_secs(secs),
                })
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.count(&self.counters.delete);
        let path = self.path(key);
        match self.run(self.inner.delete(&path)) {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(key, e, false)),
        }
    }

    fn barrier(&self) -> Result<(), StoreError> {
        // A put is durable once the service acknowledged it.
        Ok(())
    }

    fn requests(&self) -> Option<RequestCounts> {
        let c = &self.counters;
        Some(RequestCounts {
            get: c.get.load(Ordering::Relaxed),
            put: c.put.load(Ordering::Relaxed),
            list: c.list.load(Ordering::Relaxed),
            delete: c.delete.load(Ordering::Relaxed),
            head: c.head.load(Ordering::Relaxed),
            bytes_sent: c.sent.load(Ordering::Relaxed),
            bytes_received: c.received.load(Ordering::Relaxed),
        })
    }
}

/// Seconds since the epoch of a time, for tests and messages.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
