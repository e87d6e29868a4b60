//! The MoE block on the device: routing, the routing lock, the drift count and the expert
//! dispatch as tensor operations, so that a forward call on a GPU never waits for the host
//! between layers.
//!
//! The host path ([`super::Router::route`]) copies the router's probabilities down in
//! every layer, which on a GPU is a synchronisation point per layer. Here, what comes from
//! the host is only what is known before the call — the lock's recorded routes and which
//! rows follow which ([`LockPlan`]) — and goes up as tensors; what the router computes
//! (the free top-k, the drift, the routes to record) stays on the device until the forward
//! call ends ([`crate::record::Recorder`] copies it down once).
//!
//! Same policy as the host path, written as tensor algebra (`n` tokens, top-`k`):
//!
//! - free choice: `ids = argsort(p)[:, :k]`, `w = p[ids]` (renormalised if the family does);
//! - a token with a recorded route takes its ids (and, replaying, its weights);
//! - a token that follows another row takes that row's final decision: one `index_select`;
//! - drift per token: the number of its experts not among its free `ids`, summed per row.
//!
//! The dispatch runs candle-nn's fused `moe_gemm` (tokens sorted by expert, one kernel for
//! all experts) on CUDA in bf16/f16; anywhere else every expert runs on every token with a
//! combine matrix of routing weights (zero where a token does not go), which needs no
//! token counts on the host and costs `num_experts / k` times the expert work.

use candle_core::{DType, Device, Tensor, D};

use super::{LockedChoice, Router, TokenLayout};
use crate::hooks::{Hooks, LockWeights, RoutingDrift};
use crate::layers::mlp::Mlp;
use crate::layers::CResult;

/// What the routing lock asks of one MoE layer for one forward call, as tensors.
pub(crate) struct LockPlan {
    /// `[n, 1]` u8: 1 where the token takes a recorded route.
    recorded: Tensor,
    /// `[n, k]` u32: the recorded ids (0 where none).
    recorded_ids: Tensor,
    /// `[n, k]` f32: the recorded weights, when they are replayed.
    recorded_weights: Option<Tensor>,
    /// `[n]` u32: the token whose decision each token takes (itself, or its leader's).
    source: Option<Tensor>,
    /// `[b, t]` f32: 1 for the tokens whose choices count in the drift.
    counted: Tensor,
}

/// A layer's routing decisions, on the device.
#[derive(Debug, Clone)]
pub(crate) struct DeviceDecisions {
    /// `[n, k]` u32 expert ids (the router's rank order for a free choice).
    pub ids: Tensor,
    /// `[n, k]` f32 weights of the experts' outputs.
    pub weights: Tensor,
}

impl Router {
    /// The lock's plan for this layer, or `None` when there is no lock: the choices of
    /// [`Router::lock_choices`] (the host path's too) as tensors. Adds the locked counts to
    /// `drift`; the changed counts come from [`Router::route_on_device`].
    pub fn lock_plan(
        &self,
        layout: &TokenLayout,
        hooks: &Hooks,
        drift: &mut RoutingDrift,
        device: &Device,
    ) -> CResult<Option<LockPlan>> {
        let Some(lock) = hooks.lock else {
            return Ok(None);
        };
        let (n, k) = (layout.batch * layout.seq, self.top_k);
        let mut recorded = vec![0u8; n];
        let mut recorded_ids = vec![0u32; n * k];
        let replay = lock.weights == LockWeights::Replay;
        let mut recorded_weights = vec![0f32; if replay { n * k } else { 0 }];
        let mut source: Vec<u32> = (0..n as u32).collect();
        let mut followed = false;
        let mut counted = vec![0f32; n];
        for (idx, choice) in self.lock_choices(layout, lock)?.into_iter().enumerate() {
            let row = idx / layout.seq;
            match choice {
                LockedChoice::Free => continue,
                LockedChoice::Recorded(route) => {
                    if route.experts.len() != k || (replay && route.weights.len() != k) {
                        candle_core::bail!(
                            "locked routing of layer {} gives {} experts for a token; the model routes to {k}",
                            self.layer,
                            route.experts.len()
                        );
                    }
                    recorded[idx] = 1;
                    recorded_ids[idx * k..(idx + 1) * k].copy_from_slice(&route.experts);
                    if replay {
                        recorded_weights[idx * k..(idx + 1) * k].copy_from_slice(&route.weights);
                    }
                }
                LockedChoice::Follows(lidx) => {
                    source[idx] = lidx as u32;
                    followed = true;
                }
            }
            counted[idx] = 1.0;
            drift.add(row, 0, k as u64);
        }
        Ok(Some(LockPlan {
            recorded: Tensor::from_vec(recorded, (n, 1), device)?,
            recorded_ids: Tensor::from_vec(recorded_ids, (n, k), device)?,
            recorded_weights: if replay {
                Some(Tensor::from_vec(recorded_weights, (n, k), device)?)
            } else {
                None
            },
            source: if followed {
                Some(Tensor::from_vec(source, n, device)?)
            } else {
                None
            },
            counted: Tensor::from_vec(counted, (layout.batch, layout.seq), device)?,
        }))
    }

    /// Routes `xs: [n, hidden]` on the device under `plan`: the decisions, and (under a
    /// lock) per row of the call the number of locked choices the free router would have
    /// changed, `[b]` f32.
    pub fn route_on_device(
        &self,
        xs: &Tensor,
        plan: Option<&LockPlan>,
    ) -> CResult<(DeviceDecisions, Option<Tensor>)> {
        let logits = xs.matmul(&self.weight.t()?)?.to_dtype(DType::F32)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let free = probs
            .arg_sort_last_dim(false)?
            .narrow(D::Minus1, 0, self.top_k)?
            .contiguous()?;
        let weights_of = |ids: &Tensor| -> CResult<Tensor> {
            let w = probs.gather(ids, D::Minus1)?;
            if self.renormalize {
                w.broadcast_div(&w.sum_keepdim(D::Minus1)?)
            } else {
                Ok(w)
            }
        };
        let Some(plan) = plan else {
            let weights = weights_of(&free)?;
            return Ok((DeviceDecisions { ids: free, weights }, None));
        };
        let recorded = plan.recorded.broadcast_as(free.shape())?;
        let own_ids = recorded.where_cond(&plan.recorded_ids, &free)?;
        let take_source = |t: Tensor| match &plan.source {
            Some(source) => t.index_select(source, 0),
            None => Ok(t),
        };
        let ids = take_source(own_ids.clone())?;
        let weights = match &plan.recorded_weights {
            Some(replayed) => take_source(recorded.where_cond(replayed, &weights_of(&own_ids)?)?)?,
            None => weights_of(&ids)?,
        };
        // A chosen expert is unchanged when the free top-k holds it too.
        let kept = ids
            .unsqueeze(2)?
            .broadcast_eq(&free.unsqueeze(1)?)?
            .to_dtype(DType::F32)?
            .max(D::Minus1)?
            .sum(D::Minus1)?;
        let changed = (kept
            .affine(-1.0, self.top_k as f64)?
            .reshape(plan.counted.shape())?
            * &plan.counted)?
            .sum(D::Minus1)?;
        Ok((DeviceDecisions { ids, weights }, Some(changed)))
    }
}

/// The expert weights of a layer stacked for the fused product: `[E, 2 * inter, hidden]`
/// (gate rows, then up rows) and `[E, hidden, inter]`; every expert's [`Mlp`] is a view of
/// them.
#[derive(Debug, Clone)]
pub(crate) struct StackedExperts {
    pub gate_up: Tensor,
    pub down: Tensor,
}

impl StackedExperts {
    /// Stacks `experts`' weights and returns the stack with the experts rebuilt as views
    /// of it (so the layer keeps one copy of its weights).
    pub fn new(experts: Vec<Mlp>) -> CResult<(Self, Vec<Mlp>)> {
        let gate_up: Vec<&Tensor> = experts.iter().map(|e| e.fused_weights().0).collect();
        let down: Vec<&Tensor> = experts.iter().map(|e| e.fused_weights().1).collect();
        let stacked = StackedExperts {
            gate_up: Tensor::stack(&gate_up, 0)?,
            down: Tensor::stack(&down, 0)?,
        };
        let views = (0..experts.len())
            .map(|e| Mlp::from_fused(stacked.gate_up.get(e)?, stacked.down.get(e)?))
            .collect::<CResult<Vec<_>>>()?;
        Ok((stacked, views))
    }
}

/// Runs the experts on the device: `xs: [n, hidden]` → `[n, hidden]`. `prefill` tells the
/// fused kernel whether the call has many tokens per row.
pub(crate) fn dispatch_on_device(
    experts: &[Mlp],
    stacked: &StackedExperts,
    xs: &Tensor,
    decisions: &DeviceDecisions,
    prefill: bool,
) -> CResult<Tensor> {
    #[cfg(feature = "cuda")]
    if xs.device().is_cuda() && matches!(xs.dtype(), DType::BF16 | DType::F16) {
        return dispatch_fused(stacked, xs, decisions, prefill);
    }
    let _ = (stacked, prefill);
    dispatch_dense(experts, xs, decisions)
}

/// Every expert on every token, weighted by the combine matrix `[n, E]`.
fn dispatch_dense(experts: &[Mlp], xs: &Tensor, decisions: &DeviceDecisions) -> CResult<Tensor> {
    let expert_ids = Tensor::arange(0u32, experts.len() as u32, xs.device())?.reshape((1, 1, ()))?;
    let one_hot = decisions
        .ids
        .unsqueeze(2)?
        .broadcast_eq(&expert_ids)?
        .to_dtype(DType::F32)?;
    let combine = one_hot
        .broadcast_mul(&decisions.weights.unsqueeze(2)?)?
        .sum(1)?
        .to_dtype(xs.dtype())?;
    let mut out = xs.zeros_like()?;
    for (e, expert) in experts.iter().enumerate() {
        out = (out + expert.forward(xs)?.broadcast_mul(&combine.narrow(1, e, 1)?)?)?;
    }
    Ok(out)
}

/// The most token slots (`tokens * k`) one sort may hold: candle's CUDA argsort keeps a row,
/// padded to a power of two, in the 48 KiB of shared memory a launch gets without opting in.
#[cfg(feature = "cuda")]
const MAX_SORTED_SLOTS: usize = 8192;

/// candle-nn's fused MoE product (CUDA, bf16/f16), in chunks of at most
/// [`MAX_SORTED_SLOTS`] token slots (a long prompt pass is several chunks).
#[cfg(feature = "cuda")]
fn dispatch_fused(
    stacked: &StackedExperts,
    xs: &Tensor,
    decisions: &DeviceDecisions,
    prefill: bool,
) -> CResult<Tensor> {
    let n = xs.dim(0)?;
    let chunk = (MAX_SORTED_SLOTS / decisions.ids.dim(1)?).max(1);
    if n <= chunk {
        return dispatch_fused_chunk(stacked, &unshared(xs)?, decisions, prefill);
    }
    let parts = (0..n)
        .step_by(chunk)
        .map(|start| {
            let len = chunk.min(n - start);
            let part = DeviceDecisions {
                ids: decisions.ids.narrow(0, start, len)?.copy()?,
                weights: decisions.weights.narrow(0, start, len)?.copy()?,
            };
            dispatch_fused_chunk(stacked, &xs.narrow(0, start, len)?.copy()?, &part, prefill)
        })
        .collect::<CResult<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// `t` as a tensor of its own storage from its start: `moe_gemm` reads its inputs' storage
/// from the beginning, whatever the layout's offset.
#[cfg(feature = "cuda")]
fn unshared(t: &Tensor) -> CResult<Tensor> {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        Ok(t.clone())
    } else {
        t.copy()
    }
}

/// One chunk of [`dispatch_fused`]: the token slots sorted by expert once, `gate_up` for
/// all slots in one kernel, SwiGLU, `down` with the routing weights applied, then the `k`
/// slots of each token summed.
#[cfg(feature = "cuda")]
fn dispatch_fused_chunk(
    stacked: &StackedExperts,
    xs: &Tensor,
    decisions: &DeviceDecisions,
    prefill: bool,
) -> CResult<Tensor> {
    let (n, hidden) = xs.dims2()?;
    let k = decisions.ids.dim(1)?;
    let inter = stacked.down.dim(2)?;
    let (expert_ids, sorted_slots) = decisions.ids.flatten_all()?.sort_last_dim(true)?;
    let gate_up = candle_nn::moe::moe_gemm(
        xs,
        &stacked.gate_up,
        &None,
        &sorted_slots,
        &expert_ids,
        k,
        prefill,
    )?;
    let gate = gate_up.narrow(D::Minus1, 0, inter)?;
    let up = gate_up.narrow(D::Minus1, inter, inter)?;
    let hidden_in = (candle_nn::ops::silu(&gate.contiguous()?)? * up.contiguous()?)?;
    candle_nn::moe::moe_gemm(
        &hidden_in.reshape((n * k, inter))?,
        &stacked.down,
        &Some(unshared(&decisions.weights)?),
        &sorted_slots,
        &expert_ids,
        k,
        prefill,
    )?
    .reshape((n, k, hidden))?
    .sum(1)
}
