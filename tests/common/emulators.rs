//! The object-storage emulators started by `tests/emulators/start.py`
//! (which `.ci/run` runs): where they are, and how to point diskvault at
//! them. A backend whose emulator is absent is skipped with a line saying
//! so, so that `cargo test` passes on a machine without Node.js or moto.

use std::sync::atomic::{AtomicU64, Ordering};

/// Azurite's published development account and key (not secrets).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The container and bucket the start script creates.
pub const CONTAINER: &str = "diskvault-test";

/// One emulated backend.
#[derive(Debug, Clone)]
pub struct Emulator {
    /// `az` or `s3`.
    pub scheme: &'static str,
    /// The emulator's HTTP endpoint.
    pub endpoint: String,
}

impl Emulator {
    /// The environment that points diskvault at this emulator, as
    /// variables (for child processes) or settings (for the library).
    pub fn env(&self) -> Vec<(String, String)> {
        let v = |k: &str, x: &str| (k.to_string(), x.to_string());
        match self.scheme {
            "az" => vec![
                v("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT),
                v("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY),
                v(
                    "AZURE_STORAGE_ENDPOINT",
                    &format!("{}/{AZURITE_ACCOUNT}", self.endpoint),
                ),
            ],
            _ => vec![
                v("AWS_ACCESS_KEY_ID", "testing"),
                v("AWS_SECRET_ACCESS_KEY", "testing"),
                v("AWS_REGION", "us-east-1"),
                v("AWS_ENDPOINT_URL", &self.endpoint),
            ],
        }
    }

    /// A URL no other test uses: a fresh prefix in the test container.
    pub fn fresh_url(&self, what: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!(
            "{}://{CONTAINER}/{what}-{}-{nanos}-{n}",
            self.scheme,
            std::process::id()
        )
    }
}

/// The emulators that are running, by the variables the start script
/// prints; says on stderr which are not.
pub fn emulators() -> Vec<Emulator> {
    let mut out = Vec::new();
    for (scheme, var) in [
        ("az", "DISKVAULT_TEST_AZURITE"),
        ("s3", "DISKVAULT_TEST_S3"),
    ] {
        match std::env::var(var) {
            Ok(endpoint) if !endpoint.is_empty() => out.push(Emulator { scheme, endpoint }),
            _ => eprintln!(
                "skipping the {scheme} backend: {var} is not set (run: eval \"$(python3 tests/emulators/start.py)\")"
            ),
        }
    }
    out
}
