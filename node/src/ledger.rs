//! The node's live view of the ledger: the store, the federation's membership (folded from the
//! registrar's chain) and certificate states (folded on demand from the entries about them).
//!
//! Everything here is derived from the store and can be dropped and rebuilt; the write path
//! (`append`) and replication update it only after their entries are durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rmledger_schema::checkpoint::Checkpoint;
use rmledger_schema::entry::Entry;
use rmledger_schema::federation::{Genesis, Membership};
use rmledger_schema::ids::{CertificateId, OrgId};
use rmledger_schema::lifecycle::CertificateState;

use crate::certmaps::CertMaps;
use crate::storage::{StorageError, Store};

/// How many folded certificates are kept in memory; past it the cache starts afresh.
const CERTIFICATE_CACHE: usize = 4096;

/// Why the ledger could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored entry {chain}/{seq} does not decode: {detail}")]
    BadEntry {
        chain: OrgId,
        seq: u64,
        detail: String,
    },
    #[error("registrar entry {seq} is not valid: {detail}")]
    Registrar { seq: u64, detail: String },
    #[error(
        "chain {chain} disagrees with its last checkpoint: {detail}; the stored data was changed or lost — restore the data directory from a backup or a peer, then run `rmledger-node fsck`"
    )]
    CheckpointMismatch { chain: OrgId, detail: String },
    #[error("certificate map: {0}")]
    CertMap(String),
}

/// The node's view of the ledger. Shared by the HTTP handlers and the writer.
pub struct Ledger {
    store: Arc<Store>,
    genesis: Genesis,
    org: OrgId,
    membership: RwLock<Membership>,
    /// The seqs of the registrar chain's membership entries applied so far (what a proof
    /// bundle carries of that chain).
    membership_seqs: Mutex<Vec<u64>>,
    certificates: Mutex<HashMap<CertificateId, Arc<CertificateState>>>,
    /// Each chain's certificate map (whose root every checkpoint signs).
    cert_maps: CertMaps,
    /// Bumped after each commit of this node's own chain (replication tells peers).
    own_commits: tokio::sync::watch::Sender<u64>,
}

impl Ledger {
    /// Opens the ledger over a store: folds the membership and checks every chain's stored
    /// tree against its last checkpoint (refusing to start if they disagree).
    pub fn open(store: Arc<Store>, genesis: Genesis, org: OrgId) -> Result<Self, LedgerError> {
        let mut membership = Membership::new(&genesis);
        let mut membership_seqs = Vec::new();
        let registrar = genesis.registrar().clone();
        for seq in 0..store.chain_size(&registrar) {
            let entry = read_entry(&store, &registrar, seq)?;
            let detail = |e: &dyn std::fmt::Display| LedgerError::Registrar {
                seq,
                detail: e.to_string(),
            };
            membership.verify_entry(&entry).map_err(|e| detail(&e))?;
            membership.apply(&entry).map_err(|e| detail(&e))?;
            if entry.record().changes_membership() {
                membership_seqs.push(seq);
            }
        }
        let cert_maps = CertMaps::rebuild(&store)?;
        let ledger = Self {
            cert_maps,
            store,
            genesis,
            org,
            membership: RwLock::new(membership),
            membership_seqs: Mutex::new(membership_seqs),
            certificates: Mutex::new(HashMap::new()),
            own_commits: tokio::sync::watch::Sender::new(0),
        };
        for info in ledger.store.chains() {
            ledger.check_against_checkpoint(&info.chain)?;
        }
        Ok(ledger)
    }

    /// A chain's stored tree must reproduce its latest checkpoint's root, head and certificate
    /// map root, and the
    /// checkpoint must be signed by the chain's organisation.
    fn check_against_checkpoint(&self, chain: &OrgId) -> Result<(), LedgerError> {
        let Some(checkpoint) = self.store.latest_checkpoint(chain)? else {
            return Ok(());
        };
        let mismatch = |detail: String| LedgerError::CheckpointMismatch {
            chain: chain.clone(),
            detail,
        };
        let body = checkpoint.body();
        let size = self.store.chain_size(chain);
        if body.size > size {
            return Err(mismatch(format!(
                "the checkpoint covers {} entries but only {size} are stored",
                body.size
            )));
        }
        let root = self.store.root(chain, body.size)?;
        if root != body.root {
            return Err(mismatch(format!(
                "root at size {} is {root}, the checkpoint signs {}",
                body.size, body.root
            )));
        }
        let head = read_entry(&self.store, chain, body.size - 1)?.id();
        if head != body.head {
            return Err(mismatch(format!(
                "entry {} is {head}, the checkpoint names {}",
                body.size - 1,
                body.head
            )));
        }
        let certs = self.cert_maps.root_at(&self.store, chain, body.size)?;
        if certs != body.certs {
            return Err(mismatch(format!(
                "the certificate map at size {} has root {certs}, the checkpoint signs {}",
                body.size, body.certs
            )));
        }
        self.check_checkpoint_signature(&checkpoint)
            .map_err(mismatch)
    }

    /// Verifies a checkpoint's signature with a key its chain's organisation held at its time.
    pub fn check_checkpoint_signature(&self, checkpoint: &Checkpoint) -> Result<(), String> {
        let membership = self.membership();
        let body = checkpoint.body();
        let (member, key) = membership
            .key(&checkpoint.kid())
            .ok_or_else(|| format!("checkpoint signed by unknown key {}", checkpoint.kid()))?;
        if member.org != body.chain {
            return Err(format!(
                "checkpoint of {} signed by a key of {}",
                body.chain, member.org
            ));
        }
        checkpoint
            .verify_signature(&key.verifying_key)
            .map_err(|e| e.to_string())
    }

    /// Each chain's certificate map.
    pub fn cert_maps(&self) -> &CertMaps {
        &self.cert_maps
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// This node's organisation.
    pub fn org(&self) -> &OrgId {
        &self.org
    }

    pub fn utc_offset_minutes(&self) -> i32 {
        self.genesis.body().utc_offset_minutes
    }

    /// A snapshot of the membership.
    /// The seqs of the registrar chain's membership entries the ledger has applied, in order.
    pub fn membership_seqs(&self) -> Vec<u64> {
        self.membership_seqs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn membership(&self) -> std::sync::RwLockReadGuard<'_, Membership> {
        self.membership
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The certificate's state folded from every stored entry about it.
    pub fn certificate(
        &self,
        id: &CertificateId,
    ) -> Result<Option<Arc<CertificateState>>, LedgerError> {
        if let Some(state) = self.cache().get(id) {
            return Ok(Some(state.clone()));
        }
        let Some(state) = self.fold_certificate(id)? else {
            return Ok(None);
        };
        let state = Arc::new(state);
        let mut cache = self.cache();
        if cache.len() >= CERTIFICATE_CACHE {
            cache.clear();
        }
        cache.insert(*id, state.clone());
        Ok(Some(state))
    }

    fn fold_certificate(
        &self,
        id: &CertificateId,
    ) -> Result<Option<CertificateState>, LedgerError> {
        let mut registration = None;
        let mut others = Vec::new();
        for (chain, seq) in self.store.certificate_events(id)? {
            let entry = read_entry(&self.store, &chain, seq)?;
            if entry.id() == *id {
                registration = Some(entry);
            } else {
                others.push(entry);
            }
        }
        let Some(registration) = registration else {
            return Ok(None);
        };
        CertificateState::fold(&registration, &others, self.utc_offset_minutes())
            .map(Some)
            .map_err(|e| LedgerError::BadEntry {
                chain: registration.chain().clone(),
                seq: registration.seq(),
                detail: e.to_string(),
            })
    }

    /// A receiver that sees a new value after each commit of this node's own chain.
    pub fn subscribe_own_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.own_commits.subscribe()
    }

    /// Updates the derived state after `entries` became durable.
    pub fn committed(&self, entries: &[Entry]) {
        if entries.iter().any(|e| e.chain() == &self.org) {
            self.own_commits.send_modify(|n| *n += 1);
        }
        if let Err(e) = self.cert_maps.apply(&self.store, entries) {
            // The next checkpoint check or bundle replays the map from the store.
            tracing::error!(error = %e, "updating a certificate map failed");
        }
        let offset = self.utc_offset_minutes();
        let mut cache = self.cache();
        for entry in entries {
            if entry.chain() == self.genesis.registrar() {
                let mut membership = self
                    .membership
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Err(e) = membership.apply(entry) {
                    // The writer and replication check registrar entries before storing them.
                    tracing::error!(entry = %entry.id(), error = %e, "a stored registrar entry did not apply");
                } else if entry.record().changes_membership() {
                    self.membership_seqs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(entry.seq());
                }
            }
            for cert in entry.certificates() {
                if let Some(state) = cache.get_mut(&cert) {
                    Arc::make_mut(state).apply(entry, offset);
                }
            }
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<CertificateId, Arc<CertificateState>>> {
        self.certificates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads and decodes a stored entry.
pub fn read_entry(store: &Store, chain: &OrgId, seq: u64) -> Result<Entry, LedgerError> {
    let bytes = store
        .entry(chain, seq)?
        .ok_or_else(|| LedgerError::BadEntry {
            chain: chain.clone(),
            seq,
            detail: "missing".into(),
        })?;
    Entry::decode(&bytes).map_err(|e| LedgerError::BadEntry {
        chain: chain.clone(),
        seq,
        detail: e.to_string(),
    })
}
