//! Predict: the one place a loaded model turns activity into predictions. Features at `as_of`
//! are built the way the model was trained (its own feature settings, BG/NBD parameters and
//! signal features), then the churn model (calibrated) and the CLV model are applied. The
//! score stage ranks these predictions; monitoring compares them with the model's reference.

use chrono::NaiveDate;

use crate::error::{Error, PolarsContext, Result};
use crate::features::{self, Daily, FeatureMatrix};
use crate::model::LoadedModel;
use crate::schema::CUSTOMER;
use crate::signals::SignalData;

/// The model's view of every customer eligible at `as_of`, in customer order.
pub struct Predictions {
    pub as_of: NaiveDate,
    /// Customer ids, in row order.
    pub customers: Vec<String>,
    pub x: FeatureMatrix,
    /// Calibrated churn probability.
    pub churn_probability: Vec<f64>,
    pub predicted_clv: Vec<f64>,
    /// Per customer, the churn log-odds contribution of each feature and a bias
    /// (`x.names.len() + 1` values a row), when asked for.
    pub contributions: Option<Vec<f64>>,
    /// The estimated reduction in churn probability if contacted, when the model has an
    /// uplift model.
    pub uplift: Option<Vec<f64>>,
}

/// Features of every customer eligible at `as_of` (at least one transaction in the model's
/// eligibility window before it), as the model was trained on them, and the customer ids.
pub fn features_at(
    model: &LoadedModel,
    daily: &Daily,
    signals: &SignalData,
    as_of: NaiveDate,
) -> Result<(Vec<String>, FeatureMatrix)> {
    model.check_inputs(signals)?;
    let spec = &model.info.feature_spec;
    let names = model.feature_names()?;
    let mut frame = features::features_with(daily, spec, &[as_of], model.probabilistic()?)?;
    crate::signals::append(&mut frame, &model.info.signals, signals)?;
    if frame.height() == 0 {
        return Err(Error::Data(format!(
            "no customer is eligible at {as_of}: none has a transaction in the {} days before it",
            spec.eligibility_days
        )));
    }
    let x = FeatureMatrix::from_frame(&frame, &names)?;
    let ids = frame.column(CUSTOMER).polars("customer ids")?.str().polars("customer ids")?;
    let customers = ids.iter().map(|v| v.unwrap_or_default().to_string()).collect();
    Ok((customers, x))
}

/// Predictions at `as_of`; with `contributions`, also each customer's churn reasons.
pub fn predict_at(
    model: &LoadedModel,
    daily: &Daily,
    signals: &SignalData,
    as_of: NaiveDate,
    contributions: bool,
) -> Result<Predictions> {
    let (customers, x) = features_at(model, daily, signals, as_of)?;
    Ok(apply(model, as_of, customers, x, contributions))
}

/// The model applied to features built by [`features_at`].
pub fn apply(
    model: &LoadedModel,
    as_of: NaiveDate,
    customers: Vec<String>,
    x: FeatureMatrix,
    contributions: bool,
) -> Predictions {
    let (raw, contributions) = if contributions {
        let (raw, c) = model.churn.predict_with_contributions(&x);
        (raw, Some(c))
    } else {
        (model.churn.predict(&x), None)
    };
    let churn_probability = model.calibrator.apply_all(&raw);
    let predicted_clv = model.clv.predict(&x);
    let uplift = model.uplift.as_ref().map(|u| u.predict(&x));
    Predictions { as_of, customers, x, churn_probability, predicted_clv, contributions, uplift }
}
