//! Hooks into the forward pass: perturbing the residual stream, recording expert routing,
//! and replaying ("locking") a recorded routing.
//!
//! Positions are RoPE positions: the index of a token among the real (non-padding) tokens
//! of its sequence. With left padding, position 0 is a sequence's first real token, so a
//! hook means the same token in every row of a batch.

use candle_core::Tensor;

/// A set of token positions (RoPE positions, see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Positions {
    /// Every position.
    #[default]
    All,
    /// `start..end`; `end = None` means no upper bound (e.g. "the prompt and everything generated after it").
    Range {
        /// First position included.
        start: usize,
        /// First position excluded, if any.
        end: Option<usize>,
    },
}

impl Positions {
    /// The first `n` positions, `0..n`: e.g. the prompt.
    pub fn first(n: usize) -> Self {
        Positions::Range {
            start: 0,
            end: Some(n),
        }
    }

    /// Positions `start..`: e.g. only generated tokens.
    pub fn starting_at(start: usize) -> Self {
        Positions::Range { start, end: None }
    }

    /// Whether `position` is in the set.
    pub fn contains(&self, position: usize) -> bool {
        match *self {
            Positions::All => true,
            Positions::Range { start, end } => position >= start && end.is_none_or(|e| position < e),
        }
    }
}

/// An additive perturbation of the residual stream entering one decoder layer.
///
/// `delta` is either `[batch, hidden]` (one vector per sequence, added at every selected
/// position) or `[batch, seq, hidden]` (one vector per token of the current forward call).
/// A batch dimension of 1 is broadcast over the batch.
#[derive(Debug, Clone)]
pub struct Perturbation {
    /// The decoder layer whose input is perturbed (0-based).
    pub layer: usize,
    /// The vectors to add.
    pub delta: Tensor,
    /// Where to add them.
    pub positions: Positions,
}

/// The experts one token was sent to in one layer, in the router's rank order.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRoute {
    /// RoPE position of the token.
    pub position: usize,
    /// Expert ids, highest router probability first.
    pub experts: Vec<u32>,
    /// The weight each expert's output was given.
    pub weights: Vec<f32>,
}

/// Routing of one MoE layer: for each sequence of the batch, its tokens in position order.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRouting {
    /// Decoder layer index.
    pub layer: usize,
    /// `rows[b]` holds the routes of sequence `b`'s real tokens.
    pub rows: Vec<Vec<TokenRoute>>,
}

impl LayerRouting {
    /// The route of sequence `row` at `position`, if recorded. A recording with one row
    /// serves every row (a population sharing a prompt).
    pub fn get(&self, row: usize, position: usize) -> Option<&TokenRoute> {
        let routes = if self.rows.len() == 1 {
            &self.rows[0]
        } else {
            self.rows.get(row)?
        };
        // Routes are recorded in position order, usually starting at 0.
        match routes.get(position) {
            Some(r) if r.position == position => Some(r),
            _ => routes
                .binary_search_by_key(&position, |r| r.position)
                .ok()
                .map(|i| &routes[i]),
        }
    }
}

/// Routing decisions of every MoE layer of a forward pass (or a whole generation).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Routing {
    /// One entry per MoE layer, in layer order.
    pub layers: Vec<LayerRouting>,
}

impl Routing {
    /// The routing of decoder layer `layer`, if it is a MoE layer that was recorded.
    pub fn layer(&self, layer: usize) -> Option<&LayerRouting> {
        self.layers.iter().find(|l| l.layer == layer)
    }

    /// The routes of positions `0..end` only (e.g. the prompt's part of a generation's
    /// record, to lock a population that writes its own continuations).
    pub fn before(&self, end: usize) -> Routing {
        self.map_rows(|routes| routes.iter().filter(|r| r.position < end).cloned().collect())
    }

    /// A routing of the same layers and rows whose route lists are `f` of this one's.
    ///
    /// ```
    /// use latentevo_model::{LayerRouting, Routing, TokenRoute};
    /// let route = TokenRoute { position: 0, experts: vec![1, 2], weights: vec![0.5, 0.5] };
    /// let r = Routing { layers: vec![LayerRouting { layer: 3, rows: vec![vec![route]] }] };
    /// let none = r.map_rows(|_| Vec::new());
    /// assert!(none.layers[0].rows[0].is_empty());
    /// ```
    pub fn map_rows(&self, f: impl Fn(&[TokenRoute]) -> Vec<TokenRoute>) -> Routing {
        self.map_layers(|l| l.rows.iter().map(|routes| f(routes)).collect())
    }

    /// The routing whose row `j` is this one's row `map[j]`; a layer recorded with one row
    /// (a prompt shared by a population) serves every row.
    pub(crate) fn select_rows(&self, map: &[usize]) -> Routing {
        self.map_layers(|l| {
            if l.rows.len() == 1 {
                vec![l.rows[0].clone(); map.len()]
            } else {
                map.iter().map(|&m| l.rows[m].clone()).collect()
            }
        })
    }

    /// A routing of the same layers whose rows are `f` of each layer.
    fn map_layers(&self, f: impl Fn(&LayerRouting) -> Vec<Vec<TokenRoute>>) -> Routing {
        Routing {
            layers: self
                .layers
                .iter()
                .map(|l| LayerRouting {
                    layer: l.layer,
                    rows: f(l),
                })
                .collect(),
        }
    }

    /// Appends `later` (a later forward call over the same sequences) to this record.
    pub fn extend(&mut self, later: Routing) {
        for incoming in later.layers {
            match self.layers.iter_mut().find(|l| l.layer == incoming.layer) {
                Some(existing) => {
                    if existing.rows.len() < incoming.rows.len() {
                        existing.rows.resize(incoming.rows.len(), Vec::new());
                    }
                    for (row, routes) in incoming.rows.into_iter().enumerate() {
                        existing.rows[row].extend(routes);
                    }
                }
                None => self.layers.push(incoming),
            }
        }
        self.layers.sort_by_key(|l| l.layer);
    }

    /// Expert ids as nested lists `[layer][position][rank]` for sequence `row`: the
    /// format of `latentevo forward --json`.
    pub fn expert_ids(&self, row: usize) -> Vec<Vec<Vec<u32>>> {
        self.layers
            .iter()
            .map(|l| {
                l.rows
                    .get(row)
                    .map(|routes| routes.iter().map(|r| r.experts.clone()).collect())
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// How a locked token's expert weights are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockWeights {
    /// Recompute from the current router logits over the locked experts, with the
    /// family's own weighting (softmax, then renormalisation where the family does it).
    #[default]
    Recompute,
    /// Reuse the recorded weights as they are.
    Replay,
}

/// Force expert choices ("keep routing").
///
/// A locked token takes the experts of its recorded route. A token with no recorded route
/// (e.g. a generated one) can instead take the choice that another row of the same batch
/// makes for the same token position in the same call ([`RoutingLock::follow`]): decode a
/// perturbed row beside an unperturbed "shadow" row fed the same tokens, let the perturbed
/// row follow the shadow, and it uses the experts the unperturbed model picks for its own
/// tokens. Tokens with neither stay free.
#[derive(Debug, Clone)]
pub struct RoutingLock {
    /// The recorded routing to replay (one row serves a whole batch).
    pub routing: Routing,
    /// MoE layers to lock; `None` locks every recorded layer (and, with `follow`, every
    /// MoE layer).
    pub layers: Option<Vec<usize>>,
    /// Positions to lock; other positions stay free.
    pub positions: Positions,
    /// Where the weights come from.
    pub weights: LockWeights,
    /// `follow[r] = s`: where row `r` has no recorded route, it takes the experts row `s`
    /// uses for the token at the same place of the call (row `s` must hold a token at the
    /// same position, and must not follow another row). `follow[r] = r` leaves row `r`
    /// free there. With [`LockWeights::Replay`] the weights are row `s`'s too.
    pub follow: Option<Vec<usize>>,
}

impl RoutingLock {
    /// Locks every recorded layer and position, recomputing weights.
    pub fn new(routing: Routing) -> Self {
        RoutingLock {
            routing,
            layers: None,
            positions: Positions::All,
            weights: LockWeights::Recompute,
            follow: None,
        }
    }

    /// Whether tokens at `position` of MoE layer `layer` are locked at all.
    pub(crate) fn covers(&self, layer: usize, position: usize) -> bool {
        self.layers.as_ref().is_none_or(|ls| ls.contains(&layer)) && self.positions.contains(position)
    }

    pub(crate) fn route(&self, layer: usize, row: usize, position: usize) -> Option<&TokenRoute> {
        if !self.covers(layer, position) {
            return None;
        }
        self.routing.layer(layer)?.get(row, position)
    }

    /// The row whose choice row `row` follows where it has no recorded route, if another one.
    pub(crate) fn leader(&self, row: usize) -> Option<usize> {
        self.follow.as_ref()?.get(row).copied().filter(|&s| s != row)
    }
}

/// Routing drift: how many locked top-k choices the free router would have changed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutingDrift {
    /// Per sequence: `(changed, locked)` counts of top-k choices over all locked tokens and layers.
    pub rows: Vec<(u64, u64)>,
}

impl RoutingDrift {
    pub(crate) fn with_rows(rows: usize) -> Self {
        RoutingDrift {
            rows: vec![(0, 0); rows],
        }
    }

    pub(crate) fn add(&mut self, row: usize, changed: u64, locked: u64) {
        if self.rows.len() <= row {
            self.rows.resize(row + 1, (0, 0));
        }
        self.rows[row].0 += changed;
        self.rows[row].1 += locked;
    }

    /// Accumulates the counts of a later forward call.
    pub fn merge(&mut self, later: &RoutingDrift) {
        for (row, &(changed, locked)) in later.rows.iter().enumerate() {
            self.add(row, changed, locked);
        }
    }

    /// Share of locked choices that the free router would have changed, over the batch
    /// (0 when nothing was locked).
    pub fn share(&self) -> f64 {
        let (changed, locked) = self
            .rows
            .iter()
            .fold((0, 0), |(c, l), &(ci, li)| (c + ci, l + li));
        if locked == 0 {
            0.0
        } else {
            changed as f64 / locked as f64
        }
    }

    /// Share for one sequence.
    pub fn row_share(&self, row: usize) -> f64 {
        match self.rows.get(row) {
            Some(&(changed, locked)) if locked > 0 => changed as f64 / locked as f64,
            _ => 0.0,
        }
    }
}

/// The hooks of one forward call.
#[derive(Debug, Clone, Default)]
pub struct Hooks<'a> {
    /// Residual-stream perturbation, if any.
    pub perturb: Option<&'a Perturbation>,
    /// Record every MoE layer's routing decisions.
    pub record_routing: bool,
    /// Routing to force, if any.
    pub lock: Option<&'a RoutingLock>,
    /// Keep every layer's feed-forward input (the residual stream after
    /// `post_attention_layernorm`), e.g. to fit routers or probes on it.
    pub capture_ffn_inputs: bool,
}
