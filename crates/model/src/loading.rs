//! Finding and loading checkpoints: a local directory, a Hugging Face hub id, or a GGUF file.

use std::collections::{BTreeSet, HashMap};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use crate::chat::ChatTemplate;
use crate::config::ModelConfig;
use crate::error::{candle_message, ModelError, Result};
use crate::model::{ExpertFormat, Model};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the weights go.
    pub device: Device,
    /// Working dtype; `None` picks f32 on CPU and bf16 on CUDA.
    pub dtype: Option<DType>,
    /// Revision for hub ids.
    pub revision: String,
    /// How the routed experts' weights are stored (default: the working dtype).
    pub experts: ExpertFormat,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: None,
            revision: "main".into(),
            experts: ExpertFormat::Dense,
        }
    }
}

impl LoadOptions {
    /// The dtype that will be used on this device.
    pub fn resolved_dtype(&self) -> DType {
        self.dtype.unwrap_or(if self.device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        })
    }

    /// Refuses quantised experts away from the CPU or the f32 working dtype.
    fn check_experts(&self) -> Result<()> {
        let dtype = self.resolved_dtype();
        if !self.experts.runs_on(&self.device, dtype) {
            return Err(ModelError::InvalidRequest(format!(
                "{} experts run on the CPU with the f32 working dtype, not {dtype:?} on {:?}",
                self.experts, self.device
            )));
        }
        Ok(())
    }
}

/// A loaded checkpoint: model, tokenizer (if the checkpoint has one) and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The decoder.
    pub model: Model,
    /// The tokenizer, when the checkpoint has `tokenizer.json` (or GGUF tokenizer metadata).
    pub tokenizer: Option<Tokenizer>,
    /// The directory or file the model was read from.
    pub source: PathBuf,
    /// The chat template, when the checkpoint has one (`tokenizer_config.json` or GGUF
    /// metadata).
    pub chat_template: Option<ChatTemplate>,
}

impl LoadedModel {
    /// The tokenizer, or [`ModelError::NoTokenizer`].
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or(ModelError::NoTokenizer)
    }

    /// Encodes `text` without adding special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer()?
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer {
                path: self.source.clone(),
                message: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The prompt as the model expects it: the user message through the chat template
    /// where the checkpoint has one, else the text unchanged.
    pub fn chat_prompt(&self, user: &str) -> Result<String> {
        match &self.chat_template {
            Some(t) => t.render_user(user),
            None => Ok(user.to_string()),
        }
    }

    /// Decodes ids, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer()?
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer {
                path: self.source.clone(),
                message: e.to_string(),
            })
    }
}

/// Loads a model from a local directory, a `.gguf` file, or a hub id (`owner/name`).
///
/// Hub ids are looked up in the local Hugging Face cache first (`HF_HOME`, `HF_HUB_CACHE`);
/// with `HF_HUB_OFFLINE=1` nothing is downloaded, and an unreachable hub fails within
/// seconds with a message saying where the model was looked for.
///
/// ```no_run
/// let loaded = latentevo_model::load("models/tiny/olmoe", &Default::default())?;
/// println!("{} layers", loaded.model.num_layers());
/// # Ok::<(), latentevo_model::ModelError>(())
/// ```
pub fn load(spec: &str, options: &LoadOptions) -> Result<LoadedModel> {
    let path = Path::new(spec);
    if path.is_dir() {
        return load_dir(path, options);
    }
    if path.is_file() {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            return load_gguf_file(path, options);
        }
        if path.file_name().is_some_and(|n| n == "config.json") {
            return load_dir(path.parent().unwrap_or(Path::new(".")), options);
        }
        return Err(ModelError::NotFound {
            spec: spec.into(),
            message: "a file was given; expected a checkpoint directory, a .gguf file or a hub id".into(),
        });
    }
    if looks_like_hub_id(spec) {
        let dir = fetch_from_hub(spec, &options.revision)?;
        return load_dir(&dir, options);
    }
    Err(ModelError::NotFound {
        spec: spec.into(),
        message: "no such directory or file, and not a hub id of the form owner/name".into(),
    })
}

fn load_gguf_file(path: &Path, options: &LoadOptions) -> Result<LoadedModel> {
    let checkpoint = crate::gguf::load_gguf(path, &options.device, options.resolved_dtype())?;
    let model = model_from_tensors(&checkpoint.config, checkpoint.tensors, options, path)?;
    Ok(LoadedModel {
        model,
        tokenizer: Some(checkpoint.tokenizer),
        source: path.to_path_buf(),
        chat_template: ChatTemplate::from_tokenizer_config(&checkpoint.tokenizer_config),
    })
}

/// What a checkpoint is, read without loading its weights (except for hub ids, which are
/// fetched first).
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    /// The directory or file read.
    pub source: PathBuf,
    /// Its configuration.
    pub config: ModelConfig,
    /// Tokenizer vocabulary size including added tokens, if it has a tokenizer.
    pub tokenizer_vocab: Option<usize>,
}

/// Reads a checkpoint's config and tokenizer without building the model.
pub fn inspect(spec: &str, options: &LoadOptions) -> Result<CheckpointInfo> {
    let path = Path::new(spec);
    if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        let file = crate::gguf::GgufFile::open(path)?;
        let config = file.model_config()?;
        let tokenizer = file.tokenizer()?;
        return Ok(CheckpointInfo {
            source: path.to_path_buf(),
            config,
            tokenizer_vocab: Some(tokenizer.get_vocab_size(true)),
        });
    }
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else if looks_like_hub_id(spec) {
        fetch_from_hub(spec, &options.revision)?
    } else {
        return Err(ModelError::NotFound {
            spec: spec.into(),
            message: "no such checkpoint directory, .gguf file or hub id".into(),
        });
    };
    let config = read_config(&dir)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer_vocab = if tokenizer_path.is_file() {
        Some(load_tokenizer(&tokenizer_path)?.get_vocab_size(true))
    } else {
        None
    };
    Ok(CheckpointInfo {
        source: dir,
        config,
        tokenizer_vocab,
    })
}

/// Reads `config.json` of a checkpoint directory.
pub fn read_config(dir: &Path) -> Result<ModelConfig> {
    ModelConfig::from_file(dir.join("config.json"))
}

/// Loads a Hugging Face checkpoint directory: config.json, safetensors (single or sharded
/// with `model.safetensors.index.json`) and, if present, tokenizer.json.
pub fn load_dir(dir: &Path, options: &LoadOptions) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ModelError::NotFound {
            spec: dir.display().to_string(),
            message: format!("{} does not exist", config_path.display()),
        });
    }
    let cfg = ModelConfig::from_file(&config_path)?;
    options.check_experts()?;
    let files = safetensors_files(dir)?;
    let dtype = options.resolved_dtype();
    // Open each file on its own first, so a damaged one is named.
    for file in &files {
        // SAFETY: the file is mapped read-only and not modified while mapped.
        unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }.map_err(|e| {
            ModelError::Weights {
                path: file.clone(),
                message: format!(
                    "not a valid safetensors file (truncated or damaged?): {}",
                    candle_message(&e)
                ),
            }
        })?;
    }
    // SAFETY: as above.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, &options.device) }.map_err(|e| {
        ModelError::Weights {
            path: dir.to_path_buf(),
            message: candle_message(&e),
        }
    })?;
    let model = Model::with_expert_format(&cfg, vb, options.experts).map_err(|e| ModelError::Weights {
        path: dir.to_path_buf(),
        message: candle_message(&e),
    })?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.is_file() {
        Some(load_tokenizer(&tokenizer_path)?)
    } else {
        None
    };
    Ok(LoadedModel {
        model,
        tokenizer,
        source: dir.to_path_buf(),
        chat_template: read_chat_template(dir)?,
    })
}

/// The chat template of a checkpoint directory's `tokenizer_config.json`, if any.
fn read_chat_template(dir: &Path) -> Result<Option<ChatTemplate>> {
    Ok(read_tokenizer_config(dir)?.and_then(|config| ChatTemplate::from_tokenizer_config(&config)))
}

/// A checkpoint directory's `tokenizer_config.json` (special tokens, chat template), if
/// it has one.
pub fn read_tokenizer_config(dir: &Path) -> Result<Option<serde_json::Value>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Io {
        path: path.clone(),
        source: e,
    })?;
    let config = serde_json::from_str(&text).map_err(|e| ModelError::Tokenizer {
        path: path.clone(),
        message: format!("not valid JSON: {e}"),
    })?;
    Ok(Some(config))
}

/// Builds a model from an in-memory config and tensors in Hugging Face naming
/// (e.g. a converted GGUF or a freshly upcycled checkpoint).
pub fn model_from_tensors(
    cfg: &ModelConfig,
    tensors: HashMap<String, Tensor>,
    options: &LoadOptions,
    origin: &Path,
) -> Result<Model> {
    options.check_experts()?;
    let vb = VarBuilder::from_tensors(tensors, options.resolved_dtype(), &options.device);
    Model::with_expert_format(cfg, vb, options.experts).map_err(|e| ModelError::Weights {
        path: origin.to_path_buf(),
        message: candle_message(&e),
    })
}

/// A model of `cfg`'s shapes with random weights, made on the device: every weight drawn
/// from N(0, 0.02²) and every norm weight 1 (what an untrained checkpoint of that family
/// looks like to the kernels; biases only where the family has them). For speed and memory measurements at shapes no checkpoint
/// on the machine has; the draws follow `seed` through the device's generator.
///
/// ```
/// use latentevo_model::{random_model, LoadOptions, ModelConfig};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tiny/olmoe/config.json");
/// let cfg = ModelConfig::from_file(dir)?;
/// let model = random_model(&cfg, &LoadOptions::default(), 0)?;
/// assert_eq!(model.num_layers(), cfg.num_hidden_layers);
/// # Ok::<(), latentevo_model::ModelError>(())
/// ```
pub fn random_model(cfg: &ModelConfig, options: &LoadOptions, seed: u64) -> Result<Model> {
    options.check_experts()?;
    let weights_error = |e: candle_core::Error| ModelError::Weights {
        path: PathBuf::from("<random weights>"),
        message: candle_message(&e),
    };
    // The CPU has no seedable generator of its own: draw there from one made of `seed`.
    let host_rng = if options.device.is_cpu() {
        Some(std::sync::Mutex::new(
            <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed),
        ))
    } else {
        options.device.set_seed(seed).map_err(weights_error)?;
        None
    };
    let weights = RandomWeights {
        qkv_bias: cfg.family == crate::config::Family::Qwen2Moe,
        host_rng,
    };
    let vb = VarBuilder::from_backend(
        Box::new(weights),
        options.resolved_dtype(),
        options.device.clone(),
    );
    Model::with_expert_format(cfg, vb, options.experts).map_err(weights_error)
}

/// The weight source of [`random_model`].
struct RandomWeights {
    /// Whether the attention's q/k/v projections have biases (Qwen2-MoE's do).
    qkv_bias: bool,
    /// The generator on the CPU (elsewhere the device's own, seeded).
    host_rng: Option<std::sync::Mutex<rand_chacha::ChaCha8Rng>>,
}

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: candle_core::Shape,
        _name: &str,
        hint: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match hint {
            // Norm weights ask for ones.
            candle_nn::Init::Const(v) if v != 0.0 => Tensor::full(v as f32, shape, device)?.to_dtype(dtype),
            _ => match &self.host_rng {
                Some(rng) => {
                    use rand_distr::Distribution;
                    let normal = rand_distr::Normal::new(0f32, 0.02).expect("a positive std");
                    let mut rng = rng.lock().expect("the generator's lock is never poisoned");
                    let values: Vec<f32> = (0..shape.elem_count())
                        .map(|_| normal.sample(&mut *rng))
                        .collect();
                    Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
                }
                None => Tensor::randn(0f32, 0.02, shape, device)?.to_dtype(dtype),
            },
        }
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _device: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights have no shape for `{name}`")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let qkv = [".q_proj.bias", ".k_proj.bias", ".v_proj.bias"];
        !name.ends_with(".bias") || (self.qkv_bias && qkv.iter().any(|s| name.ends_with(s)))
    }
}

/// Loads a `tokenizer.json`, naming the file on failure (see [`parse_tokenizer`]).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_tokenizer(&text).map_err(|message| ModelError::Tokenizer {
        path: path.to_path_buf(),
        message: format!("does not parse: {message}"),
    })
}

/// Builds a tokenizer from its JSON, with an error, never a panic, for a damaged file.
///
/// The `tokenizers` crate (0.23) panics on some bad input instead of returning an error
/// (found by the `tokenizer_json` fuzz target: a syntax error inside `decoder` hits an
/// `expect`; a `Precompiled` normalizer without its character map hits another). So the
/// JSON's syntax is checked first, without building it, and a panic that still escapes
/// the crate is caught and reported as an error (its message still goes to stderr
/// through the panic hook).
pub fn parse_tokenizer(json: &str) -> std::result::Result<Tokenizer, String> {
    serde_json::from_str::<serde::de::IgnoredAny>(json).map_err(|e| format!("not valid JSON: {e}"))?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| json.parse::<Tokenizer>())) {
        Ok(parsed) => parsed.map_err(|e| e.to_string()),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(format!("the tokenizers crate failed on it ({why})"))
        }
    }
}

/// The weight files of a checkpoint directory: the shards its
/// `model.safetensors.index.json` lists (each checked to exist), else `model.safetensors`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(SAFETENSORS_INDEX);
    if index.is_file() {
        let files: Vec<PathBuf> = read_safetensors_index(&index)?
            .into_iter()
            .map(|n| dir.join(n))
            .collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(ModelError::Weights {
                path: missing.clone(),
                message: format!("shard listed in {} is missing", index.display()),
            });
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::NotFound {
        spec: dir.display().to_string(),
        message: "no model.safetensors nor model.safetensors.index.json".into(),
    })
}

/// The name of a sharded checkpoint's index file.
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";

/// The shard file names a `model.safetensors.index.json` lists in its `weight_map`,
/// sorted, each once. Each must be a relative path inside the checkpoint directory (no
/// `..`, no absolute path): an index cannot point the loader at other files.
pub fn read_safetensors_index(index: &Path) -> Result<Vec<String>> {
    let json = crate::config::read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::MissingField {
            path: index.to_path_buf(),
            field: "weight_map".into(),
        })?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| ModelError::InvalidField {
            path: index.to_path_buf(),
            field: "weight_map".into(),
            message: format!("tensor `{tensor}`: expected a file name, got {file}"),
        })?;
        let inside = !file.is_empty()
            && Path::new(file)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(ModelError::InvalidField {
                path: index.to_path_buf(),
                field: "weight_map".into(),
                message: format!(
                    "tensor `{tensor}`: shard {file:?} is not a file name inside the checkpoint directory"
                ),
            });
        }
        names.insert(file);
    }
    Ok(names.into_iter().map(String::from).collect())
}

/// Reads every tensor of a checkpoint's weight `files` (see [`safetensors_files`]) into
/// memory, converted to `dtype` on `device`, under the checkpoint's own names.
pub fn read_tensors(files: &[PathBuf], device: &Device, dtype: DType) -> Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    for file in files {
        let weights_error = |e: candle_core::Error| ModelError::Weights {
            path: file.clone(),
            message: format!(
                "not a valid safetensors file (truncated or damaged?): {}",
                candle_message(&e)
            ),
        };
        for (name, t) in candle_core::safetensors::load(file, device).map_err(weights_error)? {
            let t = t.to_dtype(dtype).map_err(|e| ModelError::Weights {
                path: file.clone(),
                message: format!("tensor `{name}`: {}", candle_message(&e)),
            })?;
            tensors.insert(name, t);
        }
    }
    Ok(tensors)
}

fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && *p != ".."
                && *p != "."
        })
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

fn fetch_from_hub(repo_id: &str, revision: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    let repo =
        hf_hub::Repo::with_revision(repo_id.to_string(), hf_hub::RepoType::Model, revision.to_string());
    let cached = cache.repo(repo.clone());
    if let Some(dir) = cached_checkpoint(&cached) {
        return Ok(dir);
    }
    let cache_dir = cache.path().display().to_string();
    if env_flag("HF_HUB_OFFLINE") {
        return Err(ModelError::NotFound {
            spec: repo_id.into(),
            message: format!("HF_HUB_OFFLINE is set and the model is not in the local cache {cache_dir}"),
        });
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    if let Err(why) = probe(&endpoint, Duration::from_secs(5)) {
        return Err(ModelError::NotFound {
            spec: repo_id.into(),
            message: format!(
                "not in the local cache {cache_dir}, and the hub at {endpoint} is unreachable ({why}); \
                 pass a local checkpoint directory or set HF_HUB_OFFLINE=1 with a filled cache"
            ),
        });
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| ModelError::NotFound {
            spec: repo_id.into(),
            message: e.to_string(),
        })?;
    let api_repo = api.repo(repo);
    let hub_error = |e: hf_hub::api::sync::ApiError| ModelError::NotFound {
        spec: repo_id.into(),
        message: e.to_string(),
    };
    let config = api_repo.get("config.json").map_err(hub_error)?;
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    // Optional: a checkpoint without a tokenizer still runs on token ids.
    let _ = api_repo.get("tokenizer.json");
    match api_repo.get(SAFETENSORS_INDEX) {
        Ok(index) => {
            for name in read_safetensors_index(&index)? {
                api_repo.get(&name).map_err(hub_error)?;
            }
        }
        Err(_) => {
            api_repo.get("model.safetensors").map_err(hub_error)?;
        }
    }
    Ok(dir)
}

fn cached_checkpoint(cached: &hf_hub::CacheRepo) -> Option<PathBuf> {
    let config = cached.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    let complete = match cached.get(SAFETENSORS_INDEX) {
        Some(_) => safetensors_files(&dir).is_ok(),
        None => cached.get("model.safetensors").is_some(),
    };
    complete.then_some(dir)
}

/// Checks within `timeout` that the endpoint's host accepts TCP connections, so an
/// unreachable hub fails fast instead of hanging in a download.
fn probe(endpoint: &str, timeout: Duration) -> std::result::Result<(), String> {
    let without_scheme = endpoint.split("://").nth(1).unwrap_or(endpoint);
    let host_port = without_scheme
        .split('/')
        .next()
        .unwrap_or(without_scheme)
        .to_string();
    let default_port = if endpoint.starts_with("http://") { 80 } else { 443 };
    let target = if host_port.contains(':') {
        host_port
    } else {
        format!("{host_port}:{default_port}")
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let lookup = target.clone();
    // Name resolution has no timeout of its own; run it on a thread we can abandon.
    std::thread::spawn(move || {
        let _ = tx.send(lookup.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    let addrs = match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
        Ok(Ok(_)) => return Err(format!("{target} resolves to no address")),
        Ok(Err(e)) => return Err(format!("cannot resolve {target}: {e}")),
        Err(_) => return Err(format!("resolving {target} timed out")),
    };
    let mut last = String::new();
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids() {
        assert!(looks_like_hub_id("ibm-granite/granite-3.1-1b-a400m-instruct"));
        assert!(!looks_like_hub_id("models/tiny/mixtral/extra"));
        assert!(!looks_like_hub_id("../x"));
        assert!(!looks_like_hub_id("noslash"));
    }
}
