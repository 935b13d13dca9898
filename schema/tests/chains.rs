//! Chains and membership: `validate_chain` accepts every well-formed chain and names each kind
//! of break; the genesis round-trips; membership folds from the registrar's chain; and
//! `Membership::verify_entry` refuses every unauthorised or forged entry with its own error.

mod common;

use common::*;
use ed25519_dalek::{SigningKey, VerifyingKey};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use rmledger_schema::chain::{ChainError, ChainTip, Fork, validate_chain};
use rmledger_schema::cose::CoseError;
use rmledger_schema::entry::{Entry, Payload, VERSION};
use rmledger_schema::federation::{FederationError, Genesis, GenesisBody, Membership};
use rmledger_schema::ids::{EntryId, FederationId, KeyId, OrgId, PublicKey};
use rmledger_schema::records::*;

const FED: FederationId = FederationId([0x42; 32]);
const T0: u64 = 1_700_000_000_000;

fn payload_at(
    chain: &OrgId,
    seq: u64,
    prev: Option<EntryId>,
    time: u64,
    record: Record,
) -> Payload {
    Payload {
        version: VERSION,
        operator: "li.wei".into(),
        federation: FED,
        record,
        seq,
        prev,
        time_unix_ms: time,
        chain: chain.clone(),
    }
}

fn anchor(size: u64) -> Record {
    Record::Anchor(Anchor {
        root: rmledger_schema::ids::TreeHash([7; 32]),
        size,
        chain: org("jxim"),
    })
}

/// Signs `records` as a chain at the given times.
fn build(key: &SigningKey, chain: &OrgId, records: Vec<Record>, times: &[u64]) -> Vec<Entry> {
    let mut prev = None;
    let mut out = Vec::new();
    for (seq, (record, &time)) in records.into_iter().zip(times).enumerate() {
        let entry = sign(key, payload_at(chain, seq as u64, prev, time, record));
        prev = Some(entry.id());
        out.push(entry);
    }
    out
}

/// Records and non-decreasing times (equal times allowed) for a chain of 1 to 7 entries.
fn chain_input() -> impl Strategy<Value = (Vec<Record>, Vec<u64>)> {
    vec((record(), 0u64..5_000), 1..8).prop_map(|items| {
        let mut time = T0;
        items
            .into_iter()
            .map(|(record, step)| {
                time += step;
                (record, time)
            })
            .unzip()
    })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn valid_chains_validate((records, times) in chain_input(), seed in any::<u8>()) {
        let chain = org("acme-rm");
        let entries = build(&key(seed), &chain, records, &times);
        let tip = validate_chain(FED, &chain, &entries).unwrap();
        prop_assert_eq!(tip.size, entries.len() as u64);
        prop_assert_eq!(tip.head, Some(entries.last().unwrap().id()));
        prop_assert_eq!(tip.last_time_unix_ms, *times.last().unwrap());
        // An identical repeat of any entry is ignored, not a fork.
        let mut repeated = entries.clone();
        repeated.push(entries[0].clone());
        prop_assert_eq!(validate_chain(FED, &chain, &repeated).unwrap(), tip);
    }

    #[test]
    fn every_kind_of_break_is_caught(
        (records, times) in chain_input().prop_filter("two or more", |(r, _)| r.len() >= 2),
        at in any::<Index>(),
        seed in any::<u8>(),
    ) {
        let key = key(seed);
        let chain = org("acme-rm");
        let entries = build(&key, &chain, records, &times);
        let n = entries.len();
        let k = 1 + at.index(n - 1); // 1..n: the entry that breaks
        let before = &entries[k - 1];
        let head = Some(before.id());
        let with = |last: Entry| {
            let mut list = entries[..k].to_vec();
            list.push(last);
            validate_chain(FED, &chain, &list)
        };
        let resign = |edit: &dyn Fn(&mut Payload)| {
            let mut p = entries[k].payload().clone();
            edit(&mut p);
            sign(&key, p)
        };

        // Gap: the next entry claims seq k + 1.
        let skip = resign(&|p| p.seq = k as u64 + 1);
        prop_assert_eq!(with(skip), Err(ChainError::Gap { expected: k as u64, found: k as u64 + 1 }));
        if k + 1 < n {
            let mut dropped = entries.clone();
            dropped.remove(k);
            prop_assert_eq!(
                validate_chain(FED, &chain, &dropped),
                Err(ChainError::Gap { expected: k as u64, found: k as u64 + 1 })
            );
        }

        // Broken prev: a made-up id, and the id of the entry two back.
        let bogus = EntryId([0xee; 32]);
        prop_assert_eq!(
            with(resign(&|p| p.prev = Some(bogus))),
            Err(ChainError::BrokenLink { seq: k as u64, expected: head, found: Some(bogus) })
        );
        if k >= 2 {
            let two_back = Some(entries[k - 2].id());
            prop_assert_eq!(
                with(resign(&|p| p.prev = two_back)),
                Err(ChainError::BrokenLink { seq: k as u64, expected: head, found: two_back })
            );
        }

        // Time going backwards by one millisecond.
        let earlier = before.time_unix_ms() - 1;
        prop_assert_eq!(
            with(resign(&|p| p.time_unix_ms = earlier)),
            Err(ChainError::TimeBackwards {
                seq: k as u64,
                time_unix_ms: earlier,
                previous_unix_ms: before.time_unix_ms(),
            })
        );

        // Wrong chain, wrong federation.
        prop_assert_eq!(
            with(resign(&|p| p.chain = org("other-org"))),
            Err(ChainError::WrongChain { expected: chain.clone(), found: org("other-org") })
        );
        let other_fed = FederationId([0x43; 32]);
        prop_assert_eq!(
            with(resign(&|p| p.federation = other_fed)),
            Err(ChainError::WrongFederation { expected: FED, found: other_fed })
        );

        // A fork: a second, different entry at an existing seq, anywhere later in the list.
        let j = at.index(n);
        let mut p = entries[j].payload().clone();
        p.operator = "someone else".into();
        let forked = sign(&key, p);
        let mut list = entries.clone();
        list.insert(at.index(n - j) + j + 1, forked.clone());
        match validate_chain(FED, &chain, &list) {
            Err(ChainError::Fork(fork)) => {
                prop_assert_eq!(&fork.first, &entries[j]);
                prop_assert_eq!(&fork.second, &forked);
                prop_assert_eq!(fork.seq(), j as u64);
                prop_assert_eq!(fork.chain(), &chain);
            }
            other => prop_assert!(false, "expected a fork, got {other:?}"),
        }
    }
}

#[test]
fn chain_edges() {
    let key = key(1);
    let chain = org("acme-rm");
    assert_eq!(
        validate_chain(FED, &chain, &[]).unwrap(),
        ChainTip::new(FED, chain.clone())
    );
    let entries = build(&key, &chain, vec![anchor(0), anchor(1)], &[T0, T0 + 5]);
    // Starting past 0.
    assert_eq!(
        validate_chain(FED, &chain, &entries[1..]),
        Err(ChainError::Gap {
            expected: 0,
            found: 1
        })
    );
    // Another chain's entries in the list are checked, not skipped.
    let other = build(&key, &org("jxim"), vec![anchor(0)], &[T0]);
    assert!(matches!(
        validate_chain(FED, &chain, &[entries[0].clone(), other[0].clone()]),
        Err(ChainError::WrongChain { .. })
    ));
    // An entry of another federation repeating an earlier seq is not skipped as a repeat.
    let mut p = entries[0].payload().clone();
    p.federation = FederationId([0x43; 32]);
    let foreign = sign(&key, p);
    assert_eq!(
        validate_chain(
            FED,
            &chain,
            &[entries[0].clone(), entries[1].clone(), foreign]
        ),
        Err(ChainError::WrongFederation {
            expected: FED,
            found: FederationId([0x43; 32])
        })
    );
    // The future bound.
    let tip = ChainTip::new(FED, chain.clone());
    assert_eq!(tip.check_next(&entries[0], Some(T0)), Ok(()));
    assert_eq!(
        tip.check_next(&entries[0], Some(T0 - 1)),
        Err(ChainError::TimeInFuture {
            seq: 0,
            time_unix_ms: T0,
            max_unix_ms: T0 - 1
        })
    );
    // Fork::between: only different bytes at the same place.
    assert!(Fork::between(&entries[0], &entries[0]).is_none());
    assert!(Fork::between(&entries[0], &entries[1]).is_none());
}

// ---------------------------------------------------------------------------------------------
// Genesis and membership.

fn registrar_key() -> SigningKey {
    key(10)
}

fn genesis_body() -> GenesisBody {
    GenesisBody {
        version: 1,
        name: "Jiangxi reference material federation".into(),
        time_unix_ms: T0,
        registrar: Enrol {
            org: org("samr-reg"),
            keys: vec![public_key(&registrar_key())],
            name: "Registrar".into(),
            roles: vec![Role::Registrar],
        },
        utc_offset_minutes: 480,
    }
}

/// The federation id of `genesis_body()` signed by `registrar_key()`. Ed25519 signatures are
/// deterministic, so this changes only if the genesis encoding, COSE envelope or id derivation
/// does: every existing federation would get a new id.
const PINNED_FEDERATION_ID: &str =
    "37e566070aa327413d03fd8c5dc3bff37fc141d320f400c5068c5e34e2924b97";

#[test]
fn genesis_round_trip_and_id_stability() {
    let genesis = Genesis::create(&registrar_key(), genesis_body()).unwrap();
    let decoded = Genesis::decode(genesis.bytes()).unwrap();
    assert_eq!(decoded.id(), genesis.id());
    assert_eq!(decoded.body(), &genesis_body());
    assert_eq!(decoded.bytes(), genesis.bytes());
    assert_eq!(genesis.id(), FederationId::of(genesis.bytes()));
    assert_eq!(genesis.id().to_hex(), PINNED_FEDERATION_ID);
    // Same inputs, same bytes; any change, another federation.
    let again = Genesis::create(&registrar_key(), genesis_body()).unwrap();
    assert_eq!(again.bytes(), genesis.bytes());
    let mut renamed = genesis_body();
    renamed.name.push('!');
    assert_ne!(
        Genesis::create(&registrar_key(), renamed).unwrap().id(),
        genesis.id()
    );
    // Signed by another key: refused at creation.
    assert!(matches!(
        Genesis::create(&key(11), genesis_body()),
        Err(FederationError::Genesis(_))
    ));
    // A flipped signature byte: refused at decoding.
    let mut bad = genesis.bytes().to_vec();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(
        Genesis::decode(&bad).unwrap_err(),
        FederationError::Signature(CoseError::BadSignature)
    );
}

/// A genesis signed as `Genesis::create` would, without its checks.
fn unchecked_genesis(body: &GenesisBody, vds: Option<u64>) -> Vec<u8> {
    let key = registrar_key();
    let header = rmledger_schema::cose::ProtectedHeader {
        content_type: rmledger_schema::cose::content_type::GENESIS.into(),
        kid: kid(&key),
        issuer: body.registrar.org.as_str().into(),
        issued_at_s: body.time_unix_ms / 1000,
        vds,
    };
    let payload = rmledger_schema::cbor::to_canonical(body).unwrap();
    rmledger_schema::cose::sign(&key, &header, &payload)
}

#[test]
fn genesis_refuses_registrar_keys_membership_could_not_enrol() {
    // Before the fix these decoded, and Membership::new then panicked enrolling them.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for extra in [
        PublicKey(identity),
        PublicKey(not_a_point()),
        public_key(&registrar_key()),
    ] {
        let mut body = genesis_body();
        body.registrar.keys.push(extra);
        assert!(matches!(
            Genesis::create(&registrar_key(), body.clone()),
            Err(FederationError::Genesis(_))
        ));
        assert!(matches!(
            Genesis::decode(&unchecked_genesis(&body, None)),
            Err(FederationError::Genesis(_))
        ));
    }
    // A second good key is fine, and both are enrolled.
    let mut body = genesis_body();
    body.registrar.keys.push(public_key(&key(12)));
    let genesis = Genesis::decode(&unchecked_genesis(&body, None)).unwrap();
    let m = Membership::new(&genesis);
    assert_eq!(m.member(&org("samr-reg")).unwrap().keys.len(), 2);
    // The hand-built genesis is byte for byte what create writes; with vds it is refused.
    assert_eq!(
        unchecked_genesis(&genesis_body(), None),
        Genesis::create(&registrar_key(), genesis_body())
            .unwrap()
            .bytes()
    );
    assert!(matches!(
        Genesis::decode(&unchecked_genesis(&genesis_body(), Some(1))),
        Err(FederationError::Genesis(_))
    ));
}

struct World {
    membership: Membership,
    producer1: SigningKey,
    producer2: SigningKey,
    lab: SigningKey,
}

const KEY2_ADDED: u64 = T0 + 10_000;
const KEY1_REVOKED_FROM: u64 = T0 + 15_000;
const LAB_SUSPENDED: u64 = T0 + 30_000;
const LAB_REINSTATED: u64 = T0 + 40_000;

/// A federation whose registrar enrolled a producer and a lab, rotated the producer's key
/// (revoking the first from earlier than the revocation entry), and suspended and reinstated
/// the lab.
fn world() -> World {
    let genesis = Genesis::create(&registrar_key(), genesis_body()).unwrap();
    let mut membership = Membership::new(&genesis);
    let (producer1, producer2, lab) = (key(20), key(21), key(30));
    let registrar = org("samr-reg");
    let records = vec![
        (
            T0 + 1_000,
            Record::Enrol(Enrol {
                org: org("acme-rm"),
                keys: vec![public_key(&producer1)],
                name: "ACME Reference Materials".into(),
                roles: vec![Role::Producer],
            }),
        ),
        (
            T0 + 2_000,
            Record::Enrol(Enrol {
                org: org("lab-01"),
                keys: vec![public_key(&lab)],
                name: "测试实验室".into(),
                roles: vec![Role::Lab, Role::Lab],
            }),
        ),
        (
            KEY2_ADDED,
            Record::KeyAdded(KeyAdded {
                key: public_key(&producer2),
                org: org("acme-rm"),
            }),
        ),
        (
            T0 + 20_000,
            Record::KeyRevoked(KeyRevoked {
                kid: KeyId::of(&producer1.verifying_key().to_bytes()),
                org: org("acme-rm"),
                revoked_from_unix_ms: KEY1_REVOKED_FROM,
                reason: "laptop stolen".into(),
            }),
        ),
        (
            LAB_SUSPENDED,
            Record::MemberSuspended(MemberStatus {
                org: org("lab-01"),
                reason: "audit".into(),
            }),
        ),
        (
            LAB_REINSTATED,
            Record::MemberReinstated(MemberStatus {
                org: org("lab-01"),
                reason: "audit closed".into(),
            }),
        ),
    ];
    let mut prev = None;
    for (seq, (time, record)) in records.into_iter().enumerate() {
        let mut p = payload_at(&registrar, seq as u64, prev, time, record);
        p.federation = membership.federation();
        let entry = sign(&registrar_key(), p);
        membership.verify_entry(&entry).unwrap();
        membership.apply(&entry).unwrap();
        prev = Some(entry.id());
    }
    World {
        membership,
        producer1,
        producer2,
        lab,
    }
}

impl World {
    fn entry(&self, key: &SigningKey, chain: &str, time: u64, record: Record) -> Entry {
        let mut p = payload_at(&org(chain), 0, None, time, record);
        p.federation = self.membership.federation();
        sign(key, p)
    }

    fn verify(
        &self,
        key: &SigningKey,
        chain: &str,
        time: u64,
        record: Record,
    ) -> Result<(), FederationError> {
        self.membership
            .verify_entry(&self.entry(key, chain, time, record))
    }
}

fn batch() -> Record {
    Record::BatchRegistered(sample_certificate())
}

fn received() -> Record {
    Record::Received(Received {
        cert: EntryId([1; 32]),
        from: org("acme-rm"),
        serials: rmledger_schema::serial::SerialSet::new(vec![
            rmledger_schema::serial::SerialRange::parse("A-0001..A-0010").unwrap(),
        ])
        .unwrap(),
    })
}

fn kid(key: &SigningKey) -> KeyId {
    KeyId::of(&key.verifying_key().to_bytes())
}

#[test]
fn membership_folds_from_the_registrar_chain() {
    let w = world();
    let m = &w.membership;
    assert_eq!(m.applied(), 6);
    assert_eq!(m.registrar(), &org("samr-reg"));
    assert_eq!(m.utc_offset_minutes(), 480);
    let orgs: Vec<_> = m.members().map(|m| m.org.as_str().to_owned()).collect();
    assert_eq!(orgs, ["acme-rm", "lab-01", "samr-reg"]);

    let acme = m.member(&org("acme-rm")).unwrap();
    assert_eq!(acme.roles, [Role::Producer]);
    assert_eq!(acme.keys.len(), 2);
    assert_eq!(acme.keys[0].kid, kid(&w.producer1));
    assert_eq!(acme.keys[0].valid_from, T0 + 1_000);
    assert_eq!(acme.keys[0].revoked_from, Some(KEY1_REVOKED_FROM));
    assert_eq!(acme.keys[1].kid, kid(&w.producer2));
    assert_eq!(acme.keys[1].valid_from, KEY2_ADDED);
    assert_eq!(acme.keys[1].revoked_from, None);

    let lab = m.member(&org("lab-01")).unwrap();
    assert_eq!(lab.roles, [Role::Lab], "roles are deduplicated");
    assert_eq!(lab.suspensions, [(LAB_SUSPENDED, Some(LAB_REINSTATED))]);
    assert!(!lab.suspended_at(LAB_SUSPENDED - 1));
    assert!(lab.suspended_at(LAB_SUSPENDED));
    assert!(lab.suspended_at(LAB_REINSTATED - 1));
    assert!(!lab.suspended_at(LAB_REINSTATED));

    let (member, lab_key) = m.key(&kid(&w.lab)).unwrap();
    assert_eq!(member.org, org("lab-01"));
    assert_eq!(lab_key.public_key, public_key(&w.lab));

    // Folding refuses what cannot be applied.
    let mut m = m.clone();
    let stray = w.entry(&w.producer2, "acme-rm", T0 + 50_000, anchor(0));
    assert!(matches!(
        m.apply(&stray),
        Err(FederationError::Membership(_))
    ));
    for bad in [
        Record::Enrol(Enrol {
            org: org("acme-rm"),
            keys: vec![PublicKey([99; 32])],
            name: "again".into(),
            roles: vec![Role::Lab],
        }),
        Record::KeyAdded(KeyAdded {
            key: public_key(&w.lab),
            org: org("acme-rm"),
        }),
        Record::KeyAdded(KeyAdded {
            key: public_key(&key(77)),
            org: org("nobody"),
        }),
        Record::KeyRevoked(KeyRevoked {
            kid: kid(&w.producer1),
            org: org("acme-rm"),
            revoked_from_unix_ms: T0,
            reason: "twice".into(),
        }),
        Record::KeyRevoked(KeyRevoked {
            kid: kid(&w.lab),
            org: org("acme-rm"),
            revoked_from_unix_ms: T0,
            reason: "not theirs".into(),
        }),
        Record::MemberReinstated(MemberStatus {
            org: org("lab-01"),
            reason: "not suspended".into(),
        }),
        Record::MemberSuspended(MemberStatus {
            org: org("samr-reg"),
            reason: "itself".into(),
        }),
    ] {
        assert!(
            matches!(
                m.check_record(&bad, u64::MAX >> 1),
                Err(FederationError::Membership(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn verify_entry_accepts_authorised_entries() {
    let w = world();
    w.verify(&w.producer1, "acme-rm", T0 + 5_000, batch())
        .unwrap();
    w.verify(&w.producer1, "acme-rm", KEY1_REVOKED_FROM - 1, batch())
        .unwrap();
    w.verify(&w.producer2, "acme-rm", KEY2_ADDED, batch())
        .unwrap();
    w.verify(&w.lab, "lab-01", LAB_SUSPENDED - 1, received())
        .unwrap();
    w.verify(&w.lab, "lab-01", LAB_REINSTATED, received())
        .unwrap();
    // Anchors: any member.
    w.verify(&w.lab, "lab-01", LAB_REINSTATED, anchor(3))
        .unwrap();
}

#[test]
fn verify_entry_refusals() {
    let w = world();
    let fed = w.membership.federation();

    let stranger = key(99);
    assert_eq!(
        w.verify(&stranger, "acme-rm", T0 + 5_000, batch()),
        Err(FederationError::UnknownKey {
            kid: kid(&stranger)
        })
    );

    assert_eq!(
        w.verify(&w.lab, "acme-rm", T0 + 5_000, batch()),
        Err(FederationError::KeyNotChainOwner {
            kid: kid(&w.lab),
            owner: org("lab-01"),
            chain: org("acme-rm"),
        })
    );

    assert_eq!(
        w.verify(&w.producer2, "acme-rm", KEY2_ADDED - 1, batch()),
        Err(FederationError::KeyNotYetValid {
            kid: kid(&w.producer2),
            org: org("acme-rm"),
            time_unix_ms: KEY2_ADDED - 1,
            valid_from_unix_ms: KEY2_ADDED,
        })
    );

    for time in [KEY1_REVOKED_FROM, KEY1_REVOKED_FROM + 1, T0 + 1_000_000] {
        assert_eq!(
            w.verify(&w.producer1, "acme-rm", time, batch()),
            Err(FederationError::KeyRevoked {
                kid: kid(&w.producer1),
                org: org("acme-rm"),
                time_unix_ms: time,
                revoked_from_unix_ms: KEY1_REVOKED_FROM,
            })
        );
    }

    for time in [LAB_SUSPENDED, LAB_REINSTATED - 1] {
        assert_eq!(
            w.verify(&w.lab, "lab-01", time, received()),
            Err(FederationError::MemberSuspended {
                org: org("lab-01"),
                time_unix_ms: time,
            })
        );
    }

    assert!(matches!(
        w.verify(&w.lab, "lab-01", LAB_REINSTATED, batch()),
        Err(FederationError::RoleNotAllowed { kind: RecordKind::BatchRegistered, ref org, .. })
            if org.as_str() == "lab-01"
    ));
    // Only the registrar enrols.
    assert!(matches!(
        w.verify(
            &w.producer2,
            "acme-rm",
            KEY2_ADDED,
            Record::KeyAdded(KeyAdded {
                key: public_key(&key(50)),
                org: org("acme-rm"),
            })
        ),
        Err(FederationError::RoleNotAllowed {
            kind: RecordKind::KeyAdded,
            ..
        })
    ));

    let mut p = payload_at(&org("acme-rm"), 0, None, T0 + 5_000, batch());
    p.federation = FederationId([0x43; 32]);
    assert_eq!(
        w.membership.verify_entry(&sign(&w.producer1, p)),
        Err(FederationError::WrongFederation {
            expected: fed,
            found: FederationId([0x43; 32]),
        })
    );

    // A bad signature: the last byte of the signature flipped.
    let good = w.entry(&w.producer1, "acme-rm", T0 + 5_000, batch());
    let mut bytes = good.bytes().to_vec();
    *bytes.last_mut().unwrap() ^= 0x01;
    let forged = Entry::decode(&bytes).unwrap();
    assert_eq!(
        w.membership.verify_entry(&forged),
        Err(FederationError::Signature(CoseError::BadSignature))
    );
    // A valid signature by the right key over different content, spliced in.
    let other = w.entry(&w.producer1, "acme-rm", T0 + 6_000, batch());
    let mut spliced = good.bytes().to_vec();
    let n = spliced.len();
    spliced[n - 64..].copy_from_slice(&other.bytes()[other.bytes().len() - 64..]);
    assert_eq!(
        w.membership.verify_entry(&Entry::decode(&spliced).unwrap()),
        Err(FederationError::Signature(CoseError::BadSignature))
    );
}

/// A 32-byte string that is not the encoding of any curve point.
fn not_a_point() -> [u8; 32] {
    (2u8..)
        .map(|i| [i; 32])
        .find(|b| VerifyingKey::from_bytes(b).is_err())
        .unwrap()
}

#[test]
fn weak_and_invalid_keys_are_refused_at_enrolment() {
    let w = world();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    // The eight small-order points include the identity and (0, -1): y = p - 1.
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    for weak in [identity, minus_one, not_a_point()] {
        let enrol = Record::Enrol(Enrol {
            org: org("weak-lab"),
            keys: vec![PublicKey(weak)],
            name: "Weak".into(),
            roles: vec![Role::Lab],
        });
        assert!(
            matches!(
                w.membership.check_record(&enrol, u64::MAX >> 1),
                Err(FederationError::Membership(_))
            ),
            "{weak:02x?}"
        );
        let added = Record::KeyAdded(KeyAdded {
            key: PublicKey(weak),
            org: org("acme-rm"),
        });
        assert!(matches!(
            w.membership.check_record(&added, u64::MAX >> 1),
            Err(FederationError::Membership(_))
        ));
    }
    assert!(VerifyingKey::from_bytes(&identity).unwrap().is_weak());
    assert!(VerifyingKey::from_bytes(&minus_one).unwrap().is_weak());
    // Through the registrar's chain too: the entry is authorised, applying it fails.
    let registrar = org("samr-reg");
    let mut m = w.membership.clone();
    let mut p = payload_at(
        &registrar,
        m.applied(),
        Some(EntryId([1; 32])),
        T0 + 60_000,
        Record::Enrol(Enrol {
            org: org("weak-lab"),
            keys: vec![PublicKey(identity)],
            name: "Weak".into(),
            roles: vec![Role::Lab],
        }),
    );
    p.federation = m.federation();
    let entry = sign(&registrar_key(), p);
    m.verify_entry(&entry).unwrap();
    match m.apply(&entry) {
        Err(FederationError::Membership(msg)) => assert!(msg.contains("weak"), "{msg}"),
        other => panic!("expected a weak-key refusal, got {other:?}"),
    }
    assert!(m.member(&org("weak-lab")).is_none());
}
