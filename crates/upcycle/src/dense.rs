//! Dense llama-family source checkpoints: loading (GGUF or a Hugging Face directory,
//! through the model crate's readers) and a forward pass of the model core over them,
//! used to calibrate routers (it records the input of every layer's MLP).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use latentevo_model::{LoadOptions, Model, ModelConfig};
use serde_json::{json, Value as Json};
use tokenizers::Tokenizer;

use crate::error::{CandleContext, Result, UpcycleError};

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

/// A dense checkpoint in HF names, f32 on the CPU.
#[derive(Debug, Clone)]
pub struct DenseCheckpoint {
    /// Its configuration as the model core reads it: the one source of its shape.
    pub config: ModelConfig,
    /// Its HF `config.json` as read (for a GGUF file, as its metadata translate), for the
    /// fields an upcycled config carries over as they are (token ids, rope scaling).
    pub hf_config: Json,
    /// Its weights under HF names (`lm_head.weight` only when untied).
    pub tensors: HashMap<String, Tensor>,
    /// Its tokenizer, if it has one.
    pub tokenizer: Option<Tokenizer>,
    /// Its `tokenizer_config.json` (special tokens, chat template), if any.
    pub tokenizer_config: Option<Json>,
    /// Where it came from.
    pub source: SourceInfo,
    /// The decoder over `tensors`, built on first use ([`DenseCheckpoint::model`]).
    model: OnceLock<Model>,
}

/// The dense architectures a Hugging Face directory may state. A Mistral checkpoint is
/// read as Llama: the upcycled Mixtral has no sliding window either.
const DENSE_ARCHITECTURES: [&str; 2] = ["LlamaForCausalLM", "MistralForCausalLM"];

/// Loads a dense llama-family checkpoint: a `.gguf` file or an HF directory with
/// `config.json`, safetensors (single or sharded) and optionally `tokenizer.json` and
/// `tokenizer_config.json`, through the model crate's readers.
pub fn load_dense(path: &Path) -> Result<DenseCheckpoint> {
    if path.is_file() {
        let ck = latentevo_model::gguf::load_gguf(path, &Device::Cpu, DType::F32)?;
        let sha256 = crate::hash::sha256_file(path)?;
        let dense = DenseCheckpoint {
            config: ck.config,
            hf_config: ck.hf_config,
            tensors: ck.tensors,
            tokenizer: Some(ck.tokenizer),
            tokenizer_config: Some(ck.tokenizer_config),
            source: SourceInfo {
                path: path.to_path_buf(),
                format: "gguf".into(),
                sha256,
            },
            model: OnceLock::new(),
        };
        dense.check_tensors()?;
        return Ok(dense);
    }
    let config_path = path.join("config.json");
    let hf_config = latentevo_model::config::read_json(&config_path)?;
    let arch = hf_config["architectures"][0]
        .as_str()
        .unwrap_or("(none)")
        .to_string();
    if !DENSE_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(UpcycleError::UnsupportedSource {
            path: path.to_path_buf(),
            architecture: arch,
        });
    }
    let mut as_llama = hf_config.clone();
    as_llama["architectures"] = json!(["LlamaForCausalLM"]);
    as_llama["model_type"] = json!("llama");
    let config = ModelConfig::from_json(&as_llama, &config_path)?;
    let files = latentevo_model::safetensors_files(path)?;
    let tensors = latentevo_model::read_tensors(&files, &Device::Cpu, DType::F32)?;
    let mut digests = String::new();
    for f in std::iter::once(&config_path).chain(&files) {
        digests.push_str(&crate::hash::sha256_file(f)?);
    }
    let tok_path = path.join("tokenizer.json");
    let tokenizer = if tok_path.is_file() {
        Some(latentevo_model::load_tokenizer(&tok_path)?)
    } else {
        None
    };
    let dense = DenseCheckpoint {
        config,
        hf_config,
        tensors,
        tokenizer,
        tokenizer_config: latentevo_model::read_tokenizer_config(path)?,
        source: SourceInfo {
            path: path.to_path_buf(),
            format: "hf".into(),
            sha256: crate::hash::sha256_bytes(digests.as_bytes()),
        },
        model: OnceLock::new(),
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
        let c = &self.config;
        let (hidden, inter, vocab) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let (q, kv) = (
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let mut want: Vec<(String, Vec<usize>)> = vec![
            ("model.embed_tokens.weight".into(), vec![vocab, hidden]),
            ("model.norm.weight".into(), vec![hidden]),
        ];
        if !c.tie_word_embeddings {
            want.push(("lm_head.weight".into(), vec![vocab, hidden]));
        }
        for l in 0..c.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}.weight");
            want.extend([
                (p("input_layernorm"), vec![hidden]),
                (p("post_attention_layernorm"), vec![hidden]),
                (p("self_attn.q_proj"), vec![q, hidden]),
                (p("self_attn.k_proj"), vec![kv, hidden]),
                (p("self_attn.v_proj"), vec![kv, hidden]),
                (p("self_attn.o_proj"), vec![hidden, q]),
                (p("mlp.gate_proj"), vec![inter, hidden]),
                (p("mlp.up_proj"), vec![inter, hidden]),
                (p("mlp.down_proj"), vec![hidden, inter]),
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

    /// The decoder of `latentevo-model` over these weights (f32, CPU; tensors shared, not
    /// copied), built on the first call and reused after.
    pub fn model(&self) -> Result<&Model> {
        cached_model(
            &self.model,
            || Ok(self.config.clone()),
            &self.tensors,
            &self.source.path,
        )
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

/// The model core's decoder over in-memory weights (f32, CPU) configured by `config`,
/// built into `cell` on the first call and reused after: the one place this crate builds
/// a decoder.
pub(crate) fn cached_model<'a>(
    cell: &'a OnceLock<Model>,
    config: impl FnOnce() -> Result<ModelConfig>,
    tensors: &HashMap<String, Tensor>,
    origin: &Path,
) -> Result<&'a Model> {
    if let Some(model) = cell.get() {
        return Ok(model);
    }
    let model =
        latentevo_model::model_from_tensors(&config()?, tensors.clone(), &LoadOptions::default(), origin)?;
    Ok(cell.get_or_init(|| model))
}
