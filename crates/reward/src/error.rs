//! The error type of the reward crate.

use std::path::PathBuf;

/// What can go wrong while loading the embedder, parsing a reward spec or scoring a
/// batch. Variants name the file, field, term or position involved. Problems with one
/// candidate (a degenerate text, a failing external scorer) are not errors: they mask
/// that candidate (see [`crate::MaskReason`]).
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// Materialising the embedding model failed.
    #[error(transparent)]
    Asset(#[from] latentevo_assets::AssetError),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model file (config, pooling config, weights, tokenizer) is missing or unusable.
    #[error("{path}: {message}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor computation failed.
    #[error("embedding computation failed ({context}): {source}")]
    Candle {
        /// What was being computed.
        context: String,
        /// The candle error.
        source: candle_core::Error,
    },
    /// Tokenizing a text failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A reward spec string does not parse.
    #[error("reward spec `{spec}`, column {column}: {message}")]
    Spec {
        /// The whole spec.
        spec: String,
        /// The 1-based character column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A reward spec file does not parse.
    #[error("{path}: {message}")]
    SpecFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (naming the term and the field).
        message: String,
    },
    /// A term needs an input that was not given.
    #[error("reward term `{term}` needs {what}, which was not given")]
    MissingInput {
        /// The term, as written in a spec.
        term: String,
        /// The missing input.
        what: String,
    },
    /// Inputs that do not fit together (e.g. embeddings of different dimensions).
    #[error("{0}")]
    BadInput(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, RewardError>;

pub(crate) trait CandleContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| RewardError::Candle {
            context: context(),
            source,
        })
    }
}
