//! The decision layer: which customers to contact, chosen by money rather than at 0.5, and
//! the 0-100 risk score with its playbook bands.
//!
//! Net value of contacting a set S of customers:
//! `sum over i in S of (churn_i ? value_i : -fp_cost) - contact_cost * |S|`, where `value_i`
//! is `tp_value` (flat policy) or `max(predicted CLV_i, 0) * save_rate` (clv policy).
//! The policy "contact every customer whose calibrated churn probability is >= threshold" is
//! evaluated at every distinct probability of the validation snapshot; the threshold with
//! the highest net value wins (on equal net value, the one contacting fewer customers).
//! Customers with equal probabilities are always on the same side.

use serde::{Deserialize, Serialize};

use crate::config::{DecisionConfig, ValuePolicy};
use crate::metrics;

/// The save rate of a customer of churn probability `p`: its band's (`bands[i].save_rate`)
/// when set, else `save_rate`.
pub fn save_rate_at(cfg: &DecisionConfig, p: f64) -> f64 {
    let band =
        cfg.bands.iter().position(|b| p < b.upper_probability).unwrap_or(cfg.bands.len().saturating_sub(1));
    cfg.bands.get(band).and_then(|b| b.save_rate).unwrap_or_else(|| cfg.save_rate.assumed())
}

/// Per-customer value of a churner who is saved: `tp_value` (flat) or `max(CLV, 0)` (clv).
pub fn saved_values(cfg: &DecisionConfig, predicted_clv: &[f64]) -> Vec<f64> {
    predicted_clv
        .iter()
        .map(|&c| match cfg.value {
            ValuePolicy::Flat => cfg.tp_value,
            ValuePolicy::Clv => c.max(0.0),
        })
        .collect()
}

/// Per-customer value of a contacted churner under `cfg` (churn probability `p`, predicted
/// CLV): the value of a saved churner ([`saved_values`]) times the customer's save rate.
pub fn tp_values(cfg: &DecisionConfig, p: &[f64], predicted_clv: &[f64]) -> Vec<f64> {
    saved_values(cfg, predicted_clv).into_iter().zip(p).map(|(v, &p)| v * save_rate_at(cfg, p)).collect()
}

/// Gain of contacting each customer: value if they churn, -fp_cost if not, minus contact_cost.
fn gains(y: &[f64], value: &[f64], cfg: &DecisionConfig) -> Vec<f64> {
    y.iter().zip(value).map(|(&t, &v)| if t > 0.5 { v } else { -cfg.fp_cost } - cfg.contact_cost).collect()
}

/// Realized net value of contacting exactly the customers flagged in `contact`.
pub fn net_value_of(contact: &[bool], y: &[f64], value: &[f64], cfg: &DecisionConfig) -> f64 {
    gains(y, value, cfg).iter().zip(contact).filter(|(_, &c)| c).map(|(g, _)| g).sum()
}

/// One point of the net-value curve: contact everyone with probability >= threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub threshold: f64,
    pub contacted: usize,
    pub net_value: f64,
}

/// The chosen threshold and the whole curve it was chosen from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChoice {
    /// Contact when the calibrated churn probability is >= this; `None` = contact nobody.
    pub threshold: Option<f64>,
    pub net_value: f64,
    pub contacted: usize,
    /// Every distinct threshold, highest first (see `downsample` for storage).
    pub curve: Vec<CurvePoint>,
}

/// The contact rule, the one place it is written: contact when the calibrated churn
/// probability is at least the threshold; nobody without a threshold. `score`, the reports,
/// the decision's evaluation and (through `score`) Python and Spark all apply this.
pub fn contacts(threshold: Option<f64>, p: f64) -> bool {
    threshold.is_some_and(|t| p >= t)
}

/// Points kept of a net-value curve (the decision artifact's and the reports' charts).
pub const CURVE_POINTS: usize = 201;

/// Sweep every distinct score; pick the threshold with the highest net value.
pub fn choose_threshold(p: &[f64], y: &[f64], value: &[f64], cfg: &DecisionConfig) -> ThresholdChoice {
    let g = gains(y, value, cfg);
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&i, &j| p[j].total_cmp(&p[i]));
    let mut curve = Vec::new();
    let (mut net, mut start) = (0.0, 0);
    let mut best = (None, 0.0, 0usize);
    while start < idx.len() {
        let t = p[idx[start]];
        let mut end = start;
        while end < idx.len() && p[idx[end]] == t {
            net += g[idx[end]];
            end += 1;
        }
        curve.push(CurvePoint { threshold: t, contacted: end, net_value: net });
        if net > best.1 {
            best = (Some(t), net, end);
        }
        start = end;
    }
    ThresholdChoice { threshold: best.0, net_value: best.1, contacted: best.2, curve }
}

/// At most `max_points` points of a curve (evenly spaced, always keeping the ends and the
/// chosen threshold), for the artifact and the report.
pub fn downsample(curve: &[CurvePoint], chosen: Option<f64>, max_points: usize) -> Vec<CurvePoint> {
    if curve.len() <= max_points || max_points < 2 {
        return curve.to_vec();
    }
    let step = (curve.len() - 1) as f64 / (max_points - 1) as f64;
    let mut keep: Vec<usize> = (0..max_points).map(|k| (k as f64 * step).round() as usize).collect();
    if let Some(t) = chosen {
        if let Some(i) = curve.iter().position(|c| c.threshold == t) {
            keep.push(i);
        }
    }
    keep.sort_unstable();
    keep.dedup();
    keep.into_iter().map(|i| curve[i]).collect()
}

/// A contact policy evaluated against realized outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolicyOutcome {
    pub threshold: Option<f64>,
    pub contacted: usize,
    pub contacted_share: f64,
    /// NaN (null) when nobody is contacted.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub precision: f64,
    /// NaN (null) without churners.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub recall: f64,
    pub net_value: f64,
    /// Contact everybody / nobody / the top 10% by probability / exactly the churners.
    pub net_all: f64,
    pub net_none: f64,
    pub net_top10: f64,
    pub net_oracle: f64,
}

/// Evaluate "contact p >= threshold" and the reference policies on (p, y).
pub fn evaluate(
    p: &[f64],
    y: &[f64],
    value: &[f64],
    threshold: Option<f64>,
    cfg: &DecisionConfig,
) -> PolicyOutcome {
    let g = gains(y, value, cfg);
    let contact: Vec<bool> = p.iter().map(|&q| contacts(threshold, q)).collect();
    let contacted = contact.iter().filter(|&&c| c).count();
    let tp = contact.iter().zip(y).filter(|(&c, &t)| c && t > 0.5).count();
    let positives = y.iter().filter(|&&t| t > 0.5).count();
    let net_value: f64 = g.iter().zip(&contact).filter(|(_, &c)| c).map(|(v, _)| v).sum();
    let ratio = |a: usize, b: usize| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
    PolicyOutcome {
        threshold,
        contacted,
        contacted_share: ratio(contacted, p.len()),
        precision: ratio(tp, contacted),
        recall: ratio(tp, positives),
        net_value,
        net_all: g.iter().sum(),
        net_none: 0.0,
        net_top10: metrics::top_fraction_sum(&g, p, 0.1),
        net_oracle: g.iter().zip(y).filter(|(_, &t)| t > 0.5).map(|(v, _)| v).sum(),
    }
}

/// Break-even churn probability of a flat policy at the overall save rate: contacting pays
/// off above it.
pub fn break_even(cfg: &DecisionConfig) -> f64 {
    (cfg.fp_cost + cfg.contact_cost) / (cfg.tp_value * cfg.save_rate.assumed() + cfg.fp_cost)
}

/// One sentence that says why the chosen policy contacts as many customers as it does.
pub fn explain(cfg: &DecisionConfig, outcome: &PolicyOutcome) -> String {
    let share = 100.0 * outcome.contacted_share;
    let threshold = outcome.threshold.map_or("none".to_string(), |t| format!("{t:.3}"));
    match cfg.value {
        ValuePolicy::Flat => format!(
            "A contact pays off when the churn probability exceeds the break-even \
             (fp_cost + contact_cost) / (tp_value x save_rate + fp_cost) = ({} + {}) / ({} x {} + {}) = {:.3}; \
             the threshold chosen on validation ({threshold}) contacts {share:.1}% of customers{}.",
            cfg.fp_cost,
            cfg.contact_cost,
            cfg.tp_value,
            cfg.save_rate.assumed(),
            cfg.fp_cost,
            break_even(cfg),
            if share > 80.0 {
                ": with a missed churner this much dearer than a needless contact, almost everyone is worth a call"
            } else {
                ""
            }
        ),
        ValuePolicy::Clv => format!(
            "Each customer is worth contacting when churn probability x predicted CLV x save rate \
             ({}) exceeds the cost of a needless contact ({}); the threshold chosen on validation \
             ({threshold}) contacts {share:.1}% of customers.",
            cfg.save_rate.assumed(),
            cfg.fp_cost
        ),
    }
}

/// One risk band: probabilities in [lower, upper) map linearly onto scores
/// [score_min, score_max], rounded (the top band includes probability 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub name: String,
    pub playbook: String,
    pub lower: f64,
    pub upper: f64,
    pub score_min: u8,
    pub score_max: u8,
}

/// The probability -> 0-100 risk score map (monotone, piecewise linear per band).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskBands {
    pub bands: Vec<Band>,
}

impl RiskBands {
    /// Bands from config (validated there: increasing edges, last = 1.0). With K bands, band
    /// k gets scores round(100k/K) (+1 after the first) ..= round(100(k+1)/K): 0-20, 21-40, ...
    pub fn from_config(cfg: &DecisionConfig) -> Self {
        let k = cfg.bands.len();
        let mut lower = 0.0;
        let bands = cfg
            .bands
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let lo = (100.0 * i as f64 / k as f64).round() as u8 + u8::from(i > 0);
                let hi = (100.0 * (i + 1) as f64 / k as f64).round() as u8;
                let band = Band {
                    name: b.name.clone(),
                    playbook: b.playbook.clone(),
                    lower,
                    upper: b.upper_probability,
                    score_min: lo,
                    score_max: hi,
                };
                lower = b.upper_probability;
                band
            })
            .collect();
        RiskBands { bands }
    }

    /// The band of a probability: the first whose upper edge is above it (the last band
    /// takes everything up to and including 1).
    pub fn band(&self, p: f64) -> &Band {
        let i = self.bands.iter().position(|b| p < b.upper).unwrap_or(self.bands.len() - 1);
        &self.bands[i]
    }

    /// Risk score 0-100 of a calibrated churn probability.
    pub fn score(&self, p: f64) -> u8 {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        let b = self.band(p);
        let frac = if b.upper > b.lower { (p - b.lower) / (b.upper - b.lower) } else { 0.0 };
        let s = b.score_min as f64 + frac * (b.score_max - b.score_min) as f64;
        (s.round() as u8).clamp(b.score_min, b.score_max)
    }
}

/// Customers and realized churn rate per band (how well the bands mean what they say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandOutcome {
    pub name: String,
    pub customers: usize,
    /// NaN (null in JSON) for an empty band.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub mean_probability: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub churn_rate: f64,
}

pub fn band_outcomes(bands: &RiskBands, p: &[f64], y: &[f64]) -> Vec<BandOutcome> {
    bands
        .bands
        .iter()
        .map(|b| {
            let idx: Vec<usize> = (0..p.len()).filter(|&i| bands.band(p[i]).name == b.name).collect();
            let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
            BandOutcome {
                name: b.name.clone(),
                customers: idx.len(),
                mean_probability: metrics::mean(&pick(p)),
                churn_rate: metrics::mean(&pick(y)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_band_survives_a_json_round_trip() {
        // No probability reaches the top band: its mean and churn rate are undefined, and
        // metrics.json must still read back (it was written as null and refused on reading).
        let bands = RiskBands::from_config(&DecisionConfig::default());
        let out = band_outcomes(&bands, &[0.05, 0.2, 0.5], &[0.0, 1.0, 1.0]);
        let top = out.last().unwrap();
        assert_eq!(top.customers, 0);
        let json = serde_json::to_string(&out).unwrap();
        assert!(json.contains("null"), "{json}");
        let back: Vec<BandOutcome> = serde_json::from_str(&json).unwrap();
        assert!(back.last().unwrap().churn_rate.is_nan());
        assert_eq!(back[0], out[0]);
    }

    fn cfg(tp: f64, fp: f64) -> DecisionConfig {
        DecisionConfig { tp_value: tp, fp_cost: fp, ..DecisionConfig::default() }
    }

    #[test]
    fn hand_computed_best_threshold() {
        // tp 10, fp 4. Sorted by p: 0.9 churn (+10), 0.8 stay (-4), 0.7 churn (+10),
        // 0.4 stay (-4), 0.2 stay (-4). Cumulative: 10, 6, 16, 12, 8 -> best 0.7 with 16.
        let p = [0.2, 0.9, 0.4, 0.7, 0.8];
        let y = [0.0, 1.0, 0.0, 1.0, 0.0];
        let c = cfg(10.0, 4.0);
        let v = tp_values(&c, &p, &[0.0; 5]);
        let t = choose_threshold(&p, &y, &v, &c);
        assert_eq!(t.threshold, Some(0.7));
        assert_eq!(t.net_value, 16.0);
        assert_eq!(t.contacted, 3);
        assert_eq!(t.curve.len(), 5);
        let o = evaluate(&p, &y, &v, t.threshold, &c);
        assert_eq!((o.contacted, o.net_value, o.net_all, o.net_oracle), (3, 16.0, 8.0, 20.0));
        assert!((o.precision - 2.0 / 3.0).abs() < 1e-12 && o.recall == 1.0);
        // Contact cost 7 per contact: 0.9 alone gives 3, more contacts lose -> threshold 0.9.
        let c2 = DecisionConfig { contact_cost: 7.0, ..c };
        let t2 = choose_threshold(&p, &y, &v, &c2);
        assert_eq!((t2.threshold, t2.net_value), (Some(0.9), 3.0));
    }

    #[test]
    fn ties_and_all_equal_scores() {
        let c = cfg(10.0, 4.0);
        // 0.5 tied (churn +10, stay -4) enter together: +6; 0.1 stay -4 -> best 0.5 with 6.
        let p = [0.5, 0.5, 0.1];
        let y = [1.0, 0.0, 0.0];
        let v = tp_values(&c, &p, &[0.0; 3]);
        let t = choose_threshold(&p, &y, &v, &c);
        assert_eq!((t.threshold, t.net_value, t.contacted), (Some(0.5), 6.0, 2));
        // All scores equal and contacting everyone loses (-6 -6 +10): contact nobody.
        let c6 = cfg(10.0, 6.0);
        let t = choose_threshold(&[0.3; 3], &[0.0, 0.0, 1.0], &v, &c6);
        assert_eq!((t.threshold, t.net_value, t.contacted), (None, 0.0, 0));
        assert_eq!(t.curve.len(), 1);
        // Equal net value at two thresholds: the one contacting fewer wins.
        let t = choose_threshold(&[0.9, 0.8, 0.7], &[1.0, 0.0, 1.0], &[4.0, 4.0, 4.0], &c);
        assert_eq!((t.threshold, t.net_value), (Some(0.9), 4.0));
    }

    #[test]
    fn a_saved_churner_is_worth_its_value_times_its_bands_save_rate() {
        use crate::config::SaveRate;
        let c =
            DecisionConfig { value: ValuePolicy::Clv, save_rate: SaveRate::Assumed(0.5), ..cfg(65.0, 3.0) };
        assert_eq!(tp_values(&c, &[0.5, 0.5], &[100.0, -20.0]), vec![50.0, 0.0]);
        let mut flat = DecisionConfig { save_rate: SaveRate::Assumed(0.5), ..cfg(65.0, 3.0) };
        assert_eq!(tp_values(&flat, &[0.05, 0.95], &[0.0, 0.0]), vec![32.5, 32.5]);
        assert!((break_even(&flat) - 3.0 / (32.5 + 3.0)).abs() < 1e-12);
        // A band's own rate (the default bands: low < 0.10 ... imminent >= 0.85).
        flat.bands[4].save_rate = Some(0.1);
        flat.bands[0].save_rate = Some(0.0);
        assert_eq!(tp_values(&flat, &[0.05, 0.5, 0.95, 1.0], &[0.0; 4]), vec![0.0, 32.5, 6.5, 6.5]);
    }

    #[test]
    fn risk_score_map_hits_band_edges() {
        let bands = RiskBands::from_config(&DecisionConfig::default());
        let ranges: Vec<(u8, u8)> = bands.bands.iter().map(|b| (b.score_min, b.score_max)).collect();
        assert_eq!(ranges, vec![(0, 20), (21, 40), (41, 60), (61, 80), (81, 100)]);
        assert_eq!(bands.score(0.0), 0);
        assert_eq!(bands.score(1.0), 100);
        for (edge, below, above) in [
            (0.10, "low", "moderate"),
            (0.30, "moderate", "high"),
            (0.60, "high", "critical"),
            (0.85, "critical", "imminent"),
        ] {
            assert_eq!(bands.band(edge - 1e-9).name, below);
            assert_eq!(bands.band(edge).name, above);
            assert_eq!(bands.band(edge + 1e-9).name, above);
            let (lo_band, hi_band) = (bands.band(edge - 1e-9), bands.band(edge));
            assert_eq!(bands.score(edge - 1e-9), lo_band.score_max, "just below {edge}");
            assert_eq!(bands.score(edge), hi_band.score_min, "at {edge}");
        }
        // Monotone over a fine grid.
        let scores: Vec<u8> = (0..=10_000).map(|i| bands.score(i as f64 / 10_000.0)).collect();
        assert!(scores.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(bands.band(0.05).playbook, "passive monitoring");
    }

    #[test]
    fn downsample_keeps_ends_and_choice() {
        let curve: Vec<CurvePoint> = (0..1000)
            .map(|i| CurvePoint { threshold: 1.0 - i as f64 / 1000.0, contacted: i + 1, net_value: i as f64 })
            .collect();
        let d = downsample(&curve, Some(curve[333].threshold), 50);
        assert!(d.len() <= 51);
        assert_eq!(d.first(), curve.first());
        assert_eq!(d.last(), curve.last());
        assert!(d.contains(&curve[333]));
    }
}
