//! Gradient-boosted trees behind one small trait of ours, so the engine can be swapped
//! (forust-ml, chosen on measurements: README "Models"; our own histogram GBDT if benchmarks call for it).

use forust_ml::gradientbooster::ImportanceMethod;
use forust_ml::metric::Metric;
use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use serde::{Deserialize, Serialize};

use crate::config::GbdtConfig;
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;
use crate::math::sigmoid;
use crate::train::forest::FlatForest;

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Binary log loss; `predict` returns the probability of churn.
    Churn,
    /// Squared error; `predict` returns revenue over the horizon.
    Clv,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Churn => "churn",
            Task::Clv => "clv",
        }
    }
}

/// A fitted gradient-boosted tree ensemble.
pub trait Gbdt: Sized + Send + Sync {
    /// Engine name recorded in the artifact.
    const ENGINE: &'static str;

    /// Fit on `x`/`y`, early-stopped on `valid` (validation metric: log loss for churn,
    /// RMSE for CLV); without `valid`, exactly `params.iterations` trees (refits whose tree
    /// count was chosen elsewhere: no labels of the rows they predict may pick it). Seeded and
    /// deterministic.
    fn fit(
        params: &GbdtConfig,
        task: Task,
        x: &FeatureMatrix,
        y: &[f64],
        valid: Option<(&FeatureMatrix, &[f64])>,
    ) -> Result<Self>;

    /// Probability of churn (churn task) or predicted value (CLV task), one per row.
    fn predict(&self, x: &FeatureMatrix) -> Vec<f64>;

    /// Per-prediction feature contributions in margin units (log-odds for churn), row-major
    /// `rows x (cols + 1)`, the last column being the bias; each row sums to the margin.
    fn contributions(&self, x: &FeatureMatrix) -> Vec<f64>;

    /// `predict` and `contributions` together (engines may share the tree walk).
    fn predict_with_contributions(&self, x: &FeatureMatrix) -> (Vec<f64>, Vec<f64>) {
        (self.predict(x), self.contributions(x))
    }

    /// Total split gain per feature, normalized to sum to 1.
    fn importance_gain(&self, n_features: usize) -> Vec<f64>;

    /// Trees used for prediction (after early stopping).
    fn n_trees(&self) -> usize;

    fn to_json(&self) -> Result<String>;
    fn from_json(s: &str) -> Result<Self>;
}

/// forust-ml's `GradientBooster` (pure Rust, XGBoost-style histogram trees) for fitting,
/// and its trees compiled into a [`FlatForest`] for prediction (same numbers, faster).
pub struct ForustGbdt {
    task: Task,
    booster: GradientBooster,
    flat: FlatForest,
}

#[derive(Serialize, Deserialize)]
struct ForustFile {
    task: Task,
    booster: serde_json::Value,
}

fn matrix(x: &FeatureMatrix) -> Matrix<'_, f64> {
    Matrix::new(&x.data, x.rows, x.cols())
}

impl Gbdt for ForustGbdt {
    const ENGINE: &'static str = "forust-ml";

    fn fit(
        params: &GbdtConfig,
        task: Task,
        x: &FeatureMatrix,
        y: &[f64],
        valid: Option<(&FeatureMatrix, &[f64])>,
    ) -> Result<Self> {
        let model_err = |message: String| Error::Model { model: format!("{} gbdt", task.name()), message };
        if x.rows == 0 || valid.is_some_and(|v| v.0.rows == 0) {
            return Err(model_err("no training or validation rows".into()));
        }
        let (objective, metric) = match task {
            Task::Churn => (ObjectiveType::LogLoss, Metric::LogLoss),
            Task::Clv => (ObjectiveType::SquaredLoss, Metric::RootMeanSquaredError),
        };
        let mut booster = GradientBooster::default()
            .set_objective_type(objective)
            .set_iterations(params.iterations)
            .set_learning_rate(params.learning_rate as f32)
            .set_max_depth(params.max_depth)
            .set_min_leaf_weight(params.min_leaf_weight as f32)
            .set_l2(params.l2 as f32)
            .set_nbins(params.nbins)
            .set_subsample(params.subsample as f32)
            .set_colsample_bytree(params.colsample_bytree)
            .set_seed(params.seed)
            .set_parallel(true)
            .set_initialize_base_score(true);
        if valid.is_some() {
            // forust then predicts with the best iteration on `valid`, stopped early or not.
            booster = booster
                .set_evaluation_metric(Some(metric))
                .set_early_stopping_rounds(Some(params.early_stopping_rounds));
        }
        let weights = vec![1.0; x.rows];
        let valid_weights = valid.map(|v| vec![1.0; v.0.rows]);
        let eval = valid.zip(valid_weights.as_deref()).map(|((vx, vy), w)| vec![(matrix(vx), vy, w)]);
        booster.fit(&matrix(x), y, &weights, eval).map_err(|e| model_err(e.to_string()))?;
        Ok(ForustGbdt::new(task, booster))
    }

    fn predict(&self, x: &FeatureMatrix) -> Vec<f64> {
        self.output(self.flat.predict(x))
    }

    fn contributions(&self, x: &FeatureMatrix) -> Vec<f64> {
        self.flat.predict_with_contributions(x).1
    }

    fn predict_with_contributions(&self, x: &FeatureMatrix) -> (Vec<f64>, Vec<f64>) {
        let (margin, contributions) = self.flat.predict_with_contributions(x);
        (self.output(margin), contributions)
    }

    fn importance_gain(&self, n_features: usize) -> Vec<f64> {
        let imp = self.booster.calculate_feature_importance(ImportanceMethod::TotalGain, true);
        (0..n_features).map(|i| imp.get(&i).copied().unwrap_or(0.0) as f64).collect()
    }

    fn n_trees(&self) -> usize {
        self.booster.prediction_iteration.unwrap_or(self.booster.trees.len())
    }

    fn to_json(&self) -> Result<String> {
        let booster = self.booster.json_dump().map_err(|e| Error::Model {
            model: "forust".into(),
            message: format!("cannot serialize: {e}"),
        })?;
        let booster: serde_json::Value = serde_json::from_str(&booster)
            .map_err(|source| Error::Json { context: "re-reading the forust model".into(), source })?;
        serde_json::to_string(&ForustFile { task: self.task, booster })
            .map_err(|source| Error::Json { context: "writing the model".into(), source })
    }

    fn from_json(s: &str) -> Result<Self> {
        let file: ForustFile = serde_json::from_str(s)
            .map_err(|source| Error::Json { context: "reading the model".into(), source })?;
        let booster = GradientBooster::from_json(&file.booster.to_string())
            .map_err(|e| Error::Model { model: "forust".into(), message: format!("cannot load: {e}") })?;
        Ok(ForustGbdt::new(file.task, booster))
    }
}

impl ForustGbdt {
    fn new(task: Task, booster: GradientBooster) -> Self {
        let flat = FlatForest::compile(&booster);
        ForustGbdt { task, booster, flat }
    }

    /// Margins to the task's output (probability for churn).
    fn output(&self, margin: Vec<f64>) -> Vec<f64> {
        match self.task {
            Task::Churn => margin.into_iter().map(sigmoid).collect(),
            Task::Clv => margin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use forust_ml::gradientbooster::ContributionsMethod;

    fn toy(n: usize, seed: u64) -> (FeatureMatrix, Vec<f64>) {
        let mut r = Rng::new(seed);
        let a: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let b: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let y = a
            .iter()
            .zip(&b)
            .map(|(x, z)| if r.uniform() < sigmoid(4.0 * x - 2.0 * z - 1.0) { 1.0 } else { 0.0 })
            .collect();
        let mut data = a;
        data.extend(b);
        (FeatureMatrix { names: vec!["a".into(), "b".into()], rows: n, data }, y)
    }

    #[test]
    fn fit_predict_roundtrip_and_determinism() {
        let (x, y) = toy(3000, 1);
        let (xv, yv) = toy(1000, 2);
        let params = GbdtConfig { iterations: 200, learning_rate: 0.1, ..GbdtConfig::default() };
        let m = ForustGbdt::fit(&params, Task::Churn, &x, &y, Some((&xv, &yv))).unwrap();
        let p = m.predict(&xv);
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        let auc = crate::metrics::roc_auc(&yv, &p);
        assert!(auc > 0.7, "auc {auc}");
        // Same seed, same data: identical model.
        let m2 = ForustGbdt::fit(&params, Task::Churn, &x, &y, Some((&xv, &yv))).unwrap();
        assert_eq!(p, m2.predict(&xv));
        // JSON round trip predicts the same.
        let back = ForustGbdt::from_json(&m.to_json().unwrap()).unwrap();
        assert_eq!(p, back.predict(&xv));
        assert_eq!(m.n_trees(), back.n_trees());
        // Contributions sum to the margin.
        let c = m.contributions(&xv);
        for r in 0..10 {
            let margin: f64 = c[r * 3..r * 3 + 3].iter().sum();
            assert!((sigmoid(margin) - p[r]).abs() < 1e-6);
        }
        // The flat evaluator gives forust's own numbers, bit for bit, also on missing values.
        let mut xm = xv.clone();
        for r in (0..xm.rows).step_by(7) {
            xm.data[r] = f64::NAN;
        }
        let raw = m.booster.predict(&matrix(&xm), true);
        let (flat_p, flat_c) = m.predict_with_contributions(&xm);
        assert_eq!(flat_p, raw.iter().map(|&z| sigmoid(z)).collect::<Vec<_>>());
        let forust_c = m.booster.predict_contributions(&matrix(&xm), ContributionsMethod::Average, true);
        assert_eq!(flat_c, forust_c);
        assert_eq!(m.flat.n_trees(), m.n_trees());
        let clv = ForustGbdt::fit(&params, Task::Clv, &x, &y, Some((&xv, &yv))).unwrap();
        assert_eq!(clv.predict(&xm), clv.booster.predict(&matrix(&xm), true));
        // Without a validation set: exactly the trees asked for.
        let fixed = GbdtConfig { iterations: 17, ..params.clone() };
        assert_eq!(ForustGbdt::fit(&fixed, Task::Churn, &x, &y, None).unwrap().n_trees(), 17);
        // Feature a matters more than b in the generating model.
        let imp = m.importance_gain(2);
        assert!(imp[0] > imp[1], "{imp:?}");
    }
}
