//! Fitness mappings of Diffusion Evolution (`diffevo/fitnessmapping.py`), adapted to
//! maximisation.

use crate::error::{EvolveError, Result};

/// Maps raw fitness `f` (maximised) to the non-negative weight `g >= 0` that Diffusion
/// Evolution uses as the (unnormalised) target density.
///
/// Non-finite raw values (NaN, +-inf) map to `g = 0`, the worst weight.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum FitnessMapping {
    /// `g = f`. The fitness must already be `>= 0` (as in the authors' code, which
    /// raises on negative fitness); a negative value is an error.
    #[default]
    Identity,
    /// Boltzmann weight `g = exp(f / T)`, shifted for stability:
    /// `g_i = exp((f_i - max_j f_j) / T)`, so the best member has `g = 1`.
    /// (The authors' `Energy` maps an energy `E` (minimised) as `exp(-E/T)` shifted by
    /// its maximum; with `f = -E` this is the same up to a constant factor.)
    Energy {
        /// Temperature `T > 0`; small `T` is greedy, large `T` flattens the weights.
        temperature: f64,
    },
    /// `g = (max(f, 0) / T)^p`: negative values are clamped to 0 (the authors' code
    /// would produce NaN for them).
    Power {
        /// Exponent `p > 0`.
        power: f64,
        /// Temperature `T > 0`.
        temperature: f64,
    },
}

impl FitnessMapping {
    /// Name used in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            FitnessMapping::Identity => "identity",
            FitnessMapping::Energy { .. } => "energy",
            FitnessMapping::Power { .. } => "power",
        }
    }

    /// Validate the parameters.
    ///
    /// # Errors
    /// [`EvolveError::InvalidConfig`] naming `temperature` or `power`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            FitnessMapping::Identity => Ok(()),
            FitnessMapping::Energy { temperature } => crate::check_positive("temperature", temperature),
            FitnessMapping::Power { power, temperature } => {
                crate::check_positive("power", power)?;
                crate::check_positive("temperature", temperature)
            }
        }
    }

    /// Map raw fitness values to weights `g >= 0`.
    ///
    /// # Errors
    /// [`EvolveError::NegativeFitness`] for a negative finite value under `Identity`.
    ///
    /// ```
    /// use latentevo_evolve::FitnessMapping;
    /// let g = FitnessMapping::Energy { temperature: 1.0 }.map(&[0.0, 1.0, f64::NAN]).unwrap();
    /// assert!((g[1] - 1.0).abs() < 1e-15 && (g[0] - (-1.0f64).exp()).abs() < 1e-15);
    /// assert_eq!(g[2], 0.0);
    /// ```
    pub fn map(&self, fitness: &[f64]) -> Result<Vec<f64>> {
        self.validate()?;
        match *self {
            FitnessMapping::Identity => fitness
                .iter()
                .enumerate()
                .map(|(i, &f)| {
                    if !f.is_finite() {
                        Ok(0.0)
                    } else if f < 0.0 {
                        Err(EvolveError::NegativeFitness {
                            index: i,
                            value: f,
                            mapping: "identity",
                        })
                    } else {
                        Ok(f)
                    }
                })
                .collect(),
            FitnessMapping::Energy { temperature } => {
                let max = fitness
                    .iter()
                    .copied()
                    .filter(|f| f.is_finite())
                    .fold(f64::NEG_INFINITY, f64::max);
                Ok(fitness
                    .iter()
                    .map(|&f| {
                        if f.is_finite() {
                            ((f - max) / temperature).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect())
            }
            FitnessMapping::Power { power, temperature } => Ok(fitness
                .iter()
                .map(|&f| {
                    if f.is_finite() {
                        (f.max(0.0) / temperature).powf(power)
                    } else {
                        0.0
                    }
                })
                .map(|g| if g.is_nan() { 0.0 } else { g.min(f64::MAX) })
                .collect()),
        }
    }
}
