//! Signed tree heads (checkpoints) and receipts.
//!
//! A checkpoint is a COSE_Sign1 by the chain's owner over `{fed, head, root, size, time, certs,
//! chain}` (`certs` is the root of the chain's certificate map, [`crate::certmap`]), with `vds = 1` (RFC9162_SHA256) in its protected header. A receipt for one entry is
//! that same checkpoint with the entry's inclusion proof in the unprotected header, label 396
//! (`vdp`) → -1 (inclusion proofs) → `[bstr .cbor [tree_size, leaf_index, [hash...]]]`, which
//! is the shape of RFC 9942 COSE Receipts. Verification always binds the proof's root to the
//! signed root: a proof that only verifies against some other root proves nothing.

use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::cbor::{self, CborError, Reader, Writer, major};
use crate::cose::{self, CoseError, ProtectedHeader, Sign1, VDS_RFC9162_SHA256, label};
use crate::ids::{EntryId, FederationId, KeyId, OrgId, TreeHash};
use crate::merkle::{self, Sha256, VerifyError};

/// The largest checkpoint or receipt accepted (a receipt holds at most 64 path hashes).
pub const MAX_CHECKPOINT_BYTES: usize = 8 * 1024;

/// What a checkpoint states. Field order is canonical key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointBody {
    #[serde(rename = "fed")]
    pub federation: FederationId,
    /// The id of the last entry, at `size - 1`.
    pub head: EntryId,
    pub root: TreeHash,
    pub size: u64,
    #[serde(rename = "time")]
    pub time_unix_ms: u64,
    /// The root of the chain's certificate map over the same `size` entries
    /// ([`crate::certmap`]).
    pub certs: TreeHash,
    pub chain: OrgId,
}

/// Why a checkpoint or receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint envelope: {0}")]
    Cose(#[from] CoseError),
    #[error("checkpoint payload: {0}")]
    Payload(#[from] CborError),
    #[error("checkpoint: {0}")]
    Invalid(&'static str),
    #[error("receipt: {0}")]
    Receipt(String),
    #[error("inclusion proof: {0}")]
    Proof(#[from] VerifyError),
    #[error("inclusion proof leads to root {computed}, but the signed checkpoint says {signed}")]
    RootMismatch {
        computed: TreeHash,
        signed: TreeHash,
    },
}

/// A decoded checkpoint with its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    bytes: Arc<[u8]>,
    kid: KeyId,
    body: CheckpointBody,
}

impl Checkpoint {
    pub fn sign(key: &SigningKey, body: CheckpointBody) -> Result<Self, CheckpointError> {
        if body.size == 0 {
            return Err(CheckpointError::Invalid("size must be at least 1"));
        }
        let payload = cbor::to_canonical(&body).map_err(CheckpointError::Payload)?;
        let header = ProtectedHeader {
            content_type: cose::content_type::CHECKPOINT.into(),
            kid: cose::key_id(&key.verifying_key()),
            issuer: body.chain.as_str().into(),
            issued_at_s: body.time_unix_ms / 1000,
            vds: Some(VDS_RFC9162_SHA256),
        };
        let bytes = cose::sign(key, &header, &payload);
        Ok(Self {
            bytes: bytes.into(),
            kid: header.kid,
            body,
        })
    }

    /// Decodes a checkpoint (empty unprotected header) without checking its signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let sign1 = Sign1::parse(bytes, MAX_CHECKPOINT_BYTES, cose::content_type::CHECKPOINT)?;
        sign1.require_empty_unprotected()?;
        let body = decode_body(&sign1)?;
        Ok(Self {
            bytes: bytes.into(),
            kid: sign1.header.kid,
            body,
        })
    }

    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), CheckpointError> {
        if cose::key_id(key) != self.kid {
            return Err(CoseError::BadSignature.into());
        }
        Sign1::parse(
            &self.bytes,
            MAX_CHECKPOINT_BYTES,
            cose::content_type::CHECKPOINT,
        )?
        .verify(key)?;
        Ok(())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn kid(&self) -> KeyId {
        self.kid
    }

    pub fn body(&self) -> &CheckpointBody {
        &self.body
    }

    /// A receipt for the leaf at `leaf_index`: this checkpoint plus the inclusion proof.
    pub fn receipt(&self, leaf_index: u64, path: &[merkle::Hash]) -> Vec<u8> {
        let sign1 = Sign1::parse(
            &self.bytes,
            MAX_CHECKPOINT_BYTES,
            cose::content_type::CHECKPOINT,
        )
        .expect("a checkpoint we hold re-parses");
        let mut proof = Writer::new();
        proof
            .head(major::ARRAY, 3)
            .head(major::UNSIGNED, self.body.size)
            .head(major::UNSIGNED, leaf_index);
        proof.head(major::ARRAY, path.len() as u64);
        for hash in path {
            proof.bytes(hash);
        }
        let mut unprotected = Writer::new();
        unprotected
            .head(major::MAP, 1)
            .head(major::UNSIGNED, label::VDP);
        unprotected
            .head(major::MAP, 1)
            .integer(label::VDP_INCLUSION_PROOFS);
        unprotected.head(major::ARRAY, 1).bytes(&proof.into_bytes());
        cose::assemble(
            sign1.protected,
            &unprotected.into_bytes(),
            sign1.payload,
            &sign1.signature,
        )
    }
}

fn decode_body(sign1: &Sign1<'_>) -> Result<CheckpointBody, CheckpointError> {
    if sign1.header.vds != Some(VDS_RFC9162_SHA256) {
        return Err(CheckpointError::Invalid("vds must be 1 (RFC9162_SHA256)"));
    }
    let body: CheckpointBody = cbor::from_canonical(sign1.payload, MAX_CHECKPOINT_BYTES)
        .map_err(CheckpointError::Payload)?;
    if body.size == 0 {
        return Err(CheckpointError::Invalid("size must be at least 1"));
    }
    if sign1.header.issuer != body.chain.as_str() {
        return Err(CheckpointError::Invalid(
            "CWT iss differs from the checkpoint's chain",
        ));
    }
    if sign1.header.issued_at_s != body.time_unix_ms / 1000 {
        return Err(CheckpointError::Invalid(
            "CWT iat differs from the checkpoint's time",
        ));
    }
    Ok(body)
}

/// A decoded receipt: a checkpoint and one inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub checkpoint: Checkpoint,
    pub leaf_index: u64,
    pub path: Vec<merkle::Hash>,
}

impl Receipt {
    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let sign1 = Sign1::parse(bytes, MAX_CHECKPOINT_BYTES, cose::content_type::CHECKPOINT)?;
        let body = decode_body(&sign1)?;
        let bad = |msg: &str| CheckpointError::Receipt(msg.to_owned());
        let mut r = Reader::new(sign1.unprotected);
        if r.map()? != 1 || r.unsigned()? != label::VDP || r.map()? != 1 {
            return Err(bad("unprotected header must hold exactly vdp (396)"));
        }
        if r.integer()? != label::VDP_INCLUSION_PROOFS || r.array()? != 1 {
            return Err(bad("vdp must hold exactly one inclusion proof (-1)"));
        }
        let proof = r.bytes()?;
        cbor::check_canonical(proof, MAX_CHECKPOINT_BYTES)?;
        let mut p = Reader::new(proof);
        if p.array()? != 3 {
            return Err(bad("inclusion proof must be [tree_size, leaf_index, path]"));
        }
        let tree_size = p.unsigned()?;
        let leaf_index = p.unsigned()?;
        let count = p.array()?;
        if count > 64 {
            return Err(bad("inclusion path longer than 64"));
        }
        let mut path = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let hash = p.bytes()?;
            path.push(
                <merkle::Hash>::try_from(hash).map_err(|_| bad("path hash is not 32 bytes"))?,
            );
        }
        if tree_size != body.size {
            return Err(bad(
                "the proof's tree size differs from the checkpoint's size",
            ));
        }
        let checkpoint_bytes =
            cose::assemble(sign1.protected, &[0xa0], sign1.payload, &sign1.signature);
        let checkpoint = Checkpoint {
            bytes: checkpoint_bytes.into(),
            kid: sign1.header.kid,
            body,
        };
        Ok(Self {
            checkpoint,
            leaf_index,
            path,
        })
    }

    /// Checks that `entry_bytes` is the leaf at `leaf_index` of the tree the checkpoint signs
    /// (the root the proof leads to must equal the signed root), and the checkpoint's signature.
    pub fn verify(&self, entry_bytes: &[u8], key: &VerifyingKey) -> Result<(), CheckpointError> {
        self.checkpoint.verify_signature(key)?;
        self.verify_inclusion(entry_bytes)
    }

    /// The inclusion half of [`Receipt::verify`], for callers that checked the signature once.
    pub fn verify_inclusion(&self, entry_bytes: &[u8]) -> Result<(), CheckpointError> {
        let leaf = crate::entry::leaf_hash(entry_bytes);
        let body = self.checkpoint.body();
        let computed =
            merkle::root_from_inclusion::<Sha256>(self.leaf_index, body.size, &leaf.0, &self.path)?;
        if computed != body.root.0 {
            return Err(CheckpointError::RootMismatch {
                computed: TreeHash(computed),
                signed: body.root,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MemoryTree;

    #[test]
    fn receipt_round_trip_binds_the_signed_root() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let leaves: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        let mut tree = MemoryTree::<Sha256>::new();
        for leaf in &leaves {
            tree.push_leaf_hash(crate::entry::leaf_hash(leaf).0);
        }
        let body = CheckpointBody {
            federation: FederationId([1; 32]),
            head: EntryId::of_sig_structure([&leaves[4][..]]),
            root: TreeHash(tree.root()),
            size: 5,
            time_unix_ms: 1_700_000_000_123,
            certs: crate::certmap::EMPTY,
            chain: OrgId::new("acme-rm").unwrap(),
        };
        let checkpoint = Checkpoint::sign(&key, body).unwrap();
        assert_eq!(Checkpoint::decode(checkpoint.bytes()).unwrap(), checkpoint);
        checkpoint.verify_signature(&key.verifying_key()).unwrap();
        for (i, leaf) in leaves.iter().enumerate() {
            let path = tree.inclusion_proof(i as u64, 5).unwrap();
            let receipt_bytes = checkpoint.receipt(i as u64, &path);
            let receipt = Receipt::decode(&receipt_bytes).unwrap();
            assert_eq!(receipt.checkpoint, checkpoint);
            receipt.verify(leaf, &key.verifying_key()).unwrap();
            let other = (i + 1) % leaves.len();
            assert!(
                receipt
                    .verify(&leaves[other], &key.verifying_key())
                    .is_err()
            );
        }
        // A proof for a different tree does not verify against the signed root.
        let mut other_tree = MemoryTree::<Sha256>::new();
        for leaf in leaves.iter().rev() {
            other_tree.push_leaf_hash(crate::entry::leaf_hash(leaf).0);
        }
        let path = other_tree.inclusion_proof(4, 5).unwrap();
        let receipt = Receipt::decode(&checkpoint.receipt(4, &path)).unwrap();
        assert!(matches!(
            receipt.verify(&leaves[0], &key.verifying_key()),
            Err(CheckpointError::RootMismatch { .. })
        ));
    }
}
