//! Crash safety: eight writers append (half of them in batches of 1–4 records through
//! `POST /v1/records/batch`) while the node is SIGKILLed at a random moment; after a restart
//! every acknowledged write is at its sequence number, the served roots equal the root
//! computed here from the entries, the checkpoint agrees, and `fsck` passes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmledger_schema::entry::Entry;
use rmledger_schema::ids::EntryId;
use rmledger_tests::records;
use rmledger_tests::{ORG, TestNode, Written, XorShift, hash_hex, prefix_roots, seed};

const WRITERS: u64 = 8;

fn iterations() -> u64 {
    std::env::var("RMLEDGER_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let seed = seed(0xc0ffee);
    eprintln!("seed {seed} (set RMLEDGER_TEST_SEED to repeat)");
    let mut rng = XorShift::new(seed);
    let mut node = TestNode::init_registrar();
    // Every write ever acknowledged: seq → id.
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    let started = Instant::now();
    let mut unexpected = Vec::new();
    // (iteration, checkpoint size, chain size) where the checkpoint lags after a restart.

    for iteration in 0..iterations() {
        node.start();
        let api = node.api().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Mutex<Vec<Written>>> = Arc::default();
        let refusals: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let (api, stop, acks, refusals) =
                (api.clone(), stop.clone(), acks.clone(), refusals.clone());
            let mut rng = XorShift::new(seed ^ (iteration * WRITERS + w + 1).wrapping_mul(0x9e37));
            writers.spawn(async move {
                let mut n = 0u64;
                let bearer = format!("Bearer {}", api.token());
                while !stop.load(Ordering::Relaxed) {
                    // Odd writers post batches of 1–4 records, even writers single records.
                    let count = if w % 2 == 1 { rng.range(1, 4) } else { 1 };
                    let records: Vec<_> = (0..count)
                        .map(|i| records::anchor("nclab", n + i + 1, rng.bytes32()))
                        .collect();
                    n += count;
                    let sent = if w % 2 == 1 {
                        let body = serde_json::to_vec(&records).unwrap();
                        api.try_post_to("/v1/records/batch", body, Some(&bearer))
                            .await
                    } else {
                        api.try_post_record(&records[0]).await
                    };
                    match sent {
                        Ok(resp) if resp.status == 201 => {
                            let written: Vec<Written> = if w % 2 == 1 {
                                serde_json::from_slice(&resp.body)
                                    .expect("201 body is [{id, chain, seq}]")
                            } else {
                                vec![
                                    serde_json::from_slice(&resp.body)
                                        .expect("201 body is {id, chain, seq}"),
                                ]
                            };
                            assert_eq!(written.len() as u64, count);
                            // A batch's records are consecutive entries.
                            for pair in written.windows(2) {
                                assert_eq!(pair[1].seq, pair[0].seq + 1, "{written:?}");
                            }
                            acks.lock().unwrap().extend(written);
                        }
                        Ok(resp) => {
                            refusals.lock().unwrap().push(format!(
                                "HTTP {} {}",
                                resp.status,
                                resp.text()
                            ));
                            break;
                        }
                        // The node is gone: connection refused or reset.
                        Err(_) => break,
                    }
                }
            });
        }
        let delay = rng.range(50, 400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        while let Some(r) = writers.join_next().await {
            r.expect("writer task");
        }
        let acks = std::mem::take(&mut *acks.lock().unwrap());
        unexpected.extend(std::mem::take(&mut *refusals.lock().unwrap()));
        for ack in &acks {
            assert_eq!(ack.chain, ORG);
            if let Some(previous) = acknowledged.insert(ack.seq, ack.id.clone()) {
                panic!(
                    "iteration {iteration}: seq {} acknowledged twice ({previous} and {})",
                    ack.seq, ack.id
                );
            }
        }

        // Every fourth round, fsck the crashed store before the node recovers it.
        if iteration % 4 == 1 {
            let out = node.fsck();
            assert!(
                out.status.success(),
                "iteration {iteration}: fsck right after SIGKILL: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        // Restart after the crash: everything acknowledged is there, at its seq.
        let api = node.start().clone();
        let entries = api.all_entries(ORG).await;
        let size = entries.len() as u64;
        let last_acked = acknowledged.keys().next_back().copied();
        assert!(
            last_acked.is_none_or(|seq| seq < size),
            "iteration {iteration}: acknowledged seq {last_acked:?} but the chain holds {size}"
        );
        for (seq, id) in &acknowledged {
            assert_eq!(
                Entry::id_of(&entries[*seq as usize]).unwrap().to_hex(),
                *id,
                "iteration {iteration}: the entry at {seq} is not the acknowledged one"
            );
        }
        // This round's acknowledgements, one by one through /entries/{seq}.
        for ack in &acks {
            let bytes = api.entry(ORG, ack.seq).await.unwrap_or_else(|| {
                panic!(
                    "iteration {iteration}: acknowledged seq {} is gone",
                    ack.seq
                )
            });
            assert_eq!(Entry::id_of(&bytes).unwrap(), ack.entry_id());
        }
        // The entries are a well-formed chain: seq and prev links.
        let mut prev: Option<EntryId> = None;
        for (seq, bytes) in entries.iter().enumerate() {
            let entry = Entry::decode(bytes)
                .unwrap_or_else(|e| panic!("iteration {iteration}: entry {seq}: {e}"));
            assert_eq!(entry.seq(), seq as u64);
            assert_eq!(entry.payload().prev, prev, "entry {seq}'s prev link");
            prev = Some(entry.id());
        }

        // The served root, head and checkpoint agree with the entries.
        let roots = prefix_roots(&entries);
        // (A node killed before its first commit may not list the chain at all.)
        if let Some(row) = api.chain(ORG).await {
            assert_eq!(row.size, size);
            assert_eq!(
                hash_hex(&row.root),
                roots[size as usize],
                "iteration {iteration}: /v1/chains root"
            );
            assert_eq!(row.head, prev.map(|id| id.to_hex()));
        } else {
            assert_eq!(
                size, 0,
                "iteration {iteration}: entries of an unlisted chain"
            );
        }
        if size > 0 {
            let checkpoint = api.checkpoint(ORG).await;
            let body = checkpoint.body();
            assert!(
                body.size >= 1 && body.size <= size,
                "iteration {iteration}: checkpoint size {} of a {size}-entry chain",
                body.size
            );
            assert_eq!(
                body.root.0, roots[body.size as usize],
                "iteration {iteration}: checkpoint root at size {}",
                body.size
            );
            assert_eq!(
                body.head,
                Entry::id_of(&entries[body.size as usize - 1]).unwrap()
            );
            // A commit is its entries and its checkpoint, all or nothing across crashes: a
            // commit the kill cut short is cut off at restart, never left without checkpoint.
            assert_eq!(
                body.size, size,
                "iteration {iteration}: entries past the last checkpoint after a crash"
            );
        }
        eprintln!(
            "iteration {iteration}: killed after {delay} ms; {} acknowledged, chain {size}",
            acks.len()
        );

        // A clean stop, then fsck.
        node.stop();
        node.assert_fsck_ok();
    }
    eprintln!(
        "{} iterations, {} acknowledged writes in {:.1?}",
        iterations(),
        acknowledged.len(),
        started.elapsed()
    );
    assert!(
        unexpected.is_empty(),
        "writes refused while the node was up: {unexpected:?}"
    );
    assert!(
        acknowledged.len() as u64 >= iterations(),
        "too few writes acknowledged to mean anything"
    );
}
