//! Key files: the passphrases that open a repository (spec/FORMAT.md §4).

use super::layout::{key_key, list_ids, read_object, CONFIG_KEY, KEYS};
use super::{host_name, now_unix, user_name, KeyInfo, LockKind, Repository};
use crate::crypto::{self, KdfCost, MasterKey};
use crate::error::{Error, Result};
use crate::format::config::RepoConfig;
use crate::format::keyfile::KeyFile;
use crate::format::KeyId;
use crate::store::{PutMode, Store};

impl Repository {
    /// The config is not authenticated: someone who can write the storage
    /// could flip an encrypted repository's config to `none`, so that new
    /// backups are stored in plaintext and planted plaintext points restore
    /// as "verified" (spec/SECURITY.md §9). An unencrypted repository never
    /// has key files, and its user has no passphrase to give: either sign
    /// means the config was changed.
    pub(super) fn refuse_downgrade(store: &dyn Store, passphrase_given: bool) -> Result<()> {
        let has_keys = !list_ids::<KeyId>(store, KEYS)?.is_empty();
        if has_keys {
            return Err(Error::damaged(
                CONFIG_KEY,
                "it says the repository is unencrypted, but the repository has key files: \
                 the config was probably tampered with; do not back up into it, and restore \
                 its config from a replica or a copy",
            ));
        }
        if passphrase_given {
            return Err(Error::InvalidArgument(
                "this repository is not encrypted, but a passphrase was given; if it should be \
                 encrypted, its config was tampered with. Otherwise unset DISKVAULT_PASSWORD \
                 (or drop --password-file) to use it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Every key file, each read and verified on its own, so that one
    /// damaged file neither hides the others nor locks out their
    /// passphrases.
    pub(super) fn read_each_key_file(store: &dyn Store) -> Result<Vec<(KeyId, Result<KeyFile>)>> {
        let mut out = Vec::new();
        for id in list_ids::<KeyId>(store, KEYS)? {
            let key = key_key(&id);
            let bytes = match read_object(store, &key, None) {
                // Removed between the listing and the read.
                Err(Error::Store(e)) if e.is_not_found() => continue,
                other => other,
            };
            let file = bytes.and_then(|bytes| {
                if KeyId::hash_of(&bytes) != id {
                    return Err(Error::damaged(&key, "content does not match its name"));
                }
                KeyFile::decode(&bytes).map_err(|e| Error::format(&key, e))
            });
            out.push((id, file));
        }
        Ok(out)
    }

    fn read_key_files(store: &dyn Store) -> Result<Vec<(KeyId, KeyFile)>> {
        let mut out = Vec::new();
        for (id, file) in Self::read_each_key_file(store)? {
            out.push((id, file?));
        }
        out.sort_by_key(|(_, f)| f.created);
        Ok(out)
    }

    pub(super) fn unlock(
        store: &dyn Store,
        config: &RepoConfig,
        binding: &[u8],
        pass: &[u8],
    ) -> Result<(KeyId, MasterKey)> {
        let files = Self::read_each_key_file(store)?;
        if files.is_empty() {
            return Err(Error::damaged(
                KEYS,
                "the repository is encrypted but has no key files",
            ));
        }
        let mut unusable = None;
        let mut ours = 0;
        let (mut mismatches, mut mismatched) = (0, None);
        // Cheapest key derivation first: a planted key file with a huge
        // Argon2 cost cannot stall opening with a genuine key.
        let mut files = files;
        files.sort_by_key(|(_, f)| match f {
            Ok(k) => (k.kdf.memory_kib as u64) * (k.kdf.iterations as u64),
            Err(_) => u64::MAX,
        });
        for (id, file) in files {
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    unusable.get_or_insert(e);
                    continue;
                }
            };
            if file.repository_id != config.id {
                continue;
            }
            ours += 1;
            // Format 2 binds each key file to the config's bytes: a key
            // file made for another config says so before any key
            // derivation, so a changed config is not taken for a wrong
            // passphrase.
            if config.format.major >= 2 {
                let expected = hex::encode(&binding[config.id.len()..]);
                if file.config_blake3.as_deref() != Some(expected.as_str()) {
                    mismatches += 1;
                    mismatched.get_or_insert(id);
                    continue;
                }
            }
            if let Some(k) = crypto::unwrap_master_key(&file, pass, binding) {
                return Ok((id, k));
            }
        }
        // The passphrase may be that of the damaged key file: say so
        // rather than call it wrong.
        if let Some(e) = unusable {
            return Err(e);
        }
        if ours == 0 {
            return Err(Error::damaged(
                CONFIG_KEY,
                "its repository id matches none of the key files (the config is damaged, or the key files come from another repository)",
            ));
        }
        // Every key file of this repository names another config.
        if let Some(k) = mismatched.filter(|_: &KeyId| mismatches == ours) {
            return Err(Error::damaged(
                CONFIG_KEY,
                format!(
                    "it is not the config the key files were made for (key file {} names another): the config was changed or damaged; restore it from a replica or a copy",
                    k.short()
                ),
            ));
        }
        Err(Error::WrongPassphrase)
    }

    /// Key files that cannot be used: unreadable, damaged, or belonging to
    /// another repository. For `check`: each is a problem, though the
    /// repository may still open with another key.
    pub(crate) fn key_file_problems(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (id, file) in Self::read_each_key_file(self.store.as_ref())? {
            let key = key_key(&id);
            match file {
                Err(Error::Damaged { reason, .. }) => out.push((key, reason)),
                Err(e) => out.push((key, e.to_string())),
                Ok(f) if f.repository_id != self.config.id => out.push((
                    key,
                    "it belongs to another repository (its repository id differs from the config's)"
                        .into(),
                )),
                Ok(f) if self.config.format.major >= 2
                    && f.config_blake3.as_deref()
                        != Some(hex::encode(&self.key_binding[self.config.id.len()..]).as_str()) =>
                {
                    out.push((
                        key,
                        "it was made for another config (its config_blake3 differs from the config's BLAKE3)"
                            .into(),
                    ))
                }
                Ok(_) => {}
            }
        }
        Ok(out)
    }

    /// Lists the key files.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        Ok(Self::read_key_files(self.store.as_ref())?
            .into_iter()
            .map(|(id, f)| KeyInfo {
                current: Some(id) == self.key_id,
                id,
                created: f.created,
                host: f.host,
                username: f.username,
            })
            .collect())
    }

    /// Adds a key file that opens the repository with `passphrase`, under
    /// a shared lock (a key removal, which is exclusive, waits for it).
    pub fn add_key(&self, passphrase: &[u8], cost: KdfCost) -> Result<KeyId> {
        let _lock = self.lock(LockKind::Shared, "key add")?;
        self.add_key_locked(passphrase, cost)
    }

    /// [`Repository::add_key`] for a caller that holds a lock already.
    fn add_key_locked(&self, passphrase: &[u8], cost: KdfCost) -> Result<KeyId> {
        let key = self.master_key.as_ref().ok_or_else(|| {
            Error::KeyManagement("the repository is not encrypted: it has no keys".into())
        })?;
        if passphrase.is_empty() {
            return Err(Error::InvalidArgument(
                "the passphrase must not be empty".into(),
            ));
        }
        let file = crypto::wrap_master_key(
            key,
            passphrase,
            &self.config.id,
            &self.key_binding,
            cost,
            now_unix().0,
            host_name(),
            user_name(),
        )
        .map_err(Error::KeyManagement)?;
        let bytes = file.encode();
        let id = KeyId::hash_of(&bytes);
        self.store.put(&key_key(&id), &bytes, PutMode::Create)?;
        self.store.barrier()?;
        Ok(id)
    }

    /// Removes a key file, named by a unique prefix of its id. Refuses to
    /// remove the key that opened this handle or the last key.
    ///
    /// Takes an exclusive lock and reads the key files again under it, so
    /// two removals at once can never remove every key: the second sees
    /// what the first removed.
    pub fn remove_key(&self, spec: &str) -> Result<KeyId> {
        let lock = self.lock(LockKind::Exclusive, "key remove")?;
        let keys = self.list_keys()?;
        let matches: Vec<&KeyInfo> = keys
            .iter()
            .filter(|k| k.id.to_hex().starts_with(&spec.to_ascii_lowercase()))
            .collect();
        let k = match matches.as_slice() {
            [] => {
                return Err(Error::KeyManagement(format!(
                    "no key file matches '{spec}'; 'diskvault key list' shows them"
                )))
            }
            [k] => *k,
            _ => {
                return Err(Error::KeyManagement(format!(
                    "'{spec}' matches several key files; give more characters"
                )))
            }
        };
        if k.current {
            return Err(Error::KeyManagement(
                "refusing to remove the key in use; open the repository with another passphrase to remove this one (or use 'key passwd')".into(),
            ));
        }
        self.refuse_if_own_key_gone(&keys)?;
        if keys.len() == 1 {
            return Err(Error::KeyManagement(
                "refusing to remove the last key".into(),
            ));
        }
        lock.check()?;
        self.store.delete(&key_key(&k.id))?;
        self.store.barrier()?;
        Ok(k.id)
    }

    /// The key that opened this handle was removed by another command: its
    /// holder must not go on changing keys on a view that is out of date.
    fn refuse_if_own_key_gone(&self, keys: &[KeyInfo]) -> Result<()> {
        if self.key_id.is_some() && !keys.iter().any(|k| k.current) {
            return Err(Error::KeyManagement(
                "the key file that opened the repository was removed meanwhile (by another 'key remove' or 'key passwd'); open it again with a passphrase that still works".into(),
            ));
        }
        Ok(())
    }

    /// Replaces the key in use by a new one with `passphrase`, under an
    /// exclusive lock (it removes a key file).
    pub fn change_passphrase(&mut self, passphrase: &[u8], cost: KdfCost) -> Result<KeyId> {
        let old = self.key_id.ok_or_else(|| {
            Error::KeyManagement("the repository is not encrypted: it has no keys".into())
        })?;
        let lock = self.lock(LockKind::Exclusive, "key passwd")?;
        self.refuse_if_own_key_gone(&self.list_keys()?)?;
        let new = self.add_key_locked(passphrase, cost)?;
        // The new key is durable before the old one goes.
        lock.check()?;
        self.store.delete(&key_key(&old))?;
        self.store.barrier()?;
        self.key_id = Some(new);
        Ok(new)
    }
}

/// Removes the key files whose repository id is not `repository_id`:
/// leftovers of inits (or replica creations) that were interrupted or lost
/// the race to write `config`. Called only once `config` exists.
pub(crate) fn remove_foreign_key_files(store: &dyn Store, repository_id: &str) -> Result<()> {
    let mut removed = false;
    for (id, file) in Repository::read_each_key_file(store)? {
        if let Ok(f) = file {
            if f.repository_id != repository_id {
                store.delete(&key_key(&id))?;
                removed = true;
            }
        }
    }
    if removed {
        store.barrier()?;
    }
    Ok(())
}
