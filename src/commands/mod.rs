//! The subcommands of the `latentevo` binary, one module each.

pub mod bench;
pub mod eval;
pub mod forward;
pub mod ideas;
pub mod inspect;
pub mod upcycle;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use latentevo_model::{load, LoadOptions, LoadedModel};

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
    /// Working dtype: f32, bf16 or f16 (default: f32 on CPU, bf16 on CUDA).
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
        Ok(LoadOptions {
            device: parse_device(&self.device)?,
            dtype: parse_dtype(self.dtype.as_deref())?,
            revision: self.revision.clone(),
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

fn parse_dtype(text: Option<&str>) -> Result<Option<DType>> {
    Ok(match text {
        None => None,
        Some("f32") => Some(DType::F32),
        Some("bf16") => Some(DType::BF16),
        Some("f16") => Some(DType::F16),
        Some(other) => bail!("--dtype: expected f32, bf16 or f16, got `{other}`"),
    })
}
