//! Each chain's certificate map ([`rmledger_schema::certmap`]), kept in memory and up to date
//! as entries are stored: rebuilt from the stored entries at start-up, advanced by the writer
//! before it signs a checkpoint of this node's own chain (the checkpoint carries the root), and
//! by replication after it stores a peer's entries. Checkpoint checks and proof bundles ask for
//! the map at a checkpoint's size.
//!
//! The maps are derived state: nothing here is stored, and any map can be replayed from the
//! entries. The few recent versions of each map are kept as snapshots (cheap: the map is
//! persistent, a clone shares all but the changed paths), so the map at a recent checkpoint's
//! size is at hand; an older size is replayed from the store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rmledger_schema::certmap::CertMap;
use rmledger_schema::entry::Entry;
use rmledger_schema::ids::{OrgId, TreeHash};

use crate::ledger::LedgerError;
use crate::storage::Store;

/// How many past versions of each chain's map are kept.
const SNAPSHOTS: usize = 16;

/// Entries read from the store at a time when replaying a map.
const PAGE: usize = 1024;

/// One chain's map at `size` entries, and recent earlier versions.
#[derive(Default)]
struct ChainMap {
    size: u64,
    map: CertMap,
    snapshots: VecDeque<(u64, CertMap)>,
}

impl ChainMap {
    fn snapshot(&mut self) {
        if self
            .snapshots
            .back()
            .is_some_and(|(size, _)| *size == self.size)
        {
            return;
        }
        if self.snapshots.len() == SNAPSHOTS {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back((self.size, self.map.clone()));
    }

    /// Keeps a replayed earlier version among the snapshots, in size order.
    fn keep(&mut self, size: u64, map: &CertMap) {
        if size >= self.size || self.snapshots.iter().any(|(s, _)| *s == size) {
            return;
        }
        if self.snapshots.len() == SNAPSHOTS {
            self.snapshots.pop_front();
        }
        let at = self.snapshots.partition_point(|(s, _)| *s < size);
        self.snapshots.insert(at, (size, map.clone()));
    }

    /// The newest version at or before `size`: the map itself, a snapshot, or the empty map.
    fn at_or_before(&self, size: u64) -> (u64, CertMap) {
        if self.size <= size {
            return (self.size, self.map.clone());
        }
        self.snapshots
            .iter()
            .rev()
            .find(|(s, _)| *s <= size)
            .cloned()
            .unwrap_or_default()
    }
}

/// Every chain's certificate map.
#[derive(Default)]
pub struct CertMaps {
    chains: Mutex<HashMap<OrgId, ChainMap>>,
}

impl CertMaps {
    /// Builds every chain's map from the stored entries, with a snapshot at the size of the
    /// chain's latest checkpoint (which start-up then checks).
    pub fn rebuild(store: &Store) -> Result<Self, LedgerError> {
        let maps = Self::default();
        for info in store.chains() {
            let chain = info.chain;
            let checkpoint_size = store.latest_checkpoint(&chain)?.map(|c| c.body().size);
            let mut chain_map = ChainMap::default();
            if let Some(size) = checkpoint_size.filter(|s| *s <= info.size) {
                chain_map.map = replay(store, &chain, (0, CertMap::new()), size)?;
                chain_map.size = size;
                chain_map.snapshot();
            }
            chain_map.map = replay(
                store,
                &chain,
                (chain_map.size, chain_map.map.clone()),
                info.size,
            )?;
            chain_map.size = info.size;
            maps.lock().insert(chain, chain_map);
        }
        Ok(maps)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<OrgId, ChainMap>> {
        self.chains.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts stored `entries` (each chain's in seq order). Entries the map already counts are
    /// skipped (the writer counted them before storing them); a gap is filled from the store.
    pub fn apply(&self, store: &Store, entries: &[Entry]) -> Result<(), LedgerError> {
        let mut chains = self.lock();
        // Runs of one chain's entries (a replicated page is one run): one map lookup and one
        // snapshot per run, not per entry.
        for run in entries.chunk_by(|a, b| a.chain() == b.chain()) {
            let chain = run[0].chain();
            let chain_map = match chains.get_mut(chain) {
                Some(chain_map) => chain_map,
                None => chains.entry(chain.clone()).or_default(),
            };
            for entry in run {
                if entry.seq() < chain_map.size {
                    continue;
                }
                seek(store, chain, chain_map, entry.seq())?;
                chain_map.map.record_entry(entry);
                chain_map.size += 1;
            }
            chain_map.snapshot();
        }
        Ok(())
    }

    /// For the writer: counts `entries`, the next entries of one chain (not stored yet), and
    /// returns the root of the chain's map after them, for the checkpoint that covers them.
    pub fn advance(&self, store: &Store, entries: &[Entry]) -> Result<TreeHash, LedgerError> {
        let Some(first) = entries.first() else {
            return Err(LedgerError::CertMap("no entries to count".into()));
        };
        let chain = first.chain();
        let mut chains = self.lock();
        let chain_map = chains.entry(chain.clone()).or_default();
        // Normally the map is exactly at the first new seq; if an earlier batch was signed but
        // never stored, step back to what the store holds.
        seek(store, chain, chain_map, first.seq())?;
        for entry in entries {
            debug_assert_eq!(entry.seq(), chain_map.size, "a writer batch is consecutive");
            chain_map.map.record_entry(entry);
            chain_map.size += 1;
        }
        chain_map.snapshot();
        Ok(chain_map.map.root())
    }

    /// The chain's map over its first `size` entries.
    pub fn map_at(&self, store: &Store, chain: &OrgId, size: u64) -> Result<CertMap, LedgerError> {
        let start = match self.lock().get(chain) {
            Some(chain_map) => chain_map.at_or_before(size),
            None => (0, CertMap::new()),
        };
        if start.0 == size {
            return Ok(start.1);
        }
        let map = replay(store, chain, start, size)?;
        // Kept, so the next checkpoint check or bundle at this size does not replay again.
        if let Some(chain_map) = self.lock().get_mut(chain) {
            chain_map.keep(size, &map);
        }
        Ok(map)
    }

    /// The root of the chain's map over its first `size` entries.
    pub fn root_at(
        &self,
        store: &Store,
        chain: &OrgId,
        size: u64,
    ) -> Result<TreeHash, LedgerError> {
        self.map_at(store, chain, size).map(|m| m.root())
    }
}

/// Moves `chain_map` to exactly `size` entries, forwards from the store or back to a snapshot.
fn seek(
    store: &Store,
    chain: &OrgId,
    chain_map: &mut ChainMap,
    size: u64,
) -> Result<(), LedgerError> {
    if chain_map.size == size {
        return Ok(());
    }
    let start = chain_map.at_or_before(size);
    chain_map.map = replay(store, chain, start, size)?;
    chain_map.size = size;
    chain_map.snapshots.retain(|(s, _)| *s <= size);
    Ok(())
}

/// The map `from` (at its size) advanced with stored entries up to `to`.
fn replay(
    store: &Store,
    chain: &OrgId,
    from: (u64, CertMap),
    to: u64,
) -> Result<CertMap, LedgerError> {
    let (mut size, mut map) = from;
    while size < to {
        let limit = usize::try_from(to - size).unwrap_or(usize::MAX).min(PAGE);
        let page = store.entries(chain, size, limit)?;
        if page.is_empty() {
            return Err(LedgerError::BadEntry {
                chain: chain.clone(),
                seq: size,
                detail: "missing".into(),
            });
        }
        for bytes in page {
            let entry = Entry::decode(&bytes).map_err(|e| LedgerError::BadEntry {
                chain: chain.clone(),
                seq: size,
                detail: e.to_string(),
            })?;
            map.record_entry(&entry);
            size += 1;
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use rmledger_schema::records::{Record, Shipped};
    use rmledger_schema::testkit::{TestFederation, org, serials, soil_certificate};

    use super::*;
    use crate::storage::{Batch, StoreOptions};

    /// acme-rm's chain, `batches` batches of a registration and a shipment each, stored one
    /// batch at a time with the checkpoint over it.
    fn stored(batches: usize) -> (tempfile::TempDir, Store, TestFederation) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
        let mut fed = TestFederation::with_members();
        for i in 0..batches {
            let cert = fed
                .append(
                    "acme-rm",
                    Record::BatchRegistered(soil_certificate(&format!("b{i}"))),
                )
                .clone();
            let shipped = fed.append(
                "acme-rm",
                Record::Shipped(Shipped {
                    to: org("nclab"),
                    cert: cert.id(),
                    serials: serials("S-0001"),
                }),
            );
            store
                .append(&Batch {
                    entries: vec![cert, shipped],
                    checkpoints: vec![fed.checkpoint("acme-rm")],
                })
                .unwrap();
        }
        (tmp, store, fed)
    }

    fn root_over(fed: &TestFederation, size: usize) -> TreeHash {
        let mut map = CertMap::new();
        for entry in &fed.chain("acme-rm")[..size] {
            map.record_entry(entry);
        }
        map.root()
    }

    #[test]
    fn rebuilt_maps_give_the_root_at_every_size() {
        let (_tmp, store, fed) = stored(SNAPSHOTS + 4);
        let maps = CertMaps::rebuild(&store).unwrap();
        let chain = org("acme-rm");
        let size = fed.chain("acme-rm").len();
        assert_eq!(
            maps.root_at(&store, &chain, size as u64).unwrap(),
            fed.checkpoint("acme-rm").body().certs
        );
        // Older sizes than any snapshot are replayed from the store.
        for at in [0, 1, 2, 7, size - 1] {
            assert_eq!(
                maps.root_at(&store, &chain, at as u64).unwrap(),
                root_over(&fed, at),
                "size {at}"
            );
        }
    }

    #[test]
    fn the_writer_advances_ahead_of_the_store_and_steps_back() {
        let (_tmp, store, mut fed) = stored(2);
        let maps = CertMaps::rebuild(&store).unwrap();
        let chain = org("acme-rm");
        let stored_size = store.chain_size(&chain);
        let next = fed.append(
            "acme-rm",
            Record::BatchRegistered(soil_certificate("unstored")),
        );
        // Counted before it is stored: the checkpoint over it carries this root.
        let root = maps.advance(&store, std::slice::from_ref(&next)).unwrap();
        assert_eq!(root, fed.checkpoint("acme-rm").body().certs);
        // The stored checkpoint's size is still served from a snapshot.
        assert_eq!(
            maps.root_at(&store, &chain, stored_size).unwrap(),
            root_over(&fed, stored_size as usize)
        );
        // Committing it later is not counted twice.
        store
            .append(&Batch {
                entries: vec![next.clone()],
                checkpoints: vec![fed.checkpoint("acme-rm")],
            })
            .unwrap();
        maps.apply(&store, std::slice::from_ref(&next)).unwrap();
        assert_eq!(maps.root_at(&store, &chain, stored_size + 1).unwrap(), root);
        // A batch counted but never stored: the next batch at the same seq steps back first.
        let lost = fed.append("acme-rm", Record::BatchRegistered(soil_certificate("lost")));
        maps.advance(&store, std::slice::from_ref(&lost)).unwrap();
        fed.chains.get_mut(&chain).unwrap().pop();
        let instead = fed.append(
            "acme-rm",
            Record::BatchRegistered(soil_certificate("instead")),
        );
        assert_eq!(instead.seq(), lost.seq());
        let root = maps
            .advance(&store, std::slice::from_ref(&instead))
            .unwrap();
        assert_eq!(root, fed.checkpoint("acme-rm").body().certs);
    }
}
