//! Time to churn (churn as a cancellation): a discrete-time hazard model, the GBDT on
//! person-period rows.
//!
//! Each snapshot row (a live subscriber at `t`, its features) becomes one row per month of the
//! year after `t` it was still subscribed and observed ([`features::PERIOD_ENDS`]: 30, 60, 90,
//! ..., 330, 365 days): the row's features, the period's index and whether the subscription's
//! known renewal falls in it; the label says whether it cancelled in that period. The log-loss
//! GBDT on these rows is the hazard `h_k(x)`; the survival `S(e_k) = prod_{j <= k} (1 - h_j)`.
//! From it: `S` at 30, 60, 90, 180 and 365 days, the restricted mean lifetime over the year
//! (the area under `S`, linear within a period), and the subscription CLV, the MRR of each
//! month times the probability to be subscribed at its start, discounted.
//!
//! A period is observed when it ends by the end of the data (or, for the evaluated model, by the
//! holdout snapshot: nothing it learns happened after it); the first unobserved period censors.
//! The candidates (GBDT, logistic at each penalty, their blend) are fitted on four fifths of
//! the fit customers (the GBDT early-stopped on the other fifth) and chosen by Harrell's C on
//! the validation rows, which none of them has seen.
//!
//! Metrics on the holdout rows: Harrell's concordance of the restricted mean (observed times
//! censored at the end of the data), the integrated Brier score over the observed periods with
//! inverse-probability-of-censoring weights (Graf et al. 1999), and the calibration of `S(90)`
//! (ECE of `1 - S(90)` against churn in 90 days). The baseline is the shifted-beta-geometric
//! model (Fader & Hardie 2007) per billing cohort (monthly, annual, other), fitted on the same
//! person-period rows by tenure in months.

use serde::{Deserialize, Serialize};

use crate::config::GbdtConfig;
use crate::error::{Error, Result};
use crate::features::{FeatureMatrix, PERIOD_ENDS};
use crate::train::gbdt::{Gbdt, HistGbdt, Task};

/// The days `S` is reported at.
pub const REPORTED: [i32; 5] = [30, 60, 90, 180, 365];

/// The columns a person-period row adds to the snapshot features.
pub const PERIOD_FEATURES: [&str; 2] = ["period", "renewal_in_period"];

/// How many periods of a row starting on day `t` end by day `until`, and whether the last of
/// them is the one it cancelled in (`cancel_period`: -1 for none).
pub fn follow_up(t: i32, cancel_period: i32, until: i32) -> (usize, bool) {
    let observed = PERIOD_ENDS.iter().take_while(|&&e| t + e <= until).count();
    match usize::try_from(cancel_period) {
        Ok(k) if k < observed => (k + 1, true),
        _ => (observed, false),
    }
}

/// The first day of period `k` (days after the snapshot).
fn period_start(k: usize) -> i32 {
    if k == 0 {
        0
    } else {
        PERIOD_ENDS[k - 1]
    }
}

/// The person-period value of the renewal feature: 1 when the renewal (`days_to_renewal`
/// at the snapshot; negative: unknown) falls in period `k`, 0 when not, -1 unknown.
fn renewal_in(days_to_renewal: f64, k: usize) -> f64 {
    if days_to_renewal < 0.0 || days_to_renewal.is_nan() {
        -1.0
    } else {
        let d = days_to_renewal;
        f64::from(u8::from(d > f64::from(period_start(k)) && d <= f64::from(PERIOD_ENDS[k])))
    }
}

/// Person-period rows of `x`'s rows `rows`: `periods[i]` periods of row `rows[i]` (period
/// index and renewal feature appended, see [`PERIOD_FEATURES`]).
fn expand(x: &FeatureMatrix, rows: &[usize], periods: &[usize], renewal: Option<usize>) -> FeatureMatrix {
    let n: usize = periods.iter().sum();
    let f = x.names.len();
    let mut data = Vec::with_capacity(n * (f + 2));
    for c in 0..f {
        let col = x.column(c);
        for (&r, &p) in rows.iter().zip(periods) {
            data.extend(std::iter::repeat_n(col[r], p));
        }
    }
    for (&_r, &p) in rows.iter().zip(periods) {
        data.extend((0..p).map(|k| k as f64));
    }
    for (&r, &p) in rows.iter().zip(periods) {
        let d = renewal.map_or(-1.0, |c| x.column(c)[r]);
        data.extend((0..p).map(|k| renewal_in(d, k)));
    }
    let mut names = x.names.clone();
    names.extend(PERIOD_FEATURES.iter().map(|s| s.to_string()));
    FeatureMatrix { names, rows: n, data }
}

/// The training rows of the hazard model from snapshot rows `rows` observed until `until`.
pub fn person_periods(
    x: &FeatureMatrix,
    rows: &[usize],
    days: &[i32],
    cancel_period: &[i32],
    until: i32,
) -> (FeatureMatrix, Vec<f64>) {
    let follow: Vec<(usize, bool)> =
        rows.iter().map(|&r| follow_up(days[r], cancel_period[r], until)).collect();
    let periods: Vec<usize> = follow.iter().map(|f| f.0).collect();
    let mut y = Vec::with_capacity(periods.iter().sum());
    for &(p, event) in &follow {
        y.extend((0..p).map(|k| f64::from(u8::from(event && k + 1 == p))));
    }
    (expand(x, rows, &periods, renewal_column(x)), y)
}

fn renewal_column(x: &FeatureMatrix) -> Option<usize> {
    x.names.iter().position(|n| n == "sub_days_to_renewal")
}

/// Which hazard model ships: the GBDT, the L2 logistic regression (on signed-log1p
/// standardized features, the period as a number), or their blend (mean log-odds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SurvivalMix {
    Gbdt,
    Logistic,
    Blend,
}

impl SurvivalMix {
    pub fn name(self) -> &'static str {
        match self {
            SurvivalMix::Gbdt => "gbdt",
            SurvivalMix::Logistic => "logistic",
            SurvivalMix::Blend => "gbdt + logistic",
        }
    }
}

/// The fitted hazard model.
pub struct SurvivalModel {
    pub mix: SurvivalMix,
    pub gbdt: HistGbdt,
    pub logistic: crate::train::linear::Logistic,
}

/// `survival.json`.
#[derive(Serialize, Deserialize)]
struct SurvivalFile {
    mix: SurvivalMix,
    /// The GBDT's own JSON.
    gbdt: String,
    logistic: crate::train::linear::Logistic,
}

/// Survival curves of some rows: `S` at the end of each period, row-major.
pub struct Curves {
    pub s: Vec<[f64; PERIOD_ENDS.len()]>,
}

impl SurvivalModel {
    /// Fit both hazard models on the person-period rows of `fit` (the GBDT early-stopped on
    /// those of `valid`; without, exactly `params.iterations` trees) with mix `mix`.
    pub fn fit(
        params: &GbdtConfig,
        l2: f64,
        mix: SurvivalMix,
        fit: (&FeatureMatrix, &[f64]),
        valid: Option<(&FeatureMatrix, &[f64])>,
    ) -> Result<SurvivalModel> {
        if fit.1.iter().all(|&v| v == 0.0) {
            return Err(Error::Model {
                model: "survival".into(),
                message: "no cancellation among the observed periods: nothing to learn the hazard from"
                    .into(),
            });
        }
        let gbdt = HistGbdt::fit(params, Task::Churn, fit.0, fit.1, valid)?;
        let logistic = crate::train::linear::Logistic::fit(fit.0, fit.1, l2)?;
        Ok(SurvivalModel { mix, gbdt, logistic })
    }

    /// The same models with another mix.
    pub fn with_mix(self, mix: SurvivalMix) -> SurvivalModel {
        SurvivalModel { mix, ..self }
    }

    fn hazards(&self, pp: &FeatureMatrix) -> Vec<f64> {
        match self.mix {
            SurvivalMix::Gbdt => self.gbdt.predict(pp),
            SurvivalMix::Logistic => self.logistic.predict(pp),
            SurvivalMix::Blend => {
                let (a, b) = (self.gbdt.predict(pp), self.logistic.predict(pp));
                let logit = |p: f64| crate::math::logit(p, 1e-12);
                a.iter().zip(&b).map(|(&a, &b)| crate::math::sigmoid((logit(a) + logit(b)) / 2.0)).collect()
            }
        }
    }

    /// `S` at each period end for every row of `x` (the snapshot features).
    pub fn curves(&self, x: &FeatureMatrix) -> Curves {
        let rows: Vec<usize> = (0..x.rows).collect();
        let periods = vec![PERIOD_ENDS.len(); x.rows];
        let h = self.hazards(&expand(x, &rows, &periods, renewal_column(x)));
        // `expand` lays the periods of a row one after the other.
        let s = h
            .chunks(PERIOD_ENDS.len())
            .map(|hz| {
                let mut out = [0.0; PERIOD_ENDS.len()];
                let mut alive = 1.0;
                for (k, &p) in hz.iter().enumerate() {
                    alive *= 1.0 - p;
                    out[k] = alive;
                }
                out
            })
            .collect();
        Curves { s }
    }

    pub fn to_json(&self) -> Result<String> {
        let file =
            SurvivalFile { mix: self.mix, gbdt: self.gbdt.to_json()?, logistic: self.logistic.clone() };
        serde_json::to_string(&file)
            .map_err(|e| Error::Model { model: "survival".into(), message: e.to_string() })
    }

    pub fn from_json(s: &str) -> Result<SurvivalModel> {
        let f: SurvivalFile = serde_json::from_str(s)
            .map_err(|e| Error::Model { model: "survival".into(), message: e.to_string() })?;
        Ok(SurvivalModel { mix: f.mix, gbdt: HistGbdt::from_json(&f.gbdt)?, logistic: f.logistic })
    }
}

impl Curves {
    /// `S(d)` for `d` a period end.
    pub fn at(&self, row: usize, d: i32) -> f64 {
        PERIOD_ENDS.iter().position(|&e| e == d).map_or(f64::NAN, |k| self.s[row][k])
    }

    /// `S(d)` for any day `d` in `[0, 365]`, linear within a period; `None` beyond.
    pub fn interpolate(&self, row: usize, d: i32) -> Option<f64> {
        if !(0..=PERIOD_ENDS[PERIOD_ENDS.len() - 1]).contains(&d) {
            return None;
        }
        let k = PERIOD_ENDS.iter().position(|&e| d <= e)?;
        let (a, b) = (period_start(k), PERIOD_ENDS[k]);
        let before = if k == 0 { 1.0 } else { self.s[row][k - 1] };
        Some(before + (self.s[row][k] - before) * f64::from(d - a) / f64::from(b - a))
    }

    /// The restricted mean lifetime over the year, in days: the area under `S`, linear
    /// within each period, from `S(0) = 1`.
    pub fn rmst(&self, row: usize) -> f64 {
        let mut area = 0.0;
        let mut prev = 1.0;
        for (k, &s) in self.s[row].iter().enumerate() {
            area += f64::from(PERIOD_ENDS[k] - period_start(k)) * (prev + s) / 2.0;
            prev = s;
        }
        area
    }

    /// The subscription CLV over the year: `mrr` for each month times the probability of
    /// being subscribed at its start, discounted at `annual_rate` (monthly compounding).
    pub fn subscription_clv(&self, row: usize, mrr: f64, annual_rate: f64) -> f64 {
        let monthly = (1.0 + annual_rate).powf(1.0 / 12.0);
        (0..PERIOD_ENDS.len())
            .map(|k| {
                let alive = if k == 0 { 1.0 } else { self.s[row][k - 1] };
                mrr * alive / monthly.powi(k as i32)
            })
            .sum()
    }
}

/// Harrell's concordance: among pairs where the shorter observed time ends in an event, the
/// share where that row has the higher `risk` (ties in risk count one half; pairs with equal
/// times count when exactly one is an event and that one is taken as the shorter).
///
/// `O(n log n)`: rows by time, longest first, counted into a Fenwick tree over the risk ranks;
/// each event is compared with every row of a longer time (and the censored rows of its own).
pub fn harrell_c(time: &[f64], event: &[bool], risk: &[f64]) -> f64 {
    let n = time.len();
    let mut levels: Vec<f64> = risk.to_vec();
    levels.sort_by(f64::total_cmp);
    levels.dedup_by(|a, b| a.total_cmp(b).is_eq());
    let rank = |v: f64| levels.partition_point(|l| l.total_cmp(&v).is_lt());
    let mut tree = vec![0u64; levels.len() + 1];
    let add = |tree: &mut [u64], k: usize| {
        let mut i = k + 1;
        while i < tree.len() {
            tree[i] += 1;
            i += i & i.wrapping_neg();
        }
    };
    // Rows inserted with a risk rank below `k`.
    let below = |tree: &[u64], k: usize| {
        let (mut i, mut sum) = (k, 0u64);
        while i > 0 {
            sum += tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| time[b].total_cmp(&time[a]));
    let (mut concordant, mut comparable) = (0.0, 0.0);
    let mut inserted = 0u64;
    let mut g = 0;
    while g < n {
        let mut end = g;
        while end < n && time[order[end]] == time[order[g]] {
            end += 1;
        }
        let group = &order[g..end];
        for &j in group.iter().filter(|&&j| !event[j]) {
            add(&mut tree, rank(risk[j]));
            inserted += 1;
        }
        for &i in group.iter().filter(|&&i| event[i]) {
            let k = rank(risk[i]);
            let (lower, upto) = (below(&tree, k), below(&tree, k + 1));
            concordant += lower as f64 + 0.5 * (upto - lower) as f64;
            comparable += inserted as f64;
        }
        for &i in group.iter().filter(|&&i| event[i]) {
            add(&mut tree, rank(risk[i]));
            inserted += 1;
        }
        g = end;
    }
    if comparable > 0.0 {
        concordant / comparable
    } else {
        f64::NAN
    }
}

/// Kaplan-Meier estimate of the censoring survival `G` at each period end (censoring is the
/// "event"; a cancellation censors the censoring), from observed (periods, event) pairs.
fn censoring_km(follow: &[(usize, bool)]) -> [f64; PERIOD_ENDS.len()] {
    let mut g = [1.0; PERIOD_ENDS.len()];
    let mut alive = 1.0;
    for (k, gk) in g.iter_mut().enumerate() {
        // At risk of being censored at the end of period k: observed through period k.
        let at_risk = follow.iter().filter(|f| f.0 > k).count() as f64;
        // Censored right after period k: observed exactly k + 1 periods, no event; the last
        // period has no "after" within the year.
        let censored = follow.iter().filter(|f| f.0 == k + 1 && !f.1).count() as f64;
        if at_risk > 0.0 && k + 1 < PERIOD_ENDS.len() {
            alive *= 1.0 - censored / at_risk;
        }
        *gk = alive;
    }
    g
}

/// The integrated Brier score over the first `periods` period ends (weighted by their
/// lengths), with inverse-probability-of-censoring weights, of curves `s` for rows followed
/// as `follow` says.
pub fn integrated_brier(s: &[[f64; PERIOD_ENDS.len()]], follow: &[(usize, bool)], periods: usize) -> f64 {
    if periods == 0 || s.is_empty() {
        return f64::NAN;
    }
    let g = censoring_km(follow);
    let n = s.len() as f64;
    let (mut total, mut span) = (0.0, 0.0);
    for k in 0..periods.min(PERIOD_ENDS.len()) {
        let mut b = 0.0;
        for (curve, &(p, event)) in s.iter().zip(follow) {
            let sk = curve[k];
            if event && p <= k + 1 {
                // Cancelled by the end of period k: observed in period p - 1, weighted by G
                // just before it.
                let w = if p >= 2 { g[p - 2] } else { 1.0 };
                b += sk * sk / w.max(1e-9);
            } else if p > k + 1 || (p == k + 1 && !event) {
                // Known subscribed at the end of period k, weighted by G just before it.
                let w = if k >= 1 { g[k - 1] } else { 1.0 };
                b += (1.0 - sk) * (1.0 - sk) / w.max(1e-9);
            }
        }
        let len = f64::from(PERIOD_ENDS[k] - period_start(k));
        total += len * b / n;
        span += len;
    }
    total / span
}

/// The shifted-beta-geometric model of one cohort: the churn probability `theta` of a
/// subscriber is Beta(alpha, beta) across subscribers; the hazard in its `m`-th month
/// (1-based) is `alpha / (alpha + beta + m - 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sbg {
    pub alpha: f64,
    pub beta: f64,
}

impl Sbg {
    pub fn hazard(&self, month: f64) -> f64 {
        self.alpha / (self.alpha + self.beta + month - 1.0)
    }

    /// Fit by maximum likelihood on (month of tenure, cancelled) person-period rows: a
    /// coarse grid on log alpha, log beta, then coordinate refinement.
    pub fn fit(rows: &[(f64, bool)]) -> Option<Sbg> {
        if rows.is_empty() || !rows.iter().any(|r| r.1) {
            return None;
        }
        // The likelihood depends on a row through its month and label only: counted once.
        let mut counts: std::collections::BTreeMap<u64, (f64, f64, f64)> = Default::default();
        for &(month, y) in rows {
            let e = counts.entry(month.to_bits()).or_insert((month, 0.0, 0.0));
            if y {
                e.1 += 1.0;
            } else {
                e.2 += 1.0;
            }
        }
        let ll = |a: f64, b: f64| -> f64 {
            let m = Sbg { alpha: a, beta: b };
            counts
                .values()
                .map(|&(month, events, kept)| {
                    let h = m.hazard(month).clamp(1e-12, 1.0 - 1e-12);
                    events * h.ln() + kept * (1.0 - h).ln()
                })
                .sum()
        };
        let (mut la, mut lb) = (0.0f64, 0.0f64);
        let mut best = f64::NEG_INFINITY;
        for i in -20..=20 {
            for j in -20..=40 {
                let (a, b) = (f64::from(i) * 0.35, f64::from(j) * 0.35);
                let v = ll(a.exp(), b.exp());
                if v > best {
                    (best, la, lb) = (v, a, b);
                }
            }
        }
        let mut step = 0.2;
        while step > 1e-4 {
            let mut moved = false;
            for (da, db) in [(step, 0.0), (-step, 0.0), (0.0, step), (0.0, -step)] {
                let v = ll((la + da).exp(), (lb + db).exp());
                if v > best {
                    (best, la, lb) = (v, la + da, lb + db);
                    moved = true;
                }
            }
            if !moved {
                step /= 2.0;
            }
        }
        Some(Sbg { alpha: la.exp(), beta: lb.exp() })
    }
}

/// What the holdout says of a survival model (or a baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalEval {
    /// Harrell's C of the restricted mean lifetime on the holdout.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub concordance: f64,
    /// Integrated Brier score over the periods every holdout row could be observed for.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub integrated_brier: f64,
    /// ECE of `1 - S(90)` against churn in 90 days.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub s90_ece: f64,
    /// Mean predicted `1 - S(90)` and the observed churn rate in 90 days.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub s90_predicted: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub s90_observed: f64,
}

/// One candidate hazard model, judged out of time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalCandidate {
    pub mix: SurvivalMix,
    /// The logistic part's penalty (the GBDT alone has none: the chosen one is shown).
    pub l2: f64,
    /// Mean Harrell's C of purged models over the purged snapshots (see [`train`]).
    #[serde(with = "crate::metrics::nan_as_null", default = "nan")]
    pub out_of_time_concordance: f64,
    #[serde(default)]
    pub out_of_time_groups: Vec<f64>,
    /// Of the paired per-snapshot difference to the best candidate.
    #[serde(default)]
    pub standard_error: Option<f64>,
    #[serde(default)]
    pub chosen: bool,
    /// On the holdout rows: for information, never for the choice.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub holdout_concordance: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// The survival part of `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalReport {
    /// The shipped hazard model and its logistic part's penalty.
    pub mix: SurvivalMix,
    pub l2: f64,
    /// What the candidates were chosen on.
    #[serde(default)]
    pub basis: String,
    pub candidates: Vec<SurvivalCandidate>,
    /// The hazard GBDT on the holdout.
    pub model: SurvivalEval,
    /// The sBG baseline per billing cohort on the same rows.
    pub sbg: SurvivalEval,
    /// The fitted sBG of each cohort (months per billing period: "1", "12", "other").
    pub sbg_cohorts: std::collections::BTreeMap<String, Sbg>,
    /// Person-period rows the evaluated model was fitted on, and the shipped one.
    pub fit_periods: usize,
    pub deployed_periods: usize,
    pub trees: usize,
    /// Holdout rows and the periods each could be observed for (all of them).
    pub holdout_rows: usize,
    pub holdout_periods: usize,
    /// Subscription CLV against the holdout's revenue over the horizon: normalized Gini of
    /// sum(MRR x S) and of the MRR x tenure baseline.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub clv_gini: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub clv_gini_mrr_tenure: f64,
    /// Observed (Kaplan-Meier) against predicted survival on the holdout, by predicted risk.
    #[serde(default)]
    pub curves: Vec<CurveGroup>,
}

/// Observed against predicted survival of a group of holdout rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveGroup {
    pub name: String,
    pub rows: usize,
    /// Mean predicted `S` at each period end ([`PERIOD_ENDS`]).
    pub predicted: Vec<f64>,
    /// The sBG baseline's mean `S` at each period end.
    pub sbg: Vec<f64>,
    /// Kaplan-Meier `S` at each period end the group is observed through (at least
    /// [`MIN_AT_RISK`] rows at risk), in order; shorter than `predicted` when the data ends.
    pub observed: Vec<f64>,
}

/// Rows at risk below which a Kaplan-Meier step is not reported.
pub const MIN_AT_RISK: usize = 20;

/// Kaplan-Meier `S` at each period end of rows followed as `follow`, while at least
/// [`MIN_AT_RISK`] are at risk.
pub fn kaplan_meier(follow: &[(usize, bool)]) -> Vec<f64> {
    let mut out = Vec::new();
    let mut alive = 1.0;
    for k in 0..PERIOD_ENDS.len() {
        let at_risk = follow.iter().filter(|f| f.0 > k).count();
        if at_risk < MIN_AT_RISK {
            break;
        }
        let events = follow.iter().filter(|f| f.1 && f.0 == k + 1).count();
        alive *= 1.0 - events as f64 / at_risk as f64;
        out.push(alive);
    }
    out
}

/// The holdout's curve groups: every row, then thirds by predicted restricted mean lifetime
/// (shortest first).
fn curve_groups(
    model: &[[f64; PERIOD_ENDS.len()]],
    sbg: &[[f64; PERIOD_ENDS.len()]],
    follow: &[(usize, bool)],
) -> Vec<CurveGroup> {
    let curves = Curves { s: model.to_vec() };
    let mut order: Vec<usize> = (0..model.len()).collect();
    order.sort_by(|&a, &b| curves.rmst(a).total_cmp(&curves.rmst(b)).then(a.cmp(&b)));
    let n = order.len();
    let mut parts = vec![("every holdout row".to_string(), order.clone())];
    for (k, name) in ["highest-risk third", "middle third", "lowest-risk third"].iter().enumerate() {
        parts.push((name.to_string(), order[k * n / 3..(k + 1) * n / 3].to_vec()));
    }
    let mean_curve = |s: &[[f64; PERIOD_ENDS.len()]], rows: &[usize]| -> Vec<f64> {
        (0..PERIOD_ENDS.len())
            .map(|k| rows.iter().map(|&r| s[r][k]).sum::<f64>() / rows.len().max(1) as f64)
            .collect()
    };
    parts
        .into_iter()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(name, rows)| {
            let f: Vec<(usize, bool)> = rows.iter().map(|&r| follow[r]).collect();
            CurveGroup {
                name,
                rows: rows.len(),
                predicted: mean_curve(model, &rows),
                sbg: mean_curve(sbg, &rows),
                observed: kaplan_meier(&f),
            }
        })
        .collect()
}

/// The billing cohort of a row from its `sub_billing_months` feature.
pub fn cohort(months: f64) -> &'static str {
    if months == 1.0 {
        "1"
    } else if months == 12.0 {
        "12"
    } else {
        "other"
    }
}

/// The evaluation of curves `s` on holdout rows followed as `follow` (periods observed,
/// cancelled in the last) with their churn label at 90 days.
pub fn evaluate(s: &[[f64; PERIOD_ENDS.len()]], follow: &[(usize, bool)], churn90: &[f64]) -> SurvivalEval {
    let curves = Curves { s: s.to_vec() };
    let rmst: Vec<f64> = (0..s.len()).map(|i| curves.rmst(i)).collect();
    let risk: Vec<f64> = rmst.iter().map(|v| -v).collect();
    let time: Vec<f64> = follow.iter().map(|f| f64::from(PERIOD_ENDS[f.0.max(1) - 1])).collect();
    let event: Vec<bool> = follow.iter().map(|f| f.1).collect();
    let k90 = PERIOD_ENDS.iter().position(|&e| e == 90).unwrap_or(2);
    let p90: Vec<f64> = s.iter().map(|c| 1.0 - c[k90]).collect();
    let observed_all = follow.iter().map(|f| if f.1 { PERIOD_ENDS.len() } else { f.0 }).min().unwrap_or(0);
    SurvivalEval {
        concordance: harrell_c(&time, &event, &risk),
        integrated_brier: integrated_brier(s, follow, observed_all),
        s90_ece: crate::calibration::ece(churn90, &p90, 10),
        s90_predicted: crate::metrics::mean(&p90),
        s90_observed: crate::metrics::mean(churn90),
    }
}

/// The subscription features the survival model and its baseline read, by name.
fn feature(x: &FeatureMatrix, name: &str) -> Option<Vec<f64>> {
    x.names.iter().position(|n| n == name).map(|c| x.column(c).to_vec())
}

/// The sBG curves of the rows `rows` of `x`: each row's cohort's model from its tenure on.
fn sbg_curves(
    cohorts: &std::collections::BTreeMap<String, Sbg>,
    x: &FeatureMatrix,
    rows: &[usize],
) -> Vec<[f64; PERIOD_ENDS.len()]> {
    let months = feature(x, "sub_billing_months").unwrap_or_else(|| vec![-1.0; x.rows]);
    let tenure = feature(x, "sub_tenure_days").unwrap_or_else(|| vec![0.0; x.rows]);
    let pooled = cohorts.get("all").copied();
    rows.iter()
        .map(|&r| {
            let m = cohorts.get(cohort(months[r])).copied().or(pooled);
            let mut out = [1.0; PERIOD_ENDS.len()];
            let mut alive = 1.0;
            let m0 = (tenure[r].max(0.0) / 30.4375).floor();
            for (k, o) in out.iter_mut().enumerate() {
                alive *= 1.0 - m.map_or(0.0, |m| m.hazard(m0 + k as f64 + 1.0));
                *o = alive;
            }
            out
        })
        .collect()
}

/// The sBG of each billing cohort (and of all, `"all"`) on the rows `rows` followed as `follow`.
fn sbg_fit(
    x: &FeatureMatrix,
    rows: &[usize],
    follow: &[(usize, bool)],
) -> std::collections::BTreeMap<String, Sbg> {
    sbg_rows(x, rows, follow).into_iter().filter_map(|(k, v)| Some((k, Sbg::fit(&v)?))).collect()
}

/// The sBG person-period rows (month of tenure, cancelled) of each cohort, and of all.
fn sbg_rows(
    x: &FeatureMatrix,
    rows: &[usize],
    follow: &[(usize, bool)],
) -> std::collections::BTreeMap<String, Vec<(f64, bool)>> {
    let months = feature(x, "sub_billing_months").unwrap_or_else(|| vec![-1.0; x.rows]);
    let tenure = feature(x, "sub_tenure_days").unwrap_or_else(|| vec![0.0; x.rows]);
    let mut out: std::collections::BTreeMap<String, Vec<(f64, bool)>> = Default::default();
    for (&r, &(p, event)) in rows.iter().zip(follow) {
        let m0 = (tenure[r].max(0.0) / 30.4375).floor();
        for k in 0..p {
            let row = (m0 + k as f64 + 1.0, event && k + 1 == p);
            out.entry(cohort(months[r]).to_string()).or_default().push(row);
            out.entry("all".to_string()).or_default().push(row);
        }
    }
    out
}

/// Each row's follow-up as the evaluation sees it: the fit and validation rows until the
/// holdout snapshot, the holdout rows until the end of the data; as (observed days, cancelled)
/// (days 0: nothing observed). `None` without the survival label.
pub fn evaluation_follow_up(
    data: &crate::train::Dataset,
    holdout: i32,
    data_end: i32,
) -> Result<Option<(Vec<i32>, Vec<bool>)>> {
    let Some(cancel) = cancel_periods(data)? else { return Ok(None) };
    let mut until = vec![holdout; data.days.len()];
    for &r in &data.rows.holdout {
        until[r] = data_end;
    }
    let follow: Vec<(usize, bool)> =
        (0..cancel.len()).map(|r| follow_up(data.days[r], cancel[r], until[r])).collect();
    let days = follow.iter().map(|f| if f.0 == 0 { 0 } else { PERIOD_ENDS[f.0 - 1] }).collect();
    Ok(Some((days, follow.iter().map(|f| f.1).collect())))
}

fn cancel_periods(data: &crate::train::Dataset) -> Result<Option<Vec<i32>>> {
    let Ok(cancel) = data.frame.column(crate::features::CANCEL_PERIOD) else { return Ok(None) };
    let cancel: Vec<i32> = cancel
        .cast(&polars::prelude::DataType::Int32)
        .and_then(|c| c.i32().map(|c| c.iter().map(|v| v.unwrap_or(-1)).collect()))
        .map_err(|source| Error::Polars { context: "reading the survival label".into(), source })?;
    Ok(Some(cancel))
}

/// The evaluated model's predictions of the holdout rows (in holdout order): `S(90)` and the
/// restricted mean lifetime.
pub struct HoldoutSurvival {
    pub s90: Vec<f64>,
    pub rmst: Vec<f64>,
}

/// Harrell's C of the restricted mean lifetime of `m`'s curves for rows `x` followed as `follow`.
fn concordance_of(m: &SurvivalModel, x: &FeatureMatrix, follow: &[(usize, bool)]) -> f64 {
    let c = m.curves(x);
    let time: Vec<f64> = follow.iter().map(|f| f64::from(PERIOD_ENDS[f.0.max(1) - 1])).collect();
    let event: Vec<bool> = follow.iter().map(|f| f.1).collect();
    let risk: Vec<f64> = (0..x.rows).map(|i| -c.rmst(i)).collect();
    harrell_c(&time, &event, &risk)
}

/// The candidates in report order: the GBDT, then the logistic and the blend at each penalty.
fn candidate_list(l2s: &[f64]) -> Vec<(SurvivalMix, usize)> {
    let mut out = vec![(SurvivalMix::Gbdt, 0)];
    for i in 0..l2s.len() {
        out.push((SurvivalMix::Logistic, i));
        out.push((SurvivalMix::Blend, i));
    }
    out
}

/// The GBDT and a logistic regression per penalty (`None`: not fitted), fitted on the same
/// person-period rows.
struct Fitted {
    gbdt: HistGbdt,
    logistic: Vec<Option<crate::train::linear::Logistic>>,
}

impl Fitted {
    /// The GBDT, and the logistic at every penalty (`only`: at that one alone).
    fn fit(
        params: &GbdtConfig,
        l2s: &[f64],
        pp: &(FeatureMatrix, Vec<f64>),
        only: Option<usize>,
    ) -> Result<Fitted> {
        let gbdt = HistGbdt::fit(params, Task::Churn, &pp.0, &pp.1, None)?;
        let logistic = l2s
            .iter()
            .enumerate()
            .map(|(i, &l2)| {
                only.is_none_or(|o| o == i)
                    .then(|| crate::train::linear::Logistic::fit(&pp.0, &pp.1, l2))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Fitted { gbdt, logistic })
    }

    fn model(&self, (mix, i): (SurvivalMix, usize)) -> Option<SurvivalModel> {
        Some(SurvivalModel { mix, gbdt: self.gbdt.clone(), logistic: self.logistic[i].clone()? })
    }
}

/// Each candidate's Harrell's C at each purged snapshot `s` (epoch days): models fitted only
/// on the periods observed by `s` of the rows before it, judged on the rows at `s` followed
/// until `until` (the holdout snapshot). Snapshots with nothing to learn or judge are skipped.
///
/// Above `max_rows` snapshot rows before a snapshot, its models learn from a deterministic
/// sample of customers (every snapshot of each kept one; `model.survival_max_rows`).
fn out_of_time(
    (params, l2s, max_rows): (&GbdtConfig, &[f64], usize),
    (x, days, cancel, hashes): (&FeatureMatrix, &[i32], &[i32], &[u64]),
    purged: &[i32],
    until: i32,
) -> Result<(Vec<i32>, Vec<Vec<f64>>)> {
    use rayon::prelude::*;
    let list = candidate_list(l2s);
    let groups: Vec<Option<(i32, Vec<f64>)>> = purged
        .par_iter()
        .map(|&s| -> Result<Option<(i32, Vec<f64>)>> {
            let before: Vec<usize> = (0..days.len()).filter(|&r| days[r] < s).collect();
            let before = crate::train::oot::sample_customers(before, hashes, max_rows);
            let at: Vec<usize> = (0..days.len()).filter(|&r| days[r] == s).collect();
            let pp = person_periods(x, &before, days, cancel, s);
            let follow: Vec<(usize, bool)> =
                at.iter().map(|&r| follow_up(days[r], cancel[r], until)).collect();
            if at.is_empty() || !pp.1.iter().any(|&v| v > 0.0) || !follow.iter().any(|f| f.1) {
                return Ok(None);
            }
            let fitted = Fitted::fit(params, l2s, &pp, None)?;
            let x_at = x.select_rows(&at);
            let c = |m: Option<SurvivalModel>| m.map_or(f64::NAN, |m| concordance_of(&m, &x_at, &follow));
            Ok(Some((s, list.iter().map(|&k| c(fitted.model(k))).collect())))
        })
        .collect::<Result<_>>()?;
    let groups: Vec<(i32, Vec<f64>)> = groups.into_iter().flatten().collect();
    let dates = groups.iter().map(|g| g.0).collect();
    // Per candidate, its C at each snapshot.
    let per_candidate = (0..list.len()).map(|c| groups.iter().map(|g| g.1[c]).collect()).collect();
    Ok((dates, per_candidate))
}

/// The one-standard-error choice among the candidates of [`candidate_list`] from their
/// per-snapshot C: the penalty by the logistic's mean C, then the simplest of logistic,
/// blend, GBDT (at that penalty) within one standard error of the best. Returns the chosen
/// index and every candidate's standard error (`None` for those not in the final comparison).
fn choose(l2s: &[f64], groups: &[Vec<f64>]) -> (usize, Vec<Option<f64>>) {
    let list = candidate_list(l2s);
    let means: Vec<f64> = groups.iter().map(|g| crate::metrics::mean(g)).collect();
    let logistic: Vec<usize> = (0..list.len()).filter(|&i| list[i].0 == SurvivalMix::Logistic).collect();
    let means_l: Vec<f64> = logistic.iter().map(|&i| means[i]).collect();
    let l2 = list[logistic[crate::train::candidates::best_index(&means_l)]].1;
    let order: Vec<usize> = [(SurvivalMix::Logistic, l2), (SurvivalMix::Blend, l2), (SurvivalMix::Gbdt, 0)]
        .iter()
        .filter_map(|c| list.iter().position(|k| k == c))
        .collect();
    let (chosen, se) = crate::train::candidates::one_se_choice(&means, groups, &order);
    let se = (0..list.len()).map(|i| if order.contains(&i) { se[i] } else { None }).collect();
    (chosen, se)
}

/// Fit and judge the survival model on a dataset whose churn is a cancellation (it has the
/// [`crate::features::CANCEL_PERIOD`] label; `None` without it).
///
/// The GBDT's tree count is early-stopped on a fifth of the fit customers (by a hash of the
/// id) with the other four fifths fitted. The candidates (the GBDT, the logistic at each
/// penalty, their blend) are chosen out of time: at each purged snapshot (`purged`, epoch
/// days: those of the churn model's choice, or the validation snapshot without them), models
/// fitted only on what was observed by it predict its rows, judged by Harrell's C until the
/// holdout snapshot; the one-standard-error rule picks the simplest. The evaluated model is
/// fitted on every period of the fit and validation rows observed by the holdout snapshot and
/// judged on the holdout rows followed to the end of the data, against the sBG baseline; the
/// shipped model is refit on every observed period when `refit`.
///
/// Above `max_rows` snapshot rows (`model.survival_max_rows`), every fit learns from a
/// deterministic sample of customers of about that many rows, and the evaluated model is
/// fitted for the chosen candidate only (the others' holdout C is then not reported).
pub fn train(
    (params, l2s, max_rows): (&GbdtConfig, &[f64], usize),
    refit: bool,
    data: &crate::train::Dataset,
    purged: &[i32],
    (holdout, data_end): (i32, i32),
) -> Result<Option<(SurvivalReport, SurvivalModel, HoldoutSurvival)>> {
    let Some(cancel) = cancel_periods(data)? else { return Ok(None) };
    let (x, days, rows) = (&data.x, &data.days[..], &data.rows);
    // The tree count: four fifths of the fit customers fitted, the other fifth stops.
    let hashes = data.customer_hashes()?;
    let sampled = crate::train::oot::sample_customers(rows.fit.clone(), &hashes, max_rows);
    let (stop_rows, fit_rows): (Vec<usize>, Vec<usize>) = sampled.iter().partition(|&&r| hashes[r] % 5 == 0);
    let stop = person_periods(x, &stop_rows, days, &cancel, holdout);
    let stop = (stop.1.iter().any(|&v| v > 0.0)).then_some(stop);
    let four_fifths = person_periods(x, &fit_rows, days, &cancel, holdout);
    if !four_fifths.1.iter().any(|&v| v > 0.0) {
        return Err(Error::Model {
            model: "survival".into(),
            message: "no cancellation among the observed periods: nothing to learn the hazard from".into(),
        });
    }
    let stopped = HistGbdt::fit(
        params,
        Task::Churn,
        &four_fifths.0,
        &four_fifths.1,
        stop.as_ref().map(|v| (&v.0, &v.1[..])),
    )?;
    let trees = GbdtConfig { iterations: stopped.n_trees().max(1), ..params.clone() };
    // The out-of-time choice.
    let validation_day = rows.validation.first().map(|&r| days[r]);
    let purged: Vec<i32> =
        if purged.is_empty() { validation_day.into_iter().collect() } else { purged.to_vec() };
    let (dates, groups) =
        out_of_time((&trees, l2s, max_rows), (x, days, &cancel, &hashes), &purged, holdout)?;
    let (chosen, se) = choose(l2s, &groups);
    let list = candidate_list(l2s);
    // The evaluated models: every period observed by the holdout snapshot.
    let mut learn: Vec<usize> = rows.fit.iter().chain(&rows.validation).copied().collect();
    learn.sort_unstable();
    let every_candidate = max_rows == 0 || learn.len() <= max_rows;
    let learn = crate::train::oot::sample_customers(learn, &hashes, max_rows);
    let fit = person_periods(x, &learn, days, &cancel, holdout);
    let fitted = Fitted::fit(&trees, l2s, &fit, (!every_candidate).then_some(list[chosen].1))?;
    let hold_x = x.select_rows(&rows.holdout);
    let follow: Vec<(usize, bool)> =
        rows.holdout.iter().map(|&r| follow_up(days[r], cancel[r], data_end)).collect();
    let candidates: Vec<SurvivalCandidate> = list
        .iter()
        .enumerate()
        .map(|(i, &(mix, l))| SurvivalCandidate {
            mix,
            l2: l2s[if mix == SurvivalMix::Gbdt { list[chosen].1 } else { l }],
            out_of_time_concordance: crate::metrics::mean(&groups[i]),
            out_of_time_groups: groups[i].clone(),
            standard_error: se[i],
            chosen: i == chosen,
            holdout_concordance: fitted
                .model((mix, l))
                .map_or(f64::NAN, |m| concordance_of(&m, &hold_x, &follow)),
        })
        .collect();
    let evaluated = fitted.model(list[chosen]).ok_or_else(|| Error::Model {
        model: "survival".into(),
        message: "the chosen candidate was not fitted".into(),
    })?;
    let churn90: Vec<f64> =
        follow.iter().map(|&(p, event)| f64::from(u8::from(event && PERIOD_ENDS[p - 1] <= 90))).collect();
    let curves = evaluated.curves(&hold_x);
    let model_eval = evaluate(&curves.s, &follow, &churn90);
    // The baseline: sBG per billing cohort, fitted on the same periods.
    let learn_follow: Vec<(usize, bool)> =
        learn.iter().map(|&r| follow_up(days[r], cancel[r], holdout)).collect();
    let sbg_cohorts = sbg_fit(x, &learn, &learn_follow);
    let sbg_holdout = sbg_curves(&sbg_cohorts, x, &rows.holdout);
    let sbg_eval = evaluate(&sbg_holdout, &follow, &churn90);
    let actual: Vec<f64> = rows.holdout.iter().map(|&r| data.clv[r]).collect();
    let (clv_gini, clv_gini_mrr_tenure) = clv_ginis(&curves, &hold_x, &actual);
    let (deployed, deployed_periods) = if refit {
        let all = crate::train::oot::sample_customers((0..x.rows).collect(), &hashes, max_rows);
        let every = person_periods(x, &all, days, &cancel, data_end);
        let model =
            SurvivalModel::fit(&trees, evaluated.logistic.l2, evaluated.mix, (&every.0, &every.1), None)?;
        (model, every.1.len())
    } else {
        (evaluated, fit.1.len())
    };
    let report = SurvivalReport {
        mix: deployed.mix,
        l2: deployed.logistic.l2,
        basis: basis(&dates),
        candidates,
        model: model_eval,
        sbg: sbg_eval,
        sbg_cohorts,
        fit_periods: fit.1.len(),
        deployed_periods,
        trees: deployed.gbdt.n_trees(),
        holdout_rows: rows.holdout.len(),
        holdout_periods: follow.iter().map(|f| f.0).sum(),
        clv_gini,
        clv_gini_mrr_tenure,
        curves: curve_groups(&curves.s, &sbg_holdout, &follow),
    };
    let holdout = HoldoutSurvival {
        s90: (0..hold_x.rows).map(|i| curves.at(i, 90)).collect(),
        rmst: (0..hold_x.rows).map(|i| curves.rmst(i)).collect(),
    };
    Ok(Some((report, deployed, holdout)))
}

/// The normalized Gini against `actual` revenue of the subscription CLV (a year of MRR x S,
/// undiscounted) of rows `x` with curves `curves`, and of the MRR x tenure baseline.
fn clv_ginis(curves: &Curves, x: &FeatureMatrix, actual: &[f64]) -> (f64, f64) {
    let mrr = feature(x, "sub_mrr").unwrap_or_else(|| vec![0.0; x.rows]);
    let tenure = feature(x, "sub_tenure_days").unwrap_or_else(|| vec![0.0; x.rows]);
    let sub_clv: Vec<f64> = (0..x.rows).map(|i| curves.subscription_clv(i, mrr[i].max(0.0), 0.0)).collect();
    let naive: Vec<f64> = mrr.iter().zip(&tenure).map(|(m, t)| m.max(0.0) * t.max(0.0)).collect();
    (crate::metrics::normalized_gini(actual, &sub_clv), crate::metrics::normalized_gini(actual, &naive))
}

/// What the candidates were chosen on, in words.
fn basis(dates: &[i32]) -> String {
    if dates.is_empty() {
        return "no snapshot with both a cancellation to learn and one to judge: the logistic ships".into();
    }
    let d: Vec<String> =
        dates.iter().filter_map(|&d| crate::schema::date_of_day(d)).map(|d| d.to_string()).collect();
    format!(
        "Harrell's C of purged hazard models at {}, each followed until the holdout snapshot",
        d.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_up_counts_the_observed_periods_and_the_event_in_them() {
        // Observed 100 days: periods ending 30, 60, 90.
        assert_eq!(follow_up(0, -1, 100), (3, false));
        assert_eq!(follow_up(0, 1, 100), (2, true));
        // A cancellation after the end of the data is not seen: censored.
        assert_eq!(follow_up(0, 5, 100), (3, false));
        assert_eq!(follow_up(0, -1, 365), (12, false));
        assert_eq!(follow_up(10, 11, 375), (12, true));
    }

    #[test]
    fn harrells_c_by_hand() {
        // times 1..4, events at 1 and 3; risk decreasing with time: every comparable pair
        // concordant.
        let time = [1.0, 2.0, 3.0, 4.0];
        let event = [true, false, true, false];
        assert_eq!(harrell_c(&time, &event, &[4.0, 3.0, 2.0, 1.0]), 1.0);
        // Comparable pairs: (0,1) (0,2) (0,3) (2,3) = 4; reversed risk: 0 concordant.
        assert_eq!(harrell_c(&time, &event, &[1.0, 2.0, 3.0, 4.0]), 0.0);
        // All tied: one half.
        assert_eq!(harrell_c(&time, &event, &[1.0; 4]), 0.5);
        // Equal times, one event one censored: comparable, the event's risk higher.
        assert_eq!(harrell_c(&[2.0, 2.0], &[false, true], &[0.0, 1.0]), 1.0);
        assert_eq!(harrell_c(&[2.0, 2.0], &[false, true], &[1.0, 0.0]), 0.0);
        // Two events at the same time are not a comparable pair.
        assert!(harrell_c(&[2.0, 2.0], &[true, true], &[1.0, 0.0]).is_nan());
    }

    /// Every pair, as the definition says.
    fn harrell_by_pairs(time: &[f64], event: &[bool], risk: &[f64]) -> f64 {
        let (mut concordant, mut comparable) = (0.0, 0.0);
        for i in 0..time.len() {
            for j in 0..time.len() {
                let shorter = time[i] < time[j] || (time[i] == time[j] && !event[j]);
                if i != j && event[i] && shorter {
                    comparable += 1.0;
                    concordant += if risk[i] > risk[j] {
                        1.0
                    } else if risk[i] == risk[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        concordant / comparable
    }

    #[test]
    fn harrells_c_counts_every_comparable_pair() {
        // Coarse times and risks: many ties of both kinds.
        let mut r = crate::rng::Rng::new(5);
        for n in [2, 7, 50, 400] {
            let time: Vec<f64> = (0..n).map(|_| (r.uniform() * 6.0).floor()).collect();
            let event: Vec<bool> = (0..n).map(|_| r.uniform() < 0.4).collect();
            let risk: Vec<f64> = (0..n).map(|_| (r.uniform() * 5.0).floor()).collect();
            let (fast, slow) = (harrell_c(&time, &event, &risk), harrell_by_pairs(&time, &event, &risk));
            assert!(fast == slow || (fast.is_nan() && slow.is_nan()), "n {n}: {fast} vs {slow}");
        }
    }

    #[test]
    fn rmst_and_subscription_clv_of_known_curves() {
        let flat = Curves { s: vec![[1.0; 12]] };
        assert!((flat.rmst(0) - 365.0).abs() < 1e-9);
        assert!((flat.subscription_clv(0, 100.0, 0.0) - 1200.0).abs() < 1e-9);
        // Everyone gone after the first period: area = 30 * (1 + 0) / 2.
        let mut s = [0.0; 12];
        s[0] = 0.0;
        let gone = Curves { s: vec![s] };
        assert!((gone.rmst(0) - 15.0).abs() < 1e-9);
        assert!((gone.subscription_clv(0, 100.0, 0.0) - 100.0).abs() < 1e-9);
        // Discounting: a year at 10% costs the later months.
        assert!(flat.subscription_clv(0, 100.0, 0.1) < 1200.0);
    }

    #[test]
    fn sbg_recovers_its_parameters() {
        // Expected person-period rows of a cohort with alpha 1, beta 3: exact hazards as
        // frequencies over many subscribers.
        let truth = Sbg { alpha: 1.0, beta: 3.0 };
        let mut rows = Vec::new();
        let mut alive = 100_000.0f64;
        for m in 1..=24 {
            let h = truth.hazard(f64::from(m));
            let churned = (alive * h).round();
            for i in 0..(alive as usize) {
                rows.push((f64::from(m), (i as f64) < churned));
            }
            alive -= churned;
        }
        let fit = Sbg::fit(&rows).expect("a fit");
        assert!((fit.alpha - 1.0).abs() < 0.05 && (fit.beta - 3.0).abs() < 0.15, "{fit:?}");
    }

    #[test]
    fn kaplan_meier_by_hand_stops_where_too_few_are_at_risk() {
        // 40 rows: 10 cancel in period 0, 10 are censored after period 0 (observed 1 period),
        // 20 are followed 2 periods with 5 cancelling in period 1; none goes further.
        let mut follow = vec![(1, true); 10];
        follow.extend(vec![(1, false); 10]);
        follow.extend(vec![(2, true); 5]);
        follow.extend(vec![(2, false); 15]);
        let km = kaplan_meier(&follow);
        assert_eq!(km.len(), 2, "20 at risk in period 1, none after: {km:?}");
        assert!((km[0] - 0.75).abs() < 1e-12);
        assert!((km[1] - 0.75 * 0.75).abs() < 1e-12);
    }

    #[test]
    fn the_out_of_time_choice_keeps_the_simpler_candidate_within_one_se() {
        // Candidates: gbdt, logistic(l2 1), blend(l2 1), logistic(l2 10), blend(l2 10).
        let l2s = [1.0, 10.0];
        let g = |v: [f64; 3]| v.to_vec();
        // The GBDT leads by a little, well inside the noise: the logistic at l2 10 ships.
        let groups = vec![
            g([0.67, 0.69, 0.63]),
            g([0.64, 0.66, 0.63]),
            g([0.65, 0.68, 0.64]),
            g([0.65, 0.68, 0.64]),
            g([0.66, 0.68, 0.63]),
        ];
        let (chosen, se) = choose(&l2s, &groups);
        assert_eq!(candidate_list(&l2s)[chosen], (SurvivalMix::Logistic, 1));
        assert!(se[1].is_none() && se[2].is_none(), "the other penalty is not in the final comparison");
        // A clear, consistent lead of the GBDT: it ships.
        let groups = vec![
            g([0.72, 0.73, 0.74]),
            g([0.64, 0.66, 0.63]),
            g([0.65, 0.68, 0.64]),
            g([0.65, 0.67, 0.64]),
            g([0.66, 0.68, 0.64]),
        ];
        assert_eq!(candidate_list(&l2s)[choose(&l2s, &groups).0], (SurvivalMix::Gbdt, 0));
    }

    #[test]
    fn the_perfect_curve_has_zero_brier_and_the_flat_one_a_quarter() {
        // Two rows observed the whole year: one cancels in period 0, one stays.
        let follow = [(1, true), (12, false)];
        let mut gone = [0.0; 12];
        gone[0] = 0.0;
        let perfect = [gone, [1.0; 12]];
        assert!(integrated_brier(&perfect, &follow, 12).abs() < 1e-12);
        let half = [[0.5; 12], [0.5; 12]];
        assert!((integrated_brier(&half, &follow, 12) - 0.25).abs() < 1e-12);
    }
}
