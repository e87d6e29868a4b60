//! CMA-ES with Hansen's standard defaults ("The CMA Evolution Strategy: A Tutorial",
//! arXiv:1604.00772, Table 1 and Eqs. 44-47).

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::error::{EvolveError, Result};
use crate::{argsort_desc, check_positive, randn, Bookkeeping, Population, Progress, Rng, Strategy};

/// Configuration of [`CmaEs`].
#[derive(Debug, Clone, PartialEq)]
pub struct CmaEsConfig {
    /// Initial mean `m_0` (its length is the dimension `n`).
    pub mean: Vec<f64>,
    /// Initial step size `sigma_0 > 0`.
    pub sigma: f64,
    /// Population size `lambda`; `None` = Hansen's default `4 + floor(3 ln n)`.
    pub population_size: Option<usize>,
    /// Generation budget (`None`: unlimited; [`Strategy::is_done`] then stays false).
    pub max_generations: Option<usize>,
    /// Active CMA: negative recombination weights for the worse half in the
    /// covariance update (the tutorial's default and pycma's `CMA_active`).
    pub active: bool,
}

impl CmaEsConfig {
    /// Defaults: Hansen's population size, no budget, active CMA on.
    pub fn new(mean: Vec<f64>, sigma: f64) -> Self {
        CmaEsConfig {
            mean,
            sigma,
            population_size: None,
            max_generations: None,
            active: true,
        }
    }
}

/// CMA-ES as an ask/tell [`Strategy`] (maximises fitness).
///
/// Sampling `x_k = m + sigma B D z_k`, `z_k ~ N(0, I)`; with `y_k = B D z_k` sorted by
/// fitness (best first) and weights `w_i`:
///
/// ```text
/// <y>_w  = sum_{i<=mu} w_i y_{i:lambda};     m <- m + sigma <y>_w          (c_m = 1)
/// p_s    <- (1-c_s) p_s + sqrt(c_s (2-c_s) mu_eff) C^{-1/2} <y>_w
/// sigma  <- sigma exp(c_s/d_s (|p_s| / E|N(0,I)| - 1))
/// p_c    <- (1-c_c) p_c + h_s sqrt(c_c (2-c_c) mu_eff) <y>_w
/// C      <- (1 + c_1 delta(h_s) - c_1 - c_mu sum_j w_j) C + c_1 p_c p_c^T
///           + c_mu sum_i w°_i y_i y_i^T,   w°_i = w_i (n / |C^{-1/2} y_i|^2 if w_i < 0)
/// ```
///
/// with `mu = floor(lambda/2)`, `w'_i = ln((lambda+1)/2) - ln i`,
/// `c_1 = 2/((n+1.3)^2 + mu_eff)`,
/// `c_mu = min(1 - c_1, 2 (mu_eff - 2 + 1/mu_eff) / ((n+2)^2 + mu_eff))`,
/// `c_s = (mu_eff+2)/(n+mu_eff+5)`, `d_s = 1 + 2 max(0, sqrt((mu_eff-1)/(n+1)) - 1) + c_s`,
/// `c_c = (4 + mu_eff/n)/(n + 4 + 2 mu_eff/n)`. The eigendecomposition of `C` is
/// refreshed every `max(1, floor(1/(10 n (c_1 + c_mu))))` generations.
#[derive(Debug, Clone)]
pub struct CmaEs {
    n: usize,
    lambda: usize,
    mu: usize,
    weights: Vec<f64>,
    mu_eff: f64,
    c1: f64,
    cmu: f64,
    cs: f64,
    ds: f64,
    cc: f64,
    chi_n: f64,
    eigen_every: usize,
    mean: DVector<f64>,
    sigma: f64,
    c: DMatrix<f64>,
    b: DMatrix<f64>,
    d: DVector<f64>,
    inv_sqrt_c: DMatrix<f64>,
    ps: DVector<f64>,
    pc: DVector<f64>,
    /// Pending: the steps `y_k = B D z_k` of the asked members.
    book: Bookkeeping<Vec<DVector<f64>>>,
    last_eigen: usize,
    rng: Rng,
}

impl CmaEs {
    /// Create the strategy.
    ///
    /// # Errors
    /// [`EvolveError::InvalidConfig`] for an empty or non-finite `mean`, a non-positive
    /// `sigma`, or `population_size < 2`.
    pub fn new(cfg: CmaEsConfig, seed: u64) -> Result<Self> {
        let n = cfg.mean.len();
        if n == 0 {
            return Err(EvolveError::config("mean", "must have at least one dimension"));
        }
        if cfg.mean.iter().any(|v| !v.is_finite()) {
            return Err(EvolveError::config("mean", "must be finite"));
        }
        check_positive("sigma", cfg.sigma)?;
        let nf = n as f64;
        let lambda = cfg
            .population_size
            .unwrap_or(4 + (3.0 * nf.ln()).floor() as usize);
        if lambda < 2 {
            return Err(EvolveError::config(
                "population_size",
                format!("must be >= 2, got {lambda}"),
            ));
        }
        let mu = lambda / 2;
        let raw: Vec<f64> = (1..=lambda)
            .map(|i| ((lambda as f64 + 1.0) / 2.0).ln() - (i as f64).ln())
            .collect();
        let pos_sum: f64 = raw[..mu].iter().sum();
        let pos_sq: f64 = raw[..mu].iter().map(|w| w * w).sum();
        let mu_eff = pos_sum * pos_sum / pos_sq;
        let neg_sum: f64 = raw[mu..].iter().filter(|w| **w < 0.0).map(|w| -w).sum();
        let neg_sq: f64 = raw[mu..].iter().filter(|w| **w < 0.0).map(|w| w * w).sum();
        let mu_eff_neg = if neg_sq > 0.0 {
            neg_sum * neg_sum / neg_sq
        } else {
            0.0
        };

        let alpha_cov = 2.0;
        let c1 = alpha_cov / ((nf + 1.3).powi(2) + mu_eff);
        let cmu = (1.0 - c1)
            .min(alpha_cov * (mu_eff - 2.0 + 1.0 / mu_eff) / ((nf + 2.0).powi(2) + alpha_cov * mu_eff / 2.0));
        let cs = (mu_eff + 2.0) / (nf + mu_eff + 5.0);
        let ds = 1.0 + 2.0 * (((mu_eff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + cs;
        let cc = (4.0 + mu_eff / nf) / (nf + 4.0 + 2.0 * mu_eff / nf);

        let alpha_mu_neg = 1.0 + c1 / cmu;
        let alpha_mueff_neg = 1.0 + 2.0 * mu_eff_neg / (mu_eff + 2.0);
        let alpha_posdef_neg = (1.0 - c1 - cmu) / (nf * cmu);
        let neg_scale = alpha_mu_neg.min(alpha_mueff_neg).min(alpha_posdef_neg);
        let weights: Vec<f64> = raw
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                if i < mu {
                    w / pos_sum
                } else if cfg.active && w < 0.0 && neg_sum > 0.0 {
                    neg_scale * w / neg_sum
                } else {
                    0.0
                }
            })
            .collect();
        let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));
        let eigen_every = ((1.0 / (10.0 * nf * (c1 + cmu))).floor() as usize).max(1);
        let mean = DVector::from_vec(cfg.mean);
        let sigma = cfg.sigma;
        Ok(CmaEs {
            book: Bookkeeping::new(cfg.max_generations),
            n,
            lambda,
            mu,
            weights,
            mu_eff,
            c1,
            cmu,
            cs,
            ds,
            cc,
            chi_n,
            eigen_every,
            mean,
            sigma,
            c: DMatrix::identity(n, n),
            b: DMatrix::identity(n, n),
            d: DVector::from_element(n, 1.0),
            inv_sqrt_c: DMatrix::identity(n, n),
            ps: DVector::zeros(n),
            pc: DVector::zeros(n),
            last_eigen: 0,
            rng: crate::rng_from_seed(seed),
        })
    }

    /// Current mean `m`.
    pub fn mean(&self) -> Vec<f64> {
        self.mean.iter().copied().collect()
    }

    /// Current step size `sigma`.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// Current covariance matrix `C` (row-major `n x n`); the sampling covariance is
    /// `sigma^2 C`.
    pub fn covariance(&self) -> Vec<f64> {
        self.c.transpose().iter().copied().collect()
    }

    /// Recombination weights `w_1..w_lambda` (positive for the best `mu`, negative for
    /// the worst when `active`).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Variance-effective selection mass `mu_eff`.
    pub fn mu_eff(&self) -> f64 {
        self.mu_eff
    }

    fn update_eigen(&mut self) {
        let n = self.n;
        // enforce symmetry
        let c = (&self.c + self.c.transpose()) * 0.5;
        let eig = SymmetricEigen::new(c.clone());
        let mut vals = eig.eigenvalues;
        let floor = 1e-300_f64.max(vals.max() * 1e-20);
        vals.iter_mut().for_each(|v| {
            if !v.is_finite() || *v < floor {
                *v = floor;
            }
        });
        self.c = c;
        self.b = eig.eigenvectors;
        self.d = vals.map(f64::sqrt);
        let dinv = DMatrix::from_diagonal(&self.d.map(|v| 1.0 / v));
        self.inv_sqrt_c = &self.b * dinv * self.b.transpose();
        debug_assert_eq!(self.b.nrows(), n);
    }
}

/// `lambda` steps `y_k = B D z_k`, `z_k ~ N(0, I)`.
fn sample_steps(b: &DMatrix<f64>, d: &DVector<f64>, lambda: usize, rng: &mut Rng) -> Vec<DVector<f64>> {
    let n = d.len();
    let bd = b * DMatrix::from_diagonal(d);
    (0..lambda)
        .map(|_| {
            let z = DVector::from_iterator(n, (0..n).map(|_| randn(rng)));
            &bd * z
        })
        .collect()
}

impl Strategy for CmaEs {
    fn name(&self) -> &'static str {
        "CMA-ES"
    }

    fn dim(&self) -> usize {
        self.n
    }

    fn population_size(&self) -> usize {
        self.lambda
    }

    fn ask(&mut self) -> Result<Population> {
        self.book.begin_ask(|| {
            let ys = sample_steps(&self.b, &self.d, self.lambda, &mut self.rng);
            let pop = ys
                .iter()
                .map(|y| (&self.mean + y * self.sigma).iter().copied().collect())
                .collect();
            (pop, ys)
        })
    }

    fn tell(&mut self, fitness: &[f64]) -> Result<()> {
        let (_, ys) = self.book.finish_tell(fitness)?;
        let order = argsort_desc(fitness);
        let n = self.n;
        let nf = n as f64;

        let mut yw = DVector::zeros(n);
        for (rank, &k) in order.iter().take(self.mu).enumerate() {
            yw += &ys[k] * self.weights[rank];
        }
        self.mean += &yw * self.sigma;

        let cy = &self.inv_sqrt_c * &yw;
        self.ps = &self.ps * (1.0 - self.cs) + cy * (self.cs * (2.0 - self.cs) * self.mu_eff).sqrt();
        let ps_norm = self.ps.norm();
        let g1 = self.generation() as f64; // this generation included
        let hs_thresh = (1.4 + 2.0 / (nf + 1.0)) * self.chi_n;
        let hs = ps_norm / (1.0 - (1.0 - self.cs).powf(2.0 * g1)).sqrt() < hs_thresh;
        let hs_f = if hs { 1.0 } else { 0.0 };
        self.pc =
            &self.pc * (1.0 - self.cc) + &yw * (hs_f * (self.cc * (2.0 - self.cc) * self.mu_eff).sqrt());

        let delta_hs = (1.0 - hs_f) * self.cc * (2.0 - self.cc);
        let wsum: f64 = self.weights.iter().sum();
        let mut rank_mu = DMatrix::zeros(n, n);
        for (rank, &k) in order.iter().enumerate() {
            let w = self.weights[rank];
            if w == 0.0 {
                continue;
            }
            let y = &ys[k];
            let w_eff = if w < 0.0 {
                let q = (&self.inv_sqrt_c * y).norm_squared();
                if q > 0.0 {
                    w * nf / q
                } else {
                    0.0
                }
            } else {
                w
            };
            rank_mu += y * y.transpose() * w_eff;
        }
        self.c = &self.c * (1.0 + self.c1 * delta_hs - self.c1 - self.cmu * wsum)
            + &self.pc * self.pc.transpose() * self.c1
            + rank_mu * self.cmu;

        self.sigma *= ((self.cs / self.ds) * (ps_norm / self.chi_n - 1.0)).exp();
        if !self.sigma.is_finite() || self.sigma <= 0.0 {
            self.sigma = f64::MIN_POSITIVE;
        }
        if self.generation() - self.last_eigen >= self.eigen_every {
            self.update_eigen();
            self.last_eigen = self.generation();
        }
        Ok(())
    }

    fn progress(&self) -> &Progress {
        self.book.progress()
    }
}
