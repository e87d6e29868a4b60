//! The upcycling methods: dense llama MLPs into Mixtral-style MoE blocks.
//!
//! - [`Method::Copies`] (sparse upcycling): every expert is a copy of the dense MLP,
//!   optionally with small Gaussian noise, so experts differ only by that noise. The
//!   noise level is either relative to each weight matrix's standard deviation
//!   ([`NoiseMode::Weights`], the default) or calibrated so that every expert's output
//!   on the calibration text deviates from the dense MLP's by the same relative RMS
//!   ([`NoiseMode::Output`]: a draw that happens to hit sensitive directions is scaled
//!   down, so no single expert is much worse than the others). The router's rows are spherical
//!   k-means centroids of the layer's MLP inputs over a calibration text
//!   ([`RouterInit::KMeans`]) or random ([`RouterInit::Random`]).
//! - [`Method::Split`] (MoEfication): the MLP's intermediate neurons are split into
//!   `experts` equal groups by balanced k-means of their activation patterns over the
//!   calibration text; expert `e` is the slice of `gate`/`up` rows and `down` columns of
//!   group `e`. The router is a ridge regression from the MLP input to each group's
//!   output norm, so top-k picks the groups predicted to contribute most; its logits are
//!   scaled small so the renormalised top-k weights are near `1/k`, and each expert's
//!   `down` is scaled by `k`, so the selected groups add up as in the dense MLP.
//!
//! Both are deterministic given the seed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use latentevo_model::{Model, ModelConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde_json::{json, Value as Json};

use crate::cluster::{balanced_kmeans, ridge, spherical_kmeans};
use crate::dense::{cached_model, DenseCheckpoint};
use crate::error::{CandleContext, Result, UpcycleError};

/// How experts are made from the dense MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Sparse upcycling: experts are (noisy) copies of the dense MLP.
    Copies,
    /// MoEfication: experts are disjoint slices of the MLP's neurons.
    Split,
}

impl Method {
    /// The name used on the command line and in provenance files.
    pub fn name(self) -> &'static str {
        match self {
            Method::Copies => "copies",
            Method::Split => "split",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = UpcycleError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "copies" => Ok(Method::Copies),
            "split" => Ok(Method::Split),
            _ => Err(UpcycleError::Options(format!(
                "unknown method `{s}` (expected copies or split)"
            ))),
        }
    }
}

/// How the router of [`Method::Copies`] is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterInit {
    /// Spherical k-means centroids of the MLP inputs over the calibration text.
    KMeans,
    /// Gaussian random rows.
    Random,
}

impl RouterInit {
    /// The name used on the command line and in provenance files.
    pub fn name(self) -> &'static str {
        match self {
            RouterInit::KMeans => "kmeans",
            RouterInit::Random => "random",
        }
    }
}

impl std::str::FromStr for RouterInit {
    type Err = UpcycleError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "kmeans" => Ok(RouterInit::KMeans),
            "random" => Ok(RouterInit::Random),
            _ => Err(UpcycleError::Options(format!(
                "unknown router `{s}` (expected kmeans or random)"
            ))),
        }
    }
}

/// What the noise level of [`Method::Copies`] is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseMode {
    /// Noise std = level x the std of each weight matrix.
    Weights,
    /// Each expert's noise is scaled so its output on the calibration text deviates
    /// from the dense MLP's output by `level` in relative RMS.
    Output,
}

impl NoiseMode {
    /// The name used on the command line and in provenance files.
    pub fn name(self) -> &'static str {
        match self {
            NoiseMode::Weights => "weights",
            NoiseMode::Output => "output",
        }
    }
}

impl std::str::FromStr for NoiseMode {
    type Err = UpcycleError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "weights" => Ok(NoiseMode::Weights),
            "output" => Ok(NoiseMode::Output),
            _ => Err(UpcycleError::Options(format!(
                "unknown noise mode `{s}` (expected output or weights)"
            ))),
        }
    }
}

/// Options of [`upcycle`].
#[derive(Debug, Clone)]
pub struct UpcycleOptions {
    /// How experts are made.
    pub method: Method,
    /// Experts per MoE layer.
    pub experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// [`Method::Copies`]: noise level (see [`NoiseMode`]).
    pub noise: f64,
    /// [`Method::Copies`]: what the noise level is relative to.
    pub noise_mode: NoiseMode,
    /// [`Method::Copies`]: router initialisation.
    pub router: RouterInit,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for UpcycleOptions {
    fn default() -> Self {
        UpcycleOptions {
            method: Method::Copies,
            experts: 4,
            top_k: 2,
            noise: 0.0,
            noise_mode: NoiseMode::Weights,
            router: RouterInit::KMeans,
            seed: 0,
        }
    }
}

impl UpcycleOptions {
    /// Whether these options need a calibration text.
    pub fn needs_calibration(&self) -> bool {
        self.method == Method::Split
            || self.router == RouterInit::KMeans
            || (self.noise > 0.0 && self.noise_mode == NoiseMode::Output)
    }

    /// Checks the options against a dense model's MLP width.
    pub fn validate(&self, intermediate: usize) -> Result<()> {
        if self.experts < 1 {
            return Err(UpcycleError::Options("need at least one expert".into()));
        }
        if self.top_k < 1 || self.top_k > self.experts {
            return Err(UpcycleError::Options(format!(
                "top-k {} must be between 1 and the number of experts {}",
                self.top_k, self.experts
            )));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(UpcycleError::Options(format!(
                "noise {} must be a finite non-negative number",
                self.noise
            )));
        }
        if self.method == Method::Split && !intermediate.is_multiple_of(self.experts) {
            return Err(UpcycleError::Options(format!(
                "split: {} experts do not divide the MLP width {intermediate}",
                self.experts
            )));
        }
        Ok(())
    }
}

/// MLP inputs of every layer over a calibration text.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Per layer, `[tokens, hidden]`.
    pub mlp_inputs: Vec<Tensor>,
    /// Number of calibration tokens.
    pub tokens: usize,
}

/// Runs the dense model over `ids` (in windows of at most `window` tokens) and records
/// every layer's MLP inputs.
pub fn calibrate(dense: &DenseCheckpoint, ids: &[u32], window: usize) -> Result<Calibration> {
    if ids.is_empty() || window == 0 {
        return Err(UpcycleError::Options("empty calibration text".into()));
    }
    let model = dense.model()?;
    // Windows longer than the model's context would be refused by the decoder.
    let window = window.min(model.config().max_position_embeddings);
    let hooks = latentevo_model::Hooks {
        capture_ffn_inputs: true,
        ..Default::default()
    };
    let mut per_layer: Vec<Vec<Tensor>> = vec![Vec::new(); dense.config.num_hidden_layers];
    for chunk in ids.chunks(window) {
        let batch = latentevo_model::TokenBatch::left_padded(&[chunk.to_vec()], 0);
        let out = model.forward(
            &batch,
            &mut model.new_cache(),
            &hooks,
            latentevo_model::LogitsMode::None,
        )?;
        for (l, t) in out.ffn_inputs.into_iter().enumerate() {
            per_layer[l].push(t.squeeze(0).ctx(|| format!("calibration, layer {l}"))?);
        }
    }
    let mlp_inputs = per_layer
        .into_iter()
        .map(|ts| Tensor::cat(&ts, 0))
        .collect::<candle_core::Result<Vec<_>>>()
        .ctx(|| "calibration".into())?;
    Ok(Calibration {
        mlp_inputs,
        tokens: ids.len(),
    })
}

/// An upcycled MoE checkpoint in memory (Mixtral layout and config).
#[derive(Debug, Clone)]
pub struct MoeCheckpoint {
    /// The Mixtral `config.json`.
    pub config: Json,
    /// Tensors under Mixtral's HF names, f32 on the CPU.
    pub tensors: HashMap<String, Tensor>,
    /// The tokenizer carried over from the dense source.
    pub tokenizer: Option<tokenizers::Tokenizer>,
    /// The `tokenizer_config.json` carried over from the dense source.
    pub tokenizer_config: Option<Json>,
    /// The provenance record (source, sha256, method, options, seed).
    pub provenance: Json,
    /// The decoder over `tensors`, built on first use ([`MoeCheckpoint::model`]).
    model: OnceLock<Model>,
}

impl MoeCheckpoint {
    /// The decoder of `latentevo-model` over these weights (f32, CPU; tensors shared, not
    /// copied), built on the first call and reused after.
    pub fn model(&self) -> Result<&Model> {
        let origin = Path::new("(upcycled checkpoint in memory)");
        let config = || Ok(ModelConfig::from_json(&self.config, origin)?);
        cached_model(&self.model, config, &self.tensors, origin)
    }
}

/// Builds the Mixtral `config.json` for an upcycled dense model.
pub fn mixtral_config(dense: &DenseCheckpoint, opts: &UpcycleOptions) -> Json {
    let d = &dense.config;
    let expert_width = match opts.method {
        Method::Copies => d.intermediate_size,
        Method::Split => d.intermediate_size / opts.experts,
    };
    let mut cfg = json!({
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": d.hidden_size,
        "intermediate_size": expert_width,
        "num_hidden_layers": d.num_hidden_layers,
        "num_attention_heads": d.num_attention_heads,
        "num_key_value_heads": d.num_key_value_heads,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": d.max_position_embeddings,
        "rms_norm_eps": d.rms_norm_eps,
        "rope_theta": d.rope_theta,
        "sliding_window": null,
        "attention_dropout": 0.0,
        "num_local_experts": opts.experts,
        "num_experts_per_tok": opts.top_k,
        "output_router_logits": false,
        "router_aux_loss_coef": 0.02,
        "router_jitter_noise": 0.0,
        "tie_word_embeddings": d.tie_word_embeddings,
        "vocab_size": d.vocab_size,
        "torch_dtype": "float32",
    });
    // Carried over as they are: the model core reads them too, but a config written
    // from them would change their form (a list of eos ids, the rope scaling's keys).
    for k in ["bos_token_id", "eos_token_id", "pad_token_id", "rope_scaling"] {
        if !dense.hf_config[k].is_null() {
            cfg[k] = dense.hf_config[k].clone();
        }
    }
    cfg
}

/// Turns a dense checkpoint into a Mixtral-style MoE. `calibration` is required for
/// [`Method::Split`] and for [`RouterInit::KMeans`].
pub fn upcycle(
    dense: &DenseCheckpoint,
    opts: &UpcycleOptions,
    calibration: Option<&Calibration>,
    mut progress: impl FnMut(usize, usize),
) -> Result<MoeCheckpoint> {
    let (hidden, layers) = (dense.config.hidden_size, dense.config.num_hidden_layers);
    opts.validate(dense.config.intermediate_size)?;
    let needs_data = opts.needs_calibration();
    let calib = match (needs_data, calibration) {
        (true, None) => {
            return Err(UpcycleError::Options(
                "this method and router need a calibration text".into(),
            ))
        }
        (_, c) => c,
    };
    if let Some(c) = calib {
        if c.mlp_inputs.len() != layers {
            return Err(UpcycleError::Options(format!(
                "calibration has {} layers, the model {}",
                c.mlp_inputs.len(),
                layers
            )));
        }
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in &dense.tensors {
        if !name.contains(".mlp.") {
            tensors.insert(name.clone(), t.clone());
        }
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    for l in 0..layers {
        let w = |s: &str| dense.tensor(&format!("model.layers.{l}.mlp.{s}.weight"));
        let (gate, up, down) = (w("gate_proj")?, w("up_proj")?, w("down_proj")?);
        let p = format!("model.layers.{l}.block_sparse_moe");
        let x = calib.map(|c| &c.mlp_inputs[l]);
        let layer_seed = opts.seed.wrapping_mul(1_000_003).wrapping_add(l as u64);
        match opts.method {
            Method::Copies => {
                let probe = match (opts.noise_mode, x) {
                    (NoiseMode::Output, Some(x)) if opts.noise > 0.0 => {
                        let n = x.dim(0).ctx(|| "calibration".into())?.min(OUTPUT_PROBE_TOKENS);
                        let xs = x.narrow(0, 0, n).ctx(|| "calibration".into())?;
                        let y = mlp(&xs, gate, up, down).ctx(|| format!("layer {l} MLP"))?;
                        Some((xs, y))
                    }
                    _ => None,
                };
                for e in 0..opts.experts {
                    let [w1, w3, w2] = noisy_copy(gate, up, down, opts.noise, probe.as_ref(), &mut rng)?;
                    tensors.insert(format!("{p}.experts.{e}.w1.weight"), w1);
                    tensors.insert(format!("{p}.experts.{e}.w3.weight"), w3);
                    tensors.insert(format!("{p}.experts.{e}.w2.weight"), w2);
                }
                let router = match (opts.router, x) {
                    (RouterInit::KMeans, Some(x)) => {
                        let c = spherical_kmeans(x, opts.experts, 25, layer_seed)?;
                        scale_router(&c, x, 1.0)?
                    }
                    _ => {
                        let r = gaussian(&[opts.experts, hidden], &mut rng)?;
                        match x {
                            Some(x) => scale_router(&r, x, 1.0)?,
                            None => (r / (hidden as f64).sqrt()).ctx(|| "router".into())?,
                        }
                    }
                };
                tensors.insert(format!("{p}.gate.weight"), router);
            }
            Method::Split => {
                let x = x.ok_or_else(|| UpcycleError::Options("split needs calibration".into()))?;
                let (experts, router) = split_layer(x, gate, up, down, opts, layer_seed)
                    .ctx(|| format!("split of layer {l}"))??;
                for (e, (g, u, dn)) in experts.into_iter().enumerate() {
                    tensors.insert(format!("{p}.experts.{e}.w1.weight"), g);
                    tensors.insert(format!("{p}.experts.{e}.w3.weight"), u);
                    tensors.insert(format!("{p}.experts.{e}.w2.weight"), dn);
                }
                tensors.insert(format!("{p}.gate.weight"), router);
            }
        }
        progress(l + 1, layers);
    }
    let config = mixtral_config(dense, opts);
    let provenance = json!({
        "tool": "latentevo upcycle",
        "latentevo_version": env!("CARGO_PKG_VERSION"),
        "source": {
            "path": dense.source.path.display().to_string(),
            "format": dense.source.format,
            "sha256": dense.source.sha256,
        },
        "method": opts.method.name(),
        "experts": opts.experts,
        "top_k": opts.top_k,
        "noise": opts.noise,
        "noise_mode": opts.noise_mode.name(),
        "router": match opts.method { Method::Copies => opts.router.name(), Method::Split => "ridge-on-group-output-norms" },
        "seed": opts.seed,
        "calibration_tokens": calib.map(|c| c.tokens),
    });
    Ok(MoeCheckpoint {
        config,
        tensors,
        tokenizer: dense.tokenizer.clone(),
        tokenizer_config: dense.tokenizer_config.clone(),
        provenance,
        model: OnceLock::new(),
    })
}

type ExpertWeights = (Tensor, Tensor, Tensor);

fn split_layer(
    x: &Tensor,
    gate: &Tensor,
    up: &Tensor,
    down: &Tensor,
    opts: &UpcycleOptions,
    seed: u64,
) -> candle_core::Result<Result<(Vec<ExpertWeights>, Tensor)>> {
    let e = opts.experts;
    let act = (candle_nn::ops::silu(&x.matmul(&gate.t()?)?)? * x.matmul(&up.t()?)?)?; // [n, I]
                                                                                      // Neuron features: |activation| pattern over calibration tokens.
    let feats = act.abs()?.t()?.contiguous()?; // [I, n]
    let groups = match balanced_kmeans(&feats, e, 15, seed) {
        Ok(g) => g,
        Err(err) => return Ok(Err(err)),
    };
    let mut experts = Vec::with_capacity(e);
    let mut norms = Vec::with_capacity(e);
    let scale = opts.top_k as f64;
    for g in 0..e {
        let idx: Vec<u32> = groups
            .iter()
            .enumerate()
            .filter(|(_, &a)| a == g)
            .map(|(i, _)| i as u32)
            .collect();
        let idx = Tensor::new(idx.as_slice(), &Device::Cpu)?;
        let gw = gate.index_select(&idx, 0)?;
        let uw = up.index_select(&idx, 0)?;
        let dw = down.index_select(&idx, 1)?;
        // The group's output norm per calibration token.
        let out = act.index_select(&idx, 1)?.matmul(&dw.t()?)?;
        norms.push(out.sqr()?.sum_keepdim(1)?.sqrt()?);
        experts.push((gw, uw, (dw * scale)?));
    }
    let s = Tensor::cat(&norms, 1)?; // [n, e]
    let w = match ridge(x, &s, 1e-3) {
        Ok(w) => w,
        Err(err) => return Ok(Err(err)),
    };
    // Small logits: near-uniform weights over the chosen k (each expert's down is
    // scaled by k), same top-k order as the regression.
    let logits = x.matmul(&w.t()?)?;
    let std = logits.flatten_all()?.var(0)?.sqrt()?.to_scalar::<f32>()? as f64;
    let router = (w * (0.01 / std.max(1e-12)))?;
    Ok(Ok((experts, router)))
}

/// Scales router rows so the router logits over `x` have standard deviation `target`.
fn scale_router(r: &Tensor, x: &Tensor, target: f64) -> Result<Tensor> {
    let ctx = || "router scaling".to_string();
    let logits = x.matmul(&r.t().ctx(ctx)?).ctx(ctx)?;
    let std = logits
        .flatten_all()
        .and_then(|t| t.var(0))
        .and_then(|t| t.sqrt())
        .and_then(|t| t.to_scalar::<f32>())
        .ctx(ctx)? as f64;
    (r * (target / std.max(1e-12))).ctx(ctx)
}

fn gaussian(shape: &[usize], rng: &mut StdRng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let normal = Normal::new(0f32, 1f32).map_err(|e| UpcycleError::Options(e.to_string()))?;
    let v: Vec<f32> = (0..n).map(|_| normal.sample(rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).ctx(|| "gaussian".into())
}

/// Calibration tokens used to calibrate [`NoiseMode::Output`].
const OUTPUT_PROBE_TOKENS: usize = 384;

fn mlp(x: &Tensor, gate: &Tensor, up: &Tensor, down: &Tensor) -> candle_core::Result<Tensor> {
    let a = (candle_nn::ops::silu(&x.matmul(&gate.t()?)?)? * x.matmul(&up.t()?)?)?;
    a.matmul(&down.t()?)
}

fn rms(t: &Tensor) -> candle_core::Result<f64> {
    Ok(t.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt() as f64)
}

/// One noisy copy `[w1, w3, w2]` of the MLP. Without `probe` the noise std is `level`
/// times each matrix's std; with `probe = (inputs, dense outputs)` the same draw is
/// rescaled so the copy's output deviates from the dense output by `level` in relative
/// RMS (two secant steps; the deviation is nearly linear in the scale).
fn noisy_copy(
    gate: &Tensor,
    up: &Tensor,
    down: &Tensor,
    level: f64,
    probe: Option<&(Tensor, Tensor)>,
    rng: &mut StdRng,
) -> Result<[Tensor; 3]> {
    if level == 0.0 {
        return Ok([gate.clone(), up.clone(), down.clone()]);
    }
    let ctx = || "expert noise".to_string();
    let mut dirs = Vec::with_capacity(3);
    for base in [gate, up, down] {
        let std = base
            .flatten_all()
            .and_then(|t| t.var(0))
            .and_then(|t| t.sqrt())
            .and_then(|t| t.to_scalar::<f32>())
            .ctx(ctx)? as f64;
        dirs.push((gaussian(base.dims(), rng)? * std).ctx(ctx)?);
    }
    let at = |s: f64| -> candle_core::Result<[Tensor; 3]> {
        Ok([
            (gate + (&dirs[0] * s)?)?,
            (up + (&dirs[1] * s)?)?,
            (down + (&dirs[2] * s)?)?,
        ])
    };
    let Some((xs, y)) = probe else {
        return at(level).ctx(ctx);
    };
    let y_rms = rms(y).ctx(ctx)?.max(1e-12);
    let mut scale = level;
    for _ in 0..2 {
        let [g, u, d] = at(scale).ctx(ctx)?;
        let dev = rms(&(mlp(xs, &g, &u, &d).ctx(ctx)? - y).ctx(ctx)?).ctx(ctx)? / y_rms;
        if dev <= 1e-12 {
            break;
        }
        scale *= level / dev;
    }
    at(scale).ctx(ctx)
}
