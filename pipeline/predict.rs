//! Predict: the one place a loaded model turns activity into predictions. Features at `as_of`
//! are built the way the model was trained (its own feature settings, BG/NBD parameters and
//! signal features), then the churn model (calibrated) and the CLV model are applied. The
//! score stage ranks these predictions; monitoring compares them with the model's reference.

use chrono::NaiveDate;

use crate::config::Reasons;
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
    /// Whether the contributions are exact SHAP values (else path attributions: a model
    /// trained before fidelis stored its trees' covers).
    pub shap: bool,
    /// Survival curves, when the model has a survival model (churn as a cancellation).
    pub survival: Option<crate::train::survival::Curves>,
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
    let mut frame = features::features_with(
        daily,
        spec,
        &[as_of],
        model.probabilistic()?,
        signals.subscriptions.as_ref(),
    )?;
    crate::signals::append(&mut frame, &model.info.signals, signals)?;
    if frame.height() == 0 {
        return Err(Error::Data(match spec.churn {
            crate::config::ChurnRule::Inactivity => format!(
                "no customer is eligible at {as_of}: none has a transaction in the {} days before it",
                spec.eligibility_days
            ),
            crate::config::ChurnRule::Cancellation => format!(
                "no customer is eligible at {as_of}: none has a live subscription without notice and \
                 a transaction before it"
            ),
        }));
    }
    let x = FeatureMatrix::from_frame(&frame, &names)?;
    let ids = frame.column(CUSTOMER).polars("customer ids")?.str().polars("customer ids")?;
    let customers = ids.iter().map(|v| v.unwrap_or_default().to_string()).collect();
    Ok((customers, x))
}

/// Predictions at `as_of`, with each customer's churn reasons as `reasons` says.
pub fn predict_at(
    model: &LoadedModel,
    daily: &Daily,
    signals: &SignalData,
    as_of: NaiveDate,
    reasons: Reasons,
) -> Result<Predictions> {
    let (customers, x) = features_at(model, daily, signals, as_of)?;
    Ok(apply(model, as_of, customers, x, reasons))
}

/// The model applied to features built by [`features_at`].
pub fn apply(
    model: &LoadedModel,
    as_of: NaiveDate,
    customers: Vec<String>,
    x: FeatureMatrix,
    reasons: Reasons,
) -> Predictions {
    let (raw, contributions, shap) = match reasons {
        Reasons::None => (model.churn.predict(&x), None, false),
        Reasons::Path => {
            let (raw, c) = model.churn.predict_with_contributions(&x);
            (raw, Some(c), false)
        }
        Reasons::Shap => {
            let (c, exact) = model.churn.explain(&x);
            (model.churn.predict(&x), Some(c), exact)
        }
    };
    let churn_probability = model.calibrator.apply_all(&raw);
    let predicted_clv = model.clv.predict(&x);
    let uplift = model.uplift.as_ref().map(|u| u.predict(&x));
    let survival = model.survival.as_ref().map(|s| s.curves(&x));
    Predictions {
        as_of,
        customers,
        x,
        churn_probability,
        predicted_clv,
        contributions,
        shap,
        uplift,
        survival,
    }
}

/// The churn reasons of every customer eligible at `as_of` as a table: `customer_id`, one
/// column per feature (model order) with its contribution to the churn log-odds, and
/// `expected_value`; each row adds up to the customer's log-odds before calibration. The
/// flag says whether they are exact SHAP values (else path attributions: a model trained
/// before fidelis stored its trees' covers).
pub fn explain_at(
    model: &LoadedModel,
    daily: &Daily,
    signals: &SignalData,
    as_of: NaiveDate,
) -> Result<(polars::prelude::DataFrame, bool)> {
    let (customers, x) = features_at(model, daily, signals, as_of)?;
    let (values, exact) = model.churn.explain(&x);
    Ok((contributions_frame(customers, &x.names, &values)?, exact))
}

/// Why each customer eligible at `as_of` got its predicted CLV, as [`explain_at`] gives the
/// churn reasons: exact SHAP values of the CLV model on the scale it says (revenue, or its log
/// for the Poisson GBDT). An error for a model without them (the Poisson GBDT blended with
/// the BG/NBD; trees without covers).
pub fn explain_clv_at(
    model: &LoadedModel,
    daily: &Daily,
    signals: &SignalData,
    as_of: NaiveDate,
) -> Result<(polars::prelude::DataFrame, crate::train::candidates::ClvScale)> {
    let (customers, x) = features_at(model, daily, signals, as_of)?;
    let (values, scale) = model.clv.shap_values(&x).ok_or_else(|| {
        crate::error::Error::Data(format!(
            "the CLV model of {} ({}) has no exact SHAP values: a blend of the Poisson GBDT and the \
             BG/NBD adds up on no one scale, and trees trained before fidelis stored their covers have none",
            model.info.model_id,
            model.clv.mix.name()
        ))
    })?;
    Ok((contributions_frame(customers, &x.names, &values)?, scale))
}

/// `customer_id`, one column per name and `expected_value` from row-major contributions
/// (`names.len() + 1` a row, the bias last).
pub fn contributions_frame(
    customers: Vec<String>,
    names: &[String],
    values: &[f64],
) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::{Column, DataFrame};
    let w = names.len() + 1;
    let n = values.len() / w;
    let mut cols = Vec::with_capacity(w + 1);
    if !customers.is_empty() {
        cols.push(Column::new(CUSTOMER.into(), customers));
    }
    for (c, name) in names.iter().chain(std::iter::once(&EXPECTED_VALUE.to_string())).enumerate() {
        cols.push(Column::new(name.as_str().into(), (0..n).map(|r| values[r * w + c]).collect::<Vec<f64>>()));
    }
    DataFrame::new_infer_height(cols).polars("assembling the contributions")
}

/// The bias column of [`contributions_frame`].
pub const EXPECTED_VALUE: &str = "expected_value";
