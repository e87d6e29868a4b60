//! Statistics of the summary: percentile bootstrap intervals of a mean, and piecewise
//! linear interpolation on a curve (sampling's temperature sweep).
//!
//! ```
//! use latentevo_eval::stats::{bootstrap_mean, Curve, Lookup};
//! let ci = bootstrap_mean(&[1.0, 2.0, 3.0, 4.0], 1000, 7).unwrap();
//! assert_eq!(ci.mean, 2.5);
//! assert!(ci.low <= 2.5 && 2.5 <= ci.high);
//! let curve = Curve::new(&[(-3.0, 6.0), (-1.0, 2.0)]).unwrap();
//! assert_eq!(curve.at(-2.0), Lookup::Inside(4.0));
//! assert_eq!(curve.at(-0.5), Lookup::Above);
//! ```

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A mean with its 95% percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The sample mean.
    pub mean: f64,
    /// The 2.5% quantile of the resampled means.
    pub low: f64,
    /// The 97.5% quantile of the resampled means.
    pub high: f64,
    /// Values (prompts) the mean is over.
    pub n: usize,
}

/// The `q` quantile (0..=1) of sorted values, linearly interpolated between order
/// statistics (position `q (n - 1)`, R's and NumPy's default). NaN for no values.
///
/// ```
/// use latentevo_eval::stats::quantile;
/// assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
/// assert_eq!(quantile(&[10.0, 20.0], 0.25), 12.5);
/// ```
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

/// The mean of `values` with a 95% percentile bootstrap interval: `resamples` times,
/// draw `n` values with replacement (ChaCha8 seeded with `seed`) and take their mean; the
/// interval is the 2.5% and 97.5% [`quantile`]s of those means. Non-finite values are
/// left out first; `None` when no value is left. One value gives `[v, v]`.
pub fn bootstrap_mean(values: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 || resamples == 0 {
        return Some(Interval {
            mean,
            low: if n == 1 { mean } else { f64::NAN },
            high: if n == 1 { mean } else { f64::NAN },
            n,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| v[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    Some(Interval {
        mean,
        low: quantile(&means, 0.025),
        high: quantile(&means, 0.975),
        n,
    })
}

/// Where a lookup on a [`Curve`] fell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup {
    /// Inside the curve's x range: the interpolated y.
    Inside(f64),
    /// Below the smallest x (no extrapolation).
    Below,
    /// Above the largest x (no extrapolation).
    Above,
    /// The x looked up is not a number.
    Undefined,
}

impl Lookup {
    /// The value, if inside.
    pub fn value(self) -> Option<f64> {
        match self {
            Lookup::Inside(v) => Some(v),
            _ => None,
        }
    }
}

/// A piecewise linear function through points sorted by x; points with equal x are
/// averaged into one.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    points: Vec<(f64, f64)>,
}

impl Curve {
    /// The curve through the finite points, or `None` when fewer than two distinct x
    /// remain (no range to interpolate in).
    pub fn new(points: &[(f64, f64)]) -> Option<Curve> {
        let mut p: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut merged: Vec<(f64, f64, usize)> = Vec::new();
        for (x, y) in p {
            match merged.last_mut() {
                Some(last) if last.0 == x => {
                    last.1 += y;
                    last.2 += 1;
                }
                _ => merged.push((x, y, 1)),
            }
        }
        let points: Vec<(f64, f64)> = merged.into_iter().map(|(x, s, n)| (x, s / n as f64)).collect();
        (points.len() >= 2).then_some(Curve { points })
    }

    /// The points, sorted by x.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// The value at `x`: linear between the two neighbouring points, exact at a point;
    /// outside the x range [`Lookup::Below`] or [`Lookup::Above`].
    pub fn at(&self, x: f64) -> Lookup {
        if !x.is_finite() {
            return Lookup::Undefined;
        }
        let (first, last) = (self.points[0], self.points[self.points.len() - 1]);
        if x < first.0 {
            return Lookup::Below;
        }
        if x > last.0 {
            return Lookup::Above;
        }
        for w in self.points.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            if x <= x1 {
                return Lookup::Inside(y0 + (x - x0) / (x1 - x0) * (y1 - y0));
            }
        }
        Lookup::Inside(last.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_hand() {
        let s = [1.0, 3.0, 4.0, 10.0];
        // Position q * 3: 0.25 -> 0.75 between 1 and 3; 0.975 -> 2.925 between 4 and 10.
        assert!((quantile(&s, 0.25) - 2.5).abs() < 1e-12);
        assert!((quantile(&s, 0.975) - 9.55).abs() < 1e-12);
        assert_eq!(quantile(&s, 0.0), 1.0);
        assert_eq!(quantile(&s, 1.0), 10.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn bootstrap_of_a_constant_is_the_constant() {
        let ci = bootstrap_mean(&[2.0; 7], 500, 1).unwrap();
        assert_eq!((ci.mean, ci.low, ci.high, ci.n), (2.0, 2.0, 2.0, 7));
        let one = bootstrap_mean(&[5.0, f64::NAN], 500, 1).unwrap();
        assert_eq!((one.mean, one.low, one.high, one.n), (5.0, 5.0, 5.0, 1));
        assert!(bootstrap_mean(&[f64::NAN], 500, 1).is_none());
    }

    #[test]
    fn bootstrap_of_two_values_spans_them() {
        // Means of 2 draws from {0, 1}: 0 (p 1/4), 0.5 (1/2), 1 (1/4); with 4000 resamples
        // both 2.5% and 97.5% quantiles fall on the extreme values.
        let ci = bootstrap_mean(&[0.0, 1.0], 4000, 3).unwrap();
        assert_eq!((ci.mean, ci.low, ci.high), (0.5, 0.0, 1.0));
    }

    #[test]
    fn bootstrap_interval_matches_the_normal_approximation() {
        // 1..=20: mean 10.5, population sd sqrt((n^2 - 1) / 12) = 5.766, so the standard
        // error of the mean is 5.766 / sqrt(20) = 1.289 and the normal 95% interval is
        // 10.5 -/+ 1.96 * 1.289 = [7.97, 13.03]. Tolerance 0.3 at 4000 resamples.
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let ci = bootstrap_mean(&v, 4000, 11).unwrap();
        assert_eq!(ci.mean, 10.5);
        assert!((ci.low - 7.97).abs() < 0.3, "{ci:?}");
        assert!((ci.high - 13.03).abs() < 0.3, "{ci:?}");
        // Seeded: the same seed, the same interval.
        assert_eq!(bootstrap_mean(&v, 4000, 11), Some(ci));
    }

    #[test]
    fn interpolation_by_hand() {
        // Sampling's points as (fluency, Vendi), given out of order.
        let c = Curve::new(&[(-1.0, 2.0), (-3.0, 6.0), (-2.0, 5.0)]).unwrap();
        assert_eq!(c.points(), &[(-3.0, 6.0), (-2.0, 5.0), (-1.0, 2.0)]);
        assert!((c.at(-2.5).value().unwrap() - 5.5).abs() < 1e-12);
        assert!((c.at(-1.25).value().unwrap() - 2.75).abs() < 1e-12);
        assert_eq!(c.at(-2.0), Lookup::Inside(5.0));
        assert_eq!(c.at(-3.0), Lookup::Inside(6.0));
        assert_eq!(c.at(-1.0), Lookup::Inside(2.0));
        assert_eq!(c.at(-3.01), Lookup::Below);
        assert_eq!(c.at(-0.99), Lookup::Above);
        assert_eq!(c.at(f64::NAN), Lookup::Undefined);
        // Equal x are averaged; fewer than two distinct x make no curve.
        let d = Curve::new(&[(0.0, 1.0), (0.0, 3.0), (1.0, 4.0)]).unwrap();
        assert_eq!(d.at(0.5), Lookup::Inside(3.0));
        assert!(Curve::new(&[(0.0, 1.0), (0.0, 2.0), (f64::NAN, 1.0)]).is_none());
    }
}
