//! One layer's key/value buffer, written in place as tokens arrive.

use candle_core::Tensor;

use super::CResult;

/// One layer's cached keys and values: buffers `[b, kv_heads, capacity, head_dim]` whose
/// first `len` positions are filled, written in place as tokens arrive (no per-step copy
/// of the whole cache). Clones share the buffers; a write to a shared buffer first copies
/// it (copy on write), so a cloned cache (a [`crate::SharedPrompt`] reused by several rounds)
/// never sees another's tokens.
#[derive(Debug, Clone)]
pub(crate) struct LayerKv {
    k: Tensor,
    v: Tensor,
    len: usize,
    owner: std::sync::Arc<()>,
}

/// Growth step of a cache buffer, in positions.
const KV_GROW: usize = 64;

impl LayerKv {
    /// A cache holding exactly `k` and `v` (`[b, kv_heads, len, head_dim]`).
    pub fn new(k: Tensor, v: Tensor) -> CResult<Self> {
        let len = k.dim(2)?;
        Ok(LayerKv {
            k,
            v,
            len,
            owner: std::sync::Arc::new(()),
        })
    }

    /// The filled keys, `[b, kv_heads, len, head_dim]` (a view of the buffer).
    pub fn keys(&self) -> CResult<Tensor> {
        self.k.narrow(2, 0, self.len)
    }

    /// The filled values, `[b, kv_heads, len, head_dim]` (a view of the buffer).
    pub fn values(&self) -> CResult<Tensor> {
        self.v.narrow(2, 0, self.len)
    }

    /// Appends `k`, `v` (`[b, kv_heads, t, head_dim]`, contiguous).
    pub(crate) fn append(&mut self, k: &Tensor, v: &Tensor) -> CResult<()> {
        let t = k.dim(2)?;
        let capacity = self.k.dim(2)?;
        if self.len + t > capacity || std::sync::Arc::strong_count(&self.owner) > 1 {
            let capacity = (self.len + t).div_ceil(KV_GROW) * KV_GROW + KV_GROW;
            let grow = |buf: &Tensor| -> CResult<Tensor> {
                let (b, h, _, d) = buf.dims4()?;
                let fresh = Tensor::zeros((b, h, capacity, d), buf.dtype(), buf.device())?;
                fresh.slice_set(&buf.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                Ok(fresh)
            };
            self.k = grow(&self.k)?;
            self.v = grow(&self.v)?;
            self.owner = std::sync::Arc::new(());
        }
        self.k.slice_set(k, 2, self.len)?;
        self.v.slice_set(v, 2, self.len)?;
        self.len += t;
        Ok(())
    }
}
