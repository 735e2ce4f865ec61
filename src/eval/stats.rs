//! Statistics of results: intervals of proportions (Wilson), means (Student t) and rates
//! (medians), and the paired tests the regression report uses (exact McNemar, paired t).

use serde::{Deserialize, Serialize};

/// A measured value with its standard error, 95% interval and sample size, and what the
/// regression report allows it to lose.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metric {
    pub value: f64,
    pub se: f64,
    pub ci95: [f64; 2],
    pub n: usize,
    /// Absolute drop allowed before a report calls it a regression.
    pub tolerance: f64,
    /// True when larger is better.
    pub higher_is_better: bool,
}

/// Wilson score interval and the normal standard error of a proportion `k / n`.
pub fn proportion(k: usize, n: usize, tolerance: f64) -> Metric {
    let nf = n.max(1) as f64;
    let p = k as f64 / nf;
    let z = 1.959964;
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    Metric {
        value: p,
        se: (p * (1.0 - p) / nf).sqrt(),
        ci95: [centre - half, centre + half],
        n,
        tolerance,
        higher_is_better: true,
    }
}

/// Sample variance (`n - 1`); 0 for fewer than two values.
pub fn sample_var(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
}

/// Mean of per-image values with its standard error and a Student-t 95% interval
/// (`mean +- t(0.975, n-1) * sd / sqrt(n)`, sample standard deviation).
pub fn mean_t_interval(values: &[f64], tolerance: f64, higher_is_better: bool) -> Metric {
    let n = values.len();
    let nf = n.max(1) as f64;
    let mean = values.iter().sum::<f64>() / nf;
    let se = (sample_var(values) / nf).sqrt();
    let half = if n > 1 {
        student_t_quantile(0.975, nf - 1.0) * se
    } else {
        0.0
    };
    Metric {
        value: mean,
        se,
        ci95: [mean - half, mean + half],
        n,
        tolerance,
        higher_is_better,
    }
}

/// ln Gamma (Lanczos, g = 7, 9 terms; |relative error| < 1e-13 for x > 0).
fn ln_gamma(x: f64) -> f64 {
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
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularised incomplete beta I_x(a, b) (continued fraction, modified Lentz).
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(1.0 - x, b, a);
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp() / a;
    let tiny = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..500 {
        let m = m as f64;
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            if d.abs() < tiny {
                d = tiny;
            }
            c = 1.0 + num / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    front * f
}

/// Two-sided p-value of a Student-t statistic with `df` degrees of freedom.
pub fn student_t_two_sided_p(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    incomplete_beta(df / (df + t * t), df / 2.0, 0.5).clamp(0.0, 1.0)
}

/// The `p` quantile (p > 0.5) of Student's t with `df` degrees of freedom (bisection).
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    let target = 2.0 * (1.0 - p); // two-sided tail
    let (mut lo, mut hi) = (0.0f64, 1e3f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_two_sided_p(mid, df) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Paired t-test on per-image differences `current - baseline` of one metric: two-sided p,
/// or None when fewer than two images pair up or every difference is the same.
pub fn paired_t_p(pairs: &[(f64, f64)]) -> Option<f64> {
    let n = pairs.len();
    if n < 2 {
        return None;
    }
    let d: Vec<f64> = pairs.iter().map(|(b, c)| c - b).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    if var <= 0.0 {
        return (mean == 0.0).then_some(1.0).or(Some(0.0));
    }
    let t = mean / (var / n as f64).sqrt();
    Some(student_t_two_sided_p(t, n as f64 - 1.0))
}

/// The discordant pairs of paired outcomes `(a right, b right)`: `(right with a only, right
/// with b only)`, what [`mcnemar_p`] tests.
pub fn discordant(pairs: impl IntoIterator<Item = (bool, bool)>) -> (usize, usize) {
    pairs
        .into_iter()
        .fold((0, 0), |(a, b), (x, y)| match (x, y) {
            (true, false) => (a + 1, b),
            (false, true) => (a, b + 1),
            _ => (a, b),
        })
}

/// The difference in accuracy between two rows scored on the same `n` examples, from the
/// discordant pairs (`x_only` right with the first row only, `y_only` with the second only),
/// `(x_only - y_only) / n`, with its 95% interval by Agresti and Min's adjusted Wald method
/// for paired proportions (half a pair added to each discordant count and 2 to `n`, 2005).
pub fn paired_difference(x_only: usize, y_only: usize, n: usize) -> (f64, [f64; 2]) {
    let d = (x_only as f64 - y_only as f64) / n.max(1) as f64;
    let (b, c, m) = (x_only as f64 + 0.5, y_only as f64 + 0.5, n as f64 + 2.0);
    let centre = (b - c) / m;
    let se = ((b + c) - (b - c).powi(2) / m).max(0.0).sqrt() / m;
    let z = 1.959964;
    (d, [(centre - z * se).max(-1.0), (centre + z * se).min(1.0)])
}

/// Exact two-sided McNemar test on discordant pairs `b` (only baseline right) and `c`
/// (only current right): the binomial probability of a split at least this uneven.
pub fn mcnemar_p(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // P(X <= k) for X ~ Bin(n, 1/2), in log space.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_c = 0.0f64; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// For every count `d` of discordant pairs in `0..=n`, the largest `k` at which a split
/// `(k, d - k)` is significant at `alpha` by the exact McNemar test ([`mcnemar_p`]), or `None`
/// when no split is: the binomial lower tail of `d`, accumulated once per `d` (`O(n^2)`).
fn mcnemar_critical(n: usize, alpha: f64) -> Vec<Option<usize>> {
    (0..=n)
        .map(|d| {
            let ln_c = ln_binomials(d);
            let half = d as f64 * 0.5f64.ln();
            let mut tail = 0.0;
            let mut best = None;
            for (k, c) in ln_c.iter().enumerate().take(d / 2 + 1) {
                tail += (c + half).exp();
                if 2.0 * tail < alpha {
                    best = Some(k);
                } else {
                    break;
                }
            }
            best
        })
        .collect()
}

/// `ln C(n, k)` for every `k` of `0..=n`.
fn ln_binomials(n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    let mut c = 0.0f64;
    for k in 0..=n {
        if k > 0 {
            c += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        out.push(c);
    }
    out
}

/// The power of the exact two-sided McNemar test at `alpha` to find row B better than row A
/// over `n` paired episodes, when A is right with probability `pa`, B with `pb > pa`, and
/// their errors are independent: the number of discordant episodes is Binomial(n, psi) with
/// psi = pa(1-pb) + pb(1-pa), and each is "only B right" with probability pb(1-pa)/psi.
pub fn mcnemar_power(n: usize, pa: f64, pb: f64, alpha: f64) -> f64 {
    power_with(&mcnemar_critical(n, alpha), n, pa, pb)
}

/// [`mcnemar_power`] with the critical values of `n` computed once.
fn power_with(critical: &[Option<usize>], n: usize, pa: f64, pb: f64) -> f64 {
    let only_b = pb * (1.0 - pa);
    let psi = pa * (1.0 - pb) + only_b;
    if psi <= 0.0 || n == 0 {
        return 0.0;
    }
    let q = only_b / psi;
    let ln_n = ln_binomials(n);
    let mut power = 0.0;
    for d in 1..=n {
        let Some(k) = critical[d] else {
            continue;
        };
        let p_d = (ln_n[d] + k_ln(d, psi) + k_ln(n - d, 1.0 - psi)).exp();
        // Significant in B's favour: at most k episodes right with A only.
        let ln_d = ln_binomials(d);
        let tail: f64 = (0..=k)
            .map(|a| (ln_d[a] + k_ln(a, 1.0 - q) + k_ln(d - a, q)).exp())
            .sum();
        power += p_d * tail;
    }
    power.min(1.0)
}

/// `k ln p`, with `0 ln 0 = 0` (a probability raised to a count, in log space).
fn k_ln(k: usize, p: f64) -> f64 {
    match (k, p > 0.0) {
        (0, _) => 0.0,
        (_, true) => k as f64 * p.ln(),
        (_, false) => f64::NEG_INFINITY,
    }
}

/// The smallest gain in accuracy over a row right with probability `p0` that `n` paired
/// episodes detect with probability `power` (exact McNemar, two-sided `alpha`, independent
/// errors; see [`mcnemar_power`]), rounded up to a multiple of 0.005; `None` when not even a
/// perfect row would be detected. (The power rises with the gain: a bisection over the steps.)
pub fn paired_mde(n: usize, p0: f64, alpha: f64, power: f64) -> Option<f64> {
    let critical = mcnemar_critical(n, alpha);
    let steps = ((1.0 - p0) / 0.005).floor() as usize;
    let enough = |s: usize| power_with(&critical, n, p0, p0 + s as f64 * 0.005) >= power;
    if steps == 0 || !enough(steps) {
        return None;
    }
    let (mut lo, mut hi) = (0usize, steps);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if enough(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi as f64 * 0.005)
}

pub fn normal_sf(z: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 erfc approximation (|error| < 1.5e-7).
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    0.5 * poly * (-x * x).exp()
}

/// A rate metric from per-call times: the median of `scale / t`, the standard error of a
/// median (1.2533 sd / sqrt n) and a normal 95% interval; `tolerance` a fraction of the value.
pub fn rate_metric(times: &[f64], scale: f64, tolerance: f64) -> Metric {
    let rates: Vec<f64> = times.iter().map(|t| scale / t).collect();
    median_metric(&rates, tolerance)
}

/// A higher-is-better metric from per-call values (rates, shares): as [`rate_metric`]. The
/// spread is read robustly, 1.4826 times the median absolute deviation (the sd of a normal
/// sample), so that one call slowed by another process does not widen the interval of a median
/// it does not move; the sample sd only where the MAD is zero.
pub fn median_metric(rates: &[f64], tolerance: f64) -> Metric {
    let n = rates.len();
    let value = crate::bench::median(rates);
    let se = if n > 1 {
        let deviations: Vec<f64> = rates.iter().map(|r| (r - value).abs()).collect();
        let mad = 1.4826 * crate::bench::median(&deviations);
        let sd = if mad > 0.0 {
            mad
        } else {
            let mean = rates.iter().sum::<f64>() / n as f64;
            (rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        1.2533 * sd / (n as f64).sqrt()
    } else {
        0.0
    };
    Metric {
        value,
        se,
        ci95: [value - 1.96 * se, value + 1.96 * se],
        n,
        tolerance: tolerance * value,
        higher_is_better: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_and_mcnemar_match_textbook_values() {
        let m = proportion(80, 100, 0.0);
        assert!((m.value - 0.8).abs() < 1e-12 && (m.se - 0.04).abs() < 1e-12);
        // Wilson 95% for 80/100: [0.7112, 0.8666].
        assert!(
            (m.ci95[0] - 0.7112).abs() < 1e-3 && (m.ci95[1] - 0.8666).abs() < 1e-3,
            "{:?}",
            m.ci95
        );
        // Exact McNemar: b=1, c=9 -> 2 * P(X<=1 | n=10) = 2 * 11/1024.
        assert!((mcnemar_p(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_p(5, 5), 1.0);
        assert!((normal_sf(1.959964) - 0.025).abs() < 1e-6);
    }

    #[test]
    fn a_median_s_error_ignores_one_slowed_call() {
        // Golden values (Python statistics): median 9.9, MAD 0.35, se 1.2533 * 1.4826 * 0.35 /
        // sqrt(6) = 0.265504; the sample sd would give 1.888010.
        let m = median_metric(&[10.0, 10.5, 9.5, 10.2, 9.8, 1.0], 0.5);
        assert!((m.value - 9.9).abs() < 1e-12 && (m.se - 0.265504).abs() < 1e-5);
        assert!((m.tolerance - 4.95).abs() < 1e-12);
        // MAD zero: the sample sd (1.5), se 1.2533 * 1.5 / 2.
        let m = median_metric(&[2.0, 2.0, 2.0, 5.0], 0.5);
        assert!((m.value - 2.0).abs() < 1e-12 && (m.se - 0.939975).abs() < 1e-5);
    }

    #[test]
    fn student_t_matches_tables() {
        // t(0.975) for df 1, 10, 999 (tables / scipy.stats.t.ppf).
        for (df, want) in [(1.0, 12.706205), (10.0, 2.228139), (999.0, 1.962341)] {
            let q = student_t_quantile(0.975, df);
            assert!((q - want).abs() < 1e-4, "df {df}: {q} vs {want}");
        }
        // scipy: 2 * t.sf(2.5, 7) = 0.040992
        assert!((student_t_two_sided_p(2.5, 7.0) - 0.040992).abs() < 1e-5);
        let m = mean_t_interval(&[1.0, 2.0, 3.0, 4.0], 0.1, true);
        // mean 2.5, sd 1.290994, se 0.645497, t(0.975, 3) = 3.182446
        assert!((m.value - 2.5).abs() < 1e-12 && (m.se - 0.645497).abs() < 1e-6);
        assert!((m.ci95[0] - (2.5 - 3.182446 * 0.645497)).abs() < 1e-4);
        // Paired: a constant shift is certain, no change is p = 1.
        assert_eq!(paired_t_p(&[(1.0, 1.5), (2.0, 2.5)]), Some(0.0));
        assert_eq!(paired_t_p(&[(1.0, 1.0), (2.0, 2.0)]), Some(1.0));
        // differences 0.1, 0.3, -0.1, 0.2: mean 0.125, sd 0.170783, t = 1.463850, df 3
        let p = paired_t_p(&[(0.0, 0.1), (0.0, 0.3), (0.0, -0.1), (0.0, 0.2)]).unwrap();
        assert!((p - 0.239443).abs() < 1e-4, "{p}");
    }

    #[test]
    fn paired_differences_have_agresti_min_intervals() {
        // By hand (Python): b = 12.5, c = 5.5, m = 102: centre 7/102 = 0.068627; se =
        // sqrt(18 - 49/102) / 102 = 0.041036; interval centre -+ 1.959964 se.
        let (d, [lo, hi]) = paired_difference(12, 5, 100);
        assert!((d - 0.07).abs() < 1e-12);
        assert!((lo - (-0.011801)).abs() < 1e-5, "{lo}");
        assert!((hi - 0.149056).abs() < 1e-5, "{hi}");
        let (d, [lo, hi]) = paired_difference(0, 0, 10);
        assert_eq!(d, 0.0);
        assert!(lo < 0.0 && hi > 0.0 && (lo + hi).abs() < 1e-12);
    }

    #[test]
    fn mcnemar_power_matches_a_simulation_and_the_mde_is_where_it_crosses() {
        // Simulated exact McNemar tests on independent rows right with 0.5 and 0.8.
        let (n, pa, pb) = (40usize, 0.5, 0.8);
        let mut rng = crate::rng::Rng::new(11);
        let trials = 20_000;
        let mut hits = 0;
        for _ in 0..trials {
            let (mut only_a, mut only_b) = (0, 0);
            for _ in 0..n {
                let a = rng.uniform() < pa;
                let b = rng.uniform() < pb;
                match (a, b) {
                    (true, false) => only_a += 1,
                    (false, true) => only_b += 1,
                    _ => {}
                }
            }
            if only_b > only_a && mcnemar_p(only_a, only_b) < 0.05 {
                hits += 1;
            }
        }
        let sim = hits as f64 / trials as f64;
        let exact = mcnemar_power(n, pa, pb, 0.05);
        assert!(
            (sim - exact).abs() < 0.015,
            "simulated {sim}, exact {exact}"
        );
        // Few episodes detect only large gains; more detect smaller ones; the MDE's power is
        // at least 0.8 and 0.005 less is not.
        let small = paired_mde(10, 0.5, 0.05, 0.8);
        assert!(small.is_none(), "{small:?}");
        let d20 = paired_mde(20, 0.2, 0.05, 0.8).unwrap();
        let d100 = paired_mde(100, 0.5, 0.05, 0.8).unwrap();
        assert!(d100 < 0.25 && d20 > d100, "{d20} {d100}");
        assert!(mcnemar_power(100, 0.5, 0.5 + d100, 0.05) >= 0.8);
        assert!(mcnemar_power(100, 0.5, 0.5 + d100 - 0.005, 0.05) < 0.8);
        // Nothing discordant, no power.
        assert_eq!(mcnemar_power(50, 1.0, 1.0, 0.05), 0.0);
    }
}
