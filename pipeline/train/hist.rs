//! fidelis's own histogram GBDT: one engine for every loss (log loss for churn, squared error
//! and Poisson deviance for CLV), one binning shared by every fit of a training run.
//!
//! Histogram trees grown depth-wise: every feature cut into at most `nbins` quantile bins
//! (bin 0 holds missing values, which go to whichever side gains more); second-order (Newton)
//! leaf values `-G / (H + l2)` times the learning rate; early stopping on the validation loss
//! (the trees up to the best iteration are kept). Splits need at least [`MIN_LEAF_ROWS`] rows
//! and `min_leaf_weight` hessian on each side.
//!
//! Where the time goes and what keeps it small (the training-cost issue; `make bench`):
//! - [`Binned`] is built once per training run, row-major (a row's bins of every feature in
//!   one cache line, one byte each when there are at most 256 bins) with cuts from the fit
//!   rows only; a fit on a subset of rows (purged models, refits) takes a list of row indices,
//!   never a copy of the matrix.
//! - A node's histogram is summed over its rows in a fixed number of contiguous lanes (at
//!   most [`LANES`], by row count only), each into its own buffer, then added in lane order:
//!   parallel, and the same bits whatever the thread count; a node too small for a second
//!   lane has its features summed in parallel blocks instead (each bin over the same rows in
//!   the same order: the same bits again). Gradients and hessians are stored
//!   as `f32` (half the memory traffic), sums are `f64`.
//! - Only the smaller child's histogram is built; the larger one is the parent's minus it.
//!
//! Deterministic: row subsampling and column sampling are seeded per tree; sums run in row
//! order within each lane.

use std::ops::Range;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::GbdtConfig;
use crate::features::FeatureMatrix;
use crate::rng::Rng;

/// Fewest training rows a leaf may hold.
pub const MIN_LEAF_ROWS: usize = 20;

/// LightGBM's `poisson_max_delta_step`: the Poisson hessian is `exp(F + 0.7)`.
const HESSIAN_SHIFT: f64 = 0.7;

/// Most lanes a histogram is summed in (by row count alone, so results do not depend on the
/// machine's threads).
const LANES: usize = 4;
/// Fewest rows per lane.
const LANE_ROWS: usize = 32_768;
/// Fewest rows for which a one-lane histogram is summed in parallel blocks of features.
const FEATURE_BLOCK_ROWS: usize = 2048;

pub(crate) const LEAF: usize = usize::MAX;

/// The loss a model is fitted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Binary log loss on the log-odds (churn).
    LogLoss,
    /// Squared error (CLV).
    Squared,
    /// Poisson deviance with a log link (CLV); negative targets count as 0.
    Poisson,
}

impl Loss {
    /// The starting margin: the training rows' mean on the loss's scale.
    fn base(self, y: &[f64], rows: &[usize]) -> Result<f64, String> {
        let n = rows.len().max(1) as f64;
        match self {
            Loss::LogLoss => {
                let p = rows.iter().map(|&r| y[r]).sum::<f64>() / n;
                if !(p > 0.0 && p < 1.0) {
                    return Err("the training labels are all of one class".into());
                }
                Ok((p / (1.0 - p)).ln())
            }
            Loss::Squared => Ok(rows.iter().map(|&r| y[r]).sum::<f64>() / n),
            Loss::Poisson => {
                let mean = rows.iter().map(|&r| y[r].max(0.0)).sum::<f64>() / n;
                if !(mean > 0.0 && mean.is_finite()) {
                    return Err("the training revenue is zero everywhere (a Poisson model needs some)".into());
                }
                Ok(mean.ln())
            }
        }
    }

    /// Gradient and hessian of the loss at margin `f` for target `y`.
    #[inline]
    fn grad_hess(self, y: f64, f: f64) -> (f64, f64) {
        match self {
            Loss::LogLoss => {
                let p = crate::math::sigmoid(f);
                (p - y, (p * (1.0 - p)).max(1e-16))
            }
            Loss::Squared => (f - y, 1.0),
            Loss::Poisson => {
                let mu = f.exp();
                (mu - y.max(0.0), mu * HESSIAN_SHIFT.exp())
            }
        }
    }

    /// Mean loss (up to a constant) of margins `margin` against `y`: what early stopping
    /// watches.
    fn loss(self, y: &[f64], margin: &[f64]) -> f64 {
        let total: f64 = match self {
            Loss::LogLoss => y
                .iter()
                .zip(margin)
                .map(|(&y, &f)| {
                    // log(1 + e^f) - y f, stable for large |f|.
                    let softplus = if f > 0.0 { f + (-f).exp().ln_1p() } else { f.exp().ln_1p() };
                    softplus - y * f
                })
                .sum(),
            Loss::Squared => y.iter().zip(margin).map(|(&y, &f)| (f - y) * (f - y)).sum(),
            Loss::Poisson => y.iter().zip(margin).map(|(&y, &f)| f.exp() - y.max(0.0) * f).sum(),
        };
        total / y.len().max(1) as f64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Node {
    /// Split feature, [`LEAF`] for a leaf.
    pub feature: usize,
    /// Values `<= threshold` go left.
    pub threshold: f64,
    pub missing_left: bool,
    pub left: usize,
    pub right: usize,
    /// The node's Newton value (margin units, learning rate applied): a leaf's prediction;
    /// an inner node's value is what its subtree would predict as one leaf (contributions).
    pub value: f64,
    /// Training rows that reached the node (TreeSHAP's cover); 0 in models written before
    /// covers were stored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cover: f64,
    /// The split's last left bin while fitting (not stored).
    #[serde(skip)]
    pub bin: u16,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
}

/// Largest leaf (or node) value a stored tree may hold on a log scale (log-odds, log of a
/// rate): e^50 is beyond any probability or rate a fit produces; a value past it is an edited
/// or damaged file.
pub(crate) const MAX_LOG_VALUE: f64 = 50.0;
/// The same for squared-error trees (currency units).
pub(crate) const MAX_VALUE: f64 = 1e15;

/// Check a stored ensemble before anything is compiled from it: at least one tree, each
/// well-formed ([`Tree::check`]), a finite base within `max_abs`.
pub(crate) fn check_trees(base: f64, trees: &[Tree], max_abs: f64) -> std::result::Result<(), String> {
    if !(base.is_finite() && base.abs() <= max_abs) {
        return Err(format!("base value {base} is not a finite number within +-{max_abs}"));
    }
    if trees.is_empty() {
        return Err("the model has no trees".into());
    }
    for (t, tree) in trees.iter().enumerate() {
        tree.check(max_abs).map_err(|e| format!("tree {t}: {e}"))?;
    }
    Ok(())
}

impl Tree {
    /// A stored tree is well-formed: nodes, each child after its parent and within the tree
    /// (so the tree is acyclic and every walk ends), no node with two parents, split features
    /// that fit the compiled form, thresholds that are numbers, values finite within `max_abs`.
    pub(crate) fn check(&self, max_abs: f64) -> std::result::Result<(), String> {
        let n = self.nodes.len();
        if n == 0 {
            return Err("no nodes".into());
        }
        let mut parents = vec![false; n];
        for (i, node) in self.nodes.iter().enumerate() {
            if !(node.value.is_finite() && node.value.abs() <= max_abs) {
                return Err(format!(
                    "node {i}: value {} is not a finite number within +-{max_abs}",
                    node.value
                ));
            }
            if node.feature == LEAF {
                continue;
            }
            if node.feature >= u32::MAX as usize {
                return Err(format!("node {i}: feature index {} is out of range", node.feature));
            }
            if node.threshold.is_nan() {
                return Err(format!("node {i}: the threshold is not a number"));
            }
            if node.left == node.right {
                return Err(format!("node {i}: both children are node {}", node.left));
            }
            for c in [node.left, node.right] {
                if c <= i || c >= n {
                    return Err(format!(
                        "node {i}: child {c} is not a node after it in the tree (nodes 0..{n}): a cycle or \
                         a dangling index"
                    ));
                }
                if std::mem::replace(&mut parents[c], true) {
                    return Err(format!("node {c} has two parents"));
                }
            }
        }
        Ok(())
    }

    /// The largest split feature index (none for a single leaf).
    pub(crate) fn max_feature(&self) -> Option<usize> {
        self.nodes.iter().filter(|n| n.feature != LEAF).map(|n| n.feature).max()
    }

    pub fn margin(&self, x: &FeatureMatrix, row: usize) -> f64 {
        let mut n = &self.nodes[0];
        while n.feature != LEAF {
            let v = x.data[n.feature * x.rows + row];
            let left = if v.is_nan() { n.missing_left } else { v <= n.threshold };
            n = &self.nodes[if left { n.left } else { n.right }];
        }
        n.value
    }

    fn margin_binned(&self, binned: &Binned, row: usize) -> f64 {
        let mut n = &self.nodes[0];
        while n.feature != LEAF {
            let left = match binned.bin(row, n.feature) {
                0 => n.missing_left,
                b => b <= n.bin as usize,
            };
            n = &self.nodes[if left { n.left } else { n.right }];
        }
        n.value
    }
}

/// Bin indices, row-major: one byte per value when every feature has at most 256 bins.
enum Store {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

/// A feature matrix cut into quantile bins (bin 0 is missing), row-major; built once per
/// training run and shared by every fit on any subset of its rows.
pub struct Binned {
    pub rows: usize,
    pub cols: usize,
    store: Store,
    /// The same bins column-major (a split reads one feature of every row of a node).
    columns: Store,
    cuts: Vec<Vec<f64>>,
    /// Where each feature's bins start in a flat histogram; the last entry is its length.
    offset: Vec<usize>,
}

impl Binned {
    /// Bins of every row of `x`, the cuts at the quantiles of the rows `cut_rows` (every row
    /// when `None`): the fit rows, so no later row shapes the bins a model is evaluated with.
    pub fn new(x: &FeatureMatrix, cut_rows: Option<&[usize]>, nbins: usize) -> Binned {
        // 256 bins = one byte per value: bin 0 for missing, 255 for values.
        let nbins = if nbins == 256 { 255 } else { nbins.clamp(2, u16::MAX as usize - 1) };
        let cuts: Vec<Vec<f64>> = (0..x.cols())
            .into_par_iter()
            .map(|f| {
                let col = x.column(f);
                let mut v: Vec<f64> = match cut_rows {
                    Some(rows) => rows.iter().map(|&r| col[r]).filter(|v| !v.is_nan()).collect(),
                    None => col.iter().copied().filter(|v| !v.is_nan()).collect(),
                };
                v.sort_unstable_by(f64::total_cmp);
                let mut cuts: Vec<f64> = if v.is_empty() {
                    Vec::new()
                } else {
                    (1..nbins).map(|k| v[(k * v.len() / nbins).min(v.len() - 1)]).collect()
                };
                cuts.dedup();
                // A cut at the maximum would leave nothing on its right.
                if cuts.last() == v.last() {
                    cuts.pop();
                }
                cuts
            })
            .collect();
        let cols = x.cols();
        // Bin of each value: 1 + the number of cuts below it (`<= cut` goes left).
        let bin_of = |f: usize, v: f64| if v.is_nan() { 0 } else { 1 + cuts[f].partition_point(|&k| k < v) };
        // Highest bin index in use.
        let widest = cuts.iter().map(|c| c.len() + 1).max().unwrap_or(0);
        let store = if widest <= u8::MAX as usize {
            Store::U8(bin_rows(x, |f, v| bin_of(f, v) as u8))
        } else {
            Store::U16(bin_rows(x, |f, v| bin_of(f, v) as u16))
        };
        // Histogram layout: a block of 256 bins per feature with byte bins, else each feature's
        // bins (missing, values) back to back.
        let offset: Vec<usize> = match &store {
            Store::U8(_) => (0..=cols).map(|f| f * BYTE_BINS).collect(),
            Store::U16(_) => std::iter::once(0)
                .chain(cuts.iter().scan(0, |end, c| {
                    *end += c.len() + 2;
                    Some(*end)
                }))
                .collect(),
        };
        let columns = match &store {
            Store::U8(b) => Store::U8(transpose(b, x.rows, cols)),
            Store::U16(b) => Store::U16(transpose(b, x.rows, cols)),
        };
        Binned { rows: x.rows, cols, store, columns, cuts, offset }
    }

    /// The rows `rows` (in that order) as a matrix of their own, same cuts: a fit on a sparse
    /// subset (a purged model's customer sample of a large base) then reads contiguous memory
    /// instead of one cache line per row.
    pub fn select(&self, rows: &[usize]) -> Binned {
        fn pick<T: Copy>(b: &[T], rows: &[usize], cols: usize) -> Vec<T> {
            rows.iter().flat_map(|&r| b[r * cols..(r + 1) * cols].iter().copied()).collect()
        }
        let store = match &self.store {
            Store::U8(b) => Store::U8(pick(b, rows, self.cols)),
            Store::U16(b) => Store::U16(pick(b, rows, self.cols)),
        };
        let columns = match &store {
            Store::U8(b) => Store::U8(transpose(b, rows.len(), self.cols)),
            Store::U16(b) => Store::U16(transpose(b, rows.len(), self.cols)),
        };
        Binned {
            rows: rows.len(),
            cols: self.cols,
            store,
            columns,
            cuts: self.cuts.clone(),
            offset: self.offset.clone(),
        }
    }

    #[inline]
    fn bin(&self, row: usize, f: usize) -> usize {
        match &self.columns {
            Store::U8(b) => b[f * self.rows + row] as usize,
            Store::U16(b) => b[f * self.rows + row] as usize,
        }
    }

    fn hist_len(&self) -> usize {
        self.offset[self.cols]
    }
}

/// The bins of every value of `x` (`bin_of(feature, value)`), row-major, in parallel blocks.
fn bin_rows<T: Copy + Default + Send>(x: &FeatureMatrix, bin_of: impl Fn(usize, f64) -> T + Sync) -> Vec<T> {
    const BLOCK: usize = 4096;
    let cols = x.cols();
    let mut bins = vec![T::default(); x.rows * cols];
    bins.par_chunks_mut(BLOCK * cols.max(1)).enumerate().for_each(|(b, out)| {
        for (i, row) in out.chunks_mut(cols.max(1)).enumerate() {
            let r = b * BLOCK + i;
            for (f, slot) in row.iter_mut().enumerate().take(cols) {
                *slot = bin_of(f, x.data[f * x.rows + r]);
            }
        }
    });
    bins
}

/// Row-major `rows x cols` to column-major.
fn transpose<T: Copy + Default + Send + Sync>(b: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); b.len()];
    out.par_chunks_mut(rows.max(1)).enumerate().for_each(|(f, col)| {
        for (r, v) in col.iter_mut().enumerate() {
            *v = b[r * cols + f];
        }
    });
    out
}

/// Gradient and hessian sums of one (feature, bin). No row count: a side's rows are
/// estimated from its share of the node's hessian (as LightGBM does; exact for squared
/// error), which keeps a histogram update to two additions.
#[derive(Clone, Copy, Default)]
struct Bin {
    g: f64,
    h: f64,
}

/// [`Bin`]s of every (feature, bin), flat (see [`Binned::offset`]).
struct Histogram(Vec<Bin>);

/// Bins of one feature when values are stored in one byte (the histogram's stride).
const BYTE_BINS: usize = 256;

/// Sums the gradients of `rows` into `out` for the features `feats` (a range): with byte
/// bins, `out` is their blocks of [`BYTE_BINS`] (an index by a byte needs no bounds check).
fn sum_lane_u8(
    bins: &[u8],
    cols: usize,
    feats: Range<usize>,
    gh: &[[f32; 2]],
    rows: &[u32],
    out: &mut [Bin],
) {
    out.fill(Bin::default());
    let mut blocks: Vec<&mut [Bin; BYTE_BINS]> =
        out.chunks_exact_mut(BYTE_BINS).map(|c| c.try_into().expect("a block of 256 bins")).collect();
    for &r in rows {
        let r = r as usize;
        let [g, h] = gh[r];
        let (g, h) = (f64::from(g), f64::from(h));
        for (block, &b) in blocks.iter_mut().zip(&bins[r * cols + feats.start..r * cols + feats.end]) {
            let bin = &mut block[b as usize];
            bin.g += g;
            bin.h += h;
        }
    }
}

/// [`sum_lane_u8`] with two-byte bins: `out` starts at the first feature's `offset`.
fn sum_lane_u16(
    bins: &[u16],
    cols: usize,
    feats: Range<usize>,
    offset: &[usize],
    gh: &[[f32; 2]],
    rows: &[u32],
    out: &mut [Bin],
) {
    out.fill(Bin::default());
    let base = offset[feats.start];
    for &r in rows {
        let r = r as usize;
        let [g, h] = gh[r];
        let (g, h) = (f64::from(g), f64::from(h));
        for (&o, &b) in offset[feats.clone()].iter().zip(&bins[r * cols + feats.start..r * cols + feats.end])
        {
            let bin = &mut out[o - base + b as usize];
            bin.g += g;
            bin.h += h;
        }
    }
}

impl Histogram {
    /// The histogram of `rows` into `out`, summed in lanes (see the module docs); `lanes`
    /// holds the extra lanes' buffers.
    fn build(binned: &Binned, gh: &[[f32; 2]], rows: &[u32], out: &mut Histogram, lanes: &mut Vec<Vec<Bin>>) {
        let len = binned.hist_len();
        let n_lanes = rows.len().div_ceil(LANE_ROWS).clamp(1, LANES);
        while lanes.len() < n_lanes - 1 {
            lanes.push(vec![Bin::default(); len]);
        }
        let per = rows.len().div_ceil(n_lanes).max(1);
        let mut jobs: Vec<(&[u32], &mut [Bin])> = Vec::with_capacity(n_lanes);
        let mut chunks = rows.chunks(per);
        if let Some(first) = chunks.next() {
            jobs.push((first, &mut out.0[..]));
        }
        for (chunk, buf) in chunks.zip(lanes.iter_mut()) {
            jobs.push((chunk, &mut buf[..]));
        }
        if jobs.is_empty() {
            out.0.fill(Bin::default());
            return;
        }
        let cols = binned.cols;
        let offset = &binned.offset[..=cols];
        let sum = |feats: Range<usize>, chunk: &[u32], buf: &mut [Bin]| match &binned.store {
            Store::U8(b) => sum_lane_u8(b, cols, feats, gh, chunk, buf),
            Store::U16(b) => sum_lane_u16(b, cols, feats, offset, gh, chunk, buf),
        };
        let used = jobs.len() - 1;
        match <[_; 1]>::try_from(jobs) {
            Ok([(chunk, buf)]) => {
                // One lane: its features in parallel blocks instead. Each bin is still summed
                // over the same rows in the same order, so the bits do not change.
                let blocks = rayon::current_num_threads().min(cols);
                if chunk.len() >= FEATURE_BLOCK_ROWS && blocks > 1 {
                    let mut parts: Vec<(Range<usize>, &mut [Bin])> = Vec::with_capacity(blocks);
                    let mut rest = &mut buf[..offset[cols]];
                    let per = cols.div_ceil(blocks);
                    for start in (0..cols).step_by(per) {
                        let end = (start + per).min(cols);
                        let (part, tail) = rest.split_at_mut(offset[end] - offset[start]);
                        parts.push((start..end, part));
                        rest = tail;
                    }
                    parts.into_par_iter().for_each(|(feats, part)| sum(feats, chunk, part));
                } else {
                    sum(0..cols, chunk, buf);
                }
            }
            Err(jobs) => jobs.into_par_iter().for_each(|(chunk, buf)| sum(0..cols, chunk, buf)),
        }
        // Lanes added in order: the same sums whatever ran where.
        for lane in &lanes[..used] {
            for (a, b) in out.0.iter_mut().zip(lane) {
                a.g += b.g;
                a.h += b.h;
            }
        }
    }

    /// `self -= other`: a parent's histogram becomes its other child's.
    fn subtract(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            a.g -= b.g;
            a.h -= b.h;
        }
    }
}

/// Rows whose bin in `col` is `1..=bin` (or 0 when `missing_left`) first, the others after,
/// each side in its original order; returns how many went left.
fn partition<T: Copy + Into<usize>>(
    rows: &mut [u32],
    scratch: &mut [u32],
    col: &[T],
    bin: usize,
    missing_left: bool,
) -> usize {
    let (mut nl, mut nr) = (0, 0);
    for i in 0..rows.len() {
        let r = rows[i];
        let b: usize = col[r as usize].into();
        let left = if b == 0 { missing_left } else { b <= bin };
        // Branch-free: write to both, advance one.
        rows[nl] = r;
        scratch[nr] = r;
        nl += left as usize;
        nr += !left as usize;
    }
    nl
}

/// Rows per block of a partition done in parallel.
const PARTITION_BLOCK: usize = 16_384;

/// [`partition`], with the right side put back after the left one in `rows`: in parallel
/// blocks of [`PARTITION_BLOCK`] rows, each partitioned on its own, then the left parts and
/// the right parts concatenated in block order (the same order as one pass).
fn partition_rows<T: Copy + Into<usize> + Sync>(
    rows: &mut [u32],
    scratch: &mut [u32],
    col: &[T],
    bin: usize,
    missing_left: bool,
) -> usize {
    let n = rows.len();
    if n < 2 * PARTITION_BLOCK {
        let nl = partition(rows, scratch, col, bin, missing_left);
        rows[nl..].copy_from_slice(&scratch[..n - nl]);
        return nl;
    }
    let lefts: Vec<usize> = rows
        .par_chunks_mut(PARTITION_BLOCK)
        .zip(scratch[..n].par_chunks_mut(PARTITION_BLOCK))
        .map(|(r, s)| partition(r, s, col, bin, missing_left))
        .collect();
    let mut nl = 0;
    for (i, &l) in lefts.iter().enumerate() {
        let start = i * PARTITION_BLOCK;
        rows.copy_within(start..start + l, nl);
        nl += l;
    }
    let mut at = nl;
    for (i, &l) in lefts.iter().enumerate() {
        let start = i * PARTITION_BLOCK;
        let nr = PARTITION_BLOCK.min(n - start) - l;
        rows[at..at + nr].copy_from_slice(&scratch[start..start + nr]);
        at += nr;
    }
    nl
}

struct Split {
    gain: f64,
    feature: usize,
    /// Bins `1..=bin` go left.
    bin: u16,
    missing_left: bool,
    /// Gradient and hessian sums of the two sides.
    left: (f64, f64),
    right: (f64, f64),
}

struct Grower<'a> {
    binned: &'a Binned,
    gh: &'a [[f32; 2]],
    params: &'a GbdtConfig,
    /// Features this tree may split on.
    features: &'a [usize],
    nodes: Vec<Node>,
    gain: Vec<f64>,
    /// Histograms no node uses any more, reused (they are large: no allocation per node).
    pool: Vec<Histogram>,
    lanes: Vec<Vec<Bin>>,
}

fn score(g: f64, h: f64, l2: f64) -> f64 {
    g * g / (h + l2)
}

impl Grower<'_> {
    /// The histogram of `rows`, in a pooled buffer.
    fn histogram(&mut self, rows: &[u32]) -> Histogram {
        let len = self.binned.hist_len();
        let mut h = self.pool.pop().unwrap_or_else(|| Histogram(vec![Bin::default(); len]));
        Histogram::build(self.binned, self.gh, rows, &mut h, &mut self.lanes);
        h
    }

    fn best_split(&self, hist: &Histogram, n: usize, g: f64, h: f64) -> Option<Split> {
        let p = self.params;
        let parent = score(g, h, p.l2);
        let best_of = |f: usize| -> Option<Split> {
            let start = self.binned.offset[f];
            // Bins 0 (missing) ..= k - 1 in use; k - 1 is the last value bin.
            let k = self.binned.cuts[f].len() + 1;
            if k < 2 {
                return None;
            }
            let bins = &hist.0[start..=start + k];
            // Rows of a side, estimated from its hessian share.
            let per_h = if h > 0.0 { n as f64 / h } else { 0.0 };
            let count = |side_h: f64| (side_h * per_h).round().max(0.0) as usize;
            let (mg, mh, mc) = (bins[0].g, bins[0].h, count(bins[0].h));
            let mut best: Option<Split> = None;
            let (mut lg, mut lh) = (0.0, 0.0);
            for (j, bin) in bins.iter().enumerate().take(k).skip(1) {
                lg += bin.g;
                lh += bin.h;
                let lc = count(lh);
                let (rg, rh, rc) = (g - mg - lg, h - mh - lh, n.saturating_sub(mc + lc));
                for missing_left in [false, true] {
                    if missing_left && mc == 0 {
                        continue;
                    }
                    let (a, b) = if missing_left {
                        ((lg + mg, lh + mh, lc + mc), (rg, rh, rc))
                    } else {
                        ((lg, lh, lc), (rg + mg, rh + mh, rc + mc))
                    };
                    if a.2 < MIN_LEAF_ROWS || b.2 < MIN_LEAF_ROWS {
                        continue;
                    }
                    if a.1 < p.min_leaf_weight || b.1 < p.min_leaf_weight {
                        continue;
                    }
                    let gain = score(a.0, a.1, p.l2) + score(b.0, b.1, p.l2) - parent;
                    if gain > best.as_ref().map_or(1e-12, |s| s.gain) {
                        best = Some(Split {
                            gain,
                            feature: f,
                            bin: j as u16,
                            missing_left,
                            left: (a.0, a.1),
                            right: (b.0, b.1),
                        });
                    }
                }
            }
            best
        };
        // Highest gain; the lowest feature index on a tie (deterministic).
        let better = |a: Split, b: Split| {
            if b.gain > a.gain || (b.gain == a.gain && b.feature < a.feature) {
                b
            } else {
                a
            }
        };
        self.features.par_iter().with_min_len(4).filter_map(|&f| best_of(f)).reduce_with(better)
    }

    /// Whether a node of `rows` rows at `depth` may still be split (and so needs a histogram).
    fn splittable(&self, rows: usize, depth: usize) -> bool {
        depth < self.params.max_depth && rows >= 2 * MIN_LEAF_ROWS
    }

    /// Grows the subtree of `rows` (gradient and hessian sums `(g, h)`; histogram `hist` when
    /// it may be split), adding each leaf's value to `margin` of its rows when `margin` is
    /// given. `rows` is reordered in place (left rows first, each side in its original
    /// order); `scratch` is at least as long.
    fn grow(
        &mut self,
        rows: &mut [u32],
        scratch: &mut [u32],
        depth: usize,
        (g, h): (f64, f64),
        hist: Option<Histogram>,
        margin: &mut Option<&mut [f64]>,
    ) -> usize {
        let id = self.nodes.len();
        let value = -g / (h + self.params.l2) * self.params.learning_rate;
        self.nodes.push(Node {
            feature: LEAF,
            threshold: 0.0,
            missing_left: false,
            left: 0,
            right: 0,
            value,
            cover: rows.len() as f64,
            bin: 0,
        });
        let split = hist.as_ref().and_then(|hist| self.best_split(hist, rows.len(), g, h));
        let (s, hist) = match (split, hist) {
            (Some(s), Some(hist)) => (s, hist),
            (_, hist) => {
                if let Some(m) = margin.as_deref_mut() {
                    for &r in rows.iter() {
                        m[r as usize] += value;
                    }
                }
                self.pool.extend(hist);
                return id;
            }
        };
        let binned = self.binned;
        let (rows_n, f) = (binned.rows, s.feature);
        // Stable partition keeps row order (and so the sums) deterministic.
        let nl = match &binned.columns {
            Store::U8(b) => partition_rows(
                rows,
                scratch,
                &b[f * rows_n..(f + 1) * rows_n],
                s.bin as usize,
                s.missing_left,
            ),
            Store::U16(b) => partition_rows(
                rows,
                scratch,
                &b[f * rows_n..(f + 1) * rows_n],
                s.bin as usize,
                s.missing_left,
            ),
        };
        let (left, right) = rows.split_at_mut(nl);
        self.gain[s.feature] += s.gain;
        // Histograms: the smaller child's from its rows, the other's by subtraction.
        let (need_l, need_r) =
            (self.splittable(left.len(), depth + 1), self.splittable(right.len(), depth + 1));
        let (hist_l, hist_r) = if need_l || need_r {
            let left_smaller = left.len() <= right.len();
            let small = self.histogram(if left_smaller { left } else { right });
            let mut large = hist;
            large.subtract(&small);
            if left_smaller {
                (Some(small), Some(large))
            } else {
                (Some(large), Some(small))
            }
        } else {
            self.pool.push(hist);
            (None, None)
        };
        let (hist_l, hist_r) = (hist_l.filter(|_| need_l), hist_r.filter(|_| need_r));
        let l = self.grow(left, scratch, depth + 1, s.left, hist_l, margin);
        let r = self.grow(right, scratch, depth + 1, s.right, hist_r, margin);
        self.nodes[id] = Node {
            feature: s.feature,
            threshold: self.binned.cuts[s.feature][s.bin as usize - 1],
            missing_left: s.missing_left,
            left: l,
            right: r,
            value,
            cover: rows.len() as f64,
            bin: s.bin,
        };
        id
    }
}

/// A fitted ensemble before it is wrapped for its task.
pub(crate) struct Boosted {
    pub base: f64,
    pub trees: Vec<Tree>,
    /// Total split gain per feature, normalized to sum to 1.
    pub importance: Vec<f64>,
}

/// Fit `loss` on the rows `train` of `binned` (targets `y`, indexed like `binned`'s rows),
/// early-stopped on `valid`: fitting stops when `early_stopping_rounds` trees in a row have
/// not lowered the validation loss by more than `early_stopping_tolerance` times what the
/// trees before gained on it (scale-free: the Poisson loss is known only up to a constant),
/// and the trees up to the lowest validation loss are kept; without
/// `valid`, exactly `params.iterations` trees. Errors are messages for the caller to wrap.
pub(crate) fn boost(
    loss: Loss,
    params: &GbdtConfig,
    binned: &Binned,
    train: &[usize],
    y: &[f64],
    valid: Option<(&FeatureMatrix, &[f64])>,
) -> Result<Boosted, String> {
    if train.is_empty() || valid.is_some_and(|v| v.0.rows == 0) {
        return Err("no training or validation rows".into());
    }
    if y.len() != binned.rows {
        return Err(format!("{} targets for {} rows", y.len(), binned.rows));
    }
    if train.windows(2).any(|w| w[0] >= w[1]) || train.last().is_some_and(|&r| r >= binned.rows) {
        return Err("training rows must be distinct, ascending and inside the matrix".into());
    }
    let base = loss.base(y, train)?;
    let mut margin = vec![base; binned.rows];
    let mut valid_margin = vec![base; valid.map_or(0, |v| v.0.rows)];
    let mut gh = vec![[0f32; 2]; binned.rows];
    let mut trees = Vec::new();
    let mut gain = vec![0.0; binned.cols];
    let valid_loss = |m: &[f64]| valid.map_or(f64::NAN, |v| loss.loss(v.1, m));
    let mut stop = Stopping::new(valid_loss(&valid_margin), valid.is_some(), params, &gain);
    let train32: Vec<u32> = train.iter().map(|&r| r as u32).collect();
    let mut rows: Vec<u32> = Vec::with_capacity(train.len());
    let mut scratch = vec![0u32; train.len()];
    let (mut pool, mut lanes) = (Vec::new(), Vec::new());
    let sampled = params.subsample < 1.0;
    let all_features: Vec<usize> = (0..binned.cols).collect();
    for it in 0..params.iterations {
        // Gradients of the training rows, in parallel: in place for every row when the
        // training rows are most of them (the others are never read), else compact and then
        // put in place.
        let grad = |r: usize| {
            let (g, h) = loss.grad_hess(y[r], margin[r]);
            [g as f32, h as f32]
        };
        if 2 * train.len() >= binned.rows {
            gh.par_iter_mut().enumerate().with_min_len(4096).for_each(|(r, v)| *v = grad(r));
        } else {
            let fresh: Vec<[f32; 2]> = train.par_iter().with_min_len(4096).map(|&r| grad(r)).collect();
            for (&r, v) in train.iter().zip(fresh) {
                gh[r] = v;
            }
        }
        // This tree's rows (a seeded sample when `subsample` < 1) and features.
        let mut rng = Rng::for_item(params.seed, it as u64);
        rows.clear();
        if sampled {
            rows.extend(train32.iter().copied().filter(|_| rng.uniform() < params.subsample));
        } else {
            rows.extend_from_slice(&train32);
        }
        let features: Vec<usize> = if params.colsample_bytree < 1.0 {
            let k = ((binned.cols as f64 * params.colsample_bytree).ceil() as usize).clamp(1, binned.cols);
            let mut f = all_features.clone();
            for i in 0..k {
                let j = i + rng.below((f.len() - i) as u64) as usize;
                f.swap(i, j);
            }
            f.truncate(k);
            f.sort_unstable();
            f
        } else {
            all_features.clone()
        };
        if rows.is_empty() {
            continue;
        }
        let mut grower = Grower {
            binned,
            gh: &gh,
            params,
            features: &features,
            nodes: Vec::new(),
            gain: gain.clone(),
            pool: std::mem::take(&mut pool),
            lanes: std::mem::take(&mut lanes),
        };
        let sums = rows.iter().fold((0.0, 0.0), |(g, h), &r| {
            let [a, b] = gh[r as usize];
            (g + f64::from(a), h + f64::from(b))
        });
        let hist = grower.splittable(rows.len(), 0).then(|| grower.histogram(&rows));
        let n = rows.len();
        let mut leaf_margin = (!sampled).then_some(&mut margin[..]);
        grower.grow(&mut rows, &mut scratch[..n], 0, sums, hist, &mut leaf_margin);
        gain = grower.gain;
        pool = grower.pool;
        lanes = grower.lanes;
        let tree = Tree { nodes: grower.nodes };
        if sampled {
            // Every row moves, sampled for this tree or not.
            let tree = &tree;
            margin.par_iter_mut().enumerate().for_each(|(r, m)| *m += tree.margin_binned(binned, r));
        }
        if let Some((vx, _)) = valid {
            valid_margin.par_iter_mut().enumerate().for_each(|(r, m)| *m += tree.margin(vx, r));
        }
        trees.push(tree);
        if stop.after(it + 1, valid_loss(&valid_margin), &gain) {
            break;
        }
    }
    trees.truncate(stop.best_trees);
    let total: f64 = stop.best_gain.iter().sum();
    let importance = stop.best_gain.iter().map(|g| if total > 0.0 { g / total } else { 0.0 }).collect();
    Ok(Boosted { base, trees, importance })
}

/// Early stopping on the validation loss (see [`boost`]).
struct Stopping {
    validated: bool,
    rounds: usize,
    tolerance: f64,
    start_loss: f64,
    /// The lowest loss, after how many trees, and the split gains then (what is kept).
    best_loss: f64,
    best_trees: usize,
    best_gain: Vec<f64>,
    /// The last loss that counted as progress, and after how many trees.
    progress_loss: f64,
    progress_trees: usize,
}

impl Stopping {
    fn new(start_loss: f64, validated: bool, params: &GbdtConfig, gain: &[f64]) -> Stopping {
        Stopping {
            validated,
            rounds: params.early_stopping_rounds,
            tolerance: params.early_stopping_tolerance,
            start_loss,
            best_loss: start_loss,
            best_trees: 0,
            best_gain: gain.to_vec(),
            progress_loss: start_loss,
            progress_trees: 0,
        }
    }

    /// Records the loss `l` after `trees` trees (split gains `gain`); whether to stop.
    fn after(&mut self, trees: usize, l: f64, gain: &[f64]) -> bool {
        // The trees kept: those up to the lowest validation loss (all of them unvalidated).
        if !self.validated || l < self.best_loss {
            (self.best_loss, self.best_trees) = (l, trees);
            self.best_gain.copy_from_slice(gain);
        }
        // Fitting goes on while the last `rounds` trees lowered the loss by more than a
        // share of what the trees before gained on it.
        if !self.validated || l < self.progress_loss - self.tolerance * (self.start_loss - self.progress_loss)
        {
            (self.progress_loss, self.progress_trees) = (l, trees);
            false
        } else {
            trees - self.progress_trees >= self.rounds
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_partition_is_the_stable_one_pass_partition() {
        let mut rng = Rng::new(7);
        let col: Vec<u8> = (0..200_000).map(|_| (rng.uniform() * 256.0) as u8).collect();
        // A node's rows: an ascending subset, longer than several blocks, not a multiple.
        let rows: Vec<u32> = (0..200_000u32).filter(|_| rng.uniform() < 0.6).collect();
        for (bin, missing_left) in [(100, false), (100, true), (0, true), (255, false)] {
            let left = |r: &u32| {
                let b = col[*r as usize] as usize;
                if b == 0 {
                    missing_left
                } else {
                    b <= bin
                }
            };
            let expected: Vec<u32> =
                rows.iter().copied().filter(left).chain(rows.iter().copied().filter(|r| !left(r))).collect();
            let mut got = rows.clone();
            let mut scratch = vec![0u32; rows.len()];
            let nl = partition_rows(&mut got, &mut scratch, &col, bin, missing_left);
            assert_eq!(nl, rows.iter().filter(|r| left(r)).count());
            assert_eq!(got, expected, "bin {bin}, missing left {missing_left}");
        }
    }
}
