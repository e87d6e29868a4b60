//! `model.safetensors.index.json`: the shard list of a sharded checkpoint.
#![no_main]

#[path = "common.rs"]
mod common;

use latentevo_model::{read_safetensors_index, safetensors_files};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let index = common::write_scratch("model.safetensors.index.json", data);
    let _ = read_safetensors_index(&index);
    if let Ok(files) = safetensors_files(index.parent().unwrap()) {
        // Every shard it names lies inside the checkpoint directory.
        for f in files {
            assert!(
                f.starts_with(index.parent().unwrap()),
                "{f:?} escapes the directory"
            );
        }
    }
});
