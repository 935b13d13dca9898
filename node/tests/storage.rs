//! Storage: durability framing, recovery, proofs and indexes.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rmledger_node::storage::{
    Batch, ChainInfo, FRAME_HEADER, MAGIC_ENTRY, RecordType, StorageError, Store, StoreOptions,
};
use rmledger_schema::checkpoint::{Checkpoint, CheckpointBody};
use rmledger_schema::date::Date;
use rmledger_schema::decimal::Decimal;
use rmledger_schema::entry::{Entry, Payload, VERSION};
use rmledger_schema::ids::{CertificateId, EntryId, FederationId, OrgId, TreeHash};
use rmledger_schema::merkle::{self, MemoryTree, Sha256, TreeHasher};
use rmledger_schema::records::{
    AfterOpening, Anchor, Certificate, DocumentKind, Officer, Opened, PropertyValue, Received,
    Record, Shipped, Uncertainty, Validity, ValueKind,
};
use rmledger_schema::rmcode::RmCode;
use rmledger_schema::serial::{SerialRange, SerialSet};
use rmledger_schema::units::Unit;

const FED: FederationId = FederationId([7; 32]);

/// A writer of one chain, with the expected tree alongside.
struct Writer {
    key: SigningKey,
    chain: OrgId,
    head: Option<EntryId>,
    size: u64,
    tree: MemoryTree<Sha256>,
    certs: rmledger_schema::certmap::CertMap,
    bytes: Vec<Vec<u8>>,
}

impl Writer {
    fn new(name: &str, key: u8) -> Self {
        Self {
            key: SigningKey::from_bytes(&[key; 32]),
            chain: OrgId::new(name).unwrap(),
            head: None,
            size: 0,
            tree: MemoryTree::new(),
            certs: rmledger_schema::certmap::CertMap::new(),
            bytes: Vec::new(),
        }
    }

    fn next(&mut self, record: Record) -> Entry {
        let entry = Entry::sign(
            &self.key,
            Payload {
                version: VERSION,
                operator: "alice".into(),
                federation: FED,
                record,
                seq: self.size,
                prev: self.head,
                time_unix_ms: 1_700_000_000_000 + self.size * 1000,
                chain: self.chain.clone(),
            },
        )
        .unwrap();
        self.head = Some(entry.id());
        self.size += 1;
        self.tree.push(entry.bytes());
        self.certs.record_entry(&entry);
        self.bytes.push(entry.bytes().to_vec());
        entry
    }

    fn anchor(&mut self) -> Entry {
        let size = self.size;
        let chain = self.chain.clone();
        self.next(Record::Anchor(Anchor {
            root: TreeHash([size as u8; 32]),
            size,
            chain,
        }))
    }

    fn anchors(&mut self, n: usize) -> Vec<Entry> {
        (0..n).map(|_| self.anchor()).collect()
    }

    fn checkpoint(&self, time: u64) -> Checkpoint {
        Checkpoint::sign(
            &self.key,
            CheckpointBody {
                federation: FED,
                head: self.head.unwrap(),
                root: TreeHash(self.tree.root()),
                size: self.size,
                time_unix_ms: time,
                certs: self.certs.root(),
                chain: self.chain.clone(),
            },
        )
        .unwrap()
    }
}

fn batch(entries: Vec<Entry>) -> Batch {
    Batch {
        entries,
        checkpoints: Vec::new(),
    }
}

fn certificate(code: &str, batch: &str) -> Certificate {
    Certificate {
        code: RmCode::parse(code).unwrap(),
        kind: DocumentKind::Certificate,
        name: "Cadmium in rice".into(),
        batch: batch.into(),
        units: SerialSet::new(vec![SerialRange::parse("U0001..U0100").unwrap()]).unwrap(),
        matrix: Some("rice flour".into()),
        values: vec![PropertyValue {
            kind: ValueKind::Certified,
            unit: Unit::parse("mg/kg").unwrap(),
            basis: None,
            value: Decimal::parse("0.215").unwrap(),
            method: None,
            quantity: "Cd".into(),
            uncertainty: Some(Uncertainty {
                expanded: Decimal::parse("0.012").unwrap(),
                relative: false,
                coverage_factor: Decimal::parse("2").unwrap(),
                coverage_probability: None,
            }),
        }],
        name_en: None,
        storage: None,
        handling: None,
        validity: Validity::UntilRevoked,
        issue_date: Date::parse("2025-01-01").unwrap(),
        supersedes: None,
        attachments: Vec::new(),
        intended_use: "calibration".into(),
        traceability: Some("SI".into()),
        unit_content: None,
        after_opening: AfterOpening::NotStated,
        commutability: None,
        health_safety: None,
        min_sample_size: None,
        approving_officer: Some(Officer {
            name: "Li".into(),
            function: "QA".into(),
        }),
        grading_certificate: None,
        characterization_date: None,
    }
}

fn serials(text: &str) -> SerialSet {
    SerialSet::new(vec![SerialRange::parse(text).unwrap()]).unwrap()
}

fn small() -> StoreOptions {
    StoreOptions {
        cache_capacity: 4 * 1024 * 1024,
        ..StoreOptions::default()
    }
}

fn segment(dir: &Path, n: u32) -> PathBuf {
    dir.join("segments").join(format!("{n:010}.seg"))
}

/// Everything observable through the read API.
#[derive(Debug, PartialEq)]
struct State {
    chains: Vec<ChainInfo>,
    entries: Vec<Vec<Vec<u8>>>,
    checkpoints: Vec<Option<Vec<u8>>>,
    certificates: Vec<(CertificateId, Vec<(OrgId, u64)>)>,
    records: Vec<(u32, u64, RecordType, Vec<u8>)>,
}

fn state(store: &Store) -> State {
    let chains = store.chains();
    let entries = chains
        .iter()
        .map(|c| store.entries(&c.chain, 0, usize::MAX).unwrap())
        .collect();
    let checkpoints = chains
        .iter()
        .map(|c| {
            store
                .latest_checkpoint(&c.chain)
                .unwrap()
                .map(|cp| cp.bytes().to_vec())
        })
        .collect();
    let certificates = store
        .all_certificates()
        .unwrap()
        .into_iter()
        .map(|id| (id, store.certificate_events(&id).unwrap()))
        .collect();
    let mut records = Vec::new();
    store
        .scan(|r| {
            records.push((r.segment, r.offset, r.kind, r.bytes.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
    State {
        chains,
        entries,
        checkpoints,
        certificates,
        records,
    }
}

/// A store with two chains, a certificate and checkpoints.
fn populated(dir: &Path, options: StoreOptions) -> (Store, Writer, Writer) {
    let store = Store::open(dir, options).unwrap();
    let mut producer = Writer::new("acme-rm", 1);
    let mut lab = Writer::new("lab-01", 2);
    let mut first = producer.anchors(3);
    let reg = producer.next(Record::BatchRegistered(certificate("GBW(E)082345", "B1")));
    let cert = reg.id();
    first.push(reg);
    first.push(producer.next(Record::Shipped(Shipped {
        to: lab.chain.clone(),
        cert,
        serials: serials("U0001..U0010"),
    })));
    first.extend(lab.anchors(2));
    store
        .append(&Batch {
            entries: first,
            checkpoints: vec![producer.checkpoint(1), lab.checkpoint(1)],
        })
        .unwrap();
    for i in 0..10 {
        let mut entries = vec![lab.next(Record::Received(Received {
            cert,
            from: producer.chain.clone(),
            serials: serials(&format!("U{:04}", i + 1)),
        }))];
        entries.push(lab.next(Record::Opened(Opened {
            cert,
            serial: format!("U{:04}", i + 1),
        })));
        entries.extend(producer.anchors(i % 3));
        store.append(&batch(entries)).unwrap();
    }
    store
        .append(&Batch {
            entries: Vec::new(),
            checkpoints: vec![producer.checkpoint(2), lab.checkpoint(2)],
        })
        .unwrap();
    (store, producer, lab)
}

fn check_against(store: &Store, writers: &[&Writer]) {
    for w in writers {
        assert_eq!(store.chain_size(&w.chain), w.size);
        let info = store
            .chains()
            .into_iter()
            .find(|c| c.chain == w.chain)
            .unwrap();
        assert_eq!(info.size, w.size);
        assert_eq!(info.head, w.head);
        assert_eq!(info.root.0, w.tree.root());
        for (seq, bytes) in w.bytes.iter().enumerate() {
            assert_eq!(
                store.entry(&w.chain, seq as u64).unwrap().as_ref(),
                Some(bytes)
            );
            assert_eq!(
                store.position(&Entry::id_of(bytes).unwrap()).unwrap(),
                Some((w.chain.clone(), seq as u64))
            );
        }
        assert_eq!(store.entry(&w.chain, w.size).unwrap(), None);
    }
}

#[test]
fn a_page_stops_at_its_byte_budget_but_always_holds_one_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _producer, lab) = populated(tmp.path(), small());
    let page = |from: u64, max_bytes: usize| {
        let mut got = Vec::new();
        let count = store
            .for_each_entry(&lab.chain, from, 1000, max_bytes, |b| got.push(b.to_vec()))
            .unwrap();
        assert_eq!(count, got.len());
        got
    };
    // Exactly three entries fit (each counted with a 5-byte head); a byte less, two.
    let three: usize = lab.bytes[2..5].iter().map(|b| b.len() + 5).sum();
    assert_eq!(page(2, three), lab.bytes[2..5].to_vec());
    assert_eq!(page(2, three - 1), lab.bytes[2..4].to_vec());
    // A budget smaller than one entry still hands on one: catching up never stalls.
    assert_eq!(page(2, 1), lab.bytes[2..3].to_vec());
    assert_eq!(page(0, usize::MAX), lab.bytes.to_vec());
}

#[test]
fn append_and_read_back_exact_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, producer, lab) = populated(tmp.path(), small());
    check_against(&store, &[&producer, &lab]);
    assert_eq!(store.chains().len(), 2);
    assert_eq!(
        store.entries(&lab.chain, 3, 4).unwrap(),
        lab.bytes[3..7].to_vec()
    );
    assert_eq!(store.entries(&lab.chain, 1000, 4).unwrap().len(), 0);
    assert!(store.entries(&lab.chain, 0, 0).unwrap().is_empty());
    let unknown = OrgId::new("nobody").unwrap();
    assert_eq!(store.chain_size(&unknown), 0);
    assert_eq!(store.entry(&unknown, 0).unwrap(), None);
    assert_eq!(store.position(&EntryId([0; 32])).unwrap(), None);
    assert_eq!(
        store.root(&unknown, 0).unwrap().0,
        MemoryTree::<Sha256>::new().root()
    );
}

#[test]
fn discontinuous_append_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    let mut w = Writer::new("acme-rm", 1);
    let first = w.anchors(2);
    store.append(&batch(first.clone())).unwrap();
    let len = fs::metadata(segment(tmp.path(), 0)).unwrap().len();
    // Replaying an entry (seq 1 again) and a gap (skipping seq 2).
    assert!(matches!(
        store.append(&batch(vec![first[1].clone()])),
        Err(StorageError::Inconsistent(_))
    ));
    let _skipped = w.anchor();
    let gap = w.anchor();
    assert!(matches!(
        store.append(&batch(vec![gap])),
        Err(StorageError::Inconsistent(_))
    ));
    assert_eq!(fs::metadata(segment(tmp.path(), 0)).unwrap().len(), len);
    assert_eq!(store.chain_size(&w.chain), 2);
}

#[test]
fn proofs_verify_and_equal_memory_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    let mut w = Writer::new("acme-rm", 1);
    let mut n = 0;
    let mut k = 1;
    while n < 100 {
        let take = k.min(100 - n);
        store.append(&batch(w.anchors(take))).unwrap();
        n += take;
        k = k % 7 + 1;
    }
    let chain = w.chain.clone();
    let leaves: Vec<_> = w.bytes.iter().map(|b| Sha256::leaf(b)).collect();
    let mut roots = vec![store.root(&chain, 0).unwrap().0];
    for size in 1..=100u64 {
        let root = store.root(&chain, size).unwrap().0;
        let mut t = MemoryTree::<Sha256>::new();
        for l in &leaves[..size as usize] {
            t.push_leaf_hash(*l);
        }
        assert_eq!(root, t.root(), "root {size}");
        roots.push(root);
        for index in 0..size {
            let p = store.inclusion_proof(&chain, index, size).unwrap();
            assert_eq!(p, w.tree.inclusion_proof(index, size).unwrap());
            merkle::verify_inclusion::<Sha256>(index, size, &leaves[index as usize], &p, &root)
                .unwrap();
        }
    }
    for to in 1..=100u64 {
        for from in 1..=to {
            let p = store.consistency_proof(&chain, from, to).unwrap();
            assert_eq!(p, w.tree.consistency_proof(from, to).unwrap());
            merkle::verify_consistency::<Sha256>(
                from,
                to,
                &roots[from as usize],
                &roots[to as usize],
                &p,
            )
            .unwrap();
        }
    }
    assert!(matches!(
        store.inclusion_proof(&chain, 0, 101),
        Err(StorageError::Proof(_))
    ));
    assert!(matches!(
        store.inclusion_proof(&chain, 5, 5),
        Err(StorageError::Proof(_))
    ));
    assert!(matches!(
        store.consistency_proof(&chain, 0, 5),
        Err(StorageError::Proof(_))
    ));
    assert!(matches!(
        store.root(&chain, 101),
        Err(StorageError::Proof(_))
    ));
}

#[test]
fn reopen_gives_identical_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut producer, lab) = populated(tmp.path(), small());
    let before = state(&store);
    store.flush().unwrap();
    drop(store);
    let (store, recovery) = Store::open_with_recovery(tmp.path(), small()).unwrap();
    assert!(!recovery.rebuilt, "{recovery:?}");
    assert_eq!(recovery.replayed, 0, "{recovery:?}");
    assert_eq!(state(&store), before);
    check_against(&store, &[&producer, &lab]);
    // Appending continues where it was.
    store.append(&batch(producer.anchors(3))).unwrap();
    check_against(&store, &[&producer, &lab]);
}

#[test]
fn deleted_index_is_rebuilt_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, producer, lab) = populated(tmp.path(), small());
    let before = state(&store);
    drop(store);
    fs::remove_dir_all(tmp.path().join("index")).unwrap();
    let (store, recovery) = Store::open_with_recovery(tmp.path(), small()).unwrap();
    assert!(recovery.rebuilt);
    assert_eq!(recovery.replayed as usize, before.records.len());
    assert_eq!(state(&store), before);
    check_against(&store, &[&producer, &lab]);
    drop(store);
    let store = Store::reindex(tmp.path(), small()).unwrap();
    assert_eq!(state(&store), before);
}

#[test]
fn garbage_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, producer, lab) = populated(tmp.path(), small());
    let before = state(&store);
    drop(store);
    let index = tmp.path().join("index");
    fs::remove_dir_all(&index).unwrap();
    let junk: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let sled = index.join("sled");
    fs::create_dir_all(sled.join("blobs")).unwrap();
    for name in ["conf", "db", "snap.0000000000000000", "blobs/1"] {
        fs::write(sled.join(name), &junk).unwrap();
    }
    let (store, recovery) = Store::open_with_recovery(tmp.path(), small()).unwrap();
    assert!(recovery.rebuilt);
    assert_eq!(state(&store), before);
    check_against(&store, &[&producer, &lab]);
}

/// The position file of `chain` (the per-entry part of the index).
fn position_file(dir: &Path, chain: &OrgId) -> PathBuf {
    dir.join("index")
        .join("chains")
        .join(format!("{chain}.pos"))
}

const RECORD_LEN: u64 = 80;

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Damages the position files of a cleanly closed store with `damage`, reopens it, and checks
/// that it reads back exactly as before without a rebuild (every entry by seq and by id), that
/// ids it does not hold miss, and that appending and reopening go on from there.
fn check_positions_recover(damage: impl FnOnce(&Path, &Writer, &Writer)) {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut producer, lab) = populated(tmp.path(), small());
    let before = state(&store);
    store.flush().unwrap();
    drop(store);
    damage(tmp.path(), &producer, &lab);
    let (store, recovery) = Store::open_with_recovery(tmp.path(), small()).unwrap();
    assert!(!recovery.rebuilt, "{recovery:?}");
    assert_eq!(recovery.replayed, 0, "{recovery:?}");
    assert_eq!(state(&store), before);
    check_against(&store, &[&producer, &lab]);
    for bytes in producer.bytes.iter().chain(&lab.bytes) {
        // Same first bytes as a stored id, so the map's prefix hits and the full id must miss.
        let mut near = Entry::id_of(bytes).unwrap().0;
        near[31] ^= 1;
        assert_eq!(store.position(&EntryId(near)).unwrap(), None);
    }
    for w in [&producer, &lab] {
        let len = fs::metadata(position_file(tmp.path(), &w.chain))
            .unwrap()
            .len();
        assert_eq!(len, w.size * RECORD_LEN, "{}", w.chain);
    }
    store.append(&batch(producer.anchors(2))).unwrap();
    check_against(&store, &[&producer, &lab]);
    drop(store);
    let store = Store::open(tmp.path(), small()).unwrap();
    check_against(&store, &[&producer, &lab]);
}

#[test]
fn position_files_reopen_after_a_clean_close() {
    check_positions_recover(|_, _, _| {});
}

#[test]
fn position_file_longer_than_the_log_is_cut() {
    check_positions_recover(|dir, _, lab| {
        // Records of entries the index never committed: copies of the file's first records.
        let path = position_file(dir, &lab.chain);
        let bytes = fs::read(&path).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&bytes[..3 * RECORD_LEN as usize]).unwrap();
        file.write_all(&[0u8; 17]).unwrap();
    });
}

#[test]
fn position_file_shorter_than_the_log_is_rederived() {
    check_positions_recover(|dir, _, lab| {
        set_len(&position_file(dir, &lab.chain), 5 * RECORD_LEN);
    });
}

#[test]
fn position_file_with_a_torn_last_record_is_rederived() {
    check_positions_recover(|dir, _, lab| {
        set_len(&position_file(dir, &lab.chain), lab.size * RECORD_LEN - 30);
    });
}

#[test]
fn position_file_with_zeroed_records_is_rederived() {
    check_positions_recover(|dir, producer, _| {
        // What a power loss can leave: the file's length written, its last pages not.
        let path = position_file(dir, &producer.chain);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let zeros = vec![0u8; 2 * RECORD_LEN as usize];
        std::os::unix::fs::FileExt::write_all_at(&file, &zeros, 4 * RECORD_LEN).unwrap();
    });
}

#[test]
fn deleted_position_files_are_rebuilt() {
    check_positions_recover(|dir, producer, _| {
        fs::remove_file(position_file(dir, &producer.chain)).unwrap();
    });
    check_positions_recover(|dir, _, _| {
        fs::remove_dir_all(dir.join("index").join("chains")).unwrap();
    });
}

#[test]
fn position_file_naming_another_head_rebuilds_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, producer, lab) = populated(tmp.path(), small());
    let before = state(&store);
    store.flush().unwrap();
    drop(store);
    // Swap the ids of the last two records: the file now ends in another entry than sled's
    // head of the chain.
    let path = position_file(tmp.path(), &lab.chain);
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    let r = RECORD_LEN as usize;
    let last = bytes[n - r..].to_vec();
    let before_last = bytes[n - 2 * r + 48..n - r].to_vec();
    bytes[n - r + 48..].copy_from_slice(&before_last);
    bytes[n - 2 * r + 48..n - r].copy_from_slice(&last[48..]);
    fs::write(&path, &bytes).unwrap();
    let (store, recovery) = Store::open_with_recovery(tmp.path(), small()).unwrap();
    assert!(recovery.rebuilt, "{recovery:?}");
    assert_eq!(state(&store), before);
    check_against(&store, &[&producer, &lab]);
}

#[test]
fn torn_tail_is_truncated_and_the_rest_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut producer, lab) = populated(tmp.path(), small());
    let before = state(&store);
    drop(store);
    let seg = segment(tmp.path(), 0);
    let len = fs::metadata(&seg).unwrap().len();
    // A half-written frame: header announcing 500 bytes, 100 written.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    let mut torn = vec![MAGIC_ENTRY];
    torn.extend_from_slice(&500u32.to_le_bytes());
    torn.extend_from_slice(&[9; 32 + 100]);
    f.write_all(&torn).unwrap();
    drop(f);
    let (store, recovery) = Store::open_with_recovery(tmp.path(), small()).unwrap();
    assert_eq!(recovery.truncated, torn.len() as u64);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    assert_eq!(state(&store), before);
    check_against(&store, &[&producer, &lab]);
    // The log goes on after the cut.
    store.append(&batch(producer.anchors(2))).unwrap();
    check_against(&store, &[&producer, &lab]);
}

/// Appends `bytes` to the end of segment `n`.
fn append_raw(dir: &Path, n: u32, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(segment(dir, n))
        .unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_commit_cut_short_is_cut_off_whole() {
    let options = StoreOptions {
        writer_chain: Some(OrgId::new("acme-rm").unwrap()),
        ..small()
    };
    // Its checkpoint half written, or not written at all: either way the commit goes.
    for checkpoint_bytes in [0.5, 0.0] {
        let tmp = tempfile::tempdir().unwrap();
        let (store, mut producer, _lab) = populated(tmp.path(), options.clone());
        store.flush().unwrap();
        let before = state(&store);
        drop(store);
        let len = fs::metadata(segment(tmp.path(), 0)).unwrap().len();
        let mut tail = Vec::new();
        for e in producer.anchors(3) {
            tail.extend(framed(MAGIC_ENTRY, e.bytes()));
        }
        let checkpoint = framed(0xC1, producer.checkpoint(3).bytes());
        tail.extend(&checkpoint[..(checkpoint.len() as f64 * checkpoint_bytes) as usize]);
        append_raw(tmp.path(), 0, &tail);
        let (store, recovery) = Store::open_with_recovery(tmp.path(), options.clone()).unwrap();
        assert_eq!(recovery.cut_entries, 3, "{recovery:?}");
        assert_eq!(recovery.truncated, tail.len() as u64);
        assert_eq!(fs::metadata(segment(tmp.path(), 0)).unwrap().len(), len);
        assert_eq!(state(&store), before);
        // The chain goes on from where the last whole commit left it.
        let size = store.chain_size(&producer.chain);
        assert_eq!(size, before.entries[0].len() as u64);
    }
}

#[test]
fn a_whole_commit_and_other_chains_entries_are_kept() {
    let options = StoreOptions {
        writer_chain: Some(OrgId::new("acme-rm").unwrap()),
        ..small()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut producer, mut lab) = populated(tmp.path(), options.clone());
    store.flush().unwrap();
    drop(store);
    // A whole commit of the writer's chain, then entries of another chain (replicated: no
    // checkpoint follows them), each reaching the segment but not the index.
    let mut tail = Vec::new();
    for e in producer.anchors(2) {
        tail.extend(framed(MAGIC_ENTRY, e.bytes()));
    }
    tail.extend(framed(0xC1, producer.checkpoint(3).bytes()));
    for e in lab.anchors(2) {
        tail.extend(framed(MAGIC_ENTRY, e.bytes()));
    }
    append_raw(tmp.path(), 0, &tail);
    let (store, recovery) = Store::open_with_recovery(tmp.path(), options.clone()).unwrap();
    assert_eq!(
        (recovery.cut_entries, recovery.truncated),
        (0, 0),
        "{recovery:?}"
    );
    assert_eq!(recovery.replayed, 5);
    check_against(&store, &[&producer, &lab]);
    // Without the option, entries of any chain at the end are kept as they are.
    drop(store);
    append_raw(
        tmp.path(),
        0,
        &framed(MAGIC_ENTRY, producer.anchor().bytes()),
    );
    let (store, recovery) = Store::open_with_recovery(tmp.path(), small()).unwrap();
    assert_eq!(
        (recovery.cut_entries, recovery.replayed),
        (0, 1),
        "{recovery:?}"
    );
    check_against(&store, &[&producer, &lab]);
}

#[test]
fn torn_last_record_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    let mut w = Writer::new("acme-rm", 1);
    store.append(&batch(w.anchors(5))).unwrap();
    let last = w.anchor();
    store.append(&batch(vec![last.clone()])).unwrap();
    drop(store);
    let seg = segment(tmp.path(), 0);
    let len = fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let (store, recovery) = Store::open_with_recovery(tmp.path(), small()).unwrap();
    // The index was ahead of the shortened log: rebuilt.
    assert!(recovery.rebuilt);
    assert_eq!(
        recovery.truncated,
        (FRAME_HEADER + last.bytes().len() - 10) as u64
    );
    assert_eq!(store.chain_size(&w.chain), 5);
    assert_eq!(store.entry(&w.chain, 5).unwrap(), None);
    // The lost entry can be written again.
    store.append(&batch(vec![last])).unwrap();
    w.bytes.truncate(6);
    check_against(&store, &[&w]);
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn corruption_before_the_tail_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, producer, _lab) = populated(tmp.path(), small());
    drop(store);
    // Inside the bytes of the first record (seq 0 of acme-rm at offset 0).
    flip(&segment(tmp.path(), 0), FRAME_HEADER as u64 + 20);

    // With the index intact, open does not re-read old frames, but reads and scans check them.
    let store = Store::open(tmp.path(), small()).unwrap();
    let err = store.entry(&producer.chain, 0).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Corrupt {
                segment: 0,
                offset: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        store.scan(|_| ControlFlow::Continue(())),
        Err(StorageError::Corrupt {
            segment: 0,
            offset: 0,
            ..
        })
    ));
    drop(store);

    // A rebuild meets it and refuses to start.
    fs::remove_dir_all(tmp.path().join("index")).unwrap();
    let err = Store::open(tmp.path(), small()).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Corrupt {
                segment: 0,
                offset: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("segments/0000000000.seg, offset 0"),
        "{err}"
    );
}

#[test]
fn corruption_in_an_earlier_segment_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        segment_size: 2000,
        ..small()
    };
    let store = Store::open(tmp.path(), options.clone()).unwrap();
    let mut w = Writer::new("acme-rm", 1);
    for _ in 0..20 {
        store.append(&batch(w.anchors(2))).unwrap();
    }
    drop(store);
    // Inside the second frame of segment 1.
    let seg1 = segment(tmp.path(), 1);
    let head = fs::read(&seg1).unwrap();
    let first_len = u32::from_le_bytes(head[1..5].try_into().unwrap());
    let second = (FRAME_HEADER as u32 + first_len) as u64;
    flip(&seg1, second + FRAME_HEADER as u64 + 3);
    fs::remove_dir_all(tmp.path().join("index")).unwrap();
    let err = Store::open(tmp.path(), options).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { segment: 1, offset, .. } if offset == second),
        "{err}"
    );
}

#[test]
fn damage_followed_by_intact_frames_in_the_last_segment_is_not_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    let mut w = Writer::new("acme-rm", 1);
    store.append(&batch(w.anchors(10))).unwrap();
    drop(store);
    let seg = segment(tmp.path(), 0);
    let len = fs::metadata(&seg).unwrap().len();
    flip(&seg, 2); // the length field of the first frame
    fs::remove_dir_all(tmp.path().join("index")).unwrap();
    let err = Store::open(tmp.path(), small()).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Corrupt {
                segment: 0,
                offset: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::metadata(&seg).unwrap().len(), len, "nothing truncated");
}

/// Frames a record as the store does.
fn framed(magic: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![magic];
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(blake3::hash(bytes).as_bytes());
    out.extend_from_slice(bytes);
    out
}

#[test]
fn index_behind_the_segments_is_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut producer, mut lab) = populated(tmp.path(), small());
    store.flush().unwrap();
    drop(store);
    // Records that reached the segment but not the index (a crash between fsync and sled).
    let mut tail = Vec::new();
    for e in producer.anchors(4).into_iter().chain(lab.anchors(3)) {
        tail.extend(framed(MAGIC_ENTRY, e.bytes()));
    }
    let cp = producer.checkpoint(3);
    tail.extend(framed(0xC1, cp.bytes()));
    let mut f = OpenOptions::new()
        .append(true)
        .open(segment(tmp.path(), 0))
        .unwrap();
    f.write_all(&tail).unwrap();
    drop(f);
    let (store, recovery) = Store::open_with_recovery(tmp.path(), small()).unwrap();
    assert!(!recovery.rebuilt, "{recovery:?}");
    assert_eq!(recovery.replayed, 8);
    assert_eq!(recovery.truncated, 0);
    check_against(&store, &[&producer, &lab]);
    assert_eq!(
        store.latest_checkpoint(&producer.chain).unwrap(),
        Some(cp.clone())
    );
    let replayed = state(&store);
    drop(store);
    let store = Store::reindex(tmp.path(), small()).unwrap();
    assert_eq!(state(&store), replayed);
}

#[test]
fn segments_rotate_at_the_configured_size() {
    let tmp = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        segment_size: 1500,
        ..small()
    };
    let (store, mut producer, lab) = populated(tmp.path(), options.clone());
    store.append(&batch(producer.anchors(20))).unwrap();
    for _ in 0..10 {
        store.append(&batch(producer.anchors(1))).unwrap();
    }
    let segments = fs::read_dir(tmp.path().join("segments")).unwrap().count();
    assert!(segments > 5, "{segments} segments");
    // Only a single batch may exceed the limit.
    for n in 0..segments as u32 {
        let len = fs::metadata(segment(tmp.path(), n)).unwrap().len();
        assert!(len > 0, "segment {n} is empty");
    }
    check_against(&store, &[&producer, &lab]);
    let before = state(&store);
    assert!(before.records.iter().any(|r| r.0 > 0));
    drop(store);
    let store = Store::open(tmp.path(), options.clone()).unwrap();
    assert_eq!(state(&store), before);
    drop(store);
    let store = Store::reindex(tmp.path(), options).unwrap();
    assert_eq!(state(&store), before);
    check_against(&store, &[&producer, &lab]);
}

#[test]
fn latest_checkpoint_is_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    let mut w = Writer::new("acme-rm", 1);
    assert_eq!(store.latest_checkpoint(&w.chain).unwrap(), None);
    store.append(&batch(w.anchors(3))).unwrap();
    let cp3 = w.checkpoint(10);
    store
        .append(&Batch {
            entries: w.anchors(2),
            checkpoints: vec![cp3.clone()],
        })
        .unwrap();
    assert_eq!(store.latest_checkpoint(&w.chain).unwrap(), Some(cp3));
    let cp5 = w.checkpoint(20);
    let cp5_later = w.checkpoint(30);
    store
        .append(&Batch {
            entries: Vec::new(),
            checkpoints: vec![cp5, cp5_later.clone()],
        })
        .unwrap();
    assert_eq!(
        store.latest_checkpoint(&w.chain).unwrap(),
        Some(cp5_later.clone())
    );
    // An older checkpoint arriving late (from a peer) does not replace it, but is kept.
    let mut old = Writer::new("acme-rm", 1);
    old.anchors(4);
    let cp4 = old.checkpoint(40);
    store
        .append(&Batch {
            entries: Vec::new(),
            checkpoints: vec![cp4.clone()],
        })
        .unwrap();
    assert_eq!(
        store.latest_checkpoint(&w.chain).unwrap(),
        Some(cp5_later.clone())
    );
    let mut kept = Vec::new();
    store
        .scan(|r| {
            if r.kind == RecordType::Checkpoint {
                kept.push(r.bytes.to_vec());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(kept.len(), 4);
    assert_eq!(kept[3], cp4.bytes());
    drop(store);
    let store = Store::reindex(tmp.path(), small()).unwrap();
    assert_eq!(store.latest_checkpoint(&w.chain).unwrap(), Some(cp5_later));
}

#[test]
fn certificate_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    let mut producer = Writer::new("acme-rm", 1);
    let mut lab = Writer::new("lab-01", 2);
    let mut other = Writer::new("zeta-rm", 3);
    let anchor = producer.anchor();
    let a = producer.next(Record::BatchRegistered(certificate("GBW(E)082345", "B1")));
    let b = producer.next(Record::BatchRegistered(certificate("GBW(E)082345", "B2")));
    let c = other.next(Record::BatchRegistered(certificate("GBW 07406", "B1")));
    let (ida, idb, idc) = (a.id(), b.id(), c.id());
    let ship = producer.next(Record::Shipped(Shipped {
        to: lab.chain.clone(),
        cert: ida,
        serials: serials("U0001..U0005"),
    }));
    let recv = lab.next(Record::Received(Received {
        cert: ida,
        from: producer.chain.clone(),
        serials: serials("U0001..U0005"),
    }));
    let open = lab.next(Record::Opened(Opened {
        cert: ida,
        serial: "U0001".into(),
    }));
    store.append(&batch(vec![anchor, a, b])).unwrap();
    store.append(&batch(vec![recv, c, ship, open])).unwrap();

    let mut all = vec![ida, idb, idc];
    all.sort();
    assert_eq!(store.all_certificates().unwrap(), all);
    assert_eq!(
        store.certificate_events(&ida).unwrap(),
        vec![
            (producer.chain.clone(), 1),
            (producer.chain.clone(), 3),
            (lab.chain.clone(), 0),
            (lab.chain.clone(), 1),
        ]
    );
    assert_eq!(
        store.certificate_events(&idb).unwrap(),
        vec![(producer.chain.clone(), 2)]
    );
    assert_eq!(store.certificate_events(&EntryId([1; 32])).unwrap(), vec![]);
    // By batch, then id.
    assert_eq!(
        store.certificates_by_code("GBW(E)082345", None).unwrap(),
        vec![ida, idb]
    );
    // Lenient code input is normalised.
    assert_eq!(
        store
            .certificates_by_code("gbw (E) 082345", Some("B2"))
            .unwrap(),
        vec![idb]
    );
    assert_eq!(
        store.certificates_by_code("GBW07406", Some("B1")).unwrap(),
        vec![idc]
    );
    assert!(
        store
            .certificates_by_code("GBW(E)082345", Some("B3"))
            .unwrap()
            .is_empty()
    );
    assert!(store.certificates_by_code("", None).unwrap().is_empty());
    let before = state(&store);
    drop(store);
    let store = Store::reindex(tmp.path(), small()).unwrap();
    assert_eq!(state(&store), before);
}

#[test]
fn reads_run_while_appending() {
    let tmp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(tmp.path(), small()).unwrap());
    let mut w = Writer::new("acme-rm", 1);
    store.append(&batch(w.anchors(1))).unwrap();
    let chain = w.chain.clone();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut seen = 0;
            while seen < 50 {
                let size = store.chain_size(&chain);
                let root = store.root(&chain, size).unwrap();
                for i in 0..size {
                    let p = store.inclusion_proof(&chain, i, size).unwrap();
                    let leaf = Sha256::leaf(&store.entry(&chain, i).unwrap().unwrap());
                    merkle::verify_inclusion::<Sha256>(i, size, &leaf, &p, &root.0).unwrap();
                }
                seen = size;
            }
        })
    };
    for _ in 0..49 {
        store.append(&batch(w.anchors(1))).unwrap();
    }
    reader.join().unwrap();
}

/// `read_log`: what `Store::scan` sees, without the store — no lock taken (it runs while the
/// store is open), nothing written, a torn tail tolerated, damage before it refused, and a
/// second pass up to the first pass's end sees exactly the same records.
#[test]
fn read_log_reads_a_live_data_directory_read_only() {
    use rmledger_node::storage::read_log;
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut producer, _lab) = populated(tmp.path(), small());
    let mut scanned = Vec::new();
    store
        .scan(|r| {
            scanned.push((r.segment, r.offset, r.kind, r.bytes.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
    let read = |until| {
        let mut records = Vec::new();
        let end = read_log(tmp.path(), until, |r| {
            records.push((r.segment, r.offset, r.kind, r.bytes.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        (records, end)
    };
    // The segments byte for byte, and the names at the top (sled's own files under index/
    // change in the background while the store is open).
    let listing = |dir: &Path| {
        let mut segments: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir.join("segments"))
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let bytes = fs::read(&path).unwrap();
                (path, bytes)
            })
            .collect();
        segments.sort();
        let mut top: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        top.sort();
        (segments, top)
    };
    let before = listing(tmp.path());
    // The store is open (and holds the lock): the read works and changes nothing.
    let (records, end) = read(None);
    assert_eq!(records, scanned);
    assert_eq!(listing(tmp.path()), before);
    // A half-written frame at the tail (a write in progress) ends the read quietly.
    let seg = segment(tmp.path(), 0);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    let mut torn = vec![MAGIC_ENTRY];
    torn.extend_from_slice(&500u32.to_le_bytes());
    torn.extend_from_slice(&[9; 32 + 100]);
    f.write_all(&torn).unwrap();
    drop(f);
    let (with_torn, end_torn) = read(None);
    assert_eq!(with_torn, scanned);
    assert_eq!(end_torn, end);
    // Up to a position: the same records even when more were appended since.
    drop(store);
    let store = Store::open(tmp.path(), small()).unwrap();
    store.append(&batch(producer.anchors(3))).unwrap();
    let (again, end_again) = read(Some(end));
    assert_eq!(again, scanned);
    assert_eq!(end_again, end);
    assert_eq!(read(None).0.len(), scanned.len() + 3);
    drop(store);
    // Damage before the tail is corruption, named by segment and offset.
    flip(&seg, FRAME_HEADER as u64 + 20);
    let err = read_log(tmp.path(), None, |_| ControlFlow::Continue(())).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Corrupt {
                segment: 0,
                offset: 0,
                ..
            }
        ),
        "{err}"
    );
    // Not a data directory.
    let err = read_log(&tmp.path().join("nowhere"), None, |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("data directory"), "{err}");
}

#[test]
fn every_anchor_is_indexed_newest_first_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, producer, lab) = populated(tmp.path(), small());
    // The lab anchors the producer's chain too: anchors are found whoever wrote them.
    let witnessed = producer.size;
    let root = TreeHash(producer.tree.root());
    let by_lab = {
        let mut lab = lab;
        let entry = lab.next(Record::Anchor(Anchor {
            root,
            size: witnessed,
            chain: producer.chain.clone(),
        }));
        store.append(&batch(vec![entry.clone()])).unwrap();
        entry
    };
    let written: Vec<(u64, u64)> = producer
        .bytes
        .iter()
        .map(|b| Entry::decode(b).unwrap())
        .filter_map(|e| match e.record() {
            Record::Anchor(a) => Some((a.size, e.seq())),
            _ => None,
        })
        .collect();
    let all = store
        .anchors_upto(&producer.chain, u64::MAX, usize::MAX)
        .unwrap();
    assert_eq!(all.len(), written.len() + 1);
    assert!(all.windows(2).all(|w| w[0].size >= w[1].size), "{all:?}");
    assert_eq!(
        (
            all[0].witness.as_str(),
            all[0].seq,
            all[0].size,
            all[0].root
        ),
        ("lab-01", by_lab.seq(), witnessed, root)
    );
    // Bounded by size and by count, largest size first.
    // (The producer anchored itself at sizes 0, 1, 2, then 5, 6, 7, …)
    let upto = store.anchors_upto(&producer.chain, 6, 2).unwrap();
    assert_eq!(
        upto.iter().map(|a| a.size).collect::<Vec<_>>(),
        vec![6, 5],
        "{upto:?}"
    );
    assert!(upto.iter().all(|a| a.witness == producer.chain));
    for anchor in &upto {
        assert!(written.contains(&(anchor.size, anchor.seq)), "{anchor:?}");
    }
    assert!(
        store
            .anchors_upto(&OrgId::new("ghost").unwrap(), u64::MAX, 10)
            .unwrap()
            .is_empty()
    );
    // A rebuilt index holds the same anchors.
    drop(store);
    fs::remove_dir_all(tmp.path().join("index")).unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    assert_eq!(
        store
            .anchors_upto(&producer.chain, u64::MAX, usize::MAX)
            .unwrap(),
        all
    );
}

#[test]
fn anchors_waiting_for_their_chain_are_grouped_marked_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    let mut producer = Writer::new("acme-rm", 1);
    let mut lab = Writer::new("lab-01", 2);
    let named = producer.chain.clone();
    let anchor_of = |lab: &mut Writer, size: u64| {
        lab.next(Record::Anchor(Anchor {
            root: TreeHash([size as u8; 32]),
            size,
            chain: named.clone(),
        }))
    };
    // Two runs of anchors naming more of the producer's chain than the store holds (none).
    store
        .append(&batch((1..=5).map(|s| anchor_of(&mut lab, s)).collect()))
        .unwrap();
    store
        .append(&batch((6..=8).map(|s| anchor_of(&mut lab, s)).collect()))
        .unwrap();
    let sizes = |anchors: Vec<rmledger_node::storage::AnchorRef>| {
        let mut sizes: Vec<u64> = anchors.iter().map(|a| a.size).collect();
        sizes.sort_unstable();
        sizes
    };
    let chain = producer.chain.clone();
    assert_eq!(
        sizes(store.unchecked_anchors(&chain, 3, 100).unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(
        sizes(store.unchecked_anchors(&chain, u64::MAX, 100).unwrap()),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(
        store.unchecked_anchors(&chain, u64::MAX, 2).unwrap().len(),
        2
    );
    assert!(store.unchecked_anchors(&chain, 0, 100).unwrap().is_empty());
    // Each waiting anchor carries its witness, seq and root.
    let first = &store.unchecked_anchors(&chain, 1, 100).unwrap()[0];
    assert_eq!(
        (first.witness.as_str(), first.seq, first.root),
        ("lab-01", 0, TreeHash([1; 32]))
    );
    // Marking some checked (across both groups) leaves the others waiting, across a restart.
    let checked: Vec<_> = store
        .unchecked_anchors(&chain, u64::MAX, 100)
        .unwrap()
        .into_iter()
        .filter(|a| a.size % 2 == 1)
        .collect();
    store.anchors_checked(&chain, &checked).unwrap();
    assert_eq!(
        sizes(store.unchecked_anchors(&chain, u64::MAX, 100).unwrap()),
        vec![2, 4, 6, 8]
    );
    drop(store);
    let store = Store::open(tmp.path(), small()).unwrap();
    assert_eq!(
        sizes(store.unchecked_anchors(&chain, u64::MAX, 100).unwrap()),
        vec![2, 4, 6, 8]
    );
    assert_eq!(
        sizes(store.unchecked_anchors(&chain, 5, 100).unwrap()),
        vec![2, 4]
    );
    // Every anchor stays listed for bundles, newest first, whether waiting or checked.
    let upto = store.anchors_upto(&chain, 6, 3).unwrap();
    assert_eq!(
        upto.iter().map(|a| a.size).collect::<Vec<_>>(),
        vec![6, 5, 4]
    );
    // An anchor naming a size the store holds does not wait.
    let held: Vec<Entry> = (0..10).map(|_| producer.anchor()).collect();
    store.append(&batch(held)).unwrap();
    store.append(&batch(vec![anchor_of(&mut lab, 10)])).unwrap();
    assert_eq!(
        sizes(store.unchecked_anchors(&chain, u64::MAX, 100).unwrap()),
        vec![2, 4, 6, 8]
    );
    assert_eq!(store.anchors_upto(&chain, u64::MAX, 1).unwrap()[0].size, 10);
    // A rebuilt index makes the same decisions from the log; marks are not in the log, so
    // the anchors that waited wait again (and are checked again).
    drop(store);
    fs::remove_dir_all(tmp.path().join("index")).unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    assert_eq!(
        sizes(store.unchecked_anchors(&chain, u64::MAX, 100).unwrap()),
        (1..=8).collect::<Vec<_>>()
    );
}

#[test]
fn anchors_upto_reads_groups_reaching_past_the_size() {
    // One run holding anchors on both sides of the size asked for: the smaller ones count.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), small()).unwrap();
    let mut lab = Writer::new("lab-01", 2);
    let mut other = Writer::new("other", 3);
    let ghost = OrgId::new("ghost").unwrap();
    let anchors = |w: &mut Writer, sizes: &[u64]| -> Vec<Entry> {
        sizes
            .iter()
            .map(|&size| {
                w.next(Record::Anchor(Anchor {
                    root: TreeHash([size as u8; 32]),
                    size,
                    chain: ghost.clone(),
                }))
            })
            .collect()
    };
    store
        .append(&batch(anchors(&mut lab, &[3, 9, 20])))
        .unwrap();
    store.append(&batch(anchors(&mut other, &[4, 8]))).unwrap();
    store.append(&batch(anchors(&mut lab, &[1, 2]))).unwrap();
    let listed = |upto, limit| -> Vec<(u64, String)> {
        store
            .anchors_upto(&ghost, upto, limit)
            .unwrap()
            .into_iter()
            .map(|a| (a.size, a.witness.to_string()))
            .collect()
    };
    assert_eq!(
        listed(10, 3),
        vec![
            (9, "lab-01".to_owned()),
            (8, "other".to_owned()),
            (4, "other".to_owned())
        ]
    );
    assert_eq!(
        listed(2, 10),
        vec![(2, "lab-01".to_owned()), (1, "lab-01".to_owned())]
    );
    assert_eq!(listed(u64::MAX, 1), vec![(20, "lab-01".to_owned())]);
    assert_eq!(listed(u64::MAX, usize::MAX).len(), 7);
    assert!(listed(0, 10).is_empty());
}
