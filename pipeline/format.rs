//! Numbers as people read them, in reports, summaries and messages.

/// Compact axis numbers: 0.25, 12, 1.2k, 3.4M.
pub fn fmt_axis(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A metric as the reports print it (4 decimals; "-" when undefined).
pub fn f4(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "-".into()
    }
}

/// An optional metric as [`f4`] prints it ("-" when absent).
pub fn opt4(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), f4)
}

/// A share as a percentage with one decimal.
pub fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}%", 100.0 * v)
    } else {
        "-".into()
    }
}

/// An integer with thousands separators.
pub fn int(n: impl Into<i128>) -> String {
    let n: i128 = n.into();
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Money-like amounts: whole units with separators.
pub fn money(v: f64) -> String {
    if v.is_finite() {
        int(v.round() as i128)
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(int(1234567), "1,234,567");
        assert_eq!(int(-1234), "-1,234");
        assert_eq!(int(12), "12");
        assert_eq!(pct(0.1234), "12.3%");
        assert_eq!(f4(f64::NAN), "-");
        assert_eq!(fmt_axis(0.25), "0.25");
        assert_eq!(fmt_axis(12_500.0), "12k");
        assert_eq!(fmt_axis(2_500_000.0), "2.5M");
    }
}
