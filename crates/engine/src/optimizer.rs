//! The latent optimisers behind one interface: the population to evaluate next, and the
//! update from its fitness.

use latentevo_evolve::{
    AlphaSchedule, CmaEs, CmaEsConfig, DiffEvo, DiffEvoConfig, FitnessMapping, OpenEs, OpenEsConfig,
    Population, RandomSearch, RandomSearchConfig, Strategy,
};

use crate::config::{SearchConfig, StrategyKind};
use crate::error::Result;

/// A strategy over latents, run for `rounds` evaluated populations.
///
/// Diffusion Evolution with `T = rounds` schedule points takes `rounds - 1` denoising
/// steps; its last (fully denoised) population is evaluated too, so every strategy
/// evaluates exactly `rounds` populations.
pub(crate) enum Optimizer {
    Diffusion(Box<DiffEvo>),
    Other(Box<dyn Strategy>),
}

impl Optimizer {
    pub fn new(cfg: &SearchConfig, seed: u64) -> Result<Self> {
        let (m, n) = (cfg.latent_dim, cfg.population);
        Ok(match cfg.strategy {
            StrategyKind::DiffEvo => Optimizer::Diffusion(Box::new(DiffEvo::new(
                DiffEvoConfig {
                    population_size: n,
                    num_steps: cfg.rounds.max(2),
                    schedule: AlphaSchedule::Cosine,
                    mapping: FitnessMapping::Energy {
                        temperature: cfg.fitness_temperature,
                    },
                    noise: 1.0,
                    scaling: 1.0,
                    latent_dim: cfg.kernel_dim.filter(|&k| k < m),
                    ..DiffEvoConfig::new(m)
                },
                seed,
            )?)),
            StrategyKind::CmaEs => Optimizer::Other(Box::new(CmaEs::new(
                CmaEsConfig {
                    population_size: Some(n),
                    max_generations: Some(cfg.rounds),
                    ..CmaEsConfig::new(vec![0.0; m], 1.0)
                },
                seed,
            )?)),
            StrategyKind::OpenEs => Optimizer::Other(Box::new(OpenEs::new(
                OpenEsConfig {
                    max_generations: Some(cfg.rounds),
                    ..OpenEsConfig::new(vec![0.0; m], 1.0, n)
                },
                seed,
            )?)),
            StrategyKind::Random => Optimizer::Other(Box::new(RandomSearch::new(
                RandomSearchConfig {
                    population_size: n,
                    max_generations: Some(cfg.rounds),
                    ..RandomSearchConfig::gaussian(vec![0.0; m], 1.0)
                },
                seed,
            )?)),
        })
    }

    /// The population to evaluate next.
    pub fn population(&mut self) -> Result<Population> {
        Ok(match self {
            Optimizer::Diffusion(d) if d.is_done() => d.population(),
            Optimizer::Diffusion(d) => d.ask()?,
            Optimizer::Other(s) => s.ask()?,
        })
    }

    /// Updates the strategy from the fitness (maximised; NaN = weight 0) of the last
    /// population. After Diffusion Evolution's last step there is nothing left to update.
    pub fn update(&mut self, fitness: &[f64]) -> Result<()> {
        match self {
            Optimizer::Diffusion(d) if d.is_done() => Ok(()),
            Optimizer::Diffusion(d) => Ok(d.tell(fitness)?),
            Optimizer::Other(s) => Ok(s.tell(fitness)?),
        }
    }
}
