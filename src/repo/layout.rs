//! Where every object of a repository lives: the one place that spells
//! object keys (spec/FORMAT.md §1).

use crate::format::{ChunkId, ForgetId, IndexId, KeyId, PackId, PointId};
use crate::store::Store;

/// The config object.
pub const CONFIG_KEY: &str = "config";
/// The replica marker, present in repositories created by `sync`.
pub const REPLICA_KEY: &str = "replica";
/// The stored retention policy.
pub const POLICY_KEY: &str = "policy";

/// Prefixes of the kinds of object that come in numbers.
pub const PACKS: &str = "packs/";
pub const INDEX: &str = "index/";
pub const POINTS: &str = "points/";
pub const KEYS: &str = "keys/";
pub const LOCKS: &str = "locks/";
pub const FORGOTTEN: &str = "forgotten/";
pub const TMP: &str = "tmp/";

/// Object key of a pack.
pub fn pack_key(id: &PackId) -> String {
    let h = id.to_hex();
    format!("{PACKS}{}/{}", &h[..2], h)
}

/// Object key of an index file.
pub fn index_key(id: &IndexId) -> String {
    format!("{INDEX}{id}")
}

/// Object key of a recovery point.
pub fn point_key(id: &PointId) -> String {
    format!("{POINTS}{id}")
}

/// Object key of a key file.
pub fn key_key(id: &KeyId) -> String {
    format!("{KEYS}{id}")
}

/// Object key of a forget record (the id is the BLAKE3 of its bytes, like
/// every content-named object).
pub fn forget_key(id: &ForgetId) -> String {
    format!("{FORGOTTEN}{id}")
}

/// Object key of a lock, named by its random id.
pub fn lock_key(id: &str) -> String {
    format!("{LOCKS}{id}")
}

/// How messages name a chunk.
pub fn chunk_name(id: &ChunkId) -> String {
    format!("chunk {}", id.to_hex())
}

/// The ids named by the keys under `prefix`, with each object's size,
/// ignoring names that are not ids (stray files are reported by `check`,
/// not fatal here).
pub fn list_ids_sized<T: std::str::FromStr>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<(T, u64)>, crate::store::StoreError> {
    Ok(store
        .list(prefix)?
        .into_iter()
        .filter_map(|o| {
            let name = o.key.rsplit('/').next()?;
            name.parse::<T>().ok().map(|id| (id, o.size))
        })
        .collect())
}

/// The ids named by the keys under `prefix` (see [`list_ids_sized`]).
pub fn list_ids<T: std::str::FromStr>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<T>, crate::store::StoreError> {
    Ok(list_ids_sized(store, prefix)?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}
