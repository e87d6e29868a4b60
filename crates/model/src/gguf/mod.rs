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
//!
//! The reader is split by concern: `metadata.rs` (typed access to metadata keys and the
//! [`ModelConfig`] they describe), `tokenizer.rs` (the tokenizer and chat template) and
//! `tensors.rs` (reading, dequantizing and renaming the weights).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::candle_message;

mod header;
mod metadata;
mod tensors;
mod tokenizer;

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
    /// The metadata describe a model the decoder cannot build (what
    /// [`ModelConfig::from_json`] rejects in the config they translate to).
    #[error("GGUF file {path}: the metadata describe an unusable model config: {message}")]
    Config {
        /// The GGUF file.
        path: PathBuf,
        /// What the config parser reported.
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
    /// The model configuration the metadata describe (the decoder's single source of
    /// truth about the model's shape).
    pub config: ModelConfig,
    /// The same as an HF `LlamaForCausalLM` `config.json` (architectures, model_type,
    /// hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
    /// num_key_value_heads, head_dim, rms_norm_eps, rope_theta, vocab_size,
    /// max_position_embeddings, tie_word_embeddings, hidden_act, bos/eos/pad token ids),
    /// for writing a checkpoint derived from this one.
    pub hf_config: Json,
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
    /// Parses the header (metadata and tensor table) of `path`. Every length and count
    /// the header states, and every tensor's extent, is checked against the file's
    /// length first (see `header.rs`), so a damaged or hostile file is an error, not an
    /// allocation of what it claims.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let parse = |message: String| GgufError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(file);
        header::check(&mut reader, file_len).map_err(parse)?;
        reader.rewind().map_err(io)?;
        let content = Content::read(&mut reader).map_err(|e| parse(candle_message(&e)))?;
        for (name, info) in &content.tensor_infos {
            tensor_extent(info, content.tensor_data_offset, file_len).map_err(|message| {
                GgufError::Tensor {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    message,
                }
            })?;
        }
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
}

/// Checks that a tensor's data, `[offset, offset + size)` after the data section's
/// start, lies inside a file of `file_len` bytes, computing the size without overflow.
fn tensor_extent(
    info: &candle_core::quantized::gguf_file::TensorInfo,
    data_start: u64,
    file_len: u64,
) -> Result<(), String> {
    let dims = info.shape.dims();
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    let (block, size) = (
        info.ggml_dtype.block_size() as u64,
        info.ggml_dtype.type_size() as u64,
    );
    if elements % block != 0 {
        return Err(format!(
            "{elements} elements are not a whole number of {:?} blocks of {block}",
            info.ggml_dtype
        ));
    }
    let end = (elements / block)
        .checked_mul(size)
        .and_then(|bytes| bytes.checked_add(info.offset))
        .and_then(|end| end.checked_add(data_start))
        .ok_or_else(|| format!("dimensions {dims:?} at offset {} overflow", info.offset))?;
    if end > file_len {
        return Err(format!(
            "its data (dimensions {dims:?}, {:?}, at offset {}) ends at byte {end}, past the end of the \
             file ({file_len} bytes)",
            info.ggml_dtype, info.offset
        ));
    }
    Ok(())
}

/// Loads a dense llama-family GGUF file as an HF-form checkpoint, tensors dequantized
/// to `dtype` on `device`.
pub fn load_gguf(path: &Path, device: &Device, dtype: DType) -> Result<GgufCheckpoint, GgufError> {
    let file = GgufFile::open(path)?;
    let hf_config = file.hf_config()?;
    let config = file.parse_config(&hf_config)?;
    let tokenizer = file.tokenizer()?;
    let chat_template = file.chat_template()?;
    let tokenizer_config = file.tokenizer_config()?;
    let tensors = file.hf_tensors(&config, device, dtype)?;
    Ok(GgufCheckpoint {
        config,
        hf_config,
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

#[cfg(test)]
mod tests;
