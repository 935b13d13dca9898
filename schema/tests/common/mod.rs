//! Shared test support: proptest generators for every record with realistic field values
//! (built through the value types' own parsers), payloads, keys and signed entries.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use rmledger_schema::date::{Date, Period};
use rmledger_schema::decimal::Decimal;
use rmledger_schema::entry::{Entry, Payload, VERSION};
use rmledger_schema::ids::{Digest, EntryId, FederationId, KeyId, OrgId, PublicKey, TreeHash};
use rmledger_schema::records::*;
use rmledger_schema::rmcode::RmCode;
use rmledger_schema::serial::{SerialRange, SerialSet};
use rmledger_schema::units::Unit;

/// The shared test-vector folder (`shared/vectors`), which sits beside the repository root.
///
/// Found by walking up from the crate directory rather than by a fixed `../..`: the crate is
/// `<root>/schema`, so `<root>/schema/../../shared` is right for a checkout at `/work/main` but
/// not for a worktree one level deeper (`/work/wt/<name>`). `RMLEDGER_VECTORS` overrides.
pub fn vectors_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("RMLEDGER_VECTORS") {
        return dir.into();
    }
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/vectors"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| panic!("no shared/vectors above {}", manifest.display()))
}

/// Reads a file under the vector folder.
pub fn read_vector(path: &str) -> String {
    let path = vectors_dir().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A deterministic signing key.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn org(text: &str) -> OrgId {
    OrgId::new(text).unwrap()
}

pub fn public_key(key: &SigningKey) -> PublicKey {
    PublicKey(key.verifying_key().to_bytes())
}

// ---------------------------------------------------------------------------------------------
// Value types.

pub fn org_id() -> impl Strategy<Value = OrgId> {
    prop_oneof![
        select(vec![
            "acme-rm", "jxim", "lab-01", "ncrm", "samr-reg", "gbw-prod"
        ])
        .prop_map(org),
        "[a-z][a-z0-9]{1,8}(-[a-z0-9]{1,8})?".prop_map(|s| org(&s)),
    ]
}

pub fn entry_id() -> impl Strategy<Value = EntryId> {
    any::<[u8; 32]>().prop_map(EntryId)
}

pub fn decimal() -> impl Strategy<Value = Decimal> {
    // "0.21", "12.5", "1500", "0.0032": integer part without leading zeros, up to 6 decimals.
    (0u32..20_000, "[0-9]{0,6}").prop_map(|(int, frac)| {
        let text = if frac.is_empty() {
            int.to_string()
        } else {
            format!("{int}.{frac}")
        };
        Decimal::parse(&text).unwrap()
    })
}

pub fn positive_decimal() -> impl Strategy<Value = Decimal> {
    decimal().prop_filter("> 0", Decimal::is_positive)
}

pub fn unit() -> impl Strategy<Value = Unit> {
    select(Unit::all().collect::<Vec<_>>())
}

pub fn date() -> impl Strategy<Value = Date> {
    (2000i32..2040, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| {
        let date = Date::parse(&format!("{y:04}-{m:02}-{d:02}")).unwrap();
        assert_eq!(date, Date::new(y, m, d).unwrap());
        date
    })
}

pub fn period() -> impl Strategy<Value = Period> {
    (select(vec!['Y', 'M', 'D']), 1u32..=120)
        .prop_map(|(unit, n)| Period::parse(&format!("P{n}{unit}")).unwrap())
}

pub fn rm_code() -> impl Strategy<Value = RmCode> {
    prop_oneof![
        "GBW\\(E\\)0[0-9]{5}".prop_map(|s| RmCode::parse(&s).unwrap()),
        "GBW0[0-9]{4}[a-c]?".prop_map(|s| RmCode::parse(&s).unwrap()),
        select(vec![
            "GBW(E)082345",
            "gbw (e) 130113",
            "GBW 07406",
            "ＧＢＷ（Ｅ）０８１２３４",
            "NIST SRM 2709a",
            "BAM-M375a",
            "ERM-CA713",
            "GSB 04-1767-2004",
        ])
        .prop_map(|s| RmCode::parse(s).unwrap()),
    ]
}

/// One range such as `A-0001..A-0100` or a single serial `A-0042`, within block `block`.
fn serial_range(prefix: &'static str, block: u64) -> impl Strategy<Value = SerialRange> {
    (0u64..400, 0u64..500).prop_map(move |(start, len)| {
        let first = block * 1000 + 1 + start;
        let text = if len == 0 {
            format!("{prefix}{first:04}")
        } else {
            format!("{prefix}{first:04}..{prefix}{:04}", first + len)
        };
        SerialRange::parse(&text).unwrap()
    })
}

pub fn serial_set() -> impl Strategy<Value = SerialSet> {
    (select(vec!["A-", "B", "LOT7-", "2024-", "X"]), 1usize..=3).prop_flat_map(|(prefix, n)| {
        // Ranges in distinct blocks of 1000 never overlap.
        let ranges: Vec<_> = (0..n as u64).map(|b| serial_range(prefix, b)).collect();
        ranges.prop_map(|r| SerialSet::new(r).unwrap())
    })
}

pub fn serial() -> impl Strategy<Value = String> {
    "(A-|B|LOT7-)[0-9]{4}"
}

/// Free text as people write it on certificates, Chinese included.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z][A-Za-z0-9 ,.()/%-]{0,40}",
        select(vec![
            "土壤成分分析标准物质",
            "水中镉溶液标准物质",
            "Soil (trace elements)",
            "Store at 2-8 °C, protect from light",
            "稀释后立即使用\n仅供实验室使用",
            "Traceable to SI via NIM primary standards",
        ])
        .prop_map(String::from),
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

// ---------------------------------------------------------------------------------------------
// Records.

pub fn uncertainty() -> impl Strategy<Value = Uncertainty> {
    (
        positive_decimal(),
        any::<bool>(),
        select(vec!["2", "2.0", "1.96", "3", "2.26"]),
        option::of(select(vec!["0.95", "0.9545", "0.99"])),
    )
        .prop_map(|(expanded, relative, k, p)| Uncertainty {
            expanded,
            relative,
            coverage_factor: Decimal::parse(k).unwrap(),
            coverage_probability: p.map(|p| Decimal::parse(p).unwrap()),
        })
}

pub fn quantity() -> impl Strategy<Value = Quantity> {
    (unit(), positive_decimal()).prop_map(|(unit, value)| Quantity { unit, value })
}

pub fn value_kind() -> impl Strategy<Value = ValueKind> {
    select(vec![
        ValueKind::Certified,
        ValueKind::Reference,
        ValueKind::Information,
    ])
}

pub fn property_value() -> impl Strategy<Value = PropertyValue> {
    (
        value_kind(),
        unit(),
        option::of(select(vec!["dry mass", "as received", "20 °C"]).prop_map(String::from)),
        positive_decimal(),
        option::of(select(vec!["ICP-MS", "GF-AAS", "ID-ICP-MS", "滴定法"]).prop_map(String::from)),
        select(vec![
            "Cd",
            "Pb",
            "As",
            "Hg",
            "pH",
            "Cu",
            "总磷",
            "mass fraction of Zn",
        ]),
        option::of(uncertainty()),
    )
        .prop_map(
            |(kind, unit, basis, value, method, quantity, uncertainty)| PropertyValue {
                kind,
                unit,
                basis,
                value,
                method,
                quantity: quantity.into(),
                uncertainty,
            },
        )
}

pub fn validity() -> impl Strategy<Value = Validity> {
    prop_oneof![
        date().prop_map(Validity::Until),
        period().prop_map(Validity::FromCharacterization),
        period().prop_map(Validity::AfterDispatch),
        Just(Validity::UntilRevoked),
    ]
}

pub fn after_opening() -> impl Strategy<Value = AfterOpening> {
    prop_oneof![
        Just(AfterOpening::SingleUse),
        period().prop_map(AfterOpening::Within),
        Just(AfterOpening::UntilExpiry),
        Just(AfterOpening::NotStated),
    ]
}

pub fn attachment() -> impl Strategy<Value = Attachment> {
    (
        select(vec![
            "certificate.pdf",
            "drmd.xml",
            "raw-data.csv",
            "证书.pdf",
        ]),
        any::<[u8; 32]>(),
        select(vec!["application/pdf", "application/xml", "text/csv"]),
    )
        .prop_map(|(name, digest, media_type)| Attachment {
            name: name.into(),
            digest: Digest(digest),
            media_type: media_type.into(),
        })
}

pub fn certificate() -> impl Strategy<Value = Certificate> {
    let head = (
        rm_code(),
        select(vec![
            DocumentKind::Certificate,
            DocumentKind::ProductInformationSheet,
        ]),
        text(),
        "[0-9]{4}[A-Z]?",
        serial_set(),
        opt_text(),
        vec(property_value(), 1..4),
        opt_text(),
        opt_text(),
        opt_text(),
        validity(),
        date(),
    );
    let tail = (
        option::of(entry_id()),
        vec(attachment(), 0..3),
        text(),
        opt_text(),
        option::of(quantity()),
        after_opening(),
        opt_text(),
        opt_text(),
        option::of(quantity()),
        option::of((text(), select(vec!["技术负责人", "Quality manager"]))),
        option::of("(定级证书 )?[0-9]{4}-[0-9]{3}"),
        option::of(date()),
    );
    (head, tail).prop_map(|(h, t)| Certificate {
        code: h.0,
        kind: h.1,
        name: h.2,
        batch: h.3,
        units: h.4,
        matrix: h.5,
        values: h.6,
        name_en: h.7,
        storage: h.8,
        handling: h.9,
        validity: h.10,
        issue_date: h.11,
        supersedes: t.0,
        attachments: t.1,
        intended_use: t.2,
        traceability: t.3,
        unit_content: t.4,
        after_opening: t.5,
        commutability: t.6,
        health_safety: t.7,
        min_sample_size: t.8,
        approving_officer: t.9.map(|(name, function)| Officer {
            name,
            function: function.into(),
        }),
        grading_certificate: t.10,
        characterization_date: t.11,
    })
}

fn role() -> impl Strategy<Value = Role> {
    select(Role::ALL.to_vec())
}

fn status_change() -> impl Strategy<Value = StatusChange> {
    (entry_id(), text()).prop_map(|(cert, reason)| StatusChange { cert, reason })
}

fn member_status() -> impl Strategy<Value = MemberStatus> {
    (org_id(), text()).prop_map(|(org, reason)| MemberStatus { org, reason })
}

fn blob() -> impl Strategy<Value = Blob> {
    vec(any::<u8>(), 0..200).prop_map(Blob)
}

/// Every `Record` variant, each with realistic random contents.
pub fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            org_id(),
            vec(any::<[u8; 32]>(), 1..3),
            text(),
            vec(role(), 1..3)
        )
            .prop_map(|(org, keys, name, roles)| Record::Enrol(Enrol {
                org,
                keys: keys.into_iter().map(PublicKey).collect(),
                name,
                roles,
            })),
        (any::<[u8; 32]>(), org_id()).prop_map(|(key, org)| Record::KeyAdded(KeyAdded {
            key: PublicKey(key),
            org
        })),
        (
            any::<[u8; 32]>(),
            org_id(),
            1_600_000_000_000u64..1_900_000_000_000,
            text()
        )
            .prop_map(|(kid, org, from, reason)| Record::KeyRevoked(KeyRevoked {
                kid: KeyId(kid),
                org,
                revoked_from_unix_ms: from,
                reason,
            })),
        member_status().prop_map(Record::MemberSuspended),
        member_status().prop_map(Record::MemberReinstated),
        certificate().prop_map(Record::BatchRegistered),
        (entry_id(), text(), 2u32..20, certificate()).prop_map(
            |(cert, reason, revision, certificate)| Record::CertificateRevised(
                CertificateRevised {
                    cert,
                    reason,
                    revision,
                    certificate,
                }
            )
        ),
        (
            entry_id(),
            unit(),
            decimal(),
            select(vec!["Cd", "pH", "Pb"]),
            select(vec![
                StabilityConclusion::Stable,
                StabilityConclusion::Trend,
                StabilityConclusion::Unstable
            ]),
            date(),
            option::of(uncertainty()),
        )
            .prop_map(
                |(cert, unit, value, quantity, conclusion, measured_on, uncertainty)| {
                    Record::StabilityCheck(StabilityCheck {
                        cert,
                        unit,
                        value,
                        quantity: quantity.into(),
                        conclusion,
                        measured_on,
                        uncertainty,
                    })
                }
            ),
        (
            (
                entry_id(),
                unit(),
                decimal(),
                opt_text(),
                option::of("NIM-[0-9]{6}")
            ),
            (
                option::of(serial()),
                option::of(select(vec![
                    Verdict::Pass,
                    Verdict::Fail,
                    Verdict::Inconclusive
                ])),
                select(vec!["Cd", "pH", "Pb"]),
                1u32..5,
                uncertainty(),
            ),
        )
            .prop_map(
                |((cert, unit, value, method, report), (sample, verdict, q, revision, u))| {
                    Record::ValueVerification(ValueVerification {
                        cert,
                        unit,
                        value,
                        method,
                        report,
                        sample,
                        verdict,
                        quantity: q.into(),
                        revision,
                        uncertainty: u,
                    })
                }
            ),
        status_change().prop_map(Record::Suspended),
        status_change().prop_map(Record::Reinstated),
        status_change().prop_map(Record::Recalled),
        status_change().prop_map(Record::Withdrawn),
        (org_id(), entry_id(), serial_set())
            .prop_map(|(to, cert, serials)| Record::Shipped(Shipped { to, cert, serials })),
        (entry_id(), org_id(), serial_set()).prop_map(|(cert, from, serials)| Record::Received(
            Received {
                cert,
                from,
                serials
            }
        )),
        (entry_id(), serial()).prop_map(|(cert, serial)| Record::Opened(Opened { cert, serial })),
        (
            entry_id(),
            serial(),
            select(vec![
                Purpose::Calibration,
                Purpose::MethodValidation,
                Purpose::QualityControl,
                Purpose::ValueAssignment,
                Purpose::ProficiencyTesting,
                Purpose::Other,
            ]),
            option::of(quantity()),
            option::of("(WT|JC)-2024-[0-9]{4}"),
        )
            .prop_map(|(cert, serial, purpose, quantity, reference)| {
                Record::Used(Used {
                    cert,
                    serial,
                    purpose,
                    quantity,
                    reference,
                })
            }),
        (entry_id(), opt_text(), serial_set()).prop_map(|(cert, reason, serials)| {
            Record::Disposed(Disposed {
                cert,
                reason,
                serials,
            })
        }),
        (any::<[u8; 32]>(), 0u64..1_000_000, org_id()).prop_map(|(root, size, chain)| {
            Record::Anchor(Anchor {
                root: TreeHash(root),
                size,
                chain,
            })
        }),
        (
            0u64..10_000,
            select(vec![
                EvidenceKind::Entries,
                EvidenceKind::Checkpoints,
                EvidenceKind::Anchor
            ]),
            org_id(),
            blob(),
            blob(),
        )
            .prop_map(|(seq, kind, chain, first, second)| {
                Record::ForkReported(ForkReported {
                    seq,
                    kind,
                    chain,
                    first,
                    second,
                })
            }),
        (
            select(vec!["expired-in-use", "unverified-value", "fork"]),
            vec(entry_id(), 0..4),
            text(),
            text(),
            select(vec![
                Severity::Critical,
                Severity::High,
                Severity::Medium,
                Severity::Low,
                Severity::Info
            ]),
        )
            .prop_map(|(rule, entries, subject, summary, severity)| {
                Record::AuditFinding(AuditFinding {
                    rule: rule.into(),
                    entries,
                    subject,
                    summary,
                    severity,
                })
            }),
    ]
}

/// A payload that passes `Entry::sign`'s checks (prev null exactly at seq 0).
pub fn payload() -> impl Strategy<Value = Payload> {
    (
        "[a-z]{2,8}( [A-Z][a-z]{1,8})?|张[一-龥]{1,2}",
        any::<[u8; 32]>(),
        record(),
        0u64..1000,
        entry_id(),
        1_600_000_000_000u64..1_900_000_000_000,
        org_id(),
    )
        .prop_map(|(operator, fed, record, seq, prev, time, chain)| Payload {
            version: VERSION,
            operator,
            federation: FederationId(fed),
            record,
            seq,
            prev: (seq > 0).then_some(prev),
            time_unix_ms: time,
            chain,
        })
}

// ---------------------------------------------------------------------------------------------
// Fixed samples.

/// A realistic certificate for a batch of a soil CRM: a 1.6 KB payload, a 1.7 KB entry.
pub fn sample_certificate() -> Certificate {
    let d = |s: &str| Decimal::parse(s).unwrap();
    let value = |q: &str, v: &str, u: &str| PropertyValue {
        kind: ValueKind::Certified,
        unit: Unit::parse("mg/kg").unwrap(),
        basis: Some("dry mass".into()),
        value: d(v),
        method: Some("ICP-MS".into()),
        quantity: q.into(),
        uncertainty: Some(Uncertainty {
            expanded: d(u),
            relative: false,
            coverage_factor: d("2"),
            coverage_probability: Some(d("0.95")),
        }),
    };
    Certificate {
        code: RmCode::parse("GBW(E)082345").unwrap(),
        kind: DocumentKind::Certificate,
        name: "土壤中重金属成分分析标准物质".into(),
        batch: "2024A".into(),
        units: SerialSet::new(vec![SerialRange::parse("A-0001..A-0500").unwrap()]).unwrap(),
        matrix: Some("soil".into()),
        values: vec![
            value("Cd", "0.21", "0.02"),
            value("Pb", "32.5", "1.8"),
            value("As", "11.2", "0.9"),
            value("Hg", "0.086", "0.009"),
        ],
        name_en: Some("Heavy metals in soil".into()),
        storage: Some("Store at room temperature, dry, away from light".into()),
        handling: Some("Mix before use; dry a separate portion at 105 °C for moisture".into()),
        validity: Validity::FromCharacterization(Period::parse("P36M").unwrap()),
        issue_date: Date::parse("2024-03-15").unwrap(),
        supersedes: None,
        attachments: vec![Attachment {
            name: "certificate.pdf".into(),
            digest: Digest::of(b"certificate"),
            media_type: "application/pdf".into(),
        }],
        intended_use: "Calibration and quality control of soil heavy-metal analysis".into(),
        traceability: Some("Traceable to SI through NIM primary standard solutions".into()),
        unit_content: Some(Quantity {
            unit: Unit::parse("g").unwrap(),
            value: d("50"),
        }),
        after_opening: AfterOpening::Within(Period::parse("P6M").unwrap()),
        commutability: None,
        health_safety: Some("Not hazardous under normal use".into()),
        min_sample_size: Some(Quantity {
            unit: Unit::parse("g").unwrap(),
            value: d("0.25"),
        }),
        approving_officer: Some(Officer {
            name: "王明".into(),
            function: "技术负责人".into(),
        }),
        grading_certificate: Some("定级证书 2024-117".into()),
        characterization_date: Some(Date::parse("2024-01-20").unwrap()),
    }
}

/// A payload with the sample certificate at seq 0 of `acme-rm`.
pub fn sample_payload(federation: FederationId) -> Payload {
    Payload {
        version: VERSION,
        operator: "li.wei".into(),
        federation,
        record: Record::BatchRegistered(sample_certificate()),
        seq: 0,
        prev: None,
        time_unix_ms: 1_710_000_000_123,
        chain: org("acme-rm"),
    }
}

/// Signs an entry or panics.
pub fn sign(key: &SigningKey, payload: Payload) -> Entry {
    Entry::sign(key, payload).expect("signs")
}
