//! Quantised routed experts ([`ExpertFormat::Q8_0`], [`ExpertFormat::Q4K`]) against the
//! f32 model on every MoE fixture: logits close, the same top-1 token almost everywhere,
//! the routing lock honoured; and the combinations that cannot run refused by name.

mod common;

use candle_core::{DType, Tensor, D};
use common::*;
use latentevo_model::{
    load, ExpertFormat, Hooks, LoadOptions, LockWeights, LogitsMode, Model, ModelError, MoePath, RoutingLock,
    TokenBatch,
};

const MOE_FAMILIES: &[&str] = &["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe"];

/// Per format: the largest logit difference from the f32 model under the f32 model's
/// routing (locked, weights replayed: the arithmetic alone), as a share of the f32 logits'
/// range, and the least share of positions whose top-1 token is the f32 model's with
/// free routing (where a near tie can also send a token to another expert). Measured on
/// the five fixtures: Q8_0 0.004-0.009 and 0.96-1.0, Q4_K 0.03-0.07 and 0.63-0.98 (the
/// fixtures' random weights give flat next-token distributions, so close calls abound;
/// `examples/expert_formats.rs` of the upcycle crate measures the default model).
const TOLERANCES: &[(ExpertFormat, f32, f64)] =
    &[(ExpertFormat::Q8_0, 0.02, 0.9), (ExpertFormat::Q4K, 0.12, 0.5)];

fn load_as(family: &str, experts: ExpertFormat) -> Model {
    let options = LoadOptions {
        experts,
        ..test_options(None)
    };
    load(fixture_dir(family).to_str().unwrap(), &options)
        .unwrap_or_else(|e| panic!("loading {family} with {experts} experts: {e}"))
        .model
}

fn logits(model: &Model, batch: &TokenBatch, hooks: &Hooks) -> Tensor {
    model
        .forward(batch, &mut model.new_cache(), hooks, LogitsMode::All)
        .unwrap()
        .logits
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

/// Share of positions (rows x positions) with the same arg-max.
fn top1_agreement(a: &Tensor, b: &Tensor) -> f64 {
    let argmax = |t: &Tensor| -> Vec<u32> {
        t.argmax(D::Minus1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b) = (argmax(a), argmax(b));
    a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

fn logit_range(t: &Tensor) -> f32 {
    let values: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    max - min
}

/// Logits close under the f32 routing, top-1 tokens mostly the same under free routing.
#[test]
fn quantised_experts_stay_close_to_the_f32_model() {
    if !test_device().is_cpu() {
        return; // quantised experts run on the CPU only
    }
    for family in MOE_FAMILIES {
        let reference = load_as(family, ExpertFormat::Dense);
        let prompts = Reference::load(family).prompts();
        let batch = TokenBatch::left_padded(&prompts, 0);
        let record = Hooks {
            record_routing: true,
            ..Hooks::default()
        };
        let out = reference
            .forward(&batch, &mut reference.new_cache(), &record, LogitsMode::All)
            .unwrap();
        let want = out.logits.unwrap();
        let lock = RoutingLock {
            weights: LockWeights::Replay,
            ..RoutingLock::new(out.routing.unwrap())
        };
        let locked = Hooks {
            lock: Some(&lock),
            ..Hooks::default()
        };
        let range = logit_range(&want);
        for &(format, logit_share, top1) in TOLERANCES {
            let model = load_as(family, format);
            assert_eq!(model.expert_format(), format);
            let diff = max_abs_diff(&logits(&model, &batch, &locked), &want) / range;
            let agree = top1_agreement(&logits(&model, &batch, &Hooks::default()), &want);
            eprintln!("{family} {format}: logits within {diff:.4} of the range {range:.3}, top-1 {agree:.3}");
            assert!(
                diff <= logit_share,
                "{family} {format}: logits differ by {diff} of their range"
            );
            assert!(agree >= top1, "{family} {format}: top-1 agreement {agree}");
        }
    }
}

/// Under a lock of the f32 model's routes (weights replayed), a quantised model records
/// exactly those experts and weights.
#[test]
fn quantised_experts_follow_the_routing_lock() {
    if !test_device().is_cpu() {
        return;
    }
    for family in MOE_FAMILIES {
        let reference = load_as(family, ExpertFormat::Dense);
        let prompts = Reference::load(family).prompts();
        let batch = TokenBatch::left_padded(&prompts[..2], 0);
        let record = Hooks {
            record_routing: true,
            ..Hooks::default()
        };
        let recorded = reference
            .forward(&batch, &mut reference.new_cache(), &record, LogitsMode::Last)
            .unwrap()
            .routing
            .unwrap();
        let lock = RoutingLock {
            weights: LockWeights::Replay,
            ..RoutingLock::new(recorded.clone())
        };
        let model = load_as(family, ExpertFormat::Q8_0);
        let hooks = Hooks {
            lock: Some(&lock),
            record_routing: true,
            ..Hooks::default()
        };
        let out = model
            .forward(&batch, &mut model.new_cache(), &hooks, LogitsMode::Last)
            .unwrap();
        assert_same_routing(&recorded, out.routing.as_ref().unwrap(), 0.0, family);
    }
}

#[test]
fn quantised_experts_refuse_what_they_cannot_run() {
    let dir = fixture_dir("olmoe");
    let options = LoadOptions {
        experts: ExpertFormat::Q4K,
        dtype: Some(DType::BF16),
        ..LoadOptions::default()
    };
    match load(dir.to_str().unwrap(), &options) {
        Err(ModelError::InvalidRequest(message)) => {
            assert!(message.contains("q4_k") && message.contains("f32"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut model = load_as("olmoe", ExpertFormat::Q8_0);
    model.set_moe_path(MoePath::Device);
    let batch = TokenBatch::left_padded(&[vec![1, 2, 3]], 0);
    let err = model
        .forward(
            &batch,
            &mut model.new_cache(),
            &Hooks::default(),
            LogitsMode::Last,
        )
        .unwrap_err();
    assert!(err.to_string().contains("host path"), "{err}");
    // A dense model has no routed experts to quantise: it loads as f32.
    assert_eq!(
        load_as("llama", ExpertFormat::Q8_0).expert_format(),
        ExpertFormat::Dense
    );
}
