//! A Gaussian evolution strategy in the style of OpenAI-ES (Salimans et al. 2017), as
//! the Diffusion Evolution benchmarks run it.

// Updates index several parallel per-coordinate arrays; index loops read clearest.
#![allow(clippy::needless_range_loop)]

use crate::error::{EvolveError, Result};
use crate::{
    check_nonzero, check_positive, randn, sanitize_worst, Bookkeeping, Population, Progress, Rng, Strategy,
};

/// The gradient-ascent update of [`OpenEs`].
#[derive(Debug, Clone, PartialEq)]
pub enum OpenEsOptimizer {
    /// Exponential-average momentum as in the benchmark code:
    /// `v <- beta v + (1 - beta) grad; theta <- theta + lr v`.
    Momentum {
        /// `beta` (0.9 in the benchmarks).
        beta: f64,
    },
    /// Adam (Kingma & Ba) ascent with bias correction.
    Adam {
        /// First-moment decay (0.9).
        beta1: f64,
        /// Second-moment decay (0.999).
        beta2: f64,
        /// Denominator epsilon (1e-8).
        epsilon: f64,
    },
}

/// Configuration of [`OpenEs`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpenEsConfig {
    /// Initial parameter `theta_0` (its length is the dimension).
    pub theta: Vec<f64>,
    /// Population size.
    pub population_size: usize,
    /// Initial per-coordinate noise std `sigma_0`.
    pub sigma: f64,
    /// Multiplicative sigma decay per generation.
    pub sigma_decay: f64,
    /// Initial learning rate.
    pub learning_rate: f64,
    /// Multiplicative learning-rate decay per generation.
    pub learning_rate_decay: f64,
    /// Update rule.
    pub optimizer: OpenEsOptimizer,
    /// Mirrored sampling (`eps`, `-eps` pairs); needs an even population size.
    pub antithetic: bool,
    /// Replace fitness by centred ranks in `[-0.5, 0.5]` before the gradient estimate
    /// (the benchmarks use raw fitness: `false`).
    pub centered_ranks: bool,
    /// Generation budget.
    pub max_generations: Option<usize>,
}

impl OpenEsConfig {
    /// The benchmark setting of the Diffusion Evolution paper for `steps` generations:
    /// `theta_0 = 0`, `sigma_0 = 4`, `lr = 1000` decaying by `1e-5^(1/steps)`, sigma
    /// decaying by `0.01^(1/steps)`, momentum 0.9, raw fitness, no mirroring.
    pub fn paper_benchmark(dim: usize, population_size: usize, steps: usize) -> Self {
        let s = steps.max(1) as f64;
        OpenEsConfig {
            theta: vec![0.0; dim],
            population_size,
            sigma: 4.0,
            sigma_decay: 0.01f64.powf(1.0 / s),
            learning_rate: 1000.0,
            learning_rate_decay: 0.00001f64.powf(1.0 / s),
            optimizer: OpenEsOptimizer::Momentum { beta: 0.9 },
            antithetic: false,
            centered_ranks: false,
            max_generations: Some(steps),
        }
    }

    /// A generic setting: `sigma_0`, lr 0.01 with Adam, centred ranks, mirroring.
    pub fn new(theta: Vec<f64>, sigma: f64, population_size: usize) -> Self {
        OpenEsConfig {
            theta,
            population_size,
            sigma,
            sigma_decay: 1.0,
            learning_rate: 0.01,
            learning_rate_decay: 1.0,
            optimizer: OpenEsOptimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
            },
            antithetic: true,
            centered_ranks: true,
            max_generations: None,
        }
    }
}

/// OpenAI-ES style Gaussian ES as an ask/tell [`Strategy`] (maximises fitness).
///
/// Samples `x_k = theta + sigma * eps_k`, `eps_k ~ N(0, I)`, estimates the gradient
/// `grad = mean_k(f_k eps_k) / sigma` (with `f` the raw or centred-rank fitness) and
/// ascends it with momentum or Adam; `sigma` and the learning rate decay
/// geometrically. Non-finite fitness is replaced by the worst finite value.
#[derive(Debug, Clone)]
pub struct OpenEs {
    cfg: OpenEsConfig,
    theta: Vec<f64>,
    sigma: f64,
    lr: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    /// Pending: the noise `eps_k` of the asked members.
    book: Bookkeeping<Vec<Vec<f64>>>,
    rng: Rng,
}

impl OpenEs {
    /// Create the strategy.
    ///
    /// # Errors
    /// [`EvolveError::InvalidConfig`] naming the bad field.
    pub fn new(cfg: OpenEsConfig, seed: u64) -> Result<Self> {
        check_nonzero("theta", cfg.theta.len())?;
        check_nonzero("population_size", cfg.population_size)?;
        check_positive("sigma", cfg.sigma)?;
        check_positive("sigma_decay", cfg.sigma_decay)?;
        check_positive("learning_rate", cfg.learning_rate)?;
        check_positive("learning_rate_decay", cfg.learning_rate_decay)?;
        if cfg.antithetic && !cfg.population_size.is_multiple_of(2) {
            return Err(EvolveError::config(
                "population_size",
                format!(
                    "must be even with antithetic sampling, got {}",
                    cfg.population_size
                ),
            ));
        }
        match cfg.optimizer {
            OpenEsOptimizer::Momentum { beta } if !(0.0..1.0).contains(&beta) => {
                return Err(EvolveError::config(
                    "beta",
                    format!("must lie in [0, 1), got {beta}"),
                ));
            }
            OpenEsOptimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                if !(0.0..1.0).contains(&beta1) {
                    return Err(EvolveError::config(
                        "beta1",
                        format!("must lie in [0, 1), got {beta1}"),
                    ));
                }
                if !(0.0..1.0).contains(&beta2) {
                    return Err(EvolveError::config(
                        "beta2",
                        format!("must lie in [0, 1), got {beta2}"),
                    ));
                }
                check_positive("epsilon", epsilon)?;
            }
            _ => {}
        }
        let d = cfg.theta.len();
        Ok(OpenEs {
            theta: cfg.theta.clone(),
            sigma: cfg.sigma,
            lr: cfg.learning_rate,
            m: vec![0.0; d],
            v: vec![0.0; d],
            book: Bookkeeping::new(cfg.max_generations),
            rng: crate::rng_from_seed(seed),
            cfg,
        })
    }

    /// Current centre `theta`.
    pub fn theta(&self) -> &[f64] {
        &self.theta
    }

    /// Current noise std.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }
}

/// Centred ranks in `[-0.5, 0.5]` (worst -> -0.5, best -> 0.5).
pub(crate) fn centered_ranks(f: &[f64]) -> Vec<f64> {
    let n = f.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let order = crate::argsort_desc(f);
    let mut r = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        r[i] = (n - 1 - rank) as f64 / (n - 1) as f64 - 0.5;
    }
    r
}

impl Strategy for OpenEs {
    fn name(&self) -> &'static str {
        "OpenES"
    }

    fn dim(&self) -> usize {
        self.theta.len()
    }

    fn population_size(&self) -> usize {
        self.cfg.population_size
    }

    fn ask(&mut self) -> Result<Population> {
        let (d, n) = (self.theta.len(), self.cfg.population_size);
        self.book.begin_ask(|| {
            let mut draw = || -> Vec<f64> { (0..d).map(|_| randn(&mut self.rng)).collect() };
            let eps: Vec<Vec<f64>> = if self.cfg.antithetic {
                (0..n / 2)
                    .map(|_| draw())
                    .flat_map(|e| {
                        let mirrored = e.iter().map(|v| -v).collect();
                        [e, mirrored]
                    })
                    .collect()
            } else {
                (0..n).map(|_| draw()).collect()
            };
            let pop = eps
                .iter()
                .map(|e| {
                    self.theta
                        .iter()
                        .zip(e)
                        .map(|(t, e)| t + self.sigma * e)
                        .collect()
                })
                .collect();
            (pop, eps)
        })
    }

    fn tell(&mut self, fitness: &[f64]) -> Result<()> {
        let (_, eps) = self.book.finish_tell(fitness)?;
        let f = if self.cfg.centered_ranks {
            centered_ranks(fitness)
        } else {
            sanitize_worst(fitness)
        };
        let d = self.theta.len();
        let n = f.len() as f64;
        let mut grad = vec![0.0; d];
        for (fk, e) in f.iter().zip(&eps) {
            grad.iter_mut().zip(e).for_each(|(g, e)| *g += fk * e);
        }
        grad.iter_mut().for_each(|g| *g /= n * self.sigma);
        match self.cfg.optimizer {
            OpenEsOptimizer::Momentum { beta } => {
                for i in 0..d {
                    self.m[i] = beta * self.m[i] + (1.0 - beta) * grad[i];
                    self.theta[i] += self.lr * self.m[i];
                }
            }
            OpenEsOptimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                let t = self.generation() as i32; // this generation included
                let a = self.lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t));
                for i in 0..d {
                    self.m[i] = beta1 * self.m[i] + (1.0 - beta1) * grad[i];
                    self.v[i] = beta2 * self.v[i] + (1.0 - beta2) * grad[i] * grad[i];
                    self.theta[i] += a * self.m[i] / (self.v[i].sqrt() + epsilon);
                }
            }
        }
        self.sigma *= self.cfg.sigma_decay;
        self.lr *= self.cfg.learning_rate_decay;
        Ok(())
    }

    fn progress(&self) -> &Progress {
        self.book.progress()
    }
}
