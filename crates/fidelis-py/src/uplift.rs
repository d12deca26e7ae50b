//! `fidelis.uplift`'s native half: the Qini metrics and the uplift learners on any table of
//! features, treatment flag and outcome (past campaigns fidelis did not run included).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use fidelis::config::{GbdtConfig, UpliftConfig};
use fidelis::features::FeatureMatrix;
use fidelis::qini::{self, AtK};
use fidelis::train::uplift::{gbdt_params, Learner, UpliftModel};

use crate::{import_frame, py_err};

fn same_length(y: &[f64], uplift: &[f64], treatment: &[bool]) -> PyResult<()> {
    if y.len() != uplift.len() || y.len() != treatment.len() {
        return Err(PyValueError::new_err(format!(
            "y_true, uplift and treatment must have one value per row, got {}, {} and {}",
            y.len(),
            uplift.len(),
            treatment.len()
        )));
    }
    Ok(())
}

/// The Qini curve (x = customers targeted, y = Qini values), as `sklift.metrics.qini_curve`.
#[pyfunction]
pub fn qini_curve(
    y_true: Vec<f64>,
    uplift: Vec<f64>,
    treatment: Vec<bool>,
) -> PyResult<(Vec<f64>, Vec<f64>)> {
    same_length(&y_true, &uplift, &treatment)?;
    Ok(qini::qini_curve(&y_true, &uplift, &treatment))
}

/// The Qini coefficient, as `sklift.metrics.qini_auc_score` (negative_effect=True).
#[pyfunction]
pub fn qini_coefficient(y_true: Vec<f64>, uplift: Vec<f64>, treatment: Vec<bool>) -> PyResult<f64> {
    same_length(&y_true, &uplift, &treatment)?;
    Ok(qini::qini_coefficient(&y_true, &uplift, &treatment))
}

/// uplift@k for a fraction `k` in (0, 1), as `sklift.metrics.uplift_at_k`.
#[pyfunction]
pub fn uplift_at_k(
    y_true: Vec<f64>,
    uplift: Vec<f64>,
    treatment: Vec<bool>,
    k: f64,
    strategy: &str,
) -> PyResult<f64> {
    same_length(&y_true, &uplift, &treatment)?;
    if !(k > 0.0 && k < 1.0) {
        return Err(PyValueError::new_err(format!("k must be a fraction in (0, 1), got {k}")));
    }
    let strategy = match strategy {
        "overall" => AtK::Overall,
        "by_group" => AtK::ByGroup,
        other => {
            return Err(PyValueError::new_err(format!(
                "strategy must be 'overall' or 'by_group', got {other:?}"
            )))
        }
    };
    Ok(qini::uplift_at_k(&y_true, &uplift, &treatment, k, strategy))
}

/// An uplift learner fitted from Python (`fidelis.uplift.UpliftModel`).
#[pyclass(name = "UpliftLearner", module = "fidelis._native", frozen)]
pub struct UpliftLearner {
    model: UpliftModel,
    names: Vec<String>,
}

fn features(capsule: &Bound<'_, PyAny>, names: Option<&[String]>) -> PyResult<(FeatureMatrix, Vec<String>)> {
    let df = import_frame(capsule, "features")?;
    let names: Vec<String> = match names {
        Some(n) => n.to_vec(),
        None => df.get_column_names().iter().map(|c| c.to_string()).collect(),
    };
    let x = FeatureMatrix::from_frame(&df, &names).map_err(py_err)?;
    Ok((x, names))
}

#[pymethods]
impl UpliftLearner {
    /// Fit on a features table (every column numeric), the treatment flag and the outcome
    /// (1 = churned) of each row. `learner`: `t_learner`, `transformed_outcome` or `x_learner`.
    #[staticmethod]
    #[pyo3(signature = (features_capsule, treatment, churned, learner, iterations, learning_rate, max_depth, min_leaf_weight, seed))]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        py: Python<'_>,
        features_capsule: &Bound<'_, PyAny>,
        treatment: Vec<bool>,
        churned: Vec<f64>,
        learner: &str,
        iterations: usize,
        learning_rate: f64,
        max_depth: usize,
        min_leaf_weight: f64,
        seed: u64,
    ) -> PyResult<UpliftLearner> {
        let (x, names) = features(features_capsule, None)?;
        if treatment.len() != x.rows || churned.len() != x.rows {
            return Err(PyValueError::new_err(format!(
                "{} feature rows, {} treatment flags, {} outcomes",
                x.rows,
                treatment.len(),
                churned.len()
            )));
        }
        let learner = match learner {
            "t_learner" => Learner::TLearner,
            "transformed_outcome" => Learner::TransformedOutcome,
            "x_learner" => Learner::XLearner,
            other => {
                return Err(PyValueError::new_err(format!(
                    "learner must be 't_learner', 'transformed_outcome' or 'x_learner', got {other:?}"
                )))
            }
        };
        let u =
            UpliftConfig { iterations, learning_rate, max_depth, min_leaf_weight, ..UpliftConfig::default() };
        let params = GbdtConfig { seed, ..gbdt_params(&GbdtConfig::default(), &u) };
        let model =
            py.detach(|| UpliftModel::fit(learner, &params, &x, &treatment, &churned)).map_err(py_err)?;
        Ok(UpliftLearner { model, names })
    }

    /// The estimated reduction in churn probability if treated, per row of `features` (the
    /// columns it was fitted on, by name).
    fn predict(&self, py: Python<'_>, features_capsule: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
        let (x, _) = features(features_capsule, Some(&self.names))?;
        Ok(py.detach(|| self.model.predict(&x)))
    }

    #[getter]
    fn feature_names(&self) -> Vec<String> {
        self.names.clone()
    }

    #[getter]
    fn learner(&self) -> &'static str {
        self.model.learner.name()
    }

    fn to_json(&self) -> PyResult<String> {
        let model = self.model.to_json().map_err(py_err)?;
        Ok(serde_json::json!({ "features": self.names, "model": model }).to_string())
    }

    #[staticmethod]
    fn from_json(s: &str) -> PyResult<UpliftLearner> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let names: Vec<String> = serde_json::from_value(v["features"].clone())
            .map_err(|e| PyValueError::new_err(format!("features: {e}")))?;
        let model = UpliftModel::from_json(v["model"].as_str().unwrap_or_default()).map_err(py_err)?;
        Ok(UpliftLearner { model, names })
    }
}
