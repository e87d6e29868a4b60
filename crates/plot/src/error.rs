//! The error type of every plotting function.

use std::io;
use std::path::PathBuf;

/// Why a plot could not be written. Every variant names the PNG that was asked for; when a
/// function returns an error, nothing was written at that path (no partial file either).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// No temporary file could be created next to `path`: usually its directory does not
    /// exist or is not writable.
    #[error("cannot write {}: cannot create a temporary file in its directory: {source}", path.display())]
    CreateFile {
        /// The PNG that was asked for.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The PNG could not be written to the temporary file, or the temporary file could not
    /// be renamed to `path` (for example because `path` is a directory).
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The PNG that was asked for.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The PNG encoder rejected the image.
    #[error("cannot encode {} as PNG: {message}", path.display())]
    Encode {
        /// The PNG that was asked for.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },
    /// Drawing failed (including the embedded font failing to load).
    #[error("cannot draw {}: {message}", path.display())]
    Draw {
        /// The PNG that was asked for.
        path: PathBuf,
        /// What the drawing library reported.
        message: String,
    },
    /// `latents` is non-empty but does not have one entry per round summary.
    #[error(
        "cannot plot {}: latents has {latents} rounds but there are {rounds} round summaries \
         (pass one latent population per round, or none)",
        path.display()
    )]
    RoundCount {
        /// The PNG that was asked for.
        path: PathBuf,
        /// How many round summaries were given.
        rounds: usize,
        /// How many rounds of latents were given.
        latents: usize,
    },
    /// Latent vectors of different lengths: PCA needs one dimension for all of them.
    #[error(
        "cannot plot {}: latents[{round}][{member}] has dimension {found}, but the first \
         latent vector has dimension {expected}",
        path.display()
    )]
    LatentDimension {
        /// The PNG that was asked for.
        path: PathBuf,
        /// Round index (into `latents`) of the offending vector.
        round: usize,
        /// Member index within that round.
        member: usize,
        /// The dimension of the first latent vector.
        expected: usize,
        /// The dimension of the offending vector.
        found: usize,
    },
    /// A series has per-point labels, but not one per point.
    #[error(
        "cannot plot {}: series {series:?} has {labels} labels for {points} points \
         (labels must be empty or one per point)",
        path.display()
    )]
    LabelCount {
        /// The PNG that was asked for.
        path: PathBuf,
        /// The series' name.
        series: String,
        /// How many labels it has.
        labels: usize,
        /// How many points it has.
        points: usize,
    },
}

/// Result alias for this crate.
pub type Result<T, E = PlotError> = std::result::Result<T, E>;
