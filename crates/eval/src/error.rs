//! The evaluation's error type.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong in an evaluation.
///
/// [`EvalError::is_usage`] tells the mistakes in the command line or its input files (the
/// binary exits with status 2 for those) from failures while running (status 1).
#[derive(Debug, Error)]
pub enum EvalError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A prompt set cannot be used at all (missing, empty, duplicate ids, two sets of one
    /// name). Malformed single lines are not errors: they are reported and skipped.
    #[error("{}: {message}", path.display())]
    PromptSet {
        /// The prompt file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A method spec (`--methods`) does not parse or names an unknown method or key.
    #[error("--methods: {0}")]
    Method(String),
    /// A flag's value is unusable (`--budget`, `--population`, `--shard`, ...); `flag` is
    /// its name without dashes.
    #[error("--{flag}: {message}")]
    Argument {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The results directory holds results and `--resume` was not given.
    #[error(
        "results directory {} is not empty: pass --resume to continue the run recorded there, or pick another --out",
        dir.display()
    )]
    DirNotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// Under `--resume`, the run's configuration differs from the one in `run.json`.
    #[error(
        "{}: under --resume the run must be the one recorded here, but `{field}` differs: recorded {recorded}, now {current} (use another --out for a different run)",
        manifest.display()
    )]
    ConfigMismatch {
        /// The manifest file.
        manifest: PathBuf,
        /// The differing field, as a dotted path (e.g. `configuration.budget`).
        field: String,
        /// Its recorded value (JSON).
        recorded: String,
        /// Its value in this run (JSON).
        current: String,
    },
    /// A results file is damaged somewhere other than its last line.
    #[error("{}:{line}: {message}", path.display())]
    Results {
        /// The results file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Shards cannot be merged (different configurations, a missing or duplicated item or
    /// shard, an unfinished shard).
    #[error("merge: {0}")]
    Merge(String),
    /// A method's settings are invalid for this model (e.g. a layer out of range).
    #[error("method `{method}`: {source}")]
    MethodConfig {
        /// The method's label.
        method: String,
        /// The engine's complaint.
        source: Box<latentevo_engine::EngineError>,
    },
    /// The search failed.
    #[error("{item}: {source}")]
    Engine {
        /// The item (`set/prompt-id method`).
        item: String,
        /// The engine's error.
        source: Box<latentevo_engine::EngineError>,
    },
    /// Embedding the ideas failed.
    #[error(transparent)]
    Reward(#[from] latentevo_reward::RewardError),
    /// A plot could not be written.
    #[error(transparent)]
    Plot(#[from] latentevo_plot::PlotError),
    /// A JSON file could not be parsed or written.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

impl EvalError {
    /// Whether the error is a mistake in the command line or its input (exit status 2)
    /// rather than a failure while running.
    pub fn is_usage(&self) -> bool {
        match self {
            EvalError::PromptSet { .. }
            | EvalError::Method(_)
            | EvalError::Argument { .. }
            | EvalError::DirNotEmpty { .. }
            | EvalError::ConfigMismatch { .. }
            | EvalError::MethodConfig { .. } => true,
            EvalError::Engine { source, .. } => {
                matches!(**source, latentevo_engine::EngineError::InvalidConfig { .. })
            }
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn argument(flag: &'static str, message: impl Into<String>) -> Self {
        EvalError::Argument {
            flag,
            message: message.into(),
        }
    }
}

/// The evaluation's result type.
pub type Result<T> = std::result::Result<T, EvalError>;
