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

/// The fixtures' folder: `LATENTEVO_FIXTURES` if set (a test binary carried to another
/// machine), else `models/tiny` of this checkout.
pub fn fixture_dir(family: &str) -> PathBuf {
    std::env::var_os("LATENTEVO_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny"))
        .join(family)
}

/// The device the tests run the model on: `LATENTEVO_TEST_DEVICE=cuda` (or `cuda:N`) on a
/// GPU machine with a `--features cuda` build, else the CPU.
pub fn test_device() -> Device {
    match std::env::var("LATENTEVO_TEST_DEVICE").as_deref() {
        Err(_) | Ok("") | Ok("cpu") => Device::Cpu,
        Ok(name) => {
            let ordinal = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(n) => n
                    .trim_start_matches(':')
                    .parse()
                    .expect("LATENTEVO_TEST_DEVICE=cuda:N"),
                None => panic!("LATENTEVO_TEST_DEVICE: expected cpu, cuda or cuda:N, got {name}"),
            };
            Device::new_cuda(ordinal).expect("LATENTEVO_TEST_DEVICE names a CUDA device")
        }
    }
}

/// Loading options on the [`test_device`] (f32 unless `dtype`).
pub fn test_options(dtype: Option<candle_core::DType>) -> LoadOptions {
    LoadOptions {
        device: test_device(),
        dtype: dtype.or(Some(candle_core::DType::F32)),
        ..LoadOptions::default()
    }
}

pub fn load_fixture(family: &str) -> LoadedModel {
    load(fixture_dir(family).to_str().unwrap(), &test_options(None))
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
/// Either may be on the [`test_device`]; compared on the CPU in f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let on_cpu = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
    };
    let (a, b) = (on_cpu(a), on_cpu(b));
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
