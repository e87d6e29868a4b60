//! MAP-Elites (Mouret & Clune 2015) on a grid of the parameter space itself, as the
//! Diffusion Evolution benchmarks run it.

use std::collections::HashMap;

use rand::Rng as _;

use crate::error::{EvolveError, Result};
use crate::{check_nonzero, check_positive, randn, Bookkeeping, Population, Progress, Rng, Strategy};

/// Configuration of [`MapElites`].
#[derive(Debug, Clone, PartialEq)]
pub struct MapElitesConfig {
    /// Dimension.
    pub dim: usize,
    /// Size of the initial random batch, `x ~ N(0, init_sigma^2 I)`.
    pub init_size: usize,
    /// Std of the initial batch.
    pub init_sigma: f64,
    /// Std of the Gaussian mutation of a uniformly chosen elite.
    pub mutation_sigma: f64,
    /// Cell of `x` is `round(x / cell_size)` per coordinate (ties to even).
    pub cell_size: f64,
    /// Mutants per generation after the initial batch (the benchmark uses 1, i.e. the
    /// sequential algorithm).
    pub batch_size: usize,
    /// Total evaluation budget including the initial batch.
    pub max_evaluations: usize,
}

impl MapElitesConfig {
    /// The benchmark setting: 256 initial points `~ N(0, 4^2)`, 6400 evaluations,
    /// unit cells, mutation sigma 0.5, one mutant at a time.
    pub fn paper_benchmark(dim: usize) -> Self {
        MapElitesConfig {
            dim,
            init_size: 256,
            init_sigma: 4.0,
            mutation_sigma: 0.5,
            cell_size: 1.0,
            batch_size: 1,
            max_evaluations: 6400,
        }
    }
}

/// MAP-Elites as an ask/tell [`Strategy`] (maximises fitness). The archive keeps, per
/// cell, the best member seen; a new member enters an empty cell or replaces a worse
/// elite. Non-finite fitness never enters the archive. The generation budget is
/// `1 + ceil((max_evaluations - init_size) / batch_size)`: the initial batch, then
/// batches of `batch_size` until `max_evaluations` were told.
#[derive(Debug, Clone)]
pub struct MapElites {
    cfg: MapElitesConfig,
    cells: HashMap<Vec<i64>, usize>,
    archive: Vec<(Vec<f64>, f64)>,
    book: Bookkeeping<()>,
    evaluations: usize,
    rng: Rng,
}

impl MapElites {
    /// Create the strategy.
    ///
    /// # Errors
    /// [`EvolveError::InvalidConfig`] naming the bad field.
    pub fn new(cfg: MapElitesConfig, seed: u64) -> Result<Self> {
        check_nonzero("dim", cfg.dim)?;
        check_nonzero("init_size", cfg.init_size)?;
        check_nonzero("batch_size", cfg.batch_size)?;
        check_positive("init_sigma", cfg.init_sigma)?;
        check_positive("mutation_sigma", cfg.mutation_sigma)?;
        check_positive("cell_size", cfg.cell_size)?;
        if cfg.max_evaluations < cfg.init_size {
            return Err(EvolveError::config(
                "max_evaluations",
                format!(
                    "must be >= init_size ({}), got {}",
                    cfg.init_size, cfg.max_evaluations
                ),
            ));
        }
        // the initial batch, then batches of `batch_size` (the last one cut to the
        // budget): after this many generations exactly `max_evaluations` were told
        let rest = cfg.max_evaluations - cfg.init_size;
        let max_generations = 1 + rest.div_ceil(cfg.batch_size);
        Ok(MapElites {
            cfg,
            cells: HashMap::new(),
            archive: Vec::new(),
            book: Bookkeeping::new(Some(max_generations)),
            evaluations: 0,
            rng: crate::rng_from_seed(seed),
        })
    }

    /// The archive: one `(x, fitness)` per occupied cell, in order of first occupation.
    pub fn archive(&self) -> &[(Vec<f64>, f64)] {
        &self.archive
    }

    /// Evaluations told so far.
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }

    fn cell(&self, x: &[f64]) -> Vec<i64> {
        x.iter()
            .map(|v| (v / self.cfg.cell_size).round_ties_even() as i64)
            .collect()
    }

    fn next_batch_size(&self) -> usize {
        if self.evaluations == 0 {
            self.cfg.init_size
        } else {
            self.cfg
                .batch_size
                .min(self.cfg.max_evaluations - self.evaluations)
        }
    }
}

impl Strategy for MapElites {
    fn name(&self) -> &'static str {
        "MAP-Elites"
    }

    fn dim(&self) -> usize {
        self.cfg.dim
    }

    /// Size of the next batch (the initial batch first, then `batch_size`).
    fn population_size(&self) -> usize {
        self.next_batch_size()
    }

    fn ask(&mut self) -> Result<Population> {
        let n = self.next_batch_size();
        let d = self.cfg.dim;
        self.book.begin_ask(|| {
            let pop: Population = if self.archive.is_empty() {
                // initial batch (also used again if no finite fitness was ever seen)
                (0..n)
                    .map(|_| {
                        (0..d)
                            .map(|_| randn(&mut self.rng) * self.cfg.init_sigma)
                            .collect()
                    })
                    .collect()
            } else {
                (0..n)
                    .map(|_| {
                        let k = self.rng.random_range(0..self.archive.len());
                        let parent = &self.archive[k].0;
                        parent
                            .iter()
                            .map(|p| p + randn(&mut self.rng) * self.cfg.mutation_sigma)
                            .collect()
                    })
                    .collect()
            };
            (pop, ())
        })
    }

    fn tell(&mut self, fitness: &[f64]) -> Result<()> {
        let (pop, ()) = self.book.finish_tell(fitness)?;
        self.evaluations += pop.len();
        for (x, &f) in pop.into_iter().zip(fitness) {
            if !f.is_finite() {
                continue;
            }
            let cell = self.cell(&x);
            match self.cells.get(&cell) {
                None => {
                    self.cells.insert(cell, self.archive.len());
                    self.archive.push((x, f));
                }
                Some(&i) if f > self.archive[i].1 => self.archive[i] = (x, f),
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn progress(&self) -> &Progress {
        self.book.progress()
    }
}
