//! The decoder's building blocks: rotary embedding, attention, dense MLP and MoE block.
//!
//! Each block takes its weights through a [`VarBuilder`] in the checkpoint's own naming,
//! and has one `forward`.

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{linear_b, linear_no_bias, Linear, RmsNorm, VarBuilder};

use crate::config::{Family, Llama3RopeScaling, ModelConfig, MoeConfig, QkNorm};
use crate::hooks::{Hooks, LockWeights, RoutingDrift, TokenRoute};
use crate::profile::{self, Part};

type CResult<T> = candle_core::Result<T>;

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
    fn index(&self, row: usize, t: usize) -> usize {
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
}

/// Rotary position embedding with per-token positions (so left-padded rows rotate correctly).
#[derive(Debug, Clone)]
pub(crate) struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    pub fn new(cfg: &ModelConfig) -> Self {
        let d = cfg.head_dim;
        let mut inv_freq: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / d as f32))
            .collect();
        if let Some(s) = cfg.rope_llama3 {
            inv_freq = inv_freq.into_iter().map(|f| llama3_frequency(f, &s)).collect();
        }
        Rotary { inv_freq }
    }

    /// `(cos, sin)`, each `[batch, seq, head_dim / 2]`.
    pub fn cos_sin(&self, layout: &TokenLayout, device: &Device, dtype: DType) -> CResult<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(layout.positions.len() * half);
        for &p in &layout.positions {
            angles.extend(self.inv_freq.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (layout.batch, layout.seq, half), device)?;
        Ok((angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?))
    }
}

fn llama3_frequency(freq: f32, s: &Llama3RopeScaling) -> f32 {
    let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
    let low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    if wavelen < high_freq_wavelen {
        freq
    } else if wavelen > low_freq_wavelen {
        (freq as f64 / s.factor) as f32
    } else {
        let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
            / (s.high_freq_factor - s.low_freq_factor);
        ((1.0 - smooth) * freq as f64 / s.factor + smooth * freq as f64) as f32
    }
}

/// One layer's cached keys and values: buffers `[b, kv_heads, capacity, head_dim]` whose
/// first `len` positions are filled, written in place as tokens arrive (no per-step copy
/// of the whole cache). Clones share the buffers; a write to a shared buffer first copies
/// it (copy on write), so a cloned cache (a [`crate::Prefix`] reused by several rounds)
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
    fn append(&mut self, k: &Tensor, v: &Tensor) -> CResult<()> {
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

/// Multi-head attention with grouped-query heads, optional q/k norms, clipping and biases.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    qk_norm: QkNorm,
    clip_qkv: Option<f64>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
}

/// Row counts up to which `x @ w.t()` runs as `(w @ x.t()).t()` on the CPU. With few rows
/// (a decoding step, the tokens of one expert) the gemm crate is much quicker with the
/// weight as the left operand: one expert's MLP, 16 tokens, 2.5 ms -> 1.3 ms; 272 tokens,
/// 35 -> 31 ms (`benches/expert_matmul.rs`).
const FLIP_ROWS: usize = 256;

/// Whether `rows` rows of input on `device` take the flipped product.
fn flip(device: &Device, rows: usize) -> bool {
    device.is_cpu() && rows <= FLIP_ROWS
}

/// `x @ w.t()` for `x: [.., in]` and `w: [out, in]`: `[.., out]`.
pub(crate) fn matmul_wt(x: &Tensor, w: &Tensor) -> CResult<Tensor> {
    let mut dims = x.dims().to_vec();
    let inner = *dims.last().expect("matmul of a scalar");
    let rows = x.elem_count() / inner.max(1);
    let x2 = x.reshape((rows, inner))?;
    let y = if flip(x.device(), rows) {
        w.matmul(&x2.t()?)?.t()?.contiguous()?
    } else {
        x2.matmul(&w.t()?)?
    };
    *dims.last_mut().expect("checked") = w.dim(0)?;
    y.reshape(dims)
}

/// A linear layer through [`matmul_wt`].
fn linear(l: &Linear, x: &Tensor) -> CResult<Tensor> {
    let y = matmul_wt(x, l.weight())?;
    match l.bias() {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Loads a linear layer, with a bias exactly when the checkpoint has one.
fn linear_maybe_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> CResult<Linear> {
    let has_bias = vb.contains_tensor("bias");
    linear_b(in_dim, out_dim, has_bias, vb)
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
        Ok(Attention {
            q_proj: linear_maybe_bias(h, nq * d, vb.pp("q_proj"))?,
            k_proj: linear_maybe_bias(h, nkv * d, vb.pp("k_proj"))?,
            v_proj: linear_maybe_bias(h, nkv * d, vb.pp("v_proj"))?,
            o_proj: linear_maybe_bias(nq * d, h, vb.pp("o_proj"))?,
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
        let mut q = linear(&self.q_proj, x)?;
        let mut k = linear(&self.k_proj, x)?;
        let mut v = linear(&self.v_proj, x)?;
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

    /// Attention of `q: [b, heads, t, d]` over all keys/values (`[b, heads, past + t, d]`),
    /// through the output projection: `[b, t, hidden]`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> CResult<Tensor> {
        // Grouped-query attention without copying keys and values per query head: the
        // query heads sharing a kv head are stacked as rows of one matrix,
        // `[b, kv_heads, groups * t, d]` (query head `h` uses kv head `h / groups`).
        let (b, nq, t, d) = q.dims4()?;
        let (nkv, past) = (k.dim(1)?, k.dim(2)?);
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
        linear(&self.o_proj, &out)
    }
}

/// A SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

impl Mlp {
    /// Loads `gate_proj`/`up_proj`/`down_proj` (or Mixtral's `w1`/`w3`/`w2`) under `vb`.
    pub fn new(hidden: usize, inter: usize, names: [&str; 3], vb: VarBuilder) -> CResult<Self> {
        let [g, u, dn] = names;
        Ok(Mlp {
            gate: linear_no_bias(hidden, inter, vb.pp(g))?.weight().clone(),
            up: linear_no_bias(hidden, inter, vb.pp(u))?.weight().clone(),
            down: linear_no_bias(inter, hidden, vb.pp(dn))?.weight().clone(),
        })
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

/// What one MoE forward call reports back.
#[derive(Debug, Default)]
pub(crate) struct MoeReport {
    /// Per row, the routes of real tokens (when recording).
    pub routes: Option<Vec<Vec<TokenRoute>>>,
    /// The feed-forward input `[b, t, hidden]` (when capturing).
    pub ffn_input: Option<Tensor>,
}

/// A sparse Mixture-of-Experts block: router, routed experts, optional shared expert.
#[derive(Debug, Clone)]
pub(crate) struct MoeBlock {
    layer: usize,
    router: Tensor,
    experts: Vec<Mlp>,
    shared: Option<(Mlp, Tensor)>,
    top_k: usize,
    renormalize: bool,
}

impl MoeBlock {
    /// Loads the block of decoder layer `layer`; `vb` points at the layer (`model.layers.N`).
    pub fn new(cfg: &ModelConfig, moe: &MoeConfig, layer: usize, vb: VarBuilder) -> CResult<Self> {
        let (h, e, i) = (cfg.hidden_size, moe.num_experts, moe.expert_intermediate_size);
        let (router, experts) = match cfg.family {
            Family::Mixtral => {
                let vb = vb.pp("block_sparse_moe");
                let router = vb.get((e, h), "gate.weight")?;
                let experts = (0..e)
                    .map(|x| Mlp::new(h, i, ["w1", "w3", "w2"], vb.pp("experts").pp(x)))
                    .collect::<CResult<_>>()?;
                (router, experts)
            }
            Family::GraniteMoe => {
                let vb = vb.pp("block_sparse_moe");
                let router = vb.get((e, h), "router.layer.weight")?;
                let input = vb.get((e, 2 * i, h), "input_linear.weight")?;
                let output = vb.get((e, h, i), "output_linear.weight")?;
                let experts = (0..e)
                    .map(|x| {
                        let fused = input.i(x)?;
                        Ok(Mlp {
                            gate: fused.narrow(0, 0, i)?.contiguous()?,
                            up: fused.narrow(0, i, i)?.contiguous()?,
                            down: output.i(x)?.contiguous()?,
                        })
                    })
                    .collect::<CResult<_>>()?;
                (router, experts)
            }
            Family::Qwen2Moe | Family::Qwen3Moe | Family::Olmoe => {
                let vb = vb.pp("mlp");
                let router = vb.get((e, h), "gate.weight")?;
                let experts = (0..e)
                    .map(|x| {
                        Mlp::new(
                            h,
                            i,
                            ["gate_proj", "up_proj", "down_proj"],
                            vb.pp("experts").pp(x),
                        )
                    })
                    .collect::<CResult<_>>()?;
                (router, experts)
            }
            Family::Llama => candle_core::bail!("Llama has no MoE blocks"),
        };
        let shared = match moe.shared_expert_intermediate_size {
            Some(s) => {
                let vb = vb.pp("mlp");
                let mlp = Mlp::new(
                    h,
                    s,
                    ["gate_proj", "up_proj", "down_proj"],
                    vb.pp("shared_expert"),
                )?;
                let gate = vb.get((1, h), "shared_expert_gate.weight")?;
                Some((mlp, gate))
            }
            None => None,
        };
        Ok(MoeBlock {
            layer,
            router,
            experts,
            shared,
            top_k: moe.top_k,
            renormalize: moe.router.renormalize,
        })
    }

    /// The router's weight `[num_experts, hidden]`.
    pub fn router_weight(&self) -> &Tensor {
        &self.router
    }

    /// The routed experts.
    pub fn experts(&self) -> &[Mlp] {
        &self.experts
    }

    /// Expert weights for the chosen ids: the family's softmax, gathered, renormalised if it does.
    fn weights_for(&self, probs: &[f32], ids: &[u32]) -> Vec<f32> {
        let mut w: Vec<f32> = ids.iter().map(|&e| probs[e as usize]).collect();
        if self.renormalize {
            let sum: f32 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|x| *x /= sum);
            }
        }
        w
    }

    /// `x: [b, t, hidden]` → `[b, t, hidden]`: route every token ([`MoeBlock::route`]),
    /// then run the experts ([`MoeBlock::dispatch`]).
    pub fn forward(
        &self,
        x: &Tensor,
        layout: &TokenLayout,
        hooks: &Hooks,
        drift: &mut RoutingDrift,
    ) -> CResult<(Tensor, MoeReport)> {
        let (b, t, h) = x.dims3()?;
        let xs = x.reshape((b * t, h))?;
        let decisions = profile::time(Part::Routing, || -> CResult<_> {
            let logits = xs.matmul(&self.router.t()?)?.to_dtype(DType::F32)?;
            let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
            self.route(&probs, layout, hooks, drift)
        })?;
        let out = profile::time(Part::Experts, || -> CResult<_> {
            let mut out = self.dispatch(&xs, &decisions)?;
            if let Some((mlp, gate)) = &self.shared {
                let g = candle_nn::ops::sigmoid(&xs.matmul(&gate.t()?)?)?;
                out = (out + mlp.forward(&xs)?.broadcast_mul(&g)?)?;
            }
            Ok(out)
        })?;
        let routes = hooks.record_routing.then(|| {
            let mut rows = vec![Vec::new(); b];
            for (idx, (experts, weights)) in decisions.into_iter().enumerate() {
                if layout.valid[idx] {
                    rows[idx / t].push(TokenRoute {
                        position: layout.positions[idx],
                        experts,
                        weights,
                    });
                }
            }
            rows
        });
        Ok((
            out.reshape((b, t, h))?,
            MoeReport {
                routes,
                ffn_input: None,
            },
        ))
    }

    /// The routing policy: for every token of the call (row-major), the experts it is sent
    /// to and their weights. Free tokens take the router's top-k; under a
    /// [`crate::RoutingLock`] a token takes its recorded route, else (with
    /// [`crate::RoutingLock::follow`]) the decision of the row it follows. Every locked
    /// token adds to `drift` how many of its experts the free router would not have chosen.
    fn route(
        &self,
        probs: &[Vec<f32>],
        layout: &TokenLayout,
        hooks: &Hooks,
        drift: &mut RoutingDrift,
    ) -> CResult<Vec<(Vec<u32>, Vec<f32>)>> {
        let num_experts = self.experts.len();
        let lock = hooks.lock;
        let mut decisions = Vec::with_capacity(probs.len());
        let mut followers = Vec::new();
        for (idx, p) in probs.iter().enumerate() {
            let row = idx / layout.seq;
            let position = layout.positions[idx];
            let free = top_k_ids(p, self.top_k);
            let locked = lock.filter(|_| layout.valid[idx]);
            let recorded = locked.and_then(|l| l.route(self.layer, row, position).map(|r| (l.weights, r)));
            let decision = match recorded {
                Some((mode, route)) => {
                    if let Some(&bad) = route.experts.iter().find(|&&e| e as usize >= num_experts) {
                        candle_core::bail!(
                            "locked routing names expert {bad} but layer {} has {num_experts}",
                            self.layer
                        );
                    }
                    drift.add(row, changed(&route.experts, &free), route.experts.len() as u64);
                    let weights = match mode {
                        LockWeights::Recompute => self.weights_for(p, &route.experts),
                        LockWeights::Replay => route.weights.clone(),
                    };
                    (route.experts.clone(), weights)
                }
                None => {
                    if let Some(leader) = locked
                        .filter(|l| l.covers(self.layer, position))
                        .and_then(|l| l.leader(row))
                    {
                        followers.push((idx, leader, free.clone()));
                    }
                    let weights = self.weights_for(p, &free);
                    (free, weights)
                }
            };
            decisions.push(decision);
        }
        for (idx, leader, free) in followers {
            let (row, in_call) = (idx / layout.seq, idx % layout.seq);
            let lidx = layout.index(leader, in_call);
            let lock = lock.expect("followers exist only under a lock");
            if leader >= layout.batch
                || !layout.valid[lidx]
                || layout.positions[lidx] != layout.positions[idx]
                || lock.leader(leader).is_some()
            {
                candle_core::bail!(
                    "routing lock: row {row} follows row {leader}, which has no token at position {} in this call \
                     (or follows another row itself)",
                    layout.positions[idx]
                );
            }
            let (ids, leader_weights) = decisions[lidx].clone();
            drift.add(row, changed(&ids, &free), ids.len() as u64);
            let weights = match lock.weights {
                LockWeights::Recompute => self.weights_for(&probs[idx], &ids),
                LockWeights::Replay => leader_weights,
            };
            decisions[idx] = (ids, weights);
        }
        Ok(decisions)
    }

    /// Runs each expert on the tokens routed to it and sums the weighted outputs:
    /// `xs: [n, hidden]`, one decision per row of `xs`.
    fn dispatch(&self, xs: &Tensor, decisions: &[(Vec<u32>, Vec<f32>)]) -> CResult<Tensor> {
        // For each expert: the token indices it serves and the weight of each.
        let mut assignments: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); self.experts.len()];
        for (idx, (ids, weights)) in decisions.iter().enumerate() {
            for (&e, &w) in ids.iter().zip(weights) {
                assignments[e as usize].0.push(idx as u32);
                assignments[e as usize].1.push(w);
            }
        }
        let mut out = xs.zeros_like()?;
        for (expert, (tokens, weights)) in self.experts.iter().zip(assignments) {
            if tokens.is_empty() {
                continue;
            }
            let count = tokens.len();
            let index = Tensor::from_vec(tokens, count, xs.device())?;
            let weights = Tensor::from_vec(weights, (count, 1), xs.device())?.to_dtype(xs.dtype())?;
            let y = expert
                .forward(&xs.index_select(&index, 0)?)?
                .broadcast_mul(&weights)?;
            out = out.index_add(&index, &y, 0)?;
        }
        Ok(out)
    }
}

/// How many of the `locked` experts are not among the router's `free` choice.
fn changed(locked: &[u32], free: &[u32]) -> u64 {
    locked.iter().filter(|e| !free.contains(e)).count() as u64
}

/// The `k` largest entries' indices, largest first (ties: lower index first).
pub(crate) fn top_k_ids(p: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..p.len() as u32).collect();
    order.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
    order.truncate(k);
    order
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
    pub fn new(cfg: &ModelConfig, layer: usize, vb: VarBuilder) -> CResult<Self> {
        let feed_forward = match cfg.moe.as_ref().filter(|_| cfg.is_moe_layer(layer)) {
            Some(moe) => FeedForward::Moe(MoeBlock::new(cfg, moe, layer, vb.clone())?),
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

    pub fn forward(
        &self,
        x: &Tensor,
        step: &Step,
        cache: &mut Option<LayerKv>,
        hooks: &Hooks,
        drift: &mut RoutingDrift,
    ) -> CResult<(Tensor, MoeReport)> {
        let normed = profile::time(Part::Attention, || self.input_norm.forward(x))?;
        let attn = self.attention.forward(&normed, step, cache)?;
        let x = (x + scaled(attn, self.residual_multiplier)?)?;
        let normed = profile::time(Part::Experts, || self.post_attention_norm.forward(&x))?;
        let (ff, mut report) = match &self.feed_forward {
            FeedForward::Dense(mlp) => (
                profile::time(Part::Experts, || mlp.forward(&normed))?,
                MoeReport::default(),
            ),
            FeedForward::Moe(moe) => moe.forward(&normed, &step.layout, hooks, drift)?,
        };
        if hooks.capture_ffn_inputs {
            report.ffn_input = Some(normed);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_probability() {
        assert_eq!(top_k_ids(&[0.1, 0.5, 0.2, 0.2], 3), vec![1, 2, 3]);
    }
}
