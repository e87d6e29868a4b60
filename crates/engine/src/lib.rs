//! # latentevo-engine
//!
//! The latent-thought search: a population of latents `z` is decoded into perturbations of
//! a language model's residual stream at one layer, each perturbed model writes a
//! continuation, a reward scores it, and an evolution strategy (Diffusion Evolution by
//! default) updates the latents over several rounds. The result is a handful of diverse,
//! high-reward ideas.
//!
//! One search ([`Engine::run`]):
//! 1. **Base pass**: the prompt (through the model's chat template where it has one) and
//!    the unperturbed greedy answer, the *reference*, with the prompt's routing recorded.
//! 2. **Latent map** ([`latent`]): `delta = s * rms(h) * sqrt(d/m) * shape ⊙ (B z)` with
//!    the basis `B` random, the prompt's principal directions (`pca`), or the directions
//!    the prompt's experts read (`experts`).
//! 3. **Scale**: `s` is calibrated so that probe latents induce a target mean KL between
//!    perturbed and unperturbed next-token distributions along the reference
//!    ([`calibrate`]), cached per prompt and setting; or given.
//! 4. **Routing** at the perturbed layer and above: `lock` (the experts the unperturbed
//!    model picks for the same tokens — recorded at the prompt, and at generated tokens
//!    the choice of an unperturbed *shadow* row decoded beside each candidate), `lock-weights`,
//!    or `free`. The shadow also gives each token's base log-probability and the per-token
//!    KL at no extra pass.
//! 5. **Generation**: the population decodes together from the prompt's shared pass through
//!    the layers below L ([`latentevo_model::SharedPrompt`]).
//! 6. **Reward** ([`latentevo_reward`]), then **fitness shaping**: group-relative
//!    advantage `(r - mean) / std`; weight 0 for degenerate outputs, NaN rewards, failed
//!    reward commands, and "lethal mutations" (negative advantage with mean k3 KL above
//!    `kl_guard`).
//! 7. **Update** of the latents by the strategy; `rounds` populations in all.
//! 8. **Selection**: near-duplicates merged (embedding cosine ≥ `dedup_threshold`) and
//!    `ideas` picked by maximal marginal relevance over every unmasked candidate.
//!
//! A whole search on a tiny fixture model (its random weights write gibberish, so most
//! candidates are masked as degenerate; with the default model the same code prints
//! ideas):
//!
//! ```
//! use latentevo_engine::{Engine, StrategyKind};
//! use latentevo_reward::Embedder;
//! let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
//! let model = latentevo_model::load(&format!("{repo}/models/tiny/qwen3_moe"), &Default::default())?;
//! let embedder = Embedder::load(format!("{repo}/models/tiny/minilm").as_ref(), &candle_core::Device::Cpu)?;
//! let engine = Engine::new(model, embedder)?; // load once, search many times
//! let result = engine
//!     .search("Give me three unusual uses for a brick.")
//!     .population(8)
//!     .rounds(3)
//!     .max_new_tokens(8)
//!     .strategy(StrategyKind::DiffEvo)
//!     .on_round(|r| {
//!         println!("round {}: mean reward {:.3}, diversity {:.3}", r.stats.round, r.stats.mean_reward, r.stats.diversity);
//!         std::ops::ControlFlow::Continue(())
//!     })
//!     .run()?;
//! assert_eq!(result.candidates.len(), 24);
//! for idea in &result.ideas {
//!     println!("{:.3}  {}", idea.reward, idea.text);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod calibrate;
pub mod config;
pub mod error;
pub mod latent;
mod optimizer;
pub mod result;
mod scoring;
mod search;

pub use config::{Basis, Inject, RoutingPolicy, Scale, SearchConfig, Shaping, StrategyKind, DEFAULT_REWARD};
pub use error::{EngineError, Result};
pub use result::{Calibration, Candidate, Idea, IdeaSetStats, RoundStats, RoundTimings, SearchResult};
pub use search::{Engine, RoundReport, Search};
