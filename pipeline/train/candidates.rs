//! Model candidates and the honest choice between them.
//!
//! Churn: the GBDT, the logistic regression (own Newton fit, [`super::linear`]), and their
//! blend (the mean of the two log-odds). CLV: the squared-loss GBDT, the Poisson GBDT
//! ([`super::poisson`]), and each one's blend with the BG/NBD + Gamma-Gamma expected revenue
//! (the mean of the two predictions, when the features carry it). Every candidate is fitted
//! on the fit snapshots only; the one with the best metric (churn ROC AUC, CLV normalized Gini) on out-of-time predictions of purged models (or,
//! with too little history, on cross-fitted predictions by customer) is shipped (see
//! `out_of_time` in `train`). The holdout is evaluated for every candidate and reported,
//! never used to choose.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::features::FeatureMatrix;
use crate::math::{logit, sigmoid};
use crate::metrics::{ChurnMetrics, ClvMetrics};
use crate::train::gbdt::Gbdt;
use crate::train::linear::Logistic;
use crate::train::poisson::PoissonGbdt;
use crate::train::Engine;

/// The BG/NBD + Gamma-Gamma expected revenue feature a CLV blend averages with.
pub const BGNBD_REVENUE: &str = "bgnbd_expected_revenue";

/// How the churn log-odds are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChurnMix {
    #[default]
    Gbdt,
    Logistic,
    /// Mean of the GBDT and logistic log-odds.
    Blend,
    /// The BG/NBD probability of no purchase over the horizon (`bgnbd_p_no_purchase`) alone:
    /// no fitted part beyond the population's four parameters, and on short histories often
    /// the best ranking there is (it extrapolates tenure and recency by its structure).
    Bgnbd,
}

/// The BG/NBD probability of no purchase over the horizon, the `bg/nbd` churn mix.
pub const BGNBD_P_NO_PURCHASE: &str = "bgnbd_p_no_purchase";

impl ChurnMix {
    pub const ALL: [ChurnMix; 4] = [ChurnMix::Gbdt, ChurnMix::Logistic, ChurnMix::Blend, ChurnMix::Bgnbd];

    /// From the simplest (see [`ClvMix::SIMPLEST_FIRST`]).
    pub const SIMPLEST_FIRST: [ChurnMix; 4] =
        [ChurnMix::Logistic, ChurnMix::Blend, ChurnMix::Gbdt, ChurnMix::Bgnbd];

    /// The mixes features named `names` allow (the BG/NBD alone needs its column).
    pub fn available(names: &[String]) -> Vec<ChurnMix> {
        let has_bgnbd = names.iter().any(|n| n == BGNBD_P_NO_PURCHASE);
        Self::ALL.into_iter().filter(|&m| m != ChurnMix::Bgnbd || has_bgnbd).collect()
    }

    /// Whether the mix needs the logistic regression.
    pub fn uses_logistic(self) -> bool {
        matches!(self, ChurnMix::Logistic | ChurnMix::Blend)
    }

    /// Whether the mix needs the GBDT.
    pub fn uses_gbdt(self) -> bool {
        matches!(self, ChurnMix::Gbdt | ChurnMix::Blend)
    }

    pub fn name(self) -> &'static str {
        match self {
            ChurnMix::Gbdt => "gbdt",
            ChurnMix::Logistic => "logistic",
            ChurnMix::Blend => "gbdt + logistic",
            ChurnMix::Bgnbd => "bg/nbd",
        }
    }

    /// Weights of (GBDT, logistic) log-odds (none for the BG/NBD alone).
    fn weights(self) -> (f64, f64) {
        match self {
            ChurnMix::Gbdt => (1.0, 0.0),
            ChurnMix::Logistic => (0.0, 1.0),
            ChurnMix::Blend => (0.5, 0.5),
            ChurnMix::Bgnbd => (0.0, 0.0),
        }
    }
}

/// How the CLV prediction is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClvMix {
    /// The squared-loss GBDT.
    #[default]
    Gbdt,
    /// Mean of the GBDT prediction and the BG/NBD + Gamma-Gamma expected revenue.
    BlendBgnbd,
    /// The Poisson GBDT.
    Poisson,
    /// Mean of the Poisson GBDT prediction and the BG/NBD + Gamma-Gamma expected revenue.
    PoissonBgnbd,
    /// The BG/NBD + Gamma-Gamma expected revenue alone (no trees).
    Bgnbd,
}

impl ClvMix {
    pub const ALL: [ClvMix; 5] =
        [ClvMix::Gbdt, ClvMix::BlendBgnbd, ClvMix::Poisson, ClvMix::PoissonBgnbd, ClvMix::Bgnbd];

    /// From the simplest (blends before a GBDT alone, whose variance a blend halves): a
    /// candidate earlier here is shipped unless a later one wins by more than the choice
    /// metric's standard error. The BG/NBD alone comes last, though it fits least: it is
    /// not fitted on the fit rows at all, so cross-fitting's folds say little about it (it
    /// once shipped well below the logistic regression on a short history: docs/models.md,
    /// "Why the rules are what they are"): it ships only when it beats every fitted candidate
    /// by more than their standard errors.
    pub const SIMPLEST_FIRST: [ClvMix; 5] =
        [ClvMix::PoissonBgnbd, ClvMix::BlendBgnbd, ClvMix::Poisson, ClvMix::Gbdt, ClvMix::Bgnbd];

    /// The mixes features named `names` allow (the BG/NBD blends need its revenue column),
    /// with or without the Poisson GBDT (`model.clv_poisson`).
    pub fn available(names: &[String], poisson: bool) -> Vec<ClvMix> {
        let has_bgnbd = names.iter().any(|n| n == BGNBD_REVENUE);
        Self::ALL
            .into_iter()
            .filter(|&mix| (!mix.uses_bgnbd() || has_bgnbd) && (!mix.uses_poisson() || poisson))
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            ClvMix::Gbdt => "gbdt",
            ClvMix::BlendBgnbd => "gbdt + bg/nbd",
            ClvMix::Poisson => "poisson gbdt",
            ClvMix::PoissonBgnbd => "poisson gbdt + bg/nbd",
            ClvMix::Bgnbd => "bg/nbd",
        }
    }

    /// Whether the mix needs a GBDT (every mix but the BG/NBD alone).
    pub fn uses_gbdt(self) -> bool {
        self != ClvMix::Bgnbd
    }

    /// Whether the mix needs the squared-loss GBDT.
    pub fn uses_squared_gbdt(self) -> bool {
        matches!(self, ClvMix::Gbdt | ClvMix::BlendBgnbd)
    }

    /// Whether the mix starts from the Poisson GBDT (else the squared-loss one).
    pub fn uses_poisson(self) -> bool {
        matches!(self, ClvMix::Poisson | ClvMix::PoissonBgnbd)
    }

    fn uses_bgnbd(self) -> bool {
        matches!(self, ClvMix::BlendBgnbd | ClvMix::PoissonBgnbd | ClvMix::Bgnbd)
    }

    /// The mix blended with the BG/NBD + Gamma-Gamma expected revenue: a GBDT alone becomes
    /// its mean with it; a blend or the BG/NBD alone stays as it is.
    pub fn with_bgnbd(self) -> ClvMix {
        match self {
            ClvMix::Gbdt => ClvMix::BlendBgnbd,
            ClvMix::Poisson => ClvMix::PoissonBgnbd,
            other => other,
        }
    }
}

/// The shipped churn model: GBDT, logistic regression or both.
pub struct ChurnModel {
    pub mix: ChurnMix,
    pub gbdt: Engine,
    /// Present whenever the mix uses it (and in every model trained since it existed).
    pub logistic: Option<Logistic>,
    /// How the BG/NBD mix's log-odds split over its inputs (reasons); `None` for the other
    /// mixes and for models without it (their BG/NBD reasons name its one column).
    pub explain: Option<BgnbdExplainer>,
}

/// The BG/NBD inputs, as feature columns: active days (x + 1), recency and tenure (T), in days.
pub const BGNBD_INPUTS: [&str; 3] = ["active_days_life", "recency_days", "tenure_days"];

/// Per-feature reasons for the `bg/nbd` churn mix: its log-odds `logit P(no purchase)` split
/// over active days, recency and tenure by their Shapley values against a reference customer
/// (the training rows' medians), so that a customer at risk for a long silence reads
/// "recency_days" and one too new to judge "tenure_days". The split adds up to the log-odds:
/// the bias is the log-odds minus the three shares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgnbdExplainer {
    pub bgnbd: crate::bgnbd::BgNbd,
    pub horizon_days: f64,
    /// Active days, recency and tenure of the reference customer.
    pub reference: [f64; 3],
}

impl BgnbdExplainer {
    /// The explainer of the BG/NBD `p` the scoring features use (fitted at the end of the
    /// data) with the `rows`' median active days, recency and tenure as the reference; none
    /// without a BG/NBD or with an input missing or never finite.
    pub fn at_fit_rows(
        x: &FeatureMatrix,
        rows: &[usize],
        p: Option<&crate::bgnbd::Probabilistic>,
        horizon_days: i32,
    ) -> Option<BgnbdExplainer> {
        let p = p?;
        let mut reference = [0.0; 3];
        for (r, name) in reference.iter_mut().zip(BGNBD_INPUTS) {
            let c = x.names.iter().position(|n| n == name)?;
            let mut v: Vec<f64> = rows.iter().map(|&i| x.get(i, c)).filter(|v| v.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            *r = *v.get(v.len() / 2)?;
        }
        Some(BgnbdExplainer { bgnbd: p.bgnbd, horizon_days: f64::from(horizon_days), reference })
    }

    fn log_odds(&self, v: [f64; 3]) -> f64 {
        let (active, recency, tenure) = (v[0].max(1.0), v[1], v[2]);
        let c = crate::bgnbd::Rfm { x: active - 1.0, t_x: (tenure - recency).max(0.0), t: tenure };
        logit(self.bgnbd.p_no_purchase(&c, self.horizon_days), 1e-12)
    }

    /// Shapley values of the three inputs for one customer's values `v`.
    pub fn shares(&self, v: [f64; 3]) -> [f64; 3] {
        let value = |mask: u8| {
            let mut z = self.reference;
            for (i, zi) in z.iter_mut().enumerate() {
                if mask & (1 << i) != 0 {
                    *zi = v[i];
                }
            }
            self.log_odds(z)
        };
        // Three players: weight 1/3 for the empty and the two-player coalitions, 1/6 for one.
        let mut out = [0.0; 3];
        for (i, o) in out.iter_mut().enumerate() {
            let me = 1u8 << i;
            for s in 0u8..8 {
                if s & me != 0 {
                    continue;
                }
                let w = if s.count_ones() == 1 { 1.0 / 6.0 } else { 1.0 / 3.0 };
                *o += w * (value(s | me) - value(s));
            }
        }
        out
    }
}

impl ChurnModel {
    /// The BG/NBD mix's explainer ([`BgnbdExplainer::at_fit_rows`]); nothing for the other
    /// mixes.
    pub fn add_explainer(
        &mut self,
        x: &FeatureMatrix,
        fit_rows: &[usize],
        p: Option<&crate::bgnbd::Probabilistic>,
        horizon_days: i32,
    ) {
        if self.mix == ChurnMix::Bgnbd {
            self.explain = BgnbdExplainer::at_fit_rows(x, fit_rows, p, horizon_days);
        }
    }

    /// Per-row (GBDT, logistic) log-odds weights, falling back to the GBDT alone for an
    /// artifact without a logistic model.
    fn weights(&self) -> (f64, f64) {
        match &self.logistic {
            Some(_) => self.mix.weights(),
            None => (1.0, 0.0),
        }
    }

    /// Churn probabilities (before calibration).
    pub fn predict(&self, x: &FeatureMatrix) -> Vec<f64> {
        if self.mix == ChurnMix::Bgnbd {
            return bgnbd_churn(x);
        }
        let (wg, wl) = self.weights();
        let g = (wg > 0.0).then(|| self.gbdt.predict(x));
        let l = self.logistic.as_ref().filter(|_| wl > 0.0).map(|l| l.margin(x));
        combine(self.mix, g.as_deref(), l.as_deref())
    }

    /// Probabilities and per-feature contributions to the log-odds (row-major, bias last):
    /// the weighted sum of each model's contributions, so they still add up to the margin.
    pub fn predict_with_contributions(&self, x: &FeatureMatrix) -> (Vec<f64>, Vec<f64>) {
        if self.mix == ChurnMix::Bgnbd {
            let p = bgnbd_churn(x);
            let w = x.cols() + 1;
            let mut c = vec![0.0; x.rows * w];
            let inputs: Option<Vec<usize>> =
                BGNBD_INPUTS.iter().map(|n| x.names.iter().position(|m| m == n)).collect();
            match (&self.explain, inputs) {
                (Some(e), Some(cols)) => {
                    // Each row's shares on its own: rows in parallel, the same numbers.
                    c.par_chunks_mut(w).zip(p.par_iter()).enumerate().with_min_len(1024).for_each(
                        |(r, (row, &pr))| {
                            let v = [x.get(r, cols[0]), x.get(r, cols[1]), x.get(r, cols[2])];
                            let shares = e.shares(v);
                            let margin = logit(pr, 1e-12);
                            for (&k, sh) in cols.iter().zip(shares) {
                                row[k] = if sh.is_finite() { sh } else { 0.0 };
                            }
                            let given: f64 = cols.iter().map(|&k| row[k]).sum();
                            row[w - 1] = margin - given;
                        },
                    );
                }
                // Without an explainer the whole log-odds goes to the BG/NBD's own column.
                _ => {
                    if let Some(k) = x.names.iter().position(|n| n == BGNBD_P_NO_PURCHASE) {
                        for (r, &v) in p.iter().enumerate() {
                            c[r * w + k] = logit(v, 1e-12);
                        }
                    }
                }
            }
            return (p, c);
        }
        let (wg, wl) = self.weights();
        let (g, mut c) = if wg > 0.0 {
            let (p, c) = self.gbdt.predict_with_contributions(x);
            (Some(p), c.into_iter().map(|v| wg * v).collect())
        } else {
            (None, vec![0.0; x.rows * (x.cols() + 1)])
        };
        let l = match &self.logistic {
            Some(l) if wl > 0.0 => {
                for (a, v) in c.iter_mut().zip(l.contributions(x)) {
                    *a += wl * v;
                }
                Some(l.margin(x))
            }
            _ => None,
        };
        (combine(self.mix, g.as_deref(), l.as_deref()), c)
    }
}

impl ChurnModel {
    /// Exact SHAP values of the churn log-odds for the rows `rows` of `x` (every row when
    /// `None`), row-major `rows x (cols + 1)`, the expected value last: the GBDT's by TreeSHAP,
    /// the logistic regression's its coefficient times the standardized value (exact for a
    /// linear model: the value's mean over the fit rows is 0), the BG/NBD mix's the Shapley
    /// shares of its three inputs; a blend's are the weighted sum of its parts', so each row
    /// still adds up to the log-odds scored. `None` when the GBDT's trees do not record their
    /// covers (models trained before fidelis stored them).
    /// Each row's contributions to the churn log-odds (`x.cols() + 1` a row, the bias last):
    /// exact SHAP values ([`Self::shap_values`]) when the model can give them, else path
    /// attributions (trees without covers: models trained before fidelis stored them). The
    /// flag says whether they are exact.
    pub fn explain(&self, x: &FeatureMatrix) -> (Vec<f64>, bool) {
        match self.shap_values(x, None) {
            Some(c) => (c, true),
            None => (self.predict_with_contributions(x).1, false),
        }
    }

    pub fn shap_values(&self, x: &FeatureMatrix, rows: Option<&[usize]>) -> Option<Vec<f64>> {
        let subset;
        let xs = match rows {
            Some(r) => {
                subset = x.select_rows(r);
                &subset
            }
            None => x,
        };
        let (wg, wl) = self.weights();
        if self.mix == ChurnMix::Bgnbd || wg == 0.0 {
            return Some(self.predict_with_contributions(xs).1);
        }
        let mut c: Vec<f64> = self.gbdt.shap(x, rows)?.into_iter().map(|v| wg * v).collect();
        if let Some(l) = self.logistic.as_ref().filter(|_| wl > 0.0) {
            for (a, v) in c.iter_mut().zip(l.contributions(xs)) {
                *a += wl * v;
            }
        }
        Some(c)
    }
}

/// The `bg/nbd` churn mix's probabilities: the BG/NBD probability of no purchase over the
/// horizon, kept inside (0, 1) (0.5 where it is unknown).
pub fn bgnbd_churn(x: &FeatureMatrix) -> Vec<f64> {
    match x.names.iter().position(|n| n == BGNBD_P_NO_PURCHASE) {
        Some(c) => {
            x.column(c).iter().map(|&p| if p.is_finite() { p.clamp(1e-9, 1.0 - 1e-9) } else { 0.5 }).collect()
        }
        None => vec![0.5; x.rows],
    }
}

/// Churn probabilities of any mix: [`bgnbd_churn`] for the BG/NBD alone, else [`combine`].
pub fn churn_of(
    mix: ChurnMix,
    gbdt: Option<&[f64]>,
    logistic_margin: Option<&[f64]>,
    x: &FeatureMatrix,
) -> Vec<f64> {
    match mix {
        ChurnMix::Bgnbd => bgnbd_churn(x),
        _ => combine(mix, gbdt, logistic_margin),
    }
}

/// Churn probabilities of a mix from the GBDT's probabilities and the logistic log-odds
/// (each needed only when the mix uses it; a missing logistic part means the GBDT alone).
pub fn combine(mix: ChurnMix, gbdt: Option<&[f64]>, logistic_margin: Option<&[f64]>) -> Vec<f64> {
    match (gbdt, logistic_margin) {
        (None, None) => Vec::new(),
        (Some(g), None) => g.to_vec(),
        (None, Some(l)) => l.iter().map(|&m| sigmoid(m)).collect(),
        (Some(g), Some(l)) => {
            let (wg, wl) = mix.weights();
            if wl == 0.0 {
                // The GBDT alone: its probabilities as they are (no logit round trip).
                return g.to_vec();
            }
            let margin = |p: f64, m: f64| if wg == 0.0 { m } else { wg * logit(p, 1e-12) + wl * m };
            g.iter().zip(l).map(|(&p, &m)| sigmoid(margin(p, m))).collect()
        }
    }
}

/// CLV predictions of a mix from its GBDT's predictions (squared-loss or Poisson, as the
/// mix says; unused by the BG/NBD alone) and the features.
pub fn combine_clv(mix: ClvMix, gbdt: Vec<f64>, x: &FeatureMatrix) -> Vec<f64> {
    match (mix.uses_bgnbd(), x.names.iter().position(|n| n == BGNBD_REVENUE)) {
        (true, Some(c)) if !mix.uses_gbdt() => {
            x.column(c).iter().map(|&b| if b.is_finite() { b } else { 0.0 }).collect()
        }
        (true, Some(c)) => gbdt
            .iter()
            .zip(x.column(c))
            .map(|(a, b)| if b.is_finite() { 0.5 * (a + b) } else { *a })
            .collect(),
        _ => gbdt,
    }
}

/// The scale a CLV model's SHAP values add up on ([`ClvModel::shap_values`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClvScale {
    /// Revenue over the horizon: a row's values add up to its predicted CLV.
    Revenue,
    /// Its logarithm, the Poisson GBDT's link: a row's values add up to ln(predicted CLV).
    LogRevenue,
}

impl ClvScale {
    pub fn as_str(self) -> &'static str {
        match self {
            ClvScale::Revenue => "revenue",
            ClvScale::LogRevenue => "log_revenue",
        }
    }
}

/// The shipped CLV model.
pub struct ClvModel {
    pub mix: ClvMix,
    pub gbdt: Engine,
    /// Present whenever the mix uses it (and in every model trained since it existed).
    pub poisson: Option<PoissonGbdt>,
}

impl ClvModel {
    /// The Poisson GBDT when the mix starts from it (else the squared-loss GBDT is used).
    fn poisson_part(&self) -> Option<&PoissonGbdt> {
        self.poisson.as_ref().filter(|_| self.mix.uses_poisson())
    }

    pub fn predict(&self, x: &FeatureMatrix) -> Vec<f64> {
        let base = match self.poisson_part() {
            _ if !self.mix.uses_gbdt() => Vec::new(),
            Some(p) => p.predict(x),
            None => self.gbdt.predict(x),
        };
        combine_clv(self.mix, base, x)
    }

    /// Exact SHAP values of the CLV prediction, row-major `rows x (cols + 1)` (the expected
    /// value last), and the scale they add up on: the squared-loss GBDT's TreeSHAP values in
    /// revenue; the Poisson GBDT's on its log scale; the BG/NBD + Gamma-Gamma revenue (a
    /// feature of the model, `bgnbd_expected_revenue`) is its own contribution against a
    /// baseline of none, so a blend (the mean of the two, the GBDT alone where the BG/NBD has
    /// no value) gets half of each. None for the Poisson GBDT blended with the BG/NBD (a mean
    /// of revenue and of an exponential has no scale both add up on) and for trees without
    /// covers.
    pub fn shap_values(&self, x: &FeatureMatrix) -> Option<(Vec<f64>, ClvScale)> {
        let w = x.cols() + 1;
        let bgnbd = x.names.iter().position(|n| n == BGNBD_REVENUE).filter(|_| self.mix.uses_bgnbd());
        let revenue = |r: usize, c: usize| Some(x.get(r, c)).filter(|b| b.is_finite());
        if !self.mix.uses_gbdt() {
            let c = bgnbd?;
            let mut v = vec![0.0; x.rows * w];
            for r in 0..x.rows {
                v[r * w + c] = revenue(r, c).unwrap_or(0.0);
            }
            return Some((v, ClvScale::Revenue));
        }
        let (mut v, scale) = match self.poisson_part() {
            Some(p) => (p.shap(x)?, ClvScale::LogRevenue),
            None => (self.gbdt.shap(x, None)?, ClvScale::Revenue),
        };
        let Some(c) = bgnbd else { return Some((v, scale)) };
        if scale == ClvScale::LogRevenue {
            return None;
        }
        for (r, row) in v.chunks_mut(w).enumerate() {
            if let Some(b) = revenue(r, c) {
                row.iter_mut().for_each(|a| *a *= 0.5);
                row[c] += 0.5 * b;
            }
        }
        Some((v, ClvScale::Revenue))
    }

    /// Trees of the GBDT the mix uses (0 for the BG/NBD alone).
    pub fn n_trees(&self) -> usize {
        match self.poisson_part() {
            _ if !self.mix.uses_gbdt() => 0,
            Some(p) => p.n_trees(),
            None => self.gbdt.n_trees(),
        }
    }

    /// Split-gain importance of the GBDT the mix uses (zeros for the BG/NBD alone).
    pub fn importance_gain(&self, n_features: usize) -> Vec<f64> {
        match self.poisson_part() {
            _ if !self.mix.uses_gbdt() => vec![0.0; n_features],
            Some(p) => p.importance_gain(n_features),
            None => self.gbdt.importance_gain(n_features),
        }
    }
}

/// One candidate's metrics (churn probabilities before calibration).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnCandidate {
    pub name: String,
    pub mix: ChurnMix,
    pub chosen: bool,
    /// Mean ROC AUC of purged models over the out-of-time snapshots (what chooses).
    pub out_of_time_roc_auc: Option<f64>,
    /// Its value per snapshot (or fold), and the standard error of its paired difference to
    /// the best candidate's (0 for the best; absent with fewer than two groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "crate::metrics::nan_as_null_vec")]
    pub out_of_time_groups: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_error: Option<f64>,
    pub validation: ChurnMetrics,
    pub holdout: ChurnMetrics,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClvCandidate {
    pub name: String,
    pub mix: ClvMix,
    pub chosen: bool,
    /// Mean normalized Gini of purged models over the out-of-time snapshots.
    pub out_of_time_normalized_gini: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "crate::metrics::nan_as_null_vec")]
    pub out_of_time_groups: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_error: Option<f64>,
    pub validation: ClvMetrics,
    pub holdout: ClvMetrics,
}

/// One value of the logistic regression's L2 grid and its choice metric (mean out-of-time
/// ROC AUC of the logistic regression alone; validation ROC AUC without purged models).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PenaltyChoice {
    pub l2: f64,
    pub roc_auc: f64,
    pub chosen: bool,
}

/// Every candidate with its validation and holdout metrics, and the rule that chose.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CandidateReport {
    pub rule: String,
    /// What the rule was applied to: out-of-time predictions (and their snapshots) or the
    /// validation snapshot.
    #[serde(default)]
    pub basis: String,
    pub churn: Vec<ChurnCandidate>,
    pub clv: Vec<ClvCandidate>,
    /// The logistic regression's penalty grid, chosen on the same basis (empty in older
    /// models, which had one fixed penalty).
    #[serde(default)]
    pub logistic_l2: Vec<PenaltyChoice>,
}

/// One candidate as a table row: the task, its name, the metric that chose, and the same
/// metric on validation and holdout (ROC AUC for churn, normalized Gini for CLV).
pub struct CandidateRow<'a> {
    pub task: &'static str,
    pub name: &'a str,
    pub choice: Option<f64>,
    /// Standard error of the choice metric's difference to the best candidate.
    pub standard_error: Option<f64>,
    pub validation: f64,
    pub holdout: f64,
    pub chosen: bool,
}

impl CandidateReport {
    /// Churn candidates, then CLV candidates, as rows.
    pub fn rows(&self) -> Vec<CandidateRow<'_>> {
        let churn = self.churn.iter().map(|k| CandidateRow {
            task: "churn",
            name: &k.name,
            choice: k.out_of_time_roc_auc,
            standard_error: k.standard_error,
            validation: k.validation.roc_auc,
            holdout: k.holdout.roc_auc,
            chosen: k.chosen,
        });
        let clv = self.clv.iter().map(|k| CandidateRow {
            task: "CLV",
            name: &k.name,
            choice: k.out_of_time_normalized_gini,
            standard_error: k.standard_error,
            validation: k.validation.normalized_gini,
            holdout: k.holdout.normalized_gini,
            chosen: k.chosen,
        });
        churn.chain(clv).collect()
    }

    /// The logistic regression's penalty grid in one line, when there was a choice to make.
    pub fn penalty_line(&self) -> Option<String> {
        if self.logistic_l2.len() < 2 {
            return None;
        }
        let items: Vec<String> = self
            .logistic_l2
            .iter()
            .map(|p| {
                let auc = if p.roc_auc.is_finite() { format!("{:.4}", p.roc_auc) } else { "-".into() };
                format!("{} -> {auc}{}", p.l2, if p.chosen { " (chosen)" } else { "" })
            })
            .collect();
        Some(format!(
            "Logistic regression L2 penalty, chosen on the same basis (ROC AUC of the logistic regression alone): {}",
            items.join(", ")
        ))
    }

    pub fn churn_choice(&self) -> ChurnMix {
        self.churn.iter().find(|c| c.chosen).map_or(ChurnMix::Gbdt, |c| c.mix)
    }

    pub fn clv_choice(&self) -> ClvMix {
        self.clv.iter().find(|c| c.chosen).map_or(ClvMix::Gbdt, |c| c.mix)
    }
}

/// Index of the best validation value; the earliest wins a tie (candidates are listed from
/// the simplest to the most combined, and the first is the GBDT).
pub fn best_index(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if v.is_finite() && (!values[best].is_finite() || *v > values[best]) {
            best = i;
        }
    }
    best
}

/// Standard error of the mean paired difference between two candidates' per-group metrics
/// (snapshots or folds); `None` with fewer than two groups.
pub fn paired_standard_error(a: &[f64], b: &[f64]) -> Option<f64> {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let g = d.len() as f64;
    if d.len() < 2 {
        return None;
    }
    let mean = d.iter().sum::<f64>() / g;
    let var = d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (g - 1.0);
    Some((var / g).sqrt())
}

/// The one-standard-error rule: the index of the simplest candidate (`simplest_first` lists
/// indices into `means`) whose mean choice metric is within one standard error of the best
/// one's, the error being that of the paired per-group difference to the best (`groups[i]`:
/// candidate `i`'s metric per snapshot or fold). Without groups (or with one), the best; a tie
/// for the best keeps the simpler. Also returns each candidate's standard error.
pub fn one_se_choice(
    means: &[f64],
    groups: &[Vec<f64>],
    simplest_first: &[usize],
) -> (usize, Vec<Option<f64>>) {
    let best = simplest_first
        .iter()
        .copied()
        .filter(|&i| means[i].is_finite())
        .fold(None, |b: Option<usize>, i| match b {
            Some(b) if means[b] >= means[i] => Some(b),
            _ => Some(i),
        })
        .unwrap_or(simplest_first[0]);
    let se: Vec<Option<f64>> = (0..means.len())
        .map(|i| {
            let (a, b) = (groups.get(best)?, groups.get(i)?);
            if i == best {
                return (a.len() >= 2).then_some(0.0);
            }
            paired_standard_error(a, b)
        })
        .collect();
    let chosen = simplest_first
        .iter()
        .copied()
        .find(|&i| means[i].is_finite() && means[i] >= means[best] - se[i].unwrap_or(0.0))
        .unwrap_or(best);
    (chosen, se)
}

pub const RULE: &str = "the simplest candidate whose mean out-of-time ROC AUC (churn) / normalized \
                        Gini (CLV) of models fitted only on labels closed by each snapshot is within \
                        one standard error (of its paired per-snapshot or per-fold difference) of the \
                        best one's; simplest first: churn logistic, GBDT + logistic, GBDT; CLV Poisson \
                        GBDT + BG/NBD, GBDT + BG/NBD, Poisson GBDT, GBDT; the BG/NBD alone (either \
                        task) only when it beats all of them by more than that (the best \
                        validation metric when there is too little history); when the candidates \
                        are not compared on purged models (cross-fitted on one snapshot, or on \
                        validation alone), a CLV GBDT chosen alone ships blended with the BG/NBD, \
                        and the BG/NBD alone ships when it beats the choice on the later validation \
                        snapshot; holdout metrics are reported, never used to choose";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clv_mixes_follow_the_features_and_the_poisson_switch() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let with = names(&["recency_days", BGNBD_REVENUE]);
        assert_eq!(ClvMix::available(&with, true), ClvMix::ALL.to_vec());
        assert_eq!(ClvMix::available(&with, false), vec![ClvMix::Gbdt, ClvMix::BlendBgnbd, ClvMix::Bgnbd]);
        assert_eq!(ClvMix::available(&names(&["recency_days"]), true), vec![ClvMix::Gbdt, ClvMix::Poisson]);
        assert_eq!(ClvMix::available(&names(&["recency_days"]), false), vec![ClvMix::Gbdt]);
    }

    #[test]
    fn bgnbd_reasons_add_up_to_its_log_odds_and_name_the_input_that_moved_it() {
        use crate::bgnbd::{BgNbd, Rfm};
        let bgnbd = BgNbd { r: 0.24, alpha: 4.4 * 7.0, a: 0.79, b: 2.43 };
        let e = BgnbdExplainer { bgnbd, horizon_days: 90.0, reference: [4.0, 20.0, 200.0] };
        let names: Vec<String> = ["recency_days", "tenure_days", "active_days_life", BGNBD_P_NO_PURCHASE]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // (recency, tenure, active days): the reference; a long silence; a loyal regular.
        let rows = [(20.0, 200.0, 4.0), (180.0, 200.0, 4.0), (3.0, 200.0, 30.0)];
        let mut data = Vec::new();
        for col in 0..4 {
            for &(rec, ten, act) in &rows {
                let p = bgnbd.p_no_purchase(&Rfm { x: act - 1.0, t_x: ten - rec, t: ten }, 90.0);
                data.push([rec, ten, act, p][col]);
            }
        }
        let x = FeatureMatrix { names, rows: 3, data };
        // The GBDT part is unused by this mix: any fitted one will do.
        let cfg = crate::config::GbdtConfig { iterations: 1, ..Default::default() };
        let gbdt = Engine::fit(&cfg, crate::train::gbdt::Task::Churn, &x, &[0.0, 1.0, 0.0], None).unwrap();
        let model = ChurnModel { mix: ChurnMix::Bgnbd, gbdt, logistic: None, explain: Some(e) };
        let (p, c) = model.predict_with_contributions(&x);
        for r in 0..3 {
            let row = &c[r * 5..r * 5 + 5];
            assert!((row.iter().sum::<f64>() - logit(p[r], 1e-12)).abs() < 1e-9, "{row:?}");
        }
        // The reference customer: no input moves it.
        assert!(c[0..3].iter().all(|v| v.abs() < 1e-12), "{:?}", &c[0..5]);
        // The long silence: recency pushes the churn score up, and most.
        let silent = &c[5..10];
        assert!(silent[0] > 0.5 && silent[0] > silent[1] && silent[0] > silent[2], "{silent:?}");
        // The regular: many active days and a recent purchase pull it down.
        let regular = &c[10..15];
        assert!(regular[0] < 0.0 && regular[2] < 0.0, "{regular:?}");
    }

    #[test]
    fn shap_values_of_every_mix_add_up_to_the_log_odds_scored() {
        let mut r = crate::rng::Rng::new(11);
        let n = 600;
        let cols: Vec<Vec<f64>> = (0..3).map(|_| (0..n).map(|_| r.uniform() * 4.0).collect()).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| f64::from(u8::from(r.uniform() < sigmoid(cols[0][i] - cols[1][i] * cols[2][i] / 4.0))))
            .collect();
        let mut data: Vec<f64> = cols.concat();
        data[5] = f64::NAN;
        let x = FeatureMatrix { names: vec!["a".into(), "b".into(), "c".into()], rows: n, data };
        let cfg = crate::config::GbdtConfig { iterations: 40, max_depth: 3, ..Default::default() };
        let gbdt = Engine::fit(&cfg, crate::train::gbdt::Task::Churn, &x, &y, None).unwrap();
        let logistic = Logistic::fit(&x, &y, 1.0).unwrap();
        let rows = [0usize, 5, 17, 599];
        for mix in [ChurnMix::Gbdt, ChurnMix::Logistic, ChurnMix::Blend] {
            let model =
                ChurnModel { mix, gbdt: gbdt.clone(), logistic: Some(logistic.clone()), explain: None };
            let p = model.predict(&x);
            let all = model.shap_values(&x, None).unwrap();
            let some = model.shap_values(&x, Some(&rows)).unwrap();
            for (k, &i) in rows.iter().enumerate() {
                let row = &all[i * 4..i * 4 + 4];
                assert!(
                    (row.iter().sum::<f64>() - logit(p[i], 1e-12)).abs() < 1e-9,
                    "{mix:?} row {i}: {row:?}"
                );
                assert_eq!(
                    &some[k * 4..k * 4 + 4],
                    row,
                    "{mix:?}: a subset of rows gives those rows' values"
                );
            }
        }
    }

    #[test]
    fn clv_shap_values_add_up_to_the_prediction_on_their_scale() {
        let mut r = crate::rng::Rng::new(5);
        let n = 500;
        let cols: Vec<Vec<f64>> = (0..3).map(|_| (0..n).map(|_| r.uniform() * 4.0).collect()).collect();
        let y: Vec<f64> =
            (0..n).map(|i| (cols[0][i] * 20.0 + cols[1][i] * cols[2][i] * 5.0) * r.uniform()).collect();
        let mut data: Vec<f64> = cols.concat();
        data[2 * n + 7] = f64::NAN; // a customer without a BG/NBD revenue
        let names = vec!["a".into(), "b".into(), BGNBD_REVENUE.to_string()];
        let x = FeatureMatrix { names, rows: n, data };
        let cfg = crate::config::GbdtConfig { iterations: 30, max_depth: 3, ..Default::default() };
        let gbdt = Engine::fit(&cfg, crate::train::gbdt::Task::Clv, &x, &y, None).unwrap();
        let poisson = PoissonGbdt::fit(&cfg, &x, &y, None).unwrap();
        for mix in ClvMix::ALL {
            let model = ClvModel { mix, gbdt: gbdt.clone(), poisson: Some(poisson.clone()) };
            let pred = model.predict(&x);
            let Some((v, scale)) = model.shap_values(&x) else {
                assert_eq!(mix, ClvMix::PoissonBgnbd, "only the Poisson blend has no additive scale");
                continue;
            };
            assert_eq!(scale == ClvScale::LogRevenue, mix == ClvMix::Poisson, "{mix:?}");
            for (i, row) in v.chunks(4).enumerate() {
                let want = if scale == ClvScale::LogRevenue { pred[i].ln() } else { pred[i] };
                assert!((row.iter().sum::<f64>() - want).abs() < 1e-8, "{mix:?} row {i}: {row:?} vs {want}");
            }
        }
    }

    #[test]
    fn best_index_prefers_earlier_on_ties_and_skips_nan() {
        assert_eq!(best_index(&[0.7, 0.7, 0.69]), 0);
        assert_eq!(best_index(&[0.7, 0.71, 0.71]), 1);
        assert_eq!(best_index(&[f64::NAN, 0.5]), 1);
    }

    #[test]
    fn one_se_rule_keeps_the_simpler_candidate_unless_the_gain_is_clear() {
        // Candidate 1 is simplest, then 0, then 2 (best mean).
        let order = [1, 0, 2];
        // 2 beats 1 by 0.004 with paired differences 0.002, 0.006, 0.004: SE = 0.002/sqrt(3)
        // ~ 0.00115 < 0.004, a clear gain; 0 trails 2 by 0.001 with differences 0.003, -0.001,
        // 0.001: SE 0.00115 > 0.001, within noise, and simpler than 2.
        let groups = vec![vec![0.697, 0.705, 0.701], vec![0.698, 0.698, 0.698], vec![0.700, 0.704, 0.702]];
        let means: Vec<f64> = groups.iter().map(|g| g.iter().sum::<f64>() / 3.0).collect();
        let (chosen, se) = one_se_choice(&means, &groups, &order);
        assert_eq!(chosen, 0);
        assert_eq!(se[2], Some(0.0));
        assert!((se[0].unwrap() - 0.002 / 3f64.sqrt()).abs() < 1e-12, "{se:?}");
        // A constant gap of 0.0005 (no spread, SE 0): 0 loses clearly.
        let tight = vec![vec![0.6995, 0.7035, 0.7015], groups[1].clone(), groups[2].clone()];
        let means: Vec<f64> = tight.iter().map(|g| g.iter().sum::<f64>() / 3.0).collect();
        assert_eq!(one_se_choice(&means, &tight, &order).0, 2);
        // No groups: the best mean; a tie keeps the simpler.
        assert_eq!(one_se_choice(&[0.70, 0.69, 0.71], &[], &order).0, 2);
        assert_eq!(one_se_choice(&[0.71, 0.71, 0.70], &[], &order).0, 1);
    }
}
