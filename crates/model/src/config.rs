//! Model configuration: one struct for every supported family, read from `config.json`.
//!
//! Hugging Face configs differ per family in field names and defaults; this module maps
//! them onto [`ModelConfig`], whose fields say what the decoder actually does. Defaults
//! follow the family's `transformers` config class, so a hub `config.json` that omits a
//! field behaves as it does there.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ModelError, Result};

/// The architectures this crate implements, as written in `config.json`'s `architectures`.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "LlamaForCausalLM",
    "MixtralForCausalLM",
    "Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM",
    "OlmoeForCausalLM",
    "GraniteMoeForCausalLM",
];

/// A model family: one generic decoder, with these variants switched on by config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Dense Llama (SmolLM2 and friends).
    Llama,
    /// Mixtral: `block_sparse_moe` with experts `w1`/`w2`/`w3`.
    Mixtral,
    /// Qwen2-MoE / Qwen1.5-MoE: a shared expert behind a sigmoid gate, q/k/v biases.
    Qwen2Moe,
    /// Qwen3-MoE: RMS norm on each head of q and k.
    Qwen3Moe,
    /// OLMoE: RMS norm over the full q and k projections, optional clipping of q/k/v.
    Olmoe,
    /// GraniteMoE: embedding/residual/attention multipliers, logit scaling, fused experts.
    GraniteMoe,
}

impl Family {
    /// The `architectures` entry that names this family.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mixtral => "MixtralForCausalLM",
            Family::Qwen2Moe => "Qwen2MoeForCausalLM",
            Family::Qwen3Moe => "Qwen3MoeForCausalLM",
            Family::Olmoe => "OlmoeForCausalLM",
            Family::GraniteMoe => "GraniteMoeForCausalLM",
        }
    }

    fn from_name(name: &str) -> Option<Family> {
        match name {
            "LlamaForCausalLM" | "llama" => Some(Family::Llama),
            "MixtralForCausalLM" | "mixtral" => Some(Family::Mixtral),
            "Qwen2MoeForCausalLM" | "qwen2_moe" => Some(Family::Qwen2Moe),
            "Qwen3MoeForCausalLM" | "qwen3_moe" => Some(Family::Qwen3Moe),
            "OlmoeForCausalLM" | "olmoe" => Some(Family::Olmoe),
            "GraniteMoeForCausalLM" | "granitemoe" => Some(Family::GraniteMoe),
            _ => None,
        }
    }
}

/// Where RMS normalisation is applied to queries and keys, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// No normalisation (Llama, Mixtral, Qwen2-MoE, GraniteMoE).
    None,
    /// Over each head's `head_dim` features (Qwen3-MoE).
    PerHead,
    /// Over the whole projection, before splitting into heads (OLMoE).
    Full,
}

/// How the router turns logits into expert weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterMath {
    /// Renormalise the top-k softmax probabilities to sum to one (Mixtral, GraniteMoE,
    /// Qwen3-MoE with `norm_topk_prob`); otherwise use them as they are (OLMoE, Qwen2-MoE).
    pub renormalize: bool,
}

/// The Mixture-of-Experts part of a config.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// Number of routed experts per MoE layer.
    pub num_experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Hidden width of one routed expert.
    pub expert_intermediate_size: usize,
    /// Router weighting.
    pub router: RouterMath,
    /// Hidden width of the always-on shared expert (Qwen2-MoE), if any.
    pub shared_expert_intermediate_size: Option<usize>,
    /// For each decoder layer, whether its MLP is a MoE block (else a dense MLP).
    pub sparse_layers: Vec<bool>,
}

/// Everything the decoder needs to know about a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The family (selects weight names and variants).
    pub family: Family,
    /// Token vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// Width of dense MLPs (dense models and dense layers of MoE models).
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Epsilon of every RMS norm.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Llama-3 style RoPE frequency scaling, if configured.
    pub rope_llama3: Option<Llama3RopeScaling>,
    /// Longest sequence the RoPE tables cover.
    pub max_position_embeddings: usize,
    /// Whether the output projection reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Normalisation of queries and keys.
    pub qk_norm: QkNorm,
    /// Clamp q, k and v to `[-clip, clip]` (OLMoE's `clip_qkv`).
    pub clip_qkv: Option<f64>,
    /// Attention score scale; `None` means `1/sqrt(head_dim)`.
    pub attention_scale: Option<f64>,
    /// Multiplier on the token embeddings (GraniteMoE).
    pub embedding_multiplier: f64,
    /// Multiplier on each block's output before it joins the residual (GraniteMoE).
    pub residual_multiplier: f64,
    /// Divisor of the output logits (GraniteMoE's `logits_scaling`).
    pub logits_scaling: f64,
    /// MoE settings; `None` for dense models.
    pub moe: Option<MoeConfig>,
    /// Beginning-of-sequence token, if the config names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (configs may list several).
    pub eos_token_ids: Vec<u32>,
}

/// Parameters of Llama-3 RoPE scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    /// Scale factor of long wavelengths.
    pub factor: f64,
    /// Wavelength bound below which frequencies are kept.
    pub high_freq_factor: f64,
    /// Wavelength bound above which frequencies are divided by `factor`.
    pub low_freq_factor: f64,
    /// Context length the model was pre-trained with.
    pub original_max_position_embeddings: f64,
}

/// The largest value a size field (widths, counts of layers, heads, experts, tokens,
/// positions) may have: 2^24, orders of magnitude above any released model (vocabularies
/// reach ~2^18, context lengths ~2^23). A larger value is a damaged or hostile file, and
/// would make the decoder allocate per layer or overflow a product of sizes.
pub const MAX_CONFIG_SIZE: u64 = 1 << 24;

/// Typed access to config fields, with errors naming the file and field.
struct Fields<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Fields<'_> {
    fn raw(&self, field: &str) -> Option<&Value> {
        self.json.get(field).filter(|v| !v.is_null())
    }

    fn invalid(&self, field: &str, message: impl Into<String>) -> ModelError {
        ModelError::InvalidField {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        match self.raw(field) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(x) if x <= MAX_CONFIG_SIZE => Ok(Some(x as usize)),
                Some(x) => Err(self.invalid(
                    field,
                    format!("{x} is implausibly large (at most {MAX_CONFIG_SIZE})"),
                )),
                None => Err(self.invalid(field, format!("expected a non-negative integer, got {v}"))),
            },
        }
    }

    fn usize(&self, field: &str) -> Result<usize> {
        self.opt_usize(field)?.ok_or_else(|| ModelError::MissingField {
            path: self.path.to_path_buf(),
            field: field.to_string(),
        })
    }

    fn positive(&self, field: &str) -> Result<usize> {
        let value = self.usize(field)?;
        if value == 0 {
            return Err(self.invalid(field, "must be positive"));
        }
        Ok(value)
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>> {
        match self.raw(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.invalid(field, format!("expected a number, got {v}"))),
        }
    }

    fn f64_or(&self, field: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(field)?.unwrap_or(default))
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.raw(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.invalid(field, format!("expected true or false, got {v}"))),
        }
    }

    fn usize_list(&self, field: &str) -> Result<Vec<usize>> {
        match self.raw(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .filter(|&x| x <= u64::from(u32::MAX))
                        .map(|x| x as usize)
                        .ok_or_else(|| self.invalid(field, format!("expected integers below 2^32, got {v}")))
                })
                .collect(),
            Some(v) => Err(self.invalid(field, format!("expected a list of integers, got {v}"))),
        }
    }

    /// Token ids may be a single integer or a list (as `eos_token_id` often is).
    fn token_ids(&self, field: &str) -> Result<Vec<u32>> {
        match self.raw(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(_)) => Ok(self.usize_list(field)?.into_iter().map(|x| x as u32).collect()),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(|x| vec![x])
                .ok_or_else(|| self.invalid(field, format!("expected a token id, got {v}"))),
        }
    }
}

impl ModelConfig {
    /// Reads and parses a `config.json` file.
    ///
    /// ```no_run
    /// let cfg = latentevo_model::ModelConfig::from_file("models/tiny/mixtral/config.json")?;
    /// assert!(cfg.moe.is_some());
    /// # Ok::<(), latentevo_model::ModelError>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json(&read_json(path)?, path)
    }

    /// Parses an already-loaded `config.json`; `origin` names it in error messages.
    pub fn from_json(json: &Value, origin: impl AsRef<Path>) -> Result<Self> {
        let path: PathBuf = origin.as_ref().to_path_buf();
        if !json.is_object() {
            return Err(ModelError::ConfigSyntax {
                path,
                message: "expected a JSON object".into(),
            });
        }
        let f = Fields { path: &path, json };
        let family = detect_family(&f)?;

        let hidden_size = f.positive("hidden_size")?;
        let num_hidden_layers = f.positive("num_hidden_layers")?;
        let num_attention_heads = f.positive("num_attention_heads")?;
        let num_key_value_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(f.invalid(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads = {num_attention_heads}"),
            ));
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(f.invalid(
                        "hidden_size",
                        format!(
                            "{hidden_size} is not a multiple of num_attention_heads = {num_attention_heads}"
                        ),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(f.invalid(
                "head_dim",
                format!("{head_dim} must be even and positive for RoPE"),
            ));
        }
        if let Some(act) = f.raw("hidden_act") {
            if act.as_str() != Some("silu") {
                return Err(f.invalid("hidden_act", format!("only \"silu\" is supported, got {act}")));
            }
        }

        let (default_eps, default_theta) = match family {
            Family::Llama | Family::Qwen2Moe | Family::Qwen3Moe | Family::GraniteMoe => (1e-6, 10_000.0),
            Family::Mixtral => (1e-5, 1_000_000.0),
            Family::Olmoe => (1e-5, 10_000.0),
        };
        let rope_parameters = json.get("rope_parameters").filter(|v| v.is_object());
        let rope_scaling = json.get("rope_scaling").filter(|v| v.is_object());
        let rope_theta = match f.opt_f64("rope_theta")? {
            Some(t) => t,
            None => rope_parameters
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(default_theta),
        };
        let rope_llama3 = parse_rope_scaling(&f, rope_scaling.or(rope_parameters))?;

        let moe = parse_moe(&f, family, num_hidden_layers)?;
        let intermediate_size = match (family, &moe) {
            // GraniteMoE and Mixtral have no dense layers; their intermediate_size is the expert width.
            (Family::Mixtral | Family::GraniteMoe | Family::Olmoe, Some(m)) => f
                .opt_usize("intermediate_size")?
                .unwrap_or(m.expert_intermediate_size),
            _ => f.positive("intermediate_size")?,
        };

        let attention_scale = match family {
            Family::GraniteMoe => Some(f.f64_or("attention_multiplier", 1.0)?),
            _ => None,
        };
        let (embedding_multiplier, residual_multiplier, logits_scaling) = match family {
            Family::GraniteMoe => (
                f.f64_or("embedding_multiplier", 1.0)?,
                f.f64_or("residual_multiplier", 1.0)?,
                f.f64_or("logits_scaling", 1.0)?,
            ),
            _ => (1.0, 1.0, 1.0),
        };
        if logits_scaling == 0.0 {
            return Err(f.invalid("logits_scaling", "must not be zero"));
        }

        Ok(ModelConfig {
            family,
            vocab_size: f.positive("vocab_size")?,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.f64_or("rms_norm_eps", default_eps)?,
            rope_theta,
            rope_llama3,
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(4096),
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            qk_norm: match family {
                Family::Qwen3Moe => QkNorm::PerHead,
                Family::Olmoe => QkNorm::Full,
                _ => QkNorm::None,
            },
            clip_qkv: match family {
                Family::Olmoe => f.opt_f64("clip_qkv")?,
                _ => None,
            },
            attention_scale,
            embedding_multiplier,
            residual_multiplier,
            logits_scaling,
            moe,
            bos_token_id: f.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.token_ids("eos_token_id")?,
        })
    }

    /// Whether decoder layer `layer` has a MoE block.
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.moe
            .as_ref()
            .is_some_and(|m| m.sparse_layers.get(layer).copied().unwrap_or(false))
    }

    /// Indices of the layers with a MoE block, in order.
    pub fn moe_layers(&self) -> Vec<usize> {
        (0..self.num_hidden_layers)
            .filter(|&l| self.is_moe_layer(l))
            .collect()
    }

    /// Parameter counts: `(total, active per token)`.
    ///
    /// Active counts the routed experts a token uses (`top_k` of them) plus everything
    /// dense; the embedding counts once whether or not it is tied.
    pub fn parameter_counts(&self) -> (u64, u64) {
        // Saturating: a parseable but absurd config (sizes up to MAX_CONFIG_SIZE each)
        // gives u64::MAX, not an overflow.
        let mul = |factors: &[u64]| factors.iter().fold(1u64, |acc, &x| acc.saturating_mul(x));
        let add = |terms: &[u64]| terms.iter().fold(0u64, |acc, &x| acc.saturating_add(x));
        let h = self.hidden_size as u64;
        let d = self.head_dim as u64;
        let q = mul(&[self.num_attention_heads as u64, d]);
        let kv = mul(&[self.num_key_value_heads as u64, d]);
        let embed = mul(&[self.vocab_size as u64, h]);
        let head = if self.tie_word_embeddings { 0 } else { embed };
        let qk_norm = match self.qk_norm {
            QkNorm::None => 0,
            QkNorm::PerHead => mul(&[2, d]),
            QkNorm::Full => add(&[q, kv]),
        };
        // q/k/v biases are counted by the loader, not here: they are tiny and optional.
        let attention = add(&[mul(&[2, h, q]), mul(&[2, h, kv]), qk_norm, mul(&[2, h])]);
        let dense_mlp = mul(&[3, h, self.intermediate_size as u64]);
        let (mut total, mut active) = (add(&[embed, head, h]), add(&[embed, head, h]));
        for layer in 0..self.num_hidden_layers {
            let (all, used) = match self.moe.as_ref().filter(|_| self.is_moe_layer(layer)) {
                Some(m) => {
                    let expert = mul(&[3, h, m.expert_intermediate_size as u64]);
                    let router = mul(&[h, m.num_experts as u64]);
                    let shared = m
                        .shared_expert_intermediate_size
                        .map_or(0, |s| add(&[mul(&[3, h, s as u64]), h]));
                    (
                        add(&[router, shared, mul(&[expert, m.num_experts as u64])]),
                        add(&[router, shared, mul(&[expert, m.top_k as u64])]),
                    )
                }
                None => (dense_mlp, dense_mlp),
            };
            total = add(&[total, attention, all]);
            active = add(&[active, attention, used]);
        }
        (total, active)
    }
}

/// Reads a JSON file of a checkpoint (`config.json`, `model.safetensors.index.json`),
/// naming the file when it cannot be read or does not parse.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::ConfigSyntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn detect_family(f: &Fields) -> Result<Family> {
    let architectures: Vec<String> = match f.raw("architectures") {
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(v) => return Err(f.invalid("architectures", format!("expected a list of names, got {v}"))),
        None => Vec::new(),
    };
    let model_type = f.raw("model_type").and_then(Value::as_str).map(str::to_string);
    let candidates: Vec<&str> = architectures
        .iter()
        .map(String::as_str)
        .chain(model_type.as_deref())
        .collect();
    if candidates.is_empty() {
        return Err(ModelError::MissingField {
            path: f.path.to_path_buf(),
            field: "architectures".into(),
        });
    }
    candidates
        .iter()
        .find_map(|name| Family::from_name(name))
        .ok_or_else(|| ModelError::UnsupportedArchitecture {
            path: f.path.to_path_buf(),
            architecture: candidates.join(", "),
            supported: SUPPORTED_ARCHITECTURES.join(", "),
        })
}

fn parse_rope_scaling(f: &Fields, scaling: Option<&Value>) -> Result<Option<Llama3RopeScaling>> {
    let Some(scaling) = scaling else { return Ok(None) };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |key: &str| -> Result<f64> {
        scaling
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| f.invalid("rope_scaling", format!("llama3 scaling needs a number `{key}`")))
    };
    match kind {
        "default" => Ok(None),
        "llama3" => Ok(Some(Llama3RopeScaling {
            factor: number("factor")?,
            high_freq_factor: number("high_freq_factor")?,
            low_freq_factor: number("low_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")?,
        })),
        other => Err(f.invalid(
            "rope_scaling",
            format!("RoPE type `{other}` is not supported (supported: default, llama3)"),
        )),
    }
}

fn parse_moe(f: &Fields, family: Family, layers: usize) -> Result<Option<MoeConfig>> {
    let all_sparse = vec![true; layers];
    let moe = match family {
        Family::Llama => return Ok(None),
        Family::Mixtral | Family::GraniteMoe => {
            let expert_intermediate_size = f.positive("intermediate_size")?;
            MoeConfig {
                num_experts: f.opt_usize("num_local_experts")?.unwrap_or(8),
                top_k: f.opt_usize("num_experts_per_tok")?.unwrap_or(2),
                expert_intermediate_size,
                router: RouterMath { renormalize: true },
                shared_expert_intermediate_size: None,
                sparse_layers: all_sparse,
            }
        }
        Family::Olmoe => MoeConfig {
            num_experts: f
                .opt_usize("num_experts")?
                .or(f.opt_usize("num_local_experts")?)
                .unwrap_or(64),
            top_k: f.opt_usize("num_experts_per_tok")?.unwrap_or(8),
            expert_intermediate_size: f.positive("intermediate_size")?,
            router: RouterMath {
                renormalize: f.bool_or("norm_topk_prob", false)?,
            },
            shared_expert_intermediate_size: None,
            sparse_layers: all_sparse,
        },
        Family::Qwen2Moe | Family::Qwen3Moe => {
            let step = f.opt_usize("decoder_sparse_step")?.unwrap_or(1);
            if step == 0 {
                return Err(f.invalid("decoder_sparse_step", "must be positive"));
            }
            let dense_only = f.usize_list("mlp_only_layers")?;
            // transformers 5 writes `num_local_experts` where hub configs say `num_experts`.
            let num_experts = f
                .opt_usize("num_experts")?
                .or(f.opt_usize("num_local_experts")?)
                .unwrap_or(60);
            let sparse_layers = (0..layers)
                .map(|l| !dense_only.contains(&l) && num_experts > 0 && (l + 1) % step == 0)
                .collect();
            let shared = match family {
                Family::Qwen2Moe => Some(f.positive("shared_expert_intermediate_size")?),
                _ => None,
            };
            MoeConfig {
                num_experts,
                top_k: f.opt_usize("num_experts_per_tok")?.unwrap_or(4),
                expert_intermediate_size: f.positive("moe_intermediate_size")?,
                router: RouterMath {
                    renormalize: f.bool_or("norm_topk_prob", false)?,
                },
                shared_expert_intermediate_size: shared,
                sparse_layers,
            }
        }
    };
    if moe.num_experts == 0 {
        return Err(f.invalid("num_experts", "must be positive"));
    }
    if moe.top_k == 0 || moe.top_k > moe.num_experts {
        return Err(f.invalid(
            "num_experts_per_tok",
            format!(
                "{} must be between 1 and the number of experts ({})",
                moe.top_k, moe.num_experts
            ),
        ));
    }
    Ok(Some(moe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mixtral() -> Value {
        json!({
            "architectures": ["MixtralForCausalLM"], "hidden_size": 64, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 100, "num_local_experts": 4, "num_experts_per_tok": 2
        })
    }

    #[test]
    fn parses_defaults_and_moe() {
        let cfg = ModelConfig::from_json(&mixtral(), "config.json").unwrap();
        assert_eq!(cfg.family, Family::Mixtral);
        assert_eq!(cfg.head_dim, 16);
        assert_eq!(cfg.rope_theta, 1_000_000.0);
        assert_eq!(cfg.moe_layers(), vec![0, 1]);
        assert!(cfg.moe.unwrap().router.renormalize);
    }

    #[test]
    fn missing_field_is_named() {
        let mut j = mixtral();
        j.as_object_mut().unwrap().remove("hidden_size");
        let err = ModelConfig::from_json(&j, "x/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x/config.json") && err.contains("`hidden_size`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_architecture_lists_supported() {
        let mut j = mixtral();
        j["architectures"] = json!(["GPT2LMHeadModel"]);
        let err = ModelConfig::from_json(&j, "config.json").unwrap_err().to_string();
        assert!(
            err.contains("GPT2LMHeadModel") && err.contains("OlmoeForCausalLM"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let mut j = mixtral();
        j["num_experts_per_tok"] = json!("two");
        let err = ModelConfig::from_json(&j, "config.json").unwrap_err().to_string();
        assert!(err.contains("`num_experts_per_tok`"), "{err}");
        j["num_experts_per_tok"] = json!(9);
        let err = ModelConfig::from_json(&j, "config.json").unwrap_err().to_string();
        assert!(err.contains("between 1 and"), "{err}");
    }

    /// Hostile sizes are refused before anything is allocated for them (the fuzzer's
    /// first finding: `num_hidden_layers: 1e12` allocated a flag per layer), token ids
    /// must fit u32, and the parameter count of a huge but allowed config saturates.
    #[test]
    fn implausible_sizes_are_refused() {
        for field in [
            "num_hidden_layers",
            "hidden_size",
            "num_local_experts",
            "vocab_size",
            "head_dim",
        ] {
            let mut j = mixtral();
            j[field] = json!(1u64 << 40);
            let err = ModelConfig::from_json(&j, "config.json").unwrap_err().to_string();
            assert!(
                err.contains(field) && err.contains("implausibly large"),
                "{field}: {err}"
            );
        }
        let mut j = mixtral();
        j["eos_token_id"] = json!(1u64 << 33);
        let err = ModelConfig::from_json(&j, "config.json").unwrap_err().to_string();
        assert!(err.contains("eos_token_id"), "{err}");
        let mut j = mixtral();
        j["head_dim"] = json!(0);
        assert!(ModelConfig::from_json(&j, "config.json").is_err());
        let mut j = mixtral();
        for field in [
            "hidden_size",
            "intermediate_size",
            "vocab_size",
            "num_local_experts",
        ] {
            j[field] = json!(MAX_CONFIG_SIZE);
        }
        j["num_attention_heads"] = json!(1 << 20);
        j["num_key_value_heads"] = json!(1 << 20);
        j["head_dim"] = json!(1 << 4);
        j["num_hidden_layers"] = json!(1 << 10);
        let cfg = ModelConfig::from_json(&j, "config.json").unwrap();
        let (total, active) = cfg.parameter_counts();
        assert_eq!(total, u64::MAX, "saturates instead of wrapping");
        assert!(active > 1 << 60 && active < total, "{active}");
    }

    #[test]
    fn qwen2_sparse_step_and_dense_layers() {
        let j = json!({
            "architectures": ["Qwen2MoeForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
            "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48,
            "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 100,
            "num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 1, "mlp_only_layers": [1]
        });
        let cfg = ModelConfig::from_json(&j, "config.json").unwrap();
        assert_eq!(cfg.moe_layers(), vec![0, 2, 3]);
        let (total, active) = cfg.parameter_counts();
        assert!(total > active);
    }
}
