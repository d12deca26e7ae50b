//! Performance before the labels: confidence-based performance estimation (CBPE, as NannyML
//! names it). A run's outcome is known one horizon after it; its calibrated probabilities are
//! known the day it is scored. If they are calibrated, customer `i` churns with probability
//! `p_i`, so the run's confusion matrix, ROC AUC and net value have expected values that are
//! sums over the customers, and a spread from the labels' randomness:
//!
//! - **ROC AUC**: the probability that a churner ranks above a stayer, as a ratio of expected
//!   pair counts: `sum_i p_i * (sum_{j below i} (1 - p_j) + 1/2 sum_{j tied with i} (1 - p_j))
//!   / (sum p * sum (1 - p))`, over the probabilities on a grid of [`GRID`] cells (customers in
//!   one cell count as tied: under calibration two customers with nearly the same probability
//!   are ordered right half the time anyway; the grid moves the estimate by less than 1e-4).
//!   NannyML's `estimate_roc_auc` is the same curve traced customer by customer.
//! - **precision** and **recall** of the run's contact list (its `contact` flags): expected
//!   churners among the contacted over the contacted, and over every expected churner.
//! - **net value** of the contacts: `sum over the contacted of p * (value + fp_cost) - fp_cost
//!   - contact_cost`, the realized formula with the label replaced by its probability.
//!
//! **Interval** (95%), from two sources of error:
//! - the labels: independent Bernoulli draws given the probabilities, so each figure's
//!   variance is a sum of `p (1 - p)` terms by the delta method (ROC AUC as the Mann-Whitney
//!   statistic `(R1 - n1 (n1 + 1) / 2) / (n1 (n - n1))` of the rank sum `R1` and the churner
//!   count `n1`, both sums of the labels): the spread of the realized figure if the
//!   probabilities are right;
//! - the probabilities themselves: calibration fitted on one period is off by some amount on
//!   another, and the estimate with it. Training measures it: the holdout's figures estimated
//!   this way against realized ([`HoldoutCheck`], in `metrics.json`); the gap (relative for net
//!   value) is the estimator's own error, out of sample.
//!
//! The interval's half-width is `sqrt((1.96 se)^2 + gap^2)`. Without the second term the
//! realized AUC of a generated backtest without drift fell inside on 7 to 16 of 16 runs
//! depending on the seed; with it, on all of them (docs/monitoring.md has the numbers). A
//! model whose calibration moves further than on its holdout still misses it, which is what
//! comparing estimated with realized, once the run matures, shows.
//!
//! Everything is computed from [`EstimateCounts`]: counts that add up exactly across any split
//! of the customers (Spark's partitions), so the CLI and the Spark job record the same figures.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::DecisionConfig;
use crate::error::{PolarsContext, Result};
use crate::math::ExactSum;
use crate::schema::{CHURN_SCORE, CLV_SCORE};
use crate::threshold;

/// Cells of the probability grid the ROC AUC is estimated on.
pub const GRID: usize = 1 << 14;

/// Two-sided 95% normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

/// What the estimate needs of a set of scored customers, as counts that add up exactly across
/// any split of them ([`EstimateCounts::merge`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateCounts {
    /// Customers per probability cell, as `(cell, customers)` pairs in cell order (cells
    /// without customers left out).
    pub cells: Vec<(u32, u64)>,
    /// Customers without a probability (not in any figure).
    pub missing: u64,
    pub contacted: u64,
    /// Sums over the contacted: `p`, `p (1 - p)`, expected gain, its variance.
    pub p_contacted: ExactSum,
    pub var_contacted: ExactSum,
    pub gain: ExactSum,
    pub gain_var: ExactSum,
    /// Sums over the others: `p`, `p (1 - p)`.
    pub p_other: ExactSum,
    pub var_other: ExactSum,
}

/// An estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// `value` with a 95% interval of the labels' noise (`se`) and the estimator's own error
    /// (`gap`).
    fn of(value: f64, se: f64, gap: f64) -> Interval {
        let half = (Z95 * se).hypot(if gap.is_finite() { gap } else { 0.0 });
        Interval { value, low: value - half, high: value + half }
    }

    /// Clipped to `[lo, hi]` (a rate's interval stays a rate).
    fn within(self, lo: f64, hi: f64) -> Interval {
        Interval { value: self.value, low: self.low.clamp(lo, hi), high: self.high.clamp(lo, hi) }
    }

    pub fn contains(&self, x: f64) -> bool {
        x >= self.low && x <= self.high
    }

    pub fn nan() -> Interval {
        Interval { value: f64::NAN, low: f64::NAN, high: f64::NAN }
    }
}

/// A run's performance estimated the day it is scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimated {
    pub run: chrono::NaiveDate,
    pub customers: usize,
    pub contacted: usize,
    /// Expected share of churners.
    pub churn_rate: f64,
    pub roc_auc: Interval,
    pub precision: Interval,
    pub recall: Interval,
    pub net_value: Interval,
}

/// The metrics of [`Estimated`] in the monitoring history, each with `_low` and `_high`.
pub const INTERVAL_METRICS: [&str; 4] = ["roc_auc", "precision", "recall", "net_value"];

/// The metrics of [`Estimated`] in the monitoring history (kind `estimated`, item the run).
pub const METRICS: [&str; 15] = [
    "roc_auc",
    "roc_auc_low",
    "roc_auc_high",
    "precision",
    "precision_low",
    "precision_high",
    "recall",
    "recall_low",
    "recall_high",
    "net_value",
    "net_value_low",
    "net_value_high",
    "churn_rate",
    "customers",
    "contacted",
];

impl Estimated {
    pub fn intervals(&self) -> [Interval; 4] {
        [self.roc_auc, self.precision, self.recall, self.net_value]
    }

    /// The values of [`METRICS`], in order.
    pub fn metrics(&self) -> [f64; 15] {
        let mut out = [0.0; 15];
        for (k, i) in self.intervals().iter().enumerate() {
            out[3 * k..3 * k + 3].copy_from_slice(&[i.value, i.low, i.high]);
        }
        out[12] = self.churn_rate;
        out[13] = self.customers as f64;
        out[14] = self.contacted as f64;
        out
    }

    /// The estimate of `run` from its [`METRICS`] (None without its ROC AUC).
    pub fn from_metrics(run: chrono::NaiveDate, get: impl Fn(&str) -> Option<f64>) -> Option<Estimated> {
        get("roc_auc")?;
        let v = |m: &str| get(m).unwrap_or(f64::NAN);
        let i =
            |m: &str| Interval { value: v(m), low: v(&format!("{m}_low")), high: v(&format!("{m}_high")) };
        Some(Estimated {
            run,
            customers: v("customers") as usize,
            contacted: v("contacted") as usize,
            churn_rate: v("churn_rate"),
            roc_auc: i("roc_auc"),
            precision: i("precision"),
            recall: i("recall"),
            net_value: i("net_value"),
        })
    }
}

/// The estimates of history rows of kind `estimated`, `(item, metric, value)` with the run as
/// item, by run.
pub fn by_run<'a>(
    rows: impl Iterator<Item = (&'a str, &'a str, f64)>,
) -> std::collections::BTreeMap<chrono::NaiveDate, Estimated> {
    let mut by_run: std::collections::BTreeMap<chrono::NaiveDate, std::collections::HashMap<&str, f64>> =
        std::collections::BTreeMap::new();
    for (item, metric, value) in rows {
        if let Ok(run) = chrono::NaiveDate::parse_from_str(item, "%Y-%m-%d") {
            by_run.entry(run).or_default().insert(metric, value);
        }
    }
    by_run
        .into_iter()
        .filter_map(|(run, m)| Some((run, Estimated::from_metrics(run, |k| m.get(k).copied())?)))
        .collect()
}

/// An estimate in words: ROC AUC, precision, recall, net value, each with its interval.
pub fn words(e: &Estimated) -> String {
    let i = |x: &Interval, digits: usize| {
        format!("{:.digits$} [95% {:.digits$}, {:.digits$}]", x.value, x.low, x.high)
    };
    format!(
        "ROC AUC {}, precision {}, recall {} of {} contacted, net value {}, churn rate {:.1}% of {}",
        i(&e.roc_auc, 4),
        i(&e.precision, 3),
        i(&e.recall, 3),
        e.contacted,
        i(&e.net_value, 0),
        100.0 * e.churn_rate,
        e.customers
    )
}

/// A run's realized ROC AUC, precision, recall and net value, in [`INTERVAL_METRICS`] order.
pub type Figures = [f64; 4];

/// Whether the realized figure is inside the estimate's interval, in words.
fn verdict(i: &Interval, realized: f64) -> &'static str {
    match realized {
        r if !r.is_finite() || !i.low.is_finite() => "",
        r if i.contains(r) => " (inside)",
        r if r < i.low => " (below)",
        _ => " (above)",
    }
}

/// Estimated vs realized, figure by figure.
pub fn versus(e: &Estimated, realized: &Figures) -> String {
    let parts: Vec<String> = INTERVAL_METRICS
        .iter()
        .zip(e.intervals())
        .zip(realized)
        .map(|((name, i), &r)| {
            let (label, digits) = match *name {
                "roc_auc" => ("ROC AUC", 4),
                "net_value" => ("net value", 0),
                other => (other, 3),
            };
            format!(
                "{label} {:.digits$} [95% {:.digits$}, {:.digits$}] vs {r:.digits$}{}",
                i.value,
                i.low,
                i.high,
                verdict(&i, r)
            )
        })
        .collect();
    parts.join(", ")
}

/// A set of customers' realized figures ([`Figures`]): labels `y` (1 = churned), calibrated
/// probabilities `p`, contact flags and the value of saving each (`threshold::tp_values`).
pub fn figures(y: &[f64], p: &[f64], contact: &[bool], values: &[f64], d: &DecisionConfig) -> Figures {
    let churners: f64 = y.iter().sum();
    let contacted = contact.iter().filter(|&&c| c).count();
    let hit: f64 = y.iter().zip(contact).filter(|(_, &c)| c).map(|(v, _)| v).sum();
    [
        crate::metrics::roc_auc(y, p),
        if contacted > 0 { hit / contacted as f64 } else { f64::NAN },
        if churners > 0.0 { hit / churners } else { f64::NAN },
        threshold::net_value_of(contact, y, values, d),
    ]
}

/// The holdout's figures estimated from its calibrated probabilities (contacts: the decision's
/// threshold) and realized: how far the estimator was off out of sample, which every run's
/// interval allows for ([`Allowance`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HoldoutCheck {
    #[serde(with = "crate::metrics::nan_as_null_array")]
    pub estimated: Figures,
    #[serde(with = "crate::metrics::nan_as_null_array")]
    pub realized: Figures,
}

impl HoldoutCheck {
    pub fn of(p: &[f64], clv: &[f64], y: &[f64], contact: &[bool], d: &DecisionConfig) -> HoldoutCheck {
        let e =
            EstimateCounts::of(p, clv, contact, d).estimate(chrono::NaiveDate::MIN, &Allowance::default());
        let values = threshold::tp_values(d, p, clv);
        HoldoutCheck {
            estimated: [e.roc_auc.value, e.precision.value, e.recall.value, e.net_value.value],
            realized: figures(y, p, contact, &values, d),
        }
    }

    /// The gaps every estimate allows for.
    pub fn allowance(&self) -> Allowance {
        let gap = |k: usize| {
            let g = (self.realized[k] - self.estimated[k]).abs();
            if g.is_finite() {
                g
            } else {
                0.0
            }
        };
        let net = self.estimated[3].abs();
        Allowance {
            roc_auc: gap(0),
            precision: gap(1),
            recall: gap(2),
            net_value_share: if net > 0.0 { gap(3) / net } else { 0.0 },
        }
    }
}

/// What an estimate allows for beyond the labels' noise: the estimator's error on the holdout
/// (absolute for the rates, a share of the estimate for net value). None (all zero) for
/// models trained before it was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Allowance {
    pub roc_auc: f64,
    pub precision: f64,
    pub recall: f64,
    pub net_value_share: f64,
}

fn cell_of(p: f64) -> u32 {
    // `as` saturates: below 0 -> 0; the top cell holds p = 1.
    ((p * GRID as f64) as usize).min(GRID - 1) as u32
}

/// The probability a cell stands for: its middle.
fn cell_p(cell: u32) -> f64 {
    (f64::from(cell) + 0.5) / GRID as f64
}

impl EstimateCounts {
    /// Counts of customers with calibrated churn probabilities `p`, predicted CLV `clv` and
    /// contact flags `contact`, under the decision settings `d` (the value of a saved churner).
    pub fn of(p: &[f64], clv: &[f64], contact: &[bool], d: &DecisionConfig) -> EstimateCounts {
        let values = threshold::tp_values(d, p, clv);
        let mut dense = vec![0u64; GRID];
        let mut c = EstimateCounts {
            cells: Vec::new(),
            missing: 0,
            contacted: 0,
            p_contacted: ExactSum::default(),
            var_contacted: ExactSum::default(),
            gain: ExactSum::default(),
            gain_var: ExactSum::default(),
            p_other: ExactSum::default(),
            var_other: ExactSum::default(),
        };
        for i in 0..p.len() {
            let q = p[i];
            if !q.is_finite() {
                c.missing += 1;
                continue;
            }
            dense[cell_of(q) as usize] += 1;
            let v = q * (1.0 - q);
            if contact[i] {
                c.contacted += 1;
                c.p_contacted.add(q);
                c.var_contacted.add(v);
                let stake = values[i] + d.fp_cost;
                c.gain.add(q * stake - d.fp_cost - d.contact_cost);
                c.gain_var.add(v * stake * stake);
            } else {
                c.p_other.add(q);
                c.var_other.add(v);
            }
        }
        c.cells = dense.iter().enumerate().filter(|(_, &k)| k > 0).map(|(b, &k)| (b as u32, k)).collect();
        c
    }

    /// The counts of a run's scores table (`churn_probability`, `predicted_clv`, `contact`).
    pub fn of_scores(scores: &DataFrame, d: &DecisionConfig) -> Result<EstimateCounts> {
        let ctx = "estimating the run's performance from its scores";
        let f = |name: &str| -> Result<Vec<f64>> {
            let c = scores.column(name).polars(ctx)?.cast(&DataType::Float64).polars(ctx)?;
            Ok(c.f64().polars(ctx)?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        };
        let contact: Vec<bool> = scores
            .column("contact")
            .polars(ctx)?
            .bool()
            .polars(ctx)?
            .iter()
            .map(|v| v == Some(true))
            .collect();
        Ok(EstimateCounts::of(&f(CHURN_SCORE)?, &f(CLV_SCORE)?, &contact, d))
    }

    /// The counts of two disjoint sets of customers together.
    pub fn merge(&mut self, other: &EstimateCounts) {
        let mut cells: std::collections::BTreeMap<u32, u64> = self.cells.iter().copied().collect();
        for &(cell, k) in &other.cells {
            *cells.entry(cell).or_default() += k;
        }
        self.cells = cells.into_iter().collect();
        self.missing += other.missing;
        self.contacted += other.contacted;
        for (x, y) in [
            (&mut self.p_contacted, &other.p_contacted),
            (&mut self.var_contacted, &other.var_contacted),
            (&mut self.gain, &other.gain),
            (&mut self.gain_var, &other.gain_var),
            (&mut self.p_other, &other.p_other),
            (&mut self.var_other, &other.var_other),
        ] {
            x.merge(y);
        }
    }

    /// The estimate of the run at `run`, its intervals widened by `allow`.
    pub fn estimate(&self, run: chrono::NaiveDate, allow: &Allowance) -> Estimated {
        let n: u64 = self.cells.iter().map(|c| c.1).sum();
        let (tp, fn_) = (self.p_contacted.value(), self.p_other.value());
        let (v_tp, v_fn) = (self.var_contacted.value(), self.var_other.value());
        let churners = tp + fn_;
        let precision = if self.contacted > 0 {
            let c = self.contacted as f64;
            Interval::of(tp / c, v_tp.sqrt() / c, allow.precision).within(0.0, 1.0)
        } else {
            Interval::nan()
        };
        let recall = if churners > 0.0 {
            let se = (fn_ * fn_ * v_tp + tp * tp * v_fn).sqrt() / (churners * churners);
            Interval::of(tp / churners, se, allow.recall).within(0.0, 1.0)
        } else {
            Interval::nan()
        };
        Estimated {
            run,
            customers: n as usize,
            contacted: self.contacted as usize,
            churn_rate: if n > 0 { churners / n as f64 } else { f64::NAN },
            roc_auc: roc_auc(&self.cells, n, allow.roc_auc),
            precision,
            recall,
            net_value: Interval::of(
                self.gain.value(),
                self.gain_var.value().sqrt(),
                allow.net_value_share * self.gain.value().abs(),
            ),
        }
    }
}

/// The estimated ROC AUC of customers on the grid (`cells`, `n` customers) and its interval.
fn roc_auc(cells: &[(u32, u64)], n: u64, gap: f64) -> Interval {
    // Expected churners / stayers per cell, and the cells' midranks among all customers.
    let (mut pos, mut neg) = (0.0f64, 0.0f64);
    let (mut pairs, mut below_neg, mut below) = (0.0f64, 0.0f64, 0u64);
    for &(cell, k) in cells {
        let (q, k) = (cell_p(cell), k as f64);
        pairs += k * q * (below_neg + 0.5 * k * (1.0 - q));
        below_neg += k * (1.0 - q);
        pos += k * q;
        neg += k * (1.0 - q);
        below += k as u64;
    }
    debug_assert_eq!(below, n);
    if pos <= 0.0 || neg <= 0.0 {
        return Interval::nan();
    }
    let auc = pairs / (pos * neg);
    // Delta method on AUC = (R1 - n1 (n1 + 1) / 2) / (n1 (n - n1)) at n1 = pos, R1 = sum p r:
    // d/dR1 = a, d/dn1 = b, Var = sum_i p_i (1 - p_i) (a r_i + b)^2.
    let (n1, n0) = (pos, n as f64 - pos);
    let a = 1.0 / (n1 * n0);
    let b = -(n1 + 0.5) * a - auc * (n as f64 - 2.0 * n1) * a;
    let (mut var, mut before) = (0.0f64, 0u64);
    for &(cell, k) in cells {
        let q = cell_p(cell);
        let rank = before as f64 + (k as f64 + 1.0) / 2.0;
        let d = a * rank + b;
        var += k as f64 * q * (1.0 - q) * d * d;
        before += k;
    }
    Interval::of(auc, var.sqrt(), gap).within(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;
    use crate::rng::Rng;

    fn probabilities(n: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| crate::math::sigmoid(-1.5 + 1.6 * r.normal())).collect()
    }

    /// With labels drawn from the probabilities themselves (a calibrated model), the realized
    /// ROC AUC, precision, recall and net value fall inside their 95% intervals about 95% of
    /// the time, and the estimate is the realized figures' mean.
    #[test]
    fn intervals_cover_labels_drawn_from_the_probabilities() {
        let d = DecisionConfig::default();
        let p = probabilities(20_000, 5);
        let clv: Vec<f64> = (0..p.len()).map(|i| 50.0 + (i % 7) as f64 * 20.0).collect();
        let contact: Vec<bool> = p.iter().map(|&q| q >= 0.35).collect();
        let e = EstimateCounts::of(&p, &clv, &contact, &d)
            .estimate(chrono::NaiveDate::MIN, &Allowance::default());
        let values = threshold::tp_values(&d, &p, &clv);
        let mut r = Rng::new(17);
        let draws = 400;
        let mut inside = [0usize; 4];
        let mut auc_mean = 0.0;
        for _ in 0..draws {
            let y: Vec<f64> = p.iter().map(|&q| f64::from(u8::from(r.uniform() < q))).collect();
            let tp: f64 = y.iter().zip(&contact).filter(|(_, &c)| c).map(|(v, _)| v).sum();
            let realized = [
                metrics::roc_auc(&y, &p),
                tp / e.contacted as f64,
                tp / y.iter().sum::<f64>(),
                threshold::net_value_of(&contact, &y, &values, &d),
            ];
            auc_mean += realized[0] / f64::from(draws);
            for (k, i) in e.intervals().iter().enumerate() {
                inside[k] += usize::from(i.contains(realized[k]));
            }
        }
        for (k, name) in INTERVAL_METRICS.iter().enumerate() {
            let share = inside[k] as f64 / f64::from(draws);
            assert!((0.91..=0.99).contains(&share), "{name}: {share} inside {:?}", e.intervals()[k]);
        }
        assert!((auc_mean - e.roc_auc.value).abs() < 0.001, "{auc_mean} vs {:?}", e.roc_auc);
    }

    /// The grid estimate equals the exact ratio of expected pair counts over the customers
    /// themselves to well under the 0.005 the comparison with NannyML allows.
    #[test]
    fn the_grid_moves_the_auc_by_less_than_1e4() {
        let p = probabilities(3_000, 9);
        let mut idx: Vec<usize> = (0..p.len()).collect();
        idx.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
        let (mut pairs, mut below_neg) = (0.0, 0.0);
        for &i in &idx {
            pairs += p[i] * (below_neg + 0.5 * (1.0 - p[i]));
            below_neg += 1.0 - p[i];
        }
        let pos: f64 = p.iter().sum();
        let exact = pairs / (pos * (p.len() as f64 - pos));
        let none = vec![false; p.len()];
        let e = EstimateCounts::of(&p, &p, &none, &DecisionConfig::default())
            .estimate(chrono::NaiveDate::MIN, &Allowance::default());
        assert!((e.roc_auc.value - exact).abs() < 1e-4, "{:?} vs {exact}", e.roc_auc);
    }

    /// A holdout nobody is contacted in has no precision: NaN, written as null in
    /// `metrics.json` and read back as NaN (JSON has no NaN).
    #[test]
    fn a_check_without_contacts_reads_back() {
        let d = DecisionConfig::default();
        let p = probabilities(500, 2);
        let y: Vec<f64> = p.iter().map(|&q| f64::from(u8::from(q > 0.5))).collect();
        let check = HoldoutCheck::of(&p, &p, &y, &vec![false; p.len()], &d);
        assert!(check.estimated[1].is_nan() && check.realized[1].is_nan());
        let back: HoldoutCheck = serde_json::from_str(&serde_json::to_string(&check).unwrap()).unwrap();
        assert_eq!(back.estimated[0], check.estimated[0]);
        assert!(back.estimated[1].is_nan() && back.realized[1].is_nan());
        assert_eq!(back.allowance().precision, 0.0, "no gap where there is nothing to compare");
    }

    /// Any split of the customers, counted apart and merged, gives the same estimate to the bit.
    #[test]
    fn counts_merge_exactly() {
        let d = DecisionConfig::default();
        let p = probabilities(5_000, 3);
        let clv: Vec<f64> = (0..p.len()).map(|i| (i % 11) as f64 * 13.7).collect();
        let contact: Vec<bool> = p.iter().map(|&q| q >= 0.3).collect();
        let whole = EstimateCounts::of(&p, &clv, &contact, &d);
        for cut in [1, 1_234, 4_999] {
            let mut left = EstimateCounts::of(&p[cut..], &clv[cut..], &contact[cut..], &d);
            left.merge(&EstimateCounts::of(&p[..cut], &clv[..cut], &contact[..cut], &d));
            let (a, b) = (
                left.estimate(chrono::NaiveDate::MIN, &Allowance::default()),
                whole.estimate(chrono::NaiveDate::MIN, &Allowance::default()),
            );
            assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        }
    }
}
