//! GGUF files: header, metadata, tensor table, tokenizer, tensors — everything
//! `latentevo inspect FILE.gguf` and `--model FILE.gguf` read. Any input must give `Ok`
//! or a `GgufError`, never a panic, an abort or an allocation beyond the file's size.
#![no_main]

#[path = "common.rs"]
mod common;

use candle_core::{DType, Device};
use latentevo_model::gguf::{load_gguf, GgufFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::default_panic_hook();
    let path = common::write_scratch("model.gguf", data);
    if let Ok(file) = GgufFile::open(&path) {
        let _ = file.architecture();
        let _ = file.tensor_names();
        let _ = file.model_config();
        let _ = file.tokenizer();
        let _ = file.chat_template();
        let _ = file.tokenizer_config();
    }
    let _ = load_gguf(&path, &Device::Cpu, DType::F32);
});
