//! Row-wise helpers for tensors whose first dimension is the batch.

use candle_core::{Device, Tensor};

/// `t` with its rows (first dimension) repeated `n` times: a one-row tensor becomes `n` rows.
pub(crate) fn repeat_rows(t: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let mut reps = vec![1; t.rank()];
    reps[0] = n;
    t.repeat(reps)
}

/// `map` as a `u32` index tensor on `device`, to pick rows with `index_select`.
pub(crate) fn row_index(map: &[usize], device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec(
        map.iter().map(|&r| r as u32).collect::<Vec<_>>(),
        map.len(),
        device,
    )
}
