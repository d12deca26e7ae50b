//! Deployment: the shipped models refit on every matured label before they are written (the
//! evaluated models' tree counts and penalty, no early stopping), only the parts the shipped
//! mixes use.

use crate::config::GbdtConfig;
use crate::error::Result;
use crate::train::candidates::{ChurnMix, ChurnModel, ClvMix, ClvModel};
use crate::train::gbdt::{Gbdt, Task};
use crate::train::hist::Binned;
use crate::train::linear::Logistic;
use crate::train::poisson::PoissonGbdt;
use crate::train::{Dataset, Engine};

/// The shipped models refit on every row of the dataset (every snapshot's labels are
/// complete: the holdout is the last snapshot whose horizon the data covers), with the
/// evaluated models' tree counts and logistic penalty; no early stopping (nothing is left
/// out to stop on). Only the parts the shipped mixes use are refit (the others cannot change
/// a score; the artifact keeps the evaluated ones for them, and `metrics.json` `deployed`
/// says which parts were refit).
pub fn refit(
    model: &GbdtConfig,
    data: &Dataset,
    binned: &Binned,
    (churn, clv): (&ChurnModel, &ClvModel),
) -> Result<(ChurnModel, ClvModel)> {
    let params = |n: usize| GbdtConfig { iterations: n.max(1), ..model.clone() };
    let all: Vec<usize> = (0..data.x.rows).collect();
    // A GBDT part again on every row when the shipped mix uses it, else the evaluated one.
    let gbdt_part = |uses: bool, evaluated: &Engine, task: Task, y: &[f64]| -> Result<Engine> {
        if uses {
            Engine::fit_binned(&params(evaluated.n_trees()), task, binned, &all, y, None)
        } else {
            Ok(evaluated.clone())
        }
    };
    // The parts are independent: fitted side by side (each is the same model either way).
    let ((gbdt, logistic), (clv_gbdt, poisson)) = rayon::join(
        || {
            rayon::join(
                || gbdt_part(churn.mix.uses_gbdt(), &churn.gbdt, Task::Churn, &data.churn),
                || -> Result<_> {
                    match &churn.logistic {
                        Some(l) if churn.mix.uses_logistic() => {
                            Ok(Some(Logistic::fit(&data.x, &data.churn, l.l2)?))
                        }
                        other => Ok(other.clone()),
                    }
                },
            )
        },
        || {
            rayon::join(
                || gbdt_part(clv.mix.uses_squared_gbdt(), &clv.gbdt, Task::Clv, &data.clv),
                || -> Result<_> {
                    match &clv.poisson {
                        Some(p) if clv.mix.uses_poisson() => Ok(Some(PoissonGbdt::fit_binned(
                            &params(p.n_trees()),
                            binned,
                            &all,
                            &data.clv,
                            None,
                        )?)),
                        other => Ok(other.clone()),
                    }
                },
            )
        },
    );
    let (gbdt, logistic, clv_gbdt, poisson) = (gbdt?, logistic?, clv_gbdt?, poisson?);
    Ok((
        ChurnModel { mix: churn.mix, gbdt, logistic, explain: churn.explain },
        ClvModel { mix: clv.mix, gbdt: clv_gbdt, poisson },
    ))
}

/// The fitted parts the shipped mixes use (what [`refit`] refits).
pub fn refit_parts(churn: ChurnMix, clv: ClvMix, poisson: bool) -> Vec<String> {
    let mut parts = Vec::new();
    if churn.uses_gbdt() {
        parts.push("churn gbdt".to_string());
    }
    if churn.uses_logistic() {
        parts.push("churn logistic".to_string());
    }
    if clv.uses_squared_gbdt() {
        parts.push("clv gbdt".to_string());
    }
    if clv.uses_poisson() && poisson {
        parts.push("clv poisson gbdt".to_string());
    }
    parts
}
