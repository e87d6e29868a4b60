//! Typed access to GGUF metadata keys, and the model config they describe.

use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Value as Json};

use super::{GgufError, GgufFile, SUPPORTED_GGUF_ARCHITECTURES};
use crate::config::ModelConfig;

impl GgufFile {
    /// The model configuration the metadata describe; an absent or unusable key is an
    /// error naming it.
    pub fn model_config(&self) -> Result<ModelConfig, GgufError> {
        self.parse_config(&self.hf_config()?)
    }

    /// [`ModelConfig::from_json`] of `hf_config` (what [`GgufFile::hf_config`] returned).
    pub(super) fn parse_config(&self, hf_config: &Json) -> Result<ModelConfig, GgufError> {
        ModelConfig::from_json(hf_config, &self.path).map_err(|e| GgufError::Config {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// The HF `config.json` the metadata describe (see [`super::GgufCheckpoint::hf_config`]).
    pub fn hf_config(&self) -> Result<Json, GgufError> {
        let arch = self.architecture()?.to_string();
        if !SUPPORTED_GGUF_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(GgufError::UnsupportedArchitecture {
                path: self.path.clone(),
                architecture: arch,
                supported: SUPPORTED_GGUF_ARCHITECTURES.join(", "),
            });
        }
        let k = |s: &str| format!("{arch}.{s}");
        let hidden = self.usize(&k("embedding_length"))?;
        let intermediate = self.usize(&k("feed_forward_length"))?;
        let layers = self.usize(&k("block_count"))?;
        // Each layer has 9 tensors: a count the tensor table cannot hold is refused before
        // anything is planned per layer.
        let tensors = self.content.tensor_infos.len();
        if layers.saturating_mul(9) > tensors {
            return Err(self.bad(
                &k("block_count"),
                format!(
                    "{layers} layers need at least {} tensors, the file has {tensors}",
                    layers.saturating_mul(9)
                ),
            ));
        }
        let heads = self.usize(&k("attention.head_count"))?;
        let kv_heads = match self.opt_usize(&k("attention.head_count_kv"))? {
            Some(v) => v,
            None => heads,
        };
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(self.bad(
                &k("attention.head_count_kv"),
                format!("{kv_heads} key/value heads do not divide {heads} attention heads"),
            ));
        }
        if hidden % heads != 0 {
            return Err(self.bad(
                &k("attention.head_count"),
                format!("{heads} heads do not divide the hidden size {hidden}"),
            ));
        }
        let head_dim = match self.opt_usize(&k("rope.dimension_count"))? {
            Some(v) => v,
            None => hidden / heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(self.bad(
                &k("rope.dimension_count"),
                format!("head dimension {head_dim} must be even and positive"),
            ));
        }
        let eps = self.f64(&k("attention.layer_norm_rms_epsilon"))?;
        let rope_theta = self.opt_f64(&k("rope.freq_base"))?.unwrap_or(10000.0);
        if let Some(v) = self.content.metadata.get(&k("rope.scaling.type")) {
            let t = v.to_string().map(String::as_str).unwrap_or("?");
            if t != "none" {
                return Err(self.bad(
                    &k("rope.scaling.type"),
                    format!("rope scaling `{t}` is not supported"),
                ));
            }
        }
        let ctx = self.opt_usize(&k("context_length"))?.unwrap_or(2048);
        let vocab = self.string_array("tokenizer.ggml.tokens")?.len();
        let tied = !self.content.tensor_infos.contains_key("output.weight");
        let mut cfg = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": eps,
            "rope_theta": rope_theta,
            "vocab_size": vocab,
            "max_position_embeddings": ctx,
            "tie_word_embeddings": tied,
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "float32",
        });
        for (key, field) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = self.opt_usize(key)? {
                cfg[field] = json!(id);
            }
        }
        Ok(cfg)
    }

    pub(super) fn bad(&self, key: &str, message: String) -> GgufError {
        GgufError::BadMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            message,
        }
    }

    pub(super) fn get(&self, key: &str) -> Result<&Value, GgufError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingMetadata {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    pub(super) fn string(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key)? {
            Value::String(s) => Ok(s.as_str()),
            other => Err(self.bad(key, format!("expected a string, got {}", describe(other)))),
        }
    }

    pub(super) fn opt_string(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    pub(super) fn string_array(&self, key: &str) -> Result<Vec<String>, GgufError> {
        let arr = match self.get(key)? {
            Value::Array(arr) => arr,
            other => return Err(self.bad(key, format!("expected an array, got {}", describe(other)))),
        };
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                v.to_string()
                    .cloned()
                    .map_err(|_| self.bad(key, format!("entry {i} is not a string")))
            })
            .collect()
    }

    pub(super) fn usize(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.get(key)?;
        value_as_i64(v)
            .filter(|x| *x >= 0)
            .map(|x| x as usize)
            .ok_or_else(|| {
                self.bad(
                    key,
                    format!("expected a non-negative integer, got {}", describe(v)),
                )
            })
    }

    pub(super) fn opt_usize(&self, key: &str) -> Result<Option<usize>, GgufError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.usize(key).map(Some),
        }
    }

    pub(super) fn f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.get(key)?;
        match v {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            other => value_as_i64(other)
                .map(|x| x as f64)
                .ok_or_else(|| self.bad(key, format!("expected a number, got {}", describe(other)))),
        }
    }

    pub(super) fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.f64(key).map(Some),
        }
    }
}

/// The integer a metadata value holds, if it is one (and fits `i64`).
pub(super) fn value_as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

/// A short description of a metadata value for error messages: scalars as they are,
/// strings and arrays by size (a token list can hold 100k entries).
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(s) => format!("a string of {} bytes", s.len()),
        Value::Array(a) => format!("an array of {} values", a.len()),
        other => format!("{other:?}"),
    }
}
