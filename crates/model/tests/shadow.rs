//! Shadowed generation (routing lock at generated positions), scoring of continuations
//! after a shared context, and a forward over a non-empty cache with several new tokens.

mod common;

use candle_core::{Device, Tensor, D};
use common::*;
use latentevo_model::{
    gather_logprobs, GenerationConfig, Hooks, LogitsMode, Perturbation, Positions, RoutingLock, TokenBatch,
};

const MOE_FAMILIES: &[&str] = &["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe"];

fn prompt() -> Vec<u32> {
    Reference::load("mixtral").prompts()[1].clone()
}

/// Deterministic `[rows, hidden]` values of roughly the given RMS.
fn delta(rows: usize, hidden: usize, rms: f32) -> Tensor {
    let values: Vec<f32> = (0..rows * hidden)
        .map(|i| (((i * 7919 + 13) % 101) as f32 / 50.0 - 1.0) * rms * 1.7)
        .collect();
    Tensor::from_vec(values, (rows, hidden), &Device::Cpu).unwrap()
}

/// Experts of `row` at decoder layer `layer`, by position.
fn experts_by_position(
    routing: &latentevo_model::Routing,
    layer: usize,
    row: usize,
) -> Vec<(usize, Vec<u32>)> {
    routing.layer(layer).unwrap().rows[row]
        .iter()
        .map(|r| (r.position, r.experts.clone()))
        .collect()
}

#[test]
fn under_the_lock_perturbed_rows_use_the_base_models_experts_at_every_position() {
    for family in MOE_FAMILIES {
        let loaded = load_fixture(family);
        let model = &loaded.model;
        let hidden = model.config().hidden_size;
        let prompt = prompt();
        let config = GenerationConfig {
            max_new_tokens: 6,
            ..GenerationConfig::default()
        };
        let record = Hooks {
            record_routing: true,
            ..Hooks::default()
        };
        let base = model
            .generate(std::slice::from_ref(&prompt), &config, &record, None)
            .unwrap();
        // Only the prompt's routes are recorded for the population; generated tokens follow.
        let lock = RoutingLock::new(base.routing.unwrap().before(prompt.len()));
        let layer = 1;
        let rows = 3;
        let shared_prompt = model
            .run_lower_layers(
                &TokenBatch::left_padded(std::slice::from_ref(&prompt), 0),
                layer,
                true,
            )
            .unwrap();
        let perturb = Perturbation {
            layer,
            delta: delta(rows, hidden, 4.0),
            positions: Positions::All,
        };
        let hooks = Hooks {
            perturb: Some(&perturb),
            lock: Some(&lock),
            record_routing: true,
            ..Hooks::default()
        };
        let out = model
            .generate_shadowed(&shared_prompt, &config, &hooks, None)
            .unwrap();
        let routing = out.routing.as_ref().unwrap();
        assert!(
            out.drift.share() > 0.0,
            "{family}: a strong perturbation should make the free router drift"
        );
        for row in 0..rows {
            let tokens = &out.sequences[row].tokens;
            // The unperturbed model, teacher-forced on this row's tokens, routes free.
            let fed: Vec<u32> = prompt
                .iter()
                .chain(&tokens[..tokens.len() - 1])
                .copied()
                .collect();
            let free = model
                .forward(
                    &TokenBatch::left_padded(&[fed], 0),
                    &mut model.new_cache(),
                    &record,
                    LogitsMode::None,
                )
                .unwrap()
                .routing
                .unwrap();
            for moe_layer in model.config().moe_layers().into_iter().filter(|&l| l >= layer) {
                let used = experts_by_position(routing, moe_layer, row);
                let base_choice = experts_by_position(&free, moe_layer, 0);
                assert_eq!(
                    used.len(),
                    prompt.len() + tokens.len() - 1,
                    "{family}: positions of row {row}"
                );
                assert_eq!(
                    used, base_choice,
                    "{family}: layer {moe_layer} row {row} left the base model's experts"
                );
                // The shadow routes like the base model too.
                assert_eq!(experts_by_position(routing, moe_layer, rows + row), base_choice);
            }
            // The shadow's log-probabilities are the base model's on the same tokens.
            let scored = model
                .score_continuations(&prompt, std::slice::from_ref(tokens), &Hooks::default())
                .unwrap();
            for (a, b) in scored[0].iter().zip(&out.base_logprobs[row]) {
                assert!((a - b).abs() < 1e-4, "{family}: base log-prob {b} vs scored {a}");
            }
            assert!(out.kl[row].iter().all(|&k| k >= -1e-6), "{family}: negative KL");
            assert_eq!(out.kl[row].len(), tokens.len());
        }
    }
}

#[test]
fn without_the_lock_the_perturbed_router_may_leave_the_base_choice() {
    let loaded = load_fixture("mixtral");
    let model = &loaded.model;
    let prompt = prompt();
    let shared_prompt = model
        .run_lower_layers(
            &TokenBatch::left_padded(std::slice::from_ref(&prompt), 0),
            1,
            false,
        )
        .unwrap();
    let perturb = Perturbation {
        layer: 1,
        delta: delta(3, model.config().hidden_size, 4.0),
        positions: Positions::All,
    };
    let hooks = Hooks {
        perturb: Some(&perturb),
        record_routing: true,
        ..Hooks::default()
    };
    let config = GenerationConfig {
        max_new_tokens: 6,
        ..GenerationConfig::default()
    };
    let out = model
        .generate_shadowed(&shared_prompt, &config, &hooks, None)
        .unwrap();
    let routing = out.routing.unwrap();
    let differs =
        (0..3).any(|row| experts_by_position(&routing, 1, row) != experts_by_position(&routing, 1, 3 + row));
    assert!(
        differs,
        "free routing under a strong perturbation should differ from the shadow somewhere"
    );
    assert_eq!(out.drift.share(), 0.0, "nothing is locked, so nothing drifts");
}

#[test]
fn a_zero_perturbation_has_zero_kl_and_the_base_models_tokens() {
    let loaded = load_fixture("qwen2_moe");
    let model = &loaded.model;
    let prompt = prompt();
    let shared_prompt = model
        .run_lower_layers(
            &TokenBatch::left_padded(std::slice::from_ref(&prompt), 0),
            1,
            false,
        )
        .unwrap();
    let perturb = Perturbation {
        layer: 1,
        delta: delta(2, model.config().hidden_size, 0.0),
        positions: Positions::All,
    };
    let config = GenerationConfig {
        max_new_tokens: 5,
        ..GenerationConfig::default()
    };
    let hooks = Hooks {
        perturb: Some(&perturb),
        ..Hooks::default()
    };
    let out = model
        .generate_shadowed(&shared_prompt, &config, &hooks, None)
        .unwrap();
    let plain = model
        .generate(std::slice::from_ref(&prompt), &config, &Hooks::default(), None)
        .unwrap();
    for row in 0..2 {
        assert_eq!(out.sequences[row].tokens, plain.sequences[0].tokens);
        assert!(out.kl[row].iter().all(|k| k.abs() < 1e-5), "{:?}", out.kl[row]);
        for (a, b) in out.sequences[row].logprobs.iter().zip(&out.base_logprobs[row]) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}

#[test]
fn scoring_after_a_shared_context_equals_the_full_forward() {
    for family in ["llama", "olmoe"] {
        let loaded = load_fixture(family);
        let model = &loaded.model;
        let context = prompt();
        let continuations = vec![vec![5u32, 9, 17, 3], vec![11], vec![], vec![7, 7, 30]];
        let scores = model
            .score_continuations(&context, &continuations, &Hooks::default())
            .unwrap();
        for (cont, got) in continuations.iter().zip(&scores) {
            assert_eq!(got.len(), cont.len());
            if cont.is_empty() {
                continue;
            }
            let full: Vec<u32> = context.iter().chain(cont).copied().collect();
            let logits = model
                .forward(
                    &TokenBatch::left_padded(std::slice::from_ref(&full), 0),
                    &mut model.new_cache(),
                    &Hooks::default(),
                    LogitsMode::All,
                )
                .unwrap()
                .logits
                .unwrap()
                .squeeze(0)
                .unwrap();
            let predicting = logits.narrow(0, context.len() - 1, cont.len()).unwrap();
            let targets = Tensor::new(cont.as_slice(), &Device::Cpu).unwrap();
            let want = gather_logprobs(&predicting, &targets)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{family}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn several_new_tokens_over_a_non_empty_cache_equal_one_pass() {
    let loaded = load_fixture("mixtral");
    let model = &loaded.model;
    let tokens = Reference::load("mixtral").prompts()[3].clone();
    assert!(tokens.len() >= 6);
    let whole = model
        .forward(
            &TokenBatch::left_padded(std::slice::from_ref(&tokens), 0),
            &mut model.new_cache(),
            &Hooks::default(),
            LogitsMode::All,
        )
        .unwrap()
        .logits
        .unwrap();
    let mut cache = model.new_cache();
    let split = tokens.len() / 2;
    let first = model
        .forward(
            &TokenBatch::left_padded(&[tokens[..split].to_vec()], 0),
            &mut cache,
            &Hooks::default(),
            LogitsMode::All,
        )
        .unwrap()
        .logits
        .unwrap();
    let second = model
        .forward(
            &TokenBatch::left_padded(&[tokens[split..].to_vec()], 0),
            &mut cache,
            &Hooks::default(),
            LogitsMode::All,
        )
        .unwrap()
        .logits
        .unwrap();
    let joined = Tensor::cat(&[&first, &second], 1).unwrap();
    let diff = max_abs_diff(&whole, &joined);
    assert!(diff < 1e-4, "split forward differs by {diff}");
    // And the log-softmax agrees where it matters.
    let a = candle_nn::ops::log_softmax(&whole, D::Minus1).unwrap();
    let b = candle_nn::ops::log_softmax(&joined, D::Minus1).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-4);
}
