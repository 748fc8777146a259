//! Assembling pack files from sealed chunks ([`PackBuilder`]), storing and
//! indexing them in the order crash safety needs ([`PackWriter`], the one
//! writer of backup, repair and prune), and reading a pack's table back.

use std::sync::mpsc::{channel, Receiver, Sender};

use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::format::config::CompressionSetting;
use crate::format::group::SOLE;
use crate::format::index::IndexRecord;
use crate::format::pack::{self, PackEntry, PACK_FOOTER_LEN, PACK_TABLE_AAD};
use crate::format::{ChunkId, ObjectHeader, ObjectKind, PackId, MAX_BLOB_PLAINTEXT};
use crate::repo::{pack_key, Repository};
use crate::store::{PutMode, PutStream};

/// Default pack size: large enough to keep object counts low on object
/// storage, small enough to keep memory bounded while one is assembled.
pub const DEFAULT_PACK_TARGET: usize = 16 << 20;

/// A pack being assembled in memory.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    target: usize,
    version: u8,
}

/// A chunk inside a sealed blob given to a pack: the blob is the sealed
/// chunk itself (`member` is [`SOLE`]) or a group holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The chunk's id.
    pub id: ChunkId,
    /// Where the chunk starts in its group's plaintext, or [`SOLE`].
    pub member: u32,
    /// Length of the chunk's plaintext, in bytes.
    pub raw_length: u32,
}

impl Member {
    /// A chunk sealed alone.
    pub fn sole(id: ChunkId, raw_length: u32) -> Self {
        Member {
            id,
            member: SOLE,
            raw_length,
        }
    }

    /// The member a pack table entry describes.
    pub fn of_entry(e: &PackEntry) -> Self {
        Member {
            id: e.id,
            member: e.member,
            raw_length: e.raw_length,
        }
    }
}

/// A finished pack, ready to be stored.
pub struct FinishedPack {
    /// The pack's id: the hash of its bytes, which names its object under
    /// `packs/`.
    pub id: PackId,
    /// The whole pack file, header and table included.
    pub bytes: Vec<u8>,
    /// Where each chunk sits in it, for the index.
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack of format `version` that closes at `target` bytes.
    pub fn new(target: usize, version: u8) -> Self {
        // Room for the group that takes the pack past its target and for
        // the table: pages never written cost no memory, while a buffer
        // that must grow doubles (a 16 MiB pack would hold 32 MiB).
        let mut buf = Vec::with_capacity(target + GROUP_BYTES + (2 << 20));
        buf.extend_from_slice(&ObjectHeader::new(ObjectKind::Pack, version).encode());
        PackBuilder {
            buf,
            entries: Vec::new(),
            target,
            version,
        }
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True once the pack reached its target size.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.target
    }

    /// Appends a sealed chunk or group and the chunks it holds.
    pub fn add(&mut self, sealed: &[u8], members: &[Member]) {
        list_members(&mut self.entries, self.buf.len(), sealed.len(), members);
        // Exact growth: see `new`.
        self.buf.reserve_exact(sealed.len());
        self.buf.extend_from_slice(sealed);
    }

    /// Closes the pack with its sealed table and footer.
    pub fn finish(mut self, sealer: &Sealer) -> FinishedPack {
        let table = sealer.seal(
            &pack::encode_table(&self.entries, self.version),
            PACK_TABLE_AAD,
            CompressionSetting::None,
        );
        let footer = pack::encode_footer(table.len() as u32);
        self.buf.reserve_exact(table.len() + footer.len());
        self.buf.extend_from_slice(&table);
        self.buf.extend_from_slice(&footer);
        FinishedPack {
            id: PackId::hash_of(&self.buf),
            bytes: self.buf,
            entries: self.entries,
        }
    }
}

/// Adds the table entries of a blob of `length` bytes at `offset` in a pack.
fn list_members(entries: &mut Vec<PackEntry>, offset: usize, length: usize, members: &[Member]) {
    let (offset, length) = (offset as u32, length as u32);
    entries.extend(members.iter().map(|m| PackEntry {
        id: m.id,
        offset,
        length,
        member: m.member,
        raw_length: m.raw_length,
    }));
}

/// Plaintext bytes of new data chunks sealed together as one group, in
/// repositories of format 2 (a group closes at the first chunk that takes
/// it to this size or beyond). Chosen by measurement: spec/FORMAT.md §20.
pub const GROUP_BYTES: usize = 2 << 20;

/// New data chunks waiting to be sealed together as one chunk group
/// (format 2, spec/FORMAT.md §20): backup fills one in image order, and
/// `analyze` fills one the same way to predict what a backup stores.
#[derive(Debug, Default)]
pub struct ChunkGroup {
    ids: Vec<ChunkId>,
    lengths: Vec<usize>,
    data: Vec<u8>,
}

impl ChunkGroup {
    /// Appends a chunk (its bytes are copied).
    pub fn push(&mut self, id: ChunkId, bytes: &[u8]) {
        self.ids.push(id);
        self.lengths.push(bytes.len());
        self.data.extend_from_slice(bytes);
    }

    /// True when no chunk was pushed.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// True once the group holds [`GROUP_BYTES`] of chunks or more: it is
    /// then closed and sealed.
    pub fn is_full(&self) -> bool {
        self.data.len() >= GROUP_BYTES
    }

    /// Number of chunks in the group.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Seals the group; returns the sealed blob and its members as a pack
    /// lists them.
    pub fn seal(&self, sealer: &Sealer, compression: CompressionSetting) -> (Vec<u8>, Vec<Member>) {
        let mut at = 0;
        let members: Vec<(ChunkId, &[u8])> = self
            .ids
            .iter()
            .zip(&self.lengths)
            .map(|(id, &len)| {
                let m = (*id, &self.data[at..at + len]);
                at += len;
                m
            })
            .collect();
        let sealed = sealer.seal_group(&members, compression);
        let offsets = crate::format::group::member_offsets(self.lengths.iter().copied());
        let listed = self
            .ids
            .iter()
            .zip(&self.lengths)
            .zip(offsets)
            .map(|((id, &len), member)| Member {
                id: *id,
                member,
                raw_length: len as u32,
            })
            .collect();
        (sealed, listed)
    }
}

/// Index entries written per index file while packs are being written:
/// bounds the memory a long backup holds for its new chunks, and lets an
/// interrupted one leave most of its work indexed.
pub const INDEX_FLUSH_ENTRIES: usize = 32 << 10;

/// Stores packs and indexes their chunks, keeping the write order of
/// spec/FORMAT.md §11: packs; a barrier; an index file listing them. An
/// index file is written every [`INDEX_FLUSH_ENTRIES`] chunks and at
/// [`PackWriter::finish`], which returns once everything is durable.
///
/// Chunks come either one by one, already sealed ([`PackWriter::add`]:
/// repair and prune move sealed chunks verbatim), or as finished packs
/// ([`PackWriter::store`]: backup assembles its packs on another thread).
pub struct PackWriter<'a> {
    repo: &'a Repository,
    /// The pack being filled; `None` until the first chunk comes.
    open: Option<OpenPack>,
    pending: Vec<(PackId, IndexRecord)>,
    written: PacksWritten,
    /// Uploads running on the request pool, and where they report.
    uploads: Uploads,
}

/// A pack being filled: in memory, or, where the store can take a put in
/// pieces ([`Store::begin_put`](crate::store::Store::begin_put)), written
/// to the store as its chunks come, so that no pack is ever held whole.
enum OpenPack {
    Memory(PackBuilder),
    Streamed(Box<StreamedPack>),
}

/// A pack whose bytes went to the store as they came: only its table and
/// the running hash that will name it are kept.
struct StreamedPack {
    put: Box<dyn PutStream>,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    len: usize,
    target: usize,
    version: u8,
}

impl StreamedPack {
    fn new(mut put: Box<dyn PutStream>, target: usize, version: u8) -> Result<Self> {
        let header = ObjectHeader::new(ObjectKind::Pack, version).encode();
        put.write(&header)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&header);
        Ok(StreamedPack {
            put,
            hasher,
            entries: Vec::new(),
            len: header.len(),
            target,
            version,
        })
    }

    fn add(&mut self, sealed: &[u8], members: &[Member]) -> Result<()> {
        self.put.write(sealed)?;
        self.hasher.update(sealed);
        list_members(&mut self.entries, self.len, sealed.len(), members);
        self.len += sealed.len();
        Ok(())
    }

    /// Writes the sealed table and the footer; returns the pack's id, its
    /// entries and the put to commit under the id's key.
    fn finish(mut self, sealer: &Sealer) -> Result<(PackId, Vec<PackEntry>, Box<dyn PutStream>)> {
        let table = sealer.seal(
            &pack::encode_table(&self.entries, self.version),
            PACK_TABLE_AAD,
            CompressionSetting::None,
        );
        let footer = pack::encode_footer(table.len() as u32);
        for part in [&table[..], &footer[..]] {
            self.put.write(part)?;
            self.hasher.update(part);
        }
        Ok((
            PackId(*self.hasher.finalize().as_bytes()),
            self.entries,
            self.put,
        ))
    }
}

impl OpenPack {
    fn is_full(&self) -> bool {
        match self {
            OpenPack::Memory(b) => b.is_full(),
            OpenPack::Streamed(s) => s.len >= s.target,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            OpenPack::Memory(b) => b.is_empty(),
            OpenPack::Streamed(s) => s.entries.is_empty(),
        }
    }
}

/// Packs being stored on the request pool, at most
/// [`crate::exec::requests_in_flight`] at once: on an object store each
/// put waits for the network, and one at a time would leave the link idle.
struct Uploads {
    in_flight: usize,
    done_tx: Sender<Uploaded>,
    done_rx: Receiver<Uploaded>,
}

/// A pack whose put returned: its entries, or why it failed.
type Uploaded = (PackId, Vec<PackEntry>, u64, Result<()>);

/// What a [`PackWriter`] wrote.
#[derive(Debug, Clone, Default)]
pub struct PacksWritten {
    /// Packs stored.
    pub packs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks they hold.
    pub chunks: u64,
    /// Index files written.
    pub index_files: usize,
}

impl<'a> PackWriter<'a> {
    /// Makes a writer that stores packs and index files in `repo`.
    pub fn new(repo: &'a Repository) -> Self {
        PackWriter {
            repo,
            open: None,
            pending: Vec::new(),
            written: PacksWritten::default(),
            uploads: {
                let (done_tx, done_rx) = channel();
                Uploads {
                    in_flight: 0,
                    done_tx,
                    done_rx,
                }
            },
        }
    }

    /// Adds a sealed chunk or group (verified by the caller) and the
    /// chunks of it to index; stores the pack when it is full.
    pub fn add(&mut self, sealed: &[u8], members: &[Member]) -> Result<()> {
        let open = match &mut self.open {
            Some(open) => open,
            None => self.open.insert(self.new_pack()?),
        };
        match open {
            OpenPack::Memory(b) => b.add(sealed, members),
            OpenPack::Streamed(s) => s.add(sealed, members)?,
        }
        if open.is_full() {
            self.close_pack()?;
        }
        Ok(())
    }

    /// Stores the pack being filled, if any.
    fn close_pack(&mut self) -> Result<()> {
        match self.open.take() {
            None => Ok(()),
            Some(open) if open.is_empty() => Ok(()),
            Some(OpenPack::Memory(b)) => self.store(b.finish(self.repo.sealer())),
            Some(OpenPack::Streamed(s)) => {
                let (id, entries, put) = s.finish(self.repo.sealer())?;
                // The commit (an fsync and a rename) runs beside the next
                // pack's writes, as a put does; it holds no pack in memory.
                self.wait_for_room()?;
                let len = put.len();
                self.spawn_upload(id, entries, move || {
                    put.commit(&pack_key(&id), PutMode::Overwrite).map(|_| len)
                });
                Ok(())
            }
        }
    }

    /// A new pack: streamed where the store can take one in pieces.
    fn new_pack(&self) -> Result<OpenPack> {
        let version = self.repo.format_major();
        Ok(match self.repo.store().begin_put()? {
            Some(put) => OpenPack::Streamed(Box::new(StreamedPack::new(
                put,
                DEFAULT_PACK_TARGET,
                version,
            )?)),
            None => OpenPack::Memory(PackBuilder::new(DEFAULT_PACK_TARGET, version)),
        })
    }

    /// Stores a finished pack and queues its chunks for the next index
    /// file once the put has returned. The put runs on the request pool
    /// while the caller goes on; this waits only when as many puts as
    /// [`crate::exec::requests_in_flight`] are already running.
    pub fn store(&mut self, pack: FinishedPack) -> Result<()> {
        self.wait_for_room()?;
        let store = std::sync::Arc::clone(self.repo.store());
        let FinishedPack { id, bytes, entries } = pack;
        let len = bytes.len() as u64;
        self.spawn_upload(id, entries, move || {
            store
                .put(&pack_key(&id), &bytes, PutMode::Overwrite)
                .map(|_| len)
        });
        Ok(())
    }

    /// Runs `put` on the request pool; its outcome is collected by
    /// [`PackWriter::collect_one`].
    fn spawn_upload(
        &mut self,
        id: PackId,
        entries: Vec<PackEntry>,
        put: impl FnOnce() -> std::result::Result<u64, crate::store::StoreError> + Send + 'static,
    ) {
        let done = self.uploads.done_tx.clone();
        self.uploads.in_flight += 1;
        crate::exec::request_pool().spawn(move || {
            let result = put();
            let (len, result) = match result {
                Ok(len) => (len, Ok(())),
                Err(e) => (0, Err(Error::from(e))),
            };
            // The writer waits for every upload it started (also when
            // dropped), so it is still listening.
            let _ = done.send((id, entries, len, result));
        });
    }

    /// Waits until another put may start: fewer than
    /// [`crate::exec::requests_in_flight`] running, and fewer than the
    /// store finds worth running at once
    /// ([`Store::large_puts_in_flight`](crate::store::Store::large_puts_in_flight)).
    /// A pipeline that calls this before taking its next finished pack
    /// holds no more packs than it can store.
    pub fn wait_for_room(&mut self) -> Result<()> {
        let limit = self
            .repo
            .store()
            .large_puts_in_flight()
            .unwrap_or(usize::MAX)
            .clamp(1, crate::exec::requests_in_flight().max(1));
        while self.uploads.in_flight >= limit {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Waits for one running upload and queues its chunks for indexing.
    fn collect_one(&mut self) -> Result<()> {
        let (id, entries, len, result) = self
            .uploads
            .done_rx
            .recv()
            .map_err(|_| Error::InvalidArgument("pack upload thread stopped".into()))?;
        self.uploads.in_flight -= 1;
        result?;
        self.written.packs += 1;
        self.written.bytes += len;
        self.written.chunks += entries.len() as u64;
        self.pending
            .extend(entries.iter().map(|e| (id, IndexRecord::from_entry(e))));
        if self.pending.len() >= INDEX_FLUSH_ENTRIES {
            self.flush_stored()?;
        }
        Ok(())
    }

    /// Waits for every running upload; the first failure is returned after
    /// all have finished, so nothing is left writing behind the caller.
    fn collect_all(&mut self) -> Result<()> {
        let mut first = Ok(());
        while self.uploads.in_flight > 0 {
            if let Err(e) = self.collect_one() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Queues the chunks of a pack already stored (by a writer that died
    /// before indexing it) for the next index file.
    pub fn index_existing(&mut self, pack: PackId, entries: &[PackEntry]) -> Result<()> {
        // Its writer may have died before making the rename durable.
        self.repo.store().ensure_durable(&pack_key(&pack))?;
        self.pending
            .extend(entries.iter().map(|e| (pack, IndexRecord::from_entry(e))));
        Ok(())
    }

    /// Waits for the running uploads, makes the stored packs durable, then
    /// writes index files for them.
    pub fn flush(&mut self) -> Result<()> {
        self.collect_all()?;
        self.flush_stored()
    }

    /// Makes the packs whose puts returned durable, then writes index
    /// files for them.
    fn flush_stored(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.repo.store().barrier()?;
        self.written.index_files += self.repo.write_index_records(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Stores the last pack, writes the last index file, and makes it all
    /// durable.
    pub fn finish(mut self) -> Result<PacksWritten> {
        self.close_pack()?;
        self.flush()?;
        self.repo.store().barrier()?;
        Ok(std::mem::take(&mut self.written))
    }
}

impl Drop for PackWriter<'_> {
    /// A writer given up on (an error elsewhere) still waits for its
    /// uploads: none may land after the command has let go of its lock.
    fn drop(&mut self) {
        while self.uploads.in_flight > 0 {
            if self.uploads.done_rx.recv().is_err() {
                break;
            }
            self.uploads.in_flight -= 1;
        }
    }
}

/// Reads the table of contents of a stored pack.
pub fn read_pack_table(repo: &Repository, id: &PackId) -> Result<Vec<PackEntry>> {
    let size = repo.store().size(&pack_key(id))?;
    read_pack_table_sized(repo, id, size)
}

/// Reads the table of contents of a stored pack whose size a listing gave
/// (so that reading many tables asks for no size one by one).
pub fn read_pack_table_sized(repo: &Repository, id: &PackId, size: u64) -> Result<Vec<PackEntry>> {
    let key = pack_key(id);
    let store = repo.store();
    if size < (crate::format::OBJECT_HEADER_LEN + PACK_FOOTER_LEN) as u64 {
        return Err(Error::damaged(&key, "too short to be a pack"));
    }
    let footer = store.get_range(&key, size - PACK_FOOTER_LEN as u64, PACK_FOOTER_LEN)?;
    let table_len = pack::decode_footer(&footer, size).map_err(|e| Error::format(&key, e))?;
    let table_start = size - PACK_FOOTER_LEN as u64 - table_len as u64;
    let sealed = store.get_range(&key, table_start, table_len as usize)?;
    let plain = repo
        .sealer()
        .open(&sealed, PACK_TABLE_AAD, MAX_BLOB_PLAINTEXT)
        .map_err(|e| Error::open(&key, e))?;
    pack::decode_table(&plain, table_start, repo.format_major()).map_err(|e| Error::format(&key, e))
}

/// Decodes the table of a pack of format `version` held in memory (used
/// when the whole pack was read anyway, as by `check --read-data`).
pub fn parse_pack_table(
    sealer: &Sealer,
    key: &str,
    bytes: &[u8],
    version: u8,
) -> Result<Vec<PackEntry>> {
    let size = bytes.len() as u64;
    if size < (crate::format::OBJECT_HEADER_LEN + PACK_FOOTER_LEN) as u64 {
        return Err(Error::damaged(key, "too short to be a pack"));
    }
    let header =
        ObjectHeader::decode(bytes, ObjectKind::Pack).map_err(|e| Error::format(key, e))?;
    if header.version != version {
        return Err(Error::damaged(
            key,
            format!(
                "it is a format-{} pack in a format-{version} repository",
                header.version
            ),
        ));
    }
    let footer = &bytes[bytes.len() - PACK_FOOTER_LEN..];
    let table_len = pack::decode_footer(footer, size).map_err(|e| Error::format(key, e))?;
    let table_start = bytes.len() - PACK_FOOTER_LEN - table_len as usize;
    let plain = sealer
        .open(
            &bytes[table_start..bytes.len() - PACK_FOOTER_LEN],
            PACK_TABLE_AAD,
            MAX_BLOB_PLAINTEXT,
        )
        .map_err(|e| Error::open(key, e))?;
    pack::decode_table(&plain, table_start as u64, version).map_err(|e| Error::format(key, e))
}
