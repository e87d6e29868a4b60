//! The `x @ w.t()` product every projection goes through, and linear layers on it.

use candle_core::{Device, Tensor};
use candle_nn::{linear_b, Linear, VarBuilder};

use super::CResult;

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
/// through [`crate::kernels::matmul`].
pub(crate) fn matmul_wt(x: &Tensor, w: &Tensor) -> CResult<Tensor> {
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

/// A linear layer through [`matmul_wt`].
pub(crate) fn linear(l: &Linear, x: &Tensor) -> CResult<Tensor> {
    let y = matmul_wt(x, l.weight())?;
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
