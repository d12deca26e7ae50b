//! Uplift models: the change in a customer's churn probability that contacting them causes,
//! learned from the experiment's matured runs (features at the run, group, churn over the
//! horizon after it).
//!
//! Two learners, both on fidelis's GBDT:
//! - **T-learner**: one churn model on the treated customers, one on the controls; uplift =
//!   `P(churn | control, x) - P(churn | treated, x)` (positive = contacting prevents churn).
//! - **Transformed outcome** (the class-transformation approach for an unequal split,
//!   Athey & Imbens 2015): with `e` the treated share and `r = 1 - churn`, the target
//!   `r (T - e) / (e (1 - e))` has the uplift as its expectation given x; one squared-loss
//!   GBDT regresses it. One model sees every row, which helps when the control group is small.
//! - **X-learner** (Künzel et al. 2019): the T-learner's two churn models impute each
//!   customer's effect from the other group's model (treated: `P(churn | control, x) -
//!   churn`; controls: `churn - P(churn | treated, x)`), one squared-loss GBDT per group
//!   regresses those, and the two are mixed by the treated share: `e tau_0(x) + (1 - e)
//!   tau_1(x)` (the effect model of the smaller group weighs more where it is noisier).
//!
//! Rows are taken in the caller's order, which must not depend on the input's (the job sorts
//! them by run and customer id): the same experiment gives byte-identical models.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::config::{GbdtConfig, UpliftConfig};
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;
use crate::train::gbdt::{Gbdt, HistGbdt, Task};
use crate::train::hist::Binned;

/// Which learner an uplift model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Learner {
    TLearner,
    TransformedOutcome,
    XLearner,
}

impl Learner {
    pub const ALL: [Learner; 3] = [Learner::TLearner, Learner::TransformedOutcome, Learner::XLearner];

    pub fn name(self) -> &'static str {
        match self {
            Learner::TLearner => "T-learner",
            Learner::TransformedOutcome => "transformed outcome",
            Learner::XLearner => "X-learner",
        }
    }

    /// How many models a fitted learner holds.
    fn models(self) -> usize {
        match self {
            Learner::TLearner => 2,
            Learner::TransformedOutcome => 1,
            Learner::XLearner => 4,
        }
    }
}

/// A fitted uplift model.
pub struct UpliftModel {
    pub learner: Learner,
    /// Share of treated rows it was fitted on.
    pub treated_share: f64,
    /// T-learner: the treated customers' churn model, then the controls'; transformed
    /// outcome: its one regressor; X-learner: the T-learner's two, then the effect models of
    /// the treated and of the controls.
    models: Vec<HistGbdt>,
}

#[derive(Serialize, Deserialize)]
struct UpliftFile {
    learner: Learner,
    treated_share: f64,
    models: Vec<String>,
}

/// The GBDT settings of the uplift learners: the churn model's, with `[uplift]`'s size and a
/// fixed number of trees (no early stopping: no rows are left over to stop on).
pub fn gbdt_params(base: &GbdtConfig, u: &UpliftConfig) -> GbdtConfig {
    GbdtConfig {
        iterations: u.iterations,
        learning_rate: u.learning_rate,
        max_depth: u.max_depth,
        min_leaf_weight: u.min_leaf_weight,
        ..base.clone()
    }
}

impl UpliftModel {
    /// Fit `learner` on `x` with each row's group (`treated`) and outcome (`churned`, 0/1).
    pub fn fit(
        learner: Learner,
        params: &GbdtConfig,
        x: &FeatureMatrix,
        treated: &[bool],
        churned: &[f64],
    ) -> Result<UpliftModel> {
        let n = x.rows;
        let nt = treated.iter().filter(|&&t| t).count();
        if nt == 0 || nt == n {
            return Err(Error::Model {
                model: "uplift".into(),
                message: format!("{nt} treated of {n} rows: both groups are needed"),
            });
        }
        let e = nt as f64 / n as f64;
        let binned = Binned::new(x, None, params.nbins as usize);
        let models = match learner {
            Learner::TLearner => {
                let rows = |want: bool| (0..n).filter(|&i| treated[i] == want).collect::<Vec<usize>>();
                vec![
                    HistGbdt::fit_binned(params, Task::Churn, &binned, &rows(true), churned, None)?,
                    HistGbdt::fit_binned(params, Task::Churn, &binned, &rows(false), churned, None)?,
                ]
            }
            Learner::TransformedOutcome => {
                let z: Vec<f64> = (0..n)
                    .map(|i| (1.0 - churned[i]) * (f64::from(u8::from(treated[i])) - e) / (e * (1.0 - e)))
                    .collect();
                let rows: Vec<usize> = (0..n).collect();
                vec![HistGbdt::fit_binned(params, Task::Clv, &binned, &rows, &z, None)?]
            }
            Learner::XLearner => {
                let rows = |want: bool| (0..n).filter(|&i| treated[i] == want).collect::<Vec<usize>>();
                let (rt, rc) = (rows(true), rows(false));
                let mt = HistGbdt::fit_binned(params, Task::Churn, &binned, &rt, churned, None)?;
                let mc = HistGbdt::fit_binned(params, Task::Churn, &binned, &rc, churned, None)?;
                let (pt, pc) = (mt.predict(x), mc.predict(x));
                // Each customer's imputed reduction in churn probability.
                let d: Vec<f64> = (0..n)
                    .map(|i| if treated[i] { pc[i] - churned[i] } else { churned[i] - pt[i] })
                    .collect();
                let tau_t = HistGbdt::fit_binned(params, Task::Clv, &binned, &rt, &d, None)?;
                let tau_c = HistGbdt::fit_binned(params, Task::Clv, &binned, &rc, &d, None)?;
                vec![mt, mc, tau_t, tau_c]
            }
        };
        Ok(UpliftModel { learner, treated_share: e, models })
    }

    /// The estimated reduction in churn probability if contacted, per row, in [-1, 1].
    pub fn predict(&self, x: &FeatureMatrix) -> Vec<f64> {
        match (self.learner, self.models.as_slice()) {
            (Learner::TLearner, [treated, control]) => {
                control.predict(x).into_iter().zip(treated.predict(x)).map(|(c, t)| c - t).collect()
            }
            (Learner::TransformedOutcome, [m]) => {
                m.predict(x).into_iter().map(|v| v.clamp(-1.0, 1.0)).collect()
            }
            (Learner::XLearner, [_, _, tau_t, tau_c]) => {
                let e = self.treated_share;
                tau_t
                    .predict(x)
                    .into_iter()
                    .zip(tau_c.predict(x))
                    .map(|(t, c)| (e * c + (1.0 - e) * t).clamp(-1.0, 1.0))
                    .collect()
            }
            _ => vec![f64::NAN; x.rows],
        }
    }

    pub fn to_json(&self) -> Result<String> {
        let file = UpliftFile {
            learner: self.learner,
            treated_share: self.treated_share,
            models: self.models.iter().map(Gbdt::to_json).collect::<Result<_>>()?,
        };
        serde_json::to_string(&file)
            .map_err(|source| Error::Json { context: "writing the uplift model".into(), source })
    }

    /// Read back, checked: the learner's number of models, each a valid tree ensemble.
    pub fn from_json(s: &str) -> Result<UpliftModel> {
        let file: UpliftFile = serde_json::from_str(s)
            .map_err(|source| Error::Json { context: "reading the uplift model".into(), source })?;
        let want = file.learner.models();
        if file.models.len() != want || !(file.treated_share > 0.0 && file.treated_share < 1.0) {
            return Err(Error::Model {
                model: "uplift".into(),
                message: format!(
                    "a {} needs {want} models and a treated share in (0, 1), the file has {} and {}",
                    file.learner.name(),
                    file.models.len(),
                    file.treated_share
                ),
            });
        }
        let models = file.models.iter().map(|m| HistGbdt::from_json(m)).collect::<Result<Vec<_>>>()?;
        Ok(UpliftModel { learner: file.learner, treated_share: file.treated_share, models })
    }
}

/// The experiment's customers at their first selection in matured runs, one row each, in
/// (run, customer id) order: features at the run, group, churn over the horizon after it,
/// and the run's churn probability and expected loss (the rankings the uplift model must
/// beat).
pub struct ExperimentRows {
    pub run: Vec<NaiveDate>,
    pub customer: Vec<String>,
    pub x: FeatureMatrix,
    pub treated: Vec<bool>,
    pub churned: Vec<f64>,
    pub churn_probability: Vec<f64>,
    pub expected_loss: Vec<f64>,
}

impl ExperimentRows {
    /// The distinct runs, oldest first.
    pub fn runs(&self) -> Vec<NaiveDate> {
        let mut runs = self.run.clone();
        runs.dedup();
        runs
    }

    fn rows_where(&self, keep: impl Fn(NaiveDate) -> bool) -> Vec<usize> {
        (0..self.run.len()).filter(|&i| keep(self.run[i])).collect()
    }
}

/// One ranking judged on the held-out run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingScore {
    /// `T-learner`, `transformed outcome`, `churn probability`, `expected loss`.
    pub name: String,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub qini: f64,
    /// Retention of the treated minus the controls' among the top 10% / 30% (overall).
    #[serde(with = "crate::metrics::nan_as_null")]
    pub uplift_at_10: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub uplift_at_30: f64,
    /// The Qini curve, at most [`CURVE_POINTS`] points (share of customers targeted, Qini
    /// value per customer of the run).
    pub curve: Vec<(f64, f64)>,
}

/// Points kept of a Qini curve in the report.
pub const CURVE_POINTS: usize = 101;

impl RankingScore {
    fn of(name: &str, score: &[f64], retained: &[f64], treated: &[bool]) -> RankingScore {
        let (x, q) = crate::qini::qini_curve(retained, score, treated);
        let n = retained.len().max(1) as f64;
        let step = (x.len() as f64 / CURVE_POINTS as f64).max(1.0);
        let mut curve: Vec<(f64, f64)> = (0..CURVE_POINTS)
            .map(|k| (k as f64 * step) as usize)
            .filter(|&i| i < x.len())
            .map(|i| (x[i] / n, q[i] / n))
            .collect();
        if let (Some(&xl), Some(&ql)) = (x.last(), q.last()) {
            curve.push((xl / n, ql / n));
        }
        curve.dedup_by(|a, b| a.0 == b.0);
        let at = |k| crate::qini::uplift_at_k(retained, score, treated, k, crate::qini::AtK::Overall);
        RankingScore {
            name: name.to_string(),
            qini: crate::qini::qini_coefficient(retained, score, treated),
            uplift_at_10: at(0.1),
            uplift_at_30: at(0.3),
            curve,
        }
    }
}

/// How the uplift model was chosen and judged (`metrics.json`, the evaluation report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpliftReport {
    /// Matured runs with a control group, oldest first.
    pub runs: Vec<NaiveDate>,
    /// The latest, held out: the learners are fitted on the others and compared on it.
    pub held_out_run: Option<NaiveDate>,
    pub fit_rows: usize,
    pub held_out_rows: usize,
    pub held_out_treated: usize,
    pub held_out_control: usize,
    /// Every learner and both risk rankings on the held-out run, best Qini first.
    pub rankings: Vec<RankingScore>,
    /// Share of bootstrap resamples of the held-out run on which the best learner's Qini is
    /// above both risk rankings'.
    #[serde(default)]
    pub win_share: Option<f64>,
    /// The learner that ships (refitted on every run), if it beat both risk rankings.
    pub shipped: Option<Learner>,
    /// One sentence: what was done and why.
    pub why: String,
}

impl UpliftReport {
    /// The report when the experiment has fewer matured runs than `min_runs` (at least two:
    /// one to fit on, one to judge on).
    pub fn too_few(runs: Vec<NaiveDate>, min_runs: usize) -> UpliftReport {
        UpliftReport {
            why: format!(
                "no uplift model: {} matured run(s) with a control group, {} needed ([uplift] min_runs)",
                runs.len(),
                min_runs.max(2)
            ),
            runs,
            held_out_run: None,
            fit_rows: 0,
            held_out_rows: 0,
            held_out_treated: 0,
            held_out_control: 0,
            rankings: Vec::new(),
            win_share: None,
            shipped: None,
        }
    }
}

/// Bootstrap resamples of the held-out customers that judge whether a learner's lead is real.
pub const BOOTSTRAP: usize = 200;

/// The share of `resamples` bootstrap resamples of the rows (drawn with replacement, seeded:
/// the same rows give the same share) on which `score`'s Qini coefficient is above each of
/// `others`'.
pub fn bootstrap_wins(
    retained: &[f64],
    treated: &[bool],
    score: &[f64],
    others: &[&[f64]],
    resamples: usize,
) -> f64 {
    let n = retained.len();
    if n == 0 || resamples == 0 {
        return f64::NAN;
    }
    let mut rng = crate::rng::Rng::new(0x5eed_u64);
    let mut wins = 0;
    for _ in 0..resamples {
        let idx: Vec<usize> = (0..n).map(|_| ((rng.uniform() * n as f64) as usize).min(n - 1)).collect();
        let take = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        let (y, t): (Vec<f64>, Vec<bool>) = idx.iter().map(|&i| (retained[i], treated[i])).unzip();
        let q = crate::qini::qini_coefficient(&y, &take(score), &t);
        if others.iter().all(|o| {
            let qo = crate::qini::qini_coefficient(&y, &take(o), &t);
            q > qo || (q.is_finite() && !qo.is_finite())
        }) {
            wins += 1;
        }
    }
    wins as f64 / resamples as f64
}

/// Choose and fit the uplift model: with at least `min_runs` runs, each learner is fitted on
/// every run but the latest and judged there by the Qini coefficient beside the run's own
/// rankings by churn probability and by expected loss; the best learner ships (refitted on
/// every run) only if its Qini is above both, and so on at least `confidence` of
/// [`BOOTSTRAP`] bootstrap resamples of the held-out customers (a lead the noise of one run
/// could give does not ship).
pub fn choose(
    rows: &ExperimentRows,
    params: &GbdtConfig,
    min_runs: usize,
    confidence: f64,
) -> Result<(UpliftReport, Option<UpliftModel>)> {
    let runs = rows.runs();
    let mut report = UpliftReport::too_few(runs.clone(), min_runs);
    let Some(&held) = runs.last().filter(|_| min_runs > 0 && runs.len() >= min_runs.max(2)) else {
        return Ok((report, None));
    };
    let (fit, test) = (rows.rows_where(|r| r != held), rows.rows_where(|r| r == held));
    let xf = rows.x.select_rows(&fit);
    let xt = rows.x.select_rows(&test);
    let pick = |v: &[f64], idx: &[usize]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let tf: Vec<bool> = fit.iter().map(|&i| rows.treated[i]).collect();
    let tt: Vec<bool> = test.iter().map(|&i| rows.treated[i]).collect();
    let retained: Vec<f64> = test.iter().map(|&i| 1.0 - rows.churned[i]).collect();
    report.held_out_run = Some(held);
    report.fit_rows = fit.len();
    report.held_out_rows = test.len();
    report.held_out_treated = tt.iter().filter(|&&t| t).count();
    report.held_out_control = test.len() - report.held_out_treated;
    let mut learners = Vec::new();
    for learner in Learner::ALL {
        match UpliftModel::fit(learner, params, &xf, &tf, &pick(&rows.churned, &fit)) {
            Ok(m) => {
                let u = m.predict(&xt);
                learners.push((learner, RankingScore::of(learner.name(), &u, &retained, &tt), u));
            }
            Err(e) => log::warn!("uplift {}: {e}", learner.name()),
        }
    }
    let (p, el) = (pick(&rows.churn_probability, &test), pick(&rows.expected_loss, &test));
    let risk = RankingScore::of("churn probability", &p, &retained, &tt);
    let loss = RankingScore::of("expected loss", &el, &retained, &tt);
    let bar = risk.qini.max(loss.qini);
    let best = learners
        .iter()
        .filter(|(_, s, _)| s.qini.is_finite())
        .max_by(|a, b| a.1.qini.total_cmp(&b.1.qini))
        .cloned();
    report.rankings = learners.iter().map(|(_, s, _)| s.clone()).chain([risk, loss]).collect();
    report.rankings.sort_by(|a, b| b.qini.total_cmp(&a.qini));
    if let Some((_, _, u)) = &best {
        report.win_share = Some(bootstrap_wins(&retained, &tt, u, &[&p, &el], BOOTSTRAP));
    }
    let sure = report.win_share.is_some_and(|w| w >= confidence);
    let model = match best {
        Some((learner, s, _)) if sure && s.qini > bar || (s.qini.is_finite() && !bar.is_finite()) => {
            let all: Vec<usize> = (0..rows.run.len()).collect();
            let m = UpliftModel::fit(learner, params, &rows.x, &rows.treated, &pick(&rows.churned, &all))?;
            report.shipped = Some(learner);
            report.why = format!(
                "the {} ships (refitted on {} customers of {} runs): on the held-out run {held} its Qini \
                 coefficient {:.4} is above ranking by churn probability and by expected loss (best {:.4}), \
                 on {:.0}% of {BOOTSTRAP} bootstrap resamples of its customers",
                learner.name(),
                rows.run.len(),
                runs.len(),
                s.qini,
                bar,
                100.0 * report.win_share.unwrap_or(f64::NAN)
            );
            Some(m)
        }
        Some((learner, s, _)) => {
            report.why = format!(
                "no uplift model ships: on the held-out run {held} the best learner ({}, Qini {:.4}) is above \
                 ranking by churn probability and by expected loss (best {:.4}) on {:.0}% of {BOOTSTRAP} \
                 bootstrap resamples of its customers, not the {:.0}% [uplift] ship_confidence asks",
                learner.name(),
                s.qini,
                bar,
                100.0 * report.win_share.unwrap_or(f64::NAN),
                100.0 * confidence
            );
            None
        }
        None => {
            report.why =
                format!("no uplift model ships: no learner could be fitted on the runs before {held}");
            None
        }
    };
    Ok((report, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Customers with a known uplift that depends on the features, not on risk alone: x0 =
    /// recency-like (risk rises with it), x1 decides who is persuadable (+0.3 when x1 > 0.5),
    /// and contacting customers with x0 < 0.2 annoys them (-0.2).
    fn experiment(n: usize, seed: u64, treated_share: f64) -> (FeatureMatrix, Vec<bool>, Vec<f64>, Vec<f64>) {
        let mut r = Rng::new(seed);
        let (mut a, mut b, mut t, mut y, mut truth) = (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let (x0, x1) = (r.uniform(), r.uniform());
            let base = 0.2 + 0.5 * x0;
            let effect = if x0 < 0.2 {
                -0.2
            } else if x1 > 0.5 {
                0.3
            } else {
                0.0
            };
            let treated = r.uniform() < treated_share;
            let p = if treated { base - effect } else { base };
            a.push(x0);
            b.push(x1);
            t.push(treated);
            y.push(f64::from(u8::from(r.uniform() < p.clamp(0.0, 1.0))));
            truth.push(effect);
        }
        let mut data = a;
        data.extend(b);
        (FeatureMatrix { names: vec!["x0".into(), "x1".into()], rows: n, data }, t, y, truth)
    }

    #[test]
    fn both_learners_rank_by_the_true_effect_and_read_back_identically() {
        let (x, t, y, _) = experiment(20_000, 3, 0.7);
        let (xh, th, yh, truth) = experiment(10_000, 4, 0.7);
        let params = gbdt_params(&GbdtConfig::default(), &UpliftConfig::default());
        let retained: Vec<f64> = yh.iter().map(|v| 1.0 - v).collect();
        let oracle = crate::qini::qini_coefficient(&retained, &truth, &th);
        let risk: Vec<f64> = (0..xh.rows).map(|i| xh.get(i, 0)).collect();
        let by_risk = crate::qini::qini_coefficient(&retained, &risk, &th);
        for learner in Learner::ALL {
            let m = UpliftModel::fit(learner, &params, &x, &t, &y).unwrap();
            let u = m.predict(&xh);
            let q = crate::qini::qini_coefficient(&retained, &u, &th);
            assert!(
                q > by_risk && q > 0.6 * oracle,
                "{}: Qini {q:.3}, risk {by_risk:.3}, oracle {oracle:.3}",
                learner.name()
            );
            eprintln!("{}: Qini {q:.3}, risk {by_risk:.3}, oracle {oracle:.3}", learner.name());
            let back = UpliftModel::from_json(&m.to_json().unwrap()).unwrap();
            assert_eq!(back.predict(&xh), u);
        }
        assert!(UpliftModel::fit(Learner::TLearner, &params, &x, &vec![true; x.rows], &y).is_err());
    }
}
