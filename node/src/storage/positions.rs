//! The per-entry part of the index, kept out of sled: one append-only position file per chain
//! (`index/chains/<chain>.pos`) and an in-memory map from entry ids to (chain, seq).
//!
//! Every entry adds one fixed-width record to its chain's file, so the record of seq `n` is at
//! byte `RECORD_LEN · n` and a lookup is one `pread`. A sled key costs ~20 µs of CPU (its page
//! cache and log writer) and the index wrote two per entry; a record is one `pwrite` per chain
//! per batch. The files are never synced: like sled they are derived from the segments, and
//! [`super::Store::open`] reconciles them with sled's chain sizes (truncating what lies beyond,
//! re-deriving what is missing from the segments).
//!
//! The id map holds the first 8 bytes of every id (ids are BLAKE3 hashes, so the prefix is
//! already uniform and needs no further hashing); a hit is confirmed against the full id in the
//! record, and the rare ids whose prefix another id already holds are kept whole on the side.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rmledger_schema::ids::{EntryId, OrgId};
use rmledger_schema::merkle::Hash;

use super::{FRAME_HEADER, Pos, StorageError, io_err};

/// Bytes of one position record: segment u32, frame offset u64, record length u32, the entry's
/// RFC 9162 leaf hash (32), its id (32); integers little-endian.
pub(super) const RECORD_LEN: u64 = 80;

/// Suffix of a position file.
const EXTENSION: &str = "pos";

/// Where an entry is and what the index needs of it without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PositionRecord {
    pub pos: Pos,
    pub leaf: Hash,
    pub id: EntryId,
}

impl PositionRecord {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pos.segment.to_le_bytes());
        out.extend_from_slice(&self.pos.offset.to_le_bytes());
        out.extend_from_slice(&self.pos.len.to_le_bytes());
        out.extend_from_slice(&self.leaf);
        out.extend_from_slice(self.id.as_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        let mut leaf = [0u8; 32];
        leaf.copy_from_slice(&b[16..48]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[48..80]);
        Self {
            pos: Pos {
                segment: u32::from_le_bytes(b[..4].try_into().unwrap_or_default()),
                offset: u64::from_le_bytes(b[4..12].try_into().unwrap_or_default()),
                len: u32::from_le_bytes(b[12..16].try_into().unwrap_or_default()),
            },
            leaf,
            id: EntryId(id),
        }
    }
}

/// Hashes an id prefix that is already uniformly distributed: the identity.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in so the hasher stays correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn prefix(id: &EntryId) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_le_bytes(p)
}

/// Entry ids → (chain number, seq).
#[derive(Default)]
struct IdMap {
    names: Vec<OrgId>,
    numbers: HashMap<OrgId, u32>,
    by_prefix: HashMap<u64, (u32, u64), BuildHasherDefault<PrefixHasher>>,
    /// Ids whose 8-byte prefix another id took first.
    collided: HashMap<EntryId, (u32, u64)>,
}

impl IdMap {
    fn number(&mut self, chain: &OrgId) -> u32 {
        if let Some(&n) = self.numbers.get(chain) {
            return n;
        }
        let n = self.names.len() as u32;
        self.names.push(chain.clone());
        self.numbers.insert(chain.clone(), n);
        n
    }

    fn insert(&mut self, chain: u32, seq: u64, id: &EntryId) {
        match self.by_prefix.entry(prefix(id)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((chain, seq));
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(*id, (chain, seq));
            }
        }
    }
}

/// What [`Positions::load`] found for one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Short {
    pub chain: OrgId,
    /// Intact records kept.
    pub valid: u64,
    /// Records the chain needs (its size in sled).
    pub size: u64,
}

/// The position files of a store and its id map.
pub(super) struct Positions {
    dir: PathBuf,
    files: RwLock<HashMap<OrgId, Arc<File>>>,
    ids: RwLock<IdMap>,
}

impl Positions {
    /// Opens (creating) the directory `dir`; loads nothing.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files: RwLock::new(HashMap::new()),
            ids: RwLock::new(IdMap::default()),
        })
    }

    fn path(&self, chain: &OrgId) -> PathBuf {
        self.dir.join(format!("{chain}.{EXTENSION}"))
    }

    fn file(&self, chain: &OrgId, create: bool) -> Result<Option<Arc<File>>, StorageError> {
        if let Some(f) = self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(chain)
        {
            return Ok(Some(f.clone()));
        }
        let path = self.path(chain);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)
        {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        Ok(Some(files.entry(chain.clone()).or_insert(file).clone()))
    }

    /// Loads every position file against the chain sizes sled holds (`sizes`: size and head
    /// per chain) and the segment lengths `lens`: keeps each file's intact prefix of at most
    /// `size` records (a record must point inside a segment, after the one before it), cuts the
    /// rest off, and fills the id map from what is kept. Returns the chains with fewer intact
    /// records than their size, which the caller re-derives from the segments.
    ///
    /// A chain whose full file ends in another entry than sled's head is
    /// [`StorageError::Inconsistent`]: sled and the files disagree, rebuild.
    pub fn load(
        &self,
        sizes: &HashMap<OrgId, (u64, Option<EntryId>)>,
        lens: &[u64],
    ) -> Result<Vec<Short>, StorageError> {
        let mut short = Vec::new();
        let mut seen = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let item = item.map_err(io_err(&self.dir))?;
            let name = item.file_name();
            let chain = name
                .to_str()
                .and_then(|n| n.strip_suffix(&format!(".{EXTENSION}")))
                .and_then(|n| OrgId::new(n).ok())
                .ok_or_else(|| {
                    StorageError::Inconsistent(format!(
                        "unexpected file {name:?} in {}",
                        self.dir.display()
                    ))
                })?;
            let (size, head) = sizes.get(&chain).copied().unwrap_or((0, None));
            let valid = self.load_chain(&chain, size, head, lens)?;
            if valid < size {
                short.push(Short {
                    chain: chain.clone(),
                    valid,
                    size,
                });
            }
            seen.push(chain);
        }
        for (chain, (size, _)) in sizes {
            if *size > 0 && !seen.contains(chain) {
                short.push(Short {
                    chain: chain.clone(),
                    valid: 0,
                    size: *size,
                });
            }
        }
        Ok(short)
    }

    fn load_chain(
        &self,
        chain: &OrgId,
        size: u64,
        head: Option<EntryId>,
        lens: &[u64],
    ) -> Result<u64, StorageError> {
        let path = self.path(chain);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let mut ids = self.ids.write().unwrap_or_else(|e| e.into_inner());
        let number = ids.number(chain);
        let mut valid = 0u64;
        let mut last: Option<PositionRecord> = None;
        for chunk in bytes.chunks_exact(RECORD_LEN as usize) {
            if valid == size {
                break;
            }
            let record = PositionRecord::decode(chunk);
            let Pos {
                segment,
                offset,
                len,
            } = record.pos;
            let inside = lens
                .get(segment as usize)
                .is_some_and(|&l| len > 0 && offset + FRAME_HEADER as u64 + u64::from(len) <= l);
            let after = last.is_none_or(|p| (segment, offset) > (p.pos.segment, p.pos.offset));
            if !inside || !after {
                break;
            }
            ids.insert(number, valid, &record.id);
            last = Some(record);
            valid += 1;
        }
        drop(ids);
        if valid == size && size > 0 && last.map(|r| r.id) != head {
            return Err(StorageError::Inconsistent(format!(
                "position file of chain {chain} ends in another entry than the index's head"
            )));
        }
        if bytes.len() as u64 != valid * RECORD_LEN {
            tracing::warn!(
                %chain,
                records = valid,
                file_bytes = bytes.len(),
                "position file does not match the index: cutting it to its intact records"
            );
            let file = self.file(chain, false)?.ok_or_else(|| {
                StorageError::Inconsistent(format!("position file of {chain} vanished"))
            })?;
            file.set_len(valid * RECORD_LEN).map_err(io_err(&path))?;
        }
        Ok(valid)
    }

    /// Writes consecutive records of `chain` from `first` on (already encoded).
    pub fn write(&self, chain: &OrgId, first: u64, records: &[u8]) -> Result<(), StorageError> {
        let file = self
            .file(chain, true)?
            .ok_or_else(|| StorageError::Inconsistent(format!("no position file for {chain}")))?;
        file.write_all_at(records, first * RECORD_LEN)
            .map_err(io_err(&self.path(chain)))
    }

    /// Adds ids of `chain` from `first` on to the id map (after their records are written).
    pub fn insert_ids(&self, chain: &OrgId, first: u64, ids: &[EntryId]) {
        let mut map = self.ids.write().unwrap_or_else(|e| e.into_inner());
        let number = map.number(chain);
        for (seq, id) in (first..).zip(ids) {
            map.insert(number, seq, id);
        }
    }

    /// Up to `count` records of `chain` from `from` on, in one read; fewer when the file ends.
    /// The caller reads only records it knows are written (below the published chain size).
    pub fn read(
        &self,
        chain: &OrgId,
        from: u64,
        count: u64,
    ) -> Result<Vec<PositionRecord>, StorageError> {
        let Some(file) = self.file(chain, false)? else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; (count * RECORD_LEN) as usize];
        let mut filled = 0usize;
        let offset = from * RECORD_LEN;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&self.path(chain))(e)),
            }
        }
        Ok(buf[..filled]
            .chunks_exact(RECORD_LEN as usize)
            .map(PositionRecord::decode)
            .collect())
    }

    /// Where the entry with this id is: a prefix hit is confirmed against the id in its record.
    pub fn lookup(&self, id: &EntryId) -> Result<Option<(OrgId, u64)>, StorageError> {
        let (hit, collided) = {
            let map = self.ids.read().unwrap_or_else(|e| e.into_inner());
            let name = |(n, seq): (u32, u64)| map.names.get(n as usize).map(|c| (c.clone(), seq));
            (
                map.by_prefix.get(&prefix(id)).copied().and_then(name),
                map.collided.get(id).copied().and_then(name),
            )
        };
        if let Some((chain, seq)) = hit
            && self.read(&chain, seq, 1)?.first().map(|r| r.id) == Some(*id)
        {
            return Ok(Some((chain, seq)));
        }
        Ok(collided)
    }
}
