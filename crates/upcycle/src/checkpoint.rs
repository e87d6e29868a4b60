//! Writing upcycled checkpoints: `config.json`, `model.safetensors` (Mixtral hub
//! layout), `tokenizer.json`, `tokenizer_config.json`, `generation_config.json` and the
//! provenance file `latentevo-upcycle.json` — atomically: everything is written into a
//! temporary sibling directory that is renamed into place at the end, so a failure
//! leaves no partial output.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::{json, Value as Json};

use crate::error::{io_err, CandleContext, Result, UpcycleError};
use crate::methods::MoeCheckpoint;

/// The provenance file written next to the weights.
pub const PROVENANCE_FILE: &str = "latentevo-upcycle.json";

/// How [`write_checkpoint`] writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Replace an existing output directory.
    pub force: bool,
    /// The dtype the weights are stored in (f32, f16 or bf16).
    pub dtype: DType,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            force: false,
            dtype: DType::F32,
        }
    }
}

/// Writes the files of `ck` into `dir` (which must exist).
pub fn write_files(ck: &MoeCheckpoint, dir: &Path, dtype: DType) -> Result<()> {
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(UpcycleError::Options(format!(
            "cannot store weights as {dtype:?} (use f32, f16 or bf16)"
        )));
    }
    let mut config = ck.config.clone();
    config["torch_dtype"] = json!(match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    });
    write_json(&dir.join("config.json"), &config)?;
    let mut stored: HashMap<String, Tensor> = HashMap::with_capacity(ck.tensors.len());
    for (k, v) in &ck.tensors {
        let v = v
            .to_dtype(dtype)
            .and_then(|t| t.contiguous())
            .ctx(|| format!("converting {k}"))?;
        stored.insert(k.clone(), v);
    }
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&stored, &weights).map_err(|e| UpcycleError::Tensor {
        path: weights.clone(),
        tensor: "(file)".into(),
        message: format!("cannot write: {e}"),
    })?;
    drop(stored);
    if let Some(tok) = &ck.tokenizer {
        let p = dir.join("tokenizer.json");
        tok.save(&p, false)
            .map_err(|e| UpcycleError::Tokenizer(format!("{}: cannot write: {e}", p.display())))?;
    }
    if let Some(tc) = &ck.tokenizer_config {
        write_json(&dir.join("tokenizer_config.json"), tc)?;
    }
    let mut gen = serde_json::Map::new();
    for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if !ck.config[k].is_null() {
            gen.insert(k.into(), ck.config[k].clone());
        }
    }
    write_json(&dir.join("generation_config.json"), &Json::Object(gen))?;
    write_json(&dir.join(PROVENANCE_FILE), &ck.provenance)?;
    Ok(())
}

/// Writes `ck` as a checkpoint directory `out`, atomically (temporary sibling, then
/// rename). An existing `out` is an error unless `opts.force`.
pub fn write_checkpoint(ck: &MoeCheckpoint, out: &Path, opts: WriteOptions) -> Result<()> {
    write_atomically(out, opts.force, |dir| write_files(ck, dir, opts.dtype))
}

/// Runs `fill` on a fresh temporary sibling of `out`, then renames it to `out`
/// (replacing an existing `out` only when `force`; an existing `out` without `force` is
/// [`UpcycleError::OutputExists`]). On failure the temporary directory is removed and
/// `out` is untouched. The assets crate's [`latentevo_assets::write_atomically`] does
/// the work.
pub fn write_atomically(out: &Path, force: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if out.exists() && !force {
        return Err(UpcycleError::OutputExists(out.to_path_buf()));
    }
    latentevo_assets::write_atomically(out, force, fill)
}

pub(crate) fn write_json(path: &Path, value: &Json) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| UpcycleError::Config {
        path: path.to_path_buf(),
        field: "(file)".into(),
        message: e.to_string(),
    })?;
    text.push('\n');
    std::fs::write(path, text).map_err(io_err(path))
}
