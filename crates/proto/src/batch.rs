//! Batch signatures: one signature over the Merkle root of many signed objects.
//!
//! N decides many purchases per durable write; instead of signing each receipt, it builds
//! a Merkle tree over the batch and signs its root once. Each object then carries its
//! inclusion path, so it stays checkable on its own, by anyone holding N's key.
//!
//! The tree is RFC 9162's (Certificate Transparency v2, §2.1): leaves and interior nodes
//! are hashed with different first bytes (`0x00`, `0x01`), so a leaf can never pass as a
//! node or a node as a leaf, and an `n`-leaf tree splits at the largest power of two below
//! `n`. Every leaf is also domain-separated by the kind of its object:
//!
//! ```text
//! leaf      = SHA-256(0x00 ‖ DOMAIN ‖ 0x00 ‖ B)          B: the object's signed bytes
//! node      = SHA-256(0x01 ‖ left ‖ right)
//! signed    = "netbill/v2/batch-root" ‖ 0x00 ‖ root ‖ u32 count
//! ```
//!
//! The leaf count is signed with the root, and an index with that count fixes the exact
//! length of every path, so one tree has exactly one proof per leaf.

use crate::crypto::{Crypto, Digest};

/// The domain tag of N's signature over a batch root.
pub const ROOT_DOMAIN: &[u8] = b"netbill/v2/batch-root";

/// Longest inclusion path: a tree of at most 2^32 − 1 leaves is at most 32 levels deep.
pub const PATH_LEN_MAX: usize = 32;

/// The hash of one object as a leaf: `SHA-256(0x00 ‖ domain ‖ 0x00 ‖ bytes)`.
pub fn leaf_hash(crypto: &dyn Crypto, domain: &[u8], bytes: &[u8]) -> Digest {
    crypto.digest(&[&[0x00], domain, &[0x00], bytes])
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(crypto: &dyn Crypto, left: &Digest, right: &Digest) -> Digest {
    crypto.digest(&[&[0x01], &left.0, &right.0])
}

/// The exact bytes N's signature over a batch covers.
pub fn root_message(root: &Digest, count: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROOT_DOMAIN.len() + 1 + 32 + 4);
    out.extend_from_slice(ROOT_DOMAIN);
    out.push(0x00);
    out.extend_from_slice(&root.0);
    out.extend_from_slice(&count.to_be_bytes());
    out
}

/// The largest power of two strictly below `n` (for `n ≥ 2`): where RFC 9162 splits.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The root of a tree over `leaves` and every leaf's inclusion path (leaf to root).
/// `None` for no leaves.
pub fn tree(crypto: &dyn Crypto, leaves: &[Digest]) -> Option<(Digest, Vec<Vec<Digest>>)> {
    if leaves.is_empty() {
        return None;
    }
    let mut paths = vec![Vec::new(); leaves.len()];
    let root = subtree(crypto, leaves, &mut paths);
    Some((root, paths))
}

fn subtree(crypto: &dyn Crypto, leaves: &[Digest], paths: &mut [Vec<Digest>]) -> Digest {
    if let [leaf] = leaves {
        return *leaf;
    }
    let k = split(leaves.len());
    let (left_paths, right_paths) = paths.split_at_mut(k);
    let left = subtree(crypto, &leaves[..k], left_paths);
    let right = subtree(crypto, &leaves[k..], right_paths);
    for p in left_paths {
        p.push(right);
    }
    for p in right_paths {
        p.push(left);
    }
    node_hash(crypto, &left, &right)
}

/// The length the inclusion path of leaf `index` in a tree of `count` leaves must have;
/// `None` if there is no such leaf.
pub fn path_len(index: u32, count: u32) -> Option<usize> {
    if index >= count {
        return None;
    }
    // RFC 9162 §2.1.3.2 without the hashing: one step per path element until `sn` is 0.
    let (mut fn_, mut sn, mut len) = (index, count - 1, 0);
    while sn != 0 {
        if fn_ & 1 == 0 && fn_ == sn {
            // The last node of a level with no sibling: it rises unchanged.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        }
        len += 1;
        fn_ >>= 1;
        sn >>= 1;
    }
    Some(len)
}

/// The root that `leaf`, at `index` of `count`, reaches along `path` (RFC 9162 §2.1.3.2);
/// `None` if the path cannot belong to such a leaf (index out of range, wrong length).
pub fn root_from_path(
    crypto: &dyn Crypto,
    leaf: Digest,
    index: u32,
    count: u32,
    path: &[Digest],
) -> Option<Digest> {
    if index >= count {
        return None;
    }
    let (mut fn_, mut sn, mut r) = (index, count - 1, leaf);
    for p in path {
        if sn == 0 {
            return None;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(crypto, p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(crypto, &r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    (sn == 0).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::symbolic::SymbolicCrypto;

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| leaf_hash(&SymbolicCrypto, b"netbill/test", &(i as u64).to_be_bytes()))
            .collect()
    }

    /// RFC 9162 §2.1.1's definition, written the direct way.
    fn mth(l: &[Digest]) -> Digest {
        if l.len() == 1 {
            return l[0];
        }
        let k = split(l.len());
        node_hash(&SymbolicCrypto, &mth(&l[..k]), &mth(&l[k..]))
    }

    #[test]
    fn every_path_of_every_size_reaches_the_root() {
        for n in 1..=70usize {
            let l = leaves(n);
            let (root, paths) = tree(&SymbolicCrypto, &l).unwrap();
            assert_eq!(root, mth(&l), "n={n}");
            for (i, p) in paths.iter().enumerate() {
                let (i32_, n32) = (i as u32, n as u32);
                assert_eq!(path_len(i32_, n32), Some(p.len()), "n={n} i={i}");
                assert_eq!(
                    root_from_path(&SymbolicCrypto, l[i], i32_, n32, p),
                    Some(root),
                    "n={n} i={i}"
                );
                // The same path under any other index or count does not reach this root.
                for j in 0..n32 {
                    if j != i32_ {
                        assert_ne!(root_from_path(&SymbolicCrypto, l[i], j, n32, p), Some(root));
                    }
                }
                // Under another count it may reach the same root (leaf 0 of 5 and of 6 climb
                // alike): that is why N signs the count with the root.
            }
        }
    }

    #[test]
    fn depths_and_ranges() {
        assert_eq!(path_len(0, 0), None);
        assert_eq!(path_len(3, 3), None);
        assert_eq!(path_len(0, 1), Some(0));
        assert_eq!(path_len(6, 7), Some(2));
        assert_eq!(path_len(0, 7), Some(3));
        assert_eq!(path_len(63, 64), Some(6));
        assert_eq!(path_len(u32::MAX - 1, u32::MAX), Some(31));
        assert_eq!(path_len(0, u32::MAX), Some(PATH_LEN_MAX));
        assert_eq!(tree(&SymbolicCrypto, &[]), None);
    }

    #[test]
    fn a_leaf_cannot_pass_as_a_node() {
        // Without the 0x00/0x01 prefixes, the bytes `left ‖ right` of a node, presented as
        // a one-leaf tree, would hash to the node itself (a second preimage).
        let l = leaves(2);
        let root = node_hash(&SymbolicCrypto, &l[0], &l[1]);
        let mut forged = l[0].0.to_vec();
        forged.extend_from_slice(&l[1].0);
        let as_leaf = leaf_hash(&SymbolicCrypto, b"netbill/test", &forged);
        assert_ne!(as_leaf, root);
        assert_ne!(
            root_from_path(&SymbolicCrypto, as_leaf, 0, 1, &[]),
            Some(root)
        );
        // Nor can an interior node stand in for a leaf one level up.
        let l4 = leaves(4);
        let (root4, _) = tree(&SymbolicCrypto, &l4).unwrap();
        let n01 = node_hash(&SymbolicCrypto, &l4[0], &l4[1]);
        let n23 = node_hash(&SymbolicCrypto, &l4[2], &l4[3]);
        assert_eq!(
            root_from_path(&SymbolicCrypto, n01, 0, 2, &[n23]),
            Some(root4)
        );
        // ... which is why the count is signed: (root4, 2) is never what N signs for it.
        assert_ne!(root_message(&root4, 2), root_message(&root4, 4));
    }
}
