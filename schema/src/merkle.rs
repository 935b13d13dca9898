//! The ledger's Merkle tree: RFC 9162 (Certificate Transparency v2) §2.1, exactly.
//!
//! This module computes tree heads (`MTH`, §2.1.1), builds inclusion proofs (`PATH`, §2.1.3.1)
//! and consistency proofs (`PROOF`, §2.1.4.1) from stored complete-subtree hashes, and verifies
//! both (§2.1.3.2, §2.1.4.2) following the RFC's algorithms step by step, with its names
//! (`fn`, `sn`, `fr`, `sr`; `fn` is spelled `fn_` because it is a Rust keyword).
//!
//! The hash functions are a [`TreeHasher`]; the ledger uses [`Sha256`]. A node stores the
//! complete (perfect) subtrees of its log in a [`NodeSource`], grows the tree with a [`Frontier`]
//! (O(log n) state and work per leaf) and answers proofs with O(log n) lookups. [`MemoryTree`] is
//! an in-memory [`NodeSource`] for tests, tools and audits.
//!
//! Policies beyond the RFC (each documented on the function that applies it):
//! - a hash is exactly 32 bytes: decode wire values with [`hash_from_slice`], which rejects any
//!   other length, so an empty or truncated root or leaf hash never verifies;
//! - a consistency proof from the empty tree (`size1 == 0`, including `size1 == size2 == 0`) is
//!   an error ([`VerifyError::EmptyTreeConsistency`]): it proves nothing, and callers treat size 0
//!   as trivially consistent without calling the verifier;
//! - `size1 == size2 > 0` is consistent only with an empty proof and `root1 == root2`.

use std::marker::PhantomData;

use sha2::Digest as _;

/// A tree hash: SHA-256 output size. Every hash in this module is exactly this long.
pub type Hash = [u8; 32];

/// Hash functions of the tree (RFC 9162 §2.1.1): generic so tests can run other vectors.
///
/// `empty_root` is `MTH({}) = HASH()`, `leaf` is `MTH({d(0)}) = HASH(0x00 || d(0))` and `node`
/// is `HASH(0x01 || left || right)`.
pub trait TreeHasher {
    /// `MTH({}) = HASH()`, the root of the empty tree.
    fn empty_root() -> Hash;
    /// `HASH(0x00 || data)`, the hash of one leaf.
    fn leaf(data: &[u8]) -> Hash;
    /// `HASH(0x01 || left || right)`, an interior node.
    fn node(left: &Hash, right: &Hash) -> Hash;
}

/// SHA-256 as RFC 9162 §2.1.1 uses it: empty = SHA-256(""), leaf = SHA-256(0x00 || d),
/// node = SHA-256(0x01 || l || r).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sha256;

impl TreeHasher for Sha256 {
    fn empty_root() -> Hash {
        sha2::Sha256::digest([]).into()
    }

    fn leaf(data: &[u8]) -> Hash {
        let mut h = sha2::Sha256::new();
        h.update([0x00]);
        h.update(data);
        h.finalize().into()
    }

    fn node(left: &Hash, right: &Hash) -> Hash {
        let mut h = sha2::Sha256::new();
        h.update([0x01]);
        h.update(left);
        h.update(right);
        h.finalize().into()
    }
}

/// Source of stored complete-subtree hashes: `node(level, index)` is the root of the perfect subtree
/// covering leaves [index << level, (index + 1) << level); level 0 is the leaf hash.
pub trait NodeSource {
    /// Why a node could not be read (missing, storage failure, ...).
    type Error;
    /// The root of the perfect subtree of height `level` at position `index` in that level.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a root or a proof could not be built from a [`NodeSource`].
#[derive(Debug, thiserror::Error)]
pub enum ProofError<E> {
    /// `index >= size`: the leaf is not in the tree (§2.1.3.1 needs `0 <= m < n`).
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// `size1 == 0`: by our policy there is no consistency proof from the empty tree.
    #[error("no consistency proof from the empty tree (size1 = 0)")]
    EmptyTreeConsistency,
    /// `size1 > size2` (§2.1.4.1 needs `0 < m <= n`).
    #[error("size1 {size1} is greater than size2 {size2}")]
    Size1GreaterThanSize2 { size1: u64, size2: u64 },
    /// `start > end`, or `start` not aligned so that `D[start:end]` is made of stored subtrees.
    #[error(
        "range [{start}, {end}) is not a subtree range (start must be a multiple of the next power of two >= end - start)"
    )]
    UnalignedRange { start: u64, end: u64 },
    /// The requested tree size is larger than the tree the source holds.
    #[error("tree size {size} is beyond the stored tree of size {tree_size}")]
    SizeBeyondTree { size: u64, tree_size: u64 },
    /// The node source failed.
    #[error("node source failed")]
    Source(#[source] E),
}

/// Why a proof, a hash or a frontier was rejected. Each variant names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A hash decoded from the wire is not exactly 32 bytes (policy: see [`hash_from_slice`]).
    #[error("a hash must be 32 bytes, got {len}")]
    WrongHashLength { len: usize },
    /// §2.1.3.2 step 1: `leaf_index >= tree_size`.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The proof does not have the length the sizes determine.
    #[error("proof has {got} hashes, the sizes require {expected}")]
    WrongProofLength { expected: usize, got: usize },
    /// §2.1.3.2 step 4a / §2.1.4.2 step 6a: `sn` reached 0 with proof hashes left.
    #[error("proof is too long: sn reached 0 before its end")]
    ProofTooLong,
    /// §2.1.3.2 step 5 / §2.1.4.2 step 7: `sn` is not 0 once the proof is consumed.
    #[error("proof is too short: sn is not 0 at its end")]
    ProofTooShort,
    /// §2.1.3.2 step 5: the computed root differs from the expected root.
    #[error("computed root does not match the expected root")]
    RootMismatch,
    /// §2.1.4.2 step 7: the computed `fr` differs from `first_hash` (root1).
    #[error("computed root of the first tree does not match root1")]
    Root1Mismatch,
    /// §2.1.4.2 step 7: the computed `sr` differs from `second_hash` (root2).
    #[error("computed root of the second tree does not match root2")]
    Root2Mismatch,
    /// Policy: `size1 == 0` (including `size1 == size2 == 0`); a proof from the empty tree proves
    /// nothing, callers treat size 0 as trivially consistent without calling the verifier.
    #[error("consistency from the empty tree (size1 = 0) is not verifiable")]
    EmptyTreeConsistency,
    /// `size1 > size2`: a tree cannot shrink.
    #[error("size1 {size1} is greater than size2 {size2}")]
    Size1GreaterThanSize2 { size1: u64, size2: u64 },
    /// Policy: `size1 == size2` requires an empty proof.
    #[error("sizes are equal but the proof has {len} hashes")]
    ProofNotEmptyForEqualSizes { len: usize },
    /// Policy: `size1 == size2` requires `root1 == root2`.
    #[error("sizes are equal but the roots differ")]
    RootsDifferForEqualSizes,
    /// §2.1.4.2 step 1: the consistency path is empty while `size1 < size2`.
    #[error("consistency proof is empty but size1 < size2")]
    EmptyProof,
    /// [`Frontier::from_parts`]: the node count must be the number of set bits of the size.
    #[error("a frontier of size {size} has {expected} nodes, got {got}")]
    FrontierNodeCount {
        size: u64,
        expected: usize,
        got: usize,
    },
    /// [`Frontier::append`]: the tree already has `u64::MAX` leaves.
    #[error("the tree is full (u64::MAX leaves)")]
    TreeFull,
}

/// Decodes a wire hash. Policy: hashes are exactly 32 bytes, so an empty or wrong-length root,
/// leaf hash or proof element is an error ([`VerifyError::WrongHashLength`]), never padded or
/// truncated.
pub fn hash_from_slice(bytes: &[u8]) -> Result<Hash, VerifyError> {
    Hash::try_from(bytes).map_err(|_| VerifyError::WrongHashLength { len: bytes.len() })
}

/// The largest power of two smaller than `n` (`k` in RFC 9162 §2.1.1); needs `n > 1`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n > 1, "split_point needs n > 1, got {n}");
    1 << (63 - (n - 1).leading_zeros())
}

/// Number of bits of `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// Length of `PATH(index, D[size])` (§2.1.3.1) for `index < size`: the levels below the point
/// where the paths to `index` and to `size - 1` meet, plus one left sibling per set bit above.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    debug_assert!(index < size, "inclusion_proof_len needs index < size");
    let inner = bit_len(index ^ (size - 1));
    let border = (index.checked_shr(inner).unwrap_or(0)).count_ones();
    (inner + border) as usize
}

/// Length of `PROOF(size1, D[size2])` (§2.1.4.1) for `0 < size1 < size2`, as sent (without the
/// `first_hash` that §2.1.4.2 step 2 prepends when `size1` is a power of two).
fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    debug_assert!(
        0 < size1 && size1 < size2,
        "consistency_proof_len needs 0 < size1 < size2"
    );
    let shift = size1.trailing_zeros();
    let inner = bit_len((size1 - 1) ^ (size2 - 1));
    let border = ((size1 - 1).checked_shr(inner).unwrap_or(0)).count_ones();
    // The first element is the root of the subtree of size 2^shift containing leaf size1 - 1
    // unless size1 itself is that subtree (then it is first_hash, not sent).
    let seed = usize::from(!size1.is_power_of_two());
    seed + (inner.saturating_sub(shift) + border) as usize
}

/// O(log n) append state: complete subtree roots of the current tree, left to right.
///
/// The nodes are the perfect subtrees of the binary decomposition of `size`, largest first; their
/// right-to-left fold with `node` is `MTH` of the whole tree (RFC 9162 §2.1.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A frontier from a stored size and its subtree roots (largest first). `nodes.len()` must
    /// equal `size.count_ones()` ([`VerifyError::FrontierNodeCount`]).
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, VerifyError> {
        let expected = size.count_ones() as usize;
        if nodes.len() != expected {
            return Err(VerifyError::FrontierNodeCount {
                size,
                expected,
                got: nodes.len(),
            });
        }
        Ok(Self { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The complete subtree roots, largest (leftmost) first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// `MTH` of the whole tree (RFC 9162 §2.1.1): `HASH()` when empty, else the nodes folded
    /// right to left, `MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`.
    pub fn root<H: TreeHasher>(&self) -> Hash {
        let mut rest = self.nodes.iter().rev();
        let Some(last) = rest.next() else {
            return H::empty_root();
        };
        rest.fold(*last, |r, left| H::node(left, &r))
    }

    /// Appends a leaf hash; returns every complete node it created, as (level, index, hash), level 0 first,
    /// so a caller can store them in its NodeSource.
    ///
    /// The first entry is the leaf itself `(0, old_size, leaf_hash)`; each further entry merges
    /// the new node with the equal-height subtree to its left. Fails with
    /// [`VerifyError::TreeFull`] when the tree already has `u64::MAX` leaves (the next size would
    /// not be representable).
    pub fn append<H: TreeHasher>(
        &mut self,
        leaf_hash: Hash,
    ) -> Result<Vec<(u32, u64, Hash)>, VerifyError> {
        let new_size = self.size.checked_add(1).ok_or(VerifyError::TreeFull)?;
        let mut created = Vec::with_capacity(self.size.trailing_ones() as usize + 1);
        let (mut level, mut index, mut hash) = (0u32, self.size, leaf_hash);
        created.push((level, index, hash));
        // Each set low bit of the old size is a perfect subtree of height `level` that the new
        // node completes into one of height `level + 1`.
        while (self.size >> level) & 1 == 1 {
            let Some(left) = self.nodes.pop() else {
                debug_assert!(false, "frontier has fewer nodes than set bits of its size");
                break;
            };
            hash = H::node(&left, &hash);
            level += 1;
            index >>= 1;
            created.push((level, index, hash));
        }
        self.nodes.push(hash);
        self.size = new_size;
        debug_assert_eq!(
            self.nodes.len(),
            self.size.count_ones() as usize,
            "frontier node count must equal the set bits of its size"
        );
        Ok(created)
    }

    /// Rebuild the frontier for `size` from a NodeSource (O(log n) lookups).
    ///
    /// One lookup per set bit of `size`, from the highest: the perfect subtree of height `l`
    /// starting at leaf `offset` is `node(l, offset >> l)`.
    pub fn load<S: NodeSource>(src: &S, size: u64) -> Result<Self, S::Error> {
        let mut nodes = Vec::with_capacity(size.count_ones() as usize);
        let mut offset = 0u64;
        for level in (0..u64::BITS).rev() {
            if (size >> level) & 1 == 1 {
                nodes.push(src.node(level, offset >> level)?);
                offset += 1 << level;
            }
        }
        debug_assert_eq!(offset, size, "the decomposition must cover the whole tree");
        Ok(Self { size, nodes })
    }
}

/// MTH(D[start:end]) (RFC 9162 §2.1.1) for the ranges RFC proofs need, in O(log n) lookups.
///
/// `start` must be aligned: a multiple of the smallest power of two `>= end - start`, which every
/// range of the §2.1.3.1 and §2.1.4.1 recursions is. Then `D[start:end]` is the perfect subtrees
/// of the binary decomposition of `end - start`, largest first, and its `MTH` is their
/// right-to-left fold. `start == end` gives `MTH({}) = HASH()`. Other ranges are
/// [`ProofError::UnalignedRange`].
pub fn subtree_root<H: TreeHasher, S: NodeSource>(
    src: &S,
    start: u64,
    end: u64,
) -> Result<Hash, ProofError<S::Error>> {
    if start > end {
        return Err(ProofError::UnalignedRange { start, end });
    }
    let n = end - start;
    if n == 0 {
        return Ok(H::empty_root());
    }
    // ceil(log2(n)): the height of the smallest perfect tree holding n leaves.
    let height = bit_len(n - 1);
    if start.trailing_zeros() < height {
        return Err(ProofError::UnalignedRange { start, end });
    }
    let mut parts = Vec::with_capacity(n.count_ones() as usize);
    let mut offset = start;
    for level in (0..u64::BITS).rev() {
        if (n >> level) & 1 == 1 {
            parts.push(
                src.node(level, offset >> level)
                    .map_err(ProofError::Source)?,
            );
            offset += 1 << level;
        }
    }
    debug_assert_eq!(offset, end, "the decomposition must cover the range");
    let mut rest = parts.iter().rev();
    let Some(last) = rest.next() else {
        debug_assert!(false, "a non-empty range has at least one part");
        return Ok(H::empty_root());
    };
    Ok(rest.fold(*last, |r, left| H::node(left, &r)))
}

/// `MTH(D[size])` (RFC 9162 §2.1.1) from stored subtrees; `HASH()` for size 0.
pub fn root<H: TreeHasher, S: NodeSource>(
    src: &S,
    size: u64,
) -> Result<Hash, ProofError<S::Error>> {
    subtree_root::<H, S>(src, 0, size)
}

/// The inclusion proof `PATH(index, D[size])` of RFC 9162 §2.1.3.1, deepest sibling first.
///
/// ```text
/// PATH(0, {d(0)}) = {}
/// PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      for m < k
/// PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])  for m >= k
/// ```
/// The recursion is unrolled top-down and the siblings reversed. At most one sibling is not a
/// perfect subtree, so this costs O(log n) lookups. `index >= size` is
/// [`ProofError::IndexOutOfRange`].
pub fn inclusion_proof<H: TreeHasher, S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut path = Vec::with_capacity(inclusion_proof_len(index, size));
    // D[start:end] is the current subtree and m the leaf's index inside it.
    let (mut m, mut start, mut end) = (index, 0u64, size);
    while end - start > 1 {
        let k = split_point(end - start);
        if m < k {
            // PATH(m, D[0:k]) : MTH(D[k:n])
            path.push(subtree_root::<H, S>(src, start + k, end)?);
            end = start + k;
        } else {
            // PATH(m - k, D[k:n]) : MTH(D[0:k])
            path.push(subtree_root::<H, S>(src, start, start + k)?);
            m -= k;
            start += k;
        }
    }
    path.reverse();
    debug_assert_eq!(
        path.len(),
        inclusion_proof_len(index, size),
        "PATH length must match the closed form"
    );
    Ok(path)
}

/// The consistency proof `PROOF(size1, D[size2])` of RFC 9162 §2.1.4.1.
///
/// ```text
/// PROOF(m, D[n]) = SUBPROOF(m, D[n], true)
/// SUBPROOF(m, D[m], true) = {}
/// SUBPROOF(m, D[m], false) = {MTH(D[m])}
/// SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          for m <= k
/// SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  for m > k
/// ```
/// Needs `0 < size1 <= size2`; `size1 == size2` gives the empty proof. Policy: `size1 == 0` is
/// [`ProofError::EmptyTreeConsistency`] (the verifier rejects it too), `size1 > size2` is
/// [`ProofError::Size1GreaterThanSize2`]. O(log n) lookups.
pub fn consistency_proof<H: TreeHasher, S: NodeSource>(
    src: &S,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if size1 > size2 {
        return Err(ProofError::Size1GreaterThanSize2 { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyTreeConsistency);
    }
    let mut proof = Vec::new();
    // SUBPROOF(m, D[start:end], b), unrolled; the appended MTH values are collected top-down.
    let (mut m, mut start, mut end, mut b) = (size1, 0u64, size2, true);
    let mut tail = Vec::new();
    loop {
        let n = end - start;
        if m == n {
            if !b {
                // SUBPROOF(m, D[m], false) = {MTH(D[m])}
                proof.push(subtree_root::<H, S>(src, start, end)?);
            }
            // SUBPROOF(m, D[m], true) = {}
            break;
        }
        let k = split_point(n);
        if m <= k {
            // SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            tail.push(subtree_root::<H, S>(src, start + k, end)?);
            end = start + k;
        } else {
            // SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            tail.push(subtree_root::<H, S>(src, start, start + k)?);
            m -= k;
            start += k;
            b = false;
        }
    }
    proof.extend(tail.into_iter().rev());
    debug_assert!(
        size1 == size2 || proof.len() == consistency_proof_len(size1, size2),
        "PROOF length must match the closed form"
    );
    Ok(proof)
}

/// The root implied by an inclusion proof: RFC 9162 §2.1.3.2 steps 1–5 without the final root
/// comparison (the `sn == 0` checks are kept).
///
/// Besides the RFC's own checks, the proof length is checked up front against the length the
/// index and size determine ([`VerifyError::WrongProofLength`]). `leaf_hash` and the proof
/// elements are 32-byte hashes by type; decode wire values with [`hash_from_slice`].
pub fn root_from_inclusion<H: TreeHasher>(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
) -> Result<Hash, VerifyError> {
    // 1. Compare leaf_index against tree_size. If leaf_index is greater than or equal to
    //    tree_size, then fail the proof verification.
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(VerifyError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    // 2. Set fn to leaf_index and sn to tree_size - 1.
    let mut fn_ = index;
    let mut sn = size - 1;
    // 3. Set r to hash.
    let mut r = *leaf_hash;
    // 4. For each value p in the inclusion_path array:
    for p in proof {
        // a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0 {
            return Err(VerifyError::ProofTooLong);
        }
        // b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn_ & 1 == 1 || fn_ == sn {
            // i. Set r to HASH(0x01 || p || r).
            r = H::node(p, &r);
            // ii. If LSB(fn) is not set, then right-shift both fn and sn equally until either
            //     LSB(fn) is set or fn is 0.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            // Otherwise: i. Set r to HASH(0x01 || r || p).
            r = H::node(&r, p);
        }
        // c. Finally, right-shift both fn and sn one time.
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. Compare sn to 0. (The comparison of r against root_hash is in verify_inclusion.)
    if sn != 0 {
        return Err(VerifyError::ProofTooShort);
    }
    Ok(r)
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2): [`root_from_inclusion`], then step 5's
/// comparison of `r` against `root` ([`VerifyError::RootMismatch`]).
///
/// Policy: hashes are exactly 32 bytes (by type here); a wire root or leaf hash of any other
/// length, including empty, must be rejected when decoding with [`hash_from_slice`].
pub fn verify_inclusion<H: TreeHasher>(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    let r = root_from_inclusion::<H>(index, size, leaf_hash, proof)?;
    if r != *root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2), including the `sn == 0` checks.
///
/// The RFC algorithm covers `0 < size1 < size2`. Policies around it:
/// - `size1 > size2` is [`VerifyError::Size1GreaterThanSize2`];
/// - `size1 == 0`, including `size1 == size2 == 0`, is [`VerifyError::EmptyTreeConsistency`]
///   whatever the roots and proof: a proof from the empty tree proves nothing, so callers treat
///   size 0 as trivially consistent without calling the verifier;
/// - `size1 == size2 > 0` requires an empty proof ([`VerifyError::ProofNotEmptyForEqualSizes`])
///   and `root1 == root2` ([`VerifyError::RootsDifferForEqualSizes`]);
/// - the proof length is checked up front ([`VerifyError::WrongProofLength`]) after step 1;
/// - hashes are exactly 32 bytes (by type here; decode wire values with [`hash_from_slice`]).
pub fn verify_consistency<H: TreeHasher>(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    if size1 > size2 {
        return Err(VerifyError::Size1GreaterThanSize2 { size1, size2 });
    }
    if size1 == 0 {
        return Err(VerifyError::EmptyTreeConsistency);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(VerifyError::ProofNotEmptyForEqualSizes { len: proof.len() });
        }
        if root1 != root2 {
            return Err(VerifyError::RootsDifferForEqualSizes);
        }
        return Ok(());
    }
    // 1. If consistency_path is an empty array, stop and fail the proof verification.
    if proof.is_empty() {
        return Err(VerifyError::EmptyProof);
    }
    let expected = consistency_proof_len(size1, size2);
    if proof.len() != expected {
        return Err(VerifyError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    // 2. If first is an exact power of 2, then prepend first_hash to the consistency_path array.
    let prepended = usize::from(size1.is_power_of_two());
    let mut path = std::iter::once(root1).take(prepended).chain(proof.iter());
    // 3. Set fn to first - 1 and sn to second - 1.
    let mut fn_ = size1 - 1;
    let mut sn = size2 - 1;
    // 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. Set both fr and sr to the first value in the consistency_path array.
    let Some(first) = path.next() else {
        debug_assert!(false, "the path is non-empty after step 1");
        return Err(VerifyError::EmptyProof);
    };
    let mut fr = *first;
    let mut sr = *first;
    // 6. For each subsequent value c in the consistency_path array:
    for c in path {
        // a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0 {
            return Err(VerifyError::ProofTooLong);
        }
        // b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn_ & 1 == 1 || fn_ == sn {
            // i. Set fr to HASH(0x01 || c || fr). Set sr to HASH(0x01 || c || sr).
            fr = H::node(c, &fr);
            sr = H::node(c, &sr);
            // ii. If LSB(fn) is not set, then right-shift both fn and sn equally until either
            //     LSB(fn) is set or fn is 0.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            // Otherwise: i. Set sr to HASH(0x01 || sr || c).
            sr = H::node(&sr, c);
        }
        // c. Finally, right-shift both fn and sn one time.
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7. Verify that the fr calculated is equal to the first_hash supplied, that the sr
    //    calculated is equal to the second_hash supplied, and that sn is 0.
    if sn != 0 {
        return Err(VerifyError::ProofTooShort);
    }
    if fr != *root1 {
        return Err(VerifyError::Root1Mismatch);
    }
    if sr != *root2 {
        return Err(VerifyError::Root2Mismatch);
    }
    Ok(())
}

/// A node requested from a [`MemoryTree`] that it does not hold (beyond its size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no stored node at level {level}, index {index}")]
pub struct MissingNode {
    pub level: u32,
    pub index: u64,
}

/// An in-memory tree: leaves' hashes and all complete nodes; implements NodeSource. For tests,
/// tools and audits.
///
/// `levels[l][i]` is `node(l, i)`; the levels hold about `2n` hashes, filled from
/// [`Frontier::append`]'s outputs. Asking for a node the tree does not hold is a [`MissingNode`]
/// error, never a panic.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree<H> {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
    hasher: PhantomData<H>,
}

impl<H: TreeHasher> MemoryTree<H> {
    /// The empty tree.
    pub fn new() -> Self {
        Self {
            levels: Vec::new(),
            frontier: Frontier::new(),
            hasher: PhantomData,
        }
    }

    /// Appends a leaf by its hash, storing every complete node it creates.
    pub fn push_leaf_hash(&mut self, leaf: Hash) {
        // An in-memory tree cannot reach u64::MAX leaves (a Vec holds far fewer hashes), so
        // `TreeFull` cannot happen here.
        let Ok(created) = self.frontier.append::<H>(leaf) else {
            debug_assert!(false, "an in-memory tree cannot be full");
            return;
        };
        for (level, index, hash) in created {
            let level = level as usize;
            if self.levels.len() <= level {
                self.levels.resize_with(level + 1, Vec::new);
            }
            let row = &mut self.levels[level];
            debug_assert_eq!(row.len() as u64, index, "nodes of a level arrive in order");
            row.push(hash);
        }
    }

    /// Appends a leaf by its data: `push_leaf_hash(H::leaf(data))`.
    pub fn push(&mut self, data: &[u8]) {
        self.push_leaf_hash(H::leaf(data));
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// `MTH` of the whole tree.
    pub fn root(&self) -> Hash {
        self.frontier.root::<H>()
    }

    /// The frontier of the current tree.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// `PATH(index, D[size])` (RFC 9162 §2.1.3.1) for `size <= self.size()`.
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, ProofError<MissingNode>> {
        self.check_size(size)?;
        inclusion_proof::<H, Self>(self, index, size)
    }

    /// `PROOF(size1, D[size2])` (RFC 9162 §2.1.4.1) for `0 < size1 <= size2 <= self.size()`.
    pub fn consistency_proof(
        &self,
        size1: u64,
        size2: u64,
    ) -> Result<Vec<Hash>, ProofError<MissingNode>> {
        self.check_size(size2)?;
        consistency_proof::<H, Self>(self, size1, size2)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError<MissingNode>> {
        if size > self.size() {
            return Err(ProofError::SizeBeyondTree {
                size,
                tree_size: self.size(),
            });
        }
        Ok(())
    }
}

impl<H> NodeSource for MemoryTree<H> {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Hash, MissingNode> {
        usize::try_from(level)
            .ok()
            .and_then(|l| self.levels.get(l))
            .and_then(|row| usize::try_from(index).ok().and_then(|i| row.get(i)))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `MTH(D[n])` by the §2.1.1 recursion, straight from the leaf hashes.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                Sha256::node(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// `PATH(m, D[n])` by the §2.1.3.1 recursion.
    fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n == 1 {
            return Vec::new();
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// `SUBPROOF(m, D[n], b)` by the §2.1.4.1 recursion.
    fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { Vec::new() } else { vec![mth(leaves)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = subproof(m, &leaves[..k], b);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| Sha256::leaf(&i.to_be_bytes())).collect()
    }

    fn tree(leaves: &[Hash]) -> MemoryTree<Sha256> {
        let mut t = MemoryTree::new();
        for l in leaves {
            t.push_leaf_hash(*l);
        }
        t
    }

    #[test]
    fn sha256_hasher_matches_rfc_definitions() {
        // SHA-256("") and SHA-256(0x00) are well known.
        assert_eq!(
            Sha256::empty_root()[..4],
            [0xe3, 0xb0, 0xc4, 0x42],
            "HASH() is SHA-256 of the empty string"
        );
        assert_eq!(
            Sha256::leaf(b"")[..4],
            [0x6e, 0x34, 0x0b, 0x9c],
            "leaf hash of the empty leaf"
        );
    }

    #[test]
    fn roots_agree_for_sizes_0_to_17() {
        let all = leaves(17);
        let t = tree(&all);
        for n in 0..=17usize {
            let want = mth(&all[..n]);
            assert_eq!(root::<Sha256, _>(&t, n as u64).unwrap(), want, "root {n}");
            let f = Frontier::load(&t, n as u64).unwrap();
            assert_eq!(f.root::<Sha256>(), want, "frontier root {n}");
            assert_eq!(f, tree(&all[..n]).frontier().clone(), "frontier {n}");
        }
    }

    #[test]
    fn exhaustive_inclusion_proofs_sizes_1_to_17() {
        let all = leaves(17);
        let t = tree(&all);
        for n in 1..=17usize {
            let r = mth(&all[..n]);
            for m in 0..n {
                let p = t.inclusion_proof(m as u64, n as u64).unwrap();
                assert_eq!(p, path(m, &all[..n]), "PATH({m}, D[{n}])");
                assert_eq!(p.len(), inclusion_proof_len(m as u64, n as u64));
                verify_inclusion::<Sha256>(m as u64, n as u64, &all[m], &p, &r).unwrap();
                // Every other (index, size) fails against the honest root of that size. (With
                // the root kept, a size can alias: see `sizes_alias_without_the_tree_head`.)
                for m2 in 0..=17u64 {
                    for n2 in 1..=17u64 {
                        if (m2, n2) == (m as u64, n as u64) {
                            continue;
                        }
                        let r2 = mth(&all[..n2 as usize]);
                        let ok = verify_inclusion::<Sha256>(m2, n2, &all[m], &p, &r2).is_ok();
                        assert!(!ok, "PATH({m}, D[{n}]) also verified as ({m2}, {n2})");
                    }
                }
            }
        }
    }

    #[test]
    fn exhaustive_consistency_proofs_sizes_1_to_17() {
        let all = leaves(17);
        let t = tree(&all);
        for n in 1..=17usize {
            let r2 = mth(&all[..n]);
            for m in 1..=n {
                let r1 = mth(&all[..m]);
                let p = t.consistency_proof(m as u64, n as u64).unwrap();
                assert_eq!(p, subproof(m, &all[..n], true), "PROOF({m}, D[{n}])");
                verify_consistency::<Sha256>(m as u64, n as u64, &r1, &r2, &p).unwrap();
                if m < n {
                    assert_eq!(p.len(), consistency_proof_len(m as u64, n as u64));
                    assert!(
                        verify_consistency::<Sha256>(m as u64, n as u64, &r2, &r1, &p).is_err(),
                        "swapped roots"
                    );
                }
                for (m2, n2) in [(m + 1, n), (m - 1, n), (m, n + 1), (m, n - 1)] {
                    if (m2, n2) == (m, n) || m2 > 17 || n2 > 17 {
                        continue;
                    }
                    let (r1b, r2b) = (mth(&all[..m2]), mth(&all[..n2]));
                    assert!(
                        verify_consistency::<Sha256>(m2 as u64, n2 as u64, &r1b, &r2b, &p).is_err(),
                        "PROOF({m}, D[{n}]) also verified as ({m2}, {n2})"
                    );
                }
            }
        }
    }

    /// RFC 9162 binds a root to its size only through the signed tree head: a proof checked
    /// against a root of another size can pass. Verifiers must take size and root together.
    #[test]
    fn sizes_alias_without_the_tree_head() {
        let all = leaves(4);
        let t = tree(&all);
        let r3 = mth(&all[..3]);
        let p = t.inclusion_proof(0, 3).unwrap();
        assert!(verify_inclusion::<Sha256>(0, 4, &all[0], &p, &r3).is_ok());
        assert!(verify_inclusion::<Sha256>(0, 4, &all[0], &p, &mth(&all)).is_err());
        let p = t.consistency_proof(1, 3).unwrap();
        assert!(verify_consistency::<Sha256>(1, 4, &all[0], &r3, &p).is_ok());
        assert!(verify_consistency::<Sha256>(1, 4, &all[0], &mth(&all), &p).is_err());
    }

    #[test]
    fn argument_errors() {
        let t = tree(&leaves(5));
        assert!(matches!(
            t.inclusion_proof(5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        ));
        assert!(matches!(
            t.inclusion_proof(0, 6),
            Err(ProofError::SizeBeyondTree {
                size: 6,
                tree_size: 5
            })
        ));
        assert!(matches!(
            inclusion_proof::<Sha256, _>(&t, 0, 6),
            Err(ProofError::Source(MissingNode { .. }))
        ));
        assert!(matches!(
            t.consistency_proof(0, 3),
            Err(ProofError::EmptyTreeConsistency)
        ));
        assert!(matches!(
            t.consistency_proof(4, 3),
            Err(ProofError::Size1GreaterThanSize2 { size1: 4, size2: 3 })
        ));
        assert!(matches!(
            subtree_root::<Sha256, _>(&t, 1, 3),
            Err(ProofError::UnalignedRange { start: 1, end: 3 })
        ));
        assert!(matches!(
            subtree_root::<Sha256, _>(&t, 3, 2),
            Err(ProofError::UnalignedRange { .. })
        ));
        assert_eq!(
            subtree_root::<Sha256, _>(&t, 2, 2).unwrap(),
            Sha256::empty_root()
        );
        assert!(t.node(64, 0).is_err());
        assert!(t.node(0, u64::MAX).is_err());
        assert_eq!(
            root_from_inclusion::<Sha256>(0, 0, &[0; 32], &[]),
            Err(VerifyError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            root_from_inclusion::<Sha256>(0, 2, &[0; 32], &[]),
            Err(VerifyError::WrongProofLength {
                expected: 1,
                got: 0
            })
        );
    }

    #[test]
    fn frontier_parts_and_full_tree() {
        assert_eq!(
            Frontier::from_parts(3, vec![[0; 32]]),
            Err(VerifyError::FrontierNodeCount {
                size: 3,
                expected: 2,
                got: 1
            })
        );
        let mut f = Frontier::from_parts(u64::MAX, vec![[0; 32]; 64]).unwrap();
        assert_eq!(f.append::<Sha256>([1; 32]), Err(VerifyError::TreeFull));
        assert_eq!(f.size(), u64::MAX, "a failed append changes nothing");
        let mut f = Frontier::from_parts(u64::MAX - 1, vec![[0; 32]; 63]).unwrap();
        let created = f.append::<Sha256>([1; 32]).unwrap();
        assert_eq!(created, vec![(0, u64::MAX - 1, [1; 32])]);
        assert_eq!(f.nodes().len(), 64);
        // Verifiers at the extremes of u64 do not panic.
        let _ = verify_inclusion::<Sha256>(u64::MAX - 1, u64::MAX, &[0; 32], &[], &[0; 32]);
        let _ = verify_consistency::<Sha256>(u64::MAX - 1, u64::MAX, &[0; 32], &[0; 32], &[]);
        let _ = verify_consistency::<Sha256>(1, u64::MAX, &[0; 32], &[0; 32], &[[0; 32]; 64]);
        let _ = verify_consistency::<Sha256>(1 << 63, u64::MAX, &[0; 32], &[0; 32], &[[0; 32]]);
    }

    #[test]
    fn append_reports_created_nodes() {
        let mut f = Frontier::new();
        let l = leaves(4);
        assert_eq!(f.append::<Sha256>(l[0]).unwrap(), vec![(0, 0, l[0])]);
        let h01 = Sha256::node(&l[0], &l[1]);
        assert_eq!(
            f.append::<Sha256>(l[1]).unwrap(),
            vec![(0, 1, l[1]), (1, 0, h01)]
        );
        assert_eq!(f.append::<Sha256>(l[2]).unwrap(), vec![(0, 2, l[2])]);
        let h23 = Sha256::node(&l[2], &l[3]);
        assert_eq!(
            f.append::<Sha256>(l[3]).unwrap(),
            vec![(0, 3, l[3]), (1, 1, h23), (2, 0, Sha256::node(&h01, &h23))]
        );
        assert_eq!(f.nodes().len(), 1);
    }

    #[test]
    fn hash_length_policy() {
        assert_eq!(
            hash_from_slice(&[]),
            Err(VerifyError::WrongHashLength { len: 0 })
        );
        assert_eq!(
            hash_from_slice(&[0; 33]),
            Err(VerifyError::WrongHashLength { len: 33 })
        );
        assert_eq!(hash_from_slice(&[7; 32]), Ok([7; 32]));
    }
}
