//! Names of things: 32-byte ids derived with BLAKE3 (entries, keys, the federation), SHA-256 tree
//! hashes, attachment digests, and organisation ids.
//!
//! Every id serializes as a CBOR byte string in signed payloads and as lowercase hex in JSON, so
//! the same type serves the wire format and the API.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// BLAKE3 `derive_key` contexts, one per role, so ids of different kinds can never collide.
pub mod ctx {
    /// `EntryId = BLAKE3-derive_key(ENTRY, the entry's COSE Sig_structure)`.
    pub const ENTRY: &str = "rmledger entry v2";
    /// `KeyId = BLAKE3-derive_key(KEY, 32-byte Ed25519 public key)`.
    pub const KEY: &str = "rmledger key v1";
    /// `FederationId = BLAKE3-derive_key(FEDERATION, genesis bytes)`.
    pub const FEDERATION: &str = "rmledger federation v1";
    /// A certificate map leaf: `BLAKE3-derive_key(CERTMAP_LEAF, key ‖ count ‖ last)`.
    pub const CERTMAP_LEAF: &str = "rmledger certmap leaf v1";
    /// A certificate map interior node: `BLAKE3-derive_key(CERTMAP_NODE, left ‖ right)`.
    pub const CERTMAP_NODE: &str = "rmledger certmap node v1";
    /// The certificate map's membership key: `BLAKE3-derive_key(CERTMAP_MEMBERSHIP, "")`.
    pub const CERTMAP_MEMBERSHIP: &str = "rmledger certmap membership key v1";
    /// Every context, for the distinctness test.
    pub const ALL: [&str; 6] = [
        ENTRY,
        KEY,
        FEDERATION,
        CERTMAP_LEAF,
        CERTMAP_NODE,
        CERTMAP_MEMBERSHIP,
    ];
}

/// Why a textual id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind}: expected 64 hex characters, got {len}")]
    HexLength { kind: &'static str, len: usize },
    #[error("{kind}: not lowercase hex")]
    NotHex { kind: &'static str },
    #[error("{kind}: expected 32 bytes, got {len}")]
    ByteLength { kind: &'static str, len: usize },
    #[error(
        "organisation id {0:?}: must be 2 to 32 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    OrgId(String),
}

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// What this id is, for error messages.
            pub const KIND: &'static str = $kind;

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                data_encoding::HEXLOWER.encode(&self.0)
            }

            pub fn from_hex(text: &str) -> Result<Self, IdError> {
                parse_hex32($kind, text).map(Self)
            }

            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                <[u8; 32]>::try_from(bytes)
                    .map(Self)
                    .map_err(|_| IdError::ByteLength { kind: $kind, len: bytes.len() })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                Self::from_hex(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.serialize_str(&self.to_hex())
                } else {
                    serializer.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    deserializer.deserialize_str(Id32Visitor($kind)).map(Self)
                } else {
                    deserializer.deserialize_bytes(Id32Visitor($kind)).map(Self)
                }
            }
        }
    };
}

id32!(
    /// The id of an entry: `BLAKE3-derive_key("rmledger entry v2", Sig_structure)`, i.e. over
    /// exactly the bytes its signature covers (see [`crate::entry::Entry::id_of`]).
    EntryId,
    "entry id"
);
id32!(
    /// The id of a public key: `BLAKE3-derive_key("rmledger key v1", public key)`.
    KeyId,
    "key id"
);
id32!(
    /// The id of a federation: `BLAKE3-derive_key("rmledger federation v1", genesis bytes)`.
    FederationId,
    "federation id"
);
id32!(
    /// A Merkle tree hash: a SHA-256 leaf hash or root of a chain's tree (RFC 9162), or a
    /// BLAKE3 hash in a chain's certificate map (`certmap`).
    TreeHash,
    "tree hash"
);
id32!(
    /// The plain BLAKE3 hash of an attachment's bytes (what `b3sum` prints).
    Digest,
    "digest"
);
id32!(
    /// An Ed25519 public key (32 bytes), as enrolled by the registrar.
    PublicKey,
    "public key"
);

/// A certificate is named by the id of the entry that registered its batch.
pub type CertificateId = EntryId;

impl EntryId {
    /// The id of the entry whose COSE `Sig_structure` is the concatenation of `pieces` (the
    /// structure is hashed in the pieces it is framed in, without copying it). Entries compute
    /// their id themselves; see [`crate::entry::Entry::id_of`] for the id of stored bytes.
    pub fn of_sig_structure<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Self {
        // The hasher keyed with the context is built once: deriving it is a BLAKE3 of its own.
        static ENTRY_HASHER: std::sync::LazyLock<blake3::Hasher> =
            std::sync::LazyLock::new(|| blake3::Hasher::new_derive_key(ctx::ENTRY));
        let mut hasher = ENTRY_HASHER.clone();
        for piece in pieces {
            hasher.update(piece);
        }
        Self(*hasher.finalize().as_bytes())
    }
}

impl KeyId {
    /// The id of a 32-byte Ed25519 public key.
    pub fn of(public_key: &[u8; 32]) -> Self {
        Self(blake3::derive_key(ctx::KEY, public_key))
    }
}

impl FederationId {
    /// The id of a genesis document's exact bytes.
    pub fn of(genesis_bytes: &[u8]) -> Self {
        Self(blake3::derive_key(ctx::FEDERATION, genesis_bytes))
    }
}

impl Digest {
    /// The digest of an attachment: plain BLAKE3, so anyone can check it with `b3sum`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl From<[u8; 32]> for TreeHash {
    fn from(hash: [u8; 32]) -> Self {
        Self(hash)
    }
}

fn parse_hex32(kind: &'static str, text: &str) -> Result<[u8; 32], IdError> {
    if text.len() != 64 {
        return Err(IdError::HexLength {
            kind,
            len: text.len(),
        });
    }
    // Lowercase only, so every id has exactly one text form.
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(IdError::NotHex { kind });
    }
    let bytes = data_encoding::HEXLOWER
        .decode(text.as_bytes())
        .map_err(|_| IdError::NotHex { kind })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| IdError::ByteLength {
        kind,
        len: bytes.len(),
    })
}

struct Id32Visitor(&'static str);

impl<'de> Visitor<'de> for Id32Visitor {
    type Value = [u8; 32];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} (32 bytes, or 64 lowercase hex characters)", self.0)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<[u8; 32], E> {
        parse_hex32(self.0, text).map_err(E::custom)
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<[u8; 32], E> {
        <[u8; 32]>::try_from(bytes).map_err(|_| {
            E::custom(IdError::ByteLength {
                kind: self.0,
                len: bytes.len(),
            })
        })
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<[u8; 32], E> {
        self.visit_bytes(&bytes)
    }
}

/// An organisation id: the name of a member and of its chain, e.g. `acme-rm`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct OrgId(String);

impl OrgId {
    pub fn new(text: &str) -> Result<Self, IdError> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        let first_ok = text.chars().next().is_some_and(|c| c != '-');
        if (2..=32).contains(&text.len()) && first_ok && text.chars().all(valid_char) {
            Ok(Self(text.to_owned()))
        } else {
            Err(IdError::OrgId(text.chars().take(40).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgId({})", self.0)
    }
}

impl FromStr for OrgId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        Self::new(text)
    }
}

impl<'de> Deserialize<'de> for OrgId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than `String::deserialize`: the text is checked where it lies and
        // copied once (every entry names its chain).
        struct OrgIdVisitor;
        impl Visitor<'_> for OrgIdVisitor {
            type Value = OrgId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an organisation id")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<OrgId, E> {
                OrgId::new(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(OrgIdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_id_decodes_from_valid_text_only() {
        use crate::cbor::{from_canonical, to_canonical};
        let text = to_canonical(&"acme-rm").unwrap();
        assert_eq!(
            from_canonical::<OrgId>(&text, 64).unwrap().as_str(),
            "acme-rm"
        );
        let invalid = to_canonical(&"Acme RM").unwrap();
        assert!(from_canonical::<OrgId>(&invalid, 64).is_err());
        let bytes = to_canonical(&serde_bytes::Bytes::new(b"acme-rm")).unwrap();
        assert!(from_canonical::<OrgId>(&bytes, 64).is_err());
        let json: OrgId = serde_json::from_str("\"acme-rm\"").unwrap();
        assert_eq!(json.as_str(), "acme-rm");
    }

    #[test]
    fn contexts_are_pairwise_distinct() {
        for (i, a) in ctx::ALL.iter().enumerate() {
            for b in &ctx::ALL[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let id = EntryId::of_sig_structure([&b"x"[..]]);
        assert_eq!(EntryId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(
            EntryId::from_hex("ab"),
            Err(IdError::HexLength {
                kind: "entry id",
                len: 2
            })
        );
        let upper = id.to_hex().to_uppercase();
        assert_eq!(
            EntryId::from_hex(&upper),
            Err(IdError::NotHex { kind: "entry id" })
        );
    }

    #[test]
    fn json_is_hex_and_cbor_is_bytes() {
        let id = KeyId::of(&[7; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), id);
        let cbor = cbor4ii::serde::to_vec(Vec::new(), &id).unwrap();
        assert_eq!(cbor[..2], [0x58, 32]);
        assert_eq!(cbor4ii::serde::from_slice::<KeyId>(&cbor).unwrap(), id);
    }

    #[test]
    fn org_ids() {
        for good in ["jxim", "acme-rm", "lab-01", "9x"] {
            assert!(OrgId::new(good).is_ok(), "{good}");
        }
        for bad in ["", "a", "-lab", "Lab", "la b", "lab_1", &"x".repeat(33)] {
            assert!(OrgId::new(bad).is_err(), "{bad}");
        }
    }
}
