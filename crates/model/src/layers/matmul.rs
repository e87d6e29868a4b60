//! The `x @ w.t()` product every projection goes through, and linear layers on it.

use std::sync::{Arc, OnceLock};

use candle_core::{Device, Tensor};
use candle_nn::{linear_b, Linear, VarBuilder};

use super::CResult;
use crate::kernels::packed::PackedWeight;

/// A weight's panels for the CPU's packed product ([`crate::kernels::packed`]), made on
/// first use and shared by every clone of the layer that holds it.
///
/// Packing happens only where the packed product runs (an f32 weight on the CPU, the
/// kernels on, AVX-512F); elsewhere [`Packing::get`] gives `None` and nothing is stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Packing(Arc<OnceLock<Option<PackedWeight>>>);

impl Packing {
    /// The packed form of `w: [n, k]` (the weight this packing belongs to), packing it on
    /// the first call; `None` where the packed product does not run.
    pub fn get(&self, w: &Tensor) -> Option<&PackedWeight> {
        if !crate::kernels::packed::available() || !crate::kernels::applies(w) {
            return None;
        }
        self.0
            .get_or_init(|| {
                let (n, k) = w.dims2().ok()?;
                let view = crate::kernels::F32View::new(w)?;
                Some(PackedWeight::pack(view.as_slice(), n, k))
            })
            .as_ref()
    }
}

/// Row counts up to which `x @ w.t()` runs as `(w @ x.t()).t()` on the CPU. With few rows
/// (a decoding step, the tokens of one expert) the gemm crate is much quicker with the
/// weight as the left operand: one expert's MLP, 16 tokens, 2.5 ms -> 1.3 ms; 272 tokens,
/// 35 -> 31 ms (`benches/expert_matmul.rs`).
const FLIP_ROWS: usize = 256;

/// Whether `rows` rows of input on `device` take the flipped product.
pub(crate) fn flip(device: &Device, rows: usize) -> bool {
    device.is_cpu() && rows <= FLIP_ROWS
}

/// `x @ w.t()` for `x: [.., in]` and `w: [out, in]`: `[.., out]`. f32 on the CPU goes
/// through the packed product ([`crate::kernels::packed`]) where `packing` (the packing
/// of `w`) has panels for it, else through [`crate::kernels::matmul`].
pub(crate) fn matmul_wt(x: &Tensor, w: &Tensor, packing: Option<&Packing>) -> CResult<Tensor> {
    let mut dims = x.dims().to_vec();
    let inner = *dims.last().expect("matmul of a scalar");
    let rows = x.elem_count() / inner.max(1);
    let (out_dim, w_inner) = w.dims2()?;
    if w_inner != inner {
        candle_core::bail!("matmul_wt: input has {inner} columns but the weight {w_inner}");
    }
    *dims.last_mut().expect("checked") = out_dim;
    if crate::kernels::applies(x) {
        let x = x.contiguous()?;
        if let Some(packed) = packing.and_then(|p| p.get(w)) {
            if let Some(xv) = crate::kernels::F32View::new(&x) {
                let y = packed.matmul_parallel(xv.as_slice(), rows);
                return Tensor::from_vec(y, dims, x.device());
            }
        }
        let y = match (crate::kernels::F32View::new(&x), crate::kernels::F32View::new(w)) {
            (Some(xv), Some(wv)) => Some(crate::kernels::matmul::matmul_nt_parallel(
                xv.as_slice(),
                wv.as_slice(),
                rows,
                out_dim,
                inner,
            )),
            _ => None,
        };
        if let Some(y) = y {
            return Tensor::from_vec(y, dims, x.device());
        }
    }
    let x2 = x.reshape((rows, inner))?;
    let y = if flip(x.device(), rows) {
        w.matmul(&x2.t()?)?.t()?.contiguous()?
    } else {
        x2.matmul(&w.t()?)?
    };
    y.reshape(dims)
}

/// A linear layer through [`matmul_wt`] with its weight's `packing`.
pub(crate) fn linear(l: &Linear, packing: &Packing, x: &Tensor) -> CResult<Tensor> {
    let y = matmul_wt(x, l.weight(), Some(packing))?;
    match l.bias() {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Loads a linear layer, with a bias exactly when the checkpoint has one.
pub(crate) fn linear_maybe_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> CResult<Linear> {
    let has_bias = vb.contains_tensor("bias");
    linear_b(in_dim, out_dim, has_bias, vb)
}
