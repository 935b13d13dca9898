//! Append throughput of `storage::Store` with fsync, for batches of 1, 16 and 64 entries.
//!
//! `cargo bench -p rmledger-node --bench storage` prints entries/s per batch size. Each append
//! is one `fdatasync` (the acknowledgement point), so the numbers are dominated by the disk.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rmledger_node::storage::{Batch, Store, StoreOptions};
use rmledger_schema::entry::{Entry, Payload, VERSION};
use rmledger_schema::ids::{EntryId, FederationId, OrgId, TreeHash};
use rmledger_schema::records::{Anchor, Record};

fn entries(n: u64) -> Vec<Entry> {
    let key = SigningKey::from_bytes(&[1; 32]);
    let chain = OrgId::new("bench-rm").unwrap();
    let mut prev: Option<EntryId> = None;
    (0..n)
        .map(|seq| {
            let entry = Entry::sign(
                &key,
                Payload {
                    version: VERSION,
                    operator: "bench".into(),
                    federation: FederationId([7; 32]),
                    record: Record::Anchor(Anchor {
                        root: TreeHash([seq as u8; 32]),
                        size: seq,
                        chain: chain.clone(),
                    }),
                    seq,
                    prev,
                    time_unix_ms: 1_700_000_000_000 + seq,
                    chain: chain.clone(),
                },
            )
            .unwrap();
            prev = Some(entry.id());
            entry
        })
        .collect()
}

fn main() {
    // `cargo test --benches` passes `--bench`-less args; keep runs short there.
    let quick = !std::env::args().any(|a| a == "--bench");
    let budget = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(3)
    };
    let all = entries(if quick { 2_000 } else { 40_000 });
    for batch_size in [1usize, 16, 64] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let start = Instant::now();
        let mut written = 0usize;
        for chunk in all.chunks(batch_size) {
            store
                .append(&Batch {
                    entries: chunk.to_vec(),
                    checkpoints: Vec::new(),
                })
                .unwrap();
            written += chunk.len();
            if start.elapsed() >= budget {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "append batch={batch_size:>3}: {written:>6} entries in {secs:.2} s = {:>8.0} entries/s, {:>7.0} appends/s",
            written as f64 / secs,
            (written / batch_size) as f64 / secs
        );
    }
}
