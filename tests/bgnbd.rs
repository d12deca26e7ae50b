//! BG/NBD and Gamma-Gamma against the published CDNOW numbers (Fader, Hardie & Lee 2005):
//! the 2,357-customer sample with a 39-week calibration period.

mod common;

use fidelis::bgnbd::{BgNbd, GammaGamma, Rfm};

fn summary() -> Vec<Rfm> {
    let path = common::datasets_dir().join("cdnow/cdnow_customers_summary.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|s| s.trim().parse().unwrap()).collect();
            Rfm { x: v[1], t_x: v[2], t: v[3] }
        })
        .collect()
}

#[test]
fn bgnbd_fit_matches_the_published_cdnow_parameters() {
    let data = summary();
    assert_eq!(data.len(), 2357);
    let m = BgNbd::fit(&data);
    // Published: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426 (weeks).
    let close = |got: f64, want: f64| (got - want).abs() <= 0.005 * want.max(1.0);
    assert!(close(m.r, 0.243) && close(m.alpha, 4.414) && close(m.a, 0.793) && close(m.b, 2.426), "{m:?}");
    let ll: f64 = data.iter().map(|c| m.log_likelihood(c)).sum();
    assert!((ll - -9582.4).abs() < 1.0, "log-likelihood {ll} (published -9582.4)");
    // Published conditional expectation: x = 2, t_x = 30.43, T = 38.86, next 39 weeks: 1.226.
    let published = BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 };
    let e = published.expected_purchases(&Rfm { x: 2.0, t_x: 30.43, t: 38.86 }, 39.0);
    assert!((e - 1.226).abs() < 0.001, "E[X(39) | 2, 30.43, 38.86] = {e}");
    // P(alive) of a customer with no repeat purchase is 1; a long-quiet frequent buyer's is low.
    assert_eq!(published.p_alive(&Rfm { x: 0.0, t_x: 0.0, t: 38.86 }), 1.0);
    assert!(published.p_alive(&Rfm { x: 10.0, t_x: 5.0, t: 38.86 }) < 0.05);
}

#[test]
fn gamma_gamma_fit_on_the_cdnow_sample() {
    // Repeat purchases and their mean value over the calibration period (1997-01-01 .. 09-30),
    // per customer, from the raw sample file (lines of one day summed, first day excluded).
    let path = common::datasets_dir().join("cdnow/CDNOW_sample.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut per: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>> =
        Default::default();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f[2] <= "19970930" {
            *per.entry(f[0].to_string()).or_default().entry(f[2].to_string()).or_default() +=
                f[4].parse::<f64>().unwrap();
        }
    }
    let data: Vec<(f64, f64)> = per
        .values()
        .filter(|days| days.len() > 1)
        .map(|days| {
            let repeat: Vec<f64> = days.values().skip(1).copied().collect();
            (repeat.len() as f64, repeat.iter().sum::<f64>() / repeat.len() as f64)
        })
        .collect();
    assert_eq!(data.len(), 946, "customers with repeat purchases in the calibration period");
    let g = GammaGamma::fit(&data).unwrap();
    // Published (lifetimes' documentation of the same data): p = 6.25, q = 3.74, v = 15.44.
    assert!((g.p - 6.25).abs() < 0.1 && (g.q - 3.74).abs() < 0.1 && (g.v - 15.44).abs() < 0.5, "{g:?}");
    // The conditional mean spend shrinks the customer's own mean towards the population mean.
    let pop = g.expected_spend(0.0, 0.0);
    let own = g.expected_spend(5.0, 100.0);
    assert!(own < 100.0 && own > pop);
}
