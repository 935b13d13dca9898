//! Durable storage: the only module that knows about files and sled.
//!
//! # The truth: append-only segment files
//!
//! The chains' exact bytes live in `<dir>/segments/0000000000.seg`, `0000000001.seg`, …, rotated
//! when the next batch would push a segment past [`StoreOptions::segment_size`] (a batch never
//! straddles two segments; a batch larger than the limit gets a segment of its own). Each record
//! is framed as
//!
//! ```text
//! magic u8 (0xE1 entry | 0xC1 checkpoint) | u32 LE length | 32-byte BLAKE3 of the bytes | bytes
//! ```
//!
//! [`Store::append`] writes a whole [`Batch`] with one positional write, `fdatasync`s the segment
//! (and the `segments/` directory when it created a new segment), and only then updates the
//! index. `append` returning `Ok` is the acknowledgement: the data has reached the disk.
//!
//! **Checkpoints are records in the same log** rather than a separate file written by
//! temp-file → fsync → rename → directory fsync (as DESIGN §6 first sketched). One `fdatasync`
//! then makes a commit's entries and the signed checkpoint over them durable together (one
//! flush instead of four), a checkpoint can never name entries that a crash lost, and every
//! checkpoint ever signed or received stays on disk as evidence (a later, inconsistent
//! checkpoint from a peer is exactly what fork evidence needs).
//!
//! # The index: position files and sled 0.34.7, derived and rebuildable
//!
//! Everything under `<dir>/index` is derived from the segments and is rebuilt when in doubt.
//! It has two parts:
//!
//! - **Per-entry data** (where each entry is, its leaf hash, its id) is in one append-only file
//!   per chain, `index/chains/<chain>.pos`, with a fixed-width 80-byte record per entry
//!   (segment u32, frame offset u64, length u32, RFC 9162 leaf hash, entry id; little-endian),
//!   so the record of seq `n` is at byte `80·n` and a read is one `pread`; ids are found through
//!   an in-memory map rebuilt from the files at open (see `positions.rs`). This departs from
//!   DESIGN's "sled holds the derived index": a sled key costs ~20 µs of CPU, and two per entry
//!   were the largest cost of an append and of a mirror's catch-up after the signature check.
//!   The files are written with each append (after the segment's `fdatasync`, before sled) and
//!   never synced themselves: opening reconciles them with sled.
//! - **sled** (`index/sled`) holds the rest: chain metas, Merkle nodes of levels ≥ 4, the newest
//!   checkpoints, the certificate and anchor keys.
//!
//! sled's `flush` is `sync_file_range` on Linux (not power-loss durable) and 0.34.7 has open
//! corruption reports, so sled holds nothing that cannot be recomputed from the segments. One
//! tree (`index`), every update of one append in one atomic `apply_batch`, integers big-endian
//! so byte order is numeric order, chain names terminated by `0x00` (an [`OrgId`] never contains
//! it) so a chain's keys sort by `(chain, …)` and can be scanned by prefix:
//!
//! | key | value |
//! | --- | --- |
//! | `!version` | format version byte ([`INDEX_VERSION`]); another value means "rebuild" |
//! | `!applied` | segment u32, offset u64: the log position the index covers |
//! | `m chain 0` | size u64, head [`EntryId`] (the chain's meta) |
//! | `n chain 0 level u8 index u64` | 32-byte complete-subtree hash (RFC 9162), levels ≥ 4 ([`LOWEST_STORED_LEVEL`]; level 0 is in the position file, levels 1–3 are folded from it on read) |
//! | `k chain 0` | frame position and length, size u64, time u64 of the newest checkpoint |
//! | `c cert` | `chain 0 seq` of the `BatchRegistered` entry |
//! | `r code 0 batch 0 cert` | empty: certificates by catalogue code and batch |
//! | `e cert chain 0 seq` | empty: every entry about a certificate, its registration included |
//! | `a chain 0 size u64 witness 0 seq` | the anchors of (chain) at witness waiting to be checked, from one run of the index: 48 bytes each (size u64, seq u64, root), by size; keyed by the smallest |
//! | `w chain 0 size u64 witness 0 seq` | every anchor of (chain) at witness, from one run of the index, in the same form; keyed by the largest, for bundles ([`Store::anchors_upto`]) |
//!
//! Anchors are indexed in groups: one `w` key (and one `a` key if any of them waits) per
//! chain named, witness and run of the index (an append, or a chunk of a replay), not one per
//! anchor. A sled key costs ~10 µs of CPU, and a witness's chain can be mostly anchors (an
//! institute anchors every chain every few minutes), so a key per anchor was the largest cost
//! of replicating such a chain after the signature check. The group's key names the record
//! that bounds it (its smallest size for `a`, so a range up to a size finds every group with an
//! anchor at or below it; its largest for `w`, so the newest anchors are read first).
//!
//! An `Anchor` entry naming more of a chain than the log holds at that point also goes to an
//! `a` group when it is indexed (a replay or a rebuild makes the same decision, so the groups
//! come back); replication removes it from its group once the chain has caught up and it has
//! compared the anchor with its copy ([`Store::anchors_checked`]). So anchors waiting for
//! their chain survive a restart; a removal lost in a crash only means the anchor is checked
//! again. Anchors naming a size already held are checked by replication when they are stored.
//!
//! The newest checkpoint of a chain is the one with the largest `(size, time)`; on a tie the
//! later one in the log wins.
//!
//! # Opening and recovery
//!
//! [`Store::open`] opens sled (errors *and panics* from sled are caught). When it cannot be
//! opened, its format version differs, its `applied` mark is missing or lies beyond the
//! segments, or its chain metadata cannot be loaded, the index directory is deleted and rebuilt
//! from segment 0; otherwise the log is replayed from `applied`. If a replay from `applied`
//! fails, a full rebuild is tried before giving up, so a bad `applied` mark cannot fail the node.
//!
//! Before the replay, each position file is reconciled with the chain size sled holds (the two
//! are flushed independently, so after a crash either may be ahead): the file's intact prefix
//! is kept (records pointing inside the segments, in increasing log order, at most `size` of
//! them) and the rest cut off — a torn last record, a tail sled never committed, pages a power
//! loss zeroed. A chain with fewer intact records than its size has the missing ones
//! re-derived from the segments, reading from its last intact record up to `applied`; a file
//! whose last record is not sled's head of the chain fails the resume (so the index is
//! rebuilt). The replay from `applied` then writes the records after it as appends do.
//! Replay checks every frame's hash, decodes entries with [`Entry::decode`] and checkpoints with
//! [`Checkpoint::decode`], and checks chain continuity (`seq == size`, `prev == head`).
//!
//! Entries of [`StoreOptions::writer_chain`] (the node's own chain) are held back during the
//! replay until a checkpoint of that chain follows them: the writer's every commit is its
//! entries and then its checkpoint in one write. Entries of it left at the end of the log with
//! no checkpoint after them are a commit a crash cut short — never acknowledged — and are cut
//! off (with a `tracing::warn!`), so a commit, a batch request included, survives a crash whole
//! or not at all. The applied mark never passes an entry held back.
//!
//! A bad frame (bad magic, short header or body, length over the limit, hash mismatch) in the
//! **last** segment with no intact frame anywhere after it is a torn write that was never
//! acknowledged: the file is truncated there (with a `tracing::warn!`) and synced. A bad frame
//! anywhere else — in an earlier segment, or followed by an intact frame — is
//! [`StorageError::Corrupt`] naming the segment and offset, and the node refuses to start
//! rather than silently drop acknowledged data. (Limitation: a power loss that persists the
//! pages of one batch write out of order can leave an intact frame after a torn one; that is
//! reported as corruption too, the conservative choice, and needs an operator's repair.)
//!
//! Frames before `applied` are not re-read at open; every read re-checks the frame's hash, and
//! [`Store::scan`] reads them all (fsck). [`read_log`] reads a data directory without opening
//! the store (no lock, no index, no writes), for `rmledger audit --data` while the node runs.
//!
//! # Concurrency
//!
//! Appends are serialized (a writer mutex; the node has a single writer task anyway). Reads run
//! concurrently with appends and with each other: they look up the position files or sled and
//! `pread` ([`FileExt::read_exact_at`]) shared segment handles, and never wait on an fsync; a
//! position record is read only below the chain's published size, so it is completely written.
//! The per-chain metadata with its Merkle frontier is kept in memory for O(log n) appends; its
//! lock is held only to copy or publish it, never across I/O.
//!
//! After an I/O or sled failure inside `append`, the in-memory state may disagree with the disk,
//! so the store refuses further appends ([`StorageError::Poisoned`]); a restart recovers from
//! the segments.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use positions::{PositionRecord, Positions, RECORD_LEN};

use rmledger_schema::checkpoint::{Checkpoint, MAX_CHECKPOINT_BYTES};
use rmledger_schema::entry::{Entry, MAX_ENTRY_BYTES};
use rmledger_schema::ids::{CertificateId, EntryId, OrgId, TreeHash};
use rmledger_schema::merkle::{self, Frontier, Hash, NodeSource, ProofError, Sha256, TreeHasher};
use rmledger_schema::records::Record;
use rmledger_schema::rmcode::RmCode;

mod positions;

/// Version of the index layout; an index with another version is rebuilt.
pub const INDEX_VERSION: u8 = 6;

/// sled's directory inside `<dir>/index`.
const SLED_DIR: &str = "sled";
/// The position files' directory inside `<dir>/index`.
const POSITIONS_DIR: &str = "chains";

/// The lowest Merkle tree level with `n` keys. A node of a level in 1..this is recomputed from
/// its at most `2^(this - 1)` leaf hashes when a proof or the frontier needs it: an `n` key per
/// entry cost more index CPU on every append than the few extra reads cost a proof.
const LOWEST_STORED_LEVEL: u32 = 4;

/// Default segment rotation size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
/// Default sled page cache: 64 MiB (sled's own default is 1 GiB).
pub const DEFAULT_CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

/// Frame magic of an entry record.
pub const MAGIC_ENTRY: u8 = 0xE1;
/// Frame magic of a checkpoint record.
pub const MAGIC_CHECKPOINT: u8 = 0xC1;
/// Frame header: magic, length, BLAKE3 hash.
pub const FRAME_HEADER: usize = 1 + 4 + 32;

/// How many anchor groups past the size asked for [`Store::anchors_upto`] reads for anchors
/// within it.
const STRADDLING_GROUPS: usize = 64;

/// The most bytes of adjacent frames read with one call ([`Store::read_each`]).
const READ_RUN_BYTES: u64 = 1 << 20;

/// Records indexed per sled batch while replaying the log.
const REPLAY_CHUNK: usize = 4096;

/// Value of keys that only need to exist.
const EMPTY: &[u8] = &[];

const KEY_VERSION: &[u8] = b"!version";
const KEY_APPLIED: &[u8] = b"!applied";
const P_META: u8 = b'm';
const P_NODE: u8 = b'n';
const P_CKPT: u8 = b'k';
const P_CERT: u8 = b'c';
const P_CODE: u8 = b'r';
const P_EVENT: u8 = b'e';
const P_ANCHOR: u8 = b'a';
const P_WITNESSED: u8 = b'w';

/// Everything that can go wrong in storage. Bad data on disk is an error, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A segment frame is damaged (before the tail, or found by a read or a scan).
    #[error("segment file segments/{segment:010}.seg, offset {offset}: {detail}")]
    Corrupt {
        segment: u32,
        offset: u64,
        detail: String,
    },
    /// The index database failed.
    #[error("index database: {0}")]
    Sled(#[from] sled::Error),
    /// The data contradicts itself or the request (a chain gap, a broken link, an index
    /// that points nowhere, unexpected files).
    #[error("inconsistent storage: {0}")]
    Inconsistent(String),
    /// A proof or root was requested for sizes or indexes that do not exist.
    #[error("proof request: {0}")]
    Proof(ProofError<Infallible>),
    /// Another process (a running node, `fsck` or `reindex`) holds the data directory.
    #[error(
        "the data directory {} is in use by another rmledger-node process (run, fsck or reindex); stop it first",
        dir.display()
    )]
    Locked { dir: PathBuf },
    /// An earlier append failed half-way; restart the node to recover from the segments.
    #[error("storage refused the append: an earlier write failed; restart to recover")]
    Poisoned,
}

/// Takes the exclusive lock on `<dir>/LOCK`, creating the directory if needed.
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StorageError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(source)) => Err(StorageError::Io { path, source }),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Tunables of a [`Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Start a new segment when a batch would make the current one larger than this.
    pub segment_size: u64,
    /// sled's page cache in bytes.
    pub cache_capacity: u64,
    /// The chain whose every batch is its entries followed by its checkpoint: this node's own,
    /// written only by its writer. At open, entries of it at the end of the log with no
    /// checkpoint of it after them are a commit a crash cut short (never acknowledged), and are
    /// cut off, so a commit is all or nothing across crashes too.
    pub writer_chain: Option<OrgId>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            segment_size: DEFAULT_SEGMENT_SIZE,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            writer_chain: None,
        }
    }
}

/// What one [`Store::append`] makes durable together. Entries (of any chain, own or
/// replicated) and checkpoints are validated by the caller; the store checks only chain
/// continuity. Entries are written first, then checkpoints, each in the given order.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    pub checkpoints: Vec<Checkpoint>,
}

/// An `Anchor` entry as the index lists it: (chain, size, root) stated at (witness, seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRef {
    pub chain: OrgId,
    pub size: u64,
    pub root: TreeHash,
    pub witness: OrgId,
    pub seq: u64,
}

/// A chain as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub chain: OrgId,
    pub size: u64,
    pub head: Option<EntryId>,
    pub root: TreeHash,
}

/// The kind of a segment record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    Entry,
    Checkpoint,
}

impl RecordType {
    fn magic(self) -> u8 {
        match self {
            RecordType::Entry => MAGIC_ENTRY,
            RecordType::Checkpoint => MAGIC_CHECKPOINT,
        }
    }

    fn from_magic(magic: u8) -> Option<Self> {
        match magic {
            MAGIC_ENTRY => Some(RecordType::Entry),
            MAGIC_CHECKPOINT => Some(RecordType::Checkpoint),
            _ => None,
        }
    }

    fn max_len(self) -> usize {
        match self {
            RecordType::Entry => MAX_ENTRY_BYTES,
            RecordType::Checkpoint => MAX_CHECKPOINT_BYTES,
        }
    }
}

/// One record of the log, as [`Store::scan`] hands it out (hash already checked).
#[derive(Debug, Clone, Copy)]
pub struct ScannedRecord<'a> {
    pub segment: u32,
    /// Offset of the frame in its segment.
    pub offset: u64,
    pub kind: RecordType,
    pub bytes: &'a [u8],
}

/// Where a frame is: segment, frame offset, length of the record bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    segment: u32,
    offset: u64,
    len: u32,
}

impl Pos {
    fn encode(self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..4].copy_from_slice(&self.segment.to_be_bytes());
        v[4..12].copy_from_slice(&self.offset.to_be_bytes());
        v[12..].copy_from_slice(&self.len.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<Self> {
        Some(Self {
            segment: u32::from_be_bytes(v.get(..4)?.try_into().ok()?),
            offset: u64::from_be_bytes(v.get(4..12)?.try_into().ok()?),
            len: u32::from_be_bytes(v.get(12..16)?.try_into().ok()?),
        })
    }
}

/// In-memory state of one chain.
#[derive(Debug, Clone, Default)]
struct ChainMeta {
    head: Option<EntryId>,
    frontier: Frontier,
}

impl ChainMeta {
    fn size(&self) -> u64 {
        self.frontier.size()
    }
}

/// The append position.
#[derive(Debug)]
struct Writer {
    segment: u32,
    offset: u64,
    /// The buffer a batch's frames are laid out in, kept between appends up to
    /// [`KEPT_FRAMES_BYTES`]: a replicated page is ~0.5 MB, and memory fresh from the kernel
    /// costs a page fault per 4 KiB each time.
    frames: Vec<u8>,
}

/// The largest frame buffer [`Writer`] keeps for the next append.
const KEPT_FRAMES_BYTES: usize = 4 << 20;

/// The node's durable store. `Send + Sync`: share it in an `Arc`.
pub struct Store {
    dir: PathBuf,
    options: StoreOptions,
    db: sled::Db,
    index: sled::Tree,
    /// Per-entry positions, leaf hashes and ids.
    positions: Positions,
    /// Segment handles for `pread`, by segment number.
    segments: RwLock<Vec<Arc<File>>>,
    writer: Mutex<Writer>,
    chains: Mutex<HashMap<OrgId, ChainMeta>>,
    poisoned: AtomicBool,
    /// Held while waiting-anchor groups are rewritten ([`Store::anchors_checked`]).
    anchor_marks: Mutex<()>,
    /// The exclusive lock on `<dir>/LOCK`, held for the store's lifetime: two processes writing
    /// one directory would fork the chain (sled's own lock does not stop a second process).
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Keys.

fn chain_key(prefix: u8, chain: &OrgId) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + chain.as_str().len() + 9 + 8);
    k.push(prefix);
    k.extend_from_slice(chain.as_str().as_bytes());
    k.push(0);
    k
}

fn node_key(chain: &OrgId, level: u32, index: u64) -> Vec<u8> {
    let mut k = chain_key(P_NODE, chain);
    // Levels are < 64 (a tree has at most u64::MAX leaves).
    k.push(level as u8);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn id_key(prefix: u8, id: &EntryId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(prefix);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `chain 0 seq`: a position as a value or a key suffix.
fn chain_seq(chain: &OrgId, seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(chain.as_str().len() + 9);
    v.extend_from_slice(chain.as_str().as_bytes());
    v.push(0);
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

fn decode_chain_seq(v: &[u8]) -> Result<(OrgId, u64), StorageError> {
    let bad = || StorageError::Inconsistent(format!("index holds a bad (chain, seq): {v:02x?}"));
    let nul = v.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let chain = std::str::from_utf8(&v[..nul])
        .ok()
        .and_then(|s| OrgId::new(s).ok())
        .ok_or_else(bad)?;
    let seq = v
        .get(nul + 1..)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(bad)?;
    Ok((chain, seq))
}

/// `prefix chain 0 size witness 0 seq`: an anchor group's key (`size` and `seq` of the record
/// that bounds the group: its smallest for `a`, its largest for `w`).
fn anchor_group_key(prefix: u8, chain: &OrgId, size: u64, witness: &OrgId, seq: u64) -> Vec<u8> {
    let mut k = chain_key(prefix, chain);
    k.extend_from_slice(&size.to_be_bytes());
    k.extend_from_slice(&chain_seq(witness, seq));
    k
}

/// Bytes of one anchor in a group's value: size u64, seq u64 (big-endian), root.
const ANCHOR_RECORD: usize = 8 + 8 + 32;

/// One anchor of a group: the size and root it names, and its seq on the witness's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct GroupedAnchor {
    size: u64,
    seq: u64,
    root: [u8; 32],
}

/// Writes a group (sorted by size, then seq) under its key: the smallest record bounds an `a`
/// group, the largest a `w` group.
fn insert_anchor_group(
    batch: &mut sled::Batch,
    prefix: u8,
    chain: &OrgId,
    witness: &OrgId,
    records: &mut [GroupedAnchor],
) {
    records.sort_unstable();
    let bound = if prefix == P_WITNESSED {
        records.last()
    } else {
        records.first()
    };
    let Some(bound) = bound else {
        return;
    };
    let key = anchor_group_key(prefix, chain, bound.size, witness, bound.seq);
    let mut value = Vec::with_capacity(records.len() * ANCHOR_RECORD);
    for r in records.iter() {
        value.extend_from_slice(&r.size.to_be_bytes());
        value.extend_from_slice(&r.seq.to_be_bytes());
        value.extend_from_slice(&r.root);
    }
    batch.insert(key, value);
}

/// An anchor group read back: its bound size (from the key), witness, and records.
struct AnchorGroup {
    bound: u64,
    witness: OrgId,
    records: Vec<GroupedAnchor>,
}

/// Decodes an anchor group from its key after `prefix chain 0` and its value.
fn decode_anchor_group(rest: &[u8], value: &[u8]) -> Result<AnchorGroup, StorageError> {
    let bad = || StorageError::Inconsistent(format!("index holds a bad anchor group: {rest:02x?}"));
    let bound = rest
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(bad)?;
    let (witness, _) = decode_chain_seq(&rest[8..])?;
    if value.is_empty() || !value.len().is_multiple_of(ANCHOR_RECORD) {
        return Err(bad());
    }
    let records = value
        .chunks_exact(ANCHOR_RECORD)
        .map(|r| {
            let mut root = [0u8; 32];
            root.copy_from_slice(&r[16..]);
            GroupedAnchor {
                size: u64::from_be_bytes(r[..8].try_into().unwrap_or_default()),
                seq: u64::from_be_bytes(r[8..16].try_into().unwrap_or_default()),
                root,
            }
        })
        .collect();
    Ok(AnchorGroup {
        bound,
        witness,
        records,
    })
}

impl AnchorGroup {
    /// The group's anchors of `chain` at sizes up to `upto`.
    fn anchors_upto<'a>(
        &'a self,
        chain: &'a OrgId,
        upto: u64,
    ) -> impl Iterator<Item = AnchorRef> + 'a {
        self.records
            .iter()
            .filter(move |r| r.size <= upto)
            .map(move |r| self.anchor(chain, r))
    }

    fn anchor(&self, chain: &OrgId, r: &GroupedAnchor) -> AnchorRef {
        AnchorRef {
            chain: chain.clone(),
            size: r.size,
            root: TreeHash(r.root),
            witness: self.witness.clone(),
            seq: r.seq,
        }
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    end
}

fn code_prefix(code: &str) -> Vec<u8> {
    let mut k = vec![P_CODE];
    k.extend_from_slice(code.as_bytes());
    k.push(0);
    k
}

fn encode_applied(segment: u32, offset: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&segment.to_be_bytes());
    v[4..].copy_from_slice(&offset.to_be_bytes());
    v
}

fn decode_applied(v: &[u8]) -> Option<(u32, u64)> {
    Some((
        u32::from_be_bytes(v.get(..4)?.try_into().ok()?),
        u64::from_be_bytes(v.get(4..12)?.try_into().ok()?),
    ))
}

// ---------------------------------------------------------------------------------------------
// Segment files.

fn segment_name(n: u32) -> String {
    format!("{n:010}.seg")
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join("segments").join(segment_name(n))
}

/// Segment numbers present, which must be `0..n` without gaps.
fn list_segments(seg_dir: &Path) -> Result<u32, StorageError> {
    let mut numbers = Vec::new();
    for item in fs::read_dir(seg_dir).map_err(io_err(seg_dir))? {
        let item = item.map_err(io_err(seg_dir))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        let n = (stem.len() == 10 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse::<u32>().ok())
            .flatten()
            .ok_or_else(|| {
                StorageError::Inconsistent(format!(
                    "unexpected segment file name {name:?} in {}",
                    seg_dir.display()
                ))
            })?;
        numbers.push(n);
    }
    numbers.sort_unstable();
    for (i, n) in numbers.iter().enumerate() {
        if *n as usize != i {
            return Err(StorageError::Inconsistent(format!(
                "segment {} is missing in {}",
                segment_name(i as u32),
                seg_dir.display()
            )));
        }
    }
    u32::try_from(numbers.len()).map_err(|_| StorageError::Inconsistent("too many segments".into()))
}

fn sync_dir(path: &Path) -> Result<(), StorageError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

fn open_segment(path: &Path, create: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(path)
        .map_err(io_err(path))
}

/// Appends one frame to `buf`.
fn frame(buf: &mut Vec<u8>, kind: RecordType, bytes: &[u8]) {
    buf.push(kind.magic());
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(blake3::hash(bytes).as_bytes());
    buf.extend_from_slice(bytes);
}

/// Checks a frame header; returns its kind and record length.
fn parse_header(header: &[u8; FRAME_HEADER]) -> Result<(RecordType, usize, [u8; 32]), String> {
    let kind = RecordType::from_magic(header[0])
        .ok_or_else(|| format!("bad frame magic 0x{:02x}", header[0]))?;
    let len = u32::from_le_bytes(header[1..5].try_into().unwrap_or_default()) as usize;
    if len == 0 || len > kind.max_len() {
        return Err(format!(
            "frame length {len} is outside 1..={} for {kind:?}",
            kind.max_len()
        ));
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&header[5..]);
    Ok((kind, len, hash))
}

/// One step of a sequential segment read.
enum Step {
    Record {
        offset: u64,
        kind: RecordType,
        bytes: Vec<u8>,
    },
    Bad {
        offset: u64,
        detail: String,
    },
    End,
}

/// Reads a segment's frames in order, from `offset` up to `end`.
struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    end: u64,
}

impl SegmentReader {
    /// `end = None`: the file's current length.
    fn open(path: &Path, offset: u64, end: Option<u64>) -> Result<Self, StorageError> {
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let end = end.unwrap_or(len).min(len);
        let mut reader = BufReader::with_capacity(1 << 20, file);
        io::Seek::seek(&mut reader, io::SeekFrom::Start(offset)).map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            offset,
            end,
        })
    }

    fn next(&mut self) -> Result<Step, StorageError> {
        let offset = self.offset;
        let left = self.end.saturating_sub(offset);
        if left == 0 {
            return Ok(Step::End);
        }
        if left < FRAME_HEADER as u64 {
            return Ok(Step::Bad {
                offset,
                detail: format!("short frame header ({left} bytes left)"),
            });
        }
        let mut header = [0u8; FRAME_HEADER];
        self.reader
            .read_exact(&mut header)
            .map_err(io_err(&self.path))?;
        let (kind, len, hash) = match parse_header(&header) {
            Ok(h) => h,
            Err(detail) => return Ok(Step::Bad { offset, detail }),
        };
        if left < (FRAME_HEADER + len) as u64 {
            return Ok(Step::Bad {
                offset,
                detail: format!(
                    "short frame: {len} bytes announced, {} left",
                    left - FRAME_HEADER as u64
                ),
            });
        }
        let mut bytes = vec![0u8; len];
        self.reader
            .read_exact(&mut bytes)
            .map_err(io_err(&self.path))?;
        if *blake3::hash(&bytes).as_bytes() != hash {
            return Ok(Step::Bad {
                offset,
                detail: "frame hash mismatch".into(),
            });
        }
        self.offset += (FRAME_HEADER + len) as u64;
        Ok(Step::Record {
            offset,
            kind,
            bytes,
        })
    }
}

/// Whether an intact frame starts anywhere in `path` after `from`: tells a torn tail (nothing
/// intact follows) from damage in the middle of acknowledged data.
fn intact_frame_after(path: &Path, from: u64) -> Result<Option<u64>, StorageError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut rest = vec![0u8; len.saturating_sub(from) as usize];
    file.read_exact_at(&mut rest, from).map_err(io_err(path))?;
    for start in 1..rest.len() {
        let Some(header) = rest.get(start..start + FRAME_HEADER) else {
            break;
        };
        let header: &[u8; FRAME_HEADER] = header.try_into().unwrap_or(&[0; FRAME_HEADER]);
        let Ok((_, len, hash)) = parse_header(header) else {
            continue;
        };
        let body = start + FRAME_HEADER;
        if let Some(bytes) = rest.get(body..body + len)
            && *blake3::hash(bytes).as_bytes() == hash
        {
            return Ok(Some(from + start as u64));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Read-only access to a data directory.

/// A position in the log: the byte offset just after the last record read in `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    pub segment: u32,
    pub offset: u64,
}

/// Reads the records of the data directory `dir` in log order **without opening the store**:
/// no lock, no index, no write of any kind, so it can run while a node appends (`rmledger audit
/// --data`). Every frame's hash is checked, but the records are not decoded or verified: that is
/// the caller's job.
///
/// Reads up to `until` (a position an earlier call returned, so two passes see the same
/// records) or, without it, to the end. A damaged frame in the last segment with no intact frame
/// after it is a tail being written (or torn by a crash and not yet truncated) and ends the
/// read; damage anywhere else is [`StorageError::Corrupt`], as at [`Store::open`]. Returns the
/// position after the last record read. Stops early when `f` returns `ControlFlow::Break`.
pub fn read_log<F>(
    dir: &Path,
    until: Option<LogPosition>,
    mut f: F,
) -> Result<LogPosition, StorageError>
where
    F: FnMut(ScannedRecord<'_>) -> ControlFlow<()>,
{
    let seg_dir = dir.join("segments");
    if !seg_dir.is_dir() {
        return Err(StorageError::Inconsistent(format!(
            "{} is not a node's data directory (it has no segments/ directory)",
            dir.display()
        )));
    }
    let count = match until {
        Some(until) => until.segment + 1,
        None => list_segments(&seg_dir)?,
    };
    let mut at = LogPosition {
        segment: 0,
        offset: 0,
    };
    for segment in 0..count {
        let path = segment_path(dir, segment);
        let end = until.filter(|u| u.segment == segment).map(|u| u.offset);
        let mut reader = SegmentReader::open(&path, 0, end)?;
        at = LogPosition { segment, offset: 0 };
        loop {
            let step = match reader.next()? {
                // The frame may have been completed since it was read half-written: once more.
                Step::Bad { offset, .. } if segment + 1 == count && until.is_none() => {
                    let mut again = SegmentReader::open(&path, offset, None)?;
                    match again.next()? {
                        Step::Record { .. } => {
                            reader = SegmentReader::open(&path, offset, None)?;
                            reader.next()?
                        }
                        bad => bad,
                    }
                }
                step => step,
            };
            match step {
                Step::End => break,
                Step::Bad { offset, detail } => {
                    let tail = segment + 1 == count
                        && until.is_none()
                        && intact_frame_after(&path, offset)?.is_none();
                    if tail {
                        return Ok(at);
                    }
                    return Err(StorageError::Corrupt {
                        segment,
                        offset,
                        detail,
                    });
                }
                Step::Record {
                    offset,
                    kind,
                    bytes,
                } => {
                    at.offset = reader.offset;
                    let record = ScannedRecord {
                        segment,
                        offset,
                        kind,
                        bytes: &bytes,
                    };
                    if f(record).is_break() {
                        return Ok(at);
                    }
                }
            }
        }
    }
    Ok(at)
}

// ---------------------------------------------------------------------------------------------
// Merkle nodes from the index.

/// A chain's stored complete-subtree hashes as a [`NodeSource`]: proofs cost O(log n) reads.
struct ChainNodes<'a> {
    index: &'a sled::Tree,
    positions: &'a Positions,
    chain: &'a OrgId,
}

impl ChainNodes<'_> {
    /// A node below [`LOWEST_STORED_LEVEL`] (level 0 included), folded from its `2^level` leaf
    /// hashes (one read of the chain's position file); `None` when a leaf is missing.
    fn derived(&self, level: u32, index: u64) -> Result<Option<Hash>, StorageError> {
        let width = 1u64 << level;
        let Some(first) = index.checked_mul(width) else {
            return Ok(None);
        };
        let mut hashes: Vec<Hash> = self
            .positions
            .read(self.chain, first, width)?
            .into_iter()
            .map(|r| r.leaf)
            .collect();
        if hashes.len() as u64 != width {
            return Ok(None);
        }
        while hashes.len() > 1 {
            hashes = hashes
                .chunks_exact(2)
                .map(|pair| Sha256::node(&pair[0], &pair[1]))
                .collect();
        }
        Ok(hashes.pop())
    }
}

impl NodeSource for ChainNodes<'_> {
    type Error = StorageError;

    fn node(&self, level: u32, index: u64) -> Result<Hash, StorageError> {
        if level >= 64 {
            return Err(StorageError::Inconsistent(format!(
                "chain {}: no tree level {level}",
                self.chain
            )));
        }
        let value = if level < LOWEST_STORED_LEVEL {
            self.derived(level, index)?
        } else {
            self.index
                .get(node_key(self.chain, level, index))?
                .and_then(|v| Hash::try_from(v.as_ref()).ok())
        };
        value.ok_or_else(|| {
            StorageError::Inconsistent(format!(
                "chain {}: tree node (level {level}, index {index}) is missing from the index",
                self.chain
            ))
        })
    }
}

fn proof_error(e: ProofError<StorageError>) -> StorageError {
    let e = match e {
        ProofError::Source(e) => return e,
        ProofError::IndexOutOfRange { index, size } => ProofError::IndexOutOfRange { index, size },
        ProofError::EmptyTreeConsistency => ProofError::EmptyTreeConsistency,
        ProofError::Size1GreaterThanSize2 { size1, size2 } => {
            ProofError::Size1GreaterThanSize2 { size1, size2 }
        }
        ProofError::UnalignedRange { start, end } => ProofError::UnalignedRange { start, end },
        ProofError::SizeBeyondTree { size, tree_size } => {
            ProofError::SizeBeyondTree { size, tree_size }
        }
    };
    StorageError::Proof(e)
}

// ---------------------------------------------------------------------------------------------
// Indexing: one sled batch for many records.

/// Builds the index updates of a run of records over a working copy of the chains they touch.
struct Indexer<'a> {
    index: &'a sled::Tree,
    positions: &'a Positions,
    /// Position records of this run per chain: the first seq, the encoded records, their ids.
    pending: Vec<PendingRecords>,
    /// Chains touched so far (pre-filled by the caller with their current state).
    chains: HashMap<OrgId, ChainMeta>,
    /// Chains whose meta key must be rewritten.
    dirty: Vec<OrgId>,
    /// Newest checkpoint (size, time) per chain decided in this run.
    checkpoints: HashMap<OrgId, (u64, u64)>,
    /// This run's anchors by (chain named, witness), written as one group each at commit.
    anchors: Vec<RunAnchors>,
    batch: sled::Batch,
    records: usize,
    /// How many entries this run is expected to hold (an append's batch), so a chain's position
    /// records are allocated once instead of grown by doubling through fresh memory.
    expected: usize,
}

/// The anchors of one run naming one chain from one witness, each with whether it waits (names
/// more of the chain than the log holds at that point).
struct RunAnchors {
    chain: OrgId,
    witness: OrgId,
    records: Vec<(GroupedAnchor, bool)>,
}

/// Consecutive position records of one chain waiting for [`Indexer::commit`].
struct PendingRecords {
    chain: OrgId,
    first: u64,
    records: Vec<u8>,
    ids: Vec<EntryId>,
}

impl<'a> Indexer<'a> {
    fn new(
        index: &'a sled::Tree,
        positions: &'a Positions,
        chains: HashMap<OrgId, ChainMeta>,
        expected: usize,
    ) -> Self {
        Self {
            index,
            positions,
            pending: Vec::new(),
            chains,
            dirty: Vec::new(),
            checkpoints: HashMap::new(),
            anchors: Vec::new(),
            batch: sled::Batch::default(),
            records: 0,
            expected,
        }
    }

    fn entry(&mut self, entry: &Entry, pos: Pos) -> Result<(), StorageError> {
        let chain = entry.chain();
        // One hash of the chain's name per entry: `entry()` would clone the name every time.
        let meta = match self.chains.get_mut(chain) {
            Some(meta) => meta,
            None => self.chains.entry(chain.clone()).or_default(),
        };
        if entry.seq() != meta.size() {
            return Err(StorageError::Inconsistent(format!(
                "chain {chain}: entry {} has seq {}, the chain has {} entries",
                entry.id(),
                entry.seq(),
                meta.size()
            )));
        }
        if entry.payload().prev != meta.head {
            return Err(StorageError::Inconsistent(format!(
                "chain {chain}: entry at seq {} links to {:?}, the head is {:?}",
                entry.seq(),
                entry.payload().prev,
                meta.head
            )));
        }
        let created = meta
            .frontier
            .append::<Sha256>(entry.leaf_hash().0)
            .map_err(|e| StorageError::Inconsistent(format!("chain {chain}: {e}")))?;
        meta.head = Some(entry.id());
        if !self.dirty.contains(chain) {
            self.dirty.push(chain.clone());
        }
        let seq = entry.seq();
        let id = entry.id();
        // The position, leaf hash (level 0 of the tree) and id go to the chain's position
        // file. Only complete subtrees of level >= LOWEST_STORED_LEVEL get `n` keys (one per
        // 2^LOWEST_STORED_LEVEL entries instead of ~1 per entry); lower ones are folded from
        // the leaves when a proof needs them.
        let leaf = match created.first() {
            Some((0, _, leaf)) => *leaf,
            _ => entry.leaf_hash().0,
        };
        let record = PositionRecord { pos, leaf, id };
        let pending = match self.pending.iter().position(|p| p.chain == *chain) {
            Some(i) => &mut self.pending[i],
            None => {
                self.pending.push(PendingRecords {
                    chain: chain.clone(),
                    first: seq,
                    records: Vec::with_capacity(self.expected * RECORD_LEN as usize),
                    ids: Vec::with_capacity(self.expected),
                });
                self.pending.last_mut().unwrap_or_else(|| unreachable!())
            }
        };
        debug_assert_eq!(
            pending.first + pending.ids.len() as u64,
            seq,
            "a chain's records in one run are consecutive"
        );
        record.encode_into(&mut pending.records);
        pending.ids.push(id);
        for (level, index, hash) in created {
            if level >= LOWEST_STORED_LEVEL {
                self.batch.insert(node_key(chain, level, index), &hash[..]);
            }
        }
        if let Record::BatchRegistered(certificate) = entry.record() {
            self.batch
                .insert(id_key(P_CERT, &id), chain_seq(chain, seq));
            let mut k = code_prefix(certificate.code.as_str());
            k.extend_from_slice(certificate.batch.as_bytes());
            k.push(0);
            k.extend_from_slice(id.as_bytes());
            self.batch.insert(k, EMPTY);
        }
        // Every anchor goes to the `w` group of its (chain, witness) for the bundles; one naming
        // more of a chain than is held at this point of the log also waits in the `a` group for
        // that chain to catch up. The decision depends only on the log before it, so a replay or
        // rebuild makes the same one.
        if let Record::Anchor(anchor) = entry.record() {
            let waiting = anchor.size > self.chains.get(&anchor.chain).map_or(0, ChainMeta::size);
            let record = GroupedAnchor {
                size: anchor.size,
                seq,
                root: anchor.root.0,
            };
            match self
                .anchors
                .iter_mut()
                .find(|g| g.chain == anchor.chain && g.witness == *chain)
            {
                Some(group) => group.records.push((record, waiting)),
                None => {
                    // The run's first group is sized for the rest of the run at once (a
                    // witness's chain can be mostly anchors of one chain); later ones grow,
                    // so a page of anchors of many chains does not reserve quadratically.
                    let rest = self.expected.saturating_sub(self.records);
                    let capacity = if self.anchors.is_empty() { rest } else { 1 };
                    let mut records = Vec::with_capacity(capacity.max(1));
                    records.push((record, waiting));
                    self.anchors.push(RunAnchors {
                        chain: anchor.chain.clone(),
                        witness: chain.clone(),
                        records,
                    });
                }
            }
        }
        // A registration that supersedes another certificate is part of that one's life too.
        for cert in entry.certificates() {
            let mut k = id_key(P_EVENT, &cert);
            k.extend_from_slice(&chain_seq(chain, seq));
            self.batch.insert(k, EMPTY);
        }
        self.records += 1;
        Ok(())
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint, pos: Pos) -> Result<(), StorageError> {
        let body = checkpoint.body();
        let key = chain_key(P_CKPT, &body.chain);
        let current = match self.checkpoints.get(&body.chain) {
            Some(c) => Some(*c),
            None => self.index.get(&key)?.and_then(|v| {
                Some((
                    u64::from_be_bytes(v.get(16..24)?.try_into().ok()?),
                    u64::from_be_bytes(v.get(24..32)?.try_into().ok()?),
                ))
            }),
        };
        let new = (body.size, body.time_unix_ms);
        if current.is_none_or(|c| new >= c) {
            let mut v = pos.encode().to_vec();
            v.extend_from_slice(&body.size.to_be_bytes());
            v.extend_from_slice(&body.time_unix_ms.to_be_bytes());
            self.batch.insert(key, v);
            self.checkpoints.insert(body.chain.clone(), new);
        }
        self.records += 1;
        Ok(())
    }

    /// Writes the position records, adds the chain metas and the applied mark, applies the
    /// batch, and returns the chains touched for publishing.
    ///
    /// The position files are written before sled: a crash in between leaves records beyond
    /// sled's sizes, which the next open cuts off and replays (either order would be recovered;
    /// this one never needs the segments re-read for a process crash).
    fn commit(&mut self, applied: (u32, u64)) -> Result<Vec<(OrgId, ChainMeta)>, StorageError> {
        for p in &self.pending {
            self.positions.write(&p.chain, p.first, &p.records)?;
        }
        let mut touched = Vec::with_capacity(self.dirty.len());
        for chain in self.dirty.drain(..) {
            let Some(meta) = self.chains.get(&chain) else {
                continue;
            };
            let mut v = meta.size().to_be_bytes().to_vec();
            v.extend_from_slice(meta.head.map(|h| h.0).unwrap_or_default().as_slice());
            self.batch.insert(chain_key(P_META, &chain), v);
            touched.push((chain, meta.clone()));
        }
        // One key per (chain named, witness) and run instead of one per anchor: a sled key costs
        // ~10 µs of CPU, and a witness's chain can be mostly anchors.
        for group in self.anchors.drain(..) {
            let mut waiting: Vec<GroupedAnchor> = group
                .records
                .iter()
                .filter(|(_, waiting)| *waiting)
                .map(|(r, _)| *r)
                .collect();
            insert_anchor_group(
                &mut self.batch,
                P_ANCHOR,
                &group.chain,
                &group.witness,
                &mut waiting,
            );
            let mut all: Vec<GroupedAnchor> = group.records.iter().map(|(r, _)| *r).collect();
            insert_anchor_group(
                &mut self.batch,
                P_WITNESSED,
                &group.chain,
                &group.witness,
                &mut all,
            );
        }
        self.batch
            .insert(KEY_APPLIED, &encode_applied(applied.0, applied.1)[..]);
        self.index.apply_batch(std::mem::take(&mut self.batch))?;
        for p in self.pending.drain(..) {
            self.positions.insert_ids(&p.chain, p.first, &p.ids);
        }
        self.checkpoints.clear();
        self.records = 0;
        Ok(touched)
    }
}

// ---------------------------------------------------------------------------------------------
// Opening.

fn open_sled(path: &Path, options: &StoreOptions) -> Result<sled::Db, String> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(options.cache_capacity);
    match panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("sled panicked while opening".into()),
    }
}

/// Each chain's size and head, as the index's `m` keys hold them.
type Metas = HashMap<OrgId, (u64, Option<EntryId>)>;

/// Loads the chain sizes and heads from the index.
fn load_metas(index: &sled::Tree) -> Result<Metas, StorageError> {
    let mut metas = HashMap::new();
    for item in index.scan_prefix([P_META]) {
        let (k, v) = item?;
        let bad = || StorageError::Inconsistent(format!("bad chain meta {k:02x?}"));
        let name = k
            .get(1..k.len().saturating_sub(1))
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| OrgId::new(s).ok())
            .ok_or_else(bad)?;
        let size = v
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(bad)?;
        let head = v
            .get(8..40)
            .and_then(|b| EntryId::from_slice(b).ok())
            .ok_or_else(bad)?;
        metas.insert(name, (size, (size > 0).then_some(head)));
    }
    Ok(metas)
}

/// Loads the chains' Merkle frontiers (the position files must hold every entry of `metas`).
fn load_chains(
    index: &sled::Tree,
    positions: &Positions,
    metas: &Metas,
) -> Result<HashMap<OrgId, ChainMeta>, StorageError> {
    let mut chains = HashMap::with_capacity(metas.len());
    for (name, &(size, head)) in metas {
        let nodes = ChainNodes {
            index,
            positions,
            chain: name,
        };
        let frontier = Frontier::load(&nodes, size)?;
        chains.insert(name.clone(), ChainMeta { head, frontier });
    }
    Ok(chains)
}

/// What [`Store::open`] found and did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    /// The index was rebuilt from segment 0.
    pub rebuilt: bool,
    /// Records indexed during open.
    pub replayed: u64,
    /// Bytes cut off a torn tail.
    pub truncated: u64,
    /// Entries of the writer's chain cut off because their commit's checkpoint never made it
    /// to disk ([`StoreOptions::writer_chain`]).
    pub cut_entries: u64,
}

/// The chains and the log position after a replay.
type Replayed = (HashMap<OrgId, ChainMeta>, (u32, u64));

/// State of an open in progress.
struct Opening {
    dir: PathBuf,
    count: u32,
    recovery: Recovery,
    /// [`StoreOptions::writer_chain`].
    writer_chain: Option<OrgId>,
}

impl Opening {
    /// Replays segments from `start` into the index; returns the chains and the end position.
    fn replay(
        &mut self,
        index: &sled::Tree,
        positions: &Positions,
        chains: HashMap<OrgId, ChainMeta>,
        start: (u32, u64),
    ) -> Result<Replayed, StorageError> {
        let mut indexer = Indexer::new(index, positions, chains, 0);
        let mut at = start;
        // Entries of the writer's chain read since its last checkpoint, with the log position
        // before the first of them. A commit writes its entries and then its checkpoint, so
        // they are indexed when the checkpoint comes; at the end of the log they are a commit
        // cut short, and are cut off.
        let mut held: Vec<(Entry, Pos)> = Vec::new();
        let mut held_from = start;
        let index_held = |indexer: &mut Indexer<'_>, held: &mut Vec<(Entry, Pos)>| {
            for (entry, pos) in held.drain(..) {
                indexer.entry(&entry, pos).map_err(|e| match e {
                    StorageError::Inconsistent(detail) => StorageError::Corrupt {
                        segment: pos.segment,
                        offset: pos.offset,
                        detail,
                    },
                    e => e,
                })?;
            }
            Ok::<(), StorageError>(())
        };
        for segment in start.0..self.count {
            let path = segment_path(&self.dir, segment);
            let offset = if segment == start.0 { start.1 } else { 0 };
            let mut reader = SegmentReader::open(&path, offset, None)?;
            let last = segment + 1 == self.count;
            // A batch never spans segments: only the last one can end in a cut-short commit.
            index_held(&mut indexer, &mut held)?;
            at = (segment, offset);
            loop {
                match reader.next()? {
                    Step::End => {
                        if last && !held.is_empty() {
                            let (_, first) = held[0];
                            self.cut_commit(&path, first.offset, held.len())?;
                            held.clear();
                            at = held_from;
                        }
                        break;
                    }
                    Step::Record {
                        offset,
                        kind,
                        bytes,
                    } => {
                        let pos = Pos {
                            segment,
                            offset,
                            len: bytes.len() as u32,
                        };
                        let corrupt = |detail: String| StorageError::Corrupt {
                            segment,
                            offset,
                            detail,
                        };
                        match kind {
                            RecordType::Entry => {
                                let entry = Entry::decode(&bytes)
                                    .map_err(|e| corrupt(format!("entry does not decode: {e}")))?;
                                // Indexed in order: held back only while entries of the
                                // writer's chain wait for their checkpoint.
                                let writer = self.writer_chain.as_ref() == Some(entry.chain());
                                if held.is_empty() {
                                    held_from = at;
                                }
                                held.push((entry, pos));
                                if !writer {
                                    index_held(&mut indexer, &mut held)?;
                                }
                            }
                            RecordType::Checkpoint => {
                                let cp = Checkpoint::decode(&bytes).map_err(|e| {
                                    corrupt(format!("checkpoint does not decode: {e}"))
                                })?;
                                index_held(&mut indexer, &mut held)?;
                                indexer.checkpoint(&cp, pos)?;
                            }
                        }
                        self.recovery.replayed += 1;
                        at = (segment, reader.offset);
                        // The applied mark never passes an entry not indexed yet.
                        if indexer.records >= REPLAY_CHUNK && held.is_empty() {
                            indexer.commit(at)?;
                        }
                    }
                    Step::Bad { offset, detail } => {
                        if last && intact_frame_after(&path, offset)?.is_none() {
                            match held.first() {
                                Some(&(_, first)) => {
                                    self.cut_commit(&path, first.offset, held.len())?;
                                    held.clear();
                                    at = held_from;
                                }
                                None => self.truncate(&path, segment, offset, &detail)?,
                            }
                            break;
                        }
                        return Err(StorageError::Corrupt {
                            segment,
                            offset,
                            detail,
                        });
                    }
                }
            }
        }
        index_held(&mut indexer, &mut held)?;
        indexer.commit(at)?;
        Ok((indexer.chains, at))
    }

    /// Re-derives the position records the files lack (`short`) from the segments before
    /// `applied`, from the last intact record of those chains on (the log's start when a chain
    /// has none). Decodes only entries; the rest of the index is not touched.
    fn rederive(
        &mut self,
        positions: &Positions,
        short: &[positions::Short],
        applied: (u32, u64),
    ) -> Result<(), StorageError> {
        let mut start = applied;
        for s in short {
            let from = if s.valid == 0 {
                (0, 0)
            } else {
                let last = positions.read(&s.chain, s.valid - 1, 1)?;
                let last = last.first().ok_or_else(|| {
                    StorageError::Inconsistent(format!("position file of {} shrank", s.chain))
                })?;
                (last.pos.segment, last.pos.offset)
            };
            start = start.min(from);
        }
        tracing::warn!(
            chains = short.len(),
            from_segment = start.0,
            from_offset = start.1,
            "position files are behind the index: re-deriving their tail from the segments"
        );
        let mut pending: HashMap<&OrgId, (u64, u64, PendingRecords)> = short
            .iter()
            .map(|s| {
                let records = PendingRecords {
                    chain: s.chain.clone(),
                    first: s.valid,
                    records: Vec::new(),
                    ids: Vec::new(),
                };
                (&s.chain, (s.valid, s.size, records))
            })
            .collect();
        for segment in start.0..=applied.0 {
            let path = segment_path(&self.dir, segment);
            let offset = if segment == start.0 { start.1 } else { 0 };
            let end = (segment == applied.0).then_some(applied.1);
            let mut reader = SegmentReader::open(&path, offset, end)?;
            loop {
                let (offset, bytes) = match reader.next()? {
                    Step::End => break,
                    Step::Bad { offset, detail } => {
                        return Err(StorageError::Corrupt {
                            segment,
                            offset,
                            detail,
                        });
                    }
                    Step::Record {
                        kind: RecordType::Checkpoint,
                        ..
                    } => continue,
                    Step::Record { offset, bytes, .. } => (offset, bytes),
                };
                let entry = Entry::decode(&bytes).map_err(|e| StorageError::Corrupt {
                    segment,
                    offset,
                    detail: format!("entry does not decode: {e}"),
                })?;
                let Some((next, size, records)) = pending.get_mut(entry.chain()) else {
                    continue;
                };
                if entry.seq() < *next || *next >= *size {
                    continue;
                }
                if entry.seq() != *next {
                    return Err(StorageError::Inconsistent(format!(
                        "chain {}: entry at seq {} found where seq {next} was expected",
                        entry.chain(),
                        entry.seq()
                    )));
                }
                let pos = Pos {
                    segment,
                    offset,
                    len: bytes.len() as u32,
                };
                PositionRecord {
                    pos,
                    leaf: entry.leaf_hash().0,
                    id: entry.id(),
                }
                .encode_into(&mut records.records);
                records.ids.push(entry.id());
                *next += 1;
            }
        }
        for (chain, (next, size, records)) in pending {
            if next != size {
                return Err(StorageError::Inconsistent(format!(
                    "chain {chain}: the index says {size} entries, the segments before its applied mark hold {next}"
                )));
            }
            positions.write(chain, records.first, &records.records)?;
            positions.insert_ids(chain, records.first, &records.ids);
        }
        Ok(())
    }

    /// Cuts off the entries of a commit a crash cut short: `count` entries of the writer's
    /// chain from `offset` to the end of the last segment, with no checkpoint after them.
    fn cut_commit(&mut self, path: &Path, offset: u64, count: usize) -> Result<(), StorageError> {
        let file = open_segment(path, false)?;
        let len = file.metadata().map_err(io_err(path))?.len();
        tracing::warn!(
            chain = ?self.writer_chain,
            entries = count,
            dropped_bytes = len - offset,
            "a commit cut short by a crash (never acknowledged, no checkpoint): dropping its entries"
        );
        file.set_len(offset).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        self.recovery.truncated += len - offset;
        self.recovery.cut_entries += count as u64;
        Ok(())
    }

    fn truncate(
        &mut self,
        path: &Path,
        segment: u32,
        offset: u64,
        detail: &str,
    ) -> Result<(), StorageError> {
        let file = open_segment(path, false)?;
        let len = file.metadata().map_err(io_err(path))?.len();
        tracing::warn!(
            segment,
            offset,
            dropped_bytes = len - offset,
            detail,
            "torn write at the end of the log (never acknowledged): truncating"
        );
        file.set_len(offset).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        self.recovery.truncated += len - offset;
        Ok(())
    }
}

impl Store {
    /// Opens or creates the store in `dir`, recovering the index as the module doc describes.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StorageError> {
        Self::open_with_recovery(dir, options).map(|(store, _)| store)
    }

    /// [`Store::open`], also saying what recovery did.
    pub fn open_with_recovery(
        dir: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<(Self, Recovery), StorageError> {
        let lock = lock_dir(dir.as_ref())?;
        Self::open_locked(dir.as_ref().to_path_buf(), options, lock)
    }

    fn open_locked(
        dir: PathBuf,
        options: StoreOptions,
        lock: File,
    ) -> Result<(Self, Recovery), StorageError> {
        let seg_dir = dir.join("segments");
        let index_dir = dir.join("index");
        fs::create_dir_all(&seg_dir).map_err(io_err(&seg_dir))?;
        let mut count = list_segments(&seg_dir)?;
        if count == 0 {
            open_segment(&segment_path(&dir, 0), true)?
                .sync_all()
                .map_err(io_err(&seg_dir))?;
            sync_dir(&seg_dir)?;
            sync_dir(&dir)?;
            count = 1;
        }
        let mut lens = Vec::with_capacity(count as usize);
        for n in 0..count {
            let path = segment_path(&dir, n);
            lens.push(fs::metadata(&path).map_err(io_err(&path))?.len());
        }
        let mut opening = Opening {
            dir: dir.clone(),
            count,
            recovery: Recovery::default(),
            writer_chain: options.writer_chain.clone(),
        };

        // Try the existing index first.
        let mut attempt = None;
        match open_sled(&index_dir.join(SLED_DIR), &options) {
            Ok(db) => match Self::resume(&mut opening, &db, &index_dir, &lens) {
                Ok(Some((positions, (chains, end)))) => {
                    attempt = Some((db, positions, chains, end));
                }
                Ok(None) => drop(db),
                Err(e) => {
                    tracing::warn!(error = %e, "index replay failed; rebuilding the index");
                    drop(db);
                }
            },
            Err(e) => tracing::warn!(error = %e, "index cannot be opened; rebuilding it"),
        }
        let (db, positions, chains, end) = match attempt {
            Some(a) => a,
            None => {
                // Keep `truncated` from a failed resume; count the replay afresh.
                opening.recovery.rebuilt = true;
                opening.recovery.replayed = 0;
                let (db, positions, (chains, end)) =
                    Self::rebuild(&mut opening, &index_dir, &options)?;
                (db, positions, chains, end)
            }
        };
        let mut files = Vec::with_capacity(count as usize);
        for n in 0..count {
            files.push(Arc::new(open_segment(&segment_path(&dir, n), false)?));
        }
        let store = Store {
            dir,
            options,
            index: db.open_tree("index")?,
            db,
            positions,
            segments: RwLock::new(files),
            writer: Mutex::new(Writer {
                segment: end.0,
                offset: end.1,
                frames: Vec::new(),
            }),
            chains: Mutex::new(chains),
            poisoned: AtomicBool::new(false),
            anchor_marks: Mutex::new(()),
            _lock: lock,
        };
        tracing::info!(
            rebuilt = opening.recovery.rebuilt,
            replayed = opening.recovery.replayed,
            truncated = opening.recovery.truncated,
            "storage opened"
        );
        Ok((store, opening.recovery))
    }

    /// Replays from the index's `applied` mark, or `None` when the index must be rebuilt.
    fn resume(
        opening: &mut Opening,
        db: &sled::Db,
        index_dir: &Path,
        lens: &[u64],
    ) -> Result<Option<(Positions, Replayed)>, StorageError> {
        let index = db.open_tree("index")?;
        if index.get(KEY_VERSION)?.as_deref() != Some(&[INDEX_VERSION][..]) {
            return Ok(None);
        }
        let Some(applied) = index.get(KEY_APPLIED)?.and_then(|v| decode_applied(&v)) else {
            return Ok(None);
        };
        let within = lens
            .get(applied.0 as usize)
            .is_some_and(|&len| applied.1 <= len);
        if !within {
            tracing::warn!(?applied, "index is ahead of the segments");
            return Ok(None);
        }
        let metas = load_metas(&index)?;
        let positions = Positions::open(&index_dir.join(POSITIONS_DIR))?;
        let short = positions.load(&metas, lens)?;
        if !short.is_empty() {
            opening.rederive(&positions, &short, applied)?;
        }
        let chains = load_chains(&index, &positions, &metas)?;
        let replayed = opening.replay(&index, &positions, chains, applied)?;
        Ok(Some((positions, replayed)))
    }

    /// Deletes the index directory and rebuilds it from segment 0.
    fn rebuild(
        opening: &mut Opening,
        index_dir: &Path,
        options: &StoreOptions,
    ) -> Result<(sled::Db, Positions, Replayed), StorageError> {
        if index_dir.exists() {
            fs::remove_dir_all(index_dir).map_err(io_err(index_dir))?;
        }
        let db = open_sled(&index_dir.join(SLED_DIR), options)
            .map_err(|e| StorageError::Inconsistent(format!("cannot create a fresh index: {e}")))?;
        let positions = Positions::open(&index_dir.join(POSITIONS_DIR))?;
        let index = db.open_tree("index")?;
        index.insert(KEY_VERSION, &[INDEX_VERSION][..])?;
        let replayed = opening.replay(&index, &positions, HashMap::new(), (0, 0))?;
        Ok((db, positions, replayed))
    }

    /// Deletes the index of the store in `dir` and rebuilds it from the segments.
    pub fn reindex(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StorageError> {
        // Lock first: deleting a running node's index would pull its state from under it.
        let lock = lock_dir(dir.as_ref())?;
        let index_dir = dir.as_ref().join("index");
        if index_dir.exists() {
            fs::remove_dir_all(&index_dir).map_err(io_err(&index_dir))?;
        }
        Self::open_locked(dir.as_ref().to_path_buf(), options, lock).map(|(store, _)| store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes the index (sled) on graceful shutdown, so the next open replays little. Not a
    /// durability point: the segments already are.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Appending.

    /// Makes a batch durable, then indexes it. `Ok` is the acknowledgement.
    ///
    /// Fails without writing anything with [`StorageError::Inconsistent`] if an entry does not
    /// continue its chain (`seq == size`, `prev == head`, in batch order).
    pub fn append(&self, batch: &Batch) -> Result<(), StorageError> {
        if batch.entries.is_empty() && batch.checkpoints.is_empty() {
            return Ok(());
        }
        let mut writer = lock(&self.writer);
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned);
        }
        let total: u64 = batch
            .entries
            .iter()
            .map(|e| e.bytes().len())
            .chain(batch.checkpoints.iter().map(|c| c.bytes().len()))
            .map(|len| (FRAME_HEADER + len) as u64)
            .sum();
        let rotate = writer.offset > 0 && writer.offset + total > self.options.segment_size;
        let (segment, start) = if rotate {
            let next = writer
                .segment
                .checked_add(1)
                .ok_or_else(|| StorageError::Inconsistent("segment numbers exhausted".into()))?;
            (next, 0)
        } else {
            (writer.segment, writer.offset)
        };

        // Index first, in memory: this checks continuity before anything is written.
        let mut working = HashMap::new();
        {
            let chains = lock(&self.chains);
            // Entries come in runs of one chain (and anchors in runs naming one chain): a run
            // is looked up once, not per entry.
            let mut previous = None;
            for entry in &batch.entries {
                // The chains written, and the chains anchors name (whose size decides whether
                // an anchor waits in the index).
                let named = match entry.record() {
                    Record::Anchor(anchor) => Some(&anchor.chain),
                    _ => None,
                };
                if previous == Some((entry.chain(), named)) {
                    continue;
                }
                previous = Some((entry.chain(), named));
                for chain in std::iter::once(entry.chain()).chain(named) {
                    if !working.contains_key(chain)
                        && let Some(meta) = chains.get(chain)
                    {
                        working.insert(chain.clone(), meta.clone());
                    }
                }
                if !working.contains_key(entry.chain()) {
                    working.insert(entry.chain().clone(), ChainMeta::default());
                }
            }
        }
        let mut indexer = Indexer::new(&self.index, &self.positions, working, batch.entries.len());
        let mut buf = std::mem::take(&mut writer.frames);
        buf.clear();
        buf.reserve(total as usize);
        for entry in &batch.entries {
            let pos = Pos {
                segment,
                offset: start + buf.len() as u64,
                len: entry.bytes().len() as u32,
            };
            indexer.entry(entry, pos)?;
            frame(&mut buf, RecordType::Entry, entry.bytes());
        }
        for checkpoint in &batch.checkpoints {
            let pos = Pos {
                segment,
                offset: start + buf.len() as u64,
                len: checkpoint.bytes().len() as u32,
            };
            indexer.checkpoint(checkpoint, pos)?;
            frame(&mut buf, RecordType::Checkpoint, checkpoint.bytes());
        }

        // Durability point.
        let result = self.write_durably(segment, start, rotate, &buf);
        let file = match result {
            Ok(file) => file,
            Err(e) => {
                self.poisoned.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        if let Some(file) = file {
            self.segments
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(file);
        }
        writer.segment = segment;
        writer.offset = start + buf.len() as u64;
        if buf.capacity() <= KEPT_FRAMES_BYTES {
            writer.frames = buf;
        }

        // The index.
        let touched = match indexer.commit((writer.segment, writer.offset)) {
            Ok(t) => t,
            Err(e) => {
                self.poisoned.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        let mut chains = lock(&self.chains);
        for (chain, meta) in touched {
            chains.insert(chain, meta);
        }
        Ok(())
    }

    /// Writes `buf` at `offset` of `segment` and syncs; returns the new file when it created one.
    fn write_durably(
        &self,
        segment: u32,
        offset: u64,
        create: bool,
        buf: &[u8],
    ) -> Result<Option<Arc<File>>, StorageError> {
        let path = segment_path(&self.dir, segment);
        let (file, created) = if create {
            (Arc::new(open_segment(&path, true)?), true)
        } else {
            let files = self.segments.read().unwrap_or_else(|e| e.into_inner());
            let file = files.get(segment as usize).cloned().ok_or_else(|| {
                StorageError::Inconsistent(format!("segment {segment} is not open"))
            })?;
            (file, false)
        };
        file.write_all_at(buf, offset).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))?;
        if created {
            sync_dir(&self.dir.join("segments"))?;
            Ok(Some(file))
        } else {
            Ok(None)
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reading.

    /// Every chain with its size, head and root, by chain id.
    pub fn chains(&self) -> Vec<ChainInfo> {
        let chains = lock(&self.chains);
        let mut out: Vec<ChainInfo> = chains
            .iter()
            .map(|(chain, meta)| ChainInfo {
                chain: chain.clone(),
                size: meta.size(),
                head: meta.head,
                root: TreeHash(meta.frontier.root::<Sha256>()),
            })
            .collect();
        out.sort_by(|a, b| a.chain.cmp(&b.chain));
        out
    }

    /// Number of entries of `chain` (0 when unknown).
    pub fn chain_size(&self, chain: &OrgId) -> u64 {
        lock(&self.chains).get(chain).map_or(0, ChainMeta::size)
    }

    /// The chain's Merkle frontier (empty when the store holds no entry of it), so a writer can
    /// compute the root a batch will produce before appending it.
    pub fn frontier(&self, chain: &OrgId) -> rmledger_schema::merkle::Frontier {
        lock(&self.chains)
            .get(chain)
            .map_or_else(rmledger_schema::merkle::Frontier::new, |meta| {
                meta.frontier.clone()
            })
    }

    /// The chain's info (`None` when the store holds no entry of it).
    pub fn chain(&self, chain: &OrgId) -> Option<ChainInfo> {
        lock(&self.chains).get(chain).map(|meta| ChainInfo {
            chain: chain.clone(),
            size: meta.size(),
            head: meta.head,
            root: TreeHash(meta.frontier.root::<Sha256>()),
        })
    }

    /// Reads and checks one frame.
    fn read(&self, pos: Pos, expect: RecordType) -> Result<Vec<u8>, StorageError> {
        let mut out = None;
        self.read_each(&[pos], expect, |bytes| out = Some(bytes.to_vec()))?;
        out.ok_or_else(|| StorageError::Inconsistent("no frame read".into()))
    }

    /// Reads and checks the frames at `positions` in order, handing each record's bytes to
    /// `each`. Frames that follow each other in one segment (a chain written by one node, a
    /// replicated page) are read with one call of up to [`READ_RUN_BYTES`], so serving a page
    /// costs a few reads instead of one per entry; every frame's header and hash are still
    /// checked.
    fn read_each(
        &self,
        positions: &[Pos],
        expect: RecordType,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), StorageError> {
        let frame_len = |pos: &Pos| FRAME_HEADER as u64 + u64::from(pos.len);
        let mut buf = Vec::new();
        let mut rest = positions;
        while let Some(first) = rest.first() {
            let mut end = first.offset + frame_len(first);
            let mut run = 1;
            for pos in &rest[1..] {
                if pos.segment != first.segment
                    || pos.offset != end
                    || end - first.offset + frame_len(pos) > READ_RUN_BYTES
                {
                    break;
                }
                end += frame_len(pos);
                run += 1;
            }
            let corrupt = |pos: &Pos, detail: String| StorageError::Corrupt {
                segment: pos.segment,
                offset: pos.offset,
                detail,
            };
            let file = {
                let files = self.segments.read().unwrap_or_else(|e| e.into_inner());
                files.get(first.segment as usize).cloned()
            };
            let file =
                file.ok_or_else(|| corrupt(first, "the index points to a missing segment".into()))?;
            buf.clear();
            buf.resize((end - first.offset) as usize, 0);
            file.read_exact_at(&mut buf, first.offset)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => corrupt(
                        first,
                        "the index points beyond the end of the segment".into(),
                    ),
                    _ => StorageError::Io {
                        path: segment_path(&self.dir, first.segment),
                        source: e,
                    },
                })?;
            let mut at = 0usize;
            for pos in &rest[..run] {
                let frame = &buf[at..at + frame_len(pos) as usize];
                at += frame.len();
                let header: &[u8; FRAME_HEADER] = frame[..FRAME_HEADER]
                    .try_into()
                    .map_err(|_| corrupt(pos, "short frame".into()))?;
                let (kind, len, hash) = parse_header(header).map_err(|d| corrupt(pos, d))?;
                if kind != expect || len != pos.len as usize {
                    return Err(corrupt(
                        pos,
                        format!(
                            "frame is a {kind:?} of {len} bytes, the index expects a {expect:?} of {}",
                            pos.len
                        ),
                    ));
                }
                let bytes = &frame[FRAME_HEADER..];
                if *blake3::hash(bytes).as_bytes() != hash {
                    return Err(corrupt(pos, "frame hash mismatch".into()));
                }
                each(bytes);
            }
            rest = &rest[run..];
        }
        Ok(())
    }

    fn pos_value(v: &[u8]) -> Result<Pos, StorageError> {
        Pos::decode(v).ok_or_else(|| StorageError::Inconsistent(format!("bad position {v:02x?}")))
    }

    /// The exact bytes of the entry at `seq` of `chain`.
    pub fn entry(&self, chain: &OrgId, seq: u64) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.entries(chain, seq, 1)?.pop())
    }

    /// Up to `limit` entries of `chain` from `from` on, in order.
    pub fn entries(
        &self,
        chain: &OrgId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut out = Vec::new();
        self.for_each_entry(chain, from, limit, usize::MAX, |bytes| {
            out.push(bytes.to_vec())
        })?;
        Ok(out)
    }

    /// Hands up to `limit` entries of `chain` from `from` on to `each`, in order, without
    /// copying each into its own buffer (serving a page); returns how many. The entries handed
    /// on, each counted with a CBOR byte-string head of at most 5 bytes, stay within
    /// `max_bytes`, except that the first is handed on whatever its size (so a page always
    /// makes progress).
    pub fn for_each_entry(
        &self,
        chain: &OrgId,
        from: u64,
        limit: usize,
        max_bytes: usize,
        each: impl FnMut(&[u8]),
    ) -> Result<usize, StorageError> {
        // Only records below the published size: they are completely written.
        let count = self
            .chain_size(chain)
            .saturating_sub(from)
            .min(limit as u64);
        if count == 0 {
            return Ok(0);
        }
        let records = self.positions.read(chain, from, count)?;
        if records.len() as u64 != count {
            return Err(StorageError::Inconsistent(format!(
                "chain {chain}: the position file ends before seq {}",
                from + records.len() as u64
            )));
        }
        let mut left = max_bytes;
        let mut positions = Vec::with_capacity(records.len());
        for record in &records {
            let size = record.pos.len as usize + 5;
            if size > left && !positions.is_empty() {
                break;
            }
            left = left.saturating_sub(size);
            positions.push(record.pos);
        }
        self.read_each(&positions, RecordType::Entry, each)?;
        Ok(positions.len())
    }

    /// Where the entry with this id is: (chain, seq).
    pub fn position(&self, id: &EntryId) -> Result<Option<(OrgId, u64)>, StorageError> {
        self.positions.lookup(id)
    }

    /// Checks the index's record of a scanned entry (fsck): its position, leaf hash and id in
    /// the chain's position file, and the id's lookup.
    pub fn check_indexed(
        &self,
        record: &ScannedRecord<'_>,
        entry: &Entry,
    ) -> Result<(), StorageError> {
        let (chain, seq) = (entry.chain(), entry.seq());
        let want = PositionRecord {
            pos: Pos {
                segment: record.segment,
                offset: record.offset,
                len: record.bytes.len() as u32,
            },
            leaf: entry.leaf_hash().0,
            id: entry.id(),
        };
        let found = self.positions.read(chain, seq, 1)?;
        if found.first() != Some(&want) {
            return Err(StorageError::Inconsistent(format!(
                "chain {chain}: the position file's record of seq {seq} is {:?}, the segments give {want:?}",
                found.first()
            )));
        }
        let at = self.position(&entry.id())?;
        if at.as_ref() != Some(&(chain.clone(), seq)) {
            return Err(StorageError::Inconsistent(format!(
                "chain {chain}: entry {} at seq {seq} is found at {at:?} by its id",
                entry.id()
            )));
        }
        Ok(())
    }

    fn nodes<'a>(&'a self, chain: &'a OrgId, size: u64) -> Result<ChainNodes<'a>, StorageError> {
        let tree_size = self.chain_size(chain);
        if size > tree_size {
            return Err(StorageError::Proof(ProofError::SizeBeyondTree {
                size,
                tree_size,
            }));
        }
        Ok(ChainNodes {
            index: &self.index,
            positions: &self.positions,
            chain,
        })
    }

    /// The RFC 9162 root of the first `size` entries of `chain`.
    pub fn root(&self, chain: &OrgId, size: u64) -> Result<TreeHash, StorageError> {
        let nodes = self.nodes(chain, size)?;
        merkle::root::<Sha256, _>(&nodes, size)
            .map(TreeHash)
            .map_err(proof_error)
    }

    /// The anchor groups under `tag` (`a` waiting, `w` witnessed) of `chain` whose bound size is
    /// at most `upto`, in bound order, and their common prefix.
    fn anchor_groups(&self, tag: u8, chain: &OrgId, upto: u64) -> (Vec<u8>, sled::Iter) {
        let prefix = chain_key(tag, chain);
        let range = if upto == u64::MAX {
            self.index.scan_prefix(&prefix)
        } else {
            let mut end = prefix.clone();
            end.extend_from_slice(&(upto + 1).to_be_bytes());
            self.index.range(prefix.clone()..end)
        };
        (prefix, range)
    }

    /// Up to `limit` anchors naming `chain` at a size of at most `upto` that are not yet marked
    /// checked ([`Store::anchors_checked`]).
    pub fn unchecked_anchors(
        &self,
        chain: &OrgId,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<AnchorRef>, StorageError> {
        // `a` groups are keyed by their smallest size: those past `upto` hold nothing wanted.
        let (prefix, range) = self.anchor_groups(P_ANCHOR, chain, upto);
        let mut out = Vec::new();
        for item in range {
            let (key, value) = item?;
            let group = decode_anchor_group(key.get(prefix.len()..).unwrap_or_default(), &value)?;
            out.extend(group.anchors_upto(chain, upto));
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Marks anchors of `chain` checked: they are no longer returned by
    /// [`Store::unchecked_anchors`]. Each group holding one is rewritten without it (under its
    /// new smallest size) in one index batch.
    pub fn anchors_checked(
        &self,
        chain: &OrgId,
        checked: &[AnchorRef],
    ) -> Result<(), StorageError> {
        let Some(upto) = checked.iter().map(|a| a.size).max() else {
            return Ok(());
        };
        let done: std::collections::HashSet<(u64, &OrgId, u64)> = checked
            .iter()
            .filter(|a| &a.chain == chain)
            .map(|a| (a.size, &a.witness, a.seq))
            .collect();
        // Read-modify-write of groups: one marker at a time, so two cannot resurrect each
        // other's removals (which would only mean checking an anchor again).
        let _marking = lock(&self.anchor_marks);
        let (prefix, range) = self.anchor_groups(P_ANCHOR, chain, upto);
        let mut batch = sled::Batch::default();
        for item in range {
            let (key, value) = item?;
            let group = decode_anchor_group(key.get(prefix.len()..).unwrap_or_default(), &value)?;
            let mut kept: Vec<GroupedAnchor> = group
                .records
                .iter()
                .filter(|r| !done.contains(&(r.size, &group.witness, r.seq)))
                .copied()
                .collect();
            if kept.len() == group.records.len() {
                continue;
            }
            batch.remove(key);
            insert_anchor_group(&mut batch, P_ANCHOR, chain, &group.witness, &mut kept);
        }
        self.index.apply_batch(batch)?;
        Ok(())
    }

    /// Up to `limit` anchors (from any witness's chain) naming `chain` at a size of at most
    /// `upto`, largest size first (then witness and seq, descending).
    ///
    /// `w` groups are keyed by their largest size. Those at most `upto` are read largest first
    /// until `limit` anchors are held that beat anything a further group can hold; of the groups
    /// past `upto`, which may still hold smaller anchors, the first [`STRADDLING_GROUPS`] are
    /// read (a witness's anchors of a chain grow with the chain, so a group reaching past
    /// `upto` is one of the first there). Bounded work whatever the log holds.
    pub fn anchors_upto(
        &self,
        chain: &OrgId,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<AnchorRef>, StorageError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (prefix, below) = self.anchor_groups(P_WITNESSED, chain, upto);
        let mut found: Vec<AnchorRef> = Vec::new();
        let take = |key: &[u8], value: &[u8], found: &mut Vec<AnchorRef>| {
            let group = decode_anchor_group(key.get(prefix.len()..).unwrap_or_default(), value)?;
            found.extend(group.anchors_upto(chain, upto));
            Ok::<u64, StorageError>(group.bound)
        };
        if upto < u64::MAX {
            let mut start = prefix.clone();
            start.extend_from_slice(&(upto + 1).to_be_bytes());
            for item in self
                .index
                .range(start..prefix_end(&prefix))
                .take(STRADDLING_GROUPS)
            {
                let (key, value) = item?;
                take(&key, &value, &mut found)?;
            }
        }
        let newest_first = |a: &AnchorRef, b: &AnchorRef| {
            (b.size, &b.witness, b.seq).cmp(&(a.size, &a.witness, a.seq))
        };
        for item in below.rev() {
            let (key, value) = item?;
            if found.len() >= limit {
                found.sort_unstable_by(newest_first);
                found.truncate(limit);
                let bound = key
                    .get(prefix.len()..prefix.len() + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(u64::MAX, u64::from_be_bytes);
                if found[limit - 1].size > bound {
                    break;
                }
            }
            take(&key, &value, &mut found)?;
        }
        found.sort_unstable_by(newest_first);
        found.truncate(limit);
        Ok(found)
    }

    /// `PATH(index, D[size])` of RFC 9162 §2.1.3.1.
    pub fn inclusion_proof(
        &self,
        chain: &OrgId,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, StorageError> {
        let nodes = self.nodes(chain, size)?;
        merkle::inclusion_proof::<Sha256, _>(&nodes, index, size).map_err(proof_error)
    }

    /// `PROOF(from, D[to])` of RFC 9162 §2.1.4.1.
    pub fn consistency_proof(
        &self,
        chain: &OrgId,
        from: u64,
        to: u64,
    ) -> Result<Vec<Hash>, StorageError> {
        let nodes = self.nodes(chain, to)?;
        merkle::consistency_proof::<Sha256, _>(&nodes, from, to).map_err(proof_error)
    }

    /// The newest checkpoint stored for `chain` (largest size, then time).
    pub fn latest_checkpoint(&self, chain: &OrgId) -> Result<Option<Checkpoint>, StorageError> {
        let Some(v) = self.index.get(chain_key(P_CKPT, chain))? else {
            return Ok(None);
        };
        let pos = Self::pos_value(&v)?;
        let bytes = self.read(pos, RecordType::Checkpoint)?;
        Checkpoint::decode(&bytes)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                segment: pos.segment,
                offset: pos.offset,
                detail: format!("checkpoint does not decode: {e}"),
            })
    }

    /// Every entry about a certificate (its registration included), in (chain, seq) order.
    pub fn certificate_events(
        &self,
        cert: &CertificateId,
    ) -> Result<Vec<(OrgId, u64)>, StorageError> {
        let prefix = id_key(P_EVENT, cert);
        self.index
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, _) = item?;
                decode_chain_seq(&k[prefix.len()..])
            })
            .collect()
    }

    /// Certificates registered under a catalogue code (normalised as [`RmCode::parse`] does),
    /// optionally of one batch; by (batch, certificate id).
    pub fn certificates_by_code(
        &self,
        code: &str,
        batch: Option<&str>,
    ) -> Result<Vec<CertificateId>, StorageError> {
        let Ok(code) = RmCode::parse(code) else {
            return Ok(Vec::new());
        };
        let mut prefix = code_prefix(code.as_str());
        if let Some(batch) = batch {
            prefix.extend_from_slice(batch.as_bytes());
            prefix.push(0);
        }
        self.index
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, _) = item?;
                k.len()
                    .checked_sub(32)
                    .and_then(|at| EntryId::from_slice(&k[at..]).ok())
                    .ok_or_else(|| StorageError::Inconsistent(format!("bad code key {k:02x?}")))
            })
            .collect()
    }

    /// Every registered certificate, by id.
    pub fn all_certificates(&self) -> Result<Vec<CertificateId>, StorageError> {
        self.index
            .scan_prefix([P_CERT])
            .map(|item| {
                let (k, _) = item?;
                EntryId::from_slice(&k[1..]).map_err(|_| {
                    StorageError::Inconsistent(format!("bad certificate key {k:02x?}"))
                })
            })
            .collect()
    }

    /// Calls `f` with every record of the log in order, up to what was acknowledged when the
    /// scan reached each segment. Every frame's hash is checked; a bad frame is
    /// [`StorageError::Corrupt`]. Stops early when `f` returns `ControlFlow::Break`.
    pub fn scan<F>(&self, mut f: F) -> Result<(), StorageError>
    where
        F: FnMut(ScannedRecord<'_>) -> ControlFlow<()>,
    {
        let mut segment = 0u32;
        loop {
            let (last, end) = {
                let writer = lock(&self.writer);
                (writer.segment, writer.offset)
            };
            if segment > last {
                return Ok(());
            }
            let path = segment_path(&self.dir, segment);
            let end = (segment == last).then_some(end);
            let mut reader = SegmentReader::open(&path, 0, end)?;
            loop {
                match reader.next()? {
                    Step::End => break,
                    Step::Bad { offset, detail } => {
                        return Err(StorageError::Corrupt {
                            segment,
                            offset,
                            detail,
                        });
                    }
                    Step::Record {
                        offset,
                        kind,
                        bytes,
                    } => {
                        let record = ScannedRecord {
                            segment,
                            offset,
                            kind,
                            bytes: &bytes,
                        };
                        if f(record).is_break() {
                            return Ok(());
                        }
                    }
                }
            }
            segment += 1;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
