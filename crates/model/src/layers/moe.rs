//! The sparse Mixture-of-Experts block, in two parts that can change apart:
//!
//! - the routing *policy*, [`Router::route`]: for every token, which experts it goes to
//!   and with what weights — the router's free top-k, or under a [`crate::RoutingLock`]
//!   the recorded (or followed) choice, counting the [`RoutingDrift`];
//! - the *dispatch*, [`dispatch`]: running each expert on the tokens routed to it and
//!   summing the weighted outputs. It sees only the [`Decision`]s, so a faster dispatch
//!   replaces it without touching the policy.
//!
//! Both run on the host's copy of the router's probabilities; [`device`] has the same
//! policy and a dispatch as tensor operations, for a forward call that stays on a GPU.

mod device;
mod quantized;

use candle_core::{DType, IndexOp, Tensor};
use candle_nn::VarBuilder;

use super::mlp::Mlp;
use super::{CResult, TokenLayout};
use crate::config::{Family, ModelConfig, MoeConfig};
use crate::hooks::{Hooks, LockWeights, RoutingDrift, RoutingLock, TokenRoute};
use crate::model::ExpertFormat;
use crate::profile::{self, Part};
use device::{DeviceDecisions, StackedExperts};
use quantized::QuantizedExperts;

/// Where one token goes: expert ids (in the router's rank order for a free choice) and
/// the weight of each expert's output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// Expert ids.
    pub experts: Vec<u32>,
    /// One weight per expert.
    pub weights: Vec<f32>,
}

/// The routing policy of one MoE layer: the router's weight and the family's top-k
/// weighting, applied under the hooks' lock.
#[derive(Debug, Clone)]
pub(crate) struct Router {
    layer: usize,
    weight: Tensor,
    num_experts: usize,
    top_k: usize,
    renormalize: bool,
}

impl Router {
    /// The router's weight `[num_experts, hidden]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The router's softmax over experts for each row of `xs: [n, hidden]`.
    fn probabilities(&self, xs: &Tensor) -> CResult<Vec<Vec<f32>>> {
        use crate::kernels::{applies, moe::router_probabilities, with_contiguous_f32};
        let hidden = xs.dim(1)?;
        // Anything else (a width mismatch, an empty row) takes candle's product and its error.
        if applies(xs) && applies(&self.weight) && hidden > 0 && self.weight.dim(1)? == hidden {
            let probs = with_contiguous_f32(xs, |x| {
                with_contiguous_f32(&self.weight, |w| router_probabilities(x, w, hidden))
            });
            if let Some(Some(probs)) = probs {
                return Ok(probs);
            }
        }
        let logits = xs.matmul(&self.weight.t()?)?.to_dtype(DType::F32)?;
        candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()
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

    /// Where each token of the call (row-major) takes its experts from under `lock`:
    /// its recorded route, the token of the row it follows (where it has none and the lock
    /// covers the layer and position), or the router's free choice (also every padding
    /// token). Checks what the lock names against this layer and call.
    fn lock_choices<'a>(
        &self,
        layout: &TokenLayout,
        lock: &'a RoutingLock,
    ) -> CResult<Vec<LockedChoice<'a>>> {
        let tokens = layout.batch * layout.seq;
        let mut choices = Vec::with_capacity(tokens);
        for idx in 0..tokens {
            let (row, position) = (idx / layout.seq, layout.positions[idx]);
            if !layout.valid[idx] {
                choices.push(LockedChoice::Free);
            } else if let Some(route) = lock.route(self.layer, row, position) {
                if let Some(&bad) = route.experts.iter().find(|&&e| e as usize >= self.num_experts) {
                    candle_core::bail!(
                        "locked routing names expert {bad} but layer {} has {}",
                        self.layer,
                        self.num_experts
                    );
                }
                choices.push(LockedChoice::Recorded(route));
            } else if let Some(leader) = lock.leader(row).filter(|_| lock.covers(self.layer, position)) {
                let lidx = layout.index(leader, idx % layout.seq);
                if leader >= layout.batch
                    || !layout.valid[lidx]
                    || layout.positions[lidx] != position
                    || lock.leader(leader).is_some()
                {
                    candle_core::bail!(
                        "routing lock: row {row} follows row {leader}, which has no token at position {position} \
                         in this call (or follows another row itself)"
                    );
                }
                choices.push(LockedChoice::Follows(lidx));
            } else {
                choices.push(LockedChoice::Free);
            }
        }
        Ok(choices)
    }

    /// The routing policy: for every token of the call (row-major), the experts it is sent
    /// to and their weights. Free tokens take the router's top-k; under a
    /// [`crate::RoutingLock`] a token takes its recorded route, else (with
    /// [`crate::RoutingLock::follow`]) the decision of the row it follows. Every locked
    /// token adds to `drift` how many of its experts the free router would not have chosen.
    pub fn route(
        &self,
        probs: &[Vec<f32>],
        layout: &TokenLayout,
        hooks: &Hooks,
        drift: &mut RoutingDrift,
    ) -> CResult<Vec<Decision>> {
        let choices = hooks.lock.map(|l| self.lock_choices(layout, l)).transpose()?;
        let mut decisions = Vec::with_capacity(probs.len());
        let mut followers = Vec::new();
        for (idx, p) in probs.iter().enumerate() {
            let row = idx / layout.seq;
            let free = top_k_ids(p, self.top_k);
            let decision = match choices.as_ref().map_or(&LockedChoice::Free, |c| &c[idx]) {
                LockedChoice::Recorded(route) => {
                    drift.add(row, changed(&route.experts, &free), route.experts.len() as u64);
                    let weights = match hooks.lock.map(|l| l.weights) {
                        Some(LockWeights::Replay) => route.weights.clone(),
                        _ => self.weights_for(p, &route.experts),
                    };
                    Decision {
                        experts: route.experts.clone(),
                        weights,
                    }
                }
                choice => {
                    if let LockedChoice::Follows(lidx) = *choice {
                        followers.push((idx, lidx, free.clone()));
                    }
                    let weights = self.weights_for(p, &free);
                    Decision {
                        experts: free,
                        weights,
                    }
                }
            };
            decisions.push(decision);
        }
        for (idx, lidx, free) in followers {
            let Decision {
                experts: ids,
                weights: leader_weights,
            } = decisions[lidx].clone();
            drift.add(idx / layout.seq, changed(&ids, &free), ids.len() as u64);
            let weights = match hooks.lock.map(|l| l.weights) {
                Some(LockWeights::Replay) => leader_weights,
                _ => self.weights_for(&probs[idx], &ids),
            };
            decisions[idx] = Decision {
                experts: ids,
                weights,
            };
        }
        Ok(decisions)
    }
}

/// Where one token takes its experts from under a routing lock ([`Router::lock_choices`]).
enum LockedChoice<'a> {
    /// The router's own top-k.
    Free,
    /// Its recorded route.
    Recorded(&'a TokenRoute),
    /// The decision of the token at this flat index (same position, the row it follows).
    Follows(usize),
}

/// Runs each expert on the tokens routed to it and sums the weighted outputs:
/// `xs: [n, hidden]`, one decision per row of `xs`. f32 on the CPU goes through
/// [`crate::kernels::moe`]; anything else through candle ops, expert by expert.
pub(crate) fn dispatch(experts: &[Mlp], xs: &Tensor, decisions: &[Decision]) -> CResult<Tensor> {
    if crate::kernels::applies(xs) {
        if let Some(out) = dispatch_cpu(experts, xs, decisions)? {
            return Ok(out);
        }
    }
    dispatch_candle(experts, xs, decisions)
}

/// The CPU kernel's dispatch; `None` if a tensor is not contiguous f32 on the CPU.
fn dispatch_cpu(experts: &[Mlp], xs: &Tensor, decisions: &[Decision]) -> CResult<Option<Tensor>> {
    use crate::kernels::{moe, F32View};
    let (n, hidden) = xs.dims2()?;
    let xs_contiguous = xs.contiguous()?;
    let views: Option<Vec<(F32View, F32View)>> = experts
        .iter()
        .map(|e| {
            let (gate_up, down) = e.fused_weights();
            Some((F32View::new(gate_up)?, F32View::new(down)?))
        })
        .collect();
    let (Some(views), Some(x)) = (views, F32View::new(&xs_contiguous)) else {
        return Ok(None);
    };
    let inter = match experts.first() {
        Some(e) => e.fused_weights().1.dim(1)?,
        None => return Ok(Some(xs.zeros_like()?)),
    };
    let routes: Vec<(&[u32], &[f32])> = decisions
        .iter()
        .map(|d| (d.experts.as_slice(), d.weights.as_slice()))
        .collect();
    let packed: Option<Vec<(&_, &_)>> = experts.iter().map(|e| e.packed()).collect();
    let out = match packed {
        Some(packed) => {
            let products = moe::PackedExperts { experts: &packed };
            moe::forward_with(&products, x.as_slice(), hidden, inter, experts.len(), &routes)?
        }
        None => {
            let weights: Vec<moe::ExpertWeights> = views
                .iter()
                .map(|(gate_up, down)| moe::ExpertWeights {
                    gate_up: gate_up.as_slice(),
                    down: down.as_slice(),
                })
                .collect();
            moe::forward(x.as_slice(), hidden, inter, &weights, &routes)?
        }
    };
    Ok(Some(Tensor::from_vec(out, (n, hidden), xs.device())?))
}

/// The candle-ops dispatch: per expert, gather its tokens, run it, scale, scatter-add.
fn dispatch_candle(experts: &[Mlp], xs: &Tensor, decisions: &[Decision]) -> CResult<Tensor> {
    // For each expert: the token indices it serves and the weight of each.
    let mut assignments: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); experts.len()];
    for (idx, d) in decisions.iter().enumerate() {
        for (&e, &w) in d.experts.iter().zip(&d.weights) {
            assignments[e as usize].0.push(idx as u32);
            assignments[e as usize].1.push(w);
        }
    }
    let mut out = xs.zeros_like()?;
    for (expert, (tokens, weights)) in experts.iter().zip(assignments) {
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

/// A sparse Mixture-of-Experts block: router, routed experts, optional shared expert.
#[derive(Debug, Clone)]
pub(crate) struct MoeBlock {
    router: Router,
    experts: RoutedExperts,
    shared: Option<(Mlp, Tensor)>,
}

/// The routed experts' weights.
#[derive(Debug, Clone)]
enum RoutedExperts {
    /// In the working dtype: one [`Mlp`] per expert, each a view of `stacked`.
    Dense {
        experts: Vec<Mlp>,
        stacked: StackedExperts,
    },
    /// Quantised (the CPU's host path only).
    Quantized(QuantizedExperts),
}

/// The routes of one MoE layer's call, for the recording: on the host, or still on the
/// device (copied down when the forward call ends).
#[derive(Debug)]
pub(crate) enum LayerRoutes {
    /// Per row, the routes of its real tokens.
    Host(Vec<Vec<TokenRoute>>),
    /// The decisions of every token of the call, and where the tokens sit.
    Device {
        decisions: DeviceDecisions,
        layout: TokenLayout,
    },
}

impl LayerRoutes {
    /// Per row, the routes of its real tokens (copies device decisions to the host).
    pub fn into_host(self) -> CResult<Vec<Vec<TokenRoute>>> {
        match self {
            LayerRoutes::Host(rows) => Ok(rows),
            LayerRoutes::Device { decisions, layout } => {
                let ids = decisions.ids.to_vec2::<u32>()?;
                let weights = decisions.weights.to_vec2::<f32>()?;
                let decisions = ids
                    .into_iter()
                    .zip(weights)
                    .map(|(experts, weights)| Decision { experts, weights })
                    .collect();
                Ok(routes_by_row(decisions, &layout))
            }
        }
    }
}

/// What a MoE layer's call reports besides its output.
#[derive(Debug, Default)]
pub(crate) struct MoeReport {
    /// The routes, when recording.
    pub routes: Option<LayerRoutes>,
    /// On the device path under a lock: per row, the locked choices the free router would
    /// have changed, `[b]` f32 (the host path adds them to the drift at once).
    pub changed: Option<Tensor>,
}

impl MoeBlock {
    /// Loads the block of decoder layer `layer`, its routed experts stored as `format`
    /// says; `vb` points at the layer (`model.layers.N`).
    pub fn new(
        cfg: &ModelConfig,
        moe: &MoeConfig,
        layer: usize,
        format: ExpertFormat,
        vb: VarBuilder,
    ) -> CResult<Self> {
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
                        Mlp::from_weights(
                            &fused.narrow(0, 0, i)?,
                            &fused.narrow(0, i, i)?,
                            output.i(x)?.contiguous()?,
                        )
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
        let experts = match format {
            ExpertFormat::Dense => {
                let (stacked, experts) = StackedExperts::new(experts)?;
                RoutedExperts::Dense { experts, stacked }
            }
            ExpertFormat::Q8_0 | ExpertFormat::Q4K => {
                RoutedExperts::Quantized(QuantizedExperts::new(&experts, format)?)
            }
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
            router: Router {
                layer,
                weight: router,
                num_experts: e,
                top_k: moe.top_k,
                renormalize: moe.router.renormalize,
            },
            experts,
            shared,
        })
    }

    /// The router's weight `[num_experts, hidden]`.
    pub fn router_weight(&self) -> &Tensor {
        self.router.weight()
    }

    /// The routed experts' `(gate [inter, hidden], up [inter, hidden], down [hidden,
    /// inter])` weights; quantised experts give their quantised values in f32.
    pub fn expert_weights(&self) -> CResult<Vec<(Tensor, Tensor, Tensor)>> {
        match &self.experts {
            RoutedExperts::Dense { experts, .. } => Ok(experts
                .iter()
                .map(|e| {
                    let (g, u, d) = e.weights();
                    (g.clone(), u.clone(), d.clone())
                })
                .collect()),
            RoutedExperts::Quantized(q) => (0..q.len()).map(|e| q.dequantized(e)).collect(),
        }
    }

    /// Bytes the routed experts' weights take.
    pub fn expert_bytes(&self) -> usize {
        match &self.experts {
            RoutedExperts::Dense { stacked, .. } => [&stacked.gate_up, &stacked.down]
                .iter()
                .map(|t| t.elem_count() * t.dtype().size_in_bytes())
                .sum(),
            RoutedExperts::Quantized(q) => q.storage_bytes(),
        }
    }

    /// `x: [b, t, hidden]` → `[b, t, hidden]`: route every token and run the experts —
    /// on the host's copy of the router's probabilities ([`Router::route`], [`dispatch`]),
    /// or `on_device` without leaving the device ([`device`]) — then the shared expert;
    /// with `hooks.record_routing`, also the routes of the real tokens, per row.
    pub fn forward(
        &self,
        x: &Tensor,
        layout: &TokenLayout,
        on_device: bool,
        hooks: &Hooks,
        drift: &mut RoutingDrift,
    ) -> CResult<(Tensor, MoeReport)> {
        let (b, t, h) = x.dims3()?;
        let xs = x.reshape((b * t, h))?;
        let (out, report) = if on_device {
            let (decisions, changed) = profile::time(Part::Routing, || -> CResult<_> {
                let plan = self.router.lock_plan(layout, hooks, drift, xs.device())?;
                self.router.route_on_device(&xs, plan.as_ref())
            })?;
            let RoutedExperts::Dense { experts, stacked } = &self.experts else {
                candle_core::bail!("quantised experts run on the host path only (MoePath::Host)");
            };
            let out = profile::time(Part::Experts, || {
                device::dispatch_on_device(experts, stacked, &xs, &decisions, t > 1)
            })?;
            let routes = hooks.record_routing.then(|| LayerRoutes::Device {
                decisions,
                layout: layout.clone(),
            });
            (out, MoeReport { routes, changed })
        } else {
            let decisions = profile::time(Part::Routing, || -> CResult<_> {
                let probs = self.router.probabilities(&xs)?;
                self.router.route(&probs, layout, hooks, drift)
            })?;
            let out = profile::time(Part::Experts, || match &self.experts {
                RoutedExperts::Dense { experts, .. } => dispatch(experts, &xs, &decisions),
                RoutedExperts::Quantized(q) => q.dispatch(&xs, &decisions),
            })?;
            let routes = hooks
                .record_routing
                .then(|| LayerRoutes::Host(routes_by_row(decisions, layout)));
            (
                out,
                MoeReport {
                    routes,
                    changed: None,
                },
            )
        };
        let out = match &self.shared {
            Some((mlp, gate)) => profile::time(Part::Experts, || -> CResult<_> {
                let g = candle_nn::ops::sigmoid(&xs.matmul(&gate.t()?)?)?;
                out + mlp.forward(&xs)?.broadcast_mul(&g)?
            })?,
            None => out,
        };
        Ok((out.reshape((b, t, h))?, report))
    }
}

/// The decisions of the real tokens as [`TokenRoute`]s, per row of the call.
fn routes_by_row(decisions: Vec<Decision>, layout: &TokenLayout) -> Vec<Vec<TokenRoute>> {
    let mut rows = vec![Vec::new(); layout.batch];
    for (idx, d) in decisions.into_iter().enumerate() {
        if layout.valid[idx] {
            rows[idx / layout.seq].push(TokenRoute {
                position: layout.positions[idx],
                experts: d.experts,
                weights: d.weights,
            });
        }
    }
    rows
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_probability() {
        assert_eq!(top_k_ids(&[0.1, 0.5, 0.2, 0.2], 3), vec![1, 2, 3]);
    }
}
