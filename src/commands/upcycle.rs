//! `latentevo upcycle`: turn a dense checkpoint (GGUF or HF directory) into a
//! Mixtral-style MoE checkpoint, or materialise the built-in default model.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use latentevo_upcycle::pipeline::parse_dtype;
use latentevo_upcycle::{run_upcycle, Method, NoiseMode, RouterInit, UpcycleOptions, UpcycleRequest};

/// Arguments of `latentevo upcycle`.
#[derive(Debug, clap::Args)]
pub struct UpcycleArgs {
    /// Dense source: a llama-family .gguf file or a Hugging Face checkpoint directory
    /// (LlamaForCausalLM / MistralForCausalLM).
    #[arg(long, value_name = "PATH", required_unless_present = "default_model")]
    pub from: Option<PathBuf>,
    /// Output checkpoint directory (written atomically).
    #[arg(long, value_name = "DIR", required_unless_present = "default_model")]
    pub out: Option<PathBuf>,
    /// `copies` (sparse upcycling: noisy copies of the MLP) or `split` (MoEfication:
    /// the MLP's neurons split into experts).
    #[arg(long, default_value = "copies")]
    pub method: String,
    /// Experts per layer.
    #[arg(long, default_value_t = 4)]
    pub experts: usize,
    /// Experts per token.
    #[arg(long, default_value_t = 2)]
    pub top_k: usize,
    /// Noise added to each expert copy (copies; see --noise-mode).
    #[arg(long, default_value_t = 0.03)]
    pub noise: f64,
    /// What --noise is relative to: `weights` (noise std relative to each weight
    /// matrix's std) or `output` (each expert's output on the calibration text deviates
    /// from the dense MLP's by that relative RMS).
    #[arg(long, default_value = "weights")]
    pub noise_mode: String,
    /// Router initialisation for copies: `kmeans` (from the calibration text) or `random`.
    #[arg(long, default_value = "kmeans")]
    pub router: String,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Calibration text for the router / neuron clustering (default: a built-in
    /// public-domain text).
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
    /// At most this many calibration tokens.
    #[arg(long, default_value_t = 2048)]
    pub calibration_tokens: usize,
    /// Storage dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Instead: materialise the built-in default model into the cache (if not yet
    /// there) and print its directory.
    #[arg(long, conflicts_with_all = ["from", "out"])]
    pub default_model: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `latentevo upcycle`.
pub fn run(args: UpcycleArgs) -> Result<()> {
    if args.default_model {
        let dir = latentevo_upcycle::default_model::ensure_default_model(!args.quiet)?;
        println!("{}", dir.display());
        return Ok(());
    }
    let (Some(from), Some(out)) = (args.from, args.out) else {
        bail!("--from and --out are required");
    };
    let method: Method = args.method.parse()?;
    let router: RouterInit = args.router.parse()?;
    let noise_mode: NoiseMode = args.noise_mode.parse()?;
    let req = UpcycleRequest {
        from: from.clone(),
        out,
        options: UpcycleOptions {
            method,
            experts: args.experts,
            top_k: args.top_k,
            noise: args.noise,
            noise_mode,
            router,
            seed: args.seed,
        },
        calibration: args.calibration,
        calibration_tokens: args.calibration_tokens,
        dtype: parse_dtype(&args.dtype)?,
        force: args.force,
    };
    let s = run_upcycle(&req, !args.quiet).with_context(|| format!("upcycling {}", from.display()))?;
    println!(
        "{}: {} layers, {} experts, top-{} ({}); parameters {:.1}M (dense {:.1}M, x{:.2}); \
         per-token compute x{:.2} of dense",
        s.out.display(),
        s.layers,
        args.experts,
        args.top_k,
        method.name(),
        s.moe_parameters as f64 / 1e6,
        s.dense_parameters as f64 / 1e6,
        s.moe_parameters as f64 / s.dense_parameters as f64,
        s.moe_macs_per_token as f64 / s.dense_macs_per_token as f64,
    );
    Ok(())
}
