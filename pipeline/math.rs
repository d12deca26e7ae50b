//! The two link functions every model and calibrator shares.

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Log-odds of `p`, with `p` clamped to `[eps, 1 - eps]` so that 0 and 1 stay finite.
pub fn logit(p: f64, eps: f64) -> f64 {
    let p = p.clamp(eps, 1.0 - eps);
    (p / (1.0 - p)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_inverts_sigmoid_and_stays_finite() {
        for z in [-5.0, -0.3, 0.0, 2.0] {
            assert!((logit(sigmoid(z), 1e-12) - z).abs() < 1e-9);
        }
        assert!(logit(0.0, 1e-7).is_finite() && logit(1.0, 1e-7).is_finite());
        assert!(logit(0.0, 1e-7) < -16.0);
    }
}
