//! Audit tests: for every rule a ledger that breaks it and exactly the expected finding; a clean
//! ledger with none.

use ed25519_dalek::SigningKey;

use super::*;
use crate::checkpoint::CheckpointBody;
use crate::date::{Date, Period};
use crate::entry::{Payload, VERSION};
use crate::ids::PublicKey;
use crate::records::*;
use crate::serial::{SerialRange, SerialSet};
use crate::testkit::{TestFederation, decimal, org, serials, soil_certificate};
use crate::units::Unit;

const HOUR: u64 = 3_600_000;

type Raw = BTreeMap<OrgId, Vec<Vec<u8>>>;

fn config(fed: &TestFederation) -> AuditConfig {
    let mut c = AuditConfig::at(fed.clock_unix_ms + HOUR);
    c.anchor_max_age_ms = u64::MAX;
    c
}

fn raw(fed: &TestFederation) -> Raw {
    fed.chains
        .iter()
        .map(|(org, entries)| {
            (
                org.clone(),
                entries.iter().map(|e| e.bytes().to_vec()).collect(),
            )
        })
        .collect()
}

/// Feeds the registrar's chain first, then the others in name order, then the checkpoints.
fn feed(
    fed: &TestFederation,
    raw: &Raw,
    config: AuditConfig,
    checkpoints: &[Vec<u8>],
) -> AuditReport {
    let mut auditor = Auditor::new(&fed.genesis, config);
    let registrar = fed.genesis.registrar().clone();
    if let Some(entries) = raw.get(&registrar) {
        auditor.chain_entries(&registrar, entries).unwrap();
    }
    for (chain, entries) in raw {
        if *chain != registrar {
            auditor.chain_entries(chain, entries).unwrap();
        }
    }
    for c in checkpoints {
        auditor.checkpoint(c);
    }
    auditor.finish()
}

fn run(fed: &TestFederation) -> AuditReport {
    feed(fed, &raw(fed), config(fed), &[])
}

fn expect(report: &AuditReport, want: &[(&str, String, Vec<EntryId>)]) {
    let mut got: Vec<(&str, String, Vec<EntryId>)> = report
        .findings
        .iter()
        .map(|f| (f.rule, f.subject.clone(), f.entries.clone()))
        .collect();
    let mut want = want.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want, "findings: {:#?}", report.findings);
    for f in &report.findings {
        assert_eq!(f.id, format!("{}/{}", f.rule, f.subject));
        assert!(f.explanation.ends_with('.') || f.explanation.ends_with(')'));
    }
}

/// Signs an entry with full control of every field.
fn craft(
    fed: &TestFederation,
    chain: &str,
    key: &SigningKey,
    seq: u64,
    prev: Option<EntryId>,
    time: u64,
    record: Record,
) -> Entry {
    Entry::sign(
        key,
        Payload {
            version: VERSION,
            operator: "tester".into(),
            federation: fed.genesis.id(),
            record,
            seq,
            prev,
            time_unix_ms: time,
            chain: org(chain),
        },
    )
    .unwrap()
}

/// The next entry of `chain` as `append` would make it, without folding it into anything.
fn next_raw(fed: &mut TestFederation, chain: &str, record: Record) -> Entry {
    fed.clock_unix_ms += 60_000;
    let entries = fed.chain(chain);
    let (seq, prev) = (entries.len() as u64, entries.last().map(Entry::id));
    let key = fed.keys[&org(chain)].clone();
    let entry = craft(fed, chain, &key, seq, prev, fed.clock_unix_ms, record);
    fed.chains
        .entry(org(chain))
        .or_default()
        .push(entry.clone());
    entry
}

/// A harmless record any member may write: an anchor of the registrar's chain as it is now.
fn filler(fed: &TestFederation) -> Record {
    anchor_of(fed, "jxim")
}

fn anchor_of(fed: &TestFederation, chain: &str) -> Record {
    Record::Anchor(Anchor {
        root: TreeHash(fed.tree(chain).root()),
        size: fed.chain(chain).len() as u64,
        chain: org(chain),
    })
}

fn cd_verification(cert: CertificateId, value: &str, verdict: Option<Verdict>) -> Record {
    verification(cert, "Cd", value, verdict)
}

fn verification(
    cert: CertificateId,
    quantity: &str,
    value: &str,
    verdict: Option<Verdict>,
) -> Record {
    Record::ValueVerification(ValueVerification {
        cert,
        unit: Unit::parse("mg/kg").unwrap(),
        value: decimal(value),
        method: Some("ICP-MS".into()),
        report: Some("JX-2026-001".into()),
        sample: None,
        verdict,
        quantity: quantity.into(),
        revision: 1,
        uncertainty: Uncertainty {
            expanded: decimal("0.01"),
            relative: false,
            coverage_factor: decimal("2"),
            coverage_probability: None,
        },
    })
}

fn register(fed: &mut TestFederation, certificate: Certificate) -> CertificateId {
    fed.append("acme-rm", Record::BatchRegistered(certificate))
        .id()
}

/// A registered soil certificate with a passing verification by jxim.
fn verified(fed: &mut TestFederation, certificate: Certificate) -> CertificateId {
    let cert = register(fed, certificate);
    fed.append("jxim", cd_verification(cert, "0.212", Some(Verdict::Pass)));
    cert
}

fn ship(fed: &mut TestFederation, cert: CertificateId, units: &str, to: &str) -> Entry {
    fed.append(
        "acme-rm",
        Record::Shipped(Shipped {
            to: org(to),
            cert,
            serials: serials(units),
        }),
    )
}

fn receive(fed: &mut TestFederation, lab: &str, cert: CertificateId, units: &str) -> Entry {
    fed.append(
        lab,
        Record::Received(Received {
            cert,
            from: org("acme-rm"),
            serials: serials(units),
        }),
    )
}

fn open(fed: &mut TestFederation, lab: &str, cert: CertificateId, serial: &str) -> Entry {
    fed.append(
        lab,
        Record::Opened(Opened {
            cert,
            serial: serial.into(),
        }),
    )
}

fn use_unit(fed: &mut TestFederation, lab: &str, cert: CertificateId, serial: &str) -> Entry {
    fed.append(
        lab,
        Record::Used(Used {
            cert,
            serial: serial.into(),
            purpose: Purpose::Calibration,
            quantity: None,
            reference: Some("R-1".into()),
        }),
    )
}

fn status(cert: CertificateId, reason: &str) -> StatusChange {
    StatusChange {
        cert,
        reason: reason.into(),
    }
}

/// Registered, verified, shipped, received and opened: ready for use by nclab.
fn in_use(fed: &mut TestFederation, certificate: Certificate) -> CertificateId {
    let cert = verified(fed, certificate);
    ship(fed, cert, "S-0001..S-0002", "nclab");
    receive(fed, "nclab", cert, "S-0001..S-0002");
    open(fed, "nclab", cert, "S-0001");
    cert
}

fn subj(cert: CertificateId, rest: &str) -> String {
    format!("{}/{rest}", cert.to_hex())
}

// ---------------------------------------------------------------------------------------------
// The clean ledger

/// A full, realistic life: register, verify (pass), ship, receive, open, use, dispose; anchors
/// of every chain by jxim and of jxim's chain by a lab.
fn clean() -> (TestFederation, CertificateId) {
    let mut fed = TestFederation::with_members();
    let cert = in_use(&mut fed, soil_certificate("2025-001"));
    use_unit(&mut fed, "nclab", cert, "S-0001");
    fed.append(
        "nclab",
        Record::Disposed(Disposed {
            cert,
            reason: Some("used up".into()),
            serials: serials("S-0001"),
        }),
    );
    fed.append("jxsamr", filler(&fed));
    for chain in ["acme-rm", "nclab", "jxsamr"] {
        let record = anchor_of(&fed, chain);
        fed.append("jxim", record);
    }
    let record = anchor_of(&fed, "jxim");
    fed.append("nclab", record);
    (fed, cert)
}

#[test]
fn a_clean_ledger_has_no_findings() {
    let (fed, _) = clean();
    let mut config = AuditConfig::at(fed.clock_unix_ms + HOUR);
    config.anchor_max_age_ms = 7 * DAY_MS;
    let report = feed(
        &fed,
        &raw(&fed),
        config,
        &[fed.checkpoint("acme-rm").bytes().to_vec()],
    );
    expect(&report, &[]);
    assert_eq!(report.certificates, 1);
    assert_eq!(report.checkpoints, 1);
    let total: usize = fed.chains.values().map(Vec::len).sum();
    assert_eq!(report.entries, total as u64);
    for (chain, summary) in &report.chains {
        assert_eq!(summary.size, fed.chain(chain.as_str()).len() as u64);
        assert_eq!(summary.root, TreeHash(fed.tree(chain.as_str()).root()));
        assert!(summary.last_anchor.is_some(), "{chain} is anchored");
    }
    // JSON for machines.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["findings"], serde_json::json!([]));
    assert!(json["chains"]["acme-rm"]["root"].is_string());
}

#[test]
fn feeding_entry_by_entry_equals_feeding_chains() {
    let (mut fed, cert) = clean();
    // Something to find, so the comparison is not between two empty lists.
    use_unit(&mut fed, "nclab", cert, "S-0001");
    let by_chain = run(&fed);
    let mut auditor = Auditor::new(&fed.genesis, config(&fed));
    for entry in fed.chain("jxim") {
        auditor.entry(entry.bytes()).unwrap();
    }
    for (chain, entries) in &fed.chains {
        if chain.as_str() != "jxim" {
            for entry in entries {
                auditor.entry(entry.bytes()).unwrap();
            }
        }
    }
    let by_entry = auditor.finish();
    assert_eq!(by_entry.findings, by_chain.findings);
    assert_eq!(by_entry.chains, by_chain.chains);
    assert!(!by_entry.findings.is_empty());
}

#[test]
fn registrar_entries_after_other_chains_break_the_contract() {
    let (fed, _) = clean();
    let mut auditor = Auditor::new(&fed.genesis, config(&fed));
    auditor
        .chain_entries(
            &org("acme-rm"),
            fed.chain("acme-rm").iter().map(Entry::bytes),
        )
        .unwrap();
    assert_eq!(
        auditor.entry(fed.chain("jxim")[0].bytes()),
        Err(FeedError::RegistrarAfterOtherChains)
    );
}

#[test]
fn pages_across_both_cores_match_the_tree() {
    let mut fed = TestFederation::with_members();
    let n = PAGE + 37;
    for _ in 0..n {
        let record = filler(&fed);
        fed.append("acme-rm", record);
    }
    let mut config = config(&fed);
    config.threads = 2;
    let report = feed(&fed, &raw(&fed), config, &[]);
    expect(&report, &[]);
    assert_eq!(report.chains[&org("acme-rm")].size, n as u64);
    assert_eq!(
        report.chains[&org("acme-rm")].root,
        TreeHash(fed.tree("acme-rm").root())
    );
}

#[test]
fn the_report_does_not_depend_on_the_thread_count() {
    // Many certificates, some with findings (a use after a recall; a serial the batch never
    // produced, too long to be carried inline), spread over the threads that judge them.
    let mut fed = TestFederation::with_members();
    for i in 0..40 {
        let cert = in_use(&mut fed, soil_certificate(&format!("2025-{i:03}")));
        match i % 4 {
            0 => {
                use_unit(&mut fed, "nclab", cert, "S-0002");
            }
            1 => {
                fed.append("acme-rm", Record::Recalled(status(cert, "drift")));
                use_unit(&mut fed, "nclab", cert, "S-0001");
            }
            2 => {
                use_unit(&mut fed, "nclab", cert, &format!("S-{}", "9".repeat(40)));
            }
            _ => {
                use_unit(&mut fed, "nclab", cert, "S-0001");
            }
        }
    }
    let reports: Vec<AuditReport> = [1, 2, 3]
        .into_iter()
        .map(|threads| {
            let mut config = config(&fed);
            config.threads = threads;
            feed(&fed, &raw(&fed), config, &[])
        })
        .collect();
    assert_eq!(reports[0].findings.len(), 20, "{:?}", reports[0].counts);
    for report in &reports[1..] {
        assert_eq!(report.findings, reports[0].findings);
        assert_eq!(report.chains, reports[0].chains);
    }
}

#[test]
fn verify_batch_parallel_agrees_with_verify_entry() {
    let (fed, _) = clean();
    let stranger = SigningKey::from_bytes(&[77; 32]);
    let last = fed.chain("nclab").last().unwrap().clone();
    let forged = craft(
        &fed,
        "nclab",
        &stranger,
        last.seq() + 1,
        Some(last.id()),
        fed.clock_unix_ms,
        filler(&fed),
    );
    let mut entries: Vec<Entry> = fed.chains.values().flatten().cloned().collect();
    entries.push(forged);
    let parallel = verify_batch_parallel(&entries, &fed.membership, 2);
    let sequential: Vec<_> = entries
        .iter()
        .map(|e| fed.membership.verify_entry(e))
        .collect();
    assert_eq!(parallel, sequential);
    assert!(parallel.last().unwrap().is_err());
}

// ---------------------------------------------------------------------------------------------
// Integrity

#[test]
fn bad_signature() {
    let mut fed = TestFederation::with_members();
    fed.append("acme-rm", filler(&fed));
    let entry = fed.append("acme-rm", filler(&fed));
    let mut raw = raw(&fed);
    let bytes = raw.get_mut(&org("acme-rm")).unwrap().last_mut().unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    // The id names what the signature covers, so a damaged signature keeps the entry's id.
    let bad = Entry::id_of(bytes).unwrap();
    assert_eq!(bad, entry.id());
    let report = feed(&fed, &raw, config(&fed), &[]);
    expect(
        &report,
        &[("integrity/bad-signature", "acme-rm/1".into(), vec![bad])],
    );
}

#[test]
fn undecodable_entry() {
    let mut fed = TestFederation::with_members();
    fed.append("acme-rm", filler(&fed));
    fed.append("acme-rm", filler(&fed));
    let mut raw = raw(&fed);
    let garbage = b"not an entry".to_vec();
    *raw.get_mut(&org("acme-rm")).unwrap().last_mut().unwrap() = garbage.clone();
    let report = feed(&fed, &raw, config(&fed), &[]);
    expect(
        &report,
        &[(
            "integrity/undecodable",
            "acme-rm/1".into(),
            vec![EntryId::of_sig_structure([&garbage[..]])],
        )],
    );
}

#[test]
fn broken_link() {
    let mut fed = TestFederation::with_members();
    let first = fed.append("acme-rm", filler(&fed));
    let key = fed.keys[&org("acme-rm")].clone();
    let bad = craft(
        &fed,
        "acme-rm",
        &key,
        1,
        Some(EntryId([5; 32])),
        fed.clock_unix_ms + 1,
        filler(&fed),
    );
    fed.chains
        .get_mut(&org("acme-rm"))
        .unwrap()
        .push(bad.clone());
    expect(
        &run(&fed),
        &[(
            "integrity/broken-link",
            "acme-rm/1".into(),
            vec![first.id(), bad.id()],
        )],
    );
}

#[test]
fn gap() {
    let mut fed = TestFederation::with_members();
    let first = fed.append("acme-rm", filler(&fed));
    let key = fed.keys[&org("acme-rm")].clone();
    let bad = craft(
        &fed,
        "acme-rm",
        &key,
        2,
        Some(first.id()),
        fed.clock_unix_ms + 1,
        filler(&fed),
    );
    fed.chains
        .get_mut(&org("acme-rm"))
        .unwrap()
        .push(bad.clone());
    expect(
        &run(&fed),
        &[(
            "integrity/gap",
            "acme-rm/2".into(),
            vec![first.id(), bad.id()],
        )],
    );
}

#[test]
fn time_going_backwards() {
    let mut fed = TestFederation::with_members();
    let first = fed.append("acme-rm", filler(&fed));
    let key = fed.keys[&org("acme-rm")].clone();
    let bad = craft(
        &fed,
        "acme-rm",
        &key,
        1,
        Some(first.id()),
        first.time_unix_ms() - 1,
        filler(&fed),
    );
    fed.chains
        .get_mut(&org("acme-rm"))
        .unwrap()
        .push(bad.clone());
    expect(
        &run(&fed),
        &[(
            "integrity/time-backwards",
            "acme-rm/1".into(),
            vec![first.id(), bad.id()],
        )],
    );
}

#[test]
fn time_in_the_future() {
    let mut fed = TestFederation::with_members();
    let first = fed.append("acme-rm", filler(&fed));
    let key = fed.keys[&org("acme-rm")].clone();
    let later = fed.clock_unix_ms + 2 * HOUR;
    let bad = craft(
        &fed,
        "acme-rm",
        &key,
        1,
        Some(first.id()),
        later,
        filler(&fed),
    );
    fed.chains
        .get_mut(&org("acme-rm"))
        .unwrap()
        .push(bad.clone());
    expect(
        &run(&fed),
        &[(
            "integrity/time-in-future",
            "acme-rm/1".into(),
            vec![bad.id()],
        )],
    );
}

#[test]
fn wrong_federation_and_wrong_chain() {
    let mut fed = TestFederation::with_members();
    let key = fed.keys[&org("acme-rm")].clone();
    let mut payload = craft(
        &fed,
        "acme-rm",
        &key,
        0,
        None,
        fed.clock_unix_ms,
        filler(&fed),
    )
    .payload()
    .clone();
    payload.federation = FederationId([9; 32]);
    let alien = Entry::sign(&key, payload).unwrap();
    let mut raw = raw(&fed);
    raw.insert(org("acme-rm"), vec![alien.bytes().to_vec()]);
    // An nclab entry handed over as one of jxsamr's.
    let lab = fed.append("nclab", filler(&fed));
    raw.insert(org("jxsamr"), vec![lab.bytes().to_vec()]);
    let report = feed(&fed, &raw, config(&fed), &[]);
    expect(
        &report,
        &[
            (
                "integrity/wrong-federation",
                "acme-rm/0".into(),
                vec![alien.id()],
            ),
            ("integrity/wrong-chain", "jxsamr/0".into(), vec![lab.id()]),
        ],
    );
}

#[test]
fn unknown_and_foreign_keys() {
    let mut fed = TestFederation::with_members();
    let stranger = SigningKey::from_bytes(&[99; 32]);
    let forged = craft(
        &fed,
        "acme-rm",
        &stranger,
        0,
        None,
        fed.clock_unix_ms + 1,
        filler(&fed),
    );
    let lab_key = fed.keys[&org("nclab")].clone();
    let borrowed = craft(
        &fed,
        "jxsamr",
        &lab_key,
        0,
        None,
        fed.clock_unix_ms + 1,
        filler(&fed),
    );
    fed.chains.insert(org("acme-rm"), vec![forged.clone()]);
    fed.chains.insert(org("jxsamr"), vec![borrowed.clone()]);
    expect(
        &run(&fed),
        &[
            (
                "integrity/unknown-key",
                "acme-rm/0".into(),
                vec![forged.id()],
            ),
            (
                "integrity/foreign-key",
                "jxsamr/0".into(),
                vec![borrowed.id()],
            ),
        ],
    );
}

#[test]
fn retroactively_revoked_key() {
    let mut fed = TestFederation::with_members();
    let before = fed.append("acme-rm", filler(&fed));
    let compromised_from = fed.clock_unix_ms + 1;
    let after = fed.append("acme-rm", filler(&fed));
    // Weeks later the registrar learns the key leaked just after the first entry.
    fed.clock_unix_ms += 20 * DAY_MS;
    let kid = crate::cose::key_id(&fed.keys[&org("acme-rm")].verifying_key());
    fed.append(
        "jxim",
        Record::KeyRevoked(KeyRevoked {
            kid,
            org: org("acme-rm"),
            revoked_from_unix_ms: compromised_from,
            reason: "key leaked".into(),
        }),
    );
    let report = run(&fed);
    expect(
        &report,
        &[(
            "integrity/revoked-key",
            "acme-rm/1".into(),
            vec![after.id()],
        )],
    );
    assert!(report.findings[0].explanation.contains("revoked"));
    let _ = before;
}

#[test]
fn registrar_key_revoked_retroactively_flags_its_own_entries() {
    let mut fed = TestFederation::with_members();
    // A second registrar key, then the first one revoked from before the last enrolment.
    let second = SigningKey::from_bytes(&[42; 32]);
    fed.append(
        "jxim",
        Record::KeyAdded(KeyAdded {
            key: PublicKey(second.verifying_key().to_bytes()),
            org: org("jxim"),
        }),
    );
    let from = fed.clock_unix_ms + 1;
    let suspicious = fed.append("jxim", filler(&fed));
    let first_kid = crate::cose::key_id(&fed.keys[&org("jxim")].verifying_key());
    fed.keys.insert(org("jxim"), second);
    let revocation = fed.append(
        "jxim",
        Record::KeyRevoked(KeyRevoked {
            kid: first_kid,
            org: org("jxim"),
            revoked_from_unix_ms: from,
            reason: "leaked".into(),
        }),
    );
    let report = run(&fed);
    expect(
        &report,
        &[(
            "integrity/revoked-key",
            format!("jxim/{}", suspicious.seq()),
            vec![suspicious.id()],
        )],
    );
    let _ = revocation;
}

#[test]
fn key_not_valid_yet() {
    let mut fed = TestFederation::with_members();
    let key = fed.keys[&org("acme-rm")].clone();
    let early = craft(
        &fed,
        "acme-rm",
        &key,
        0,
        None,
        fed.chain("jxim")[0].time_unix_ms() - 1,
        filler(&fed),
    );
    fed.chains.insert(org("acme-rm"), vec![early.clone()]);
    expect(
        &run(&fed),
        &[(
            "integrity/key-not-yet-valid",
            "acme-rm/0".into(),
            vec![early.id()],
        )],
    );
}

#[test]
fn member_suspended() {
    let mut fed = TestFederation::with_members();
    fed.append("acme-rm", filler(&fed));
    fed.append(
        "jxim",
        Record::MemberSuspended(MemberStatus {
            org: org("acme-rm"),
            reason: "licence lapsed".into(),
        }),
    );
    let during = fed.append("acme-rm", filler(&fed));
    expect(
        &run(&fed),
        &[(
            "integrity/member-suspended",
            "acme-rm/1".into(),
            vec![during.id()],
        )],
    );
}

#[test]
fn record_kind_not_allowed_for_the_role() {
    let mut fed = TestFederation::with_members();
    let forged = fed.append("nclab", Record::BatchRegistered(soil_certificate("X-1")));
    expect(
        &run(&fed),
        &[(
            "integrity/role-not-allowed",
            "nclab/0".into(),
            vec![forged.id()],
        )],
    );
}

#[test]
fn bad_membership_record() {
    let mut fed = TestFederation::with_members();
    // Enrolling acme-rm a second time cannot apply.
    let bad = next_raw(
        &mut fed,
        "jxim",
        Record::Enrol(Enrol {
            org: org("acme-rm"),
            keys: vec![PublicKey(
                SigningKey::from_bytes(&[55; 32]).verifying_key().to_bytes(),
            )],
            name: "again".into(),
            roles: vec![Role::Producer],
        }),
    );
    expect(
        &run(&fed),
        &[(
            "integrity/bad-membership-record",
            format!("jxim/{}", bad.seq()),
            vec![bad.id()],
        )],
    );
}

#[test]
fn fork_fed_both() {
    let mut fed = TestFederation::with_members();
    let first = fed.append("acme-rm", filler(&fed));
    let one = fed.append("acme-rm", filler(&fed));
    fed.append("acme-rm", filler(&fed));
    let key = fed.keys[&org("acme-rm")].clone();
    let other = craft(
        &fed,
        "acme-rm",
        &key,
        1,
        Some(first.id()),
        one.time_unix_ms(),
        anchor_of(&fed, "acme-rm"),
    );
    let mut raw = raw(&fed);
    // The node feeds its fork evidence after the chain; the identical repeat is ignored.
    raw.get_mut(&org("acme-rm"))
        .unwrap()
        .extend([one.bytes().to_vec(), other.bytes().to_vec()]);
    let report = feed(&fed, &raw, config(&fed), &[]);
    expect(
        &report,
        &[(
            "integrity/fork",
            "acme-rm/1".into(),
            vec![one.id(), other.id()],
        )],
    );
    assert_eq!(report.chains[&org("acme-rm")].size, 3);
}

#[test]
fn checkpoint_with_a_wrong_root_or_signer() {
    let mut fed = TestFederation::with_members();
    fed.append("acme-rm", filler(&fed));
    let head = fed.append("acme-rm", filler(&fed));
    let good = fed.checkpoint("acme-rm");
    let mut body = good.body().clone();
    body.root = TreeHash([7; 32]);
    let wrong_root = Checkpoint::sign(&fed.keys[&org("acme-rm")], body).unwrap();
    let mut body = good.body().clone();
    body.size = 1;
    body.head = fed.chain("acme-rm")[0].id();
    body.root = fed.chain("acme-rm")[0].leaf_hash();
    let wrong_signer = Checkpoint::sign(&fed.keys[&org("nclab")], body).unwrap();
    let report = feed(
        &fed,
        &raw(&fed),
        config(&fed),
        &[
            good.bytes().to_vec(),
            wrong_root.bytes().to_vec(),
            wrong_signer.bytes().to_vec(),
            b"junk".to_vec(),
        ],
    );
    expect(
        &report,
        &[
            (
                "integrity/checkpoint-mismatch",
                "acme-rm/2".into(),
                vec![head.id()],
            ),
            (
                "integrity/checkpoint-bad-signature",
                "acme-rm/1".into(),
                vec![fed.chain("acme-rm")[0].id()],
            ),
            (
                "integrity/checkpoint-undecodable",
                format!("checkpoint-{}", crate::ids::Digest::of(b"junk").to_hex()),
                vec![],
            ),
        ],
    );
}

#[test]
fn a_checkpoint_with_a_wrong_certificate_map_root_is_a_mismatch() {
    let mut fed = TestFederation::with_members();
    let cert = register(&mut fed, soil_certificate("2025a"));
    ship(&mut fed, cert, "S-0001", "nclab");
    // A checkpoint over the whole chain whose map omits the shipment, fed before and after.
    let mut wrong: CheckpointBody = fed.checkpoint("acme-rm").body().clone();
    let mut omitted = crate::certmap::CertMap::new();
    omitted.record_entry(&fed.chain("acme-rm")[0]);
    wrong.certs = omitted.root();
    let wrong = Checkpoint::sign(&fed.keys[&org("acme-rm")], wrong).unwrap();
    let honest = fed.checkpoint("acme-rm");
    for (checkpoint, fed_first, finding) in [
        (&wrong, true, true),
        (&wrong, false, true),
        (&honest, true, false),
    ] {
        let mut auditor = Auditor::new(&fed.genesis, config(&fed));
        if fed_first {
            auditor.checkpoint(checkpoint.bytes());
        }
        auditor
            .chain_entries(&org("jxim"), fed.chain("jxim").iter().map(Entry::bytes))
            .unwrap();
        auditor
            .chain_entries(
                &org("acme-rm"),
                fed.chain("acme-rm").iter().map(Entry::bytes),
            )
            .unwrap();
        if !fed_first {
            auditor.checkpoint(checkpoint.bytes());
        }
        let report = auditor.finish();
        let found = report.findings.iter().any(|f| {
            f.rule == "integrity/checkpoint-mismatch"
                && f.explanation.contains("certificate map root")
        });
        assert_eq!(found, finding, "{:?}", report.findings);
    }
}

#[test]
fn checkpoint_fed_before_its_chain_is_checked_exactly() {
    let mut fed = TestFederation::with_members();
    fed.append("acme-rm", filler(&fed));
    let head = fed.append("acme-rm", filler(&fed));
    let mut body: CheckpointBody = fed.checkpoint("acme-rm").body().clone();
    body.head = EntryId([3; 32]);
    let wrong_head = Checkpoint::sign(&fed.keys[&org("acme-rm")], body).unwrap();
    fed.append("acme-rm", filler(&fed));
    let mut auditor = Auditor::new(&fed.genesis, config(&fed));
    auditor.checkpoint(wrong_head.bytes());
    auditor
        .chain_entries(&org("jxim"), fed.chain("jxim").iter().map(Entry::bytes))
        .unwrap();
    auditor
        .chain_entries(
            &org("acme-rm"),
            fed.chain("acme-rm").iter().map(Entry::bytes),
        )
        .unwrap();
    let report = auditor.finish();
    expect(
        &report,
        &[(
            "integrity/checkpoint-mismatch",
            "acme-rm/2".into(),
            vec![EntryId([3; 32])],
        )],
    );
    let _ = head;
}

#[test]
fn contradicted_anchors_forward_and_backward() {
    let mut fed = TestFederation::with_members();
    fed.append("acme-rm", filler(&fed));
    // jxim (fed first) anchors acme-rm (fed later) with a wrong root: checked exactly.
    let forward = fed.append(
        "jxim",
        Record::Anchor(Anchor {
            root: TreeHash([1; 32]),
            size: 1,
            chain: org("acme-rm"),
        }),
    );
    // nclab (fed after jxim) anchors an earlier size of jxim's chain with a wrong root.
    let backward = fed.append(
        "nclab",
        Record::Anchor(Anchor {
            root: TreeHash([2; 32]),
            size: 2,
            chain: org("jxim"),
        }),
    );
    let beyond = fed.append(
        "nclab",
        Record::Anchor(Anchor {
            root: TreeHash(fed.tree("acme-rm").root()),
            size: 100,
            chain: org("acme-rm"),
        }),
    );
    expect(
        &run(&fed),
        &[
            (
                "integrity/anchor-contradicted",
                format!("jxim/{}", forward.seq()),
                vec![forward.id()],
            ),
            (
                "integrity/anchor-contradicted",
                "nclab/0".into(),
                vec![backward.id()],
            ),
            (
                "integrity/anchor-beyond-chain",
                "nclab/1".into(),
                vec![beyond.id()],
            ),
        ],
    );
}

#[test]
fn chain_not_anchored_for_too_long() {
    let mut fed = TestFederation::with_members();
    let by_acme = fed.append("acme-rm", anchor_of(&fed, "jxim"));
    let record = anchor_of(&fed, "acme-rm");
    let by_jxim = fed.append("jxim", record);
    fed.append("nclab", anchor_of(&fed, "acme-rm"));
    fed.clock_unix_ms += 8 * DAY_MS;
    let mut config = config(&fed);
    config.anchor_max_age_ms = 7 * DAY_MS;
    let report = feed(&fed, &raw(&fed), config, &[]);
    // acme-rm is wholly anchored by the institute; jxim's own last entry is not witnessed, and
    // nclab's chain never was (an anchor by a lab does not count for a lab's chain).
    let nclab_head = fed.chain("nclab")[0].id();
    expect(
        &report,
        &[
            (
                "chain/anchor-overdue",
                "jxim".into(),
                vec![by_acme.id(), by_jxim.id()],
            ),
            ("chain/anchor-overdue", "nclab".into(), vec![nclab_head]),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Domain

fn domain(fed: &TestFederation) -> AuditReport {
    run(fed)
}

#[test]
fn unit_received_by_a_lab_it_was_never_shipped_to() {
    let mut fed = TestFederation::with_members();
    fed.enrol("eastlab", Role::Lab);
    let cert = verified(&mut fed, soil_certificate("2025-001"));
    ship(&mut fed, cert, "S-0001", "nclab");
    let stray = receive(&mut fed, "eastlab", cert, "S-0002");
    let used = use_unit(&mut fed, "eastlab", cert, "S-0003");
    expect(
        &domain(&fed),
        &[
            (
                "domain/unit-not-shipped-to-lab",
                subj(cert, "S-0002/eastlab"),
                vec![stray.id()],
            ),
            (
                "domain/unit-not-shipped-to-lab",
                subj(cert, "S-0003/eastlab"),
                vec![used.id()],
            ),
        ],
    );
}

#[test]
fn one_serial_at_two_labs() {
    let mut fed = TestFederation::with_members();
    fed.enrol("eastlab", Role::Lab);
    let cert = verified(&mut fed, soil_certificate("2025-001"));
    ship(&mut fed, cert, "S-0001", "nclab");
    let genuine = receive(&mut fed, "nclab", cert, "S-0001");
    let clone = receive(&mut fed, "eastlab", cert, "S-0001");
    expect(
        &domain(&fed),
        &[(
            "domain/serial-at-two-labs",
            subj(cert, "S-0001"),
            vec![genuine.id(), clone.id()],
        )],
    );
}

#[test]
fn serials_never_produced_and_units_shipped_twice() {
    let mut fed = TestFederation::with_members();
    fed.enrol("eastlab", Role::Lab);
    let cert = verified(&mut fed, soil_certificate("2025-001"));
    let phantom = ship(&mut fed, cert, "S-0500", "nclab");
    let first = ship(&mut fed, cert, "S-0001", "nclab");
    let again = ship(&mut fed, cert, "S-0001", "eastlab");
    expect(
        &domain(&fed),
        &[
            (
                "domain/serial-not-produced",
                subj(cert, "S-0500"),
                vec![phantom.id()],
            ),
            (
                "domain/unit-shipped-twice",
                subj(cert, "S-0001"),
                vec![first.id(), again.id()],
            ),
        ],
    );
}

#[test]
fn use_without_receipt_and_after_disposal() {
    let mut fed = TestFederation::with_members();
    let cert = in_use(&mut fed, soil_certificate("2025-001"));
    ship(&mut fed, cert, "S-0003", "nclab");
    let unreceived = use_unit(&mut fed, "nclab", cert, "S-0003");
    let disposed = fed.append(
        "nclab",
        Record::Disposed(Disposed {
            cert,
            reason: None,
            serials: serials("S-0001"),
        }),
    );
    let after = use_unit(&mut fed, "nclab", cert, "S-0001");
    expect(
        &domain(&fed),
        &[
            (
                "domain/use-without-receipt",
                subj(cert, "S-0003/nclab"),
                vec![unreceived.id()],
            ),
            (
                "domain/use-after-disposal",
                subj(cert, "S-0001/nclab"),
                vec![disposed.id(), after.id()],
            ),
        ],
    );
}

#[test]
fn use_after_expiry() {
    let mut fed = TestFederation::with_members();
    let mut certificate = soil_certificate("2025-001");
    certificate.validity = Validity::Until(Date::parse("2026-01-03").unwrap());
    let cert = in_use(&mut fed, certificate);
    let valid = use_unit(&mut fed, "nclab", cert, "S-0001");
    fed.clock_unix_ms += 3 * DAY_MS;
    let late = use_unit(&mut fed, "nclab", cert, "S-0001");
    let report = domain(&fed);
    expect(
        &report,
        &[(
            "domain/use-after-expiry",
            subj(cert, "S-0001/nclab"),
            vec![late.id()],
        )],
    );
    assert!(
        report.findings[0].explanation.contains("2026-01-03"),
        "{}",
        report.findings[0].explanation
    );
    let _ = valid;
}

#[test]
fn use_after_the_unit_expired_from_dispatch() {
    let mut fed = TestFederation::with_members();
    let mut certificate = soil_certificate("2025-001");
    certificate.validity = Validity::AfterDispatch(Period::parse("P10D").unwrap());
    let cert = in_use(&mut fed, certificate);
    fed.clock_unix_ms += 12 * DAY_MS;
    let late = use_unit(&mut fed, "nclab", cert, "S-0001");
    expect(
        &domain(&fed),
        &[(
            "domain/use-after-expiry",
            subj(cert, "S-0001/nclab"),
            vec![late.id()],
        )],
    );
}

#[test]
fn use_after_the_period_after_opening() {
    let mut fed = TestFederation::with_members();
    let mut certificate = soil_certificate("2025-001");
    certificate.after_opening = AfterOpening::Within(Period::parse("P7D").unwrap());
    let cert = in_use(&mut fed, certificate);
    use_unit(&mut fed, "nclab", cert, "S-0001");
    fed.clock_unix_ms += 9 * DAY_MS;
    let late = use_unit(&mut fed, "nclab", cert, "S-0001");
    expect(
        &domain(&fed),
        &[(
            "domain/use-after-opening-period",
            subj(cert, "S-0001/nclab"),
            vec![late.id()],
        )],
    );
}

#[test]
fn single_use_unit_used_twice() {
    let mut fed = TestFederation::with_members();
    let mut certificate = soil_certificate("2025-001");
    certificate.after_opening = AfterOpening::SingleUse;
    let cert = in_use(&mut fed, certificate);
    use_unit(&mut fed, "nclab", cert, "S-0001");
    let second = use_unit(&mut fed, "nclab", cert, "S-0001");
    expect(
        &domain(&fed),
        &[(
            "domain/single-use-reused",
            subj(cert, "S-0001/nclab"),
            vec![second.id()],
        )],
    );
}

#[test]
fn use_while_suspended_after_recall_and_after_withdrawal() {
    for (record, rule, chain) in [
        (
            Record::Suspended as fn(StatusChange) -> Record,
            "domain/use-while-suspended",
            "jxim",
        ),
        (Record::Recalled, "domain/use-after-recall", "acme-rm"),
        (Record::Withdrawn, "domain/use-after-withdrawal", "acme-rm"),
    ] {
        let mut fed = TestFederation::with_members();
        let cert = in_use(&mut fed, soil_certificate("2025-001"));
        let before = use_unit(&mut fed, "nclab", cert, "S-0001");
        let decision = fed.append(chain, record(status(cert, "stability failure")));
        let after = use_unit(&mut fed, "nclab", cert, "S-0001");
        expect(
            &domain(&fed),
            &[(
                rule,
                subj(cert, "S-0001/nclab"),
                vec![decision.id(), after.id()],
            )],
        );
        let _ = before;
    }
}

#[test]
fn reinstated_certificate_may_be_used_again() {
    let mut fed = TestFederation::with_members();
    let cert = in_use(&mut fed, soil_certificate("2025-001"));
    fed.append("jxim", Record::Suspended(status(cert, "check")));
    fed.append("jxim", Record::Reinstated(status(cert, "all clear")));
    use_unit(&mut fed, "nclab", cert, "S-0001");
    expect(&domain(&fed), &[]);
}

#[test]
fn failed_verification_not_followed_by_suspension() {
    let mut fed = TestFederation::with_members();
    let cert = verified(&mut fed, soil_certificate("2025-001"));
    let failed = fed.append("jxim", cd_verification(cert, "0.30", Some(Verdict::Fail)));
    // Within the deadline: not (yet) a finding.
    expect(&domain(&fed), &[]);
    fed.clock_unix_ms += 31 * DAY_MS;
    expect(
        &domain(&fed),
        &[(
            "domain/failed-verification-not-acted-on",
            subj(cert, &format!("jxim/{}", failed.seq())),
            vec![failed.id()],
        )],
    );
    // A suspension after the deadline is still late, and cited.
    let late = fed.append(
        "jxim",
        Record::Suspended(status(cert, "verification failed")),
    );
    expect(
        &domain(&fed),
        &[(
            "domain/failed-verification-not-acted-on",
            subj(cert, &format!("jxim/{}", failed.seq())),
            vec![failed.id(), late.id()],
        )],
    );
}

#[test]
fn failed_verification_followed_by_suspension_in_time() {
    let mut fed = TestFederation::with_members();
    let cert = verified(&mut fed, soil_certificate("2025-001"));
    fed.append("jxim", cd_verification(cert, "0.30", None));
    fed.clock_unix_ms += 2 * DAY_MS;
    fed.append(
        "jxim",
        Record::Suspended(status(cert, "verification failed")),
    );
    fed.clock_unix_ms += 60 * DAY_MS;
    expect(&domain(&fed), &[]);
}

#[test]
fn verdicts_on_non_certified_values_and_disagreeing_verdicts() {
    let mut fed = TestFederation::with_members();
    let cert = verified(&mut fed, soil_certificate("2025-001"));
    let zn = fed.append("jxim", verification(cert, "Zn", "75", Some(Verdict::Pass)));
    let wrong = fed.append("jxim", cd_verification(cert, "0.30", Some(Verdict::Pass)));
    let pb = fed.append("jxim", verification(cert, "Pb", "1", None));
    fed.append(
        "jxim",
        Record::Suspended(status(cert, "Cd out of tolerance")),
    );
    expect(
        &domain(&fed),
        &[
            (
                "domain/verdict-on-non-certified-value",
                subj(cert, &format!("jxim/{}", zn.seq())),
                vec![zn.id()],
            ),
            (
                "domain/verdict-disagrees",
                subj(cert, &format!("jxim/{}", wrong.seq())),
                vec![wrong.id()],
            ),
            (
                "domain/verification-unmatched",
                subj(cert, &format!("jxim/{}", pb.seq())),
                vec![pb.id()],
            ),
        ],
    );
}

#[test]
fn certificate_never_verified() {
    let mut fed = TestFederation::with_members();
    let cert = register(&mut fed, soil_certificate("2025-001"));
    let mut sheet = soil_certificate("2025-002");
    sheet.kind = DocumentKind::ProductInformationSheet;
    register(&mut fed, sheet);
    expect(
        &domain(&fed),
        &[("domain/never-verified", cert.to_hex(), vec![cert])],
    );
}

#[test]
fn entries_about_an_unregistered_certificate() {
    let mut fed = TestFederation::with_members();
    let ghost = EntryId([8; 32]);
    let received = receive(&mut fed, "nclab", ghost, "S-0001");
    expect(
        &domain(&fed),
        &[(
            "domain/unknown-certificate",
            ghost.to_hex(),
            vec![received.id()],
        )],
    );
}

#[test]
fn another_producer_ships_the_certificate() {
    let mut fed = TestFederation::with_members();
    fed.enrol("copycat", Role::Producer);
    let cert = verified(&mut fed, soil_certificate("2025-001"));
    let foreign = fed.append(
        "copycat",
        Record::Shipped(Shipped {
            to: org("nclab"),
            cert,
            serials: serials("S-0001"),
        }),
    );
    expect(
        &domain(&fed),
        &[(
            "domain/foreign-record",
            subj(cert, "copycat/0"),
            vec![foreign.id()],
        )],
    );
}

#[test]
fn too_many_serials_to_follow() {
    let mut fed = TestFederation::with_members();
    let mut certificate = soil_certificate("2025-001");
    certificate.units =
        SerialSet::new(vec![SerialRange::parse("S-000001..S-200000").unwrap()]).unwrap();
    let cert = verified(&mut fed, certificate);
    let bulk = ship(&mut fed, cert, "S-000001..S-150000", "nclab");
    expect(
        &domain(&fed),
        &[(
            "domain/too-many-serials",
            subj(cert, "acme-rm/1"),
            vec![bulk.id()],
        )],
    );
}

#[test]
fn every_rule_is_documented_once() {
    let ids: BTreeSet<&str> = RULES.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), RULES.len());
    let doc = include_str!("../../docs/audit-report.md");
    for rule in &RULES {
        assert!(
            doc.contains(&format!("`{}`", rule.id)),
            "{} is not in docs/audit-report.md",
            rule.id
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One certificate and impact

#[test]
fn audit_of_one_certificate_from_a_bundle() {
    let (mut fed, cert) = clean();
    fed.append("acme-rm", Record::Recalled(status(cert, "contamination")));
    let late = use_unit(&mut fed, "nclab", cert, "S-0002");
    let bundle = fed.bundle(cert).verify(fed.genesis.id()).unwrap();
    let audit = audit_bundle(&bundle, cert, &config(&fed)).unwrap();
    assert_eq!(
        audit.state.recalled.as_ref().map(|r| r.chain.clone()),
        Some(org("acme-rm"))
    );
    let rules: Vec<&str> = audit.findings.iter().map(|f| f.rule).collect();
    assert_eq!(rules, ["domain/use-after-recall"]);
    assert!(audit.findings[0].entries.contains(&late.id()));
}

#[test]
fn impact_of_a_recall() {
    let (mut fed, cert) = clean();
    fed.enrol("eastlab", Role::Lab);
    ship(&mut fed, cert, "S-0010..S-0011", "eastlab");
    receive(&mut fed, "eastlab", cert, "S-0010..S-0011");
    let recall = fed.append("jxim", Record::Recalled(status(cert, "contamination")));
    let late = use_unit(&mut fed, "nclab", cert, "S-0002");
    let bundle = fed.bundle(cert).verify(fed.genesis.id()).unwrap();
    let report = impact(480, cert, &bundle.entries, None).unwrap();
    assert_eq!(report.cutoff, Some(recall.time_unix_ms()));
    assert_eq!(report.cause.len(), 1);
    assert_eq!(report.cause[0].kind, "recalled");
    assert_eq!(report.cause[0].entry, recall.id());
    let labs: Vec<(&str, Vec<String>, usize)> = report
        .labs
        .iter()
        .map(|l| (l.org.as_str(), l.units.clone(), l.uses_after_cutoff.len()))
        .collect();
    assert_eq!(
        labs,
        [
            ("eastlab", vec!["S-0010".to_owned(), "S-0011".to_owned()], 0),
            ("nclab", vec!["S-0001".to_owned(), "S-0002".to_owned()], 1),
        ]
    );
    let uses = &report.labs[1].uses_after_cutoff;
    assert_eq!(
        (
            uses[0].entry,
            uses[0].serial.as_str(),
            uses[0].reference.as_deref()
        ),
        (late.id(), "S-0002", Some("R-1"))
    );
    // --since earlier than the recall lists earlier uses too.
    let since = impact(480, cert, &bundle.entries, Some(0)).unwrap();
    assert_eq!(since.labs[1].uses_after_cutoff.len(), 2);
    serde_json::to_string(&report).unwrap();
}

#[test]
fn impact_of_a_failed_verification() {
    let mut fed = TestFederation::with_members();
    let cert = in_use(&mut fed, soil_certificate("2025-001"));
    let failed = fed.append("jxim", cd_verification(cert, "0.30", None));
    use_unit(&mut fed, "nclab", cert, "S-0001");
    let bundle = fed.bundle(cert).verify(fed.genesis.id()).unwrap();
    let report = impact(480, cert, &bundle.entries, None).unwrap();
    assert_eq!(report.cause[0].kind, "failed-verification");
    assert_eq!(report.cause[0].entry, failed.id());
    assert_eq!(report.labs[0].uses_after_cutoff.len(), 1);
}

#[test]
fn certificate_map_root_at_a_wanted_size_is_built_from_the_tallies() {
    let mut fed = TestFederation::with_members();
    let cert = register(&mut fed, soil_certificate("2025a"));
    ship(&mut fed, cert, "S-0001", "nclab");
    ship(&mut fed, cert, "S-0002", "nclab");
    let other = register(&mut fed, soil_certificate("2025b"));
    // Checkpoints at this size (the honest one counts `cert` three times), then one more entry:
    // fed first, they are checked when the chain passes their size.
    let honest = fed.checkpoint("acme-rm");
    let mut body: CheckpointBody = honest.body().clone();
    // A map that counts the second shipment as the last of `cert` twice over.
    let mut miscounted = crate::certmap::CertMap::new();
    for entry in fed.chain("acme-rm") {
        miscounted.record_entry(entry);
    }
    miscounted.record(cert, fed.chain("acme-rm")[2].id());
    body.certs = miscounted.root();
    let wrong = Checkpoint::sign(&fed.keys[&org("acme-rm")], body).unwrap();
    ship(&mut fed, other, "S-0001", "nclab");
    for (checkpoint, finding) in [(&honest, false), (&wrong, true)] {
        let mut auditor = Auditor::new(&fed.genesis, config(&fed));
        auditor.checkpoint(checkpoint.bytes());
        for chain in ["jxim", "acme-rm"] {
            auditor
                .chain_entries(&org(chain), fed.chain(chain).iter().map(Entry::bytes))
                .unwrap();
        }
        let report = auditor.finish();
        let found = report.findings.iter().any(|f| {
            f.rule == "integrity/checkpoint-mismatch"
                && f.explanation.contains("certificate map root")
        });
        assert_eq!(found, finding, "{:?}", report.findings);
    }
}

#[test]
fn parallel_map_fills_every_slot_in_order() {
    for (n, threads) in [
        (0, 2),
        (5, 2),
        (31, 2),
        (32, 2),
        (1000, 2),
        (1000, 3),
        (77, 1),
    ] {
        let mut out = vec![Some(7usize); 3];
        par_map_into(n, threads, |i| i * i, &mut out);
        let want: Vec<Option<usize>> = (0..n).map(|i| Some(i * i)).collect();
        assert_eq!(out, want, "n {n}, threads {threads}");
    }
}

#[test]
fn a_page_gives_back_each_entry() {
    let mut page = Page::default();
    let entries: [&[u8]; 4] = [b"abc", b"", b"d", b"efgh"];
    for e in entries {
        page.push(e);
    }
    assert_eq!(page.len(), 4);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(page.get(i), *e);
    }
    page.clear();
    assert!(page.is_empty());
}
