//! Evaluation metrics for churn (binary) and CLV (regression) predictions.
//!
//! Ties are handled exactly: rank-based metrics use average ranks, and "top 10%" metrics
//! share a tied group at the cut-off pro rata (the expected value over all orderings of the
//! tie), so a metric never depends on the row order of the input.

use serde::{Deserialize, Serialize};

/// Holdout/validation metrics of a churn score (higher score = more likely to churn). An
/// undefined metric (e.g. ROC AUC of one class) is NaN, written as `null`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChurnMetrics {
    #[serde(with = "nan_as_null")]
    pub roc_auc: f64,
    #[serde(with = "nan_as_null")]
    pub pr_auc: f64,
    #[serde(with = "nan_as_null")]
    pub brier: f64,
    #[serde(with = "nan_as_null")]
    pub log_loss: f64,
    #[serde(with = "nan_as_null")]
    pub top10_lift: f64,
    #[serde(with = "nan_as_null")]
    pub top10_capture: f64,
    pub n: usize,
    #[serde(with = "nan_as_null")]
    pub churn_rate: f64,
}

/// Metrics of a CLV prediction against realized revenue over the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClvMetrics {
    #[serde(with = "nan_as_null")]
    pub mae: f64,
    #[serde(with = "nan_as_null")]
    pub rmse: f64,
    #[serde(with = "nan_as_null")]
    pub spearman: f64,
    #[serde(with = "nan_as_null")]
    pub normalized_gini: f64,
    #[serde(with = "nan_as_null")]
    pub top10_revenue_share: f64,
    pub n: usize,
    #[serde(with = "nan_as_null")]
    pub mean_actual: f64,
    #[serde(with = "nan_as_null")]
    pub mean_predicted: f64,
}

pub fn churn_metrics(y: &[f64], p: &[f64]) -> ChurnMetrics {
    let (lift, capture) = top_fraction_lift_capture(y, p, 0.1);
    ChurnMetrics {
        roc_auc: roc_auc(y, p),
        pr_auc: average_precision(y, p),
        brier: brier(y, p),
        log_loss: log_loss(y, p),
        top10_lift: lift,
        top10_capture: capture,
        n: y.len(),
        churn_rate: mean(y),
    }
}

pub fn clv_metrics(actual: &[f64], pred: &[f64]) -> ClvMetrics {
    ClvMetrics {
        mae: mae(actual, pred),
        rmse: rmse(actual, pred),
        spearman: spearman(actual, pred),
        normalized_gini: normalized_gini(actual, pred),
        top10_revenue_share: top_fraction_share(actual, pred, 0.1),
        n: actual.len(),
        mean_actual: mean(actual),
        mean_predicted: mean(pred),
    }
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Indices sorted by `score` descending (NaN last), stable.
fn order_desc(score: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    idx
}

/// Groups of equal scores in a descending order: (start, end) ranges into `order`.
fn tie_groups(score: &[f64], order: &[usize]) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        if i == order.len() || score[order[i]] != score[order[start]] {
            groups.push((start, i));
            start = i;
        }
    }
    groups
}

/// Average ranks (1-based, ascending), ties get the mean of their positions.
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut start = 0;
    for i in 1..=idx.len() {
        if i == idx.len() || v[idx[i]] != v[idx[start]] {
            let r = (start + 1 + i) as f64 / 2.0;
            for &j in &idx[start..i] {
                ranks[j] = r;
            }
            start = i;
        }
    }
    ranks
}

/// ROC AUC (Mann-Whitney U with average ranks). NaN when one class is absent.
pub fn roc_auc(y: &[f64], score: &[f64]) -> f64 {
    let n_pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let ranks = average_ranks(score);
    let rank_sum: f64 = ranks.iter().zip(y).filter(|(_, &t)| t > 0.5).map(|(r, _)| r).sum();
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Average precision: sum over distinct thresholds of (recall gain) x precision, with tied
/// scores entering together (scikit-learn's definition). NaN without positives.
pub fn average_precision(y: &[f64], score: &[f64]) -> f64 {
    let n_pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    if n_pos == 0.0 {
        return f64::NAN;
    }
    let order = order_desc(score);
    let (mut tp, mut seen, mut ap) = (0.0, 0.0, 0.0);
    for (s, e) in tie_groups(score, &order) {
        let group_tp = order[s..e].iter().filter(|&&i| y[i] > 0.5).count() as f64;
        tp += group_tp;
        seen += (e - s) as f64;
        ap += (group_tp / n_pos) * (tp / seen);
    }
    ap
}

/// Mean of `f(a_i, b_i)` over paired values (NaN when empty).
fn mean_pairwise(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
    if a.is_empty() {
        return f64::NAN;
    }
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).sum::<f64>() / a.len() as f64
}

pub fn brier(y: &[f64], p: &[f64]) -> f64 {
    mean_pairwise(y, p, |t, q| (q - t) * (q - t))
}

/// Mean negative log-likelihood, probabilities clipped to [1e-15, 1 - 1e-15].
pub fn log_loss(y: &[f64], p: &[f64]) -> f64 {
    mean_pairwise(y, p, |t, q| {
        let q = q.clamp(1e-15, 1.0 - 1e-15);
        -(t * q.ln() + (1.0 - t) * (1.0 - q).ln())
    })
}

/// Expected sum of `value` over the top `round(frac * n)` rows by `score`, with a tie group
/// straddling the cut-off counted pro rata. Returns (sum in top, k).
fn top_sum(value: &[f64], score: &[f64], frac: f64) -> (f64, usize) {
    let n = value.len();
    let k = ((frac * n as f64).round() as usize).min(n);
    let order = order_desc(score);
    let mut total = 0.0;
    for (s, e) in tie_groups(score, &order) {
        if s >= k {
            break;
        }
        let group_sum: f64 = order[s..e].iter().map(|&i| value[i]).sum();
        let take = (k.min(e) - s) as f64 / (e - s) as f64;
        total += group_sum * take;
    }
    (total, k)
}

/// Expected sum of `value` over the top `round(frac * n)` rows by `score` (ties pro rata).
pub fn top_fraction_sum(value: &[f64], score: &[f64], frac: f64) -> f64 {
    top_sum(value, score, frac).0
}

/// (lift, capture) of the top `frac` by score: churn rate in the top over the overall churn
/// rate, and the share of all churners that are in the top.
pub fn top_fraction_lift_capture(y: &[f64], score: &[f64], frac: f64) -> (f64, f64) {
    let positives: f64 = y.iter().sum();
    let (top_pos, k) = top_sum(y, score, frac);
    if positives == 0.0 || k == 0 {
        return (f64::NAN, f64::NAN);
    }
    let base = positives / y.len() as f64;
    ((top_pos / k as f64) / base, top_pos / positives)
}

/// Share of the total actual value held by the top `frac` rows by prediction.
pub fn top_fraction_share(actual: &[f64], pred: &[f64], frac: f64) -> f64 {
    let total: f64 = actual.iter().sum();
    if total == 0.0 {
        return f64::NAN;
    }
    top_sum(actual, pred, frac).0 / total
}

pub fn mae(a: &[f64], p: &[f64]) -> f64 {
    mean_pairwise(a, p, |x, y| (x - y).abs())
}

pub fn rmse(a: &[f64], p: &[f64]) -> f64 {
    mean_pairwise(a, p, |x, y| (x - y) * (x - y)).sqrt()
}

pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    sab / (saa * sbb).sqrt()
}

/// Spearman rank correlation (Pearson correlation of average ranks).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Gini of the ordering of `actual` by `pred` (descending): the area between the cumulative
/// share of actual value and the diagonal, with tied predictions averaged over all their
/// orderings.
pub fn gini(actual: &[f64], pred: &[f64]) -> f64 {
    let n = actual.len() as f64;
    let total: f64 = actual.iter().sum();
    if actual.is_empty() || total == 0.0 {
        return f64::NAN;
    }
    let order = order_desc(pred);
    let (mut cum, mut cum_sum) = (0.0, 0.0);
    for (s, e) in tie_groups(pred, &order) {
        let m = (e - s) as f64;
        let g: f64 = order[s..e].iter().map(|&i| actual[i]).sum();
        // Sum of running totals over the group, in expectation over its orderings.
        cum_sum += m * cum + g * (m + 1.0) / 2.0;
        cum += g;
    }
    (cum_sum / total - (n + 1.0) / 2.0) / n
}

/// Normalized Gini: Gini of the ordering by prediction over Gini of the ordering by actual
/// (1 = perfect ranking, 0 = random, -1 = reversed).
pub fn normalized_gini(actual: &[f64], pred: &[f64]) -> f64 {
    gini(actual, pred) / gini(actual, actual)
}

/// Serde for an `f64` that may be NaN (undefined, e.g. the churn rate of an empty group):
/// written as JSON `null`, read back as NaN.
pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// A serde default: NaN (a figure a file written before it existed does not hold).
pub fn nan() -> f64 {
    f64::NAN
}

/// [`nan_as_null`] for a fixed number of values.
pub mod nan_as_null_array {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[f64; N], s: S) -> Result<S::Ok, S::Error> {
        super::nan_as_null_vec::serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[f64; N], D::Error> {
        let v = super::nan_as_null_vec::deserialize(d)?;
        let n = v.len();
        v.try_into().map_err(|_| serde::de::Error::invalid_length(n, &"an array of the expected length"))
    }
}

/// [`nan_as_null`] for a vector of values.
pub mod nan_as_null_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_hand_computed_with_ties() {
        // Positives at scores 0.8, 0.4; negatives at 0.4, 0.1.
        // Pairs: (0.8>0.4)=1, (0.8>0.1)=1, (0.4=0.4)=0.5, (0.4>0.1)=1 -> 3.5/4.
        let y = [1.0, 1.0, 0.0, 0.0];
        let s = [0.8, 0.4, 0.4, 0.1];
        assert!(close(roc_auc(&y, &s), 0.875));
        // All scores equal: 0.5.
        assert!(close(roc_auc(&y, &[0.3; 4]), 0.5));
        // Perfect and reversed.
        assert!(close(roc_auc(&y, &[4.0, 3.0, 2.0, 1.0]), 1.0));
        assert!(close(roc_auc(&y, &[1.0, 2.0, 3.0, 4.0]), 0.0));
        assert!(roc_auc(&[1.0, 1.0], &[0.1, 0.2]).is_nan());
    }

    #[test]
    fn average_precision_hand_computed() {
        // Order: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg).
        // AP = 0.5 * 1/1 + 0.5 * 2/3 = 0.8333...
        let y = [1.0, 0.0, 1.0, 0.0];
        let s = [0.9, 0.8, 0.7, 0.1];
        assert!(close(average_precision(&y, &s), 0.5 + 1.0 / 3.0));
        // Tied top pair (pos, neg) enters together: 0.5 * 1/2 + 0.5 * 2/3.
        let s = [0.9, 0.9, 0.7, 0.1];
        assert!(close(average_precision(&y, &s), 0.25 + 1.0 / 3.0));
    }

    #[test]
    fn brier_and_log_loss() {
        let y = [1.0, 0.0];
        let p = [0.8, 0.4];
        assert!(close(brier(&y, &p), (0.04 + 0.16) / 2.0));
        assert!(close(log_loss(&y, &p), -(0.8f64.ln() + 0.6f64.ln()) / 2.0));
        assert!(log_loss(&[1.0], &[0.0]).is_finite());
    }

    #[test]
    fn lift_and_capture_with_tie_at_cutoff() {
        // 20 rows, top 10% = 2 rows. Scores: one 1.0 (pos), three tied at 0.5 (one pos),
        // the rest 0.0 (one pos). 3 positives, base rate 0.15.
        let mut y = vec![0.0; 20];
        let mut s = vec![0.0; 20];
        s[0] = 1.0;
        y[0] = 1.0;
        s[1..4].fill(0.5);
        y[2] = 1.0;
        y[10] = 1.0;
        // Top 2 = row 0 + one of three tied rows (1/3 chance positive) -> 4/3 positives.
        let (lift, capture) = top_fraction_lift_capture(&y, &s, 0.1);
        assert!(close(capture, (4.0 / 3.0) / 3.0));
        assert!(close(lift, ((4.0 / 3.0) / 2.0) / 0.15));
    }

    #[test]
    fn gini_perfect_reversed_and_ties() {
        let a = [1.0, 2.0, 3.0, 10.0];
        assert!(close(normalized_gini(&a, &a), 1.0));
        assert!(close(normalized_gini(&a, &[4.0, 3.0, 2.0, 1.0]), -1.0));
        // Constant prediction carries no ranking information: 0.
        assert!(close(normalized_gini(&a, &[5.0; 4]), 0.0));
        // Hand computed: a = [1,2,3], pred orders 3,1,2 -> cumsums 3,4,6 = 13/6 - 2 = 1/6,
        // /3 = 1/18; perfect: 3,5,6 = 14/6 - 2 = 1/3, /3 = 1/9; normalized = 0.5.
        assert!(close(normalized_gini(&[1.0, 2.0, 3.0], &[2.0, 1.0, 3.0]), 0.5));
    }

    #[test]
    fn spearman_and_errors() {
        assert!(close(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0));
        assert!(close(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0));
        assert!(close(mae(&[1.0, 3.0], &[2.0, 1.0]), 1.5));
        assert!(close(rmse(&[1.0, 3.0], &[2.0, 1.0]), (2.5f64).sqrt()));
        // Top 10% of 10 rows = 1 row: the largest prediction has actual 5 of total 10.
        let actual = [5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let pred = [9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        assert!(close(top_fraction_share(&actual, &pred, 0.1), 0.5));
    }

    #[test]
    fn average_ranks_ties() {
        assert_eq!(average_ranks(&[10.0, 20.0, 10.0, 30.0]), vec![1.5, 3.0, 1.5, 4.0]);
    }
}
