//! GGUF loading for dense llama-family checkpoints (the default model's format).
//!
//! [`load_gguf`] reads a GGUF file with candle's reader, dequantizes every tensor to the
//! working dtype and returns the checkpoint in Hugging Face form — an HF `config.json`
//! value ([`GgufCheckpoint::config`]), tensors under HF names, a
//! [`tokenizers::Tokenizer`] built from the metadata and the chat template — so the
//! generic decoder builds it like any safetensors checkpoint.
//!
//! Two details make the result identical to what `transformers` builds from the same
//! file (`from_pretrained(dir, gguf_file=...)`), which the tests check against fixtures:
//! - llama.cpp stores the q/k projections with their rows permuted for its rope layout
//!   (`convert_hf_to_gguf.py`'s `permute`); they are un-permuted here;
//! - the tokenizer is the byte-level BPE `transformers` builds for `tokenizer.ggml.model
//!   = "gpt2"`: vocabulary and merges from the file, GPT-2's ByteLevel pre-tokenizer (or
//!   the split regex llama.cpp's `tokenizer.ggml.pre` names, where transformers knows it),
//!   control tokens (type 3) as special added tokens, user-defined ones (type 4) as plain
//!   added tokens.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value as Json};

/// The architectures (`general.architecture`) this loader understands.
pub const SUPPORTED_GGUF_ARCHITECTURES: &[&str] = &["llama"];

/// Everything that can go wrong while loading a GGUF file. Each variant names the file
/// and the metadata key or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read GGUF file {path}: {source}")]
    Io {
        /// The GGUF file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The header, metadata or tensor table does not parse (e.g. a truncated file).
    #[error("GGUF file {path} does not parse: {message}")]
    Parse {
        /// The GGUF file.
        path: PathBuf,
        /// What the parser reported.
        message: String,
    },
    /// A required metadata key is absent.
    #[error("GGUF file {path}: metadata key `{key}` is missing")]
    MissingMetadata {
        /// The GGUF file.
        path: PathBuf,
        /// The metadata key.
        key: String,
    },
    /// A metadata value has the wrong type or an unusable value.
    #[error("GGUF file {path}: metadata key `{key}`: {message}")]
    BadMetadata {
        /// The GGUF file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// `general.architecture` names an architecture this loader does not handle.
    #[error("GGUF file {path}: architecture `{architecture}` is not supported (supported: {supported})")]
    UnsupportedArchitecture {
        /// The GGUF file.
        path: PathBuf,
        /// The architecture the file states.
        architecture: String,
        /// The supported ones, comma-separated.
        supported: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer this loader cannot build.
    #[error("GGUF file {path}: tokenizer model `{model}` is not supported (supported: gpt2)")]
    UnsupportedTokenizer {
        /// The GGUF file.
        path: PathBuf,
        /// The tokenizer model the file states.
        model: String,
    },
    /// The file's metadata describe a tokenizer that does not build.
    #[error("GGUF file {path}: cannot build the tokenizer: {message}")]
    Tokenizer {
        /// The GGUF file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A tensor the model needs is absent.
    #[error("GGUF file {path}: tensor `{tensor}` is missing")]
    MissingTensor {
        /// The GGUF file.
        path: PathBuf,
        /// The GGUF tensor name.
        tensor: String,
    },
    /// A tensor has a shape the config does not allow.
    #[error("GGUF file {path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The GGUF file.
        path: PathBuf,
        /// The GGUF tensor name.
        tensor: String,
        /// The shape the config implies (HF layout, `[out, in]`).
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// Reading, dequantizing or converting a tensor failed.
    #[error("GGUF file {path}: tensor `{tensor}`: {message}")]
    Tensor {
        /// The GGUF file.
        path: PathBuf,
        /// The GGUF tensor name.
        tensor: String,
        /// What went wrong.
        message: String,
    },
}

/// A dense GGUF checkpoint in Hugging Face form.
#[derive(Debug, Clone)]
pub struct GgufCheckpoint {
    /// An HF `LlamaForCausalLM` `config.json` (architectures, model_type, hidden_size,
    /// intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
    /// head_dim, rms_norm_eps, rope_theta, vocab_size, max_position_embeddings,
    /// tie_word_embeddings, hidden_act, bos/eos/pad token ids).
    pub config: Json,
    /// The weights under HF names (`model.embed_tokens.weight`,
    /// `model.layers.N.self_attn.q_proj.weight`, ..., `model.norm.weight`, and
    /// `lm_head.weight` only when the embeddings are untied), in the requested dtype.
    pub tensors: HashMap<String, Tensor>,
    /// The tokenizer the metadata describe.
    pub tokenizer: tokenizers::Tokenizer,
    /// `tokenizer.chat_template`, when the file has one.
    pub chat_template: Option<String>,
    /// The special tokens' strings (`bos_token`, `eos_token`, `unk_token`, `pad_token`)
    /// as a `tokenizer_config.json` would state them, plus `add_bos_token`.
    pub tokenizer_config: Json,
}

/// The parsed header of a GGUF file: metadata and tensor table, no tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("metadata_keys", &self.content.metadata.len())
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

impl GgufFile {
    /// Parses the header (metadata and tensor table) of `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let file = File::open(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| GgufError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.string("general.architecture")
    }

    /// The names of the tensors in the file (GGUF names), sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.content.tensor_infos.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The HF `config.json` the metadata describe (see [`GgufCheckpoint::config`]).
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

    /// The tokenizer the metadata describe, as a `tokenizer.json` value.
    pub fn tokenizer_json(&self) -> Result<Json, GgufError> {
        let model = self.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(GgufError::UnsupportedTokenizer {
                path: self.path.clone(),
                model: model.to_string(),
            });
        }
        let tokens = self.string_array("tokenizer.ggml.tokens")?;
        let merges = self.string_array("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match self.content.metadata.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => {
                let arr = v
                    .to_vec()
                    .map_err(|e| self.bad("tokenizer.ggml.token_type", e.to_string()))?;
                arr.iter()
                    .map(|x| value_as_i64(x).ok_or(()))
                    .collect::<Result<Vec<_>, ()>>()
                    .map_err(|_| self.bad("tokenizer.ggml.token_type", "not integers".into()))?
            }
        };
        if types.len() != tokens.len() {
            return Err(self.bad(
                "tokenizer.ggml.token_type",
                format!("{} entries for {} tokens", types.len(), tokens.len()),
            ));
        }

        let alphabet = byte_alphabet();
        let spelled: HashSet<char> = alphabet.iter().copied().collect();
        let mut vocab = Map::new();
        for (id, tok) in tokens.iter().enumerate() {
            let key = if tok.chars().all(|c| spelled.contains(&c)) {
                tok.clone()
            } else {
                tok.bytes().map(|b| alphabet[b as usize]).collect()
            };
            vocab.insert(key, json!(id));
        }
        let mut merge_pairs = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let parts: Vec<&str> = m.split(' ').collect();
            if parts.len() != 2 {
                return Err(self.bad(
                    "tokenizer.ggml.merges",
                    format!("merge {i} `{m}` is not two tokens separated by one space"),
                ));
            }
            merge_pairs.push(json!([parts[0], parts[1]]));
        }

        // Special tokens: those marked control, plus the bos/eos/unk/pad ids the
        // metadata name (transformers registers those as special tokens too).
        let mut special_ids: Vec<usize> = Vec::new();
        for (id, (tok, t)) in tokens.iter().zip(&types).enumerate() {
            if *t == 3 && tok.chars().all(|c| spelled.contains(&c)) {
                special_ids.push(id);
            }
        }
        for key in [
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id",
        ] {
            if let Some(id) = self.opt_usize(key)? {
                if id >= tokens.len() {
                    return Err(self.bad(
                        key,
                        format!("id {id} is outside the vocabulary of {}", tokens.len()),
                    ));
                }
                if !special_ids.contains(&id) && tokens[id].chars().all(|c| spelled.contains(&c)) {
                    special_ids.push(id);
                }
            }
        }
        special_ids.sort_unstable();
        let mut added = Vec::new();
        let mut seen = HashSet::new();
        for &id in &special_ids {
            if seen.insert(tokens[id].clone()) {
                added.push(added_token(id, &tokens[id], true));
            }
        }
        for (id, (tok, t)) in tokens.iter().zip(&types).enumerate() {
            if *t == 4 && vocab.contains_key(tok) && seen.insert(tok.clone()) {
                // transformers' `add_tokens` keeps the id the vocabulary gives the string.
                let vid = vocab[tok].as_u64().unwrap_or(id as u64) as usize;
                added.push(added_token(vid, tok, false));
            }
        }

        let pre = self.opt_string("tokenizer.ggml.pre")?;
        let pre_tokenizer = match pre.and_then(split_regex_for) {
            Some(re) => json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
                ]
            }),
            None => json!({
                "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
            }),
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {}
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": "",
                "end_of_word_suffix": "",
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": false,
                "vocab": vocab,
                "merges": merge_pairs
            }
        }))
    }

    /// The tokenizer the metadata describe.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, GgufError> {
        let j = self.tokenizer_json()?;
        let s = serde_json::to_string(&j).map_err(|e| GgufError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        s.parse::<tokenizers::Tokenizer>()
            .map_err(|e| GgufError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// `tokenizer.chat_template`, when present.
    pub fn chat_template(&self) -> Result<Option<String>, GgufError> {
        Ok(self.opt_string("tokenizer.chat_template")?.map(str::to_string))
    }

    /// A `tokenizer_config.json` value: the special tokens' strings, `add_bos_token`,
    /// `add_eos_token`, and the chat template when present.
    pub fn tokenizer_config(&self) -> Result<Json, GgufError> {
        let tokens = self.string_array("tokenizer.ggml.tokens")?;
        let mut cfg = Map::new();
        for (key, name) in [
            ("tokenizer.ggml.bos_token_id", "bos_token"),
            ("tokenizer.ggml.eos_token_id", "eos_token"),
            ("tokenizer.ggml.unknown_token_id", "unk_token"),
            ("tokenizer.ggml.padding_token_id", "pad_token"),
        ] {
            if let Some(id) = self.opt_usize(key)? {
                let t = tokens.get(id).ok_or_else(|| {
                    self.bad(
                        key,
                        format!("id {id} is outside the vocabulary of {}", tokens.len()),
                    )
                })?;
                cfg.insert(name.to_string(), json!(t));
            }
        }
        for (key, name) in [
            ("tokenizer.ggml.add_bos_token", "add_bos_token"),
            ("tokenizer.ggml.add_eos_token", "add_eos_token"),
        ] {
            if let Some(v) = self.content.metadata.get(key) {
                let b = v.to_bool().map_err(|e| self.bad(key, e.to_string()))?;
                cfg.insert(name.to_string(), json!(b));
            }
        }
        if let Some(t) = self.chat_template()? {
            cfg.insert("chat_template".into(), json!(t));
        }
        Ok(Json::Object(cfg))
    }

    /// Reads, dequantizes and converts every tensor, under HF names and layout.
    pub fn hf_tensors(
        &self,
        config: &Json,
        device: &Device,
        dtype: DType,
    ) -> Result<HashMap<String, Tensor>, GgufError> {
        let get = |f: &str| config[f].as_u64().unwrap_or(0) as usize;
        let hidden = get("hidden_size");
        let inter = get("intermediate_size");
        let layers = get("num_hidden_layers");
        let heads = get("num_attention_heads");
        let kv = get("num_key_value_heads");
        let hd = get("head_dim");
        let vocab = get("vocab_size");
        let tied = config["tie_word_embeddings"].as_bool().unwrap_or(true);

        // (gguf name, hf name, expected HF shape, un-permute with this many heads)
        let mut plan: Vec<(String, String, Vec<usize>, Option<usize>)> = vec![
            (
                "token_embd.weight".into(),
                "model.embed_tokens.weight".into(),
                vec![vocab, hidden],
                None,
            ),
            (
                "output_norm.weight".into(),
                "model.norm.weight".into(),
                vec![hidden],
                None,
            ),
        ];
        if !tied {
            plan.push((
                "output.weight".into(),
                "lm_head.weight".into(),
                vec![vocab, hidden],
                None,
            ));
        }
        for i in 0..layers {
            let g = |s: &str| format!("blk.{i}.{s}.weight");
            let h = |s: &str| format!("model.layers.{i}.{s}.weight");
            plan.extend([
                (g("attn_norm"), h("input_layernorm"), vec![hidden], None),
                (g("ffn_norm"), h("post_attention_layernorm"), vec![hidden], None),
                (
                    g("attn_q"),
                    h("self_attn.q_proj"),
                    vec![heads * hd, hidden],
                    Some(heads),
                ),
                (
                    g("attn_k"),
                    h("self_attn.k_proj"),
                    vec![kv * hd, hidden],
                    Some(kv),
                ),
                (g("attn_v"), h("self_attn.v_proj"), vec![kv * hd, hidden], None),
                (
                    g("attn_output"),
                    h("self_attn.o_proj"),
                    vec![hidden, heads * hd],
                    None,
                ),
                (g("ffn_gate"), h("mlp.gate_proj"), vec![inter, hidden], None),
                (g("ffn_up"), h("mlp.up_proj"), vec![inter, hidden], None),
                (g("ffn_down"), h("mlp.down_proj"), vec![hidden, inter], None),
            ]);
        }

        let file = File::open(&self.path).map_err(|source| GgufError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let mut out = HashMap::with_capacity(plan.len());
        for (gname, hname, expected, permute_heads) in plan {
            let info = self
                .content
                .tensor_infos
                .get(&gname)
                .ok_or_else(|| GgufError::MissingTensor {
                    path: self.path.clone(),
                    tensor: gname.clone(),
                })?;
            let found = info.shape.dims().to_vec();
            if found != expected {
                return Err(GgufError::TensorShape {
                    path: self.path.clone(),
                    tensor: gname,
                    expected,
                    found,
                });
            }
            let terr = |e: candle_core::Error| GgufError::Tensor {
                path: self.path.clone(),
                tensor: gname.clone(),
                message: e.to_string(),
            };
            let q = info
                .read(&mut reader, self.content.tensor_data_offset, &Device::Cpu)
                .map_err(terr)?;
            let mut t = q.dequantize(&Device::Cpu).map_err(terr)?;
            if let Some(n) = permute_heads {
                t = unpermute_rows(&t, n).map_err(terr)?;
            }
            let t = t.to_dtype(dtype).and_then(|t| t.to_device(device));
            out.insert(hname, t.map_err(terr)?);
        }
        Ok(out)
    }

    fn bad(&self, key: &str, message: String) -> GgufError {
        GgufError::BadMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            message,
        }
    }

    fn get(&self, key: &str) -> Result<&Value, GgufError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingMetadata {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    fn string(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)?
            .to_string()
            .map(String::as_str)
            .map_err(|e| self.bad(key, e.to_string()))
    }

    fn opt_string(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    fn string_array(&self, key: &str) -> Result<Vec<String>, GgufError> {
        let arr = self
            .get(key)?
            .to_vec()
            .map_err(|e| self.bad(key, e.to_string()))?;
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                v.to_string()
                    .cloned()
                    .map_err(|_| self.bad(key, format!("entry {i} is not a string")))
            })
            .collect()
    }

    fn usize(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.get(key)?;
        value_as_i64(v)
            .filter(|x| *x >= 0)
            .map(|x| x as usize)
            .ok_or_else(|| self.bad(key, format!("expected a non-negative integer, got {v:?}")))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, GgufError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.usize(key).map(Some),
        }
    }

    fn f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.get(key)?;
        match v {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            other => value_as_i64(other)
                .map(|x| x as f64)
                .ok_or_else(|| self.bad(key, format!("expected a number, got {other:?}"))),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.f64(key).map(Some),
        }
    }
}

/// Loads a dense llama-family GGUF file as an HF-form checkpoint, tensors dequantized
/// to `dtype` on `device`.
pub fn load_gguf(path: &Path, device: &Device, dtype: DType) -> Result<GgufCheckpoint, GgufError> {
    let file = GgufFile::open(path)?;
    let config = file.hf_config()?;
    let tokenizer = file.tokenizer()?;
    let chat_template = file.chat_template()?;
    let tokenizer_config = file.tokenizer_config()?;
    let tensors = file.hf_tensors(&config, device, dtype)?;
    Ok(GgufCheckpoint {
        config,
        tensors,
        tokenizer,
        chat_template,
        tokenizer_config,
    })
}

/// Builds only the tokenizer of a GGUF file (no tensor is read).
pub fn load_gguf_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer, GgufError> {
    GgufFile::open(path)?.tokenizer()
}

/// Undoes llama.cpp's rope permutation of q/k rows: GGUF stores rows of each head as
/// `(dim/2, 2)` where HF has `(2, dim/2)`.
fn unpermute_rows(t: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        candle_core::bail!("{rows} rows cannot be split into {n_head} heads of pairs");
    }
    let half = rows / n_head / 2;
    t.reshape((n_head, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

fn value_as_i64(v: &Value) -> Option<i64> {
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

fn added_token(id: usize, content: &str, special: bool) -> Json {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": special
    })
}

/// GPT-2's byte-to-unicode table: the character that spells each byte.
fn byte_alphabet() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = vec!['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex transformers uses for a `tokenizer.ggml.pre` value; `None` means
/// GPT-2's ByteLevel regex (as for SmolLM2's `smollm`).
fn split_regex_for(pre: &str) -> Option<&'static str> {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => Some(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => Some(QWEN2_SPLIT),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => Some(GPT4O_SPLIT),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
