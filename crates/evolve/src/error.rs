//! Typed errors of the crate.

/// Everything that can go wrong when configuring or driving a [`crate::Strategy`].
///
/// Configuration errors name the offending field, so a caller can report them
/// directly to a user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvolveError {
    /// A configuration value is out of its valid range.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// Name of the configuration field (e.g. `"population_size"`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `tell` received a fitness slice whose length differs from the population size.
    #[error("fitness has {got} values but the population has {expected} members")]
    FitnessLength {
        /// Population size that was asked.
        expected: usize,
        /// Number of fitness values received.
        got: usize,
    },
    /// A fitness mapping that requires non-negative input received a negative value
    /// (the identity mapping of Diffusion Evolution, whose weights must be >= 0).
    #[error("fitness[{index}] = {value} is negative; the `{mapping}` mapping needs fitness >= 0")]
    NegativeFitness {
        /// Index of the first offending member.
        index: usize,
        /// The offending value.
        value: f64,
        /// Name of the mapping.
        mapping: &'static str,
    },
    /// `tell` was called without a pending population from `ask`.
    #[error("`tell` called without a pending population; call `ask` first")]
    TellWithoutAsk,
    /// The strategy has used up its generation budget.
    #[error("the strategy has finished after {generations} generations")]
    Finished {
        /// Generations completed.
        generations: usize,
    },
    /// A user-supplied population or vector has the wrong shape.
    #[error("`{what}` has the wrong shape: expected {expected}, got {got}")]
    Shape {
        /// What was supplied (e.g. `"initial_population"`).
        what: &'static str,
        /// Expected shape, in words.
        expected: String,
        /// Received shape, in words.
        got: String,
    },
}

impl EvolveError {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        EvolveError::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}

/// Convenience alias.
pub type Result<T> = std::result::Result<T, EvolveError>;
