//! COSE_Sign1 (RFC 9052 §4.2) with EdDSA over Ed25519: the envelope of every entry, checkpoint
//! and genesis document.
//!
//! `COSE_Sign1 = #6.18([protected: bstr .cbor header_map, unprotected: header_map,
//! payload: bstr, signature: bstr])`. The protected header carries `alg` (-8, EdDSA), the
//! content type, `kid` (our [`KeyId`]) and CWT claims (RFC 9597: `iss` = organisation, `iat`
//! = seconds); checkpoints add `vds` = 1 (RFC 9942, `RFC9162_SHA256`). The signature is over
//! `Sig_structure = ["Signature1", protected, h'', payload]` (RFC 9052 §4.4) and is checked
//! with `verify_strict` only: no weak keys, no small-order `R`, no malleable `S`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::cbor::{self, CborError, Reader, Writer, major};
use crate::ids::KeyId;

/// CBOR tag of COSE_Sign1.
pub const TAG_COSE_SIGN1: u64 = 18;
/// COSE algorithm id of EdDSA (RFC 9053 §2.2).
pub const ALG_EDDSA: i64 = -8;
/// The largest protected header accepted, in bytes.
const MAX_HEADER_BYTES: usize = 4096;

/// Header labels (RFC 9052 §3.1, RFC 9597 §2, RFC 9942 §5).
pub mod label {
    pub const ALG: u64 = 1;
    pub const CONTENT_TYPE: u64 = 3;
    pub const KID: u64 = 4;
    pub const CWT_CLAIMS: u64 = 15;
    pub const VDS: u64 = 395;
    pub const VDP: u64 = 396;
    /// CWT claim keys (RFC 8392 §3.1).
    pub const CWT_ISS: u64 = 1;
    pub const CWT_IAT: u64 = 6;
    /// Inclusion proofs inside `vdp` (RFC 9942 §5.2).
    pub const VDP_INCLUSION_PROOFS: i64 = -1;
}

/// The verifiable data structure of RFC 9942: `RFC9162_SHA256`.
pub const VDS_RFC9162_SHA256: u64 = 1;

/// Content types of our three signed documents.
pub mod content_type {
    pub const ENTRY: &str = "application/rmledger-entry+cbor";
    pub const CHECKPOINT: &str = "application/rmledger-checkpoint+cbor";
    pub const GENESIS: &str = "application/rmledger-genesis+cbor";
}

/// Why a COSE_Sign1 was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoseError {
    #[error("not canonical CBOR: {0}")]
    Cbor(#[from] CborError),
    #[error("not a COSE_Sign1: {0}")]
    Structure(&'static str),
    #[error("protected header: {0}")]
    Header(String),
    #[error("content type is {found:?}, expected {expected:?}")]
    ContentType {
        found: String,
        expected: &'static str,
    },
    #[error("signature is {0} bytes, expected 64")]
    SignatureLength(usize),
    #[error("the unprotected header must be empty")]
    UnprotectedNotEmpty,
    #[error("signature does not verify (verify_strict)")]
    BadSignature,
}

/// The protected header of our documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedHeader {
    pub content_type: String,
    pub kid: KeyId,
    /// CWT `iss`: the organisation that signed.
    pub issuer: String,
    /// CWT `iat`: seconds since the Unix epoch.
    pub issued_at_s: u64,
    /// RFC 9942 `vds`, present on checkpoints only.
    pub vds: Option<u64>,
}

impl ProtectedHeader {
    /// Encodes the header map; keys in canonical order 1, 3, 4, 15, 395.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.head(major::MAP, if self.vds.is_some() { 5 } else { 4 });
        w.head(major::UNSIGNED, label::ALG).integer(ALG_EDDSA);
        w.head(major::UNSIGNED, label::CONTENT_TYPE)
            .text(&self.content_type);
        w.head(major::UNSIGNED, label::KID)
            .bytes(self.kid.as_bytes());
        w.head(major::UNSIGNED, label::CWT_CLAIMS)
            .head(major::MAP, 2);
        w.head(major::UNSIGNED, label::CWT_ISS).text(&self.issuer);
        w.head(major::UNSIGNED, label::CWT_IAT)
            .head(major::UNSIGNED, self.issued_at_s);
        if let Some(vds) = self.vds {
            w.head(major::UNSIGNED, label::VDS)
                .head(major::UNSIGNED, vds);
        }
        w.into_bytes()
    }

    /// Decodes the header map strictly: exactly the labels above, in canonical order.
    pub fn decode(bytes: &[u8]) -> Result<Self, CoseError> {
        // The reading below is canonical by itself (a strict reader, the labels in canonical
        // order, nothing after the map), so the canonical walk first, twice over the same
        // bytes, is only needed to name what is wrong with bytes it refuses.
        if bytes.len() <= MAX_HEADER_BYTES
            && let Ok(header) = Self::read(bytes)
        {
            return Ok(header);
        }
        cbor::check_canonical(bytes, MAX_HEADER_BYTES)?;
        Self::read(bytes)
    }

    fn read(bytes: &[u8]) -> Result<Self, CoseError> {
        let header = |msg: &str| CoseError::Header(msg.to_owned());
        let mut r = Reader::new(bytes);
        let pairs = r.map()?;
        if pairs != 4 && pairs != 5 {
            return Err(header(
                "expected the labels alg, content type, kid, CWT claims and optionally vds",
            ));
        }
        if r.unsigned()? != label::ALG || r.integer()? != ALG_EDDSA {
            return Err(header("alg must be EdDSA (-8)"));
        }
        if r.unsigned()? != label::CONTENT_TYPE {
            return Err(header("missing content type (3)"));
        }
        let content_type = r.text()?.to_owned();
        if r.unsigned()? != label::KID {
            return Err(header("missing kid (4)"));
        }
        let kid =
            KeyId::from_slice(r.bytes()?).map_err(|e| CoseError::Header(format!("kid: {e}")))?;
        if r.unsigned()? != label::CWT_CLAIMS || r.map()? != 2 {
            return Err(header(
                "CWT claims (15) must hold exactly iss (1) and iat (6)",
            ));
        }
        if r.unsigned()? != label::CWT_ISS {
            return Err(header("CWT claims: missing iss (1)"));
        }
        let issuer = r.text()?.to_owned();
        if r.unsigned()? != label::CWT_IAT {
            return Err(header("CWT claims: missing iat (6)"));
        }
        let issued_at_s = r.unsigned()?;
        let vds = if pairs == 5 {
            if r.unsigned()? != label::VDS {
                return Err(header(
                    "unexpected label; only vds (395) may follow the CWT claims",
                ));
            }
            Some(r.unsigned()?)
        } else {
            None
        };
        if !r.is_empty() {
            return Err(CoseError::Cbor(CborError::Trailing {
                count: bytes.len() - r.position(),
            }));
        }
        Ok(Self {
            content_type,
            kid,
            issuer,
            issued_at_s,
            vds,
        })
    }
}

/// A parsed COSE_Sign1, borrowing the exact bytes it came from.
#[derive(Debug, Clone)]
pub struct Sign1<'a> {
    /// The protected header's bytes, exactly as signed.
    pub protected: &'a [u8],
    pub header: ProtectedHeader,
    /// The unprotected header map, as one encoded CBOR item.
    pub unprotected: &'a [u8],
    /// The payload's bytes, exactly as signed.
    pub payload: &'a [u8],
    pub signature: [u8; 64],
}

impl<'a> Sign1<'a> {
    /// Parses a COSE_Sign1 of at most `max_len` bytes whose content type must be `expected`.
    pub fn parse(
        bytes: &'a [u8],
        max_len: usize,
        expected: &'static str,
    ) -> Result<Self, CoseError> {
        cbor::check_canonical(bytes, max_len)?;
        let mut r = Reader::new(bytes);
        if r.tag().ok() != Some(TAG_COSE_SIGN1) {
            return Err(CoseError::Structure("missing tag 18"));
        }
        if r.array()? != 4 {
            return Err(CoseError::Structure("expected an array of 4"));
        }
        let protected = r.bytes()?;
        let unprotected = r.item()?;
        if unprotected.first().map(|b| b >> 5) != Some(major::MAP) {
            return Err(CoseError::Structure("unprotected header is not a map"));
        }
        let payload = r.bytes()?;
        let signature = r.bytes()?;
        let signature: [u8; 64] = signature
            .try_into()
            .map_err(|_| CoseError::SignatureLength(signature.len()))?;
        let header = ProtectedHeader::decode(protected)?;
        if header.content_type != expected {
            return Err(CoseError::ContentType {
                found: header.content_type,
                expected,
            });
        }
        Ok(Self {
            protected,
            header,
            unprotected,
            payload,
            signature,
        })
    }

    /// Requires the unprotected header to be the empty map.
    pub fn require_empty_unprotected(&self) -> Result<(), CoseError> {
        if self.unprotected == [0xa0] {
            Ok(())
        } else {
            Err(CoseError::UnprotectedNotEmpty)
        }
    }

    /// Checks the signature with `verify_strict`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), CoseError> {
        // The message is built in a buffer kept per thread: verifying is the hot path of
        // replication and the audit, and the message is as long as the entry.
        thread_local! {
            static MESSAGE: std::cell::RefCell<Writer> = std::cell::RefCell::new(Writer::new());
        }
        MESSAGE.with_borrow_mut(|w| {
            w.buf.clear();
            write_sig_structure(w, self.protected, self.payload);
            key.verify_strict(&w.buf, &Signature::from_bytes(&self.signature))
                .map_err(|_| CoseError::BadSignature)
        })
    }
}

/// `Sig_structure` for COSE_Sign1 with empty external AAD (RFC 9052 §4.4).
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    write_sig_structure(&mut w, protected, payload);
    w.into_bytes()
}

fn write_sig_structure(w: &mut Writer, protected: &[u8], payload: &[u8]) {
    let frame = SigStructureFrame::new(protected.len(), payload.len());
    w.buf.reserve(protected.len() + payload.len() + 24);
    w.raw(&frame.before)
        .raw(protected)
        .raw(&frame.between)
        .raw(payload);
}

/// The CBOR that frames `protected` and `payload` in their `Sig_structure`
/// (`["Signature1", protected, h'', payload]`): the structure is
/// `before ‖ protected ‖ between ‖ payload`. The one definition of its layout, for signing,
/// checking, and the entry id, which hashes the structure in these pieces without a copy.
pub struct SigStructureFrame {
    pub before: Vec<u8>,
    pub between: Vec<u8>,
}

impl SigStructureFrame {
    pub fn new(protected_len: usize, payload_len: usize) -> Self {
        let mut before = Writer::new();
        before
            .head(major::ARRAY, 4)
            .text("Signature1")
            .head(major::BYTES, protected_len as u64);
        let mut between = Writer::new();
        between.bytes(&[]).head(major::BYTES, payload_len as u64);
        Self {
            before: before.into_bytes(),
            between: between.into_bytes(),
        }
    }
}

/// The length of the COSE_Sign1 that [`assemble`] writes from fields of these lengths.
pub fn assembled_len(protected_len: usize, unprotected_len: usize, payload_len: usize) -> usize {
    let bstr = |len: usize| cbor::head_len(len as u64) + len;
    cbor::head_len(TAG_COSE_SIGN1)
        + 1
        + bstr(protected_len)
        + unprotected_len
        + bstr(payload_len)
        + bstr(64)
}

/// Signs `payload` and returns the COSE_Sign1 bytes with an empty unprotected header.
pub fn sign(key: &SigningKey, header: &ProtectedHeader, payload: &[u8]) -> Vec<u8> {
    let protected = header.encode();
    let signature = key.sign(&sig_structure(&protected, payload));
    assemble(&protected, &[0xa0], payload, &signature.to_bytes())
}

/// Writes the four fields of a COSE_Sign1 under tag 18.
pub fn assemble(
    protected: &[u8],
    unprotected: &[u8],
    payload: &[u8],
    signature: &[u8; 64],
) -> Vec<u8> {
    let mut w = Writer::new();
    w.buf
        .reserve(protected.len() + unprotected.len() + payload.len() + 80);
    w.head(major::TAG, TAG_COSE_SIGN1).head(major::ARRAY, 4);
    w.bytes(protected)
        .raw(unprotected)
        .bytes(payload)
        .bytes(signature);
    w.into_bytes()
}

/// The key id of a verifying key.
pub fn key_id(key: &VerifyingKey) -> KeyId {
    KeyId::of(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ProtectedHeader {
        let key = SigningKey::from_bytes(&[1; 32]);
        ProtectedHeader {
            content_type: content_type::ENTRY.into(),
            kid: key_id(&key.verifying_key()),
            issuer: "acme-rm".into(),
            issued_at_s: 1_700_000_000,
            vds: None,
        }
    }

    #[test]
    fn header_round_trip() {
        for vds in [None, Some(VDS_RFC9162_SHA256)] {
            let h = ProtectedHeader { vds, ..header() };
            let bytes = h.encode();
            assert_eq!(cbor::check_canonical(&bytes, MAX_HEADER_BYTES), Ok(()));
            assert_eq!(ProtectedHeader::decode(&bytes).unwrap(), h);
        }
    }

    #[test]
    fn a_header_is_read_only_when_canonical() {
        // `decode` reads before it walks: no one-byte change, cut or trailing byte of a header
        // that is not canonical is accepted, and each is refused with the walk's error.
        for vds in [None, Some(VDS_RFC9162_SHA256)] {
            let bytes = ProtectedHeader { vds, ..header() }.encode();
            let mut variants = vec![[&bytes[..], &[0x00]].concat()];
            for at in 0..bytes.len() {
                variants.push(bytes[..at].to_vec());
                for byte in 0..=255u8 {
                    let mut changed = bytes.clone();
                    changed[at] = byte;
                    variants.push(changed);
                }
            }
            for variant in variants {
                // Canonical bytes get the reading's verdict, as before; others the walk's error.
                if let Err(e) = cbor::check_canonical(&variant, MAX_HEADER_BYTES) {
                    assert_eq!(
                        ProtectedHeader::decode(&variant),
                        Err(CoseError::Cbor(e)),
                        "{variant:02x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn sign_parse_verify_and_tamper() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let bytes = sign(&key, &header(), b"\xa1\x61\x76\x01");
        let parsed = Sign1::parse(&bytes, 1 << 16, content_type::ENTRY).unwrap();
        parsed.require_empty_unprotected().unwrap();
        parsed.verify(&key.verifying_key()).unwrap();
        assert_eq!(
            Sign1::parse(&bytes, 1 << 16, content_type::CHECKPOINT).unwrap_err(),
            CoseError::ContentType {
                found: content_type::ENTRY.into(),
                expected: content_type::CHECKPOINT
            }
        );
        let other = SigningKey::from_bytes(&[2; 32]);
        assert_eq!(
            parsed.verify(&other.verifying_key()),
            Err(CoseError::BadSignature)
        );
        // Flip each byte of the signature and of the payload: never verifies.
        for i in (bytes.len() - 64)..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            let parsed = Sign1::parse(&bad, 1 << 16, content_type::ENTRY).unwrap();
            assert_eq!(
                parsed.verify(&key.verifying_key()),
                Err(CoseError::BadSignature)
            );
        }
    }
}
