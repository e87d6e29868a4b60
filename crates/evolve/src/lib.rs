//! # latentevo-evolve
//!
//! Black-box optimisation of real vectors behind one ask/tell interface
//! ([`Strategy`]), in the style of evosax:
//!
//! - [`DiffEvo`]: Diffusion Evolution (Zhang, Hartl, Hazan, Levin 2024, "Diffusion
//!   Models are Evolutionary Algorithms"), faithful to the authors' reference code
//!   (`diffevo/generator.py`, `diffevo/ddim.py`), including its latent variant;
//! - [`CmaEs`]: CMA-ES with Hansen's standard defaults (optionally active);
//! - [`OpenEs`]: a Gaussian evolution strategy (OpenAI-ES style) with momentum or Adam;
//! - [`Pepg`]: parameter-exploring policy gradients (symmetric sampling);
//! - [`RandomSearch`]: uniform sampling in a box or Gaussian sampling around a mean,
//!   keeping the best members;
//! - [`MapElites`]: MAP-Elites on a grid of the parameter space.
//!
//! The crate knows nothing about what the vectors mean. **Fitness is maximised**:
//! larger is better for every strategy. A fitness value that is NaN or infinite is
//! treated as the worst possible value and counted
//! ([`Strategy::non_finite_count`]); it never causes a panic.
//!
//! Every random draw flows from the one `u64` seed given to the constructor
//! ([`rand_chacha::ChaCha8Rng`]), so a run is reproducible bit for bit.
//!
//! ```
//! use latentevo_evolve::{CmaEs, CmaEsConfig, Strategy};
//!
//! let config = CmaEsConfig { max_generations: Some(200), ..CmaEsConfig::new(vec![1.0; 3], 0.5) };
//! let mut es = CmaEs::new(config, 7).unwrap();
//! while !es.is_done() {
//!     let population = es.ask().unwrap();
//!     // any (expensive, external) fitness function; here: the negated sphere
//!     let fitness: Vec<f64> = population
//!         .iter()
//!         .map(|x| -x.iter().map(|v| v * v).sum::<f64>())
//!         .collect();
//!     es.tell(&fitness).unwrap();
//! }
//! assert!(es.best().unwrap().fitness > -1e-12);
//! ```

#![warn(missing_docs)]

pub mod benchmark;
mod bookkeeping;
mod cmaes;
mod diffevo;
mod error;
mod fitness;
mod mapelites;
mod openes;
mod pepg;
mod random;
mod schedule;
pub mod testfns;

pub use bookkeeping::{Bookkeeping, Progress};
pub use cmaes::{CmaEs, CmaEsConfig};
pub use diffevo::{ddim_step, ddpm_sigma, estimate_x0, random_projection, DiffEvo, DiffEvoConfig};
pub use error::{EvolveError, Result};
pub use fitness::FitnessMapping;
pub use mapelites::{MapElites, MapElitesConfig};
pub use openes::{OpenEs, OpenEsConfig, OpenEsOptimizer};
pub use pepg::{Pepg, PepgConfig};
pub use random::{RandomSearch, RandomSearchConfig, Sampling};
pub use schedule::AlphaSchedule;

use rand::SeedableRng;

/// A population: one `Vec<f64>` per member, all of the same dimension.
pub type Population = Vec<Vec<f64>>;

/// The random number generator every strategy uses (seeded from one `u64`).
pub type Rng = rand_chacha::ChaCha8Rng;

/// Build the crate's RNG from a seed.
pub fn rng_from_seed(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// The best individual seen so far by a strategy (over every population told).
#[derive(Debug, Clone, PartialEq)]
pub struct Best {
    /// The parameter vector, in the caller's coordinates (what `ask` returned).
    pub x: Vec<f64>,
    /// Its (raw, unmapped) fitness.
    pub fitness: f64,
}

/// The ask/tell interface shared by all strategies.
///
/// A generation is one `ask` followed by one `tell`. The caller evaluates the asked
/// population with any fitness function (maximised; NaN/inf count as worst) and passes
/// the values back in the same order. Calling `ask` twice without `tell` returns the
/// same pending population again, so a caller that lost it can recover.
///
/// An implementation embeds a [`Bookkeeping`], which does the protocol (pending
/// population, "finished" and "tell without ask" checks, generation counter, best
/// member, non-finite count): `ask` is `book.begin_ask(sample)`, `tell` starts with
/// `book.finish_tell(fitness)?` and then updates the algorithm, and
/// [`Strategy::progress`] returns `book.progress()`; the getters have defaults that
/// read it.
pub trait Strategy {
    /// Short name of the algorithm (e.g. `"DiffEvo"`).
    fn name(&self) -> &'static str;
    /// Dimension of each member.
    fn dim(&self) -> usize;
    /// Number of members `ask` returns.
    fn population_size(&self) -> usize;
    /// The population to evaluate next.
    ///
    /// # Errors
    /// [`EvolveError::Finished`] once [`Strategy::is_done`] is true.
    fn ask(&mut self) -> Result<Population>;
    /// Report the fitness (to be maximised) of the population from the last `ask`.
    ///
    /// # Errors
    /// [`EvolveError::TellWithoutAsk`], [`EvolveError::FitnessLength`], or an error of
    /// the fitness mapping; on error the strategy's state is unchanged.
    fn tell(&mut self, fitness: &[f64]) -> Result<()>;
    /// Generations, budget, best member and non-finite count: the shared
    /// [`Bookkeeping`] of the strategy. The getters below read it.
    fn progress(&self) -> &Progress;
    /// Number of completed generations (`tell` calls that succeeded).
    fn generation(&self) -> usize {
        self.progress().generation()
    }
    /// Generation budget, if the strategy has one.
    fn max_generations(&self) -> Option<usize> {
        self.progress().max_generations()
    }
    /// True once the generation budget is used up.
    fn is_done(&self) -> bool {
        self.max_generations().is_some_and(|m| self.generation() >= m)
    }
    /// Best member seen so far (by raw fitness), if any finite fitness was told.
    fn best(&self) -> Option<Best> {
        self.progress().best().cloned()
    }
    /// How many NaN/infinite fitness values have been told so far.
    fn non_finite_count(&self) -> usize {
        self.progress().non_finite_count()
    }
}

/// Drive `strategy` to completion with a per-member fitness function and return the
/// best member seen.
///
/// # Errors
/// [`EvolveError::InvalidConfig`] if the strategy has no generation budget (the loop
/// would never end), or any error of `ask`/`tell`.
///
/// ```
/// use latentevo_evolve::{optimize, RandomSearch, RandomSearchConfig};
/// let cfg = RandomSearchConfig::new(vec![-1.0; 2], vec![1.0; 2]);
/// let mut rs = RandomSearch::new(cfg, 1).unwrap();
/// let best = optimize(&mut rs, |x| -(x[0] * x[0] + x[1] * x[1])).unwrap();
/// assert!(best.fitness > -0.01);
/// ```
pub fn optimize<S, F>(strategy: &mut S, mut fitness: F) -> Result<Best>
where
    S: Strategy + ?Sized,
    F: FnMut(&[f64]) -> f64,
{
    if strategy.max_generations().is_none() {
        return Err(EvolveError::config(
            "max_generations",
            "must be set to run `optimize` (it loops until the budget is used)",
        ));
    }
    while !strategy.is_done() {
        let pop = strategy.ask()?;
        let f: Vec<f64> = pop.iter().map(|x| fitness(x)).collect();
        strategy.tell(&f)?;
    }
    strategy.best().ok_or(EvolveError::config(
        "fitness",
        "no finite fitness value was ever told",
    ))
}

/// Check a fitness slice against the expected length.
pub(crate) fn check_len(expected: usize, fitness: &[f64]) -> Result<()> {
    if fitness.len() != expected {
        return Err(EvolveError::FitnessLength {
            expected,
            got: fitness.len(),
        });
    }
    Ok(())
}

pub(crate) fn check_positive(field: &'static str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(EvolveError::config(
            field,
            format!("must be finite and > 0, got {v}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_nonzero(field: &'static str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(EvolveError::config(field, "must be >= 1, got 0"));
    }
    Ok(())
}

/// Replace non-finite values by the worst finite value (or 0 if none is finite).
pub(crate) fn sanitize_worst(fitness: &[f64]) -> Vec<f64> {
    let worst = fitness
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let worst = if worst.is_finite() { worst } else { 0.0 };
    fitness
        .iter()
        .map(|&v| if v.is_finite() { v } else { worst })
        .collect()
}

/// Indices sorted from best to worst fitness (maximisation); non-finite values last.
pub(crate) fn argsort_desc(fitness: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..fitness.len()).collect();
    let key = |v: f64| if v.is_finite() { v } else { f64::NEG_INFINITY };
    idx.sort_by(|&a, &b| key(fitness[b]).total_cmp(&key(fitness[a])).then(a.cmp(&b)));
    idx
}

/// Draw a standard normal value.
pub(crate) fn randn(rng: &mut Rng) -> f64 {
    use rand::Rng as _;
    rng.sample(rand_distr::StandardNormal)
}
