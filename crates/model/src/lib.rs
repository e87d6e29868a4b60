//! Mixture-of-Experts decoder on candle, with the hooks latentevo's search needs.
//!
//! One generic decoder covers Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, GraniteMoE and dense
//! Llama (SmolLM2), switched by `config.json`. Checkpoints load from a local directory,
//! a Hugging Face hub id, or a GGUF file ([`load`]).
//!
//! The hooks ([`Hooks`]) work on whole batches (batch = population):
//! - [`Perturbation`]: add a vector per sequence (or per token) to the residual stream
//!   entering a layer, at chosen positions;
//! - `record_routing`: the top-k experts and weights of every MoE layer and token ([`Routing`]);
//! - [`RoutingLock`]: force recorded experts, with weights recomputed from the router or
//!   replayed, reporting the [`RoutingDrift`] of the free router;
//! - sharing the prompt's pass: [`Model::run_lower_layers`] runs the prompt through the
//!   layers below the perturbed one once, [`SharedPrompt::repeat`] shares it with the
//!   population, and [`Model::forward_upper_layers`] runs the rest with the hooks.
//!
//! ```no_run
//! use latentevo_model::{load, Hooks, LoadOptions, LogitsMode, Perturbation, Positions, TokenBatch};
//! use candle_core::Tensor;
//!
//! let loaded = load("models/tiny/mixtral", &LoadOptions::default())?;
//! let model = &loaded.model;
//! let prompt = TokenBatch::left_padded(&[loaded.encode("Give me an idea")?], 0);
//! // Share layers 0..1 of the prompt with a population of 8, perturbed at layer 1.
//! let shared = model.run_lower_layers(&prompt, 1, true)?.repeat(8)?;
//! let delta = Tensor::randn(0f32, 0.1, (8, model.config().hidden_size), model.device())?;
//! let perturb = Perturbation { layer: 1, delta, positions: Positions::All };
//! let hooks = Hooks { perturb: Some(&perturb), record_routing: true, ..Hooks::default() };
//! let (out, _cache) = model.forward_upper_layers(&shared, &hooks, LogitsMode::Last)?;
//! assert_eq!(out.logits.unwrap().dims(), &[8, model.config().vocab_size]);
//! # Ok::<(), latentevo_model::ModelError>(())
//! ```
#![warn(missing_docs)]

pub mod alloc;
pub mod batch;
pub mod cache;
pub mod chat;
pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod hooks;
mod kernels;
mod layers;
pub mod loading;
pub mod model;
pub mod profile;
mod record;
mod rows;
pub mod scoring;
pub mod shared_prompt;

pub use batch::TokenBatch;
pub use cache::KvCache;
pub use chat::ChatTemplate;
pub use config::{Family, ModelConfig, MoeConfig, QkNorm, SUPPORTED_ARCHITECTURES};
pub use error::{ModelError, Result};
pub use generate::{FinishReason, Generated, GenerationConfig, GenerationOutput, Sampling, ShadowedOutput};
pub use hooks::{
    Hooks, LayerRouting, LockWeights, Perturbation, Positions, Routing, RoutingDrift, RoutingLock, TokenRoute,
};
pub use loading::{
    inspect, load, load_dir, load_tokenizer, model_from_tensors, parse_tokenizer, random_model,
    read_safetensors_index, read_tensors, read_tokenizer_config, safetensors_files, CheckpointInfo,
    LoadOptions, LoadedModel,
};
pub use model::{ExpertFormat, ForwardOutput, LogitsMode, Model, MoePath};
pub use scoring::{gather_logprobs, kl_divergence};
pub use shared_prompt::SharedPrompt;
