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
/// Prefix of index files.
pub const INDEX: &str = "index/";
/// Prefix of recovery points.
pub const POINTS: &str = "points/";
/// Prefix of key files.
pub const KEYS: &str = "keys/";
/// Prefix of lock objects.
pub const LOCKS: &str = "locks/";
/// Prefix of forget records.
pub const FORGOTTEN: &str = "forgotten/";
/// Prefix of temporary files of writers in progress; never read.
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

/// The largest object a reader accepts under `key`: what this format's
/// bounds allow writers to produce (spec/FORMAT.md §12). Every whole-object
/// read goes through [`read_object`], which refuses anything larger before
/// reading it, so a planted or damaged huge object never fills memory.
pub fn size_limit(key: &str) -> u64 {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    if key == CONFIG_KEY || key == REPLICA_KEY {
        64 * KIB
    } else if key == POLICY_KEY {
        crate::format::policy::MAX_POLICY_LEN as u64 + KIB
    } else if key.starts_with(KEYS) || key.starts_with(FORGOTTEN) {
        16 * KIB
    } else if key.starts_with(LOCKS) {
        crate::format::lock::MAX_LOCK_LEN as u64
    } else if key.starts_with(POINTS) {
        MIB
    } else if key.starts_with(INDEX) {
        crate::format::MAX_BLOB_PLAINTEXT as u64 + 64 * KIB
    } else if key.starts_with(PACKS) {
        MAX_PACK_BYTES
    } else {
        64 * KIB
    }
}

/// Largest pack a reader accepts. Writers close a pack at 16 MiB, so a pack
/// is at most 16 MiB plus one chunk (8 MiB at most) plus its table.
pub const MAX_PACK_BYTES: u64 = 64 << 20;

/// Reads the whole object `key`, refusing it as damaged if it is larger
/// than [`size_limit`] allows. `listed_size` is its size when a listing
/// gave it (saving a lookup). A missing object is `Store(NotFound)`.
pub fn read_object(
    store: &dyn Store,
    key: &str,
    listed_size: Option<u64>,
) -> crate::error::Result<Vec<u8>> {
    use crate::error::Error;
    let limit = size_limit(key);
    let size = match listed_size {
        Some(s) => s,
        None => store.size(key).map_err(Error::Store)?,
    };
    if size > limit {
        return Err(too_large(key, size, limit));
    }
    let bytes = store.get(key).map_err(Error::Store)?;
    // It may have grown since it was measured.
    if bytes.len() as u64 > limit {
        return Err(too_large(key, bytes.len() as u64, limit));
    }
    Ok(bytes)
}

fn too_large(key: &str, size: u64, limit: u64) -> crate::error::Error {
    crate::error::Error::damaged(
        key,
        format!("it is {size} bytes, more than the {limit} such an object can be"),
    )
}

/// Temporary files (under `tmp/`) older than this are litter of writers
/// that were killed: a live writer renames its file within seconds. The
/// commands that write (backup, sync, prune) remove them; `check` counts
/// them.
pub const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// True for the objects a remote store's local cache keeps: small,
/// immutable, content-named, and read whole by every command (index
/// files, points, key files, forget records).
pub fn is_cacheable(key: &str) -> bool {
    [INDEX, POINTS, KEYS, FORGOTTEN]
        .iter()
        .any(|p| is_object_key(p, key))
}

/// How messages name a chunk.
pub fn chunk_name(id: &ChunkId) -> String {
    format!("chunk {}", id.to_hex())
}

/// True when `key`, listed under `prefix`, is where an object of that
/// kind lives: a name of 64 lower-case hex characters, directly under the
/// prefix, or for a pack under the folder of its first two characters
/// (spec/FORMAT.md §1). Anything else is a stray that readers ignore.
pub fn is_object_key(prefix: &str, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else {
        return false;
    };
    let name = match (prefix == PACKS, rest.split_once('/')) {
        (true, Some((folder, name)))
            if name.len() == 64 && name.starts_with(folder) && folder.len() == 2 =>
        {
            name
        }
        (false, None) => rest,
        _ => return false,
    };
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The ids named by the keys under `prefix`, with each object's size,
/// ignoring keys that are not where such an object lives (see
/// [`is_object_key`]; `check` reports them as strays).
pub fn list_ids_sized<T: std::str::FromStr>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<(T, u64)>, crate::store::StoreError> {
    Ok(store
        .list(prefix)?
        .into_iter()
        .filter(|o| is_object_key(prefix, &o.key))
        .filter_map(|o| {
            let name = o.key.rsplit('/').next()?;
            name.parse::<T>().ok().map(|id| (id, o.size))
        })
        .collect())
}

/// Keys under the prefixes of content-named objects that are not where
/// such an object lives: strays, which readers ignore and `check` lists.
pub fn stray_keys(store: &dyn Store) -> Result<Vec<String>, crate::store::StoreError> {
    let mut out = Vec::new();
    for prefix in [PACKS, INDEX, POINTS, KEYS, FORGOTTEN] {
        for o in store.list(prefix)? {
            if !is_object_key(prefix, &o.key) {
                out.push(o.key);
            }
        }
    }
    out.sort();
    Ok(out)
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
