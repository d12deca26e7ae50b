//! Calibration of churn probabilities, fitted on out-of-time predictions.
//!
//! Candidates: none (the model's own probabilities), Platt scaling (a logistic regression on
//! the logit of the raw probability) and isotonic regression (pool-adjacent-violators,
//! linear interpolation between blocks, clipped outside the fitted range). The training
//! pipeline hands [`choose`] predictions from several snapshots (see `train`), and the
//! method is chosen by leave-one-snapshot-out log loss: a calibrator must improve a snapshot
//! it was not fitted on, as it will have to in production. With one snapshot the folds are
//! random within it. Choosing by in-sample log loss would always pick isotonic, which
//! memorizes. The winner is refitted on everything. All candidates are monotone
//! non-decreasing, so ranking is kept (isotonic may create ties).

use serde::{Deserialize, Serialize};

use crate::math::{logit, sigmoid};
use crate::metrics;
use crate::rng::Rng;

/// Probabilities leaving a calibrator are kept inside [EPS, 1 - EPS].
const EPS: f64 = 1e-6;
/// Probabilities are clamped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit.
const LOGIT_EPS: f64 = 1e-7;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Calibrator {
    /// p' = p: calibration did not help out of time.
    None,
    /// p' = sigmoid(a * logit(p) + b)
    Platt { a: f64, b: f64 },
    /// Piecewise-linear through (x, y) knots, x increasing, y non-decreasing.
    Isotonic { x: Vec<f64>, y: Vec<f64> },
}

impl Calibrator {
    /// What is wrong with a stored calibrator, if anything: Platt with finite parameters and a
    /// non-negative slope (a calibrator never reverses the ranking); isotonic with as many y as
    /// x, x finite and increasing, y non-decreasing within [0, 1].
    pub fn check(&self) -> Option<String> {
        match self {
            Calibrator::None => None,
            Calibrator::Platt { a, b } => (!(a.is_finite() && b.is_finite() && *a >= 0.0))
                .then(|| format!("Platt parameters a = {a}, b = {b}: expected finite numbers with a >= 0")),
            Calibrator::Isotonic { x, y } => {
                if x.len() != y.len() {
                    Some(format!("isotonic knots: {} x values but {} y values", x.len(), y.len()))
                } else if x.iter().any(|v| !v.is_finite()) || x.windows(2).any(|w| w[0] > w[1]) {
                    Some("isotonic knots: x values are not finite and increasing".into())
                } else if y.iter().any(|v| !(0.0..=1.0).contains(v)) || y.windows(2).any(|w| w[0] > w[1]) {
                    Some("isotonic knots: y values are not non-decreasing probabilities".into())
                } else {
                    None
                }
            }
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Calibrator::None => "none",
            Calibrator::Platt { .. } => "platt",
            Calibrator::Isotonic { .. } => "isotonic",
        }
    }

    pub fn apply(&self, p: f64) -> f64 {
        let q = match self {
            Calibrator::None => p,
            Calibrator::Platt { a, b } => sigmoid(a * logit(p, LOGIT_EPS) + b),
            Calibrator::Isotonic { x, y } => {
                if x.is_empty() {
                    p
                } else if p <= x[0] {
                    y[0]
                } else if p >= x[x.len() - 1] {
                    y[y.len() - 1]
                } else {
                    let i = x.partition_point(|&v| v <= p);
                    let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
                    if x1 > x0 {
                        y0 + (y1 - y0) * (p - x0) / (x1 - x0)
                    } else {
                        y1
                    }
                }
            }
        };
        q.clamp(EPS, 1.0 - EPS)
    }

    pub fn apply_all(&self, p: &[f64]) -> Vec<f64> {
        p.iter().map(|&v| self.apply(v)).collect()
    }
}

/// Platt scaling by Newton's method on (a, b), with a tiny ridge for separable data.
pub fn fit_platt(p: &[f64], y: &[f64]) -> Calibrator {
    let z: Vec<f64> = p.iter().map(|&v| logit(v, LOGIT_EPS)).collect();
    let (mut a, mut b) = (1.0, 0.0);
    let ridge = 1e-6;
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (ridge * a, 0.0, ridge, 0.0, 1e-12);
        for (zi, yi) in z.iter().zip(y) {
            let q = sigmoid(a * zi + b);
            let r = q - yi;
            let w = q * (1.0 - q);
            ga += r * zi;
            gb += r;
            haa += w * zi * zi;
            hab += w * zi;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() < 1e-10 && db.abs() < 1e-10 {
            break;
        }
    }
    Calibrator::Platt { a, b }
}

/// Isotonic regression of y on p (pool adjacent violators), with half a churner added at the
/// lowest score and half a stayer at the highest: no calibrated probability is exactly 0 or 1
/// (a top block of 50 churners is 50 / 50.5, not a certainty) and the fit stays monotone.
pub fn fit_isotonic(p: &[f64], y: &[f64]) -> Calibrator {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let (Some(&first), Some(&last)) = (idx.first(), idx.last()) else {
        return Calibrator::Isotonic { x: Vec::new(), y: Vec::new() };
    };
    // Points (x, y, weight), in order of x.
    let points = std::iter::once((p[first], 1.0, 0.5))
        .chain(idx.iter().map(|&i| (p[i], y[i], 1.0)))
        .chain(std::iter::once((p[last], 0.0, 0.5)));
    // Blocks: (sum of weight x y, sum of weights, min x, max x).
    let mut blocks: Vec<(f64, f64, f64, f64)> = Vec::new();
    for (x, t, w) in points {
        let mut blk = (w * t, w, x, x);
        // Equal x values belong in one block.
        if let Some(last) = blocks.last() {
            if last.3 == x {
                let l = blocks.pop().expect("non-empty");
                blk = (l.0 + blk.0, l.1 + blk.1, l.2, x);
            }
        }
        while let Some(last) = blocks.last() {
            if last.0 / last.1 >= blk.0 / blk.1 {
                let l = blocks.pop().expect("non-empty");
                blk = (l.0 + blk.0, l.1 + blk.1, l.2, blk.3);
            } else {
                break;
            }
        }
        blocks.push(blk);
    }
    let (mut x, mut v) = (Vec::new(), Vec::new());
    for (s, n, lo, hi) in blocks {
        x.push(lo);
        v.push(s / n);
        if hi > lo {
            x.push(hi);
            v.push(s / n);
        }
    }
    Calibrator::Isotonic { x, y: v }
}

/// Expected calibration error with `bins` equal-count bins (by predicted probability):
/// sum over bins of (bin share) x |mean prediction - observed rate|.
pub fn ece(y: &[f64], p: &[f64], bins: usize) -> f64 {
    let n = p.len();
    if n == 0 || bins == 0 {
        return f64::NAN;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut total = 0.0;
    for b in 0..bins {
        let (lo, hi) = (b * n / bins, (b + 1) * n / bins);
        if hi <= lo {
            continue;
        }
        let (mut sp, mut sy) = (0.0, 0.0);
        for &i in &idx[lo..hi] {
            sp += p[i];
            sy += y[i];
        }
        let m = (hi - lo) as f64;
        total += (m / n as f64) * (sp / m - sy / m).abs();
    }
    total
}

/// Why a calibrator was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationChoice {
    pub method: String,
    /// `leave-one-snapshot-out` or `k-fold` (one snapshot only).
    #[serde(default)]
    pub scheme: String,
    pub cv_folds: usize,
    /// Snapshots the calibration predictions come from (empty in old artifacts).
    #[serde(default)]
    pub snapshots: Vec<chrono::NaiveDate>,
    #[serde(default)]
    pub n_rows: usize,
    /// Where the predictions come from: `purged models` (one per snapshot, fitted only on
    /// labels closed by then) or `main model at validation` (too little history for that).
    #[serde(default)]
    pub source: String,
    pub cv_log_loss_platt: f64,
    pub cv_log_loss_isotonic: f64,
    pub cv_log_loss_uncalibrated: f64,
    /// Two standard errors of the best calibrator's per-row out-of-fold log-loss gain (how
    /// noisy the log-loss comparison is), and the out-of-fold ECE of the uncalibrated and
    /// the best calibrated probabilities (the second must be [`ECE_MARGIN`] lower).
    #[serde(default)]
    pub required_gain: f64,
    #[serde(default)]
    pub cv_ece_uncalibrated: f64,
    #[serde(default)]
    pub cv_ece_calibrated: f64,
    /// The latest snapshot, left out: its ECE uncalibrated and with the best calibrator
    /// fitted on the others (leave-one-snapshot-out only; the second must be lower by the
    /// same clear margin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_snapshot_ece: Option<(f64, f64)>,
    /// Cross-fitted path (one snapshot, k-fold): the validation snapshot's ECE uncalibrated
    /// and with the chosen calibrator fitted on the fit rows' cross-fitted predictions, an
    /// earlier time (the second must be lower by the same clear margin, or no calibrator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_ece: Option<(f64, f64)>,
}

/// How much lower a calibrator's out-of-fold ECE must be than the uncalibrated one's.
pub const ECE_MARGIN: f64 = 0.005;

/// Per-row log loss.
fn row_log_loss(y: f64, p: f64) -> f64 {
    let q = p.clamp(1e-15, 1.0 - 1e-15);
    -(y * q.ln() + (1.0 - y) * (1.0 - q).ln())
}

/// Mean per-row gain in log loss of `cal` over `none` and two standard errors of it.
fn gain(y: &[f64], none: &[f64], cal: &[f64]) -> (f64, f64) {
    let n = y.len().max(1) as f64;
    let d: Vec<f64> =
        (0..y.len()).map(|i| row_log_loss(y[i], none[i]) - row_log_loss(y[i], cal[i])).collect();
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, 2.0 * (var / n).sqrt())
}

/// Whether an ECE went from `before` to `after` by a clear margin: [`ECE_MARGIN`], and a
/// quarter of `before`.
pub fn clearly_lower(before: f64, after: f64) -> bool {
    after <= before - ECE_MARGIN.max(0.25 * before)
}

/// The calibrator of `method`'s kind fitted on `(p, y)` (none stays none).
pub fn refit_like(method: &Calibrator, p: &[f64], y: &[f64]) -> Calibrator {
    match method {
        Calibrator::None => Calibrator::None,
        Calibrator::Platt { .. } => fit_platt(p, y),
        Calibrator::Isotonic { .. } => fit_isotonic(p, y),
    }
}

/// Choose none, Platt or isotonic by cross-validated log loss on (p, y), then refit the
/// winner on all of it. `group[i]` is the index of the snapshot row `i` comes from: with two
/// or more groups the folds are the groups (leave one snapshot out), otherwise `folds`
/// random folds. Platt is preferred to isotonic unless isotonic's out-of-fold log loss is
/// lower by more than two standard errors. "None" stays unless that calibrator beats it
/// out of fold by a clear margin: a lower log loss, and an ECE lower by at least
/// [`ECE_MARGIN`] (and by a quarter of the uncalibrated ECE), and, left out one snapshot at a
/// time, a lower log loss on every snapshot and, on the latest one, an ECE lower by that same
/// margin. A calibrator that only moves the log loss within noise, on a few thousand rows,
/// has made holdout ECE worse; so has one that corrects a miscalibration the latest snapshot
/// no longer shows (the case that showed it: docs/models.md, "Why the rules are what they
/// are").
pub fn choose(
    p: &[f64],
    y: &[f64],
    group: &[usize],
    snapshots: &[chrono::NaiveDate],
    folds: usize,
    seed: u64,
) -> (Calibrator, CalibrationChoice) {
    let n = p.len();
    let groups = group.iter().copied().max().map_or(0, |g| g + 1);
    let (fold, folds, scheme) = if groups >= 2 {
        (group.to_vec(), groups, "leave-one-snapshot-out")
    } else {
        let folds = folds.clamp(2, n.max(2));
        let mut order: Vec<usize> = (0..n).collect();
        let mut r = Rng::new(seed);
        for i in (1..n).rev() {
            order.swap(i, r.below(i as u64 + 1) as usize);
        }
        let mut fold = vec![0usize; n];
        for (k, &i) in order.iter().enumerate() {
            fold[i] = k % folds;
        }
        (fold, folds, "k-fold")
    };
    let mut out_platt = vec![0.0; n];
    let mut out_iso = vec![0.0; n];
    for f in 0..folds {
        let (train, test): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| fold[i] != f);
        if train.is_empty() || test.is_empty() {
            continue;
        }
        let tp: Vec<f64> = train.iter().map(|&i| p[i]).collect();
        let ty: Vec<f64> = train.iter().map(|&i| y[i]).collect();
        let platt = fit_platt(&tp, &ty);
        let iso = fit_isotonic(&tp, &ty);
        for &i in &test {
            out_platt[i] = platt.apply(p[i]);
            out_iso[i] = iso.apply(p[i]);
        }
    }
    let cv_platt = metrics::log_loss(y, &out_platt);
    let cv_iso = metrics::log_loss(y, &out_iso);
    let raw = Calibrator::None.apply_all(p);
    let cv_none = metrics::log_loss(y, &raw);
    // Platt keeps every distinction of the ranking; isotonic (which ties scores within a
    // block) only when its log loss is lower by more than two standard errors.
    let (iso_gain, iso_noise) = gain(y, &out_platt, &out_iso);
    let (best, out_best) =
        if iso_gain > iso_noise && iso_gain > 0.0 { ("isotonic", &out_iso) } else { ("platt", &out_platt) };
    let (mean_gain, required_gain) = gain(y, &raw, out_best);
    let bins = 10;
    let (ece_none, ece_best) = (ece(y, &raw, bins), ece(y, out_best, bins));
    // One left-out snapshot's labels, uncalibrated and best calibrated predictions.
    let left_out = |f: usize| {
        let rows: Vec<usize> = (0..n).filter(|&i| fold[i] == f).collect();
        let pick = |v: &[f64]| rows.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        (pick(y), pick(&raw), pick(out_best))
    };
    let by_snapshot = scheme == "leave-one-snapshot-out";
    // Leaving out a snapshot at a time, the calibrator must help every left-out snapshot: a
    // shift that only some snapshots share is one the next (the holdout, a live run) may not.
    let every_snapshot = !by_snapshot
        || (0..folds).all(|f| {
            let (yf, none, cal) = left_out(f);
            yf.is_empty() || metrics::log_loss(&yf, &cal) < metrics::log_loss(&yf, &none)
        });
    let latest_snapshot_ece = by_snapshot.then(|| {
        // Groups index `snapshots`; without dates, the last group is the latest.
        let latest = (0..folds).max_by_key(|&g| (snapshots.get(g).copied(), g)).unwrap_or(0);
        let (yl, none, cal) = left_out(latest);
        (ece(&yl, &none, bins), ece(&yl, &cal, bins))
    });
    let latest_clear = latest_snapshot_ece.is_none_or(|(before, after)| clearly_lower(before, after));
    let chosen = if mean_gain > 0.0 && clearly_lower(ece_none, ece_best) && every_snapshot && latest_clear {
        if best == "isotonic" {
            fit_isotonic(p, y)
        } else {
            fit_platt(p, y)
        }
    } else {
        Calibrator::None
    };
    let choice = CalibrationChoice {
        method: chosen.method().into(),
        scheme: scheme.into(),
        cv_folds: folds,
        snapshots: snapshots.to_vec(),
        n_rows: n,
        source: String::new(),
        cv_log_loss_platt: cv_platt,
        cv_log_loss_isotonic: cv_iso,
        cv_log_loss_uncalibrated: cv_none,
        required_gain,
        cv_ece_uncalibrated: ece_none,
        cv_ece_calibrated: ece_best,
        forward_ece: None,
        latest_snapshot_ece,
    };
    (chosen, choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotonic_pools_violators() {
        // Sorted by p: y = 1, 0, 1, 1, with half a churner at 0.1 and half a stayer at 0.4:
        // (0.1: 1.5 of 1.5) pools with (0.2: 0 of 1) to 1.5 / 2.5; then 0.3 (1 of 1) and
        // 0.4 (1 of 1.5) pool to 2 / 2.5.
        let c = fit_isotonic(&[0.1, 0.2, 0.3, 0.4], &[1.0, 0.0, 1.0, 1.0]);
        assert!((c.apply(0.1) - 0.6).abs() < 1e-12);
        assert!((c.apply(0.2) - 0.6).abs() < 1e-12);
        assert!((c.apply(0.35) - 0.8).abs() < 1e-12, "never a certainty");
        // Interpolates between blocks and clips outside.
        assert!((c.apply(0.25) - 0.7).abs() < 1e-12);
        assert!((c.apply(0.0) - 0.6).abs() < 1e-12);
        // A top block of 50 churners is 50 / 50.5, not 1; a bottom block of 50 stayers is not 0.
        let p: Vec<f64> = (0..100).map(|i| f64::from(i) / 100.0).collect();
        let y: Vec<f64> = (0..100).map(|i| f64::from(u8::from(i >= 50))).collect();
        let c = fit_isotonic(&p, &y);
        assert!((c.apply(0.99) - 50.0 / 50.5).abs() < 1e-12);
        assert!((c.apply(0.0) - 0.5 / 50.5).abs() < 1e-12);
    }

    #[test]
    fn platt_recovers_a_known_map() {
        // Labels drawn from sigmoid(2 * logit(p) - 1): Platt should find a ~ 2, b ~ -1.
        let mut r = Rng::new(9);
        let p: Vec<f64> = (0..20000).map(|_| 0.02 + 0.96 * r.uniform()).collect();
        let y: Vec<f64> = p
            .iter()
            .map(|&v| f64::from(u8::from(r.uniform() < sigmoid(2.0 * logit(v, LOGIT_EPS) - 1.0))))
            .collect();
        match fit_platt(&p, &y) {
            Calibrator::Platt { a, b } => {
                assert!((a - 2.0).abs() < 0.1 && (b + 1.0).abs() < 0.1, "a {a} b {b}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ece_hand_computed() {
        // Two bins of two: bin 1 mean p 0.15 vs rate 0.5; bin 2 mean p 0.85 vs rate 0.5.
        let e = ece(&[0.0, 1.0, 1.0, 0.0], &[0.1, 0.2, 0.8, 0.9], 2);
        assert!((e - (0.5 * 0.35 + 0.5 * 0.35)).abs() < 1e-12);
    }

    #[test]
    fn calibration_keeps_ranking_and_fixes_a_distortion() {
        // True probability q; the model reports q^3 (too low): calibration should fix it.
        let mut r = Rng::new(4);
        let q: Vec<f64> = (0..8000).map(|_| r.uniform()).collect();
        let y: Vec<f64> = q.iter().map(|&v| f64::from(u8::from(r.uniform() < v))).collect();
        let p: Vec<f64> = q.iter().map(|v| v.powi(3)).collect();
        let (c, choice) = choose(&p, &y, &vec![0; p.len()], &[], 5, 1);
        assert_eq!(choice.scheme, "k-fold");
        let cal = c.apply_all(&p);
        assert!(ece(&y, &cal, 10) < ece(&y, &p, 10) / 3.0, "{choice:?}");
        // Monotone: sorting by p never decreases the calibrated value.
        let mut idx: Vec<usize> = (0..p.len()).collect();
        idx.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
        assert!(idx.windows(2).all(|w| cal[w[0]] <= cal[w[1]]));
    }

    /// Labels drawn from sigmoid(logit(p) + shift[group]).
    fn shifted(n: usize, shifts: &[f64], seed: u64) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
        let mut r = Rng::new(seed);
        let (mut p, mut y, mut g) = (Vec::new(), Vec::new(), Vec::new());
        for (k, &shift) in shifts.iter().enumerate() {
            for _ in 0..n {
                let v = 0.05 + 0.9 * r.uniform();
                p.push(v);
                y.push(f64::from(u8::from(r.uniform() < sigmoid(logit(v, LOGIT_EPS) + shift))));
                g.push(k);
            }
        }
        (p, y, g)
    }

    #[test]
    fn calibrated_probabilities_are_left_alone() {
        let (p, y, g) = shifted(4000, &[0.0, 0.0, 0.0], 5);
        let (c, choice) = choose(&p, &y, &g, &[], 5, 1);
        assert_eq!(c, Calibrator::None, "{choice:?}");
        assert_eq!(choice.scheme, "leave-one-snapshot-out");
        assert_eq!(choice.cv_folds, 3);
        assert_eq!(c.apply(0.3), 0.3);
    }

    #[test]
    fn a_shift_shared_by_every_snapshot_is_fixed_one_that_flips_is_not() {
        // Every snapshot under-predicts by one logit: Platt learns it out of snapshot.
        let (p, y, g) = shifted(4000, &[1.0, 1.0, 1.0], 6);
        let (c, choice) = choose(&p, &y, &g, &[], 5, 1);
        assert_ne!(c, Calibrator::None, "{choice:?}");
        assert!(ece(&y, &c.apply_all(&p), 10) < ece(&y, &p, 10) / 3.0);
        // The shift changes sign from snapshot to snapshot: a calibrator fitted on the others
        // hurts the left-out one, so none is chosen, although k-fold within the pool (which
        // mixes snapshots) would have found a "fix".
        let (p, y, g) = shifted(4000, &[0.8, -0.8, 0.8, -0.8], 7);
        let (c, choice) = choose(&p, &y, &g, &[], 5, 1);
        assert_eq!(c, Calibrator::None, "{choice:?}");
        assert!(choice.cv_log_loss_platt > choice.cv_log_loss_uncalibrated, "{choice:?}");
    }

    #[test]
    fn a_shift_the_latest_snapshot_has_mostly_lost_is_not_calibrated_away() {
        // The two older snapshots under-predict by 0.8 logit, the latest by 0.46: pooled out
        // of snapshot, Platt clearly helps and even the latest's log loss improves, but a
        // calibrator fitted on the older two over-corrects the latest, whose ECE barely moves.
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let (p, y, g) = shifted(6000, &[0.8, 0.8, 0.46], 8);
        let (c, choice) = choose(&p, &y, &g, &[], 5, 1);
        assert_eq!(c, Calibrator::None, "{choice:?}");
        assert!(choice.cv_ece_calibrated < choice.cv_ece_uncalibrated - ECE_MARGIN, "{choice:?}");
        let (before, after) = choice.latest_snapshot_ece.unwrap();
        assert!(after > before - ECE_MARGIN.max(0.25 * before), "{choice:?}");
        let latest: Vec<usize> = (0..p.len()).filter(|&i| g[i] == 2).collect();
        let others: Vec<usize> = (0..p.len()).filter(|&i| g[i] != 2).collect();
        let pick = |v: &[f64], rows: &[usize]| rows.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        let platt = fit_platt(&pick(&p, &others), &pick(&y, &others));
        let (yl, pl) = (pick(&y, &latest), pick(&p, &latest));
        assert!(
            metrics::log_loss(&yl, &platt.apply_all(&pl)) < metrics::log_loss(&yl, &pl),
            "log loss alone would pass"
        );
        // The latest snapshot is found by its date, not its position.
        let groups: Vec<usize> = g.iter().map(|&k| (k + 1) % 3).collect();
        let dates = [d("2024-03-24"), d("2024-01-28"), d("2024-02-25")];
        let (c, choice) = choose(&p, &y, &groups, &dates, 5, 1);
        assert_eq!(c, Calibrator::None, "{choice:?}");
        assert_eq!(choice.latest_snapshot_ece.map(|e| e.0), Some(before));
        // The same shift in every snapshot is still calibrated.
        let (p, y, g) = shifted(6000, &[0.8, 0.8, 0.8], 8);
        let (c, choice) = choose(&p, &y, &g, &[], 5, 1);
        assert_ne!(c, Calibrator::None, "{choice:?}");
    }
}
