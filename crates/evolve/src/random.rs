//! Random search: uniform sampling in a box, or Gaussian sampling around a mean.

use crate::error::{EvolveError, Result};
use crate::{
    argsort_desc, check_nonzero, check_positive, randn, Bookkeeping, Population, Progress, Rng, Strategy,
};
use rand::Rng as _;

/// The distribution [`RandomSearch`] draws every member from (independently, afresh
/// each generation).
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// Uniform in the box `[lower, upper)`, coordinate by coordinate.
    Uniform {
        /// Lower corner of the box (its length is the dimension).
        lower: Vec<f64>,
        /// Upper corner of the box (same length, `> lower` in every coordinate).
        upper: Vec<f64>,
    },
    /// Isotropic Gaussian `N(mean, std^2 I)`: `x_i = mean_i + std * z_i`,
    /// `z_i ~ N(0, 1)`.
    Gaussian {
        /// Centre (its length is the dimension).
        mean: Vec<f64>,
        /// Standard deviation of every coordinate (finite, `> 0`).
        std: f64,
    },
}

impl Sampling {
    /// Dimension of the samples.
    pub fn dim(&self) -> usize {
        match self {
            Sampling::Uniform { lower, .. } => lower.len(),
            Sampling::Gaussian { mean, .. } => mean.len(),
        }
    }

    /// The field that sets the dimension (`lower` or `mean`), for error messages.
    fn dim_field(&self) -> &'static str {
        match self {
            Sampling::Uniform { .. } => "lower",
            Sampling::Gaussian { .. } => "mean",
        }
    }

    /// Check the parameters (a non-empty dimension is checked by the caller).
    fn validate(&self) -> Result<()> {
        match self {
            Sampling::Uniform { lower, upper } => {
                if lower.len() != upper.len() {
                    return Err(EvolveError::config(
                        "upper",
                        format!("has {} values but lower has {}", upper.len(), lower.len()),
                    ));
                }
                if lower
                    .iter()
                    .zip(upper)
                    .any(|(l, u)| !(l.is_finite() && u.is_finite() && l < u))
                {
                    return Err(EvolveError::config(
                        "upper",
                        "must be finite and > lower in every coordinate",
                    ));
                }
                Ok(())
            }
            Sampling::Gaussian { mean, std } => {
                if mean.iter().any(|v| !v.is_finite()) {
                    return Err(EvolveError::config("mean", "must be finite in every coordinate"));
                }
                check_positive("std", *std)
            }
        }
    }

    /// Draw one member.
    fn sample(&self, rng: &mut Rng) -> Vec<f64> {
        match self {
            Sampling::Uniform { lower, upper } => lower
                .iter()
                .zip(upper)
                .map(|(l, h)| rng.random_range(*l..*h))
                .collect(),
            Sampling::Gaussian { mean, std } => mean.iter().map(|m| m + std * randn(rng)).collect(),
        }
    }
}

/// Configuration of [`RandomSearch`].
#[derive(Debug, Clone, PartialEq)]
pub struct RandomSearchConfig {
    /// The sampling distribution.
    pub sampling: Sampling,
    /// Samples per generation.
    pub population_size: usize,
    /// Generation budget.
    pub max_generations: Option<usize>,
}

impl RandomSearchConfig {
    /// Uniform sampling in the box `[lower, upper)`; population 512, 25 generations.
    pub fn new(lower: Vec<f64>, upper: Vec<f64>) -> Self {
        Self::with_sampling(Sampling::Uniform { lower, upper })
    }

    /// Gaussian sampling `N(mean, std^2 I)` (the "random latents" baseline);
    /// population 512, 25 generations.
    ///
    /// ```
    /// use latentevo_evolve::{RandomSearch, RandomSearchConfig, Strategy};
    /// let cfg = RandomSearchConfig { population_size: 4, ..RandomSearchConfig::gaussian(vec![0.0; 8], 0.5) };
    /// let mut rs = RandomSearch::new(cfg, 7).unwrap();
    /// let pop = rs.ask().unwrap();
    /// assert_eq!((pop.len(), pop[0].len()), (4, 8));
    /// ```
    pub fn gaussian(mean: Vec<f64>, std: f64) -> Self {
        Self::with_sampling(Sampling::Gaussian { mean, std })
    }

    fn with_sampling(sampling: Sampling) -> Self {
        RandomSearchConfig {
            sampling,
            population_size: 512,
            max_generations: Some(25),
        }
    }
}

/// Random search as an ask/tell [`Strategy`]: every generation draws
/// `population_size` fresh points from the [`Sampling`] distribution (uniform in a
/// box, or Gaussian around a mean); the strategy keeps the `population_size` best
/// points seen ([`RandomSearch::elite`]).
#[derive(Debug, Clone)]
pub struct RandomSearch {
    cfg: RandomSearchConfig,
    book: Bookkeeping<()>,
    elite: Vec<(Vec<f64>, f64)>,
    rng: Rng,
}

impl RandomSearch {
    /// Create the strategy.
    ///
    /// # Errors
    /// [`EvolveError::InvalidConfig`] naming the field: `lower` (empty), `upper`
    /// (length differs from `lower`, or not finite and `> lower` everywhere), `mean`
    /// (empty or not finite), `std` (not finite and `> 0`), `population_size` (zero).
    pub fn new(cfg: RandomSearchConfig, seed: u64) -> Result<Self> {
        check_nonzero(cfg.sampling.dim_field(), cfg.sampling.dim())?;
        check_nonzero("population_size", cfg.population_size)?;
        cfg.sampling.validate()?;
        Ok(RandomSearch {
            book: Bookkeeping::new(cfg.max_generations),
            cfg,
            elite: Vec::new(),
            rng: crate::rng_from_seed(seed),
        })
    }

    /// The best points seen (at most `population_size`), best first, with fitness.
    pub fn elite(&self) -> &[(Vec<f64>, f64)] {
        &self.elite
    }
}

impl Strategy for RandomSearch {
    /// `"RandomSearch"` (uniform) or `"GaussianRandomSearch"`.
    fn name(&self) -> &'static str {
        match self.cfg.sampling {
            Sampling::Uniform { .. } => "RandomSearch",
            Sampling::Gaussian { .. } => "GaussianRandomSearch",
        }
    }

    fn dim(&self) -> usize {
        self.cfg.sampling.dim()
    }

    fn population_size(&self) -> usize {
        self.cfg.population_size
    }

    fn ask(&mut self) -> Result<Population> {
        self.book.begin_ask(|| {
            let pop = (0..self.cfg.population_size)
                .map(|_| self.cfg.sampling.sample(&mut self.rng))
                .collect();
            (pop, ())
        })
    }

    fn tell(&mut self, fitness: &[f64]) -> Result<()> {
        let (pop, ()) = self.book.finish_tell(fitness)?;
        let mut all: Vec<(Vec<f64>, f64)> = std::mem::take(&mut self.elite);
        all.extend(
            pop.into_iter()
                .zip(fitness.iter().copied())
                .filter(|(_, f)| f.is_finite()),
        );
        let f: Vec<f64> = all.iter().map(|(_, f)| *f).collect();
        let order = argsort_desc(&f);
        let mut slots: Vec<Option<(Vec<f64>, f64)>> = all.into_iter().map(Some).collect();
        self.elite = order
            .into_iter()
            .take(self.cfg.population_size)
            .filter_map(|i| slots[i].take())
            .collect();
        Ok(())
    }

    fn progress(&self) -> &Progress {
        self.book.progress()
    }
}
