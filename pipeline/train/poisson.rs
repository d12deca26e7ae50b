//! Gradient-boosted trees with a Poisson loss and a log link, for CLV.
//!
//! Revenue over the horizon is zero for many customers and heavy-tailed for the rest; a
//! squared loss spends its trees on the few largest spenders. The Poisson deviance (the
//! loss LightGBM and XGBoost call `poisson`) models the log of the expected revenue, so a
//! tree's leaf is a multiplicative change and every customer's error counts relative to
//! its level. forust-ml has only log loss and squared loss, hence this small engine.
//!
//! Histogram trees grown depth-wise: every feature cut into at most `nbins` quantile bins
//! (bin 0 holds missing values, which go to whichever side gains more), second-order
//! (Newton) leaf values `-G / (H + l2)` times the learning rate, early stopping on the
//! validation Poisson deviance. Per row, with margin `F` and revenue `y >= 0` (negative
//! revenue counts as 0): gradient `exp(F) - y`, hessian `exp(F + 0.7)`, the hessian
//! inflated as in LightGBM (`poisson_max_delta_step = 0.7`) so early steps stay small.
//! Splits need at least [`MIN_LEAF_ROWS`] rows and `min_leaf_weight` hessian on each side.
//! Deterministic: no sampling, and each feature's histogram is summed in row order.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::GbdtConfig;
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;

/// Fewest training rows a leaf may hold.
pub const MIN_LEAF_ROWS: usize = 20;

/// LightGBM's `poisson_max_delta_step`: the hessian is `exp(F + 0.7)`.
const HESSIAN_SHIFT: f64 = 0.7;

const LEAF: usize = usize::MAX;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Node {
    /// Split feature, [`LEAF`] for a leaf.
    feature: usize,
    /// Values `<= threshold` go left.
    threshold: f64,
    missing_left: bool,
    left: usize,
    right: usize,
    /// Leaf value (margin units, learning rate applied).
    value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn margin(&self, x: &FeatureMatrix, row: usize) -> f64 {
        let mut n = &self.nodes[0];
        while n.feature != LEAF {
            let v = x.data[n.feature * x.rows + row];
            let left = if v.is_nan() { n.missing_left } else { v <= n.threshold };
            n = &self.nodes[if left { n.left } else { n.right }];
        }
        n.value
    }
}

/// A fitted Poisson GBDT: `predict` is `exp(base + sum of tree values)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoissonGbdt {
    base: f64,
    trees: Vec<Tree>,
    /// Total split gain per feature, normalized to sum to 1.
    importance: Vec<f64>,
}

/// Features cut into quantile bins, column-major; bin 0 is missing.
struct Binned {
    cols: usize,
    rows: usize,
    bins: Vec<u16>,
    cuts: Vec<Vec<f64>>,
    /// Where each feature's bins start in a flat histogram; the last entry is its length.
    offset: Vec<usize>,
}

impl Binned {
    fn new(x: &FeatureMatrix, nbins: usize) -> Binned {
        let nbins = nbins.clamp(2, u16::MAX as usize);
        let cuts: Vec<Vec<f64>> = (0..x.cols())
            .into_par_iter()
            .map(|f| {
                let mut v: Vec<f64> = x.column(f).iter().copied().filter(|v| !v.is_nan()).collect();
                v.sort_by(f64::total_cmp);
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
        let bins = (0..cols)
            .into_par_iter()
            .flat_map_iter(|f| {
                let c = &cuts[f];
                x.column(f)
                    .iter()
                    .map(move |&v| if v.is_nan() { 0 } else { 1 + c.partition_point(|&k| k < v) as u16 })
            })
            .collect();
        let mut offset = vec![0];
        for c in &cuts {
            offset.push(offset[offset.len() - 1] + c.len() + 2);
        }
        Binned { cols, rows: x.rows, bins, cuts, offset }
    }

    fn column(&self, f: usize) -> &[u16] {
        &self.bins[f * self.rows..(f + 1) * self.rows]
    }
}

/// Gradient, hessian and row count of one (feature, bin), together (one cache line per
/// update).
#[derive(Clone, Copy, Default)]
struct Bin {
    g: f64,
    h: f64,
    n: f64,
}

/// [`Bin`]s of every (feature, bin), flat (see [`Binned::offset`]).
#[derive(Clone)]
struct Histogram(Vec<Bin>);

/// Rows from which gathering a node's gradients is worth a parallel task.
const PARALLEL_GATHER_ROWS: usize = 16_384;

impl Histogram {
    fn zeros(len: usize) -> Histogram {
        Histogram(vec![Bin::default(); len])
    }

    /// The histogram of `rows`, into `out`: the rows' gradients gathered once, then one
    /// parallel task per feature summing into its own (small, cache-resident) bins in row
    /// order, so the result is deterministic.
    fn build(binned: &Binned, grad: &[f64], hess: &[f64], rows: &[u32], out: &mut Histogram) {
        let gathered: Vec<(f64, f64)> = if rows.len() >= PARALLEL_GATHER_ROWS {
            rows.par_iter().map(|&r| (grad[r as usize], hess[r as usize])).collect()
        } else {
            rows.iter().map(|&r| (grad[r as usize], hess[r as usize])).collect()
        };
        let mut features = Vec::with_capacity(binned.cols);
        let mut rest = &mut out.0[..];
        for f in 0..binned.cols {
            let (bins, tail) = rest.split_at_mut(binned.offset[f + 1] - binned.offset[f]);
            features.push((f, bins));
            rest = tail;
        }
        features.into_par_iter().for_each(|(f, bins)| {
            bins.fill(Bin::default());
            let col = binned.column(f);
            for (&r, &(g, h)) in rows.iter().zip(&gathered) {
                let bin = &mut bins[col[r as usize] as usize];
                bin.g += g;
                bin.h += h;
                bin.n += 1.0;
            }
        });
    }

    /// `self -= other`: a parent's histogram becomes its other child's.
    fn subtract(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            a.g -= b.g;
            a.h -= b.h;
            a.n -= b.n;
        }
    }
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
    grad: &'a [f64],
    hess: &'a [f64],
    params: &'a GbdtConfig,
    nodes: Vec<Node>,
    gain: Vec<f64>,
    /// Histograms no node uses any more, reused (they are large: no allocation per node).
    pool: Vec<Histogram>,
}

fn score(g: f64, h: f64, l2: f64) -> f64 {
    g * g / (h + l2)
}

impl Grower<'_> {
    /// The histogram of `rows`, in a pooled buffer.
    fn histogram(&mut self, rows: &[u32]) -> Histogram {
        let len = self.binned.offset[self.binned.cols];
        let mut h = self.pool.pop().unwrap_or_else(|| Histogram::zeros(len));
        Histogram::build(self.binned, self.grad, self.hess, rows, &mut h);
        h
    }

    fn best_split(&self, hist: &Histogram, n: usize, g: f64, h: f64) -> Option<Split> {
        let p = self.params;
        let parent = score(g, h, p.l2);
        (0..self.binned.cols)
            .into_par_iter()
            .filter_map(|f| {
                let (start, end) = (self.binned.offset[f], self.binned.offset[f + 1]);
                // Bins 0 (missing) ..= k - 1 in use; k - 1 is the last value bin.
                let k = end - start - 1;
                if k < 2 {
                    return None;
                }
                let bins = &hist.0[start..end];
                let (mg, mh, mc) = (bins[0].g, bins[0].h, bins[0].n.round() as usize);
                let mut best: Option<Split> = None;
                let (mut lg, mut lh, mut lc) = (0.0, 0.0, 0usize);
                for (j, bin) in bins.iter().enumerate().take(k).skip(1) {
                    lg += bin.g;
                    lh += bin.h;
                    lc += bin.n.round() as usize;
                    let (rg, rh, rc) = (g - mg - lg, h - mh - lh, n - mc - lc);
                    for missing_left in [false, true] {
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
            })
            // Highest gain; the lowest feature index on a tie (deterministic).
            .reduce_with(
                |a, b| if b.gain > a.gain || (b.gain == a.gain && b.feature < a.feature) { b } else { a },
            )
    }

    /// Whether a node of `rows` rows at `depth` may still be split (and so needs a histogram).
    fn splittable(&self, rows: usize, depth: usize) -> bool {
        depth < self.params.max_depth && rows >= 2 * MIN_LEAF_ROWS
    }

    /// Grows the subtree of `rows` (gradient and hessian sums `(g, h)`; histogram `hist` when
    /// it may be split), adding
    /// each leaf's value to `margin` of its rows. `rows` is reordered in place (left rows
    /// first, each side in its original order); `scratch` is at least as long.
    fn grow(
        &mut self,
        rows: &mut [u32],
        scratch: &mut [u32],
        depth: usize,
        (g, h): (f64, f64),
        hist: Option<Histogram>,
        margin: &mut [f64],
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
        });
        let split = hist.as_ref().and_then(|hist| self.best_split(hist, rows.len(), g, h));
        let (s, hist) = match (split, hist) {
            (Some(s), Some(hist)) => (s, hist),
            (_, hist) => {
                for &r in rows.iter() {
                    margin[r as usize] += value;
                }
                self.pool.extend(hist);
                return id;
            }
        };
        let col = self.binned.column(s.feature);
        let goes_left = |r: u32| match col[r as usize] {
            0 => s.missing_left,
            b => b <= s.bin,
        };
        // Stable partition keeps row order (and so the sums) deterministic.
        let (mut nl, mut nr) = (0, 0);
        for i in 0..rows.len() {
            let r = rows[i];
            if goes_left(r) {
                rows[nl] = r;
                nl += 1;
            } else {
                scratch[nr] = r;
                nr += 1;
            }
        }
        rows[nl..].copy_from_slice(&scratch[..nr]);
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
        let l = self.grow(left, scratch, depth + 1, s.left, hist_l.filter(|_| need_l), margin);
        let r = self.grow(right, scratch, depth + 1, s.right, hist_r.filter(|_| need_r), margin);
        self.nodes[id] = Node {
            feature: s.feature,
            threshold: self.binned.cuts[s.feature][s.bin as usize - 1],
            missing_left: s.missing_left,
            left: l,
            right: r,
            value,
        };
        id
    }
}

/// Mean Poisson deviance up to a constant: `exp(F) - y F`.
fn loss(y: &[f64], margin: &[f64]) -> f64 {
    y.iter().zip(margin).map(|(&y, &f)| f.exp() - y.max(0.0) * f).sum::<f64>() / y.len().max(1) as f64
}

impl PoissonGbdt {
    /// Fit on `x`/`y`, early-stopped on `valid` (Poisson deviance; the trees up to the best
    /// iteration are kept); without `valid`, exactly `params.iterations` trees.
    pub fn fit(
        params: &GbdtConfig,
        x: &FeatureMatrix,
        y: &[f64],
        valid: Option<(&FeatureMatrix, &[f64])>,
    ) -> Result<PoissonGbdt> {
        let err = |message: &str| Error::Model { model: "clv poisson gbdt".into(), message: message.into() };
        if x.rows == 0 || valid.is_some_and(|v| v.0.rows == 0) {
            return Err(err("no training or validation rows"));
        }
        let mean = y.iter().map(|v| v.max(0.0)).sum::<f64>() / y.len() as f64;
        if !(mean > 0.0 && mean.is_finite()) {
            return Err(err("the training revenue is zero everywhere (a Poisson model needs some)"));
        }
        let base = mean.ln();
        let binned = Binned::new(x, params.nbins as usize);
        let mut margin = vec![base; x.rows];
        let mut valid_margin = vec![base; valid.map_or(0, |v| v.0.rows)];
        let (mut grad, mut hess) = (vec![0.0; x.rows], vec![0.0; x.rows]);
        let mut trees = Vec::new();
        let mut gain = vec![0.0; x.cols()];
        let valid_loss = |m: &[f64]| valid.map_or(f64::NAN, |v| loss(v.1, m));
        let (mut best_loss, mut best_trees, mut best_gain) = (valid_loss(&valid_margin), 0, gain.clone());
        let (mut rows, mut scratch): (Vec<u32>, Vec<u32>) = ((0..x.rows as u32).collect(), vec![0; x.rows]);
        let mut pool = Vec::new();
        for it in 0..params.iterations {
            let shift = HESSIAN_SHIFT.exp();
            grad.par_iter_mut().zip(&mut hess).zip(&margin).zip(y).for_each(|(((g, h), &f), &y)| {
                let mu = f.exp();
                *g = mu - y.max(0.0);
                *h = mu * shift;
            });
            let mut grower = Grower {
                binned: &binned,
                grad: &grad,
                hess: &hess,
                params,
                nodes: Vec::new(),
                gain: gain.clone(),
                pool: std::mem::take(&mut pool),
            };
            // Every tree starts from the rows in order (a deterministic summation order).
            rows.iter_mut().enumerate().for_each(|(i, r)| *r = i as u32);
            let hist = grower.splittable(rows.len(), 0).then(|| grower.histogram(&rows));
            let sums = (grad.iter().sum(), hess.iter().sum());
            grower.grow(&mut rows, &mut scratch, 0, sums, hist, &mut margin);
            gain = grower.gain;
            pool = grower.pool;
            let tree = Tree { nodes: grower.nodes };
            if let Some((vx, _)) = valid {
                valid_margin.par_iter_mut().enumerate().for_each(|(r, m)| *m += tree.margin(vx, r));
            }
            trees.push(tree);
            let l = valid_loss(&valid_margin);
            if valid.is_none() || l < best_loss {
                (best_loss, best_trees, best_gain) = (l, it + 1, gain.clone());
            } else if it + 1 - best_trees >= params.early_stopping_rounds {
                break;
            }
        }
        trees.truncate(best_trees);
        let total: f64 = best_gain.iter().sum();
        let importance = best_gain.iter().map(|g| if total > 0.0 { g / total } else { 0.0 }).collect();
        Ok(PoissonGbdt { base, trees, importance })
    }

    /// Expected revenue, one per row.
    pub fn predict(&self, x: &FeatureMatrix) -> Vec<f64> {
        (0..x.rows)
            .into_par_iter()
            .map(|r| (self.base + self.trees.iter().map(|t| t.margin(x, r)).sum::<f64>()).exp())
            .collect()
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// Total split gain per feature, normalized to sum to 1.
    pub fn importance_gain(&self, n_features: usize) -> Vec<f64> {
        (0..n_features).map(|i| self.importance.get(i).copied().unwrap_or(0.0)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Revenue with a multiplicative effect of `a`, none of `b`, zero for about half the rows,
    /// and `a` missing on some rows.
    fn toy(n: usize, seed: u64) -> (FeatureMatrix, Vec<f64>, Vec<f64>) {
        let mut r = Rng::new(seed);
        let mut a: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let b: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let mean: Vec<f64> = a.iter().map(|&a| (3.0 * a).exp() * 5.0).collect();
        let y =
            mean.iter().map(|&m| if r.uniform() < 0.5 { 0.0 } else { 2.0 * m * r.uniform() * 2.0 }).collect();
        for v in a.iter_mut().step_by(11) {
            *v = f64::NAN;
        }
        let mut data = a;
        data.extend(b);
        (FeatureMatrix { names: vec!["a".into(), "b".into()], rows: n, data }, y, mean)
    }

    #[test]
    fn learns_the_mean_revenue_deterministically_and_round_trips() {
        let (x, y, _) = toy(4000, 1);
        let (xv, yv, mean_v) = toy(2000, 2);
        let params = GbdtConfig { iterations: 300, learning_rate: 0.1, ..GbdtConfig::default() };
        let m = PoissonGbdt::fit(&params, &x, &y, Some((&xv, &yv))).unwrap();
        assert!(m.n_trees() > 5 && m.n_trees() <= 300, "{}", m.n_trees());
        let p = m.predict(&xv);
        assert!(p.iter().all(|v| v.is_finite() && *v > 0.0));
        // Ranks like the true mean, and the overall level is right (Poisson keeps the sum).
        let known: Vec<usize> = (0..xv.rows).filter(|&r| !xv.data[r].is_nan()).collect();
        let pick = |v: &[f64]| known.iter().map(|&r| v[r]).collect::<Vec<_>>();
        let rho = crate::metrics::spearman(&pick(&mean_v), &pick(&p));
        assert!(rho > 0.9, "spearman {rho}");
        let (sp, sy) = (m.predict(&x).iter().sum::<f64>(), y.iter().sum::<f64>());
        assert!((sp / sy - 1.0).abs() < 0.05, "{sp} vs {sy}");
        let imp = m.importance_gain(2);
        assert!(imp[0] > 0.8, "{imp:?}");
        assert_eq!(m, PoissonGbdt::fit(&params, &x, &y, Some((&xv, &yv))).unwrap());
        let back: PoissonGbdt = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.predict(&xv), p);
        // A fixed tree count refits exactly that many trees.
        let n = PoissonGbdt::fit(&GbdtConfig { iterations: 7, ..params.clone() }, &x, &y, None).unwrap();
        assert_eq!(n.n_trees(), 7);
    }

    #[test]
    fn no_revenue_is_a_clear_error() {
        let (x, _, _) = toy(100, 3);
        let err = PoissonGbdt::fit(&GbdtConfig::default(), &x, &[0.0; 100], None).unwrap_err();
        assert!(err.to_string().contains("zero everywhere"), "{err}");
    }
}
