//! RFC 9162 Merkle verifiers against external vectors: the 196 transparency-dev/merkle probes,
//! the 8-leaf roots of `shared/vectors/README.md`, our explicit policy decisions, and a second
//! hasher (BLAKE3) to show the tree code is generic.

use std::path::{Path, PathBuf};

use data_encoding::{BASE64, HEXLOWER};
use rmledger_schema::merkle::{
    Frontier, Hash, MemoryTree, Sha256, TreeHasher, VerifyError, hash_from_slice,
    verify_consistency, verify_inclusion,
};
use serde_json::Value;

/// `$RMLEDGER_VECTORS/merkle` when that is set; else `<repo>/../shared/vectors/merkle`; else the
/// nearest `shared/vectors/merkle` beside an ancestor of the crate (a git worktree may sit
/// deeper than the main checkout, e.g. `<root>/wt/<name>` next to `<root>/shared`).
fn vectors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RMLEDGER_VECTORS") {
        return PathBuf::from(dir).join("merkle");
    }
    let beside_repo = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/merkle"
    ));
    if beside_repo.is_dir() {
        return beside_repo;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/vectors/merkle"))
        .find(|d| d.is_dir())
        .unwrap_or(beside_repo)
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn load(rel: &str) -> Value {
    let path = vectors_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A base64 hash; anything that is not 32 bytes is the policy error.
fn hash(v: &Value) -> Result<Hash, VerifyError> {
    let s = v.as_str().expect("hash is a string");
    let bytes = BASE64.decode(s.as_bytes()).expect("valid base64");
    hash_from_slice(&bytes)
}

/// `proof` may be `null` (empty).
fn proof(v: &Value) -> Result<Vec<Hash>, VerifyError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(hash).collect(),
        other => panic!("proof is not an array: {other}"),
    }
}

fn int(v: &Value) -> u64 {
    v.as_u64().expect("size or index is an unsigned integer")
}

fn run_inclusion(v: &Value) -> Result<(), VerifyError> {
    let (index, size) = (int(&v["leafIdx"]), int(&v["treeSize"]));
    let root = hash(&v["root"])?;
    let leaf = hash(&v["leafHash"])?;
    let proof = proof(&v["proof"])?;
    verify_inclusion::<Sha256>(index, size, &leaf, &proof, &root)
}

fn run_consistency(v: &Value) -> Result<(), VerifyError> {
    let (size1, size2) = (int(&v["size1"]), int(&v["size2"]));
    let root1 = hash(&v["root1"])?;
    let root2 = hash(&v["root2"])?;
    let proof = proof(&v["proof"])?;
    verify_consistency::<Sha256>(size1, size2, &root1, &root2, &proof)
}

/// Probes where our documented policy gives another result than the probe's `wantErr`, with
/// the error we return instead. Only one: its equal roots are the 12-byte placeholder
/// "don't care 2", and our hashes are exactly 32 bytes. The same case with real 32-byte roots
/// is accepted (see `policy_equal_sizes`).
const POLICY_DIVERGENCES: &[(&str, VerifyError)] = &[(
    "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json",
    VerifyError::WrongHashLength { len: 12 },
)];

#[test]
fn all_transparency_dev_probes() {
    let root = vectors_dir();
    let mut files = Vec::new();
    for kind in ["inclusion", "consistency"] {
        json_files(&root.join(kind), &mut files);
    }
    files.sort();
    assert_eq!(files.len(), 196, "probe count under {}", root.display());
    let mut diverged = 0;
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let want_err = v["wantErr"].as_bool().expect("wantErr is a bool");
        let got = if rel.starts_with("inclusion/") {
            run_inclusion(&v)
        } else {
            run_consistency(&v)
        };
        if let Some((_, err)) = POLICY_DIVERGENCES.iter().find(|(p, _)| *p == rel) {
            assert_eq!(got, Err(err.clone()), "{rel}: policy divergence");
            diverged += 1;
            continue;
        }
        assert_eq!(
            got.is_err(),
            want_err,
            "{rel}: wantErr = {want_err}, got {got:?}"
        );
    }
    assert_eq!(diverged, POLICY_DIVERGENCES.len());
}

const README_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const README_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn readme_roots_via_memory_tree_and_frontier() {
    let mut tree = MemoryTree::<Sha256>::new();
    let mut frontier = Frontier::new();
    assert_eq!(HEXLOWER.encode(&tree.root()), README_ROOTS[0]);
    assert_eq!(HEXLOWER.encode(&frontier.root::<Sha256>()), README_ROOTS[0]);
    for (i, leaf) in README_LEAVES.iter().enumerate() {
        let data = HEXLOWER.decode(leaf.as_bytes()).unwrap();
        tree.push(&data);
        frontier.append::<Sha256>(Sha256::leaf(&data)).unwrap();
        let want = README_ROOTS[i + 1];
        assert_eq!(
            HEXLOWER.encode(&tree.root()),
            want,
            "MemoryTree size {}",
            i + 1
        );
        assert_eq!(
            HEXLOWER.encode(&frontier.root::<Sha256>()),
            want,
            "Frontier size {}",
            i + 1
        );
        let loaded = Frontier::load(&tree, i as u64 + 1).unwrap();
        assert_eq!(loaded, frontier, "Frontier::load size {}", i + 1);
    }
}

/// Policy: consistency from size1 == 0 is `EmptyTreeConsistency`, whatever the roots.
#[test]
fn policy_size1_is_zero_and_does_not_equal_size2() {
    let v = load("consistency/additional/size1-is-zero-and-does-not-equal-size2.json");
    assert_eq!(v["wantErr"], Value::Bool(true));
    // The probe's roots are 12-byte placeholders, rejected first by the hash-length policy.
    assert_eq!(
        run_consistency(&v),
        Err(VerifyError::WrongHashLength { len: 12 })
    );
    // With real hashes the size policy decides.
    let empty = Sha256::empty_root();
    let one = Sha256::leaf(b"");
    assert_eq!(
        verify_consistency::<Sha256>(0, 1, &empty, &one, &[]),
        Err(VerifyError::EmptyTreeConsistency)
    );
    assert_eq!(
        verify_consistency::<Sha256>(0, 1, &empty, &one, &[one]),
        Err(VerifyError::EmptyTreeConsistency)
    );
}

#[test]
fn policy_size1_is_zero_and_size2_is_not_zero() {
    let v = load("consistency/additional/size1-is-zero-and-size2-is-not-zero.json");
    assert_eq!(v["wantErr"], Value::Bool(true));
    // root1 is the real empty root; root2 is a placeholder.
    assert_eq!(
        run_consistency(&v),
        Err(VerifyError::WrongHashLength { len: 12 })
    );
    let root1 = hash(&v["root1"]).unwrap();
    assert_eq!(root1, Sha256::empty_root());
    assert_eq!(
        verify_consistency::<Sha256>(0, 1, &root1, &Sha256::leaf(b"x"), &[]),
        Err(VerifyError::EmptyTreeConsistency)
    );
    // Also the probe with a real empty root and a non-empty proof.
    let v = load(
        "consistency/additional/consistency-check-on-empty-tree-size1-is-zero-is-useless.json",
    );
    assert_eq!(run_consistency(&v), Err(VerifyError::EmptyTreeConsistency));
}

/// Policy: size1 == size2 == 0 is `EmptyTreeConsistency` too, even with equal roots and an
/// empty proof.
#[test]
fn policy_sizes_are_equal_zero_and_proof_is_empty() {
    let v = load("consistency/additional/sizes-are-equal-zero-and-proof-is-empty.json");
    assert_eq!(v["wantErr"], Value::Bool(true));
    assert_eq!(
        run_consistency(&v),
        Err(VerifyError::WrongHashLength { len: 12 })
    );
    let empty = Sha256::empty_root();
    assert_eq!(
        verify_consistency::<Sha256>(0, 0, &empty, &empty, &[]),
        Err(VerifyError::EmptyTreeConsistency)
    );
    let v =
        load("consistency/additional/sizes-match-but-proof-is-not-empty-and-sizes-are-zero.json");
    assert_eq!(run_consistency(&v), Err(VerifyError::EmptyTreeConsistency));
}

/// Policy: hashes are exactly 32 bytes; an empty root and leaf hash is an error.
#[test]
fn policy_inclusion_empty_root_and_leaf() {
    let v = load("inclusion/single-entry/empty-root-and-leaf.json");
    assert_eq!(v["wantErr"], Value::Bool(true));
    assert_eq!(
        run_inclusion(&v),
        Err(VerifyError::WrongHashLength { len: 0 })
    );
    // The matching single-entry probe with 32-byte hashes verifies.
    let v = load("inclusion/single-entry/matching-root-and-leaf.json");
    assert_eq!(run_inclusion(&v), Ok(()));
}

/// Policy: size1 == size2 > 0 needs an empty proof and equal roots.
#[test]
fn policy_equal_sizes() {
    let r = Sha256::leaf(b"a");
    let other = Sha256::leaf(b"b");
    assert_eq!(verify_consistency::<Sha256>(1, 1, &r, &r, &[]), Ok(()));
    assert_eq!(verify_consistency::<Sha256>(7, 7, &r, &r, &[]), Ok(()));
    assert_eq!(
        verify_consistency::<Sha256>(1, 1, &r, &other, &[]),
        Err(VerifyError::RootsDifferForEqualSizes)
    );
    assert_eq!(
        verify_consistency::<Sha256>(1, 1, &r, &r, &[r]),
        Err(VerifyError::ProofNotEmptyForEqualSizes { len: 1 })
    );
    assert_eq!(
        verify_consistency::<Sha256>(2, 1, &r, &r, &[]),
        Err(VerifyError::Size1GreaterThanSize2 { size1: 2, size2: 1 })
    );
}

/// BLAKE3 with the same 0x00 / 0x01 prefixes: the tree code is generic over the hasher.
#[derive(Clone, Copy, Debug, Default)]
struct Blake3;

impl TreeHasher for Blake3 {
    fn empty_root() -> Hash {
        blake3::hash(b"").into()
    }
    fn leaf(data: &[u8]) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(&[0x00]);
        h.update(data);
        h.finalize().into()
    }
    fn node(left: &Hash, right: &Hash) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(&[0x01]);
        h.update(left);
        h.update(right);
        h.finalize().into()
    }
}

#[test]
fn blake3_round_trip() {
    let mut tree = MemoryTree::<Blake3>::new();
    let mut sha = MemoryTree::<Sha256>::new();
    assert_eq!(tree.root(), Blake3::empty_root());
    let mut roots = vec![tree.root()];
    for i in 0u32..40 {
        tree.push(&i.to_le_bytes());
        sha.push(&i.to_le_bytes());
        roots.push(tree.root());
    }
    assert_ne!(
        tree.root(),
        sha.root(),
        "a different hasher gives another tree"
    );
    assert_eq!(
        Frontier::load(&tree, 40).unwrap().root::<Blake3>(),
        tree.root()
    );
    for size in 1..=40u64 {
        for index in 0..size {
            let leaf = Blake3::leaf(&(index as u32).to_le_bytes());
            let p = tree.inclusion_proof(index, size).unwrap();
            verify_inclusion::<Blake3>(index, size, &leaf, &p, &roots[size as usize]).unwrap();
            assert_eq!(
                verify_inclusion::<Sha256>(index, size, &leaf, &p, &roots[size as usize]).is_ok(),
                size == 1,
                "SHA-256 must not verify a BLAKE3 proof (except the hash-free size 1)"
            );
        }
        for size1 in 1..=size {
            let p = tree.consistency_proof(size1, size).unwrap();
            verify_consistency::<Blake3>(
                size1,
                size,
                &roots[size1 as usize],
                &roots[size as usize],
                &p,
            )
            .unwrap();
        }
    }
}
