//! Keys and sealing: key derivation and wrapping, chunk ids, and the
//! compress-then-encrypt envelope of every sealed blob.

use std::cell::RefCell;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::format::blob::{BlobHeader, Cipher, Compression, NONCE_LEN, TAG_LEN};
use crate::format::config::CompressionSetting;
use crate::format::keyfile::{KdfParams, KeyFile};
use crate::format::zstd_frame::check_frame;
use crate::format::{group, ChunkId, FormatError, MAX_BLOB_PLAINTEXT};

/// Why a blob could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The blob's envelope does not decode (truncated, bad lengths or version).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// AES-256-GCM authentication failed: the blob was modified, or belongs
    /// to another object or repository. The object is damaged; run `diskvault check`.
    #[error("authentication failed: the data was modified or belongs elsewhere")]
    Authentication,
    /// The blob is encrypted but the repository has no key, or the reverse.
    #[error("blob is encrypted but the repository has no key, or the reverse")]
    CipherMismatch,
    /// zstd decompression failed, or the result is not the declared
    /// plaintext length; holds the reason.
    #[error("decompression failed: {0}")]
    Decompress(String),
    /// The plaintext's keyed hash does not match the chunk id it is stored under.
    #[error("content does not match its id")]
    IdMismatch,
}

/// The random secrets of a repository: an AES-256-GCM data key and a BLAKE3
/// key for chunk ids. Wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    data_key: [u8; 32],
    id_key: [u8; 32],
}

impl MasterKey {
    /// Fresh random key material.
    pub fn generate() -> Self {
        let mut k = MasterKey {
            data_key: [0; 32],
            id_key: [0; 32],
        };
        fill_random(&mut k.data_key);
        fill_random(&mut k.id_key);
        k
    }

    fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.data_key);
        out[32..].copy_from_slice(&self.id_key);
        out
    }

    /// Key material from 64 known bytes: the data key, then the id key. For
    /// fuzzers and tests, which need a key that is the same on every run;
    /// real keys come from [`MasterKey::generate`] or a key file.
    #[doc(hidden)]
    pub fn from_test_bytes(bytes: &[u8; 64]) -> Self {
        Self::from_bytes(bytes)
    }

    fn from_bytes(b: &[u8]) -> Self {
        let mut k = MasterKey {
            data_key: [0; 32],
            id_key: [0; 32],
        };
        k.data_key.copy_from_slice(&b[..32]);
        k.id_key.copy_from_slice(&b[32..64]);
        k
    }
}

// The AES round keys inside `Aes256Gcm` (from which the data key can be read
// back) are wiped on drop only with the `aes` crate's `zeroize` feature; this
// stops compiling if Cargo.toml loses it.
const _: fn() = || {
    fn wiped_on_drop<T: ZeroizeOnDrop>() {}
    wiped_on_drop::<aes_gcm::aes::Aes256>();
};

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    // The OS generator failing means the system is unusable for cryptography;
    // continuing with predictable bytes would be worse than stopping.
    getrandom::fill(buf).expect("operating system random generator failed");
}

/// Argon2id cost for new key files. 64 MiB and 3 passes take a few hundred
/// milliseconds here: slow for guessing, fine once per command.
pub const DEFAULT_KDF_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes for new key files.
pub const DEFAULT_KDF_ITERATIONS: u32 = 3;
/// Argon2id lanes for new key files.
pub const DEFAULT_KDF_PARALLELISM: u32 = 1;

/// Argon2id cost of a key file to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory, in KiB.
    pub memory_kib: u32,
    /// Number of passes over the memory.
    pub iterations: u32,
    /// Degree of parallelism (lanes).
    pub parallelism: u32,
}

impl Default for KdfCost {
    fn default() -> Self {
        KdfCost {
            memory_kib: DEFAULT_KDF_MEMORY_KIB,
            iterations: DEFAULT_KDF_ITERATIONS,
            parallelism: DEFAULT_KDF_PARALLELISM,
        }
    }
}

impl KdfCost {
    /// The cheapest cost Argon2 accepts. Only for tests: it offers no
    /// protection against guessing.
    pub fn insecure_fast() -> Self {
        KdfCost {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }
}

fn derive_wrapping_key(passphrase: &[u8], kdf: &KdfParams) -> Result<[u8; 32], String> {
    let salt = hex::decode(&kdf.salt).map_err(|e| e.to_string())?;
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(passphrase, &salt, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Wraps `key` under `passphrase` into a new key file of repository
/// `repository_id`. `binding` is the associated data of the wrapped key:
/// the repository id (format 1), or the id and the BLAKE3 of the config's
/// bytes (format 2: see [`key_binding`]).
#[allow(clippy::too_many_arguments)]
pub fn wrap_master_key(
    key: &MasterKey,
    passphrase: &[u8],
    repository_id: &str,
    binding: &[u8],
    cost: KdfCost,
    created: i64,
    host: String,
    username: String,
) -> Result<KeyFile, String> {
    let mut salt = [0u8; 32];
    fill_random(&mut salt);
    let kdf = KdfParams {
        algorithm: "argon2id".into(),
        memory_kib: cost.memory_kib,
        iterations: cost.iterations,
        parallelism: cost.parallelism,
        salt: hex::encode(salt),
    };
    let mut wk = derive_wrapping_key(passphrase, &kdf)?;
    let cipher = Aes256Gcm::new_from_slice(&wk).map_err(|e| e.to_string())?;
    wk.zeroize();
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let mut buf = key.to_bytes().to_vec();
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), binding, &mut buf)
        .map_err(|_| "key wrapping failed".to_string())?;
    buf.extend_from_slice(&tag);
    let wrapped = hex::encode(&buf);
    buf.zeroize();
    Ok(KeyFile {
        kdf,
        nonce: hex::encode(nonce),
        wrapped_key: wrapped,
        repository_id: repository_id.to_string(),
        created,
        host,
        username,
        config_blake3: (binding.len() > repository_id.len())
            .then(|| hex::encode(&binding[repository_id.len()..])),
    })
}

/// The associated data of the wrapped key in a key file of a repository of
/// format `major` with this id and config bytes: the id alone in format 1;
/// in format 2 also the BLAKE3 of the config, so that a key file opens
/// only the config it was made for (spec/SECURITY.md §6).
pub fn key_binding(major: u32, repository_id: &str, config_bytes: &[u8]) -> Vec<u8> {
    let mut b = repository_id.as_bytes().to_vec();
    if major >= 2 {
        b.extend_from_slice(blake3::hash(config_bytes).as_bytes());
    }
    b
}

/// Unwraps a key file with `passphrase`; `None` when the passphrase is wrong
/// (or the file or, in format 2, the config was tampered with: these
/// cannot be told apart). `binding` as for [`wrap_master_key`].
pub fn unwrap_master_key(file: &KeyFile, passphrase: &[u8], binding: &[u8]) -> Option<MasterKey> {
    let mut wk = derive_wrapping_key(passphrase, &file.kdf).ok()?;
    let cipher = Aes256Gcm::new_from_slice(&wk).ok()?;
    wk.zeroize();
    let nonce = hex::decode(&file.nonce).ok()?;
    let mut buf = hex::decode(&file.wrapped_key).ok()?;
    if nonce.len() != NONCE_LEN || buf.len() != 64 + TAG_LEN {
        return None;
    }
    let tag = buf.split_off(64);
    let ok = cipher.decrypt_in_place_detached(
        Nonce::from_slice(&nonce),
        binding,
        &mut buf,
        aes_gcm::Tag::from_slice(&tag),
    );
    let key = ok.ok().map(|_| MasterKey::from_bytes(&buf));
    buf.zeroize();
    key
}

/// AES-256-GCM for blobs, through `ring`: its AES-NI/VAES and CLMUL code
/// seals and opens about 7x faster here than the `aes-gcm` crate (8.6
/// against 1.2 GB/s on 16 KiB blobs), which made GHASH a fifth of a
/// restore's CPU. Same algorithm, same bytes: `aes-gcm` still wraps key
/// files, and tests open blobs sealed by one with the other.
///
/// `ring` does not wipe its keys, so the key (AES round keys and GHASH
/// key, both able to give the data key or forge tags) is kept in a box of
/// its own and overwritten when dropped: `ring`'s key types own no other
/// memory (`std::mem::needs_drop` is false for them, which a test checks),
/// so overwriting their bytes is all there is to wipe.
struct DataCipher(Box<std::mem::ManuallyDrop<ring::aead::LessSafeKey>>);

impl DataCipher {
    fn new(key: &[u8; 32]) -> Self {
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .expect("a 32-byte key is an AES-256 key");
        DataCipher(Box::new(std::mem::ManuallyDrop::new(
            ring::aead::LessSafeKey::new(unbound),
        )))
    }

    /// Encrypts `payload` in place; returns the tag.
    fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], payload: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                payload,
            )
            .expect("AES-GCM encryption of a bounded buffer cannot fail");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Authenticates and decrypts `body` (ciphertext then tag) in place,
    /// leaving the plaintext.
    fn open(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        let plain_len = self
            .0
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                body,
            )
            .map_err(|_| OpenError::Authentication)?
            .len();
        body.truncate(plain_len);
        Ok(())
    }
}

impl Drop for DataCipher {
    fn drop(&mut self) {
        let key: &mut ring::aead::LessSafeKey = &mut self.0;
        let bytes = std::mem::size_of::<ring::aead::LessSafeKey>();
        let p = (key as *mut ring::aead::LessSafeKey).cast::<u8>();
        for i in 0..bytes {
            // SAFETY: `p` points at the boxed key, `bytes` long and owned
            // here; the key is never used again (it is `ManuallyDrop`,
            // owns no memory and has no drop glue, see the type's note),
            // so any bytes may be written. Volatile: the writes are not
            // optimised away as dead.
            unsafe { std::ptr::write_volatile(p.add(i), 0) };
        }
    }
}

/// Seals and opens blobs for one repository: holds the cipher (if any) and
/// computes chunk ids.
pub struct Sealer {
    cipher: Option<DataCipher>,
    id_key: Option<[u8; 32]>,
}

impl Drop for Sealer {
    fn drop(&mut self) {
        if let Some(k) = &mut self.id_key {
            k.zeroize();
        }
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    /// The frame being sealed, reused from blob to blob: a fresh buffer
    /// of the compress bound per 2 MiB group is allocation churn that the
    /// allocator keeps as memory.
    static COMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The decrypted frame of a blob being opened, reused likewise.
    static OPENED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `data` into this thread's reusable buffer and hands `f` the
/// frame, or `None` when compression failed or does not make it smaller.
fn with_compressed<R>(data: &[u8], level: i32, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    let frame = COMPRESSED.with(|buf| {
        let mut buf = buf.take();
        buf.clear();
        buf.reserve(zstd::zstd_safe::compress_bound(data.len()));
        let ok = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
            }
            let (_, comp) = c.as_mut()?;
            comp.compress_to_buffer(data, &mut buf).ok()
        });
        (buf, ok.is_some())
    });
    let (buf, ok) = frame;
    let result = f((ok && buf.len() < data.len()).then_some(&buf[..]));
    COMPRESSED.with(|b| *b.borrow_mut() = buf);
    result
}

/// Decompresses a blob body that must be exactly one Zstandard frame of
/// `plain_len` bytes (spec/FORMAT.md §2.3). The frame's shape is checked
/// first ([`check_frame`]): libzstd alone would also accept several
/// frames, skippable frames and legacy formats. libzstd then refuses a
/// frame that would exceed `plain_len` and verifies a content checksum
/// when there is one; a shorter result is refused below.
fn decompress(data: &[u8], plain_len: u32) -> Result<Vec<u8>, OpenError> {
    check_frame(data, plain_len)?;
    let plain_len = plain_len as usize;
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| OpenError::Decompress(e.to_string()))?,
            );
        }
        let dec = d
            .as_mut()
            .ok_or(OpenError::Decompress("no context".into()))?;
        let out = dec
            .decompress(data, plain_len)
            .map_err(|e| OpenError::Decompress(e.to_string()))?;
        if out.len() != plain_len {
            return Err(OpenError::Decompress(format!(
                "got {} bytes, header declares {plain_len}",
                out.len()
            )));
        }
        Ok(out)
    })
}

impl Sealer {
    /// A sealer for an encrypted repository.
    pub fn encrypted(key: &MasterKey) -> Self {
        Sealer {
            cipher: Some(DataCipher::new(&key.data_key)),
            id_key: Some(key.id_key),
        }
    }

    /// A sealer for an unencrypted repository.
    pub fn plain() -> Self {
        Sealer {
            cipher: None,
            id_key: None,
        }
    }

    /// True when blobs are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// The id of a chunk with this plaintext.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        match &self.id_key {
            Some(k) => ChunkId(*blake3::keyed_hash(k, plaintext).as_bytes()),
            None => ChunkId(*blake3::hash(plaintext).as_bytes()),
        }
    }

    /// Compresses (when that shrinks it) and encrypts `plaintext`. `context`
    /// is bound into the authentication (the chunk id for chunks), so a
    /// sealed blob cannot be passed off as another.
    pub fn seal(
        &self,
        plaintext: &[u8],
        context: &[u8],
        compression: CompressionSetting,
    ) -> Vec<u8> {
        match compression {
            CompressionSetting::Zstd(level) => {
                with_compressed(plaintext, level, |c| self.seal_body(plaintext, c, context))
            }
            CompressionSetting::None => self.seal_body(plaintext, None, context),
        }
    }

    /// Seals `plaintext` stored as `compressed` if given, else as is.
    fn seal_body(&self, plaintext: &[u8], compressed: Option<&[u8]>, context: &[u8]) -> Vec<u8> {
        let (comp, body): (Compression, &[u8]) = match compressed {
            Some(c) => (Compression::Zstd, c),
            None => (Compression::Stored, plaintext),
        };
        let nonce = self.cipher.as_ref().map(|_| {
            let mut n = [0u8; NONCE_LEN];
            fill_random(&mut n);
            n
        });
        let header = BlobHeader {
            compression: comp,
            cipher: if nonce.is_some() {
                Cipher::Aes256Gcm
            } else {
                Cipher::None
            },
            plain_len: plaintext.len() as u32,
            nonce,
        };
        let mut out = Vec::with_capacity(header.encoded_len() + body.len() + TAG_LEN);
        header.encode_into(&mut out);
        let header_len = out.len();
        out.extend_from_slice(body);
        if let (Some(cipher), Some(n)) = (&self.cipher, nonce) {
            let aad = associated_data(context, &out[..header_len]);
            let (_, payload) = out.split_at_mut(header_len);
            let tag = cipher.seal(n, &aad, payload);
            out.extend_from_slice(&tag);
        }
        out
    }

    /// Authenticates, decrypts and decompresses a sealed blob.
    pub fn open(
        &self,
        sealed: &[u8],
        context: &[u8],
        max_plain: usize,
    ) -> Result<Vec<u8>, OpenError> {
        let (header, payload) = BlobHeader::decode(sealed, max_plain)?;
        match header.compression {
            Compression::Stored => {
                let mut body = Vec::new();
                self.decrypt_into(&header, sealed, payload, context, &mut body)?;
                Ok(body)
            }
            // The compressed frame is only a step on the way: decrypted into
            // this thread's reusable buffer, not a new one per blob.
            Compression::Zstd => OPENED.with(|scratch| {
                let mut body = scratch.take();
                let plain = self
                    .decrypt_into(&header, sealed, payload, context, &mut body)
                    .and_then(|()| decompress(&body, header.plain_len));
                *scratch.borrow_mut() = body;
                plain
            }),
        }
    }

    /// Authenticates and decrypts the payload of a blob into `body`
    /// (replacing what it held), or copies it when the vault is not
    /// encrypted.
    fn decrypt_into(
        &self,
        header: &BlobHeader,
        sealed: &[u8],
        payload: &[u8],
        context: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        let header_len = header.encoded_len();
        body.clear();
        match (&self.cipher, header.nonce) {
            (Some(cipher), Some(n)) => {
                let aad = associated_data(context, &sealed[..header_len]);
                body.extend_from_slice(payload);
                cipher.open(n, &aad, body)
            }
            (None, None) => {
                body.extend_from_slice(payload);
                Ok(())
            }
            _ => Err(OpenError::CipherMismatch),
        }
    }

    /// Opens a sealed chunk and checks its content against `id`.
    pub fn open_chunk(
        &self,
        sealed: &[u8],
        id: &ChunkId,
        max_plain: usize,
    ) -> Result<Vec<u8>, OpenError> {
        let plain = self.open(sealed, &id.0, max_plain)?;
        if self.chunk_id(&plain) != *id {
            return Err(OpenError::IdMismatch);
        }
        Ok(plain)
    }

    /// Opens a sealed chunk for a restore. In an encrypted repository the
    /// AES-GCM tag already authenticates the plaintext together with `id`
    /// (the associated data), and only a key holder can seal, so the keyed
    /// id is not recomputed (the restore also checks the whole-image hash).
    /// Unencrypted chunks have no tag: their BLAKE3 id is checked.
    pub fn open_chunk_for_restore(
        &self,
        sealed: &[u8],
        id: &ChunkId,
        max_plain: usize,
    ) -> Result<Vec<u8>, OpenError> {
        if self.is_encrypted() {
            self.open(sealed, &id.0, max_plain)
        } else {
            self.open_chunk(sealed, id, max_plain)
        }
    }
}

impl Sealer {
    /// Seals a chunk group (format 2): the members' ids and plaintexts,
    /// compressed together as one frame.
    pub fn seal_group(
        &self,
        members: &[(ChunkId, &[u8])],
        compression: CompressionSetting,
    ) -> Vec<u8> {
        self.seal(&group::encode_group(members), group::GROUP_AAD, compression)
    }

    /// Authenticates, decrypts and decompresses a sealed chunk group; the
    /// result is checked by [`group::member`] when a chunk is taken from
    /// it.
    pub fn open_group(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.open(sealed, group::GROUP_AAD, MAX_BLOB_PLAINTEXT)
    }

    /// Takes chunk `id` out of an opened group, after checking that the
    /// group lists it at `member` with `raw_length` bytes. With
    /// `verify_id`, or in an unencrypted repository (no tag vouches for the
    /// group), the chunk's id is also recomputed from its bytes
    /// (spec/FORMAT.md §6).
    pub fn group_member<'a>(
        &self,
        plain: &'a [u8],
        id: &ChunkId,
        member: u32,
        raw_length: u32,
        verify_id: bool,
    ) -> Result<&'a [u8], OpenError> {
        let bytes = group::member(plain, id, member, raw_length)?;
        if (verify_id || !self.is_encrypted()) && self.chunk_id(bytes) != *id {
            return Err(OpenError::IdMismatch);
        }
        Ok(bytes)
    }

    /// Opens chunk `id` from the sealed blob an index or pack table entry
    /// points at: the sealed chunk itself (`member` is [`group::SOLE`]) or
    /// the group holding it. `verify_id` as in [`Sealer::group_member`];
    /// without it a sealed chunk is opened as
    /// [`Sealer::open_chunk_for_restore`] opens it.
    pub fn open_entry(
        &self,
        sealed: &[u8],
        id: &ChunkId,
        member: u32,
        raw_length: u32,
        max_plain: usize,
        verify_id: bool,
    ) -> Result<Vec<u8>, OpenError> {
        let plain = if member == group::SOLE {
            if verify_id {
                self.open_chunk(sealed, id, max_plain)?
            } else {
                self.open_chunk_for_restore(sealed, id, max_plain)?
            }
        } else {
            let plain = self.open_group(sealed)?;
            self.group_member(&plain, id, member, raw_length, verify_id)?
                .to_vec()
        };
        if plain.len() != raw_length as usize {
            return Err(OpenError::Format(FormatError::Invalid {
                what: "chunk",
                reason: format!(
                    "it has {} bytes where its entry says {raw_length}",
                    plain.len()
                ),
            }));
        }
        Ok(plain)
    }
}

fn associated_data(context: &[u8], header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(context.len() + header.len());
    aad.extend_from_slice(context);
    aad.extend_from_slice(header);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overwriting the key's bytes is the whole wipe only while `ring`'s
    /// key owns nothing else.
    #[test]
    fn ring_keys_own_no_memory() {
        assert!(!std::mem::needs_drop::<ring::aead::LessSafeKey>());
    }

    fn key() -> MasterKey {
        let mut b = [0u8; 64];
        b.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (i * 7) as u8);
        MasterKey::from_test_bytes(&b)
    }

    /// Blobs sealed through `ring` open with the `aes-gcm` crate, and the
    /// reverse, at the sizes blobs have (empty, a page, a chunk, a group,
    /// odd lengths): the switch changed no byte of the format.
    #[test]
    fn blobs_are_the_same_aes_gcm_as_the_aes_gcm_crate() {
        let k = key();
        let sealer = Sealer::encrypted(&k);
        let other = Aes256Gcm::new_from_slice(&k.data_key).unwrap();
        for len in [0usize, 1, 15, 16, 17, 4096, 16 << 10, (2 << 20) + 3] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let context = b"chunk id goes here";
            let sealed = sealer.seal(&plain, context, CompressionSetting::None);
            let (header, payload) = BlobHeader::decode(&sealed, 64 << 20).unwrap();
            let aad = associated_data(context, &sealed[..header.encoded_len()]);
            let n = header.nonce.unwrap();
            let split = payload.len() - TAG_LEN;
            let mut body = payload[..split].to_vec();
            other
                .decrypt_in_place_detached(
                    Nonce::from_slice(&n),
                    &aad,
                    &mut body,
                    aes_gcm::Tag::from_slice(&payload[split..]),
                )
                .unwrap_or_else(|_| panic!("aes-gcm opens ring's blob of {len} bytes"));
            assert_eq!(body, plain);

            // And a blob encrypted by aes-gcm opens through the sealer.
            let mut forged = sealed[..header.encoded_len()].to_vec();
            let mut ct = plain.clone();
            let tag = other
                .encrypt_in_place_detached(Nonce::from_slice(&n), &aad, &mut ct)
                .unwrap();
            forged.extend_from_slice(&ct);
            forged.extend_from_slice(&tag);
            assert_eq!(forged, sealed, "same key, nonce and data: same bytes");
            assert_eq!(sealer.open(&forged, context, 64 << 20).unwrap(), plain);

            // A flipped bit anywhere, or another context, is refused.
            if len > 0 {
                let mut bad = sealed.clone();
                let at = bad.len() - TAG_LEN - 1;
                bad[at] ^= 1;
                assert!(matches!(
                    sealer.open(&bad, context, 64 << 20),
                    Err(OpenError::Authentication)
                ));
            }
            let mut bad = sealed.clone();
            *bad.last_mut().unwrap() ^= 0x80;
            assert!(matches!(
                sealer.open(&bad, context, 64 << 20),
                Err(OpenError::Authentication)
            ));
            assert!(matches!(
                sealer.open(&sealed, b"another chunk id", 64 << 20),
                Err(OpenError::Authentication)
            ));
        }
    }
}
