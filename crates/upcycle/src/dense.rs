//! Dense llama-family source checkpoints: loading (GGUF or a Hugging Face directory) and
//! a small reference forward pass used to calibrate routers (it records the input of
//! every layer's MLP).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
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
        let dims = DenseDims::from_config(&ck.config, path)?;
        let sha256 = crate::hash::sha256_file(path)?;
        let dense = DenseCheckpoint {
            config: ck.config,
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

    /// Runs one sequence through the dense model (f32, CPU), optionally recording every
    /// layer's MLP input. Used for router calibration; checked against `transformers`'
    /// logits in the tests.
    pub fn forward(&self, ids: &[u32], record_mlp_inputs: bool) -> Result<DenseForward> {
        let d = &self.dims;
        let n = ids.len();
        if n == 0 {
            return Err(UpcycleError::Options("forward of an empty sequence".into()));
        }
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= d.vocab) {
            return Err(UpcycleError::Options(format!(
                "token id {bad} is outside the vocabulary of {}",
                d.vocab
            )));
        }
        let c = |what: &'static str| move || what.to_string();
        let dev = Device::Cpu;
        let ids_t = Tensor::new(ids, &dev).ctx(c("ids"))?;
        let mut x = self
            .tensor("model.embed_tokens.weight")?
            .index_select(&ids_t, 0)
            .ctx(c("embedding"))?;
        let (cos, sin) = rope_tables(n, d.head_dim, d.rope_theta).ctx(c("rope tables"))?;
        let mask = causal_mask(n).ctx(c("mask"))?;
        let eps = d.rms_norm_eps as f32;
        let mut mlp_inputs = Vec::new();
        for l in 0..d.layers {
            let w = |s: &str| self.tensor(&format!("model.layers.{l}.{s}.weight"));
            let ctx = || format!("dense forward, layer {l}");
            let h = candle_nn::ops::rms_norm(&x, w("input_layernorm")?, eps).ctx(ctx)?;
            let attn = self.attention(&h, l, &cos, &sin, &mask).ctx(ctx)?;
            x = (x + attn).ctx(ctx)?;
            let h2 = candle_nn::ops::rms_norm(&x, w("post_attention_layernorm")?, eps).ctx(ctx)?;
            let g = h2.matmul(&w("mlp.gate_proj")?.t().ctx(ctx)?).ctx(ctx)?;
            let u = h2.matmul(&w("mlp.up_proj")?.t().ctx(ctx)?).ctx(ctx)?;
            let a = (candle_nn::ops::silu(&g).ctx(ctx)? * u).ctx(ctx)?;
            let m = a.matmul(&w("mlp.down_proj")?.t().ctx(ctx)?).ctx(ctx)?;
            if record_mlp_inputs {
                mlp_inputs.push(h2);
            }
            x = (x + m).ctx(ctx)?;
        }
        let x = candle_nn::ops::rms_norm(&x, self.tensor("model.norm.weight")?, eps).ctx(c("final norm"))?;
        let head = if d.tied {
            self.tensor("model.embed_tokens.weight")?
        } else {
            self.tensor("lm_head.weight")?
        };
        let logits = x.matmul(&head.t().ctx(c("lm head"))?).ctx(c("lm head"))?;
        Ok(DenseForward { logits, mlp_inputs })
    }

    fn attention(
        &self,
        h: &Tensor,
        l: usize,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let d = &self.dims;
        let n = h.dim(0)?;
        let w = |s: &str| {
            self.tensors
                .get(&format!("model.layers.{l}.self_attn.{s}.weight"))
                .ok_or_else(|| candle_core::Error::Msg(format!("layer {l}: {s} missing")))
        };
        let proj = |s: &str, heads: usize| -> candle_core::Result<Tensor> {
            h.matmul(&w(s)?.t()?)?
                .reshape((n, heads, d.head_dim))?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)
        };
        let q = candle_nn::rotary_emb::rope(&proj("q_proj", d.heads)?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&proj("k_proj", d.kv_heads)?, cos, sin)?;
        let v = proj("v_proj", d.kv_heads)?;
        let rep = d.heads / d.kv_heads;
        let expand = |t: Tensor| -> candle_core::Result<Tensor> {
            if rep == 1 {
                return Ok(t);
            }
            t.unsqueeze(2)?
                .expand((1, d.kv_heads, rep, n, d.head_dim))?
                .reshape((1, d.heads, n, d.head_dim))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let scale = 1.0 / (d.head_dim as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let out = att.matmul(&v.contiguous()?)?; // [1, heads, n, hd]
        let out = out
            .squeeze(0)?
            .transpose(0, 1)?
            .reshape((n, d.heads * d.head_dim))?;
        out.matmul(&w("o_proj")?.t()?)
    }
}

fn rope_tables(n: usize, head_dim: usize, theta: f64) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32)
        .collect();
    let inv = Tensor::from_vec(inv, (1, half), &Device::Cpu)?;
    let pos = Tensor::arange(0u32, n as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((n, 1))?;
    let ang = pos.broadcast_mul(&inv)?;
    Ok((ang.cos()?.contiguous()?, ang.sin()?.contiguous()?))
}

fn causal_mask(n: usize) -> candle_core::Result<Tensor> {
    let m: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (n, n), &Device::Cpu)
}

/// Mean negative log-likelihood of `ids[1..]` under `logits[..n-1]` (`[n, vocab]`).
pub fn mean_nll(logits: &Tensor, ids: &[u32]) -> Result<f64> {
    let n = ids.len();
    if n < 2 {
        return Err(UpcycleError::Options("need at least two tokens to score".into()));
    }
    let ctx = || "log-likelihood".to_string();
    let lp = candle_nn::ops::log_softmax(&logits.narrow(0, 0, n - 1).ctx(ctx)?, D::Minus1).ctx(ctx)?;
    let tgt = Tensor::new(&ids[1..], logits.device())
        .ctx(ctx)?
        .unsqueeze(1)
        .ctx(ctx)?;
    let picked = lp.gather(&tgt, 1).ctx(ctx)?;
    let s = picked
        .to_dtype(DType::F64)
        .ctx(ctx)?
        .sum_all()
        .ctx(ctx)?
        .to_scalar::<f64>()
        .ctx(ctx)?;
    Ok(-s / (n - 1) as f64)
}
