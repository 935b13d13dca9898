//! Entries: one signed record on one organisation's chain.
//!
//! An entry is a COSE_Sign1 whose payload is the canonical CBOR map
//! `{v, op, fed, rec, seq, prev, time, chain}` (written here in canonical key order). The
//! entry's bytes are the truth: [`Entry::decode`] keeps them, and the id, the Merkle leaf and
//! the signature are all computed over them, never over a re-encoding. The id covers what the
//! signature covers (the COSE `Sig_structure`); the Merkle leaf covers the whole entry,
//! signature included.

use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::cbor::{self, CborError};
use crate::cose::{self, CoseError, ProtectedHeader, Sign1};
use crate::federation::MemberKey;
use crate::ids::{CertificateId, EntryId, FederationId, KeyId, OrgId, TreeHash};
use crate::records::{Anchor, Record};

/// The payload version this code writes and accepts.
pub const VERSION: u64 = 1;
/// The largest entry accepted, in bytes.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// The longest operator name.
pub const MAX_OPERATOR_CHARS: usize = 128;

/// The signed payload of an entry. Field order is canonical key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    #[serde(rename = "v")]
    pub version: u64,
    /// The person at the organisation who made the entry.
    #[serde(rename = "op")]
    pub operator: String,
    #[serde(rename = "fed")]
    pub federation: FederationId,
    #[serde(rename = "rec")]
    pub record: Record,
    pub seq: u64,
    /// The id of the entry at `seq - 1`; `null` at 0.
    pub prev: Option<EntryId>,
    #[serde(rename = "time")]
    pub time_unix_ms: u64,
    pub chain: OrgId,
}

impl Payload {
    /// Decodes a payload from canonical CBOR of at most [`MAX_ENTRY_BYTES`]: the value and
    /// verdict of `cbor::from_canonical::<Payload>`, in one strict pass over the fields
    /// ([`read_in_order`]). Bytes that pass refuses go through `from_canonical`, which names
    /// what is wrong with them.
    pub fn decode(bytes: &[u8]) -> Result<Self, CborError> {
        match read_in_order(bytes) {
            Some(payload) => Ok(payload),
            None => cbor::from_canonical(bytes, MAX_ENTRY_BYTES),
        }
    }
}

/// Reads a payload's eight fields in canonical key order with the strict reader, and its
/// record with serde and the re-encoding check ([`cbor::from_checked_item`]); `None` at the
/// first byte it does not expect. What it accepts, `cbor::from_canonical` accepts with the
/// same value: the reader refuses non-minimal heads, indefinite lengths and invalid text, the
/// fixed key order is the canonical one, the record's item is walked at the depth it has in
/// the whole, and each field has one encoding (`prev` is null or 32 bytes). Replicating and
/// auditing decode every entry: an anchor's payload is read in half the time of the canonical
/// walk, serde over the whole payload and its re-encoding (402 against 787 ns); a payload
/// whose record goes through serde gains the envelope's share (~5 % for a certificate).
fn read_in_order(bytes: &[u8]) -> Option<Payload> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let mut r = cbor::Reader::new(bytes);
    if r.map().ok()? != 8 {
        return None;
    }
    field(&mut r, "v")?;
    let version = r.unsigned().ok()?;
    field(&mut r, "op")?;
    let operator = r.text().ok()?.to_owned();
    field(&mut r, "fed")?;
    let federation = FederationId::from_slice(r.bytes().ok()?).ok()?;
    field(&mut r, "rec")?;
    let record = r.item_at(1).ok()?;
    let record = match read_anchor(record) {
        Some(anchor) => Record::Anchor(anchor),
        None => cbor::from_checked_item(record).ok()?,
    };
    field(&mut r, "seq")?;
    let seq = r.unsigned().ok()?;
    field(&mut r, "prev")?;
    let prev = if r.peek() == Some(NULL) {
        r.head().ok()?;
        None
    } else {
        Some(EntryId::from_slice(r.bytes().ok()?).ok()?)
    };
    field(&mut r, "time")?;
    let time_unix_ms = r.unsigned().ok()?;
    field(&mut r, "chain")?;
    let chain = OrgId::new(r.text().ok()?).ok()?;
    if !r.is_empty() {
        return None;
    }
    Some(Payload {
        version,
        operator,
        federation,
        record,
        seq,
        prev,
        time_unix_ms,
        chain,
    })
}

/// An `Anchor` record read field by field, as [`read_in_order`] reads the payload (a witness's
/// chain is mostly anchors; any other record goes through serde); `None` if it is not one.
fn read_anchor(item: &[u8]) -> Option<Anchor> {
    let mut r = cbor::Reader::new(item);
    if r.map().ok()? != 1 {
        return None;
    }
    field(&mut r, "Anchor")?;
    if r.map().ok()? != 3 {
        return None;
    }
    field(&mut r, "root")?;
    let root = TreeHash::from_slice(r.bytes().ok()?).ok()?;
    field(&mut r, "size")?;
    let size = r.unsigned().ok()?;
    field(&mut r, "chain")?;
    let chain = OrgId::new(r.text().ok()?).ok()?;
    r.is_empty().then_some(Anchor { root, size, chain })
}

/// Reads a map key that must be `name`.
fn field(r: &mut cbor::Reader<'_>, name: &str) -> Option<()> {
    (r.text().ok()? == name).then_some(())
}

/// CBOR `null`.
const NULL: u8 = 0xf6;

/// Why an entry's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry envelope: {0}")]
    Cose(#[from] CoseError),
    #[error("entry payload: {0}")]
    Payload(CborError),
    #[error("unknown payload version {0} (this software reads version {VERSION})")]
    Version(u64),
    #[error("prev must be null exactly at seq 0 (seq {seq})")]
    PrevAtGenesis { seq: u64 },
    #[error("CWT iss {issuer:?} differs from the payload's chain {chain}")]
    IssuerMismatch { issuer: String, chain: OrgId },
    #[error("CWT iat {iat} s differs from the payload's time {time_unix_ms} ms")]
    IatMismatch { iat: u64, time_unix_ms: u64 },
    #[error("operator: must be 1 to {MAX_OPERATOR_CHARS} characters without control characters")]
    Operator,
}

/// A decoded entry: its exact bytes and what they say.
#[derive(Debug, Clone)]
pub struct Entry {
    bytes: Arc<[u8]>,
    id: EntryId,
    kid: KeyId,
    /// Boxed: a `Payload` is ~800 bytes inline (its `Record`), and entries are moved through
    /// vectors and channels by the thousand on the replication and audit paths, so an `Entry`
    /// is kept to a few words.
    payload: Box<Payload>,
}

// An entry stays a handful of words (see `payload`); moving one must not copy a record.
const _: () = assert!(std::mem::size_of::<Entry>() <= 96);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Entry {}

impl Entry {
    /// The certificates this entry concerns: the one a `BatchRegistered` registers (named by
    /// this entry's id) and the one it supersedes, or the one its record is about
    /// ([`Record::certificate`]). The one definition behind the node's events index, proof
    /// bundles and the certificate map.
    pub fn certificates(&self) -> impl Iterator<Item = CertificateId> + '_ {
        let (registered, superseded) = match self.record() {
            Record::BatchRegistered(c) => (Some(self.id()), c.supersedes),
            _ => (None, None),
        };
        registered
            .into_iter()
            .chain(superseded)
            .chain(self.record().certificate().copied())
    }

    /// The keys under which the chain's certificate map counts this entry: the certificates it
    /// concerns ([`Entry::certificates`]), and [`crate::certmap::membership_key`] if its record
    /// changes the membership ([`Record::changes_membership`]). The one definition behind every
    /// certificate map (node, fsck, audit, testkit).
    pub fn map_keys(&self) -> impl Iterator<Item = CertificateId> + '_ {
        self.certificates().chain(
            self.record()
                .changes_membership()
                .then(crate::certmap::membership_key),
        )
    }

    /// Whether this entry concerns `cert` (see [`Entry::certificates`]).
    pub fn concerns(&self, cert: &CertificateId) -> bool {
        self.certificates().any(|c| c == *cert)
    }

    /// Decodes and checks an entry's structure (not its signature, which needs the key).
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        Self::decode_and_verify(bytes, |_, _| None).map(|(entry, _)| entry)
    }

    /// [`Entry::decode`] and, when `key_for` gives a member key for the entry's kid and
    /// payload, the check of [`Entry::verify_signature`] over the same parse: one canonical walk
    /// of the envelope instead of two (the audit's hot path). The signature result is `None`
    /// when `key_for` gave no key.
    pub fn decode_and_verify<'k>(
        bytes: &[u8],
        key_for: impl FnOnce(KeyId, &Payload) -> Option<&'k MemberKey>,
    ) -> Result<(Self, Option<Result<(), CoseError>>), EntryError> {
        let sign1 = Sign1::parse(bytes, MAX_ENTRY_BYTES, cose::content_type::ENTRY)?;
        sign1.require_empty_unprotected()?;
        let payload = Payload::decode(sign1.payload).map_err(|e| {
            // Name the version problem precisely when that is what it is.
            peek_version(sign1.payload)
                .filter(|&v| v != VERSION)
                .map_or(EntryError::Payload(e), EntryError::Version)
        })?;
        check_payload(&payload, &sign1.header)?;
        let kid = sign1.header.kid;
        let id = id_of_parts(sign1.protected, sign1.payload);
        // The member key's id was derived from its public key when it was enrolled: comparing
        // it is the same check as deriving the id again, without a BLAKE3 per entry.
        let signature = key_for(kid, &payload).map(|key| {
            if key.kid != kid {
                return Err(CoseError::BadSignature);
            }
            sign1.verify(&key.verifying_key)
        });
        let entry = Self {
            id,
            kid,
            payload: Box::new(payload),
            bytes: bytes.into(),
        };
        Ok((entry, signature))
    }

    /// Builds and signs an entry. The payload is checked as [`Entry::decode`] would.
    pub fn sign(key: &SigningKey, payload: Payload) -> Result<Self, EntryError> {
        Ok(Unsigned::new(key, payload)?.sign(key))
    }

    /// The id of an entry's bytes (format §2), from its envelope alone: the payload is not
    /// decoded. For stored bytes whose id is needed without the rest of the entry.
    pub fn id_of(bytes: &[u8]) -> Result<EntryId, EntryError> {
        let sign1 = Sign1::parse(bytes, MAX_ENTRY_BYTES, cose::content_type::ENTRY)?;
        Ok(id_of_parts(sign1.protected, sign1.payload))
    }

    /// Checks the signature with `verify_strict` against `key`, which the caller found for
    /// [`Entry::kid`] in the federation's membership.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), CoseError> {
        if cose::key_id(key) != self.kid {
            return Err(CoseError::BadSignature);
        }
        let sign1 = Sign1::parse(&self.bytes, MAX_ENTRY_BYTES, cose::content_type::ENTRY)?;
        sign1.verify(key)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The shared bytes, for handing to storage without a copy.
    pub fn shared_bytes(&self) -> Arc<[u8]> {
        self.bytes.clone()
    }

    pub fn id(&self) -> EntryId {
        self.id
    }

    pub fn kid(&self) -> KeyId {
        self.kid
    }

    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    pub fn record(&self) -> &Record {
        &self.payload.record
    }

    pub fn chain(&self) -> &OrgId {
        &self.payload.chain
    }

    pub fn seq(&self) -> u64 {
        self.payload.seq
    }

    pub fn time_unix_ms(&self) -> u64 {
        self.payload.time_unix_ms
    }

    /// The RFC 9162 leaf hash: `SHA-256(0x00 ‖ entry bytes)`.
    pub fn leaf_hash(&self) -> TreeHash {
        leaf_hash(&self.bytes)
    }
}

/// The id of the entry with these protected header and payload bytes: BLAKE3 over their
/// `Sig_structure`, the exact bytes the signature covers (format §2).
fn id_of_parts(protected: &[u8], payload: &[u8]) -> EntryId {
    let frame = cose::SigStructureFrame::new(protected.len(), payload.len());
    EntryId::of_sig_structure([&frame.before[..], protected, &frame.between, payload])
}

/// An entry built and checked but not yet signed. Its id is already fixed, because it names
/// the bytes the signature will cover, not the signature: the next entry can link to it at
/// once, and a writer checks a batch in order and then signs its entries on every core.
#[derive(Debug, Clone)]
pub struct Unsigned {
    id: EntryId,
    kid: KeyId,
    /// Boxed, as in [`Entry`]: a batch of these is built, moved and signed.
    payload: Box<Payload>,
    protected: Vec<u8>,
    payload_bytes: Vec<u8>,
}

impl Unsigned {
    /// Builds the entry `key` will sign, with every check [`Entry::decode`] makes, including
    /// the size of the signed result: [`Unsigned::sign`] cannot fail.
    pub fn new(key: &SigningKey, payload: Payload) -> Result<Self, EntryError> {
        let payload_bytes = cbor::to_canonical(&payload).map_err(EntryError::Payload)?;
        let header = ProtectedHeader {
            content_type: cose::content_type::ENTRY.into(),
            kid: cose::key_id(&key.verifying_key()),
            issuer: payload.chain.as_str().into(),
            issued_at_s: payload.time_unix_ms / 1000,
            vds: None,
        };
        check_payload(&payload, &header)?;
        let protected = header.encode();
        let len = cose::assembled_len(protected.len(), 1, payload_bytes.len());
        if len > MAX_ENTRY_BYTES {
            return Err(EntryError::Payload(CborError::TooLarge {
                len,
                max: MAX_ENTRY_BYTES,
            }));
        }
        Ok(Self {
            id: id_of_parts(&protected, &payload_bytes),
            kid: header.kid,
            payload: Box::new(payload),
            protected,
            payload_bytes,
        })
    }

    pub fn id(&self) -> EntryId {
        self.id
    }

    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Signs the entry with `key`, which must be the key it was built for.
    pub fn sign(self, key: &SigningKey) -> Entry {
        debug_assert_eq!(cose::key_id(&key.verifying_key()), self.kid);
        let message = cose::sig_structure(&self.protected, &self.payload_bytes);
        let signature = key.sign(&message).to_bytes();
        let bytes = cose::assemble(&self.protected, &[0xa0], &self.payload_bytes, &signature);
        debug_assert_eq!(
            bytes.len(),
            cose::assembled_len(self.protected.len(), 1, self.payload_bytes.len())
        );
        Entry {
            id: self.id,
            kid: self.kid,
            payload: self.payload,
            bytes: bytes.into(),
        }
    }
}

/// What an entry records — its id and payload — as the lifecycle and membership folds read
/// it. Implemented by a decoded [`Entry`] and by an [`Unsigned`] one, so a writer folds an
/// entry's effects into the state the next record is checked against before it is signed.
pub trait Recorded {
    fn id(&self) -> EntryId;
    fn payload(&self) -> &Payload;
    fn record(&self) -> &Record {
        &self.payload().record
    }
    fn chain(&self) -> &OrgId {
        &self.payload().chain
    }
    fn seq(&self) -> u64 {
        self.payload().seq
    }
    fn time_unix_ms(&self) -> u64 {
        self.payload().time_unix_ms
    }
}

impl Recorded for Entry {
    fn id(&self) -> EntryId {
        self.id
    }
    fn payload(&self) -> &Payload {
        &self.payload
    }
}

impl Recorded for Unsigned {
    fn id(&self) -> EntryId {
        self.id
    }
    fn payload(&self) -> &Payload {
        &self.payload
    }
}

/// The RFC 9162 leaf hash of an entry's bytes.
pub fn leaf_hash(entry_bytes: &[u8]) -> TreeHash {
    let mut hasher = sha2::Sha256::new();
    hasher.update([0u8]);
    hasher.update(entry_bytes);
    TreeHash(hasher.finalize().into())
}

fn check_payload(payload: &Payload, header: &ProtectedHeader) -> Result<(), EntryError> {
    // `vds` belongs to checkpoints; allowing it here would give one entry two encodings.
    if header.vds.is_some() {
        return Err(EntryError::Cose(CoseError::Header(
            "vds (395) is only for checkpoints".into(),
        )));
    }
    if payload.version != VERSION {
        return Err(EntryError::Version(payload.version));
    }
    if (payload.seq == 0) != payload.prev.is_none() {
        return Err(EntryError::PrevAtGenesis { seq: payload.seq });
    }
    if header.issuer != payload.chain.as_str() {
        return Err(EntryError::IssuerMismatch {
            issuer: header.issuer.clone(),
            chain: payload.chain.clone(),
        });
    }
    if header.issued_at_s != payload.time_unix_ms / 1000 {
        return Err(EntryError::IatMismatch {
            iat: header.issued_at_s,
            time_unix_ms: payload.time_unix_ms,
        });
    }
    let op = &payload.operator;
    if op.is_empty() || op.chars().count() > MAX_OPERATOR_CHARS || op.chars().any(char::is_control)
    {
        return Err(EntryError::Operator);
    }
    Ok(())
}

/// Reads `v` from a payload map if it is the first key, to name version errors precisely.
fn peek_version(payload: &[u8]) -> Option<u64> {
    let mut r = cbor::Reader::new(payload);
    r.map().ok()?;
    (r.text().ok()? == "v").then(|| r.unsigned().ok()).flatten()
}
