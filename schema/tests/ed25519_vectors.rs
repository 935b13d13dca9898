//! Ed25519 against published vectors: SUPERCOP `sign.input` (RFC 8032 §7.1 in lines 1–3) for
//! signing and `verify_strict`, and the C2SP/CCTV edge cases for exactly which signatures every
//! node accepts. Then the same refusal through our own COSE and entry path.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rmledger_schema::cose::{self, CoseError, ProtectedHeader, Sign1};
use rmledger_schema::entry::{Entry, MAX_ENTRY_BYTES};
use rmledger_schema::federation::{self, FederationError};
use rmledger_schema::ids::PublicKey;

mod common;

fn read(name: &str) -> String {
    common::read_vector(&format!("ed25519/{name}"))
}

fn hex(text: &str) -> Vec<u8> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .unwrap_or_else(|e| panic!("bad hex {text:?}: {e}"))
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().expect("length")
}

#[test]
fn supercop_sign_input_signs_and_verifies_byte_for_byte() {
    let text = read("TESTVECTORS");
    let mut count = 0;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let fields: Vec<&str> = line.split(':').collect();
        assert_eq!(
            fields.len(),
            5,
            "line {}: expected `sk‖pk:pk:msg:sig‖msg:`",
            n + 1
        );
        let sk_pk = hex(fields[0]);
        let pk = hex(fields[1]);
        let msg = hex(fields[2]);
        let sig_msg = hex(fields[3]);
        assert_eq!(sk_pk.len(), 64, "line {}", n + 1);
        assert_eq!(
            &sk_pk[32..],
            &pk[..],
            "line {}: sk‖pk and pk disagree",
            n + 1
        );
        assert_eq!(
            &sig_msg[64..],
            &msg[..],
            "line {}: sig‖msg and msg disagree",
            n + 1
        );

        let key = SigningKey::from_bytes(&array(&sk_pk[..32]));
        assert_eq!(
            key.verifying_key().as_bytes()[..],
            pk[..],
            "line {}: public key",
            n + 1
        );
        let signature = key.sign(&msg);
        assert_eq!(
            signature.to_bytes()[..],
            sig_msg[..64],
            "line {}: signature",
            n + 1
        );

        let vk = VerifyingKey::from_bytes(&array(&pk)).unwrap();
        vk.verify_strict(&msg, &signature)
            .unwrap_or_else(|e| panic!("line {}: verify_strict refused: {e}", n + 1));
        count += 1;
    }
    assert_eq!(count, 128, "the vendored sign.input has 128 lines");
}

/// The CCTV vectors that `VerifyingKey::from_bytes` + `verify_strict` accept, out of 0..=913.
///
/// Every vector is a valid signature under *some* reading of Ed25519 (cofactored, cofactorless,
/// ZIP-215, ...); they differ in the edge cases, which `verify_strict` resolves as follows. It
/// refuses:
/// * `low_order_A`: a small-order (weak) public key; this includes every `non_canonical_A`
///   vector here, since the non-canonical encodings in this set are all of low-order points;
/// * `low_order_R`: a small-order commitment R;
/// * `non_canonical_R`: R is recomputed as `[S]B - [k]A` and compared *as bytes* with the
///   signature's R, so a non-canonical encoding never matches;
/// * `low_order_residue`: only the cofactored equation holds; `verify_strict` is cofactorless,
///   so the small-order residue makes the recomputed R differ.
///
/// It accepts the rest: the one plain vector (899) and the 42 whose A and/or R merely have a
/// low-order *component* (mixed order: no torsion-freeness check) while the cofactorless
/// equation holds exactly. Every node runs the same call, so all accept exactly this set; a
/// dependency upgrade that changes it fails here.
const ACCEPTED_BY_VERIFY_STRICT: &[u64] = &[
    7, 29, 50, 117, 139, 161, 182, 249, 305, 411, 425, 438, 465, 473, 481, 489, 497, 511, 525, 538,
    565, 573, 581, 589, 597, 611, 625, 638, 665, 673, 681, 689, 697, 711, 725, 738, 765, 773, 781,
    789, 797, 832, 899,
];

#[derive(serde::Deserialize)]
struct Validation {
    number: u64,
    key: String,
    sig: String,
    msg: String,
    flags: Option<Vec<String>>,
}

fn strict_accepts(v: &Validation) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(&array(&hex(&v.key))) else {
        return false;
    };
    let sig = Signature::from_bytes(&array(&hex(&v.sig)));
    vk.verify_strict(v.msg.as_bytes(), &sig).is_ok()
}

#[test]
fn cctv_edge_cases_accepted_set_is_pinned() {
    let vectors: Vec<Validation> = serde_json::from_str(&read("VALIDATIONVECTORS")).unwrap();
    assert_eq!(vectors.len(), 914);
    let accepted: Vec<u64> = vectors
        .iter()
        .filter(|v| strict_accepts(v))
        .map(|v| v.number)
        .collect();
    assert_eq!(
        accepted, ACCEPTED_BY_VERIFY_STRICT,
        "the set of CCTV vectors verify_strict accepts changed"
    );
    // The rule behind the list: accepted exactly when no flag beyond a low-order component.
    for v in &vectors {
        let flags = v.flags.clone().unwrap_or_default();
        let benign = flags
            .iter()
            .all(|f| f == "low_order_component_A" || f == "low_order_component_R");
        assert_eq!(strict_accepts(v), benign, "vector {} {flags:?}", v.number);
    }
}

/// The identity point: the weakest key there is. With R = identity and S = 0 the cofactorless
/// equation `[S]B = R + [k]A` holds for every message.
const IDENTITY: [u8; 32] = {
    let mut p = [0u8; 32];
    p[0] = 1;
    p
};

fn universal_forgery() -> Signature {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&IDENTITY);
    Signature::from_bytes(&sig)
}

#[test]
fn weak_key_forgery_is_refused_by_the_cose_path() {
    let weak = VerifyingKey::from_bytes(&IDENTITY).unwrap();
    assert!(weak.is_weak());
    let header = ProtectedHeader {
        content_type: cose::content_type::ENTRY.into(),
        kid: cose::key_id(&weak),
        issuer: "acme-rm".into(),
        issued_at_s: 1_700_000_000,
        vds: None,
    };
    let protected = header.encode();
    let payload = b"\xa1\x61\x76\x01";
    let message = cose::sig_structure(&protected, payload);
    // The forgery is real: plain (non-strict) verification accepts it.
    weak.verify(&message, &universal_forgery()).unwrap();
    let bytes = cose::assemble(
        &protected,
        &[0xa0],
        payload,
        &universal_forgery().to_bytes(),
    );
    let sign1 = Sign1::parse(&bytes, MAX_ENTRY_BYTES, cose::content_type::ENTRY).unwrap();
    assert_eq!(sign1.verify(&weak), Err(CoseError::BadSignature));

    // And a weak key never becomes a member key in the first place.
    assert!(matches!(
        federation::verifying_key(&PublicKey(IDENTITY)),
        Err(FederationError::Membership(_))
    ));
}

#[test]
fn weak_key_forgery_is_refused_for_a_whole_entry() {
    use rmledger_schema::cbor;
    use rmledger_schema::entry::Payload;
    use rmledger_schema::ids::TreeHash;
    use rmledger_schema::ids::{EntryId, FederationId, OrgId};
    use rmledger_schema::records::{Anchor, Record};

    let weak = VerifyingKey::from_bytes(&IDENTITY).unwrap();
    let payload = Payload {
        version: 1,
        operator: "mallory".into(),
        federation: FederationId([9; 32]),
        record: Record::Anchor(Anchor {
            root: TreeHash([1; 32]),
            size: 1,
            chain: OrgId::new("acme-rm").unwrap(),
        }),
        seq: 1,
        prev: Some(EntryId([2; 32])),
        time_unix_ms: 1_700_000_000_123,
        chain: OrgId::new("acme-rm").unwrap(),
    };
    let header = ProtectedHeader {
        content_type: cose::content_type::ENTRY.into(),
        kid: cose::key_id(&weak),
        issuer: "acme-rm".into(),
        issued_at_s: 1_700_000_000,
        vds: None,
    };
    let payload_bytes = cbor::to_canonical(&payload).unwrap();
    let bytes = cose::assemble(
        &header.encode(),
        &[0xa0],
        &payload_bytes,
        &universal_forgery().to_bytes(),
    );
    let entry = Entry::decode(&bytes).expect("structurally fine");
    assert_eq!(entry.verify_signature(&weak), Err(CoseError::BadSignature));
}
