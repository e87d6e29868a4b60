//! `latentevo inspect MODEL`: what a checkpoint is, without running it.

use anyhow::{Context, Result};
use latentevo_model::inspect;

use super::ModelArgs;

/// Arguments of `latentevo inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Checkpoint directory, .gguf file or hub id (default: the built-in model).
    pub model: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `latentevo inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let model_args = ModelArgs {
        model: args.model,
        device: "cpu".into(),
        dtype: None,
        revision: "main".into(),
    };
    let spec = model_args.spec()?;
    let info = inspect(&spec, &model_args.options()?).with_context(|| format!("inspecting `{spec}`"))?;
    let cfg = &info.config;
    let (total, active) = cfg.parameter_counts();
    let moe = cfg.moe.as_ref();
    let summary = serde_json::json!({
        "source": info.source.display().to_string(),
        "family": cfg.family.architecture(),
        "layers": cfg.num_hidden_layers,
        "moe_layers": cfg.moe_layers(),
        "hidden_size": cfg.hidden_size,
        "attention_heads": cfg.num_attention_heads,
        "kv_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "experts": moe.map(|m| m.num_experts),
        "top_k": moe.map(|m| m.top_k),
        "expert_intermediate_size": moe.map(|m| m.expert_intermediate_size),
        "shared_expert_intermediate_size": moe.and_then(|m| m.shared_expert_intermediate_size),
        "parameters_total": total,
        "parameters_active": active,
        "vocab_size": cfg.vocab_size,
        "tokenizer_vocab": info.tokenizer_vocab,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("source          {}", info.source.display());
    println!("family          {}", cfg.family.architecture());
    println!(
        "layers          {} (MoE: {})",
        cfg.num_hidden_layers,
        cfg.moe_layers().len()
    );
    println!(
        "attention       {} heads, {} kv heads, head dim {}",
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    );
    match moe {
        Some(m) => println!(
            "experts         {} per MoE layer, top-{}, width {}{}",
            m.num_experts,
            m.top_k,
            m.expert_intermediate_size,
            m.shared_expert_intermediate_size
                .map(|s| format!(", shared expert width {s}"))
                .unwrap_or_default()
        ),
        None => println!("experts         none (dense)"),
    }
    println!(
        "parameters      {} total, {} active per token",
        human(total),
        human(active)
    );
    match info.tokenizer_vocab {
        Some(v) => println!("vocabulary      {} (model rows {})", v, cfg.vocab_size),
        None => println!("vocabulary      no tokenizer (model rows {})", cfg.vocab_size),
    }
    Ok(())
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B ({n})", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M ({n})", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K ({n})", n as f64 / 1e3),
        n => n.to_string(),
    }
}
