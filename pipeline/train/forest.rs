//! Flat tree ensemble for scoring: every tree's nodes in one array of small structs, rows
//! evaluated in blocks (a block of rows is copied row-major once, then every tree walks it
//! while its few nodes stay in cache). Prediction and path contributions come out of the
//! same walk.
//!
//! The arithmetic is the one forust-ml does (leaf weights as f32 -> f64, summed onto the base
//! score in tree order; contributions credit each split's feature with the change in the
//! hessian-weighted average weight, in tree order), so the results are bit-for-bit those of
//! `GradientBooster::predict` and `predict_contributions(.., Average, ..)`; a unit test holds
//! that. What changes is speed: forust walks each tree over the whole column-major matrix
//! (one strided read per node visit) and walks the trees twice for contributions.

use forust_ml::GradientBooster;
use rayon::prelude::*;

use crate::features::FeatureMatrix;

/// Rows walked down a tree together (independent loads overlap instead of waiting in turn).
const LANES: usize = 8;
/// Rows per block: 256 rows x 24 features x 8 bytes = 48 KiB, with the block's
/// contributions about 100 KiB, in L2.
const BLOCK: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f64,
    /// Leaf weight (leaves) as forust stores it, widened to f64.
    value: f64,
    /// Hessian-weighted average weight of the node's leaves (path contributions).
    average: f64,
    /// Leaves point to themselves (feature 0, every child = itself), so a walk of the tree's
    /// depth from the root always ends on the right leaf and adds 0 to contributions there.
    feature: u32,
    left: u32,
    right: u32,
    missing: u32,
}

/// A compiled ensemble: the trees forust predicts with, in order.
#[derive(Debug, Clone)]
pub struct FlatForest {
    base: f64,
    nodes: Vec<Node>,
    roots: Vec<u32>,
    /// Depth of each tree (levels to walk).
    depths: Vec<u32>,
}

impl FlatForest {
    /// The largest feature index a split reads (none without splits).
    pub fn max_feature(&self) -> Option<usize> {
        self.nodes.iter().filter(|n| n.left != n.right).map(|n| n.feature as usize).max()
    }

    /// Compile the prediction trees of a fitted booster (those up to its best iteration).
    pub fn compile(booster: &GradientBooster) -> Self {
        let n = booster.prediction_iteration.unwrap_or(booster.trees.len()).min(booster.trees.len());
        let mut nodes = Vec::new();
        let mut roots = Vec::with_capacity(n);
        let mut depths = Vec::with_capacity(n);
        for tree in &booster.trees[..n] {
            let offset = nodes.len() as u32;
            roots.push(offset);
            depths.push(tree.nodes.iter().map(|n| n.depth as u32).max().unwrap_or(0));
            let average = tree.distribute_leaf_weights();
            for (i, node) in tree.nodes.iter().enumerate() {
                let at = |child: usize| offset + if node.is_leaf { i as u32 } else { child as u32 };
                nodes.push(Node {
                    threshold: if node.is_leaf { 0.0 } else { node.split_value },
                    value: f64::from(node.weight_value),
                    average: average[i],
                    feature: if node.is_leaf { 0 } else { node.split_feature as u32 },
                    left: at(node.left_child),
                    right: at(node.right_child),
                    missing: at(node.missing_node),
                });
            }
        }
        FlatForest { base: booster.base_score, nodes, roots, depths }
    }

    /// Compile fidelis's own trees ([`super::hist`]): `<= threshold` goes left there, `<`
    /// here, so each threshold becomes the next float up; an inner node's own Newton value is
    /// its average (contributions: each split's feature gets the change of value down the path).
    pub(crate) fn compile_hist(base: f64, trees: &[super::hist::Tree]) -> Self {
        use super::hist::LEAF;
        let mut nodes = Vec::new();
        let mut roots = Vec::with_capacity(trees.len());
        let mut depths = Vec::with_capacity(trees.len());
        for tree in trees {
            let offset = nodes.len() as u32;
            roots.push(offset);
            let mut depth = vec![0u32; tree.nodes.len()];
            for (i, n) in tree.nodes.iter().enumerate() {
                if n.feature != LEAF {
                    depth[n.left] = depth[i] + 1;
                    depth[n.right] = depth[i] + 1;
                }
            }
            depths.push(depth.iter().copied().max().unwrap_or(0));
            for (i, n) in tree.nodes.iter().enumerate() {
                let leaf = n.feature == LEAF;
                let at = |child: usize| offset + if leaf { i as u32 } else { child as u32 };
                nodes.push(Node {
                    threshold: if leaf { 0.0 } else { next_up(n.threshold) },
                    value: n.value,
                    average: n.value,
                    feature: if leaf { 0 } else { n.feature as u32 },
                    left: at(n.left),
                    right: at(n.right),
                    missing: at(if n.missing_left { n.left } else { n.right }),
                });
            }
        }
        FlatForest { base, nodes, roots, depths }
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    #[inline]
    fn child(&self, node: &Node, row: &[f64]) -> usize {
        // Branch-free selection (the comparisons are data-dependent coin flips).
        let v = row[node.feature as usize];
        let next = if v < node.threshold { node.left } else { node.right };
        (if v.is_nan() { node.missing } else { next }) as usize
    }

    /// Raw margins (log-odds for a log-loss model), one per row.
    pub fn predict(&self, x: &FeatureMatrix) -> Vec<f64> {
        self.run(x, false).0
    }

    /// Margins and path contributions, row-major `rows x (cols + 1)`, bias last.
    pub fn predict_with_contributions(&self, x: &FeatureMatrix) -> (Vec<f64>, Vec<f64>) {
        self.run(x, true)
    }

    fn run(&self, x: &FeatureMatrix, with_contributions: bool) -> (Vec<f64>, Vec<f64>) {
        let cols = x.cols();
        let width = cols + 1;
        let mut margin = vec![self.base; x.rows];
        let mut contributions = if with_contributions { vec![0.0; x.rows * width] } else { Vec::new() };
        let block_contributions: Vec<&mut [f64]> =
            if with_contributions { contributions.chunks_mut(BLOCK * width).collect() } else { Vec::new() };
        // (first row, its margins, its contributions when asked for)
        type Job<'a> = (usize, &'a mut [f64], Option<&'a mut [f64]>);
        let mut jobs: Vec<Job> = Vec::new();
        let mut block_contributions = block_contributions.into_iter();
        for (b, m) in margin.chunks_mut(BLOCK).enumerate() {
            jobs.push((b * BLOCK, m, block_contributions.next()));
        }
        jobs.into_par_iter().for_each_init(
            || vec![0.0; BLOCK * cols],
            |rows_buf, (start, margin, contrib)| {
                let n = margin.len();
                // Copy the block row-major.
                for c in 0..cols {
                    let column = &x.column(c)[start..start + n];
                    for (r, &v) in column.iter().enumerate() {
                        rows_buf[r * cols + c] = v;
                    }
                }
                let row = |r: usize| &rows_buf[r * cols..(r + 1) * cols];
                let mut contrib = contrib;
                if let Some(c) = contrib.as_deref_mut() {
                    for r in 0..n {
                        c[r * width + cols] = self.base;
                    }
                }
                for (&root, &depth) in self.roots.iter().zip(&self.depths) {
                    let root = root as usize;
                    for lane0 in (0..n).step_by(LANES) {
                        let lanes = LANES.min(n - lane0);
                        let mut at = [root; LANES];
                        if let Some(c) = contrib.as_deref_mut() {
                            for k in 0..lanes {
                                c[(lane0 + k) * width + cols] += self.nodes[root].average;
                            }
                        }
                        for _ in 0..depth {
                            for k in 0..lanes {
                                let node = &self.nodes[at[k]];
                                let next = self.child(node, row(lane0 + k));
                                if let Some(c) = contrib.as_deref_mut() {
                                    c[(lane0 + k) * width + node.feature as usize] +=
                                        self.nodes[next].average - node.average;
                                }
                                at[k] = next;
                            }
                        }
                        for k in 0..lanes {
                            margin[lane0 + k] += self.nodes[at[k]].value;
                        }
                    }
                }
            },
        );
        (margin, contributions)
    }
}

/// The smallest float above `x` (finite `x`): `v <= x` exactly when `v < next_up(x)`.
fn next_up(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let bits = x.to_bits();
    f64::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}
