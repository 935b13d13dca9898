//! A walk through the protocol core, in memory: a federation is founded, members enrolled, a
//! certificate registered and its units shipped; every entry is verified against the pinned
//! federation id, and one entry's receipt is checked against a signed checkpoint.
//!
//! Run with `cargo run -p rmledger-schema --example walkthrough`. It shows the library alone;
//! the demo of the whole system is `scripts/demo.sh` (four nodes and the CLI).

use ed25519_dalek::SigningKey;
use rmledger_schema::chain::ChainTip;
use rmledger_schema::checkpoint::{Checkpoint, CheckpointBody, Receipt};
use rmledger_schema::date::{Date, Period};
use rmledger_schema::decimal::Decimal;
use rmledger_schema::entry::{Entry, Payload, VERSION};
use rmledger_schema::federation::{Genesis, GenesisBody, Membership};
use rmledger_schema::ids::{OrgId, PublicKey, TreeHash};
use rmledger_schema::merkle::{MemoryTree, Sha256};
use rmledger_schema::records::*;
use rmledger_schema::rmcode::RmCode;
use rmledger_schema::serial::{SerialRange, SerialSet};
use rmledger_schema::units::Unit;

fn org(name: &str) -> OrgId {
    OrgId::new(name).expect("valid org id")
}

fn main() {
    let institute = SigningKey::from_bytes(&[11; 32]);
    let producer = SigningKey::from_bytes(&[12; 32]);
    let lab = SigningKey::from_bytes(&[13; 32]);
    let public = |k: &SigningKey| PublicKey(k.verifying_key().to_bytes());
    let start = 1_767_225_600_000u64;

    println!("1. The institute founds the federation (the genesis is its trust anchor).");
    let genesis = Genesis::create(
        &institute,
        GenesisBody {
            version: 1,
            name: "Jiangxi reference material federation (demo)".into(),
            time_unix_ms: start,
            registrar: Enrol {
                org: org("jxim"),
                keys: vec![public(&institute)],
                name: "Jiangxi Institute of Metrology".into(),
                roles: vec![Role::Registrar, Role::Institute],
            },
            utc_offset_minutes: 480,
        },
    )
    .expect("genesis");
    println!("   federation id {}", genesis.id());

    let mut membership = Membership::new(&genesis);
    let mut chains: Vec<(OrgId, Vec<Entry>)> = Vec::new();
    let mut time = start;
    let mut write =
        |key: &SigningKey, chain: &str, record: Record, membership: &mut Membership| -> Entry {
            time += 60_000;
            let list = match chains.iter_mut().position(|(c, _)| c.as_str() == chain) {
                Some(i) => &mut chains[i].1,
                None => {
                    chains.push((org(chain), Vec::new()));
                    &mut chains.last_mut().expect("just pushed").1
                }
            };
            let payload = Payload {
                version: VERSION,
                operator: "demo".into(),
                federation: genesis.id(),
                record,
                seq: list.len() as u64,
                prev: list.last().map(Entry::id),
                time_unix_ms: time,
                chain: org(chain),
            };
            payload.record.validate().expect("statically valid record");
            let entry = Entry::sign(key, payload).expect("sign");
            membership
                .verify_entry(&entry)
                .expect("authorised and signed");
            if chain == "jxim" {
                membership.apply(&entry).expect("membership record applies");
            }
            list.push(entry.clone());
            entry
        };

    println!("2. The registrar enrols a producer and a lab.");
    for (name, full, role, key) in [
        ("acme-rm", "Acme RM Co.", Role::Producer, &producer),
        ("nclab", "Nanchang Lab", Role::Lab, &lab),
    ] {
        let record = Record::Enrol(Enrol {
            org: org(name),
            keys: vec![public(key)],
            name: full.into(),
            roles: vec![role],
        });
        write(&institute, "jxim", record, &mut membership);
    }

    println!("3. The producer registers batch 2025a of GBW(E)082345 with its certificate.");
    let certificate = Certificate {
        code: RmCode::parse("GBW(E)082345").expect("code"),
        kind: DocumentKind::Certificate,
        name: "土壤成分分析标准物质".into(),
        batch: "2025a".into(),
        units: SerialSet::new(vec![SerialRange::parse("S-0001..S-0200").expect("range")])
            .expect("set"),
        matrix: Some("soil".into()),
        values: vec![PropertyValue {
            kind: ValueKind::Certified,
            unit: Unit::parse("mg/kg").expect("unit"),
            basis: Some("dry mass".into()),
            value: Decimal::parse("0.21").expect("decimal"),
            method: Some("ICP-MS".into()),
            quantity: "Cd".into(),
            uncertainty: Some(Uncertainty {
                expanded: Decimal::parse("0.01").expect("decimal"),
                relative: false,
                coverage_factor: Decimal::parse("2").expect("decimal"),
                coverage_probability: None,
            }),
        }],
        name_en: Some("Soil CRM".into()),
        storage: Some("below 30 °C, dry".into()),
        handling: None,
        validity: Validity::FromCharacterization(Period::parse("P60M").expect("period")),
        issue_date: Date::parse("2025-09-01").expect("date"),
        supersedes: None,
        attachments: Vec::new(),
        intended_use: "calibration and method validation for soil analysis".into(),
        traceability: Some("traceable to the SI through NIM primary standards".into()),
        unit_content: None,
        after_opening: AfterOpening::UntilExpiry,
        commutability: None,
        health_safety: None,
        min_sample_size: None,
        approving_officer: Some(Officer {
            name: "Li Wei".into(),
            function: "technical director".into(),
        }),
        grading_certificate: None,
        characterization_date: Some(Date::parse("2025-06-30").expect("date")),
    };
    let registered = write(
        &producer,
        "acme-rm",
        Record::BatchRegistered(certificate),
        &mut membership,
    );
    println!("   certificate id {}", registered.id());

    println!("4. The producer ships three units to the lab; the lab receives them.");
    let serials =
        SerialSet::new(vec![SerialRange::parse("S-0001..S-0003").expect("range")]).expect("set");
    let shipped = Record::Shipped(Shipped {
        to: org("nclab"),
        cert: registered.id(),
        serials: serials.clone(),
    });
    write(&producer, "acme-rm", shipped, &mut membership);
    let received = Record::Received(Received {
        cert: registered.id(),
        from: org("acme-rm"),
        serials,
    });
    write(&lab, "nclab", received, &mut membership);

    println!("5. Every chain is checked link by link, and a receipt proves the registration.");
    for (chain, entries) in &chains {
        let mut tip = ChainTip::new(genesis.id(), chain.clone());
        for entry in entries {
            tip.check_next(entry, None).expect("chain link");
            tip.advance(entry);
        }
        println!("   chain {chain}: {} entries, links intact", tip.size);
    }
    let (_, producer_chain) = chains
        .iter()
        .find(|(c, _)| c.as_str() == "acme-rm")
        .expect("producer chain");
    let mut tree = MemoryTree::<Sha256>::new();
    let mut certs = rmledger_schema::certmap::CertMap::new();
    for entry in producer_chain {
        tree.push_leaf_hash(entry.leaf_hash().0);
        certs.record_entry(entry);
    }
    let checkpoint = Checkpoint::sign(
        &producer,
        CheckpointBody {
            federation: genesis.id(),
            head: producer_chain.last().expect("entries").id(),
            root: TreeHash(tree.root()),
            size: tree.size(),
            time_unix_ms: start + 3_600_000,
            certs: certs.root(),
            chain: org("acme-rm"),
        },
    )
    .expect("checkpoint");
    let receipt = Receipt::decode(
        &checkpoint.receipt(0, &tree.inclusion_proof(0, tree.size()).expect("proof")),
    )
    .expect("receipt");
    receipt
        .verify(registered.bytes(), &producer.verifying_key())
        .expect("receipt verifies");
    println!(
        "   receipt verified: entry 0 is in acme-rm's signed tree of size {} (root {})",
        tree.size(),
        checkpoint.body().root
    );
    println!(
        "Done: every signature verified strictly against federation {}.",
        genesis.id()
    );
}
