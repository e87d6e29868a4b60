//! A `model.safetensors` file (header length, header JSON, tensor offsets), read the two
//! ways the loaders read it: into memory (`read_tensors`) and memory-mapped.
#![no_main]

#[path = "common.rs"]
mod common;

use candle_core::{DType, Device};
use latentevo_model::read_tensors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write_scratch("model.safetensors", data);
    let _ = read_tensors(std::slice::from_ref(&path), &Device::Cpu, DType::F32);
    // SAFETY: the scratch file is not modified while mapped.
    if let Ok(st) = unsafe { candle_core::safetensors::MmapedSafetensors::new(&path) } {
        for (name, _) in st.tensors() {
            let _ = st.load(&name, &Device::Cpu);
        }
    }
});
