//! BLAKE3 against the BLAKE3 team's official vectors, to pin that our ids call the crate the way
//! we think: `derive_key(context, bytes)` truncated to the standard 32 bytes.

use rmledger_schema::ids::{self, Digest, EntryId, FederationId, KeyId};

mod common;

#[derive(serde::Deserialize)]
struct Vectors {
    key: String,
    context_string: String,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    input_len: usize,
    hash: String,
    keyed_hash: String,
    derive_key: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(&common::read_vector("blake3/test_vectors.json")).unwrap()
}

fn input(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The first 32 bytes of a 131-byte extended output, as hex.
fn first32(hex: &str) -> &str {
    assert_eq!(hex.len(), 2 * 131, "extended outputs are 131 bytes");
    &hex[..64]
}

fn to_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

#[test]
fn official_vectors_hash_keyed_hash_and_derive_key() {
    let v = vectors();
    assert_eq!(
        v.context_string,
        "BLAKE3 2019-12-27 16:29:52 test vectors context"
    );
    let key: [u8; 32] = v.key.as_bytes().try_into().unwrap();
    assert!(v.cases.len() >= 30);
    for case in &v.cases {
        let input = input(case.input_len);
        let len = case.input_len;
        assert_eq!(
            to_hex(blake3::hash(&input).as_bytes()),
            first32(&case.hash),
            "hash, len {len}"
        );
        // Digest::of is plain BLAKE3, what `b3sum` prints.
        assert_eq!(
            Digest::of(&input).to_hex(),
            first32(&case.hash),
            "Digest, len {len}"
        );
        assert_eq!(
            to_hex(blake3::keyed_hash(&key, &input).as_bytes()),
            first32(&case.keyed_hash),
            "keyed_hash, len {len}"
        );
        assert_eq!(
            to_hex(&blake3::derive_key(&v.context_string, &input)),
            first32(&case.derive_key),
            "derive_key, len {len}"
        );
        // The extended output agrees with the whole 131 bytes, so "first 32" is really a prefix.
        let mut xof = [0u8; 131];
        let mut hasher = blake3::Hasher::new_derive_key(&v.context_string);
        hasher.update(&input);
        hasher.finalize_xof().fill(&mut xof);
        assert_eq!(to_hex(&xof), case.derive_key, "derive_key XOF, len {len}");
    }
}

#[test]
fn our_ids_are_derive_key_with_our_contexts() {
    for case in vectors().cases {
        let x = input(case.input_len);
        assert_eq!(
            EntryId::of_sig_structure([&x[..]]).0,
            blake3::derive_key("rmledger entry v2", &x)
        );
        // Hashed in pieces, as entries frame their Sig_structure, the id is the same.
        let (a, b) = x.split_at(x.len() / 3);
        assert_eq!(
            EntryId::of_sig_structure([a, b]),
            EntryId::of_sig_structure([&x[..]])
        );
        assert_eq!(
            FederationId::of(&x).0,
            blake3::derive_key("rmledger federation v1", &x)
        );
        if let Ok(pk) = <[u8; 32]>::try_from(x.as_slice()) {
            assert_eq!(KeyId::of(&pk).0, blake3::derive_key("rmledger key v1", &pk));
        }
    }
    assert_eq!(ids::ctx::ENTRY, "rmledger entry v2");
    assert_eq!(ids::ctx::KEY, "rmledger key v1");
    assert_eq!(ids::ctx::FEDERATION, "rmledger federation v1");
    let pk = [7u8; 32];
    assert_eq!(KeyId::of(&pk).0, blake3::derive_key("rmledger key v1", &pk));
    // Different contexts over the same bytes never give the same id.
    let x = input(32);
    assert_ne!(
        EntryId::of_sig_structure([&x[..]]).0,
        FederationId::of(&x).0
    );
    assert_ne!(EntryId::of_sig_structure([&x[..]]).0, KeyId::of(&[0; 32]).0);
}
