//! Gradient-boosted trees with a Poisson loss and a log link, for CLV.
//!
//! Revenue over the horizon is zero for many customers and heavy-tailed for the rest; a
//! squared loss spends its trees on the few largest spenders. The Poisson deviance (the
//! loss LightGBM and XGBoost call `poisson`) models the log of the expected revenue, so a
//! tree's leaf is a multiplicative change and every customer's error counts relative to
//! its level.
//!
//! Fitted by fidelis's histogram engine ([`super::hist`], [`Loss::Poisson`]), early-stopped
//! on the validation Poisson deviance. Per row, with margin `F` and revenue `y >= 0`
//! (negative revenue counts as 0): gradient `exp(F) - y`, hessian `exp(F + 0.7)`, the
//! hessian inflated as in LightGBM (`poisson_max_delta_step = 0.7`) so early steps stay small.

use serde::{Deserialize, Serialize};

use super::forest::FlatForest;
use super::hist::{self, Binned, Loss, Tree};
use crate::config::GbdtConfig;
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;

/// A fitted Poisson GBDT: `predict` is `exp(base + sum of tree values)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "PoissonFile", into = "PoissonFile")]
pub struct PoissonGbdt {
    base: f64,
    trees: Vec<Tree>,
    /// Total split gain per feature, normalized to sum to 1.
    importance: Vec<f64>,
    /// The trees compiled for prediction.
    flat: FlatForest,
}

/// What the artifact holds.
#[derive(Serialize, Deserialize)]
struct PoissonFile {
    base: f64,
    trees: Vec<Tree>,
    importance: Vec<f64>,
}

impl TryFrom<PoissonFile> for PoissonGbdt {
    type Error = String;

    /// Checked before compiling (see [`super::hist::check_trees`]).
    fn try_from(f: PoissonFile) -> std::result::Result<Self, String> {
        super::hist::check_trees(f.base, &f.trees, super::hist::MAX_LOG_VALUE)?;
        let flat = FlatForest::compile_hist(f.base, &f.trees);
        Ok(PoissonGbdt { base: f.base, trees: f.trees, importance: f.importance, flat })
    }
}

impl PoissonGbdt {
    /// The largest feature index a split reads.
    pub fn max_feature(&self) -> Option<usize> {
        self.trees.iter().filter_map(super::hist::Tree::max_feature).max()
    }
}

impl From<PoissonGbdt> for PoissonFile {
    fn from(m: PoissonGbdt) -> Self {
        PoissonFile { base: m.base, trees: m.trees, importance: m.importance }
    }
}

impl PartialEq for PoissonGbdt {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base && self.trees == other.trees && self.importance == other.importance
    }
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
        let binned = Binned::new(x, None, params.nbins as usize);
        let rows: Vec<usize> = (0..x.rows).collect();
        Self::fit_binned(params, &binned, &rows, y, valid)
    }

    /// Fit on the rows `rows` of a shared binned matrix (`y` indexed like its rows).
    pub fn fit_binned(
        params: &GbdtConfig,
        binned: &Binned,
        rows: &[usize],
        y: &[f64],
        valid: Option<(&FeatureMatrix, &[f64])>,
    ) -> Result<PoissonGbdt> {
        let b = hist::boost(Loss::Poisson, params, binned, rows, y, valid)
            .map_err(|message| Error::Model { model: "clv poisson gbdt".into(), message })?;
        let flat = FlatForest::compile_hist(b.base, &b.trees);
        Ok(PoissonGbdt { base: b.base, trees: b.trees, importance: b.importance, flat })
    }

    /// Expected revenue, one per row.
    pub fn predict(&self, x: &FeatureMatrix) -> Vec<f64> {
        self.flat.predict(x).into_iter().map(f64::exp).collect()
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// Exact SHAP values on the link's scale, row-major `rows x (cols + 1)` (the expected value
    /// last): each row adds up to the log of the predicted revenue. None when the trees do not
    /// record their covers (models trained before fidelis stored them).
    pub fn shap(&self, x: &FeatureMatrix) -> Option<Vec<f64>> {
        super::shap::covers_known(&self.trees)
            .then(|| super::shap::tree_shap(self.base, &self.trees, x, None))
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
