//! Exact SHAP values of fidelis's trees: TreeSHAP (Lundberg, Erion & Lee 2018, Algorithm 2,
//! "tree path dependent"), polynomial in the tree depth, as the `shap` library's
//! `TreeExplainer` computes it. A branch not taken by the customer is weighted by its share
//! of the node's cover: the training rows that reached it ([`super::hist::Node::cover`]), so
//! the bias is the trees' average output over the training rows. Each row's values add up to
//! its margin (log-odds for churn) exactly, up to rounding.
//!
//! Unlike path attributions (Saabas), the values are consistent: a feature that matters more
//! to the model never gets less credit, and the credit does not depend on the order in which
//! the splits happen to test the features.

use rayon::prelude::*;

use super::hist::{Tree, LEAF};
use crate::features::FeatureMatrix;

/// Rows per parallel block.
const BLOCK: usize = 512;

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    /// Feature of the split that added the element (`usize::MAX` for the root's).
    feature: usize,
    /// Share of the cover that goes this way when the feature is unknown.
    zero: f64,
    /// 1 when the customer's value goes this way, else 0.
    one: f64,
    /// Weight of the subsets of the path's features of each size.
    weight: f64,
}

/// Whether every node of `trees` knows its cover (models trained before covers were stored
/// do not: they explain with path attributions).
pub(crate) fn covers_known(trees: &[Tree]) -> bool {
    trees.iter().all(|t| t.nodes.iter().all(|n| n.cover > 0.0))
}

/// The cover-weighted average output of `tree` over its training rows.
fn expected_value(tree: &Tree, node: usize) -> f64 {
    let n = &tree.nodes[node];
    if n.feature == LEAF {
        return n.value;
    }
    let (l, r) = (&tree.nodes[n.left], &tree.nodes[n.right]);
    (l.cover * expected_value(tree, n.left) + r.cover * expected_value(tree, n.right)) / (l.cover + r.cover)
}

fn depth(tree: &Tree, node: usize) -> usize {
    let n = &tree.nodes[node];
    if n.feature == LEAF {
        0
    } else {
        1 + depth(tree, n.left).max(depth(tree, n.right))
    }
}

/// A tree's SHAP values depend on a row only through the direction it takes at each split
/// (TreeSHAP follows the row's side at every split, the taken path and the others), so rows
/// that agree at every split share them. For a tree of at most this many splits the
/// directions are a key into a table of the values computed once per key seen (per worker);
/// larger trees run TreeSHAP on every row.
const MAX_KEY_BITS: usize = 16;

/// One tree, prepared: its splits in node order (for the key) and the table of the values
/// of the keys seen so far.
struct Cached<'a> {
    tree: &'a Tree,
    /// Split nodes in node order; a node's bit in the key is its position here.
    splits: Vec<usize>,
    /// Their features, thresholds and missing-value sides, packed for the key.
    features: Vec<usize>,
    thresholds: Vec<f64>,
    missing_left: Vec<bool>,
    /// Per key: `u32::MAX` (not seen) or its index in `runs`.
    slots: Vec<u32>,
    /// Each key's nonzero values: `features_of[start..end]` and `values[start..end]`.
    runs: Vec<(u32, u32)>,
    features_of: Vec<u32>,
    values: Vec<f64>,
}

impl<'a> Cached<'a> {
    fn new(tree: &'a Tree) -> Option<Cached<'a>> {
        let splits: Vec<usize> = (0..tree.nodes.len()).filter(|&i| tree.nodes[i].feature != LEAF).collect();
        (splits.len() <= MAX_KEY_BITS).then(|| Cached {
            tree,
            slots: vec![u32::MAX; 1 << splits.len()],
            features: splits.iter().map(|&i| tree.nodes[i].feature).collect(),
            thresholds: splits.iter().map(|&i| tree.nodes[i].threshold).collect(),
            missing_left: splits.iter().map(|&i| tree.nodes[i].missing_left).collect(),
            splits,
            runs: Vec::new(),
            features_of: Vec::new(),
            values: Vec::new(),
        })
    }

    /// The keys of the `n` rows of a column-major block (`block[f * BLOCK + k]`: feature `f`
    /// of row `k`), into `keys` (one split at a time over the rows: compares the compiler
    /// vectorizes).
    fn keys_into(&self, block: &[f64], n: usize, keys: &mut [u32]) {
        keys[..n].fill(0);
        for bit in 0..self.features.len() {
            let (t, ml) = (self.thresholds[bit], self.missing_left[bit]);
            let col = &block[self.features[bit] * BLOCK..self.features[bit] * BLOCK + n];
            for (key, &v) in keys[..n].iter_mut().zip(col) {
                *key |= u32::from((v <= t) | (v.is_nan() & ml)) << bit;
            }
        }
    }

    /// Adds the tree's values for the pattern `key` to `phi`, computing them the first time
    /// (`scratch`: zeros, as long as `phi`).
    fn add_key(&mut self, key: usize, phi: &mut [f64], path: &mut [PathElement], scratch: &mut [f64]) {
        if self.slots[key] == u32::MAX {
            let tree = self.tree;
            let splits = &self.splits;
            let left = |node: usize| {
                let bit = splits.partition_point(|&s| s < node);
                key & (1 << bit) != 0
            };
            recurse(tree, &left, scratch, path, 0, 0, 0, 1.0, 1.0, usize::MAX);
            let start = self.features_of.len() as u32;
            for (f, v) in scratch.iter_mut().enumerate() {
                if *v != 0.0 {
                    self.features_of.push(f as u32);
                    self.values.push(*v);
                    *v = 0.0;
                }
            }
            self.slots[key] = self.runs.len() as u32;
            self.runs.push((start, self.features_of.len() as u32));
        }
        let (start, end) = self.runs[self.slots[key] as usize];
        let (start, end) = (start as usize, end as usize);
        for (&f, &v) in self.features_of[start..end].iter().zip(&self.values[start..end]) {
            phi[f as usize] += v;
        }
    }
}

/// SHAP values of `rows` of `x` (every row when `None`) for the ensemble `base + sum of
/// trees`, row-major `rows x (cols + 1)`, the last column being the expected value (`base`
/// plus each tree's [`expected_value`]). Requires [`covers_known`]. A row's values depend on
/// that row only (whatever the other rows and the number of threads).
pub(crate) fn tree_shap(base: f64, trees: &[Tree], x: &FeatureMatrix, rows: Option<&[usize]>) -> Vec<f64> {
    let cols = x.cols();
    let width = cols + 1;
    let all: Vec<usize>;
    let rows = match rows {
        Some(r) => r,
        None => {
            all = (0..x.rows).collect();
            &all
        }
    };
    let bias = base + trees.iter().map(|t| expected_value(t, 0)).sum::<f64>();
    let max_depth = trees.iter().map(|t| depth(t, 0)).max().unwrap_or(0);
    // The path of each recursion level is a copy of its parent's, one longer.
    let path_len = (max_depth + 2) * (max_depth + 3) / 2;
    let mut out = vec![0.0; rows.len() * width];
    // A few chunks per thread, each with its own tables (filled once per chunk).
    let chunks = rayon::current_num_threads().clamp(1, rows.len().div_ceil(BLOCK).max(1));
    let per_chunk = rows.len().div_ceil(chunks).max(1);
    out.par_chunks_mut(per_chunk * width).enumerate().for_each(|(c, chunk)| {
        let mut cached: Vec<Option<Cached>> = trees.iter().map(Cached::new).collect();
        let mut path = vec![PathElement::default(); path_len];
        let mut scratch = vec![0.0; cols];
        // A block of rows, column-major, walked by one tree after the other (the tree's table
        // stays in cache over the block); each row still adds the trees in order.
        let mut block = vec![0.0; BLOCK * cols];
        let mut keys = vec![0u32; BLOCK];
        let mut row = vec![0.0; cols];
        for (b, phis) in chunk.chunks_mut(BLOCK * width).enumerate() {
            let n = phis.len() / width;
            let first = c * per_chunk + b * BLOCK;
            for f in 0..cols {
                let column = x.column(f);
                for k in 0..n {
                    block[f * BLOCK + k] = column[rows[first + k]];
                }
            }
            for (tree, cache) in trees.iter().zip(cached.iter_mut()) {
                match cache {
                    Some(cache) => {
                        cache.keys_into(&block, n, &mut keys);
                        for (k, &key) in keys[..n].iter().enumerate() {
                            let phi = &mut phis[k * width..k * width + cols];
                            cache.add_key(key as usize, phi, &mut path, &mut scratch);
                        }
                    }
                    None => {
                        for k in 0..n {
                            for (f, v) in row.iter_mut().enumerate() {
                                *v = block[f * BLOCK + k];
                            }
                            let left = |node: usize| {
                                let n = &tree.nodes[node];
                                goes_left(n, row[n.feature])
                            };
                            recurse(
                                tree,
                                &left,
                                &mut phis[k * width..],
                                &mut path,
                                0,
                                0,
                                0,
                                1.0,
                                1.0,
                                usize::MAX,
                            );
                        }
                    }
                }
            }
            for k in 0..n {
                phis[k * width + cols] = bias;
            }
        }
    });
    out
}

/// Whether the value `v` goes left at the split `n`.
#[inline]
fn goes_left(n: &super::hist::Node, v: f64) -> bool {
    if v.is_nan() {
        n.missing_left
    } else {
        v <= n.threshold
    }
}

#[allow(clippy::too_many_arguments)]
fn recurse(
    tree: &Tree,
    left: &impl Fn(usize) -> bool,
    phi: &mut [f64],
    path: &mut [PathElement],
    node: usize,
    // Start of the parent's path in `path`, and its length - 1.
    parent_start: usize,
    mut depth: usize,
    parent_zero: f64,
    parent_one: f64,
    parent_feature: usize,
) {
    // This level's path: the parent's (`depth` elements), extended (the root's is one dummy).
    let start = parent_start + depth;
    if depth > 0 {
        path.copy_within(parent_start..parent_start + depth, start);
    }
    let p = &mut path[start..];
    extend(p, depth, parent_zero, parent_one, parent_feature);
    let n = &tree.nodes[node];
    if n.feature == LEAF {
        for i in 1..=depth {
            let w = unwound_sum(p, depth, i);
            let e = p[i];
            phi[e.feature] += w * (e.one - e.zero) * n.value;
        }
        return;
    }
    let (hot, cold) = if left(node) { (n.left, n.right) } else { (n.right, n.left) };
    let (hot_zero, cold_zero) = (tree.nodes[hot].cover / n.cover, tree.nodes[cold].cover / n.cover);
    let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
    // A feature already on the path: undo its element, its fractions carry over.
    if let Some(k) = (1..=depth).find(|&k| p[k].feature == n.feature) {
        incoming_zero = p[k].zero;
        incoming_one = p[k].one;
        unwind(p, depth, k);
        depth -= 1;
    }
    recurse(tree, left, phi, path, hot, start, depth + 1, hot_zero * incoming_zero, incoming_one, n.feature);
    recurse(tree, left, phi, path, cold, start, depth + 1, cold_zero * incoming_zero, 0.0, n.feature);
}

fn extend(p: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: usize) {
    p[depth] = PathElement { feature, zero, one, weight: if depth == 0 { 1.0 } else { 0.0 } };
    let d = depth as f64;
    for i in (0..depth).rev() {
        let fi = i as f64;
        p[i + 1].weight += one * p[i].weight * (fi + 1.0) / (d + 1.0);
        p[i].weight = zero * p[i].weight * (d - fi) / (d + 1.0);
    }
}

fn unwind(p: &mut [PathElement], depth: usize, k: usize) {
    let (one, zero) = (p[k].one, p[k].zero);
    let d = depth as f64;
    let mut next_one = p[depth].weight;
    for i in (0..depth).rev() {
        let fi = i as f64;
        if one != 0.0 {
            let tmp = p[i].weight;
            p[i].weight = next_one * (d + 1.0) / ((fi + 1.0) * one);
            next_one = tmp - p[i].weight * zero * (d - fi) / (d + 1.0);
        } else {
            p[i].weight = p[i].weight * (d + 1.0) / (zero * (d - fi));
        }
    }
    for i in k..depth {
        p[i].feature = p[i + 1].feature;
        p[i].zero = p[i + 1].zero;
        p[i].one = p[i + 1].one;
    }
}

/// The total weight of the path with element `k` unwound (without changing it).
fn unwound_sum(p: &[PathElement], depth: usize, k: usize) -> f64 {
    let (one, zero) = (p[k].one, p[k].zero);
    let d = depth as f64;
    let mut next_one = p[depth].weight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        let fi = i as f64;
        if one != 0.0 {
            let tmp = next_one * (d + 1.0) / ((fi + 1.0) * one);
            total += tmp;
            next_one = p[i].weight - tmp * zero * ((d - fi) / (d + 1.0));
        } else if zero != 0.0 {
            total += (p[i].weight / zero) / ((d - fi) / (d + 1.0));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::hist::Node;

    fn leaf(value: f64, cover: f64) -> Node {
        Node { feature: LEAF, threshold: 0.0, missing_left: false, left: 0, right: 0, value, cover, bin: 0 }
    }

    fn split(feature: usize, threshold: f64, left: usize, right: usize, cover: f64) -> Node {
        Node { feature, threshold, missing_left: true, left, right, value: 0.0, cover, bin: 0 }
    }

    /// The tree's output for `x` with only the features in `known` known: the cover-weighted
    /// average over the unknown splits (what TreeSHAP's value function is).
    fn conditional(tree: &Tree, node: usize, x: &[f64], known: u32) -> f64 {
        let n = &tree.nodes[node];
        if n.feature == LEAF {
            return n.value;
        }
        if known & (1 << n.feature) != 0 {
            let next = if goes_left(n, x[n.feature]) { n.left } else { n.right };
            return conditional(tree, next, x, known);
        }
        let (l, r) = (&tree.nodes[n.left], &tree.nodes[n.right]);
        (l.cover * conditional(tree, n.left, x, known) + r.cover * conditional(tree, n.right, x, known))
            / n.cover
    }

    /// Shapley values by enumerating every coalition.
    fn brute_force(trees: &[Tree], x: &[f64]) -> Vec<f64> {
        let m = x.len();
        let fact = |k: usize| (1..=k).map(|v| v as f64).product::<f64>();
        let value = |s: u32| trees.iter().map(|t| conditional(t, 0, x, s)).sum::<f64>();
        (0..m)
            .map(|i| {
                (0..1u32 << m)
                    .filter(|s| s & (1 << i) == 0)
                    .map(|s| {
                        let k = s.count_ones() as usize;
                        fact(k) * fact(m - k - 1) / fact(m) * (value(s | (1 << i)) - value(s))
                    })
                    .sum()
            })
            .collect()
    }

    /// Trees where a feature is split twice on one path, a split feature unused elsewhere,
    /// uneven covers and a missing value.
    fn trees() -> Vec<Tree> {
        let a = Tree {
            nodes: vec![
                split(0, 0.5, 1, 2, 100.0),
                split(1, 2.0, 3, 4, 60.0),
                split(0, 2.0, 5, 6, 40.0),
                leaf(-1.0, 45.0),
                split(0, 0.2, 7, 8, 15.0),
                leaf(0.5, 10.0),
                leaf(2.0, 30.0),
                leaf(0.25, 5.0),
                leaf(-0.75, 10.0),
            ],
        };
        let b = Tree {
            nodes: vec![
                split(2, 1.0, 1, 2, 100.0),
                leaf(0.3, 70.0),
                split(3, -1.0, 3, 4, 30.0),
                leaf(-0.6, 12.0),
                leaf(1.1, 18.0),
            ],
        };
        // A comb of 18 splits (more than a key holds: TreeSHAP row by row).
        let mut nodes = Vec::new();
        let mut cover = 1000.0;
        for i in 0..18 {
            let id = nodes.len();
            nodes.push(split(i % 4, 0.25 * i as f64 - 1.0, id + 1, id + 2, cover));
            nodes.push(leaf(0.1 * i as f64 - 0.8, cover * 0.3));
            cover *= 0.7;
        }
        nodes.push(leaf(1.5, cover));
        // Each split's right child is the next split: fix the indices.
        for i in 0..18 {
            let at = 2 * i;
            nodes[at].left = at + 1;
            nodes[at].right = at + 2;
        }
        let c = Tree { nodes };
        assert!(Cached::new(&a).is_some() && Cached::new(&c).is_none());
        vec![a, b, c]
    }

    #[test]
    fn equal_the_shapley_values_and_add_up_to_the_margin() {
        let trees = trees();
        let rows = [
            vec![0.1, 3.0, 0.5, 0.0],
            vec![0.3, 1.0, 2.0, -2.0],
            vec![1.5, f64::NAN, 2.0, 0.0],
            vec![f64::NAN, 5.0, f64::NAN, 7.0],
            vec![3.0, 0.0, 0.0, 0.0],
            // The first row again (its keys are in the tables now).
            vec![0.1, 3.0, 0.5, 0.0],
        ];
        let data: Vec<f64> = (0..4).flat_map(|c| rows.iter().map(move |r| r[c])).collect();
        let x = FeatureMatrix { names: (0..4).map(|c| format!("f{c}")).collect(), rows: rows.len(), data };
        let w = 5;
        let base = 0.7;
        let phi = tree_shap(base, &trees, &x, None);
        for (r, row) in rows.iter().enumerate() {
            let got = &phi[r * 5..r * 5 + 5];
            let want = brute_force(&trees, row);
            for c in 0..4 {
                assert!((got[c] - want[c]).abs() < 1e-12, "row {r} feature {c}: {} vs {}", got[c], want[c]);
            }
            let margin = base + trees.iter().map(|t| conditional(t, 0, row, 0b1111)).sum::<f64>();
            let total: f64 = got.iter().sum();
            assert!((total - margin).abs() < 1e-12, "row {r}: {total} vs {margin}");
        }
        // The bias is the trees' average output over the training rows.
        let average = (-45.0 + 0.5 * 10.0 + 2.0 * 30.0 + 0.25 * 5.0 - 0.75 * 10.0) / 100.0
            + (0.3 * 70.0 - 0.6 * 12.0 + 1.1 * 18.0) / 100.0
            + expected_value(&trees[2], 0);
        assert!((phi[4] - (base + average)).abs() < 1e-12);
        // A subset of rows gives those rows' values.
        let some = tree_shap(base, &trees, &x, Some(&[3, 1]));
        assert_eq!(&some[..w], &phi[3 * w..4 * w]);
        assert_eq!(&some[w..], &phi[w..2 * w]);
        assert_eq!(&phi[..w], &phi[5 * w..6 * w]);
    }
}
