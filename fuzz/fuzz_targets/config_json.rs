//! `config.json`: what `ModelConfig::from_json` and `latentevo inspect` do with it.
#![no_main]

use latentevo_model::ModelConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(config) = ModelConfig::from_json(&json, "config.json") {
        let _ = config.moe_layers();
        let _ = config.parameter_counts();
        for layer in 0..config.num_hidden_layers.min(4) {
            let _ = config.is_moe_layer(layer);
        }
    }
});
