//! Every family against transformers: logits within 1e-4 (f32) and identical expert ids,
//! one prompt at a time and as one left-padded batch.

mod common;

use candle_core::IndexOp;
use common::*;
use latentevo_model::{Hooks, LogitsMode, TokenBatch};

fn check_family(family: &str) {
    let loaded = load_fixture(family);
    let model = &loaded.model;
    let reference = Reference::load(family);
    let prompts = reference.prompts();
    let hooks = Hooks {
        record_routing: true,
        ..Hooks::default()
    };
    let moe_layers = model.config().moe_layers();
    let mut single_logits = Vec::new();
    let mut single_routing = Vec::new();
    for (p, ids) in prompts.iter().enumerate() {
        let mut cache = model.new_cache();
        let out = model
            .forward(
                &TokenBatch::left_padded(std::slice::from_ref(ids), 0),
                &mut cache,
                &hooks,
                LogitsMode::All,
            )
            .unwrap();
        let logits = out.logits.unwrap().i(0).unwrap();
        let diff = max_abs_diff(&logits, reference.tensor(&format!("logits.{p}")));
        eprintln!("{family} prompt {p}: max |logit diff| vs transformers = {diff:.2e}");
        assert!(
            diff < LOGIT_TOLERANCE,
            "{family} prompt {p}: max |logit diff| = {diff}"
        );
        let routing = out.routing.unwrap();
        assert_eq!(
            routing.layers.iter().map(|l| l.layer).collect::<Vec<_>>(),
            moe_layers
        );
        if !moe_layers.is_empty() {
            assert_eq!(
                routing.expert_ids(0),
                reference.routing(p),
                "{family} prompt {p}: expert ids differ"
            );
        }
        single_logits.push(logits);
        single_routing.push(routing.expert_ids(0));
    }

    // The same prompts as one left-padded batch give the one-by-one results.
    let batch = TokenBatch::left_padded(&prompts, 0);
    let mut cache = model.new_cache();
    let out = model
        .forward(&batch, &mut cache, &hooks, LogitsMode::All)
        .unwrap();
    let logits = out.logits.unwrap();
    let routing = out.routing.unwrap();
    let width = batch.seq_len();
    for (p, ids) in prompts.iter().enumerate() {
        let real = logits.i((p, width - ids.len()..width)).unwrap();
        let diff = max_abs_diff(&real, &single_logits[p]);
        assert!(
            diff < LOGIT_TOLERANCE,
            "{family} batch row {p}: max |diff| vs single = {diff}"
        );
        assert_eq!(
            routing.expert_ids(p),
            single_routing[p],
            "{family} batch row {p}: routing differs"
        );
    }
}

#[test]
fn llama_matches_transformers() {
    check_family("llama");
}

#[test]
fn mixtral_matches_transformers() {
    check_family("mixtral");
}

#[test]
fn qwen2_moe_matches_transformers() {
    check_family("qwen2_moe");
}

#[test]
fn qwen3_moe_matches_transformers() {
    check_family("qwen3_moe");
}

#[test]
fn olmoe_matches_transformers() {
    check_family("olmoe");
}

#[test]
fn granitemoe_matches_transformers() {
    check_family("granitemoe");
}

/// Half precision (the GPU dtypes) runs through the same code; on CPU it is checked
/// against the f32 reference with a tolerance fitting bf16's 8-bit mantissa.
#[test]
fn bf16_and_f16_stay_close_to_the_reference() {
    use candle_core::DType;
    use latentevo_model::{load, LoadOptions};
    for family in ["mixtral", "qwen2_moe", "granitemoe"] {
        let reference = Reference::load(family);
        let ids = &reference.prompts()[1];
        for (dtype, tolerance) in [(DType::BF16, 0.25f32), (DType::F16, 0.05)] {
            let options = LoadOptions {
                dtype: Some(dtype),
                ..LoadOptions::default()
            };
            let loaded = load(fixture_dir(family).to_str().unwrap(), &options).unwrap();
            let model = &loaded.model;
            let out = model
                .forward(
                    &TokenBatch::left_padded(std::slice::from_ref(ids), 0),
                    &mut model.new_cache(),
                    &Hooks::default(),
                    LogitsMode::All,
                )
                .unwrap();
            let logits = out.logits.unwrap().i(0).unwrap();
            let diff = max_abs_diff(&logits, reference.tensor("logits.1"));
            eprintln!("{family} {dtype:?}: max |logit diff| vs transformers f32 = {diff:.3e}");
            assert!(diff < tolerance, "{family} {dtype:?}: {diff}");
        }
    }
}
