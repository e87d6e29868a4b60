//! GGUF headers only: parsing, the tensor table's extents and the model config the
//! metadata describe (what `latentevo inspect FILE.gguf` reads first), without building
//! the tokenizer or reading tensors, so that many more inputs run per second than in
//! the `gguf` target.
#![no_main]

#[path = "common.rs"]
mod common;

use latentevo_model::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write_scratch("header.gguf", data);
    if let Ok(file) = GgufFile::open(&path) {
        let _ = file.architecture();
        let _ = file.tensor_names();
        if let Ok(config) = file.model_config() {
            let _ = config.parameter_counts();
        }
    }
});
