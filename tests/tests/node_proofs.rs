//! Proofs served by a real node, checked against trees computed here from the exact entry
//! bytes: every inclusion proof of a 300-entry chain, consistency proofs, the checkpoint, and
//! a certificate's bundle verified offline (and refused after any single-byte change).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rmledger_schema::bundle::Bundle;
use rmledger_schema::entry::Entry;
use rmledger_schema::federation::verifying_key;
use rmledger_schema::ids::{EntryId, FederationId};
use rmledger_schema::merkle::{Hash, MemoryTree, Sha256, verify_consistency, verify_inclusion};
use rmledger_schema::records::Record;
use rmledger_schema::testkit;
use rmledger_tests::records::{self, json};
use rmledger_tests::{Api, ORG, TestNode, XorShift, hash_hex, memory_tree, prefix_roots, seed};
use serde::Deserialize;

const ENTRIES: u64 = 300;
const IN_FLIGHT: usize = 16;

#[derive(Deserialize)]
struct InclusionProof {
    index: u64,
    size: u64,
    leaf_hash: String,
    root: String,
    path: Vec<String>,
}

#[derive(Deserialize)]
struct ConsistencyProof {
    from: u64,
    to: u64,
    root_from: String,
    root_to: String,
    path: Vec<String>,
}

/// Runs `check` over `items` with [`IN_FLIGHT`] requests at once; returns the failures.
async fn check_all<T, F, Fut>(api: &Api, items: Vec<T>, check: F) -> Vec<String>
where
    T: Send + Sync + 'static,
    F: Fn(Api, &'static T) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let items: &'static [T] = Vec::leak(items);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let api = api.clone();
        let next = next.clone();
        workers.spawn(async move {
            let mut failures = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                if let Err(e) = check(api.clone(), item).await {
                    failures.push(e);
                }
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(result) = workers.join_next().await {
        failures.extend(result.expect("a proof worker panicked"));
    }
    failures
}

fn hashes(path: &[String]) -> Vec<Hash> {
    path.iter().map(|h| hash_hex(h)).collect()
}

/// What the checks compare with: the leaves and every prefix root, computed locally.
struct Local {
    tree: MemoryTree<Sha256>,
    leaves: Vec<Hash>,
    roots: Vec<Hash>,
}

static LOCAL: std::sync::OnceLock<Local> = std::sync::OnceLock::new();

async fn check_inclusion(api: Api, &(index, size): &'static (u64, u64)) -> Result<(), String> {
    let local = LOCAL.get().expect("local tree");
    let what = format!("inclusion index={index} size={size}");
    let resp = api
        .try_get(&format!(
            "/v1/chains/{ORG}/proof/inclusion?index={index}&size={size}"
        ))
        .await
        .map_err(|e| format!("{what}: {e:#}"))?;
    if resp.status != 200 {
        return Err(format!("{what}: HTTP {} {}", resp.status, resp.text()));
    }
    let proof: InclusionProof =
        serde_json::from_slice(&resp.body).map_err(|e| format!("{what}: {e}"))?;
    let (leaf, root, path) = (
        hash_hex(&proof.leaf_hash),
        hash_hex(&proof.root),
        hashes(&proof.path),
    );
    if (proof.index, proof.size) != (index, size) {
        return Err(format!("{what}: echoed {} {}", proof.index, proof.size));
    }
    verify_inclusion::<Sha256>(index, size, &leaf, &path, &root)
        .map_err(|e| format!("{what}: does not verify against its own root: {e}"))?;
    if leaf != local.leaves[index as usize] {
        return Err(format!("{what}: leaf hash differs from the entry's"));
    }
    if root != local.roots[size as usize] {
        return Err(format!("{what}: root differs from the local tree's"));
    }
    let expected = local
        .tree
        .inclusion_proof(index, size)
        .map_err(|e| format!("{what}: local proof: {e}"))?;
    if path != expected {
        return Err(format!("{what}: path differs from the local PATH"));
    }
    Ok(())
}

async fn check_consistency(api: Api, &(from, to): &'static (u64, u64)) -> Result<(), String> {
    let local = LOCAL.get().expect("local tree");
    let what = format!("consistency from={from} to={to}");
    let resp = api
        .try_get(&format!(
            "/v1/chains/{ORG}/proof/consistency?from={from}&to={to}"
        ))
        .await
        .map_err(|e| format!("{what}: {e:#}"))?;
    if resp.status != 200 {
        return Err(format!("{what}: HTTP {} {}", resp.status, resp.text()));
    }
    let proof: ConsistencyProof =
        serde_json::from_slice(&resp.body).map_err(|e| format!("{what}: {e}"))?;
    let (root1, root2, path) = (
        hash_hex(&proof.root_from),
        hash_hex(&proof.root_to),
        hashes(&proof.path),
    );
    if (proof.from, proof.to) != (from, to) {
        return Err(format!("{what}: echoed {} {}", proof.from, proof.to));
    }
    if root1 != local.roots[from as usize] || root2 != local.roots[to as usize] {
        return Err(format!("{what}: roots differ from the local tree's"));
    }
    verify_consistency::<Sha256>(from, to, &root1, &root2, &path)
        .map_err(|e| format!("{what}: does not verify: {e}"))?;
    let expected = local
        .tree
        .consistency_proof(from, to)
        .map_err(|e| format!("{what}: local proof: {e}"))?;
    if path != expected {
        return Err(format!("{what}: path differs from the local PROOF"));
    }
    Ok(())
}

fn report(kind: &str, count: usize, failures: &[String], started: Instant) {
    eprintln!(
        "{kind}: {count} proofs checked in {:.1?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} {kind} proofs failed; first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proof_of_a_300_entry_chain() {
    let mut node = TestNode::started();
    let api = node.api().clone();
    let mut rng = XorShift::new(seed(0x5eed_0001));

    // 300 anchors from 10 concurrent writers.
    let started = Instant::now();
    let roots: Vec<[u8; 32]> = (0..ENTRIES).map(|_| rng.bytes32()).collect();
    let roots = Arc::new(roots);
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..10u64 {
        let (api, roots) = (api.clone(), roots.clone());
        writers.spawn(async move {
            for i in (w..ENTRIES).step_by(10) {
                api.write(&records::anchor("nclab", i + 1, roots[i as usize]))
                    .await;
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.expect("writer");
    }
    eprintln!("wrote {ENTRIES} entries in {:.1?}", started.elapsed());

    // The entries, paged, and the trees computed here.
    let entries = api.all_entries(ORG).await;
    assert_eq!(entries.len() as u64, ENTRIES);
    for (seq, bytes) in entries.iter().enumerate() {
        let single = api.entry(ORG, seq as u64).await.expect("entry by seq");
        assert_eq!(
            &single, bytes,
            "entry {seq}: /entries/{{seq}} and the page differ"
        );
    }
    let page = api.entries_page(ORG, 290, 100).await;
    assert_eq!(
        page.len(),
        10,
        "a page past the end is cut at the chain's size"
    );
    let tree = memory_tree(&entries);
    let local = Local {
        leaves: rmledger_tests::leaf_hashes(&entries),
        roots: prefix_roots(&entries),
        tree,
    };
    let full_root = local.tree.root();
    let head = Entry::id_of(entries.last().unwrap()).unwrap();
    assert!(LOCAL.set(local).is_ok());

    // /v1/chains and the checkpoint agree with the local tree.
    let row = api.chain(ORG).await.expect("the chain is listed");
    assert_eq!(row.size, ENTRIES);
    assert_eq!(hash_hex(&row.root), full_root, "/v1/chains root");
    assert_eq!(row.head.as_deref(), Some(head.to_hex().as_str()));
    let checkpoint = api.checkpoint(ORG).await;
    let body = checkpoint.body();
    assert_eq!(
        body.size, ENTRIES,
        "one checkpoint per commit: the latest covers all"
    );
    assert_eq!(body.root.0, full_root, "checkpoint root");
    assert_eq!(body.head, head);
    assert_eq!(body.federation, node.federation_id());
    assert_eq!(body.chain.as_str(), ORG);
    checkpoint
        .verify_signature(&verifying_key(&node.public_key()).unwrap())
        .expect("the checkpoint is signed by the node's key");

    // Every inclusion proof: all (index, size) with index < size <= 300.
    let pairs: Vec<(u64, u64)> = (1..=ENTRIES)
        .flat_map(|size| (0..size).map(move |index| (index, size)))
        .collect();
    let count = pairs.len();
    assert_eq!(count, 45_150);
    let started = Instant::now();
    let failures = check_all(&api, pairs, check_inclusion).await;
    report("inclusion", count, &failures, started);

    // Consistency proofs: every pair ending at 300 or at a power of two, every equal pair,
    // and a seeded sample of the rest (well over 2,000 pairs).
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    for to in 1..=ENTRIES {
        for from in 1..=to {
            let keep = to == ENTRIES
                || to.is_power_of_two()
                || from == to
                || from.is_power_of_two()
                || rng.range(0, 9) == 0;
            if keep {
                pairs.push((from, to));
            }
        }
    }
    let count = pairs.len();
    assert!(count >= 2_000, "{count} consistency pairs");
    let started = Instant::now();
    let failures = check_all(&api, pairs, check_consistency).await;
    report("consistency", count, &failures, started);

    // Out-of-range requests are 404s, not proofs.
    for path in [
        format!("/v1/chains/{ORG}/proof/inclusion?index=300&size=300"),
        format!("/v1/chains/{ORG}/proof/inclusion?index=0&size=301"),
        format!("/v1/chains/{ORG}/proof/inclusion?index=0&size=0"),
        format!("/v1/chains/{ORG}/proof/consistency?from=0&to=10"),
        format!("/v1/chains/{ORG}/proof/consistency?from=11&to=10"),
        format!("/v1/chains/{ORG}/proof/consistency?from=1&to=301"),
    ] {
        let resp = api.get(&path).await;
        assert_eq!(resp.status, 404, "{path}: {}", resp.text());
    }
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_verifies_offline_and_every_byte_matters() {
    let mut node = TestNode::started();
    let api = node.api().clone();
    let federation = testkit::TestFederation::with_members();
    let enrol_nclab = federation
        .chain("jxim")
        .iter()
        .find_map(|e| match e.record() {
            Record::Enrol(enrol) if enrol.org.as_str() == "nclab" => Some(enrol.clone()),
            _ => None,
        })
        .expect("testkit enrols nclab");
    api.write(&json(Record::Enrol(enrol_nclab))).await;
    let cert = api
        .write(&records::register(records::soil("2026-002")))
        .await
        .entry_id();
    // An unrelated certificate and anchor (of a chain that is not a member's: an anchor naming a
    // member's chain at a size above 0 would make the bundle demand its checkpoint): in the
    // registrar chain, not in the life.
    api.write(&records::register(records::soil("2026-003")))
        .await;
    api.write(&records::anchor("ghost", 1, [3; 32])).await;
    let mut life = vec![cert];
    for record in [
        records::verify_cd(cert),
        records::ship(cert, "nclab", "S-0001..S-0003"),
        records::suspend(cert, "Cd drift under investigation"),
        records::reinstate(cert, "drift not confirmed"),
    ] {
        life.push(api.write(&record).await.entry_id());
    }

    let resp = api
        .get(&format!("/v1/certificates/{}/bundle", cert.to_hex()))
        .await;
    resp.expect_status(200);
    assert!(
        resp.content_type.starts_with("application/cbor"),
        "bundle content type {:?}",
        resp.content_type
    );
    let bytes = resp.body;
    let unknown = api
        .get(&format!(
            "/v1/certificates/{}/bundle",
            EntryId([9; 32]).to_hex()
        ))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let fed = node.federation_id();
    node.stop();

    // Offline, with the node stopped: only the pinned federation id is trusted.
    let bundle = Bundle::decode(&bytes).expect("the bundle decodes");
    assert_eq!(bundle.cert, cert);
    let verified = bundle.verify(fed).expect("the bundle verifies");
    let ids: Vec<EntryId> = verified.entries.iter().map(|e| e.id()).collect();
    assert_eq!(
        ids, life,
        "the bundle holds exactly the certificate's life, in order"
    );
    assert!(
        bundle.verify(FederationId([0; 32])).is_err(),
        "another federation id must not verify"
    );

    // Flip single bytes (0x01, 0x80 and 0xff in turn) through the whole bundle.
    let stride = (bytes.len() / 1500).max(1);
    let started = Instant::now();
    let mut undetected = Vec::new();
    let mut tried = 0usize;
    for (n, position) in (0..bytes.len()).step_by(stride).enumerate() {
        let mask = [0x01u8, 0x80, 0xff][n % 3];
        let mut changed = bytes.clone();
        changed[position] ^= mask;
        tried += 1;
        if Bundle::decode(&changed).and_then(|b| b.verify(fed)).is_ok() {
            undetected.push((position, mask));
        }
    }
    eprintln!(
        "bundle of {} bytes: {tried} single-byte changes tried in {:.1?}",
        bytes.len(),
        started.elapsed()
    );
    assert!(
        undetected.is_empty(),
        "{} single-byte changes still verify (position, xor mask): {:?}",
        undetected.len(),
        &undetected[..undetected.len().min(20)]
    );
}
