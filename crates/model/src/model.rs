//! The generic decoder: embedding, decoder layers, final norm and output head, over
//! left-padded batches ([`TokenBatch`]) with a [`KvCache`] and the hooks of
//! [`crate::hooks`].

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{RmsNorm, VarBuilder};

use crate::batch::TokenBatch;
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hooks::{Hooks, Perturbation, Routing, RoutingDrift};
use crate::layers::{DecoderLayer, FeedForward, MoeBlock, Rotary, Step, TokenLayout};
use crate::profile::{self, Part};
use crate::record::Recorder;
use crate::rows::row_index;

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

impl ForwardOutput {
    /// The output whose row `j` is this output's row `map[j]` (logits, routing, drift;
    /// captured feed-forward inputs are dropped).
    pub(crate) fn select_rows(self, map: &[usize]) -> Result<ForwardOutput> {
        let logits = match self.logits {
            Some(l) => Some(l.index_select(&row_index(map, l.device())?, 0)?),
            None => None,
        };
        let routing = self.routing.map(|r| r.select_rows(map));
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

/// A decoder-only transformer of any supported family.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    /// The packed form of `lm_head`, made on first use.
    lm_head_packing: crate::layers::Packing,
    rotary: Rotary,
    device: Device,
    dtype: DType,
    moe_path: MoePath,
    expert_format: ExpertFormat,
}

/// How the routed experts' weights are stored ([`crate::LoadOptions::experts`]).
///
/// The quantised formats keep the experts in GGML's block formats and run them through
/// candle's quantised CPU products (each input row quantised to 8 bits per block of 256
/// values); everything else (embeddings, attention, norms, routers, shared experts, the
/// head) stays in the working dtype. They need the CPU and the f32 working dtype.
///
/// ```
/// use latentevo_model::{load, ExpertFormat, LoadOptions};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tiny/olmoe");
/// let options = LoadOptions { experts: ExpertFormat::Q8_0, ..LoadOptions::default() };
/// let loaded = load(dir, &options)?;
/// assert_eq!(loaded.model.expert_format(), ExpertFormat::Q8_0);
/// assert_eq!("q4_k".parse::<ExpertFormat>().unwrap(), ExpertFormat::Q4K);
/// # Ok::<(), latentevo_model::ModelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpertFormat {
    /// The working dtype, as every other weight.
    #[default]
    Dense,
    /// GGML Q8_0: 8-bit values, one f16 scale per 32 (8.5 bits a weight).
    Q8_0,
    /// GGML Q4_K: 4-bit values in blocks of 32 with 6-bit scales and minimums, super-blocks
    /// of 256 (4.5 bits a weight).
    Q4K,
}

impl ExpertFormat {
    /// The GGML block format, `None` for [`ExpertFormat::Dense`].
    pub fn ggml_dtype(self) -> Option<candle_core::quantized::GgmlDType> {
        use candle_core::quantized::GgmlDType;
        match self {
            ExpertFormat::Dense => None,
            ExpertFormat::Q8_0 => Some(GgmlDType::Q8_0),
            ExpertFormat::Q4K => Some(GgmlDType::Q4K),
        }
    }

    /// Whether experts in this format can run with weights of `dtype` on `device`: the
    /// quantised formats need the CPU and f32.
    pub fn runs_on(self, device: &Device, dtype: DType) -> bool {
        self == ExpertFormat::Dense || (device.is_cpu() && dtype == DType::F32)
    }

    /// The name the command line uses: `dense`, `q8_0`, `q4_k`.
    pub fn name(self) -> &'static str {
        match self {
            ExpertFormat::Dense => "dense",
            ExpertFormat::Q8_0 => "q8_0",
            ExpertFormat::Q4K => "q4_k",
        }
    }
}

impl std::fmt::Display for ExpertFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ExpertFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "dense" => Ok(ExpertFormat::Dense),
            "q8_0" => Ok(ExpertFormat::Q8_0),
            "q4_k" | "q4k" => Ok(ExpertFormat::Q4K),
            other => Err(format!("expected dense, q8_0 or q4_k, got `{other}`")),
        }
    }
}

/// Where a MoE layer's routing is decided and how its experts run.
///
/// The routing policy (free top-k, the [`crate::RoutingLock`], the drift count) is the
/// same on both paths; they differ in where the work happens:
///
/// ```
/// use latentevo_model::{load, LoadOptions, MoePath};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tiny/olmoe");
/// let mut loaded = load(dir, &LoadOptions::default())?;
/// loaded.model.set_moe_path(MoePath::Device); // check the GPU's path on the CPU
/// assert_eq!(loaded.model.moe_path(), MoePath::Device);
/// # Ok::<(), latentevo_model::ModelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MoePath {
    /// The host path on the CPU (router probabilities copied to the host, the CPU
    /// kernels' dispatch — no cost there), the device path anywhere else.
    #[default]
    Auto,
    /// The host path everywhere: on a GPU, one synchronisation per MoE layer.
    Host,
    /// The device path everywhere: routing and lock as tensor operations, the drift and
    /// the recorded routes copied down once when the forward call ends; experts through
    /// candle-nn's fused `moe_gemm` on CUDA in bf16/f16, else every expert on every token
    /// with a combine matrix (`num_experts / top_k` times the expert work).
    Device,
}

impl Model {
    /// Builds the model from weights in Hugging Face naming (`model.embed_tokens.weight`, ...).
    ///
    /// Most users call [`crate::load`] instead, which also finds the files and the tokenizer.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Self::with_expert_format(cfg, vb, ExpertFormat::Dense)
    }

    /// [`Model::new`] with the routed experts stored as `experts` says, each layer's
    /// quantised as it loads (so the working-dtype copy of all experts never exists at once).
    /// Quantised formats need the CPU and f32 weights.
    pub fn with_expert_format(
        cfg: &ModelConfig,
        vb: VarBuilder,
        experts: ExpertFormat,
    ) -> candle_core::Result<Self> {
        if cfg.moe.is_some() && !experts.runs_on(vb.device(), vb.dtype()) {
            candle_core::bail!(
                "{experts} experts run on the CPU with the f32 working dtype, not {:?} on {:?}",
                vb.dtype(),
                vb.device()
            );
        }
        let inner = vb.pp("model");
        let embed = inner.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| DecoderLayer::new(cfg, l, experts, inner.pp("layers").pp(l)))
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
            lm_head_packing: Default::default(),
            rotary: Rotary::new(cfg),
            device: vb.device().clone(),
            dtype: vb.dtype(),
            moe_path: MoePath::Auto,
            expert_format: if cfg.moe.is_some() {
                experts
            } else {
                ExpertFormat::Dense
            },
        })
    }

    /// How the routed experts' weights are stored ([`ExpertFormat::Dense`] for a dense model).
    pub fn expert_format(&self) -> ExpertFormat {
        self.expert_format
    }

    /// Bytes the routed experts' weights take, over all MoE layers (quantised: the block
    /// data; candle's CPU product keeps a repacked copy of each as well, made on first use).
    pub fn expert_bytes(&self) -> usize {
        (0..self.layers.len())
            .filter_map(|l| self.moe_block(l))
            .map(MoeBlock::expert_bytes)
            .sum()
    }

    /// Chooses where MoE layers route and dispatch ([`MoePath`]; [`MoePath::Auto`] at load).
    pub fn set_moe_path(&mut self, path: MoePath) {
        self.moe_path = path;
    }

    /// Where MoE layers route and dispatch.
    pub fn moe_path(&self) -> MoePath {
        self.moe_path
    }

    fn moe_on_device(&self) -> bool {
        match self.moe_path {
            MoePath::Auto => !self.device.is_cpu(),
            MoePath::Host => false,
            MoePath::Device => true,
        }
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

    /// The routed experts' `(gate [inter, hidden], up [inter, hidden], down [hidden,
    /// inter])` weights of MoE layer `layer`, `None` if it is dense; quantised experts
    /// give their quantised values in f32.
    pub fn expert_weights(&self, layer: usize) -> Result<Option<Vec<(Tensor, Tensor, Tensor)>>> {
        self.moe_block(layer)
            .map(|m| m.expert_weights().map_err(ModelError::from))
            .transpose()
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
        let hidden = self.embed(batch)?;
        let mut recorder = Recorder::new(hooks, batch.batch_size());
        let hidden = self.run_layers(hidden, 0..self.layers.len(), &step, cache, hooks, &mut recorder)?;
        cache.commit(&step.layout);
        Ok(recorder.into_output(self.head(&hidden, logits)?)?)
    }

    /// A forward call over `2n` rows whose rows `n..2n` are fed the same tokens as rows
    /// `0..n` and can differ from them only from layer `split` on (where a perturbation
    /// enters, as for a candidate and its unperturbed shadow): the layers below `split`
    /// run once, for rows `0..n`, and their output goes on to both halves. `cache` holds
    /// `n` rows in those layers ([`KvCache::select_rows_split`]). `lower_hooks` apply there
    /// — the hooks without rows following other rows, since a row and its twin are one
    /// row there; a following row's locked choices below `split` are counted in the drift
    /// as unchanged, as [`Model::forward`] counts them.
    pub(crate) fn forward_twinned(
        &self,
        batch: &TokenBatch,
        cache: &mut KvCache,
        hooks: &Hooks,
        lower_hooks: &Hooks,
        logits: LogitsMode,
        split: usize,
    ) -> Result<ForwardOutput> {
        let rows = batch.batch_size();
        let n = rows / 2;
        if !rows.is_multiple_of(2)
            || batch.ids()[..n] != batch.ids()[n..]
            || batch.valid()[..n] != batch.valid()[n..]
        {
            return Err(ModelError::InvalidRequest(
                "a twinned forward call takes two halves with the same tokens".into(),
            ));
        }
        if split > self.layers.len() {
            return Err(self.layer_out_of_range(split));
        }
        if hooks.perturb.is_some_and(|p| p.layer < split) || lower_hooks.perturb.is_some() {
            return Err(ModelError::InvalidRequest(format!(
                "a twinned forward call shares the layers below {split}: no perturbation may enter there"
            )));
        }
        let step = self.prepare(batch, cache)?;
        let half = profile::time(Part::Setup, || step.first_rows(n))?;
        let hidden = self.embed(&batch.first_rows(n))?;
        let mut lower = Recorder::new(lower_hooks, n);
        let hidden = self.run_layers(hidden, 0..split, &half, cache, lower_hooks, &mut lower)?;
        let mut recorder = Recorder::new(hooks, rows);
        recorder.absorb_twins(lower)?;
        if let (Some(lock), Some(moe)) = (hooks.lock, self.cfg.moe.as_ref()) {
            let layout = &half.layout;
            for l in (0..split).filter(|&l| self.cfg.is_moe_layer(l)) {
                for idx in (0..layout.batch * layout.seq).filter(|&i| layout.valid[i]) {
                    let (row, position) = (idx / layout.seq, layout.positions[idx]);
                    if lock.covers(l, position)
                        && lock.leader(row).is_some()
                        && lock.route(l, row, position).is_none()
                    {
                        recorder.drift().add(row, 0, moe.top_k as u64);
                    }
                }
            }
        }
        let hidden = Tensor::cat(&[&hidden, &hidden], 0)?;
        let hidden = self.run_layers(
            hidden,
            split..self.layers.len(),
            &step,
            cache,
            hooks,
            &mut recorder,
        )?;
        cache.commit(&step.layout);
        Ok(recorder.into_output(self.head(&hidden, logits)?)?)
    }

    pub(crate) fn layer_out_of_range(&self, layer: usize) -> ModelError {
        ModelError::InvalidRequest(format!(
            "layer {layer} is out of range: the model has {} layers (0..={})",
            self.layers.len(),
            self.layers.len().saturating_sub(1)
        ))
    }

    pub(crate) fn prepare(&self, batch: &TokenBatch, cache: &KvCache) -> Result<Step> {
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
        if let Some(bad) = batch.ids().iter().flatten().find(|&&id| id >= vocab) {
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
                let is_valid = batch.valid()[row][i];
                positions.push(next);
                if is_valid {
                    next += 1;
                }
                valid.push(is_valid);
                let keys_valid = past_valid.iter().chain(&batch.valid()[row]);
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
            moe_on_device: self.moe_on_device(),
        })
    }

    pub(crate) fn embed(&self, batch: &TokenBatch) -> Result<Tensor> {
        profile::time(Part::Setup, || self.embed_inner(batch))
    }

    fn embed_inner(&self, batch: &TokenBatch) -> Result<Tensor> {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let flat: Vec<u32> = batch.ids().iter().flatten().copied().collect();
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

    /// Runs `layers` over `hidden`, applying `hooks` (the perturbation where its layer
    /// comes up) and handing every layer's report to `recorder`.
    pub(crate) fn run_layers(
        &self,
        mut hidden: Tensor,
        layers: std::ops::Range<usize>,
        step: &Step,
        cache: &mut KvCache,
        hooks: &Hooks,
        recorder: &mut Recorder,
    ) -> Result<Tensor> {
        if let Some(p) = hooks.perturb {
            if p.layer >= self.layers.len() {
                return Err(self.layer_out_of_range(p.layer));
            }
        }
        crate::kernels::in_pool(|| {
            for l in layers {
                if let Some(p) = hooks.perturb.filter(|p| p.layer == l) {
                    hidden = profile::time(Part::Setup, || self.perturb(&hidden, p, &step.layout))?;
                }
                let (next, report) =
                    self.layers[l].forward(&hidden, step, &mut cache.layers[l], hooks, recorder.drift())?;
                hidden = next;
                recorder.record(l, report);
            }
            Ok(hidden)
        })
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

    pub(crate) fn head(&self, hidden: &Tensor, mode: LogitsMode) -> Result<Option<Tensor>> {
        profile::time(Part::LmHead, || {
            crate::kernels::in_pool(|| self.head_inner(hidden, mode))
        })
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
        let logits =
            crate::layers::matmul_wt(&x, &self.lm_head, Some(&self.lm_head_packing))?.to_dtype(DType::F32)?;
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
