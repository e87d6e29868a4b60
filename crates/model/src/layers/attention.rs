//! Grouped-query attention with optional q/k norms, clipping and biases.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Linear, RmsNorm, VarBuilder};

use super::matmul::{linear, linear_maybe_bias, Packing};
use super::{CResult, LayerKv, Step};
use crate::config::{ModelConfig, QkNorm};
use crate::profile::{self, Part};

/// Queries per row up to which f32 attention on the CPU runs in
/// [`crate::kernels::attention`] (decoding steps and short prompts); longer calls keep the
/// batched products, which use the CPU better when there are many keys per query block.
const KERNEL_MAX_QUERIES: usize = 128;

/// Multi-head attention with grouped-query heads, optional q/k norms, clipping and biases.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    /// `q_proj`, `k_proj` and `v_proj` stacked: one product gives all three.
    qkv_proj: Linear,
    o_proj: Linear,
    /// The packed forms of `qkv_proj` and `o_proj`'s weights, made on first use.
    packing: [Packing; 2],
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    qk_norm: QkNorm,
    clip_qkv: Option<f64>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> CResult<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nq, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let (q_norm, k_norm) = match cfg.qk_norm {
            QkNorm::None => (None, None),
            QkNorm::PerHead => (
                Some(candle_nn::rms_norm(d, cfg.rms_norm_eps, vb.pp("q_norm"))?),
                Some(candle_nn::rms_norm(d, cfg.rms_norm_eps, vb.pp("k_norm"))?),
            ),
            QkNorm::Full => (
                Some(candle_nn::rms_norm(nq * d, cfg.rms_norm_eps, vb.pp("q_norm"))?),
                Some(candle_nn::rms_norm(nkv * d, cfg.rms_norm_eps, vb.pp("k_norm"))?),
            ),
        };
        let q = linear_maybe_bias(h, nq * d, vb.pp("q_proj"))?;
        let k = linear_maybe_bias(h, nkv * d, vb.pp("k_proj"))?;
        let v = linear_maybe_bias(h, nkv * d, vb.pp("v_proj"))?;
        let weight = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
        let bias = match (q.bias(), k.bias(), v.bias()) {
            (None, None, None) => None,
            (qb, kb, vb_) => {
                let part = |b: Option<&Tensor>, n: usize| match b {
                    Some(b) => Ok(b.clone()),
                    None => Tensor::zeros(n, weight.dtype(), weight.device()),
                };
                Some(Tensor::cat(
                    &[part(qb, nq * d)?, part(kb, nkv * d)?, part(vb_, nkv * d)?],
                    0,
                )?)
            }
        };
        Ok(Attention {
            qkv_proj: Linear::new(weight, bias),
            o_proj: linear_maybe_bias(nq * d, h, vb.pp("o_proj"))?,
            packing: Default::default(),
            q_norm,
            k_norm,
            qk_norm: cfg.qk_norm,
            clip_qkv: cfg.clip_qkv,
            num_heads: nq,
            num_kv_heads: nkv,
            head_dim: d,
            scale: cfg.attention_scale.unwrap_or(1.0 / (d as f64).sqrt()),
        })
    }

    /// `x: [b, t, hidden]`; `cache` holds past keys/values `[b, kv_heads, past, head_dim]`
    /// and is extended in place.
    pub fn forward(&self, x: &Tensor, step: &Step, cache: &mut Option<LayerKv>) -> CResult<Tensor> {
        let (q, k, v) = profile::time(Part::Attention, || self.project(x, step))?;
        let (k, v) = profile::time(Part::KvCache, || -> CResult<_> {
            match cache {
                Some(c) => c.append(&k, &v)?,
                None => *cache = Some(LayerKv::new(k, v)?),
            }
            let c = cache.as_ref().expect("just filled");
            Ok((c.keys()?, c.values()?))
        })?;
        profile::time(Part::Attention, || self.attend(&q, &k, &v, &step.mask))
    }

    /// Queries, keys and values of `x: [b, t, hidden]`, rotated: `[b, heads, t, head_dim]`.
    fn project(&self, x: &Tensor, step: &Step) -> CResult<(Tensor, Tensor, Tensor)> {
        let (cos, sin) = (&step.cos, &step.sin);
        let (b, t, _) = x.dims3()?;
        let (d, nq, nkv) = (self.head_dim, self.num_heads, self.num_kv_heads);
        let qkv = linear(&self.qkv_proj, &self.packing[0], x)?;
        if self.clip_qkv.is_none() && self.qk_norm == QkNorm::None {
            if let Some(split) = self.split_cpu(&qkv, step)? {
                return Ok(split);
            }
        }
        let mut q = qkv.narrow(2, 0, nq * d)?.contiguous()?;
        let mut k = qkv.narrow(2, nq * d, nkv * d)?.contiguous()?;
        let mut v = qkv.narrow(2, (nq + nkv) * d, nkv * d)?.contiguous()?;
        if let Some(c) = self.clip_qkv {
            q = q.clamp(-c, c)?;
            k = k.clamp(-c, c)?;
            v = v.clamp(-c, c)?;
        }
        if let (QkNorm::Full, Some(qn), Some(kn)) = (self.qk_norm, &self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let mut q = q.reshape((b, t, nq, d))?;
        let mut k = k.reshape((b, t, nkv, d))?;
        if let (QkNorm::PerHead, Some(qn), Some(kn)) = (self.qk_norm, &self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let q = q.transpose(1, 2)?.contiguous()?;
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, t, nkv, d))?.transpose(1, 2)?.contiguous()?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        Ok((q, k, v))
    }

    /// [`Attention::project`]'s split into heads and rotation in one pass
    /// ([`crate::kernels::rope`]), for f32 on the CPU without clipping or q/k norms;
    /// `None` where it does not apply.
    fn split_cpu(&self, qkv: &Tensor, step: &Step) -> CResult<Option<(Tensor, Tensor, Tensor)>> {
        use crate::kernels::{rope, with_contiguous_f32};
        if !crate::kernels::applies(qkv) || !crate::kernels::applies(&step.cos) {
            return Ok(None);
        }
        let (b, t, _) = qkv.dims3()?;
        let (d, nq, nkv) = (self.head_dim, self.num_heads, self.num_kv_heads);
        if step.cos.dims() != [b, t, d / 2] || step.sin.dims() != [b, t, d / 2] {
            candle_core::bail!(
                "RoPE tables have shape {:?}, expected [{b}, {t}, {}]",
                step.cos.dims(),
                d / 2
            );
        }
        let shape = rope::Heads {
            batch: b,
            tokens: t,
            query_heads: nq,
            kv_heads: nkv,
            head_dim: d,
        };
        let split = with_contiguous_f32(qkv, |qkv| {
            with_contiguous_f32(&step.cos, |cos| {
                with_contiguous_f32(&step.sin, |sin| rope::split_heads_rotated(qkv, cos, sin, shape))
            })
        });
        let Some((q, k, v)) = split.flatten().flatten() else {
            return Ok(None);
        };
        let device = qkv.device();
        Ok(Some((
            Tensor::from_vec(q, (b, nq, t, d), device)?,
            Tensor::from_vec(k, (b, nkv, t, d), device)?,
            Tensor::from_vec(v, (b, nkv, t, d), device)?,
        )))
    }

    /// Attention of `q: [b, heads, t, d]` over all keys/values (`[b, heads, past + t, d]`),
    /// through the output projection: `[b, t, hidden]`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> CResult<Tensor> {
        // Grouped-query attention without copying keys and values per query head: the
        // query heads sharing a kv head are stacked as rows of one matrix,
        // `[b, kv_heads, groups * t, d]` (query head `h` uses kv head `h / groups`).
        let (b, nq, t, d) = q.dims4()?;
        let (nkv, past) = (k.dim(1)?, k.dim(2)?);
        if t <= KERNEL_MAX_QUERIES && crate::kernels::applies(q) {
            if let Some(out) = self.attend_cpu(q, k, v, mask)? {
                return linear(&self.o_proj, &self.packing[1], &out);
            }
        }
        let rows = nq / nkv * t;
        let dtype = q.dtype();
        let q = q.reshape((b, nkv, rows, d))?;
        let scores = (q.matmul(&k.t()?)? * self.scale)?.reshape((b, nq, t, past))?;
        let scores = scores.to_dtype(DType::F32)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?
            .to_dtype(dtype)?
            .reshape((b, nkv, rows, past))?;
        let out = probs.matmul(v)?.reshape((b, nq, t, d))?;
        let out = out.transpose(1, 2)?.reshape((b, t, nq * d))?;
        linear(&self.o_proj, &self.packing[1], &out)
    }

    /// [`Attention::attend`]'s scores, softmax and values in the CPU kernel, reading the
    /// cache in place: `[b, t, heads * d]`, or `None` if a tensor is not f32 on the CPU.
    fn attend_cpu(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> CResult<Option<Tensor>> {
        use crate::kernels::{attention, with_f32};
        let (b, nq, t, d) = q.dims4()?;
        let (nkv, keys) = (k.dim(1)?, k.dim(2)?);
        let mask = mask.contiguous()?;
        if mask.dims() != [b, 1, t, keys] {
            candle_core::bail!(
                "attention mask has shape {:?}, expected [{b}, 1, {t}, {keys}]",
                mask.dims()
            );
        }
        let out = with_f32(q, |qd, ql| {
            with_f32(k, |kd, kl| {
                with_f32(v, |vd, vl| {
                    crate::kernels::with_contiguous_f32(&mask, |md| {
                        let view = |data, layout: &candle_core::Layout| {
                            let s = layout.stride();
                            attention::Strided {
                                data,
                                start: layout.start_offset(),
                                stride: [s[0], s[1], s[2], s[3]],
                            }
                        };
                        attention::forward(
                            view(qd, ql),
                            view(kd, kl),
                            view(vd, vl),
                            md,
                            attention::Shape {
                                batch: b,
                                query_heads: nq,
                                kv_heads: nkv,
                                queries: t,
                                keys,
                                head_dim: d,
                            },
                            self.scale as f32,
                        )
                    })
                })
            })
        });
        match out.flatten().flatten().flatten() {
            Some(out) => Ok(Some(Tensor::from_vec(out, (b, t, nq * d), q.device())?)),
            None => Ok(None),
        }
    }
}
