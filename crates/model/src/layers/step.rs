//! Where each token of a forward call sits, and the per-call tensors every layer shares.

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::rows::repeat_rows;

/// Where each token of a forward call sits: its row, RoPE position and whether it is real.
#[derive(Debug, Clone)]
pub(crate) struct TokenLayout {
    pub batch: usize,
    pub seq: usize,
    /// `[batch * seq]`, row-major.
    pub positions: Vec<usize>,
    /// `[batch * seq]`: false for padding.
    pub valid: Vec<bool>,
}

impl TokenLayout {
    /// The flat index of token `t` of row `row`.
    pub(crate) fn index(&self, row: usize, t: usize) -> usize {
        row * self.seq + t
    }
}

/// Per-call tensors shared by all layers: token layout, attention mask and RoPE tables.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub layout: TokenLayout,
    /// Additive attention mask `[b, 1, t, past + t]`.
    pub mask: Tensor,
    /// RoPE tables `[b, t, head_dim / 2]`.
    pub cos: Tensor,
    pub sin: Tensor,
    /// Whether MoE layers route and dispatch on the device ([`crate::MoePath`]).
    pub moe_on_device: bool,
}

impl Step {
    /// The step of rows `0..n` alone.
    pub(crate) fn first_rows(&self, n: usize) -> Result<Step> {
        let layout = &self.layout;
        let tokens = n * layout.seq;
        Ok(Step {
            layout: TokenLayout {
                batch: n,
                seq: layout.seq,
                positions: layout.positions[..tokens].to_vec(),
                valid: layout.valid[..tokens].to_vec(),
            },
            mask: self.mask.narrow(0, 0, n)?,
            cos: self.cos.narrow(0, 0, n)?,
            sin: self.sin.narrow(0, 0, n)?,
            moe_on_device: self.moe_on_device,
        })
    }

    /// This one-row step copied to `n` rows (a population sharing a prompt).
    pub(crate) fn repeat(&self, n: usize) -> Result<Step> {
        let layout = &self.layout;
        if layout.batch != 1 {
            return Err(ModelError::InvalidRequest(
                "only a one-row shared prompt can be repeated".into(),
            ));
        }
        Ok(Step {
            layout: TokenLayout {
                batch: n,
                seq: layout.seq,
                positions: layout.positions.repeat(n),
                valid: layout.valid.repeat(n),
            },
            mask: repeat_rows(&self.mask, n)?,
            cos: repeat_rows(&self.cos, n)?,
            sin: repeat_rows(&self.sin, n)?,
            moe_on_device: self.moe_on_device,
        })
    }
}
