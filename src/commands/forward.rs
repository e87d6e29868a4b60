//! `latentevo forward`: one forward pass, printed so it can be diffed against another
//! implementation (`scripts/reference_forward.py` prints the same JSON from transformers).

use anyhow::{bail, Context, Result};
use candle_core::IndexOp;
use latentevo_model::{Hooks, LogitsMode, TokenBatch};

use super::ModelArgs;

/// Arguments of `latentevo forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to encode (no special tokens are added).
    #[arg(long, conflicts_with = "ids")]
    pub prompt: Option<String>,
    /// Token ids, comma-separated (no tokenizer needed).
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<u32>>,
    /// Print `{"ids", "logits", "routing"}` as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only the last position's logits.
    #[arg(long)]
    pub last: bool,
}

/// Runs `latentevo forward`.
pub fn run(args: ForwardArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let ids = match (&args.prompt, &args.ids) {
        (Some(text), None) => loaded.encode(text).context("--prompt")?,
        (None, Some(ids)) => ids.clone(),
        _ => bail!("give the input as --prompt TEXT or --ids 1,2,3"),
    };
    if ids.is_empty() {
        bail!("the input has no tokens");
    }
    let model = &loaded.model;
    let hooks = Hooks {
        record_routing: true,
        ..Hooks::default()
    };
    let mode = if args.last {
        LogitsMode::Last
    } else {
        LogitsMode::All
    };
    let out = model.forward(
        &TokenBatch::left_padded(std::slice::from_ref(&ids), 0),
        &mut model.new_cache(),
        &hooks,
        mode,
    )?;
    let logits = out.logits.context("no logits")?.i(0)?;
    let logits: Vec<Vec<f32>> = if args.last {
        vec![logits.to_vec1()?]
    } else {
        logits.to_vec2()?
    };
    let routing = out.routing.map(|r| r.expert_ids(0)).unwrap_or_default();
    if args.json {
        let json = serde_json::json!({ "ids": ids, "logits": logits, "routing": routing });
        println!("{}", serde_json::to_string(&json)?);
        return Ok(());
    }
    let last = logits.last().context("no positions")?;
    let mut order: Vec<usize> = (0..last.len()).collect();
    order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
    println!("{} tokens; most likely next tokens:", ids.len());
    for &id in order.iter().take(5) {
        let text = loaded.decode(&[id as u32]).unwrap_or_default();
        println!("  {id:>7}  {:>9.4}  {text:?}", last[id]);
    }
    for (layer, positions) in model.config().moe_layers().iter().zip(&routing) {
        let last = positions.last().map(|e| format!("{e:?}")).unwrap_or_default();
        println!("  layer {layer:>3} experts at the last position: {last}");
    }
    Ok(())
}
