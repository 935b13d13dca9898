//! Property tests of the RFC 9162 Merkle tree: on random trees of up to 2,000 leaves, every
//! generated proof verifies, and every one-bit or off-by-one change to it fails.
//!
//! RFC 9162 binds a root to its tree size only through the signed tree head, so a changed size
//! is checked against the honest root of that size (a proof checked against the root of another
//! size can alias; see the unit test `sizes_alias_without_the_tree_head`).

use proptest::prelude::*;
use rmledger_schema::merkle::{
    Frontier, Hash, MemoryTree, Sha256, TreeHasher, consistency_proof, inclusion_proof, root,
    verify_consistency, verify_inclusion,
};

struct Fixture {
    tree: MemoryTree<Sha256>,
    leaves: Vec<Hash>,
    /// `roots[n]` is MTH(D[n]) from the Frontier, for n in 0..=len.
    roots: Vec<Hash>,
}

/// A tree of `n + 1` leaves (one spare so that size + 1 has an honest root).
fn fixture(n: u64, seed: u64) -> Fixture {
    let mut tree = MemoryTree::<Sha256>::new();
    let mut frontier = Frontier::new();
    let mut leaves = Vec::new();
    let mut roots = vec![frontier.root::<Sha256>()];
    for i in 0..=n {
        let leaf = Sha256::leaf(&(seed ^ i).to_le_bytes());
        leaves.push(leaf);
        tree.push_leaf_hash(leaf);
        frontier.append::<Sha256>(leaf).unwrap();
        roots.push(frontier.root::<Sha256>());
    }
    Fixture {
        tree,
        leaves,
        roots,
    }
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut h = *h;
    h[bit / 8] ^= 1 << (bit % 8);
    h
}

fn check_inclusion(f: &Fixture, index: u64, size: u64, bits: &[usize]) {
    let leaf = f.leaves[index as usize];
    let r = f.roots[size as usize];
    let p = inclusion_proof::<Sha256, _>(&f.tree, index, size).unwrap();
    assert_eq!(p, f.tree.inclusion_proof(index, size).unwrap());
    verify_inclusion::<Sha256>(index, size, &leaf, &p, &r)
        .unwrap_or_else(|e| panic!("PATH({index}, D[{size}]): {e}"));
    // Flip one (random) bit of every proof element, of the leaf hash and of the root.
    for i in 0..p.len() {
        for &bit in bits {
            let mut q = p.clone();
            q[i] = flip(&q[i], bit);
            assert!(verify_inclusion::<Sha256>(index, size, &leaf, &q, &r).is_err());
        }
    }
    for &bit in bits {
        assert!(verify_inclusion::<Sha256>(index, size, &flip(&leaf, bit), &p, &r).is_err());
        assert!(verify_inclusion::<Sha256>(index, size, &leaf, &p, &flip(&r, bit)).is_err());
    }
    // Index or size off by one (a changed size with its own honest root).
    for (i2, s2) in [
        (index.wrapping_add(1), size),
        (index.wrapping_sub(1), size),
        (index, size + 1),
        (index, size - 1),
    ] {
        let r2 = f.roots[s2 as usize];
        assert!(
            verify_inclusion::<Sha256>(i2, s2, &leaf, &p, &r2).is_err(),
            "PATH({index}, D[{size}]) verified as ({i2}, {s2})"
        );
    }
    // A proof one hash shorter or longer.
    if !p.is_empty() {
        assert!(verify_inclusion::<Sha256>(index, size, &leaf, &p[1..], &r).is_err());
        assert!(verify_inclusion::<Sha256>(index, size, &leaf, &p[..p.len() - 1], &r).is_err());
    }
    let mut longer = p.clone();
    longer.push(r);
    assert!(verify_inclusion::<Sha256>(index, size, &leaf, &longer, &r).is_err());
}

fn check_consistency(f: &Fixture, size1: u64, size2: u64, bits: &[usize]) {
    let (r1, r2) = (f.roots[size1 as usize], f.roots[size2 as usize]);
    let p = consistency_proof::<Sha256, _>(&f.tree, size1, size2).unwrap();
    assert_eq!(p, f.tree.consistency_proof(size1, size2).unwrap());
    verify_consistency::<Sha256>(size1, size2, &r1, &r2, &p)
        .unwrap_or_else(|e| panic!("PROOF({size1}, D[{size2}]): {e}"));
    for i in 0..p.len() {
        for &bit in bits {
            let mut q = p.clone();
            q[i] = flip(&q[i], bit);
            assert!(verify_consistency::<Sha256>(size1, size2, &r1, &r2, &q).is_err());
        }
    }
    for &bit in bits {
        assert!(verify_consistency::<Sha256>(size1, size2, &flip(&r1, bit), &r2, &p).is_err());
        assert!(verify_consistency::<Sha256>(size1, size2, &r1, &flip(&r2, bit), &p).is_err());
    }
    for (s1, s2) in [
        (size1 + 1, size2),
        (size1 - 1, size2),
        (size1, size2 + 1),
        (size1, size2 - 1),
    ] {
        let (a, b) = (f.roots[s1 as usize], f.roots[s2 as usize]);
        assert!(
            verify_consistency::<Sha256>(s1, s2, &a, &b, &p).is_err(),
            "PROOF({size1}, D[{size2}]) verified as ({s1}, {s2})"
        );
    }
    if size1 < size2 {
        assert!(verify_consistency::<Sha256>(size1, size2, &r2, &r1, &p).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn proofs_verify_and_mutations_fail(
        n in 1u64..=2000,
        seed in any::<u64>(),
        bit in 0usize..256,
        picks in proptest::collection::vec((any::<u64>(), any::<u64>()), 50),
    ) {
        let f = fixture(n, seed);
        // Roots agree for every size: Frontier, MemoryTree's source, Frontier::load.
        for size in 0..=n {
            let want = f.roots[size as usize];
            prop_assert_eq!(root::<Sha256, _>(&f.tree, size).unwrap(), want);
            prop_assert_eq!(Frontier::load(&f.tree, size).unwrap().root::<Sha256>(), want);
        }
        prop_assert_eq!(f.tree.root(), f.roots[n as usize + 1]);

        // Edges, then ~50 random pairs.
        let mut incl = vec![(0, 1), (0, n), (n - 1, n)];
        let mut cons = vec![(1, 1), (1, n), (n, n), (n - 1, n).max((1, n))];
        for (a, b) in picks {
            let size = 1 + b % n;
            incl.push((a % size, size));
            let size1 = 1 + a % size;
            cons.push((size1, size));
        }
        let bits = [bit];
        for (index, size) in incl {
            check_inclusion(&f, index, size, &bits);
        }
        for (size1, size2) in cons {
            check_consistency(&f, size1, size2, &bits);
        }
    }
}
