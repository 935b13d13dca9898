//! A small in-memory federation for tests and benchmarks: deterministic keys, a clock that
//! moves one minute per entry, signed chains, trees, checkpoints, receipts and bundles.
//!
//! Enabled by the `testkit` feature (and in this crate's own tests); never used by the node or
//! the CLI at run time.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;

use crate::bundle::{Bundle, BundleAnchor, BundleChain, BundleEntry};
use crate::certmap::{CertMap, membership_key};
use crate::checkpoint::{Checkpoint, CheckpointBody};
use crate::date::{Date, Period};
use crate::decimal::Decimal;
use crate::entry::{Entry, Payload, VERSION};
use crate::federation::{Genesis, GenesisBody, Membership};
use crate::ids::{CertificateId, OrgId, PublicKey, TreeHash};
use crate::merkle::{MemoryTree, Sha256};
use crate::records::*;
use crate::rmcode::RmCode;
use crate::serial::{SerialRange, SerialSet};
use crate::units::Unit;

/// 2026-01-01T00:00:00Z.
pub const START_UNIX_MS: u64 = 1_767_225_600_000;

pub fn org(name: &str) -> OrgId {
    OrgId::new(name).expect("test org id")
}

pub fn decimal(text: &str) -> Decimal {
    Decimal::parse(text).expect("test decimal")
}

pub fn serials(text: &str) -> SerialSet {
    SerialSet::new(
        text.split(',')
            .map(|r| SerialRange::parse(r.trim()).expect("test serial range"))
            .collect(),
    )
    .expect("test serial set")
}

/// A realistic soil CRM certificate: Cd certified 0.21 ± 0.01 mg/kg (k = 2), valid five years
/// from characterization, units S-0001..S-0100.
pub fn soil_certificate(batch: &str) -> Certificate {
    Certificate {
        code: RmCode::parse("GBW(E)082345").expect("code"),
        kind: DocumentKind::Certificate,
        name: "土壤成分分析标准物质".into(),
        batch: batch.into(),
        units: serials("S-0001..S-0100"),
        matrix: Some("soil".into()),
        values: vec![
            PropertyValue {
                kind: ValueKind::Certified,
                unit: Unit::parse("mg/kg").expect("unit"),
                basis: Some("dry mass".into()),
                value: decimal("0.21"),
                method: Some("ICP-MS".into()),
                quantity: "Cd".into(),
                uncertainty: Some(Uncertainty {
                    expanded: decimal("0.01"),
                    relative: false,
                    coverage_factor: decimal("2"),
                    coverage_probability: Some(decimal("0.95")),
                }),
            },
            PropertyValue {
                kind: ValueKind::Reference,
                unit: Unit::parse("mg/kg").expect("unit"),
                basis: Some("dry mass".into()),
                value: decimal("75"),
                method: None,
                quantity: "Zn".into(),
                uncertainty: None,
            },
        ],
        name_en: Some("Soil CRM".into()),
        storage: Some("below 30 °C, dry, sealed".into()),
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
    }
}

/// An in-memory federation: registrar `jxim` (registrar + institute) and whoever is enrolled.
pub struct TestFederation {
    pub genesis: Genesis,
    pub membership: Membership,
    pub keys: BTreeMap<OrgId, SigningKey>,
    pub chains: BTreeMap<OrgId, Vec<Entry>>,
    pub clock_unix_ms: u64,
}

impl Default for TestFederation {
    fn default() -> Self {
        Self::new()
    }
}

impl TestFederation {
    pub fn new() -> Self {
        let registrar = SigningKey::from_bytes(&[1; 32]);
        let genesis = Genesis::create(
            &registrar,
            GenesisBody {
                version: 1,
                name: "Test federation".into(),
                time_unix_ms: START_UNIX_MS,
                registrar: Enrol {
                    org: org("jxim"),
                    keys: vec![PublicKey(registrar.verifying_key().to_bytes())],
                    name: "Test Institute of Metrology".into(),
                    roles: vec![Role::Registrar, Role::Institute],
                },
                utc_offset_minutes: 480,
            },
        )
        .expect("test genesis");
        let membership = Membership::new(&genesis);
        let mut keys = BTreeMap::new();
        keys.insert(org("jxim"), registrar);
        Self {
            genesis,
            membership,
            keys,
            chains: BTreeMap::new(),
            clock_unix_ms: START_UNIX_MS,
        }
    }

    /// The standard cast: producer `acme-rm`, lab `nclab`, regulator `jxsamr`.
    pub fn with_members() -> Self {
        let mut federation = Self::new();
        federation.enrol("acme-rm", Role::Producer);
        federation.enrol("nclab", Role::Lab);
        federation.enrol("jxsamr", Role::Regulator);
        federation
    }

    /// Enrols `name` with one role and a deterministic key.
    pub fn enrol(&mut self, name: &str, role: Role) -> SigningKey {
        let seed = u8::try_from(self.keys.len() + 1).expect("fewer than 255 members");
        let key = SigningKey::from_bytes(&[seed; 32]);
        let record = Record::Enrol(Enrol {
            org: org(name),
            keys: vec![PublicKey(key.verifying_key().to_bytes())],
            name: format!("{name} (test)"),
            roles: vec![role],
        });
        self.append("jxim", record);
        self.keys.insert(org(name), key.clone());
        key
    }

    /// Signs `record` as the next entry of `chain`, one minute after the previous entry.
    pub fn append(&mut self, chain: &str, record: Record) -> Entry {
        self.clock_unix_ms += 60_000;
        let chain_id = org(chain);
        let key = self
            .keys
            .get(&chain_id)
            .expect("a key for the chain")
            .clone();
        let entries = self.chains.entry(chain_id.clone()).or_default();
        let payload = Payload {
            version: VERSION,
            operator: "tester".into(),
            federation: self.genesis.id(),
            record,
            seq: entries.len() as u64,
            prev: entries.last().map(Entry::id),
            time_unix_ms: self.clock_unix_ms,
            chain: chain_id.clone(),
        };
        let entry = Entry::sign(&key, payload).expect("test entry signs");
        entries.push(entry.clone());
        if chain_id == *self.genesis.registrar() {
            self.membership
                .apply(&entry)
                .expect("membership record applies");
        }
        entry
    }

    pub fn chain(&self, chain: &str) -> &[Entry] {
        self.chains.get(&org(chain)).map_or(&[], Vec::as_slice)
    }

    pub fn tree(&self, chain: &str) -> MemoryTree<Sha256> {
        let mut tree = MemoryTree::new();
        for entry in self.chain(chain) {
            tree.push_leaf_hash(entry.leaf_hash().0);
        }
        tree
    }

    /// The chain's certificate map over the whole chain now.
    pub fn certmap(&self, chain: &str) -> CertMap {
        let mut map = CertMap::new();
        for entry in self.chain(chain) {
            map.record_entry(entry);
        }
        map
    }

    /// The chain owner's checkpoint over the whole chain now.
    pub fn checkpoint(&self, chain: &str) -> Checkpoint {
        let entries = self.chain(chain);
        let body = CheckpointBody {
            federation: self.genesis.id(),
            head: entries.last().expect("a non-empty chain").id(),
            root: TreeHash(self.tree(chain).root()),
            size: entries.len() as u64,
            time_unix_ms: self.clock_unix_ms,
            certs: self.certmap(chain).root(),
            chain: org(chain),
        };
        Checkpoint::sign(&self.keys[&org(chain)], body).expect("test checkpoint")
    }

    /// For each non-empty chain, the newest anchor (largest size above 0, latest written on a
    /// tie, any witness) naming it, with its receipt and the consistency proof to the chain now:
    /// what the node's bundle builder carries.
    pub fn bundle_anchors(&self) -> Vec<BundleAnchor> {
        let mut newest: BTreeMap<&OrgId, (&Entry, &Anchor)> = BTreeMap::new();
        for entry in self.chains.values().flatten() {
            if let Record::Anchor(anchor) = entry.record()
                && anchor.size > 0
                && newest.get(&anchor.chain).is_none_or(|(e, a)| {
                    (a.size, e.time_unix_ms()) <= (anchor.size, entry.time_unix_ms())
                })
            {
                newest.insert(&anchor.chain, (entry, anchor));
            }
        }
        newest
            .into_iter()
            .map(|(chain, (entry, anchor))| {
                let tree = self.tree(chain.as_str());
                let consistency = if anchor.size < tree.size() {
                    tree.consistency_proof(anchor.size, tree.size())
                        .expect("proof")
                        .into_iter()
                        .map(TreeHash)
                        .collect()
                } else {
                    Vec::new()
                };
                BundleAnchor {
                    entry: Blob(entry.bytes().to_vec()),
                    receipt: Blob(self.receipt(entry.chain().as_str(), entry.seq())),
                    consistency,
                }
            })
            .collect()
    }

    /// A receipt for the entry at `seq` of `chain` against the checkpoint now.
    pub fn receipt(&self, chain: &str, seq: u64) -> Vec<u8> {
        let tree = self.tree(chain);
        self.checkpoint(chain)
            .receipt(seq, &tree.inclusion_proof(seq, tree.size()).expect("proof"))
    }

    /// A bundle with every entry about `cert`.
    pub fn bundle(&self, cert: CertificateId) -> Bundle {
        let mut entries = Vec::new();
        for (chain, list) in &self.chains {
            for entry in list {
                if entry.concerns(&cert) {
                    entries.push(BundleEntry {
                        entry: Blob(entry.bytes().to_vec()),
                        receipt: Blob(self.receipt(chain.as_str(), entry.seq())),
                    });
                }
            }
        }
        let chains = self
            .membership
            .members()
            .map(|member| {
                let name = member.org.as_str();
                let held = !self.chain(name).is_empty();
                BundleChain {
                    certs: held.then(|| self.certmap(name).prove(&cert)),
                    chain: member.org.clone(),
                    checkpoint: held.then(|| Blob(self.checkpoint(name).bytes().to_vec())),
                }
            })
            .collect();
        let registrar_name = self.genesis.registrar().as_str();
        let registrar = self
            .chain(registrar_name)
            .iter()
            .filter(|e| e.record().changes_membership())
            .map(|e| BundleEntry {
                entry: Blob(e.bytes().to_vec()),
                receipt: Blob(self.receipt(registrar_name, e.seq())),
            })
            .collect();
        Bundle {
            version: 1,
            cert,
            chains,
            anchors: self.bundle_anchors(),
            entries,
            genesis: Blob(self.genesis.bytes().to_vec()),
            registrar,
            membership: self.certmap(registrar_name).prove(&membership_key()),
            registrar_checkpoint: Blob(self.checkpoint(registrar_name).bytes().to_vec()),
        }
    }
}
