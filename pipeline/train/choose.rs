//! The choices made on out-of-time predictions ([`super::oot`]), never on the holdout: the
//! logistic regression's penalty, the shipped churn and CLV candidates, the calibrator.

use super::candidates::{
    self, CandidateReport, ChurnCandidate, ChurnMix, ClvCandidate, ClvMix, PenaltyChoice,
};
use super::gbdt::Gbdt;
use super::linear::Logistic;
use super::oot::OutOfTime;
use super::poisson::PoissonGbdt;
use super::{pick, Dataset, Engine, RoleSet};
use crate::calibration::{self, CalibrationChoice, Calibrator};
use crate::error::Result;
use crate::features::FeatureMatrix;
use crate::metrics;
use crate::split::SnapshotPlan;

/// The models fitted on the fit rows that the candidates are made of.
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    pub churn: &'a Engine,
    pub logistic: &'a Logistic,
    pub clv: &'a Engine,
    pub poisson: Option<&'a PoissonGbdt>,
}

/// The parts' predictions on one set of rows.
struct PartPredictions {
    churn: Vec<f64>,
    logistic_margin: Vec<f64>,
    clv: Vec<f64>,
    poisson: Option<Vec<f64>>,
}

impl Parts<'_> {
    fn predict(&self, x: &FeatureMatrix) -> PartPredictions {
        PartPredictions {
            churn: self.churn.predict(x),
            logistic_margin: self.logistic.margin(x),
            clv: self.clv.predict(x),
            poisson: self.poisson.map(|p| p.predict(x)),
        }
    }
}

impl PartPredictions {
    fn churn(&self, mix: ChurnMix, x: &FeatureMatrix) -> Vec<f64> {
        candidates::churn_of(mix, Some(&self.churn), Some(&self.logistic_margin), x)
    }

    fn clv(&self, mix: ClvMix, x: &FeatureMatrix) -> Vec<f64> {
        candidates::combine_clv(mix, clv_base(mix, &self.clv, self.poisson.as_deref()), x)
    }
}

/// The GBDT a CLV mix starts from.
fn clv_base(mix: ClvMix, squared: &[f64], poisson: Option<&[f64]>) -> Vec<f64> {
    match poisson {
        Some(p) if mix.uses_poisson() => p.to_vec(),
        _ => squared.to_vec(),
    }
}

/// Out-of-time metrics of the candidates: per snapshot (or fold), then their mean.
struct OutOfTimeScores<'a> {
    o: &'a OutOfTime,
    groups: Vec<Vec<usize>>,
    x: FeatureMatrix,
    churn: Vec<f64>,
    clv: Vec<f64>,
}

impl<'a> OutOfTimeScores<'a> {
    fn new(o: &'a OutOfTime, data: &Dataset) -> Self {
        OutOfTimeScores {
            o,
            groups: o.per_snapshot(),
            x: data.x.select_rows(&o.rows),
            churn: pick(&data.churn, &o.rows),
            clv: pick(&data.clv, &o.rows),
        }
    }

    fn per_group(&self, y: &[f64], p: &[f64], metric: fn(&[f64], &[f64]) -> f64) -> Vec<f64> {
        self.groups.iter().map(|i| metric(&pick(y, i), &pick(p, i))).collect()
    }

    /// Per-group ROC AUC of a churn mix.
    fn churn(&self, mix: ChurnMix) -> Vec<f64> {
        let p =
            candidates::churn_of(mix, Some(&self.o.churn_gbdt), Some(&self.o.churn_logistic_margin), &self.x);
        self.per_group(&self.churn, &p, metrics::roc_auc)
    }

    /// Per-group normalized Gini of a CLV mix.
    fn clv(&self, mix: ClvMix) -> Option<Vec<f64>> {
        if self.o.clv_gbdt.is_empty() {
            return None;
        }
        let p =
            candidates::combine_clv(mix, clv_base(mix, &self.o.clv_gbdt, Some(&self.o.clv_poisson)), &self.x);
        Some(self.per_group(&self.clv, &p, metrics::normalized_gini))
    }
}

/// The one-standard-error choice among candidates listed in report order: their choice
/// metric (mean over groups, or the validation metric), per-group values, and positions in
/// simplicity order. Returns the chosen index and each one's standard error.
fn choose_simplest<M: PartialEq + Copy>(
    mixes: &[M],
    simplest_first: &[M],
    means: &[f64],
    groups: &[Vec<f64>],
) -> (usize, Vec<Option<f64>>) {
    let order: Vec<usize> = simplest_first.iter().filter_map(|m| mixes.iter().position(|k| k == m)).collect();
    candidates::one_se_choice(means, groups, &order)
}

/// Every candidate's validation and holdout metrics (fit-snapshot models), its out-of-time
/// metric (purged models, mean over their snapshots) when there is one, and the mixes
/// chosen: on the out-of-time metric, or on validation without one.
pub fn candidates(
    parts: Parts,
    val: &RoleSet,
    hold: &RoleSet,
    oot: Option<(&OutOfTime, &Dataset)>,
) -> (CandidateReport, ChurnMix, ClvMix) {
    let (pv, ph) = (parts.predict(&val.x), parts.predict(&hold.x));
    let scores = oot.map(|(o, data)| OutOfTimeScores::new(o, data));
    let mut churn_c: Vec<ChurnCandidate> = ChurnMix::available(&val.x.names)
        .into_iter()
        .map(|mix| {
            let groups = scores.as_ref().map(|s| s.churn(mix)).unwrap_or_default();
            ChurnCandidate {
                name: mix.name().into(),
                mix,
                chosen: false,
                out_of_time_roc_auc: scores.as_ref().map(|_| metrics::mean(&groups)),
                out_of_time_groups: groups,
                standard_error: None,
                validation: metrics::churn_metrics(&val.churn, &pv.churn(mix, &val.x)),
                holdout: metrics::churn_metrics(&hold.churn, &ph.churn(mix, &hold.x)),
            }
        })
        .collect();
    let mut clv_c: Vec<ClvCandidate> = ClvMix::available(&val.x.names, parts.poisson.is_some())
        .into_iter()
        .map(|mix| {
            let groups = scores.as_ref().and_then(|s| s.clv(mix));
            ClvCandidate {
                name: mix.name().into(),
                mix,
                chosen: false,
                out_of_time_normalized_gini: groups.as_ref().map(|g| metrics::mean(g)),
                out_of_time_groups: groups.unwrap_or_default(),
                standard_error: None,
                validation: metrics::clv_metrics(&val.clv, &pv.clv(mix, &val.x)),
                holdout: metrics::clv_metrics(&hold.clv, &ph.clv(mix, &hold.x)),
            }
        })
        .collect();
    let (i, se) = choose_simplest(
        &churn_c.iter().map(|c| c.mix).collect::<Vec<_>>(),
        &ChurnMix::SIMPLEST_FIRST,
        &churn_c.iter().map(|c| c.out_of_time_roc_auc.unwrap_or(c.validation.roc_auc)).collect::<Vec<_>>(),
        &churn_c.iter().map(|c| c.out_of_time_groups.clone()).collect::<Vec<_>>(),
    );
    for (c, se) in churn_c.iter_mut().zip(se) {
        c.standard_error = se;
    }
    let purged = oot.is_some_and(|(o, _)| !o.dates.is_empty());
    let cross_fitted = oot.is_some() && !purged;
    let bgnbd = churn_c.iter().position(|c| c.mix == ChurnMix::Bgnbd);
    let i = bgnbd_on_validation(cross_fitted, i, bgnbd, |k| churn_c[k].validation.roc_auc);
    churn_c[i].chosen = true;
    let clv_mixes: Vec<ClvMix> = clv_c.iter().map(|c| c.mix).collect();
    let (j, se) = choose_simplest(
        &clv_mixes,
        &ClvMix::SIMPLEST_FIRST,
        &clv_c
            .iter()
            .map(|c| c.out_of_time_normalized_gini.unwrap_or(c.validation.normalized_gini))
            .collect::<Vec<_>>(),
        &clv_c.iter().map(|c| c.out_of_time_groups.clone()).collect::<Vec<_>>(),
    );
    for (c, se) in clv_c.iter_mut().zip(se) {
        c.standard_error = se;
    }
    let j = if purged { j } else { hedged_with_bgnbd(&clv_mixes, j) };
    let bgnbd = clv_c.iter().position(|c| c.mix == ClvMix::Bgnbd);
    let j = bgnbd_on_validation(cross_fitted, j, bgnbd, |k| clv_c[k].validation.normalized_gini);
    clv_c[j].chosen = true;
    let (churn_mix, clv_mix) = (churn_c[i].mix, clv_c[j].mix);
    let report = CandidateReport {
        rule: candidates::RULE.into(),
        basis: basis(oot.map(|o| o.0)),
        churn: churn_c,
        clv: clv_c,
        logistic_l2: Vec::new(),
    };
    (report, churn_mix, clv_mix)
}

/// The CLV candidate (index into `mixes`) that ships when the `chosen` one was not compared on
/// purged models: a GBDT alone becomes its blend with the BG/NBD when that blend is a
/// candidate. Folds within one snapshot (and the validation snapshot, close to the fit one)
/// cannot see how a GBDT fitted on customers of one age extrapolates to older ones; the
/// BG/NBD extrapolates by its structure, and the mean of the two hedges the GBDT. On every
/// cross-fitted run measured where a GBDT alone was chosen the blend's holdout Gini was
/// higher; where purged models compare them the GBDT alone can win, so the rule stays out of
/// that case (the runs and numbers: docs/models.md, "Why the rules are what they are").
fn hedged_with_bgnbd(mixes: &[ClvMix], chosen: usize) -> usize {
    let blend = mixes[chosen].with_bgnbd();
    mixes.iter().position(|&m| m == blend).unwrap_or(chosen)
}

/// The BG/NBD (`bgnbd`) instead of the `chosen` candidate when they were `cross_fitted` and
/// it beats the choice on validation (`metric` of a candidate). Cross-fitted folds share one
/// snapshot: they cannot see how the fitted candidates extrapolate in time, which the BG/NBD
/// does by its structure. The validation snapshot is later, and it flatters the fitted
/// candidates (early stopping, overlapping labels): a BG/NBD still ahead there ships.
fn bgnbd_on_validation(
    cross_fitted: bool,
    chosen: usize,
    bgnbd: Option<usize>,
    metric: impl Fn(usize) -> f64,
) -> usize {
    match bgnbd {
        Some(b) if cross_fitted && metric(b) > metric(chosen) => b,
        _ => chosen,
    }
}

/// What the candidates were compared on, in words.
fn basis(oot: Option<&OutOfTime>) -> String {
    match oot {
        Some(o) if !o.dates.is_empty() => format!(
            "out-of-time predictions of purged models at {}",
            o.dates.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
        Some(o) => format!(
            "{}-fold cross-fitting by customer on the fit rows (too little history for purged models)",
            o.n_groups
        ),
        None => "the validation snapshot (too little data for purged models or cross-fitting)".into(),
    }
}

/// The logistic regression, its penalty chosen from `grid` on the out-of-time predictions of
/// the logistic regression alone (mean ROC AUC over the snapshots or folds; on validation
/// without them), then refitted on the fit rows. Leaves the chosen penalty's out-of-time
/// log-odds in `oot.churn_logistic_margin` for the candidates and the calibration.
pub fn logistic(
    grid: &[f64],
    oot: Option<&mut OutOfTime>,
    data: &Dataset,
    val: &RoleSet,
) -> Result<(Logistic, Vec<PenaltyChoice>)> {
    let churn = &data.churn;
    let fit = |l2: f64| Logistic::fit_rows(&data.x, &data.rows.fit, churn, l2);
    let mut fitted = Vec::new();
    let scores: Vec<f64> = match &oot {
        Some(o) => {
            let (per, y) = (o.per_snapshot(), pick(churn, &o.rows));
            o.logistic_by_l2
                .iter()
                .map(|m| {
                    metrics::mean(
                        &per.iter().map(|i| metrics::roc_auc(&pick(&y, i), &pick(m, i))).collect::<Vec<_>>(),
                    )
                })
                .collect()
        }
        None if grid.len() == 1 => vec![f64::NAN],
        None => {
            for &l2 in grid {
                fitted.push(fit(l2)?);
            }
            fitted.iter().map(|l| metrics::roc_auc(&val.churn, &l.margin(&val.x))).collect()
        }
    };
    let best = candidates::best_index(&scores);
    if let Some(o) = oot {
        o.churn_logistic_margin = std::mem::take(&mut o.logistic_by_l2[best]);
    }
    let logistic = match fitted.into_iter().nth(best) {
        Some(l) => l,
        None => fit(grid[best])?,
    };
    let choices = grid
        .iter()
        .zip(&scores)
        .enumerate()
        .map(|(i, (&l2, &roc_auc))| PenaltyChoice { l2, roc_auc, chosen: i == best })
        .collect();
    Ok((logistic, choices))
}

/// The calibrator, chosen on the shipped churn mix's out-of-time predictions of purged models
/// (on the validation predictions `raw_val` when there are none: too little history).
pub fn calibrator(
    oot: Option<&OutOfTime>,
    churn_mix: ChurnMix,
    data: &Dataset,
    (raw_val, y_val): (&[f64], &[f64]),
    plan: &SnapshotPlan,
    (folds, seed): (usize, u64),
) -> (Calibrator, CalibrationChoice) {
    let set = oot.filter(|o| !o.dates.is_empty()).map(|o| {
        // Only the BG/NBD mix reads a feature column: no copy of the rows for the others.
        let p = match churn_mix {
            ChurnMix::Bgnbd => candidates::bgnbd_churn(&data.x.select_rows(&o.rows)),
            _ => candidates::combine(churn_mix, Some(&o.churn_gbdt), Some(&o.churn_logistic_margin)),
        };
        (p, pick(&data.churn, &o.rows), o.group.clone(), o.dates.clone())
    });
    let ((p, y, group, dates), source) = match set {
        Some(set) => (set, "purged models"),
        None => (
            (raw_val.to_vec(), y_val.to_vec(), vec![0; raw_val.len()], vec![plan.validation]),
            "main model at validation",
        ),
    };
    let (mut c, mut choice) = calibration::choose(&p, &y, &group, &dates, folds, seed);
    choice.source = source.into();
    // One snapshot, chosen k-fold: the calibrator must also carry forward in time. Fitted on
    // the fit rows' cross-fitted predictions (an earlier snapshot), it must make the
    // validation snapshot's ECE clearly lower, as the purged path asks of its latest snapshot.
    let cross_fitted = oot.filter(|o| o.dates.is_empty() && !o.rows.is_empty());
    if let (Some(o), true) = (cross_fitted, c != Calibrator::None) {
        let p_fit = match churn_mix {
            ChurnMix::Bgnbd => candidates::bgnbd_churn(&data.x.select_rows(&o.rows)),
            _ => candidates::combine(churn_mix, Some(&o.churn_gbdt), Some(&o.churn_logistic_margin)),
        };
        let earlier = calibration::refit_like(&c, &p_fit, &pick(&data.churn, &o.rows));
        let bins = 10;
        let before = calibration::ece(y_val, raw_val, bins);
        let after = calibration::ece(y_val, &earlier.apply_all(raw_val), bins);
        choice.forward_ece = Some((before, after));
        if !calibration::clearly_lower(before, after) {
            c = Calibrator::None;
            choice.method = c.method().into();
        }
    }
    (c, choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gbdt_alone_ships_blended_with_the_bgnbd_when_the_blend_is_a_candidate() {
        let all = ClvMix::ALL.to_vec();
        let at = |v: &[ClvMix], m: ClvMix| v.iter().position(|&k| k == m).unwrap();
        assert_eq!(hedged_with_bgnbd(&all, at(&all, ClvMix::Gbdt)), at(&all, ClvMix::BlendBgnbd));
        assert_eq!(hedged_with_bgnbd(&all, at(&all, ClvMix::Poisson)), at(&all, ClvMix::PoissonBgnbd));
        for m in [ClvMix::BlendBgnbd, ClvMix::PoissonBgnbd, ClvMix::Bgnbd] {
            assert_eq!(hedged_with_bgnbd(&all, at(&all, m)), at(&all, m), "{m:?}");
        }
        // Without the BG/NBD features there is no blend: the GBDT stays.
        let no_bgnbd = vec![ClvMix::Gbdt, ClvMix::Poisson];
        assert_eq!(hedged_with_bgnbd(&no_bgnbd, 1), 1);
    }

    #[test]
    fn the_bgnbd_replaces_a_cross_fitted_choice_only_when_ahead_on_validation() {
        let metric = |k: usize| [0.80, 0.82, 0.81][k];
        assert_eq!(bgnbd_on_validation(true, 0, Some(2), metric), 2);
        assert_eq!(bgnbd_on_validation(true, 1, Some(2), metric), 1);
        assert_eq!(bgnbd_on_validation(false, 0, Some(2), metric), 0);
        assert_eq!(bgnbd_on_validation(true, 0, None, metric), 0);
    }
}
