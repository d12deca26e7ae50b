//! How well a score ranks customers by the effect of treating them, on data from a randomized
//! experiment (treated and control customers, one binary outcome each): the Qini curve, the
//! Qini coefficient and uplift@k, as scikit-uplift (`sklift.metrics`) defines them, so the
//! numbers can be compared with what a data scientist computes there (`python/tests` checks
//! that they are equal).
//!
//! `y` is the outcome the treatment should raise (1 = good: for churn, *retained*), `treated`
//! the group, `uplift` the score (higher = treat first; for churn, the predicted reduction in
//! churn probability).

/// Indices by score descending; ties in the order of numpy's
/// `np.argsort(score, kind="mergesort")[::-1]` (the later row first), as sklift sorts. As in
/// numpy, -0.0 and 0.0 are equal.
fn order_desc(score: &[f64]) -> Vec<usize> {
    let key = |v: f64| if v == 0.0 { 0.0 } else { v };
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| key(score[b]).total_cmp(&key(score[a])).then(b.cmp(&a)));
    idx
}

/// The Qini curve: for each distinct score, taken highest first, the customers targeted so
/// far (x) and `successes among the treated - successes among the controls x treated /
/// controls` so far (y); it starts at (0, 0).
pub fn qini_curve(y: &[f64], uplift: &[f64], treated: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let order = order_desc(uplift);
    let (mut xs, mut qs) = (Vec::new(), Vec::new());
    let (mut nt, mut yt, mut yc) = (0.0, 0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if treated[i] {
            nt += 1.0;
            yt += y[i];
        } else {
            yc += y[i];
        }
        let last_of_tie = k + 1 == order.len() || uplift[order[k + 1]] != uplift[i];
        if last_of_tie {
            let n = (k + 1) as f64;
            let nc = n - nt;
            xs.push(n);
            qs.push(if nc != 0.0 { yt - yc * nt / nc } else { yt });
        }
    }
    if xs.first() != Some(&0.0) || qs.first() != Some(&0.0) {
        xs.insert(0, 0.0);
        qs.insert(0, 0.0);
    }
    (xs, qs)
}

/// The Qini curve of the best possible ranking (sklift's `perfect_qini_curve` with
/// `negative_effect=True`): treated successes first, control successes last.
pub fn perfect_qini_curve(y: &[f64], treated: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let perfect: Vec<f64> = y.iter().zip(treated).map(|(&v, &t)| if t { v } else { -v }).collect();
    qini_curve(y, &perfect, treated)
}

/// Area under a curve by the trapezoid rule (sklearn's `auc`, x increasing).
fn area(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2).zip(y.windows(2)).map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0).sum()
}

/// The Qini coefficient (sklift's `qini_auc_score`): the area between the score's Qini curve
/// and the random-targeting line, over the same area of the perfect ranking. 1 = perfect, 0 =
/// no better than random, negative = worse. NaN when the perfect ranking has no area (no
/// group or no success).
pub fn qini_coefficient(y: &[f64], uplift: &[f64], treated: &[bool]) -> f64 {
    let (x, q) = qini_curve(y, uplift, treated);
    let (xp, qp) = perfect_qini_curve(y, treated);
    let (Some(&x_end), Some(&q_end)) = (xp.last(), qp.last()) else { return f64::NAN };
    let baseline = area(&[0.0, x_end], &[0.0, q_end]);
    let perfect = area(&xp, &qp) - baseline;
    if perfect == 0.0 {
        return f64::NAN;
    }
    (area(&x, &q) - baseline) / perfect
}

/// How the first k of uplift@k are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtK {
    /// The first `floor(k x n)` customers overall (sklift `strategy="overall"`).
    Overall,
    /// The first `floor(k x n_treated)` treated and `floor(k x n_control)` control customers
    /// (sklift `strategy="by_group"`).
    ByGroup,
}

/// uplift@k (sklift's `uplift_at_k` with a fraction `k` in (0, 1)): the success rate of the
/// treated minus that of the controls among the top `k` by score. NaN when a group is empty
/// there.
pub fn uplift_at_k(y: &[f64], uplift: &[f64], treated: &[bool], k: f64, strategy: AtK) -> f64 {
    let order = order_desc(uplift);
    let rate = |rows: &[usize]| -> f64 {
        if rows.is_empty() {
            f64::NAN
        } else {
            rows.iter().map(|&i| y[i]).sum::<f64>() / rows.len() as f64
        }
    };
    let (t, c): (Vec<usize>, Vec<usize>) = match strategy {
        AtK::Overall => {
            let n = (y.len() as f64 * k) as usize;
            order[..n.min(order.len())].iter().partition(|&&i| treated[i])
        }
        AtK::ByGroup => {
            let (t, c): (Vec<usize>, Vec<usize>) = order.iter().partition(|&&i| treated[i]);
            let (nt, nc) = ((t.len() as f64 * k) as usize, (c.len() as f64 * k) as usize);
            (t[..nt].to_vec(), c[..nc].to_vec())
        }
    };
    rate(&t) - rate(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_computed_qini_curve_and_coefficient() {
        // Scores 4..1: treated success, control failure, treated failure, control success.
        let y = [1.0, 0.0, 0.0, 1.0];
        let t = [true, false, true, false];
        let s = [4.0, 3.0, 2.0, 1.0];
        let (x, q) = qini_curve(&y, &s, &t);
        assert_eq!(x, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        // After 1: 1 - 0 (no control yet: 1); 2: 1 - 0 x 1/1; 3: 1 - 0 x 2/1; 4: 1 - 1 x 2/2.
        assert_eq!(q, vec![0.0, 1.0, 1.0, 1.0, 0.0]);
        // The perfect ranking is this one; reversed is the worst.
        assert!((qini_coefficient(&y, &s, &t) - 1.0).abs() < 1e-12);
        let rev: Vec<f64> = s.iter().map(|v| -v).collect();
        assert!(qini_coefficient(&y, &rev, &t) < 0.0);
        // Ties count together (-0.0 and 0.0 are equal, as in numpy).
        let (x, _) = qini_curve(&y, &[1.0, 1.0, 0.0, 0.0], &t);
        assert_eq!(x, vec![0.0, 2.0, 4.0]);
        assert_eq!(order_desc(&[0.0, -0.0, 1.0]), vec![2, 1, 0]);
    }

    #[test]
    fn uplift_at_k_takes_the_top_share_overall_or_per_group() {
        let y = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let t = [true, false, true, false, true, false];
        let s = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        // Top half overall: rows 0, 1, 2: treated 1/2, control 1/1.
        assert!((uplift_at_k(&y, &s, &t, 0.5, AtK::Overall) - (0.5 - 1.0)).abs() < 1e-12);
        // Per group, floor(3 x 0.7) = 2 of each: treated rows 0, 2 (1/2), control 1, 3 (1/2).
        assert!(uplift_at_k(&y, &s, &t, 0.7, AtK::ByGroup).abs() < 1e-12);
    }
}
