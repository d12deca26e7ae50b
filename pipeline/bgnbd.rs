//! BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way") and
//! Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV") in Rust: the classic probabilistic
//! models of repeat buying and spend, used as a baseline and as features of the GBDT models.
//!
//! Per customer (the `lifetimes` convention, time in days): `x` = repeat purchase days
//! (distinct active days - 1), `t_x` = days from the first to the last active day, `T` =
//! days from the first active day to the snapshot; for Gamma-Gamma, `m` = mean amount of the
//! repeat active days.
//!
//! Fits are maximum likelihood over log-parameters by Nelder-Mead; the log-likelihoods use
//! `ln_gamma` (Lanczos) and log-sum-exp. The conditional expectation needs the Gaussian
//! hypergeometric function 2F1(r+x, b+x; a+b+x-1; z); it is evaluated as `c * 2F1` by a series
//! whose denominators are `(c+1)_k`, all positive because `c + 1 = a + b + x > 0`, so it
//! cannot divide by zero or produce NaN when `a + b < 1` (where `c` itself is negative).

use serde::{Deserialize, Serialize};

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1-x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// One customer's purchase history summary at a snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rfm {
    /// Repeat purchase days.
    pub x: f64,
    /// First to last purchase day.
    pub t_x: f64,
    /// First purchase day to the snapshot.
    pub t: f64,
}

/// Minimize `f` from `start` by Nelder-Mead (deterministic; simplex steps of `step`).
pub fn nelder_mead(f: impl Fn(&[f64]) -> f64, start: &[f64], step: f64, max_iter: usize) -> (Vec<f64>, f64) {
    let n = start.len();
    let eval = |p: &[f64]| {
        let v = f(p);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    simplex.push((start.to_vec(), eval(start)));
    for i in 0..n {
        let mut p = start.to_vec();
        p[i] += step;
        let v = eval(&p);
        simplex.push((p, v));
    }
    for _ in 0..max_iter {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[n].1);
        if (worst - best).abs() <= 1e-10 * (1.0 + best.abs()) {
            break;
        }
        let centroid: Vec<f64> =
            (0..n).map(|j| simplex[..n].iter().map(|s| s.0[j]).sum::<f64>() / n as f64).collect();
        let towards = |t: f64| -> Vec<f64> {
            (0..n).map(|j| centroid[j] + t * (simplex[n].0[j] - centroid[j])).collect()
        };
        let reflected = towards(-1.0);
        let fr = eval(&reflected);
        if fr < simplex[0].1 {
            let expanded = towards(-2.0);
            let fe = eval(&expanded);
            simplex[n] = if fe < fr { (expanded, fe) } else { (reflected, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (reflected, fr);
        } else {
            let contracted = if fr < simplex[n].1 { towards(-0.5) } else { towards(0.5) };
            let fc = eval(&contracted);
            if fc < simplex[n].1.min(fr) {
                simplex[n] = (contracted, fc);
            } else {
                let best = simplex[0].0.clone();
                for s in simplex.iter_mut().skip(1) {
                    let p: Vec<f64> = (0..n).map(|j| best[j] + 0.5 * (s.0[j] - best[j])).collect();
                    let v = eval(&p);
                    *s = (p, v);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0)
}

/// Log-parameters are kept in this range (parameters in [4.5e-5, 2.2e4]).
const LOG_BOUND: f64 = 10.0;

fn bounded(p: &[f64]) -> Option<Vec<f64>> {
    p.iter().all(|v| v.abs() <= LOG_BOUND).then(|| p.iter().map(|v| v.exp()).collect())
}

/// Customers grouped by their distinct `(x, t_x, T)`, with counts: with whole days most
/// customers share theirs with others (on CDNOW 20,000 customers have about 8,000 distinct
/// ones), and the likelihood of a group is its count times one customer's. The log-gammas
/// depend on `x` only and the logs of `alpha + t` on one of the distinct day values, so an
/// evaluation computes those once each and a log-sum-exp per group with repeat purchases.
/// Groups are in key order: the sum does not depend on the customers' order.
pub struct RfmCounts {
    xs: Vec<f64>,
    days: Vec<f64>,
    /// (index into `xs`, of `t_x` and of `t` into `days`, customers).
    groups: Vec<(u32, u32, u32, f64)>,
}

impl RfmCounts {
    pub fn new(data: &[Rfm]) -> RfmCounts {
        let distinct = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.dedup();
            v
        };
        let xs = distinct(data.iter().map(|c| c.x).collect());
        let days = distinct(data.iter().flat_map(|c| [c.t_x, c.t]).collect());
        let at = |v: &[f64], x: f64| v.partition_point(|&u| u.total_cmp(&x).is_lt()) as u32;
        let mut keys: Vec<(u32, u32, u32)> =
            data.iter().map(|c| (at(&xs, c.x), at(&days, c.t_x), at(&days, c.t))).collect();
        keys.sort_unstable();
        let mut groups: Vec<(u32, u32, u32, f64)> = Vec::new();
        for k in keys {
            match groups.last_mut() {
                Some(g) if (g.0, g.1, g.2) == k => g.3 += 1.0,
                _ => groups.push((k.0, k.1, k.2, 1.0)),
            }
        }
        RfmCounts { xs, days, groups }
    }

    /// Distinct `(x, t_x, T)` groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Total log-likelihood of the customers under `m` (the sum of
    /// [`BgNbd::log_likelihood`] over them, up to rounding).
    pub fn log_likelihood(&self, m: &BgNbd) -> f64 {
        let BgNbd { r, alpha, a, b } = *m;
        let base = -ln_gamma(r) + r * alpha.ln() + ln_gamma(a + b) - ln_gamma(b);
        let per_x: Vec<(f64, f64)> = self
            .xs
            .iter()
            .map(|&x| {
                let lg = ln_gamma(r + x) + ln_gamma(b + x) - ln_gamma(a + b + x) + base;
                let tail = if x > 0.0 { a.ln() - (b + x - 1.0).ln() } else { f64::NEG_INFINITY };
                (lg, tail)
            })
            .collect();
        let ln_days: Vec<f64> = self.days.iter().map(|&d| (alpha + d).ln()).collect();
        let mut ll = 0.0;
        for &(xi, txi, ti, n) in &self.groups {
            let x = self.xs[xi as usize];
            let (lg, tail) = per_x[xi as usize];
            let rx = r + x;
            let a3 = -rx * ln_days[ti as usize];
            let a4 = if x > 0.0 { tail - rx * ln_days[txi as usize] } else { f64::NEG_INFINITY };
            ll += n * (lg + log_add_exp(a3, a4));
        }
        ll
    }
}

/// BG/NBD parameters (time unit: days).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl BgNbd {
    /// Log-likelihood of one customer.
    pub fn log_likelihood(&self, c: &Rfm) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let x = c.x;
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        let a3 = -(r + x) * (alpha + c.t).ln();
        let tail = if x > 0.0 {
            a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + c.t_x).ln()
        } else {
            f64::NEG_INFINITY
        };
        a1 + a2 + log_add_exp(a3, tail)
    }

    /// Maximum-likelihood fit (Nelder-Mead over log-parameters, restarted from its optimum),
    /// on the customers grouped by their distinct `(x, t_x, T)` (see [`RfmCounts`]).
    pub fn fit(data: &[Rfm]) -> BgNbd {
        let counts = RfmCounts::new(data);
        let nll = |p: &[f64]| -> f64 {
            let Some(v) = bounded(p) else { return f64::INFINITY };
            -counts.log_likelihood(&BgNbd { r: v[0], alpha: v[1], a: v[2], b: v[3] })
        };
        let mean_t = data.iter().map(|c| c.t).sum::<f64>() / data.len().max(1) as f64;
        let mut p = vec![0.0, mean_t.max(1.0).ln(), 0.0, 0.0];
        for _ in 0..3 {
            p = nelder_mead(nll, &p, 0.5, 4000).0;
        }
        BgNbd { r: p[0].exp(), alpha: p[1].exp(), a: p[2].exp(), b: p[3].exp() }
    }

    /// Probability the customer is still alive at the snapshot.
    pub fn p_alive(&self, c: &Rfm) -> f64 {
        if c.x <= 0.0 {
            return 1.0;
        }
        let BgNbd { r, alpha, a, b } = *self;
        let log_ratio = (a / (b + c.x - 1.0)).ln() + (r + c.x) * ((alpha + c.t) / (alpha + c.t_x)).ln();
        1.0 / (1.0 + log_ratio.exp())
    }

    /// Probability of no purchase in the next `h` days:
    /// `(1 - P_alive) + P_alive * ((alpha + T) / (alpha + T + h))^(r + x)`.
    pub fn p_no_purchase(&self, c: &Rfm, h: f64) -> f64 {
        let alive = self.p_alive(c);
        let stay_quiet = ((self.alpha + c.t) / (self.alpha + c.t + h)).powf(self.r + c.x);
        (1.0 - alive) + alive * stay_quiet
    }

    /// Expected number of purchases in the next `h` days.
    pub fn expected_purchases(&self, c: &Rfm, h: f64) -> f64 {
        let BgNbd { r, alpha, b, .. } = *self;
        // a = 1 makes the closed form 0/0; its limit is continuous, so step off it.
        let a = if (self.a - 1.0).abs() < 1e-7 { 1.0 + 1e-7 } else { self.a };
        let x = c.x;
        let cc = a + b + x - 1.0;
        let z = h / (alpha + c.t + h);
        let g = c_times_hyp2f1(r + x, b + x, cc, z);
        let q = ((alpha + c.t) / (alpha + c.t + h)).powf(r + x);
        let value = (cc - q * g) / (a - 1.0);
        (value * self.p_alive(c)).max(0.0)
    }
}

/// `c * 2F1(a, b; c; z)` for 0 <= z < 1 and c + 1 > 0:
/// `c + sum_{k>=1} (a)_k (b)_k / ((c+1)_{k-1} k!) z^k`.
pub fn c_times_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let mut term = a * b * z;
    let mut sum = c + term;
    let mut k = 1.0;
    while k < 100_000.0 && term.abs() > 1e-15 * sum.abs().max(1e-300) {
        term *= (a + k) * (b + k) * z / ((c + k) * (k + 1.0));
        sum += term;
        k += 1.0;
    }
    sum
}

/// Gamma-Gamma spend model parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub v: f64,
}

impl GammaGamma {
    /// Log-likelihood of a customer with `x >= 1` repeat purchases of mean value `m > 0`.
    pub fn log_likelihood(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, v } = *self;
        ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q)
            + q * v.ln()
            + (p * x - 1.0) * m.ln()
            + (p * x) * x.ln()
            - (p * x + q) * (v + m * x).ln()
    }

    /// Maximum-likelihood fit on (x, m) pairs with x >= 1 and m > 0 (others are ignored);
    /// q is kept above 1 so the mean spend exists.
    pub fn fit(data: &[(f64, f64)]) -> Option<GammaGamma> {
        let data: Vec<(f64, f64)> =
            data.iter().copied().filter(|&(x, m)| x >= 1.0 && m > 0.0 && m.is_finite()).collect();
        if data.len() < 3 {
            return None;
        }
        // Per customer only `ln(v + m x)` depends on the parameters and on `m`: the
        // log-gammas are computed once per distinct `x`, the logs of `m` and `x` once.
        let mut xs: Vec<f64> = data.iter().map(|d| d.0).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let rows: Vec<(usize, f64, f64, f64)> =
            data.iter().map(|&(x, m)| (xs.partition_point(|&u| u < x), m * x, m.ln(), x.ln())).collect();
        let nll = |p: &[f64]| -> f64 {
            if p.iter().any(|v| v.abs() > LOG_BOUND) {
                return f64::INFINITY;
            }
            let (p, q, v) = (p[0].exp(), 1.0 + p[1].exp(), p[2].exp());
            let per_x: Vec<f64> = xs
                .iter()
                .map(|&x| ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q) + q * v.ln())
                .collect();
            let mut ll = 0.0;
            for &(k, mx, ln_m, ln_x) in &rows {
                let px = p * xs[k];
                ll += per_x[k] + (px - 1.0) * ln_m + px * ln_x - (px + q) * (v + mx).ln();
            }
            -ll
        };
        let mean_m = data.iter().map(|d| d.1).sum::<f64>() / data.len() as f64;
        let mut p = vec![0.0, 0.0, mean_m.ln()];
        for _ in 0..3 {
            p = nelder_mead(nll, &p, 0.5, 4000).0;
        }
        Some(GammaGamma { p: p[0].exp(), q: 1.0 + p[1].exp(), v: p[2].exp() })
    }

    /// Expected mean spend per purchase of a customer with `x` repeat purchases of mean `m`
    /// (the population mean when x = 0).
    pub fn expected_spend(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, v } = *self;
        let population = p * v / (q - 1.0);
        if x <= 0.0 || m <= 0.0 || !m.is_finite() {
            return population;
        }
        let w = p * x / (p * x + q - 1.0);
        (1.0 - w) * population + w * m
    }
}

/// The fitted pair stored with a model (scoring uses these, never a refit on the scored base).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probabilistic {
    pub bgnbd: BgNbd,
    pub gamma_gamma: Option<GammaGamma>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_known_values() {
        assert!((ln_gamma(1.0)).abs() < 1e-13);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((ln_gamma(100.0) - 359.134_205_369_575_4).abs() < 1e-9);
        assert!((ln_gamma(1e-3) - 6.907_178_885_383_854).abs() < 1e-9);
    }

    #[test]
    fn hypergeometric_series() {
        // 2F1(1, 1; 2; z) = -ln(1 - z) / z.
        let z: f64 = 0.6;
        assert!((c_times_hyp2f1(1.0, 1.0, 2.0, z) / 2.0 - (-(1.0 - z).ln() / z)).abs() < 1e-12);
        // c < 0 (a + b < 1 with x = 0): finite, and c * 2F1 -> finite as c -> 0.
        for c in [-0.5, -1e-9, 0.0, 1e-9] {
            let v = c_times_hyp2f1(0.3, 0.4, c, 0.5);
            assert!(v.is_finite(), "c = {c}: {v}");
        }
    }

    #[test]
    fn grouped_likelihood_is_the_sum_over_customers() {
        // Whole days, many customers sharing an (x, t_x, T), some not.
        let data: Vec<Rfm> = (0..3000u32)
            .map(|i| {
                let t = f64::from(30 + i % 20);
                let x = f64::from(i % 7 / 2);
                let t_x = if x > 0.0 { t - f64::from(i % 5) } else { 0.0 };
                Rfm { x, t_x, t: t + if i % 500 == 0 { 0.5 } else { 0.0 } }
            })
            .collect();
        let counts = RfmCounts::new(&data);
        assert!(counts.len() < data.len() / 2, "{} groups", counts.len());
        for m in [
            BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 },
            BgNbd { r: 2.0, alpha: 40.0, a: 0.1, b: 5.0 },
        ] {
            let direct: f64 = data.iter().map(|c| m.log_likelihood(c)).sum();
            let grouped = counts.log_likelihood(&m);
            assert!((direct - grouped).abs() < 1e-9 * direct.abs(), "{direct} vs {grouped}");
        }
        // The customers' order does not change a bit of it.
        let mut reversed = data.clone();
        reversed.reverse();
        let m = BgNbd { r: 0.5, alpha: 10.0, a: 0.7, b: 2.0 };
        assert_eq!(
            counts.log_likelihood(&m).to_bits(),
            RfmCounts::new(&reversed).log_likelihood(&m).to_bits()
        );
    }

    #[test]
    fn nelder_mead_finds_a_quadratic_minimum() {
        let (p, v) =
            nelder_mead(|p| (p[0] - 1.0).powi(2) + 10.0 * (p[1] + 2.0).powi(2), &[0.0, 0.0], 1.0, 2000);
        assert!((p[0] - 1.0).abs() < 1e-4 && (p[1] + 2.0).abs() < 1e-4 && v < 1e-8, "{p:?}");
    }

    #[test]
    fn probabilities_are_probabilities_even_for_extreme_parameters() {
        let cases = [
            BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 },
            BgNbd { r: 1e-4, alpha: 1e4, a: 0.01, b: 0.05 },
            BgNbd { r: 50.0, alpha: 0.01, a: 1.0, b: 1e-3 },
        ];
        for m in cases {
            for c in [
                Rfm { x: 0.0, t_x: 0.0, t: 1.0 },
                Rfm { x: 5.0, t_x: 3.0, t: 400.0 },
                Rfm { x: 40.0, t_x: 399.0, t: 400.0 },
            ] {
                let (alive, none, e) =
                    (m.p_alive(&c), m.p_no_purchase(&c, 90.0), m.expected_purchases(&c, 90.0));
                assert!(
                    (0.0..=1.0).contains(&alive) && (0.0..=1.0).contains(&none),
                    "{m:?} {c:?}: {alive} {none}"
                );
                assert!(e.is_finite() && e >= 0.0, "{m:?} {c:?}: {e}");
            }
        }
    }
}
