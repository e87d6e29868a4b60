//! Every family against transformers (f32, CPU), one prompt at a time and as one
//! left-padded batch: logits within 1e-4 (`LOGIT_TOLERANCE`), identical expert ids,
//! routing weights within `WEIGHT_TOLERANCE`, router logits within
//! `ROUTER_LOGIT_TOLERANCE`, and the batched pass against transformers' own batched
//! pass (`batch_logits`, `batch_routing`). Half precision against the same references.

mod common;

use candle_core::IndexOp;
use common::*;
use latentevo_model::{Hooks, LogitsMode, Routing, TokenBatch};

/// Routing weights (probabilities in [0, 1]) must match transformers' within this.
/// Measured: at most 1.8e-6 over all families and prompts.
const WEIGHT_TOLERANCE: f32 = 1e-5;

/// Router logits (the router's linear output, |logit| up to about 3) must match within
/// this. Measured: at most 6.9e-6.
const ROUTER_LOGIT_TOLERANCE: f32 = 1e-4;

/// The largest |weight - reference| over every MoE layer, position and rank of row `row`;
/// `reference` is `[num_moe_layers, seq, top_k]`, in the same rank order as the ids.
fn max_weight_diff(routing: &Routing, row: usize, reference: &[Vec<Vec<f32>>]) -> f32 {
    assert_eq!(routing.layers.len(), reference.len(), "number of MoE layers");
    let mut worst = 0f32;
    for (layer, want_layer) in routing.layers.iter().zip(reference) {
        let routes = &layer.rows[row];
        assert_eq!(routes.len(), want_layer.len(), "layer {}: positions", layer.layer);
        for (route, want) in routes.iter().zip(want_layer) {
            assert_eq!(route.weights.len(), want.len(), "layer {}: top-k", layer.layer);
            for (w, r) in route.weights.iter().zip(want) {
                worst = worst.max((w - r).abs());
            }
        }
    }
    worst
}

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
                &Hooks {
                    capture_ffn_inputs: true,
                    ..hooks.clone()
                },
                LogitsMode::All,
            )
            .unwrap();
        // The router logits: each MoE layer's feed-forward input times its router weight,
        // against the router's output transformers recorded.
        for (li, &layer) in moe_layers.iter().enumerate() {
            let input = out.ffn_inputs[layer].i(0).unwrap();
            let router = model.router_weight(layer).unwrap();
            let logits = input.matmul(&router.t().unwrap()).unwrap();
            let want = reference.tensor(&format!("router_logits.{p}")).i(li).unwrap();
            let diff = max_abs_diff(&logits, &want);
            eprintln!("{family} prompt {p} layer {layer}: max |router logit diff| = {diff:.2e}");
            assert!(
                diff < ROUTER_LOGIT_TOLERANCE,
                "{family} prompt {p} layer {layer}: max |router logit diff| = {diff}"
            );
        }
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
            let want = reference
                .tensor(&format!("routing_weights.{p}"))
                .to_vec3::<f32>()
                .unwrap();
            let diff = max_weight_diff(&routing, 0, &want);
            eprintln!("{family} prompt {p}: max |routing weight diff| = {diff:.2e}");
            assert!(
                diff < WEIGHT_TOLERANCE,
                "{family} prompt {p}: max |routing weight diff| = {diff}"
            );
        }
        single_logits.push(logits);
        single_routing.push(routing.expert_ids(0));
    }

    // The same prompts as one left-padded batch give the one-by-one results, and what
    // transformers' own batched pass gave (`batch_logits`, `batch_routing`) on every
    // real position.
    let batch = TokenBatch::left_padded(&prompts, 0);
    let want_ids: Vec<Vec<u32>> = reference
        .tensor("batch_input_ids")
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|row| row.into_iter().map(|x| x as u32).collect())
        .collect();
    assert_eq!(
        batch.ids(),
        want_ids.as_slice(),
        "{family}: the batch is not transformers' batch"
    );
    let mask = reference.tensor("batch_attention_mask").to_vec2::<i64>().unwrap();
    let mut cache = model.new_cache();
    let out = model
        .forward(&batch, &mut cache, &hooks, LogitsMode::All)
        .unwrap();
    let logits = out.logits.unwrap();
    let routing = out.routing.unwrap();
    let width = batch.seq_len();
    let batch_logits = reference.tensor("batch_logits");
    let batch_routing = (!moe_layers.is_empty()).then(|| reference.tensor("batch_routing"));
    for (p, ids) in prompts.iter().enumerate() {
        let start = width - ids.len();
        let real_mask: Vec<bool> = mask[p].iter().map(|&m| m == 1).collect();
        assert_eq!(
            real_mask,
            batch.valid()[p],
            "{family} batch row {p}: padding differs from transformers'"
        );
        let real = logits.i((p, start..width)).unwrap();
        let diff = max_abs_diff(&real, &single_logits[p]);
        assert!(
            diff < LOGIT_TOLERANCE,
            "{family} batch row {p}: max |diff| vs single = {diff}"
        );
        let want = batch_logits.i((p, start..width)).unwrap();
        let diff = max_abs_diff(&real, &want);
        eprintln!("{family} batch row {p}: max |logit diff| vs transformers' batch = {diff:.2e}");
        assert!(
            diff < LOGIT_TOLERANCE,
            "{family} batch row {p}: max |diff| vs transformers' batch = {diff}"
        );
        assert_eq!(
            routing.expert_ids(p),
            single_routing[p],
            "{family} batch row {p}: routing differs"
        );
        if let Some(batch_routing) = &batch_routing {
            // `[layer, row, position, rank]`, real positions only.
            let want: Vec<Vec<Vec<u32>>> = (0..moe_layers.len())
                .map(|li| {
                    let ids = batch_routing.i((li, p, start..width)).unwrap();
                    let ids = ids.to_vec2::<i64>().unwrap();
                    ids.into_iter()
                        .map(|pos| pos.into_iter().map(|e| e as u32).collect())
                        .collect()
                })
                .collect();
            assert_eq!(
                routing.expert_ids(p),
                want,
                "{family} batch row {p}: expert ids differ from transformers' batch"
            );
        }
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

/// How far apart the reference's routing decision at (MoE layer `li`, position `pos`)
/// is from a tie: the smallest gap between adjacent sorted router logits down to rank
/// k + 1 (the order of the logits is the order of the router's probabilities).
fn routing_margin(reference: &[f32], top_k: usize) -> f32 {
    let mut logits = reference.to_vec();
    logits.sort_by(|a, b| b.total_cmp(a));
    (0..top_k)
        .map(|r| logits[r] - logits[r + 1])
        .fold(f32::INFINITY, f32::min)
}

/// Half precision (the GPU dtypes) runs through the same code; on CPU it is checked
/// against the f32 reference, every family and prompt:
///
/// - logits within `tolerance` (bf16 0.2, f16 0.035);
/// - router logits within `router_tolerance` (bf16 0.25, f16 0.05);
/// - expert ids identical at every routing decision that the router-logit error cannot
///   have flipped: where the reference's sorted logits are more than twice this
///   position's largest router-logit error apart down to rank k + 1 (if no logit moved
///   by more than e, no gap above 2e can close), and such decisions are at least 80% of
///   all. The others are counted, not checked.
///
/// Measured on the 2-core CPU (4 prompts x 6 families; `--nocapture` prints them): max
/// |logit − transformers f32| bf16 0.129 (qwen2_moe; the others 0.033-0.123), f16
/// 0.0235; max |router logit diff| bf16 0.177, f16 0.032; routing decisions checked bf16
/// 281 of 320, f16 317 of 320 (bf16 changed 5 decisions, all near ties; f16 none). Why bf16 is off by ~0.1 and that is not a bug: it keeps 8
/// significant bits, so the residual stream is rounded after every block to ±0.031 in
/// [8, 16) (two or three blocks deep here) and the logits (|l| up to 4.6) to ±0.016 in
/// [4, 8) at the end; f16 keeps 11 bits, 8x finer, and measures 5.5x smaller. The
/// tolerances are the measured maxima with 40-55% headroom (the CPU and GPU kernels
/// round differently); before they were 0.25 and 0.05 on three families and one prompt.
#[test]
fn bf16_and_f16_stay_close_to_the_reference() {
    use candle_core::DType;
    use latentevo_model::load;
    for (dtype, tolerance, router_tolerance) in [(DType::BF16, 0.2f32, 0.25f32), (DType::F16, 0.035, 0.05)] {
        let (mut worst, mut worst_router) = (0f32, 0f32);
        let (mut checked, mut decisions, mut changed) = (0usize, 0usize, 0usize);
        for family in FAMILIES {
            let reference = Reference::load(family);
            let loaded = load(fixture_dir(family).to_str().unwrap(), &test_options(Some(dtype))).unwrap();
            let model = &loaded.model;
            assert_eq!(model.dtype(), dtype);
            let moe_layers = model.config().moe_layers();
            let top_k = model.config().moe.as_ref().map_or(0, |m| m.top_k);
            let mut family_worst = 0f32;
            for (p, ids) in reference.prompts().iter().enumerate() {
                let out = model
                    .forward(
                        &TokenBatch::left_padded(std::slice::from_ref(ids), 0),
                        &mut model.new_cache(),
                        &Hooks {
                            record_routing: true,
                            capture_ffn_inputs: true,
                            ..Hooks::default()
                        },
                        LogitsMode::All,
                    )
                    .unwrap();
                let logits = out.logits.unwrap().i(0).unwrap();
                let diff = max_abs_diff(&logits, reference.tensor(&format!("logits.{p}")));
                family_worst = family_worst.max(diff);
                if moe_layers.is_empty() {
                    continue;
                }
                let got = out.routing.unwrap().expert_ids(0);
                let want = reference.routing(p);
                for (li, &layer) in moe_layers.iter().enumerate() {
                    // The router logits this pass computed, as the router computes them.
                    let input = out.ffn_inputs[layer].i(0).unwrap();
                    let router = model.router_weight(layer).unwrap();
                    let ours = input
                        .matmul(&router.t().unwrap())
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap()
                        .to_vec2::<f32>()
                        .unwrap();
                    let theirs = reference
                        .tensor(&format!("router_logits.{p}"))
                        .i(li)
                        .unwrap()
                        .to_vec2::<f32>()
                        .unwrap();
                    for (pos, (o, t)) in ours.iter().zip(&theirs).enumerate() {
                        let error = o.iter().zip(t).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                        worst_router = worst_router.max(error);
                        decisions += 1;
                        changed += usize::from(got[li][pos] != want[li][pos]);
                        if routing_margin(t, top_k) > 2.0 * error {
                            checked += 1;
                            assert_eq!(
                                got[li][pos], want[li][pos],
                                "{family} {dtype:?} prompt {p} layer {layer} position {pos}: experts \
                                 differ although no router logit moved by half the reference's margin"
                            );
                        }
                    }
                }
            }
            eprintln!("{family} {dtype:?}: max |logit diff| vs transformers f32 = {family_worst:.3e}");
            assert!(family_worst < tolerance, "{family} {dtype:?}: {family_worst}");
            worst = worst.max(family_worst);
        }
        eprintln!(
            "{dtype:?}: max |logit diff| {worst:.3e}, max |router logit diff| {worst_router:.3e}; expert ids \
             checked identical at {checked} of {decisions} routing decisions (the others too close to a \
             tie to tell); {changed} of all differ from the reference"
        );
        assert!(
            worst_router < router_tolerance,
            "{dtype:?}: router logits off by {worst_router}"
        );
        assert!(
            checked * 10 >= decisions * 8,
            "{dtype:?}: only {checked} of {decisions} routing decisions were far enough from a tie to check"
        );
    }
}
