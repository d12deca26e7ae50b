//! Out-of-time predictions: what the candidates and the calibrator are chosen on.

use chrono::NaiveDate;
use rayon::prelude::*;

use super::candidates::ClvMix;
use super::gbdt::{Gbdt, Task};
use super::hist::Binned;
use super::linear::Logistic;
use super::poisson::PoissonGbdt;
use super::{pick, Dataset, Engine};
use crate::config::{Config, GbdtConfig};
use crate::error::Result;
use crate::schema;
use crate::split::SnapshotPlan;

/// Out-of-time predictions of every candidate part, as a live run would see them.
///
/// The main models' validation predictions are not what a live run sees: the fit snapshots
/// just before validation have label windows overlapping the validation's, and the GBDT's
/// tree count was early-stopped on validation itself; the holdout (and every real scoring
/// date) lies a full horizon after the last label a model learned from. So for each of the
/// last `decision.calibration_snapshots` training snapshots `s`, models with the main
/// models' settings and tree counts are fitted only on snapshots whose label windows closed
/// by `s` (`t + horizon <= s`) and predict `s`. These predictions choose the candidate and
/// fit the calibrator. Snapshots without such history are skipped; `None` when none is left.
///
/// Without that history (one fit snapshot, as on Complete Journey), the candidates are
/// compared by cross-fitting on the fit rows instead: `decision.calibration_folds` folds by
/// customer, each predicted by models fitted on the other folds. Not out of time, but fair
/// between candidates, which validation is not: the GBDT was early-stopped on it and its
/// fit labels overlap its label window (docs/models.md, "Why the rules are what they are").
pub struct OutOfTime {
    /// Rows of the dataset predicted, group by group.
    pub rows: Vec<usize>,
    /// Group (snapshot index into `dates`, or fold) of each predicted row.
    pub group: Vec<usize>,
    /// The purged snapshots; empty for a cross-fitted set.
    pub dates: Vec<NaiveDate>,
    pub n_groups: usize,
    pub churn_gbdt: Vec<f64>,
    /// Logistic log-odds for each value of the penalty grid (`model.logistic_l2`).
    pub logistic_by_l2: Vec<Vec<f64>>,
    /// Those of the chosen penalty (set by [`super::choose::logistic`]).
    pub churn_logistic_margin: Vec<f64>,
    pub clv_gbdt: Vec<f64>,
    pub clv_poisson: Vec<f64>,
    /// Purged snapshots whose models were fitted on a sample of customers
    /// (`decision.purged_max_rows`): (rows kept, rows with closed labels).
    pub sampled: Vec<(usize, usize)>,
}

impl OutOfTime {
    /// Row indices (into `rows`) of each snapshot.
    pub fn per_snapshot(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.n_groups];
        for (i, &g) in self.group.iter().enumerate() {
            out[g].push(i);
        }
        out
    }
}

/// Tree counts of the main models, which the purged models reuse.
#[derive(Debug, Clone, Copy)]
pub struct Trees {
    pub churn: usize,
    pub clv: usize,
    /// `None` when the Poisson CLV candidate is off.
    pub poisson: Option<usize>,
}

/// One group's out-of-time predictions (see [`OutOfTime`]'s fields).
struct Group {
    at: Vec<usize>,
    churn_gbdt: Vec<f64>,
    logistic_by_l2: Vec<Vec<f64>>,
    clv_gbdt: Vec<f64>,
    clv_poisson: Vec<f64>,
}

/// Predictions of the candidate parts for the rows `at`, by models fitted on the rows `fit`
/// with the main models' settings and tree counts. The CLV GBDT is fitted only when there
/// is a CLV choice to make (`clv_choice`).
fn predict_group(
    cfg: &GbdtConfig,
    (data, binned): (&Dataset, &Binned),
    trees: Trees,
    (fit, at): (&[usize], Vec<usize>),
    clv_choice: bool,
) -> Result<Group> {
    // The main models' tree counts, fitted without any look at the rows predicted.
    let params = |n: usize| GbdtConfig { iterations: n.max(1), ..cfg.clone() };
    let x_at = data.x.select_rows(&at);
    // The fit rows as a compact matrix of their own (same cuts): a customer sample of a large
    // base is sparse in the shared one.
    let (binned, all) = (&binned.select(fit), (0..fit.len()).collect::<Vec<usize>>());
    let (churn, clv) = (pick(&data.churn, fit), pick(&data.clv, fit));
    let g = Engine::fit_binned(&params(trees.churn), Task::Churn, binned, &all, &churn, None)?;
    let churn_gbdt = g.predict(&x_at);
    let logistic_by_l2 = cfg
        .logistic_l2
        .iter()
        .map(|&l2| Ok(Logistic::fit_rows(&data.x, fit, &data.churn, l2)?.margin(&x_at)))
        .collect::<Result<Vec<_>>>()?;
    let (mut clv_gbdt, mut clv_poisson) = (Vec::new(), Vec::new());
    if clv_choice {
        let c = Engine::fit_binned(&params(trees.clv), Task::Clv, binned, &all, &clv, None)?;
        clv_gbdt = c.predict(&x_at);
        if let Some(n) = trees.poisson {
            clv_poisson = PoissonGbdt::fit_binned(&params(n), binned, &all, &clv, None)?.predict(&x_at);
        }
    }
    Ok(Group { at, churn_gbdt, logistic_by_l2, clv_gbdt, clv_poisson })
}

/// Feature values (rows x columns) under which the groups' models are fitted side by side:
/// each holds a copy of the rows it predicts, so a large base fits them one after another
/// (each fit is parallel on its own there). The models are the same either way.
const PARALLEL_GROUPS_MAX_VALUES: usize = 20_000_000;

/// The predictions of every group `(fit rows, predicted rows)`, in order, appended to `o`.
fn predict_groups(
    o: &mut OutOfTime,
    cfg: &GbdtConfig,
    (data, binned): (&Dataset, &Binned),
    trees: Trees,
    groups: Vec<(Vec<usize>, Vec<usize>)>,
    clv_choice: bool,
) -> Result<()> {
    let one = |(fit, at): (Vec<usize>, Vec<usize>)| {
        predict_group(cfg, (data, binned), trees, (&fit, at), clv_choice)
    };
    let done: Vec<Group> = if data.x.rows * data.x.cols() <= PARALLEL_GROUPS_MAX_VALUES {
        groups.into_par_iter().map(one).collect::<Result<_>>()?
    } else {
        groups.into_iter().map(one).collect::<Result<_>>()?
    };
    for (group, g) in done.into_iter().enumerate() {
        o.churn_gbdt.extend(g.churn_gbdt);
        for (all, part) in o.logistic_by_l2.iter_mut().zip(g.logistic_by_l2) {
            all.extend(part);
        }
        o.clv_gbdt.extend(g.clv_gbdt);
        o.clv_poisson.extend(g.clv_poisson);
        o.group.extend(std::iter::repeat_n(group, g.at.len()));
        o.rows.extend(g.at);
        o.n_groups = o.n_groups.max(group + 1);
    }
    Ok(())
}

/// The out-of-time predictions of [`OutOfTime`] for `data` (see there); `None` when there is
/// neither history for purged models nor fit rows of both classes to cross-fit.
pub fn out_of_time(
    cfg: &Config,
    plan: &SnapshotPlan,
    data: &Dataset,
    binned: &Binned,
    trees: Trees,
) -> Result<Option<OutOfTime>> {
    let clv_choice = ClvMix::available(&data.x.names, trees.poisson.is_some()).len() > 1;
    let horizon = cfg.snapshots.horizon_days;
    let days = &data.days;
    let mut training: Vec<NaiveDate> = plan.fit.clone();
    training.push(plan.validation);
    let k =
        purged_snapshots(&training, days, cfg.decision.calibration_snapshots, cfg.decision.purged_min_rows);
    let mut o = OutOfTime {
        rows: Vec::new(),
        group: Vec::new(),
        dates: Vec::new(),
        n_groups: 0,
        churn_gbdt: Vec::new(),
        logistic_by_l2: vec![Vec::new(); cfg.model.logistic_l2.len()],
        churn_logistic_margin: Vec::new(),
        clv_gbdt: Vec::new(),
        clv_poisson: Vec::new(),
        sampled: Vec::new(),
    };
    // A purged model needs both classes to learn from.
    let both_classes = |fit: &[usize]| fit.iter().any(|&i| data.churn[i] != data.churn[fit[0]]);
    let customers = data.customer_hashes()?;
    let mut groups = Vec::new();
    for &s in &training[training.len() - k..] {
        let sd = schema::epoch_day(s);
        let fit: Vec<usize> = (0..days.len()).filter(|&i| days[i] + horizon <= sd).collect();
        let closed = fit.len();
        let fit = sample_customers(fit, &customers, cfg.decision.purged_max_rows);
        let at: Vec<usize> = (0..days.len()).filter(|&i| days[i] == sd).collect();
        if at.is_empty() || fit.is_empty() || !both_classes(&fit) {
            continue;
        }
        if fit.len() < closed {
            o.sampled.push((fit.len(), closed));
        }
        groups.push((fit, at));
        o.dates.push(s);
    }
    predict_groups(&mut o, &cfg.model, (data, binned), trees, groups, clv_choice)?;
    if o.dates.is_empty() {
        // Cross-fitting on the fit rows, folds by customer.
        let k = cfg.decision.calibration_folds as u64;
        let mut folds = Vec::new();
        for f in 0..k {
            let (at, fit): (Vec<usize>, Vec<usize>) =
                data.rows.fit.iter().partition(|&&i| customers[i] % k == f);
            if at.is_empty() || fit.is_empty() || !both_classes(&fit) {
                continue;
            }
            folds.push((fit, at));
        }
        predict_groups(&mut o, &cfg.model, (data, binned), trees, folds, clv_choice)?;
    }
    Ok((o.n_groups > 0).then_some(o))
}

/// How many of the last `training` snapshots get purged models: `max`, or fewer when the
/// latest ones already predict `min_rows` rows (their choice metrics' variance is small
/// then, and each snapshot costs a set of models), but never fewer than two (the one-SE
/// choice compares candidates across snapshots). `min_rows` 0: always `max`.
fn purged_snapshots(training: &[NaiveDate], days: &[i32], max: usize, min_rows: usize) -> usize {
    let max = max.min(training.len());
    if min_rows == 0 {
        return max;
    }
    let mut rows = 0;
    for (k, &s) in training.iter().rev().take(max).enumerate() {
        let sd = schema::epoch_day(s);
        rows += days.iter().filter(|&&d| d == sd).count();
        if k + 1 >= 2 && rows >= min_rows {
            return k + 1;
        }
    }
    max
}

/// `rows` when at most `max` (or `max` is 0), else the rows of a deterministic share of
/// customers (hash below the share `max / rows`): about `max` rows, every snapshot of each
/// customer kept, in order.
pub fn sample_customers(rows: Vec<usize>, customers: &[u64], max: usize) -> Vec<usize> {
    if max == 0 || rows.len() <= max {
        return rows;
    }
    let cut = (max as f64 / rows.len() as f64 * u64::MAX as f64) as u64;
    rows.into_iter().filter(|&i| customers[i] < cut).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purged_snapshots_stop_at_enough_rows_but_never_below_two() {
        let dates: Vec<NaiveDate> =
            (1..=5).map(|m| NaiveDate::from_ymd_opt(2024, m, 1).expect("a date")).collect();
        // 1,000 rows at each snapshot.
        let days: Vec<i32> =
            dates.iter().flat_map(|&d| std::iter::repeat_n(schema::epoch_day(d), 1000)).collect();
        assert_eq!(purged_snapshots(&dates, &days, 3, 0), 3);
        assert_eq!(purged_snapshots(&dates, &days, 3, 100_000), 3);
        assert_eq!(purged_snapshots(&dates, &days, 4, 2500), 3);
        assert_eq!(purged_snapshots(&dates, &days, 3, 500), 2);
        assert_eq!(purged_snapshots(&dates, &days, 1, 500), 1);
        assert_eq!(purged_snapshots(&dates[..1], &days, 3, 500), 1);
    }

    #[test]
    fn purged_samples_keep_whole_customers_and_about_the_cap() {
        // 5,000 customers at 4 snapshots, rows in (snapshot, customer) order.
        let hashes: Vec<u64> = (0..5000u64).map(|c| xxhash_rust::xxh3::xxh3_64(&c.to_le_bytes())).collect();
        let customers: Vec<u64> = (0..4).flat_map(|_| hashes.iter().copied()).collect();
        let rows: Vec<usize> = (0..customers.len()).collect();
        let kept = sample_customers(rows.clone(), &customers, 8000);
        assert!((7000..9000).contains(&kept.len()), "{}", kept.len());
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "rows stay in order");
        // A kept customer is kept at every snapshot.
        let per_customer = |c: usize| kept.iter().filter(|&&r| r % 5000 == c).count();
        assert!((0..5000).all(|c| matches!(per_customer(c), 0 | 4)));
        assert_eq!(kept, sample_customers(rows.clone(), &customers, 8000));
        // At or under the cap, or with no cap, every row.
        assert_eq!(sample_customers(rows.clone(), &customers, 20_000), rows);
        assert_eq!(sample_customers(rows.clone(), &customers, 0), rows);
    }
}
