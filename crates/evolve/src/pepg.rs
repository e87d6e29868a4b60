//! PEPG (Sehnke et al. 2010, "Parameter-exploring policy gradients") with the
//! extensions of estool/HADES that the Diffusion Evolution benchmarks use: symmetric
//! sampling, average baseline, centred ranks, L2 weight decay, adaptive per-coordinate
//! sigma, optional elite mean update.

// Updates index several parallel per-coordinate arrays; index loops read clearest.
#![allow(clippy::needless_range_loop)]

use crate::error::{EvolveError, Result};
use crate::openes::centered_ranks;
use crate::{
    argsort_desc, check_nonzero, check_positive, randn, sanitize_worst, Bookkeeping, Population, Progress,
    Rng, Strategy,
};

/// Configuration of [`Pepg`].
#[derive(Debug, Clone, PartialEq)]
pub struct PepgConfig {
    /// Initial mean `mu_0` (its length is the dimension).
    pub mean: Vec<f64>,
    /// Population size (even: `popsize/2` mirrored pairs).
    pub population_size: usize,
    /// Initial per-coordinate sigma.
    pub sigma: f64,
    /// Learning rate of the sigma adaptation (0 disables it).
    pub sigma_alpha: f64,
    /// Multiplicative sigma decay per generation (for coordinates above `sigma_limit`).
    pub sigma_decay: f64,
    /// Sigma is not decayed below this.
    pub sigma_limit: f64,
    /// Relative clip of one sigma change (0.2 = 20%).
    pub sigma_max_change: f64,
    /// Adam step size of the mean update (unused when `elite_ratio > 0`).
    pub learning_rate: f64,
    /// Learning-rate decay per generation (while above `learning_rate_limit`).
    pub learning_rate_decay: f64,
    /// Learning rate is not decayed below this.
    pub learning_rate_limit: f64,
    /// If `> 0`, the mean moves to the mean of the best `floor(popsize * elite_ratio)`
    /// perturbations instead of an Adam step.
    pub elite_ratio: f64,
    /// L2 penalty `reward -= weight_decay * mean(x^2)` (added after ranking).
    pub weight_decay: f64,
    /// Use centred ranks instead of raw fitness.
    pub rank_fitness: bool,
    /// Generation budget.
    pub max_generations: Option<usize>,
}

impl PepgConfig {
    /// estool defaults (sigma_alpha 0.2, sigma_decay 0.999, lr 0.01, weight decay 0.01,
    /// ranks, no elite).
    pub fn new(mean: Vec<f64>, sigma: f64, population_size: usize) -> Self {
        PepgConfig {
            mean,
            population_size,
            sigma,
            sigma_alpha: 0.2,
            sigma_decay: 0.999,
            sigma_limit: 0.01,
            sigma_max_change: 0.2,
            learning_rate: 0.01,
            learning_rate_decay: 0.9999,
            learning_rate_limit: 0.01,
            elite_ratio: 0.0,
            weight_decay: 0.01,
            rank_fitness: true,
            max_generations: None,
        }
    }

    /// The benchmark setting of the paper: mean 0, sigma 4, elite ratio 0.1,
    /// sigma decay `0.01^(1/steps)`, `steps` generations, other values estool defaults.
    pub fn paper_benchmark(dim: usize, population_size: usize, steps: usize) -> Self {
        PepgConfig {
            elite_ratio: 0.1,
            sigma_decay: 0.01f64.powf(1.0 / steps.max(1) as f64),
            max_generations: Some(steps),
            ..PepgConfig::new(vec![0.0; dim], 4.0, population_size)
        }
    }
}

/// PEPG as an ask/tell [`Strategy`] (maximises fitness).
#[derive(Debug, Clone)]
pub struct Pepg {
    cfg: PepgConfig,
    mu: Vec<f64>,
    sigma: Vec<f64>,
    lr: f64,
    adam_m: Vec<f64>,
    adam_v: Vec<f64>,
    adam_t: i32,
    /// Pending: the perturbations `eps_k` of the first half (the second half is `-eps_k`).
    book: Bookkeeping<Vec<Vec<f64>>>,
    rng: Rng,
}

impl Pepg {
    /// Create the strategy.
    ///
    /// # Errors
    /// [`EvolveError::InvalidConfig`] naming the bad field (e.g. an odd population).
    pub fn new(cfg: PepgConfig, seed: u64) -> Result<Self> {
        check_nonzero("mean", cfg.mean.len())?;
        check_nonzero("population_size", cfg.population_size)?;
        if !cfg.population_size.is_multiple_of(2) {
            return Err(EvolveError::config(
                "population_size",
                format!("must be even (mirrored pairs), got {}", cfg.population_size),
            ));
        }
        check_positive("sigma", cfg.sigma)?;
        check_positive("sigma_decay", cfg.sigma_decay)?;
        check_positive("learning_rate", cfg.learning_rate)?;
        if !(0.0..=1.0).contains(&cfg.elite_ratio) {
            return Err(EvolveError::config(
                "elite_ratio",
                format!("must lie in [0, 1], got {}", cfg.elite_ratio),
            ));
        }
        let d = cfg.mean.len();
        Ok(Pepg {
            mu: cfg.mean.clone(),
            sigma: vec![cfg.sigma; d],
            lr: cfg.learning_rate,
            adam_m: vec![0.0; d],
            adam_v: vec![0.0; d],
            adam_t: 0,
            book: Bookkeeping::new(cfg.max_generations),
            rng: crate::rng_from_seed(seed),
            cfg,
        })
    }

    /// Current mean.
    pub fn mean(&self) -> &[f64] {
        &self.mu
    }

    /// Current per-coordinate sigma.
    pub fn sigma(&self) -> &[f64] {
        &self.sigma
    }
}

impl Strategy for Pepg {
    fn name(&self) -> &'static str {
        "PEPG"
    }

    fn dim(&self) -> usize {
        self.mu.len()
    }

    fn population_size(&self) -> usize {
        self.cfg.population_size
    }

    fn ask(&mut self) -> Result<Population> {
        self.book.begin_ask(|| {
            let eps: Vec<Vec<f64>> = (0..self.cfg.population_size / 2)
                .map(|_| self.sigma.iter().map(|s| randn(&mut self.rng) * s).collect())
                .collect();
            let plus = eps
                .iter()
                .map(|e| self.mu.iter().zip(e).map(|(m, e)| m + e).collect());
            let minus = eps
                .iter()
                .map(|e| self.mu.iter().zip(e).map(|(m, e)| m - e).collect());
            (plus.chain(minus).collect(), eps)
        })
    }

    fn tell(&mut self, fitness: &[f64]) -> Result<()> {
        let (pop, eps) = self.book.finish_tell(fitness)?;
        let half = eps.len();
        let d = self.mu.len();
        let mut reward = if self.cfg.rank_fitness {
            centered_ranks(fitness)
        } else {
            sanitize_worst(fitness)
        };
        if self.cfg.weight_decay > 0.0 {
            for (r, x) in reward.iter_mut().zip(&pop) {
                *r -= self.cfg.weight_decay * x.iter().map(|v| v * v).sum::<f64>() / d as f64;
            }
        }
        let b = reward.iter().sum::<f64>() / reward.len() as f64;
        let eps_full = |k: usize| -> Vec<f64> {
            if k < half {
                eps[k].clone()
            } else {
                eps[k - half].iter().map(|v| -v).collect()
            }
        };
        let elite_n = (self.cfg.population_size as f64 * self.cfg.elite_ratio) as usize;
        if elite_n > 0 {
            let order = argsort_desc(&reward);
            let mut shift = vec![0.0; d];
            for &k in order.iter().take(elite_n) {
                shift.iter_mut().zip(eps_full(k)).for_each(|(s, e)| *s += e);
            }
            self.mu
                .iter_mut()
                .zip(&shift)
                .for_each(|(m, s)| *m += s / elite_n as f64);
        } else {
            // change_mu = sum_k (r+_k - r-_k) eps_k, Adam ascent (beta1 0.99, beta2 0.999)
            let mut g = vec![0.0; d];
            for k in 0..half {
                let rt = reward[k] - reward[k + half];
                g.iter_mut().zip(&eps[k]).for_each(|(g, e)| *g += rt * e);
            }
            self.adam_t += 1;
            let (b1, b2, e) = (0.99, 0.999, 1e-8);
            let a = self.lr * (1.0 - f64::powi(b2, self.adam_t)).sqrt() / (1.0 - f64::powi(b1, self.adam_t));
            for i in 0..d {
                self.adam_m[i] = b1 * self.adam_m[i] + (1.0 - b1) * g[i];
                self.adam_v[i] = b2 * self.adam_v[i] + (1.0 - b2) * g[i] * g[i];
                self.mu[i] += a * self.adam_m[i] / (self.adam_v[i].sqrt() + e);
            }
        }
        if self.cfg.sigma_alpha > 0.0 {
            let stdev = if self.cfg.rank_fitness {
                1.0
            } else {
                let var = reward.iter().map(|r| (r - b) * (r - b)).sum::<f64>() / reward.len() as f64;
                var.sqrt().max(1e-300)
            };
            let mut delta = vec![0.0; d];
            for k in 0..half {
                let rs = (reward[k] + reward[k + half]) / 2.0 - b;
                for i in 0..d {
                    let s = (eps[k][i] * eps[k][i] - self.sigma[i] * self.sigma[i]) / self.sigma[i];
                    delta[i] += rs * s;
                }
            }
            for i in 0..d {
                let change = (self.cfg.sigma_alpha * delta[i] / (2.0 * half as f64 * stdev)).clamp(
                    -self.cfg.sigma_max_change * self.sigma[i],
                    self.cfg.sigma_max_change * self.sigma[i],
                );
                self.sigma[i] += change;
            }
        }
        if self.cfg.sigma_decay < 1.0 {
            for s in self.sigma.iter_mut() {
                if *s > self.cfg.sigma_limit {
                    *s *= self.cfg.sigma_decay;
                }
            }
        }
        if self.cfg.learning_rate_decay < 1.0 && self.lr > self.cfg.learning_rate_limit {
            self.lr *= self.cfg.learning_rate_decay;
        }
        Ok(())
    }

    fn progress(&self) -> &Progress {
        self.book.progress()
    }
}
