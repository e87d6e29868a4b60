//! Measurements behind the choice of the default model: perplexity on a held-out text,
//! how much routing matters, total parameters and compute per token.
//!
//! "How much routing matters" is measured by sending every token of every MoE layer to
//! other experts — each chosen expert id `e` becomes `(e + k) mod E` (a disjoint set
//! when `E >= 2k`), weights recomputed by the router over the new ids (the routing lock
//! of the model core) — and comparing with the free pass: the mean KL divergence
//! `KL(free || rerouted)` of the next-token distributions, the share of positions whose
//! top-1 token changes, and the perplexity of the rerouted model.
//!
//! The models measured are [`crate::DenseCheckpoint::model`] and
//! [`crate::MoeCheckpoint::model`] (or any loaded [`Model`]).

use std::collections::HashMap;

use candle_core::{DType, Tensor, D};
use latentevo_model::{Hooks, LogitsMode, Model, Routing, RoutingLock, TokenBatch, TokenRoute};

use crate::dense::mean_nll;
use crate::error::{CandleContext, Result};

/// Perplexity and routing sensitivity of one model over a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Tokens scored (predicted), over all windows.
    pub tokens: usize,
    /// Mean negative log-likelihood per token (nats).
    pub nll: f64,
    /// `exp(nll)`.
    pub ppl: f64,
    /// Routing sensitivity, for MoE models with `E > k`.
    pub routing: Option<RoutingSensitivity>,
}

/// How much the output changes when tokens are sent to other experts.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingSensitivity {
    /// Mean `KL(free || rerouted)` per position, nats.
    pub kl: f64,
    /// Share of positions whose top-1 next token changes.
    pub top1_changed: f64,
    /// Perplexity with every token rerouted.
    pub ppl_rerouted: f64,
}

/// Scores `ids` in non-overlapping windows of `window` tokens; with `routing` (and a MoE
/// model), also measures routing sensitivity.
pub fn measure(model: &Model, ids: &[u32], window: usize, routing: bool) -> Result<Measurement> {
    let moe = model.config().moe.clone();
    let mut nll_sum = 0.0;
    let mut scored = 0usize;
    let (mut kl_sum, mut changed, mut positions, mut nll_rr) = (0.0, 0usize, 0usize, 0.0);
    let do_routing = routing && moe.as_ref().is_some_and(|m| m.num_experts > m.top_k);
    for chunk in ids.chunks(window.max(2)) {
        if chunk.len() < 2 {
            continue;
        }
        let batch = TokenBatch::left_padded(&[chunk.to_vec()], 0);
        let mut cache = model.new_cache();
        let hooks = Hooks {
            record_routing: do_routing,
            ..Hooks::default()
        };
        let out = model.forward(&batch, &mut cache, &hooks, LogitsMode::All)?;
        let logits = first_row(out.logits.as_ref())?;
        nll_sum += mean_nll(&logits, chunk)? * (chunk.len() - 1) as f64;
        scored += chunk.len() - 1;
        if !do_routing {
            continue;
        }
        let (e, k) = moe.as_ref().map(|m| (m.num_experts, m.top_k)).unwrap_or((1, 1));
        let free = out.routing.unwrap_or_default();
        let lock = RoutingLock::new(reroute(&free, e as u32, k as u32));
        let mut cache = model.new_cache();
        let hooks = Hooks {
            lock: Some(&lock),
            ..Hooks::default()
        };
        let out2 = model.forward(&batch, &mut cache, &hooks, LogitsMode::All)?;
        let logits2 = first_row(out2.logits.as_ref())?;
        nll_rr += mean_nll(&logits2, chunk)? * (chunk.len() - 1) as f64;
        let (kl, ch) = kl_and_top1(&logits, &logits2)?;
        kl_sum += kl;
        changed += ch;
        positions += chunk.len();
    }
    let nll = nll_sum / scored.max(1) as f64;
    Ok(Measurement {
        tokens: scored,
        nll,
        ppl: nll.exp(),
        routing: do_routing.then(|| RoutingSensitivity {
            kl: kl_sum / positions.max(1) as f64,
            top1_changed: changed as f64 / positions.max(1) as f64,
            ppl_rerouted: (nll_rr / scored.max(1) as f64).exp(),
        }),
    })
}

/// How far one model's next-token distributions are from a reference model's over the
/// same text (a quantised model against its f32 original, say).
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// Positions compared, over all windows.
    pub positions: usize,
    /// Mean `KL(reference || other)` per position, nats.
    pub kl: f64,
    /// Share of positions whose top-1 next token differs.
    pub top1_changed: f64,
}

/// Compares `other` with `reference` on `ids` in non-overlapping windows of `window`
/// tokens: both free-routed, every position of every window.
pub fn divergence(reference: &Model, other: &Model, ids: &[u32], window: usize) -> Result<Divergence> {
    let (mut kl_sum, mut changed, mut positions) = (0.0, 0usize, 0usize);
    for chunk in ids.chunks(window.max(1)) {
        let batch = TokenBatch::left_padded(&[chunk.to_vec()], 0);
        let logits = |model: &Model| -> Result<Tensor> {
            let out = model.forward(&batch, &mut model.new_cache(), &Hooks::default(), LogitsMode::All)?;
            first_row(out.logits.as_ref())
        };
        let (kl, ch) = kl_and_top1(&logits(reference)?, &logits(other)?)?;
        kl_sum += kl;
        changed += ch;
        positions += chunk.len();
    }
    Ok(Divergence {
        positions,
        kl: kl_sum / positions.max(1) as f64,
        top1_changed: changed as f64 / positions.max(1) as f64,
    })
}

fn first_row(logits: Option<&Tensor>) -> Result<Tensor> {
    let ctx = || "logits".to_string();
    let t = logits.ok_or_else(|| crate::error::UpcycleError::Options("no logits returned".into()))?;
    t.get(0).and_then(|t| t.to_dtype(DType::F32)).ctx(ctx)
}

/// Sum over positions of `KL(p || q)` and the count of positions whose argmax differs.
fn kl_and_top1(p: &Tensor, q: &Tensor) -> Result<(f64, usize)> {
    let ctx = || "KL divergence".to_string();
    let kl = latentevo_model::kl_divergence(p, q)?
        .to_dtype(DType::F64)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.to_scalar::<f64>())
        .ctx(ctx)?;
    let a: Vec<u32> = p.argmax(D::Minus1).and_then(|t| t.to_vec1()).ctx(ctx)?;
    let b: Vec<u32> = q.argmax(D::Minus1).and_then(|t| t.to_vec1()).ctx(ctx)?;
    Ok((kl, a.iter().zip(&b).filter(|(x, y)| x != y).count()))
}

/// Every expert id `e` of a recorded routing becomes `(e + k) mod E`.
pub fn reroute(free: &Routing, experts: u32, k: u32) -> Routing {
    free.map_rows(|routes| {
        routes
            .iter()
            .map(|r| TokenRoute {
                position: r.position,
                experts: r.experts.iter().map(|e| (e + k) % experts).collect(),
                weights: r.weights.clone(),
            })
            .collect()
    })
}

/// Parameter and compute accounting of a checkpoint's tensors (HF names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    /// All parameters (a tied embedding counted once).
    pub total: u64,
    /// Multiply-accumulates per token of the weight matrices a token passes through:
    /// attention projections, the chosen experts (or the dense MLP), router, and the LM
    /// head; excluding the attention scores (which depend on context length and are the
    /// same for every variant) and the embedding lookup.
    pub macs_per_token: u64,
}

/// Counts parameters and per-token compute of an HF-named checkpoint; `top_k` and
/// `experts` describe its MoE blocks (use 1, 1 for dense).
pub fn size_of(tensors: &HashMap<String, Tensor>, tied: bool, experts: usize, top_k: usize) -> Size {
    let mut total = 0u64;
    let mut macs = 0u64;
    for (name, t) in tensors {
        let n = t.elem_count() as u64;
        total += n;
        if t.rank() < 2 || name == "model.embed_tokens.weight" {
            continue;
        }
        if name.contains(".experts.") {
            // Each token uses top_k of the experts.
            macs += n * top_k as u64 / experts.max(1) as u64;
        } else {
            macs += n;
        }
    }
    if tied {
        if let Some(e) = tensors.get("model.embed_tokens.weight") {
            macs += e.elem_count() as u64;
        }
    }
    Size {
        total,
        macs_per_token: macs,
    }
}
