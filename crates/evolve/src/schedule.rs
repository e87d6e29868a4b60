//! Alpha schedules of Diffusion Evolution (`diffevo/ddim.py`).

use crate::error::{EvolveError, Result};

/// The alpha (signal level) schedule of Diffusion Evolution.
///
/// `alphas(n)` returns `n` values, **decreasing**: index 0 is the clean end
/// (alpha close to 1) and index `n - 1` the noisy end (alpha close to 0). The
/// algorithm iterates `t = n-1, ..., 1` and uses the pair `(alpha[t], alpha[t-1])`,
/// i.e. `n - 1` generations.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AlphaSchedule {
    /// The library default (`DDIMScheduler`):
    /// `alpha = linspace(1 - eps, eps^2, n)` with `eps = 1e-4`,
    /// i.e. from `0.9999` down to `1e-8`.
    #[default]
    Linear,
    /// `DDIMScheduler(power = p)`:
    /// `alpha = linspace(1 - eps, (eps^2)^(1/p), n)^p`, `eps = 1e-4`
    /// (from `(1 - 1e-4)^p` down to `1e-8`). `LinearPower(1.0)` equals [`Linear`](Self::Linear).
    LinearPower(f64),
    /// The cosine schedule used by the paper's benchmarks:
    /// `a = (cos(linspace(0, pi, n)) + 1) / 2`,
    /// `alpha = (a + 1e-3) (1 - 1e-3) / (1 + 1e-3)`,
    /// from `0.999` down to `~0.000998`.
    Cosine,
    /// The DDPM approximation (`DDPMScheduler`):
    /// `alpha_t = exp(-beta t - gamma t^2)`, `t = linspace(1/n, 1, n)`,
    /// `beta = (n^2 ln(1/(1-e)) + ln e) / (n - 1)`,
    /// `gamma = -n (n ln(1/(1-e)) + ln e) / (n - 1)`, `e = 1e-4`,
    /// so that `alpha[0] = 1 - e` and `alpha[n-1] = e`.
    Ddpm,
    /// A user-given schedule of length `n`: values in `(0, 1]`, `alpha[t] < 1` for `t >= 1`.
    Custom(Vec<f64>),
}

const EPS: f64 = 1e-4;

/// `torch.linspace(start, end, n)` in f64.
pub(crate) fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| if i == n - 1 { end } else { start + step * i as f64 })
        .collect()
}

impl AlphaSchedule {
    /// The `n` alpha values (see the type's documentation for the ordering).
    ///
    /// # Errors
    /// [`EvolveError::InvalidConfig`] (field `num_steps`) if `n < 2`, or (field
    /// `schedule`) if a custom or power schedule is invalid.
    ///
    /// ```
    /// use latentevo_evolve::AlphaSchedule;
    /// let a = AlphaSchedule::Cosine.alphas(25).unwrap();
    /// assert!((a[0] - 0.999).abs() < 1e-12);
    /// assert!(a.windows(2).all(|w| w[1] < w[0]));
    /// ```
    pub fn alphas(&self, n: usize) -> Result<Vec<f64>> {
        if n < 2 {
            return Err(EvolveError::config(
                "num_steps",
                format!("must be >= 2 (n - 1 generations), got {n}"),
            ));
        }
        let a = match self {
            AlphaSchedule::Linear => linspace(1.0 - EPS, EPS * EPS, n),
            AlphaSchedule::LinearPower(p) => {
                if !(p.is_finite() && *p > 0.0) {
                    return Err(EvolveError::config(
                        "schedule",
                        format!("LinearPower exponent must be finite and > 0, got {p}"),
                    ));
                }
                linspace(1.0 - EPS, (EPS * EPS).powf(1.0 / p), n)
                    .into_iter()
                    .map(|v| v.powf(*p))
                    .collect()
            }
            AlphaSchedule::Cosine => linspace(0.0, std::f64::consts::PI, n)
                .into_iter()
                .map(|s| {
                    let a = (s.cos() + 1.0) / 2.0;
                    (a + 1e-3) * (1.0 - 1e-3) / (1.0 + 1e-3)
                })
                .collect(),
            AlphaSchedule::Ddpm => {
                let nf = n as f64;
                let l1 = (1.0 / (1.0 - EPS)).ln();
                let le = EPS.ln();
                let beta = (nf * nf * l1 + le) / (nf - 1.0);
                let gamma = -nf * (nf * l1 + le) / (nf - 1.0);
                linspace(1.0 / nf, 1.0, n)
                    .into_iter()
                    .map(|t| (-beta * t - gamma * t * t).exp())
                    .collect()
            }
            AlphaSchedule::Custom(v) => {
                if v.len() != n {
                    return Err(EvolveError::config(
                        "schedule",
                        format!("custom schedule has {} values but num_steps is {n}", v.len()),
                    ));
                }
                v.clone()
            }
        };
        for (t, &v) in a.iter().enumerate() {
            let ok = v.is_finite() && v > 0.0 && (v < 1.0 || (t == 0 && v <= 1.0));
            if !ok {
                return Err(EvolveError::config(
                    "schedule",
                    format!("alpha[{t}] = {v} must lie in (0, 1) (alpha[0] may be 1)"),
                ));
            }
        }
        Ok(a)
    }
}
