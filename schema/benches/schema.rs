//! The costs on the hot path of a node: signing and checking one realistic entry (a
//! `BatchRegistered` certificate: 1.6 KB payload, 1.7 KB entry), and the pieces it is made of.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::Signer;

use rmledger_schema::cbor;
use rmledger_schema::certmap::{self, CertMap};
use rmledger_schema::cose;
use rmledger_schema::entry::{self, Entry};
use rmledger_schema::federation::{Genesis, GenesisBody, Membership};
use rmledger_schema::ids::{EntryId, TreeHash};
use rmledger_schema::records::{Anchor, Enrol, Record, Role};

fn bench(c: &mut Criterion) {
    let registrar = common::key(10);
    let producer = common::key(20);
    let genesis = Genesis::create(
        &registrar,
        GenesisBody {
            version: 1,
            name: "Bench federation".into(),
            time_unix_ms: 1_700_000_000_000,
            registrar: Enrol {
                org: common::org("samr-reg"),
                keys: vec![common::public_key(&registrar)],
                name: "Registrar".into(),
                roles: vec![Role::Registrar],
            },
            utc_offset_minutes: 480,
        },
    )
    .unwrap();
    let mut membership = Membership::new(&genesis);
    let enrol = common::sign(
        &registrar,
        rmledger_schema::entry::Payload {
            version: 1,
            operator: "registrar".into(),
            federation: genesis.id(),
            record: Record::Enrol(Enrol {
                org: common::org("acme-rm"),
                keys: vec![common::public_key(&producer)],
                name: "ACME".into(),
                roles: vec![Role::Producer],
            }),
            seq: 0,
            prev: None,
            time_unix_ms: 1_700_000_001_000,
            chain: common::org("samr-reg"),
        },
    );
    membership.apply(&enrol).unwrap();

    let payload = common::sample_payload(genesis.id());
    let entry = Entry::sign(&producer, payload.clone()).unwrap();
    let bytes = entry.bytes().to_vec();
    let payload_bytes = cbor::to_canonical(&payload).unwrap();
    membership.verify_entry(&entry).unwrap();
    eprintln!(
        "entry: {} bytes (payload {} bytes)",
        bytes.len(),
        payload_bytes.len()
    );

    let mut g = c.benchmark_group("entry");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("sign", |b| {
        b.iter(|| Entry::sign(&producer, black_box(payload.clone())).unwrap())
    });
    g.bench_function("decode", |b| {
        b.iter(|| Entry::decode(black_box(&bytes)).unwrap())
    });
    g.bench_function("verify_entry (decode + authorise + verify_strict)", |b| {
        b.iter(|| {
            let entry = Entry::decode(black_box(&bytes)).unwrap();
            membership.verify_entry(&entry).unwrap()
        })
    });
    g.bench_function("Payload::decode (fields in order)", |b| {
        b.iter(|| entry::Payload::decode(black_box(&payload_bytes)).unwrap())
    });
    g.bench_function(
        "cbor::from_canonical::<Payload> (walk, serde, re-encode)",
        |b| {
            b.iter(|| {
                cbor::from_canonical::<entry::Payload>(black_box(&payload_bytes), usize::MAX)
                    .unwrap()
            })
        },
    );
    // The housekeeping entry a witness's chain is mostly made of (and the catch-up
    // benchmark's): a small record, so the envelope's share of the decoding is largest.
    let anchor = entry::Payload {
        record: Record::Anchor(Anchor {
            root: TreeHash([7; 32]),
            size: 123_456,
            chain: common::org("acme-rm"),
        }),
        ..payload.clone()
    };
    let anchor_bytes = cbor::to_canonical(&anchor).unwrap();
    g.bench_function("Payload::decode (an anchor)", |b| {
        b.iter(|| entry::Payload::decode(black_box(&anchor_bytes)).unwrap())
    });
    g.bench_function("cbor::from_canonical::<Payload> (an anchor)", |b| {
        b.iter(|| {
            cbor::from_canonical::<entry::Payload>(black_box(&anchor_bytes), usize::MAX).unwrap()
        })
    });
    g.bench_function("cbor::to_canonical(payload)", |b| {
        b.iter(|| cbor::to_canonical(black_box(&payload)).unwrap())
    });
    g.bench_function("leaf_hash", |b| {
        b.iter(|| entry::leaf_hash(black_box(&bytes)))
    });
    g.bench_function("Entry::id_of (envelope parse + id)", |b| {
        b.iter(|| Entry::id_of(black_box(&bytes)).unwrap())
    });
    g.finish();

    // Raw Ed25519 over a message of the same size as the Sig_structure we sign.
    let sign1 =
        cose::Sign1::parse(&bytes, entry::MAX_ENTRY_BYTES, cose::content_type::ENTRY).unwrap();
    let message = cose::sig_structure(sign1.protected, sign1.payload);
    let signature = producer.sign(&message);
    let vk = producer.verifying_key();
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Bytes(message.len() as u64));
    g.bench_function("sign (raw)", |b| {
        b.iter(|| producer.sign(black_box(&message)))
    });
    g.bench_function("verify_strict (raw)", |b| {
        b.iter(|| vk.verify_strict(black_box(&message), &signature).unwrap())
    });
    g.finish();
}

/// One certificate map update (an entry about an existing certificate: count + 1, new last) in
/// a chain's map of 10^4 and 10^6 certificates, and a proof and its verification at 10^6.
fn certmap(c: &mut Criterion) {
    let mut g = c.benchmark_group("certmap");
    for n in [10_000u64, 1_000_000] {
        let key = |i: u64| EntryId::of_sig_structure([&i.to_be_bytes()[..]]);
        let mut map = CertMap::new();
        for i in 0..n {
            map.record(key(i), key(i + n));
        }
        let mut i = 0u64;
        g.bench_function(format!("update ({n} keys)"), |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                map.record(black_box(key(i)), key(i + 2 * n));
            })
        });
        if n == 1_000_000 {
            let root = map.root();
            let probe = key(12_345);
            g.bench_function(format!("prove ({n} keys)"), |b| {
                b.iter(|| map.prove(black_box(&probe)))
            });
            let proof = map.prove(&probe);
            g.bench_function(format!("verify ({n} keys)"), |b| {
                b.iter(|| certmap::verify(&root, black_box(&probe), &proof).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench, certmap);
criterion_main!(benches);
