//! The two link functions every model and calibrator shares, and an exact sum.

use serde::{Deserialize, Serialize};

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Log-odds of `p`, with `p` clamped to `[eps, 1 - eps]` so that 0 and 1 stay finite.
pub fn logit(p: f64, eps: f64) -> f64 {
    let p = p.clamp(eps, 1.0 - eps);
    (p / (1.0 - p)).ln()
}

/// A sum of floats kept exactly (Shewchuk's non-overlapping partials, as Python's
/// `math.fsum`), so that any split of the values, summed apart and merged, rounds to the same
/// correctly rounded total as summing them all at once. Non-finite values are summed apart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExactSum {
    partials: Vec<f64>,
    special: f64,
}

impl ExactSum {
    pub fn add(&mut self, mut x: f64) {
        if !x.is_finite() {
            self.special += x;
            return;
        }
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        self.partials.push(x);
    }

    /// The sum of both sets of values.
    pub fn merge(&mut self, other: &ExactSum) {
        other.partials.iter().for_each(|&p| self.add(p));
        self.special += other.special;
    }

    /// The correctly rounded sum (round half to even), or the sum of the non-finite values.
    pub fn value(&self) -> f64 {
        if self.special != 0.0 || self.special.is_nan() {
            return self.special;
        }
        let p = &self.partials;
        let Some(&top) = p.last() else { return 0.0 };
        let (mut n, mut hi, mut lo) = (p.len() - 1, top, 0.0);
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // Half-way cases: the partials below decide the direction of the rounding.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sum_is_correctly_rounded_and_split_invariant() {
        // Naive summation loses the small terms; the exact sum does not.
        let values = [1e16, 1.0, -1e16, 1.0, 0.1, 0.2, 0.3, 1e-20];
        let mut s = ExactSum::default();
        values.iter().for_each(|&v| s.add(v));
        assert_eq!(s.value(), 2.6);
        assert_ne!(values.iter().sum::<f64>(), 2.6);
        // Any split, merged, gives the same bits.
        let many: Vec<f64> =
            (0..5000).map(|i| ((i * 7919) % 1013) as f64 * 0.37 - 150.0 + 1e-9 * i as f64).collect();
        let whole = {
            let mut s = ExactSum::default();
            many.iter().for_each(|&v| s.add(v));
            s.value()
        };
        for cut in [1, 999, 2500, 4999] {
            let (mut a, mut b) = (ExactSum::default(), ExactSum::default());
            many[..cut].iter().rev().for_each(|&v| a.add(v));
            many[cut..].iter().for_each(|&v| b.add(v));
            b.merge(&a);
            assert_eq!(b.value().to_bits(), whole.to_bits());
        }
        let mut inf = ExactSum::default();
        [1.0, f64::INFINITY, 2.0].iter().for_each(|&v| inf.add(v));
        assert_eq!(inf.value(), f64::INFINITY);
        assert_eq!(ExactSum::default().value(), 0.0);
    }

    #[test]
    fn logit_inverts_sigmoid_and_stays_finite() {
        for z in [-5.0, -0.3, 0.0, 2.0] {
            assert!((logit(sigmoid(z), 1e-12) - z).abs() < 1e-9);
        }
        assert!(logit(0.0, 1e-7).is_finite() && logit(1.0, 1e-7).is_finite());
        assert!(logit(0.0, 1e-7) < -16.0);
    }
}
