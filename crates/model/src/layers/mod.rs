//! The decoder's building blocks, one concern a file:
//!
//! - [`step`]: where each token of a forward call sits, and the per-call tensors (mask,
//!   RoPE tables) every layer shares;
//! - [`rotary`]: rotary position embedding with per-token positions;
//! - [`matmul`]: the `x @ w.t()` product every projection goes through;
//! - [`kv`]: one layer's key/value buffer ([`LayerKv`]);
//! - [`attention`]: grouped-query attention;
//! - [`mlp`]: the SwiGLU MLP (dense layers and experts);
//! - [`moe`]: the MoE block, with the routing policy ([`moe::Router::route`]) apart from
//!   the expert dispatch ([`moe::dispatch`]);
//! - [`decoder`]: one decoder layer (norms, attention, feed-forward, residuals).
//!
//! Each block takes its weights through a [`candle_nn::VarBuilder`] in the checkpoint's
//! own naming, and has one `forward`.

pub(crate) mod attention;
pub(crate) mod decoder;
pub(crate) mod kv;
pub(crate) mod matmul;
pub(crate) mod mlp;
pub(crate) mod moe;
pub(crate) mod rotary;
pub(crate) mod step;

pub(crate) use decoder::{DecoderLayer, FeedForward, FeedForwardReport};
pub(crate) use kv::LayerKv;
pub(crate) use matmul::{matmul_wt, Packing};
pub(crate) use moe::{LayerRoutes, MoeBlock};
pub(crate) use rotary::Rotary;
pub(crate) use step::{Step, TokenLayout};

type CResult<T> = candle_core::Result<T>;
