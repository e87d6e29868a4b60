//! The whole `latentevo upcycle` pipeline: load, calibrate, upcycle, write — with
//! progress on stderr.

use std::path::{Path, PathBuf};

use candle_core::DType;
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{write_checkpoint, WriteOptions};
use crate::dense::load_dense;
use crate::error::{io_err, Result, UpcycleError};
use crate::measure::size_of;
use crate::methods::{calibrate, upcycle, UpcycleOptions};

/// What to upcycle and how.
#[derive(Debug, Clone)]
pub struct UpcycleRequest {
    /// The dense source: a `.gguf` file or an HF checkpoint directory.
    pub from: PathBuf,
    /// The output checkpoint directory.
    pub out: PathBuf,
    /// The method and its options.
    pub options: UpcycleOptions,
    /// A calibration text file; `None` uses [`crate::CALIBRATION_TEXT`].
    pub calibration: Option<PathBuf>,
    /// At most this many calibration tokens.
    pub calibration_tokens: usize,
    /// Storage dtype of the weights.
    pub dtype: DType,
    /// Replace an existing output.
    pub force: bool,
}

/// What [`run_upcycle`] did.
#[derive(Debug, Clone)]
pub struct UpcycleSummary {
    /// The written checkpoint.
    pub out: PathBuf,
    /// Layers upcycled.
    pub layers: usize,
    /// Calibration tokens used (0 when none were needed).
    pub calibration_tokens: usize,
    /// Parameters of the dense source.
    pub dense_parameters: u64,
    /// Parameters of the MoE.
    pub moe_parameters: u64,
    /// Multiply-accumulates per token of the dense source (see [`crate::measure::Size`]).
    pub dense_macs_per_token: u64,
    /// Multiply-accumulates per token of the MoE.
    pub moe_macs_per_token: u64,
}

/// Loads `req.from`, calibrates when the method needs data, upcycles, and writes
/// `req.out` atomically. Progress goes to stderr when `progress`.
pub fn run_upcycle(req: &UpcycleRequest, progress: bool) -> Result<UpcycleSummary> {
    if req.out.exists() && !req.force {
        return Err(UpcycleError::OutputExists(req.out.clone()));
    }
    let say = |m: &str| {
        if progress {
            eprintln!("{m}");
        }
    };
    say(&format!("loading {}", req.from.display()));
    let dense = load_dense(&req.from)?;
    req.options.validate(dense.config.intermediate_size)?;
    let needs_data = req.options.needs_calibration();
    let calib = if needs_data {
        let text = match &req.calibration {
            Some(p) => std::fs::read_to_string(p).map_err(io_err(p))?,
            None => crate::CALIBRATION_TEXT.to_string(),
        };
        let mut ids = crate::calibration_ids(&dense, &text)?;
        ids.truncate(req.calibration_tokens);
        if ids.len() < req.options.experts.max(2) {
            return Err(UpcycleError::Options(format!(
                "the calibration text has {} tokens; at least {} are needed",
                ids.len(),
                req.options.experts.max(2)
            )));
        }
        say(&format!("calibrating the routers on {} tokens", ids.len()));
        Some(calibrate(&dense, &ids, 512)?)
    } else {
        None
    };
    let bar = crate::pipeline::layer_progress_bar(progress, dense.config.num_hidden_layers);
    let moe = upcycle(&dense, &req.options, calib.as_ref(), |i, _| {
        bar.set_position(i as u64)
    })?;
    bar.finish_and_clear();
    say(&format!("writing {}", req.out.display()));
    write_checkpoint(
        &moe,
        &req.out,
        WriteOptions {
            force: req.force,
            dtype: req.dtype,
        },
    )?;
    let d = size_of(&dense.tensors, dense.config.tie_word_embeddings, 1, 1);
    let m = size_of(
        &moe.tensors,
        dense.config.tie_word_embeddings,
        req.options.experts,
        req.options.top_k,
    );
    Ok(UpcycleSummary {
        out: req.out.clone(),
        layers: dense.config.num_hidden_layers,
        calibration_tokens: calib.map_or(0, |c| c.tokens),
        dense_parameters: d.total,
        moe_parameters: m.total,
        dense_macs_per_token: d.macs_per_token,
        moe_macs_per_token: m.macs_per_token,
    })
}

/// Parses a storage dtype name (`f32`, `f16`, `bf16`).
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(UpcycleError::Options(format!(
            "unknown dtype `{s}` (expected f32, f16 or bf16)"
        ))),
    }
}

/// Whether `path` looks like a dense source this crate reads (a file or a directory
/// with `config.json`).
pub fn is_source(path: &Path) -> bool {
    path.is_file() || path.join("config.json").is_file()
}

/// The per-layer progress bar of an upcycling run (hidden unless `progress`).
pub(crate) fn layer_progress_bar(progress: bool, layers: usize) -> ProgressBar {
    let bar = if progress {
        ProgressBar::new(layers as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("upcycling layer {pos}/{len} {bar:30} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
