//! Helpers shared by the model crate's integration tests: fixture paths and references.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use latentevo_model::{load, LoadOptions, LoadedModel};

/// The families with committed fixtures under `models/tiny/`.
pub const FAMILIES: &[&str] = &[
    "llama",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "granitemoe",
];

/// Logits must match transformers within this (f32, CPU).
pub const LOGIT_TOLERANCE: f32 = 1e-4;

pub fn fixture_dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/tiny")
        .join(family)
}

pub fn load_fixture(family: &str) -> LoadedModel {
    load(fixture_dir(family).to_str().unwrap(), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading fixture {family}: {e}"))
}

/// The transformers reference of one fixture.
pub struct Reference {
    pub json: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Reference {
    pub fn load(family: &str) -> Self {
        let dir = fixture_dir(family);
        let json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        let tensors =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
        Reference { json, tensors }
    }

    pub fn prompts(&self) -> Vec<Vec<u32>> {
        self.json["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    }

    pub fn tensor(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("reference tensor {name} missing"))
    }

    /// `routing.p` as `[layer][position][rank]`.
    pub fn routing(&self, p: usize) -> Vec<Vec<Vec<u32>>> {
        self.tensor(&format!("routing.{p}"))
            .to_vec3::<i64>()
            .unwrap()
            .into_iter()
            .map(|l| {
                l.into_iter()
                    .map(|pos| pos.into_iter().map(|e| e as u32).collect())
                    .collect()
            })
            .collect()
    }
}

/// Largest absolute difference between two tensors of equal shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Same expert ids everywhere, weights within `tolerance`.
pub fn assert_same_routing(
    a: &latentevo_model::Routing,
    b: &latentevo_model::Routing,
    tolerance: f32,
    what: &str,
) {
    assert_eq!(a.layers.len(), b.layers.len(), "{what}: number of layers");
    for (la, lb) in a.layers.iter().zip(&b.layers) {
        assert_eq!(la.layer, lb.layer, "{what}");
        assert_eq!(la.rows.len(), lb.rows.len(), "{what}: rows of layer {}", la.layer);
        for (row, (ra, rb)) in la.rows.iter().zip(&lb.rows).enumerate() {
            assert_eq!(
                ra.len(),
                rb.len(),
                "{what}: tokens of layer {} row {row}",
                la.layer
            );
            for (ta, tb) in ra.iter().zip(rb) {
                assert_eq!(
                    (ta.position, &ta.experts),
                    (tb.position, &tb.experts),
                    "{what}: layer {} row {row}",
                    la.layer
                );
                for (wa, wb) in ta.weights.iter().zip(&tb.weights) {
                    assert!((wa - wb).abs() <= tolerance, "{what}: weight {wa} vs {wb}");
                }
            }
        }
    }
}
