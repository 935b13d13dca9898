//! The certificate map of a chain: a compact sparse Merkle map from each certificate id to how
//! many entries of that chain concern the certificate and the id of the latest. Its root goes
//! into every checkpoint, so a proof bundle can show that it holds *all* of a chain's entries
//! about a certificate, not just some.
//!
//! The map is the 256-level binary tree whose leaves are addressed by the bits of the key
//! (most significant bit of byte 0 first), hashed in the compact form of Diem's Jellyfish tree:
//!
//! - an empty subtree hashes to [`EMPTY`] (32 zero bytes, which no BLAKE3 output is expected to
//!   be);
//! - a subtree with exactly one leaf hashes to that leaf's hash,
//!   `BLAKE3-derive_key("rmledger certmap leaf v1", key ‖ count as u64 big-endian ‖ last)`,
//!   which commits to the whole key, so the leaf can sit at any depth;
//! - any other subtree hashes to `BLAKE3-derive_key("rmledger certmap node v1", left ‖ right)`.
//!
//! The hash depends only on the set of (key, value) pairs. A leaf sits just below the first
//! bit where its key differs from every other key, about log2(n) levels down for random keys,
//! so an update or a proof costs O(log n) hashes. [`CertMap`] keeps every interior hash and is
//! persistent (children are shared `Arc`s), so a snapshot is a clone of the root and an update
//! copies only its path.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use crate::ids::{CertificateId, EntryId, TreeHash, ctx};

/// The hash of an empty subtree (and the root of an empty map).
pub const EMPTY: TreeHash = TreeHash([0; 32]);

/// Keys are 256 bits, so no path is longer than 256 siblings.
pub const MAX_DEPTH: usize = 256;

/// What the map holds for one certificate on one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tally {
    /// The id of the latest of them.
    pub last: EntryId,
    /// How many entries of the chain concern the certificate (at least 1 in a map).
    pub count: u64,
}

/// Hashers with the derive_key context already absorbed: cloning one is cheaper than deriving
/// the context key again for every node of a path.
static LEAF_HASHER: LazyLock<blake3::Hasher> =
    LazyLock::new(|| blake3::Hasher::new_derive_key(ctx::CERTMAP_LEAF));
static NODE_HASHER: LazyLock<blake3::Hasher> =
    LazyLock::new(|| blake3::Hasher::new_derive_key(ctx::CERTMAP_NODE));

static MEMBERSHIP_KEY: LazyLock<CertificateId> =
    LazyLock::new(|| EntryId(blake3::derive_key(ctx::CERTMAP_MEMBERSHIP, b"")));

/// The reserved key under which a chain's map counts its membership records (Enrol, key added
/// or revoked, member suspended or reinstated): the tally is how many the chain holds and the id
/// of the latest. It is a BLAKE3 output under a context of its own, while every certificate id
/// is an entry id (BLAKE3 under the entry context), so no certificate has this id unless
/// BLAKE3's domain separation fails.
pub fn membership_key() -> CertificateId {
    *MEMBERSHIP_KEY
}

/// The hash of the leaf for `key`.
pub fn leaf_hash(key: &CertificateId, tally: &Tally) -> TreeHash {
    let mut hasher = LEAF_HASHER.clone();
    hasher.update(&key.0);
    hasher.update(&tally.count.to_be_bytes());
    hasher.update(&tally.last.0);
    TreeHash(*hasher.finalize().as_bytes())
}

/// The hash of an interior node with at least two leaves below it.
pub fn node_hash(left: &TreeHash, right: &TreeHash) -> TreeHash {
    let mut hasher = NODE_HASHER.clone();
    hasher.update(&left.0);
    hasher.update(&right.0);
    TreeHash(*hasher.finalize().as_bytes())
}

/// Bit `depth` of `key`, most significant bit of byte 0 first: 0 = left, 1 = right.
fn bit(key: &CertificateId, depth: usize) -> usize {
    usize::from((key.0[depth / 8] >> (7 - depth % 8)) & 1)
}

#[derive(Debug, Clone)]
enum Node {
    Empty,
    Leaf(Arc<Leaf>),
    Branch(Arc<Branch>),
}

#[derive(Debug, Clone)]
struct Leaf {
    key: CertificateId,
    tally: Tally,
    hash: TreeHash,
}

#[derive(Debug, Clone)]
struct Branch {
    children: [Node; 2],
    hash: TreeHash,
}

impl Node {
    fn hash(&self) -> TreeHash {
        match self {
            Node::Empty => EMPTY,
            Node::Leaf(leaf) => leaf.hash,
            Node::Branch(branch) => branch.hash,
        }
    }

    fn leaf(key: CertificateId, tally: Tally) -> Node {
        Node::Leaf(Arc::new(Leaf {
            key,
            tally,
            hash: leaf_hash(&key, &tally),
        }))
    }

    /// A subtree at `depth` holding two leaves with distinct keys: branches down to the first
    /// bit where the keys differ.
    fn split(depth: usize, a: Node, a_key: &CertificateId, b: Node, b_key: &CertificateId) -> Node {
        debug_assert!(depth < MAX_DEPTH, "two distinct keys differ in some bit");
        let (ba, bb) = (bit(a_key, depth), bit(b_key, depth));
        let children = if ba == bb {
            let below = Node::split(depth + 1, a, a_key, b, b_key);
            if ba == 0 {
                [below, Node::Empty]
            } else {
                [Node::Empty, below]
            }
        } else if ba == 0 {
            [a, b]
        } else {
            [b, a]
        };
        let hash = node_hash(&children[0].hash(), &children[1].hash());
        Node::Branch(Arc::new(Branch { children, hash }))
    }

    /// Sets `key` to `tally` in the subtree at `depth`; returns the old value.
    fn insert(&mut self, depth: usize, key: CertificateId, tally: Tally) -> Option<Tally> {
        match self {
            Node::Empty => {
                *self = Node::leaf(key, tally);
                None
            }
            Node::Leaf(leaf) if leaf.key == key => {
                let old = leaf.tally;
                *self = Node::leaf(key, tally);
                Some(old)
            }
            Node::Leaf(leaf) => {
                let other_key = leaf.key;
                let other = std::mem::replace(self, Node::Empty);
                *self = Node::split(depth, other, &other_key, Node::leaf(key, tally), &key);
                None
            }
            Node::Branch(branch) => {
                let branch = Arc::make_mut(branch);
                let old = branch.children[bit(&key, depth)].insert(depth + 1, key, tally);
                branch.hash = node_hash(&branch.children[0].hash(), &branch.children[1].hash());
                old
            }
        }
    }
}

/// A certificate map in memory, with every interior hash kept. Cloning is O(1) and the clone
/// is an independent snapshot.
#[derive(Debug, Clone)]
pub struct CertMap {
    root: Node,
    len: usize,
}

impl Default for CertMap {
    fn default() -> Self {
        Self::new()
    }
}

impl CertMap {
    pub fn new() -> Self {
        Self {
            root: Node::Empty,
            len: 0,
        }
    }

    /// How many certificates the map holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn root(&self) -> TreeHash {
        self.root.hash()
    }

    /// The value for `key`, if any.
    pub fn get(&self, key: &CertificateId) -> Option<Tally> {
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => return None,
                Node::Leaf(leaf) => return (leaf.key == *key).then_some(leaf.tally),
                Node::Branch(branch) => {
                    node = &branch.children[bit(key, depth)];
                    depth += 1;
                }
            }
        }
    }

    /// Sets `key` to `tally`, rehashing only the path to it; returns the old value.
    pub fn insert(&mut self, key: CertificateId, tally: Tally) -> Option<Tally> {
        let old = self.root.insert(0, key, tally);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Counts one more entry `entry` concerning `key`.
    pub fn record(&mut self, key: CertificateId, entry: EntryId) {
        let count = self.get(&key).map_or(0, |t| t.count) + 1;
        self.insert(key, Tally { count, last: entry });
    }

    /// Counts `entry` under each of its map keys ([`crate::entry::Entry::map_keys`]).
    pub fn record_entry(&mut self, entry: &crate::entry::Entry) {
        for cert in entry.map_keys() {
            self.record(cert, entry.id());
        }
    }

    /// A proof of what the map holds for `key`: its value, or that it holds nothing.
    pub fn prove(&self, key: &CertificateId) -> CertMapProof {
        let mut siblings = Vec::new();
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => {
                    return CertMapProof {
                        leaf: None,
                        siblings,
                    };
                }
                Node::Leaf(leaf) => {
                    return CertMapProof {
                        leaf: Some(ProofLeaf {
                            key: leaf.key,
                            last: leaf.tally.last,
                            count: leaf.tally.count,
                        }),
                        siblings,
                    };
                }
                Node::Branch(branch) => {
                    let b = bit(key, depth);
                    siblings.push(branch.children[1 - b].hash());
                    node = &branch.children[b];
                    depth += 1;
                }
            }
        }
    }
}

/// The leaf a proof's path ends in. Field order is canonical key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofLeaf {
    pub key: CertificateId,
    pub last: EntryId,
    pub count: u64,
}

impl ProofLeaf {
    pub fn tally(&self) -> Tally {
        Tally {
            last: self.last,
            count: self.count,
        }
    }
}

/// A proof for one key: the sibling hashes from the root down and what the path ends in. The
/// key is in the map iff the path ends in a leaf with that key; it is absent if the path ends
/// in an empty subtree (`leaf` absent) or in the leaf of another key sharing the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawProof")]
pub struct CertMapProof {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<ProofLeaf>,
    /// Sibling hashes from the root down: `siblings[d]` is the sibling at depth `d + 1`.
    pub siblings: Vec<TreeHash>,
}

/// The wire form before its length is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProof {
    #[serde(default)]
    leaf: Option<ProofLeaf>,
    siblings: Vec<TreeHash>,
}

impl TryFrom<RawProof> for CertMapProof {
    type Error = String;
    fn try_from(raw: RawProof) -> Result<Self, String> {
        if raw.siblings.len() > MAX_DEPTH {
            return Err(format!(
                "certificate map proof has {} siblings, at most {MAX_DEPTH} allowed",
                raw.siblings.len()
            ));
        }
        Ok(Self {
            leaf: raw.leaf,
            siblings: raw.siblings,
        })
    }
}

/// Why a certificate map proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertMapError {
    #[error("certificate map proof has {0} siblings, at most {MAX_DEPTH} allowed")]
    TooLong(usize),
    #[error(
        "certificate map proof ends in the leaf of {other} at depth {depth}, which is not on the path of {key}"
    )]
    OffPath {
        key: CertificateId,
        other: CertificateId,
        depth: usize,
    },
    #[error("certificate map proof leaf has a count of 0")]
    ZeroCount,
    #[error("certificate map proof leads to root {computed}, but the signed root is {signed}")]
    RootMismatch {
        computed: TreeHash,
        signed: TreeHash,
    },
}

/// Checks `proof` for `key` against `root`: `Ok(Some(tally))` if the map holds `tally` for the
/// key, `Ok(None)` if it holds nothing for it.
pub fn verify(
    root: &TreeHash,
    key: &CertificateId,
    proof: &CertMapProof,
) -> Result<Option<Tally>, CertMapError> {
    let depth = proof.siblings.len();
    if depth > MAX_DEPTH {
        return Err(CertMapError::TooLong(depth));
    }
    let (mut hash, found) = match &proof.leaf {
        None => (EMPTY, None),
        Some(leaf) => {
            if leaf.count == 0 {
                return Err(CertMapError::ZeroCount);
            }
            // The leaf must lie under the path of `key` down to `depth`.
            if (0..depth).any(|d| bit(&leaf.key, d) != bit(key, d)) {
                return Err(CertMapError::OffPath {
                    key: *key,
                    other: leaf.key,
                    depth,
                });
            }
            let tally = leaf.tally();
            let found = (leaf.key == *key).then_some(tally);
            (leaf_hash(&leaf.key, &tally), found)
        }
    };
    for (d, sibling) in proof.siblings.iter().enumerate().rev() {
        hash = if bit(key, d) == 0 {
            node_hash(&hash, sibling)
        } else {
            node_hash(sibling, &hash)
        };
    }
    if hash != *root {
        return Err(CertMapError::RootMismatch {
            computed: hash,
            signed: *root,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// The root recomputed from scratch from the definition, for comparison.
    fn root_of(pairs: &BTreeMap<CertificateId, Tally>) -> TreeHash {
        fn subtree(pairs: &[(&CertificateId, &Tally)], depth: usize) -> TreeHash {
            match pairs {
                [] => EMPTY,
                [(key, tally)] => leaf_hash(key, tally),
                _ => {
                    let split = pairs.partition_point(|(k, _)| bit(k, depth) == 0);
                    node_hash(
                        &subtree(&pairs[..split], depth + 1),
                        &subtree(&pairs[split..], depth + 1),
                    )
                }
            }
        }
        let sorted: Vec<_> = pairs.iter().collect();
        subtree(&sorted, 0)
    }

    fn id(seed: u64) -> EntryId {
        EntryId::of_sig_structure([&seed.to_be_bytes()[..]])
    }

    fn tally(seed: u64) -> Tally {
        Tally {
            count: seed % 7 + 1,
            last: id(seed ^ 0xffff),
        }
    }

    #[test]
    fn hashes_are_blake3_derive_key() {
        let (key, tally) = (id(1), tally(2));
        let mut material = key.0.to_vec();
        material.extend_from_slice(&tally.count.to_be_bytes());
        material.extend_from_slice(&tally.last.0);
        assert_eq!(
            leaf_hash(&key, &tally).0,
            blake3::derive_key("rmledger certmap leaf v1", &material)
        );
        let (l, r) = (TreeHash([1; 32]), TreeHash([2; 32]));
        assert_eq!(
            node_hash(&l, &r).0,
            blake3::derive_key("rmledger certmap node v1", &[[1u8; 32], [2u8; 32]].concat())
        );
    }

    #[test]
    fn empty_and_single() {
        let mut map = CertMap::new();
        assert_eq!(map.root(), EMPTY);
        assert_eq!(verify(&EMPTY, &id(1), &map.prove(&id(1))), Ok(None));
        map.record(id(1), id(10));
        map.record(id(1), id(11));
        let expected = Tally {
            count: 2,
            last: id(11),
        };
        assert_eq!(map.root(), leaf_hash(&id(1), &expected));
        assert_eq!(
            verify(&map.root(), &id(1), &map.prove(&id(1))),
            Ok(Some(expected))
        );
        // Absent: the path ends in another key's leaf.
        let proof = map.prove(&id(2));
        assert!(proof.leaf.is_some() && proof.siblings.is_empty());
        assert_eq!(verify(&map.root(), &id(2), &proof), Ok(None));
    }

    #[test]
    fn keys_sharing_a_long_prefix() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a[31] = 0b10;
        b[31] = 0b11;
        let (a, b) = (EntryId(a), EntryId(b));
        let mut map = CertMap::new();
        map.insert(a, tally(1));
        map.insert(b, tally(2));
        let proof = map.prove(&b);
        assert_eq!(proof.siblings.len(), 256);
        assert_eq!(verify(&map.root(), &b, &proof), Ok(Some(tally(2))));
        let pairs = BTreeMap::from([(a, tally(1)), (b, tally(2))]);
        assert_eq!(map.root(), root_of(&pairs));
    }

    #[test]
    fn a_snapshot_does_not_change() {
        let mut map = CertMap::new();
        for i in 0..50 {
            map.insert(id(i), tally(i));
        }
        let snapshot = map.clone();
        let root = snapshot.root();
        for i in 25..80 {
            map.insert(id(i), tally(i + 1));
        }
        assert_eq!(snapshot.root(), root);
        assert_eq!(snapshot.get(&id(30)), Some(tally(30)));
        assert_ne!(map.root(), root);
    }

    #[test]
    fn an_oversized_proof_is_refused_on_decode() {
        let proof = CertMapProof {
            leaf: None,
            siblings: vec![EMPTY; MAX_DEPTH + 1],
        };
        let bytes = crate::cbor::to_canonical(&proof).unwrap();
        let decoded: Result<CertMapProof, _> = crate::cbor::from_canonical(&bytes, 1 << 20);
        assert!(decoded.is_err());
        let ok = CertMapProof {
            leaf: Some(ProofLeaf {
                key: id(1),
                last: id(2),
                count: 1,
            }),
            siblings: vec![EMPTY; 3],
        };
        let bytes = crate::cbor::to_canonical(&ok).unwrap();
        assert_eq!(
            crate::cbor::from_canonical::<CertMapProof>(&bytes, 1 << 20).unwrap(),
            ok
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_maps_match_the_definition_and_prove(
            ops in proptest::collection::vec((0u64..64, 0u64..1000), 0..120),
            probes in proptest::collection::vec(0u64..96, 1..8),
        ) {
            let mut map = CertMap::new();
            let mut model = BTreeMap::new();
            for (key, value) in ops {
                map.insert(id(key), tally(value));
                model.insert(id(key), tally(value));
                prop_assert_eq!(map.root(), root_of(&model));
            }
            prop_assert_eq!(map.len(), model.len());
            let root = map.root();
            for probe in probes {
                let key = id(probe);
                let proof = map.prove(&key);
                prop_assert_eq!(verify(&root, &key, &proof), Ok(model.get(&key).copied()));
                // Any change to the proof is caught.
                let mut mutants = Vec::new();
                for i in 0..proof.siblings.len() {
                    let mut m = proof.clone();
                    m.siblings[i].0[i % 32] ^= 1;
                    mutants.push(m);
                }
                if !proof.siblings.is_empty() {
                    let mut m = proof.clone();
                    m.siblings.pop();
                    mutants.push(m);
                }
                let mut m = proof.clone();
                m.siblings.push(EMPTY);
                mutants.push(m);
                match &proof.leaf {
                    Some(_) => {
                        let mut m = proof.clone();
                        m.leaf = None;
                        mutants.push(m);
                        let mut m = proof.clone();
                        m.leaf.as_mut().unwrap().count += 1;
                        mutants.push(m);
                        let mut m = proof.clone();
                        m.leaf.as_mut().unwrap().last.0[0] ^= 1;
                        mutants.push(m);
                        let mut m = proof.clone();
                        m.leaf.as_mut().unwrap().key.0[31] ^= 1;
                        mutants.push(m);
                    }
                    None => {
                        let mut m = proof.clone();
                        m.leaf = Some(ProofLeaf { key, last: id(3), count: 1 });
                        mutants.push(m);
                    }
                }
                for mutant in mutants {
                    prop_assert!(verify(&root, &key, &mutant).is_err(), "{:?}", mutant);
                }
            }
        }
    }
}
