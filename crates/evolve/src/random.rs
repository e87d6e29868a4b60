//! Random search: uniform sampling in a box.

use crate::error::{EvolveError, Result};
use crate::{argsort_desc, check_nonzero, Bookkeeping, Population, Progress, Rng, Strategy};
use rand::Rng as _;

/// Configuration of [`RandomSearch`].
#[derive(Debug, Clone, PartialEq)]
pub struct RandomSearchConfig {
    /// Lower corner of the sampling box (its length is the dimension).
    pub lower: Vec<f64>,
    /// Upper corner of the sampling box.
    pub upper: Vec<f64>,
    /// Samples per generation.
    pub population_size: usize,
    /// Generation budget.
    pub max_generations: Option<usize>,
}

impl RandomSearchConfig {
    /// Population 512, 25 generations.
    pub fn new(lower: Vec<f64>, upper: Vec<f64>) -> Self {
        RandomSearchConfig {
            lower,
            upper,
            population_size: 512,
            max_generations: Some(25),
        }
    }
}

/// Random search as an ask/tell [`Strategy`]: every generation samples
/// `population_size` points uniformly in the box; the strategy keeps the
/// `population_size` best points seen ([`RandomSearch::elite`]).
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
    /// [`EvolveError::InvalidConfig`] for mismatched or empty bounds, `lower >= upper`,
    /// or a zero population.
    pub fn new(cfg: RandomSearchConfig, seed: u64) -> Result<Self> {
        check_nonzero("lower", cfg.lower.len())?;
        check_nonzero("population_size", cfg.population_size)?;
        if cfg.lower.len() != cfg.upper.len() {
            return Err(EvolveError::config(
                "upper",
                format!("has {} values but lower has {}", cfg.upper.len(), cfg.lower.len()),
            ));
        }
        if cfg
            .lower
            .iter()
            .zip(&cfg.upper)
            .any(|(l, u)| !(l.is_finite() && u.is_finite() && l < u))
        {
            return Err(EvolveError::config(
                "upper",
                "must be finite and > lower in every coordinate",
            ));
        }
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
    fn name(&self) -> &'static str {
        "RandomSearch"
    }

    fn dim(&self) -> usize {
        self.cfg.lower.len()
    }

    fn population_size(&self) -> usize {
        self.cfg.population_size
    }

    fn ask(&mut self) -> Result<Population> {
        let (lo, hi, rng) = (&self.cfg.lower, &self.cfg.upper, &mut self.rng);
        self.book.begin_ask(|| {
            let pop = (0..self.cfg.population_size)
                .map(|_| lo.iter().zip(hi).map(|(l, h)| rng.random_range(*l..*h)).collect())
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
