//! The subcommands of the `latentevo` binary, one module each.

pub mod bench;
pub mod eval;
pub mod forward;
pub mod ideas;
pub mod inspect;
pub mod upcycle;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use latentevo_engine::{Basis, Inject, RoutingPolicy, SearchConfig, Shaping};
use latentevo_model::{load, ExpertFormat, LoadOptions, LoadedModel};
use latentevo_reward::RewardSpec;
use std::path::PathBuf;

/// A mistake in the command line (a bad flag value, an unreadable input file): the binary
/// exits with status 2, as for flags clap rejects.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Wraps a message as a [`UsageError`].
pub fn usage(message: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.to_string()))
}

/// The search settings `ideas` and `eval` share.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchFlags {
    /// Layer whose input is perturbed [default: ~27% of the depth; 8 on the default model].
    #[arg(long)]
    pub layer: Option<usize>,
    /// Dimension of the latent z.
    #[arg(long, default_value_t = 16)]
    pub latent_dim: usize,
    /// Directions of the perturbation: random, pca or experts.
    #[arg(long, default_value = "random")]
    pub basis: String,
    /// Per-dimension shaping: per-dim (by the hidden state's std) or isotropic.
    #[arg(long, default_value = "per-dim")]
    pub shaping: String,
    /// Where the perturbation is added: prompt (its positions only) or all (also every generated token).
    #[arg(long, default_value = "prompt")]
    pub inject: String,
    /// Expert routing at the perturbed layer and above: lock, lock-weights or free.
    #[arg(long, default_value = "lock")]
    pub routing: String,
    /// Reward as a weighted sum, e.g. "novelty + 0.5*fluency" [default: the engine's; in
    /// eval a prompt's own `reward` and a method's reward= take precedence].
    #[arg(long, conflicts_with = "reward_file")]
    pub reward: Option<String>,
    /// Reward from a TOML file.
    #[arg(long)]
    pub reward_file: Option<PathBuf>,
    /// Tokens per continuation (at most).
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// The seed every random choice flows from.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Ideas returned (K).
    #[arg(long, default_value_t = 6)]
    pub top_k: usize,
    /// Cosine similarity at or above which two answers count as the same idea (merged by the selector).
    #[arg(long, default_value_t = 0.85)]
    pub dedup_threshold: f64,
    /// Mask candidates whose relevance (pointwise mutual information with the prompt,
    /// when the reward measures it) is below this, as off-topic.
    #[arg(
        long,
        default_value_t = 0.0,
        allow_negative_numbers = true,
        conflicts_with = "keep_off_topic"
    )]
    pub min_relevance: f64,
    /// Keep candidates whatever their relevance (no off-topic mask).
    #[arg(long)]
    pub keep_off_topic: bool,
    /// Mask candidates of fewer words than this as too short (0 keeps all).
    #[arg(long, default_value_t = 3)]
    pub min_words: usize,
    /// Sentence-embedding model directory [default: all-MiniLM-L6-v2, materialised on first use].
    #[arg(long)]
    pub embedder: Option<PathBuf>,
}

impl SearchFlags {
    /// Writes these settings into `cfg`; a bad value is a usage error naming its flag.
    pub fn apply(&self, cfg: &mut SearchConfig) -> Result<()> {
        if let Some(layer) = self.layer {
            cfg.layer = layer;
        }
        cfg.latent_dim = self.latent_dim;
        cfg.basis = self.basis.parse::<Basis>().map_err(usage)?;
        cfg.shaping = self.shaping.parse::<Shaping>().map_err(usage)?;
        cfg.inject = self.inject.parse::<Inject>().map_err(usage)?;
        cfg.routing = self.routing.parse::<RoutingPolicy>().map_err(usage)?;
        if let Some(text) = &self.reward {
            cfg.reward = text
                .parse::<RewardSpec>()
                .map_err(|e| usage(format!("--reward: {e}")))?;
        }
        if let Some(path) = &self.reward_file {
            cfg.reward =
                RewardSpec::from_toml_file(path).map_err(|e| usage(format!("--reward-file: {e}")))?;
        }
        cfg.max_new_tokens = self.max_new_tokens;
        cfg.seed = self.seed;
        cfg.ideas = self.top_k;
        cfg.dedup_threshold = self.dedup_threshold;
        cfg.min_relevance = (!self.keep_off_topic).then_some(self.min_relevance);
        cfg.min_words = self.min_words;
        Ok(())
    }
}

/// Options shared by every command that loads a model.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Checkpoint directory, .gguf file or hub id (owner/name). Default: the built-in
    /// upcycled SmolLM2 MoE, materialised on first use.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Working dtype: f32, bf16 or f16 (default: f32 on CPU, bf16 on CUDA); or q8_0 /
    /// q4_k: f32 with the routed experts quantised to GGML Q8_0 / Q4_K (CPU only).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Hub revision (for hub ids).
    #[arg(long, default_value = "main")]
    pub revision: String,
}

impl ModelArgs {
    /// The model spec to load: the flag, or the default model's directory.
    pub fn spec(&self) -> Result<String> {
        match &self.model {
            Some(m) => Ok(m.clone()),
            None => {
                let dir = latentevo_upcycle::default_model::ensure_default_model(true)
                    .context("preparing the default model (pass --model to use another one)")?;
                Ok(dir.display().to_string())
            }
        }
    }

    /// Loading options from the flags.
    pub fn options(&self) -> Result<LoadOptions> {
        let (dtype, experts) = parse_dtype(self.dtype.as_deref())?;
        let device = parse_device(&self.device)?;
        if experts != ExpertFormat::Dense && !device.is_cpu() {
            bail!(
                "--dtype {experts}: quantised experts run on the CPU only (use --device cpu, or --dtype bf16 on {})",
                self.device
            );
        }
        Ok(LoadOptions {
            device,
            dtype,
            revision: self.revision.clone(),
            experts,
        })
    }

    /// Loads the model the flags name.
    pub fn load(&self) -> Result<LoadedModel> {
        let spec = self.spec()?;
        let options = self.options()?;
        load(&spec, &options).with_context(|| format!("loading model `{spec}`"))
    }
}

fn parse_device(text: &str) -> Result<Device> {
    match text {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0)
            .context("--device cuda: no CUDA device (was this binary built with --features cuda?)"),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => {
                Device::new_cuda(n).with_context(|| format!("--device {other}: CUDA device {n} unavailable"))
            }
            _ => bail!("--device: expected cpu, cuda or cuda:N, got `{other}`"),
        },
    }
}

/// The working dtype and the experts' format `--dtype` names.
fn parse_dtype(text: Option<&str>) -> Result<(Option<DType>, ExpertFormat)> {
    Ok(match text {
        None => (None, ExpertFormat::Dense),
        Some("f32") => (Some(DType::F32), ExpertFormat::Dense),
        Some("bf16") => (Some(DType::BF16), ExpertFormat::Dense),
        Some("f16") => (Some(DType::F16), ExpertFormat::Dense),
        Some("q8_0") => (Some(DType::F32), ExpertFormat::Q8_0),
        Some("q4_k") => (Some(DType::F32), ExpertFormat::Q4K),
        Some(other) => bail!("--dtype: expected f32, bf16, f16, q8_0 or q4_k, got `{other}`"),
    })
}
