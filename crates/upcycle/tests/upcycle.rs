//! Upcycling tests on the tiny GGUF fixtures (models/tiny-gguf).

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use latentevo_model::{Hooks, LogitsMode, TokenBatch};
use latentevo_upcycle::measure::{measure, size_of};
use latentevo_upcycle::{
    calibrate, calibration_ids, load_dense, upcycle, write_checkpoint, DenseCheckpoint, Method, NoiseMode,
    RouterInit, UpcycleError, UpcycleOptions, WriteOptions, CALIBRATION_TEXT, PROVENANCE_FILE,
};
use serde_json::Value as Json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/tiny-gguf")
        .join(name)
}

fn reference(name: &str) -> Json {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn dense_q() -> DenseCheckpoint {
    load_dense(&fixture("tiny-q.gguf")).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn ids_of(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn model_logits(model: &latentevo_model::Model, ids: &[u32]) -> Tensor {
    let batch = TokenBatch::left_padded(&[ids.to_vec()], 0);
    let mut cache = model.new_cache();
    let out = model
        .forward(&batch, &mut cache, &Hooks::default(), LogitsMode::All)
        .unwrap();
    out.logits.unwrap().get(0).unwrap()
}

/// The dense decoder the crate calibrates with ([`DenseCheckpoint::forward`], the model
/// crate's decoder over the GGUF-loaded weights) reproduces transformers' logits on
/// every position of 4 prompts within 1e-4; recording the MLP inputs (one
/// `[seq, hidden]` tensor per layer) leaves the logits bit-identical to the model's own
/// forward call.
#[test]
fn dense_logits_match_transformers() {
    for (g, r) in [
        ("tiny-q.gguf", "reference-tiny-q.json"),
        ("tiny-f.gguf", "reference-tiny-f.json"),
    ] {
        let dense = load_dense(&fixture(g)).unwrap();
        let model = dense.model().unwrap();
        let (layers, hidden) = (dense.config.num_hidden_layers, dense.config.hidden_size);
        for case in reference(r)["logits"].as_array().unwrap() {
            let ids = ids_of(&case["ids"]);
            let want: Vec<Vec<f32>> = case["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect()
                })
                .collect();
            let want = Tensor::new(want, &candle_core::Device::Cpu).unwrap();
            let recorded = dense.forward(&ids, true).unwrap();
            let diff = max_abs_diff(&recorded.logits, &want);
            assert!(diff < 1e-4, "{g}: logits differ from transformers' by {diff}");
            assert_eq!(recorded.mlp_inputs.len(), layers, "{g}: one MLP input per layer");
            for (l, x) in recorded.mlp_inputs.iter().enumerate() {
                assert_eq!(x.dims(), [ids.len(), hidden], "{g}: MLP input of layer {l}");
            }
            let plain = model_logits(model, &ids);
            assert_eq!(
                max_abs_diff(&recorded.logits, &plain),
                0.0,
                "{g}: recording the MLP inputs changed the logits"
            );
        }
    }
}

fn tiny_calibration(dense: &DenseCheckpoint) -> latentevo_upcycle::Calibration {
    let ids = calibration_ids(dense, CALIBRATION_TEXT).unwrap();
    calibrate(dense, &ids[..ids.len().min(600)], 200).unwrap()
}

fn prompt_ids(dense: &DenseCheckpoint) -> Vec<u32> {
    calibration_ids(
        dense,
        "Now it came to pass in the days when the judges ruled, that there was a famine.",
    )
    .unwrap()
}

/// Noise-free copies compute exactly the dense MLP whatever the routing (the top-k
/// weights sum to one), so the MoE's logits equal the dense model's.
#[test]
fn noise_free_copies_equal_dense() {
    let dense = dense_q();
    let calib = tiny_calibration(&dense);
    let ids = prompt_ids(&dense);
    let want = dense.forward(&ids, false).unwrap().logits;
    for router in [RouterInit::KMeans, RouterInit::Random] {
        let opts = UpcycleOptions {
            method: Method::Copies,
            experts: 4,
            top_k: 2,
            noise: 0.0,
            router,
            seed: 3,
            ..UpcycleOptions::default()
        };
        let moe = upcycle(&dense, &opts, Some(&calib), |_, _| {}).unwrap();
        assert_eq!(moe.config["architectures"][0], "MixtralForCausalLM");
        assert_eq!(moe.config["num_local_experts"], 4);
        assert_eq!(moe.config["num_experts_per_tok"], 2);
        assert!(moe
            .tensors
            .contains_key("model.layers.1.block_sparse_moe.experts.3.w2.weight"));
        assert_eq!(
            moe.tensors["model.layers.0.block_sparse_moe.gate.weight"].dims(),
            &[4, 64]
        );
        let model = moe.model().unwrap();
        let got = model_logits(model, &ids);
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-4, "{router:?}: copies differ from dense by {d}");
    }
}

/// A split with every group active (k = E) adds all neuron groups back together: the
/// weights are 1/k within 1% and each expert's down is scaled by k, so the logits stay
/// within 2% of the logit range of the dense model's.
#[test]
fn split_with_all_groups_active_is_close_to_dense() {
    let dense = dense_q();
    let calib = tiny_calibration(&dense);
    let ids = prompt_ids(&dense);
    let want = dense.forward(&ids, false).unwrap().logits;
    let opts = UpcycleOptions {
        method: Method::Split,
        experts: 4,
        top_k: 4,
        seed: 1,
        ..UpcycleOptions::default()
    };
    let moe = upcycle(&dense, &opts, Some(&calib), |_, _| {}).unwrap();
    assert_eq!(moe.config["intermediate_size"], 32);
    assert_eq!(
        moe.tensors["model.layers.0.block_sparse_moe.experts.2.w1.weight"].dims(),
        &[32, 64]
    );
    let model = moe.model().unwrap();
    let got = model_logits(model, &ids);
    let range = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let d = max_abs_diff(&got, &want);
    assert!(d < 0.02 * range, "split k=E differs by {d} (range {range})");
    // Fewer groups active: a different, worse model, but a valid one.
    let opts2 = UpcycleOptions { top_k: 2, ..opts };
    let moe2 = upcycle(&dense, &opts2, Some(&calib), |_, _| {}).unwrap();
    let m2 = moe2.model().unwrap();
    let got2 = model_logits(m2, &ids);
    assert!(max_abs_diff(&got2, &want) > d);
}

fn mlp(x: &Tensor, g: &Tensor, u: &Tensor, d: &Tensor) -> Tensor {
    let a = (candle_nn::ops::silu(&x.matmul(&g.t().unwrap()).unwrap()).unwrap()
        * x.matmul(&u.t().unwrap()).unwrap())
    .unwrap();
    a.matmul(&d.t().unwrap()).unwrap()
}

fn rms(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

/// Output-calibrated noise: every expert's output on the calibration inputs deviates
/// from the dense MLP's by the requested relative RMS (within 5% of it); weight-relative
/// noise does not control that.
#[test]
fn output_noise_sets_each_experts_deviation() {
    let dense = dense_q();
    let calib = tiny_calibration(&dense);
    for level in [0.05, 0.2] {
        let opts = UpcycleOptions {
            noise: level,
            noise_mode: NoiseMode::Output,
            seed: 4,
            ..UpcycleOptions::default()
        };
        let moe = upcycle(&dense, &opts, Some(&calib), |_, _| {}).unwrap();
        for l in 0..2 {
            let x = calib.mlp_inputs[l].narrow(0, 0, 384).unwrap();
            let w = |s: &str| dense.tensors[&format!("model.layers.{l}.mlp.{s}.weight")].clone();
            let y = mlp(&x, &w("gate_proj"), &w("up_proj"), &w("down_proj"));
            for e in 0..4 {
                let t = |s: &str| {
                    moe.tensors[&format!("model.layers.{l}.block_sparse_moe.experts.{e}.{s}.weight")].clone()
                };
                let dev = rms(&(mlp(&x, &t("w1"), &t("w3"), &t("w2")) - &y).unwrap()) / rms(&y);
                assert!(
                    (dev as f64 - level).abs() < 0.05 * level,
                    "layer {l} expert {e}: deviation {dev} for level {level}"
                );
            }
        }
    }
    let weights = UpcycleOptions {
        noise: 0.05,
        noise_mode: NoiseMode::Weights,
        router: RouterInit::Random,
        ..UpcycleOptions::default()
    };
    assert!(!weights.needs_calibration());
    let moe = upcycle(&dense, &weights, None, |_, _| {}).unwrap();
    let a = &moe.tensors["model.layers.0.block_sparse_moe.experts.0.w1.weight"];
    let base = &dense.tensors["model.layers.0.mlp.gate_proj.weight"];
    let rel = rms(&(a - base).unwrap())
        / base
            .flatten_all()
            .unwrap()
            .var(0)
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
    assert!((rel - 0.05).abs() < 0.005, "weight-relative noise {rel}");
}

#[test]
fn upcycling_is_deterministic_given_the_seed() {
    let dense = dense_q();
    let calib = tiny_calibration(&dense);
    let opts = UpcycleOptions {
        noise: 0.05,
        seed: 11,
        ..UpcycleOptions::default()
    };
    let a = upcycle(&dense, &opts, Some(&calib), |_, _| {}).unwrap();
    let b = upcycle(&dense, &opts, Some(&calib), |_, _| {}).unwrap();
    let c = upcycle(
        &dense,
        &UpcycleOptions {
            seed: 12,
            ..opts.clone()
        },
        Some(&calib),
        |_, _| {},
    )
    .unwrap();
    let name = "model.layers.1.block_sparse_moe.experts.2.w3.weight";
    assert_eq!(max_abs_diff(&a.tensors[name], &b.tensors[name]), 0.0);
    assert!(max_abs_diff(&a.tensors[name], &c.tensors[name]) > 0.0);
    let g = "model.layers.0.block_sparse_moe.gate.weight";
    assert_eq!(max_abs_diff(&a.tensors[g], &b.tensors[g]), 0.0);
    // Experts differ from one another by the noise (relative 5% of the weights' std).
    let e0 = &a.tensors["model.layers.0.block_sparse_moe.experts.0.w1.weight"];
    let e1 = &a.tensors["model.layers.0.block_sparse_moe.experts.1.w1.weight"];
    assert!(max_abs_diff(e0, e1) > 0.0);
}

/// Routing sensitivity: zero with identical experts, positive with noisy ones; sizes.
#[test]
fn routing_sensitivity_and_size() {
    let dense = dense_q();
    let calib = tiny_calibration(&dense);
    let ids = calibration_ids(
        &dense,
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/kjv-ruth.txt"))
            .unwrap(),
    )
    .unwrap();
    let ids = &ids[..256];
    let dense_model = dense.model().unwrap();
    let base = measure(dense_model, ids, 128, true).unwrap();
    assert!(base.routing.is_none());
    assert_eq!(base.tokens, 254);
    let mut kls = Vec::new();
    for noise in [0.0, 0.2] {
        let opts = UpcycleOptions {
            noise,
            seed: 5,
            ..UpcycleOptions::default()
        };
        let moe = upcycle(&dense, &opts, Some(&calib), |_, _| {}).unwrap();
        let model = moe.model().unwrap();
        let m = measure(model, ids, 128, true).unwrap();
        let r = m.routing.unwrap();
        if noise == 0.0 {
            assert!((m.ppl - base.ppl).abs() < 1e-3 * base.ppl);
            assert!(r.kl < 1e-6, "kl {}", r.kl);
        }
        kls.push(r.kl);
    }
    assert!(kls[1] > 1e-4, "noisy experts: kl {}", kls[1]);

    let dsize = size_of(&dense.tensors, true, 1, 1);
    assert_eq!(dsize.total, dense.config.parameter_counts().0);
    let moe = upcycle(&dense, &UpcycleOptions::default(), Some(&calib), |_, _| {}).unwrap();
    let msize = size_of(&moe.tensors, true, 4, 2);
    let mlp = 2 * 3 * 64 * 128u64; // two layers
    assert_eq!(msize.total, dsize.total + 3 * mlp + 2 * 4 * 64);
    assert_eq!(msize.macs_per_token, dsize.macs_per_token + mlp + 2 * 4 * 64);
}

#[test]
fn written_checkpoint_loads_in_the_model_core() {
    let dense = dense_q();
    let calib = tiny_calibration(&dense);
    let opts = UpcycleOptions {
        noise: 0.02,
        seed: 2,
        ..UpcycleOptions::default()
    };
    let moe = upcycle(&dense, &opts, Some(&calib), |_, _| {}).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    write_checkpoint(&moe, &out, WriteOptions::default()).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        PROVENANCE_FILE,
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let prov: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join(PROVENANCE_FILE)).unwrap()).unwrap();
    assert_eq!(prov["method"], "copies");
    assert_eq!(prov["seed"], 2);
    assert_eq!(prov["source"]["format"], "gguf");
    assert_eq!(prov["source"]["sha256"].as_str().unwrap().len(), 64);
    // No temporary directories left next to it.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    let loaded = latentevo_model::load(out.to_str().unwrap(), &Default::default()).unwrap();
    let ids = prompt_ids(&dense);
    let in_memory = moe.model().unwrap();
    let d = max_abs_diff(&model_logits(&loaded.model, &ids), &model_logits(in_memory, &ids));
    assert!(d < 1e-5, "written checkpoint differs by {d}");
    // The tokenizer round-trips.
    let tok = loaded.tokenizer.unwrap();
    assert_eq!(
        tok.encode("Hello, world!", false).unwrap().get_ids(),
        dense
            .tokenizer
            .as_ref()
            .unwrap()
            .encode("Hello, world!", false)
            .unwrap()
            .get_ids()
    );

    // Existing output: an error without force; with force replaced (f16 this time).
    let err = write_checkpoint(&moe, &out, WriteOptions::default()).unwrap_err();
    assert!(matches!(err, UpcycleError::OutputExists(_)), "{err:?}");
    write_checkpoint(
        &moe,
        &out,
        WriteOptions {
            force: true,
            dtype: DType::F16,
        },
    )
    .unwrap();
    let cfg: Json = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "float16");
    let loaded = latentevo_model::load(out.to_str().unwrap(), &Default::default()).unwrap();
    let d = max_abs_diff(&model_logits(&loaded.model, &ids), &model_logits(in_memory, &ids));
    assert!(d < 0.05, "f16 checkpoint differs by {d}");
}

#[test]
fn a_failed_write_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    let err = latentevo_upcycle::checkpoint::write_atomically(&out, false, |dir| {
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        Err(UpcycleError::Options("simulated failure".into()))
    })
    .unwrap_err();
    assert!(err.to_string().contains("simulated"));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn bad_options_and_sources_are_errors() {
    let dense = dense_q();
    let calib = tiny_calibration(&dense);
    for (opts, needle) in [
        (
            UpcycleOptions {
                top_k: 5,
                ..Default::default()
            },
            "top-k",
        ),
        (
            UpcycleOptions {
                experts: 0,
                ..Default::default()
            },
            "expert",
        ),
        (
            UpcycleOptions {
                noise: -1.0,
                ..Default::default()
            },
            "noise",
        ),
        (
            UpcycleOptions {
                method: Method::Split,
                experts: 3,
                top_k: 2,
                ..Default::default()
            },
            "divide",
        ),
    ] {
        let err = upcycle(&dense, &opts, Some(&calib), |_, _| {}).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let err = upcycle(&dense, &UpcycleOptions::default(), None, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("calibration"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let err = load_dense(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"architectures": ["MixtralForCausalLM"]}"#,
    )
    .unwrap();
    let err = load_dense(tmp.path()).unwrap_err();
    assert!(matches!(err, UpcycleError::UnsupportedSource { .. }), "{err:?}");
    let p = tmp.path().join("bad.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00").unwrap();
    let err = load_dense(&p).unwrap_err();
    assert!(matches!(err, UpcycleError::Gguf(_)), "{err:?}");
}
