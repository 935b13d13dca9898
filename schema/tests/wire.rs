//! The wire format: every record encodes canonically, entries round-trip byte for byte, the
//! decoder refuses each kind of malformed entry with its specific error, no one-byte change of
//! a signed entry survives, and every record round-trips through JSON (the HTTP API form).

mod common;

use std::collections::BTreeSet;

use common::*;
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde::Serialize;

use rmledger_schema::cbor::{self, CborError, Writer, major};
use rmledger_schema::cose::{self, CoseError, ProtectedHeader, Sign1};
use rmledger_schema::entry::{Entry, EntryError, MAX_ENTRY_BYTES, Payload, Unsigned};
use rmledger_schema::ids::{EntryId, FederationId, TreeHash};
use rmledger_schema::records::{Anchor, Record, RecordKind};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

#[test]
fn the_record_generator_covers_every_variant() {
    let mut runner = TestRunner::deterministic();
    let strategy = record();
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        seen.insert(strategy.new_tree(&mut runner).unwrap().current().kind());
        if seen.len() == RecordKind::ALL.len() {
            return;
        }
    }
    let missing: Vec<_> = RecordKind::ALL
        .iter()
        .filter(|k| !seen.contains(k))
        .collect();
    panic!("never generated: {missing:?}");
}

proptest! {
    #![proptest_config(config(128))]

    /// Field declaration order is canonical key order: cbor4ii's output passes the gate.
    #[test]
    fn every_record_encodes_canonically(record in record()) {
        let bytes = cbor::to_canonical(&record).unwrap();
        let back: Record = cbor::from_canonical(&bytes, usize::MAX).unwrap();
        prop_assert_eq!(back, record);
    }

    #[test]
    fn sign_decode_round_trip(payload in payload(), seed in any::<u8>()) {
        let payload_bytes = cbor::to_canonical(&payload).unwrap();
        let key = key(seed);
        let entry = Entry::sign(&key, payload.clone()).unwrap();
        let decoded = Entry::decode(entry.bytes()).unwrap();
        prop_assert_eq!(decoded.payload(), &payload);
        prop_assert_eq!(decoded.id(), entry.id());
        prop_assert_eq!(decoded.id(), Entry::id_of(entry.bytes()).unwrap());
        prop_assert_eq!(decoded.kid(), cose::key_id(&key.verifying_key()));
        decoded.verify_signature(&key.verifying_key()).unwrap();
        // encode → decode → encode is byte-identical, at both layers.
        let sign1 = Sign1::parse(entry.bytes(), MAX_ENTRY_BYTES, cose::content_type::ENTRY).unwrap();
        prop_assert_eq!(sign1.payload, &payload_bytes[..]);
        prop_assert_eq!(cbor::to_canonical(decoded.payload()).unwrap(), payload_bytes);
        let again = Entry::sign(&key, decoded.payload().clone()).unwrap();
        prop_assert_eq!(again.bytes(), entry.bytes());
        let reassembled = cose::assemble(sign1.protected, sign1.unprotected, sign1.payload, &sign1.signature);
        prop_assert_eq!(&reassembled[..], entry.bytes());
        // The id is BLAKE3-derive_key over exactly the bytes the signature covers (format §2).
        let signed = cose::sig_structure(sign1.protected, sign1.payload);
        prop_assert_eq!(decoded.id().0, blake3::derive_key("rmledger entry v2", &signed));
        key.verifying_key().verify_strict(&signed, &ed25519_dalek::Signature::from_bytes(&sign1.signature)).unwrap();
        prop_assert_eq!(
            cose::assembled_len(sign1.protected.len(), 1, sign1.payload.len()),
            entry.bytes().len()
        );
    }

    /// `Payload::decode` reads the fields in order instead of walking, deserialising and
    /// re-encoding the whole payload: what it accepts, the general decoder must accept with
    /// the same value, for every payload and every one-byte change, cut or insertion of one.
    #[test]
    fn the_payload_decoder_accepts_what_the_general_one_does(
        payload in payload(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let bytes = cbor::to_canonical(&payload).unwrap();
        prop_assert_eq!(Payload::decode(&bytes), Ok(payload));
        let at = at.index(bytes.len());
        let mut changed = bytes.clone();
        changed[at] = byte;
        let mut inserted = bytes.clone();
        inserted.insert(at, byte);
        for variant in [changed, inserted, bytes[..at].to_vec()] {
            let general = cbor::from_canonical::<Payload>(&variant, MAX_ENTRY_BYTES);
            prop_assert_eq!(Payload::decode(&variant).ok(), general.ok());
        }
    }

    #[test]
    fn every_record_round_trips_through_json(record in record()) {
        let json = serde_json::to_string(&record).unwrap();
        let back: Record = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &record);
        // JSON → CBOR of the same value is still canonical: the API and the wire agree.
        prop_assert_eq!(cbor::to_canonical(&back).unwrap(), cbor::to_canonical(&record).unwrap());
    }

    #[test]
    fn every_payload_round_trips_through_json(payload in payload()) {
        let json = serde_json::to_value(&payload).unwrap();
        prop_assert_eq!(json["fed"].as_str().unwrap(), payload.federation.to_hex());
        let back: Payload = serde_json::from_value(json).unwrap();
        prop_assert_eq!(back, payload);
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed entries, built by hand.

const TIME: u64 = 1_700_000_000_123;

fn enc<T: Serialize>(value: &T) -> Vec<u8> {
    cbor::to_canonical(value).unwrap()
}

fn base_payload() -> Payload {
    Payload {
        version: 1,
        operator: "li.wei".into(),
        federation: FederationId([5; 32]),
        record: Record::Anchor(Anchor {
            root: TreeHash([3; 32]),
            size: 17,
            chain: org("jxim"),
        }),
        seq: 0,
        prev: None,
        time_unix_ms: TIME,
        chain: org("acme-rm"),
    }
}

/// The payload's fields as (key, encoded value), in canonical order.
fn fields(p: &Payload) -> Vec<(String, Vec<u8>)> {
    vec![
        ("v".into(), enc(&p.version)),
        ("op".into(), enc(&p.operator)),
        ("fed".into(), enc(&p.federation)),
        ("rec".into(), enc(&p.record)),
        ("seq".into(), enc(&p.seq)),
        ("prev".into(), enc(&p.prev)),
        ("time".into(), enc(&p.time_unix_ms)),
        ("chain".into(), enc(&p.chain)),
    ]
}

fn set(fields: &mut [(String, Vec<u8>)], key: &str, value: Vec<u8>) {
    fields.iter_mut().find(|(k, _)| k == key).unwrap().1 = value;
}

/// Writes a map in the order given, whatever it is.
fn map(fields: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.head(major::MAP, fields.len() as u64);
    for (k, v) in fields {
        w.text(k).raw(v);
    }
    w.into_bytes()
}

fn header(p: &Payload, key: &SigningKey) -> ProtectedHeader {
    ProtectedHeader {
        content_type: cose::content_type::ENTRY.into(),
        kid: cose::key_id(&key.verifying_key()),
        issuer: p.chain.as_str().into(),
        issued_at_s: p.time_unix_ms / 1000,
        vds: None,
    }
}

/// Signs the Sig_structure over exactly these bytes and assembles a COSE_Sign1.
fn seal(key: &SigningKey, header: &ProtectedHeader, unprotected: &[u8], payload: &[u8]) -> Vec<u8> {
    let protected = header.encode();
    let signature = key.sign(&cose::sig_structure(&protected, payload));
    cose::assemble(&protected, unprotected, payload, &signature.to_bytes())
}

fn seal_fields(key: &SigningKey, fields: &[(String, Vec<u8>)]) -> Vec<u8> {
    seal(key, &header(&base_payload(), key), &[0xa0], &map(fields))
}

#[test]
fn hand_built_baseline_is_what_entry_sign_writes() {
    let key = key(1);
    let bytes = seal_fields(&key, &fields(&base_payload()));
    let signed = Entry::sign(&key, base_payload()).unwrap();
    assert_eq!(bytes, signed.bytes());
    let entry = Entry::decode(&bytes).unwrap();
    assert_eq!(entry.payload(), &base_payload());
    entry.verify_signature(&key.verifying_key()).unwrap();
}

#[test]
fn strictness_table() {
    let key = key(1);
    let base = base_payload();
    let decode = |bytes: &[u8]| Entry::decode(bytes).map(|_| ());
    let payload_err = |bytes: &[u8]| match Entry::decode(bytes) {
        Err(EntryError::Payload(e)) => e,
        other => panic!("expected a payload error, got {other:?}"),
    };
    let good = seal_fields(&key, &fields(&base));

    // Trailing bytes after the envelope, and inside the payload byte string.
    let mut trailing = good.clone();
    trailing.push(0x00);
    assert_eq!(
        decode(&trailing),
        Err(EntryError::Cose(CoseError::Cbor(CborError::Trailing {
            count: 1
        })))
    );
    let mut payload = map(&fields(&base));
    payload.push(0x00);
    let bytes = seal(&key, &header(&base, &key), &[0xa0], &payload);
    assert_eq!(payload_err(&bytes), CborError::Trailing { count: 1 });

    // A non-minimal integer inside the payload: seq 0 written as 0x18 0x00.
    let mut f = fields(&base);
    set(&mut f, "seq", vec![0x18, 0x00]);
    let at = map(&f).windows(2).position(|w| w == [0x18, 0x00]).unwrap();
    assert_eq!(
        payload_err(&seal_fields(&key, &f)),
        CborError::NonMinimal { at }
    );

    // Unsorted keys: seq before rec.
    let mut f = fields(&base);
    f.swap(3, 4);
    assert!(matches!(
        payload_err(&seal_fields(&key, &f)),
        CborError::KeyOrder { .. }
    ));
    // A duplicated key.
    let mut f = fields(&base);
    f.insert(5, f[4].clone());
    assert!(matches!(
        payload_err(&seal_fields(&key, &f)),
        CborError::KeyOrder { .. }
    ));

    // An unknown field, in its canonical place ("op" < "zz" < "fed").
    let mut f = fields(&base);
    f.insert(2, ("zz".into(), enc(&0u8)));
    assert!(matches!(
        payload_err(&seal_fields(&key, &f)),
        CborError::Shape(_)
    ));

    // An unknown version, alone and with a field this version does not know.
    let mut f = fields(&base);
    set(&mut f, "v", enc(&2u8));
    assert_eq!(decode(&seal_fields(&key, &f)), Err(EntryError::Version(2)));
    f.insert(2, ("zz".into(), enc(&0u8)));
    assert_eq!(decode(&seal_fields(&key, &f)), Err(EntryError::Version(2)));

    // Over 64 KiB.
    let mut f = fields(&base);
    set(&mut f, "op", enc(&"x".repeat(MAX_ENTRY_BYTES)));
    let big = seal_fields(&key, &f);
    assert_eq!(
        decode(&big),
        Err(EntryError::Cose(CoseError::Cbor(CborError::TooLarge {
            len: big.len(),
            max: MAX_ENTRY_BYTES
        })))
    );
    // And Entry::sign refuses to make one.
    let mut p = base.clone();
    p.operator = "x".repeat(100);
    p.record = Record::ForkReported(rmledger_schema::records::ForkReported {
        seq: 1,
        kind: rmledger_schema::records::EvidenceKind::Entries,
        chain: org("jxim"),
        first: rmledger_schema::records::Blob(vec![1; 40_000]),
        second: rmledger_schema::records::Blob(vec![2; 40_000]),
    });
    assert!(matches!(
        Entry::sign(&key, p),
        Err(EntryError::Payload(CborError::TooLarge { .. }))
    ));

    // The limit is checked exactly, before signing: an entry of exactly 64 KiB is built, signed
    // and decoded; one byte more is refused while still unsigned, with its exact size.
    let with_blob = |n: usize| {
        let mut p = base.clone();
        p.record = Record::ForkReported(rmledger_schema::records::ForkReported {
            seq: 1,
            kind: rmledger_schema::records::EvidenceKind::Entries,
            chain: org("jxim"),
            first: rmledger_schema::records::Blob(vec![1; n]),
            second: rmledger_schema::records::Blob(vec![2; 1000]),
        });
        p
    };
    let probe = Entry::sign(&key, with_blob(1000)).unwrap().bytes().len();
    let n = 1000 + MAX_ENTRY_BYTES - probe;
    let unsigned = Unsigned::new(&key, with_blob(n)).unwrap();
    let id = unsigned.id();
    let exact = unsigned.sign(&key);
    assert_eq!(exact.bytes().len(), MAX_ENTRY_BYTES);
    assert_eq!(exact.id(), id);
    assert_eq!(Entry::decode(exact.bytes()).unwrap(), exact);
    assert_eq!(
        Unsigned::new(&key, with_blob(n + 1)).map(|u| u.id()),
        Err(EntryError::Payload(CborError::TooLarge {
            len: MAX_ENTRY_BYTES + 1,
            max: MAX_ENTRY_BYTES
        }))
    );

    // Nested 100 deep.
    let mut f = fields(&base);
    let mut deep = vec![0x81u8; 100];
    deep.push(0x00);
    set(&mut f, "rec", deep);
    assert!(matches!(
        payload_err(&seal_fields(&key, &f)),
        CborError::TooDeep { .. }
    ));

    // Wrong content type.
    let mut h = header(&base, &key);
    h.content_type = cose::content_type::CHECKPOINT.into();
    assert_eq!(
        decode(&seal(&key, &h, &[0xa0], &map(&fields(&base)))),
        Err(EntryError::Cose(CoseError::ContentType {
            found: cose::content_type::CHECKPOINT.into(),
            expected: cose::content_type::ENTRY,
        }))
    );

    // A non-empty unprotected header ({4: h'00'}), and one that is not a map.
    let bytes = seal(
        &key,
        &header(&base, &key),
        &[0xa1, 0x04, 0x41, 0x00],
        &map(&fields(&base)),
    );
    assert_eq!(
        decode(&bytes),
        Err(EntryError::Cose(CoseError::UnprotectedNotEmpty))
    );
    let bytes = seal(&key, &header(&base, &key), &[0x80], &map(&fields(&base)));
    assert!(matches!(
        decode(&bytes),
        Err(EntryError::Cose(CoseError::Structure(_)))
    ));

    // prev non-null at seq 0, and null after it.
    let mut f = fields(&base);
    set(&mut f, "prev", enc(&Some(EntryId([8; 32]))));
    assert_eq!(
        decode(&seal_fields(&key, &f)),
        Err(EntryError::PrevAtGenesis { seq: 0 })
    );
    let mut f = fields(&base);
    set(&mut f, "seq", enc(&3u8));
    assert_eq!(
        decode(&seal_fields(&key, &f)),
        Err(EntryError::PrevAtGenesis { seq: 3 })
    );

    // iss ≠ chain.
    let mut h = header(&base, &key);
    h.issuer = "other-org".into();
    assert_eq!(
        decode(&seal(&key, &h, &[0xa0], &map(&fields(&base)))),
        Err(EntryError::IssuerMismatch {
            issuer: "other-org".into(),
            chain: org("acme-rm"),
        })
    );

    // iat ≠ time / 1000: one second off either way (the first is time rounded up).
    for iat in [TIME.div_ceil(1000), TIME / 1000 - 1] {
        let mut h = header(&base, &key);
        h.issued_at_s = iat;
        assert_eq!(
            decode(&seal(&key, &h, &[0xa0], &map(&fields(&base)))),
            Err(EntryError::IatMismatch {
                iat,
                time_unix_ms: TIME
            })
        );
    }

    // An empty operator, and one with a control character.
    for op in ["", "li\u{0}wei"] {
        let mut f = fields(&base);
        set(&mut f, "op", enc(&op));
        assert_eq!(decode(&seal_fields(&key, &f)), Err(EntryError::Operator));
    }

    // Envelope shape: no tag, a short signature.
    assert_eq!(
        decode(&good[1..]),
        Err(EntryError::Cose(CoseError::Structure("missing tag 18")))
    );
    let protected = header(&base, &key).encode();
    let mut w = Writer::new();
    w.head(major::TAG, cose::TAG_COSE_SIGN1)
        .head(major::ARRAY, 4);
    w.bytes(&protected)
        .raw(&[0xa0])
        .bytes(&map(&fields(&base)))
        .bytes(&[0; 63]);
    assert_eq!(
        decode(&w.into_bytes()),
        Err(EntryError::Cose(CoseError::SignatureLength(63)))
    );

    // vds (395) in an entry's protected header: only checkpoints carry it.
    let mut h = header(&base, &key);
    h.vds = Some(cose::VDS_RFC9162_SHA256);
    assert!(matches!(
        decode(&seal(&key, &h, &[0xa0], &map(&fields(&base)))),
        Err(EntryError::Cose(CoseError::Header(_)))
    ));

    // The baseline itself is fine.
    assert_eq!(decode(&good), Ok(()));
}

#[test]
fn the_payload_decoder_accepts_no_changed_anchor_the_general_one_refuses() {
    // Anchors are read field by field (`Payload::decode`); every byte of one, set to every
    // value, and every cut: what that reading accepts, the general decoder accepts alike.
    let mut payload = base_payload();
    payload.seq = 9;
    payload.prev = Some(EntryId([6; 32]));
    payload.record = Record::Anchor(Anchor {
        root: TreeHash([3; 32]),
        size: 300,
        chain: org("acme-rm"),
    });
    let bytes = cbor::to_canonical(&payload).unwrap();
    assert_eq!(Payload::decode(&bytes), Ok(payload));
    let agree = |variant: &[u8]| {
        let general = cbor::from_canonical::<Payload>(variant, MAX_ENTRY_BYTES);
        assert_eq!(
            Payload::decode(variant).ok(),
            general.ok(),
            "{variant:02x?}"
        );
    };
    for at in 0..bytes.len() {
        agree(&bytes[..at]);
        for byte in 0..=255u8 {
            let mut changed = bytes.clone();
            changed[at] = byte;
            agree(&changed);
        }
    }
}

#[test]
fn explicit_null_for_an_absent_optional_field_is_refused() {
    // Disposed's optional "reason" written as null instead of left out: canonical CBOR, and
    // serde would read it, but it does not re-encode to the same bytes.
    let key = key(1);
    let base = base_payload();
    let mut f = fields(&base);
    let mut rec = Writer::new();
    rec.head(major::MAP, 1).text("Disposed").head(major::MAP, 3);
    rec.text("cert").bytes(&[4; 32]);
    rec.text("reason").raw(&[0xf6]);
    rec.text("serials").head(major::ARRAY, 1).text("A-0001");
    set(&mut f, "rec", rec.into_bytes());
    assert_eq!(
        Entry::decode(&seal_fields(&key, &f)).map(|_| ()),
        Err(EntryError::Payload(CborError::NotCanonical))
    );
}

#[test]
fn any_one_byte_flip_is_caught() {
    let key = key(1);
    let vk = key.verifying_key();
    let mut payload = base_payload();
    payload.seq = 4;
    payload.prev = Some(EntryId([6; 32]));
    let entry = Entry::sign(&key, payload).unwrap();
    let bytes = entry.bytes();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut bad = bytes.to_vec();
            bad[i] ^= mask;
            if let Ok(decoded) = Entry::decode(&bad) {
                assert!(
                    decoded.verify_signature(&vk).is_err(),
                    "flipping byte {i} with {mask:#04x} still verifies"
                );
            }
        }
    }
}
