//! The model crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
///
/// Each variant names what was wrong (file, field, tensor, layer) so that a user can fix
/// it without reading the source.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON or a field has the wrong type.
    #[error("{path}: invalid JSON: {message}")]
    ConfigSyntax {
        /// The config file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A required config field is missing.
    #[error("{path}: missing field `{field}`")]
    MissingField {
        /// The config file.
        path: PathBuf,
        /// The field name.
        field: String,
    },
    /// A config field has a value this implementation cannot use.
    #[error("{path}: field `{field}`: {message}")]
    InvalidField {
        /// The config file.
        path: PathBuf,
        /// The field name.
        field: String,
        /// Why the value is unusable.
        message: String,
    },
    /// The checkpoint's architecture is not one this crate implements.
    #[error("{path}: unsupported architecture `{architecture}`; supported: {supported}")]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// What `architectures` / `model_type` said.
        architecture: String,
        /// The list of supported architectures.
        supported: String,
    },
    /// A weight file is damaged, truncated or missing a tensor, or a tensor has the wrong shape.
    #[error("{path}: {message}")]
    Weights {
        /// The weight file (or directory for multi-file checkpoints).
        path: PathBuf,
        /// What candle / safetensors reported, including the tensor name.
        message: String,
    },
    /// `tokenizer.json` is missing or does not parse.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What the tokenizers crate said.
        message: String,
    },
    /// The operation needs a tokenizer but the checkpoint has none.
    #[error("this checkpoint has no tokenizer.json; pass token ids instead of text")]
    NoTokenizer,
    /// The checkpoint could not be found locally nor fetched from the hub.
    #[error("cannot find model `{spec}`: {message}")]
    NotFound {
        /// What the user asked for.
        spec: String,
        /// Where we looked and why it failed.
        message: String,
    },
    /// A hook or request refers to something outside the model (layer, position, expert).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A GGUF file could not be loaded.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A tensor operation failed.
    #[error("tensor operation failed: {}", candle_message(.0))]
    Candle(#[from] candle_core::Error),
}

/// The message of a candle error, without the backtrace candle attaches to its errors
/// when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` is set (frames inside candle tell a
/// user nothing; the message names what went wrong). Context and path wrappers are
/// kept, on one line: `context: message`.
///
/// ```
/// use candle_core::Error;
/// let traced = Error::WithBacktrace {
///     inner: Box::new(Error::Msg("bad shape".into())),
///     backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
/// };
/// assert!(traced.to_string().lines().count() > 1); // candle prints the frames
/// let e = traced.context("loading `w`");
/// assert_eq!(latentevo_model::error::candle_message(&e), "loading `w`: bad shape");
/// ```
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other.to_string(),
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
