//! `latentevo bench`: forward throughput at several population sizes.
//!
//! `scripts/bench_forward.py` runs this and the same measurement in `transformers` in one
//! go and prints the ratio.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use latentevo_model::{
    profile, random_model, ExpertFormat, GenerationConfig, Hooks, LogitsMode, Model, ModelConfig, MoePath,
    Perturbation, Positions, RoutingLock, TokenBatch,
};

use super::ModelArgs;

/// Arguments of `latentevo bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Population sizes (batch sizes) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub populations: Vec<usize>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: usize,
    /// Decoding steps after the prompt.
    #[arg(long, default_value_t = 16)]
    pub new_tokens: usize,
    /// Timed repetitions per size (the best is reported); one untimed warm-up precedes them.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Print one JSON object per population size.
    #[arg(long)]
    pub json: bool,
    /// Instead: time one search round's generation (perturbation at --layer, routing
    /// locked at and above it, each candidate beside its unperturbed shadow) three ways:
    /// shared prefix + batched (what the search does), batched without the shared prefix,
    /// and one candidate at a time without it; prints the ratios.
    #[arg(long)]
    pub round: bool,
    /// Perturbed layer for --round [default: ~27% of the depth].
    #[arg(long)]
    pub layer: Option<usize>,
    /// With --round: time only the search's own way (shared prefix + batched).
    #[arg(long, requires = "round")]
    pub shared_only: bool,
    /// Instead of --model: a model of this config.json's shapes with random weights
    /// (N(0, 0.02²), norms 1), made on --device, for shapes no checkpoint here has.
    #[arg(long, conflicts_with = "model")]
    pub random_config: Option<std::path::PathBuf>,
    /// Where MoE layers route and dispatch: auto (host on the CPU, device elsewhere),
    /// host or device.
    #[arg(long, default_value = "auto")]
    pub moe_path: String,
}

/// Runs `latentevo bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.populations.is_empty()
        || args.populations.contains(&0)
        || args.prompt_tokens == 0
        || args.repeats == 0
    {
        bail!("--populations, --prompt-tokens and --repeats must be positive");
    }
    let moe_path = match args.moe_path.as_str() {
        "auto" => MoePath::Auto,
        "host" => MoePath::Host,
        "device" => MoePath::Device,
        other => {
            return Err(super::usage(format!(
                "--moe-path: expected auto, host or device, got `{other}`"
            )))
        }
    };
    let mut model = match &args.random_config {
        Some(path) => {
            let cfg = ModelConfig::from_file(path)
                .with_context(|| format!("--random-config {}", path.display()))?;
            random_model(&cfg, &args.model.options()?, 0).context("making the random-weight model")?
        }
        None => args.model.load()?.model,
    };
    if moe_path == MoePath::Device && model.expert_format() != ExpertFormat::Dense {
        return Err(super::usage(format!(
            "--moe-path device: {} experts run on the host path only (--moe-path host or auto)",
            model.expert_format()
        )));
    }
    model.set_moe_path(moe_path);
    let model = &model;
    let vocab = model.config().vocab_size as u64;
    // Deterministic pseudo-random prompt (the same for every row).
    let prompt: Vec<u32> = (0..args.prompt_tokens as u64)
        .map(|i| ((i * 2654435761 + 12345) % vocab) as u32)
        .collect();
    if args.round {
        return round(&args, model, &prompt);
    }
    if !args.json {
        println!(
            "{:>10} {:>16} {:>16}",
            "population", "prefill tok/s", "decode tok/s"
        );
    }
    for &n in &args.populations {
        let batch = TokenBatch::left_padded(&vec![prompt.clone(); n], 0);
        let (mut best_prefill, mut best_decode) = (f64::INFINITY, f64::INFINITY);
        for repeat in 0..=args.repeats {
            let mut cache = model.new_cache();
            let start = Instant::now();
            let out = model.forward(&batch, &mut cache, &Hooks::default(), LogitsMode::Last)?;
            let _ = out.logits.map(|l| l.to_vec2::<f32>()).transpose()?;
            let prefill = start.elapsed().as_secs_f64();
            let start = Instant::now();
            for step in 0..args.new_tokens {
                let tokens: Vec<u32> = (0..n)
                    .map(|r| ((r + step * 7 + 3) as u64 % vocab) as u32)
                    .collect();
                let out = model.forward(
                    &TokenBatch::column(&tokens),
                    &mut cache,
                    &Hooks::default(),
                    LogitsMode::Last,
                )?;
                let _ = out.logits.map(|l| l.to_vec2::<f32>()).transpose()?;
            }
            let decode = start.elapsed().as_secs_f64();
            if repeat > 0 {
                best_prefill = best_prefill.min(prefill);
                best_decode = best_decode.min(decode);
            }
        }
        let prefill_tps = (n * args.prompt_tokens) as f64 / best_prefill;
        let decode_tps = if args.new_tokens > 0 {
            (n * args.new_tokens) as f64 / best_decode
        } else {
            0.0
        };
        if args.json {
            println!(
                "{}",
                with_memory(
                    model,
                    serde_json::json!({"population": n, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                    "prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps})
                )
            );
        } else {
            println!("{n:>10} {prefill_tps:>16.1} {decode_tps:>16.1}");
        }
    }
    if !args.json {
        println!("{}", memory_line(model));
    }
    Ok(())
}

/// `value` (a JSON object) with the memory figures added: the routed experts' format and
/// storage, and the process's peak resident memory so far (model load included).
fn with_memory(model: &Model, mut value: serde_json::Value) -> serde_json::Value {
    if let Some(object) = value.as_object_mut() {
        object.insert("experts".into(), model.expert_format().name().into());
        object.insert("expert_mib".into(), mib(model.expert_bytes()).into());
        object.insert("peak_rss_mib".into(), profile::peak_rss_mib().into());
    }
    value
}

/// The memory figures of [`with_memory`] as one line of text.
fn memory_line(model: &Model) -> String {
    let peak = profile::peak_rss_mib().map_or("unknown".to_string(), |m| format!("{m:.0} MiB"));
    format!(
        "experts {} ({:.1} MiB); peak resident memory {peak}",
        model.expert_format(),
        mib(model.expert_bytes())
    )
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `bench --round`: one search round's generation, three ways, timed in the same run.
fn round(args: &BenchArgs, model: &Model, prompt: &[u32]) -> Result<()> {
    let layer = args
        .layer
        .unwrap_or_else(|| ((model.num_layers() as f64 * 0.27).round() as usize).min(model.num_layers() - 1));
    if layer >= model.num_layers() {
        bail!(
            "--layer {layer} is out of range: the model has {} layers",
            model.num_layers()
        );
    }
    let batch = TokenBatch::left_padded(&[prompt.to_vec()], 0);
    let record = Hooks {
        record_routing: true,
        ..Hooks::default()
    };
    let routing = model
        .forward(&batch, &mut model.new_cache(), &record, LogitsMode::None)?
        .routing
        .unwrap_or_default();
    let lock = RoutingLock::new(routing);
    let config = GenerationConfig {
        max_new_tokens: args.new_tokens,
        ..GenerationConfig::default()
    };
    let hidden = model.config().hidden_size;
    let time = |n: usize, shared_layer: usize, rows_per_call: usize| -> Result<f64> {
        let mut best = f64::INFINITY;
        for repeat in 0..=args.repeats {
            let start = Instant::now();
            for first in (0..n).step_by(rows_per_call) {
                let rows = rows_per_call.min(n - first);
                let shared_prompt = model.run_lower_layers(&batch, shared_layer, false)?;
                let delta = Tensor::randn(0f32, 0.05, (rows, hidden), model.device())?;
                let perturb = Perturbation {
                    layer,
                    delta,
                    positions: Positions::All,
                };
                let hooks = Hooks {
                    perturb: Some(&perturb),
                    lock: Some(&lock),
                    ..Hooks::default()
                };
                model.generate_shadowed(&shared_prompt, &config, &hooks, None)?;
            }
            if repeat > 0 {
                best = best.min(start.elapsed().as_secs_f64());
            }
        }
        Ok(best)
    };
    for &n in &args.populations {
        let shared = time(n, layer, n)?;
        if args.shared_only {
            if args.json {
                println!(
                    "{}",
                    with_memory(
                        model,
                        serde_json::json!({"population": n, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                        "layer": layer, "seconds_shared_batched": shared})
                    )
                );
            } else {
                println!(
                    "population {n}, prompt {} tokens, {} new tokens, layer {layer}: shared prefix + batched {shared:.3} s",
                    args.prompt_tokens, args.new_tokens
                );
            }
            continue;
        }
        let unshared = time(n, 0, n)?;
        let one_by_one = time(n, 0, 1)?;
        if args.json {
            println!(
                "{}",
                with_memory(
                    model,
                    serde_json::json!({"population": n, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                    "layer": layer, "seconds_shared_batched": shared, "seconds_unshared_batched": unshared,
                    "seconds_one_by_one": one_by_one, "prefix_reuse_gain": unshared / shared,
                    "batching_gain": one_by_one / unshared, "total_gain": one_by_one / shared})
                )
            );
        } else {
            println!(
                "population {n}, prompt {} tokens, {} new tokens, layer {layer}: shared prefix + batched {shared:.2} s; \
                 batched without the shared prefix {unshared:.2} s (x{:.2}); one by one {one_by_one:.2} s (x{:.2} of batched, x{:.2} in all)",
                args.prompt_tokens,
                args.new_tokens,
                unshared / shared,
                one_by_one / unshared,
                one_by_one / shared
            );
        }
    }
    if !args.json {
        println!("{}", memory_line(model));
    }
    Ok(())
}
