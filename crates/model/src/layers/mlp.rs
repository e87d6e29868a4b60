//! The SwiGLU MLP of dense layers and of every expert.

use candle_core::Tensor;
use candle_nn::{linear_no_bias, VarBuilder};

use super::matmul::{flip, Packing};
use super::CResult;
use crate::kernels::packed::PackedWeight;

/// A SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
///
/// The gate and up weights are kept as one `[2 * inter, hidden]` tensor (the CPU kernels
/// run them as one product); `gate` and `up` are views of its two halves.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    gate_up: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    /// The packed forms of `gate_up` and `down`, made on first use.
    packing: [Packing; 2],
}

impl Mlp {
    /// Loads `gate_proj`/`up_proj`/`down_proj` (or Mixtral's `w1`/`w3`/`w2`) under `vb`.
    pub fn new(hidden: usize, inter: usize, names: [&str; 3], vb: VarBuilder) -> CResult<Self> {
        let [g, u, dn] = names;
        Self::from_weights(
            linear_no_bias(hidden, inter, vb.pp(g))?.weight(),
            linear_no_bias(hidden, inter, vb.pp(u))?.weight(),
            linear_no_bias(inter, hidden, vb.pp(dn))?.weight().clone(),
        )
    }

    /// An MLP of the given weights (`gate`, `up`: `[inter, hidden]`, `down`: `[hidden, inter]`).
    pub fn from_weights(gate: &Tensor, up: &Tensor, down: Tensor) -> CResult<Self> {
        let inter = gate.dim(0)?;
        let gate_up = Tensor::cat(&[gate, up], 0)?;
        Ok(Mlp {
            gate: gate_up.narrow(0, 0, inter)?,
            up: gate_up.narrow(0, inter, inter)?,
            gate_up,
            down: down.contiguous()?,
            packing: Default::default(),
        })
    }

    /// An MLP of a fused `[gate; up]` weight `[2 * inter, hidden]` and `down`
    /// `[hidden, inter]`, both kept as they are (views of a stack of experts, say).
    pub fn from_fused(gate_up: Tensor, down: Tensor) -> CResult<Self> {
        let inter = gate_up.dim(0)? / 2;
        Ok(Mlp {
            gate: gate_up.narrow(0, 0, inter)?,
            up: gate_up.narrow(0, inter, inter)?,
            gate_up,
            down,
            packing: Default::default(),
        })
    }

    /// The fused `[gate; up]` weight `[2 * inter, hidden]` and `down` `[hidden, inter]`.
    pub fn fused_weights(&self) -> (&Tensor, &Tensor) {
        (&self.gate_up, &self.down)
    }

    /// The packed `[gate; up]` and `down` weights for the CPU's packed product (packed on
    /// the first call); `None` where it does not run.
    pub fn packed(&self) -> Option<(&PackedWeight, &PackedWeight)> {
        Some((
            self.packing[0].get(&self.gate_up)?,
            self.packing[1].get(&self.down)?,
        ))
    }

    /// `x: [n, hidden]` → `[n, hidden]`.
    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let mut dims = x.dims().to_vec();
        let inner = *dims.last().expect("matmul of a scalar");
        let rows = x.elem_count() / inner.max(1);
        if flip(x.device(), rows) {
            // Transposed all through: [width, rows] in between, one transpose at the end.
            let xt = x.reshape((rows, inner))?.t()?;
            let gate = self.gate.matmul(&xt)?;
            let up = self.up.matmul(&xt)?;
            let y = self.down.matmul(&(candle_nn::ops::silu(&gate)? * up)?)?;
            *dims.last_mut().expect("checked") = y.dim(0)?;
            return y.t()?.contiguous()?.reshape(dims);
        }
        let gate = x.broadcast_matmul(&self.gate.t()?)?;
        let up = x.broadcast_matmul(&self.up.t()?)?;
        (candle_nn::ops::silu(&gate)? * up)?.broadcast_matmul(&self.down.t()?)
    }

    /// The three weight matrices `(gate [inter, hidden], up [inter, hidden], down [hidden, inter])`.
    pub fn weights(&self) -> (&Tensor, &Tensor, &Tensor) {
        (&self.gate, &self.up, &self.down)
    }
}
