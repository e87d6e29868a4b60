//! One decoder layer: pre-norm attention and feed-forward, each added to the residual.

use candle_core::{Module, Tensor};
use candle_nn::{RmsNorm, VarBuilder};

use super::attention::Attention;
use super::mlp::Mlp;
use super::moe::{LayerRoutes, MoeBlock, MoeReport};
use super::{CResult, LayerKv, Step};
use crate::config::ModelConfig;
use crate::hooks::{Hooks, RoutingDrift};
use crate::model::ExpertFormat;
use crate::profile::{self, Part};

/// What one decoder layer's feed-forward part reports back, dense or MoE.
#[derive(Debug, Default)]
pub(crate) struct FeedForwardReport {
    /// The routes of real tokens (a MoE layer, when recording).
    pub routes: Option<LayerRoutes>,
    /// Per row, locked choices the free router would have changed, still on the device
    /// (a MoE layer on the device path, under a lock).
    pub changed: Option<Tensor>,
    /// The feed-forward input `[b, t, hidden]` (when capturing).
    pub ffn_input: Option<Tensor>,
}

/// The feed-forward part of a decoder layer.
#[derive(Debug, Clone)]
pub(crate) enum FeedForward {
    Dense(Mlp),
    Moe(MoeBlock),
}

/// One decoder layer: pre-norm attention and feed-forward, each added to the residual.
#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer {
    pub input_norm: RmsNorm,
    pub attention: Attention,
    pub post_attention_norm: RmsNorm,
    pub feed_forward: FeedForward,
    residual_multiplier: f64,
}

impl DecoderLayer {
    /// Loads decoder layer `layer`, a MoE layer's routed experts stored as `experts`
    /// says; `vb` points at it (`model.layers.N`).
    pub fn new(cfg: &ModelConfig, layer: usize, experts: ExpertFormat, vb: VarBuilder) -> CResult<Self> {
        let feed_forward = match cfg.moe.as_ref().filter(|_| cfg.is_moe_layer(layer)) {
            Some(moe) => FeedForward::Moe(MoeBlock::new(cfg, moe, layer, experts, vb.clone())?),
            None => FeedForward::Dense(Mlp::new(
                cfg.hidden_size,
                cfg.intermediate_size,
                ["gate_proj", "up_proj", "down_proj"],
                vb.pp("mlp"),
            )?),
        };
        Ok(DecoderLayer {
            input_norm: candle_nn::rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            attention: Attention::new(cfg, vb.pp("self_attn"))?,
            post_attention_norm: candle_nn::rms_norm(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            feed_forward,
            residual_multiplier: cfg.residual_multiplier,
        })
    }

    /// `x: [b, t, hidden]` → `[b, t, hidden]`, extending `cache` with this call's keys and
    /// values; locked tokens add to `drift`.
    pub fn forward(
        &self,
        x: &Tensor,
        step: &Step,
        cache: &mut Option<LayerKv>,
        hooks: &Hooks,
        drift: &mut RoutingDrift,
    ) -> CResult<(Tensor, FeedForwardReport)> {
        let normed = profile::time(Part::Attention, || self.input_norm.forward(x))?;
        let attn = self.attention.forward(&normed, step, cache)?;
        let x = (x + scaled(attn, self.residual_multiplier)?)?;
        let normed = profile::time(Part::Experts, || self.post_attention_norm.forward(&x))?;
        let (ff, moe) = match &self.feed_forward {
            FeedForward::Dense(mlp) => (
                profile::time(Part::Experts, || mlp.forward(&normed))?,
                MoeReport::default(),
            ),
            FeedForward::Moe(moe) => moe.forward(&normed, &step.layout, step.moe_on_device, hooks, drift)?,
        };
        let report = FeedForwardReport {
            routes: moe.routes,
            changed: moe.changed,
            ffn_input: hooks.capture_ffn_inputs.then_some(normed),
        };
        Ok(((x + scaled(ff, self.residual_multiplier)?)?, report))
    }
}

fn scaled(x: Tensor, factor: f64) -> CResult<Tensor> {
    if factor == 1.0 {
        Ok(x)
    } else {
        x * factor
    }
}
