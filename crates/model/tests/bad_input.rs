//! Bad input gives a clear error naming the file, field or tensor: never a panic.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use latentevo_model::{
    load, Hooks, LoadOptions, LogitsMode, ModelError, Perturbation, Positions, TokenBatch,
};

/// A scratch copy of a fixture directory.
fn copy_fixture(family: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(family);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(fixture_dir(family)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

fn load_err(dir: &Path) -> String {
    match load(dir.to_str().unwrap(), &LoadOptions::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(json.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

#[test]
fn missing_config_field_is_named() {
    let (_tmp, dir) = copy_fixture("olmoe");
    edit_config(&dir, |c| {
        c.remove("num_hidden_layers");
    });
    let err = load_err(&dir);
    assert!(
        err.contains("config.json") && err.contains("missing field `num_hidden_layers`"),
        "{err}"
    );
}

#[test]
fn renamed_config_field_is_named() {
    let (_tmp, dir) = copy_fixture("qwen2_moe");
    edit_config(&dir, |c| {
        let v = c.remove("moe_intermediate_size").unwrap();
        c.insert("expert_intermediate_size".into(), v);
    });
    let err = load_err(&dir);
    assert!(err.contains("missing field `moe_intermediate_size`"), "{err}");
}

#[test]
fn config_that_is_not_json_is_named() {
    let (_tmp, dir) = copy_fixture("llama");
    std::fs::write(dir.join("config.json"), "{ \"hidden_size\": 64,").unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("config.json") && err.contains("invalid JSON"),
        "{err}"
    );
}

#[test]
fn unknown_architecture_lists_supported_ones() {
    let (_tmp, dir) = copy_fixture("llama");
    edit_config(&dir, |c| {
        c.insert("architectures".into(), serde_json::json!(["FalconForCausalLM"]));
        c.insert("model_type".into(), serde_json::json!("falcon"));
    });
    let err = load_err(&dir);
    assert!(
        err.contains("FalconForCausalLM") && err.contains("MixtralForCausalLM"),
        "{err}"
    );
}

#[test]
fn truncated_safetensors_is_named() {
    let (_tmp, dir) = copy_fixture("llama");
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn missing_shard_is_named() {
    let (_tmp, dir) = copy_fixture("mixtral");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model-00002-of-00002.safetensors") && err.contains("missing"),
        "{err}"
    );
}

/// An index naming a shard outside the checkpoint directory (absolute, or through `..`)
/// is refused, even when that file exists; so is a shard name that is not a string.
#[test]
fn index_cannot_point_outside_the_checkpoint() {
    let (tmp, dir) = copy_fixture("mixtral");
    let outside = tmp.path().join("outside.safetensors");
    std::fs::copy(dir.join("model-00002-of-00002.safetensors"), &outside).unwrap();
    let index_path = dir.join("model.safetensors.index.json");
    let original = std::fs::read_to_string(&index_path).unwrap();
    for shard in [
        serde_json::json!(outside.display().to_string()),
        serde_json::json!("../outside.safetensors"),
        serde_json::json!("./../outside.safetensors"),
        serde_json::json!(""),
        serde_json::json!(7),
    ] {
        let mut index: serde_json::Value = serde_json::from_str(&original).unwrap();
        let map = index["weight_map"].as_object_mut().unwrap();
        let tensor = map.keys().next().unwrap().clone();
        map.insert(tensor.clone(), shard.clone());
        std::fs::write(&index_path, index.to_string()).unwrap();
        let err = load_err(&dir);
        assert!(
            err.contains("model.safetensors.index.json") && err.contains(&format!("tensor `{tensor}`")),
            "{shard}: {err}"
        );
    }
}

fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let file = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &file).unwrap();
}

#[test]
fn tensor_of_wrong_shape_is_named() {
    let (_tmp, dir) = copy_fixture("llama");
    let name = "model.layers.1.self_attn.q_proj.weight";
    rewrite_weights(&dir, |t| {
        t.insert(
            name.into(),
            Tensor::zeros((64, 32), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load_err(&dir);
    assert!(err.contains(name) && err.contains("shape"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let (_tmp, dir) = copy_fixture("granitemoe");
    let name = "model.layers.0.block_sparse_moe.router.layer.weight";
    rewrite_weights(&dir, |t| {
        t.remove(name).unwrap();
    });
    let err = load_err(&dir);
    assert!(err.contains(name), "{err}");
}

#[test]
fn unparsable_tokenizer_is_named() {
    let (_tmp, dir) = copy_fixture("llama");
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 42}").unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("tokenizer.json") && err.contains("does not parse"),
        "{err}"
    );
}

/// A `tokenizer.json` on which the tokenizers crate panics is an error naming the file
/// (the `tokenizer_json` fuzz target's crash: a syntax error inside `decoder`; and a
/// `Precompiled` normalizer without its map, valid JSON).
#[test]
fn tokenizer_that_panics_the_tokenizers_crate_is_an_error() {
    let (_tmp, dir) = copy_fixture("llama");
    let path = dir.join("tokenizer.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let broken_decoder = original.replacen(
        "\"decoder\": {\n    \"type\": \"ByteLevel\",",
        "\"decoder\": {\n    \"type\": \"ByteLevel\"",
        1,
    );
    let precompiled = original.replacen(
        "\"normalizer\": null",
        "\"normalizer\": {\"type\": \"Precompiled\"}",
        1,
    );
    for (what, text) in [("decoder", broken_decoder), ("normalizer", precompiled)] {
        assert_ne!(text, original, "{what}: the edit did not apply");
        std::fs::write(&path, &text).unwrap();
        let err = load_err(&dir);
        assert!(
            err.contains("tokenizer.json") && err.contains("tokenizer") && err.contains("does not parse"),
            "{what}: {err}"
        );
        let err = latentevo_model::load_tokenizer(&path).unwrap_err();
        assert!(matches!(err, ModelError::Tokenizer { .. }), "{what}: {err:?}");
    }
}

#[test]
fn checkpoint_without_tokenizer_runs_on_ids() {
    let (_tmp, dir) = copy_fixture("llama");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let loaded = load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert!(matches!(loaded.encode("hi"), Err(ModelError::NoTokenizer)));
    let out = loaded
        .model
        .forward(
            &TokenBatch::left_padded(&[vec![1, 2]], 0),
            &mut loaded.model.new_cache(),
            &Hooks::default(),
            LogitsMode::Last,
        )
        .unwrap();
    assert!(out.logits.is_some());
}

#[test]
fn out_of_range_requests_are_refused() {
    let loaded = load_fixture("mixtral");
    let model = &loaded.model;
    let h = model.config().hidden_size;
    let perturb = Perturbation {
        layer: 99,
        delta: Tensor::zeros((1, h), DType::F32, &Device::Cpu).unwrap(),
        positions: Positions::All,
    };
    let hooks = Hooks {
        perturb: Some(&perturb),
        ..Hooks::default()
    };
    let batch = TokenBatch::left_padded(&[vec![1, 2, 3]], 0);
    let err = model
        .forward(&batch, &mut model.new_cache(), &hooks, LogitsMode::Last)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer 99") && err.contains("2 layers"), "{err}");
    let err = model.run_lower_layers(&batch, 5, false).unwrap_err().to_string();
    assert!(err.contains("layer 5"), "{err}");
    let wrong = Perturbation {
        layer: 0,
        delta: Tensor::zeros((1, h + 1), DType::F32, &Device::Cpu).unwrap(),
        positions: Positions::All,
    };
    let hooks = Hooks {
        perturb: Some(&wrong),
        ..Hooks::default()
    };
    let err = model
        .forward(&batch, &mut model.new_cache(), &hooks, LogitsMode::Last)
        .unwrap_err()
        .to_string();
    assert!(err.contains("delta has shape"), "{err}");
    let err = model
        .forward(
            &TokenBatch::left_padded(&[vec![100_000]], 0),
            &mut model.new_cache(),
            &Hooks::default(),
            LogitsMode::Last,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("token id 100000"), "{err}");
}

#[test]
fn missing_model_says_where_it_looked() {
    // Either the offline cache miss or the unreachable hub: both name the cache.
    let text = load("no/such-model-here", &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("no/such-model-here") && text.contains("cache"),
        "{text}"
    );
    let err = load("./definitely/not/a/dir/x", &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such directory"), "{err}");
}
