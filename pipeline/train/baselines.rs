//! Reference models trained on the same split as the GBDT, for the comparison table.
//!
//! Churn: logistic regression (linfa-logistic, on signed-log1p standardized features),
//! a decision tree (linfa-trees; probabilities are the churn share of the training rows in
//! each leaf) and a random forest (smartcore; a regression forest on the 0/1 label, i.e. a
//! probability forest). CLV: the same random forest on revenue, and the naive "revenue of the
//! last horizon repeats" heuristic.

use std::collections::HashMap;

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use linfa_trees::{DecisionTree, TreeNode};
use ndarray::{Array1, Array2};
use smartcore::ensemble::random_forest_regressor::{RandomForestRegressor, RandomForestRegressorParameters};
use smartcore::linalg::basic::matrix::DenseMatrix;

use crate::config::BaselineConfig;
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;
use crate::rng::Rng;
use crate::train::linear::Scaler;

/// At most `max_rows` of the rows `rows` of (x, y), drawn without replacement with `seed`
/// (all of them when there are fewer).
pub fn sample(
    x: &FeatureMatrix,
    rows: &[usize],
    y: &[f64],
    max_rows: usize,
    seed: u64,
) -> (FeatureMatrix, Vec<f64>) {
    let idx: Vec<usize> =
        Rng::new(seed).sample_indices(rows.len(), max_rows).iter().map(|&i| rows[i]).collect();
    (x.select_rows(&idx), idx.iter().map(|&i| y[i]).collect())
}

/// One baseline's predictions on each evaluation matrix, in the order given.
pub struct BaselinePredictions {
    pub name: String,
    pub predictions: Vec<Vec<f64>>,
}

fn model_err(model: &str, e: impl std::fmt::Display) -> Error {
    Error::Model { model: model.into(), message: e.to_string() }
}

/// The scaled training features as linfa wants them.
fn scaled(scaler: &Scaler, x: &FeatureMatrix) -> Array2<f64> {
    Array2::from_shape_fn((x.rows, x.cols()), |(r, c)| scaler.z(c, x.get(r, c)))
}

fn to_array(x: &FeatureMatrix) -> Array2<f64> {
    Array2::from_shape_fn((x.rows, x.cols()), |(r, c)| x.get(r, c))
}

fn to_dense(x: &FeatureMatrix) -> Result<DenseMatrix<f64>> {
    DenseMatrix::new(x.rows, x.cols(), x.data.clone(), true).map_err(|e| model_err("random_forest", e))
}

fn labels(y: &[f64]) -> Array1<usize> {
    y.iter().map(|&v| usize::from(v > 0.5)).collect()
}

pub fn logistic_regression(
    cfg: &BaselineConfig,
    x: &FeatureMatrix,
    y: &[f64],
    eval: &[&FeatureMatrix],
) -> Result<BaselinePredictions> {
    let scaler = Scaler::fit(x);
    let ds = Dataset::new(scaled(&scaler, x), labels(y));
    let model = LogisticRegression::default()
        .max_iterations(cfg.logistic_max_iterations)
        .fit(&ds)
        .map_err(|e| model_err("logistic_regression", e))?;
    // linfa reports the probability of its "positive" label; make it P(churn = 1).
    let positive_is_churn = model.labels().pos.class == 1;
    let predictions = eval
        .iter()
        .map(|m| {
            let p = model.predict_probabilities(&scaled(&scaler, m));
            p.iter().map(|&q| if positive_is_churn { q } else { 1.0 - q }).collect()
        })
        .collect();
    Ok(BaselinePredictions { name: "logistic_regression".into(), predictions })
}

/// Leaf reached by a row. linfa-trees partitions its training rows with `x <= split` going
/// left (its own `predict` uses `<`); we follow the partition it was fitted with.
fn leaf_of<'a>(node: &'a TreeNode<f64, usize>, x: &FeatureMatrix, r: usize) -> &'a TreeNode<f64, usize> {
    let mut node = node;
    while !node.is_leaf() {
        let (feature, value, _) = node.split();
        let children = node.children();
        let next = if x.get(r, feature) <= value { children[0] } else { children[1] };
        match next {
            Some(child) => node = child,
            None => break,
        }
    }
    node
}

pub fn decision_tree(
    cfg: &BaselineConfig,
    x: &FeatureMatrix,
    y: &[f64],
    eval: &[&FeatureMatrix],
) -> Result<BaselinePredictions> {
    // Balanced class weights: linfa prunes subtrees whose leaves all predict the same class,
    // which on rare churn would collapse the tree to its root. Leaf probabilities below are
    // still the unweighted churn shares of the training rows.
    let pos = y.iter().filter(|&&v| v > 0.5).count().max(1) as f32;
    let neg = (y.len() as f32 - pos).max(1.0);
    let weights: Array1<f32> = y
        .iter()
        .map(|&v| if v > 0.5 { y.len() as f32 / (2.0 * pos) } else { y.len() as f32 / (2.0 * neg) })
        .collect();
    let ds = Dataset::new(to_array(x), labels(y)).with_weights(weights);
    // linfa-trees 0.8 asserts inside its Gini impurity on some inputs (a 20,000-customer
    // generated log cut at one rolling origin): a failed comparison model is an error, not a
    // crash of the training run.
    let fitted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        DecisionTree::params().max_depth(Some(cfg.decision_tree_max_depth)).min_weight_leaf(20.0).fit(&ds)
    }))
    .map_err(|_| Error::Model {
        model: "decision_tree".into(),
        message: "linfa-trees panicked while fitting (an internal assertion)".into(),
    })?;
    let tree = fitted.map_err(|e| model_err("decision_tree", e))?;
    // Leaf churn shares from the training rows (what predict_proba means for a tree).
    let mut leaves: HashMap<*const TreeNode<f64, usize>, (f64, f64)> = HashMap::new();
    let root = tree.root_node();
    for (r, &label) in y.iter().enumerate() {
        let e = leaves.entry(leaf_of(root, x, r) as *const _).or_insert((0.0, 0.0));
        e.0 += label;
        e.1 += 1.0;
    }
    let base = y.iter().sum::<f64>() / y.len().max(1) as f64;
    let predictions = eval
        .iter()
        .map(|m| {
            (0..m.rows)
                .map(|r| leaves.get(&(leaf_of(root, m, r) as *const _)).map_or(base, |(pos, n)| pos / n))
                .collect()
        })
        .collect();
    Ok(BaselinePredictions { name: "decision_tree".into(), predictions })
}

/// Random forest regression (on 0/1 for churn: a probability forest).
pub fn random_forest(
    cfg: &BaselineConfig,
    seed: u64,
    x: &FeatureMatrix,
    y: &[f64],
    eval: &[&FeatureMatrix],
) -> Result<BaselinePredictions> {
    let params = RandomForestRegressorParameters::default()
        .with_n_trees(cfg.random_forest_trees)
        .with_max_depth(cfg.random_forest_max_depth)
        .with_min_samples_leaf(cfg.random_forest_min_samples_leaf)
        .with_seed(seed);
    let model: RandomForestRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>> =
        RandomForestRegressor::fit(&to_dense(x)?, &y.to_vec(), params)
            .map_err(|e| model_err("random_forest", e))?;
    let mut predictions = Vec::new();
    for m in eval {
        predictions.push(model.predict(&to_dense(m)?).map_err(|e| model_err("random_forest", e))?);
    }
    Ok(BaselinePredictions { name: "random_forest".into(), predictions })
}

/// CLV heuristic: the revenue of the last `horizon` days repeats over the next `horizon`.
pub fn last_period_revenue(column: &str, eval: &[&FeatureMatrix]) -> Option<BaselinePredictions> {
    from_feature(&format!("last_period_revenue ({column})"), column, eval)
}

/// A model whose prediction is one feature column as it is (e.g. the BG/NBD probability of
/// no purchase in the horizon); `None` when the features do not have it.
pub fn from_feature(name: &str, column: &str, eval: &[&FeatureMatrix]) -> Option<BaselinePredictions> {
    let c = eval.first()?.names.iter().position(|n| n == column)?;
    Some(BaselinePredictions {
        name: name.into(),
        predictions: eval.iter().map(|m| m.column(c).to_vec()).collect(),
    })
}

/// The BG/NBD + Gamma-Gamma baseline's name (churn: P(no purchase in the horizon); CLV:
/// expected purchases x expected spend).
pub const BGNBD_BASELINE: &str = "bgnbd_gamma_gamma";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_rank_a_simple_signal() {
        // y = 1 exactly when feature a > 0.5; b is noise.
        let mut r = Rng::new(3);
        let n = 2000;
        let a: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let b: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let y: Vec<f64> = a.iter().map(|&v| f64::from(u8::from(v > 0.5))).collect();
        let mut data = a;
        data.extend(b);
        let x = FeatureMatrix { names: vec!["a".into(), "b".into()], rows: n, data };
        let cfg = BaselineConfig { random_forest_trees: 10, ..BaselineConfig::default() };
        for p in [
            logistic_regression(&cfg, &x, &y, &[&x]).unwrap(),
            decision_tree(&cfg, &x, &y, &[&x]).unwrap(),
            random_forest(&cfg, 1, &x, &y, &[&x]).unwrap(),
        ] {
            let auc = crate::metrics::roc_auc(&y, &p.predictions[0]);
            assert!(auc > 0.95, "{}: auc {auc}", p.name);
            assert!(p.predictions[0].iter().all(|v| (0.0..=1.0).contains(v)), "{}", p.name);
        }
    }
}
