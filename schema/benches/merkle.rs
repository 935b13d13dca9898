//! Merkle tree throughput: Frontier appends, and proof generation and verification at 10^6
//! leaves from a MemoryTree.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rmledger_schema::merkle::{
    Frontier, Hash, MemoryTree, Sha256, TreeHasher, verify_consistency, verify_inclusion,
};

const N: u64 = 1_000_000;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| Sha256::leaf(&i.to_le_bytes())).collect()
}

fn bench(c: &mut Criterion) {
    let hashes = leaves(N);

    c.bench_function("frontier_append_1e6_leaves", |b| {
        b.iter(|| {
            let mut f = Frontier::new();
            for h in &hashes {
                black_box(f.append::<Sha256>(*h).unwrap());
            }
            black_box(f.root::<Sha256>())
        })
    });

    let mut tree = MemoryTree::<Sha256>::new();
    for h in &hashes {
        tree.push_leaf_hash(*h);
    }
    let root = tree.root();
    let (index, size1) = (123_457, 654_321);
    let root1 = rmledger_schema::merkle::root::<Sha256, _>(&tree, size1).unwrap();

    c.bench_function("inclusion_proof_1e6", |b| {
        b.iter(|| tree.inclusion_proof(black_box(index), N).unwrap())
    });
    c.bench_function("consistency_proof_654321_1e6", |b| {
        b.iter(|| tree.consistency_proof(black_box(size1), N).unwrap())
    });

    let incl = tree.inclusion_proof(index, N).unwrap();
    let cons = tree.consistency_proof(size1, N).unwrap();
    let leaf = hashes[index as usize];
    c.bench_function("verify_inclusion_1e6", |b| {
        b.iter(|| verify_inclusion::<Sha256>(black_box(index), N, &leaf, &incl, &root).unwrap())
    });
    c.bench_function("verify_consistency_654321_1e6", |b| {
        b.iter(|| verify_consistency::<Sha256>(black_box(size1), N, &root1, &root, &cons).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
