//! Gradient-boosted trees behind one small trait of ours: fidelis's own histogram engine
//! ([`HistGbdt`], every loss, one binning per training run: chosen on `make bench`, docs/models.md)
//! fits every model; forust-ml ([`ForustGbdt`]) still loads and scores models
//! trained by earlier releases ([`AnyGbdt`]) and is the comparison in the engine bench.

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
use crate::train::hist::{self, Binned, Loss, Tree};

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

    /// The task and the trees compiled for prediction (what every engine predicts with).
    fn compiled(&self) -> (Task, &FlatForest);

    /// Probability of churn (churn task) or predicted value (CLV task), one per row.
    fn predict(&self, x: &FeatureMatrix) -> Vec<f64> {
        let (task, flat) = self.compiled();
        flat_output(task, flat, x, false).0
    }

    /// Per-prediction feature contributions in margin units (log-odds for churn), row-major
    /// `rows x (cols + 1)`, the last column being the bias; each row sums to the margin.
    fn contributions(&self, x: &FeatureMatrix) -> Vec<f64> {
        self.compiled().1.predict_with_contributions(x).1
    }

    /// `predict` and `contributions` together (one tree walk).
    fn predict_with_contributions(&self, x: &FeatureMatrix) -> (Vec<f64>, Vec<f64>) {
        let (task, flat) = self.compiled();
        flat_output(task, flat, x, true)
    }

    /// Exact SHAP values ([`super::shap`]) in margin units of the rows `rows` of `x` (every
    /// row when `None`), row-major `rows x (cols + 1)`, the expected value last; each row adds
    /// up to the margin. `None` when the trees do not record their covers (models trained
    /// before fidelis stored them, forust-ml models).
    fn shap(&self, _x: &FeatureMatrix, _rows: Option<&[usize]>) -> Option<Vec<f64>> {
        None
    }

    /// Total split gain per feature, normalized to sum to 1.
    fn importance_gain(&self, n_features: usize) -> Vec<f64>;

    /// Trees used for prediction (after early stopping).
    fn n_trees(&self) -> usize;

    fn to_json(&self) -> Result<String>;
    fn from_json(s: &str) -> Result<Self>;
}

/// Margins of a compiled forest to a task's output (probability for churn), with or without
/// contributions: what both engines predict with.
fn flat_output(
    task: Task,
    flat: &FlatForest,
    x: &FeatureMatrix,
    contributions: bool,
) -> (Vec<f64>, Vec<f64>) {
    let (margin, c) =
        if contributions { flat.predict_with_contributions(x) } else { (flat.predict(x), Vec::new()) };
    let out = match task {
        Task::Churn => margin.into_iter().map(sigmoid).collect(),
        Task::Clv => margin,
    };
    (out, c)
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

    fn compiled(&self) -> (Task, &FlatForest) {
        (self.task, &self.flat)
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
}

/// fidelis's own histogram GBDT ([`super::hist`]): log loss for churn, squared error for CLV;
/// compiled into a [`FlatForest`] for prediction and contributions.
#[derive(Debug, Clone)]
pub struct HistGbdt {
    task: Task,
    base: f64,
    trees: Vec<Tree>,
    importance: Vec<f64>,
    flat: FlatForest,
}

/// What the artifact holds (`engine` tells it from a forust-ml file).
#[derive(Serialize, Deserialize)]
struct HistFile {
    engine: String,
    task: Task,
    base: f64,
    trees: Vec<Tree>,
    importance: Vec<f64>,
}

impl HistGbdt {
    const NAME: &'static str = "fidelis-hist";

    fn loss(task: Task) -> Loss {
        match task {
            Task::Churn => Loss::LogLoss,
            Task::Clv => Loss::Squared,
        }
    }

    /// Fit on the rows `rows` of a shared binned matrix (`y` indexed like its rows), as
    /// [`Gbdt::fit`] does on a whole matrix.
    pub fn fit_binned(
        params: &GbdtConfig,
        task: Task,
        binned: &Binned,
        rows: &[usize],
        y: &[f64],
        valid: Option<(&FeatureMatrix, &[f64])>,
    ) -> Result<Self> {
        let b = hist::boost(Self::loss(task), params, binned, rows, y, valid)
            .map_err(|message| Error::Model { model: format!("{} gbdt", task.name()), message })?;
        Ok(HistGbdt::new(task, b.base, b.trees, b.importance))
    }

    fn new(task: Task, base: f64, trees: Vec<Tree>, importance: Vec<f64>) -> Self {
        let flat = FlatForest::compile_hist(base, &trees);
        HistGbdt { task, base, trees, importance, flat }
    }
}

impl Gbdt for HistGbdt {
    const ENGINE: &'static str = HistGbdt::NAME;

    fn fit(
        params: &GbdtConfig,
        task: Task,
        x: &FeatureMatrix,
        y: &[f64],
        valid: Option<(&FeatureMatrix, &[f64])>,
    ) -> Result<Self> {
        let binned = Binned::new(x, None, params.nbins as usize);
        let rows: Vec<usize> = (0..x.rows).collect();
        Self::fit_binned(params, task, &binned, &rows, y, valid)
    }

    fn compiled(&self) -> (Task, &FlatForest) {
        (self.task, &self.flat)
    }

    fn shap(&self, x: &FeatureMatrix, rows: Option<&[usize]>) -> Option<Vec<f64>> {
        super::shap::covers_known(&self.trees)
            .then(|| super::shap::tree_shap(self.base, &self.trees, x, rows))
    }

    fn importance_gain(&self, n_features: usize) -> Vec<f64> {
        (0..n_features).map(|i| self.importance.get(i).copied().unwrap_or(0.0)).collect()
    }

    fn n_trees(&self) -> usize {
        self.trees.len()
    }

    fn to_json(&self) -> Result<String> {
        let file = HistFile {
            engine: Self::NAME.into(),
            task: self.task,
            base: self.base,
            trees: self.trees.clone(),
            importance: self.importance.clone(),
        };
        serde_json::to_string(&file)
            .map_err(|source| Error::Json { context: "writing the model".into(), source })
    }

    fn from_json(s: &str) -> Result<Self> {
        let file: HistFile = serde_json::from_str(s)
            .map_err(|source| Error::Json { context: "reading the model".into(), source })?;
        // Checked before compiling: an edited or damaged file is an error, never a panic or
        // a silently different score.
        let max_abs = match file.task {
            Task::Churn => hist::MAX_LOG_VALUE,
            Task::Clv => hist::MAX_VALUE,
        };
        hist::check_trees(file.base, &file.trees, max_abs)
            .map_err(|message| Error::Model { model: format!("{} gbdt", file.task.name()), message })?;
        Ok(HistGbdt::new(file.task, file.base, file.trees, file.importance))
    }
}

/// The GBDT of a model artifact: fitted with fidelis's own engine; models trained by earlier
/// releases with forust-ml still load and score.
#[derive(Clone)]
pub enum AnyGbdt {
    Hist(HistGbdt),
    Forust(std::sync::Arc<ForustGbdt>),
}

impl AnyGbdt {
    /// The largest feature index a split of this model reads.
    pub fn max_feature(&self) -> Option<usize> {
        match self {
            AnyGbdt::Hist(m) => m.trees.iter().filter_map(hist::Tree::max_feature).max(),
            AnyGbdt::Forust(m) => m.compiled().1.max_feature(),
        }
    }

    /// See [`HistGbdt::fit_binned`].
    pub fn fit_binned(
        params: &GbdtConfig,
        task: Task,
        binned: &Binned,
        rows: &[usize],
        y: &[f64],
        valid: Option<(&FeatureMatrix, &[f64])>,
    ) -> Result<Self> {
        HistGbdt::fit_binned(params, task, binned, rows, y, valid).map(AnyGbdt::Hist)
    }

    /// The engine that fitted this model.
    pub fn engine(&self) -> &'static str {
        match self {
            AnyGbdt::Hist(_) => HistGbdt::ENGINE,
            AnyGbdt::Forust(_) => ForustGbdt::ENGINE,
        }
    }
}

impl Gbdt for AnyGbdt {
    const ENGINE: &'static str = HistGbdt::ENGINE;

    fn fit(
        params: &GbdtConfig,
        task: Task,
        x: &FeatureMatrix,
        y: &[f64],
        valid: Option<(&FeatureMatrix, &[f64])>,
    ) -> Result<Self> {
        HistGbdt::fit(params, task, x, y, valid).map(AnyGbdt::Hist)
    }

    fn compiled(&self) -> (Task, &FlatForest) {
        match self {
            AnyGbdt::Hist(m) => m.compiled(),
            AnyGbdt::Forust(m) => m.compiled(),
        }
    }

    fn shap(&self, x: &FeatureMatrix, rows: Option<&[usize]>) -> Option<Vec<f64>> {
        match self {
            AnyGbdt::Hist(m) => m.shap(x, rows),
            AnyGbdt::Forust(_) => None,
        }
    }

    fn importance_gain(&self, n_features: usize) -> Vec<f64> {
        match self {
            AnyGbdt::Hist(m) => m.importance_gain(n_features),
            AnyGbdt::Forust(m) => m.importance_gain(n_features),
        }
    }

    fn n_trees(&self) -> usize {
        match self {
            AnyGbdt::Hist(m) => m.n_trees(),
            AnyGbdt::Forust(m) => m.n_trees(),
        }
    }

    fn to_json(&self) -> Result<String> {
        match self {
            AnyGbdt::Hist(m) => m.to_json(),
            AnyGbdt::Forust(m) => m.to_json(),
        }
    }

    fn from_json(s: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Probe {
            engine: Option<String>,
        }
        let probe: Probe = serde_json::from_str(s)
            .map_err(|source| Error::Json { context: "reading the model".into(), source })?;
        match probe.engine.as_deref() {
            Some(HistGbdt::NAME) => HistGbdt::from_json(s).map(AnyGbdt::Hist),
            Some(other) => Err(Error::Model {
                model: "gbdt".into(),
                message: format!("unknown engine '{other}' (written by a newer fidelis?)"),
            }),
            None => ForustGbdt::from_json(s).map(|m| AnyGbdt::Forust(std::sync::Arc::new(m))),
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

    #[test]
    fn early_stopping_tolerance_stops_sooner_and_keeps_the_lowest_validation_loss() {
        let (x, y) = toy(20_000, 3);
        let (xv, yv) = toy(5000, 4);
        let any = GbdtConfig {
            iterations: 1000,
            learning_rate: 0.01,
            early_stopping_tolerance: 0.0,
            ..GbdtConfig::default()
        };
        let tolerant = GbdtConfig { early_stopping_tolerance: 0.01, ..any.clone() };
        let n_any = HistGbdt::fit(&any, Task::Churn, &x, &y, Some((&xv, &yv))).unwrap().n_trees();
        let m = HistGbdt::fit(&tolerant, Task::Churn, &x, &y, Some((&xv, &yv))).unwrap();
        let n = m.n_trees();
        assert!(n > 5 && n < n_any, "{n} trees with a tolerance, {n_any} without");
        // What is kept is the lowest validation loss of the trees fitted: fewer trees (the
        // same first ones, fitted without validation) do no better.
        let log_loss = |p: Vec<f64>| -> f64 {
            p.iter().zip(&yv).map(|(&q, &t)| -(t * q.ln() + (1.0 - t) * (1.0 - q).ln())).sum::<f64>()
        };
        let kept = log_loss(m.predict(&xv));
        for k in [n / 2, n - 5, n - 1] {
            let other = GbdtConfig { iterations: k, ..tolerant.clone() };
            let l = log_loss(HistGbdt::fit(&other, Task::Churn, &x, &y, None).unwrap().predict(&xv));
            assert!(kept <= l, "{n} trees: {kept}; {k} trees: {l}");
        }
    }

    #[test]
    fn own_engine_learns_round_trips_and_its_flat_forest_agrees_with_its_trees() {
        let (x, y) = toy(3000, 1);
        let (xv, yv) = toy(1000, 2);
        let params = GbdtConfig { iterations: 200, learning_rate: 0.1, ..GbdtConfig::default() };
        let m = HistGbdt::fit(&params, Task::Churn, &x, &y, Some((&xv, &yv))).unwrap();
        assert!(m.n_trees() > 5 && m.n_trees() <= 200, "{}", m.n_trees());
        let p = m.predict(&xv);
        let auc = crate::metrics::roc_auc(&yv, &p);
        assert!(auc > 0.7, "auc {auc}");
        // The compiled forest predicts what walking the trees gives, also on missing values
        // and on values equal to a threshold (`<=` goes left there, `<` in the forest).
        let mut xm = xv.clone();
        for r in (0..xm.rows).step_by(7) {
            xm.data[r] = f64::NAN;
        }
        let t = &m.trees[0].nodes[0];
        xm.data[t.feature * xm.rows + 1] = t.threshold;
        let walked: Vec<f64> = (0..xm.rows)
            .map(|r| sigmoid(m.base + m.trees.iter().map(|t| t.margin(&xm, r)).sum::<f64>()))
            .collect();
        let (flat, contributions) = m.predict_with_contributions(&xm);
        for (a, b) in flat.iter().zip(&walked) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        for r in 0..xm.rows {
            let margin: f64 = contributions[r * 3..r * 3 + 3].iter().sum();
            assert!((sigmoid(margin) - flat[r]).abs() < 1e-9);
        }
        let back = AnyGbdt::from_json(&m.to_json().unwrap()).unwrap();
        assert!(matches!(back, AnyGbdt::Hist(_)));
        assert_eq!(back.predict(&xm), flat);
        assert_eq!(m.importance_gain(2).iter().sum::<f64>().round(), 1.0);
        assert!(m.importance_gain(2)[0] > m.importance_gain(2)[1]);
        // Without a validation set: exactly the trees asked for; squared error for CLV.
        let fixed = GbdtConfig { iterations: 17, ..params.clone() };
        assert_eq!(HistGbdt::fit(&fixed, Task::Clv, &x, &y, None).unwrap().n_trees(), 17);
    }

    #[test]
    fn own_engine_on_a_subset_of_shared_bins_is_the_fit_on_those_rows() {
        let (x, y) = toy(4000, 3);
        let (xv, yv) = toy(500, 4);
        let rows: Vec<usize> = (0..x.rows).filter(|r| r % 3 != 0).collect();
        let params = GbdtConfig { iterations: 60, learning_rate: 0.1, ..GbdtConfig::default() };
        // One binning of every row, cuts from the subset: the same model as a matrix of the
        // subset alone (no copy of the matrix per fit changes nothing).
        let shared = Binned::new(&x, Some(&rows), params.nbins as usize);
        let a = HistGbdt::fit_binned(&params, Task::Churn, &shared, &rows, &y, Some((&xv, &yv))).unwrap();
        let sub = x.select_rows(&rows);
        let ys: Vec<f64> = rows.iter().map(|&r| y[r]).collect();
        let b = HistGbdt::fit(&params, Task::Churn, &sub, &ys, Some((&xv, &yv))).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
        // The same rows selected into a compact matrix of their own: the same model again.
        let compact = shared.select(&rows);
        let all: Vec<usize> = (0..rows.len()).collect();
        let c = HistGbdt::fit_binned(&params, Task::Churn, &compact, &all, &ys, Some((&xv, &yv))).unwrap();
        assert_eq!(a.to_json().unwrap(), c.to_json().unwrap());
        // Rows out of order are refused, not silently misread.
        let mut bad = rows.clone();
        bad.swap(0, 1);
        assert!(HistGbdt::fit_binned(&params, Task::Churn, &shared, &bad, &y, None).is_err());
    }

    #[test]
    fn own_engine_is_the_same_on_one_thread_and_many_with_sampling() {
        let (x, y) = toy(40_000, 5);
        let params = GbdtConfig {
            iterations: 30,
            learning_rate: 0.1,
            subsample: 0.7,
            colsample_bytree: 0.5,
            ..GbdtConfig::default()
        };
        let fit = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| HistGbdt::fit(&params, Task::Clv, &x, &y, None).unwrap().to_json().unwrap())
        };
        let one = fit(1);
        assert_eq!(one, fit(3));
        // The seed matters (sampling is real).
        let other = GbdtConfig { seed: 7, ..params.clone() };
        assert_ne!(one, HistGbdt::fit(&other, Task::Clv, &x, &y, None).unwrap().to_json().unwrap());
    }

    #[test]
    fn own_engine_with_more_than_256_bins_uses_two_bytes_and_learns_the_same_way() {
        let (x, y) = toy(3000, 7);
        let (xv, yv) = toy(1000, 8);
        let params = GbdtConfig { iterations: 100, learning_rate: 0.1, nbins: 1000, ..GbdtConfig::default() };
        let m = HistGbdt::fit(&params, Task::Churn, &x, &y, Some((&xv, &yv))).unwrap();
        let auc = crate::metrics::roc_auc(&yv, &m.predict(&xv));
        assert!(auc > 0.7, "auc {auc}");
        assert_eq!(
            m.to_json().unwrap(),
            HistGbdt::fit(&params, Task::Churn, &x, &y, Some((&xv, &yv))).unwrap().to_json().unwrap()
        );
        // Finer bins find thresholds the byte-sized ones cannot (more distinct split values).
        let coarse =
            HistGbdt::fit(&GbdtConfig { nbins: 16, ..params.clone() }, Task::Churn, &x, &y, None).unwrap();
        let thresholds = |m: &HistGbdt| {
            let mut t: Vec<u64> = m
                .trees
                .iter()
                .flat_map(|t| {
                    t.nodes.iter().filter(|n| n.feature != hist::LEAF).map(|n| n.threshold.to_bits())
                })
                .collect();
            t.sort_unstable();
            t.dedup();
            t.len()
        };
        assert!(thresholds(&m) > thresholds(&coarse), "{} vs {}", thresholds(&m), thresholds(&coarse));
    }

    #[test]
    fn models_of_earlier_releases_fitted_by_forust_still_load_and_score() {
        let (x, y) = toy(2000, 6);
        let params = GbdtConfig { iterations: 20, learning_rate: 0.1, ..GbdtConfig::default() };
        let old = ForustGbdt::fit(&params, Task::Churn, &x, &y, None).unwrap();
        let loaded = AnyGbdt::from_json(&old.to_json().unwrap()).unwrap();
        assert!(matches!(loaded, AnyGbdt::Forust(_)));
        assert_eq!(loaded.engine(), "forust-ml");
        assert_eq!(loaded.predict(&x), old.predict(&x));
        let unknown = AnyGbdt::from_json(r#"{"engine": "xgboost-9"}"#).err().unwrap();
        assert!(unknown.to_string().contains("xgboost-9"), "{unknown}");
    }
}
