//! One search round, timed: the prompt's shared pass through the layers below the
//! perturbed one (`Model::run_lower_layers`), then a population of perturbed
//! candidates decoded greedily beside their unperturbed shadows, routing recorded on the
//! prompt and locked at every MoE layer (`Model::generate_shadowed`). The same round as
//! `latentevo bench --round`'s "shared prefix + batched" figure; `scripts/bench_round.py`
//! runs it beside the same round in `transformers`.
//!
//! ```sh
//! cargo bench -p latentevo-model --bench round -- --model DIR [--populations 16,64]
//!     [--prompt-tokens 64] [--new-tokens 32] [--layer L] [--repeats 3] [--experts q8_0]
//! ```
//!
//! `--experts dense|q8_0|q4_k` stores the routed experts as [`latentevo_model::ExpertFormat`]
//! says (default dense: f32).
//!
//! With `LATENTEVO_PROFILE=1`, each timed repeat also prints (stderr) its seconds per part
//! of the forward ([`latentevo_model::profile`]).
//!
//! Threads: `RAYON_NUM_THREADS` (candle's CPU kernels use rayon's pool).
//!
//! Prints one JSON object per population: best-of-`repeats` seconds of the whole round
//! (the shared prompt pass included), of its prefill and decode parts, and the
//! process's peak resident memory (`VmHWM`).

use std::time::Instant;

use candle_core::Tensor;
use latentevo_model::{
    load, ExpertFormat, GenerationConfig, Hooks, LoadOptions, LogitsMode, Perturbation, Positions,
    RoutingLock, TokenBatch,
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `latentevo` binary does.
    latentevo_model::alloc::retain_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let Some(model_path) = arg(&args, "--model") else {
        eprintln!("round bench: --model DIR is required; skipping");
        return Ok(());
    };
    let populations: Vec<usize> = arg(&args, "--populations")
        .unwrap_or_else(|| "16".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let prompt_tokens: usize = arg(&args, "--prompt-tokens").map_or(Ok(64), |s| s.parse())?;
    let new_tokens: usize = arg(&args, "--new-tokens").map_or(Ok(32), |s| s.parse())?;
    let repeats: usize = arg(&args, "--repeats").map_or(Ok(3), |s| s.parse())?;
    let experts: ExpertFormat = arg(&args, "--experts").map_or(Ok(ExpertFormat::Dense), |s| s.parse())?;
    let options = LoadOptions {
        experts,
        ..LoadOptions::default()
    };
    let loaded = load(&model_path, &options)?;
    let model = &loaded.model;
    let layers = model.num_layers();
    let layer: usize = arg(&args, "--layer").map_or(
        Ok(((layers as f64 * 0.27).round() as usize).min(layers - 1)),
        |s| s.parse(),
    )?;
    let vocab = model.config().vocab_size as u64;
    // The prompt of `latentevo bench`: deterministic pseudo-random ids.
    let prompt: Vec<u32> = (0..prompt_tokens as u64)
        .map(|i| ((i * 2654435761 + 12345) % vocab) as u32)
        .collect();
    let batch = TokenBatch::left_padded(&[prompt], 0);
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
        max_new_tokens: new_tokens,
        ..GenerationConfig::default()
    };
    let hidden = model.config().hidden_size;
    for &n in &populations {
        let (mut best, mut best_prefill, mut best_decode) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
        let mut tokens = Vec::new();
        for repeat in 0..=repeats {
            latentevo_model::profile::reset();
            let start = Instant::now();
            let shared_prompt = model.run_lower_layers(&batch, layer, false)?;
            // A fixed perturbation (seeded per row) so that every repeat decodes the same tokens.
            let delta: Vec<f32> = (0..n * hidden)
                .map(|i| (((i as u64 * 2654435761) % 1000) as f32 / 1000.0 - 0.5) * 0.1)
                .collect();
            let delta = Tensor::from_vec(delta, (n, hidden), model.device())?;
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
            let lower_seconds = start.elapsed().as_secs_f64();
            let out = model.generate_shadowed(&shared_prompt, &config, &hooks, None)?;
            let total = start.elapsed().as_secs_f64();
            if repeat > 0 {
                best = best.min(total);
                best_prefill = best_prefill.min(lower_seconds + out.prefill_seconds);
                best_decode = best_decode.min(out.decode_seconds);
            }
            if latentevo_model::profile::enabled() && repeat > 0 {
                let parts: serde_json::Map<String, serde_json::Value> = latentevo_model::profile::snapshot()
                    .into_iter()
                    .map(|(p, s)| (format!("{p:?}"), serde_json::json!(s)))
                    .collect();
                eprintln!(
                    "{}",
                    serde_json::json!({"population": n, "repeat": repeat, "seconds": total, "parts": parts})
                );
            }
            tokens = out.sequences.iter().map(|s| s.tokens.clone()).collect::<Vec<_>>();
        }
        let distinct = {
            let mut t = tokens.clone();
            t.sort();
            t.dedup();
            t.len()
        };
        println!(
            "{}",
            serde_json::json!({
                "population": n, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "layer": layer,
                "rows": 2 * n, "threads": candle_core::utils::get_num_threads(), "seconds": best,
                "prefill_seconds": best_prefill, "decode_seconds": best_decode,
                "peak_rss_mib": latentevo_model::profile::peak_rss_mib(), "distinct_continuations": distinct,
                "experts": experts.name(), "expert_mib": model.expert_bytes() as f64 / (1024.0 * 1024.0),
                "first_tokens": tokens.first(),
            })
        );
    }
    Ok(())
}
