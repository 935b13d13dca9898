//! Proof bundles: everything needed to check one certificate's life offline, against nothing
//! but the pinned federation id.
//!
//! A bundle carries the genesis, the registrar's whole chain (the membership), every entry of
//! the certificate's life each with a receipt (inclusion proof + signed checkpoint of its
//! chain), and anchors that witness those checkpoints. [`Bundle::verify`] checks every
//! signature with `verify_strict`, the authorisation of every signer at its entry's time, the
//! links between consecutive entries of a chain, every proof against a signed root, and the
//! anchors; it returns the verified entries for the lifecycle fold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cbor::{self, CborError};
use crate::checkpoint::{Checkpoint, CheckpointError, Receipt};
use crate::entry::{Entry, EntryError};
use crate::federation::{FederationError, Genesis, Membership};
use crate::ids::{CertificateId, FederationId, OrgId, TreeHash};
use crate::merkle::{self, Sha256};
use crate::records::{Blob, Record};

/// The largest bundle accepted, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024 * 1024;

/// One entry with its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    pub entry: Blob,
    pub receipt: Blob,
}

/// An anchor entry witnessing a chain, its receipt on the witness's chain, and the consistency
/// proof from the anchored size to the size of the anchored chain's checkpoint in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleAnchor {
    pub entry: Blob,
    pub receipt: Blob,
    pub consistency: Vec<TreeHash>,
}

/// The wire form. Field order is canonical key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    #[serde(rename = "v")]
    pub version: u64,
    pub cert: CertificateId,
    pub anchors: Vec<BundleAnchor>,
    /// The certificate's entries, each with a receipt.
    pub entries: Vec<BundleEntry>,
    pub genesis: Blob,
    /// The registrar's chain from seq 0.
    pub registrar: Vec<Blob>,
    /// The registrar chain's checkpoint, whose size is the number of registrar entries.
    pub registrar_checkpoint: Blob,
}

/// Why a bundle does not verify. Each variant names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("bundle encoding: {0}")]
    Encoding(#[from] CborError),
    #[error("unsupported bundle version {0}")]
    Version(u64),
    #[error("genesis: {0}")]
    Genesis(FederationError),
    #[error("the bundle is for federation {found}, but the pinned federation is {pinned}")]
    WrongFederation {
        pinned: FederationId,
        found: FederationId,
    },
    #[error("registrar entry {index}: {detail}")]
    Registrar { index: usize, detail: String },
    #[error("entry {index}: {detail}")]
    Entry { index: usize, detail: String },
    #[error("anchor {index}: {detail}")]
    Anchor { index: usize, detail: String },
    #[error("the bundle holds no entry registering certificate {0}")]
    NoRegistration(CertificateId),
}

/// What a verified bundle establishes.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    pub genesis: Genesis,
    pub membership: Membership,
    /// The certificate's entries, verified, in (time, chain, seq) order.
    pub entries: Vec<Entry>,
    /// The newest verified checkpoint of each chain involved.
    pub checkpoints: BTreeMap<OrgId, Checkpoint>,
    /// Verified anchors: (witness chain, anchored chain, anchored size).
    pub anchors: Vec<(OrgId, OrgId, u64)>,
}

impl Bundle {
    pub fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        let bundle: Bundle = cbor::from_canonical(bytes, MAX_BUNDLE_BYTES)?;
        if bundle.version != 1 {
            return Err(BundleError::Version(bundle.version));
        }
        Ok(bundle)
    }

    pub fn encode(&self) -> Result<Vec<u8>, BundleError> {
        Ok(cbor::to_canonical(self)?)
    }

    /// Verifies the bundle against the pinned federation id. Nothing in it is trusted before
    /// it is checked.
    pub fn verify(&self, pinned: FederationId) -> Result<VerifiedBundle, BundleError> {
        let genesis = Genesis::decode(&self.genesis.0).map_err(BundleError::Genesis)?;
        if genesis.id() != pinned {
            return Err(BundleError::WrongFederation {
                pinned,
                found: genesis.id(),
            });
        }
        let membership = self.verify_registrar(&genesis)?;
        let mut checkpoints: BTreeMap<OrgId, Checkpoint> = BTreeMap::new();
        let registrar_checkpoint =
            Checkpoint::decode(&self.registrar_checkpoint.0).map_err(|e| {
                BundleError::Registrar {
                    index: 0,
                    detail: format!("checkpoint: {e}"),
                }
            })?;
        checkpoints.insert(genesis.registrar().clone(), registrar_checkpoint);

        let mut entries = Vec::with_capacity(self.entries.len());
        for (index, item) in self.entries.iter().enumerate() {
            let fail = |detail: String| BundleError::Entry { index, detail };
            let entry = verify_with_receipt(
                &membership,
                &item.entry.0,
                &item.receipt.0,
                &mut checkpoints,
            )
            .map_err(fail)?;
            let about_cert = match entry.record() {
                Record::BatchRegistered(c) => {
                    entry.id() == self.cert || c.supersedes == Some(self.cert)
                }
                other => other.certificate() == Some(&self.cert),
            };
            if !about_cert {
                return Err(fail(format!(
                    "{} is not about certificate {}",
                    entry.record().kind(),
                    self.cert
                )));
            }
            entries.push(entry);
        }
        if !entries
            .iter()
            .any(|e| e.id() == self.cert && matches!(e.record(), Record::BatchRegistered(_)))
        {
            return Err(BundleError::NoRegistration(self.cert));
        }
        entries.sort_by(|a, b| {
            (a.time_unix_ms(), a.chain(), a.seq()).cmp(&(b.time_unix_ms(), b.chain(), b.seq()))
        });
        check_links(&entries)?;

        let mut anchors = Vec::new();
        for (index, anchor) in self.anchors.iter().enumerate() {
            let fail = |detail: String| BundleError::Anchor { index, detail };
            let mut scratch = checkpoints.clone();
            let entry = verify_with_receipt(
                &membership,
                &anchor.entry.0,
                &anchor.receipt.0,
                &mut scratch,
            )
            .map_err(fail)?;
            let Record::Anchor(record) = entry.record() else {
                return Err(fail("is not an Anchor record".into()));
            };
            let Some(checkpoint) = checkpoints.get(&record.chain) else {
                return Err(fail(format!(
                    "anchors {}, which has no checkpoint in the bundle",
                    record.chain
                )));
            };
            let body = checkpoint.body();
            let proof: Vec<merkle::Hash> = anchor.consistency.iter().map(|h| h.0).collect();
            let consistent = if record.size == body.size {
                proof.is_empty() && record.root == body.root
            } else {
                record.size < body.size
                    && merkle::verify_consistency::<Sha256>(
                        record.size,
                        body.size,
                        &record.root.0,
                        &body.root.0,
                        &proof,
                    )
                    .is_ok()
            };
            if !consistent {
                return Err(fail(format!(
                    "contradicts {}'s checkpoint: anchored size {} root {}, checkpoint size {} root {}",
                    record.chain, record.size, record.root, body.size, body.root
                )));
            }
            anchors.push((entry.chain().clone(), record.chain.clone(), record.size));
        }
        Ok(VerifiedBundle {
            genesis,
            membership,
            entries,
            checkpoints,
            anchors,
        })
    }

    /// Folds the registrar's chain from seq 0, checking each entry before applying it, and binds
    /// the whole chain to the registrar's signed checkpoint by recomputing its root.
    fn verify_registrar(&self, genesis: &Genesis) -> Result<Membership, BundleError> {
        let mut membership = Membership::new(genesis);
        let mut tip = crate::chain::ChainTip::new(genesis.id(), genesis.registrar().clone());
        let mut tree = merkle::MemoryTree::<Sha256>::new();
        for (index, bytes) in self.registrar.iter().enumerate() {
            let fail = |detail: String| BundleError::Registrar { index, detail };
            let entry = Entry::decode(&bytes.0).map_err(|e| fail(e.to_string()))?;
            tip.check_next(&entry, None)
                .map_err(|e| fail(e.to_string()))?;
            membership
                .verify_entry(&entry)
                .map_err(|e| fail(e.to_string()))?;
            membership.apply(&entry).map_err(|e| fail(e.to_string()))?;
            tip.advance(&entry);
            tree.push_leaf_hash(entry.leaf_hash().0);
        }
        let index = self.registrar.len();
        let fail = |detail: String| BundleError::Registrar { index, detail };
        let checkpoint = Checkpoint::decode(&self.registrar_checkpoint.0)
            .map_err(|e| fail(format!("checkpoint: {e}")))?;
        let body = checkpoint.body();
        if body.chain != *genesis.registrar() || body.federation != genesis.id() {
            return Err(fail(
                "the registrar checkpoint is for another chain or federation".into(),
            ));
        }
        if body.size != tree.size() || body.root.0 != tree.root() {
            return Err(fail(format!(
                "the registrar chain in the bundle (size {}) does not match its signed checkpoint (size {})",
                tree.size(),
                body.size
            )));
        }
        verify_checkpoint_signer(&membership, &checkpoint).map_err(fail)?;
        Ok(membership)
    }
}

/// Decodes an entry, checks its signer and signature, and its receipt against its chain's
/// signed checkpoint; remembers the newest checkpoint per chain.
fn verify_with_receipt(
    membership: &Membership,
    entry_bytes: &[u8],
    receipt_bytes: &[u8],
    checkpoints: &mut BTreeMap<OrgId, Checkpoint>,
) -> Result<Entry, String> {
    let entry = Entry::decode(entry_bytes).map_err(|e: EntryError| e.to_string())?;
    membership.verify_entry(&entry).map_err(|e| e.to_string())?;
    let receipt = Receipt::decode(receipt_bytes).map_err(|e| e.to_string())?;
    let body = receipt.checkpoint.body();
    if body.chain != *entry.chain() || body.federation != membership.federation() {
        return Err("the receipt's checkpoint is for another chain or federation".into());
    }
    if receipt.leaf_index != entry.seq() {
        return Err(format!(
            "the receipt proves leaf {}, but the entry is at seq {}",
            receipt.leaf_index,
            entry.seq()
        ));
    }
    verify_checkpoint_signer(membership, &receipt.checkpoint)?;
    receipt
        .verify_inclusion(entry_bytes)
        .map_err(|e: CheckpointError| e.to_string())?;
    let newest = checkpoints
        .get(entry.chain())
        .is_none_or(|c| c.body().size < body.size);
    if newest {
        checkpoints.insert(entry.chain().clone(), receipt.checkpoint.clone());
    }
    Ok(entry)
}

/// A checkpoint must be signed by a key of its chain's organisation valid at its time.
fn verify_checkpoint_signer(
    membership: &Membership,
    checkpoint: &Checkpoint,
) -> Result<(), String> {
    let body = checkpoint.body();
    let Some((member, key)) = membership.key(&checkpoint.kid()) else {
        return Err(format!(
            "checkpoint signed by unknown key {}",
            checkpoint.kid()
        ));
    };
    if member.org != body.chain {
        return Err(format!(
            "checkpoint of {} signed by a key of {}",
            body.chain, member.org
        ));
    }
    let time = body.time_unix_ms;
    if time < key.valid_from || key.revoked_from.is_some_and(|r| time >= r) {
        return Err(format!(
            "checkpoint of {} signed by key {} outside its validity",
            body.chain, key.kid
        ));
    }
    checkpoint
        .verify_signature(&key.verifying_key)
        .map_err(|e| e.to_string())
}

/// Consecutive entries of one chain in the bundle must link.
fn check_links(entries: &[Entry]) -> Result<(), BundleError> {
    let mut last: BTreeMap<&OrgId, &Entry> = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        if let Some(previous) = last.get(entry.chain()) {
            if previous.seq() + 1 == entry.seq() && entry.payload().prev != Some(previous.id()) {
                return Err(BundleError::Entry {
                    index,
                    detail: format!("broken link to seq {}", previous.seq()),
                });
            }
            if previous.seq() >= entry.seq() {
                return Err(BundleError::Entry {
                    index,
                    detail: "entries of one chain out of order or repeated".into(),
                });
            }
        }
        last.insert(entry.chain(), entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Received, Shipped, StatusChange};
    use crate::testkit::{TestFederation, org, serials, soil_certificate};

    fn ledger() -> (TestFederation, CertificateId) {
        let mut fed = TestFederation::with_members();
        let cert = fed
            .append(
                "acme-rm",
                Record::BatchRegistered(soil_certificate("2025a")),
            )
            .id();
        fed.append(
            "acme-rm",
            Record::BatchRegistered(soil_certificate("2025b")),
        );
        let units = serials("S-0001..S-0003");
        fed.append(
            "acme-rm",
            Record::Shipped(Shipped {
                to: org("nclab"),
                cert,
                serials: units.clone(),
            }),
        );
        fed.append(
            "nclab",
            Record::Received(Received {
                cert,
                from: org("acme-rm"),
                serials: units,
            }),
        );
        fed.append(
            "jxim",
            Record::Suspended(StatusChange {
                cert,
                reason: "verification pending".into(),
            }),
        );
        (fed, cert)
    }

    #[test]
    fn a_bundle_verifies_and_round_trips() {
        let (fed, cert) = ledger();
        let bundle = fed.bundle(cert);
        let bytes = bundle.encode().unwrap();
        let decoded = Bundle::decode(&bytes).unwrap();
        assert_eq!(decoded, bundle);
        let verified = decoded.verify(fed.genesis.id()).unwrap();
        assert_eq!(verified.entries.len(), 4);
        assert_eq!(verified.entries[0].id(), cert);
        assert_eq!(verified.checkpoints.len(), 3);
    }

    #[test]
    fn a_bundle_from_another_federation_is_refused() {
        let (fed, cert) = ledger();
        let other = crate::ids::FederationId::of(b"another genesis");
        let err = fed.bundle(cert).verify(other).unwrap_err();
        assert!(matches!(err, BundleError::WrongFederation { .. }), "{err}");
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let (fed, cert) = ledger();
        let bytes = fed.bundle(cert).encode().unwrap();
        // Every byte would take minutes in a debug build; a stride still touches every part.
        for i in (0..bytes.len()).step_by(5) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let outcome = Bundle::decode(&bad).and_then(|b| b.verify(fed.genesis.id()));
            assert!(outcome.is_err(), "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn swapped_receipts_and_missing_registration_are_caught() {
        let (fed, cert) = ledger();
        let mut bundle = fed.bundle(cert);
        let first = bundle.entries[0].receipt.clone();
        bundle.entries[0].receipt = bundle.entries[1].receipt.clone();
        bundle.entries[1].receipt = first;
        assert!(matches!(
            bundle.verify(fed.genesis.id()),
            Err(BundleError::Entry { index: 0, .. })
        ));

        let mut bundle = fed.bundle(cert);
        bundle
            .entries
            .retain(|e| Entry::decode(&e.entry.0).unwrap().id() != cert);
        assert_eq!(
            bundle.verify(fed.genesis.id()).unwrap_err(),
            BundleError::NoRegistration(cert)
        );

        let mut bundle = fed.bundle(cert);
        bundle.registrar.pop();
        assert!(matches!(
            bundle.verify(fed.genesis.id()),
            Err(BundleError::Registrar { .. })
        ));
    }

    #[test]
    fn an_entry_about_another_certificate_is_refused() {
        let (fed, cert) = ledger();
        let mut bundle = fed.bundle(cert);
        let other = &fed.chain("acme-rm")[1];
        bundle.entries.push(BundleEntry {
            entry: Blob(other.bytes().to_vec()),
            receipt: Blob(fed.receipt("acme-rm", 1)),
        });
        assert!(matches!(
            bundle.verify(fed.genesis.id()),
            Err(BundleError::Entry { index: 4, .. })
        ));
    }
}
