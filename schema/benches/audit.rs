//! The whole-ledger audit against the raw `verify_strict` rate, both on two cores.
//!
//! Generates a federation ledger of `AUDIT_N` entries (default 100,000): 4 producers register
//! certificates and ship units to 20 labs, the institute verifies every certificate and anchors
//! every chain, labs receive, open and use units (24 entries per certificate). Prints the
//! audit's entries/s, the raw `verify_strict` entries/s (threads = 2) and their ratio, and the
//! audit's peak memory growth; criterion then times the audit (for `AUDIT_N` ≤ 200,000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use rmledger_schema::audit::{AuditConfig, Auditor};
use rmledger_schema::cose::{self, Sign1};
use rmledger_schema::entry::{Entry, Payload, VERSION};
use rmledger_schema::federation::{Genesis, GenesisBody};
use rmledger_schema::ids::{CertificateId, EntryId, OrgId, TreeHash};
use rmledger_schema::merkle::{MemoryTree, Sha256};
use rmledger_schema::records::*;
use rmledger_schema::serial::{SerialRange, SerialSet};
use rmledger_schema::units::Unit;

const T0: u64 = 1_767_225_600_000;
const PRODUCERS: usize = 4;
const LABS: usize = 20;

struct Ledger {
    genesis: Genesis,
    /// Registrar first.
    chains: Vec<(OrgId, Vec<Vec<u8>>)>,
    keys: Vec<(OrgId, VerifyingKey)>,
    entries: usize,
}

struct Writer {
    org: OrgId,
    key: SigningKey,
    fed: rmledger_schema::ids::FederationId,
    entries: Vec<Entry>,
}

impl Writer {
    fn push(&mut self, time: u64, record: Record) -> EntryId {
        let payload = Payload {
            version: VERSION,
            operator: "bench".into(),
            federation: self.fed,
            record,
            seq: self.entries.len() as u64,
            prev: self.entries.last().map(Entry::id),
            time_unix_ms: time.max(self.entries.last().map_or(0, Entry::time_unix_ms)),
            chain: self.org.clone(),
        };
        let entry = Entry::sign(&self.key, payload).expect("signs");
        let id = entry.id();
        self.entries.push(entry);
        id
    }
}

fn set(text: &str) -> SerialSet {
    SerialSet::new(vec![SerialRange::parse(text).unwrap()]).unwrap()
}

/// Runs `f` on every writer, the writers split over two threads.
fn on_two_cores(writers: &mut [Writer], f: impl Fn(&mut Writer) + Sync) {
    let half = writers.len().div_ceil(2);
    let (a, b) = writers.split_at_mut(half);
    std::thread::scope(|s| {
        s.spawn(|| a.iter_mut().for_each(&f));
        b.iter_mut().for_each(&f);
    });
}

fn generate(n: usize) -> Ledger {
    let key = |seed: usize| SigningKey::from_bytes(&[(seed % 250 + 1) as u8; 32]);
    let registrar_key = key(0);
    let genesis = Genesis::create(
        &registrar_key,
        GenesisBody {
            version: 1,
            name: "Bench federation".into(),
            time_unix_ms: T0,
            registrar: Enrol {
                org: common::org("jxim"),
                keys: vec![common::public_key(&registrar_key)],
                name: "Institute".into(),
                roles: vec![Role::Registrar, Role::Institute],
            },
            utc_offset_minutes: 480,
        },
    )
    .unwrap();
    let fed = genesis.id();
    let writer = |name: String, seed| Writer {
        org: common::org(&name),
        key: key(seed),
        fed,
        entries: Vec::new(),
    };
    let mut jxim = writer("jxim".into(), 0);
    let mut producers: Vec<Writer> = (0..PRODUCERS)
        .map(|i| writer(format!("producer-{i}"), 1 + i))
        .collect();
    let mut labs: Vec<Writer> = (0..LABS)
        .map(|i| writer(format!("lab-{i:02}"), 1 + PRODUCERS + i))
        .collect();
    for (w, role) in producers
        .iter()
        .map(|w| (w, Role::Producer))
        .chain(labs.iter().map(|w| (w, Role::Lab)))
    {
        let record = Record::Enrol(Enrol {
            org: w.org.clone(),
            keys: vec![common::public_key(&w.key)],
            name: w.org.to_string(),
            roles: vec![role],
        });
        jxim.push(T0 + 1000, record);
    }
    let certs = (n / 24).max(1);
    let lab_names: Vec<OrgId> = labs.iter().map(|w| w.org.clone()).collect();
    let time = |i: usize, step: u64| T0 + 60_000 + i as u64 * 60_000 + step * 1000;
    // Producers: register and ship two units to each of two labs.
    on_two_cores(&mut producers, |w| {
        let p: usize = w.org.as_str()[9..].parse().unwrap();
        for i in (p..certs).step_by(PRODUCERS) {
            let mut certificate = common::sample_certificate();
            certificate.batch = format!("B{i}");
            w.push(time(i, 0), Record::BatchRegistered(certificate));
            let cert = w.entries.last().unwrap().id();
            for (k, lab) in [i % LABS, (i + 7) % LABS].into_iter().enumerate() {
                let units = if k == 0 {
                    "A-0001..A-0002"
                } else {
                    "A-0003..A-0004"
                };
                w.push(
                    time(i, 1),
                    Record::Shipped(Shipped {
                        to: lab_names[lab].clone(),
                        cert,
                        serials: set(units),
                    }),
                );
            }
        }
    });
    let cert_ids: Vec<CertificateId> = {
        let mut ids = vec![EntryId([0; 32]); certs];
        for w in &producers {
            for e in &w.entries {
                if let Record::BatchRegistered(c) = e.record() {
                    ids[c.batch[1..].parse::<usize>().unwrap()] = e.id();
                }
            }
        }
        ids
    };
    // Labs: receive, open, use eight times.
    on_two_cores(&mut labs, |w| {
        let l: usize = w.org.as_str()[4..].parse().unwrap();
        for (i, &cert) in cert_ids.iter().enumerate() {
            for (k, lab) in [i % LABS, (i + 7) % LABS].into_iter().enumerate() {
                if lab != l {
                    continue;
                }
                let (units, serial) = if k == 0 {
                    ("A-0001..A-0002", "A-0001")
                } else {
                    ("A-0003..A-0004", "A-0003")
                };
                let from = common::org(&format!("producer-{}", i % PRODUCERS));
                w.push(
                    time(i, 2),
                    Record::Received(Received {
                        cert,
                        from,
                        serials: set(units),
                    }),
                );
                let serial = serial.to_owned();
                w.push(
                    time(i, 3),
                    Record::Opened(Opened {
                        cert,
                        serial: serial.clone(),
                    }),
                );
                for u in 0..8 {
                    w.push(
                        time(i, 4 + u),
                        Record::Used(Used {
                            cert,
                            serial: serial.clone(),
                            purpose: Purpose::QualityControl,
                            quantity: None,
                            reference: Some(format!("QC-{i}-{u}")),
                        }),
                    );
                }
            }
        }
    });
    // The institute verifies every certificate and anchors every chain.
    for (i, &cert) in cert_ids.iter().enumerate() {
        jxim.push(
            time(i, 20),
            Record::ValueVerification(ValueVerification {
                cert,
                unit: Unit::parse("mg/kg").unwrap(),
                value: common_decimal("0.212"),
                method: Some("ICP-MS".into()),
                report: Some(format!("JX-{i}")),
                sample: None,
                verdict: Some(Verdict::Pass),
                quantity: "Cd".into(),
                revision: 1,
                uncertainty: Uncertainty {
                    expanded: common_decimal("0.02"),
                    relative: false,
                    coverage_factor: common_decimal("2"),
                    coverage_probability: None,
                },
            }),
        );
    }
    let end = time(certs, 30);
    for w in producers.iter().chain(labs.iter()) {
        let mut tree = MemoryTree::<Sha256>::new();
        for e in &w.entries {
            tree.push_leaf_hash(e.leaf_hash().0);
        }
        jxim.push(
            end,
            Record::Anchor(Anchor {
                root: TreeHash(tree.root()),
                size: w.entries.len() as u64,
                chain: w.org.clone(),
            }),
        );
    }
    let keys = std::iter::once(&jxim)
        .chain(&producers)
        .chain(&labs)
        .map(|w| (w.org.clone(), w.key.verifying_key()))
        .collect();
    let chains: Vec<(OrgId, Vec<Vec<u8>>)> = std::iter::once(jxim)
        .chain(producers)
        .chain(labs)
        .map(|w| {
            let bytes = w.entries.iter().map(|e| e.bytes().to_vec()).collect();
            (w.org, bytes)
        })
        .collect();
    let entries = chains.iter().map(|(_, c)| c.len()).sum();
    Ledger {
        genesis,
        chains,
        keys,
        entries,
    }
}

fn common_decimal(text: &str) -> rmledger_schema::decimal::Decimal {
    rmledger_schema::decimal::Decimal::parse(text).unwrap()
}

fn audit(ledger: &Ledger) -> usize {
    let now = T0 + 400 * 86_400_000;
    let mut config = AuditConfig::at(now);
    config.threads = 2;
    config.anchor_max_age_ms = u64::MAX;
    let mut auditor = Auditor::new(&ledger.genesis, config);
    for (org, chain) in &ledger.chains {
        auditor.chain_entries(org, chain).unwrap();
    }
    let report = auditor.finish();
    assert_eq!(report.entries as usize, ledger.entries);
    report.findings.len()
}

/// `verify_strict` alone over every entry's signature, on two threads: (entries/s, CPU
/// seconds).
fn raw_verify_rate(ledger: &Ledger) -> (f64, f64) {
    let mut work: Vec<(VerifyingKey, Vec<u8>, Signature)> = Vec::with_capacity(ledger.entries);
    for (org, chain) in &ledger.chains {
        let key = ledger.keys.iter().find(|(o, _)| o == org).unwrap().1;
        for bytes in chain {
            let sign1 = Sign1::parse(bytes, 1 << 16, cose::content_type::ENTRY).unwrap();
            let message = cose::sig_structure(sign1.protected, sign1.payload);
            work.push((key, message, Signature::from_bytes(&sign1.signature)));
        }
    }
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let half = work.len() / 2;
    std::thread::scope(|s| {
        for part in [&work[..half], &work[half..]] {
            s.spawn(move || {
                for (key, message, signature) in part {
                    key.verify_strict(message, signature).unwrap();
                }
            });
        }
    });
    (
        work.len() as f64 / start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
    )
}

/// CPU time of the whole process (all threads, user and system), from /proc/self/stat in
/// clock ticks of 10 ms: the figure that stays comparable when other work shares the cores.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("AUDIT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let start = Instant::now();
    let ledger = generate(n);
    let bytes: usize = ledger
        .chains
        .iter()
        .flat_map(|(_, c)| c)
        .map(Vec::len)
        .sum();
    eprintln!(
        "generated {} entries ({} MB) in {:.1} s",
        ledger.entries,
        bytes / 1_000_000,
        start.elapsed().as_secs_f64()
    );
    // Alternate the two measurements and keep the best of each: the machine is shared.
    let rounds: usize = std::env::var("AUDIT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (mut raw, mut rate, mut findings, mut growth) = (0f64, 0f64, 0, 0);
    let (mut raw_cpu, mut audit_cpu) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        let (raw_rate, cpu) = raw_verify_rate(&ledger);
        raw = raw.max(raw_rate);
        raw_cpu = raw_cpu.min(cpu);
        // Reset the peak RSS (Linux: "5" to clear_refs) so the audit's own peak is seen.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = rss_kib("VmRSS:");
        let (start, cpu) = (Instant::now(), cpu_seconds());
        findings = audit(&ledger);
        rate = rate.max(ledger.entries as f64 / start.elapsed().as_secs_f64());
        audit_cpu = audit_cpu.min(cpu_seconds() - cpu);
        growth = growth.max(rss_kib("VmHWM:").saturating_sub(before));
    }
    eprintln!(
        "audit: {} entries at {rate:.0} entries/s ({:.2} s, {findings} findings); raw \
         verify_strict (2 threads): {raw:.0} entries/s; ratio {:.0} %; peak memory growth {} MB",
        ledger.entries,
        ledger.entries as f64 / rate,
        100.0 * rate / raw,
        growth / 1024
    );
    let per_entry = |cpu: f64| cpu * 1e6 / ledger.entries as f64;
    eprintln!(
        "CPU per entry (least of the rounds): audit {:.1} µs, raw verify_strict {:.1} µs; \
         raw / audit {:.0} %; cores kept busy: audit {:.2}, raw {:.2}",
        per_entry(audit_cpu),
        per_entry(raw_cpu),
        100.0 * raw_cpu / audit_cpu,
        audit_cpu * rate / ledger.entries as f64,
        raw_cpu * raw / ledger.entries as f64
    );
    assert_eq!(findings, 0, "the generated ledger is clean");
    if n <= 200_000 {
        let mut g = c.benchmark_group("audit");
        g.sample_size(10);
        g.bench_function(format!("{} entries", ledger.entries), |b| {
            b.iter(|| black_box(audit(&ledger)))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
