//! `latentevo bench`: forward throughput at several population sizes.
//!
//! `scripts/bench_forward.py` runs this and the same measurement in `transformers` in one
//! go and prints the ratio.

use std::time::Instant;

use anyhow::{bail, Result};
use latentevo_model::{Hooks, LogitsMode, TokenBatch};

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
    let loaded = args.model.load()?;
    let model = &loaded.model;
    let vocab = model.config().vocab_size as u64;
    // Deterministic pseudo-random prompt (the same for every row).
    let prompt: Vec<u32> = (0..args.prompt_tokens as u64)
        .map(|i| ((i * 2654435761 + 12345) % vocab) as u32)
        .collect();
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
                serde_json::json!({"population": n, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                    "prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps})
            );
        } else {
            println!("{n:>10} {prefill_tps:>16.1} {decode_tps:>16.1}");
        }
    }
    Ok(())
}
