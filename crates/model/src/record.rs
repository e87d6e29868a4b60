//! What a forward call collects besides its hidden states, layer by layer.

use candle_core::Tensor;

use crate::hooks::{Hooks, LayerRouting, Routing, RoutingDrift};
use crate::layers::{FeedForwardReport, LayerRoutes};
use crate::model::ForwardOutput;

/// The accumulators of one pass over the decoder layers, as its [`Hooks`] ask:
///
/// - the routing of every MoE layer run (with [`Hooks::record_routing`]);
/// - the [`RoutingDrift`] of locked tokens, per row (always; zero counts when nothing
///   is locked);
/// - every layer's feed-forward input (with [`Hooks::capture_ffn_inputs`]).
///
/// The layers add to the drift as they route ([`Recorder::drift`]); after each layer its
/// report goes in with [`Recorder::record`]; [`Recorder::into_output`] makes the
/// [`ForwardOutput`]. What the layers leave on the device (routes, drift counts of the
/// device path) waits there and is copied down when the pass ends, not per layer.
#[derive(Debug)]
pub(crate) struct Recorder {
    routing: Option<Routing>,
    drift: RoutingDrift,
    ffn_inputs: Vec<Tensor>,
    /// Routes not yet in `routing`, in layer order.
    pending_routes: Vec<(usize, LayerRoutes)>,
    /// Per-row changed counts `[rows]` not yet in `drift`.
    pending_changed: Vec<Tensor>,
}

impl Recorder {
    /// A recorder for a pass over `rows` rows, recording routing if `hooks` ask.
    pub fn new(hooks: &Hooks, rows: usize) -> Self {
        Recorder {
            routing: hooks.record_routing.then(Routing::default),
            drift: RoutingDrift::with_rows(rows),
            ffn_inputs: Vec::new(),
            pending_routes: Vec::new(),
            pending_changed: Vec::new(),
        }
    }

    /// A recorder that continues `earlier` (the routing of the layers already run, e.g.
    /// a shared prompt's lower layers), when `hooks` ask for routing. A recording of one
    /// row is copied to all `rows`.
    pub fn continuing(earlier: Option<&Routing>, hooks: &Hooks, rows: usize) -> Self {
        let mut recorder = Recorder::new(hooks, rows);
        if let (Some(routing), Some(earlier)) = (recorder.routing.as_mut(), earlier) {
            let identity: Vec<usize> = (0..rows).collect();
            *routing = earlier.select_rows(&identity);
        }
        recorder
    }

    /// The drift counts, for the layers to add to as they route.
    pub fn drift(&mut self) -> &mut RoutingDrift {
        &mut self.drift
    }

    /// Takes in what decoder layer `layer` reported: its routes (when recording) and its
    /// feed-forward input (when capturing).
    pub fn record(&mut self, layer: usize, report: FeedForwardReport) {
        self.ffn_inputs.extend(report.ffn_input);
        self.pending_changed.extend(report.changed);
        if let (true, Some(routes)) = (self.routing.is_some(), report.routes) {
            self.pending_routes.push((layer, routes));
        }
    }

    /// Copies what waits on the device into the routing and the drift.
    fn settle(&mut self) -> candle_core::Result<()> {
        if !self.pending_changed.is_empty() {
            let changed = Tensor::stack(&self.pending_changed, 0)?
                .sum(0)?
                .to_vec1::<f32>()?;
            for (row, count) in changed.into_iter().enumerate() {
                self.drift.add(row, count.round() as u64, 0);
            }
            self.pending_changed.clear();
        }
        if let Some(routing) = self.routing.as_mut() {
            for (layer, routes) in self.pending_routes.drain(..) {
                routing.extend(Routing {
                    layers: vec![LayerRouting {
                        layer,
                        rows: routes.into_host()?,
                    }],
                });
            }
        }
        Ok(())
    }

    /// Takes in what a pass over rows `0..n` recorded for a twinned batch of `2n` rows
    /// ([`crate::Model::forward_twinned`]): row `i` of `lower` counts for rows `i` and
    /// `n + i`.
    pub fn absorb_twins(&mut self, mut lower: Recorder) -> candle_core::Result<()> {
        lower.settle()?;
        let n = lower.drift.rows.len();
        for (i, &(changed, locked)) in lower.drift.rows.iter().enumerate() {
            self.drift.add(i, changed, locked);
            self.drift.add(n + i, changed, locked);
        }
        for t in lower.ffn_inputs {
            self.ffn_inputs.push(Tensor::cat(&[&t, &t], 0)?);
        }
        if let (Some(routing), Some(lower)) = (self.routing.as_mut(), lower.routing) {
            let twice: Vec<usize> = (0..n).chain(0..n).collect();
            routing.extend(lower.select_rows(&twice));
        }
        Ok(())
    }

    /// The routing recorded so far (when recording).
    pub fn into_routing(mut self) -> candle_core::Result<Option<Routing>> {
        self.settle()?;
        Ok(self.routing)
    }

    /// The forward call's output, with `logits`.
    pub fn into_output(mut self, logits: Option<Tensor>) -> candle_core::Result<ForwardOutput> {
        self.settle()?;
        Ok(ForwardOutput {
            logits,
            routing: self.routing,
            drift: self.drift,
            ffn_inputs: self.ffn_inputs,
        })
    }
}
