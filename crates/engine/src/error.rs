//! The engine's error type.

use thiserror::Error;

/// What can go wrong in a search.
#[derive(Debug, Error)]
pub enum EngineError {
    /// A setting is out of range; `field` is its command-line flag name.
    #[error("--{field}: {message}")]
    InvalidConfig {
        /// The setting, named as its flag (without dashes).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] latentevo_model::ModelError),
    /// The optimiser failed.
    #[error("evolution strategy: {0}")]
    Evolve(#[from] latentevo_evolve::EvolveError),
    /// A reward failed in a way that is not per-candidate (e.g. a missing input).
    #[error("reward: {0}")]
    Reward(#[from] latentevo_reward::RewardError),
    /// A tensor operation failed (its message without candle's backtrace).
    #[error("{}", latentevo_model::error::candle_message(.0))]
    Candle(#[from] candle_core::Error),
    /// Something the search needs is missing (e.g. the model has no tokenizer).
    #[error("{0}")]
    Unsupported(String),
}

impl EngineError {
    pub(crate) fn config(field: &'static str, message: impl Into<String>) -> Self {
        EngineError::InvalidConfig {
            field,
            message: message.into(),
        }
    }
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, EngineError>;
