//! The generic decoder: embedding, decoder layers, final norm and output head, with a KV
//! cache, left-padded batches and the hooks of [`crate::hooks`].

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{RmsNorm, VarBuilder};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hooks::{Hooks, LayerRouting, Perturbation, Routing, RoutingDrift};
use crate::layers::{DecoderLayer, FeedForward, LayerKv, MoeBlock, Rotary, Step, TokenLayout};
use crate::profile::{self, Part};

/// A batch of token sequences of unequal length, left-padded to a rectangle.
///
/// ```
/// use latentevo_model::TokenBatch;
/// let batch = TokenBatch::left_padded(&[vec![5, 6, 7], vec![8]], 0);
/// assert_eq!(batch.ids(), &[vec![5, 6, 7], vec![0, 0, 8]]);
/// assert_eq!(batch.valid()[1], vec![false, false, true]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    ids: Vec<Vec<u32>>,
    valid: Vec<Vec<bool>>,
}

impl TokenBatch {
    /// Left-pads `sequences` with `pad_id` to the longest one.
    pub fn left_padded(sequences: &[Vec<u32>], pad_id: u32) -> Self {
        let len = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let ids = sequences
            .iter()
            .map(|s| {
                std::iter::repeat_n(pad_id, len - s.len())
                    .chain(s.iter().copied())
                    .collect()
            })
            .collect();
        let valid = sequences
            .iter()
            .map(|s| {
                std::iter::repeat_n(false, len - s.len())
                    .chain(std::iter::repeat_n(true, s.len()))
                    .collect()
            })
            .collect();
        TokenBatch { ids, valid }
    }

    /// Right-pads `sequences` with `pad_id` to the longest one (e.g. continuations after a
    /// shared cached context, so that each row's tokens start at the same place).
    ///
    /// ```
    /// use latentevo_model::TokenBatch;
    /// let batch = TokenBatch::right_padded(&[vec![5, 6, 7], vec![8]], 0);
    /// assert_eq!(batch.ids(), &[vec![5, 6, 7], vec![8, 0, 0]]);
    /// ```
    pub fn right_padded(sequences: &[Vec<u32>], pad_id: u32) -> Self {
        let len = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let pad = |s: &Vec<u32>| len - s.len();
        TokenBatch {
            ids: sequences
                .iter()
                .map(|s| {
                    s.iter()
                        .copied()
                        .chain(std::iter::repeat_n(pad_id, pad(s)))
                        .collect()
                })
                .collect(),
            valid: sequences
                .iter()
                .map(|s| {
                    std::iter::repeat_n(true, s.len())
                        .chain(std::iter::repeat_n(false, pad(s)))
                        .collect()
                })
                .collect(),
        }
    }

    /// One token per row (a generation step).
    pub fn column(tokens: &[u32]) -> Self {
        TokenBatch {
            ids: tokens.iter().map(|&t| vec![t]).collect(),
            valid: vec![vec![true]; tokens.len()],
        }
    }

    /// The padded ids, `[batch][seq]`.
    pub fn ids(&self) -> &[Vec<u32>] {
        &self.ids
    }

    /// Which entries are real tokens, `[batch][seq]`.
    pub fn valid(&self) -> &[Vec<bool>] {
        &self.valid
    }

    /// Number of rows.
    pub fn batch_size(&self) -> usize {
        self.ids.len()
    }

    /// Padded length.
    pub fn seq_len(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }
}

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    /// `[batch, seq, vocab]`: every position (for scoring).
    All,
    /// `[batch, vocab]`: the last position (for generation).
    Last,
    /// None (e.g. filling a cache).
    None,
}

/// What a forward call returns.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// Logits as `f32`, shaped per [`LogitsMode`].
    pub logits: Option<Tensor>,
    /// The routing used, when it was recorded.
    pub routing: Option<Routing>,
    /// Routing drift of locked tokens (zero counts when nothing was locked).
    pub drift: RoutingDrift,
    /// Per layer run, its feed-forward input `[batch, seq, hidden]`, when
    /// [`Hooks::capture_ffn_inputs`] asked for them (empty otherwise).
    pub ffn_inputs: Vec<Tensor>,
}

/// Keys and values of past tokens, per layer, with the padding layout of each row.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    key_valid: Vec<Vec<bool>>,
    next_position: Vec<usize>,
}

impl KvCache {
    fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
            key_valid: Vec::new(),
            next_position: Vec::new(),
        }
    }

    /// Number of cached token slots (padding included).
    pub fn len(&self) -> usize {
        self.key_valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of rows.
    pub fn batch_size(&self) -> usize {
        self.key_valid.len()
    }

    /// The RoPE position the next real token of each row will get.
    pub fn next_positions(&self) -> &[usize] {
        &self.next_position
    }

    /// Copies a one-row cache to `n` rows (a population sharing a prompt).
    pub fn repeat(&self, n: usize) -> Result<KvCache> {
        if self.batch_size() != 1 {
            return Err(ModelError::InvalidRequest(format!(
                "only a one-row cache can be repeated, this one has {} rows",
                self.batch_size()
            )));
        }
        Ok(KvCache {
            layers: self.repeat_layers(n)?,
            key_valid: vec![self.key_valid[0].clone(); n],
            next_position: vec![self.next_position[0]; n],
        })
    }

    /// A cache whose row `j` is this cache's row `map[j]`.
    pub(crate) fn select_rows(&self, map: &[usize]) -> Result<KvCache> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some(c) => {
                    let (k, v) = (c.keys()?, c.values()?);
                    let index = row_index(map, Some(k.device()))?.expect("device given");
                    Ok(Some(LayerKv::new(
                        k.index_select(&index, 0)?,
                        v.index_select(&index, 0)?,
                    )?))
                }
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            key_valid: map.iter().map(|&r| self.key_valid[r].clone()).collect(),
            next_position: map.iter().map(|&r| self.next_position[r]).collect(),
        })
    }

    fn repeat_layers(&self, n: usize) -> Result<Vec<Option<LayerKv>>> {
        self.layers
            .iter()
            .map(|l| match l {
                Some(c) => Ok(Some(LayerKv::new(
                    repeat_rows(&c.keys()?, n)?,
                    repeat_rows(&c.values()?, n)?,
                )?)),
                None => Ok(None),
            })
            .collect()
    }
}

fn row_index(map: &[usize], device: Option<&Device>) -> candle_core::Result<Option<Tensor>> {
    device
        .map(|d| Tensor::from_vec(map.iter().map(|&r| r as u32).collect::<Vec<_>>(), map.len(), d))
        .transpose()
}

impl ForwardOutput {
    /// The output whose row `j` is this output's row `map[j]` (logits, routing, drift;
    /// captured feed-forward inputs are dropped).
    pub(crate) fn select_rows(self, map: &[usize]) -> Result<ForwardOutput> {
        let logits = match self.logits {
            Some(l) => Some(l.index_select(&row_index(map, Some(l.device()))?.expect("device given"), 0)?),
            None => None,
        };
        let routing = self.routing.map(|r| Routing {
            layers: r
                .layers
                .into_iter()
                .map(|l| LayerRouting {
                    layer: l.layer,
                    rows: if l.rows.len() == 1 {
                        vec![l.rows[0].clone(); map.len()]
                    } else {
                        map.iter().map(|&m| l.rows[m].clone()).collect()
                    },
                })
                .collect(),
        });
        let drift = RoutingDrift {
            rows: map
                .iter()
                .map(|&m| self.drift.rows.get(m).copied().unwrap_or((0, 0)))
                .collect(),
        };
        Ok(ForwardOutput {
            logits,
            routing,
            drift,
            ffn_inputs: Vec::new(),
        })
    }
}

fn repeat_rows(t: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let mut reps = vec![1; t.rank()];
    reps[0] = n;
    t.repeat(reps)
}

impl Step {
    fn repeat(&self, n: usize) -> Result<Step> {
        let layout = &self.layout;
        if layout.batch != 1 {
            return Err(ModelError::InvalidRequest(
                "only a one-row prefix can be repeated".into(),
            ));
        }
        Ok(Step {
            layout: TokenLayout {
                batch: n,
                seq: layout.seq,
                positions: layout.positions.repeat(n),
                valid: layout.valid.repeat(n),
            },
            mask: repeat_rows(&self.mask, n)?,
            cos: repeat_rows(&self.cos, n)?,
            sin: repeat_rows(&self.sin, n)?,
        })
    }
}

/// The prompt's pass through the layers below a perturbed layer, computed once and shared.
///
/// Made by [`Model::prefill_prefix`]; [`Prefix::repeat`] copies it to a whole population,
/// and [`Model::forward_prefix`] runs the remaining layers with hooks.
#[derive(Debug, Clone)]
pub struct Prefix {
    layer: usize,
    hidden: Tensor,
    cache: KvCache,
    step: Step,
    routing: Option<Routing>,
}

impl Prefix {
    /// The layer whose input this prefix holds.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// The hidden states entering [`Prefix::layer`], `[batch, seq, hidden]`.
    pub fn hidden(&self) -> &Tensor {
        &self.hidden
    }

    /// Copies a one-row prefix to `n` rows.
    pub fn repeat(&self, n: usize) -> Result<Prefix> {
        Ok(Prefix {
            layer: self.layer,
            hidden: repeat_rows(&self.hidden, n)?,
            // The prefix's own tokens are not committed to the cache yet (that happens
            // when the upper layers have run), so only the lower layers' tensors repeat.
            cache: KvCache {
                layers: self.cache.repeat_layers(n)?,
                ..KvCache::new(self.cache.layers.len())
            },
            step: self.step.repeat(n)?,
            routing: self.routing.clone(),
        })
    }
}

/// A decoder-only transformer of any supported family.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    rotary: Rotary,
    device: Device,
    dtype: DType,
}

impl Model {
    /// Builds the model from weights in Hugging Face naming (`model.embed_tokens.weight`, ...).
    ///
    /// Most users call [`crate::load`] instead, which also finds the files and the tokenizer.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let inner = vb.pp("model");
        let embed = inner.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| DecoderLayer::new(cfg, l, inner.pp("layers").pp(l)))
            .collect::<candle_core::Result<_>>()?;
        let norm = candle_nn::rms_norm(cfg.hidden_size, cfg.rms_norm_eps, inner.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            vb.get((cfg.vocab_size, cfg.hidden_size), "lm_head.weight")?
        };
        Ok(Model {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            rotary: Rotary::new(cfg),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The working dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// An empty cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Router weight `[num_experts, hidden]` of MoE layer `layer`, if it is one.
    pub fn router_weight(&self, layer: usize) -> Option<&Tensor> {
        self.moe_block(layer).map(MoeBlock::router_weight)
    }

    /// The routed experts' `(gate, up, down)` weights of MoE layer `layer`, if it is one.
    pub fn expert_weights(&self, layer: usize) -> Option<Vec<(&Tensor, &Tensor, &Tensor)>> {
        self.moe_block(layer)
            .map(|m| m.experts().iter().map(|e| e.weights()).collect())
    }

    fn moe_block(&self, layer: usize) -> Option<&MoeBlock> {
        match &self.layers.get(layer)?.feed_forward {
            FeedForward::Moe(m) => Some(m),
            FeedForward::Dense(_) => None,
        }
    }

    /// Runs `batch` through the whole model, extending `cache`.
    ///
    /// ```no_run
    /// use latentevo_model::{load, Hooks, LoadOptions, LogitsMode, TokenBatch};
    /// let loaded = load("models/tiny/mixtral", &LoadOptions::default())?;
    /// let model = &loaded.model;
    /// let mut cache = model.new_cache();
    /// let hooks = Hooks { record_routing: true, ..Hooks::default() };
    /// let out = model.forward(&TokenBatch::left_padded(&[vec![1, 2, 3]], 0), &mut cache, &hooks, LogitsMode::All)?;
    /// assert_eq!(out.logits.unwrap().dims(), &[1, 3, model.config().vocab_size]);
    /// # Ok::<(), latentevo_model::ModelError>(())
    /// ```
    pub fn forward(
        &self,
        batch: &TokenBatch,
        cache: &mut KvCache,
        hooks: &Hooks,
        logits: LogitsMode,
    ) -> Result<ForwardOutput> {
        let step = self.prepare(batch, cache)?;
        let mut hidden = self.embed(batch)?;
        let mut drift = RoutingDrift::with_rows(batch.batch_size());
        let mut routing = hooks.record_routing.then(Routing::default);
        let mut ffn_inputs = Vec::new();
        hidden = self.run_layers(
            hidden,
            0..self.layers.len(),
            &step,
            cache,
            hooks,
            &mut drift,
            &mut routing,
            &mut ffn_inputs,
        )?;
        commit(cache, &step.layout);
        Ok(ForwardOutput {
            logits: self.head(&hidden, logits)?,
            routing,
            drift,
            ffn_inputs,
        })
    }

    /// Runs the prompt through layers `0..layer` once; no hook applies there.
    ///
    /// Records routing of those layers if `record_routing`.
    pub fn prefill_prefix(&self, batch: &TokenBatch, layer: usize, record_routing: bool) -> Result<Prefix> {
        if layer >= self.layers.len() {
            return Err(self.layer_out_of_range(layer));
        }
        let mut cache = self.new_cache();
        let step = self.prepare(batch, &cache)?;
        let hooks = Hooks {
            record_routing,
            ..Hooks::default()
        };
        let mut drift = RoutingDrift::with_rows(batch.batch_size());
        let mut routing = record_routing.then(Routing::default);
        let hidden = self.embed(batch)?;
        let mut ffn_inputs = Vec::new();
        let hidden = self.run_layers(
            hidden,
            0..layer,
            &step,
            &mut cache,
            &hooks,
            &mut drift,
            &mut routing,
            &mut ffn_inputs,
        )?;
        Ok(Prefix {
            layer,
            hidden,
            cache,
            step,
            routing,
        })
    }

    /// Runs the layers from the prefix's layer on, with `hooks`; returns the output and the
    /// filled cache (ready for generation).
    ///
    /// A perturbation must target the prefix's layer or a later one.
    pub fn forward_prefix(
        &self,
        prefix: &Prefix,
        hooks: &Hooks,
        logits: LogitsMode,
    ) -> Result<(ForwardOutput, KvCache)> {
        if let Some(p) = hooks.perturb {
            if p.layer < prefix.layer {
                return Err(ModelError::InvalidRequest(format!(
                    "perturbation at layer {} lies inside the shared prefix (layers below {})",
                    p.layer, prefix.layer
                )));
            }
        }
        let mut cache = prefix.cache.clone();
        let rows = prefix.step.layout.batch;
        let mut drift = RoutingDrift::with_rows(rows);
        let mut routing = hooks.record_routing.then(|| match &prefix.routing {
            Some(r) if r.layers.iter().all(|l| l.rows.len() == rows) => r.clone(),
            Some(r) => broadcast_routing(r, rows),
            None => Routing::default(),
        });
        let mut ffn_inputs = Vec::new();
        let hidden = self.run_layers(
            prefix.hidden.clone(),
            prefix.layer..self.layers.len(),
            &prefix.step,
            &mut cache,
            hooks,
            &mut drift,
            &mut routing,
            &mut ffn_inputs,
        )?;
        commit(&mut cache, &prefix.step.layout);
        Ok((
            ForwardOutput {
                logits: self.head(&hidden, logits)?,
                routing,
                drift,
                ffn_inputs,
            },
            cache,
        ))
    }

    fn layer_out_of_range(&self, layer: usize) -> ModelError {
        ModelError::InvalidRequest(format!(
            "layer {layer} is out of range: the model has {} layers (0..={})",
            self.layers.len(),
            self.layers.len().saturating_sub(1)
        ))
    }

    fn prepare(&self, batch: &TokenBatch, cache: &KvCache) -> Result<Step> {
        profile::time(Part::Setup, || self.prepare_inner(batch, cache))
    }

    fn prepare_inner(&self, batch: &TokenBatch, cache: &KvCache) -> Result<Step> {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        if b == 0 || t == 0 {
            return Err(ModelError::InvalidRequest("empty batch".into()));
        }
        if !cache.is_empty() && cache.batch_size() != b {
            return Err(ModelError::InvalidRequest(format!(
                "batch has {b} rows but the cache has {}",
                cache.batch_size()
            )));
        }
        let vocab = self.cfg.vocab_size as u32;
        if let Some(bad) = batch.ids.iter().flatten().find(|&&id| id >= vocab) {
            return Err(ModelError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        let past = cache.len();
        let mut positions = Vec::with_capacity(b * t);
        let mut valid = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t * (past + t));
        for row in 0..b {
            let mut next = cache.next_position.get(row).copied().unwrap_or(0);
            let past_valid = cache.key_valid.get(row).map(Vec::as_slice).unwrap_or(&[]);
            for i in 0..t {
                let is_valid = batch.valid[row][i];
                positions.push(next);
                if is_valid {
                    next += 1;
                }
                valid.push(is_valid);
                let keys_valid = past_valid.iter().chain(&batch.valid[row]);
                for (j, &key_valid) in keys_valid.enumerate() {
                    let causal = j <= past + i;
                    // A padding query attends to itself only, so its softmax stays finite.
                    let allowed = (causal && key_valid && is_valid) || j == past + i;
                    mask.push(if allowed { 0.0f32 } else { f32::NEG_INFINITY });
                }
            }
            if next > self.cfg.max_position_embeddings {
                return Err(ModelError::InvalidRequest(format!(
                    "sequence of {next} tokens exceeds max_position_embeddings = {}",
                    self.cfg.max_position_embeddings
                )));
            }
        }
        let layout = TokenLayout {
            batch: b,
            seq: t,
            positions,
            valid,
        };
        let mask = Tensor::from_vec(mask, (b, 1, t, past + t), &self.device)?;
        let (cos, sin) = self.rotary.cos_sin(&layout, &self.device, self.dtype)?;
        Ok(Step {
            layout,
            mask,
            cos,
            sin,
        })
    }

    fn embed(&self, batch: &TokenBatch) -> Result<Tensor> {
        profile::time(Part::Setup, || self.embed_inner(batch))
    }

    fn embed_inner(&self, batch: &TokenBatch) -> Result<Tensor> {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let flat: Vec<u32> = batch.ids.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, b * t, &self.device)?;
        let mut x = self
            .embed
            .index_select(&ids, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        if self.cfg.embedding_multiplier != 1.0 {
            x = (x * self.cfg.embedding_multiplier)?;
        }
        Ok(x)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_layers(
        &self,
        mut hidden: Tensor,
        layers: std::ops::Range<usize>,
        step: &Step,
        cache: &mut KvCache,
        hooks: &Hooks,
        drift: &mut RoutingDrift,
        routing: &mut Option<Routing>,
        captured: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        if let Some(p) = hooks.perturb {
            if p.layer >= self.layers.len() {
                return Err(self.layer_out_of_range(p.layer));
            }
        }
        for l in layers {
            if let Some(p) = hooks.perturb.filter(|p| p.layer == l) {
                hidden = profile::time(Part::Setup, || self.perturb(&hidden, p, &step.layout))?;
            }
            let (next, report) = self.layers[l].forward(&hidden, step, &mut cache.layers[l], hooks, drift)?;
            hidden = next;
            captured.extend(report.ffn_input);
            if let (Some(routing), Some(rows)) = (routing.as_mut(), report.routes) {
                routing.extend(Routing {
                    layers: vec![LayerRouting { layer: l, rows }],
                });
            }
        }
        Ok(hidden)
    }

    fn perturb(&self, hidden: &Tensor, p: &Perturbation, layout: &TokenLayout) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let delta = p.delta.to_device(&self.device)?.to_dtype(self.dtype)?;
        let delta = match *delta.dims() {
            [db, dh] if (db == b || db == 1) && dh == h => delta.unsqueeze(1)?,
            [db, dt, dh] if (db == b || db == 1) && dt == t && dh == h => delta,
            _ => {
                return Err(ModelError::InvalidRequest(format!(
                    "perturbation delta has shape {:?}; expected [{b} or 1, {h}] or [{b} or 1, {t}, {h}]",
                    delta.dims()
                )))
            }
        };
        let mask: Vec<f32> = (0..b * t)
            .map(|i| {
                f32::from(u8::from(
                    layout.valid[i] && p.positions.contains(layout.positions[i]),
                ))
            })
            .collect();
        let mask = Tensor::from_vec(mask, (b, t, 1), &self.device)?.to_dtype(self.dtype)?;
        Ok((hidden + delta.broadcast_mul(&mask)?)?)
    }

    fn head(&self, hidden: &Tensor, mode: LogitsMode) -> Result<Option<Tensor>> {
        profile::time(Part::LmHead, || self.head_inner(hidden, mode))
    }

    fn head_inner(&self, hidden: &Tensor, mode: LogitsMode) -> Result<Option<Tensor>> {
        let x = match mode {
            LogitsMode::None => return Ok(None),
            LogitsMode::All => hidden.clone(),
            LogitsMode::Last => {
                let t = hidden.dim(1)?;
                hidden.i((.., t - 1, ..))?.unsqueeze(1)?
            }
        };
        let x = self.norm.forward(&x)?;
        let logits = crate::layers::matmul_wt(&x, &self.lm_head)?.to_dtype(DType::F32)?;
        let logits = if self.cfg.logits_scaling != 1.0 {
            (logits / self.cfg.logits_scaling)?
        } else {
            logits
        };
        Ok(Some(match mode {
            LogitsMode::Last => logits.squeeze(1)?,
            _ => logits,
        }))
    }
}

fn commit(cache: &mut KvCache, layout: &TokenLayout) {
    if cache.key_valid.is_empty() {
        cache.key_valid = vec![Vec::new(); layout.batch];
        cache.next_position = vec![0; layout.batch];
    }
    for row in 0..layout.batch {
        let valid = &layout.valid[row * layout.seq..(row + 1) * layout.seq];
        cache.key_valid[row].extend_from_slice(valid);
        cache.next_position[row] += valid.iter().filter(|&&v| v).count();
    }
}

fn broadcast_routing(r: &Routing, rows: usize) -> Routing {
    Routing {
        layers: r
            .layers
            .iter()
            .map(|l| LayerRouting {
                layer: l.layer,
                rows: if l.rows.len() == 1 {
                    vec![l.rows[0].clone(); rows]
                } else {
                    l.rows.clone()
                },
            })
            .collect(),
    }
}
