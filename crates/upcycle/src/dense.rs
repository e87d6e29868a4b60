//! Dense llama-family source checkpoints: loading (GGUF or a Hugging Face directory) and
//! a small reference forward pass used to calibrate routers (it records the input of
//! every layer's MLP).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;
use tokenizers::Tokenizer;

use crate::error::{io_err, CandleContext, Result, UpcycleError};

/// Where a dense checkpoint came from.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// The GGUF file or checkpoint directory.
    pub path: PathBuf,
    /// `"gguf"` or `"hf"`.
    pub format: String,
    /// sha256 of the GGUF file, or of the `config.json` and weight files of a directory
    /// (the sha256 of their concatenated sha256 hex digests, in file-name order).
    pub sha256: String,
}

/// The shape of a dense llama-family model, read from its config.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseDims {
    /// Hidden size.
    pub hidden: usize,
    /// MLP intermediate size.
    pub intermediate: usize,
    /// Number of decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RMS norm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Whether the output head shares the embedding matrix.
    pub tied: bool,
}

impl DenseDims {
    /// Reads the dimensions from an HF llama `config.json` value; `path` names it in errors.
    pub fn from_config(config: &Json, path: &Path) -> Result<Self> {
        let req = |f: &str| -> Result<usize> {
            config[f]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| UpcycleError::Config {
                    path: path.to_path_buf(),
                    field: f.into(),
                    message: "missing or not a non-negative integer".into(),
                })
        };
        let hidden = req("hidden_size")?;
        let heads = req("num_attention_heads")?;
        let kv_heads = config["num_key_value_heads"]
            .as_u64()
            .map(|v| v as usize)
            .unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(UpcycleError::Config {
                path: path.to_path_buf(),
                field: "num_key_value_heads".into(),
                message: format!("{kv_heads} does not divide {heads} attention heads"),
            });
        }
        let head_dim = config["head_dim"]
            .as_u64()
            .map(|v| v as usize)
            .unwrap_or(hidden / heads);
        Ok(DenseDims {
            hidden,
            intermediate: req("intermediate_size")?,
            layers: req("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            vocab: req("vocab_size")?,
            rms_norm_eps: config["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta: config["rope_theta"].as_f64().unwrap_or(10000.0),
            tied: config["tie_word_embeddings"].as_bool().unwrap_or(false),
        })
    }

    /// Total parameters of the dense model (tied embeddings counted once).
    pub fn parameters(&self) -> u64 {
        let (h, i, v) = (self.hidden as u64, self.intermediate as u64, self.vocab as u64);
        let attn =
            h * (self.heads * self.head_dim) as u64 * 2 + h * (self.kv_heads * self.head_dim) as u64 * 2;
        let layer = attn + 3 * h * i + 2 * h;
        let head = if self.tied { 0 } else { v * h };
        v * h + self.layers as u64 * layer + h + head
    }
}

/// A dense checkpoint in HF names, f32 on the CPU.
#[derive(Debug, Clone)]
pub struct DenseCheckpoint {
    /// Its HF `config.json`.
    pub config: Json,
    /// Its dimensions.
    pub dims: DenseDims,
    /// Its weights under HF names (`lm_head.weight` only when untied).
    pub tensors: HashMap<String, Tensor>,
    /// Its tokenizer, if it has one.
    pub tokenizer: Option<Tokenizer>,
    /// Its `tokenizer_config.json` (special tokens, chat template), if any.
    pub tokenizer_config: Option<Json>,
    /// Where it came from.
    pub source: SourceInfo,
}

/// Loads a dense llama-family checkpoint: a `.gguf` file or an HF directory with
/// `config.json`, safetensors (single or sharded) and optionally `tokenizer.json`.
pub fn load_dense(path: &Path) -> Result<DenseCheckpoint> {
    if path.is_file() {
        let ck = latentevo_model::gguf::load_gguf(path, &Device::Cpu, DType::F32)?;
        let dims = DenseDims::from_config(&ck.hf_config, path)?;
        let sha256 = crate::hash::sha256_file(path)?;
        let dense = DenseCheckpoint {
            config: ck.hf_config,
            dims,
            tensors: ck.tensors,
            tokenizer: Some(ck.tokenizer),
            tokenizer_config: Some(ck.tokenizer_config),
            source: SourceInfo {
                path: path.to_path_buf(),
                format: "gguf".into(),
                sha256,
            },
        };
        dense.check_tensors()?;
        return Ok(dense);
    }
    let config_path = path.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
    let config: Json = serde_json::from_str(&text).map_err(|e| UpcycleError::Config {
        path: config_path.clone(),
        field: "(file)".into(),
        message: format!("does not parse: {e}"),
    })?;
    let arch = config["architectures"][0]
        .as_str()
        .unwrap_or("(none)")
        .to_string();
    if arch != "LlamaForCausalLM" && arch != "MistralForCausalLM" {
        return Err(UpcycleError::UnsupportedSource {
            path: path.to_path_buf(),
            architecture: arch,
        });
    }
    let dims = DenseDims::from_config(&config, &config_path)?;
    let mut files = Vec::new();
    let index = path.join("model.safetensors.index.json");
    if index.is_file() {
        let t = std::fs::read_to_string(&index).map_err(io_err(&index))?;
        let j: Json = serde_json::from_str(&t).map_err(|e| UpcycleError::Config {
            path: index.clone(),
            field: "weight_map".into(),
            message: e.to_string(),
        })?;
        let mut names: Vec<String> = j["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        names.sort();
        names.dedup();
        files.extend(names.into_iter().map(|n| path.join(n)));
    } else {
        files.push(path.join("model.safetensors"));
    }
    let mut tensors = HashMap::new();
    for f in &files {
        let loaded = candle_core::safetensors::load(f, &Device::Cpu).map_err(|e| UpcycleError::Tensor {
            path: f.clone(),
            tensor: "(file)".into(),
            message: format!("not a readable safetensors file: {e}"),
        })?;
        for (k, v) in loaded {
            let v = v.to_dtype(DType::F32).ctx(|| format!("converting {k}"))?;
            tensors.insert(k, v);
        }
    }
    let mut hashed = vec![config_path.clone()];
    hashed.extend(files.iter().cloned());
    let mut digests = String::new();
    for f in &hashed {
        digests.push_str(&crate::hash::sha256_file(f)?);
    }
    let tok_path = path.join("tokenizer.json");
    let tokenizer =
        if tok_path.is_file() {
            Some(Tokenizer::from_file(&tok_path).map_err(|e| {
                UpcycleError::Tokenizer(format!("{}: does not parse: {e}", tok_path.display()))
            })?)
        } else {
            None
        };
    let tc_path = path.join("tokenizer_config.json");
    let tokenizer_config = match std::fs::read_to_string(&tc_path) {
        Ok(t) => serde_json::from_str(&t).ok(),
        Err(_) => None,
    };
    let dense = DenseCheckpoint {
        config,
        dims,
        tensors,
        tokenizer,
        tokenizer_config,
        source: SourceInfo {
            path: path.to_path_buf(),
            format: "hf".into(),
            sha256: crate::hash::sha256_bytes(digests.as_bytes()),
        },
    };
    dense.check_tensors()?;
    Ok(dense)
}

/// What [`DenseCheckpoint::forward`] returns.
#[derive(Debug, Clone)]
pub struct DenseForward {
    /// Logits `[tokens, vocab]`.
    pub logits: Tensor,
    /// Per layer, the input of the MLP (after `post_attention_layernorm`), `[tokens, hidden]`;
    /// empty unless requested.
    pub mlp_inputs: Vec<Tensor>,
}

impl DenseCheckpoint {
    /// The tensor `name`, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| UpcycleError::Tensor {
            path: self.source.path.clone(),
            tensor: name.into(),
            message: "missing".into(),
        })
    }

    fn check_tensors(&self) -> Result<()> {
        let d = &self.dims;
        let mut want: Vec<(String, Vec<usize>)> = vec![
            ("model.embed_tokens.weight".into(), vec![d.vocab, d.hidden]),
            ("model.norm.weight".into(), vec![d.hidden]),
        ];
        if !d.tied {
            want.push(("lm_head.weight".into(), vec![d.vocab, d.hidden]));
        }
        for l in 0..d.layers {
            let p = |s: &str| format!("model.layers.{l}.{s}.weight");
            want.extend([
                (p("input_layernorm"), vec![d.hidden]),
                (p("post_attention_layernorm"), vec![d.hidden]),
                (p("self_attn.q_proj"), vec![d.heads * d.head_dim, d.hidden]),
                (p("self_attn.k_proj"), vec![d.kv_heads * d.head_dim, d.hidden]),
                (p("self_attn.v_proj"), vec![d.kv_heads * d.head_dim, d.hidden]),
                (p("self_attn.o_proj"), vec![d.hidden, d.heads * d.head_dim]),
                (p("mlp.gate_proj"), vec![d.intermediate, d.hidden]),
                (p("mlp.up_proj"), vec![d.intermediate, d.hidden]),
                (p("mlp.down_proj"), vec![d.hidden, d.intermediate]),
            ]);
        }
        for (name, shape) in want {
            let t = self.tensor(&name)?;
            if t.dims() != shape.as_slice() {
                return Err(UpcycleError::Tensor {
                    path: self.source.path.clone(),
                    tensor: name,
                    message: format!("shape {:?}, expected {:?}", t.dims(), shape),
                });
            }
        }
        Ok(())
    }

    /// The decoder of `latentevo-model` over these weights (tensors are shared, not copied).
    pub fn model(&self) -> Result<latentevo_model::Model> {
        let config = latentevo_model::ModelConfig::from_json(&self.config, &self.source.path)?;
        Ok(latentevo_model::model_from_tensors(
            &config,
            self.tensors.clone(),
            &latentevo_model::LoadOptions::default(),
            &self.source.path,
        )?)
    }

    /// Runs one sequence through the dense model (f32, CPU) with `latentevo-model`'s
    /// decoder, optionally recording every layer's MLP input. Used for router calibration;
    /// checked against `transformers`' logits in the tests.
    pub fn forward(&self, ids: &[u32], record_mlp_inputs: bool) -> Result<DenseForward> {
        if ids.is_empty() {
            return Err(UpcycleError::Options("forward of an empty sequence".into()));
        }
        let model = self.model()?;
        let hooks = latentevo_model::Hooks {
            capture_ffn_inputs: record_mlp_inputs,
            ..Default::default()
        };
        let batch = latentevo_model::TokenBatch::left_padded(&[ids.to_vec()], 0);
        let out = model.forward(
            &batch,
            &mut model.new_cache(),
            &hooks,
            latentevo_model::LogitsMode::All,
        )?;
        let ctx = || "dense forward".to_string();
        let logits = out
            .logits
            .expect("LogitsMode::All returns logits")
            .squeeze(0)
            .ctx(ctx)?;
        let mlp_inputs = out
            .ffn_inputs
            .into_iter()
            .map(|t| t.squeeze(0))
            .collect::<candle_core::Result<Vec<_>>>()
            .ctx(ctx)?;
        Ok(DenseForward { logits, mlp_inputs })
    }
}

/// Mean negative log-likelihood of `ids[1..]` under `logits[..n-1]` (`[n, vocab]`).
pub fn mean_nll(logits: &Tensor, ids: &[u32]) -> Result<f64> {
    let n = ids.len();
    if n < 2 {
        return Err(UpcycleError::Options("need at least two tokens to score".into()));
    }
    let ctx = || "log-likelihood".to_string();
    let targets = Tensor::new(&ids[1..], logits.device()).ctx(ctx)?;
    let s = latentevo_model::gather_logprobs(&logits.narrow(0, 0, n - 1).ctx(ctx)?, &targets)?
        .to_dtype(DType::F64)
        .ctx(ctx)?
        .sum_all()
        .ctx(ctx)?
        .to_scalar::<f64>()
        .ctx(ctx)?;
    Ok(-s / (n - 1) as f64)
}
