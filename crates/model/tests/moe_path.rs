//! The device path of the MoE layers ([`MoePath::Device`]: routing, lock and drift as
//! tensor operations, every expert on every token with a combine matrix) against the host
//! path the CPU runs by default, on every MoE fixture: same routes, same drift, the same
//! logits within f32 rounding, and the same shadowed generation.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use latentevo_model::{
    ForwardOutput, GenerationConfig, Hooks, LockWeights, LogitsMode, Model, MoePath, Perturbation, Positions,
    Routing, RoutingLock, TokenBatch,
};

const MOE_FAMILIES: &[&str] = &["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe"];

/// Host and device path differ in summation order only (experts summed in another order,
/// the combine matrix's zeros): logits within this, f32.
const PATH_TOLERANCE: f32 = 2e-5;

/// Deterministic `[rows, hidden]` values of roughly the given RMS.
fn delta(rows: usize, hidden: usize, rms: f32) -> Tensor {
    let values: Vec<f32> = (0..rows * hidden)
        .map(|i| (((i * 7919 + 13) % 101) as f32 / 50.0 - 1.0) * rms * 1.7)
        .collect();
    Tensor::from_vec(values, (rows, hidden), &Device::Cpu).unwrap()
}

fn run(model: &mut Model, path: MoePath, batch: &TokenBatch, hooks: &Hooks) -> ForwardOutput {
    model.set_moe_path(path);
    let out = model
        .forward(batch, &mut model.new_cache(), hooks, LogitsMode::All)
        .unwrap();
    model.set_moe_path(MoePath::Auto);
    out
}

/// The two outputs agree: logits within [`PATH_TOLERANCE`], the same experts for every
/// token, weights within 1e-5, the same drift.
fn assert_same(family: &str, what: &str, host: &ForwardOutput, device: &ForwardOutput) {
    let diff = max_abs_diff(host.logits.as_ref().unwrap(), device.logits.as_ref().unwrap());
    assert!(diff <= PATH_TOLERANCE, "{family} {what}: logits differ by {diff}");
    assert_eq!(host.drift, device.drift, "{family} {what}: drift");
    let (h, d) = (host.routing.as_ref().unwrap(), device.routing.as_ref().unwrap());
    assert_eq!(h.layers.len(), d.layers.len(), "{family} {what}: recorded layers");
    for (hl, dl) in h.layers.iter().zip(&d.layers) {
        assert_eq!(hl.layer, dl.layer);
        for (row, (hr, dr)) in hl.rows.iter().zip(&dl.rows).enumerate() {
            assert_eq!(
                hr.len(),
                dr.len(),
                "{family} {what}: layer {} row {row}",
                hl.layer
            );
            for (ht, dt) in hr.iter().zip(dr) {
                assert_eq!(ht.position, dt.position);
                assert_eq!(
                    ht.experts, dt.experts,
                    "{family} {what}: layer {} row {row} position {}",
                    hl.layer, ht.position
                );
                for (a, b) in ht.weights.iter().zip(&dt.weights) {
                    assert!((a - b).abs() <= 1e-5, "{family} {what}: weight {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn device_path_routes_and_computes_as_the_host_path() {
    for family in MOE_FAMILIES {
        let mut loaded = load_fixture(family);
        let model = &mut loaded.model;
        let hidden = model.config().hidden_size;
        let prompts = Reference::load(family).prompts();
        let batch = TokenBatch::left_padded(&prompts[..2], 0);
        let rows = batch.batch_size();
        let record = Hooks {
            record_routing: true,
            ..Hooks::default()
        };
        assert_same(
            family,
            "free",
            &run(model, MoePath::Host, &batch, &record),
            &run(model, MoePath::Device, &batch, &record),
        );

        // Locked to row 0's free routing, with a strong perturbation so the free router
        // would drift; row 1 takes the recorded route where it has one, and with `follow`
        // row 0's choice elsewhere.
        let recorded = run(model, MoePath::Host, &batch, &record).routing.unwrap();
        let perturb = Perturbation {
            layer: 1,
            delta: delta(rows, hidden, 4.0),
            positions: Positions::All,
        };
        // Following needs row 0 to hold a token wherever row 1 does: the same prompt twice.
        let twins = TokenBatch::left_padded(&[prompts[1].clone(), prompts[1].clone()], 0);
        for weights in [LockWeights::Recompute, LockWeights::Replay] {
            for (batch, follow) in [(&batch, None), (&twins, Some(vec![0, 0]))] {
                let lock = RoutingLock {
                    weights,
                    follow: follow.clone(),
                    layers: Some(
                        model
                            .config()
                            .moe_layers()
                            .into_iter()
                            .filter(|&l| l >= 1)
                            .collect(),
                    ),
                    ..RoutingLock::new(Routing {
                        layers: recorded
                            .layers
                            .iter()
                            .map(|l| latentevo_model::LayerRouting {
                                layer: l.layer,
                                rows: vec![l.rows[0][..3].to_vec()],
                            })
                            .collect(),
                    })
                };
                let hooks = Hooks {
                    perturb: Some(&perturb),
                    lock: Some(&lock),
                    record_routing: true,
                    ..Hooks::default()
                };
                let host = run(model, MoePath::Host, batch, &hooks);
                let device = run(model, MoePath::Device, batch, &hooks);
                let what = format!("{weights:?}, follow {follow:?}");
                assert!(host.drift.share() > 0.0, "{family} {what}: nothing drifted");
                assert_same(family, &what, &host, &device);
            }
        }
    }
}

#[test]
fn shadowed_generation_is_the_same_on_both_paths() {
    for family in MOE_FAMILIES {
        let mut loaded = load_fixture(family);
        let model = &mut loaded.model;
        let hidden = model.config().hidden_size;
        let prompt = Reference::load(family).prompts()[1].clone();
        let config = GenerationConfig {
            max_new_tokens: 5,
            ..GenerationConfig::default()
        };
        let base = model
            .generate(
                std::slice::from_ref(&prompt),
                &config,
                &Hooks {
                    record_routing: true,
                    ..Hooks::default()
                },
                None,
            )
            .unwrap();
        let lock = RoutingLock::new(base.routing.unwrap().before(prompt.len()));
        let perturb = Perturbation {
            layer: 1,
            delta: delta(3, hidden, 4.0),
            positions: Positions::All,
        };
        let hooks = Hooks {
            perturb: Some(&perturb),
            lock: Some(&lock),
            record_routing: true,
            ..Hooks::default()
        };
        let mut outputs = Vec::new();
        for path in [MoePath::Host, MoePath::Device] {
            model.set_moe_path(path);
            let shared = model
                .run_lower_layers(
                    &TokenBatch::left_padded(std::slice::from_ref(&prompt), 0),
                    1,
                    true,
                )
                .unwrap();
            outputs.push(model.generate_shadowed(&shared, &config, &hooks, None).unwrap());
        }
        let (host, device) = (&outputs[0], &outputs[1]);
        for (h, d) in host.sequences.iter().zip(&device.sequences) {
            assert_eq!(h.tokens, d.tokens, "{family}: generated tokens");
        }
        assert_eq!(host.drift, device.drift, "{family}: drift");
        assert_eq!(
            host.routing,
            device.routing.as_ref().map(|r| {
                // Weights may differ in the last bits; compare experts through the host's weights.
                let mut r = r.clone();
                for (dl, hl) in r.layers.iter_mut().zip(&host.routing.as_ref().unwrap().layers) {
                    for (dr, hr) in dl.rows.iter_mut().zip(&hl.rows) {
                        for (dt, ht) in dr.iter_mut().zip(hr) {
                            assert!(dt
                                .weights
                                .iter()
                                .zip(&ht.weights)
                                .all(|(a, b)| (a - b).abs() <= 1e-5));
                            dt.weights.clone_from(&ht.weights);
                        }
                    }
                }
                r
            }),
            "{family}: routes"
        );
        for (h, d) in host.kl.iter().zip(&device.kl) {
            for (a, b) in h.iter().zip(d) {
                assert!((a - b).abs() <= 1e-4, "{family}: KL {a} vs {b}");
            }
        }
    }
}

/// A lock that names an expert the layer lacks, or a row to follow that has no token at
/// the same position, is refused with the same named error on both paths.
#[test]
fn both_paths_refuse_a_bad_lock_alike() {
    let mut loaded = load_fixture("mixtral");
    let model = &mut loaded.model;
    let experts = model.config().moe.as_ref().unwrap().num_experts as u32;
    let prompts = Reference::load("mixtral").prompts();
    let one = TokenBatch::left_padded(&prompts[1..2], 0);
    let record = Hooks {
        record_routing: true,
        ..Hooks::default()
    };
    let mut routing = run(model, MoePath::Host, &one, &record).routing.unwrap();
    routing.layers[0].rows[0][0].experts[0] = experts;
    let bad_expert = RoutingLock::new(routing);
    // Rows of different lengths: row 1 cannot follow row 0 at every position.
    let uneven = TokenBatch::left_padded(&[prompts[0].clone(), prompts[3].clone()], 0);
    let bad_follow = RoutingLock {
        follow: Some(vec![0, 0]),
        ..RoutingLock::new(Routing { layers: vec![] })
    };
    for path in [MoePath::Host, MoePath::Device] {
        model.set_moe_path(path);
        for (lock, batch, want) in [
            (&bad_expert, &one, format!("names expert {experts}")),
            (&bad_follow, &uneven, "row 1 follows row 0".to_string()),
        ] {
            let hooks = Hooks {
                lock: Some(lock),
                ..Hooks::default()
            };
            let err = model
                .forward(batch, &mut model.new_cache(), &hooks, LogitsMode::None)
                .expect_err("a bad lock must be refused")
                .to_string();
            assert!(err.contains(&want), "{path:?}: `{err}` should say `{want}`");
        }
    }
}
