//! Writing upcycled checkpoints: `config.json`, `model.safetensors` (Mixtral hub
//! layout), `tokenizer.json`, `tokenizer_config.json`, `generation_config.json` and the
//! provenance file `latentevo-upcycle.json` — atomically: everything is written into a
//! temporary sibling directory that is renamed into place at the end, so a failure
//! leaves no partial output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// A sibling of `out` that is unique to this process and moment.
pub(crate) fn sibling(out: &Path, tag: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    out.with_file_name(format!(".{name}.{tag}-{}-{nanos}", std::process::id()))
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
/// (replacing an existing `out` only when `force`). On failure the temporary directory
/// is removed and `out` is untouched.
pub fn write_atomically(out: &Path, force: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if out.exists() && !force {
        return Err(UpcycleError::OutputExists(out.to_path_buf()));
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = sibling(out, "tmp");
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = sibling(out, "old");
    let had_old = out.exists();
    if had_old {
        if let Err(e) = std::fs::rename(out, &old) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io_err(out)(e));
        }
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(io_err(out)(e));
    }
    if had_old {
        let _ = if old.is_dir() {
            std::fs::remove_dir_all(&old)
        } else {
            std::fs::remove_file(&old)
        };
    }
    Ok(())
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
